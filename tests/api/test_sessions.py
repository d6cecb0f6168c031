"""Browser sessions on the REST API, on a live server with short session timings: login and
logout, the cookie's flags, CSRF on every change, fresh-login checks, expiry, invalidation by a
password change or a disable, and failed logins (audited, rate-limited).

The server trusts 127.0.0.1 as a proxy, so each test speaks from its own X-Forwarded-For address
and the failed-login limit of one test never touches another.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.context import SESSION_COOKIE
from dockyard.api.routes.session import set_session_cookie

from .support import PASSWORD, PROBLEM, Server, running_server

pytestmark = pytest.mark.integration

IDLE = 4
ABSOLUTE = 8
FRESH = 1
MAX_FAILED = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    environ = {
        "DOCKYARD_AUTH__SESSIONS__IDLE_SECONDS": str(IDLE),
        "DOCKYARD_AUTH__SESSIONS__ABSOLUTE_SECONDS": str(ABSOLUTE),
        "DOCKYARD_AUTH__SESSIONS__FRESH_LOGIN_SECONDS": str(FRESH),
        "DOCKYARD_AUTH__MAX_FAILED_LOGINS": str(MAX_FAILED),
        "DOCKYARD_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    with running_server(tmp_path_factory.mktemp("sessions"), environ) as live:
        for user in ("alice", "bob", "erin", "frank", "grace"):
            live.cli("user", "create", user, "--password-stdin", stdin=PASSWORD + "\n")
        live.cli("org", "create", "acme", "--owner", "alice")
        yield live


def browser(server: Server, ip: str) -> httpx.Client:
    """A client with a cookie jar, speaking from `ip`."""
    return httpx.Client(base_url=server.url, headers={"X-Forwarded-For": ip}, timeout=30)


def log_in(client: httpx.Client, user: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/session", json={"username": user, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def audit(server: Server, kind: str) -> list[dict[str, Any]]:
    output = server.cli("logs", "--kind", kind, "--json", "--limit", "1000")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def stored(server: Server) -> bytes:
    """Everything the embedded database holds on disk (its file and its write-ahead log)."""
    files = [server.data_dir / "dockyard.db", server.data_dir / "dockyard.db-wal"]
    return b"".join(path.read_bytes() for path in files if path.exists())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


def test_login_sets_a_hardened_cookie_and_answers_the_user_and_csrf_token(server: Server) -> None:
    with browser(server, "192.0.2.1") as client:
        response = client.post(
            "/api/v1/session",
            json={"username": "alice", "password": PASSWORD},
            headers={"User-Agent": "browser-test"},
        )
        assert response.status_code == 201, response.text
        assert response.headers["cache-control"] == "no-store"
        cookie = SimpleCookie(response.headers["set-cookie"])[SESSION_COOKIE]
        assert cookie.value.startswith("dyw_")
        assert cookie["httponly"]
        assert cookie["samesite"].lower() == "lax"
        assert cookie["path"] == "/"
        assert not cookie["secure"]  # plain http here; see the https case below
        assert int(cookie["max-age"]) == ABSOLUTE
        body = response.json()
        assert body["user"] == {"name": "alice", "email": None, "superuser": False}
        csrf = body["csrf_token"]
        assert csrf
        assert csrf not in cookie.value

        again = client.get("/api/v1/session")
        assert again.status_code == 200
        assert again.json()["csrf_token"] == csrf
        profile = client.get("/api/v1/user").json()
        assert profile["name"] == "alice"
        assert profile["authenticated_via"] == "session"
        assert profile["scopes"] is None  # a session acts with all the user's roles
    logins = [e for e in audit(server, "login") if e["metadata"].get("endpoint") == "session"]
    assert any(
        e["performer"] == "alice" and e["ip"] == "192.0.2.1" and e["user_agent"] == "browser-test" for e in logins
    )
    # The server keeps only a hash of the session id (and no CSRF token): neither is in its data.
    data = stored(server)
    assert cookie.value.encode() not in data
    assert csrf.encode() not in data


def test_the_cookie_is_secure_over_https() -> None:
    class _Sessions:
        lifetime_seconds = 60

    class _Services:
        base_url = None
        sessions = _Sessions()

    request = Request({"type": "http", "scheme": "https", "path": "/", "headers": [], "server": ("h", 443)})
    response = Response()
    set_session_cookie(response, request, _Services(), "dyw_x")  # type: ignore[arg-type]
    cookie = SimpleCookie(response.headers["set-cookie"])[SESSION_COOKIE]
    assert cookie["secure"]
    assert cookie["httponly"]


def test_no_session_and_bad_cookies_are_refused(server: Server) -> None:
    with browser(server, "192.0.2.2") as client:
        refused(client.get("/api/v1/session"), 401, "UNAUTHORIZED")
        client.cookies.set(SESSION_COOKIE, "dyw_forged")
        refused(client.get("/api/v1/session"), 401, "UNAUTHORIZED")
        refused(client.get("/api/v1/user"), 401, "UNAUTHORIZED")
    # Tokens and robots cannot start a browser session, even with valid secrets.
    token = server.cli("token", "create", "bob", "--title", "t").strip()
    with browser(server, "192.0.2.2") as client:
        refused(client.post("/api/v1/session", json={"username": "$app", "password": token}), 401, "UNAUTHORIZED")
        assert SESSION_COOKIE not in client.cookies


def test_logout_ends_the_session_on_the_server(server: Server) -> None:
    with browser(server, "192.0.2.3") as client:
        csrf = log_in(client)["csrf_token"]
        session_id = client.cookies[SESSION_COOKIE]
        refused(client.delete("/api/v1/session"), 403, "CSRF_FAILED")
        assert client.get("/api/v1/session").status_code == 200  # still logged in
        response = client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 204
        assert SESSION_COOKIE not in client.cookies  # the cookie is cleared
    with browser(server, "192.0.2.3") as stolen:
        # The old id is dead on the server, not only forgotten by the browser.
        stolen.cookies.set(SESSION_COOKIE, session_id)
        refused(stolen.get("/api/v1/session"), 401, "UNAUTHORIZED")
        # Logging out without a session is not an error.
        assert stolen.delete("/api/v1/session").status_code == 204
    assert any(e["performer"] == "alice" and e["ip"] == "192.0.2.3" for e in audit(server, "logout"))


def test_a_new_login_replaces_the_browsers_previous_session(server: Server) -> None:
    with browser(server, "192.0.2.4") as client:
        log_in(client)
        first = client.cookies[SESSION_COOKIE]
        log_in(client, "bob")
        assert client.cookies[SESSION_COOKIE] != first
        assert client.get("/api/v1/session").json()["user"]["name"] == "bob"
    with browser(server, "192.0.2.4") as other:
        other.cookies.set(SESSION_COOKIE, first)
        refused(other.get("/api/v1/session"), 401, "UNAUTHORIZED")


def test_every_change_made_with_the_cookie_needs_the_csrf_token(server: Server) -> None:
    with browser(server, "192.0.2.5") as client:
        csrf = log_in(client)["csrf_token"]
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            refused(
                client.post("/api/v1/repositories", json={"name": "acme/csrf"}, headers=headers), 403, "CSRF_FAILED"
            )
            refused(
                client.request("PATCH", "/api/v1/repositories/acme/csrf", json={"description": "x"}, headers=headers),
                403,
                "CSRF_FAILED",
            )
        # Nothing changed.
        assert client.get("/api/v1/repositories/acme/csrf").status_code == 404
        # Reads need no token; with it, the change goes through.
        assert client.get("/api/v1/repositories?namespace=acme").status_code == 200
        created = client.post("/api/v1/repositories", json={"name": "acme/csrf"}, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text
        deleted = client.delete("/api/v1/repositories/acme/csrf")
        refused(deleted, 403, "CSRF_FAILED")
        assert client.get("/api/v1/repositories/acme/csrf").status_code == 200
        # A request with an Authorization header is never cookie-authenticated: it acts as bob
        # (who may not create in acme), with or without the CSRF token, never as alice.
        as_bob = client.post(
            "/api/v1/repositories",
            json={"name": "acme/other"},
            headers={"Authorization": basic("bob", PASSWORD)},
        )
        refused(as_bob, 403, "DENIED")
        assert client.get("/api/v1/user", headers={"Authorization": "Bearer dya_bogus"}).status_code == 401


def test_sensitive_operations_need_a_fresh_login(server: Server) -> None:
    apps = "/api/v1/organizations/acme/applications"
    app = {"name": "fresh-app", "redirect_uris": ["https://app.example/cb"]}
    with browser(server, "192.0.2.6") as client:
        body = log_in(client)
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        created = client.post(apps, json=app, headers=csrf)
        assert created.status_code == 201, created.text
        client_id = created.json()["client_id"]
        time.sleep(FRESH + 0.7)
        # Reads stay possible; a new secret needs the password again, and nothing changes.
        assert client.get(f"{apps}/{client_id}").status_code == 200
        refused(client.post(f"{apps}/{client_id}/secret", headers=csrf), 401, "FRESH_LOGIN_REQUIRED")
        refused(client.post(apps, json={**app, "name": "other"}, headers=csrf), 401, "FRESH_LOGIN_REQUIRED")
        assert [a["name"] for a in client.get(apps).json()["items"]] == ["fresh-app"]
        # Re-authentication needs the session's CSRF token and the right password.
        refused(client.post("/api/v1/session/reauthenticate", json={"password": PASSWORD}), 403, "CSRF_FAILED")
        wrong = client.post("/api/v1/session/reauthenticate", json={"password": "wrong-password"}, headers=csrf)
        refused(wrong, 401, "UNAUTHORIZED")
        renewed = client.post("/api/v1/session/reauthenticate", json={"password": PASSWORD}, headers=csrf)
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["authenticated_at"] > body["authenticated_at"]
        assert renewed.json()["csrf_token"] == body["csrf_token"]
        reset = client.post(f"{apps}/{client_id}/secret", headers=csrf)
        assert reset.status_code == 200, reset.text
    # Credentials sent with each request are always fresh.
    with server.client(auth=("alice", PASSWORD)) as basic:
        assert basic.post(f"{apps}/{client_id}/secret").status_code == 200
    failures = [e for e in audit(server, "login.failure") if e["ip"] == "192.0.2.6"]
    assert [e["metadata"]["endpoint"] for e in failures] == ["reauthenticate"]
    assert any(
        e["metadata"].get("endpoint") == "reauthenticate" and e["ip"] == "192.0.2.6" for e in audit(server, "login")
    )


def test_sessions_expire_when_idle_and_at_their_absolute_limit(server: Server) -> None:
    with browser(server, "192.0.2.7") as idle:
        log_in(idle)
        time.sleep(IDLE + 0.5)
        refused(idle.get("/api/v1/session"), 401, "UNAUTHORIZED")
    with browser(server, "192.0.2.7") as busy:
        started = time.monotonic()
        log_in(busy)
        # Used every half second, it never idles out, but it ends at its absolute limit.
        while time.monotonic() - started < ABSOLUTE - 1:
            assert busy.get("/api/v1/session").status_code == 200
            time.sleep(0.5)
        time.sleep(1.5)
        refused(busy.get("/api/v1/session"), 401, "UNAUTHORIZED")


def test_a_password_change_or_a_disable_ends_every_session(server: Server) -> None:
    with browser(server, "192.0.2.8") as one, browser(server, "192.0.2.8") as two:
        log_in(one, "erin")
        log_in(two, "erin")
        server.cli("user", "passwd", "erin", "--password-stdin", stdin="another-password\n")
        refused(one.get("/api/v1/session"), 401, "UNAUTHORIZED")
        refused(two.get("/api/v1/user"), 401, "UNAUTHORIZED")
        log_in(one, "erin", "another-password")
        server.cli("user", "disable", "erin")
        refused(one.get("/api/v1/session"), 401, "UNAUTHORIZED")
        refused(
            one.post("/api/v1/session", json={"username": "erin", "password": "another-password"}),
            401,
            "UNAUTHORIZED",
        )


def test_failed_session_logins_are_audited_and_rate_limited(server: Server) -> None:
    ip = "198.51.100.9"
    with browser(server, ip) as client:
        for _ in range(MAX_FAILED):
            refused(
                client.post("/api/v1/session", json={"username": "frank", "password": "nope-nope"}),
                401,
                "UNAUTHORIZED",
            )
        # The limit holds even for the right password, from this address and for this user.
        limited = client.post("/api/v1/session", json={"username": "frank", "password": PASSWORD})
        refused(limited, 429, "TOO_MANY_REQUESTS")
        assert SESSION_COOKIE not in client.cookies
        refused(
            client.post("/api/v1/session", json={"username": "grace", "password": PASSWORD}), 429, "TOO_MANY_REQUESTS"
        )
    with browser(server, "198.51.100.10") as elsewhere:
        refused(
            elsewhere.post("/api/v1/session", json={"username": "frank", "password": PASSWORD}),
            429,
            "TOO_MANY_REQUESTS",
        )
        log_in(elsewhere, "grace")  # another user from another address is not affected
    failures = [e for e in audit(server, "login.failure") if e["ip"] == ip]
    assert len(failures) == MAX_FAILED
    assert all(e["performer"] == "frank" and e["metadata"]["endpoint"] == "session" for e in failures)


def test_the_session_cookie_is_no_use_to_other_sites_forms(server: Server) -> None:
    """A cross-site form can send the cookie with a POST (SameSite=Lax still allows top-level
    navigations), but never the CSRF header, and never a JSON body the API would take."""
    with browser(server, "192.0.2.11") as client:
        log_in(client)
        form = client.post(
            "/api/v1/repositories",
            content=b"name=acme%2Fform",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        refused(form, 403, "CSRF_FAILED")
        assert client.get("/api/v1/repositories/acme/form").status_code == 404
