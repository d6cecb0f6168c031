"""`/organizations`: create, list, read, change and delete organizations; their members, default
permissions and quota.

Reading an organization and its members needs membership (any team) or administration;
everything else needs administration (`namespace-admin`); setting a quota needs a superuser.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, Caller, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.schemas_identity import (
    DefaultPermission,
    DefaultPermissionCreate,
    Member,
    MemberName,
    Organization,
    OrganizationCreate,
    OrganizationUpdate,
    OrgName,
    OrgToDelete,
    Quota,
    QuotaSet,
    RuleId,
)
from dockyard.auth import Action, Resource
from dockyard.auth.authorize import acts_as_superuser

router = APIRouter(tags=["organizations"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

BASE = "/organizations/{org}"


class OrganizationPage(Page[Organization]):
    """A page of organizations, by name."""


class MemberPage(Page[Member]):
    """A page of an organization's members, by name."""


class DefaultPermissionPage(Page[DefaultPermission]):
    """A page of default permission rules, oldest first."""


@router.get("/organizations", summary="List the organizations the caller belongs to")
async def list_organizations(caller: CallerDep, paging: PagingDep) -> OrganizationPage:
    """Those where the caller is in a team; superusers (with `super:user`) see every one. Needs
    an account and, for a token, `org:admin`."""
    await caller.allow(Action.NAMESPACE_READ, Resource())
    after = paging.after_one("organizations", str)
    rows = await caller.services.organizations.listing(
        viewer=caller.principal.account_id,
        everything=acts_as_superuser(caller.principal),
        after=after,
        limit=paging.fetch,
    )
    return paging.page(OrganizationPage, rows, key=lambda org: (org.name,), item=Organization.of)


@router.post("/organizations", status_code=201, summary="Create an organization", responses=documented(409))
async def create_organization(
    caller: CallerDep, body: OrganizationCreate, request: Request, response: Response
) -> Organization:
    """The calling user becomes the first member of its `owners` team. Needs a user (not a robot)
    and, for a token, `user:admin`."""
    principal = caller.principal
    await caller.allow(Action.USER_ADMIN, Resource(account=principal.name))
    assert principal.name is not None
    info = await caller.services.organizations.create(
        body.name, owner=principal.name, email=body.email, actor=caller.actor
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{info.name}"
    return Organization.of(info)


@router.get(BASE, summary="One organization")
async def get_organization(caller: CallerDep, org: OrgName) -> Organization:
    """Needs membership or administration (`org:admin` for a token)."""
    await caller.allow(Action.NAMESPACE_READ, Resource(namespace=org))
    return Organization.of(await caller.services.organizations.get(org))


@router.patch(BASE, summary="Change an organization")
async def update_organization(caller: CallerDep, org: OrgName, body: OrganizationUpdate) -> Organization:
    """Set or remove (`null`) its contact address. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return Organization.of(await caller.services.organizations.set_email(org, body.email, actor=caller.actor))


@router.delete(BASE, status_code=204, response_class=Response, summary="Delete an organization")
async def delete_organization(caller: CallerDep, org: OrgToDelete) -> Response:
    """The organization, its teams and robots disappear at once (the name is free again); its
    repositories are purged in the background. Needs administration (`org:admin`) and, in a
    browser session, a recent login."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.require_fresh_login()
    await caller.services.organizations.delete(org, actor=caller.actor)
    return Response(status_code=204)


# -- members -----------------------------------------------------------------------------------


@router.get(f"{BASE}/members", summary="List the organization's members")
async def list_members(caller: CallerDep, paging: PagingDep, org: OrgName) -> MemberPage:
    """Every user and robot in one of its teams, with those teams. Needs membership or
    administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_READ, Resource(namespace=org))
    after = paging.after_one("members", str)
    rows = await caller.services.organizations.members(org, after=after, limit=paging.fetch)
    return paging.page(MemberPage, rows, key=lambda member: (member.name,), item=Member.of)


@router.delete(
    f"{BASE}/members/{{member}}",
    status_code=204,
    response_class=Response,
    summary="Remove a member from every team",
    responses=documented(409),
)
async def remove_member(caller: CallerDep, org: OrgName, member: MemberName) -> Response:
    """The owners team keeps at least one user (409 otherwise). Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.services.organizations.remove_member(org, member, actor=caller.actor)
    return Response(status_code=204)


# -- default permissions -----------------------------------------------------------------------


@router.get(f"{BASE}/default-permissions", summary="List default permissions")
async def list_default_permissions(caller: CallerDep, paging: PagingDep, org: OrgName) -> DefaultPermissionPage:
    """What each new repository of the organization grants. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    after = paging.after_one("default-permissions", int)
    rows = await caller.services.organizations.default_permissions(org, after=after, limit=paging.fetch)
    return paging.page(DefaultPermissionPage, rows, key=lambda r: (r.id,), item=DefaultPermission.of)


@router.post(f"{BASE}/default-permissions", status_code=201, summary="Add a default permission")
async def add_default_permission(
    caller: CallerDep, org: OrgName, body: DefaultPermissionCreate, request: Request, response: Response
) -> DefaultPermission:
    """When `creator` (absent: anyone) creates a repository in the organization, `subject` (a user,
    or a robot or team of the organization) gets `role` on it. Replaces the rule for the same
    subject and creator. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    rule = await caller.services.organizations.add_default_permission(
        org, body.subject, body.role, body.creator, actor=caller.actor
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{rule.id}"
    return DefaultPermission.of(rule)


@router.delete(
    f"{BASE}/default-permissions/{{rule_id}}",
    status_code=204,
    response_class=Response,
    summary="Remove a default permission",
)
async def remove_default_permission(caller: CallerDep, org: OrgName, rule_id: RuleId) -> Response:
    """Repositories created before keep their grants. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.services.organizations.remove_default_permission(org, rule_id, actor=caller.actor)
    return Response(status_code=204)


# -- quota -------------------------------------------------------------------------------------


async def _quota(caller: Caller, org: str) -> Quota:
    await caller.services.organizations.get(org)
    report = await caller.services.quota.show(org)
    return Quota(
        namespace=report.namespace,
        limit=report.limit,
        warn_percent=report.warn_percent,
        reject_percent=report.reject_percent,
        warn_bytes=report.warn_bytes,
        reject_bytes=report.reject_bytes,
        used=report.used,
        items=report.items,
        pending_collection=report.pending_collection,
        state="over" if report.state == "over" else "warning" if report.state == "warning" else "ok",
    )


@router.get(f"{BASE}/quota", summary="The organization's quota and usage")
async def get_quota(caller: CallerDep, org: OrgName) -> Quota:
    """Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return await _quota(caller, org)


@router.put(f"{BASE}/quota", summary="Set the organization's quota")
async def set_quota(caller: CallerDep, org: OrgName, body: QuotaSet) -> Quota:
    """Pushes that would take the usage past the reject threshold are refused. Needs a superuser
    (`super:user`): an organization's administrators cannot raise their own limit."""
    await caller.allow(Action.SUPERUSER, Resource())
    await caller.services.organizations.get(org)
    await caller.services.quota.set(org, body.limit, body.warn_percent, body.reject_percent, actor=caller.actor)
    return await _quota(caller, org)


@router.delete(f"{BASE}/quota", status_code=204, response_class=Response, summary="Remove the organization's quota")
async def clear_quota(caller: CallerDep, org: OrgName) -> Response:
    """Usage is still counted. Needs a superuser (`super:user`)."""
    await caller.allow(Action.SUPERUSER, Resource())
    await caller.services.organizations.get(org)
    await caller.services.quota.clear(org, actor=caller.actor)
    return Response(status_code=204)
