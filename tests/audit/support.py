"""A live Dockyard for the audit tests, on SQLite (embedded default) or a throwaway PostgreSQL
database, and ways to read its audit log back (in-process, on the server's own database).

The server trusts 127.0.0.1 as a reverse proxy: clients connecting from 127.0.0.1 may name the
client address in X-Forwarded-For; clients bound to 127.0.0.2 are direct, untrusted peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import yaml

from dockyard.db.audit import AuditStore
from dockyard.db.engine import Database, create_serving_engine
from dockyard.domain.audit import AuditEntry, AuditFilter

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PROXY = "127.0.0.1"
DIRECT = "127.0.0.2"
#: The performer the audit log names for CLI commands run by this test process's user.
OS_USER = getpass.getuser() or "cli"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"dockyard_audit_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            admin.execute(f'DROP DATABASE "{name}"')


@dataclass
class AuditServer:
    backend: str
    base: Path
    settings: dict[str, Any]
    database_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    password: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def config(self) -> Path:
        return self.base / "dockyard.yaml"

    @classmethod
    def create(cls, backend: str, base: Path, settings: dict[str, Any], database_url: str | None) -> AuditServer:
        url = database_url or f"sqlite:///{base / 'data' / 'dockyard.db'}"
        server = cls(backend, base, settings, url)
        server.data_dir.mkdir(parents=True, exist_ok=True)
        config = dict(settings)
        if database_url is not None:
            config["database"] = {"url": database_url}
        server.config.write_text(yaml.safe_dump(config))
        if database_url is not None:
            server.cli("db", "upgrade")
        server.start()
        if database_url is None:
            server.password = (server.data_dir / "initial-admin-password").read_text().strip()
        else:
            server.password = secrets.token_urlsafe(18)
            server.cli("user", "create", "admin", "--superuser", "--password-stdin", stdin=server.password)
        return server

    def start(self) -> None:
        log = (self.base / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                *(DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
                *("--config", str(self.config), "--data-dir", str(self.data_dir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 401:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"dockyard did not start:\n{(self.base / 'server.log').read_text()[-4000:]}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: a clean shutdown, which writes buffered pulls)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def cli(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKYARD, *args, "--config", str(self.config), "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"dockyard {' '.join(args)}: {result.stderr}"
        return result

    def client(self, *, source: str = PROXY, auth: tuple[str, str] | None = None, **headers: str) -> httpx.Client:
        """A client connecting from `source` (PROXY: trusted, DIRECT: not), as admin by default."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(
            base_url=self.url,
            auth=auth or ("admin", self.password),
            headers=headers,
            transport=transport,
            timeout=60,
        )

    # -- the log, read in-process on the server's database ----------------------------------------

    def in_process(self, action: Callable[[Database], Awaitable[T]]) -> T:
        async def main() -> T:
            db = Database(create_serving_engine(self.database_url, pool_size=1))
            try:
                return await action(db)
            finally:
                await db.dispose()

        return asyncio.run(main())

    def entries(self, **wanted: Any) -> list[AuditEntry]:
        """Entries matching `wanted` (AuditFilter fields), oldest first."""
        found = self.in_process(lambda db: AuditStore(db).newest_first(AuditFilter(**wanted), None, 10_000))
        return found[::-1]

    def one(self, **wanted: Any) -> AuditEntry:
        found = self.entries(**wanted)
        assert len(found) == 1, f"expected one entry for {wanted}, found {found}"
        return found[0]

    def wait_for(self, count: int, timeout: float = 10, **wanted: Any) -> list[AuditEntry]:
        """Poll until at least `count` entries match (pulls are written in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.entries(**wanted)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not exposed")


# -- pushing images over HTTP ----------------------------------------------------------------------


def upload(client: httpx.Client, repository: str, data: bytes) -> str:
    digest = digest_of(data)
    response = client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def image(client: httpx.Client, repository: str, seed: str) -> bytes:
    """Upload a config and a layer; return the manifest bytes referencing them (not pushed)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer {seed} {secrets.token_hex(8)}".encode()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": upload(client, repository, config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": upload(client, repository, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()


def put_manifest(client: httpx.Client, repository: str, reference: str, manifest: bytes) -> httpx.Response:
    return client.put(
        f"/v2/{repository}/manifests/{reference}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )


def push(client: httpx.Client, repository: str, tag: str, seed: str = "") -> str:
    """Push an image under `tag`; return its manifest digest."""
    manifest = image(client, repository, seed or tag)
    response = put_manifest(client, repository, tag, manifest)
    assert response.status_code == 201, response.text
    return digest_of(manifest)


def pull(client: httpx.Client, repository: str, reference: str, method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
