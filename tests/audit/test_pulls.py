"""Pulls are recorded in the background, in batches, and never make a pull wait.

The servers here write pulls only when `pull_batch` (10) are buffered or at shutdown (the flush
interval is a minute), and hold at most `pull_buffer` (25) more.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections.abc import Iterator

import psycopg
import pytest

from .support import AuditServer, postgres_database, pull, push

pytestmark = pytest.mark.integration

BATCH = 10
BUFFER = 25
SETTINGS = {
    "jobs": {"run_in_server": False},
    "audit": {"pull_batch": BATCH, "pull_buffer": BUFFER, "pull_flush_seconds": 60},
}


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    base = tmp_path_factory.mktemp(f"pulls-{request.param}")
    if request.param == "sqlite":
        srv = AuditServer.create("sqlite", base, SETTINGS, None)
        try:
            yield srv
        finally:
            srv.stop()
        return
    with postgres_database() as url:
        srv = AuditServer.create("postgres", base, SETTINGS, url)
        try:
            yield srv
        finally:
            srv.stop()


@contextlib.contextmanager
def audit_log_locked(server: AuditServer) -> Iterator[None]:
    """Hold a lock that blocks every INSERT into the audit log (reads go on)."""
    if server.backend == "sqlite":
        conn = sqlite3.connect(server.data_dir / "dockyard.db", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # the database's one write lock
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(server.database_url) as conn:
        conn.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_pulls_are_written_a_batch_at_a_time_and_at_shutdown(server: AuditServer) -> None:
    with server.client() as client:
        digest = push(client, "admin/batched", "v1")
        for _ in range(BATCH):
            assert pull(client, "admin/batched", "v1").status_code == 200
        # A full batch is written at once, with one INSERT.
        pulls = server.wait_for(BATCH, repository="admin/batched", kind="pull")
        assert len(pulls) == BATCH
        assert server.metric("dockyard_audit_pull_flushes_total") == 1
        assert server.metric("dockyard_audit_pulls_recorded_total") == BATCH
        assert {(p.performer, p.metadata["digest"], p.metadata["tag"]) for p in pulls} == {("admin", digest, "v1")}

        for _ in range(3):
            assert pull(client, "admin/batched", digest).status_code == 200
        time.sleep(1.5)
        assert len(server.entries(repository="admin/batched", kind="pull")) == BATCH  # still buffered
    server.stop(signal.SIGTERM)  # a clean shutdown writes the buffer
    pulls = server.entries(repository="admin/batched", kind="pull")
    assert len(pulls) == BATCH + 3
    assert [p.metadata["tag"] for p in pulls[BATCH:]] == [None, None, None]  # pulled by digest
    server.start()


def test_a_pull_never_waits_for_the_log_and_a_full_buffer_drops(server: AuditServer) -> None:
    pulls = BATCH + BUFFER + 15
    with server.client() as client:
        push(client, "admin/busy", "v1")
        assert pull(client, "admin/busy", "v1", "HEAD").status_code == 200  # logs in (cached)
        with audit_log_locked(server):
            slowest = 0.0
            for _ in range(pulls):
                started = time.monotonic()
                assert pull(client, "admin/busy", "v1").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 1.0, f"a pull waited {slowest:.2f}s on the locked audit log"
            assert server.entries(repository="admin/busy", kind="pull") == []
            dropped = server.metric("dockyard_audit_pulls_dropped_total")
        # The first batch was being written when the lock came; the buffer held BUFFER more.
        assert dropped == pulls - BATCH - BUFFER
        written = server.wait_for(BATCH + BUFFER, repository="admin/busy", kind="pull")
        assert len(written) == BATCH + BUFFER
        assert server.metric("dockyard_audit_pulls_recorded_total") == BATCH + BUFFER


def test_blob_gets_and_heads_are_not_pulls(server: AuditServer) -> None:
    with server.client() as client:
        push(client, "admin/notpulls", "v1")
        manifest = pull(client, "admin/notpulls", "v1", "HEAD")
        assert manifest.status_code == 200
        layer = pull(client, "admin/notpulls", "v1").json()["layers"][0]["digest"]
        assert client.get(f"/v2/admin/notpulls/blobs/{layer}").status_code == 200
        assert client.head(f"/v2/admin/notpulls/blobs/{layer}").status_code == 200
    server.stop(signal.SIGTERM)
    assert len(server.entries(repository="admin/notpulls", kind="pull")) == 1
    server.start()


def test_nothing_is_recorded_when_the_audit_log_is_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = AuditServer.create("sqlite", tmp_path_factory.mktemp("audit-off"), {"audit": {"enabled": False}}, None)
    try:
        with srv.client() as client:
            push(client, "admin/quiet", "v1")
            assert pull(client, "admin/quiet", "v1").status_code == 200
            assert client.get("/v2/auth", auth=("admin", "wrong")).status_code == 401
        srv.cli("repo", "create", "admin/quiet2")
        srv.cli("tag", "immutable", "admin/quiet", "v1", "on")
    finally:
        srv.stop(signal.SIGTERM)
    assert srv.entries() == []
