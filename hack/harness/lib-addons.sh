# Host processes next to the kubelet, each with a client certificate of its own from the cluster CA,
# sourced (after config.sh and lib-pki.sh) by addons.sh and keda.sh. Pids, fingerprints and logs
# live under $ADDONS_DIR; `start` is idempotent: a process whose command line, inputs and binary
# are unchanged is left alone.
ADDONS_DIR=${ADDONS_DIR:-$CACHE_DIR/addons}
ADDON_PKI=$ADDONS_DIR/pki
ADDON_RUN=$ADDONS_DIR/run
ADDON_LOGS=$ADDONS_DIR/logs
FIELD_MANAGER=modelplane-harness
mkdir -p "$ADDON_PKI" "$ADDON_RUN" "$ADDON_LOGS"
chmod 700 "$ADDON_PKI"

# --- processes -----------------------------------------------------------------------------
pid_of() { cat "$ADDON_RUN/$1.pid" 2>/dev/null || true; }

exe_of() {  # the binary NAME was started from (before it was recorded: the bin dir's NAME)
  cat "$ADDON_RUN/$1.exe" 2>/dev/null || echo "$BIN_DIR/$1"
}

running() {  # the pid file's process is alive and is still our binary (pids get reused)
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(exe_of "$1")" ]
}

stop() {
  local name=$1 pid; pid=$(pid_of "$name")
  if running "$name"; then
    log "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$ADDON_RUN/$name.pid" "$ADDON_RUN/$name.fingerprint" "$ADDON_RUN/$name.log-offset" "$ADDON_RUN/$name.exe"
}

# start NAME FINGERPRINT_INPUTS -- CMD...: (re)starts NAME unless it runs with the same fingerprint
# (its command line, the input files' contents and the binary's mtime). CMD's first word is the
# binary, by absolute path.
start() {
  local name=$1 inputs=$2; shift 3
  local fingerprint
  fingerprint=$({ echo "$*"; sha256sum $inputs; stat -c %Y "$1"; } | sha256sum | cut -c1-16)
  if running "$name" && [ "$(cat "$ADDON_RUN/$name.fingerprint" 2>/dev/null)" = "$fingerprint" ]; then
    log "$name already running (pid $(pid_of "$name"), log: $ADDON_LOGS/$name.log)"
    return 0
  fi
  stop "$name"
  log "starting $name (log: $ADDON_LOGS/$name.log)"
  stat -c %s "$ADDON_LOGS/$name.log" 2>/dev/null > "$ADDON_RUN/$name.log-offset" || echo 0 > "$ADDON_RUN/$name.log-offset"
  setsid "$@" >>"$ADDON_LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$ADDON_RUN/$name.pid"
  echo "$1" > "$ADDON_RUN/$name.exe"
  echo "$fingerprint" > "$ADDON_RUN/$name.fingerprint"
}

logged_since_start() {  # NAME TEXT: the add-on's current run has logged TEXT
  local offset; offset=$(cat "$ADDON_RUN/$1.log-offset" 2>/dev/null || echo 0)
  tail -c +"$((offset + 1))" "$ADDON_LOGS/$1.log" | grep -qF "$2"
}

# wait_for ADDON WHAT SECONDS CMD...: polls CMD until it succeeds; fails early if ADDON exits.
wait_for() {
  local addon=$1 what=$2 limit=$3; shift 3
  local deadline=$(( $(date +%s) + limit )) why
  until "$@" >/dev/null 2>&1; do
    why=""
    running "$addon" || why="$addon exited"
    [ "$(date +%s)" -ge "$deadline" ] && why="timed out after ${limit}s"
    if [ -n "$why" ]; then
      log "$why while waiting until $what; last lines of $ADDON_LOGS/$addon.log:"
      tail -n 20 "$ADDON_LOGS/$addon.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "$what"
}

# --- certificates ----------------------------------------------------------------------------
# cert NAME SUBJECT USAGE [SANS]: a key pair signed by the cluster CA; remade if the CA changed.
cert() {
  local crt=$ADDON_PKI/$1.crt
  if [ -f "$crt" ] && openssl verify -CAfile "$PKI_DIR/ca.crt" "$crt" >/dev/null 2>&1; then return 0; fi
  sign_cert "$PKI_DIR/ca" "$ADDON_PKI/$1" "$2" "$3" "${4:-}" "$ADDON_PKI/ca.srl"
  chmod 600 "$ADDON_PKI/$1.key"
}

kubeconfig_for() {  # NAME: a kubeconfig using the client certificate NAME
  write_kubeconfig "$ADDON_PKI/$1.kubeconfig" "$1" "$ADDON_PKI/$1"
}

render() {  # MANIFEST.in: substitute @VARS@ (the caller's settings, each set or empty)
  sed -e "s|@USER@|${USER_NAME:-}|g; s|@PORT@|${METRICS_SERVER_PORT:-}|g; s|@NODE_IP@|$NODE_IP|g" \
      -e "s|@CA_BUNDLE@|$(base64 -w0 < "$PKI_DIR/ca.crt")|g; s|@VOLUME_DIR@|${VOLUME_DIR:-}|g" \
      -e "s|@HELPER_IMAGE@|${HELPER_IMAGE:-}|g; s|@ADAPTER_PORT@|${KEDA_ADAPTER_PORT:-}|g" \
      -e "s|@KEDA_OPERATOR_USER@|${KEDA_OPERATOR_USER:-}|g; s|@KEDA_ADAPTER_USER@|${KEDA_ADAPTER_USER:-}|g" \
      -e "s|@PROMETHEUS_USER@|${PROMETHEUS_USER:-}|g" "$HERE/manifests/$1"
}

apply_manifest() { kubectl_ apply --server-side --force-conflicts --field-manager "$FIELD_MANAGER" -f "$@" >/dev/null; }

apply() { USER_NAME=$1 render "$2" | apply_manifest -; }
