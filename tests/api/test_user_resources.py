"""The calling user's resources (password, app tokens, CLI password, stars), user administration,
search and the audit log over the API, on a live server behind a trusted proxy: what each does,
bad input that changes nothing, and the audit entry of every change (performer, kind, and the
client address taken from X-Forwarded-For).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .support import PASSWORD, PROBLEM, Server, push_image, running_server

pytestmark = pytest.mark.integration

API = "/api/v1"
#: Seconds a browser session's password entry counts as fresh.
FRESH = 2
ENVIRON = {
    # The test client connects from 127.0.0.1: a proxy whose X-Forwarded-For is believed.
    "DOCKYARD_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32"]',
    # Wrong passwords are part of these tests: the limit must not lock the client's address out.
    "DOCKYARD_AUTH__MAX_FAILED_LOGINS": "1000",
    "DOCKYARD_AUTH__SESSIONS__FRESH_LOGIN_SECONDS": str(FRESH),
}


@dataclass
class Site:
    """alice (owner of organization acme), bob, carol (in team acme/viewers, role member);
    acme/private (an image v1) and acme/public."""

    server: Server

    def client(
        self, who: str | tuple[str, str] | None = None, *, token: str | None = None, ip: str | None = None
    ) -> httpx.Client:
        """A client as `who` (a user with the common password, "admin", or a name and secret),
        or with a bearer `token`; `ip` is sent as X-Forwarded-For."""
        headers = {"X-Forwarded-For": ip} if ip else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        auth: tuple[str, str] | None = None
        if who == "admin":
            auth = ("admin", self.server.admin_password)
        elif isinstance(who, str):
            auth = (who, PASSWORD)
        elif who is not None:
            auth = who
        return httpx.Client(base_url=self.server.url, auth=auth, headers=headers, timeout=30)

    def entries(self, **filters: str) -> list[dict[str, Any]]:
        """Audit entries matching `filters`, newest first, as the superuser reads them."""
        with self.client("admin") as admin:
            response = admin.get(f"{API}/logs", params={"limit": "500", **filters})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def entry(self, kind: str, **filters: str) -> dict[str, Any]:
        """The newest entry of exactly `kind`."""
        found = [item for item in self.entries(kind=kind, **filters) if item["kind"] == kind]
        assert found, f"no {kind} entry for {filters}"
        return found[0]

    def create_user(self, name: str, **fields: Any) -> None:
        with self.client("admin") as admin:
            response = admin.post(f"{API}/users", json={"name": name, "password": PASSWORD, **fields})
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_server(tmp_path_factory.mktemp("user-api"), ENVIRON) as server:
        site = Site(server)
        for name in ("alice", "bob", "carol"):
            site.create_user(name)
        server.cli("org", "create", "acme", "--owner", "alice")
        server.cli("team", "create", "acme", "viewers")
        server.cli("team", "add", "acme", "viewers", "carol")
        with site.client("alice") as alice:
            for name, visibility in (("acme/private", "private"), ("acme/public", "public")):
                created = alice.post(f"{API}/repositories", json={"name": name, "visibility": visibility})
                assert created.status_code == 201, created.text
            push_image(alice, "acme/private", "v1", seed="private")
        yield site


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def assert_audited(entry: dict[str, Any], performer: str, ip: str) -> None:
    assert (entry["performer"], entry["ip"]) == (performer, ip), entry


# -- the calling user --------------------------------------------------------------------------


def test_password_change_ends_the_old_password_and_its_cli_password(site: Site) -> None:
    site.create_user("dave")
    new = "a-much-better-passphrase"
    with site.client("dave") as dave:
        old_cli = dave.get(f"{API}/user/cli-password").json()["password"]
        wrong = dave.put(f"{API}/user/password", json={"current_password": "not-it", "new_password": new})
        assert_problem(wrong, 400, "INVALID_REQUEST")
        short = dave.put(f"{API}/user/password", json={"current_password": PASSWORD, "new_password": "short"})
        assert_problem(short, 422, "VALIDATION_FAILED")
        extra = dave.put(f"{API}/user/password", json={"current_password": PASSWORD, "new_password": new, "hint": "x"})
        assert_problem(extra, 422, "VALIDATION_FAILED")
        # Nothing changed: the password still works.
        assert dave.get(f"{API}/user").status_code == 200
    failure = site.entry("login.failure", performer="dave")
    assert failure["metadata"]["endpoint"] == "password_change"
    assert site.entries(kind="user.password", performer="dave") == []

    with site.client("dave", ip="203.0.113.10") as dave:
        changed = dave.put(f"{API}/user/password", json={"current_password": PASSWORD, "new_password": new})
        assert changed.status_code == 204, changed.text
    assert_audited(site.entry("user.password", performer="dave"), "dave", "203.0.113.10")

    for credentials in (("dave", PASSWORD), ("dave", old_cli)):
        with site.client(credentials) as old:
            assert_problem(old.get(f"{API}/user"), 401, "UNAUTHORIZED")
            assert old.get("/v2/").status_code == 401
    with site.client(("dave", new)) as fresh:
        assert fresh.get(f"{API}/user").json()["name"] == "dave"
        assert fresh.get("/v2/").status_code == 200


def test_the_cli_password_logs_in_on_the_registry_and_the_api(site: Site) -> None:
    with site.client("alice") as alice:
        response = alice.get(f"{API}/user/cli-password")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    secret = response.json()
    assert secret["username"] == "alice"
    assert secret["password"].startswith("dyc_")
    with site.client(("alice", secret["password"])) as cli:
        assert cli.get("/v2/").status_code == 200
        assert cli.get("/v2/acme/private/manifests/v1").status_code == 200
        assert cli.get(f"{API}/user").json()["authenticated_via"] == "cli_password"


def test_app_tokens_are_created_used_listed_and_revoked(site: Site) -> None:
    with site.client("alice", ip="203.0.113.20") as alice:
        created = alice.post(
            f"{API}/user/tokens", json={"title": "ci pull", "scopes": ["repo:read"], "expires_in": "1d"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        token = created.json()
        assert created.headers["location"] == f"{API}/user/tokens/{token['id']}"
        assert token["token"].startswith("dya_")
        assert token["scopes"] == ["repo:read"]
        expires = dt.datetime.fromisoformat(token["expires_at"])
        assert dt.timedelta(hours=23) < expires - dt.datetime.now(dt.UTC) < dt.timedelta(hours=25)
        one = alice.get(f"{API}/user/tokens/{token['id']}").json()
        assert one["title"] == "ci pull"
        assert "token" not in one
    entry = site.entry("app_token.create", performer="alice")
    assert_audited(entry, "alice", "203.0.113.20")
    assert (entry["metadata"]["token_id"], entry["metadata"]["scopes"]) == (token["id"], "repo:read")

    # The token works within its scopes, on the API and on the registry.
    with site.client(token=token["token"]) as bearer:
        names = [item["name"] for item in bearer.get(f"{API}/repositories").json()["items"]]
        assert "acme/private" in names
        assert_problem(bearer.get(f"{API}/user"), 403, "INSUFFICIENT_SCOPE")
        assert_problem(bearer.post(f"{API}/user/tokens", json={"title": "more"}), 403, "INSUFFICIENT_SCOPE")
    with site.client(("$app", token["token"])) as registry:
        assert registry.get("/v2/acme/private/manifests/v1").status_code == 200
        assert registry.post("/v2/acme/private/blobs/uploads/").status_code == 403

    # Paging: every token once, by id, never a secret.
    with site.client("alice") as alice:
        seen: list[int] = []
        url: str | None = f"{API}/user/tokens?limit=1"
        while url is not None:
            page = alice.get(url).json()
            assert all("token" not in item for item in page["items"])
            seen += [item["id"] for item in page["items"]]
            url = page["next"]
        assert token["id"] in seen
        assert seen == sorted(set(seen))

    with site.client("alice", ip="203.0.113.21") as alice:
        assert alice.delete(f"{API}/user/tokens/{token['id']}").status_code == 204
        assert_problem(alice.delete(f"{API}/user/tokens/{token['id']}"), 404, "NOT_FOUND")
        assert_problem(alice.get(f"{API}/user/tokens/{token['id']}"), 404, "NOT_FOUND")
        listed = [item["id"] for item in alice.get(f"{API}/user/tokens?limit=500").json()["items"]]
        assert token["id"] not in listed
    revoked = site.entry("app_token.revoke", performer="alice")
    assert_audited(revoked, "alice", "203.0.113.21")
    assert revoked["metadata"]["token_id"] == token["id"]
    with site.client(token=token["token"]) as bearer:
        assert_problem(bearer.get(f"{API}/repositories"), 401, "UNAUTHORIZED")
    with site.client(("$app", token["token"])) as registry:
        assert registry.get("/v2/acme/private/manifests/v1").status_code == 401


def test_a_token_cannot_create_a_token_beyond_its_own_scopes(site: Site) -> None:
    with site.client("alice") as alice:
        parent = alice.post(f"{API}/user/tokens", json={"title": "parent", "scopes": ["user:admin", "repo:read"]})
        assert parent.status_code == 201, parent.text
    with site.client(token=parent.json()["token"]) as bearer:
        wider = bearer.post(f"{API}/user/tokens", json={"title": "wider", "scopes": ["repo:write"]})
        assert assert_problem(wider, 403, "INSUFFICIENT_SCOPE")["context"]["scope"] == "repo:write"
        implied = bearer.post(f"{API}/user/tokens", json={"title": "implied", "scopes": ["user:read"]})
        assert implied.status_code == 201, implied.text
        inherited = bearer.post(f"{API}/user/tokens", json={"title": "inherited"})
        assert inherited.json()["scopes"] == ["repo:read", "user:admin"]
    with site.client("bob") as bob:
        # Another user's token is not there for bob.
        assert_problem(bob.delete(f"{API}/user/tokens/{parent.json()['id']}"), 404, "NOT_FOUND")


def test_bad_token_requests_change_nothing(site: Site) -> None:
    past = "2001-01-01T00:00:00Z"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    with site.client("bob") as bob:
        before = bob.get(f"{API}/user/tokens?limit=500").json()["items"]
        for body, status, code in (
            ({"title": ""}, 422, "VALIDATION_FAILED"),
            ({"title": "tab\there"}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "expires_in": "1d", "expires_at": soon}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "expires_at": "2030-01-01T00:00:00"}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "scopes": ["repo:everything"]}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "scopes": []}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "colour": "red"}, 422, "VALIDATION_FAILED"),
            ({"title": "x", "expires_at": past}, 400, "INVALID_REQUEST"),
            ({"title": "x", "expires_in": "soon"}, 400, "INVALID_REQUEST"),
            ({"title": "x", "expires_in": "99999999w"}, 400, "INVALID_REQUEST"),
            ({"title": "   "}, 400, "INVALID_REQUEST"),
        ):
            assert_problem(bob.post(f"{API}/user/tokens", json=body), status, code)
        assert_problem(bob.get(f"{API}/user/tokens/0"), 422, "VALIDATION_FAILED")
        assert_problem(bob.get(f"{API}/user/tokens?cursor=nonsense"), 400, "PAGINATION_INVALID")
        assert bob.get(f"{API}/user/tokens?limit=500").json()["items"] == before
    assert site.entries(kind="app_token.create", performer="bob") == []


def test_stars_of_repositories_the_user_may_read(site: Site) -> None:
    with site.client("alice") as alice:
        for name in ("acme/star-a", "acme/star-b"):
            assert alice.post(f"{API}/repositories", json={"name": name, "visibility": "public"}).status_code == 201
    with site.client("bob", ip="203.0.113.30") as bob:
        for name in ("acme/star-b", "acme/star-a", "acme/public", "acme/star-a"):
            assert bob.put(f"{API}/user/starred/{name}").status_code == 204, name
        # Starring needs read access: a private repository, or a missing one elsewhere, is refused alike.
        assert_problem(bob.put(f"{API}/user/starred/acme/private"), 403, "DENIED")
        assert_problem(bob.put(f"{API}/user/starred/acme/missing"), 403, "DENIED")
        assert_problem(bob.put(f"{API}/user/starred/bob/missing"), 404, "NOT_FOUND")
        assert_problem(bob.put(f"{API}/user/starred/Bad/Name"), 422, "VALIDATION_FAILED")
        names: list[str] = []
        url: str | None = f"{API}/user/starred?limit=2"
        while url is not None:
            page = bob.get(url).json()
            assert len(page["items"]) <= 2
            names += [item["name"] for item in page["items"]]
            url = page["next"]
        assert names == ["acme/public", "acme/star-a", "acme/star-b"]
        first = bob.get(f"{API}/user/starred").json()["items"][1]
        assert (first["visibility"], first["namespace"]) == ("public", "acme")
        assert first["starred_at"]
    # Starring twice recorded one entry.
    stars = site.entries(kind="repository.star", repository="acme/star-a")
    assert len(stars) == 1
    assert_audited(stars[0], "bob", "203.0.113.30")

    # A repository bob can no longer read leaves his list (the star stays for when he can again).
    with site.client("alice") as alice:
        assert alice.patch(f"{API}/repositories/acme/star-b", json={"visibility": "private"}).status_code == 200
    with site.client("bob") as bob:
        assert [item["name"] for item in bob.get(f"{API}/user/starred").json()["items"]] == [
            "acme/public",
            "acme/star-a",
        ]
    with site.client("alice") as alice:
        assert alice.patch(f"{API}/repositories/acme/star-b", json={"visibility": "public"}).status_code == 200

    with site.client("bob", ip="203.0.113.31") as bob:
        assert bob.delete(f"{API}/user/starred/acme/star-a").status_code == 204
        assert_problem(bob.delete(f"{API}/user/starred/acme/star-a"), 404, "NOT_FOUND")
        assert [item["name"] for item in bob.get(f"{API}/user/starred").json()["items"]] == [
            "acme/public",
            "acme/star-b",
        ]
    unstar = site.entry("repository.unstar", repository="acme/star-a")
    assert_audited(unstar, "bob", "203.0.113.31")
    assert unstar["namespace"] == "acme"


def test_a_stale_browser_session_must_enter_the_password_again(site: Site) -> None:
    site.create_user("kim")
    with site.client() as browser:
        session = browser.post(f"{API}/session", json={"username": "kim", "password": PASSWORD})
        assert session.status_code == 201, session.text
        csrf = {"X-CSRF-Token": session.json()["csrf_token"]}
        fresh = browser.post(f"{API}/user/tokens", json={"title": "fresh"}, headers=csrf)
        assert fresh.status_code == 201, fresh.text
        time.sleep(FRESH + 0.7)
        new = {"current_password": PASSWORD, "new_password": "another-passphrase"}
        for response in (
            browser.post(f"{API}/user/tokens", json={"title": "stale"}, headers=csrf),
            browser.put(f"{API}/user/password", json=new, headers=csrf),
            browser.get(f"{API}/user/cli-password"),
        ):
            assert_problem(response, 401, "FRESH_LOGIN_REQUIRED")
        # Reading and revoking need no fresh login; nothing was created or changed.
        titles = [token["title"] for token in browser.get(f"{API}/user/tokens").json()["items"]]
        assert titles == ["fresh"]
        revoked = browser.delete(f"{API}/user/tokens/{fresh.json()['id']}", headers=csrf)
        assert revoked.status_code == 204
    with site.client("kim") as kim:
        assert kim.get(f"{API}/user").status_code == 200


# -- user administration -----------------------------------------------------------------------


def test_superusers_create_list_and_read_users(site: Site) -> None:
    with site.client("admin", ip="203.0.113.40") as admin:
        created = admin.post(f"{API}/users", json={"name": "erin", "email": "erin@example.com"})
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{API}/users/erin"
        assert created.headers["cache-control"] == "no-store"
        erin = created.json()
        assert (erin["name"], erin["email"], erin["enabled"], erin["superuser"]) == (
            "erin",
            "erin@example.com",
            True,
            False,
        )
        generated = erin["password"]
        given = admin.post(f"{API}/users", json={"name": "frank", "password": PASSWORD, "superuser": True})
        assert given.json()["password"] is None
        assert given.json()["superuser"] is True
        assert admin.get(f"{API}/users/erin").json()["email"] == "erin@example.com"
        assert_problem(admin.get(f"{API}/users/nobody"), 404, "NOT_FOUND")
        # An organization is not a user.
        assert_problem(admin.get(f"{API}/users/acme"), 404, "NOT_FOUND")
        assert [user["name"] for user in admin.get(f"{API}/users?prefix=er").json()["items"]] == ["erin"]
        names: list[str] = []
        url: str | None = f"{API}/users?limit=2"
        while url is not None:
            page = admin.get(url).json()
            names += [user["name"] for user in page["items"]]
            url = page["next"]
        assert names == sorted(set(names))
        assert {"admin", "alice", "bob", "erin", "frank"} <= set(names)
        assert "acme" not in names
    with site.client(("erin", generated)) as erin_client:
        assert erin_client.get(f"{API}/user").json()["name"] == "erin"
    entry = site.entry("user.create", namespace="erin")
    assert_audited(entry, "admin", "203.0.113.40")
    assert entry["metadata"] == {"user": "erin", "superuser": False}


def test_bad_user_creations_change_nothing(site: Site) -> None:
    with site.client("admin") as admin:
        before = [user["name"] for user in admin.get(f"{API}/users?limit=500").json()["items"]]
        for body, status, code in (
            ({"name": "alice"}, 409, "CONFLICT"),
            # The namespace of an organization is taken too.
            ({"name": "acme"}, 409, "CONFLICT"),
            ({"name": "Not Valid"}, 400, "INVALID_REQUEST"),
            ({"name": "gina", "email": "no-at-sign"}, 422, "VALIDATION_FAILED"),
            ({"name": "gina", "password": "short"}, 422, "VALIDATION_FAILED"),
            ({"name": "gina", "role": "boss"}, 422, "VALIDATION_FAILED"),
            ({}, 422, "VALIDATION_FAILED"),
        ):
            assert_problem(admin.post(f"{API}/users", json=body), status, code)
        assert [user["name"] for user in admin.get(f"{API}/users?limit=500").json()["items"]] == before


def test_superusers_change_users_and_every_change_is_audited(site: Site) -> None:
    site.create_user("hank")
    ip = "203.0.113.50"
    with site.client("admin", ip=ip) as admin:
        changed = admin.patch(f"{API}/users/hank", json={"email": "hank@example.com", "superuser": True})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["email"], changed.json()["superuser"]) == ("hank@example.com", True)
    email = site.entry("user.email", namespace="hank")
    assert_audited(email, "admin", ip)
    assert email["metadata"] == {"user": "hank", "old": None, "new": "hank@example.com"}
    flag = site.entry("user.superuser", namespace="hank")
    assert flag["metadata"] == {"user": "hank", "old": False, "new": True}
    with site.client("hank") as hank:
        assert hank.get(f"{API}/users/alice").status_code == 200

    with site.client("admin", ip=ip) as admin:
        cleared = admin.patch(f"{API}/users/hank", json={"email": None, "superuser": False})
        assert (cleared.json()["email"], cleared.json()["superuser"]) == (None, False)
    assert site.entry("user.email", namespace="hank")["metadata"]["new"] is None
    with site.client("hank") as hank:
        # No longer a superuser, at once.
        assert_problem(hank.get(f"{API}/users/alice"), 403, "DENIED")

    with site.client("admin", ip=ip) as admin:
        assert admin.patch(f"{API}/users/hank", json={"enabled": False}).json()["enabled"] is False
    disabled = site.entry("user.disable", namespace="hank")
    assert_audited(disabled, "admin", ip)
    assert disabled["metadata"] == {"account": "hank", "old": True, "new": False}
    with site.client("hank") as hank:
        assert_problem(hank.get(f"{API}/user"), 401, "UNAUTHORIZED")
        assert hank.get("/v2/").status_code == 401
    with site.client("admin", ip=ip) as admin:
        assert admin.patch(f"{API}/users/hank", json={"enabled": True}).json()["enabled"] is True
    with site.client("hank") as hank:
        assert hank.get(f"{API}/user").status_code == 200

    with site.client("admin", ip=ip) as admin:
        reset = admin.patch(f"{API}/users/hank", json={"password": "reset-by-the-admin"})
        assert reset.status_code == 200
    assert site.entry("user.password", namespace="hank")["metadata"] == {"user": "hank", "reset": True}
    with site.client("hank") as hank:
        assert_problem(hank.get(f"{API}/user"), 401, "UNAUTHORIZED")
    with site.client(("hank", "reset-by-the-admin")) as hank:
        assert hank.get(f"{API}/user").status_code == 200

    # The same values again change nothing and record nothing.
    count = len(site.entries(namespace="hank"))
    with site.client("admin") as admin:
        assert admin.patch(f"{API}/users/hank", json={"enabled": True, "superuser": False}).status_code == 200
    assert len(site.entries(namespace="hank")) == count


def test_bad_user_changes_change_nothing(site: Site) -> None:
    site.create_user("ivy", email="ivy@example.com")
    with site.client("admin") as admin:
        for body, status, code in (
            ({"email": "new@example.com", "password": "short"}, 422, "VALIDATION_FAILED"),
            ({"email": "not an address"}, 422, "VALIDATION_FAILED"),
            ({"enabled": "perhaps"}, 422, "VALIDATION_FAILED"),
            ({"name": "renamed"}, 422, "VALIDATION_FAILED"),
        ):
            assert_problem(admin.patch(f"{API}/users/ivy", json=body), status, code)
        assert_problem(admin.patch(f"{API}/users/nobody", json={"enabled": False}), 404, "NOT_FOUND")
        assert_problem(admin.patch(f"{API}/users/Bad%20Name", json={"enabled": False}), 422, "VALIDATION_FAILED")
        assert admin.get(f"{API}/users/ivy").json()["email"] == "ivy@example.com"
        assert_problem(admin.get(f"{API}/users?cursor=nonsense"), 400, "PAGINATION_INVALID")


def test_a_superuser_cannot_disable_itself_or_drop_its_own_flag(site: Site) -> None:
    with site.client("admin") as admin:
        for body, field in (
            ({"enabled": False}, "enabled"),
            ({"superuser": False, "email": "me@example.com"}, "superuser"),
        ):
            refused = assert_problem(admin.patch(f"{API}/users/admin", json=body), 409, "CONFLICT")
            assert refused["context"]["field"] == field
        me = admin.get(f"{API}/users/admin").json()
        assert (me["enabled"], me["superuser"], me["email"]) == (True, True, None)
        # Changing anything else of its own is fine.
        assert admin.patch(f"{API}/users/admin", json={"enabled": True, "superuser": True}).status_code == 200


# -- search ------------------------------------------------------------------------------------


def _search(client: httpx.Client, q: str, **params: str) -> list[tuple[str, str]]:
    response = client.get(f"{API}/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [(item["kind"], item["name"]) for item in response.json()["items"]]


def test_search_finds_what_each_caller_may_see(site: Site) -> None:
    public = ("repository", "acme/public")
    private = ("repository", "acme/private")
    org = ("organization", "acme")
    teams = {("team", "acme/owners"), ("team", "acme/viewers")}
    with site.client() as anonymous:
        found = _search(anonymous, "acme")
        assert public in found
        assert private not in found
        assert org in found
        assert not [hit for hit in found if hit[0] == "team"]
        assert ("user", "alice") in _search(anonymous, "ALI")
    with site.client("bob") as bob:
        found = _search(bob, "acme")
        assert (public in found, private in found) == (True, False)
        assert not teams & set(found)
    with site.client("carol") as carol:
        # A member of acme sees its teams, but not a repository it has no grant on.
        found = _search(carol, "acme")
        assert teams <= set(found)
        assert private not in found
    with site.client("alice") as alice:
        found = _search(alice, "acme")
        assert {public, private, org} | teams <= set(found)
        # The order: repositories, users, organizations, teams; each by name.
        kinds = [kind for kind, _ in found]
        assert kinds == sorted(kinds, key=["repository", "user", "organization", "team"].index)
        assert _search(alice, "acme", kind="team") == sorted(teams)
        paged: list[tuple[str, str]] = []
        url: str | None = f"{API}/search?q=acme&limit=1"
        while url is not None:
            page = alice.get(url).json()
            assert len(page["items"]) <= 1
            paged += [(item["kind"], item["name"]) for item in page["items"]]
            url = page["next"]
        assert paged == found
        assert_problem(alice.get(f"{API}/search", params={"q": ""}), 422, "VALIDATION_FAILED")
        assert_problem(alice.get(f"{API}/search", params={"q": "   "}), 400, "INVALID_REQUEST")
        assert_problem(alice.get(f"{API}/search", params={"q": "a", "kind": "robot"}), 422, "VALIDATION_FAILED")
        other = alice.get(f"{API}/user/starred?limit=1").json()["next_cursor"] or "eyJsIjoidXNlcnMiLCJrIjpbImEiXX0"
        assert_problem(alice.get(f"{API}/search", params={"q": "a", "cursor": other}), 400, "PAGINATION_INVALID")
        token = alice.post(f"{API}/user/tokens", json={"title": "profile only", "scopes": ["user:read"]}).json()
    with site.client(token=token["token"]) as scoped:
        # A token without repo:read finds no more than anonymous callers; without org:admin, no teams.
        found = _search(scoped, "acme")
        assert public in found
        assert private not in found
        assert not teams & set(found)


# -- the audit log -----------------------------------------------------------------------------


def test_logs_filter_and_page_newest_first(site: Site) -> None:
    with site.client("alice", ip="203.0.113.60") as alice:
        for index in range(3):
            name = f"acme/logged-{index}"
            assert alice.post(f"{API}/repositories", json={"name": name}).status_code == 201
    with site.client("admin") as admin:
        seen: list[int] = []
        url: str | None = f"{API}/logs?namespace=acme&kind=repository.create&limit=2"
        while url is not None:
            response = admin.get(url)
            page = response.json()
            assert len(page["items"]) <= 2
            if page["next"] is not None:
                assert response.headers["link"] == f'<{page["next"]}>; rel="next"'
            seen += [item["id"] for item in page["items"]]
            url = page["next"]
        assert seen == sorted(seen, reverse=True)
        assert len(seen) == len(set(seen)) >= 5
        newest = admin.get(f"{API}/logs", params={"repository": "acme/logged-2"}).json()["items"]
        assert [item["kind"] for item in newest] == ["repository.create"]
        assert_audited(newest[0], "alice", "203.0.113.60")
        assert newest[0]["performer_kind"] == "user"
        assert newest[0]["metadata"] == {"visibility": "private", "grants": {"alice": "admin"}}
        prefixed = admin.get(f"{API}/logs", params={"kind": "repository.*", "performer": "alice"}).json()["items"]
        assert prefixed
        assert {item["performer"] for item in prefixed} == {"alice"}
        assert all(item["kind"].startswith("repository.") for item in prefixed)
        since = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert admin.get(f"{API}/logs", params={"since": since}).json()["items"] == []
        assert admin.get(f"{API}/logs", params={"since": "1h", "namespace": "acme"}).json()["items"]
        for params in (
            {"since": "yesterday"},
            {"until": "2001-01-01", "since": "2002-01-01"},
            {"since": "99999999999w"},
            {"repository": "Not/Valid"},
            {"namespace": "Not Valid"},
            {"kind": "*"},
            {"cursor": "nonsense"},
        ):
            assert admin.get(f"{API}/logs", params=params).status_code == 400, params


def test_who_reads_which_entries(site: Site) -> None:
    with site.client("bob") as bob:
        # Entries by bob: in acme (a star) and in his own namespace (a repository).
        assert bob.put(f"{API}/user/starred/acme/public").status_code == 204
        assert bob.delete(f"{API}/user/starred/acme/public").status_code == 204
        assert bob.post(f"{API}/repositories", json={"name": "bob/who-reads"}).status_code == 201
    with site.client("alice") as alice:
        # acme's administrator reads acme's entries, whoever performed them ...
        performers = {item["performer"] for item in alice.get(f"{API}/logs?namespace=acme").json()["items"]}
        assert "bob" in performers
        # ... and without a filter, the entries it performed itself.
        own = alice.get(f"{API}/logs?limit=500").json()["items"]
        assert own
        assert {item["performer"] for item in own} == {"alice"}
        assert_problem(alice.get(f"{API}/logs?performer=bob"), 403, "DENIED")
    with site.client("bob") as bob:
        assert_problem(bob.get(f"{API}/logs?namespace=acme"), 403, "DENIED")
        assert_problem(bob.get(f"{API}/logs?repository=acme/public"), 403, "DENIED")
        # His own namespace is his to read.
        assert bob.get(f"{API}/logs?namespace=bob").status_code == 200
        assert {item["performer"] for item in bob.get(f"{API}/logs?performer=bob").json()["items"]} == {"bob"}
    with site.client() as anonymous:
        assert_problem(anonymous.get(f"{API}/logs"), 401, "UNAUTHORIZED")


def test_log_counts_per_day_and_kind(site: Site) -> None:
    # kind=repository: pulls, written in the background, could land between the two reads.
    wanted = {"namespace": "acme", "kind": "repository"}
    with site.client("admin") as admin:
        counts = admin.get(f"{API}/logs/counts", params=wanted).json()["items"]
        listed = admin.get(f"{API}/logs", params={**wanted, "limit": "500"}).json()["items"]
        today = dt.datetime.now(dt.UTC).date().isoformat()
        assert {item["day"] for item in counts} == {today}
        by_kind = {item["kind"]: item["count"] for item in counts}
        expected: dict[str, int] = {}
        for item in listed:
            expected[item["kind"]] = expected.get(item["kind"], 0) + 1
        assert by_kind == expected
        assert by_kind["repository.create"] >= 2
        assert all(kind.startswith("repository.") for kind in by_kind)
        long = admin.get(f"{API}/logs/counts", params={"since": "2001-01-01"})
        assert_problem(long, 400, "INVALID_REQUEST")
    with site.client("bob") as bob:
        assert_problem(bob.get(f"{API}/logs/counts?namespace=acme"), 403, "DENIED")


def test_log_export_streams_json_lines_oldest_first(site: Site) -> None:
    with site.client("admin") as admin:
        wanted = {"namespace": "acme", "kind": "repository"}
        response = admin.get(f"{API}/logs/export", params={**wanted, "since": "1d"})
        listed = admin.get(f"{API}/logs", params={**wanted, "limit": "500"}).json()["items"]
        empty = admin.get(f"{API}/logs/export", params={"namespace": "nothing-here"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["id"] for line in lines] == [item["id"] for item in reversed(listed)]
    assert {line["namespace"] for line in lines} == {"acme"}
    assert (empty.status_code, empty.text) == (200, "")
    with site.client("alice") as alice:
        own = [json.loads(line) for line in alice.get(f"{API}/logs/export").text.splitlines()]
    assert own
    assert {line["performer"] for line in own} == {"alice"}
    with site.client("bob") as bob:
        refused = bob.get(f"{API}/logs/export?namespace=acme")
    assert_problem(refused, 403, "DENIED")
