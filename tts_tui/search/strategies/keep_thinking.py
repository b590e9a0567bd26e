"""Budget forcing (s1): when the model stops before `min_think` tokens, replace the end
with "Wait," and let it go on; when the budget is nearly spent, force the answer."""

from __future__ import annotations

from tts_tui.search.run import Result, Search
from tts_tui.search.tree import Node

WAIT = "Wait,"
FORCE_ANSWER = "\n\nFinal Answer: \\boxed{"
ANSWER_RESERVE = 24  # tokens kept back to force a final answer


def keep_thinking(search: Search) -> Result:
    p = search.params
    greedy = p.sampling(0, temperature=0.0)
    node: Node = search.tree.root
    prefix = ""
    waits = 0
    while not search.stopped:
        reserve = ANSWER_RESERVE if search.budget_left > 2 * ANSWER_RESERVE else 0
        saved = search.params.budget
        search.params.budget = saved - reserve  # leave room to force the answer
        try:
            path = search.expand([node], samplings=[greedy], max_steps=p.max_steps, prefixes=[prefix])[0]
        finally:
            search.params.budget = saved
        if not path:
            break
        node = path[-1]
        ended = node.finish in ("eos", "stop") or node.answer is not None
        if ended and search.spent < p.min_think and waits < p.max_waits and search.budget_left > reserve + 8:
            waits += 1
            search.note(f"stopped at {search.spent} tokens (< {p.min_think}): 'Wait,' #{waits}")
            search.set_status(node, "live")
            prefix = " " + WAIT if node.text and not node.text.endswith((" ", "\n")) else WAIT
            continue
        break
    if node.answer is None and node.kind != "root" and not search.cancel.is_set():
        search.note("budget nearly spent: forcing the final answer")
        path = search.expand([node], samplings=[greedy], max_steps=1, prefixes=[FORCE_ANSWER])[0]
        if path:
            node = path[-1]
            if node.answer is None:
                node.answer = search.answers.extract(search.tree.path_text(node) + "}")
            if node.answer:
                node.status = "finished"
    done = [node] if node.answer else []
    groups = search.vote(done)
    return search.finish("keep-thinking", groups, node if done else None)
