"""Transparency end to end: real clients, through the real proxy, to the real cluster.

Wherever the answer is "whatever Postgres does", the same operations also run directly
against the cluster as the proxy's upstream role (``pgwitness``) and the two outcomes
must be equal; explicit expectations make sure both are also what Postgres documents.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
import time
import uuid

import asyncpg
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import messages as m
from common.wire.errors import frame
from common.wire.framing import FrameReader
from tests.support.fakes import PolicySeam
from tests.support.pg import (
    UPSTREAM_USER,
    arun,
    direct_dsn,
    stat_activity,
    tool_env,
    wait_backend_gone,
    wait_backend_state,
)
from tests.support.rawpg import (
    I16,
    I32,
    RawClient,
    RawError,
    bind,
    errors_of,
    parse,
    same_session_shape,
    types_of,
)
from tests.support.wait import wait_until

# --- helpers ----------------------------------------------------------------------------


def describe(kind: str, name: str = "") -> bytes:
    return frame(b"D", kind.encode() + name.encode() + b"\x00")


def close(kind: str, name: str = "") -> bytes:
    return frame(b"C", kind.encode() + name.encode() + b"\x00")


FLUSH = frame(b"H")


def sqlstate_of(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


# --- raw protocol: the same bytes, directly and through the proxy --------------------------

RAW_SCRIPTS = {
    "multi-statement": [
        m.query("select 1 as a; select 'x'::text as b, null::int as c; values (1), (2)"),
    ],
    "error mid multi-statement rolls back the whole Query": [
        m.query("create temp table rt(x int)"),
        m.query("insert into rt values (1); select 1/0; insert into rt values (2)"),
        m.query("select count(*) from rt"),
    ],
    "empty queries": [m.query(""), m.query(";"), m.query("  -- only a comment\n"), m.query("select 1;;")],
    "named statement and portal, describe, close": [
        parse("s1", "select $1::int * 2 as doubled, $2::text as t", (23, 0)),
        describe("S", "s1"),
        bind("p1", "s1", (b"21", b"hi")),
        describe("P", "p1"),
        frame(b"E", b"p1\x00" + I32.pack(0)),
        close("P", "p1"),
        close("S", "s1"),
        close("S", "never-existed"),
        m.SYNC,
        bind("", "s1", (b"1", b"x")),
        m.SYNC,
    ],
    "unnamed statement, binary params and results": [
        parse("", "select $1::int8 + 1, $2::bytea", (20, 17)),
        bind("", "", (struct.pack("!q", 41), b"\x00\xff"), (1, 1), (1,)),
        describe("P"),
        m.execute(),
        m.SYNC,
        parse("", "select $1::int", ()),
        bind("", "", (None,)),
        m.execute(),
        m.SYNC,
    ],
    "portal suspended with max rows": [
        parse("", "select g from generate_series(1, 10) g"),
        bind(),
        m.execute("", 3),
        m.execute("", 3),
        m.execute("", 0),
        m.execute("", 2),  # portal exhausted: CommandComplete again
        m.SYNC,
    ],
    "named portal survives Sync inside a transaction": [
        m.query("begin"),
        parse("cur_s", "select g, g * g from generate_series(1, 7) g"),
        bind("cur", "cur_s"),
        m.execute("cur", 4),
        m.SYNC,
        m.execute("cur", 4),
        m.SYNC,
        close("P", "cur"),
        m.execute("cur", 1),  # closed: 34000
        m.SYNC,
        m.query("rollback"),
    ],
    "pipeline error rolls back the implicit transaction, skips to Sync": [
        m.query("create temp table pt(x int)"),
        parse("", "insert into pt values (1)"), bind(), m.execute(),
        parse("", "select 1/0"), bind(), m.execute(),
        parse("", "insert into pt values (2)"), bind(), m.execute(),
        m.SYNC,
        parse("", "insert into pt values (3)"), bind(), m.execute(),
        m.SYNC,
        m.query("select array_agg(x order by x) from pt"),
    ],
    "describe errors and no-data statements": [
        describe("P", "nope"),
        m.SYNC,
        describe("S", "nope"),
        m.SYNC,
        parse("", "set application_name = 'raw'"),
        describe("S"),
        bind(),
        describe("P"),
        m.execute(),
        m.SYNC,
        parse("bad", "selec 1"),
        m.SYNC,
        m.SYNC,
    ],
    "explicit transaction states in ReadyForQuery": [
        m.query("begin"),
        m.query("select 1/0"),
        m.query("select 1"),
        m.query("rollback"),
        m.query("begin; select 1"),
        m.query("commit"),
    ],
    "notices and parameter status between rows": [
        m.query("create function pg_temp.noisy(i int) returns int language plpgsql as "
                "$$ begin raise notice 'row %', i; return i; end $$"),
        m.query("select pg_temp.noisy(g) from generate_series(1, 20) g"),
        parse("", "select pg_temp.noisy(g) from generate_series(1, 5) g"), bind(), m.execute("", 2),
        m.execute("", 0), m.SYNC,
        m.query("set application_name = 'raw-x'; set timezone = 'Europe/Paris'; reset application_name"),
        m.query("do $$ begin for i in 1..30 loop raise notice 'n%', i; end loop; end $$"),
    ],
    "function call": [
        # int4abs(-5) via the FunctionCall message (oid 1251), text result.
        frame(b"F", I32.pack(1251) + I16.pack(0) + I16.pack(1) + I32.pack(2) + b"-5" + I16.pack(0)),
    ],
}  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(RAW_SCRIPTS))
def test_raw_protocol_same_answers_as_direct(proxy, pg, name):
    script = RAW_SCRIPTS[name]
    answers = []
    for client in (RawClient.via_proxy(proxy), RawClient.direct(pg)):
        try:
            answers.append(same_session_shape(client.run(*script)))
        finally:
            client.close()
    via_proxy, direct = answers
    assert via_proxy == direct
    assert via_proxy[-1][0] == "Z"


def test_raw_protocol_expectations(proxy):
    """The answers compared above are also the documented ones (not merely equal)."""
    c = RawClient.via_proxy(proxy)
    try:
        assert types_of(c.run(m.query(""))) == "IZ"
        assert types_of(c.run(m.query("select 1; select 2"))) == "TDCTDCZ"
        msgs = c.run(
            parse("", "select g from generate_series(1, 5) g"),
            bind(),
            m.execute("", 2),
            m.execute("", 2),
            m.execute("", 2),
            m.SYNC,
        )
        assert types_of(msgs) == "12DDsDDsDCZ"
        msgs = c.run(
            parse("", "select 1/g from generate_series(0, 0) g"),
            bind(),
            m.execute(),
            parse("", "select 1"),
            bind(),
            m.execute(),
            m.SYNC,
        )
        assert types_of(msgs) == "12EZ" and errors_of(msgs)[0]["C"] == "22012"
        assert c.run(m.query("begin"))[-1] == ("Z", b"T")
        msgs = c.run(m.query("select 1/0"))
        assert msgs[-1] == ("Z", b"E")
        assert errors_of(c.run(m.query("select 1")))[0]["C"] == "25P02"
        assert c.run(m.query("rollback"))[-1] == ("Z", b"I")
    finally:
        c.close()


@pytest.mark.timeout(30)
def test_flush_delivers_results_without_sync(proxy):
    """Flush makes the server send what it has; the proxy must not sit on it until Sync."""
    c = RawClient.via_proxy(proxy)
    try:
        c.send(parse("", "select 7"), bind(), m.execute(), FLUSH)
        c.sock.settimeout(5)
        assert types_of(c.read_until("C")) == "12DC"
        c.send(m.SYNC)
        assert c.read() == ("Z", b"I")
    finally:
        c.close()


# --- simple query with real clients ----------------------------------------------------------


def run_psql(dsn: str, *args: str, stdin: str | None = None, timeout: float = 30.0, cwd=None):
    return subprocess.run(
        ["psql", "-X", "-d", dsn, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=tool_env(),
        cwd=cwd,
    )


@pytest.mark.timeout(60)
def test_psql_multi_statement_c(proxy, pg):
    args = ("-A", "-t", "-c", "select 1; select 2")
    via = run_psql(proxy.dsn(), *args)
    direct = run_psql(direct_dsn(pg), *args)
    assert (via.returncode, via.stdout, via.stderr) == (0, "1\n2\n", "")
    assert (direct.returncode, direct.stdout, direct.stderr) == (0, "1\n2\n", "")


@pytest.mark.timeout(60)
def test_psql_error_mid_multi_statement(proxy, pg):
    table = f"psql_mid_{uuid.uuid4().hex[:8]}"
    pg.psql(
        f"create table public.{table} (x int); alter table public.{table} owner to pgwitness",
        db="app",
    )
    sql = f"insert into {table} values (1); select 1/0; insert into {table} values (2)"
    via = run_psql(proxy.dsn(), "-c", sql)
    assert via.returncode == 1 and "division by zero" in via.stderr
    assert pg.psql(f"select count(*) from public.{table}", db="app").strip() == "0"
    direct = run_psql(direct_dsn(pg), "-c", sql)
    assert (via.returncode, via.stdout, via.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )


PSQL_SCRIPT = r"""
\set ON_ERROR_STOP 0
\set n 3
select :n + 1 as four;
select 'abc' as v \gset
\echo v is :v
\d orders
\d+ secret.payroll
\dt public.*
\df int4abs
\l app
create temp table pt(a int, b text);
insert into pt select g, 'row' || g from generate_series(1, :n) g;
\copy pt to stdout with (format csv, header)
\copy pt from stdin with csv
10,ten
11,"eleven, with comma"
\.
\copy (select b from pt where a > 9 order by a) to stdout
select count(*) as total from pt;
select 1/0;
\echo sqlstate :LAST_ERROR_SQLSTATE
begin;
insert into pt values (99, 'gone');
select 1/0;
select 1;
rollback;
select count(*) filter (where a = 99) as rolled_back from pt;
select 1 as one \; select 2 as two;
\pset format aligned
select * from customers order by id;
\x on
select * from orders where id = 1;
\x off
select 'a' || :'v' as quoted, :"v" from (select 5 as abc) s;
prepare p(int) as select $1 * 2;
execute p(21);
deallocate p;
do $$ begin raise notice 'notice from psql %', 42; end $$;
listen psql_chan;
notify psql_chan, 'hi';
set application_name = 'psql-test';
show application_name;
\set FETCH_COUNT 4
select g, repeat('r', g) from generate_series(1, 10) g;
\unset FETCH_COUNT
\timing off
\gdesc
select now()::date = current_date as today \gx
"""


@pytest.mark.timeout(60)
def test_psql_script_same_output_as_direct(proxy, pg, tmp_path):
    script = tmp_path / "script.sql"
    script.write_text(PSQL_SCRIPT)
    via = run_psql(proxy.dsn(), "-f", script.name, cwd=tmp_path)
    direct = run_psql(direct_dsn(pg), "-f", script.name, cwd=tmp_path)
    # Asynchronous notifications name the sending backend's pid: the only expected difference.
    pid_re = re.compile(r"server process with PID \d+")
    assert pid_re.sub("PID n", via.stdout) == pid_re.sub("PID n", direct.stdout)
    assert via.stderr == direct.stderr
    assert via.returncode == direct.returncode == 0
    assert "v is abc" in via.stdout and "eleven, with comma" in via.stdout
    assert 'Table "public.orders"' in via.stdout and "22012" in via.stdout
    assert (
        "notice from psql 42" in via.stderr
        and 'Asynchronous notification "psql_chan"' in via.stdout
    )


@pytest.mark.timeout(30)
def test_psql_reconnects_to_another_database(proxy):
    res = run_psql(
        proxy.dsn(),
        "-A",
        "-t",
        "-c",
        "select current_database()",
        "-c",
        "\\c postgres",
        "-c",
        "select current_database(), current_user",
    )
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x]
    assert lines[0] == "app" and lines[-1] == f"postgres|{UPSTREAM_USER}"


@pytest.mark.timeout(30)
def test_asyncpg_execute_several_statements(proxy, pg):
    async def go(kwargs):
        conn = await asyncpg.connect(**kwargs)
        try:
            await conn.execute(
                "create temp table ms(x int); insert into ms values (1); insert into ms values (2)"
            )
            with pytest.raises(asyncpg.DivisionByZeroError):
                await conn.execute(
                    "insert into ms values (3); select 1/0; insert into ms values (4)"
                )
            after_error = await conn.fetch("select x from ms order by x")
            # (asyncpg itself fails on an empty query, directly too: covered by the raw tests.)
            status = await conn.execute("select 1; ; select 2")
            return [r["x"] for r in after_error], status, await conn.fetchval("select 42")
        finally:
            await conn.close()

    via = arun(go(proxy.connect_kwargs()))
    assert via == ([1, 2], "SELECT 1", 42)
    assert arun(go({"dsn": direct_dsn(pg)})) == via


@pytest.mark.timeout(30)
def test_psycopg_empty_query_and_errors_keep_session_usable(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        cur = conn.execute("")
        assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from no_such_table")
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("selec 1")
        assert conn.execute("select 'still here'").fetchone() == ("still here",)


# --- extended query with real clients -------------------------------------------------------


@pytest.mark.timeout(30)
def test_asyncpg_prepared_statements_and_cursor(proxy):
    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            stmt = await conn.prepare("select $1::int + 1 as n, $2::text as t")
            assert (
                stmt.get_statement_type() == "SELECT"
                if hasattr(stmt, "get_statement_type")
                else True
            )
            assert [p.name for p in stmt.get_parameters()] == ["int4", "text"]
            assert [a.name for a in stmt.get_attributes()] == ["n", "t"]
            assert [tuple(await stmt.fetchrow(i, str(i))) for i in range(3)] == [
                (1, "0"),
                (2, "1"),
                (3, "2"),
            ]
            # The statement really lives on the server under asyncpg's name.
            names = await conn.fetch("select name from pg_prepared_statements")
            assert any(r["name"].startswith("__asyncpg_stmt_") for r in names)
            await conn.executemany("select $1::int", [(i,) for i in range(50)])
            async with conn.transaction():
                cur = await conn.cursor("select g from generate_series(1, 1000) g")
                seen = []
                while batch := await cur.fetch(128):
                    seen += [r["g"] for r in batch]
                assert seen == list(range(1, 1001))
                await (
                    cur2 := await conn.cursor("select g from generate_series(1, 100) g")
                ).forward(40)
                assert (await cur2.fetchrow())["g"] == 41
                got = [
                    r["g"]
                    async for r in conn.cursor(
                        "select g from generate_series(1, 333) g", prefetch=50
                    )
                ]
                assert got == list(range(1, 334))
            return await conn.fetchval("select count(*) from public.orders")
        finally:
            await conn.close()

    assert arun(go()) == 4


@pytest.mark.timeout(30)
def test_psycopg_server_side_binding_named_and_unnamed(proxy):
    with psycopg.connect(proxy.dsn(), autocommit=True, prepare_threshold=2) as conn:
        assert conn.execute("select %s::int + %s, %s::text", (1, 2, "x")).fetchone() == (3, "x")
        assert conn.execute("select %s", (None,)).fetchone() == (None,)
        # Binary parameters and results.
        cur = conn.cursor(binary=True)
        assert cur.execute("select %b::bytea, %b::int8", (b"\x00\x01\xff", 2**40)).fetchone() == (
            b"\x00\x01\xff",
            2**40,
        )
        # prepare=True: a named server-side statement, reused.
        for i in range(3):
            assert conn.execute("select %s::int * 10", (i,), prepare=True).fetchone() == (i * 10,)
        prepared = conn.execute("select name, statement from pg_prepared_statements").fetchall()
        assert any(name.startswith("_pg3_") and "* 10" in sql for name, sql in prepared)
        # executemany in pipeline mode, then read back through a server-side cursor (DECLARE).
        conn.execute("create temp table bind_t (i int, t text)")
        with conn.cursor() as c:
            c.executemany("insert into bind_t values (%s, %s)", [(i, f"v{i}") for i in range(200)])
        with conn.transaction(), conn.cursor(name="named_cur") as sc:
            sc.itersize = 37
            sc.execute("select i, t from bind_t order by i")
            rows = list(sc)
        assert rows == [(i, f"v{i}") for i in range(200)]


def pipeline_outcome(conninfo: str) -> list:
    """Operations in psycopg pipeline mode; the outcome every step had."""
    out: list = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("create temp table pl (x int)")
        # One Sync group: the error rolls back the earlier insert and skips the later one.
        try:
            with conn.pipeline():
                c1 = conn.execute("insert into pl values (1)")
                c2 = conn.execute("insert into pl values (%s)", (2,))
                conn.execute("select 1/0")
                conn.execute("insert into pl values (4)")
        except psycopg.Error as exc:
            out.append(("error", type(exc).__name__, sqlstate_of(exc)))
        out.append(("rowcounts", c1.rowcount, c2.rowcount))
        out.append(
            (
                "after",
                conn.execute("select coalesce(array_agg(x order by x), '{}') from pl").fetchone()[
                    0
                ],
            )
        )
        # Two Sync groups: the first one commits, the failed second one is rolled back.
        try:
            with conn.pipeline() as p:
                conn.execute("insert into pl values (10)")
                conn.execute("insert into pl values (11)")
                p.sync()
                conn.execute("insert into pl values (12)")
                conn.execute("select * from no_such_table")
                conn.execute("insert into pl values (13)")
        except psycopg.Error as exc:
            out.append(("error", type(exc).__name__, sqlstate_of(exc)))
        out.append(("after", conn.execute("select array_agg(x order by x) from pl").fetchone()[0]))
        # The same inside an explicit transaction: the transaction is aborted.
        conn.autocommit = False
        try:
            with conn.pipeline():
                conn.execute("insert into pl values (20)")
                conn.execute("select 1/0")
        except psycopg.Error as exc:
            out.append(("error", type(exc).__name__, sqlstate_of(exc)))
        out.append(("status", conn.info.transaction_status.name))
        conn.rollback()
        out.append(("after", conn.execute("select array_agg(x order by x) from pl").fetchone()[0]))
        # Fetching results of many queued statements.
        with conn.pipeline():
            curs = [conn.execute("select %s::int", (i,)) for i in range(20)]
        out.append(("many", [c.fetchone()[0] for c in curs]))
        conn.rollback()
    return out


@pytest.mark.timeout(60)
def test_psycopg_pipeline_same_as_direct(proxy, pg):
    via = pipeline_outcome(proxy.dsn())
    assert via == pipeline_outcome(direct_dsn(pg))
    assert via[0] == ("error", "DivisionByZero", "22012")
    assert via[2] == ("after", [])
    assert via[4] == ("after", [10, 11])
    assert via[-1] == ("many", list(range(20)))


# --- transactions -------------------------------------------------------------------------


def transaction_outcome(conninfo: str, table: str) -> list:
    out: list = []
    with psycopg.connect(conninfo, autocommit=True) as conn:

        def step(sql, params=None):
            try:
                cur = conn.execute(sql, params)
                res = cur.fetchall() if cur.description else cur.statusmessage
                out.append((sql, res, conn.info.transaction_status.name))
            except psycopg.Error as exc:
                out.append((sql, exc.sqlstate, conn.info.transaction_status.name))

        step(f"truncate {table}")
        step("begin")
        step(f"insert into {table} values (1)")
        step("rollback")
        step(f"select count(*) from {table}")
        step("begin")
        step(f"insert into {table} values (2)")
        step("savepoint a")
        step(f"insert into {table} values (3)")
        step("select 1/0")
        step("select 1")
        step(f"insert into {table} values (4)")
        step("rollback to savepoint a")
        step("commit")
        step(f"select array_agg(x) from {table}")
        step("begin")
        step("select 1/0")
        step("select 1")
        step("commit")  # in an aborted transaction, COMMIT rolls back
        step("commit")  # no transaction: a warning, not an error
        step("begin isolation level serializable read only")
        step(f"insert into {table} values (5)")
        step("rollback")
    return out


@pytest.mark.timeout(30)
def test_transactions_same_as_direct(proxy, pg):
    table = f"public.tx_{uuid.uuid4().hex[:8]}"
    pg.psql(f"create table {table} (x int); alter table {table} owner to pgwitness", db="app")
    via = transaction_outcome(proxy.dsn(), table)
    direct = transaction_outcome(direct_dsn(pg), table)
    assert via == direct
    by_sql = [(sql, res) for sql, res, _ in via]
    assert ("select 1", "25P02") in by_sql
    assert (f"select array_agg(x) from {table}", [([2],)]) in by_sql
    assert ("commit", "ROLLBACK") in by_sql
    assert (f"insert into {table} values (5)", "25006") in by_sql


@pytest.mark.timeout(30)
def test_asyncpg_transaction_error_then_rollback(proxy):
    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            tr = conn.transaction()
            await tr.start()
            with pytest.raises(asyncpg.DivisionByZeroError):
                await conn.execute("select 1/0")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await conn.fetchval("select 1")
            assert conn.is_in_transaction()
            await tr.rollback()
            assert not conn.is_in_transaction()
            return await conn.fetchval("select 1")
        finally:
            await conn.close()

    assert arun(go()) == 1


# --- asynchronous messages: notifications, notices, parameter status -----------------------


@pytest.mark.timeout(30)
def test_listen_notify_through_proxy_and_direct(proxy, pg):
    channel = f"chan_{uuid.uuid4().hex[:8]}"

    async def go():
        listener = await asyncpg.connect(**proxy.connect_kwargs())
        sender = await asyncpg.connect(**proxy.connect_kwargs())
        direct = await asyncpg.connect(direct_dsn(pg))
        got: asyncio.Queue = asyncio.Queue()
        try:
            await listener.add_listener(
                channel, lambda c, pid, ch, payload: got.put_nowait((pid, ch, payload))
            )
            await sender.execute(f"notify {channel}, 'via proxy'")
            first = await asyncio.wait_for(got.get(), 5)
            await direct.execute("select pg_notify($1, 'direct ' || repeat('x', 5000))", channel)
            second = await asyncio.wait_for(got.get(), 5)
            # A notification arriving while the listener is busy with its own query.
            async with sender.transaction():
                await sender.execute(f"notify {channel}, 'on commit'")
            third = await asyncio.wait_for(got.get(), 5)
            return (first, sender.get_server_pid()), (second, direct.get_server_pid()), third
        finally:
            for c in (listener, sender, direct):
                await c.close()

    (first, sender_pid), (second, direct_pid), third = arun(go())
    assert first == (sender_pid, channel, "via proxy")
    assert second == (direct_pid, channel, "direct " + "x" * 5000)
    assert third[1:] == (channel, "on commit")


@pytest.mark.timeout(30)
def test_psycopg_notifies(proxy):
    channel = f"pchan_{uuid.uuid4().hex[:8]}"
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as a,
        psycopg.connect(proxy.dsn(), autocommit=True) as b,
    ):
        a.execute(f"listen {channel}")
        b.execute(f"notify {channel}, 'p1'")
        b.execute("select pg_notify(%s, 'p2')", (channel,))
        got = []
        for n in a.notifies(timeout=5, stop_after=2):
            got.append((n.channel, n.payload, n.pid))
        assert got == [(channel, "p1", b.info.backend_pid), (channel, "p2", b.info.backend_pid)]


NOTICE_DO = "do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$"


@pytest.mark.timeout(30)
def test_notices_reach_asyncpg_and_psycopg(proxy):
    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        got = []
        try:
            conn.add_log_listener(
                lambda c, msg: got.append((msg.severity, msg.sqlstate, msg.message))
            )
            await conn.execute(NOTICE_DO)
            await conn.execute("drop table if exists surely_not_here_xyz")  # server notice too
            await asyncio.sleep(0.05)
            return got
        finally:
            await conn.close()

    got = arun(go())
    assert got[:2] == [("NOTICE", "00000", "hello 42"), ("WARNING", "01000", "careful")]
    assert got[2][0] == "NOTICE" and "does not exist, skipping" in got[2][2]

    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        seen = []
        conn.add_notice_handler(lambda d: seen.append((d.severity, d.sqlstate, d.message_primary)))
        conn.execute(NOTICE_DO)
        assert seen == [("NOTICE", "00000", "hello 42"), ("WARNING", "01000", "careful")]


@pytest.mark.timeout(30)
def test_parameter_status_follows_set(proxy, pg):
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as conn,
        psycopg.connect(direct_dsn(pg)) as ref,
    ):
        # The startup ParameterStatus set is the server's (except who is logged in).
        for name in (
            "server_version",
            "server_encoding",
            "client_encoding",
            "DateStyle",
            "integer_datetimes",
            "standard_conforming_strings",
            "IntervalStyle",
        ):
            assert conn.info.parameter_status(name) == ref.info.parameter_status(name), name
        assert conn.info.parameter_status("session_authorization") == UPSTREAM_USER
        conn.execute("set application_name = 'agent-7'")
        assert conn.info.parameter_status("application_name") == "agent-7"
        conn.execute("set timezone = 'Asia/Kolkata'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Kolkata"
        assert (
            str(conn.execute("select '2020-01-01 00:00+00'::timestamptz").fetchone()[0].utcoffset())
            == "5:30:00"
        )
        with conn.transaction(force_rollback=True):
            conn.execute("set local application_name = 'tx-only'")
            assert conn.info.parameter_status("application_name") == "tx-only"
        assert conn.info.parameter_status("application_name") == "agent-7"
        conn.execute("reset all")
        assert conn.info.parameter_status("TimeZone") == ref.info.parameter_status("TimeZone")

    async def go():
        conn = await asyncpg.connect(
            **proxy.connect_kwargs(), server_settings={"application_name": "from-startup"}
        )
        try:
            before = conn.get_settings().application_name
            await conn.execute("set application_name to 'changed'")
            return (
                before,
                conn.get_settings().application_name,
                await conn.fetchval("show application_name"),
            )
        finally:
            await conn.close()

    assert arun(go()) == ("from-startup", "changed", "changed")


# --- session ends ---------------------------------------------------------------------------


def proxy_sessions_with_pid(proxy, pid: int) -> int:
    return sum(1 for c in list(proxy.server.connections) if c.backend_key and c.backend_key[0] == pid)


@pytest.mark.timeout(30)
def test_terminate_closes_upstream_cleanly(make_proxy, pg):
    """With upstream sessions never kept for reuse (tests/integration/test_upstream_reuse.py
    has them kept)."""
    proxy = make_proxy(**{"upstream.reuse_idle_seconds": 0})
    conn = psycopg.connect(proxy.dsn())
    pid = conn.info.backend_pid
    assert stat_activity(pg, pid).endswith(f"|{UPSTREAM_USER}")
    assert proxy_sessions_with_pid(proxy, pid) == 1
    conn.close()  # sends Terminate
    assert wait_backend_gone(pg, pid, 10)
    assert wait_until(lambda: proxy_sessions_with_pid(proxy, pid) == 0, 5)
    # A Terminate by a raw client: the proxy closes the socket too (EOF, no error message).
    c = RawClient.via_proxy(proxy)
    c.send(m.TERMINATE)
    c.sock.settimeout(5)
    assert c.sock.recv(100) == b""
    assert wait_backend_gone(pg, c.pid, 10)


def kill_socket(sock: socket.socket) -> None:
    """Close with RST, the way a crashed client goes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["simple", "extended", "extended-no-sync"])
def test_client_killed_mid_query_leaves_no_upstream_session(proxy, pg, how):
    """Closing the upstream socket alone would let the backend sleep on (it does not watch
    its socket while running: direct clients have the same problem), so the proxy cancels."""
    c = RawClient.via_proxy(proxy)
    sql = "select pg_sleep(30)"
    if how == "simple":
        c.send(m.query(sql))
    else:
        c.send(parse("", sql), bind(), m.execute(), m.SYNC if how == "extended" else FLUSH)
    assert wait_backend_state(pg, c.pid, "active")
    kill_socket(c.sock)
    assert wait_until(lambda: proxy_sessions_with_pid(proxy, c.pid) == 0, 5)
    assert wait_backend_gone(pg, c.pid, 5), stat_activity(pg, c.pid)


@pytest.mark.timeout(30)
def test_server_timeout_fatal_relayed_like_direct(proxy, pg):
    got = []
    for c in (RawClient.via_proxy(proxy), RawClient.direct(pg)):
        msgs = c.run(m.query("set idle_in_transaction_session_timeout = 300; begin; select 1"))
        assert msgs[-1] == ("Z", b"T")
        got.append([(e["S"], e["C"], e["M"]) for e in errors_of(messages_until_eof(c))])
    assert (
        got[0]
        == got[1]
        == [("FATAL", "25P03", "terminating connection due to idle-in-transaction timeout")]
    )


@pytest.mark.timeout(30)
def test_client_killed_idle_in_transaction_rolls_back(proxy, pg):
    table = f"public.kill_{uuid.uuid4().hex[:8]}"
    pg.psql(f"create table {table} (x int); alter table {table} owner to pgwitness", db="app")
    c = RawClient.via_proxy(proxy)
    assert types_of(c.run(m.query(f"begin; insert into {table} values (1)"))) == "CCZ"
    kill_socket(c.sock)
    assert wait_backend_gone(pg, c.pid, 10)
    assert pg.psql(f"select count(*) from {table}", db="app").strip() == "0"


@pytest.mark.timeout(30)
def test_upstream_terminated_while_idle(proxy, pg):
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as victim,
        psycopg.connect(proxy.dsn(), autocommit=True) as bystander,
    ):
        pid = victim.info.backend_pid
        assert pg.psql(f"select pg_terminate_backend({pid})").strip() == "t"
        assert wait_until(lambda: proxy_sessions_with_pid(proxy, pid) == 0, 5)
        with pytest.raises(psycopg.OperationalError) as exc:
            victim.execute("select 1")
        assert "terminat" in str(exc.value) or "closed" in str(exc.value)
        assert victim.closed
        assert bystander.execute("select 1").fetchone() == (1,)


@pytest.mark.timeout(30)
def test_upstream_terminated_mid_query(proxy, pg):
    async def go():
        victim = await asyncpg.connect(**proxy.connect_kwargs())
        bystander = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            pid = victim.get_server_pid()
            task = asyncio.create_task(victim.fetchval("select pg_sleep(30)"))
            await asyncio.to_thread(wait_backend_state, pg, pid, "active")
            started = time.monotonic()
            await asyncio.to_thread(pg.psql, f"select pg_terminate_backend({pid})")
            with pytest.raises(
                (asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError)
            ) as exc:
                await asyncio.wait_for(task, 10)
            took = time.monotonic() - started
            sqlstate = getattr(exc.value, "sqlstate", None)
            return took, sqlstate, victim.is_closed(), await bystander.fetchval("select 2")
        finally:
            await victim.close()
            await bystander.close()

    took, sqlstate, closed, bystander = arun(go())
    assert took < 5
    assert sqlstate in ("57P01", "08003")  # asyncpg: AdminShutdown, or "closed mid-operation"
    assert closed and bystander == 2


def messages_until_eof(c: RawClient) -> list[tuple[str, bytes]]:
    c.sock.settimeout(5)
    msgs = []
    try:
        while True:
            msgs.append(c.read())
    except (EOFError, ConnectionResetError):
        pass
    return msgs


@pytest.mark.timeout(30)
def test_upstream_fatal_is_relayed_before_close(proxy, pg):
    c = RawClient.via_proxy(proxy)
    pg.psql(f"select pg_terminate_backend({c.pid})")
    errs = errors_of(messages_until_eof(c))
    assert errs and (errs[0]["S"], errs[0]["C"]) == ("FATAL", "57P01")
    assert errs[0]["M"] == "terminating connection due to administrator command"
    assert all(e["S"] == "FATAL" for e in errs)


@pytest.mark.timeout(30)
def test_upstream_fatal_is_the_only_message_like_direct(proxy, pg):
    """No FATAL of the proxy's own after the server's: asyncpg shows the *last* FATAL, and
    would report "the upstream database closed the connection" instead of the server's
    "terminating connection due to administrator command"."""
    got = []
    for c in (RawClient.via_proxy(proxy), RawClient.direct(pg)):
        pg.psql(f"select pg_terminate_backend({c.pid})")
        got.append([(e["S"], e["C"], e["M"]) for e in errors_of(messages_until_eof(c))])
    via, direct = got
    assert direct == [("FATAL", "57P01", "terminating connection due to administrator command")]
    assert via == direct


@pytest.mark.timeout(60)
def test_concurrent_sessions_do_not_cross(proxy):
    async def one(i: int):
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            pid = conn.get_server_pid()
            for j in range(20):
                row = await conn.fetchrow(
                    "select $1::int as i, $2::int as j, pg_backend_pid() as pid", i, j
                )
                assert tuple(row) == (i, j, pid)
            return pid
        finally:
            await conn.close()

    async def go():
        return await asyncio.gather(*(one(i) for i in range(12)))

    pids = arun(go())
    assert len(set(pids)) == 12


@pytest.mark.timeout(60)
def test_many_pipelined_messages_in_one_write(proxy):
    """A thousand Sync groups and Queries in one write: all answered, in order."""
    c = RawClient.via_proxy(proxy)
    try:
        frames = []
        for i in range(500):
            frames.append(m.query(f"select {i}"))
            frames += [
                parse("", "select $1::int + 1000"),
                bind("", "", (str(i).encode(),)),
                m.execute(),
                m.SYNC,
            ]
        msgs = c.run(*frames)
        values = [int(b[6:]) for t, b in msgs if t == "D"]
        expected = []
        for i in range(500):
            expected += [i, i + 1000]
        assert values == expected
        assert types_of(msgs).count("Z") == 1000
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_large_values_both_directions(proxy):
    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            blob = os.urandom(8 << 20)
            echoed = await conn.fetchval("select $1::bytea", blob)
            text_len = await conn.fetchval("select length(repeat('x', 20000000))")
            big_row = await conn.fetchval("select repeat('y', 20000000)")
            big_query = await conn.fetchval("select length('" + "z" * (5 << 20) + "')")
            return echoed == blob, text_len, len(big_row), big_query
        finally:
            await conn.close()

    assert arun(go()) == (True, 20_000_000, 20_000_000, 5 << 20)


@pytest.mark.timeout(90)
def test_values_beyond_max_message_bytes_stream_through(make_proxy):
    """Rows, COPY data and Bind parameters are passed on as they arrive, so values far past
    proxy.max_message_bytes (4 KiB here) get through exactly as they do directly; only
    statement text, which the policy reads whole, is held to the limit."""
    h = make_proxy(**{"proxy.max_message_bytes": 4096})

    async def go():
        conn = await asyncpg.connect(**h.connect_kwargs())
        try:
            blob = os.urandom(3 << 20)
            assert await conn.fetchval("select $1::bytea", blob) == blob  # Bind and DataRow
            row = await conn.fetchval("select repeat('y', 30000000)")
            assert len(row) == 30_000_000 and row.strip("y") == ""
            # Peak buffering stays bounded: the readers never held a frame whole.
            (session,) = h.server.connections
            r = session.relay
            assert r.client_reader.pending < 256 * 1024 and r.server_reader.pending < 256 * 1024
        finally:
            await conn.close()

    arun(go())
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        conn.execute("create temp table big (id int, v text)")
        with conn.cursor().copy("copy big from stdin") as copy:
            for i in range(3):
                copy.write_row((i, str(i) * 2_000_000))  # one 2 MB CopyData each
        out = b""
        with conn.cursor().copy("copy (select v from big order by id) to stdout") as copy:
            for chunk in copy:
                out += bytes(chunk)
        assert out == b"".join(str(i).encode() * 2_000_000 + b"\n" for i in range(3))
        assert conn.execute("select sum(length(v)) from big").fetchone() == (6_000_000,)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select '" + "q" * 5000 + "'")  # statement text: 08P01, FATAL
    assert not h.server.connections


@pytest.mark.timeout(60)
def test_no_fatal_is_spliced_into_a_row_half_sent(make_proxy):
    """Ending a session in the middle of a streamed row: the proxy must not write its FATAL
    inside the row (the client would read our bytes as row data); it closes instead. The
    same holds for every other ending (expiry, revocation, shutdown): one code path."""
    h = make_proxy()
    c = RawClient.via_proxy(h, timeout=20)
    try:
        c.send(m.query("select repeat('x', 64 << 20)"))  # and do not read: back-pressure
        deadline = time.monotonic() + 20
        while not any(s.relay and s.relay.mid_frame_to_client for s in list(h.server.connections)):
            assert time.monotonic() < deadline, "the row never started streaming"
            time.sleep(0.02)
        c.send(b"z\x00\x00\x00\x04")  # ends the session: FATAL 08P01, but not inside a row
        got = b""
        while chunk := c.sock.recv(1 << 20):
            got += chunk
    finally:
        c.sock.close()
    assert got[:1] == b"T"
    d = 1 + struct.unpack_from("!i", got, 1)[0]
    assert got[d : d + 1] == b"D"
    row_length = struct.unpack_from("!i", got, d + 1)[0]
    body = got[d + 5 + 2 + 4 :]  # column count (int16) and the value's length (int32)
    assert 0 < len(body) < row_length and body.strip(b"x") == b"", "foreign bytes in the row"


@pytest.mark.timeout(30)
def test_driver_startup_parameters_reach_the_server(proxy):
    settings = {
        "application_name": "driver-x",
        "DateStyle": "SQL, DMY",
        "TimeZone": "Pacific/Chatham",
        "extra_float_digits": "3",
        "IntervalStyle": "iso_8601",
        "client_min_messages": "warning",
        "bytea_output": "escape",
    }

    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs(), server_settings=settings)
        try:
            return {k: await conn.fetchval(f"show {k}") for k in settings}
        finally:
            await conn.close()

    got = arun(go())
    assert got == settings  # application_name too: untagged by default (proxy/appname.py)


@pytest.mark.timeout(30)
def test_application_name_is_the_clients_own_wherever_it_reads_it(proxy, pg):
    """Untagged by default: what Postgres would show, on every side (node-postgres's
    suite reads it back with SHOW; issue 12's drivers read their pg_stat_activity row)."""
    for name in ("", "agent-app"):
        with psycopg.connect(proxy.dsn(application_name=name) if name else proxy.dsn()) as conn:
            pid = conn.info.backend_pid
            assert conn.info.parameter_status("application_name") == name
            assert conn.execute("SHOW application_name").fetchone() == (name,)
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == (name,)
            assert pg.psql(f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}",
                           db="app").strip() == name  # fmt: skip


@pytest.mark.timeout(30)
def test_tagged_application_name_names_the_session_upstream_and_the_client_sees_its_own(
    make_proxy, pg
):
    handle = make_proxy(**{"upstream.tag_application_name": True})
    with psycopg.connect(handle.dsn(application_name="agent-app"), autocommit=True) as conn:
        pid = conn.info.backend_pid
        upstream = pg.psql(f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}",
                           db="app").strip()  # fmt: skip
        assert re.fullmatch(r"pgw:[0-9a-f]{16}/agent-app", upstream), upstream
        assert conn.info.parameter_status("application_name") == "agent-app"
        conn.execute("SET application_name = 'other'")
        assert conn.info.parameter_status("application_name") == "other"
        # RESET returns the server to the tagged login value; the client is told its own
        conn.execute("RESET application_name")
        assert conn.info.parameter_status("application_name") == "agent-app"
        assert conn.execute("SHOW application_name").fetchone() == (upstream,)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("database", ["no_such_db", "template0"])
def test_upstream_login_refusal_is_the_servers_own(proxy, pg, database):
    got = []
    for open_client in (RawClient.via_proxy, RawClient.direct):
        with pytest.raises(RawError) as exc:
            open_client(proxy if open_client == RawClient.via_proxy else pg, database)
        got.append({k: exc.value.fields.get(k) for k in "SCM"})
    assert got[0] == got[1]
    assert got[0]["S"] == "FATAL" and got[0]["C"] in ("3D000", "55000")


@pytest.mark.timeout(30)
def test_gssenc_and_ssl_requests_declined_then_plain_login(proxy):
    gss = I32.pack(8) + I32.pack(80877104)
    c = RawClient.via_proxy(proxy, preamble=(gss, m.ssl_request()))
    try:
        assert c.preamble_answers == [b"N", b"N"]
        assert types_of(c.run(m.query("select 1"))) == "TDCZ"
    finally:
        c.close()


def protocol_facts(dsn: str) -> tuple:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return (
            conn.pgconn.protocol_version,
            conn.execute("select 1").fetchone(),
            conn.info.parameter_status("server_version"),
        )


@pytest.mark.timeout(30)
def test_libpq_max_protocol_version_latest_negotiates_like_direct(proxy, pg):
    """libpq 18 may ask for protocol 3.2; a 3.0 server (and the proxy) must talk it down."""
    via = protocol_facts(proxy.dsn(max_protocol_version="latest"))
    assert via == protocol_facts(direct_dsn(pg) + "&max_protocol_version=latest")
    assert via[1] == (1,)


@pytest.mark.timeout(30)
def test_queries_sent_before_login_completes_are_answered(proxy):
    """Bytes that arrive while the proxy is still logging in upstream are kept, in order."""
    early = m.query("select 'early'") + parse("", "select 2") + bind() + m.execute() + m.SYNC
    c = RawClient.via_proxy(proxy, early=early)
    try:
        msgs = c.read_until("Z", 2)
        assert types_of(msgs) == "TDCZ12DCZ"
        assert msgs[1] == ("D", b"\x00\x01\x00\x00\x00\x05early")
    finally:
        c.close()


# --- pgbench -----------------------------------------------------------------------------------


def pgbench(proxy, db: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = tool_env()
    env["PGPASSWORD"] = proxy.connect_kwargs()["password"]
    kw = proxy.connect_kwargs()
    return subprocess.run(
        ["pgbench", "-h", kw["host"], "-p", str(kw["port"]), "-U", kw["user"], *args, db],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def bench_db(pg):
    name = f"bench_{uuid.uuid4().hex[:8]}"
    pg.create_database(name, owner=UPSTREAM_USER)
    yield name
    pg.psql(f"drop database if exists {name} with (force)")


@pytest.mark.timeout(120)
def test_pgbench_through_proxy(proxy, pg, bench_db):
    init = pgbench(proxy, bench_db, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.stderr
    assert "done in" in init.stderr
    assert pg.psql("select count(*) from pgbench_accounts", db=bench_db).strip() == "100000"
    for mode in ("simple", "extended", "prepared"):
        res = pgbench(proxy, bench_db, "-c", "4", "-j", "2", "-t", "50", "-M", mode)
        assert res.returncode == 0, (mode, res.stdout, res.stderr)
        out = res.stdout
        assert f"query mode: {mode}" in out
        assert re.search(r"number of transactions actually processed: 200/200\b", out), out
        failed = re.search(r"number of failed transactions: (\d+)", out)
        assert failed and failed.group(1) == "0", out
    history = pg.psql("select count(*) from pgbench_history", db=bench_db).strip()
    assert history == "200"  # each run starts by truncating pgbench_history
    # A new connection per transaction: 60 logins and Terminates, nothing left behind.
    res = pgbench(proxy, bench_db, "-C", "-c", "2", "-j", "2", "-t", "30", "-S", "-n")
    assert res.returncode == 0 and "actually processed: 60/60" in res.stdout, (
        res.stdout + res.stderr
    )
    assert wait_until(
        lambda: (
            pg.psql(f"select count(*) from pg_stat_activity where datname = '{bench_db}'").strip()
            == "0"
        ),
        10,
    )


# --- the Relay's deny path against the real server (no proxy server in between) ------------


class DenyPayroll(PolicySeam):
    """A stand-in policy: anything naming payroll is denied."""

    message = "pgwitness: task t may not read secret.payroll (rule scope.read)"

    def _v(self, sql: str):
        from policy.engine import Verdict

        denied = "payroll" in sql
        return Verdict(not denied, (), self.message if denied else "")

    def check_query(self, sql):
        return self._v(sql)

    def check_parse(self, sql, param_types=(), name=""):
        return self._v(sql)

    def check_function_call(self):
        return self._v("payroll")


class RelayOverServer:
    """Drives ``proxy.relay.Relay`` between scripted client frames and a real backend."""

    def __init__(self, pg):
        from proxy.relay import Relay

        self.server = RawClient.direct(pg)
        assert not self.server.buf
        self.relay = Relay(policy=DenyPayroll())
        self.client_reader = FrameReader()

    def run(self, *frames: bytes) -> list[tuple[str, bytes]]:
        to_server, to_client = self.relay.from_client(b"".join(frames))
        self.sent = to_server
        out: list[tuple[str, bytes]] = []

        def take(data: bytes) -> None:
            run, fr = self.client_reader.feed(data)
            out.extend((chr(t), run[s + 5 : e]) for t, s, e in fr)

        take(to_client)
        if to_server:
            self.server.sock.sendall(to_server)
        want = sum(1 for f in frames if f[:1] in (b"Q", b"S", b"F"))
        while sum(1 for t, _ in out if t == "Z") < want:
            data = self.server.sock.recv(1 << 16)
            assert data, "server closed"
            take(self.relay.from_server(data))
        return out

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def relay_over_server(pg):
    r = RelayOverServer(pg)
    yield r
    r.close()


def assert_clean_denial(fields: dict[str, str], marker: str) -> None:
    assert fields == {"S": "ERROR", "V": "ERROR", "C": "42501", "M": DenyPayroll.message}
    assert marker not in repr(fields)


@pytest.mark.timeout(30)
def test_relay_deny_inside_transaction_against_server(relay_over_server):
    r = relay_over_server
    assert r.run(m.query("create temp table d (x int)"))[-1] == ("Z", b"I")
    assert r.run(m.query("begin; insert into d values (1)"))[-1] == ("Z", b"T")
    msgs = r.run(m.query("select * from secret.payroll"))
    assert b"DO " in r.sent and b"payroll" not in r.sent.replace(DenyPayroll.message.encode(), b"")
    assert types_of(msgs) == "EZ" and msgs[-1] == ("Z", b"E")
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)
    assert errors_of(r.run(m.query("select 1")))[0]["C"] == "25P02"
    assert r.run(m.query("rollback"))[-1] == ("Z", b"I")
    assert r.run(m.query("select count(*) from d"))[1] == ("D", b"\x00\x01\x00\x00\x00\x010")


@pytest.mark.timeout(30)
def test_relay_deny_parse_in_pipeline_against_server(relay_over_server):
    r = relay_over_server
    r.run(m.query("create temp table dp (x int)"))
    msgs = r.run(
        parse("ins", "insert into dp values ($1::int)"), bind("", "ins", (b"1",)), m.execute(),
        parse("", "select * from secret.payroll"), bind(), describe("P"), m.execute(),
        parse("", "select 1"), bind(), m.execute(),
        m.SYNC,
    )  # fmt: skip
    # The client's own ParseComplete/BindComplete/CommandComplete stay; the injected
    # ParseComplete/BindComplete go; the error is the clean 42501; the rest is skipped.
    assert types_of(msgs) == "12CEZ"
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)
    assert r.run(m.query("select count(*) from dp"))[1] == ("D", b"\x00\x01\x00\x00\x00\x010")
    # The client's named statement survived; the session goes on.
    msgs = r.run(bind("", "ins", (b"2",)), m.execute(), m.SYNC)
    assert types_of(msgs) == "2CZ"


@pytest.mark.timeout(30)
def test_relay_deny_when_idle_against_server_sends_nothing(relay_over_server):
    r = relay_over_server
    msgs = r.run(m.query("select * from secret.payroll"))
    assert r.sent == b"" and types_of(msgs) == "EZ"
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)
    assert types_of(r.run(m.query("select 1"))) == "TDCZ"


@pytest.mark.timeout(30)
def test_relay_denied_parse_keeps_the_clients_unnamed_statement(relay_over_server):
    """Directly, a Parse that fails leaves the unnamed statement alone (it lasts until the next
    Parse into it succeeds, or a simple Query); binding it again later must still work."""
    r = relay_over_server
    assert types_of(r.run(parse("", "select 41 + 1"), m.SYNC)) == "1Z"
    msgs = r.run(parse("other", "select * from secret.payroll"), m.SYNC)
    assert types_of(msgs) == "EZ"
    msgs = r.run(bind(), m.execute(), m.SYNC)
    assert types_of(msgs) == "2DCZ", errors_of(msgs)
    assert msgs[1] == ("D", b"\x00\x01\x00\x00\x00\x0242")


# Exchanges after which Postgres sends fewer ReadyForQuery than the client sent Sync/Query:
# Sync is ignored in COPY IN mode (libpq's PQexecParams("COPY ... FROM STDIN") sends a Sync
# after Execute and another after CopyDone), and a Query inside the skip-until-Sync range of
# a failed extended-protocol batch is discarded.
SYNC_SWALLOWING = {
    "libpq extended COPY FROM STDIN": [
        (parse("", "copy swallow from stdin"), bind(), describe("P"), m.execute(), m.SYNC),
        (frame(b"d", b"1\n"), frame(b"c"), m.SYNC),
    ],
    "Query discarded after an extended-protocol error": [
        (
            parse("", "select 1/g from generate_series(0, 0) g"),
            bind(),
            m.execute(),
            m.query("select 1"),
            m.SYNC,
        ),
    ],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "prelude",
    [
        "libpq extended COPY FROM STDIN",
        "Query discarded after an extended-protocol error",
    ],
)
def test_relay_deny_after_a_swallowed_sync(relay_over_server, prelude):
    r = relay_over_server
    r.run(m.query("create temp table swallow (x int)"))
    for step in SYNC_SWALLOWING[prelude]:
        to_server, _ = r.relay.from_client(b"".join(step))
        r.server.sock.sendall(to_server)
        got = b""
        while not (got.endswith(m.ready_for_query(b"I")) or b"G\x00\x00\x00" in got):
            got += r.relay.from_server(r.server.sock.recv(1 << 16))
    # The session is idle again; a denied Parse must look like any failed Parse.
    msgs = r.run(parse("", "select * from secret.payroll"), bind(), m.execute(), m.SYNC)
    assert types_of(msgs) == "EZ", msgs  # not the injected ParseComplete/BindComplete
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)
    msgs = r.run(m.query("select * from secret.payroll"))
    assert types_of(msgs) == "EZ" and r.sent == b""  # answered locally, as when idle
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)


FLUSH = frame(b"H", b"")
# Steps of a client script: what the relay is sent, and what a direct connection is sent to
# get the same answer shapes (a denial looks like a statement that fails where it stands).
MIXED_STEPS = {
    "ext ok": [parse("", "select 1"), bind(), describe("P"), m.execute()],
    "ext fails at Execute": [parse("", "select 1/0"), bind(), m.execute()],
    "ext fails at Parse": [parse("", "selec 1"), bind(), m.execute()],
    "ext denied": [parse("", "select * from secret.payroll"), bind(), m.execute()],
    "query ok": [m.query("select 2")],
    "query fails": [m.query("select 1/0")],
    "query denied": [m.query("select * from secret.payroll")],
    "flush": [FLUSH],
    "sync": [m.SYNC],
}
DIRECT_EQUIVALENT = {
    "ext denied": [parse("", "selec payroll"), bind(), m.execute()],
    "query denied": [m.query("selec payroll")],
}
END = m.query("select 'end-of-script'")


def answers_until_end(read, out=None) -> list[tuple[str, bytes]]:
    """Messages until the end marker's ReadyForQuery (ReadyForQuery keeps its status)."""
    out = list(out or [])
    while True:
        out.extend(read())
        if ("D", b"\x00\x01\x00\x00\x00\x0dend-of-script") in out and out[-1][0] == "Z":
            return [(t, b if t == "Z" else b"") for t, b in out]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.sampled_from(sorted(MIXED_STEPS)), min_size=1, max_size=8))
def test_relay_matches_the_server_when_extended_messages_and_queries_mix(pg, relay_over_server, script):
    """Extended messages, Queries and Syncs in any order: after an extended-protocol error
    the server skips everything up to Sync, Queries included. Through the relay the client
    must get what it gets directly, and the relay must end idle (so a denial is answered
    at once, with nothing injected)."""
    r = relay_over_server
    steps = [*script, "sync"]
    direct = RawClient.direct(pg)
    try:
        direct.send(*(f for s in steps for f in DIRECT_EQUIVALENT.get(s, MIXED_STEPS[s])), END)
        want = answers_until_end(lambda: [direct.read()])
    finally:
        direct.sock.close()
    reader = FrameReader()

    def via_relay():
        run, fr = reader.feed(r.relay.from_server(r.server.sock.recv(1 << 16)))
        return [(chr(t), run[a + 5 : b]) for t, a, b in fr]

    to_server, to_client = r.relay.from_client(b"".join(f for s in steps for f in MIXED_STEPS[s]))
    r.server.sock.sendall(to_server)
    run, fr = reader.feed(to_client)
    early = [(chr(t), run[a + 5 : b]) for t, a, b in fr]
    to_server, to_client = r.relay.from_client(END)
    assert to_client == b""
    r.server.sock.sendall(to_server)
    got = answers_until_end(via_relay, early)
    assert types_of(got) == types_of(want), script
    assert got == want, script
    relay = r.relay
    assert relay._idle() and not relay.denials.pending and not relay.groups.skipping and not relay.groups.query_ended
    msgs = r.run(m.query("select * from secret.payroll"))  # idle: answered locally
    assert types_of(msgs) == "EZ" and r.sent == b""


@pytest.mark.timeout(30)
def test_relay_query_skipped_after_an_extended_error_seen_before_the_query(relay_over_server):
    """The extended error arrives while the group is still open (the client flushed and
    waited); the Query it sends next is skipped by the server, so one Sync ends both."""
    r = relay_over_server
    to_server, _ = r.relay.from_client(parse("", "select 1/0") + bind() + m.execute() + FLUSH)
    r.server.sock.sendall(to_server)
    reader, seen = FrameReader(), ""
    while "E" not in seen:
        run, fr = reader.feed(r.relay.from_server(r.server.sock.recv(1 << 16)))
        seen += "".join(chr(t) for t, _, _ in fr)
    assert seen == "1E" and r.relay.groups.skipping  # 1/0 fails when planned, at Bind
    to_server, _ = r.relay.from_client(m.query("select 2") + m.SYNC)
    r.server.sock.sendall(to_server)
    got = b""
    while not got.endswith(m.ready_for_query(b"I")):
        got += r.relay.from_server(r.server.sock.recv(1 << 16))
    assert got == m.ready_for_query(b"I")  # the Query was skipped: one answer, the Sync's
    assert r.relay._idle() and not r.relay.groups.skipping
    assert types_of(r.run(m.query("select 3"))) == "TDCZ"


@pytest.mark.timeout(30)
def test_relay_deny_parse_with_debug_notices(relay_over_server):
    """client_min_messages is a setting agents may change; at DEBUG2 the server reports each
    Parse and Bind as it happens, i.e. between the injected messages' answers."""
    r = relay_over_server
    r.run(m.query("set client_min_messages = debug2"))
    r.run(m.query("begin"))
    msgs = r.run(parse("", "select * from secret.payroll"), bind(), m.execute(), m.SYNC)
    assert "1" not in types_of(msgs) and "2" not in types_of(msgs), types_of(msgs)
    assert types_of(msgs).rstrip("N").endswith("EZ")
    assert_clean_denial(errors_of(msgs)[0], r.relay.denials.marker)
