"""OAuth2 applications end to end, driven over HTTP like a real browser and a real client: the
authorization-code flow with PKCE (login form, consent page, redirect, token exchange, API calls
with the token), refresh tokens, client credentials, secret resets, revocation — and everything
the endpoints must refuse.

The server trusts 127.0.0.1 as a proxy, so the browser and the application speak from distinct
X-Forwarded-For addresses and the audit log shows which did what.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from .support import (
    APPS,
    PASSWORD,
    PROBLEM,
    REDIRECT,
    App,
    Server,
    authorize_params,
    oauth_error,
    pkce,
    push_image,
    register,
    running_server,
)

pytestmark = pytest.mark.integration

CODE_SECONDS = 4
BROWSER_IP = "192.0.2.10"
APP_IP = "203.0.113.50"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    environ = {
        "DOCKYARD_AUTH__OAUTH__CODE_SECONDS": str(CODE_SECONDS),
        "DOCKYARD_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    with running_server(tmp_path_factory.mktemp("oauth"), environ) as live:
        for user in ("alice", "bob"):
            live.cli("user", "create", user, "--password-stdin", stdin=PASSWORD + "\n")
        live.cli("org", "create", "acme", "--owner", "alice")
        live.cli("org", "create", "other", "--owner", "bob")
        with live.client(auth=("alice", PASSWORD)) as alice:
            assert alice.post("/api/v1/repositories", json={"name": "acme/private"}).status_code == 201
            push_image(alice, "acme/private", "v1")
        with live.client(auth=("bob", PASSWORD)) as bob:
            assert bob.post("/api/v1/repositories", json={"name": "other/secret"}).status_code == 201
        yield live


def hidden_fields(page: str) -> dict[str, str]:
    return {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    }


def browser(server: Server, ip: str = BROWSER_IP) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-Forwarded-For": ip}, timeout=30, follow_redirects=False)


def application(server: Server, ip: str = APP_IP) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-Forwarded-For": ip}, timeout=30)


def log_in(client: httpx.Client, user: str = "alice") -> str:
    response = client.post("/api/v1/session", json={"username": user, "password": PASSWORD})
    assert response.status_code == 201, response.text
    csrf: str = response.json()["csrf_token"]
    return csrf


def consent(client: httpx.Client, params: dict[str, str]) -> httpx.Response:
    """Open the consent page (logged in) and allow; the answer is the redirect to the application."""
    page = client.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    fields = hidden_fields(page.text)
    return client.post("/oauth/authorize", data={**fields, "decision": "allow"})


def code_from(response: httpx.Response, state: str = "xyz-state") -> str:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [state]
    code = query["code"][0]
    assert code.startswith("dyg_")
    return code


def grant(server: Server, app: App, scope: str = "repo:read", user: str = "alice") -> tuple[str, str]:
    """Run the browser part of the flow for `user`; return (code, verifier)."""
    verifier, challenge = pkce()
    with browser(server) as client:
        log_in(client, user)
        code = code_from(consent(client, authorize_params(app, challenge, scope=scope)))
    return code, verifier


def exchange(server: Server, app: App, code: str, verifier: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    with application(server) as client:
        return client.post("/oauth/token", data={**form, **extra}, auth=app.auth())


def tokens(server: Server, app: App, scope: str = "repo:read") -> dict[str, Any]:
    code, verifier = grant(server, app, scope)
    response = exchange(server, app, code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def api(server: Server, token: str, ip: str = APP_IP) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}, timeout=30
    )


def audit(server: Server, kind: str) -> list[dict[str, Any]]:
    output = server.cli("logs", "--kind", kind, "--json", "--limit", "1000")
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# -- the flow ----------------------------------------------------------------------------------


def test_authorization_code_flow_with_pkce_end_to_end(server: Server) -> None:
    app = register(server, "dashboard", ["repo:read", "repo:create", "user:read"])
    verifier, challenge = pkce()
    params = authorize_params(app, challenge, scope="repo:read repo:create user:read")
    with browser(server) as client:
        # Not logged in: the authorize endpoint sends the browser to the login form ...
        response = client.get("/oauth/authorize", params=params)
        assert response.status_code == 302
        login_url = response.headers["location"]
        assert login_url.startswith("/oauth/login?")
        form = client.get(login_url)
        assert form.status_code == 200
        assert form.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        fields = hidden_fields(form.text)
        # ... which logs in (a browser session) and returns to the authorize request.
        response = client.post("/oauth/login", data={**fields, "username": "alice", "password": PASSWORD})
        assert response.status_code == 303, response.text
        assert response.headers["location"].startswith("/oauth/authorize?")
        assert client.cookies["dockyard_session"].startswith("dyw_")
        page = client.get(response.headers["location"])
        assert page.status_code == 200
        # The consent page names the application, its organization, the user and the scopes,
        # and escapes what the application's owners wrote.
        assert "dashboard" in page.text
        assert "acme" in page.text
        assert "repo:create" in page.text
        assert "&lt;b&gt;test&lt;/b&gt;" in page.text
        assert "<b>test</b>" not in page.text
        assert "<script" not in page.text
        decision = hidden_fields(page.text)
        assert decision["csrf_token"]
        code = code_from(client.post("/oauth/authorize", data={**decision, "decision": "allow"}))

    with application(server) as client:
        response = client.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            auth=app.auth(),
            headers={"User-Agent": "dashboard/1.0"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert issued["token_type"] == "Bearer"
    assert issued["access_token"].startswith("dyo_")
    assert issued["refresh_token"].startswith("dyf_")
    assert issued["scope"] == "repo:read repo:create user:read"
    assert 0 < issued["expires_in"] <= 3600

    with api(server, issued["access_token"]) as client:
        profile = client.get("/api/v1/user").json()
        assert profile["name"] == "alice"
        assert profile["authenticated_via"] == f"oauth:{app.client_id}"
        assert sorted(profile["scopes"]) == ["repo:create", "repo:read", "user:read"]
        assert client.get("/api/v1/repositories/acme/private").status_code == 200
        created = client.post("/api/v1/repositories", json={"name": "acme/made-by-app"})
        assert created.status_code == 201, created.text
        # The user's roles still apply: alice may not create in bob's organization.
        denied = client.post("/api/v1/repositories", json={"name": "other/nope"})
        assert denied.status_code == 403
        # Scopes cap what the user could do: no repo:admin in this grant.
        refused = client.request("PATCH", "/api/v1/repositories/acme/private", json={"description": "x"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "INSUFFICIENT_SCOPE"

    entry = next(e for e in audit(server, "repository.create") if e["repository"] == "acme/made-by-app")
    assert entry["performer"] == "alice"
    assert entry["performer_kind"] == "oauth-app"
    assert entry["via_app"] == app.client_id
    assert entry["ip"] == APP_IP
    consented = [e for e in audit(server, "oauth.grant") if e["metadata"]["client_id"] == app.client_id]
    assert consented[-1]["performer"] == "alice"
    assert consented[-1]["ip"] == BROWSER_IP
    assert consented[-1]["metadata"]["scopes"] == "repo:read repo:create user:read"
    issuance = [e for e in audit(server, "oauth.token") if e["metadata"]["client_id"] == app.client_id]
    assert issuance[-1]["performer"] == "alice"
    assert issuance[-1]["via_app"] == app.client_id
    assert issuance[-1]["ip"] == APP_IP
    assert issuance[-1]["user_agent"] == "dashboard/1.0"
    assert issuance[-1]["metadata"]["grant_type"] == "authorization_code"
    # Codes and tokens are stored hashed only.
    files = [server.data_dir / "dockyard.db", server.data_dir / "dockyard.db-wal"]
    data = b"".join(path.read_bytes() for path in files if path.exists())
    for secret in (code, issued["access_token"], issued["refresh_token"], app.secret):
        assert secret.encode() not in data


def test_a_read_only_grant_reads_but_cannot_create(server: Server) -> None:
    app = register(server, "reader")
    issued = tokens(server, app, "repo:read")
    assert issued["scope"] == "repo:read"
    with api(server, issued["access_token"]) as client:
        assert client.get("/api/v1/repositories/acme/private/-/tags").status_code == 200
        response = client.post("/api/v1/repositories", json={"name": "acme/not-allowed"})
        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "INSUFFICIENT_SCOPE"
        assert response.json()["context"]["scope"] == "repo:create"
        assert client.get("/api/v1/user").json()["code"] == "INSUFFICIENT_SCOPE"
    # The registry takes the token as the password of `$oauthtoken`, with the same cap.
    auth = ("$oauthtoken", issued["access_token"])
    with httpx.Client(base_url=server.url, auth=auth, timeout=30) as registry:
        assert registry.get("/v2/acme/private/tags/list").json()["tags"] == ["v1"]
        upload = registry.post("/v2/acme/private/blobs/uploads/")
        assert upload.status_code in (401, 403)


def test_a_code_is_single_use_and_its_reuse_revokes_the_tokens(server: Server) -> None:
    app = register(server, "single-use")
    code, verifier = grant(server, app)
    first = exchange(server, app, code, verifier)
    assert first.status_code == 200, first.text
    token = first.json()["access_token"]
    with api(server, token) as client:
        assert client.get("/api/v1/repositories/acme/private").status_code == 200
    oauth_error(exchange(server, app, code, verifier), "invalid_grant")
    # A replayed code means someone else holds it: what it bought is revoked.
    with api(server, token) as client:
        assert client.get("/api/v1/repositories/acme/private").status_code == 401
    with application(server) as client:
        refreshed = client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
            auth=app.auth(),
        )
    oauth_error(refreshed, "invalid_grant")
    assert any(e["metadata"].get("reason") == "authorization code reused" for e in audit(server, "oauth.revoke"))


def test_the_code_is_bound_to_verifier_redirect_uri_client_and_time(server: Server) -> None:
    app = register(server, "bound", uris=[REDIRECT, "https://client.example/other"])
    other = register(server, "other-client")
    code, verifier = grant(server, app)
    oauth_error(exchange(server, app, code, "x" * 43), "invalid_grant")  # a wrong verifier
    oauth_error(exchange(server, app, code, verifier[:-1]), "invalid_grant")
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    with application(server) as client:
        oauth_error(client.post("/oauth/token", data=form, auth=app.auth()), "invalid_grant")  # no redirect_uri
        oauth_error(
            client.post("/oauth/token", data={**form, "redirect_uri": "https://client.example/other"}, auth=app.auth()),
            "invalid_grant",
        )
    # Another client, even with the right verifier, cannot redeem it.
    oauth_error(exchange(server, other, code, verifier), "invalid_grant")
    # None of that used the code up: the rightful client still can.
    assert exchange(server, app, code, verifier).status_code == 200
    # An expired code is refused.
    late, late_verifier = grant(server, app)
    time.sleep(CODE_SECONDS + 0.5)
    oauth_error(exchange(server, app, late, late_verifier), "invalid_grant")


def test_authorize_refusals(server: Server) -> None:
    app = register(server, "refusals", ["repo:read"])
    _, challenge = pkce()
    with browser(server) as client:
        log_in(client)
        # An unknown client or an unregistered redirect URI: an error page, never a redirect.
        for params in (
            authorize_params(app, challenge, client_id="nope"),
            authorize_params(app, challenge, redirect_uri="https://evil.example/callback"),
            authorize_params(app, challenge, redirect_uri=REDIRECT + "/more"),
            {k: v for k, v in authorize_params(app, challenge).items() if k != "client_id"},
            {k: v for k, v in authorize_params(app, challenge).items() if k != "redirect_uri"},
        ):
            response = client.get("/oauth/authorize", params=params)
            assert response.status_code == 400, response.text
            assert "location" not in response.headers
            assert response.headers["content-type"].startswith("text/html")
            assert "evil.example" not in response.text
        # Other errors go back to the application, with its state.
        for extra, error in (
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"code_challenge": "too-short"}, "invalid_request"),
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"scope": "repo:write"}, "invalid_scope"),
            ({"scope": "repo:nonsense"}, "invalid_scope"),
        ):
            response = client.get("/oauth/authorize", params=authorize_params(app, challenge, **extra))
            assert response.status_code == 302, (extra, response.text)
            query = parse_qs(urlsplit(response.headers["location"]).query)
            assert query["error"] == [error], extra
            assert query["state"] == ["xyz-state"]
            assert "code" not in query
        params = authorize_params(app, challenge)
        del params["code_challenge"]
        query = parse_qs(urlsplit(client.get("/oauth/authorize", params=params).headers["location"]).query)
        assert query["error"] == ["invalid_request"]
        # The decision needs the session's CSRF token; denying sends the user back with an error.
        fields = hidden_fields(client.get("/oauth/authorize", params=authorize_params(app, challenge)).text)
        for token in ("", "wrong"):
            forged = client.post("/oauth/authorize", data={**fields, "csrf_token": token, "decision": "allow"})
            assert forged.status_code == 403
            assert "location" not in forged.headers
        denied = client.post("/oauth/authorize", data={**fields, "decision": "deny"})
        assert denied.status_code == 303
        query = parse_qs(urlsplit(denied.headers["location"]).query)
        assert query["error"] == ["access_denied"]
        assert "code" not in query
    # Without a session, a decision is refused (no code).
    with browser(server) as anonymous:
        response = anonymous.post("/oauth/authorize", data={**fields, "decision": "allow"})
        assert response.status_code == 401
        assert "location" not in response.headers


def test_the_login_form_checks_its_csrf_cookie_and_the_password(server: Server) -> None:
    app = register(server, "login-form")
    _, challenge = pkce()
    query = urlencode(authorize_params(app, challenge))
    with browser(server, "192.0.2.77") as client:
        fields = hidden_fields(client.get("/oauth/login", params={"next": query}).text)
        wrong = client.post("/oauth/login", data={**fields, "username": "alice", "password": "wrong-one"})
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
        assert "dockyard_session" not in client.cookies
    with browser(server, "192.0.2.77") as other_site:
        # A form posted from elsewhere lacks the login form's cookie.
        forged = other_site.post("/oauth/login", data={**fields, "username": "alice", "password": PASSWORD})
        assert forged.status_code == 403
        assert "dockyard_session" not in other_site.cookies
    failures = [e for e in audit(server, "login.failure") if e["ip"] == "192.0.2.77"]
    assert [e["metadata"]["endpoint"] for e in failures] == ["session"]


# -- tokens ------------------------------------------------------------------------------------


def test_refresh_tokens_rotate_and_a_reused_one_ends_the_grant(server: Server) -> None:
    app = register(server, "refresher")
    first = tokens(server, app, "repo:read user:read")
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    with application(server) as client:
        narrowed = client.post("/oauth/token", data={**form, "scope": "user:read"}, auth=app.auth())
        assert narrowed.status_code == 200, narrowed.text
        second = narrowed.json()
        assert second["scope"] == "user:read"
        assert second["refresh_token"] != first["refresh_token"]
        widened = client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"], "scope": "repo:write"},
            auth=app.auth(),
        )
        oauth_error(widened, "invalid_scope")
        # The replaced refresh token presented again: the whole grant ends.
        oauth_error(client.post("/oauth/token", data=form, auth=app.auth()), "invalid_grant")
    with api(server, second["access_token"]) as client:
        assert client.get("/api/v1/user").status_code == 401
    with api(server, first["access_token"]) as client:
        # The first access token was not replaced by the refresh, but the grant ended with the reuse.
        assert client.get("/api/v1/repositories/acme/private").status_code == 401


def test_client_credentials_act_for_the_organization_only(server: Server) -> None:
    app = register(server, "robotic", ["repo:read", "repo:create", "org:admin", "user:read"])
    with application(server) as client:
        response = client.post(
            "/oauth/token", data={"grant_type": "client_credentials", "scope": "repo:read"}, auth=app.auth()
        )
        assert response.status_code == 200, response.text
        issued = response.json()
        assert "refresh_token" not in issued
        assert issued["scope"] == "repo:read"
        oauth_error(
            client.post(
                "/oauth/token", data={"grant_type": "client_credentials", "scope": "user:read"}, auth=app.auth()
            ),
            "invalid_scope",
        )
        oauth_error(
            client.post(
                "/oauth/token", data={"grant_type": "client_credentials", "scope": "repo:write"}, auth=app.auth()
            ),
            "invalid_scope",
        )
        creator = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "repo:read repo:create"},
            auth=app.auth(),
        ).json()
    with api(server, issued["access_token"]) as client:
        assert client.get("/api/v1/repositories/acme/private").status_code == 200
        assert client.get("/api/v1/repositories/other/secret").status_code == 403
        # Listings and search show the organization's private repositories, not other ones.
        listed = [item["name"] for item in client.get("/api/v1/repositories", params={"limit": 500}).json()["items"]]
        assert "acme/private" in listed
        assert "other/secret" not in listed
        assert client.get("/api/v1/repositories", params={"namespace": "other"}).json()["items"] == []
        found = client.get("/api/v1/search", params={"q": "private", "kind": "repository"}).json()["items"]
        assert "acme/private" in [hit["name"] for hit in found]
        assert client.get("/api/v1/search", params={"q": "secret", "kind": "repository"}).json()["items"] == []
        assert client.post("/api/v1/repositories", json={"name": "acme/x"}).json()["code"] == "INSUFFICIENT_SCOPE"
        assert client.get("/api/v1/user").status_code == 403  # it is not a user
    with api(server, creator["access_token"]) as client:
        assert client.post("/api/v1/repositories", json={"name": "acme/by-the-app"}).status_code == 201
        assert client.post("/api/v1/repositories", json={"name": "other/by-the-app"}).status_code == 403
    entry = next(e for e in audit(server, "repository.create") if e["repository"] == "acme/by-the-app")
    assert entry["performer"] == app.client_id
    assert entry["performer_kind"] == "oauth-app"
    assert entry["via_app"] == app.client_id
    assert entry["ip"] == APP_IP


def test_a_secret_reset_voids_the_old_secret(server: Server) -> None:
    app = register(server, "resettable")
    form = {"grant_type": "client_credentials", "scope": "repo:read"}
    with server.client(auth=("alice", PASSWORD)) as alice:
        response = alice.post(f"{APPS}/{app.client_id}/secret")
    assert response.status_code == 200, response.text
    new = App(app.client_id, response.json()["client_secret"])
    assert new.secret != app.secret
    with application(server) as client:
        old = client.post("/oauth/token", data=form, auth=app.auth())
        oauth_error(old, "invalid_client", 401)
        assert old.headers["www-authenticate"].startswith("Basic")
        assert client.post("/oauth/token", data=form, auth=new.auth()).status_code == 200
        # Credentials in the form work as well as in the header.
        in_form = client.post("/oauth/token", data={**form, "client_id": new.client_id, "client_secret": new.secret})
        assert in_form.status_code == 200
    assert any(e["metadata"]["client_id"] == app.client_id for e in audit(server, "oauth.app.secret"))


def test_revocation_endpoint(server: Server) -> None:
    app = register(server, "revoker")
    other = register(server, "bystander")
    issued = tokens(server, app, "repo:read")
    with application(server) as client:
        # Another application cannot revoke it (and learns nothing: 200 all the same).
        assert (
            client.post("/oauth/revoke", data={"token": issued["access_token"]}, auth=other.auth()).status_code == 200
        )
        with api(server, issued["access_token"]) as caller:
            assert caller.get("/api/v1/repositories/acme/private").status_code == 200
        response = client.post("/oauth/revoke", data={"token": issued["access_token"]}, auth=app.auth())
        assert response.status_code == 200
        with api(server, issued["access_token"]) as caller:
            assert caller.get("/api/v1/repositories/acme/private").status_code == 401
        # Revoking the refresh token ends what was issued with it.
        more = tokens(server, app, "repo:read")
        client.post(
            "/oauth/revoke",
            data={"token": more["refresh_token"], "token_type_hint": "refresh_token"},
            auth=app.auth(),
        )
        with api(server, more["access_token"]) as caller:
            assert caller.get("/api/v1/repositories/acme/private").status_code == 401
        assert client.post("/oauth/revoke", data={"token": "dyo_unknown"}, auth=app.auth()).status_code == 200
        oauth_error(client.post("/oauth/revoke", data={}, auth=app.auth()), "invalid_request")
    revocations = [e for e in audit(server, "oauth.revoke") if e["metadata"]["client_id"] == app.client_id]
    assert len(revocations) == 2
    assert all(e["performer"] == "alice" and e["via_app"] == app.client_id for e in revocations)


def test_users_list_and_revoke_their_authorizations(server: Server) -> None:
    app = register(server, "authorized", ["repo:read", "user:read"])
    issued = tokens(server, app, "repo:read")
    tokens(server, app, "user:read")
    with server.client(auth=("alice", PASSWORD)) as alice:
        listing = alice.get("/api/v1/user/authorizations").json()["items"]
        mine = next(item for item in listing if item["client_id"] == app.client_id)
        assert mine["application"] == "authorized"
        assert mine["organization"] == "acme"
        assert mine["scopes"] == ["repo:read", "user:read"]  # everything granted, over both consents
        response = alice.delete(f"/api/v1/user/authorizations/{app.client_id}")
        assert response.status_code == 204
        assert all(
            item["client_id"] != app.client_id for item in alice.get("/api/v1/user/authorizations").json()["items"]
        )
        assert alice.delete(f"/api/v1/user/authorizations/{app.client_id}").status_code == 404
    with api(server, issued["access_token"]) as client:
        assert client.get("/api/v1/repositories/acme/private").status_code == 401
    with server.client(auth=("bob", PASSWORD)) as bob:
        assert all(
            item["client_id"] != app.client_id for item in bob.get("/api/v1/user/authorizations").json()["items"]
        )
    entry = next(e for e in audit(server, "oauth.revoke") if e["metadata"].get("reason") == "authorization revoked")
    assert entry["performer"] == "alice"
    assert entry["metadata"]["client_id"] == app.client_id


def test_a_revoked_token_also_ends_registry_tokens_bought_with_it(server: Server) -> None:
    app = register(server, "registry-user")
    issued = tokens(server, app, "repo:read")
    with httpx.Client(base_url=server.url, auth=("$oauthtoken", issued["access_token"]), timeout=30) as client:
        answer = client.get("/v2/auth", params={"scope": "repository:acme/private:pull,push"})
    assert answer.status_code == 200, answer.text
    jwt = answer.json()["token"]
    headers = {"Authorization": f"Bearer {jwt}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as registry:
        assert registry.get("/v2/acme/private/tags/list").status_code == 200
        assert registry.post("/v2/acme/private/blobs/uploads/").status_code == 401  # pull only: repo:read
        with application(server) as client:
            client.post("/oauth/revoke", data={"token": issued["access_token"]}, auth=app.auth())
        assert registry.get("/v2/acme/private/tags/list").status_code == 401


def test_token_endpoint_errors_follow_rfc_6749(server: Server) -> None:
    app = register(server, "errors")
    with application(server) as client:
        oauth_error(
            client.post("/oauth/token", data={"grant_type": "password"}, auth=app.auth()), "unsupported_grant_type"
        )
        oauth_error(client.post("/oauth/token", data={}, auth=app.auth()), "invalid_request")
        oauth_error(
            client.post("/oauth/token", content=b'{"grant_type":"client_credentials"}', auth=app.auth()),
            "invalid_request",
        )
        oauth_error(
            client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, "dys_wrong")),
            "invalid_client",
            401,
        )
        oauth_error(client.post("/oauth/token", data={"grant_type": "client_credentials"}), "invalid_client", 401)
        oauth_error(
            client.post(
                "/oauth/token",
                data={"grant_type": "authorization_code", "code": "dyg_nothing", "code_verifier": "v" * 43},
                auth=app.auth(),
            ),
            "invalid_grant",
        )


# -- managing applications ---------------------------------------------------------------------


def test_application_management(server: Server) -> None:
    with server.client(auth=("alice", PASSWORD)) as alice, server.client(auth=("bob", PASSWORD)) as bob:
        created = alice.post(APPS, json={"name": "managed", "redirect_uris": ["http://127.0.0.1:8765/cb"]})
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        client_id = created.json()["client_id"]
        assert created.headers["location"].endswith(f"/applications/{client_id}")
        assert len(created.json()["scopes"]) == 8  # default: every scope
        assert alice.post(APPS, json={"name": "managed", "redirect_uris": [REDIRECT]}).status_code == 409
        for uris in (["http://app.example/cb"], ["https://app.example/cb#frag"], ["not a uri"], []):
            response = alice.post(APPS, json={"name": "bad-uri", "redirect_uris": uris})
            assert response.status_code in (400, 422), (uris, response.text)
        one = alice.get(f"{APPS}/{client_id}").json()
        assert "client_secret" not in one
        assert one["organization"] == "acme"
        changed = alice.patch(
            f"{APPS}/{client_id}",
            json={"name": "renamed", "redirect_uris": [REDIRECT], "description": "new", "scopes": ["repo:read"]},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["name"] == "renamed"
        assert changed.json()["scopes"] == ["repo:read"]
        assert alice.patch(f"{APPS}/{client_id}", json={"description": None}).json()["description"] is None
        names = [item["name"] for item in alice.get(APPS, params={"limit": 500}).json()["items"]]
        assert "renamed" in names
        assert names == sorted(names)
        # Only the organization's administrators see or change its applications.
        assert bob.get(APPS).status_code == 403
        assert bob.get(f"{APPS}/{client_id}").status_code == 403
        assert bob.delete(f"{APPS}/{client_id}").status_code == 403
        assert alice.get("/api/v1/organizations/other/applications").status_code == 403
        # A user namespace owns no applications.
        assert (
            alice.post(
                "/api/v1/organizations/alice/applications", json={"name": "x", "redirect_uris": [REDIRECT]}
            ).status_code
            == 400
        )
        assert alice.delete(f"{APPS}/{client_id}").status_code == 204
        assert alice.get(f"{APPS}/{client_id}").status_code == 404
        assert alice.delete(f"{APPS}/{client_id}").status_code == 404
    kinds = {e["kind"] for e in audit(server, "oauth.app") if e["metadata"].get("client_id") == client_id}
    assert kinds == {"oauth.app.create", "oauth.app.update", "oauth.app.delete"}


def test_a_deleted_application_loses_its_tokens(server: Server) -> None:
    app = register(server, "short-lived")
    issued = tokens(server, app, "repo:read")
    with server.client(auth=("alice", PASSWORD)) as alice:
        assert alice.delete(f"{APPS}/{app.client_id}").status_code == 204
    with api(server, issued["access_token"]) as client:
        assert client.get("/api/v1/repositories/acme/private").status_code == 401
    with application(server) as client:
        oauth_error(
            client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=app.auth()),
            "invalid_client",
            401,
        )
