"""The batched branch engine on the real tiny model (llama.cpp)."""

from __future__ import annotations

import pytest

from tts_tui.engine import BranchEngine, BranchRequest, SamplingParams, StopRule
from tts_tui.errors import ContextOverflowError

pytestmark = pytest.mark.model
GREEDY = SamplingParams(temperature=0.0)


def prompt(model, text="Count from one to twenty, in words, separated by commas."):
    return model.chat_tokens([{"role": "user", "content": text}])


def test_prompt_is_decoded_once_however_many_branches(engine, tiny_model):
    toks = prompt(tiny_model)
    root = engine.prefill(toks)
    assert engine.stats.prompt_tokens == len(toks) - 1
    for n in (1, 4, 8):
        engine.generate([BranchRequest(root, SamplingParams(seed=i), StopRule(max_tokens=4)) for i in range(n)])
    assert engine.stats.prompt_tokens == len(toks) - 1  # never again
    assert engine.stats.fork_tokens == 1 + 4 + 8  # one pending token per branch
    assert engine.stats.rehydrated_tokens == 0


def test_one_decode_per_step_for_all_branches(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model))
    before = engine.stats.decode_calls
    engine.generate([BranchRequest(root, SamplingParams(seed=i), StopRule(delimiter=None, max_tokens=6)) for i in range(8)])
    assert engine.stats.decode_calls - before <= 6  # not 8 x 6


def test_greedy_fork_matches_fresh_greedy_run(tiny_model):
    toks = prompt(tiny_model)
    rule = StopRule(delimiter=None, max_tokens=12)
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=8) as eng:
        root = eng.prefill(toks)
        first = eng.generate([BranchRequest(root, GREEDY, rule)])[0][-1]
        forked = eng.generate([BranchRequest(first.handle, GREEDY, rule)] * 3)
    texts = {steps[-1].text for steps in forked}
    assert len(texts) == 1  # three greedy forks agree
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=8) as fresh:
        start = fresh.prefill(first.handle.tokens)
        again = fresh.generate([BranchRequest(start, GREEDY, rule)])[0][-1]
        assert fresh.stats.rehydrated_tokens == 0
    assert forked[0][-1].tokens == again.tokens


def test_same_seed_same_branch_different_seeds_differ(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model, "Write a short poem about the sea."))
    rule = StopRule(delimiter=None, max_tokens=16)
    hot = [SamplingParams(temperature=1.0, seed=s) for s in (7, 7, 8, 9)]
    outs = engine.generate([BranchRequest(root, p, rule) for p in hot])
    toks = [o[-1].tokens for o in outs]
    assert toks[0] == toks[1]
    assert len({tuple(t) for t in toks[1:]}) == 3


def test_hundreds_of_forks_never_exhaust_sequences(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model))
    free0 = engine.free_sequences
    for i in range(300):
        outs = engine.generate([BranchRequest(root, SamplingParams(seed=i), StopRule(max_tokens=1))] * 2)
        for o in outs:
            engine.release(o[-1].handle)
    assert engine.free_sequences == free0


def test_evicted_handle_is_rehydrated(tiny_model):
    with BranchEngine(tiny_model, n_ctx=2048, n_seq_max=4) as eng:
        root = eng.prefill(prompt(tiny_model))
        handles = []
        for i in range(6):  # more kept handles than sequences: old ones are evicted
            out = eng.generate([BranchRequest(root, SamplingParams(seed=i), StopRule(delimiter=None, max_tokens=3))])
            handles.append(out[0][-1].handle)
        assert handles[0].seq is None
        step = eng.generate([BranchRequest(handles[0], GREEDY, StopRule(delimiter=None, max_tokens=3))])[0][-1]
        assert eng.stats.rehydrated_tokens > 0
        assert len(step.tokens) == 3


def test_stops_at_delimiter_and_token_limit(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model, "Explain in three short paragraphs why the sky is blue."))
    step = engine.generate([BranchRequest(root, GREEDY, StopRule(delimiter="\n\n", max_tokens=200))])[0][-1]
    assert step.finish in ("delimiter", "eos")
    if step.finish == "delimiter":
        assert "\n\n" in step.text
    short = engine.generate([BranchRequest(root, GREEDY, StopRule(delimiter=None, max_tokens=5))])[0][-1]
    assert short.finish == "length" and len(short.tokens) == 5
    assert len(short.logprobs) == 5 and all(lp <= 0 for lp in short.logprobs)


def test_a_step_cut_at_its_token_limit_does_not_end_the_branch(engine, tiny_model):
    # A paragraph longer than the step limit used to end the whole sample unanswered.
    root = engine.prefill(prompt(tiny_model, "Write a long story about a dragon."))
    steps = engine.generate([BranchRequest(root, GREEDY, StopRule(delimiter=None, max_tokens=4, max_steps=3))])[0]
    assert [s.finish for s in steps] == ["length"] * 3
    assert [len(s.tokens) for s in steps] == [4, 4, 4]
    assert steps[-1].handle.tokens[-12:] == tuple(t for s in steps for t in s.tokens)
    # max_total caps the branch as a whole, mid-step
    capped = engine.generate([BranchRequest(root, GREEDY, StopRule(delimiter=None, max_tokens=4, max_steps=10,
                                                                   max_total=6))])[0]
    assert [len(s.tokens) for s in capped] == [4, 2] and capped[-1].finish == "length"


def test_multi_step_branch_reports_each_step(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model, "List three fruits, one per paragraph, separated by blank lines."))
    seen = []
    outs = engine.generate([BranchRequest(root, GREEDY, StopRule(max_tokens=40, max_steps=3))], on_step=seen.append)
    assert seen == outs[0]
    assert 1 <= len(outs[0]) <= 3


def test_prompt_longer_than_context_is_a_clear_error(tiny_model):
    with BranchEngine(tiny_model, n_ctx=256, n_seq_max=4) as eng:
        with pytest.raises(ContextOverflowError, match="context holds"):
            eng.prefill(prompt(tiny_model, "word " * 400))


def test_full_context_finishes_branches_instead_of_crashing(tiny_model):
    with BranchEngine(tiny_model, n_ctx=128, n_seq_max=8) as eng:
        # a ~200-token prompt in a 256-cell cache: six branches soon fill it
        root = eng.prefill(prompt(tiny_model, "Continue this list: " + "apple, pear, " * 45))
        outs = eng.generate([BranchRequest(root, SamplingParams(seed=i, temperature=1.0),
                                           StopRule(delimiter=None, max_tokens=400)) for i in range(6)])
    finishes = {o[-1].finish for o in outs}
    assert "context" in finishes


def test_budget_and_cancel(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model))
    rule = StopRule(delimiter=None, max_tokens=100)
    outs = engine.generate([BranchRequest(root, SamplingParams(seed=i), rule) for i in range(4)], token_budget=10)
    assert sum(len(s.tokens) for o in outs for s in o) <= 10
    assert all(o[-1].finish == "budget" for o in outs)
    calls = iter(range(100))
    outs = engine.generate([BranchRequest(root, GREEDY, rule)], should_stop=lambda: next(calls) >= 3)
    assert outs[0][-1].finish == "cancelled" and len(outs[0][-1].tokens) == 3


def test_judge_scores_read_next_token_logprobs(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model))
    yes = tiny_model.tokenize("Yes", add_special=False)[0]
    no = tiny_model.tokenize("No", add_special=False)[0]
    suffix = tiny_model.tokenize(" Answer Yes or No:", add_special=False)
    [[ly, ln]] = engine.next_token_logprobs([root], [[yes, no]], suffix)
    assert ly < 0 and ln < 0
