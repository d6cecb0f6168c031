"""Drivers by name. An unknown driver is an error, never a fallback."""

from __future__ import annotations

from pathlib import Path

from dockyard.config.settings import LocalStorage, StorageLocation
from dockyard.storage.local import LocalStore
from dockyard.storage.protocol import BlobStore


def open_location(name: str, options: StorageLocation, data_dir: Path) -> BlobStore:
    if isinstance(options, LocalStorage):
        return LocalStore(name, options.root or data_dir / "storage")
    raise ValueError(f"storage.locations.{name}.driver: unknown driver {options.driver!r}")
