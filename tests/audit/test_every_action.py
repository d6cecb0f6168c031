"""Every action of the audit list, through every entry point that performs it today, leaves an entry
naming the right performer, client address and user agent, on SQLite and on PostgreSQL.

One table: each row performs one action over HTTP — the registry (`/v2`) or the REST API
(`/api/v1`) — as one kind of caller (user password, app token, robot token, registry bearer
token, anonymous), through the trusted proxy (127.0.0.1) with an `X-Forwarded-For` address and a
`User-Agent` of its own, and says which entries must follow. An entry is found by its kind and its
client address (no other row uses that address), then every field is compared.

Actions of the command line and of garbage collection have no client: their rows say the
performer (the OS user of the command, kind `system`; `gc` and `prune-policy` for Dockyard's own
work) and the metadata, here the rule that caused a deletion; the address is none by design.

`tests/audit/test_actions.py` holds the rest and is not repeated here: the administrative
commands with their old and new values, logins at the token endpoint, refused changes, purges.
`COVERAGE` below maps each action of the list to where it is proved.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.domain.audit import AuditEntry

from .support import (
    OCI_MANIFEST,
    OS_USER,
    PROXY,
    AuditServer,
    digest_of,
    image,
    postgres_database,
    pull,
    push,
    put_manifest,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: 127.0.0.1 is the trusted proxy; no background jobs; garbage collection keeps nothing unreferenced
#: and abandons idle uploads at once (the test runs it).
SETTINGS = {
    "server": {"trusted_proxies": [f"{PROXY}/32"]},
    "jobs": {"run_in_server": False},
    "gc": {"grace_seconds": 0, "upload_grace_seconds": 0},
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    base = tmp_path_factory.mktemp(f"every-{request.param}")
    database = postgres_database() if request.param == "postgres" else contextlib.nullcontext(None)
    with database as url:
        srv = AuditServer.create(request.param, base, SETTINGS, url)
        try:
            yield srv
        finally:
            srv.stop()


# -- the callers -----------------------------------------------------------------------------------


@dataclass
class World:
    """The accounts the rows act as, created once per server."""

    server: AuditServer
    user: str
    password: str
    app_token: str
    org: str
    robot: str
    robot_token: str
    counter: int = 0

    @classmethod
    def create(cls, server: AuditServer) -> World:
        tag = secrets.token_hex(3)
        user, org, password = f"alice{tag}", f"acme{tag}", secrets.token_urlsafe(12)
        server.cli("user", "create", user, "--password-stdin", stdin=password)
        app_token = server.cli("token", "create", user, "--title", "every-action").stdout.strip()
        server.cli("org", "create", org, "--owner", "admin")
        robot, robot_token = server.cli("robot", "create", org, "ci").stdout.split()
        return cls(server, user, password, app_token, org, robot, robot_token)

    def repository(self, namespace: str, prefix: str) -> str:
        self.counter += 1
        return f"{namespace}/{prefix}{self.counter}"

    def robot_repository(self, prefix: str, role: str = "admin") -> str:
        """A new repository of the organization that the robot holds `role` on."""
        name = self.repository(self.org, prefix)
        self.server.cli("repo", "create", name)
        self.server.cli("perm", "grant", name, self.robot, role)
        return name

    def admin(self) -> httpx.Client:
        """Set-up requests: the proxy's own address, never a row's."""
        return self.server.client()


@dataclass(frozen=True)
class Caller:
    """Who a row acts as: its credentials and the performer the log must name."""

    name: str
    performer: Callable[[World], str | None]
    performer_kind: str
    auth: Callable[[World], dict[str, str]]


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def _registry_bearer(world: World, repository: str) -> dict[str, str]:
    response = httpx.get(
        f"{world.server.url}/v2/auth",
        params={"scope": f"repository:{repository}:pull,push,delete"},
        auth=(world.user, world.password),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


USER = Caller("user", lambda w: w.user, "user", lambda w: _basic(w.user, w.password))
APP = Caller("app-token", lambda w: w.user, "app-token", lambda w: {"Authorization": f"Bearer {w.app_token}"})
APP_BASIC = Caller("app-token", lambda w: w.user, "app-token", lambda w: _basic("$app", w.app_token))
ROBOT = Caller("robot", lambda w: w.robot, "robot", lambda w: {"Authorization": f"Bearer {w.robot_token}"})
ROBOT_BASIC = Caller("robot", lambda w: w.robot, "robot", lambda w: _basic(w.robot, w.robot_token))
ANONYMOUS = Caller("anonymous", lambda w: None, "anonymous", lambda w: {})
#: A registry bearer token of the user (the row fetches it: it is scoped to the row's repository).
BEARER = Caller("registry-token", lambda w: w.user, "user", lambda w: {})
#: A wrong password: the performer is the name as given, its kind read from its form.
WRONG = Caller("wrong-password", lambda w: w.user, "user", lambda w: _basic(w.user, "not-the-password"))


# -- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """An entry the row's request must have left (metadata: at least these keys and values)."""

    kind: str
    namespace: str | None
    repository: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    name: str
    kinds: tuple[str, ...]
    """The kinds of the entries the row proves."""
    caller: Caller
    perform: Callable[[World, httpx.Client], list[Expected]]
    """Does the action with the client (the row's address, agent and credentials)."""
    ip: str | None = None
    """The client address to send (default: one of 198.51.100.0/24 no other row uses)."""


def _namespace(repository: str) -> str:
    return repository.split("/", 1)[0]


def _at(kind: str, repository: str, **metadata: Any) -> Expected:
    return Expected(kind, _namespace(repository), repository, metadata)


def _ok(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response


def _pushed(world: World, repository: str, *tags: str) -> list[str]:
    """Push a distinct image under each tag (as admin); return their digests."""
    with world.admin() as admin:
        return [push(admin, repository, tag, seed=f"{tag}-{secrets.token_hex(4)}") for tag in tags]


def _ms(when: str) -> int:
    return round(dt.datetime.fromisoformat(when).timestamp() * 1000)


# Registry (/v2) ----------------------------------------------------------------------------------


def push_new_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("push")
    manifest = image(client, repository, "robot")
    _ok(put_manifest(client, repository, "v1", manifest), 201)
    digest = digest_of(manifest)
    return [
        _at("push", repository, tag="v1", digest=digest, media_type=OCI_MANIFEST),
        _at("tag.create", repository, tag="v1", digest=digest, previous=None),
    ]


def push_moves_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "move")
    (first,) = _pushed(world, repository, "v1")
    manifest = image(client, repository, "moved")
    _ok(put_manifest(client, repository, "v1", manifest), 201)
    digest = digest_of(manifest)
    return [_at("tag.move", repository, tag="v1", digest=digest, previous=first)]


def push_creates_repository(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "created")
    push(client, repository, "v1")
    return [_at("repository.create", repository, via="push", visibility="private")]


def delete_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "untag")
    (digest,) = _pushed(world, repository, "v1")
    client.headers.update(_registry_bearer(world, repository))  # BEARER
    _ok(client.delete(f"/v2/{repository}/manifests/v1"), 202)
    return [_at("tag.delete", repository, tag="v1", digest=digest)]


def delete_manifest(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("unmanifest")
    (digest,) = _pushed(world, repository, "v1")
    _ok(client.delete(f"/v2/{repository}/manifests/{digest}"), 202)
    return [_at("manifest.delete", repository, digest=digest, tags=["v1"])]


def delete_blob(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "unblob")
    data = b"a layer to unlink " + secrets.token_bytes(8)
    with world.admin() as admin:
        digest = digest_of(data)
        _ok(admin.post(f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data), 201)
    _ok(client.delete(f"/v2/{repository}/blobs/{digest}"), 202)
    return [_at("blob.delete", repository, digest=digest)]


def pull_by_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "public")
    (digest,) = _pushed(world, repository, "v1")
    world.server.cli("repo", "visibility", repository, "public")
    _ok(pull(client, repository, "v1"), 200)
    return [_at("pull", repository, digest=digest, tag="v1")]


def pull_by_digest(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "pulled")
    (digest,) = _pushed(world, repository, "v1")
    _ok(pull(client, repository, digest), 200)
    return [_at("pull", repository, digest=digest, tag=None)]


def failed_basic_login(world: World, client: httpx.Client) -> list[Expected]:
    _ok(client.get(f"/v2/{world.user}/anything/tags/list"), 401)
    return [Expected("login.failure", None, None, {"endpoint": "basic", "username": world.user})]


# REST API (/api/v1) -------------------------------------------------------------------------------


def api_create_repository(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apinew")
    body = {"name": repository, "visibility": "public", "description": "made by the API"}
    _ok(client.post("/api/v1/repositories", json=body), 201)
    return [_at("repository.create", repository, visibility="public")]


def api_change_visibility(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apivis")
    world.server.cli("repo", "create", repository)
    _ok(client.patch(f"/api/v1/repositories/{repository}", json={"visibility": "public"}), 200)
    return [_at("repository.visibility", repository, old="private", new="public")]


def api_change_description(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("apidesc")
    _ok(client.patch(f"/api/v1/repositories/{repository}", json={"description": "first"}), 200)
    _ok(client.patch(f"/api/v1/repositories/{repository}", json={"description": None}), 200)
    return [
        _at("repository.description", repository, old=None, new="first"),
        _at("repository.description", repository, old="first", new=None),
    ]


def api_delete_repository(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apidel")
    _pushed(world, repository, "v1")
    _ok(client.delete(f"/api/v1/repositories/{repository}"), 204)
    return [_at("repository.delete", repository)]


def api_pin_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("apipin")
    (digest,) = _pushed(world, repository, "v1")
    path = f"/api/v1/repositories/{repository}/-/tags/v1"
    _ok(client.patch(path, json={"immutable": True}), 200)
    _ok(client.patch(path, json={"immutable": False}), 200)
    return [
        _at("tag.immutable", repository, tag="v1", digest=digest, old=False, new=True),
        _at("tag.immutable", repository, tag="v1", digest=digest, old=True, new=False),
    ]


def api_restore_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apirestore")
    first, second = _pushed(world, repository, "v1", "v1")
    _ok(client.post(f"/api/v1/repositories/{repository}/-/tags/v1/restore", json={"digest": first}), 200)
    return [_at("tag.restore", repository, tag="v1", digest=first, previous=second)]


def api_create_and_move_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("apitag", role="write")
    first, second = _pushed(world, repository, "a", "b")
    tags = f"/api/v1/repositories/{repository}/-/tags"
    _ok(client.put(f"{tags}/v1", json={"digest": first}), 201)
    _ok(client.put(f"{tags}/v1", json={"digest": second}), 200)
    return [
        _at("tag.create", repository, tag="v1", digest=first, previous=None),
        _at("tag.move", repository, tag="v1", digest=second, previous=first),
    ]


def api_delete_tag(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apiuntag")
    (digest,) = _pushed(world, repository, "v1")
    _ok(client.delete(f"/api/v1/repositories/{repository}/-/tags/v1"), 204)
    return [_at("tag.delete", repository, tag="v1", digest=digest)]


def api_expire_tag_in(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.robot_repository("apiexpin", role="write")
    (digest,) = _pushed(world, repository, "v1")
    tag = _ok(client.put(f"/api/v1/repositories/{repository}/-/tags/v1/expiry", json={"expires_in": "30d"}), 200)
    return [_at("tag.expiry", repository, tag="v1", digest=digest, old=None, new=_ms(tag.json()["expires_at"]))]


def api_expire_tag_at(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apiexpat")
    (digest,) = _pushed(world, repository, "v1")
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)
    body = {"expires_at": when.isoformat()}
    _ok(client.put(f"/api/v1/repositories/{repository}/-/tags/v1/expiry", json=body), 200)
    return [_at("tag.expiry", repository, tag="v1", digest=digest, old=None, new=round(when.timestamp() * 1000))]


def api_clear_tag_expiry(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apiexpclear")
    (digest,) = _pushed(world, repository, "v1")
    world.server.cli("tag", "expire", repository, "v1", "--in", "10d")
    _ok(client.delete(f"/api/v1/repositories/{repository}/-/tags/v1/expiry"), 200)
    return [_at("tag.expiry", repository, tag="v1", digest=digest, new=None)]


def api_immutability_rules(world: World, client: httpx.Client) -> list[Expected]:
    repository = world.repository(world.user, "apirules")
    world.server.cli("repo", "create", repository)
    base = f"/api/v1/repositories/{repository}/-/immutability-rules"
    _ok(client.post(base, json={"pattern": "rel-*"}), 201)
    _ok(client.delete(f"{base}/rel-*"), 204)
    return [
        _at("immutability_rule.add", repository, pattern="rel-*"),
        _at("immutability_rule.remove", repository, pattern="rel-*"),
    ]


def api_failed_login(world: World, client: httpx.Client) -> list[Expected]:
    _ok(client.get("/api/v1/user"), 401)
    return [Expected("login.failure", None, None, {"endpoint": "basic", "username": world.user})]


ROWS = [
    # the registry
    Row("registry push", ("push", "tag.create"), ROBOT_BASIC, push_new_tag),
    Row("registry tag.move", ("tag.move",), APP_BASIC, push_moves_tag),
    Row("registry first push", ("repository.create",), USER, push_creates_repository),
    Row("registry tag.delete", ("tag.delete",), BEARER, delete_tag),
    Row("registry manifest.delete", ("manifest.delete",), ROBOT_BASIC, delete_manifest),
    Row("registry blob.delete", ("blob.delete",), APP_BASIC, delete_blob),
    Row("registry pull by tag", ("pull",), ANONYMOUS, pull_by_tag, ip="2001:db8::7"),
    Row("registry pull by digest", ("pull",), APP_BASIC, pull_by_digest),
    Row("registry login.failure", ("login.failure",), WRONG, failed_basic_login),
    # the REST API
    Row("api repository.create", ("repository.create",), APP, api_create_repository),
    Row("api repository.visibility", ("repository.visibility",), USER, api_change_visibility),
    Row("api repository.description", ("repository.description",), ROBOT, api_change_description),
    Row("api repository.delete", ("repository.delete",), APP, api_delete_repository),
    Row("api tag.immutable", ("tag.immutable",), ROBOT, api_pin_tag),
    Row("api tag.create and tag.move", ("tag.create", "tag.move"), ROBOT, api_create_and_move_tag),
    Row("api tag.delete", ("tag.delete",), APP, api_delete_tag),
    Row("api tag.restore", ("tag.restore",), APP, api_restore_tag),
    Row("api tag.expiry in", ("tag.expiry",), ROBOT, api_expire_tag_in),
    Row("api tag.expiry at", ("tag.expiry",), USER, api_expire_tag_at),
    Row("api tag.expiry clear", ("tag.expiry",), APP, api_clear_tag_expiry),
    Row("api immutability rules", ("immutability_rule.add", "immutability_rule.remove"), USER, api_immutability_rules),
    Row("api login.failure", ("login.failure",), WRONG, api_failed_login),
]


@pytest.fixture(scope="module")
def world(server: AuditServer) -> World:
    return World.create(server)


def _found(server: AuditServer, expected: Expected, ip: str, count: int) -> list[AuditEntry]:
    wanted = {"kind": expected.kind, "namespace": expected.namespace, "repository": expected.repository}
    if expected.kind == "pull":
        server.wait_for(count, **wanted)  # written in the background
    return [e for e in server.entries(**wanted) if e.kind == expected.kind and e.ip == ip]


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[row.name for row in ROWS])
def test_each_action_names_its_performer_address_and_agent(
    server: AuditServer, world: World, index: int, row: Row
) -> None:
    ip, agent = row.ip or f"198.51.100.{index + 1}", f"every-action/{index} ({row.caller.name})"
    # The left-most address was written by the client itself: never believed.
    headers = {"X-Forwarded-For": f"192.0.2.250, {ip}", "User-Agent": agent, **row.caller.auth(world)}
    transport = httpx.HTTPTransport(local_address=PROXY)
    with httpx.Client(base_url=server.url, headers=headers, transport=transport, timeout=60) as client:
        expected = row.perform(world, client)
    assert {want.kind for want in expected} == set(row.kinds)
    for position, want in enumerate(expected):
        # Entries of one kind and repository, oldest first, pair with the expected ones in order.
        alike = [(e.kind, e.repository) == (want.kind, want.repository) for e in expected]
        entries = _found(server, want, ip, sum(alike))
        assert len(entries) == sum(alike), f"{row.name}: expected {want}, found {entries}"
        entry = entries[sum(alike[:position])]
        assert (entry.kind, entry.namespace, entry.repository) == (want.kind, want.namespace, want.repository)
        assert (entry.performer, entry.performer_kind) == (row.caller.performer(world), row.caller.performer_kind)
        assert (entry.ip, entry.user_agent) == (ip, agent), entry
        assert {key: entry.metadata.get(key) for key in want.metadata} == want.metadata, entry
        if row.caller is not WRONG and row.caller is not ANONYMOUS:
            assert entry.performer_id is not None, entry
        if row.caller.performer_kind == "app-token":
            assert isinstance(entry.metadata["app_token_id"], int), entry


# -- the command line and garbage collection: no client, so no address ------------------------------


def _cli(entry: AuditEntry) -> None:
    assert (entry.performer, entry.performer_kind, entry.ip, entry.user_agent) == (
        OS_USER,
        "system",
        None,
        "dockyard-cli",
    ), entry


def _dockyard(entry: AuditEntry, performer: str) -> None:
    assert (entry.performer, entry.performer_kind, entry.ip, entry.user_agent) == (
        performer,
        "system",
        None,
        None,
    ), entry


def test_garbage_collection_records_each_deletion_with_its_rule(server: AuditServer, world: World) -> None:
    """`gc run` removes tag history past the time-machine window, the manifests nothing reaches any
    more, the blobs nothing references and idle uploads, each recorded in the deletion's transaction
    with the rule that caused it."""
    org = f"gc{secrets.token_hex(3)}"
    server.cli("org", "create", org, "--owner", "admin")
    server.cli("org", "time-machine", org, "0")  # a tag's history goes as soon as it ends
    repository = f"{org}/app"
    with world.admin() as admin:
        old = image(admin, repository, f"old {secrets.token_hex(4)}")
        _ok(put_manifest(admin, repository, "v1", old), 201)
        push(admin, repository, "v1", seed=f"new {secrets.token_hex(4)}")
        upload = _ok(admin.post(f"/v2/{repository}/blobs/uploads/"), 202).headers["Docker-Upload-UUID"]
    old_blobs = [layer["digest"] for layer in json.loads(old)["layers"]]
    server.cli("gc", "run")

    history = server.one(repository=repository, kind="gc.tags")
    _dockyard(history, "gc")
    assert history.metadata == {"rule": "time-machine", "window_seconds": 0, "tags": ["v1"], "rows": 1}
    manifests = server.one(repository=repository, kind="gc.manifests")
    _dockyard(manifests, "gc")
    assert (manifests.metadata["rule"], manifests.metadata["digests"]) == ("unreachable", [digest_of(old)])
    assert isinstance(manifests.metadata["cutoff"], int)
    blobs = [e for e in server.entries(kind="gc.blobs") if set(old_blobs) <= set(e.metadata["digests"])]
    assert len(blobs) == 1, server.entries(kind="gc.blobs")
    _dockyard(blobs[0], "gc")
    assert blobs[0].metadata["rule"] == "unreferenced"
    assert blobs[0].metadata["bytes"] > 0
    idle = server.one(repository=repository, kind="gc.upload")
    _dockyard(idle, "gc")
    assert (idle.metadata["rule"], idle.metadata["upload"]) == ("idle", upload)
    summary = server.entries(kind="gc.pass")[-1]
    _dockyard(summary, "gc")
    assert summary.metadata["manifests"] >= 1
    assert summary.metadata["uploads"] >= 1


def test_a_prune_policy_expiry_names_the_policy_and_its_reason(server: AuditServer, world: World) -> None:
    repository = world.repository(world.user, "pruned")
    _pushed(world, repository, "old")
    _pushed(world, repository, "new")
    added = server.cli("prune", "policy", "add", world.user, "--repo", repository, "--keep", "1").stdout
    policy = int(added.split()[3])
    try:
        server.cli("prune", "run")
    finally:
        server.cli("prune", "policy", "remove", str(policy))
    expired = server.one(repository=repository, kind="tag.expire")
    _dockyard(expired, "prune-policy")
    assert expired.namespace == world.user
    assert (expired.metadata["tag"], expired.metadata["policy"]) == ("old", policy)
    assert expired.metadata["reason"]
    added_entry = [e for e in server.entries(kind="prune_policy.add") if e.metadata["policy"] == policy]
    assert len(added_entry) == 1
    _cli(added_entry[0])


# -- the list itself -------------------------------------------------------------------------------

_ADMIN = "test_actions.test_every_administrative_command_is_recorded_with_old_and_new_values"
_TAGS = "test_actions.test_tag_commands_and_immutability_rules"
_DELETION = "test_actions.test_repository_and_organization_deletion_then_purge_by_gc"
_LOGINS = "test_actions.test_logins_at_the_token_endpoint_and_failed_basic_auth"
_GC = "test_garbage_collection_records_each_deletion_with_its_rule"
# The REST API's administrative endpoints, tested with performer and client address by their suites.
_API_ORGS = "tests/api/test_identity.py::test_every_change_is_audited_with_its_performer_and_client_address"
_API_ROBOTS = "tests/api/test_identity.py::test_a_users_own_robots_are_audited_in_their_namespace"
_API_TOKENS = "tests/api/test_user_resources.py::test_app_tokens_are_created_used_listed_and_revoked"
_API_PASSWORD = "tests/api/test_user_resources.py::test_password_change_ends_the_old_password_and_its_cli_password"
_API_SESSIONS = "tests/api/test_sessions.py::test_login_sets_a_hardened_cookie_and_answers_the_user_and_csrf_token"
_API_SESSION_FAILURES = "tests/api/test_sessions.py::test_failed_session_logins_are_audited_and_rate_limited"
_OAUTH = "tests/api/test_oauth.py::test_authorization_code_flow_with_pkce_end_to_end"

#: Each action of the audit list, by kind, and where it is proved with its performer (and client
#: address, where there is a client). OAuth grants and the REST API's administrative endpoints are
#: proved by the suites of those endpoints.
COVERAGE: dict[str, str] = {
    "push": "ROWS",
    "pull": "ROWS",
    "tag.create": "ROWS",
    "tag.move": "ROWS",
    "tag.delete": "ROWS",
    "tag.restore": "ROWS; CLI: " + _TAGS,
    "tag.expiry": "ROWS; CLI: " + _TAGS,
    "tag.expire": "test_a_prune_policy_expiry_names_the_policy_and_its_reason",
    "tag.immutable": "ROWS; CLI: " + _TAGS,
    "tag.purge": _TAGS,
    "immutability_rule.add": "ROWS",
    "immutability_rule.remove": "ROWS",
    "manifest.delete": "ROWS",
    "blob.delete": "ROWS",
    "repository.create": "ROWS; CLI: " + _ADMIN,
    "repository.visibility": "ROWS; CLI: " + _ADMIN,
    "repository.description": "ROWS",
    "repository.delete": "ROWS; CLI: " + _DELETION,
    "namespace.delete": _DELETION,
    "permission.grant": _ADMIN + "; API: " + _API_ORGS,
    "permission.revoke": _ADMIN + "; API: " + _API_ORGS,
    "default_permission.add": _ADMIN + "; API: " + _API_ORGS,
    "organization.create": _ADMIN + "; API: " + _API_ORGS,
    "team.create": _ADMIN + "; API: " + _API_ORGS,
    "team.member.add": _ADMIN + "; API: " + _API_ORGS,
    "robot.create": _ADMIN + "; API: " + _API_ROBOTS,
    "robot.regenerate": _ADMIN + "; API: " + _API_ROBOTS,
    "robot.delete": _ADMIN + "; API: " + _API_ROBOTS,
    "app_token.create": _ADMIN + "; API: " + _API_TOKENS,
    "app_token.revoke": _ADMIN + "; API: " + _API_TOKENS,
    "user.create": _ADMIN,
    "user.password": _ADMIN + "; API: " + _API_PASSWORD,
    "login": _LOGINS + "; browser sessions: " + _API_SESSIONS,
    "login.failure": "ROWS; token endpoint: " + _LOGINS + "; browser sessions: " + _API_SESSION_FAILURES,
    "quota.set": _ADMIN + "; API: " + _API_ORGS,
    "quota.clear": _ADMIN + "; API: " + _API_ORGS,
    "prune_policy.add": "test_a_prune_policy_expiry_names_the_policy_and_its_reason",
    "prune_policy.remove": _ADMIN,
    "namespace.time_machine": _ADMIN,
    "gc.tags": _GC,
    "gc.manifests": _GC,
    "gc.blobs": _GC,
    "gc.upload": _GC,
    "gc.pass": _GC,
    "repository.purge": _DELETION,
    "namespace.purge": _DELETION,
    "oauth.grant": _OAUTH,
    "oauth.token": _OAUTH,
}


def test_the_table_covers_every_action_it_claims() -> None:
    """Every kind COVERAGE says the rows prove has a row, every row's kinds are in COVERAGE, and every
    test it names exists: the map cannot go stale unnoticed."""
    from . import test_actions  # noqa: PLC0415 - the sibling module the map points into

    row_kinds = {kind for row in ROWS for kind in row.kinds}
    claimed = {kind for kind, where in COVERAGE.items() if where.startswith("ROWS")}
    assert claimed == row_kinds
    for where in COVERAGE.values():
        for reference in where.replace(";", " ").split():
            module, _, test = reference.partition(".")
            if reference.startswith("tests/"):
                path, _, test = reference.partition("::")
                assert f"def {test}(" in (ROOT / path).read_text(), reference
            elif module == "test_actions":
                assert hasattr(test_actions, test), reference
            elif reference.startswith("test_"):
                assert reference in globals(), reference
