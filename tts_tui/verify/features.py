"""What a learned verifier reads at a node: token statistics of its path, and its hidden state.

The statistics come from what the engine captured while decoding (logprobs; token
confidence, entropy and self-certainty when capture was on), so they cost no decode.
Confidence windows fit our traces (hundreds of tokens, not DeepConf's tens of
thousands): 32 tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tts_tui.search.stopping import lowest_window

if TYPE_CHECKING:
    from tts_tui.search.tree import Node, Tree

WINDOW = 32
STAT_NAMES = ("mean_logprob", "min_logprob", "step_logprob", "step_entropy", "step_self_certainty",
              "lowest_window_conf", "bottom10_conf", "tail_conf", "log_tokens")


def token_stats(path: Sequence[Node]) -> np.ndarray:
    """STAT_NAMES for the path ending at its last node (zeros where nothing was captured)."""
    lps = [x for n in path for x in n.logprobs]
    conf = [c for n in path for c in n.meta.get("conf", [])]
    last = path[-1] if path else None
    step_lp = float(np.mean(last.logprobs)) if last is not None and last.logprobs else 0.0
    out = [
        float(np.mean(lps)) if lps else 0.0,
        float(np.min(lps)) if lps else 0.0,
        step_lp,
        float(last.meta.get("ent", 0.0)) if last is not None else 0.0,
        float(last.meta.get("sc", 0.0)) if last is not None else 0.0,
        lowest_window(conf, WINDOW) or 0.0,
        _bottom_share(conf, WINDOW, 0.1),
        float(np.mean(conf[-WINDOW:])) if conf else 0.0,
        math.log1p(len(lps)),
    ]
    return np.asarray(out, dtype=np.float32)


def _bottom_share(conf: Sequence[float], window: int, share: float) -> float:
    """DeepConf's bottom-10% group confidence: the mean of the lowest `share` of the
    sliding-window means (the whole trace's mean when shorter than a window)."""
    if not conf:
        return 0.0
    c = np.asarray(conf, dtype=float)
    if len(c) <= window:
        return float(c.mean())
    means = np.convolve(c, np.ones(window), mode="valid") / window
    k = max(1, int(len(means) * share))
    return float(np.sort(means)[:k].mean())


def node_features(tree: Tree, node: Node) -> tuple[np.ndarray, np.ndarray | None]:
    """(token statistics, hidden state or None) at `node`."""
    return token_stats(tree.path(node)), node.hidden
