"""A learned verifier: logistic regression on the policy's hidden state and token statistics.

Trained from outcome labels (every step-end state of a sample gets its sample's label,
as outcome-supervised value models do), scored by a dot product. Standardised features,
optionally projected on the hidden states' top principal components first; the L2
strength and the projection are chosen by cross-validation split by problem, on the
within-question AUROC (what a vote needs: telling a problem's right samples from its
wrong ones). The file is tied to the policy's sha256: a probe is refused on another model.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tts_tui.errors import InputError
from tts_tui.verify.features import STAT_NAMES, node_features

if TYPE_CHECKING:
    from tts_tui.search.run import Search
    from tts_tui.search.tree import Node

FORMAT = 2  # 2 added `layer`; a format-1 file reads as a final-norm probe
READS = (1, 2)


@dataclass
class Probe:
    """Everything a score needs: standardisation, projection, weights; and provenance."""

    model_sha256: str
    model_name: str
    mean: np.ndarray  # of the raw feature vector [stats, hidden]
    std: np.ndarray
    weights: np.ndarray  # on the (projected) standardised features
    bias: float
    projection: np.ndarray | None = None  # (n_embd, k): hidden -> top-k components
    n_stats: int = len(STAT_NAMES)
    info: dict[str, Any] = field(default_factory=dict)  # training set size, CV scores, settings
    layer: int | None = None  # the layer whose output it reads (None: the final-norm state)

    def design(self, stats: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """Rows of [stats, hidden] -> standardised (and projected) features."""
        x = (np.hstack([stats, hidden]) - self.mean) / self.std
        if self.projection is not None:
            x = np.hstack([x[:, : self.n_stats], x[:, self.n_stats:] @ self.projection])
        return x

    def predict(self, stats: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        return _sigmoid(self.design(stats, hidden) @ self.weights + self.bias)

    # -- file ----------------------------------------------------------------------------
    def save(self, dest: Path) -> None:
        """One .npz, written atomically (a kill leaves the old file or none)."""
        from tts_tui.atomic import fsync_replace

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial")
        # a final-norm probe is written as format 1, which older versions read too
        meta = {"format": FORMAT if self.layer is not None else 1, "model_sha256": self.model_sha256,
                "model_name": self.model_name, "bias": self.bias, "n_stats": self.n_stats, "info": self.info,
                **({"layer": self.layer} if self.layer is not None else {})}
        arrays = {"mean": self.mean, "std": self.std, "weights": self.weights}
        if self.projection is not None:
            arrays["projection"] = self.projection
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        fsync_replace(tmp, dest)

    @classmethod
    def load(cls, path: Path, model_sha256: str | None = None) -> Probe:
        """Read a probe; with `model_sha256`, refuse one trained for another model."""
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{path}: not a verifier probe file ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") not in READS:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise InputError(f"{path}: probe format {got} (this version reads {', '.join(map(str, READS))})")
        if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
            raise InputError(f"{path} was trained for {meta.get('model_name')} "
                             f"(sha256 {str(meta.get('model_sha256'))[:12]}), not this model "
                             f"(sha256 {model_sha256[:12]}): train one with tts verifier train")
        try:
            return cls(meta["model_sha256"], meta["model_name"], arrays["mean"], arrays["std"], arrays["weights"],
                       float(meta["bias"]), arrays.get("projection"), int(meta["n_stats"]), meta.get("info", {}),
                       layer_number(meta.get("layer")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: a probe file with a part missing ({exc}): train it again") from None


def layer_name(layer: int | None) -> str:
    """What a probe or a sample set's states read, in words."""
    return "the final-norm state" if layer is None else f"layer {layer}"


def layer_number(value: Any) -> int | None:
    """A layer number from a file (a probe's or a sample set's); ValueError if it is none."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"layer {value!r}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


# -- training -----------------------------------------------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (IRLS); (weights, bias)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = _sigmoid(xb @ w)
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    return w[:-1], float(w[-1])


def train(stats: np.ndarray, hidden: np.ndarray, labels: np.ndarray, groups: Sequence[str], final: np.ndarray,
          model_sha256: str, model_name: str, folds: int = 5, l2s: Sequence[float] = (100.0, 1000.0, 10000.0),
          dims: Sequence[int | None] = (None, 64)) -> tuple[Probe, list[dict[str, Any]]]:
    """Pick the L2 strength and projection by cross-validation split by problem (within-
    question AUROC on the samples' final states), then fit on everything. Returns the
    probe and one line of scores per candidate. The default L2 grid is strong because the
    states outnumber the problems many times over: on the default model's dev samples the
    within-question AUROC rose from L2 1 to 10^4 and fell at 10^5 (`scripts/probe_signals.py`)."""
    groups = np.asarray(groups)
    folds_of = _folds(groups, folds)
    candidates = [(dim, l2) for dim in dims for l2 in l2s]
    scores = {c: np.full(len(labels), np.nan) for c in candidates}
    for k in range(folds):
        tr, te = folds_of != k, folds_of == k
        if not te.any() or len(np.unique(labels[tr])) < 2:
            continue
        # The standardisation and components depend on the fold only: worked out once for
        # every candidate (an SVD of the states is most of a fit's time).
        basis = _Basis(stats[tr], hidden[tr])
        for dim, l2 in candidates:
            probe = basis.fit(labels[tr], l2, dim, model_sha256, model_name)
            scores[dim, l2][te] = probe.predict(stats[te], hidden[te])
    trials = []
    for dim, l2 in candidates:
        m = final & ~np.isnan(scores[dim, l2])
        trials.append({"dim": dim, "l2": l2, **metrics(scores[dim, l2][m], labels[m], groups[m])})
    best = max(trials, key=lambda t: (np.nan_to_num(t["within_auroc"], nan=-1), np.nan_to_num(t["auroc"], nan=-1)))
    probe = _Basis(stats, hidden).fit(labels, best["l2"], best["dim"], model_sha256, model_name)
    probe.info = {"cv": trials, "chosen": {"l2": best["l2"], "dim": best["dim"]}, "states": int(len(labels)),
                  "samples": int(final.sum()), "problems": int(len(np.unique(groups))),
                  "trained_on": sorted(set(groups.tolist()))}  # so an evaluation can leave them out
    return probe, trials


class _Basis:
    """One training set's standardised features and hidden-state components, from which a
    probe at any L2 strength and projection is fitted."""

    def __init__(self, stats: np.ndarray, hidden: np.ndarray) -> None:
        raw = np.hstack([stats, hidden]).astype(np.float64)
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        self.x = (raw - self.mean) / self.std
        self.n_stats = stats.shape[1]
        self._vt: np.ndarray | None = None

    def components(self) -> np.ndarray:
        if self._vt is None:
            _, _, self._vt = np.linalg.svd(self.x[:, self.n_stats:], full_matrices=False)
        return self._vt

    def fit(self, labels: np.ndarray, l2: float, dim: int | None, model_sha256: str, model_name: str) -> Probe:
        x, projection = self.x, None
        if dim is not None and x.shape[1] - self.n_stats > dim:
            projection = self.components()[:dim].T
            x = np.hstack([x[:, : self.n_stats], x[:, self.n_stats:] @ projection])
        w, b = fit_logistic(x, labels.astype(np.float64), l2)
        return Probe(model_sha256, model_name, self.mean, self.std, w, b, projection, self.n_stats)


def _folds(groups: np.ndarray, folds: int) -> np.ndarray:
    """A fold per problem (all of a problem's states in one fold), spread round robin."""
    order = {g: i % folds for i, g in enumerate(dict.fromkeys(groups.tolist()))}
    return np.asarray([order[g] for g in groups.tolist()])


# -- measuring ----------------------------------------------------------------------------
def metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Pooled AUROC, within-question AUROC (pairs of one problem's samples that differ in
    correctness), expected calibration error (10 bins), and the counts."""
    labels = labels.astype(bool)
    within_wins = within_pairs = 0.0
    for g in np.unique(groups):
        m = groups == g
        w, p = _pair_wins(scores[m & labels], scores[m & ~labels])
        within_wins += w
        within_pairs += p
    wins, pairs = _pair_wins(scores[labels], scores[~labels])
    return {"auroc": wins / pairs if pairs else float("nan"),
            "within_auroc": within_wins / within_pairs if within_pairs else float("nan"),
            "ece": calibration_error(scores, labels), "n": int(len(scores)), "right": int(labels.sum()),
            "within_pairs": int(within_pairs)}


def _pair_wins(right: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    if not len(right) or not len(wrong):
        return 0.0, 0.0
    diff = right[:, None] - wrong[None, :]
    return float((diff > 0).sum() + 0.5 * (diff == 0).sum()), float(diff.size)


def calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over 10 equal-width bins: the mean gap between a bin's
    scores and its share right, weighted by its size. Only a score read as a probability
    has one: NaN where any score lies outside [0, 1] (DeepConf's and self-certainty's) or
    is not a number."""
    scores = np.asarray(scores, dtype=float)
    if not len(scores) or not np.isfinite(scores).all() or scores.min() < 0.0 or scores.max() > 1.0:
        return float("nan")
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.sum() / len(scores) * abs(scores[m].mean() - labels[m].mean())
    return float(err)


# -- scoring during a search ----------------------------------------------------------------
class ProbeScorer:
    """Scores a node by the probe: P(its sample ends right) from its state and statistics.
    A node without a captured state (decoded in a batch that could not capture) is scored
    from its statistics with the hidden part at the training mean."""

    name = "probe"
    needs_capture = True

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def score(self, search: Search, nodes: Sequence[Node]) -> list[float]:
        if not nodes:
            return []
        n_stats = self.probe.n_stats
        hidden_mean = self.probe.mean[n_stats:]
        stats, hidden = [], []
        for node in nodes:
            s, h = node_features(search.tree, node)
            stats.append(s)
            hidden.append(h if h is not None and h.shape == hidden_mean.shape else hidden_mean)
        p = self.probe.predict(np.asarray(stats), np.asarray(hidden))
        return [float(x) for x in p]


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
