"""`tts eval`: accuracy against compute on a JSONL data set, resumable.

Each finished (strategy, N, problem) is appended to `log.jsonl` as one fsynced line, so
a killed evaluation loses at most the problem in flight and the same command continues.
For sample-based strategies (best-of-n, majority, weighted) one run at the largest N
gives the smaller N by taking its first n samples (the samples are independent), as
the papers do. DVTS is the same one level up: its N/M subtrees are independent, so a
run at the largest N gives every smaller N that M divides from its first N'/M subtrees.
Bracket draws the same N samples (same seeds) before its tournament, so when both are
asked for, the bracket run at the largest N carries the sample-based ones: they are
compared on the very same candidates, and the generation is paid once.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_tui.atomic import append_line, write_text
from tts_tui.errors import InputError
from tts_tui.search.protocol import SearchParams
from tts_tui.search.tree import CHOSEN, FINISHED
from tts_tui.search.votes import group_answers
from tts_tui.verify.answers import equivalent

SUBSAMPLED = {"best-of-n", "majority", "weighted"}
SUBTREES = {"dvts"}  # N/M independent subtrees: a smaller N is the first few of them
SINGLE = {"cot", "keep-thinking"}  # N does not apply


@dataclass
class Problem:
    id: str
    problem: str
    answer: str
    level: int | None = None


def load_problems(
    path: Path, limit: int | None = None, levels: set[int] | None = None, skip: int = 0
) -> list[Problem]:
    """The selected problems in file order: those at the given levels, the first `skip`
    of them left out (a held-out slice after the ones you tuned on), then `limit` at most."""
    if not path.is_file():
        raise InputError(f"no such data file: {path}")
    out: list[Problem] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            p = Problem(str(row.get("id", i)), row["problem"], str(row["answer"]), row.get("level"))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path}:{i + 1}: not a JSON object with 'problem' and 'answer'") from None
        if levels and p.level not in levels:
            continue
        if skip > 0:
            skip -= 1
            continue
        out.append(p)
        if limit and len(out) >= limit:
            break
    if not out:
        raise InputError(f"{path}: no problems selected")
    return out


def done_keys(log: Path) -> set[str]:
    keys: set[str] = set()
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill: that problem is redone
    return keys


def _key(strategy: str, n: int, pid: str) -> str:
    return f"{strategy}|{n}|{pid}"


def plan(strategies: list[str], ns: list[int], m: int = 1) -> list[tuple[str, int, list[int], list[str]]]:
    """(strategy to run, N to run, Ns it yields, strategies it yields) jobs.

    best-of-n, majority and weighted differ only in how they read N independent
    samples, so one weighted run at the largest N yields all three at every N. DVTS at
    the largest N yields each N that M divides (whole subtrees); other Ns run alone.
    Single chains (CoT) come first: they are the cheap baseline, and an evaluation cut
    short should still have it.
    """
    jobs = [(s, 1, [1], [s]) for s in strategies if s in SINGLE]
    sampled = [s for s in strategies if s in SUBSAMPLED]
    top = max(ns)
    carrier = "bracket" if "bracket" in strategies else "weighted"
    if sampled:
        jobs.append((carrier, top, sorted(ns), sampled + (["bracket"] if carrier == "bracket" else [])))
    for s in strategies:
        if s in SUBTREES:
            whole = [n for n in sorted(ns) if n % m == 0] if top % m == 0 else []
            jobs.extend((s, n, [n], [s]) for n in sorted(ns) if n not in whole)
            if whole:
                jobs.append((s, top, whole, [s]))
        elif s not in SUBSAMPLED and s not in SINGLE:
            jobs.extend((s, n, [n], [s]) for n in sorted(ns) if not (sampled and s == carrier and n == top))
    return jobs


def _expected(names: list[str], n: int, yields: list[int]) -> list[tuple[str, int]]:
    """The (strategy, N) rows one job writes: sample-based names at every N it yields."""
    return [(name, k) for name in names for k in (yields if name in SUBSAMPLED | SUBTREES else [n])]


SolveFn = Callable[[str, str, SearchParams], tuple[Any, Any]]


def run_eval(
    problems: list[Problem],
    strategies: list[str],
    ns: list[int],
    base: SearchParams,
    solve: SolveFn,
    out_dir: Path,
    budget_per_sample: int,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    log = out_dir / "log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = done_keys(log)
    for strategy, n, yields, names in plan(strategies, ns, base.m):
        for p in problems:
            if all(_key(name, k, p.id) in done for name, k in _expected(names, n, yields)):
                continue
            m = min(base.m, n) if n % min(base.m, n) == 0 else 1
            params = SearchParams(**{**base.__dict__, "n": n, "m": m, "budget": budget_per_sample * n})
            t0 = time.monotonic()
            result, search = solve(p.problem, strategy, params)
            seconds = time.monotonic() - t0
            rows = [r for name in names for r in _rows(name, n, yields, p, result, search, seconds)]
            for row in rows:
                if row["key"] in done:
                    continue
                append_line(log, json.dumps(row, ensure_ascii=False))
                done.add(row["key"])
                if on_row:
                    on_row(row)
    return read_rows(log)


def _rows(strategy: str, n: int, yields: list[int], p: Problem, result: Any, search: Any, seconds: float):
    base = {"id": p.id, "strategy": strategy, "gold": p.answer, "level": p.level}
    extra = {k: result.stats.get(k) for k in ("difficulty", "chosen_strategy") if k in result.stats}
    if "chains" in result.stats:  # revise: how often a later revision turned a right answer wrong
        extra["chains"] = result.stats["chains"]
        extra["attempt_tokens"] = result.stats.get("attempt_tokens")
        extra["right_to_wrong"] = chain_flips(result.stats["chains"], p.answer)[0]
    if strategy in SUBTREES and yields != [n]:
        yield from _subtree_rows(strategy, n, yields, p, result, search, seconds, base, extra)
        return
    if strategy not in SUBSAMPLED:
        yield {**base, "key": _key(strategy, n, p.id), "n": n, "answer": result.answer,
               "correct": bool(result.answer is not None and equivalent(result.answer, p.answer)),
               "tokens": result.tokens, "seconds": round(seconds, 2), **extra}
        return
    samples = _samples(search)
    # a carrier (bracket) spends time after sampling: count only the sampling
    sample_seconds = result.stats.get("sample_seconds", seconds)
    base["probe_agree"] = probe_agreement(samples)
    for k in yields:
        sub = samples[:k]
        answer = _sub_answer(strategy, sub)
        frac = sum(s["tokens"] for s in sub) / max(1, sum(s["tokens"] for s in samples))
        yield {**base, "key": _key(strategy, k, p.id), "n": k, "answer": answer,
               "correct": bool(answer is not None and equivalent(answer, p.answer)),
               "tokens": sum(s["tokens"] for s in sub), "seconds": round(sample_seconds * frac, 2),
               "subsampled_from": n if k != n else None,
               # every sample's answer and score, so other votes can be tried from the log
               **({"samples": [[s["answer"], round(s["score"], 4)] for s in samples]} if k == n else {})}


def _subtree_rows(strategy: str, n: int, yields: list[int], p: Problem, result: Any, search: Any,
                  seconds: float, base: dict[str, Any], extra: dict[str, Any]):
    """DVTS at N, read as runs at each smaller N in `yields`: the first N'/M subtrees,
    their finished paths weighted-voted as the strategy itself votes."""
    m = search.params.m
    nodes = [x for x in search.tree.nodes.values() if "subtree" in x.meta]
    done = [x for x in nodes if x.status in (FINISHED, CHOSEN) and x.answer]
    spent = max(1, sum(x.n_tokens for x in nodes))
    for k in yields:
        if k == n:
            answer, tokens = result.answer, result.tokens
        else:
            keep = k // m
            items = [(x.answer, search.path_score(x), x.id) for x in done if x.meta["subtree"] < keep]
            groups = group_answers(items, equivalent)
            answer = groups[0].answer if groups else None
            tokens = sum(x.n_tokens for x in nodes if x.meta["subtree"] < keep)
        yield {**base, "key": _key(strategy, k, p.id), "n": k, "answer": answer,
               "correct": bool(answer is not None and equivalent(answer, p.answer)),
               "tokens": tokens, "seconds": round(seconds * min(1.0, tokens / spent), 2),
               "subsampled_from": n if k != n else None, **extra}


def chain_flips(chains: list[list[str | None]], gold: str) -> tuple[int, int]:
    """(right->wrong, wrong->right): how often a revision changed a chain's correctness."""
    right = [[bool(a and equivalent(a, gold)) for a in chain] for chain in chains]
    pairs = [(x, y) for chain in right for x, y in zip(chain, chain[1:])]
    return sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)


def verifier_auroc(rows: Iterable[dict[str, Any]]) -> tuple[float, int, int] | None:
    """How well the logged sample scores separate right answers from wrong ones: the
    chance that a random right sample outscores a random wrong one (0.5 is a coin), with
    the counts of each. Unanswered samples are left out: no vote counts them."""
    right: list[float] = []
    wrong: list[float] = []
    for r in rows:
        for answer, score in r.get("samples") or []:
            if answer is not None:
                (right if equivalent(answer, r["gold"]) else wrong).append(score)
    if not right or not wrong:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in right for b in wrong)
    return wins / (len(right) * len(wrong)), len(right), len(wrong)


def versus(rows: Iterable[dict[str, Any]], baseline: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """`rows` against `baseline` (say CoT) on the problems both ran: each one's score
    there, and the ids one gets right and the other wrong (gained, lost)."""
    base = {r["id"]: bool(r["correct"]) for r in baseline}
    mine = {r["id"]: bool(r["correct"]) for r in rows if r["id"] in base}
    return {
        "shared": len(mine),
        "right": sum(mine.values()),
        "baseline_right": sum(base[i] for i in mine),
        "gained": [i for i, ok in mine.items() if ok and not base[i]],
        "lost": [i for i, ok in mine.items() if base[i] and not ok],
    }


def probe_agreement(samples: list[dict[str, Any]], probe: int | None = None) -> float:
    """Share of the first `probe` samples that agree with their most common answer:
    the difficulty estimate `auto` makes from the same (same-seed) probes."""
    if probe is None:
        from tts_tui.search.strategies.auto import load_table

        probe = int(load_table().get("probe", 4))
    first = samples[:probe]
    items = [(s["answer"], 1.0, i) for i, s in enumerate(first) if s["answer"]]
    groups = group_answers(items, equivalent)
    return round(groups[0].count / max(1, len(first)), 4) if groups else 0.0


def _samples(search: Any) -> list[dict[str, Any]]:
    """Each full sample: its answer, path score and tokens, in generation order."""
    tree = search.tree
    out = []
    for child in tree.children(tree.root):
        if child.kind == "match":  # bracket's judged matches, not samples
            continue
        leaf = child
        while leaf.children:
            leaf = tree.nodes[leaf.children[-1]]
        path = tree.path(leaf)
        # an answer is only set on a finished sample; bracket later prunes its losers
        ok = bool(leaf.answer)
        out.append({
            "answer": leaf.answer if ok else None,
            "score": search.path_score(leaf) if ok and search.scorer else 0.0,
            "tokens": sum(x.n_tokens for x in path),
            "id": leaf.id,
        })
    return out


def _sub_answer(strategy: str, samples: list[dict[str, Any]]) -> str | None:
    items = [(s["answer"], s["score"] if strategy != "majority" else 1.0, s["id"]) for s in samples if s["answer"]]
    if not items:
        return None
    if strategy == "best-of-n":
        return max(items, key=lambda x: x[1])[0]
    groups = group_answers(items, equivalent)
    return groups[0].answer


def read_rows(log: Path) -> list[dict[str, Any]]:
    rows = []
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    acc: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        acc[(r["strategy"], r["n"])].append(r)
    table = []
    for (s, n), rs in sorted(acc.items()):
        table.append({
            "strategy": s, "n": n, "problems": len(rs),
            "accuracy": sum(r["correct"] for r in rs) / len(rs),
            "mean_tokens": sum(r["tokens"] for r in rs) / len(rs),
            "mean_seconds": sum(r["seconds"] for r in rs) / len(rs),
            "median_seconds": statistics.median(r["seconds"] for r in rs),
        })
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [f"{'strategy':14} {'N':>3} {'problems':>8} {'accuracy':>8} {'mean tokens':>11} {'mean s':>7}"]
    for t in table:
        lines.append(f"{t['strategy']:14} {t['n']:>3} {t['problems']:>8} {t['accuracy']:>8.1%} "
                     f"{t['mean_tokens']:>11.0f} {t['mean_seconds']:>7.1f}")
    return "\n".join(lines)


def plot_svg(table: list[dict[str, Any]], dest: Path, title: str = "accuracy vs tokens") -> None:
    """Accuracy against mean tokens, one line per strategy, as a small standalone SVG."""
    w, h, pad = 640, 400, 60
    xs = [t["mean_tokens"] for t in table] or [1]
    xmax = max(xs) * 1.1 or 1
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

    def px(x: float) -> float:
        return pad + (w - 2 * pad) * x / xmax

    def py(y: float) -> float:
        return h - pad - (h - 2 * pad) * y

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">mean generated tokens per problem</text>',
             f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">accuracy</text>']
    for k in range(0, 11, 2):
        y = k / 10
        parts.append(f'<text x="{pad - 8}" y="{py(y) + 4}" text-anchor="end">{y:.1f}</text>')
        parts.append(f'<line x1="{pad}" y1="{py(y)}" x2="{w - pad}" y2="{py(y)}" stroke="#eee"/>')
    for k in range(5):
        x = xmax * k / 4
        parts.append(f'<text x="{px(x)}" y="{h - pad + 16}" text-anchor="middle">{x:.0f}</text>')
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in table:
        by[t["strategy"]].append(t)
    for i, (s, pts) in enumerate(sorted(by.items())):
        c = colors[i % len(colors)]
        pts.sort(key=lambda t: t["mean_tokens"])
        coords = " ".join(f"{px(t['mean_tokens']):.1f},{py(t['accuracy']):.1f}" for t in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{c}" stroke-width="2"/>')
        for t in pts:
            parts.append(f'<circle cx="{px(t["mean_tokens"]):.1f}" cy="{py(t["accuracy"]):.1f}" r="3" fill="{c}">'
                         f'<title>{s} N={t["n"]}: {t["accuracy"]:.0%}</title></circle>')
        parts.append(f'<text x="{w - pad + 4}" y="{pad + 14 * i}" fill="{c}">{s}</text>')
    parts.append("</svg>")
    write_text(dest, "\n".join(parts))
