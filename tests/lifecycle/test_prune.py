"""Auto-prune policies over the CLI and HTTP (embedded default), and the store's re-checks on SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import insert, update

from dockyard.db import migrate
from dockyard.db.audit import AuditEntry, AuditStore, record
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.prune_store import PruneStore
from dockyard.db.tables import manifests, namespaces, repositories, tags
from dockyard.db.tags_store import move_tag
from dockyard.domain.audit import system_actor

pytestmark = pytest.mark.integration

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

T = TypeVar("T")


@dataclass
class Server:
    url: str
    data_dir: Path
    client: httpx.Client
    policies: list[int] = field(default_factory=list)

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKYARD, *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True, timeout=60, check=False
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def add_policy(self, *args: str) -> int:
        output = self.cli("prune", "policy", "add", *args).stdout
        found = re.search(r"added prune policy (\d+) ", output)
        assert found is not None, output
        self.policies.append(int(found[1]))
        return int(found[1])

    def in_process(self, action: Callable[[Database], Awaitable[T]]) -> T:
        """Run `action` on the server's own database, from this process."""

        async def main() -> T:
            db = Database(create_serving_engine(f"sqlite:///{self.data_dir / 'dockyard.db'}", pool_size=1))
            try:
                return await action(db)
            finally:
                await db.dispose()

        return asyncio.run(main())

    def audit(self, **filters: Any) -> list[AuditEntry]:
        return self.in_process(lambda db: AuditStore(db).entries(**filters))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("prune")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir / "server.log").open("wb")
    # No background jobs: the scheduled prune pass would race the dry run / run pairs below.
    process = subprocess.Popen(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "DOCKYARD_JOBS__RUN_IN_SERVER": "false"},
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
                pytest.fail(f"dockyard did not start:\n{(data_dir / 'server.log').read_text()}")
            time.sleep(0.1)
        password = (data_dir / "initial-admin-password").read_text().strip()
        with httpx.Client(base_url=url, auth=("admin", password), timeout=30) as client:
            yield Server(url, data_dir, client)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


@pytest.fixture
def server(live_server: Server) -> Iterator[Server]:
    """The shared server; the policies a test adds are removed after it (a run applies them all)."""
    yield live_server
    while live_server.policies:
        live_server.cli("prune", "policy", "remove", str(live_server.policies.pop()))


def _blob(server: Server, repository: str, data: bytes) -> str:
    digest = _digest(data)
    response = server.client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def _push(server: Server, repository: str, tag: str) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {}}}).encode()
    layer = f"layer {repository} {tag}".encode()
    manifest = json.dumps(
        {
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
                    "digest": _blob(server, repository, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    response = server.client.put(
        f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return manifest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _get(server: Server, repository: str, reference: str) -> httpx.Response:
    return server.client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})


def _tags(server: Server, repository: str) -> list[str]:
    return list(server.client.get(f"/v2/{repository}/tags/list").json()["tags"])


def _prune(server: Server, *, dry_run: bool, namespace: str) -> tuple[dict[str, str], str]:
    """Run a pass; return {repository:tag -> "digest — reason"} for `namespace`, and the total line."""
    lines = server.cli("prune", "run", *(["--dry-run"] if dry_run else [])).stdout.splitlines()
    decided = {}
    for line in lines[:-1]:
        target, _, rest = line.partition(" ")
        if target.startswith(f"{namespace}/"):
            decided[target] = rest
    return decided, lines[-1]


def test_keep_n_with_pattern_dry_run_run_and_restore(server: Server) -> None:
    pushed = {tag: _push(server, "keepn/app", tag) for tag in ("v1", "v2", "v3", "v4", "v5", "latest", "dev")}
    other = {tag: _push(server, "keepn/other", tag) for tag in ("v1", "v2", "v3")}
    server.cli("tag", "immutable", "keepn/app", "v1", "on")
    policy = server.add_policy("keepn", "--keep", "2", "--pattern", "v*")
    assert server.cli("prune", "policy", "list", "keepn").stdout.splitlines() == [
        f"{policy}\tkeepn (every repository)\tkeep 2 most recent tags matching 'v*'"
    ]
    before = _tags(server, "keepn/app")

    planned, total = _prune(server, dry_run=True, namespace="keepn")
    rule = "keep 2 most recent tags matching 'v*'"
    assert planned == {
        "keepn/app:v3": f"{_digest(pushed['v3'])} — {rule}: this is #3",
        "keepn/app:v2": f"{_digest(pushed['v2'])} — {rule}: this is #4",
        "keepn/other:v1": f"{_digest(other['v1'])} — {rule}: this is #3",
    }  # v1 of keepn/app is #5 but immutable; latest and dev do not match
    assert total == "would expire 3 tags"
    assert _tags(server, "keepn/app") == before  # a dry run changes nothing
    assert _get(server, "keepn/app", "v2").status_code == 200
    assert server.audit(namespace="keepn", kind="tag.expire") == []

    expired, total = _prune(server, dry_run=False, namespace="keepn")
    assert expired == planned
    assert total == "expired 3 tags"
    assert _tags(server, "keepn/app") == ["dev", "latest", "v1", "v4", "v5"]
    assert _tags(server, "keepn/other") == ["v2", "v3"]
    for tag in ("v2", "v3"):
        assert _get(server, "keepn/app", tag).status_code == 404
        assert _get(server, "keepn/app", _digest(pushed[tag])).content == pushed[tag]  # GC does the rest
    assert _get(server, "keepn/app", "v1").content == pushed["v1"]

    entries = server.audit(namespace="keepn", kind="tag.expire")
    assert sorted((e.repository, e.metadata["tag"]) for e in entries) == [
        ("keepn/app", "v2"),
        ("keepn/app", "v3"),
        ("keepn/other", "v1"),
    ]
    for entry in entries:
        assert entry.performer == "prune-policy"
        assert entry.metadata["policy"] == policy
        assert entry.metadata["digest"] == planned[f"{entry.repository}:{entry.metadata['tag']}"].split(" ")[0]
        assert entry.metadata["reason"].startswith(f"{rule}: this is #")

    # Nothing left to do; the history keeps the pruned tag, which can be restored.
    assert _prune(server, dry_run=True, namespace="keepn") == ({}, "would expire 0 tags")
    history = server.cli("tag", "history", "keepn/app", "v2").stdout.splitlines()
    assert [line.split("\t")[0] for line in history] == [_digest(pushed["v2"])]
    assert "expires -" not in history[0]
    server.cli("tag", "restore", "keepn/app", "v2", _digest(pushed["v2"]))
    assert _get(server, "keepn/app", "v2").content == pushed["v2"]


def test_older_than_expires_only_old_matching_tags(server: Server) -> None:
    old = {tag: _push(server, "aged/app", tag) for tag in ("nightly-1", "nightly-2", "stable")}
    pushed = time.monotonic()
    policy = server.add_policy("aged", "--older-than", "2s", "--pattern", "nightly-*")
    time.sleep(max(0.0, 2.3 - (time.monotonic() - pushed)))
    fresh = _push(server, "aged/app", "nightly-3")
    fresh_pushed = time.monotonic()
    # Planned in-process at once (a CLI start-up may take seconds on a busy machine): the fresh
    # tag is younger than 2s, stable does not match.
    planned_now = server.in_process(lambda db: PruneStore(db).plan(now_ms()))
    assert [d.tag for d in planned_now if d.repository == "aged/app"] == ["nightly-1", "nightly-2"]

    planned, _ = _prune(server, dry_run=True, namespace="aged")
    for tag in ("nightly-1", "nightly-2"):
        digest, reason = planned[f"aged/app:{tag}"].split(" — ")
        assert digest == _digest(old[tag])
        assert re.fullmatch(r"older than 2s \(tags matching 'nightly-\*'\): pushed \d{4}-\d\d-\d\dT[\d:]+Z", reason)
    assert "aged/app:stable" not in planned
    assert sorted(_tags(server, "aged/app")) == ["nightly-1", "nightly-2", "nightly-3", "stable"]

    # By the time nightly-3 is 2s old too, a run expires every nightly tag and keeps stable.
    time.sleep(max(0.0, 2.3 - (time.monotonic() - fresh_pushed)))
    expired, total = _prune(server, dry_run=False, namespace="aged")
    assert sorted(expired) == ["aged/app:nightly-1", "aged/app:nightly-2", "aged/app:nightly-3"]
    assert expired["aged/app:nightly-3"].startswith(_digest(fresh))
    assert total == "expired 3 tags"
    assert _tags(server, "aged/app") == ["stable"]
    assert _get(server, "aged/app", "nightly-1").status_code == 404
    assert _get(server, "aged/app", "stable").content == old["stable"]
    assert sorted(
        (e.metadata["tag"], e.metadata["policy"]) for e in server.audit(namespace="aged", kind="tag.expire")
    ) == [
        ("nightly-1", policy),
        ("nightly-2", policy),
        ("nightly-3", policy),
    ]


def test_immutable_tags_are_never_pruned(server: Server) -> None:
    for tag in ("release-1", "release-2", "prod", "scratch", "latest"):
        _push(server, "pinned/app", tag)
    _push(server, "pinned/untouched", "old")
    server.cli("repo", "immutable-rule", "add", "pinned/app", "release-*")
    server.cli("tag", "immutable", "pinned/app", "prod", "on")
    policy = server.add_policy("pinned", "--repo", "pinned/app", "--keep", "1")
    assert server.cli("prune", "policy", "list", "pinned").stdout.split("\t")[:2] == [str(policy), "pinned/app"]

    planned, _ = _prune(server, dry_run=True, namespace="pinned")
    assert list(planned) == ["pinned/app:scratch"]
    assert planned["pinned/app:scratch"].endswith("keep 1 most recent tags: this is #2")
    _prune(server, dry_run=False, namespace="pinned")
    assert _tags(server, "pinned/app") == ["latest", "prod", "release-1", "release-2"]
    assert _tags(server, "pinned/untouched") == ["old"]  # a repository policy stays in its repository


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["badin", "--keep", "2", "--older-than", "1d"], "exactly one"),
        (["badin"], "exactly one"),
        (["badin", "--keep", "0"], "keep count must be between 1"),
        (["badin", "--older-than", "soon"], "invalid duration"),
        (["badin", "--keep", "1", "--pattern", "a/b"], "invalid tag pattern"),
        (["badin", "--repo", "other/app", "--keep", "1"], "not in namespace"),
        (["badin", "--repo", "badin/missing", "--keep", "1"], "no repository badin/missing"),
        (["nosuchns", "--keep", "1"], "no namespace 'nosuchns'"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(server: Server, args: list[str], message: str) -> None:
    _push(server, "badin/app", "v1")
    result = server.cli("prune", "policy", "add", *args, ok=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert server.cli("prune", "policy", "list", "badin").stdout == ""


def test_unknown_policy_or_namespace_on_remove_and_list(server: Server) -> None:
    removed = server.cli("prune", "policy", "remove", "999999", ok=False)
    assert removed.returncode != 0
    assert "no prune policy 999999" in removed.stderr
    listed = server.cli("prune", "policy", "list", "nosuchns", ok=False)
    assert listed.returncode != 0
    assert "no namespace 'nosuchns'" in listed.stderr


# -- the store on its own: apply re-checks each decision, audit entries read back ----------------


async def _seed(db: Database) -> dict[str, int]:
    """Namespace ns, repository ns/app, manifests m1..m3, and tags a<b<c<d by age (oldest a)."""
    async with db.write() as conn:
        await conn.execute(insert(namespaces).values(id=1, name="ns", created_at=1))
        await conn.execute(insert(repositories).values(id=1, namespace_id=1, name="ns/app", created_at=1))
        for number in (1, 2, 3):
            await conn.execute(
                insert(manifests).values(
                    id=number,
                    repository_id=1,
                    digest=f"sha256:{number:064x}",
                    media_type=OCI_MANIFEST,
                    size=2,
                    content=b"{}",
                    created_at=1,
                )
            )
        for start, tag in enumerate("abcd", start=1):
            await conn.execute(insert(tags).values(repository_id=1, name=tag, manifest_id=1, start_at=start * 1000))
    return {"m1": 1, "m2": 2, "m3": 3}


def test_apply_expires_only_what_is_still_decided_and_audits_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dockyard.db'}"
    migrate.upgrade(url)

    async def scenario() -> None:
        db = Database(create_serving_engine(url, pool_size=1))
        try:
            ids = await _seed(db)
            store = PruneStore(db)
            policy = await store.add(
                "ns", None, keep_count=1, older_than_seconds=None, tag_pattern=None, actor=system_actor("test")
            )
            now = 10_000
            planned = await store.plan(now)
            assert [(d.tag, d.reason) for d in planned] == [
                ("a", "keep 1 most recent tags: this is #4"),
                ("b", "keep 1 most recent tags: this is #3"),
                ("c", "keep 1 most recent tags: this is #2"),
            ]
            # Between plan and apply: c moves to another manifest (and becomes the newest), b is pinned.
            async with db.write() as conn:
                await move_tag(conn, 1, "c", ids["m2"], now + 1)
                await conn.execute(
                    update(tags).where(tags.c.name == "b", tags.c.end_at.is_(None)).values(immutable=True)
                )
            expired = await store.apply(planned, now + 2)
            assert [(d.tag, d.digest, d.policy_id, d.reason) for d in expired] == [
                ("a", f"sha256:{1:064x}", policy.id, "keep 1 most recent tags: this is #4")
            ]
            assert await store.apply(planned, now + 3) == []  # nothing twice

            audit = AuditStore(db)
            async with db.write() as conn:
                await record(conn, "repo.create", performer="admin", namespace="ns", repository="ns/app", now=now + 5)
            newest_first = [e for e in await audit.entries(namespace="ns") if e.kind != "prune_policy.add"]
            assert [(e.kind, e.created_at) for e in newest_first] == [("repo.create", now + 5), ("tag.expire", now + 2)]
            (entry,) = await audit.entries(kind="tag.expire", repository="ns/app", since_ms=now)
            assert (entry.performer, entry.namespace) == ("prune-policy", "ns")
            assert entry.metadata == {
                "tag": "a",
                "digest": f"sha256:{1:064x}",
                "policy": policy.id,
                "reason": "keep 1 most recent tags: this is #4",
            }
            assert await audit.entries(kind="tag", since_ms=now + 6) == []

            # A decision naming another manifest, or a removed policy, expires nothing.
            (d_now,) = await store.plan(now + 4)
            assert (d_now.tag, d_now.reason) == ("d", "keep 1 most recent tags: this is #2")
            assert await store.apply([replace(d_now, digest=f"sha256:{3:064x}")], now + 4) == []
            await store.remove(policy.id, actor=system_actor("test"))
            assert await store.plan(now + 4) == []
            assert await store.apply([d_now], now + 4) == []
        finally:
            await db.dispose()

    asyncio.run(scenario())
