"""Who is calling and what they may do: the one authentication step of every API request and the
explicit authorization call every handler makes.

`caller` authenticates the request's credentials: an `Authorization` header (Bearer app, robot
or OAuth2 token; Basic), else the browser session cookie, else none (anonymous). A request
authenticated by the cookie that changes something (POST, PUT, PATCH, DELETE) must carry the
session's CSRF token in `X-CSRF-Token` (403 `CSRF_FAILED` otherwise); a request with an
`Authorization` header is never cookie-authenticated and needs none.

Handlers then call `await caller.allow(action, resource)`, which is `auth.authorize` — the one
decision function — with the services' policy. There is no decorator: a handler's first lines
say what it checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import APIKey, APIKeyIn, HTTPBase, HTTPBearer
from fastapi.security.base import SecurityBase

from dockyard.auth import Action, Principal, Resource, authorize
from dockyard.auth.origin import actor_of
from dockyard.domain.audit import Actor
from dockyard.domain.errors import CsrfFailed, FreshLoginRequired
from dockyard.services.context import Services
from dockyard.services.sessions import ActiveSession

#: The browser session cookie (HttpOnly, SameSite=Lax, Secure over https, Path=/).
SESSION_COOKIE = "dockyard_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    services: Services
    principal: Principal
    actor: Actor
    """Who the audit log records for the changes this request makes."""
    session: ActiveSession | None = None
    """The browser session the request was authenticated by, if it was."""

    async def allow(self, action: Action, resource: Resource) -> None:
        """Return when the caller may perform `action` on `resource`; raise (401/403) otherwise."""
        await authorize(self.services.policy, self.principal, action, resource)

    async def require_fresh_login(self) -> None:
        """Return when the caller may perform a sensitive operation (password change, token
        creation, deleting an organization); raise otherwise.

        Only browser sessions can be stale: a session user must have entered the password
        within `auth.sessions.fresh_login_seconds` (401 `FRESH_LOGIN_REQUIRED` otherwise; `POST
        /session/reauthenticate` renews it). Every other credential is presented afresh with each
        request, so it always passes.
        """
        if self.session is not None and not self.services.sessions.is_fresh(self.session):
            raise FreshLoginRequired(
                "this needs a recent login: enter your password again (POST /api/v1/session/reauthenticate)"
            )


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def client_ip(request: Request, services: Services) -> str:
    """The client's address, through the configured trusted proxies."""
    peer = request.client.host if request.client else None
    return services.proxies.client_ip(peer, request.headers.getlist("x-forwarded-for"))


async def session_of(request: Request, services: Services) -> ActiveSession | None:
    """The live browser session of the request's cookie, unless the request carries an
    `Authorization` header (then the header alone authenticates)."""
    if request.headers.get("authorization"):
        return None
    session_id = request.cookies.get(SESSION_COOKIE)
    return None if not session_id else await services.sessions.resume(session_id)


def check_csrf(request: Request, services: Services, session: ActiveSession) -> None:
    """Raise CsrfFailed when a change authenticated by the session lacks its CSRF token."""
    if request.method not in SAFE_METHODS and not services.sessions.csrf_matches(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise CsrfFailed(f"a change made with a session cookie needs the session's {CSRF_HEADER} header")


async def caller(request: Request) -> Caller:
    services = services_of(request)
    ip = client_ip(request, services)
    session = await session_of(request, services)
    if session is not None:
        check_csrf(request, services, session)
        principal = session.principal
    else:
        principal = await services.authenticator.authenticate_api(
            request.headers.get("authorization"), ip, user_agent=request.headers.get("user-agent")
        )
    return Caller(
        services=services,
        principal=principal,
        actor=actor_of(principal, ip, request.headers.get("user-agent")),
        session=session,
    )


class _Documented(SecurityBase):
    """A security scheme for the OpenAPI document only; `caller` does the authentication."""

    def __init__(self, model: HTTPBase | APIKey, name: str) -> None:
        self.model = model
        self.scheme_name = name

    async def __call__(self) -> None:
        return None


bearer_scheme = _Documented(
    HTTPBearer(
        description="An app token (`dya_…`, `dockyard token create`), a robot token (`dyr_…`) or an OAuth2 "
        "access token (`dyo_…`)."
    ),
    "bearer",
)
basic_scheme = _Documented(
    HTTPBase(
        scheme="basic",
        description="As on the registry: `user:password`, `$app:APP-TOKEN`, `NS+ROBOT:TOKEN`, "
        "or `user:ENCRYPTED-CLI-PASSWORD`.",
    ),
    "basic",
)

session_scheme = _Documented(
    APIKey(
        **{"in": APIKeyIn.cookie},
        name=SESSION_COOKIE,
        description="A browser session (`POST /session`); changes also need the `X-CSRF-Token` header.",
    ),
    "session",
)

#: The authenticated caller of a request (anonymous when no credentials were sent).
CallerDep = Annotated[Caller, Depends(caller)]
#: Router dependencies that document the accepted credentials in the OpenAPI document.
SECURITY = [Depends(bearer_scheme), Depends(basic_scheme), Depends(session_scheme)]
