"""A Prometheus of the test's own (built from its Go module by `make prometheus`) and its HTTP API.

with PrometheusServer.start(bin_dir, config, workdir) as prom:
    series = prom.wait_for_series('up{job="app"}')
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.cluster import REPO_ROOT, Cluster, wait_until
from tests.support.net import free_port

READY_TIMEOUT = 60.0
POLL_INTERVAL = 0.5
CHART_FILES = REPO_ROOT / "charts" / "modelplane" / "files"
#: The series only language models export: vLLM's names, and our engine's own.
LLM_SERIES = ("vllm:", "modelplane_llm_")


def dashboard_queries(*, llm: bool) -> list[tuple[str, str]]:
    """(panel title, PromQL) of the chart's Grafana dashboard: the panels over a language model's
    series (llm=True), or all the others. Rows hold no query."""
    dashboard = json.loads((CHART_FILES / "dashboard.json").read_text())
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    return [(title, expr) for title, expr in queries if any(s in expr for s in LLM_SERIES) == llm]


def chart_prometheus_config(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The chart's own scrape job (files/scrape-config.yaml: Kubernetes discovery of pods, following their
    prometheus.io/* annotations), pointed at the local cluster and one namespace, and the chart's
    alerting rules."""
    jobs = yaml.safe_load((CHART_FILES / "scrape-config.yaml").read_text())
    for job in jobs:
        for discovery in job["kubernetes_sd_configs"]:
            discovery["kubeconfig_file"] = str(cluster.kubeconfig)
            discovery["namespaces"] = {"names": [namespace]}
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(CHART_FILES / "alerts.yaml")],
        "scrape_configs": jobs,
    }


class PrometheusError(AssertionError):
    pass


@dataclass
class PrometheusApi:
    """The HTTP API of the Prometheus at URL: one a test started, or the harness's (make keda)."""

    url: str

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH and return its `data`, raising on an error status."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"GET /api/v1/{path} {params}: {response.status_code} {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns the vector's samples ({"metric": {...}, "value": [ts, "v"]})."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{promql!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for_series(self, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Polls QUERY until it returns at least one sample (scrapes happen on Prometheus' own clock)."""
        try:
            return wait_until(f"series {promql!r}", lambda: self.query(promql), timeout, POLL_INTERVAL)
        except AssertionError as timed_out:
            targets = self.api("targets")["activeTargets"]
            health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
            raise PrometheusError(f"{timed_out}; scrape targets: {health}") from None


@dataclass
class PrometheusServer(PrometheusApi):
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    @contextmanager
    def start(cls, bin_dir: Path, config: str | dict[str, Any], workdir: Path) -> Iterator[PrometheusServer]:
        """Starts Prometheus with CONFIG on a free loopback port, waits until it is ready, stops it after."""
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(cls.config_text(config))
        port = free_port()
        log_path = workdir / "prometheus.log"
        cmd = [
            str(bin_dir / "prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        server = cls(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()

    @staticmethod
    def config_text(config: str | dict[str, Any]) -> str:
        return config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(f"prometheus ready at {self.url}", ready, timeout=timeout, interval=POLL_INTERVAL)

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
