"""`/repositories/{repository}/-/tags…` and `/-/immutability-rules`: tags, their history, restore,
expiry and immutability.

Sub-resources of a repository follow `/-/`: no repository name component can be `-`, so a path
never reads two ways.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.routes.params import RepositoryName, TagName
from dockyard.api.schemas import ImmutabilityRule, Tag, TagExpiry, TagHistoryEntry, TagRestore, TagTarget, TagUpdate
from dockyard.auth import Action, Resource

router = APIRouter(tags=["tags"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429))

BASE = "/repositories/{repository:path}/-"


class TagPage(Page[Tag]):
    """A page of tags, by name."""


class TagHistoryPage(Page[TagHistoryEntry]):
    """A page of a tag's history, newest first."""


class ImmutabilityRulePage(Page[ImmutabilityRule]):
    """A page of immutability rules, by pattern."""


@router.get(f"{BASE}/tags", summary="List live tags")
async def list_tags(caller: CallerDep, paging: PagingDep, repository: RepositoryName) -> TagPage:
    """Needs read access (`repo:read`)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    after = paging.after_one("tags", str)
    rows = await caller.services.repositories.tags(repository, after=after, limit=paging.fetch)
    return paging.page(TagPage, rows, key=lambda tag: (tag.name,), item=Tag.of)


@router.get(f"{BASE}/tags/{{tag}}", summary="One live tag")
async def get_tag(caller: CallerDep, repository: RepositoryName, tag: TagName) -> Tag:
    """Needs read access (`repo:read`)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.put(
    f"{BASE}/tags/{{tag}}",
    summary="Create a tag or move it to another manifest",
    responses={201: {"model": Tag, "description": "The tag was created."}},
)
async def put_tag(
    caller: CallerDep, response: Response, repository: RepositoryName, tag: TagName, body: TagTarget
) -> Tag:
    """Point the tag at a manifest already in the repository; its previous manifest stays in the
    tag's history. Refused (403) for an immutable tag. Needs write access (`repo:write`)."""
    await caller.allow(Action.PUSH, Resource(repository=repository))
    if await caller.services.tags.point(repository, tag, body.digest, actor=caller.actor):
        response.status_code = 201
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.delete(f"{BASE}/tags/{{tag}}", status_code=204, response_class=Response, summary="Delete a tag")
async def delete_tag(caller: CallerDep, repository: RepositoryName, tag: TagName) -> Response:
    """End the tag; it stays in its history and can be restored within the namespace's
    time-machine window. Refused (403) for an immutable tag. Needs write access (`repo:write`)."""
    await caller.allow(Action.DELETE, Resource(repository=repository))
    await caller.services.manifests.delete(repository, tag, actor=caller.actor)
    return Response(status_code=204)


@router.patch(f"{BASE}/tags/{{tag}}", summary="Pin or unpin a tag")
async def update_tag(caller: CallerDep, repository: RepositoryName, tag: TagName, body: TagUpdate) -> Tag:
    """Set the tag's own immutability flag. Needs admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    await caller.services.tags.set_immutable(repository, tag, body.immutable, actor=caller.actor)
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.get(f"{BASE}/tags/{{tag}}/history", summary="A tag's history, newest first")
async def tag_history(caller: CallerDep, paging: PagingDep, repository: RepositoryName, tag: TagName) -> TagHistoryPage:
    """Every manifest the tag pointed at, with when. Needs read access (`repo:read`)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    after = paging.after(f"history:{tag}", (int, int))
    rows = await caller.services.repositories.history(repository, tag, after=after, limit=paging.fetch)
    return paging.page(TagHistoryPage, rows, key=lambda row: (row.start_at, row.id), item=TagHistoryEntry.of)


@router.post(f"{BASE}/tags/{{tag}}/restore", summary="Point a tag back at an earlier manifest")
async def restore_tag(caller: CallerDep, repository: RepositoryName, tag: TagName, body: TagRestore) -> Tag:
    """Within the namespace's time-machine window; a manifest deleted by digest comes back. Needs
    write access (`repo:write`)."""
    await caller.allow(Action.PUSH, Resource(repository=repository))
    await caller.services.tags.restore(repository, tag, body.digest, actor=caller.actor)
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.put(f"{BASE}/tags/{{tag}}/expiry", summary="Set a tag's expiry")
async def set_tag_expiry(caller: CallerDep, repository: RepositoryName, tag: TagName, body: TagExpiry) -> Tag:
    """An expired tag leaves listings and pulls (its history stays). Needs write access (`repo:write`)."""
    await caller.allow(Action.PUSH, Resource(repository=repository))
    if body.expires_at is not None:
        await caller.services.tags.expire_at(
            repository, tag, int(body.expires_at.timestamp() * 1000), actor=caller.actor
        )
    else:
        await caller.services.tags.expire_in(repository, tag, body.expires_in, actor=caller.actor)
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.delete(f"{BASE}/tags/{{tag}}/expiry", summary="Clear a tag's expiry")
async def clear_tag_expiry(caller: CallerDep, repository: RepositoryName, tag: TagName) -> Tag:
    """Needs write access (`repo:write`)."""
    await caller.allow(Action.PUSH, Resource(repository=repository))
    await caller.services.tags.expire_in(repository, tag, None, actor=caller.actor)
    return Tag.of(await caller.services.repositories.tag(repository, tag))


@router.get(f"{BASE}/immutability-rules", summary="List immutability rules")
async def list_rules(caller: CallerDep, paging: PagingDep, repository: RepositoryName) -> ImmutabilityRulePage:
    """Tags matching a rule can be neither moved nor deleted. Needs read access (`repo:read`)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    after = paging.after_one("immutability-rules", str)
    rows = await caller.services.repositories.rules(repository, after=after, limit=paging.fetch)
    return paging.page(
        ImmutabilityRulePage,
        rows,
        key=lambda pattern: (pattern,),
        item=lambda pattern: ImmutabilityRule(pattern=pattern),
    )


@router.post(
    f"{BASE}/immutability-rules", status_code=201, summary="Add an immutability rule", responses=documented(409)
)
async def add_rule(caller: CallerDep, repository: RepositoryName, body: ImmutabilityRule) -> ImmutabilityRule:
    """Needs admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    await caller.services.tags.add_rule(repository, body.pattern, actor=caller.actor)
    return body


@router.delete(
    f"{BASE}/immutability-rules/{{pattern}}", status_code=204, response_class=Response, summary="Remove a rule"
)
async def remove_rule(
    caller: CallerDep,
    repository: RepositoryName,
    pattern: Annotated[str, Path(min_length=1, max_length=128, description="The rule's pattern, URL-encoded.")],
) -> Response:
    """Needs admin on the repository (`repo:admin`)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    await caller.services.tags.remove_rule(repository, pattern, actor=caller.actor)
    return Response(status_code=204)
