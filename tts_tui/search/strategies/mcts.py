"""Monte Carlo tree search over reasoning steps.

Each iteration selects N/M leaves by UCT (a virtual loss spreads the picks), expands
each M times by one sampled step (all in one batched call), evaluates the new steps
with the verifier, and backs the values up. The answer: a vote over finished paths
weighted by value; the chosen path is the most visited finished one.
"""

from __future__ import annotations

import math

from tts_tui.search.run import Result, Search
from tts_tui.search.strategies.beam import _is_open
from tts_tui.search.tree import FINISHED, Node

C_UCT = 1.4


def _uct(parent: Node, child: Node) -> float:
    if child.visits == 0:
        return float("inf")
    explore = C_UCT * math.sqrt(math.log(max(1, parent.visits)) / child.visits)
    return child.value / child.visits + explore


def _select(search: Search, taken: set[int]) -> Node | None:
    node = search.tree.root
    while node.children:
        kids = [c for c in search.tree.children(node) if c.status != FINISHED and c.id not in taken]
        kids = [c for c in kids if _is_open(c) or c.children]
        if not kids:
            return None if node.kind == "root" else (node if node.id not in taken and _is_open(node) else None)
        node = max(kids, key=lambda c: _uct(node, c))
    return node if node.id not in taken else None


def _backprop(search: Search, node: Node, value: float) -> None:
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value += value
        cur = search.tree.parent(cur)


def mcts(search: Search) -> Result:
    p = search.params
    width = max(1, p.n // p.m)
    for _ in range(max(1, p.max_steps * 4)):
        if search.stopped:
            break
        leaves: list[Node] = []
        taken: set[int] = set()
        for _ in range(width):
            leaf = _select(search, taken)
            if leaf is None:
                break
            leaves.append(leaf)
            taken.add(leaf.id)
            taken.update(n.id for n in search.tree.path(leaf))
        if not leaves:
            break
        parents = [leaf for leaf in leaves for _ in range(p.m)]
        kids = [path[0] for path in search.expand(parents) if path]
        if not kids:
            break
        for kid, value in zip(kids, search.score(kids)):
            _backprop(search, kid, value)
        if len([n for n in search.tree.nodes.values() if n.status == FINISHED]) >= p.n:
            break
    done = [n for n in search.tree.nodes.values() if n.status == FINISHED and n.answer]
    weights = [n.value / max(1, n.visits) for n in done]
    groups = search.vote(done, weights)
    chosen = max(done, key=lambda n: (n.visits, n.value)) if done else None
    if groups and chosen is not None and chosen.id not in groups[0].members:
        chosen = max((search.tree.nodes[i] for i in groups[0].members), key=lambda n: (n.visits, n.value))
    return search.finish("mcts", groups, chosen)
