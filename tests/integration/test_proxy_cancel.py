"""Cancel requests and backend identity through the proxy.

The client's BackendKeyData is the upstream's own, so a CancelRequest sent to the proxy
(from any client library, on a fresh connection) reaches the right backend, and
``pg_backend_pid()`` is the pid the client was told.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import asyncpg
import psycopg
import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.pg import UPSTREAM_USER, arun, pg_activity_row, tool_env, wait_backend_state
from tests.support.rawpg import RawClient, errors_of, types_of

QUICK = 5.0  # a cancelled pg_sleep(30) must end well within this


def send_cancel_request(proxy, pid: int, secret: bytes) -> None:
    import socket

    with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
        s.sendall(m.cancel_request(pid, secret))
        s.settimeout(5)
        assert s.recv(1) == b""  # the proxy closes the connection, saying nothing


@pytest.mark.timeout(30)
def test_psycopg_cancel_safe(proxy, pg):
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        pid = conn.info.backend_pid

        def cancel_when_running():
            if wait_backend_state(pg, pid, "active"):
                conn.cancel_safe(timeout=5)

        t = threading.Thread(target=cancel_when_running, daemon=True)
        t.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute("select pg_sleep(30)")
        assert time.monotonic() - started < QUICK
        assert exc.value.sqlstate == "57014"
        assert "canceling statement due to user request" in str(exc.value)
        t.join(5)
        assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)


# psycopg's classic cancel() calls libpq's blocking PQcancel holding the GIL, so it would
# starve the in-process proxy's thread: this client runs in its own process.
CLASSIC_CANCEL = """
import sys, threading, time, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
threading.Timer(1.0, conn.cancel).start()
started = time.monotonic()
try:
    conn.execute("select pg_sleep(30)")
    print("not cancelled")
except psycopg.Error as exc:
    print(exc.sqlstate, round(time.monotonic() - started, 1))
print(conn.execute("select 'usable'").fetchone()[0])
"""


@pytest.mark.timeout(30)
def test_psycopg_classic_cancel_in_another_process(proxy):
    res = subprocess.run(
        [sys.executable, "-c", CLASSIC_CANCEL, proxy.dsn()],
        capture_output=True,
        text=True,
        timeout=25,
        env=tool_env(),
    )
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.split("\n")[:2]
    sqlstate, took = first.split()
    assert sqlstate == "57014" and float(took) < 1.0 + QUICK
    assert second == "usable"


@pytest.mark.timeout(30)
def test_psycopg_cancel_inside_transaction_aborts_it(proxy, pg):
    with psycopg.connect(proxy.dsn()) as conn:
        pid = conn.info.backend_pid
        conn.execute("select 1")
        threading.Thread(
            target=lambda: wait_backend_state(pg, pid, "active") and conn.cancel_safe(), daemon=True
        ).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        assert conn.info.transaction_status.name == "INERROR"
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(30)
def test_asyncpg_timeout_cancels_the_query(proxy, pg):
    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            pid = conn.get_server_pid()
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("select pg_sleep(30)", timeout=0.5)
            took = time.monotonic() - started
            # asyncpg waited for the cancel to land: the connection is usable and idle.
            value = await conn.fetchval("select 7")
            state = await asyncio.to_thread(pg_activity_row, pg, pid, "state")
            # The statement-level cancel: the server reports 57014 for the cancelled query.
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("set statement_timeout = 100; select pg_sleep(5)")
            return took, value, state
        finally:
            await conn.close()

    took, value, state = arun(go())
    assert took < QUICK and value == 7 and state == "idle"


@pytest.mark.timeout(30)
def test_raw_cancel_request_with_right_and_wrong_key(proxy, pg):
    c = RawClient.via_proxy(proxy)
    try:
        # Wrong secret: the server ignores it and the query finishes normally.
        c.send(m.query("select pg_sleep(1.5), 'finished'"))
        assert wait_backend_state(pg, c.pid, "active")
        wrong = bytes(b ^ 0xFF for b in c.secret)
        send_cancel_request(proxy, c.pid, wrong)
        msgs = c.read_until("Z")
        assert types_of(msgs) == "TDCZ"
        # Right key: cancelled.
        c.send(m.query("select pg_sleep(30)"))
        assert wait_backend_state(pg, c.pid, "active")
        started = time.monotonic()
        send_cancel_request(proxy, c.pid, c.secret)
        msgs = c.read_until("Z")
        assert time.monotonic() - started < QUICK
        assert errors_of(msgs)[0]["C"] == "57014"
        # A cancel while idle does nothing to the next query.
        send_cancel_request(proxy, c.pid, c.secret)
        time.sleep(0.2)
        assert types_of(c.run(m.query("select 1"))) == "TDCZ"
    finally:
        c.close()


@pytest.mark.timeout(30)
def test_psql_sigint_sends_cancel(proxy, pg):
    proc = subprocess.Popen(
        ["psql", "-X", "-d", proxy.dsn(), "-c", "select pg_sleep(30)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_env(),
    )
    planted.wait_pg_sleeping(pg, 1.5)  # the query runs on the server (was: a 1.5 s pause)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=QUICK + 5)
    assert time.monotonic() - started < QUICK
    assert "Cancel request sent" in err
    assert "canceling statement due to user request" in err
    assert proc.returncode == 1


@pytest.mark.timeout(30)
def test_backend_pid_is_the_upstream_pid(proxy, pg):
    with psycopg.connect(proxy.dsn(application_name="pid-check")) as conn:
        pid = conn.info.backend_pid
        assert conn.execute("select pg_backend_pid()").fetchone() == (pid,)
        assert pg_activity_row(pg, pid, "usename") == UPSTREAM_USER
        assert pg_activity_row(pg, pid, "datname") == "app"
        assert pg_activity_row(pg, pid, "application_name") == "pid-check"

    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            return conn.get_server_pid(), await conn.fetchval("select pg_backend_pid()")
        finally:
            await conn.close()

    told, actual = arun(go())
    assert told == actual

    c = RawClient.via_proxy(proxy)
    try:
        msgs = c.run(m.query("select pg_backend_pid()"))
        assert msgs[1][1][6:].decode() == str(c.pid)
        assert len(c.secret) == 4
        assert pg_activity_row(pg, c.pid, "usename") == UPSTREAM_USER
        # Every live session of this proxy knows its client's key.
        keys = {conn.backend_key for conn in list(proxy.server.connections)}
        assert (c.pid, c.secret) in keys
    finally:
        c.close()
