#!/usr/bin/env bash
# The GPU checks and figures of benchmarks/README.md in one run: the CUDA tests, then throughput (bf16, batch 256:
# fused eager, reference eager, fused compiled), the training step (bf16, batch 64) and end-to-end scoring.
# Run from the repository root on a CUDA machine with torch, numpy, pillow, safetensors and pyyaml installed. The CLIP
# vocabulary comes from an installed open_clip (pip install --no-deps open-clip-torch) or a .whl/ folder holding its
# wheel. Logs go to $OUT (default build/gpu) as one file per step; each step's last line is its JSON.
set -uo pipefail
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$OUT/gpu.txt"

step() {  # step NAME COMMAND...: runs it, keeps its log, goes on when it fails
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - t0)) s; $(tail -n 1 "$OUT/$name.log")"
}

step tests python3 -m pytest -p no:cacheprovider -q tests/test_cuda.py
B="--device cuda --dtype bf16 --batch 256 --iters 15 --warmup 3"
step tp_fused python3 benchmarks/throughput.py $B
step tp_reference python3 benchmarks/throughput.py $B --moae reference
step tp_compiled python3 benchmarks/throughput.py $B --compile
step train_b64 python3 benchmarks/train_step.py --device cuda --dtype bf16 --batch 64 --iters 10 --warmup 2
step e2e python3 benchmarks/score_e2e.py --device cuda --dtype bf16 --images 300 --crops 10 --workers 12 \
  --batch-size 32
