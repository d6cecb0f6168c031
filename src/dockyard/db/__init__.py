"""Metadata: SQLAlchemy Core tables, Alembic migrations, engines and the queries services use.

Imports `domain`, `oci` and `config`. Query methods return immutable `domain.models` records,
never rows, so entry points and services stay independent of SQLAlchemy.
"""
