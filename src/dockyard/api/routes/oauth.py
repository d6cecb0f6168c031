"""OAuth2 applications of organizations (`/organizations/{org}/applications`) and the calling
user's authorized applications (`/user/authorizations`).

Managing an organization's applications needs its administration (`namespace-admin`; `org:admin`
for a token); the changes that create, show or can redirect credentials (create, change, delete,
reset the secret) also need a fresh login from a browser session. The flows themselves
(`/oauth/authorize`, `/oauth/token`, `/oauth/revoke`) live outside `/api/v1`: see
`dockyard.api.oauth_endpoints`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, Caller, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.schemas_auth import (
    Application,
    ApplicationCreate,
    ApplicationUpdate,
    ApplicationWithSecret,
    Authorization,
    ClientIdPath,
    OrgPath,
)
from dockyard.auth import Action, Resource

router = APIRouter(tags=["oauth"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

APPS = "/organizations/{org}/applications"
APP = APPS + "/{client_id}"


class ApplicationPage(Page[Application]):
    """A page of an organization's OAuth2 applications, by name."""


class AuthorizationPage(Page[Authorization]):
    """A page of the applications the user authorized, oldest authorization first."""


async def _admin(caller: Caller, org: str, *, sensitive: bool = False) -> None:
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    if sensitive:
        await caller.require_fresh_login()


@router.get(APPS, summary="List an organization's OAuth2 applications")
async def list_applications(caller: CallerDep, org: OrgPath, paging: PagingDep) -> ApplicationPage:
    """Needs administration of the organization (`org:admin` for a token)."""
    await _admin(caller, org)
    after = paging.after_one("applications", str)
    rows = await caller.services.oauth.apps(org, after=after, limit=paging.fetch)
    return paging.page(ApplicationPage, rows, key=lambda a: (a.name,), item=Application.of)


@router.post(APPS, status_code=201, summary="Register an OAuth2 application", responses=documented(409))
async def create_application(
    caller: CallerDep, org: OrgPath, body: ApplicationCreate, request: Request, response: Response
) -> ApplicationWithSecret:
    """Answers the client id and the client secret — the secret only now. Needs administration of
    the organization (`org:admin` for a token) and, from a browser session, a fresh login."""
    await _admin(caller, org, sensitive=True)
    app, secret = await caller.services.oauth.create_app(
        org,
        body.name,
        redirect_uris=body.redirect_uris,
        description=body.description,
        scopes=None if body.scopes is None else list(body.scopes),
        actor=caller.actor,
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{app.client_id}"
    response.headers["Cache-Control"] = "no-store"
    return ApplicationWithSecret.with_secret(app, secret)


@router.get(APP, summary="One OAuth2 application")
async def get_application(caller: CallerDep, org: OrgPath, client_id: ClientIdPath) -> Application:
    """Needs administration of the organization (`org:admin` for a token)."""
    await _admin(caller, org)
    return Application.of(await caller.services.oauth.app(org, client_id))


@router.patch(APP, summary="Change an OAuth2 application", responses=documented(409))
async def update_application(
    caller: CallerDep, org: OrgPath, client_id: ClientIdPath, body: ApplicationUpdate
) -> Application:
    """Name, redirect URIs, description (`null` removes it) and the scopes it may ask for (tokens
    issued already keep theirs). Needs administration of the organization (`org:admin` for a
    token) and, from a browser session, a fresh login."""
    await _admin(caller, org, sensitive=True)
    changes = body.model_dump(include=body.model_fields_set)
    for field in ("name", "redirect_uris", "scopes"):
        if field in changes and changes[field] is None:
            del changes[field]
    app = await caller.services.oauth.update_app(org, client_id, changes, actor=caller.actor)
    return Application.of(app)


@router.delete(APP, status_code=204, response_class=Response, summary="Delete an OAuth2 application")
async def delete_application(caller: CallerDep, org: OrgPath, client_id: ClientIdPath) -> Response:
    """Its tokens, codes and users' authorizations go with it. Needs administration of the
    organization (`org:admin` for a token) and, from a browser session, a fresh login."""
    await _admin(caller, org, sensitive=True)
    await caller.services.oauth.delete_app(org, client_id, actor=caller.actor)
    return Response(status_code=204)


@router.post(APP + "/secret", summary="Reset an OAuth2 application's client secret")
async def reset_application_secret(
    caller: CallerDep, org: OrgPath, client_id: ClientIdPath, response: Response
) -> ApplicationWithSecret:
    """A new client secret, shown only now; the old one stops working at once (tokens issued
    already stay valid). Needs administration of the organization (`org:admin` for a token) and,
    from a browser session, a fresh login."""
    await _admin(caller, org, sensitive=True)
    app, secret = await caller.services.oauth.reset_secret(org, client_id, actor=caller.actor)
    response.headers["Cache-Control"] = "no-store"
    return ApplicationWithSecret.with_secret(app, secret)


@router.get("/user/authorizations", summary="The OAuth2 applications the calling user authorized")
async def list_authorizations(caller: CallerDep, paging: PagingDep) -> AuthorizationPage:
    """Needs a user (`user:read` for a token)."""
    principal = caller.principal
    await caller.allow(Action.USER_READ, Resource(account=principal.name))
    assert principal.account_id is not None
    after = paging.after_one("authorizations", int)
    rows = await caller.services.oauth.authorizations(principal.account_id, after=after, limit=paging.fetch)
    return paging.page(AuthorizationPage, rows, key=lambda r: (r.id,), item=Authorization.of)


@router.delete(
    "/user/authorizations/{client_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an application's authorization",
)
async def revoke_authorization(caller: CallerDep, client_id: ClientIdPath) -> Response:
    """Every token the application holds for the user stops working at once (audited as
    `oauth.revoke`). Needs a user (`user:admin` for a token)."""
    principal = caller.principal
    await caller.allow(Action.USER_ADMIN, Resource(account=principal.name))
    assert principal.account_id is not None
    await caller.services.oauth.revoke_authorization(principal.account_id, client_id, actor=caller.actor)
    return Response(status_code=204)
