"""Issue 15 part 1: a sample that answered is counted, and no token is spent after it."""

from __future__ import annotations

import pytest

from fakes import FakeGenerator, FakeScorer
from tts_tui.backends.protocol import answer_complete
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import run_strategy
from tts_tui.search.strategies.sampling import sample_full
from tts_tui.search.tree import FINISHED
from tts_tui.verify.answers import MathAnswers

ALL = frozenset(range(64))


def make(gen, **kw):
    params = SearchParams(**{"n": 5, "budget": 10_000, "max_steps": 8, **kw})
    return Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer())


@pytest.mark.parametrize("strategy", ["majority", "weighted", "best-of-n", "bracket", "auto"])
def test_a_sample_that_wrote_on_after_its_answer_still_votes(strategy):
    # An engine that writes code after "\boxed{42}" until max_steps: the leaf is a code
    # step, but the sample answered, so it must be counted.
    gen = FakeGenerator(answers=("42", "42", "41", "42", "7"), depth=2, chatter=ALL, stops_at_answer=False)
    search = make(gen)
    result = run_strategy(strategy, search)
    assert result.answer == "42"
    counted = sum(g.count for g in result.groups)
    assert counted >= 4, result.groups  # auto may stop at its 4 probes; the others count all 5


def test_every_ended_leaf_carries_its_paths_answer():
    gen = FakeGenerator(answers=("42", "41"), depth=2, chatter=ALL, stops_at_answer=False)
    search = make(gen, n=4)
    leaves = sample_full(search, 4)
    assert [n.answer for n in leaves] == ["42", "41", "42", "41"]
    assert all(n.status == FINISHED for n in leaves)
    assert all(n.finish == "delimiter" and "```" in n.text for n in leaves)  # really a code step


def test_a_leaf_cut_by_its_share_after_answering_carries_the_answer():
    gen = FakeGenerator(answers=("42",), depth=2, step_tokens=5, chatter=ALL, stops_at_answer=False)
    search = make(gen, n=2, budget=40)  # share 20 tokens: the answer at 10, cut at 20
    leaves = sample_full(search, 2)
    assert [n.finish for n in leaves] == ["length", "length"]
    assert [n.answer for n in leaves] == ["42", "42"]


def test_samples_ask_the_engine_to_stop_at_the_answer_and_spend_nothing_after():
    on = FakeGenerator(answers=("42",), depth=2, chatter=ALL)
    off = FakeGenerator(answers=("42",), depth=2, chatter=ALL, stops_at_answer=False)
    s_on, s_off = make(on, n=3), make(off, n=3)
    leaves = sample_full(s_on, 3)
    sample_full(s_off, 3)
    assert all(n.finish == "stop" and n.answer == "42" for n in leaves)
    assert s_on.spent == 3 * 2 * on.step_tokens  # two steps each, nothing after the answer
    assert s_off.spent > s_on.spent


def test_a_sample_cut_unanswered_has_no_answer_and_is_not_guessed_from_a_number():
    gen = FakeGenerator(answers=("42",), depth=50, step_tokens=5)  # never reaches its answer
    search = make(gen, n=2, budget=60)
    leaves = sample_full(search, 2)
    assert all(n.answer is None for n in leaves)  # "Step 6 of branch 0." is not an answer


@pytest.mark.parametrize("text, done", [
    ("so the total is \\boxed{18", False),
    ("so the total is \\boxed{18}", True),
    ("\\boxed{\\frac{1}{3}", False),
    ("\\boxed{\\frac{1}{3}}", True),
    ("within \\boxed{}", False),
    ("**Final Answer:**\n", False),  # the formula follows on the next lines
    ("**Final Answer:** 18\n", True),
    ("Final Answer: 18", False),  # the line has not ended
    ("Final Answer: 18\n", True),
    ("The final answer is: 7\n", True),
    ("To get the final answer, we add:\n", False),
    ("Final Answer: \\[\n", False),
    ("\\boxed{1} first, then \\boxed{2", False),
    # prose that mentions a final answer, and a marker whose answer follows on the next line
    ("To find the final answer: we add April and May.\n", False),
    ("**Final Answer**: The total is\n", False),
    ("**Final Answer**: The total is 72.\n", False),  # a sentence: left to the box or the end
    ("Final Answer: A\n", True),
    ("Final Answer: (3, -1)\n", True),
    ("Final Answer: \\(x \\leq 2\\)\n", True),
    # an answer the line has not finished
    ("**Final Answer:** \\[ \\begin{pmatrix}\n", False),
    ("Final Answer: \\frac{3}{\n", False),
    ("Final Answer: 3 +\n", False),
    ("The final answer is: we need to add 3 and 4.\n", False),
    ("### Final Answer: 72\n", True),
    # a box the model writes in code is not its answer
    ("```python\nprint(\"\\\\boxed{5}\")\n", False),
    ('print(f"\\\\boxed{{{ans}}}")', False),
    ("```python\nx = 1\n```\nSo \\boxed{72}", True),
    ("Put the final answer within \\boxed{}.\nFinal Answer: 72\n", True),
])
def test_answer_complete(text, done):
    assert answer_complete(text) is done


@pytest.mark.model
def test_the_engine_ends_a_branch_when_its_boxed_answer_closes(engine, tiny_model):
    from tts_tui.backends.llamacpp import BranchRequest, SamplingParams, StopRule

    toks = tiny_model.chat_tokens([{"role": "user", "content": "What is 2 + 3? Explain your answer in three sentences."}])
    root = engine.prefill(toks)
    prefix = tuple(tiny_model.tokenize("We get \\boxed{", add_special=False, parse_special=False))
    greedy = SamplingParams(temperature=0.0)

    def run(answer_stop: bool):
        rule = StopRule(delimiter=None, max_tokens=32, answer_stop=answer_stop)
        return engine.generate([BranchRequest(root, greedy, rule, prefix=prefix, keep_kv=False)])[0][-1]

    free = engine.free_sequences
    on, off = run(True), run(False)
    in_code = engine.generate([BranchRequest(root, greedy, StopRule(delimiter=None, max_tokens=32, answer_stop=True,
                                                                   in_code=True), prefix=prefix, keep_kv=False)])[0][-1]
    assert in_code.text == off.text  # a box inside an open code fence is code: no stop
    assert "}" in off.text and len(off.tokens) > len(on.tokens)  # the model writes on after the box
    assert on.finish == "stop" and on.ended
    assert on.text.rstrip().endswith("}") and off.text.startswith(on.text)  # same tokens, cut at the answer
    assert answer_complete(on.forced + on.text)
    assert engine.free_sequences == free  # both branches gave their sequences back


class Scripted(FakeGenerator):
    """Every branch writes the same steps; the last one ends the solution (eos)."""

    def __init__(self, steps: list[str], **kw) -> None:
        super().__init__(depth=len(steps), **kw)
        self.steps = steps

    def _step(self, i, parent, prefix, answer_stop=False):
        res = super()._step(i, parent, prefix, answer_stop)
        res.text = self.steps[min(res.handle.depth, len(self.steps)) - 1]
        return res


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts", "majority"])
def test_a_step_that_only_mentions_a_final_answer_does_not_finish_later_steps(strategy):
    # One step at a time (beam, DVTS, MCTS), every step ends its branch: a number in the
    # working must not become the answer because an earlier step said "final answer".
    gen = Scripted(["In May she sold 48/2 = 24 clips.\n\n",
                    "To get the final answer we add April and May.\n\n",
                    "In April she sold 50 clips.\n\n", "Altogether she sold \\boxed{72}."])
    search = make(gen, n=4, m=2, max_steps=8)
    assert run_strategy(strategy, search).answer == "72"


def test_a_branch_that_answered_and_wrote_on_finishes_once():
    gen = Scripted(["First we add.\n\n", "So the answer is 41.\n\n", "```python\nprint(41)\n```\n\n",
                    "```python\nprint(41)\n```"])
    search = make(gen, n=4)
    leaves = sample_full(search, 4)
    assert [n.answer for n in leaves] == ["41"] * 4
    finished = search.tree.finished()
    assert sorted(n.id for n in finished) == sorted(n.id for n in leaves)  # one vote per sample


def test_a_fence_opened_in_an_earlier_step_keeps_its_box_code():
    assert answer_complete("x\n```\nSo \\boxed{72}", in_code=True)  # the fence closes first
    assert not answer_complete("print(\"\\boxed{5}\")", in_code=True)


def test_a_later_step_that_only_mentions_the_answer_does_not_replace_it():
    gen = Scripted(["So the answer is 41.\n\n",
                    "To double-check the final answer, note that 6 times 7 is 42.\n\n", "More.\n\n"])
    search = make(gen, n=2, max_steps=2)
    leaves = sample_full(search, 2)
    assert [n.answer for n in leaves] == ["41", "41"]


def test_a_step_that_closes_an_earlier_fence_and_boxes_its_answer_is_answered():
    # Seen on gsm8k test/74: code opened in one step, closed in the next, which then
    # boxed the answer and was cut by its share. The box comes after the fence closes:
    # it is the answer, not code.
    gen = Scripted(["We compute it.\n```python\nprice = 2.74\n\n",
                    "print(price * 12)\n```\n```output\n60.0\n```\nArtie makes \\(\\boxed{60}\\) dollars\n\n",
                    "More words.\n\n", "The end."], stops_at_answer=False)
    search = make(gen, n=2, max_steps=2)  # the boxed step is each branch's last
    leaves = sample_full(search, 2)
    assert [n.answer for n in leaves] == ["60", "60"]
    assert all(n.status == FINISHED for n in leaves)


def test_a_branch_that_starts_inside_a_fence_tells_the_engine():
    gen = Scripted(["We compute it.\n```python\nx = 1\n\n", "print(x)\n```\n\n", "Done: \\boxed{1}"])
    search = make(gen, n=1, max_steps=1)
    first = search.expand([search.tree.root])[0][-1]
    seen = []
    expand = gen.expand
    gen.expand = lambda reqs, **kw: seen.extend(r.stop.in_code for r in reqs) or expand(reqs, **kw)
    second = search.expand([first])[0][-1]
    search.expand([second])
    assert seen == [True, False]  # inside the fence, then after it closed
