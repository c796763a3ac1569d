#!/usr/bin/env bash
# Installs the client test suite's pinned packages (package.json and package-lock.json beside this
# script: the openai SDK v4 and latest major, ajv, undici) into a cache folder keyed by those files'
# hash, and finds a node new enough for them. A repeat run with the same files touches no network.
#
# Prints two lines on stdout:
#   NODE=/path/to/node           node >= NODE_MIN_MAJOR: the system's, else a pinned one from npm
#   MODULES=/path/to/node_modules
# Exits non-zero, saying why on stderr, when npm cannot install them (no registry, no npm).
#
# Cache: $LLMD_CACHE_DIR/npm (default ~/.cache/llmd/npm); <hash>/node_modules, node-<version>-<arch>/.
set -euo pipefail

# openai 7.x declares engines node >= 22 (v4 needs 18, undici 7 20.18): one node for both SDKs.
readonly NODE_MIN_MAJOR=22
readonly NODE_PINNED=22.23.5

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmd}/npm"

die() { echo "compat/openai install: $*" >&2; exit 1; }

mkdir -p "$cache"
# One installer at a time (two test runs at once share the cache).
exec 9>"$cache/.lock"
flock 9

npm_quiet=(--no-audit --no-fund --ignore-scripts --loglevel=error --fetch-retries=2 --fetch-timeout=60000)

# Runs npm in $1 (a fresh work folder) with the rest as arguments; on failure says why and exits.
npm_in() {
  local dir="$1"; shift
  command -v npm >/dev/null 2>&1 || die "npm not found (run scripts/install-deps.sh as root)"
  if ! (cd "$dir" && npm "$@" "${npm_quiet[@]}") >"$dir/npm.log" 2>&1; then
    echo "compat/openai install: npm $* failed — is the npm registry reachable? npm said:" >&2
    tail -n 20 "$dir/npm.log" >&2
    rm -rf "$dir"
    exit 1
  fi
}

# --- the packages --------------------------------------------------------------------------------
key="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
modules_home="$cache/$key"
if [ ! -f "$modules_home/.complete" ]; then
  echo "compat/openai install: installing the pinned packages into $modules_home" >&2
  work="$(mktemp -d "$cache/.work.XXXXXX")"
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  # npm ci: exactly the lockfile's versions, each tarball checked against its integrity.
  npm_in "$work" ci
  touch "$work/.complete"
  rm -rf "$modules_home"
  mv "$work" "$modules_home"
fi

# --- node ----------------------------------------------------------------------------------------
node_bin=""
if command -v node >/dev/null 2>&1; then
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  [ "$major" -ge "$NODE_MIN_MAJOR" ] && node_bin="$(command -v node)"
fi
if [ -z "$node_bin" ]; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) die "node >= $NODE_MIN_MAJOR is needed and there is no pinned node for $(uname -m)" ;;
  esac
  node_home="$cache/node-$NODE_PINNED-$arch"
  node_bin="$node_home/node_modules/node-linux-$arch/bin/node"
  if [ ! -f "$node_home/.complete" ]; then
    echo "compat/openai install: the system's node is older than $NODE_MIN_MAJOR; installing node $NODE_PINNED into $node_home" >&2
    work="$(mktemp -d "$cache/.work.XXXXXX")"
    echo '{"private": true}' >"$work/package.json"
    npm_in "$work" install --no-package-lock "node-linux-$arch@$NODE_PINNED"
    [ -x "$work/node_modules/node-linux-$arch/bin/node" ] || die "node-linux-$arch@$NODE_PINNED has no bin/node"
    touch "$work/.complete"
    rm -rf "$node_home"
    mv "$work" "$node_home"
  fi
fi
"$node_bin" --version >/dev/null || die "$node_bin does not run"

echo "NODE=$node_bin"
echo "MODULES=$modules_home/node_modules"
