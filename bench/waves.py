"""How big an adaptive wave should be, and what captured signals cost: side by side, one run.

For each batch size K: K branches decoded together from one prompt, three ways in turn,
`--repeats` times each: plain (off); with token confidences (on: DeepConf's top-20
confidence on every token, as adaptive votes and `tts eval` ask for); and with full
capture (cap: confidences, entropy, self-certainty and each step's hidden state, what a
learned verifier reads). Prints one line per K:
  K=4 off=21.3 on=20.9 cap=20.7 on/off=0.981 cap/off=0.972 off/off@16=0.62
off/off@16 is the aggregate throughput at K relative to the largest K: a wave of K
samples runs at that fraction of the full batch's speed.

With `--layer L`, a second context reads layer L's output through the `cb_eval` tap (what
a probe trained on a middle layer reads) and two more modes run beside the others: tap-off
(that context, nobody capturing: the callback only answers "not this one") and tap (full
capture, the state from layer L), each against the plain run beside it.

Usage: python bench/waves.py [--model ID|PATH] [--ks 1,2,4,8,16] [--tokens 32] [--repeats 2] [--layer L]

The ratios are medians of each repeat's ratio to the plain run beside it; modes run in
turn, every other repeat in reverse order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.catalog import resolve_model  # noqa: E402
from tts_tui.backends.llamacpp import BranchEngine, BranchRequest, LlamaModel, SamplingParams, StopRule  # noqa: E402

PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
         "How many clips did Natalia sell altogether in April and May? Explain step by step."


MODES = ("off", "on", "cap")
TAP_MODES = ("tap-off", "tap")


def run(engine: BranchEngine, root, k: int, new: int, mode: str) -> float:
    # a step delimiter every line, so the captured runs take a hidden state per step too
    stop = StopRule(delimiter="\n", max_tokens=new, max_steps=new, max_total=new,
                    conf_top_k=0 if mode in ("off", "tap-off") else 20, capture=mode in ("cap", "tap"))
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
    ap.add_argument("--layer", type=int, default=None, help="also time a context tapping this layer")
    args = ap.parse_args()
    ks = [int(x) for x in args.ks.split(",")]
    model = LlamaModel(resolve_model(args.model))
    prompt = model.chat_tokens([{"role": "user", "content": PROMPT}])
    engines = {m: BranchEngine(model, n_ctx=4096, n_seq_max=max(ks) + 2) for m in ("plain",)}
    modes = MODES
    if args.layer is not None:
        engines["tap"] = BranchEngine(model, n_ctx=4096, n_seq_max=max(ks) + 2, hidden_layer=args.layer)
        modes = MODES + TAP_MODES
    roots = {name: e.prefill(prompt) for name, e in engines.items()}

    def timed(k: int, new: int, mode: str) -> float:
        name = "tap" if mode in TAP_MODES else "plain"
        return run(engines[name], roots[name], k, new, mode)

    for mode in modes:
        timed(max(ks), 8, mode)  # warm up
    res: dict[tuple[int, str], list[float]] = {}
    for r in range(args.repeats):
        for k in ks:
            # every other repeat in reverse order, so a drift in the machine's speed
            # weighs on each mode alike
            for mode in modes if r % 2 == 0 else modes[::-1]:
                res.setdefault((k, mode), []).append(timed(k, args.tokens, mode))
    med = {key: statistics.median(v) for key, v in res.items()}
    top = med[(max(ks), "off")]
    print(f"# model={model.path.name} tokens={args.tokens} repeats={args.repeats}"
          + (f" layer={args.layer}" if args.layer is not None else ""))
    for k in ks:
        # each ratio is the median of the repeats' own ratios (a mode against the plain
        # run beside it), which the machine's drift moves less than a ratio of medians
        ratio = {m: statistics.median(a / b for a, b in zip(res[(k, m)], res[(k, "off")])) for m in modes[1:]}
        speeds = " ".join(f"{m}={med[(k, m)]:.1f}" for m in modes)
        ratios = " ".join(f"{m}/off={ratio[m]:.3f}" for m in modes[1:])
        print(f"K={k} {speeds} {ratios} off/off@{max(ks)}={med[(k, 'off')] / top:.2f}")


if __name__ == "__main__":
    main()
