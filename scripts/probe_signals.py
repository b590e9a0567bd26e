"""What each token statistic, the statistics alone and the probe's L2 strengths give within a
question, by cross-validation split by problem, on a labelled sample set's final states.

    python scripts/probe_signals.py [SAMPLES_DIR] [--data F,G] [--levels 1,2,3] [--limit 110,50]
                                    [--exclude eval-out/report-ids.txt]

The problems are chosen as `tts verifier train` chooses them from the same options, so the
defaults read the shipped fit's training set. Dev tuning only: never a report slice's set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tts_tui.cli.verifier_cmd import _exclusions, _problems  # noqa: E402
from tts_tui.verifier_train import load  # noqa: E402
from tts_tui.verify.features import STAT_NAMES  # noqa: E402
from tts_tui.verify.probe import metrics, train  # noqa: E402

DEFAULT = Path.home() / ".local/share/tts-tui/verifiers/qwen2.5-coder-1.5b-instruct-q4_k_m-cc324af070c2"
DATA = f"{ROOT.parent / 'shared/data/gsm8k_dev.jsonl'},{ROOT.parent / 'shared/data/math_dev.jsonl'}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("samples", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--levels", default="1,2,3")
    ap.add_argument("--limit", default="110,50")
    ap.add_argument("--exclude", default=str(ROOT / "eval-out/report-ids.txt"))
    args = ap.parse_args()
    exclude = _exclusions(args.exclude)
    only = {p.id for p in _problems(args.data, args.limit, 0, args.levels, exclude)}
    ds = load([args.samples], exclude, only=only)
    groups, final = np.asarray(ds.groups), ds.final
    print(f"# {len(set(ds.groups))} problems, {int(final.sum())} samples, {len(ds.labels)} states")
    for j, name in enumerate(STAT_NAMES):
        m = metrics(ds.stats[final, j], ds.labels[final], groups[final])
        print(f"{name:24} within {m['within_auroc']:.3f} pooled {m['auroc']:.3f}  (the raw value; under 0.5: lower is better)")
    for tag, dims in (("statistics alone", (0,)), ("statistics + hidden state", (None,))):
        _, trials = train(ds.stats, ds.hidden, ds.labels, groups, final, "-", "-",
                          l2s=(1.0, 100.0, 1000.0, 1e4, 1e5), dims=dims)
        for t in trials:
            print(f"{tag:26} L2 {t['l2']:<8g} within {t['within_auroc']:.3f} pooled {t['auroc']:.3f}")


if __name__ == "__main__":
    main()
