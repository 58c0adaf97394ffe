#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole test suite.
#   scripts/test.sh              Release build in build/
#   scripts/test.sh --sanitize   AddressSanitizer + UBSan build in build-sanitize/
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
flags=(-DCMAKE_BUILD_TYPE=Release)
skip=()
case "${1:-}" in
  "") ;;
  --sanitize)
    build=build-sanitize
    flags=(-DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -g1" -DVPDARTS_SANITIZE=ON -DVPDARTS_BUILD_EXAMPLES=OFF)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # `kill` checks what kill -9 at random moments leaves on disk: it is about files and timing, not
    # memory (the cli test resumes under the sanitizers too), and it is the slowest test there.
    skip=(-E '^kill$') ;;
  *) echo "test.sh: unknown option '$1' (expected --sanitize)" >&2; exit 2 ;;
esac

scripts/install-deps.sh
if command -v ccache >/dev/null; then
  flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # hits across checkouts in other folders (a fresh clone compiles the same sources)
  export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
fi
start=$(date +%s)
cmake -S . -B "$build" "${flags[@]}"
cmake --build "$build" -j "$(nproc)"
built=$(date +%s)
(cd "$build" && ctest --output-on-failure -j "$(nproc)" "${skip[@]}")
echo "test.sh: build $((built - start)) s, tests $(($(date +%s) - built)) s"
