"""Looking at the ``pg`` cluster from the side: the upstream login's DSN, a backend's
``pg_stat_activity`` row, and the environment for PostgreSQL's own tools."""

from __future__ import annotations

import asyncio
import os

from tests.support.rawpg import UPSTREAM_USER
from tests.support.wait import wait_until

__all__ = [
    "UPSTREAM_USER",
    "arun",
    "direct_dsn",
    "pg_activity_row",
    "stat_activity",
    "tool_env",
    "wait_backend_gone",
    "wait_backend_state",
]


def direct_dsn(pg, db: str = "app") -> str:
    return pg.dsn(UPSTREAM_USER, db=db)


def stat_activity(pg, pid: int) -> str:
    return pg.psql(
        f"select state || '|' || usename from pg_stat_activity where pid = {pid}"
    ).strip()


def pg_activity_row(pg, pid: int, column: str) -> str:
    return pg.psql(f"select {column} from pg_stat_activity where pid = {pid}").strip()


def wait_backend_gone(pg, pid: int, timeout: float) -> bool:
    return bool(wait_until(lambda: stat_activity(pg, pid) == "", timeout, 0.1))


def wait_backend_state(pg, pid: int, state: str, timeout: float = 10.0) -> bool:
    return bool(wait_until(lambda: stat_activity(pg, pid).startswith(state + "|"), timeout, 0.05))


def arun(coro):
    return asyncio.run(coro)


def tool_env() -> dict[str, str]:
    """The environment for psql/pgbench: no inherited PG* settings, no GSS, a connect timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGGSSENCMODE"] = "disable"
    env["PGCONNECT_TIMEOUT"] = "10"
    return env
