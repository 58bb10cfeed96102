"""Savepoints in the audit answer, through the recording proxy and a real PostgreSQL
(session 19): a write undone by ``ROLLBACK TO SAVEPOINT`` is ``rolled back`` in the
auditor's rows, as the server left it; a write before the savepoint was set, or after it was
released, is ``ok``. Judged by the server (the rows that landed) and by the audit rows
(``recorder.audit.derive`` via ``tests.support.recording.audit_rows``), in the style of
red-team round 22's probes."""

from __future__ import annotations

import pytest

from tests.support import outage
from tests.support.outage import errors, until
from tests.support.rawpg import SYNC, bind, describe, execute, parse, query
from tests.support.recording import audit_rows, one_live_session

pytestmark = pytest.mark.timeout(240)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.s19_sp"
PROBE = outage.ProbeTable(TABLE, AGENT, f"read:{TABLE} write:{TABLE}")
rows_with, fresh, client = PROBE.rows_with, PROBE.fresh, PROBE.client


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def ins(v: int) -> str:
    return f"INSERT INTO {TABLE} VALUES ({v})"


def outcomes(rows: list[dict]) -> dict[str, tuple]:
    return {r["text"]: (r["outcome"], r["command_tag"], r["sqlstate"], r["message"]) for r in rows}


def ok(c, sql: str) -> None:
    got = c.query(sql)
    assert not errors(got), (sql, describe(got))


def test_simple_protocol_savepoints_as_the_server_left_them(make_proxy, tmp_path, pg):
    """Nested savepoints, a failed statement recovered by ROLLBACK TO, a RELEASE, COMMIT."""
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, *range(1901, 1908))
    with client(h) as c:
        sid = one_live_session(h)
        ok(c, "BEGIN")
        ok(c, ins(1901))  # before any savepoint: committed
        ok(c, "SAVEPOINT a")
        ok(c, ins(1902))  # undone by ROLLBACK TO a
        ok(c, "SAVEPOINT b")
        ok(c, ins(1903))  # undone by ROLLBACK TO b (and would be by a)
        got = c.query("SELECT 1/0")
        assert [e["C"] for e in errors(got)] == ["22012"], describe(got)
        ok(c, "ROLLBACK TO SAVEPOINT b")
        ok(c, ins(1904))  # after b's rollback, before a's: undone by ROLLBACK TO a
        ok(c, "ROLLBACK TO a")
        ok(c, "SAVEPOINT c")
        ok(c, ins(1905))  # c released: committed
        ok(c, "RELEASE SAVEPOINT c")
        ok(c, ins(1906))  # committed
        ok(c, "COMMIT")
    landed = {v: rows_with(pg, v) for v in range(1901, 1907)}
    assert landed == {1901: 1, 1902: 0, 1903: 0, 1904: 0, 1905: 1, 1906: 1}
    got = outcomes(audit_rows(h, sid))
    for v in range(1901, 1907):
        assert got[ins(v)][0] == ("ok" if landed[v] else "rolled back"), (v, got)
    assert got[ins(1902)][3] == "undone by ROLLBACK TO SAVEPOINT a", got
    assert got[ins(1903)][3] == "undone by ROLLBACK TO SAVEPOINT b", got
    assert got["SELECT 1/0"][:3] == ("error", None, "22012"), got
    assert got["ROLLBACK TO SAVEPOINT b"][:2] == ("ok", "ROLLBACK"), got
    assert got["COMMIT"][:2] == ("ok", "COMMIT"), got


def test_savepoints_in_an_extended_protocol_pipeline(make_proxy, tmp_path, pg):
    """One Sync group: BEGIN, a write, SAVEPOINT, a write, a failing statement and a write the
    server skips; the next group rolls back to the savepoint, writes and commits."""
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, *range(1911, 1916))

    def ext(sql: str) -> list[bytes]:
        return [parse("", sql), bind(), execute()]

    with client(h) as c:
        sid = one_live_session(h)
        c.send(*ext("BEGIN"), *ext(ins(1911)), *ext("SAVEPOINT s"), *ext(ins(1912)),
               *ext(f"INSERT INTO {TABLE} VALUES (1 / 0)"), *ext(ins(1913)), SYNC)
        got = until(c, b"Z")
        assert [e["C"] for e in errors(got)] == ["22012"] and got[-1][5:6] == b"E", describe(got)
        c.send(*ext("ROLLBACK TO SAVEPOINT s"), *ext(ins(1914)), *ext("COMMIT"), SYNC)
        got = until(c, b"Z")
        assert not errors(got) and got[-1][5:6] == b"I", describe(got)
        # a second block: a savepoint in a group of its own, then the block rolled back whole
        c.send(*ext("BEGIN"), *ext("SAVEPOINT s"), *ext(ins(1915)), *ext("RELEASE s"), SYNC)
        assert not errors(until(c, b"Z"))
        ok(c, "ROLLBACK")
    landed = {v: rows_with(pg, v) for v in range(1911, 1916)}
    assert landed == {1911: 1, 1912: 0, 1913: 0, 1914: 1, 1915: 0}
    got = outcomes(audit_rows(h, sid))
    assert got[ins(1911)][0] == "ok", got
    assert got[ins(1912)][:2] == ("rolled back", "INSERT 0 1"), got
    assert got[ins(1912)][3] == "undone by ROLLBACK TO SAVEPOINT s", got
    assert ins(1913) not in got, got  # skipped after the error: never ran
    assert got[ins(1914)][0] == "ok", got
    assert got[ins(1915)][0] == "rolled back", got  # by the block's ROLLBACK, not the RELEASE
    assert "ended without COMMIT" in got[ins(1915)][3], got


def test_a_multi_statement_query_with_a_savepoint(make_proxy, tmp_path, pg):
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, 1921, 1922, 1923)
    whole = f"SAVEPOINT a; {ins(1921)}; ROLLBACK TO a"
    part = f"{ins(1922)}; SAVEPOINT b; {ins(1923)}"
    with client(h) as c:
        sid = one_live_session(h)
        ok(c, "BEGIN")
        ok(c, whole)
        ok(c, part)
        ok(c, "ROLLBACK TO b")
        ok(c, "COMMIT")
    assert [rows_with(pg, v) for v in (1921, 1922, 1923)] == [0, 1, 0]
    got = outcomes(audit_rows(h, sid))
    assert got[whole][0] == "rolled back", got
    assert got[part][0] == "ok" and "statement 3 (INSERT 0 1)" in got[part][3], got


def test_query_frames_alone_are_enough(make_proxy, tmp_path, pg):
    """The same through Query messages pipelined in one packet (answers paired in order)."""
    h = PROBE.proxy(make_proxy, tmp_path)
    fresh(pg, 1931, 1932)
    with client(h) as c:
        sid = one_live_session(h)
        c.send(query("BEGIN"), query("SAVEPOINT x"), query(ins(1931)), query("ROLLBACK TO x"),
               query(ins(1932)), query("COMMIT"))
        got = until(c, b"Z", 6)
        assert not errors(got), describe(got)
    assert [rows_with(pg, v) for v in (1931, 1932)] == [0, 1]
    got = outcomes(audit_rows(h, sid))
    assert (got[ins(1931)][0], got[ins(1932)][0]) == ("rolled back", "ok"), got
