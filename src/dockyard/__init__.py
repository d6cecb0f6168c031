"""Dockyard: an enterprise container registry.

Layers, from the bottom up (a layer imports only layers below it; checked by import-linter):

    domain   pure types and rules (stdlib only)
    oci      media types, manifest parsing and validation
    config   the typed settings tree
    db, storage, queue    metadata, blob bytes, durable jobs
    auth     credentials -> Principal; the one authorize() function
    services use cases
    registry, ops         HTTP entry points (thin)
    app      composition root
    cli      the `dockyard` command
"""

__version__ = "0.1.0"
