"""The engine as the search layer's `Generator`: prompts in, steps out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tts_tui.engine.branches import BranchEngine, BranchRequest, Handle
from tts_tui.search.protocol import Expand

JUDGE_SYSTEM = "You are a careful math teacher who checks solutions."
JUDGE_QUESTION = "Which solution is correct, A or B? Answer with a single letter."

SYSTEM_PROMPT = (
    "Solve the problem step by step. Write each step as a short paragraph and separate "
    "steps with a blank line. Put the final answer within \\boxed{}."
)


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
        orders (averaged, which cancels the judge's position bias), one batched decode."""
        import math

        model = self.engine.model
        letter_a = model.tokenize("A", add_special=False, parse_special=False)[0]
        letter_b = model.tokenize("B", add_special=False, parse_special=False)[0]
        handles = []
        try:
            for a, b in pairs:
                for first, second in ((a, b), (b, a)):
                    user = (f"Problem: {problem}\n\nSolution A:\n{first.strip()}\n\n"
                            f"Solution B:\n{second.strip()}\n\n{JUDGE_QUESTION}")
                    toks = self.engine.model.chat_tokens(
                        [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}])
                    handles.append(self.engine.prefill(toks))
                    handles[-1].pinned = False
            lps = self.engine.next_token_logprobs(handles, [[letter_a, letter_b]] * len(handles))
        finally:
            for h in handles:
                self.engine.release(h)
        out = []
        for k in range(len(pairs)):
            (a1, b1), (a2, b2) = lps[2 * k], lps[2 * k + 1]
            p_first = math.exp(a1) / (math.exp(a1) + math.exp(b1))  # A shown first
            p_second = math.exp(b2) / (math.exp(a2) + math.exp(b2))  # A shown second, as "B"
            out.append((p_first + p_second) / 2)
        return out

    def follow_up(self, text: str) -> str:
        # Render a conversation around a marker and keep what the template puts after
        # the assistant's text: the end of its turn, the user turn, the next assistant turn.
        mark = "\u2063ATTEMPT\u2063"
        msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": "Q"},
                {"role": "assistant", "content": mark}, {"role": "user", "content": text}]
        full = self.engine.model.render_chat(msgs, add_generation_prompt=True)
        if mark not in full:
            return f"\n\n{text}\n\n"  # a template that drops assistant text: plain continuation
        return full[full.index(mark) + len(mark):]

    def release(self, state: Any) -> None:
        if isinstance(state, Handle):
            self.engine.release(state)

    def stats(self) -> dict[str, float]:
        return self.engine.stats.as_dict()
