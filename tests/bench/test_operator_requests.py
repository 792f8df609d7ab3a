"""The pure pieces of tests/bench/operator_requests.py: counting audit entries, the results table."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.harness import with_notes
from tests.bench.operator_requests import AuditLog, count_requests, render_table

USER = "system:serviceaccount:modelplane-system:modelplane-operator"


def entry(audit_id: str, verb: str, resource: str, at: str, user: str = USER, **ref: str) -> dict[str, Any]:
    return {
        "auditID": audit_id,
        "verb": verb,
        "user": {"username": user},
        "objectRef": {"resource": resource, **ref},
        "requestReceivedTimestamp": at,
    }


def test_each_request_of_the_operator_counts_once_within_the_window() -> None:
    entries = [
        entry("a", "list", "pods", "2026-12-01T10:00:01.000000Z"),
        entry("a", "list", "pods", "2026-12-01T10:00:01.000000Z"),  # the same request, another stage
        entry("b", "patch", "modeldeployments", "2026-12-01T10:00:02.000000Z", subresource="status"),
        entry("c", "get", "secrets", "2026-12-01T10:00:03.000000Z", user="system:admin"),
        entry("d", "get", "secrets", "2026-12-01T10:00:09.000000Z"),  # after the window
    ]
    since = datetime.fromisoformat("2026-12-01T10:00:00Z").timestamp()
    counts = count_requests(entries, since, since + 5)
    assert counts == {"list pods": 1, "patch modeldeployments/status": 1}


def test_the_table_divides_by_model_deployments_and_child_events() -> None:
    runs = {
        "after": {
            "rollout restart": {
                "requests": {"patch modeldeployments/status": 40, "patch kopfpeerings": 3},
                "child_events": 200,
                "model_deployments": 20,
            }
        }
    }
    table = render_table(runs)
    assert "| after | rollout restart | 20 | 200 | 40 | 2.0 | 0.20 | 0 | 0 | 0 | 40 | 3 |" in table


def test_the_hand_written_notes_survive_a_new_table() -> None:
    previous = "# old table\n| a |\n\n## Notes\n\nmachine shared\n"
    assert with_notes("# new\n", previous) == "# new\n\n## Notes\n\nmachine shared\n"
    assert with_notes("# new\n", "# no notes\n") == "# new\n"


def test_the_audit_log_is_followed_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    line = '{{"auditID": "{}", "verb": "get", "user": {{"username": "{}"}}}}\n'
    log.write_text(line.format("before", USER))
    audit = AuditLog(log)
    with log.open("a") as f:
        f.write(line.format("a", USER) + line.format("admin", "system:admin"))
        f.write('{"auditID": "b", "verb"')  # half written
    assert [e["auditID"] for e in audit.entries()] == ["a"]
    with log.open("a") as f:
        f.write(f': "get", "user": {{"username": "{USER}"}}}}\n' + line.format("c", USER))
    log.rename(tmp_path / "audit-2026-12-01T10-00-00.000.log")  # what the API server does at maxsize
    log.write_text(line.format("d", USER))
    assert [e["auditID"] for e in audit.entries()] == ["a", "b", "c", "d"]
