#!/usr/bin/env bash
# The benchmark entry point: builds what it needs (llama.cpp's own tools from the pinned source,
# llmd in Release, the generated models) and runs the named scenarios (default: all).
#   bench/run.sh                 # every scenario
#   bench/run.sh engine --reps 10
#   bench/run.sh grammar --quick  # what json_schema / required tools cost per token (see README.md)
# Prints a table (ratio first) and writes bench/results/bench-<time>.json and latest.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${LLMD_BENCH_BUILD_DIR:-$root/build-bench}"

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMD_LLAMA_TOOLS=ON \
      -DLLMD_BUILD_TESTS=OFF ${LLMD_BENCH_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" --target llmd-bench llmd
exec "$build/bench/llmd-bench" "$@"
