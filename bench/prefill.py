"""Prompt processing against generation, side by side in one run.

On a CPU, a long prompt (a judge's two solutions, a revision's earlier attempts) is
not free: this prints prompt tokens/s for prompts of a few lengths next to one
branch's generated tokens/s on the same loaded model, and their ratio.

Usage: python bench/prefill.py [--model default] [--lengths 128,512,1024] [--gen 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.backends.llamacpp import BranchRequest, SamplingParams, StopRule  # noqa: E402
from tts_tui.session import Solver  # noqa: E402

TEXT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May? ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--gen", type=int, default=64)
    args = ap.parse_args()
    solver = Solver(args.model)
    eng = solver.engine
    base = eng.model.tokenize(TEXT * 64, add_special=False, parse_special=False)
    print(f"# model={solver.model_path.name}")
    for i, n in enumerate(int(x) for x in args.lengths.split(",")):
        toks = list(base[:n])
        toks[0] = base[i + 1]  # a different first token: nothing cached is reused
        t0 = time.perf_counter()
        h = eng.prefill(toks)
        pre = n / (time.perf_counter() - t0)
        req = BranchRequest(h, SamplingParams(temperature=0.0, ban_eos=True),
                            StopRule(delimiter=None, max_tokens=args.gen), keep_kv=False)
        t0 = time.perf_counter()
        steps = eng.generate([req])[0]
        gen = sum(len(s.tokens) for s in steps) / (time.perf_counter() - t0)
        eng.release(h)
        print(f"prompt={n} prefill={pre:.1f} tok/s generate={gen:.1f} tok/s prefill/generate={pre / gen:.2f}",
              flush=True)
    solver.close()


if __name__ == "__main__":
    main()
