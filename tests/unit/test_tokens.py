"""Bearer token issue and verification against tampering, other keys, expiry and audience."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from dockyard.auth import Principal, TokenService
from dockyard.auth.tokens import generate_key
from dockyard.db.accounts_store import SigningKey
from dockyard.domain.errors import Unauthorized

pytestmark = pytest.mark.unit

ALICE = Principal(account_id=3, name="alice", kind="user", epoch=2)
ACCESS = [{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}]


class MemoryKeys:
    """Stands in for the signing_keys table (the database version runs in the integration suites)."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []

    async def signing_keys(self) -> list[SigningKey]:
        return list(self.keys)

    async def add_signing_key(
        self, kid: str, private_pem: str, public_pem: str, *, retire_others: bool, actor: object = None
    ) -> None:
        now = int(time.time() * 1000) + len(self.keys)
        if retire_others:
            self.keys = [SigningKey(k.kid, k.private_pem, k.public_pem, k.created_at, now) for k in self.keys]
        self.keys.append(SigningKey(kid, private_pem, public_pem, now, None))


def service() -> TokenService:
    return TokenService(MemoryKeys(), lifetime=300, refresh_lifetime=3600)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_round_trip_carries_grants_and_account() -> None:
    tokens = service()
    issued = run(tokens.issue(ALICE, "reg:5000", ACCESS))
    principal = run(tokens.verify(issued.token, "reg:5000"))
    assert principal.account_id == 3
    assert principal.epoch == 2
    assert principal.grants == frozenset({("alice/app", "pull"), ("alice/app", "push")})
    assert jwt.get_unverified_header(issued.token)["kid"]


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_tampered_payload_is_rejected() -> None:
    tokens = service()
    token = run(tokens.issue(ALICE, "reg", ACCESS)).token
    header, _, signature = token.split(".")
    payload = _payload(token)
    payload["access"][0]["name"] = "bob/app"
    with pytest.raises(Unauthorized):
        run(tokens.verify(f"{header}.{_b64(payload)}.{signature}", "reg"))


def test_other_key_with_same_kid_is_rejected() -> None:
    tokens = service()
    token = run(tokens.issue(ALICE, "reg", ACCESS)).token
    kid = jwt.get_unverified_header(token)["kid"]
    _, private_pem, _ = generate_key()
    forged = jwt.encode(
        _payload(token), serialization.load_pem_private_key(private_pem.encode(), None), "ES256", headers={"kid": kid}
    )
    with pytest.raises(Unauthorized):
        run(tokens.verify(forged, "reg"))


def test_alg_none_is_rejected() -> None:
    tokens = service()
    token = run(tokens.issue(ALICE, "reg", ACCESS)).token
    kid = jwt.get_unverified_header(token)["kid"]
    unsigned = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(_payload(token))}."
    with pytest.raises(Unauthorized):
        run(tokens.verify(unsigned, "reg"))


def test_wrong_audience_and_expiry_are_rejected() -> None:
    tokens = service()
    token = run(tokens.issue(ALICE, "reg", ACCESS)).token
    with pytest.raises(Unauthorized):
        run(tokens.verify(token, "other-registry"))
    short = TokenService(tokens.store, lifetime=300, refresh_lifetime=3600)
    short.lifetime = -5  # already expired when issued
    expired = run(short.issue(ALICE, "reg", ACCESS)).token
    with pytest.raises(Unauthorized, match="expired"):
        run(tokens.verify(expired, "reg"))


def test_refresh_and_access_tokens_are_not_interchangeable() -> None:
    tokens = service()
    refresh = run(tokens.issue(ALICE, "reg", [], refresh=True)).token
    access = run(tokens.issue(ALICE, "reg", ACCESS)).token
    with pytest.raises(Unauthorized):
        run(tokens.verify(refresh, "reg"))
    with pytest.raises(Unauthorized):
        run(tokens.verify(access, "reg", refresh=True))
    assert run(tokens.verify(refresh, "reg", refresh=True)).account_id == 3


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() -> None:
    tokens = service()
    old = run(tokens.issue(ALICE, "reg", ACCESS)).token
    new_kid = run(tokens.rotate())
    fresh = run(tokens.issue(ALICE, "reg", ACCESS)).token
    assert jwt.get_unverified_header(fresh)["kid"] == new_kid
    assert jwt.get_unverified_header(old)["kid"] != new_kid
    assert run(tokens.verify(old, "reg")).account_id == 3
    assert run(tokens.verify(fresh, "reg")).account_id == 3
