"""Schema migrations (Alembic): upgrade, downgrade, and the start-up check."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dockyard.db.engine import create_sync_engine


class SchemaOutOfDate(Exception):
    """The database schema is not at the revision this Dockyard needs."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "dockyard.db:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    _run(url, lambda config: command.downgrade(config, revision))


def _run(url: str, action: object) -> None:
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            config = _config()
            config.attributes["connection"] = conn
            action(config)  # type: ignore[operator]
    finally:
        engine.dispose()


def check_current(url: str) -> None:
    """Raise SchemaOutOfDate unless the database is exactly at the head revision."""
    current = current_revision(url)
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or 'none (empty database)'}, this Dockyard needs {head}: "
            "run `dockyard db upgrade` with the same configuration first"
        )
