#!/usr/bin/env bash
# Builds fake-gcs-server (the GCS emulator the gs:// pull tests run against) from its Go module into
# $BIN_DIR. Cached: a stamp names the built version.
set -euo pipefail
: "${FAKE_GCS_VERSION:?}" "${BIN_DIR:?}"
stamp="$BIN_DIR/.fake-gcs-server-$FAKE_GCS_VERSION"
[ -f "$stamp" ] && [ -x "$BIN_DIR/fake-gcs-server" ] && exit 0
printf '[build-fake-gcs-server %s] fake-gcs-server %s\n' "$(date +%T)" "$FAKE_GCS_VERSION"
mkdir -p "$BIN_DIR"
GOBIN="$BIN_DIR" CGO_ENABLED=0 nice go install -trimpath -gcflags "${GO_GCFLAGS:-}" -ldflags "-s -w" \
  "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
rm -f "$BIN_DIR"/.fake-gcs-server-*
touch "$stamp"
