"""Verifiers: the Math-Shepherd PRM path against the reference way of scoring."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tts_tui.search.tree import Tree
from tts_tui.verify.scorers import PRMFormat, PRMScorer, shepherd_text

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["Step 1: Tom starts with 3 apples.\n\n", "Step 2: He buys 4 more, so 3 + 4 = 7.\n\n",
         "Step 3: The answer is: 7"]
# The reference's input for these steps (peiyi9979/math-shepherd-mistral-7b-prm's model
# card): `f"{question} {output}"`, each step ending in " ки", steps joined by "\n".
REFERENCE_OUTPUT = ("Step 1: Tom starts with 3 apples. ки\nStep 2: He buys 4 more, so 3 + 4 = 7. ки\n"
                    "Step 3: The answer is: 7 ки")


def _path_tree() -> tuple[Tree, list]:
    tree = Tree(QUESTION)
    nodes, parent = [], tree.root
    for text in STEPS:
        parent = tree.add(parent, text=text)
        nodes.append(parent)
    return tree, nodes


def test_shepherd_text_is_the_reference_input_ending_at_the_tag():
    steps = list(STEPS)
    assert shepherd_text(QUESTION, steps, " ки\n") == f"{QUESTION} {REFERENCE_OUTPUT}"
    assert shepherd_text(QUESTION, steps[:1], " ки\n") == f"{QUESTION} Step 1: Tom starts with 3 apples. ки"
    assert shepherd_text("Q", ["a", "b"], "\n\n\n\n\n") == "Q a\n\n\n\n\nb\n\n\n\n\n"  # an all-newline tag stays


def _reference_scores(model_path: str) -> list[float]:
    """The reference computation, independently: one plain llama.cpp evaluation of the
    whole input with every position's logits, read at each tag token (the tag's last
    token, `tokenizer.encode("ки")[-1]`), softmax over the good and bad tokens."""
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=512, logits_all=True, flash_attn=False, verbose=False)
    try:
        ids = llm.tokenize(f"{QUESTION} {REFERENCE_OUTPUT}".encode(), add_bos=True, special=False)
        tag_id = llm.tokenize("ки".encode(), add_bos=False, special=False)[-1]
        good = llm.tokenize(b"+", add_bos=False, special=False)[0]
        bad = llm.tokenize(b"-", add_bos=False, special=False)[0]
        llm.eval(ids)
        out = []
        for pos in [i for i, t in enumerate(ids) if t == tag_id]:
            g, b = float(llm.scores[pos][good]), float(llm.scores[pos][bad])
            out.append(1.0 / (1.0 + math.exp(b - g)))
        return out
    finally:
        llm.close()


@pytest.fixture()
def exact_engine(tiny_model, monkeypatch):
    """An engine without flash attention. llama.cpp's CPU flash attention rounds through
    f16, and its result depends on how the tokens were batched: the same input scored
    P(+) 0.277, 0.280 or 0.323 on the tiny model depending on the decode schedule. With
    it off, any schedule gives the same logits, so the reference can be matched exactly."""
    import llama_cpp

    from tts_tui.backends.llamacpp import BranchEngine

    defaults = llama_cpp.llama_context_default_params

    def no_flash_attention():
        params = defaults()
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return params

    monkeypatch.setattr(llama_cpp, "llama_context_default_params", no_flash_attention)
    eng = BranchEngine(tiny_model, n_ctx=1024, n_seq_max=8)
    yield eng
    eng.close()


@pytest.mark.model
def test_math_shepherd_scores_match_the_reference_at_the_step_tag(exact_engine, tiny_path):
    """The tiny model stands in for a PRM: the scorer's P(+) for each step must be the
    reference's, read at the tag token, not one token later after the newline."""
    expected = _reference_scores(str(tiny_path))
    assert len(expected) == len(STEPS)
    tree, nodes = _path_tree()
    got = PRMScorer(exact_engine, PRMFormat()).score(SimpleNamespace(tree=tree), nodes)
    assert got == pytest.approx(expected, abs=1e-4)
