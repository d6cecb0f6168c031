"""The OAuth2 endpoints (RFC 6749, PKCE RFC 7636, revocation RFC 7009), mounted at `/oauth`.

    GET  /oauth/authorize   the consent page for a logged-in user (else a redirect to the login form)
    POST /oauth/authorize   the user's decision (with the session's CSRF token): a redirect to the
                            application's registered URI with `code` and `state`, or `error`
    GET  /oauth/login       a minimal login form; POST checks the password, starts a browser
                            session (as `POST /api/v1/session`) and returns to the authorize page
    POST /oauth/token       grant_type authorization_code, refresh_token, client_credentials
    POST /oauth/revoke      end an access or refresh token

They sit outside `/api/v1` because they speak OAuth2, not problem JSON: forms in, HTML pages or
RFC 6749 §5.2 errors out. An unknown client or an unregistered redirect URI gets an error page,
never a redirect. Pages load nothing from elsewhere and may not be framed.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from dockyard.api.context import SESSION_COOKIE, client_ip, session_of
from dockyard.api.routes.registry import SCOPE_DESCRIPTIONS
from dockyard.api.routes.session import is_secure, set_session_cookie
from dockyard.auth.origin import actor_of
from dockyard.domain.access import Scope, scopes_text
from dockyard.domain.errors import DockyardError, InvalidRequest, TooManyRequests, Unauthorized
from dockyard.services.context import Services
from dockyard.services.oauth import AuthorizationRequest, Client, IssuedTokens, OAuthApp, OAuthError
from dockyard.services.sessions import ActiveSession

PREFIX = "/oauth"
_MAX_FORM = 16 * 1024
_MAX_NEXT = 4096
_LOGIN_CSRF_COOKIE = "dockyard_login_csrf"
#: The authorization request's parameters, carried from the consent page to the decision.
_REQUEST_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_JSON_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}
h1{font-size:1.3rem}.box{border:1px solid #d0d7de;border-radius:6px;padding:1rem 1.25rem}
li{margin:.35rem 0}code{background:#f3f4f6;padding:0 .25rem}.muted{color:#57606a;font-size:.9rem}
label{display:block;margin:.6rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.4rem}
button{margin:1rem .5rem 0 0;padding:.45rem 1.1rem}.error{color:#cf222e}
"""


def build_oauth_endpoints(services: Services) -> Starlette:
    """The `/oauth` application (mounted by the composition root)."""
    app = Starlette(
        routes=[
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
        ]
    )
    app.state.services = services
    return app


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (bounded; a repeated field is an error)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise OAuthError("invalid_request", "the form is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form is not UTF-8 form data") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise OAuthError("invalid_request", f"{name} is given twice")
        fields[name] = value
    return fields


# -- pages -------------------------------------------------------------------------------------


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · Dockyard</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})})


def _error_page(message: str, status: int = 400) -> HTMLResponse:
    return _page(
        "Authorization failed",
        f'<p class="error">{html.escape(message)}</p>'
        '<p class="muted">Nothing was granted. Go back to the application and start again.</p>',
        status,
    )


def _hidden(fields: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )


def _consent_page(request: Request, checked: AuthorizationRequest, session: ActiveSession) -> HTMLResponse:
    app = checked.app
    fields = {name: value for name in _REQUEST_FIELDS if (value := request.query_params.get(name)) is not None}
    fields["redirect_uri"] = checked.redirect_uri
    fields["csrf_token"] = session.csrf_token
    order = list(Scope)
    scopes = "".join(
        f"<li><code>{html.escape(scope.value)}</code> {html.escape(SCOPE_DESCRIPTIONS[scope])}</li>"
        for scope in sorted(checked.scopes, key=order.index)
    )
    description = f'<p class="muted">{html.escape(app.description)}</p>' if app.description else ""
    body = (
        f'<div class="box"><p><strong>{html.escape(app.name)}</strong> of the organization '
        f"<strong>{html.escape(app.namespace)}</strong> asks to act as "
        f"<strong>{html.escape(session.principal.name or '')}</strong>, with your rights, limited to:</p>"
        f"<ul>{scopes}</ul>{description}"
        f'<p class="muted">You will return to {html.escape(checked.redirect_uri)}</p>'
        f'<form method="post" action="{html.escape(_root(request))}/authorize">{_hidden(fields)}'
        '<button type="submit" name="decision" value="allow">Allow</button>'
        '<button type="submit" name="decision" value="deny">Deny</button></form></div>'
        '<p class="muted">You can revoke it at any time (DELETE /api/v1/user/authorizations/CLIENT_ID).</p>'
    )
    return _page(f"Authorize {app.name}", body)


def _login_page(request: Request, next_query: str, *, error: str | None = None, status: int = 200) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    body = (
        f'<div class="box">{message}<p>Log in to Dockyard to continue.</p>'
        f'<form method="post" action="{html.escape(_root(request))}/login">'
        f"{_hidden({'next': next_query, 'csrf_token': csrf})}"
        '<label for="username">User name</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" required>'
        '<button type="submit">Log in</button></form></div>'
    )
    response = _page("Log in", body, status)
    response.set_cookie(
        _LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path=_root(request) or "/",
        secure=is_secure(request, _services(request)),
        httponly=True,
        samesite="strict",
    )
    return response


def _redirect(uri: str, params: dict[str, str | None], status: int = 302) -> RedirectResponse:
    query = urlencode({name: value for name, value in params.items() if value is not None})
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{separator}{query}", status_code=status, headers={"Cache-Control": "no-store"})


# -- authorize ---------------------------------------------------------------------------------


def _posted_from_elsewhere(request: Request) -> bool:
    """Whether the browser says the form came from a page of another origin.

    Browsers send `Sec-Fetch-Site` and pages cannot forge it: `same-origin` for Dockyard's own
    pages, `none` for a user's own navigation. Checked before the CSRF token, so even a leaked
    token is of no use to a sibling site; clients that send no such header rely on the token.
    """
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


async def authorize(request: Request) -> Response:
    services = _services(request)
    try:
        params = dict(request.query_params) if request.method == "GET" else await _form(request)
    except OAuthError as exc:
        return _error_page(exc.message)
    try:
        app, redirect_uri = await services.oauth.client_and_redirect(
            params.get("client_id"), params.get("redirect_uri")
        )
    except InvalidRequest as exc:
        # Never redirect to a URI the client did not register: show the error here.
        return _error_page(exc.message)
    state = params.get("state")
    try:
        checked = services.oauth.check_request(app, redirect_uri, params)
    except OAuthError as exc:
        return _redirect(redirect_uri, {"error": exc.error, "error_description": exc.message, "state": state})
    session = await session_of(request, services)
    if request.method == "GET":
        if session is None:
            return RedirectResponse(
                f"{_root(request)}/login?{urlencode({'next': request.url.query})}",
                status_code=302,
                headers={"Cache-Control": "no-store"},
            )
        return _consent_page(request, checked, session)
    if _posted_from_elsewhere(request):
        return _error_page("the form was posted from another site; decide on this page only", 403)
    if session is None:
        return _error_page("you are not logged in here (or your session ended); start again from the application", 401)
    if not services.sessions.csrf_matches(session, params.get("csrf_token")):
        return _error_page("the form did not come from this session (CSRF token missing or wrong)", 403)
    if params.get("decision") != "allow":
        return _redirect(
            checked.redirect_uri,
            {"error": "access_denied", "error_description": "the user denied the request", "state": state},
            303,
        )
    actor = actor_of(session.principal, client_ip(request, services), request.headers.get("user-agent"))
    code = await services.oauth.approve(checked, session.principal, actor=actor)
    return _redirect(checked.redirect_uri, {"code": code, "state": checked.state}, 303)


async def login(request: Request) -> Response:
    services = _services(request)
    if request.method == "GET":
        next_query = request.query_params.get("next", "")
        return _login_page(request, next_query[:_MAX_NEXT])
    try:
        fields = await _form(request)
    except OAuthError as exc:
        return _error_page(exc.message)
    next_query = fields.get("next", "")[:_MAX_NEXT]
    if _posted_from_elsewhere(request):
        return _login_page(request, next_query, error="The form was posted from another site; log in here.", status=403)
    expected = request.cookies.get(_LOGIN_CSRF_COOKIE)
    presented = fields.get("csrf_token", "")
    if not expected or not secrets.compare_digest(expected.encode(), presented.encode()):
        return _login_page(request, next_query, error="The form expired; log in again.", status=403)
    try:
        session_id, _ = await services.sessions.login(
            fields.get("username", "")[:300],
            fields.get("password", "")[:1024],
            ip=client_ip(request, services),
            user_agent=request.headers.get("user-agent"),
            replaces=request.cookies.get(SESSION_COOKIE),
        )
    except TooManyRequests:
        return _login_page(request, next_query, error="Too many failed logins; try again later.", status=429)
    except (Unauthorized, InvalidRequest):
        return _login_page(request, next_query, error="Wrong user name or password.", status=401)
    response = RedirectResponse(
        f"{_root(request)}/authorize?{next_query}", status_code=303, headers={"Cache-Control": "no-store"}
    )
    set_session_cookie(response, request, services, session_id)
    response.delete_cookie(_LOGIN_CSRF_COOKIE, path=_root(request) or "/")
    return response


# -- token and revocation ----------------------------------------------------------------------


def _oauth_error(exc: OAuthError) -> Response:
    """An RFC 6749 §5.2 error; a failed client authentication is 401 with a Basic challenge."""
    headers = dict(_JSON_HEADERS)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="dockyard"'
    return Response(
        json.dumps({"error": exc.error, "error_description": exc.message}),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def _client_credentials(request: Request, fields: dict[str, str]) -> tuple[str | None, str | None]:
    """(client_id, client_secret) from the Authorization header (RFC 6749 §2.3.1, each part
    form-encoded) or the form; both at once is an error."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_client", "client authentication is Basic", status=401)
        if "client_secret" in fields:
            raise OAuthError("invalid_request", "client credentials given twice (header and form)")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
        form_id = fields.get("client_id")
        client_id = unquote_plus(client_id)
        if form_id is not None and form_id != client_id:
            raise OAuthError("invalid_request", "client_id differs from the authenticated client")
        return client_id, unquote_plus(secret)
    return fields.get("client_id"), fields.get("client_secret")


def _token_body(issued: IssuedTokens) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": scopes_text(issued.scopes),
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return body


async def _authenticated_client(request: Request, services: Services) -> tuple[dict[str, str], OAuthApp]:
    fields = await _form(request)
    client_id, secret = _client_credentials(request, fields)
    return fields, await services.oauth.authenticate_client(client_id, secret)


async def _grant(services: Services, app: OAuthApp, fields: dict[str, str], client: Client) -> IssuedTokens:
    grant = fields.get("grant_type")
    if grant == "authorization_code":
        return await services.oauth.exchange_code(
            app, fields.get("code"), fields.get("redirect_uri"), fields.get("code_verifier"), client
        )
    if grant == "refresh_token":
        return await services.oauth.refresh(app, fields.get("refresh_token"), fields.get("scope"), client)
    if grant == "client_credentials":
        return await services.oauth.client_credentials(app, fields.get("scope"), client)
    if not grant:
        raise OAuthError("invalid_request", "grant_type is required")
    raise OAuthError("unsupported_grant_type", "grant_type is authorization_code, refresh_token or client_credentials")


async def token(request: Request) -> Response:
    services = _services(request)
    client = Client(client_ip(request, services), request.headers.get("user-agent"))
    try:
        fields, app = await _authenticated_client(request, services)
        issued = await _grant(services, app, fields, client)
    except OAuthError as exc:
        return _oauth_error(exc)
    except DockyardError as exc:
        return _oauth_error(OAuthError("invalid_request", exc.message))
    return Response(json.dumps(_token_body(issued)), media_type="application/json", headers=_JSON_HEADERS)


async def _revoke(services: Services, app: OAuthApp, fields: dict[str, str], client: Client) -> None:
    if not fields.get("token"):
        raise OAuthError("invalid_request", "token is required")
    await services.oauth.revoke_token(app, fields["token"], client)


async def revoke(request: Request) -> Response:
    services = _services(request)
    client = Client(client_ip(request, services), request.headers.get("user-agent"))
    try:
        fields, app = await _authenticated_client(request, services)
        await _revoke(services, app, fields, client)
    except OAuthError as exc:
        return _oauth_error(exc)
    return Response(b"", status_code=200, headers=_JSON_HEADERS)
