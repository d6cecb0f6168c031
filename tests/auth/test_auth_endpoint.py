"""/v2/auth (the Docker token endpoint), Basic credentials on /v2/, credential kinds, rate limits.

docs/identity.md, "Logging in (Docker token protocol)" and "Accepted Basic credentials".
"""

from __future__ import annotations

import time

import httpx
import pytest

from .helpers import (
    ACCEPT_ALL,
    REFRESH_HOW,
    AuthServer,
    assert_bearer_challenge,
    assert_error,
    assert_status,
    basic,
    bearer,
    db_query,
    describe,
    jwt_parts,
    rand,
    refresh_grant,
    refresh_token_for,
    repo_actions,
)
from .world import ORG, World, password

pytestmark = pytest.mark.integration

PUB = f"{ORG}/matrix-pub"
PRIV = f"{ORG}/matrix-priv"


def auth_get(w: World, creds: tuple[str, str] | None, *scopes: str, **extra: str) -> httpx.Response:
    params = [("service", w.service)] + [("scope", s) for s in scopes] + list(extra.items())
    return w.anon.get("/v2/auth", params=params, headers=basic(*creds) if creds else {})


def pull(w: World, repo: str, headers: dict[str, str]) -> httpx.Response:
    return w.anon.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT_ALL, **headers})


# --------------------------------------------------------------------------- token responses


def test_token_response_shape_and_claims(live: World) -> None:
    w = live
    r = auth_get(w, w.creds["team_read"], f"repository:{PRIV}:pull")
    assert_status(r, 200)
    body = r.json()
    for key in ("token", "access_token", "expires_in", "issued_at"):
        assert key in body, f"/v2/auth answer lacks {key!r}" + describe(r)
    assert body["token"] == body["access_token"], describe(r)
    assert isinstance(body["expires_in"], int), describe(r)
    assert body["expires_in"] > 0, describe(r)
    assert isinstance(body["issued_at"], str), "issued_at is an RFC 3339 string in the Docker protocol" + describe(r)
    header, payload, sig = jwt_parts(body["token"])
    assert header.get("alg") == "ES256", header
    assert header.get("kid"), header
    assert len(sig) == 64
    assert payload.get("aud") == w.service, f"aud must be the service {w.service!r}: {payload}"
    assert payload.get("sub") == "tread", payload
    assert isinstance(payload.get("exp"), int), payload
    assert isinstance(payload.get("iat"), int), payload
    assert abs((payload["exp"] - payload["iat"]) - body["expires_in"]) <= 2, (payload, body)
    assert abs(payload["iat"] - time.time()) < 120, payload
    assert repo_actions(payload, PRIV) == {"pull"}
    kids = {row[0] for row in db_query(w.server.db, "SELECT kid FROM signing_keys")}
    assert header["kid"] in kids, "the signing key must be kept in the database"


def test_realm_and_service_on_base_challenge(live: World) -> None:
    r = live.anon.get("/v2/")
    assert_bearer_challenge(r, base_url=live.url, repository=None, need=None, service=live.service)
    creds = live.creds["team_read"]
    assert creds is not None
    assert_status(live.anon.get("/v2/", headers=basic(*creds)), 200, why="valid Basic on /v2/")
    token = auth_get(live, creds).json()["token"]
    assert_status(live.anon.get("/v2/", headers=bearer(token)), 200, why="valid Bearer on /v2/")


@pytest.mark.parametrize(
    ("principal", "asked", "granted"),
    [
        ("team_read", "pull,push,delete", {"pull"}),
        ("robot_read", "pull,push,delete", {"pull"}),
        ("team_write", "pull,push", {"pull", "push"}),
        ("anonymous", "pull,push", set()),
        ("team_creator", "pull,push", set()),
        ("superuser", "pull,push", {"pull", "push"}),
    ],
)
def test_actions_not_held_are_dropped(live: World, principal: str, asked: str, granted: set[str]) -> None:
    r = auth_get(live, live.creds[principal], f"repository:{PRIV}:{asked}")
    assert_status(r, 200, why="actions not held are dropped, not refused:")
    assert repo_actions(jwt_parts(r.json()["token"])[1], PRIV) == granted, describe(r)


def test_public_repository_gives_anonymous_pull_only(live: World) -> None:
    r = auth_get(live, None, f"repository:{PUB}:pull,push,delete")
    assert_status(r, 200)
    token = r.json()["token"]
    assert repo_actions(jwt_parts(token)[1], PUB) == {"pull"}
    assert_status(pull(live, PUB, bearer(token)), 200)


def test_creator_may_push_to_a_new_name_only_in_its_org(live: World) -> None:
    new_in_org = f"{ORG}/fresh-{rand()}"
    new_elsewhere = f"alice/fresh-{rand()}"
    r = auth_get(
        live, live.creds["team_creator"], f"repository:{new_in_org}:pull,push", f"repository:{new_elsewhere}:pull,push"
    )
    assert_status(r, 200)
    payload = jwt_parts(r.json()["token"])[1]
    assert "push" in repo_actions(payload, new_in_org), "a creator may create repositories in the org"
    assert repo_actions(payload, new_elsewhere) == set(), "nobody but alice may create in alice/"
    member_new = f"{ORG}/fresh-{rand()}"
    r = auth_get(live, live.creds["team_write"], f"repository:{member_new}:pull,push")
    assert_status(r, 200)
    assert repo_actions(jwt_parts(r.json()["token"])[1], member_new) == set(), "a member may not create repositories"


def test_several_scopes_in_one_token(live: World) -> None:
    r = auth_get(live, live.creds["team_write"], f"repository:{PRIV}:pull,push", f"repository:{PUB}:pull")
    assert_status(r, 200)
    payload = jwt_parts(r.json()["token"])[1]
    assert repo_actions(payload, PRIV) == {"pull", "push"}
    assert repo_actions(payload, PUB) == {"pull"}


# --------------------------------------------------------------------------- wrong credentials


@pytest.mark.parametrize(
    "kind", ["wrong-password", "unknown-user", "wrong-robot-token", "wrong-app-token", "wrong-cli-password", "empty"]
)
def test_wrong_credentials_are_401(live: World, kind: str) -> None:
    w = live
    creds = {
        "wrong-password": ("tread", password()),
        "unknown-user": (f"nobody{rand()}", password()),
        "wrong-robot-token": (w.creds["robot_read"][0], "dyr_" + rand(16)),  # type: ignore[index]
        "wrong-app-token": ("$app", "dya_" + rand(16)),
        "wrong-cli-password": ("wcli", "dyc_" + rand(16)),
        "empty": ("tread", ""),
    }[kind]
    r = auth_get(w, creds, f"repository:{PUB}:pull")
    assert_error(r, 401, "UNAUTHORIZED", why=f"/v2/auth with {kind}")
    assert "token" not in r.text
    r = pull(w, PUB, basic(*creds))
    assert_error(r, 401, "UNAUTHORIZED", why=f"Basic {kind} straight to /v2/")


# --------------------------------------------------------------------------- OAuth2 POST form


def oauth_post(w: World, form: dict[str, str]) -> httpx.Response:
    return w.anon.post("/v2/auth", data={"service": w.service, "client_id": "dockyard-tests", **form})


def test_post_password_grant(live: World) -> None:
    user, pw = live.creds["team_read"]  # type: ignore[misc]
    r = oauth_post(
        live, {"grant_type": "password", "username": user, "password": pw, "scope": f"repository:{PRIV}:pull"}
    )
    assert_status(r, 200)
    body = r.json()
    token = body.get("access_token")
    assert isinstance(token, str), describe(r)
    assert "refresh_token" not in body, "no refresh_token without offline_token=true" + describe(r)
    assert repo_actions(jwt_parts(token)[1], PRIV) == {"pull"}
    assert_status(pull(live, PRIV, bearer(token)), 200)


def test_post_password_grant_wrong_password(live: World) -> None:
    r = oauth_post(
        live,
        {"grant_type": "password", "username": "tread", "password": password(), "scope": f"repository:{PRIV}:pull"},
    )
    assert_error(r, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("how", REFRESH_HOW)
@pytest.mark.parametrize("principal", ["team_read", "robot_read", "app_token", "cli_password"])
def test_offline_token_and_refresh_grant(live: World, principal: str, how: str) -> None:
    w = live
    user, secret = w.creds[principal]  # type: ignore[misc]
    refresh = refresh_token_for(w.anon, w.service, user, secret, f"repository:{PRIV}:pull", how)
    r2 = refresh_grant(w.anon, w.service, refresh, f"repository:{PRIV}:pull,push")
    assert_status(r2, 200, why="refresh_token grant:")
    token = r2.json().get("access_token")
    assert isinstance(token, str), describe(r2)
    held = {"pull"} if principal in ("team_read", "robot_read") else {"pull", "push"}
    assert repo_actions(jwt_parts(token)[1], PRIV) == held, "a refreshed token holds what the principal holds"
    assert_status(pull(w, PRIV, bearer(token)), 200)


def test_refresh_grant_rejects_garbage_and_access_tokens(live: World) -> None:
    w = live
    access = auth_get(w, w.creds["team_read"], f"repository:{PRIV}:pull").json()["token"]
    for bad in ("not-a-token", access):
        r = refresh_grant(w.anon, w.service, bad, f"repository:{PRIV}:pull")
        assert_error(r, 401, "UNAUTHORIZED", why="refresh_token grant with a non-refresh token")


# --------------------------------------------------------------------------- Basic straight to /v2/


@pytest.mark.parametrize("principal", ["team_read", "robot_read", "app_token", "cli_password", "superuser"])
def test_basic_credentials_directly(live: World, principal: str) -> None:
    w = live
    creds = w.creds[principal]
    assert creds is not None
    r = pull(w, PRIV, basic(*creds))
    assert_status(r, 200, why=f"Basic {principal} straight to a manifest")
    assert r.content == w.images[PRIV].manifest


@pytest.mark.parametrize("principal", ["team_read", "robot_read"])
def test_basic_insufficient_is_403_denied(live: World, principal: str) -> None:
    w = live
    creds = w.creds[principal]
    assert creds is not None
    r = w.anon.delete(f"/v2/{PRIV}/manifests/v1", headers=basic(*creds))
    assert_error(r, 403, "DENIED", why=f"Basic {principal} deleting (read only)")
    r = w.anon.post(f"/v2/{PRIV}/blobs/uploads/", headers={"Content-Length": "0", **basic(*creds)})
    assert_error(r, 403, "DENIED", why=f"Basic {principal} pushing (read only)")
    assert w.root.tag_digest(PRIV, "v1") == w.images[PRIV].digest


def test_basic_no_access_to_private_is_403(live: World) -> None:
    creds = live.creds["team_creator"]
    assert creds is not None
    r = pull(live, PRIV, basic(*creds))
    assert_error(r, 403, "DENIED", why="valid Basic credentials without read")
    assert live.images[PRIV].manifest not in r.content


# --------------------------------------------------------------------------- credential lifecycle


def test_app_token_revoked(live: World) -> None:
    w = live
    user, _ = w.new_user("apprev")
    w.server.cli("perm", "grant", PRIV, user, "read")
    secret = w.server.app_token(user, f"t-{rand()}")
    w.secrets.append(secret)
    assert_status(auth_get(w, ("$app", secret), f"repository:{PRIV}:pull"), 200)
    listing = w.server.cli("token", "list", user).stdout.strip().splitlines()
    assert len(listing) == 1, listing
    token_id = listing[0].split("\t")[0]
    w.server.cli("token", "revoke", user, token_id)
    assert_error(auth_get(w, ("$app", secret), f"repository:{PRIV}:pull"), 401, "UNAUTHORIZED", why="revoked app token")
    assert_error(pull(w, PRIV, basic("$app", secret)), 401, "UNAUTHORIZED", why="revoked app token as Basic")


def test_cli_password_invalidated_by_password_change(live: World) -> None:
    w = live
    user, pw = w.new_user("clipw")
    w.server.cli("perm", "grant", PRIV, user, "read")
    cli_pw = w.server.cli_password(user)
    w.secrets.append(cli_pw)
    assert cli_pw != pw
    assert_status(auth_get(w, (user, cli_pw), f"repository:{PRIV}:pull"), 200, why="encrypted CLI password")
    new_pw = password()
    w.secrets.append(new_pw)
    w.server.cli("user", "passwd", user, "--password-stdin", stdin=new_pw + "\n")
    assert_error(auth_get(w, (user, cli_pw), f"repository:{PRIV}:pull"), 401, "UNAUTHORIZED", why="stale CLI password")
    assert_error(auth_get(w, (user, pw), f"repository:{PRIV}:pull"), 401, "UNAUTHORIZED", why="old password")
    assert_status(auth_get(w, (user, new_pw), f"repository:{PRIV}:pull"), 200, why="new password")
    fresh = w.server.cli_password(user)
    w.secrets.append(fresh)
    assert fresh != cli_pw
    assert_status(auth_get(w, (user, fresh), f"repository:{PRIV}:pull"), 200, why="new CLI password")


# --------------------------------------------------------------------------- the strict server


class Strict:
    """The strict server (max_failed_logins 5, allow_password_on_cli false, 30 s tokens)."""

    def __init__(self, srv: AuthServer) -> None:
        self.srv = srv
        self.pw = password()
        self.user = f"u{rand(3)}"
        srv.create_user(self.user, self.pw)
        srv.cli("repo", "create", f"{self.user}/app")
        self.cli_pw = srv.cli_password(self.user)
        self.app = srv.app_token(self.user, "strict")
        self.robot, self.robot_token = srv.create_robot(self.user, "bot")
        srv.cli("perm", "grant", f"{self.user}/app", self.robot, "read")
        r = httpx.get(f"{srv.url}/v2/", timeout=10)
        self.service = assert_bearer_challenge(r, base_url=srv.url, repository=None, need=None).service

    def client(self, source_ip: str) -> httpx.Client:
        """A client connecting from `source_ip` (127.0.0.0/8): the per-IP counters stay apart."""
        transport = httpx.HTTPTransport(local_address=source_ip)
        return httpx.Client(base_url=self.srv.url, timeout=30, transport=transport)

    def login(self, c: httpx.Client, user: str, secret: str) -> httpx.Response:
        return c.get(
            "/v2/auth",
            params={"service": self.service, "scope": f"repository:{self.user}/app:pull"},
            headers=basic(user, secret),
        )


@pytest.fixture(scope="module")
def strict(limited_server: AuthServer) -> Strict:
    return Strict(limited_server)


def test_plain_password_refused_when_disallowed(strict: Strict) -> None:
    with strict.client("127.0.0.11") as c:
        assert_error(strict.login(c, strict.user, strict.pw), 401, "UNAUTHORIZED", why="plain password, disallowed")
        assert_status(strict.login(c, strict.user, strict.cli_pw), 200, why="encrypted CLI password still works")
        assert_status(strict.login(c, "$app", strict.app), 200, why="app token still works")
        assert_status(strict.login(c, strict.robot, strict.robot_token), 200, why="robot token still works")


def test_failed_logins_per_user_429(strict: Strict) -> None:
    victim = f"v{rand(3)}"
    pw = password()
    strict.srv.create_user(victim, pw)
    cli_pw = strict.srv.cli_password(victim)
    with strict.client("127.0.0.12") as c:
        for i in range(5):
            r = strict.login(c, victim, password())
            assert_error(r, 401, "UNAUTHORIZED", why=f"failed login #{i + 1} of 5 allowed")
        r = strict.login(c, victim, password())
        assert_error(r, 429, "TOOMANYREQUESTS", why="6th failed login for one user")
    with strict.client("127.0.0.13") as c:  # another IP: the per-user limit still holds
        r = strict.login(c, victim, password())
        assert_error(r, 429, "TOOMANYREQUESTS", why="failed login for a locked user from another IP")
        # a correct credential during the lock-out must not be checked either (else brute force goes on)
        r = strict.login(c, victim, cli_pw)
        assert_error(r, 429, "TOOMANYREQUESTS", why="correct credentials for a locked-out user")


def test_failed_logins_per_ip_429(strict: Strict) -> None:
    with strict.client("127.0.0.14") as c:
        for i in range(5):
            r = strict.login(c, f"nobody{rand(3)}", password())
            assert_error(r, 401, "UNAUTHORIZED", why=f"failed login #{i + 1} of 5 from one IP")
        r = strict.login(c, f"nobody{rand(3)}", password())
        assert_error(r, 429, "TOOMANYREQUESTS", why="6th failed login from one IP")
    with strict.client("127.0.0.15") as c:  # another IP is not affected
        assert_status(strict.login(c, strict.robot, strict.robot_token), 200, why="login from another IP")


def test_locked_out_ip_gets_429_even_with_valid_credentials(strict: Strict) -> None:
    """'further attempts get 429': were valid credentials still checked (200) while wrong ones get
    429, a credential-stuffing client could go on telling right from wrong from a locked-out IP."""
    with strict.client("127.0.0.17") as c:
        for i in range(6):
            r = strict.login(c, f"nobody{rand(3)}", password())
            assert_error(r, (401, 429), "UNAUTHORIZED", "TOOMANYREQUESTS", why=f"failed login #{i + 1}")
        assert_error(r, 429, "TOOMANYREQUESTS", why="6th failed login from one IP")
        r = strict.login(c, strict.robot, strict.robot_token)
        assert_error(r, 429, "TOOMANYREQUESTS", why="valid robot credentials from a locked-out IP")


@pytest.mark.slow
def test_token_really_expires(strict: Strict) -> None:
    with strict.client("127.0.0.16") as c:
        r = strict.login(c, strict.robot, strict.robot_token)
        assert_status(r, 200)
        assert r.json()["expires_in"] == 30, describe(r)
        token = r.json()["token"]
        url = f"/v2/{strict.user}/app/tags/list"
        first = c.get(url, headers=bearer(token))
        assert first.status_code in (200, 404), describe(first)  # 404: the repository has no tags yet
        time.sleep(max(0.0, jwt_parts(token)[1]["exp"] - time.time()) + 2)
        r = c.get(url, headers=bearer(token))
        assert_error(r, 401, "UNAUTHORIZED", "DENIED", why="token past its exp")
        assert_bearer_challenge(r, base_url=strict.srv.url, repository=f"{strict.user}/app", need={"pull"})
