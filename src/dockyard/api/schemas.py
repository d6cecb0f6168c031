"""Request and response bodies of the API (pydantic), and their conversions from service records."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dockyard.domain.models import Descriptor, HistoryRow, RepositoryInfo, TagInfo
from dockyard.services.manifests import ManifestDetails
from dockyard.services.repositories import MAX_DESCRIPTION

Visibility = Literal["public", "private"]
DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"


class _Strict(BaseModel):
    """Request bodies: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def moment(ms: int) -> dt.datetime:
    """A time kept as milliseconds since the epoch, as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def when(ms: int | None) -> dt.datetime | None:
    """`moment`, or None for no time."""
    return None if ms is None else moment(ms)


# -- user and registry -------------------------------------------------------------------------


class UserProfile(BaseModel):
    name: str
    email: str | None
    superuser: bool = Field(description="Whether the account is a superuser (its token may still lack super:user).")
    authenticated_via: str = Field(
        description="password, app_token, robot_token, cli_password, session, or oauth:CLIENT_ID (an OAuth2 token)."
    )
    scopes: list[str] | None = Field(description="Scopes of the token used; null when the credential is unscoped.")


class ScopeInfo(BaseModel):
    name: str
    description: str


class RegistryLimits(BaseModel):
    max_manifest_bytes: int
    max_page_size: int


class RegistryInfo(BaseModel):
    product: str
    version: str
    api_version: str
    distribution_spec: str
    features: list[str]
    auth_methods: list[str]
    scopes: list[ScopeInfo]
    limits: RegistryLimits


# -- repositories ------------------------------------------------------------------------------


class Repository(BaseModel):
    name: str = Field(description="Full name, NAMESPACE/NAME[/...].")
    namespace: str
    visibility: Visibility
    description: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, info: RepositoryInfo) -> Repository:
        return cls(
            name=info.name,
            namespace=info.namespace,
            visibility="public" if info.public else "private",
            description=info.description,
            created_at=moment(info.created_at),
        )


class RepositoryCreate(_Strict):
    name: str = Field(min_length=1, max_length=255, description="Full name, NAMESPACE/NAME[/...].")
    visibility: Visibility = "private"
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)


class RepositoryUpdate(_Strict):
    visibility: Visibility | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION, description="null removes the description.")


# -- tags --------------------------------------------------------------------------------------


class Tag(BaseModel):
    name: str
    digest: str
    media_type: str
    manifest_size: int = Field(description="Size of the manifest itself in bytes.")
    last_modified: dt.datetime = Field(description="When the tag started pointing at this manifest.")
    expires_at: dt.datetime | None
    immutable: bool = Field(description="The tag's own flag (repository rules apply besides).")

    @classmethod
    def of(cls, info: TagInfo) -> Tag:
        return cls(
            name=info.name,
            digest=info.digest,
            media_type=info.media_type,
            manifest_size=info.size,
            last_modified=moment(info.start_at),
            expires_at=when(info.expires_at),
            immutable=info.immutable,
        )


class TagUpdate(_Strict):
    immutable: bool


class TagHistoryEntry(BaseModel):
    digest: str
    start: dt.datetime
    end: dt.datetime | None
    expires_at: dt.datetime | None
    immutable: bool

    @classmethod
    def of(cls, row: HistoryRow) -> TagHistoryEntry:
        return cls(
            digest=row.digest,
            start=moment(row.start_at),
            end=when(row.end_at),
            expires_at=when(row.expires_at),
            immutable=row.immutable,
        )


class TagRestore(_Strict):
    digest: str = Field(max_length=160, pattern=DIGEST_PATTERN, description="A manifest the tag pointed at.")


class TagTarget(_Strict):
    digest: str = Field(max_length=160, pattern=DIGEST_PATTERN, description="A manifest of the repository.")


class TagExpiry(_Strict):
    """Exactly one of `expires_in` and `expires_at`."""

    expires_in: str | None = Field(None, max_length=32, description="A duration: 90s, 15m, 12h, 30d, 2w.")
    expires_at: dt.datetime | None = Field(None, description="A moment in the future (with a time zone).")

    @model_validator(mode="after")
    def _one(self) -> TagExpiry:
        if (self.expires_in is None) == (self.expires_at is None):
            raise ValueError("give exactly one of expires_in and expires_at")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        return self


class ImmutabilityRule(_Strict):
    pattern: str = Field(min_length=1, max_length=128, description="A tag glob such as v* or release-?.*")


# -- manifests ---------------------------------------------------------------------------------


class DescriptorModel(BaseModel):
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, str] | None = None

    @classmethod
    def of(cls, descriptor: Descriptor) -> DescriptorModel:
        return cls(
            media_type=descriptor.media_type,
            digest=descriptor.digest,
            size=descriptor.size,
            artifact_type=descriptor.artifact_type,
            annotations=descriptor.annotations,
            platform=descriptor.platform,
        )


class Manifest(BaseModel):
    digest: str
    media_type: str
    artifact_type: str | None
    size: int = Field(description="Size of the manifest itself in bytes.")
    total_size: int = Field(description="The manifest, its config and layers (an index: its children's manifests).")
    subject: str | None = Field(description="Digest of the manifest this one refers to (signatures, SBOMs …).")
    config: DescriptorModel | None
    layers: list[DescriptorModel]
    manifests: list[DescriptorModel] = Field(description="An index's child manifests with their platforms.")
    annotations: dict[str, str]
    labels: dict[str, str] = Field(description="Labels of the image config.")
    platform: dict[str, str] | None = Field(description="os, architecture, variant of the image config.")
    created: str | None = Field(description="Creation time written in the image config.")

    @classmethod
    def of(cls, details: ManifestDetails) -> Manifest:
        record = details.record
        return cls(
            digest=record.digest,
            media_type=record.media_type,
            artifact_type=record.artifact_type,
            size=record.size,
            total_size=details.total_size,
            subject=record.subject,
            config=None if details.config is None else DescriptorModel.of(details.config),
            layers=[DescriptorModel.of(layer) for layer in details.layers],
            manifests=[DescriptorModel.of(child) for child in details.manifests],
            annotations=details.annotations,
            labels=details.labels,
            platform=details.platform,
            created=details.created,
        )
