"""`modelplane render` prints what the operator would apply; configuration comes from the env."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from modelplane import render, spec
from modelplane.cli import main
from modelplane.config import Config, ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_render_prints_the_same_children_as_the_renderers(capsys: pytest.CaptureFixture[str]) -> None:
    source = REPO / "tests/operator/golden/sklearn-s3.input.yaml"
    assert main(["render", str(source)]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    md = spec.parse(yaml.safe_load(source.read_text()))
    assert printed == render.children(md, Config.from_env({}).render)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_and_says_what_it_shows(example: Path) -> None:
    assert example.read_text().startswith("# Shows: ")
    result = subprocess.run(
        [str(REPO / ".venv/bin/modelplane"), "render", str(example)],
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert "Deployment" in kinds
    assert "Service" in kinds


def test_render_reports_an_invalid_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: modelplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
        "spec: {model: {uri: 'ftp://a/b', format: sklearn}}\n"
    )
    assert main(["render", str(bad)]) == 1
    assert "spec.model.uri" in capsys.readouterr().err


def test_config_from_env() -> None:
    config = Config.from_env(
        {
            "MODELPLANE_WATCH_NAMESPACES": "a, b",
            "MODELPLANE_RUNTIME_IMAGE": "img:1",
            "MODELPLANE_DEFAULT_REQUESTS": "cpu=50m,memory=64Mi",
            "MODELPLANE_DEFAULT_LIMITS": "",
            "MODELPLANE_FIELD_MANAGER": "mp",
            "MODELPLANE_METRICS_PORT": "0",
            "MODELPLANE_PROMETHEUS_URL": "http://127.0.0.1:19090",
        }
    )
    assert config.namespaces == ("a", "b")
    assert config.render.runtime_image == "img:1"
    assert config.render.requests == {"cpu": "50m", "memory": "64Mi"}
    assert config.render.limits == {}
    assert config.field_manager == "mp"
    assert config.metrics_port == 0
    assert config.render.prometheus_url == "http://127.0.0.1:19090"  # KEDA's triggers query it


def test_config_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="MODELPLANE_METRICS_PORT"):
        Config.from_env({"MODELPLANE_METRICS_PORT": "many"})
    with pytest.raises(ConfigError, match="MODELPLANE_DEFAULT_REQUESTS"):
        Config.from_env({"MODELPLANE_DEFAULT_REQUESTS": "cpu"})


def test_resync_retry_and_workers_from_env() -> None:
    config = Config.from_env(
        {
            "MODELPLANE_RESYNC_SECONDS": "3600",
            "MODELPLANE_RETRY_SECONDS": "0.5",
            "MODELPLANE_RETRY_MAX_SECONDS": "120",
            "MODELPLANE_WORKERS": "2",
        }
    )
    assert (config.resync_seconds, config.retry_seconds, config.retry_max_seconds, config.workers) == (
        3600,
        0.5,
        120,
        2,
    )
    assert Config.from_env({}).resync_seconds == 600
    with pytest.raises(ConfigError, match="MODELPLANE_RESYNC_SECONDS"):
        Config.from_env({"MODELPLANE_RESYNC_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="MODELPLANE_RETRY_SECONDS"):
        Config.from_env({"MODELPLANE_RETRY_SECONDS": "-1"})
