"""Errors as problem JSON (RFC 9457): the one table from domain errors to status and stable code.

Every error the API answers — a domain error a service raised, a request that fails validation,
an unknown route, an unexpected failure — is `application/problem+json` with `type`, `title`,
`status`, `detail` and `code`. The codes are stable: clients may branch on them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from dockyard.domain import errors as e

log = logging.getLogger("dockyard.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:dockyard:problem:"

#: error type -> (HTTP status, stable code, title). The most specific class along the MRO wins.
PROBLEMS: dict[type[e.DockyardError], tuple[int, str, str]] = {
    e.DigestInvalid: (400, "DIGEST_INVALID", "Invalid digest"),
    e.NameInvalid: (400, "NAME_INVALID", "Invalid repository name"),
    e.TagInvalid: (400, "TAG_INVALID", "Invalid tag"),
    e.NameUnknown: (404, "NAME_UNKNOWN", "Repository not found"),
    e.BlobUnknown: (404, "BLOB_UNKNOWN", "Blob not found"),
    e.BlobUploadUnknown: (404, "BLOB_UPLOAD_UNKNOWN", "Upload not found"),
    e.BlobUploadInvalid: (400, "BLOB_UPLOAD_INVALID", "Invalid upload"),
    e.RangeNotSatisfiable: (416, "RANGE_INVALID", "Range not satisfiable"),
    e.PaginationInvalid: (400, "PAGINATION_INVALID", "Invalid paging parameters"),
    e.UploadBusy: (409, "UPLOAD_BUSY", "Upload busy"),
    e.ManifestUnknown: (404, "MANIFEST_UNKNOWN", "Manifest not found"),
    e.ManifestInvalid: (400, "MANIFEST_INVALID", "Invalid manifest"),
    e.ManifestBlobUnknown: (400, "MANIFEST_BLOB_UNKNOWN", "Manifest references an unknown blob"),
    e.ManifestTooLarge: (413, "MANIFEST_TOO_LARGE", "Manifest too large"),
    e.SizeInvalid: (400, "SIZE_INVALID", "Invalid size"),
    e.Unsupported: (405, "UNSUPPORTED", "Unsupported operation"),
    e.Unauthorized: (401, "UNAUTHORIZED", "Authentication required"),
    e.FreshLoginRequired: (401, "FRESH_LOGIN_REQUIRED", "Fresh login required"),
    e.CsrfFailed: (403, "CSRF_FAILED", "CSRF token missing or wrong"),
    # A registry bearer token lacking an action: on the API, a plain refusal.
    e.InsufficientScope: (403, "DENIED", "Access denied"),
    e.Denied: (403, "DENIED", "Access denied"),
    e.ScopeDenied: (403, "INSUFFICIENT_SCOPE", "Token scope insufficient"),
    e.QuotaExceeded: (403, "QUOTA_EXCEEDED", "Quota exceeded"),
    e.TooManyRequests: (429, "TOO_MANY_REQUESTS", "Too many requests"),
    e.StorageUnavailable: (503, "UNAVAILABLE", "Storage unavailable"),
    e.Busy: (503, "UNAVAILABLE", "Busy"),
    e.InvalidRequest: (400, "INVALID_REQUEST", "Invalid request"),
    e.NotFound: (404, "NOT_FOUND", "Not found"),
    e.AlreadyExists: (409, "CONFLICT", "Already exists"),
    e.Conflict: (409, "CONFLICT", "Conflict"),
}

#: Problems that do not come from a domain error.
VALIDATION = (422, "VALIDATION_FAILED", "Request validation failed")
INTERNAL = (500, "INTERNAL", "Internal error")
NOT_FOUND = ("NOT_FOUND", "Not found")
_HTTP: dict[int, tuple[str, str]] = {
    404: NOT_FOUND,
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
}


class FieldError(BaseModel):
    location: list[str | int] = Field(description="Where the invalid value is: body, query or path, then the field.")
    message: str


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(description="URI naming the problem type; `urn:dockyard:problem:` and the code in lower case.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this request.")
    code: str = Field(description="Stable machine-readable code (docs/api.md lists them).")
    errors: list[FieldError] | None = Field(None, description="Each invalid field (VALIDATION_FAILED only).")
    context: dict[str, Any] | None = Field(None, description="Facts about the problem (repository, action, scope …).")


def problem_for(error: e.DockyardError) -> tuple[int, str, str]:
    for kind in type(error).__mro__:
        if kind in PROBLEMS:
            return PROBLEMS[kind]
    return INTERNAL


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
    context: Any = None,
) -> JSONResponse:
    problem = Problem(
        type=TYPE_PREFIX + code.lower().replace("_", "-"),
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=errors,
        context=context if isinstance(context, dict) else None,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def _challenge(error: e.DockyardError) -> dict[str, str]:
    """RFC 6750 challenges: which credentials the API takes, and why these failed."""
    if isinstance(error, e.ScopeDenied):
        scope = error.detail.get("scope", "") if isinstance(error.detail, dict) else ""
        return {"WWW-Authenticate": f'Bearer realm="dockyard", error="insufficient_scope", scope="{scope}"'}
    if isinstance(error, e.Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="dockyard"'}
    if isinstance(error, e.TooManyRequests):
        return {"Retry-After": "60"}
    if isinstance(error, e.StorageUnavailable | e.Busy):
        return {"Retry-After": "1"}
    return {}


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, e.DockyardError)
    status, code, title = problem_for(error)
    if status >= 500:
        log.warning("%s %s on %s: %s", status, code, request.url.path, error.message, exc_info=error.__cause__)
    return problem_response(status, code, title, error.message, headers=_challenge(error), context=error.detail)


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    fields = [
        FieldError(
            location=[str(part) if not isinstance(part, int) else part for part in item.get("loc", ())],
            message=str(item.get("msg", "invalid")),
        )
        for item in error.errors()
    ]
    summary = "; ".join(f"{'.'.join(str(p) for p in f.location)}: {f.message}" for f in fields[:5])
    status, code, title = VALIDATION
    return problem_response(status, code, title, summary or "the request is invalid", errors=fields)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code, title = _HTTP.get(error.status_code, ("HTTP_ERROR", "HTTP error"))
    return problem_response(
        error.status_code, code, title, str(error.detail), headers=dict(error.headers or {}) or None
    )


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    status, code, title = INTERNAL
    return problem_response(status, code, title, "internal error; the request changed nothing it reported")


def install(app: FastAPI) -> None:
    """Answer every error of `app` with problem JSON."""
    app.add_exception_handler(e.DockyardError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem statuses."""
    return {
        # The schema lands under application/json; app.py moves it to application/problem+json.
        status: {"model": Problem, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }


_DESCRIPTIONS = {
    400: "Invalid input (problem JSON).",
    401: "No or invalid credentials (problem JSON).",
    403: "The caller may not do this, or its token's scopes do not cover it (problem JSON).",
    404: "No such resource (problem JSON).",
    409: "Conflicts with an existing resource (problem JSON).",
    413: "Too large (problem JSON).",
    422: "The request does not match its schema (problem JSON).",
    429: "Too many failed logins (problem JSON).",
    503: "Storage or database busy; retry (problem JSON).",
}
