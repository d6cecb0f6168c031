"""Live-server fixtures for the OCI Distribution integration suite.

One Dockyard server per database backend for the whole session (``sqlite`` embedded
default, ``postgres`` on 127.0.0.1:5432 in a throwaway database); every test works in its
own repository so tests can share it.

``DOCKYARD_IT_REFERENCE=1`` runs the same suite against CNCF Distribution 2.8 (Debian
``docker-registry``) instead, as a single ``reference`` backend — useful to check the tests
themselves; it lacks OCI 1.1 features (referrers, tag paging...), so some tests fail there.

Dockyard refuses anonymous pushes and pulls of private repositories: right after a Dockyard
server starts, the pool creates the superuser ``tester`` with the CLI (same ``--config`` /
``--data-dir`` as the server) and every client sends its Basic credentials on each request
(``registry.auth`` for httpx, ``registry.auth_headers`` for raw sockets). The reference
registry runs without authentication (``auth`` is None there).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from .helpers import (
    PG_ADMIN_DSN,
    PG_URL_TEMPLATE,
    REFERENCE,
    Server,
    create_superuser,
    dockyard_db_upgrade,
    dockyard_server,
    rand,
    reference_server,
)

BACKENDS = ["reference"] if REFERENCE else ["sqlite", "postgres"]


class ServerPool:
    """Starts at most one server per backend, lazily; tears everything down at the end."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.servers: dict[str, Server] = {}
        self.extra: list[Server] = []
        self.pg_db: str | None = None
        self.pg_config: Path | None = None
        self.pg_data: Path | None = None

    # -- postgres -----------------------------------------------------------------
    def _create_pg(self) -> tuple[Path, Path]:
        if self.pg_config is not None:
            assert self.pg_data is not None
            return self.pg_config, self.pg_data
        name = f"dockyard_it_{rand(6)}"
        try:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except Exception as e:
            pytest.fail(f"cannot create PostgreSQL database {name} via {PG_ADMIN_DSN}: {e}", pytrace=False)
        self.pg_db = name
        base = self.factory.mktemp("pg")
        cfg = base / "dockyard.yaml"
        cfg.write_text(f"database:\n  url: {PG_URL_TEMPLATE.format(db=name)}\n")
        data = base / "data"
        data.mkdir()
        dockyard_db_upgrade(cfg, data, base / "db-upgrade.log")
        self.pg_config, self.pg_data = cfg, data
        return cfg, data

    def _drop_pg(self) -> None:
        if not self.pg_db:
            return
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.pg_db,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}"')
        self.pg_db = None

    # -- servers ------------------------------------------------------------------
    def get(self, backend: str) -> Server:
        srv = self.servers.get(backend)
        if srv is not None:
            if srv.proc is not None and srv.proc.poll() is not None:
                pytest.fail(f"{backend} server died (rc={srv.proc.returncode})\n{srv.logs()}", pytrace=False)
            return srv
        if backend == "sqlite":
            base = self.factory.mktemp("sqlite")
            srv = dockyard_server(base, backend="sqlite")
        elif backend == "postgres":
            cfg, data = self._create_pg()
            srv = dockyard_server(data.parent, config=cfg, backend="postgres", data_dir=data)
        elif backend == "reference":
            srv = reference_server(self.factory.mktemp("reference"))
        else:  # pragma: no cover
            raise ValueError(backend)
        self.servers[backend] = srv
        srv.start()
        create_superuser(srv)
        return srv

    def second_instance(self, backend: str) -> Server:
        """Another process sharing the database and data dir of `backend`'s server."""
        first = self.get(backend)
        if backend == "reference":
            srv = reference_server(first.data_dir.parent, data_dir=first.data_dir, log_name=f"second-{rand()}.log")
        else:
            srv = dockyard_server(
                first.data_dir.parent,
                config=first.config,
                backend=backend,
                data_dir=first.data_dir,
                log_name=f"second-{rand()}.log",
            )
        srv.credentials = first.credentials  # same database: same users
        self.extra.append(srv)
        srv.start()
        return srv

    def close(self) -> None:
        for srv in [*self.extra, *self.servers.values()]:
            with contextlib.suppress(Exception):
                srv.stop()
        self._drop_pg()


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session", params=BACKENDS)
def registry(request: pytest.FixtureRequest, server_pool: ServerPool) -> Server:
    """The live server for one backend (tests using it run once per backend)."""
    return server_pool.get(request.param)


@pytest.fixture
def client(registry: Server) -> Iterator[httpx.Client]:
    """An httpx client sending the test superuser's Basic credentials (none for the reference)."""
    with httpx.Client(base_url=registry.url, timeout=60, follow_redirects=False, auth=registry.auth) as c:
        yield c


@pytest.fixture
def anon_client(registry: Server) -> Iterator[httpx.Client]:
    """An httpx client without credentials."""
    with httpx.Client(base_url=registry.url, timeout=60, follow_redirects=False) as c:
        yield c


def _slug(text: str) -> str:
    text = re.sub(r"^test_", "", text.lower())
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:60].strip("-") or "t"


@pytest.fixture
def new_repo(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory for unique repository names: it/<test-name>-<random>[-suffix]."""
    base = _slug(request.node.originalname)

    def make(suffix: str = "") -> str:
        name = f"it/{base}-{rand()}"
        return f"{name}-{suffix}" if suffix else name

    return make


@pytest.fixture
def repo(new_repo: Callable[[str], str]) -> str:
    return new_repo()
