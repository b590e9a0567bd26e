"""Does decoding branches together change what the model says? Batched vs one at a time.

    python bench/batch_numerics.py [--model default] [--problem 0] [--n 8] [--tokens 512]

Forks N branches from one prompt with seeds 1..N, first all in one batch (the engine's
way), then each alone with the same seed, and prints: the largest difference in the
first step's logits, the top first tokens under each, and every branch's answer both
ways. llama.cpp's batched matrix products sum in another order than its one-row ones,
so logits differ a little; where the first-token distribution is flat, same-seed samples
then start differently. What matters is whether the batched samples are worse, so the
answers are scored against the gold one. (`--tokens 0` stops after the logits.)
For scale it also prints how far one branch alone moves when the same weights are loaded
without llama.cpp's CPU re-layout (another kernel, another summation order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tts_tui.catalog import resolve_model
from tts_tui.backends.llamacpp import BranchEngine, BranchRequest, LlamaModel, SamplingParams, StopRule
from tts_tui.backends.llamacpp import branches as engine_branches
from tts_tui.backends.llamacpp.generator import LlamaGenerator
from tts_tui.verify.answers import MathAnswers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_dev.jsonl"


def first_logits(engine: BranchEngine, requests: list[BranchRequest]) -> np.ndarray:
    """The logits each request's first token is sampled from (one generate() call)."""
    rows: list[np.ndarray] = []
    plain = engine._logprobs

    def capture(toks: list[int]) -> list[float]:
        if not rows:
            view = engine_branches.L.llama_get_logits(engine.ctx)
            rows.append(np.ctypeslib.as_array(view, shape=(len(toks), engine.model.n_vocab)).copy())
        return plain(toks)

    engine._logprobs = capture  # type: ignore[method-assign]
    try:
        one_token = StopRule(delimiter=None, max_tokens=1, max_total=1)
        engine.generate([BranchRequest(parent=r.parent, sampling=r.sampling, stop=one_token) for r in requests])
    finally:
        del engine._logprobs
    return rows[0]


def top(model: LlamaModel, logits: np.ndarray, k: int = 4) -> str:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return ", ".join(f"{model.detokenize([int(i)])!r} {p[i]:.3f}" for i in np.argsort(-p)[:k])


def answers(engine: BranchEngine, requests: list[BranchRequest], extract) -> list[str | None]:
    return [extract("".join(s.text for s in steps)) for steps in engine.generate(requests)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="catalog id or GGUF path (default: the default policy)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--problem", type=int, default=0, help="line of the data file (0-based)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512, help="tokens per sample; 0 = logits only")
    ap.add_argument("--temperature", type=float, default=0.3)
    a = ap.parse_args()
    row = json.loads(a.data.read_text(encoding="utf-8").splitlines()[a.problem])
    path = resolve_model(a.model)
    model = LlamaModel(path)
    engine = BranchEngine(model, n_ctx=8192, n_seq_max=max(16, a.n + 2))
    root = LlamaGenerator(engine).root(row["problem"])
    stop = StopRule(delimiter=None, max_tokens=a.tokens, max_total=a.tokens)

    def reqs(seeds: range, parent=root) -> list[BranchRequest]:
        return [BranchRequest(parent=parent, stop=stop, keep_kv=False,
                              sampling=SamplingParams(temperature=a.temperature, seed=s)) for s in seeds]

    seeds = range(1, a.n + 1)
    together = first_logits(engine, reqs(seeds))
    alone = first_logits(engine, reqs(range(1, 2)))[0]
    plain = LlamaModel(path, repack=False)
    with BranchEngine(plain, n_ctx=2048, n_seq_max=2) as other:
        alone_plain = first_logits(other, reqs(range(1, 2), LlamaGenerator(other).root(row["problem"])))[0]
    print(f"{row['id']}: first-step logits, max |difference|: {a.n} branches together vs one alone "
          f"{float(np.abs(together - alone).max()):.4f}; one alone, weights re-laid vs not "
          f"{float(np.abs(alone_plain - alone).max()):.4f}")
    print(f"  together:           {top(model, together[0])}\n  alone:              {top(model, alone)}"
          f"\n  alone, not re-laid: {top(model, alone_plain)}")
    if a.tokens <= 0:
        return 0
    grade = MathAnswers()
    batched = answers(engine, reqs(seeds), grade.extract)
    single = [answers(engine, reqs(range(s, s + 1)), grade.extract)[0] for s in seeds]
    right = lambda xs: sum(x is not None and grade.equivalent(x, row["answer"]) for x in xs)  # noqa: E731
    for s, b, o in zip(seeds, batched, single):
        print(f"  seed {s}: together {b!s:14} alone {o!s:14}")
    print(f"gold {row['answer']}: together {right(batched)}/{a.n} right, alone {right(single)}/{a.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
