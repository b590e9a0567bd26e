"""Backends under the search layer's generator protocol (`search/protocol.py`).

The llama.cpp engine runs in process (`tts_tui/engine`, adapted by
`search/llama_generator.py`); `backends/openai` drives an OpenAI-compatible server
(llama-server, vLLM, SGLang) through its completions API.
"""
