"""A refused PREPARE TRANSACTION ends the client's transaction block as PostgreSQL's own
failing one does (session 18: the block stayed open and failed; postgres.js kept its pooled
connection in it, PostgreSQL's regression suite's temp.sql ran on in 25P02s)."""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient, describe, error_fields, query

pytestmark = pytest.mark.timeout(60)

AGENT = "twophase-bot"
TABLE = "public.tp_rows"
SETUP = f"SET ROLE pgwitness; CREATE TABLE {TABLE} (v int)"
TEARDOWN = f"DROP TABLE IF EXISTS {TABLE}"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "twophase", agent=AGENT,
                         scopes=f"read:{TABLE} write:{TABLE}", setup=SETUP,
                         teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _status(frames: list[bytes]) -> bytes:
    assert frames and frames[-1][:1] == b"Z", describe(frames)
    return frames[-1][5:6]


BLOCKS = {
    "open": f"INSERT INTO {TABLE} VALUES (1)",
    "failed": "SELECT 1/0",
}


@pytest.mark.parametrize("block", list(BLOCKS))
def test_a_refused_prepare_transaction_ends_the_block_as_postgres_does(px, pg, block):
    direct_status = []
    with RawClient.direct(pg) as c:  # max_prepared_transactions = 0: PREPARE fails there
        for sql in ("BEGIN", BLOCKS[block], "PREPARE TRANSACTION 'tp_x'"):
            got = c.query(sql)
        direct_status.append(_status(got))
        assert _status(c.query("SELECT 1")) == b"I"
    with planted.session(px) as c:
        for sql in ("BEGIN", BLOCKS[block]):
            c.query(sql)
        got = c.query("PREPARE TRANSACTION 'tp_x'")
        errs = [error_fields(f) for f in got if f[:1] == b"E"]
        assert [e["C"] for e in errs] == ["42501"], describe(got)
        assert "two-phase" in errs[0]["M"], errs
        assert [f[:1] for f in got] == [b"E", b"Z"], describe(got)  # no ROLLBACK of ours
        assert [_status(got)] == direct_status == [b"I"]
        after = c.query("SELECT 1")
        assert _status(after) == b"I" and not [f for f in after if f[:1] == b"E"]
    assert pg.psql(f"SELECT count(*) FROM {TABLE}", db="app").strip() == "0"  # rolled back
    assert pg.psql("SELECT count(*) FROM pg_prepared_xacts", db="app").strip() == "0"


def test_pipelined_behind_another_statement_it_is_refused_as_any_statement(px):
    """With something in flight the block the refusal lands in is not known: our error
    only, as for any refused statement (the block stays as the server has it)."""
    with planted.session(px) as c:
        c.query("BEGIN")
        c.send(query("SELECT 1"), query("PREPARE TRANSACTION 'tp_y'"))
        first, second = c.frames_until_ready(), c.frames_until_ready()
        assert _status(first) == b"T"
        assert [error_fields(f)["C"] for f in second if f[:1] == b"E"] == ["42501"]
        assert _status(second) == b"E"
        c.query("ROLLBACK")
