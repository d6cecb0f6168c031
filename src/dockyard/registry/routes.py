"""`/v2` handlers. Each: parse the request, authenticate, authorize, call one service, respond."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from dockyard.auth import Action
from dockyard.auth.authorize import acts_as_superuser
from dockyard.domain.errors import (
    BlobUploadInvalid,
    DigestInvalid,
    DockyardError,
    InsufficientScope,
    NameUnknown,
    PaginationInvalid,
    RangeNotSatisfiable,
    TooManyRequests,
    Unauthorized,
    Unsupported,
)
from dockyard.domain.names import validate_repository_name
from dockyard.oci import mediatypes as mt
from dockyard.registry.context import allow, client_ip, may, principal_of, realm, request_actor, service_name
from dockyard.registry.errors import API_VERSION_HEADER, error_response
from dockyard.registry.responses import BlobResponse
from dockyard.services.context import Services

Handler = Callable[[Request, Services, str, str], Awaitable[Response | ASGIApp]]

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<ref>[^/]*)$"), "upload"),
    (re.compile(r"^(?P<name>.+)/blobs/(?P<ref>[^/]+)$"), "blob"),
    (re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$"), "manifest"),
    (re.compile(r"^(?P<name>.+)/tags/list$"), "tags"),
    (re.compile(r"^(?P<name>.+)/referrers/(?P<ref>[^/]+)$"), "referrers"),
]

_BASE_HEADERS = {API_VERSION_HEADER[0]: API_VERSION_HEADER[1]}


async def dispatch(request: Request) -> Response | ASGIApp:
    services: Services = request.app.state.services
    path = request.path_params.get("path", "")
    try:
        if path == "":
            return await _base(request, services)
        if path == "_catalog":
            return await _catalog(request, services)
        for pattern, kind in _ROUTES:
            match = pattern.match(path)
            if match:
                name = validate_repository_name(match["name"])
                handler = _HANDLERS.get((kind, request.method))
                if handler is None:
                    raise Unsupported(f"{request.method} is not supported on {kind}")
                return await handler(request, services, name, match.groupdict().get("ref") or "")
        return error_response(_not_found(path))
    except DockyardError as error:
        return error_response(error, _error_headers(error, request, path))
    except ClientDisconnect:
        return Response(status_code=400)


def _not_found(path: str) -> DockyardError:
    return NameUnknown(f"no registry route for /v2/{path}")


def _error_headers(error: DockyardError, request: Request, path: str) -> dict[str, str]:
    if isinstance(error, Unauthorized):
        services: Services = request.app.state.services
        challenge = f'Bearer realm="{realm(request, services)}",service="{service_name(request, services)}"'
        scope = getattr(request.state, "scope", None)
        if scope:
            challenge += f',scope="{scope}"'
        if isinstance(error, InsufficientScope):
            challenge += ',error="insufficient_scope"'
        return {"WWW-Authenticate": challenge}
    if isinstance(error, TooManyRequests):
        return {"Retry-After": "60"}
    if isinstance(error, RangeNotSatisfiable):
        if "/blobs/uploads/" in path:
            return {
                "Location": request.url.path,
                "Range": _range(error.size),
                "Docker-Upload-UUID": path.rsplit("/", 1)[-1],
            }
        return {"Content-Range": f"bytes */{error.size}"}
    return {}


def _valid_name(name: str) -> bool:
    try:
        validate_repository_name(name)
    except DockyardError:
        return False
    return True


def _range(offset: int) -> str:
    # The spec's Range is inclusive; an empty session reports 0-0 like Distribution does.
    return f"0-{max(offset - 1, 0)}"


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BlobUploadInvalid(f"invalid Content-Length {value!r}")
    return int(value)


def _body(request: Request) -> AsyncIterator[bytes]:
    return request.stream()


# -- base and catalog ------------------------------------------------------------------------------


async def _base(request: Request, services: Services) -> Response:
    """200 for any authenticated caller (or bearer token); 401 with a challenge otherwise."""
    principal = await principal_of(request, services)
    if principal.anonymous and principal.grants is None:
        raise Unauthorized("authentication required")
    return Response(b"{}", 200, headers=_BASE_HEADERS, media_type="application/json")


def _paging(request: Request) -> tuple[int | None, str | None]:
    raw = request.query_params.get("n")
    n = None
    if raw is not None:
        if not raw.isdigit():
            raise PaginationInvalid(f"n must be a non-negative integer, not {raw!r}")
        n = int(raw)
    return n, request.query_params.get("last") or None


def _link(path: str, n: int, last: str | None) -> dict[str, str]:
    if last is None:
        return {}
    return {"Link": f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'}


async def _catalog(request: Request, services: Services) -> Response:
    if request.method != "GET":
        raise Unsupported("only GET is supported on the catalog")
    principal = await allow(request, services, Action.CATALOG, None)
    n, last = _paging(request)
    everything = acts_as_superuser(principal)  # a scoped token needs super:user to see it all
    page = await services.manifests.catalog(n, last, viewer=principal.account_id, everything=everything)
    size = services.manifests.page_size(n)
    body = _json({"repositories": page.items})
    return Response(
        body,
        200,
        headers={**_BASE_HEADERS, **_link("/v2/_catalog", size, page.next_last)},
        media_type="application/json",
    )


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- blobs -----------------------------------------------------------------------------------------


async def _blob_get(request: Request, services: Services, name: str, digest: str) -> Response | ASGIApp:
    await allow(request, services, Action.PULL, name)
    head = request.method == "HEAD"
    content = await services.blobs.content(name, digest, request.headers.get("range"), head=head)
    if content.redirect is not None:
        # The client fetches the bytes (and its Range) from the store directly.
        return Response(
            status_code=307,
            headers={**_BASE_HEADERS, "Location": content.redirect, "Docker-Content-Digest": content.digest},
        )
    headers = {
        **_BASE_HEADERS,
        "Docker-Content-Digest": content.digest,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(content.length),
        "ETag": f'"{content.digest}"',
        "Cache-Control": "max-age=31536000",
    }
    if content.partial:
        headers["Content-Range"] = f"bytes {content.start}-{content.start + content.length - 1}/{content.size}"
    return BlobResponse(
        206 if content.partial else 200,
        headers,
        path=content.path,
        open_stream=content.open_stream,
        start=content.start,
        length=content.length,
        head=head,
    )


async def _blob_delete(request: Request, services: Services, name: str, digest: str) -> Response:
    await allow(request, services, Action.DELETE, name)
    await services.blobs.delete(name, digest, actor=request_actor(request, services))
    return Response(status_code=202, headers={**_BASE_HEADERS, "Content-Length": "0"})


# -- uploads ---------------------------------------------------------------------------------------


def _upload_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    return {
        **_BASE_HEADERS,
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Range": _range(offset),
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _created_blob(name: str, digest: str) -> Response:
    headers = {
        **_BASE_HEADERS,
        "Location": f"/v2/{name}/blobs/{quote(digest, safe=':')}",
        "Docker-Content-Digest": digest,
    }
    return Response(status_code=201, headers={**headers, "Content-Length": "0"})


async def _upload_start(request: Request, services: Services, name: str, ref: str) -> Response:
    if ref:
        raise Unsupported("POST opens a new upload; use PATCH or PUT on an existing session")
    principal = await allow(request, services, Action.PUSH, name)
    creator = principal.account_id
    actor = request_actor(request, services)
    params = request.query_params
    mount = params.get("mount")
    if mount:
        source = params.get("from")
        # A mount from a repository the caller cannot read is an ordinary upload, never an error
        # that would reveal whether the blob exists there. Without `from`, the blob is mounted
        # from a repository holding it that the caller may read, if there is one.
        if source is None:
            source = await _readable_holder(request, services, mount)
        elif not (_valid_name(source) and await may(request, services, Action.PULL, source)):
            source = None
        if source is not None and await services.uploads.mount(name, mount, source, creator=creator, actor=actor):
            return _created_blob(name, mount)
    digest = params.get("digest")
    if digest:
        info = await services.uploads.monolithic(
            name, digest, _body(request), length=_content_length(request), creator=creator, actor=actor
        )
        return _created_blob(name, info.digest)
    state = await services.uploads.start(name, creator=creator, actor=actor)
    return Response(status_code=202, headers=_upload_headers(name, state.id, state.offset))


async def _readable_holder(request: Request, services: Services, digest: str) -> str | None:
    for holder in await services.uploads.holders(digest):
        if await may(request, services, Action.PULL, holder):
            return holder
    return None


async def _upload_status(request: Request, services: Services, name: str, upload_id: str) -> Response:
    await allow(request, services, Action.PUSH, name)
    state = await services.uploads.status(name, upload_id)
    return Response(status_code=204, headers=_upload_headers(name, state.id, state.offset))


def _content_range(request: Request) -> tuple[int | None, int | None]:
    raw = request.headers.get("content-range")
    if raw is None:
        return None, None
    match = re.fullmatch(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?", raw.strip())
    if match is None:
        raise RangeNotSatisfiable(f"invalid Content-Range {raw!r}", size=0)
    start, end = int(match[1]), int(match[2])
    if end < start:
        raise RangeNotSatisfiable(f"invalid Content-Range {raw!r}", size=0)
    return start, end - start + 1


async def _upload_patch(request: Request, services: Services, name: str, upload_id: str) -> Response:
    await allow(request, services, Action.PUSH, name)
    start, length = _content_range(request)
    declared = _content_length(request)
    if length is not None and declared is not None and declared != length:
        raise BlobUploadInvalid(f"Content-Length {declared} does not match Content-Range ({length} bytes)")
    try:
        state = await services.uploads.append(
            name, upload_id, _body(request), start=start, length=length if length is not None else declared
        )
    except RangeNotSatisfiable as error:
        current = await services.uploads.status(name, upload_id)
        raise RangeNotSatisfiable(error.message, size=current.offset) from None
    return Response(status_code=202, headers=_upload_headers(name, state.id, state.offset))


async def _upload_put(request: Request, services: Services, name: str, upload_id: str) -> Response:
    principal = await allow(request, services, Action.PUSH, name)
    digest = request.query_params.get("digest")
    if not digest:
        await services.uploads.status(name, upload_id)
        raise DigestInvalid("PUT must name the digest (?digest=)")
    info = await services.uploads.finish(
        name,
        upload_id,
        digest,
        _body(request),
        length=_content_length(request),
        creator=principal.account_id,
        actor=request_actor(request, services),
    )
    return _created_blob(name, info.digest)


async def _upload_delete(request: Request, services: Services, name: str, upload_id: str) -> Response:
    await allow(request, services, Action.PUSH, name)
    await services.uploads.cancel(name, upload_id)
    return Response(status_code=204, headers={**_BASE_HEADERS, "Content-Length": "0"})


# -- manifests, tags, referrers --------------------------------------------------------------------


def _accept(request: Request) -> list[str]:
    return [item.strip() for value in request.headers.getlist("accept") for item in value.split(",") if item.strip()]


async def _manifest_get(request: Request, services: Services, name: str, reference: str) -> Response:
    principal = await allow(request, services, Action.PULL, name)
    record = await services.manifests.get(name, reference, _accept(request))
    pulls = services.pulls
    if request.method == "GET" and pulls.enabled:
        # A pull: buffered as given, turned into a row and written in the background (never waited on).
        tag = None if reference == record.digest else reference
        user_agent = request.headers.get("user-agent")
        pulls.record(principal, client_ip(request, services), user_agent, name, record.digest, tag)
    headers = {
        **_BASE_HEADERS,
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
        "Content-Length": str(record.size),
    }
    if record.subject:
        headers["OCI-Subject"] = record.subject
    body = b"" if request.method == "HEAD" else record.content
    return Response(body, 200, headers=headers, media_type=record.media_type)


async def _manifest_put(request: Request, services: Services, name: str, reference: str) -> Response:
    principal = await allow(request, services, Action.PUSH, name)
    content = await services.manifests.read_body(_body(request), _content_length(request))
    result = await services.manifests.put(
        name,
        reference,
        request.headers.get("content-type"),
        content,
        creator=principal.account_id,
        actor=request_actor(request, services),
    )
    headers = {
        **_BASE_HEADERS,
        "Location": f"/v2/{name}/manifests/{quote(result.digest, safe=':')}",
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return Response(status_code=201, headers=headers)


async def _manifest_delete(request: Request, services: Services, name: str, reference: str) -> Response:
    await allow(request, services, Action.DELETE, name)
    await services.manifests.delete(name, reference, actor=request_actor(request, services))
    return Response(status_code=202, headers={**_BASE_HEADERS, "Content-Length": "0"})


async def _tags(request: Request, services: Services, name: str, _ref: str) -> Response:
    await allow(request, services, Action.PULL, name)
    n, last = _paging(request)
    page = await services.manifests.tags(name, n, last)
    size = services.manifests.page_size(n)
    headers = {**_BASE_HEADERS, **_link(f"/v2/{name}/tags/list", size, page.next_last)}
    return Response(_json({"name": name, "tags": page.items}), 200, headers=headers, media_type="application/json")


async def _referrers(request: Request, services: Services, name: str, digest: str) -> Response:
    await allow(request, services, Action.PULL, name)
    artifact_type = request.query_params.get("artifactType") or None
    body = await services.manifests.referrers(name, digest, artifact_type)
    headers = dict(_BASE_HEADERS)
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return Response(body, 200, headers=headers, media_type=mt.OCI_INDEX)


_HANDLERS: dict[tuple[str, str], Handler] = {
    ("blob", "GET"): _blob_get,
    ("blob", "HEAD"): _blob_get,
    ("blob", "DELETE"): _blob_delete,
    ("upload", "POST"): _upload_start,
    ("upload", "GET"): _upload_status,
    ("upload", "PATCH"): _upload_patch,
    ("upload", "PUT"): _upload_put,
    ("upload", "DELETE"): _upload_delete,
    ("manifest", "GET"): _manifest_get,
    ("manifest", "HEAD"): _manifest_get,
    ("manifest", "PUT"): _manifest_put,
    ("manifest", "DELETE"): _manifest_delete,
    ("tags", "GET"): _tags,
    ("referrers", "GET"): _referrers,
}
