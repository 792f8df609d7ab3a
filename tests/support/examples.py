"""examples/*.yaml as the end-to-end tests apply them: the files as they are, with only what must differ
on this cluster put in (the S3 credentials, which the files hold as placeholders, and the digests of
the models the tests uploaded), the way hack/demo.sh does it."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.cluster import REPO_ROOT
from tests.support.s3 import S3Server

EXAMPLES = REPO_ROOT / "examples"
# The digest the examples hold until you put your model's `sha256sum` there.
ZERO_DIGEST = "sha256:" + "0" * 64
# The Secret examples/sklearn-s3.yaml names for its S3 credentials.
CREDENTIALS_SECRET = "s3-credentials"
CREDENTIAL_KEYS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def example_names() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.yaml"))


def example(name: str, **replace: str) -> list[dict[str, Any]]:
    """An example's documents, with strings substituted (the local endpoint, keys, digests)."""
    text = (EXAMPLES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def credentials_secret(s3: S3Server, name: str = CREDENTIALS_SECRET) -> dict[str, Any]:
    """The Secret examples/sklearn-s3.yaml shows, holding the local S3 server's endpoint and keys."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {key: s3.env[key] for key in CREDENTIAL_KEYS if key in s3.env},
    }


def with_local_credentials(docs: list[dict[str, Any]], s3: S3Server) -> list[dict[str, Any]]:
    return [credentials_secret(s3) if doc["kind"] == "Secret" else doc for doc in docs]


def _models(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    canary = (spec.get("rollout") or {}).get("canary")
    return [spec["model"], *([canary["model"]] if canary else [])]


def pin_digests(docs: list[dict[str, Any]], digests: dict[str, str]) -> list[dict[str, Any]]:
    """Each model's placeholder digest replaced by DIGESTS[its uri] (a canary's model has its own)."""
    for doc in docs:
        if doc["kind"] != "ModelDeployment":
            continue
        for model in _models(doc):
            if model.get("digest") != ZERO_DIGEST:
                continue
            if model["uri"] not in digests:
                raise AssertionError(f"{doc['metadata']['name']}: no digest given for {model['uri']}")
            model["digest"] = digests[model["uri"]]
    return docs
