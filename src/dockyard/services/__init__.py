"""Use cases: uploads, blobs, manifests and tags, health. Imports `auth`, `db`, `storage` and below.

Services raise typed `domain.errors`; they never build HTTP responses.
"""
