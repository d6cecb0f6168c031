"""The settings tree. Unknown keys are errors, never ignored; every field is documented."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = Field("0.0.0.0", description="Address to listen on.")  # noqa: S104 - a server listens for clients
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    workers: int = Field(2, ge=1, le=64, description="Worker processes serving HTTP.")
    base_url: str | None = Field(
        None, description="Public URL clients reach Dockyard at (used in auth challenges); default from the request."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of reverse proxies whose X-Forwarded-For is believed: when the "
        "direct peer is one of them, the client address is the right-most X-Forwarded-For entry that is not. "
        "Used for the audit log and the failed-login limit.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value


class DatabaseSettings(_Strict):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL (postgresql://…, sqlite:///…). Default: SQLite file in the data directory.",
    )
    pool_size: int = Field(8, ge=1, le=200, description="Connections per worker process.")
    auto_migrate: bool | None = Field(
        None, description="Upgrade the schema at start. Default: on for SQLite, off for servers."
    )


class LocalStorage(_Strict):
    driver: Literal["local"] = "local"
    root: Path | None = Field(None, description="Directory holding blobs. Default: <data-dir>/storage.")


class S3Storage(_Strict):
    """Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, SeaweedFS)."""

    driver: Literal["s3"]
    bucket: str = Field(description="Bucket holding the objects.")
    endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible store; default AWS.")
    region: str = Field("us-east-1", description="Signing region.")
    access_key: str | None = Field(None, description="Static access key; default: the AWS credential chain.")
    secret_key: str | None = Field(None, description="Static secret key (with access_key).")
    path_style: bool = Field(False, description="Path-style addressing (most S3-compatible stores need it).")
    prefix: str = Field("", description="Key prefix inside the bucket.")
    part_size: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024, description="Multipart part size in bytes.")

    @model_validator(mode="after")
    def _keys_together(self) -> S3Storage:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key go together")
        return self


class AzureStorage(_Strict):
    """Azure Blob Storage (block blobs, hot tier)."""

    driver: Literal["azure"]
    container: str = Field(description="Container holding the objects.")
    account_name: str = Field(description="Storage account name.")
    account_key: str = Field(description="Storage account key (base64).")
    endpoint_url: str | None = Field(
        None, description="Blob service URL; default https://<account>.blob.core.windows.net (Azurite: its URL)."
    )
    prefix: str = Field("", description="Key prefix inside the container.")


class GcsStorage(_Strict):
    """Google Cloud Storage."""

    driver: Literal["gcs"]
    bucket: str = Field(description="Bucket holding the objects.")
    project: str | None = Field(None, description="Project of the bucket.")
    credentials_file: Path | None = Field(
        None, description="Service-account JSON key; default: application default credentials."
    )
    anonymous: bool = Field(False, description="No credentials (emulators only).")
    endpoint_url: str | None = Field(None, description="API endpoint (emulators only).")
    prefix: str = Field("", description="Key prefix inside the bucket.")


class SwiftStorage(_Strict):
    """OpenStack Swift, with tempauth (v1) or Keystone v3."""

    driver: Literal["swift"]
    container: str = Field(description="Container holding the objects.")
    auth_url: str = Field(description="Auth endpoint: tempauth `…/auth/v1.0` or Keystone `…/v3`.")
    auth_version: Literal["1", "3"] = Field("3", description="1 = tempauth, 3 = Keystone v3.")
    user: str = Field(description="User name (tempauth: `account:user`).")
    key: str = Field(description="Password or tempauth key.")
    project: str | None = Field(None, description="Keystone project name.")
    user_domain: str = Field("Default", description="Keystone user domain.")
    project_domain: str = Field("Default", description="Keystone project domain.")
    region: str | None = Field(None, description="Keystone region of the object-store endpoint.")
    temp_url_key: str | None = Field(
        None, description="Account TempURL key for signed GETs (set on the account if absent there)."
    )
    segment_size: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="Largest segment of a streamed or large object."
    )
    prefix: str = Field("", description="Key prefix inside the container.")


#: One location's driver and options, chosen by `driver`; an unknown driver is an error.
StorageLocation = Annotated[
    LocalStorage | S3Storage | AzureStorage | GcsStorage | SwiftStorage,
    Field(discriminator="driver"),
]


def _default_locations() -> dict[str, StorageLocation]:
    return {"local": LocalStorage()}


class StorageSettings(_Strict):
    locations: dict[str, StorageLocation] = Field(
        default_factory=_default_locations,
        description="Named storage locations, each a driver and its options.",
    )
    preference: list[str] = Field(
        default_factory=lambda: ["local"], description="Locations this instance writes to and reads from, in order."
    )
    redirect: bool = Field(
        True,
        description="Answer blob GETs with a 307 to a short-lived signed URL where the driver can sign one; "
        "false proxies the bytes through Dockyard (for stores clients cannot reach).",
    )
    redirect_expiry_seconds: int = Field(300, ge=10, le=86400, description="Lifetime of signed URLs.")
    replicate_to: list[str] | None = Field(
        None, description="Locations every blob must reach (default: all configured locations)."
    )
    namespace_locations: dict[str, list[str]] = Field(
        default_factory=dict, description="Extra locations blobs of a namespace must reach, by namespace."
    )

    @model_validator(mode="after")
    def _preference_names_locations(self) -> StorageSettings:
        if not self.preference:
            raise ValueError("preference must name at least one location")
        named = [*self.preference, *(self.replicate_to or [])]
        named += [name for names in self.namespace_locations.values() for name in names]
        for name in named:
            if name not in self.locations:
                raise ValueError(f"names unknown location {name!r}")
        return self


class RegistrySettings(_Strict):
    max_manifest_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest manifest accepted.")
    upload_grace_seconds: int = Field(
        86400, ge=0, description="How long an uploaded blob no manifest references is kept."
    )
    default_page_size: int = Field(1000, ge=1, description="Tags/catalog entries returned when `n` is absent.")
    max_page_size: int = Field(10000, ge=1, description="Largest `n` honoured for tags and catalog.")


class SessionSettings(_Strict):
    """Browser sessions on the REST API (`POST /api/v1/session`)."""

    idle_seconds: int = Field(7200, ge=1, description="A session unused for this long ends.")
    absolute_seconds: int = Field(
        86400, ge=1, description="A session ends this long after its login, however much it is used."
    )
    fresh_login_seconds: int = Field(
        600,
        ge=1,
        description="Sensitive operations (password change, token creation, deleting an organization) need a "
        "password entered within this long; older sessions re-enter it (`POST /api/v1/session/reauthenticate`).",
    )


class OAuthSettings(_Strict):
    """OAuth2 applications of organizations (docs/api.md)."""

    access_token_seconds: int = Field(3600, ge=1, description="Lifetime of OAuth2 access tokens.")
    refresh_token_seconds: int = Field(
        30 * 86400, ge=1, description="Lifetime of OAuth2 refresh tokens (each use replaces the token)."
    )
    code_seconds: int = Field(
        60, ge=1, le=600, description="Lifetime of an authorization code (single use, at most ten minutes)."
    )


class AuthSettings(_Strict):
    superusers: list[str] = Field(default_factory=list, description="User names with full access.")
    allow_password_on_cli: bool = Field(
        True,
        description="Accept plain passwords in registry logins (docker/podman login). When false, only app "
        "tokens, encrypted CLI passwords and robot tokens are accepted there.",
    )
    token_lifetime_seconds: int = Field(300, ge=30, le=86400, description="Lifetime of registry bearer tokens.")
    refresh_token_lifetime_seconds: int = Field(
        30 * 86400, ge=300, description="Lifetime of refresh tokens issued with offline_token=true."
    )
    service: str | None = Field(
        None, description="The token service (audience) name. Default: the host clients address the registry by."
    )
    max_failed_logins: int = Field(10, ge=1, description="Failed logins allowed per user and per IP in the window.")
    failed_login_window_seconds: int = Field(300, ge=1, description="Window of the failed-login rate limit.")
    sessions: SessionSettings = SessionSettings()
    oauth: OAuthSettings = OAuthSettings()


class JobSettings(_Strict):
    run_in_server: bool = Field(
        True, description="Run the background workers (replication, …) inside every `serve` worker process."
    )
    poll_seconds: float = Field(1.0, gt=0, le=60, description="How often an idle worker looks for due jobs.")
    lease_seconds: int = Field(300, ge=10, description="How long a claimed job is held before another may retry it.")


class GcSettings(_Strict):
    enabled: bool = Field(True, description="Collect garbage continuously in the background workers.")
    interval_seconds: int = Field(300, ge=1, description="Pause between two background collection passes.")
    grace_seconds: int = Field(
        3600,
        ge=0,
        description="How long a blob or manifest nothing references yet is kept (a push in progress needs it).",
    )
    upload_grace_seconds: int = Field(
        86400, ge=0, description="How long an upload session may stay idle before it is abandoned."
    )
    batch: int = Field(500, ge=1, le=10000, description="Rows per transaction; keeps every lock short.")
    orphan_grace_seconds: int = Field(
        86400,
        ge=1,
        description="How long storage the database does not know (a crash left it) waits before the sweep deletes it.",
    )
    sweep_interval_seconds: int = Field(
        21600, ge=1, description="How often a pass also lists every location to sweep orphaned storage."
    )
    reconcile_interval_seconds: int = Field(
        86400, ge=60, description="How often the quota reconcile job recomputes every namespace's usage."
    )


class AuditSettings(_Strict):
    enabled: bool = Field(
        True, description="Record the audit log (changes, logins and pulls). Off: nothing is recorded."
    )
    retention_days: int = Field(
        90,
        ge=0,
        description="Entries older than this many days move from the database to compressed archives in storage "
        "(one per UTC day), still exportable. 0 keeps every entry in the database.",
    )
    archive_location: str | None = Field(
        None, description="Storage location holding the archives. Default: the first of storage.preference."
    )
    retention_interval_seconds: int = Field(3600, ge=60, description="How often the retention job looks for due days.")
    pull_buffer: int = Field(
        10_000,
        ge=1,
        description="Pull entries a worker process holds before writing them; when full, further pulls are not "
        "recorded (counted in dockyard_audit_pulls_dropped_total) rather than delayed.",
    )
    pull_batch: int = Field(
        2000,
        ge=1,
        le=2000,
        description="Most pull entries written by one INSERT (in a transaction of its own): larger batches write "
        "each index page once for more entries.",
    )
    pull_flush_seconds: float = Field(1.0, gt=0, le=60, description="How often buffered pull entries are written.")


class LogSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(False, description="Log one line per request.")


class Settings(_Strict):
    data_dir: Path = Field(Path("data"), description="Directory for the embedded database, local storage and keys.")
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    registry: RegistrySettings = RegistrySettings()
    auth: AuthSettings = AuthSettings()
    jobs: JobSettings = JobSettings()
    gc: GcSettings = GcSettings()
    audit: AuditSettings = AuditSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _archive_location_exists(self) -> Settings:
        location = self.audit.archive_location
        if location is not None and location not in self.storage.locations:
            raise ValueError(f"audit.archive_location names unknown storage location {location!r}")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'dockyard.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded_default(self) -> bool:
        """SQLite in the data directory: the no-configuration set-up."""
        return self.database.url is None

    @property
    def auto_migrate(self) -> bool:
        return self.is_sqlite if self.database.auto_migrate is None else self.database.auto_migrate
