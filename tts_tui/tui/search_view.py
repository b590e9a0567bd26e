"""The live search view: the tree, its detail pane, and the answer and compute panels.

It is fed batches of search events. Tree widget nodes are made lazily: a node whose
parent is collapsed (a pruned subtree, or one the user folded) stays in the model only
and is materialized when its parent is expanded, so wide and deep trees stay cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from rich.text import Text
from textual.widgets import Label, Static, Tree
from textual.widgets.tree import TreeNode

from tts_tui.search import events as ev
from tts_tui.search.tree import CHOSEN, FINISHED, PRUNED, Node
from tts_tui.search.tree import Tree as SearchTree
from tts_tui.tui.view import (adaptive_compute_lines, answer_bars, budget_bar, detail_text, node_label, p_right_text,
                              sparkline, stop_rule_text)
from tts_tui.tui.widgets import LiveTree, Panel

DETAIL_DELAY_S = 0.08
TREE_FRAME_S = 0.2  # the tree widget repaints at most 5 times a second while a run grows it


class SearchView(Vertical):
    """The tree, its detail pane, and the answer/compute panels, fed by events."""

    def __init__(self, show_rates: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.show_rates = show_rates  # tokens/s and times; off for reproducible screenshots
        self.model = SearchTree("")
        self.tnodes: dict[int, TreeNode] = {}
        self.running = False
        self.follow = True
        self.budget = 1
        self.spent = 0
        self.groups: list[dict[str, Any]] = []
        self.rates: list[float] = []
        self.info = ""
        self.stop_rule: dict[str, Any] | None = None  # an adaptive vote's latest STOP_RULE data
        self.result: dict[str, Any] | None = None
        self.record: dict[str, Any] | None = None
        self.active_since: float | None = None  # the first event of this run
        self._new: list[int] = []  # in the model, not yet in the tree widget
        self._dirty: set[int] = set()  # relabel in the tree widget
        self._tree_flushed = 0.0
        self._last_rate = (time.monotonic(), 0)

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="center"):
                tree = LiveTree("problem", id="tree")
                tree.show_root = True
                yield tree
                with VerticalScroll(id="detail-scroll"):
                    yield Static("Select a node to see its path.", id="detail")
            with Vertical(id="side"):
                yield Label("Answers", classes="title")
                yield Panel(answer_bars([]), id="answers")
                yield Panel("", id="best")
                p_right = Panel("", id="p-right")
                p_right.display = False  # shown when a probe scored the run: other runs look as before
                yield p_right
                stop = Panel("", id="stop-rule")
                stop.display = False  # shown by an adaptive vote only: fixed-N runs look as before
                yield stop
                yield Label("Compute", classes="title")
                yield Panel("", id="compute")

    # -- lifecycle --------------------------------------------------------------------
    def reset(self, problem: str, budget: int) -> None:
        tree = self.query_one("#tree", Tree)
        tree.clear()
        # Text, not str: a Tree parses a str label as markup, and a problem may contain "[x]".
        tree.root.set_label(Text(problem.strip().splitlines()[0][:60] if problem.strip() else "problem"))
        tree.root.data = 0
        tree.root.expand()
        self.model = SearchTree(problem)
        self.tnodes = {0: tree.root}
        self.budget, self.spent = max(1, budget), 0
        self.groups, self.rates, self.info, self.result, self.record = [], [], "", None, None
        self.stop_rule = None
        self.active_since = None
        self._last_rate = (time.monotonic(), 0)
        self._new, self._dirty, self._tree_flushed = [], set(), 0.0
        self.query_one("#detail", Static).update("Select a node to see its path.")
        self.refresh_panels()

    def apply(self, events: Iterable[ev.Event], show_rates: bool | None = None) -> None:
        """Fold events into the model and panels now; the tree widget follows in flush_tree."""
        if self.active_since is None:
            self.active_since = time.monotonic()
        for e in events:
            ev.apply_event(self.model, e)
            if e.kind == ev.NODE_ADDED:
                self.spent += self.model.nodes[e.node_id].n_tokens
                self._new.append(e.node_id)
            elif e.kind in (ev.NODE_SCORED, ev.NODE_STATUS):
                self._dirty.add(e.node_id)
            elif e.kind == ev.VOTES:
                self.groups = e.data["groups"]
            elif e.kind == ev.STOP_RULE:
                self.stop_rule = e.data
            elif e.kind == ev.INFO:
                self.info = e.data["text"]
            elif e.kind == ev.BUDGET:
                self.spent = e.data["spent"]
            elif e.kind == ev.DONE:
                self.result = e.data
                self.groups = e.data.get("votes", self.groups)
        show_rates = self.show_rates if show_rates is None else show_rates and self.show_rates
        if show_rates:
            now = time.monotonic()
            t0, s0 = self._last_rate
            if now - t0 >= 0.5:
                self.rates = (self.rates + [(self.spent - s0) / (now - t0)])[-60:]
                self._last_rate = (now, self.spent)
        self.refresh_panels(show_rates)
        self.flush_tree()

    def flush_tree(self, force: bool = False) -> None:
        """Bring the tree widget up to the model, at most every TREE_FRAME_S.

        Repainting a growing tree is the UI's costliest work (every visible line is
        re-rendered), so it runs at a lower rate than the panels.
        """
        if not (self._new or self._dirty):
            return
        now = time.monotonic()
        if not force and now - self._tree_flushed < TREE_FRAME_S:
            return
        self._tree_flushed = now
        newest: TreeNode | None = None
        for nid in self._new:
            node = self.model.nodes[nid]
            parent = self.tnodes.get(node.parent_id)
            if nid not in self.tnodes and parent is not None and _shown(parent):
                newest = self._materialize(node, parent)
            # else: under a collapsed node; made when that node is expanded
        for nid in self._dirty:
            tn = self.tnodes.get(nid)
            if tn is None:
                continue
            node = self.model.nodes[nid]
            tn.set_label(node_label(node, self.running))
            if node.status == PRUNED and tn.children:
                tn.collapse()  # pruned subtrees fold away but stay browsable
        self._new, self._dirty = [], set()
        if newest is not None and self.follow:
            tree = self.query_one("#tree", Tree)
            self.call_after_refresh(tree.scroll_to_node, newest, animate=False)

    def finish(self) -> None:
        """After a run: relabel, highlight the chosen path root to answer."""
        self.flush_tree(force=True)
        self.running = False
        tree = self.query_one("#tree", Tree)
        for nid, tn in self.tnodes.items():
            if nid in self.model.nodes and nid != 0:
                tn.set_label(node_label(self.model.nodes[nid], False))
        chosen = [n for n in self.model.nodes.values() if n.status == CHOSEN]
        if chosen:
            last = max(chosen, key=lambda n: n.depth)
            self.call_after_refresh(tree.scroll_to_node, self.reveal(last.id), animate=False)
        self.refresh_panels()

    # -- lazy tree nodes ------------------------------------------------------------------
    def _materialize(self, node: Node, parent: TreeNode) -> TreeNode:
        tn = parent.add(node_label(node, self.running), data=node.id,
                        expand=not (node.status == PRUNED and node.children))
        self.tnodes[node.id] = tn
        return tn

    def _materialize_children(self, tn: TreeNode) -> None:
        """Make the widget nodes under an expanded node, down through expanded ones."""
        todo = [tn]
        while todo:
            cur = todo.pop()
            model_node = self.model.nodes.get(cur.data)
            if model_node is None:
                continue
            for cid in model_node.children:
                child = self.tnodes.get(cid)
                if child is None and cid in self.model.nodes:
                    child = self._materialize(self.model.nodes[cid], cur)
                if child is not None and child.is_expanded:
                    todo.append(child)

    def reveal(self, node_id: int) -> TreeNode:
        """The widget node for a model node, expanding (and so materializing) its ancestors."""
        for n in self.model.path(self.model.nodes[node_id])[:-1]:
            tn = self.tnodes[n.id]
            if not tn.is_expanded:
                tn.expand()
            self._materialize_children(tn)
        return self.tnodes[node_id]

    @on(Tree.NodeExpanded, "#tree")
    def _expanded(self, message: Tree.NodeExpanded) -> None:
        self._materialize_children(message.node)

    # -- panels ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {"live": 0, "pruned": 0, "finished": 0}
        for n in self.model.nodes.values():
            if n.kind == "root":
                continue
            if n.status in (FINISHED, CHOSEN):
                c["finished"] += 1
            elif n.status == PRUNED:
                c["pruned"] += 1
            elif self.running:
                c["live"] += 1
        return c

    def refresh_panels(self, show_rates: bool = True) -> None:
        show_rates = show_rates and self.show_rates
        self.query_one("#answers", Panel).update(answer_bars(self.groups))
        best = "best: -"
        if self.groups:
            best = f"best: {self.groups[0]['answer']}  confidence {self._leader_confidence():.0%}"
        if self.result is not None:
            best = f"answer: {self.result['answer']}  confidence {self.result['confidence']:.0%}"
        self.query_one("#best", Panel).update(best)
        self._refresh_p_right()
        self._refresh_stop_rule()
        c = self.counts()
        out = Text()
        out.append_text(budget_bar(self.spent, self.budget))
        out.append(f"\ntokens {self.spent}/{self.budget}\n")
        out.append(f"live {c['live']}  pruned {c['pruned']}  finished {c['finished']}\n")
        if show_rates:
            rate = self.rates[-1] if self.rates else 0.0
            out.append_text(sparkline(self.rates))
            out.append(f"\n{rate:.1f} tok/s  elapsed {self.elapsed():.1f}s\n")
        for line in adaptive_compute_lines(self.stop_rule, self.adaptive_stats()):
            out.append(line + "\n")
        if self.info:
            out.append(self.info)
        self.query_one("#compute", Panel).update(out)

    def adaptive_stats(self) -> dict[str, Any] | None:
        """The finished run's stats if it drew adaptively (only those say why it stopped: a
        vote, or auto's probes handing over to a search)."""
        stats = (self.result or {}).get("stats") or {}
        return stats if "stopped_by" in stats else None

    def _refresh_p_right(self) -> None:
        """The probe's estimate that the chosen answer is right, once a probe-scored run is done."""
        panel = self.query_one("#p-right", Panel)
        stats = (self.result or {}).get("stats") or {}
        p = stats.get("p_right")
        shown = p is not None
        if shown:
            panel.update(p_right_text(p, bool(stats.get("p_right_stats_only"))))
        if panel.display != shown:
            panel.display = shown

    def _refresh_stop_rule(self) -> None:
        """The stop posterior and samples used, under the answer, for an adaptive vote only."""
        panel = self.query_one("#stop-rule", Panel)
        stats = self.adaptive_stats()
        shown = self.stop_rule is not None or stats is not None
        if shown:
            panel.update(stop_rule_text(self.stop_rule, stats))
        if panel.display != shown:
            panel.display = shown  # one layout pass when a run turns out adaptive (or a reset)

    def _leader_confidence(self) -> float:
        """The leading answer's share of the summed vote weight."""
        return self.groups[0]["weight"] / (sum(g["weight"] for g in self.groups) or 1.0)

    def elapsed(self) -> float:
        if self.result is not None:
            return float(self.result["seconds"])
        return time.monotonic() - self.active_since if self.active_since is not None else 0.0

    def figures(self) -> dict[str, Any]:
        """Answer, confidence, votes, tokens and time of this view's run, for a figures row."""
        total = sum(g["count"] for g in self.groups)
        votes = f"{self.groups[0]['count']}/{total}" if self.groups else ""
        if self.result is not None:
            return {"answer": self.result["answer"], "confidence": self.result["confidence"], "votes": votes,
                    "tokens": self.result["tokens"], "seconds": self.result["seconds"], "state": "done"}
        waiting = self.active_since is None
        return {"answer": self.groups[0]["answer"] if self.groups else None,
                "confidence": self._leader_confidence() if self.groups else None, "votes": votes,
                "tokens": self.spent, "seconds": None if waiting else self.elapsed(),
                "state": ("waiting" if waiting else "running") if self.running else "stopped"}

    @on(Tree.NodeHighlighted, "#tree")
    def _show_detail(self, message: Tree.NodeHighlighted) -> None:
        nid = message.node.data
        tree = self.query_one("#tree", Tree)
        if tree.has_focus and self.running:
            self.follow = False  # the user moved the cursor: stop following
        if nid is None or nid not in self.model.nodes or nid == 0:
            return
        # Debounced: holding a cursor key moves the cursor at once; the (re-laid-out)
        # detail pane follows when the cursor settles.
        self._detail_for = nid
        if getattr(self, "_detail_timer", None) is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY_S, self._update_detail)

    def _update_detail(self) -> None:
        self._detail_timer = None
        node = self.model.nodes.get(getattr(self, "_detail_for", -1))
        if node is not None:
            self.query_one("#detail", Static).update(detail_text(self.model, node))


def _shown(tn: TreeNode) -> bool:
    """Whether a node's children are on screen: it and all its ancestors are expanded."""
    cur: TreeNode | None = tn
    while cur is not None:
        if not cur.is_expanded:
            return False
        cur = cur.parent
    return True
