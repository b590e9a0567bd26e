"""A scripted generator: deterministic trees without a model, for strategy and UI tests."""

from __future__ import annotations

from dataclasses import dataclass

from tts_tui.search.protocol import StepResult


@dataclass(frozen=True)
class FakeState:
    depth: int
    branch: int  # which answer script this branch follows
    text: str = ""


class FakeGenerator:
    """Branch k answers answers[k % len]; a solution takes `depth` steps of `step_tokens`.

    Each step costs `step_tokens` tokens; the budget and a branch's `max_total` are
    honoured like the engine does. Branches in `loops` never finish ("0.000...").
    Branches in `chatter` write their answer mid-solution and then go on writing code
    (as Qwen-Coder does) until their steps or share run out, unless the request's stop
    rule ends them at the answer, as the engine does. Branch k's tokens have confidence
    `confidences[k % len]` (reported when the rule asks); a branch under the rule's
    `cut_below` is cut after its first step (or its `cut_after`-th), as the engine cuts a
    weak trace.
    """

    def __init__(self, answers=("42", "42", "41", "42", "7"), depth: int = 3, step_tokens: int = 5,
                 loops: frozenset[int] = frozenset(), chatter: frozenset[int] = frozenset(),
                 stops_at_answer: bool = True, confidences=(10.0,), reverse_report: bool = False,
                 cut_after: int = 1) -> None:
        self.cut_after = cut_after  # the step of a weak branch at which the cut comes
        self.reverse_report = reverse_report  # report each round's steps last request first, as
        # an engine reports steps in the order they finish, not in request order
        self.confidences = list(confidences)
        self.answers = list(answers)
        self.stops_at_answer = stops_at_answer  # False: an engine that writes on past an answer
        self.loops = loops
        self.chatter = chatter
        self.depth = depth
        self.step_tokens = step_tokens
        self.calls: list[int] = []  # batch size of every expand call
        self.released = 0
        self.counter = 0

    def root(self, problem: str, system: str | None = None) -> FakeState:
        return FakeState(0, -1)

    def follow_up(self, text: str) -> str:
        return f"[turn] {text}\n\n"

    def _step(self, i: int, parent: FakeState, prefix: str, answer_stop: bool = False) -> StepResult:
        new_turn = prefix.startswith("[turn]")  # a revision samples afresh, like a new branch
        branch = parent.branch if parent.branch >= 0 and not new_turn else self.counter
        if parent.branch < 0 or new_turn:
            self.counter += 1
        if new_turn:
            parent = FakeState(0, branch)
        depth = parent.depth + 1
        ans = self.answers[branch % len(self.answers)]
        last = depth >= self.depth and branch not in self.loops
        toks = list(range(self.step_tokens))
        lps = [-0.1 * (1 + branch % 3)] * self.step_tokens
        if branch in self.chatter and depth >= self.depth:
            if depth == self.depth:
                text = f"So the answer is \\boxed{{{ans}}}" + ("" if answer_stop else ".\n\n")
                finish = "stop" if answer_stop else "delimiter"
            else:
                text, finish = "```python\nprint(x)\n```\n\n", "delimiter"
            return StepResult(i, text, toks, lps, finish, FakeState(depth, branch), forced=prefix)
        text = f"The answer is \\boxed{{{ans}}}." if last else f"Step {depth} of branch {branch}.\n\n"
        return StepResult(i, text, toks, lps, "eos" if last else "delimiter", FakeState(depth, branch), forced=prefix)

    def expand(self, requests, *, budget, should_stop, on_step):
        self.calls.append(len(requests))
        out = [[] for _ in requests]
        states = [r.parent for r in requests]
        live = list(range(len(requests)))
        spent = 0
        steps_done = [0] * len(requests)
        used = [0] * len(requests)
        while live:
            nxt = []
            reports = []
            for i in live:
                if should_stop():
                    continue
                if spent + self.step_tokens > budget:
                    res = StepResult(i, "", [], [], "budget", states[i], ended=True)
                    out[i].append(res)
                    reports.append(res) if self.reverse_report else on_step(res)
                    continue
                rule = requests[i].stop
                res = self._step(i, states[i], requests[i].prefix if not out[i] else "",
                                 rule.answer_stop and self.stops_at_answer)
                conf = self.confidences[res.handle.branch % len(self.confidences)]
                if rule.conf_top_k or rule.cut_below is not None:
                    res.confidences = [conf] * len(res.tokens)
                weak = rule.cut_below is not None and conf < rule.cut_below
                if weak and not res.done and steps_done[i] + 1 >= self.cut_after:
                    res.finish = "cut"
                spent += len(res.tokens)
                used[i] += len(res.tokens)
                cap = requests[i].stop.max_total
                if cap is not None and used[i] >= cap and res.finish == "delimiter":
                    res.finish = "length"  # the branch's share is spent
                steps_done[i] += 1
                goes_on = res.finish == "delimiter" and steps_done[i] < rule.max_steps
                res.ended = not goes_on
                states[i] = res.handle
                out[i].append(res)
                reports.append(res) if self.reverse_report else on_step(res)
                if goes_on:
                    nxt.append(i)
            for res in reversed(reports):
                on_step(res)
            live = nxt
        return out

    def release(self, state) -> None:
        self.released += 1

    def compare(self, problem, pairs):
        """The judge prefers the solution whose answer is `self.truth` (else 50/50)."""
        self.compared = getattr(self, "compared", []) + [len(pairs)]
        truth = getattr(self, "truth", "42")

        def good(text):
            return f"{{{truth}}}" in text

        return [0.9 if good(a) and not good(b) else 0.1 if good(b) and not good(a) else 0.5 for a, b in pairs]

    def stats(self) -> dict[str, float]:
        return {"calls": len(self.calls)}


class FakeScorer:
    """Scores by branch: branch b scores 1 / (1 + b % 3)."""

    name = "fake"

    def score(self, search, nodes):
        return [1.0 / (1 + max(n.state.branch, 0) % 3) if n.state is not None else 0.0 for n in nodes]


class SlowFakeGenerator(FakeGenerator):
    """Like FakeGenerator, but each step takes `delay` seconds and honours cancel mid-call."""

    def __init__(self, delay: float = 0.0, hold=None, **kw) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.hold = hold  # an Event: while unset, each step after the first waits (a run surely still going)
        self._steps = 0

    def _step(self, i, parent, prefix, answer_stop=False):
        import time

        if self.delay:
            time.sleep(self.delay)
        self._steps += 1
        while self.hold is not None and self._steps > 1 and not self.hold.is_set():
            time.sleep(0.01)
        return super()._step(i, parent, prefix, answer_stop)


class FakeRunner:
    """The TUI's Runner protocol over the scripted generator (no model)."""

    def __init__(self, delay: float = 0.0, answers=("42", "42", "41", "42", "7"), depth: int = 3) -> None:
        self.delay = delay
        self.answers = answers
        self.depth = depth
        self.requests = []

    def models(self):
        return [("fake-model", True), ("absent-model", False)]

    def run(self, req, listener, cancel, status):
        from tts_tui.search.run import Search
        from tts_tui.search.strategies import run_strategy
        from tts_tui.verify.answers import MathAnswers

        self.requests.append(req)
        status(f"running {req.strategy}")
        gen = SlowFakeGenerator(self.delay, hold=self._hold(cancel), answers=self.answers, depth=self.depth)
        search = Search(gen, req.problem, req.params, MathAnswers(), FakeScorer(), listener, cancel)
        try:
            return run_strategy(req.strategy, search), search
        finally:
            import time

            self.finished_at = time.monotonic()

    def _hold(self, cancel):
        """No hold: runs go at the generator's pace."""
        return None

    def model_name(self):
        return "fake-model"

    def close(self):
        pass


class TrackingFakeRunner(FakeRunner):
    """A FakeRunner that records how runs overlap (for the one-run-at-a-time tests).

    - `max_inside`: the most runs that were inside run() at once (1 when runs never overlap);
    - a run whose request names another model "unloads" the loaded one first, as the real
      runner does; `closed_under_run` counts unloads and close() calls made while another
      run was inside run() (a model freed under a decoding thread);
    - `emitted[k]`: every event run k passed to its listener (by identity), `searches[k]` its search;
    - `linger`: seconds a run spends after its search returns (the engine's clean-up), so an
      overlap is not down to luck; `fail`: an exception run() raises instead of searching;
    - `hold_first`: the first run's steps wait until it is cancelled, so a test that needs it
      still going later does not race the clock on a loaded machine.
    """

    def __init__(self, delay: float = 0.0, linger: float = 0.0, fail: Exception | None = None,
                 hold_first: bool = False, **kw) -> None:
        import threading

        super().__init__(delay, **kw)
        self.linger = linger
        self.fail = fail
        self.hold_first = hold_first
        self._guard = threading.Lock()
        self.inside = 0
        self.max_inside = 0
        self.closed_under_run = 0
        self.unloads = 0
        self.loaded = None
        self.emitted: list[list] = []
        self.searches: list = []

    def _hold(self, cancel):
        return cancel if self.hold_first and len(self.requests) == 1 else None

    def run(self, req, listener, cancel, status):
        import time

        with self._guard:
            self.inside += 1
            self.max_inside = max(self.max_inside, self.inside)
        try:
            if req.model != self.loaded:
                if self.loaded is not None:
                    self._unload(others=1)
                self.loaded = req.model
            if self.fail is not None:
                raise self.fail
            events: list = []
            self.emitted.append(events)

            def listen(e):
                events.append(e)
                listener(e)

            result, search = super().run(req, listen, cancel, status)
            self.searches.append(search)
            time.sleep(self.linger)
            return result, search
        finally:
            with self._guard:
                self.inside -= 1

    def _unload(self, others: int) -> None:
        with self._guard:
            self.unloads += 1
            if self.inside > others:
                self.closed_under_run += 1

    def close(self):
        self._unload(others=0)
