#!/usr/bin/env bash
# The README's test command. On a fresh Debian 12 machine, as root, it installs what is missing,
# builds llmd (the pinned llama.cpp is built once and cached under ~/.cache/llmd), and runs every
# test twice: in a normal build and in an AddressSanitizer + UndefinedBehaviorSanitizer build;
# then builds the fuzz targets with clang (build-fuzz) and runs each for a few seconds over its
# committed corpus (scripts/fuzz.sh smoke).
#
#   scripts/test.sh              # everything
#   LLMD_TEST_SANITIZE=0 scripts/test.sh   # skip the sanitizer build
#   LLMD_TEST_FUZZ=0 scripts/test.sh       # skip the fuzz smoke run
#   LLMD_TEST_ARGS="-LE slow" scripts/test.sh   # extra ctest arguments
#   LLMD_TEST_PACKAGING=1 scripts/test.sh       # also build and check the Debian packages (label
#                                               # packaging; skipped otherwise; needs debhelper, lintian)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
scripts/install-deps.sh

run_suite() {
  local dir="$1"; shift
  step "configure $dir ($*)"
  cmake -S . -B "$dir" -G Ninja "$@"
  step "build $dir"
  cmake --build "$dir"
  step "test $dir"
  # Model tests are marked RUN_SERIAL (inference processes must not share the cores).
  ctest --test-dir "$dir" --output-on-failure --timeout 900 ${LLMD_TEST_ARGS:-}
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${LLMD_TEST_SANITIZE:-1}" != "0" ]; then
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMD_SANITIZE=ON
fi
if [ "${LLMD_TEST_FUZZ:-1}" != "0" ]; then
  # After the normal build: the fuzz tree links the llama.cpp it cached (no clang rebuild).
  step "fuzz smoke (build-fuzz: clang, libFuzzer, ASan + UBSan)"
  scripts/fuzz.sh smoke
fi
step "all tests passed"
