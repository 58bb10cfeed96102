"""A session that ends inside a transaction, in the audit answer, through the recording proxy
and a real PostgreSQL: the server rolls back the transaction a session leaves open, however
the session ends (the client's Terminate, a disconnect, the proxy ending it for a revoked
grant), an explicit block ('T' or failed 'E') or the implicit one of Executes not yet
followed by a Sync. The proxy keeps a grant's upstream session for reuse only when it is idle
outside any transaction (proxy/upstream_pool.py): the next session of the grant finds
nothing of the open transaction. A recording read before the session's end cannot say how
the transaction ends: its statements are of unknown outcome. Judged by the server (the rows
that landed) and by the audit rows (``recorder.audit.derive``)."""

from __future__ import annotations

import pytest

from recorder.audit.derive import SessionFacts
from recorder.replay import iter_records
from tests.support import outage
from tests.support.outage import errors, until
from tests.support.rawpg import FLUSH, bind, describe, execute, parse
from tests.support.recording import audit_rows, grants, issue_grant, one_live_session, recording
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(240)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.s21_sessend"
SCOPES = f"read:{TABLE} write:{TABLE}"
PROBE = outage.ProbeTable(TABLE, AGENT, SCOPES)
rows_with, fresh, client = PROBE.rows_with, PROBE.fresh, PROBE.client
BY_END = "its transaction was still open when the session ended ({}): the server rolled it back"


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def ins(v: int) -> str:
    return f"INSERT INTO {TABLE} VALUES ({v})"


def run(c, sql: str, fails: str | None = None, status: bytes = b"T") -> None:
    got = c.query(sql)
    assert [e["C"] for e in errors(got)] == ([fails] if fails else []), (sql, describe(got))
    assert got[-1][5:6] == status, (sql, describe(got))


def outcomes(h, sid: str) -> dict[str, tuple]:
    return {r["text"]: (r["outcome"], r["message"]) for r in audit_rows(h, sid)}


def proxy_with_grant(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))  # upstream reuse on (default)
    h.grant, h.token = issue_grant(h, scopes=SCOPES)
    h.tmp = tmp_path
    return h


def test_terminate_or_disconnect_inside_a_block(make_proxy, tmp_path, pg):
    h = proxy_with_grant(make_proxy, tmp_path)
    fresh(pg, 2201, 2202, 2203, 2204)
    with client(h) as c:  # closing sends Terminate
        terminated = one_live_session(h)
        run(c, "BEGIN")
        run(c, ins(2201))
    c = client(h)
    c.terminate_on_close = False  # the socket closed, no Terminate
    try:
        failed = wait_for(lambda: [s for s in _live(h) if s != terminated] or None)[0]
        run(c, "BEGIN")
        run(c, ins(2202))
        run(c, "SELECT 1/0", fails="22012", status=b"E")
    finally:
        c.close()
    with client(h) as c:  # the grant's next session: nothing of the open transactions
        run(c, ins(2203), status=b"I")
        assert b"D" not in {f[:1] for f in c.query(f"SELECT 1 FROM {TABLE} WHERE v < 2203")}
    assert [rows_with(pg, v) for v in (2201, 2202, 2203)] == [0, 0, 1]
    got = outcomes(h, terminated)
    assert got[ins(2201)] == ("rolled back", BY_END.format("terminate")), got
    got = outcomes(h, failed)
    assert got[ins(2202)] == ("rolled back", BY_END.format("disconnect")), got
    assert got["SELECT 1/0"][0] == "error", got


def _live(h) -> list[str]:
    from tests.support.recording import live_session_ids

    return live_session_ids(h)


def test_executes_not_followed_by_a_sync_are_rolled_back_at_the_end(make_proxy, tmp_path, pg):
    """The extended protocol's implicit transaction: nothing is committed before Sync."""
    h = proxy_with_grant(make_proxy, tmp_path)
    fresh(pg, 2211)
    with client(h) as c:
        sid = one_live_session(h)
        c.send(parse("", ins(2211)), bind(), execute(), FLUSH)
        got = until(c, b"C")
        assert not errors(got), describe(got)
    assert rows_with(pg, 2211) == 0
    got = outcomes(h, sid)
    assert got[ins(2211)] == ("rolled back", BY_END.format("terminate")), got


def test_the_proxy_ending_the_session_for_a_revoked_grant(make_proxy, tmp_path, pg):
    h = proxy_with_grant(make_proxy, tmp_path)
    fresh(pg, 2221)
    c = client(h)
    try:
        sid = one_live_session(h)
        run(c, "BEGIN")
        run(c, ins(2221))
        h.call(h.runtime.store.revoke(h.grant.id, by="security"))
        wait_for(lambda: not _live(h), 10.0, "the proxy to end the revoked grant's session")
    finally:
        c.close()
    assert rows_with(pg, 2221) == 0
    (outcome, message) = outcomes(h, sid)[ins(2221)]
    assert outcome == "rolled back", message
    assert message.startswith("its transaction was still open when the session ended (revoked")
    assert message.endswith("): the server rolled it back"), message


def test_a_recording_read_before_the_end_does_not_say_rolled_back(make_proxy, tmp_path, pg):
    h = proxy_with_grant(make_proxy, tmp_path)
    fresh(pg, 2231)
    store = h.runtime.recorder.store
    with client(h) as c:
        sid = one_live_session(h)
        run(c, "BEGIN")
        run(c, ins(2231))

        def derived():  # the chunks stored so far (chunk_max_seconds 0.2), the block open
            facts = SessionFacts(sid)
            for r in iter_records(store, sid):
                facts.feed(r)
            facts.finish()
            rows = {r["text"]: r for r in facts.statements}
            return rows if ins(2231) in rows else None

        row = wait_for(derived, 10.0, "the INSERT's answer stored")[ins(2231)]
        assert (row["outcome"], row["message"]) == (
            "unknown",
            "its transaction was still open where the recording ends (no session end is "
            "recorded): whether it committed is not known",
        )
    assert rows_with(pg, 2231) == 0
    assert outcomes(h, sid)[ins(2231)] == ("rolled back", BY_END.format("terminate"))
