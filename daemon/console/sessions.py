"""Console sessions: who is logged in on which browser, kept in the daemon's memory.

A session is a random 256-bit id in a cookie (HttpOnly, SameSite=Strict, Secure under TLS, no Max-Age: it
ends with the browser) and a CSRF token of its own that every form and state-changing request carries. A
visitor who has not logged in gets a session too (anonymous), so the login form has a CSRF token; logging in
replaces it with a new id (an id planted before the login is worth nothing after it). A session ends after
`idle_seconds` without a request (the live-update stream does not count as one), after `max_seconds` in
all, at logout, and when its account is disabled (checked at each request). A restart ends every session.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ANONYMOUS = 10_000  # anonymous sessions kept at most; the oldest go first (a flood of GET /login)


@dataclass
class Session:
    id: str
    csrf: str
    ip: str
    created: float
    seen: float
    name: str | None = None  # the account, once logged in
    role: str | None = None  # admin | viewer | district
    tenant: str | None = None  # a district account's tenant
    flash: list[str] = field(default_factory=list)  # messages for the next page (an action's outcome)

    @property
    def logged_in(self) -> bool:
        return self.name is not None


class Sessions:
    def __init__(self, idle_seconds: float, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def new(self, ip: str) -> Session:
        self._forget_expired()
        anonymous = [s for s in self._by_id.values() if not s.logged_in]
        if len(anonymous) >= MAX_ANONYMOUS:
            for old in sorted(anonymous, key=lambda s: s.seen)[: len(anonymous) // 10]:
                del self._by_id[old.id]
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), ip, now, now)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, touch: bool = True) -> Session | None:
        """The live session of that id (its idle time restarts with `touch`), or None."""
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._by_id[session.id]
            return None
        if touch:
            session.seen = now
        return session

    def log_in(self, old: Session, name: str, role: str, tenant: str | None, ip: str) -> Session:
        """A new session for the account; the anonymous one it replaces ends."""
        self._by_id.pop(old.id, None)
        session = self.new(ip)
        session.name, session.role, session.tenant = name, role, tenant
        return session

    def end(self, session: Session) -> None:
        self._by_id.pop(session.id, None)

    def end_account(self, name: str) -> int:
        """Every session of an account (it was disabled); how many ended."""
        ended = [s.id for s in self._by_id.values() if s.name == name]
        for session_id in ended:
            del self._by_id[session_id]
        return len(ended)

    def _expired(self, session: Session, now: float) -> bool:
        idle = self.idle_seconds if session.logged_in else min(self.idle_seconds, 3600.0)
        return now - session.seen > idle or now - session.created > self.max_seconds

    def _forget_expired(self) -> None:
        now = self.clock()
        for session in [s for s in self._by_id.values() if self._expired(s, now)]:
            del self._by_id[session.id]
