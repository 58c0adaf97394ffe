#!/usr/bin/env bash
# Runs a libFuzzer target (tests/fuzz/fuzz_TARGET.cpp) with AddressSanitizer and UBSan, built with
# Debian's clang, from seed files made by the library itself. Every target is in one program,
# build-fuzz/fuzz (tests/fuzz/fuzz.cpp; VPDARTS_FUZZ_TARGET picks the target), so the library is
# compiled once. A crash is kept in build-fuzz/crashes/TARGET/; copy it to
# tests/fuzz/regressions/TARGET/ once fixed (the fuzz_regressions ctest replays that folder).
#   scripts/fuzz.sh TARGET SECONDS [RUNS]   TARGET: safetensors model_file idx image_folder genotype config list
#   scripts/fuzz.sh all SECONDS [RUNS]      every target, as many side by side as there are cores
#                                           (VPDARTS_FUZZ_JOBS=N sets how many)
# A target stops after SECONDS, or after RUNS inputs when RUNS is given, whichever comes first
# (the campaign's bar is `scripts/fuzz.sh all 1200 1000000`). Each target's figures are appended to
# build-fuzz/campaign.tsv (target, inputs, seconds, finding).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(safetensors model_file idx image_folder genotype config list)
[[ $# -eq 2 || $# -eq 3 ]] || { echo "usage: scripts/fuzz.sh TARGET|all SECONDS [RUNS] (targets: ${targets[*]})" >&2; exit 2; }
what=$1 seconds=$2 max_runs=${3:--1}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS must be a positive whole number, not '$seconds'" >&2; exit 2; }
[[ $max_runs =~ ^(-1|[1-9][0-9]*)$ ]] || { echo "fuzz.sh: RUNS must be a positive whole number, not '$max_runs'" >&2; exit 2; }
[[ $what == all || " ${targets[*]} " == *" $what "* ]] || { echo "fuzz.sh: unknown target '$what' (${targets[*]})" >&2; exit 2; }
jobs=${VPDARTS_FUZZ_JOBS:-$(nproc)}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: VPDARTS_FUZZ_JOBS must be a positive whole number, not '$jobs'" >&2; exit 2; }

scripts/install-deps.sh --fuzz
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -Iinclude -I/usr/include/eigen3 $(pkg-config --cflags stb) -Wno-unused-command-line-argument)
libs=($(pkg-config --libs stb) -lz)
cxx=clang++
command -v ccache >/dev/null && cxx="ccache clang++"
stale() {  # the program is missing, or a source it includes changed since it was built
  [[ ! -x $1 ]] || [[ -n $(find include tests/fuzz -newer "$1" -name '*.[ch]pp' -print -quit) ]]
}
# the replay (it writes the seeds) and the fuzzing program, built side by side
pids=()
if stale "$out/replay"; then
  $cxx "${flags[@]}" -fsanitize=address,undefined tests/fuzz/replay.cpp -o "$out/replay" "${libs[@]}" & pids+=($!)
fi
if stale "$out/fuzz"; then
  $cxx "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    tests/fuzz/fuzz.cpp -o "$out/fuzz" "${libs[@]}" & pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p" || { echo "fuzz.sh: building the fuzz programs failed" >&2; exit 1; }; done
[[ -d $out/seeds ]] || "$out/replay" --make-seeds "$out/seeds" > /dev/null

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1  # the loaders need no threads; targets run side by side, one per core

run() {  # fuzz one target; its log is $out/fuzz_TARGET.log
  local t=$1 start=$SECONDS
  mkdir -p "$out/corpus/$t" "$out/crashes/$t"
  VPDARTS_FUZZ_TARGET=$t "$out/fuzz" "$out/corpus/$t" "$out/seeds/$t" "tests/fuzz/regressions/$t" \
    -max_total_time="$seconds" -runs="$max_runs" -rss_limit_mb=4096 -timeout=30 \
    -artifact_prefix="$out/crashes/$t/" -print_final_stats=1 > "$out/fuzz_$t.log" 2>&1 || true
  local runs took=$((SECONDS - start)) finding=none
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_$t.log" | tail -n 1)
  grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|^fuzz: " "$out/fuzz_$t.log" && finding=crash
  printf '%s\t%s\t%s\t%s\n' "$t" "${runs:-?}" "$took" "$finding" >> "$out/campaign.tsv"
  if [[ $finding == crash ]]; then
    grep -E "^(==|SUMMARY|fuzz: )|runtime error:" "$out/fuzz_$t.log" | head -n 20 | sed "s/^/$t: /" >&2
    echo "fuzz.sh: $t FOUND A CRASH after ${runs:-?} inputs: see $out/fuzz_$t.log and $out/crashes/$t/" >&2
    return 1
  fi
  echo "fuzz.sh: $t: ${runs:-?} inputs in $took s, no finding"
}

[[ $what == all ]] || { run "$what"; exit; }
status=0 pids=()
for t in "${targets[@]}"; do
  run "$t" & pids+=($!)
  if (( ${#pids[@]} >= jobs )); then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
