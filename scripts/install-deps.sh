#!/usr/bin/env bash
# Installs everything llmd needs to build, test and run on Debian 12, as root.
# Idempotent: packages already present are left alone and apt is not touched at all
# when nothing is missing, so calling it before every build costs a few milliseconds.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build git pkg-config ca-certificates
  # libraries (see ARCHITECTURE.md, "Dependencies")
  libsystemd-dev libboost-dev libboost-program-options-dev libsqlite3-dev
  libspdlog-dev libfmt-dev libuv1-dev libgtest-dev libgmock-dev nlohmann-json3-dev libzstd-dev libxxhash-dev
  # tests: a private dbus-daemon, systemd-socket-activate, the sqlite3 CLI
  dbus sqlite3 systemd
  # tests: the man pages are linted and read with mandoc; locale sources (a Latin-1 locale is
  # compiled with localedef for the app-name rule's locale test)
  mandoc locales
  # fuzzing (scripts/fuzz.sh, the fuzz smoke run of test.sh): clang with libFuzzer and the
  # sanitizer runtimes, llvm-symbolizer for readable stack traces
  clang-14 libclang-rt-14-dev llvm-14
)

# LLMD_TEST_PACKAGING=1 scripts/test.sh also builds and checks the Debian packages.
if [ "${LLMD_TEST_PACKAGING:-0}" = "1" ]; then
  packages+=(debhelper lintian fakeroot dpkg-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the pinned llama.cpp and the client tests' packages, node runs those tests
# (tests/compat/openai; its install.sh adds a pinned newer node where the system's is older than the
# latest openai SDK needs); Debian's nodejs and npm packages only where none is installed already.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run this script as root (or install them yourself)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
