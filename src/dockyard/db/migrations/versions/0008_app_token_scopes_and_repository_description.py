"""app token scopes; repository description

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 16:10:00.000000

Existing app tokens keep the power they had: they get every scope.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Every scope as of this revision (domain.access.Scope), written out: migrations never import code
# that may change after them.
_ALL_SCOPES = "repo:read repo:write repo:admin repo:create org:admin user:read user:admin super:user"


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))
    with op.batch_alter_table("app_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.String(length=255), nullable=True))
    op.execute(sa.text("UPDATE app_tokens SET scopes = :scopes").bindparams(scopes=_ALL_SCOPES))
    with op.batch_alter_table("app_tokens", schema=None) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.String(length=255), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("app_tokens", schema=None) as batch_op:
        batch_op.drop_column("scopes")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("description")
