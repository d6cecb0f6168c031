"""Per-request facts every handler shares: the caller, the client address, the token service."""

from __future__ import annotations

from starlette.requests import Request

from dockyard.auth import ANONYMOUS, AccessPolicy, Action, Principal, Resource, authorize
from dockyard.auth.origin import actor_of
from dockyard.domain.audit import Actor
from dockyard.services.context import Services


def client_ip(request: Request, services: Services) -> str:
    """The client's address: the peer's, or X-Forwarded-For's when the peer is a trusted proxy."""
    client = request.scope.get("client")  # request.client builds a named tuple on every access
    peer: str | None = client[0] if client else None
    if not services.proxies.networks:
        return peer or "unknown"
    ip: str | None = getattr(request.state, "client_ip", None)
    if ip is None:
        ip = services.proxies.client_ip(peer, request.headers.getlist("x-forwarded-for"))
        request.state.client_ip = ip
    return ip


def request_actor(request: Request, services: Services) -> Actor:
    """Who makes this request (as authenticated so far) and from where, for the audit log."""
    principal: Principal = getattr(request.state, "principal", None) or ANONYMOUS
    return actor_of(principal, client_ip(request, services), request.headers.get("user-agent"))


def service_name(request: Request, services: Services) -> str:
    """The token service (audience): configured, else the host the client addressed."""
    return services.auth_settings.service or request.headers.get("host") or "dockyard"


def realm(request: Request, services: Services) -> str:
    base = services.base_url or f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
    return base.rstrip("/") + "/v2/auth"


async def principal_of(request: Request, services: Services) -> Principal:
    """Authenticate once per request (the one authentication step)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await services.authenticator.authenticate(
            request.headers.get("authorization"),
            client_ip(request, services),
            service_name(request, services),
            user_agent=request.headers.get("user-agent"),
        )
        request.state.principal = principal
    return principal


def _scope(action: Action, repository: str | None) -> str:
    if repository is None:
        return "registry:catalog:*"
    actions = {Action.PULL: "pull", Action.PUSH: "pull,push", Action.DELETE: "delete"}.get(action, action.value)
    return f"repository:{repository}:{actions}"


async def allow(request: Request, services: Services, action: Action, repository: str | None) -> Principal:
    """Authenticate and authorize, remembering the scope for a 401 challenge."""
    request.state.scope = _scope(action, repository)
    principal = await principal_of(request, services)
    await authorize(services.policy, principal, action, Resource(repository))
    return principal


async def may(request: Request, services: Services, action: Action, repository: str) -> bool:
    policy: AccessPolicy = services.policy
    return await policy.may(await principal_of(request, services), action, Resource(repository))
