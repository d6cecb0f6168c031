"""Helpers for the HTTP integration suite: servers, digests, uploads, manifests, errors.

Everything here talks to a *live* registry over HTTP (httpx, or raw sockets where a
client library would normalise what we want to send). Nothing imports Dockyard code.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest

# --------------------------------------------------------------------------- constants

# The dockyard of the interpreter running the tests (the checkout under test).
DOCKYARD_BIN = os.environ.get("DOCKYARD_BIN", str(Path(sys.executable).parent / "dockyard"))
REFERENCE_BIN = os.environ.get("DOCKYARD_IT_REFERENCE_BIN", "/usr/bin/docker-registry")
PG_ADMIN_DSN = os.environ.get("DOCKYARD_IT_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL_TEMPLATE = "postgresql://postgres@127.0.0.1:5432/{db}"
#: Run the suite against CNCF Distribution 2.8 instead of Dockyard (single backend).
REFERENCE = os.environ.get("DOCKYARD_IT_REFERENCE", "") not in ("", "0", "false", "no")
READY_TIMEOUT = 20.0
#: The superuser every Dockyard test server gets right after it starts (one password per session).
TEST_USER = "tester"
TEST_PASSWORD = secrets.token_urlsafe(18)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_ALL = ", ".join(ALL_MANIFEST_TYPES)

#: Error codes defined by the OCI Distribution Spec 1.1.
SPEC_ERROR_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
}


# --------------------------------------------------------------------------- misc


def rand(n: int = 4) -> str:
    return secrets.token_hex(n)


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe(resp: httpx.Response, limit: int = 1500) -> str:
    """A request/response transcript for assertion messages (what the lead needs to fix)."""
    req = resp.request
    try:
        body = resp.content[:limit]
    except httpx.ResponseNotRead:
        body = b"<streamed>"
    req_body = b""
    try:
        req_body = req.content[:200]
    except Exception:  # streamed request body
        req_body = b"<stream>"
    rh = {k: v for k, v in req.headers.items() if k.lower() not in ("user-agent", "accept-encoding")}
    return (
        f"\n>>> {req.method} {req.url}\n>>> headers {rh}\n>>> body[:200] {req_body!r}"
        f"\n<<< {resp.status_code}\n<<< headers {dict(resp.headers)}\n<<< body {body!r}\n"
    )


def assert_status(resp: httpx.Response, *statuses: int) -> None:
    assert resp.status_code in statuses, f"expected {statuses}" + describe(resp)


def error_codes(resp: httpx.Response) -> list[str]:
    """Parse and validate the OCI error body; returns the list of codes."""
    try:
        body = resp.json()
    except Exception:
        raise AssertionError("error response body is not JSON" + describe(resp)) from None
    shape = "error body must be {'errors': [...]}" + describe(resp)
    assert isinstance(body, dict), shape
    assert isinstance(body.get("errors"), list), shape
    assert body["errors"], shape
    codes = []
    for err in body["errors"]:
        assert isinstance(err, dict), describe(resp)
        code = err.get("code")
        assert isinstance(code, str), describe(resp)
        assert re.fullmatch(r"[A-Z_]+", code), "error code must be uppercase letters/underscores" + describe(resp)
        if "message" in err:
            assert isinstance(err["message"], str), describe(resp)
        codes.append(code)
    return codes


def assert_error(resp: httpx.Response, statuses: int | Iterable[int], *codes: str) -> None:
    """Assert status in `statuses` and that the OCI error body holds one of `codes`."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    statuses = tuple(statuses)
    assert resp.status_code in statuses, f"expected status {statuses} and code {codes}" + describe(resp)
    got = error_codes(resp)
    assert any(c in codes for c in got), f"expected one of {codes}, got {got}" + describe(resp)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True)
    q = [(k, v) for k, v in q if k not in params] + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))


def absolute(client: httpx.Client, location: str) -> str:
    return urljoin(str(client.base_url), location)


def path_of(location: str) -> str:
    """Path + query of a (possibly absolute) Location, to replay it on another instance."""
    p = urlsplit(location)
    return p.path + (f"?{p.query}" if p.query else "")


def parse_range(value: str | None) -> int:
    """`Range: 0-<end>` of an upload -> number of bytes received (end + 1).

    `0-0` is ambiguous in practice (Distribution sends it for an empty session); callers
    that may see an empty session must handle that themselves.
    """
    assert value is not None, "missing Range header"
    m = re.fullmatch(r"(?:bytes=)?0-(\d+)", value.strip())
    assert m, f"bad upload Range header {value!r}"
    return int(m.group(1)) + 1


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass
class Server:
    backend: str
    host: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    config: Path | None = None
    argv: list[str] = dataclasses.field(default_factory=list)
    #: (user, password) the tests authenticate with; None for the reference registry (no auth).
    credentials: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> tuple[str, str] | None:
        """For httpx: `httpx.Client(auth=srv.auth)` sends Basic credentials on every request."""
        return self.credentials

    @property
    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for raw-socket requests ({} without credentials)."""
        return basic_auth_header(*self.credentials) if self.credentials else {}

    def logs(self, tail: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-tail:]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(self.data_dir.parent),
                env=dockyard_env() if self.backend != "reference" else None,
            )
        finally:
            logf.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(
                    f"{self.backend} server exited with {self.proc.returncode} during start-up\n"
                    f"argv: {self.argv}\n--- log ---\n{self.logs()}",
                    pytrace=False,
                )
            try:
                r = httpx.get(f"{self.url}/v2/", timeout=2)
                # 200: open registry (reference); 401: Dockyard asks anonymous callers to log in.
                if r.status_code in (200, 401):
                    return
                last = f"GET /v2/ -> {r.status_code}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"{self.backend} server not ready within {READY_TIMEOUT}s ({last})\n"
            f"argv: {self.argv}\n--- log ---\n{self.logs()}",
            pytrace=False,
        )

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # our own process group (start_new_session)

    def kill9(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        # reap any stragglers left in the group (workers)
        self._signal_group(signal.SIGKILL)


def dockyard_env() -> dict[str, str]:
    """The environment for Dockyard processes: Dockyard reads every DOCKYARD_* variable as a
    setting and rejects unknown ones, so the suite's own knobs stay out."""
    return {k: v for k, v in os.environ.items() if k != "DOCKYARD_BIN" and not k.startswith("DOCKYARD_IT_")}


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def dockyard_cli(srv: Server, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run `dockyard ARGS --config F --data-dir D` against `srv`'s database; return stdout."""
    _require_bin(DOCKYARD_BIN, "dockyard")
    cmd = [DOCKYARD_BIN, *args]
    if srv.config is not None:
        cmd += ["--config", str(srv.config)]
    cmd += ["--data-dir", str(srv.data_dir)]
    try:
        res = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=dockyard_env(), check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} timed out\n{e.stdout}\n{e.stderr}", pytrace=False)
    if res.returncode != 0:
        pytest.fail(
            f"{cmd} failed ({res.returncode})\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}",
            pytrace=False,
        )
    return res.stdout


def create_superuser(srv: Server, user: str = TEST_USER, password: str = TEST_PASSWORD) -> None:
    """Give a started Dockyard server its test superuser (no-op for the reference registry)."""
    if srv.backend == "reference":
        return
    dockyard_cli(srv, "user", "create", user, "--superuser", "--password-stdin", stdin=password)
    srv.credentials = (user, password)


def _require_bin(path: str, what: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{what} binary not found/executable at {path}", pytrace=False)


def dockyard_server(
    base: Path,
    *,
    port: int | None = None,
    config: Path | None = None,
    backend: str = "sqlite",
    data_dir: Path | None = None,
    log_name: str = "server.log",
) -> Server:
    """Build (not start) a `dockyard serve` process description rooted at `base`."""
    _require_bin(DOCKYARD_BIN, "dockyard")
    data_dir = data_dir or base / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [DOCKYARD_BIN, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["--data-dir", str(data_dir), "--workers", "1"]
    return Server(backend, "127.0.0.1", port, data_dir, base / log_name, config=config, argv=argv)


def reference_server(
    base: Path,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    log_name: str = "server.log",
) -> Server:
    """CNCF Distribution 2.8 (Debian `docker-registry`) with filesystem storage."""
    _require_bin(REFERENCE_BIN, "docker-registry")
    data_dir = data_dir or base / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cfg = base / f"registry-{port}.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {data_dir}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
        "  secret: dockyard-integration-shared-secret\n"
    )
    return Server(
        "reference",
        "127.0.0.1",
        port,
        data_dir,
        base / log_name,
        config=cfg,
        argv=[REFERENCE_BIN, "serve", str(cfg)],
    )


def dockyard_db_upgrade(config: Path, data_dir: Path, log_path: Path) -> None:
    _require_bin(DOCKYARD_BIN, "dockyard")
    cmd = [DOCKYARD_BIN, "db", "upgrade", "--config", str(config), "--data-dir", str(data_dir)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} timed out\n{e.stdout}\n{e.stderr}", pytrace=False)
    log_path.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        pytest.fail(
            f"{cmd} failed ({res.returncode})\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}",
            pytrace=False,
        )


# --------------------------------------------------------------------------- raw HTTP


def raw_request(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    """Send a request with the path byte-for-byte as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body if body else None)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def send_truncated(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    declared_length: int,
    sent: bytes,
    linger: float = 0.3,
) -> None:
    """Open a socket, announce `declared_length` body bytes, send only `sent`, then drop."""
    s = socket.create_connection((host, port), timeout=10)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        head += f"Content-Length: {declared_length}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode() + sent)
        time.sleep(linger)
    finally:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


# --------------------------------------------------------------------------- blobs


def push_blob(client: httpx.Client, repo: str, data: bytes, alg: str = "sha256") -> str:
    """Monolithic POST ?digest= (falls back to POST+PUT if the registry answers 202)."""
    d = digest_of(data, alg)
    r = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": d},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    if r.status_code == 202:  # single-POST not supported: spec says continue with PUT
        r = client.put(
            with_query(absolute(client, r.headers["location"]), digest=d),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert_status(r, 201)
    return d


def start_upload(client: httpx.Client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert_status(r, 202)
    assert r.headers.get("location"), describe(r)
    return absolute(client, r.headers["location"])


def patch_chunk(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    return client.patch(
        location,
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
        },
    )


def chunked_push(client: httpx.Client, repo: str, data: bytes, chunk: int, alg: str = "sha256") -> str:
    loc = start_upload(client, repo)
    off = 0
    while off < len(data):
        part = data[off : off + chunk]
        r = patch_chunk(client, loc, part, off)
        assert_status(r, 202)
        off += len(part)
        assert parse_range(r.headers.get("range")) == off, describe(r)
        loc = absolute(client, r.headers["location"])
    d = digest_of(data, alg)
    r = client.put(with_query(loc, digest=d))
    assert_status(r, 201)
    return d


def blob_visible(client: httpx.Client, repo: str, digest: str) -> bool:
    r = client.head(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code in (200, 404), describe(r)
    return r.status_code == 200


# --------------------------------------------------------------------------- manifests


def descriptor(media_type: str, data: bytes, alg: str = "sha256", **extra: Any) -> dict:
    d = {"mediaType": media_type, "digest": digest_of(data, alg), "size": len(data)}
    d.update(extra)
    return d


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def odd_bytes(obj: Any) -> bytes:
    """Valid JSON with unusual whitespace and reversed key order: a registry that
    re-serialises instead of storing the exact bytes changes the digest."""

    def rev(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: rev(o[k]) for k in reversed(list(o))}
        if isinstance(o, list):
            return [rev(x) for x in o]
        return o

    text = json.dumps(rev(obj), indent=3, separators=(" ,", " :  "))
    return ("\n \t" + text.replace("\n", "\r\n") + "  \n\n").encode()


@dataclasses.dataclass
class Pushed:
    body: bytes
    media_type: str
    digest: str
    obj: dict

    @property
    def desc(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.body)}


def put_manifest(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})


def get_manifest(client: httpx.Client, repo: str, ref: str, method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_ALL})


def image_parts(client: httpx.Client, repo: str, *, docker: bool = False, layers: int = 1) -> tuple[dict, list[dict]]:
    """Push a config blob and `layers` random layer blobs; return their descriptors."""
    cfg = compact(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "nonce": rand(8)}
    )
    push_blob(client, repo, cfg)
    cdesc = descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, cfg)
    ldescs = []
    for _ in range(layers):
        data = random_bytes(1024 + secrets.randbelow(2048))
        push_blob(client, repo, data)
        ldescs.append(descriptor(DOCKER_LAYER if docker else OCI_LAYER, data))
    return cdesc, ldescs


def oci_manifest_obj(config: dict, layers: list[dict], **extra: Any) -> dict:
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    obj.update(extra)
    return obj


def docker_manifest_obj(config: dict, layers: list[dict]) -> dict:
    return {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": layers}


def index_obj(children: list[dict], media_type: str = OCI_INDEX, **extra: Any) -> dict:
    manifests = []
    for i, child in enumerate(children):
        c = dict(child)
        c.setdefault("platform", {"architecture": ["amd64", "arm64", "s390x", "ppc64le"][i % 4], "os": "linux"})
        manifests.append(c)
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    obj.update(extra)
    return obj


def push_manifest(
    client: httpx.Client,
    repo: str,
    obj: dict,
    media_type: str,
    ref: str | None = None,
    *,
    body: bytes | None = None,
    alg: str = "sha256",
) -> Pushed:
    body = body if body is not None else compact(obj)
    d = digest_of(body, alg)
    r = put_manifest(client, repo, ref or d, body, media_type)
    assert_status(r, 201)
    return Pushed(body, media_type, d, obj)


def push_image(
    client: httpx.Client,
    repo: str,
    ref: str | None = None,
    *,
    docker: bool = False,
    layers: int = 1,
    **extra: Any,
) -> Pushed:
    cdesc, ldescs = image_parts(client, repo, docker=docker, layers=layers)
    if docker:
        return push_manifest(client, repo, docker_manifest_obj(cdesc, ldescs), DOCKER_MANIFEST, ref)
    return push_manifest(client, repo, oci_manifest_obj(cdesc, ldescs, **extra), OCI_MANIFEST, ref)


def push_empty_config(client: httpx.Client, repo: str) -> dict:
    push_blob(client, repo, b"{}")
    return {"mediaType": OCI_EMPTY, "digest": OCI_EMPTY_DIGEST, "size": 2}


def push_artifact(
    client: httpx.Client,
    repo: str,
    *,
    artifact_type: str | None,
    subject: dict | None = None,
    annotations: dict | None = None,
    config: dict | None = None,
    ref: str | None = None,
    payload: bytes | None = None,
) -> Pushed:
    cfg = config or push_empty_config(client, repo)
    payload = payload if payload is not None else f"artifact {rand(8)}".encode()
    push_blob(client, repo, payload)
    extra: dict[str, Any] = {}
    if artifact_type is not None:
        extra["artifactType"] = artifact_type
    if subject is not None:
        extra["subject"] = subject
    if annotations is not None:
        extra["annotations"] = annotations
    obj = oci_manifest_obj(cfg, [descriptor("application/octet-stream", payload)], **extra)
    return push_manifest(client, repo, obj, OCI_MANIFEST, ref)
