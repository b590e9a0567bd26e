"""Aggregate decode throughput, side by side in one run: naive vs engine vs ceiling.

For each N: the same chat prompt, the same number of new tokens per branch.
  naive:   N sequential `Llama.create_completion` calls (llama-cpp-python's high level)
  engine:  one BranchEngine.generate() of N branches (sampling + logprobs included)
  ceiling: a bare llama_decode loop over N sequences, no sampling at all
Prints one parseable line per N:
  N=16 naive=24.1 engine=70.2 ceiling=75.0 engine/naive=2.91 engine/ceiling=0.94

Usage: python bench/engine_throughput.py [--model ID|PATH] [--ns 1,4,8,16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp as L  # noqa: E402

from tts_tui.catalog import resolve_model  # noqa: E402
from tts_tui.backends.llamacpp import BranchEngine, BranchRequest, LlamaModel, SamplingParams, StopRule  # noqa: E402

PROMPT = "Write a long story about a robot who learns to paint. Use many details."


def bench_naive(path: Path, prompt_text: str, n: int, new: int, threads: int) -> float:
    llm = L.Llama(str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    t = 0.0
    made = 0
    for i in range(n):
        llm.reset()  # each call evaluates its prompt, as N independent requests would
        t0 = time.perf_counter()
        out = llm.create_completion(prompt_text, max_tokens=new, temperature=0.8, seed=i, stop=[],
                                    logit_bias={llm.token_eos(): float("-inf")})
        t += time.perf_counter() - t0
        made += out["usage"]["completion_tokens"]
    del llm
    return made / t


def bench_engine(engine: BranchEngine, tokens: list[int], n: int, new: int) -> float:
    root = engine.prefill(tokens)
    stop = StopRule(delimiter=None, max_tokens=new)
    # ban_eos: every branch makes exactly `new` tokens, as in the other two columns
    sp = [SamplingParams(temperature=0.8, seed=i, ban_eos=True) for i in range(n)]
    reqs = [BranchRequest(root, p, stop, keep_kv=False) for p in sp]
    t0 = time.perf_counter()
    outs = engine.generate(reqs)
    dt = time.perf_counter() - t0
    made = sum(len(s.tokens) for o in outs for s in o)
    engine.release(root)
    return made / dt


def bench_ceiling(engine: BranchEngine, tokens: list[int], n: int, new: int) -> float:
    root = engine.prefill(tokens)
    seqs = [engine._alloc_from(root) for _ in range(n)]
    b = engine.batch
    pos0 = len(tokens) - 1
    t0 = time.perf_counter()
    for step in range(new):
        for i, s in enumerate(seqs):
            b.token[i] = tokens[-1] if step == 0 else 1000 + i
            b.pos[i] = pos0 + step
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = s
            b.logits[i] = 1
        b.n_tokens = n
        if L.llama_decode(engine.ctx, b) != 0:
            raise SystemExit("ceiling: llama_decode failed")
        L.llama_synchronize(engine.ctx)
    dt = time.perf_counter() - t0
    for s in seqs:
        engine._free_seq(s)
    engine.release(root)
    return n * new / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--ns", default="1,4,8,16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    path = resolve_model(args.model)
    model = LlamaModel(path)
    engine = BranchEngine(model, n_ctx=4096, n_seq_max=64, n_threads=args.threads)
    threads = args.threads or __import__("os").cpu_count() or 1
    tokens = model.chat_tokens([{"role": "user", "content": PROMPT}])
    prompt_text = model.render_chat([{"role": "user", "content": PROMPT}])
    print(f"# model={path.name} prompt_tokens={len(tokens)} new_tokens={args.tokens} threads={threads}", flush=True)
    bench_engine(engine, tokens, 2, 8)  # warm up caches and the thread pool
    for n in [int(x) for x in args.ns.split(",")]:
        naive = bench_naive(path, prompt_text, n, args.tokens, threads)
        eng = bench_engine(engine, tokens, n, args.tokens)
        ceil = bench_ceiling(engine, tokens, n, args.tokens)
        print(
            f"N={n} naive={naive:.1f} engine={eng:.1f} ceiling={ceil:.1f} "
            f"engine/naive={eng / naive:.2f} engine/ceiling={eng / ceil:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
