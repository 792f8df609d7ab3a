#!/usr/bin/env bash
# Prints each component's state, the log file it writes, and the node.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
rc=0
for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns; do
  if running "$name"; then state="running (pid $(cat "$RUN_DIR/$name.pid"))"; else state="stopped"; rc=1; fi
  printf '%-24s %-22s %s\n' "$name" "$state" "$LOG_DIR/$name.log"
done
printf '%-24s %-22s %s\n' audit-log "" "$LOG_DIR/audit.log"
echo "kubeconfig: $KUBECONFIG_PATH"
kubectl_ get nodes -o wide 2>/dev/null || rc=1
exit $rc
