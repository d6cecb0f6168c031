"""OpenStack Swift driver over the Swift HTTP API (httpx), with tempauth (v1) or Keystone v3.

Objects are `<prefix><key>` in one container. Nothing is buffered whole: reads stream one GET
(ranged when asked), and writes of more than SINGLE_PUT bytes stream into segment objects of at
most `segment_size` bytes (chunked PUTs, each checked against its MD5) joined by a Static Large
Object (SLO) manifest at the key, so an object appears whole or not at all.

Segments live under `<prefix>.segments/`, which `keys` never lists, and each belongs to exactly
one manifest: a manifest is never copied as a manifest (that would share its segments, and
deleting either copy would break the other), `copy` copies the segments server-side into fresh
ones; `delete` removes a manifest with its segments (`?multipart-manifest=delete`); replacing a
manifest removes the segments only the old one referenced.

    .segments/objects/<key>/<random>/<n>        segments of `write` and `copy` to <key>
    .segments/uploads/<upload id>/<part>-<random>-<n>   segments of an upload's parts

An upload's `write_part` streams the request body into segments of its own (a fresh random name
per request, so a request the caller did not record never overwrites a recorded one) and returns
a Part whose token lists them with their ETags and sizes; `read_upload` reads them back;
`complete_upload` writes an SLO manifest over the recorded segments at `blobs/upload/<upload id>`
(so the bytes are written once, never copied) and removes the scrap. That manifest owns the
segments from then on: `abort_upload` of a completed upload (its manifest exists) leaves them
alone. The completion key is not the suggested one, so `derived_keys` is False.

Segments of an upload whose session is gone (its abort failed, or a crash came first) are not
objects `keys` lists: `pending_uploads` names the upload directories without a completed manifest,
and `abort_pending` removes them.

`signed_url` is a TempURL (HMAC-SHA256) signed with the account's (or the container's)
Temp-URL-Key; `temp_url_key` in the options is set on the account when it has none.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from dockyard.config.settings import SwiftStorage
from dockyard.storage.protocol import AccessRefused, ObjectMissing, Part, PendingUpload, StorageError

log = logging.getLogger(__name__)

SINGLE_PUT = 1024 * 1024
"""Objects up to this size are sent in one PUT (larger streams go into segments)."""
MAX_SEGMENTS = 1000
"""Segments one SLO manifest may list when the cluster's /info does not say (Swift's default);
more are grouped into nested manifests."""
PARALLEL = 8
"""Concurrent requests of one bulk step (deleting or copying segments)."""
TOKEN_MARGIN = 300.0
"""A token this close to its expiry is renewed before use."""
TOKEN_LIFETIME = 3600.0
"""Assumed lifetime of a token whose expiry the auth service did not give."""
KEY_CACHE_SECONDS = 300.0
"""How long the Temp-URL-Key found on the account or container is reused."""
SEGMENTS = ".segments/"
#: Failures of a request on a reused connection, retried once on a fresh one. Swift behind
#: keystonemiddleware answers a HEAD refused with 401 with a chunked body ("0\r\n\r\n"), which
#: leaves the kept-alive connection unusable for the next request.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
COMPLETED = "blobs/upload/"


@dataclass(frozen=True, slots=True)
class _Session:
    storage_url: str
    token: str
    expires: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Segment:
    name: str  # object name in the container
    etag: str
    size: int


class SwiftStore:
    """One container (and optional key prefix) of a Swift account."""

    derived_keys = False

    def __init__(self, name: str, options: SwiftStorage) -> None:
        self.name = name
        self.options = options
        if options.auth_version == "3" and not options.project:
            raise ValueError(f"storage.locations.{name}.project: required with auth_version 3 (Keystone)")
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._segments = f"{self._prefix}{SEGMENTS}"
        self._container_path = f"/{options.container}"
        self._session: _Session | None = None
        self._max_segments: int | None = None
        self._temp_url_key: tuple[str | None, float] | None = None
        # httpx clients and locks belong to one event loop: one of each per loop, made on first use.
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    # -- connection ----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for stale in [other for other in self._clients if other.is_closed()]:
                del self._clients[stale]
                self._locks.pop(stale, None)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(120.0, connect=5.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                transport=httpx.AsyncHTTPTransport(retries=1),
                follow_redirects=False,
            )
            self._clients[loop] = client
            self._locks[loop] = asyncio.Lock()
        return client

    async def close(self) -> None:
        """Close this event loop's HTTP client (drivers holding per-loop sessions close them)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def _authenticated(self, *, renew: bool = False) -> _Session:
        session = self._session
        if not renew and session is not None and session.expires - time.monotonic() > TOKEN_MARGIN:
            return session
        client = self._client()
        async with self._locks[asyncio.get_running_loop()]:
            if self._session is not session and self._session is not None:
                return self._session  # renewed meanwhile
            with _transport_errors("authentication"):
                if self.options.auth_version == "1":
                    self._session = await self._auth_v1(client)
                else:
                    self._session = await self._auth_v3(client)
            return self._session

    async def _auth_v1(self, client: httpx.AsyncClient) -> _Session:
        response = await client.get(
            self.options.auth_url, headers={"X-Auth-User": self.options.user, "X-Auth-Key": self.options.key}
        )
        _check(response, "authentication", missing=False)
        try:
            storage_url, token = response.headers["X-Storage-Url"], response.headers["X-Auth-Token"]
        except KeyError:
            raise StorageError("authentication: no X-Storage-Url/X-Auth-Token in the answer") from None
        lifetime = _float(response.headers.get("X-Auth-Token-Expires"), TOKEN_LIFETIME)
        return _Session(storage_url.rstrip("/"), token, time.monotonic() + lifetime)

    async def _auth_v3(self, client: httpx.AsyncClient) -> _Session:
        options = self.options
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": options.user, "domain": {"name": options.user_domain}, "password": options.key}
                    },
                },
                "scope": {"project": {"name": options.project, "domain": {"name": options.project_domain}}},
            }
        }
        url = options.auth_url.rstrip("/")
        response = await client.post(f"{url}/auth/tokens", json=body)
        _check(response, "authentication", missing=False)
        token = response.headers.get("X-Subject-Token")
        try:
            content = response.json()["token"]
        except (ValueError, KeyError, TypeError):
            content = None
        if not token or not isinstance(content, dict):
            raise StorageError("authentication: Keystone's answer has no token")
        storage_url = _object_store_endpoint(content.get("catalog") or [], options.region)
        if storage_url is None:
            region = f" in region {options.region}" if options.region else ""
            raise StorageError(f"authentication: no public object-store endpoint{region} in the Keystone catalog")
        lifetime = TOKEN_LIFETIME
        with contextlib.suppress(TypeError, ValueError):
            expires_at = datetime.datetime.fromisoformat(str(content["expires_at"]))
            lifetime = (expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
        return _Session(storage_url.rstrip("/"), token, time.monotonic() + lifetime)

    def _url(self, session: _Session, name: str | None = None) -> str:
        if name is None:
            return session.storage_url
        container = quote(self.options.container, safe="")
        if not name:
            return f"{session.storage_url}/{container}"
        return f"{session.storage_url}/{container}/{quote(name, safe='/')}"

    async def _request(
        self,
        method: str,
        name: str | None,
        what: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        missing: bool = True,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One request with a replayable body (renewing the token once on a 401), its answer
        checked: 404 is ObjectMissing (`missing`) or a StorageError, unless listed in `accept`.
        `name` is an object name, "" the container, None the account."""
        client = self._client()
        session = await self._authenticated()
        renewed = retried = False
        while True:
            try:
                response = await client.request(
                    method,
                    self._url(session, name),
                    params=params,
                    headers={**(headers or {}), "X-Auth-Token": session.token},
                    content=content,
                )
            except _STALE_CONNECTION as exc:
                if retried:
                    raise StorageError(f"{what}: cannot reach Swift: {exc!r}") from exc
                retried = True  # a kept-alive connection the server closed, or left unusable
                continue
            except httpx.HTTPError as exc:
                raise StorageError(f"{what}: cannot reach Swift: {exc!r}") from exc
            if response.status_code == 401 and not renewed:
                renewed = True
                session = await self._authenticated(renew=True)
                continue
            if response.status_code not in accept:
                _check(response, what, missing=missing)
            return response

    @contextlib.asynccontextmanager
    async def _get_stream(self, name: str, what: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """A streamed GET (token renewed once on a 401); the caller checks the status."""
        client = self._client()
        session = await self._authenticated()
        renewed = retried = False
        while True:
            request = client.build_request(
                "GET", self._url(session, name), headers={**headers, "X-Auth-Token": session.token}
            )
            try:
                response = await client.send(request, stream=True)
            except _STALE_CONNECTION as exc:
                if retried:
                    raise StorageError(f"{what}: cannot reach Swift: {exc!r}") from exc
                retried = True
                continue
            except httpx.HTTPError as exc:
                raise StorageError(f"{what}: cannot reach Swift: {exc!r}") from exc
            if response.status_code == 401 and not renewed:
                await response.aclose()
                renewed = True
                session = await self._authenticated(renew=True)
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return

    async def _put_stream(self, name: str, chunks: AsyncIterator[bytes]) -> _Segment:
        """Stream `chunks` into the object `name` (chunked); check the stored MD5."""
        digest = hashlib.md5(usedforsecurity=False)
        size = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        # The body cannot be sent twice: the token must be good for the whole upload.
        session = await self._authenticated()
        with _transport_errors(name):
            response = await self._client().put(
                self._url(session, name),
                headers={"X-Auth-Token": session.token, "Content-Type": "application/octet-stream"},
                content=body(),
            )
        _check(response, name, missing=False)
        etag = response.headers.get("Etag", "").strip('"')
        if etag != digest.hexdigest():
            raise StorageError(f"{name}: stored ETag {etag!r} is not the MD5 of the bytes sent")
        return _Segment(name, etag, size)

    async def _limits(self) -> int:
        """The cluster's max_manifest_segments (from /info), MAX_SEGMENTS when it does not say."""
        if self._max_segments is None:
            session = await self._authenticated()
            root, found, _ = session.storage_url.partition("/v1/")
            limit = MAX_SEGMENTS
            if found:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    response = await self._client().get(f"{root}/info")
                    if response.status_code == 200:
                        limit = int(response.json()["slo"]["max_manifest_segments"])
            self._max_segments = max(2, limit)
        return self._max_segments

    # -- objects -------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + key

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length is not None and length <= 0:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        async with self._get_stream(self._name(key), key, headers) as response:
            if response.status_code == 416:
                # The range starts at or past the end: nothing to read, if the object exists.
                size = await self.size(key)
                if size is None:
                    raise ObjectMissing(key)
                if length is not None:
                    raise StorageError(f"{key} is shorter than expected")
                return
            if response.status_code >= 300:
                await response.aread()
            _check(response, key)
            expected = length if length is not None else _int(response.headers.get("Content-Length"))
            received = 0
            with _transport_errors(key):
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    yield chunk
            if expected is not None and received != expected:
                raise StorageError(f"{key} is shorter than expected ({received} of {expected} bytes)")

    async def size(self, key: str) -> int | None:
        response = await self._request("HEAD", self._name(key), key, accept=(404,))
        if response.status_code == 404:
            return None
        return _int(response.headers.get("Content-Length")) or 0

    async def delete(self, key: str) -> None:
        await self._delete_object(self._name(key))

    async def _delete_object(self, name: str) -> None:
        """Delete `name`, and its segments when it is a large object's manifest; absent is fine."""
        head = await self._request("HEAD", name, name, accept=(404,))
        if head.status_code == 404:
            return
        if not _is_slo(head):
            await self._request("DELETE", name, name, accept=(404,))
            return
        response = await self._request(
            "DELETE",
            name,
            name,
            params={"multipart-manifest": "delete"},
            headers={"Accept": "application/json"},
            accept=(404,),
        )
        if response.status_code == 404:
            return
        try:
            result = response.json()
        except ValueError:
            return
        status = str(result.get("Response Status", "200"))
        errors = [error for error in result.get("Errors") or [] if "404" not in str(error)]
        if not status.startswith("2") and errors:
            raise StorageError(f"{name}: deleting the large object failed: {status} {errors}")

    async def _delete_plain(self, names: Sequence[str]) -> None:
        """Delete objects themselves (never their segments), a few at a time; absent is fine."""
        for start in range(0, len(names), PARALLEL):
            await asyncio.gather(
                *(self._request("DELETE", name, name, accept=(404,)) for name in names[start : start + PARALLEL])
            )

    async def _forget(self, names: Sequence[str]) -> None:
        """Best-effort removal of segments nothing references any more (a failure leaks them)."""
        try:
            await self._delete_plain(names)
        except StorageError as exc:
            log.warning("swift location %s: cannot remove %d unused segments: %s", self.name, len(names), exc)

    async def put(self, key: str, data: bytes) -> None:
        name = self._name(key)

        async def store() -> set[str]:
            await self._request(
                "PUT", name, key, content=data, headers={"Content-Type": "application/octet-stream"}, missing=False
            )
            return set()

        await self._replace(name, store)

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        cursor = _Cursor(chunks)
        head = await cursor.read_up_to(min(SINGLE_PUT, self.options.segment_size))
        if not await cursor.has_more():
            data = b"".join(head)
            await self.put(key, data)
            return len(data)
        cursor.unread(head)
        directory = f"{self._segments}objects/{key}/{secrets.token_hex(6)}/"
        segments = await self._upload_segments(cursor, lambda number: f"{directory}{number:06d}")
        name = self._name(key)

        async def store() -> set[str]:
            return await self._put_manifest(name, segments, directory)

        try:
            await self._replace(name, store)
        except BaseException:
            await _shielded(self._forget([segment.name for segment in segments]))
            raise
        return sum(segment.size for segment in segments)

    async def _upload_segments(self, cursor: _Cursor, name_of: Callable[[int], str]) -> list[_Segment]:
        """Stream the cursor's bytes into segments of at most segment_size; on failure remove them."""
        segments: list[_Segment] = []
        try:
            while await cursor.has_more():
                segments.append(await self._put_stream(name_of(len(segments)), cursor.take(self.options.segment_size)))
        except BaseException:
            names = [segment.name for segment in segments]
            if segments or cursor.started:
                names.append(name_of(len(segments)))  # a partly sent segment may have been stored
            await _shielded(self._forget(names))
            raise
        return segments

    async def _put_manifest(self, name: str, segments: Sequence[_Segment], directory: str) -> set[str]:
        """An SLO manifest at `name` over `segments` (nested manifests under `directory` when they
        are more than a manifest may list); return every object it references, nested ones included."""
        limit = await self._limits()
        referenced = {segment.name for segment in segments}
        level = list(segments)
        depth = 0
        while len(level) > limit:
            depth += 1
            grouped: list[_Segment] = []
            for start in range(0, len(level), limit):
                group = level[start : start + limit]
                sub = f"{directory}sub{depth}-{start // limit:06d}"
                etag = await self._put_slo(sub, group)
                grouped.append(_Segment(sub, etag, sum(segment.size for segment in group)))
                referenced.add(sub)
            level = grouped
        await self._put_slo(name, level)
        return referenced

    async def _put_slo(self, name: str, segments: Sequence[_Segment]) -> str:
        manifest = [
            {"path": f"{self._container_path}/{segment.name}", "etag": segment.etag, "size_bytes": segment.size}
            for segment in segments
        ]
        response = await self._request(
            "PUT",
            name,
            name,
            params={"multipart-manifest": "put"},
            headers={"Content-Type": "application/octet-stream"},
            content=json.dumps(manifest).encode(),
            missing=False,
        )
        return str(response.headers.get("Etag", "")).strip('"')

    async def _replace(self, name: str, store: Callable[[], Awaitable[set[str]]]) -> None:
        """Run `store` (which writes `name` and returns the objects it references); then remove the
        segments of the object it replaced that the new one does not reference."""
        old = await self._references(name)
        new = await store()
        stale = sorted(old - new)
        if stale:
            await self._forget(stale)

    async def _references(self, name: str) -> set[str]:
        """Every segment and nested manifest of our own that the large object `name` references."""
        head = await self._request("HEAD", name, name, accept=(404,))
        if head.status_code == 404 or not _is_slo(head):
            return set()
        found: set[str] = set()
        for entry in await self._manifest(name):
            segment = self._own(entry)
            if segment is None:
                continue
            found.add(segment)
            if entry.get("sub_slo"):
                found |= await self._references(segment)
        return found

    async def _manifest(self, name: str) -> list[dict[str, Any]]:
        response = await self._request("GET", name, name, params={"multipart-manifest": "get"})
        try:
            entries = response.json()
        except ValueError:
            raise StorageError(f"{name}: the large object's manifest is not JSON") from None
        if not isinstance(entries, list):
            raise StorageError(f"{name}: the large object's manifest is not a list")
        return [_normal_entry(entry) for entry in entries]

    def _own(self, entry: dict[str, Any]) -> str | None:
        """The segment's name when it is one of ours (in this container, under .segments/)."""
        path = unquote(str(entry.get("path", "")))
        container, _, segment = path.lstrip("/").partition("/")
        if container != self.options.container or not segment.startswith(self._segments):
            return None
        return segment

    async def copy(self, source: str, target: str) -> None:
        source_name, target_name = self._name(source), self._name(target)
        head = await self._request("HEAD", source_name, source)
        if source == target:
            return
        if not _is_slo(head):

            async def store_plain() -> set[str]:
                await self._request(
                    "PUT",
                    target_name,
                    target,
                    headers={"X-Copy-From": quote(f"{self._container_path}/{source_name}")},
                    content=b"",
                )
                return set()

            await self._replace(target_name, store_plain)
            return
        # A large object: fresh segments (copied server-side) under a manifest of the target's own.
        directory = f"{self._segments}objects/{target}/{secrets.token_hex(6)}/"
        made: list[str] = []
        try:
            segments = await self._copy_segments(await self._manifest(source_name), directory, made)

            async def store_large() -> set[str]:
                return set(made) | await self._put_manifest(target_name, segments, directory)

            await self._replace(target_name, store_large)
        except BaseException:
            await _shielded(self._forget(made))
            raise

    async def _copy_segments(self, entries: list[dict[str, Any]], directory: str, made: list[str]) -> list[_Segment]:
        limit = asyncio.Semaphore(PARALLEL)

        async def one(number: int, entry: dict[str, Any]) -> _Segment:
            path = unquote(str(entry["path"]))
            name = f"{directory}{number:06d}"
            if entry.get("sub_slo"):
                container, _, sub = path.lstrip("/").partition("/")
                if container != self.options.container:
                    raise StorageError(f"{path}: a nested manifest in another container")
                inner = await self._copy_segments(await self._manifest(sub), f"{name}-", made)
                made.append(name)
                etag = await self._put_slo(name, inner)
                return _Segment(name, etag, sum(segment.size for segment in inner))
            async with limit:
                made.append(name)
                response = await self._request(
                    "PUT", name, name, headers={"X-Copy-From": quote(path)}, content=b"", missing=False
                )
            etag = response.headers.get("Etag", "").strip('"')
            return _Segment(name, etag or str(entry.get("etag") or ""), int(entry["size_bytes"]))

        return list(await asyncio.gather(*(one(number, entry) for number, entry in enumerate(entries))))

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        async for name in self._list(self._name(prefix)):
            if name.startswith(self._segments):
                continue
            yield name[len(self._prefix) :]

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        """Object names under `prefix`, page by page; our segments are skipped in bulk."""
        async for name, _ in self._list_entries(prefix):
            yield name

    async def _list_entries(self, prefix: str) -> AsyncIterator[tuple[str, str]]:
        """(name, last_modified) of the objects under `prefix`, in name order, page by page."""
        marker = ""
        while True:
            response = await self._request(
                "GET",
                "",
                "container listing",
                params={"prefix": prefix, "format": "json", "marker": marker},
                missing=False,
            )
            if response.status_code == 204:
                return
            try:
                page = [
                    (str(entry["name"]), str(entry.get("last_modified", "")))
                    for entry in response.json()
                    if "name" in entry
                ]
            except (ValueError, TypeError, AttributeError) as exc:
                raise StorageError(f"container listing is not JSON: {exc}") from None
            if not page:
                return
            for entry in page:
                yield entry
            marker = page[-1][0]
            if marker.startswith(self._segments) and not prefix.startswith(self._segments):
                marker = self._segments[:-1] + chr(ord("/") + 1)  # past every segment name

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        secret = await self._signing_key()
        if secret is None:
            return None
        session = await self._authenticated()
        url = self._url(session, self._name(key))
        path = unquote(urlsplit(url).path)
        expires = int(time.time()) + expires_in
        signature = hmac.new(secret.encode(), f"GET\n{expires}\n{path}".encode(), hashlib.sha256).hexdigest()
        return f"{url}?temp_url_sig={signature}&temp_url_expires={expires}"

    async def _signing_key(self) -> str | None:
        cached = self._temp_url_key
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        key = await self._find_signing_key()
        self._temp_url_key = (key, time.monotonic() + KEY_CACHE_SECONDS)
        return key

    async def _find_signing_key(self) -> str | None:
        """The account's Temp-URL-Key, else the container's; the configured key is set where none is."""
        wanted = self.options.temp_url_key
        account = await self._request("HEAD", None, "account", missing=False)
        account_keys = _temp_url_keys(account.headers, "Account")
        if wanted is None:
            if account_keys:
                return account_keys[0]
            container = await self._request("HEAD", "", "container", missing=False)
            container_keys = _temp_url_keys(container.headers, "Container")
            return container_keys[0] if container_keys else None
        if wanted in account_keys:
            return wanted
        if not account_keys:
            with contextlib.suppress(AccessRefused):  # a user who may not change the account
                await self._request(
                    "POST", None, "account", headers={"X-Account-Meta-Temp-URL-Key": wanted}, missing=False
                )
                return wanted
        container = await self._request("HEAD", "", "container", missing=False)
        container_keys = _temp_url_keys(container.headers, "Container")
        if wanted in container_keys:
            return wanted
        if not container_keys:
            await self._request(
                "POST", "", "container", headers={"X-Container-Meta-Temp-URL-Key": wanted}, missing=False
            )
            return wanted
        log.warning(
            "swift location %s: the account and container have Temp-URL-Keys other than temp_url_key; "
            "blobs are served through Dockyard",
            self.name,
        )
        return None

    def local_path(self, key: str) -> Path | None:
        return None

    # -- uploads -------------------------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> str:
        if not upload_id or "/" in upload_id:
            raise StorageError(f"invalid upload id {upload_id!r}")
        return f"{self._segments}uploads/{upload_id}/"

    def _completed_key(self, upload_id: str) -> str:
        return f"{COMPLETED}{upload_id}"

    def _part_segments(self, upload_id: str, part: Part) -> list[_Segment]:
        directory = self._upload_dir(upload_id)
        try:
            entries = json.loads(part.token) if part.token else []
            return [_Segment(directory + str(suffix), str(etag), int(size)) for suffix, etag, size in entries]
        except (ValueError, TypeError) as exc:
            raise StorageError(f"upload {upload_id}: part {part.number} has a malformed token") from exc

    async def begin_upload(self, upload_id: str) -> str:
        self._upload_dir(upload_id)
        # Nothing to create; a store that is down or refuses the credentials fails here.
        await self._request("HEAD", "", "container", missing=False)
        return ""

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        directory = self._upload_dir(upload_id)
        number = parts[-1].number + 1 if parts else 1
        request = secrets.token_hex(4)
        segments = await self._upload_segments(
            _Cursor(chunks), lambda index: f"{directory}{number:06d}-{request}-{index:06d}"
        )
        token = json.dumps(
            [[segment.name[len(directory) :], segment.etag, segment.size] for segment in segments],
            separators=(",", ":"),
        )
        return [*parts, Part(number, sum(segment.size for segment in segments), token)]

    async def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes]:
        for part in parts:
            for segment in self._part_segments(upload_id, part):
                async with self._get_stream(segment.name, f"upload {upload_id}", {}) as response:
                    if response.status_code >= 300:
                        await response.aread()
                    _check(response, f"upload {upload_id}: segment {segment.name}", missing=False)
                    received = 0
                    with _transport_errors(f"upload {upload_id}"):
                        async for chunk in response.aiter_bytes():
                            received += len(chunk)
                            yield chunk
                    if received != segment.size:
                        raise StorageError(f"upload {upload_id}: segment {segment.name} has {received} bytes")

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        directory = self._upload_dir(upload_id)
        segments = [segment for part in parts for segment in self._part_segments(upload_id, part)]
        target = self._completed_key(upload_id)
        name = self._name(target)

        async def store() -> set[str]:
            if not segments:
                await self._request("PUT", name, target, content=b"", missing=False)
                return set()
            return await self._put_manifest(name, segments, directory)

        await self._replace(name, store)
        # Scrap of requests the caller did not record (never a segment the manifest lists).
        keep = {segment.name for segment in segments}
        scrap = [
            listed
            async for listed in self._list(directory)
            if listed not in keep and not listed[len(directory) :].startswith("sub")
        ]
        if scrap:
            await self._forget(scrap)
        return target

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        directory = self._upload_dir(upload_id)
        if await self.size(self._completed_key(upload_id)) is not None:
            return  # completed: its manifest owns the segments (scrap went at completion)
        names = [name async for name in self._list(directory)]
        await self._delete_plain(names)

    async def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Uploads with segments under `.segments/uploads/<id>/` (which `keys` never lists) and no
        completed manifest; begun at their oldest segment's time. The listing is in name order, so
        one upload's segments come together."""
        base = f"{self._segments}uploads/"
        current: str | None = None
        oldest = 0.0
        async for name, modified in self._list_entries(base):
            upload_id = name[len(base) :].partition("/")[0]
            when = _swift_time(modified)
            if upload_id == current:
                oldest = min(oldest, when)
                continue
            if current is not None and await self.size(self._completed_key(current)) is None:
                yield PendingUpload(current, "", oldest)
            current, oldest = upload_id, when
        if current is not None and await self.size(self._completed_key(current)) is None:
            yield PendingUpload(current, "", oldest)

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        """Remove the upload's segments, unless it was completed (its manifest owns them then)."""
        await self.abort_upload(upload_id, handle, [])


class _Cursor:
    """Reads an async byte stream in pieces of chosen sizes, without holding more than one chunk
    (besides what was handed back with `unread`)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._pending: collections.deque[bytes] = collections.deque()
        self._done = False
        self.started = False

    async def has_more(self) -> bool:
        while not self._pending and not self._done:
            try:
                chunk = bytes(await anext(self._chunks))
            except StopAsyncIteration:
                self._done = True
            else:
                if chunk:
                    self._pending.append(chunk)
        return bool(self._pending)

    async def take(self, limit: int) -> AsyncIterator[bytes]:
        """Up to `limit` bytes, as they come."""
        self.started = True
        remaining = limit
        while remaining > 0 and await self.has_more():
            piece = self._pending.popleft()
            if len(piece) > remaining:
                piece, rest = piece[:remaining], piece[remaining:]
                self._pending.appendleft(rest)
            remaining -= len(piece)
            yield piece

    async def read_up_to(self, limit: int) -> list[bytes]:
        return [piece async for piece in self.take(limit)]

    def unread(self, pieces: list[bytes]) -> None:
        self._pending.extendleft(reversed(pieces))


async def _shielded(cleanup: Awaitable[None]) -> None:
    """Run a cleanup to its end even when the task is being cancelled."""
    with contextlib.suppress(Exception):
        await asyncio.shield(cleanup)


@contextlib.contextmanager
def _transport_errors(what: str) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise StorageError(f"{what}: cannot reach Swift: {exc!r}") from exc


def _check(response: httpx.Response, what: str, *, missing: bool = True) -> None:
    status = response.status_code
    if status < 300:
        return
    if status == 404:
        if missing:
            raise ObjectMissing(what)
        raise StorageError(f"{what}: not found (is the container there?)")
    if status in (401, 403):
        raise AccessRefused(f"{what}: Swift refused the credentials ({status})")
    detail = ""
    with contextlib.suppress(httpx.ResponseNotRead):
        detail = response.text[:300].strip()
    raise StorageError(f"{what}: Swift answered {status} {detail}".rstrip())


def _is_slo(response: httpx.Response) -> bool:
    return response.headers.get("X-Static-Large-Object", "").lower() in {"true", "1", "yes", "on"}


def _normal_entry(entry: Any) -> dict[str, Any]:
    """A manifest entry as stored (`name`, `hash`, `bytes`) or as written (`path`, `etag`, `size_bytes`)."""
    if not isinstance(entry, dict):
        raise StorageError("a large object's manifest entry is not an object")
    return {
        "path": entry.get("path", entry.get("name", "")),
        "etag": entry.get("etag", entry.get("hash")),
        "size_bytes": entry.get("size_bytes", entry.get("bytes", 0)),
        "sub_slo": bool(entry.get("sub_slo")),
    }


def _temp_url_keys(headers: httpx.Headers, level: str) -> list[str]:
    names = (f"X-{level}-Meta-Temp-URL-Key", f"X-{level}-Meta-Temp-URL-Key-2")
    return [headers[name] for name in names if headers.get(name)]


def _object_store_endpoint(catalog: list[Any], region: str | None) -> str | None:
    for service in catalog:
        if not isinstance(service, dict) or service.get("type") != "object-store":
            continue
        for endpoint in service.get("endpoints") or []:
            if endpoint.get("interface") != "public":
                continue
            if region is not None and region not in (endpoint.get("region_id"), endpoint.get("region")):
                continue
            url = endpoint.get("url")
            if url:
                return str(url)
    return None


def _swift_time(value: str) -> float:
    """A listing's `last_modified` (ISO 8601, UTC, without a zone) in epoch seconds; now if absent."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return time.time()
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _float(value: str | None, default: float) -> float:
    try:
        return default if value is None else float(value)
    except ValueError:
        return default
