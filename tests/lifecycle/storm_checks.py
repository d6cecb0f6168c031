"""End-state checks of the garbage-collection storm: what the registry serves over HTTP, the rows
in PostgreSQL and the objects in local storage, once the clients stopped and the collector had
time to finish.

The SQL restates the reachability rules of `dockyard.db.gc_store` independently (this module
imports nothing from Dockyard), so a collector that forgets a rule, or removes too much, shows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import psycopg

from tests.lifecycle.storm_support import OCI_MANIFEST, Aborted, Puller, Tally

DEFAULT_WINDOW_SECONDS = 14 * 86400


#: (what, query): each query lists rows that must not exist after the storm and the grace period.
#: `%(cutoff)s` is now minus the grace period, `%(now)s` now, both in milliseconds.
FORBIDDEN = [
    (
        "blob rows no link and no manifest references",
        """SELECT b.digest FROM blobs b
           WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.blob_id = b.id)
             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_id = b.id)""",
    ),
    (
        "placements of no blob",
        """SELECT p.blob_id, p.location FROM placements p
           WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = p.blob_id)""",
    ),
    (
        "blob rows without a placement",
        "SELECT b.digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM placements p WHERE p.blob_id = b.id)",
    ),
    (
        "blob links no manifest of their repository references",
        """SELECT r.name, b.digest FROM repository_blobs rb
           JOIN repositories r ON r.id = rb.repository_id JOIN blobs b ON b.id = rb.blob_id
           WHERE rb.created_at < %(cutoff)s AND NOT EXISTS (
               SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
               WHERE mb.blob_id = rb.blob_id AND m.repository_id = rb.repository_id)""",
    ),
    (
        "manifest blobs not readable in the manifest's repository (a pull would fail)",
        """SELECT r.name, m.digest, b.digest FROM manifest_blobs mb
           JOIN manifests m ON m.id = mb.manifest_id JOIN repositories r ON r.id = m.repository_id
           JOIN blobs b ON b.id = mb.blob_id
           WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb
                             WHERE rb.repository_id = m.repository_id AND rb.blob_id = mb.blob_id)""",
    ),
    (
        "manifests nothing reaches (no tag row, no parent index, subject absent) past the grace period",
        """SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
           WHERE m.created_at < %(cutoff)s AND m.touched_at < %(cutoff)s
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
             AND NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.child_id = m.id)
             AND (m.subject_digest IS NULL OR NOT EXISTS (
                  SELECT 1 FROM manifests s
                  WHERE s.repository_id = m.repository_id AND s.digest = m.subject_digest))""",
    ),
    (
        "index children outside their parent's repository",
        """SELECT p.digest, c.digest FROM manifest_children mc
           JOIN manifests p ON p.id = mc.parent_id JOIN manifests c ON c.id = mc.child_id
           WHERE p.repository_id <> c.repository_id""",
    ),
    (
        "tag history rows past their namespace's time-machine window",
        f"""SELECT r.name, t.name FROM tags t
           JOIN repositories r ON r.id = t.repository_id JOIN namespaces n ON n.id = r.namespace_id
           WHERE COALESCE(t.end_at, t.expires_at) IS NOT NULL
             AND COALESCE(t.end_at, t.expires_at)
                 + COALESCE(n.time_machine_seconds, {DEFAULT_WINDOW_SECONDS}) * 1000 < %(now)s""",
    ),
    ("pending storage deletions", "SELECT id, digest FROM storage_deletions"),
    ("upload sessions", "SELECT id FROM uploads"),
    (
        "usage items no link or manifest of their namespace references",
        """SELECT n.name, i.digest FROM namespace_usage_items i JOIN namespaces n ON n.id = i.namespace_id
           WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                             JOIN blobs b ON b.id = rb.blob_id
                             WHERE r.namespace_id = i.namespace_id AND b.digest = i.digest)
             AND NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
                             WHERE r.namespace_id = i.namespace_id AND m.digest = i.digest)""",
    ),
    (
        "linked blobs their namespace does not count",
        """SELECT DISTINCT n.name, b.digest FROM repository_blobs rb
           JOIN repositories r ON r.id = rb.repository_id JOIN namespaces n ON n.id = r.namespace_id
           JOIN blobs b ON b.id = rb.blob_id
           WHERE NOT EXISTS (SELECT 1 FROM namespace_usage_items i
                             WHERE i.namespace_id = r.namespace_id AND i.digest = b.digest)""",
    ),
    (
        "manifests their namespace does not count",
        """SELECT DISTINCT n.name, m.digest FROM manifests m
           JOIN repositories r ON r.id = m.repository_id JOIN namespaces n ON n.id = r.namespace_id
           WHERE NOT EXISTS (SELECT 1 FROM namespace_usage_items i
                             WHERE i.namespace_id = r.namespace_id AND i.digest = m.digest)""",
    ),
    (
        "namespaces whose usage counter differs from the sum of their items",
        """SELECT n.name,
                  (SELECT COALESCE(SUM(u.bytes), 0) FROM namespace_usage u WHERE u.namespace_id = n.id),
                  (SELECT COALESCE(SUM(i.size), 0) FROM namespace_usage_items i WHERE i.namespace_id = n.id)
           FROM namespaces n
           WHERE (SELECT COALESCE(SUM(u.bytes), 0) FROM namespace_usage u WHERE u.namespace_id = n.id)
              <> (SELECT COALESCE(SUM(i.size), 0) FROM namespace_usage_items i WHERE i.namespace_id = n.id)""",
    ),
]


def database_problems(dsn: str, *, now_ms: int, grace_ms: int) -> list[str]:
    problems = []
    with psycopg.connect(dsn) as conn:
        for what, query in FORBIDDEN:
            rows = list(conn.execute(query, {"cutoff": now_ms - grace_ms, "now": now_ms}).fetchall())
            if rows:
                problems.append(f"{len(rows)} {what}: {rows[:10]}")
    return problems


def usage(dsn: str) -> dict[str, int]:
    """Bytes counted per namespace."""
    with psycopg.connect(dsn) as conn:
        return {
            name: int(total)
            for name, total in conn.execute(
                """SELECT n.name, COALESCE(SUM(u.bytes), 0) FROM namespaces n
                   LEFT JOIN namespace_usage u ON u.namespace_id = n.id GROUP BY n.name"""
            )
        }


def blob_digests(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(row[0]) for row in conn.execute("SELECT digest FROM blobs")}


def row_counts(dsn: str) -> dict[str, int]:
    tables = ["blobs", "repository_blobs", "manifests", "manifest_children", "tags", "namespace_usage_items"]
    counts = {}
    with psycopg.connect(dsn) as conn:
        for table in tables:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else -1
    return counts


def gc_totals(dsn: str) -> dict[str, int]:
    """What the collectors removed so far (`dockyard gc status`)."""
    with psycopg.connect(dsn) as conn:
        return {str(name): int(value) for name, value in conn.execute("SELECT name, value FROM gc_stats")}


def live_manifests(dsn: str, repositories: list[str]) -> list[tuple[str, str]]:
    """(repository, digest) of every manifest the registry should serve by digest."""
    with psycopg.connect(dsn) as conn:
        return [
            (str(name), str(digest))
            for name, digest in conn.execute(
                """SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
                   WHERE m.deleted_at IS NULL AND r.state = 'normal' AND r.name = ANY(%s)
                   ORDER BY r.name, m.id""",
                (repositories,),
            )
        ]


def storage_problems(root: Path, digests: set[str]) -> list[str]:
    """Local storage must hold exactly one intact object per blob row, and no upload leftovers."""
    stored: dict[str, Path] = {}
    for path in (root / "blobs").rglob("*"):
        if path.is_file():
            stored[f"{path.parent.parent.name}:{path.name}"] = path
    problems = []
    orphans = sorted(stored.keys() - digests)
    missing = sorted(digests - stored.keys())
    if orphans:
        problems.append(f"{len(orphans)} objects in storage without a blob row: {orphans[:10]}")
    if missing:
        problems.append(f"{len(missing)} blob rows without their object in storage: {missing[:10]}")
    corrupt = [
        digest
        for digest, path in stored.items()
        if digest.startswith("sha256:") and "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() != digest
    ]
    if corrupt:
        problems.append(f"{len(corrupt)} objects whose bytes do not match their digest: {corrupt[:10]}")
    leftovers = sorted(str(p.relative_to(root)) for p in (root / "uploads").rglob("*") if p.is_file())
    if leftovers:
        problems.append(f"{len(leftovers)} upload files left in storage: {leftovers[:10]}")
    return problems


def verify_served(http: httpx.Client, repositories: list[str], dsn: str) -> tuple[Tally, dict[str, int]]:
    """Pull every live tag and every live manifest with all it names; check every referrer list.

    Nothing else writes now: any missing piece is a failure.
    """
    tally = Tally()
    puller = Puller(http, tally, strict=True)
    seen = {"tags": 0, "manifests": 0, "referrers": 0}
    for repository in repositories:
        response = http.get(f"/v2/{repository}/tags/list")
        if response.status_code == 404:
            continue
        for tag in response.json().get("tags") or []:
            seen["tags"] += 1
            try:
                if puller.pull(repository, tag) is None:
                    tally.fail(f"{repository}:{tag} is listed but its manifest is not served")
            except Aborted:
                pass
    for repository, digest in live_manifests(dsn, repositories):
        seen["manifests"] += 1
        try:
            if puller.pull(repository, digest) is None:
                tally.fail(f"{repository}@{digest} is recorded live but not served")
                continue
            listed = http.get(f"/v2/{repository}/referrers/{digest}")
            if listed.status_code != 200:
                tally.fail(f"referrers of {repository}@{digest}: {listed.status_code}")
                continue
            for descriptor in json.loads(listed.content)["manifests"]:
                seen["referrers"] += 1
                document = puller.pull(repository, descriptor["digest"])
                if document is None:
                    tally.fail(f"{repository}: referrer {descriptor['digest']} of {digest} is listed, not served")
                elif (document.get("subject") or {}).get("digest") != digest:
                    tally.fail(f"{repository}: referrer {descriptor['digest']} does not name {digest}")
        except Aborted:
            pass
    return tally, seen


def verify_referrers_survive(http: httpx.Client, dsn: str, pushed: list[tuple[str, str, str, int]]) -> list[str]:
    """A referrer lives as long as its subject: every referrer pushed while its subject's current
    row already existed must still be served and listed (referrers are never deleted here)."""
    problems = []
    with psycopg.connect(dsn) as conn:
        for repository, digest, subject, pushed_at in pushed:
            row = conn.execute(
                """SELECT m.created_at FROM manifests m JOIN repositories r ON r.id = m.repository_id
                   WHERE r.name = %s AND m.digest = %s""",
                (repository, subject),
            ).fetchone()
            if row is None or int(row[0]) >= pushed_at:
                continue  # the subject went (or went and came back) since: the referrer may go
            if http.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).status_code != 200:
                problems.append(f"{repository}: referrer {digest} of the live subject {subject} is gone")
                continue
            listed = http.get(f"/v2/{repository}/referrers/{subject}").json()["manifests"]
            if digest not in {item["digest"] for item in listed}:
                problems.append(f"{repository}: referrer {digest} is not listed for its subject {subject}")
    return problems
