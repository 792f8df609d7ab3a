#!/usr/bin/env bash
# Unpacks Debian's prometheus package (prometheus + promtool) into the cache. Not installed as a
# package: its maintainer scripts would start a system daemon; tests start their own instances.
set -euo pipefail
: "${CACHE_DIR:?}" "${BIN_DIR:?}"
dest="$CACHE_DIR/prometheus"
stamp="$dest/.unpacked"
if [ -f "$stamp" ] && [ -x "$dest/root/usr/bin/prometheus" ] && [ -x "$dest/root/usr/bin/promtool" ]; then
  ln -sfn "$dest/root/usr/bin/prometheus" "$BIN_DIR/prometheus"
  ln -sfn "$dest/root/usr/bin/promtool" "$BIN_DIR/promtool"
  exit 0
fi
log() { printf '[fetch-prometheus %s] %s\n' "$(date +%T)" "$*"; }
# An empty package list (a fresh machine) knows no candidate yet.
apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq
version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
log "prometheus $version (Debian package, unpacked only)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
chown _apt "$work" 2>/dev/null || chmod 777 "$work"   # apt downloads as its sandbox user
(cd "$work" && apt-get download -qq "prometheus=$version")
rm -rf "$dest"; mkdir -p "$dest" "$BIN_DIR"
dpkg-deb -x "$work"/prometheus_*.deb "$dest/root"
echo "$version" > "$dest/version"
ln -sfn "$dest/root/usr/bin/prometheus" "$BIN_DIR/prometheus"
ln -sfn "$dest/root/usr/bin/promtool" "$BIN_DIR/promtool"
"$BIN_DIR/prometheus" --version | head -1
touch "$stamp"
