"""Secrets: password hashing (argon2id), random tokens stored as SHA-256, derived CLI passwords."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()

#: Prefixes make a leaked secret recognisable (and scannable) and route verification cheaply.
ROBOT_TOKEN_PREFIX = "dyr_"  # noqa: S105 - a prefix, not a secret
APP_TOKEN_PREFIX = "dya_"  # noqa: S105 - a prefix, not a secret
CLI_PASSWORD_PREFIX = "dyc_"  # noqa: S105 - a prefix, not a secret
SESSION_PREFIX = "dyw_"
OAUTH_ACCESS_PREFIX = "dyo_"
OAUTH_REFRESH_PREFIX = "dyf_"
OAUTH_CODE_PREFIX = "dyg_"
OAUTH_SECRET_PREFIX = "dys_"  # noqa: S105 - a prefix, not a secret


async def hash_password(password: str) -> str:
    """argon2id; ~50 ms of CPU, so it runs off the event loop."""
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def new_token(prefix: str) -> str:
    """A random token (256 bits). High entropy: a SHA-256 of it is a safe stored form."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cli_password(server_secret: str, account_id: int, epoch: int) -> str:
    """The encrypted CLI password of an account: valid until its password (epoch) changes."""
    mac = hmac.new(server_secret.encode(), f"cli-password:{account_id}:{epoch}".encode(), hashlib.sha256)
    return CLI_PASSWORD_PREFIX + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def same(a: str, b: str) -> bool:
    """Constant-time comparison of secrets."""
    return hmac.compare_digest(a.encode(), b.encode())
