"""When to stop sampling: the posterior that the leading answer stays the leader, and
DeepConf's floor on a trace's sliding-window confidence.

Adaptive-Consistency (Aggarwal et al. 2023, arXiv 2305.11860) puts a uniform Dirichlet
prior on the answers' shares and stops once P(the leader's share is the largest) passes a
threshold; with two answers that is a Beta tail (4 agreeing samples: 0.969). DeepConf
(Fu et al. 2025, arXiv 2508.15260) cuts a trace whose lowest sliding-window confidence
falls below what the warm-up traces reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DRAWS = 20_000  # Monte Carlo draws for three or more answers (standard error < 0.004)


def leader_holds(masses: Sequence[float], seed: int = 0) -> float:
    """P(the largest of `masses` has the largest share) under Dirichlet(masses + 1).

    `masses` are the answer groups' vote counts (or confidence-weighted counts). One
    answer is read as that answer against all others unseen: Beta(c + 1, 1). No answer
    at all: 0 (nothing leads)."""
    m = sorted((float(x) for x in masses if x > 0), reverse=True)
    if not m:
        return 0.0
    if len(m) == 1:
        m.append(0.0)
    if len(m) == 2:
        return _beta_above_half(m[0] + 1.0, m[1] + 1.0)
    rng = np.random.default_rng(seed)
    shares = rng.gamma(np.asarray(m) + 1.0, size=(DRAWS, len(m)))
    return float(np.mean(shares[:, 0] > shares[:, 1:].max(axis=1)))


def _beta_above_half(a: float, b: float) -> float:
    """P(X > 1/2) for X ~ Beta(a, b): exact by the binomial sum when a and b are whole,
    else by numerical integration of the density (weighted counts are not whole)."""
    if a == int(a) and b == int(b):
        n = int(a + b - 1)  # P(X <= 1/2) = P(Binomial(n, 1/2) >= a)
        tail = sum(math.comb(n, j) for j in range(int(a), n + 1)) / 2.0**n
        return 1.0 - tail
    x = np.linspace(0.5, 1.0, 4001)[1:-1]
    log_pdf = (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    inner = np.exp(log_pdf).sum() * (0.5 / 4000)
    return float(min(1.0, max(0.0, inner)))


# A vote the verifier scores 0 still counts a quarter of a sure one: a verifier may shift
# the stop by 4:1 at most (as bracket trusts its judge), never erase a rival answer.
WEIGHT_FLOOR = 0.25


def normalised(weights: Sequence[float]) -> list[float]:
    """Confidence weights scaled to sum to the number of votes: the posterior then holds
    as much evidence as the count of samples, shared out by confidence (CISC)."""
    weights = [max(w, WEIGHT_FLOOR) for w in weights]
    total = sum(weights)
    if total <= 0:
        return [1.0 for _ in weights]
    return [w * len(weights) / total for w in weights]


def lowest_window(confidences: Sequence[float], window: int) -> float | None:
    """The lowest mean confidence over `window` consecutive tokens (the whole trace's
    mean when it is shorter); None for no tokens."""
    if not confidences:
        return None
    c = np.asarray(confidences, dtype=float)
    if len(c) <= window:
        return float(c.mean())
    sums = np.convolve(c, np.ones(window), mode="valid")
    return float(sums.min() / window)


def cut_floor(lowest: Sequence[float], keep: float) -> float | None:
    """The floor later traces must stay above: the (1 - keep) quantile of the warm-up
    traces' lowest window confidences (keep 0.9: DeepConf-high, a trace weaker than
    nine in ten warm-up traces is cut). None without warm-up traces."""
    if not lowest:
        return None
    return float(np.quantile(np.asarray(lowest, dtype=float), 1.0 - keep))
