"""`tts verifier train`: sample solutions, label them, and fit the probe verifier.

Sampling is batched (N per problem in one engine call, with capture on) and resumable like
`tts eval`: each problem's step-end states go to their own .npz (hidden states as
float16), then one fsynced line in `samples.jsonl` marks it done. A kill loses at most
the problem in flight.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tts_tui import paths
from tts_tui.atomic import append_line, fsync_replace
from tts_tui.errors import TTSError
from tts_tui.evaluate import Problem, done_keys
from tts_tui.search.protocol import SearchParams
from tts_tui.search.strategies.sampling import sample_full
from tts_tui.verify.answers import equivalent
from tts_tui.verify.features import token_stats


# Probes that come with the package (trained by us for catalog models), named by checksum
SHIPPED = Path(__file__).resolve().parent / "verify" / "probes"


def probe_path(model_path: Path, model_sha256: str) -> Path:
    """Where `tts verifier train` puts the probe for a model: the user data dir, named by
    model and checksum."""
    return paths.data_dir() / "verifiers" / f"{model_path.stem}-{model_sha256[:12]}.npz"


def default_samples(probe_file: Path, layer: int | None) -> Path:
    """Where `tts verifier train` keeps a model's samples by default: beside its probe,
    one set per layer (a final-norm set keeps the bare name it always had)."""
    stem = probe_file.with_suffix("")
    return stem if layer is None else stem.with_name(f"{stem.name}-L{layer}")


def probe_files(model_path: Path, model_sha256: str) -> list[Path]:
    """The model's probe files that are there, in the order they are tried: the user's own
    (trained here) first, then the one the package ships for that checksum."""
    own = probe_path(model_path, model_sha256)
    return [p for p in (own, SHIPPED / f"{model_sha256[:16]}.npz") if p.is_file()]


@dataclass
class Dataset:
    stats: np.ndarray  # (states, n_stats)
    hidden: np.ndarray  # (states, n_embd)
    labels: np.ndarray  # (states,) 1 = the state's sample ended right
    groups: list[str]  # problem id per state
    final: np.ndarray  # (states,) the sample's last state (what a vote scores)
    sample: np.ndarray | None = None  # (states,) the state's sample within its problem


def collect(solver: Any, problems: Sequence[Problem], n: int, budget_per_sample: int, out_dir: Path,
            on_problem: Callable[[Problem, dict[str, Any]], None] | None = None) -> None:
    """Sample and label what `out_dir` lacks."""
    check_ids(problems)
    done = open_sample_set(out_dir, solver, {"n": n, "budget_per_sample": budget_per_sample})
    for i, p in enumerate(problems):
        if p.id in done:
            continue
        t0 = time.monotonic()
        with solver.lock:
            search = solver.new_search(p.problem, "majority", SearchParams(n=n, budget=budget_per_sample * n))
            search.capture = True
            try:
                leaves = sample_full(search, n, confidence=True)
            finally:
                search.release_all()
        row = save_problem(out_dir, p, search, leaves, time.monotonic() - t0)
        if on_problem:
            on_problem(p, row)


def check_ids(problems: Sequence[Problem]) -> None:
    """Refuse problems that share an id: their samples would share a name and a label."""
    from collections import Counter

    from tts_tui.errors import InputError

    dup = next((i for i, c in Counter(p.id for p in problems).items() if c > 1), None)
    if dup is not None:
        raise InputError(f"problem id {dup!r} appears more than once in --data (rows without an id are "
                         "numbered per file): give each row its own id")


def open_sample_set(out_dir: Path, solver: Any, settings: dict[str, Any]) -> set[str]:
    """Make `out_dir` a sample set of the solver's model (refused if it holds another's or
    other settings); the ids of the problems it holds already."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # the layer its states come from: a probe fitted on them reads that layer
    layer = getattr(getattr(solver, "engine", None), "hidden_layer", None)
    _check_settings(out_dir, {"model_sha256": _model_sha(solver), **settings, "layer": layer})
    return done_keys(out_dir / "samples.jsonl")


def save_problem(out_dir: Path, p: Problem, search: Any, leaves: Sequence[Any], seconds: float) -> dict[str, Any]:
    """One problem's labelled states: its .npz, then its fsynced line in samples.jsonl
    (the line marks it done, so a kill between the two only redoes the problem)."""
    states = _states(search, leaves, p.answer)
    name = states_name(p.id)
    _save_npz(out_dir / name, states)
    row = {"key": p.id, "id": p.id, "gold": p.answer, "problem": p.problem, "file": name, "n": len(leaves),
           "answers": [leaf.answer or None for leaf in leaves], "right": int(sum(states["final_label"])),
           "states": int(len(states["labels"])), "tokens": int(search.spent),
           "sample_tokens": [int(sum(x.n_tokens for x in search.tree.path(leaf))) for leaf in leaves],
           # each sample's solution text, so a verifier that reads text (the self-judge) can score it later
           "texts": ["".join(x.forced + x.text for x in search.tree.path(leaf)) for leaf in leaves],
           "seconds": round(seconds, 2)}
    append_line(out_dir / "samples.jsonl", json.dumps(row, ensure_ascii=False))
    return row


def _model_sha(solver: Any) -> str | None:
    try:
        from tts_tui.catalog.fetch import known_sha256

        return known_sha256(solver.model_path)[1]
    except (OSError, AttributeError):
        return None


def sample_layer(out_dir: Path) -> int | None:
    """The layer a sample set's states come from (None: the final-norm state)."""
    from tts_tui.errors import InputError
    from tts_tui.verify.probe import layer_number

    path = out_dir / "settings.json"
    try:
        return layer_number(json.loads(path.read_text(encoding="utf-8")).get("layer")) if path.is_file() else None
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{path}: not a sample set's settings ({exc})") from None


def check_model(out_dir: Path, model_sha256: str | None) -> None:
    """Refuse to read a sample set with another model than the one that sampled it."""
    from tts_tui.errors import InputError

    path = out_dir / "settings.json"
    if not path.is_file() or model_sha256 is None:
        return
    made = json.loads(path.read_text(encoding="utf-8")).get("model_sha256")
    if made and made != model_sha256:
        raise InputError(f"{out_dir} was sampled by another model (sha256 {made[:12]}, this one {model_sha256[:12]}): "
                         "give its --model")


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """A sample set holds one model's samples at one N and budget: a resume with others is refused."""
    from tts_tui.atomic import write_json
    from tts_tui.errors import InputError

    path = out_dir / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [f"{k}: {old.get(k)} -> {v}" for k, v in settings.items() if old.get(k) != v]
        if diff:
            hint = (" (a set's states come from one layer: --layer picks it, in tts verifier train and "
                    "tts eval)") if any(d.startswith("layer:") for d in diff) else ""
            raise InputError(f"{out_dir} holds samples made with other settings ({'; '.join(diff)}): "
                             f"use another --samples{hint}")
        return
    write_json(path, settings)


def _states(search: Any, leaves: Sequence[Any], gold: str) -> dict[str, np.ndarray]:
    """Every captured step-end state of every sample, labelled by its sample's answer."""
    stats, hidden, labels, sample, final = [], [], [], [], []
    final_label, conf, conf_len, finish = [], [], [], []
    for k, leaf in enumerate(leaves):
        right = bool(leaf.answer) and equivalent(leaf.answer, gold)
        final_label.append(right)
        path = search.tree.path(leaf)
        # each sample's token confidences, so the DeepConf cut's window and floor can be
        # chosen on these (dev) samples by replaying it (scripts/tune_adaptive.py)
        tokens = [c for x in path for c in x.meta.get("conf", [])]
        conf += tokens
        conf_len.append(len(tokens))
        finish.append(leaf.finish or "")
        for j, node in enumerate(path):
            if node.hidden is None:
                continue  # decoded where no state could be captured
            stats.append(token_stats(path[: j + 1]))
            hidden.append(node.hidden.astype(np.float16))
            labels.append(right)
            sample.append(k)
            final.append(j == len(path) - 1 and bool(leaf.answer))
    width = search.gen.engine.model.n_embd if hasattr(search.gen, "engine") else (hidden[0].shape[0] if hidden else 0)
    return {"stats": np.asarray(stats, dtype=np.float32).reshape(len(stats), -1),
            "hidden": np.asarray(hidden, dtype=np.float16).reshape(len(hidden), width),
            "labels": np.asarray(labels, dtype=np.int8), "sample": np.asarray(sample, dtype=np.int16),
            "final": np.asarray(final, dtype=bool), "final_label": np.asarray(final_label, dtype=np.int8),
            "conf": np.asarray(conf, dtype=np.float32), "conf_len": np.asarray(conf_len, dtype=np.int32),
            "finish": np.asarray(finish, dtype="U16")}


def _save_npz(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    fsync_replace(tmp, dest)


def states_name(pid: str) -> str:
    """A problem's .npz name: its id where that is a safe file name, else the id made safe
    plus a digest of it ("a/b" and "a_b" must not share a file)."""
    safe = _safe(pid)
    return f"states-{safe}.npz" if safe == pid else f"states-{safe}-{hashlib.sha1(pid.encode()).hexdigest()[:8]}.npz"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def load(out_dirs: Sequence[Path], exclude: set[str] = frozenset(), only: set[str] | None = None) -> Dataset:
    """Every labelled state in `out_dirs`' logs (each problem once, its last line), but
    the problems in `exclude`; with `only`, just those problems."""
    parts: dict[str, list] = {"stats": [], "hidden": [], "labels": [], "final": [], "sample": []}
    groups: list[str] = []
    for d in out_dirs:
        log = d / "samples.jsonl"
        if not log.is_file():
            continue
        rows: dict[str, dict] = {}
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["id"]] = row
        for row in rows.values():
            if row["id"] in exclude or (only is not None and row["id"] not in only) or not (d / row["file"]).is_file():
                continue
            with np.load(d / row["file"]) as z:
                if not len(z["labels"]):
                    continue
                for k in parts:
                    parts[k].append(z[k])
                groups += [row["id"]] * len(z["labels"])
    if not groups:
        return Dataset(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0), [], np.zeros(0, dtype=bool))
    return Dataset(np.vstack(parts["stats"]).astype(np.float64), np.vstack(parts["hidden"]).astype(np.float64),
                   np.concatenate(parts["labels"]).astype(np.int64), groups, np.concatenate(parts["final"]),
                   np.concatenate(parts["sample"]).astype(np.int64))


@dataclass
class ProblemSamples:
    """One problem's first K samples as a vote sees them."""

    id: str
    answers: list[str | None]
    right: list[bool]
    tokens: list[int] | None  # per sample, where the set records it
    stats: np.ndarray  # (K, n_stats): each answered sample's final state; zeros if unanswered
    hidden: np.ndarray  # (K, n_embd)
    judge: list[float | None] | None = None  # the self-judge's score per sample, where judged
    has_state: list[bool] | None = None  # which samples have a captured final state to score


def problem_samples(out_dir: Path, k: int, exclude: set[str] = frozenset()) -> list[ProblemSamples]:
    """The problems of a sample set that hold at least `k` samples, each cut to its first k
    (seed order where the set was written by `tts eval --save-states`)."""
    judged = judge_scores(out_dir)
    out = []
    for line in (out_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["id"] in exclude or len(row["answers"]) < k or not (out_dir / row["file"]).is_file():
            continue
        with np.load(out_dir / row["file"]) as z:
            stats, hidden = z["stats"], z["hidden"]
            final, sample, right = z["final"], z["sample"], z["final_label"]
            width_s = stats.shape[1] if stats.ndim == 2 and len(stats) else 0
            fs = np.zeros((k, width_s), dtype=np.float64)
            fh = np.zeros((k, hidden.shape[1] if hidden.ndim == 2 else 0), dtype=np.float64)
            has = [False] * k
            for i in np.flatnonzero(final):
                if sample[i] < k:
                    fs[sample[i]], fh[sample[i]] = stats[i], hidden[i]
                    has[int(sample[i])] = True
        tokens = row.get("sample_tokens")
        judge = judged.get(row["id"])
        out.append(ProblemSamples(row["id"], row["answers"][:k], [bool(x) for x in right[:k]],
                                  tokens[:k] if tokens else None, fs, fh, judge[:k] if judge else None, has))
    return out


JUDGE_LOG = "judge.jsonl"


def judge_scores(out_dir: Path) -> dict[str, list[float | None]]:
    """The self-judge's scores of a sample set, by problem (None: an unanswered sample)."""
    path = out_dir / JUDGE_LOG
    out: dict[str, list[float | None]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                out[row["id"]] = row["self_judge"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a kill: that problem is judged again
    return out


def judge_set(solver: Any, out_dir: Path, problems: dict[str, str] | None = None,
              on_problem: Callable[[str, int, str], None] | None = None) -> int:
    """Score every answered sample of a sample set with the self-judge (resumable: one
    fsynced line per problem in judge.jsonl); the problems judged by this call. A set's
    problem text is its own, else `problems[id]`; a problem with neither is left out."""
    from tts_tui.verify.scorers import SelfJudgeScorer

    check_model(out_dir, _model_sha(solver))
    done = set(judge_scores(out_dir))
    judge = SelfJudgeScorer(solver.engine)
    count = 0
    for line in (out_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["id"] in done or "texts" not in row:
            continue  # judged already, or written before sample sets kept their texts
        answered = [i for i, a in enumerate(row["answers"]) if a]
        text = row.get("problem") or (problems or {}).get(row["id"])
        if text is None:
            continue
        try:
            with solver.lock:
                scores = judge.score_texts(solver.generator.prompt_tokens(text.strip()),
                                           [row["texts"][i] for i in answered])
        except TTSError as exc:  # one problem that cannot be judged (too long) does not stop the rest
            if on_problem:
                on_problem(row["id"], -1, str(exc))
            continue
        out: list[float | None] = [None] * len(row["answers"])
        for i, sc in zip(answered, scores):
            out[i] = round(float(sc), 5)
        append_line(out_dir / JUDGE_LOG, json.dumps({"id": row["id"], "self_judge": out}))
        done.add(row["id"])
        count += 1
        if on_problem:
            on_problem(row["id"], len(answered), "")
    return count


def vote_rows(problems: Sequence[ProblemSamples], scorers: dict[str, Callable[[ProblemSamples], np.ndarray]],
              equivalent_fn: Callable[[str, str], bool]) -> list[dict[str, Any]]:
    """Accuracy of majority, of a weighted vote and best-of-K under each scorer, and pass@K,
    all read from the same samples. A weighted vote sums scores per equivalent answer."""
    from tts_tui.search.votes import group_answers

    hits: dict[str, int] = {}

    def add(name: str, ok: bool) -> None:
        hits[name] = hits.get(name, 0) + int(ok)

    for p in problems:
        answered = [i for i, a in enumerate(p.answers) if a]
        add("pass", any(p.right))
        if not answered:
            for name in ["majority", *(f"{v} {s}" for s in scorers for v in ("weighted", "best-of"))]:
                add(name, False)
            continue
        add("majority", p.right[group_answers([(p.answers[i], 1.0, i) for i in answered], equivalent_fn)[0].members[0]])
        for s, fn in scorers.items():
            scores = np.asarray(fn(p), dtype=float)
            top = group_answers([(p.answers[i], float(scores[i]), i) for i in answered], equivalent_fn)[0]
            add(f"weighted {s}", p.right[top.members[0]])
            add(f"best-of {s}", p.right[max(answered, key=lambda i: scores[i])])
    tokens = [sum(p.tokens) for p in problems if p.tokens is not None]
    mean_tokens = round(float(np.mean(tokens))) if len(tokens) == len(problems) and tokens else None
    return [{"row": name, "correct": c, "problems": len(problems), "accuracy": c / max(1, len(problems)),
             "mean_tokens": mean_tokens} for name, c in hits.items()]
