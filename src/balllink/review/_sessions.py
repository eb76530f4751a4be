"""Sign-in sessions and CSRF tokens of the review app, kept on the server.

The browser holds only a random session key (256 bits) in a cookie that scripts cannot
read (``HttpOnly``), that other sites never send (``SameSite=Strict``) and, when the app
is served over TLS, that travels only encrypted (``Secure``). The server keeps what the
key stands for: the signed-in user, the CSRF token of the session, when it was last used.
Signing out forgets the key on the server; restarting the server forgets every session.
A session unused for ``idle_seconds`` ends.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = ["COOKIE", "Session", "SessionStore"]

#: Name of the session cookie.
COOKIE = "balllink_session"


@dataclass
class Session:
    """One browser's session: ``user`` (None before signing in) and its CSRF token."""

    key: str
    csrf: str
    user: str | None = None
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def csrf_ok(self, token: str | None) -> bool:
        """True when ``token`` is this session's CSRF token (compared in constant time).

        Examples
        --------
        >>> s = Session("k", "t0k3n")
        >>> s.csrf_ok("t0k3n"), s.csrf_ok("other"), s.csrf_ok(None)
        (True, False, False)
        """
        return bool(token) and hmac.compare_digest(str(token), self.csrf)


class SessionStore:
    """The sessions of one server process (thread-safe).

    Examples
    --------
    >>> store = SessionStore()
    >>> s = store.new()
    >>> store.get(s.key) is s, store.get("forged") is None
    (True, True)
    >>> signed_in = store.sign_in(s, "ann")  # a new key: the anonymous one is dropped
    >>> store.get(s.key) is None, store.get(signed_in.key).user
    (True, 'ann')
    """

    def __init__(self, *, idle_seconds: float = 8 * 3600, max_sessions: int = 10_000):
        self.idle_seconds = float(idle_seconds)
        self.max_sessions = int(max_sessions)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: str | None = None) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user)
        with self._lock:
            self._prune()
            self._sessions[s.key] = s
        return s

    def get(self, key: str | None) -> Session | None:
        if not key:
            return None
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return None
            if time.time() - s.last_seen > self.idle_seconds:
                del self._sessions[key]
                return None
            s.last_seen = time.time()
            return s

    def sign_in(self, old: Session | None, user: str) -> Session:
        """A fresh session (new key, new CSRF token) for ``user``; the old one is dropped
        (a key known before signing in is worth nothing after)."""
        if old is not None:
            self.drop(old.key)
        return self.new(user)

    def drop(self, key: str) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def drop_user(self, user: str) -> None:
        """End every session of ``user`` (disabled, or their password changed)."""
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.user == user]:
                del self._sessions[key]

    def _prune(self) -> None:
        now = time.time()
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_seconds]:
            del self._sessions[key]
        if len(self._sessions) >= self.max_sessions:  # anonymous ones go first, oldest first
            order = sorted(self._sessions.values(), key=lambda s: (s.user is not None, s.last_seen))
            for s in order[: len(self._sessions) - self.max_sessions + 1]:
                del self._sessions[s.key]
