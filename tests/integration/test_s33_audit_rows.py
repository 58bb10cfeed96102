"""Session 33, an auditor's red-team round on the statement rows of the audit answer, with
PostgreSQL as the judge.

Each test runs one client session through a recording proxy with a grant (raw protocol
messages: ``RawClient``), reads the audit answer back with the CLI (``pgwitness audit
--format json``) and holds its statement rows, one by one, to what the server did. The
server's word is its own log: the module makes the cluster log every statement of the
proxy's upstream role (``ALTER ROLE pgwitness SET log_statement = 'all'``, durations,
errors with their SQLSTATE and the parameters of each execution; restored after), and
``trace`` reads the lines of the session's backend (its pid is in the answer) into what it
ran, in order: each simple Query and each Execute (its text and values: the server's log
names the statement a portal runs, not the one the client last sent under its name), each
refusal of a Parse or Bind, and the error of each. The answer's rows, but for the policy's
denials (the proxy's own ``DO`` block, or nothing), must be that list; their command tags
and row counts are what the client received; the tables say what stayed.

Findings of this round (fixed in recorder/audit/derive.py, each failing without its fix):
a Parse the server refused (42P05) or the policy refused under a name in use, then a Bind
and Execute of that name (the answer showed the refused, even the denied, text as run,
``ok``: the server ran the statement held before); a Bind whose portal existed (42P03),
then its Execute; a protocol Bind of a SQL ``PREPARE``d statement and an Execute of a SQL
``DECLARE``d cursor (no text, no decision); a client killed mid-statement inside a block
(its INSERT of unknown outcome: no COMMIT was in flight, the server rolled it back); a
backend terminated mid-block (unknown, "1 client message the server had not answered",
where the client had none); the policy's refusal of an Execute or a Describe of a portal
(deny.cursor) given to the next Query or Parse (shown denied, yet run); a NULL parameter
read as the text ``'NULL'`` (fixed in recorder/replay.py: a NULL is None, JSON null;
``test_a_null_parameter_is_not_the_text_null``); an Execute of a function's refcursor with no
text and no decision (fixed in derive: the row has the statement that returned the cursor,
its refcursor column known by type, and its decision).
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from common.wire import messages as m
from tests.support.rawpg import RawClient, bind, error_fields, execute, parse
from tests.support.recording import (
    one_live_session,
)
from tests.support.server_log import (
    assert_as_the_server_ran,
    log_entries,
    logging_role,
    open_case,
    trace,
    with_scopes,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(90)

SETUP = """
DROP SCHEMA IF EXISTS arw CASCADE;
CREATE SCHEMA arw;
GRANT USAGE ON SCHEMA arw TO pgwitness;
CREATE TABLE arw.t (id int, v text);
INSERT INTO arw.t SELECT g, 'v' || g FROM generate_series(1, 20) g;
CREATE TABLE arw.parent (id int PRIMARY KEY);
CREATE TABLE arw.child (id int, pid int REFERENCES arw.parent DEFERRABLE INITIALLY DEFERRED);
GRANT ALL ON arw.t, arw.parent, arw.child TO pgwitness;
"""
SCOPES = "read:arw.t,arw.child write:arw.t,arw.child"
DENIED = "SELECT salary FROM secret.payroll"  # the grant may not read it: the policy denies


@pytest.fixture(scope="module")
def server_log(pg):
    """The ``pg`` cluster logs every statement of the proxy's upstream role while the
    module runs (``tests.support.server_log.logging_role``)."""
    with logging_role(pg, SETUP, "arw") as logged:
        yield logged


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S33-ROWS-", SCOPES)


OPENER = """
CREATE FUNCTION arw.opener() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor;
BEGIN
  OPEN c FOR SELECT id FROM arw.t ORDER BY id;
  RETURN c;
END $$;
"""


@pytest.fixture
def opener(server_log):
    """Code in the database that opens a cursor: the proxy follows the session's portals
    from its first statement (``portals_watched``) and refuses an Execute or Describe of
    one the client did not make (``deny.cursor``, 34000)."""
    server_log.psql(OPENER, db="app")
    yield
    server_log.psql("DROP FUNCTION IF EXISTS arw.opener();", db="app")


def answered(c: RawClient) -> list[tuple[str, str | None]]:
    """Frames up to ReadyForQuery: (type, the tag of a CommandComplete or an error's SQLSTATE)."""
    out = []
    for f in c.frames_until_ready():
        t = chr(f[0])
        out.append((t, f[5:-1].decode() if t == "C" else error_fields(f).get("C") if t == "E"
                    else None))  # fmt: skip
    return out


def outcomes(rows: list[dict]) -> list[tuple]:
    return [(r["text"], r["outcome"], r["command_tag"], r["rows"], r["sqlstate"]) for r in rows]


def ids(pg, low: int) -> list[int]:
    out = pg.psql(f"SELECT id FROM arw.t WHERE id >= {low} ORDER BY id", db="app")
    return [int(x) for x in out.split()]


OLD, NEW = "SELECT 'old ' || $1", "SELECT 'new ' || $1"
PAYROLL_BY = "SELECT salary::text FROM secret.payroll WHERE $1 = ''"


# --- 1. names: statements reused, re-parsed, refused, closed; SQL PREPARE --------------


def test_named_and_unnamed_statements_as_the_server_holds_them(case):
    """A named statement reused across Sync groups; the same name Parsed again (42P05: the
    server keeps the first), in its own group and pipelined with a Bind of the name; a
    Parse of the name the policy denies; Close and Parse again; the unnamed statement
    overwritten within a group (a portal bound before keeps its statement); an unnamed
    Parse the policy denies (the server's unnamed one stays); a SQL PREPARE bound through
    the protocol. Each Execute's row is the statement the server ran, with its values."""
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(parse("s1", OLD), m.SYNC)
        assert answered(c) == [("1", None), ("Z", None)]
        for v in (b"a", b"b"):
            c.send(bind(statement="s1", params=[v]), execute(), m.SYNC)
            assert answered(c) == [("2", None), ("D", None), ("C", "SELECT 1"), ("Z", None)]
        c.send(parse("s1", NEW), m.SYNC)
        assert answered(c) == [("E", "42P05"), ("Z", None)]
        c.send(bind(statement="s1", params=[b"c"]), execute(), m.SYNC)
        assert answered(c)[2] == ("C", "SELECT 1")
        c.send(parse("s1", "SELECT 'newer ' || $1"), bind(statement="s1", params=[b"x"]),
               execute(), m.SYNC, bind(statement="s1", params=[b"d"]), execute(), m.SYNC)
        assert [a[1] for a in answered(c) + answered(c)] == ["42P05", None, None, None,
                                                             "SELECT 1", None]  # fmt: skip
        c.send(parse("s1", PAYROLL_BY), m.SYNC)
        assert answered(c) == [("E", "42501"), ("Z", None)]  # the policy's
        c.send(bind(statement="s1", params=[b"e"]), execute(), m.SYNC)
        assert answered(c)[2] == ("C", "SELECT 1")
        c.send(m.close_statement("s1"), parse("s1", NEW), bind(statement="s1", params=[b"f"]),
               execute(), m.SYNC)
        assert [a[0] for a in answered(c)] == ["3", "1", "2", "D", "C", "Z"]
        c.send(parse("", "SELECT 'A'"), bind(), parse("", "SELECT 'B'"), execute(), m.SYNC)
        c.send(parse("", "SELECT 'C'"), parse("", "SELECT 'D'"), bind(), execute(), m.SYNC)
        assert [a[0] for a in answered(c) + answered(c)] == list("121DCZ" "112DCZ")
        c.send(parse("", "SELEC 'E'"), m.SYNC)  # the policy refuses what it cannot read
        assert answered(c) == [("E", "42601"), ("Z", None)]
        c.send(bind(), execute(), m.SYNC)
        assert answered(c)[2] == ("C", "SELECT 1")
        assert answered_query(c, "PREPARE q1 (int) AS SELECT $1 * 2") == [("C", "PREPARE")]
        c.send(bind(statement="q1", params=[b"21"]), execute(), m.SYNC)
        assert answered(c)[2] == ("C", "SELECT 1")
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    got = [(r["text"], r["params"], r["decision"], r["outcome"], r["sqlstate"]) for r in rows]
    assert got == [
        (OLD, '["a"]', "allowed", "ok", None),
        (OLD, '["b"]', "allowed", "ok", None),
        (NEW, None, "allowed", "error", "42P05"),
        (OLD, '["c"]', "allowed", "ok", None),
        ("SELECT 'newer ' || $1", None, "allowed", "error", "42P05"),
        (OLD, '["d"]', "allowed", "ok", None),
        (PAYROLL_BY, None, "denied", "error", "42501"),
        (OLD, '["e"]', "allowed", "ok", None),  # was: the denied text, ok
        (NEW, '["f"]', "allowed", "ok", None),
        ("SELECT 'A'", "[]", "allowed", "ok", None),
        ("SELECT 'D'", "[]", "allowed", "ok", None),
        ("SELEC 'E'", None, "denied", "error", "42601"),
        ("SELECT 'D'", "[]", "allowed", "ok", None),  # was: the denied text, ok
        ("PREPARE q1 (int) AS SELECT $1 * 2", None, "allowed", "ok", None),
        ("PREPARE q1 (int) AS SELECT $1 * 2", '["21"]', "allowed", "ok", None),  # was: ""
    ], got


def answered_query(c: RawClient, sql: str) -> list[tuple[str, str | None]]:
    """A simple Query's answer, less its RowDescription, DataRows and ReadyForQuery."""
    c.send(m.query(sql))
    return [a for a in answered(c) if a[0] not in "TDZ"]


# --- 2. portals: row limits, continued in later groups; re-bound; cursors; Describe ------


def test_portals_suspended_continued_rebound_described_closed_and_flushed(case):
    """In a block, a portal executed with a row limit (PortalSuspended) and continued in
    later Sync groups; the same portal bound again (42P03: the server keeps it, and the
    block's next Execute of it fails 25P02 on it); a cursor DECLAREd in SQL fetched by a
    protocol Execute; Describe-only and Close-only groups (no rows); an Execute answered
    after a Flush, before its Sync. Each Execute is one row, with the rows it returned."""
    gen = "SELECT g FROM generate_series(1, $1::int) g"
    with case.client() as c:
        sid = one_live_session(case.h)
        assert answered_query(c, "BEGIN") == [("C", "BEGIN")]
        c.send(parse("g", gen), bind("p", "g", [b"5"]), execute("p", 2), m.SYNC)
        assert answered(c)[-2:] == [("s", None), ("Z", None)]
        c.send(execute("p", 2), m.SYNC)
        assert [a[0] for a in answered(c)] == list("DDsZ")
        c.send(execute("p", 2), m.SYNC)
        assert answered(c) == [("D", None), ("C", "SELECT 1"), ("Z", None)]
        c.send(execute("p", 2), m.SYNC)  # done: nothing more
        assert answered(c) == [("C", "SELECT 0"), ("Z", None)]
        assert answered_query(c, "DECLARE cur CURSOR FOR SELECT id FROM arw.t ORDER BY id") == [
            ("C", "DECLARE CURSOR")]
        c.send(execute("cur", 3), m.SYNC)
        assert [a[0] for a in answered(c)] == list("DDDsZ")
        c.send(parse("s1", OLD), bind("p", "s1", [b"z"]), m.SYNC)
        assert answered(c) == [("1", None), ("E", "42P03"), ("Z", None)]
        c.send(execute("p", 1), m.SYNC)
        assert answered(c) == [("E", "25P02"), ("Z", None)]
        assert answered_query(c, "ROLLBACK") == [("C", "ROLLBACK")]
        # Describe and Close alone: nothing runs
        c.send(parse("d", "SELECT v FROM arw.t WHERE id = $1"), m.frame(b"D", b"Sd\x00"), m.SYNC)
        assert [a[0] for a in answered(c)] == list("1tTZ")
        c.send(bind("pd", "d", [b"1"]), m.frame(b"D", b"Ppd\x00"), m.SYNC)
        assert [a[0] for a in answered(c)] == list("2TZ")
        c.send(m.close_statement("d"), m.frame(b"C", b"Ppd\x00"), m.SYNC)
        assert [a[0] for a in answered(c)] == list("33Z")
        # Flush: the Execute is answered before its Sync
        c.send(parse("", "SELECT 'flushed'"), bind(), execute(), m.frame(b"H", b""))
        assert [c.read_frame()[:1] for _ in range(4)] == [b"1", b"2", b"D", b"C"]
        c.send(m.SYNC)
        assert answered(c) == [("Z", None)]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [x.how for x in ran] == ["statement", "execute", "fetch", "fetch", "fetch",
                                    "statement", "execute", "refused", "fetch", "statement",
                                    "execute"]  # fmt: skip
    assert outcomes(rows) == [
        ("BEGIN", "ok", "BEGIN", None, None),
        (gen, "suspended", None, 2, None),
        (gen, "suspended", None, 2, None),
        (gen, "ok", "SELECT 1", 1, None),
        (gen, "ok", "SELECT 0", 0, None),
        ("DECLARE cur CURSOR FOR SELECT id FROM arw.t ORDER BY id", "ok", "DECLARE CURSOR",
         None, None),
        ("DECLARE cur CURSOR FOR SELECT id FROM arw.t ORDER BY id", "suspended", None, 3,
         None),  # was: no text, no decision
        (OLD, "error", None, None, "42P03"),
        (gen, "error", None, None, "25P02"),  # portal p, bound to 5: was OLD, ["z"]
        ("ROLLBACK", "ok", "ROLLBACK", None, None),
        ("SELECT 'flushed'", "ok", "SELECT 1", 1, None),
    ], outcomes(rows)
    assert all(r["decision"] == "allowed" for r in rows), rows


# --- 3. pipelines: an error skips to Sync; the policy's denial in the middle --------------


def test_pipelined_groups_skipped_after_an_error_are_not_rows(case):
    """Extended-protocol groups in one write: an error (the server's, or the policy's
    denial injected in the middle) makes the server skip to Sync, a simple Query in the
    group too; what ran before it in the group is undone (an implicit transaction), the
    next group runs. Simple Queries in one write with a denial among them. A deferred
    constraint failing at the Sync's commit. Rows: what ran, never what was skipped."""
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(parse("", "INSERT INTO arw.t VALUES (100, 'a')"), bind(), execute(),
               parse("", "SELECT 1/0"), bind(), execute(),
               parse("", "INSERT INTO arw.t VALUES (101, 'skipped')"), bind(), execute(),
               m.query("INSERT INTO arw.t VALUES (102, 'skipped')"), m.SYNC,
               parse("", "INSERT INTO arw.t VALUES (103, 'b')"), bind(), execute(), m.SYNC)
        assert [a for a in answered(c) + answered(c) if a[1]] == [
            ("C", "INSERT 0 1"), ("E", "22012"), ("C", "INSERT 0 1")]
        c.send(parse("", "INSERT INTO arw.t VALUES (104, 'c')"), bind(), execute(),
               parse("", DENIED), bind(), execute(),
               parse("", "INSERT INTO arw.t VALUES (105, 'skipped')"), bind(), execute(), m.SYNC,
               parse("", "INSERT INTO arw.t VALUES (106, 'd')"), bind(), execute(), m.SYNC)
        assert [a for a in answered(c) + answered(c) if a[1]] == [
            ("C", "INSERT 0 1"), ("E", "42501"), ("C", "INSERT 0 1")]
        c.send(m.query("SELECT 'q1'"), m.query(DENIED), m.query("INSERT INTO arw.t VALUES (107, 'e')"))
        assert [a[1] for a in answered(c) + answered(c) + answered(c) if a[1]] == [
            "SELECT 1", "42501", "INSERT 0 1"]
        c.send(parse("", "INSERT INTO arw.child VALUES (1, 999)"), bind(), execute(), m.SYNC)
        assert [a for a in answered(c) if a[1]] == [("C", "INSERT 0 1"), ("E", "23503")]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["text"], r["decision"], r["outcome"], r["command_tag"], r["sqlstate"])
            for r in rows] == [
        ("INSERT INTO arw.t VALUES (100, 'a')", "allowed", "rolled back", "INSERT 0 1", None),
        ("SELECT 1/0", "allowed", "error", None, "22012"),
        ("INSERT INTO arw.t VALUES (103, 'b')", "allowed", "ok", "INSERT 0 1", None),
        ("INSERT INTO arw.t VALUES (104, 'c')", "allowed", "rolled back", "INSERT 0 1", None),
        (DENIED, "denied", "error", None, "42501"),
        ("INSERT INTO arw.t VALUES (106, 'd')", "allowed", "ok", "INSERT 0 1", None),
        ("SELECT 'q1'", "allowed", "ok", "SELECT 1", None),
        (DENIED, "denied", "error", None, "42501"),
        ("INSERT INTO arw.t VALUES (107, 'e')", "allowed", "ok", "INSERT 0 1", None),
        ("INSERT INTO arw.child VALUES (1, 999)", "allowed", "rolled back", "INSERT 0 1",
         "23503"),
    ]  # fmt: skip
    assert ids(case.pg, 100) == [103, 106, 107]
    assert case.pg.psql("SELECT count(*) FROM arw.child", db="app").strip() == "0"


# --- 4. the simple protocol --------------------------------------------------------------


def test_simple_queries_failing_midway_empty_aborted_blocks_and_savepoints(case):
    """Several statements in one Query, one failing mid-way (those after it never ran);
    empty statements; a block an error aborts (25P02 after it, its INSERT undone by the
    ROLLBACK); ROLLBACK TO SAVEPOINT, in one Query and over several; the policy's denial of
    a Query holding an allowed INSERT (nothing of it ran); a COMMIT failing at a deferred
    constraint. Tags, row counts and SQLSTATEs as the client got them."""
    queries = [
        "SELECT 1; SELECT 1/0; INSERT INTO arw.t VALUES (200, 'never')",
        "",
        " ; ;",
        "SELECT 1;;SELECT 2",
        "BEGIN",
        "INSERT INTO arw.t VALUES (201, 'undone')",
        "SELECT 1/0",
        "SELECT 1",
        "ROLLBACK",
        "BEGIN; SAVEPOINT a; INSERT INTO arw.t VALUES (202, 'undone'); ROLLBACK TO SAVEPOINT a;"
        " INSERT INTO arw.t VALUES (203, 'kept'); COMMIT",
        "BEGIN",
        "SAVEPOINT s",
        "INSERT INTO arw.t VALUES (204, 'undone')",
        "SELECT 1/0",
        "ROLLBACK TO s",
        "UPDATE arw.t SET v = 'kept' WHERE id BETWEEN 1 AND 3",
        "COMMIT",
        f"INSERT INTO arw.t VALUES (205, 'never'); {DENIED}",
        "BEGIN; INSERT INTO arw.child VALUES (2, 999)",
        "COMMIT",
    ]
    with case.client() as c:
        sid = one_live_session(case.h)
        got = [[a[1] for a in answered_query(c, q) if a[0] in "CEI"] for q in queries]
    assert got == [
        ["SELECT 1", "22012"], [None], [None], ["SELECT 1", "SELECT 1"], ["BEGIN"],
        ["INSERT 0 1"], ["22012"], ["25P02"], ["ROLLBACK"],
        ["BEGIN", "SAVEPOINT", "INSERT 0 1", "ROLLBACK", "INSERT 0 1", "COMMIT"],
        ["BEGIN"], ["SAVEPOINT"], ["INSERT 0 1"], ["22012"], ["ROLLBACK"], ["UPDATE 3"],
        ["COMMIT"], ["42501"], ["BEGIN", "INSERT 0 1"], ["23503"],
    ], got  # fmt: skip
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [r["text"] for r in rows] == queries
    assert [(r["outcome"], r["command_tag"], r["rows"], r["sqlstate"]) for r in rows] == [
        ("error", "SELECT 1", 1, "22012"),
        ("ok", None, None, None),
        ("ok", None, None, None),
        ("ok", "SELECT 1; SELECT 1", 2, None),
        ("ok", "BEGIN", None, None),
        ("rolled back", "INSERT 0 1", 1, None),
        ("error", None, None, "22012"),
        ("error", None, None, "25P02"),
        ("ok", "ROLLBACK", None, None),
        ("ok", "BEGIN; SAVEPOINT; INSERT 0 1; ROLLBACK; INSERT 0 1; COMMIT", 2, None),
        ("ok", "BEGIN", None, None),
        ("ok", "SAVEPOINT", None, None),
        ("rolled back", "INSERT 0 1", 1, None),
        ("error", None, None, "22012"),
        ("ok", "ROLLBACK", None, None),
        ("ok", "UPDATE 3", 3, None),
        ("ok", "COMMIT", None, None),
        ("error", None, None, "42501"),
        ("rolled back", "BEGIN; INSERT 0 1", 1, None),
        ("error", None, None, "23503"),
    ], outcomes(rows)
    assert "statement 3 (INSERT 0 1) undone by ROLLBACK TO SAVEPOINT a" in rows[9]["message"]
    assert ids(case.pg, 200) == [203]


# --- 5. COPY and FunctionCall --------------------------------------------------------------


def test_copy_in_out_copy_fail_and_a_function_call(case):
    """COPY FROM STDIN (rows counted as the server's tag says), one ended by CopyFail
    (57014) and one by a bad row (22P02), both leaving nothing; COPY TO STDOUT; COPY FROM
    STDIN over the extended protocol; a FunctionCall message, refused by the policy."""
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(m.query("COPY arw.t FROM STDIN"))
        assert c.read_frame()[:1] == b"G"
        c.send(m.frame(b"d", b"300\tx\n301\ty\n"), m.frame(b"d", b"302\tz\n"), m.frame(b"c", b""))
        assert answered(c) == [("C", "COPY 3"), ("Z", None)]
        c.send(m.query("COPY arw.t FROM STDIN"))
        assert c.read_frame()[:1] == b"G"
        c.send(m.frame(b"d", b"303\tx\n"), m.copy_fail("the client gave up"))
        assert answered(c) == [("E", "57014"), ("Z", None)]
        c.send(m.query("COPY arw.t FROM STDIN"))
        assert c.read_frame()[:1] == b"G"
        c.send(m.frame(b"d", b"304\tx\nnot a number\ty\n"), m.frame(b"c", b""))
        assert answered(c) == [("E", "22P02"), ("Z", None)]
        assert answered_query(c, "COPY (SELECT id FROM arw.t WHERE id < 5 ORDER BY id) TO STDOUT")[-1] == (
            "C", "COPY 4")
        c.send(parse("", "COPY arw.t FROM STDIN"), bind(), execute(), m.SYNC)
        assert [c.read_frame()[:1] for _ in range(3)] == [b"1", b"2", b"G"]
        c.send(m.frame(b"d", b"305\tq\n"), m.frame(b"c", b""), m.SYNC)  # (the first Sync: ignored)
        assert answered(c) == [("C", "COPY 1"), ("Z", None)]
        # abs(int4) (oid 1397) of '-5': one text argument, a text result
        c.send(m.frame(b"F", struct.pack(">Ihhhi", 1397, 1, 0, 1, 2) + b"-5" + b"\x00\x00"))
        assert answered(c) == [("E", "42501"), ("Z", None)]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["protocol"], r["decision"], r["rule"], r["outcome"], r["command_tag"], r["rows"],
             r["sqlstate"], r["copy"]) for r in rows] == [
        ("simple", "allowed", "scope.write", "ok", "COPY 3", 3, None, True),
        ("simple", "allowed", "scope.write", "error", None, None, "57014", True),
        ("simple", "allowed", "scope.write", "error", None, None, "22P02", True),
        ("simple", "allowed", "scope.read", "ok", "COPY 4", 4, None, True),
        ("extended", "allowed", "scope.write", "ok", "COPY 1", 1, None, True),
        ("function", "denied", "deny.function_call", "error", None, None, "42501", False),
    ]  # fmt: skip
    assert ids(case.pg, 300) == [300, 301, 302, 305]


# --- 6. cancels ---------------------------------------------------------------------------


def test_cancelled_statements_say_57014(case):
    """A long statement cancelled by pg_cancel_backend from another connection, and one
    cancelled by the protocol's CancelRequest through the proxy: each row is an error
    57014 (the server's "canceling statement due to user request"), the session goes on."""
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(m.query("SELECT pg_sleep(5)"))
        time.sleep(0.3)
        with RawClient.direct(case.pg) as d:
            assert d.scalar(f"SELECT pg_cancel_backend({c.backend_pid})") == "t"
        assert answered(c)[-2:] == [("E", "57014"), ("Z", None)]
        c.send(parse("", "SELECT pg_sleep(5)"), bind(), execute(), m.SYNC)
        time.sleep(0.3)
        with socket.create_connection((case.h.host, case.h.port)) as s:
            s.sendall(m.cancel_request(c.backend_pid, c.secret))
            s.recv(1)
        assert answered(c) == [("1", None), ("2", None), ("E", "57014"), ("Z", None)]
        assert answered_query(c, "SELECT 'after'") == [("C", "SELECT 1")]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["protocol"], r["outcome"], r["sqlstate"]) for r in rows] == [
        ("simple", "error", "57014"), ("extended", "error", "57014"), ("simple", "ok", None)]


# --- 7. values and texts ----------------------------------------------------------------


def test_binary_parameters_and_long_texts_in_pipelines(case):
    """Binary parameters (int4, int8, float8, bool, bytea) beside their text forms; texts
    over 64 KiB (classified off the proxy's event loop) pipelined with short ones and
    denials, in both protocols: each row has its own text, decision and outcome, in order."""
    typed = "SELECT $1::int4 + 1, $2::int8, $3::float8, $4::bool, $5::bytea"
    long_ok = "SELECT length('" + "x" * 70000 + "')"
    long_denied = f"{DENIED} WHERE 'x' <> '" + "y" * 70000 + "'"
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(parse("b", typed, [23, 20, 701, 16, 17]),
               bind(statement="b", params=[struct.pack(">i", 41), struct.pack(">q", -7),
                                           struct.pack(">d", 1.5), b"\x01", b"\x00\xff"],
                    param_formats=[1], result_formats=[1]),
               execute(), m.SYNC,
               bind(statement="b", params=[b"41", b"-7", b"1.5", b"t", b"\\x00ff"]),
               execute(), m.SYNC)  # fmt: skip
        assert [a[1] for a in answered(c) + answered(c) if a[0] == "C"] == ["SELECT 1"] * 2
        c.send(m.query(long_ok), m.query(DENIED), m.query(long_denied), m.query("SELECT 'short'"))
        assert [a[1] for q in range(4) for a in answered(c) if a[0] in "CE"] == [
            "SELECT 1", "42501", "42501", "SELECT 1"]
        c.send(parse("", long_denied), bind(), execute(), m.SYNC,
               parse("", long_ok), bind(), execute(), parse("", "SELECT 'after'"), bind(),
               execute(), m.SYNC)  # fmt: skip
        assert [a[1] for a in answered(c) + answered(c) if a[0] in "CE"] == [
            "42501", "SELECT 1", "SELECT 1"]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["text"], r["params"], r["decision"], r["outcome"]) for r in rows] == [
        (typed, '[41, -7, 1.5, true, "\\\\x00ff"]', "allowed", "ok"),
        (typed, '["41", "-7", "1.5", "t", "\\\\x00ff"]', "allowed", "ok"),
        (long_ok, None, "allowed", "ok"),
        (DENIED, None, "denied", "error"),
        (long_denied, None, "denied", "error"),
        ("SELECT 'short'", None, "allowed", "ok"),
        (long_denied, None, "denied", "error"),
        (long_ok, "[]", "allowed", "ok"),
        ("SELECT 'after'", "[]", "allowed", "ok"),
    ]


def test_a_null_parameter_is_not_the_text_null(case):
    """``$1 IS NULL`` is true for the one and false for the other: the answer must say
    which was bound (was: the Bind's NULL and the four-letter text both ``["NULL"]``, where
    the server logs ``$1 = NULL`` and ``$1 = 'NULL'``; a NULL is JSON null now)."""
    with case.client() as c:
        sid = one_live_session(case.h)
        c.send(parse("n", "SELECT $1::text IS NULL"), m.SYNC)
        answered(c)
        for value in (None, b"NULL"):
            c.send(bind(statement="n", params=[value]), execute(), m.SYNC)
            assert answered(c)[2] == ("C", "SELECT 1")
    rows, ran = case.judged(sid)
    assert [x.params for x in ran] == [[None], ["NULL"]]  # the server tells them apart
    assert [json.loads(r["params"]) for r in rows] == [[None], ["NULL"]]


# --- 8. the policy follows portals: decisions on an Execute and a Describe -------------


@with_scopes(SCOPES + " execute:arw.opener")
def test_a_portal_the_policy_refuses_is_that_messages_denial(opener, case):
    """With code in the database that opens cursors, an Execute and a Describe of a portal
    the client did not make are refused (deny.cursor, 34000), each in one write with the
    next statement: each refusal is its own message's row (a Describe's too: a denial),
    the statement after it keeps its own decision and ran (was: the next Query or Parse
    shown denied by deny.cursor, yet run; the Execute without its denial; the Describe's
    not in the answer)."""
    with case.client() as c:
        sid = one_live_session(case.h)
        assert answered_query(c, "SELECT 'first'") == [("C", "SELECT 1")]  # (portals followed)
        c.send(execute("nope", 1), m.SYNC, m.query("SELECT 'after'"))
        assert answered(c) == [("E", "34000"), ("Z", None)]
        assert answered(c)[-2:] == [("C", "SELECT 1"), ("Z", None)]
        c.send(m.frame(b"D", b"Pnope\x00"), m.SYNC, parse("", "SELECT 'parsed'"), bind(),
               execute(), m.SYNC)
        assert answered(c) == [("E", "34000"), ("Z", None)]
        assert answered(c)[-2:] == [("C", "SELECT 1"), ("Z", None)]
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["text"], r["decision"], r["rule"], r["outcome"], r["sqlstate"]) for r in rows] == [
        ("SELECT 'first'", "allowed", "default.no_relations", "ok", None),
        ("", "denied", "deny.cursor", "error", "34000"),
        ("SELECT 'after'", "allowed", "default.no_relations", "ok", None),
        ("", "denied", "deny.cursor", "error", "34000"),
        ("SELECT 'parsed'", "allowed", "default.no_relations", "ok", None),
    ]


@with_scopes(SCOPES + " execute:arw.opener")
def test_an_execute_of_a_cursor_a_function_opened_says_what_allowed_it(opener, case):
    with case.client() as c:
        sid = one_live_session(case.h)
        assert answered_query(c, "BEGIN") == [("C", "BEGIN")]
        assert answered_query(c, "SELECT arw.opener()") == [("C", "SELECT 1")]
        c.send(execute("<unnamed portal 1>", 2), m.SYNC)
        assert [a[0] for a in answered(c)] == list("DDsZ")
        assert answered_query(c, "COMMIT") == [("C", "COMMIT")]
    rows, ran = case.judged(sid)
    assert ran[2].text == "SELECT id FROM arw.t ORDER BY id"  # what the server ran
    assert (rows[2]["outcome"], rows[2]["rows"]) == ("suspended", 2)
    # the statement that returned the cursor, and the decision on it (the cursor's own query
    # is the function's: nothing recorded holds it)
    assert (rows[2]["text"], rows[2]["decision"]) == ("SELECT arw.opener()", "allowed"), rows[2]
    assert rows[2]["rule"] == rows[1]["rule"]


# --- 9. a session that ends mid-statement -----------------------------------------------


def test_a_client_killed_mid_statement(case):
    """The client's socket closes while its Query runs inside a block: the proxy cancels
    the statement (the server logs 57014) and ends the upstream session, which rolls the
    block back; nothing of it stays. The statement has no answer in the recording; the
    block's INSERT before it was rolled back: the one message the server had not answered
    holds no COMMIT, so the block could not commit (was: of unknown outcome)."""
    c = case.client()
    sid = one_live_session(case.h)
    assert answered_query(c, "BEGIN") == [("C", "BEGIN")]
    assert answered_query(c, "INSERT INTO arw.t VALUES (500, 'in block')") == [("C", "INSERT 0 1")]
    c.send(m.query("INSERT INTO arw.t VALUES (501, 'x'); SELECT pg_sleep(2)"))
    time.sleep(0.3)
    c.sock.close()
    session = case.answer(sid)
    rows, backend = session["statement_rows"], session["backend_pid"]
    wait_for(lambda: any(x.sqlstate == "57014" for x in
                         trace(log_entries(case.pg, backend, case.offset))),
             what="the server's cancel in its log")  # fmt: skip
    ran = trace(log_entries(case.pg, backend, case.offset))
    assert [(x.text, x.sqlstate) for x in ran] == [
        ("BEGIN", None), ("INSERT INTO arw.t VALUES (500, 'in block')", None),
        ("INSERT INTO arw.t VALUES (501, 'x'); SELECT pg_sleep(2)", "57014")]
    assert [(r["text"], r["outcome"], r["command_tag"]) for r in rows] == [
        ("BEGIN", "ok", "BEGIN"),
        ("INSERT INTO arw.t VALUES (500, 'in block')", "rolled back", "INSERT 0 1"),
        ("INSERT INTO arw.t VALUES (501, 'x'); SELECT pg_sleep(2)", "no answer", None),
    ]
    assert rows[1]["message"] == (
        "its transaction was still open when the session ended (disconnect) with 1 client "
        "message the server had not answered, which could not commit it: the server rolled "
        "it back")
    assert ids(case.pg, 500) == []


def test_a_block_whose_backend_another_connection_terminated(case):
    """pg_terminate_backend from another connection while the block's Query runs: the
    client gets FATAL 57P01 and no ReadyForQuery, the proxy ends the session (upstream), the
    server rolled the block back. The Query's row is that error; the INSERT before it was
    rolled back (was: of unknown outcome, "with 1 client message the server had not
    answered", where the client had none)."""
    c = case.client()
    sid = one_live_session(case.h)
    assert answered_query(c, "BEGIN") == [("C", "BEGIN")]
    assert answered_query(c, "INSERT INTO arw.t VALUES (520, 'in block')") == [("C", "INSERT 0 1")]
    c.send(m.query("SELECT pg_sleep(3)"))
    time.sleep(0.3)
    with RawClient.direct(case.pg) as d:
        assert d.scalar(f"SELECT pg_terminate_backend({c.backend_pid})") == "t"
    assert [error_fields(f).get("C") for f in c.frames_until_eof() if f[:1] == b"E"] == ["57P01"]
    c.sock.close()
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["outcome"], r["sqlstate"], r["message"]) for r in rows] == [
        ("ok", None, None),
        ("rolled back", None, "its transaction was still open when the session ended (upstream):"
                              " the server rolled it back"),
        ("error", "57P01", "terminating connection due to administrator command"),
    ]  # fmt: skip
    assert ids(case.pg, 520) == []


def test_a_flushed_execute_without_sync_when_the_session_ends(case):
    """An INSERT answered after a Flush, no Sync before Terminate: the server rolls its
    implicit transaction back at the session's end, and the row says so."""
    c = case.client()
    sid = one_live_session(case.h)
    c.send(parse("", "INSERT INTO arw.t VALUES (510, 'flushed')"), bind(), execute(),
           m.frame(b"H", b""))
    assert [c.read_frame()[:1] for _ in range(3)] == [b"1", b"2", b"C"]
    c.close()
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["outcome"], r["command_tag"]) for r in rows] == [("rolled back", "INSERT 0 1")]
    assert "the server rolled it back" in rows[0]["message"]
    assert ids(case.pg, 510) == []
