"""A pull right after a push sees it, on every worker process (SQLite snapshot regression)."""

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
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, tuple[str, str], Path]]:
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path), "--workers", "2"],
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
                pytest.fail(f"dockyard did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.1)
        password = (tmp_path / "initial-admin-password").read_text().strip()
        yield url, ("admin", password), tmp_path
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


def test_tag_pushed_after_a_miss_is_served_by_every_worker(two_workers: tuple[str, tuple[str, str], Path]) -> None:
    url, credentials, data_dir = two_workers
    subprocess.run(
        [DOCKYARD, "repo", "create", "admin/app", "--public", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # Anonymous misses on both workers first: their access checks read rows (namespace,
    # repository), which must not pin the workers' read snapshots.
    for _ in range(20):
        assert httpx.get(f"{url}/v2/admin/app/manifests/v1", timeout=10).status_code == 404
    with httpx.Client(base_url=url, auth=credentials, timeout=10) as client:
        config = b'{"architecture":"amd64","os":"linux"}'
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        assert client.post(f"/v2/admin/app/blobs/uploads/?digest={digest}", content=config).status_code == 201
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest,
                    "size": len(config),
                },
                "layers": [],
            }
        )
        put = client.put(
            "/v2/admin/app/manifests/v1",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert put.status_code == 201, put.text
    statuses = [httpx.get(f"{url}/v2/admin/app/manifests/v1", timeout=10).status_code for _ in range(20)]
    assert statuses == [200] * 20
    with httpx.Client(base_url=url, auth=credentials, timeout=10) as client:
        blob = [client.head(f"/v2/admin/app/blobs/{digest}").status_code for _ in range(10)]
        assert blob == [200] * 10
