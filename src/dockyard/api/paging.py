"""Cursor paging, the same for every list that can grow.

A list answers `{"items": [...], "next": URL or null, "next_cursor": CURSOR or null}` and, when
there is a next page, a `Link: <URL>; rel="next"` header. The cursor is opaque to clients: the
sort key of the last item, base64url-encoded JSON, bound to the listing and order it came from.
Pages are keyset pages: items inserted or removed between requests never make a page repeat or
skip the others.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field

from dockyard.domain.errors import PaginationInvalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR = 2048

T = TypeVar("T")
Item = TypeVar("Item")
PageT = TypeVar("PageT", bound="Page[Any]")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most items on one page.")]
CursorParam = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR, description="Where to continue: `next_cursor` of the previous page."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = Field(description="Path and query of the next page; null on the last page.")
    next_cursor: str | None = Field(description="Cursor of the next page; null on the last page.")


def encode_cursor(listing: str, key: Sequence[str | int]) -> str:
    raw = json.dumps({"l": listing, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, listing: str, shape: Sequence[type]) -> tuple[Any, ...] | None:
    """The sort key in `cursor` (None without one); PaginationInvalid when it is not a cursor of
    `listing` with values of the types in `shape`."""
    if cursor is None:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise PaginationInvalid("the cursor is malformed") from None
    if not isinstance(payload, dict) or payload.get("l") != listing:
        raise PaginationInvalid("the cursor belongs to another listing or sort order")
    key = payload.get("k")
    if not isinstance(key, list) or len(key) != len(shape):
        raise PaginationInvalid("the cursor is malformed")
    for value, kind in zip(key, shape, strict=True):
        # bool is an int in Python; a cursor never holds one.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PaginationInvalid("the cursor is malformed")
    return tuple(key)


def paginate(
    request: Request,
    response: Response,
    rows: list[Item],
    *,
    limit: int,
    listing: str,
    key: Callable[[Item], Sequence[str | int]],
) -> tuple[list[Item], str | None, str | None]:
    """Trim `rows` (fetched with `limit + 1`) to a page; return it, the next link and cursor.

    Sets the `Link` header when there is a next page.
    """
    if len(rows) <= limit:
        return rows, None, None
    page = rows[:limit]
    cursor = encode_cursor(listing, key(page[-1]))
    query = [(name, value) for name, value in request.query_params.multi_items() if name not in ("cursor", "limit")]
    link = f"{request.url.path}?{urlencode([*query, ('limit', str(limit)), ('cursor', cursor)])}"
    response.headers["Link"] = f'<{link}>; rel="next"'
    return page, link, cursor


class Paging:
    """One list request's paging: its `limit` and `cursor` parameters in, its page out.

    A handler names its listing and the shape of its sort key once (`after`), fetches `fetch`
    rows from the key on, and answers `page(...)`: the trimmed page, its next link and cursor,
    and the `Link` header.
    """

    def __init__(
        self, request: Request, response: Response, limit: Limit = DEFAULT_LIMIT, cursor: CursorParam = None
    ) -> None:
        self.request = request
        self.response = response
        self.limit = limit
        self.cursor = cursor
        self.listing = ""

    @property
    def fetch(self) -> int:
        """How many rows to ask for: one more than a page tells whether another page follows."""
        return self.limit + 1

    def after(self, listing: str, shape: Sequence[type]) -> tuple[Any, ...] | None:
        """The sort key the page starts after (None on the first page), for `listing`."""
        self.listing = listing
        return decode_cursor(self.cursor, listing, shape)

    def after_one(self, listing: str, kind: type) -> Any:
        """`after` of a listing sorted by one value: that value, or None on the first page."""
        key = self.after(listing, (kind,))
        return None if key is None else key[0]

    def page(
        self,
        page_type: type[PageT],
        rows: list[Item],
        *,
        key: Callable[[Item], Sequence[str | int]],
        item: Callable[[Item], Any],
    ) -> PageT:
        """The answer: `rows` (fetched with `fetch`) trimmed to a page of `item`s."""
        if not self.listing:
            raise RuntimeError("Paging.after names the listing before a page is answered")
        page, link, next_cursor = paginate(
            self.request, self.response, rows, limit=self.limit, listing=self.listing, key=key
        )
        return page_type(items=[item(row) for row in page], next=link, next_cursor=next_cursor)


PagingDep = Annotated[Paging, Depends()]
