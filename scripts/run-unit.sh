#!/bin/sh
# Runs each cmocka unit-test binary given; fails when any fails or none was given.
set -eu
[ "$#" -gt 0 ] && [ -e "$1" ] || { echo "no unit tests found"; exit 1; }
failed=0
for t in "$@"; do
  "$t" || failed=1
done
exit $failed
