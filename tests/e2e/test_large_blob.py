"""A 1 GiB layer pushed and pulled while the server's memory stays flat."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import httpx
import pytest

from . import helpers
from .helpers import OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, MiB, RegistryServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAYLOAD_BYTES = int(os.environ.get("DOCKYARD_E2E_BIG_MIB", "1024")) * MiB
RSS_GROWTH_LIMIT = 150 * MiB


def test_1gib_layer_push_pull_memory_stays_flat(fresh_registry: RegistryServer, tmp_path: Path) -> None:
    registry = fresh_registry
    layer_path = tmp_path / "layer.tar"
    layer_digest, layer_size = helpers.write_big_tar_layer(layer_path, PAYLOAD_BYTES)
    assert layer_size > PAYLOAD_BYTES
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    repo = helpers.unique_repo("big")
    timeout = httpx.Timeout(900, connect=10)

    with httpx.Client(base_url=registry.url, timeout=timeout, auth=registry.auth) as client:
        # Warm up every code path once with small data, then measure the idle baseline.
        config_digest = helpers.push_blob_monolithic(client, repo, config)
        warm = os.urandom(256 * 1024)
        helpers.push_blob_streamed(client, repo, iter([warm]), helpers.sha256_bytes(warm))
        helpers.stream_blob_digest(registry, repo, helpers.sha256_bytes(warm))
        time.sleep(1.0)
        idle = []
        for _ in range(5):
            idle.append(helpers.process_group_rss(registry.pgid)[0])
            time.sleep(0.2)
        baseline = statistics.median(idle)

        with helpers.RssSampler(registry.pgid, interval=0.2) as sampler:
            t0 = time.monotonic()
            helpers.push_blob_streamed(client, repo, helpers.iter_file(layer_path), layer_digest)
            push_s = time.monotonic() - t0

            head = client.head(f"/v2/{repo}/blobs/{layer_digest}")
            assert head.status_code == 200
            assert int(head.headers["Content-Length"]) == layer_size

            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                    "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
                }
            ).encode()
            manifest_digest = helpers.put_manifest(client, repo, "big", manifest, OCI_MANIFEST)
            assert helpers.check_manifest(registry, repo, "big", manifest_digest) == manifest

            t0 = time.monotonic()
            got, size = helpers.stream_blob_digest(registry, repo, layer_digest)
            pull_s = time.monotonic() - t0
            assert (got, size) == (layer_digest, layer_size)

    peak = sampler.peak
    growth = peak - baseline
    nprocs = max(s[2] for s in sampler.samples)
    print(
        f"\n{registry.kind}: layer {layer_size / MiB:.0f} MiB, push {layer_size / MiB / push_s:.0f} MiB/s, "
        f"pull {layer_size / MiB / pull_s:.0f} MiB/s; RSS baseline {baseline / MiB:.1f} MiB, "
        f"peak {peak / MiB:.1f} MiB over {nprocs} processes, growth {growth / MiB:.1f} MiB "
        f"({len(sampler.samples)} samples)"
    )
    assert len(sampler.samples) >= 5
    assert growth < RSS_GROWTH_LIMIT, (
        f"server RSS grew {growth / MiB:.1f} MiB (baseline {baseline / MiB:.1f}, peak {peak / MiB:.1f}) "
        f"while moving a {layer_size / MiB:.0f} MiB blob"
    )
