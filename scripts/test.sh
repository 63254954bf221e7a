#!/bin/sh
# The whole test suite: unit tests, integration tests against the real daemon, a 20-second
# soak, the same under AddressSanitizer and UndefinedBehaviorSanitizer, a short fuzz run
# after replaying the kept fuzz corpus, the Debian package, browser tests.
# Each stage prints its runner's closing line; the first failing stage stops the run.
set -eu
cd "$(dirname "$0")/.."

scripts/deps.sh test browser
JOBS=$(nproc 2>/dev/null || echo 2)
PYTEST="/usr/bin/python3 -m pytest -q -p no:cacheprovider"

echo "== format (clang-format, .clang-format)"
clang-format --dry-run --Werror $(git ls-files 'src/*.c' 'src/*.h')

echo "== build"
make -s -j"$JOBS" all
make -s -j"$JOBS" $(ls tests/unit/test_*.c 2>/dev/null | sed 's#tests/unit/\(.*\)\.c#build/tests/\1#')

echo "== unit tests"
scripts/run-unit.sh build/tests/test_*

echo "== integration tests (epoll engine)"
GATEHOUSE_ENGINE=epoll $PYTEST tests/integration

# The whole suite again on the io_uring engine, when this kernel offers it; the sanitizer
# pass below runs once, on the default engine (auto: io_uring where offered).
if build/gatehouse serve --data /nonexistent/probe --engine io_uring 2>&1 | grep -q -- '--engine io_uring:'; then
  echo "== integration tests (io_uring engine): skipped, the kernel refuses io_uring"
else
  echo "== integration tests (io_uring engine)"
  GATEHOUSE_ENGINE=io_uring GATEHOUSE_SKIP_REAL=1 $PYTEST tests/integration
fi

echo "== soak smoke (20 s of mixed traffic; make soak runs it for 10 minutes)"
/usr/bin/python3 tests/soak/soak.py --gatehouse build/gatehouse --seconds 20

echo "== sanitizers (ASan + UBSan; the tests of real components ran above)"
make -s -j"$JOBS" BUILD=build-asan SAN=1 all
make -s -j"$JOBS" BUILD=build-asan SAN=1 $(ls tests/unit/test_*.c 2>/dev/null | sed 's#tests/unit/\(.*\)\.c#build-asan/tests/\1#')
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 scripts/run-unit.sh build-asan/tests/test_*
GATEHOUSE_SANITIZED=1 GATEHOUSE_SKIP_REAL=1 GATEHOUSE_BIN=$PWD/build-asan/gatehouse GATEHOUSE_CLI=$PWD/build-asan/gatehouse-cli \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 $PYTEST tests/integration

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzz smoke"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh
fi

echo "== Debian package (build, lintian, dpkg -i, remove)"
scripts/package-test.sh

if [ -f tests/browser/run.sh ]; then
  echo "== browser tests"
  sh tests/browser/run.sh
fi
echo "== all tests passed"
