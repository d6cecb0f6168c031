"""Garbage collection over HTTP and the CLI, on the embedded default (SQLite, local disk).

The server runs with a 2-second grace period. Background collection is off in the first module
server so that each test decides when a pass runs (`dockyard gc run`); the last test starts a
server that collects on its own.
"""

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
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GRACE = 5


@dataclass
class Server:
    url: str
    data_dir: Path
    config: Path
    client: httpx.Client

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKYARD, *args, "--config", str(self.config)], capture_output=True, text=True, timeout=120, check=False
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def stored(self, digest: str) -> bool:
        """Whether local storage holds an object for `digest`."""
        hex_part = digest.split(":", 1)[1]
        return any(path.is_file() for path in self.data_dir.rglob(hex_part))


def _start(data_dir: Path, gc: dict[str, object]) -> tuple[subprocess.Popen[bytes], Server]:
    config = data_dir / "dockyard.yaml"
    settings = {"data_dir": str(data_dir), "gc": gc, "jobs": {"poll_seconds": 0.2}}
    config.write_text(json.dumps(settings))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(port), "--config", str(config), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 401:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"dockyard did not start:\n{(data_dir / 'server.log').read_text()}")
        time.sleep(0.1)
    password = (data_dir / "initial-admin-password").read_text().strip()
    client = httpx.Client(base_url=url, auth=("admin", password), timeout=30)
    return process, Server(url, data_dir, config, client)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, running = _start(
        tmp_path_factory.mktemp("gc"),
        {"enabled": False, "grace_seconds": GRACE, "upload_grace_seconds": GRACE, "orphan_grace_seconds": GRACE},
    )
    try:
        yield running
    finally:
        running.client.close()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(server: Server, repository: str, data: bytes) -> str:
    digest = _digest(data)
    response = server.client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def _manifest(server: Server, repository: str, layers: list[bytes], extra: dict[str, object] | None = None) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "layers": len(layers)}).encode()
    document: dict[str, object] = {
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
                "digest": _blob(server, repository, data),
                "size": len(data),
            }
            for data in layers
        ],
    }
    document.update(extra or {})
    return json.dumps(document).encode()


def _put(server: Server, repository: str, reference: str, content: bytes, media_type: str = OCI_MANIFEST) -> None:
    response = server.client.put(
        f"/v2/{repository}/manifests/{reference}", content=content, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text


def _status(server: Server, path: str) -> int:
    return server.client.head(path, headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}).status_code


def _collect(server: Server) -> str:
    time.sleep(GRACE + 0.2)
    return server.cli("gc", "run").stdout


def test_dry_run_lists_and_changes_nothing_then_run_collects(server: Server) -> None:
    shared, unique = b"shared layer for dry run", b"unique layer for dry run"
    keep = _manifest(server, "admin/dry", [shared, b"kept alone"])
    _put(server, "admin/dry", "keep", keep)
    gone = _manifest(server, "admin/dry", [shared, unique])
    _put(server, "admin/dry", "gone", gone)
    server.cli("org", "time-machine", "admin", "0")
    try:
        assert server.client.delete("/v2/admin/dry/manifests/gone").status_code == 202
        time.sleep(GRACE + 0.2)

        listing = server.cli("gc", "--dry-run").stdout
        assert f"manifest     admin/dry@{_digest(gone)}" in listing
        assert f"blob         {_digest(unique)}" in listing
        assert _digest(shared) not in listing
        assert "freed" in listing
        # Nothing changed.
        assert _status(server, f"/v2/admin/dry/manifests/{_digest(gone)}") == 200
        assert _status(server, f"/v2/admin/dry/blobs/{_digest(unique)}") == 200
        assert server.stored(_digest(unique))

        output = server.cli("gc", "run").stdout
        assert "collected" in output
        assert _status(server, f"/v2/admin/dry/manifests/{_digest(gone)}") == 404
        assert _status(server, f"/v2/admin/dry/blobs/{_digest(unique)}") == 404
        assert not server.stored(_digest(unique))
        # What the kept image needs is intact.
        assert server.client.get("/v2/admin/dry/manifests/keep", headers={"Accept": OCI_MANIFEST}).content == keep
        for layer in (shared, b"kept alone"):
            assert server.client.get(f"/v2/admin/dry/blobs/{_digest(layer)}").content == layer
    finally:
        server.cli("org", "time-machine", "admin", "14d")


def test_restorable_tags_keep_their_manifests(server: Server) -> None:
    old = _manifest(server, "admin/window", [b"old layer in window"])
    _put(server, "admin/window", "v1", old)
    _put(server, "admin/window", "v1", _manifest(server, "admin/window", [b"new layer in window"]))
    _collect(server)
    # Moved away from, but inside the 14-day window: restorable, so kept.
    server.cli("tag", "restore", "admin/window", "v1", _digest(old))
    assert server.client.get("/v2/admin/window/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == old


def test_index_keeps_its_children_and_subject_keeps_its_referrers(server: Server) -> None:
    repository = "admin/graph"
    children = []
    for arch in ("amd64", "arm64"):
        child = _manifest(server, repository, [f"layer for {arch}".encode()])
        _put(server, repository, _digest(child), child)
        children.append(child)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": _digest(c), "size": len(c)} for c in children],
        }
    ).encode()
    _put(server, repository, "multi", index, OCI_INDEX)
    signature = _manifest(
        server,
        repository,
        [b"signature payload"],
        {
            "artifactType": "application/vnd.example.signature",
            "subject": {"mediaType": OCI_INDEX, "digest": _digest(index), "size": len(index)},
        },
    )
    _put(server, repository, _digest(signature), signature)
    stray = _manifest(server, repository, [b"stray untagged layer"])
    _put(server, repository, _digest(stray), stray)

    _collect(server)
    for child in children:
        assert _status(server, f"/v2/{repository}/manifests/{_digest(child)}") == 200
    assert _status(server, f"/v2/{repository}/manifests/{_digest(signature)}") == 200
    referrers = server.client.get(f"/v2/{repository}/referrers/{_digest(index)}").json()["manifests"]
    assert [r["digest"] for r in referrers] == [_digest(signature)]
    # Untagged and unreferenced: collected.
    assert _status(server, f"/v2/{repository}/manifests/{_digest(stray)}") == 404
    assert _status(server, f"/v2/{repository}/blobs/{_digest(b'stray untagged layer')}") == 404

    server.cli("tag", "purge", repository, "multi")
    _collect(server)
    for gone in (index, signature, *children):
        assert _status(server, f"/v2/{repository}/manifests/{_digest(gone)}") == 404
    for layer in (b"layer for amd64", b"layer for arm64", b"signature payload"):
        assert _status(server, f"/v2/{repository}/blobs/{_digest(layer)}") == 404
        assert not server.stored(_digest(layer))


def test_blob_without_manifest_lives_through_its_grace_period(server: Server) -> None:
    data = b"uploaded, manifest not yet pushed"
    _blob(server, "admin/grace", data)
    server.cli("gc", "run")
    assert _status(server, f"/v2/admin/grace/blobs/{_digest(data)}") == 200
    _collect(server)
    assert _status(server, f"/v2/admin/grace/blobs/{_digest(data)}") == 404
    assert not server.stored(_digest(data))


def test_abandoned_upload_is_released(server: Server) -> None:
    started = server.client.post("/v2/admin/abandon/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    assert server.client.patch(location, content=b"x" * 1000).status_code == 202
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    assert any(upload_id in str(path) for path in server.data_dir.rglob("*"))
    _collect(server)
    assert server.client.get(location).status_code == 404
    assert not any(upload_id in str(path) for path in server.data_dir.rglob("*"))


def test_repository_delete_hides_at_once_frees_the_name_and_purges(server: Server) -> None:
    layer = b"layer of a deleted repository"
    _put(server, "admin/doomed", "v1", _manifest(server, "admin/doomed", [layer]))
    server.cli("repo", "delete", "admin/doomed")
    assert server.client.get("/v2/admin/doomed/tags/list").status_code == 404
    assert _status(server, f"/v2/admin/doomed/blobs/{_digest(layer)}") == 404
    assert "admin/doomed" not in server.client.get("/v2/_catalog").json()["repositories"]
    # The name is free again at once.
    fresh = _manifest(server, "admin/doomed", [b"layer of the new repository"])
    _put(server, "admin/doomed", "v1", fresh)
    _collect(server)
    assert not server.stored(_digest(layer))
    assert server.client.get("/v2/admin/doomed/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == fresh
    assert server.cli("repo", "delete", "admin/nonexistent", ok=False).returncode != 0


def test_org_delete(server: Server) -> None:
    server.cli("org", "create", "doomedorg", "--owner", "admin")
    layer = b"layer in a deleted organization"
    _put(server, "doomedorg/app", "v1", _manifest(server, "doomedorg/app", [layer]))
    server.cli("org", "delete", "doomedorg", "--yes")
    assert server.client.get("/v2/doomedorg/app/tags/list").status_code == 404
    _collect(server)
    assert not server.stored(_digest(layer))
    server.cli("org", "create", "doomedorg", "--owner", "admin")  # the name is free again


def test_sweep_removes_storage_the_database_does_not_know(server: Server) -> None:
    """What a crash can leave: an upload's file without its session, a blob object never recorded."""
    storage = server.data_dir / "storage"
    orphan_upload = storage / "uploads" / "0b5e7c1e-0000-4000-8000-000000000001"
    orphan_upload.parent.mkdir(parents=True, exist_ok=True)
    orphan_upload.write_bytes(b"left by a crash")
    unrecorded = b"completed but never recorded"
    hex_part = _digest(unrecorded).split(":", 1)[1]
    orphan_blob = storage / "blobs" / "sha256" / hex_part[:2] / hex_part
    orphan_blob.parent.mkdir(parents=True, exist_ok=True)
    orphan_blob.write_bytes(unrecorded)
    kept = b"a recorded blob stays"
    _put(server, "admin/sweep", "v1", _manifest(server, "admin/sweep", [kept]))

    listing = server.cli("gc", "--dry-run", "--sweep").stdout
    assert "sweep:" in listing
    server.cli("gc", "run", "--sweep")
    # First seen: within the grace period.
    assert orphan_upload.exists()
    assert orphan_blob.exists()
    time.sleep(GRACE + 0.2)
    output = server.cli("gc", "run", "--sweep").stdout
    assert "swept 2 orphaned objects" in output
    assert not orphan_upload.exists()
    assert not orphan_blob.exists()
    assert server.client.get(f"/v2/admin/sweep/blobs/{_digest(kept)}").content == kept


def test_status_and_metrics(server: Server) -> None:
    status = server.cli("gc", "status").stdout
    assert "passes:" in status
    assert "pending_storage_deletions: 0" in status
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'dockyard_gc_collected_total{kind="blobs"}' in metrics
    assert "dockyard_gc_freed_bytes_total" in metrics
    freed = next(line for line in metrics.splitlines() if line.startswith("dockyard_gc_freed_bytes_total "))
    assert float(freed.split()[1]) > 0


def test_background_collection(tmp_path: Path) -> None:
    process, running = _start(tmp_path, {"enabled": True, "interval_seconds": 1, "grace_seconds": 1})
    try:
        data = b"collected in the background"
        _blob(running, "admin/bg", data)
        deadline = time.monotonic() + 30
        while _status(running, f"/v2/admin/bg/blobs/{_digest(data)}") == 200:
            assert time.monotonic() < deadline, "the background collector did not run"
            time.sleep(0.3)
        while running.stored(_digest(data)):
            assert time.monotonic() < deadline, "the object was not deleted from storage"
            time.sleep(0.3)
    finally:
        running.client.close()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
