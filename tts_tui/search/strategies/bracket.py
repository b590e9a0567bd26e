"""Bracket elimination: N candidates meet in a knockout tournament.

Candidates with equivalent answers merge first (the best-scored one represents them
and carries their votes), so matches are spent on genuinely different answers. Each
round's matches are judged in one batch: by the policy model ("Which solution is
correct, A or B?", both orders) or, with a PRM, by the higher aggregated score. The
representatives are seeded by the weight they carry; the top seeds get round 1's byes,
which leave a power of two, so no later round has one.

A match weighs the judge against the votes each side carries: the judge's odds times
the vote ratio. On gsm8k_dev a 1.5B judge alone let a one-vote stray answer knock out
the six-vote right one; with the votes as prior evidence, the judge decides close calls
and can still overturn a small majority when it is confident. A small model's A/B
probability is overconfident, so it is capped at JUDGE_CAP; a match whose vote ratio the
judge could not overturn even then is decided by the votes without asking it (on a CPU
the judge's two long prompts cost more than generating a candidate).
"""

from __future__ import annotations

import math
import time

from tts_tui.search import events as ev
from tts_tui.search.run import Result, Search
from tts_tui.search.stopping import group_masses, leader_holds
from tts_tui.search.strategies.sampling import draw, with_draw
from tts_tui.search.tree import Node
from tts_tui.search.votes import AnswerGroup


def _judge(search: Search, pairs: list[tuple[Node, Node]]) -> list[float]:
    """P(first wins) per pair."""
    if search.scorer is not None and search.scorer.name == "prm":
        scores = search.path_scores([n for pair in pairs for n in pair])
        return [1.0 if sa > sb else 0.0 if sb > sa else 0.5 for sa, sb in zip(scores[::2], scores[1::2])]
    texts = [(search.tree.path_text(a), search.tree.path_text(b)) for a, b in pairs]
    return search.gen.compare(search.tree.problem, texts)


def bracket(search: Search) -> Result:
    t0 = time.monotonic()
    got = draw(search, search.params.n, search.path_scores, settled=no_match_can_overturn)
    done = got.done
    sample_seconds = time.monotonic() - t0
    weights = search.path_scores(done)
    groups = search.vote(done, weights)
    if not groups:
        result = with_draw(search.finish("bracket", [], None), search, got)
        result.stats["sample_seconds"] = round(sample_seconds, 3)
        return result
    # merge equivalent answers: one representative each (its best path score), carrying the group
    weight = {n.id: w for n, w in zip(done, weights)}
    reps = [max((search.tree.nodes[i] for i in g.members), key=lambda n: weight[n.id]) for g in groups]
    by_rep = {r.id: g for r, g in zip(reps, groups)}
    seed = {r.id: k for k, r in enumerate(reps)}  # groups come heaviest first: seed 0 is the top
    alive = reps
    byes = _bye_count(len(alive))
    rnd = 0
    judge0 = _prefilled(search)  # the judge's prompts are prefilled, not generated
    while len(alive) > 1:
        rnd += 1
        # The top seeds sit out round 1 until a power of two is left; later rounds are even.
        free, rest = alive[:byes], alive[byes:]
        byes = 0
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
        votes = [(by_rep[a.id].count, by_rep[b.id].count) for a, b in pairs]
        asked = [i for i, v in enumerate(votes) if not decided_by_votes(*v)]
        verdicts: dict[int, float] = {}  # pair index -> the judge's P(first); unasked pairs have none
        if asked and not search.cancel.is_set():
            verdicts = dict(zip(asked, _judge(search, [pairs[i] for i in asked])))
        winners = []
        for i, (a, b) in enumerate(pairs):
            p_judge = verdicts.get(i)
            pa = match_probability(0.5 if p_judge is None else p_judge, *votes[i])
            win, lose = (a, b) if pa >= 0.5 else (b, a)
            winners.append(win)
            _match_node(search, rnd, a, b, pa, win, p_judge, votes[i])
            search.set_status(lose, "pruned")
        for bye in free:
            search.note(f"round {rnd}: {bye.answer} gets a bye")
        alive = sorted(free + winners, key=lambda n: seed[n.id])
    judge_tokens = int(_prefilled(search) - judge0)
    champ = alive[0]
    champion_group = by_rep[champ.id]
    ordered = [champion_group] + [g for g in groups if g is not champion_group]
    if got.posterior is not None and champion_group is not groups[0]:
        # the matches overturned the vote's leader (at N, never after a stop): the
        # posterior reported is the champion's
        got.posterior = leader_holds(group_masses(groups, [x.id for x in done], weights),
                                     leader=groups.index(champion_group))
    result = with_draw(search.finish("bracket", ordered, champ), search, got)
    result.stats["rounds"] = rnd
    result.stats["sample_seconds"] = round(sample_seconds, 3)
    result.stats["judge_prompt_tokens"] = judge_tokens
    return result


JUDGE_CAP = 0.8  # the judge's P(A) is trusted up to 4:1 odds


def no_match_can_overturn(groups: list[AnswerGroup]) -> bool:
    """The vote's leader outvotes every rival by more than the judge's cap: it wins each
    match it plays, so the tournament's champion is the leader."""
    return all(groups[0].count > g.count and decided_by_votes(groups[0].count, g.count) for g in groups[1:])


def decided_by_votes(votes_a: int, votes_b: int) -> bool:
    """True when no judge verdict within the cap could change the match."""
    odds = JUDGE_CAP / (1 - JUDGE_CAP)
    return votes_a != votes_b and max(votes_a, votes_b) >= odds * max(1, min(votes_a, votes_b)) - 1e-9


def match_probability(p_judge: float, votes_a: int, votes_b: int) -> float:
    """P(first wins): the judge's odds (capped) times the ratio of the votes each side carries."""
    p = min(max(p_judge, 1 - JUDGE_CAP), JUDGE_CAP)
    logit = math.log(p / (1 - p)) + math.log(max(votes_a, 1) / max(votes_b, 1))
    return 1.0 / (1.0 + math.exp(-logit))


def _bye_count(n: int) -> int:
    """Byes that bring n candidates to a power of two after round 1."""
    size = 1
    while size < n:
        size *= 2
    return size - n if n > 1 else 0


def _match_node(search: Search, rnd: int, a: Node, b: Node, pa: float, win: Node, p_judge: float | None,
                votes: tuple[int, int]) -> None:
    verdict = f"judge P(first)={p_judge:.2f}, with votes {pa:.2f}" if p_judge is not None else "decided by votes"
    text = f"round {rnd}: {a.answer} ({votes[0]}v) vs {b.answer} ({votes[1]}v) -> {verdict}, winner {win.answer}"
    node = search.tree.add(search.tree.root, text=text, kind="match", status="finished",
                           meta={"round": rnd, "a": a.id, "b": b.id, "votes": list(votes), "p_a": round(pa, 4),
                                 "p_judge": round(p_judge, 4) if p_judge is not None else None, "winner": win.id})
    search.emit(ev.node_added(node))


def _prefilled(search: Search) -> int:
    """Prompt tokens the generator evaluated so far (a server's: less what its cache served)."""
    stats = search.gen.stats()
    return int(stats.get("prompt_tokens", 0) - stats.get("cached_tokens", 0))
