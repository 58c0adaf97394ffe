#!/usr/bin/env bash
# Runs a libFuzzer target (tests/fuzz/fuzz_TARGET.cpp) with AddressSanitizer and UBSan, built with
# Debian's clang, from seed files made by the library itself. A crash is kept in
# build-fuzz/crashes/TARGET/; copy it to tests/fuzz/regressions/TARGET/ once fixed (the
# fuzz_regressions ctest replays that folder).
#   scripts/fuzz.sh TARGET SECONDS [RUNS]   TARGET: safetensors model_file idx image_folder genotype config list
#   scripts/fuzz.sh all SECONDS [RUNS]      every target in turn
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
if [[ $what == all ]]; then
  status=0
  for t in "${targets[@]}"; do "$0" "$t" "$seconds" "$max_runs" || status=1; done
  exit $status
fi
[[ " ${targets[*]} " == *" $what "* ]] || { echo "fuzz.sh: unknown target '$what' (${targets[*]})" >&2; exit 2; }
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
if stale "$out/replay"; then
  $cxx "${flags[@]}" -fsanitize=address,undefined tests/fuzz/replay.cpp -o "$out/replay" "${libs[@]}"
fi
if stale "$out/fuzz_$what"; then
  $cxx "${flags[@]}" -DVPDARTS_LIBFUZZER -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    "tests/fuzz/fuzz_$what.cpp" -o "$out/fuzz_$what" "${libs[@]}"
fi
[[ -d $out/seeds ]] || "$out/replay" --make-seeds "$out/seeds" > /dev/null
mkdir -p "$out/corpus/$what" "$out/crashes/$what"
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$SECONDS
"$out/fuzz_$what" "$out/corpus/$what" "$out/seeds/$what" "tests/fuzz/regressions/$what" -max_total_time="$seconds" -runs="$max_runs" \
  -rss_limit_mb=4096 -timeout=30 -artifact_prefix="$out/crashes/$what/" -print_final_stats=1 2>&1 |
  tee "$out/fuzz_$what.log" | grep -E "^(INFO: Seed|#[0-9]+ +DONE|Done|==|SUMMARY|stat::number_of_executed_units)" || true
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_$what.log" | tail -n 1)
took=$((SECONDS - start))
if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:" "$out/fuzz_$what.log"; then finding=crash; else finding=none; fi
printf '%s\t%s\t%s\t%s\n' "$what" "${runs:-?}" "$took" "$finding" >> "$out/campaign.tsv"
if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:" "$out/fuzz_$what.log"; then
  echo "fuzz.sh: $what FOUND A CRASH after ${runs:-?} inputs: see $out/fuzz_$what.log and $out/crashes/$what/" >&2
  exit 1
fi
echo "fuzz.sh: $what: ${runs:-?} inputs in $took s, no finding"
