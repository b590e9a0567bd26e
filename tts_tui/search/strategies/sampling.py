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
    weights = [search.path_score(n) for n in done]
    groups = search.vote(done, weights)
    return search.finish("weighted", groups, _representative(search, groups))


def best_of_n(search: Search) -> Result:
    done = _answered(sample_full(search, search.params.n))
    if not done:
        return search.finish("best-of-n", [], None)
    scores = [search.path_score(n) for n in done]
    best = max(range(len(done)), key=lambda i: scores[i])
    groups = search.vote(done, scores)
    # Best-of-N answers with the single best-scored sample, whatever the vote says.
    top = next(g for g in groups if done[best].id in g.members)
    groups.remove(top)
    return search.finish("best-of-n", [top, *groups], done[best])


def _representative(search: Search, groups: list[AnswerGroup]) -> Node | None:
    """The winning group's best-scored member (its first when unscored)."""
    if not groups:
        return None
    members = [search.tree.nodes[i] for i in groups[0].members]
    return max(members, key=lambda n: n.scores.get(search.scorer.name, 0.0) if search.scorer else 0.0)
