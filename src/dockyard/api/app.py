"""The `/api/v1` application: routers, problem JSON, the OpenAPI document and offline docs.

FastAPI serves the REST API (typed handlers, pydantic bodies, a generated OpenAPI 3.1 document);
the `/v2` registry stays on plain Starlette for speed. The composition root mounts this
application at `/api/v1` and hands it the services.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from dockyard.api import problems
from dockyard.api.routes import (
    logs,
    manifests,
    oauth,
    organizations,
    permissions,
    registry,
    repositories,
    robots,
    search,
    session,
    tags,
    teams,
    user,
    users,
)
from dockyard.services.context import Services

DESCRIPTION = """\
The Dockyard REST API. Authenticate with `Authorization: Bearer <app, robot or OAuth2 token>`,
Basic credentials as on the registry, or a browser session (`POST /session`: a cookie, plus the
`X-CSRF-Token` header on changes); without credentials you act anonymously (public data only).
A token's scopes cap what its account may do. Errors are `application/problem+json` with a stable
`code`; lists are cursor-paged (`limit`, `cursor`, `next`). See docs/api.md.
"""

_ASSETS = "/docs/assets"
#: Where the composition root mounts the API.
PREFIX = "/api/v1"


async def api_not_found(request: Request, exc: Exception) -> Response:
    """The outer application's 404: problem JSON under the API's prefix (a path the mount cannot
    even match, such as one with a line break), plain text elsewhere as before."""
    if request.url.path.startswith(PREFIX + "/"):
        code, title = problems.NOT_FOUND
        return problems.problem_response(404, code, title, f"no API route for {request.url.path!r}")
    return PlainTextResponse("Not Found", status_code=404)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, without building any service (for exports and tests)."""
    return _application().openapi()


def build_api(services: Services) -> FastAPI:
    api = _application()
    api.state.services = services
    return api


def _application() -> FastAPI:
    api = FastAPI(
        title="Dockyard API",
        version=version("dockyard"),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        # operationId = the handler's name (unique), so generated clients read well.
        generate_unique_id_function=lambda route: route.name,
    )
    problems.install(api)
    # Sub-resources (`…/-/tags`) first: the plain repository route would match their paths too.
    for module in (
        tags,
        manifests,
        permissions,
        # Before organizations and user: `/organizations/{org}/applications`, `/user/authorizations`.
        oauth,
        session,
        repositories,
        user,
        registry,
        organizations,
        teams,
        robots,
        users,
        search,
        logs,
    ):
        api.include_router(module.router)
    api.mount(_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="Dockyard API",
            swagger_js_url=f"{root}{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_ASSETS}/favicon-32x32.png",
            # No request to the online validator: the page works without a network.
            swagger_ui_parameters={"validatorUrl": None},
        )

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title,
                version=api.version,
                description=api.description,
                routes=api.routes,
                servers=[{"url": PREFIX}],
                tags=[
                    {"name": name}
                    for name in (
                        "registry",
                        "user",
                        "repositories",
                        "tags",
                        "manifests",
                        "permissions",
                        "organizations",
                        "teams",
                        "robots",
                        "users",
                        "search",
                        "logs",
                        "session",
                        "oauth",
                    )
                ],
            )
            api.openapi_schema = _problem_media_types(document)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _problem_media_types(document: dict[str, Any]) -> dict[str, Any]:
    """Error responses are `application/problem+json`, not the `application/json` FastAPI assumes."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status[:1] in ("4", "5") and content and "application/json" in content:
                    content[problems.PROBLEM_JSON] = content.pop("application/json")
    return document
