"""`tts eval`: run strategies over a data set and report accuracy against compute."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer

from tts_tui.cli.adaptive_options import CUT_KEEP, CUT_WINDOW, STOP_AT, WAVE, adaptive_params, cut_option
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
    m: int = typer.Option(4, "--m", help="M for beam, dvts, revise, mcts, auto: must suit every N."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First K problems."),
    skip: int = typer.Option(0, "--skip", min=0, help="Leave out the first K selected problems (a held-out slice)."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Only these MATH levels, e.g. 1,2."),
    budget_per_sample: int = typer.Option(512, "--budget-per-sample", help="Token budget = this x N."),
    temperature: float = typer.Option(0.3, "--temperature", "-t"),
    seed: int = typer.Option(0, "--seed"),
    max_steps: int = typer.Option(24, "--max-steps"),
    model: Optional[str] = typer.Option(None, "--model"),
    verifier: Optional[str] = typer.Option(None, "--verifier",
                                           help="Default: the probe where one is trained for the model, else confidence."),
    prm: Optional[str] = typer.Option(None, "--prm", help="PRM model (catalog id or GGUF path; with --prm-url, "
                                                           "its name on that server)."),
    prm_url: Optional[str] = typer.Option(None, "--prm-url", help="openai: a vLLM server pooling a PRM."),
    prm_api_key_env: Optional[str] = typer.Option(None, "--prm-api-key-env",
                                                  help="openai: the variable holding the PRM server's key."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default eval-out/<data>-<model>)."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    layer: str = typer.Option("probe", "--layer",
                              help="The layer a captured state comes from (for --verifier probe and --save-states): "
                                   "'probe' (the one the model's probe reads), a number, 'final' or 'auto'."),
    refit_auto: bool = typer.Option(False, "--refit-auto",
                                    help="Refit auto's table per difficulty bin from this log (user config)."),
    allow_settings_change: bool = typer.Option(
        False, "--allow-settings-change",
        help="Make these settings current in an output dir made with others: its rows stay in the log, "
             "those made with other settings are run again and replaced in the tables."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Run again the problems logged as failed (their new rows replace them)."),
    adaptive: bool = typer.Option(
        False, "--adaptive",
        help="Adaptive votes: majority and weighted gain rows replayed from their fixed-N samples "
             "(NAME+adaptive); auto and bracket run adaptive."),
    stop_at: float = STOP_AT,
    wave: int = WAVE,
    cut: bool = cut_option("Adaptive: also DeepConf-cut rows (weak traces cut after wave 1)."),
    cut_window: int = CUT_WINDOW,
    cut_keep: float = CUT_KEEP,
    save_states: Optional[Path] = typer.Option(
        None, "--save-states",
        help="Also keep every vote sample's hidden states and token statistics in this sample set "
             "(as tts verifier train makes; read by tts verifier eval). Local backend only."),
    backend: str = typer.Option("llamacpp", "--backend", help="llamacpp (in process) or openai (servers)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="openai: URL[,URL2,...]; problems spread over them."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="openai: the variable holding the API key."),
    template: Optional[str] = typer.Option(None, "--template", help="openai: chatml, or a file with the model's template (.jinja, tokenizer_config.json, .gguf), where the server renders none."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="openai: problems run at once."),
) -> None:
    """Accuracy, mean tokens and time per strategy x N; resumable; writes log.jsonl and plot.svg."""
    from tts_tui.catalog import resolve_model
    from tts_tui.evaluate import (SAMPLE_CARRIERS, adaptive_names, base_strategy, check_m, code_version,
                                  current_filter, job_params, library_versions, load_problems, open_settings,
                                  run_eval)
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.strategies import validate
    from tts_tui.backends.llamacpp.tap import layer_refusal
    from tts_tui.catalog.gguf_file import block_count
    from tts_tui.session import VERIFIERS, EngineOptions, Solver, default_verifier_for, engine_layer, require_probe
    from dataclasses import replace
    from tts_tui.cli.progress import download_progress
    from tts_tui.cli.verifier_cmd import layer_option

    strategies = [s.strip() for s in strategy.split(",") if s.strip()]
    if any("+" in s for s in strategies):
        raise TTSError("--strategy takes plain names (majority, auto, ...): --adaptive adds the NAME+adaptive rows")
    ns = _ints(n, "--n")
    lv = set(_ints(levels, "--levels")) if levels else None
    base = SearchParams(n=max(ns), m=m, temperature=temperature, seed=seed, max_steps=max_steps,
                        budget=budget_per_sample * max(ns), adaptive=adaptive_params(adaptive, stop_at, wave, cut, cut_window, cut_keep))
    if adaptive:
        strategies = adaptive_names(strategies, cut)
    # every check a problem would fail the same way runs here, before any model loads:
    # a bad setting must not become one failed row per problem
    if verifier is not None and verifier not in VERIFIERS:
        raise TTSError(f"unknown verifier {verifier!r} (choose from: {', '.join(VERIFIERS)})")
    if verifier == "prm" and not prm:
        raise TTSError("--verifier prm needs --prm MODEL (a catalog id or a GGUF path; on a server, with --prm-url)")
    if prm_url and backend != "openai":
        raise TTSError("--prm-url needs --backend openai (locally, --prm names a GGUF)")
    check_m(strategies, ns, m)
    for s in strategies:
        for k in ns:
            validate(base_strategy(s), job_params(base, s, k, budget_per_sample))
    hidden_layer = layer_option(layer, allow_probe=True)
    problems = load_problems(data, limit, lv, skip)
    if save_states and not any(base_strategy(s) in SAMPLE_CARRIERS for s in strategies):
        raise TTSError("--save-states keeps vote samples: give majority, weighted, best-of-n or bracket")
    if backend == "openai":
        if save_states:
            raise TTSError("--save-states needs the local backend: a server does not return hidden states")
        if layer != "probe":
            raise TTSError("--layer needs the local backend: a server does not return hidden states")
        return _eval_remote(data, problems, strategies, ns, base, budget_per_sample, verifier, out, model, base_url,
                            api_key_env, template, concurrency, allow_settings_change, retry_failed, prm, prm_url,
                            prm_api_key_env)
    if backend != "llamacpp":
        raise TTSError(f"unknown backend {backend!r} (llamacpp or openai)")
    if concurrency > 1:
        raise TTSError("--concurrency is for --backend openai: one local context runs one problem at a time")
    options = EngineOptions(n_threads=threads, hidden_layer=hidden_layer)
    with download_progress() as on_progress:
        model_path = resolve_model(model, on_progress=on_progress)
        prm_path = resolve_model(prm, role="verifier", on_progress=on_progress) if verifier == "prm" else None
    # before settings are written or the model loads: one error, not a failed row each
    n_layer = block_count(model_path)
    verifier = verifier or default_verifier_for(model_path, options.hidden_layer, n_layer)
    if isinstance(hidden_layer, int) and n_layer is not None:
        why = layer_refusal(model_path.name, hidden_layer, n_layer)
        if why:
            raise TTSError(f"--layer {hidden_layer}: {why}")
    if verifier == "probe":
        require_probe(model_path, options.hidden_layer, n_layer)
    options = replace(options, hidden_layer=engine_layer(options.hidden_layer, verifier, bool(save_states)))
    out = out or Path("eval-out") / f"{data.stem}-{model_path.stem}"
    settings = eval_settings(data, model_path, prm_path, verifier, base, budget_per_sample, options)
    code = code_version()
    digest = open_settings(out, settings, strategies, allow_change=allow_settings_change, code=code)
    with download_progress() as on_progress:
        solver = Solver(model, prm=prm, options=options, on_progress=on_progress)

    solve = _state_saving(solver, verifier, problems, save_states, budget_per_sample, base) if save_states else (
        lambda problem, strat, params: solver.solve(problem, strat, params, verifier))

    stamp = {"settings_digest": digest, "code": code, **library_versions()}
    rows = run_eval(problems, strategies, ns, base, solve, out, budget_per_sample, _print_row,
                    meter=engine_meter(solver), stamp=stamp, retry_failed=retry_failed,
                    is_current=current_filter(out))
    mine = _report(rows, problems, strategies, out, f"{data.name}: accuracy vs tokens ({model_path.stem})")
    print(f"# log: {out / 'log.jsonl'}  plot: {out / 'plot.svg'}  settings: {out / 'settings.json'} ({digest})")
    _tail(mine, strategies)
    if refit_auto:
        _refit(mine, max(ns), base.settings()["adaptive"])


SAMPLING_KNOBS = ("budget_per_sample", "temperature", "top_p", "top_k", "seed", "max_steps", "step_tokens")


def _state_saving(solver, verifier: str, problems, dest: Path, budget_per_sample: int, base: SearchParams):
    """A solve that runs with capture on and writes each vote's samples, labelled, to the
    sample set `dest` (resumable: a problem it holds already is not written again)."""
    from tts_tui.evaluate import SAMPLE_CARRIERS, params_settings, sample_leaves
    from tts_tui.verifier_train import open_sample_set, save_problem

    # the set holds one sampling: the same knobs that shape a sample on every problem (a resume
    # with others is refused); N may differ, a vote reads each problem's first K samples
    knobs = params_settings(base, budget_per_sample)
    held = open_sample_set(dest, solver, {k: knobs[k] for k in SAMPLING_KNOBS})
    by_text = {}
    for p in problems:
        by_text.setdefault(p.problem.strip(), p)

    def solve(problem: str, strat: str, params: SearchParams):
        t0 = time.monotonic()
        result, search = solver.solve(problem, strat, params, verifier, capture=True)
        p = by_text.get(problem.strip())
        if strat in SAMPLE_CARRIERS and params.n == base.n and p is not None and p.id not in held:
            try:
                save_problem(dest, p, search, sample_leaves(search.tree), time.monotonic() - t0)
                held.add(p.id)
            except (OSError, ValueError) as exc:  # the eval's row stands; the set just lacks this problem
                print(f"warning: {p.id} not kept in {dest}: {exc}", file=sys.stderr, flush=True)
        return result, search

    return solve


def _report(rows, problems, strategies, out: Path, title: str) -> list[dict]:
    """Print the table and write the plot; the current rows of these problems."""
    from tts_tui.evaluate import current_rows, format_table, plot_svg, summarize

    keep = {p.id for p in problems}
    # rows made with other settings (other Ns than these, say) stay out of the figures
    mine = [r for r in current_rows(rows, out) if r["id"] in keep]
    table = summarize([r for r in mine if r["strategy"] in strategies])
    print(format_table(table))
    plot_svg(table, out / "plot.svg", title=title)
    return mine


def _tail(mine: list[dict], strategies: list[str]) -> None:
    from tts_tui.refit import format_bins

    failed = [r for r in mine if r.get("failed") and r["strategy"] in strategies]
    if failed:
        print(f"# {len(failed)} failed rows (counted wrong; --retry-failed runs them again)")
    if any(r.get("probe_agree") is not None or r.get("difficulty") for r in mine):
        print("\n" + format_bins(mine))


def _eval_remote(data: Path, problems, strategies, ns, base, budget_per_sample: int, verifier, out, model,
                 base_url, api_key_env, template, concurrency: int, allow_settings_change: bool,
                 retry_failed: bool, prm: Optional[str] = None, prm_url: Optional[str] = None,
                 prm_api_key_env: Optional[str] = None) -> None:
    """`tts eval --backend openai`: the same rows from servers, `concurrency` problems at
    once, spread round robin over the --base-url list."""
    from tts_tui.cli.app import remote_solver
    from tts_tui.evaluate import (code_version, current_filter, file_sha256, job_params, library_versions,
                                  open_settings, params_settings, run_eval)

    from tts_tui.backends.openai.templates import checked

    if any(name.endswith("+cut") for name in strategies):
        # a server's cut ends a trace at a step's end, where the replayed rows cut at the
        # token: replayed +cut rows would not be what a live run does
        raise TTSError("--cut rows are replayed token by token, which a server's cut (at step ends) does not "
                       "match: leave out --cut with --backend openai (tts solve --cut runs it live)")
    template = checked(template)  # a file: its absolute path (and its digest, below)
    urls = [u.strip() for u in (base_url or "").split(",") if u.strip()]
    solvers = ([remote_solver(u, model, api_key_env, template, prm, prm_url, prm_api_key_env) for u in urls]
               or [remote_solver(None, model, None, None)])
    verifier = verifier or "confidence"
    from tts_tui.evaluate import base_strategy

    for s in solvers:  # refused here, once, before any row: a refusal is not a failed row
        for name in strategies:
            s.check(base_strategy(name), verifier, job_params(base, name, max(ns), budget_per_sample))
    settings = {"data": data.name, "data_sha256": file_sha256(data), "model": model, "model_sha256": None,
                "backend": "openai", "template": template, "verifier": verifier,
                **({"template_sha256": file_sha256(Path(template))} if template not in (None, "chatml") else {}),
                **({"prm": prm} if verifier == "prm" else {}),
                **params_settings(base, budget_per_sample)}
    out = out or Path("eval-out") / f"{data.stem}-{Path(model).name}-remote"
    code = code_version()
    digest = open_settings(out, settings, strategies, allow_change=allow_settings_change, code=code)
    pick = _RoundRobin(solvers)
    t0 = time.monotonic()
    solved = [0]
    cancel = threading.Event()  # set if the run is broken off: the problems in flight stop

    def solve(problem: str, strat: str, params):
        solver = pick.next()
        try:
            out = solver.solve(problem, strat, params, verifier, cancel=cancel)
        except TTSError as exc:
            pick.failed(solver, exc.transient)
            raise
        pick.failed(solver, False)
        with pick.lock:
            solved[0] += 1  # one problem run by one strategy (a carrier's several rows: one solve)
        return out

    def on_row(row: dict) -> None:
        _print_row(row)
        if row.get("failed") or row.get("subsampled_from") is not None:
            return  # a failure solved nothing; a row derived from a run is not a run
        minutes = max(1e-9, (time.monotonic() - t0) / 60)
        print(f"# {solved[0]} problems solved, {solved[0] / minutes:.2f} per minute", file=sys.stderr, flush=True)

    stamp = {"settings_digest": digest, "code": code, **library_versions(), "backend": "openai"}
    rows = run_eval(problems, strategies, ns, base, solve, out, budget_per_sample, on_row, stamp=stamp,
                    retry_failed=retry_failed, is_current=current_filter(out), concurrency=concurrency,
                    cancel=cancel)
    mine = _report(rows, problems, strategies, out, f"{data.name}: accuracy vs tokens ({model}, remote)")
    print(f"# log: {out / 'log.jsonl'}  plot: {out / 'plot.svg'}  settings: {out / 'settings.json'} ({digest})"
          f"  servers: {len(solvers)}, concurrency {concurrency}")
    _tail(mine, strategies)


class _RoundRobin:
    """Problems spread over the servers in turn; a server whose last two problems failed
    for want of an answer (down, overloaded) is passed over while another answers, and
    given a problem again every SKIP_ROUNDS picks to see whether it is back."""

    SKIP_ROUNDS = 8

    def __init__(self, solvers: list) -> None:
        self.solvers = solvers
        self.streak = [0] * len(solvers)
        self.picks = 0
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.picks += 1
            healthy = [i for i, n in enumerate(self.streak) if n < 2]
            failing = [i for i, n in enumerate(self.streak) if n >= 2]
            if failing and not healthy:
                return self.solvers[failing[self.picks % len(failing)]]
            if failing and self.picks % self.SKIP_ROUNDS == 0:
                return self.solvers[failing[(self.picks // self.SKIP_ROUNDS) % len(failing)]]  # back yet?
            return self.solvers[healthy[self.picks % len(healthy)]]

    def failed(self, solver, transient: bool) -> None:
        with self.lock:
            i = self.solvers.index(solver)
            self.streak[i] = self.streak[i] + 1 if transient else 0


def _print_row(row: dict) -> None:
    if row.get("failed"):
        print(f"ERR {row['strategy']:12} N={row['n']:<3} {row['id']:28} {row['failed']}", file=sys.stderr, flush=True)
        return
    mark = "ok " if row["correct"] else "bad"
    extra = f" [{row.get('difficulty')}->{row.get('chosen_strategy')}]" if row.get("difficulty") else ""
    prefill = f"+{row['prefill_tokens']} prefill " if row.get("prefill_tokens") else ""
    print(f"{mark} {row['strategy']:12} N={row['n']:<3} {row['id']:28} answer={row['answer']!s:12} "
          f"gold={row['gold']:10} tokens={row['tokens']} {prefill}{row['seconds']}s{extra}",
          file=sys.stderr, flush=True)


def eval_settings(data: Path, model_path: Path, prm_path: Optional[Path], verifier: str, base,
                  budget_per_sample: int, options) -> dict:
    """Every setting that changes an evaluation's rows (what `settings.json` holds and a
    resume must match). The problem selection (--limit, --skip, --levels), the Ns and the
    strategies are not among them: rows are keyed by strategy, N and problem."""
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.evaluate import digest_of, file_sha256, params_settings
    from tts_tui.search.strategies.auto import load_table

    model_id, model_sha = known_sha256(model_path)
    settings = {"data": data.name, "data_sha256": file_sha256(data), "model": model_id, "model_sha256": model_sha,
                "verifier": verifier, **params_settings(base, budget_per_sample),
                "n_ctx": options.n_ctx, "n_seq_max": options.n_seq_max, "auto_table": digest_of(load_table())}
    if prm_path is not None:
        settings["prm"], settings["prm_sha256"] = known_sha256(prm_path)
    if verifier == "probe":  # a retrained probe scores differently: its rows are other rows
        from tts_tui.session import probe_file_for

        probe = probe_file_for(model_path)
        settings["probe_sha256"] = file_sha256(probe) if probe.is_file() else None
    return settings


def engine_prefill(solver) -> int:
    """Every token the solver's engines decoded that was not generated: prompts, the
    self-judge's question, the bracket judge's prompts, forced text, forks, re-decoding
    after eviction, and all a PRM reads."""
    engines = [solver.engine]
    prm = getattr(solver, "_prm", None)  # made on first use by the PRM verifier
    if prm is not None:
        engines.append(prm.engine)
    return int(sum(e.stats.prompt_tokens + e.stats.fork_tokens + e.stats.forced_tokens + e.stats.rehydrated_tokens
                   for e in engines))


def engine_meter(solver):
    """Cumulative generated and prefill tokens of the solver's engines, the prefill also by
    phase (evaluate.PHASES): the solver's generator counts its prompts (`root`) and judge
    prompts (`compare`) apart, and each scorer it makes counts what it decodes (`score`).
    A vote read from a larger run's first samples can then be charged the shared prompt
    in full, and majority never the verifier's inputs."""
    from tts_tui.evaluate import PhaseMeter

    phases = PhaseMeter(lambda: engine_prefill(solver))
    solver.generator = phases.wrap(solver.generator, {"root": "prompt", "compare": "judge"})
    make_scorer = solver.scorer  # the bound method; the instance attribute below shadows it
    solver.scorer = lambda verifier: phases.wrap(make_scorer(verifier), {"score": "verifier"})

    def read() -> dict[str, int]:
        return {"generated": int(solver.engine.stats.generated_tokens), "prefill": engine_prefill(solver),
                **phases.totals}

    return read


def _refit(rows: list[dict], max_n: int, adaptive: Optional[dict] = None) -> None:
    from tts_tui import paths
    from tts_tui.atomic import write_json
    from tts_tui.refit import refit
    from tts_tui.search.strategies.auto import load_table

    table, lines = refit(rows, load_table(), max_n, adaptive)
    if not lines:
        raise TTSError("--refit-auto: no difficulty estimates in this log (run a sample strategy or auto first)")
    write_json(paths.auto_table_path(), table)
    print("# auto table refitted: " + "; ".join(lines) + f" -> {paths.auto_table_path()}")
