#!/usr/bin/env bash
# Builds helm from its Go module into $BIN_DIR, stamped with its own version and with the cluster's
# Kubernetes version (otherwise `helm template` and `helm lint` assume Kubernetes 1.20).
set -euo pipefail
: "${HELM_VERSION:?}" "${K8S_VERSION:?}" "${BIN_DIR:?}"
k8s_major=$(echo "$K8S_VERSION" | cut -d. -f1 | tr -d v)
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
stamp="$BIN_DIR/.helm-$HELM_VERSION-k8s$k8s_major.$k8s_minor"
[ -f "$stamp" ] && [ -x "$BIN_DIR/helm" ] && exit 0
printf '[build-helm %s] helm %s (kubernetes %s.%s)\n' "$(date +%T)" "$HELM_VERSION" "$k8s_major" "$k8s_minor"
mkdir -p "$BIN_DIR"
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ld+=" -X $p.k8sVersionMajor=$k8s_major -X $p.k8sVersionMinor=$k8s_minor"
done
# helm's go.mod has no replace directives, so a plain `go install` of the tagged module works.
GOBIN="$BIN_DIR" CGO_ENABLED=0 nice go install -trimpath -gcflags "${GO_GCFLAGS:-}" -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
rm -f "$BIN_DIR"/.helm-*
touch "$stamp"
