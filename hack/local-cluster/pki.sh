#!/usr/bin/env bash
# Generates the cluster's CAs, certificates, service-account keys and kubeconfigs (once).
set -euo pipefail
source "$(dirname "$0")/config.sh"
source "$(dirname "$0")/lib-pki.sh"
mkdir -p "$PKI_DIR"
cd "$PKI_DIR"

new_ca() { # name CN
  [ -f "$1.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

new_cert() { # ca name subject usage [sans]
  [ -f "$2.crt" ] && return 0
  sign_cert "$@"
}

new_ca ca modelplane-local-ca
new_ca front-proxy-ca modelplane-front-proxy-ca
new_ca etcd-ca modelplane-etcd-ca

new_cert etcd-ca etcd-server "/CN=etcd" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
new_cert etcd-ca apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
new_cert ca apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP,IP:127.0.0.1"
new_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
new_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
new_cert ca admin "/O=system:masters/CN=kubernetes-admin" clientAuth
new_cert ca controller-manager "/CN=system:kube-controller-manager" clientAuth
new_cert ca scheduler "/CN=system:kube-scheduler" clientAuth
new_cert ca kube-proxy "/CN=system:kube-proxy" clientAuth
new_cert ca kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
new_cert ca kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
new_cert ca coredns "/CN=system:coredns" clientAuth
[ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

kubeconfig() { # file user cert
  [ -f "$1" ] && return 0
  write_kubeconfig "$1" "$2" "$PKI_DIR/$3"
}
kubeconfig "$KUBECONFIG_PATH" admin admin
kubeconfig controller-manager.kubeconfig controller-manager controller-manager
kubeconfig scheduler.kubeconfig scheduler scheduler
kubeconfig kube-proxy.kubeconfig kube-proxy kube-proxy
kubeconfig kubelet.kubeconfig kubelet kubelet-client
kubeconfig coredns.kubeconfig coredns coredns
chmod 600 ./*.key
