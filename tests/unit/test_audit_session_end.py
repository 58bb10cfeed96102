"""recorder.audit.derive and a session that ends inside a transaction: PostgreSQL rolls back
the transaction a session leaves open (an explicit block, 'T' or failed 'E', or the
implicit one of Executes no Sync followed), so its statements say ``rolled back`` when the
recording has the session's end and the server owed the client nothing; a recording without
its end (truncated, or read while the session lives), or one whose end came with messages
unanswered (a COMMIT in flight may have committed), says ``unknown``. Judged on hand-made
recordings (tests/integration/test_audit_session_end.py runs the same through the proxy)."""

from __future__ import annotations

import io

from devtools.testing import bind, command_complete, execute, frame, parse
from recorder.audit.answer import write_text
from recorder.records import dump_json
from tests.support.audit_recordings import BC, PC, Conn, Session, answer_of

FLUSH = frame(b"H", b"")


def ins(v: int) -> str:
    return f"INSERT INTO t VALUES ({v})"


def by_end(cause: str) -> str:
    return f"its transaction was still open when the session ended ({cause}): the server rolled it back"


NO_END = ("its transaction was still open where the recording ends (no session end is "
          "recorded): whether it committed is not known")  # fmt: skip


def test_a_block_open_at_the_sessions_end_is_rolled_back():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T").end("terminate")
    got = c.got()
    assert got[ins(1)] == ("rolled back", by_end("terminate"))
    assert got["BEGIN"] == ("ok", None)


def test_a_failed_block_open_at_a_disconnect_is_rolled_back():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("SELECT 1/0", z=b"E", fail="22012").end("disconnect")
    got = c.got()
    assert got[ins(1)] == ("rolled back", by_end("disconnect"))
    assert got["SELECT 1/0"][0] == "error"


def test_what_committed_before_stays_and_a_query_across_the_end_says_which_part_was_undone():
    sql = f"{ins(2)}; COMMIT; BEGIN; {ins(3)}"
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(sql, "INSERT 0 1", "COMMIT", "BEGIN", "INSERT 0 1",
                                             z=b"T")  # fmt: skip
    c.q(ins(4), "INSERT 0 1", z=b"T").end("upstream")
    got = c.got()
    assert got[sql] == (
        "ok",
        "partly rolled back: statement 4 (INSERT 0 1) undone when the session ended inside its "
        "transaction",
    )
    assert got[ins(4)] == ("rolled back", by_end("upstream"))


def test_a_committed_session_is_untouched():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("COMMIT", "COMMIT", z=b"I").q(ins(2), "INSERT 0 1", z=b"I").end()
    assert {v for k, v in c.got().items()} == {("ok", None)}


def test_executes_no_sync_followed_are_rolled_back_at_the_end():
    s = Session().start()
    s.client(parse(ins(1)), bind([]), execute(), FLUSH, decisions=1)
    s.server(PC, BC, command_complete("INSERT 0 1"))
    s.meta("session.end", dump_json({"cause": "terminate"}))
    (row,) = s.facts().statements
    assert (row["outcome"], row["message"]) == ("rolled back", by_end("terminate"))


def test_without_the_sessions_end_the_outcome_is_unknown():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    assert c.got()[ins(1)] == ("unknown", NO_END)
    # an end record that did not verify is no end (it may be forged)
    c.end("terminate", unverified=True)
    assert c.got()[ins(1)] == ("unknown", NO_END)


def test_a_commit_the_server_had_not_answered_leaves_it_unknown():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("COMMIT", z=None).end("disconnect")
    got = c.got()
    assert got["COMMIT"][0] == "no answer"
    assert got[ins(1)] == (
        "unknown",
        "its transaction was still open when the session ended (disconnect) with 1 client "
        "message the server had not answered (a COMMIT among them may have committed it): "
        "whether it committed is not known",
    )


def test_the_text_answer_says_so():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T").end("terminate")
    out = io.StringIO()
    write_text(answer_of(c.rows()), out)
    assert f"-> ROLLED BACK (ran: INSERT 0 1): {by_end('terminate')} (" in out.getvalue()
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    out = io.StringIO()
    write_text(answer_of(c.rows()), out)
    assert f"-> OUTCOME UNKNOWN (ran: INSERT 0 1): {NO_END} (" in out.getvalue()
