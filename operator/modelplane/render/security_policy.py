"""Envoy Gateway's SecurityPolicy for a ModelDeployment's route: API keys and who may call.

Every consumer Secret of the directory is a credential, so any consumer's key authenticates (an
unknown key or none is 401); the gateway then sets the consumer's client id in
contract.CONSUMER_HEADER (overwriting whatever the client sent) and strips the key; authorization
allows only the client ids of the consumers spec.access.consumers names (any other is 403).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.consumers import Directory
from modelplane.render.common import Manifest, metadata, stamp

API_VERSION: Final = "gateway.envoyproxy.io/v1alpha1"
GATEWAY_API_GROUP: Final = "gateway.networking.k8s.io"
# Where clients put their key: OpenAI's clients send "Authorization: Bearer KEY" (the gateway strips
# "Bearer "), others x-api-key.
KEY_HEADERS: Final = ("authorization", "x-api-key")


def route_target(md: specs.ModelDeployment) -> list[dict[str, str]]:
    """The policies attach to the ModelDeployment's HTTPRoute (same name, same namespace)."""
    return [{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute", "name": md.name}]


def security_policy(md: specs.ModelDeployment, directory: Directory, allowed: Sequence[str]) -> Manifest:
    """ALLOWED: the consumers spec.access.consumers resolved to (none: every request is refused)."""
    rules = []
    if allowed:
        rules.append(
            {
                "name": "allowed-consumers",
                "action": "Allow",
                "principal": {
                    "headers": [
                        {
                            "name": contract.CONSUMER_HEADER,
                            "values": [cid for name in allowed for cid in contract.client_ids(name)],
                        }
                    ]
                },
            }
        )
    return stamp(
        {
            "apiVersion": API_VERSION,
            "kind": "SecurityPolicy",
            "metadata": metadata(md, md.name),
            "spec": {
                "targetRefs": route_target(md),
                "apiKeyAuth": {
                    "credentialRefs": [
                        {"kind": "Secret", "name": c.name, "namespace": directory.namespace}
                        for c in directory.consumers
                    ],
                    "extractFrom": [{"headers": list(KEY_HEADERS)}],
                    "forwardClientIDHeader": contract.CONSUMER_HEADER,
                    "sanitize": True,
                },
                "authorization": {"defaultAction": "Deny", "rules": rules},
            },
        }
    )
