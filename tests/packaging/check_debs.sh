#!/usr/bin/env bash
# Builds the Debian packages from packaging/debian/ in a scratch copy of the tree and checks them:
# file lists (dpkg-deb -c), metadata (dpkg-deb -f), conffiles and maintainer scripts (dpkg-deb -I
# / --ctrl-tarfile), that the postrm keeps state on remove and upgrade and deletes it on purge (run
# against a scratch directory), that llmd carries no AVX-512 code (portable, not -march=native),
# and lintian (fails on any error; warnings are printed).
#
#   check_debs.sh SOURCE_ROOT WORK_DIR
#
# Skipped (exit 77) unless LLMD_TEST_PACKAGING=1: the package build compiles llmd in Release from
# scratch (minutes). llama.cpp comes from the cache an ordinary build uses (see packaging/debian/rules,
# DEB_LLMD_CACHE_DIR), so no network is needed once that cache holds the pinned source.
set -euo pipefail

root="$1"
work="$2"

if [ "${LLMD_TEST_PACKAGING:-0}" != "1" ]; then
  echo "skipped: set LLMD_TEST_PACKAGING=1 to build and check the Debian packages"
  exit 77
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

for tool in dpkg-buildpackage dh lintian dpkg-deb fakeroot objdump; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install debhelper lintian devscripts fakeroot)"
done

# --- a scratch copy of the tree: what git tracks plus untracked files it does not ignore (build
# directories stay out), or the whole tree minus build* when it is not a git checkout.
rm -rf "$work"
mkdir -p "$work/src"
if git -C "$root" rev-parse --show-toplevel >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -xf - -C "$work/src"
else
  (cd "$root" && tar --exclude='./build*' --exclude='./run' --exclude='./debian' -cf - .) | tar -xf - -C "$work/src"
fi
[ ! -e "$work/src/debian" ] || fail "the tree has a debian/ directory; packaging lives in packaging/debian/"
cp -a "$root/packaging/debian" "$work/src/debian"

# --- build
start=$(date +%s)
if ! (cd "$work/src" && DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
        dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  fail "dpkg-buildpackage -us -uc -b (log: $work/build.log)"
fi
ok "dpkg-buildpackage -us -uc -b in $(( $(date +%s) - start )) s (log: $work/build.log)"

arch="$(dpkg --print-architecture)"
ma="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
version="$(cd "$work/src" && dpkg-parsechangelog -SVersion)"
deb() { echo "$work/${1}_${version}_${arch}.deb"; }
for p in llmd llmctl libllmclient1 libllmclient-dev; do
  [ -f "$(deb $p)" ] || fail "no package $(basename "$(deb $p)")"
done
ls -l "$work"/*.deb

# --- file lists
contents() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | sed 's,^\./,/,; s,/$,,'; }
has() {  # has PACKAGE PATH...
  local p="$1"; shift
  local list; list="$(contents "$p")"
  for f in "$@"; do grep -qxF "$f" <<<"$list" || fail "$p lacks $f"; done
  ok "$p has $*"
}
lacks() {  # lacks PACKAGE REGEX
  if contents "$1" | grep -qE "$2"; then fail "$1 has files matching $2: $(contents "$1" | grep -E "$2" | head -3)"; fi
  ok "$1 has nothing matching $2"
}
has llmd /usr/bin/llmd /etc/llmd/llmd.conf /lib/systemd/system/llmd.service /lib/systemd/system/llmd.socket \
  /usr/lib/systemd/user/llmd.service /usr/lib/systemd/user/llmd.socket /usr/lib/sysusers.d/llmd.conf \
  /usr/lib/tmpfiles.d/llmd.conf /usr/share/dbus-1/system.d/org.llmd.LLM1.conf \
  /usr/share/dbus-1/system-services/org.llmd.LLM1.service /usr/share/dbus-1/services/org.llmd.LLM1.service \
  /usr/share/man/man8/llmd.8.gz /usr/share/man/man5/llmd.conf.5.gz /usr/share/man/man5/org.llmd.LLM1.5.gz \
  /usr/share/doc/llmd/examples/llmd.service.d/gpu.conf /usr/share/doc/llmd/copyright
lacks llmd 'llmctl|libllmclient|/include/|llmd-mkmodel|/var/lib'
has llmctl /usr/bin/llmctl /usr/share/man/man1/llmctl.1.gz
lacks llmctl 'bin/llmd$|\.so'
has libllmclient1 "/usr/lib/$ma/libllmclient.so.1" "/usr/lib/$ma/libllmclient.so.1.0.0"
lacks libllmclient1 '\.so$|/include/|\.pc$|cmake'
has libllmclient-dev /usr/include/llmclient/llmclient.h /usr/include/llmclient/llmclient.hpp \
  "/usr/lib/$ma/libllmclient.so" "/usr/lib/$ma/pkgconfig/llmclient.pc" \
  "/usr/lib/$ma/cmake/llmclient/llmclientConfig.cmake" "/usr/lib/$ma/cmake/llmclient/llmclientConfigVersion.cmake" \
  "/usr/lib/$ma/cmake/llmclient/llmclientTargets.cmake" /usr/share/man/man3/libllmclient.3.gz \
  /usr/share/doc/libllmclient-dev/examples/blocking.c /usr/share/doc/libllmclient-dev/examples/streaming.cpp \
  /usr/share/doc/libllmclient-dev/examples/libuv_concurrent.c
lacks libllmclient-dev 'libllmclient\.so\.1'

# --- metadata
field() { dpkg-deb -f "$(deb "$1")" "$2"; }
expect_field() {  # expect_field PACKAGE FIELD REGEX
  local v; v="$(field "$1" "$2")"
  grep -qE "$3" <<<"$v" || fail "$1 $2 is '$v', expected /$3/"
  ok "$1 $2: $v"
}
for p in llmd llmctl libllmclient1 libllmclient-dev; do
  expect_field $p Package "^$p\$"
  expect_field $p Architecture "^$arch\$"
  expect_field $p Version "^$version\$"
done
expect_field llmctl Depends '(^|, )libllmclient1 \(>= 0\.1\.0\)'
expect_field libllmclient-dev Depends "(^|, )libllmclient1 \\(= $version\\)"
expect_field libllmclient1 Multi-Arch '^same$'
expect_field llmd Depends '(^|, )systemd \| systemd-standalone-sysusers \| systemd-sysusers'
lacks_dep() { if field "$1" Depends | grep -q "$2"; then fail "$1 depends on $2"; fi; ok "$1 does not depend on $2"; }
lacks_dep llmd libllama   # llama.cpp is linked statically
lacks_dep llmd libggml

# --- control files: conffiles, maintainer scripts
ctrl="$work/ctrl"
for p in llmd llmctl libllmclient1 libllmclient-dev; do
  mkdir -p "$ctrl/$p"
  dpkg-deb -e "$(deb $p)" "$ctrl/$p"
done
grep -qxF /etc/llmd/llmd.conf "$ctrl/llmd/conffiles" || fail "llmd conffiles lack /etc/llmd/llmd.conf"
ok "llmd conffiles: $(tr '\n' ' ' <"$ctrl/llmd/conffiles")"
dpkg-deb -I "$(deb llmd)" | sed -n '/^ *[0-9]* bytes/p'
script_has() {  # script_has PACKAGE SCRIPT FIXED-STRING
  grep -qF -- "$3" "$ctrl/$1/$2" || fail "$1 $2 lacks: $3"
  ok "$1 $2 has: $3"
}
script_lacks() {
  if grep -qE -- "$3" "$ctrl/$1/$2"; then fail "$1 $2 has /$3/"; fi
  ok "$1 $2 has no /$3/"
}
script_has llmd postinst 'systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} llmd.conf'
script_has llmd postinst '--create llmd.conf'
script_has llmd postinst "deb-systemd-helper enable 'llmd.socket'"
script_has llmd postinst "deb-systemd-invoke \$_dh_action 'llmd.socket'"
script_lacks llmd postinst "(enable|invoke).*llmd\\.service"   # the service starts on demand only
script_lacks llmd postinst 'user.*enable'                       # per-user units stay opt-in
# The user must exist before tmpfiles chowns /var/lib/llmd to it, and before the socket starts.
[ "$(grep -n 'systemd-sysusers' "$ctrl/llmd/postinst" | head -1 | cut -d: -f1)" -lt \
  "$(grep -n 'systemd-tmpfiles' "$ctrl/llmd/postinst" | head -1 | cut -d: -f1)" ] || fail "sysusers runs after tmpfiles"
ok "llmd postinst: sysusers before tmpfiles"
script_has llmd prerm "deb-systemd-invoke stop 'llmd.socket'"
script_has llmd postrm "deb-systemd-helper purge 'llmd.socket'"
script_lacks llmd postrm 'userdel|deluser|groupdel'
for p in llmctl libllmclient1 libllmclient-dev; do
  for s in preinst postinst prerm postrm; do
    [ ! -e "$ctrl/$p/$s" ] || grep -q ldconfig "$ctrl/$p/$s" 2>/dev/null || fail "$p has a $s"
  done
done
ok "llmctl and the library packages have no maintainer scripts of their own"

# The postrm on a scratch state directory: remove and upgrade keep it, purge deletes it. Paths of
# the real system (and systemd's, so nothing is reloaded or purged on this machine) are replaced.
state="$work/postrm-root"
sed -e "s,/var/lib/llmd,$state/var/lib/llmd,g; s,/run/llmd,$state/run/llmd,g" \
    -e "s,/run/systemd/system,$state/no-systemd,g; s,/usr/bin/deb-systemd-helper,$state/no-helper,g" \
    "$ctrl/llmd/postrm" >"$work/postrm"
for action in remove upgrade purge; do
  mkdir -p "$state/var/lib/llmd/models" "$state/run/llmd"
  echo session >"$state/var/lib/llmd/sessions.db"
  sh -e "$work/postrm" $action 0.1.0-1
  if [ "$action" = purge ]; then
    [ ! -e "$state/var/lib/llmd" ] || fail "postrm purge kept /var/lib/llmd"
  else
    [ -f "$state/var/lib/llmd/sessions.db" ] || fail "postrm $action removed the state"
  fi
  ok "postrm $action: /var/lib/llmd $([ -e "$state/var/lib/llmd" ] && echo kept || echo removed)"
done

# --- portable CPU code: no AVX-512 (zmm) instructions, which -march=native gives on such a CPU.
dpkg-deb -x "$(deb llmd)" "$work/llmd-root"
if [ "$arch" = amd64 ]; then
  n=$(objdump -d --no-show-raw-insn "$work/llmd-root/usr/bin/llmd" | grep -c '%zmm' || true)
  [ "$n" -eq 0 ] || fail "llmd has $n AVX-512 instructions (built for this CPU?)"
  ok "llmd has no AVX-512 instructions"
fi

# --- lintian: no errors; warnings are listed (each is justified in packaging/debian/ or the docs).
changes="$(ls "$work"/llmd_"${version}"_"$arch".changes)"
lintian --fail-on error --display-info "$changes" >"$work/lintian.txt" 2>&1 || {
  cat "$work/lintian.txt" >&2
  fail "lintian found errors"
}
cat "$work/lintian.txt"
echo "lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors, $(grep -c '^W:' "$work/lintian.txt" || true) warnings, $(grep -c '^I:' "$work/lintian.txt" || true) info"
echo "all packaging checks passed"
