"""audit log indexes: pulls left out of the kind index, anonymous entries out of the performer
index; (created_at, id, kind) instead of (created_at)

Pulls are most of the log and every index is work for each of their INSERTs. The kind index
served no pull query (those scan by time: pulls are most rows), so it no longer holds them; the
performer index no longer holds entries without a performer (anonymous pulls). The time index
now ends with id and kind: pages come in (created_at, id) order without a sort, and a kind filter
or the counts per day and kind read the kind from the index.

On a large log the upgrade rebuilds three indexes; PostgreSQL blocks writes to the table meanwhile.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 01:14:22.308154
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NOT_PULL = sa.text("kind <> 'pull'")
HAS_PERFORMER = sa.text("performer IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_audit_log_kind_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_performer_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.create_index(
        "ix_audit_log_kind_created_at",
        "audit_log",
        ["kind", "created_at"],
        sqlite_where=NOT_PULL,
        postgresql_where=NOT_PULL,
    )
    op.create_index(
        "ix_audit_log_performer_created_at",
        "audit_log",
        ["performer", "created_at"],
        sqlite_where=HAS_PERFORMER,
        postgresql_where=HAS_PERFORMER,
    )
    op.create_index("ix_audit_log_created_at_id_kind", "audit_log", ["created_at", "id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_created_at_id_kind", table_name="audit_log")
    op.drop_index("ix_audit_log_performer_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_kind_created_at", table_name="audit_log")
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_performer_created_at", "audit_log", ["performer", "created_at"])
    op.create_index("ix_audit_log_kind_created_at", "audit_log", ["kind", "created_at"])
