"""`/session`: browser sessions — log in with a password, who am I, log out, re-authenticate.

The session id travels only in the `dockyard_session` cookie (HttpOnly, SameSite=Lax, Secure
over https). Changes made with the cookie need the session's CSRF token in `X-CSRF-Token`; a
request carrying an `Authorization` header is never authenticated by the cookie.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, SESSION_COOKIE, check_csrf, client_ip, services_of, session_of
from dockyard.api.problems import documented
from dockyard.api.schemas_auth import Reauthentication, Session, SessionLogin
from dockyard.auth.origin import actor_of
from dockyard.domain.errors import Unauthorized
from dockyard.services.context import Services
from dockyard.services.sessions import ActiveSession

router = APIRouter(tags=["session"], dependencies=SECURITY, responses=documented(400, 401, 403, 422, 429))


def is_secure(request: Request, services: Services) -> bool:
    """Whether the browser reaches Dockyard over https (the cookie is then `Secure`)."""
    return request.url.scheme == "https" or (services.base_url or "").startswith("https://")


def set_session_cookie(response: Response, request: Request, services: Services, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=services.sessions.lifetime_seconds,
        path="/",
        secure=is_secure(request, services),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, request: Request, services: Services) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=is_secure(request, services), httponly=True, samesite="lax")


async def _session_body(services: Services, session: ActiveSession) -> Session:
    name = session.principal.name
    assert name is not None
    account = await services.accounts.user(name)
    return Session.of(session, account.email, services.auth_settings.sessions.fresh_login_seconds)


async def _required_session(request: Request, services: Services) -> ActiveSession:
    session = await session_of(request, services)
    if session is None:
        raise Unauthorized("no browser session: log in with POST /api/v1/session")
    return session


@router.post("/session", status_code=201, summary="Log in (start a browser session)")
async def create_session(request: Request, response: Response, body: SessionLogin) -> Session:
    """Checks a user's own password (tokens and robots cannot log in here), with the same
    failed-login limit and audit entries as every login (`login` / `login.failure`, endpoint
    `session`). Sets the session cookie and answers the CSRF token; a previous session of the
    same browser ends."""
    services = services_of(request)
    session_id, session = await services.sessions.login(
        body.username,
        body.password,
        ip=client_ip(request, services),
        user_agent=request.headers.get("user-agent"),
        replaces=request.cookies.get(SESSION_COOKIE),
    )
    set_session_cookie(response, request, services, session_id)
    response.headers["Cache-Control"] = "no-store"
    return await _session_body(services, session)


@router.get("/session", summary="The current browser session")
async def get_session(request: Request, response: Response) -> Session:
    """The session's user and CSRF token. 401 without a live session cookie (or with an
    `Authorization` header: such requests are never cookie-authenticated)."""
    services = services_of(request)
    session = await _required_session(request, services)
    response.headers["Cache-Control"] = "no-store"
    return await _session_body(services, session)


@router.delete("/session", status_code=204, response_class=Response, summary="Log out")
async def delete_session(request: Request) -> Response:
    """Ends the session on the server (audited as `logout`) and clears the cookie. Needs the
    CSRF token; without a session there is nothing to end (204 as well). A request with an
    `Authorization` header is not about the cookie: it changes nothing."""
    services = services_of(request)
    response = Response(status_code=204)
    if request.headers.get("authorization"):
        return response
    session = await session_of(request, services)
    if session is not None:
        check_csrf(request, services, session)
        actor = actor_of(session.principal, client_ip(request, services), request.headers.get("user-agent"))
        await services.sessions.logout(session, actor=actor)
    clear_session_cookie(response, request, services)
    return response


@router.post("/session/reauthenticate", summary="Enter the password again (fresh login)")
async def reauthenticate(request: Request, response: Response, body: Reauthentication) -> Session:
    """Sensitive operations (password change, token creation, deleting an organization, OAuth2
    application secrets) answer 401 `FRESH_LOGIN_REQUIRED` when the session's password entry is
    older than `auth.sessions.fresh_login_seconds`; this renews it. Needs the session and its CSRF
    token; a wrong password counts as a failed login."""
    services = services_of(request)
    session = await _required_session(request, services)
    check_csrf(request, services, session)
    renewed = await services.sessions.reauthenticate(
        session, body.password, ip=client_ip(request, services), user_agent=request.headers.get("user-agent")
    )
    response.headers["Cache-Control"] = "no-store"
    return await _session_body(services, renewed)
