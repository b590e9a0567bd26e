"""Independent full samples: CoT, best-of-N, majority vote, weighted vote.

A vote draws its samples all N at once, or, with `params.adaptive`, in waves until the
vote is decided (`draw`). Each wave is one batched decode from the same prompt state
(decoded once). After each wave the answer counts (weighted by the verifier's scores for
a weighted vote, scaled to the number of votes) give the posterior that the leader stays
the leader (`stopping.leader_holds`); at `stop_at` or more, sampling stops, so N is the
most samples drawn. Every wave runs to its end: no sample is left half-decoded except one
cut on purpose. With `cut`, the first wave sets DeepConf's confidence floor and later
traces that fall below it end as cut, spending nothing more and casting no vote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tts_tui.search import events as ev
from tts_tui.search.run import Result, Search
from tts_tui.search.stopping import cut_floor, group_masses, leader_holds, lowest_window
from tts_tui.search.tree import Node
from tts_tui.search.votes import AnswerGroup


def sample_full(search: Search, n: int, temperature: float | None = None, share: int | None = None,
                confidence: bool = False, cut_below: float | None = None) -> list[Node]:
    """N complete solutions in one batched call; returns each one's last node.

    Each sample may take `share` tokens, by default `params.share` (budget / N).
    """
    p = search.params
    samplings = [p.sampling(k, temperature) for k in range(n)] if temperature is not None else None
    share = share or p.share
    paths = search.expand([search.tree.root] * n, samplings=samplings, max_steps=p.max_steps, keep=False,
                          max_total=share, confidence=confidence, cut_below=cut_below)
    # Steps arrive as they finish, so the tree holds samples in no set order; number them
    # in request (seed) order: a vote read from the first k is the one a run at k draws.
    for path in paths:
        if path:
            path[0].meta["sample"] = search.samples_drawn
        search.samples_drawn += 1
    return [path[-1] for path in paths if path]


Weigh = Callable[[list[Node]], "list[float] | None"]
# Whether the vote's leader is the answer the strategy will give: bracket's matches can
# overturn a small majority, so it stops only on a leader no match can beat.
Settled = Callable[[list[AnswerGroup]], bool]


@dataclass
class Draw:
    """What a vote's sampling produced: the answered samples and how it ended."""

    done: list[Node]
    drawn: int  # samples decoded, answered or not (cut ones too)
    n_max: int
    stopped_by: str  # posterior | max-n | budget | cancelled (fixed N: max-n)
    posterior: float | None = None
    cut: int = 0
    floor: float | None = None
    tokens_per_sample: float = 0.0
    n_fixed: int | None = None  # what the same run at fixed N draws, when not n_max (auto's bins)

    def stats(self) -> dict[str, Any]:
        fixed = self.n_max if self.n_fixed is None else self.n_fixed
        # only the stop rule saves anything: a cancel or a spent budget drew less, it saved nothing
        saved = self.tokens_per_sample * max(0, fixed - self.drawn) if self.stopped_by == "posterior" else 0.0
        return {"samples_used": self.drawn, "n_max": self.n_max, "stopped_by": self.stopped_by,
                "posterior": None if self.posterior is None else round(self.posterior, 4),
                "cut": self.cut, "cut_floor": None if self.floor is None else round(self.floor, 3),
                "tokens_saved_est": round(saved), "saved_vs_n": fixed}


def draw(search: Search, n: int, weigh: Weigh | None = None, first: Sequence[Node] = (), drawn: int = 0,
         n_max: int | None = None, checked: bool = False, settled: Settled | None = None) -> Draw:
    """N samples for a vote, or fewer when adaptive and the vote is decided early.

    `first`: samples already drawn (auto's probes, `drawn` of them, answered or not),
    counted as the first wave (`checked`: their posterior is announced already).
    `n_max`: the N reported, when it is not `n` (auto's probes decide whether to go on
    to the N the user gave); the tokens saved are counted against it, or against
    `Draw.n_fixed` where the caller sets one."""
    a = search.params.adaptive
    if a is not None and a.cut and search.cut_floor is None and first:
        search.cut_floor = _floor(search, list(first), a.window, a.keep)
    if a is None:
        # token confidences on every vote: what an adaptive vote is replayed from (eval)
        more = sample_full(search, n - drawn, confidence=True) if n > drawn else []
        done = [*first, *_answered(more)]
        return Draw(done, max(n, drawn), max(n, drawn), "max-n")
    out = Draw(list(first), drawn, n if n_max is None else n_max, "max-n", floor=search.cut_floor)
    spent0 = search.spent
    leaves: list[Node] = []
    if drawn and not checked and _decided(search, out, weigh, a.stop_at, settled, more=out.drawn < n,
                                          ended=_ended(search, out.drawn < n, ())):
        out.tokens_per_sample = search.spent / max(1, drawn)  # the probes' own tokens
        return out
    while out.drawn < n and not search.stopped:
        k = min(a.wave, n - out.drawn)
        wave = sample_full(search, k, confidence=True, cut_below=search.cut_floor)
        leaves += wave
        # a sample a spent budget or a cancel ended before its first token cost nothing
        # and is not counted (the backends report it as a step of no tokens)
        out.drawn += sum(_started(search, x) for x in wave) if search.stopped else k
        out.cut += sum(x.finish == "cut" for x in wave)
        out.done += _answered(wave)
        if a.cut and search.cut_floor is None:
            search.cut_floor = out.floor = _floor(search, _answered(leaves), a.window, a.keep)
        if _decided(search, out, weigh, a.stop_at, settled, more=out.drawn < n and not search.stopped,
                    ended=_ended(search, out.drawn < n, wave)):
            break
    if out.stopped_by != "posterior":
        out.stopped_by = _ended(search, out.drawn < n, leaves) or out.stopped_by
    if checked and not leaves:
        # auto's probes used up N: no check of this vote's own ran (the one announced was
        # the plain vote's, and weights may put another answer first)
        out.posterior = _posterior(search, out.done, weigh)[1]
    # what a sample the rule saved would have cost: a fixed-N run cuts nothing, so the
    # cut traces' short lengths are left out of the estimate
    out.tokens_per_sample = (search.spent - spent0) / max(1, out.drawn - drawn)
    if out.cut:
        whole = [sum(x.n_tokens for x in search.tree.path(leaf)) for leaf in leaves if leaf.finish != "cut"]
        out.tokens_per_sample = sum(whole) / len(whole) if whole else out.tokens_per_sample
    return out


def _ended(search: Search, short: bool, leaves: Sequence[Node]) -> str | None:
    """Why a draw ended before its N: a cancel, or a spent budget that left it short or
    cut a sample; None when it drew its N whole (a budget spent by the last token of
    the last wave is N reached)."""
    if not search.stopped:
        return None
    if search.cancel.is_set():
        return "cancelled"
    return "budget" if short or any(x.finish == "budget" for x in leaves) else None


def _started(search: Search, leaf: Node) -> bool:
    return any(x.tokens for x in search.tree.path(leaf))


def _decided(search: Search, out: Draw, weigh: Weigh | None, stop_at: float, settled: Settled | None = None,
             more: bool = True, ended: str | None = None) -> bool:
    """Vote what is in; record and announce the posterior (`more`: whether this draw has
    another wave to come if it goes on); True once it reaches stop_at (and, with
    `settled`, the leader is the answer the strategy gives)."""
    groups, out.posterior = _posterior(search, out.done, weigh)
    stop = out.posterior >= stop_at
    unsettled = stop and settled is not None and not settled(groups)
    stop = stop and not unsettled
    if stop:
        out.stopped_by = "posterior"
    info = {"samples_used": out.drawn, "n_max": out.n_max, "posterior": round(out.posterior, 4),
            "stop_at": stop_at, "stop": stop, "more": more, "leader": groups[0].answer if groups else None,
            "cut": out.cut, "cut_floor": out.floor}
    if unsettled:
        info["unsettled"] = True
    if ended and not stop:  # no wave comes after a spent budget or a cancel
        info["ended"] = ended
    search.emit(ev.Event(ev.STOP_RULE, data=info))
    return stop


def _posterior(search: Search, done: Sequence[Node], weigh: Weigh | None) -> tuple[list[AnswerGroup], float]:
    """The vote over `done` and the posterior of the answer it gives (ranked by the raw
    weights, which the floored masses may not rank first)."""
    weights = weigh(list(done)) if weigh is not None and done else None
    groups = search.vote(list(done), weights)
    return groups, leader_holds(group_masses(groups, [x.id for x in done], weights), leader=0)


def _floor(search: Search, warm: list[Node], window: int, keep: float) -> float | None:
    """DeepConf's floor from the first wave's answered traces."""
    lows = []
    for leaf in warm:
        conf = [c for x in search.tree.path(leaf) for c in x.meta.get("conf", [])]
        low = lowest_window(conf, window)
        if low is not None:
            lows.append(low)
    return cut_floor(lows, keep)


def _answered(nodes: Sequence[Node]) -> list[Node]:
    return [n for n in nodes if n.answer]


def cot(search: Search) -> Result:
    leaves = sample_full(search, 1, temperature=0.0, share=search.params.budget)
    done = _answered(leaves)
    groups = search.vote(done)
    return search.finish("cot", groups, done[0] if done else None)


def majority(search: Search) -> Result:
    got = draw(search, search.params.n)
    groups = search.vote(got.done)
    return with_draw(search.finish("majority", groups, _representative(search, groups)), search, got)


def weighted(search: Search) -> Result:
    got = draw(search, search.params.n, search.path_scores)
    weights = search.path_scores(got.done)
    groups = search.vote(got.done, weights)
    result = search.finish("weighted", groups, _representative(search, groups, _by_id(got.done, weights)))
    return with_draw(result, search, got)


def with_draw(result: Result, search: Search, got: Draw) -> Result:
    """An adaptive vote's result says how many samples it used and why it stopped."""
    if search.params.adaptive is not None:
        result.stats.update(got.stats())
    return result


def best_of_n(search: Search) -> Result:
    done = _answered(sample_full(search, search.params.n))
    if not done:
        return search.finish("best-of-n", [], None)
    scores = search.path_scores(done)
    best = max(range(len(done)), key=lambda i: scores[i])
    groups = search.vote(done, scores)
    # Best-of-N answers with the single best-scored sample, whatever the vote says.
    top = next(g for g in groups if done[best].id in g.members)
    groups.remove(top)
    return search.finish("best-of-n", [top, *groups], done[best])


def _by_id(nodes: list[Node], weights: list[float]) -> dict[int, float]:
    return {n.id: w for n, w in zip(nodes, weights)}


def _representative(search: Search, groups: list[AnswerGroup], weights: dict[int, float] | None = None) -> Node | None:
    """The winning group's member with the highest weight (its path score in the vote;
    node id -> weight), else its first member."""
    if not groups:
        return None
    members = [search.tree.nodes[i] for i in groups[0].members]
    if not weights:
        return members[0]
    return max(members, key=lambda n: weights.get(n.id, 0.0))
