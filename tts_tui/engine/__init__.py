"""The engine: llama.cpp models, contexts, and the batched multi-branch generator.

Nothing here imports textual or rich (tests/test_layers.py checks it).
"""

from tts_tui.engine.branches import BranchEngine, BranchRequest, Handle, StepOutput
from tts_tui.engine.model import LlamaModel
from tts_tui.engine.sampling import SamplingParams, StopRule

__all__ = [
    "BranchEngine",
    "BranchRequest",
    "Handle",
    "LlamaModel",
    "SamplingParams",
    "StepOutput",
    "StopRule",
]
