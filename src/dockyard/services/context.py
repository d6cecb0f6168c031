"""The services an entry point needs, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.auth import AccessPolicy, Authenticator, TokenService
from dockyard.auth.origin import TrustedProxies
from dockyard.config.settings import AuthSettings
from dockyard.db.registry_store import RegistryStore
from dockyard.queue import JobRunner
from dockyard.services.accounts import AccountService
from dockyard.services.audit import AuditService
from dockyard.services.blobs import BlobService
from dockyard.services.gc import GcService
from dockyard.services.health import HealthService
from dockyard.services.manifests import ManifestService
from dockyard.services.oauth import OAuthService
from dockyard.services.organizations import OrganizationService
from dockyard.services.prune import PruneService
from dockyard.services.pull_log import PullLog
from dockyard.services.quota import QuotaService
from dockyard.services.replication import ReplicationService
from dockyard.services.repositories import RepositoryService
from dockyard.services.search import SearchService
from dockyard.services.sessions import SessionService
from dockyard.services.tags import TagService
from dockyard.services.uploads import UploadService
from dockyard.services.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    authenticator: Authenticator
    policy: AccessPolicy
    tokens: TokenService
    auth_settings: AuthSettings
    base_url: str | None
    accounts: AccountService
    registry_store: RegistryStore
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    health: HealthService
    replication: ReplicationService
    tags: TagService
    users: UserService
    search: SearchService
    quota: QuotaService
    prune: PruneService
    jobs: JobRunner
    gc: GcService
    repositories: RepositoryService
    organizations: OrganizationService
    audit: AuditService
    pulls: PullLog
    proxies: TrustedProxies
    sessions: SessionService
    oauth: OAuthService

    async def close(self) -> None:
        await self.registry_store.close()
        await self.uploads.locks.close()
