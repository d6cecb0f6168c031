"""Composition root: builds every component from the settings. The only module that wires.

`dockyard serve` validates the settings, prepares the schema, then starts the HTTP server whose
worker processes call `asgi_factory`, which reads the settings the parent serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from dockyard.auth import AccessPolicy, Authenticator, TokenService
from dockyard.auth.origin import TrustedProxies
from dockyard.config import Settings
from dockyard.db.accounts_store import AccountsStore
from dockyard.db.audit import AuditStore, AuditWriter
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.gc_store import GcStore
from dockyard.db.hot_reads import HotReads, open_hot_reads
from dockyard.db.jobs_store import JobsStore
from dockyard.db.locks import UploadLocks, open_upload_locks
from dockyard.db.oauth_store import OAuthStore
from dockyard.db.organizations_store import OrganizationsStore
from dockyard.db.prune_store import PruneStore
from dockyard.db.quota_store import QuotaStore
from dockyard.db.registry_store import RegistryStore
from dockyard.db.repositories_store import RepositoriesStore
from dockyard.db.search_store import SearchStore
from dockyard.db.sessions_store import SessionsStore
from dockyard.db.sweep_store import SweepStore
from dockyard.db.tags_store import TagsStore
from dockyard.db.users_store import UsersStore
from dockyard.domain.errors import DockyardError
from dockyard.ops.metrics import Metrics, MetricsMiddleware
from dockyard.ops.routes import health_endtoend, health_instance, metrics
from dockyard.queue import JobRunner
from dockyard.registry.errors import error_response
from dockyard.registry.routes import dispatch
from dockyard.registry.token_endpoint import token_endpoint
from dockyard.services.accounts import AccountService
from dockyard.services.audit import AuditService
from dockyard.services.blobs import BlobService, Locations
from dockyard.services.context import Services
from dockyard.services.gc import GcService
from dockyard.services.health import HealthService
from dockyard.services.manifests import ManifestService
from dockyard.services.oauth import OAuthService
from dockyard.services.organizations import OrganizationService
from dockyard.services.prune import PruneService
from dockyard.services.pull_log import PullCounters, PullLog
from dockyard.services.quota import QuotaService
from dockyard.services.replication import ReplicationService
from dockyard.services.repositories import RepositoryService
from dockyard.services.search import SearchService
from dockyard.services.sessions import SessionService
from dockyard.services.sweep import StorageSweeper
from dockyard.services.tags import TagService
from dockyard.services.uploads import UploadService
from dockyard.services.users import UserService
from dockyard.storage import open_location

SETTINGS_ENV = "DOCKYARD_SETTINGS_JSON"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

log = logging.getLogger("dockyard")


def build_services(
    settings: Settings, database: Database, hot: HotReads | None, locks: UploadLocks, metrics: Metrics | None = None
) -> Services:
    writer = AuditWriter(enabled=settings.audit.enabled)
    store = RegistryStore(database, hot, writer)
    accounts = AccountsStore(database, writer)
    auth = settings.auth
    tokens = TokenService(
        accounts, lifetime=auth.token_lifetime_seconds, refresh_lifetime=auth.refresh_token_lifetime_seconds
    )
    oauth_store = OAuthStore(database, writer)
    authenticator = Authenticator(
        accounts,
        tokens,
        auth,
        hot.credential_state if hot is not None else accounts.credential_state,
        hot.failures if hot is not None else accounts.failures,
        oauth=oauth_store,
    )
    stores = {
        name: open_location(name, options, settings.data_dir) for name, options in settings.storage.locations.items()
    }
    locations = Locations(stores, settings.storage.preference)
    registry = settings.registry
    jobs = JobsStore(database)
    replication = ReplicationService(
        store,
        jobs,
        locations,
        replicate_to=settings.storage.replicate_to,
        namespace_locations=settings.storage.namespace_locations,
        locks=locks,
    )
    blob_service = BlobService(
        store, locations, redirect=settings.storage.redirect, redirect_expiry=settings.storage.redirect_expiry_seconds
    )
    gc_settings = settings.gc
    quota = QuotaService(QuotaStore(database, writer))
    prune = PruneService(PruneStore(database, writer))
    audit_settings = settings.audit
    audit_store = AuditStore(database)
    audit = AuditService(
        audit_store,
        stores,
        archive_location=audit_settings.archive_location or settings.storage.preference[0],
        retention_days=audit_settings.retention_days,
        interval_seconds=audit_settings.retention_interval_seconds,
        enabled=audit_settings.enabled,
    )

    async def before_gc_pass() -> None:
        # Pruning only expires tags: the pass that follows collects what they held.
        await prune.handle({})
        await jobs.schedule(
            quota.kind, {}, dedupe_key=quota.kind, delay_ms=gc_settings.reconcile_interval_seconds * 1000
        )

    gc = GcService(
        GcStore(database, batch=gc_settings.batch, audit=writer),
        locations,
        locks,
        enabled=gc_settings.enabled,
        interval_seconds=gc_settings.interval_seconds,
        grace_seconds=gc_settings.grace_seconds,
        upload_grace_seconds=gc_settings.upload_grace_seconds,
        before_pass=before_gc_pass,
        sweeper=StorageSweeper(SweepStore(database), locations, locks, grace_seconds=gc_settings.orphan_grace_seconds),
        sweep_interval_seconds=gc_settings.sweep_interval_seconds,
    )
    runner = JobRunner(
        jobs,
        {
            replication.kind: replication.handle,
            quota.kind: quota.handle,
            prune.kind: prune.handle,
            audit.kind: audit.handle,
            **gc.handlers(),
        },
        lease_seconds=settings.jobs.lease_seconds,
        poll_seconds=settings.jobs.poll_seconds,
    )
    account_service = AccountService(accounts, authenticator, tokens)
    return Services(
        authenticator=authenticator,
        policy=AccessPolicy(hot.access_facts if hot is not None else accounts.access_facts),
        tokens=tokens,
        auth_settings=auth,
        base_url=settings.server.base_url,
        accounts=account_service,
        registry_store=store,
        blobs=blob_service,
        uploads=UploadService(store, locations, locks),
        manifests=ManifestService(
            store,
            max_bytes=registry.max_manifest_bytes,
            default_page=registry.default_page_size,
            max_page=registry.max_page_size,
            replicate=replication.enabled,
            config_reader=blob_service.read_small,
        ),
        tags=TagService(TagsStore(database, writer)),
        users=UserService(UsersStore(database, writer), accounts, account_service, auth),
        search=SearchService(SearchStore(database)),
        quota=quota,
        prune=prune,
        replication=replication,
        jobs=runner,
        gc=gc,
        health=HealthService(store, locations),
        repositories=RepositoryService(RepositoriesStore(database, writer), account_service, gc),
        organizations=OrganizationService(OrganizationsStore(database, writer), account_service, gc),
        audit=audit,
        pulls=PullLog(
            audit_store,
            enabled=audit_settings.enabled,
            capacity=audit_settings.pull_buffer,
            batch=audit_settings.pull_batch,
            interval=audit_settings.pull_flush_seconds,
            counters=None
            if metrics is None
            else PullCounters(
                written=metrics.audit_pulls_written.inc,
                dropped=metrics.audit_pulls_dropped.inc,
                flushes=metrics.audit_pull_flushes.inc,
            ),
        ),
        proxies=TrustedProxies(settings.server.trusted_proxies),
        sessions=SessionService(SessionsStore(database, writer), accounts, authenticator, auth.sessions),
        oauth=OAuthService(oauth_store, accounts, authenticator, auth.oauth),
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(DockyardError("internal error; the request changed nothing it reported"))


def build_app(settings: Settings) -> Starlette:
    # Only the server needs the REST API (FastAPI): commands skip importing it.
    from dockyard.api.app import PREFIX as API_PREFIX  # noqa: PLC0415
    from dockyard.api.app import api_not_found, build_api  # noqa: PLC0415
    from dockyard.api.oauth_endpoints import PREFIX as OAUTH_PREFIX  # noqa: PLC0415
    from dockyard.api.oauth_endpoints import build_oauth_endpoints  # noqa: PLC0415

    pool_size = settings.database.pool_size
    database = Database(create_serving_engine(settings.database_url, pool_size=pool_size))
    locks = open_upload_locks(settings.database_url, settings.data_dir)
    registry_metrics = Metrics()
    services = build_services(
        settings, database, open_hot_reads(settings.database_url, pool_size), locks, registry_metrics
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        workers = None
        services.pulls.start()
        if settings.jobs.run_in_server:
            await services.gc.ensure_scheduled()
            await services.audit.ensure_scheduled()
            workers = asyncio.create_task(services.jobs.forever(stop))
        yield
        stop.set()
        if workers is not None:
            await workers
        await services.pulls.stop()
        await services.close()

    app = Starlette(
        routes=[
            Route("/v2/auth", token_endpoint, methods=["GET", "POST"]),
            Route("/v2", dispatch, methods=ALL_METHODS),
            Route("/v2/{path:path}", dispatch, methods=ALL_METHODS),
            Route("/health/instance", health_instance),
            Route("/health/endtoend", health_endtoend),
            Route("/metrics", metrics),
            Mount(API_PREFIX, app=build_api(services)),
            Mount(OAUTH_PREFIX, app=build_oauth_endpoints(services)),
        ],
        exception_handlers={404: api_not_found, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.metrics = registry_metrics
    app.add_middleware(MetricsMiddleware, metrics=registry_metrics)
    return app


@contextlib.asynccontextmanager
async def admin_services(settings: Settings) -> AsyncIterator[Services]:
    """Services for one command-line invocation (no hot-path readers, one small pool)."""
    database = Database(create_serving_engine(settings.database_url, pool_size=1))
    services = build_services(settings, database, None, open_upload_locks(settings.database_url, settings.data_dir))
    try:
        yield services
    finally:
        await services.close()


def asgi_factory() -> Starlette:
    """Entry point of each server worker process."""
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    logging.basicConfig(level=settings.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return build_app(settings)
