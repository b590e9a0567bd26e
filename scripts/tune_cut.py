"""Choose the DeepConf cut's window and floor on dev samples: replay the adaptive vote
with the cut over labelled sample sets, for each window and keep quantile, against the
same vote without the cut.

    python scripts/tune_cut.py DIR [DIR ...] [--windows 8,16,32,64] [--keeps 0.8,0.9,0.95]
                               [--wave 4] [--stop-at 0.95]

DIR: a sample set whose samples kept their token confidences (`tts verifier train`, on
dev problems outside the report slices). Prints, per setting, the vote's accuracy, its
tokens against the uncut adaptive vote, the traces cut and how many of those were right
(a cut that kills right traces costs votes). The chosen setting is the one that saves the
most tokens without losing accuracy; tts solve and tts eval take it as --cut-window and
--cut-keep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.adaptive_replay import replay, trace_record  # noqa: E402
from tts_tui.search.protocol import AdaptiveParams  # noqa: E402
from tts_tui.verify.answers import equivalent  # noqa: E402


def problems(dirs: list[Path]) -> list[dict]:
    """Each problem with its samples' answers, tokens, finish, rightness and confidences."""
    out = []
    for d in dirs:
        rows = {}  # each problem once, its last line (as the probe's training reads a set)
        for line in (d / "samples.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
        for row in rows.values():
            with np.load(d / row["file"]) as z:
                if "conf" not in z.files:
                    continue  # sampled before confidences were kept
                conf, lens, finish = z["conf"].astype(float), z["conf_len"], z["finish"]
                right = z["final_label"]
            bounds = np.concatenate([[0], np.cumsum(lens)])
            out.append({"id": row["id"], "gold": row["gold"], "samples": [
                {"answer": a, "score": 1.0, "tokens": t, "finish": str(f), "right": bool(r),
                 "conf": conf[bounds[i]:bounds[i + 1]].tolist()}
                for i, (a, t, f, r) in enumerate(zip(row["answers"], row["sample_tokens"], finish, right))]})
    return out


def score(probs: list[dict], a: AdaptiveParams) -> dict:
    right = tokens = cut = cut_right = 0
    for p in probs:
        samples = [{**s, **trace_record(s["conf"], a.window)} for s in p["samples"]]
        got = replay(samples, a, weighted=False, equivalent=equivalent)
        right += bool(got["answer"]) and equivalent(got["answer"], p["gold"])
        tokens += got["tokens"]
        cut += got["cut"]
        cut_right += sum(samples[i]["right"] for i in got["cut_samples"])
    return {"right": right, "tokens": tokens, "cut": cut, "cut_right": cut_right}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--windows", default="8,16,32,64")
    ap.add_argument("--keeps", default="0.8,0.9,0.95")
    ap.add_argument("--wave", type=int, default=4)
    ap.add_argument("--stop-at", type=float, default=0.95)
    args = ap.parse_args()
    probs = problems(args.dirs)
    if not probs:
        sys.exit("error: no sample set here kept its token confidences (sample with tts verifier train)")
    base = score(probs, AdaptiveParams(stop_at=args.stop_at, wave=args.wave))
    n = len(probs)
    print(f"# {n} problems, {sum(len(p['samples']) for p in probs)} samples; adaptive majority, "
          f"wave {args.wave}, stop at {args.stop_at}")
    print(f"no cut                 accuracy {base['right'] / n:.1%}  tokens 1.000")
    best = None
    for w in (int(x) for x in args.windows.split(",")):
        for keep in (float(x) for x in args.keeps.split(",")):
            r = score(probs, AdaptiveParams(stop_at=args.stop_at, wave=args.wave, cut=True, window=w, keep=keep))
            ratio = r["tokens"] / max(1, base["tokens"])
            print(f"window {w:3} keep {keep:<4}  accuracy {r['right'] / n:.1%}  tokens {ratio:.3f}  "
                  f"cut {r['cut']} (right {r['cut_right']})")
            if r["right"] >= base["right"] and (best is None or ratio < best[0]):
                best = (ratio, w, keep)
    if best:
        print(f"# chosen: --cut-window {best[1]} --cut-keep {best[2]} ({best[0]:.3f} of the tokens, no loss)")
    else:
        print("# every setting lost accuracy here: keep the cut off")


if __name__ == "__main__":
    main()
