"""The storm's client: one thread of random registry operations (push images, indexes and
referrers, push again, retag, delete tags and manifests, mount across repositories, pull), each
pull verified by `storm_support.Puller`, and the loop of `dockyard gc run` that runs beside them."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import traceback
from collections import deque
from typing import Any

import httpx
import psycopg

from tests.lifecycle.storm_support import (
    CONFIG_POOL,
    EMPTY_JSON,
    HISTORY_NAMESPACE,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    SIGNATURE_TYPE,
    TAGS,
    Aborted,
    Contents,
    Puller,
    Tally,
    describe,
    error_code,
    image_manifest,
    index_manifest,
    sha,
)


class StormClient:
    """One client thread: random operations over the repositories until told to stop."""

    WEIGHTS = (
        ("push_image", 26),
        ("push_index", 8),
        ("push_referrer", 8),
        ("retag", 10),
        ("delete_tag", 12),
        ("delete_manifest", 7),
        ("mount", 10),
        ("pull", 15),
        ("repush", 12),
    )

    def __init__(
        self,
        number: int,
        url: str,
        auth: tuple[str, str],
        repositories: list[str],
        pool: list[bytes],
        contents: Contents,
        tally: Tally,
        seed: int,
        *,
        history: tuple[str, int] | None = None,
    ) -> None:
        """`history`: (database URL, window in ms) to check that tag history rows survive in the
        repositories of the namespace with a time-machine window (see `check_history`)."""
        self.number = number
        self.history = history
        self.last_put_ms = 0
        self.http = httpx.Client(base_url=url, auth=auth, timeout=60, follow_redirects=True)
        self.repositories = repositories
        self.pool = pool
        self.contents = contents
        self.tally = tally
        self.rng = random.Random(seed)
        self.puller = Puller(self.http, tally, strict=False)
        self.serial = 0
        #: What this client pushed lately, to push again: (repository, body, blobs, index children).
        self.recent: deque[tuple[str, bytes, list[bytes], list[tuple[bytes, list[bytes]]]]] = deque(maxlen=24)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, max_ops: int) -> None:
        names = [name for name, _ in self.WEIGHTS]
        weights = [weight for _, weight in self.WEIGHTS]
        try:
            for _ in range(max_ops):
                if stop.is_set():
                    return
                name = self.rng.choices(names, weights)[0]
                self.tally.op(name)
                try:
                    getattr(self, name)()
                except Aborted:
                    self.tally.event("aborted_ops")
                except Exception:
                    self.tally.error(f"client {self.number} {name}: {traceback.format_exc()}")
        finally:
            self.http.close()

    # -- building blocks -----------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.puller.request(method, url, **kwargs)

    def unique(self, prefix: str) -> bytes:
        self.serial += 1
        return f"{prefix} client {self.number} #{self.serial} {self.rng.random()}".encode()

    def config(self) -> bytes:
        if self.rng.random() < 0.5:
            body: dict[str, Any] = {"architecture": "amd64", "os": "linux", "pool": self.rng.randrange(CONFIG_POOL)}
        else:
            body = {"architecture": "amd64", "os": "linux", "nonce": self.unique("config").decode()}
        return json.dumps(body).encode()

    def layers(self) -> list[bytes]:
        chosen = self.rng.sample(self.pool, self.rng.randint(1, 3))
        if self.rng.random() < 0.35:
            chosen.append(self.unique("unique layer") * self.rng.randint(1, 200))
        return chosen

    def upload(self, repository: str, data: bytes, *, skip_present: bool) -> None:
        """Push one blob like a real client: skip it when the registry says it has it."""
        digest = self.contents.add(data)
        if skip_present and self.request("HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200:
            self.tally.event("blob_already_there")
            return
        if self.rng.random() < 0.3:
            self.chunked(repository, data, digest)
            return
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/?digest={digest}", content=data)
        if response.status_code != 201:
            self.tally.error(f"monolithic upload: {describe(response)}")
            raise Aborted
        self.tally.event("blobs_uploaded")

    def chunked(self, repository: str, data: bytes, digest: str) -> None:
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        if response.status_code != 202:
            self.tally.error(f"upload start: {describe(response)}")
            raise Aborted
        self.finish_session(repository, response.headers["Location"], data, digest)

    def finish_session(self, repository: str, location: str, data: bytes, digest: str) -> None:
        middle = len(data) // 2
        for chunk in (data[:middle], data[middle:]):
            if not chunk:
                continue
            response = self.request(
                "PATCH", location, content=chunk, headers={"Content-Type": "application/octet-stream"}
            )
            if response.status_code == 404 and error_code(response) == "BLOB_UPLOAD_UNKNOWN":
                # Idle past the upload grace period (a loaded machine): start again, as a client would.
                self.tally.event("upload_session_abandoned")
                self.upload(repository, data, skip_present=False)
                return
            if response.status_code != 202:
                self.tally.error(f"upload chunk: {describe(response)}")
                raise Aborted
            location = response.headers["Location"]
        separator = "&" if "?" in location else "?"
        response = self.request("PUT", f"{location}{separator}digest={digest}")
        if response.status_code == 404 and error_code(response) == "BLOB_UPLOAD_UNKNOWN":
            self.tally.event("upload_session_abandoned")
            self.upload(repository, data, skip_present=False)
            return
        if response.status_code != 201:
            self.tally.error(f"upload finish: {describe(response)}")
            raise Aborted
        self.tally.event("blobs_uploaded_chunked")

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> httpx.Response:
        self.last_put_ms = time.time_ns() // 1_000_000
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )
        if response.status_code == 201 and response.headers.get("Docker-Content-Digest") != sha(body):
            self.tally.fail(f"manifest PUT answered digest {response.headers.get('Docker-Content-Digest')}")
        return response

    def push(
        self,
        repository: str,
        reference: str,
        body: bytes,
        media_type: str,
        blobs: list[bytes],
        *,
        present: frozenset[str] = frozenset(),
    ) -> bool:
        """Upload `blobs` then PUT the manifest, retrying when the grace period ran out meanwhile.

        Blobs in `present` (just mounted) are not uploaded on the first attempt.
        """
        answers = []
        for attempt in range(4):
            started = time.monotonic()
            for blob in blobs:
                if attempt == 0 and sha(blob) in present:
                    continue
                self.upload(repository, blob, skip_present=attempt == 0)
            response = self.put_manifest(repository, reference, body, media_type)
            if response.status_code == 201:
                self.tally.event("manifests_pushed")
                return True
            if response.status_code == 400 and error_code(response) == "MANIFEST_BLOB_UNKNOWN":
                # A blob linked (or HEAD-checked) before the grace period ended was collected before
                # the manifest referenced it: the client uploads it again.
                self.tally.event("manifest_blob_unknown_retry")
                answers.append(f"{response.content[:160]!r} {time.monotonic() - started:.2f} s after the first upload")
                continue
            self.tally.error(f"manifest push: {describe(response)}")
            raise Aborted
        self.tally.event("push_gave_up")
        with self.tally.lock:
            self.tally.notes.append(f"gave up pushing {repository}@{reference}: " + "; ".join(answers))
        return False

    def tags_of(self, repository: str) -> list[str]:
        response = self.request("GET", f"/v2/{repository}/tags/list")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            self.tally.error(f"tags list: {describe(response)}")
            raise Aborted
        return list(response.json().get("tags") or [])

    def pick_tagged(self, repository: str) -> tuple[str, httpx.Response] | None:
        tags = self.tags_of(repository)
        if not tags:
            return None
        tag = self.rng.choice(tags)
        response = self.puller.manifest(repository, tag)
        if response.status_code != 200:
            self.tally.event("tag_gone_meanwhile")
            return None
        return tag, response

    def check_history(self, repository: str, tag: str, digest: str) -> None:
        """Right after `tag` was pointed at `digest`, its history row must exist.

        Within the namespace's window nothing may remove a tag row: deleting or moving the tag ends
        the row, and the collector purges only rows ended before the window, nor removes a manifest
        a row points at. A row gone this early was removed with its manifest (the tags' foreign key
        cascades): the collector took a manifest a new tag had just referenced.
        """
        if self.history is None or not repository.startswith(HISTORY_NAMESPACE + "/"):
            return
        dsn, window_ms = self.history
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                """SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
                   JOIN manifests m ON m.id = t.manifest_id
                   WHERE r.name = %s AND t.name = %s AND m.digest = %s""",
                (repository, tag, digest),
            ).fetchone()
        elapsed = time.time_ns() // 1_000_000 - self.last_put_ms
        if row is not None and row[0]:
            self.tally.event("history_rows_checked")
        elif elapsed < window_ms - 1000:
            self.tally.fail(f"{repository}:{tag} -> {digest}: its tag row vanished {elapsed} ms after the push")
        else:
            self.tally.event("history_check_too_late")

    # -- operations ----------------------------------------------------------------------------

    def push_image(self) -> None:
        repository = self.rng.choice(self.repositories)
        tag = self.rng.choice(TAGS)
        config, layers = self.config(), self.layers()
        body = image_manifest(config, layers)
        if self.push(repository, tag, body, OCI_MANIFEST, [config, *layers]):
            self.recent.append((repository, body, [config, *layers], []))
            self.check_history(repository, tag, sha(body))
            self.puller.pull(repository, tag)

    def push_index(self) -> None:
        repository = self.rng.choice(self.repositories)
        children = []
        for arch in ("amd64", "arm64"):
            config = json.dumps({"architecture": arch, "os": "linux", "child": self.rng.randrange(8)}).encode()
            layers = self.rng.sample(self.pool, self.rng.randint(1, 2))
            children.append((image_manifest(config, layers), [config, *layers]))
        self.push_index_of(repository, self.rng.choice(TAGS), children)

    def push_index_of(self, repository: str, tag: str, children: list[tuple[bytes, list[bytes]]]) -> None:
        """Push the children by digest, then the index over them under `tag`."""
        index = index_manifest([body for body, _ in children])
        for _ in range(4):
            for body, blobs in children:
                if not self.push(repository, sha(body), body, OCI_MANIFEST, blobs):
                    return
            response = self.put_manifest(repository, tag, index, OCI_INDEX)
            if response.status_code == 201:
                self.tally.event("indexes_pushed")
                self.recent.append((repository, index, [], children))
                self.check_history(repository, tag, sha(index))
                self.puller.pull(repository, tag)
                return
            if response.status_code == 400 and error_code(response) == "MANIFEST_BLOB_UNKNOWN":
                self.tally.event("index_child_collected_retry")
                continue
            self.tally.error(f"index push: {describe(response)}")
            raise Aborted
        self.tally.event("push_gave_up")

    def push_referrer(self) -> None:
        repository = self.rng.choice(self.repositories)
        picked = self.pick_tagged(repository)
        if picked is None:
            return
        _, subject = picked
        subject_digest = sha(subject.content)
        signature = self.unique("signature")
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": SIGNATURE_TYPE,
                "config": {"mediaType": OCI_EMPTY, "digest": sha(EMPTY_JSON), "size": len(EMPTY_JSON)},
                "layers": [{"mediaType": SIGNATURE_TYPE, "digest": sha(signature), "size": len(signature)}],
                "subject": {
                    "mediaType": subject.headers["Content-Type"].split(";")[0],
                    "digest": subject_digest,
                    "size": len(subject.content),
                },
            },
            separators=(",", ":"),
        ).encode()
        digest = sha(body)
        started = time.time_ns() // 1_000_000
        if not self.push(repository, digest, body, OCI_MANIFEST, [EMPTY_JSON, signature]):
            return
        self.tally.event("referrers_pushed")
        with self.tally.lock:
            self.tally.referrers.append((repository, digest, subject_digest, started))
        self.puller.pull(repository, digest)
        listed = self.request("GET", f"/v2/{repository}/referrers/{subject_digest}")
        if listed.status_code != 200:
            self.tally.error(f"referrers: {describe(listed)}")
            raise Aborted
        # Referrers are never re-pushed (each signature is unique): a referrer still served after
        # the list was read existed when it was read, so the list left it out.
        listed_digests = {item["digest"] for item in listed.json()["manifests"]}
        if digest not in listed_digests and self.puller.manifest(repository, digest).status_code == 200:
            self.tally.fail(f"{repository}: referrer {digest} is served but not listed for {subject_digest}")

    def retag(self) -> None:
        repository = self.rng.choice(self.repositories)
        picked = self.pick_tagged(repository)
        if picked is None:
            return
        tag, response = picked
        target = self.rng.choice([name for name in TAGS if name != tag])
        put = self.put_manifest(repository, target, response.content, response.headers["Content-Type"])
        if put.status_code == 201:
            self.tally.event("retagged")
            self.check_history(repository, target, sha(response.content))
            return
        if put.status_code == 400 and error_code(put) == "MANIFEST_BLOB_UNKNOWN":
            # Only if the manifest was collected between the GET and the PUT.
            if self.puller.manifest(repository, sha(response.content)).status_code == 200:
                self.tally.suspect(
                    f"retag of {repository}@{sha(response.content)} refused with {describe(put)} "
                    "while the manifest is served"
                )
            else:
                self.tally.event("retag_raced_delete")
            return
        self.tally.error(f"retag: {describe(put)}")

    def delete_tag(self) -> None:
        repository = self.rng.choice(self.repositories)
        tags = self.tags_of(repository)
        if not tags:
            return
        response = self.request("DELETE", f"/v2/{repository}/manifests/{self.rng.choice(tags)}")
        if response.status_code == 202:
            self.tally.event("tags_deleted")
        elif response.status_code != 404:
            self.tally.error(f"tag delete: {describe(response)}")

    def delete_manifest(self) -> None:
        repository = self.rng.choice(self.repositories)
        picked = self.pick_tagged(repository)
        if picked is None:
            return
        response = self.request("DELETE", f"/v2/{repository}/manifests/{sha(picked[1].content)}")
        if response.status_code == 202:
            self.tally.event("manifests_deleted")
        elif response.status_code != 404:
            self.tally.error(f"manifest delete: {describe(response)}")

    def mount(self) -> None:
        target = self.rng.choice(self.repositories)
        source = self.rng.choice([name for name in self.repositories if name != target])
        picked = self.pick_tagged(source)
        if picked is None:
            return
        document = json.loads(picked[1].content)
        if document.get("mediaType") != OCI_MANIFEST or not document.get("layers"):
            return
        digest = self.rng.choice(document["layers"])["digest"]
        data = self.contents.get(digest)
        if data is None:  # pragma: no cover - every blob comes from some client
            return
        response = self.request("POST", f"/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
        if response.status_code == 201:
            self.tally.event("mounted")
        elif response.status_code == 202:
            # The source no longer holds it: the registry opened an upload instead.
            self.tally.event("mount_fell_back_to_upload")
            self.finish_session(target, response.headers["Location"], data, digest)
        else:
            self.tally.error(f"mount: {describe(response)}")
            raise Aborted
        config = self.config()
        layers = [data, *self.rng.sample(self.pool, self.rng.randint(0, 1))]
        tag = self.rng.choice(TAGS)
        body = image_manifest(config, layers)
        if self.push(target, tag, body, OCI_MANIFEST, [config, *layers], present=frozenset({digest})):
            self.check_history(target, tag, sha(body))
            self.puller.pull(target, tag)

    def repush(self) -> None:
        """Push again something pushed lately, as a pipeline re-running does: its manifest may be
        unreferenced (its tag deleted or moved) and being collected right now."""
        if not self.recent:
            return
        repository, body, blobs, children = self.rng.choice(self.recent)
        tag = self.rng.choice(TAGS)
        self.tally.event("repushes")
        if children:
            self.push_index_of(repository, tag, children)
        elif self.push(repository, tag, body, OCI_MANIFEST, blobs):
            self.check_history(repository, tag, sha(body))
            self.puller.pull(repository, tag)

    def pull(self) -> None:
        repository = self.rng.choice(self.repositories)
        tags = self.tags_of(repository)
        if tags:
            self.puller.pull(repository, self.rng.choice(tags))


def run_gc_loop(dockyard: str, options: list[str], env: dict[str, str], stop: threading.Event, tally: Tally) -> None:
    """Run `dockyard gc run` (and every fourth time `gc --dry-run`) back to back until told to stop."""
    runs = 0
    while not stop.is_set():
        runs += 1
        dry = runs % 4 == 0
        argv = [dockyard, "gc", "--dry-run" if dry else "run", *options]
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
        tally.event("gc_cli_dry_runs" if dry else "gc_cli_runs")
        tally.event("gc_cli_ms", int((time.monotonic() - started) * 1000))
        if result.returncode != 0:
            tally.error(f"{' '.join(argv[1:3])} exited {result.returncode}: {result.stderr[-3000:]}")
