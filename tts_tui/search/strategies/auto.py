"""Compute-optimal strategy choice from an estimate of the problem's difficulty.

A few probe samples are drawn first; the share that agree with the most common answer
estimates pass@1 (Snell et al. bin difficulty by pass@1; Liu et al. call > 50% easy,
10-50% medium, < 10% hard). A handful of probes cannot resolve 10%, so the bins are
read off what they can show: more than half agree (easy), no two agree (hard), else
medium. The table in auto_table.json maps the bin to a strategy and N. The probes are
not wasted: they are k of the N generations, and vote strategies reuse them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tts_tui.search.protocol import AdaptiveParams
from tts_tui.search.run import Result, Search
from tts_tui.search.strategies import sampling
from tts_tui.search.tree import Node

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


def difficulty_bin(pass_rate: float, probes: int = 4) -> str:
    """The bin from the share of `probes` probes that agree (unanswered ones count
    against): easy when more than half agree, hard when no two do (all answers differ,
    or none came), medium between. With a handful of probes, agreement is at least
    1/probes whenever one answered, so Liu et al.'s < 10% could never be seen; "no two
    agree" is the weakest evidence the probes can show."""
    if pass_rate > 0.5:
        return "easy"
    if round(pass_rate * probes) < 2:  # agreeing probes (a logged share is rounded)
        return "hard"
    return "medium"


def auto(search: Search) -> Result:
    table = load_table()
    p = search.params
    k = max(1, min(int(table.get("probe", 4)), p.n))
    a = p.adaptive
    probes = [n for n in sampling.sample_full(search, k, confidence=True) if n.answer]
    groups = search.vote(probes)
    top = groups[0].count if groups else 0
    agree = top / k
    if a is not None:
        # The probes are the adaptive loop's first wave: when they already decide the
        # vote, an easy problem ends here.
        got = sampling.draw(search, k, first=probes, drawn=k, n_max=p.n)
        if got.stopped_by == "posterior":
            got.n_fixed = _fixed_draws(table, difficulty_bin(agree, k), p.n, k)  # saved against auto at fixed N
            search.note(f"the {k} probes decide it: P(leader holds) {got.posterior:.3f} >= {a.stop_at}",
                        difficulty="easy", chosen_strategy="majority", chosen_n=k, pass_rate=agree)
            result = sampling.with_draw(search.finish("auto", groups, sampling._representative(search, groups)),
                                        search, got)
            result.stats.update({"difficulty": "easy", "chosen_strategy": "majority"})
            return result
    label = difficulty_bin(agree, k)
    choice = table["bins"][label]
    strategy = choice["strategy"]
    # The probes are k of the N generations: a vote adds samples up to its n, a search
    # gets what the probes left (none left: the probes vote).
    searches = strategy not in VOTES and p.n > k
    total = _fixed_draws(table, label, p.n, k) - (k if searches else 0)
    search.note(
        f"difficulty {label}: {top}/{k} probes agree (est. pass rate {agree:.0%}) -> "
        f"{strategy if searches or strategy in VOTES else 'weighted vote of the probes'} N={total}",
        difficulty=label, chosen_strategy=strategy, chosen_n=total, pass_rate=agree,
    )
    search.difficulty = label  # type: ignore[attr-defined]
    if choice.get("adaptive") and p.adaptive is None:
        # the table found waves pay off in this bin (a refit from `tts eval --adaptive`),
        # with the settings they were measured with
        fields = AdaptiveParams.__dataclass_fields__
        known = {key: v for key, v in choice.get("adaptive_settings", {}).items() if key in fields}
        search.params = replace(p, adaptive=AdaptiveParams(**{**known, "cut": bool(choice.get("cut"))}))
    if searches:
        result = _search(search, strategy, total)
        if a is not None:  # the probes' stop check sent it on to a search
            result.stats.update({"stopped_by": "search", "posterior": round(got.posterior or 0.0, 4),
                                 "n_max": p.n})
    else:
        # an adaptive run announced the probes' posterior above (the table's own adaptive
        # choice did not: its first check is in the vote)
        result = _vote(search, strategy, probes, k, total - k, checked=a is not None)
    result.reason = search.info[0]
    result.stats["difficulty"] = label
    result.stats["chosen_strategy"] = strategy
    return result


VOTES = ("majority", "weighted", "best-of-n")


def _fixed_draws(table: dict, label: str, n: int, k: int) -> int:
    """The generations auto at fixed N spends in a bin, its k probes included."""
    choice = table["bins"][label]
    n_bin = min(n, max(1, int(round(n * float(choice.get("n_scale", 1.0))))))
    return k + min(n_bin, n - k) if choice["strategy"] not in VOTES and n > k else max(n_bin, k)


def _vote(search: Search, strategy: str, probes: list[Node], drawn: int, extra: int, checked: bool = False) -> Result:
    """The probes and `extra` more samples vote: every probe drawn counts against N,
    answered or not, so a run never draws more than N samples."""
    weigh = search.path_scores if strategy != "majority" else None
    got = sampling.draw(search, drawn + extra, weigh, first=probes, drawn=drawn, checked=checked)
    done = got.done
    weights = search.path_scores(done) if weigh is not None else None
    groups = search.vote(done, weights)
    chosen = sampling._representative(search, groups, sampling._by_id(done, weights) if weights else None)
    return sampling.with_draw(search.finish("auto", groups, chosen), search, got)


def _search(search: Search, strategy: str, n: int) -> Result:
    """A search strategy with the generations the probes left of N (M: the largest
    divisor of that N up to the user's M, so N/M beams are kept)."""
    from tts_tui.search.strategies import STRATEGIES  # the registry imports this module

    p = search.params
    m = max(d for d in range(1, min(p.m, n) + 1) if n % d == 0)
    search.params = type(p)(**{**p.__dict__, "n": n, "m": m})
    result = STRATEGIES[strategy][0](search)
    result.strategy = "auto"
    return result
