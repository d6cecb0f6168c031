"""The one mapping from domain errors to OCI error codes, statuses and bodies."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from dockyard.domain import errors as e

log = logging.getLogger("dockyard.registry")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")

#: error type -> (HTTP status, OCI error code)
OCI_ERRORS: dict[type[e.DockyardError], tuple[int, str]] = {
    e.DigestInvalid: (400, "DIGEST_INVALID"),
    e.NameInvalid: (400, "NAME_INVALID"),
    e.TagInvalid: (400, "MANIFEST_INVALID"),
    e.NameUnknown: (404, "NAME_UNKNOWN"),
    e.BlobUnknown: (404, "BLOB_UNKNOWN"),
    e.BlobUploadUnknown: (404, "BLOB_UPLOAD_UNKNOWN"),
    e.BlobUploadInvalid: (400, "BLOB_UPLOAD_INVALID"),
    e.RangeNotSatisfiable: (416, "RANGE_INVALID"),
    e.PaginationInvalid: (400, "PAGINATION_NUMBER_INVALID"),
    e.ManifestUnknown: (404, "MANIFEST_UNKNOWN"),
    e.ManifestInvalid: (400, "MANIFEST_INVALID"),
    e.ManifestBlobUnknown: (400, "MANIFEST_BLOB_UNKNOWN"),
    e.ManifestTooLarge: (413, "SIZE_INVALID"),
    e.SizeInvalid: (400, "SIZE_INVALID"),
    e.Unsupported: (405, "UNSUPPORTED"),
    e.Unauthorized: (401, "UNAUTHORIZED"),
    e.InsufficientScope: (401, "DENIED"),
    e.Denied: (403, "DENIED"),
    e.TooManyRequests: (429, "TOOMANYREQUESTS"),
    e.StorageUnavailable: (503, "UNAVAILABLE"),
    e.Busy: (503, "UNAVAILABLE"),
    e.InvalidRequest: (400, "INVALID_REQUEST"),
    e.NotFound: (404, "NOT_FOUND"),
    e.AlreadyExists: (409, "CONFLICT"),
    e.Conflict: (409, "CONFLICT"),
}


def oci_error_body(code: str, message: str, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def status_and_code(error: e.DockyardError) -> tuple[int, str]:
    """The most specific mapping along the error's class hierarchy."""
    for kind in type(error).__mro__:
        if kind in OCI_ERRORS:
            return OCI_ERRORS[kind]
    return 500, "UNKNOWN"


def error_response(error: e.DockyardError, headers: dict[str, str] | None = None) -> Response:
    status, code = status_and_code(error)
    if status >= 500:
        # The client sees a retriable error; operators need to see why.
        log.warning("%s %s: %s", status, code, error.message, exc_info=error.__cause__)
    merged = {API_VERSION_HEADER[0]: API_VERSION_HEADER[1], **(headers or {})}
    if status == 503:
        merged.setdefault("Retry-After", "1")
    return Response(
        oci_error_body(code, error.message, error.detail), status, headers=merged, media_type="application/json"
    )
