"""Services: the shared one over both tracks, and one per track for direct access."""

from __future__ import annotations

from typing import Any

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render.common import Manifest, metadata, selector, service_name, stamp, track_name
from modelplane.render.route import H2C


def service(md: specs.ModelDeployment, track: str | None = None) -> Manifest:
    """``track`` None: the shared Service, selecting every Ready pod of both tracks."""
    name = service_name(md, track)
    ports: list[dict[str, Any]] = [
        {
            "name": contract.HTTP_PORT_NAME,
            "port": 80,
            "targetPort": contract.HTTP_PORT_NAME,
            "protocol": "TCP",
        }
    ]
    if contract.PROTOCOL_GRPC in md.runtime.protocols:
        grpc: dict[str, Any] = {
            "name": contract.GRPC_PORT_NAME,
            "port": contract.GRPC_PORT,
            "targetPort": contract.GRPC_PORT_NAME,
            "protocol": "TCP",
        }
        if md.gateway is not None:
            # The Gateway's proxy speaks HTTP/1.1 to a backend unless the port says HTTP/2 (cleartext).
            grpc["appProtocol"] = H2C
        ports.append(grpc)
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(md, name, track),
            "spec": {"type": "ClusterIP", "selector": selector(md, track), "ports": ports},
        }
    )


def urls(md: specs.ModelDeployment, cluster_domain: str) -> tuple[str, str | None]:
    """The in-cluster HTTP URL and gRPC address of the shared Service."""
    host = f"{md.name}.{md.namespace}.svc.{cluster_domain}"
    grpc = f"{host}:{contract.GRPC_PORT}" if contract.PROTOCOL_GRPC in md.runtime.protocols else None
    return f"http://{host}", grpc


__all__ = ["service", "track_name", "urls"]
