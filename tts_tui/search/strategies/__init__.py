"""Strategies: each is `run(search) -> Result`, spending search.params.budget at most."""

from __future__ import annotations

from collections.abc import Callable

from tts_tui.errors import InputError
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Result, Search
from tts_tui.search.strategies import auto, beam, bracket, keep_thinking, mcts, revise, sampling

Strategy = Callable[[Search], Result]

STRATEGIES: dict[str, tuple[Strategy, str]] = {
    "cot": (sampling.cot, "one greedy chain of thought"),
    "best-of-n": (sampling.best_of_n, "N full samples; the verifier picks one"),
    "majority": (sampling.majority, "N full samples; the most common answer wins"),
    "weighted": (sampling.weighted, "N full samples; verifier scores summed per answer"),
    "beam": (beam.beam_search, "keep the N/M best partial solutions, expand each M times per step"),
    "dvts": (beam.dvts, "N/M independent subtrees, each keeps its best of M per step"),
    "mcts": (mcts.mcts, "Monte Carlo tree search: UCT selection, verifier values"),
    "keep-thinking": (keep_thinking.keep_thinking, "budget forcing: 'Wait,' when it stops too soon"),
    "revise": (revise.revise, "N/M chains of M attempts; each revises the previous ones"),
    "bracket": (bracket.bracket, "N candidates in a knockout tournament judged pairwise"),
    "auto": (auto.auto, "estimate difficulty, then pick the strategy and N"),
}

# Votes that can draw their samples in waves and stop once decided (--adaptive).
ADAPTIVE = ("majority", "weighted", "bracket", "auto")

# Strategies where N/M sets the number of kept beams or subtrees.
NEEDS_M_DIVIDES_N = {"beam", "dvts", "revise"}
USES_M = NEEDS_M_DIVIDES_N | {"mcts", "auto"}


def validate(strategy: str, p: SearchParams) -> None:
    """Raise InputError (one line) for impossible settings."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (choose from: {', '.join(STRATEGIES)})")
    if not 1 <= p.n <= 256:
        raise InputError(f"N must be between 1 and 256, got {p.n}")
    if strategy in USES_M and not 1 <= p.m <= p.n:
        raise InputError(f"M must be between 1 and N ({p.n}), got {p.m}")
    if strategy in NEEDS_M_DIVIDES_N and p.n % p.m:
        raise InputError(f"{strategy}: M ({p.m}) must divide N ({p.n}): N/M beams are kept")
    if p.budget < 16:
        raise InputError(f"the token budget must be at least 16, got {p.budget}")
    if not 0 <= p.temperature <= 5:
        raise InputError(f"temperature must be between 0 and 5, got {p.temperature}")
    if not 0 < p.top_p <= 1:
        raise InputError(f"top-p must be in (0, 1], got {p.top_p}")
    if p.max_steps < 1:
        raise InputError(f"max steps must be at least 1, got {p.max_steps}")
    if p.adaptive is not None:
        _validate_adaptive(strategy, p)


def _validate_adaptive(strategy: str, p: SearchParams) -> None:
    a = p.adaptive
    assert a is not None
    if strategy not in ADAPTIVE:
        raise InputError(f"--adaptive works with {', '.join(ADAPTIVE)}, not {strategy}")
    if not 0.5 < a.stop_at < 1:  # at 0.5 or less a tie (P = 0.5) would stop on a coin's answer
        raise InputError(f"--stop-at must be above 0.5 and below 1 (a probability beyond a tie), got {a.stop_at}")
    if a.wave < 1:
        raise InputError(f"--wave must be at least 1, got {a.wave}")
    if not 0 < a.keep <= 1:
        raise InputError(f"the share of traces the cut keeps must be in (0, 1], got {a.keep}")
    if a.window < 1:
        raise InputError(f"the confidence window must be at least 1 token, got {a.window}")


def run_strategy(strategy: str, search: Search) -> Result:
    validate(strategy, search.params)
    return STRATEGIES[strategy][0](search)
