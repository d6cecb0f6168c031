"""The OAuth2 authorization-code flow with PKCE in a real browser (Debian's Chromium, headless,
driven by Playwright): Dockyard's login form and consent page, the redirects back to the
application, the token the application then gets — and the forgeries the consent page refuses.

Three parties, all on this machine, each on its own port:

    http://127.0.0.1:<port>    Dockyard
    http://localhost:<port>    the application: a page with a sign-in link, and its callback
    <host>:<port>              a forger's pages, on Dockyard's site (127.0.0.1) or another (localhost)

To a browser a port makes another origin but not another site; a host name makes another site. A
cookie marked SameSite=Lax (Dockyard's session) rides along with a form posted from the same site
and stays home when the form comes from another site.

The server is this module's own, not the shared `world`: a wrong password is part of the flow,
and failed logins count against the address (127.0.0.1) every test of the shared server uses.
"""

from __future__ import annotations

import contextlib
import html
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Response as BrowserResponse

from .support import PASSWORD, App, Server, authorize_params, oauth_error, pkce, register, running_server

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: What the application asks for (it may ask for more: repo:create).
SCOPE = "repo:read user:read"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Dockyard with user alice, owner of organization acme."""
    with running_server(tmp_path_factory.mktemp("oauth-browser")) as live:
        live.cli("user", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        live.cli("org", "create", "acme", "--owner", "alice")
        yield live


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Chromium (scripts/test-deps installs it); one that does not start fails the tests."""
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            pytest.fail(f"Chromium ({CHROMIUM}) did not start; scripts/test-deps installs it:\n{exc}")
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A tab in a fresh browser profile: no cookies, no session."""
    context = chromium.new_context()
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


class Site(ThreadingHTTPServer):
    """A tiny web site on 127.0.0.1: the pages a test `put`s, and a record of every request to
    /callback (the application's redirect URI)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SiteHandler)
        self.pages: dict[str, str] = {}
        self.callbacks: list[str] = []

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"

    def put(self, path: str, document: str, host: str = "localhost") -> str:
        """Serve `document` at `path`; its URL through `host`."""
        self.pages[path] = document
        return self.url(path, host)


class _SiteHandler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/callback":
            self.server.callbacks.append(self.path)
            document = "<!doctype html><title>Back at the application</title><p>Signed in.</p>"
        elif path in self.server.pages:
            document = self.server.pages[path]
        else:
            self.send_error(404)
            return
        body = document.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts what it needs from `Site.callbacks`."""


@contextlib.contextmanager
def serving() -> Iterator[Site]:
    site = Site()
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.shutdown()
        site.server_close()
        thread.join()


@pytest.fixture
def application() -> Iterator[Site]:
    with serving() as site:
        yield site


@pytest.fixture
def forger() -> Iterator[Site]:
    with serving() as site:
        yield site


def sign_in(page: Page, server: Server, application: Site, app: App, challenge: str, state: str) -> None:
    """Start the flow as a user does: on the application's page (another site than Dockyard's),
    follow its link to Dockyard's authorize endpoint, which asks for SCOPE."""
    params = authorize_params(app, challenge, redirect_uri=application.url("/callback"), scope=SCOPE, state=state)
    link = f"{server.url}/oauth/authorize?{urlencode(params)}"
    home = f'<!doctype html><title>Dashboard</title><a href="{html.escape(link)}">Sign in with Dockyard</a>'
    page.goto(application.put("/", home))
    page.get_by_role("link", name="Sign in with Dockyard").click()


def log_in(page: Page, user: str, password: str) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def back_at(page: Page, application: Site) -> dict[str, list[str]]:
    """Wait until the browser is back at the application's callback; the query it brought."""
    page.wait_for_url(re.compile(re.escape(application.url("/callback?"))))
    query = urlsplit(page.url).query
    assert application.callbacks[-1] == f"/callback?{query}"
    return parse_qs(query)


def consent_fields(page: Page) -> dict[str, str]:
    """The hidden fields of the consent form, CSRF token included."""
    fields: dict[str, str] = page.locator("form input[type=hidden]").evaluate_all(
        "inputs => Object.fromEntries(inputs.map(input => [input.name, input.value]))"
    )
    return fields


def auto_submitting(action: str, fields: dict[str, str]) -> str:
    """A forger's page: a form that posts itself to `action` as soon as it loads."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    return (
        f'<!doctype html><title>You won a prize</title><form method="post" action="{html.escape(action)}">'
        f"{inputs}</form><script>document.forms[0].submit()</script>"
    )


def forge(page: Page, server: Server, url: str) -> BrowserResponse:
    """Open a forger's page that posts a decision to Dockyard; Dockyard's answer to the post."""
    with page.expect_response(
        lambda response: response.request.method == "POST" and response.url == f"{server.url}/oauth/authorize"
    ) as answer:
        page.goto(url, wait_until="commit")
    return answer.value


def exchange(server: Server, app: App, code: str, verifier: str, redirect_uri: str) -> httpx.Response:
    """The application redeems a code at the token endpoint."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    with server.client() as client:
        return client.post("/oauth/token", data=form, auth=app.auth())


def authorized_apps(server: Server) -> list[str]:
    """The client ids alice has authorized (a consent is recorded with its code)."""
    with server.client(auth=("alice", PASSWORD)) as alice:
        response = alice.get("/api/v1/user/authorizations", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [item["client_id"] for item in response.json()["items"]]


def test_login_consent_and_redirect_give_the_application_a_working_token(
    server: Server, application: Site, page: Page
) -> None:
    callback = application.url("/callback")
    app = register(server, "browser-dashboard", ["repo:read", "repo:create", "user:read"], uris=[callback])
    heading = page.get_by_role("heading", level=1)

    # No browser session: the authorize request shows the login form; a wrong password keeps it.
    _, challenge = pkce()
    sign_in(page, server, application, app, challenge, "s1")
    expect(page).to_have_url(re.compile(re.escape(f"{server.url}/oauth/login?")))
    expect(heading).to_have_text("Log in")
    log_in(page, "alice", "not-the-password")
    expect(page.locator(".error")).to_have_text("Wrong user name or password.")
    expect(page).to_have_url(f"{server.url}/oauth/login")
    expect(heading).to_have_text("Log in")
    expect(page.get_by_label("Password")).to_be_empty()
    assert "dockyard_session" not in {cookie["name"] for cookie in page.context.cookies(server.url)}

    # The right one leads to the consent page: the application, its organization, the user, and
    # the scopes asked for (not every scope the application may ask for).
    log_in(page, "alice", PASSWORD)
    expect(heading).to_have_text("Authorize browser-dashboard")
    expect(page).to_have_url(re.compile(re.escape(f"{server.url}/oauth/authorize?")))
    consent = page.locator(".box")
    expect(consent).to_contain_text("browser-dashboard of the organization acme asks to act as alice")
    expect(consent.locator("li code")).to_have_text(["repo:read", "user:read"])
    expect(consent).to_contain_text(f"You will return to {callback}")

    # Deny: back at the application with access_denied and its state, no code.
    page.get_by_role("button", name="Deny").click()
    assert back_at(page, application) == {
        "error": ["access_denied"],
        "error_description": ["the user denied the request"],
        "state": ["s1"],
    }
    assert app.client_id not in authorized_apps(server)

    # Again, now with a session: straight to the consent page; Allow brings a code and the state.
    verifier, challenge = pkce()
    sign_in(page, server, application, app, challenge, "s2")
    expect(heading).to_have_text("Authorize browser-dashboard")
    page.get_by_role("button", name="Allow").click()
    query = back_at(page, application)
    assert sorted(query) == ["code", "state"]
    assert query["state"] == ["s2"]
    code = query["code"][0]
    assert code.startswith("dyg_")

    # The application redeems it with the PKCE verifier: a token that acts as alice, within the scopes.
    response = exchange(server, app, code, verifier, callback)
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["token_type"] == "Bearer"
    assert issued["scope"] == SCOPE
    with server.client(token=issued["access_token"]) as api:
        profile = api.get("/api/v1/user")
        assert profile.status_code == 200, profile.text
        assert profile.json()["name"] == "alice"
        assert profile.json()["authenticated_via"] == f"oauth:{app.client_id}"
        assert sorted(profile.json()["scopes"]) == SCOPE.split()
        refused = api.post("/api/v1/repositories", json={"name": "acme/by-the-app"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "INSUFFICIENT_SCOPE"

    # A fresh code with a verifier other than the one its challenge was made from: refused.
    _, challenge = pkce()
    sign_in(page, server, application, app, challenge, "s3")
    page.get_by_role("button", name="Allow").click()
    query = back_at(page, application)
    assert query["state"] == ["s3"]
    wrong_verifier, _ = pkce()
    oauth_error(exchange(server, app, query["code"][0], wrong_verifier, callback), "invalid_grant")


def test_a_forged_consent_yields_no_code(server: Server, application: Site, forger: Site, page: Page) -> None:
    callback = application.url("/callback")
    app = register(server, "browser-forged", SCOPE.split(), uris=[callback])
    verifier, challenge = pkce()
    sign_in(page, server, application, app, challenge, "mine")
    log_in(page, "alice", PASSWORD)
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("Authorize browser-forged")
    consent_url = page.url
    fields = consent_fields(page)
    assert fields["csrf_token"]
    decision = f"{server.url}/oauth/authorize"
    error = page.locator(".error")

    # The forger cannot frame the consent page to have the user click Allow in it (a page it can
    # frame, the application's, shows in the same document: the frames did load).
    frameable = application.url("/")
    framing = (
        "<!doctype html><title>You won a prize</title>"
        f'<iframe src="{html.escape(consent_url)}"></iframe><iframe src="{html.escape(frameable)}"></iframe>'
    )
    page.goto(forger.put("/frame", framing, host="127.0.0.1"))
    frames = page.locator("iframe")
    expect(frames.nth(1).content_frame.get_by_role("link", name="Sign in with Dockyard")).to_be_visible()
    expect(frames.nth(0).content_frame.get_by_role("button", name="Allow")).to_have_count(0)
    expect(frames.nth(0).content_frame.locator("form")).to_have_count(0)

    # A decision posted by a page of any other origin is refused before anything else: the
    # browser names where the form came from (Sec-Fetch-Site), which no page can forge. From
    # another site the session cookie does not even come along (SameSite=Lax); from another
    # origin of Dockyard's own site it does, and even the right CSRF token, as if it had leaked,
    # is of no use there.
    forgeries = {
        ("/cross-site", "localhost"): fields,
        ("/same-site", "127.0.0.1"): fields,
        ("/no-token", "127.0.0.1"): {name: value for name, value in fields.items() if name != "csrf_token"},
        ("/wrong-token", "127.0.0.1"): {**fields, "csrf_token": "a-guess"},
    }
    for (path, host), forged in forgeries.items():
        answer = forge(page, server, forger.put(path, auto_submitting(decision, {**forged, "decision": "allow"}), host))
        assert answer.status == 403, path
        expect(error).to_have_text("the form was posted from another site; decide on this page only")
        expect(heading).to_have_text("Authorization failed")

    # Nothing reached the application and nothing was granted.
    assert application.callbacks == []
    assert app.client_id not in authorized_apps(server)

    # The session lived through it all: the user's own Allow still gives a code that works.
    page.goto(consent_url)
    page.get_by_role("button", name="Allow").click()
    query = back_at(page, application)
    assert query["state"] == ["mine"]
    assert exchange(server, app, query["code"][0], verifier, callback).status_code == 200
    assert app.client_id in authorized_apps(server)
