"""One real server per storage driver for the whole session, and stores opened on it.

Every driver (local, s3, azure, gcs) runs the same conformance suite (test_conformance.py).
Servers are started lazily, one driver at a time (pytest groups the tests by driver), from
tests/storage/servers/<module>.py; each yields the location's options as they appear in the
settings, so stores are opened exactly as `dockyard serve` opens them (`open_location`).
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from pydantic import TypeAdapter

from dockyard.config.settings import StorageLocation
from dockyard.storage import BlobStore, open_location

T = TypeVar("T")

DRIVERS = ["local", "s3", "azure", "gcs", "swift", "swift_keystone"]
#: The server module of each driver, in tests/storage/servers/.
SERVER_MODULES = {
    "local": "local",
    "s3": "seaweedfs",
    "azure": "azurite",
    "gcs": "fake_gcs",
    "swift": "swift",
    "swift_keystone": "swift_keystone",
}
_LOCATION = TypeAdapter(StorageLocation)


def server_module(driver: str) -> ModuleType:
    """Imported only when a test of that driver runs, so one driver's missing server module fails
    that driver's tests alone."""
    return importlib.import_module(f"tests.storage.servers.{SERVER_MODULES[driver]}")


def open_store(options: dict[str, Any], data_dir: Path) -> BlobStore:
    return open_location("conformance", _LOCATION.validate_python(options), data_dir)


async def close_store(store: BlobStore) -> None:
    """Drivers holding per-loop HTTP sessions close them before their event loop ends."""
    close = getattr(store, "close", None)
    if close is not None:
        await close()


@dataclass
class Location:
    driver: str
    options: dict[str, Any]
    module: ModuleType
    data_dir: Path

    def run(self, body: Callable[[BlobStore], Awaitable[T]], **overrides: Any) -> T:
        """`body(store)` on a fresh event loop, with a store opened from the options (+ overrides)."""
        return run_with(open_store, {**self.options, **overrides}, self.data_dir, body)

    @property
    def part_size(self) -> int:
        return int(self.options.get("part_size", self.options.get("segment_size", 5 * 1024 * 1024)))


def run_with(
    opener: Callable[[dict[str, Any], Path], BlobStore],
    options: dict[str, Any],
    data_dir: Path,
    body: Callable[[BlobStore], Awaitable[T]],
) -> T:
    async def main() -> T:
        store = opener(options, data_dir)
        try:
            return await body(store)
        finally:
            await close_store(store)

    return asyncio.run(main())


@pytest.fixture(scope="session", params=DRIVERS)
def location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Location]:
    driver: str = request.param
    module = server_module(driver)
    workdir = tmp_path_factory.mktemp(f"storage-{driver}")
    with module.server(workdir) as options:
        yield Location(driver, options, module, workdir / "data")


@pytest.fixture
def space() -> str:
    """A key prefix no other test uses (servers are shared by the whole session)."""
    return f"t/{secrets.token_hex(6)}/"
