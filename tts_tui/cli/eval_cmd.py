"""`tts eval`: run strategies over a data set and report accuracy against compute."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tts_tui.errors import TTSError


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TTSError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise TTSError(f"{what} must be positive integers, got {text!r}")
    return vals


def eval_command(
    data: Path = typer.Option(..., "--data", help="JSONL with 'problem' and 'answer' per line."),
    strategy: str = typer.Option("cot,majority", "--strategy", "-s", help="Comma-separated strategies."),
    n: str = typer.Option("1,4,8", "--n", help="Comma-separated N values."),
    m: int = typer.Option(4, "--m"),
    limit: Optional[int] = typer.Option(None, "--limit", help="First K problems."),
    skip: int = typer.Option(0, "--skip", min=0, help="Leave out the first K selected problems (a held-out slice)."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Only these MATH levels, e.g. 1,2."),
    budget_per_sample: int = typer.Option(512, "--budget-per-sample", help="Token budget = this x N."),
    temperature: float = typer.Option(0.3, "--temperature", "-t"),
    seed: int = typer.Option(0, "--seed"),
    max_steps: int = typer.Option(24, "--max-steps"),
    model: Optional[str] = typer.Option(None, "--model"),
    verifier: str = typer.Option("confidence", "--verifier"),
    prm: Optional[str] = typer.Option(None, "--prm"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default eval-out/<data>-<model>)."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    refit_auto: bool = typer.Option(False, "--refit-auto",
                                    help="Refit auto's table per difficulty bin from this log (user config)."),
) -> None:
    """Accuracy, mean tokens and time per strategy x N; resumable; writes log.jsonl and plot.svg."""
    from tts_tui.evaluate import format_table, load_problems, plot_svg, run_eval, summarize
    from tts_tui.refit import format_bins
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.strategies import validate
    from tts_tui.session import EngineOptions, Solver
    from tts_tui.cli.progress import download_progress

    strategies = [s.strip() for s in strategy.split(",") if s.strip()]
    ns = _ints(n, "--n")
    lv = set(_ints(levels, "--levels")) if levels else None
    base = SearchParams(n=max(ns), m=m, temperature=temperature, seed=seed, max_steps=max_steps,
                        budget=budget_per_sample * max(ns))
    for s in strategies:
        for k in ns:
            mm = min(m, k) if k % min(m, k) == 0 else 1
            validate(s, SearchParams(**{**base.__dict__, "n": k, "m": mm}))
    problems = load_problems(data, limit, lv, skip)
    with download_progress() as on_progress:
        solver = Solver(model, prm=prm, options=EngineOptions(n_threads=threads), on_progress=on_progress)
    out = out or Path("eval-out") / f"{data.stem}-{solver.model_path.stem}"

    def solve(problem: str, strat: str, params: SearchParams):
        return solver.solve(problem, strat, params, verifier)

    def on_row(row: dict) -> None:
        mark = "ok " if row["correct"] else "bad"
        extra = f" [{row.get('difficulty')}->{row.get('chosen_strategy')}]" if row.get("difficulty") else ""
        print(f"{mark} {row['strategy']:12} N={row['n']:<3} {row['id']:28} answer={row['answer']!s:12} "
              f"gold={row['gold']:10} tokens={row['tokens']} {row['seconds']}s{extra}", file=sys.stderr, flush=True)

    rows = run_eval(problems, strategies, ns, base, solve, out, budget_per_sample, on_row)
    keep = {p.id for p in problems}
    mine = [r for r in rows if r["id"] in keep]
    table = summarize([r for r in mine if r["strategy"] in strategies])
    print(format_table(table))
    plot_svg(table, out / "plot.svg", title=f"{data.name}: accuracy vs tokens ({solver.model_path.stem})")
    print(f"# log: {out / 'log.jsonl'}  plot: {out / 'plot.svg'}")
    if any(r.get("probe_agree") is not None or r.get("difficulty") for r in mine):
        print("\n" + format_bins(mine))
    if refit_auto:
        _refit(mine, max(ns))


def _refit(rows: list[dict], max_n: int) -> None:
    from tts_tui import paths
    from tts_tui.atomic import write_json
    from tts_tui.refit import refit
    from tts_tui.search.strategies.auto import load_table

    table, lines = refit(rows, load_table(), max_n)
    if not lines:
        raise TTSError("--refit-auto: no difficulty estimates in this log (run a sample strategy or auto first)")
    write_json(paths.auto_table_path(), table)
    print("# auto table refitted: " + "; ".join(lines) + f" -> {paths.auto_table_path()}")
