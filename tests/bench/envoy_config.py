"""Envoy Gateway's own translation (``egctl x translate --to xds``) as one static Envoy bootstrap.

Envoy Gateway pushes its listeners, routes, clusters and endpoints to Envoy over xDS; a host
process without the controller gets the same resources inline instead. Pure, so that
tests/bench/test_envoy_config.py checks it cheaply; tests/bench/gateway.py runs egctl and Envoy.

What changes on the way, and nothing else: the xDS sources (ADS to the controller) are replaced by
the resources themselves (the route configuration inlined into its listener, each endpoint
assignment into its cluster, which becomes STATIC); the listeners bind to loopback ports of the
benchmark's choosing; the endpoints' Service ports are mapped to the local server's ports (the
Service's address is loopback already); the bootstrap keeps Envoy Gateway's admin, stats,
overload-manager and runtime settings but drops what talks to the controller or to Prometheus
(the xDS cluster, the local-cluster EDS entry, the stats and readiness listeners, which no request
of the benchmark passes).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

TYPE_PREFIX = "type.googleapis.com/envoy.admin.v3."
# The bootstrap's parts that speak to the controller or serve Prometheus; the benchmark has neither.
CONTROLLER_CLUSTERS = frozenset({"xds_cluster", "local_cluster", "prometheus_stats"})
# Envoy Gateway's own listeners beside the Gateway's (readiness, Prometheus stats).
OWN_LISTENER_PREFIXES = ("envoy-gateway-proxy-",)


class TranslationError(ValueError):
    """egctl's output is not the shape this conversion knows."""


def configs_of(translated: Mapping[str, Any], gateway: str) -> dict[str, Any]:
    """The config dumps egctl printed for GATEWAY ("namespace/name"), by type (BootstrapConfigDump, ...)."""
    try:
        dumps = translated["xds"][gateway]["configs"]
    except (KeyError, TypeError) as error:
        raise TranslationError(f"no xds configs for {gateway} in egctl's output") from error
    return {dump["@type"].removeprefix(TYPE_PREFIX): dump for dump in dumps}


def static_bootstrap(
    translated: Mapping[str, Any],
    gateway: str,
    *,
    admin_port: int,
    listener_ports: Mapping[str, int],
    upstream_ports: Mapping[int, int],
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """An Envoy bootstrap serving what Envoy Gateway translated for GATEWAY, with no control plane.

    LISTENER_PORTS: the Gateway's listener name (``namespace/gateway/listener``) -> the loopback port
    to bind; every other listener of the Gateway is dropped. UPSTREAM_PORTS: the Service port an
    endpoint names -> the port the local server listens on.
    """
    configs = configs_of(translated, gateway)
    try:
        bootstrap: dict[str, Any] = copy.deepcopy(configs["BootstrapConfigDump"]["bootstrap"])
        routes = {
            entry["routeConfig"]["name"]: entry["routeConfig"]
            for entry in configs["RoutesConfigDump"].get("dynamicRouteConfigs", [])
        }
        endpoints = {
            entry["endpointConfig"]["clusterName"]: entry["endpointConfig"]
            for entry in configs["EndpointsConfigDump"].get("dynamicEndpointConfigs", [])
        }
        listeners = [
            entry["activeState"]["listener"] for entry in configs["ListenersConfigDump"]["dynamicListeners"]
        ]
        clusters = [entry["cluster"] for entry in configs["ClustersConfigDump"]["dynamicActiveClusters"]]
    except KeyError as error:
        raise TranslationError(f"egctl's output lacks {error}") from error

    static_listeners = []
    for translated_listener in listeners:
        name = translated_listener["name"]
        if name.startswith(OWN_LISTENER_PREFIXES):
            continue
        if name not in listener_ports:
            raise TranslationError(f"no port given for the listener {name}")
        listener = _untyped(copy.deepcopy(translated_listener))
        listener["address"] = _address(host, listener_ports[name])
        _inline_routes(listener, routes)
        static_listeners.append(listener)
    missing = set(listener_ports) - {listener["name"] for listener in static_listeners}
    if missing:
        raise TranslationError(f"egctl translated no listener {sorted(missing)}")

    static_clusters = []
    for translated_cluster in clusters:
        cluster = _untyped(copy.deepcopy(translated_cluster))
        assignment = endpoints.get(cluster["name"])
        if cluster.get("type") == "EDS":
            if assignment is None:
                raise TranslationError(f"no endpoints for the cluster {cluster['name']}")
            cluster.pop("edsClusterConfig", None)
            cluster["type"] = "STATIC"
            cluster["loadAssignment"] = _local_assignment(_untyped(copy.deepcopy(assignment)), upstream_ports)
        static_clusters.append(cluster)

    bootstrap.pop("dynamicResources", None)
    bootstrap.get("clusterManager", {}).pop("localClusterName", None)
    bootstrap["admin"]["address"] = _address(host, admin_port)
    kept = bootstrap.get("staticResources", {})
    own_clusters = [c for c in kept.get("clusters", []) if c["name"] not in CONTROLLER_CLUSTERS]
    bootstrap["staticResources"] = {"listeners": static_listeners, "clusters": own_clusters + static_clusters}
    return bootstrap


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socketAddress": {"address": host, "portValue": port}}


def _untyped(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource as it sits inside a bootstrap: without the config dump's ``@type``."""
    resource.pop("@type", None)
    return resource


def _inline_routes(node: Any, routes: Mapping[str, Any]) -> None:
    """Every ``rds`` reference under NODE replaced by the route configuration it names."""
    if isinstance(node, dict):
        if isinstance(node.get("rds"), dict):
            name = node.pop("rds")["routeConfigName"]
            if name not in routes:
                raise TranslationError(
                    f"the listener refers to the route configuration {name}, not translated"
                )
            node["routeConfig"] = _untyped(copy.deepcopy(routes[name]))
        for value in node.values():
            _inline_routes(value, routes)
    elif isinstance(node, list):
        for value in node:
            _inline_routes(value, routes)


def _local_assignment(assignment: dict[str, Any], upstream_ports: Mapping[int, int]) -> dict[str, Any]:
    for locality in assignment.get("endpoints", []):
        for lb_endpoint in locality.get("lbEndpoints", []):
            socket = lb_endpoint["endpoint"]["address"]["socketAddress"]
            port = int(socket["portValue"])
            if port not in upstream_ports:
                raise TranslationError(f"no local port for the Service port {port}")
            socket["portValue"] = upstream_ports[port]
    return assignment
