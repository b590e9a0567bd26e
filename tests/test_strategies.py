"""Strategies on a scripted fake generator: logic, batching, budget, cancellation."""

from __future__ import annotations

import json
import threading

import pytest

from fakes import FakeGenerator, FakeScorer
from tts_tui.errors import InputError
from tts_tui.search import events as ev
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import STRATEGIES, run_strategy, validate
from tts_tui.search.tree import CHOSEN, FINISHED, PRUNED, Tree
from tts_tui.verify.answers import MathAnswers


def make(strategy_params=None, gen=None, scorer=True, **kw):
    gen = gen or FakeGenerator()
    params = SearchParams(**{"n": 8, "m": 2, "budget": 10_000, "max_steps": 6, **(strategy_params or {}), **kw})
    seen: list[ev.Event] = []
    search = Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer() if scorer else None, seen.append)
    return search, gen, seen


@pytest.mark.parametrize("name", [s for s in STRATEGIES if s != "keep-thinking"])
def test_every_strategy_finds_the_majority_answer(name):
    search, gen, seen = make()
    result = run_strategy(name, search)
    assert result.answer == "42", (name, result)
    assert result.tokens == search.spent <= search.params.budget
    assert seen[-1].kind == ev.DONE
    chosen = [n for n in search.tree.nodes.values() if n.status == CHOSEN]
    assert chosen and chosen[-1].answer == "42"


@pytest.mark.parametrize("name", ["best-of-n", "majority", "weighted", "beam", "dvts", "mcts"])
def test_branches_of_a_round_go_to_the_engine_together(name):
    search, gen, _ = make()
    run_strategy(name, search)
    assert max(gen.calls) > 1


def test_majority_counts_equivalent_answers_together():
    gen = FakeGenerator(answers=("1/2", "\\frac{1}{2}", "0.5", "3"))
    search, _, _ = make(gen=gen, n=4)
    result = run_strategy("majority", search)
    assert result.groups[0].count == 3
    assert result.confidence == pytest.approx(0.75)


def test_weighted_vote_sums_verifier_scores():
    # branch b scores 1/(1 + b%3): answers 7 (b=0: 1.0), 8 (b=1: .5, b=2: .33) -> 8 sums .83 < 1.0
    gen = FakeGenerator(answers=("7", "8", "8"))
    search, _, _ = make(gen=gen, n=3, m=1)
    result = run_strategy("weighted", search)
    assert result.answer == "7"
    search2, _, _ = make(gen=FakeGenerator(answers=("7", "8", "8")), n=3, m=1)
    assert run_strategy("majority", search2).answer == "8"


def test_a_looping_sample_stops_at_its_share_of_the_budget():
    # Sample 1 never finishes (as "0.000000..." did on gsm8k test/5): it may take budget/N
    # tokens, not the budget the other samples left unspent, and it does not vote.
    gen = FakeGenerator(answers=("42", "7", "42", "7"), loops=frozenset({1}))
    search, _, _ = make(gen=gen, n=4, m=1, budget=200, max_steps=100)
    result = run_strategy("majority", search)
    assert result.answer == "42" and result.groups[0].count == 2
    assert search.spent == 3 * 15 + 200 // 4
    looped = [n for n in search.tree.nodes.values() if n.finish == "length"]
    assert len(looped) == 1 and looped[0].answer is None


def test_cot_may_use_the_whole_budget():
    search, _, _ = make(gen=FakeGenerator(loops=frozenset({0})), n=8, budget=200, max_steps=100)
    run_strategy("cot", search)
    assert search.spent == 200


def test_beam_keeps_n_over_m_and_prunes_the_rest():
    search, gen, _ = make(n=8, m=4)
    run_strategy("beam", search)
    assert gen.calls[0] == 8  # N first steps
    assert all(c <= 8 for c in gen.calls)
    assert any(n.status == PRUNED for n in search.tree.nodes.values())


def test_budget_exhaustion_returns_best_so_far_without_crashing():
    for name in STRATEGIES:
        search, gen, _ = make(budget=23)
        result = run_strategy(name, search)
        assert result.tokens <= 23, name


def test_cancel_stops_the_search_and_leaves_a_consistent_tree():
    cancel = threading.Event()
    cancel.set()
    search, gen, _ = make()
    search.cancel = cancel
    result = run_strategy("beam", search)
    assert result.cancelled
    Tree.from_dict(json.loads(json.dumps(search.tree.to_dict())))


def test_mcts_keeps_half_the_budget_to_finish_its_most_valuable_paths():
    # Solutions are 12 steps deep: widening the tree alone would spend the budget before
    # any path ends (GSM8K: 30% against CoT's 80%). The tree stops at half; the rest
    # rolls N paths out from the best open leaves, in one batched call.
    gen = FakeGenerator(answers=("42", "42", "7"), depth=12)
    search, _, _ = make(gen=gen, n=8, m=2, budget=600, max_steps=24)
    seen = []
    expand = gen.expand
    gen.expand = lambda reqs, **kw: (seen.append([r.sampling.temperature for r in reqs]), expand(reqs, **kw))[1]
    result = run_strategy("mcts", search)
    assert search.spent <= 600
    assert seen[-1] == [0.0] * 8 and all(t > 0 for t in seen[0])  # greedy roll-outs, sampled tree
    finished = [n for n in search.tree.nodes.values() if n.status in (FINISHED, CHOSEN) and n.answer]
    assert len(finished) == 8 and result.groups[0].count + sum(g.count for g in result.groups[1:]) == 8
    assert result.answer == "42"
    assert gen.calls[-1] == 8  # the roll-outs: one call for all of them
    grown = sum(gen.calls[:-1]) * gen.step_tokens
    assert grown >= 300 - 4 * gen.step_tokens  # the tree used its half


def test_mcts_samples_a_leaf_it_rolls_out_twice():
    # A budget of 4 steps: the tree stops after its first 2 children, and 8 roll-outs
    # share 2 leaves. One greedy chain per leaf; the repeats are sampled, not copies.
    gen = FakeGenerator(answers=("42",), depth=12)
    search, _, _ = make(gen=gen, n=8, m=2, budget=4 * gen.step_tokens, max_steps=24)
    seen = []
    expand = gen.expand
    gen.expand = lambda reqs, **kw: (seen.append([r.sampling.temperature for r in reqs]), expand(reqs, **kw))[1]
    run_strategy("mcts", search)
    assert len(seen) == 2 and len(seen[0]) == 2
    assert seen[-1] == [0.0, 0.0] + [search.params.temperature] * 6


def test_keep_thinking_says_wait_when_it_stops_too_early():
    search, gen, _ = make(min_think=40, max_waits=2)
    result = run_strategy("keep-thinking", search)
    forced = [n.forced for n in search.tree.nodes.values() if n.forced]
    assert forced.count("Wait,") + forced.count(" Wait,") == 2
    assert result.answer == "42"


def test_auto_reports_difficulty_and_choice():
    search, gen, seen = make()
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] in ("easy", "medium", "hard")
    assert "difficulty" in result.reason
    assert any(e.kind == ev.INFO for e in seen)


@pytest.mark.parametrize(
    "strategy,kw,msg",
    [
        ("nope", {}, "unknown strategy"),
        ("beam", {"n": 8, "m": 3}, "must divide"),
        ("majority", {"n": 0}, "N must be"),
        ("beam", {"n": 4, "m": 5}, "M must be"),
        ("majority", {"budget": 3}, "budget"),
        ("majority", {"temperature": -1}, "temperature"),
    ],
)
def test_impossible_settings_are_one_line_errors(strategy, kw, msg):
    with pytest.raises(InputError, match=msg):
        validate(strategy, SearchParams(**kw))


def test_events_replay_into_the_same_tree():
    search, gen, seen = make()
    run_strategy("beam", search)
    replay = Tree("")
    for e in seen:
        ev.apply_event(replay, ev.Event.from_dict(json.loads(json.dumps(e.to_dict()))))
    assert {i: (n.text, n.status) for i, n in replay.nodes.items()} == {
        i: (n.text, n.status) for i, n in search.tree.nodes.items()
    }


def test_tree_round_trips_through_json():
    search, _, _ = make()
    run_strategy("dvts", search)
    d = json.loads(json.dumps(search.tree.to_dict()))
    back = Tree.from_dict(d)
    assert back.to_dict() == d
    assert any(n.status == FINISHED or n.status == CHOSEN for n in back.nodes.values())


# -- helpers for the tests below -------------------------------------------------------
class TrackingGenerator(FakeGenerator):
    """Remembers every state it hands out and every release: a run, however it ends,
    must give all of them back."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.handed: dict[int, object] = {}
        self.freed: set[int] = set()

    def root(self, problem, system=None):
        state = super().root(problem, system)
        self.handed[id(state)] = state
        return state

    def expand(self, requests, *, budget, should_stop, on_step):
        def seen(res):
            self.handed[id(res.handle)] = res.handle
            on_step(res)

        return super().expand(requests, budget=budget, should_stop=should_stop, on_step=seen)

    def release(self, state) -> None:
        super().release(state)
        self.freed.add(id(state))

    @property
    def leaked(self) -> list:
        return [s for k, s in self.handed.items() if k not in self.freed]


class TableScorer:
    """Scores node ids from a table (else `default`) and records every node it scores."""

    name = "table"

    def __init__(self, table: dict[int, float] | None = None, default: float = 0.5) -> None:
        self.table = table or {}
        self.default = default
        self.scored: list[int] = []

    def score(self, search, nodes):
        self.scored.extend(n.id for n in nodes)
        return [self.table.get(n.id, self.default) for n in nodes]


def with_scorer(search, scorer):
    search.scorer = scorer
    return scorer


def level(search, depth):
    return [n for n in search.tree.nodes.values() if n.depth == depth]


# -- verifier work: score what the aggregate reads, rank with it ---------------------------
def test_path_score_with_last_scores_the_last_step_alone():
    search, gen, _ = make(n=4, m=1)
    scorer = with_scorer(search, TableScorer())
    run_strategy("weighted", search)
    leaves = [n for n in search.tree.nodes.values() if n.answer]
    assert len(leaves) == 4 and leaves[0].depth == 3
    assert sorted(scorer.scored) == sorted(n.id for n in leaves)  # not the 8 steps before them


def test_path_score_with_min_reads_every_step_in_one_verifier_call():
    search, gen, _ = make(n=4, m=1, aggregate="min")
    calls = []
    scorer = with_scorer(search, TableScorer())
    score = scorer.score
    scorer.score = lambda s, nodes: (calls.append(len(nodes)), score(s, nodes))[1]
    run_strategy("weighted", search)
    assert len(scorer.scored) == 12 == len(set(scorer.scored))
    assert calls == [12]  # batched: a judge or PRM decodes them together


def test_beam_ranks_by_the_aggregate_not_the_last_step():
    # Round 1 keeps nodes 1 and 3. Their children 5, 6 (of 1) and 7, 8 (of 3) rank
    # 7, 8 first by the last step (0.95) but 5, 6 first by the path minimum (0.6 > 0.5).
    table = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.1, 5: 0.6, 6: 0.6, 7: 0.95, 8: 0.95}
    pruned = {}
    for how in ("min", "last"):
        search, gen, _ = make(n=4, m=2, max_steps=3, aggregate=how)
        with_scorer(search, TableScorer(table))
        run_strategy("beam", search)
        assert [search.tree.parent(n).id for n in level(search, 2)] == [1, 1, 3, 3]
        pruned[how] = {n.id for n in level(search, 2) if n.status == PRUNED}
    assert pruned == {"min": {7, 8}, "last": {5, 6}}


def test_dvts_ranks_by_the_aggregate_and_ties_go_to_the_earlier_candidate():
    # One subtree: candidates 3 and 4 share the prefix node 1 (0.3), so by the minimum
    # they tie (0.3) and the earlier one stays; by the last step 4 (0.9) wins.
    table = {1: 0.3, 2: 0.1, 3: 0.6, 4: 0.9}
    kept = {}
    for how in ("min", "last"):
        search, gen, _ = make(n=2, m=2, max_steps=3, aggregate=how)
        with_scorer(search, TableScorer(table))
        run_strategy("dvts", search)
        kept[how] = [n.id for n in level(search, 2) if n.status != PRUNED]
    assert kept == {"min": [3], "last": [4]}


def test_beam_ties_go_to_the_earlier_node():
    search, gen, _ = make(n=4, m=2, max_steps=3)
    with_scorer(search, TableScorer())  # every step scores the same
    run_strategy("beam", search)
    assert [n.id for n in level(search, 1) if n.children] == [1, 2]  # kept and expanded
    assert [n.id for n in level(search, 2) if n.children] == [5, 6]


# -- beam: N/M kept, M expansions each, every round ------------------------------------------
def test_beam_keeps_n_over_m_beams_and_expands_each_m_times_every_round():
    n, m, depth = 8, 4, 5
    search, gen, _ = make(gen=FakeGenerator(depth=depth), n=n, m=m, max_steps=depth + 1)
    run_strategy("beam", search)
    assert gen.calls == [n] * depth  # N first steps, then N/M beams x M children per round
    for d in range(1, depth):
        nodes = level(search, d)
        kept = [x for x in nodes if x.children]
        assert len(nodes) == n and len(kept) == n // m, d
        assert all(len(x.children) == m for x in kept), d
        assert all(x.status == PRUNED for x in nodes if not x.children), d
    assert len(level(search, depth)) == n and all(x.answer for x in level(search, depth))


# -- cancellation mid-run ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["beam", "dvts", "mcts", "majority", "revise", "bracket"])
def test_cancel_mid_run_ends_promptly_with_a_consistent_tree_and_nothing_held(name):
    cancel = threading.Event()
    gen = TrackingGenerator(depth=4)
    added = []

    calls_at_cancel = []

    def listener(e):  # a user pressing escape after the tenth step appears
        if e.kind == ev.NODE_ADDED:
            added.append(e)
            if len(added) == 10:
                cancel.set()
                calls_at_cancel.append(len(gen.calls))

    params = SearchParams(n=8, m=2, budget=10_000, max_steps=6)
    search = Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer(), listener, cancel)
    result = run_strategy(name, search)
    assert result.cancelled
    assert len(added) == 10 and len(gen.calls) == calls_at_cancel[0]  # no engine call after it
    assert not [x for x in search.tree.nodes.values() if x.status == "live" and x.kind != "root"]
    back = Tree.from_dict(json.loads(json.dumps(search.tree.to_dict())))
    assert set(back.nodes) == set(search.tree.nodes)
    assert gen.leaked == []


# -- MCTS: a hard cap on the tree's half -----------------------------------------------------
def test_a_wide_mcts_round_cannot_eat_the_roll_out_reserve():
    # A round of N/M x M = 8 steps of 50 tokens is 400 tokens, more than the tree's half
    # of 600: the round is cut at 300 and the roll-outs get their whole half.
    gen = FakeGenerator(answers=("42",), depth=12, step_tokens=50)
    search, _, _ = make(gen=gen, n=8, m=2, budget=600, max_steps=24)
    budgets, spent_before = [], []
    expand = gen.expand

    def spy(reqs, **kw):
        budgets.append(kw["budget"])
        spent_before.append(search.spent)
        return expand(reqs, **kw)

    gen.expand = spy
    run_strategy("mcts", search)
    assert spent_before[-1] <= 300 and budgets[-1] >= 300  # the roll-outs' call
    assert all(b <= 300 for b in budgets[:-1])


def test_expand_spends_at_most_its_cap():
    search, gen, _ = make(gen=FakeGenerator(depth=12, step_tokens=10))
    search.expand([search.tree.root] * 4, max_steps=5, budget=35)
    assert search.spent == 30 and search.budget_left == 10_000 - 30
    assert search.expand([search.tree.root], budget=0) == [[]]


# -- auto: bins the probes can show, never more than N samples ----------------------------
def test_auto_bins_probes_that_all_disagree_as_hard():
    search, gen, _ = make(gen=FakeGenerator(answers=("1", "2", "3", "4")), n=8, m=2)
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] == "hard" and "1/4 probes agree" in result.reason


def test_auto_difficulty_bins():
    from tts_tui.search.strategies.auto import difficulty_bin

    assert [difficulty_bin(a / 4, 4) for a in range(5)] == ["hard", "hard", "medium", "easy", "easy"]
    assert difficulty_bin(0.5, 2) == "hard" and difficulty_bin(0.5) == "medium"  # 1 of 2; 2 of 4
    assert difficulty_bin(1 / 3, 3) == "hard" and difficulty_bin(1.0, 1) == "easy"


def _root_children(search):
    return [c for c in search.tree.children(search.tree.root) if c.kind != "match"]


def test_auto_never_draws_more_than_n_samples_when_probes_fail():
    # Probes 2 and 3 loop: 2 of 4 agree (medium: weighted at N). The probes count
    # against N whether they answered or not.
    gen = FakeGenerator(answers=("42",), loops=frozenset({2, 3}))
    search, _, _ = make(gen=gen, n=8, m=2)
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] == "medium"
    assert len(_root_children(search)) == 8
    assert result.answer == "42"


def test_auto_hard_search_gets_what_the_probes_left_of_n():
    # No probe answers (hard: beam): beam runs with N - 4 generations, not N more.
    gen = FakeGenerator(answers=("42",), loops=frozenset({0, 1, 2, 3}))
    search, _, _ = make(gen=gen, n=8, m=2)
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] == "hard" and result.stats["chosen_strategy"] == "beam"
    assert len(_root_children(search)) == 8 and gen.calls[1] == 4
    assert result.answer == "42"


def test_mcts_keeps_half_of_what_is_left_for_roll_outs_when_some_budget_is_spent():
    # Under `auto` the probes spend part of the budget first; half of the run's whole
    # budget would then leave the tree phase nothing.
    from tts_tui.search.strategies.mcts import mcts

    search, gen, _ = make({"n": 4, "m": 2, "budget": 400}, gen=FakeGenerator(depth=6, step_tokens=5))
    search.spent = 200  # what probes would have taken
    mcts(search)
    tree_steps = [n for n in search.tree.nodes.values() if n.kind != "root" and n.depth == 1]
    assert len(tree_steps) > 0 and search.spent <= 400
    assert gen.calls[0] == 2  # the first engine call is a tree round (N/M leaves), not the roll-out
