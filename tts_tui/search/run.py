"""A search run: the tree, the budget, the event stream, and the moves strategies make."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tts_tui.backends.protocol import StopRule, answer_complete
from tts_tui.search import events as ev
from tts_tui.search.protocol import AdaptiveParams, Answers, Expand, Generator, Scorer, SearchParams
from tts_tui.search.stopping import lowest_window
from tts_tui.search.tree import CHOSEN, FINISHED, LIVE, PRUNED, Node, Tree
from tts_tui.search.votes import AnswerGroup, group_answers


CONF_TOP_K = 20  # tokens a token confidence averages over (DeepConf's k)


@dataclass
class Result:
    answer: str | None
    confidence: float
    groups: list[AnswerGroup]
    chosen: int | None
    tokens: int
    seconds: float
    strategy: str
    reason: str = ""
    cancelled: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "confidence": self.confidence,
            "votes": [g.to_dict() for g in self.groups],
            "chosen": self.chosen,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "strategy": self.strategy,
            "reason": self.reason,
            "cancelled": self.cancelled,
            "stats": self.stats,
        }


class Search:
    def __init__(
        self,
        generator: Generator,
        problem: str,
        params: SearchParams,
        answers: Answers,
        scorer: Scorer | None = None,
        listener: ev.Listener | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.gen = generator
        self.params = params
        self.answers = answers
        self.scorer = scorer
        self.tree = Tree(problem)
        self.listeners: list[ev.Listener] = [listener] if listener else []
        self.cancel = cancel or threading.Event()
        self.spent = 0
        self.cut_floor: float | None = None  # the DeepConf floor in force (adaptive votes set it)
        self.samples_drawn = 0  # full samples requested so far (their seed order)
        # a verifier that learns from hidden states and token statistics has them captured
        self.capture = bool(getattr(scorer, "needs_capture", False))
        self.confidence = self.capture or bool(getattr(scorer, "needs_confidence", False))
        self.started = time.monotonic()
        self.events: list[ev.Event] = []
        self.info: list[str] = []
        self.tree.root.state = generator.root(problem)

    # -- events ---------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        for fn in self.listeners:
            fn(event)

    def note(self, text: str, **data: Any) -> None:
        self.info.append(text)
        self.emit(ev.Event(ev.INFO, data={"text": text, **data}))

    # -- budget ----------------------------------------------------------------------
    @property
    def budget_left(self) -> int:
        return max(0, self.params.budget - self.spent)

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set() or self.budget_left <= 0

    # -- growing the tree --------------------------------------------------------------
    def stop_rule(self, max_steps: int = 1, delimiter: str | None = "\n\n", max_total: int | None = None,
                  answer_stop: bool = True, confidence: bool = False, cut_below: float | None = None) -> StopRule:
        window = self.cut_window
        return StopRule(delimiter=delimiter, max_tokens=self.params.step_tokens, max_steps=max_steps,
                        max_total=max_total, answer_stop=answer_stop,
                        conf_top_k=CONF_TOP_K if confidence or cut_below is not None or self.confidence else 0,
                        cut_window=window, cut_below=cut_below, capture=self.capture)

    def expand(
        self,
        parents: Sequence[Node],
        *,
        samplings: Sequence[Any] | None = None,
        max_steps: int = 1,
        prefixes: Sequence[str] | None = None,
        keep: bool = True,
        kind: str = "step",
        states: Sequence[Any] | None = None,
        template: bool = False,
        scoped: bool = False,
        max_total: int | None = None,
        answer_stop: bool = True,
        budget: int | None = None,
        confidence: bool = False,
        cut_below: float | None = None,
    ) -> list[list[Node]]:
        """Grow one branch from each parent (repeat a parent for several children),
        all in one batched engine call; nodes appear (and are announced) step by step.

        `states` grows from other generator states than the parents' own (a revision
        is a new prompt, shown as a child of the attempt it revises; None entries keep
        the parent's). With `states` or `scoped`, an answer is read from the new
        branch's own text alone, not its forced prefix (a revision asked as a new turn).
        `template` marks the prefixes as chat-template text. `max_total` caps the tokens
        of each branch (a sample's share of the budget). A branch ends as soon as its final
        answer is complete unless `answer_stop` is off (to write on past an answer).
        `budget` caps the tokens this call may spend (all branches together), below
        what the run has left: a phase can keep the rest for a later one. `confidence`
        records each token's confidence on the nodes (meta "conf"); `cut_below` ends a
        branch whose sliding-window confidence falls below it (status pruned, no vote).
        """
        cap = self.budget_left if budget is None else min(self.budget_left, max(0, budget))
        if not parents or self.stopped or cap <= 0:
            return [[] for _ in parents]
        reqs = []
        rule = self.stop_rule(max_steps, max_total=max_total, answer_stop=answer_stop, confidence=confidence,
                              cut_below=cut_below)
        in_code = replace(rule, in_code=True)  # for a branch that starts inside a code fence
        for i, p in enumerate(parents):
            sampling = samplings[i] if samplings else self.params.sampling(self._seed_counter())
            state = states[i] if states and states[i] is not None else p.state
            new_turn = bool(states and states[i] is not None) or scoped
            starts_in_code = not new_turn and _in_fence(self.tree.path_text(p))
            reqs.append(Expand(state, sampling, in_code if starts_in_code else rule,
                               prefixes[i] if prefixes else "", keep, template))
        current = list(parents)
        made: list[list[Node]] = [[] for _ in parents]

        def on_step(out: Any) -> None:
            scope = made[out.request] if states or scoped else None
            node = self._add_step(current[out.request], out, kind, scope, made[out.request])
            current[out.request] = node
            made[out.request].append(node)

        self.gen.expand(reqs, budget=cap, should_stop=self.cancel.is_set, on_step=on_step)
        self.emit(ev.Event(ev.BUDGET, data={"spent": self.spent, "budget": self.params.budget}))
        return made

    def _seed_counter(self) -> int:
        self._seeds = getattr(self, "_seeds", 0) + 1
        return self._seeds

    def _add_step(self, parent: Node, out: Any, kind: str, scope: list[Node] | None = None,
                  branch: Sequence[Node] = ()) -> Node:
        """Add one step of a branch. `branch` holds the branch's earlier steps of this
        call: a branch that answered and wrote on votes once, with its last node."""
        node = self.tree.add(
            parent,
            text=out.text,
            tokens=list(out.tokens),
            logprobs=[round(x, 4) for x in out.logprobs],
            finish=out.finish,
            kind=kind,
            forced=out.forced,
        )
        node.state = out.handle
        node.meta["seconds"] = round(out.seconds, 3)
        if getattr(out, "confidences", None):
            node.meta["conf"] = list(out.confidences)  # rounded by the engine
        if getattr(out, "entropies", None):
            node.meta["ent"] = round(sum(out.entropies) / len(out.entropies), 4)
            node.meta["sc"] = round(sum(out.certainties) / len(out.certainties), 4)
        node.hidden = getattr(out, "hidden", None)
        self.spent += len(out.tokens)
        if scope is None:
            text = self.tree.path_text(node)
        else:
            text = "".join(n.text for n in scope) + node.text
        ended = getattr(out, "ended", False) or out.finish in ("budget", "cancelled", "context", "cut")
        if out.finish == "cut":
            # A weak trace ended on purpose: it does not vote, whatever it wrote.
            node.status = PRUNED
            node.meta["cut"] = self._cut_reason([*branch, node])
        elif out.done or _states_answer(out.text, in_code=_in_fence(text[: len(text) - len(out.text)])):
            # The step itself ends the solution or states its answer.
            node.answer = self.answers.extract(text)
            if out.done or node.answer is not None:
                node.status = FINISHED
                node.meta["answered"] = node.answer is not None
        elif ended:
            # A branch that ends for any other reason (its share, its last step, the
            # budget) keeps the answer it wrote earlier in this call, if it wrote one.
            said = next((n for n in reversed(branch) if n.meta.get("answered")), None)
            if said is not None:
                node.answer, node.status = said.answer, FINISHED
        if ended and node.status == LIVE and out.finish in ("budget", "cancelled", "context"):
            node.status = PRUNED  # cut off unanswered
        self.emit(ev.node_added(node))
        if node.status == FINISHED or out.finish == "cut":
            # one finished node per branch: the vote is its last answer's; a cut trace's
            # answer stated before the cut casts no vote, so it shows none
            for n in branch:
                if n.status == FINISHED:
                    self.set_status(n, LIVE)
        return node

    @property
    def cut_window(self) -> int:
        """Tokens a DeepConf window spans: the adaptive settings', else their default."""
        a = self.params.adaptive
        return (a or AdaptiveParams()).window

    def _cut_reason(self, steps: Sequence[Node]) -> str:
        window = self.cut_window
        conf = [c for n in steps for c in n.meta.get("conf", [])]
        low = lowest_window(conf, window)
        floor = self.cut_floor
        shown = f"{low:.2f}" if low is not None else "?"
        return f"confidence {shown} over {window} tokens fell below the floor {floor:.2f}" if floor is not None \
            else f"confidence {shown} over {window} tokens fell below the floor"

    def score(self, nodes: Sequence[Node]) -> list[float]:
        """Verifier score of each node's last step (cached on the node)."""
        if self.scorer is None or not nodes:
            return [0.0 for _ in nodes]
        todo = [n for n in nodes if self.scorer.name not in n.scores]
        if todo:
            for n, s in zip(todo, self.scorer.score(self, todo)):
                n.scores[self.scorer.name] = float(s)
                self.emit(ev.Event(ev.NODE_SCORED, node_id=n.id, data={"scores": {self.scorer.name: float(s)}}))
        return [n.scores[self.scorer.name] for n in nodes]

    def path_score(self, node: Node, how: str | None = None, since: Node | None = None) -> float:
        """Aggregate the verifier's step scores along the path from `since` (default: the
        first step) to `node`, scoring only the steps the aggregate reads."""
        return self.path_scores([node], how, [since])[0]

    def path_scores(self, nodes: Sequence[Node], how: str | None = None,
                    since: Sequence[Node | None] | None = None) -> list[float]:
        """path_score for many nodes, with one verifier call for all the steps they need
        (a judge or PRM batches its decodes; one call per path would not)."""
        how = how or self.params.aggregate
        paths = [self._aggregated_steps(n, how, since[i] if since else None) for i, n in enumerate(nodes)]
        unique = list({n.id: n for path in paths for n in path}.values())
        self.score(unique)
        return [aggregate(self.score(path), how) for path in paths]

    def _aggregated_steps(self, node: Node, how: str, since: Node | None) -> list[Node]:
        """The steps an aggregate reads: `last` needs the node alone (a verifier call per
        step is costly: a PRM prefill, a judge prompt); min, mean and prod read them all."""
        if node.kind == "root":
            return []
        if how not in ("min", "mean", "prod"):
            return [node]
        steps = self.tree.path(node)
        ids = [n.id for n in steps]
        return steps[ids.index(since.id):] if since is not None and since.id in ids else steps

    def set_status(self, node: Node, status: str) -> None:
        if node.status == status:
            return
        node.status = status
        self.emit(ev.Event(ev.NODE_STATUS, node_id=node.id, data={"status": status, "answer": node.answer}))

    def prune(self, node: Node) -> None:
        self.set_status(node, PRUNED)
        self.release(node)

    def release(self, node: Node) -> None:
        if node.state is not None and node.kind != "root":
            self.gen.release(node.state)

    # -- finishing ------------------------------------------------------------------------
    def vote(self, nodes: Sequence[Node], weights: Sequence[float] | None = None) -> list[AnswerGroup]:
        items = [(n.answer, (weights[i] if weights else 1.0), n.id) for i, n in enumerate(nodes) if n.answer]
        groups = group_answers(items, self.answers.equivalent)
        self.emit(ev.Event(ev.VOTES, data={"groups": [g.to_dict() for g in groups]}))
        return groups

    def finish(self, strategy: str, groups: list[AnswerGroup], chosen: Node | None, reason: str = "") -> Result:
        if chosen is not None:
            for n in self.tree.path(chosen):
                self.set_status(n, CHOSEN)
        total_w = sum(g.weight for g in groups) or 1.0
        best = groups[0] if groups else None
        conf = best.weight / total_w if best else 0.0
        # Live leftovers are pruned, except steps on the way to a finished solution.
        on_solution: set[int] = set()
        for n in self.tree.nodes.values():
            if n.status in (FINISHED, CHOSEN):
                on_solution.update(p.id for p in self.tree.path(n))
        for n in self.tree.nodes.values():
            if n.status == LIVE and n.kind != "root" and n.id not in on_solution:
                self.set_status(n, PRUNED)
        stats = dict(self.gen.stats())
        p_right = self.p_right(chosen)
        if p_right is not None:
            stats["p_right"] = p_right
            if chosen is not None and chosen.hidden is None:  # scored at the training mean state
                stats["p_right_stats_only"] = True
        self.release_all()
        result = Result(
            answer=best.answer if best else (chosen.answer if chosen else None),
            confidence=round(conf, 4),
            groups=groups,
            chosen=chosen.id if chosen else None,
            tokens=self.spent,
            seconds=time.monotonic() - self.started,
            strategy=strategy,
            reason=reason or "; ".join(self.info),
            cancelled=self.cancel.is_set(),
            stats=stats,
        )
        self.emit(ev.Event(ev.DONE, data=result.to_dict()))
        return result

    def p_right(self, chosen: Node | None) -> float | None:
        """The probe's estimate that the chosen answer is right: its score of the chosen
        node (the sample's own state at its answer; trained on whether samples end right),
        for a run scored by the probe only. None where there is none to give: another
        verifier, no chosen node, or a scoring failure (a finished run is never lost to it)."""
        if chosen is None or chosen.kind == "root" or getattr(self.scorer, "name", None) != "probe":
            return None
        try:
            p = float(self.path_scores([chosen], "last")[0])
        except Exception:  # noqa: BLE001 - the answer stands without its estimate
            return None
        return round(p, 4) if math.isfinite(p) and 0.0 <= p <= 1.0 else None

    def release_all(self) -> None:
        for n in self.tree.nodes.values():
            if n.state is not None and n.kind != "root":
                self.gen.release(n.state)
                n.state = None
        if self.tree.root.state is not None:
            self.gen.release(self.tree.root.state)
            self.tree.root.state = None


# "the answer is 41", "Final Answer: $\\frac{1}{3}$": a marker followed by the answer itself,
# not by prose ("the answer is not 5", "to check the final answer, note that 6 x 7 is 42").
_STATED = re.compile(r"\b(?:answer is|final answer(?: is)?)\s*[:*]*\s*\**\s*(?:\$|\\\(|\\\[)?\s*"
                     r"(?:[-+]?\d|\\(?:frac|dfrac|sqrt|boxed|pi)\b|\()", re.I)


def _states_answer(text: str, in_code: bool = False) -> bool:
    """Does this step itself state a final answer (a closed box, a complete "Final
    Answer:" line, or "the answer is" followed by a number or formula)? `in_code`: the
    step starts inside a code fence that an earlier step opened."""
    return answer_complete(text, in_code=in_code) or bool(_STATED.search(text))


def _in_fence(text: str) -> bool:
    """Does `text` end inside a code fence (an odd number of ``` marks)?"""
    return text.count("```") % 2 == 1


def aggregate(scores: Sequence[float], how: str) -> float:
    """Step scores to one path score: last | min | mean | prod (0 for no steps)."""
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "prod":
        out = 1.0
        for s in scores:
            out *= s
        return out
    return scores[-1]
