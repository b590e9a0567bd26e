"""Chat templates rendered on this side, for servers that render none (vLLM and SGLang
have no `/apply-template`): ChatML by name, or the model's own Jinja template read from a
file: a `.jinja` file, a Hugging Face `tokenizer_config.json` (its `chat_template`), or a
GGUF file of the same model (its `tokenizer.chat_template` metadata)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tts_tui.errors import InputError

CHATML = "chatml"
Render = Callable[[list[dict[str, str]], bool], str]


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def renderer(spec: str) -> Render:
    """The renderer `--template spec` names: "chatml", or a file holding the template."""
    if spec == CHATML:
        return chatml
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"--template {spec}: neither chatml nor a file (a .jinja template, a "
                         "tokenizer_config.json or the model's GGUF)")
    source, bos, eos, adds_bos = _read(path)
    return _jinja(source, bos, eos, path.name, strip_bos=adds_bos)


def checked(spec: str | None) -> str | None:
    """`--template` as it is kept: "chatml" or the file's absolute path, once it renders."""
    if spec is None or spec == CHATML:
        return spec
    renderer(spec)(  # parse and render once now: a bad template is refused before any run
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], True)
    return str(Path(spec).expanduser().resolve())


def _read(path: Path) -> tuple[str, str, str, bool]:
    """(template, BOS text, EOS text, whether the tokenizer adds BOS itself) from the file (a
    GGUF known by its magic, not its name)."""
    try:
        with path.open("rb") as f:
            is_gguf = f.read(4) == b"GGUF"
        text = "" if is_gguf else path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if is_gguf:
        return _from_gguf(path)
    if path.suffix != ".json":
        return text, "", "", False
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path.name}: not JSON ({exc.msg}, line {exc.lineno})") from None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str):
        raise InputError(f"{path.name} holds no chat_template")
    return template, _token_text(config.get("bos_token")), _token_text(config.get("eos_token")), \
        bool(config.get("add_bos_token"))


def _token_text(token: Any) -> str:
    """A tokenizer_config special token: a string or {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else ""


def _from_gguf(path: Path) -> tuple[str, str, str, bool]:
    from gguf import GGUFReader

    try:
        return _gguf_fields(GGUFReader(str(path)).fields, path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reader raises many kinds on a bad or cut file
        raise InputError(f"{path.name}: not a readable GGUF file ({type(exc).__name__})") from None


def _gguf_fields(fields: Any, path: Path) -> tuple[str, str, str, bool]:
    def string(field: Any, i: int = 0) -> str:
        return bytes(field.parts[field.data[i]]).decode("utf-8", "replace")

    template = fields.get("tokenizer.chat_template")
    if template is None:
        raise InputError(f"{path.name} has no chat template in its metadata")
    tokens = fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        field = fields.get(key)
        if field is None or tokens is None:
            return ""
        return string(tokens, int(field.parts[field.data[0]][0]))

    add_bos = fields.get("tokenizer.ggml.add_bos_token")
    adds = add_bos is not None and bool(add_bos.parts[add_bos.data[0]][0])
    return string(template), token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"), adds


def _jinja(source: str, bos: str, eos: str, name: str, strip_bos: bool = False) -> Render:
    """A Hugging Face style chat template, rendered as transformers renders it (sandboxed,
    its extensions, filters and globals). Where the tokenizer adds BOS itself (`strip_bos`),
    the server adds it when it tokenizes a completions prompt: a BOS the template writes
    is dropped then, as llama-server's own /apply-template drops it, so the prompt holds
    one. (Some models' BOS is a text the template writes anyway, `<|im_start|>`: kept.)"""
    import datetime

    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        template = env.from_string(source)
    except TemplateError as exc:
        raise InputError(f"the chat template in {name} does not parse: {exc}") from None

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        try:
            out = template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                  bos_token=bos, eos_token=eos, tools=None, documents=None)
        except Exception as exc:  # noqa: BLE001 - a template's error is the file's fault, never a crash
            raise InputError(f"the chat template in {name} failed: {type(exc).__name__}: {exc}") from None
        return out[len(bos):] if strip_bos and bos and out.startswith(bos) else out

    return render
