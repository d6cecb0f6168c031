"""Auto-prune: tag retention policies per namespace or repository, and the passes that apply them.

A pass only expires tags (their history stays, restorable within the time-machine window);
garbage collection reclaims what nothing references any more. Each expiry is audited with the
policy that caused it. `handle` is the background job (kind `prune`): one full pass.
"""

from __future__ import annotations

import logging
from typing import Any

from dockyard.db.clock import now_ms
from dockyard.db.prune_store import PruneDecision, PrunePolicy, PruneStore
from dockyard.domain.access import validate_namespace_name
from dockyard.domain.audit import Actor
from dockyard.domain.errors import InvalidRequest
from dockyard.domain.names import namespace_of, validate_repository_name
from dockyard.services.durations import parse_duration
from dockyard.services.tags import validate_tag_pattern

log = logging.getLogger("dockyard.prune")

PRUNE = "prune"
MAX_KEEP = 1_000_000


class PruneService:
    kind = PRUNE

    def __init__(self, store: PruneStore) -> None:
        self.store = store

    async def add(
        self,
        namespace: str,
        *,
        repository: str | None = None,
        keep: int | None = None,
        older_than: str | None = None,
        pattern: str | None = None,
        actor: Actor,
    ) -> PrunePolicy:
        """Keep the `keep` most recent tags, or expire tags older than `older_than` (e.g. 30d).

        Exactly one of the two; `pattern` (a glob such as `v*`) limits the policy to matching
        tags; `repository` (a full name inside `namespace`) limits it to one repository.
        """
        validate_namespace_name(namespace)
        if (keep is None) == (older_than is None):
            raise InvalidRequest("give exactly one of a keep count or an older-than duration")
        if keep is not None and not 1 <= keep <= MAX_KEEP:
            raise InvalidRequest(f"keep count must be between 1 and {MAX_KEEP}, not {keep}")
        if repository is not None and namespace_of(validate_repository_name(repository)) != namespace:
            raise InvalidRequest(f"repository {repository} is not in namespace {namespace!r}")
        return await self.store.add(
            namespace,
            repository,
            keep_count=keep,
            older_than_seconds=None if older_than is None else parse_duration(older_than),
            tag_pattern=None if pattern is None else validate_tag_pattern(pattern),
            actor=actor,
        )

    async def policies(self, namespace: str) -> list[PrunePolicy]:
        return await self.store.policies(validate_namespace_name(namespace))

    async def remove(self, policy_id: int, *, actor: Actor) -> None:
        await self.store.remove(policy_id, actor=actor)

    async def plan(self) -> list[PruneDecision]:
        """What a pass would expire now, with the policy and reason for each tag."""
        return await self.store.plan(now_ms())

    async def run(self, *, dry_run: bool) -> list[PruneDecision]:
        """One pass: the tags expired (or, with `dry_run`, those that would be)."""
        decisions = await self.plan()
        if dry_run or not decisions:
            return decisions
        return await self.store.apply(decisions, now_ms())

    async def handle(self, payload: dict[str, Any]) -> None:
        """Job handler: one pass over every policy."""
        expired = await self.run(dry_run=False)
        if expired:
            log.info("prune: expired %d tags", len(expired))
