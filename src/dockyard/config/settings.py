"""The settings tree. Unknown keys are errors, never ignored; every field is documented."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = Field("0.0.0.0", description="Address to listen on.")  # noqa: S104 - a server listens for clients
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    workers: int = Field(2, ge=1, le=64, description="Worker processes serving HTTP.")
    base_url: str | None = Field(
        None, description="Public URL clients reach Dockyard at (used in auth challenges); default from the request."
    )


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


#: One location's driver and options; more drivers join this union, discriminated by `driver`.
StorageLocation = LocalStorage


class StorageSettings(_Strict):
    locations: dict[str, StorageLocation] = Field(
        default_factory=lambda: {"local": LocalStorage()},
        description="Named storage locations, each a driver and its options.",
    )
    preference: list[str] = Field(
        default_factory=lambda: ["local"], description="Locations this instance writes to and reads from, in order."
    )

    @model_validator(mode="after")
    def _preference_names_locations(self) -> StorageSettings:
        if not self.preference:
            raise ValueError("preference must name at least one location")
        for name in self.preference:
            if name not in self.locations:
                raise ValueError(f"preference names unknown location {name!r}")
        return self


class RegistrySettings(_Strict):
    max_manifest_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest manifest accepted.")
    upload_grace_seconds: int = Field(
        86400, ge=0, description="How long an uploaded blob no manifest references is kept."
    )
    default_page_size: int = Field(1000, ge=1, description="Tags/catalog entries returned when `n` is absent.")
    max_page_size: int = Field(10000, ge=1, description="Largest `n` honoured for tags and catalog.")


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
    log: LogSettings = LogSettings()

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
