#!/usr/bin/env bash
# Runs the example programs as docs/examples/*.md describe them (pretrain_toy
# with a small model) and checks what they print.
#   run_examples.sh BUILD_EXAMPLES_DIR WORK_DIR [MPIEXEC] [bf16]
#   (MPIEXEC: distributed_search was built; bf16: bf16_search and fp32_gemm were built)
set -uo pipefail
bin=$(realpath "$1")
work=$2
mpiexec=${3:-}
bf16=${4:-}
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
export OMP_NUM_THREADS=2
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

out=$("$bin/autodiff_basics" 2>&1) || fail "autodiff_basics exited $?: $out"
first=$(sed -n 's/^step *0 *loss \([0-9.]*\)$/\1/p' <<< "$out")
last=$(sed -n 's/^step *200 *loss \([0-9.]*\)$/\1/p' <<< "$out")
python3 -c "import sys; sys.exit(not (float('$first') > 0.5 and float('$last') < 0.5 * float('$first')))" 2>/dev/null ||
  fail "autodiff_basics: the loss did not fall (from '$first' to '$last')"

out=$("$bin/custom_fusion_op" 2>&1) || fail "custom_fusion_op exited $?: $out"
grep -q "search space: 5 operators per layer" <<< "$out" || fail "custom_fusion_op: no search-space line: $out"
grep -q "^genotype: " <<< "$out" || fail "custom_fusion_op: no genotype: $out"
[[ $(grep -c "train loss" <<< "$out") == 10 ]] || fail "custom_fusion_op: expected 10 steps: $out"

out=$("$bin/budget_search" 2>&1) || fail "budget_search exited $?: $out"
grep -q "^its cost: .* within the budget: yes" <<< "$out" || fail "budget_search: the genotype is not within the budget: $out"
spent=$(sed -n 's/^its cost: \([0-9]*\) trainable values.*/\1/p' <<< "$out")
[[ -n $spent ]] && grep -q "^derived model: $spent trainable values" <<< "$out" ||
  fail "budget_search: the table's cost is not the derived model's trainable count: $out"
out=$("$bin/budget_search" --share -1 2>&1)
code=$?
[[ $code == 1 ]] && grep -q "below the cheapest genotype" <<< "$out" || fail "budget_search --share -1: exit $code, output: $out"

out=$("$bin/pretrain_toy" --out bb.safetensors --dim 32 --depth 2 --heads 2 --mlp 64 --epochs 1 --train 64 --test 32 \
  2>&1) || fail "pretrain_toy exited $?: $out"
grep -q "saved bb.safetensors" <<< "$out" || fail "pretrain_toy: nothing saved: $(tail -n 2 <<< "$out")"
[[ -s bb.safetensors ]] || fail "pretrain_toy: bb.safetensors is missing"
out=$("$bin/pretrain_toy" --dim 64 --heads 5 --epochs 1 --train 8 --test 8 2>&1)
code=$?
[[ $code == 1 ]] && grep -q "config_error" <<< "$out" || fail "pretrain_toy --heads 5: exit $code, output: $out"

if [[ -n $mpiexec ]]; then
  # one process, then two: the same genotype, and the same losses within 1e-4
  one=$(OMP_NUM_THREADS=1 "$bin/distributed_search" --epochs 3 --out one.json 2>&1) || fail "distributed_search exited $?: $one"
  two=$("$mpiexec" --oversubscribe --allow-run-as-root --bind-to none -np 2 "$bin/distributed_search" --epochs 3 --out two.json 2>&1) ||
    fail "mpirun -np 2 distributed_search exited $?: $two"
  grep -q "^processes: 2," <<< "$two" || fail "distributed_search under mpirun: not 2 processes: $two"
  [[ $(grep -c "^epoch" <<< "$two") == 3 ]] || fail "distributed_search: expected 3 epoch lines from process 0 only: $two"
  [[ "$(grep '^genotype' <<< "$one")" == "$(grep '^genotype' <<< "$two")" ]] || fail "distributed_search: genotypes differ: $one // $two"
  python3 - "$(grep '^epoch 3' <<< "$one")" "$(grep '^epoch 3' <<< "$two")" <<'PY' || fail "distributed_search: losses differ: $one // $two"
import re, sys
a, b = ([float(v) for v in re.findall(r"loss ([0-9.eE+-]+)", line)] for line in sys.argv[1:3])
sys.exit(not (len(a) == 2 and len(b) == 2 and all(abs(x - y) <= 1e-4 * abs(y) for x, y in zip(a, b))))
PY
  [[ -s two.json ]] || fail "distributed_search: two.json is missing"
fi

if [[ -n $bf16 ]]; then
  # where the CPU has bf16: both searches and a small logits difference; elsewhere exit 2 with the reason
  out=$("$bin/bf16_search" --epochs 2 2>&1)
  code=$?
  if grep -q "^bf16 kernels: " <<< "$out"; then
    [[ $code == 0 ]] || fail "bf16_search exited $code: $out"
    grep -q "^fp32: .* genotype " <<< "$out" && grep -q "^bf16: .* genotype " <<< "$out" ||
      fail "bf16_search: expected an fp32 and a bf16 search: $out"
    diff=$(sed -n 's/.*relative difference \([0-9.eE+-]*\)$/\1/p' <<< "$out")
    python3 -c "import sys; sys.exit(not float('$diff') < 0.05)" 2>/dev/null ||
      fail "bf16_search: bf16 logits too far from fp32 ('$diff'): $out"
  else
    [[ $code == 2 ]] && grep -q "bf16 is not available" <<< "$out" || fail "bf16_search without bf16: exit $code: $out"
  fi
  # the float32 products on Eigen and on oneDNN: both searches, logits apart by float32 rounding only
  out=$("$bin/fp32_gemm" --epochs 2 2>&1) || fail "fp32_gemm exited $?: $out"
  grep -q "^auto picks onednn: " <<< "$out" || fail "fp32_gemm: auto did not pick oneDNN in a build with it: $out"
  grep -q "^eigen: .* genotype " <<< "$out" && grep -q "^onednn: .* genotype " <<< "$out" ||
    fail "fp32_gemm: expected an Eigen and a oneDNN search: $out"
  diff=$(sed -n 's/.*relative difference \([0-9.eE+-]*\)$/\1/p' <<< "$out")
  python3 -c "import sys; sys.exit(not float('$diff') < 1e-3)" 2>/dev/null ||
    fail "fp32_gemm: oneDNN's logits too far from Eigen's ('$diff'): $out"
  out=$(ONEDNN_MAX_CPU_ISA=AVX2 "$bin/bf16_search" 2>&1)
  code=$?
  [[ $code == 2 ]] && grep -q "neither AVX512-BF16 nor AMX" <<< "$out" ||
    fail "bf16_search under ONEDNN_MAX_CPU_ISA=AVX2: expected exit 2 and the reason, got $code: $out"
fi

echo "examples: $failures failures"
(( failures == 0 ))
