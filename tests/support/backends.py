"""Upstream backends under test: whether a client's session and a backend pid are alive
(pg_terminate_backend / pg_cancel_backend of the grant's own sessions, session 29)."""

from __future__ import annotations

import time

import psycopg


def alive(conn: psycopg.Connection) -> bool:
    """Does ``conn`` still run a statement?"""
    try:
        conn.execute("SELECT 1").fetchone()
    except psycopg.OperationalError:
        return False
    return True


def backend_exists(pg, pid: int) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}").strip() == "1"


def gone(pg, pid: int, at_most: float = 10.0) -> bool:
    """Has backend ``pid`` ended (within ``at_most`` seconds)?"""
    deadline = time.monotonic() + at_most
    while time.monotonic() < deadline:
        if not backend_exists(pg, pid):
            return True
        time.sleep(0.05)
    return False
