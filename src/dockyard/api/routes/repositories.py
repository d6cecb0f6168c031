"""`/repositories`: list, create, get, update and delete repositories."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.routes.params import RepositoryName
from dockyard.api.schemas import Repository, RepositoryCreate, RepositoryUpdate, Visibility
from dockyard.auth import Action, Resource
from dockyard.auth.authorize import acts_as_superuser
from dockyard.domain.models import RepositorySort
from dockyard.domain.names import validate_repository_name

router = APIRouter(tags=["repositories"], dependencies=SECURITY, responses=documented(400, 401, 403, 422, 429))


class RepositoryPage(Page[Repository]):
    """A page of repositories."""


@router.get("/repositories", summary="List the repositories the caller may read")
async def list_repositories(
    caller: CallerDep,
    paging: PagingDep,
    namespace: Annotated[str | None, Query(max_length=255, description="Only this user or organization.")] = None,
    q: Annotated[str | None, Query(max_length=255, description="Only names containing this text.")] = None,
    visibility: Annotated[Visibility | None, Query(description="Only public or only private ones.")] = None,
    sort: Annotated[RepositorySort, Query(description="name or created; a leading - reverses.")] = "name",
) -> RepositoryPage:
    """Anonymous callers see public repositories; superusers (with `super:user`) see all. Needs
    `repo:read` for a token."""
    await caller.allow(Action.CATALOG, Resource())
    by_name = sort.endswith("name")
    after = paging.after(f"repositories:{sort}", (str,) if by_name else (int, int))
    rows = await caller.services.repositories.listing(
        viewer=caller.principal.account_id,
        everything=acts_as_superuser(caller.principal),
        organization=caller.principal.application_namespace,
        namespace=namespace,
        contains=q,
        public=None if visibility is None else visibility == "public",
        sort=sort,
        after=after,
        limit=paging.fetch,
    )
    return paging.page(
        RepositoryPage,
        rows,
        key=lambda info: (info.name,) if by_name else (info.created_at, info.id),
        item=Repository.of,
    )


@router.post("/repositories", status_code=201, summary="Create a repository", responses=documented(404, 409))
async def create_repository(
    caller: CallerDep, body: RepositoryCreate, request: Request, response: Response
) -> Repository:
    """Needs the right to create in the namespace (its owner, an org team creator or admin, a
    superuser) and, for a token, `repo:create`. In an organization the creator gets admin on it."""
    name = validate_repository_name(body.name)
    await caller.allow(Action.REPO_CREATE, Resource(repository=name))
    info = await caller.services.repositories.create(
        name,
        public=body.visibility == "public",
        description=body.description,
        creator=caller.principal.account_id,
        actor=caller.actor,
    )
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{info.name}"
    return Repository.of(info)


@router.get("/repositories/{repository:path}", summary="One repository", responses=documented(404))
async def get_repository(caller: CallerDep, repository: RepositoryName) -> Repository:
    """Needs read access (`repo:read` for a token)."""
    await caller.allow(Action.PULL, Resource(repository=repository))
    return Repository.of(await caller.services.repositories.get(repository))


@router.patch("/repositories/{repository:path}", summary="Change a repository", responses=documented(404))
async def update_repository(caller: CallerDep, repository: RepositoryName, body: RepositoryUpdate) -> Repository:
    """Change visibility and description; needs admin on it (`repo:admin` for a token)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    info = await caller.services.repositories.update(
        repository,
        public=None if body.visibility is None else body.visibility == "public",
        description=body.description,
        clear_description="description" in body.model_fields_set and body.description is None,
        actor=caller.actor,
    )
    return Repository.of(info)


@router.delete(
    "/repositories/{repository:path}",
    status_code=204,
    response_class=Response,
    summary="Delete a repository",
    responses=documented(404),
)
async def delete_repository(caller: CallerDep, repository: RepositoryName) -> Response:
    """The repository disappears at once (its name is free again) and a background job purges its
    contents. Needs admin on it (`repo:admin` for a token)."""
    await caller.allow(Action.REPO_ADMIN, Resource(repository=repository))
    await caller.services.repositories.delete(repository, actor=caller.actor)
    return Response(status_code=204)
