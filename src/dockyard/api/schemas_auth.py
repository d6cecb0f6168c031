"""Request and response bodies of browser sessions, OAuth2 applications and users'
authorizations, the path parameters naming them, and their conversions from service records."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from dockyard.api.schemas import moment
from dockyard.domain.access import parse_scopes, scopes_text
from dockyard.services.oauth import MAX_REDIRECT_URIS, MAX_URI, AuthorizationRecord, OAuthApp
from dockyard.services.sessions import ActiveSession

ScopeName = Literal[
    "repo:read", "repo:write", "repo:admin", "repo:create", "org:admin", "user:read", "user:admin", "super:user"
]
_NAMESPACE = r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$"
_APP_NAME = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"

OrgPath = Annotated[str, Path(description="An organization.", max_length=255, pattern=_NAMESPACE, examples=["acme"])]
ClientIdPath = Annotated[
    str, Path(description="The application's client id.", max_length=64, examples=["4f1c9e0a7b2d3c5e6f708192"])
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- sessions ----------------------------------------------------------------------------------


class SessionLogin(_Strict):
    username: str = Field(min_length=1, max_length=300)
    password: str = Field(min_length=1, max_length=1024)


class Reauthentication(_Strict):
    password: str = Field(min_length=1, max_length=1024)


class SessionUser(BaseModel):
    name: str
    email: str | None
    superuser: bool


class Session(BaseModel):
    """A browser session (its id lives only in the HttpOnly cookie)."""

    user: SessionUser
    csrf_token: str = Field(description="Send it as `X-CSRF-Token` with every POST, PUT, PATCH and DELETE.")
    authenticated_at: dt.datetime = Field(description="When the password was last entered.")
    fresh_until: dt.datetime = Field(
        description="Until when sensitive operations need no new password entry (`/session/reauthenticate`)."
    )
    expires_at: dt.datetime = Field(description="When the session ends unless used before (never past its limit).")

    @classmethod
    def of(cls, session: ActiveSession, email: str | None, fresh_seconds: int) -> Session:
        principal = session.principal
        assert principal.name is not None
        return cls(
            user=SessionUser(name=principal.name, email=email, superuser=principal.superuser),
            csrf_token=session.csrf_token,
            authenticated_at=moment(session.authenticated_at),
            fresh_until=moment(session.authenticated_at + fresh_seconds * 1000),
            expires_at=moment(session.expires_at),
        )


# -- OAuth2 applications -----------------------------------------------------------------------

RedirectUri = Annotated[str, Field(min_length=1, max_length=MAX_URI, examples=["https://ci.example.com/callback"])]


class ApplicationCreate(_Strict):
    name: str = Field(min_length=1, max_length=255, pattern=_APP_NAME, examples=["ci-dashboard"])
    redirect_uris: list[RedirectUri] = Field(
        min_length=1,
        max_length=MAX_REDIRECT_URIS,
        description="Exact URIs the authorization endpoint may send users back to: https, or http on a "
        "loopback address.",
    )
    description: str | None = Field(None, max_length=4096)
    scopes: list[ScopeName] | None = Field(
        None, min_length=1, description="The scopes the application may ask for; default every scope."
    )


class ApplicationUpdate(_Strict):
    name: str | None = Field(None, min_length=1, max_length=255, pattern=_APP_NAME)
    redirect_uris: list[RedirectUri] | None = Field(None, min_length=1, max_length=MAX_REDIRECT_URIS)
    description: str | None = Field(None, max_length=4096, description="null removes it.")
    scopes: list[ScopeName] | None = Field(None, min_length=1, description="Tokens issued already keep their scopes.")


class Application(BaseModel):
    """An OAuth2 application of an organization (a confidential client)."""

    client_id: str
    name: str
    organization: str
    description: str | None
    redirect_uris: list[str]
    scopes: list[ScopeName] = Field(description="The scopes it may ask for.")
    created_at: dt.datetime
    secret_reset_at: dt.datetime | None

    @classmethod
    def of(cls, app: OAuthApp) -> Application:
        return cls(**_application_fields(app))


class ApplicationWithSecret(Application):
    client_secret: str = Field(description="Shown only now; store it. Resetting it voids the old one.")

    @classmethod
    def with_secret(cls, app: OAuthApp, secret: str) -> ApplicationWithSecret:
        return cls(**_application_fields(app), client_secret=secret)


def _scope_names(text: str) -> list[ScopeName]:
    return scopes_text(parse_scopes([text])).split()  # type: ignore[return-value]


def _application_fields(app: OAuthApp) -> dict[str, object]:
    return {
        "client_id": app.client_id,
        "name": app.name,
        "organization": app.namespace,
        "description": app.description,
        "redirect_uris": list(app.redirect_uris),
        "scopes": _scope_names(app.scopes),
        "created_at": moment(app.created_at),
        "secret_reset_at": None if app.secret_reset_at is None else moment(app.secret_reset_at),
    }


class Authorization(BaseModel):
    """An application the calling user authorized, and the scopes granted to it."""

    client_id: str
    application: str
    organization: str
    description: str | None
    scopes: list[ScopeName]
    authorized_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, record: AuthorizationRecord) -> Authorization:
        app = record.application
        return cls(
            client_id=app.client_id,
            application=app.name,
            organization=app.namespace,
            description=app.description,
            scopes=_scope_names(record.scopes),
            authorized_at=moment(record.created_at),
            updated_at=moment(record.updated_at),
        )
