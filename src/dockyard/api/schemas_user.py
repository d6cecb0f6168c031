"""Request and response bodies of the calling user's resources (`/user/…`) and of user
administration (`/users`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from dockyard.api.schemas import Repository, moment, when
from dockyard.domain.access import Scope
from dockyard.domain.users import StarredRepository as StarredRecord
from dockyard.domain.users import UserInfo
from dockyard.services.accounts import MIN_PASSWORD

MAX_PASSWORD = 1024
#: Printable text: no control characters (nor NUL, which PostgreSQL cannot store).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Email = Annotated[
    str,
    Field(max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$", examples=["alice@example.com"]),
]
Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 time as a string")  # noqa: TRY004 - pydantic wants ValueError
    return value


#: A moment written as RFC 3339 text (not a number of seconds, which pydantic would also take).
Moment = Annotated[dt.datetime, BeforeValidator(_text_only)]


class _Request(BaseModel):
    """Request bodies: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# -- the calling user --------------------------------------------------------------------------


class PasswordChange(_Request):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: Password


class CliPassword(BaseModel):
    """A secret that stands in for the password in `docker login` (Basic `USER:SECRET`) until
    the password changes."""

    username: str
    password: str


class TokenRecord(Protocol):
    """A stored app token, as the services hand it out."""

    @property
    def id(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def scopes(self) -> str: ...
    @property
    def created_at(self) -> int: ...
    @property
    def expires_at(self) -> int | None: ...
    @property
    def last_used_at(self) -> int | None: ...


class AppToken(BaseModel):
    id: int
    title: str
    scopes: list[str] = Field(description="What the token may be used for (docs/api.md).")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, token: TokenRecord) -> AppToken:
        return cls(**_token_fields(token))


class AppTokenCreate(_Request):
    """At most one of `expires_in` and `expires_at`; neither: the token does not expire."""

    title: str = Field(min_length=1, max_length=255, pattern=PRINTABLE, examples=["ci"])
    expires_in: str | None = Field(None, max_length=32, description="A duration: 90s, 15m, 12h, 30d, 2w.")
    expires_at: Moment | None = Field(None, description="A moment in the future (with a time zone).")
    scopes: list[Scope] | None = Field(
        None,
        min_length=1,
        max_length=len(Scope),
        description="Omitted: the scopes of the credential creating it (every scope for a password). "
        "A scoped token cannot create a token with scopes beyond its own.",
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> AppTokenCreate:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give at most one of expires_in and expires_at")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        return self


class AppTokenCreated(AppToken):
    token: str = Field(description="The token itself: shown only in this answer.")

    @classmethod
    def of_new(cls, token: TokenRecord, secret: str) -> AppTokenCreated:
        return cls(**_token_fields(token), token=secret)


def _token_fields(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "title": token.title,
        "scopes": token.scopes.split(),
        "created_at": moment(token.created_at),
        "expires_at": when(token.expires_at),
        "last_used_at": when(token.last_used_at),
    }


class StarredRepository(Repository):
    starred_at: dt.datetime

    @classmethod
    def of_star(cls, star: StarredRecord) -> StarredRepository:
        starred_at = moment(star.starred_at)
        return cls(**Repository.of(star.repository).model_dump(), starred_at=starred_at)


# -- user administration -----------------------------------------------------------------------


class User(BaseModel):
    name: str
    email: str | None
    enabled: bool
    superuser: bool = Field(description="The account's flag (auth.superusers in the configuration may add more).")
    created_at: dt.datetime

    @classmethod
    def of(cls, info: UserInfo) -> User:
        return cls(
            name=info.name,
            email=info.email,
            enabled=info.enabled,
            superuser=info.superuser,
            created_at=moment(info.created_at),
        )


class UserCreate(_Request):
    name: str = Field(min_length=1, max_length=255, examples=["carol"])
    email: Email | None = None
    password: Password | None = Field(None, description="Omitted: one is generated and returned once.")
    superuser: StrictBool = False


class UserCreated(User):
    password: str | None = Field(description="The generated password (shown only now); null when one was given.")


class UserUpdate(_Request):
    """Only the fields given change."""

    email: Email | None = Field(None, description="null removes the address.")
    enabled: StrictBool | None = Field(None, description="false: the user can neither log in nor use any token.")
    superuser: StrictBool | None = None
    password: Password | None = Field(None, description="A new password (ends the user's current logins).")
