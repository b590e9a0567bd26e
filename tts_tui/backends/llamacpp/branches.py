"""The batched multi-branch generator on llama.cpp's low-level API.

Invariants that make forking cheap:
- A `Handle` is a point in the tree: the full token path from the prompt's first
  token to the end of a step. Its KV lives in one sequence of a unified KV cache
  and covers positions [0, len(tokens) - 1): the last token is *pending*, decoded
  by whoever grows from the handle. So N children of one handle copy its sequence
  (`llama_memory_seq_cp`, which only tags cells in a unified cache) and each decodes
  the pending token in its own sequence: the shared prefix is never decoded twice.
- Every decoding step puts the next token of every live branch into one batch, one
  `llama_decode` call for all of them.
- Sequence ids are a pool. A handle whose KV is not kept (or was evicted under
  pressure) can still be grown from: its missing tokens are re-decoded on top of
  the longest cached ancestor.
- The KV cache's cells are shared by every sequence. llama.cpp does not say how many
  are free, so the engine counts them (`free_cells`): each sequence remembers which
  runs of cells it shares with the sequences it was copied from.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import llama_cpp as L
import numpy as np

from tts_tui.backends.llamacpp.backend import default_threads
from tts_tui.backends.llamacpp.model import LlamaModel
from tts_tui.backends.protocol import SamplingParams, StopRule, answer_complete
from tts_tui.errors import ContextOverflowError, ModelError

FINISH_DELIMITER = "delimiter"  # the step ended at the step delimiter; the branch can go on
FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTEXT = "context"  # context window or KV cache full
FINISH_BUDGET = "budget"
FINISH_CANCELLED = "cancelled"
FINISH_CUT = "cut"  # its confidence fell below the rule's floor: a weak trace, ended early
TokenStats = tuple  # (confidence, entropy, self-certainty) of one sampled token; None where not asked
NO_STATS: TokenStats = (None, None, None)
DONE_REASONS = {FINISH_EOS, FINISH_STOP}  # the model ended the solution itself


def make_sampler(params: SamplingParams, model: LlamaModel | None = None) -> Any:
    """A llama.cpp sampler chain: the vocabulary loop runs in C, not Python."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if params.ban_eos and model is not None:
        eog = [t for t in (model.eos, int(L.llama_vocab_eot(model.vocab))) if t >= 0]
        biases = (L.llama_logit_bias * len(eog))(*[L.llama_logit_bias(t, float("-inf")) for t in eog])
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(model.n_vocab, len(eog), biases))
    if params.temperature <= 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
    if 0 < params.top_p < 1:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))
    return chain


class Handle:
    """An opaque point in the tree the engine can grow from."""

    __slots__ = ("tokens", "seq", "last_used", "pinned", "id", "finished")
    _ids = itertools.count()

    def __init__(self, tokens: tuple[int, ...], seq: int | None, finished: bool = False) -> None:
        self.tokens = tokens
        self.seq = seq
        self.last_used = time.monotonic()
        self.pinned = False
        self.finished = finished
        self.id = next(self._ids)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Handle(id={self.id}, len={len(self.tokens)}, seq={self.seq})"


@dataclass
class BranchRequest:
    """Grow one new branch from `parent`; `prefix` tokens are forced before sampling."""

    parent: Handle
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: StopRule = field(default_factory=StopRule)
    prefix: tuple[int, ...] = ()
    keep_kv: bool = True  # keep the end node's KV to grow from it later
    tag: Any = None


@dataclass
class StepOutput:
    """One step of one branch: text up to the delimiter (inclusive) or the end."""

    request: int
    text: str
    tokens: list[int]
    logprobs: list[float]
    finish: str
    handle: Handle
    forced: str = ""  # text of the request's forced prefix (first step only)
    seconds: float = 0.0
    ended: bool = False  # the branch ends with this step (whatever the finish says)
    confidences: list[float] = field(default_factory=list)  # per token, when the rule asks
    entropies: list[float] = field(default_factory=list)  # per token, when the rule captures
    certainties: list[float] = field(default_factory=list)  # self-certainty per token, when it captures
    hidden: Any = None  # the state that predicted the step's last token (captured: the engine's layer), or None

    @property
    def done(self) -> bool:
        """The model ended the solution itself (end of sequence or a stop string)."""
        return self.finish in DONE_REASONS


@dataclass
class EngineStats:
    """Token accounting for one engine (cumulative)."""

    prompt_tokens: int = 0  # shared prefixes decoded once
    fork_tokens: int = 0  # pending tokens each new branch decodes in its own sequence
    forced_tokens: int = 0
    rehydrated_tokens: int = 0  # re-decoded after a handle's KV was dropped
    generated_tokens: int = 0
    decode_calls: int = 0
    decode_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Cells:
    """The KV cells one sequence holds. A run of cells is named by the allocation that
    decoded it (a segment); seq_cp shares whole runs, so a run's cells in use are its
    start up to the furthest end any holder has reached."""

    inherited: tuple[tuple[int, int, int], ...]  # (segment, start, end) shared by seq_cp
    own: int  # the segment this sequence decodes itself
    start: int  # the first position of its own segment


@dataclass
class _Branch:
    req_index: int
    req: BranchRequest
    seq: int
    pos: int  # position of the first queued token
    queue: list[int]  # tokens to decode before the next sample
    path: list[int]  # full token path (parent's + this branch's)
    sampler: Any
    step_tokens: list[int] = field(default_factory=list)
    step_logprobs: list[float] = field(default_factory=list)
    step_bytes: bytearray = field(default_factory=bytearray)
    steps: list[StepOutput] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    forced_text: str = ""
    live: bool = True
    fed: int = 0  # tokens of `queue` put into the current batch
    generated: int = 0  # tokens sampled in this generate() call
    fences: int = 0  # code fences in the branch's earlier steps (odd: a step starts in code)
    step_conf: list[float] = field(default_factory=list)
    step_ent: list[float] = field(default_factory=list)
    step_cert: list[float] = field(default_factory=list)
    hidden: Any = None  # the state at the last token decoded (it predicted the newest token)
    window: deque = field(default_factory=deque)  # the last cut_window token confidences
    window_sum: float = 0.0


class BranchEngine:
    """A llama.cpp context made for tree search over one model."""

    def __init__(
        self,
        model: LlamaModel,
        n_ctx: int = 8192,
        n_seq_max: int = 64,
        n_batch: int = 512,
        n_threads: int | None = None,
        hidden_layer: int | None = None,
    ) -> None:
        """`hidden_layer`: the layer whose output a captured state is (None: the final-norm
        state, through llama.cpp's embeddings); a probe reads the layer it was trained on."""
        self.model = model
        n_ctx = min(n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else n_ctx
        n_seq_max = min(n_seq_max, int(L.llama_max_parallel_sequences()))
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        params.kv_unified = True  # one cache for all sequences: seq_cp shares cells, no copy
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self.hidden_layer = hidden_layer
        self._tap = None
        if hidden_layer is not None:
            from tts_tui.backends.llamacpp.tap import LayerTap, layer_refusal, unsupported

            why = layer_refusal(model.path.name, hidden_layer, model.n_layer)
            if why:
                raise ModelError(why)
            why = unsupported(model.ptr)
            if why:
                raise ModelError(f"{model.path.name} is {why}: its layers cannot be read (use --layer final)")
            self._tap = LayerTap(hidden_layer, model.n_embd)
            params.cb_eval, params.cb_eval_user_data = self._tap.callback, None
        self.ctx = L.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.n_ctx = int(L.llama_n_ctx(self.ctx))
        self.n_seq_max = int(L.llama_n_seq_max(self.ctx))
        # llama.cpp may clamp n_batch (to n_ctx): a larger batch aborts the process.
        self.n_batch = min(n_batch, int(L.llama_n_batch(self.ctx)), int(L.llama_n_ubatch(self.ctx)))
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.stats = EngineStats()
        self._free_seqs = list(range(self.n_seq_max - 1, -1, -1))
        self._cached: dict[int, Handle] = {}  # seq -> handle that owns it
        self._busy: set[int] = set()  # seqs in use by the running generate()
        self._lse_buf = np.empty((0, model.n_vocab), dtype=np.float32)
        self._cells: dict[int, _Cells] = {}  # seq -> the cells it holds (see free_cells)
        self._segments = itertools.count()

    # -- sequence pool ----------------------------------------------------------
    def _alloc_seq(self) -> int:
        if not self._free_seqs:
            self._evict_one()
        return self._free_seqs.pop()

    def _alloc_from(self, base: Handle | None) -> int:
        """A new sequence holding `base`'s KV (shared cells); empty if base is None."""
        if base is None:
            seq = self._alloc_seq()
            self._cells[seq] = _Cells((), next(self._segments), 0)
            return seq
        assert base.seq is not None
        protected = base.seq not in self._busy
        self._busy.add(base.seq)  # eviction must not take the copy's source
        seq: int | None = None
        try:
            seq = self._alloc_seq()
            L.llama_memory_seq_cp(self.mem, base.seq, seq, -1, -1)
            src = self._cells[base.seq]
            end = len(base.tokens) - 1  # a handle's KV stops before its pending token
            self._cells[seq] = _Cells((*src.inherited, (src.own, src.start, end)), next(self._segments), end)
        except BaseException:  # a Ctrl-C during the copy: the new sequence goes back
            if seq is not None:
                self._free_seq(seq)
            raise
        finally:
            if protected:
                self._busy.discard(base.seq)
        return seq

    def _lru_victim(self) -> Handle | None:
        """The least recently used cached handle that nobody is decoding or has pinned."""
        victims = [h for s, h in self._cached.items() if s not in self._busy and not h.pinned]
        return min(victims, key=lambda h: h.last_used) if victims else None

    def _evict_one(self) -> None:
        victim = self._lru_victim()
        if victim is None:
            raise ModelError(
                f"more than {self.n_seq_max} live branches: raise n_seq_max or lower N"
            )
        self._drop_kv(victim)

    def _drop_kv(self, handle: Handle) -> None:
        seq = handle.seq
        if seq is None:
            return
        handle.seq = None
        self._cached.pop(seq, None)
        self._free_seq(seq)

    def release(self, handle: Handle) -> None:
        """The caller will not grow from `handle` again: free its sequence."""
        handle.pinned = False
        self._drop_kv(handle)

    def release_all(self) -> None:
        for handle in list(self._cached.values()):
            self._drop_kv(handle)
        L.llama_memory_clear(self.mem, True)

    @property
    def free_sequences(self) -> int:
        return len(self._free_seqs)

    @property
    def free_cells(self) -> int:
        """KV cells no sequence holds, between calls (when every sequence in use belongs
        to a cached handle). A run shared by seq_cp counts once, however many hold it."""
        reach: dict[int, tuple[int, int]] = {}  # segment -> (start, furthest end)
        for seq, handle in self._cached.items():
            cells = self._cells[seq]
            for seg, start, end in (*cells.inherited, (cells.own, cells.start, len(handle.tokens) - 1)):
                if seg not in reach or end > reach[seg][1]:
                    reach[seg] = (start, end)
        return self.n_ctx - sum(max(0, end - start) for start, end in reach.values())

    # -- prompt -------------------------------------------------------------------
    def prefill(self, tokens: Sequence[int], min_new: int = 16) -> Handle:
        """Decode a prompt once; the returned handle is pinned until released."""
        tokens = tuple(tokens)
        if not tokens:
            raise ContextOverflowError("empty prompt")
        if len(tokens) + min_new > self.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens; the context holds {self.n_ctx} "
                f"(and needs room for at least {min_new} new tokens)"
            )
        handle = Handle(tokens, None)
        handle.pinned = True
        self.stats.prompt_tokens += self._ensure_kv(handle)
        return handle

    def _decode_plain(self, seq: int, pos: int, tokens: list[int]) -> None:
        """Decode `tokens` into one sequence in batch-sized chunks, no logits."""
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i : i + self.n_batch]
            b = self.batch
            for j, tok in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = pos + i + j
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = seq
                b.logits[j] = 0
            b.n_tokens = len(chunk)
            rc = self._decode()
            if rc != 0:
                raise ModelError(f"the KV cache is full ({self.n_ctx} tokens): lower N or the budget")

    def _decode(self) -> int:
        """llama_decode the batch; 1 = no room in the KV cache even after evicting."""
        self.stats.decode_calls += 1
        rc = self._timed_decode()
        # No room: drop the least recently used cached handle and retry, one at a time,
        # so recent nodes (the ones a search grows next) keep their KV. A handle whose
        # cells are shared frees none; a refused decode is cheap, so just try again.
        while rc == 1 and (victim := self._lru_victim()) is not None:
            self._drop_kv(victim)
            rc = self._timed_decode()
        if rc not in (0, 1):
            raise ModelError(f"llama_decode failed with code {rc}")
        return rc

    def _timed_decode(self) -> int:
        t0 = time.perf_counter()
        if self._tap is not None and threading.current_thread() is threading.main_thread():
            rc = self._decode_holding_sigint()
        else:
            rc = L.llama_decode(self.ctx, self.batch)
        self.stats.decode_seconds += time.perf_counter() - t0
        if self._tap is not None and self._tap.error is not None:
            error, self._tap.error = self._tap.error, None
            raise error  # raised in the callback: the decode's graph may not have been computed
        return rc

    def _decode_holding_sigint(self) -> int:
        """A tapped decode runs Python at every graph node, where a KeyboardInterrupt would
        be raised inside the callback (and lost in ctypes). Python-level signal handlers
        run on the main thread only: for the decode's length, a Ctrl-C is only noted, and
        raised once the decode has returned."""
        hits: list[int] = []
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:  # installed from C: leave it alone
            return L.llama_decode(self.ctx, self.batch)
        signal.signal(signal.SIGINT, lambda *_: hits.append(1))
        try:
            rc = L.llama_decode(self.ctx, self.batch)
        finally:
            signal.signal(signal.SIGINT, previous)
        if hits:
            raise KeyboardInterrupt
        return rc

    def _best_cached(self, tokens: tuple[int, ...]) -> Handle | None:
        """The cached handle with the longest token path that is a prefix of `tokens`."""
        best: Handle | None = None
        for h in self._cached.values():
            n = len(h.tokens)
            if n <= len(tokens) and (best is None or n > len(best.tokens)) and tokens[:n] == h.tokens:
                best = h
        return best

    # -- generation --------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[BranchRequest],
        *,
        token_budget: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[StepOutput], None] | None = None,
        on_tokens: Callable[[int], None] | None = None,
        logprobs: bool = True,
    ) -> list[list[StepOutput]]:
        """Grow one branch per request, all together; return each branch's steps.

        Stops a branch at its StopRule, at end of sequence, when the context is full,
        when `token_budget` new tokens have been generated in this call (finish
        "budget"), or when `should_stop()` turns true (finish "cancelled"); never raises
        for any of these. `on_step` sees every step as it completes.
        """
        parents: list[Handle] = []
        generated = 0
        branches: list[_Branch] = []
        try:
            for r in requests:  # parents get KV first and stay protected while branches start
                if r.parent.seq is None or r.parent.seq not in self._busy:
                    self.stats.rehydrated_tokens += self._ensure_kv(r.parent)
                    self._busy.add(r.parent.seq)  # type: ignore[arg-type]
                    parents.append(r.parent)
            for i, r in enumerate(requests):  # appended one by one: a failed start frees the others
                branches.append(self._start(i, r, on_step))
            for p in parents:
                self._busy.discard(p.seq)  # type: ignore[arg-type]
            parents = []
            live = [b for b in branches if b.live]
            while live:
                if should_stop is not None and should_stop():
                    self._finish_all(live, FINISH_CANCELLED, on_step)
                    break
                if token_budget is not None and generated + len(live) > token_budget:
                    # A hard cap: only as many branches as tokens remain take a step.
                    room = max(0, token_budget - generated)
                    self._finish_all(live[room:], FINISH_BUDGET, on_step)
                    live = live[:room]
                    if not live:
                        break
                sampled = self._decode_step(live, logprobs)
                if sampled is None:
                    self._finish_all(live, FINISH_CONTEXT, on_step)
                    break
                for b, tok, lp, stats in sampled:
                    generated += 1
                    self._advance(b, tok, lp, on_step, stats)
                if on_tokens is not None:
                    on_tokens(len(sampled))
                live = [b for b in live if b.live]
        finally:
            for p in parents:
                if p.seq is not None:
                    self._busy.discard(p.seq)
            for b in branches:
                L.llama_sampler_free(b.sampler)
                self._busy.discard(b.seq)
                if b.live:  # an exception unwound us: do not leak the sequence
                    self._free_branch_seq(b)
        return [b.steps for b in branches]

    def _start(self, index: int, req: BranchRequest, on_step=None) -> _Branch:
        parent = req.parent
        parent.last_used = time.monotonic()
        seq = self._alloc_from(parent)
        sampler = None
        try:  # until the caller holds the branch, a Ctrl-C must give back what it took
            self._busy.add(seq)
            sampler = make_sampler(req.sampling, self.model)
            forced_text = self.model.detokenize(list(req.prefix)) if req.prefix else ""
        except BaseException:
            if sampler is not None:
                L.llama_sampler_free(sampler)
            self._busy.discard(seq)
            self._free_seq(seq)
            raise
        self.stats.fork_tokens += 1
        self.stats.forced_tokens += len(req.prefix)
        b = _Branch(
            req_index=index,
            req=req,
            seq=seq,
            pos=len(parent.tokens) - 1,
            queue=[parent.tokens[-1], *req.prefix],
            path=list(parent.tokens) + list(req.prefix),
            sampler=sampler,
            fences=int(req.stop.in_code),
        )
        b.forced_text = forced_text
        if len(b.path) + 1 > self.n_ctx:
            # No room for one token: end it like any other branch (its sequence freed,
            # the caller told), never left holding KV cells nobody owns.
            b.req = replace(req, keep_kv=False)
            self._finish(b, FINISH_CONTEXT, on_step)
        return b

    def _ensure_kv(self, handle: Handle) -> int:
        """Give `handle` a sequence holding its KV, decoding what no cached handle has;
        returns how many tokens that took."""
        if handle.seq is not None:
            return 0
        base = self._best_cached(handle.tokens)
        start = len(base.tokens) - 1 if base is not None else 0
        todo = list(handle.tokens[start:-1])
        seq = self._alloc_from(base)
        try:
            handle.seq = seq
            self._cached[seq] = handle
            self._busy.add(seq)  # a full cache must not evict the handle being decoded
            self._decode_plain(seq, start, todo)
        except BaseException:  # a full cache or a Ctrl-C between chunks: never keep half a prefix
            if handle.seq == seq:
                self._drop_kv(handle)
            else:
                self._free_seq(seq)  # interrupted before the handle took it
            raise
        finally:
            self._busy.discard(seq)
        return len(todo)

    def _decode_step(self, live: list[_Branch], want_lp: bool) -> list[tuple[_Branch, int, float, TokenStats]] | None:
        """One llama_decode for every live branch; sample each. None = KV cache full."""
        b = self.batch
        n = 0
        outputs: list[tuple[_Branch, int]] = []  # (branch, batch index of its logits)
        for br in live:
            room = self.n_batch - n
            if room <= 0:
                break
            chunk = br.queue[:room]
            for j, tok in enumerate(chunk):
                b.token[n] = tok
                b.pos[n] = br.pos + j
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = br.seq
                b.logits[n] = 0
                n += 1
            br.fed = len(chunk)
            if len(chunk) == len(br.queue):
                b.logits[n - 1] = 1
                outputs.append((br, n - 1))
        b.n_tokens = n
        rows = self._decode_capturing(n, outputs)
        if rows is False:
            return None
        for br, idx in outputs:
            br.hidden = rows(idx) if rows is not None and br.req.stop.capture else None
        for br in live:
            br.pos += br.fed
            del br.queue[: br.fed]
            br.fed = 0
        toks = [int(L.llama_sampler_sample(br.sampler, self.ctx, idx)) for br, idx in outputs]
        top_k = [br.req.stop.conf_top_k for br, _ in outputs]
        spread = [br.req.stop.capture for br, _ in outputs]
        if want_lp or any(top_k) or any(spread):
            lps, stats = self._logprobs(toks, top_k, spread)
        else:
            lps, stats = [0.0] * len(toks), [NO_STATS] * len(toks)
        return [(br, t, lp, st) for (br, _), t, lp, st in zip(outputs, toks, lps, stats)]

    def _decode_capturing(self, n: int, outputs: list[tuple[_Branch, int]]):
        """Decode the batch, capturing states where an output branch asks: returns a
        function from batch index to state (float32 copy), None where nothing was
        captured, False where the KV cache is full."""
        want = any(br.req.stop.capture for br, _ in outputs)
        if want and self._tap is not None:
            # A middle layer has a row for every batch token: any batch can capture.
            self._tap.active = True
            try:
                rc = self._decode()
            finally:
                self._tap.active = False
                got = self._tap.take()
            if rc != 0:
                return False
            if got is None or got.shape[0] != n:
                # a probe would score states that are not there (or not these tokens')
                raise ModelError(f"layer {self._tap.layer} gave {0 if got is None else got.shape[0]} rows "
                                 f"for a batch of {n}: this model's layers cannot be read (use --layer final)")
            return lambda i: got[i].copy()
        # The final-norm state comes with the logits of the same decode, but only when
        # every token in the batch is an output: with embeddings on, llama.cpp makes every
        # token one, and a fork's or a prefix's extra tokens would each cost a vocabulary
        # projection.
        hidden = want and n == len(outputs)
        if hidden:
            L.llama_set_embeddings(self.ctx, True)
        try:
            if self._decode() != 0:
                return False
        finally:
            if hidden:
                L.llama_set_embeddings(self.ctx, False)
        return self._hidden if hidden else None

    def _hidden(self, idx: int) -> np.ndarray | None:
        """A copy of the final-norm state of batch token `idx` (float32), or None."""
        ptr = L.llama_get_embeddings_ith(self.ctx, idx)
        if not ptr:
            return None
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_embd,)).copy()

    def _logprobs(self, toks: list[int], top_k: list[int] | None = None, spread: list[bool] | None = None
                  ) -> tuple[list[float], list[TokenStats]]:
        """log p(token) under the raw model, for all outputs at once (vectorized); and per
        row, when asked: its token confidence (top_k > 0: minus the mean logprob of its k
        likeliest tokens, DeepConf; high when the distribution is peaked), its entropy and
        its self-certainty (KL from uniform to the distribution; Kang et al. 2025)."""
        n = len(toks)
        if n == 0:
            return [], []
        v = self.model.n_vocab
        rows = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(n, v))
        if self._lse_buf.shape[0] < n:
            self._lse_buf = np.empty((n, v), dtype=np.float32)
        buf = self._lse_buf[:n]
        m = rows.max(axis=1, keepdims=True)
        np.subtract(rows, m, out=buf)
        np.exp(buf, out=buf)
        lse = np.log(buf.sum(axis=1)) + m[:, 0]
        picked = rows[np.arange(n), np.asarray(toks)]
        stats: list[TokenStats] = [NO_STATS] * n
        for i in range(n):
            k = top_k[i] if top_k else 0
            conf = ent = cert = None
            if k > 0:
                top = _top_k(rows[i], k)
                # rounded here, once: the cut, the nodes and a replay from the log all
                # read the very same values
                conf = round(float(lse[i] - top.mean()), 3)
            if spread and spread[i]:
                z = float(buf[i].sum())  # buf holds exp(row - max): p = buf / z
                mean_x = float(np.dot(buf[i], rows[i])) / z
                ent = float(lse[i] - mean_x)
                cert = float(lse[i] - rows[i].mean(dtype=np.float64) - np.log(v))
            stats[i] = (conf, ent, cert)
        return (picked - lse).astype(float).tolist(), stats

    def _advance(self, br: _Branch, tok: int, lp: float, on_step, stats: TokenStats = (None, None, None)) -> None:
        """Take the sampled token into the branch; end the step or branch if a rule says so."""
        model = self.model
        rule = br.req.stop
        self.stats.generated_tokens += 1
        if model.is_eog(tok):
            # The last real token is decoded already; the handle invariant wants it
            # pending, so drop its cell (keeps "Wait," style continuations exact).
            self._finish(br, FINISH_EOS, on_step, uncache_last=True)
            return
        br.generated += 1
        br.step_tokens.append(tok)
        br.step_logprobs.append(lp)
        conf, ent, cert = stats
        if ent is not None:
            br.step_ent.append(ent)
            br.step_cert.append(cert if cert is not None else 0.0)
        if conf is not None:
            br.step_conf.append(conf)
            br.window.append(conf)
            br.window_sum += conf
            if len(br.window) > rule.cut_window:
                br.window_sum -= br.window.popleft()
        br.path.append(tok)
        br.queue.append(tok)
        piece = model.piece(tok)
        br.step_bytes += piece
        tail = bytes(br.step_bytes[-(len(piece) + 16):]).decode("utf-8", "ignore")
        if rule.stop and any(s in tail for s in rule.stop):
            self._finish(br, FINISH_STOP, on_step)
        elif rule.answer_stop and (b"}" in piece or b"\n" in piece) and answer_complete(
                self._step_text(br), in_code=br.fences % 2 == 1):
            self._finish(br, FINISH_STOP, on_step)
        elif rule.cut_below is not None and len(br.window) >= rule.cut_window and (
                br.window_sum / rule.cut_window < rule.cut_below):
            self._finish(br, FINISH_CUT, on_step)
        elif rule.max_total is not None and br.generated >= rule.max_total:
            self._finish(br, FINISH_LENGTH, on_step)
        elif rule.delimiter and rule.delimiter in tail and br.step_bytes.strip():
            self._step_boundary(br, on_step)
        elif len(br.step_tokens) >= rule.max_tokens:
            # A long paragraph (a code block, a table) ends the step, not the solution:
            # cutting the branch here lost whole samples without an answer.
            self._step_boundary(br, on_step, FINISH_LENGTH)
        elif br.pos + len(br.queue) >= self.n_ctx:
            self._finish(br, FINISH_CONTEXT, on_step)

    @staticmethod
    def _step_text(br: _Branch) -> str:
        """The step's text so far, with the forced prefix on a branch's first step
        ("Final Answer: \\boxed{" forced, "18}" sampled, completes an answer)."""
        text = bytes(br.step_bytes).decode("utf-8", "ignore")
        return br.forced_text + text if not br.steps else text

    def _step_boundary(self, br: _Branch, on_step, reason: str = FINISH_DELIMITER) -> None:
        if len(br.steps) + 1 >= br.req.stop.max_steps:
            self._finish(br, reason, on_step)
            return
        self._emit(br, reason, on_step)  # a step ends; the branch goes on

    def _emit(self, br: _Branch, finish: str, on_step, handle: Handle | None = None,
              ended: bool = False) -> StepOutput:
        handle = handle or Handle(tuple(br.path), None, finished=finish in DONE_REASONS)
        out = StepOutput(
            request=br.req_index,
            text=bytes(br.step_bytes).decode("utf-8", "replace"),
            tokens=br.step_tokens,
            logprobs=br.step_logprobs,
            finish=finish,
            handle=handle,
            forced=br.forced_text if not br.steps else "",
            seconds=time.monotonic() - br.started,
            ended=ended,
            confidences=br.step_conf,
            entropies=br.step_ent,
            certainties=br.step_cert,
            hidden=br.hidden,
        )
        br.steps.append(out)
        br.fences += (out.forced + out.text).count("```")
        br.step_tokens, br.step_logprobs, br.step_bytes, br.step_conf = [], [], bytearray(), []
        br.step_ent, br.step_cert = [], []
        br.started = time.monotonic()
        if on_step is not None:
            on_step(out)
        return out

    def _finish(self, br: _Branch, finish: str, on_step, uncache_last: bool = False) -> None:
        br.live = False
        self._busy.discard(br.seq)
        keep = br.req.keep_kv
        handle = Handle(tuple(br.path), None, finished=finish in DONE_REASONS)
        if finish == FINISH_CUT:
            keep = False  # a cut trace is not grown again: its cells go back at once
        if uncache_last:
            L.llama_memory_seq_rm(self.mem, br.seq, len(br.path) - 1, -1)
        elif len(br.queue) != 1:
            keep = False  # more than the pending token is undecoded: the KV does not cover the path
        if keep:
            handle.seq = br.seq
            self._cached[br.seq] = handle
        else:
            self._free_seq(br.seq)
        br.seq = -1
        self._emit(br, finish, on_step, handle, ended=True)

    def _finish_all(self, live: list[_Branch], finish: str, on_step) -> None:
        for br in live:
            if br.live:
                self._finish(br, finish, on_step)

    def _free_seq(self, seq: int) -> None:
        L.llama_memory_seq_rm(self.mem, seq, -1, -1)
        self._cells.pop(seq, None)
        self._free_seqs.append(seq)

    def _free_branch_seq(self, br: _Branch) -> None:
        if br.seq >= 0:
            self._free_seq(br.seq)
            br.seq = -1
        br.live = False

    # -- scoring helpers -------------------------------------------------------------
    def next_token_logprobs(
        self,
        handles: Sequence[Handle],
        token_sets: Sequence[Sequence[int]],
        suffix: Sequence[int] = (),
    ) -> list[list[float]]:
        """For each handle (+ `suffix`), log p(t) for each t in its token set.

        The pending token and the suffix of every handle go into one batch (scratch
        sequences, freed at once): how a judge reads P("Yes") or a PRM P("+"). A suffix
        longer than a batch is decoded ahead in batch-sized chunks, and only each
        handle's last token shares the batch.
        """
        suffix = tuple(suffix)
        tail = 1 + len(suffix) if 1 + len(suffix) <= self.n_batch else 1
        group = max(1, min(self.n_batch // tail, self.n_seq_max // 2))
        results: list[list[float]] = []
        for start in range(0, len(handles), group):
            chunk = handles[start : start + group]
            results.extend(self._score_group(chunk, token_sets[start : start + len(chunk)], suffix, tail))
        return results

    def _score_group(self, handles: Sequence[Handle], token_sets, suffix: tuple[int, ...],
                     tail: int) -> list[list[float]]:
        """Score one group; the last `tail` tokens of each scratch sequence share a batch."""
        held: list[int] = []  # handles' sequences this call marked busy (and must unmark)
        scratch: list[int] = []
        try:
            for h in handles:
                h.last_used = time.monotonic()
                self.stats.rehydrated_tokens += self._ensure_kv(h)
                if h.seq not in self._busy:
                    self._busy.add(h.seq)  # type: ignore[arg-type]
                    held.append(h.seq)  # type: ignore[arg-type]
            for h in handles:  # every lead first: _decode_plain uses the batch too
                seq = self._alloc_from(h)
                scratch.append(seq)
                self._busy.add(seq)
                lead = list((h.tokens[-1], *suffix)[: 1 + len(suffix) - tail])
                if lead:
                    self._decode_plain(seq, len(h.tokens) - 1, lead)
            b = self.batch
            n = 0
            for h, seq in zip(handles, scratch):
                pos0 = len(h.tokens) + len(suffix) - tail
                for j, tok in enumerate((h.tokens[-1], *suffix)[-tail:]):
                    b.token[n] = tok
                    b.pos[n] = pos0 + j
                    b.n_seq_id[n] = 1
                    b.seq_id[n][0] = seq
                    b.logits[n] = 0
                    n += 1
                b.logits[n - 1] = 1
            b.n_tokens = n
            if self._decode() != 0:
                raise ModelError(f"the KV cache is full ({self.n_ctx} tokens) while scoring")
            self.stats.fork_tokens += len(handles)
            self.stats.forced_tokens += len(handles) * len(suffix)
            rows = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(handles), self.model.n_vocab))
            out = []
            for i, toks in enumerate(token_sets):
                row = rows[i].astype(np.float64)
                m = row.max()
                lse = m + np.log(np.exp(row - m).sum())
                out.append([float(row[t] - lse) for t in toks])
            return out
        finally:
            for seq in scratch:
                self._busy.discard(seq)
                self._free_seq(seq)
            for seq in held:  # a failure part-way leaves no handle protected for good
                self._busy.discard(seq)

    def close(self) -> None:
        if getattr(self, "ctx", None):
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None

    def __enter__(self) -> BranchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _top_k(row: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """The k largest logits of a row, exactly. A partial sort of a 150k vocabulary costs
    about 1 ms, 4-8% of a decode step at N=16 on a CPU. The top k lie in the k blocks with
    the largest maxima (a block outside them is beaten by k block maxima, so none of its
    values is in the top k): one pass for the block maxima, then a small sort."""
    v = len(row)
    nb = v // block
    if nb < 4 * k:
        return np.partition(row, v - k)[v - k:]
    head = row[: nb * block].reshape(nb, block)
    best = np.argpartition(head.max(axis=1), nb - k)[nb - k:]
    cand = np.concatenate([head[best].ravel(), row[nb * block:]])
    return np.partition(cand, len(cand) - k)[len(cand) - k:]
