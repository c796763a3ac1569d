#!/bin/sh
# llmd under llmd.service's system call filter, W^X and no_new_privs (sandbox_exec.c): it loads the
# model, answers, keeps a session on disk and stops cleanly. The allowed system calls are those of
# the unit's SystemCallFilter= lines, expanded by systemd-analyze syscall-filter, so a change of
# the unit or a new system call in llama.cpp shows here.
#   sandbox_test.sh UNIT SANDBOX_EXEC LLMD LLMCTL MODEL CC
set -eu
export LC_ALL=C  # sort and join agree
unit=$1 sandbox=$2 llmd=$3 llmctl=$4 model=$5 cc=$6
tmp=$(mktemp -d)
pid=
cleanup() { [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# Every name in a group, groups expanded recursively.
expand() {
  systemd-analyze syscall-filter "$1" | sed -n 's/^  *\([@a-z0-9_-]*\)$/\1/p' | while read -r s; do
    case "$s" in @*) expand "$s" ;; *) echo "$s" ;; esac
  done
}
allow= deny=
for value in $(sed -n 's/^SystemCallFilter=//p' "$unit" | tr ' ' '\n'); do
  case "$value" in ~*) deny="$deny ${value#\~}" ;; *) allow="$allow $value" ;; esac
done
[ -n "$allow" ] || { echo "no SystemCallFilter= allow-list in $unit"; exit 1; }
# The ~ line applies to the whole unit's list: allowed = allow-list minus deny-list.
for g in $allow; do expand "$g"; done | sort -u >"$tmp/allow"
: >"$tmp/deny"
for g in $deny; do expand "$g"; done | sort -u >"$tmp/deny"
comm -23 "$tmp/allow" "$tmp/deny" >"$tmp/names"
echo '#include <sys/syscall.h>' | "$cc" -dM -E - |
  sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9]*\)$/\1 \2/p' | sort >"$tmp/table"
join "$tmp/names" "$tmp/table" | cut -d' ' -f2 >"$tmp/numbers"
echo "allowed: $(wc -l <"$tmp/numbers") system calls (of $(wc -l <"$tmp/names") names)"

mkdir -m 0755 "$tmp/llmd"
chown 65534:65534 "$tmp/llmd" 2>/dev/null || true  # sandbox_exec runs llmd as 65534 when root
chmod 0755 "$tmp"
cp "$model" "$tmp/model.gguf"
chmod 0644 "$tmp/model.gguf"
sock="$tmp/llmd/llmd.sock"
"$sandbox" "$tmp/numbers" "$llmd" --config /dev/null --model "$tmp/model.gguf" --socket "$sock" \
  --state-dir "$tmp/llmd/state" --threads 2 --bus none 2>"$tmp/log" &
pid=$!
i=0
while [ ! -S "$sock" ] && [ $i -lt 300 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
[ -S "$sock" ] || { echo "llmd did not start:"; cat "$tmp/log"; exit 1; }
"$llmctl" --socket "$sock" run --max-tokens 8 "Once upon a time" || { cat "$tmp/log"; exit 1; }
"$llmctl" --socket "$sock" --json run --max-tokens 8 "Once upon a time" >"$tmp/answer" || { cat "$tmp/log"; exit 1; }
printf 'Tell me a story\n/exit\n' | "$llmctl" --socket "$sock" chat --system "Be brief." || { cat "$tmp/log"; exit 1; }
"$llmctl" --socket "$sock" sessions list | grep -q ses_ || { echo "no session stored"; cat "$tmp/log"; exit 1; }
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
cat "$tmp/log"
[ "$status" -eq 0 ] || { echo "llmd exited with $status"; exit 1; }
[ -s "$tmp/llmd/state/sessions.db" ] || { echo "no sessions.db"; exit 1; }
echo "llmd ran, answered and stopped under the unit's sandbox"
