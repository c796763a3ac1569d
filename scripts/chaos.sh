#!/usr/bin/env bash
# A long chaos campaign: the chaos test (tests/e2e/chaos_test.cpp) with many kills. Concurrent
# clients do session turns and stateless requests while llmd is killed with SIGKILL at random
# moments and restarted, then every acknowledged turn must be there, every session must answer,
# and every session's KV must pass the audit against its recomputed history.
#
#   scripts/chaos.sh                 # 100 kills, 4 clients, a random seed (printed)
#   scripts/chaos.sh 300 6           # 300 kills, 6 clients
#   LLMD_CHAOS_SEED=1234 scripts/chaos.sh   # replay a seed (the kill moments still vary)
#   BUILD=build-asan scripts/chaos.sh       # under ASan/UBSan (build it with scripts/test.sh first)
#
# Builds the test binary in $BUILD (default: build) if needed. CI runs the short form (6 kills)
# as part of ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${BUILD:-build}"
kills="${1:-100}"
clients="${2:-4}"

if [ ! -f "$build/build.ninja" ]; then
  scripts/install-deps.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build" --target chaos_tests llmd llmctl llmd-mkmodel
# The shared model's checksum, as the ctest fixture does.
(cd ../shared/models && sha256sum --check --strict --quiet SHA256SUMS)

echo "chaos: $kills kills, $clients clients"
LLMD_CHAOS_KILLS="$kills" LLMD_CHAOS_CLIENTS="$clients" "$build/tests/chaos_tests" --gtest_filter='Chaos.*'
