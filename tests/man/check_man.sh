#!/usr/bin/env bash
# Checks that the man pages (man/) cover what the code offers; run by ctest (tests/CMakeLists.txt).
#
#   check_man.sh lint PAGE...                  mandoc -T lint -W warning: any message fails
#   check_man.sh llmd-options LLMD PAGE        every --option of `llmd --help` appears in PAGE, and its
#                                              SIGHUP entry ("Applied at once: ...") lists exactly the
#                                              keys --help says SIGHUP applies (llmd.8)
#   check_man.sh config-keys LLMD PAGE         every setting of `llmd --help` ("Settings" sections: each
#                                              is a config key) has its own `KEY = ...` entry in PAGE,
#                                              and PAGE's RELOADING lists the keys SIGHUP applies at
#                                              once (--help's "Settings applied at once on SIGHUP")
#                                              as such and every other key as needing a restart
#                                              (llmd.conf.5)
#   check_man.sh llmctl LLMCTL PAGE            every command of `llmctl --help` is an entry of PAGE's
#                                              COMMANDS, every option of `llmctl --help` and
#                                              `llmctl top --help` appears in PAGE (llmctl.1)
#   check_man.sh llmclient HEADER PAGE         every llmc_* function declared in HEADER appears in PAGE
#   check_man.sh dbus VTABLE_SOURCE PAGE       every method/signal/property of the sd-bus vtables in
#                                              VTABLE_SOURCE is an entry of PAGE's METHODS, SIGNALS or
#                                              PROPERTIES section
#
# Pages are checked as mandoc renders them (escapes resolved), so `\-\-model` counts as `--model`.
# Exit 0 if everything is covered; else 1, naming each missing item.
set -uo pipefail

die() { echo "check_man: $*" >&2; exit 2; }
command -v mandoc >/dev/null 2>&1 || die "mandoc is not installed (scripts/install-deps.sh installs it)"

# The page as plain text: wide lines (no wrapping inside an entry), no overstrike.
render() { mandoc -T ascii -O width=400 "$1" | sed 's/.\x08//g'; }
# The lines of one section of a rendered page (from its heading to the next one).
section() { awk -v s="$1" '/^[A-Z]/ { on = ($0 == s) ; next } on'; }

missing=0
miss() { echo "MISSING from $(basename "$page"): $*"; missing=1; }
# Whole-token search: not part of a longer option or name.
has_token() { grep -qE -- "(^|[^A-Za-z0-9_-])$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')([^A-Za-z0-9_-]|$)"; }

# The keys of one "Settings ..." group of `llmd --help` (its caption starts with $1).
help_group() { awk -v s="$1" 'index($0, s) == 1 { on = 1; next } /^[A-Z]/ { on = 0 } on' |
               grep -oE -- '^  --[a-z][a-z0-9-]*' | sed 's/^  --//' | sort -u; }
# The keys --help says SIGHUP applies at once, and those that need a restart (from $help).
reload_groups() {
  live=$(printf '%s\n' "$help" | help_group "Settings applied at once on SIGHUP")
  restart=$(printf '%s\n' "$help" | help_group "Settings that need a restart")
  [ "$(printf '%s\n' "$live" | wc -l)" -ge 5 ] || die "too few reloadable keys parsed from llmd --help: $live"
  [ "$(printf '%s\n' "$restart" | wc -l)" -ge 5 ] || die "too few restart keys parsed from llmd --help: $restart"
}
# $applied (the page's list of what SIGHUP applies) names every live key and no restart key.
check_applied() {
  for k in $live; do has_token "$k" <<<"$applied" || miss "reloadable key $k (not listed as applied at once on SIGHUP in $1)"; done
  for k in $restart; do
    has_token "$k" <<<"$applied" && miss "key $k needs a restart, but $1 lists it as applied at once on SIGHUP"
  done
  return 0
}

mode=${1:-}; shift || true
case "$mode" in
  lint)
    [ $# -gt 0 ] || die "lint needs pages"
    out=$(mandoc -T lint -W warning "$@" 2>&1); rc=$?
    if [ -n "$out" ] || [ $rc -ne 0 ]; then echo "$out"; echo "check_man: mandoc -T lint found problems"; exit 1; fi
    echo "lint clean: $*"; exit 0 ;;
  llmd-options)
    llmd=$1 page=$2
    help=$("$llmd" --help) || die "$llmd --help failed"
    opts=$(printf '%s\n' "$help" | grep -oE -- '(^|[[:space:]])--[a-z][a-z0-9-]*' | tr -d ' \t' | sort -u)
    [ "$(printf '%s\n' "$opts" | wc -l)" -ge 10 ] || die "too few options parsed from llmd --help: $opts"
    text=$(render "$page")
    for o in $opts; do has_token "$o" <<<"$text" || miss "option $o"; done
    reload_groups
    joined=$(printf '%s\n' "$text" | tr '\n' ' ')
    grep -q "Applied at once:" <<<"$joined" || die "no 'Applied at once:' (the SIGHUP entry) in $page"
    applied=$(sed -E 's/.*Applied at once://; s/Every other key.*//' <<<"$joined")
    check_applied "the SIGHUP entry"
    echo "checked $(printf '%s\n' "$opts" | wc -l) options, $(printf '%s\n' $live | wc -l) reloadable keys" ;;
  config-keys)
    llmd=$1 page=$2
    help=$("$llmd" --help) || die "$llmd --help failed"
    keys=$(printf '%s\n' "$help" | awk '/^Settings/ { on = 1; next } on' |
           grep -oE -- '^  --[a-z][a-z0-9-]*' | sed 's/^  --//' | sort -u)
    [ "$(printf '%s\n' "$keys" | wc -l)" -ge 10 ] || die "too few keys parsed from llmd --help: $keys"
    text=$(render "$page" | section KEYS)
    for k in $keys; do
      grep -qE -- "^ +$k = " <<<"$text" || miss "config key $k (no '$k = ...' entry under KEYS)"
    done
    reload_groups
    reloading=$(render "$page" | section RELOADING | tr '\n' ' ')
    grep -q "applies at once:.*Every other key" <<<"$reloading" ||
      die "RELOADING of $page has no 'applies at once: ... Every other key' lists"
    applied=$(sed -E 's/.*applies at once://; s/Every other key.*//' <<<"$reloading")
    others=$(sed -E 's/.*Every other key//' <<<"$reloading")
    check_applied RELOADING
    for k in $restart; do
      has_token "$k" <<<"$others" || miss "key $k (not listed under RELOADING as needing a restart)"
    done
    echo "checked $(printf '%s\n' "$keys" | wc -l) keys ($(printf '%s\n' $live | wc -l) reloadable)" ;;
  llmctl)
    llmctl=$1 page=$2
    help=$("$llmctl" --help) || die "$llmctl --help failed"
    top_help=$("$llmctl" top --help) || die "$llmctl top --help failed"
    # Commands: the lines of the Commands section that start with a word; the command is its
    # lower-case words before the first argument (ID, [OPTIONS], --x ...).
    cmds=$(printf '%s\n' "$help" | awk '/^Commands:/ { on = 1; next } /^[A-Z]/ { on = 0 } on' |
           grep -E '^  [a-z]' | sed -E 's/^  //; s/  .*//' |
           awk '{ c = $1; for (i = 2; i <= NF && $i ~ /^[a-z]+$/; i++) c = c " " $i; print c }' |
           sort -u)
    [ "$(printf '%s\n' "$cmds" | wc -l)" -ge 5 ] || die "too few commands parsed from llmctl --help: $cmds"
    opts=$(printf '%s\n%s\n' "$help" "$top_help" | grep -oE -- '(^|[[:space:][])--?[a-z][a-z0-9-]*' |
           tr -d ' \t[' | sort -u)
    text=$(render "$page")
    commands=$(printf '%s\n' "$text" | section COMMANDS)
    while IFS= read -r c; do
      grep -qE -- "^ +$c( |$)" <<<"$commands" || miss "command '$c' (no entry under COMMANDS)"
    done <<< "$cmds"
    for o in $opts; do has_token "$o" <<<"$text" || miss "option $o"; done
    echo "checked $(printf '%s\n' "$cmds" | wc -l) commands, $(printf '%s\n' "$opts" | wc -l) options" ;;
  llmclient)
    header=$1 page=$2
    fns=$(grep -oE 'LLMC_API[^;(]*[ *]llmc_[a-z0-9_]+\(' "$header" | grep -oE 'llmc_[a-z0-9_]+\($' | tr -d '(' | sort -u)
    [ "$(printf '%s\n' "$fns" | wc -l)" -ge 10 ] || die "too few functions parsed from $header: $fns"
    text=$(render "$page")
    for f in $fns; do has_token "$f" <<<"$text" || miss "function $f"; done
    echo "checked $(printf '%s\n' "$fns" | wc -l) functions" ;;
  dbus)
    src=$1 page=$2
    text=$(render "$page")
    n=0
    for kind in METHOD:METHODS SIGNAL:SIGNALS PROPERTY:PROPERTIES; do
      macro=${kind%%:*} sec=${kind#*:}
      names=$(grep -oE "SD_BUS_${macro}(_WITH_ARGS)?\(\"[A-Za-z]+\"" "$src" | grep -oE '"[A-Za-z]+"' | tr -d '"' | sort -u)
      body=$(printf '%s\n' "$text" | section "$sec")
      for x in $names; do
        n=$((n + 1))
        grep -qE -- "^ +$x( |\(|$)" <<<"$body" || miss "${macro,,} $x (no entry under $sec)"
      done
    done
    [ $n -ge 8 ] || die "too few D-Bus names parsed from $src"
    echo "checked $n D-Bus names" ;;
  *) die "unknown mode '$mode'" ;;
esac
[ -n "${CHECK_MAN_VERBOSE:-}" ] && printf "%s\n" ${cmds:+"$cmds"} ${opts:+$opts} ${keys:+$keys} ${fns:+$fns}
exit $missing
