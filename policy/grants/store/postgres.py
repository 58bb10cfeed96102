"""PostgreSQL grant store: an asyncpg pool, one database shared by several proxies."""

from __future__ import annotations

import os
from typing import Any

from ..model import Grant
from .base import (
    _COLUMNS,
    _NCOLUMNS,
    _SECRET_KEY,
    ADDED_COLUMNS,
    GrantStore,
    StoreConfigError,
    _where,
    redact_url,
)

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
    db_role     text,
    issued_stream   text,
    extended_stream text,
    revoked_stream  text
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
        self._pool: Any = None  # an asyncpg pool (asyncpg has no types)

    async def open(self) -> PostgresGrantStore:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, **self._pool_args)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)
                await conn.execute(_PG_SCHEMA)
                for column in ADDED_COLUMNS:  # a store of an older schema
                    await conn.execute(f"ALTER TABLE grants ADD COLUMN IF NOT EXISTS {column} text")
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
            issued_stream=r["issued_stream"],
            extended_stream=r["extended_stream"],
            revoked_stream=r["revoked_stream"],
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
            grant.issued_stream,
            grant.extended_stream,
            grant.revoked_stream,
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

    async def _set_revoked(self, grant_id, at, by, stream=None):
        status = await self._conn_pool().execute(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2, updated_at = $1, "
            "revoked_stream = $4 WHERE id = $3 AND revoked_at IS NULL",
            at,
            by,
            grant_id,
            stream,
        )
        return status == "UPDATE 1"

    async def _claim(self, key, value):
        status = await self._conn_pool().execute(
            "INSERT INTO grant_store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            value,
        )
        return status == "INSERT 0 1"

    async def _set_expiry(self, grant_id, old, new, at, stream=None):
        status = await self._conn_pool().execute(
            "UPDATE grants SET expires_at = $1, updated_at = $2, extended_stream = $5 "
            "WHERE id = $3 AND expires_at = $4 AND revoked_at IS NULL",
            new,
            at,
            grant_id,
            old,
            stream,
        )
        return status == "UPDATE 1"
