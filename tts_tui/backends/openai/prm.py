"""A process reward model served by vLLM's pooling API, in Qwen2.5-Math-PRM's format.

The solution's steps are joined by the PRM's step tag (`<extra_0>`), one tag after every
step, inside its chat template; vLLM's STEP pooler returns, at each tag, the softmax over
the PRM's two classes, [P(wrong), P(right)]. A node's score is P(right) at its last step,
as the local PRM scores it. Served with, for example:

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling --port 8001
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from tts_tui.backends.openai.client import OpenAIClient, RemoteError, count_of

STEP_TAG = "<extra_0>"
# the system prompt of Qwen2.5-Math-PRM's model card: the PRM was trained with it
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def prm_input(problem: str, steps: Sequence[str], step_tag: str = STEP_TAG, system: str = SYSTEM) -> str:
    """The PRM's chat (ChatML, as Qwen2.5's template renders it): the problem from the user,
    the steps from the assistant, each ended by the step tag."""
    body = "".join(s.strip() + step_tag for s in steps if s.strip())
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{problem.strip()}<|im_end|>\n"
            f"<|im_start|>assistant\n{body}<|im_end|>\n")


def step_rewards(data: Any) -> list[float]:
    """P(right) at each step tag from one pooling output: a row per tag, [P(wrong), P(right)]."""
    if not isinstance(data, list) or not all(isinstance(r, list) and len(r) == 2 for r in data):
        raise RemoteError("the PRM's pooling output is not one [P(wrong), P(right)] pair per step "
                          "(is it a process reward model served with --runner pooling?)")
    try:
        return [float(r[1]) for r in data]
    except (TypeError, ValueError):
        raise RemoteError("the PRM's pooling output holds a value that is not a number") from None


class RemotePRM:
    """Scores nodes with a PRM on a vLLM server: one /pooling request for all of them."""

    name = "prm"

    def __init__(self, client: OpenAIClient, model: str, step_tag: str = STEP_TAG) -> None:
        self.client = client
        self.model = model
        self.step_tag = step_tag
        self.prompt_tokens = 0  # over every solve (each solve's own are in its stats)
        self._lock = threading.Lock()

    def score(self, search: Any, nodes: Sequence[Any]) -> list[float]:
        if not nodes:
            return []
        inputs = [prm_input(search.tree.problem, [p.forced + p.text for p in search.tree.path(n)], self.step_tag)
                  for n in nodes]
        resp = self.client.post("/pooling", {"model": self.model, "input": inputs})
        try:
            outputs = sorted(resp["data"], key=lambda d: d["index"])
            rewards = [step_rewards(d["data"]) for d in outputs]
        except (KeyError, TypeError):
            raise RemoteError(f"{self.client.shown}/pooling: the answer has no data[i].data") from None
        if len(rewards) != len(nodes):
            raise RemoteError(f"{self.client.shown}/pooling: {len(rewards)} outputs for {len(nodes)} inputs")
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        tokens = count_of(usage.get("prompt_tokens"))
        with self._lock:
            self.prompt_tokens += tokens
        add = getattr(search.gen, "add_usage", None)  # the solve's counts, on a remote policy
        if add is not None:
            add({"prm_prompt_tokens": tokens})
        # a node with no step text yet (the root) has no tag: it is scored as a coin
        return [r[-1] if r else 0.5 for r in rewards]

    def check(self) -> None:
        """One tiny request: the server pools, and answers one pair per step tag."""
        resp = self.client.post("/pooling", {"model": self.model, "input": [prm_input("1 + 1?", ["2"], self.step_tag)]})
        try:
            rewards = step_rewards(resp["data"][0]["data"])
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.client.shown}/pooling: the answer has no data[0].data") from None
        if len(rewards) != 1:
            raise RemoteError(f"{self.client.shown}: the PRM answered {len(rewards)} step rewards for one "
                              f"step tag ({self.step_tag}): not a Qwen2.5-Math-PRM-style model")
