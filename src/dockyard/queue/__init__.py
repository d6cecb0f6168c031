"""The durable job runner: claims jobs under leases, runs handlers, retries with backoff.

Imports `db` and below. Handlers are registered by kind and must be idempotent: a job whose
worker died is run again when its lease lapses.
"""

from dockyard.queue.runner import Handler, JobRunner

__all__ = ["Handler", "JobRunner"]
