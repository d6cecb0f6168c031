"""A live Dockyard for the API tests (embedded default: SQLite and local disk), the seeded
world they share (accounts, tokens, repositories and an image), and the OAuth2 helpers of the
flow tests: an application of acme registered by alice, PKCE pairs, authorization requests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PROBLEM = "application/problem+json"
PASSWORD = "correct-horse-battery"
REDIRECT = "https://client.example/callback"
APPS = "/api/v1/organizations/acme/applications"


@dataclass
class Server:
    url: str
    data_dir: Path
    admin_password: str

    def run_cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKYARD, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            input=stdin,
        )

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = self.run_cli(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def client(self, auth: httpx.Auth | tuple[str, str] | None = None, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, auth=auth, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(auth=("admin", self.admin_password))


@contextlib.contextmanager
def running_server(data_dir: Path, environ: dict[str, str] | None = None) -> Iterator[Server]:
    """A live server on a free port; `environ` adds settings (`DOCKYARD_AUTH__…`) to its environment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(environ or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v1/registry", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"dockyard did not start:\n{(data_dir / 'server.log').read_text()}")
            time.sleep(0.1)
        password = (data_dir / "initial-admin-password").read_text().strip()
        yield Server(url, data_dir, password)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    digest = digest_of(data)
    response = client.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def push_image(
    client: httpx.Client,
    repository: str,
    reference: str,
    *,
    labels: dict[str, str] | None = None,
    seed: str = "",
    subject: tuple[str, int] | None = None,
) -> tuple[str, bytes]:
    """Push a one-layer image (or, with `subject`, an artifact referring to it); return its digest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z", "config": {"Labels": labels or {}}}
    ).encode()
    layer = f"layer {seed} {reference}".encode()
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(client, repository, config), "size": len(config)},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(client, repository, layer),
                "size": len(layer),
            }
        ],
        "annotations": {"org.opencontainers.image.title": f"image {seed}"},
    }
    if subject is not None:
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject[0], "size": subject[1]}
        document["artifactType"] = "application/vnd.example.signature"
    manifest = json.dumps(document).encode()
    response = client.put(
        f"/v2/{repository}/manifests/{reference}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return digest_of(manifest), manifest


@dataclass
class World:
    """Who is who on the shared server (see `seed`)."""

    server: Server
    tokens: dict[str, str] = field(default_factory=dict)
    image: str = ""
    image_size: int = 0
    signature: str = ""

    def as_(self, who: str) -> httpx.Client:
        server = self.server
        if who == "anonymous":
            return server.client()
        if who == "admin":
            return server.admin()
        if who in ("alice", "bob"):
            return server.client(auth=(who, PASSWORD))
        return server.client(token=self.tokens[who])


def seed(server: Server) -> World:
    """Users alice and bob; org acme (owner alice) with robot acme+ci (no permission) and robot
    acme+reader (read on acme/private); tokens of alice scoped repo:read / user:read / everything,
    and of admin without super:user; repositories acme/private (image v1 and a signature) and
    acme/public."""
    world = World(server)
    for user in ("alice", "bob"):
        server.cli("user", "create", user, "--password-stdin", stdin=PASSWORD + "\n")
    server.cli("org", "create", "acme", "--owner", "alice")
    world.tokens["robot"] = server.cli("robot", "create", "acme", "ci").split()[-1]
    world.tokens["robot_reader"] = server.cli("robot", "create", "acme", "reader").split()[-1]
    for name, user, scopes in (
        ("alice_read", "alice", ["repo:read"]),
        ("alice_user", "alice", ["user:read"]),
        ("alice_write", "alice", ["repo:write"]),
        ("alice_all", "alice", []),
        ("admin_no_su", "admin", ["repo:admin", "repo:create", "user:read"]),
    ):
        options = [arg for scope in scopes for arg in ("--scope", scope)]
        world.tokens[name] = server.cli("token", "create", user, "--title", name, *options).strip()
    with server.client(auth=("alice", PASSWORD)) as alice:
        for name, visibility in (("acme/private", "private"), ("acme/public", "public")):
            response = alice.post("/api/v1/repositories", json={"name": name, "visibility": visibility})
            assert response.status_code == 201, response.text
    with server.admin() as admin:
        world.image, manifest = push_image(admin, "acme/private", "v1", labels={"team": "web"}, seed="base")
        world.image_size = len(manifest)
        world.signature, _ = push_image(
            admin, "acme/private", world.image.replace(":", "-"), seed="sig", subject=(world.image, len(manifest))
        )
        push_image(admin, "acme/public", "latest", seed="pub")
    server.cli("perm", "grant", "acme/private", "acme+reader", "read")
    # A member of acme who administers nothing: user carol in team acme/viewers (role member),
    # acting through a token with every scope ("member").
    server.cli("user", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    server.cli("team", "create", "acme", "viewers")
    server.cli("team", "add", "acme", "viewers", "carol")
    world.tokens["member"] = server.cli("token", "create", "carol", "--title", "member").strip()
    return world


# -- OAuth2 ------------------------------------------------------------------------------------


@dataclass
class App:
    client_id: str
    secret: str

    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.client_id, self.secret)


def register(server: Server, name: str, scopes: list[str] | None = None, uris: list[str] | None = None) -> App:
    """An OAuth2 application of organization acme, registered by its owner alice."""
    body: dict[str, Any] = {"name": name, "redirect_uris": uris or [REDIRECT], "description": "a <b>test</b> app"}
    if scopes is not None:
        body["scopes"] = scopes
    with server.client(auth=("alice", PASSWORD)) as alice:
        response = alice.post(APPS, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["client_secret"].startswith("dys_")
    return App(created["client_id"], created["client_secret"])


def pkce() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize_params(app: App, challenge: str, **extra: str) -> dict[str, str]:
    """The query of an authorization request (code with PKCE); `extra` adds or replaces parameters."""
    return {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "scope": "repo:read",
        "state": "xyz-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def oauth_error(response: httpx.Response, error: str, status: int = 400) -> None:
    """Assert an RFC 6749 §5.2 error answer."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error
