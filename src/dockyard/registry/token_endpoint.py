"""`/v2/auth`: the Docker registry token endpoint (GET with Basic, POST with the OAuth2 form).

A token carries only the actions the principal really holds on each requested repository: the
others are dropped, not refused (clients then get 401/DENIED on the refused request itself).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from dockyard.auth import ANONYMOUS, Action, Principal
from dockyard.auth.authenticate import decode_basic
from dockyard.domain.errors import DockyardError, InvalidRequest, NameInvalid, Unauthorized
from dockyard.domain.names import validate_repository_name
from dockyard.registry.context import client_ip, service_name
from dockyard.registry.errors import error_response
from dockyard.services.context import Services

_MAX_FORM = 64 * 1024
_REPOSITORY_ACTIONS = frozenset({Action.PULL.value, Action.PUSH.value, Action.DELETE.value})


async def token_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        if request.method == "POST":
            return await _oauth2(request, services)
        return await _docker_get(request, services)
    except DockyardError as error:
        headers = {"WWW-Authenticate": 'Basic realm="Dockyard"'} if isinstance(error, Unauthorized) else {}
        return error_response(error, headers)


def _check_service(requested: str | None, service: str) -> None:
    if requested and requested != service:
        raise InvalidRequest(f"this registry is service {service!r}, not {requested!r}")


async def _docker_get(request: Request, services: Services) -> Response:
    service = service_name(request, services)
    params = request.query_params
    _check_service(params.get("service"), service)
    principal = ANONYMOUS
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("the token endpoint takes Basic credentials")
        username, secret = decode_basic(value)
        principal = await services.authenticator.login(
            username,
            secret,
            client_ip(request, services),
            user_agent=request.headers.get("user-agent"),
            endpoint="token",
            record_success=True,
        )
    access = await _access(services, principal, params.getlist("scope"))
    issued = await services.tokens.issue(principal, service, access)
    body: dict[str, Any] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": _rfc3339(issued.issued_at),
    }
    if params.get("offline_token") == "true" and not principal.anonymous:
        body["refresh_token"] = (await services.tokens.issue(principal, service, [], refresh=True)).token
    return _json(body)


async def _oauth2(request: Request, services: Services) -> Response:
    service = service_name(request, services)
    fields = await _form(request)
    _check_service(fields.get("service"), service)
    grant = fields.get("grant_type")
    if grant == "password":
        principal = await services.authenticator.login(
            fields.get("username", ""),
            fields.get("password", ""),
            client_ip(request, services),
            user_agent=request.headers.get("user-agent"),
            endpoint="token",
            record_success=True,
        )
    elif grant == "refresh_token":
        principal = await services.tokens.verify(fields.get("refresh_token", ""), service, refresh=True)
        await services.authenticator.check_live(principal)
    else:
        raise InvalidRequest("grant_type must be password or refresh_token")
    scopes = fields.get("scope", "").split()
    access = await _access(services, principal, scopes)
    issued = await services.tokens.issue(principal, service, access)
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "issued_at": _rfc3339(issued.issued_at),
        "scope": " ".join(scopes),
    }
    offline = fields.get("access_type") == "offline" or fields.get("offline_token") == "true"
    if grant == "password" and offline:
        body["refresh_token"] = (await services.tokens.issue(principal, service, [], refresh=True)).token
    return _json(body)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded OAuth2 form (small; bounded)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the token endpoint takes an application/x-www-form-urlencoded form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise InvalidRequest("form too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("form is not UTF-8") from None
    return dict(pairs)


async def _access(services: Services, principal: Principal, scopes: list[str]) -> list[dict[str, Any]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        for item in scope.split():
            kind, name, actions = _parse_scope(item)
            if kind == "registry":
                if name == "catalog":
                    granted.setdefault((kind, name), set()).add("*")
                continue
            if kind != "repository":
                continue
            wanted = set(actions.split(",")) if actions else set()
            if "*" in wanted:
                wanted = set(_REPOSITORY_ACTIONS)
            held = {action.value for action in await services.policy.actions(principal, name)}
            granted.setdefault((kind, name), set()).update(wanted & held)
    return [{"type": kind, "name": name, "actions": sorted(actions)} for (kind, name), actions in granted.items()]


def _parse_scope(item: str) -> tuple[str, str, str]:
    kind, _, rest = item.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        raise InvalidRequest(f"invalid scope {item!r}")
    kind = kind.split("(", 1)[0]
    if kind == "repository":
        try:
            validate_repository_name(name)
        except NameInvalid as exc:
            raise InvalidRequest(f"invalid scope {item!r}: {exc.message}") from None
    return kind, name, actions


def _rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), 200, media_type="application/json", headers={"Cache-Control": "no-store"})
