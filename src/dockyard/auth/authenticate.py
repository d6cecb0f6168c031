"""Credentials -> Principal. The one authentication step every request passes through."""

from __future__ import annotations

from dockyard.auth.authorize import ANONYMOUS, Principal


class Authenticator:
    """Turns a request's Authorization header into a Principal.

    Until accounts exist every caller is anonymous; the access policy decides what anonymous
    callers may do.
    """

    async def authenticate(self, authorization: str | None) -> Principal:
        return ANONYMOUS
