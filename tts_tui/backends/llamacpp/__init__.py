"""The llama.cpp backend: models, contexts, the batched multi-branch engine, and its generator.

Nothing here imports textual or rich (tests/test_layers.py checks it).
"""

from tts_tui.backends.llamacpp.branches import BranchEngine, BranchRequest, Handle, StepOutput
from tts_tui.backends.llamacpp.model import LlamaModel
from tts_tui.backends.llamacpp.generator import LlamaGenerator
from tts_tui.backends.protocol import SamplingParams, StopRule

__all__ = [
    "BranchEngine",
    "BranchRequest",
    "Handle",
    "LlamaGenerator",
    "LlamaModel",
    "SamplingParams",
    "StepOutput",
    "StopRule",
]
