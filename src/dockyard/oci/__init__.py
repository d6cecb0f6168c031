"""OCI and Docker media types; manifest and index parsing and validation. Imports `domain` only."""
