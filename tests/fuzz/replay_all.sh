#!/usr/bin/env bash
# ctest fuzz_regressions: builds vpdarts_fuzz_replay, makes seed files, replays every target over
# them and over tests/fuzz/regressions/TARGET/.   replay_all.sh BUILD_DIR FUZZ_SOURCE_DIR SEED_DIR
set -euo pipefail
build=$1 src=$2 seeds=$3
cmake --build "$build" --target vpdarts_fuzz_replay -j 2 > /dev/null
bin=$build/tests/vpdarts_fuzz_replay
rm -rf "$seeds"
"$bin" --make-seeds "$seeds"
for t in safetensors model_file idx image_folder genotype config list; do
  "$bin" "$t" "$seeds/$t" "$src/regressions/$t"
done
