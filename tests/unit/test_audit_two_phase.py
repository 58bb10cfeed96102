"""recorder.audit.derive and two-phase commit: ``PREPARE TRANSACTION 'g'`` ends the block
leaving its statements neither committed nor rolled back; ``COMMIT PREPARED 'g'`` or
``ROLLBACK PREPARED 'g'`` decides them, in the same session or another, or never. Rows say
``prepared`` (pending) until a later COMMIT PREPARED / ROLLBACK PREPARED of the same gid in
the same session's recording decides them (another session's is not followed). Judged on
hand-made recordings, the server's answers as PostgreSQL 15 gives them (checked against a
server with max_prepared_transactions > 0; tests/integration/test_audit_two_phase.py runs
the same through the proxy)."""

from __future__ import annotations

import io

import pytest

from devtools.testing import bind, command_complete, execute, parse, ready, sync
from recorder.audit.answer import write_text
from recorder.audit.derive import two_phase_op
from recorder.records import dump_json
from tests.support.audit_recordings import BC, PC, Conn, Session, answer_of


def ins(v: int) -> str:
    return f"INSERT INTO t VALUES ({v})"


def pending(lit: str) -> str:
    return (f"prepared for two-phase commit as {lit}: neither committed nor rolled back until "
            f"COMMIT PREPARED or ROLLBACK PREPARED {lit}, which this session's recording does "
            "not hold after it (another session's is not followed)")  # fmt: skip


def prepared_block(c: Conn, v: int, gid: str) -> Conn:
    c.q("BEGIN", "BEGIN", z=b"T").q(ins(v), "INSERT 0 1", z=b"T")
    return c.q(f"PREPARE TRANSACTION {gid}", "PREPARE TRANSACTION", z=b"I")


@pytest.mark.parametrize(("sql", "op"), [
    ("PREPARE TRANSACTION 'g'", ("prepare", "g")),
    ("prepare  transaction 'it''s' ;", ("prepare", "it's")),
    ("COMMIT PREPARED E'Q'", ("commit", "Q")),
    ("COMMIT PREPARED E'a\\'b'", ("commit", "a'b")),
    ("ROLLBACK PREPARED $$d$$ -- done", ("rollback", "d")),
    ("ROLLBACK PREPARED $t$x$y$t$", ("rollback", "x$y")),
    ("COMMIT PREPARED E'\\x41'", ("commit", None)),  # not decoded: never matched
    ("COMMIT PREPARED 'g'; SELECT 1", None),  # PostgreSQL refuses it in a block
    ("COMMIT", None),
])  # fmt: skip
def test_the_gid_is_read_as_the_server_reads_its_string_constant(sql, op):
    assert two_phase_op(sql) == op


def test_a_prepared_transaction_is_pending_and_the_session_end_does_not_undo_it():
    c = prepared_block(Conn(), 1, "'g'").end("terminate")
    got = c.got()
    assert got[ins(1)] == ("prepared", pending("'g'"))
    assert got["PREPARE TRANSACTION 'g'"] == ("ok", None)


def test_commit_prepared_later_in_the_session_commits_it():
    c = prepared_block(Conn(), 1, "'g'").q("SELECT 1", "SELECT 1", z=b"I")
    c.q("COMMIT PREPARED 'g'", "COMMIT PREPARED", z=b"I").end()
    assert c.got()[ins(1)] == (
        "ok",
        "prepared for two-phase commit as 'g', then committed by COMMIT PREPARED later in this "
        "session",
    )
    assert c.got()["COMMIT PREPARED 'g'"] == ("ok", None)


def test_rollback_prepared_later_in_the_session_undoes_it():
    c = prepared_block(Conn(), 1, "$$g$$").q("ROLLBACK PREPARED E'g'", "ROLLBACK PREPARED", z=b"I")
    assert c.end().got()[ins(1)] == (
        "rolled back",
        "prepared for two-phase commit as 'g', then undone by ROLLBACK PREPARED later in this "
        "session",
    )


def test_another_gid_a_failed_resolution_or_a_gid_used_again_decides_nothing():
    c = prepared_block(Conn(), 1, "'g'")
    c.q("COMMIT PREPARED 'h'", z=b"I", fail="42704")  # no such gid: an error
    c.q("ROLLBACK PREPARED 'G'", "ROLLBACK PREPARED", z=b"I")  # another gid (case counts)
    assert c.got()[ins(1)] == ("prepared", pending("'g'"))
    # 'g' decided outside this recording, prepared again here: COMMIT PREPARED is the new one's
    c = prepared_block(Conn(), 1, "'g'")
    prepared_block(c, 2, "'g'").q("COMMIT PREPARED 'g'", "COMMIT PREPARED", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("prepared", pending("'g'")) and got[ins(2)][0] == "ok"


def test_a_failed_block_or_a_failing_prepare_is_rolled_back_as_before():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("SELECT 1/0", z=b"E", fail="22012").q("PREPARE TRANSACTION 'w'", "ROLLBACK", z=b"I")
    c.q("BEGIN", "BEGIN", z=b"T").q(ins(2), "INSERT 0 1", z=b"T")
    c.q("PREPARE TRANSACTION 'g'", z=b"I", fail="42710")  # gid in use: the block is undone
    got = c.got()
    assert got[ins(1)] == ("rolled back", "its transaction block ended without COMMIT (ROLLBACK)")
    assert got[ins(2)] == ("rolled back", "its transaction block ended without COMMIT (an error)")


def test_in_one_query_what_ran_before_the_prepare_is_prepared_what_after_commits():
    """PostgreSQL prepares an implicit block too (warning "there is no transaction in
    progress"), and runs what follows in a new one; an error after it undoes only that."""
    sql = f"{ins(1)}; PREPARE TRANSACTION 'z'; {ins(2)}"
    c = Conn().q(sql, "INSERT 0 1", "PREPARE TRANSACTION", "INSERT 0 1", z=b"I")
    assert c.got()[sql] == (
        "ok",
        "partly prepared: statement 1 (INSERT 0 1) prepared for two-phase commit as 'z' (pending)",
    )
    sql = f"{ins(3)}; PREPARE TRANSACTION 'z2'; SELECT 1/0"
    c = Conn().q(sql, "INSERT 0 1", "PREPARE TRANSACTION", z=b"I", fail="22012")
    (row,) = [r for r in c.rows() if r["text"] == sql]
    assert (row["outcome"], row["message"], row["note"]) == (  # (the note its own: session 37)
        "error",
        "boom",
        "statement 1 (INSERT 0 1) prepared for two-phase commit as 'z2' (pending)",
    )
    sql = f"BEGIN; {ins(4)}; PREPARE TRANSACTION 'y'; SELECT 1"
    c = Conn().q(sql, "BEGIN", "INSERT 0 1", "PREPARE TRANSACTION", "SELECT 1", z=b"I")
    assert c.got()[sql] == ("prepared", pending("'y'"))
    c.q("COMMIT PREPARED 'y'", "COMMIT PREPARED", z=b"I")
    assert c.got()[sql][0] == "ok"


def test_in_the_extended_protocol():
    s = Session().start()
    stmts = ["BEGIN", ins(1), "PREPARE TRANSACTION 'e'"]
    tags = ["BEGIN", "INSERT 0 1", "PREPARE TRANSACTION"]
    s.client(*[f for q in stmts for f in (parse(q), bind([]), execute())], sync(), decisions=3)
    s.server(*[f for t in tags for f in (PC, BC, command_complete(t))], ready(b"I"))
    s.meta("session.end", dump_json({"cause": "disconnect"}))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert got[ins(1)] == "prepared"
    s.client(parse("ROLLBACK PREPARED 'e'"), bind([]), execute(), sync(), decisions=1)
    s.server(PC, BC, command_complete("ROLLBACK PREPARED"), ready(b"I"))
    assert {r["text"]: r["outcome"] for r in s.facts().statements}[ins(1)] == "rolled back"


def test_the_text_answer_says_pending():
    out = io.StringIO()
    write_text(answer_of(prepared_block(Conn(), 1, "'g'").end().rows()), out)
    assert f"-> PREPARED, PENDING (ran: INSERT 0 1): {pending(repr('g'))} (" in out.getvalue()


def test_an_unanswered_prepare_at_the_end_is_unknown():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("PREPARE TRANSACTION 'g'", z=None).end("disconnect")
    assert c.got()[ins(1)][0] == "unknown"
