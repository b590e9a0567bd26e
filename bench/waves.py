"""How big an adaptive wave should be, and what token confidences cost: side by side, one run.

For each batch size K: K branches decoded together from one prompt, with token
confidences off and on (DeepConf's top-20 confidence on every token, as adaptive votes
and `tts eval` ask for), alternating, `--repeats` times each. Prints one line per K:
  K=4 off=21.3 on=20.9 on/off=0.981 off/off@16=0.62
off/off@16 is the aggregate throughput at K relative to the largest K: a wave of K
samples runs at that fraction of the full batch's speed.

Usage: python bench/waves.py [--model ID|PATH] [--ks 1,2,4,8,16] [--tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.catalog import resolve_model  # noqa: E402
from tts_tui.engine import BranchEngine, BranchRequest, LlamaModel, SamplingParams, StopRule  # noqa: E402

PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
         "How many clips did Natalia sell altogether in April and May? Explain step by step."


def run(engine: BranchEngine, root, k: int, new: int, confidence: bool) -> float:
    stop = StopRule(delimiter=None, max_tokens=new, conf_top_k=20 if confidence else 0)
    reqs = [BranchRequest(root, SamplingParams(temperature=0.8, seed=i, ban_eos=True), stop, keep_kv=False)
            for i in range(k)]
    t0 = time.perf_counter()
    outs = engine.generate(reqs)
    dt = time.perf_counter() - t0
    return sum(len(s.tokens) for o in outs for s in o) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--ks", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    ks = [int(x) for x in args.ks.split(",")]
    model = LlamaModel(resolve_model(args.model))
    engine = BranchEngine(model, n_ctx=4096, n_seq_max=max(ks) + 2)
    root = engine.prefill(model.chat_tokens([{"role": "user", "content": PROMPT}]))
    run(engine, root, max(ks), 8, True)  # warm up
    res: dict[tuple[int, bool], list[float]] = {}
    for _ in range(args.repeats):
        for k in ks:
            for conf in (False, True):
                res.setdefault((k, conf), []).append(run(engine, root, k, args.tokens, conf))
    med = {key: statistics.median(v) for key, v in res.items()}
    top = med[(max(ks), False)]
    print(f"# model={model.path.name} tokens={args.tokens} repeats={args.repeats}")
    for k in ks:
        off, on = med[(k, False)], med[(k, True)]
        print(f"K={k} off={off:.1f} on={on:.1f} on/off={on / off:.3f} off/off@{max(ks)}={off / top:.2f}")


if __name__ == "__main__":
    main()
