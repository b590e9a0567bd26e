"""`tts verifier train|eval`: the probe verifier, trained from the policy's own samples."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from tts_tui.errors import TTSError

verifier_app = typer.Typer(help="Learned verifiers: train a probe for a model, measure verifiers.",
                           no_args_is_help=True)


def _data_paths(data: str) -> list[Path]:
    paths = [Path(x.strip()) for x in data.split(",") if x.strip()]
    if not paths:
        raise TTSError("--data needs at least one JSONL file")
    return paths


def _problems(data: str, limit: Optional[str], skip: int, levels: Optional[str], exclude: set[str]):
    """The problems to sample: each file's rows (MATH rows at `levels`; rows without a level,
    GSM8K's, are kept), the first `skip` of each left out, the `exclude` ids never; then
    interleaved, so a --limit K (or a run cut short) draws from each file. `limit` "K1,K2"
    takes at most Ki from file i (a hard set costs more time per problem than an easy one)."""
    from tts_tui.evaluate import load_problems

    lv = {int(x) for x in levels.split(",")} if levels else None
    paths = _data_paths(data)
    caps = _limits(limit, len(paths))
    per_file = []
    for path, cap in zip(paths, caps[1]):
        rows = [p for p in load_problems(path, None, None, 0) if lv is None or p.level is None or p.level in lv]
        rows = [p for p in rows[skip:] if p.id not in exclude]
        if not rows:  # a mistyped --levels or a --skip past the end: say so before the model loads
            raise TTSError(f"{path}: no problems selected (levels {levels or 'all'}, skip {skip}, "
                           f"{len(exclude)} ids excluded)")
        per_file.append(rows[:cap] if cap else rows)
    out = [p for row in itertools.zip_longest(*per_file) for p in row if p is not None]
    return out[:caps[0]] if caps[0] else out


def _limits(limit: Optional[str], files: int) -> tuple[Optional[int], list[Optional[int]]]:
    """(at most K in all, at most Ki per file) from --limit "K" or "K1,K2,..."."""
    if not limit:
        return None, [None] * files
    try:
        parts = [int(x) for x in limit.split(",")]
    except ValueError:
        raise TTSError(f"--limit takes a whole number, or one per --data file (K1,K2), not {limit!r}") from None
    if any(x < 1 for x in parts):
        raise TTSError(f"--limit must be at least 1, got {limit}")
    if len(parts) == 1:
        return parts[0], [None] * files
    if len(parts) != files:
        raise TTSError(f"--limit {limit} names {len(parts)} files; --data has {files}")
    return None, parts


def layer_option(value: str, allow_probe: bool = False) -> int | str | None:
    """--layer: a layer number, 'final' or 'auto' (and 'probe' where `allow_probe`: the one
    the model's probe reads), checked against the model once it loads."""
    if value == "final":
        return None
    if value == "auto" or (allow_probe and value == "probe"):
        return value
    try:
        layer = int(value)
    except ValueError:
        names = "'final', 'auto' or 'probe'" if allow_probe else "'final' or 'auto'"
        raise TTSError(f"--layer must be a layer number, {names}, not {value!r}") from None
    if layer < 0:
        raise TTSError(f"--layer must be 0 or more, got {layer}")
    return layer


def _exclusions(exclude: Optional[str]) -> set[str]:
    """Problem ids never to train on (the report slices): a file of ids, one per line."""
    if not exclude:
        return set()
    try:
        return {x.strip() for x in Path(exclude).read_text(encoding="utf-8").splitlines() if x.strip()}
    except OSError as exc:
        raise TTSError(f"cannot read --exclude {exclude}: {exc.strerror}") from None


@verifier_app.command("train")
def train_command(
    data: str = typer.Option(..., "--data", help="JSONL file(s) with answers, comma-separated."),
    model: Optional[str] = typer.Option(None, "--model", help="Catalog id or GGUF path (default model)."),
    n: int = typer.Option(8, "--n", help="Samples per problem."),
    limit: Optional[str] = typer.Option(None, "--limit", help="At most K problems in all, or K1,K2 per --data file."),
    skip: int = typer.Option(0, "--skip", min=0, help="Leave out the first K problems of each file."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Only these MATH levels, e.g. 1,2,3 (rows without one are kept)."),
    exclude: Optional[str] = typer.Option(None, "--exclude", help="A file of problem ids never to train on."),
    budget_per_sample: int = typer.Option(512, "--budget-per-sample"),
    samples_dir: Optional[Path] = typer.Option(None, "--samples", help="Where the labelled samples go (resumable)."),
    sample_only: bool = typer.Option(False, "--sample-only", help="Collect samples, do not fit yet."),
    layer: str = typer.Option("auto", "--layer", help="The layer whose state the probe reads: a number, "
                              "'final' (the final-norm state) or 'auto' (60% of the depth)."),
    threads: Optional[int] = typer.Option(None, "--threads"),
) -> None:
    """Sample N solutions per problem (resumable), label them, fit the probe, save it."""
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.cli.progress import download_progress
    from tts_tui.session import EngineOptions, Solver
    from tts_tui.verifier_train import check_ids, collect, default_samples, load, probe_path, sample_layer
    from tts_tui.verify.probe import layer_name, train

    if n < 2:
        raise TTSError(f"--n must be at least 2 (right and wrong samples of a problem), got {n}")
    hidden_layer = layer_option(layer)
    skip_ids = _exclusions(exclude)
    problems = _problems(data, limit, skip, levels, skip_ids)
    check_ids(problems)  # before the model loads
    with download_progress() as on_progress:
        solver = Solver(model, options=EngineOptions(n_threads=threads, hidden_layer=hidden_layer),
                        on_progress=on_progress)
    try:
        name, sha = known_sha256(solver.model_path)
        out = samples_dir or default_samples(probe_path(solver.model_path, sha), solver.engine.hidden_layer)
        t0 = time.monotonic()

        def progress(p, row) -> None:
            print(f"{p.id:32} right {row['right']}/{row['n']}  states {row['states']}  {row['seconds']}s",
                  file=sys.stderr, flush=True)

        collect(solver, problems, n, budget_per_sample, out, progress)
        print(f"# samples: {out} ({time.monotonic() - t0:.0f}s this run)")
    finally:
        solver.close()
    if sample_only:
        return
    ds = load([out], skip_ids, only={p.id for p in problems})  # what this command's --data names, nothing else
    if len(set(ds.groups)) < 5 or ds.labels.min(initial=1) == ds.labels.max(initial=0):
        raise TTSError(f"too little to train on in {out}: {len(set(ds.groups))} problems "
                       "(need 5 or more, with right and wrong samples)")
    probe, trials = train(ds.stats, ds.hidden, ds.labels, ds.groups, ds.final, sha, name)
    probe.layer = sample_layer(out)
    probe.info.update({"data": [str(p) for p in _data_paths(data)], "n": n, "budget_per_sample": budget_per_sample})
    dest = probe_path(solver.model_path, sha)
    probe.save(dest)
    for t in trials:
        print(f"cv dim={t['dim']!s:5} l2={t['l2']:<6} within-question AUROC {t['within_auroc']:.3f}  "
              f"pooled {t['auroc']:.3f}  ECE {t['ece']:.3f}")
    print(f"# probe: {dest} ({probe.info['samples']} samples, {probe.info['problems']} problems; "
          f"chosen {probe.info['chosen']}; reads {layer_name(probe.layer)})")


@verifier_app.command("judge")
def judge_command(
    samples_dir: Path = typer.Option(..., "--samples", help="A labelled sample set whose samples kept their text."),
    model: Optional[str] = typer.Option(None, "--model", help="The policy that judges (default model)."),
    data: Optional[str] = typer.Option(None, "--data", help="JSONL file(s) with the problems, where the set lacks them."),
    threads: Optional[int] = typer.Option(None, "--threads"),
) -> None:
    """Score a sample set's answered samples with the self-judge (resumable), so `tts
    verifier eval` can set it beside the other verifiers."""
    from tts_tui.cli.progress import download_progress
    from tts_tui.evaluate import load_problems
    from tts_tui.session import EngineOptions, Solver
    from tts_tui.verifier_train import judge_set

    if not (samples_dir / "samples.jsonl").is_file():
        raise TTSError(f"no sample set in {samples_dir} (no samples.jsonl)")
    texts = {p.id: p.problem for path in (_data_paths(data) if data else []) for p in load_problems(path, None)}
    with download_progress() as on_progress:
        solver = Solver(model, options=EngineOptions(n_threads=threads), on_progress=on_progress)
    try:
        t0 = time.monotonic()
        def progress(pid: str, k: int, error: str) -> None:
            print(f"{pid:32} " + (f"judged {k}" if not error else f"left out: {error}"), file=sys.stderr, flush=True)

        count = judge_set(solver, samples_dir, texts, progress)
        print(f"# judged {count} problems in {time.monotonic() - t0:.0f}s: {samples_dir / 'judge.jsonl'}")
    finally:
        solver.close()


def _signals(probe=None) -> dict:
    """Every verifier that reads the captured signals: name -> (stats, hidden) -> scores."""
    import numpy as np

    from tts_tui.verify.features import STAT_NAMES

    def stat(name: str):
        i = STAT_NAMES.index(name)
        return lambda stats, hidden: stats[:, i]

    mean_logprob, step_logprob = STAT_NAMES.index("mean_logprob"), STAT_NAMES.index("step_logprob")
    # the confidence verifier as the search scores a sample (its last step's exp mean
    # logprob), and over the whole path
    out = {"confidence (last step)": lambda stats, hidden: np.exp(stats[:, step_logprob]),
           "confidence (whole path)": lambda stats, hidden: np.exp(stats[:, mean_logprob]),
           "deepconf (bottom 10%)": stat("bottom10_conf"),
           "deepconf (lowest window)": stat("lowest_window_conf"),
           "deepconf (tail)": stat("tail_conf"),
           "self-certainty": stat("step_self_certainty"),
           # exp(-entropy), as the entropy scorer gives it: a weighted vote needs weights >= 0
           "entropy (exp -H)": lambda stats, hidden: np.exp(-stats[:, STAT_NAMES.index("step_entropy")])}
    if probe is not None:
        out["probe"] = probe.predict
    return out


@verifier_app.command("eval")
def eval_command(
    samples_dir: Path = typer.Option(..., "--samples", help="A labelled sample set (tts verifier train, tts eval --save-states)."),
    model: Optional[str] = typer.Option(None, "--model", help="Whose probe to score with (default model)."),
    votes: Optional[int] = typer.Option(None, "--votes", min=1,
                                        help="Also the votes over each problem's first K samples, scored by every verifier."),
    probe_file_opt: Optional[Path] = typer.Option(None, "--probe", help="Score with this probe file, not the model's own."),
) -> None:
    """Pooled and within-question AUROC and calibration of every verifier that reads the
    captured signals, on the final states of a labelled sample set; with --votes K, the
    majority, weighted and best-of-K accuracy under each, and pass@K, from the same samples."""
    import numpy as np

    from tts_tui.catalog import resolve_model
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.session import probe_file_for
    from tts_tui.verifier_train import check_model, load, sample_layer
    from tts_tui.verify.probe import Probe, layer_name, metrics

    path = resolve_model(model)
    _, sha = known_sha256(path)
    check_model(samples_dir, sha)
    trained: set[str] = set()
    left_out = False
    probe_file = probe_file_opt or probe_file_for(path)
    if probe_file_opt is not None and not probe_file_opt.is_file():
        raise TTSError(f"no probe file at {probe_file_opt}")
    probe = Probe.load(probe_file, sha) if probe_file.is_file() else None
    if probe is not None:
        if "trained_on" not in probe.info:
            raise TTSError(f"{probe_file} does not say which problems it was trained on: its figures could "
                           "include them (train it again)")
        trained = set(probe.info["trained_on"])
        states_layer = sample_layer(samples_dir)
        if probe.layer != states_layer:
            # its scores would read another layer's states: the other signals still stand
            print(f"# the probe is left out: {probe_file} reads {layer_name(probe.layer)}, the states in "
                  f"{samples_dir} are {layer_name(states_layer)} (sample them with this probe in place)")
            probe, trained, left_out = None, set(), True
    ds = load([samples_dir], exclude=trained)  # never score the probe on what it was trained on
    if not ds.groups:
        raise TTSError(f"no labelled samples in {samples_dir}" + (" that the probe was not trained on" if trained else ""))
    m = ds.final
    groups = np.asarray(ds.groups)[m]
    labels = ds.labels[m]
    signals = _signals(probe)
    print(f"{'verifier':28} {'within AUROC':>12} {'pooled AUROC':>12} {'ECE':>6}  samples {int(m.sum())}, "
          f"right {int(labels.sum())}, problems {len(set(groups.tolist()))}")
    for name, fn in signals.items():
        r = metrics(fn(ds.stats[m], ds.hidden[m]).astype(float), labels, groups)
        ece = "-" if np.isnan(r["ece"]) else f"{r['ece']:.3f}"  # "-": the score is no probability
        print(f"{name:28} {r['within_auroc']:>12.3f} {r['auroc']:>12.3f} {ece:>6}")
    print("# ECE: only where the score is a probability in [0, 1] ('-' elsewhere)")
    judged = _judged_finals(samples_dir, ds, m)
    if judged is not None:
        has, scores = judged
        r = metrics(scores[has], labels[has], groups[has])
        ece = "-" if np.isnan(r["ece"]) else f"{r['ece']:.3f}"
        print(f"{'self-judge':28} {r['within_auroc']:>12.3f} {r['auroc']:>12.3f} {ece:>6}  "
              f"({int(has.sum())} of the samples judged)")
    if probe is None and not left_out:
        print(f"# no probe trained for {path.name} (tts verifier train)")
    elif trained:
        print(f"# the {len(trained)} problems the probe was trained on are left out")
    if votes:
        _print_votes(samples_dir, votes, signals, trained)


def _judged_finals(samples_dir: Path, ds, m):
    """(which final states the self-judge scored, its scores), or None where it never ran."""
    import numpy as np

    from tts_tui.verifier_train import judge_scores

    judged = judge_scores(samples_dir)
    if not judged or ds.sample is None:
        return None
    ids, samples = np.asarray(ds.groups)[m], ds.sample[m]
    def score(pid: str, k: int) -> float:
        row = judged.get(pid) or []
        return row[k] if k < len(row) and row[k] is not None else np.nan

    scores = np.array([score(g, k) for g, k in zip(ids.tolist(), samples.tolist())], dtype=float)
    has = ~np.isnan(scores)
    return (has, scores) if has.any() else None


def _print_votes(samples_dir: Path, k: int, signals: dict, exclude: set[str]) -> None:
    import numpy as np

    from tts_tui.verifier_train import problem_samples, vote_rows
    from tts_tui.verify.answers import equivalent

    problems = problem_samples(samples_dir, k, exclude)
    if not problems:
        raise TTSError(f"no problem in {samples_dir} holds {k} samples")
    # a sample whose final state was not captured has no score there: it weighs nothing
    scorers = {name: (lambda p, f=f: np.where(p.has_state, f(p.stats, p.hidden), 0.0)) for name, f in signals.items()}
    if all(p.judge is not None for p in problems):  # the self-judge only where it scored every problem
        scorers["self-judge"] = lambda p: np.array([x if x is not None else 0.0 for x in p.judge])
    rows = {r["row"]: r for r in vote_rows(problems, scorers, equivalent)}
    tokens = rows["pass"]["mean_tokens"]
    print(f"\n{'vote @' + str(k):36} {'accuracy':>9}  problems {len(problems)}"
          + (f", mean tokens {tokens}" if tokens is not None else ""))
    for name, r in rows.items():
        print(f"{name:36} {r['accuracy']:>8.1%}")
    gap = rows["pass"]["correct"] - rows["majority"]["correct"]
    if "weighted probe" in rows and gap > 0:
        closed = (rows["weighted probe"]["correct"] - rows["majority"]["correct"]) / gap
        print(f"# the probe's weighted vote closes {closed:.0%} of the gap from majority to pass@{k}")
