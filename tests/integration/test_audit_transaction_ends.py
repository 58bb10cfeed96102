"""Transactions the server undoes without a block ending at ReadyForQuery, in the audit
answer, through the recording proxy and a real PostgreSQL: ``ROLLBACK AND CHAIN`` / ``ABORT
AND CHAIN`` (ReadyForQuery stays 'T'), a ``ROLLBACK`` among one Query's statements (an
explicit block begun in it, or the implicit block PostgreSQL warns of and rolls back), an
error in an implicit block (a Query's, a Sync group's); ``COMMIT AND CHAIN`` commits, and a
``COMMIT`` of a failed block answers ``ROLLBACK``. Judged by the server (the rows that
landed) and by the audit rows (``recorder.audit.derive``), as tests/integration/
test_s19_audit_savepoints.py does for savepoints."""

from __future__ import annotations

import pytest

from tests.support import outage
from tests.support.outage import errors, until
from tests.support.rawpg import SYNC, bind, describe, execute, parse
from tests.support.recording import audit_rows, one_live_session

pytestmark = pytest.mark.timeout(240)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.s20_txend"
PROBE = outage.ProbeTable(TABLE, AGENT, f"read:{TABLE} write:{TABLE}")
rows_with, fresh, client = PROBE.rows_with, PROBE.fresh, PROBE.client
ROLLBACK = "its transaction block ended without COMMIT (ROLLBACK)"


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def ins(v: int) -> str:
    return f"INSERT INTO {TABLE} VALUES ({v})"


def outcomes(rows: list[dict]) -> dict[str, tuple]:
    return {r["text"]: (r["outcome"], r["command_tag"], r["sqlstate"], r["message"]) for r in rows}


def run(c, sql: str, fails: str | None = None) -> None:
    got = c.query(sql)
    assert [e["C"] for e in errors(got)] == ([fails] if fails else []), (sql, describe(got))


def test_and_chain(make_proxy, tmp_path, pg):
    h = PROBE.proxy(make_proxy, tmp_path)
    values = range(2001, 2009)
    fresh(pg, *values)
    with client(h) as c:
        sid = one_live_session(h)
        for sql in (
            "BEGIN",
            ins(2001),
            "ROLLBACK AND CHAIN",
            ins(2002),
            "COMMIT",  # 1 undone
            "BEGIN",
            ins(2003),
            "ABORT AND CHAIN",
            ins(2004),
            "ROLLBACK",  # both undone
            "BEGIN",
            ins(2005),
            "COMMIT AND CHAIN",
            ins(2006),
            "ROLLBACK",
        ):  # 6 undone
            run(c, sql)
        run(c, "BEGIN")
        run(c, ins(2007))  # undone: its block failed, COMMIT AND CHAIN answers ROLLBACK
        run(c, "SELECT 1/0", fails="22012")
        got = c.query("COMMIT AND CHAIN")
        assert b"\rROLLBACK\x00" in b"".join(got) and got[-1][5:6] == b"T", describe(got)
        run(c, ins(2008))
        run(c, "COMMIT")
    landed = {v: rows_with(pg, v) for v in values}
    assert landed == {2001: 0, 2002: 1, 2003: 0, 2004: 0, 2005: 1, 2006: 0, 2007: 0, 2008: 1}
    got = outcomes(audit_rows(h, sid))
    for v in values:
        assert got[ins(v)][0] == ("ok" if landed[v] else "rolled back"), (v, got)
        assert got[ins(v)][3] == (None if landed[v] else ROLLBACK), (v, got)


def test_a_rollback_among_a_querys_statements(make_proxy, tmp_path, pg):
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, *range(2011, 2021))
    whole = f"BEGIN; {ins(2011)}; ROLLBACK; SELECT 1"
    implicit = f"{ins(2012)}; ROLLBACK"  # PostgreSQL: WARNING, no transaction in progress
    after = f"{ins(2013)}; ROLLBACK; {ins(2014)}"
    committed = f"{ins(2015)}; COMMIT; {ins(2016)}; ROLLBACK"
    ends_block = f"{ins(2018)}; ROLLBACK"
    with client(h) as c:
        sid = one_live_session(h)
        for sql in (whole, implicit, after, committed, "BEGIN", ins(2017), ends_block):
            run(c, sql)
    assert [rows_with(pg, v) for v in range(2011, 2019)] == [0, 0, 0, 1, 1, 0, 0, 0]
    got = outcomes(audit_rows(h, sid))
    assert got[whole][0::3] == ("rolled back", ROLLBACK), got
    assert got[implicit][0::3] == ("rolled back", ROLLBACK), got
    undone = "undone by the transaction's ROLLBACK"
    assert got[after][0::3] == ("ok", f"partly rolled back: statement 1 (INSERT 0 1) {undone}")
    assert got[committed][0::3] == (
        "ok",
        f"partly rolled back: statement 3 (INSERT 0 1) {undone}",
    ), got
    assert got[ins(2017)][0::3] == ("rolled back", ROLLBACK), got  # the Query's ROLLBACK ended it
    assert got[ends_block][0::3] == ("rolled back", ROLLBACK), got


def test_an_error_ends_an_implicit_block(make_proxy, tmp_path, pg):
    """A Query's statements, and a Sync group's, form one transaction: an error in it undoes
    what ran before it (since a COMMIT among them); a COMMIT of a failed block answers
    ROLLBACK."""
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, *range(2021, 2031))
    one = f"{ins(2021)}; SELECT 1/0"
    after_commit = f"{ins(2022)}; COMMIT; {ins(2023)}; SELECT 1/0"

    def ext(sql: str) -> list[bytes]:
        return [parse("", sql), bind(), execute()]

    with client(h) as c:
        sid = one_live_session(h)
        run(c, one, fails="22012")
        run(c, after_commit, fails="22012")
        c.send(*ext(ins(2024)), *ext(f"INSERT INTO {TABLE} VALUES (1 / 0)"), *ext(ins(2025)), SYNC)
        got = until(c, b"Z")
        assert [e["C"] for e in errors(got)] == ["22012"] and got[-1][5:6] == b"I", describe(got)
        c.send(*ext(ins(2026)), *ext("ROLLBACK"), *ext(ins(2027)), SYNC)
        got = until(c, b"Z")
        assert not errors(got) and got[-1][5:6] == b"I", describe(got)
        run(c, "BEGIN")
        run(c, ins(2028))
        run(c, "SELECT 1/0", fails="22012")
        got = c.query("COMMIT")
        assert b"\rROLLBACK\x00" in b"".join(got), describe(got)
    landed = {v: rows_with(pg, v) for v in range(2021, 2029)}
    assert landed == {2021: 0, 2022: 1, 2023: 0, 2024: 0, 2025: 0, 2026: 0, 2027: 1, 2028: 0}
    got = outcomes(audit_rows(h, sid))
    by_error = "undone by the error that ended the transaction"
    # an error row's message is the server's, the answer's note its own (session 37, round 2)
    notes = {r["text"]: r["note"] for r in audit_rows(h, sid)}
    assert got[one][0::3] == ("error", "division by zero"), got
    assert notes[one] == f"statement 1 (INSERT 0 1) {by_error}", notes
    assert got[after_commit][0::3] == ("error", "division by zero"), got
    assert notes[after_commit] == f"statement 3 (INSERT 0 1) {by_error}", notes  # (not 1: the
    # COMMIT committed it)
    assert got[ins(2024)][0::3] == (
        "rolled back",
        "its transaction block ended without COMMIT (an error)",
    ), got
    assert ins(2025) not in got, got  # skipped after the error: never ran
    assert (got[ins(2026)][0], got[ins(2027)][0]) == ("rolled back", "ok"), got
    assert got[ins(2028)][0::3] == ("rolled back", ROLLBACK), got
    assert got["COMMIT"][:2] == ("ok", "ROLLBACK"), got
