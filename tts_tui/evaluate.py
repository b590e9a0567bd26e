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

Figures carry their settings: the output directory holds `settings.json` (every setting
that changes results, keyed by a short digest), a resume with other settings is refused,
and every row records the digest and the code version that produced it. A logged row
counts as done only while the settings its strategy reads are the current ones: after
--allow-settings-change the rest are run again, and the tables read the latest row per
key. A problem whose run raises is logged as a failed row (counted wrong) and the
evaluation goes on, unless MAX_FAILED_IN_A_ROW problems fail in a row: then it stops.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

from tts_tui.atomic import append_line, write_json, write_text
from tts_tui.errors import EXIT_NO_ANSWER, CancelledError, InputError, TTSError
from tts_tui.adaptive_replay import replay, trace_record
from tts_tui.search.protocol import AdaptiveParams, SearchParams
from tts_tui.search.tree import CHOSEN, FINISHED
from tts_tui.search.votes import group_answers
from tts_tui.verify.answers import equivalent

SUBSAMPLED = {"best-of-n", "majority", "weighted"}
SAMPLE_CARRIERS = SUBSAMPLED | {"bracket"}  # runs that draw N full samples (bracket then judges them)
SUBTREES = {"dvts"}  # N/M independent subtrees: a smaller N is the first few of them
SINGLE = {"cot", "keep-thinking"}  # N does not apply
# Adaptive votes read from a fixed-N run's samples (adaptive_replay), at its N only.
REPLAYED = {f"{s}+adaptive{cut}" for s in ("majority", "weighted") for cut in ("", "+cut")}
ADAPTIVE_SUFFIX = "+adaptive"


def base_strategy(name: str) -> str:
    """The strategy a row name runs: "auto+adaptive+cut" runs auto (adaptive)."""
    return name.split("+", 1)[0]


def adaptive_names(strategies: list[str], cut: bool) -> list[str]:
    """The row names `tts eval --adaptive` makes: majority and weighted gain replayed
    adaptive rows beside their fixed ones (with --cut, DeepConf-cut ones too); auto and
    bracket run adaptive live instead of fixed."""
    out: list[str] = []
    for s in strategies:
        if s in ("majority", "weighted"):
            out += [s, f"{s}+adaptive"] + ([f"{s}+adaptive+cut"] if cut else [])
        elif s in ("auto", "bracket"):
            out.append(f"{s}+adaptive")  # a live run each: the cut is measured on the replayed votes
        else:
            out.append(s)
    return list(dict.fromkeys(out))


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


RowFilter = Callable[[dict[str, Any]], bool]


def done_keys(log: Path, retry_failed: bool = False, is_current: RowFilter | None = None) -> set[str]:
    """Keys a resume skips: those whose latest row (a later row replaces an earlier one,
    as in the tables) was made with the current settings (`is_current`, see
    `current_filter`; None: any row), except failed ones when `retry_failed`, and those
    that failed for a cause outside the problem (a server down: `transient`) always."""
    last: dict[str, dict[str, Any]] = {}
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                last[row["key"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a kill: that problem is redone
    return {k for k, row in last.items()
            if not (row.get("failed") and (retry_failed or row.get("transient")))
            and (is_current is None or is_current(row))}


# -- settings: what produced a directory's rows ---------------------------------------------
SETTINGS_FILE = "settings.json"


def compared_only_for() -> dict[str, set[str]]:
    """Settings that change only some strategies' rows, and which: refitting auto's table
    must not lock every older directory, CoT runs with M=1 and one sequence whatever
    --m and the engine's sequence count say (`job_params`), and CoT and keep-thinking
    score nothing, so no verifier (or its file) changes their rows."""
    from tts_tui.search.strategies import STRATEGIES, USES_M

    live = {f"{s}{ADAPTIVE_SUFFIX}" for s in ("auto", "bracket")}
    scored = set(STRATEGIES) - SINGLE
    return {"auto_table": {"auto"}, "m": set(USES_M), "n_seq_max": scored, "adaptive": REPLAYED | live,
            **{key: scored for key in ("verifier", "probe_sha256", "prm", "prm_sha256")}}


def matters(key: str, strategies: Iterable[str]) -> bool:
    """Whether setting `key` can change the rows of any of `strategies`."""
    only = compared_only_for().get(key)
    names = set(strategies)
    return only is None or not only.isdisjoint(names | {base_strategy(s) for s in names if key != "adaptive"})


class SettingsMismatch(InputError):
    """A resume whose settings differ from those its directory's rows were made with."""


def params_settings(base: SearchParams, budget_per_sample: int) -> dict[str, Any]:
    """The search knobs that change results. N and the budget are per row (the budget is
    N x the per-sample budget); `extra` is a strategy's scratch space."""
    knobs = {k: v for k, v in base.settings().items() if k not in ("n", "budget", "extra")}
    if knobs.get("adaptive"):  # the cut is in the row names (NAME+adaptive+cut), not a setting
        knobs["adaptive"] = {k: v for k, v in knobs["adaptive"].items() if k != "cut"}
    return {**knobs, "budget_per_sample": budget_per_sample}


def digest_of(obj: Any) -> str:
    """A short stable digest of JSON-able data (sorted keys): the same settings give the
    same digest in every process, unlike hash()."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def code_version() -> str:
    """The package version, and in a git checkout the commit (+dirty when the package's
    files differ from it): recorded in every row, not compared on resume, since a resume
    across commits is how a long evaluation survives ordinary development."""
    from tts_tui import __version__

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return __version__
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "tts_tui"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return __version__
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if dirty.returncode == 1 else "")


NUMERIC_LIBRARIES = {"llama_cpp_python": "llama-cpp-python", "math_verify": "math-verify"}


def library_versions() -> dict[str, str | None]:
    """The installed versions of the libraries that decide a row's numbers: llama.cpp
    (the logits, so the samples) and math-verify (`correct`). Recorded in every row
    beside the code version, not compared; None where one is not installed."""
    out: dict[str, str | None] = {}
    for field, dist in NUMERIC_LIBRARIES.items():
        try:
            out[field] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[field] = None
    return out


# Settings a directory made before they existed has no value for: no row there read them,
# so taking one up is no change (an existing fixed-N directory gains adaptive rows).
ADDED_LATER = {"adaptive"}


def settings_diff(old: dict[str, Any], new: dict[str, Any], strategies: Iterable[str]) -> list[str]:
    """'key: old -> new' for each setting that differs and matters to `strategies`. A key
    only one side has differs too (a PRM added or dropped)."""
    running = set(strategies)
    out = []
    for key in sorted(set(old) | set(new)):
        if not matters(key, running) or (key in ADDED_LATER and old.get(key) is None):
            continue
        if old.get(key) != new.get(key):
            out.append(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return out


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text[:12] + "…" if len(text) > 16 and all(c in "0123456789abcdef" for c in text) else text


def open_settings(out_dir: Path, settings: dict[str, Any], strategies: Iterable[str], *,
                  allow_change: bool = False, code: str = "",
                  note: Callable[[str], None] | None = None) -> str:
    """Check `settings` against `out_dir/settings.json` and record them; return their digest.

    The file maps each digest that wrote rows to its full settings (and the code that
    first used it), and names the current one. A directory made with other settings (of
    those `strategies` read) is refused (SettingsMismatch, one line naming what differs)
    unless `allow_change`: then the new settings become current, and rows made with others
    stay in the log but no longer count (`current_filter`: they are run again). A setting
    none of `strategies` reads keeps its current value: a CoT resume with another --m must
    not make that M current, or a later beam resume would be compared against an M no beam
    row was made with. A directory with rows but no settings file (from before they were
    recorded) takes these settings, with a note, and records that its unstamped rows are
    theirs."""
    note = note or (lambda text: print(text, file=sys.stderr))
    path = out_dir / SETTINGS_FILE
    doc = _load_settings(path) or _adopt(out_dir, digest_of(settings), note)
    current = doc["settings"].get(doc["current"], {}).get("settings")
    if current is not None:
        diffs = settings_diff(current, settings, strategies)
        if diffs and not allow_change:
            raise SettingsMismatch(f"{out_dir} holds rows made with other settings ({'; '.join(diffs)}); "
                                   "use another --out, or --allow-settings-change to make these current "
                                   "(rows made with the others are run again)")
        settings = _carry(current, settings, strategies)
    digest = digest_of(settings)
    if digest not in doc["settings"]:
        doc["settings"][digest] = {"settings": settings, "code": code, "first_used": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if doc["current"] != digest or not path.is_file():
        doc["current"] = digest
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, doc)
    return digest


def _adopt(out_dir: Path, digest: str, note: Callable[[str], None]) -> dict[str, Any]:
    """A new settings document; rows already logged (unstamped, from before settings were
    recorded) are taken as made with `digest`, and the document says so ("legacy")."""
    doc: dict[str, Any] = {"current": digest, "settings": {}}
    rows = len(read_rows(out_dir / "log.jsonl"))
    if rows:
        note(f"note: {out_dir} has {rows} rows from before settings were recorded; taking them as made "
             f"with these settings ({SETTINGS_FILE} written)")
        doc["legacy"] = digest
    return doc


def _carry(current: dict[str, Any], settings: dict[str, Any], strategies: Iterable[str]) -> dict[str, Any]:
    """`settings`, with the current value of every setting none of `strategies` reads."""
    running = set(strategies)
    return {**settings, **{k: v for k, v in current.items() if not matters(k, running)}}


def current_filter(out_dir: Path) -> RowFilter | None:
    """Whether a logged row was made with the current settings, as far as its strategy
    reads them (a CoT row stays current when only M changed). A row without a digest
    (from before digests) counts only in a directory that took its settings over (those
    are its rows' settings). None when the directory records no settings: every row
    counts, as before settings were recorded."""
    doc = _load_settings(out_dir / SETTINGS_FILE)
    if doc is None:
        return None
    known = doc["settings"]
    now = known.get(doc["current"], {}).get("settings")
    # files written before "legacy" was recorded: the first entry is the one that took
    # the unstamped rows over (every row written since carries its digest)
    legacy = doc.get("legacy") or next(iter(known), None)

    @functools.cache
    def same(digest: str | None, strategy: str) -> bool:
        made = known.get(digest, {}).get("settings") if digest else None
        return made is not None and now is not None and not settings_diff(made, now, [strategy])

    return lambda row: same(row.get("settings_digest") or legacy, str(row.get("strategy")))


def current_rows(rows: list[dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    """The rows a table may show: those `current_filter` keeps (all, without settings)."""
    keep = current_filter(out_dir)
    return rows if keep is None else [r for r in rows if keep(r)]


def _load_settings(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc.get("settings"), dict) and isinstance(doc.get("current"), str):
            return doc
    except (json.JSONDecodeError, AttributeError):
        pass
    raise InputError(f"{path} is not a settings file tts eval wrote (move it away to start over)")


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
    sampled = [s for s in strategies if s in SUBSAMPLED | REPLAYED]
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
        elif s not in SUBSAMPLED | REPLAYED and s not in SINGLE:
            jobs.extend((s, n, [n], [s]) for n in sorted(ns) if not (sampled and s == carrier and n == top))
    return jobs


def _expected(names: list[str], n: int, yields: list[int]) -> list[tuple[str, int]]:
    """The (strategy, N) rows one job writes: sample-based names at every N it yields."""
    return [(name, k) for name in names for k in (yields if name in SUBSAMPLED | SUBTREES else [n])
            if name not in REPLAYED or k == max(yields)]


SolveFn = Callable[[str, str, SearchParams], tuple[Any, Any]]
# Cumulative token counters of the engines a solve uses: "generated" and "prefill" (every
# token decoded but not generated), and, where the meter tells them apart, the prefill's
# phases (PHASES). run_eval reads them before and after each problem; the difference is
# that problem's cost.
Meter = Callable[[], dict[str, int]]
# Prefill by what decoded it: the problem's prompt (decoded once, shared by every branch),
# bracket's A/B judge prompts, the verifier's inputs (a self-judge's question, a PRM's
# prompts). The rest of a problem's prefill is its branches' own: forks, forced text,
# re-decoding after eviction.
PHASES = ("prompt", "judge", "verifier")


class PhaseMeter:
    """Counts the prefill decoded during each phase: `read` gives the engines' cumulative
    prefill, and a call wrapped by `wrap` adds what it decoded to its phase. Only the
    outermost phase counts a decode, so no token is counted twice."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.totals = dict.fromkeys(PHASES, 0)
        self._active = False

    def call(self, phase: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._active:
            return fn(*args, **kwargs)
        self._active = True
        before = self.read()
        try:
            return fn(*args, **kwargs)
        finally:
            self.totals[phase] += self.read() - before
            self._active = False

    def wrap(self, inner: Any, methods: dict[str, str]) -> Any:
        """`inner` with each method named in `methods` counted in its phase."""
        return _Metered(inner, methods, self)


class _Metered:
    """A generator or scorer whose named methods run inside a PhaseMeter phase; every
    other attribute is the wrapped object's."""

    def __init__(self, inner: Any, methods: dict[str, str], meter: PhaseMeter) -> None:
        self._inner, self._methods, self._meter = inner, methods, meter

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_methods", "_meter"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        value = getattr(self._inner, name)
        phase = self._methods.get(name)
        return functools.partial(self._meter.call, phase, value) if phase and callable(value) else value


@dataclass(frozen=True)
class Prefill:
    """One problem's prefill, split as PHASES says. `split` is False when the meter did not
    tell the phases apart: then only the whole run's figure is known (prompt and verifier
    0, the judge from bracket's own count)."""

    total: int
    prompt: int = 0
    judge: int = 0
    verifier: int = 0
    split: bool = False

    @property
    def branches(self) -> int:
        """What the branches decoded themselves: forks, forced text, re-decoding."""
        return max(0, self.total - self.prompt - self.judge - self.verifier)

    def shared_plus(self, per_branch: int, frac: float) -> int | None:
        """The whole prompt plus `frac` of `per_branch`: the prefill of a run read from the
        first branches of this one (None when the phases are not known and frac < 1)."""
        if not self.split and frac < 1:
            return None
        return self.prompt + round(per_branch * frac)


def _prefill(cost: dict[str, int] | None, result: Any) -> Prefill | None:
    if cost is None and "cached_tokens" in result.stats:  # a server: what it evaluated of what it was sent
        sent, cached = int(result.stats.get("prompt_tokens", 0)), int(result.stats.get("cached_tokens", 0))
        return Prefill(max(0, sent - cached), judge=int(result.stats.get("judge_prompt_tokens", 0)))
    if cost is None:
        return None
    if all(k in cost for k in PHASES):
        return Prefill(cost["prefill"], cost["prompt"], cost["judge"], cost["verifier"], split=True)
    return Prefill(cost["prefill"], judge=int(result.stats.get("judge_prompt_tokens", 0)))


def check_m(strategies: Iterable[str], ns: Iterable[int], m: int) -> None:
    """Every (strategy, N) runs with the M given, or the evaluation does not start: a
    silently replaced M would label rows with an M they were not run with."""
    from tts_tui.search.strategies import NEEDS_M_DIVIDES_N, USES_M

    for s in map(base_strategy, strategies):
        for n in ns:
            if s in NEEDS_M_DIVIDES_N and (m > n or n % m):
                raise InputError(f"{s} at N={n}: M ({m}) must divide N; "
                                 "give --n values that M divides, or another --m")
            if s in USES_M and not 1 <= m <= n:
                raise InputError(f"{s} at N={n}: M ({m}) must be between 1 and N; "
                                 "give larger --n values or a smaller --m")


def job_params(base: SearchParams, strategy: str, n: int, budget_per_sample: int) -> SearchParams:
    from tts_tui.search.strategies import USES_M

    # strategies that ignore M get one that is valid at any N; the others get M as given
    m = base.m if base_strategy(strategy) in USES_M else min(base.m, n)
    adaptive = None  # a fixed run carries the replayed rows
    if ADAPTIVE_SUFFIX in strategy and base.adaptive is not None:
        adaptive = replace(base.adaptive, cut=strategy.endswith("+cut"))
    return SearchParams(**{**base.__dict__, "n": n, "m": m, "budget": budget_per_sample * n, "adaptive": adaptive})


# Problems failing in a row before the evaluation stops: an error that fails every problem
# (a dead context, the GPU out of memory) would otherwise fill the rest of the log with
# failed rows that a resume keeps.
MAX_FAILED_IN_A_ROW = 3


class EvalStopped(TTSError):
    """The evaluation stopped: MAX_FAILED_IN_A_ROW problems in a row raised. Not bad input
    (the settings were accepted), so not exit 2."""

    exit_code = EXIT_NO_ANSWER


def run_eval(
    problems: list[Problem],
    strategies: list[str],
    ns: list[int],
    base: SearchParams,
    solve: SolveFn,
    out_dir: Path,
    budget_per_sample: int,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    meter: Meter | None = None,
    stamp: dict[str, Any] | None = None,
    retry_failed: bool = False,
    is_current: RowFilter | None = None,
    concurrency: int = 1,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Run what the log lacks, one fsynced row per (strategy, N, problem); return all rows.

    `concurrency` > 1 runs that many problems at once (a server's continuous batching
    does the rest); rows are logged from this thread as jobs finish, so the log stays
    whole and resumable. A meter cannot tell concurrent jobs apart: it is not read then.
    `cancel` (the event the solves watch) is set when the run is broken off (Ctrl-C), so
    the jobs in flight stop at their next step instead of running to their end.

    A logged row counts as done only when `is_current` keeps it (rows made with other
    settings are run again; None: every row counts). `stamp` (the settings digest, code
    and library versions) goes into every new row. A problem whose solve raises gets
    failed rows and the run goes on (a resume skips them unless `retry_failed`), until
    MAX_FAILED_IN_A_ROW problems fail in a row: then EvalStopped, the rows kept."""
    check_m(strategies, ns, base.m)
    log = out_dir / "log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = done_keys(log, retry_failed, is_current)
    jobs = [(strategy, n, yields, names, p) for strategy, n, yields, names in plan(strategies, ns, base.m)
            for p in problems if not all(_key(name, k, p.id) in done for name, k in _expected(names, n, yields))]

    def run(job: tuple) -> list[dict[str, Any]]:
        strategy, n, yields, names, p = job
        params = job_params(base, strategy, n, budget_per_sample)
        return _run_job(strategy, n, yields, names, p, params, solve, meter if concurrency <= 1 else None,
                        base.adaptive)

    errors: list[tuple[str, str, bool]] = []  # (problem id, error, transient) of those failing in a row now
    stop = threading.Event()  # set: start no more jobs, but log those in flight as they end
    stopped = ""

    def write(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["key"] in done:
                continue
            row.update(stamp or {})
            append_line(log, json.dumps(row, ensure_ascii=False))
            done.add(row["key"])
            if on_row:
                on_row(row)

    for job, rows in _jobs_done(jobs, run, concurrency, stop, cancel, salvage=write):
        write(rows)
        failed = bool(rows) and bool(rows[0].get("failed"))  # a job's rows fail together
        errors = [*errors, (job[4].id, rows[0]["failed"], bool(rows[0].get("transient")))] if failed else []
        if len(errors) >= MAX_FAILED_IN_A_ROW and not stopped:
            stopped = _stopped_message(errors)
            stop.set()
    if stopped:
        raise EvalStopped(stopped)
    return read_rows(log)


def _jobs_done(jobs: list[tuple], run: Callable[[tuple], list[dict[str, Any]]], concurrency: int,
               stop: threading.Event, cancel: threading.Event | None = None,
               salvage: Callable[[list[dict[str, Any]]], None] | None = None):
    """(job, rows) as jobs finish: in order one at a time, or `concurrency` at once. A job
    starts only when one has ended and the caller, having read its rows, has not set
    `stop`; those in flight at a stop are still yielded as they end (their work is done:
    it is logged). When the caller breaks off (an exception: Ctrl-C), the rows of jobs
    that had already finished go to `salvage` (their work is done), then `cancel` is set
    so the jobs still in flight end at their next step, and their rows are dropped."""
    if concurrency <= 1:
        for job in jobs:
            if stop.is_set():
                return
            yield job, run(job)
        return
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=concurrency)
    waiting = iter(jobs)
    running: dict[Any, tuple] = {}

    def fill() -> None:
        while len(running) < concurrency and not stop.is_set():
            job = next(waiting, None)
            if job is None:
                return
            running[pool.submit(run, job)] = job

    try:
        fill()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield running.pop(fut), fut.result()
            fill()
    except BaseException:  # GeneratorExit: the caller broke off
        finished = [f for f in running if f.done() and not f.cancelled() and f.exception() is None]
        if cancel is not None:
            cancel.set()
        if salvage is not None:
            for f in finished:
                salvage(f.result())
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stopped_message(errors: list[tuple[str, str, bool]]) -> str:
    """One line: the repeated error, and what to do (a server down: the same command once it
    is back, which runs those rows again; any other cause: --retry-failed once fixed)."""
    causes = {error for _, error, _ in errors}
    what = f"each with {causes.pop()}" if len(causes) == 1 else f"the last ({errors[-1][0]}) with {errors[-1][1]}"
    if all(transient for _, _, transient in errors):
        then = "run the same command once the server answers again (it runs the failed rows again)"
    else:
        then = "fix the cause, then run the same command with --retry-failed"
    return f"stopped: {len(errors)} problems in a row failed, {what}; the rows logged so far are kept; {then}"


def _run_job(strategy: str, n: int, yields: list[int], names: list[str], p: Problem, params: SearchParams,
             solve: SolveFn, meter: Meter | None, adaptive: AdaptiveParams | None = None) -> list[dict[str, Any]]:
    before = meter() if meter else None
    t0 = time.monotonic()
    try:
        result, search = solve(p.problem, base_strategy(strategy), params)
        seconds = time.monotonic() - t0
        prefill = _prefill(_cost(meter, before), result)
        # the rows are read inside the guard too: reading them scores and votes
        return [r for name in names for r in _rows(name, n, yields, p, result, search, seconds, prefill, adaptive)]
    except CancelledError:
        raise
    except Exception as exc:  # one problem's failure must not stop the evaluation
        cost = _cost(meter, before)
        seconds = time.monotonic() - t0
        return [_failed_row(name, k, p, exc, cost, seconds) for name, k in _expected(names, n, yields)]


def _cost(meter: Meter | None, before: dict[str, int] | None) -> dict[str, int] | None:
    """What the meter's counters rose by (every counter it reports)."""
    if meter is None or before is None:
        return None
    after = meter()
    return {k: int(v - before.get(k, 0)) for k, v in after.items()}


def _failed_row(strategy: str, n: int, p: Problem, exc: Exception, cost: dict[str, int] | None,
                seconds: float) -> dict[str, Any]:
    """A problem that raised: wrong, with the error and what it had spent (the generated
    tokens before the error when an engine meter says, else 0)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return {"id": p.id, "strategy": strategy, "gold": p.answer, "level": p.level, "key": _key(strategy, n, p.id),
            "n": n, "answer": None, "correct": False, "tokens": cost["generated"] if cost else 0,
            "prefill_tokens": cost["prefill"] if cost else None, "seconds": round(seconds, 2),
            "failed": f"{type(exc).__name__}: {message}",
            **({"transient": True} if getattr(exc, "transient", False) else {})}


def _direct_prefill(pf: Prefill | None) -> dict[str, int | None]:
    """A row of the run itself: all its prefill, the verifier's part apart."""
    if pf is None:
        return {"prefill_tokens": None}
    return {"prefill_tokens": pf.total, "verifier_prefill_tokens": pf.verifier if pf.split else None}


def _rows(strategy: str, n: int, yields: list[int], p: Problem, result: Any, search: Any, seconds: float,
          prefill: Prefill | None = None, adaptive: AdaptiveParams | None = None):
    base = {"id": p.id, "strategy": strategy, "gold": p.answer, "level": p.level}
    extra = {k: result.stats.get(k) for k in ("difficulty", "chosen_strategy", *ADAPTIVE_STATS) if k in result.stats}
    # a server's usage for this problem, as counted (the engine's counters say other things)
    server = ({f"server_{k}": result.stats[k] for k in SERVER_STATS if k in result.stats}
              if "cached_tokens" in result.stats else {})
    extra.update(server)
    if "chains" in result.stats:  # revise: how often a later revision turned a right answer wrong
        extra["chains"] = result.stats["chains"]
        extra["attempt_tokens"] = result.stats.get("attempt_tokens")
        extra["right_to_wrong"] = chain_flips(result.stats["chains"], p.answer)[0]
    if strategy in SUBTREES and yields != [n]:
        yield from _subtree_rows(strategy, n, yields, p, result, search, seconds, base, extra, prefill)
        return
    if strategy in REPLAYED:
        yield _replayed_row(strategy, n, p, result, search, seconds, prefill, adaptive, base)
        return
    if strategy not in SUBSAMPLED:
        yield {**base, "key": _key(strategy, n, p.id), "n": n, "answer": result.answer,
               "correct": bool(result.answer is not None and equivalent(result.answer, p.answer)),
               "tokens": result.tokens, **_direct_prefill(prefill), "seconds": round(seconds, 2), **extra}
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
               "tokens": sum(s["tokens"] for s in sub), **_sample_prefill(prefill, strategy, frac),
               "seconds": round(sample_seconds * frac, 2),
               "subsampled_from": n if k != n else None, **(server if k == n else {}),
               # every sample's answer and score, so other votes can be tried from the log
               **({"samples": [[s["answer"], round(s["score"], 4), s["tokens"], s["low"], s["drops"], s["finish"]]
                               for s in samples]} if k == n else {})}


SERVER_STATS = ("prompt_tokens", "cached_tokens", "prm_prompt_tokens", "requests")
ADAPTIVE_STATS = ("samples_used", "stopped_by", "posterior", "cut", "cut_floor")


def _replayed_row(name: str, n: int, p: Problem, result: Any, search: Any, seconds: float,
                  prefill: Prefill | None, adaptive: AdaptiveParams | None, base: dict[str, Any]) -> dict[str, Any]:
    """An adaptive vote read from this fixed-N run's samples (see adaptive_replay)."""
    a = adaptive or AdaptiveParams()
    a = AdaptiveParams(**{**a.__dict__, "cut": name.endswith("+cut")})
    samples = _samples(search, a.window)
    got = replay(samples, a, weighted=base_strategy(name) == "weighted", equivalent=equivalent)
    frac = got["tokens"] / max(1, sum(s["tokens"] for s in samples))
    sample_seconds = result.stats.get("sample_seconds", seconds)
    return {**base, "key": _key(name, n, p.id), "n": n, "answer": got["answer"],
            "correct": bool(got["answer"] is not None and equivalent(got["answer"], p.answer)),
            "tokens": got["tokens"], **_sample_prefill(prefill, base_strategy(name), frac),
            "seconds": round(sample_seconds * frac, 2), "subsampled_from": n,
            **{k: got[k] for k in ADAPTIVE_STATS}}


def _sample_prefill(pf: Prefill | None, strategy: str, frac: float) -> dict[str, int | None]:
    """A vote read from the first samples (`frac` of the generated tokens): the prompt,
    decoded once for all samples, in full; the samples' own prefill in proportion; the
    verifier's only for the votes that read its scores (majority never asks it); a
    carrier's judge prompts never (the votes read the samples without a judge)."""
    if pf is None:
        return {"prefill_tokens": None}
    verifier = pf.verifier if strategy != "majority" else 0
    return {"prefill_tokens": pf.shared_plus(pf.branches + verifier, frac),
            "verifier_prefill_tokens": round(verifier * frac) if pf.split else None}


def _subtree_rows(strategy: str, n: int, yields: list[int], p: Problem, result: Any, search: Any,
                  seconds: float, base: dict[str, Any], extra: dict[str, Any], prefill: Prefill | None = None):
    """DVTS at N, read as runs at each smaller N in `yields`: the first N'/M subtrees,
    their finished paths weighted-voted as the strategy itself votes. Such a row is
    derived, not a run of its own: its subtrees shared the larger run's budget (one that
    ended early left more to the others), so it says `subsampled_from` and the tables
    mark it. Its prefill is the whole prompt (every subtree grows from it) plus its
    subtrees' share, by generated tokens, of the rest (forks, verifier inputs)."""
    m = search.params.m
    nodes = [x for x in search.tree.nodes.values() if "subtree" in x.meta]
    done = [x for x in nodes if x.status in (FINISHED, CHOSEN) and x.answer]
    spent = max(1, sum(x.n_tokens for x in nodes))
    for k in yields:
        if k == n:  # the run itself
            answer, tokens, share = result.answer, result.tokens, 1.0
            cost = _direct_prefill(prefill)
        else:
            keep = k // m
            items = [(x.answer, search.path_score(x), x.id) for x in done if x.meta["subtree"] < keep]
            groups = group_answers(items, equivalent)
            answer = groups[0].answer if groups else None
            tokens = sum(x.n_tokens for x in nodes if x.meta["subtree"] < keep)
            share = min(1.0, tokens / spent)
            cost = _subtree_prefill(prefill, share)
        yield {**base, "key": _key(strategy, k, p.id), "n": k, "answer": answer,
               "correct": bool(answer is not None and equivalent(answer, p.answer)),
               "tokens": tokens, **cost, "seconds": round(seconds * share, 2),
               "subsampled_from": n if k != n else None,
               **(extra if k == n else {x: v for x, v in extra.items() if not x.startswith("server_")})}


def _subtree_prefill(pf: Prefill | None, share: float) -> dict[str, int | None]:
    if pf is None:
        return {"prefill_tokens": None}
    return {"prefill_tokens": pf.shared_plus(pf.branches + pf.verifier, share),
            "verifier_prefill_tokens": round(pf.verifier * share) if pf.split else None}


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
        for answer, score, *_ in r.get("samples") or []:
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


def sample_leaves(tree: Any) -> list[Any]:
    """Each full sample's last node, in seed order (the order a run at smaller N draws)."""
    out = []
    firsts = [c for c in tree.children(tree.root) if c.kind != "match"]  # not bracket's judged matches
    for child in sorted(firsts, key=lambda c: (c.meta.get("sample", c.id), c.id)):
        leaf = child
        while leaf.children:
            leaf = tree.nodes[leaf.children[-1]]
        out.append(leaf)
    return out


def _samples(search: Any, window: int = 32) -> list[dict[str, Any]]:
    """Each full sample: its answer, path score, tokens and confidence record
    (`trace_record` over `window` tokens), in generation order."""
    out = []
    for leaf in sample_leaves(search.tree):
        path = search.tree.path(leaf)
        # an answer is only set on a finished sample; bracket later prunes its losers
        ok = bool(leaf.answer)
        out.append({
            "answer": leaf.answer if ok else None,
            "score": search.path_score(leaf) if ok and search.scorer else 0.0,
            "tokens": sum(x.n_tokens for x in path),
            "id": leaf.id,
            "finish": leaf.finish,
            **trace_record([c for x in path for c in x.meta.get("conf", [])], window),
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
    """The log's rows, one per key: a later row (a retried failure) replaces an earlier one
    in its place. Rows from before settings were recorded load the same way."""
    by_key: dict[Any, dict[str, Any]] = {}
    if log.is_file():
        for i, line in enumerate(log.read_text(encoding="utf-8").splitlines()):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                by_key[row.get("key", ("line", i))] = row
    return list(by_key.values())


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy x N: accuracy over every row (a failed row counts as wrong, so all
    cells stay on the same problems), generated and prefill tokens, time, failures, and
    the larger run a derived cell was read from."""
    acc: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        acc[(r["strategy"], r["n"])].append(r)
    table = []
    for (s, n), rs in sorted(acc.items()):
        prefill = [r["prefill_tokens"] for r in rs if r.get("prefill_tokens") is not None]
        sources = {r.get("subsampled_from") for r in rs}
        table.append({
            "strategy": s, "n": n, "problems": len(rs),
            "accuracy": sum(bool(r["correct"]) for r in rs) / len(rs),
            "failed": sum(1 for r in rs if r.get("failed")),
            "mean_tokens": sum(r["tokens"] for r in rs) / len(rs),
            # old logs have no prefill count: None, not a misleading 0
            "mean_prefill": sum(prefill) / len(prefill) if len(prefill) == len(rs) else None,
            "mean_seconds": sum(r["seconds"] for r in rs) / len(rs),
            "median_seconds": statistics.median(r["seconds"] for r in rs),
            "derived_from": derived_label(s, sources),
        })
    return table


def derived_label(strategy: str, sources: set[Any]) -> str:
    """'' for a cell of its own runs; 'N=8' when read from the first samples of an N=8
    run (independent samples, each with its own share: the same as a run at this N);
    'N=8*' for DVTS subtrees, which shared that run's budget (not the same)."""
    larger = sorted(x for x in sources if x)
    if not larger:
        return ""
    label = ",".join(f"N={x}" for x in larger) + ("*" if strategy in SUBTREES else "")
    return label + (" (some)" if None in sources else "")


DERIVED_NOTE = ("* read from the first subtrees of a larger DVTS run, whose subtrees shared its budget: "
                "not the same as a run at this N")


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [f"{'strategy':14} {'N':>3} {'problems':>8} {'accuracy':>8} {'failed':>6} {'mean tokens':>11} "
             f"{'prefill':>8} {'mean s':>7}  from"]
    for t in table:
        prefill = f"{t['mean_prefill']:>8.0f}" if t.get("mean_prefill") is not None else f"{'-':>8}"
        line = (f"{t['strategy']:14} {t['n']:>3} {t['problems']:>8} {t['accuracy']:>8.1%} {t.get('failed', 0):>6} "
                f"{t['mean_tokens']:>11.0f} {prefill} {t['mean_seconds']:>7.1f}  {t.get('derived_from', '')}")
        lines.append(line.rstrip())
    lines.append("# mean tokens: generated; prefill: tokens decoded but not generated (prompts, verifier, "
                 "judge and PRM inputs, forced text, re-decoding); a failed row counts as wrong")
    if any(t.get("derived_from") for t in table):
        lines.append("# a row read from a larger run: its prefill is the whole prompt (decoded once for every "
                     "sample) and its samples' share of the rest; majority pays no verifier")
    if any("*" in t.get("derived_from", "") for t in table):
        lines.append("# " + DERIVED_NOTE)
    return "\n".join(lines)


def plot_svg(table: list[dict[str, Any]], dest: Path, title: str = "accuracy vs tokens") -> None:
    """Accuracy against mean tokens, one line per strategy, as a small standalone SVG. The
    accuracy axis spans the data (to the next 10 points either side), so rows a point or
    two apart stay apart; the legend has its own column."""
    w, h, pad, legend = 800, 420, 60, 190
    xs = [t["mean_tokens"] for t in table] or [1]
    xmax = max(xs) * 1.1 or 1
    accs = [t["accuracy"] for t in table] or [0.0, 1.0]
    ylo = max(0.0, math.floor(round((min(accs) - 0.05) * 10, 9)) / 10)
    yhi = min(1.0, math.ceil(round((max(accs) + 0.05) * 10, 9)) / 10)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
    right = w - legend  # the plot's right edge

    def px(x: float) -> float:
        return pad + (right - pad) * x / xmax

    def py(y: float) -> float:
        return h - pad - (h - 2 * pad) * (y - ylo) / (yhi - ylo)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{right}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{(pad + right) / 2}" y="{h - 15}" text-anchor="middle">mean generated tokens per problem</text>',
             f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">accuracy</text>']
    tick = 0.05 if yhi - ylo <= 0.4 else 0.1
    for k in range(round((yhi - ylo) / tick) + 1):
        y = ylo + k * tick
        parts.append(f'<text x="{pad - 8}" y="{py(y) + 4}" text-anchor="end">{y:.2f}</text>')
        parts.append(f'<line x1="{pad}" y1="{py(y)}" x2="{right}" y2="{py(y)}" stroke="#eee"/>')
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
                         f'<title>{escape(s)} N={t["n"]}: {t["accuracy"]:.1%}</title></circle>')
        parts.append(f'<text x="{right + 12}" y="{pad + 16 * i}" fill="{c}">{escape(s)}</text>')
    parts.append("</svg>")
    write_text(dest, "\n".join(parts))
