"""``GrantStore``: where grants live. SQLite file (default) or PostgreSQL (asyncpg).

Both implementations share the logic in ``GrantStore`` (validation, salts, verifiers,
events) and differ only in a handful of storage primitives. The store is the control
plane: it must never be the database agents connect to (``check_store_not_upstream``).

SQLite: stdlib ``sqlite3`` in a worker thread, one short-lived connection per operation,
WAL mode and a busy timeout, so several processes on one host can share the file.
PostgreSQL: an asyncpg pool, so several proxies on several hosts can share one store.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from policy.grants import (
    DEFAULT_MAX_TTL,
    Grant,
    GrantError,
    GrantNotFound,
    GrantStateError,
    fake_login_salt,
    format_ttl,
    new_grant_id,
    new_salt,
    new_token,
    parse_ttl,
    token_verifier,
    utcnow,
    validate_by,
    validate_issue,
)
from proxy.wire.scram import DEFAULT_ITERATIONS

__all__ = [
    "DEFAULT_STORE_URL",
    "GrantStore",
    "PostgresGrantStore",
    "SQLiteGrantStore",
    "StoreConfigError",
    "check_store_not_upstream",
    "open_store",
    "redact_url",
]

log = logging.getLogger("pgwitness.grants")

DEFAULT_STORE_URL = "sqlite:///./pgwitness-grants.db"
LOGIN_HISTORY = dt.timedelta(days=1)  # for_agent: how long ended grants stay candidates
SCHEMA_VERSION = 2  # 2: grants.db_role
_SECRET_KEY = "login_salt_secret"

EventCallback = Callable[[str, dict], None]
Clock = Callable[[], dt.datetime]

_COLUMNS = (
    "id, agent, task, reason, granted_by, database, scopes, not_before, expires_at, "
    "revoked_at, revoked_by, created_at, updated_at, verifier, enforce, record_rows, db_role"
)
_NCOLUMNS = 17


class RoleHook(Protocol):
    """What the store calls so a grant's database role follows its lifecycle.

    ``proxy.provision`` implements it (it does the DDL); ``None`` is the shared mode.
    ``prepare`` runs before the grant is stored (a crash in between leaves a role that
    start-up reconciliation drops); ``discard`` undoes it if storing fails; ``extended``
    runs before the new expiry is stored; ``revoked`` after the revocation is committed.
    """

    mode: str  # "mapped" | "per-grant"

    async def prepare(self, grant: Grant) -> Grant: ...

    async def discard(self, grant: Grant) -> None: ...

    async def extended(self, grant: Grant, expires_at: dt.datetime) -> None: ...

    async def revoked(self, grant: Grant) -> None: ...


class StoreConfigError(ValueError):
    """The store URL is unusable or unsafe (e.g. it points at the upstream database)."""


class GrantStore(abc.ABC):
    """Async grant store; ``open_store(url)`` returns an opened SQLite or PostgreSQL one.

    Every change (issue, extend, revoke) calls ``on_event(kind, payload)`` with kind
    ``grant.issued`` | ``grant.extended`` | ``grant.revoked``; tokens and verifiers are
    never in the payload. Expiry is noticed by the proxy, not here.
    """

    def __init__(
        self,
        *,
        on_event: EventCallback | None = None,
        max_ttl: dt.timedelta = DEFAULT_MAX_TTL,
        clock: Clock = utcnow,
        iterations: int = DEFAULT_ITERATIONS,
        roles: RoleHook | None = None,
    ):
        self.roles = roles
        self.on_event = on_event
        self.max_ttl = max_ttl
        self.clock = clock
        self.iterations = iterations
        self._login_secret = b""

    # ---- public API -----------------------------------------------------------------

    async def issue(
        self,
        agent: str,
        task: str,
        reason: str,
        granted_by: str,
        database: str,
        scopes: str,
        ttl: object,
        not_before: object = None,
        enforce: bool = True,
        record_rows: str = "full",
        db_role: str | None = None,
    ) -> tuple[Grant, str]:
        """Validate, create and store a grant; returns it with its token (shown once).

        With a role hook the grant's database role is made (per-grant) or checked
        (mapped, ``db_role`` names it) before the grant is stored.
        """
        now = self._now()
        mode = self.roles.mode if self.roles is not None else "shared"
        if db_role is not None and mode != "mapped":
            raise GrantError("db_role", f"a database role is named only with upstream.roles = mapped (this store is {mode})")
        if db_role is None and mode == "mapped":
            raise GrantError("db_role", "is required with upstream.roles = mapped (the database role the grant logs in as)")
        if db_role is not None:
            from policy.roles import validate_db_role

            db_role = validate_db_role(db_role)
        req = validate_issue(
            agent=agent,
            task=task,
            reason=reason,
            granted_by=granted_by,
            database=database,
            scopes=scopes,
            ttl=ttl,
            now=now,
            not_before=not_before,
            enforce=enforce,
            record_rows=record_rows,
            max_ttl=self.max_ttl,
        )
        salt, iterations = await self._ensure_agent(req.agent, new_salt(), self.iterations, now)
        token = new_token()
        verifier = await asyncio.to_thread(token_verifier, token, salt, iterations)
        grant = Grant(
            id=new_grant_id(),
            agent=req.agent,
            task=req.task,
            reason=req.reason,
            granted_by=req.granted_by,
            database=req.database,
            scopes=req.scopes,
            not_before=req.not_before,
            expires_at=req.expires_at,
            revoked_at=None,
            created_at=now,
            verifier=verifier,
            enforce=req.enforce,
            record_rows=req.record_rows,
            revoked_by=None,
            updated_at=now,
            db_role=db_role,
        )
        if self.roles is not None:
            grant = await self.roles.prepare(grant)
        try:
            await self._insert(grant)
        except BaseException:
            if self.roles is not None:
                with contextlib.suppress(Exception):  # reconciliation drops it otherwise
                    await asyncio.shield(self.roles.discard(grant))
            raise
        self._emit("grant.issued", grant, by=grant.granted_by, at=now)
        return grant, token

    async def get(self, grant_id: str) -> Grant | None:
        if not isinstance(grant_id, str) or not grant_id:
            return None
        rows = await self._fetch(grant_id=grant_id)
        return rows[0] if rows else None

    async def for_agent(
        self, agent: str, *, ended_within: dt.timedelta | None = LOGIN_HISTORY
    ) -> list[Grant]:
        """Login candidates: ``agent``'s grants that are live, not yet valid, or ended
        (expired or revoked) less than ``ended_within`` ago; ``None``: every grant.

        Recently ended grants stay candidates so a stale token gets "expired"/"revoked"
        rather than "authentication failed"; older ones are left out so an agent's login
        does not get slower with every task it has ever had. The proxy filters by
        ``status(now)``.
        """
        if ended_within is None:
            return await self._fetch(agent=agent)
        return await self._fetch(agent=agent, ended_after=self._now() - ended_within)

    async def list(
        self, agent: str | None = None, task: str | None = None, active: bool | None = None
    ) -> list[Grant]:
        """Grants oldest first; ``active`` True/False filters on ``status(now) == "active"``."""
        grants = await self._fetch(agent=agent, task=task)
        if active is None:
            return grants
        now = self._now()
        return [g for g in grants if g.is_active(now) == active]

    async def revoke(self, grant_id: str, by: str) -> Grant:
        """Revoke now; revoking an already revoked grant keeps the first time and ``by``."""
        by = validate_by(by)
        now = self._now()
        changed = await self._set_revoked(grant_id, now, by)
        grant = await self.get(grant_id)
        if grant is None:
            raise GrantNotFound(grant_id)
        if changed:
            self._emit("grant.revoked", grant, by=by, at=now)
        if self.roles is not None and grant.db_role:
            await self.roles.revoked(grant)
        return grant

    async def extend(self, grant_id: str, ttl: object, by: str) -> Grant:
        """Push ``expires_at`` out by ``ttl`` (from now if already expired); not if revoked."""
        delta = parse_ttl(ttl)
        by = validate_by(by)
        for _ in range(5):  # optimistic concurrency: retry if another writer moved it
            grant = await self.get(grant_id)
            if grant is None:
                raise GrantNotFound(grant_id)
            if grant.revoked_at is not None:
                raise GrantStateError(f"grant {grant_id} is revoked; issue a new grant instead")
            now = self._now()
            new_expiry = max(grant.expires_at, now) + delta
            if new_expiry - max(now, grant.not_before) > self.max_ttl:
                raise GrantError(
                    "ttl",
                    f"would leave the grant valid for more than the maximum "
                    f"{format_ttl(self.max_ttl)}",
                )
            if self.roles is not None and grant.db_role:
                # Before the store: the role may outlive the grant, never the other way.
                await self.roles.extended(grant, new_expiry)
            if await self._set_expiry(grant_id, grant.expires_at, new_expiry, now):
                updated = replace(grant, expires_at=new_expiry, updated_at=now)
                if self.roles is not None and grant.db_role:
                    # Again after: a sweep may have dropped the role of the expired grant
                    # between the first call and the store; it is made again then.
                    await self.roles.extended(updated, new_expiry)
                self._emit(
                    "grant.extended",
                    updated,
                    by=by,
                    at=now,
                    previous_expires_at=grant.expires_at,
                )
                return updated
        raise GrantStateError(f"grant {grant_id} is being changed concurrently; try again")

    async def get_many(self, grant_ids: Iterable[str]) -> dict[str, Grant]:
        """The grants with these ids that exist, by id (for role reconciliation)."""
        ids = sorted(set(grant_ids))
        out: dict[str, Grant] = {}
        for i in range(0, len(ids), 500):
            for grant in await self._fetch(grant_ids=ids[i : i + 500]):
                out[grant.id] = grant
        return out

    async def changed_since(self, ts: dt.datetime) -> list[Grant]:
        """Grants issued, extended or revoked after ``ts`` (by ``updated_at``), oldest first.

        Writers commit in their own time, so pollers should pass their previous cursor
        minus a small margin; applying a change twice is harmless.
        """
        if not isinstance(ts, dt.datetime) or ts.tzinfo is None:
            raise ValueError("changed_since needs a timezone-aware datetime")
        return await self._fetch(since=ts)

    async def unended(self) -> list[Grant]:
        """Grants neither expired nor revoked (usable now or later): the metrics' census."""
        return await self._fetch(ended_after=self._now())

    async def expire_due(self, *, within: dt.timedelta = LOGIN_HISTORY) -> list[Grant]:
        """Emit ``grant.expired`` for each grant whose expiry has passed (in the last
        ``within``) and that no one has reported yet; returns those this call reported.

        Proxies call this from their housekeeping, so the event is emitted when the expiry
        happens, whether or not a session was live. Several proxies sharing the store each
        try; a claim row in the store (``grant_store_meta``, key ``expired:<id>:<expiry>``)
        lets exactly one of them emit it. A grant extended after it expired expires again,
        under a new key.
        """
        now = self._now()
        seen = self.__dict__.setdefault("_expiry_reported", set())
        done = []
        for grant in await self._fetch(ended_after=now - within):
            if grant.expires_at > now or grant.expires_at <= now - within:
                continue
            if grant.revoked_at is not None and grant.revoked_at <= grant.expires_at:
                continue  # revoked before it could expire
            key = f"expired:{grant.id}:{_ts(grant.expires_at)}"
            if key in seen:
                continue
            if await self._claim(key, _ts(now).encode()):
                self._emit("grant.expired", grant, by="pgwitness (expiry)", at=grant.expires_at,
                           noticed_at=now)
                done.append(grant)
            seen.add(key)
        return done

    async def login_salt(self, agent: str) -> tuple[bytes, int]:
        """(salt, iterations) for SCRAM's server-first-message.

        The agent's real shared salt if it has grants; otherwise a stable fake derived
        from a per-store secret, so probing does not reveal which agents exist.
        """
        known = await self._agent_salt(agent)
        if known is not None:
            return known
        return fake_login_salt(self._login_secret, agent), self.iterations

    @property
    def store_id(self) -> str:
        """A stable, public name for this store (every proxy sharing it gets the same)."""
        return hashlib.sha256(b"pgwitness-store-id\0" + self._login_secret).hexdigest()[:16]

    async def close(self) -> None:
        if self.roles is not None and hasattr(self.roles, "close"):
            await self.roles.close()

    async def __aenter__(self) -> GrantStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- shared helpers -------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self.clock().astimezone(dt.UTC)

    def _emit(self, kind: str, grant: Grant, *, by: str, at: dt.datetime, **extra: Any) -> None:
        if self.on_event is None:
            return
        payload = {
            "grant_id": grant.id,
            "agent": grant.agent,
            "task": grant.task,
            "reason": grant.reason,
            "database": grant.database,
            "scopes": grant.scopes,
            "enforce": grant.enforce,
            "record_rows": grant.record_rows,
            "by": by,
            "at": at.isoformat(),
            "not_before": grant.not_before.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
            "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        }
        for key, value in extra.items():
            payload[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        try:
            self.on_event(kind, payload)
        except Exception:  # the change is committed; a failing listener must not undo it
            log.exception("grant event listener failed for %s %s", kind, grant.id)

    # ---- storage primitives ---------------------------------------------------------

    @abc.abstractmethod
    async def _ensure_agent(
        self, agent: str, salt: bytes, iterations: int, now: dt.datetime
    ) -> tuple[bytes, int]:
        """Record (salt, iterations) for a new agent; return what the agent has."""

    @abc.abstractmethod
    async def _agent_salt(self, agent: str) -> tuple[bytes, int] | None: ...

    @abc.abstractmethod
    async def _insert(self, grant: Grant) -> None: ...

    @abc.abstractmethod
    async def _fetch(
        self,
        *,
        grant_id: str | None = None,
        agent: str | None = None,
        task: str | None = None,
        since: dt.datetime | None = None,
        ended_after: dt.datetime | None = None,
        grant_ids: list[str] | None = None,
    ) -> list[Grant]: ...

    @abc.abstractmethod
    async def _set_revoked(self, grant_id: str, at: dt.datetime, by: str) -> bool:
        """Set revoked_at/by if not yet revoked; True if this call revoked it."""

    @abc.abstractmethod
    async def _claim(self, key: str, value: bytes) -> bool:
        """Insert ``key`` into grant_store_meta unless present; True if this call did."""

    @abc.abstractmethod
    async def _set_expiry(
        self, grant_id: str, old: dt.datetime, new: dt.datetime, at: dt.datetime
    ) -> bool:
        """Compare-and-set expires_at (unrevoked grants only); True on success."""


def _where(
    grant_id: str | None,
    agent: str | None,
    task: str | None,
    since: dt.datetime | None,
    ended_after: dt.datetime | None,
    placeholder: Callable[[int], str],
    since_value: Callable[[dt.datetime], Any],
    grant_ids: list[str] | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if grant_ids is not None:
        marks = []
        for value in grant_ids:
            args.append(value)
            marks.append(placeholder(len(args)))
        clauses.append(f"id IN ({', '.join(marks) or 'NULL'})")
    for column, value in (("id", grant_id), ("agent", agent), ("task", task)):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = {placeholder(len(args))}")
    if since is not None:
        args.append(since_value(since))
        clauses.append(f"updated_at > {placeholder(len(args))}")
    if ended_after is not None:
        args.append(since_value(ended_after))
        expires = placeholder(len(args))
        args.append(since_value(ended_after))
        revoked = placeholder(len(args))
        clauses.append(f"expires_at > {expires} AND (revoked_at IS NULL OR revoked_at > {revoked})")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return where, args


# ---- SQLite -------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL,
    task        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    granted_by  TEXT NOT NULL,
    database    TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT,
    revoked_by  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    enforce     INTEGER NOT NULL,
    record_rows TEXT NOT NULL,
    db_role     TEXT
);
CREATE INDEX IF NOT EXISTS grants_agent ON grants (agent);
CREATE INDEX IF NOT EXISTS grants_task ON grants (task);
CREATE INDEX IF NOT EXISTS grants_updated_at ON grants (updated_at);
CREATE TABLE IF NOT EXISTS grant_agents (
    agent       TEXT PRIMARY KEY,
    salt        BLOB NOT NULL,
    iterations  INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grant_store_meta (
    key         TEXT PRIMARY KEY,
    value       BLOB NOT NULL
);
"""


def _ts(value: dt.datetime) -> str:
    # Fixed-width UTC text sorts like the time it names, so SQL can compare it.
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _from_ts(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


class SQLiteGrantStore(GrantStore):
    """A grant store in one SQLite file (mode 0600: it holds verifiers)."""

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        # One connection per worker thread, kept: opening one per operation cost about a
        # millisecond of every login.
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._here: sqlite3.Connection | None = None  # see _read_here
        self._here_thread: int | None = None

    async def open(self) -> SQLiteGrantStore:
        await asyncio.to_thread(self._open_sync)
        return self

    def _open_sync(self) -> None:
        if str(self.path) == ":memory:":
            raise StoreConfigError("an in-memory SQLite grant store cannot be shared; use a file")
        try:
            if self.path.parent and not self.path.parent.exists():
                raise StoreConfigError(f"grant store directory {self.path.parent} does not exist")
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            row = self._initialise_with_retry()
        except sqlite3.Error as exc:
            raise StoreConfigError(f"cannot open grant store {self.path}: {exc}") from exc
        self._login_secret = bytes(row[0])

    def _initialise_with_retry(self, deadline_s: float = 30.0):
        """Create the schema and the login secret once, however many processes race to.

        SQLite answers "database is locked" at once, without waiting out busy_timeout, when
        several connections switch a new file to WAL or start their first write at the same
        moment (its deadlock avoidance). The whole initialisation is idempotent, so it is
        retried with a short random back-off until the deadline.
        """
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                return self._initialise()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))

    def _initialise(self):
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SQLITE_SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                columns = {r[1] for r in conn.execute("PRAGMA table_info(grants)")}
                if "db_role" not in columns:  # a version-1 store
                    conn.execute("ALTER TABLE grants ADD COLUMN db_role TEXT")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute(
                    "INSERT OR IGNORE INTO grant_store_meta (key, value) VALUES (?, ?)",
                    (_SECRET_KEY, os.urandom(32)),
                )
                row = conn.execute(
                    "SELECT value FROM grant_store_meta WHERE key = ?", (_SECRET_KEY,)
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return row

    @contextlib.contextmanager
    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def call() -> Any:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA busy_timeout = 30000")
                self._local.conn = conn
                self._conns.append(conn)
            try:
                return fn(conn, *args)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return await asyncio.to_thread(call)

    async def close(self) -> None:
        conns, self._conns = self._conns, []
        self._local = threading.local()
        self._here = self._here_thread = None
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @staticmethod
    def _row(row: tuple) -> Grant:
        return Grant(
            id=row[0],
            agent=row[1],
            task=row[2],
            reason=row[3],
            granted_by=row[4],
            database=row[5],
            scopes=row[6],
            not_before=_from_ts(row[7]),
            expires_at=_from_ts(row[8]),
            revoked_at=_from_ts(row[9]),
            revoked_by=row[10],
            created_at=_from_ts(row[11]),
            updated_at=_from_ts(row[12]),
            verifier=row[13],
            enforce=bool(row[14]),
            record_rows=row[15],
            db_role=row[16],
        )

    async def _ensure_agent(self, agent, salt, iterations, now):
        def op(conn: sqlite3.Connection) -> tuple[bytes, int]:
            conn.execute(
                "INSERT OR IGNORE INTO grant_agents (agent, salt, iterations, created_at) "
                "VALUES (?, ?, ?, ?)",
                (agent, salt, iterations, _ts(now)),
            )
            row = conn.execute(
                "SELECT salt, iterations FROM grant_agents WHERE agent = ?", (agent,)
            ).fetchone()
            return bytes(row[0]), int(row[1])

        return await self._run(op)

    async def _agent_salt(self, agent):
        def op(conn: sqlite3.Connection) -> tuple[bytes, int] | None:
            row = conn.execute(
                "SELECT salt, iterations FROM grant_agents WHERE agent = ?", (agent,)
            ).fetchone()
            return None if row is None else (bytes(row[0]), int(row[1]))

        return await self._run(op)

    async def _insert(self, grant):
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO grants ({_COLUMNS}) VALUES ({', '.join('?' * _NCOLUMNS)})",
                (
                    grant.id,
                    grant.agent,
                    grant.task,
                    grant.reason,
                    grant.granted_by,
                    grant.database,
                    grant.scopes,
                    _ts(grant.not_before),
                    _ts(grant.expires_at),
                    None,
                    None,
                    _ts(grant.created_at),
                    _ts(grant.updated_at or grant.created_at),
                    grant.verifier,
                    int(grant.enforce),
                    grant.record_rows,
                    grant.db_role,
                ),
            )

        await self._run(op)

    async def _fetch(
        self, *, grant_id=None, agent=None, task=None, since=None, ended_after=None, grant_ids=None
    ):
        where, args = _where(
            grant_id, agent, task, since, ended_after, lambda _: "?", _ts, grant_ids
        )
        order = "updated_at, id" if since is not None else "created_at, id"

        def op(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM grants{where} ORDER BY {order}", args
            ).fetchall()
            return [self._row(r) for r in rows]

        if grant_id is not None or (agent is not None and task is None and since is None):
            # A login's lookups (one grant, one agent's few): read here, not in a thread.
            found = self._read_here(op)
            if found is not None:
                return found
        return await self._run(op)

    def _read_here(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a small read on the calling thread (the event loop), or None if the file is
        busy. A WAL read of a few indexed rows takes tens of microseconds; handing it to a
        worker thread cost a login up to a millisecond on a loaded machine. busy_timeout 0:
        a locked file never stalls the loop, the caller falls back to the thread."""
        if self._here_thread not in (None, threading.get_ident()):
            return None  # the connection belongs to another thread's loop
        conn = self._here
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA query_only = 1")
            except sqlite3.Error:
                return None
            self._here, self._here_thread = conn, threading.get_ident()
            self._conns.append(conn)
        try:
            return op(conn)
        except sqlite3.OperationalError:
            return None

    async def _set_revoked(self, grant_id, at, by):
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE grants SET revoked_at = ?, revoked_by = ?, updated_at = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (_ts(at), by, _ts(at), grant_id),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def _set_expiry(self, grant_id, old, new, at):
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE grants SET expires_at = ?, updated_at = ? "
                "WHERE id = ? AND expires_at = ? AND revoked_at IS NULL",
                (_ts(new), _ts(at), grant_id, _ts(old)),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def _claim(self, key, value):
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO grant_store_meta (key, value) VALUES (?, ?)", (key, value)
            )
            return cur.rowcount == 1

        return await self._run(op)


# ---- PostgreSQL ---------------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    id          text PRIMARY KEY,
    agent       text NOT NULL,
    task        text NOT NULL,
    reason      text NOT NULL,
    granted_by  text NOT NULL,
    database    text NOT NULL,
    scopes      text NOT NULL,
    not_before  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    verifier    text NOT NULL,
    enforce     boolean NOT NULL,
    record_rows text NOT NULL,
    db_role     text
);
CREATE INDEX IF NOT EXISTS grants_agent ON grants (agent);
CREATE INDEX IF NOT EXISTS grants_task ON grants (task);
CREATE INDEX IF NOT EXISTS grants_updated_at ON grants (updated_at);
CREATE TABLE IF NOT EXISTS grant_agents (
    agent       text PRIMARY KEY,
    salt        bytea NOT NULL,
    iterations  integer NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS grant_store_meta (
    key         text PRIMARY KEY,
    value       bytea NOT NULL
);
"""
# Serialises concurrent first opens (CREATE ... IF NOT EXISTS can still race on catalogs).
_PG_SCHEMA_LOCK = 0x7067_7769_746E  # "pgwitn"


class PostgresGrantStore(GrantStore):
    """A grant store in a PostgreSQL database shared by several proxies."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.url = url
        self._pool_args = {"min_size": min_size, "max_size": max_size}
        self._pool = None

    async def open(self) -> PostgresGrantStore:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, **self._pool_args)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)
                await conn.execute(_PG_SCHEMA)
                await conn.execute("ALTER TABLE grants ADD COLUMN IF NOT EXISTS db_role text")
                await conn.execute(
                    "INSERT INTO grant_store_meta (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO NOTHING",
                    _SECRET_KEY,
                    os.urandom(32),
                )
                secret = await conn.fetchval(
                    "SELECT value FROM grant_store_meta WHERE key = $1", _SECRET_KEY
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise StoreConfigError(
                f"cannot open grant store {redact_url(self.url)}: {exc}"
            ) from exc
        self._login_secret = bytes(secret)
        return self

    async def close(self) -> None:
        await super().close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @staticmethod
    def _row(r: Any) -> Grant:
        return Grant(
            id=r["id"],
            agent=r["agent"],
            task=r["task"],
            reason=r["reason"],
            granted_by=r["granted_by"],
            database=r["database"],
            scopes=r["scopes"],
            not_before=r["not_before"],
            expires_at=r["expires_at"],
            revoked_at=r["revoked_at"],
            revoked_by=r["revoked_by"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            verifier=r["verifier"],
            enforce=r["enforce"],
            record_rows=r["record_rows"],
            db_role=r["db_role"],
        )

    def _conn_pool(self):
        if self._pool is None:
            raise StoreConfigError("grant store is closed")
        return self._pool

    async def _ensure_agent(self, agent, salt, iterations, now):
        pool = self._conn_pool()
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO grant_agents (agent, salt, iterations, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (agent) DO NOTHING",
                agent,
                salt,
                iterations,
                now,
            )
            row = await conn.fetchrow(
                "SELECT salt, iterations FROM grant_agents WHERE agent = $1", agent
            )
        return bytes(row["salt"]), int(row["iterations"])

    async def _agent_salt(self, agent):
        row = await self._conn_pool().fetchrow(
            "SELECT salt, iterations FROM grant_agents WHERE agent = $1", agent
        )
        return None if row is None else (bytes(row["salt"]), int(row["iterations"]))

    async def _insert(self, grant):
        await self._conn_pool().execute(
            f"INSERT INTO grants ({_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, _NCOLUMNS + 1))})",
            grant.id,
            grant.agent,
            grant.task,
            grant.reason,
            grant.granted_by,
            grant.database,
            grant.scopes,
            grant.not_before,
            grant.expires_at,
            None,
            None,
            grant.created_at,
            grant.updated_at or grant.created_at,
            grant.verifier,
            grant.enforce,
            grant.record_rows,
            grant.db_role,
        )

    async def _fetch(
        self, *, grant_id=None, agent=None, task=None, since=None, ended_after=None, grant_ids=None
    ):
        where, args = _where(
            grant_id, agent, task, since, ended_after, lambda i: f"${i}", lambda t: t, grant_ids
        )
        order = "updated_at, id" if since is not None else "created_at, id"
        rows = await self._conn_pool().fetch(
            f"SELECT {_COLUMNS} FROM grants{where} ORDER BY {order}", *args
        )
        return [self._row(r) for r in rows]

    async def _set_revoked(self, grant_id, at, by):
        status = await self._conn_pool().execute(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2, updated_at = $1 "
            "WHERE id = $3 AND revoked_at IS NULL",
            at,
            by,
            grant_id,
        )
        return status == "UPDATE 1"

    async def _claim(self, key, value):
        status = await self._conn_pool().execute(
            "INSERT INTO grant_store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            value,
        )
        return status == "INSERT 0 1"

    async def _set_expiry(self, grant_id, old, new, at):
        status = await self._conn_pool().execute(
            "UPDATE grants SET expires_at = $1, updated_at = $2 "
            "WHERE id = $3 AND expires_at = $4 AND revoked_at IS NULL",
            new,
            at,
            grant_id,
            old,
        )
        return status == "UPDATE 1"


# ---- opening and safety ---------------------------------------------------------------


def _is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path → file path."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite:"):
        raise StoreConfigError(
            f"grant store URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    else:
        path = url
    if not path:
        raise StoreConfigError("grant store URL names no SQLite file")
    return unquote(path)


async def open_store(url: str | os.PathLike[str], **kwargs: Any) -> GrantStore:
    """Open (creating the schema if needed) the store at ``url``.

    ``sqlite:///path`` or a plain path → SQLite; ``postgresql://``/``postgres://`` →
    PostgreSQL. Keyword arguments (``on_event``, ``max_ttl``, ``clock``) go to the store.
    """
    text = os.fspath(url)
    if not text or not text.strip():
        raise StoreConfigError("grant store URL is empty")
    if _is_postgres_url(text):
        store: GrantStore = await PostgresGrantStore(text, **kwargs).open()
    elif "://" in text and not text.startswith("sqlite:"):
        scheme = text.split("://", 1)[0]
        raise StoreConfigError(
            f"grant store URL scheme {scheme!r} is not supported; use sqlite:/// or postgresql://"
        )
    else:
        store = await SQLiteGrantStore(sqlite_path(text), **kwargs).open()
    if store.roles is not None and hasattr(store.roles, "bind"):
        store.roles.bind(store.store_id)  # per-grant roles are marked with their store
    return store


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()


def _pg_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [None])[0] or parts.hostname or ""
    try:
        port = int(query.get("port", [None])[0] or parts.port or 5432)
    except ValueError as exc:
        raise StoreConfigError(f"grant store URL {redact_url(url)!r} has a bad port") from exc
    return host, port


def _addresses(host: str) -> set[str]:
    """Comparable forms of ``host``: resolved addresses, with every loopback as one."""
    if not host or host.startswith("/") or host.lower() == "localhost":
        # No host means the libpq default (local socket or localhost): the local server.
        return {"loopback"}
    names: set[str] = {host.lower()}
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        infos = []
    for info in infos:
        names.add(str(info[4][0]))
    out = set()
    for name in names:
        try:
            ip = ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            out.add(name)
            continue
        if ip.is_loopback:
            out.add("loopback")
        elif isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            out.add("loopback" if ip.ipv4_mapped.is_loopback else str(ip.ipv4_mapped))
        else:
            out.add(str(ip))
    return out


def check_store_not_upstream(
    store_url: str, upstream_host: str, upstream_port: int, databases: Iterable[str] = ()
) -> None:
    """Refuse a PostgreSQL grant store on the upstream server agents reach through the proxy.

    A grant store there would let a grant with wide enough scopes read verifiers or
    issue itself more access. SQLite stores always pass. Raises StoreConfigError.
    """
    if not _is_postgres_url(store_url):
        return
    store_host, store_port = _pg_host_port(store_url)
    if int(store_port) != int(upstream_port):
        return
    if _addresses(store_host) & _addresses(upstream_host):
        store_db = unquote(urlsplit(store_url).path.lstrip("/")) or "(default)"
        exposed = sorted(set(databases))
        also = f"; agents reach databases {', '.join(exposed)} there" if exposed else ""
        raise StoreConfigError(
            f"grant store {redact_url(store_url)} (database {store_db}) is on the upstream "
            f"server {upstream_host}:{upstream_port}{also}. The grant store is the control "
            "plane: put it on a PostgreSQL server agents cannot reach through the proxy"
        )
