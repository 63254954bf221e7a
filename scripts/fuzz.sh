#!/bin/sh
# Builds every fuzz/fuzz_*.c as a libFuzzer binary (clang, ASan + UBSan) linked with the
# library sources, replays the whole kept corpus (fuzz/corpus/NAME/, and the crash
# regressions in fuzz/regressions/NAME/) once, then fuzzes each for FUZZ_SECONDS (default
# 20). Fails when a target does not build, a kept input fails, or the run finds a crash, leak
# or undefined behaviour; the input is kept under build-fuzz/crashes/. A dictionary comes
# from fuzz/NAME.dict. Long runs that grow the kept corpus: scripts/fuzz-campaign.sh.
#
#   scripts/fuzz.sh                 every target
#   scripts/fuzz.sh proxy           only fuzz/fuzz_proxy.c
#   FUZZ_SECONDS=300 scripts/fuzz.sh proxy
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh   build the binaries, run nothing
#
# Warnings are the main build's business (gcc, -Werror); here they would only stop a run
# for reasons that have nothing to do with crashes, so they are not errors.
set -eu
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-20}
OUT=${FUZZ_BUILD:-build-fuzz}
CC=${FUZZ_CC:-clang}
JOBS=$(nproc 2>/dev/null || echo 2)
PKGS="openssl jansson sqlite3 libpq libcurl liburing" # as the Makefile

if [ "$#" -gt 0 ]; then
  targets=""
  for name in "$@"; do targets="$targets fuzz/fuzz_$name.c"; done
else
  targets=$(ls fuzz/fuzz_*.c 2>/dev/null || true)
fi
if [ -z "$targets" ]; then
  echo "fuzz: no targets in fuzz/"
  exit 0
fi
for t in $targets; do
  [ -f "$t" ] || { echo "fuzz: $t does not exist"; exit 1; }
done

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (scripts/deps.sh installs it)"; exit 1; }
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c17 -D_GNU_SOURCE -O1 -g $SAN -Isrc -I$OUT $(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lhttp_parser -lpthread"

# ---- the library, instrumented for coverage; rebuilt only when a source is newer ----
mkdir -p "$OUT/obj" "$OUT/crashes"
# Two runs at once would rebuild the library under each other: the second waits.
if command -v flock >/dev/null; then
  exec 9>"$OUT/.lock"
  flock 9
fi
# Every folder under src/ but the client's, as the Makefile builds the daemon.
LIB_SRC=$(ls src/*/*.c 2>/dev/null | grep -v '^src/cli/')
stamp="$OUT/lib.stamp"
# The file list itself is part of the state: a source added or removed means a rebuild.
echo "$LIB_SRC" | sort >"$OUT/lib.list.new"
if [ -f "$stamp" ] && cmp -s "$OUT/lib.list.new" "$OUT/lib.list" &&
  [ -z "$(find src web scripts/embed.c -newer "$stamp" -type f 2>/dev/null | head -1)" ]; then
  echo "== fuzz: library up to date in $OUT"
else
  echo "== fuzz: building the library with $CC into $OUT"
  rm -rf "$OUT/obj"
  mkdir -p "$OUT/obj"
  # One object per source, named after its path so equal basenames cannot collide.
  echo "$LIB_SRC" | tr ' ' '\n' | grep . |
    xargs -P "$JOBS" -I{} sh -c \
      'o="$1/obj/$(echo "$2" | tr / _ | sed "s/\.c$/.o/")"; exec $3 $4 -fsanitize=fuzzer-no-link -c -o "$o" "$2"' \
      sh "$OUT" {} "$CC" "$CFLAGS"
  "$CC" -O1 -o "$OUT/embed" scripts/embed.c
  web=""
  for f in web/*; do [ -f "$f" ] && web="$web $f"; done
  # shellcheck disable=SC2086
  "$OUT/embed" $web >"$OUT/web_assets.c"
  # shellcheck disable=SC2086
  $CC $CFLAGS -c -o "$OUT/obj/web_assets.o" "$OUT/web_assets.c"
  # An archive, so each target pulls in only the modules it reaches: one module being
  # rewritten elsewhere in the tree does not stop every target from linking.
  rm -f "$OUT/libgatehouse.a"
  ar rcs "$OUT/libgatehouse.a" "$OUT"/obj/*.o
  mv "$OUT/lib.list.new" "$OUT/lib.list"
  touch "$stamp"
fi

# ---- each target: build, then run ----
failed=""
for t in $targets; do
  name=$(basename "$t" .c)
  short=${name#fuzz_}
  bin="$OUT/$name"
  echo "== fuzz: $name"
  # shellcheck disable=SC2086
  if ! $CC $CFLAGS -fsanitize=fuzzer -o "$bin" "$t" "$OUT/libgatehouse.a" $LIBS; then
    failed="$failed $name(build)"
    continue
  fi
  [ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && continue
  # Every kept input once: what an earlier campaign found must still pass on today's code.
  kept=$(find "fuzz/corpus/$short" "fuzz/regressions/$short" -type f 2>/dev/null || true)
  if [ -n "$kept" ]; then
    # shellcheck disable=SC2086
    if ! echo "$kept" | xargs "$bin" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$OUT/crashes/$name-" >"$OUT/$name.replay.log" 2>&1; then
      tail -n 40 "$OUT/$name.replay.log"
      echo "fuzz: $name FAILED replaying the kept corpus (log: $OUT/$name.replay.log)"
      failed="$failed $name(replay)"
      continue
    fi
    echo "   replayed $(echo "$kept" | wc -l) kept inputs"
  fi
  corpus="$OUT/corpus/$short"
  mkdir -p "$corpus"
  seeds=""
  [ -d "fuzz/corpus/$short" ] && seeds="fuzz/corpus/$short"
  [ -d "fuzz/regressions/$short" ] && seeds="$seeds fuzz/regressions/$short"
  dict=""
  [ -f "fuzz/$short.dict" ] && dict="-dict=fuzz/$short.dict"
  # The first corpus directory collects new inputs; the seeds are only read.
  # shellcheck disable=SC2086
  if ! "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$OUT/crashes/$name-" $dict \
    "$corpus" $seeds >"$OUT/$name.log" 2>&1; then
    tail -n 40 "$OUT/$name.log"
    echo "fuzz: $name FAILED; the input is in $OUT/crashes/ (log: $OUT/$name.log)"
    failed="$failed $name"
    continue
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$OUT/$name.log" | tr '\n' ' '
  echo
done

if [ -n "$failed" ]; then
  echo "fuzz: failed:$failed"
  exit 1
fi
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
  echo "fuzz: built every target in $OUT"
  exit 0
fi
echo "fuzz: all targets ran ${SECONDS_EACH}s without a crash"
