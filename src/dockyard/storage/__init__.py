"""Blob bytes: the narrow `BlobStore` protocol and its drivers, registered by name.

Imports `domain` and `config`. Storage never sees repository names: every key is derived from a
validated digest or a server-generated upload id, so no request can name a path outside the root.

Layout inside every location:

    blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable, stored once globally
    uploads/<upload id>                      bytes of an in-progress upload; the offset that counts
                                             is the one in the database, bytes past it are scrap
    _health/<random>                         written, read and removed by /health/endtoend
"""

from dockyard.storage.protocol import (
    AccessRefused,
    BlobStore,
    ObjectMissing,
    Part,
    PendingUpload,
    StorageError,
    blob_key,
    no_pending_uploads,
    upload_key,
)
from dockyard.storage.registry import open_location

__all__ = [
    "AccessRefused",
    "BlobStore",
    "ObjectMissing",
    "Part",
    "PendingUpload",
    "StorageError",
    "blob_key",
    "no_pending_uploads",
    "open_location",
    "upload_key",
]
