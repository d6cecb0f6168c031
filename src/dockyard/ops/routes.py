"""Health and metrics endpoints."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from dockyard.ops.metrics import Metrics
from dockyard.services.context import Services
from dockyard.services.health import Check


def _health_response(checks: dict[str, Check]) -> Response:
    healthy = all(check.ok for check in checks.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "services": {name: {"ok": c.ok, "detail": c.detail, "millis": c.millis} for name, c in checks.items()},
    }
    return Response(json.dumps(body), 200 if healthy else 503, media_type="application/json")


async def health_instance(request: Request) -> Response:
    services: Services = request.app.state.services
    return _health_response(await services.health.instance())


async def health_endtoend(request: Request) -> Response:
    services: Services = request.app.state.services
    return _health_response(await services.health.end_to_end())


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    registry_metrics: Metrics = request.app.state.metrics
    registry_metrics.upload_sessions.set(await services.uploads.open_sessions())
    status = await services.replication.status()
    registry_metrics.replication_backlog.set(status.backlog)
    for name, held in status.held.items():
        registry_metrics.location_blobs.labels(name).set(held)
    gc = await services.gc.stats()
    for kind in ("tags", "manifests", "links", "usage_items", "blobs", "storage_objects", "uploads", "repositories"):
        registry_metrics.gc_collected.labels(kind).set(gc.get(kind, 0))
    registry_metrics.gc_freed_bytes.set(gc.get("storage_bytes", 0))
    registry_metrics.gc_backlog.labels("storage_objects").set(gc["pending_storage_deletions"])
    registry_metrics.gc_backlog.labels("storage_bytes").set(gc["pending_storage_bytes"])
    registry_metrics.gc_backlog.labels("repositories").set(gc["repositories_marked"])
    registry_metrics.gc_last_pass.set(gc.get("last_pass_at", 0) / 1000)
    return Response(registry_metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
