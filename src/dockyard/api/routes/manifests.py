"""`/repositories/{repository}/-/manifests/{digest}`: a manifest's make-up, and its referrers."""

from __future__ import annotations

from fastapi import APIRouter

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
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
    caller: CallerDep, paging: PagingDep, repository: RepositoryName, digest: DigestParam
) -> ReferrerPage:
    """Signatures, SBOMs and other artifacts whose subject is this manifest. Needs read access."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    after = paging.after_one("referrers", str)
    rows = await caller.services.repositories.referrers(repository, digest, after=after, limit=paging.fetch)
    return paging.page(ReferrerPage, rows, key=lambda item: (item.digest,), item=DescriptorModel.of)
