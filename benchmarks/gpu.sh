#!/usr/bin/env bash
# Everything GPU-specific in one go on a CUDA machine: the CUDA tests, the throughput table
# (engine defaults vs fp32 / host-side batches / torch.compile vs the naive loop) and time-to-FID.
#
#   benchmarks/gpu.sh [DATA [ENCODER]]    # DATA: flat PNG folder, default ../shared/data/covid-cxnet
#
# Logs and JSON go to $OUT (default benchmarks/results/gpu-<time>); copy the tables into BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/covid-cxnet}
ENC=${2:-}
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CXRAUG_CACHE=${CXRAUG_CACHE:-/tmp/cxraug-cache-gpu}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/machine.txt"
$PY -c "import torch, accelerate, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'accelerate', accelerate.__version__)" >>"$OUT/machine.txt"
grep -m1 'model name' /proc/cpuinfo >>"$OUT/machine.txt"; nproc >>"$OUT/machine.txt"
cat "$OUT/machine.txt"

echo "== CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -15

echo "== throughput"
cases=()
for p in dcgan-64 wgan-gp-64 wgan-gp-128; do
  cases+=("train:$p:engine" "train:$p:naive" "train:$p:engine+fp32" "train:$p:engine+host")
done
cases+=(train:wgan-gp-64:engine+torchnorm train:wgan-gp-128:engine+torchnorm train:dcgan-64:engine+compile)
cases+=(load:png load:cache fid:encoder fid:inception-v3 fid:xrv-densenet121)
$PY benchmarks/bench_throughput.py --data "$DATA" --steps 20 --repeats 3 --warmup 5 --load-batches 20 \
  --only "${cases[@]}" >"$OUT/throughput.md" 2>"$OUT/throughput.log"
cat "$OUT/throughput.md"
cp "$(ls -t benchmarks/results/throughput-*.json | head -1)" "$OUT/throughput.json"

echo "== profile"
$PY benchmarks/profile_step.py wgan-gp-64 dcgan-64 >"$OUT/profile.txt" 2>&1
grep "==" "$OUT/profile.txt"

echo "== time to FID <= 10 (WGAN-GP-64, width 32): default (bf16), then fp32"
for set in "" "--set amp=no"; do
  # shellcheck disable=SC2086
  $PY benchmarks/time_to_fid.py --data "$DATA" ${ENC:+--encoder "$ENC"} $set 2>>"$OUT/ttf.log" | tee -a "$OUT/ttf.txt"
  cat "$(ls -t benchmarks/results/time-to-fid-*.json | head -1)" >>"$OUT/ttf.json"
done
