"""One run at a time: the controller that owns the TUI's search thread.

A thread cannot be killed, only asked to stop (its search checks a cancel Event between
decode steps and ends within about half a second). So starting a run while another is
going cancels the old one and starts a new thread that first joins the old thread: the
UI never waits, and at most one thread is ever inside `Runner.run` (one decoding thread:
no second OpenMP team, no model freed under a decode, no halved throughput).

Every event a run produces is queued with that run's id; `drain()` hands the UI only the
current run's events, so a superseded run's late steps never reach a view (node ids
restart at 0 in every run and would graft onto the new tree).

No Textual here: targets (where a job's events go) are opaque to the controller.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from tts_tui.errors import TTSError
from tts_tui.runlog import run_record, save_run
from tts_tui.search import events as ev
from tts_tui.tui.runner import RunRequest, Runner

T = TypeVar("T")

STATUS = "status"  # a status line for the job's host: data={"text": ...}
ERROR = "error"  # the run failed: data={"text": ...}
RECORD = "record"  # the saved run record: data={"record": ...}
FINISHED = "finished"  # the job is over (done, stopped, failed, never started or superseded)


@dataclass
class _Run(Generic[T]):
    id: int
    jobs: list[tuple[T, RunRequest]]
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class RunController(Generic[T]):
    """Runs jobs (target, request) one after another on one thread; one run at a time."""

    def __init__(self, runner: Runner, save: Callable[[dict[str, Any]], Any] = save_run) -> None:
        self.runner = runner
        self._save = save
        self._lock = threading.Lock()  # guards _current and _queue against a racing start
        self._queue: deque[tuple[int, T, ev.Event]] = deque()
        self._current: _Run[T] | None = None
        self._next_id = 0
        self._urgent = False  # a job ended: the UI should show it without waiting for its frame rate

    # -- the UI thread's side ----------------------------------------------------------------
    @property
    def run_id(self) -> int:
        """The id of the current run (events from any other id are stale)."""
        return self._current.id if self._current is not None else -1

    @property
    def targets(self) -> list[T]:
        return [t for t, _ in self._current.jobs] if self._current is not None else []

    @property
    def running(self) -> bool:
        """Whether a thread is still working (the current run, or one it waits for)."""
        cur = self._current
        return cur is not None and cur.thread is not None and cur.thread.is_alive()

    def start(self, jobs: Sequence[tuple[T, RunRequest]]) -> int:
        """Cancel the current run and start these jobs once its thread has ended; returns the new run id.

        Targets of the old run that the new one does not reuse get a FINISHED event (its
        own would be dropped as stale), so every view that was running is told it stopped.
        """
        with self._lock:
            old = self._supersede()
            run = _Run(self._next_id, list(jobs))
            self._next_id += 1
            self._current = run
            self._queue.clear()  # all stale now; drain() would drop them anyway
            reused = [t for t, _ in run.jobs]
            if old is not None:
                for target, _ in old.jobs:
                    if target not in reused:
                        self._queue.append((run.id, target, ev.Event(FINISHED, data={"superseded": True})))
            self._urgent = True
            previous = old.thread if old is not None else None
            run.thread = threading.Thread(target=self._work, args=(run, previous), name=f"tts-run-{run.id}",
                                          daemon=True)  # a model download in it must not hold the exit
            run.thread.start()
            return run.id

    def stop(self) -> bool:
        """Ask the current run to stop; its events keep coming until it ends. True if one was running."""
        cur = self._current
        if cur is None or not self.running:
            return False
        cur.cancel.set()
        return True

    def abandon(self) -> None:
        """Stop the current run and drop its events from now on (a replay takes its view)."""
        with self._lock:
            old = self._supersede()
            if old is not None:
                # An empty run in its place keeps later starts chained behind the old thread.
                self._current = _Run(self._next_id, [], thread=old.thread)
                self._next_id += 1
                self._queue.clear()

    def drain(self) -> list[tuple[T, ev.Event]]:
        """The current run's queued events, oldest first; a stale run's are dropped."""
        current = self.run_id
        out: list[tuple[T, ev.Event]] = []
        while True:
            try:
                rid, target, e = self._queue.popleft()
            except IndexError:
                return out
            if rid == current:
                out.append((target, e))

    def take_urgent(self) -> bool:
        urgent, self._urgent = self._urgent, False
        return urgent

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop, wait for the thread, then close the runner. False (runner left open) if the
        thread did not end in time: freeing a model under a decoding thread would crash."""
        with self._lock:
            cur = self._supersede()
        thread = cur.thread if cur is not None else None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self.runner.close()
        return True

    def _supersede(self) -> _Run[T] | None:
        """Cancel the current run (caller holds the lock) and return it."""
        old = self._current
        if old is not None:
            old.cancel.set()
        return old

    # -- the run thread ------------------------------------------------------------------------
    def _post(self, run_id: int, target: T, event: ev.Event) -> None:
        self._queue.append((run_id, target, event))  # deque.append is thread-safe and never blocks the search

    def _work(self, run: _Run[T], previous: threading.Thread | None) -> None:
        if previous is not None and previous.is_alive():
            for target, _ in run.jobs[:1]:
                self._post(run.id, target, ev.Event(STATUS, data={"text": "waiting for the previous run to stop…"}))
            previous.join()  # the old run saw its cancel: it ends within one decode step
        for target, req in run.jobs:
            post: ev.Listener = lambda e, target=target: self._post(run.id, target, e)  # noqa: E731
            try:
                if not run.cancel.is_set():
                    self._run_one(req, run.cancel, post)
            finally:
                post(ev.Event(FINISHED))
                self._urgent = True

    def _run_one(self, req: RunRequest, cancel: threading.Event, post: ev.Listener) -> None:
        def status(text: str) -> None:
            post(ev.Event(STATUS, data={"text": text}))

        try:
            result, search = self.runner.run(req, post, cancel, status)
            settings = {"strategy": req.strategy, "verifier": req.verifier, **req.params.settings()}
            model = getattr(self.runner, "model_name", lambda: req.model or "")()
            record = run_record(search, result, settings=settings, model=model)
            try:
                self._save(record)
            except OSError as exc:
                status(f"could not save the run: {exc}")
            post(ev.Event(RECORD, data={"record": record}))
            status(("stopped" if result.cancelled else "done") + f": answer {result.answer}")
        except TTSError as exc:
            post(ev.Event(ERROR, data={"text": str(exc)}))
        except Exception as exc:  # never let a failed run take the UI down
            post(ev.Event(ERROR, data={"text": f"{type(exc).__name__}: {exc}"}))
