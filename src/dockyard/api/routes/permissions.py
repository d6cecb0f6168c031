"""`/repositories/{repository}/-/permissions`: the roles users, robots and teams hold on a
repository. Every operation needs admin on the repository (`repo-admin`).

A subject is a user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM` (the team's slash stays as it
is in the path); robots and teams must be of the repository's namespace.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import DEFAULT_LIMIT, CursorParam, Limit, Page, decode_cursor, paginate
from dockyard.api.problems import documented
from dockyard.api.routes.params import RepositoryName
from dockyard.api.schemas_identity import Permission, PermissionSet, SubjectName
from dockyard.auth import Action, Resource

router = APIRouter(tags=["permissions"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

BASE = "/repositories/{repository:path}/-/permissions"


class PermissionPage(Page[Permission]):
    """A page of a repository's permissions, by subject."""


@router.get(BASE, summary="List who holds which role on a repository")
async def list_permissions(
    caller: CallerDep,
    request: Request,
    response: Response,
    repository: RepositoryName,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> PermissionPage:
    """Direct grants only (organization admins and namespace owners hold admin besides). Needs
    admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    listing = "permissions"
    after = decode_cursor(cursor, listing, (str,))
    rows = await caller.services.organizations.permissions(
        repository, after=after[0] if after else None, limit=limit + 1
    )
    page, link, next_cursor = paginate(
        request, response, rows, limit=limit, listing=listing, key=lambda grant: (grant.subject,)
    )
    return PermissionPage(items=[Permission.of(grant) for grant in page], next=link, next_cursor=next_cursor)


@router.put(f"{BASE}/{{subject:path}}", summary="Give a user, robot or team a role on a repository")
async def set_permission(
    caller: CallerDep, repository: RepositoryName, subject: SubjectName, body: PermissionSet
) -> Permission:
    """Replaces the role the subject held. Needs admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    grant = await caller.services.organizations.set_permission(repository, subject, body.role, actor=caller.actor)
    return Permission.of(grant)


@router.delete(f"{BASE}/{{subject:path}}", status_code=204, response_class=Response, summary="Take a role away")
async def remove_permission(caller: CallerDep, repository: RepositoryName, subject: SubjectName) -> Response:
    """Needs admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    await caller.services.organizations.remove_permission(repository, subject, actor=caller.actor)
    return Response(status_code=204)
