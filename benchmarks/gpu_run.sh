#!/usr/bin/env bash
# The GPU checks and figures of benchmarks/README.md in one run, each step under its own timeout, into one folder:
#   tests      tests/test_cuda.py and tests/test_pipeline.py (CUDA against CPU, the scoring pipeline's fast paths)
#   e2e        score_e2e.py steady state: 2000 JPEGs, 10 crops, bf16, one decoding worker per CPU core
#   tp_eager   throughput.py, bf16, batch 256, fused MoAE, eager
#   tp_compiled  the same, compiled (Gamma.compile_towers)
#   train_b64  train_step.py, bf16, batch 64
#   e2e_compiled  the e2e step with the towers compiled (the compile counts in its start-up, not its steady rate)
# Run from the repository root on a CUDA machine with torch, numpy, pillow, safetensors and pyyaml installed. The CLIP
# vocabulary comes from an installed open_clip (pip install --no-deps open-clip-torch) or a .whl/ folder holding its
# wheel. Logs go to $OUT (default build/gpu), one file per step; each step's last line is its JSON. Steps go on when
# one fails or times out (exit 124). `SMOKE=1 bash benchmarks/gpu_run.sh` runs the same steps on the CPU with
# gamma-test and tiny sizes, to check the script itself (no GPU needed).
set -uo pipefail
OUT=${OUT:-build/gpu}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")  # not nproc: it obeys OMP_NUM_THREADS
if [ "$SMOKE" = 1 ]; then
  DEV="--device cpu"; MODEL="--model gamma-test"
  E2E="--images 24 --workers 1 --iters 1 --decode-sample 4"; TP="--batch 4 --iters 1 --warmup 0"
  TRAIN="--batch 2 --iters 1 --warmup 0"; TESTS="tests/test_pipeline.py"
  echo "smoke run on the CPU (gamma-test, tiny sizes)" | tee "$OUT/gpu.txt"
else
  DEV="--device cuda"; MODEL=""
  E2E="--images 2000 --workers $CORES --batch-size 32"; TP="--batch 256 --iters 15 --warmup 3"
  TRAIN="--batch 64 --iters 10 --warmup 2"; TESTS="tests/test_cuda.py tests/test_pipeline.py"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
fi
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$OUT/gpu.txt"
echo "cpu cores: $CORES" | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: runs it under `timeout`, keeps its log, goes on when it fails
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - t0)) s; $(tail -n 1 "$OUT/$name.log")"
}

# shellcheck disable=SC2086  # the option strings split into arguments on purpose
{
  step tests 240 python3 -m pytest -p no:cacheprovider -q $TESTS
  step e2e 240 python3 benchmarks/score_e2e.py $DEV $MODEL --dtype bf16 --crops 10 $E2E
  step tp_eager 120 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP
  step tp_compiled 240 python3 benchmarks/throughput.py $DEV $MODEL --dtype bf16 $TP --compile
  step train_b64 120 python3 benchmarks/train_step.py $DEV $MODEL --dtype bf16 $TRAIN
  step e2e_compiled 240 python3 benchmarks/score_e2e.py $DEV $MODEL --dtype bf16 --crops 10 $E2E --compile
}
