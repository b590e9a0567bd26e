"""Adaptive votes read from a fixed-N run's samples (derived rows of `tts eval --adaptive`).

An adaptive vote draws the same samples as a fixed-N vote (the same seeds, in the same
order), only fewer of them: wave after wave until the stop rule fires. So its result on
a problem can be read from the fixed run's logged samples by replaying the rule on them,
without decoding anything again. With the DeepConf cut, a sample after the first wave
is cut at the first token where its sliding-window confidence falls below the first
wave's floor; each logged sample carries the points where its running lowest window
confidence fell (`drops`), so the cut position, for any floor, is read off them.

A derived row is the same as a live run only if the same seeds give the same tokens in
a smaller batch; `bench/adaptive_live.py` checks the stops on live runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tts_tui.search.protocol import AdaptiveParams
from tts_tui.search.stopping import cut_floor, group_masses, leader_holds, lowest_window
from tts_tui.search.votes import group_answers

Equivalent = Callable[[str, str], bool]


def trace_record(confidences: Sequence[float], window: int) -> dict[str, Any]:
    """A sample's confidence, compactly: its lowest window mean (`low`, what a first-wave
    trace gives the floor) and `drops`, [token count, new lowest] each time the running
    lowest over full windows fell (what decides where a floor would cut it)."""
    low = lowest_window(confidences, window)
    drops: list[list[float]] = []  # unrounded: a floor compares them as the engine does
    run = 0.0
    best = float("inf")
    for t, c in enumerate(confidences, 1):
        run += c
        if t > window:
            run -= confidences[t - window - 1]
        if t >= window and run / window < best:
            best = run / window
            drops.append([t, best])
    return {"low": low, "drops": drops}


def cut_at(drops: Sequence[Sequence[float]], floor: float) -> int | None:
    """The token count at which a floor cuts a trace (None: it is never cut)."""
    return next((int(t) for t, v in drops if v < floor), None)


def replay(samples: Sequence[dict[str, Any]], a: AdaptiveParams, weighted: bool,
           equivalent: Equivalent) -> dict[str, Any]:
    """The adaptive vote over `samples` in order (answer, score, tokens, low, drops, finish each):
    its answer, tokens, samples used, why it stopped, the last posterior, traces cut (and
    which: `cut_samples`, their indices)."""
    used: list[dict[str, Any]] = []
    votes: list[tuple[str, float, int]] = []
    cut_samples: list[int] = []
    tokens, floor, posterior, stopped_by = 0, None, 0.0, "max-n"
    for start in range(0, len(samples), a.wave):
        wave = samples[start:start + a.wave]
        for i, s in enumerate(wave, start):
            at = cut_at(s.get("drops") or [], floor) if a.cut and floor is not None else None
            # the engine checks the cut after a completed answer ("stop") and before the
            # share, the delimiter or the end of sequence that follow the same token
            if at is not None and (at < s["tokens"] or s.get("finish") != "stop"):
                tokens += at
                cut_samples.append(i)
                continue
            tokens += s["tokens"]
            if s["answer"]:
                votes.append((s["answer"], s["score"] if weighted else 1.0, i))
        used.extend(wave)
        if a.cut and floor is None:
            floor = cut_floor([s["low"] for s in used if s["answer"] and s.get("low") is not None], a.keep)
        groups = group_answers(votes, equivalent)
        weights = [v[1] for v in votes] if weighted else None
        posterior = leader_holds(group_masses(groups, [v[2] for v in votes], weights), leader=0)
        if posterior >= a.stop_at:
            stopped_by = "posterior"
            break
    groups = group_answers(votes, equivalent)
    return {"answer": groups[0].answer if groups else None, "tokens": tokens, "samples_used": len(used),
            "stopped_by": stopped_by, "posterior": round(posterior, 4), "cut": len(cut_samples),
            "cut_samples": cut_samples,
            "cut_floor": None if floor is None else round(floor, 3)}
