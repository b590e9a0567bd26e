"""What a server can do, found at connect: its models, logprobs on a one-token
completion, `n` > 1, its own chat template, and continuing a raw prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tts_tui.backends.openai.client import OpenAIClient, RemoteError


@dataclass
class Capabilities:
    models: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: bool = False
    n: bool = False
    template: bool = False
    continuation: bool = False
    slots: int | None = None  # parallel slots, where the server says (llama-server's /props)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        return [f"models: {', '.join(self.models) or '(none listed)'}",
                f"logprobs: {yes(self.logprobs)}  top logprobs: {yes(self.top_logprobs)}  n > 1: {yes(self.n)}",
                f"chat template (/apply-template): {yes(self.template)}  raw-prompt continuation: {yes(self.continuation)}"
                f"  slots: {self.slots or 'not said'}",
                *self.notes]

    def refuse(self, strategy: str, verifier: str, cut: bool = False, own_template: bool = False) -> str | None:
        """Why this server cannot run `strategy` with `verifier` (None: it can).
        `own_template`: the client renders the chat template itself (--template)."""
        if not self.continuation:
            return "the server does not continue a raw prompt (needed by every strategy)"
        if not self.template and not own_template:
            return "the server renders no chat template (no /apply-template): give --template chatml"
        if verifier == "confidence" and not self.logprobs:
            return "the confidence verifier needs token logprobs, which this server does not return"
        if verifier in ("deepconf", "self-judge") and not self.top_logprobs:
            return f"the {verifier} verifier needs top logprobs, which this server does not return"
        if cut and not self.top_logprobs:
            return "the DeepConf cut needs top logprobs, which this server does not return"
        if strategy in ("bracket", "auto") and not self.top_logprobs:  # auto may hand over to bracket
            return f"{strategy}: bracket's judge needs top logprobs, which this server does not return"
        return None


def probe(client: OpenAIClient, model: str) -> Capabilities:
    caps = Capabilities()
    try:
        listed = client.get("/v1/models")
        data = listed.get("data") if isinstance(listed, dict) else None
        caps.models = [str(m.get("id")) for m in (data if isinstance(data, list) else []) if isinstance(m, dict)]
    except RemoteError as exc:
        caps.notes.append(f"/v1/models: {exc}")
    try:
        out = client.post("/apply-template", {"messages": [{"role": "user", "content": "hi"}]})
        caps.template = isinstance(out, dict) and isinstance(out.get("prompt"), str)
    except RemoteError as exc:
        if exc.transient:
            raise  # down or overloaded: say so, never "renders no template" for the session
        caps.template = False
    # a server that cannot be reached says so here, in one line (not as "cannot continue")
    one = client.post("/v1/completions", {"model": model, "prompt": "1, 2, 3,", "max_tokens": 1,
                                          "temperature": 0.0, "logprobs": 2})
    choices = one.get("choices") if isinstance(one, dict) else None
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    caps.continuation = isinstance(first.get("text"), str)
    lp = first.get("logprobs")
    caps.logprobs = _has_logprobs(lp)
    caps.top_logprobs = _has_top(lp)
    try:  # llama-server says how many requests it decodes at once
        props = client.get("/props")
        slots = props.get("total_slots") if isinstance(props, dict) else None
        caps.slots = slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None
    except RemoteError:
        caps.slots = None
    try:  # n > 1 on its own: a server that refuses it still serves everything else
        two = client.post("/v1/completions", {"model": model, "prompt": "1, 2, 3,", "max_tokens": 1, "n": 2})
        caps.n = isinstance(two, dict) and len(two.get("choices") or []) >= 2
    except RemoteError:
        caps.n = False
    return caps


def _has_logprobs(lp: Any) -> bool:
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        return bool(lp["content"]) and isinstance(lp["content"][0], dict) and "logprob" in lp["content"][0]
    return isinstance(lp, dict) and bool(lp.get("token_logprobs"))


def _has_top(lp: Any) -> bool:
    if isinstance(lp, dict) and isinstance(lp.get("content"), list) and lp["content"]:
        return isinstance(lp["content"][0], dict) and bool(lp["content"][0].get("top_logprobs"))
    return isinstance(lp, dict) and bool(lp.get("top_logprobs"))
