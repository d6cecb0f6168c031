"""Browser sessions: log in with a password, resume by the cookie's session id, log out.

The session id is a random 256-bit token (`dyw_…`) held only by the browser (an HttpOnly cookie);
the database keeps its SHA-256. A session ends when it has been idle for `idle_seconds`, when
`absolute_seconds` have passed since the login, at logout, and when the account's credentials
change (a new password, a disable: the account's credential epoch moves on).

The CSRF token of a session is derived from its id (an HMAC keyed by it), so it needs no storage
and a page that can read it was served to the holder of the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from dockyard.auth import Authenticator, Principal
from dockyard.auth import secrets as sec
from dockyard.config.settings import SessionSettings
from dockyard.db.accounts_store import AccountsStore
from dockyard.db.clock import now_ms
from dockyard.db.sessions_store import SessionRecord, SessionsStore
from dockyard.domain.audit import Actor
from dockyard.domain.errors import Unauthorized

_MAX_ID = 128
#: Last-use times are written at most this often (and a few times per idle period).
_TOUCH_MS = 60_000


@dataclass(frozen=True, slots=True)
class ActiveSession:
    id: int
    principal: Principal
    """The session's user with every role and no scope cap (`via="session"`)."""
    csrf_token: str
    created_at: int
    authenticated_at: int
    """When the password was last entered."""
    expires_at: int
    """When the session ends unless used again before (idle) — never later than its absolute end."""


def csrf_token(session_id: str) -> str:
    mac = hmac.new(session_id.encode(), b"dockyard-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


class SessionService:
    def __init__(
        self, store: SessionsStore, accounts: AccountsStore, authenticator: Authenticator, settings: SessionSettings
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.authenticator = authenticator
        self.settings = settings

    @property
    def lifetime_seconds(self) -> int:
        """The longest a session can last (its cookie's Max-Age)."""
        return self.settings.absolute_seconds

    async def login(
        self, username: str, password: str, *, ip: str, user_agent: str | None, replaces: str | None
    ) -> tuple[str, ActiveSession]:
        """Check a user's password (failed-login limit and audit as every login) and start a
        session; return its id (for the cookie) and the session. `replaces`: the browser's
        previous session id, ended now."""
        principal = await self.authenticator.login(
            username,
            password,
            ip,
            user_agent=user_agent,
            endpoint="session",
            record_success=True,
            password_only=True,
        )
        assert principal.account_id is not None
        session_id = sec.new_token(sec.SESSION_PREFIX)
        now = now_ms()
        record = await self.store.create(
            sec.token_hash(session_id),
            principal.account_id,
            principal.epoch,
            ip=ip,
            user_agent=user_agent[:512] if user_agent else None,
            replaces=sec.token_hash(replaces) if replaces and len(replaces) <= _MAX_ID else None,
            expired_before=(now - self.settings.idle_seconds * 1000, now - self.settings.absolute_seconds * 1000),
        )
        account = await self.accounts.account_by_id(principal.account_id)
        if account is None:
            raise Unauthorized("invalid username or password")
        return session_id, self._active(record, session_id, self.authenticator.principal_for(account, "session"))

    async def resume(self, session_id: str) -> ActiveSession | None:
        """The live session with this id; None when there is none (never was, ended, expired, or
        its account's credentials changed)."""
        if not session_id.startswith(sec.SESSION_PREFIX) or len(session_id) > _MAX_ID:
            return None
        record = await self.store.get(sec.token_hash(session_id))
        if record is None:
            return None
        now = now_ms()
        idle_ms = self.settings.idle_seconds * 1000
        if now - record.last_used_at >= idle_ms or now - record.created_at >= self.settings.absolute_seconds * 1000:
            await self.store.delete(record.id)
            return None
        account = await self.accounts.account_by_id(record.account_id)
        if account is None or not account.enabled or account.epoch != record.epoch:
            await self.store.delete(record.id)
            return None
        if now - record.last_used_at > min(_TOUCH_MS, idle_ms // 4):
            await self.store.touch(record.id)
            record = SessionRecord(
                record.id, record.account_id, record.epoch, record.created_at, now, record.authenticated_at
            )
        return self._active(record, session_id, self.authenticator.principal_for(account, "session"))

    async def logout(self, session: ActiveSession, *, actor: Actor) -> None:
        await self.store.delete(session.id, actor=actor)

    async def reauthenticate(
        self, session: ActiveSession, password: str, *, ip: str, user_agent: str | None
    ) -> ActiveSession:
        """Check the session user's password again (failed-login limit and audit as every
        login); the session counts as freshly logged in from now."""
        name = session.principal.name
        assert name is not None
        await self.authenticator.login(
            name,
            password,
            ip,
            user_agent=user_agent,
            endpoint="reauthenticate",
            record_success=True,
            password_only=True,
        )
        at = await self.store.reauthenticated(session.id)
        return ActiveSession(
            id=session.id,
            principal=session.principal,
            csrf_token=session.csrf_token,
            created_at=session.created_at,
            authenticated_at=at,
            expires_at=min(at + self.settings.idle_seconds * 1000, session.created_at + self.lifetime_seconds * 1000),
        )

    def is_fresh(self, session: ActiveSession) -> bool:
        """Whether the password was entered recently enough for a sensitive operation."""
        return now_ms() - session.authenticated_at < self.settings.fresh_login_seconds * 1000

    def csrf_matches(self, session: ActiveSession, presented: str | None) -> bool:
        return presented is not None and sec.same(presented, session.csrf_token)

    def _active(self, record: SessionRecord, session_id: str, principal: Principal) -> ActiveSession:
        return ActiveSession(
            id=record.id,
            principal=principal,
            csrf_token=csrf_token(session_id),
            created_at=record.created_at,
            authenticated_at=record.authenticated_at,
            expires_at=min(
                record.last_used_at + self.settings.idle_seconds * 1000,
                record.created_at + self.settings.absolute_seconds * 1000,
            ),
        )
