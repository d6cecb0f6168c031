"""schemathesis against /api/v1/openapi.json on a live server, as the superuser: no 5xx, and
every response matches the document (status documented, content type, body schema).

Examples are bounded (a few per operation) to keep the run short; the explicit examples of the
document point at a seeded repository, so successful paths are exercised as well as refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode, checks

from dockyard.api.app import openapi_document

from .support import Server, push_image, running_server

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Fuzzed logins (`POST /session`) fail by the dozen from one address: without a high limit the
    # failed-login lockout would answer 429 to every later operation.
    environ = {"DOCKYARD_AUTH__MAX_FAILED_LOGINS": "1000000"}
    with running_server(tmp_path_factory.mktemp("schema"), environ) as server:
        with server.admin() as admin:
            # The document's examples name acme/web and tag v1.
            admin.post("/api/v1/repositories", json={"name": "acme/web", "visibility": "public"})
            push_image(admin, "acme/web", "v1", labels={"a": "b"})
        yield server


# Loaded at collection from the application itself; the server serves the same document (checked
# below), and the calls go to the server.
schema = schemathesis.openapi.from_dict(openapi_document())
# Valid and invalid input alike: bad input gets a 4xx problem, never a 5xx.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


def test_the_server_serves_the_document(fuzzed_server: Server) -> None:
    with fuzzed_server.admin() as client:
        assert client.get("/api/v1/openapi.json").json() == openapi_document()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
def test_api_conforms_to_its_openapi_document(case: Any, fuzzed_server: Server) -> None:
    case.call_and_validate(
        base_url=f"{fuzzed_server.url}/api/v1",
        auth=("admin", fuzzed_server.admin_password),
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
            checks.negative_data_rejection,
        ],
    )
