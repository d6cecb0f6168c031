"""The REST API `/api/v1`: FastAPI routes (thin), pydantic schemas, problem JSON, cursor paging.

Imports `services`, `auth` and below — never `db`, `storage` or SQLAlchemy (the layer contract in
pyproject.toml). Every handler authenticates once (`context.caller`), makes one explicit
`authorize` call through `Caller.allow`, and calls services; every error becomes problem JSON in
one place (`problems.py`). `app.build_api` builds the application; importing builds nothing.
"""
