"""Choose the adaptive vote's settings on dev samples: replay the stop rule (and the
DeepConf cut) over labelled sample sets for a grid of stop thresholds, wave sizes, cut
windows and floors, against the fixed-N vote over the same samples.

    python scripts/tune_adaptive.py DIR [DIR ...] [--stop-ats 0.8,0.9,0.95] [--waves 2,4]
                                    [--windows 8,16,32,64] [--keeps 0.8,0.9,0.95]

DIR: a sample set whose samples kept their token confidences (`tts verifier train`, on
dev problems outside the report slices); N is the set's samples per problem. Prints, per
setting, the vote's accuracy and its tokens against the fixed-N majority vote, the
traces cut and how many of those were right (a cut that kills right traces costs votes),
then the cheapest setting within a point of the fixed vote's accuracy, with and without
the cut. tts solve and tts eval take them as --stop-at, --wave, --cut-window, --cut-keep.
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
    seen: set[str] = set()  # each problem once, across the sets too
    for d in dirs:
        rows = {}  # its last line (as the probe's training reads a set)
        for line in (d / "samples.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
        for row in rows.values():
            if row["id"] in seen:
                continue
            seen.add(row["id"])
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
    ap.add_argument("--stop-ats", default="0.8,0.9,0.95")
    ap.add_argument("--waves", default="2,4")
    ap.add_argument("--windows", default="8,16,32,64")
    ap.add_argument("--keeps", default="0.8,0.9,0.95")
    args = ap.parse_args()
    probs = problems(args.dirs)
    if not probs:
        sys.exit("error: no sample set here kept its token confidences (sample with tts verifier train)")
    n = len(probs)
    n_max = max(len(p["samples"]) for p in probs)
    fixed = score(probs, AdaptiveParams(stop_at=1.01, wave=n_max))  # never stops early: the fixed-N vote
    print(f"# {n} problems, {sum(len(p['samples']) for p in probs)} samples; majority vote, N up to {n_max}")
    print(f"fixed N={n_max}                          accuracy {fixed['right'] / n:.1%}  tokens 1.000")
    floor = fixed["right"] - 0.01 * n  # within a point of the fixed vote
    best: dict[bool, tuple] = {}
    cuts = [(False, 32, 0.9)] + [(True, int(w), float(k)) for w in args.windows.split(",")
                                 for k in args.keeps.split(",")]
    for stop_at in (float(x) for x in args.stop_ats.split(",")):
        for wave in (int(x) for x in args.waves.split(",")):
            for cut, w, keep in cuts:
                a = AdaptiveParams(stop_at=stop_at, wave=wave, cut=cut, window=w, keep=keep)
                r = score(probs, a)
                ratio = r["tokens"] / max(1, fixed["tokens"])
                what = f"window {w:3} keep {keep:<4}" if cut else "no cut             "
                print(f"stop {stop_at:<4} wave {wave}  {what}  accuracy {r['right'] / n:.1%}  tokens {ratio:.3f}  "
                      f"cut {r['cut']} (right {r['cut_right']})")
                if r["right"] >= floor and (cut not in best or ratio < best[cut][0]):
                    best[cut] = (ratio, stop_at, wave, w, keep)
    for cut, (ratio, stop_at, wave, w, keep) in sorted(best.items()):
        flags = f"--stop-at {stop_at} --wave {wave}" + (f" --cut --cut-window {w} --cut-keep {keep}" if cut else "")
        print(f"# chosen{' with the cut' if cut else ''}: {flags} ({ratio:.3f} of the fixed vote's tokens)")
    if not best:
        print("# no setting stays within a point of the fixed vote here")


if __name__ == "__main__":
    main()
