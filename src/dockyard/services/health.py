"""Health checks: the instance itself, and end to end through the database and every location."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from dockyard.db.registry_store import RegistryStore
from dockyard.services.blobs import Locations
from dockyard.storage import BlobStore


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str
    millis: float


class HealthService:
    def __init__(self, store: RegistryStore, locations: Locations) -> None:
        self.store = store
        self.locations = locations

    async def instance(self) -> dict[str, Check]:
        """Can this instance serve: its database answers."""
        return {"database": await _timed(self.store.ping)}

    async def end_to_end(self) -> dict[str, Check]:
        """The database answers and every location stores, returns and removes an object."""
        checks = {"database": await _timed(self.store.ping)}
        for name, location in self.locations.stores.items():
            checks[f"storage:{name}"] = await _timed(partial(_round_trip, location))
        return checks


async def _round_trip(store: BlobStore) -> None:
    key = f"_health/{secrets.token_hex(8)}"
    payload = secrets.token_bytes(32)
    await store.put(key, payload)
    try:
        read = b"".join([chunk async for chunk in store.read(key)])
        if read != payload:
            raise RuntimeError("storage returned different bytes")
    finally:
        await store.delete(key)


async def _timed(check: Callable[[], Awaitable[None]]) -> Check:
    started = time.perf_counter()
    try:
        await check()
    except Exception as exc:
        return Check(False, f"{type(exc).__name__}: {exc}", round((time.perf_counter() - started) * 1000, 2))
    return Check(True, "ok", round((time.perf_counter() - started) * 1000, 2))
