"""Google Cloud Storage driver (JSON API, google-cloud-storage's sync client on worker threads).

Objects are `<prefix><key>` in one bucket. Nothing is buffered whole:

- `write` sends an object of up to `upload_chunk_size` bytes in one request, a longer one as a
  resumable upload fed chunk by chunk (memory stays within a few chunks); the object appears only
  when the last chunk is accepted, so it is whole or absent.
- An upload is a set of component objects `uploads/<id>/part-<n>-<random>`, one per `write_part`
  (the random suffix keeps a late, unrecorded write from ever replacing a recorded part). Each
  part's token is its component's key (empty for a part of 0 bytes, which stores nothing).
  `read_upload` streams the recorded components in order; `complete_upload` composes them (at
  most 32 sources per compose, in rounds for more) straight into the key the caller suggests,
  then deletes everything under `uploads/<id>/`, including scrap from unrecorded requests.
- Reads are one ranged GET streamed in `read_chunk` pieces.

Failures come out as `ObjectMissing` (404 on an object), `AccessRefused` (401/403 or credentials
the token endpoint refused) or `StorageError` (anything else: unreachable, 5xx, corrupt), never as
a google, google-auth or requests exception. Transient failures (connection errors, 429, 5xx) are
retried for up to `retry_timeout` seconds first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials, Signing
from google.cloud import storage  # type: ignore[import-untyped]
from google.cloud.storage import exceptions as storage_exceptions  # type: ignore[import-untyped]
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

from dockyard.config.settings import GcsStorage
from dockyard.storage.protocol import (
    AccessRefused,
    ObjectMissing,
    Part,
    PendingUpload,
    StorageError,
    no_pending_uploads,
    upload_key,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
COMPOSE_LIMIT = 32  # sources per compose request (a GCS limit)
TIMEOUT = (10.0, 60.0)  # connect, read (seconds) for every request
_CHUNK_MULTIPLE = 256 * 1024  # resumable upload chunks are multiples of 256 KiB


class GcsStore:
    """One bucket (and key prefix) of Google Cloud Storage, or of an emulator speaking its JSON API."""

    derived_keys = True
    """`complete_upload` always composes into the key it is given, and every other write goes to
    the key the caller names, so a blob committed from an upload lives at `blob_key(digest)`."""

    upload_chunk_size = 8 * MiB
    """Objects up to this size are sent in one request; longer ones in resumable chunks of it."""

    read_chunk = 1 * MiB

    def __init__(self, name: str, options: GcsStorage, *, retry_timeout: float = 20.0) -> None:
        if self.upload_chunk_size % _CHUNK_MULTIPLE:
            raise ValueError("upload_chunk_size must be a multiple of 256 KiB")
        self.name = name
        self.bucket_name = options.bucket
        self.prefix = _normal_prefix(options.prefix)
        self.retry_timeout = retry_timeout
        try:
            credentials, project = _credentials(options)
            client_options = {"api_endpoint": options.endpoint_url} if options.endpoint_url else None
            self._client = storage.Client(project=project, credentials=credentials, client_options=client_options)
        except Exception as exc:  # google-auth and the client raise many types for bad settings
            raise (_translate(exc, f"GCS location {name!r}") or StorageError(f"GCS location {name!r}: {exc}")) from exc
        self._credentials: Credentials = credentials
        # Worker threads share the client's session: keep a connection for each of them.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self._client._http.mount("https://", adapter)
        self._client._http.mount("http://", adapter)
        self._bucket = self._client.bucket(options.bucket)

    @property
    def retry_timeout(self) -> float:
        """Seconds a call keeps retrying transient failures before it fails with StorageError."""
        return float(self._retry.timeout)

    @retry_timeout.setter
    def retry_timeout(self, seconds: float) -> None:
        self._retry = DEFAULT_RETRY.with_timeout(seconds)

    def _name(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise StorageError(f"invalid key {key!r}")
        return self.prefix + key

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(self._name(key))

    async def _run(self, what: str, function: Callable[..., T], *args: Any, missing: bool = True, **kwargs: Any) -> T:
        """Run one blocking client call on a worker thread, translating its failures.

        A 404 means the object `what` is missing, or when not `missing` (writes) that the bucket is.
        """
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:
            translated = _translate(exc, what, missing=missing)
            if translated is None:
                raise
            raise translated from exc

    # -- objects -------------------------------------------------------------------------------

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(f"invalid range {offset}+{length} of {key}")
        if length == 0:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        response = await self._run(key, self._open_download, key, offset, length)
        if response is None:  # the range starts at or past the end of the object
            if length is not None:
                raise StorageError(f"{key} is shorter than expected")
            return
        received = 0
        try:
            pieces = response.iter_content(self.read_chunk)
            while True:
                chunk = await self._run(key, next, pieces, None)
                if chunk is None:
                    break
                received += len(chunk)
                yield chunk
        finally:
            response.close()
        if length is not None and received < length:
            raise StorageError(f"{key} is shorter than expected")

    def _open_download(self, key: str, offset: int, length: int | None) -> requests.Response | None:
        blob = self._blob(key)
        url = blob._get_download_url(self._client)  # the plain media URL, no extra request
        headers = {"Accept-Encoding": "identity"}
        if length is not None:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"

        def get() -> requests.Response | None:
            response: requests.Response = self._client._http.get(url, headers=headers, stream=True, timeout=TIMEOUT)
            if response.status_code == 416:
                response.close()
                if self._bucket.get_blob(blob.name, retry=self._retry, timeout=TIMEOUT) is None:
                    raise ObjectMissing(key)
                return None
            if response.status_code >= 400:
                try:
                    raise api_exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
                finally:
                    response.close()
            if "Range" in headers and response.status_code != 206:
                response.close()
                raise StorageError(f"the store ignored the range request for {key}")
            return response

        result: requests.Response | None = self._retry(get)()
        return result

    async def size(self, key: str) -> int | None:
        blob = await self._run(key, self._bucket.get_blob, self._name(key), retry=self._retry, timeout=TIMEOUT)
        return None if blob is None else int(blob.size)

    async def delete(self, key: str) -> None:
        await self._run(key, self._delete, self._name(key))

    def _delete(self, name: str) -> None:
        with contextlib.suppress(api_exceptions.NotFound):
            self._bucket.delete_blob(name, retry=self._retry, timeout=TIMEOUT)

    async def put(self, key: str, data: bytes) -> None:
        await self._upload_whole(self._blob(key), data, key)

    async def _upload_whole(self, blob: Any, data: bytes | bytearray, what: str) -> None:
        # Every write here goes to a content-addressed or freshly named key: retrying is safe.
        await self._run(
            what,
            blob.upload_from_string,
            bytes(data),
            missing=False,
            content_type="application/octet-stream",
            retry=self._retry,
            timeout=TIMEOUT,
        )

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        return await self._stream_to(key, chunks)

    async def _stream_to(self, key: str, chunks: AsyncIterator[bytes], *, skip_empty: bool = False) -> int:
        """Stream `chunks` into the object at `key`; return its size.

        Up to `upload_chunk_size` bytes go in one request; past that a resumable upload takes the
        bytes a chunk at a time and the object appears when its last chunk is accepted. An empty
        stream stores nothing when `skip_empty`.
        """
        blob = self._blob(key)
        buffer = bytearray()
        size = 0
        writer: Any = None
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= self.upload_chunk_size:
                    if writer is None:
                        writer = blob.open(
                            "wb",
                            chunk_size=self.upload_chunk_size,
                            ignore_flush=True,
                            retry=self._retry,
                            content_type="application/octet-stream",
                            timeout=TIMEOUT,
                        )
                    data, buffer = buffer, bytearray()
                    await self._run(key, writer.write, data, missing=False)
                    del data
            if writer is None:
                if size or not skip_empty:
                    await self._upload_whole(blob, buffer, key)
            else:
                if buffer:
                    await self._run(key, writer.write, buffer, missing=False)
                await self._run(key, writer.close, missing=False)
        except BaseException:
            if writer is not None and not writer.closed:
                # Cancel the resumable session so the server drops what it received.
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(writer.terminate))
            raise
        return size

    async def copy(self, source: str, target: str) -> None:
        await self._run(source, self._copy, self._blob(source), self._blob(target))

    def _copy(self, source: Any, target: Any) -> None:
        token: str | None = None
        while True:  # a rewrite of a large object may take several calls
            token, _, _ = target.rewrite(source, token=token, retry=self._retry, timeout=TIMEOUT)
            if token is None:
                return

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        async for name in self._iter_names(prefix):
            yield name

    async def _iter_names(self, prefix: str) -> AsyncIterator[str]:
        listing = self._client.list_blobs(self._bucket, prefix=self.prefix + prefix, retry=self._retry, timeout=TIMEOUT)
        pages: Iterator[Any] = iter(listing.pages)
        while True:
            page = await self._run(f"listing {prefix!r}", next, pages, None)
            if page is None:
                return
            for blob in page:
                yield str(blob.name)[len(self.prefix) :]

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        """A V4 signed GET URL, or None without a private key to sign with.

        Signing needs a service-account key (`credentials_file`, or application default
        credentials that are a service-account key). Anonymous/emulator credentials, user
        credentials and metadata-server (GCE/GKE) credentials cannot sign locally: then None,
        and the server streams the bytes itself.
        """
        if not isinstance(self._credentials, Signing):
            return None
        url = await self._run(
            key,
            self._blob(key).generate_signed_url,
            version="v4",
            expiration=timedelta(seconds=expires_in),
            method="GET",
        )
        return str(url)

    def local_path(self, key: str) -> Path | None:
        return None

    # -- uploads -------------------------------------------------------------------------------

    def _components(self, upload_id: str) -> str:
        return f"{upload_key(upload_id)}/"

    async def begin_upload(self, upload_id: str) -> str:
        return ""  # nothing to prepare: each write_part writes its own component object

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        number = parts[-1].number + 1 if parts else 1
        component = f"{self._components(upload_id)}part-{number}-{secrets.token_hex(6)}"
        size = await self._stream_to(component, chunks, skip_empty=True)
        return [*parts, Part(number, size, component if size else "")]

    def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes]:
        return self._read_components(upload_id, list(parts))

    async def _read_components(self, upload_id: str, parts: list[Part]) -> AsyncIterator[bytes]:
        for part in parts:
            if part.size:
                async for chunk in self.read(self._token(upload_id, part), 0, part.size):
                    yield chunk

    def _token(self, upload_id: str, part: Part) -> str:
        if not part.token.startswith(self._components(upload_id)):
            raise StorageError(f"part {part.number} of upload {upload_id} names no component of it")
        return part.token

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        sources = [self._token(upload_id, part) for part in parts if part.size]
        expected = sum(part.size for part in parts)
        if not sources:
            await self.put(key, b"")
        else:
            round_number = 0
            while len(sources) > COMPOSE_LIMIT:
                groups = [sources[i : i + COMPOSE_LIMIT] for i in range(0, len(sources), COMPOSE_LIMIT)]
                targets = [
                    group[0]
                    if len(group) == 1
                    else f"{self._components(upload_id)}compose-{round_number}-{index}-{secrets.token_hex(6)}"
                    for index, group in enumerate(groups)
                ]
                await asyncio.gather(
                    *(
                        self._compose(group, target)
                        for group, target in zip(groups, targets, strict=True)
                        if len(group) > 1
                    )
                )
                sources = targets
                round_number += 1
            size = await self._compose(sources, key)
            if size != expected:
                await self.delete(key)
                raise StorageError(f"composed upload {upload_id} has {size} bytes, {expected} were recorded")
        try:
            await self._delete_under(self._components(upload_id))
        except StorageError as exc:  # the blob is committed; leftover components are only scrap
            log.warning("upload %s: components left behind: %s", upload_id, exc)
        return key

    async def _compose(self, sources: list[str], target: str) -> int:
        destination = self._blob(target)
        destination.content_type = "application/octet-stream"
        try:
            await self._run(
                target,
                destination.compose,
                [self._blob(source) for source in sources],
                retry=self._retry,  # composing the same sources again gives the same object
                timeout=TIMEOUT,
                missing=False,
            )
        except StorageError:
            # GCS answers 404 for a missing source, emulators may answer 500: name the lost part.
            for source in sources:
                if await self.size(source) is None:
                    raise ObjectMissing(source) from None
            raise
        return int(destination.size)

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        await self._delete_under(self._components(upload_id))

    def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Nothing: an upload's parts are the component objects under `uploads/<id>/`, which
        `keys` lists. (A resumable session of a `write` that broke off is not listable; GCS
        discards it by itself after a week.)"""
        return no_pending_uploads()

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        return None

    async def _delete_under(self, prefix: str) -> None:
        names = [name async for name in self._iter_names(prefix)]
        for start in range(0, len(names), 16):
            await asyncio.gather(*(self.delete(name) for name in names[start : start + 16]))


def _normal_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _credentials(options: GcsStorage) -> tuple[Credentials, str | None]:
    if options.anonymous:
        # Explicit credentials and project: the client must never ask a metadata server.
        return AnonymousCredentials(), options.project or "anonymous"  # type: ignore[no-untyped-call]
    if options.credentials_file is None:
        credentials, project = google.auth.default(scopes=SCOPES)
        return credentials, options.project or project
    # Load only the two key types a file may name here (google.auth refuses to guess safely).
    info = json.loads(Path(options.credentials_file).read_text())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        key: Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
        return key, options.project or info.get("project_id")
    if kind == "authorized_user":
        user = oauth2_credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
        return user, options.project or info.get("quota_project_id")
    raise StorageError(
        f"{options.credentials_file}: credentials of type {kind!r} are not supported here; "
        "use a service-account key, or application default credentials (GOOGLE_APPLICATION_CREDENTIALS)"
    )


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return None if exc.code is None else int(exc.code)
    if isinstance(exc, storage_exceptions.InvalidResponse):
        return int(exc.response.status_code)
    return None


def _translate(exc: BaseException, what: str, *, missing: bool = True) -> StorageError | None:
    """The driver's error for a client failure, or None for a programming error to let through."""
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        inner = _translate(exc.cause, what, missing=missing)
        if inner is not None:
            return type(inner)(f"{inner} (retried until the deadline)")
    status = _status(exc)
    if status == 404:
        return ObjectMissing(what) if missing else StorageError(f"{what}: not found (is the bucket there?)")
    if status in (401, 403):
        return AccessRefused(f"{what}: the store refused the credentials ({status})")
    if isinstance(exc, auth_exceptions.RefreshError | auth_exceptions.DefaultCredentialsError):
        return AccessRefused(f"{what}: {exc}")
    if status is not None:
        return StorageError(f"{what}: the store answered {status}: {exc}")
    if isinstance(
        exc,
        api_exceptions.GoogleAPIError
        | auth_exceptions.GoogleAuthError
        | storage_exceptions.InvalidResponse
        | storage_exceptions.DataCorruption
        | requests.RequestException
        | OSError
        | ValueError,
    ):
        return StorageError(f"{what}: {type(exc).__name__}: {exc}")
    return None
