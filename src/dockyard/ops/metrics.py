"""Prometheus metrics: requests by route and status, latency, bytes in and out, uploads in flight.

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` (set by `dockyard serve`) makes every
worker write its samples to shared files that `/metrics` aggregates.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def route_of(method: str, path: str) -> str:
    """A low-cardinality route label for a request path."""
    if path.startswith("/v2/"):
        if path == "/v2/":
            return "base"
        if path == "/v2/_catalog":
            return "catalog"
        if "/blobs/uploads/" in path:
            return "upload"
        if "/blobs/" in path:
            return "blob"
        if "/manifests/" in path:
            return "manifest"
        if path.endswith("/tags/list"):
            return "tags"
        if "/referrers/" in path:
            return "referrers"
        return "v2_other"
    if path.startswith("/health/"):
        return "health"
    if path == "/metrics":
        return "metrics"
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if self.multiprocess:
            # The client picks its value store when first imported; a worker process forked from
            # a parent that imported it before the directory was set would keep in-memory values
            # that /metrics (reading the directory) never sees.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        labels = ("method", "route", "status")
        self.requests = Counter("dockyard_http_requests", "HTTP requests", labels, registry=self.registry)
        self.latency = Histogram(
            "dockyard_http_request_duration_seconds",
            "Time to the end of the response",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "dockyard_http_received_bytes", "Request body bytes", ("route",), registry=self.registry
        )
        self.bytes_out = Counter("dockyard_http_sent_bytes", "Response body bytes", ("route",), registry=self.registry)
        self.uploads_in_flight = Gauge(
            "dockyard_upload_requests_in_progress",
            "Upload requests (POST/PATCH/PUT) receiving a body now",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upload_sessions = Gauge(
            "dockyard_upload_sessions",
            "Upload sessions open in the database",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

        self.replication_backlog = Gauge(
            "dockyard_replication_backlog_jobs",
            "Replication jobs pending or running",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.location_blobs = Gauge(
            "dockyard_location_blobs",
            "Blobs held by each storage location",
            ("location",),
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

        self.gc_collected = Gauge(
            "dockyard_gc_collected_total",
            "Rows and objects garbage collection removed, since the database was created",
            ("kind",),
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.gc_freed_bytes = Gauge(
            "dockyard_gc_freed_bytes_total",
            "Bytes of storage garbage collection freed, since the database was created",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.gc_backlog = Gauge(
            "dockyard_gc_backlog",
            "Work garbage collection has found but not finished",
            ("kind",),
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.gc_last_pass = Gauge(
            "dockyard_gc_last_pass_timestamp_seconds",
            "When the last collection pass ended",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

        self.audit_pulls_written = Counter(
            "dockyard_audit_pulls_recorded", "Pulls written to the audit log", registry=self.registry
        )
        self.audit_pulls_dropped = Counter(
            "dockyard_audit_pulls_dropped",
            "Pulls not recorded in the audit log: the buffer was full or the write failed",
            registry=self.registry,
        )
        self.audit_pull_flushes = Counter(
            "dockyard_audit_pull_flushes", "Transactions writing buffered pulls", registry=self.registry
        )

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """Pure ASGI middleware: counts bytes as they pass, observes latency when the response ends."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        method: str = scope["method"]
        route = route_of(method, scope["path"])
        started = time.perf_counter()
        status = 500
        received = 0
        sent = 0
        is_upload = route == "upload" and method in ("POST", "PATCH", "PUT")

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        if is_upload:
            metrics.uploads_in_flight.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            if is_upload:
                metrics.uploads_in_flight.dec()
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            if received:
                metrics.bytes_in.labels(route).inc(received)
            if sent:
                metrics.bytes_out.labels(route).inc(sent)
