"""Geo-replication with two Dockyard instances sharing PostgreSQL and two storage locations.

Instance A prefers location `east`, instance B prefers `west`. A push through A lands in `east`;
B serves it at once (from `east`); after replication B serves it from `west`, even with `east`
gone; a location that is down while replication runs is retried until it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = secrets.token_urlsafe(12)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    def __init__(self, config: Path, data_dir: Path, log: Path) -> None:
        self.config, self.data_dir, self.log = config, data_dir, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [DOCKYARD, *args, "--config", str(self.config), "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
                    *("--config", str(self.config), "--data-dir", str(self.data_dir)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 401:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"dockyard did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _config(path: Path, database: str, east: Path, west: Path, preference: list[str]) -> None:
    path.write_text(
        json.dumps(
            {
                "database": {"url": database},
                # Replication runs only when the test says so (`dockyard replication run`).
                "jobs": {"run_in_server": False},
                "storage": {
                    "locations": {
                        "east": {"driver": "local", "root": str(east)},
                        "west": {"driver": "local", "root": str(west)},
                    },
                    "preference": preference,
                },
            }
        )
    )


@pytest.fixture
def pair(database: str, tmp_path: Path) -> Iterator[tuple[Instance, Instance, Path, Path]]:
    east, west = tmp_path / "east", tmp_path / "west"
    a_conf, b_conf = tmp_path / "a.yaml", tmp_path / "b.yaml"
    _config(a_conf, database, east, west, ["east", "west"])
    _config(b_conf, database, east, west, ["west", "east"])
    a = Instance(a_conf, tmp_path / "a", tmp_path / "a.log")
    b = Instance(b_conf, tmp_path / "b", tmp_path / "b.log")
    a.cli("db", "upgrade")
    a.cli("user", "create", "ops", "--superuser", "--password-stdin", stdin=PASSWORD)
    a.start()
    b.start()
    try:
        yield a, b, east, west
    finally:
        a.stop()
        b.stop()


def _push(url: str, repository: str, layer: bytes) -> str:
    config = b'{"architecture":"amd64","os":"linux"}'
    with httpx.Client(base_url=url, auth=("ops", PASSWORD), timeout=30) as client:
        for blob in (config, layer):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            response = client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=blob)
            assert response.status_code == 201, response.text
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
        response = client.put(
            f"/v2/{repository}/manifests/v1",
            content=json.dumps(manifest),
            headers={"Content-Type": manifest["mediaType"]},
        )
        assert response.status_code == 201, response.text
    return "sha256:" + hashlib.sha256(layer).hexdigest()


def _pull(url: str, repository: str, digest: str) -> bytes:
    response = httpx.get(f"{url}/v2/{repository}/blobs/{digest}", auth=("ops", PASSWORD), timeout=30)
    assert response.status_code == 200, response.text
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    return response.content


def _objects(root: Path) -> int:
    return sum(1 for _ in (root / "blobs").rglob("*") if _.is_file()) if (root / "blobs").exists() else 0


def test_push_on_a_pull_on_b_then_replicate(pair: tuple[Instance, Instance, Path, Path]) -> None:
    a, b, east, west = pair
    layer = secrets.token_bytes(3 * 1024 * 1024)
    digest = _push(a.url, "geo/app", layer)
    assert _objects(east) == 2
    assert _objects(west) == 0
    assert "backlog: 2 jobs pending" in a.cli("replication", "status")

    # Pullable everywhere immediately: B prefers west, which does not hold it yet.
    assert _pull(b.url, "geo/app", digest) == layer

    assert "ran 2 jobs" in b.cli("replication", "run")
    assert _objects(west) == 2
    status = b.cli("replication", "status")
    assert "backlog: 0 jobs pending" in status
    assert "location east: 2 held, 0 missing" in status
    assert "location west: 2 held, 0 missing" in status

    # East goes away: B serves from its own location.
    shutil.rmtree(east)
    assert _pull(b.url, "geo/app", digest) == layer


def test_replication_retries_while_a_location_is_down(pair: tuple[Instance, Instance, Path, Path]) -> None:
    a, b, east, west = pair
    layer = secrets.token_bytes(1024 * 1024)
    digest = _push(a.url, "geo/retry", layer)
    # West is "down": its root is a file, so every write fails.
    shutil.rmtree(west, ignore_errors=True)
    west.write_text("not a directory")
    b.cli("replication", "run")
    status = b.cli("replication", "status")
    assert "backlog: 2 jobs pending" in status
    assert "location west: 0 held, 2 missing" in status
    # It comes back; the retries (after their backoff) converge.
    west.unlink()
    west.mkdir()
    deadline = time.monotonic() + 30
    while "backlog: 0 jobs pending" not in b.cli("replication", "status"):
        assert time.monotonic() < deadline, b.cli("replication", "status")
        b.cli("replication", "run")
        time.sleep(0.5)
    assert _objects(west) == 2
    shutil.rmtree(east)
    assert _pull(b.url, "geo/retry", digest) == layer
