#!/usr/bin/env bash
# The evaluations behind the README's figures (issues #3, #5, #15, #16 and #17), in priority order.
# Each `tts eval` is resumable: rerun this script after a kill and finished problems are kept.
# Default model, first 20 problems, matched budget of 512 tokens per sample (4096 at N=8);
# MATH gets 1024 per sample, since at 512 most CoT misses were cut off unanswered.
# Usage: bash scripts/eval_figures.sh [first-step [last-step]]   (steps numbered below)
set -u
G=../shared/data/gsm8k_dev.jsonl
M=../shared/data/math_dev.jsonl
step() {  # [B=tokens-per-sample] [LIMIT=problems] step NUMBER OUT ARGS...
  local k=$1 out=$2 budget=${B:-512}; shift 2
  if (( k < ${FIRST:-1} || k > ${LAST:-99} )); then return; fi
  # A step that names no verifier ran with confidence and final-norm states (before a probe
  # shipped, which would now be the default): pinned, so it reproduces its figures. (CoT,
  # step 28, ran with the probe as default; CoT scores nothing, so its rows resume.)
  [[ " $* " == *" --verifier "* ]] || set -- "$@" --verifier confidence --layer final
  echo "== step $k: tts eval $* --budget-per-sample $budget --out eval-out/$out" >&2
  tts eval "$@" --limit "${LIMIT:-20}" --budget-per-sample "$budget" --out "eval-out/$out" || echo "step $k failed" >&2
}
FIRST=${1:-1}; LAST=${2:-99}
step 1 gsm8k20 --data $G --strategy cot --n 8
step 2 gsm8k20 --data $G --strategy majority,weighted,bracket --n 8
step 3 gsm8k20-revise-m4 --data $G --strategy revise --n 8 --m 4
step 4 gsm8k20-revise-m8 --data $G --strategy revise --n 8 --m 8
step 5 gsm8k20-selfjudge --data $G --strategy beam --n 8 --m 4 --verifier self-judge
step 6 gsm8k20 --data $G --strategy dvts --n 8 --m 4
# MCTS with its roll-out half; the rows before it (all budget on the tree) are in gsm8k20's log.
step 7 gsm8k20-mcts --data $G --strategy mcts --n 8 --m 4
step 8 gsm8k20 --data $G --strategy auto --n 8 --m 4
B=1024 step 9 math20-l12-b1024 --data $M --levels 1,2 --strategy cot,majority,weighted --n 8
# Step 2 again at 1024 tokens per sample. A problem whose samples all finished under 512
# tokens is the same run at either share (checked on test/1: same answers, tokens and
# scores), so its rows are copied from step 2's log and only the others run.
if (( FIRST <= 10 && 10 <= LAST )); then
  python3 scripts/reuse_uncapped.py eval-out/gsm8k20/log.jsonl eval-out/gsm8k20-b1024/log.jsonl --share 512
fi
B=1024 step 10 gsm8k20-b1024 --data $G --strategy cot,majority,weighted,bracket --n 8
# The next 20 GSM8K problems (never used for tuning): do the first 20's results hold?
step 11 gsm8k-next20 --data $G --skip 20 --strategy cot,majority,weighted --n 8
step 12 gsm8k-next20 --data $G --skip 20 --strategy auto --n 8 --m 4
step 13 gsm8k-next20 --data $G --skip 20 --strategy dvts --n 8 --m 4
# Issue 15: the vote rows again after the answer fixes (a sample that answered and wrote
# on is counted; the engine stops at a complete answer; math-verify extracts answers), on
# the first 40 GSM8K problems and the 20 MATH level 1-2 problems; one sample run each.
LIMIT=40 step 14 fix-gsm8k40 --data $G --strategy majority,weighted,bracket --n 8
B=1024 step 15 fix-math20-l12 --data $M --levels 1,2 --strategy majority,weighted,bracket --n 8
# The same 40 GSM8K problems sampled as before the fix (answer stop off), read by the old
# and the new leaf rule: answered samples the old rule dropped, tokens after the answer.
if (( FIRST <= 16 && 16 <= LAST )); then
  python3 bench/dropped_samples.py --limit 40 --out eval-out/dropped-gsm8k40.jsonl
fi
# Issue 17: adaptive votes on the report slices (problems 1-60 of gsm8k_dev; 30 of math_dev
# levels 1-3), default model. One fixed run at N=16 per problem yields majority and weighted
# at 8 and 16 and the replayed adaptive rows (max 16; with the DeepConf cut too); auto runs
# adaptive live. The first 20 GSM8K problems come first, then the live check of the replay.
A="--adaptive --cut --wave 4 --stop-at 0.95"
LIMIT=20 step 17 adaptive-gsm8k60 --data $G --strategy majority,weighted --n 8,16 $A
if (( FIRST <= 18 && 18 <= LAST )); then
  python3 bench/adaptive_live.py --limit 3 --n 16 --wave 4 --out eval-out/adaptive-live.jsonl
fi
# From problem 23 on (and on the MATH slice), the fixed runs also keep their samples' hidden
# states and token statistics: issue 16 scores the first 8 of them with every verifier.
SG="--save-states eval-out/report-gsm8k60-states"
SM="--save-states eval-out/report-math30-states"
LIMIT=60 step 19 adaptive-gsm8k60 --data $G --strategy majority,weighted --n 8,16 $A $SG
LIMIT=60 step 20 adaptive-gsm8k60 --data $G --strategy auto --n 16 --m 4 $A
B=1024 LIMIT=30 step 21 adaptive-math30 --data $M --levels 1,2,3 --strategy majority,weighted --n 8,16 $A $SM
B=1024 LIMIT=30 step 22 adaptive-math30 --data $M --levels 1,2,3 --strategy auto --n 16 --m 4 $A
# Issue 16: GSM8K problems 1-22 sampled at N=8 with their states kept (23-60 come from step 19).
LIMIT=22 step 23 probe-gsm8k22 --data $G --strategy majority,weighted --n 8 $SG
# Issue 18: the in-process engine against llama-server at concurrency 1, 4 and 8, and the
# prompt cache on and off (the fast 0.5B policy: 20 problems x 5 runs fit one session).
if (( FIRST <= 25 && 25 <= LAST )); then
  python3 bench/server_figures.py --model fast --limit 20 --out eval-out/server-figures
fi
# Issue 16: the probe's training samples, from dev problems outside the report slices:
# 110 GSM8K and 50 MATH at levels 1-3 (above level 3 the 1.5B policy gets nearly every
# sample wrong, which teaches a within-question ranking nothing, at twice the time per
# problem). Resumable; --sample-only: fit later with the same command without it.
if (( FIRST <= 24 && 24 <= LAST )); then
  # the report slices' ids, never trained on: a failure here must not leave an empty list
  python3 scripts/report_slices.py > eval-out/report-ids.txt.new && mv eval-out/report-ids.txt.new eval-out/report-ids.txt \
    || { echo "step 24 failed: no report ids" >&2; exit 1; }
  tts verifier train --data $G,$M --levels 1,2,3 --exclude eval-out/report-ids.txt --n 8 --limit 110,50 --sample-only \
    --layer final
fi
# Issue 16, once the samples of step 24 are in: fit the probe (the same command without
# --sample-only), then score the report slices' samples with every verifier (AUROC, the
# votes at 8 and pass@8), then the search rows with the probe on the GSM8K slice and the
# CoT rows of both slices.
# The fit runs once (its log marks it done): a refit writes a new probe file, whose new
# digest would set steps 29-30's rows apart from those already made with the old one.
if (( FIRST <= 26 && 26 <= LAST )) && [[ ! -s eval-out/probe-fit.txt ]]; then
  tts verifier train --data $G,$M --levels 1,2,3 --exclude eval-out/report-ids.txt --n 8 --limit 110,50 \
    --layer final > eval-out/probe-fit.txt.new && mv eval-out/probe-fit.txt.new eval-out/probe-fit.txt || echo "step 26 failed" >&2
  cat eval-out/probe-fit.txt 2>/dev/null
fi
if (( FIRST <= 27 && 27 <= LAST )); then
  # these sets hold final-norm states: once step 32 has put the layer-17 probe in the user
  # dir, the final-norm one it kept aside scores them
  PF=(); [[ -f eval-out/probe-final-norm.npz ]] && PF=(--probe eval-out/probe-final-norm.npz)
  for s in gsm8k60 math30; do
    tts verifier eval --samples eval-out/report-$s-states --votes 8 "${PF[@]}" > eval-out/verifiers-$s.txt.new \
      && mv eval-out/verifiers-$s.txt.new eval-out/verifiers-$s.txt && cat eval-out/verifiers-$s.txt \
      || echo "step 27 failed ($s)" >&2
  done
fi
LIMIT=60 step 28 cot-gsm8k60 --data $G --strategy cot
B=1024 LIMIT=30 step 28 cot-math30 --data $M --levels 1,2,3 --strategy cot
# The probe on layer 17 (a middle layer did better on dev folds: scripts/probe_layers.py).
# Step 31: the training samples' texts fed back through the model, read at every step end
# (resumable); then the report slices' first 8 samples the same way (GSM8K: the 54 of 60
# whose set kept their texts). Step 32, once: a sample set of layer-17 states, the fit
# (the final-norm probe kept aside as eval-out/probe-final-norm.npz), and the verifier
# tables of both slices on their layer-17 states. Steps 29-30 run after it, with it.
V=$HOME/.local/share/tts-tui/verifiers
S=$V/qwen2.5-coder-1.5b-instruct-q4_k_m-cc324af070c2
CAP="scripts/probe_layers.py capture --steps --layers 14,17,21"
if (( FIRST <= 31 && 31 <= LAST )); then
  # the final-norm probe (steps 26-27) kept aside; its training problems are the capture's
  [[ -f eval-out/probe-final-norm.npz ]] || cp $S.npz eval-out/probe-final-norm.npz
  python3 -c "import json,numpy as np; z=np.load('eval-out/probe-final-norm.npz'); \
print('\n'.join(json.loads(bytes(z['meta']).decode())['info']['trained_on']))" > eval-out/fit-ids.txt
  python3 $CAP --only eval-out/fit-ids.txt
  python3 $CAP eval-out/report-math30-states --per-problem 8
  python3 $CAP eval-out/report-gsm8k60-states --per-problem 8 --data $G
fi
if (( FIRST <= 32 && 32 <= LAST )) && [[ ! -s eval-out/probe-fit-l17.txt ]]; then
  # build refuses a training set the capture has not finished (train would sample the rest)
  python3 scripts/probe_layers.py build $S eval-out/layers-steps $S-L17 --layer 17 --only eval-out/fit-ids.txt \
    && tts verifier train --data $G,$M --levels 1,2,3 --exclude eval-out/report-ids.txt --n 8 --limit 110,50 \
      --samples $S-L17 --layer 17 > eval-out/probe-fit-l17.txt.new \
    && mv eval-out/probe-fit-l17.txt.new eval-out/probe-fit-l17.txt || echo "step 32 failed" >&2
  cat eval-out/probe-fit-l17.txt 2>/dev/null
fi
# Both probes on the same report samples (the first 8 of each problem the capture read):
# layer 17's states with the new probe, the final-norm states with the old one.
if (( FIRST <= 32 && 32 <= LAST )) && [[ -s eval-out/probe-fit-l17.txt ]]; then
  for s in gsm8k60 math30; do
    for L in 17 -1; do
      python3 scripts/probe_layers.py build eval-out/report-$s-states eval-out/layers-steps eval-out/report-$s-l$L --layer $L
    done
    tts verifier eval --samples eval-out/report-$s-l17 --votes 8 > eval-out/verifiers-$s-l17.txt.new \
      && mv eval-out/verifiers-$s-l17.txt.new eval-out/verifiers-$s-l17.txt \
      && tts verifier eval --samples eval-out/report-$s-l-1 --votes 8 --probe eval-out/probe-final-norm.npz \
        > eval-out/verifiers-$s-final-norm-same.txt.new \
      && mv eval-out/verifiers-$s-final-norm-same.txt.new eval-out/verifiers-$s-final-norm-same.txt \
      && cat eval-out/verifiers-$s-l17.txt eval-out/verifiers-$s-final-norm-same.txt || echo "step 32 failed ($s)" >&2
  done
fi
# Step 29: beam with the probe (its log went with the machine it ran on; the README keeps
# its figures). Step 30: DVTS and MCTS with the probe, problem by problem (one `tts eval`
# per problem count), so a stop at any point leaves both rows on the same first problems.
# Their log is kept in the repository (results/), so a new machine resumes it, from the
# first problem it lacks (a resume is refused if the probe in use is not the one that
# wrote the rows: a user-trained probe in the data dir comes before the shipped one).
LIMIT=60 step 29 probe-gsm8k60 --data $G --strategy beam --n 8 --m 4 --verifier probe
if (( FIRST <= 30 && 30 <= LAST )); then
  R=results/probe-search-gsm8k60/log.jsonl
  done=$( [[ -s $R ]] && python3 -c "import itertools, json, sys
keys = {json.loads(l)['key'] for l in open(sys.argv[1]) if l.strip()}
ids = [json.loads(l)['id'] for l in itertools.islice(open(sys.argv[2]), 60)]
print(next((i for i, p in enumerate(ids) if not {f'dvts|8|{p}', f'mcts|8|{p}'} <= keys), len(ids)))" "$R" $G || echo 0)
  for k in $(seq $((done + 1)) 60); do
    tts eval --data $G --strategy dvts,mcts --n 8 --m 4 --verifier probe --limit "$k" \
      --budget-per-sample 512 --out results/probe-search-gsm8k60 || { echo "step 30 failed" >&2; break; }
  done
fi
