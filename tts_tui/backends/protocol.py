"""What a search asks of a backend: grow branches (`Expand`) under sampling and stopping
rules, get steps back (`StepResult`). Every backend implements `Generator`: the llama.cpp
engine in process (`backends/llamacpp`), an OpenAI-compatible server (`backends/openai`).
`answer_complete` is the text rule that ends a branch at its final answer, the same for all."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    """temperature <= 0 means greedy (exact argmax)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0
    ban_eos: bool = False  # never end the branch (benchmarks: equal lengths)


@dataclass(frozen=True)
class StopRule:
    """When a branch's step ends.

    delimiter: the step boundary (a blank line by default); None = no step boundary.
    stop: strings that end the branch (the answer is complete).
    max_tokens: tokens per step at most; a step cut here ends like one at the
      delimiter (finish "length"), and the branch goes on if it has steps left.
    max_steps: steps a branch may take in one generate() call; > 1 continues past
      a delimiter in the same sequence (no barrier between steps).
    max_total: tokens a branch may generate in one generate() call, all steps
      together (None = no limit but the budget). It ends the branch, finish "length".
    answer_stop: end the branch (finish "stop") as soon as its final answer is
      complete (see `answer_complete`): tokens after the answer are never spent, and
      the sample is not lost to a later step that repeats no answer.
    in_code: the branch starts inside a code fence opened earlier on its path, so a
      box before that fence closes is code the model writes, not its answer.
    conf_top_k: report each token's confidence over its k likeliest tokens (0 = off).
    cut_below: end the branch (finish "cut") when the mean confidence of its last
      `cut_window` tokens falls below this (needs conf_top_k): a weak trace stops
      spending tokens, and does not vote.
    capture: report each token's entropy and self-certainty, and each step's hidden
      state (the state that predicted its last token: the engine's layer, or the
      final-norm embedding), for verifiers that learn from them. Free of extra decodes:
      one decode gives logits and states.
    """

    delimiter: str | None = "\n\n"
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    max_steps: int = 1
    max_total: int | None = None
    answer_stop: bool = False
    in_code: bool = False
    conf_top_k: int = 0
    cut_window: int = 32
    cut_below: float | None = None
    capture: bool = False


_OPEN_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "Final Answer: 18" at the start of a line (after markdown), up to the end of its line.
# The marker alone ("**Final Answer:**", the formula on the next lines) is not an
# answer yet, nor is prose that mentions one ("To find the final answer: we add ...").
_FINAL_LINE = re.compile(r"^[ \t>*#_-]*(?:the\s+)?final answer(?:\s+is)?\s*\**\s*:\**(?P<rest>[^\n]*)\n",
                         re.I | re.M)
# What an answer opens with: a number, a formula, a tuple or interval, a choice letter,
# yes/no. A sentence ("The total is 72.", "we need to add 3 and 4") is left to the box or
# the end of the solution: a missed stop costs tokens, a false one loses the sample.
_ANSWER_START = re.compile(r"^(?:[-+]?\.?\d|\\|\(|\[|\{|[A-E](?:\W|$)|(?:yes|no|true|false)\b"
                           r"|[A-Za-z]\s*(?:[=<>]|\\[lg]eq?\b|\\neq\b))", re.I)
# ...and what a finished one cannot end with.
_OPEN_END = re.compile(r"(?:[-+*/^=({\[&,:\\]|\b(?:is|are|and|or|of|to)\b)\s*$", re.I)


def answer_complete(text: str, in_code: bool = False) -> bool:
    """True when `text` ends a final answer: its last \\boxed{...} outside code has
    closed on something, or a "Final Answer: ..." line holding a whole answer has ended.
    `in_code`: the text starts inside a code fence opened earlier."""
    boxes = [m for m in _OPEN_BOX.finditer(text) if not _in_code(text, m.start(), in_code)]
    if boxes:
        state = _box_state(text, boxes[-1].end())
        if state != "empty":  # an empty box is the prompt's "\\boxed{}", quoted back
            return state == "closed"
    return any(_whole_answer(m.group("rest")) for m in _FINAL_LINE.finditer(text))


def _whole_answer(rest: str) -> bool:
    """Is the rest of a "Final Answer:" line a complete answer on its own?"""
    rest = rest.strip(" *.")
    for wrap in ("$", "\\(", "\\)", "\\[", "\\]"):
        rest = rest.replace(wrap, "")
    rest = rest.strip()
    balanced = rest.count("{") == rest.count("}") and rest.count("\\begin") == rest.count("\\end")
    return bool(rest) and balanced and bool(_ANSWER_START.match(rest)) and not _OPEN_END.search(rest)


def _box_state(text: str, start: int) -> str:
    """"open", "empty" or "closed" (on something) for the box whose body starts at `start`."""
    depth, i = 1, start
    while i < len(text) and depth:
        depth += (text[i] == "{") - (text[i] == "}")
        i += 1
    if depth:
        return "open"
    return "closed" if text[start : i - 1].strip() else "empty"


def _in_code(text: str, at: int, in_code: bool = False) -> bool:
    """A box inside a code fence, or escaped as in a string literal
    (`print(f"\\\\boxed{{{ans}}}")`), is code the model writes, not its answer."""
    return (in_code + text.count("```", 0, at)) % 2 == 1 or (at > 0 and text[at - 1] == "\\")


@dataclass
class Expand:
    """Grow one branch from `parent` (an opaque generator state)."""

    parent: Any
    sampling: SamplingParams
    stop: StopRule
    prefix: str = ""  # text forced before sampling ("Wait,")
    keep: bool = True  # keep the end state to grow from later
    template: bool = False  # the prefix is chat-template text (a new turn): its special tokens count


@dataclass
class StepResult:
    """One step of one branch (the llama.cpp engine's StepOutput has the same fields)."""

    request: int
    text: str
    tokens: list[int]
    logprobs: list[float]
    finish: str
    handle: Any
    forced: str = ""
    seconds: float = 0.0
    ended: bool = False  # the branch ends with this step
    confidences: list[float] = field(default_factory=list)  # per token, when asked
    entropies: list[float] = field(default_factory=list)  # per token, when captured
    certainties: list[float] = field(default_factory=list)  # per token, when captured
    hidden: Any = None  # the state that predicted the step's last token, when captured

    @property
    def done(self) -> bool:
        return self.finish in ("eos", "stop")


class Generator(Protocol):
    def root(self, problem: str, system: str | None = None) -> Any: ...

    def expand(
        self,
        requests: Sequence[Expand],
        *,
        budget: int,
        should_stop: Callable[[], bool],
        on_step: Callable[[Any], None],
    ) -> list[list[Any]]: ...

    def release(self, state: Any) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def compare(self, problem: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(solution A is the correct one) for each (A, B), all pairs in one batch."""
        ...

    def follow_up(self, text: str) -> str:
        """Template text that ends the model's turn and asks `text` as a new user turn
        (forced with Expand.template, it continues a conversation on its own KV)."""
        ...
