"""Typed domain errors raised by services; entry points map them to wire formats in one place."""

from __future__ import annotations


class DockyardError(Exception):
    """Base of every error a service raises on purpose."""

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class DigestInvalid(DockyardError):
    """A digest is malformed, or content does not match the digest it was given."""


class NameInvalid(DockyardError):
    """A repository name does not follow the grammar."""


class TagInvalid(DockyardError):
    """A tag does not follow the grammar."""


class NameUnknown(DockyardError):
    """The repository does not exist."""


class BlobUnknown(DockyardError):
    """The blob is not known to the repository."""


class BlobUploadUnknown(DockyardError):
    """The upload session does not exist (never did, finished or cancelled)."""


class BlobUploadInvalid(DockyardError):
    """The upload request is malformed (bad Content-Range, length mismatch, truncated body)."""


class RangeNotSatisfiable(DockyardError):
    """A chunk does not start at the session's offset, or a read range lies outside the blob."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class PaginationInvalid(DockyardError):
    """A paging parameter (`n`) is not a non-negative integer."""


class UploadBusy(DockyardError):
    """Another request is writing to the same upload session right now."""


class ManifestUnknown(DockyardError):
    """The manifest (or tag) is not known to the repository."""


class ManifestInvalid(DockyardError):
    """The manifest is not valid JSON or does not follow its schema."""


class ManifestBlobUnknown(DockyardError):
    """A manifest names a blob absent from the repository."""


class ManifestTooLarge(DockyardError):
    """A manifest is larger than the configured limit."""


class SizeInvalid(DockyardError):
    """A declared size does not match the content."""


class Unsupported(DockyardError):
    """The operation is not supported."""


class Unauthorized(DockyardError):
    """No or bad credentials were presented."""


class InsufficientScope(Unauthorized):
    """A bearer token does not carry the action; the client should ask for a new token."""


class FreshLoginRequired(Unauthorized):
    """A browser session asks for a sensitive operation, and its password was entered too long ago."""


class Denied(DockyardError):
    """The principal is known but may not perform the action."""


class CsrfFailed(Denied):
    """A change authenticated by a session cookie lacks the session's CSRF token."""


class ScopeDenied(Denied):
    """The principal's role allows the action but its token's scopes do not."""


class TooManyRequests(DockyardError):
    """A rate limit was hit."""


class StorageUnavailable(DockyardError):
    """The blob store failed; the request may be retried."""


class AlreadyExists(DockyardError):
    """An account, team, robot, repository or token of that name exists already."""


class Conflict(DockyardError):
    """The change contradicts the current state (removing an organization's last owner, changing
    its owners team)."""


class NotFound(DockyardError):
    """A named account, team, robot, repository or token does not exist."""


class InvalidRequest(DockyardError):
    """A request or command is malformed (bad name, bad role, bad duration)."""


class QuotaExceeded(Denied):
    """The change would take the namespace's storage past its quota's reject threshold."""


class Busy(DockyardError):
    """A resource stayed locked by other work for too long; the request may be retried."""
