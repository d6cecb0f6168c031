"""Namespace storage quotas: set, clear and show them, and reconcile usage with the references.

Enforcement happens in the registry's write transactions (`db.usage.charge`); this service manages
the settings and runs the reconcile job, which should never find drift: any it finds and corrects
is logged at WARNING.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from dockyard.db.quota_store import Drift, QuotaReport, QuotaStore
from dockyard.domain.audit import Actor
from dockyard.domain.errors import InvalidRequest, NotFound

log = logging.getLogger("dockyard.quota")

#: Job kind of the reconcile job (payload: optional "namespace").
RECONCILE = "quota-reconcile"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}


def parse_size(text: str) -> int:
    """Bytes in `text`: `1048576`, `500MB` (powers of 1000), `10GiB` (powers of 1024), `1.5TiB`.

    InvalidRequest unless it is a positive whole number of bytes.
    """
    match = _SIZE.match(text.strip().lower())
    if match is None or match[2] not in _UNITS:
        raise InvalidRequest(f"invalid size {text!r} (use e.g. 10GiB, 500MB or a number of bytes)")
    number = Decimal(match[1]) * _UNITS[match[2]]
    if number != number.to_integral_value() or number <= 0:
        raise InvalidRequest(f"invalid size {text!r}: it must be a positive whole number of bytes")
    return int(number)


class QuotaService:
    kind = RECONCILE

    def __init__(self, store: QuotaStore) -> None:
        self.store = store

    async def set(
        self,
        namespace: str,
        limit: str,
        warn_percent: int | None = None,
        reject_percent: int | None = None,
        *,
        actor: Actor,
    ) -> QuotaReport:
        """Set NAMESPACE's limit (a size such as 10GiB); None percents keep the current thresholds."""
        await self.store.set_quota(namespace, parse_size(limit), warn_percent, reject_percent, actor=actor)
        return await self.store.show(namespace)

    async def clear(self, namespace: str, *, actor: Actor) -> None:
        await self.store.set_quota(namespace, None, actor=actor)

    async def show(self, namespace: str) -> QuotaReport:
        return await self.store.show(namespace)

    async def reconcile(self, namespace: str | None = None) -> list[Drift]:
        drifts = await self.store.reconcile(namespace)
        for drift in drifts:
            log.warning("quota reconcile corrected drift: %s", drift)
        return drifts

    async def handle(self, payload: dict[str, Any]) -> None:
        """Job handler: reconcile the payload's namespace, or every namespace."""
        namespace = payload.get("namespace")
        try:
            drifts = await self.reconcile(namespace if isinstance(namespace, str) else None)
        except NotFound:
            log.info("quota reconcile: namespace %r is gone", namespace)  # retrying would not help
            return
        if not drifts:
            log.info("quota reconcile: no drift")
