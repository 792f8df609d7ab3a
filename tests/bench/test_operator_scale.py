"""The pure pieces of tests/bench/operator_scale.py: the documents, progress, write counts, /proc and metrics
parsing, the results table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelplane import spec as specs
from modelplane.render.common import LABEL_MANAGED_BY
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from tests.bench.machine import standing
from tests.bench.operator_scale import (
    Progress,
    bench_documents,
    floor_manifests,
    operator_writes,
    proc_usage,
    queue_state,
    render_results,
    write_counts,
    write_latency,
)

OPERATOR = "system:serviceaccount:modelplane-system:modelplane-operator"


def test_the_documents_are_the_example_on_the_fake_nodes() -> None:
    secret, mds = bench_documents(3, 2)
    assert secret["kind"] == "Secret"
    assert [m["metadata"]["name"] for m in mds] == ["md-0000", "md-0001", "md-0002"]
    for md in mds:
        parsed = specs.parse({**md, "metadata": {**md["metadata"], "namespace": "ns", "uid": "u"}})
        assert parsed.replicas == 2
        assert dict(parsed.runtime.node_selector) == {"type": "kwok"}
        assert [(t.key, t.value, t.effect) for t in parsed.runtime.tolerations] == [
            ("kwok.x-k8s.io/node", "fake", "NoSchedule")
        ]
        assert parsed.model.credentials_secret == secret["metadata"]["name"]
    mds[0]["spec"]["runtime"]["tolerations"].clear()
    assert mds[1]["spec"]["runtime"]["tolerations"]  # copies, not one shared spec


def md(
    name: str, generation: int, observed: int | None, ready: str | None, reason: str = "X"
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": reason}]
    return {"metadata": {"name": name, "generation": generation}, "status": status}


def test_progress_records_the_first_time_each_is_handled_and_ready() -> None:
    progress = Progress()
    progress.see(md("a", 1, None, None), 1.0)
    progress.see(md("a", 2, 1, "True"), 2.0)  # an older generation's status counts for nothing
    progress.see(md("a", 2, 2, "False", "ApplyFailed"), 3.0)  # a refusal applied nothing
    progress.see(md("a", 2, 2, "False", "Creating"), 4.0)
    progress.see(md("a", 2, 2, "True"), 5.0)
    progress.see(md("a", 2, 2, "True"), 6.0)
    assert progress.handled_at == {"a": 4.0}
    assert progress.ready_at == {"a": 5.0}


def entry(audit_id: str, verb: str, resource: str, at: int, namespace: str | None = "ns") -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource}
    if namespace:
        ref["namespace"] = namespace
    stamp = f"2026-12-01T10:00:{at:02d}.000000Z"
    return {"auditID": audit_id, "verb": verb, "objectRef": ref, "requestReceivedTimestamp": stamp}


def test_writes_are_grouped_with_heartbeats_apart() -> None:
    entries = [
        entry("a", "patch", "modeldeployments", 1),
        entry("a", "patch", "modeldeployments", 1),  # the same request at another stage
        entry("b", "patch", "deployments", 2),
        entry("c", "update", "pods", 3),
        entry("d", "update", "leases", 4, "kube-node-lease"),
        entry("e", "patch", "clusterkopfpeerings", 5, None),
        entry("f", "get", "deployments", 6),  # a read
        entry("g", "patch", "deployments", 7, "elsewhere"),  # another namespace
        entry("h", "patch", "services", 30),  # after the window
    ]
    since = datetime.fromisoformat("2026-12-01T10:00:00Z").timestamp()
    assert write_counts(entries, since, since + 20, "ns") == {
        "modeldeployments": 1,
        "children": 1,
        "other in namespace": 1,
        "leases": 1,
        "peering": 1,
    }


def test_write_latency_is_the_api_servers_time_over_the_operators_writes() -> None:
    def timed(audit_id: str, verb: str, received: float, took: float, user: str = OPERATOR) -> dict[str, Any]:
        return {
            "auditID": audit_id,
            "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user},
            "requestReceivedTimestamp": datetime.fromtimestamp(received, UTC).isoformat(),
            "stageTimestamp": datetime.fromtimestamp(received + took, UTC).isoformat(),
        }

    entries = [timed(str(i), "patch", 100.0 + i, 0.1 * (i + 1)) for i in range(10)]
    entries += [timed("r", "get", 101.0, 9.0), timed("k", "update", 101.0, 9.0, user="system:kube-scheduler")]
    entries += [timed("late", "patch", 500.0, 9.0)]
    p50, p90 = write_latency(entries, 100.0, 200.0)
    assert (round(p50, 3), round(p90, 3)) == (0.6, 1.0)


def test_operator_writes_leave_reads_and_peering_out() -> None:
    requests = {"list pods": 1, "get secrets": 3, "patch deployments": 2, "patch clusterkopfpeerings": 4}
    assert operator_writes(requests) == 2


def test_proc_usage_reads_cpu_ticks_and_the_peak_rss() -> None:
    stat = "4242 (modelplane run) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300"
    status = "Name:\tmodelplane\nVmPeak:\t  999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
    assert proc_usage(stat, status, 100) == (3.0, 2048 * 1024)


def test_queue_state_sums_reconciles_and_reads_the_queue() -> None:
    registry = (
        CollectorRegistry()
    )  # the operator's metrics (modelplane/metrics.py), in a registry of their own
    reconciles = Counter("modelplane_operator_reconciles", "", ["result"], registry=registry)
    reconciles.labels(result="ok").inc(998)
    reconciles.labels(result="gone").inc(2)
    queue = {"name": "modeldeployment", "controller": "modeldeployment"}
    Gauge("workqueue_depth", "", list(queue), registry=registry).labels(**queue).set(3)
    Gauge("workqueue_unfinished_work_seconds", "", list(queue), registry=registry).labels(**queue).set(0.5)
    assert queue_state(generate_latest(registry).decode()) == (1000.0, 3.0, 0.5)


def test_the_table_says_which_targets_were_met() -> None:
    run: dict[str, Any] = {
        "count": 10,
        "replicas": 2,
        "creators": 8,
        "settings": "s",
        "machine": "m",
        "versions": "v",
        "load_before": "1",
        "load_after": "2",
        "commit": "abc",
        "recorded": "now",
        "targets": {"converged_seconds": 90.0, "rss_mib": 300},
        "create": {
            "limit_seconds": 420.0,
            "handled": 10,
            "ready": 10,
            "create_seconds": 1.0,
            "handled_seconds": 95.0,
            "ready_seconds": 100.0,
            "quiet_seconds": 101.0,
            "requests": {"patch deployments": 10, "get secrets": 10},
            "peak_rss": 200 * 2**20,
            "cpu_seconds": 12.0,
            "children": {"deployment.apps": 10},
            "write_latency": [0.25, 1.5],
        },
        "steady": {"seconds": 60.0, "writes": {"leases": 5, "children": 1}, "operator_requests": 0},
        "restart": {
            "limit_seconds": 180.0,
            "reconciles": 10,
            "settled_seconds": 9.0,
            "requests": {"list pods": 1},
            "writes": 0,
            "peak_rss": 2**27,
            "cpu_seconds": 4.0,
        },
    }
    table = render_results(run)
    assert "| 95.0 s | < 90 s: MISSED |" in table
    assert "| 200 MiB | < 300 MiB: met |" in table
    assert "| operator API requests per ModelDeployment (creation) | 2.0 |  |" in table
    assert "(any identity) | 1 | 0: MISSED |" in table
    unfinished = {**run, "create": {**run["create"], "handled_seconds": None, "handled": 7}}
    del unfinished["steady"], unfinished["restart"]
    table = render_results(unfinished)
    assert "| not within 420 s (7 of 10) | < 90 s: MISSED |" in table
    assert "not measured: the creation did not finish" in table
    table = render_results(run)
    assert "| 250 / 1500 ms |" in table
    assert "| writes of the restarted operator while settling (peering aside) | 0 | 0: met |" in table
    assert "floor" not in table  # a run that did not reach the floor's phase
    floored = {**run, "floor": {"clients": 16, "manifests": {"Deployment": 10}, "applied_seconds": 47.5}}
    floored["floor"]["available_seconds"] = 80.0
    table = render_results(floored)
    assert "| 47.5 s / 80.0 s |" in table
    assert "| 2.00x; 1.25x |" in table


def test_the_results_say_whether_the_machine_was_quiet_from_the_load_before_the_run() -> None:
    assert standing("0.31 0.40 0.52").startswith("quiet")
    assert standing("3.59 3.32 4.07").startswith("**shared**")


def test_the_floor_applies_what_the_operator_would_without_owner_or_our_label() -> None:
    _, mds = bench_documents(2, 2)
    manifests = floor_manifests(mds, "floor")
    assert sorted(m["kind"] for m in manifests if m["metadata"]["name"] == "md-0001") == [
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ]
    for manifest in manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == "floor"
        assert "ownerReferences" not in meta  # the garbage collector would delete them
        assert LABEL_MANAGED_BY not in meta.get("labels", {})  # the operator must not see them
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["tolerations"]  # onto the fake nodes, as the operator's
