"""`dockyard prune`: tag retention policies and prune passes."""

from __future__ import annotations

from pathlib import Path

import click

from dockyard.cli.admin import cli_actor, config_option, data_dir_option, run


@click.group()
def prune() -> None:
    """Auto-prune: expire tags by retention policy (garbage collection reclaims the rest)."""


@prune.group()
def policy() -> None:
    """Retention policies per namespace or repository."""


@policy.command("add")
@click.argument("namespace")
@click.option(
    "--repo", "repository", metavar="NAMESPACE/NAME", help="Only this repository (default: all of NAMESPACE)."
)
@click.option("--keep", type=int, help="Keep the N most recent tags, expire the others.")
@click.option("--older-than", help="Expire tags pushed longer ago than this (e.g. 12h, 30d, 2w).")
@click.option("--pattern", help="Only tags matching this glob (e.g. 'v*').")
@config_option
@data_dir_option
def policy_add(
    namespace: str,
    repository: str | None,
    keep: int | None,
    older_than: str | None,
    pattern: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Add a policy on NAMESPACE: give exactly one of --keep N or --older-than DURATION."""
    added = run(
        config_file,
        data_dir,
        lambda s: s.prune.add(
            namespace, repository=repository, keep=keep, older_than=older_than, pattern=pattern, actor=cli_actor()
        ),
    )
    click.echo(f"added prune policy {added.id} on {added.repository or namespace}: {added.rule}")


@policy.command("list")
@click.argument("namespace")
@config_option
@data_dir_option
def policy_list(namespace: str, config_file: Path | None, data_dir: Path | None) -> None:
    """List the policies of NAMESPACE and of its repositories: id, scope, rule."""
    for item in run(config_file, data_dir, lambda s: s.prune.policies(namespace)):
        scope = item.repository or f"{item.namespace} (every repository)"
        click.echo(f"{item.id}\t{scope}\t{item.rule}")


@policy.command("remove")
@click.argument("policy_id", type=int, metavar="ID")
@config_option
@data_dir_option
def policy_remove(policy_id: int, config_file: Path | None, data_dir: Path | None) -> None:
    """Remove policy ID."""
    run(config_file, data_dir, lambda s: s.prune.remove(policy_id, actor=cli_actor()))
    click.echo(f"removed prune policy {policy_id}")


@prune.command("run")
@click.option("--dry-run", is_flag=True, help="Show what would expire, and why; change nothing.")
@config_option
@data_dir_option
def prune_run(dry_run: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Apply every policy once: expire the tags they select (one line each, with the reason)."""
    decisions = run(config_file, data_dir, lambda s: s.prune.run(dry_run=dry_run))
    for decision in decisions:
        click.echo(f"{decision.repository}:{decision.tag} {decision.digest} — {decision.reason}")
    verb = "would expire" if dry_run else "expired"
    click.echo(f"{verb} {len(decisions)} tag{'' if len(decisions) == 1 else 's'}")
