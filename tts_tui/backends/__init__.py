"""Backends under the search layer's generator protocol (`backends/protocol.py`).

`backends/llamacpp` runs llama.cpp in process (the batched branch engine and its
generator); `backends/openai` drives an OpenAI-compatible server (llama-server, vLLM,
SGLang) through its completions API. The search layer knows the protocol, never a backend.
"""
