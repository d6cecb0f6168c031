"""`/registry`: what this registry is and supports (open to anonymous callers)."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import APIRouter

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import MAX_LIMIT
from dockyard.api.problems import documented
from dockyard.api.schemas import RegistryInfo, RegistryLimits, ScopeInfo
from dockyard.domain.access import Scope

router = APIRouter(tags=["registry"], dependencies=SECURITY, responses=documented(401, 429))

SCOPE_DESCRIPTIONS: dict[Scope, str] = {
    Scope.REPO_READ: "Pull and browse repositories the account may read.",
    Scope.REPO_WRITE: "Push, tag and delete in repositories the account may write (includes repo:read).",
    Scope.REPO_ADMIN: "Change settings, rules and permissions of repositories the account administers; "
    "delete them (includes repo:write).",
    Scope.REPO_CREATE: "Create repositories in namespaces where the account may.",
    Scope.ORG_ADMIN: "Administer organizations (and the user's own namespace) the account administers; "
    "read the organizations it belongs to.",
    Scope.USER_READ: "Read the account's own profile.",
    Scope.USER_ADMIN: "Change the account's own settings and tokens (includes user:read).",
    Scope.SUPER_USER: "Use the account's superuser rights (superusers only).",
}

FEATURES = [
    "oci-distribution-1.1",
    "referrers",
    "tag-history",
    "time-machine",
    "tag-expiry",
    "immutable-tags",
    "quotas",
    "auto-prune",
    "garbage-collection",
]


@router.get("/registry", summary="Registry capabilities")
async def get_registry(caller: CallerDep) -> RegistryInfo:
    """Open to every caller, anonymous included."""
    services = caller.services
    features = [*FEATURES, *(["geo-replication"] if services.replication.enabled else [])]
    return RegistryInfo(
        product="Dockyard",
        version=version("dockyard"),
        api_version="v1",
        distribution_spec="v1.1",
        features=features,
        auth_methods=["bearer-app-token", "bearer-robot-token", "bearer-oauth-token", "basic", "session"],
        scopes=[ScopeInfo(name=scope.value, description=SCOPE_DESCRIPTIONS[scope]) for scope in Scope],
        limits=RegistryLimits(max_manifest_bytes=services.manifests.max_bytes, max_page_size=MAX_LIMIT),
    )
