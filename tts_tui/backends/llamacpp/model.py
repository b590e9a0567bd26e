"""A loaded GGUF model: weights, vocabulary, chat template. Contexts are made elsewhere."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp as L

from tts_tui.catalog.gguf_file import check_gguf
from tts_tui.backends.llamacpp.backend import ensure_backend
from tts_tui.errors import ModelError

Message = dict[str, str]


class LlamaModel:
    """Owns a `llama_model*`; many BranchEngine contexts may share it."""

    def __init__(self, path: Path | str, n_gpu_layers: int = -1, repack: bool = True) -> None:
        path = Path(path)
        check_gguf(path)
        ensure_backend()
        params = L.llama_model_default_params()
        # -1 = every layer on the GPU where the build has one; a CPU build ignores it.
        params.n_gpu_layers = n_gpu_layers if L.llama_supports_gpu_offload() else 0
        self.n_gpu_layers = params.n_gpu_layers
        # repack=False keeps llama.cpp from re-laying weights for its faster CPU kernels
        # (bench/batch_numerics.py uses it to compare numerical paths).
        params.use_extra_bufts = repack
        self.path = path
        self.ptr = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise ModelError(f"llama.cpp could not load {path} (truncated, corrupt or unsupported GGUF)")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self.ptr))
        self.n_embd = int(L.llama_model_n_embd(self.ptr))
        self.n_layer = int(L.llama_model_n_layer(self.ptr))
        self.eos = int(L.llama_vocab_eos(self.vocab))
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.name = self.meta("general.name") or path.stem
        self.chat_template = self._chat_template()

    # -- metadata -------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1024)
        n = L.llama_model_meta_val_str(self.ptr, key.encode(), buf, ctypes.sizeof(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def _chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    # -- tokens ---------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the size needed
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (cached: this runs once per generated token)."""
        out = self._pieces.get(token)
        if out is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            out = buf.raw[:n]
            self._pieces[token] = out
        return out

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        out = self._eog.get(token)
        if out is None:
            out = bool(L.llama_vocab_is_eog(self.vocab, token))
            self._eog[token] = out
        return out

    # -- chat -----------------------------------------------------------------
    def render_chat(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, by the template in the GGUF's metadata."""
        if not self.chat_template:
            # No template in the file: a plain transcript still works for base models.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant: " if add_generation_prompt else "")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        fmt = Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=self.detokenize([self.eos]) if self.eos >= 0 else "",
            bos_token=self.detokenize([self.bos]) if self.bos >= 0 else "",
            add_generation_prompt=add_generation_prompt,
        )
        try:
            return fmt(messages=messages).prompt
        except Exception as exc:  # a template error is the file's fault, not a crash
            raise ModelError(f"the chat template in {self.path.name} failed: {exc}") from None

    def chat_tokens(self, messages: list[Message], assistant_prefix: str = "") -> list[int]:
        text = self.render_chat(messages) + assistant_prefix
        bos_text = self.detokenize([self.bos]) if self.bos >= 0 else ""
        # The template may already write BOS as text; then do not add a second one.
        add_special = not (bos_text and text.startswith(bos_text))
        return self.tokenize(text, add_special=add_special, parse_special=True)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            L.llama_model_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
