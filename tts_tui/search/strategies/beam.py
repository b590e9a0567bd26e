"""Step-level search guided by a verifier: beam search and DVTS."""

from __future__ import annotations

from tts_tui.search.run import Result, Search
from tts_tui.search.strategies.sampling import _by_id, _representative
from tts_tui.search.tree import FINISHED, Node


def _is_open(n: Node) -> bool:
    return n.status not in (FINISHED,) and n.finish not in ("eos", "stop", "budget", "cancelled", "context")


def _final_vote(search: Search, strategy: str, fallback: list[Node]) -> Result:
    done = [n for n in search.tree.nodes.values() if n.status == FINISHED and n.answer]
    if not done:  # budget ran out first: answer from the best partial path, if any has one
        done = [n for n in fallback if n.answer]
    weights = search.path_scores(done)
    groups = search.vote(done, weights)
    return search.finish(strategy, groups, _representative(search, groups, _by_id(done, weights)))


def _rank(search: Search, nodes: list[Node]) -> list[Node]:
    """Best first by the aggregated path score (`--aggregate`), not the last step's alone.
    The sort is stable, so ties go to the earlier node, whatever the batch order."""
    scores = dict(zip((n.id for n in nodes), search.path_scores(nodes)))
    return sorted(nodes, key=lambda n: -scores[n.id])


def beam_search(search: Search) -> Result:
    """Sample N first steps; keep the N/M best; expand each M times; repeat."""
    p = search.params
    keep = p.n // p.m
    frontier = [path[0] for path in search.expand([search.tree.root] * p.n) if path]
    for _ in range(p.max_steps - 1):
        if search.stopped:
            break
        open_nodes = [n for n in frontier if _is_open(n)]
        if not open_nodes:
            break
        ranked = _rank(search, open_nodes)
        kept = ranked[:keep]
        for n in ranked[keep:]:
            search.prune(n)
        parents = [n for n in kept for _ in range(p.m)]
        frontier = [path[0] for path in search.expand(parents) if path]
        for n in kept:
            search.release(n)
    return _final_vote(search, "beam", frontier)


def dvts(search: Search) -> Result:
    """Diverse verifier tree search: N/M subtrees, each greedy on the verifier over M."""
    p = search.params
    subtrees = p.n // p.m
    heads: list[Node] = [search.tree.root] * subtrees
    all_last: list[Node] = []
    for _ in range(p.max_steps):
        active = [i for i, h in enumerate(heads) if h is not None]
        if not active or search.stopped:
            break
        parents = [heads[i] for i in active for _ in range(p.m)]
        kids = search.expand(parents)
        for j, i in enumerate(active):
            cands = [path[0] for path in kids[j * p.m : (j + 1) * p.m] if path]
            for c in cands:  # which subtree: `tts eval` reads N/M' < N/M subtrees as a smaller run
                c.meta["subtree"] = i
            if not cands:
                heads[i] = None
                continue
            best, *rest = _rank(search, cands)
            for c in rest:
                search.prune(c)
            all_last.append(best)
            heads[i] = best if _is_open(best) else None
    return _final_vote(search, "dvts", all_last)
