"""Per-branch sampling and stopping rules, and llama.cpp sampler chains built from them."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
    """

    delimiter: str | None = "\n\n"
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    max_steps: int = 1
    max_total: int | None = None
    answer_stop: bool = False


_OPEN_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "Final Answer: 18" up to the end of its line; the marker alone ("**Final Answer:**",
# then a display formula on the next lines) is not an answer yet.
_FINAL_LINE = re.compile(r"final answer(?:\s+is)?\s*\**\s*:\**(?P<rest>[^\n]*)\n", re.I)
_ANSWER_CHAR = re.compile(r"[0-9A-Za-z]")


def answer_complete(text: str) -> bool:
    """True when `text` ends a final answer: its last \\boxed{...} has closed, or a
    "Final Answer: ..." line with something in it has ended (and no box is left open)."""
    opens = list(_OPEN_BOX.finditer(text))
    if opens:
        depth, i = 1, opens[-1].end()
        while i < len(text) and depth:
            depth += (text[i] == "{") - (text[i] == "}")
            i += 1
        return depth == 0 and bool(text[opens[-1].end() : i - 1].strip())
    for m in _FINAL_LINE.finditer(text):
        rest = m.group("rest").replace("\\[", "").replace("\\(", "").replace("$", "")
        if _ANSWER_CHAR.search(rest):
            return True
    return False
