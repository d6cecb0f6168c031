"""Robots: `/organizations/{org}/robots` (an organization's) and `/user/robots` (the calling
user's own namespace's). A robot logs in as `NS+NAME` with its token; the token is shown when the
robot is created or its token regenerated, never again.

Every operation needs administration of the namespace (`namespace-admin`): an organization's
admins, or the user for their own namespace.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, Caller, CallerDep
from dockyard.api.paging import Page, Paging, PagingDep
from dockyard.api.problems import documented
from dockyard.api.schemas_identity import OrgName, Robot, RobotCreate, RobotName, RobotWithToken
from dockyard.auth import Action, Resource
from dockyard.services.organizations import NamespaceKind

router = APIRouter(tags=["robots"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

ORG = "/organizations/{org}/robots"
USER = "/user/robots"


class RobotPage(Page[Robot]):
    """A page of robots, by name."""


async def _own_namespace(caller: Caller) -> str:
    """The calling user's namespace, once it may administer it."""
    name = caller.principal.name
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=name))
    assert name is not None
    return name


async def _list(caller: Caller, paging: Paging, namespace: str, kind: NamespaceKind) -> RobotPage:
    after = paging.after_one("robots", str)
    rows = await caller.services.organizations.robots(namespace, kind, after=after, limit=paging.fetch)
    return paging.page(RobotPage, rows, key=lambda robot: (robot.name,), item=Robot.of)


async def _create(
    caller: Caller, request: Request, response: Response, namespace: str, kind: NamespaceKind, body: RobotCreate
) -> RobotWithToken:
    robot, token = await caller.services.organizations.create_robot(namespace, kind, body.name, actor=caller.actor)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{robot.short_name}"
    return RobotWithToken.issued(robot, token)


# -- an organization's robots ------------------------------------------------------------------


@router.get(ORG, summary="List an organization's robots")
async def list_org_robots(caller: CallerDep, paging: PagingDep, org: OrgName) -> RobotPage:
    """Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return await _list(caller, paging, org, "org")


@router.post(ORG, status_code=201, summary="Create an organization's robot", responses=documented(409))
async def create_org_robot(
    caller: CallerDep, org: OrgName, body: RobotCreate, request: Request, response: Response
) -> RobotWithToken:
    """Answers the token, once. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return await _create(caller, request, response, org, "org", body)


@router.get(f"{ORG}/{{robot}}", summary="One robot of an organization")
async def get_org_robot(caller: CallerDep, org: OrgName, robot: RobotName) -> Robot:
    """Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return Robot.of(await caller.services.organizations.robot(org, "org", robot))


@router.post(f"{ORG}/{{robot}}/regenerate", summary="Give an organization's robot a new token")
async def regenerate_org_robot(caller: CallerDep, org: OrgName, robot: RobotName) -> RobotWithToken:
    """The old token, and registry tokens issued for it, stop working at once. Needs administration
    (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    info, token = await caller.services.organizations.regenerate_robot(org, "org", robot, actor=caller.actor)
    return RobotWithToken.issued(info, token)


@router.delete(f"{ORG}/{{robot}}", status_code=204, response_class=Response, summary="Delete an organization's robot")
async def delete_org_robot(caller: CallerDep, org: OrgName, robot: RobotName) -> Response:
    """Its access ends at once. Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.services.organizations.delete_robot(org, "org", robot, actor=caller.actor)
    return Response(status_code=204)


# -- the calling user's robots -----------------------------------------------------------------


@router.get(USER, summary="List the calling user's robots")
async def list_user_robots(caller: CallerDep, paging: PagingDep) -> RobotPage:
    """Robots of the user's own namespace. Needs a user and, for a token, `org:admin`."""
    namespace = await _own_namespace(caller)
    return await _list(caller, paging, namespace, "user")


@router.post(USER, status_code=201, summary="Create a robot of the calling user", responses=documented(409))
async def create_user_robot(
    caller: CallerDep, body: RobotCreate, request: Request, response: Response
) -> RobotWithToken:
    """Answers the token, once. Needs a user and, for a token, `org:admin`."""
    namespace = await _own_namespace(caller)
    return await _create(caller, request, response, namespace, "user", body)


@router.get(f"{USER}/{{robot}}", summary="One robot of the calling user")
async def get_user_robot(caller: CallerDep, robot: RobotName) -> Robot:
    """Needs a user and, for a token, `org:admin`."""
    namespace = await _own_namespace(caller)
    return Robot.of(await caller.services.organizations.robot(namespace, "user", robot))


@router.post(f"{USER}/{{robot}}/regenerate", summary="Give a robot of the calling user a new token")
async def regenerate_user_robot(caller: CallerDep, robot: RobotName) -> RobotWithToken:
    """The old token, and registry tokens issued for it, stop working at once. Needs a user and,
    for a token, `org:admin`."""
    namespace = await _own_namespace(caller)
    info, token = await caller.services.organizations.regenerate_robot(namespace, "user", robot, actor=caller.actor)
    return RobotWithToken.issued(info, token)


@router.delete(
    f"{USER}/{{robot}}", status_code=204, response_class=Response, summary="Delete a robot of the calling user"
)
async def delete_user_robot(caller: CallerDep, robot: RobotName) -> Response:
    """Its access ends at once. Needs a user and, for a token, `org:admin`."""
    namespace = await _own_namespace(caller)
    await caller.services.organizations.delete_robot(namespace, "user", robot, actor=caller.actor)
    return Response(status_code=204)
