#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole test suite.
#   scripts/test.sh              Release build in build/
#   scripts/test.sh --sanitize   AddressSanitizer + UBSan build in build-sanitize/
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
flags=(-DCMAKE_BUILD_TYPE=Release)
case "${1:-}" in
  "") ;;
  --sanitize)
    build=build-sanitize
    flags=(-DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -g1" -DVPDARTS_SANITIZE=ON -DVPDARTS_BUILD_EXAMPLES=OFF)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;;
  *) echo "test.sh: unknown option '$1' (expected --sanitize)" >&2; exit 2 ;;
esac

scripts/install-deps.sh
command -v ccache >/dev/null && flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
start=$(date +%s)
cmake -S . -B "$build" "${flags[@]}"
cmake --build "$build" -j "$(nproc)"
built=$(date +%s)
(cd "$build" && ctest --output-on-failure -j "$(nproc)")
echo "test.sh: build $((built - start)) s, tests $(($(date +%s) - built)) s"
