"""The `dockyard` command. Imports `app` and below."""
