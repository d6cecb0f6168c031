"""`dockyard quota`: per-namespace storage quotas and the usage they count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dockyard.cli.admin import cli_actor, config_option, data_dir_option, run

if TYPE_CHECKING:
    from dockyard.db.quota_store import Drift, QuotaReport
    from dockyard.services.context import Services

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int) -> str:
    """`1536` -> `1.50 KiB`; whole bytes below 1 KiB."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _echo_report(report: QuotaReport) -> None:
    click.echo(f"namespace: {report.namespace}")
    if report.limit is None:
        click.echo("limit: none")
        click.echo(f"used: {human_size(report.used)} ({report.used} bytes)")
    else:
        percent = 100 * report.used / report.limit
        click.echo(f"limit: {human_size(report.limit)} ({report.limit} bytes)")
        click.echo(f"used: {human_size(report.used)} ({report.used} bytes, {percent:.1f}% of the limit)")
        click.echo(f"warn at: {report.warn_percent}% ({human_size(report.warn_bytes or 0)})")
        click.echo(f"reject above: {report.reject_percent}% ({human_size(report.reject_bytes or 0)})")
    click.echo(f"items: {report.items} digests counted ({report.pending_collection} pending collection)")
    click.echo(f"state: {report.state}")


@click.group()
def quota() -> None:
    """Per-namespace storage quotas (each blob and manifest counted once per namespace)."""


@quota.command("set")
@click.argument("namespace")
@click.option("--limit", required=True, help="Size such as 10GiB, 500MB or a number of bytes.")
@click.option("--warn", "warn_percent", type=int, help="Warn from this percent of the limit (default 80).")
@click.option("--reject", "reject_percent", type=int, help="Refuse pushes past this percent (default 100).")
@config_option
@data_dir_option
def quota_set(
    namespace: str,
    limit: str,
    warn_percent: int | None,
    reject_percent: int | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Limit NAMESPACE's storage; thresholds not given keep their current values."""

    async def action(services: Services) -> QuotaReport:
        return await services.quota.set(namespace, limit, warn_percent, reject_percent, actor=cli_actor())

    _echo_report(run(config_file, data_dir, action))


@quota.command("clear")
@click.argument("namespace")
@config_option
@data_dir_option
def quota_clear(namespace: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Remove NAMESPACE's quota (usage is still counted)."""
    run(config_file, data_dir, lambda s: s.quota.clear(namespace, actor=cli_actor()))
    click.echo(f"quota of {namespace} cleared")


@quota.command("show")
@click.argument("namespace")
@config_option
@data_dir_option
def quota_show(namespace: str, config_file: Path | None, data_dir: Path | None) -> None:
    """NAMESPACE's limit, thresholds, usage and state (ok, warning, over)."""
    _echo_report(run(config_file, data_dir, lambda s: s.quota.show(namespace)))


@quota.command("reconcile")
@click.argument("namespace", required=False)
@config_option
@data_dir_option
def quota_reconcile(namespace: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Recompute usage from what NAMESPACE (default: every namespace) references; print corrections."""
    drifts: list[Drift] = run(config_file, data_dir, lambda s: s.quota.reconcile(namespace))
    for drift in drifts:
        click.echo(f"corrected: {drift}")
    if not drifts:
        click.echo("no drift")
