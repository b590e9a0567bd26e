"""Refit the `auto` strategy's table from `tts eval` results.

Each problem is binned the way `auto` bins it at run time: by how many of the first
`probe` samples agree with their most common answer (the eval's sample run records
that share as `probe_agree`; same seeds, so the same samples `auto` would draw). In
each bin, the strategy and N with the best accuracy wins; ties go to fewer tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from tts_tui.search.strategies.auto import difficulty_bin

BINS = ("easy", "medium", "hard")
NOT_CHOOSABLE = {"auto", "cot"}  # auto cannot choose itself; CoT ignores the budget


def bins_by_problem(rows: Iterable[dict[str, Any]], probes: int | None = None) -> dict[str, str]:
    """A bin per problem: from the sample run's probe agreement (over the table's
    `probe` count, as `auto` bins it), or from `auto`'s own label."""
    if probes is None:
        from tts_tui.search.strategies.auto import load_table

        probes = int(load_table().get("probe", 4))
    out: dict[str, str] = {}
    for r in rows:
        if r.get("probe_agree") is not None:
            out[r["id"]] = difficulty_bin(r["probe_agree"], probes)
        elif r.get("difficulty") in BINS:
            out.setdefault(r["id"], r["difficulty"])
    return out


def accuracy_by_bin(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict[str, float]]]:
    """bin -> (strategy, N) -> accuracy, mean tokens, problems; only (strategy, N) that ran
    every problem of the bin count, so all compare on the same problems."""
    bins = bins_by_problem(rows)
    members: dict[str, set[str]] = defaultdict(set)
    for pid, b in bins.items():
        members[b].add(pid)
    cells: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["id"] in bins:
            cells[bins[r["id"]]][(r["strategy"], r["n"])].append(r)
    out: dict[str, dict[tuple[str, int], dict[str, float]]] = {}
    for b, by_cell in cells.items():
        out[b] = {}
        for cell, rs in by_cell.items():
            if {r["id"] for r in rs} >= members[b]:
                out[b][cell] = {"accuracy": sum(r["correct"] for r in rs) / len(rs),
                                "mean_tokens": sum(r["tokens"] for r in rs) / len(rs), "problems": len(rs)}
    return out


def refit(rows: list[dict[str, Any]], table: dict[str, Any], max_n: int,
          adaptive: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """A new table (bins without evidence keep their old entry) and one line per bin saying
    why. `adaptive`: the settings the log's adaptive rows were made with (kept with a bin
    that chooses one, so auto runs it as it was measured)."""
    new = {**table, "bins": dict(table["bins"])}
    lines = []
    for b, cells in sorted(accuracy_by_bin(rows).items()):
        choosable = {c: v for c, v in cells.items() if c[0].split("+")[0] not in NOT_CHOOSABLE}
        if not choosable:
            continue
        (strategy, n), v = max(choosable.items(), key=lambda kv: (kv[1]["accuracy"], -kv[1]["mean_tokens"]))
        new["bins"][b] = table_entry(strategy, round(n / max_n, 4), adaptive)
        lines.append(f"{b}: {strategy} N={n} ({v['accuracy']:.0%} on {int(v['problems'])} problems, "
                     f"{v['mean_tokens']:.0f} mean tokens)")
    probes = int(table.get("probe", 4))
    if adaptive and adaptive.get("wave", probes) != probes and any("+adaptive" in str(e.get("strategy", "")) or
                                                                  e.get("adaptive") for e in new["bins"].values()):
        # the replayed rows drew a first wave of `wave` samples; auto's first wave is its probes
        lines.append(f"note: the adaptive rows were measured with waves of {adaptive['wave']}, auto's first wave "
                     f"is its {probes} probes: where they differ, its adaptive votes only approximate those rows")
    new["_refit"] = lines
    return new, lines


def table_entry(name: str, n_scale: float, adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    """A row name as a table entry: "majority+adaptive+cut" is a majority vote drawn in
    waves (stopping once decided) with DeepConf's cut."""
    base, *flags = name.split("+")
    entry: dict[str, Any] = {"strategy": base, "n_scale": n_scale}
    if "adaptive" in flags:
        entry["adaptive"] = True
        entry["cut"] = "cut" in flags
        if adaptive:
            entry["adaptive_settings"] = {k: v for k, v in adaptive.items() if k != "cut"}
    return entry


def format_bins(rows: list[dict[str, Any]]) -> str:
    """Accuracy per strategy x N within each difficulty bin, as printed by `tts eval`."""
    acc = accuracy_by_bin(rows)
    lines = [f"{'bin':7} {'strategy':14} {'N':>3} {'problems':>8} {'accuracy':>8} {'mean tokens':>11}"]
    for b in BINS:
        for (s, n), v in sorted(acc.get(b, {}).items()):
            lines.append(f"{b:7} {s:14} {n:>3} {int(v['problems']):>8} {v['accuracy']:>8.1%} {v['mean_tokens']:>11.0f}")
    return "\n".join(lines)
