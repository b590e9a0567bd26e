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
