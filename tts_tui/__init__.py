"""tts-tui: test-time scaling of a small local LLM, batched on llama.cpp, shown live."""

__version__ = "0.1.0"
