"""An OpenAI-compatible completions server as a generator (llama-server, vLLM, SGLang)."""

from tts_tui.backends.openai.client import OpenAIClient, RemoteError
from tts_tui.backends.openai.generator import RemoteGenerator

__all__ = ["OpenAIClient", "RemoteError", "RemoteGenerator"]
