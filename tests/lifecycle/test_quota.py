"""Per-namespace storage quotas over HTTP and the CLI, on SQLite (embedded default) and PostgreSQL.

Each backend gets one live `dockyard serve` (several worker processes) for the module; every test
works in namespaces of its own. The database is read (and, to inject drift, written) directly
with sqlite3 / psycopg, never through Dockyard's code.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.helpers import (
    DOCKYARD_BIN,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    PG_ADMIN_DSN,
    PG_URL_TEMPLATE,
    Server,
    absolute,
    compact,
    create_superuser,
    describe,
    digest_of,
    dockyard_db_upgrade,
    dockyard_env,
    dockyard_server,
    rand,
    with_query,
)

pytestmark = pytest.mark.integration

WORKERS = 3


@dataclass
class Registry:
    server: Server
    client: httpx.Client
    database_url: str | None  # None: the embedded SQLite file

    @property
    def backend(self) -> str:
        return self.server.backend

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        command = [DOCKYARD_BIN, *args]
        if self.server.config is not None:
            command += ["--config", str(self.server.config)]
        command += ["--data-dir", str(self.server.data_dir)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dockyard_env(), check=False)
        if ok:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def org(self) -> str:
        name = f"q{rand(5)}"
        self.cli("org", "create", name, "--owner", self.server.credentials[0])  # type: ignore[index]
        return name

    def show(self, namespace: str) -> dict[str, str]:
        lines = self.cli("quota", "show", namespace).stdout.splitlines()
        return dict(line.split(": ", 1) for line in lines)

    def usage(self, namespace: str) -> int:
        return _bytes(self.show(namespace)["used"])

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement (placeholders `%s`) on the server's database; its rows."""
        if self.database_url is None:
            with sqlite3.connect(self.server.data_dir / "dockyard.db", timeout=30) as conn:
                return conn.execute(statement.replace("%s", "?"), params).fetchall()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def namespace_id(self, namespace: str) -> int:
        return int(self.sql("SELECT id FROM namespaces WHERE name = %s", namespace)[0][0])

    def open_uploads(self) -> int:
        return int(self.sql("SELECT count(*) FROM uploads")[0][0])

    def object_path(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":")
        return self.server.data_dir / "storage" / "blobs" / algorithm / hex_[:2] / hex_

    def upload_files(self) -> set[str]:
        uploads = self.server.data_dir / "storage" / "uploads"
        return set(os.listdir(uploads)) if uploads.is_dir() else set()


def _bytes(field: str) -> int:
    match = re.search(r"\((\d+) bytes", field)
    assert match, field
    return int(match[1])


def _start(server: Server) -> None:
    index = server.argv.index("--workers")
    server.argv[index + 1] = str(WORKERS)
    server.start()
    create_superuser(server)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    base = tmp_path_factory.mktemp(f"quota-{request.param}")
    created: str | None = None
    database_url: str | None = None
    if request.param == "sqlite":
        server = dockyard_server(base, backend="sqlite")
    else:
        created = f"dockyard_quota_{rand(5)}"
        try:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as admin:
                admin.execute(f'CREATE DATABASE "{created}"')
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} is required: {exc}")
        database_url = PG_URL_TEMPLATE.format(db=created)
        config = base / "dockyard.yaml"
        config.write_text(f"database:\n  url: {database_url}\n")
        (base / "data").mkdir()
        dockyard_db_upgrade(config, base / "data", base / "db-upgrade.log")
        server = dockyard_server(base, config=config, backend="postgres", data_dir=base / "data")
    try:
        _start(server)
        assert server.credentials is not None
        with httpx.Client(base_url=server.url, auth=server.credentials, timeout=60) as client:
            yield Registry(server, client, database_url)
    finally:
        server.stop()
        if created is not None:  # only the database this fixture created
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (created,))
                admin.execute(f'DROP DATABASE IF EXISTS "{created}"')


# -- pushing -----------------------------------------------------------------------------------


def _monolithic(client: httpx.Client, repository: str, data: bytes) -> httpx.Response:
    return client.post(
        f"/v2/{repository}/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def _chunked(client: httpx.Client, repository: str, data: bytes, chunks: int = 2) -> tuple[httpx.Response, str]:
    """POST, PATCH `chunks` chunks, PUT ?digest=; the last response and the session's URL."""
    response = client.post(f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"})
    assert response.status_code == 202, describe(response)
    location = absolute(client, response.headers["location"])
    session = location
    step = -(-len(data) // chunks)
    for offset in range(0, len(data), step):
        part = data[offset : offset + step]
        response = client.patch(
            location,
            content=part,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(part) - 1}",
            },
        )
        assert response.status_code == 202, describe(response)
        location = absolute(client, response.headers["location"])
    return client.put(with_query(location, digest=digest_of(data))), session


def _push(client: httpx.Client, repository: str, data: bytes) -> str:
    response = _monolithic(client, repository, data)
    assert response.status_code == 201, describe(response)
    return digest_of(data)


def _manifest(config: bytes, layers: list[bytes], nonce: str = "") -> bytes:
    return compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)} for layer in layers],
            "annotations": {"nonce": nonce},
        }
    )


def _put_manifest(client: httpx.Client, repository: str, reference: str, body: bytes) -> httpx.Response:
    return client.put(f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": OCI_MANIFEST})


def _config() -> bytes:
    return compact({"architecture": "amd64", "os": "linux", "nonce": rand(8)})


def _visible(client: httpx.Client, repository: str, digest: str) -> bool:
    response = client.head(f"/v2/{repository}/blobs/{digest}")
    assert response.status_code in (200, 404), describe(response)
    return response.status_code == 200


def _assert_denied(response: httpx.Response, *, used: int, needed: int, limit: int) -> None:
    assert response.status_code == 403, describe(response)
    (error,) = response.json()["errors"]
    assert error["code"] == "DENIED", describe(response)
    assert "quota" in error["message"], error
    assert str(limit) in error["message"], error
    assert f"uses {used} bytes" in error["message"], error
    assert f"adds {needed}" in error["message"], error
    assert error["detail"]["used"] == used, error
    assert error["detail"]["limit"] == limit, error


# -- usage -------------------------------------------------------------------------------------


def test_usage_counts_each_digest_once_per_namespace(registry: Registry) -> None:
    client = registry.client
    first, second = registry.org(), registry.org()
    layer, config = os.urandom(3000), _config()

    _push(client, f"{first}/a", layer)
    assert registry.usage(first) == len(layer)
    _push(client, f"{first}/b", layer)  # the same layer in another repository of the namespace
    mount = client.post(f"/v2/{first}/c/blobs/uploads/", params={"mount": digest_of(layer), "from": f"{first}/a"})
    assert mount.status_code == 201, describe(mount)
    assert registry.usage(first) == len(layer)

    _push(client, f"{second}/a", layer)  # another namespace counts it for itself
    assert registry.usage(second) == len(layer)
    assert registry.usage(first) == len(layer)

    _push(client, f"{first}/a", config)
    manifest = _manifest(config, [layer])
    assert _put_manifest(client, f"{first}/a", "v1", manifest).status_code == 201
    expected = len(layer) + len(config) + len(manifest)  # manifests count too
    assert registry.usage(first) == expected

    _push(client, f"{first}/b", config)
    assert _put_manifest(client, f"{first}/b", "v1", manifest).status_code == 201  # same manifest, other repository
    assert _put_manifest(client, f"{first}/a", "v2", manifest).status_code == 201  # same manifest, other tag
    report = registry.show(first)
    assert _bytes(report["used"]) == expected
    assert report["items"].startswith("3 digests counted (0 pending collection)")
    assert report["limit"] == "none"
    assert report["state"] == "ok"
    assert registry.cli("quota", "reconcile", first).stdout.strip() == "no drift"


def test_show_warn_and_reject_thresholds(registry: Registry) -> None:
    client = registry.client
    namespace = registry.org()
    report = dict(
        line.split(": ", 1)
        for line in registry.cli(
            "quota", "set", namespace, "--limit", "10000", "--warn", "50", "--reject", "90"
        ).stdout.splitlines()
    )
    assert _bytes(report["limit"]) == 10000
    assert report["warn at"] == "50% (4.88 KiB)"
    assert report["reject above"] == "90% (8.79 KiB)"
    assert report["state"] == "ok"

    _push(client, f"{namespace}/r", os.urandom(4000))
    assert registry.show(namespace)["state"] == "ok"
    _push(client, f"{namespace}/r", os.urandom(1000))
    report = registry.show(namespace)
    assert report["state"] == "warning"
    assert report["used"] == "4.88 KiB (5000 bytes, 50.0% of the limit)"
    _push(client, f"{namespace}/r", os.urandom(3000))

    # 8000 + 1500 > 9000 (90%): refused, and nothing of it remains.
    uploads_before = registry.upload_files()
    refused = os.urandom(1500)
    _assert_denied(_monolithic(client, f"{namespace}/r", refused), used=8000, needed=1500, limit=10000)
    assert not _visible(client, f"{namespace}/r", digest_of(refused))
    assert not registry.object_path(digest_of(refused)).exists()
    assert registry.upload_files() == uploads_before
    assert registry.open_uploads() == 0
    assert registry.usage(namespace) == 8000

    # Exactly at the reject threshold is allowed; one byte past it is not.
    _push(client, f"{namespace}/r", os.urandom(1000))
    assert registry.usage(namespace) == 9000
    assert registry.show(namespace)["state"] == "warning"
    _assert_denied(_monolithic(client, f"{namespace}/r", b"x"), used=9000, needed=1, limit=10000)
    assert registry.usage(namespace) == 9000


def test_chunked_upload_over_quota_leaves_nothing(registry: Registry) -> None:
    client = registry.client
    namespace = registry.org()
    registry.cli("quota", "set", namespace, "--limit", "4KiB")
    _push(client, f"{namespace}/r", os.urandom(3000))

    data = os.urandom(2000)
    response, session = _chunked(client, f"{namespace}/r", data, chunks=3)
    _assert_denied(response, used=3000, needed=2000, limit=4096)
    status = client.get(session)
    assert status.status_code == 404, describe(status)
    assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert session.rsplit("/", 1)[-1].split("?")[0] not in registry.upload_files()
    assert not _visible(client, f"{namespace}/r", digest_of(data))
    assert not registry.object_path(digest_of(data)).exists()
    assert registry.open_uploads() == 0
    assert registry.usage(namespace) == 3000

    response, _ = _chunked(client, f"{namespace}/r", data[:1000], chunks=2)  # fits: 4000 <= 4096
    assert response.status_code == 201, describe(response)
    assert registry.usage(namespace) == 4000


def test_refused_blob_stored_for_another_namespace_stays_there(registry: Registry) -> None:
    client = registry.client
    holder, full = registry.org(), registry.org()
    shared = os.urandom(2000)
    _push(client, f"{holder}/r", shared)
    registry.cli("quota", "set", full, "--limit", "1000")

    _assert_denied(_monolithic(client, f"{full}/r", shared), used=0, needed=2000, limit=1000)
    response, _ = _chunked(client, f"{full}/r", shared)
    _assert_denied(response, used=0, needed=2000, limit=1000)
    assert not _visible(client, f"{full}/r", digest_of(shared))
    assert registry.usage(full) == 0
    assert registry.open_uploads() == 0
    # The object is the other namespace's: a refusal must not delete it.
    assert registry.object_path(digest_of(shared)).exists()
    assert client.get(f"/v2/{holder}/r/blobs/{digest_of(shared)}").content == shared


def test_mount_across_namespaces_refused_over_quota(registry: Registry) -> None:
    client = registry.client
    source, target = registry.org(), registry.org()
    blob = os.urandom(2000)
    digest = _push(client, f"{source}/r", blob)
    registry.cli("quota", "set", target, "--limit", "3000")
    held = _push(client, f"{target}/r", os.urandom(1500))

    for params in ({"mount": digest, "from": f"{source}/r"}, {"mount": digest}):
        response = client.post(f"/v2/{target}/r/blobs/uploads/", params=params)
        _assert_denied(response, used=1500, needed=2000, limit=3000)
        assert not _visible(client, f"{target}/r", digest)
        assert registry.usage(target) == 1500
    assert registry.open_uploads() == 0

    # A mount inside the namespace adds no bytes: allowed even when full.
    registry.cli("quota", "set", target, "--limit", "1500")
    response = client.post(f"/v2/{target}/other/blobs/uploads/", params={"mount": held, "from": f"{target}/r"})
    assert response.status_code == 201, describe(response)
    assert registry.usage(target) == 1500


def test_lowered_limit_is_over_refuses_new_bytes_but_takes_existing_content(registry: Registry) -> None:
    client = registry.client
    namespace = registry.org()
    layer, config = os.urandom(3000), _config()
    registry.cli("quota", "set", namespace, "--limit", "100000")
    _push(client, f"{namespace}/a", layer)
    _push(client, f"{namespace}/a", config)
    manifest = _manifest(config, [layer])
    assert _put_manifest(client, f"{namespace}/a", "v1", manifest).status_code == 201
    used = len(layer) + len(config) + len(manifest)

    report = dict(
        line.split(": ", 1) for line in registry.cli("quota", "set", namespace, "--limit", "2000").stdout.splitlines()
    )
    assert report["state"] == "over"
    assert _bytes(report["used"]) == used

    _assert_denied(_monolithic(client, f"{namespace}/a", b"new bytes"), used=used, needed=9, limit=2000)
    other = _manifest(config, [layer], nonce="other")
    refused = _put_manifest(client, f"{namespace}/a", "v2", other)
    _assert_denied(refused, used=used, needed=len(other), limit=2000)
    assert client.head(f"/v2/{namespace}/a/manifests/v2").status_code == 404

    # Content the namespace holds already costs nothing: re-pushes and copies are accepted.
    _push(client, f"{namespace}/a", layer)
    _push(client, f"{namespace}/b", layer)
    response, _ = _chunked(client, f"{namespace}/b", config)
    assert response.status_code == 201, describe(response)
    assert _put_manifest(client, f"{namespace}/a", "again", manifest).status_code == 201
    assert _put_manifest(client, f"{namespace}/b", "v1", manifest).status_code == 201
    assert registry.usage(namespace) == used
    assert registry.show(namespace)["state"] == "over"

    registry.cli("quota", "clear", namespace)
    assert registry.show(namespace)["limit"] == "none"
    assert _put_manifest(client, f"{namespace}/a", "v2", other).status_code == 201
    assert registry.usage(namespace) == used + len(other)


def test_cli_refuses_bad_input_and_changes_nothing(registry: Registry) -> None:
    namespace = registry.org()
    registry.cli("quota", "set", namespace, "--limit", "1MiB", "--warn", "70", "--reject", "90")
    before = registry.show(namespace)
    assert _bytes(before["limit"]) == 1048576

    bad = [
        (("set", namespace, "--limit", "10XB"), "invalid size"),
        (("set", namespace, "--limit", "0"), "positive"),
        (("set", namespace, "--limit", "1.5B"), "whole number"),
        (("set", namespace, "--limit", "1GiB", "--warn", "95", "--reject", "90"), "warn threshold"),
        (("set", namespace, "--limit", "1GiB", "--warn", "95"), "warn threshold"),  # current reject is 90
        (("set", namespace, "--limit", "1GiB", "--reject", "101"), "1 to 100"),
        (("set", namespace, "--limit", "1GiB", "--warn", "0"), "1 to 100"),
        (("set", "nosuchns" + rand(3), "--limit", "1GiB"), "no namespace"),
        (("show", "nosuchns" + rand(3)), "no namespace"),
        (("clear", "nosuchns" + rand(3)), "no namespace"),
        (("reconcile", "nosuchns" + rand(3)), "no namespace"),
    ]
    for args, message in bad:
        result = registry.cli("quota", *args, ok=False)
        assert result.returncode != 0, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    assert registry.show(namespace) == before

    for size, expected in (("1.5KiB", 1536), ("10GiB", 10 * 1024**3)):  # more sizes: tests/unit/test_quota_sizes.py
        report = registry.cli("quota", "set", namespace, "--limit", size).stdout
        assert f"({expected} bytes)" in report, report
        assert "warn at: 70%" in report, report  # thresholds kept
        assert "reject above: 90%" in report, report


def test_reconcile_corrects_injected_drift_and_ignores_pending_collection(registry: Registry) -> None:
    client = registry.client
    namespace = registry.org()
    blobs = [os.urandom(1000 + i) for i in range(3)]
    for blob in blobs:
        _push(client, f"{namespace}/r", blob)
    truth = sum(len(blob) for blob in blobs)
    namespace_id = registry.namespace_id(namespace)

    # Drift of both kinds: counters 777 bytes too high, one referenced digest not counted at all.
    registry.sql(
        "UPDATE namespace_usage SET bytes = bytes + 777 WHERE namespace_id = %s AND shard = "
        "(SELECT min(shard) FROM namespace_usage WHERE namespace_id = %s)",
        namespace_id,
        namespace_id,
    )
    registry.sql(
        "DELETE FROM namespace_usage_items WHERE namespace_id = %s AND digest = %s", namespace_id, digest_of(blobs[0])
    )
    # An item nothing references (and its bytes, consistently): pending collection, not drift.
    orphan = "sha256:" + hashlib.sha256(os.urandom(8)).hexdigest()
    registry.sql(  # touched now: within GC's grace period, so a background pass leaves it
        "INSERT INTO namespace_usage_items (namespace_id, digest, size, touched_at) VALUES (%s, %s, 5, %s)",
        namespace_id,
        orphan,
        time.time_ns() // 1_000_000,
    )
    registry.sql(
        "UPDATE namespace_usage SET bytes = bytes + 5 WHERE namespace_id = %s AND shard = "
        "(SELECT min(shard) FROM namespace_usage WHERE namespace_id = %s)",
        namespace_id,
        namespace_id,
    )
    assert registry.usage(namespace) == truth + 777 + 5

    lines = registry.cli("quota", "reconcile", namespace).stdout.splitlines()
    assert len(lines) == 2, lines
    # The deleted item's bytes were still in the counters: they were off by 777 + its size,
    # and counting the digest again adds its size back.
    assert lines[0].startswith(f"corrected: {namespace}: counters said {truth + 782} bytes"), lines
    assert f"corrected by -{777 + len(blobs[0])} bytes" in lines[0], lines
    assert f"1 referenced digests ({len(blobs[0])} bytes) were not counted" in lines[1], lines
    report = registry.show(namespace)
    assert _bytes(report["used"]) == truth + 5
    assert report["items"] == "4 digests counted (1 pending collection)"
    assert registry.sql("SELECT count(*) FROM namespace_usage WHERE namespace_id = %s", namespace_id) == [(1,)]
    assert registry.cli("quota", "reconcile", namespace).stdout.strip() == "no drift"
    assert registry.cli("quota", "reconcile").stdout.strip() == "no drift"


# -- the proof: concurrent pushes near the limit ------------------------------------------------


@dataclass
class Outcome:
    repository: str
    data: bytes
    status: int
    code: str


def _race(registry: Registry, namespace: str, plans: list[list[bytes]]) -> list[Outcome]:
    """One thread (and client) per plan, all released at once; each pushes its blobs in order,
    alternating monolithic and chunked uploads. Any answer but 201 or 403 DENIED fails the test."""
    outcomes: list[Outcome] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(plans))
    credentials = registry.server.credentials
    assert credentials is not None

    def worker(index: int) -> None:
        repository = f"{namespace}/r{index % 4}"
        with httpx.Client(base_url=registry.server.url, auth=credentials, timeout=120) as client:
            try:
                barrier.wait(timeout=60)
                for n, data in enumerate(plans[index]):
                    if (index + n) % 2:
                        response, _ = _chunked(client, repository, data)
                    else:
                        response = _monolithic(client, repository, data)
                    code = response.json()["errors"][0]["code"] if response.status_code >= 400 else ""
                    with lock:
                        outcomes.append(Outcome(repository, data, response.status_code, code))
            except Exception as exc:  # reported below, with every other thread's outcome
                with lock:
                    failures.append(f"thread {index}: {exc!r}")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(plans))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    assert not failures, failures
    assert len(outcomes) == sum(len(plan) for plan in plans)
    unexpected = [
        (o.repository, o.status, o.code) for o in outcomes if (o.status, o.code) not in ((201, ""), (403, "DENIED"))
    ]
    assert not unexpected, unexpected
    return outcomes


def _assert_refusals_left_nothing(registry: Registry, outcomes: list[Outcome]) -> None:
    accepted = {digest_of(o.data) for o in outcomes if o.status == 201}
    for outcome in outcomes:
        if outcome.status == 403 and digest_of(outcome.data) not in accepted:
            assert not _visible(registry.client, outcome.repository, digest_of(outcome.data))
            assert not registry.object_path(digest_of(outcome.data)).exists()
    assert registry.open_uploads() == 0


def test_concurrent_pushes_near_the_limit_never_pass_the_reject_threshold(registry: Registry) -> None:
    namespace = registry.org()
    limit, reject_percent = 400_000, 90
    reject_at = limit * reject_percent // 100
    registry.cli("quota", "set", namespace, "--limit", str(limit), "--reject", str(reject_percent))
    common = os.urandom(1000)  # every thread pushes it too: counted once
    plans = [[common, *(os.urandom(16_000 + secrets.randbelow(32_000)) for _ in range(3))] for _ in range(12)]

    outcomes = _race(registry, namespace, plans)

    accepted = {digest_of(o.data): o.data for o in outcomes if o.status == 201}
    refused = [o for o in outcomes if o.status == 403]
    assert digest_of(common) in accepted
    assert refused, "the limit must be reached for this test to prove anything"
    assert len(accepted) > 1
    used = registry.usage(namespace)
    assert used == sum(len(data) for data in accepted.values())
    assert used <= reject_at
    for outcome in refused:
        # Refused only when needed: usage only grew after the refusal, and it did not fit then.
        assert used + len(outcome.data) > reject_at, (used, len(outcome.data), reject_at)
        assert digest_of(outcome.data) not in accepted
    _assert_refusals_left_nothing(registry, outcomes)
    assert registry.cli("quota", "reconcile").stdout.strip() == "no drift"
    assert registry.usage(namespace) == used


def test_simultaneous_pushes_at_the_edge_admit_exactly_one(registry: Registry) -> None:
    """Room for one more blob and twelve pushes of one released at once: one gets in, every round."""
    namespace = registry.org()
    size, threads = 20_000, 12
    for round_ in range(4):
        registry.cli("quota", "set", namespace, "--limit", str(round_ * size + size + size // 2))
        outcomes = _race(registry, namespace, [[os.urandom(size)] for _ in range(threads)])
        accepted = [o for o in outcomes if o.status == 201]
        assert len(accepted) == 1, f"round {round_}: {len(accepted)} of {threads} pushes accepted"
        assert registry.usage(namespace) == (round_ + 1) * size
        _assert_refusals_left_nothing(registry, outcomes)
    assert registry.cli("quota", "reconcile", namespace).stdout.strip() == "no drift"


def test_items_are_the_namespace_digests_at_their_sizes(registry: Registry) -> None:
    """What `quota show` counts is each digest once, at its size, manifests included."""
    client = registry.client
    namespace = registry.org()
    config, layer = _config(), os.urandom(500)
    _push(client, f"{namespace}/r", config)
    _push(client, f"{namespace}/r", layer)
    manifest = _manifest(config, [layer])
    assert _put_manifest(client, f"{namespace}/r", "latest", manifest).status_code == 201
    rows = registry.sql(
        "SELECT digest, size FROM namespace_usage_items WHERE namespace_id = %s ORDER BY digest",
        registry.namespace_id(namespace),
    )
    assert sorted(rows) == sorted(
        [(digest_of(config), len(config)), (digest_of(layer), len(layer)), (digest_of(manifest), len(manifest))]
    )
    assert registry.usage(namespace) == sum(size for _, size in rows)
