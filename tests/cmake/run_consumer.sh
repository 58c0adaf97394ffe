#!/usr/bin/env bash
# Builds and runs tests/cmake/consumer the way a user would take vpdarts.
#   run_consumer.sh package      SOURCE_DIR BUILD_DIR WORK_DIR   (cmake --install into a staging prefix first)
#   run_consumer.sh subdirectory SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS=-O0 -g0" -DVPDARTS_MODE="$mode")
if [[ $mode == package ]]; then
  cmake --install "$build" --prefix "$work/stage" > "$work/install.log"
  for f in include/vpdarts/vpdarts.hpp share/cmake/vpdarts/vpdartsConfig.cmake share/cmake/vpdarts/vpdartsConfigVersion.cmake \
           share/cmake/vpdarts/vpdartsTargets.cmake; do
    [[ -f $work/stage/$f ]] || { echo "run_consumer: the install lacks $f"; exit 1; }
  done
  args+=(-DCMAKE_PREFIX_PATH="$work/stage")
else
  args+=(-DVPDARTS_SOURCE_DIR="$src")
fi
cmake -S "$src/tests/cmake/consumer" -B "$work/build" "${args[@]}" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
"$work/build/consumer"
