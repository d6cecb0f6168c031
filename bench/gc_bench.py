"""Does a garbage-collection pass over a repository with 100k tags stall pushes (or pulls)?

Run through `bench/gc` (see bench/README.md). Standard library plus the virtualenv (psycopg for
the PostgreSQL database it creates). Starts Dockyard itself on a free loopback port, seeds a big
repository directly in SQL, measures push and pull latency from client threads before and during
`dockyard gc run`, samples the database while the pass runs (on PostgreSQL: pg_stat_activity,
lock waits and who blocks them), then checks with SQL that the pass removed exactly what it had
to. Stops only the process groups it started and drops only the database it created.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import (  # the sibling benchmark: processes, ports, constants
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REFERENCE_CONFIG,
    REPO_ROOT,
    Server,
    free_port,
    log,
    server_env,
    start_server,
)

BIG = "admin/big"
OTHER = "admin/other"
ADMIN = "admin"
DAY_MS = 86_400_000
#: application_name of the PostgreSQL sessions of `dockyard gc run` (libpq reads PGAPPNAME).
GC_APP = "dockyard-gc-bench"
SERVE_APP = "dockyard-serve-bench"
#: A pass's phases in order, as the bench sees them from the rows it seeded (see Timeline).
#: The reference's offline GC looks up every tag for every untagged manifest: 100k is out of reach.
REFERENCE_TAGS = 1000
PHASES = ("start-up", "tags", "manifests", "links+usage", "blobs+storage+uploads")

#: Put on PYTHONPATH of `dockyard gc run` only (sitecustomize runs at interpreter start): logs, as
#: JSON lines, every GcStore call and every write transaction it opens (begin requested, begin
#: granted, committed), with wall-clock times. On SQLite a write transaction holds the database's
#: one write lock from "granted" to "committed". Nothing in Dockyard's code or data changes.
TRACE_SITECUSTOMIZE = """
import contextlib, functools, inspect, json, os, time

_path = os.environ.get("BENCH_GC_TRACE")
if _path:
    from dockyard.db import engine as _engine, gc_store as _gc_store

    _out = open(_path, "a", buffering=1)
    _state = {"method": "-"}

    def _emit(**record):
        _out.write(json.dumps(record) + "\\n")

    _write = _engine.Database.write

    @contextlib.asynccontextmanager
    async def _traced_write(self):
        asked = time.time()
        async with _write(self) as conn:
            granted = time.time()
            yield conn
        _emit(k="write", m=_state["method"], asked=asked, granted=granted, done=time.time())

    _engine.Database.write = _traced_write

    def _wrap(name, fn):
        @functools.wraps(fn)
        async def traced(*args, **kwargs):
            outer, _state["method"] = _state["method"], name
            start = time.time()
            try:
                return await fn(*args, **kwargs)
            finally:
                _emit(k="call", m=name, start=start, done=time.time())
                _state["method"] = outer
        return traced

    for _name, _fn in list(vars(_gc_store.GcStore).items()):
        if inspect.iscoroutinefunction(_fn) and not _name.startswith("_"):
            setattr(_gc_store.GcStore, _name, _wrap(_name, _fn))
"""
#: GcStore methods by pass phase, in pass order (the trace's phases).
TRACE_PHASES = (
    ("purge marked", ("marked", "purge_repository_batch", "purge_namespace")),
    ("tags", ("purge_tag_history",)),
    ("manifests", ("collect_manifests",)),
    ("links", ("collect_links",)),
    ("usage", ("collect_usage_items",)),
    ("blobs", ("collect_blobs",)),
    ("storage", ("pending_deletions", "object_referenced", "finish_deletion")),
    ("uploads", ("stale_uploads", "drop_upload")),
    ("record", ("record_pass",)),
)


def now_ms() -> int:
    return int(time.time() * 1000)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- databases


class Db:
    """The bench's own connections to Dockyard's database (PostgreSQL or SQLite), DB-API style.

    SQL is written with `?` placeholders; on PostgreSQL they become `%s`.
    """

    def __init__(self, *, pg_url: str | None = None, sqlite_path: Path | None = None) -> None:
        self.pg_url = pg_url
        self.sqlite_path = sqlite_path

    @property
    def is_pg(self) -> bool:
        return self.pg_url is not None

    def connect(self) -> Any:
        if self.pg_url is not None:
            import psycopg  # noqa: PLC0415 - only the PostgreSQL mode needs it

            return psycopg.connect(self.pg_url, autocommit=True, application_name="dockyard-bench-client")
        conn = sqlite3.connect(str(self.sqlite_path), timeout=60, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s") if self.is_pg else text

    def scalar(self, conn: Any, text: str, params: tuple[Any, ...] = ()) -> Any:
        cur = conn.cursor()
        cur.execute(self.sql(text), params)
        row = cur.fetchone()
        return None if row is None else row[0]


@contextlib.contextmanager
def pg_database(base_url: str) -> Iterator[str]:
    """A throwaway database with a unique name; dropped (only it) at the end."""
    import psycopg  # noqa: PLC0415

    name = f"dockyard_gcbench_{secrets.token_hex(5)}"
    admin_url = f"{base_url.rstrip('/')}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log(f"created PostgreSQL database {name}")
    try:
        yield f"{base_url.rstrip('/')}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped PostgreSQL database {name}")


# --------------------------------------------------------------------------- HTTP


class Client:
    """One keep-alive HTTP/1.1 connection (one per thread), sending a Bearer token."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            fresh = self.conn is None
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                if (r.getheader("Connection") or "").lower() == "close":
                    self.close()
                return r.status, data, r.headers
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh or attempt:  # only a reused keep-alive connection gets one retry
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def fetch_token(port: int, user: str, password: str, repositories: list[str]) -> str:
    """A Bearer token for push and pull on `repositories`, from the endpoint the challenge names."""
    client = Client(port)
    status, _, headers = client.request("GET", "/v2/")
    challenge = headers.get("WWW-Authenticate", "")
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if status != 401 or "realm" not in params:
        raise RuntimeError(f"GET /v2/ answered {status} with challenge {challenge!r}")
    realm = urllib.parse.urlsplit(params["realm"])
    query = urllib.parse.urlencode(
        [("service", params.get("service", ""))] + [("scope", f"repository:{r}:pull,push") for r in repositories]
    )
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    status, body, _ = client.request("GET", f"{realm.path}?{query}", headers={"Authorization": f"Basic {basic}"})
    client.close()
    if status != 200:
        raise RuntimeError(f"token endpoint answered {status}: {body[:300]!r}")
    answer = json.loads(body)
    return str(answer.get("token") or answer["access_token"])


def manifest_for(config: tuple[str, int], layer: tuple[str, int], annotation: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer[0], "size": layer[1]}],
    }
    if annotation is not None:
        doc["annotations"] = {"dockyard.bench.seq": annotation}
    return json.dumps(doc, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Sample:
    kind: str  # "push" or "pull"
    t: float  # start, seconds since the bench's t0
    ms: float
    ok: bool
    repo: str
    steps: tuple[float, ...] = ()  # push: layer POST, config POST, manifest PUT (ms)
    error: str = ""


def push_image(client: Client, repo: str, tag: str, *, two_step: bool = False) -> tuple[list[float], str]:
    """A fresh image: random 4 KiB layer and a config blob, each in one monolithic upload, then the
    manifest under `tag`. Returns the step times (ms) and an error ("" when every answer was 2xx).

    `two_step`: POST then PUT ?digest= (the reference registry has no single-POST upload)."""
    layer = os.urandom(4096)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"nonce": os.urandom(8).hex()}}}
    ).encode()
    steps: list[float] = []
    for data in (layer, config):
        t = time.perf_counter()
        digest = sha256(data)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        if two_step:
            status, body, h = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
            if status != 202:
                return steps, f"POST upload {status} {body[:200]!r}"
            loc = urllib.parse.urlsplit(h["Location"])
            path = f"{loc.path}?{loc.query}&digest={digest}" if loc.query else f"{loc.path}?digest={digest}"
            status, body, _ = client.request("PUT", path, data, headers)
        else:
            status, body, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data, headers)
        steps.append((time.perf_counter() - t) * 1000)
        if status // 100 != 2:
            return steps, f"blob upload {status} {body[:200]!r}"
    t = time.perf_counter()
    manifest = manifest_for((sha256(config), len(config)), (sha256(layer), len(layer)))
    status, body, _ = client.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    steps.append((time.perf_counter() - t) * 1000)
    if status // 100 != 2:
        return steps, f"manifest PUT {status} {body[:200]!r}"
    return steps, ""


class Load:
    """A pushing thread and a pulling thread, each one request at a time.

    The pusher cycles through: a fresh image to admin/other, a fresh image to admin/big, and (unless
    `repush` is off) a re-push to admin/big of the manifest of a random seeded tag that ended long
    ago (content GC is collecting or has collected: CI pushing the same bytes again), under a new
    tag; its blobs are the seed image's, so only the manifest PUT goes over the wire. The puller
    GETs the manifest of a random live seeded tag of admin/big."""

    def __init__(
        self, port: int, token: str, live_tags: list[str], t0: float, dead: Callable[[], tuple[int, bytes]] | None
    ) -> None:
        self.port = port
        self.token = token
        self.live_tags = live_tags
        self.t0 = t0
        self.dead = dead
        self.repushed: list[int] = []  # seed offsets k whose manifest was pushed again
        self.samples: list[Sample] = []
        self.recording = False
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._pusher, daemon=True, name="pusher"),
            threading.Thread(target=self._puller, daemon=True, name="puller"),
        ]
        self.reconnects = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=600)

    def _record(self, sample: Sample) -> None:
        if self.recording:
            self.samples.append(sample)

    def _pusher(self) -> None:
        client = Client(self.port, self.token)
        i = 0
        cycle = 3 if self.dead is not None else 2
        while not self._stop.is_set():
            kind = "push" if i % cycle < 2 else "repush"
            repo = OTHER if i % cycle == 0 else BIG
            tag = f"{kind}-{i}"
            start = time.perf_counter()
            try:
                if kind == "push":
                    steps, error = push_image(client, repo, tag)
                else:
                    assert self.dead is not None
                    k, content = self.dead()
                    self.repushed.append(k)
                    status, body, _ = client.request(
                        "PUT", f"/v2/{repo}/manifests/{tag}", content, {"Content-Type": OCI_MANIFEST}
                    )
                    steps = [(time.perf_counter() - start) * 1000]
                    error = "" if status == 201 else f"manifest PUT (re-push of old-{k}) {status} {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                steps, error = [], f"{type(exc).__name__}: {exc}"
                client.close()
            ms = (time.perf_counter() - start) * 1000
            self._record(Sample(kind, start - self.t0, ms, not error, repo, tuple(steps), error))
            if error:
                log(f"push {repo}:{tag} failed after {ms:.0f} ms: {error}")
            i += 1
        self.reconnects += client.reconnects
        client.close()

    def _puller(self) -> None:
        client = Client(self.port, self.token)
        accept = {"Accept": MANIFEST_ACCEPT}
        while not self._stop.is_set():
            tag = random.choice(self.live_tags)  # spreading reads, not a secret
            start = time.perf_counter()
            error = ""
            try:
                status, body, _ = client.request("GET", f"/v2/{BIG}/manifests/{tag}", headers=accept)
                if status != 200 or not body:
                    error = f"GET {tag}: {status} {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                client.close()
            ms = (time.perf_counter() - start) * 1000
            self._record(Sample("pull", start - self.t0, ms, not error, BIG, (), error))
            if error:
                log(f"pull failed after {ms:.0f} ms: {error}")
        self.reconnects += client.reconnects
        client.close()


# --------------------------------------------------------------------------- Dockyard set-up


@dataclasses.dataclass
class Seeded:
    """Id ranges of the rows the bench put into admin/big (for the sampler and the checks)."""

    repo_id: int
    namespace_id: int
    manifest_lo: int  # manifests [lo, lo + n): even offsets live, odd ones unreachable
    tag_lo: int  # tags [lo, lo + n): offset k on manifest lo + k; even live, odd ended
    n: int
    touched: int  # created_at / touched_at of the seeded manifests and unreachable ones' usage items (live: -1)
    seconds: float = 0.0

    @property
    def n_live(self) -> int:
        return (self.n + 1) // 2

    @property
    def n_dead(self) -> int:
        return self.n // 2

    def live_tags(self) -> list[str]:
        return [f"live-{k}" for k in range(0, self.n, 2)]


def dockyard(binary: Path, config: Path, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
    cmd = [str(binary), *args, "--config", str(config)]
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=server_env(), check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def write_config(path: Path, data: Path, db_url: str | None, args: argparse.Namespace) -> None:
    settings: dict[str, Any] = {
        "data_dir": str(data),
        "gc": {"enabled": False, "grace_seconds": args.grace_seconds, "batch": args.batch},
        # No background workers: the only collection is the bench's `gc run`.
        "jobs": {"run_in_server": False},
        # One token lasts the whole run: no re-login (argon2) in the measured window.
        "auth": {"token_lifetime_seconds": 86400},
        "log": {"level": "warning"},
    }
    if db_url is not None:
        settings["database"] = {"url": db_url}
    path.write_text(json.dumps(settings, indent=2))  # JSON is YAML


def start_dockyard(args: argparse.Namespace, workdir: Path, config: Path, app: str) -> Server:
    port = free_port()
    cmd = [str(args.dockyard_bin), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(args.workers)]
    os.environ["PGAPPNAME"] = app  # inherited by the server (libpq), removed again below
    try:
        server = start_server("dockyard", cmd, port, workdir)
    finally:
        os.environ.pop("PGAPPNAME", None)
    return server


def seed_image(client: Client, repo: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Push one small image (tag `seed`): creates the repository; its blobs are shared by the
    seeded manifests. Returns (config, layer) as (digest, size)."""
    layer = os.urandom(4096)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    for data in (layer, config):
        status, body, _ = client.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        if status != 201:
            raise RuntimeError(f"seed blob upload to {repo}: {status} {body[:300]!r}")
    cfg, lay = (sha256(config), len(config)), (sha256(layer), len(layer))
    status, body, _ = client.request(
        "PUT", f"/v2/{repo}/manifests/seed", manifest_for(cfg, lay), {"Content-Type": OCI_MANIFEST}
    )
    if status != 201:
        raise RuntimeError(f"seed manifest PUT to {repo}: {status} {body[:300]!r}")
    return cfg, lay


def seed_rows(db: Db, n: int, config: tuple[str, int], layer: tuple[str, int]) -> Seeded:
    """`n` manifests and `n` tag rows in admin/big, straight into the tables: manifest k referencing
    the seed image's config and layer (manifest_blobs), counted in the namespace's usage; tag row k
    on manifest k, live (`live-k`) for even k, ended 30 days ago (`old-k`, past the default 14-day
    time-machine window) for odd k. Everything was created 60 days ago."""
    started = time.monotonic()
    conn = db.connect()
    repo_id = int(db.scalar(conn, "SELECT id FROM repositories WHERE name = ?", (BIG,)))
    ns_id = int(db.scalar(conn, "SELECT namespace_id FROM repositories WHERE id = ?", (repo_id,)))
    blob_ids = [int(db.scalar(conn, "SELECT id FROM blobs WHERE digest = ?", (d,))) for d, _ in (config, layer)]
    m_lo = int(db.scalar(conn, "SELECT coalesce(max(id), 0) FROM manifests")) + 1
    t_lo = int(db.scalar(conn, "SELECT coalesce(max(id), 0) FROM tags")) + 1
    now = now_ms()
    created = now - 60 * DAY_MS
    manifests_rows: list[tuple[Any, ...]] = []
    blob_rows: list[tuple[Any, ...]] = []
    usage_rows: list[tuple[Any, ...]] = []
    tag_rows: list[tuple[Any, ...]] = []
    usage_total = 0
    for k in range(n):
        content = manifest_for(config, layer, f"{k}")
        digest = sha256(content)
        mid = m_lo + k
        manifests_rows.append((mid, repo_id, digest, OCI_MANIFEST, len(content), content, created, created))
        blob_rows += [(mid, blob_ids[0]), (mid, blob_ids[1])]
        usage_rows.append((ns_id, digest, len(content), created if k % 2 else created - 1))
        usage_total += len(content)
        if k % 2 == 0:
            tag_rows.append((t_lo + k, repo_id, f"live-{k}", mid, now - 40 * DAY_MS, None))
        else:
            tag_rows.append((t_lo + k, repo_id, f"old-{k}", mid, created, now - 30 * DAY_MS))
    tables: list[tuple[str, str, list[tuple[Any, ...]]]] = [
        ("manifests", "id, repository_id, digest, media_type, size, content, created_at, touched_at", manifests_rows),
        ("manifest_blobs", "manifest_id, blob_id", blob_rows),
        ("namespace_usage_items", "namespace_id, digest, size, touched_at", usage_rows),
        ("tags", "id, repository_id, name, manifest_id, start_at, end_at", tag_rows),
    ]
    if db.is_pg:
        with conn.transaction():
            cur = conn.cursor()
            for table, columns, rows in tables:
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            for table in ("manifests", "tags"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            cur.execute(
                "INSERT INTO namespace_usage (namespace_id, shard, bytes) VALUES (%s, 0, %s) "
                "ON CONFLICT (namespace_id, shard) DO UPDATE SET bytes = namespace_usage.bytes + EXCLUDED.bytes",
                (ns_id, usage_total),
            )
        # What autovacuum would do within a minute of such a load: planner statistics.
        conn.execute("ANALYZE manifests, manifest_blobs, namespace_usage_items, tags")
    else:
        conn.execute("BEGIN IMMEDIATE")
        for table, columns, rows in tables:
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        conn.execute(
            "INSERT INTO namespace_usage (namespace_id, shard, bytes) VALUES (?, 0, ?) "
            "ON CONFLICT (namespace_id, shard) DO UPDATE SET bytes = namespace_usage.bytes + excluded.bytes",
            (ns_id, usage_total),
        )
        conn.execute("COMMIT")
    conn.close()
    seeded = Seeded(repo_id, ns_id, m_lo, t_lo, n, created, time.monotonic() - started)
    log(
        f"seeded {BIG}: {n} manifests, {seeded.n_live} live tags, {seeded.n_dead} tag rows ended 30 days ago "
        f"({2 * n} manifest_blobs, {n} usage items) in {seeded.seconds:.1f} s"
    )
    return seeded


# --------------------------------------------------------------------------- sampling


@dataclasses.dataclass
class LockWait:
    """A session seen waiting on a heavyweight lock (PostgreSQL), with what blocked it."""

    first_t: float
    last_t: float
    waited_ms: float
    app: str
    query: str
    wait: str
    locks: str
    blockers: list[str]


class Sampler:
    """While the pass runs: what is left of the seeded rows (every `interval`; gives the phase
    timeline) and, on PostgreSQL, every non-idle session of the database (every `interval`/2):
    the GC session's current statement and transaction age, and any session waiting on a lock,
    with the statements of the sessions blocking it."""

    def __init__(self, db: Db, seeded: Seeded, t0: float, interval: float) -> None:
        self.db = db
        self.seeded = seeded
        self.t0 = t0
        self.interval = interval
        self.counts: list[tuple[float, int, int, int]] = []  # t, ended tags, dead manifests, usage items left
        self.waits: dict[tuple[int, str], LockWait] = {}
        self.longest_gc_xact: tuple[float, str, float] = (0.0, "", 0.0)  # ms, statement, t
        self.gc_states: dict[str, int] = {}
        self.activity_samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sample_counts(self, conn: Any) -> tuple[int, int, int]:
        s = self.seeded
        ended = self.db.scalar(
            conn,
            "SELECT count(*) FROM tags WHERE id >= ? AND id < ? AND end_at IS NOT NULL",
            (s.tag_lo, s.tag_lo + s.n),
        )
        dead = self.db.scalar(
            conn,
            "SELECT count(*) FROM manifests WHERE id >= ? AND id < ? AND (id - ?) % 2 = 1",
            (s.manifest_lo, s.manifest_lo + s.n, s.manifest_lo),
        )
        items = self.db.scalar(
            conn,
            "SELECT count(*) FROM namespace_usage_items WHERE namespace_id = ? AND touched_at = ?",
            (s.namespace_id, s.touched),
        )
        return int(ended), int(dead), int(items)

    def _loop(self) -> None:
        conn = self.db.connect()
        next_count = 0.0
        try:
            while not self._stop.is_set():
                t = time.perf_counter() - self.t0
                try:
                    if t >= next_count:
                        self.counts.append((t, *self.sample_counts(conn)))
                        next_count = t + self.interval
                    if self.db.is_pg:
                        self._activity(conn, t)
                except Exception as exc:  # a failed sample must not end the run
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    if len(self.errors) > 20:
                        return
                self._stop.wait(self.interval / 2 if self.db.is_pg else self.interval)
        finally:
            conn.close()

    def _activity(self, conn: Any, t: float) -> None:
        cur = conn.cursor()
        cur.execute(
            """
            SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event,
                   extract(epoch FROM clock_timestamp() - a.query_start) * 1000,
                   extract(epoch FROM clock_timestamp() - a.xact_start) * 1000,
                   a.query_start::text, left(a.query, 600), pg_blocking_pids(a.pid),
                   (SELECT string_agg(l.locktype || ' ' || l.mode
                                      || coalesce(' on ' || l.relation::regclass::text, ''), '; ')
                      FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
              FROM pg_stat_activity a
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
               AND a.state IS DISTINCT FROM 'idle'
            """
        )
        rows = cur.fetchall()
        self.activity_samples += 1
        by_pid = {r[0]: r for r in rows}
        for pid, app, state, wtype, wevent, q_ms, x_ms, q_start, query, blocking, locks in rows:
            if app == GC_APP:
                self.gc_states[str(state)] = self.gc_states.get(str(state), 0) + 1
                if x_ms is not None and float(x_ms) > self.longest_gc_xact[0]:
                    self.longest_gc_xact = (float(x_ms), f"[{state}] {query}", t)
            if wtype != "Lock":
                continue
            blockers = []
            for b in blocking or []:
                row = by_pid.get(b)
                if row is None:
                    blockers.append(f"pid {b} (idle or gone)")
                else:
                    blockers.append(f"pid {b} {row[1] or '?'} [{row[2]}] xact {float(row[6] or 0):.0f} ms: {row[8]}")
            key = (int(pid), str(q_start))
            wait = self.waits.get(key)
            if wait is None:
                self.waits[key] = LockWait(
                    t, t, float(q_ms or 0), app or "?", query, f"{wtype}/{wevent}", locks or "", blockers
                )
            else:
                wait.last_t = t
                wait.waited_ms = max(wait.waited_ms, float(q_ms or 0))
                if blockers and not wait.blockers:
                    wait.blockers = blockers


@dataclasses.dataclass
class Trace:
    """What the `gc run` process logged (TRACE_SITECUSTOMIZE), in bench time."""

    calls: list[tuple[str, float, float]]  # GcStore method, start, done
    writes: list[tuple[str, float, float, float]]  # method, asked, granted, committed

    @staticmethod
    def load(path: Path, wall_t0: float) -> Trace | None:
        if not path.exists():
            return None
        calls, writes = [], []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["k"] == "call":
                calls.append((rec["m"], rec["start"] - wall_t0, rec["done"] - wall_t0))
            else:
                writes.append((rec["m"], rec["asked"] - wall_t0, rec["granted"] - wall_t0, rec["done"] - wall_t0))
        return Trace(calls, writes) if calls else None

    @staticmethod
    def phase_of(method: str) -> str:
        if method == "-":
            return "outside GcStore"  # the CLI's own writes (start-up, services)
        return next((name for name, methods in TRACE_PHASES if method in methods), method)


class Timeline:
    """The pass's phases in bench time.

    With the trace (the default): exact, from the GcStore calls of the `gc run` process; each
    phase lasts from its first call to the next phase's first call. Without it (--no-trace): from
    what was left of the seeded rows at each sample (tag history drops first, then the unreachable
    manifests, then their usage items), to the sampling interval's resolution.
    """

    def __init__(
        self,
        counts: list[tuple[float, int, int, int]],
        seeded: Seeded,
        gc_start: float,
        gc_end: float,
        revived: int,
        trace: Trace | None,
    ) -> None:
        self.counts = counts
        self.gc_start = gc_start
        self.gc_end = gc_end
        self.trace = trace
        if trace is not None:
            firsts: dict[str, float] = {}
            for method, start, _ in trace.calls:
                name = Trace.phase_of(method)
                firsts[name] = min(firsts.get(name, start), start)
            ordered = sorted(firsts.items(), key=lambda item: item[1])
            last_done = max(done for _, _, done in trace.calls)
            self.bounds = [("start-up", gc_start, ordered[0][1])]
            for i, (name, lo) in enumerate(ordered):
                hi = ordered[i + 1][1] if i + 1 < len(ordered) else last_done
                self.bounds.append((name, lo, hi))
            self.bounds.append(("exit", last_done, gc_end))
            return

        def first(pred: Callable[[tuple[float, int, int, int]], bool]) -> float:
            for c in counts:
                if c[0] >= gc_start and pred(c):
                    return c[0]
            return gc_end

        tags_begin = first(lambda c: c[1] < seeded.n_dead)
        tags_done = first(lambda c: c[1] == 0)
        manifests_done = first(lambda c: c[2] <= revived)  # re-pushed before collection: kept
        usage_done = first(lambda c: c[3] <= revived)
        # A phase starts when the previous one is seen finished (or when its own rows start going).
        self.bounds = [
            ("start-up", gc_start, min(tags_begin, gc_end)),
            ("tags", min(tags_begin, gc_end), tags_done),
            ("manifests", tags_done, max(tags_done, manifests_done)),
            ("links+usage", max(tags_done, manifests_done), max(tags_done, manifests_done, usage_done)),
            ("blobs+storage+uploads", max(tags_done, manifests_done, usage_done), gc_end),
        ]

    def around(self, start: float, end: float) -> str:
        """What the pass did while a request ran: the GC write transaction overlapping it most
        (trace), or the seeded rows gone between the samples around it."""
        if self.trace is not None:
            best, overlap = None, 0.0
            for w in self.trace.writes:
                o = min(end, w[3]) - max(start, w[2])
                if o > overlap:
                    best, overlap = w, o
            if best is None:
                return "no GC write transaction overlapped it"
            method, _, granted, done = best
            return (
                f"overlapped GC write txn {method} ({Trace.phase_of(method)}) held {1000 * (done - granted):.0f} ms "
                f"(+{granted - self.gc_start:.2f}..+{done - self.gc_start:.2f} s)"
            )
        before = next((c for c in reversed(self.counts) if c[0] <= start), None)
        after = next((c for c in self.counts if c[0] >= end), None)
        if before is None or after is None:
            return ""
        names = ("tag rows", "manifests", "usage items")
        gone = [f"-{b - a} {n}" for n, b, a in zip(names, before[1:], after[1:], strict=True) if b != a]
        return f"committed meanwhile: {', '.join(gone) or 'nothing'}"

    def phase(self, t: float) -> str:
        if t < self.gc_start:
            return "baseline"
        for name, lo, hi in self.bounds:
            if lo <= t < hi:
                return name
        return self.bounds[-1][0]


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Result:
    label: str
    seeded: Seeded
    samples: list[Sample]
    gc_start: float
    gc_end: float
    gc_output: str
    gc_counts: dict[str, int]
    gc_rc: int
    sampler: Sampler
    timeline: Timeline
    checks: list[tuple[str, bool, str]]
    reconnects: int

    @property
    def gc_seconds(self) -> float:
        return self.gc_end - self.gc_start

    def of(self, kind: str, phase: str) -> list[Sample]:
        if phase == "baseline":
            return [s for s in self.samples if s.kind == kind and s.t < self.gc_start]
        return [s for s in self.samples if s.kind == kind and self.gc_start <= s.t < self.gc_end]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]


GC_LINE = re.compile(
    r"collected (\d+) tag rows, (\d+) manifests, (\d+) blob links, (\d+) blobs, (\d+) abandoned uploads; "
    r"deleted (\d+) storage objects"
)


def parse_gc(output: str) -> dict[str, int]:
    m = GC_LINE.search(output)
    if not m:
        return {}
    keys = ("tags", "manifests", "links", "blobs", "uploads", "storage_objects")
    return dict(zip(keys, (int(g) for g in m.groups()), strict=True))


def run_dockyard(args: argparse.Namespace, tmp: Path, db_url: str | None) -> Result:
    label = "sqlite" if db_url is None else "postgresql"
    workdir = tmp / f"dockyard-{label}"
    data = workdir / "data"
    data.mkdir(parents=True)
    config = workdir / "config.yaml"
    write_config(config, data, db_url, args)
    if db_url is not None:
        log(dockyard(args.dockyard_bin, config, "db", "upgrade").strip())
        password = secrets.token_urlsafe(18)
        # Only the embedded default creates `admin` on first start: on PostgreSQL the bench does.
        dockyard(args.dockyard_bin, config, "user", "create", ADMIN, "--superuser", "--password-stdin", stdin=password)
        db = Db(pg_url=db_url)
    else:
        db = Db(sqlite_path=data / "dockyard.db")  # Settings.database_url of the embedded default
    server = start_dockyard(args, workdir, config, SERVE_APP)
    gc_proc: subprocess.Popen[bytes] | None = None
    load: Load | None = None
    try:
        log(f"dockyard ({label}, --workers {args.workers}) on {server.host}, pgid {server.proc.pid}")
        if db_url is None:
            password = (data / "initial-admin-password").read_text().strip()
        token = fetch_token(server.port, ADMIN, password, [BIG, OTHER])
        client = Client(server.port, token)
        cfg, lay = seed_image(client, BIG)
        seed_image(client, OTHER)
        client.close()
        seeded = seed_rows(db, args.tags, cfg, lay)
        t0, wall_t0 = time.perf_counter(), time.time()
        dead = None
        if not args.no_repush:

            def dead() -> tuple[int, bytes]:
                k = random.randrange(1, seeded.n, 2)  # an odd offset: a tag that ended
                return k, manifest_for(cfg, lay, f"{k}")

        load = Load(server.port, token, seeded.live_tags(), t0, dead)
        load.start()
        time.sleep(args.warmup)
        load.recording = True
        log(f"baseline: pushing and pulling for {args.baseline} s without GC")
        time.sleep(args.baseline)
        with Sampler(db, seeded, t0, args.sample_interval) as sampler:
            time.sleep(args.sample_interval * 2)  # the sampler's first rows: the state before the pass
            log("gc run: starting one pass, still pushing and pulling")
            env = {**server_env(), "PGAPPNAME": GC_APP}
            trace_path = workdir / "gc-trace.jsonl"
            if not args.no_trace:
                probe = workdir / "gc-trace-site"
                probe.mkdir()
                (probe / "sitecustomize.py").write_text(TRACE_SITECUSTOMIZE)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(probe), env.get("PYTHONPATH")]))
                env["BENCH_GC_TRACE"] = str(trace_path)
            gc_start = time.perf_counter() - t0
            with open(workdir / "gc.stdout", "wb") as out, open(workdir / "gc.stderr", "wb") as err:
                gc_proc = subprocess.Popen(
                    [str(args.dockyard_bin), "gc", "run", "--config", str(config)],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
                rc = gc_proc.wait(timeout=args.gc_timeout)
            gc_end = time.perf_counter() - t0
            gc_proc = None
            time.sleep(args.sample_interval * 2)
        load.recording = False
        load.stop()
        output = (workdir / "gc.stdout").read_text(errors="replace")
        if rc != 0:
            log(f"gc run exited {rc}: {(workdir / 'gc.stderr').read_text(errors='replace')[-2000:]}")
        log(f"gc run took {gc_end - gc_start:.1f} s: {output.strip()}")
        counts = parse_gc(output)
        trace = None if args.no_trace else Trace.load(trace_path, wall_t0)
        checks = verify(db, seeded, load.samples, counts, sorted(set(load.repushed)))
    finally:
        if gc_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gc_proc.pid, 9)
            gc_proc.wait(timeout=10)
        if load is not None:
            load.stop()  # no-op when already stopped
        crashed = server.proc.poll()
        server.stop()
        if crashed is not None:
            log(f"dockyard exited early with {crashed}; see {workdir / 'server.stderr'}")
    return Result(
        label,
        seeded,
        load.samples,
        gc_start,
        gc_end,
        output,
        counts,
        rc,
        sampler,
        Timeline(sampler.counts, seeded, gc_start, gc_end, len(set(load.repushed)), trace),
        checks,
        load.reconnects,
    )


def verify(
    db: Db, s: Seeded, samples: list[Sample], counts: dict[str, int], repushed: list[int]
) -> list[tuple[str, bool, str]]:
    conn = db.connect()
    q = _counter(db, conn)
    revived_ids = [s.manifest_lo + k for k in repushed] or [0]
    dead_left = q(
        "SELECT count(*) FROM manifests WHERE id >= ? AND id < ? AND (id - ?) % 2 = 1 "
        f"AND id NOT IN ({', '.join('?' * len(revived_ids))})",
        (s.manifest_lo, s.manifest_lo + s.n, s.manifest_lo, *revived_ids),
    )
    ended = q("SELECT count(*) FROM tags WHERE id >= ? AND id < ? AND end_at IS NOT NULL", (s.tag_lo, s.tag_lo + s.n))
    live = q("SELECT count(*) FROM tags WHERE id >= ? AND id < ? AND end_at IS NULL", (s.tag_lo, s.tag_lo + s.n))
    live_manifests = q(
        "SELECT count(*) FROM manifests m JOIN tags t ON t.manifest_id = m.id "
        "WHERE t.id >= ? AND t.id < ? AND t.end_at IS NULL",
        (s.tag_lo, s.tag_lo + s.n),
    )
    items = q(
        "SELECT count(*) FROM namespace_usage_items WHERE namespace_id = ? AND touched_at = ?",
        (s.namespace_id, s.touched),
    )
    live_items = q(
        "SELECT count(*) FROM namespace_usage_items WHERE namespace_id = ? AND touched_at = ?",
        (s.namespace_id, s.touched - 1),
    )
    pushed_ok = sum(1 for x in samples if x.kind != "pull" and x.ok)
    pushed_tags = q(
        "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id "
        "WHERE r.name IN (?, ?) AND (t.name LIKE ? OR t.name LIKE ?) AND t.end_at IS NULL",
        (BIG, OTHER, "push-%", "repush-%"),
    )
    conn.close()
    pushes = [x for x in samples if x.kind != "pull"]
    pulls = [x for x in samples if x.kind == "pull"]
    bad_push = [x for x in pushes if not x.ok]
    bad_pull = [x for x in pulls if not x.ok]
    return [
        (f"{s.n_dead} ended tag rows purged", ended == 0, f"{ended} left"),
        (
            f"{s.n_dead} unreachable manifests collected (but the {len(repushed)} pushed again)",
            dead_left == 0,
            f"{dead_left} left",
        ),
        (f"{s.n_live} live tags kept", live == s.n_live, f"{live} live"),
        (f"their {s.n_live} manifests kept", live_manifests == s.n_live, f"{live_manifests} present"),
        (f"{s.n_dead} usage items of collected manifests dropped", items == 0, f"{items} left"),
        (f"{s.n_live} usage items of live manifests kept", live_items == s.n_live, f"{live_items} kept"),
        (
            "gc run reported them",
            counts.get("tags", -1) >= s.n_dead and counts.get("manifests", -1) >= s.n_dead - len(repushed),
            f"{counts or 'unparsed output'}",
        ),
        ("every push and re-push answered 2xx", not bad_push, f"{len(pushes)} pushes, {len(bad_push)} failed"),
        ("every pull answered 200", not bad_pull, f"{len(pulls)} pulls, {len(bad_pull)} failed"),
        (
            "every recorded push's and re-push's tag is live afterwards",
            pushed_tags >= pushed_ok,
            f"{pushed_tags} live push-* tags, {pushed_ok} pushes recorded ok",
        ),
    ]


def _counter(db: Db, conn: Any) -> Callable[[str, tuple[Any, ...]], int]:
    def q(text: str, params: tuple[Any, ...]) -> int:
        return int(db.scalar(conn, text, params))

    return q


# --------------------------------------------------------------------------- reference registry


@dataclasses.dataclass
class ReferenceResult:
    n: int
    seed_seconds: float
    gc_seconds: float
    summary: str
    manifests_left: int
    live_ok: bool
    error: str = ""


def run_reference(args: argparse.Namespace, tmp: Path) -> ReferenceResult:
    """CNCF Distribution's offline GC over the same shape: n manifests in one repository, half of
    them tagged, half untagged (as after their tags were deleted); `garbage-collect
    --delete-untagged` with the registry stopped. The layout is written directly on disk (pushing
    100k images over HTTP takes many minutes); one image pushed over HTTP first gives the shared
    config and layer blobs, and a live tag is pulled afterwards to check the result."""
    n = args.reference_tags
    workdir = tmp / "reference"
    data = workdir / "data"
    data.mkdir(parents=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(REFERENCE_CONFIG.format(root=data, port=port))
    binary = shutil.which("docker-registry") or "docker-registry"
    server = start_server("reference", [binary, "serve", str(config)], port, workdir)
    try:
        client = Client(port)
        layer = os.urandom(4096)
        cfg_bytes = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        _, error = push_image_fixed(client, "bench/big", "seed", layer, cfg_bytes)
        client.close()
        if error:
            raise RuntimeError(f"reference seed push: {error}")
    finally:
        server.stop()
    cfg, lay = (sha256(cfg_bytes), len(cfg_bytes)), (sha256(layer), len(layer))
    started = time.monotonic()
    root = data / "docker" / "registry" / "v2"
    manifests_dir = root / "repositories" / "bench" / "big" / "_manifests"
    for k in range(n):
        content = manifest_for(cfg, lay, f"{k}")
        hexd = hashlib.sha256(content).hexdigest()
        link = f"sha256:{hexd}"
        blob = root / "blobs" / "sha256" / hexd[:2] / hexd
        blob.mkdir(parents=True)
        (blob / "data").write_bytes(content)
        rev = manifests_dir / "revisions" / "sha256" / hexd
        rev.mkdir(parents=True)
        (rev / "link").write_text(link)
        if k % 2 == 0:
            tag = manifests_dir / "tags" / f"live-{k}"
            (tag / "current").mkdir(parents=True)
            (tag / "current" / "link").write_text(link)
            index = tag / "index" / "sha256" / hexd
            index.mkdir(parents=True)
            (index / "link").write_text(link)
    seed_seconds = time.monotonic() - started
    log(f"reference: wrote {n} manifests ({(n + 1) // 2} tagged) into its storage in {seed_seconds:.1f} s")
    log("reference: docker-registry garbage-collect --delete-untagged (registry stopped)")
    started = time.monotonic()
    proc = subprocess.run(
        [binary, "garbage-collect", "--delete-untagged", str(config)],
        capture_output=True,
        text=True,
        timeout=args.gc_timeout,
        check=False,
        cwd=workdir,
    )
    gc_seconds = time.monotonic() - started
    (workdir / "gc.log").write_text(proc.stdout + proc.stderr)
    summary = next(
        (
            line.strip()
            for line in (proc.stdout + proc.stderr).splitlines()
            if "eligible for deletion" in line and "blobs marked" in line
        ),
        "",
    )
    summary = re.sub(r"^.*?(\d+ blobs marked)", r"\1", summary)
    if proc.returncode != 0:
        return ReferenceResult(
            n, seed_seconds, gc_seconds, summary, -1, False, f"exit {proc.returncode}: {proc.stderr[-500:]}"
        )
    revisions = manifests_dir / "revisions" / "sha256"
    left = sum(1 for _ in revisions.iterdir()) if revisions.exists() else 0
    server = start_server("reference", [binary, "serve", str(config)], port, workdir)
    try:
        client = Client(port)
        status, _, _ = client.request("GET", "/v2/bench/big/manifests/live-0", headers={"Accept": MANIFEST_ACCEPT})
        seed_status, _, _ = client.request("GET", "/v2/bench/big/manifests/seed", headers={"Accept": MANIFEST_ACCEPT})
        client.close()
    finally:
        server.stop()
    log(f"reference: garbage-collect took {gc_seconds:.1f} s; {summary}; {left} manifest revisions left")
    return ReferenceResult(n, seed_seconds, gc_seconds, summary, left, status == 200 and seed_status == 200)


def push_image_fixed(client: Client, repo: str, tag: str, layer: bytes, config: bytes) -> tuple[list[float], str]:
    """push_image with given blobs, POST then PUT (what the reference registry supports)."""
    steps: list[float] = []
    for data in (layer, config):
        status, body, h = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
        if status != 202:
            return steps, f"POST upload {status} {body[:200]!r}"
        loc = urllib.parse.urlsplit(h["Location"])
        path = f"{loc.path}?{loc.query}&digest={sha256(data)}"
        status, body, _ = client.request("PUT", path, data, {"Content-Type": "application/octet-stream"})
        if status != 201:
            return steps, f"PUT upload {status} {body[:200]!r}"
    manifest = manifest_for((sha256(config), len(config)), (sha256(layer), len(layer)))
    status, body, _ = client.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    if status != 201:
        return steps, f"manifest PUT {status} {body[:200]!r}"
    return steps, ""


# --------------------------------------------------------------------------- report


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def print_table(table: list[list[str]], numeric_from: int = 1) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        cells = [
            c.ljust(w) if j < numeric_from else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


KINDS = (
    ("push", "push (2 blob POSTs + manifest PUT)", "pushes/s"),
    ("repush", "re-push of old content (manifest PUT)", "re-pushes/s"),
    ("pull", "manifest GET by tag", "pulls/s"),
)


def latency_rows(r: Result) -> list[list[str]]:
    rows = [["measurement", "baseline", "during GC", "during/baseline"]]
    base_s = baseline_seconds(r)
    gc_s = r.gc_seconds or 1.0
    for kind, what, rate in KINDS:
        if not any(s.kind == kind for s in r.samples):
            continue
        base = [s.ms for s in r.of(kind, "baseline") if s.ok]
        during = [s.ms for s in r.of(kind, "gc") if s.ok]
        for name, fn in (
            ("p50", lambda v: pct(v, 50)),
            ("p99", lambda v: pct(v, 99)),
            ("max", lambda v: max(v) if v else None),
        ):
            b, d = fn(base), fn(during)
            ratio = f"{d / b:.2f}" if b and d else "-"
            rows.append([f"{what} {name} (ms)", fmt_ms(b), fmt_ms(d), ratio])
        nb, nd = len(r.of(kind, "baseline")), len(r.of(kind, "gc"))
        ratio = f"{(nd / gc_s) / (nb / base_s):.2f}" if nb else "-"
        rows.append([f"{rate} (count)", f"{nb / base_s:.1f} ({nb})", f"{nd / gc_s:.1f} ({nd})", ratio])
    return rows


def trace_summary(trace: Trace) -> list[dict[str, Any]]:
    order = [name for name, _ in TRACE_PHASES]
    phases: dict[str, dict[str, Any]] = {}
    for method, start, done in trace.calls:
        p = phases.setdefault(Trace.phase_of(method), {"calls": 0, "writes": [], "first": start, "last": done})
        p["calls"] += 1
        p["first"], p["last"] = min(p["first"], start), max(p["last"], done)
    for method, asked, granted, done in trace.writes:
        phases.setdefault(Trace.phase_of(method), {"calls": 0, "writes": [], "first": asked, "last": done})
        phases[Trace.phase_of(method)]["writes"].append((granted - asked, done - granted))
    out = []
    for name in sorted(phases, key=lambda n: order.index(n) if n in order else len(order)):
        p = phases[name]
        held = [h for _, h in p["writes"]]
        out.append(
            {
                "phase": name,
                "seconds": p["last"] - p["first"],
                "calls": p["calls"],
                "write_transactions": len(held),
                "held_max_ms": 1000 * max(held, default=0.0),
                "held_p50_ms": 1000 * (pct(held, 50) or 0.0),
                "held_total_s": sum(held),
                "begin_wait_max_ms": 1000 * max((w for w, _ in p["writes"]), default=0.0),
            }
        )
    return out


def trace_rows(trace: Trace) -> list[list[str]]:
    rows = [
        ["phase", "seconds", "calls", "write txns", "held p50 ms", "held max ms", "held total s", "begin wait max ms"]
    ]
    for p in trace_summary(trace):
        rows.append(
            [
                p["phase"],
                f"{p['seconds']:.1f}",
                str(p["calls"]),
                str(p["write_transactions"]),
                fmt_ms(p["held_p50_ms"]),
                fmt_ms(p["held_max_ms"]),
                f"{p['held_total_s']:.1f}",
                fmt_ms(p["begin_wait_max_ms"]),
            ]
        )
    return rows


def baseline_seconds(r: Result) -> float:
    starts = [s.t for s in r.samples if s.t < r.gc_start]
    return max(r.gc_start - min(starts), 1e-9) if starts else 1.0


def report(r: Result) -> bool:
    print(f"\n=== Dockyard on {r.label}: gc run over {BIG} with {r.seeded.n} tag rows ===\n")
    print_table(latency_rows(r))
    c = r.gc_counts
    print(
        f"\nGC pass (`dockyard gc run`, wall time incl. the CLI's start-up): {r.gc_seconds:.1f} s, exit {r.gc_rc}"
        f"\ncollected: {c.get('tags', '?')} tag rows, {c.get('manifests', '?')} manifests, "
        f"{c.get('links', '?')} blob links, {c.get('blobs', '?')} blobs, "
        f"{c.get('storage_objects', '?')} storage objects"
    )
    source = (
        "traced GcStore calls"
        if r.timeline.trace is not None
        else f"the seeded rows left, sampled every {r.sampler.interval:.2f} s"
    )
    print(f"\nphases (from {source}; seconds from the start of `gc run`):\n")
    table = [["phase", "from", "to", "pushes", "push p50", "push max", "re-push max", "pull max"]]
    for name, lo, hi in r.timeline.bounds:

        def within(kind: str, lo: float = lo, hi: float = hi) -> list[float]:
            return [s.ms for s in r.samples if s.kind == kind and lo <= s.t < hi]

        pushes = within("push")
        table.append(
            [
                name,
                f"{lo - r.gc_start:.1f}",
                f"{hi - r.gc_start:.1f}",
                str(len(pushes)),
                fmt_ms(pct(pushes, 50)),
                fmt_ms(max(pushes, default=None)),
                fmt_ms(max(within("repush"), default=None)),
                fmt_ms(max(within("pull"), default=None)),
            ]
        )
    print_table(table)
    if r.timeline.trace is not None:
        print(
            "\nGC write transactions by phase (traced in the `gc run` process; on SQLite each one holds the"
            " database's only write lock from begin to commit):\n"
        )
        print_table(trace_rows(r.timeline.trace))
    slow = sorted([s for s in r.samples if s.kind != "pull" and r.gc_start <= s.t < r.gc_end], key=lambda s: -s.ms)
    if slow:
        print("\nslowest pushes during GC (push steps: layer POST / config POST / manifest PUT, ms):")
        for s in slow[:6]:
            steps = " / ".join(f"{x:.0f}" for x in s.steps)
            print(
                f"  +{s.t - r.gc_start:6.1f} s {s.ms:7.0f} ms  {s.kind:<6} {s.repo:<11} {steps:<15} "
                f"{r.timeline.phase(s.t)}; {r.timeline.around(s.t, s.t + s.ms / 1000)}"
                + (f"  {s.error}" if s.error else "")
            )
    slow_pull = sorted(r.of("pull", "gc"), key=lambda s: -s.ms)[:3]
    if slow_pull:
        print(
            "slowest pulls during GC: "
            + ", ".join(f"+{s.t - r.gc_start:.1f} s {s.ms:.0f} ms ({r.timeline.phase(s.t)})" for s in slow_pull)
        )
    sm = r.sampler
    if r.label == "postgresql":
        ms, stmt, t = sm.longest_gc_xact
        print(
            f"\npg_stat_activity, sampled every {sm.interval / 2:.2f} s ({sm.activity_samples} samples): "
            f"GC session states {sm.gc_states}; longest GC transaction seen {ms:.0f} ms "
            f"(at +{t - r.gc_start:.1f} s, {r.timeline.phase(t)}): {one_line(stmt)[:240]}"
        )
        waits = sorted(sm.waits.values(), key=lambda w: -w.waited_ms)
        print(f"sessions seen waiting on a lock: {len(waits)}")
        for w in waits[:8]:
            print(
                f"  +{w.first_t - r.gc_start:.1f} s ({r.timeline.phase(w.first_t)}) {w.app} waited >= "
                f"{w.waited_ms:.0f} ms [{w.wait}; {w.locks}]: {one_line(w.query)[:220]}"
            )
            for b in w.blockers[:3]:
                print(f"      blocked by {one_line(b)[:280]}")
    if sm.errors:
        print(f"sampler errors: {sm.errors[:3]}")
    if r.reconnects:
        print(f"keep-alive reconnects (retried once): {r.reconnects}")
    print("\nchecks:")
    ok = True
    for name, passed, detail in r.checks:
        ok = ok and passed
        print(f"  [{'ok' if passed else 'FAILED'}] {name}: {detail}")
    for s in r.failures[:10]:
        print(f"  failed {s.kind} at +{s.t - r.gc_start:.1f} s ({r.timeline.phase(s.t)}): {s.error}")
    for kind, what, _ in KINDS[:2]:
        base = [s.ms for s in r.of(kind, "baseline") if s.ok]
        during = [s.ms for s in r.of(kind, "gc") if s.ok]
        if base and during:
            worst, p99 = max(during), pct(base, 99) or 0.0
            stalled = worst > max(1000.0, *base, 5 * p99)
            print(
                f"verdict ({what}): {'STALLS' if stalled else 'no stall'} -- slowest during GC {worst:.0f} ms"
                f" vs baseline max {max(base):.0f} ms / p99 {p99:.0f} ms"
            )
    print("(stall: over 1 s, over the baseline max and over 5x the baseline p99; the verdict is not the exit status)")
    return ok and r.gc_rc == 0


def one_line(text: str) -> str:
    return " ".join(text.split())


def result_json(r: Result) -> dict[str, Any]:
    def stats(kind: str, phase: str) -> dict[str, Any]:
        v = [s.ms for s in r.of(kind, phase) if s.ok]
        return {
            "count": len(r.of(kind, phase)),
            "failed": sum(1 for s in r.of(kind, phase) if not s.ok),
            "p50_ms": pct(v, 50),
            "p99_ms": pct(v, 99),
            "max_ms": max(v) if v else None,
        }

    return {
        "database": r.label,
        "tags": r.seeded.n,
        "seed_seconds": r.seeded.seconds,
        "gc_seconds": r.gc_seconds,
        "gc_exit": r.gc_rc,
        "gc_counts": r.gc_counts,
        **{kind: {"baseline": stats(kind, "baseline"), "during_gc": stats(kind, "gc")} for kind, _, _ in KINDS},
        "phases": [{"phase": n, "from_s": lo - r.gc_start, "to_s": hi - r.gc_start} for n, lo, hi in r.timeline.bounds],
        "longest_gc_transaction_ms": r.sampler.longest_gc_xact[0],
        "gc_trace": trace_summary(r.timeline.trace) if r.timeline.trace is not None else None,
        "lock_waits": [dataclasses.asdict(w) for w in r.sampler.waits.values()],
        "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in r.checks],
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/gc", description=__doc__.splitlines()[0])
    p.add_argument("--sqlite", action="store_true", help="the embedded default (SQLite) instead of PostgreSQL")
    p.add_argument("--tags", type=int, default=100_000, help="tag rows (and manifests) seeded in admin/big; half live")
    p.add_argument("--baseline", type=float, default=15.0, help="seconds of pushing and pulling before the pass")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unrecorded load first")
    p.add_argument("--batch", type=int, default=500, help="gc.batch (default 500, Dockyard's default)")
    p.add_argument(
        "--grace-seconds",
        type=int,
        default=60,
        help="gc.grace_seconds (default 60: the seeded rows are 60 days old; the grace only protects the "
        "bench's own in-flight pushes)",
    )
    p.add_argument("--workers", type=int, default=2, help="dockyard serve --workers (default 2)")
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between database samples")
    p.add_argument("--gc-timeout", type=float, default=3600.0, help="seconds a GC may take before the bench gives up")
    p.add_argument(
        "--pg",
        default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without a database (default postgresql://postgres@127.0.0.1:5432, or $BENCH_PG); "
        "the bench creates and drops its own database there",
    )
    p.add_argument("--no-repush", action="store_true", help="only fresh pushes (no re-push of collected content)")
    p.add_argument(
        "--no-trace", action="store_true", help="run `gc run` without the bench's timing probe (phases from row counts)"
    )
    p.add_argument("--reference", action="store_true", help="also time docker-registry's offline garbage-collect")
    p.add_argument("--reference-only", action="store_true", help="only the reference registry's garbage-collect")
    p.add_argument(
        "--reference-tags",
        type=int,
        default=REFERENCE_TAGS,
        help=f"manifests in the reference's repository, half tagged (default {REFERENCE_TAGS}: its GC time "
        "grows with manifests x tags)",
    )
    p.add_argument(
        "--dockyard-bin", type=Path, default=Path(os.environ.get("DOCKYARD_BIN", REPO_ROOT / ".venv/bin/dockyard"))
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--tmpdir", type=Path, default=None, help="where temporary data goes (default $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs, gc output)")
    args = p.parse_args(argv)
    if args.tags < 2:
        p.error("--tags must be at least 2")
    if args.reference_only:
        args.reference = True
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.dockyard_bin.exists():
        sys.exit(f"dockyard executable not found at {args.dockyard_bin} (pip install -e . or --dockyard-bin)")
    if args.reference and shutil.which("docker-registry") is None:
        sys.exit("--reference needs docker-registry (apt-get install -y docker-registry)")
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-gc-bench-", dir=args.tmpdir))
    log(f"temporary data in {tmp}")
    ok = True
    out: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    try:
        result: Result | None = None
        if not args.reference_only:
            if args.sqlite:
                result = run_dockyard(args, tmp, None)
            else:
                with pg_database(args.pg) as url:
                    result = run_dockyard(args, tmp, url)
            ok = report(result)
            out["dockyard"] = result_json(result)
        if args.reference:
            try:
                ref = run_reference(args, tmp)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                ref = ReferenceResult(0, 0, 0, "", -1, False, str(exc).splitlines()[0][:300])
            out["reference"] = dataclasses.asdict(ref)
            print(f"\n=== reference: CNCF Distribution {reference_version()} ===\n")
            if ref.error:
                ok = False
                print(f"failed: {ref.error}")
            else:
                print(
                    f"reference: offline, registry unavailable for {ref.gc_seconds:.1f} s "
                    f"(`garbage-collect --delete-untagged` over {ref.n} manifests, {(ref.n + 1) // 2} tagged; "
                    f"{ref.summary}; {ref.manifests_left} manifest revisions left; live tag pulls afterwards: "
                    f"{'yes' if ref.live_ok else 'NO'})"
                )
                if result is not None:
                    print(
                        f"dockyard ({result.label}): online, pushes kept going; pass {result.gc_seconds:.1f} s "
                        f"over {result.seeded.n} tag rows and {result.seeded.n} manifests"
                    )
                ok = ok and ref.live_ok and ref.manifests_left == (ref.n + 1) // 2 + 1
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=str))
        return 0 if ok else 1
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def reference_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["docker-registry", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return out.split()[-1]
    return "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
