"""Geo-replication across two object-store backends: SeaweedFS (S3) and Azurite (Azure Blob).

Two Dockyard instances share PostgreSQL; A prefers `east` (S3), B prefers `west` (Azure). A push
through A lands in S3; B serves it at once (a redirect to S3); after replication B serves it from
Azure even with S3 stopped; with Azure down while replication runs, the jobs retry and converge
once it returns.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.storage.servers import azurite, seaweedfs

from .test_two_instances import PASSWORD, Instance, _push

pytestmark = pytest.mark.integration


def _config(path: Path, database: str, east: dict[str, Any], west: dict[str, Any], preference: list[str]) -> None:
    path.write_text(
        json.dumps(
            {
                "database": {"url": database},
                "jobs": {"run_in_server": False},
                "storage": {"locations": {"east": east, "west": west}, "preference": preference},
            }
        )
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pull_via(url: str, repository: str, digest: str) -> tuple[bytes, str]:
    """The blob's bytes and the host that served them (after Dockyard's redirect)."""
    response = httpx.get(
        f"{url}/v2/{repository}/blobs/{digest}", auth=("ops", PASSWORD), timeout=60, follow_redirects=True
    )
    assert response.status_code == 200, response.text
    return response.content, f"{response.url.host}:{response.url.port}"


def _host(options: dict[str, Any]) -> str:
    url = httpx.URL(options["endpoint_url"])
    return f"{url.host}:{url.port}"


Stores = tuple[contextlib.ExitStack, contextlib.ExitStack, dict[str, Any], dict[str, Any], int]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    """Running S3 and Azure stores, each stoppable on its own (closing its ExitStack)."""
    east_stack, west_stack = contextlib.ExitStack(), contextlib.ExitStack()
    with east_stack, west_stack:
        east = east_stack.enter_context(seaweedfs.server(tmp_path / "s3"))
        port = _free_port()
        west = west_stack.enter_context(azurite.server(tmp_path / "azure", port=port))
        yield east_stack, west_stack, east, west, port


def test_cross_backend_replication(database: str, tmp_path: Path, stores: Stores) -> None:
    east_stack, west_stack, east, west, west_port = stores
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
        layer = secrets.token_bytes(6 * 1024 * 1024)
        digest = _push(a.url, "geo/app", layer)

        # Pullable through B at once: redirected to A's store (S3).
        content, served_by = _pull_via(b.url, "geo/app", digest)
        assert content == layer
        assert served_by == _host(east)

        # Azure goes down while replication runs: the jobs fail and stay queued.
        west_stack.close()
        b.cli("replication", "run")
        assert "backlog: 2 jobs pending" in b.cli("replication", "status")

        # Azure comes back on the same port with its data: the retries converge.
        with azurite.server(tmp_path / "azure", port=west_port):
            for _ in range(60):
                b.cli("replication", "run")
                if "backlog: 0 jobs pending" in b.cli("replication", "status"):
                    break
            status = b.cli("replication", "status")
            assert "backlog: 0 jobs pending" in status, status
            assert "location west: 2 held, 0 missing" in status

            # S3 goes down: B serves from its own location (Azure).
            east_stack.close()
            content, served_by = _pull_via(b.url, "geo/app", digest)
            assert content == layer
            assert served_by == _host(west)
    finally:
        a.stop()
        b.stop()
