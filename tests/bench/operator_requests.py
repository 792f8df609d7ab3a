"""API requests the operator makes, counted from the cluster's audit log (every request of the
operator's identities is logged at Metadata level: hack/local-cluster/audit-policy.yaml).

Run against the host operator, under the cluster lock: `make bench-operator-requests` (this code), or
with the operator of another commit (its operator/ and runtime-image/ put first on PYTHONPATH, so the
same venv runs it), e.g. before the reconcile core:
  git worktree add --detach /tmp/before d3d6f03^
  PYTHONPATH=/tmp/before/operator:/tmp/before/runtime-image \
    make bench-operator-requests OPERATOR_REQUESTS_ARGS="--label before"

It creates COUNT ModelDeployments (one replica each) in a namespace of its own and waits until all are
Ready and the operator is quiet (phase "create"); counts what the operator asks in STEADY_SECONDS of
nothing happening (phase "steady"); scales one ModelDeployment from 1 to 2 replicas (phase "one change");
restarts all their pods with `kubectl rollout restart` (phase "rollout restart"); and restarts the
operator itself with the COUNT ModelDeployments in place (phase "operator start"). Requests in other
namespaces are left out (other sessions' leftovers), cluster-wide ones (kopf's listings and watches)
are counted. Each phase ends once everything is Ready and the operator was quiet for QUIET_SECONDS.
Child events are counted by a watch of its own on the objects the operator watches (pods, Deployments,
Services, PDBs with our label), from the admin identity, which the audit policy does not log. The
figures of each --label are kept in tests/bench/results/operator-requests.json and the table in
operator-requests.md shows them all.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.harness import with_notes
from tests.support.cluster import REPO_ROOT, Cluster, make, make_print
from tests.support.modeldeployments import model_deployment

OPERATOR_USERS = frozenset(
    {
        "system:serviceaccount:modelplane-system:modelplane-operator",  # make operator-up
        "system:serviceaccount:modelplane-system:modelplane",  # the chart, installed as make demo does
    }
)
RESULTS = REPO_ROOT / "tests" / "bench" / "results"
WATCHED = ("pods", "deployments", "services", "poddisruptionbudgets")
QUIET_SECONDS = 15.0  # no request of the operator for this long: it is done with the phase
STEADY_SECONDS = 60.0  # the steady-state window: longer than kopf's peering keep-alive interval


def request_key(entry: Mapping[str, Any]) -> str:
    """verb resource[/subresource], e.g. "list pods", "patch modeldeployments/status"."""
    ref = entry.get("objectRef") or {}
    resource = ref.get("resource") or entry.get("requestURI", "?").split("?")[0]
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return f"{entry.get('verb', '?')} {resource}"


def count_requests(
    entries: Iterable[Mapping[str, Any]], since: float, until: float, namespace: str | None = None
) -> Counter[str]:
    """Requests of the operator's identities received in [since, until), once each (an audit event is
    logged per stage: ResponseStarted and ResponseComplete share one auditID); with NAMESPACE, only
    those in it or in none (cluster-wide lists and watches), not other tests' leftovers."""
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for entry in entries:
        if (entry.get("user") or {}).get("username") not in OPERATOR_USERS:
            continue
        audit_id = entry.get("auditID", "")
        if audit_id in seen:
            continue
        received = _epoch(entry.get("requestReceivedTimestamp", ""))
        if not since <= received < until:
            continue
        where = (entry.get("objectRef") or {}).get("namespace")
        if namespace is not None and where not in (None, namespace):
            continue
        seen.add(audit_id)
        counts[request_key(entry)] += 1
    return counts


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


@dataclass
class Phase:
    name: str
    requests: Counter[str]
    child_events: int
    model_deployments: int

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def verbs(self, verb: str) -> int:
        return sum(n for key, n in self.requests.items() if key.split(" ", 1)[0] == verb)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "child_events": self.child_events,
            "model_deployments": self.model_deployments,
        }


def render_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The results file: per label and phase, requests per ModelDeployment and per child event."""
    lines = [
        "# Operator API requests, from the audit log",
        "",
        "Written by `tests/bench/operator_requests.py` (see its docstring for the procedure). The machine",
        "is shared by several sessions while this runs: the counts do not depend on its load, the",
        "durations would (none are recorded). kopf's peering keep-alive (kopf.dev) is counted apart.",
        "",
        (
            "| run | phase | MDs | child events | requests | per MD | per child event | LIST | GET | watch |"
            " writes | peering |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, phases in runs.items():
        for name, data in phases.items():
            requests = Counter(data["requests"])
            peering = sum(n for key, n in requests.items() if "kopfpeerings" in key)
            ours = Counter({k: n for k, n in requests.items() if "kopfpeerings" not in k})
            phase = Phase(name, ours, data["child_events"], data["model_deployments"])
            writes = phase.total - phase.verbs("list") - phase.verbs("get") - phase.verbs("watch")
            per_event = phase.total / phase.child_events if phase.child_events else 0.0
            lines.append(
                f"| {label} | {name} | {phase.model_deployments} | {phase.child_events} | {phase.total} | "
                f"{phase.total / phase.model_deployments:.1f} | {per_event:.2f} | {phase.verbs('list')} | "
                f"{phase.verbs('get')} | {phase.verbs('watch')} | {writes} | {peering} |"
            )
    lines += ["", "## Requests by verb and resource", ""]
    for label, phases in runs.items():
        for name, data in phases.items():
            breakdown = ", ".join(f"{key}: {n}" for key, n in sorted(data["requests"].items()))
            lines.append(f"- {label}, {name}: {breakdown or 'none'}")
    return "\n".join(lines) + "\n"


# The driver (I/O from here on).


def operator_entry(entry: Mapping[str, Any]) -> bool:
    return (entry.get("user") or {}).get("username") in OPERATOR_USERS


class AuditLog:
    """The entries of the audit log that KEEP selects (by default the operator's), read incrementally
    from where the run began. The API server rotates the file (--audit-log-maxsize): the rest of the
    file being read is then taken from its backup (audit-<time>.log, the same inode), the new file
    from its start."""

    def __init__(self, path: Path, keep: Callable[[Mapping[str, Any]], bool] = operator_entry) -> None:
        self.path = path
        self._keep = keep
        stat = path.stat()
        self._inode, self._offset = stat.st_ino, stat.st_size
        self._entries: list[dict[str, Any]] = []

    def entries(self) -> list[dict[str, Any]]:
        inode = self.path.stat().st_ino
        if inode != self._inode:
            rotated = next(
                (p for p in self.path.parent.glob(f"{self.path.stem}-*") if p.stat().st_ino == self._inode),
                None,
            )
            if rotated is not None:
                self._read(rotated, whole=True)
            self._inode, self._offset = inode, 0
        self._read(self.path)
        return self._entries

    def _read(self, path: Path, whole: bool = False) -> None:
        with path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data if whole else data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if self._keep(entry):
                self._entries.append(entry)

    def last_operator_request(self, since: float) -> float:
        latest = since
        for entry in self.entries():
            if operator_entry(entry) and "kopfpeerings" not in request_key(entry):
                latest = max(latest, _epoch(entry.get("requestReceivedTimestamp", "")))
        return latest


@dataclass
class EventCounter:
    """Our own watches of what the operator watches in NAMESPACE; the time of every event."""

    kubeconfig: Path
    namespace: str
    times: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
        listers = {
            "pods": core.list_namespaced_pod,
            "services": core.list_namespaced_service,
            "deployments": apps.list_namespaced_deployment,
            "poddisruptionbudgets": policy.list_namespaced_pod_disruption_budget,
        }
        for lister in listers.values():
            threading.Thread(target=self._watch, args=(lister,), daemon=True).start()

    def _watch(self, lister: Any) -> None:
        from kubernetes import watch

        version = ""
        while not self._stop.is_set():
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                lister,
                self.namespace,
                label_selector="modelplane.io/name",
                timeout_seconds=5,
                resource_version=version or None,
            )
            for event in stream:
                version = event["object"].metadata.resource_version
                self.times.append(time.time())

    def between(self, since: float, until: float) -> int:
        return sum(1 for t in self.times if since <= t < until)

    def stop(self) -> None:
        self._stop.set()


def iris_md(name: str, key: str, digest: str) -> dict[str, Any]:
    return model_deployment(
        name,
        {
            "model": {
                "uri": f"s3://modelplane/{key}",
                "format": "sklearn",
                "digest": digest,
                "credentialsSecret": "s3-credentials",
            },
            "replicas": 1,
            # COUNT pods and a rollout's surge on one 2-core node: the default CPU request (100m) fits
            # about 18, and a Pending pod never settles the phase. Both named: an operator before
            # the requests' per-resource defaults (the --label before run) would default nothing.
            "runtime": {"resources": {"requests": {"cpu": "20m", "memory": "128Mi"}}},
        },
    )


def all_settled(cluster: Cluster, namespace: str, count: int) -> bool:
    """COUNT ModelDeployments Ready at their generation, each Deployment rolled out, and exactly the pods
    their replicas ask for (none terminating)."""
    mds = json.loads(cluster.kubectl("get", "md", "-n", namespace, "-o", "json").stdout)["items"]
    want_pods = sum(m["spec"].get("replicas", 1) for m in mds)
    deps = json.loads(cluster.kubectl("get", "deploy", "-n", namespace, "-o", "json").stdout)["items"]
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    ready = [
        m
        for m in mds
        if (m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"]
        and any(
            c["type"] == "Ready" and c["reason"] == "AllReplicasReady"
            for c in m["status"].get("conditions", [])
        )
    ]
    rolled = [
        d
        for d in deps
        if d["status"].get("observedGeneration") == d["metadata"]["generation"]
        and d["status"].get("updatedReplicas")
        == d["status"].get("replicas")
        == d["status"].get("readyReplicas")
    ]
    live_pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return len(ready) == len(rolled) == len(mds) == count and len(live_pods) == len(pods) == want_pods


def settle(
    cluster: Cluster, audit: AuditLog, namespace: str, count: int, since: float, timeout: float
) -> float:
    """Wait until every MD is Ready with its pods rolled out and the operator made no request for
    QUIET_SECONDS; return the end of the phase (the last request, plus a margin)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all_settled(cluster, namespace, count):
            last = audit.last_operator_request(since)
            if time.time() - last > QUIET_SECONDS:
                return last + 1
        time.sleep(2)
    raise SystemExit(f"not settled after {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", required=True, help="this run's name in the results (e.g. before, after)")
    parser.add_argument("--count", type=int, default=20, help="ModelDeployments to create")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each phase")
    args = parser.parse_args()

    from tests.support.examples import credentials_secret
    from tests.support.models import _train_iris
    from tests.support.s3 import start_s3

    cluster = Cluster(kubeconfig=Path(make_print("kubeconfig")), bin_dir=Path(make_print("bin-dir")))
    audit = AuditLog(cluster.kubeconfig.parent / "logs" / "audit.log")
    s3 = start_s3()
    key = "bench/iris/model.joblib"
    digest = s3.upload(key, _train_iris(1.0)[0])
    namespace = f"bench-requests-{args.label}-{int(time.time())}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.wait("serviceaccount/default", "create", namespace=namespace, timeout=60)
    events = EventCounter(cluster.kubeconfig, namespace)
    events.start()
    phases: dict[str, Phase] = {}
    try:
        time.sleep(2)  # our watches are established (they count from here)

        def measure(name: str, started: float) -> None:
            ended = settle(cluster, audit, namespace, args.count, started, args.timeout)
            phases[name] = Phase(
                name,
                count_requests(audit.entries(), started, ended, namespace),
                events.between(started, ended),
                args.count,
            )
            print(f"{name}: {phases[name].total} requests, {phases[name].child_events} child events")

        started = time.time()
        docs = [credentials_secret(s3), *(iris_md(f"m{i:02d}", key, digest) for i in range(args.count))]
        cluster.apply(docs, namespace)
        measure("create", started)

        started = time.time()
        time.sleep(STEADY_SECONDS)
        ended = time.time()
        phases["steady"] = Phase(
            "steady",
            count_requests(audit.entries(), started, ended, namespace),
            events.between(started, ended),
            args.count,
        )
        print(f"steady ({STEADY_SECONDS:.0f} s): {phases['steady'].total} requests")

        started = time.time()
        scale = '{"spec":{"replicas":2}}'
        cluster.kubectl("patch", "md", "m00", "-n", namespace, "--type=merge", "-p", scale)
        measure("one change", started)

        started = time.time()
        cluster.kubectl("rollout", "restart", "deployment", "-n", namespace, "-l", "modelplane.io/name")
        measure("rollout restart", started)

        make("operator-down")
        started = time.time()
        make("operator-up")
        measure("operator start", started)
    finally:
        events.stop()
        cluster.kubectl(
            "delete", "namespace", namespace, "--wait=true", "--timeout=300s", check=False, timeout=330
        )

    data_file = RESULTS / "operator-requests.json"
    runs: dict[str, Any] = json.loads(data_file.read_text()) if data_file.exists() else {}
    runs[args.label] = {name: phase.as_json() for name, phase in phases.items()}
    runs[args.label]["_recorded"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data_file.write_text(json.dumps(runs, indent=1) + "\n")  # phases in the order they ran
    table = render_table(
        {label: {k: v for k, v in run.items() if k != "_recorded"} for label, run in runs.items()}
    )
    results = RESULTS / "operator-requests.md"
    results.write_text(with_notes(table, results.read_text() if results.exists() else ""))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
