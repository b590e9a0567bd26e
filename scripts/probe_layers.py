"""Does a middle layer, or the answer's own token, know more than the last layer's step end?
A dev experiment for #16's optional middle-layer capture (`cb_eval`), on the samples
`tts verifier train` already made: each sample's text is fed back through the policy
(teacher forcing: one prefill per sample, no sampling) and the residual stream is read at
several layers, at two places: the last token of the boxed answer (the "exact answer
token" of Orgad et al. 2024) and the last token of the text. Then a probe per layer and
place is scored by cross-validation split by problem, on the within-question AUROC.

    python scripts/probe_layers.py capture [SAMPLES_DIR] [--layers 7,11,14,17,21,24] [--limit K]
    python scripts/probe_layers.py fit [--l2 1000,10000]

Capture is resumable (one .npz per problem under eval-out/layers/). Dev tuning only: the
sample set is the fit's own (report slices left out).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp as L  # noqa: E402
from llama_cpp._ggml import libggml  # noqa: E402

from tts_tui.atomic import write_json  # noqa: E402
from tts_tui.backends.llamacpp.branches import default_threads  # noqa: E402
from tts_tui.backends.llamacpp.model import LlamaModel  # noqa: E402
from tts_tui.backends.prompts import SYSTEM_PROMPT  # noqa: E402
from tts_tui.verifier_train import _save_npz, load  # noqa: E402
from tts_tui.verify.probe import metrics, train  # noqa: E402

DEFAULT = Path.home() / ".local/share/tts-tui/verifiers/qwen2.5-coder-1.5b-instruct-q4_k_m-cc324af070c2"
MODEL = ROOT / "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
OUT = ROOT / "eval-out/layers"

libggml.ggml_get_name.restype = ctypes.c_char_p
libggml.ggml_get_name.argtypes = [ctypes.c_void_p]
libggml.ggml_nelements.restype = ctypes.c_int64
libggml.ggml_nelements.argtypes = [ctypes.c_void_p]
libggml.ggml_backend_tensor_get.restype = None
libggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
GGML_TYPE_F32 = 0


class Tap:
    """A `cb_eval` callback that copies the named tensors out of each graph evaluation."""

    def __init__(self, names: set[str], width: int) -> None:
        self.names, self.width = names, width
        self.got: dict[str, np.ndarray] = {}
        self.callback = L.ggml_backend_sched_eval_callback(self._on_tensor)  # kept alive here

    def _on_tensor(self, t: int, ask: bool, _user: int) -> bool:
        name = (libggml.ggml_get_name(t) or b"").decode()
        if ask:
            return name in self.names
        if name in self.names and ctypes.c_int.from_address(t).value == GGML_TYPE_F32:
            n = int(libggml.ggml_nelements(t))
            out = np.empty(n, dtype=np.float32)
            libggml.ggml_backend_tensor_get(t, out.ctypes.data, 0, out.nbytes)
            self.got[name] = out.reshape(-1, self.width)
        return True


def answer_char(text: str) -> int:
    """Index of the last character of the last \\boxed{...}'s content; the text's last
    character where there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return len(text.rstrip()) - 1
    depth, i = 1, start + len("\\boxed{")
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return max(start, i - 2) if depth == 0 else len(text.rstrip()) - 1


def token_at(model: LlamaModel, tokens: list[int], char: int) -> int:
    """The index of the token holding byte `char` of the detokenized text (by UTF-8 bytes)."""
    end = 0
    for k, tok in enumerate(tokens):
        end += len(model.piece(tok))
        if end > char:
            return k
    return len(tokens) - 1


def capture(args: argparse.Namespace) -> None:
    model = LlamaModel(MODEL)
    n_layer = int(L.llama_model_n_layer(model.ptr))
    layers = [int(x) for x in args.layers.split(",")]
    tap = Tap({f"l_out-{k}" for k in layers} | {"result_norm"}, model.n_embd)
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 2048, 1024, 1024, 2
    params.n_threads = params.n_threads_batch = default_threads()
    params.cb_eval, params.cb_eval_user_data = tap.callback, None
    params.embeddings = False
    ctx = L.llama_init_from_model(model.ptr, params)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(1024, 0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "settings.json", {"layers": layers, "n_layer": n_layer, "samples": str(args.samples)})
    rows = [json.loads(x) for x in (args.samples / "samples.jsonl").read_text().splitlines() if x.strip()]
    only = set(args.only.read_text().split()) if args.only else None
    done = 0
    for row in rows[: args.limit]:
        if only is not None and row["id"] not in only:
            continue
        dest = OUT / row["file"]
        if dest.exists():
            continue
        t0, n_tok = time.monotonic(), 0
        prompt = model.chat_tokens([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["problem"]}])
        L.llama_memory_clear(mem, True)
        decode(ctx, batch, prompt, 0, 0, outputs=())
        at_answer, at_end = [], []
        for text in row["texts"]:
            toks = model.tokenize(text, add_special=False, parse_special=False)[: 2048 - len(prompt) - 1]
            if not toks:
                toks = [model.eos]
            a, e = token_at(model, toks, len(text[: answer_char(text) + 1].encode()) - 1), len(toks) - 1
            L.llama_memory_seq_rm(mem, 1, -1, -1)
            L.llama_memory_seq_cp(mem, 0, 1, -1, -1)
            tap.got.clear()
            decode(ctx, batch, toks, len(prompt), 1, outputs=sorted({a, e}))
            outs = sorted({a, e})
            pick = lambda name, k: tap.got[name][k] if name != "result_norm" else tap.got[name][outs.index(k)]  # noqa: E731
            names = [f"l_out-{k}" for k in layers] + ["result_norm"]
            at_answer.append(np.stack([pick(nm, a) for nm in names]))
            at_end.append(np.stack([pick(nm, e) for nm in names]))
            n_tok += len(toks)
        with np.load(args.samples / row["file"]) as z:
            label = z["final_label"]
        _save_npz(dest, {"answer": np.asarray(at_answer, np.float16), "end": np.asarray(at_end, np.float16),
                         "label": label, "answered": np.asarray([a is not None for a in row["answers"]])})
        done += 1
        dt = time.monotonic() - t0
        print(f"{row['id']:24} {len(row['texts'])} samples {n_tok} tokens {dt:.1f}s ({n_tok / dt:.0f} tok/s)", flush=True)
    L.llama_batch_free(batch)
    L.llama_free(ctx)


def decode(ctx: int, batch: L.llama_batch, tokens: list[int], pos0: int, seq: int, outputs: tuple[int, ...] | list[int]) -> None:
    batch.n_tokens = len(tokens)
    for i, tok in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos0 + i, 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = i in outputs
    if not outputs:
        batch.logits[len(tokens) - 1] = True  # llama.cpp wants one output per decode
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def fit(args: argparse.Namespace) -> None:
    settings = json.loads((OUT / "settings.json").read_text())
    names = [f"layer {k}" for k in settings["layers"]] + ["final norm"]
    files = sorted(OUT.glob("states-*.npz"))
    data: dict[str, list[np.ndarray]] = {"answer": [], "end": []}
    labels, groups, answered = [], [], []
    for f in files:
        with np.load(f) as z:
            data["answer"].append(z["answer"])
            data["end"].append(z["end"])
            labels += z["label"].tolist()
            answered += z["answered"].tolist()
            groups += [f.stem] * len(z["label"])
    labels_a, groups_a = np.asarray(labels, np.int8), np.asarray(groups)
    keep = np.asarray(answered)  # what a vote scores: the samples with an answer
    print(f"# {len(files)} problems, {int(keep.sum())} answered samples, {int(labels_a[keep].sum())} right")
    # the engine's own last-layer step-end state, on the same samples, for comparison
    ds = load([args.samples], set(), only={json.loads(x)["id"] for x in (args.samples / "samples.jsonl").read_text().splitlines()
                                            if x.strip() and (OUT / json.loads(x)["file"]).exists()})
    m = ds.final
    stats = ds.stats[m]
    l2s = tuple(float(x) for x in args.l2.split(","))
    _, trials = train(ds.stats[m], ds.hidden[m].astype(np.float32), ds.labels[m], np.asarray(ds.groups)[m],
                      np.ones(int(m.sum()), bool), "-", "-", l2s=l2s, dims=(None, 64))
    for t in trials:
        print(f"{'engine step end (final norm)':30} dim {str(t['dim']):4} L2 {t['l2']:<7g} within {t['within_auroc']:.3f} pooled {t['auroc']:.3f}")
    none = np.zeros((int(keep.sum()), 0), np.float32)
    for place in ("answer", "end"):
        arr = np.concatenate(data[place])[keep]
        for j, name in enumerate(names):
            x = arr[:, j, :].astype(np.float32)
            _, trials = train(none, x, labels_a[keep], groups_a[keep], np.ones(len(x), bool), "-", "-",
                              l2s=l2s, dims=(None, 64))
            for t in trials:
                print(f"{place + ' ' + name:30} dim {str(t['dim']):4} L2 {t['l2']:<7g} within {t['within_auroc']:.3f} "
                      f"pooled {t['auroc']:.3f}", flush=True)
    del stats


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("samples", nargs="?", type=Path, default=DEFAULT)
    c.add_argument("--layers", default="7,11,14,17,21,24")
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--only", type=Path, default=None, help="a file of problem ids to capture")
    f = sub.add_parser("fit")
    f.add_argument("samples", nargs="?", type=Path, default=DEFAULT)
    f.add_argument("--l2", default="100,1000,10000")
    args = ap.parse_args()
    capture(args) if args.cmd == "capture" else fit(args)


if __name__ == "__main__":
    main()
