"""Pure formatting for the TUI (labels, bars, detail text): easy to test, no widgets."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from tts_tui.search.stopping import saved_against, stop_line
from tts_tui.search.tree import CHOSEN, FINISHED, LIVE, PRUNED, Node, Tree

GLYPHS = {LIVE: ("●", "yellow"), PRUNED: ("✗", "red dim"), FINISHED: ("✓", "green"), CHOSEN: ("★", "bold magenta")}
DONE_GLYPH = ("·", "")  # a step on the way to a finished solution, after the run
CUT_MARK = "✂"


def preview(text: str, width: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def node_label(node: Node, running: bool = True) -> Text:
    glyph, style = GLYPHS.get(node.status, ("?", ""))
    if node.status == LIVE and not running:
        glyph, style = DONE_GLYPH
    label = Text()
    label.append(f"{glyph} ", style=style)
    if node.forced:
        label.append(node.forced.strip() + " ", style="italic cyan")
    label.append(preview(node.text) or "(empty)", style="dim" if node.status == PRUNED else "")
    bits = []
    for name, score in node.scores.items():
        bits.append(f"{name[:4]} {score:.2f}")
    bits.append(f"{node.n_tokens}t")
    if node.answer and node.status in (FINISHED, CHOSEN):
        bits.append(f"= {node.answer}")
    if is_cut(node):
        bits.append(f"{CUT_MARK} cut")  # pruned on purpose (DeepConf), not by the budget
    label.append("  " + " · ".join(bits), style="dim" if node.status != CHOSEN else "magenta")
    return label


def is_cut(node: Node) -> bool:
    """A trace an adaptive vote cut for low confidence (it casts no vote)."""
    return node.finish == "cut"


def confidence(node: Node) -> float | None:
    lp = node.mean_logprob
    return math.exp(lp) if lp is not None else None


def detail_text(tree: Tree, node: Node) -> Text:
    """The path from the root to `node`, each step with its scores and confidence."""
    out = Text()
    out.append("Problem\n", style="bold")
    out.append(tree.problem.strip() + "\n\n")
    for i, step in enumerate(tree.path(node), 1):
        conf = confidence(step)
        scores = "  ".join(f"{k} {v:.3f}" for k, v in step.scores.items())
        head = f"Step {i}  [{step.status}]  {step.n_tokens} tokens"
        head += f"  confidence {conf:.3f}" if conf is not None else ""
        head += f"  {scores}" if scores else ""
        out.append(head + "\n", style="bold cyan")
        if step.forced:
            out.append(step.forced, style="italic cyan")
        if step.meta.get("asked"):  # a revision: what the model was asked before it
            out.append(step.meta["asked"] + "\n", style="italic cyan")
        out.append(step.text.rstrip() + "\n\n")
        if is_cut(step):
            out.append(f"{CUT_MARK} cut: {step.meta.get('cut') or 'low confidence'}\n\n", style="bold red")
    if node.answer:
        out.append(f"Answer: {node.answer}\n", style="bold green")
    return out


def answer_bars(groups: list[dict[str, Any]], width: int = 12) -> Text:
    out = Text()
    if not groups:
        out.append("no answers yet", style="dim")
        return out
    total_w = sum(g["weight"] for g in groups) or 1.0
    top = max(g["weight"] for g in groups) or 1.0
    for i, g in enumerate(groups[:8]):
        n = max(1, round(width * g["weight"] / top))
        style = "bold green" if i == 0 else "blue"
        out.append(f"{preview(str(g['answer']), 10):>10} ", style="bold" if i == 0 else "")
        out.append("█" * n + " " * (width - n), style=style)
        out.append(f" {g['count']:>2}v w{g['weight']:5.2f} {g['weight'] / total_w:4.0%}\n")
    return out


def p_right_text(p: float, stats_only: bool = False) -> Text:
    """The probe's estimate that the chosen answer is right, as the answer panel shows it
    (`stats_only`: the chosen node had no hidden state, so it read token statistics alone)."""
    out = Text()
    out.append(f"P(right) {p:.2f}", style="bold green" if p >= 0.5 else "yellow")
    out.append("  probe's estimate" + (" (token statistics only)" if stats_only else ""), style="dim")
    return out


# Why an adaptive vote stopped sampling, as the answer panel says it once the run is done.
def stop_rule_text(rule: dict[str, Any] | None, stats: dict[str, Any] | None = None) -> Text:
    """An adaptive vote's stop rule: P(leader holds) against stop_at, then samples used of N.

    `rule` is the latest STOP_RULE event's data; `stats` the finished run's stats. Once the
    run is done its `stopped_by` gives the verdict: a last wave short of stop_at ended at N
    or at the budget, and no next wave is coming."""
    rule, stats = rule or {}, stats or {}
    used = stats.get("samples_used", rule.get("samples_used", 0))
    n_max = stats.get("n_max", rule.get("n_max", 0))
    out = Text()
    line = stop_line(rule, stats)
    if line.endswith("-"):
        out.append(line, style="dim")  # no wave has been voted on
    else:
        head, word = line.rsplit(": ", 1)
        out.append(f"{head}: ")
        out.append(word, style="bold green" if word == "stop" else "yellow")
    if stats.get("stopped_by") == "search":  # auto's probes, then a search with its own budget
        out.append(f"\n{used} probes of {n_max}, then {stats.get('chosen_strategy', 'a search')}")
    else:
        out.append(f"\nsamples {used}/{n_max}")
    return out


def adaptive_compute_lines(rule: dict[str, Any] | None, stats: dict[str, Any] | None = None) -> list[str]:
    """The compute panel's adaptive lines: tokens saved against the fixed-N run (once it is
    done: until then nothing is saved yet) and the traces cut, if any."""
    rule, stats = rule or {}, stats or {}
    lines = []
    if "tokens_saved_est" in stats:
        lines.append(f"saved ≈ {int(stats['tokens_saved_est']):,} tokens vs {saved_against(stats)}")
    cut = int(stats.get("cut", rule.get("cut", 0)) or 0)
    if cut:
        floor = stats.get("cut_floor", rule.get("cut_floor"))
        below = f" below confidence {floor:.2f}" if floor is not None else ""
        lines.append(f"{CUT_MARK} cut {cut} trace{'s' if cut != 1 else ''}{below}")
    return lines


FIGURE_COLUMNS = ("run", "strategy", "N", "M", "T", "verifier", "answer", "confidence", "votes", "tokens", "time",
                  "tok/s")


def figures_table(rows: list[dict[str, Any]]) -> Any:
    """One row of accuracy-relevant figures per run, for the compare screen."""
    from rich.table import Table

    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for col in FIGURE_COLUMNS:
        table.add_column(col, justify="left" if col in ("run", "strategy", "verifier", "answer") else "right",
                         no_wrap=True, overflow="ellipsis", max_width=14 if col == "answer" else None)
    for r in rows:
        secs = r.get("seconds")
        rate = r["tokens"] / secs if secs else None
        table.add_row(
            r["run"], r["strategy"], str(r["n"]), str(r["m"]), f"{r['temperature']:g}", r["verifier"],
            preview(str(r["answer"]), 14) if r.get("answer") is not None else "-",
            f"{r['confidence']:.0%}" if r.get("confidence") is not None else "-",
            r.get("votes") or "-", f"{r['tokens']}/{r['budget']}",
            f"{secs:.1f}s" if secs is not None else "-", f"{rate:.1f}" if rate else "-",
            style="bold" if r.get("state") == "done" else ("dim" if r.get("state") == "waiting" else ""),
        )
    return table


def budget_bar(spent: int, budget: int, width: int = 28) -> Text:
    """Tokens used against the budget as a text bar (cheaper to repaint than a widget)."""
    frac = min(1.0, spent / max(1, budget))
    full = round(frac * width)
    out = Text()
    out.append("━" * full, style="bold green" if frac < 0.9 else "bold yellow")
    out.append("━" * (width - full), style="grey23")
    out.append(f" {frac:4.0%}")
    return out


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 36) -> Text:
    """Recent tokens/s, one cell per sample, scaled to the largest shown."""
    vals = values[-width:]
    top = max(vals, default=0.0)
    if top <= 0:
        return Text("▁" * max(1, len(vals)), style="grey37")
    return Text("".join(SPARKS[min(7, int(v / top * 7.999))] for v in vals), style="cyan")
