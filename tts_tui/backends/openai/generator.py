"""The search layer's `Generator` over an OpenAI-compatible completions server.

A state is the raw prompt text so far (the chat template rendered once at the root, then
the solution's text): every step continues it with a plain completions call, so a
partial solution continues exactly, and the server's prefix cache makes the resent
prefix cheap. Branches of one call run in parallel requests (the server batches them).
A step ends at the delimiter, sent as a stop string; whether a "stop" was the delimiter
or the end of sequence is read from what the server says (vLLM `stop_reason`, SGLang
`matched_stop`, llama-server's `stop_type` when asked for `verbose`). Tokens are counted
from the server's `usage`; the token ids are kept where it returns them (else -1).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from tts_tui.backends.openai.client import Cancelled, OpenAIClient, RemoteError, count_of
from tts_tui.backends.openai.templates import renderer
from tts_tui.backends.prompts import SYSTEM_PROMPT, follow_up, judge_messages
from tts_tui.backends.protocol import answer_complete
from tts_tui.search.protocol import Expand, StepResult


@dataclass(frozen=True)
class RemoteState:
    text: str  # the whole prompt so far, template included


class RemoteGenerator:
    def __init__(self, client: OpenAIClient, model: str, concurrency: int = 8, template: str | None = None,
                 system: str = SYSTEM_PROMPT) -> None:
        self.client = client
        self.model = model
        self.concurrency = max(1, concurrency)
        self.template = template  # None: the server's own (/apply-template); else ours (templates.renderer)
        self._render = renderer(template) if template else None
        self.system = system
        self.cache_prompt = True  # False: ask llama-server not to reuse its cached prefix
        self.slots = _Slots()  # the server's parallel slots, where it says (shared by every view)
        self._lock = threading.Lock()
        self._usage = {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0, "cached_tokens": 0}
        self._parents: tuple[RemoteGenerator, ...] = ()

    def metered(self) -> RemoteGenerator:
        """This generator with counters of its own (one solve's) that also add to this
        one's: solves running side by side on one server each count only their requests."""
        view = copy.copy(self)
        view._lock = threading.Lock()
        view._usage = dict.fromkeys(self._usage, 0)
        view._parents = (*self._parents, self)
        return view

    def post(self, path: str, body: dict[str, Any], stop: Callable[[], bool] | None = None) -> Any:
        """A request besides the search's steps (a template, a judge's question), within the
        server's slots: its prompt tokens count; its one-token answer is not the search's
        generated tokens."""
        resp = self._send(path, body, stop)
        self._count(resp.get("usage") if isinstance(resp, dict) else None, 0)
        return resp

    def _send(self, path: str, body: dict[str, Any], stop: Callable[[], bool] | None) -> Any:
        with self.slots.hold(stop):
            return self.client.post(path, body, stop=stop)

    # -- prompts ---------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self._render is not None:
            return self._render(messages, add_generation_prompt)
        try:
            out = self.post("/apply-template", {"messages": messages})
        except RemoteError as exc:
            if exc.transient or exc.status not in (400, 404, 405, 501):
                raise  # the server is down or busy: no hint, and a resume runs the problem again
            raise RemoteError(f"{exc}; give the endpoint a template (--template chatml) if the server "
                              "cannot render its own") from None
        if not isinstance(out, dict) or not isinstance(out.get("prompt"), str):
            raise RemoteError("the server's /apply-template answered without a prompt")
        return out["prompt"]

    def root(self, problem: str, system: str | None = None) -> RemoteState:
        return RemoteState(self.render([{"role": "system", "content": system or self.system},
                                        {"role": "user", "content": problem}]))

    def follow_up(self, text: str) -> str:
        return follow_up(self.render, self.system, text)

    # -- growing ------------------------------------------------------------------------
    def expand(self, requests: Sequence[Expand], *, budget: int, should_stop: Callable[[], bool],
               on_step: Callable[[Any], None]) -> list[list[Any]]:
        left = [budget]
        growing = [len(requests)]  # branches not ended yet
        holding = [0]  # branches with a request in flight (their reservation is out of `left`)
        report = threading.Lock()

        def take(n: int) -> int:
            """Reserve up to n tokens of the budget for one request. A request holds its
            max_tokens until the server answers, so when the budget is tight each branch
            gets its share of what the others do not hold, not the first few all of it
            (the engine spends token by token)."""
            with report:
                share = -(-left[0] // max(1, growing[0] - holding[0]))
                got = max(0, min(n, share))
                left[0] -= got
                holding[0] += got > 0
                return got

        def give_back(n: int) -> None:
            """A request's answer came (or it failed): the unused reservation returns."""
            with report:
                left[0] += n
                holding[0] -= 1

        abort = threading.Event()  # a branch failed or the caller was interrupted: all stop

        def stopping() -> bool:
            return abort.is_set() or should_stop()

        def emit(res: StepResult) -> None:
            with report:  # the search's tree is not thread-safe: one step at a time
                if not abort.is_set():  # after an abort the caller no longer reads the tree
                    on_step(res)

        # every branch has its thread, `concurrency` requests in flight at once, in rounds:
        # the branches take turns, as in the engine's batch, instead of the first few
        # finishing before the rest begin
        rounds = _Rounds(len(requests), self.concurrency)

        def grow(i: int) -> list[StepResult]:
            try:
                return self._grow(i, requests[i], take, give_back, emit, stopping, rounds)
            except BaseException:
                abort.set()  # one branch's failure fails the call: the others stop at once
                raise
            finally:
                with report:
                    growing[0] -= 1
                rounds.done(i)

        pool = ThreadPoolExecutor(max_workers=max(1, len(requests)))
        futures = [pool.submit(grow, i) for i in range(len(requests))]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:  # the failure itself at once, not after the branches before it
                if f.exception() is not None:
                    raise f.exception()
            return [f.result() for f in futures]
        except BaseException:
            abort.set()  # Ctrl-C, or a branch's error: nothing more is sent
            raise
        finally:
            # after an abort, requests in flight end in their threads; the caller does not wait
            pool.shutdown(wait=not abort.is_set(), cancel_futures=True)

    def _grow(self, i: int, req: Expand, take, give_back, emit, should_stop, rounds: "_Rounds") -> list[StepResult]:
        rule, s = req.stop, req.sampling
        text = req.parent.text + req.prefix
        forced = req.prefix
        steps: list[StepResult] = []
        used = 0
        window: list[float] = []  # the last cut_window token confidences, across steps
        fences = int(rule.in_code)  # code fences opened before this step (odd: it starts in code)
        while True:
            if should_stop():
                return self._end(steps, i, text, "cancelled", forced, emit)
            want = rule.max_tokens if rule.max_total is None else min(rule.max_tokens, rule.max_total - used)
            # a fresh seed per step: a server re-seeds per request, and one seed for every
            # step would draw the same random numbers at each step's token j
            step_seed = (s.seed * 1_000_003 + len(steps)) % (2**31 - 1)
            end = None
            with rounds.turn(i, should_stop):
                got = 0 if should_stop() else take(want)  # a stop may come while it waits its turn
                if got > 0:
                    n = 0  # a request that fails spent nothing of the budget
                    try:
                        piece, ids, lps, confs, stop_kind, n = self._complete(text, got, s, rule, step_seed,
                                                                              should_stop)
                    except Cancelled:
                        end = "cancelled"  # stopped while retrying or waiting for a slot
                    except RemoteError as exc:
                        if not _context_full(exc):
                            raise
                        end = "context"  # prompt and step no longer fit: the branch ends, as in the engine
                    finally:
                        give_back(got - n)
                else:
                    end = "cancelled" if should_stop() else "budget"
            if end:
                return self._end(steps, i, text, end, forced, emit)
            used += n
            text += piece
            last = len(steps) + 1 >= rule.max_steps
            in_code_before = fences
            fences += ((forced if not steps else "") + piece).count("```")
            # the engine's order, per step instead of per token: a complete answer first, then a
            # stop string, a cut, the end of sequence, the branch's length, then the step's end
            if rule.answer_stop and answer_complete((forced if not steps else "") + piece,
                                                    in_code=in_code_before % 2 == 1):
                finish, ended = "stop", True  # the answer is complete (the server went on to its stop)
            elif stop_kind == "stop":
                finish, ended = "stop", True  # one of the rule's stop strings
            elif rule.cut_below is not None and _falls_below(window, confs, rule.cut_window, rule.cut_below):
                finish, ended = "cut", True  # a weak trace: the server wrote this step, no more
            elif stop_kind == "eos":
                finish, ended = "eos", True
            elif rule.max_total is not None and used >= rule.max_total:
                finish, ended = "length", True
            elif stop_kind == "delimiter":
                finish, ended = "delimiter", last
            else:
                finish, ended = "length", last  # a long step: the branch goes on
            res = StepResult(i, piece, ids, lps, finish, RemoteState(text), forced=forced if not steps else "",
                             ended=ended, confidences=confs)
            steps.append(res)
            emit(res)
            if ended:
                return steps

    def _end(self, steps, i, text, finish, forced, emit) -> list[StepResult]:
        res = StepResult(i, "", [], [], finish, RemoteState(text), forced=forced if not steps else "", ended=True)
        steps.append(res)
        emit(res)
        return steps

    def _complete(self, prompt: str, max_tokens: int, s: Any, rule: Any, seed: int,
                  stop: Callable[[], bool] | None = None):
        stops = ([rule.delimiter] if rule.delimiter else []) + list(rule.stop)
        top = max(1, rule.conf_top_k)  # DeepConf's confidence needs the k likeliest tokens
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens,
                                "temperature": s.temperature, "top_p": s.top_p, "seed": seed, "logprobs": top,
                                "stop": stops, "verbose": True, "return_tokens": True}
        if s.top_k:
            body["top_k"] = s.top_k
        if not self.cache_prompt:
            body["cache_prompt"] = False  # llama-server: evaluate the whole prompt (a measurement's baseline)
        resp = self._send("/v1/completions", body, stop)
        try:
            choice = resp["choices"][0]
            piece = choice["text"]
            finish = choice.get("finish_reason")
            if not isinstance(piece, str):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RemoteError(f"{self.client.shown}: the server's completion had no choices[0].text") from None
        try:  # the rest of a malformed answer is one line too, never a traceback
            usage = resp.get("usage") or {}
            ids, lps = _token_logprobs(choice.get("logprobs"), resp.get("__verbose"))
            confs = _confidences(choice.get("logprobs"), rule.conf_top_k) if rule.conf_top_k else []
            n = count_of(usage.get("completion_tokens")) or len(lps)
            kind, matched = _stop_kind(finish, choice, resp)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise RemoteError(f"{self.client.shown}: the server's completion has malformed logprobs or usage") from None
        self._count(usage, n)
        if kind == "word" and matched is None and not piece:
            kind = "eos"  # nothing written and no stop string named: the model ended
        if kind == "word":
            # a server leaves the stop string out of the text; the engine keeps it (a step ends
            # with its delimiter, a branch with its stop string): put back the one that matched
            which = _which_stop(matched, rule)
            piece += which
            kind = "delimiter" if which and which == rule.delimiter else "stop"
        # a stop string's own tokens are counted in usage but have no logprobs: they stay
        # missing (scored as absent), never padded as certain tokens
        if len(ids) < n:
            ids += [-1] * (n - len(ids))
        return piece, ids[:n], lps[:n], confs[:n], kind, n

    def _count(self, usage: Any, generated: int) -> None:
        """Add one request's counts here and to every generator this one is a view of. A
        malformed `usage` counts as none (the counts inform; the answer itself was read)."""
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("prompt_tokens_details")
        add = {"requests": 1, "prompt_tokens": count_of(usage.get("prompt_tokens")),
               "generated_tokens": generated,
               "cached_tokens": count_of(details.get("cached_tokens") if isinstance(details, dict) else None)}
        self.add_usage(add)

    def add_usage(self, add: dict[str, int]) -> None:
        """Counts from outside the completions (a PRM server's prompt tokens, say)."""
        for gen in (self, *self._parents):
            with gen._lock:
                for k, v in add.items():
                    gen._usage[k] = gen._usage.get(k, 0) + v

    # -- judging, housekeeping -----------------------------------------------------------------
    def compare(self, problem: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(A is correct) per pair from the first token's top logprobs, both orders."""
        asks = [(x, y) for a, b in pairs for x, y in ((a, b), (b, a))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(asks)))) as pool:
            p = list(pool.map(lambda xy: self._judge(problem, *xy), asks))
        return [(p[2 * i] + (1 - p[2 * i + 1])) / 2 for i in range(len(pairs))]

    def _judge(self, problem: str, first: str, second: str) -> float:
        prompt = self.render(judge_messages(problem, first, second))
        resp = self.post("/v1/completions", {"model": self.model, "prompt": prompt, "max_tokens": 1,
                                             "temperature": 0.0, "logprobs": 20})
        top = _first_top_logprobs(_first_choice(resp).get("logprobs"))
        la, lb = top.get("A"), top.get("B")
        if la is None and lb is None:
            return 0.5  # no opinion
        la = la if la is not None else -1e9
        lb = lb if lb is not None else -1e9
        m = max(la, lb)
        return math.exp(la - m) / (math.exp(la - m) + math.exp(lb - m))

    def release(self, state: Any) -> None:
        """Nothing is held: the server's cache is its own to evict."""

    def stats(self) -> dict[str, float]:
        with self._lock:
            return dict(self._usage)


def _confidences(lp: Any, k: int) -> list[float]:
    """Per token, minus the mean logprob of its k likeliest tokens (as the engine computes it,
    rounded alike); the server's top list may be shorter than k."""
    out: list[float] = []
    rows = []
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        rows = [[float(t["logprob"]) for t in (c.get("top_logprobs") or [])] for c in lp["content"]]
    elif isinstance(lp, dict) and isinstance(lp.get("top_logprobs"), list):
        rows = [[float(v) for v in (d or {}).values()] for d in lp["top_logprobs"]]
    for row in rows:
        top = sorted(row, reverse=True)[:k]
        out.append(round(-sum(top) / len(top), 3) if top else 0.0)
    return out


def _falls_below(window: list[float], confs: list[float], size: int, floor: float) -> bool:
    """Push `confs` through the sliding window; True once a full window's mean is below `floor`."""
    for c in confs:
        window.append(c)
        if len(window) > size:
            window.pop(0)
        if len(window) == size and sum(window) / size < floor:
            return True
    return False


class _Rounds:
    """Requests in rounds, as the engine decodes its branches in steps: at most `k` in
    flight, and a branch starts its next request only once every branch still growing has
    started as many as it has. So a tight budget is spent evenly, whatever the order the
    threads happen to run in."""

    def __init__(self, n: int, k: int) -> None:
        self._cond = threading.Condition()
        self._free = k
        self._started = [0] * n
        self._growing = set(range(n))

    @contextmanager
    def turn(self, i: int, stop: Callable[[], bool]) -> Iterator[None]:
        """Wait for branch i's turn; a stop ends the wait (the caller checks it next): a
        branch that never ran (its thread cancelled at an abort) must not hold the others."""
        with self._cond:
            while (self._free <= 0 or self._started[i] > min(self._started[j] for j in self._growing)) \
                    and not stop():
                self._cond.wait(0.1)
            took = self._free > 0 and not stop()
            if took:
                self._free -= 1
                self._started[i] += 1
                self._cond.notify_all()
        try:
            yield
        finally:
            if took:
                with self._cond:
                    self._free += 1
                    self._cond.notify_all()

    def done(self, i: int) -> None:
        with self._cond:
            self._growing.discard(i)
            self._cond.notify_all()


class _Slots:
    """At most the server's parallel slots in flight from this process (all its solves),
    when the server says how many it has (llama-server's /props): a request queued in
    the server would spend its timeout waiting there. Unknown: no limit."""

    def __init__(self) -> None:
        self._sem: threading.Semaphore | None = None
        self.size: int | None = None

    def set(self, n: int | None) -> None:
        if n and n > 0 and self._sem is None:
            self.size, self._sem = n, threading.BoundedSemaphore(n)

    @contextmanager
    def hold(self, stop: Callable[[], bool] | None = None) -> Iterator[None]:
        sem = self._sem
        if sem is None:
            yield
            return
        while not sem.acquire(timeout=0.1):
            if stop is not None and stop():
                raise Cancelled("cancelled while waiting for a server slot")
        try:
            yield
        finally:
            sem.release()


def _stop_kind(finish: str | None, choice: dict[str, Any], resp: dict[str, Any]) -> tuple[str, str | None]:
    """("eos" | "word" (a stop string) | "length", the stop string when the server names it),
    from whatever the server tells."""
    if finish == "length":
        return "length", None
    verbose = resp.get("__verbose") or {}
    if verbose.get("stop_type") in ("eos", "word", "limit"):  # llama-server
        word = verbose.get("stopping_word")
        return {"limit": "length"}.get(verbose["stop_type"], verbose["stop_type"]), word if isinstance(word, str) else None
    if "stop_reason" in choice:  # vLLM: the matched string, a stop token id, or None for EOS
        reason = choice["stop_reason"]
        return ("word", reason) if isinstance(reason, str) else ("eos", None)
    if "matched_stop" in choice:  # SGLang: the matched string, or the EOS token id
        matched = choice["matched_stop"]
        return ("word", matched) if isinstance(matched, str) else ("eos", None)
    return "word", None  # unknown server: a stop after text


def _context_full(exc: RemoteError) -> bool:
    """A refusal because prompt and max_tokens exceed the context (vLLM, llama-server: 400)."""
    text = str(exc).lower()
    return exc.status == 400 and ("context" in text or "maximum" in text and "length" in text)


def _which_stop(matched: str | None, rule: Any) -> str:
    """The stop string a "word" stop matched: the one the server named when it is ours, else
    the delimiter when the rule has no other stop string to confuse it with. A server that
    names none, with both kinds in play, is read as ending the step (the branch goes on, so
    an answer is never taken from a text cut short)."""
    ours = ([rule.delimiter] if rule.delimiter else []) + list(rule.stop)
    if matched in ours:
        return matched
    return rule.delimiter or (rule.stop[0] if len(rule.stop) == 1 else "")


def _token_logprobs(lp: Any, verbose: Any) -> tuple[list[int], list[float]]:
    """Token ids and logprobs from the two shapes servers use."""
    ids: list[int] = []
    lps: list[float] = []
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):  # llama-server (chat-style)
        for t in lp["content"]:
            lps.append(float(t.get("logprob", 0.0)))
            ids.append(int(t["id"]) if isinstance(t.get("id"), int) else -1)
    elif isinstance(lp, dict) and isinstance(lp.get("token_logprobs"), list):  # OpenAI legacy, vLLM
        lps = [float(x) if x is not None else 0.0 for x in lp["token_logprobs"]]
        ids = [-1] * len(lps)
    if isinstance(verbose, dict) and isinstance(verbose.get("tokens"), list) and verbose["tokens"]:
        ids = [int(t) for t in verbose["tokens"]]
    return ids, lps


def _first_top_logprobs(lp: Any) -> dict[str, float]:
    """The first token's top logprobs by token text ({} where the answer has none usable)."""
    try:
        return _first_top(lp)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return {}


def _first_top(lp: Any) -> dict[str, float]:
    if isinstance(lp, dict) and isinstance(lp.get("content"), list) and lp["content"]:
        first = lp["content"][0]
        pairs = [(t.get("token", ""), t["logprob"]) for t in first.get("top_logprobs", [])]
    elif isinstance(lp, dict) and isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:
        pairs = list((lp["top_logprobs"][0] or {}).items())
    else:
        return {}
    # "Yes" and " Yes" are two tokens with one meaning: their probabilities add
    out: dict[str, float] = {}
    for token, logprob in pairs:
        key, v = str(token).strip(), float(logprob)
        out[key] = v if key not in out else max(out[key], v) + math.log1p(math.exp(-abs(out[key] - v)))
    return out


def _first_choice(resp: Any) -> dict[str, Any]:
    choices = resp.get("choices") if isinstance(resp, dict) else None
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}


class RemoteJudge:
    """The self-judge on a server: "Is the last step of this solution correct?", scored as
    P(Yes) / (P(Yes) + P(No)) from the first token's top logprobs. The whole conversation is
    resent (a server exposes no KV to reuse; its prefix cache makes the resent part cheap)."""

    name = "self-judge"

    def __init__(self, gen: RemoteGenerator, question: str) -> None:
        self.gen = gen
        self.question = question

    def score(self, search: Any, nodes: Sequence[Any]) -> list[float]:
        # the solve's own view, where it has one: its judge requests count in its figures
        gen = search.gen if isinstance(getattr(search, "gen", None), RemoteGenerator) else self.gen

        stop = getattr(getattr(search, "cancel", None), "is_set", None)

        def one(node: Any) -> float:
            if stop is not None and stop():
                return 0.5  # cancelled: no opinion, no request
            msgs = [{"role": "system", "content": gen.system},
                    {"role": "user", "content": search.tree.problem},
                    {"role": "assistant", "content": search.tree.path_text(node)},
                    {"role": "user", "content": self.question}]
            try:
                resp = gen.post("/v1/completions", {"model": gen.model, "prompt": gen.render(msgs),
                                                    "max_tokens": 1, "temperature": 0.0, "logprobs": 20}, stop=stop)
            except Cancelled:
                return 0.5
            top = _first_top_logprobs(_first_choice(resp).get("logprobs"))
            yes = [v for k, v in top.items() if k.lower() == "yes"]
            no = [v for k, v in top.items() if k.lower() == "no"]
            p_yes = sum(math.exp(v) for v in yes)
            p_no = sum(math.exp(v) for v in no)
            return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5

        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=min(self.gen.concurrency, len(nodes))) as pool:
            return list(pool.map(one, nodes))
