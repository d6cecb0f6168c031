"""`dockyard logs`: read, count, export and archive the audit log (docs/audit.md)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dockyard.cli.admin import config_option, data_dir_option, run
from dockyard.domain.audit import AuditEntry, AuditFilter
from dockyard.domain.errors import InvalidRequest
from dockyard.services.durations import parse_instant

if TYPE_CHECKING:
    from dockyard.services.context import Services

F = TypeVar("F", bound=Callable[..., Any])

_TIME_HELP = "an ISO 8601 time (UTC unless it has an offset) or a duration such as 2h or 30d (that long ago)"


def _filters(command: F) -> F:
    """The filter options every `logs` command takes."""
    options = [
        click.option("--namespace", help="Only entries about this user or organization namespace."),
        click.option("--repo", "repository", metavar="NAMESPACE/NAME", help="Only entries about this repository."),
        click.option("--performer", help="Only entries by this user, robot (NS+NAME) or system performer."),
        click.option("--kind", help="Only this kind and those below it (tag: tag.move, tag.delete …); K* a prefix."),
        click.option("--since", help=f"From this time on: {_TIME_HELP}."),
        click.option("--until", help=f"Before this time: {_TIME_HELP}."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _wanted(
    namespace: str | None,
    repository: str | None,
    performer: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
) -> AuditFilter:
    now = int(time.time() * 1000)
    try:
        return AuditFilter(
            namespace=namespace,
            repository=repository,
            performer=performer,
            kind=kind,
            since=None if since is None else parse_instant(since, now),
            until=None if until is None else parse_instant(until, now),
        )
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message) from None


def _line(entry: AuditEntry) -> str:
    performer = entry.performer or "-"
    if entry.performer_kind:
        performer += f" ({entry.performer_kind})"
    if entry.via_app:
        performer += f" via {entry.via_app}"
    metadata = json.dumps(entry.metadata, sort_keys=True, separators=(",", ":"))
    subject = entry.repository or entry.namespace or "-"
    return "\t".join([entry.as_json()["time"], entry.kind, performer, entry.ip or "-", subject, metadata])


@click.group(invoke_without_command=True)
@_filters
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Entries to show.")
@click.option("--cursor", help="Continue after the last page (the cursor it printed on standard error).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the export format).")
@config_option
@data_dir_option
@click.pass_context
def logs(
    ctx: click.Context,
    namespace: str | None,
    repository: str | None,
    performer: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """The audit log, newest first: time, kind, performer, client IP, repository, details.

    Shows the entries still in the database (see `export` for archived days).
    """
    if ctx.invoked_subcommand is not None:
        return
    wanted = _wanted(namespace, repository, performer, kind, since, until)
    page = run(config_file, data_dir, lambda s: s.audit.query(wanted, cursor=cursor, limit=limit))
    for entry in page.entries:
        click.echo(entry.json_line().decode().rstrip("\n") if as_json else _line(entry))
    if page.next_cursor is not None:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@logs.command("export")
@_filters
@config_option
@data_dir_option
def logs_export(
    namespace: str | None,
    repository: str | None,
    performer: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Write the entries of a time range (archived days included) as JSON Lines, oldest first."""
    wanted = _wanted(namespace, repository, performer, kind, since, until)
    out = sys.stdout.buffer

    async def action(services: Services) -> int:
        count = 0
        async for line in services.audit.export(wanted):
            out.write(line)
            count += 1
        out.flush()
        return count

    count = run(config_file, data_dir, action)
    click.echo(f"exported {count} entries", err=True)


@logs.command("counts")
@_filters
@config_option
@data_dir_option
def logs_counts(
    namespace: str | None,
    repository: str | None,
    performer: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Entries per UTC day and kind (archived days included): day, kind, count."""
    wanted = _wanted(namespace, repository, performer, kind, since, until)
    for item in run(config_file, data_dir, lambda s: s.audit.counts(wanted)):
        click.echo(f"{item.day}\t{item.kind}\t{item.count}")


@logs.command("archive")
@config_option
@data_dir_option
def logs_archive(config_file: Path | None, data_dir: Path | None) -> None:
    """Move the days older than audit.retention_days to archives in storage now."""
    archived = run(config_file, data_dir, lambda s: s.audit.retain())
    for record in archived:
        click.echo(f"{record.key}\t{record.entries} entries\t{record.bytes} bytes\t{record.location}")
    click.echo(f"archived {len(archived)} day{'' if len(archived) == 1 else 's'}")
