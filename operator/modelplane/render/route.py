"""The HTTPRoute that exposes a model through the Gateway spec.gateway names, and the address a client
outside the cluster calls it by.

Without spec.gateway.hostname, REST is matched by the path prefix /NAMESPACE/NAME, which the route strips
before the request reaches the model (a client calls /NAMESPACE/NAME/v2/models/NAME/infer); gRPC paths
carry no model name, so gRPC calls carry the header ``modelplane-model: NAMESPACE/NAME``. With a hostname,
the route matches that host only, and every path of it is the model's. Either way a gRPC call (its
content-type is application/grpc) goes to the Service's gRPC port, which says h2c (appProtocol), the rest
to its HTTP port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render.common import CANARY, SHADOW, STABLE, Manifest, metadata, service_name, stamp

GATEWAY_API: Final = "gateway.networking.k8s.io"
GATEWAY_API_VERSION: Final = f"{GATEWAY_API}/v1"
MODEL_HEADER: Final = "modelplane-model"
GRPC_CONTENT_TYPE: Final = r"^application/grpc(\+[a-z]+)?$"
H2C: Final = "kubernetes.io/h2c"
# The runtime bounds every request (and stream) by spec.runtime.requestTimeoutSeconds and answers the
# timeout itself; the route allows a little more, so the client gets the runtime's answer, not Envoy's.
TIMEOUT_MARGIN_SECONDS: Final = 5
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def path_prefix(md: specs.ModelDeployment) -> str:
    return f"/{md.namespace}/{md.name}"


def route_timeout_seconds(md: specs.ModelDeployment) -> int:
    """The runtime's own bound and a margin; a model that scales to zero adds the time a request may be
    held while a pod starts (the Gateway retries the connection until then: render/traffic_policy.py)."""
    seconds = md.runtime.request_timeout_seconds + TIMEOUT_MARGIN_SECONDS
    if md.autoscaling is not None and md.scales_to_zero:
        seconds += md.autoscaling.cold_start_timeout_seconds
    return seconds


def http_route(md: specs.ModelDeployment, canary_ready: bool = False) -> Manifest:
    """With a canary that is Ready, requests split by weight between the tracks' own Services, exactly
    spec.rollout.canary.trafficPercent of them to the canary, whatever the pod counts; before that,
    everything goes to the stable track."""
    assert md.gateway is not None
    gateway = md.gateway
    parent: dict[str, Any] = {
        "group": GATEWAY_API,
        "kind": "Gateway",
        "namespace": gateway.namespace,
        "name": gateway.name,
    }
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    timeouts = {"request": f"{route_timeout_seconds(md)}s"}
    rules: list[dict[str, Any]] = []
    if contract.PROTOCOL_GRPC in md.runtime.protocols:
        headers = [{"type": "RegularExpression", "name": "content-type", "value": GRPC_CONTENT_TYPE}]
        if not gateway.hostname:
            headers.append({"type": "Exact", "name": MODEL_HEADER, "value": f"{md.namespace}/{md.name}"})
        rules.append(
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": headers}],
                "backendRefs": _backends(md, contract.GRPC_PORT, canary_ready),
                "timeouts": dict(timeouts),
                **_mirror(md, contract.GRPC_PORT, []),
            }
        )
    rest: dict[str, Any] = {"backendRefs": _backends(md, 80, canary_ready), "timeouts": dict(timeouts)}
    if gateway.hostname:
        rest["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    else:
        rest["matches"] = [{"path": {"type": "PathPrefix", "value": path_prefix(md)}}]
        rest["filters"] = [
            {
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }
        ]
    rest.update(_mirror(md, 80, rest.get("filters", [])))
    rules.append(rest)
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules}
    if gateway.hostname:
        spec["hostnames"] = [gateway.hostname]
    return stamp(
        {
            "apiVersion": GATEWAY_API_VERSION,
            "kind": "HTTPRoute",
            "metadata": metadata(md, md.name),
            "spec": spec,
        }
    )


def _backends(md: specs.ModelDeployment, port: int, canary_ready: bool) -> list[dict[str, Any]]:
    if md.canary is None:
        return [_backend(service_name(md), port, 1)]
    percent = md.canary.traffic_percent if canary_ready else 0
    return [
        _backend(service_name(md, STABLE), port, 100 - percent),
        _backend(service_name(md, CANARY), port, percent),
    ]


def _mirror(md: specs.ModelDeployment, port: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule's filters with a copy of PERCENT of its requests to the shadow's Service (the Gateway
    discards the shadow's answers)."""
    if md.shadow is None:
        return {"filters": filters} if filters else {}
    mirror = {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"kind": "Service", "name": service_name(md, SHADOW), "port": port},
            "percent": md.shadow.percent,
        },
    }
    return {"filters": [*filters, mirror]}


def _backend(service: str, port: int, weight: int) -> dict[str, Any]:
    return {"kind": "Service", "name": service, "port": port, "weight": weight}


@dataclass(frozen=True)
class ExternalUrls:
    http: str
    grpc: str | None  # host:port of gRPC calls (with the modelplane-model header unless by hostname)


def external_urls(md: specs.ModelDeployment, gateway: Mapping[str, Any]) -> ExternalUrls | None:
    """The model's address from outside the cluster: the Gateway's first status address (or the
    model's hostname), the chosen listener's scheme and port, and the path prefix. None while the
    Gateway reports no address."""
    assert md.gateway is not None
    addresses = (gateway.get("status") or {}).get("addresses") or []
    address = next((a.get("value") for a in addresses if a.get("value")), None)
    if not address:
        return None
    listener = _listener(md.gateway, (gateway.get("spec") or {}).get("listeners") or [])
    scheme = "https" if listener.get("protocol") in ("HTTPS", "TLS") else "http"
    port = int(listener.get("port") or DEFAULT_PORTS[scheme])
    host = md.gateway.hostname or (f"[{address}]" if ":" in str(address) else str(address))
    netloc = host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = "" if md.gateway.hostname else path_prefix(md)
    grpc = f"{host}:{port}" if contract.PROTOCOL_GRPC in md.runtime.protocols else None
    return ExternalUrls(http=f"{scheme}://{netloc}{path}", grpc=grpc)


def _listener(gateway: specs.Gateway, listeners: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The listener named by sectionName; without one, the first HTTPS listener, else the first HTTP one
    (the route attaches to all of them; HTTPS is the one to hand out)."""
    if gateway.section_name:
        named = [item for item in listeners if item.get("name") == gateway.section_name]
        return named[0] if named else {}
    for protocol in ("HTTPS", "HTTP"):
        for item in listeners:
            if item.get("protocol") == protocol:
                return item
    return {}


def route_problem(route: Mapping[str, Any] | None, gateway: specs.Gateway) -> tuple[str, str] | None:
    """(reason, message) while the Gateway has not accepted the route or cannot resolve its backends;
    None once both conditions say True for the route's current generation."""
    name = f"{gateway.namespace}/{gateway.name}"
    if route is None:
        return "RoutePending", f"the HTTPRoute for Gateway {name} is being created"
    generation = (route.get("metadata") or {}).get("generation", 0)
    parents = (route.get("status") or {}).get("parents") or []
    for parent in parents:
        ref = parent.get("parentRef") or {}
        if (
            ref.get("name") != gateway.name
            or (ref.get("namespace") or gateway.namespace) != gateway.namespace
        ):
            continue
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind, reason in (("Accepted", "RouteNotAccepted"), ("ResolvedRefs", "RouteRefsNotResolved")):
            cond = conditions.get(kind)
            if cond is None or cond.get("observedGeneration", generation) < generation:
                break
            if cond.get("status") != "True":
                return reason, (
                    f"Gateway {name} reports HTTPRoute {kind}=False ({cond.get('reason')}): "
                    f"{cond.get('message', '')}"
                )
        else:
            return None
    return "RoutePending", f"Gateway {name} has not yet reported on the HTTPRoute (no Accepted condition)"


__all__ = [
    "ExternalUrls",
    "external_urls",
    "http_route",
    "path_prefix",
    "route_problem",
    "route_timeout_seconds",
]
