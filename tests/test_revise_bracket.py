"""Sequential revision and bracket elimination on fakes (generator and judge)."""

from __future__ import annotations

import pytest

from fakes import FakeGenerator, FakeScorer
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import run_strategy
from tts_tui.search.strategies.revise import revision_prompt
from tts_tui.verify.answers import MathAnswers


def make(answers, **kw):
    gen = FakeGenerator(answers=answers)
    params = SearchParams(**{"n": 8, "m": 1, "budget": 10_000, "max_steps": 6, **kw})
    return Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer()), gen


def matches(search):
    return [n for n in search.tree.nodes.values() if n.kind == "match"]


@pytest.mark.parametrize(
    "answers,n,n_matches,rounds",
    [
        (("42",), 1, 0, 0),  # one candidate: champion without a match
        (("41", "42"), 2, 1, 1),
        (("1", "2", "42", "3", "4"), 5, 4, 3),  # five different answers: 3 byes in round 1, then 4 left
        (("1", "2", "3", "4", "5", "6", "7", "42"), 8, 7, 3),
    ],
)
def test_bracket_sizes(answers, n, n_matches, rounds):
    search, gen = make(answers, n=n)
    result = run_strategy("bracket", search)
    assert result.answer == "42"
    assert len(matches(search)) == n_matches
    assert result.stats.get("rounds", 0) == rounds
    if n_matches:
        assert max(gen.compared) >= 1 and sum(gen.compared) == n_matches  # one batch per round


def test_bracket_merges_equivalent_answers_and_carries_votes():
    search, gen = make(("42", "\\frac{84}{2}", "7", "42.0"), n=4)
    result = run_strategy("bracket", search)
    assert result.answer in ("42", "\\frac{84}{2}", "42.0")
    assert result.groups[0].count == 3
    assert len(matches(search)) == 1  # 42-group vs 7 only


def test_bracket_ties_go_to_the_first_contender():
    search, gen = make(("5", "6"), n=2)
    gen.truth = "none"  # the judge cannot tell: P = 0.5
    result = run_strategy("bracket", search)
    m = matches(search)[0]
    assert m.meta["p_a"] == 0.5 and result.chosen == m.meta["winner"] == m.meta["a"]


def test_a_confident_judge_overturns_a_small_majority_but_not_a_large_one():
    search, _ = make(("7", "7", "7", "42"), n=4)  # judge: 0.9 for 42, votes 3:1 for 7
    result = run_strategy("bracket", search)
    m = matches(search)[0]
    assert result.answer == "42" and m.meta["votes"] in ([3, 1], [1, 3]) and m.meta["p_judge"] in (0.9, 0.1)
    search, _ = make(("7",) * 11 + ("42",), n=12)  # 11:1 outweighs the judge's 9:1 odds
    assert run_strategy("bracket", search).answer == "7"


def test_match_probability_combines_judge_odds_and_votes():
    from tts_tui.search.strategies.bracket import match_probability

    assert match_probability(0.5, 1, 1) == pytest.approx(0.5)
    assert match_probability(0.5, 3, 1) == pytest.approx(0.75)
    assert match_probability(0.75, 1, 3) == pytest.approx(0.5)
    assert match_probability(0.0, 1, 1) == pytest.approx(0.2)  # the judge is trusted up to 4:1
    assert match_probability(1.0, 1, 4) == pytest.approx(0.5)


def test_lopsided_matches_are_decided_by_votes_without_the_judge():
    from tts_tui.search.strategies.bracket import decided_by_votes

    assert decided_by_votes(4, 1) and decided_by_votes(1, 7) and not decided_by_votes(3, 1)
    assert not decided_by_votes(2, 2)
    search, gen = make(("7",) * 5 + ("42",), n=6)
    assert run_strategy("bracket", search).answer == "7"
    assert getattr(gen, "compared", []) == []  # the judge was never asked
    assert matches(search)[0].meta["p_judge"] is None


def test_bracket_budget_runs_out_mid_round():
    search, _ = make(("41", "42"), n=8, budget=30)
    result = run_strategy("bracket", search)
    assert result.tokens <= 30


def test_revise_chains_are_paths_and_vote_over_all_attempts():
    search, gen = make(("41", "42", "42", "42"), n=8, m=4)
    result = run_strategy("revise", search)
    attempts = [n for n in search.tree.nodes.values() if "attempt" in n.meta]
    assert len(attempts) == 8 and {n.meta["chain"] for n in attempts} == {1, 2}
    for n in attempts:
        if n.meta["attempt"] > 1:  # each revision is a child of the attempt it revised
            parent = search.tree.parent(n)
            assert parent.answer is not None
    assert result.answer == "42"
    assert len(result.stats["chains"]) == 2 and all(len(c) == 4 for c in result.stats["chains"])
    assert max(gen.calls) == 2  # the chains' attempts go to the engine together


def test_revise_m_equals_1_is_best_of_n_shape():
    search, gen = make(("42",), n=4, m=1)
    run_strategy("revise", search)
    assert gen.calls == [4]


def test_revision_prompt_keeps_the_most_recent_attempts_that_fit():
    prompt, dropped = revision_prompt("P?", ["a" * 50, "b" * 50, "c" * 50], max_chars=120)
    assert dropped == 1 and "Attempt 2:" in prompt and "Attempt 3:" in prompt and "Attempt 1:" not in prompt


def test_revise_continues_each_chain_as_one_conversation():
    search, gen = make(("41", "42"), n=4, m=2)  # 2 chains x 2 attempts
    fresh = []
    root = gen.root
    gen.root = lambda *a, **k: fresh.append(a) or root(*a, **k)
    result = run_strategy("revise", search)
    assert fresh == []  # no new prompts: each revision is a new turn on its attempt's own state
    second = [n for n in search.tree.nodes.values() if n.meta.get("attempt") == 2]
    assert len(second) == 2 and all(n.forced.startswith("[asked to check") for n in second)
    assert all(search.tree.parent(n).answer is not None for n in second)  # grown from attempt 1's end
    assert result.tokens == sum(len(n.tokens) for n in search.tree.nodes.values())


def test_revise_notes_context_trimming_in_events():
    search, _ = make(("42",), n=4, m=4, revise_context_chars=60)
    run_strategy("revise", search)
    assert any("keeps the last" in t for t in search.info)
    asked = [n.meta["asked"] for n in search.tree.nodes.values() if "asked" in n.meta]
    assert "Above are earlier attempts" in asked[-1]  # a fresh prompt quotes the attempts


def test_revise_budget_runs_out_mid_round():
    search, _ = make(("41", "42"), n=8, m=4, budget=40)
    result = run_strategy("revise", search)
    assert result.tokens <= 40


def test_a_looping_attempt_stops_at_its_share_so_the_chain_goes_on():
    """At M=4 a looping attempt once ran a whole run's 4096 tokens (gsm8k test/5): each
    attempt is one of the N samples and gets budget / N."""
    gen = FakeGenerator(answers=("42",), loops=frozenset({0}))
    params = SearchParams(n=4, m=4, budget=400, max_steps=100)
    search = Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer())
    result = run_strategy("revise", search)
    attempts = [n for n in search.tree.nodes.values() if "attempt" in n.meta]
    assert sorted(n.meta["attempt"] for n in attempts) == [1, 2, 3, 4]
    cut = [n for n in search.tree.nodes.values() if n.finish == "length"]
    assert len(cut) == 1 and cut[0].answer is None  # attempt 1 looped: 400 / 4 tokens
    assert search.spent == 100 + 3 * 15  # the revisions (fresh samples in the fake) answer
    assert result.answer == "42" and result.groups[0].count == 3
    assert result.stats["attempt_tokens"] == [[100, 15, 15, 15]]


def test_a_revision_turn_asks_about_the_models_own_solution():
    """In a conversation the attempt is the model's own turn: asked about "earlier
    attempts above", the 1.5B model replied that it had none, on every revision."""
    search, _ = make(("41", "42"), n=2, m=2)
    run_strategy("revise", search)
    (second,) = [n for n in search.tree.nodes.values() if n.meta.get("attempt") == 2]
    asked = second.meta["asked"]
    assert "your solution above" in asked and "earlier attempts" not in asked


def test_bracket_byes_go_to_the_top_seeds():
    # Weights (FakeScorer): 7 carries 1.0 + 0.5 over two votes, 5 carries 1.0, 42 0.33.
    # The top seed, 7, sits out round 1; the two weakest play it.
    search, _ = make(("7", "7", "42", "5"), n=4)
    run_strategy("bracket", search)
    assert "round 1: 7 gets a bye" in search.info
    first, final = matches(search)
    assert {first.meta["round"], final.meta["round"]} == {1, 2}
    assert {search.tree.nodes[first.meta[k]].answer for k in ("a", "b")} == {"5", "42"}


def test_five_candidates_give_byes_to_the_three_best_and_play_the_rest_down_to_four():
    search, _ = make(("1", "2", "42", "3", "4"), n=5)  # weights 1.0, .5, .33, 1.0, .5
    run_strategy("bracket", search)
    byes = [t for t in search.info if "bye" in t]
    assert byes == ["round 1: 1 gets a bye", "round 1: 3 gets a bye", "round 1: 2 gets a bye"]
    round1 = [m for m in matches(search) if m.meta["round"] == 1]
    assert len(round1) == 1
    assert {search.tree.nodes[round1[0].meta[k]].answer for k in ("a", "b")} == {"4", "42"}


class CountingScorer(FakeScorer):
    """FakeScorer that records every node it scores."""

    def __init__(self) -> None:
        self.scored: list[int] = []

    def score(self, search, nodes):
        self.scored.extend(n.id for n in nodes)
        return super().score(search, nodes)


@pytest.mark.parametrize("how", ["last", "min"])
def test_revise_scores_what_the_aggregate_reads_of_each_attempt(how):
    gen = FakeGenerator(answers=("41", "42"))
    search = Search(gen, "What is 6*7?", SearchParams(n=4, m=2, budget=10_000, max_steps=6, aggregate=how),
                    MathAnswers(), CountingScorer())
    run_strategy("revise", search)
    ends = [n for n in search.tree.nodes.values()  # each attempt's answered last step
            if n.answer and all("attempt" in search.tree.nodes[c].meta for c in n.children)]
    steps = [n for n in search.tree.nodes.values() if n.kind == "step"]
    want = ends if how == "last" else steps  # an attempt's own steps: every step once
    assert len(ends) == 4 and len(steps) == 12
    assert sorted(search.scorer.scored) == sorted(n.id for n in want)


def test_revise_weighs_an_attempt_by_its_own_steps():
    """With `min`, attempt 2's weight is the minimum over its own steps, not the
    earlier attempt's (which it revised, on the same path)."""
    gen = FakeGenerator(answers=("41", "42"))
    table = {}

    class Scorer:
        name = "t"

        def score(self, search, nodes):
            return [table.get(n.id, 0.9) for n in nodes]

    search = Search(gen, "What is 6*7?", SearchParams(n=2, m=2, budget=10_000, max_steps=6, aggregate="min"),
                    MathAnswers(), Scorer())
    table[1] = 0.1  # the first attempt's first step
    result = run_strategy("revise", search)
    weights = {g.answer: g.weight for g in result.groups}
    assert weights == {"41": pytest.approx(0.1), "42": pytest.approx(0.9)}
