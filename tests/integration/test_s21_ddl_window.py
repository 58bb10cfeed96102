"""Code another grant's DDL attaches to a table, seen before a write runs it (session 21).

A write to a table with a trigger (or rule, or a CHECK calling a function) runs code the
writing grant never chose; such a write's errors and notices are withheld
(``StatementPolicy.writes_unreadable``, ``proxy.redaction``). What has a trigger is read
from the catalog snapshot. DDL through the proxy made it stale, but a write went on deciding
on it; and the reload DDL starts runs beside the DDL itself, so DDL in a transaction block
(a migration's) was not in the snapshot after it committed, for up to the refresh interval
(300 s). Now the end of a transaction that ran DDL starts a reload the snapshot waits for
(``settle_ddl``), and a write decided on a stale snapshot waits for the reload once.

Grants (agent ``s21-bot``): ``base`` = ``read:s21s.* write:s21s.*`` (the writer: runs no
function); ``ddl`` = the same plus ``ddl:s21s.* execute:public.s21_loud`` (the
migrator: chose the trigger's function).

Planted: ``s21x.vault`` outside both grants, holding the marker; ``public.s21_loud()`` a
trigger function raising it; ``s21s.t`` (empty, no trigger). Each test attaches the trigger
through the migrator's grant, the writer writes, the trigger is dropped again.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(120)

AGENT = "s21-bot"
SCOPES = "read:s21s.* write:s21s.*"
GRANTS = {"ddl": "read:s21s.* write:s21s.* ddl:s21s.* execute:public.s21_loud"}
MARKER = "S21-TRIGGERED-4c1e"

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s21s; CREATE SCHEMA s21x;\n"
    "CREATE TABLE s21x.vault (val text);\n"
    f"INSERT INTO s21x.vault VALUES ('{MARKER}');\n"
    "CREATE FUNCTION public.s21_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM s21x.vault); END $$;\n"
    "CREATE TABLE s21s.t (k int);\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS s21s CASCADE; DROP SCHEMA IF EXISTS s21x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.s21_loud();\n"
)
ATTACH = (
    "CREATE TRIGGER s21_trg BEFORE INSERT OR UPDATE ON s21s.t "
    "FOR EACH ROW EXECUTE FUNCTION public.s21_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS s21_trg ON s21s.t"
WRITE = "INSERT INTO s21s.t VALUES (1)"


@pytest.fixture(scope="module")
def proxy(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s21", agent=AGENT, scopes=SCOPES, setup=SETUP,
                         teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


@pytest.fixture
def migrator(proxy):
    """A session of the migrator's grant; the trigger is detached through it afterwards."""
    with planted.session(proxy, proxy.tokens["ddl"]) as c:
        yield c
        assert "error" not in planted.result(c.query(DETACH))


def test_the_trigger_shows_the_marker_directly(pg, migrator):
    """The probe proves something: as the upstream login the write shows the marker."""
    assert "error" not in planted.result(migrator.query(ATTACH))
    with RawClient.direct(pg) as c:
        got = planted.text(c.query(WRITE))
    assert shows(got, MARKER), got[-300:]


@pytest.mark.parametrize("mode", sorted(planted.RAW_MODES))
def test_trigger_made_in_a_committed_block_is_seen(proxy, migrator, mode):
    """A migration's block: the reload its DDL started ran before it committed (and saw
    no trigger); the block's end starts another, and the write waits for it."""
    for sql in ("BEGIN", ATTACH, "COMMIT"):
        assert "error" not in planted.result(migrator.query(sql)), sql
    with planted.session(proxy) as writer:
        got = planted.text(planted.RAW_MODES[mode](writer, WRITE))
    assert "P0001" in got, got[-300:]  # the trigger ran
    assert not shows(got, MARKER), ("LEAK", mode, got[-400:])


@pytest.mark.parametrize("mode", sorted(planted.RAW_MODES))
def test_write_right_after_the_ddl_waits_for_its_reload(proxy, migrator, mode):
    """The writer's session is open already and writes the moment the DDL is answered."""
    with planted.session(proxy) as writer:
        assert "error" not in planted.result(writer.query("SELECT 1"))
        assert "error" not in planted.result(migrator.query(ATTACH))
        got = planted.text(planted.RAW_MODES[mode](writer, WRITE))
    assert "P0001" in got, got[-300:]
    assert not shows(got, MARKER), ("LEAK", mode, got[-400:])


def test_statement_prepared_before_the_trigger(proxy, migrator):
    """Parsed while the table had no trigger, bound after another grant attached one in a
    block: decided again at its Bind, on a snapshot that knows the trigger."""

    async def run() -> str:
        conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user=AGENT,
                                     password=proxy.token, database="app", ssl=False,
                                     timeout=10)  # fmt: skip
        try:
            stmt = await conn.prepare("INSERT INTO s21s.t VALUES ($1)")
            await stmt.fetch(1)  # no trigger yet: it runs
            for sql in ("BEGIN", ATTACH, "COMMIT"):
                assert "error" not in planted.result(migrator.query(sql)), sql
            try:
                await stmt.fetch(2)
            except asyncpg.PostgresError as exc:
                return f"{exc.sqlstate}: {exc} {exc.detail} {exc.hint}"
            return "ran"
        finally:
            await conn.close()

    got = asyncio.run(run())
    assert got.startswith("P0001"), got
    assert not shows(got, MARKER), ("LEAK", got)

