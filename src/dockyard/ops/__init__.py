"""Operations endpoints: `/health/instance`, `/health/endtoend`, `/metrics`, and request metrics.

Imports `services` and below, never `db` or `storage`.
"""
