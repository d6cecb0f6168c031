"""Helpers for the identity and access-control suite (tests/auth).

Everything talks to a *live* Dockyard over HTTP (httpx) or through the `dockyard` CLI; nothing
imports Dockyard code. JWTs are read and crafted by hand (base64url + `cryptography` for ES256),
so the suite checks the wire format rather than trusting a JWT library's defaults.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# --------------------------------------------------------------------------- constants

# The dockyard of the interpreter running the tests (the checkout under test).
DOCKYARD_BIN = os.environ.get("DOCKYARD_BIN", str(Path(sys.executable).parent / "dockyard"))
PG_ADMIN_DSN = os.environ.get("DOCKYARD_IT_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL_TEMPLATE = "postgresql://postgres@127.0.0.1:5432/{db}"
READY_TIMEOUT = 20.0
CLI_TIMEOUT = 60

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT_ALL = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))

REFUSAL_CODES = ("UNAUTHORIZED", "DENIED")


# --------------------------------------------------------------------------- misc


def rand(n: int = 4) -> str:
    return secrets.token_hex(n)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redact_headers(headers: httpx.Headers) -> dict[str, str]:
    out = {}
    for k, v in headers.items():
        if k.lower() in ("user-agent", "accept-encoding", "connection"):
            continue
        out[k] = v
    return out


def describe(resp: httpx.Response, limit: int = 1200) -> str:
    """A request/response transcript for assertion messages (what the lead needs to fix)."""
    req = resp.request
    try:
        body = resp.content[:limit]
    except httpx.ResponseNotRead:
        body = b"<streamed>"
    try:
        req_body = req.content[:300]
    except Exception:  # streamed request body
        req_body = b"<stream>"
    return (
        f"\n>>> {req.method} {req.url}\n>>> headers {_redact_headers(req.headers)}\n>>> body[:300] {req_body!r}"
        f"\n<<< {resp.status_code}\n<<< headers {dict(resp.headers)}\n<<< body {body!r}\n"
    )


def assert_status(resp: httpx.Response, *statuses: int, why: str = "") -> None:
    assert resp.status_code in statuses, f"{why} expected {statuses}" + describe(resp)


def error_codes(resp: httpx.Response) -> list[str]:
    """Parse and validate the OCI error body `{"errors":[{"code","message","detail"}]}`."""
    try:
        body = resp.json()
    except Exception:
        raise AssertionError("error response body is not JSON" + describe(resp)) from None
    shape = "error body must be {'errors': [{'code': ...}, ...]}" + describe(resp)
    assert isinstance(body, dict), shape
    assert isinstance(body.get("errors"), list), shape
    assert body["errors"], shape
    codes = []
    for err in body["errors"]:
        assert isinstance(err, dict), shape
        assert isinstance(err.get("code"), str), shape
        codes.append(err["code"])
    return codes


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], *codes: str, why: str = "") -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, f"{why} expected status {statuses} with code {codes}" + describe(resp)
    got = error_codes(resp)
    assert any(c in codes for c in got), f"{why} expected one of {codes}, got {got}" + describe(resp)


def basic(user: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- WWW-Authenticate


@dataclasses.dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")

    def scope_parts(self) -> tuple[str, str, set[str]]:
        """`repository:<name>:<a,b>` -> ("repository", name, {a, b}). Names never hold ':' here."""
        kind, _, rest = self.scope.partition(":")
        name, _, actions = rest.rpartition(":")
        return kind, name, {a for a in actions.split(",") if a}


_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(value: str | None) -> Challenge:
    assert value, "missing WWW-Authenticate header"
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        assert m, f"unparsable WWW-Authenticate {value!r} at {rest[pos:]!r}"
        assert m.end() > pos, f"unparsable WWW-Authenticate {value!r} at {rest[pos:]!r}"
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
        pos = m.end()
    return Challenge(scheme, params)


def assert_bearer_challenge(
    resp: httpx.Response,
    *,
    base_url: str,
    repository: str | None,
    need: set[str] | None,
    service: str | None = None,
    why: str = "",
) -> Challenge:
    """A 401 with `Bearer realm="<base>/v2/auth",service="…",scope="repository:<name>:<actions>"`.

    `need`: at least one of these actions must be in the scope (None: do not check actions).
    """
    assert resp.status_code == 401, f"{why} expected 401 with a Bearer challenge" + describe(resp)
    ch = parse_challenge(resp.headers.get("www-authenticate"))
    assert ch.scheme.lower() == "bearer", f"{why} challenge scheme must be Bearer" + describe(resp)
    assert ch.realm == f"{base_url}/v2/auth", f"{why} realm must be {base_url}/v2/auth" + describe(resp)
    assert ch.service, f"{why} challenge must name the service" + describe(resp)
    if service is not None:
        assert ch.service == service, f"{why} service must be {service!r}" + describe(resp)
    if repository is not None:
        kind, name, actions = ch.scope_parts()
        assert kind == "repository", f"{why} scope must be repository:<name>:<actions>" + describe(resp)
        assert name == repository, f"{why} scope must name {repository}" + describe(resp)
        assert actions, f"{why} scope must list actions" + describe(resp)
        if need is not None:
            assert actions & need, f"{why} scope actions {actions} must include one of {need}" + describe(resp)
    return ch


# --------------------------------------------------------------------------- JWT


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, payload and signature of a compact JWS, without verifying anything."""
    parts = token.split(".")
    assert len(parts) == 3, f"not a compact JWS: {token[:60]}..."
    header = json.loads(b64url_decode(parts[0]))
    payload = json.loads(b64url_decode(parts[1]))
    return header, payload, b64url_decode(parts[2])


def jwt_payload(token: str) -> dict[str, Any]:
    return jwt_parts(token)[1]


def jwt_encode_unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}"


def new_ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def load_private_pem(pem: str | bytes) -> Any:
    return load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)


def es256_sign(header: dict[str, Any], payload: dict[str, Any], key: Any) -> str:
    """A compact JWS signed with ES256 (raw r||s, 64 bytes) by `key` (an EC P-256 private key)."""
    signing_input = jwt_encode_unsigned({**header, "alg": "ES256"}, payload)
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def es256_verify(token: str, public_key: Any) -> bool:
    h, p, sig = token.split(".")
    raw = b64url_decode(sig)
    if len(raw) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def alg_none(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return jwt_encode_unsigned({**header, "alg": "none"}, payload) + "."


def hs256_sign(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = jwt_encode_unsigned({**header, "alg": "HS256"}, payload)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def repo_actions(payload: dict[str, Any], repository: str) -> set[str]:
    """Actions the `access` claim grants on `repository` (union of matching entries)."""
    access = payload.get("access")
    assert isinstance(access, list), f"token has no access list: {payload}"
    out: set[str] = set()
    for entry in access:
        assert isinstance(entry, dict), f"bad access entry {entry!r}"
        if entry.get("type") == "repository" and entry.get("name") == repository:
            acts = entry.get("actions")
            assert isinstance(acts, list), f"bad access entry {entry!r}"
            out |= set(acts)
    return out


# --------------------------------------------------------------------------- PostgreSQL


def create_database(prefix: str = "dockyard_auth_") -> str:
    name = f"{prefix}{rand(6)}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as e:
        pytest.fail(f"cannot create PostgreSQL database {name} via {PG_ADMIN_DSN}: {e}", pytrace=False)
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def db_query(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_URL_TEMPLATE.format(db=db), autocommit=True, connect_timeout=10) as conn:
        return list(conn.execute(sql, params).fetchall())


# --------------------------------------------------------------------------- server + CLI


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_scalar(x) for x in v) + "]"
    return json.dumps(str(v))


def render_yaml(tree: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in tree.items():
        lines.append(f"{section}:")
        for k, v in values.items():
            lines.append(f"  {k}: {_yaml_scalar(v)}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class AuthServer:
    """A `dockyard serve` on its own throwaway PostgreSQL database."""

    base: Path
    db: str
    config: Path
    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------
    @classmethod
    def create(cls, base: Path, extra_config: dict[str, dict[str, Any]] | None = None) -> AuthServer:
        if not os.access(DOCKYARD_BIN, os.X_OK):
            pytest.fail(f"dockyard binary not found/executable at {DOCKYARD_BIN}", pytrace=False)
        db = create_database()
        tree: dict[str, dict[str, Any]] = {
            "database": {"url": PG_URL_TEMPLATE.format(db=db)},
            "auth": {"superusers": []},
        }
        for section, values in (extra_config or {}).items():
            tree.setdefault(section, {}).update(values)
        cfg = base / "dockyard.yaml"
        cfg.write_text(render_yaml(tree))
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
        srv = cls(base, db, cfg, data, free_port(), base / "server.log")
        try:
            res = srv.cli("db", "upgrade", check=False, global_opts=True)
            if res.returncode != 0:
                pytest.fail(f"dockyard db upgrade failed ({res.returncode})\n{res.stdout}\n{res.stderr}", pytrace=False)
            srv.start()
        except BaseException:
            srv.close()
            raise
        return srv

    def start(self) -> None:
        argv = [
            DOCKYARD_BIN,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            "1",
        ]
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(self.base),
            )
        finally:
            logf.close()
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"dockyard serve exited with {self.proc.returncode} during start-up\nargv: {argv}\n"
                    f"--- log ---\n{self.logs()}",
                    pytrace=False,
                )
            try:
                r = httpx.get(f"{self.url}/v2/", timeout=2)
                if r.status_code in (200, 401):
                    return
                last = f"GET /v2/ -> {r.status_code}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"dockyard serve not ready within {READY_TIMEOUT}s ({last})\nargv: {argv}\n--- log ---\n{self.logs()}",
            pytrace=False,
        )

    def logs(self, tail: int | None = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text if tail is None else text[-tail:]

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"dockyard serve died (rc={self.proc.returncode})\n{self.logs()}", pytrace=False)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # workers may outlive the parent: sweep the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        drop_database(self.db)

    # -- CLI -------------------------------------------------------------------
    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True, global_opts: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [DOCKYARD_BIN, *args]
        if global_opts:
            argv += ["--config", str(self.config), "--data-dir", str(self.data_dir)]
        try:
            res = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False, cwd=self.base
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{argv} timed out\n{e.stdout}\n{e.stderr}", pytrace=False)
        if check and res.returncode != 0:
            pytest.fail(
                f"CLI failed ({res.returncode}): {' '.join(args)}\n--- stdout ---\n{res.stdout}\n"
                f"--- stderr ---\n{res.stderr}",
                pytrace=False,
            )
        return res

    def create_user(self, name: str, password: str, *, superuser: bool = False) -> None:
        args = ["user", "create", name, "--password-stdin"]
        if superuser:
            args.append("--superuser")
        self.cli(*args, stdin=password + "\n")

    def create_robot(self, namespace: str, name: str) -> tuple[str, str]:
        out = self.cli("robot", "create", namespace, name).stdout.splitlines()
        lines = [ln.strip() for ln in out if ln.strip()]
        assert len(lines) >= 2, f"robot create must print NS+NAME then the token, got {out!r}"
        assert lines[0] == f"{namespace}+{name}", f"robot create line 1 must be {namespace}+{name}, got {lines[0]!r}"
        return lines[0], lines[1]

    def app_token(self, user: str, title: str) -> str:
        out = [ln.strip() for ln in self.cli("token", "create", user, "--title", title).stdout.splitlines()]
        out = [ln for ln in out if ln]
        assert len(out) == 1, f"token create must print only the token, got {out!r}"
        return out[0]

    def cli_password(self, user: str) -> str:
        out = [ln.strip() for ln in self.cli("user", "cli-password", user).stdout.splitlines() if ln.strip()]
        assert len(out) == 1, f"user cli-password must print only the secret, got {out!r}"
        return out[0]


# --------------------------------------------------------------------------- token flow


class TokenClient:
    """Speaks the Docker token protocol like a real client: on a 401 Bearer challenge it asks the
    realm for the challenge's scope (plus actions it already holds for that repository) with its
    Basic credentials, caches the token per repository and retries once. For seeding and checks."""

    def __init__(self, base_url: str, user: str | None = None, secret: str | None = None) -> None:
        self.base_url = base_url
        self.user = user
        self.secret = secret
        self.http = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
        self.tokens: dict[str, tuple[set[str], str]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TokenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def login(self, scopes: list[str], service: str, realm: str | None = None) -> httpx.Response:
        headers = basic(self.user, self.secret or "") if self.user else {}
        params: list[tuple[str, str]] = [("service", service)] + [("scope", s) for s in scopes]
        return self.http.get(realm or f"{self.base_url}/v2/auth", params=params, headers=headers)

    def request(self, method: str, url: str, *, repository: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        held = self.tokens.get(repository)
        if held:
            headers["Authorization"] = f"Bearer {held[1]}"
        r = self.http.request(method, url, headers=headers, **kw)
        if r.status_code != 401 or "bearer" not in r.headers.get("www-authenticate", "").lower():
            return r
        ch = parse_challenge(r.headers["www-authenticate"])
        kind, name, actions = ch.scope_parts()
        actions |= held[0] if held else set()
        scope = f"{kind}:{name}:{','.join(sorted(actions))}"
        t = self.login([scope], ch.service, ch.realm)
        assert_status(t, 200, why=f"token for {scope} as {self.user}:")
        token = t.json()["token"]
        self.tokens[repository] = (actions, token)
        headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, url, headers=headers, **kw)

    # -- registry operations (assert success) ----------------------------------
    def push_blob(self, repo: str, data: bytes) -> str:
        d = digest_of(data)
        r = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            repository=repo,
            params={"digest": d},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert_status(r, 201, why=f"seed blob in {repo} as {self.user}:")
        return d

    def push_image(self, repo: str, tag: str) -> Image:
        img = Image.make()
        self.push_blob(repo, img.config)
        self.push_blob(repo, img.layer)
        r = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            repository=repo,
            content=img.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert_status(r, 201, why=f"seed manifest {repo}:{tag} as {self.user}:")
        return img

    def manifest_status(self, repo: str, ref: str) -> int:
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", repository=repo, headers={"Accept": ACCEPT_ALL})
        assert r.status_code in (200, 404), describe(r)
        return r.status_code

    def tag_digest(self, repo: str, tag: str) -> str | None:
        r = self.request("GET", f"/v2/{repo}/manifests/{tag}", repository=repo, headers={"Accept": ACCEPT_ALL})
        assert r.status_code in (200, 404), describe(r)
        return digest_of(r.content) if r.status_code == 200 else None

    def blob_status(self, repo: str, digest: str) -> int:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repository=repo)
        assert r.status_code in (200, 404), describe(r)
        return r.status_code

    def repo_exists(self, repo: str) -> bool:
        r = self.request("GET", f"/v2/{repo}/tags/list", repository=repo)
        assert r.status_code in (200, 404), describe(r)
        if r.status_code == 404:
            assert "NAME_UNKNOWN" in error_codes(r), describe(r)
        return r.status_code == 200


@dataclasses.dataclass(frozen=True)
class Image:
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def layer_digest(self) -> str:
        return digest_of(self.layer)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    @classmethod
    def make(cls) -> Image:
        cfg = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "nonce": rand(8)},
            separators=(",", ":"),
        ).encode()
        layer = os.urandom(512 + secrets.randbelow(512))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest_of(cfg), "size": len(cfg)},
                "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
            },
            separators=(",", ":"),
        ).encode()
        return cls(cfg, layer, manifest)


# --------------------------------------------------------------------------- refresh tokens

#: Ways to ask /v2/auth for a refresh token: the contract's words ("POST … OAuth2 form;
#: offline_token=true adds a refresh_token"), the Docker OAuth2 spec's POST `access_type=offline`,
#: and the Docker token spec's GET `offline_token=true` (what `docker login` sends).
REFRESH_HOW = ("post-offline_token", "post-access_type", "get-offline_token")


def refresh_request(
    client: httpx.Client, service: str, user: str, secret: str, scope: str, how: str = "get-offline_token"
) -> httpx.Response:
    common = {"service": service, "scope": scope, "client_id": "dockyard-tests"}
    if how == "get-offline_token":
        return client.get("/v2/auth", params={**common, "offline_token": "true"}, headers=basic(user, secret))
    form = {**common, "grant_type": "password", "username": user, "password": secret}
    if how == "post-offline_token":
        form["offline_token"] = "true"
    elif how == "post-access_type":
        form["access_type"] = "offline"
    else:  # pragma: no cover
        raise ValueError(how)
    return client.post("/v2/auth", data=form)


def refresh_token_for(
    client: httpx.Client, service: str, user: str, secret: str, scope: str, how: str = "get-offline_token"
) -> str:
    r = refresh_request(client, service, user, secret, scope, how)
    assert_status(r, 200, why=f"login asking for a refresh token ({how}):")
    refresh = r.json().get("refresh_token")
    assert isinstance(refresh, str), f"{how}: the answer must carry a refresh_token" + describe(r)
    return refresh


def refresh_grant(client: httpx.Client, service: str, refresh: str, scope: str) -> httpx.Response:
    return client.post(
        "/v2/auth",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": service,
            "scope": scope,
            "client_id": "dockyard-tests",
        },
    )
