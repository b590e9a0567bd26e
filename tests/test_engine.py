"""The batched branch engine on the real tiny model (llama.cpp)."""

from __future__ import annotations

import llama_cpp as L
import pytest

from tts_tui.backends.llamacpp import BranchEngine, BranchRequest, SamplingParams, StopRule
from tts_tui.errors import ContextOverflowError
from tts_tui.backends.llamacpp.generator import LlamaGenerator

pytestmark = pytest.mark.model
GREEDY = SamplingParams(temperature=0.0)
NO_EOS = SamplingParams(temperature=0.0, ban_eos=True)  # branches of an exact length


def fixed(n):
    """A stop rule that takes exactly n tokens (with NO_EOS)."""
    return StopRule(delimiter=None, max_tokens=n)


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
    # Scoring after a suffix sees what a branch with that suffix forced samples from.
    root = engine.prefill(prompt(tiny_model))
    suffix = tiny_model.tokenize(" Answer Yes or No:", add_special=False)
    [step] = engine.generate([BranchRequest(root, GREEDY, fixed(1), prefix=tuple(suffix))])[0]
    [top] = step.tokens
    other = next(t for t in tiny_model.tokenize("Yes No maybe", add_special=False) if t != top)
    [[lt, lo]] = engine.next_token_logprobs([root], [[top, other]], suffix)
    assert lt == pytest.approx(step.logprobs[0], abs=1e-4)
    assert lt > lo  # greedy took the argmax


def test_a_suffix_longer_than_a_batch_is_decoded_in_chunks(tiny_model):
    toks = prompt(tiny_model)
    suffix = tiny_model.tokenize(" Is every step above right? Answer Yes or No." * 4, add_special=False)
    probe = [tiny_model.tokenize(w, add_special=False)[0] for w in (" Yes", " No", "Yes", "No")]
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=4, n_batch=16) as eng:
        assert len(suffix) + 1 > eng.n_batch
        roots = [eng.prefill(toks), eng.prefill(toks[:-3])]
        chunked = eng.next_token_logprobs(roots, [probe, probe], suffix)
        assert eng.free_sequences == eng.n_seq_max - 2  # the scratch sequences are freed
    # One handle at a time: with two long suffixes in one batch, llama.cpp's CPU kernels
    # round a row by its place in the batch (two copies of one sequence disagree), which
    # moves this model's logprobs far more than the tolerance; that is not tested here.
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=4, n_batch=512) as eng:
        whole = [eng.next_token_logprobs([eng.prefill(t)], [probe], suffix)[0] for t in (toks, toks[:-3])]
    assert chunked[0] != chunked[1]  # two different contexts were scored
    for got, want in zip(chunked, whole):
        assert got == pytest.approx(want, abs=1e-3)


def test_a_branch_with_no_room_left_ends_and_frees_its_sequence(tiny_model):
    with BranchEngine(tiny_model, n_ctx=256, n_seq_max=4) as eng:
        n = eng.n_ctx
        root = eng.prefill(prompt(tiny_model, "word " * 400)[: n - 1], min_new=1)  # room for one token
        free0 = eng.free_sequences
        [[last]] = eng.generate([BranchRequest(root, NO_EOS, fixed(8))])
        assert last.finish == "context" and len(last.tokens) == 1 and len(last.handle) == n
        past = [BranchRequest(last.handle, NO_EOS, fixed(8)),  # the context is full
                BranchRequest(root, NO_EOS, fixed(8), prefix=tuple(root.tokens[1:3]))]  # the prefix overflows it
        for [end] in eng.generate(past):
            assert end.finish == "context" and end.tokens == [] and end.ended
        eng.release(last.handle)
        assert eng.free_sequences == free0  # no sequence leaked
        eng.release(root)
        assert eng.free_sequences == eng.n_seq_max
        assert all(L.llama_memory_seq_pos_max(eng.mem, s) == -1 for s in range(eng.n_seq_max))  # nor cells


def fits(eng, n):
    """Whether n more KV cells are free: a raw decode into an unused sequence (no eviction)."""
    seq, b = eng._free_seqs[0], eng.batch
    for j in range(n):
        b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = 1, j, 1, 0
        b.seq_id[j][0] = seq
    b.n_tokens = n
    ok = L.llama_decode(eng.ctx, b) == 0
    L.llama_memory_seq_rm(eng.mem, seq, -1, -1)
    return ok


def test_free_cells_counts_shared_cells_once(tiny_model):
    with BranchEngine(tiny_model, n_ctx=256, n_seq_max=8) as eng:
        root = eng.prefill(prompt(tiny_model, "Hi."))
        assert eng.free_cells == eng.n_ctx - (len(root) - 1)
        kids = [o[-1].handle for o in eng.generate([BranchRequest(root, NO_EOS, fixed(20))] * 3)]
        grand = [o[-1].handle for o in eng.generate([BranchRequest(kids[0], NO_EOS, fixed(10))] * 2)]
        eng.release(kids[0])  # its cells live on in its children's sequences
        free = eng.free_cells
        assert free == eng.n_ctx - (len(root) - 1) - 3 * 20 - 2 * 10
        for h in kids[1:] + grand:
            h.pinned = True  # the probe must not evict anything
        assert fits(eng, free) and not fits(eng, free + 1)


def test_a_full_cache_evicts_least_recently_used_handles_first(tiny_model):
    with BranchEngine(tiny_model, n_ctx=512, n_seq_max=8) as eng:
        root = eng.prefill(prompt(tiny_model, "Hi."))
        hot = [SamplingParams(temperature=1.0, seed=i, ban_eos=True) for i in range(4)]  # four paths
        kept = [o[-1].handle for o in eng.generate([BranchRequest(root, p, fixed(60)) for p in hot])]
        for h, t in zip(kept, (3.0, 1.0, 4.0, 2.0)):  # not the order they were made in
            h.last_used = t
        free = eng.n_ctx - (len(root) - 1) - 4 * 60
        # a prompt needing 90 more cells than are free: two handles' worth
        other = tiny_model.tokenize("lorem ipsum " * 400, add_special=False)[: free + 91]
        eng.prefill(other)
        assert [h.seq is not None for h in kept] == [True, False, True, False]
        assert eng.free_cells == 2 * 60 - 90  # the new prompt took the rest
        # Growing from an evicted handle evicts the next LRU one (it never evicts itself
        # while its KV is decoded again, although its own last use is the oldest).
        [[step]] = eng.generate([BranchRequest(kept[1], NO_EOS, fixed(2), keep_kv=False)])
        assert len(step.tokens) == 2 and kept[1].seq is not None
        assert eng.stats.rehydrated_tokens == 60
        assert [h.seq is not None for h in kept] == [False, True, True, False]


def solution(k: int, steps: int = 4) -> str:
    return " ".join(f"Step {i}: 12 times 7 is {84 + k}." for i in range(steps)) + f" \\boxed{{{84 + k}}}"


def test_judge_groups_fit_the_free_kv_cells(tiny_model):
    problem = "What is 12 times 7?"
    pairs = [(solution(0), solution(1)), (solution(2), solution(0)), (solution(1), solution(2))]
    with BranchEngine(tiny_model, n_ctx=4096, n_seq_max=16) as big:
        want = LlamaGenerator(big).compare(problem, pairs)
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=16) as eng:
        gen = LlamaGenerator(eng)
        root = gen.root(problem)  # the search's prompt, pinned
        [[kept]] = eng.generate([BranchRequest(root, NO_EOS, fixed(20))])  # a node it may grow again
        free = eng.n_ctx - (len(root) - 1) - 20
        seqs = eng.free_sequences
        groups = []  # the prompt lengths judged in each batch
        score = eng.next_token_logprobs

        def spy(handles, *args):
            groups.append([len(h) for h in handles])
            return score(handles, *args)

        eng.next_token_logprobs = spy
        too_long = (solution(0, steps=80), solution(1))  # no prompt of this pair fits the context
        got = gen.compare(problem, pairs + [too_long])
        assert kept.handle.seq is not None  # the groups fit: nothing was evicted
        assert (eng.free_cells, eng.free_sequences) == (free, seqs)  # the judge's KV is all freed
    assert sum(map(sum, groups)) > free  # every prompt at once would have overflowed the cache
    assert all(sum(g) <= free for g in groups) and max(map(len, groups)) > 1
    # Where a prompt's KV lands in the cache moves this model's near-even verdicts a little.
    assert got[:3] == pytest.approx(want, abs=0.05)
    assert got[3] == 0.5  # no opinion: the bracket decides that match by its votes


def test_a_judge_prompt_the_pinned_prompt_leaves_no_room_for_is_no_opinion(tiny_model):
    # Shorter than the context, longer than what the search's own pinned prompt leaves:
    # the judge must answer 0.5 for that pair, not raise and lose the search.
    problem = "What is 12 times 7? " + "Think it through carefully. " * 40
    with BranchEngine(tiny_model, n_ctx=1024, n_seq_max=16) as eng:
        gen = LlamaGenerator(eng)
        root = gen.root(problem)  # pinned for the whole search
        pair = (solution(0, steps=40), solution(1, steps=1))
        lengths = [len(gen._judge_prompt(problem, a, b)) for a, b in (pair, pair[::-1])]
        assert eng.n_ctx - len(root) < max(lengths) < eng.n_ctx  # passes the context check
        free = eng.free_cells, eng.free_sequences
        assert gen.compare(problem, [pair]) == [0.5]
        assert (eng.free_cells, eng.free_sequences) == free  # nothing left behind
        assert root.seq is not None  # the pinned prompt was never evicted


def test_a_scoring_failure_part_way_leaves_no_handle_busy(engine, tiny_model):
    from tts_tui.errors import ModelError

    root = engine.prefill(prompt(tiny_model))
    outs = engine.generate([BranchRequest(root, NO_EOS, fixed(8)) for _ in range(2)])
    handles = [o[-1].handle for o in outs]
    real = engine._ensure_kv
    calls = []

    def failing(h):
        calls.append(h)
        if len(calls) == 2:
            raise ModelError("the KV cache is full")
        return real(h)

    engine._ensure_kv = failing
    with pytest.raises(ModelError):
        engine.next_token_logprobs(handles, [[1]] * 2)
    engine._ensure_kv = real
    assert not engine._busy  # the first handle's sequence is not protected for good


def test_a_ctrl_c_while_restoring_a_prefix_keeps_no_half_decoded_sequence(engine, tiny_model):
    root = engine.prefill(prompt(tiny_model))
    out = engine.generate([BranchRequest(root, NO_EOS, fixed(8))])[0]
    handle = out[-1].handle
    engine.release(handle)  # its KV gone: the next use decodes its tokens again
    free = engine.free_cells, engine.free_sequences
    real = engine._decode_plain

    def interrupted(seq, pos, tokens):
        real(seq, pos, tokens[: len(tokens) // 2])  # half the prefix decoded, then Ctrl-C
        raise KeyboardInterrupt

    engine._decode_plain = interrupted
    with pytest.raises(KeyboardInterrupt):
        engine._ensure_kv(handle)
    engine._decode_plain = real
    assert handle.seq is None  # not taken for a full prefix by the next request
    assert (engine.free_cells, engine.free_sequences) == free and not engine._busy
    engine._ensure_kv(handle)
    assert handle.seq is not None


def test_a_ctrl_c_while_forking_gives_the_new_sequence_back(engine, tiny_model, monkeypatch):
    from tts_tui.backends.llamacpp import branches

    root = engine.prefill(prompt(tiny_model))
    free = engine.free_sequences
    real = branches.L.llama_memory_seq_cp
    copied: list[int] = []

    def interrupted(mem, src, dst, p0, p1):
        real(mem, src, dst, p0, p1)  # the copy is made, then Ctrl-C lands before the return
        copied.append(dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(branches.L, "llama_memory_seq_cp", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine._alloc_from(root)
    monkeypatch.undo()
    assert engine.free_sequences == free and not engine._busy
    assert branches.L.llama_memory_seq_pos_max(engine.mem, copied[0]) == -1  # its cells given back
    assert copied[0] not in engine._cells
    assert len(engine.generate([BranchRequest(root, NO_EOS, fixed(4))])[0]) >= 1  # the root forks as before

    # a Ctrl-C while a branch starts (its sampler made), before generate holds it
    calls, free = {"n": 0}, engine.free_sequences
    real_make = branches.make_sampler

    def make_then_interrupt(*args):
        sampler = real_make(*args)
        calls["n"] += 1
        branches.L.llama_sampler_free(sampler)
        raise KeyboardInterrupt

    monkeypatch.setattr(branches, "make_sampler", make_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        engine.generate([BranchRequest(root, NO_EOS, fixed(4))])
    monkeypatch.undo()
    assert calls["n"] == 1 and engine.free_sequences == free and not engine._busy
