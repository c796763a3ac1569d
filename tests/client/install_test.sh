#!/bin/sh
# ctest: installs libllmclient (component llmclient) into a fresh prefix, then builds and runs a
# consumer against it twice: with pkg-config (C) and with find_package(llmclient) (C++).
#   install_test.sh BUILD_DIR WORK_DIR VERSION C_COMPILER CXX_COMPILER [EXTRA_FLAGS]
set -eu
build=$1 work=$2 version=$3 cc=$4 cxx=$5 flags=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

"${CMAKE:-cmake}" --install "$build" --prefix "$prefix" --component llmclient
pc=$(find "$prefix" -name llmclient.pc)
test -n "$pc" || { echo "no llmclient.pc installed"; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
test -e "$libdir/libllmclient.so.1" || { echo "no libllmclient.so.1 in $libdir"; exit 1; }
test -f "$prefix/include/llmclient/llmclient.h" && test -f "$prefix/include/llmclient/llmclient.hpp" &&
  test -f "$prefix/include/llmclient/adapters/libuv.h" || { echo "headers missing"; exit 1; }

echo "== pkg-config"
export PKG_CONFIG_PATH="$(dirname "$pc")"
test "$(pkg-config --modversion llmclient)" = "$version"
# shellcheck disable=SC2046,SC2086
"$cc" -std=c99 -Wall -Wextra -pedantic -Werror $flags "$here/consumer/consumer.c" \
  $(pkg-config --cflags --libs llmclient) -o "$work/consumer-c"
LD_LIBRARY_PATH="$libdir" "$work/consumer-c" "$version"

echo "== find_package(llmclient)"
"${CMAKE:-cmake}" -S "$here/consumer" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" > "$work/configure.log" ||
  { cat "$work/configure.log"; exit 1; }
"${CMAKE:-cmake}" --build "$work/consumer-build" > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/consumer-build/consumer" "$version"
