#!/bin/sh
# Builds the Debian package from a copy of the tree (dpkg-buildpackage writes beside the
# source, and cleans it), checks it with lintian (errors fail), installs it with dpkg -i,
# checks the installed files, the service user and `gatehouse --version`, verifies the
# installed unit with systemd-analyze, and removes the package again.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "package test: needs root for dpkg -i; skipped"; exit 0; }
scripts/deps.sh package

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/gatehouse"
tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$work/gatehouse"
(cd "$work/gatehouse" && nice -n 10 dpkg-buildpackage -us -uc -b -j"$(nproc)" >"$work/build.log" 2>&1) ||
  { tail -40 "$work/build.log"; exit 1; }
deb=$(ls "$work"/gatehouse_*_*.deb)
echo "built $(basename "$deb")"

# lintian: errors fail the build; warnings are shown
lintian --fail-on error "$work"/gatehouse_*.changes

dpkg -i "$deb" >/dev/null
for f in /usr/sbin/gatehouse /usr/bin/gatehouse-cli /usr/share/man/man8/gatehouse.8.gz \
         /usr/share/man/man1/gatehouse-cli.1.gz /lib/systemd/system/gatehouse.service \
         /usr/share/bash-completion/completions/gatehouse-cli /etc/default/gatehouse; do
  [ -f "$f" ] || { echo "missing after install: $f"; exit 1; }
done
getent passwd gatehouse >/dev/null || { echo "postinst did not create the gatehouse user"; exit 1; }
version=$(/usr/sbin/gatehouse --version)
expected=$(dpkg-parsechangelog -S Version)
[ "$version" = "gatehouse $expected" ] || { echo "version: got '$version', want $expected"; exit 1; }
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/gatehouse.service
fi

# Installing the package again while the daemon runs hands it over to the new binary
# (postinst: gatehouse upgrade) instead of stopping it. Skipped where a real installation
# keeps its state in /var/lib/gatehouse.
if [ ! -e /var/lib/gatehouse ]; then
  install -d -o gatehouse -g gatehouse -m 0700 /var/lib/gatehouse
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  GATEHOUSE_ADMIN_SECRET=package-test /usr/sbin/gatehouse serve --data /var/lib/gatehouse \
    --http "127.0.0.1:$port" --workers 2 --user gatehouse >"$work/daemon.log" 2>&1 &
  pidfile=/var/lib/gatehouse/gatehouse.pid
  i=0; while [ ! -s "$pidfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  old=$(cat "$pidfile")
  dpkg -i "$deb" >/dev/null
  new=$(cat "$pidfile")
  /usr/bin/gatehouse-cli --url "http://127.0.0.1:$port" --token package-test \
    query network-listener >/dev/null || { cat "$work/daemon.log"; exit 1; }
  kill "$new" 2>/dev/null || true
  i=0; while kill -0 "$new" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
  rm -rf /var/lib/gatehouse
  [ "$new" != "$old" ] || { echo "reinstalling did not hand over: $old still serves"; cat "$work/daemon.log"; exit 1; }
  echo "package upgrade: process $old handed over to $new"
fi

dpkg --purge gatehouse >/dev/null
[ ! -e /usr/sbin/gatehouse ] || { echo "dpkg --purge left /usr/sbin/gatehouse"; exit 1; }
echo "package: built, lintian clean of errors, installed ($version), removed"
