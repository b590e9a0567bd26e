"""Does a middle layer, or the answer's own token, know more than the last layer's step end?
A dev experiment for #16's optional middle-layer capture (`cb_eval`), on the samples
`tts verifier train` already made: each sample's text is fed back through the policy
(teacher forcing: one prefill per sample, no sampling) and the residual stream is read at
several layers, at two places: the last token of the boxed answer (the "exact answer
token" of Orgad et al. 2024) and the last token of the text. Then a probe per layer and
place is scored by cross-validation split by problem, on the within-question AUROC.

    python scripts/probe_layers.py capture [SAMPLES_DIR] [--layers 7,11,14,17,21,24] [--limit K]
    python scripts/probe_layers.py fit [--l2 1000,10000] [--captured DIR --only IDS] [--centre]

Capture is resumable (one .npz per problem under eval-out/layers/). Dev tuning only: the
sample set is the fit's own (report slices left out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp as L  # noqa: E402

from tts_tui.atomic import append_line, write_json  # noqa: E402
from tts_tui.backends.llamacpp.branches import default_threads  # noqa: E402
from tts_tui.backends.llamacpp.model import LlamaModel  # noqa: E402
from tts_tui.backends.llamacpp.tap import read_f32, tensor_name  # noqa: E402
from tts_tui.backends.prompts import SYSTEM_PROMPT  # noqa: E402
from tts_tui.verifier_train import _save_npz, load  # noqa: E402
from tts_tui.verify.probe import metrics, train  # noqa: E402

DEFAULT = Path.home() / ".local/share/tts-tui/verifiers/qwen2.5-coder-1.5b-instruct-q4_k_m-cc324af070c2"
MODEL = ROOT / "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
OUT = ROOT / "eval-out/layers"
if "--steps" in sys.argv:
    OUT = ROOT / "eval-out/layers-steps"

class Tap:
    """A `cb_eval` callback that copies the named tensors out of each graph evaluation."""

    def __init__(self, names: set[str], width: int) -> None:
        self.names, self.width = names, width
        self.got: dict[str, np.ndarray] = {}
        self.callback = L.ggml_backend_sched_eval_callback(self._on_tensor)  # kept alive here

    def _on_tensor(self, t: int, ask: bool, _user: int) -> bool:
        name = tensor_name(t).decode()
        if ask:
            return name in self.names
        if name in self.names and (rows := read_f32(t, self.width)) is not None:
            self.got[name] = rows
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


def step_ends(model: LlamaModel, tokens: list[int], eos: bool = False, delimiter: str = "\n\n",
              max_tokens: int = 256) -> list[int]:
    """Where the engine's step rule would have read each step's state: one position before
    each step's last token (the state that predicted it), a step ending at the delimiter
    as `BranchEngine` ends it; the last step's state predicted the text's last token, or
    the end-of-sequence token after it (`eos`: not in the text). A step also ends at the
    per-step token cap, as the engine's does (`build` keeps only the final state of a
    sample whose counts still differ)."""
    ends, step, n = [], bytearray(), 0
    for j, tok in enumerate(tokens):
        piece = model.piece(tok)
        step += piece
        n += 1
        tail = bytes(step[-(len(piece) + 16):]).decode("utf-8", "ignore")
        if (delimiter in tail and step.strip() or n >= max_tokens) and (j < len(tokens) - 1 or eos):
            ends.append(j - 1)
            step, n = bytearray(), 0
    ends.append(len(tokens) - (1 if eos else 2))
    return [max(e, 0) for e in ends]


def capture(args: argparse.Namespace) -> None:
    model = LlamaModel(MODEL)
    n_layer = int(L.llama_model_n_layer(model.ptr))
    layers = [int(x) for x in args.layers.split(",")]
    tap = Tap({f"l_out-{k}" for k in layers} | {"result_norm"}, model.n_embd)
    params = L.llama_context_default_params()
    # one ubatch per sample (a tensor's rows are then the sample's tokens in order)
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 4096, 2048, 2048, 2
    params.n_threads = params.n_threads_batch = default_threads()
    params.cb_eval, params.cb_eval_user_data = tap.callback, None
    params.embeddings = False
    params.kv_unified = True  # one cache: the prompt (seq 0) and a sample (seq 1) share its cells
    ctx = L.llama_init_from_model(model.ptr, params)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(2048, 0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "settings.json", {"layers": layers, "n_layer": n_layer, "samples": str(args.samples)})
    rows = [json.loads(x) for x in (args.samples / "samples.jsonl").read_text().splitlines() if x.strip()]
    only = set(args.only.read_text().split()) if args.only else None
    done = 0
    texts_of = {}
    if args.data:  # problem texts for sets that did not keep them
        from tts_tui.evaluate import load_problems

        texts_of = {p.id: p.problem for f in args.data.split(",") for p in load_problems(Path(f), None)}
    for row in rows[: args.limit]:
        if only is not None and row["id"] not in only:
            continue
        if "texts" not in row or not (row.get("problem") or texts_of.get(row["id"])):
            print(f"{row['id']:24} left out: the set kept no text for it", flush=True)
            continue
        row["problem"] = row.get("problem") or texts_of[row["id"]]
        row["texts"], row["answers"] = row["texts"][: args.per_problem], row["answers"][: args.per_problem]
        dest = OUT / row["file"]
        if dest.exists():
            continue
        t0, n_tok = time.monotonic(), 0
        prompt = model.chat_tokens([{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": row["problem"].strip()}])  # as the engine
        L.llama_memory_clear(mem, True)
        decode(ctx, batch, prompt, 0, 0, outputs=())
        at_answer, at_end, steps, step_sample, step_final = [], [], [], [], []
        with np.load(args.samples / row["file"]) as z:
            finish = z["finish"].tolist() if "finish" in z.files else [""] * len(row["texts"])
        for text in row["texts"]:
            toks = model.tokenize(text, add_special=False, parse_special=False)[: min(2048, 4096 - len(prompt) - 1)]
            if not toks:
                toks = [model.eos]
            a, e = token_at(model, toks, len(text[: answer_char(text) + 1].encode()) - 1), len(toks) - 1
            L.llama_memory_seq_rm(mem, 1, -1, -1)
            L.llama_memory_seq_cp(mem, 0, 1, -1, -1)
            tap.got.clear()
            decode(ctx, batch, toks, len(prompt), 1, outputs=sorted({a, e}))
            if args.steps:
                ends = step_ends(model, toks, eos=finish[len(at_answer)] == "eos")
                mid = [f"l_out-{k}" for k in layers]
                steps.append(np.stack([tap.got[nm][ends] for nm in mid], axis=1))
                step_sample += [len(at_answer)] * len(ends)
                step_final += [False] * (len(ends) - 1) + [True]
            outs = sorted({a, e})
            pick = lambda name, k: tap.got[name][k] if name != "result_norm" else tap.got[name][outs.index(k)]  # noqa: E731
            names = [f"l_out-{k}" for k in layers] + ["result_norm"]
            at_answer.append(np.stack([pick(nm, a) for nm in names]))
            at_end.append(np.stack([pick(nm, e) for nm in names]))
            n_tok += len(toks)
        with np.load(args.samples / row["file"]) as z:
            label = z["final_label"][: len(row["texts"])]
        _save_npz(dest, {"answer": np.asarray(at_answer, np.float16), "end": np.asarray(at_end, np.float16),
                         "label": label, "answered": np.asarray([a is not None for a in row["answers"]]),
                         **({"steps": np.concatenate(steps).astype(np.float16), "step_sample": np.asarray(step_sample, np.int16),
                             "step_final": np.asarray(step_final)} if args.steps else {})})
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
    settings = json.loads((args.captured / "settings.json").read_text())
    names = [f"layer {k}" for k in settings["layers"]] + ["final norm"]
    rows = {json.loads(x)["file"]: json.loads(x) for x in (args.samples / "samples.jsonl").read_text().splitlines() if x.strip()}
    only = set(args.only.read_text().split()) if args.only else None
    files = [f for f in sorted(args.captured.glob("states-*.npz"))
             if f.name in rows and (only is None or rows[f.name]["id"] in only)]
    ids = [rows[f.name]["id"] for f in files]
    # the token statistics of each answered sample's last state, from the sample set
    ds = load([args.samples], set(), only=set(ids))
    at = {(g, int(k)): i for i, (g, k, f) in enumerate(zip(ds.groups, ds.sample, ds.final)) if f}
    data: dict[str, list[np.ndarray]] = {"answer": [], "end": []}
    labels, groups, stat_rows = [], [], []
    for f, pid in zip(files, ids):
        with np.load(f) as z:
            for k, ok in enumerate(z["answered"]):
                if not ok or (pid, k) not in at:
                    continue
                data["answer"].append(z["answer"][k])
                data["end"].append(z["end"][k])
                labels.append(int(z["label"][k]))
                groups.append(pid)
                stat_rows.append(at[pid, k])
    y, g = np.asarray(labels, np.int8), np.asarray(groups)
    stats = ds.stats[stat_rows]
    ones = np.ones(len(y), bool)
    print(f"# {len(files)} problems, {len(y)} answered samples, {int(y.sum())} right")
    l2s = tuple(float(x) for x in args.l2.split(","))
    none = np.zeros((len(y), 0), np.float32)

    def show(tag: str, st: np.ndarray, x: np.ndarray) -> None:
        _, trials = train(st, x, y, g, ones, "-", "-", l2s=l2s, dims=(None, 64))
        best = max(trials, key=lambda t: t["within_auroc"])
        line = "  ".join(f"{str(t['dim'])}/{t['l2']:g}: {t['within_auroc']:.3f}" for t in trials)
        print(f"{tag:34} best within {best['within_auroc']:.3f} pooled {best['auroc']:.3f}   [{line}]", flush=True)
        if args.centre:
            line = "  ".join(f"{l2:g}: {centred_within(st, x, y, g, l2):.3f}" for l2 in l2s)
            print(f"{'  centred per problem':34} within [{line}]", flush=True)

    show("statistics alone", stats, none[:, :0])
    for place in args.places.split(","):
        arr = np.stack(data[place])
        for j, name in enumerate(names):
            if args.read and name not in args.read.split(","):
                continue
            x = arr[:, j, :].astype(np.float32)
            if not args.read:
                show(f"{place} {name}", none, x)
            show(f"{place} {name} + statistics", stats, x)


def centred_within(stats: np.ndarray, hidden: np.ndarray, y: np.ndarray, g: np.ndarray, l2: float,
                   folds: int = 5) -> float:
    """Within-question AUROC of a probe fitted for ranking inside a problem: features
    centred per problem (a conditional-logit stand-in), fitted on the problems whose samples
    differ, same folds as `train`. The offset centring removes is the same for all of one
    problem's samples, so the raw features rank them alike at inference."""
    from tts_tui.verify.probe import _folds, fit_logistic, metrics

    raw = np.hstack([stats, hidden]).astype(np.float64)
    fold = _folds(g, folds)
    scores = np.full(len(y), np.nan)
    for k in range(folds):
        tr, te = fold != k, fold == k
        x = (raw - raw[tr].mean(axis=0)) / (raw[tr].std(axis=0) + 1e-6)
        centred = x.copy()
        for grp in np.unique(g):
            centred[g == grp] -= x[g == grp].mean(axis=0)
        mixed = np.isin(g, [q for q in np.unique(g[tr]) if 0 < y[g == q].mean() < 1]) & tr
        w, b = fit_logistic(centred[mixed], y[mixed].astype(np.float64), l2)
        scores[te] = x[te] @ w + b
    return metrics(scores, y, g)["within_auroc"]


def build(args: argparse.Namespace) -> None:
    """A sample set like `src` whose hidden states are layer `--layer`'s (from a `capture
    --steps` dir), so `tts verifier train --samples DEST --layer K` fits on them and `tts
    verifier eval` scores them; with `--layer -1`, the same samples and states with `src`'s
    own (final-norm) hidden states, to set the two side by side. Where a sample's captured
    step count is the engine's, states pair one to one; elsewhere (a step cut at the
    per-step token cap that the capture did not see) only its final state is kept, paired
    with the capture's last. Samples the capture lacks (beyond --per-problem) are left out.
    With --only, every listed id must have a capture (exit 1 otherwise)."""
    settings = json.loads((args.captured / "settings.json").read_text())
    j = settings["layers"].index(args.layer) if args.layer >= 0 else None
    rows = [json.loads(x) for x in (args.src / "samples.jsonl").read_text().splitlines() if x.strip()]
    if args.only:
        want = set(args.only.read_text().split())
        missing = sorted(i for i in want if not any(r["id"] == i and (args.captured / r["file"]).is_file() for r in rows))
        if missing:
            sys.exit(f"build: {len(missing)} of the {len(want)} problems in {args.only} have no capture yet "
                     f"(first {missing[0]}): run capture to the end first")
        rows = [r for r in rows if r["id"] in want]
    args.dest.mkdir(parents=True, exist_ok=True)
    done = {json.loads(x)["id"] for x in (args.dest / "samples.jsonl").read_text().splitlines()} \
        if (args.dest / "samples.jsonl").is_file() else set()
    src_settings = json.loads((args.src / "settings.json").read_text())
    write_json(args.dest / "settings.json", {**src_settings, "layer": args.layer if j is not None else None})
    pairs = finals_only = beyond = 0
    for row in rows:
        cap = args.captured / row["file"]
        if row["id"] in done or not cap.is_file():
            continue
        with np.load(args.src / row["file"]) as z, np.load(cap) as c:
            arrays = {k: z[k] for k in z.files}
            steps = c["steps"][:, j, :] if j is not None else None
            step_sample, n_captured = c["step_sample"], len(c["label"])
        keep, hidden = [], []
        for k in np.unique(arrays["sample"]):
            mine = np.flatnonzero(arrays["sample"] == k)
            theirs = np.flatnonzero(step_sample == k)
            if k >= n_captured or not len(theirs):
                beyond += len(mine)
                continue
            if len(mine) == len(theirs):
                pairs += len(mine)
            else:  # the steps do not line up: only the last state is surely the same one
                mine, theirs = mine[-1:], theirs[-1:]
                finals_only += 1
            keep += mine.tolist()
            hidden += [steps[i] if steps is not None else arrays["hidden"][m] for i, m in zip(theirs, mine)]
        if not keep:
            continue
        order = np.argsort(keep, kind="stable")
        keep = np.asarray(keep, dtype=int)[order]
        for key in ("stats", "labels", "sample", "final"):
            arrays[key] = arrays[key][keep]
        arrays["hidden"] = np.asarray(hidden, np.float16)[order].reshape(len(keep), -1)
        _save_npz(args.dest / row["file"], arrays)
        append_line(args.dest / "samples.jsonl", json.dumps({**row, "states": len(keep)}, ensure_ascii=False))
    judge = args.src / "judge.jsonl"
    if judge.is_file():
        (args.dest / "judge.jsonl").write_text(judge.read_text())
    print(f"# {args.dest}: {pairs} states paired one to one; {finals_only} samples whose steps did not line up "
          f"keep their final state only; {beyond} states of samples not captured left out")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("samples", nargs="?", type=Path, default=DEFAULT)
    c.add_argument("--layers", default="7,11,14,17,21,24")
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--only", type=Path, default=None, help="a file of problem ids to capture")
    c.add_argument("--steps", action="store_true", help="also every step end (into eval-out/layers-steps/)")
    c.add_argument("--per-problem", type=int, default=None, help="only each problem's first K samples")
    c.add_argument("--data", default=None, help="JSONL file(s) with the problems, where the set lacks their text")
    f = sub.add_parser("fit")
    f.add_argument("samples", nargs="?", type=Path, default=DEFAULT)
    f.add_argument("--l2", default="100,1000,10000")
    f.add_argument("--captured", type=Path, default=OUT, help="a capture dir (eval-out/layers-steps: its answer states)")
    f.add_argument("--only", type=Path, default=None, help="a file of the problem ids to fit on")
    f.add_argument("--centre", action="store_true", help="also a fit centred per problem (ranking within one)")
    f.add_argument("--places", default="answer,end")
    f.add_argument("--read", default=None, help="only these states, with the statistics (e.g. 'layer 17,final norm')")
    b = sub.add_parser("build")
    b.add_argument("src", type=Path)
    b.add_argument("captured", type=Path)
    b.add_argument("dest", type=Path)
    b.add_argument("--layer", type=int, default=17, help="-1: keep src's own (final-norm) states")
    b.add_argument("--only", type=Path, default=None, help="a file of the problem ids the set must hold")
    args = ap.parse_args()
    {"capture": capture, "fit": fit, "build": build}[args.cmd](args)


if __name__ == "__main__":
    main()
