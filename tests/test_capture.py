"""Issue 16 part 1: signals captured during decoding, at no extra decode."""

from __future__ import annotations

import numpy as np
import pytest

import llama_cpp as L
from tts_tui.backends.llamacpp import BranchRequest, SamplingParams, StopRule


def embedding_of(model, tokens: list[int]) -> np.ndarray:
    """The final-norm state at the last of `tokens`, from a fresh context in embeddings
    mode (the reference the captured state must match)."""
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.embeddings = 1024, 1024, True
    params.pooling_type = L.LLAMA_POOLING_TYPE_NONE
    ctx = L.llama_init_from_model(model.ptr, params)
    batch = L.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, t in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, 1
        batch.n_tokens = len(tokens)
        assert L.llama_decode(ctx, batch) == 0
        return np.ctypeslib.as_array(L.llama_get_embeddings_ith(ctx, len(tokens) - 1), shape=(model.n_embd,)).copy()
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


@pytest.mark.model
def test_a_step_carries_the_state_that_predicted_its_last_token(engine, tiny_model):
    prompt = tiny_model.chat_tokens([{"role": "user", "content": "What is 2 + 3? Explain."}])
    root = engine.prefill(prompt)
    rule = StopRule(delimiter="\n\n", max_tokens=24, max_steps=2, capture=True)
    free = engine.free_sequences
    (steps,) = engine.generate([BranchRequest(root, SamplingParams(temperature=0.0), rule, keep_kv=False)])
    assert engine.free_sequences == free
    path = list(prompt)
    for step in steps:
        assert step.hidden is not None and step.hidden.shape == (tiny_model.n_embd,)
        assert len(step.entropies) == len(step.certainties) == len(step.tokens)
        assert all(e >= 0 for e in step.entropies) and all(c >= 0 for c in step.certainties)
        # the state at the step's second-to-last token is the one that predicted its last
        want = embedding_of(tiny_model, path + step.tokens[:-1])
        cos = float(step.hidden @ want / np.linalg.norm(step.hidden) / np.linalg.norm(want))
        assert cos > 0.99, cos
        path += step.tokens


@pytest.mark.model
def test_capture_off_gives_no_state_and_prefill_stays_logits_free(engine, tiny_model):
    root = engine.prefill(tiny_model.chat_tokens([{"role": "user", "content": "Say hi."}]))
    (steps,) = engine.generate([BranchRequest(root, SamplingParams(temperature=0.0),
                                              StopRule(delimiter=None, max_tokens=6), keep_kv=False)])
    assert steps[-1].hidden is None and steps[-1].entropies == []
    # embeddings are switched off again after a capturing decode: a long prefill works
    rule = StopRule(delimiter=None, max_tokens=4, capture=True)
    engine.generate([BranchRequest(root, SamplingParams(temperature=0.0), rule, keep_kv=False)])
    again = engine.prefill(tiny_model.tokenize("word " * 300))
    assert again is not None


def test_the_search_keeps_states_and_statistics_on_nodes_but_not_in_saved_runs():
    from fakes import FakeGenerator
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.run import Search
    from tts_tui.search.strategies.sampling import sample_full
    from tts_tui.verify.answers import MathAnswers

    class Capturing:
        name, needs_capture = "probe", True

        def score(self, search, nodes):
            return [0.5 for _ in nodes]

    class Gen(FakeGenerator):
        def expand(self, requests, **kw):
            assert all(r.stop.capture and r.stop.conf_top_k for r in requests)  # asked for
            return super().expand(requests, **kw)

        def _step(self, i, parent, prefix, answer_stop=False):
            res = super()._step(i, parent, prefix, answer_stop)
            res.entropies, res.certainties = [0.5] * len(res.tokens), [2.0] * len(res.tokens)
            res.hidden = np.ones(4, dtype=np.float32)
            return res

    search = Search(Gen(answers=("42",)), "q", SearchParams(n=2, budget=1000), MathAnswers(), Capturing())
    leaves = sample_full(search, 2)
    assert all(n.hidden is not None and n.meta["ent"] == 0.5 and n.meta["sc"] == 2.0 for n in leaves)
    assert "hidden" not in leaves[0].to_dict()


def test_the_block_top_k_is_exact():
    from tts_tui.backends.llamacpp.branches import _top_k

    rng = np.random.default_rng(0)
    for trial in range(100):
        v = int(rng.choice([151936, 49152, 300]))
        row = (rng.normal(size=v) * rng.uniform(0.1, 8)).astype(np.float32)
        if trial % 3 == 0:
            row = np.round(row)  # ties
        row[rng.integers(0, v)] += rng.uniform(0, 40)
        assert np.array_equal(np.sort(_top_k(row, 20)), np.sort(np.partition(row, v - 20)[v - 20:]))


def tapped_state(model, tokens: list[int], layer: int) -> np.ndarray:
    """Layer `layer`'s output at the last of `tokens`, from a fresh context with a tap (the
    reference a tapping engine's captured state must match)."""
    from tts_tui.backends.llamacpp.tap import LayerTap

    tap = LayerTap(layer, model.n_embd)
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 1024, 1024, 1024
    params.cb_eval, params.cb_eval_user_data = tap.callback, None
    ctx = L.llama_init_from_model(model.ptr, params)
    batch = L.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, t in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, int(i == len(tokens) - 1)
        batch.n_tokens = len(tokens)
        tap.active = True
        assert L.llama_decode(ctx, batch) == 0
        rows = tap.take()
        assert rows is not None and rows.shape == (len(tokens), model.n_embd)
        return rows[-1].copy()
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


@pytest.mark.model
def test_a_layer_tap_captures_that_layers_state_and_changes_no_token(tiny_model):
    from tts_tui.backends.llamacpp import BranchEngine

    layer = tiny_model.n_layer // 2
    tapped = BranchEngine(tiny_model, n_ctx=2048, n_seq_max=8, hidden_layer=layer)
    plain = BranchEngine(tiny_model, n_ctx=2048, n_seq_max=8)
    try:
        prompt = tiny_model.chat_tokens([{"role": "user", "content": "What is 4 + 5? Explain."}])

        def run(engine, capture: bool):
            root = engine.prefill(prompt)
            rule = StopRule(delimiter="\n\n", max_tokens=16, max_steps=2, capture=capture)
            reqs = [BranchRequest(root, SamplingParams(temperature=0.8, seed=s), rule, keep_kv=False) for s in (1, 2)]
            return engine.generate(reqs)

        on, off = run(tapped, True), run(plain, False)
        assert [[s.tokens for s in b] for b in on] == [[s.tokens for s in b] for b in off]
        path = list(prompt)
        for step in on[0]:
            assert step.hidden is not None and step.hidden.shape == (tiny_model.n_embd,)
            want = tapped_state(tiny_model, path + step.tokens[:-1], layer)
            cos = float(step.hidden @ want / np.linalg.norm(step.hidden) / np.linalg.norm(want))
            assert cos > 0.99, cos
            # a middle layer, not the final-norm state
            final = embedding_of(tiny_model, path + step.tokens[:-1])
            assert float(step.hidden @ final / np.linalg.norm(step.hidden) / np.linalg.norm(final)) < 0.99
            path += step.tokens
        # a batch whose tokens are not all outputs (a forced prefix beside a plain branch):
        # each branch's state is its own token's row, not an output's
        root = tapped.prefill(prompt)
        prefix = tuple(tiny_model.tokenize("Sure, here is the sum", add_special=False))
        one = StopRule(delimiter=None, max_tokens=1, capture=True)
        forced, plain_branch = tapped.generate([
            BranchRequest(root, SamplingParams(temperature=0.0), one, prefix=prefix, keep_kv=False),
            BranchRequest(root, SamplingParams(temperature=0.0), one, keep_kv=False)])
        for steps, tokens in ((forced, prompt + list(prefix)), (plain_branch, prompt)):
            want = tapped_state(tiny_model, tokens, layer)
            got = steps[-1].hidden
            assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99
        # the tap sleeps when nobody captures: the graph is never stopped for it
        assert all(s.hidden is None for b in run(tapped, False) for s in b)
        assert tapped._tap.rows is None
        assert all(s.hidden is not None for b in run(tapped, True) for s in b)
    finally:
        tapped.close()
        plain.close()


@pytest.mark.model
def test_a_layer_the_model_lacks_is_one_error(tiny_model):
    from tts_tui.backends.llamacpp import BranchEngine
    from tts_tui.errors import ModelError

    for layer in (tiny_model.n_layer, tiny_model.n_layer - 1):  # none, and the last (its rows are outputs only)
        with pytest.raises(ModelError, match=f"layers 0-{tiny_model.n_layer - 2}"):
            BranchEngine(tiny_model, n_ctx=512, n_seq_max=2, hidden_layer=layer)


@pytest.mark.model
def test_ctrl_c_during_a_tapped_decode_is_raised_and_an_error_in_the_tap_is_not_lost(tiny_model):
    import os
    import signal
    import threading

    from tts_tui.backends.llamacpp import BranchEngine

    engine = BranchEngine(tiny_model, n_ctx=2048, n_seq_max=4, hidden_layer=2)
    try:
        root = engine.prefill(tiny_model.chat_tokens([{"role": "user", "content": "Count to one hundred."}]))
        long = StopRule(delimiter=None, max_tokens=1500, capture=False)
        req = BranchRequest(root, SamplingParams(temperature=0.8, seed=1, ban_eos=True), long, keep_kv=False)
        # nearly all of this run is inside llama_decode, where the tap's callback runs
        # Python at every node: a Ctrl-C must still stop it
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            engine.generate([req])
        timer.join()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # an exception inside the callback (here a width that does not fit) is raised, not
        # swallowed into a silently short graph
        engine._tap.width = 7
        rule = StopRule(delimiter=None, max_tokens=4, capture=True)
        with pytest.raises(ValueError):
            engine.generate([BranchRequest(root, SamplingParams(temperature=0.0), rule, keep_kv=False)])
        engine._tap.width = tiny_model.n_embd
        (steps,) = engine.generate([BranchRequest(root, SamplingParams(temperature=0.0), rule, keep_kv=False)])
        assert steps[-1].hidden is not None  # and the engine still works
    finally:
        engine.close()
