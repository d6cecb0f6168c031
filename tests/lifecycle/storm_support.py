"""Support for the garbage-collection storm test: the counters the clients share, the contents they
push, and the pull that verifies everything a served manifest names.

Nothing here imports Dockyard: the clients (`storm_client`) speak the OCI Distribution API over
HTTP, like any other client. They keep no record of what "should" exist — the registry's state is
the truth — but they check, on every pull, that a manifest the registry serves has every blob and
child it names.

A pull that finds a blob missing is not at once a failure: another client may have deleted the
manifest (and the collector removed it) between the manifest GET and the blob GET. It is a failure
when the manifest is still served after the blob went missing, and the blob is still missing after
that (`Tally.lost`); the in-between case, where the blob comes back, is counted as suspect.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
SIGNATURE_TYPE = "application/vnd.dockyard.storm.signature"
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}"

#: The namespace whose time-machine window is long enough to check tag rows during the storm.
HISTORY_NAMESPACE = "storm-b"
#: Tag names per repository: few, so that tags move often.
TAGS = [f"t{i}" for i in range(6)]
#: Image configs drawn from a small pool repeat, so identical manifests are pushed again (revived).
CONFIG_POOL = 24


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def describe(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path} -> {response.status_code} {response.content[:400]!r}"


def error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class Aborted(Exception):
    """Ends one operation (a failure was recorded, or the registry answered what a race allows)."""


@dataclass
class Tally:
    """Counts shared by every client thread, and the failures they found."""

    ops: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    #: Broken invariants: a served manifest missing a piece, a referrer not listed, a tag row gone.
    failures: list[str] = field(default_factory=list)
    #: Server errors (5xx, a collector process failing) and unexpected answers: bugs, not data loss.
    errors: list[str] = field(default_factory=list)
    suspects: list[str] = field(default_factory=list)
    #: Worth reading, not failures (a push that kept losing its blobs to the grace period).
    notes: list[str] = field(default_factory=list)
    #: (repository, referrer digest, subject digest, ms before its push) of every referrer pushed.
    referrers: list[tuple[str, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, name: str) -> None:
        with self.lock:
            self.ops[name] += 1

    def event(self, name: str, count: int = 1) -> None:
        with self.lock:
            self.events[name] += count

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def suspect(self, message: str) -> None:
        with self.lock:
            self.suspects.append(message)
            self.events["suspect"] += 1


class Contents:
    """Bytes of every blob the clients generated, by digest, so that any client can upload one again."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def add(self, data: bytes) -> str:
        digest = sha(data)
        with self._lock:
            self._data.setdefault(digest, data)
        return digest

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            return self._data.get(digest)


def layer_pool(seed: int, count: int = 12) -> list[bytes]:
    """Shared layer contents (1 KiB to 160 KiB): images and repositories reuse them."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice([1024, 4096, 20_000, 64_000, 160_000])) for _ in range(count)]


def image_manifest(config: bytes, layers: list[bytes], *, extra: dict[str, Any] | None = None) -> bytes:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha(layer), "size": len(layer)} for layer in layers],
    }
    document.update(extra or {})
    return json.dumps(document, separators=(",", ":")).encode()


def index_manifest(children: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha(child),
                    "size": len(child),
                    "platform": {"architecture": f"arch{n}", "os": "linux"},
                }
                for n, child in enumerate(children)
            ],
        },
        separators=(",", ":"),
    ).encode()


class Puller:
    """Fetches a manifest and everything it names, verifying every digest."""

    def __init__(self, http: httpx.Client, tally: Tally, *, strict: bool) -> None:
        self.http = http
        self.tally = tally
        #: At the end of the storm nothing races: any missing piece is a failure at once.
        self.strict = strict

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.tally.error(f"{method} {url}: transport error {exc!r}")
            raise Aborted from exc
        if response.status_code >= 500 and not (method == "GET" and "/blobs/sha256:" in url):
            # A blob GET may answer 503 when the object vanished under it; `pull` judges those.
            self.tally.error(f"server error: {describe(response)}")
            raise Aborted
        return response

    def manifest(self, repository: str, reference: str) -> httpx.Response:
        return self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})

    def blob_ok(self, repository: str, digest: str) -> tuple[bool, int]:
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}")
        return response.status_code == 200 and sha(response.content) == digest, response.status_code

    def pull(self, repository: str, reference: str) -> dict[str, Any] | None:
        """Pull `reference` with every blob and child; None when the registry does not serve it."""
        response = self.manifest(repository, reference)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self.tally.error(f"manifest GET: {describe(response)}")
            raise Aborted
        digest = sha(response.content)
        header = response.headers.get("Docker-Content-Digest")
        if header != digest or (reference.startswith("sha256:") and reference != digest):
            self.tally.fail(f"{repository}@{reference}: body digest {digest}, header {header}")
            raise Aborted
        document: dict[str, Any] = json.loads(response.content)
        self.tally.event("pulled_manifests")
        if document.get("mediaType") == OCI_INDEX:
            for child in document["manifests"]:
                if self.pull(repository, child["digest"]) is None:
                    self.missing(repository, digest, "child manifest", child["digest"], 404)
        else:
            for descriptor in [document["config"], *document["layers"]]:
                ok, status = self.blob_ok(repository, descriptor["digest"])
                self.tally.event("pulled_blobs")
                if not ok:
                    self.missing(repository, digest, "blob", descriptor["digest"], status)
        document["_digest"] = digest
        return document

    def _present(self, repository: str, kind: str, digest: str) -> bool:
        if kind == "blob":
            return self.blob_ok(repository, digest)[0]
        return self.manifest(repository, digest).status_code == 200

    def missing(self, repository: str, manifest: str, kind: str, digest: str, status: int) -> None:
        """A piece of a served manifest was missing: a failure unless a concurrent delete explains it."""
        what = f"{repository}@{manifest} names {kind} {digest}, which answered {status}"
        if self.strict:
            self.tally.fail(f"after the storm: {what}")
            return
        if self.manifest(repository, manifest).status_code != 200:
            self.tally.event("pull_raced_delete")  # the manifest went meanwhile: a legitimate race
            return
        if self._present(repository, kind, digest):
            self.tally.suspect(f"{what}, then was back while the manifest stayed served")
            return
        if self.manifest(repository, manifest).status_code == 200:
            self.tally.fail(f"LOST: {what}; the manifest is still served and the {kind} still missing")
        else:
            self.tally.event("pull_raced_delete")
