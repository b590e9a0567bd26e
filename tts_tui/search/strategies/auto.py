"""Compute-optimal strategy choice from an estimate of the problem's difficulty.

A few probe samples are drawn first; the share that agree with the most common answer
estimates pass@1 (Snell et al. bin difficulty by pass@1; Liu et al. call > 50% easy,
10-50% medium, < 10% hard). The table in auto_table.json maps the bin to a strategy
and N. The probes are not wasted: vote strategies reuse them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tts_tui.search.run import Result, Search
from tts_tui.search.strategies import sampling

TABLE_PATH = Path(__file__).resolve().parent.parent / "auto_table.json"


def load_table(path: Path | None = None) -> dict[str, Any]:
    """The table: `path`, else the user's refitted one if present, else the shipped default."""
    if path is None:
        from tts_tui.paths import auto_table_path

        user = auto_table_path()
        path = user if user.is_file() else TABLE_PATH
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return json.loads(TABLE_PATH.read_text(encoding="utf-8"))  # a broken user table: the default


def difficulty_bin(pass_rate: float) -> str:
    if pass_rate > 0.5:
        return "easy"
    if pass_rate >= 0.1:
        return "medium"
    return "hard"


def auto(search: Search) -> Result:
    table = load_table()
    p = search.params
    k = max(1, min(int(table.get("probe", 4)), p.n))
    probes = [n for n in sampling.sample_full(search, k) if n.answer]
    groups = search.vote(probes)
    agree = (groups[0].count / k) if groups else 0.0
    label = difficulty_bin(agree)
    choice = table["bins"][label]
    strategy = choice["strategy"]
    n = max(1, int(round(p.n * float(choice.get("n_scale", 1.0)))))
    search.note(
        f"difficulty {label}: {groups[0].count if groups else 0}/{k} probes agree "
        f"(est. pass rate {agree:.0%}) -> {strategy} N={n}",
        difficulty=label, chosen_strategy=strategy, chosen_n=n, pass_rate=agree,
    )
    search.difficulty = label  # type: ignore[attr-defined]
    if strategy in ("majority", "weighted", "best-of-n"):
        extra = max(0, n - len(probes))
        more = [x for x in sampling.sample_full(search, extra) if x.answer] if extra else []
        done = probes + more
        weights = [search.path_score(x) for x in done] if strategy != "majority" else None
        groups = search.vote(done, weights)
        result = search.finish("auto", groups, sampling._representative(search, groups))
    else:
        from tts_tui.search.strategies import STRATEGIES  # the registry imports this module

        m = p.m if n % p.m == 0 else 1
        search.params = type(p)(**{**p.__dict__, "n": n, "m": m})
        result = STRATEGIES[strategy][0](search)
        result.strategy = "auto"
    result.reason = search.info[0]
    result.stats["difficulty"] = label
    result.stats["chosen_strategy"] = strategy
    return result
