"""`/repositories/{repository}/-/permissions`: the roles users, robots and teams hold on a
repository. Every operation needs admin on the repository (`repo-admin`).

A subject is a user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM` (the team's slash stays as it
is in the path); robots and teams must be of the repository's namespace.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.routes.params import RepositoryName
from dockyard.api.schemas_identity import Permission, PermissionSet, SubjectName
from dockyard.auth import Action, Resource

router = APIRouter(tags=["permissions"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

BASE = "/repositories/{repository:path}/-/permissions"


class PermissionPage(Page[Permission]):
    """A page of a repository's permissions, by subject."""


@router.get(BASE, summary="List who holds which role on a repository")
async def list_permissions(caller: CallerDep, paging: PagingDep, repository: RepositoryName) -> PermissionPage:
    """Direct grants only (organization admins and namespace owners hold admin besides). Needs
    admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    after = paging.after_one("permissions", str)
    rows = await caller.services.organizations.permissions(repository, after=after, limit=paging.fetch)
    return paging.page(PermissionPage, rows, key=lambda grant: (grant.subject,), item=Permission.of)


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
