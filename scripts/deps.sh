#!/bin/sh
# Installs the Debian packages Gatehouse needs to build, run and test.
# Idempotent: asks apt only for what dpkg does not already have.
set -eu

BUILD="make gcc clang libclang-rt-14-dev pkg-config ca-certificates libssl-dev openssl libjansson-dev
 libsqlite3-dev libpq-dev libcurl4-openssl-dev libhttp-parser-dev liburing-dev scdoc"
TEST="clang-format libcmocka-dev python3 python3-pytest iproute2 haproxy postgresql pebble prometheus
 postfix dovecot-imapd dovecot-pop3d dovecot-managesieved"
BROWSER="chromium"
# Building and checking the Debian package (systemd only for `systemd-analyze verify`).
PACKAGE="debhelper dpkg-dev fakeroot lintian systemd"
BENCH="nginx libnginx-mod-mail libnginx-mod-stream haproxy curl python3 iproute2 procps valgrind"

want=$BUILD
for arg in "$@"; do
  case "$arg" in
    test) want="$want $TEST" ;;
    browser) want="$want $BROWSER" ;;
    bench) want="$want $BENCH" ;;
    package) want="$want $PACKAGE" ;;
  esac
done

missing=""
# Node.js may come from another Debian-format source; only ask for Debian's when absent.
case " $want " in *" chromium "*) command -v npm >/dev/null 2>&1 || want="$want nodejs npm" ;; esac
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
