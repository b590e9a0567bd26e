"""The words every backend puts around a problem: the solver's system prompt, the A/B
judge's, and how a follow-up turn is cut out of a rendered chat template."""

from __future__ import annotations

from collections.abc import Callable

SYSTEM_PROMPT = (
    "Solve the problem step by step. Write each step as a short paragraph and separate "
    "steps with a blank line. Put the final answer within \\boxed{}."
)
JUDGE_SYSTEM = "You are a careful math teacher who checks solutions."
JUDGE_QUESTION = "Which solution is correct, A or B? Answer with a single letter."

Messages = list[dict[str, str]]


def judge_messages(problem: str, first: str, second: str) -> Messages:
    user = (f"Problem: {problem}\n\nSolution A:\n{first.strip()}\n\n"
            f"Solution B:\n{second.strip()}\n\n{JUDGE_QUESTION}")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def follow_up(render: Callable[[Messages], str], system: str, text: str) -> str:
    """Template text that ends the model's turn and asks `text` as a new user turn: render
    a conversation around a marker and keep what the template puts after the assistant's
    text (the end of its turn, the user turn, the next assistant turn)."""
    mark = "\u2063ATTEMPT\u2063"
    full = render([{"role": "system", "content": system}, {"role": "user", "content": "Q"},
                   {"role": "assistant", "content": mark}, {"role": "user", "content": text}])
    if mark not in full:
        return f"\n\n{text}\n\n"  # a template that drops assistant text: plain continuation
    return full[full.index(mark) + len(mark):]
