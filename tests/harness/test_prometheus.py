"""A Prometheus of the test's own scrapes a real exporter on the host; promtool checks configs and rules."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.support.net import free_port
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e

PROBE_VALUE = 42.5


@pytest.fixture
def exporter() -> Iterator[str]:
    """A prometheus_client HTTP server on the host exposing one gauge; yields its host:port."""
    registry = CollectorRegistry()
    Gauge("harness_probe_value", "A value the test sets and reads back.", ["side"], registry=registry).labels(
        side="host"
    ).set(PROBE_VALUE)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def scrape_config(target: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "probe", "static_configs": [{"targets": [target]}]}],
    }


VALID_RULES = """\
groups:
  - name: harness
    rules:
      - record: job:harness_probe_value:max
        expr: max by (job) (harness_probe_value)
      - alert: ProbeMissing
        expr: absent(harness_probe_value)
        for: 1m
        labels: {severity: warning}
"""

BROKEN_RULES = """\
groups:
  - name: harness
    rules:
      - record: job:harness_probe_value:max
        expr: max by (job) (harness_probe_value
"""


def test_prometheus_scrapes_host_target_and_answers_query(
    prometheus_bin_dir: Path, exporter: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(VALID_RULES)
    config = {**scrape_config(exporter), "rule_files": [str(rules)]}
    with PrometheusServer.start(prometheus_bin_dir, config, tmp_path / "prom") as prom:
        samples = prom.wait_for_series('harness_probe_value{job="probe"}')
        assert len(samples) == 1
        assert samples[0]["metric"]["side"] == "host"
        assert samples[0]["metric"]["instance"] == exporter
        assert float(samples[0]["value"][1]) == PROBE_VALUE

        up = prom.query('up{job="probe"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        # The recording rule ran on the scraped series too.
        recorded = prom.wait_for_series("job:harness_probe_value:max")
        assert float(recorded[0]["value"][1]) == PROBE_VALUE
        assert prom.query('harness_probe_value{job="nonexistent"}') == []


def test_promtool_check_config_accepts_valid_and_refuses_broken(
    prometheus_bin_dir: Path, tmp_path: Path
) -> None:
    promtool = str(prometheus_bin_dir / "promtool")
    good = tmp_path / "good.yml"
    good.write_text(PrometheusServer.config_text(scrape_config("127.0.0.1:9")))
    ok = subprocess.run([promtool, "check", "config", str(good)], check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SUCCESS" in ok.stdout + ok.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text("scrape_configs:\n  - job_name: probe\n    scrape_interval: often\n")
    refused = subprocess.run(
        [promtool, "check", "config", str(bad)], check=False, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "often" in refused.stdout + refused.stderr


def test_promtool_check_rules_accepts_valid_and_refuses_broken(
    prometheus_bin_dir: Path, tmp_path: Path
) -> None:
    promtool = str(prometheus_bin_dir / "promtool")
    good = tmp_path / "good-rules.yml"
    good.write_text(VALID_RULES)
    ok = subprocess.run([promtool, "check", "rules", str(good)], check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SUCCESS: 2 rules found" in ok.stdout + ok.stderr

    bad = tmp_path / "bad-rules.yml"
    bad.write_text(BROKEN_RULES)
    refused = subprocess.run(
        [promtool, "check", "rules", str(bad)], check=False, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "parse error" in refused.stdout + refused.stderr
