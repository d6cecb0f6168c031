"""`dockyard` command line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from dockyard.config import ConfigError, Settings, load_settings

_config_option = click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="YAML configuration file."
)
_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Data directory (default ./data)."
)


def settings_from(config_file: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="dockyard")
def main() -> None:
    """Dockyard, an enterprise container registry."""


@main.command()
@click.option("--host", help="Address to listen on (default 0.0.0.0).")
@click.option("--port", type=int, help="TCP port (default 8080).")
@click.option("--workers", type=int, help="HTTP worker processes (default 2).")
@_config_option
@_data_dir_option
def serve(
    host: str | None, port: int | None, workers: int | None, config_file: Path | None, data_dir: Path | None
) -> None:
    """Run the registry (the embedded default needs no configuration)."""
    from granian import Granian  # noqa: PLC0415 - heavy; only this command needs it
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415

    settings = settings_from(
        config_file, **{"server.host": host, "server.port": port, "server.workers": workers, "data_dir": data_dir}
    )
    prepare_schema(settings)
    _first_run(settings)
    metrics_dir = settings.data_dir / "run" / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["DOCKYARD_SETTINGS_JSON"] = settings.model_dump_json()
    server = settings.server
    click.echo(f"dockyard: serving on http://{server.host}:{server.port} (data in {settings.data_dir})", err=True)
    Granian(
        target="dockyard.app:asgi_factory",
        factory=True,
        address=server.host,
        port=server.port,
        interface=Interfaces.ASGI,
        workers=server.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_access=settings.log.access_log,
        log_level=LogLevels(settings.log.level),
        respawn_failed_workers=True,
    ).serve()


def prepare_schema(settings: Settings) -> None:
    """Create the data directory and bring the schema to the state this Dockyard needs."""
    from dockyard.db import migrate  # noqa: PLC0415
    from dockyard.storage import open_location  # noqa: PLC0415

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    try:
        if settings.auto_migrate:
            migrate.upgrade(settings.database_url)
        else:
            migrate.check_current(settings.database_url)
    except migrate.SchemaOutOfDate as exc:
        click.echo(f"dockyard: {exc}", err=True)
        sys.exit(2)
    for name, options in settings.storage.locations.items():
        open_location(name, options, settings.data_dir)


def _first_run(settings: Settings) -> None:
    """On the embedded default's first start, create superuser `admin` with a random password."""
    if not settings.is_embedded_default:
        return
    from dockyard.app import admin_services  # noqa: PLC0415

    async def create() -> str | None:
        async with admin_services(settings) as services:
            return await services.accounts.ensure_initial_admin()

    password = asyncio.run(create())
    if password is None:
        return
    path = settings.data_dir / "initial-admin-password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    click.echo(f"dockyard: created superuser admin with password {password} (also in {path})", err=True)


@main.group()
def config() -> None:
    """Validate configuration files and print their schema."""


@config.command("validate")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def config_validate(file: Path) -> None:
    """Check FILE (with DOCKYARD_* overrides); exit 1 naming every bad key."""
    settings_from(file)
    click.echo(f"{file}: valid")


@config.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the configuration file."""
    click.echo(json.dumps(Settings.model_json_schema(), indent=2))


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@_config_option
@_data_dir_option
def db_upgrade(revision: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Upgrade the schema (run before starting a new version on PostgreSQL)."""
    from dockyard.db import migrate  # noqa: PLC0415

    settings = settings_from(config_file, data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"schema at {migrate.current_revision(settings.database_url)}")


@db.command("downgrade")
@click.argument("revision")
@_config_option
@_data_dir_option
def db_downgrade(revision: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Downgrade the schema to REVISION."""
    from dockyard.db import migrate  # noqa: PLC0415

    settings = settings_from(config_file, data_dir=data_dir)
    migrate.downgrade(settings.database_url, revision)
    click.echo(f"schema at {migrate.current_revision(settings.database_url)}")


@db.command("current")
@_config_option
@_data_dir_option
def db_current(config_file: Path | None, data_dir: Path | None) -> None:
    """Print the schema revision of the database and the one this Dockyard needs."""
    from dockyard.db import migrate  # noqa: PLC0415

    settings = settings_from(config_file, data_dir=data_dir)
    click.echo(f"database: {migrate.current_revision(settings.database_url)}  needed: {migrate.head_revision()}")


def _register() -> None:
    from dockyard.cli.admin import COMMANDS  # noqa: PLC0415
    from dockyard.cli.logs import logs  # noqa: PLC0415
    from dockyard.cli.prune import prune  # noqa: PLC0415
    from dockyard.cli.quota import quota  # noqa: PLC0415

    for command in COMMANDS:
        main.add_command(command)
    main.add_command(logs)
    main.add_command(prune)
    main.add_command(quota)


_register()
