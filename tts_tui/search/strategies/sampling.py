"""Independent full samples: CoT, best-of-N, majority vote, weighted vote."""

from __future__ import annotations

from tts_tui.search.run import Result, Search
from tts_tui.search.tree import Node
from tts_tui.search.votes import AnswerGroup


def sample_full(search: Search, n: int, temperature: float | None = None, share: int | None = None) -> list[Node]:
    """N complete solutions in one batched call; returns each one's last node.

    Each sample may take `share` tokens, by default `params.share` (budget / N).
    """
    p = search.params
    samplings = [p.sampling(k, temperature) for k in range(n)] if temperature is not None else None
    share = share or p.share
    paths = search.expand([search.tree.root] * n, samplings=samplings, max_steps=p.max_steps, keep=False,
                          max_total=share)
    return [path[-1] for path in paths if path]


def _answered(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.answer]


def cot(search: Search) -> Result:
    leaves = sample_full(search, 1, temperature=0.0, share=search.params.budget)
    done = _answered(leaves)
    groups = search.vote(done)
    return search.finish("cot", groups, done[0] if done else None)


def majority(search: Search) -> Result:
    done = _answered(sample_full(search, search.params.n))
    groups = search.vote(done)
    return search.finish("majority", groups, _representative(search, groups))


def weighted(search: Search) -> Result:
    done = _answered(sample_full(search, search.params.n))
    weights = search.path_scores(done)
    groups = search.vote(done, weights)
    return search.finish("weighted", groups, _representative(search, groups, _by_id(done, weights)))


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
