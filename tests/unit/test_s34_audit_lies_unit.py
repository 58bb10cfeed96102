"""Session 34's red-team round on the audit's statement rows: names the server makes, closes
and ends that derive did not follow.

An Execute's row names the portal the server holds under the name, and a Bind's the
statement (recorder/audit/derive.py, ``SessionFacts._server_portals``/``_server_stmts``).
What the server holds changes with more than the protocol's Parse, Bind and Close: a
``PREPARE`` or ``DECLARE`` sent through the protocol (an Execute's tag), SQL ``CLOSE``,
``DEALLOCATE``, ``DISCARD ALL``, a simple Query (it replaces the unnamed statement and
portal), and the transaction: a commit ends every portal but a cursor declared WITH HOLD
(however many options precede ``CURSOR``), a rollback every portal the transaction made
(WITH HOLD too), a ``ROLLBACK TO`` those made since its savepoint; ``COMMIT AND CHAIN``
ends the transaction though ReadyForQuery stays 'T'. A name derive kept after the server
dropped it took the place of the next portal of that name (a function's cursor shown as a
closed cursor's DECLARE), and a name derive did not see made fell back to the client's
last Bind of it (a protocol DECLARE's cursor shown as an earlier, innocent statement, with
its values; a protocol PREPARE's statement shown as the denied Parse of its name, ``ok``).
Each test fails without its fix. The same cases through the proxy, with PostgreSQL's log as
judge: tests/integration/test_s34_audit_lies.py.
"""

from __future__ import annotations

from devtools.testing import command_complete, data_row, error, frame, parse, query, ready, sync
from recorder.records import Kind, dump_json
from tests.support.audit_recordings import BC, PC, Session, bind, described, execute

REFCURSOR = 1790
OPEN_C = "SELECT alw.open_named('c')"
DECOY = "DECLARE c CURSOR FOR SELECT 'decoy'"





def allowed(s: Session, rule: str = "default.no_relations") -> Session:
    p = {"denied": False, "outcome": "allowed", "statements": [{"rule": rule, "allowed": True}]}
    return s.meta("allow", dump_json(p), Kind.DECISION)


def denied(s: Session) -> Session:
    p = {"denied": True, "outcome": "denied",
         "statements": [{"rule": "scope.read", "allowed": False, "reason": "no"}]}  # fmt: skip
    return s.meta("deny", dump_json(p), Kind.DECISION)


def q(s: Session, sql: str, *tags: str, status: bytes = b"T") -> Session:
    allowed(s.client(query(sql)))
    return s.server(*(command_complete(t) for t in tags), ready(status))


def rows(s: Session) -> list[tuple]:
    return [(r["text"], r["params"], r["decision"], r["outcome"], r["rows"])
            for r in s.facts().statements]  # fmt: skip


def fetched(s: Session, portal: str, status: bytes = b"T") -> Session:
    s.client(execute(portal, 2), sync())
    return s.server(data_row("1"), data_row("2"), frame(b"s", b""), ready(status))


def opened_by_function(s: Session) -> Session:
    """A granted function opens a cursor under the name ``c`` and returns it."""
    allowed(s.client(query(OPEN_C)), "scope.execute")
    return s.server(described(("open_named", REFCURSOR)), data_row("c"),
                    command_complete("SELECT 1"), ready(b"T"))  # fmt: skip


def innocent_bound_as_c(s: Session) -> Session:
    """An earlier implicit transaction bound the portal ``c`` (gone with it)."""
    allowed(s.client(parse("SELECT 'innocent' || $1", "s"), bind("s", "c", (b"x",)),
                     execute("c"), sync()))  # fmt: skip
    return s.server(PC, BC, data_row("innocent x"), command_complete("SELECT 1"), ready(b"I"))


# --- names made through the protocol ------------------------------------------------------


def test_a_cursor_declared_through_the_protocol_is_the_portal_an_execute_runs():
    """Was: the Execute of ``c`` shown as the earlier Bind's statement, with its values."""
    s = innocent_bound_as_c(Session().start())
    q(s, "BEGIN", "BEGIN")
    declare = "DECLARE c CURSOR FOR SELECT id, v FROM alw.t ORDER BY id"
    allowed(s.client(parse(declare), bind(), execute(), sync()), "scope.read")
    s.server(PC, BC, command_complete("DECLARE CURSOR"), ready(b"T"))
    fetched(s, "c")
    assert rows(s)[-1] == (declare, "[]", "allowed", "suspended", 2)


def test_a_statement_prepared_through_the_protocol_is_the_one_a_bind_runs():
    """Was: the Bind of ``q2`` shown as the policy's denied Parse of that name, run ``ok``."""
    s = Session().start()
    denied(s.client(parse("SELECT salary FROM secret.payroll", "q2"), sync()))
    s.server(error("42501", "pgwitness: may not"), ready())
    prepare = "PREPARE q2 (int) AS SELECT v FROM alw.t WHERE id = $1"
    allowed(s.client(parse(prepare), bind(), execute(), sync()), "scope.read")
    s.server(PC, BC, command_complete("PREPARE"), ready())
    s.client(bind("q2", params=(b"3",)), execute(), sync())
    s.server(BC, data_row("v3"), command_complete("SELECT 1"), ready())
    assert rows(s)[-1] == (prepare, '["3"]', "allowed", "ok", 1)


def test_an_execute_of_a_name_no_portal_holds_is_not_the_clients_last_bind():
    """The portal ``c`` ended with its transaction; code derive cannot see (a function
    returning the name as text) opens another: the row has no text, not the old Bind's."""
    s = innocent_bound_as_c(Session().start())
    q(s, "BEGIN", "BEGIN")
    fetched(s, "c")
    assert rows(s)[-1] == ("", "[]", None, "suspended", 2)


# --- names closed and ended -----------------------------------------------------------------


def test_sql_close_ends_a_cursor():
    s = Session().start()
    q(s, "BEGIN", "BEGIN")
    q(s, DECOY, "DECLARE CURSOR")
    q(s, "CLOSE c", "CLOSE CURSOR")
    fetched(opened_by_function(s), "c")
    assert rows(s)[-1][0] == OPEN_C


def test_close_all_and_discard_all_end_every_cursor():
    for closing, tag in (("CLOSE ALL", "CLOSE CURSOR ALL"), ("DISCARD ALL", "DISCARD ALL")):
        s = Session().start()
        q(s, "DECLARE c CURSOR WITH HOLD FOR SELECT 'decoy'", "DECLARE CURSOR", status=b"I")
        q(s, closing, tag, status=b"I")
        q(s, "BEGIN", "BEGIN")
        fetched(opened_by_function(s), "c")
        assert rows(s)[-1][0] == OPEN_C, closing


def test_deallocate_and_discard_all_drop_prepared_statements():
    s = Session().start()
    q(s, "PREPARE q AS SELECT 'old'", "PREPARE", status=b"I")
    q(s, "DEALLOCATE PREPARE q", "DEALLOCATE", status=b"I")
    s.client(bind("q"), execute(), sync())
    s.server(error("26000", 'prepared statement "q" does not exist'), ready())
    assert rows(s)[-1][0] == ""  # was: the PREPARE's text
    q(s, "PREPARE r AS SELECT 'old'", "PREPARE", status=b"I")
    q(s, "DEALLOCATE ALL", "DEALLOCATE ALL", status=b"I")
    s.client(bind("r"), execute(), sync())
    s.server(error("26000", 'prepared statement "r" does not exist'), ready())
    assert rows(s)[-1][0] == ""


def test_a_held_cursor_of_a_block_that_rolled_back_is_gone():
    s = Session().start()
    q(s, "BEGIN", "BEGIN")
    q(s, "DECLARE c CURSOR WITH HOLD FOR SELECT 'decoy'", "DECLARE CURSOR")
    q(s, "ROLLBACK", "ROLLBACK", status=b"I")
    q(s, "BEGIN", "BEGIN")
    fetched(opened_by_function(s), "c")
    assert rows(s)[-1][0] == OPEN_C


def test_a_held_cursor_of_an_implicit_transaction_an_error_ended_is_gone():
    s = Session().start()
    allowed(s.client(query("DECLARE c CURSOR WITH HOLD FOR SELECT 'decoy'; SELECT 1/0")))
    s.server(command_complete("DECLARE CURSOR"), error("22012", "division by zero"), ready())
    q(s, "BEGIN", "BEGIN")
    fetched(opened_by_function(s), "c")
    assert rows(s)[-1][0] == OPEN_C


def test_commit_and_chain_ends_the_transactions_portals():
    s = Session().start()
    q(s, "BEGIN", "BEGIN")
    q(s, DECOY, "DECLARE CURSOR")
    q(s, "COMMIT AND CHAIN", "COMMIT")  # (ReadyForQuery 'T': the next transaction began)
    fetched(opened_by_function(s), "c")
    assert rows(s)[-1][0] == OPEN_C


def test_rollback_to_a_savepoint_ends_the_portals_made_after_it():
    s = Session().start()
    q(s, "BEGIN; SAVEPOINT a", "BEGIN", "SAVEPOINT")
    q(s, DECOY, "DECLARE CURSOR")
    q(s, "RELEASE b; ROLLBACK TO a", "RELEASE", "ROLLBACK")
    fetched(opened_by_function(s), "c")
    assert rows(s)[-1][0] == OPEN_C


def test_a_portal_made_before_the_savepoint_stays():
    s = Session().start()
    q(s, "BEGIN", "BEGIN")
    q(s, DECOY, "DECLARE CURSOR")
    q(s, "SAVEPOINT a", "SAVEPOINT")
    q(s, "ROLLBACK TO SAVEPOINT a", "ROLLBACK")
    fetched(s, "c")
    assert rows(s)[-1][0] == DECOY


def test_a_cursor_held_whatever_options_precede_cursor():
    """``BINARY`` eight times, then ``CURSOR WITH HOLD``: held (was: dropped at the commit,
    and its Execute shown as the client's earlier Bind of ``c``)."""
    s = innocent_bound_as_c(Session().start())
    declare = "DECLARE c " + "BINARY " * 8 + "CURSOR WITH HOLD FOR SELECT id FROM alw.t"
    q(s, declare, "DECLARE CURSOR", status=b"I")
    fetched(s, "c", b"I")
    assert rows(s)[-1][0] == declare


def test_a_protocol_portal_of_a_declare_with_hold_text_is_not_held():
    """The portal bound to a ``DECLARE ... WITH HOLD`` statement is a protocol portal (the
    cursor it declares is another): it ends with its transaction."""
    s = Session().start()
    declare = "DECLARE h CURSOR WITH HOLD FOR SELECT 1"
    allowed(s.client(parse(declare), bind(portal="p"), execute("p"), sync()))
    s.server(PC, BC, command_complete("DECLARE CURSOR"), ready())
    fetched(s, "h", b"I")
    assert rows(s)[-1][0] == declare
    s.client(execute("p"), sync()).server(error("34000", 'portal "p" does not exist'), ready())
    assert rows(s)[-1][0] == ""


def test_a_simple_query_replaces_the_unnamed_statement_and_portal():
    s = Session().start()
    q(s, "BEGIN", "BEGIN")
    allowed(s.client(parse("SELECT g FROM generate_series(1, 5) g"), bind(), execute("", 2),
                     sync()))  # fmt: skip
    s.server(PC, BC, data_row("1"), data_row("2"), frame(b"s", b""), ready(b"T"))
    q(s, "SELECT 'between'", "SELECT 1")
    s.client(execute("", 2), sync()).server(error("34000", 'portal "" does not exist'), ready(b"E"))
    assert rows(s)[-1][:2] == ("", "[]")  # was: the unnamed portal's statement and values
