"""Drivers by name. An unknown driver is an error, never a fallback.

Object-store drivers import their client libraries only when a location uses them.
"""

from __future__ import annotations

from pathlib import Path

from dockyard.config.settings import (
    AzureStorage,
    GcsStorage,
    LocalStorage,
    S3Storage,
    StorageLocation,
    SwiftStorage,
)
from dockyard.storage.local import LocalStore
from dockyard.storage.protocol import BlobStore


def open_location(name: str, options: StorageLocation, data_dir: Path) -> BlobStore:
    if isinstance(options, LocalStorage):
        return LocalStore(name, options.root or data_dir / "storage")
    if isinstance(options, S3Storage):
        from dockyard.storage.s3 import S3Store  # noqa: PLC0415

        return S3Store(name, options)
    if isinstance(options, AzureStorage):
        from dockyard.storage.azure import AzureStore  # noqa: PLC0415

        return AzureStore(name, options)
    if isinstance(options, GcsStorage):
        from dockyard.storage.gcs import GcsStore  # noqa: PLC0415

        return GcsStore(name, options)
    if isinstance(options, SwiftStorage):
        from dockyard.storage.swift import SwiftStore  # noqa: PLC0415

        return SwiftStore(name, options)
    raise ValueError(f"storage.locations.{name}.driver: unknown driver {options.driver!r}")
