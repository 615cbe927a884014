#!/usr/bin/env bash
# One prepared script for a short session on a lent GPU machine (16 cores, one CUDA GPU), in parts that each fit a
# 10-minute command (default: all of them, in this order; pick with PARTS="ray fourway64"):
#   ray        the study grid on Ray with 1, 2, 4 and 8 worker processes (benchmarks/ray_scaling.py; issue 28)
#   fourway64  the generator comparison at 64 px on the GPU: DCGAN, WGAN-GP, StyleGAN2-ADA, DDPM, each trained for
#              BUDGET wall seconds alone, then evaluated in the shipped CXR feature space (benchmarks/four_way.py)
#   fourway128 the same at 128 px, the families' 128-px presets
#   gpu        benchmarks/gpu.sh's CUDA tests and throughput parts
#
#   [PARTS="..."] [BUDGET=60] [OUT=benchmarks/results/device-<time>] benchmarks/device_session.sh
#
# Everything lands in $OUT (logs, tables, JSON); copy the tables into BENCHMARKS.md with the machine line it writes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/device-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
PARTS=${PARTS:-ray fourway64 fourway128 gpu}
BUDGET=${BUDGET:-60}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
has() { [[ " $PARTS " == *" $1 "* ]]; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  grep -m1 'model name' /proc/cpuinfo; echo "cores: $(nproc)"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if has ray; then
  echo "== Ray scaling, 1 -> 8 workers"
  if $PY -c "import ray" 2>/dev/null; then
    $PY benchmarks/ray_scaling.py --workers 1 2 4 8 --seeds 4 2>"$OUT/ray.log" | tee "$OUT/ray.md"
  else
    echo "ray is not installed on this machine: part skipped" | tee "$OUT/ray.md"
  fi
fi
for size in 64 128; do
  has "fourway$size" || continue
  echo "== four-way at $size px, $BUDGET wall-s each, on the GPU"
  dir="$OUT/four-way-$size"
  $PY benchmarks/four_way.py prepare --size "$size" --out "$dir" >"$dir.log" 2>&1
  for f in dcgan wgan-gp stylegan2-ada ddpm; do  # one at a time: they share the GPU otherwise
    $PY benchmarks/four_way.py train "$f" --size "$size" --clock wall --device cuda --budget "$BUDGET" \
      --eval-every "$((BUDGET / 3))" --out "$dir" >>"$dir.log" 2>&1 || echo "$f failed (see $dir.log)"
  done
  $PY benchmarks/four_way.py evaluate --size "$size" --clock wall --device cuda --out "$dir" >>"$dir.log" 2>&1
  $PY benchmarks/four_way.py table --out "$dir" | tee "$dir.md"
  $PY benchmarks/four_way.py figure --out "$dir" --dest "$dir.png" >/dev/null 2>&1
done
if has gpu; then
  echo "== gpu.sh: CUDA tests and throughput"
  OUT="$OUT/gpu" PARTS="tests throughput" bash benchmarks/gpu.sh
fi
echo "results: $OUT"
