"""The llama.cpp engine as the search layer's `Generator`: prompts in, steps out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tts_tui.backends.llamacpp.branches import BranchEngine, BranchRequest, Handle
from tts_tui.errors import ModelError
from tts_tui.backends.prompts import SYSTEM_PROMPT, follow_up, judge_messages
from tts_tui.backends.protocol import Expand

# The share of the context a judge group leaves free: slack, should the engine's count
# of free cells ever run ahead of llama.cpp's.
JUDGE_SLACK = 0.03



class LlamaGenerator:
    def __init__(self, engine: BranchEngine, system: str = SYSTEM_PROMPT) -> None:
        self.engine = engine
        self.system = system

    def prompt_tokens(self, problem: str, system: str | None = None) -> list[int]:
        messages = [{"role": "system", "content": system or self.system}, {"role": "user", "content": problem}]
        return self.engine.model.chat_tokens(messages)

    def root(self, problem: str, system: str | None = None) -> Handle:
        return self.engine.prefill(self.prompt_tokens(problem, system))

    def expand(
        self,
        requests: Sequence[Expand],
        *,
        budget: int,
        should_stop: Callable[[], bool],
        on_step: Callable[[Any], None],
    ) -> list[list[Any]]:
        model = self.engine.model
        reqs = [
            BranchRequest(
                parent=r.parent,
                sampling=r.sampling,
                stop=r.stop,
                prefix=tuple(model.tokenize(r.prefix, add_special=False, parse_special=r.template)) if r.prefix else (),
                keep_kv=r.keep,
            )
            for r in requests
        ]
        return self.engine.generate(reqs, token_budget=budget, should_stop=should_stop, on_step=on_step)

    def compare(self, problem: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(A is correct) per pair from next-token logits of "A" vs "B", asked in both
        orders (averaged, which cancels the judge's position bias).

        The prompts are judged in groups that fit the KV cells free at the time, each
        group released before the next, so a long bracket never fills the cache. A pair
        with a prompt the context cannot hold at all gets 0.5, no opinion, rather than
        an error that would lose the whole search: the bracket then decides that match
        by its votes, as it does a match it never asks the judge about.
        """
        model = self.engine.model
        letters = [model.tokenize(x, add_special=False, parse_special=False)[0] for x in ("A", "B")]
        prompts = [self._judge_prompt(problem, x, y) for a, b in pairs for x, y in ((a, b), (b, a))]
        fits = [len(p) < self.engine.n_ctx for p in prompts]  # the prompt and the letter
        asked = [i for i in range(len(prompts)) if fits[i] and fits[i ^ 1]]
        lps: dict[int, list[float]] = {}
        pos = 0
        while pos < len(asked):
            group = self._judge_group(asked[pos:], prompts)
            pos += len(group)
            lps.update(self._judge_safely(group, prompts, letters))
        out = []
        for k in range(len(pairs)):
            if 2 * k not in lps or 2 * k + 1 not in lps:
                out.append(0.5)
                continue
            (a1, b1), (a2, b2) = lps[2 * k], lps[2 * k + 1]
            p_first = math.exp(a1) / (math.exp(a1) + math.exp(b1))  # A shown first
            p_second = math.exp(b2) / (math.exp(a2) + math.exp(b2))  # A shown second, as "B"
            out.append((p_first + p_second) / 2)
        return out

    def _judge_safely(self, group: list[int], prompts: list[list[int]], letters: list[int]) -> dict[int, list[float]]:
        """Judge a group; if the cache cannot hold it (cells pinned by the search's own
        prompts are not free), one prompt at a time; a prompt that fits nowhere gets no
        verdict (its pair is then 0.5)."""
        try:
            return dict(zip(group, self._judge_once([prompts[i] for i in group], letters)))
        except ModelError:
            if len(group) == 1:
                return {}
        out: dict[int, list[float]] = {}
        for i in group:
            out.update(self._judge_safely([i], prompts, letters))
        return out

    def _judge_prompt(self, problem: str, first: str, second: str) -> list[int]:
        return self.engine.model.chat_tokens(judge_messages(problem, first, second))

    def _judge_group(self, todo: list[int], prompts: list[list[int]]) -> list[int]:
        """The next prompts that fit the free KV cells (a prompt's cells and its letter's)
        and sequences (its own and a scratch one), with a margin; at least one, for which
        the engine evicts cached nodes if it must."""
        room = self.engine.free_cells - int(self.engine.n_ctx * JUDGE_SLACK)
        seqs = self.engine.free_sequences // 2
        group = todo[:1]
        room -= len(prompts[todo[0]])
        for i in todo[1:]:
            room -= len(prompts[i])
            if room < 0 or len(group) >= seqs:
                break
            group.append(i)
        return group

    def _judge_once(self, prompts: list[list[int]], letters: list[int]) -> list[list[float]]:
        """Prefill `prompts` (pinned: no prompt of the group evicts another) and read the
        letters' logprobs in one batch; every prompt's KV is freed before returning."""
        handles = []
        try:
            for toks in prompts:
                handles.append(self.engine.prefill(toks, min_new=1))
            return self.engine.next_token_logprobs(handles, [letters] * len(handles))
        finally:
            for h in handles:
                self.engine.release(h)

    def follow_up(self, text: str) -> str:
        return follow_up(lambda msgs: self.engine.model.render_chat(msgs, add_generation_prompt=True),
                         self.system, text)

    def release(self, state: Any) -> None:
        if isinstance(state, Handle):
            self.engine.release(state)

    def stats(self) -> dict[str, float]:
        return self.engine.stats.as_dict()
