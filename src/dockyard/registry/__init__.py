"""The `/v2` registry API (OCI Distribution 1.1): thin handlers over `services`.

Imports `services`, `auth`, `oci` and `domain`; never `db` or `storage` (checked by import-linter).
Every error leaves through `registry.errors`, the one table of OCI error codes.
"""
