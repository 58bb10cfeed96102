"""The text answer (recorder.audit.answer.write_text) says what became of a statement, not
only what the server answered it: a row its transaction's end undid says ROLLED BACK (with
the tag it ran with and why), as an error says ERROR; a Query only partly undone says which
of its statements were. Rows from recordings derived as tests/unit/
test_audit_transaction_ends.py derives them."""

from __future__ import annotations

import io

from devtools.testing import command_complete, error, query, ready
from recorder.audit.answer import write_text
from tests.support.audit_recordings import Session, answer_of


def text(*exchanges: tuple[str, list[bytes]]) -> dict[str, str]:
    """Each Query's text -> the line the text answer gives its result."""
    s = Session().start()
    for sql, answer in exchanges:
        s.client(query(sql), decisions=1).server(*answer)
    out = io.StringIO()
    write_text(answer_of(s.facts().statements), out)
    lines = out.getvalue().splitlines()
    got = {}
    for i, line in enumerate(lines):
        for sql, _ in exchanges:
            if line.rstrip().endswith(f"] '{sql}'"):  # (a literal: session 37)
                got[sql] = lines[i + 1].strip()
    return got


def cc(*tags: str) -> list[bytes]:
    return [command_complete(t) for t in tags]


def test_a_rolled_back_statement_says_so_with_what_it_ran_and_why():
    got = text(
        ("BEGIN", [*cc("BEGIN"), ready(b"T")]),
        ("INSERT INTO t VALUES (1)", [*cc("INSERT 0 1"), ready(b"T")]),
        ("ROLLBACK", [*cc("ROLLBACK"), ready(b"I")]),
        ("INSERT INTO t VALUES (2)", [*cc("INSERT 0 1"), ready(b"I")]),
    )
    assert got["INSERT INTO t VALUES (1)"].startswith(
        "-> ROLLED BACK (ran: INSERT 0 1): its transaction block ended without COMMIT (ROLLBACK)"
    ), got
    assert got["INSERT INTO t VALUES (2)"].startswith("-> INSERT 0 1 ("), got  # committed
    assert got["ROLLBACK"].startswith("-> ROLLBACK ("), got


def test_a_partly_undone_query_says_which_statements_were():
    sql = "INSERT INTO t VALUES (1); ROLLBACK; INSERT INTO t VALUES (2)"
    got = text((sql, [*cc("INSERT 0 1", "ROLLBACK", "INSERT 0 1"), ready(b"I")]))
    assert got[sql].startswith(
        "-> INSERT 0 1; ROLLBACK; INSERT 0 1; PARTLY ROLLED BACK: statement 1 (INSERT 0 1) "
        "undone by the transaction's ROLLBACK ("
    ), got


def test_errors_read_as_before_and_name_what_their_transaction_undid():
    sql = "INSERT INTO t VALUES (1); SELECT 1/0"
    got = text((sql, [*cc("INSERT 0 1"), error("22012", "division by zero"), ready(b"I")]))
    assert got[sql].startswith(
        "-> ERROR 22012 'division by zero'; statement 1 (INSERT 0 1) undone by the error that "
        "ended the transaction ("  # (the note apart from the server's words: session 37)
    ), got
