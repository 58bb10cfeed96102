"""An Execute of a cursor a function opened: its row names the statement that returned it.

A function returning a refcursor opens a portal on the server; the client may then Execute
it by name (psycopg and JDBC do, for ``refcursor`` results). The server runs the cursor's
own query, which nothing recorded holds (its log: ``execute <unnamed portal 1>: SELECT
...``). The answer's row of that Execute has the text of the statement whose result row
returned the name, and the decision on it, as one of a ``DECLARE``d cursor has the
DECLARE's (recorder/audit/derive.py, ``_cursors_returned``). A refcursor is known by its
column's type in the RowDescription (OID 1790), not by the value's look. The same case
through the proxy, with PostgreSQL's log as judge:
tests/integration/test_s33_audit_rows.py::test_an_execute_of_a_cursor_a_function_opened_says_what_allowed_it.
"""

from __future__ import annotations

import struct

from devtools.testing import command_complete, data_row, frame, parse, query, ready, sync
from recorder.records import Kind, dump_json
from tests.support.audit_recordings import BC, PC, Session, bind, described, execute

REFCURSOR, TEXT = 1790, 25
OPENER = "SELECT arw.opener()"


def allowed(s: Session, rule: str = "scope.execute") -> Session:
    p = {"denied": False, "outcome": "allowed", "statements": [{"rule": rule, "allowed": True}]}
    return s.meta("allow", dump_json(p), Kind.DECISION)


def rows(s: Session) -> list[tuple]:
    return [
        (r["text"], r["decision"], r["rule"], r["outcome"], r["rows"]) for r in s.facts().statements
    ]


def in_block() -> Session:
    s = Session().start()
    allowed(s.client(query("BEGIN")), "default.no_relations")
    s.server(command_complete("BEGIN"), ready(b"T"))
    return s


def fetched(s: Session, portal: str) -> Session:
    """An Execute of ``portal`` with a row limit of 2: two rows, then suspended."""
    s.client(execute(portal, 2), sync())
    return s.server(data_row("1"), data_row("2"), frame(b"s", b""), ready(b"T"))


def test_a_simple_query_that_returned_a_refcursor():
    s = in_block()
    allowed(s.client(query(OPENER)))
    s.server(described(("opener", REFCURSOR)), data_row("<unnamed portal 1>"),
             command_complete("SELECT 1"), ready(b"T"))  # fmt: skip
    fetched(s, "<unnamed portal 1>")
    assert rows(s)[2] == (OPENER, "allowed", "scope.execute", "suspended", 2)


def test_the_statement_of_a_query_that_returned_it():
    """The second of a Query's statements returned the cursor: its text, not the Query's."""
    s = in_block()
    allowed(s.client(query(f"SELECT 1; {OPENER}")))
    s.server(described(("n", TEXT)), data_row("1"), command_complete("SELECT 1"),
             described(("opener", REFCURSOR)), data_row("c1"), command_complete("SELECT 1"),
             ready(b"T"))  # fmt: skip
    fetched(s, "c1")
    assert rows(s)[2][:3] == (OPENER, "allowed", "scope.execute")


def test_every_refcursor_column_and_row_and_none_of_the_others():
    """Two refcursor columns over two rows name four portals; a NULL refcursor names none. A
    text column holding a name names it too since s35's audit round 4, as a likely match
    (a function that opens a cursor and returns its name as text: dry-run gap (b))."""
    s = in_block()
    sql = "SELECT name, a, b FROM arw.two_cursors()"
    allowed(s.client(query(sql)))
    s.server(described(("name", TEXT), ("a", REFCURSOR), ("b", REFCURSOR)),
             data_row("t1", "a1", "b1"), data_row("t2", None, "b2"),
             command_complete("SELECT 2"), ready(b"T"))  # fmt: skip
    for portal in ("a1", "b1", "b2", "t1", "a2"):
        fetched(s, portal)
    texts = [r[0] for r in rows(s)[2:]]
    assert texts == [sql, sql, sql, sql, ""]


def test_an_extended_call_that_returned_a_refcursor():
    """Parse, Describe of the statement (its RowDescription says refcursor), Bind, Execute:
    the Execute's rows name the portal; a later Execute of it has the call's text."""
    s = in_block()
    s.client(parse(OPENER, "op"), frame(b"D", b"Sop\x00"), sync())
    allowed(s)
    s.server(PC, frame(b"t", struct.pack(">h", 0)), described(("opener", REFCURSOR)), ready(b"T"))
    s.client(bind("op"), execute(), sync())
    s.server(BC, data_row("<unnamed portal 2>"), command_complete("SELECT 1"), ready(b"T"))
    fetched(s, "<unnamed portal 2>")
    assert rows(s)[-1] == (OPENER, "allowed", "scope.execute", "suspended", 2)


def test_a_malformed_row_description_names_nothing():
    """What the server sent is recorded as it is: a RowDescription cut short (one that the
    proxy relays) makes no refcursor portal and does not stop the answer; the value is still
    read as a name a cursor may be under (a likely match: s35 audit round 4)."""
    s = in_block()
    allowed(s.client(query(OPENER)))
    cut = described(("opener", REFCURSOR))
    cut = frame(b"T", cut[5:-8])  # its type OID kept, the rest of the column gone
    s.server(cut, data_row("c9"), command_complete("SELECT 1"), ready(b"T"))
    fetched(s, "c9")
    assert [r[0] for r in rows(s)] == ["BEGIN", OPENER, OPENER]


def test_a_function_returning_the_name_of_a_portal_the_client_bound():
    """A refcursor value naming a portal the server holds already is not one the function
    opened (opening it would fail, 42P03): an Execute of it runs the client's portal, and
    its row keeps that portal's text (a function must not relabel what the client read)."""
    s = in_block()
    bound = "SELECT id FROM arw.t"
    s.client(parse(bound), bind(portal="p1"), sync())
    allowed(s, "scope.read")
    s.server(PC, BC, ready(b"T"))
    allowed(s.client(query("SELECT 'p1'::refcursor")))
    s.server(described(("refcursor", REFCURSOR)), data_row("p1"), command_complete("SELECT 1"),
             ready(b"T"))  # fmt: skip
    fetched(s, "p1")
    assert rows(s)[-1] == (bound, "allowed", "scope.read", "suspended", 2)


def test_a_portal_of_an_ended_transaction_is_not_the_one_a_function_opens_later():
    """A portal ends with its transaction: a function that opens a cursor under the name
    later opens a new one, and the Execute's row has the call's text, not the old Bind's."""
    s = Session().start()
    s.client(parse("SELECT 'old'"), bind(portal="c1"), sync())
    allowed(s, "default.no_relations")
    s.server(PC, BC, ready(b"I"))  # (an implicit block: the portal is gone)
    s.client(query("BEGIN")).server(command_complete("BEGIN"), ready(b"T"))
    allowed(s.client(query(OPENER)))
    s.server(described(("opener", REFCURSOR)), data_row("c1"), command_complete("SELECT 1"),
             ready(b"T"))  # fmt: skip
    fetched(s, "c1")
    assert rows(s)[-1] == (OPENER, "allowed", "scope.execute", "suspended", 2)


def test_a_cursor_declared_with_hold_outlives_its_block():
    s = in_block()
    declare = "DECLARE h NO SCROLL CURSOR WITH HOLD FOR SELECT id FROM arw.t"
    allowed(s.client(query(declare)), "scope.read")
    s.server(command_complete("DECLARE CURSOR"), ready(b"T"))
    allowed(s.client(query("COMMIT")), "default.no_relations")
    s.server(command_complete("COMMIT"), ready(b"I"))
    fetched(s, "h")
    assert rows(s)[-1] == (declare, "allowed", "scope.read", "suspended", 2)
