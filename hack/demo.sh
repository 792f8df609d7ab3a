#!/usr/bin/env bash
# The operator part of `make demo` (the lead's demo target builds the cluster and the images first):
# CRDs, the host operator, a small sklearn model uploaded to the local S3 server, the sklearn-s3
# example pointing at it with its digest, Ready, `kubectl get md`, and one prediction.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
MAKE="make -s --no-print-directory"
KUBECTL="$($MAKE bin-dir)/kubectl --kubeconfig $($MAKE kubeconfig)"
NAMESPACE=${DEMO_NAMESPACE:-modelplane-demo}
PYTHON=$REPO/.venv/bin/python

$MAKE install-crds
$MAKE s3
$MAKE operator-up

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

$KUBECTL create namespace "$NAMESPACE" --dry-run=client -o yaml | $KUBECTL apply -f - >/dev/null
$KUBECTL -n "$NAMESPACE" create secret generic s3-credentials --dry-run=client -o yaml \
  --from-literal=AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" --from-literal=AWS_REGION="${AWS_REGION:-us-east-1}" \
  --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  | $KUBECTL apply -f - >/dev/null
# The example's ModelDeployment (its Secret holds placeholders; the real one is made just above).
"$PYTHON" - "$DIGEST" <<'PY' | $KUBECTL -n "$NAMESPACE" apply -f -
import sys, yaml
docs = [d for d in yaml.safe_load_all(open("examples/sklearn-s3.yaml")) if d and d["kind"] == "ModelDeployment"]
docs[0]["spec"]["model"]["digest"] = sys.argv[1]
print(yaml.safe_dump_all(docs))
PY

echo "==> waiting for md/iris to be Ready"
if ! $KUBECTL -n "$NAMESPACE" wait --for=condition=Ready md/iris --timeout=300s >/dev/null; then
  $KUBECTL -n "$NAMESPACE" get md,pods -o wide; exit 1
fi
$KUBECTL -n "$NAMESPACE" get md -o wide

CLUSTER_IP=$($KUBECTL -n "$NAMESPACE" get service iris -o jsonpath='{.spec.clusterIP}')
REQUEST='{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
echo "==> POST http://iris.$NAMESPACE.svc/v1/models/iris:predict $REQUEST"
curl -fsS -H 'Content-Type: application/json' -d "$REQUEST" "http://$CLUSTER_IP/v1/models/iris:predict"
echo
