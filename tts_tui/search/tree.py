"""The reasoning tree: one node per step, JSON-serializable and loadable back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

LIVE = "live"
PRUNED = "pruned"
FINISHED = "finished"
CHOSEN = "chosen"


@dataclass
class Node:
    id: int
    parent_id: int | None
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    status: str = LIVE
    answer: str | None = None
    finish: str | None = None
    depth: int = 0
    kind: str = "step"  # step | root | match (bracket) | attempt (revise)
    forced: str = ""  # text the strategy forced before this step ("Wait,")
    meta: dict[str, Any] = field(default_factory=dict)
    children: list[int] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0
    state: Any = field(default=None, repr=False, compare=False)  # engine handle; not serialized
    # final-norm state that predicted the step's last token (a learned verifier's input);
    # not serialized: a run file stays small unless asked to keep them
    hidden: Any = field(default=None, repr=False, compare=False)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    def to_dict(self) -> dict[str, Any]:
        # scores and lists copied: the search thread re-scores nodes (a weighted vote after
        # every wave) while a front end iterates its copy; new scores reach it as
        # node_scored events. meta stays shared on purpose: strategies annotate a node after
        # it is sent (a revision's question, a sample's number) and front ends only look
        # keys up in it, never iterate it.
        return {k: (v.copy() if isinstance(v, list) or k == "scores" else v)
                for k, v in self.__dict__.items() if k not in ("state", "hidden")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(**d)


class Tree:
    def __init__(self, problem: str = "") -> None:
        self.problem = problem
        self.nodes: dict[int, Node] = {}
        self._next = 0
        self.root = self.add(None, text="", kind="root")

    def add(self, parent: Node | None, **fields: Any) -> Node:
        node = Node(id=self._next, parent_id=parent.id if parent else None, **fields)
        node.depth = parent.depth + 1 if parent else 0
        self._next += 1
        self.nodes[node.id] = node
        if parent is not None:
            parent.children.append(node.id)
        return node

    def parent(self, node: Node) -> Node | None:
        return self.nodes.get(node.parent_id) if node.parent_id is not None else None

    def path(self, node: Node) -> list[Node]:
        """Root excluded, `node` included, in order."""
        out = []
        cur: Node | None = node
        while cur is not None and cur.kind != "root":
            out.append(cur)
            cur = self.parent(cur)
        return out[::-1]

    def path_text(self, node: Node) -> str:
        return "".join(n.forced + n.text for n in self.path(node))

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def leaves(self) -> Iterator[Node]:
        return (n for n in self.nodes.values() if not n.children and n.kind != "root")

    def finished(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.status in (FINISHED, CHOSEN)]

    def subtree(self, node: Node) -> Iterator[Node]:
        stack = [node]
        while stack:
            cur = stack.pop()
            yield cur
            stack.extend(self.nodes[i] for i in cur.children)

    def to_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "nodes": [n.to_dict() for n in self.nodes.values()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        tree = cls.__new__(cls)
        tree.problem = d.get("problem", "")
        tree.nodes = {}
        for nd in d["nodes"]:
            node = Node.from_dict(nd)
            tree.nodes[node.id] = node
        tree._next = max(tree.nodes) + 1 if tree.nodes else 0
        tree.root = next(n for n in tree.nodes.values() if n.parent_id is None)
        return tree
