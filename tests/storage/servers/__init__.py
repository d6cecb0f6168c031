"""Real storage servers for tests/storage, one module per driver, each with the same interface:

- `server(workdir: Path) -> ContextManager[dict]`: start the server (its files under `workdir`,
  bound to 127.0.0.1 on free ports), wait until it answers, yield the location's options (the
  `storage.locations.<name>` mapping of the settings), stop it afterwards. A server that does not
  start fails loudly with its log, never a skip.
- `bad_credentials(options) -> dict | None`: the same location with credentials the server
  refuses, or None when the server cannot refuse any (no credentials, or an emulator that checks
  none).

Drivers and their modules: local -> local, s3 -> seaweedfs, azure -> azurite, gcs -> fake_gcs.
"""
