"""Per-branch sampling and stopping rules, and llama.cpp sampler chains built from them."""

from __future__ import annotations

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
    """

    delimiter: str | None = "\n\n"
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    max_steps: int = 1
    max_total: int | None = None
