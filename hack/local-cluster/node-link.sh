#!/usr/bin/env bash
# Creates the node's own link ($NODE_LINK with $NODE_IP/32) if missing. The node IP is where pods
# reach host services (the S3 server, ...), so those can come up before, and without, the cluster.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/config.sh"
# Some kernels (this VM's) have no dummy driver; an empty bridge is a local interface just as well.
if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
  ip link add "$NODE_LINK" type dummy 2>/dev/null || ip link add "$NODE_LINK" type bridge
fi
# Read the addresses first: `ip ... | grep -q` under pipefail fails when grep closes the pipe early.
addrs=$(ip -4 -o addr show dev "$NODE_LINK")
case "$addrs" in *" $NODE_IP/"*) ;; *) ip addr add "$NODE_IP/32" dev "$NODE_LINK" ;; esac
ip link set "$NODE_LINK" up
