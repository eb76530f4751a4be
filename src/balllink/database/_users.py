"""The reviewers of a database: user names, roles, password hashes; comments on leads.

Passwords are hashed with Argon2id (``argon2-cffi``'s `PasswordHasher`, its default
parameters, a random salt per hash); only the hash is stored. Every change to a user and
every comment is one audit record that commits to the row (``users``, ``comments`` are
covered by `balllink.database.AuditTrail.verify`): a role raised with the sqlite3 shell
is found by ``check``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ..errors import DatabaseError
from ._audit import AuditTrail
from ._schema import Sql, now

__all__ = ["MIN_PASSWORD", "ROLES", "User", "UserBook", "check_user_name"]

#: The roles, weakest first: an analyst reviews and comments, an examiner also confirms or
#: rejects leads, an admin also manages users and the lead threshold.
ROLES = ("analyst", "examiner", "admin")
#: The shortest password accepted.
MIN_PASSWORD = 10


@dataclass(frozen=True)
class User:
    """One reviewer: ``name``, ``role`` (one of `ROLES`), ``created``, ``disabled``."""

    name: str
    role: str
    created: str
    disabled: bool = False

    def can(self, role: str) -> bool:
        """True when this user's role is ``role`` or a stronger one (and not disabled).

        Examples
        --------
        >>> User("ann", "examiner", "2026-01-01").can("analyst")
        True
        >>> User("bob", "analyst", "2026-01-01").can("examiner")
        False
        """
        return not self.disabled and ROLES.index(self.role) >= ROLES.index(role)


def check_user_name(name: str) -> str:
    """The user name stripped; `ValueError` for an empty, over-long or unprintable one.

    Examples
    --------
    >>> check_user_name("  ann ")
    'ann'
    >>> check_user_name("a\\nb")
    Traceback (most recent call last):
    ...
    ValueError: user name 'a\\nb': letters, digits and . _ @ - only (1 to 64 characters)
    """
    name = str(name).strip()
    ok = (
        0 < len(name) <= 64
        and all(c.isalnum() or c in "._@-" for c in name)
        and not any(unicodedata.category(c).startswith("C") for c in name)
    )
    if not ok:
        raise ValueError(
            f"user name {name!r}: letters, digits and . _ @ - only (1 to 64 characters)"
        )
    return name


def _hasher():
    try:
        from argon2 import PasswordHasher
    except ImportError:  # pragma: no cover - a declared dependency
        raise DatabaseError(
            "user accounts need argon2-cffi: pip install 'balllink[serve]'"
        ) from None
    return PasswordHasher()


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


class UserBook:
    """The ``users`` and ``comments`` tables of one database."""

    #: A hash verified when the name is unknown, so that a wrong name takes as long as a
    #: wrong password (no probing for names by timing).
    _dummy: str | None = None

    def __init__(self, sql: Sql, audit: AuditTrail):
        self._sql = sql
        self._audit = audit

    # ------------------------------------------------------------------ users
    def add(self, name: str, role: str, password: str) -> User:
        name, role = check_user_name(name), _check_role(role)
        digest = _hasher().hash(_check_password(password))
        with self._sql.tx(f"add user {name}") as con:
            if con.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise DatabaseError(f"{self._sql.label}: user {name!r} already exists")
            cur = con.execute(
                "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                (name, role, digest, now()),
            )
            self._audit.append(
                "user add", covers=[("users", [int(cur.lastrowid)])], name=name, role=role
            )
        return self.get(name)

    def get(self, name: str) -> User:
        row = self._sql().execute("SELECT * FROM users WHERE name = ?", (str(name),)).fetchone()
        if row is None:
            raise DatabaseError(f"{self._sql.label}: no user {name!r}")
        return _user(row)

    def users(self) -> list[User]:
        return [_user(r) for r in self._sql().execute("SELECT * FROM users ORDER BY name")]

    def change(
        self,
        name: str,
        *,
        role: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> User:
        user = self.get(name)
        sets, params, detail = [], [], {"name": user.name}
        if role is not None:
            sets.append("role = ?")
            params.append(_check_role(role))
            detail["role"] = role
        if password is not None:
            sets.append("password_hash = ?")
            params.append(_hasher().hash(_check_password(password)))
            detail["password"] = "changed"
        if disabled is not None:
            sets.append("disabled = ?")
            params.append(int(bool(disabled)))
            detail["disabled"] = bool(disabled)
        if not sets:
            return user
        with self._sql.tx(f"change user {user.name}") as con:
            con.execute(f"UPDATE users SET {', '.join(sets)} WHERE name = ?", [*params, user.name])
            uid = con.execute("SELECT id FROM users WHERE name = ?", (user.name,)).fetchone()[0]
            self._audit.append("user change", covers=[("users", [int(uid)])], **detail)
        return self.get(user.name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs and they are not disabled, else None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        row = (
            self._sql()
            .execute("SELECT * FROM users WHERE name = ?", (str(name).strip(),))
            .fetchone()
        )
        if row is None:
            if UserBook._dummy is None:
                UserBook._dummy = hasher.hash("not a password of anyone")
            try:
                hasher.verify(UserBook._dummy, str(password))
            except VerificationError:
                pass
            return None
        try:
            hasher.verify(row["password_hash"], str(password))
        except (VerificationError, InvalidHashError):
            return None
        user = _user(row)
        return None if user.disabled else user

    # ------------------------------------------------------------------ comments
    def comment(self, lead_id: int, note: str) -> None:
        note = str(note).strip()
        if not note:
            raise ValueError("a comment needs some text")
        with self._sql.tx("store a comment") as con:
            row = con.execute("SELECT a, b FROM comparisons WHERE id = ?", (int(lead_id),))
            row = row.fetchone()
            if row is None:
                raise DatabaseError(f"{self._sql.label}: no lead with id {lead_id}")
            cur = con.execute(
                "INSERT INTO comments (lead, who, time, note) VALUES (?, ?, ?, ?)",
                (int(lead_id), self._audit.user, now(), note),
            )
            self._audit.append(
                "comment",
                covers=[("comments", [int(cur.lastrowid)])],
                lead=int(lead_id),
                a=row["a"],
                b=row["b"],
                note=note,
            )

    def history(self, lead_id: int) -> list[dict]:
        """Status changes and comments of one lead, oldest first: time, who, kind
        (``status`` or ``comment``), status, note."""
        rows = self._sql().execute(
            "SELECT time, examiner AS who, 'status' AS kind, status, note FROM lead_status "
            "WHERE lead = ? UNION ALL "
            "SELECT time, who, 'comment' AS kind, NULL AS status, note FROM comments "
            "WHERE lead = ? ORDER BY time",
            (int(lead_id), int(lead_id)),
        )
        return [dict(r) for r in rows]


def _user(row) -> User:
    return User(row["name"], row["role"], row["created"], bool(row["disabled"]))
