"""SQLite grant store: stdlib ``sqlite3`` in worker threads, one file shared by the
processes of one host (WAL mode, busy timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model import Grant
from .base import (
    _COLUMNS,
    _NCOLUMNS,
    _SECRET_KEY,
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    GrantStore,
    StoreConfigError,
    _from_ts,
    _ts,
    _where,
)


class GrantStoreClosed(RuntimeError):
    """The store was closed; no further reads or writes go through it."""


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
    db_role     TEXT,
    issued_stream   TEXT,
    extended_stream TEXT,
    revoked_stream  TEXT
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
        # close() must not close a connection a worker thread is still using (sqlite3
        # then frees memory the other thread reads: a segfault). Every use of a kept
        # connection is counted under this condition; close() refuses new uses and waits
        # for the count to drain before it closes anything.
        self._uses = threading.Condition()
        self._in_use = 0
        self._closed = False

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
                for column in ADDED_COLUMNS:  # a store of an older schema
                    if column not in columns:
                        conn.execute(f"ALTER TABLE grants ADD COLUMN {column} TEXT")
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

    def _enter(self) -> bool:
        """Count one use of a kept connection; False once the store is closing."""
        with self._uses:
            if self._closed:
                return False
            self._in_use += 1
            return True

    def _leave(self) -> None:
        with self._uses:
            self._in_use -= 1
            if self._in_use == 0:
                self._uses.notify_all()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def call() -> Any:
            # Counted here, in the worker thread, not before the hand-off: a call
            # cancelled before its thread starts never runs, so it must never count.
            if not self._enter():
                raise GrantStoreClosed(f"grant store {self.path} is closed")
            try:
                conn = getattr(self._local, "conn", None)
                if conn is None:
                    conn = sqlite3.connect(
                        self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                    )
                    conn.execute("PRAGMA busy_timeout = 30000")
                    self._local.conn = conn
                    with self._uses:
                        self._conns.append(conn)
                try:
                    return fn(conn, *args)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._leave()

        return await asyncio.to_thread(call)

    async def close(self) -> None:
        """Refuse new work, wait for the work in flight, then close every connection.

        The wait runs in a thread so a long statement (busy_timeout) never stalls the loop.
        """
        with self._uses:
            self._closed = True
            idle = self._in_use == 0
        if not idle:
            await asyncio.to_thread(self._wait_idle)
        with self._uses:
            conns, self._conns = self._conns, []
            self._here = self._here_thread = None
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        await super().close()

    def _wait_idle(self) -> None:
        with self._uses:
            self._uses.wait_for(lambda: self._in_use == 0)

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
            issued_stream=row[17],
            extended_stream=row[18],
            revoked_stream=row[19],
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
                    grant.issued_stream,
                    grant.extended_stream,
                    grant.revoked_stream,
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
        if not self._enter():
            return None  # closing: the caller's fallback raises GrantStoreClosed
        try:
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
                with self._uses:
                    self._here, self._here_thread = conn, threading.get_ident()
                    self._conns.append(conn)
            try:
                return op(conn)
            except sqlite3.OperationalError:
                return None
        finally:
            self._leave()

    async def _set_revoked(self, grant_id, at, by, stream=None):
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE grants SET revoked_at = ?, revoked_by = ?, updated_at = ?, "
                "revoked_stream = ? WHERE id = ? AND revoked_at IS NULL",
                (_ts(at), by, _ts(at), stream, grant_id),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def _set_expiry(self, grant_id, old, new, at, stream=None):
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE grants SET expires_at = ?, updated_at = ?, extended_stream = ? "
                "WHERE id = ? AND expires_at = ? AND revoked_at IS NULL",
                (_ts(new), _ts(at), stream, grant_id, _ts(old)),
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
