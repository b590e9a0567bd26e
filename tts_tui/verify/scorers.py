"""Verifiers: each scores the last step of a node's path in [0, 1].

- confidence: from the token logprobs the engine already has; no extra model.
- self-judge: the policy model is asked "Is the last step correct?"; the score is
  P(Yes) / (P(Yes) + P(No)) from next-token logits, batched, reusing each node's KV.
- prm: a process reward model in its own GGUF and context (Math-Shepherd style: a
  step tag after each step, P(good) at the tag; or RLHFlow style: one user turn per
  step, P(good) as the assistant's reply).
- deepconf, self-certainty, entropy: training-free signals the engine captures while
  decoding (Fu et al. 2025; Kang et al. 2025), squashed into [0, 1] monotonically.
- probe: a learned verifier on the policy's hidden states (verify/probe.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tts_tui.backends.llamacpp.branches import BranchEngine, Handle
from tts_tui.errors import InputError

if TYPE_CHECKING:
    from tts_tui.search.run import Search
    from tts_tui.search.tree import Node

JUDGE_QUESTION = "Is the last step of this solution correct? Answer Yes or No."
_MARK = "\u2063SOLUTION\u2063"


class ConfidenceScorer:
    """exp(mean token logprob) of the step: the model's own certainty."""

    name = "confidence"

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        out = []
        for n in nodes:
            lp = n.mean_logprob
            out.append(math.exp(lp) if lp is not None else 0.0)
        return out


class DeepConfScorer:
    """DeepConf's bottom-10% group confidence of the path so far (32-token windows)."""

    name = "deepconf"
    needs_confidence = True  # token confidences only: no hidden states, no entropies

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        from tts_tui.verify.features import STAT_NAMES, token_stats

        k = STAT_NAMES.index("bottom10_conf")
        return [_squash(float(token_stats(search.tree.path(n))[k])) for n in nodes]


class SelfCertaintyScorer:
    """Mean self-certainty (KL from uniform to the next-token distribution) of the step."""

    name = "self-certainty"
    needs_capture = True

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        return [_squash(float(n.meta.get("sc", 0.0))) for n in nodes]


class EntropyScorer:
    """exp(-mean entropy) of the step's next-token distributions: 1 when every token is certain."""

    name = "entropy"
    needs_capture = True

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        return [math.exp(-float(n.meta.get("ent", 0.0))) if "ent" in n.meta else 0.0 for n in nodes]


def _squash(x: float) -> float:
    """A non-negative signal to [0, 1), order kept."""
    return max(0.0, x) / (1.0 + max(0.0, x))


def _first_token(engine: BranchEngine, text: str) -> int:
    return engine.model.tokenize(text, add_special=False, parse_special=False)[0]


class SelfJudgeScorer:
    name = "self-judge"

    def __init__(self, engine: BranchEngine, question: str = JUDGE_QUESTION) -> None:
        self.engine = engine
        model = engine.model
        # The text between the end of the assistant's partial answer and the judge's
        # reply, as the model's own chat template writes it.
        turns = [{"role": "user", "content": "P"}, {"role": "assistant", "content": _MARK}]
        full = model.render_chat(turns + [{"role": "user", "content": question}], add_generation_prompt=True)
        suffix = full.split(_MARK, 1)[1] if _MARK in full else f"\n\n{question}\n"
        self.suffix = model.tokenize(suffix, add_special=False, parse_special=True)
        self.yes = [_first_token(engine, w) for w in ("Yes", "yes")]
        self.no = [_first_token(engine, w) for w in ("No", "no")]

    def score_texts(self, prompt: Sequence[int], texts: Sequence[str]) -> list[float]:
        """The judge on finished solutions given as text after `prompt` (the problem's chat
        tokens), judged as `score` judges a node. The prompt is decoded once and each
        solution forks from it, one at a time: N whole solutions held at once would not fit
        the context on a long problem."""
        model = self.engine.model
        root = self.engine.prefill(prompt)
        out: list[float] = []
        try:
            for t in texts:
                h = self.engine.prefill([*prompt, *model.tokenize(t, add_special=False, parse_special=False)])
                try:
                    out += self._judge([h])
                finally:
                    self.engine.release(h)
        finally:
            self.engine.release(root)
        return out

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        handles = [n.state for n in nodes]
        if any(not isinstance(h, Handle) for h in handles):
            raise InputError("self-judge needs nodes from the llama.cpp engine")
        return self._judge(handles)

    def _judge(self, handles: Sequence[Handle]) -> list[float]:
        sets = [self.yes + self.no] * len(handles)
        out = []
        for lps in self.engine.next_token_logprobs(handles, sets, self.suffix):
            py = sum(math.exp(x) for x in lps[: len(self.yes)])
            pn = sum(math.exp(x) for x in lps[len(self.yes) :])
            out.append(py / (py + pn) if py + pn > 0 else 0.5)
        return out


@dataclass(frozen=True)
class PRMFormat:
    format: str = "math-shepherd"  # or "rlhflow"
    step_tag: str = " ки\n"
    good_token: str = "+"
    bad_token: str = "-"


def shepherd_text(problem: str, steps: list[str], step_tag: str) -> str:
    """Math-Shepherd's input: `question + " " + output`, each step followed by the tag,
    the last one ending at the tag itself. The reference reads P(good) from the logits
    at the tag token (what the model predicts after reading it), so the text must end
    there, not after the newline that separates steps (" ки\n" -> " ки")."""
    tag = step_tag.rstrip("\n") or step_tag  # a tag that is all newlines stays whole
    body = step_tag.join(s.strip() for s in steps) + tag
    return f"{problem.strip()} {body}"


class PRMScorer:
    """A process reward model in its own context; scoring decodes are batched."""

    name = "prm"

    def __init__(self, engine: BranchEngine, fmt: PRMFormat) -> None:
        self.engine = engine
        self.fmt = fmt
        self.good = _first_token(engine, fmt.good_token)
        self.bad = _first_token(engine, fmt.bad_token)

    def _tokens(self, problem: str, steps: list[str]) -> list[int]:
        model = self.engine.model
        if self.fmt.format == "rlhflow":
            msgs = []
            for i, step in enumerate(steps):
                content = f"{problem} {step.strip()}" if i == 0 else step.strip()
                msgs.append({"role": "user", "content": content})
                if i < len(steps) - 1:
                    msgs.append({"role": "assistant", "content": self.fmt.good_token})
            return model.chat_tokens(msgs)
        return model.tokenize(shepherd_text(problem, steps, self.fmt.step_tag), add_special=True, parse_special=False)

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        handles = []
        for n in nodes:
            steps = [p.forced + p.text for p in search.tree.path(n)]
            handles.append(self.engine.prefill(self._tokens(search.tree.problem, steps)))
        try:
            lps = self.engine.next_token_logprobs(handles, [[self.good, self.bad]] * len(handles))
        finally:
            for h in handles:  # keep KV cached for prefix reuse, but let eviction take it
                h.pinned = False
        out = []
        for g, b in lps:
            pg, pb = math.exp(g), math.exp(b)
            out.append(pg / (pg + pb) if pg + pb > 0 else 0.5)
        return out
