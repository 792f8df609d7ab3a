"""The operator at scale: COUNT ModelDeployments of REPLICAS pods each, on KWOK's fake nodes.

Run under the cluster lock: `make bench-operator` (BENCH_OPERATOR_ARGS="--count 20" for a short run).
What it does, in order:
- raises the controller-manager's and the scheduler's client rate limits (`make cluster-up
  CONTROLLER_MANAGER_QPS=... SCHEDULER_QPS=...`, as large clusters do: they, not the operator, create
  the pods), starts KWOK's controller with fake nodes beside the real one (`make kwok`; tainted, so
  only the benchmark's pods, which tolerate and select them through spec.runtime.tolerations and
  nodeSelector, go there; KWOK marks them Running and Ready), stops the node add-ons that would run
  on worker nodes (STOPPED_ADD_ONS; make e2e-prerequisites starts them again), and restarts the host
  operator so that its peak RSS and CPU time are this run's;
- creates the COUNT ModelDeployments at once (examples/sklearn-s3.yaml's, with REPLICAS replicas)
  in a namespace of its own, and times, from the first create: the operator's side (every one has a
  status written for its generation, observedGeneration == generation, after its children were
  applied: the operator writes status only after its applies succeeded) and every one Ready=True
  (which waits on the controller-manager, the scheduler and KWOK too); then waits until the operator
  made no request for QUIET_SECONDS;
- counts, from the audit log (every request of the operator's identity is logged), the operator's API
  requests per ModelDeployment in that phase; its peak RSS (VmHWM) and CPU seconds (/proc);
- counts every write (any identity) to the ModelDeployments and their children in a quiet minute
  (--steady-seconds), kopf's peering and all Leases apart;
- restarts the operator with the COUNT in place and times until it has reconciled every one with its
  work queue empty (its own metrics), and counts the writes it made doing so;
- then, with the operator stopped, applies the same children (rendered by the operator's renderer,
  without owner) in a second namespace with a plain client of --floor-clients threads, and times
  until every one is written and every Deployment available: the floor the operator is measured
  against (what the API server, controller-manager, scheduler and KWOK take on this machine);
- deletes everything it made (the namespaces, then the fake nodes and KWOK's controller) and puts the
  rate limits back (`make cluster-up` with the defaults), also when it fails.
Results: tests/bench/results/operator.md (with the load averages before and after: durations depend on them).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from modelplane import children, render, spec
from modelplane.config import Config
from modelplane.kube import Kube
from modelplane.render.common import LABEL_MANAGED_BY

from tests.bench.harness import with_notes
from tests.bench.machine import cpu_model, git_commit, load_average, standing
from tests.bench.operator_requests import RESULTS, AuditLog, count_requests, operator_entry
from tests.support.cluster import Cluster, make, make_print
from tests.support.examples import example
from tests.support.modeldeployments import API_VERSION

QUIET_SECONDS = 15.0  # no request of the operator (but kopf's peering) for this long: it is done
CHILD_RESOURCES = frozenset(row.plural for row in children.applied_kinds())  # the operator's children
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
REFUSALS = frozenset({"InvalidSpec", "ApplyFailed"})  # a status for the generation that applied nothing
HEARTBEATS = frozenset({"leases", "kopfpeerings", "clusterkopfpeerings"})
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}
KWOK_NODE_SELECTOR = {"type": "kwok"}
# Stopped for the bench (make e2e-prerequisites starts them again): kube-router's NetworkPolicy firewall,
# KEDA and its Prometheus.
STOPPED_ADD_ONS = ("network-policy-down", "keda-down")

# Pure pieces (tests/bench/test_operator.py).


def bench_documents(count: int, replicas: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """examples/sklearn-s3.yaml's Secret and COUNT copies of its ModelDeployment (md-0000, ...), each
    with REPLICAS replicas, tolerating and selecting the fake nodes. Their pods never run a server."""
    docs = example("sklearn-s3.yaml")
    secret = next(d for d in docs if d["kind"] == "Secret")
    template = next(d for d in docs if d["kind"] == "ModelDeployment")
    mds = []
    for index in range(count):
        md = json.loads(json.dumps(template))
        md["metadata"] = {"name": f"md-{index:04d}"}
        md["spec"]["replicas"] = replicas
        runtime = md["spec"].setdefault("runtime", {})
        runtime["nodeSelector"] = dict(KWOK_NODE_SELECTOR)
        runtime["tolerations"] = [dict(KWOK_TAINT)]
        mds.append(md)
    return secret, mds


def floor_manifests(mds: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The children the operator would apply for MDS, as a plain client applies them for the floor:
    rendered by the operator's own renderer, without the owner reference (no ModelDeployment owns
    them: the garbage collector would delete them) nor our labels (the operator must not see them)."""
    settings = Config.from_env().render
    found = []
    for md in mds:
        body = json.loads(json.dumps(md))
        body["metadata"] |= {"namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"}
        for rendered in render.children(spec.parse(body), settings):
            manifest = json.loads(json.dumps(rendered))
            meta = manifest["metadata"]
            meta.pop("ownerReferences", None)
            meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k != LABEL_MANAGED_BY}
            found.append(manifest)
    return found


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


def handled(md: Mapping[str, Any]) -> bool:
    """The operator wrote a status for the current generation after applying its children."""
    status = md.get("status") or {}
    return status.get("observedGeneration") == md["metadata"].get("generation") and (
        _ready(status).get("reason") not in REFUSALS
    )


def ready(md: Mapping[str, Any]) -> bool:
    status = md.get("status") or {}
    return status.get("observedGeneration") == md["metadata"].get("generation") and (
        _ready(status).get("status") == "True"
    )


@dataclass
class Progress:
    """When each ModelDeployment was first seen handled and first seen Ready (epoch seconds)."""

    handled_at: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)

    def see(self, md: Mapping[str, Any], at: float) -> None:
        name = md["metadata"]["name"]
        if name not in self.handled_at and handled(md):
            self.handled_at[name] = at
        if name not in self.ready_at and ready(md):
            self.ready_at[name] = at


def write_counts(
    entries: Iterable[Mapping[str, Any]], since: float, until: float, namespace: str
) -> Counter[str]:
    """Writes of any identity in [since, until), once each, by group: "modeldeployments" and
    "children" (of NAMESPACE), "other in namespace" (pods, ReplicaSets, EndpointSlices, Events: the
    controllers' and KWOK's), "peering" (kopf's), "leases" (any namespace: nodes', KWOK's)."""
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for entry in entries:
        if entry.get("verb") not in WRITE_VERBS or entry.get("auditID") in seen:
            continue
        received = _epoch(entry.get("requestReceivedTimestamp", ""))
        if not since <= received < until:
            continue
        seen.add(entry.get("auditID", ""))
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", "")
        if "kopfpeerings" in resource:
            counts["peering"] += 1
        elif resource == "leases":
            counts["leases"] += 1
        elif ref.get("namespace") != namespace:
            continue
        elif resource == "modeldeployments":
            counts["modeldeployments"] += 1
        elif resource in CHILD_RESOURCES:
            counts["children"] += 1
        else:
            counts["other in namespace"] += 1
    return counts


def _last(times: Mapping[str, float], started: float, count: int) -> float | None:
    """Seconds from STARTED until the last of COUNT had a time in TIMES (None: not all of them did)."""
    return max(times.values()) - started if len(times) >= count else None


def write_latency(entries: Iterable[Mapping[str, Any]], since: float, until: float) -> tuple[float, float]:
    """(p50, p90) seconds the API server took over the operator's writes received in [since, until):
    what its reconciles wait on (the audit log's ResponseComplete time minus the time received)."""
    took = sorted(
        _epoch(e.get("stageTimestamp", "")) - _epoch(e.get("requestReceivedTimestamp", ""))
        for e in entries
        if e.get("stage") == "ResponseComplete"
        and e.get("verb") in WRITE_VERBS
        and operator_entry(e)
        and since <= _epoch(e.get("requestReceivedTimestamp", "")) < until
    )
    if not took:
        return 0.0, 0.0
    return took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.9))]


def operator_writes(requests: Mapping[str, int]) -> int:
    """The writes among the operator's REQUESTS (count_requests' keys), kopf's peering left out."""
    return sum(
        n for key, n in requests.items() if key.split(" ", 1)[0] in WRITE_VERBS and "kopfpeerings" not in key
    )


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def proc_usage(stat: str, status: str, ticks: int) -> tuple[float, int]:
    """(CPU seconds, user + system, and peak RSS in bytes) from /proc/PID/stat and /proc/PID/status."""
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of stat
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    return cpu, peak


def queue_state(metrics_text: str) -> tuple[float, float, float]:
    """(reconciles done, work queue depth, work in progress seconds) from the operator's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    reconciles = depth = unfinished = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "modelplane_operator_reconciles_total":
                reconciles += sample.value
            elif sample.name == "workqueue_depth":
                depth += sample.value
            elif sample.name == "workqueue_unfinished_work_seconds":
                unfinished += sample.value
    return reconciles, depth, unfinished


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def _per(requests: Mapping[str, int], count: int) -> str:
    return f"{sum(requests.values()) / count:.1f}"


def _breakdown(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "none"


def _verdict(met: bool, target: str) -> str:
    return f"{target}: {'met' if met else 'MISSED'}"


def _took(seconds: float | None, done: float, count: int, limit: float) -> str:
    """SECONDS, or how far it got when it did not finish within LIMIT."""
    return f"{seconds:.1f} s" if seconds is not None else f"not within {limit:.0f} s ({done:.0f} of {count})"


def render_results(run: Mapping[str, Any]) -> str:
    """The results file from one run's figures (what main collects; a phase not reached is absent)."""
    count, create = run["count"], run["create"]
    steady, restart = run.get("steady"), run.get("restart")
    limit, rss_mib = run["targets"]["converged_seconds"], run["targets"]["rss_mib"]
    handled = create["handled_seconds"]
    rows = [
        (
            "operator side: every one's status written for its generation (children applied)",
            _took(handled, create["handled"], count, create["limit_seconds"]),
            _verdict(handled is not None and handled < limit, f"< {limit:.0f} s"),
        ),
        (
            "every one Ready=True (controller-manager, scheduler, KWOK too)",
            _took(create["ready_seconds"], create["ready"], count, create["limit_seconds"]),
            "",
        ),
        (
            "the operator's last request of the creation (peering aside)",
            _took(create["quiet_seconds"], create["handled"], count, create["limit_seconds"]),
            "",
        ),
        (
            "API server time of the operator's writes during the creation, p50 / p90",
            f"{create['write_latency'][0] * 1000:.0f} / {create['write_latency'][1] * 1000:.0f} ms",
            "",
        ),
        ("operator API requests per ModelDeployment (creation)", _per(create["requests"], count), ""),
        (
            "operator peak RSS",
            _mib(create["peak_rss"]),
            _verdict(create["peak_rss"] < rss_mib * 2**20, f"< {rss_mib} MiB"),
        ),
        ("operator CPU seconds (creation, until quiet)", f"{create['cpu_seconds']:.1f} s", ""),
    ]
    floor = run.get("floor")
    if floor is not None:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(floor["manifests"].items()))
        available = floor["available_seconds"]
        rows += [
            (
                (
                    f"floor: the same children ({kinds}) applied by a plain client, {floor['clients']} "
                    "threads, no operator: all written / every Deployment available"
                ),
                f"{floor['applied_seconds']:.1f} s / "
                + (f"{available:.1f} s" if available is not None else "not within the limit"),
                "",
            ),
            (
                "operator side / the floor's writes; every one Ready / every floor Deployment available",
                f"{handled / floor['applied_seconds']:.2f}x; "
                + (
                    f"{create['ready_seconds'] / available:.2f}x"
                    if available and create["ready_seconds"] is not None
                    else "-"
                ),
                "",
            ),
        ]
    if steady is None:
        rows.append(("the quiet time and the restart", "not measured: the creation did not finish", ""))
    else:
        quiet_writes = steady["writes"].get("modeldeployments", 0) + steady["writes"].get("children", 0)
        rows += [
            (
                f"writes to ModelDeployments and children, quiet {steady['seconds']:.0f} s (any identity)",
                str(quiet_writes),
                _verdict(quiet_writes == 0, "0"),
            ),
            ("operator requests in that quiet time (peering aside)", str(steady["operator_requests"]), ""),
        ]
    if restart is not None:
        total = sum(restart["requests"].values())
        restart_figures = f"{total}, {_mib(restart['peak_rss'])}, {restart['cpu_seconds']:.1f} s"
        rows += [
            (
                "restarted operator: every one reconciled, its work queue empty",
                _took(restart["settled_seconds"], restart["reconciles"], count, restart["limit_seconds"]),
                "",
            ),
            (
                "writes of the restarted operator while settling (peering aside)",
                str(restart["writes"]),
                _verdict(restart["writes"] == 0, "0"),
            ),
            ("restarted operator: API requests, peak RSS, CPU seconds", restart_figures, ""),
        ]
    lines = [
        "# The operator at scale: ModelDeployments on KWOK's fake nodes",
        "",
        (
            "Written by `make bench-operator` (tests/bench/operator_scale.py; its docstring says what it "
            f"does) on {run['recorded']} at commit {run['commit']}."
        ),
        "",
        (
            f"- Machine: {run['machine']}; {standing(run['load_before'])}; load average "
            f"{run['load_after']} after. Durations depend on the load, counts do not."
        ),
        f"- Versions: {run['versions']}.",
        f"- Settings: {run['settings']}.",
        (
            f"- {count} ModelDeployments of {run['replicas']} replicas (examples/sklearn-s3.yaml's, with "
            "spec.runtime.nodeSelector and tolerations for the fake nodes) in one namespace, created at "
            f"once by {run['creators']} clients in {create['create_seconds']:.1f} s; times are from the "
            "first create."
        ),
        "",
        "| what | figure | target |",
        "|---|---:|---|",
        *(f"| {what} | {figure} | {target} |" for what, figure, target in rows),
        "",
        "## Details",
        "",
        f"- Children found after the creation: {_breakdown(create['children'])}.",
        f"- Operator requests during the creation, by verb and resource: {_breakdown(create['requests'])}.",
        (
            "- Writes during the quiet time, by group (kopf's peering and the Leases of nodes and "
            f"components are heartbeats, reported apart): {_breakdown(steady['writes'] if steady else {})}."
        ),
        f"- Requests of the restarted operator: {_breakdown(restart['requests'] if restart else {})}.",
        (
            "- CPU seconds are utime + stime and peak RSS is VmHWM, from /proc of the process "
            "`make operator-up` started; the restarted operator is a new process (its CPU from its start)."
        ),
    ]
    return "\n".join(lines) + "\n"


# The driver (I/O from here on).


class MDWatch:
    """A watch (the admin identity, which the audit policy does not log for reads) of the namespace's
    ModelDeployments, recording Progress as the events arrive."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.namespace = namespace
        self.progress = Progress()
        self._kubeconfig = kubeconfig
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.progress.handled_at), len(self.progress.ready_at)

    def _run(self) -> None:
        from kubernetes import client, config, watch

        api = client.CustomObjectsApi(config.new_client_from_config(str(self._kubeconfig)))  # type: ignore[no-untyped-call]
        group, version = API_VERSION.split("/")
        while not self._stop.is_set():
            try:
                listed = cast(
                    "dict[str, Any]",
                    api.list_namespaced_custom_object(group, version, self.namespace, "modeldeployments"),
                )
                now = time.time()
                with self._lock:
                    for item in listed["items"]:
                        self.progress.see(item, now)
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object,
                    group,
                    version,
                    self.namespace,
                    "modeldeployments",
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=30,
                )
                for event in stream:
                    with self._lock:
                        self.progress.see(event["object"], time.time())
                    if self._stop.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - a broken watch is listed again; the bench reports the rest
                print(f"watch of modeldeployments restarted: {error}")
                time.sleep(1)


@dataclass
class Operator:
    """The host operator of `make operator-up`: its process and its metrics endpoint."""

    pid_file: Path
    metrics_port: int

    def restart(self) -> int:
        make("operator-down")
        make("operator-up")
        return self.pid()

    def pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def usage(self) -> tuple[float, int]:
        pid = self.pid()
        return proc_usage(
            Path(f"/proc/{pid}/stat").read_text(),
            Path(f"/proc/{pid}/status").read_text(),
            os.sysconf("SC_CLK_TCK"),
        )

    def queue(self) -> tuple[float, float, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return queue_state(response.read().decode())


def wait(what: str, predicate: Any, timeout: float, interval: float = 1.0) -> bool:
    """Polls PREDICATE until it holds (True) or TIMEOUT passes (False: the bench records how far it got)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            print(f"not within {timeout:.0f} s: {what}")
            return False
        time.sleep(interval)
    return True


def quiet_since(audit: AuditLog, since: float, timeout: float) -> float:
    """The last request of the operator (kopf's peering aside) once none came for QUIET_SECONDS (or
    within TIMEOUT: then the last one so far)."""
    deadline = time.monotonic() + timeout
    last = audit.last_operator_request(since)
    while time.monotonic() < deadline and time.time() - last <= QUIET_SECONDS:
        time.sleep(2)
        last = audit.last_operator_request(since)
    return last


def _bench_entry(namespace: str) -> Any:
    """What the bench keeps of the audit log: the operator's requests, every write in NAMESPACE, and
    the writes to peering objects and Leases (reported apart)."""

    def keep(entry: Mapping[str, Any]) -> bool:
        if operator_entry(entry):
            return True
        if entry.get("verb") not in WRITE_VERBS:
            return False
        ref = entry.get("objectRef") or {}
        return ref.get("namespace") == namespace or ref.get("resource") in HEARTBEATS

    return keep


def create_all(cluster: Cluster, namespace: str, mds: list[dict[str, Any]], clients: int) -> None:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.kubeconfig)))  # type: ignore[no-untyped-call]
    group, version = API_VERSION.split("/")

    def create(md: dict[str, Any]) -> None:
        api.create_namespaced_custom_object(group, version, namespace, "modeldeployments", md)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, mds))


def apply_all(cluster: Cluster, manifests: list[dict[str, Any]], clients: int) -> None:
    """Server-side apply of every manifest by CLIENTS threads, through the operator's own Kube.apply
    (the same request the operator makes), under a field manager of the bench's."""
    from kubernetes import config

    kube = Kube(config.new_client_from_config(str(cluster.kubeconfig)), "bench-floor")  # type: ignore[no-untyped-call]
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(kube.apply, manifests))


def floor(
    cluster: Cluster, namespace: str, mds: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """The same children applied by a plain client (no operator, no status, no Events): how long the
    API server takes to write them, and the controller-manager, the scheduler and KWOK to make every
    Deployment available. The operator's figures are measured against it."""
    manifests = floor_manifests(mds, namespace)
    cluster.kubectl("create", "namespace", namespace)
    started = time.time()
    apply_all(cluster, manifests, args.floor_clients)
    applied = time.time()
    print(f"floor: {len(manifests)} applied in {applied - started:.1f} s")

    def report() -> bool:
        total, done = available_deployments(cluster, namespace)
        print(f"  {time.time() - started:6.1f} s: {done} of {total} Deployments available")
        return done >= len(mds)

    complete = wait("the floor's Deployments available", report, args.create_timeout, interval=5)
    return {
        "clients": args.floor_clients,
        "manifests": dict(Counter(m["kind"] for m in manifests)),
        "applied_seconds": applied - started,
        "available_seconds": time.time() - started if complete else None,
    }


def available_deployments(cluster: Cluster, namespace: str) -> tuple[int, int]:
    """(Deployments, those with every replica available) in NAMESPACE."""
    listing = json.loads(
        cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json", timeout=120).stdout
    )
    items = listing.get("items") or []
    done = [
        d
        for d in items
        if (d.get("status") or {}).get("availableReplicas", 0) >= d["spec"].get("replicas", 1)
    ]
    return len(items), len(done)


def rate_limits(run_dir: Path, component: str) -> str:
    """The --kube-api-qps and --kube-api-burst the running COMPONENT was started with (its pid file)."""
    pid = (run_dir / f"{component}.pid").read_text().strip()
    args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    found = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--kube-api-qps", "--kube-api-burst")}
    return " ".join(f"{k} {v}" for k, v in sorted(found.items(), reverse=True)) or "(defaults)"


def clean_up(
    cluster: Cluster, namespaces: Iterable[str], raised: Mapping[str, int], stop_operator: bool
) -> None:
    """Everything the bench made goes, in this order, each step tried even if one before failed: the
    namespaces (while KWOK still completes its pods' deletion), the fake nodes and KWOK's controller,
    the raised rate limits (cluster-up with the defaults), the operator if it was not running before."""
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            f"delete namespace {namespace}",
            lambda namespace=namespace: cluster.kubectl(  # type: ignore[misc]
                "delete", "namespace", namespace, "--ignore-not-found", "--timeout=600s", timeout=630
            ),
        )
        for namespace in namespaces
    ]
    steps += [
        ("make kwok-down", lambda: make("kwok-down")),
        ("make cluster-up (default rate limits)", lambda: _defaults_again(raised)),
    ]
    if stop_operator:
        steps.append(("make operator-down", lambda: make("operator-down")))
    failed = []
    for what, step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - every step is tried; the failures are reported together
            failed.append(f"{what}: {error}")
    if failed:
        raise SystemExit("clean-up incomplete:\n" + "\n".join(failed))


def _defaults_again(names: Iterable[str]) -> None:
    for name in names:
        os.environ.pop(name, None)
    make("cluster-up")


def versions(cluster: Cluster, kwok_bin: Path) -> str:
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout).get("serverVersion", {})
    kwok = subprocess.run([str(kwok_bin), "--version"], capture_output=True, text=True, check=False)
    kwok_version = kwok.stdout.replace("kwok version", "").strip() or "?"
    return (
        f"Kubernetes {server.get('gitVersion', '?')}, KWOK {kwok_version}, "
        f"kopf {importlib.metadata.version('kopf')}, kubernetes (Python client) "
        f"{importlib.metadata.version('kubernetes')}, Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="ModelDeployments to create")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of each")
    parser.add_argument("--nodes", type=int, default=4, help="KWOK's fake nodes")
    parser.add_argument("--clients", type=int, default=8, help="parallel creates")
    parser.add_argument("--floor-clients", type=int, default=16, help="parallel applies of the floor")
    parser.add_argument(
        "--qps", type=int, default=300, help="controller-manager's and scheduler's client QPS"
    )
    parser.add_argument("--burst", type=int, default=600, help="their client burst")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="the quiet time after")
    parser.add_argument("--create-timeout", type=float, default=360.0, help="seconds for all to be Ready")
    parser.add_argument(
        "--restart-timeout", type=float, default=600.0, help="seconds for a restart to settle"
    )
    parser.add_argument("--operator-pid-file", type=Path, required=True)
    parser.add_argument("--operator-metrics-port", type=int, required=True)
    parser.add_argument("--operator-resync-seconds", type=float, required=True)
    parser.add_argument("--kwok-bin", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=RESULTS / "operator.md")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows as it happens
    # A `timeout` or the lead ending the run: the clean-up below still runs (finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    cluster = Cluster(kubeconfig=Path(make_print("kubeconfig")), bin_dir=Path(make_print("bin-dir")))
    operator = Operator(args.operator_pid_file, args.operator_metrics_port)
    secret, mds = bench_documents(args.count, args.replicas)
    namespace = f"bench-operator-{int(time.time())}"
    floor_namespace = f"{namespace}-floor"
    load_before = load_average()
    # In the environment of every make run from here (`make kwok` runs cluster-up too), until the end.
    raised = {"CONTROLLER_MANAGER_QPS": args.qps, "CONTROLLER_MANAGER_BURST": args.burst}
    raised |= {"SCHEDULER_QPS": args.qps, "SCHEDULER_BURST": args.burst}
    operator_was_running = operator.pid_file.exists()
    figures: dict[str, Any] = {}
    phase_started = time.time()
    try:
        os.environ.update({name: str(value) for name, value in raised.items()})
        make("cluster-up")
        # Node add-ons that would run on worker nodes, not beside the API server: on this one node they
        # took a third of its CPU (kube-router's firewall recomputes its ipsets at every pod and policy).
        for add_on in STOPPED_ADD_ONS:
            make(add_on)
        make("kwok", f"KWOK_NODES={args.nodes}")
        operator.restart()
        run_dir = cluster.kubeconfig.parent / "run"
        settings = (
            f"kube-controller-manager {rate_limits(run_dir, 'kube-controller-manager')}, kube-scheduler "
            f"{rate_limits(run_dir, 'kube-scheduler')} (their defaults: 20/30 and 50/100); {args.nodes} KWOK "
            "fake nodes with KWOK's fast stages; stopped meanwhile: kube-router's NetworkPolicy firewall, "
            "KEDA and its Prometheus (node add-ons: a large cluster runs them on worker nodes, not beside "
            "its API server); the operator as `make operator-up` runs it "
            f"({Config.from_env().workers} workers, resync every {args.operator_resync_seconds:.0f} s)"
        )
        print(f"set-up: {time.time() - phase_started:.0f} s")
        cluster.kubectl("create", "namespace", namespace)
        cluster.apply(secret, namespace)
        audit = AuditLog(cluster.kubeconfig.parent / "logs" / "audit.log", keep=_bench_entry(namespace))
        watch = MDWatch(cluster.kubeconfig, namespace)
        watch.start()
        time.sleep(2)  # the watch is established
        cpu0, _ = operator.usage()

        started = time.time()
        create_all(cluster, namespace, mds, args.clients)
        created = time.time()
        print(f"created {args.count} in {created - started:.1f} s")

        def report() -> bool:
            handled_n, ready_n = watch.counts()
            print(f"  {time.time() - started:6.1f} s: {handled_n} handled, {ready_n} Ready")
            return bool(ready_n >= args.count)

        complete = wait("every ModelDeployment Ready", report, args.create_timeout, interval=5)
        progress = watch.progress
        quiet = quiet_since(audit, started, 60 if complete else 0)
        wait("the operator's work queue empty", lambda: operator.queue()[1] == 0, 60 if complete else 0)
        cpu1, peak = operator.usage()
        kinds = cluster.kubectl("get", "deploy,svc,pdb", "-n", namespace, "-o", "name").stdout.split()
        found = Counter(k.split("/")[0] for k in kinds)
        end = time.time()
        figures["create"] = {
            "limit_seconds": args.create_timeout,
            "create_seconds": created - started,
            "handled": len(progress.handled_at),
            "ready": len(progress.ready_at),
            "handled_seconds": _last(progress.handled_at, started, args.count),
            "ready_seconds": _last(progress.ready_at, started, args.count),
            "quiet_seconds": quiet - started if complete else None,
            "requests": dict(count_requests(audit.entries(), started, end, namespace)),
            "write_latency": write_latency(audit.entries(), started, end),
            "peak_rss": peak,
            "cpu_seconds": cpu1 - cpu0,
            "children": dict(found),
        }
        print(f"create: {json.dumps(figures['create'])}")
        if complete:  # else the quiet time and the restart are not what they would measure
            steady_started = time.time()
            time.sleep(args.steady_seconds)
            steady_ended = time.time()
            entries = audit.entries()
            steady_requests = count_requests(entries, steady_started, steady_ended, namespace)
            figures["steady"] = {
                "seconds": steady_ended - steady_started,
                "writes": dict(write_counts(entries, steady_started, steady_ended, namespace)),
                "operator_requests": sum(n for k, n in steady_requests.items() if "kopfpeerings" not in k),
            }
            print(f"steady: {json.dumps(figures['steady'])}")

            make("operator-down")
            restarted = time.time()
            make("operator-up")
            reconciled = [0.0]

            def settled() -> bool:
                try:
                    reconciled[0], depth, unfinished = operator.queue()
                except OSError:  # not serving its metrics yet
                    return False
                return reconciled[0] >= args.count and depth == 0 and unfinished == 0

            done = wait(
                "the restarted operator to reconcile every one", settled, args.restart_timeout, interval=2
            )
            settled_at = time.time()
            quiet = quiet_since(audit, restarted, 60 if done else 0)
            cpu1, peak = operator.usage()
            restart_requests = count_requests(
                audit.entries(), restarted, max(quiet + 1, settled_at), namespace
            )
            figures["restart"] = {
                "limit_seconds": args.restart_timeout,
                "settled_seconds": settled_at - restarted if done else None,
                "reconciles": reconciled[0],
                "requests": dict(restart_requests),
                "writes": operator_writes(restart_requests),
                "peak_rss": peak,
                "cpu_seconds": cpu1,
            }
            print(f"restart: {json.dumps(figures['restart'])}")
        watch.stop()
        make("operator-down")  # the floor's pods carry our labels: the operator would watch them
        figures["floor"] = floor(cluster, floor_namespace, mds, args)
        print(f"floor: {json.dumps(figures['floor'])}")
        make("operator-up")
    finally:
        cleanup = time.time()
        clean_up(cluster, (namespace, floor_namespace), raised, stop_operator=not operator_was_running)
        print(f"clean-up: {time.time() - cleanup:.0f} s")

    figures.update(
        count=args.count,
        replicas=args.replicas,
        creators=args.clients,
        settings=settings,
        machine=f"{cpu_model()}, {os.cpu_count()} CPUs, {_memory()}",
        versions=versions(cluster, args.kwok_bin),
        load_before=load_before,
        load_after=load_average(),
        commit=git_commit(),
        recorded=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        targets={"converged_seconds": 90.0, "rss_mib": 300},
    )
    args.results.with_suffix(".json").write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    table = render_results(figures)
    previous = args.results.read_text() if args.results.exists() else ""
    args.results.write_text(with_notes(table, previous))  # the hand-written notes stay
    print(table)
    return 0


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    return "? RAM"


if __name__ == "__main__":
    raise SystemExit(main())
