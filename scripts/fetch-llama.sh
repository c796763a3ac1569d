#!/usr/bin/env bash
# Obtains the pinned llama.cpp source into DEST (default: $LLMD_CACHE_DIR/llama.cpp/v0.5.0/src).
#
# llama.cpp v0.5.0 ships as a git bundle inside the npm package node-llama-cpp@3.22.1. This script
# packs that exact version with npm, checks the tarball against the pinned sha512 integrity, clones
# the bundle and checks the commit. It is idempotent: a DEST that already holds the pinned commit
# is left alone. Nothing is written to DEST unless every check passed.
set -euo pipefail

readonly NPM_PACKAGE="node-llama-cpp@3.22.1"
readonly NPM_INTEGRITY="sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw=="
readonly LLAMA_TAG="v0.5.0"
readonly LLAMA_COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"

cache_dir="${LLMD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmd}"
dest="${1:-$cache_dir/llama.cpp/$LLAMA_TAG/src}"

die() { echo "fetch-llama: $*" >&2; exit 1; }

if [ -f "$dest/.llmd-pinned" ] && [ "$(cat "$dest/.llmd-pinned")" = "$LLAMA_COMMIT" ]; then
  exit 0
fi

command -v npm >/dev/null || die "npm not found (run scripts/install-deps.sh as root)"
command -v git >/dev/null || die "git not found (run scripts/install-deps.sh as root)"

work="$(mktemp -d "${TMPDIR:-/tmp}/llmd-fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-llama: packing $NPM_PACKAGE (llama.cpp $LLAMA_TAG) with npm"
tarball=""
for attempt in 1 2 3; do
  if tarball="$(cd "$work" && npm pack --silent "$NPM_PACKAGE" 2>"$work/npm.err" | tail -n 1)" && [ -f "$work/$tarball" ]; then
    break
  fi
  tarball=""
  echo "fetch-llama: npm pack failed (attempt $attempt): $(tail -n 3 "$work/npm.err")" >&2
  sleep $((attempt * 2))
done
[ -n "$tarball" ] || die "could not obtain $NPM_PACKAGE from the npm registry"

expected_hex="$(printf '%s' "${NPM_INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
actual_hex="$(sha512sum "$work/$tarball" | cut -d' ' -f1)"
[ "$expected_hex" = "$actual_hex" ] || die "integrity mismatch for $tarball: expected $NPM_INTEGRITY"
echo "fetch-llama: tarball integrity verified ($NPM_INTEGRITY)"

tar -xzf "$work/$tarball" -C "$work" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
grep -q "\"tag\": \"$LLAMA_TAG\"" "$work/package/llama/llama.cpp.info.json" \
  || die "the package does not declare llama.cpp $LLAMA_TAG"

git clone --quiet --no-checkout "$work/package/llama/gitRelease.bundle" "$work/src"
git -C "$work/src" -c advice.detachedHead=false checkout --quiet "$LLAMA_COMMIT" \
  || die "the bundle does not contain commit $LLAMA_COMMIT"
[ "$(git -C "$work/src" rev-parse HEAD)" = "$LLAMA_COMMIT" ] || die "unexpected commit in bundle"
echo "$LLAMA_COMMIT" > "$work/src/.llmd-pinned"

mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/src" "$dest"
echo "fetch-llama: llama.cpp $LLAMA_TAG ($LLAMA_COMMIT) is in $dest"
