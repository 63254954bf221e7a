#!/bin/sh
# A long fuzz campaign, outside CI: runs every libFuzzer target (fuzz/fuzz_*.c, built by
# scripts/fuzz.sh) at once for FUZZ_SECONDS each (default 1800) at low priority, then merges
# what they found into the kept corpus fuzz/corpus/NAME/, minimised with -merge=1 so it keeps
# only inputs that add coverage. CI (scripts/fuzz.sh) replays that corpus on every run.
# The merge counts covered edges only (-use_counters=0): the fewest inputs that reach every
# edge reached, a few hundred at most, instead of one per hit-count bucket (thousands);
# FUZZ_MERGE_COUNTERS=1 keeps the bucket-level corpus.
#
#   scripts/fuzz-campaign.sh               every target, 30 minutes each, all at once
#   scripts/fuzz-campaign.sh proxy http    only these targets
#   FUZZ_SECONDS=7200 FUZZ_NICE=19 scripts/fuzz-campaign.sh
#   FUZZ_MERGE_ONLY=1 scripts/fuzz-campaign.sh   merge an earlier run's findings only
#
# Stopping it early (Ctrl-C, or kill of this script's process) stops the fuzzers and still
# merges what they found. A crash stops only its own target; its input is kept under
# build-fuzz/crashes/ and the script exits non-zero. After fixing it, copy the input to
# fuzz/regressions/NAME/ (replayed by CI, never minimised away). Review and commit the
# corpus change with git; the summary at the end says how long each target really ran.
set -eu
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-1800}
NICE=${FUZZ_NICE:-19}
OUT=${FUZZ_BUILD:-build-fuzz}
WORK="$OUT/campaign"

if [ "$#" -gt 0 ]; then
  names="$*"
else
  names=$(ls fuzz/fuzz_*.c | sed 's#fuzz/fuzz_\(.*\)\.c#\1#')
fi

if [ "${FUZZ_MERGE_ONLY:-0}" != 1 ]; then
  # shellcheck disable=SC2086
  FUZZ_BUILD_ONLY=1 FUZZ_BUILD="$OUT" nice -n "$NICE" scripts/fuzz.sh $names
fi
mkdir -p "$WORK" "$OUT/crashes"

# ---- run: every target at once, each bounded by -max_total_time ----
pids=""
stop() {
  # The fuzzers themselves (a background job ignores SIGINT): libFuzzer ends on SIGTERM
  # with its final statistics, and the merge below still runs.
  for n in $names; do
    [ -f "$WORK/$n.pid" ] && kill -TERM "$(cat "$WORK/$n.pid")" 2>/dev/null || true
  done
}
trap stop INT TERM
if [ "${FUZZ_MERGE_ONLY:-0}" != 1 ]; then
  for n in $names; do
    mkdir -p "$WORK/$n"
    dict=""
    [ -f "fuzz/$n.dict" ] && dict="-dict=fuzz/$n.dict"
    seeds="fuzz/corpus/$n"
    [ -d "fuzz/regressions/$n" ] && seeds="$seeds fuzz/regressions/$n"
    date +%s >"$WORK/$n.start"
    # New inputs go to the campaign's own directory; the kept corpus is only read here.
    # shellcheck disable=SC2086
    rm -f "$WORK/$n.rc" "$WORK/$n.end" "$WORK/$n.times"
    (
      trap '' INT TERM
      nice -n "$NICE" "$OUT/fuzz_$n" -max_total_time="$SECONDS_EACH" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/crashes/fuzz_$n-" \
        $dict "$WORK/$n" $seeds >"$WORK/$n.log" 2>&1 &
      echo $! >"$WORK/$n.pid"
      rc=0
      wait $! || rc=$?
      echo "$rc" >"$WORK/$n.rc"
      date +%s >"$WORK/$n.end"
      times >"$WORK/$n.times" # the last line: the fuzzer's user and system CPU time
    ) &
    pids="$pids $!"
    echo "== campaign: fuzz_$n started for ${SECONDS_EACH}s (log: $WORK/$n.log)"
  done
  # wait returns early when a signal arrives; wait again until every run has ended.
  for p in $pids; do
    while kill -0 "$p" 2>/dev/null; do wait "$p" || true; done
  done
  pids=""
fi

# ---- merge: the kept corpus and the findings, minimised into a fresh directory ----
failed=""
merge_flags="-use_counters=0"
[ "${FUZZ_MERGE_COUNTERS:-0}" = 1 ] && merge_flags=""
for n in $names; do
  fresh="$WORK/$n.merged"
  rm -rf "$fresh"
  mkdir -p "$fresh" "fuzz/corpus/$n"
  # shellcheck disable=SC2086
  if ! nice -n "$NICE" "$OUT/fuzz_$n" -merge=1 $merge_flags -timeout=10 -rss_limit_mb=2048 \
    "$fresh" "fuzz/corpus/$n" "$WORK/$n" >"$WORK/$n.merge.log" 2>&1; then
    tail -n 20 "$WORK/$n.merge.log"
    echo "campaign: merging fuzz_$n failed; the kept corpus is unchanged"
    failed="$failed $n(merge)"
    continue
  fi
  before=$(find "fuzz/corpus/$n" -type f | wc -l)
  rm -rf "fuzz/corpus/$n"
  mv "$fresh" "fuzz/corpus/$n"
  after=$(find "fuzz/corpus/$n" -type f | wc -l)
  echo "== campaign: fuzz/corpus/$n: $before -> $after inputs"
done

# ---- summary: how long each target really ran, and what it found ----
echo "target          wall_s  cpu_s   execs        rc"
for n in $names; do
  [ -f "$WORK/$n.start" ] || continue
  wall=$(($(cat "$WORK/$n.end" 2>/dev/null || date +%s) - $(cat "$WORK/$n.start")))
  cpu=$(awk 'END { gsub(/s/, ""); split($1, u, "m"); split($2, k, "m");
    printf "%.0f", u[1] * 60 + u[2] + k[1] * 60 + k[2] }' "$WORK/$n.times" 2>/dev/null || echo "?")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$n.log" | tail -n 1)
  rc=$(cat "$WORK/$n.rc" 2>/dev/null || echo "?")
  printf '%-15s %-7s %-7s %-12s %s\n' "$n" "$wall" "$cpu" "${execs:-?}" "$rc"
  # 0 is a clean end; 72 is libFuzzer's answer to the stop signal. Anything else found a bug.
  case "$rc" in
  0 | 72) ;;
  *) failed="$failed $n" ;;
  esac
done
if [ -n "$failed" ]; then
  echo "campaign: failed:$failed (inputs in $OUT/crashes/)"
  exit 1
fi
echo "campaign: no crash; review and commit fuzz/corpus/"
