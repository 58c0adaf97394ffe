#!/usr/bin/env bash
# Kills at random points lose no work and leave no mess: a small search is killed (kill -9) at
# random moments N times, resumed each time, and ends byte-identical to an uninterrupted run with
# no temporary file left; retrain killed at random moments never leaves a new model beside old
# metrics.   test_kill.sh PATH/TO/vpdarts WORK_DIR [N]
set -uo pipefail
tool=$1 work=$2 kills=${3:-6}
rm -rf "$work" && mkdir -p "$work/home" && cd "$work" || exit 1
export HOME=$work/home VPDARTS_CACHE=$work/cache OMP_NUM_THREADS=2
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
RANDOM=7  # the kill moments are random but the same every run

"$tool" pretrain --out bb.safetensors --image 16 --patch 4 --dim 16 --depth 2 --heads 2 --mlp 32 --epochs 1 \
  --train-images 60 --test-images 20 --batch 20 --quiet > /dev/null || { echo "FAIL: pretrain"; exit 1; }
common=(--backbone bb.safetensors --prompts 2 --batch 8 --train-images 80 --quiet)
search=("${common[@]}" --epochs 24 --warmup-epochs 1 --train-images 160 --runs 1 --reference-images 0)  # one search: kills land anywhere in it
start=$(date +%s.%N)
"$tool" search "${search[@]}" --out straight > /dev/null || fail "the uninterrupted search failed"
whole=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')

# Kill moments are drawn within the first eighth of an uninterrupted run's time. The machine may be
# much faster now than when "whole" was measured (a test beside it finished), so a resumed run can
# finish before its kill: then the search starts over with kill moments half as late, until one chain
# of resumes has taken $kills kills (or too many attempts went by).
interrupted=0 scale=$whole attempts=0
while ((interrupted < kills && attempts < 4 * kills)); do
  attempts=$((attempts + 1))
  "$tool" search "${search[@]}" --out killed --resume > /dev/null 2>&1 &
  pid=$!
  sleep "$(awk -v w="$scale" -v r=$((RANDOM % 1000)) 'BEGIN { printf "%.3f", w * r / 8000 }')"
  if kill -9 $pid 2>/dev/null; then
    interrupted=$((interrupted + 1))
    wait $pid 2>/dev/null
  else
    wait $pid 2>/dev/null
    rm -rf killed
    interrupted=0
    scale=$(awk -v w="$scale" 'BEGIN { printf "%.3f", w / 2 }')
  fi
done
((interrupted >= kills / 2)) || fail "only $interrupted of $kills kills hit a running search ($attempts attempts)"
"$tool" search "${search[@]}" --out killed --resume > resumed.log 2>&1 || fail "the resumed search failed: $(tail -n 2 resumed.log)"
for f in genotype.json alpha.csv; do
  cmp -s straight/$f killed/$f || fail "killed/$f differs from the uninterrupted run's after $kills kills"
done
leftover=$(find killed -name '*.tmp-*')
[[ -z $leftover ]] || fail "temporary files left behind: $leftover"

# retrain: model.safetensors and metrics.json stay a pair (a new model never sits beside old metrics)
"$tool" retrain --run straight "${common[@]}" --epochs 2 --test-images 20 --out pair > /dev/null || fail "retrain failed"
for i in $(seq 1 "$kills"); do
  "$tool" retrain --run straight "${common[@]}" --epochs 2 --test-images 20 --out pair --seed "$i" > /dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 10))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  if [[ -f pair/metrics.json && pair/model.safetensors -nt pair/metrics.json ]]; then
    fail "kill $i: model.safetensors is newer than metrics.json"
  fi
done
"$tool" retrain --run straight "${common[@]}" --epochs 2 --test-images 20 --out pair > /dev/null || fail "the last retrain failed"
leftover=$(find pair -name '*.tmp-*')
[[ -z $leftover ]] || fail "temporary files left behind by retrain: $leftover"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "kill: $interrupted of $kills kills hit a running search (${whole} s uninterrupted), resumed byte-identical; retrain pairs intact; no temporary left"
