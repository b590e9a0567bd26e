"""Named servers (`tts endpoints add`) as entries of the TUI's model picker.

An entry's value is `endpoint:NAME`, so a remembered setting or `tts tui --endpoint NAME`
is a plain model value. No Textual here: the app probes health on a thread of its own
and the runner connects on its run thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from tts_tui.errors import InputError, TTSError

PREFIX = "endpoint:"
HEALTH_TIMEOUT_S = 5.0  # a server that accepts but never answers must not keep a label "checking" for long

Endpoint = dict[str, Any]  # {base_url, model, api_key_env, template}, as endpoints.json holds it


def is_endpoint(model: str | None) -> bool:
    return bool(model) and str(model).startswith(PREFIX)


def value(name: str) -> str:
    """The picker value of an endpoint."""
    return PREFIX + name


def name_of(model: str) -> str:
    return model[len(PREFIX):]


def configured() -> dict[str, Endpoint]:
    """The endpoints in the config dir; an unreadable file lists none (the picker still opens)."""
    from tts_tui.cli.endpoints_cmd import load_endpoints

    try:
        found = load_endpoints()
    except TTSError:
        return {}
    return {n: e for n, e in found.items() if isinstance(e, dict) and e.get("base_url") and e.get("model")}


def api_key(name: str, e: Endpoint, field: str = "api_key_env") -> str | None:
    """The key from the variable the endpoint names (its policy's, or `prm_api_key_env`
    for its PRM's); the key itself is never shown anywhere."""
    var = e.get(field)
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise InputError(f"endpoint {name}: its API key variable ${var} is not set")
    return key


@dataclass(frozen=True)
class Health:
    label: str  # a word or two for the picker: ok, unreachable, checking…
    detail: str  # one line for the status line

    @property
    def ok(self) -> bool:
        return self.label == "ok"


CHECKING = Health("checking…", "")


def check(name: str, e: Endpoint, timeout: float | None = None) -> Health:
    """Whether the server answers `/v1/models` (one try, a short timeout: this is a label,
    not a run; `tts endpoints check` probes what it can do)."""
    from tts_tui.backends.openai import OpenAIClient
    from tts_tui.backends.openai.client import RemoteError

    from tts_tui.backends.openai.client import safe_url

    where = f"{safe_url(e['base_url'])} ({e['model']})"
    try:
        client = OpenAIClient(e["base_url"], api_key=api_key(name, e), retries=0,
                              timeout=HEALTH_TIMEOUT_S if timeout is None else timeout)
        client.get("/v1/models")
    except InputError as exc:
        return Health("no key", str(exc))
    except RemoteError as exc:
        return Health(_failure_label(str(exc)), f"endpoint {name}: {exc}")
    return Health("ok", f"endpoint {name}: {where} answers")


def _failure_label(error: str) -> str:
    """"error 401" where the server answered with a status (a wrong key, still loading),
    "unreachable" where nothing usable came back."""
    status = re.search(r"answered (\d{3})|tr(?:y|ies) \((\d{3}) ", error)
    return f"error {status.group(1) or status.group(2)}" if status else "unreachable"


def connect(name: str, e: Endpoint):
    """A RemoteSolver for the endpoint, once the server answers (a dead server is one line
    now, not a capability probe that reads its silence as 'cannot continue a prompt')."""
    from tts_tui.backends.openai.client import RemoteError
    from tts_tui.session import RemoteSolver

    health = check(name, e)
    if health.label == "no key":
        raise InputError(health.detail)
    if not health.ok:
        raise RemoteError(health.detail)
    return RemoteSolver(e["base_url"], e["model"], api_key=api_key(name, e), template=e.get("template"),
                        prm_url=e.get("prm_url"), prm_model=e.get("prm"),
                        prm_api_key=api_key(name, e, "prm_api_key_env"))
