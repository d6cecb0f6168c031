"""Durable jobs in the database (leases, retries, idempotent handlers). Imports `db` and below."""
