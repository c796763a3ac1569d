#!/usr/bin/env bash
# Coverage-guided fuzzing of llmd's parsers (libFuzzer, clang; ASan + UBSan). The targets and what
# each checks: fuzz/*.cpp and ARCHITECTURE.md ("Tests and benchmarks"). The build tree is
# build-fuzz (clang, -DLLMD_FUZZ=ON; llama.cpp comes from the gcc build cached under
# ~/.cache/llmd, it is not rebuilt).
#
#   scripts/fuzz.sh build                      configure and build build-fuzz
#   scripts/fuzz.sh smoke                      each target for a few seconds over its corpus (the CI run,
#                                              part of scripts/test.sh)
#   scripts/fuzz.sh run [TARGET...]            a long campaign (default: every target), see below
#   scripts/fuzz.sh repro TARGET FILE...       runs inputs once (a crash file, a corpus file)
#   scripts/fuzz.sh corpus                     regenerates the binary seeds (fuzz_chunk, fuzz_seq_state)
#                                              from the real engine after a format change
#   scripts/fuzz.sh minimize [TARGET...]       shrinks committed corpora to the inputs that add coverage
#
# A campaign (`run`) gives each target LLMD_FUZZ_RUNS executions (default 10000000), split over
# LLMD_FUZZ_JOBS libFuzzer jobs (default: the number of CPUs) of which LLMD_FUZZ_WORKERS run at
# once (default: the same), or stops after LLMD_FUZZ_SECONDS per target if that is set. Jobs share
# a working corpus under build-fuzz/campaign/TARGET/ seeded from fuzz/corpus/TARGET (never written
# to while fuzzing). At the end, inputs that add coverage are merged back into fuzz/corpus/TARGET
# (commit them), crashes, leaks and timeouts are kept in build-fuzz/campaign/TARGET/findings/, and a
# line per target reports executions, executions per second and findings. A job that finds
# something stops; the others go on. Reproduce a finding with `scripts/fuzz.sh repro TARGET FILE`,
# fix it, and commit the file into fuzz/corpus/TARGET/ as a regression input (the normal build
# replays every corpus: ctest -R fuzz_replay).
#
# fuzz_http loads ../shared/models/stories260K.gguf (or $LLMD_FUZZ_MODEL) and runs the real
# daemon core: expect hundreds, not thousands, of executions per second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${LLMD_FUZZ_BUILD_DIR:-$root/build-fuzz}"
targets_all=(fuzz_http fuzz_json_fields fuzz_chunk fuzz_seq_state fuzz_config fuzz_dbus_options)
ncpu="$(nproc)"
# Readable stack traces in findings.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

dict_of() {
  case "$1" in
    fuzz_http) echo "-dict=$root/fuzz/dict/http.dict" ;;
    fuzz_json_fields) echo "-dict=$root/fuzz/dict/json.dict" ;;
    fuzz_config) echo "-dict=$root/fuzz/dict/config.dict" ;;
  esac
}

# Flags of one target (as fuzz/CMakeLists.txt gives its smoke run).
options_of() {
  case "$1" in
    fuzz_http) echo "-entropic=0 -detect_leaks=0" ;;
  esac
}

check_target() {
  local t
  for t in "${targets_all[@]}"; do [ "$t" = "$1" ] && return 0; done
  echo "fuzz.sh: unknown target $1 (targets: ${targets_all[*]})" >&2
  exit 2
}

configure_and_build() {
  local cc="${LLMD_FUZZ_CC:-clang-14}" cxx="${LLMD_FUZZ_CXX:-clang++-14}"
  local launcher=()
  if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DLLMD_FUZZ=ON "${launcher[@]}"
  # llmd too: the clang build checks the whole daemon's locking (-Wthread-safety)
  cmake --build "$build" --target fuzz llmd-fuzz-corpus llmd
}

# Executions of one job, from libFuzzer's final statistics (-print_final_stats=1) in its log.
executions_in() {
  grep -h '^stat::number_of_executed_units:' "$@" 2>/dev/null | awk '{s += $2} END {print s + 0}'
}

campaign() {
  local t="$1"
  local runs="${LLMD_FUZZ_RUNS:-10000000}" jobs="${LLMD_FUZZ_JOBS:-$ncpu}" workers="${LLMD_FUZZ_WORKERS:-${LLMD_FUZZ_JOBS:-$ncpu}}"
  local dir="$build/campaign/$t"
  mkdir -p "$dir/corpus" "$dir/findings" "$dir/logs"
  rm -f "$dir"/logs/*.log
  local limit=(-runs=$(( (runs + jobs - 1) / jobs )))
  if [ -n "${LLMD_FUZZ_SECONDS:-}" ]; then limit=(-max_total_time="$LLMD_FUZZ_SECONDS"); fi
  local dict; dict="$(dict_of "$t")"
  local options; read -r -a options <<<"$(options_of "$t")"
  echo "==> $t: ${limit[*]} x $jobs jobs, $workers at once"
  local start end
  start="$(date +%s)"
  # libFuzzer writes each job's log as fuzz-N.log in the working directory.
  (cd "$dir/logs" && "$build/fuzz/$t" -jobs="$jobs" -workers="$workers" "${limit[@]}" -timeout=60 \
     -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$dir/findings/" ${dict:+"$dict"} "${options[@]}" \
     "$dir/corpus" "$root/fuzz/corpus/$t" >/dev/null 2>&1) || true
  end="$(date +%s)"
  # New coverage back into the committed corpus (only inputs that add features).
  "$build/fuzz/$t" -merge=1 ${dict:+"$dict"} "$root/fuzz/corpus/$t" "$dir/corpus" >"$dir/merge.log" 2>&1 || true
  local execs secs findings
  execs="$(executions_in "$dir"/logs/*.log)"
  secs=$(( end - start > 0 ? end - start : 1 ))
  findings="$(find "$dir/findings" -type f | wc -l)"
  printf '%-18s %12s executions in %6ss (%s/s across %s workers), %s findings%s\n' "$t" "$execs" "$secs" \
    "$(( execs / secs ))" "$workers" "$findings" "$([ "$findings" -gt 0 ] && echo ": $dir/findings/" || true)"
  echo "$t $execs $secs $findings" >>"$build/campaign/summary.txt"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build)
    configure_and_build
    ;;
  smoke)
    configure_and_build
    ctest --test-dir "$build" -L fuzz --output-on-failure
    ;;
  run)
    [ -x "$build/fuzz/fuzz_http" ] || configure_and_build
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")
    for t in "${targets[@]}"; do check_target "$t"; done
    mkdir -p "$build/campaign"
    : >"$build/campaign/summary.txt"
    for t in "${targets[@]}"; do campaign "$t"; done
    echo "==> summary (target executions seconds findings): $build/campaign/summary.txt"
    cat "$build/campaign/summary.txt"
    ;;
  repro)
    [ $# -ge 2 ] || { echo "usage: scripts/fuzz.sh repro TARGET FILE..." >&2; exit 2; }
    t="$1"; shift
    check_target "$t"
    exec "$build/fuzz/$t" -runs=1 "$@"
    ;;
  corpus)
    [ -x "$build/fuzz/llmd-fuzz-corpus" ] || configure_and_build
    "$build/fuzz/llmd-fuzz-corpus" "${LLMD_FUZZ_MODEL:-$root/../shared/models/stories260K.gguf}" "$root/fuzz/corpus"
    "$build/fuzz/llmd-fuzz-corpus" --check "$root/fuzz/corpus"
    ;;
  minimize)
    [ -x "$build/fuzz/fuzz_http" ] || configure_and_build
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")
    for t in "${targets[@]}"; do
      check_target "$t"
      tmp="$build/minimize/$t"
      rm -rf "$tmp" && mkdir -p "$tmp"
      "$build/fuzz/$t" -merge=1 "$tmp" "$root/fuzz/corpus/$t" >"$build/minimize/$t.log" 2>&1
      # Inputs named by their SHA-1 (what merges added) go unless they add coverage; hand-written
      # and generated seeds stay (fuzz.seeds_are_current expects the generated ones).
      for f in "$root/fuzz/corpus/$t"/*; do
        name="$(basename "$f")"
        [[ "$name" =~ ^[0-9a-f]{40}$ ]] || continue
        [ -e "$tmp/$name" ] || rm -f "$f"
      done
      echo "$t: $(ls "$root/fuzz/corpus/$t" | wc -l) inputs"
    done
    ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
