#!/usr/bin/env bash
# Every GPU check and figure of benchmarks/README.md in one run, into one folder, inside one time budget.
#
# A lent GPU gives a session about 15 minutes in all, start-up included: the steps share BUDGET seconds (default 480),
# each also under its own cap, most important first; a step that would start with under 20 s left is skipped (its log
# says so). Steps go on when one fails or times out (exit 124); the script's exit status is 1 when any step failed.
#   tests          the CUDA-only tests: CUDA against CPU, the scoring pipeline's fast paths, compiled scoring
#   e2e            score_e2e.py steady state: 2000 JPEGs, 10 crops, bf16, one decoding worker per CPU core, eager
#   tp_eager       throughput.py, bf16, batch 256: ours, naive, plain and ours in fp32 (the score difference)
#   tp_compiled    ours compiled (torch.compile's default mode), scores against eager
#   train_b64      train_step.py, bf16, batch 64, eager (fused MoAE form), default and fused Adam
#   tp_graphs      ours compiled with CUDA graphs (mode reduce-overhead)
#   train_compiled train_step.py compiled, fused Adam
#   e2e_graphs     the e2e step through `score --compile-mode reduce-overhead` (the compile counts in its start-up)
#   decode         gpu_decode.py: nvJPEG (torchcodec or torchvision, from .whl/) against the CPU decoder
#   tp_sdpa        ours and plain eager with cuDNN attention (torch.nn.attention.sdpa_kernel)
# Run from the repository root on a CUDA machine with torch, numpy, pillow, safetensors, pyyaml and pytest. The CLIP
# vocabulary comes from an installed open_clip (pip install --no-deps open-clip-torch) or a .whl/ folder holding its
# wheel; .whl/ may also hold a torchcodec or torchvision wheel built for the machine's torch (the decode step). Logs go
# to $OUT (default build/gpu), one file per step, each ending with its JSON line; summary.txt has one line per step.
# `SMOKE=1 bash benchmarks/gpu_run.sh` runs the same steps on the CPU with gamma-test and tiny sizes, to check the
# script itself (no GPU needed; tests/test_gpu_script.py, marked slow).
set -uo pipefail
OUT=${OUT:-build/gpu}
SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-480}
if ! [[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || [ "$BUDGET" -lt 20 ]; then  # no leading 0: bash would read it as octal
  echo "gpu_run.sh: BUDGET must be whole seconds, at least 20 (e.g. 480), got '$BUDGET'" >&2; exit 2
fi
if [ "$SMOKE" != 0 ] && [ "$SMOKE" != 1 ]; then
  echo "gpu_run.sh: SMOKE must be 0 (a GPU run) or 1 (the CPU smoke run), got '$SMOKE'" >&2; exit 2
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")  # not nproc: it obeys OMP_NUM_THREADS
if [ "$SMOKE" = 0 ] && ! python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_run.sh: no CUDA device (or no torch) here; on a CPU run the smoke mode: SMOKE=1 bash $0" >&2; exit 2
fi
if ! python3 -c "import pytest" 2>/dev/null; then
  echo "gpu_run.sh: the tests step needs pytest: python3 -m pip install pytest" >&2; exit 2
fi
mkdir -p "$OUT"
if [ "$SMOKE" = 1 ]; then
  DEV="--device cpu"; MODEL="--model gamma-test"
  E2E="--images 24 --workers 1 --iters 1 --decode-sample 4"; TP="--batch 4 --iters 1 --warmup 0"
  TRAIN="--batch 2 --iters 1 --warmup 0"; TESTS="tests/test_pipeline.py tests/test_compiled_scoring.py"
  DECODE="--device cpu --model gamma-test"; SDPA=math  # the CPU has no cuDNN attention
  echo "smoke run on the CPU (gamma-test, tiny sizes)" | tee "$OUT/gpu.txt"
else
  DEV="--device cuda"; MODEL=""
  E2E="--images 2000 --workers $CORES --batch-size 32"; TP="--batch 256 --iters 15 --warmup 3"
  TRAIN="--batch 64 --iters 10 --warmup 2"
  TESTS="tests/test_cuda.py tests/test_pipeline.py tests/test_compiled_scoring.py -k cuda"
  DECODE="--device cuda"; SDPA=cudnn
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
fi
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$OUT/gpu.txt"
echo "cpu cores: $CORES, budget: $BUDGET s" | tee -a "$OUT/gpu.txt"
: > "$OUT/summary.txt"
START=$SECONDS

step() {  # step NAME CAP COMMAND...: under `timeout` (CAP, or what is left of the budget), keeps its log, goes on
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    echo "{\"skipped\": \"budget spent ($BUDGET s)\"}" > "$OUT/$name.log"
    echo "== $name: skipped, budget spent" | tee -a "$OUT/summary.txt"
    return
  fi
  local limit=$((cap < left ? cap : left))
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  [ "$code" = 0 ] || FAILED=$((FAILED + 1))
  echo "== $name: exit $code in $((SECONDS - t0)) s; $(tail -n 1 "$OUT/$name.log")" | tee -a "$OUT/summary.txt"
}
FAILED=0

# shellcheck disable=SC2086  # the option strings split into arguments on purpose
{
  step tests 120 python3 -m pytest -p no:cacheprovider -q -rs $TESTS
  step e2e 90 python3 benchmarks/score_e2e.py $DEV $MODEL --dtype bf16 --crops 10 $E2E
  step tp_eager 60 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP
  step tp_compiled 100 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP --compile --paths ours,plain
  step train_b64 45 python3 benchmarks/train_step.py $DEV $MODEL --dtype bf16 $TRAIN --forms fused \
    --optimizer default fused
  step tp_graphs 100 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP --compile-mode reduce-overhead \
    --paths ours
  step train_compiled 120 python3 benchmarks/train_step.py $DEV $MODEL --dtype bf16 $TRAIN --forms fused \
    --optimizer fused --compile
  step e2e_graphs 120 python3 benchmarks/score_e2e.py $DEV $MODEL --dtype bf16 --crops 10 $E2E \
    --compile-mode reduce-overhead
  step decode 60 python3 benchmarks/gpu_decode.py $DECODE
  step tp_sdpa 40 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP --paths ours,plain --sdpa $SDPA
}
echo "total $((SECONDS - START)) s of $BUDGET; $FAILED steps failed or timed out" | tee -a "$OUT/summary.txt"
[ "$FAILED" = 0 ]  # the exit status says whether every step that ran passed (skipped steps do not count)
