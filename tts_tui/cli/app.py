"""`tts`: the one-shot command line. Results on stdout, progress and errors on stderr."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from tts_tui.cli.adaptive_options import CUT_KEEP, CUT_WINDOW, STOP_AT, WAVE, adaptive_params, cut_option
from tts_tui.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_NO_ANSWER, TTSError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    help="Test-time scaling on a local GGUF model: watch a small model think harder.",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model catalog: list, pull, verify, path.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


@app.callback()
def root(ctx: typer.Context) -> None:
    """With no sub-command, open the TUI."""
    if ctx.invoked_subcommand is None:
        from tts_tui.cli.tui_cmd import open_tui

        open_tui()


# -- solve ---------------------------------------------------------------------------------
STRATEGY_HELP = "cot, best-of-n, majority, weighted, beam, dvts, mcts, keep-thinking, revise, bracket, auto"
ADAPTIVE_HELP = ("majority, weighted, bracket, auto: sample in waves and stop once the leading answer is "
                 "likely to hold (N becomes the most samples).")
VERIFIER_HELP = ("confidence, self-judge, prm, probe, deepconf, self-certainty, entropy "
                 "(default: the probe where one is trained for the model, else confidence)")
CUT_HELP = "Adaptive: cut traces whose confidence falls below what the first wave reached (DeepConf)."


def _key_from(variable: Optional[str], option: str) -> Optional[str]:
    import os

    if not variable:
        return None
    key = os.environ.get(variable)
    if not key:
        raise TTSError(f"{option} {variable}: that variable is not set")
    return key


def remote_solver(base_url: Optional[str], model: Optional[str], api_key_env: Optional[str],
                  template: Optional[str], prm: Optional[str] = None, prm_url: Optional[str] = None,
                  prm_api_key_env: Optional[str] = None):
    """The solver for --backend openai; the key is read from the named variable, never given
    on the command line (where it would land in shell history and process lists)."""
    from tts_tui.session import RemoteSolver

    if not base_url:
        raise TTSError("--backend openai needs --base-url URL")
    if not model:
        raise TTSError("--backend openai needs --model NAME (the server's model name)")
    key = _key_from(api_key_env, "--api-key-env")
    from tts_tui.backends.openai.templates import checked

    template = checked(template)
    if prm_url and not prm:
        raise TTSError("--prm-url needs --prm NAME (the PRM's model name on that server)")
    return RemoteSolver(base_url, model, api_key=key, template=template, prm_url=prm_url, prm_model=prm,
                        prm_api_key=_key_from(prm_api_key_env, "--prm-api-key-env"))


def _read_problem(problem: Optional[str], file: Optional[Path]) -> str:
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except OSError as exc:
            raise TTSError(f"cannot read {file}: {exc.strerror}") from None
    if problem is not None and problem != "-":
        return problem
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return ""


@app.command()
def solve(
    problem: Optional[str] = typer.Argument(None, help="The problem; '-' or omitted reads stdin."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the problem from a file."),
    strategy: str = typer.Option("cot", "--strategy", "-s", help=STRATEGY_HELP),
    n: int = typer.Option(8, "--n", help="N: total generations / beams."),
    m: int = typer.Option(4, "--m", help="M: expansions per kept beam (N/M beams are kept)."),
    budget: int = typer.Option(4096, "--budget", help="Token budget for the whole run (hard cap)."),
    temperature: float = typer.Option(0.3, "--temperature", "-t"),
    top_p: float = typer.Option(0.95, "--top-p"),
    seed: int = typer.Option(0, "--seed"),
    max_steps: int = typer.Option(24, "--max-steps"),
    model: Optional[str] = typer.Option(None, "--model", help="Catalog id or path to a GGUF file."),
    verifier: Optional[str] = typer.Option(None, "--verifier", help=VERIFIER_HELP),
    prm: Optional[str] = typer.Option(None, "--prm", help="PRM model (catalog id or GGUF path; with --prm-url, "
                                                           "the PRM's name on that server)."),
    prm_url: Optional[str] = typer.Option(None, "--prm-url", help="openai: a vLLM server pooling a PRM "
                                                                   "(Qwen2.5-Math-PRM format)."),
    prm_api_key_env: Optional[str] = typer.Option(None, "--prm-api-key-env",
                                                  help="openai: the variable holding the PRM server's key."),
    aggregate: str = typer.Option("last", "--aggregate", help="Step-score aggregation: last, min, prod, mean."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    n_gpu_layers: int = typer.Option(-1, "--n-gpu-layers", help="-1 = all layers on the GPU when there is one."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole tree and events as JSON."),
    adaptive: bool = typer.Option(False, "--adaptive", help=ADAPTIVE_HELP),
    stop_at: float = STOP_AT,
    wave: int = WAVE,
    cut: bool = cut_option(CUT_HELP),
    cut_window: int = CUT_WINDOW,
    cut_keep: float = CUT_KEEP,
    backend: str = typer.Option("llamacpp", "--backend", help="llamacpp (in process) or openai (a server)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="A named server (tts endpoints add)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="openai: the server, e.g. http://127.0.0.1:8080"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="openai: the variable holding the API key."),
    template: Optional[str] = typer.Option(None, "--template",
                                           help="openai: chatml, or a file with the model's template (.jinja, tokenizer_config.json, .gguf), where the server renders none."),
) -> None:
    """Solve one problem with a test-time scaling strategy."""
    from tts_tui.cli.progress import SearchProgress, download_progress
    from tts_tui.runlog import run_record, save_run
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.strategies import validate
    from tts_tui.session import VERIFIERS, EngineOptions, Solver, engine_layer

    text = _read_problem(problem, file).strip()
    if not text:
        raise TTSError("the problem is empty (give it as an argument, with --file, or on stdin)")
    if verifier is not None and verifier not in VERIFIERS:
        raise TTSError(f"unknown verifier {verifier!r} (choose from: {', '.join(VERIFIERS)})")
    if aggregate not in ("last", "min", "prod", "mean"):
        raise TTSError(f"unknown aggregation {aggregate!r} (last, min, prod, mean)")
    params = SearchParams(n=n, m=m, budget=budget, temperature=temperature, top_p=top_p, seed=seed,
                          max_steps=max_steps, aggregate=aggregate,
                          adaptive=adaptive_params(adaptive, stop_at, wave, cut, cut_window, cut_keep))
    validate(strategy, params)  # before loading a model: bad input fails fast
    if endpoint:
        from tts_tui.cli.endpoints_cmd import endpoint as named

        e = named(endpoint)
        backend, base_url, model = "openai", e["base_url"], e["model"]
        api_key_env, template = e.get("api_key_env"), e.get("template")
        prm, prm_url = prm or e.get("prm"), prm_url or e.get("prm_url")
        prm_api_key_env = prm_api_key_env or e.get("prm_api_key_env")
    if backend == "openai":
        solver = remote_solver(base_url, model, api_key_env, template, prm, prm_url, prm_api_key_env)
    elif prm_url:
        raise TTSError("--prm-url needs --backend openai (locally, --prm names a GGUF)")
    elif backend != "llamacpp":
        raise TTSError(f"unknown backend {backend!r} (llamacpp or openai)")
    else:
        with download_progress() as on_progress:
            solver = Solver(model, prm=prm, options=EngineOptions(n_threads=threads, n_gpu_layers=n_gpu_layers,
                                                                  hidden_layer=engine_layer("probe", verifier)),
                            on_progress=on_progress)
    verifier = verifier or solver.default_verifier()
    cancel = threading.Event()
    try:
        with SearchProgress(budget) as progress:
            result, search = solver.solve(text, strategy, params, verifier, listener=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    record = run_record(search, result, settings={"strategy": strategy, "verifier": verifier, **params.settings()},
                        model=str(solver.model_path.name))
    try:
        save_run(record)
    except OSError as exc:
        _err(f"could not save the run: {exc}")
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        _print_result(result)
    if result.answer is None:
        raise typer.Exit(EXIT_NO_ANSWER)


def _print_result(result) -> None:
    print(f"answer: {result.answer if result.answer is not None else '(none within the budget)'}")
    print(f"confidence: {result.confidence:.2f}")
    if result.groups:
        votes = ", ".join(f"{g.answer} x{g.count} (w={g.weight:.2f})" for g in result.groups[:6])
        print(f"votes: {votes}")
    if result.stats.get("p_right") is not None:
        only = ", token statistics only: no hidden state here" if result.stats.get("p_right_stats_only") else ""
        print(f"P(right): {result.stats['p_right']:.2f} (probe{only})")
    print(f"strategy: {result.strategy}" + (f" ({result.reason})" if result.reason else ""))
    if "difficulty" in result.stats:
        print(f"difficulty: {result.stats['difficulty']}")
    s = result.stats
    if "samples_used" in s:
        from tts_tui.search.stopping import saved_against

        print(f"samples: {s['samples_used']}/{s['n_max']} (stopped by {s['stopped_by']}, "
              f"P(leader holds) {s['posterior']}; saved ≈ {s.get('tokens_saved_est', 0)} tokens vs {saved_against(s)}"
              + (f"; {s['cut']} weak traces cut" if s.get("cut") else "") + ")")
    elif s.get("stopped_by") == "search":  # auto's probes did not decide: its table chose a search
        print(f"adaptive: the probes' P(leader holds) {s['posterior']} did not decide; on to "
              f"{s.get('chosen_strategy', 'a search')}")
    print(f"tokens: {result.tokens}  time: {result.seconds:.1f}s  tok/s: {result.tokens / max(result.seconds, 1e-6):.1f}")


# -- models ---------------------------------------------------------------------------------
@models_app.command("list")
def models_list() -> None:
    """Catalog models: id, role, size, present or not."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog

    mdir = paths.models_dir()
    print(f"{'id':40} {'role':8} {'size':>9}  present")
    for e in load_catalog().entries:
        mark = "yes" if e.is_present(mdir) else "no"
        dflt = " (default)" if e.default else ""
        print(f"{e.id:40} {e.role:8} {e.size / 2**20:7.0f}MB  {mark}{dflt}")
    print(f"# models dir: {mdir}")


@models_app.command("pull")
def models_pull(model_id: str = typer.Argument(..., help="Catalog id or alias.")) -> None:
    """Download a catalog model (verified by sha256); does nothing if present and verified."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog
    from tts_tui.catalog.fetch import fetch, verify
    from tts_tui.cli.progress import download_progress

    entry = _entry(load_catalog(), model_id)
    mdir = paths.models_dir()
    if entry.is_present(mdir):
        try:
            verify(entry, mdir)
            print(f"{entry.id}: present and verified ({entry.path(mdir)})")
            return
        except TTSError as exc:
            _err(f"{exc}; downloading again")
    with download_progress() as on_progress:
        path = fetch(entry, mdir, on_progress)
    print(f"{entry.id}: downloaded and verified ({path})")


@models_app.command("verify")
def models_verify(model_id: Optional[str] = typer.Argument(None, help="One id; all present models if omitted.")) -> None:
    """Check size and sha256 of downloaded models against the catalog."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog
    from tts_tui.catalog.fetch import verify

    cat = load_catalog()
    mdir = paths.models_dir()
    entries = [_entry(cat, model_id)] if model_id else [e for e in cat.entries if e.path(mdir).exists()]
    bad = 0
    for e in entries:
        try:
            verify(e, mdir)
            print(f"{e.id}: ok")
        except TTSError as exc:
            print(f"{e.id}: FAILED: {exc}")
            bad += 1
    if not entries:
        print("no models downloaded")
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


@models_app.command("path")
def models_path(model_id: str) -> None:
    """Print where a catalog model lives (or would live)."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog

    print(_entry(load_catalog(), model_id).path(paths.models_dir()))


def _entry(cat, model_id: str):
    entry = cat.get(model_id)
    if entry is None:
        raise TTSError(f"unknown model id {model_id!r} (catalog: {', '.join(cat.ids())})")
    return entry


# -- doctor ---------------------------------------------------------------------------------
@app.command()
def doctor(model: Optional[str] = typer.Option(None, "--model", help="Whose verifiers to list (default model).")) -> None:
    """Which llama.cpp build is in use, GPU offload, threads, models dir, verifiers."""
    from tts_tui import paths
    from tts_tui.backends.llamacpp.backend import backend_info

    info = backend_info()
    print(f"llama-cpp-python: {info['llama_cpp_python']}")
    print(f"gpu offload: {'available' if info['gpu_offload'] else 'not available (CPU build)'}")
    print(f"threads: {info['threads']}")
    print(f"max parallel sequences: {info['max_parallel_sequences']}")
    print(f"models dir: {paths.models_dir()}")
    print(f"runs dir: {paths.runs_dir()}")
    print(f"system: {info['system_info']}")
    print(f"verifiers: {_verifiers_line(model)}")


def _verifiers_line(model: Optional[str] = None) -> str:
    """Which verifiers a model (the default one) can use now: the probe only where one that
    loads is trained for it."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog
    from tts_tui.session import probe_status

    free = "confidence, self-judge, deepconf, self-certainty, entropy, prm (with --prm)"
    path = _present_model(model, load_catalog(), paths.models_dir())
    if path is None:
        return f"{free}; probe: {model or 'default model'} not downloaded"
    ok, what = probe_status(path)
    return f"{free}; probe for {path.name}: {what}" + ("; default: probe" if ok else "; default: confidence")


def _present_model(model: Optional[str], catalog, models_dir: Path) -> Optional[Path]:
    """The model's file if it is on disk (a catalog id or a path), never downloading."""
    if model and Path(model).suffix == ".gguf":
        return Path(model) if Path(model).is_file() else None
    entry = next((e for e in catalog.entries if (e.id == model if model else e.default)), None)
    if entry is None:
        if model:
            raise TTSError(f"unknown model {model!r}: a catalog id (tts models) or a .gguf path")
        return None
    return entry.path(models_dir) if entry.is_present(models_dir) else None


def _register_optional() -> None:
    from tts_tui.cli import endpoints_cmd, eval_cmd, tui_cmd, verifier_cmd

    app.command("eval")(eval_cmd.eval_command)
    app.command("tui")(tui_cmd.tui_command)
    app.add_typer(verifier_cmd.verifier_app, name="verifier")
    app.add_typer(endpoints_cmd.endpoints_app, name="endpoints")


_register_optional()


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error classes, abort classes) of the click that typer runs on. typer >= 0.22
    vendors click as `typer._click` and does not install click at all, so `import click`
    fails on a fresh install; older typer runs on click itself. Whichever is present counts."""
    import importlib

    errors: list[type] = []
    aborts: list[type] = [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(mod.ClickException)
        if hasattr(mod, "Abort"):
            aborts.append(mod.Abort)
    return tuple(errors), tuple(aborts)


def _usage_message(exc: Exception) -> str:
    """One line: the error, and where the help is when click knows the command ('' when
    there is nothing to add: `tts models` alone has printed its help already)."""
    text = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    if text and ctx is not None and getattr(ctx, "command_path", None):
        text += f" (see: {ctx.command_path} --help)"
    return text


def main() -> None:
    """Entry point: user errors are one line on stderr with a non-zero code, never a traceback."""
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except TTSError as exc:
        _err(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("cancelled")
        sys.exit(EXIT_CANCELLED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        usage, aborts = _click_errors()
        if isinstance(exc, aborts):
            _err("cancelled")
            sys.exit(EXIT_CANCELLED)
        if isinstance(exc, usage):
            message = _usage_message(exc)
            if message:
                _err(message)
            sys.exit(getattr(exc, "exit_code", EXIT_BAD_INPUT) or EXIT_BAD_INPUT)
        raise
