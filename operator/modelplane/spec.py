"""The typed ModelDeployment: the one reader of raw bodies.

The CRD's schema and CEL rules already reject bad input at apply time; ``parse`` checks again what
the operator relies on, so a body that slipped past (an old CRD, a test) fails with the same kind of
message naming the field rather than with a KeyError deep in a renderer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import modelplane_contract as contract

GROUP: Final = "modelplane.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "modeldeployments"
KIND: Final = "ModelDeployment"
API_VERSION: Final = f"{GROUP}/{VERSION}"

URI_SCHEMES: Final = ("s3://", "gs://", "https://", "http://", "pvc://", "hf://")
# Metrics a language model engine reports under vLLM's names (waiting requests, KV-cache usage).
LLM_AUTOSCALING_METRICS: Final = ("waitingRequests", "kvCacheUsage")
AUTOSCALING_METRICS: Final = ("cpu", "memory", "concurrency", "rps", *LLM_AUTOSCALING_METRICS)
STRATEGIES: Final = ("RollingUpdate", "Canary")
PROTOCOLS: Final = (contract.PROTOCOL_V1, contract.PROTOCOL_V2, contract.PROTOCOL_GRPC)
# The HPA's own default scale-down stabilization window, and KEDA's default cooldownPeriod.
SCALE_DOWN_DELAY_SECONDS: Final = 300
# minReplicas 0: how long the Gateway holds a request while a pod starts from zero, by default.
COLD_START_TIMEOUT_SECONDS: Final = 120
LLM_PROTOCOLS: Final = (contract.PROTOCOL_OPENAI,)
LLM_ENGINE_BUILTIN: Final = "builtin"
LLM_ENGINE_VLLM: Final = "vllm"
# Each engine serves one format: builtin (llama.cpp in the runtime image) GGUF files, vllm (vLLM's own
# OpenAI server in its own image) a transformers model directory, format huggingface.
LLM_ENGINE_FORMATS: Final = {LLM_ENGINE_BUILTIN: "gguf", LLM_ENGINE_VLLM: "huggingface"}
LLM_ENGINES: Final = tuple(LLM_ENGINE_FORMATS)
# The access modes a model cache claim may ask for: the fill Job writes into it, so a read-only mode
# (ReadOnlyMany) cannot be filled; ReadWriteOnce serves the replicas of one node, ReadWriteMany any node.
CACHE_ACCESS_MODES: Final = ("ReadWriteOnce", "ReadWriteMany")
# A Kubernetes quantity of bytes, as a claim's storage request takes it (no exponent forms).
_QUANTITY: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
# Gateway API's own patterns: an object name or listener name (DNS-1123 subdomain), a namespace (DNS-1123
# label), and a route hostname (no wildcard here: status.url names the one host a client calls).
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# spec.access.consumers: consumer (or group) names are DNS labels, so "<consumer>.<key id>" (the client
# id the gateway forwards) splits back into the consumer unambiguously.
CONSUMER_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Envoy Gateway's authorization matches at most 256 header values: two key ids per consumer.
MAX_CONSUMERS: Final = 128
QUOTA_UNITS: Final = ("Second", "Minute", "Hour")
# spec.access (network isolation): label selector operators, and the most namespaces one spec may list.
SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
ACCESS_MAX_NAMESPACES: Final = 64


class SpecError(ValueError):
    """A ModelDeployment the operator cannot act on; the message names the field and the fix."""


@dataclass(frozen=True)
class Gate:
    """The accuracy gate of spec.model.optimize (defaults shared with the runtime)."""

    min_agreement: float = contract.GATE_MIN_AGREEMENT
    max_abs_error: float = contract.GATE_MAX_ABS_ERROR
    max_rel_error: float = contract.GATE_MAX_REL_ERROR


@dataclass(frozen=True)
class Optimize:
    onnx: bool = False
    quantize: str | None = None
    gate: Gate = field(default_factory=Gate)

    def as_json(self) -> str:
        """What the optimize step reads (``contract.ENV_OPTIMIZE``): compact, keys sorted, stable."""
        body: dict[str, Any] = {
            "onnx": self.onnx,
            "quantize": self.quantize,
            "gate": {
                "minAgreement": self.gate.min_agreement,
                "maxAbsError": self.gate.max_abs_error,
                "maxRelError": self.gate.max_rel_error,
            },
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Cache:
    """spec.model.cache: the artifact pulled once per digest into a PersistentVolumeClaim that every
    replica mounts read-only (render/cache.py)."""

    size: str
    storage_class_name: str | None = None  # None: the cluster's default StorageClass
    access_mode: str = CACHE_ACCESS_MODES[0]


@dataclass(frozen=True)
class Model:
    uri: str
    format: str
    digest: str | None = None
    allow_pickle: bool = False
    credentials_secret: str | None = None
    name: str | None = None
    version: str | None = None
    signature: str | None = None  # format tensorflow: the SavedModel signature served
    optimize: Optimize | None = None
    cache: Cache | None = None

    @property
    def pvc(self) -> tuple[str, str] | None:
        """(claim, path) of a pvc://CLAIM/PATH model, else None."""
        if not self.uri.startswith("pvc://"):
            return None
        claim, _, path = self.uri.removeprefix("pvc://").partition("/")
        return claim, path


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 32
    max_latency_ms: int = 5


@dataclass(frozen=True)
class LLM:
    """The language-model engine (spec.runtime.llm): of a gguf model, or of a huggingface one on vLLM."""

    engine: str = LLM_ENGINE_BUILTIN
    context_length: int = 2048
    max_sequences: int = 4
    threads: int = 1


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


@dataclass(frozen=True)
class Runtime:
    image: str | None = None
    protocols: tuple[str, ...] = PROTOCOLS
    batching: Batching | None = None
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()
    requests: Mapping[str, str] | None = None
    limits: Mapping[str, str] | None = None
    gpus: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    request_timeout_seconds: int = 60
    llm: LLM | None = None  # set (defaults applied) exactly when the model is a language model


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    metric: str
    target: int
    # How long the metric must stay low before pods are removed (the HPA's scale-down stabilization
    # window; with KEDA also its cooldownPeriod, the wait before scaling to zero).
    scale_down_delay_seconds: int = SCALE_DOWN_DELAY_SECONDS
    # minReplicas 0: how long a request through the Gateway is held while a pod starts from zero.
    cold_start_timeout_seconds: int = COLD_START_TIMEOUT_SECONDS

    @property
    def uses_keda(self) -> bool:
        return self.metric not in ("cpu", "memory")

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0


@dataclass(frozen=True)
class Canary:
    model: Model
    traffic_percent: int


@dataclass(frozen=True)
class Shadow:
    """A model that gets a mirrored copy of live requests through the Gateway; its answers go nowhere."""

    model: Model
    percent: int = 100


@dataclass(frozen=True)
class Gateway:
    """The Gateway API Gateway the model is reached through from outside the cluster (spec.gateway)."""

    name: str
    namespace: str  # defaulted to the ModelDeployment's namespace
    section_name: str | None = None  # one listener of the Gateway; None: every listener
    hostname: str | None = None  # None: the route matches the path prefix /NAMESPACE/NAME


@dataclass(frozen=True)
class Quota:
    """Requests each consumer may make per unit (one token bucket per consumer, per Envoy replica)."""

    requests: int
    unit: str = "Second"

    @property
    def unit_seconds(self) -> int:
        return {"Second": 1, "Minute": 60, "Hour": 3600}[self.unit]


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; empty selects everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True)
class Access:
    """Who may call the model (spec.access). Through the gateway: the consumers, each within the quota.
    Directly to its pods: the model's NetworkPolicy admits the gateway's Envoy pods, Prometheus and
    what namespaces/pod_selector list. Without spec.access at all it admits the model's own namespace
    instead; with spec.access (consumers alone too) only what is listed, so no key check is bypassed."""

    consumers: tuple[str, ...] = ()  # consumer or group names; empty: no API keys asked for
    quota: Quota | None = None
    # Every pod of these namespaces (narrowed by pod_selector when it is set).
    namespaces: tuple[str, ...] = ()
    # Pods with these labels, in the namespaces above, or in the model's own namespace when none are listed.
    pod_selector: LabelSelector | None = None


@dataclass(frozen=True)
class ModelDeployment:
    name: str
    namespace: str
    uid: str
    generation: int
    model: Model
    runtime: Runtime = field(default_factory=Runtime)
    replicas: int = 1
    autoscaling: Autoscaling | None = None
    strategy: str = "RollingUpdate"
    canary: Canary | None = None
    service_account_name: str | None = None
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    gateway: Gateway | None = None
    shadow: Shadow | None = None
    access: Access | None = None

    @property
    def served_name(self) -> str:
        return self.model.name or self.name

    @property
    def scales_to_zero(self) -> bool:
        """minReplicas 0: idle, no pod runs; the Gateway holds the next request while one starts."""
        return self.autoscaling is not None and self.autoscaling.scales_to_zero

    @property
    def consumers(self) -> tuple[str, ...]:
        """spec.access.consumers: who may call through the gateway; empty: no API keys asked for."""
        return self.access.consumers if self.access is not None else ()

    @property
    def quota(self) -> Quota | None:
        return self.access.quota if self.access is not None else None


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """A ModelDeployment from its raw body (as kopf or the API hands it over), defaults applied."""
    meta = _mapping(body.get("metadata"), "metadata")
    spec = _mapping(body.get("spec"), "spec")
    name = _str(meta.get("name"), "metadata.name", required=True)
    assert name is not None
    rollout = _mapping(spec.get("rollout", {}), "spec.rollout")
    strategy = _str(rollout.get("strategy"), "spec.rollout.strategy") or "RollingUpdate"
    if strategy not in STRATEGIES:
        raise SpecError(f"spec.rollout.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    canary = None
    if "canary" in rollout:
        if strategy != "Canary":
            raise SpecError("spec.rollout.canary is only allowed with spec.rollout.strategy: Canary")
        canary_body = _mapping(rollout["canary"], "spec.rollout.canary")
        percent = _int(canary_body.get("trafficPercent", 10), "spec.rollout.canary.trafficPercent", 0, 100)
        canary = Canary(
            model=_model(canary_body.get("model"), "spec.rollout.canary.model"), traffic_percent=percent
        )
    shadow = None
    if "shadow" in rollout:
        shadow_body = _mapping(rollout["shadow"], "spec.rollout.shadow")
        shadow = Shadow(
            model=_model(shadow_body.get("model"), "spec.rollout.shadow.model"),
            percent=_int(shadow_body.get("percent", 100), "spec.rollout.shadow.percent", 1, 100),
        )
        if spec.get("gateway") is None:
            raise SpecError(
                "spec.rollout.shadow needs spec.gateway: "
                "requests are mirrored to the shadow by the Gateway's route"
            )
    model = _model(spec.get("model"), "spec.model")
    namespace = _str(meta.get("namespace"), "metadata.namespace") or "default"
    runtime_body = _mapping(spec.get("runtime", {}), "spec.runtime")
    language_model = is_language_model(model.format, runtime_body)
    gguf = model.format in contract.LLM_FORMATS
    if canary is not None and (canary.model.format in contract.LLM_FORMATS) != gguf:
        raise SpecError(
            "spec.rollout.canary.model: a canary of a gguf model must be gguf too, and only of one"
        )
    if shadow is not None and (shadow.model.format in contract.LLM_FORMATS) != gguf:
        raise SpecError(
            "spec.rollout.shadow.model: a shadow of a gguf model must be gguf too, and only of one"
        )
    if canary is not None and language_model and canary.model.format != model.format:
        raise SpecError(
            "spec.rollout.canary.model.format: a canary of a language model has the model's format "
            "(one engine serves both tracks)"
        )
    if shadow is not None and language_model and shadow.model.format != model.format:
        raise SpecError(
            "spec.rollout.shadow.model.format: a shadow of a language model has the model's format "
            "(one engine serves both)"
        )
    autoscaling = _autoscaling(spec.get("autoscaling"), language_model)
    if autoscaling is not None and autoscaling.scales_to_zero:
        _check_scale_to_zero(autoscaling, gateway=spec.get("gateway") is not None, canary=canary is not None)
    access = _access(spec.get("access"))
    if access is not None and access.consumers and spec.get("gateway") is None:
        raise SpecError(
            "spec.access.consumers needs spec.gateway: API keys are checked by the Gateway's route"
        )
    return ModelDeployment(
        name=name,
        namespace=namespace,
        uid=_str(meta.get("uid"), "metadata.uid") or "",
        generation=int(meta.get("generation") or 0),
        model=model,
        runtime=_runtime(runtime_body, model.format, language_model),
        replicas=_int(spec.get("replicas", 1), "spec.replicas", 0, 1000),
        autoscaling=autoscaling,
        strategy=strategy,
        canary=canary,
        service_account_name=_str(spec.get("serviceAccountName"), "spec.serviceAccountName"),
        pod_labels=_str_map(spec.get("podLabels"), "spec.podLabels"),
        pod_annotations=_str_map(spec.get("podAnnotations"), "spec.podAnnotations"),
        gateway=_gateway(spec.get("gateway"), namespace),
        shadow=shadow,
        access=access,
    )


def gateway_ref(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the Gateway a raw ModelDeployment names, None if none (or unreadable:
    parse says why). The watches use it to find the ModelDeployments a Gateway's change concerns."""
    try:
        md = parse(body)
    except SpecError:
        return None
    return (md.gateway.namespace, md.gateway.name) if md.gateway else None


def _gateway(raw: Any, namespace: str) -> Gateway | None:
    if raw is None:
        return None
    body = _mapping(raw, "spec.gateway")
    name = _str(body.get("name"), "spec.gateway.name", required=True)
    assert name is not None
    _matches(name, _DNS_SUBDOMAIN, 253, "spec.gateway.name", "a Gateway name (lowercase, digits, '-', '.')")
    gateway_namespace = _str(body.get("namespace"), "spec.gateway.namespace") or namespace
    _matches(gateway_namespace, _DNS_LABEL, 63, "spec.gateway.namespace", "a namespace name")
    section = _str(body.get("sectionName"), "spec.gateway.sectionName")
    if section is not None:
        _matches(section, _DNS_SUBDOMAIN, 253, "spec.gateway.sectionName", "a listener name of the Gateway")
    hostname = _str(body.get("hostname"), "spec.gateway.hostname")
    if hostname is not None:
        _matches(
            hostname,
            _DNS_SUBDOMAIN,
            253,
            "spec.gateway.hostname",
            "a DNS name such as iris.models.example, without '*'",
        )
    return Gateway(name=name, namespace=gateway_namespace, section_name=section, hostname=hostname)


def _matches(value: str, pattern: re.Pattern[str], longest: int, path: str, what: str) -> None:
    if len(value) > longest or not pattern.fullmatch(value):
        raise SpecError(f"{path}: {value!r} is not {what} (at most {longest} characters)")


def is_language_model(model_format: str, runtime: Mapping[str, Any]) -> bool:
    """Served by a language-model engine over the OpenAI API: format gguf always, format huggingface
    when spec.runtime.llm asks for vLLM (otherwise it is a transformers pipeline over v1/v2)."""
    llm = runtime.get("llm")
    engine = llm.get("engine") if isinstance(llm, Mapping) else None
    return model_format in contract.LLM_FORMATS or (
        model_format == LLM_ENGINE_FORMATS[LLM_ENGINE_VLLM] and engine == LLM_ENGINE_VLLM
    )


def _access(raw: Any) -> Access | None:
    if raw is None:
        return None
    body = _mapping(raw, "spec.access")
    consumers: tuple[str, ...] = ()
    if "consumers" in body:
        names = _str_list(body["consumers"], "spec.access.consumers")
        if not 1 <= len(names) <= MAX_CONSUMERS:
            raise SpecError(f"spec.access.consumers must name between 1 and {MAX_CONSUMERS} consumers")
        for index, name in enumerate(names):
            if not CONSUMER_NAME.match(name):
                raise SpecError(
                    f"spec.access.consumers[{index}]: {name[:80]!r} is not a consumer name: lowercase "
                    "letters, digits and '-', starting and ending with a letter or digit, at most 63"
                )
        if len(set(names)) != len(names):
            raise SpecError("spec.access.consumers: each consumer must be named once")
        consumers = tuple(names)
    quota = None
    if body.get("quota") is not None:
        raw_quota = _mapping(body["quota"], "spec.access.quota")
        unit = _str(raw_quota.get("unit"), "spec.access.quota.unit") or "Second"
        if unit not in QUOTA_UNITS:
            raise SpecError(f"spec.access.quota.unit: {unit!r} is not one of {', '.join(QUOTA_UNITS)}")
        if "requests" not in raw_quota:
            raise SpecError("spec.access.quota.requests is required")
        quota = Quota(
            requests=_int(raw_quota["requests"], "spec.access.quota.requests", 1, 1_000_000), unit=unit
        )
        if not consumers:
            raise SpecError(
                "spec.access.quota needs spec.access.consumers: the quota is counted per consumer"
            )
    namespaces = _str_list(body.get("namespaces", []), "spec.access.namespaces")
    for index, namespace in enumerate(namespaces):
        _matches(namespace, _DNS_LABEL, 63, f"spec.access.namespaces[{index}]", "a namespace name")
    if len(set(namespaces)) != len(namespaces):
        raise SpecError("spec.access.namespaces: list each namespace once")
    if len(namespaces) > ACCESS_MAX_NAMESPACES:
        raise SpecError(f"spec.access.namespaces: at most {ACCESS_MAX_NAMESPACES} namespaces")
    selector = body.get("podSelector")
    return Access(
        consumers=consumers,
        quota=quota,
        namespaces=tuple(namespaces),
        pod_selector=None if selector is None else _label_selector(selector, "spec.access.podSelector"),
    )


def _model(raw: Any, path: str) -> Model:
    body = _mapping(raw, path)
    uri = _str(body.get("uri"), f"{path}.uri", required=True)
    assert uri is not None
    if not uri.startswith(URI_SCHEMES):
        raise SpecError(f"{path}.uri: {uri!r} must start with one of {', '.join(URI_SCHEMES)}")
    if uri.startswith("pvc://") and "/" not in uri.removeprefix("pvc://").strip("/"):
        raise SpecError(f"{path}.uri: {uri!r} must be pvc://CLAIM/PATH")
    fmt = _str(body.get("format"), f"{path}.format", required=True)
    if fmt not in contract.FORMATS:
        raise SpecError(f"{path}.format: {fmt!r} is not one of {', '.join(contract.FORMATS)}")
    digest = _str(body.get("digest"), f"{path}.digest")
    if digest is not None and not _is_sha256(digest):
        raise SpecError(f"{path}.digest: must be sha256: followed by 64 lowercase hex digits")
    if digest is not None and uri.startswith("pvc://"):
        raise SpecError(f"{path}.digest cannot be set for a pvc:// model: it is mounted, not pulled")
    signature = _str(body.get("signature"), f"{path}.signature")
    if signature is not None and fmt != "tensorflow":
        raise SpecError(f"{path}.signature applies only to format tensorflow (a SavedModel's signature)")
    if signature is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", signature):
        raise SpecError(
            f"{path}.signature: {signature!r} must be a SavedModel signature name (letters, digits, '_')"
        )
    allow_pickle = body.get("allowPickle", False)
    if not isinstance(allow_pickle, bool):
        raise SpecError(f"{path}.allowPickle: must be true or false")
    assert fmt is not None
    return Model(
        uri=uri,
        format=fmt,
        digest=digest,
        allow_pickle=allow_pickle,
        credentials_secret=_str(body.get("credentialsSecret"), f"{path}.credentialsSecret"),
        name=_str(body.get("name"), f"{path}.name"),
        version=_str(body.get("version"), f"{path}.version"),
        signature=signature,
        optimize=_optimize(body.get("optimize"), f"{path}.optimize", fmt, uri),
        cache=_cache(body.get("cache"), path, uri, digest),
    )


def _cache(raw: Any, path: str, uri: str, digest: str | None) -> Cache | None:
    """spec.model.cache; what it cannot apply to is refused here (and by the CRD's CEL)."""
    if raw is None:
        return None
    body = _mapping(raw, f"{path}.cache")
    if uri.startswith("pvc://"):
        raise SpecError(f"{path}.cache: a pvc:// model is a claim already, mounted as it is: remove it")
    if digest is None:
        raise SpecError(
            f"{path}.cache needs {path}.digest: each digest fills a cache claim of its own; "
            "pin the artifact's sha256"
        )
    size = _str(body.get("size"), f"{path}.cache.size", required=True)
    assert size is not None
    quantity = _QUANTITY.fullmatch(size)
    if quantity is None or float(quantity.group(1)) == 0:
        raise SpecError(
            f"{path}.cache.size: {size!r} is not a storage size such as 2Gi (a number, then Ki, Mi, Gi, Ti, "
            "k, M, G or T): the artifact's size, with room for its unpacked files"
        )
    access_mode = _str(body.get("accessMode"), f"{path}.cache.accessMode") or CACHE_ACCESS_MODES[0]
    if access_mode not in CACHE_ACCESS_MODES:
        raise SpecError(
            f"{path}.cache.accessMode: {access_mode!r} is not one of {', '.join(CACHE_ACCESS_MODES)} "
            "(the fill Job writes into the claim, so ReadOnlyMany cannot be filled)"
        )
    storage_class = _str(body.get("storageClassName"), f"{path}.cache.storageClassName")
    if storage_class is not None:
        _matches(storage_class, _DNS_SUBDOMAIN, 253, f"{path}.cache.storageClassName", "a StorageClass name")
    return Cache(size=size, storage_class_name=storage_class, access_mode=access_mode)


def _optimize(raw: Any, path: str, fmt: str, uri: str) -> Optimize | None:
    """spec.model.optimize; what cannot apply to the format is refused here (and by the CRD's CEL)."""
    if raw is None:
        return None
    body = _mapping(raw, path)
    onnx = body.get("onnx", False)
    if not isinstance(onnx, bool):
        raise SpecError(f"{path}.onnx: must be true or false")
    quantize = _str(body.get("quantize"), f"{path}.quantize")
    if quantize is not None and quantize not in contract.QUANTIZE_MODES:
        raise SpecError(f"{path}.quantize: {quantize!r} is not one of {', '.join(contract.QUANTIZE_MODES)}")
    if not onnx and quantize is None:
        raise SpecError(f"{path} asks for nothing: set onnx: true, quantize: int8, or both")
    if fmt not in contract.OPTIMIZE_ONNX_FORMATS:
        raise SpecError(
            f"{path}: format {fmt} has no ONNX form here (optimization applies to formats "
            f"{', '.join(contract.OPTIMIZE_ONNX_FORMATS)}): remove {path}"
        )
    if onnx and fmt == "onnx":
        raise SpecError(f"{path}.onnx: the model is ONNX already: remove onnx, keep quantize: int8")
    if quantize is not None and not onnx and fmt != "onnx":
        raise SpecError(
            f"{path}.quantize: int8 quantizes an ONNX graph and format {fmt} has none without conversion: "
            f"set {path}.onnx: true"
        )
    if uri.startswith("pvc://"):
        raise SpecError(
            f"{path}: a pvc:// model is mounted read-only, not pulled: optimize needs a pulled model"
        )
    gate = _mapping(body.get("gate", {}), f"{path}.gate")
    return Optimize(
        onnx=onnx,
        quantize=quantize,
        gate=Gate(
            min_agreement=_number(
                gate.get("minAgreement", contract.GATE_MIN_AGREEMENT), f"{path}.gate.minAgreement", 0, 1
            ),
            max_abs_error=_number(
                gate.get("maxAbsError", contract.GATE_MAX_ABS_ERROR), f"{path}.gate.maxAbsError", 0, None
            ),
            max_rel_error=_number(
                gate.get("maxRelError", contract.GATE_MAX_REL_ERROR), f"{path}.gate.maxRelError", 0, None
            ),
        ),
    )


def _runtime(body: Mapping[str, Any], model_format: str, language_model: bool) -> Runtime:
    default = LLM_PROTOCOLS if language_model else PROTOCOLS
    protocols = tuple(_str_list(body.get("protocols", list(default)), "spec.runtime.protocols"))
    known = (*PROTOCOLS, *LLM_PROTOCOLS)
    for protocol in protocols:
        if protocol not in known:
            raise SpecError(f"spec.runtime.protocols: {protocol!r} is not one of {', '.join(known)}")
    llm = (
        _llm(_mapping(body["llm"], "spec.runtime.llm"), model_format) if body.get("llm") is not None else None
    )
    if llm is None and language_model:
        llm = LLM()  # format gguf: the built-in engine with its defaults
    if (set(protocols) == set(LLM_PROTOCOLS)) != language_model:
        raise SpecError(
            "spec.runtime.protocols: a language model (format gguf, or huggingface on engine vllm) serves "
            "only [openai], and openai needs a language model"
        )
    if language_model and body.get("workers", 1) != 1:
        raise SpecError(
            "spec.runtime.workers must be 1 for a language model: its engine is one process that batches "
            "requests itself (raise spec.runtime.llm.maxSequences instead)"
        )
    batching = None
    if body.get("batching") is not None:
        raw = _mapping(body["batching"], "spec.runtime.batching")
        batching = Batching(
            max_batch_size=_int(raw.get("maxBatchSize", 32), "spec.runtime.batching.maxBatchSize", 1, 4096),
            max_latency_ms=_int(raw.get("maxLatencyMs", 5), "spec.runtime.batching.maxLatencyMs", 0, 10000),
        )
    env = []
    for index, item in enumerate(body.get("env") or []):
        entry = _mapping(item, f"spec.runtime.env[{index}]")
        env_name = _str(entry.get("name"), f"spec.runtime.env[{index}].name", required=True)
        assert env_name is not None
        env.append((env_name, _str(entry.get("value"), f"spec.runtime.env[{index}].value") or ""))
    resources = _mapping(body.get("resources", {}), "spec.runtime.resources")
    tolerations = []
    for index, item in enumerate(body.get("tolerations") or []):
        raw = _mapping(item, f"spec.runtime.tolerations[{index}]")
        seconds = raw.get("tolerationSeconds")
        tolerations.append(
            Toleration(
                key=raw.get("key"),
                operator=raw.get("operator"),
                value=raw.get("value"),
                effect=raw.get("effect"),
                toleration_seconds=None if seconds is None else int(seconds),
            )
        )
    return Runtime(
        image=_str(body.get("image"), "spec.runtime.image"),
        protocols=protocols,
        batching=batching,
        workers=_int(body.get("workers", 1), "spec.runtime.workers", 1, 64),
        env=tuple(env),
        args=tuple(_str_list(body.get("args", []), "spec.runtime.args")),
        requests=_quantities(resources.get("requests"), "spec.runtime.resources.requests"),
        limits=_quantities(resources.get("limits"), "spec.runtime.resources.limits"),
        gpus=_int(body.get("gpus", 0), "spec.runtime.gpus", 0, 16),
        node_selector=_str_map(body.get("nodeSelector"), "spec.runtime.nodeSelector"),
        tolerations=tuple(tolerations),
        request_timeout_seconds=_int(
            body.get("requestTimeoutSeconds", 60), "spec.runtime.requestTimeoutSeconds", 1, 3600
        ),
        llm=llm,
    )


def _llm(body: Mapping[str, Any], model_format: str) -> LLM:
    engine = _str(body.get("engine"), "spec.runtime.llm.engine") or LLM_ENGINE_BUILTIN
    if engine not in LLM_ENGINES:
        raise SpecError(f"spec.runtime.llm.engine: {engine!r} is not one of {', '.join(LLM_ENGINES)}")
    if model_format not in LLM_ENGINE_FORMATS.values():
        raise SpecError(
            "spec.runtime.llm applies only to a language model: format gguf (engine builtin) or "
            "huggingface (engine vllm)"
        )
    if LLM_ENGINE_FORMATS[engine] != model_format:
        raise SpecError(
            f"spec.runtime.llm.engine: {engine} serves format {LLM_ENGINE_FORMATS[engine]}, not "
            f"{model_format}: use engine builtin for a gguf file, engine vllm for a huggingface "
            "(transformers) model directory"
        )
    return LLM(
        engine=engine,
        context_length=_int(body.get("contextLength", 2048), "spec.runtime.llm.contextLength", 16, 1048576),
        max_sequences=_int(body.get("maxSequences", 4), "spec.runtime.llm.maxSequences", 1, 256),
        threads=_int(body.get("threads", 1), "spec.runtime.llm.threads", 1, 64),
    )


def _autoscaling(raw: Any, language_model: bool) -> Autoscaling | None:
    if raw is None:
        return None
    body = _mapping(raw, "spec.autoscaling")
    metric = _str(body.get("metric"), "spec.autoscaling.metric") or "cpu"
    if metric not in AUTOSCALING_METRICS:
        raise SpecError(f"spec.autoscaling.metric: {metric!r} is not one of {', '.join(AUTOSCALING_METRICS)}")
    if metric in LLM_AUTOSCALING_METRICS and not language_model:
        raise SpecError(
            "spec.autoscaling.metric: waitingRequests and kvCacheUsage read a language model engine's "
            "metrics and need a language model: format gguf, or huggingface on engine vllm (use "
            "concurrency or rps for other models)"
        )
    if "maxReplicas" not in body:
        raise SpecError("spec.autoscaling.maxReplicas is required")
    min_replicas = _int(body.get("minReplicas", 1), "spec.autoscaling.minReplicas", 0, 1000)
    max_replicas = _int(body["maxReplicas"], "spec.autoscaling.maxReplicas", 1, 1000)
    if min_replicas > max_replicas:
        raise SpecError(
            "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas"
        )
    target = _int(
        body.get("target", 80), "spec.autoscaling.target", 1, 100 if metric == "kvCacheUsage" else 1_000_000
    )
    delay = _int(
        body.get("scaleDownDelaySeconds", SCALE_DOWN_DELAY_SECONDS),
        "spec.autoscaling.scaleDownDelaySeconds",
        0,
        3600,
    )
    cold_start = _int(
        body.get("coldStartTimeoutSeconds", COLD_START_TIMEOUT_SECONDS),
        "spec.autoscaling.coldStartTimeoutSeconds",
        5,
        3600,
    )
    return Autoscaling(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metric=metric,
        target=target,
        scale_down_delay_seconds=delay,
        cold_start_timeout_seconds=cold_start,
    )


# --- spec.access.podSelector: a Kubernetes label selector ------------------------------------------


def _label_selector(raw: Any, path: str) -> LabelSelector:
    body = _mapping(raw, path)
    expressions = []
    for index, item in enumerate(body.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{index}]"
        entry = _mapping(item, where)
        key = _str(entry.get("key"), f"{where}.key", required=True)
        operator = _str(entry.get("operator"), f"{where}.operator", required=True)
        assert key is not None
        assert operator is not None
        if operator not in SELECTOR_OPERATORS:
            raise SpecError(f"{where}.operator: {operator!r} is not one of {', '.join(SELECTOR_OPERATORS)}")
        values = tuple(_str_list(entry.get("values", []), f"{where}.values"))
        if operator in ("In", "NotIn") and not values:
            raise SpecError(f"{where}.values: operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SpecError(f"{where}.values must be empty with operator {operator}")
        expressions.append(LabelSelectorRequirement(key=key, operator=operator, values=values))
    return LabelSelector(
        match_labels=_str_map(body.get("matchLabels"), f"{path}.matchLabels"),
        match_expressions=tuple(expressions),
    )


def _check_scale_to_zero(autoscaling: Autoscaling, *, gateway: bool, canary: bool) -> None:
    """minReplicas 0 wakes up only through the Gateway: it holds a request (retrying the connection)
    while KEDA, reading the Gateway's per-route metrics, starts a pod. Without one nothing would."""
    if not gateway or not autoscaling.uses_keda:
        raise SpecError(
            "spec.autoscaling.minReplicas 0 (scale to zero) needs spec.gateway and a KEDA metric "
            "(concurrency, rps, waitingRequests or kvCacheUsage): at zero pods the Service refuses "
            "requests and only the Gateway holds one while a pod starts; set minReplicas to 1 or name a "
            "Gateway"
        )
    if canary:
        raise SpecError(
            "spec.autoscaling.minReplicas 0 (scale to zero) cannot be combined with spec.rollout.canary: "
            "a canary is compared against running stable pods; set minReplicas to 1 while the canary runs"
        )


def _is_sha256(text: str) -> bool:
    hexpart = text.removeprefix("sha256:")
    return text.startswith("sha256:") and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        raise SpecError(f"{path} is required")
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path} must be an object")
    return raw


def _str(raw: Any, path: str, *, required: bool = False) -> str | None:
    if raw is None or raw == "":
        if required:
            raise SpecError(f"{path} is required")
        return None
    if not isinstance(raw, str):
        raise SpecError(f"{path} must be a string")
    return raw


def _int(raw: Any, path: str, lowest: int, highest: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{path} must be an integer")
    if not lowest <= raw <= highest:
        raise SpecError(f"{path} must be between {lowest} and {highest}, not {raw}")
    return raw


def _number(raw: Any, path: str, lowest: float, highest: float | None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SpecError(f"{path} must be a number")
    if raw < lowest or (highest is not None and raw > highest):
        bounds = f"between {lowest:g} and {highest:g}" if highest is not None else f"{lowest:g} or more"
        raise SpecError(f"{path} must be {bounds}, not {raw}")
    return float(raw)


def _str_list(raw: Any, path: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise SpecError(f"{path} must be a list of strings")
    return raw


def _str_map(raw: Any, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    body = _mapping(raw, path)
    if not all(isinstance(value, str) for value in body.values()):
        raise SpecError(f"{path} values must be strings")
    return dict(body)


def _quantities(raw: Any, path: str) -> dict[str, str] | None:
    if raw is None:
        return None
    body = _mapping(raw, path)
    return {key: str(value) for key, value in body.items()}
