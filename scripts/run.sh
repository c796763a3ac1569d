#!/usr/bin/env bash
# The README's run command. On a fresh Debian 12 machine, as root: installs what is missing, builds
# llmd and llmctl, and runs llmd in the foreground on its default model, with its socket and state
# under ./run/ in this checkout. Arguments are passed to llmd (see `llmd --help`).
#
# The model, in this order: --model PATH or LLMD_MODEL; `model =` in the config file
# (/etc/llmd/llmd.conf, or --config FILE); ../shared/models/stories260K.gguf next to a development
# checkout. Without any of them it says how to get one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target llmd llmctl

run_dir="$root/run"
mkdir -p "$run_dir"
socket="$run_dir/llmd.sock"
args=(--socket "$socket" --state-dir "$run_dir/state")

has_model_flag=0
config=/etc/llmd/llmd.conf
prev=""
for a in "$@"; do
  case "$a" in --model|--model=*) has_model_flag=1 ;; esac
  [ "$prev" = "--config" ] && config="$a"
  case "$a" in --config=*) config="${a#--config=}" ;; esac
  prev="$a"
done
config_has_model=0
if [ -r "$config" ] && grep -Eq '^[[:space:]]*model[[:space:]]*=' "$config"; then config_has_model=1; fi

if [ "$has_model_flag" = 0 ] && [ -z "${LLMD_MODEL:-}" ] && [ "$config_has_model" = 0 ]; then
  dev_model="$(cd "$root/.." && pwd)/shared/models/stories260K.gguf"
  if [ -f "$dev_model" ]; then
    args+=(--model "$dev_model")
  else
    cat >&2 <<MSG
run.sh: no model to serve. Give llmd a GGUF model file, one of:
  scripts/run.sh --model /path/to/model.gguf
  LLMD_MODEL=/path/to/model.gguf scripts/run.sh
  echo "model = /path/to/model.gguf" >> /etc/llmd/llmd.conf
(A test model can be generated: build/tools/llmd-mkmodel --shape smollm2-135m --type q8_0 --out m.gguf,
 after 'cmake --build build --target llmd-mkmodel'; it has random weights.)
MSG
    exit 2
  fi
fi

cat <<MSG

llmd is starting in the foreground (Ctrl-C stops it). Talk to it from another shell:
  $root/build/client-lib/llmctl --socket $socket status
  $root/build/client-lib/llmctl --socket $socket run "Once upon a time"
  $root/build/client-lib/llmctl --socket $socket chat
  curl --unix-socket $socket http://localhost/v1/chat/completions \\
       -d '{"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 64}'

MSG
exec "$root/build/daemon/llmd" "${args[@]}" "$@"
