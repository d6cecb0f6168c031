"""The services an entry point needs, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.auth import AccessPolicy, Authenticator
from dockyard.services.blobs import BlobService
from dockyard.services.health import HealthService
from dockyard.services.manifests import ManifestService
from dockyard.services.uploads import UploadService


@dataclass(frozen=True, slots=True)
class Services:
    authenticator: Authenticator
    policy: AccessPolicy
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    health: HealthService
