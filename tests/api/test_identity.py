"""Organizations, members, teams, robots, default permissions, quotas and repository permissions
through the API, end to end: each takes effect on the registry, bad input is refused without
changing anything, and every change is in the audit log with its performer and client address."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .support import OCI_MANIFEST, PASSWORD, Server, World, push_image, running_server

pytestmark = pytest.mark.integration

API = "/api/v1"
ORGS = f"{API}/organizations"
#: What the proxied server records for a client that names itself through the trusted proxy.
FORWARDED = "203.0.113.7"


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _pull(server: Server, repository: str, auth: tuple[str, str]) -> int:
    with server.client(auth=auth) as client:
        return client.get(f"/v2/{repository}/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code


def _new_org(world: World, name: str) -> None:
    with world.as_("alice") as alice:
        _created(alice.post(ORGS, json={"name": name}))


# -- organizations ------------------------------------------------------------------------------


def test_organization_lifecycle(world: World) -> None:
    org = "idorg-life"
    with world.as_("alice") as alice:
        created = alice.post(ORGS, json={"name": org, "email": "ops@example.com"})
        assert _created(created)["email"] == "ops@example.com"
        assert created.headers["location"] == f"{ORGS}/{org}"
        _problem(alice.post(ORGS, json={"name": org}), 409, "CONFLICT")
        _problem(alice.post(ORGS, json={"name": "bob"}), 409, "CONFLICT")  # a user's namespace
        _problem(alice.post(ORGS, json={"name": "Not A Name"}), 422, "VALIDATION_FAILED")
        _problem(alice.post(ORGS, json={"name": "idorg-x", "email": "nope"}), 422, "VALIDATION_FAILED")
        _problem(alice.post(ORGS, json={"name": "idorg-x", "owner": "bob"}), 422, "VALIDATION_FAILED")
        listed = [item["name"] for item in _ok(alice.get(ORGS))["items"]]
        assert {"acme", org} <= set(listed)
        assert listed == sorted(listed)
        page = _ok(alice.get(ORGS, params={"limit": 1}))
        assert len(page["items"]) == 1
        assert page["next_cursor"]
        following = _ok(alice.get(ORGS, params={"limit": 1, "cursor": page["next_cursor"]}))
        assert following["items"][0]["name"] > page["items"][0]["name"]
        assert _ok(alice.get(f"{ORGS}/{org}"))["email"] == "ops@example.com"
        assert _ok(alice.patch(f"{ORGS}/{org}", json={"email": "team@example.com"}))["email"] == "team@example.com"
        _problem(alice.patch(f"{ORGS}/{org}", json={"email": "not an address"}), 422, "VALIDATION_FAILED")
        _problem(alice.patch(f"{ORGS}/{org}", json={}), 422, "VALIDATION_FAILED")
        assert _ok(alice.get(f"{ORGS}/{org}"))["email"] == "team@example.com"
        assert _ok(alice.patch(f"{ORGS}/{org}", json={"email": None}))["email"] is None
    with world.as_("bob") as bob:
        assert org not in [item["name"] for item in _ok(bob.get(ORGS))["items"]]
        _problem(bob.get(f"{ORGS}/{org}"), 403, "DENIED")
        _problem(bob.delete(f"{ORGS}/{org}"), 403, "DENIED")
    with world.as_("alice") as alice:
        # A user's own namespace is not an organization: nothing is deleted.
        _problem(alice.delete(f"{ORGS}/alice"), 404, "NOT_FOUND")
        _problem(alice.get(f"{ORGS}/alice"), 404, "NOT_FOUND")
        assert _ok(alice.get(f"{API}/user"))["name"] == "alice"
        assert alice.delete(f"{ORGS}/{org}").status_code == 204
    with world.as_("admin") as admin:
        _problem(admin.get(f"{ORGS}/{org}"), 404, "NOT_FOUND")
        assert org not in [item["name"] for item in _ok(admin.get(ORGS, params={"limit": 500}))["items"]]
    with world.as_("alice") as alice:
        # The name is free again at once.
        assert _created(alice.post(ORGS, json={"name": org}))["email"] is None
        assert alice.delete(f"{ORGS}/{org}").status_code == 204


def test_superusers_list_every_organization_and_others_only_their_own(world: World) -> None:
    _new_org(world, "idorg-seen")
    with world.as_("admin") as admin:
        everything = [item["name"] for item in _ok(admin.get(ORGS, params={"limit": 500}))["items"]]
    assert {"acme", "idorg-seen"} <= set(everything)
    with world.as_("member") as carol:
        assert [item["name"] for item in _ok(carol.get(ORGS))["items"]] == ["acme"]
        # A member reads the organization but administers nothing.
        assert _ok(carol.get(f"{ORGS}/acme"))["name"] == "acme"
        _problem(carol.patch(f"{ORGS}/acme", json={"email": "x@example.com"}), 403, "DENIED")
    with world.as_("robot") as robot:
        assert _ok(robot.get(ORGS))["items"] == []


# -- teams and members --------------------------------------------------------------------------


def test_teams_roles_and_members(world: World) -> None:
    org = "idorg-teams"
    _new_org(world, org)
    teams = f"{ORGS}/{org}/teams"
    with world.as_("alice") as alice:
        created = alice.post(teams, json={"name": "builders", "description": "CI"})
        team = _created(created)
        assert (team["name"], team["role"], team["description"], team["members"]) == ("builders", "member", "CI", 0)
        assert created.headers["location"] == f"{teams}/builders"
        _problem(alice.post(teams, json={"name": "builders"}), 409, "CONFLICT")
        _problem(alice.post(teams, json={"name": "x", "role": "owner"}), 422, "VALIDATION_FAILED")
        _problem(alice.post(teams, json={"name": "Bad Name"}), 422, "VALIDATION_FAILED")
        _problem(alice.post(teams, json={"name": "x", "description": "d" * 1025}), 422, "VALIDATION_FAILED")
        assert _ok(alice.put(f"{teams}/builders/members/bob")) == {"name": "bob", "kind": "user"}
        assert _ok(alice.put(f"{teams}/builders/members/bob")) == {"name": "bob", "kind": "user"}
        _problem(alice.put(f"{teams}/builders/members/nobody-here"), 404, "NOT_FOUND")
        _problem(alice.put(f"{teams}/nope/members/bob"), 404, "NOT_FOUND")
        # Robots of another namespace cannot join.
        _problem(alice.put(f"{teams}/builders/members/acme+ci"), 400, "INVALID_REQUEST")
        assert _ok(alice.get(f"{teams}/builders"))["members"] == 1
    with world.as_("bob") as bob:
        # Membership lets bob read the organization and its teams, not change them.
        assert _ok(bob.get(f"{ORGS}/{org}"))["name"] == org
        listed = _ok(bob.get(teams))["items"]
        assert [(t["name"], t["role"], t["members"]) for t in listed] == [
            ("builders", "member", 1),
            ("owners", "admin", 1),
        ]
        _problem(bob.post(teams, json={"name": "mine"}), 403, "DENIED")
        _problem(bob.post(f"{API}/repositories", json={"name": f"{org}/by-bob"}), 403, "DENIED")
    with world.as_("alice") as alice:
        updated = _ok(alice.patch(f"{teams}/builders", json={"role": "creator"}))
        assert (updated["role"], updated["description"]) == ("creator", "CI")
    with world.as_("bob") as bob:
        _created(bob.post(f"{API}/repositories", json={"name": f"{org}/by-bob"}))
    with world.as_("alice") as alice:
        cleared = _ok(alice.patch(f"{teams}/builders", json={"description": None}))
        assert (cleared["role"], cleared["description"]) == ("creator", None)
        _problem(alice.patch(f"{teams}/builders", json={"role": "boss"}), 422, "VALIDATION_FAILED")
        members = _ok(alice.get(f"{ORGS}/{org}/members"))["items"]
        assert members == [
            {"name": "alice", "kind": "user", "teams": ["owners"]},
            {"name": "bob", "kind": "user", "teams": ["builders"]},
        ]
        first = _ok(alice.get(f"{ORGS}/{org}/members", params={"limit": 1}))
        assert [m["name"] for m in first["items"]] == ["alice"]
        second = _ok(alice.get(f"{ORGS}/{org}/members", params={"limit": 1, "cursor": first["next_cursor"]}))
        assert ([m["name"] for m in second["items"]], second["next"]) == (["bob"], None)
        _problem(
            alice.get(f"{ORGS}/{org}/members", params={"cursor": first["next_cursor"].upper()}),
            400,
            "PAGINATION_INVALID",
        )
        assert _ok(alice.get(f"{teams}/builders/members"))["items"] == [{"name": "bob", "kind": "user"}]
        # The owners team stays, keeps the admin role and at least one user.
        _problem(alice.delete(f"{teams}/owners"), 409, "CONFLICT")
        _problem(alice.patch(f"{teams}/owners", json={"role": "member"}), 409, "CONFLICT")
        _problem(alice.delete(f"{teams}/owners/members/alice"), 409, "CONFLICT")
        _problem(alice.delete(f"{ORGS}/{org}/members/alice"), 409, "CONFLICT")
        assert _ok(alice.get(f"{teams}/owners"))["members"] == 1
        # Removing a member takes them out of every team.
        assert alice.put(f"{teams}/owners/members/bob").status_code == 200
        assert alice.delete(f"{ORGS}/{org}/members/bob").status_code == 204
        _problem(alice.delete(f"{ORGS}/{org}/members/bob"), 404, "NOT_FOUND")
        assert [m["name"] for m in _ok(alice.get(f"{ORGS}/{org}/members"))["items"]] == ["alice"]
    with world.as_("bob") as bob:
        _problem(bob.get(f"{ORGS}/{org}"), 403, "DENIED")
    with world.as_("alice") as alice:
        assert alice.put(f"{teams}/builders/members/bob").status_code == 200
        assert alice.delete(f"{teams}/builders/members/bob").status_code == 204
        _problem(alice.delete(f"{teams}/builders/members/bob"), 404, "NOT_FOUND")
        assert alice.delete(f"{teams}/builders").status_code == 204
        _problem(alice.get(f"{teams}/builders"), 404, "NOT_FOUND")
        assert [t["name"] for t in _ok(alice.get(teams))["items"]] == ["owners"]


# -- robots -------------------------------------------------------------------------------------


def test_organization_robots_and_their_tokens_on_the_registry(world: World) -> None:
    org = "idorg-robots"
    repo = f"{org}/app"
    _new_org(world, org)
    robots = f"{ORGS}/{org}/robots"
    server = world.server
    with world.as_("alice") as alice:
        _created(alice.post(f"{API}/repositories", json={"name": repo}))
        push_image(alice, repo, "v1", seed="robots")
        created = alice.post(robots, json={"name": "deployer"})
        robot = _created(created)
        name, token = robot["name"], robot["token"]
        assert (name, robot["short_name"], robot["namespace"]) == (f"{org}+deployer", "deployer", org)
        assert token.startswith("dyr_")
        assert created.headers["location"] == f"{robots}/deployer"
        _problem(alice.post(robots, json={"name": "deployer"}), 409, "CONFLICT")
        _problem(alice.post(robots, json={"name": "Deployer"}), 422, "VALIDATION_FAILED")
        # The token is shown once: never in listings or reads.
        listed = _ok(alice.get(robots))["items"]
        assert [r["name"] for r in listed] == [name]
        assert "token" not in listed[0]
        assert "token" not in _ok(alice.get(f"{robots}/deployer"))
        _problem(alice.get(f"{robots}/nobody"), 404, "NOT_FOUND")
    assert _pull(server, repo, (name, token)) == 403
    with world.as_("alice") as alice:
        assert (
            _ok(alice.put(f"{API}/repositories/{repo}/-/permissions/{name}", json={"role": "read"}))["role"] == "read"
        )
    assert _pull(server, repo, (name, token)) == 200
    with world.as_("alice") as alice:
        regenerated = _ok(alice.post(f"{robots}/deployer/regenerate"))
    fresh = regenerated["token"]
    assert (regenerated["name"], fresh != token) == (name, True)
    assert _pull(server, repo, (name, token)) == 401
    assert _pull(server, repo, (name, fresh)) == 200
    with server.client(token=fresh) as client:
        assert client.get(f"{API}/repositories/{repo}").status_code == 200
    with world.as_("alice") as alice:
        assert alice.delete(f"{robots}/deployer").status_code == 204
        _problem(alice.delete(f"{robots}/deployer"), 404, "NOT_FOUND")
        _problem(alice.post(f"{robots}/deployer/regenerate"), 404, "NOT_FOUND")
    assert _pull(server, repo, (name, fresh)) == 401
    with server.client(token=fresh) as client:
        _problem(client.get(f"{API}/repositories/{repo}"), 401, "UNAUTHORIZED")


def test_a_users_own_robots(world: World) -> None:
    with world.as_("bob") as bob:
        robot = _created(bob.post(f"{API}/user/robots", json={"name": "helper"}))
        assert (robot["name"], robot["namespace"]) == ("bob+helper", "bob")
        assert "bob+helper" in [r["name"] for r in _ok(bob.get(f"{API}/user/robots"))["items"]]
        assert _ok(bob.get(f"{API}/user/robots/helper"))["short_name"] == "helper"
        token = _ok(bob.post(f"{API}/user/robots/helper/regenerate"))["token"]
        _created(bob.post(f"{API}/repositories", json={"name": "bob/robot-target"}))
        assert (
            bob.put(f"{API}/repositories/bob/robot-target/-/permissions/bob+helper", json={"role": "write"}).status_code
            == 200
        )
        # A user's namespace is not an organization.
        _problem(bob.get(f"{ORGS}/bob/robots"), 404, "NOT_FOUND")
    with world.server.client(auth=("bob+helper", token)) as helper:
        push_image(helper, "bob/robot-target", "v1", seed="helper")
    with world.as_("alice") as alice:
        assert "bob+helper" not in [r["name"] for r in _ok(alice.get(f"{API}/user/robots"))["items"]]
        _problem(alice.get(f"{API}/user/robots/helper"), 404, "NOT_FOUND")
    with world.as_("bob") as bob:
        assert bob.delete(f"{API}/user/robots/helper").status_code == 204
        _problem(bob.get(f"{API}/user/robots/helper"), 404, "NOT_FOUND")
        assert bob.delete(f"{API}/repositories/bob/robot-target").status_code == 204
    assert _pull(world.server, "bob/robot-target", ("bob+helper", token)) == 401


# -- permissions --------------------------------------------------------------------------------


def test_default_permissions_apply_to_new_repositories(world: World) -> None:
    org = "idorg-defaults"
    _new_org(world, org)
    rules = f"{ORGS}/{org}/default-permissions"
    with world.as_("alice") as alice:
        _created(alice.post(f"{ORGS}/{org}/teams", json={"name": "readers"}))
        to_bob = _created(alice.post(rules, json={"subject": "bob", "role": "write"}))
        assert {k: v for k, v in to_bob.items() if k != "id"} == {
            "subject": "bob",
            "subject_kind": "user",
            "role": "write",
            "creator": None,
        }
        to_team = _created(alice.post(rules, json={"subject": f"{org}/readers", "role": "read", "creator": "alice"}))
        assert (to_team["subject_kind"], to_team["creator"]) == ("team", "alice")
        _problem(alice.post(rules, json={"subject": "acme/owners", "role": "read"}), 400, "INVALID_REQUEST")
        _problem(alice.post(rules, json={"subject": "acme+ci", "role": "read"}), 400, "INVALID_REQUEST")
        _problem(alice.post(rules, json={"subject": "nobody-here", "role": "read"}), 404, "NOT_FOUND")
        _problem(alice.post(rules, json={"subject": "bob", "role": "owner"}), 422, "VALIDATION_FAILED")
        _problem(
            alice.post(rules, json={"subject": "bob", "role": "read", "creator": f"{org}/readers"}),
            422,
            "VALIDATION_FAILED",
        )
        assert [r["id"] for r in _ok(alice.get(rules))["items"]] == [to_bob["id"], to_team["id"]]
        _created(alice.post(f"{API}/repositories", json={"name": f"{org}/fresh"}))
        granted = _ok(alice.get(f"{API}/repositories/{org}/fresh/-/permissions"))["items"]
        assert [(g["subject"], g["subject_kind"], g["role"]) for g in granted] == [
            ("alice", "user", "admin"),
            ("bob", "user", "write"),
            (f"{org}/readers", "team", "read"),
        ]
    with world.as_("bob") as bob:
        push_image(bob, f"{org}/fresh", "v1", seed="defaults")
    with world.as_("alice") as alice:
        assert alice.delete(f"{rules}/{to_bob['id']}").status_code == 204
        _problem(alice.delete(f"{rules}/{to_bob['id']}"), 404, "NOT_FOUND")
        assert [r["id"] for r in _ok(alice.get(rules))["items"]] == [to_team["id"]]
        _created(alice.post(f"{API}/repositories", json={"name": f"{org}/later"}))
        later = _ok(alice.get(f"{API}/repositories/{org}/later/-/permissions"))["items"]
        assert "bob" not in [g["subject"] for g in later]
        # Repositories created before keep their grants.
        assert "bob" in [g["subject"] for g in _ok(alice.get(f"{API}/repositories/{org}/fresh/-/permissions"))["items"]]


def test_repository_permissions_take_effect_on_pulls_and_pushes(world: World) -> None:
    org = "idorg-perms"
    repo = f"{org}/app"
    _new_org(world, org)
    perms = f"{API}/repositories/{repo}/-/permissions"
    server = world.server
    with world.as_("alice") as alice:
        _created(alice.post(f"{API}/repositories", json={"name": repo}))
        push_image(alice, repo, "v1", seed="perms")
    assert _pull(server, repo, ("bob", PASSWORD)) == 403
    with world.as_("alice") as alice:
        granted = _ok(alice.put(f"{perms}/bob", json={"role": "read"}))
        assert granted == {"subject": "bob", "subject_kind": "user", "role": "read"}
    assert _pull(server, repo, ("bob", PASSWORD)) == 200
    with world.as_("bob") as bob:
        refused = bob.put(f"/v2/{repo}/manifests/v2", content=b"{}", headers={"Content-Type": OCI_MANIFEST})
        assert refused.status_code == 403
        _problem(bob.get(perms), 403, "DENIED")
    with world.as_("alice") as alice:
        assert _ok(alice.put(f"{perms}/bob", json={"role": "write"}))["role"] == "write"
    with world.as_("bob") as bob:
        push_image(bob, repo, "v2", seed="bob")
    with world.as_("alice") as alice:
        _created(alice.post(f"{ORGS}/{org}/teams", json={"name": "devs"}))
        # A team's slash stays as it is in the path.
        team = _ok(alice.put(f"{perms}/{org}/devs", json={"role": "read"}))
        assert team == {"subject": f"{org}/devs", "subject_kind": "team", "role": "read"}
        listed = _ok(alice.get(perms))["items"]
        assert [(g["subject"], g["role"]) for g in listed] == [
            ("alice", "admin"),
            ("bob", "write"),
            (f"{org}/devs", "read"),
        ]
        first = _ok(alice.get(perms, params={"limit": 2}))
        rest = _ok(alice.get(perms, params={"limit": 2, "cursor": first["next_cursor"]}))
        assert [g["subject"] for g in first["items"] + rest["items"]] == ["alice", "bob", f"{org}/devs"]
        _problem(alice.put(f"{perms}/acme+ci", json={"role": "read"}), 400, "INVALID_REQUEST")
        _problem(alice.put(f"{perms}/acme/owners", json={"role": "read"}), 400, "INVALID_REQUEST")
        _problem(alice.put(f"{perms}/nobody-here", json={"role": "read"}), 404, "NOT_FOUND")
        _problem(alice.put(f"{perms}/bob", json={"role": "owner"}), 422, "VALIDATION_FAILED")
        _problem(alice.put(f"{perms}/bob", json={"role": "read", "until": "never"}), 422, "VALIDATION_FAILED")
        _problem(alice.put(f"{perms}/Bob", json={"role": "read"}), 422, "VALIDATION_FAILED")
        assert _ok(alice.get(perms))["items"] == listed
        assert alice.delete(f"{perms}/bob").status_code == 204
        _problem(alice.delete(f"{perms}/bob"), 404, "NOT_FOUND")
        assert alice.delete(f"{perms}/{org}/devs").status_code == 204
        assert [g["subject"] for g in _ok(alice.get(perms))["items"]] == ["alice"]
    assert _pull(server, repo, ("bob", PASSWORD)) == 403
    with world.as_("admin") as admin:
        _problem(admin.get(f"{API}/repositories/{org}/missing/-/permissions"), 404, "NOT_FOUND")


# -- quota --------------------------------------------------------------------------------------


def test_quota_is_read_by_admins_and_set_by_superusers(world: World) -> None:
    org = "idorg-quota"
    _new_org(world, org)
    quota = f"{ORGS}/{org}/quota"
    with world.as_("alice") as alice:
        shown = _ok(alice.get(quota))
        assert (shown["namespace"], shown["limit"], shown["state"]) == (org, None, "ok")
        _problem(alice.put(quota, json={"limit": "1TiB"}), 403, "DENIED")
        _problem(alice.delete(quota), 403, "DENIED")
    with world.as_("admin") as admin:
        report = _ok(admin.put(quota, json={"limit": "10GiB", "warn_percent": 70}))
        assert (report["limit"], report["warn_percent"], report["reject_percent"]) == (10 * 1024**3, 70, 100)
        assert report["warn_bytes"] == 7 * 1024**3
        _problem(admin.put(quota, json={"limit": "ten"}), 400, "INVALID_REQUEST")
        _problem(
            admin.put(quota, json={"limit": "1GiB", "warn_percent": 90, "reject_percent": 80}), 400, "INVALID_REQUEST"
        )
        _problem(admin.put(quota, json={"limit": 5}), 422, "VALIDATION_FAILED")
        _problem(admin.put(quota, json={"limit": "1GiB", "warn_percent": 0}), 422, "VALIDATION_FAILED")
        _problem(admin.put(f"{ORGS}/alice/quota", json={"limit": "1GiB"}), 404, "NOT_FOUND")
        _problem(admin.put(f"{ORGS}/idorg-none/quota", json={"limit": "1GiB"}), 404, "NOT_FOUND")
    with world.as_("alice") as alice:
        # Refused changes changed nothing.
        assert (_ok(alice.get(quota))["limit"], _ok(alice.get(quota))["warn_percent"]) == (10 * 1024**3, 70)
    with world.as_("admin") as admin:
        assert admin.delete(quota).status_code == 204
        assert _ok(admin.get(quota))["limit"] is None


# -- the audit log ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that trusts 127.0.0.1 as its reverse proxy (clients bound to 127.0.0.2 are direct)."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DOCKYARD_SERVER__TRUSTED_PROXIES", '["127.0.0.1/32"]')
            server = stack.enter_context(running_server(tmp_path_factory.mktemp("identity-audit")))
        for user in ("owner", "dev"):
            server.cli("user", "create", user, "--password-stdin", stdin=PASSWORD + "\n")
        yield server


def _via(server: Server, user: str, *, direct: bool = False, token: str | None = None) -> httpx.Client:
    """A client of `user` naming FORWARDED through the trusted proxy, or connecting directly."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2" if direct else "127.0.0.1")
    headers = {"X-Forwarded-For": FORWARDED}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    auth = None if token is not None else (user, server.admin_password if user == "admin" else PASSWORD)
    return httpx.Client(base_url=server.url, auth=auth, headers=headers, transport=transport, timeout=30)


def _entries(server: Server, namespace: str) -> list[dict[str, Any]]:
    """The namespace's entries, oldest first, without those of background work (purges)."""
    out = server.cli("logs", "--namespace", namespace, "--json", "--limit", "1000")
    entries = [json.loads(line) for line in out.splitlines()][::-1]
    return [entry for entry in entries if entry["performer_kind"] != "system"]


def test_every_change_is_audited_with_its_performer_and_client_address(proxied: Server) -> None:
    server = proxied
    org = "audited"
    with _via(server, "owner") as owner:
        _created(owner.post(ORGS, json={"name": org, "email": "a@example.com"}))
        _ok(owner.patch(f"{ORGS}/{org}", json={"email": "b@example.com"}))
        _created(owner.post(f"{ORGS}/{org}/teams", json={"name": "devs", "description": "all of them"}))
        _ok(owner.patch(f"{ORGS}/{org}/teams/devs", json={"role": "creator"}))
        _ok(owner.put(f"{ORGS}/{org}/teams/devs/members/dev"))
        assert owner.delete(f"{ORGS}/{org}/teams/devs/members/dev").status_code == 204
        _ok(owner.put(f"{ORGS}/{org}/teams/devs/members/dev"))
        assert owner.delete(f"{ORGS}/{org}/members/dev").status_code == 204
        _created(owner.post(f"{ORGS}/{org}/robots", json={"name": "ci"}))
        _ok(owner.post(f"{ORGS}/{org}/robots/ci/regenerate"))
        _created(owner.post(f"{ORGS}/{org}/default-permissions", json={"subject": "dev", "role": "read"}))
        rule = _created(owner.post(f"{ORGS}/{org}/default-permissions", json={"subject": "dev", "role": "write"}))
        assert owner.delete(f"{ORGS}/{org}/default-permissions/{rule['id']}").status_code == 204
        _created(owner.post(f"{API}/repositories", json={"name": f"{org}/app"}))
        _ok(owner.put(f"{API}/repositories/{org}/app/-/permissions/{org}+ci", json={"role": "write"}))
        assert owner.delete(f"{API}/repositories/{org}/app/-/permissions/{org}+ci").status_code == 204
        assert owner.delete(f"{ORGS}/{org}/robots/ci").status_code == 204
        assert owner.delete(f"{ORGS}/{org}/teams/devs").status_code == 204
        # Refused and invalid changes leave nothing behind.
        _problem(owner.post(f"{ORGS}/{org}/teams", json={"name": "owners"}), 409, "CONFLICT")
        _problem(owner.delete(f"{ORGS}/{org}/teams/owners"), 409, "CONFLICT")
        _problem(owner.put(f"{ORGS}/{org}/quota", json={"limit": "1GiB"}), 403, "DENIED")
    with _via(server, "dev") as dev:
        _problem(dev.post(f"{ORGS}/{org}/teams", json={"name": "intruders"}), 403, "DENIED")
    with _via(server, "admin") as admin:
        _ok(admin.put(f"{ORGS}/{org}/quota", json={"limit": "1GiB"}))
        assert admin.delete(f"{ORGS}/{org}/quota").status_code == 204
    # A direct client's X-Forwarded-For is not believed: its own address is recorded.
    with _via(server, "owner", direct=True) as direct:
        _created(direct.post(f"{ORGS}/{org}/teams", json={"name": "ops"}))
    token = server.cli("token", "create", "owner", "--title", "audit", "--scope", "org:admin").strip()
    with _via(server, "owner", token=token) as scoped:
        _ok(scoped.patch(f"{ORGS}/{org}", json={"email": None}))
        assert scoped.delete(f"{ORGS}/{org}").status_code == 204

    entries = _entries(server, org)
    kinds = [entry["kind"] for entry in entries]
    assert kinds == [
        "organization.create",
        "organization.update",
        "team.create",
        "team.update",
        "team.member.add",
        "team.member.remove",
        "team.member.add",
        "organization.member.remove",
        "robot.create",
        "robot.regenerate",
        "default_permission.add",
        "default_permission.add",
        "default_permission.remove",
        "repository.create",
        "permission.grant",
        "permission.revoke",
        "robot.delete",
        "team.delete",
        "quota.set",
        "quota.clear",
        "team.create",
        "organization.update",
        "namespace.delete",
    ]
    who = [(e["performer"], e["performer_kind"], e["ip"]) for e in entries]
    assert who[:18] == [("owner", "user", FORWARDED)] * 18
    assert who[18:20] == [("admin", "user", FORWARDED)] * 2
    assert who[20] == ("owner", "user", "127.0.0.2")
    assert who[21:] == [("owner", "app-token", FORWARDED)] * 2
    metadata = [entry["metadata"] for entry in entries]
    assert metadata[0] == {"owner": "owner", "email": "a@example.com"}
    assert metadata[1] == {"old": {"email": "a@example.com"}, "new": {"email": "b@example.com"}}
    assert metadata[2] == {"team": "devs", "role": "member", "description": "all of them"}
    assert metadata[3] == {
        "team": "devs",
        "old": {"role": "member", "description": "all of them"},
        "new": {"role": "creator", "description": "all of them"},
    }
    assert metadata[5] == {"team": "devs", "member": "dev"}
    assert metadata[7] == {"member": "dev", "teams": ["devs"]}
    assert metadata[9] == {"robot": f"{org}+ci"}
    assert metadata[11] == {"subject": "dev", "role": "write", "creator": None, "old": "read"}
    assert metadata[12] == {"id": rule["id"], "subject": "dev", "role": "write", "creator": None}
    assert metadata[13]["grants"] == {"owner": "admin"}  # the creator's own grant
    assert metadata[14] == {"subject": f"{org}+ci", "old": None, "new": "write"}
    assert metadata[15] == {"subject": f"{org}+ci", "old": "write"}
    assert metadata[17] == {"team": "devs", "role": "creator", "members": []}
    # A change through an app token names the token.
    assert metadata[21] == {"old": {"email": "b@example.com"}, "new": {"email": None}, "app_token_id": 1}
    assert entries[21]["performer_id"] is not None


def test_a_users_own_robots_are_audited_in_their_namespace(proxied: Server) -> None:
    with _via(proxied, "dev") as dev:
        _created(dev.post(f"{API}/user/robots", json={"name": "bot"}))
        _ok(dev.post(f"{API}/user/robots/bot/regenerate"))
        assert dev.delete(f"{API}/user/robots/bot").status_code == 204
    entries = [e for e in _entries(proxied, "dev") if e["kind"].startswith("robot.")]
    assert [(e["kind"], e["performer"], e["ip"], e["metadata"]) for e in entries] == [
        (kind, "dev", FORWARDED, {"robot": "dev+bot"}) for kind in ("robot.create", "robot.regenerate", "robot.delete")
    ]
