"""Step-level search guided by a verifier: beam search and DVTS."""

from __future__ import annotations

from tts_tui.search.run import Result, Search
from tts_tui.search.strategies.sampling import _representative
from tts_tui.search.tree import FINISHED, Node


def _is_open(n: Node) -> bool:
    return n.status not in (FINISHED,) and n.finish not in ("eos", "stop", "budget", "cancelled", "context")


def _final_vote(search: Search, strategy: str, fallback: list[Node]) -> Result:
    done = [n for n in search.tree.nodes.values() if n.status == FINISHED and n.answer]
    if not done:  # budget ran out first: answer from the best partial path, if any has one
        done = [n for n in fallback if n.answer]
    weights = [search.path_score(n) for n in done]
    groups = search.vote(done, weights)
    return search.finish(strategy, groups, _representative(search, groups))


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
        scores = search.score(open_nodes)
        ranked = sorted(zip(scores, range(len(open_nodes))), reverse=True)
        kept = [open_nodes[i] for _, i in ranked[:keep]]
        for _, i in ranked[keep:]:
            search.prune(open_nodes[i])
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
            scores = search.score(cands)
            best = max(range(len(cands)), key=lambda k: scores[k])
            for k, c in enumerate(cands):
                if k != best:
                    search.prune(c)
            all_last.append(cands[best])
            heads[i] = cands[best] if _is_open(cands[best]) else None
    return _final_vote(search, "dvts", all_last)
