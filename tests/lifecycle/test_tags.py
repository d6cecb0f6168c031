"""Tag history, time machine, expiry and immutability over HTTP and the CLI (embedded default)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Server:
    url: str
    data_dir: Path
    client: httpx.Client

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKYARD, *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True, timeout=60, check=False
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("lifecycle")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"dockyard did not start:\n{(data_dir / 'server.log').read_text()}")
            time.sleep(0.1)
        password = (data_dir / "initial-admin-password").read_text().strip()
        with httpx.Client(base_url=url, auth=("admin", password), timeout=30) as client:
            yield Server(url, data_dir, client)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


def _blob(server: Server, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = server.client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def _push(server: Server, repository: str, tag: str, *, labels: dict[str, str] | None = None, seed: str = "") -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {}}}).encode()
    layer = f"layer {seed} {tag}".encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(server, repository, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _blob(server, repository, layer),
                    "size": len(layer),
                }
            ],
        },
        indent=1,
    ).encode()
    response = server.client.put(
        f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return manifest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _get(server: Server, repository: str, tag: str) -> httpx.Response:
    return server.client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})


def _tags(server: Server, repository: str) -> list[str]:
    return list(server.client.get(f"/v2/{repository}/tags/list").json()["tags"])


def test_history_and_restore_after_move_and_delete(server: Server) -> None:
    first = _push(server, "admin/tm", "v1", seed="a")
    second = _push(server, "admin/tm", "v1", seed="b")
    history = server.cli("tag", "history", "admin/tm", "v1").stdout.splitlines()
    assert [line.split("\t")[0] for line in history] == [_digest(second), _digest(first)]

    server.cli("tag", "restore", "admin/tm", "v1", _digest(first))
    assert _get(server, "admin/tm", "v1").content == first  # byte-identical

    assert server.client.delete("/v2/admin/tm/manifests/v1").status_code == 202
    assert _get(server, "admin/tm", "v1").status_code == 404
    assert "v1" not in _tags(server, "admin/tm")
    server.cli("tag", "restore", "admin/tm", "v1", _digest(second))
    assert _get(server, "admin/tm", "v1").content == second


def test_restore_of_a_deleted_manifest(server: Server) -> None:
    manifest = _push(server, "admin/tm2", "keep", seed="c")
    assert server.client.delete(f"/v2/admin/tm2/manifests/{_digest(manifest)}").status_code == 202
    assert server.client.get(f"/v2/admin/tm2/manifests/{_digest(manifest)}").status_code == 404
    server.cli("tag", "restore", "admin/tm2", "keep", _digest(manifest))
    assert _get(server, "admin/tm2", "keep").content == manifest


def test_no_restore_outside_the_window_or_after_purge(server: Server) -> None:
    first = _push(server, "admin/tm3", "v1", seed="d")
    _push(server, "admin/tm3", "v1", seed="e")
    server.cli("org", "time-machine", "admin", "0")
    try:
        refused = server.cli("tag", "restore", "admin/tm3", "v1", _digest(first), ok=False)
        assert refused.returncode != 0
        assert "time-machine window" in refused.stderr
    finally:
        server.cli("org", "time-machine", "admin", "14d")
    server.cli("tag", "purge", "admin/tm3", "v1")
    assert _get(server, "admin/tm3", "v1").status_code == 404
    assert server.cli("tag", "history", "admin/tm3", "v1").stdout == ""
    assert server.cli("tag", "restore", "admin/tm3", "v1", _digest(first), ok=False).returncode != 0


def test_expiry_set_on_the_cli_hides_the_tag(server: Server) -> None:
    _push(server, "admin/exp", "soon", seed="f")
    _push(server, "admin/exp", "later", seed="g")
    server.cli("tag", "expire", "admin/exp", "soon", "--in", "1s")
    time.sleep(1.3)
    assert _get(server, "admin/exp", "soon").status_code == 404
    assert _tags(server, "admin/exp") == ["later"]
    # An expired tag can be pushed again.
    _push(server, "admin/exp", "soon", seed="h")
    assert _get(server, "admin/exp", "soon").status_code == 200
    server.cli("tag", "expire", "admin/exp", "later", "--in", "2h")
    server.cli("tag", "expire", "admin/exp", "later", "--clear")
    assert server.cli("tag", "history", "admin/exp", "later").stdout.strip().split("\t")[3] == "expires -"


@pytest.mark.parametrize("label", ["dockyard.expires-after", "quay.expires-after"])
def test_expiry_from_image_label(server: Server, label: str) -> None:
    repository = f"admin/label-{label.split('.', maxsplit=1)[0]}"
    _push(server, repository, "v1", labels={label: "2h"}, seed=label)
    expires = server.cli("tag", "history", repository, "v1").stdout.strip().split("\t")[3]
    assert expires != "expires -"
    bad = json.dumps({"config": {"Labels": {label: "soon"}}}).encode()
    config_digest = _blob(server, repository, bad)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(bad),
            },
            "layers": [],
        }
    )
    response = server.client.put(
        f"/v2/{repository}/manifests/v2", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert "v2" not in _tags(server, repository)


def test_immutability_rule_resists_move_and_delete(server: Server) -> None:
    pinned = _push(server, "admin/imm", "v1.0", seed="i")
    server.cli("repo", "immutable-rule", "add", "admin/imm", "v*")
    assert server.cli("repo", "immutable-rule", "list", "admin/imm").stdout.split() == ["v*"]
    for attempt in (
        lambda: server.client.put(
            "/v2/admin/imm/manifests/v1.0",
            content=_push(server, "admin/imm", "other", seed="j"),
            headers={"Content-Type": OCI_MANIFEST},
        ),
        lambda: server.client.delete("/v2/admin/imm/manifests/v1.0"),
        lambda: server.client.delete(f"/v2/admin/imm/manifests/{_digest(pinned)}"),
    ):
        response = attempt()
        assert response.status_code == 403
        error = response.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "'v*'" in error["message"]
        assert _get(server, "admin/imm", "v1.0").content == pinned
    # Tags outside the pattern move freely; removing the rule frees v1.0.
    _push(server, "admin/imm", "latest", seed="k")
    _push(server, "admin/imm", "latest", seed="l")
    server.cli("repo", "immutable-rule", "remove", "admin/imm", "v*")
    assert server.client.delete("/v2/admin/imm/manifests/v1.0").status_code == 202


def test_immutable_flag_on_one_tag(server: Server) -> None:
    pinned = _push(server, "admin/flag", "prod", seed="m")
    server.cli("tag", "immutable", "admin/flag", "prod", "on")
    response = server.client.delete("/v2/admin/flag/manifests/prod")
    assert response.status_code == 403
    assert "marked immutable" in response.json()["errors"][0]["message"]
    assert _get(server, "admin/flag", "prod").content == pinned
    server.cli("tag", "immutable", "admin/flag", "prod", "off")
    assert server.client.delete("/v2/admin/flag/manifests/prod").status_code == 202
