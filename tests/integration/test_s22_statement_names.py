"""Which statement the server holds under a name, as asyncpg uses them (session 22: the
drivers' differential of asyncpg's own suite, faults b1 and b2), and names the server
truncates (red-team round 36, 3: tests/integration/test_redteam_r36_fresh.py attacks them).

asyncpg prepares with Parse, Describe, Flush (no Sync) and binds after that answer. The
proxy took a name as confirmed only at a ReadyForQuery with nothing in flight, so:

* b1: a statement whose first execution failed (its Parse and Bind one Sync group) was
  dropped with the error, and after any catalog change every later use of asyncpg's cached
  statement was refused (``deny.catalog``: "prepare it again"; asyncpg does not);
* b2: the unnamed statement bound after a catalog change that landed between its Parse's
  answer and its Bind was refused ("before the server answered the message that prepared
  it"), although it had answered.

Now each ParseComplete confirms its Parse (``Relay._parses``, ``parse_answered``)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(120)

AGENT = "s22n-bot"
SCOPES = "read:s22n.* write:s22n.* ddl:s22n.*"
SETUP = "SET ROLE pgwitness; CREATE SCHEMA s22n; RESET ROLE;"
TEARDOWN = "DROP SCHEMA IF EXISTS s22n CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s22n", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


async def _connect(px, **kw) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=px.host, port=px.port, user=px.agent, password=px.token, database="app",
        ssl=False, timeout=10, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("first", [2, 0], ids=["first-run-succeeds", "first-run-fails"])
def test_a_cached_statement_survives_its_first_error_and_a_catalog_change(px, first):
    async def run():
        con = await _connect(px)
        try:
            try:
                await con.fetchval("SELECT 10 / $1::int", first)
            except asyncpg.DivisionByZeroError:
                assert first == 0
            await con.execute("CREATE TABLE s22n.other (x int)")  # a catalog change
            try:
                return [await con.fetchval("SELECT 10 / $1::int", 5) for _ in range(3)]
            finally:
                await con.execute("DROP TABLE s22n.other")
        finally:
            await con.close()

    assert asyncio.run(run()) == [2, 2, 2]


@pytest.mark.parametrize("name", ["", "s22n_new"])
def test_a_bind_after_the_parse_was_answered_is_decided_on_its_text(px, name):
    async def run():
        con = await _connect(px, max_cacheable_statement_size=1)  # nothing cached: ''
        other = await _connect(px)
        try:
            assert await con.fetchval("SELECT $1::int + 1", 1) == 2  # '' used once
            proto = con._protocol  # what Connection.fetchval does, with DDL between
            state = await proto.prepare(name, "SELECT $1::int * 10", None,
                                        record_class=asyncpg.Record)  # fmt: skip
            state._init_types()
            state._init_codecs()
            await other.execute("CREATE TABLE s22n.uc (x int)")  # elsewhere: a catalog change
            await asyncio.to_thread(planted.wait_catalog_quiet, px, 0.5)  # the reload lands
            rows, _, _ = await proto.bind_execute(state, (4,), "", 0, True, None)
            return rows[0][0], await con.fetchval("SELECT $1::int + 1", 1)
        finally:
            await other.execute("DROP TABLE IF EXISTS s22n.uc")
            await con.close()
            await other.close()

    assert asyncio.run(run()) == (40, 2)


def test_names_the_server_would_truncate(px):
    """A protocol name longer than 63 bytes (at 4 bytes for a character outside ASCII) is
    refused, so no two names the policy tells apart are one statement to the server. An
    SQL name is truncated by PostgreSQL's own parser (pglast) as by the server: one name
    to both; one that might be cut otherwise in another server encoding is refused."""
    long = "s" * 64

    async def run():
        con = await _connect(px, statement_cache_size=0)
        out = []
        try:
            try:
                await con._protocol.prepare(long, "SELECT 1", None, record_class=asyncpg.Record)
                out.append("ran")
            except asyncpg.PostgresError as exc:
                out.append(exc.sqlstate)
            out.append(await con.fetchval("SELECT 1"))  # the session goes on
            for sql in ("PREPARE " + "\u00e9" * 16 + " AS SELECT 1", f"PREPARE {long} AS SELECT 2"):
                try:
                    await con.execute(sql)
                    out.append("ran")
                except asyncpg.PostgresError as exc:
                    out.append(exc.sqlstate)
            out.append(await con.fetchval("EXECUTE " + "s" * 63))  # the one truncated
            await con.execute("DEALLOCATE " + long)
        finally:
            await con.close()
        return out

    assert asyncio.run(run()) == ["42501", 1, "42501", "ran", 2]


@pytest.mark.parametrize("ddl", ["other-session", "same-session"])
def test_a_large_bind_after_a_catalog_change(px, ddl):
    """A Bind of 256 KiB and more arrives in parts; after a catalog change it is decided
    again on its statement's text, so its values are not read: the session went on to end
    ("malformed Bind message: not whole"; asyncpg's test_standard_codecs)."""

    async def run():
        con = await _connect(px)
        try:
            st = await con.prepare("SELECT $1::bytea")
            assert len(await st.fetchval(b"x")) == 1
            target = await _connect(px) if ddl == "other-session" else con
            await target.execute("CREATE TABLE s22n.big (a int); DROP TABLE s22n.big")
            if target is not con:
                await target.close()
            await asyncio.to_thread(planted.wait_catalog_quiet, px, 0.5)  # to be bound again
            return len(await st.fetchval(b"f" * (1 << 20))), await con.fetchval("SELECT 1")
        finally:
            await con.close()

    assert asyncio.run(run()) == (1 << 20, 1)
