"""`pull hf://ORG/REPO[@REV]` through huggingface_hub, against a local server in the Hub's layout.

The server answers what huggingface_hub asks a Hub: the model info at a revision
(`/api/models/ORG/REPO[/revision/REV]`, with the commit sha and the file list) and the files
(`/ORG/REPO/resolve/SHA/PATH`), with the Hub's `X-Error-Code` headers on errors.
"""

from __future__ import annotations

import json

import modelplane_contract as contract
import pytest

from tests.runtime.pull.conftest import (
    FaultyHTTPServer,
    PullRunner,
    Route,
    assert_failed,
    tree_digest,
)

PERMANENT = contract.EXIT_PERMANENT
REPO = "acme/tiny-model"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"
FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "model.safetensors": bytes(range(256)) * 512,
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}


def publish(server: FaultyHTTPServer, require_token: bool = False) -> None:
    """Serves REPO at COMMIT, under `main` and by default."""
    auth = ("Authorization", f"Bearer {TOKEN}") if require_token else None
    info = {
        "id": REPO,
        "modelId": REPO,
        "sha": COMMIT,
        "private": require_token,
        "siblings": [{"rfilename": name, "size": len(data)} for name, data in FILES.items()],
    }
    body = json.dumps(info).encode()
    for path in (
        f"/api/models/{REPO}",
        f"/api/models/{REPO}/revision/main",
        f"/api/models/{REPO}/revision/{COMMIT}",
    ):
        server.routes[path] = Route(body, require_header=auth, headers={"Content-Type": "application/json"})
    for name, data in FILES.items():
        server.routes[f"/{REPO}/resolve/{COMMIT}/{name}"] = Route(data, require_header=auth)


@pytest.fixture
def hub(http_server: FaultyHTTPServer, monkeypatch: pytest.MonkeyPatch) -> FaultyHTTPServer:
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return http_server


def expected_digest() -> str:
    return tree_digest(FILES)


@pytest.mark.parametrize("suffix", ["", "@main", f"@{COMMIT}"])
def test_repository_at_a_revision(hub: FaultyHTTPServer, run_pull: PullRunner, suffix: str) -> None:
    publish(hub)
    result = run_pull(f"hf://{REPO}{suffix}", "--digest", expected_digest())
    assert result.code == contract.EXIT_OK, result.stderr
    for name, data in FILES.items():
        assert (result.dest / name).read_bytes() == data
    assert result.record() == {
        "uri": f"hf://{REPO}{suffix}",
        "digest": expected_digest(),
        "bytes": sum(len(d) for d in FILES.values()),
    }


def test_private_repository_with_token(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    publish(hub, require_token=True)
    result = run_pull(f"hf://{REPO}", env={"HF_TOKEN": TOKEN})
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "config.json").read_bytes() == FILES["config.json"]


def test_private_repository_without_token_is_denied(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    publish(hub, require_token=True)
    hub.routes[f"/api/models/{REPO}"].headers["X-Error-Code"] = "RepoNotFound"
    result = run_pull(f"hf://{REPO}")
    assert_failed(result, PERMANENT, contract.REASON_ACCESS_DENIED, "HTTP 401", "HF_TOKEN")


def test_missing_repository_is_not_found(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    hub.routes["/api/models/acme/absent"] = Route(
        b'{"error": "Repository not found"}', status=404, headers={"X-Error-Code": "RepoNotFound"}
    )
    result = run_pull("hf://acme/absent")
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, "hf://acme/absent", "no such repository")


def test_missing_revision_is_not_found(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    publish(hub)
    hub.routes[f"/api/models/{REPO}/revision/v9"] = Route(
        b'{"error": "Invalid rev id: v9"}', status=404, headers={"X-Error-Code": "RevisionNotFound"}
    )
    result = run_pull(f"hf://{REPO}@v9")
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, f"hf://{REPO}@v9", "RevisionNotFoundError")


def test_digest_mismatch_is_refused(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    publish(hub)
    wrong = "sha256:" + "0" * 64
    result = run_pull(f"hf://{REPO}", "--digest", wrong)
    assert_failed(result, PERMANENT, contract.REASON_DIGEST_MISMATCH, wrong, expected_digest())


def test_file_refused_without_token_names_hf_token(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    # The listing is public but a file is not: the refusal still says which variable to fix.
    publish(hub)
    hub.routes[f"/{REPO}/resolve/{COMMIT}/config.json"].require_header = ("Authorization", f"Bearer {TOKEN}")
    result = run_pull(f"hf://{REPO}")
    assert_failed(result, PERMANENT, contract.REASON_ACCESS_DENIED, "HTTP 401", "check HF_TOKEN")


def test_failure_of_one_file_stops_the_others(hub: FaultyHTTPServer, run_pull: PullRunner) -> None:
    # Files come down side by side; when one fails for good, the one still stalling is not retried.
    publish(hub)
    del hub.routes[f"/{REPO}/resolve/{COMMIT}/config.json"]
    stalling = hub.routes[f"/{REPO}/resolve/{COMMIT}/model.safetensors"]
    stalling.fault = "stall"
    result = run_pull(f"hf://{REPO}", env={contract.ENV_PULL_CONCURRENCY: "3"})
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, "config.json", "HTTP 404")
    assert stalling.requests == 1
