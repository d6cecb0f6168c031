"""Media types of the manifests and blobs Dockyard understands."""

from __future__ import annotations

from typing import Final

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS: Final = IMAGE_MANIFESTS | INDEXES

#: Layers whose bytes live elsewhere (`urls`); a manifest may name them without the blob present.
NON_DISTRIBUTABLE: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

OCI_IMAGE_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_IMAGE_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
IMAGE_CONFIGS: Final = frozenset({OCI_IMAGE_CONFIG, DOCKER_IMAGE_CONFIG})
