"""Fixtures for the audit suite: live servers on SQLite and PostgreSQL (see support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import PROXY, AuditServer, postgres_database

#: 127.0.0.1 is the trusted proxy; no background jobs (the tests run GC, prune and retention).
SETTINGS = {
    "server": {"trusted_proxies": [f"{PROXY}/32"]},
    "jobs": {"run_in_server": False},
    "gc": {"grace_seconds": 0},
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    """One server per backend for the module's tests."""
    base = tmp_path_factory.mktemp(f"audit-{request.param}")
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
