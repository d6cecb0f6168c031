"""`/users`: user administration by superusers (`superuser` action, `super:user` scope).

Every change is audited in its own transaction with the old and new values. A superuser cannot
disable itself or remove its own superuser flag (409 `CONFLICT`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.routes.user import NO_STORE
from dockyard.api.schemas_user import User, UserCreate, UserCreated, UserUpdate
from dockyard.auth import Action, Resource

router = APIRouter(tags=["users"], dependencies=SECURITY, responses=documented(400, 401, 403, 422, 429))

UserName = Annotated[
    str,
    Path(
        description="A user name.",
        max_length=255,
        pattern=r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$",
        examples=["alice"],
    ),
]


class UserPage(Page[User]):
    """A page of users, by name."""


@router.get("/users", summary="List users")
async def list_users(
    caller: CallerDep,
    paging: PagingDep,
    prefix: Annotated[str | None, Query(max_length=255, description="Only names starting with this.")] = None,
) -> UserPage:
    """User accounts (robots are listed with their namespaces). Needs `super:user`."""
    await caller.allow(Action.SUPERUSER, Resource())
    after = paging.after_one("users", str)
    rows = await caller.services.users.users(prefix=prefix, after=after, limit=paging.fetch)
    return paging.page(UserPage, rows, key=lambda user: (user.name,), item=User.of)


@router.post("/users", status_code=201, summary="Create a user", responses=documented(409))
async def create_user(caller: CallerDep, body: UserCreate, request: Request, response: Response) -> UserCreated:
    """Without a password, one is generated and returned once. The user owns the namespace of its
    name, so the name must be free among users and organizations. Needs `super:user`."""
    await caller.allow(Action.SUPERUSER, Resource())
    info, generated = await caller.services.users.create_user(
        body.name, email=body.email, password=body.password, superuser=body.superuser, actor=caller.actor
    )
    if generated is not None:
        response.headers.update(NO_STORE)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{info.name}"
    return UserCreated(**User.of(info).model_dump(), password=generated)


@router.get("/users/{name}", summary="One user", responses=documented(404))
async def get_user_account(caller: CallerDep, name: UserName) -> User:
    """Needs `super:user`."""
    await caller.allow(Action.SUPERUSER, Resource())
    return User.of(await caller.services.users.user(name))


@router.patch("/users/{name}", summary="Change a user", responses=documented(404, 409))
async def update_user(caller: CallerDep, name: UserName, body: UserUpdate) -> User:
    """Change the email address, enable or disable the account, set or remove the superuser flag,
    or reset the password. Disabling, a new password and removing the superuser flag end the
    user's current logins. Needs `super:user`."""
    await caller.allow(Action.SUPERUSER, Resource())
    info = await caller.services.users.update_user(
        name,
        email=body.email,
        clear_email="email" in body.model_fields_set and body.email is None,
        enabled=body.enabled,
        superuser=body.superuser,
        password=body.password,
        actor=caller.actor,
    )
    return User.of(info)
