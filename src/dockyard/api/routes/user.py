"""`/user`: the calling user."""

from __future__ import annotations

from fastapi import APIRouter

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.problems import documented
from dockyard.api.schemas import UserProfile
from dockyard.auth import Action, Resource
from dockyard.domain.access import scopes_text

router = APIRouter(tags=["user"], dependencies=SECURITY, responses=documented(401, 403, 429))


@router.get("/user", summary="The calling user's profile")
async def get_user(caller: CallerDep) -> UserProfile:
    """Needs a user's credentials (not a robot's) and, for a token, `user:read`."""
    principal = caller.principal
    await caller.allow(Action.USER_READ, Resource(account=principal.name))
    assert principal.name is not None
    account = await caller.services.accounts.user(principal.name)
    return UserProfile(
        name=account.name,
        email=account.email,
        superuser=principal.superuser,
        authenticated_via=principal.via,
        scopes=None if principal.scopes is None else scopes_text(principal.scopes).split(),
    )
