"""Red-team round 44, the cost side: ordinary driver patterns where DDL code exists but no
names code (what 434e1e4 and 732d32b must not break).

A grant of ``r44k.*`` (read, write, DDL) and ``execute`` on ``r44k.r44k_ddl()`` (plpgsql
``CREATE TABLE IF NOT EXISTS``: DDL code, not names code). asyncpg with its statement cache,
outside and inside a transaction: a cached statement, then ``fetchrow`` / ``fetchval`` (an
Execute with a row limit) of the DDL-code call and of DDL statements, then the cached
statement again, after the commit too. psycopg with every statement prepared
(``prepare_threshold=0``): a transaction with the call, DDL and the prepared statement
between, then a pipeline. All held: no statement cache lost, no refusal.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "r44k-bot"
SCOPES = "read:r44k.* write:r44k.* ddl:r44k.* execute:r44k.r44k_ddl"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r44k;\n"
    "CREATE TABLE r44k.t (id int, note text); INSERT INTO r44k.t VALUES (1, 'one'), (2, 'two');\n"
    # DDL code, not names code
    "CREATE FUNCTION r44k.r44k_ddl() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "CREATE TABLE IF NOT EXISTS r44k.made (id int); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = "DROP SCHEMA IF EXISTS r44k CASCADE;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r44k", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


async def _asyncpg(px, in_tx: bool) -> list:
    conn = await asyncpg.connect(host=px.host, port=px.port, user=px.agent, password=px.token,
                                 database="app", ssl=False, timeout=10)  # fmt: skip
    out = []
    try:
        q = "SELECT note FROM r44k.t WHERE id = $1"
        out.append(await conn.fetchval(q, 1))
        tx = conn.transaction() if in_tx else None
        if tx is not None:
            await tx.start()
        out.append(await conn.fetchrow("SELECT r44k.r44k_ddl()"))
        out.append(await conn.fetchval("SELECT r44k.r44k_ddl()"))
        out.append(await conn.fetchval("CREATE TABLE IF NOT EXISTS r44k.made2 (id int)"))
        out.append(await conn.fetchrow(q, 2))
        out.append(await conn.fetchval("DROP TABLE IF EXISTS r44k.made2"))
        out.append(await conn.fetchval(q, 1))
        if tx is not None:
            await tx.commit()
        out.append(await conn.fetchval(q, 2))
        out.append(await conn.fetchrow("SELECT r44k.r44k_ddl()"))
        out.append(await conn.fetchval(q, 1))
    finally:
        await conn.close()
    return out


@pytest.mark.parametrize("in_tx", [False, True], ids=["autocommit", "transaction"])
def test_asyncpg_fetchrow_of_ddl_and_ddl_code(px, in_tx):
    out = asyncio.run(_asyncpg(px, in_tx))
    assert out[0] == "one" and out[-1] == "one" and out[-3] == "two", out


def test_psycopg_prepared_in_transaction(px):
    dsn = f"host={px.host} port={px.port} user={px.agent} password={px.token} dbname=app sslmode=disable"
    with psycopg.connect(dsn, prepare_threshold=0) as conn:
        q = "SELECT note FROM r44k.t WHERE id = %s"
        assert conn.execute(q, (1,)).fetchone() == ("one",)
        with conn.transaction():
            assert conn.execute("SELECT r44k.r44k_ddl()").fetchone() == (1,)
            assert conn.execute(q, (2,)).fetchone() == ("two",)
            conn.execute("CREATE TABLE IF NOT EXISTS r44k.made3 (id int)")
            assert conn.execute(q, (1,)).fetchone() == ("one",)
            conn.execute("DROP TABLE r44k.made3")
        assert conn.execute(q, (2,)).fetchone() == ("two",)
        with conn.pipeline():
            cur = conn.execute(q, (1,))
            conn.execute("SELECT r44k.r44k_ddl()")
            cur2 = conn.execute(q, (2,))
        assert cur.fetchone() == ("one",) and cur2.fetchone() == ("two",)
