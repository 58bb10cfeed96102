"""Session 33's audit rows, red-team round: an Execute's row names what the server ran.

The server answers the client's messages in order and resolves every statement and portal
name when it reaches the message, against what it holds then: a Parse that failed (42P05,
a syntax error: a named statement is stored only once parsed) or that the policy refused
(the proxy sends it under a name of its own, never the client's) leaves the statement held
under the name before it, and a Bind that failed (42P03: the portal exists) leaves the
portal. A later Bind or Execute of the name runs that one. A SQL ``PREPARE name AS ...``
holds a statement a Bind may name too. The rows are read here as the server read the names
(recorder/audit/derive.py, ``SessionFacts._server_stmts``/``_server_portals``), judged on
hand-made recordings (tests/support/audit_recordings.py); the same cases through the proxy,
with PostgreSQL's own log as judge: tests/integration/test_s33_audit_rows.py.
"""

from __future__ import annotations

import struct

import pytest

from devtools.testing import (
    command_complete,
    data_row,
    error,
    frame,
    parse,
    query,
    ready,
    row_description,
    sync,
)
from recorder.records import Kind, dump_json
from tests.support.audit_recordings import BC, PC, Session

OLD, NEW = "SELECT 'old ' || $1", "SELECT 'new ' || $1"
DENIED_TEXT = "SELECT salary::text FROM secret.payroll WHERE $1 = ''"
EXISTS = error("42P05", 'prepared statement "s1" already exists')
ONE = row_description("c") + data_row("x") + command_complete("SELECT 1")
CLOSE_COMPLETE = frame(b"3", b"")


def bind(params: list[bytes], stmt: str = "", portal: str = "") -> bytes:
    body = portal.encode() + b"\x00" + stmt.encode() + b"\x00" + struct.pack(">hh", 0, len(params))
    for p in params:
        body += struct.pack(">i", len(p)) + p
    return frame(b"B", body + struct.pack(">h", 0))


def execute(portal: str = "", limit: int = 0) -> bytes:
    return frame(b"E", portal.encode() + b"\x00" + struct.pack(">i", limit))


def close_statement(name: str) -> bytes:
    return frame(b"C", b"S" + name.encode() + b"\x00")


def allowed(s: Session, rule: str = "default.no_relations") -> Session:
    p = {"denied": False, "outcome": "allowed", "statements": [{"rule": rule, "allowed": True}]}
    return s.meta("allow", dump_json(p), Kind.DECISION)


def denied(s: Session, sql: str) -> Session:
    p = {"denied": True, "outcome": "denied", "sql": sql, "error": "pgwitness: may not",
         "statements": [{"rule": "scope.read", "allowed": False, "reason": "not granted"}]}
    return s.meta("deny", dump_json(p), Kind.DECISION)


def rows(s: Session) -> list[tuple]:
    return [(r["text"], r["params"], r["decision"], r["rule"], r["outcome"],
             r["command_tag"] or r["sqlstate"]) for r in s.facts().statements]  # fmt: skip


def old_prepared() -> Session:
    s = Session().start()
    allowed(s.client(parse(OLD, "s1"), sync())).server(PC, ready())
    return s


def test_an_execute_after_a_failed_re_parse_runs_the_statement_held_before():
    s = old_prepared()
    allowed(s.client(parse(NEW, "s1"), sync())).server(EXISTS, ready())
    s.client(bind([b"a"], "s1"), execute(), sync()).server(BC, ONE, ready())
    assert rows(s) == [
        (NEW, None, "allowed", "default.no_relations", "error", "42P05"),
        (OLD, '["a"]', "allowed", "default.no_relations", "ok", "SELECT 1"),
    ]


def test_a_failed_re_parse_pipelined_with_binds_of_the_name():
    """All in one write: the group of the failed Parse is skipped; the next group's Bind
    (resolved by the client's frames before any answer) runs the old statement."""
    s = old_prepared()
    allowed(s.client(parse(NEW, "s1"), bind([b"b"], "s1"), execute(), sync(),
                     bind([b"c"], "s1"), execute(), sync()))  # fmt: skip
    s.server(EXISTS, ready(), BC, ONE, ready())
    assert rows(s) == [
        (NEW, None, "allowed", "default.no_relations", "error", "42P05"),
        (OLD, '["c"]', "allowed", "default.no_relations", "ok", "SELECT 1"),
    ]


def test_a_parse_the_policy_refused_leaves_the_name_to_the_statement_before():
    """Not the denied text shown as run (ok, with its denial): the server never held it."""
    s = old_prepared()
    denied(s.client(parse(DENIED_TEXT, "s1"), sync()), DENIED_TEXT)
    s.server(error("42501", "pgwitness: may not"), ready())
    s.client(bind([b"d"], "s1"), execute(), sync()).server(BC, ONE, ready())
    assert rows(s) == [
        (DENIED_TEXT, None, "denied", "scope.read", "error", "42501"),
        (OLD, '["d"]', "allowed", "default.no_relations", "ok", "SELECT 1"),
    ]


def test_the_unnamed_statement_after_a_refused_and_a_failed_parse():
    """The policy's refusal of an unnamed Parse leaves the server's unnamed statement; a
    Parse the server fails drops it first (its Bind is refused: 26000)."""
    s = Session().start()
    allowed(s.client(parse("SELECT 'u1'"), bind([]), execute(), sync())).server(PC, BC, ONE, ready())
    denied(s.client(parse("SELEC 'u2'"), sync()), "SELEC 'u2'")
    s.server(error("42601", 'syntax error at or near "SELEC"'), ready())
    s.client(bind([]), execute(), sync()).server(BC, ONE, ready())
    allowed(s.client(parse("SELECT * FROM nowhere"), sync()))
    s.server(error("42P01", 'relation "nowhere" does not exist'), ready())
    s.client(bind([]), execute(), sync())
    s.server(error("26000", "unnamed prepared statement does not exist"), ready())
    assert [r[0] + " " + r[4] for r in rows(s)] == [
        "SELECT 'u1' ok",
        "SELEC 'u2' error",
        "SELECT 'u1' ok",
        "SELECT * FROM nowhere error",
        "SELECT * FROM nowhere error",  # the Bind's: what the client bound, never run
    ]


def test_an_execute_of_a_portal_whose_re_bind_failed_runs_the_portal_bound_before():
    s = Session().start()
    allowed(s.client(query("BEGIN"))).server(command_complete("BEGIN"), ready(b"T"))
    allowed(s.client(parse("SELECT g FROM generate_series(1, $1::int) g", "g"),
                     bind([b"3"], "g", "p"), execute("p", 1), sync()))  # fmt: skip
    s.server(PC, BC, data_row("1"), frame(b"s", b""), ready(b"T"))
    allowed(s.client(parse(OLD, "s1"), sync())).server(PC, ready(b"T"))
    s.client(bind([b"e"], "s1", "p"), sync()).server(error("42P03", 'cursor "p" already exists'),
                                                     ready(b"E"))
    s.client(execute("p"), sync()).server(error("25P02", "current transaction is aborted"),
                                          ready(b"E"))
    got = [(r[0], r[1], r[5]) for r in rows(s)]
    assert got == [
        ("BEGIN", None, "BEGIN"),
        ("SELECT g FROM generate_series(1, $1::int) g", '["3"]', None),  # suspended
        (OLD, '["e"]', "42P03"),  # the refused Bind: its own statement and values
        ("SELECT g FROM generate_series(1, $1::int) g", '["3"]', "25P02"),  # portal p
    ]


def test_a_bind_of_a_statement_closed_and_parsed_again_runs_the_new_one():
    s = old_prepared()
    allowed(s.client(close_statement("s1"), parse(NEW, "s1"), bind([b"f"], "s1"), execute(),
                     sync()))  # fmt: skip
    s.server(CLOSE_COMPLETE, PC, BC, ONE, ready())
    assert [r[:2] for r in rows(s)] == [(NEW, '["f"]')]


def test_a_bind_of_a_sql_prepared_statement_names_its_prepare():
    """``PREPARE q1 (int) AS ...`` by a simple Query, then a protocol Bind of ``q1``: the
    server runs it (its log: ``execute q1: PREPARE q1 (int) AS SELECT $1 * 2``); the row
    says so, with the PREPARE's decision, not an empty text and no decision."""
    s = Session().start()
    allowed(s.client(query("SELECT 1; PREPARE Q1 (int) AS SELECT $1 * 2")))
    s.server(ONE, command_complete("PREPARE"), ready())
    s.client(bind([b"21"], "q1"), execute(), sync()).server(BC, ONE, ready())
    assert rows(s)[1] == ("PREPARE Q1 (int) AS SELECT $1 * 2", '["21"]', "allowed",
                          "default.no_relations", "ok", "SELECT 1")  # fmt: skip


def test_a_prepare_transaction_is_not_a_statement_a_bind_may_name():
    s = Session().start()
    allowed(s.client(query("PREPARE TRANSACTION 'q1'")))
    s.server(command_complete("PREPARE TRANSACTION"), ready())
    s.client(bind([], "q1"), execute(), sync()).server(
        error("26000", 'prepared statement "q1" does not exist'), ready())
    assert rows(s)[1][0] == "" and rows(s)[1][4] == "error"


def test_an_execute_of_a_sql_declared_cursor_names_its_declare():
    """``DECLARE cur CURSOR FOR ...`` then a protocol Execute of the portal ``cur`` with a
    row limit: the server fetches from it (its log: ``execute <unnamed>/cur: DECLARE cur
    CURSOR FOR ...``); the row says so, with the DECLARE's decision."""
    s = Session().start()
    allowed(s.client(query("BEGIN"))).server(command_complete("BEGIN"), ready(b"T"))
    declare = 'DECLARE "Cur" NO SCROLL CURSOR FOR SELECT id FROM t'
    allowed(s.client(query(declare)), "scope.read")
    s.server(command_complete("DECLARE CURSOR"), ready(b"T"))
    s.client(execute("Cur", 2), sync()).server(data_row("1"), data_row("2"), frame(b"s", b""),
                                               ready(b"T"))
    assert rows(s)[2] == (declare, "[]", "allowed", "scope.read", "suspended", None)


# --- a session that ends with messages the server had not answered ----------------------

INS = "INSERT INTO t VALUES (1)"


def in_block(*unanswered: bytes, status: bytes = b"T", decisions: int = 1) -> dict:
    """A block with an INSERT, then ``unanswered`` sent and the client gone (disconnect):
    the INSERT's (outcome, message)."""
    from tests.support.audit_recordings import Conn

    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(INS, "INSERT 0 1", z=b"T")
    if status == b"E":
        c.q("SELECT 1/0", fail="22012", z=b"E")
    c.s.client(*unanswered, decisions=decisions)
    return c.end("disconnect").got()


def test_a_block_left_with_no_commit_unanswered_was_rolled_back():
    """The client killed mid-statement: its last Query holds no COMMIT, END or PREPARE
    TRANSACTION, so the block cannot have committed; the server rolled it back (judged
    through the proxy: tests/integration/test_s33_audit_rows.py)."""
    got = in_block(query("INSERT INTO t VALUES (2); SELECT pg_sleep(2)"))
    assert got["INSERT INTO t VALUES (2); SELECT pg_sleep(2)"][0] == "no answer"
    assert got[INS] == (
        "rolled back",
        "its transaction was still open when the session ended (disconnect) with 1 client "
        "message the server had not answered, which could not commit it: the server rolled "
        "it back",
    )


@pytest.mark.parametrize("text", [
    "COMMIT", "commit and chain", "SELECT 1; END", "/* done */ End Transaction",
    "PREPARE TRANSACTION 'g'",
])  # fmt: skip
def test_a_commit_among_the_unanswered_leaves_it_unknown(text):
    assert in_block(query(text))[INS][0] == "unknown"


def test_an_execute_of_commit_or_of_an_unknown_statement_leaves_it_unknown():
    assert in_block(parse("COMMIT"), bind([]), execute(), sync())[INS][0] == "unknown"
    assert in_block(execute("nobody bound this"), sync(), decisions=0)[INS][0] == "unknown"


def test_a_failed_block_is_rolled_back_whatever_the_unanswered_say():
    assert in_block(query("COMMIT"), status=b"E")[INS][0] == "rolled back"


def test_a_block_whose_backend_was_terminated_was_rolled_back():
    """pg_terminate_backend from elsewhere while the block's Query runs: FATAL 57P01, no
    ReadyForQuery, the proxy ends the session (upstream). The client had no message left
    unanswered (was: "with 1 client message the server had not answered (a COMMIT among
    them may have committed it)", unknown: derive counted its own wait for the Query's
    ReadyForQuery as one)."""
    from tests.support.audit_recordings import Conn

    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(INS, "INSERT 0 1", z=b"T")
    c.s.client(query("SELECT pg_sleep(3)"), decisions=1)
    c.s.server(error("57P01", "terminating connection due to administrator command", "FATAL"))
    got = c.end("upstream").got()
    assert got["SELECT pg_sleep(3)"] == ("error", "terminating connection due to administrator "
                                                  "command")  # fmt: skip
    assert got[INS] == ("rolled back", "its transaction was still open when the session ended "
                                       "(upstream): the server rolled it back")  # fmt: skip


def test_after_a_fatal_nothing_pipelined_behind_it_commits():
    """The implicit block of a Sync group whose second Execute the server answered with a
    FATAL: the Sync behind it never ran; the first INSERT was rolled back with the session."""
    s = Session().start()
    allowed(s.client(parse(INS), bind([]), execute(), parse("SELECT pg_sleep(3)"), bind([]),
                     execute(), sync()))  # fmt: skip
    allowed(s)
    s.server(PC, BC, command_complete("INSERT 0 1"), PC, BC,
             error("57P01", "terminating connection due to administrator command", "FATAL"))
    s.meta("session.end", dump_json({"cause": "upstream"}))
    assert [r[4] for r in rows(s)] == ["rolled back", "error"]


# --- decisions on Executes and Describes (the policy follows portals) --------------------


def portal_refused(s: Session, message: str, **names: str) -> Session:
    p = {"denied": True, "outcome": "denied", "message": message, **names,
         "error": "pgwitness: may not read portal nope: this session did not make it",
         "statements": [{"rule": "deny.cursor", "allowed": False, "reason": "not made here"}]}
    return s.meta("deny", dump_json(p), Kind.DECISION)


def query_allowed(s: Session) -> Session:
    p = {"denied": False, "outcome": "allowed", "message": "Query",
         "statements": [{"rule": "default.no_relations", "allowed": True}]}
    return s.meta("allow", dump_json(p), Kind.DECISION)


NOT_MADE = error("34000", "pgwitness: may not read portal nope: this session did not make it")


def test_an_execute_the_policy_refused_is_its_rows_denial_not_the_next_querys():
    """An Execute of a portal the client did not make, then a Query, in one write: the
    refusal (recorded first) is the Execute's; the Query keeps its own decision (was: the
    Query shown denied by deny.cursor, and run; the Execute with no decision)."""
    s = Session().start()
    s.client(execute("nope"), sync(), query("SELECT 'after'"))
    query_allowed(portal_refused(s, "Execute", portal="nope"))
    s.server(NOT_MADE, ready(), ONE, ready())
    assert rows(s) == [
        ("", "[]", "denied", "deny.cursor", "error", "34000"),
        ("SELECT 'after'", None, "allowed", "default.no_relations", "ok", "SELECT 1"),
    ]


def test_a_describe_the_policy_refused_is_a_denial_of_its_own():
    """A Describe of a portal the client did not make is refused (its columns would say
    what the cursor reads): a denied row; the Parse after it keeps its own decision."""
    s = Session().start()
    s.client(frame(b"D", b"Pnope\x00"), sync(), parse("SELECT 'parsed'"), bind([]), execute(),
             sync())  # fmt: skip
    allowed(portal_refused(s, "Describe", portal="nope"))
    s.server(NOT_MADE, ready(), PC, BC, ONE, ready())
    assert rows(s) == [
        ("", None, "denied", "deny.cursor", "error", "34000"),
        ("SELECT 'parsed'", "[]", "allowed", "default.no_relations", "ok", "SELECT 1"),
    ]


def test_a_would_deny_on_an_execute_is_that_executes():
    """Dry run: the Execute of a portal is let through with its would-deny; its row says so
    and the portal's statement's decision is not put in its place."""
    s = Session().start()
    allowed(s.client(parse("SELECT 1"), bind([], "", "p"), sync())).server(PC, BC, ready())
    p = {"denied": False, "outcome": "would_deny", "message": "Execute", "portal": "p",
         "statements": [{"rule": "deny.cursor", "allowed": False, "reason": "not made here"}]}
    s.client(execute("p"), sync()).meta("allow", dump_json(p), Kind.DECISION)
    s.server(ONE, ready())
    assert rows(s)[0][2:5] == ("would_deny", "deny.cursor", "ok")


def test_a_copy_data_refusal_is_no_querys_decision():
    """A CopyData refused while the recorder could not record (the proxy fails the COPY),
    with a Query behind it in the same write: the Query keeps its own decision."""
    s = Session().start()
    allowed(s.client(query("COPY t FROM STDIN"))).server(frame(b"G", b"\x00\x00\x00"))
    unrecorded = {"denied": True, "outcome": "denied", "message": "CopyData",
                  "error": "pgwitness: refused: the recorder cannot record"}
    s.client(frame(b"d", b"1\n"), frame(b"c", b""), query("SELECT 'next'"))
    query_allowed(s.meta("deny", dump_json(unrecorded), Kind.DECISION))
    s.server(error("57014", "COPY from stdin failed: the recorder cannot record"), ready(),
             ONE, ready())  # fmt: skip
    assert [r[2:5] for r in rows(s)] == [("allowed", "default.no_relations", "error"),
                                         ("allowed", "default.no_relations", "ok")]
