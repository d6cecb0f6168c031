"""Administration commands: users, organizations, teams, robots, repositories, grants, tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dockyard.config import Settings
from dockyard.domain.audit import SYSTEM, Actor
from dockyard.domain.errors import DockyardError

if TYPE_CHECKING:
    from dockyard.services.context import Services

T = TypeVar("T")

config_option = click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="YAML configuration file."
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Data directory (default ./data)."
)


def run(config_file: Path | None, data_dir: Path | None, action: Callable[[Services], Awaitable[T]]) -> T:
    """Run one action with services built from the same configuration `serve` would use."""
    # Imported here: the application takes most of a command's start-up, and --help needs none of it.
    from dockyard.app import admin_services  # noqa: PLC0415
    from dockyard.cli.main import prepare_schema, settings_from  # noqa: PLC0415 - avoids an import cycle

    settings: Settings = settings_from(config_file, data_dir=data_dir)
    prepare_schema(settings)

    async def main() -> T:
        async with admin_services(settings) as services:
            return await action(services)

    try:
        return asyncio.run(main())
    except DockyardError as exc:
        raise click.ClickException(exc.message) from None


@functools.cache
def cli_actor() -> Actor:
    """Who the audit log names for a command: the operating-system user running it (kind `system`)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        user = ""
    return Actor(performer=user or "cli", performer_kind=SYSTEM, user_agent="dockyard-cli")


def _password_from_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("no password on standard input")
    return password


def _when(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group()
def user() -> None:
    """Users."""


@user.command("create")
@click.argument("name")
@click.option("--email")
@click.option("--superuser", is_flag=True)
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@config_option
@data_dir_option
def user_create(
    name: str, email: str | None, superuser: bool, password_stdin: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Create user NAME (and its namespace)."""
    password = _password_from_stdin()
    run(
        config_file,
        data_dir,
        lambda s: s.accounts.create_user(name, password, email=email, superuser=superuser, actor=cli_actor()),
    )
    click.echo(f"created user {name}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@config_option
@data_dir_option
def user_passwd(name: str, password_stdin: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Set NAME's password (invalidates its tokens and encrypted CLI password)."""
    password = _password_from_stdin()
    run(config_file, data_dir, lambda s: s.accounts.set_password(name, password, actor=cli_actor()))
    click.echo(f"password of {name} changed")


@user.command("disable")
@click.argument("name")
@config_option
@data_dir_option
def user_disable(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Disable NAME: no login, every token it holds stops working."""
    run(config_file, data_dir, lambda s: s.accounts.set_enabled(name, False, actor=cli_actor()))
    click.echo(f"disabled {name}")


@user.command("enable")
@click.argument("name")
@config_option
@data_dir_option
def user_enable(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Enable NAME again."""
    run(config_file, data_dir, lambda s: s.accounts.set_enabled(name, True, actor=cli_actor()))
    click.echo(f"enabled {name}")


@user.command("cli-password")
@click.argument("name")
@config_option
@data_dir_option
def user_cli_password(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Print NAME's encrypted CLI password (stands in for the password in docker login)."""
    click.echo(run(config_file, data_dir, lambda s: s.accounts.cli_password(name)))


@click.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--owner", required=True, help="User who joins the owners team.")
@config_option
@data_dir_option
def org_create(name: str, owner: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Create organization NAME with an owners team."""
    run(config_file, data_dir, lambda s: s.accounts.create_org(name, owner, actor=cli_actor()))
    click.echo(f"created organization {name}")


@org.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, required=True, help="Confirm: every repository of the organization goes.")
@config_option
@data_dir_option
def org_delete(name: str, yes: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Delete organization NAME with its teams, robots and repositories (purged in the background)."""
    count = run(config_file, data_dir, lambda s: s.gc.delete_namespace(name, actor=cli_actor()))
    click.echo(f"deleted organization {name} and its {count} repositories; contents are purged in the background")


@org.command("default-perm")
@click.argument("name")
@click.argument("subject")
@click.argument("role", type=click.Choice(["read", "write", "admin"]))
@click.option("--creator", help="Apply only to repositories this user creates (default: anyone).")
@config_option
@data_dir_option
def org_default_perm(
    name: str, subject: str, role: str, creator: str | None, config_file: Path | None, data_dir: Path | None
) -> None:
    """When a repository is created in NAME, grant SUBJECT (user, ORG/TEAM or NS+ROBOT) ROLE."""
    run(
        config_file,
        data_dir,
        lambda s: s.accounts.add_default_permission(name, subject, role, creator, actor=cli_actor()),
    )
    click.echo(f"default permission: {subject} gets {role} on new repositories in {name}")


@click.group()
def team() -> None:
    """Organization teams."""


@team.command("create")
@click.argument("org_name", metavar="ORG")
@click.argument("name")
@click.option("--role", type=click.Choice(["member", "creator", "admin"]), default="member", show_default=True)
@config_option
@data_dir_option
def team_create(org_name: str, name: str, role: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Create team NAME in ORG."""
    run(config_file, data_dir, lambda s: s.accounts.create_team(org_name, name, role, actor=cli_actor()))
    click.echo(f"created team {org_name}/{name} ({role})")


@team.command("add")
@click.argument("org_name", metavar="ORG")
@click.argument("name")
@click.argument("member")
@config_option
@data_dir_option
def team_add(org_name: str, name: str, member: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Add MEMBER (a user, or a robot NS+NAME) to team ORG/NAME."""
    run(config_file, data_dir, lambda s: s.accounts.add_team_member(org_name, name, member, actor=cli_actor()))
    click.echo(f"added {member} to {org_name}/{name}")


@click.group()
def robot() -> None:
    """Robot accounts."""


@robot.command("create")
@click.argument("namespace")
@click.argument("name")
@config_option
@data_dir_option
def robot_create(namespace: str, name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Create robot NAMESPACE+NAME; prints its name and its token (shown only now)."""
    full, token = run(config_file, data_dir, lambda s: s.accounts.create_robot(namespace, name, actor=cli_actor()))
    click.echo(full)
    click.echo(token)


@robot.command("regenerate")
@click.argument("full_name", metavar="NAMESPACE+NAME")
@config_option
@data_dir_option
def robot_regenerate(full_name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Give a robot a new token (printed); the old token and tokens issued for it stop working."""
    click.echo(run(config_file, data_dir, lambda s: s.accounts.regenerate_robot_token(full_name, actor=cli_actor())))


@robot.command("delete")
@click.argument("full_name", metavar="NAMESPACE+NAME")
@config_option
@data_dir_option
def robot_delete(full_name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Delete a robot; its access ends at once."""
    run(config_file, data_dir, lambda s: s.accounts.delete_robot(full_name, actor=cli_actor()))
    click.echo(f"deleted {full_name}")


@click.group()
def repo() -> None:
    """Repositories."""


@repo.command("create")
@click.argument("name", metavar="NAMESPACE/NAME")
@click.option("--public", is_flag=True, help="Anyone, even anonymous, may pull.")
@config_option
@data_dir_option
def repo_create(name: str, public: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Create a repository (private unless --public)."""
    run(config_file, data_dir, lambda s: s.accounts.create_repository(name, public=public, actor=cli_actor()))
    click.echo(f"created {'public' if public else 'private'} repository {name}")


@repo.command("visibility")
@click.argument("name", metavar="NAMESPACE/NAME")
@click.argument("visibility", type=click.Choice(["public", "private"]))
@config_option
@data_dir_option
def repo_visibility(name: str, visibility: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Make a repository public or private."""
    run(
        config_file,
        data_dir,
        lambda s: s.accounts.set_visibility(name, public=visibility == "public", actor=cli_actor()),
    )
    click.echo(f"{name} is {visibility}")


@repo.command("delete")
@click.argument("name", metavar="NAMESPACE/NAME")
@config_option
@data_dir_option
def repo_delete(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Delete a repository: it disappears at once, a background worker purges its contents."""
    run(config_file, data_dir, lambda s: s.gc.delete_repository(name, actor=cli_actor()))
    click.echo(f"deleted {name}; its contents are purged in the background (or now by `dockyard gc run`)")


@click.group()
def perm() -> None:
    """Repository permissions."""


@perm.command("grant")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("subject")
@click.argument("role", type=click.Choice(["read", "write", "admin"]))
@config_option
@data_dir_option
def perm_grant(repository: str, subject: str, role: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Grant SUBJECT (user, ORG/TEAM or NS+ROBOT) ROLE on a repository."""
    run(config_file, data_dir, lambda s: s.accounts.grant(repository, subject, role, actor=cli_actor()))
    click.echo(f"{subject} has {role} on {repository}")


@perm.command("revoke")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("subject")
@config_option
@data_dir_option
def perm_revoke(repository: str, subject: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Remove SUBJECT's permission on a repository."""
    run(config_file, data_dir, lambda s: s.accounts.revoke(repository, subject, actor=cli_actor()))
    click.echo(f"revoked {subject} on {repository}")


@click.group()
def token() -> None:
    """App-specific tokens."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--title", required=True)
@click.option("--expires", help="Lifetime, e.g. 12h, 30d, 2w (default: no expiry).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="What the token may do (repeatable): repo:read, repo:write, repo:admin, repo:create, org:admin, "
    "user:read, user:admin, super:user. Default: every scope.",
)
@config_option
@data_dir_option
def token_create(
    user_name: str,
    title: str,
    expires: str | None,
    scopes: tuple[str, ...],
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Create an app token for USER; prints it (shown only now). Log in as `$app` with it, or send it
    as `Authorization: Bearer` to the REST API."""
    _, secret = run(
        config_file,
        data_dir,
        lambda s: s.accounts.create_app_token(user_name, title, expires, scopes, actor=cli_actor()),
    )
    click.echo(secret)


@token.command("list")
@click.argument("user_name", metavar="USER")
@config_option
@data_dir_option
def token_list(user_name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """List USER's app tokens."""
    for item in run(config_file, data_dir, lambda s: s.accounts.app_tokens(user_name)):
        state = "revoked" if item.revoked_at else "active"
        click.echo(
            f"{item.id}\t{item.title}\t{state}\tcreated {_when(item.created_at)}\t"
            f"expires {_when(item.expires_at)}\tlast used {_when(item.last_used_at)}\tscopes {item.scopes}"
        )


@token.command("revoke")
@click.argument("user_name", metavar="USER")
@click.argument("token_id", type=int, metavar="ID")
@config_option
@data_dir_option
def token_revoke(user_name: str, token_id: int, config_file: Path | None, data_dir: Path | None) -> None:
    """Revoke one of USER's app tokens."""
    run(config_file, data_dir, lambda s: s.accounts.revoke_app_token(user_name, token_id, actor=cli_actor()))
    click.echo(f"revoked token {token_id}")


@click.group()
def auth() -> None:
    """Registry token signing keys."""


@auth.command("rotate-key")
@config_option
@data_dir_option
def auth_rotate_key(config_file: Path | None, data_dir: Path | None) -> None:
    """Add a new signing key and retire the others (they verify until their tokens expire)."""
    click.echo(run(config_file, data_dir, lambda s: s.accounts.rotate_signing_key(actor=cli_actor())))


@click.group()
def replication() -> None:
    """Geo-replication of blobs between storage locations."""


@replication.command("status")
@config_option
@data_dir_option
def replication_status(config_file: Path | None, data_dir: Path | None) -> None:
    """Backlog, oldest pending job and blobs held per location."""
    status = run(config_file, data_dir, lambda s: s.replication.status())
    click.echo(f"backlog: {status.backlog} jobs pending (oldest since {_when(status.oldest_pending_ms)})")
    click.echo(f"failed jobs: {status.failed}")
    click.echo(f"blobs: {status.blobs}")
    for name, held in status.held.items():
        click.echo(f"location {name}: {held} held, {status.blobs - held} missing")


@replication.command("run")
@config_option
@data_dir_option
def replication_run(config_file: Path | None, data_dir: Path | None) -> None:
    """Run every due background job now, then return."""
    click.echo(f"ran {run(config_file, data_dir, lambda s: s.jobs.drain())} jobs")


@click.command()
@config_option
@data_dir_option
def worker(config_file: Path | None, data_dir: Path | None) -> None:
    """Run background jobs (replication, …) until interrupted."""

    async def forever(services: Services) -> None:
        await services.gc.ensure_scheduled()
        await services.audit.ensure_scheduled()
        await services.jobs.forever(asyncio.Event())

    run(config_file, data_dir, forever)


@click.group()
def tag() -> None:
    """Tag history, restore, expiry and immutability."""


@tag.command("history")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("name", metavar="TAG")
@config_option
@data_dir_option
def tag_history(repository: str, name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Every manifest TAG pointed at, newest first."""
    for event in run(config_file, data_dir, lambda s: s.tags.history(repository, name)):
        flags = " immutable" if event.immutable else ""
        click.echo(
            f"{event.digest}\tfrom {_when(event.start_at)}\tuntil {_when(event.end_at)}"
            f"\texpires {_when(event.expires_at)}{flags}"
        )


@tag.command("restore")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("name", metavar="TAG")
@click.argument("digest")
@config_option
@data_dir_option
def tag_restore(repository: str, name: str, digest: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Point TAG back at DIGEST (which it pointed at within the namespace's time-machine window)."""
    run(config_file, data_dir, lambda s: s.tags.restore(repository, name, digest, actor=cli_actor()))
    click.echo(f"{repository}:{name} -> {digest}")


@tag.command("purge")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("name", metavar="TAG")
@config_option
@data_dir_option
def tag_purge(repository: str, name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Delete TAG permanently, with its history: it cannot be restored."""
    rows = run(config_file, data_dir, lambda s: s.tags.purge(repository, name, actor=cli_actor()))
    click.echo(f"purged {repository}:{name} ({rows} history rows)")


@tag.command("expire")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("name", metavar="TAG")
@click.option("--in", "duration", help="Expire after this long (e.g. 12h, 30d, 2w).")
@click.option("--clear", is_flag=True, help="Remove the tag's expiry.")
@config_option
@data_dir_option
def tag_expire(
    repository: str, name: str, duration: str | None, clear: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Set or clear TAG's expiry; an expired tag disappears from listings and pulls."""
    if clear == (duration is not None):
        raise click.UsageError("give exactly one of --in DURATION or --clear")
    when = run(
        config_file,
        data_dir,
        lambda s: s.tags.expire_in(repository, name, None if clear else duration, actor=cli_actor()),
    )
    click.echo(f"{repository}:{name} expires {_when(when)}")


@tag.command("immutable")
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("name", metavar="TAG")
@click.argument("state", type=click.Choice(["on", "off"]))
@config_option
@data_dir_option
def tag_immutable(repository: str, name: str, state: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Pin TAG (on): it can be neither moved nor deleted until turned off."""
    run(config_file, data_dir, lambda s: s.tags.set_immutable(repository, name, state == "on", actor=cli_actor()))
    click.echo(f"{repository}:{name} immutable {state}")


@repo.command("immutable-rule")
@click.argument("action", type=click.Choice(["add", "remove", "list"]))
@click.argument("repository", metavar="NAMESPACE/NAME")
@click.argument("pattern", required=False)
@config_option
@data_dir_option
def repo_immutable_rule(
    action: str, repository: str, pattern: str | None, config_file: Path | None, data_dir: Path | None
) -> None:
    """Tags matching PATTERN (a glob such as v*) may be neither moved nor deleted."""
    if action == "list":
        for rule in run(config_file, data_dir, lambda s: s.tags.rules(repository)):
            click.echo(rule)
        return
    if pattern is None:
        raise click.UsageError("PATTERN is required")
    if action == "add":
        run(config_file, data_dir, lambda s: s.tags.add_rule(repository, pattern, actor=cli_actor()))
    else:
        run(config_file, data_dir, lambda s: s.tags.remove_rule(repository, pattern, actor=cli_actor()))
    click.echo(f"{action} rule {pattern!r} on {repository}")


@org.command("time-machine")
@click.argument("namespace")
@click.argument("window")
@config_option
@data_dir_option
def org_time_machine(namespace: str, window: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Set how long deleted or moved tags of NAMESPACE (user or org) stay restorable (e.g. 14d, 0)."""
    run(config_file, data_dir, lambda s: s.tags.set_window(namespace, window, actor=cli_actor()))
    click.echo(f"time-machine window of {namespace}: {window}")


_PHASES = ("tags", "manifests", "links", "usage", "blobs", "storage", "uploads", "sweep")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="List what a pass would collect now and the bytes it would free.")
@click.option("--sweep", is_flag=True, help="With --dry-run: also list every location for orphaned storage.")
@config_option
@data_dir_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, sweep: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Garbage collection (continuous in the background; `run` runs one pass now)."""
    if ctx.invoked_subcommand is not None:
        return
    if not dry_run:
        click.echo(ctx.get_help())
        return
    result = run(config_file, data_dir, lambda s: s.gc.dry_run())
    for repository, tag_name in result.tags:
        click.echo(f"tag history  {repository}:{tag_name}")
    for repository, digest in result.manifests:
        click.echo(f"manifest     {repository}@{digest}")
    for digest, size in result.blobs:
        click.echo(f"blob         {digest}  {_size(size)}")
    if sweep:
        swept = run(config_file, data_dir, lambda s: s.gc.dry_sweep())
        if swept is not None:
            click.echo(
                f"sweep: {swept.objects} orphaned objects ({_size(swept.bytes)}) and {swept.uploads} unfinished "
                f"uploads past their grace period; {swept.waiting} more orphans within it"
            )
    counts = result.counts
    click.echo(
        f"would collect {counts.tags} tag rows, {counts.manifests} manifests, {counts.links} blob links, "
        f"{counts.blobs} blobs ({_size(counts.blob_bytes)}), {counts.uploads} abandoned uploads; "
        f"{counts.storage_objects} storage objects to delete ({_size(counts.storage_bytes)} freed)"
    )


@gc.command("run")
@click.option(
    "--sweep/--no-sweep",
    default=None,
    help="Also sweep orphaned storage (default: when the sweep interval is due).",
)
@config_option
@data_dir_option
def gc_run(sweep: bool | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Run one collection pass now (and purge deleted repositories), with progress."""
    totals = dict.fromkeys(_PHASES, 0)

    async def action(services: Services) -> Any:
        purged = await services.gc.purge_marked()
        with click.progressbar(
            length=len(_PHASES),
            label="collecting",
            item_show_func=lambda item: item,
            file=sys.stderr,
        ) as bar:
            reached = 0

            def progress(phase: str, count: int) -> None:
                nonlocal reached
                totals[phase] += count
                index = _PHASES.index(phase)
                bar.update(max(index - reached, 0), f"{phase}: {totals[phase]}")
                reached = max(reached, index)

            counts = await services.gc.run_pass(progress, sweep=sweep)
            bar.update(len(_PHASES) - reached, "done")
        return purged, counts

    purged, counts = run(config_file, data_dir, action)
    click.echo(
        f"purged {purged} deleted repositories; collected {counts.tags} tag rows, {counts.manifests} manifests, "
        f"{counts.links} blob links, {counts.blobs} blobs, {counts.uploads} abandoned uploads; "
        f"deleted {counts.storage_objects} storage objects, {_size(counts.storage_bytes)} freed; "
        f"swept {counts.swept_objects} orphaned objects or uploads ({_size(counts.swept_bytes)})"
    )


@gc.command("status")
@config_option
@data_dir_option
def gc_status(config_file: Path | None, data_dir: Path | None) -> None:
    """Totals collected so far and the work still pending."""
    stats = run(config_file, data_dir, lambda s: s.gc.stats())
    for name in sorted(stats):
        value = stats[name]
        click.echo(f"{name}: {_when(value) if name in ('last_pass_at', 'last_sweep_at') else value}")


COMMANDS = (user, org, team, robot, repo, perm, token, auth, replication, worker, tag, gc)
