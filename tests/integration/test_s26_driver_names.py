"""The drivers' differential of session 26, each finding as a test against a real server
through the proxy, compared with the same steps directly:

* F1: a function defined through the proxy, then called: every statement asyncpg and
  psycopg had prepared on the connection was refused for good (``deny.catalog``: the
  proxy forgot the texts; now it checks them with the server, and a call of a function
  no load has read yet waits for one).
* F3: a server-prepared ROLLBACK in a failed transaction, after code that may run DDL:
  the injected check failed (25P02) and took the ROLLBACK with it; the connection stayed
  failed for good. The check is not made in a failed transaction, where the server runs
  nothing but what ends it.
* F4: pg8000's unnamed statement, parsed in one Sync group and bound in the next: its
  COMMIT was refused after a function was defined in the transaction (the proxy forgot
  the unnamed statement, which no code can replace).
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "s26d-bot"
SCOPES = "read:s26d.* write:s26d.* ddl:s26d.* execute:s26d.*,public.s26d_dyn"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s26d;\n"
    "CREATE TABLE s26d.t (id int); INSERT INTO s26d.t VALUES (1);\n"
    "CREATE FUNCTION public.s26d_dyn() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; BEGIN "
    "EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = "DROP SCHEMA IF EXISTS s26d CASCADE;\nDROP FUNCTION IF EXISTS public.s26d_dyn();\n"
DEFINE = (
    "CREATE OR REPLACE FUNCTION s26d.f(i int) RETURNS int LANGUAGE plpgsql "
    "AS $$ BEGIN RETURN i; END $$"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s26d", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def test_f1_asyncpg_keeps_its_statements_after_a_function_is_defined_and_called(px):
    async def run() -> list:
        con = await asyncpg.connect(host=px.host, port=px.port, user=AGENT, password=px.token,
                                    database="app", ssl=False)  # fmt: skip
        try:
            got = [await con.fetchval("SELECT id + $1::int FROM s26d.t", 1)]
            await con.execute(DEFINE)
            got.append(await con.fetchval("SELECT s26d.f($1)", 5))
            for _ in range(3):  # the statement prepared before, and the call's own
                got.append(await con.fetchval("SELECT id + $1::int FROM s26d.t", 1))
                got.append(await con.fetchval("SELECT s26d.f($1)", 6))
            return got
        finally:
            await con.close()

    assert asyncio.run(run()) == [2, 5, 2, 6, 2, 6, 2, 6]


def test_f1_psycopg_keeps_its_prepared_statement_after_a_function_is_defined(px):
    dsn = (
        f"host={px.host} port={px.port} user={AGENT} password={px.token} dbname=app sslmode=disable"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(6):  # prepared on the server from the 5th (prepare_threshold)
            assert conn.execute("SELECT id + %s::int FROM s26d.t", (1,)).fetchone() == (2,)
        conn.execute(DEFINE)
        assert conn.execute("SELECT s26d.f(%s)", (7,)).fetchone() == (7,)
        for _ in range(3):
            assert conn.execute("SELECT id + %s::int FROM s26d.t", (1,)).fetchone() == (2,)


def _both(px, pg, steps) -> tuple[str, str]:
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    with planted.session(px) as c:
        got = run_steps(c, steps)
    return direct, got


def test_f3_a_prepared_rollback_ends_a_failed_transaction_after_dynamic_sql(px, pg):
    steps = [
        (parse("s26rb", "ROLLBACK"), SYNC),
        (query("SELECT public.s26d_dyn()"),),  # code that may run DDL: names to be checked
        (query("BEGIN"),),
        (query("SELECT 1/0"),),
        (bind("", "s26rb"), execute(), SYNC),  # the failed transaction ends here
        (query("SELECT 42"),),
    ]
    direct, got = _both(px, pg, steps)
    assert direct.count("C25P02") == 0 and "ROLLBACK" in direct and "42" in direct
    assert got.count("C25P02") == 0, got[-600:]  # the ROLLBACK ran (before: 25P02, stuck)
    assert "ROLLBACK" in got and "42" in got, got[-600:]
    with planted.session(px) as c:
        assert any(f[:1] == b"D" for f in c.query("SELECT 1"))


def test_f4_pg8000s_unnamed_commit_after_a_function_is_defined_in_the_transaction(px, pg):
    """pg8000: every statement is Parse '' + Describe + Sync, then Bind '' + Execute + Sync
    (the unnamed statement bound in the Sync group after its Parse's)."""

    def unnamed(sql: str) -> list[tuple[bytes, ...]]:
        return [(parse("", sql), frame(b"D", b"S\x00"), SYNC), (bind("", ""), execute(), SYNC)]

    steps = [
        (query("BEGIN"),),
        *unnamed(DEFINE.replace("s26d.f(", "s26d.g(")),
        *unnamed("COMMIT"),
        (query("SELECT 42"),),
    ]
    with planted.session(px) as c:
        got = run_steps(c, steps)
    assert "C42501" not in got, got[-600:]
    assert "COMMIT" in got and "42" in got, got[-600:]
    with RawClient.direct(pg) as c:
        assert c.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'g' AND "
                        "pronamespace = 's26d'::regnamespace") == "1"  # fmt: skip
