#!/bin/sh
# Browser tests: starts the daemon (already built: $GATEHOUSE_BIN or build/gatehouse) on a
# free port with a fresh data dir, then runs the tests in Debian's chromium through
# playwright-core (no browser download). Screenshots go to tests/browser/artifacts/.
# GATEHOUSE_UPDATE_SCREENSHOT=1 also refreshes docs/screenshot.png.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

BIN=${GATEHOUSE_BIN:-$root/build/gatehouse}
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$BIN" ] || { echo "browser tests: $BIN is missing; build first (make)" >&2; exit 1; }
[ -x "$CHROMIUM" ] || { echo "browser tests: $CHROMIUM is missing (scripts/deps.sh browser)" >&2; exit 1; }

# playwright-core (it never downloads a browser) and axe-core.
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

mkdir -p artifacts
tmp=$(mktemp -d)
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
secret="browser-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

GATEHOUSE_ADMIN_SECRET=$secret "$BIN" serve --data "$tmp/data" --http "127.0.0.1:$port" --workers 2 \
  >"$tmp/gatehouse.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  cp "$tmp/gatehouse.log" artifacts/gatehouse.log 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait (at most 10 s) until the page is served.
if ! node -e '
  const url = process.argv[1], end = Date.now() + 10000;
  (async function poll() {
    try { const r = await fetch(url); if (r.ok) process.exit(0); } catch {}
    if (Date.now() > end) process.exit(1);
    setTimeout(poll, 100);
  })();' "http://127.0.0.1:$port/"; then
  echo "browser tests: gatehouse did not serve http://127.0.0.1:$port/ within 10 s:" >&2
  cat "$tmp/gatehouse.log" >&2
  exit 1
fi

status=0
GATEHOUSE_URL="http://127.0.0.1:$port" GATEHOUSE_ADMIN_SECRET=$secret \
  node --test --test-concurrency=1 listeners.test.mjs console.test.mjs page-logic.test.mjs || status=$?
# after them, not beside them: it adds a listener of its own for a while
GATEHOUSE_URL="http://127.0.0.1:$port" GATEHOUSE_ADMIN_SECRET=$secret \
  node --test overview.test.mjs || status=$?
exit $status
