#!/usr/bin/env bash
# Where a step's time goes on this CPU, kernel by kernel (docs/performance.md, "Reading a step"): builds
# vpdarts_bench and runs it with --profile for each workload, mode and precision this CPU has (bf16 only on
# AVX512-BF16 or AMX), float32 on both product engines. The rows docs/performance.md lacks for a CPU kind
# come from one run of this script on that CPU.
#   scripts/profile.sh     (env: WORKLOADS="toy tiny16", MODES="first infer", THREADS=2, STEPS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
workloads=${WORKLOADS:-toy tiny16}
modes=${MODES:-first infer}
threads=${THREADS:-2}
steps=${STEPS:-3}
scripts/install-deps.sh
flags=(-DCMAKE_BUILD_TYPE=Release -DVPDARTS_BUILD_BENCH=ON)
command -v ccache >/dev/null && flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build "${flags[@]}" > /dev/null
cmake --build build -j "$(nproc)" --target vpdarts_bench > /dev/null
bench=build/bench/vpdarts_bench
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $("$bench" --roof fp32 --threads "$threads" 2>/dev/null | head -n 1)"
runs=("--fp32-gemm eigen" "--fp32-gemm auto")
if "$bench" --roof bf16 --threads 1 > /dev/null 2>&1; then runs+=("--precision bf16"); fi
for w in $workloads; do
  for m in $modes; do
    for r in "${runs[@]}"; do
      echo "== $w $m $r"
      # shellcheck disable=SC2086
      "$bench" --workload "$w" --mode "$m" --steps "$steps" --threads "$threads" --profile $r 2>/dev/null
    done
  done
done
