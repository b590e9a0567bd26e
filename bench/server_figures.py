"""In-process engine against llama-server, side by side in one run (issue 18, part 4).

    python bench/server_figures.py [--model fast] [--limit 20] [--n 8] [--m 4]
                                   [--parts engine,c1,c4,c8,nocache] [--out eval-out/server-figures]

The same GSM8K problems with majority@N and beam N M: in process, then against a fresh
llama-server (`scripts/serve_local.sh`, `--parallel N`) at `--concurrency` 1, 4 and 8.
Accuracy, tokens, wall time and problems per minute, as ratios to the engine. Then beam
alone on the first 5 problems, one at a time, with the server's prompt cache on (`cache5`)
and off (`nocache5`): the prompt tokens the server evaluated per generated token.

Each part runs each strategy with one `run_eval` into its own folder (against a fresh
server: no prompt cached from another run), its summary written at its end; a part with a
summary is not run again, a part cut short is run again from its start (its wall time
must be whole to compare). Run it on a quiet machine: another process on the cores makes
the ratios meaningless.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import llama_server  # noqa: E402
from llama_server import stop  # noqa: E402

from tts_tui.atomic import write_json
from tts_tui.evaluate import load_problems, run_eval
from tts_tui.search.protocol import SearchParams

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k_dev.jsonl"
STRATEGIES = ("majority", "beam")


def serve(model: str, slots: int, log: Path) -> tuple[subprocess.Popen, str]:
    """A fresh llama-server (an empty prompt cache), `slots` parallel sequences of 2048 tokens."""
    try:
        return llama_server.start(model, log, "-np", str(slots), "-c", str(2048 * slots))
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def run_part(name: str, solver, problems, params: SearchParams, share: int, out: Path, concurrency: int,
             strategies=STRATEGIES) -> dict:
    """Each strategy over the problems; wall time and the server's counts per strategy."""
    part = out / name
    summary = {}
    for strategy in strategies:
        if (part / strategy).exists():
            shutil.rmtree(part / strategy)  # a run cut short: its wall time would not be whole
        before = solver.generator.stats() if hasattr(solver.generator, "stats") else {}
        t0 = time.monotonic()
        rows = run_eval(problems, [strategy], [params.n], params, lambda p, s, q: solver.solve(p, s, q, "confidence"),
                        part / strategy, share, concurrency=concurrency)
        wall = time.monotonic() - t0
        after = solver.generator.stats() if hasattr(solver.generator, "stats") else {}
        summary[strategy] = {
            "problems": len(rows), "correct": sum(bool(r["correct"]) for r in rows),
            "failed": sum(1 for r in rows if r.get("failed")),
            "tokens": sum(r["tokens"] for r in rows), "wall_s": round(wall, 1),
            "server": {k: after[k] - before.get(k, 0) for k in after}}
        print(f"{name:8} {strategy:9} {summary[strategy]}", file=sys.stderr, flush=True)
    return summary


def table(parts: dict[str, dict]) -> str:
    lines = ["| part | strategy | accuracy | mean tokens | wall s | problems/min | vs engine |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, summary in parts.items():
        for strategy, s in summary.items():
            ppm = s["problems"] / (s["wall_s"] / 60)
            base = parts.get("engine", {}).get(strategy)
            ratio = f"{ppm / (base['problems'] / (base['wall_s'] / 60)):.2f}x" if base and name != "engine" else "1"
            lines.append(f"| {name} | {strategy} | {s['correct']}/{s['problems']} | {s['tokens'] / s['problems']:.0f} "
                         f"| {s['wall_s']:.1f} | {ppm:.2f} | {ratio} |")
    return "\n".join(lines)


def resent(parts: dict[str, dict]) -> str:
    """Prompt tokens the server evaluated (not served from its cache) per generated token."""
    lines = []
    for name, summary in parts.items():
        for strategy, s in summary.items():
            srv = s.get("server") or {}
            if srv.get("generated_tokens") and "cached_tokens" in srv:  # a server's counts, not the engine's
                evaluated = srv["prompt_tokens"] - srv.get("cached_tokens", 0)
                lines.append(f"{name:8} {strategy:9} prompt {srv['prompt_tokens']:>8} cached {srv.get('cached_tokens', 0):>8} "
                             f"evaluated per generated token {evaluated / srv['generated_tokens']:.2f} "
                             f"(resent per generated token {srv['prompt_tokens'] / srv['generated_tokens']:.2f}, "
                             f"{s['problems']} problems)")
    return "\n".join(lines)


def served(name: str, strategy: str, args, problems, params: SearchParams) -> dict:
    """One strategy against a fresh llama-server: no prompt cached from another run."""
    from tts_tui.session import RemoteSolver

    proc, url = serve(args.model, args.n, args.out / "llama-server.log")
    try:
        solver = RemoteSolver(url, args.model, concurrency=args.n)
        if name.endswith("cache5"):
            solver.generator.cache_prompt = name == "cache5"
            return run_part(name, solver, problems[:5], params, args.budget_per_sample, args.out, 1, (strategy,))
        k = int(name.removeprefix("c"))
        return run_part(name, solver, problems, params, args.budget_per_sample, args.out, k, (strategy,))
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fast")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--budget-per-sample", type=int, default=512)
    ap.add_argument("--parts", default="engine,c1,c4,c8,cache5,nocache5")
    ap.add_argument("--out", type=Path, default=ROOT / "eval-out" / "server-figures")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problems = load_problems(args.data, args.limit)
    params = SearchParams(n=args.n, m=args.m, budget=args.budget_per_sample * args.n)
    parts: dict[str, dict] = {}
    for name in args.parts.split(","):
        done = args.out / f"{name}.json"
        if done.is_file():
            parts[name] = json.loads(done.read_text())
            continue
        if name == "engine":
            from tts_tui.session import Solver

            solver = Solver(args.model)
            try:
                parts[name] = run_part(name, solver, problems, params, args.budget_per_sample, args.out, 1)
            finally:
                solver.close()
        else:
            parts[name] = {}
            for strategy in ("beam",) if name.endswith("cache5") else STRATEGIES:
                parts[name].update(served(name, strategy, args, problems, params))
        write_json(done, parts[name])
    print(table({k: v for k, v in parts.items() if not k.endswith("cache5")}))
    print()
    print(resent(parts))


if __name__ == "__main__":
    main()
