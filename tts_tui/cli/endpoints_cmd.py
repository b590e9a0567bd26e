"""`tts endpoints list|add|remove|check`: named OpenAI-compatible servers.

Kept in the user config dir (`endpoints.json`, written atomically). An endpoint names the
variable that holds its API key, never the key itself.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from tts_tui.backends.openai.client import safe_url
from tts_tui.errors import TTSError

endpoints_app = typer.Typer(help="Named OpenAI-compatible servers (llama-server, vLLM, SGLang).", no_args_is_help=True)


def load_endpoints() -> dict[str, dict[str, Any]]:
    from tts_tui import paths

    path = paths.config_dir() / "endpoints.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TTSError(f"{path}: not readable as JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _save(endpoints: dict[str, dict[str, Any]]) -> None:
    from tts_tui import paths
    from tts_tui.atomic import write_json

    write_json(paths.config_dir() / "endpoints.json", endpoints)


def endpoint(name: str) -> dict[str, Any]:
    found = load_endpoints().get(name)
    if found is None:
        raise TTSError(f"no endpoint named {name!r} (tts endpoints list)")
    if not isinstance(found, dict) or not found.get("base_url") or not found.get("model"):
        raise TTSError(f"endpoint {name!r} lacks a base_url or a model (tts endpoints add {name} ...)")
    return found


@endpoints_app.command("add")
def add(name: str = typer.Argument(...), base_url: str = typer.Option(..., "--base-url"),
        model: str = typer.Option(..., "--model", help="The server's model name."),
        api_key_env: Optional[str] = typer.Option(None, "--api-key-env"),
        template: Optional[str] = typer.Option(None, "--template", help="chatml, or a file with the model's "
                                               "template (.jinja, tokenizer_config.json, .gguf)."),
        prm_url: Optional[str] = typer.Option(None, "--prm-url", help="A vLLM server pooling a PRM for this one."),
        prm: Optional[str] = typer.Option(None, "--prm", help="That PRM's model name."),
        prm_api_key_env: Optional[str] = typer.Option(None, "--prm-api-key-env",
                                                      help="The variable holding the PRM server's key.")) -> None:
    """Add (or replace) a named endpoint."""
    if bool(prm_url) != bool(prm):
        raise TTSError("give --prm-url URL and --prm NAME together")
    from tts_tui.backends.openai import OpenAIClient

    from tts_tui.backends.openai.templates import checked

    for url in filter(None, (base_url, prm_url)):
        OpenAIClient(url)  # a malformed URL is refused now, not at its first use
    template = checked(template)  # kept as an absolute path: the endpoint works from any directory
    all_ = load_endpoints()
    all_[name] = {"base_url": base_url, "model": model, "api_key_env": api_key_env, "template": template,
                  **({"prm_url": prm_url, "prm": prm, "prm_api_key_env": prm_api_key_env} if prm_url else {})}
    _save(all_)
    print(f"{name}: {safe_url(base_url)} ({model})")


@endpoints_app.command("remove")
def remove(name: str = typer.Argument(...)) -> None:
    all_ = load_endpoints()
    if all_.pop(name, None) is None:
        raise TTSError(f"no endpoint named {name!r}")
    _save(all_)


@endpoints_app.command("list")
def list_() -> None:
    """Named endpoints, one per line."""
    for name, e in sorted(load_endpoints().items()):
        if not isinstance(e, dict) or not e.get("base_url") or not e.get("model"):
            print(f"{name:16} (incomplete: no base_url or model)")
            continue
        key = f"  key from ${e['api_key_env']}" if e.get("api_key_env") else ""
        prm = f"  prm {e['prm']} at {safe_url(e['prm_url'])}" if e.get("prm_url") else ""
        print(f"{name:16} {safe_url(e['base_url']):32} {e['model']}{key}{prm}")


@endpoints_app.command("check")
def check(name: str = typer.Argument(...)) -> None:
    """Probe an endpoint: reachable, its models, logprobs, n, template, continuation."""
    from tts_tui.backends.openai import OpenAIClient
    from tts_tui.backends.openai.capabilities import probe

    from tts_tui.cli.app import _key_from

    e = endpoint(name)
    key = _key_from(e.get("api_key_env"), "the endpoint's api_key_env")
    caps = probe(OpenAIClient(e["base_url"], api_key=key, retries=1, timeout=30), e["model"])
    print(f"{name}: {safe_url(e['base_url'])} ({e['model']})")
    for line in caps.lines():
        print(f"  {line}")
    if e.get("prm_url"):
        from tts_tui.backends.openai.prm import RemotePRM

        prm_key = _key_from(e.get("prm_api_key_env"), "the endpoint's prm_api_key_env")
        RemotePRM(OpenAIClient(e["prm_url"], api_key=prm_key, retries=1, timeout=30), e["prm"]).check()
        print(f"  prm: {e['prm']} at {safe_url(e['prm_url'])}: one reward per step tag")
    if not caps.continuation:
        raise TTSError(f"{name}: not usable (no completion came back)", exit_code=1)
