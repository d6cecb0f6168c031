"""Garbage collection under a storm of concurrent clients, on PostgreSQL with local storage.

One `dockyard serve` (two worker processes, each running background GC passes every second with a
one-second grace period) on a throwaway PostgreSQL database, plus a loop of `dockyard gc run` in a
thread. Eight clients push images that share layers, indexes, referrers; retag, delete tags and
manifests and mount blobs across repositories of two namespaces — one with no time-machine window
at all, one with a window of a few seconds — for a bounded time and operation count.

During the storm every pull checks that a served manifest has every blob and child it names
(`storm_client.StormClient`, pulling through `storm_support.Puller`). Afterwards, once the grace
period and the window have passed and two more passes ran: every live tag and manifest pulls with
verified digests, every referrer listed is intact, and the database and storage hold nothing
unreachable (`storm_checks`).

`DOCKYARD_IT_STORM_SECONDS` and `DOCKYARD_IT_STORM_SEED` change the length and the seed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.helpers import (
    DOCKYARD_BIN,
    PG_ADMIN_DSN,
    PG_URL_TEMPLATE,
    Server,
    dockyard_db_upgrade,
    dockyard_env,
    dockyard_server,
)
from tests.lifecycle.storm_checks import (
    blob_digests,
    database_problems,
    gc_totals,
    row_counts,
    storage_problems,
    usage,
    verify_referrers_survive,
    verify_served,
)
from tests.lifecycle.storm_client import StormClient, run_gc_loop
from tests.lifecycle.storm_support import (
    OCI_INDEX,
    OCI_MANIFEST,
    Contents,
    Tally,
    describe,
    image_manifest,
    layer_pool,
    sha,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACE = 1
#: The time-machine window of the second namespace (the first has none).
WINDOW_B = 5
REPOSITORIES = ["storm-a/app", "storm-a/lib", "storm-b/app", "storm-b/tools"]
CLIENTS = 8
MAX_OPS_PER_CLIENT = 800
STORM_SECONDS = float(os.environ.get("DOCKYARD_IT_STORM_SECONDS") or 60)
USER = "admin"


@dataclass
class Registry:
    server: Server
    dsn: str
    password: str

    @property
    def storage(self) -> Path:
        return self.server.data_dir / "storage"

    def options(self) -> list[str]:
        return ["--config", str(self.server.config), "--data-dir", str(self.server.data_dir)]

    def cli(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKYARD_BIN, *args, *self.options()],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=dockyard_env(),
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"dockyard {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=(USER, self.password), timeout=60, follow_redirects=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    database = f"dockyard_storm_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} is required: {exc}")
    try:
        base = tmp_path_factory.mktemp("storm")
        data = base / "data"
        data.mkdir()
        dsn = PG_URL_TEMPLATE.format(db=database)
        config = base / "dockyard.yaml"
        config.write_text(
            f"database:\n  url: {dsn}\n"
            f"gc:\n  enabled: true\n  interval_seconds: 1\n  grace_seconds: {GRACE}\n"
            f"  upload_grace_seconds: {GRACE}\n  batch: 25\n"
            "jobs:\n  poll_seconds: 0.2\n"
        )
        dockyard_db_upgrade(config, data, base / "db-upgrade.log")
        server = dockyard_server(base, config=config, backend="postgres", data_dir=data)
        server.argv[server.argv.index("--workers") + 1] = "2"
        server.start()
        try:
            running = Registry(server, dsn, secrets.token_urlsafe(18))
            running.cli("user", "create", USER, "--superuser", "--password-stdin", stdin=running.password)
            running.cli("org", "create", "storm-a", "--owner", USER)
            running.cli("org", "create", "storm-b", "--owner", USER)
            running.cli("org", "time-machine", "storm-a", "0")
            running.cli("org", "time-machine", "storm-b", f"{WINDOW_B}s")
            yield running
        finally:
            server.stop()
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            admin.execute(f'DROP DATABASE IF EXISTS "{database}"')


def _background_gc_errors(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            f"{kind} job {job_id} ({attempts} attempts): {error}"
            for job_id, kind, attempts, error in conn.execute(
                "SELECT id, kind, attempts, last_error FROM jobs WHERE last_error IS NOT NULL ORDER BY id"
            )
        ]


def _server_errors(server: Server) -> list[str]:
    """The server's complaints, each distinct cause once with its count: 5xx answers (WARNING),
    unhandled errors and their exceptions."""
    causes: Counter[str] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        if " WARNING " in line or " ERROR " in line:
            causes[line.split(" ", 2)[-1][:300]] += 1
        elif line.startswith(("psycopg.", "sqlalchemy.exc.")):
            causes[line[:300]] += 1
    return [f"{count} x {cause}" for cause, count in causes.most_common()]


def _quota_reconcile(registry: Registry) -> tuple[str, str | None]:
    """Run `dockyard quota reconcile` where it exists: it must find every counter right.

    Return what to report, and the problem found (None: none).
    """
    if registry.cli("quota", "reconcile", "--help", ok=False).returncode != 0:
        return "quota reconcile: SKIPPED - `dockyard quota reconcile` does not exist yet", None
    before = usage(registry.dsn)
    result = registry.cli("quota", "reconcile")
    after = usage(registry.dsn)
    if result.stdout.strip() != "no drift" or before != after:
        return "quota reconcile: DRIFT", f"usage {before} -> {after}:\n{result.stdout}"
    return f"quota reconcile: no drift; usage {after}", None


def test_storm_keeps_everything_reachable_and_collects_the_rest(registry: Registry) -> None:
    seed = int(os.environ.get("DOCKYARD_IT_STORM_SEED") or secrets.randbits(32))
    tally, contents = Tally(), Contents()
    pool = layer_pool(seed)
    stop = threading.Event()
    auth = (USER, registry.password)
    clients = [
        StormClient(
            n,
            registry.server.url,
            auth,
            REPOSITORIES,
            pool,
            contents,
            tally,
            seed + n,
            history=(registry.dsn, WINDOW_B * 1000),
        )
        for n in range(CLIENTS)
    ]
    threads = [threading.Thread(target=c.run, args=(stop, MAX_OPS_PER_CLIENT), daemon=True) for c in clients]
    collector = threading.Thread(
        target=run_gc_loop, args=(DOCKYARD_BIN, registry.options(), dockyard_env(), stop, tally), daemon=True
    )
    started = time.monotonic()
    for thread in [*threads, collector]:
        thread.start()
    deadline = started + STORM_SECONDS
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(0.2)
    stop.set()
    for thread in [*threads, collector]:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a storm thread did not stop"
    storm_seconds = time.monotonic() - started

    # Past the grace period and the longest window, two passes leave only what is reachable.
    before = row_counts(registry.dsn)
    time.sleep(max(GRACE, WINDOW_B) + 1.5)
    registry.cli("gc", "run")
    registry.cli("gc", "run")
    after = row_counts(registry.dsn)

    with registry.client() as http:
        served, seen = verify_served(http, REPOSITORIES, registry.dsn)
        survivors = verify_referrers_survive(http, registry.dsn, tally.referrers)
    db = database_problems(registry.dsn, now_ms=int(time.time() * 1000), grace_ms=GRACE * 1000)
    stored = storage_problems(registry.storage, blob_digests(registry.dsn))
    quota, drift = _quota_reconcile(registry)
    jobs = _background_gc_errors(registry.dsn)
    logged = _server_errors(registry.server)

    print(
        f"\nstorm seed {seed}: {sum(tally.ops.values())} operations in {storm_seconds:.1f} s"
        f"\n  operations: {dict(sorted(tally.ops.items()))}"
        f"\n  events: {dict(sorted(tally.events.items()))}"
        f"\n  rows at the end of the storm: {before}\n  rows after the final passes: {after}"
        f"\n  verified after the storm: {seen}, {dict(served.events)}"
        f"\n  referrers checked for survival: {len(tally.referrers)}"
        f"\n  collected: {gc_totals(registry.dsn)}"
        f"\n  {quota}\n  background job errors: {len(jobs)}; distinct server log complaints: {len(logged)}"
    )
    for line in [*jobs[:20], *logged[:20], *tally.suspects[:20], *tally.notes[:20]]:
        print("  ", line[:2000])

    # Invariants first: what GC must never break. Then the end state. Then plain server errors.
    lost = tally.failures
    assert not lost, f"{len(lost)} broken invariants during the storm:\n" + "\n".join(lost[:20])
    after_storm = served.failures + served.errors
    assert not after_storm, "after the storm:\n" + "\n".join(after_storm[:20])
    assert not survivors, "referrers of live subjects:\n" + "\n".join(survivors[:20])
    assert not db, "database after the storm:\n" + "\n".join(db)
    assert not stored, "storage after the storm:\n" + "\n".join(stored)
    assert drift is None, f"quota reconcile found drift: {drift}"
    assert seen["tags"] > 0, "the storm left no tag at all: the test checked nothing"
    errors = tally.errors
    assert not errors, (
        f"every invariant held, but {len(errors)} requests or collector runs failed during the storm:\n"
        + "\n".join(error[:1500] for error in errors[:12])
        + "\nserver log:\n"
        + "\n".join(logged[:20])
    )


def _stored(registry: Registry, digest: str) -> bool:
    hex_part = digest.split(":", 1)[1]
    return (registry.storage / "blobs" / "sha256" / hex_part[:2] / hex_part).is_file()


def test_restore_within_the_window_then_collection_after_it(registry: Registry) -> None:
    repository = "storm-r/restore"
    shared = os.urandom(3000)
    images = {}
    with registry.client() as http:

        def push(tag: str) -> tuple[bytes, list[bytes]]:
            blobs = [f'{{"os":"linux","tag":"{tag}"}}'.encode(), shared, os.urandom(2000)]
            for blob in blobs:
                response = http.post(f"/v2/{repository}/blobs/uploads/?digest={sha(blob)}", content=blob)
                assert response.status_code == 201, response.text
            body = image_manifest(blobs[0], blobs[1:])
            response = http.put(
                f"/v2/{repository}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}
            )
            assert response.status_code == 201, response.text
            return body, blobs

        def get(reference: str) -> httpx.Response:
            return http.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})

        def pulls(reference: str, body: bytes, blobs: list[bytes]) -> None:
            response = get(reference)
            assert response.status_code == 200, response.text
            assert response.content == body  # byte-identical
            for blob in blobs:
                fetched = http.get(f"/v2/{repository}/blobs/{sha(blob)}")
                assert fetched.status_code == 200
                assert fetched.content == blob

        images["v1"] = push("v1")
        images["keep"] = push("keep")
        first, second = sha(images["v1"][0]), sha(images["keep"][0])

        # Within the window (the default 14 days): a deleted tag, and a manifest deleted by digest,
        # outlive passes run well after the grace period, and come back byte-identical.
        assert http.delete(f"/v2/{repository}/manifests/v1").status_code == 202
        assert http.delete(f"/v2/{repository}/manifests/{second}").status_code == 202
        assert get("v1").status_code == 404
        assert get("keep").status_code == 404
        time.sleep(GRACE + 1.5)
        registry.cli("gc", "run")
        assert "v1" not in (http.get(f"/v2/{repository}/tags/list").json().get("tags") or [])
        registry.cli("tag", "restore", repository, "v1", first)
        registry.cli("tag", "restore", repository, "keep", second)
        pulls("v1", *images["v1"])
        pulls("keep", *images["keep"])

        # After the window: the deleted tag can no longer be restored, and GC removes the manifest
        # and its own blobs, from the database and from disk, and keeps the layer still shared.
        registry.cli("org", "time-machine", "storm-r", "0")
        assert http.delete(f"/v2/{repository}/manifests/v1").status_code == 202
        time.sleep(GRACE + 1.5)
        registry.cli("gc", "run")
        refused = registry.cli("tag", "restore", repository, "v1", first, ok=False)
        assert refused.returncode != 0
        assert "time-machine window" in refused.stderr or "collected" in refused.stderr, refused.stderr
        assert get(first).status_code == 404
        config, _, own = images["v1"][1]
        for blob in (config, own):
            assert http.get(f"/v2/{repository}/blobs/{sha(blob)}").status_code == 404
            assert not _stored(registry, sha(blob)), f"{sha(blob)} is still in storage"
        assert _stored(registry, sha(shared))
        pulls("keep", *images["keep"])


def test_concurrent_pushes_to_one_tag_and_of_one_manifest(registry: Registry) -> None:
    """Racing pushes never answer 500: one live row per tag, one row per manifest."""
    clients, rounds = 8, 4
    with registry.client() as http:
        bodies = []
        for i in range(clients * rounds):
            config, layer = json.dumps({"race": i}).encode(), f"race layer {i}".encode()
            for blob in (config, layer):
                response = http.post(f"/v2/storm-a/race/blobs/uploads/?digest={sha(blob)}", content=blob)
                assert response.status_code == 201, describe(response)
            body = image_manifest(config, [layer])
            # Tagged at once, so that the collector (1 s grace) keeps its blobs for the race below.
            response = http.put(
                f"/v2/storm-a/race/manifests/keep-{i}", content=body, headers={"Content-Type": OCI_MANIFEST}
            )
            assert response.status_code == 201, describe(response)
            bodies.append(body)
    empty_index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    answers: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def put(reference: str, body: bytes, media_type: str) -> None:
        with registry.client() as http:
            response = http.put(
                f"/v2/storm-a/race/manifests/{reference}", content=body, headers={"Content-Type": media_type}
            )
            status = response.status_code
        with lock:
            answers.append(status)
            if status != 201:
                failures.append(f"{reference}: {status} {response.text[:300]}")

    for n in range(rounds):
        threads = [
            threading.Thread(target=put, args=("hot", body, OCI_MANIFEST))
            for body in bodies[n * clients : (n + 1) * clients]
        ]
        threads += [
            threading.Thread(target=put, args=(sha(empty_index), empty_index, OCI_INDEX)) for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers.count(201) == len(answers) == 2 * clients * rounds, failures[:5]
    with psycopg.connect(registry.dsn) as conn:
        live = conn.execute(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id "
            "WHERE r.name = 'storm-a/race' AND t.name = 'hot' AND t.end_at IS NULL"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM manifests WHERE digest = %s", (sha(empty_index),)).fetchone()
    assert live == (1,)
    assert rows == (1,)
