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
dpkg --purge gatehouse >/dev/null
[ ! -e /usr/sbin/gatehouse ] || { echo "dpkg --purge left /usr/sbin/gatehouse"; exit 1; }
echo "package: built, lintian clean of errors, installed ($version), removed"
