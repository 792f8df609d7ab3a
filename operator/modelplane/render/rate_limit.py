"""spec.access.quota in the route's BackendTrafficPolicy (render/traffic_policy.py): each consumer's quota.

A local rate limit with one rule whose selector is the gateway-set client id header, type Distinct:
each client id gets its own token bucket of spec.access.quota.requests per unit. Local limits count
per Envoy replica (N replicas admit up to N times the quota); a policy holds at most 16 rules, so
per-tier limits would be one rule each (docs/consumers.md). The 429 is rewritten by a response
override (Envoy's own 429s only): Retry-After, the unit in seconds, by when the bucket has refilled
whatever the client's position in it, and a JSON error body. Envoy's x-ratelimit-* headers come on the
admitted responses; the override's reply does not keep them (tried on Envoy 1.39.3 with Envoy
Gateway 1.9.1's translation: a formatted %RESP(x-ratelimit-reset)% comes out empty).
"""

from __future__ import annotations

import json
from typing import Any

import modelplane_contract as contract

from modelplane import spec as specs


def _body(quota: specs.Quota) -> str:
    """The 429's body, in the runtime's error shape."""
    message = (
        f"quota exceeded: {quota.requests} requests per {quota.unit.lower()} for each consumer; "
        f"retry after {quota.unit_seconds} s"
    )
    return json.dumps({"error": message})


def rate_limit(quota: specs.Quota) -> dict[str, Any]:
    """The policy's fields for QUOTA: the limit and the override of its 429."""
    return {
        "rateLimit": {
            "type": "Local",
            "local": {
                "rules": [
                    {
                        "clientSelectors": [
                            {"headers": [{"name": contract.CONSUMER_HEADER, "type": "Distinct"}]}
                        ],
                        "limit": {"requests": quota.requests, "unit": quota.unit},
                    }
                ]
            },
        },
        "responseOverride": [
            {
                "match": {"statusCodes": [{"type": "Value", "value": 429}]},
                "source": "Local",
                "response": {
                    "contentType": "application/json",
                    "body": {"type": "Inline", "inline": _body(quota)},
                    "header": {"set": [{"name": "Retry-After", "value": str(quota.unit_seconds)}]},
                },
            }
        ],
    }
