#!/usr/bin/env bash
# Everything GPU-specific on a CUDA machine, in parts (default: all of them):
#   tests       pytest tests/test_cuda.py (incl. CUDA graphs vs eager: same losses and weights)
#   throughput  images/s, batch 64: the engine's default (CUDA graphs) vs the eager step, side by side
#   scaling     images/s at batch 128, 256, 512 (graphed; eager at 512)
#   profile     the kernel-time fraction of a step, graphed and eager (benchmarks/profile_step.py)
#   ttq         time to an encoder-FID threshold per family at 64 and 128 px (benchmarks/time_to_fid.py)
#   cpubf16     not the GPU: the host CPU, where it has native bf16 (AVX-512-BF16 or AMX), pinned to two
#               cores: engine / compute-only / naive in bf16 and float32 at 64 and 128 px (issue 17's bf16
#               rows, which a CPU without bf16 cannot measure); skipped with a line elsewhere
#
#   [PARTS="tests throughput"] [TTQ_SECONDS=60] benchmarks/gpu.sh [DATA]   # DATA: flat PNG folder
#
# Logs and JSON go to $OUT (default benchmarks/results/gpu-<time>); copy the tables into BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/covid-cxnet}
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
PARTS=${PARTS:-tests throughput scaling profile ttq cpubf16}
TTQ_SECONDS=${TTQ_SECONDS:-60}
TTQ_PRESETS=${TTQ_PRESETS:-dcgan-64 wgan-gp-64 cgan-64 wgan-clip-64 dcgan-128 wgan-gp-128}
WORK=${WORK:-/tmp/cxraug-gpu-bench}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 CXRAUG_CACHE=${CXRAUG_CACHE:-/tmp/cxraug-cache-gpu}
has() { [[ " $PARTS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/machine.txt"
$PY -c "import torch, accelerate, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'accelerate', accelerate.__version__)" >>"$OUT/machine.txt"
grep -m1 'model name' /proc/cpuinfo >>"$OUT/machine.txt"; nproc >>"$OUT/machine.txt"
cat "$OUT/machine.txt"

bench() {  # bench NAME --batch N CASES...
  local name=$1; shift
  $PY benchmarks/bench_throughput.py --data "$DATA" --workdir "$WORK" --steps 20 --repeats 3 --warmup 5 "$@" \
    >"$OUT/$name.md" 2>"$OUT/$name.log"
  grep '^| train' "$OUT/$name.md"
}

if has tests; then
  echo "== CUDA tests"
  $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -5
fi
if has throughput; then
  echo "== throughput, batch 64: default (CUDA graphs) vs eager"
  cases=()
  for p in dcgan-64 wgan-gp-64 wgan-gp-128; do cases+=("train:$p:engine" "train:$p:engine+eager"); done
  bench throughput --batch 64 --only "${cases[@]}"
fi
if has scaling; then
  echo "== batch scaling"
  for b in 128 256 512; do
    cases=(train:wgan-gp-64:engine train:wgan-gp-128:engine)
    [[ $b == 512 ]] && cases+=(train:wgan-gp-64:engine+eager train:wgan-gp-128:engine+eager)
    bench "scaling-$b" --batch "$b" --only "${cases[@]}"
  done
fi
if has profile; then
  echo "== profile (kernel time per step)"
  for p in dcgan-64 wgan-gp-64 wgan-gp-128; do
    for g in true false; do
      $PY benchmarks/profile_step.py "$p" --set "cuda_graphs=$g" --top 8 >"$OUT/profile-$p-graphs-$g.txt" 2>&1
      echo "cuda_graphs=$g $(grep '==' "$OUT/profile-$p-graphs-$g.txt")"
    done
  done
fi
if has ttq; then
  echo "== time to encoder-FID <= 10 (max ${TTQ_SECONDS} s of training each)"
  for p in $TTQ_PRESETS; do
    $PY benchmarks/time_to_fid.py --data "$DATA" --preset "$p" --width 0 --max-seconds "$TTQ_SECONDS" \
      2>>"$OUT/ttq.log" | tee -a "$OUT/ttq.txt"
    cat "$(ls -t benchmarks/results/time-to-fid-*.json | head -1)" >>"$OUT/ttq.json"
  done
fi
if has cpubf16; then
  echo "== host CPU, two cores: engine / compute-only / naive, bf16 and float32"
  if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
    cases=()
    for p in dcgan-64 wgan-gp-64 dcgan-128 wgan-gp-128; do
      cases+=("train:$p:engine" "train:$p:compute" "train:$p:naive" "train:$p:engine+fp32" "train:$p:compute+fp32")
    done
    CUDA_VISIBLE_DEVICES= taskset -c 0,1 $PY benchmarks/bench_throughput.py --data "$DATA" --workdir "$WORK" \
      --device cpu --threads 2 --batch 32 --steps 1 --repeats 3 --warmup 1 --only "${cases[@]}" \
      >"$OUT/cpubf16.md" 2>"$OUT/cpubf16.log"
    grep -E '^(CPU flags|\| (train|preset|dcgan|wgan))' "$OUT/cpubf16.md"
  else
    echo "skipped: this host CPU has neither avx512_bf16 nor amx_bf16"
  fi
fi
