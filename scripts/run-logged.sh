#!/usr/bin/env bash
# run-logged.sh LOG COMMAND...: runs COMMAND with all its output in LOG, showing only build progress
# (every tenth "[n/N]" step of ninja) so that a long build is visibly alive without its compiler
# chatter. On failure, prints the end of LOG and exits with COMMAND's status.
set -uo pipefail
log="$1"; shift
mkdir -p "$(dirname "$log")"
"$@" > "$log" 2>&1 &
pid=$!
last=-1
while kill -0 "$pid" 2>/dev/null; do
  sleep 2
  step=$(grep -ao '^\[[0-9]*/[0-9]*\]' "$log" 2>/dev/null | tail -n 1)
  if [ -n "$step" ]; then
    n=${step#[}; n=${n%%/*}; total=${step#*/}; total=${total%]}
    pct=$(( total > 0 ? n * 100 / total : 0 ))
    if [ $(( pct / 10 )) -ne "$last" ]; then
      last=$(( pct / 10 ))
      echo "    ${step} ${pct}%"
    fi
  fi
done
wait "$pid"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "---- last lines of $log ----" >&2
  tail -n 40 "$log" >&2
fi
exit "$rc"
