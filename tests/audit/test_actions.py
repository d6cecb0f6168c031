"""Every action there is lands in the audit log with its performer, performer kind, client address
and details, in the transaction of the change: a refused change leaves no entry.

HTTP requests come through the trusted proxy (127.0.0.1) naming the client in X-Forwarded-For, or
directly from 127.0.0.2 (untrusted: its X-Forwarded-For is ignored). CLI commands are performed by
the operating-system user, kind `system`, from no address.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import httpx
import pytest

from dockyard.domain.audit import AuditEntry

from .support import DIRECT, OS_USER, AuditServer, digest_of, image, pull, push, put_manifest, upload

pytestmark = pytest.mark.integration


def _ip() -> str:
    """A fresh client address per test (the failed-login limit counts per address)."""
    return f"203.0.113.{secrets.randbelow(250) + 1}"


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def _by(entry: AuditEntry, performer: str | None, kind: str, ip: str | None) -> None:
    assert (entry.performer, entry.performer_kind, entry.ip) == (performer, kind, ip), entry


def _cli(entry: AuditEntry) -> None:
    _by(entry, OS_USER, "system", None)
    assert entry.user_agent == "dockyard-cli"


def _kinds(entries: list[AuditEntry]) -> list[str]:
    return [entry.kind for entry in entries]


# -- the registry over HTTP ------------------------------------------------------------------------


def test_pushes_tags_deletes_and_pulls_name_the_user_and_the_forwarded_client(server: AuditServer) -> None:
    repo = _name("admin/web")
    ip = _ip()
    # The right-most address that is not a trusted proxy is the client's; what lies left of it
    # (written by the client itself) is not believed.
    headers = {"X-Forwarded-For": f"198.51.100.66, {ip}", "User-Agent": "audit-test/1"}
    with server.client(**headers) as client:
        first = push(client, repo, "v1", seed="a")
        second = push(client, repo, "v1", seed="b")
        assert pull(client, repo, "v1").status_code == 200
        assert pull(client, repo, first).status_code == 200
        assert pull(client, repo, "v1", "HEAD").status_code == 200  # a HEAD is not a pull
        assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202
        assert client.delete(f"/v2/{repo}/manifests/{first}").status_code == 202
        blob = upload(client, repo, b"a blob to unlink " + secrets.token_bytes(8))
        assert client.delete(f"/v2/{repo}/blobs/{blob}").status_code == 202

    entries = [e for e in server.entries(repository=repo) if e.kind != "pull"]
    assert _kinds(entries) == [
        "repository.create",
        "push",
        "tag.create",
        "push",
        "tag.move",
        "tag.delete",
        "manifest.delete",
        "blob.delete",
    ]
    for entry in entries:
        _by(entry, "admin", "user", ip)
        assert entry.user_agent == "audit-test/1"
        assert entry.namespace == "admin"
        assert entry.performer_id is not None
    created, push1, tag_create, push2, tag_move, tag_delete, manifest_delete, blob_delete = entries
    assert created.metadata == {"via": "push", "visibility": "private"}
    assert push1.metadata == {"tag": "v1", "digest": first, "media_type": "application/vnd.oci.image.manifest.v1+json"}
    assert tag_create.metadata == {"tag": "v1", "digest": first, "previous": None}
    assert push2.metadata["digest"] == second
    assert tag_move.metadata == {"tag": "v1", "digest": second, "previous": first}
    assert tag_delete.metadata == {"tag": "v1", "digest": second}
    assert manifest_delete.metadata == {"digest": first, "tags": []}
    assert blob_delete.metadata == {"digest": blob}

    pulls = server.wait_for(2, repository=repo, kind="pull")
    assert [(p.metadata["tag"], p.metadata["digest"]) for p in pulls] == [("v1", second), (None, first)]
    for entry in pulls:
        _by(entry, "admin", "user", ip)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(server: AuditServer) -> None:
    repo = _name("admin/direct")
    with server.client(source=DIRECT, **{"X-Forwarded-For": "203.0.113.99"}) as client:
        push(client, repo, "v1")
    for entry in server.entries(repository=repo):
        _by(entry, "admin", "user", DIRECT)


def test_robots_app_tokens_bearer_tokens_and_anonymous_callers(server: AuditServer) -> None:
    org = _name("org")
    repo = f"{org}/app"
    ip = _ip()
    server.cli("org", "create", org, "--owner", "admin")
    robot, robot_token = server.cli("robot", "create", org, "ci").stdout.split()
    server.cli("repo", "create", repo, "--public")
    server.cli("perm", "grant", repo, robot, "write")
    app_token = server.cli("token", "create", "admin", "--title", "laptop").stdout.strip()

    with server.client(auth=(robot, robot_token), **{"X-Forwarded-For": ip}) as client:
        by_robot = push(client, repo, "robot")
    with server.client(auth=("$app", app_token), **{"X-Forwarded-For": ip}) as client:
        by_app = push(client, repo, "app")
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": ip}) as anonymous:
        assert pull(anonymous, repo, "robot").status_code == 200
        assert pull(anonymous, repo, "app").status_code == 200
        token = anonymous.get(
            "/v2/auth", params={"scope": f"repository:{repo}:pull"}, auth=("admin", server.password)
        ).json()["token"]
    bearer = {"X-Forwarded-For": ip, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=bearer) as bearer_client:
        assert pull(bearer_client, repo, "app").status_code == 200

    pushes = {e.metadata["tag"]: e for e in server.entries(repository=repo, kind="push")}
    _by(pushes["robot"], robot, "robot", ip)
    assert pushes["robot"].metadata["digest"] == by_robot
    assert pushes["robot"].namespace == org
    _by(pushes["app"], "admin", "app-token", ip)
    assert pushes["app"].metadata["digest"] == by_app
    assert isinstance(pushes["app"].metadata["app_token_id"], int)

    pulls = server.wait_for(3, repository=repo, kind="pull")
    assert [(p.performer, p.performer_kind, p.ip) for p in pulls] == [
        (None, "anonymous", ip),
        (None, "anonymous", ip),
        ("admin", "user", ip),  # the bearer token's subject
    ]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_logins_at_the_token_endpoint_and_failed_basic_auth(server: AuditServer) -> None:
    user = _name("login")
    ip = _ip()
    password = secrets.token_urlsafe(12)
    server.cli("user", "create", user, "--password-stdin", stdin=password)
    robot, robot_token = server.cli("robot", "create", user, "bot").stdout.split()
    app_token = server.cli("token", "create", user, "--title", "ci").stdout.strip()
    forwarded: dict[str, Any] = {"X-Forwarded-For": ip, "User-Agent": "docker/27"}
    with httpx.Client(base_url=server.url, headers=forwarded) as client:
        assert client.get("/v2/auth", auth=(user, password)).status_code == 200
        form = {"grant_type": "password", "username": user, "password": password}
        assert client.post("/v2/auth", data=form).status_code == 200
        assert client.get("/v2/auth", auth=(robot, robot_token)).status_code == 200
        assert client.get("/v2/auth", auth=("$app", app_token)).status_code == 200
        assert client.get("/v2/auth", auth=(user, "wrong-password")).status_code == 401
        # Basic on registry requests: a failure is recorded, a success is not (one per request).
        assert client.get(f"/v2/{user}/x/tags/list", headers={"Authorization": _basic(user, "nope")}).status_code == 401
        assert client.get("/v2/", headers={"Authorization": _basic(user, password)}).status_code == 200

    logins = [e for e in server.entries(kind="login") if e.performer in (user, robot)]
    assert [(e.kind, e.performer, e.performer_kind, e.metadata.get("method")) for e in logins] == [
        ("login", user, "user", "password"),
        ("login", user, "user", "password"),
        ("login", robot, "robot", "robot_token"),
        ("login", user, "app-token", "app_token"),
        ("login.failure", user, "user", None),
        ("login.failure", user, "user", None),
    ]
    for entry in logins:
        assert (entry.ip, entry.user_agent) == (ip, "docker/27")
    assert [e.metadata["endpoint"] for e in logins] == ["token", "token", "token", "token", "token", "basic"]
    assert logins[-1].metadata["username"] == user
    assert isinstance(logins[3].metadata["app_token_id"], int)


# -- administration through the CLI ----------------------------------------------------------------


def test_every_administrative_command_is_recorded_with_old_and_new_values(server: AuditServer) -> None:
    org = _name("acme")
    user = _name("u")
    repo = f"{org}/web"
    password = secrets.token_urlsafe(12)
    run = server.cli

    run("user", "create", user, "--password-stdin", stdin=password)
    run("user", "passwd", user, "--password-stdin", stdin=password + "x")
    run("user", "disable", user)
    run("user", "enable", user)
    run("org", "create", org, "--owner", "admin")
    run("team", "create", org, "builders", "--role", "creator")
    run("team", "add", org, "builders", user)
    robot = run("robot", "create", org, "ci").stdout.split()[0]
    run("robot", "regenerate", robot)
    run("org", "default-perm", org, f"{org}/builders", "write")
    run("repo", "create", repo)
    run("repo", "visibility", repo, "public")
    run("perm", "grant", repo, user, "read")
    run("perm", "grant", repo, user, "admin")
    run("perm", "revoke", repo, user)
    token_id = None
    run("token", "create", user, "--title", "laptop", "--expires", "30d")
    for line in run("token", "list", user).stdout.splitlines():
        token_id = line.split("\t")[0]
    assert token_id is not None
    run("token", "revoke", user, token_id)
    run("robot", "delete", robot)
    run("quota", "set", org, "--limit", "10GiB", "--warn", "70")
    run("quota", "clear", org)
    policy = run("prune", "policy", "add", org, "--keep", "5").stdout.split()[3]
    run("prune", "policy", "remove", policy)
    run("org", "time-machine", org, "7d")
    run("auth", "rotate-key")

    entries = server.entries(namespace=org) + server.entries(namespace=user)
    for entry in entries:
        _cli(entry)
    found = {e.kind: e for e in entries}
    assert found["user.create"].metadata == {"user": user, "superuser": False}
    assert found["user.password"].metadata == {"user": user}
    assert found["user.disable"].metadata == {"account": user}
    assert found["user.enable"].metadata == {"account": user}
    assert found["organization.create"].metadata == {"owner": "admin"}
    assert found["team.create"].metadata == {"team": "builders", "role": "creator"}
    assert found["team.member.add"].metadata == {"team": "builders", "member": user}
    assert found["robot.create"].metadata == {"robot": robot}
    assert found["robot.regenerate"].metadata == {"robot": robot}
    assert found["robot.delete"].metadata == {"robot": robot}
    assert found["default_permission.add"].metadata == {
        "subject": f"{org}/builders",
        "role": "write",
        "creator": None,
    }
    # The organization's default permission, applied at creation, is itemized.
    assert found["repository.create"].metadata == {"visibility": "private", "grants": {f"{org}/builders": "write"}}
    assert found["repository.create"].repository == repo
    assert found["repository.visibility"].metadata == {"old": "private", "new": "public"}
    grants = [e.metadata for e in entries if e.kind == "permission.grant"]
    assert grants == [
        {"subject": user, "old": None, "new": "read"},
        {"subject": user, "old": "read", "new": "admin"},
    ]
    assert found["permission.revoke"].metadata == {"subject": user, "old": "admin"}
    created = found["app_token.create"].metadata
    assert (created["user"], created["title"], str(created["token_id"])) == (user, "laptop", token_id)
    assert created["expires_at"] is not None
    assert found["app_token.revoke"].metadata == {"user": user, "token_id": int(token_id)}
    quota = found["quota.set"].metadata
    assert quota["old"]["quota_bytes"] is None
    assert quota["new"] == {"quota_bytes": 10 * 1024**3, "quota_warn_percent": 70, "quota_reject_percent": 100}
    assert found["quota.clear"].metadata["old"]["quota_bytes"] == 10 * 1024**3
    assert found["prune_policy.add"].metadata == {"policy": int(policy), "rule": "keep 5 most recent tags"}
    assert found["prune_policy.remove"].metadata == {"policy": int(policy), "rule": "keep 5 most recent tags"}
    assert found["namespace.time_machine"].metadata == {"old_seconds": None, "new_seconds": 7 * 86400}
    rotation = server.entries(kind="signing_key.rotate")[-1]
    _cli(rotation)
    assert rotation.metadata["kid"]


def test_tag_commands_and_immutability_rules(server: AuditServer) -> None:
    repo = _name("admin/tags")
    with server.client() as client:
        first = push(client, repo, "v1", seed="one")
        second = push(client, repo, "v1", seed="two")
    run = server.cli
    run("tag", "restore", repo, "v1", first)
    run("tag", "expire", repo, "v1", "--in", "30d")
    run("tag", "expire", repo, "v1", "--clear")
    run("tag", "immutable", repo, "v1", "on")
    run("tag", "immutable", repo, "v1", "off")
    run("repo", "immutable-rule", "add", repo, "rel-*")
    run("repo", "immutable-rule", "remove", repo, "rel-*")
    run("tag", "purge", repo, "v1")

    entries = [e for e in server.entries(repository=repo) if e.performer_kind == "system"]
    assert _kinds(entries) == [
        "tag.restore",
        "tag.expiry",
        "tag.expiry",
        "tag.immutable",
        "tag.immutable",
        "immutability_rule.add",
        "immutability_rule.remove",
        "tag.purge",
    ]
    for entry in entries:
        _cli(entry)
    restore, expire, clear, pin, unpin, rule_add, rule_remove, purge = entries
    assert restore.metadata == {"tag": "v1", "digest": first, "previous": second}
    assert (expire.metadata["old"], expire.metadata["digest"]) == (None, first)
    assert expire.metadata["new"] is not None
    assert (clear.metadata["old"], clear.metadata["new"]) == (expire.metadata["new"], None)
    assert (pin.metadata["old"], pin.metadata["new"], unpin.metadata["old"], unpin.metadata["new"]) == (
        False,
        True,
        True,
        False,
    )
    assert rule_add.metadata == rule_remove.metadata == {"pattern": "rel-*"}
    assert purge.metadata == {"tag": "v1", "digest": first, "history_rows": 3}


def test_a_refused_change_leaves_no_entry(server: AuditServer) -> None:
    repo = _name("admin/locked")
    with server.client() as client:
        push(client, repo, "rel-1", seed="kept")
        server.cli("repo", "immutable-rule", "add", repo, "rel-*")
        before = server.entries(repository=repo)
        moved = put_manifest(client, repo, "rel-1", image(client, repo, "other"))
        assert moved.status_code == 403, moved.text
        assert client.delete(f"/v2/{repo}/manifests/rel-1").status_code == 403
        digest = server.one(repository=repo, kind="tag.create").metadata["digest"]
        assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 403
    refused = server.cli("perm", "grant", repo, "nobody-at-all", "read", ok=False)
    assert refused.returncode != 0
    assert server.entries(repository=repo) == before


def test_repository_and_organization_deletion_then_purge_by_gc(server: AuditServer) -> None:
    org = _name("gone")
    server.cli("org", "create", org, "--owner", "admin")
    with server.client() as client:
        unreferenced = push(client, "admin/collected", _name("t"))
        assert client.delete(f"/v2/admin/collected/manifests/{unreferenced}").status_code == 202
        push(client, f"{org}/a", "v1")
        push(client, f"{org}/b", "v1")
        expiring = _name("admin/prune")
        push(client, expiring, "old", seed="old")
        push(client, expiring, "new", seed="new")
    server.cli("repo", "delete", f"{org}/a")
    server.cli("org", "delete", org, "--yes")
    policy = server.cli("prune", "policy", "add", "admin", "--repo", expiring, "--keep", "1").stdout.split()[3]
    try:
        server.cli("prune", "run")
    finally:
        server.cli("prune", "policy", "remove", policy)
    server.cli("gc", "run")

    deleted = server.one(repository=f"{org}/a", kind="repository.delete")
    _cli(deleted)
    gone = server.one(namespace=org, kind="namespace.delete")
    _cli(gone)
    assert gone.metadata == {"repositories": [f"{org}/b"]}
    purged = sorted(e.repository or "" for e in server.entries(namespace=org, kind="repository.purge"))
    assert purged == [f"{org}/a", f"{org}/b"]
    purges = server.entries(namespace=org, kind="repository.purge")
    purges.append(server.one(namespace=org, kind="namespace.purge"))
    for entry in purges:
        _by(entry, "gc", "system", None)
    expired = server.one(repository=expiring, kind="tag.expire")
    _by(expired, "prune-policy", "system", None)
    assert expired.metadata["tag"] == "old"
    passes = server.entries(kind="gc.pass")
    assert passes
    _by(passes[-1], "gc", "system", None)
    # What the passes removed: at least the blobs of the manifest deleted by digest (the purge
    # jobs, not necessarily a pass, remove the deleted repositories' manifests).
    assert sum(entry.metadata["blobs"] for entry in passes) >= 1, [e.metadata for e in passes]


def test_pushes_of_one_manifest_to_many_tags_are_each_recorded(server: AuditServer) -> None:
    repo = _name("admin/many")
    with server.client() as client:
        manifest = image(client, repo, "same")
        for tag in ("a", "b", "a"):
            assert put_manifest(client, repo, tag, manifest).status_code == 201
    entries = [e for e in server.entries(repository=repo) if e.kind != "repository.create"]
    # Re-pushing the same manifest to a tag already there is a push that changes no tag.
    assert [(e.kind, e.metadata.get("tag")) for e in entries] == [
        ("push", "a"),
        ("tag.create", "a"),
        ("push", "b"),
        ("tag.create", "b"),
        ("push", "a"),
    ]
    assert {e.metadata["digest"] for e in entries} == {digest_of(manifest)}
