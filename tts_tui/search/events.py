"""Events a search emits as it goes; the CLI, the run log and the TUI consume one stream.

Events are plain dataclasses with a `kind` and JSON-able fields, so a recorded stream
can be replayed into a fresh Tree (see `apply_event`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tts_tui.search.tree import Node, Tree

NODE_ADDED = "node_added"  # a new step (full node in `node`)
NODE_SCORED = "node_scored"
NODE_STATUS = "node_status"  # pruned / finished / chosen
BUDGET = "budget"  # tokens spent so far
INFO = "info"  # a line for the user (auto strategy's choice, context trimming...)
VOTES = "votes"  # current answer groups
STOP_RULE = "stop_rule"  # an adaptive vote's posterior after a wave (samples used, P(leader holds))
DONE = "done"  # run finished with the answer


@dataclass
class Event:
    kind: str
    t: float = field(default_factory=time.monotonic)
    node_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(**d)


Listener = Callable[[Event], None]


def node_added(node: Node) -> Event:
    return Event(NODE_ADDED, node_id=node.id, data={"node": node.to_dict()})


def apply_event(tree: Tree, ev: Event) -> None:
    """Replay one event into `tree` (the UI and history replay use this)."""
    if ev.kind == NODE_ADDED:
        node = Node.from_dict(dict(ev.data["node"], children=[]))
        tree.nodes[node.id] = node
        tree._next = max(tree._next, node.id + 1)
        parent = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
        if parent is not None and node.id not in parent.children:
            parent.children.append(node.id)
    elif ev.kind == NODE_SCORED and ev.node_id in tree.nodes:
        tree.nodes[ev.node_id].scores.update(ev.data.get("scores", {}))
    elif ev.kind == NODE_STATUS and ev.node_id in tree.nodes:
        node = tree.nodes[ev.node_id]
        node.status = ev.data["status"]
        if "answer" in ev.data:
            node.answer = ev.data["answer"]
