"""Registry bearer tokens: ES256 JWTs signed with keys every instance shares through the database.

The newest unretired key signs; every key not retired for longer than a token lifetime verifies.
Rotation (`dockyard auth rotate-key`) adds a key and retires the others; instances pick the new
key up when they meet its `kid`, or within a minute.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.auth.principal import Principal
from dockyard.db.accounts_store import AccountsStore, SigningKey
from dockyard.domain.access import parse_scopes, scopes_text
from dockyard.domain.audit import Actor
from dockyard.domain.errors import Unauthorized

ISSUER = "dockyard"
_KEY_REFRESH_SECONDS = 60
_VERIFIED_CACHE = 10_000


def generate_key() -> tuple[str, str, str]:
    """A new (kid, private PEM, public PEM)."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return secrets.token_hex(8), private_pem, public_pem


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    expires_in: int
    issued_at: int


class TokenService:
    def __init__(self, store: AccountsStore, *, lifetime: int, refresh_lifetime: int) -> None:
        self.store = store
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime
        self._signing: tuple[str, Any] | None = None
        self._verifying: dict[str, Any] = {}
        self._loaded_at = 0.0
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def _load(self, *, force: bool = False) -> None:
        if not force and self._signing is not None and time.monotonic() - self._loaded_at < _KEY_REFRESH_SECONDS:
            return
        keys = await self.store.signing_keys()
        if not any(key.retired_at is None for key in keys):
            kid, private_pem, public_pem = generate_key()
            await self.store.add_signing_key(kid, private_pem, public_pem, retire_others=False)
            keys = await self.store.signing_keys()
        now_ms = time.time() * 1000
        grace_ms = self.refresh_lifetime * 1000
        self._verifying = {
            key.kid: serialization.load_pem_public_key(key.public_pem.encode())
            for key in keys
            if key.retired_at is None or now_ms - key.retired_at < grace_ms
        }
        active: SigningKey = max((k for k in keys if k.retired_at is None), key=lambda k: (k.created_at, k.kid))
        self._signing = (active.kid, serialization.load_pem_private_key(active.private_pem.encode(), None))
        self._loaded_at = time.monotonic()

    async def rotate(self, actor: Actor | None = None) -> str:
        kid, private_pem, public_pem = generate_key()
        await self.store.add_signing_key(kid, private_pem, public_pem, retire_others=True, actor=actor)
        await self._load(force=True)
        return kid

    async def issue(
        self, principal: Principal, service: str, access: list[dict[str, Any]], *, refresh: bool = False
    ) -> Issued:
        await self._load()
        assert self._signing is not None
        kid, key = self._signing
        now = int(time.time())
        lifetime = self.refresh_lifetime if refresh else self.lifetime
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": principal.name or "",
            "aud": service,
            "iat": now,
            "nbf": now - 1,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "access": [] if refresh else access,
            "dky": {
                "aid": principal.account_id,
                "ep": principal.epoch,
                "tid": principal.app_token_id,
                "su": principal.superuser,
                "k": principal.kind,
                "via": principal.via,
                "typ": "refresh" if refresh else "access",
                # A scoped principal stays scoped when its refresh token buys a new access token.
                "sc": None if principal.scopes is None else scopes_text(principal.scopes),
                # An OAuth2 application's token stays bound to it: revoking it ends this token too.
                "oa": principal.oauth_app,
                "ot": principal.oauth_token_id,
                "an": principal.application_namespace,
            },
        }
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
        return Issued(token=token, expires_in=lifetime, issued_at=now)

    async def verify(self, token: str, service: str, *, refresh: bool = False) -> Principal:
        """The principal a token stands for; Unauthorized when forged, expired or for another service.

        Verified tokens are cached until they expire: a signature check costs ~0.3 ms, a cache
        hit microseconds. Whether the account still holds is the caller's check, every time.
        """
        cache_key = f"{service}\0{token}"
        cached = self._verified.get(cache_key)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed bearer token") from None
        kid = header.get("kid")
        if header.get("alg") != "ES256" or not isinstance(kid, str):
            raise Unauthorized("bearer token must be ES256 with a kid")
        await self._load()
        if kid not in self._verifying:
            await self._load(force=True)
        key = self._verifying.get(kid)
        if key is None:
            raise Unauthorized("bearer token signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=service,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        extra = claims.get("dky") or {}
        if (extra.get("typ") == "refresh") != refresh:
            raise Unauthorized("wrong kind of token")
        grants = frozenset(
            (entry["name"], action)
            for entry in claims.get("access") or []
            if isinstance(entry, dict) and entry.get("type") == "repository"
            for action in entry.get("actions") or []
        )
        scopes = extra.get("sc")
        principal = Principal(
            account_id=extra.get("aid"),
            name=claims.get("sub") or None,
            kind=extra.get("k"),
            superuser=bool(extra.get("su")),
            epoch=int(extra.get("ep") or 0),
            app_token_id=extra.get("tid"),
            via=str(extra.get("via") or "token"),
            grants=grants,
            scopes=parse_scopes([scopes]) if isinstance(scopes, str) else None,
            oauth_app=extra.get("oa"),
            oauth_token_id=extra.get("ot"),
            application_namespace=extra.get("an"),
        )
        self._verified[cache_key] = (float(claims["exp"]), principal)
        while len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return principal
