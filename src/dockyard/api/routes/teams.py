"""`/organizations/{org}/teams`: an organization's teams, their roles and their members.

Reading needs membership of the organization (any team) or administration; changes need
administration (`namespace-admin`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.schemas_identity import MemberName, OrgName, Team, TeamCreate, TeamMember, TeamName, TeamUpdate
from dockyard.auth import Action, Resource

router = APIRouter(tags=["teams"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

BASE = "/organizations/{org}/teams"


class TeamPage(Page[Team]):
    """A page of teams, by name."""


class TeamMemberPage(Page[TeamMember]):
    """A page of a team's members, by name."""


@router.get(BASE, summary="List the organization's teams")
async def list_teams(caller: CallerDep, paging: PagingDep, org: OrgName) -> TeamPage:
    """Needs membership or administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_READ, Resource(namespace=org))
    after = paging.after_one("teams", str)
    rows = await caller.services.organizations.teams(org, after=after, limit=paging.fetch)
    return paging.page(TeamPage, rows, key=lambda team: (team.name,), item=Team.of)


@router.post(BASE, status_code=201, summary="Create a team", responses=documented(409))
async def create_team(caller: CallerDep, org: OrgName, body: TeamCreate, request: Request, response: Response) -> Team:
    """Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    team = await caller.services.organizations.create_team(
        org, body.name, role=body.role, description=body.description, actor=caller.actor
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{team.name}"
    return Team.of(team)


@router.get(f"{BASE}/{{team}}", summary="One team")
async def get_team(caller: CallerDep, org: OrgName, team: TeamName) -> Team:
    """Needs membership or administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_READ, Resource(namespace=org))
    return Team.of(await caller.services.organizations.team(org, team))


@router.patch(f"{BASE}/{{team}}", summary="Change a team's role or description", responses=documented(409))
async def update_team(caller: CallerDep, org: OrgName, team: TeamName, body: TeamUpdate) -> Team:
    """`"description": null` removes the description; the owners team keeps the admin role (409).
    Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    info = await caller.services.organizations.update_team(
        org,
        team,
        role=body.role,
        description=body.description,
        clear_description="description" in body.model_fields_set and body.description is None,
        actor=caller.actor,
    )
    return Team.of(info)


@router.delete(
    f"{BASE}/{{team}}",
    status_code=204,
    response_class=Response,
    summary="Delete a team",
    responses=documented(409),
)
async def delete_team(caller: CallerDep, org: OrgName, team: TeamName) -> Response:
    """Its memberships, repository permissions and default permissions go with it; the owners team
    cannot be deleted (409). Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.services.organizations.delete_team(org, team, actor=caller.actor)
    return Response(status_code=204)


@router.get(f"{BASE}/{{team}}/members", summary="List a team's members")
async def list_team_members(caller: CallerDep, paging: PagingDep, org: OrgName, team: TeamName) -> TeamMemberPage:
    """Needs membership or administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_READ, Resource(namespace=org))
    after = paging.after_one(f"team-members:{team}", str)
    rows = await caller.services.organizations.team_members(org, team, after=after, limit=paging.fetch)
    return paging.page(TeamMemberPage, rows, key=lambda member: (member.name,), item=TeamMember.of)


@router.put(f"{BASE}/{{team}}/members/{{member}}", summary="Add a member to a team")
async def add_team_member(caller: CallerDep, org: OrgName, team: TeamName, member: MemberName) -> TeamMember:
    """A user, or a robot of the organization; adding a member twice changes nothing. Needs
    administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    return TeamMember.of(await caller.services.organizations.add_team_member(org, team, member, actor=caller.actor))


@router.delete(
    f"{BASE}/{{team}}/members/{{member}}",
    status_code=204,
    response_class=Response,
    summary="Remove a member from a team",
    responses=documented(409),
)
async def remove_team_member(caller: CallerDep, org: OrgName, team: TeamName, member: MemberName) -> Response:
    """The owners team keeps at least one user (409 otherwise). Needs administration (`org:admin`)."""
    await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=org))
    await caller.services.organizations.remove_team_member(org, team, member, actor=caller.actor)
    return Response(status_code=204)
