"""Who is calling and what they may do: the one authentication step of every API request and the
explicit authorization call every handler makes.

`caller` authenticates the request's credentials (Bearer app or robot token, Basic, or none);
handlers then call `await caller.allow(action, resource)`, which is `auth.authorize` — the one
decision function — with the services' policy. There is no decorator: a handler's first lines
say what it checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBase, HTTPBearer
from fastapi.security.base import SecurityBase

from dockyard.auth import Action, Principal, Resource, authorize
from dockyard.auth.origin import actor_of
from dockyard.domain.audit import Actor
from dockyard.services.context import Services


@dataclass(frozen=True, slots=True)
class Caller:
    services: Services
    principal: Principal
    actor: Actor
    """Who the audit log records for the changes this request makes."""

    async def allow(self, action: Action, resource: Resource) -> None:
        """Return when the caller may perform `action` on `resource`; raise (401/403) otherwise."""
        await authorize(self.services.policy, self.principal, action, resource)

    async def require_fresh_login(self) -> None:
        """Return when the caller may perform a sensitive operation (password change, token
        creation, deleting an organization); raise otherwise.

        Only browser sessions can be stale: a session user must have entered the password
        recently (the session layer decides). Every other credential is presented afresh with
        each request, so it always passes.
        """
        return None


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def client_ip(request: Request, services: Services) -> str:
    """The client's address, through the configured trusted proxies."""
    peer = request.client.host if request.client else None
    return services.proxies.client_ip(peer, request.headers.getlist("x-forwarded-for"))


async def caller(request: Request) -> Caller:
    services = services_of(request)
    ip = client_ip(request, services)
    principal = await services.authenticator.authenticate_api(request.headers.get("authorization"), ip)
    return Caller(
        services=services, principal=principal, actor=actor_of(principal, ip, request.headers.get("user-agent"))
    )


class _Documented(SecurityBase):
    """A security scheme for the OpenAPI document only; `caller` does the authentication."""

    def __init__(self, model: HTTPBase, name: str) -> None:
        self.model = model
        self.scheme_name = name

    async def __call__(self) -> None:
        return None


bearer_scheme = _Documented(
    HTTPBearer(description="An app token (`dya_…`, `dockyard token create`) or a robot token (`dyr_…`)."),
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

#: The authenticated caller of a request (anonymous when no credentials were sent).
CallerDep = Annotated[Caller, Depends(caller)]
#: Router dependencies that document the accepted credentials in the OpenAPI document.
SECURITY = [Depends(bearer_scheme), Depends(basic_scheme)]
