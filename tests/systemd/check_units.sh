#!/bin/sh
# Checks of the files in systemd/ that need no running systemd (ctest, label unit):
#   check_units.sh verify UNITDIR          systemd-analyze verify of the system and (if UNITDIR/user
#                                          exists) user units, with drop-ins beside them: no output
#   check_units.sh security UNIT MAX       systemd-analyze security --offline exposure <= MAX
#   check_units.sh sysusers-tmpfiles SYSUSERS TMPFILES
#                                          both files applied to a scratch root: user llmd, groups
#                                          llmd and llmd-admin, /var/lib/llmd{,/models} as intended
# UNITDIR holds llmd.service/llmd.socket and user/llmd.{service,socket} whose ExecStart is this
# build's llmd (verify wants it to exist). Documentation= man pages are not looked up (--man=no):
# they are not installed where man looks.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case "$1" in
verify)
  dir=$2
  out=$(systemd-analyze verify --man=no "$dir/llmd.service" "$dir/llmd.socket" 2>&1) || { echo "$out"; exit 1; }
  [ -z "$out" ] || { echo "system units: $out"; exit 1; }
  [ -d "$dir/user" ] || { echo "verify: system units clean"; exit 0; }
  # A user manager wants a runtime directory (%t).
  mkdir -m 0700 "$tmp/xdg"
  out=$(XDG_RUNTIME_DIR="$tmp/xdg" systemd-analyze --user verify --man=no "$dir/user/llmd.service" \
        "$dir/user/llmd.socket" 2>&1) || { echo "$out"; exit 1; }
  [ -z "$out" ] || { echo "user units: $out"; exit 1; }
  echo "verify: system and user units clean"
  ;;
security)
  unit=$2 max=$3
  out=$(systemd-analyze security --offline=true "$unit" 2>&1) || { echo "$out"; exit 1; }
  echo "$out" | grep '✗' || true
  level=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  [ -n "$level" ] || { echo "no exposure level in:"; echo "$out"; exit 1; }
  echo "exposure: $level (at most $max)"
  awk -v l="$level" -v m="$max" 'BEGIN { exit !(l <= m) }'
  ;;
sysusers-tmpfiles)
  root="$tmp/root"
  mkdir -p "$root/etc"
  systemd-sysusers --root="$root" "$2"
  grep -q '^llmd:x:[0-9]*:[0-9]*:[^:]*:/var/lib/llmd:' "$root/etc/passwd" || { cat "$root/etc/passwd"; exit 1; }
  for g in llmd llmd-admin; do
    grep -q "^$g:x:" "$root/etc/group" || { echo "no group $g"; cat "$root/etc/group"; exit 1; }
  done
  uid=$(sed -n 's/^llmd:x:\([0-9]*\):.*/\1/p' "$root/etc/passwd")
  systemd-tmpfiles --root="$root" --create "$3"
  [ "$(stat -c '%a %u' "$root/var/lib/llmd")" = "750 $uid" ] || { stat "$root/var/lib/llmd"; exit 1; }
  [ "$(stat -c '%a %u' "$root/var/lib/llmd/models")" = "755 0" ] || { stat "$root/var/lib/llmd/models"; exit 1; }
  echo "sysusers and tmpfiles: ok"
  ;;
*)
  echo "usage: $0 verify DIR | security UNIT MAX | sysusers-tmpfiles SYSUSERS TMPFILES" >&2
  exit 2
  ;;
esac
