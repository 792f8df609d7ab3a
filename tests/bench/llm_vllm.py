"""`make bench-llm-vllm`: vLLM through a ModelDeployment against vLLM started directly (issue 12).

Both serve the tiny random llama of the e2e (tests/runtime/llm_models.py, written here, the same
seed) from the same runtime-vllm image with the same vLLM arguments, environment and resources:

- the deployment: a ModelDeployment with `engine: vllm` in the local cluster, its model uploaded to
  the S3 server and fetched by our pull init container, asked through its Service's ClusterIP;
- direct: a plain pod with a copy of that Deployment's model-server container (the operator's
  render: command line, environment, resources, security context, mounts), the same files mounted
  read-only from this host (hostPath), no init container, none of the ModelDeployment's labels (no
  Service, NetworkPolicy or operator selects it), asked at the pod's own address.

Both are up together; every level is measured in ROUNDS rounds, the two servers taking turns (the
order swapped each round), so that the load other work puts on this shared machine falls on both
alike. Workloads are the short chats of `make bench-llm` (its document prompt does not fit the tiny
model's 256-token context), at temperature 0 with a fixed max_tokens; the tiny model never emits its
end token, so every answer is max_tokens long. The client runs on this host (pinned to CPU LOAD_CPU),
every thread of both pods on CPU SERVER_CPU (machine.pin_pod). Loopback and the cluster's own
addresses only. Needs the cluster, the S3 server, the host operator and the runtime-vllm image in
the node (the make target sees to them).

    python -m tests.bench.llm_vllm --work-dir DIR [--results FILE] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import os
import platform
import shutil
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import modelplane_contract as contract
from modelplane.render.vllm import HEALTH_PATH
from modelplane_runtime.storage.digest import directory_digest

from tests.bench import harness, llm_stats, machine
from tests.bench.harness import with_notes
from tests.bench.llm import CONCURRENCIES, WORKLOADS, Workload, completion_text, requests_at, run_level
from tests.bench.llm_stats import VLLM_DEPLOYMENT, VLLM_DIRECT, LevelResult, RequestTiming
from tests.bench.runtime import LOAD_CPU, SERVER_CPU
from tests.runtime.llm_models import write_tiny_transformers_llama
from tests.support.cluster import Cluster, make_print
from tests.support.examples import CREDENTIALS_SECRET, credentials_secret
from tests.support.modeldeployments import children, model_deployment, service_url, wait_ready, wait_service
from tests.support.s3 import start_s3

NAME = "tiny"
DEPLOYMENT = "vllm"
DIRECT = "vllm-direct"
PREFIX = "bench/llm-vllm/tiny-llama/"
CONTEXT_LENGTH = 256
MAX_SEQUENCES = 16  # the highest concurrency measured
SHORT_WORKLOADS = tuple(w for w in WORKLOADS if not w.long_prompt)
# Two pods on a 2-CPU node beside the cluster's own: half a CPU requested each (the same for both).
RESOURCES = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "6Gi"}}
READY_TIMEOUT_S = 900


def vllm_model_deployment(uri: str, digest: str, threads: int) -> dict[str, Any]:
    return model_deployment(
        DEPLOYMENT,
        {
            "model": {
                "uri": uri,
                "format": "huggingface",
                "digest": digest,
                "credentialsSecret": CREDENTIALS_SECRET,
                "name": NAME,
            },
            "runtime": {
                "llm": {
                    "engine": "vllm",
                    "contextLength": CONTEXT_LENGTH,
                    "maxSequences": MAX_SEQUENCES,
                    "threads": threads,
                },
                "args": ["--dtype", "float32"],  # the checkpoint's own precision (else bf16 on CPU)
                "resources": RESOURCES,
            },
        },
    )


def direct_pod(deployment: dict[str, Any], name: str, model_dir: Path) -> dict[str, Any]:
    """vLLM started directly: DEPLOYMENT's model-server container as rendered, alone in a pod NAME,
    serving MODEL_DIR from this host. Only its startup and liveness probes and its preStop sleep go
    (the operator's warm-up gate and drain; the bench warms both servers up itself); readiness stays
    on vLLM's /health."""
    template = deployment["spec"]["template"]["spec"]
    [server] = [c for c in template["containers"] if c["name"] == contract.SERVER_CONTAINER_NAME]
    container = {
        key: value
        for key, value in copy.deepcopy(server).items()
        if key not in {"startupProbe", "livenessProbe", "lifecycle"}
    }
    model_volume = {
        "name": contract.MODEL_VOLUME_NAME,
        "hostPath": {"path": str(model_dir), "type": "Directory"},
    }
    volumes = [
        model_volume if volume["name"] == contract.MODEL_VOLUME_NAME else copy.deepcopy(volume)
        for volume in template["volumes"]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": copy.deepcopy(template.get("securityContext") or {}),
            "containers": [container],
            "volumes": volumes,
        },
    }


def first_index(workload: Workload, concurrency: int, round_: int) -> int:
    """Where a level's prompt numbers start: the same prompts for both servers in one round, other
    prompts in the next round (no server answers a repeated prompt from its prefix cache)."""
    return 10_000 * round_ + 1000 * WORKLOADS.index(workload) + 100 * CONCURRENCIES.index(concurrency)


def turns(labels: Sequence[str], round_: int) -> list[str]:
    """The order the servers take their turn in a round: swapped every other round."""
    return list(labels) if round_ % 2 == 0 else list(reversed(labels))


class VllmBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster = Cluster(kubeconfig=Path(make_print("kubeconfig")), bin_dir=Path(make_print("bin-dir")))
        self.namespace = f"bench-llm-vllm-{uuid.uuid4().hex[:5]}"
        self.urls: dict[str, str] = {}
        self.results: list[LevelResult] = []
        self.answers: dict[str, str] = {}
        self.image = ""

    def set_up(self) -> None:
        s3 = start_s3()
        model_dir = self.args.work_dir / "tiny-llama"
        shutil.rmtree(model_dir, ignore_errors=True)
        write_tiny_transformers_llama(model_dir)
        # Read by the pod's non-root user through the hostPath (safetensors writes its file 0600).
        model_dir.chmod(0o755)
        for path in sorted(model_dir.iterdir()):
            path.chmod(0o644)
            s3.upload(PREFIX + path.name, path.read_bytes())
        uri = f"s3://{s3.bucket}/{PREFIX}"
        self.cluster.kubectl("create", "namespace", self.namespace)
        self.cluster.wait("serviceaccount/default", "create", namespace=self.namespace, timeout=60)
        md = vllm_model_deployment(uri, directory_digest(model_dir), self.args.threads)
        self.cluster.apply([credentials_secret(s3), md], self.namespace)
        wait_ready(self.cluster, self.namespace, DEPLOYMENT, timeout=READY_TIMEOUT_S)
        wait_service(self.cluster, self.namespace, DEPLOYMENT, path=HEALTH_PATH)
        self.urls[VLLM_DEPLOYMENT] = service_url(self.cluster, self.namespace, DEPLOYMENT)
        deployment = self.cluster.get("deployment", DEPLOYMENT, self.namespace)
        self.cluster.apply(direct_pod(deployment, DIRECT, model_dir.resolve()), self.namespace)
        self.cluster.wait(f"pod/{DIRECT}", "condition=Ready", self.namespace, timeout=READY_TIMEOUT_S)
        pod = self.cluster.get("pod", DIRECT, self.namespace)
        self.urls[VLLM_DIRECT] = f"http://{pod['status']['podIP']}:{contract.HTTP_PORT}"
        [container] = pod["spec"]["containers"]
        self.image = container["image"]
        self.pin_servers()

    def pin_servers(self) -> None:
        """Both servers' processes on SERVER_CPU (they take turns, so one runs at a time), as make
        bench-llm pins its host servers: the pods' own unpinned scheduling made the ratios scatter."""
        [model_pod] = children(self.cluster, self.namespace, DEPLOYMENT, "pod")
        direct = self.cluster.get("pod", DIRECT, self.namespace)
        for label, pod in ((VLLM_DEPLOYMENT, model_pod), (VLLM_DIRECT, direct)):
            threads = machine.pin_pod(pod["metadata"]["uid"], int(SERVER_CPU))
            if not threads:
                raise RuntimeError(f"no process of {label}'s pod found on this host to pin")
            print(f"{label}: {threads} threads pinned to CPU {SERVER_CPU}", flush=True)

    def url(self, server: str) -> str:
        return self.urls[server] + "/v1/chat/completions"

    def level(self, workload: Workload, concurrency: int) -> None:
        rounds: dict[str, list[list[RequestTiming]]] = {server: [] for server in self.urls}
        count = requests_at(concurrency, self.args.requests_per_client)
        for round_ in range(self.args.rounds):
            first = first_index(workload, concurrency, round_)
            for server in turns(list(self.urls), round_):
                timings = asyncio.run(
                    run_level(self.url(server), workload, concurrency, count, first, 600, model=NAME)
                )
                rounds[server].append(timings)
                for timing in timings:
                    if timing.error:
                        print(f"  {server} error: {timing.error}", file=sys.stderr, flush=True)
        for server, measured in rounds.items():
            result = llm_stats.summarize_rounds(workload.label, server, concurrency, measured)
            self.results.append(result)
            print(llm_stats.markdown_table([result]).splitlines()[-1], flush=True)

    def run(self) -> None:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        self.set_up()
        for server, base in self.urls.items():
            self.answers[server] = completion_text(base, "The quick brown fox", model=NAME)
        for workload in SHORT_WORKLOADS:
            for server in self.urls:  # warm-up, not measured
                asyncio.run(run_level(self.url(server), workload, 1, 2, 50_000, 120, model=NAME))
            for concurrency in self.args.concurrency:
                self.level(workload, concurrency)

    def tear_down(self) -> None:
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)

    def report(self) -> str:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            "# make bench-llm-vllm",
            "",
            (
                f"Run {now} on commit {machine.git_commit()}, {machine.cpu_model()}, {os.cpu_count()} "
                f"CPUs, Python {platform.python_version()}, load average at the end {machine.load_average()}."
            ),
            "",
            (
                "vLLM through a ModelDeployment (engine vllm, model pulled from the S3 server by our pull, "
                "asked through its Service's ClusterIP) against vLLM started directly (a plain pod with "
                "the same image and a copy of the Deployment's model-server container, the same files "
                "mounted from the host, asked at the pod's address). See tests/bench/llm_vllm.py."
            ),
            "",
            (
                f"Model: the tiny random llama of the e2e (2 layers, hidden 64, float32). Image "
                f"`{self.image}`. vLLM: `--max-model-len {CONTEXT_LENGTH} --max-num-seqs {MAX_SEQUENCES} "
                f"--enforce-eager --dtype float32`, {self.args.threads} OpenMP thread(s), 1 GiB KV cache, "
                f"requests cpu {RESOURCES['requests']['cpu']} / memory {RESOURCES['requests']['memory']}, "
                f"limit memory {RESOURCES['limits']['memory']} (both pods), every thread of both pods pinned "
                f"to CPU {SERVER_CPU}; the client (httpx, asyncio) on CPU {LOAD_CPU}. Temperature 0, a "
                f"distinct prompt per request; "
                f"{self.args.requests_per_client:g} request(s) per client per round (at least 4), "
                f"{self.args.rounds} rounds per level, the two servers taking turns, the order swapped "
                f"each round."
            ),
            "",
            (
                "tokens/s: completion tokens over the summed wall time of the level's rounds (first "
                "request sent to last answer read, per round). TTFT: request sent to the first text "
                "chunk; ITL: between text chunks; streamed workloads only. Percentiles are nearest-rank "
                "over all the level's requests."
            ),
            "",
            llm_stats.markdown_table(self.results),
            "",
            "## Ratios (ModelDeployment / direct, issue 12's target: within 5%)",
            "",
        ]
        for workload in SHORT_WORKLOADS:
            lines += harness.ratio_lines(llm_stats.vllm_ratios(self.results, workload.label))
        lines += ["", "## Same answer", ""]
        lines += [f"- {name}: `The quick brown fox` -> {text!r}" for name, text in self.answers.items()]
        if len(set(self.answers.values())) == 1 and len(self.answers) > 1:
            lines.append("- Both gave the same greedy completion.")
        return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, help="write the markdown table here (its notes kept)")
    parser.add_argument("--threads", type=int, default=1, help="spec.runtime.llm.threads")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), choices=CONCURRENCIES
    )
    parser.add_argument("--requests-per-client", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    bench = VllmBench(args)
    try:
        bench.run()
    finally:
        bench.tear_down()
    report = bench.report()
    print(report)
    if args.results:
        previous = args.results.read_text() if args.results.exists() else ""
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(with_notes(report, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
