"""Grouping answers by mathematical equivalence, with weights (majority / weighted vote)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AnswerGroup:
    answer: str
    count: int = 0
    weight: float = 0.0
    members: list[int] = field(default_factory=list)  # node ids

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "count": self.count, "weight": round(self.weight, 4), "members": self.members}


def _norm(a: str) -> str:
    return "".join(a.split()).rstrip(".").lower()


def group_answers(
    items: Sequence[tuple[str, float, int]],
    equivalent: Callable[[str, str], bool],
) -> list[AnswerGroup]:
    """Merge (answer, weight, node_id) items into groups of equivalent answers, the
    heaviest group first (ties: more votes, then first seen)."""
    groups: list[AnswerGroup] = []
    for answer, weight, node_id in items:
        for g in groups:
            if _norm(g.answer) == _norm(answer) or equivalent(g.answer, answer):
                break
        else:
            g = AnswerGroup(answer)
            groups.append(g)
        g.count += 1
        g.weight += weight
        g.members.append(node_id)
    order = {id(g): i for i, g in enumerate(groups)}
    return sorted(groups, key=lambda g: (-g.weight, -g.count, order[id(g)]))
