# Certificates and kubeconfigs signed by the local cluster's CAs, sourced (after config.sh) by
# pki.sh, which makes the cluster's own, and by hack/harness/addons.sh, which makes the add-ons'.
# Each caller decides when to (re)make a file; these functions always write.

# sign_cert CA OUT SUBJECT USAGE [SANS] [SERIAL]: OUT.key and OUT.crt, a leaf certificate for 10
# years signed by CA.crt/CA.key (paths without extension). SERIAL names the serial file (default:
# openssl's, CA.srl beside the CA), so that a caller can keep its serials out of the CA's directory.
sign_cert() {
  local ca=$1 out=$2 subj=$3 usage=$4 sans=${5:-} serial=${6:-}
  local ext; ext=$(mktemp)
  { echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$sans" ] && echo "subjectAltName=$sans"; } > "$ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$out.key" -out "$out.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    ${serial:+-CAserial "$serial"} -out "$out.crt" -days 3650 -extfile "$ext" 2>/dev/null
  rm -f "$out.csr" "$ext"
}

# write_kubeconfig FILE USER CERT: a kubeconfig for the local cluster's apiserver (trusting the
# cluster CA) as USER, with the client certificate CERT.crt/CERT.key; replaced atomically.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3
  cat > "$file.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: modelplane-local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: $user
  user:
    client-certificate: $cert.crt
    client-key: $cert.key
contexts:
- name: modelplane-local
  context: {cluster: modelplane-local, user: $user}
current-context: modelplane-local
KC
  mv "$file.tmp" "$file"
}
