"""`/repositories/{repository}/-/manifests/{digest}`: a manifest's make-up, and its referrers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import DEFAULT_LIMIT, CursorParam, Limit, Page, decode_cursor, paginate
from dockyard.api.problems import documented
from dockyard.api.routes.params import DigestParam, RepositoryName
from dockyard.api.schemas import DescriptorModel, Manifest
from dockyard.auth import Action, Resource

router = APIRouter(tags=["manifests"], dependencies=SECURITY, responses=documented(400, 401, 403, 404, 422, 429, 503))

BASE = "/repositories/{repository:path}/-/manifests/{digest}"


class ReferrerPage(Page[DescriptorModel]):
    """A page of referrers, by digest."""


@router.get(BASE, summary="A manifest with its layers, sizes and labels")
async def get_manifest(caller: CallerDep, repository: RepositoryName, digest: DigestParam) -> Manifest:
    """Needs read access (`repo:read`)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    return Manifest.of(await caller.services.manifests.details(repository, digest))


@router.get(f"{BASE}/referrers", summary="Manifests that refer to this one")
async def list_referrers(
    caller: CallerDep,
    request: Request,
    response: Response,
    repository: RepositoryName,
    digest: DigestParam,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> ReferrerPage:
    """Signatures, SBOMs and other artifacts whose subject is this manifest. Needs read access."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    listing = "referrers"
    after = decode_cursor(cursor, listing, (str,))
    rows = await caller.services.repositories.referrers(
        repository, digest, after=after[0] if after else None, limit=limit + 1
    )
    page, link, next_cursor = paginate(
        request, response, rows, limit=limit, listing=listing, key=lambda item: (item.digest,)
    )
    return ReferrerPage(items=[DescriptorModel.of(item) for item in page], next=link, next_cursor=next_cursor)
