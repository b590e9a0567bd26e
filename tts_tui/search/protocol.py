"""What a strategy needs from the layers around it, as structural protocols.

A strategy talks to a `Generator` (a backend: the llama.cpp engine in process, an
OpenAI-compatible server, or a scripted fake in tests; see `backends/protocol.py`), a
`Scorer` (a verifier) and `Answers` (extraction and equivalence). The verify layer and
the backends implement these; the search layer imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tts_tui.backends.protocol import Expand, Generator, SamplingParams, StepResult, StopRule

__all__ = ["AdaptiveParams", "Answers", "Expand", "Generator", "SamplingParams", "Scorer", "SearchParams",
           "StepResult", "StopRule"]

if TYPE_CHECKING:
    from tts_tui.search.run import Search
    from tts_tui.search.tree import Node


class Scorer(Protocol):
    """Scores the last step of each node's path, in [0, 1]."""

    name: str

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]: ...


class Answers(Protocol):
    def extract(self, text: str) -> str | None: ...

    def equivalent(self, a: str, b: str) -> bool: ...


@dataclass
class AdaptiveParams:
    """Adaptive votes: sample in waves of `wave` and stop once P(the leader holds) >=
    `stop_at` (N is then the most samples drawn). `cut`: DeepConf online, traces after the
    first wave whose `window`-token confidence falls below the floor the first wave set
    (its `keep` quantile) are cut and do not vote."""

    stop_at: float = 0.95
    wave: int = 4  # the batch that keeps decoding efficient here: the README's wave figures (bench/waves.py)
    cut: bool = False
    keep: float = 0.9
    window: int = 32


@dataclass
class SearchParams:
    """One run's knobs. N = total generations/beams; M = expansions per kept beam."""

    n: int = 8
    m: int = 4
    budget: int = 8192  # generated tokens for the whole run: a hard cap
    temperature: float = 0.3  # measured on gsm8k_dev: T=0.7 halves the 1.5B coder's pass@1
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0
    max_steps: int = 24  # paragraphs per solution; Qwen writes 10-20 on GSM8K
    step_tokens: int = 256  # tokens per step at most
    aggregate: str = "last"  # step-score aggregation: last | min | prod | mean
    min_think: int = 256  # keep-thinking: tokens before an end is accepted
    max_waits: int = 2
    revise_context_chars: int = 6000  # earlier attempts kept in a revision prompt
    adaptive: AdaptiveParams | None = None  # None: every vote spends its whole N
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The knobs as JSON-able data (a run record's settings, an eval's fingerprint)."""
        a = self.adaptive
        return {**self.__dict__, "adaptive": None if a is None else dict(a.__dict__)}

    @property
    def share(self) -> int:
        """One full sample's tokens at most: budget / N. A sample that loops ("0.000...")
        ends unanswered at its share instead of eating the others' budget."""
        return max(1, self.budget // max(1, self.n))

    def sampling(self, k: int = 0, temperature: float | None = None) -> SamplingParams:
        t = self.temperature if temperature is None else temperature
        return SamplingParams(temperature=t, top_p=self.top_p, top_k=self.top_k, seed=self.seed * 100003 + k)
