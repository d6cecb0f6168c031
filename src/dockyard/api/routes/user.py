"""`/user`: the calling user — profile, password, app tokens, encrypted CLI password, stars.

Every operation acts on the caller's own account: `user-read` (`user:read`) to look,
`user-admin` (`user:admin`) to change. Creating credentials (app tokens, the CLI password) and
changing the password also need a fresh login (browser sessions re-enter the password).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from dockyard.api.context import SECURITY, Caller, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.routes.params import RepositoryName
from dockyard.api.schemas import UserProfile
from dockyard.api.schemas_user import (
    AppToken,
    AppTokenCreate,
    AppTokenCreated,
    CliPassword,
    PasswordChange,
    StarredRepository,
)
from dockyard.auth import Action, Resource
from dockyard.auth.authorize import acts_as_superuser
from dockyard.domain.access import parse_scopes, scopes_text

router = APIRouter(tags=["user"], dependencies=SECURITY, responses=documented(401, 403, 422, 429))

TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The token's id.")]
#: Answers holding a secret are never stored by caches.
NO_STORE = {"Cache-Control": "no-store"}


class AppTokenPage(Page[AppToken]):
    """A page of the caller's app tokens (not revoked), by id."""


class StarredPage(Page[StarredRepository]):
    """A page of the caller's starred repositories it may read, by name."""


async def _own_account(caller: Caller, action: Action) -> str:
    """The caller's user name, once it may perform `action` on its own account."""
    await caller.allow(action, Resource(account=caller.principal.name))
    name = caller.principal.name
    assert name is not None
    return name


@router.get("/user", summary="The calling user's profile")
async def get_user(caller: CallerDep) -> UserProfile:
    """Needs a user's credentials (not a robot's) and, for a token, `user:read`."""
    principal = caller.principal
    name = await _own_account(caller, Action.USER_READ)
    account = await caller.services.accounts.user(name)
    return UserProfile(
        name=account.name,
        email=account.email,
        superuser=principal.superuser,
        authenticated_via=principal.via,
        scopes=None if principal.scopes is None else scopes_text(principal.scopes).split(),
    )


@router.put(
    "/user/password",
    status_code=204,
    response_class=Response,
    summary="Change the caller's password",
    responses=documented(400),
)
async def change_password(caller: CallerDep, body: PasswordChange) -> Response:
    """Needs the current password, a fresh login and `user:admin`. Every credential issued with
    the old password ends at once (logins, registry tokens, the encrypted CLI password); app
    tokens stay valid. Wrong current passwords count like failed logins (429 after too many)."""
    name = await _own_account(caller, Action.USER_ADMIN)
    await caller.require_fresh_login()
    await caller.services.users.change_password(name, body.current_password, body.new_password, actor=caller.actor)
    return Response(status_code=204)


@router.get("/user/cli-password", summary="The caller's encrypted CLI password")
async def get_cli_password(caller: CallerDep, response: Response) -> CliPassword:
    """A secret for `docker login` instead of the password, valid until the password changes.
    It is a credential: needs `user:admin` and a fresh login."""
    name = await _own_account(caller, Action.USER_ADMIN)
    await caller.require_fresh_login()
    response.headers.update(NO_STORE)
    return CliPassword(username=name, password=await caller.services.users.cli_password(name))


# -- app tokens --------------------------------------------------------------------------------


@router.get("/user/tokens", summary="List the caller's app tokens", responses=documented(400))
async def list_tokens(caller: CallerDep, paging: PagingDep) -> AppTokenPage:
    """Tokens not revoked (expired ones included), without their secrets. Needs `user:read`."""
    name = await _own_account(caller, Action.USER_READ)
    after = paging.after_one("user-tokens", int)
    rows = await caller.services.users.app_tokens(name, after=after, limit=paging.fetch)
    return paging.page(AppTokenPage, rows, key=lambda t: (t.id,), item=AppToken.of)


@router.post(
    "/user/tokens",
    status_code=201,
    summary="Create an app token",
    responses=documented(400),
)
async def create_token(
    caller: CallerDep, body: AppTokenCreate, request: Request, response: Response
) -> AppTokenCreated:
    """The answer holds the token, shown this once. Needs `user:admin` and a fresh login; a
    scoped token cannot create a token with scopes beyond its own (403 `INSUFFICIENT_SCOPE`)."""
    name = await _own_account(caller, Action.USER_ADMIN)
    await caller.require_fresh_login()
    created = await caller.services.users.create_app_token(
        name,
        body.title,
        expires_in=body.expires_in,
        expires_at=None if body.expires_at is None else int(body.expires_at.timestamp() * 1000),
        scopes=None if body.scopes is None else parse_scopes(body.scopes),
        cap=caller.principal.scopes,
        actor=caller.actor,
    )
    response.headers.update(NO_STORE)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.token.id}"
    return AppTokenCreated.of_new(created.token, created.secret)


@router.get("/user/tokens/{token_id}", summary="One of the caller's app tokens", responses=documented(404))
async def get_token(caller: CallerDep, token_id: TokenId) -> AppToken:
    """Needs `user:read`."""
    name = await _own_account(caller, Action.USER_READ)
    return AppToken.of(await caller.services.users.app_token(name, token_id))


@router.delete(
    "/user/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an app token",
    responses=documented(404),
)
async def revoke_token(caller: CallerDep, token_id: TokenId) -> Response:
    """The token stops working at once. Needs `user:admin`."""
    name = await _own_account(caller, Action.USER_ADMIN)
    await caller.services.users.revoke_app_token(name, token_id, actor=caller.actor)
    return Response(status_code=204)


# -- starred repositories ----------------------------------------------------------------------


@router.get("/user/starred", summary="List the caller's starred repositories", responses=documented(400))
async def list_starred(caller: CallerDep, paging: PagingDep) -> StarredPage:
    """Only those the caller may still read. Needs `user:read`."""
    await _own_account(caller, Action.USER_READ)
    account_id = caller.principal.account_id
    assert account_id is not None
    after = paging.after_one("user-starred", str)
    rows = await caller.services.users.starred(
        account_id, everything=acts_as_superuser(caller.principal), after=after, limit=paging.fetch
    )
    return paging.page(StarredPage, rows, key=lambda star: (star.repository.name,), item=StarredRepository.of_star)


@router.put(
    "/user/starred/{repository:path}",
    status_code=204,
    response_class=Response,
    summary="Star a repository",
    responses=documented(400, 404),
)
async def star_repository(caller: CallerDep, repository: RepositoryName) -> Response:
    """Starring twice changes nothing. Needs `user:admin` and read access to the repository
    (`repo:read`)."""
    await _own_account(caller, Action.USER_ADMIN)
    await caller.allow(Action.PULL, Resource(repository=repository))
    account_id = caller.principal.account_id
    assert account_id is not None
    await caller.services.users.star(account_id, repository, actor=caller.actor)
    return Response(status_code=204)


@router.delete(
    "/user/starred/{repository:path}",
    status_code=204,
    response_class=Response,
    summary="Unstar a repository",
    responses=documented(400, 404),
)
async def unstar_repository(caller: CallerDep, repository: RepositoryName) -> Response:
    """404 when it is not starred. Needs `user:admin`."""
    await _own_account(caller, Action.USER_ADMIN)
    account_id = caller.principal.account_id
    assert account_id is not None
    await caller.services.users.unstar(account_id, repository, actor=caller.actor)
    return Response(status_code=204)
