"""The engine as the search layer's `Generator`: prompts in, steps out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tts_tui.engine.branches import BranchEngine, BranchRequest, Handle
from tts_tui.search.protocol import Expand

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
                prefix=tuple(model.tokenize(r.prefix, add_special=False, parse_special=False)) if r.prefix else (),
                keep_kv=r.keep,
            )
            for r in requests
        ]
        return self.engine.generate(reqs, token_budget=budget, should_stop=should_stop, on_step=on_step)

    def release(self, state: Any) -> None:
        if isinstance(state, Handle):
            self.engine.release(state)

    def stats(self) -> dict[str, float]:
        return self.engine.stats.as_dict()
