"""Drivers' patterns where the database holds code that may leave a cursor open
(``Snapshot.portal_code``; policy/portals.py), found by the drivers' differential of
session 32 with such a function planted: what the client gets is what Postgres gives.

* psycopg's ``test_no_hold``: a cursor its COMMIT closed, fetched again, is an
  ``InvalidCursorName`` (34000) directly; the proxy refuses it (the name may be a cursor
  code opened since) with the same SQLSTATE and says why.
* psycopg's ``test_discard_clears_state`` (``prepare_threshold=0``): a prepared ``DISCARD
  ALL`` (or ``DEALLOCATE ALL``) bound and executed: deciding it again at its Bind forgot
  every statement, itself too, before the server ran it, so its own Execute was refused as
  a portal of a statement not known.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support import rawpg as r

pytestmark = pytest.mark.timeout(300)

SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA s32t;
CREATE TABLE s32t.t (a int);
INSERT INTO s32t.t VALUES (1), (2);
CREATE FUNCTION s32t.report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor;
BEGIN
  OPEN c FOR SELECT a FROM s32t.t;
  RETURN c;
END $$;
RESET ROLE;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s32t", agent="s32t-bot",
                         scopes="read:s32t.t execute:s32t.report", setup=SETUP,
                         teardown="DROP SCHEMA IF EXISTS s32t CASCADE;") as h:  # fmt: skip
        yield h


def _no_hold(c) -> tuple[str, str]:
    c.query("BEGIN")
    c.send(m.parse("", 'DECLARE "s32foo" CURSOR FOR SELECT a FROM s32t.t'), r.bind(),
           r.frame(b"D", b"P\x00"), r.execute(), m.SYNC)  # fmt: skip
    declared = planted.text(c.frames_until_ready())
    first = planted.text(c.query('FETCH FORWARD 1 FROM "s32foo"'))
    c.query("COMMIT")
    again = planted.text(c.query('FETCH FORWARD 1 FROM "s32foo"'))
    assert "DECLARE CURSOR" in declared and "FETCH 1" in first, (declared, first)
    return first, again


def test_a_cursor_its_commit_closed_is_undefined_as_directly(pg, px):
    with r.RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness")
        _, direct = _no_hold(c)
    with planted.session(px) as c:
        _, got = _no_hold(c)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    assert "C34000" in direct, direct
    assert "C34000" in got and "rule deny.cursor" in got, got


@pytest.mark.parametrize("sql", ["DISCARD ALL", "DEALLOCATE ALL"])
def test_a_prepared_discard_all_runs_and_the_session_goes_on(px, sql):
    with planted.session(px) as c:
        c.send(m.parse("s32_one", "SELECT 1"), m.parse("s32_all", sql), m.SYNC)
        assert not planted.refused_by_proxy(planted.text(c.frames_until_ready()))
        c.send(r.bind(statement="s32_all"), r.frame(b"D", b"P\x00"), r.execute(), m.SYNC)
        ran = planted.text(c.frames_until_ready())
        assert sql in ran and "SERROR" not in ran, ran
        # (the server forgot s32_one too: the client prepares it again, as directly)
        c.send(m.parse("s32_one", "SELECT 1"), r.bind(statement="s32_one"), r.execute(), m.SYNC)
        again = planted.text(c.frames_until_ready())
        assert "SELECT 1" in again and "SERROR" not in again, again
