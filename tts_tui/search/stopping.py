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
from typing import Any

import numpy as np

DRAWS = 20_000  # Monte Carlo draws for three or more answers (standard error < 0.004)


def leader_holds(masses: Sequence[float], seed: int = 0, leader: int | None = None) -> float:
    """P(answer `leader` has the largest share) under Dirichlet(masses + 1); `leader`
    defaults to the largest mass.

    `masses` are the answer groups' vote counts (or confidence-weighted counts). A vote
    names the group it answers with (the raw-weight leader), which a weighted mass may not
    rank first: the posterior is then that group's, and low. One answer is read as that
    answer against all others unseen: Beta(c + 1, 1). No answer at all: 0 (nothing leads)."""
    vals = [float(x) if math.isfinite(x) else 0.0 for x in masses]  # a NaN score weighs nothing
    if leader is None:
        leader = max(range(len(vals)), key=lambda i: vals[i], default=0)
    if not vals or vals[leader] <= 0:
        return 0.0
    rest = sorted((x for i, x in enumerate(vals) if i != leader and x > 0), reverse=True)
    m = [vals[leader], *rest]
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
    # The interior points of a 4000-step grid, summed (the endpoints left out). It errs low,
    # towards drawing more: at b = 1 (a unanimous weighted vote) by 1.1e-3 at a = 17 and
    # 2.1e-3 at a = 33, growing with a; the sample counts a vote reaches here (N <= 16 or
    # so) keep it near 1e-3. Kept as it is because every logged row was made with it, so a
    # resumed evaluation's replayed and live rows read the same.
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
    weights = [max(w, WEIGHT_FLOOR) if math.isfinite(w) else WEIGHT_FLOOR for w in weights]
    total = sum(weights)
    if total <= 0:
        return [1.0 for _ in weights]
    return [w * len(weights) / total for w in weights]


def group_masses(groups: Sequence[Any], ids: Sequence[int], weights: Sequence[float] | None) -> list[float]:
    """The answer groups' masses for the posterior: their vote counts, or with a verifier
    the votes' `normalised` weights summed per group (`ids`: each weight's sample, as the
    groups' `members` name them). The live vote and its replay both read them here."""
    if weights is None:
        return [float(g.count) for g in groups]
    scaled = dict(zip(ids, normalised(weights)))
    return [sum(scaled[i] for i in g.members) for g in groups]


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


# -- how front ends word a stop check (the TUI's answer panel, tts solve's stderr) ----------
STOP_VERDICTS = {"posterior": "stop", "max-n": "N reached", "budget": "budget spent", "cancelled": "stopped",
                 "search": "on to a search"}


def verdict(rule: dict, stats: dict | None = None) -> str:
    """What a stop check means: from the finished run's `stopped_by` once there is one,
    else from the STOP_RULE event (`more`: whether this draw has another wave to come)."""
    if stats and "stopped_by" in stats:
        return STOP_VERDICTS.get(stats["stopped_by"], str(stats["stopped_by"]))
    if rule.get("stop"):
        return "stop"
    if rule.get("ended"):
        return STOP_VERDICTS[rule["ended"]]
    if rule.get("samples_used", 0) >= rule.get("n_max", 0):
        return "N reached"
    if not rule.get("more", True):
        return "undecided"
    # bracket: the posterior passed, but a match could still overturn the leader
    return "a match could overturn it, next wave" if rule.get("unsettled") else "next wave"


def two_sides(value: float, bound: float) -> tuple[str, str]:
    """A posterior and its bound at 2 decimals, the posterior truncated or raised where
    rounding would cross the bound (0.9476 < 0.95 must not read "0.95 < 0.95")."""
    shown = round(value, 2)
    if value < bound <= shown:
        shown = math.floor(value * 100) / 100
    elif shown < bound <= value:
        shown = math.ceil(value * 100) / 100
    b = f"{bound:.2f}" if round(bound, 2) == bound else f"{bound:g}"
    return f"{shown:.2f}", b


def stop_line(rule: dict, stats: dict | None = None) -> str:
    """One line: "P(leader holds) 0.97 ≥ 0.95: stop" (no posterior yet: a dash)."""
    posterior = (stats or {}).get("posterior", rule.get("posterior"))
    stop_at = rule.get("stop_at")
    if posterior is None or stop_at is None:
        return "P(leader holds) -"
    p, b = two_sides(posterior, stop_at)
    return f"P(leader holds) {p} {'≥' if posterior >= stop_at else '<'} {b}: {verdict(rule, stats)}"


def saved_against(stats: dict[str, Any]) -> str:
    """What the tokens saved are counted against: the fixed-N run, which for auto's easy
    bin draws fewer than the N given."""
    n_max, fixed = stats.get("n_max", "?"), stats.get("saved_vs_n")
    return f"N={n_max}" if fixed in (None, n_max) else f"the fixed run's {fixed} samples"
