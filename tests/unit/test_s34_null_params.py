"""Session 34: a NULL is not the text ``'NULL'``.

A Bind's parameter sent as NULL (length -1) and the four letters ``NULL`` sent as a value
are different values: ``$1 IS NULL`` is true for the one only, and the server's log says
``$1 = NULL`` and ``$1 = 'NULL'``. Both read ``"NULL"`` everywhere the recording was read
back (``recorder.replay._value``), so the answer could not say which was bound. Now a NULL
is None: JSON null in a row's ``params`` (the JSON answer, the text report, the CSV, the
index, Parquet, OCSF) and in ``replay --format json`` (a Bind's ``params``, a DataRow's
``values``); the transcript writes a Bind's values as the server's log does (``NULL``, or a
quoted literal) and its tables quote a text that would read as a NULL (docs/audit.md, "NULL
is not the text 'NULL'"). Text-format and binary-format parameters alike. Judged on
hand-made recordings (tests/support/audit_recordings.py); the integration test
tests/integration/test_s33_audit_rows.py::test_a_null_parameter_is_not_the_text_null holds
it to PostgreSQL's own log.
"""

from __future__ import annotations

import csv
import io
import json
import struct

import duckdb
import pytest

from devtools.testing import command_complete, execute, frame, ready, row_description, sync
from recorder import replay
from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_csv, write_json, write_text
from recorder.audit.export import export_local, read_back_sql
from recorder.records import Kind, dump_json
from tests.support.audit_recordings import BC, PC, Session

TEXT, BINARY = 0, 1
INT4, TEXT_OID = 23, 25
SQL = "SELECT $1::text IS NULL"
BIN_SQL = "SELECT $1::int4 IS NULL, $2::text IS NULL"
NULL_BYTES = b"NULL"  # the four letters, as a text value
NULL_HEX = "\\x" + NULL_BYTES.hex()  # a binary value of a type the row does not decode


def parse(sql: str, name: str, oids: tuple[int, ...] = ()) -> bytes:
    types = struct.pack(f">h{len(oids)}I", len(oids), *oids)
    return frame(b"P", name.encode() + b"\x00" + sql.encode() + b"\x00" + types)


def bind(stmt: str, params: list[bytes | None], formats: tuple[int, ...] = ()) -> bytes:
    body = b"\x00" + stmt.encode() + b"\x00"
    body += struct.pack(f">h{len(formats)}h", len(formats), *formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    return frame(b"B", body + struct.pack(">h", 0))


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack(">h", len(values))
    for v in values:
        body += struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v
    return frame(b"D", body)


def allowed(s: Session, sql: str) -> None:
    payload = {"denied": False, "outcome": "allowed", "sql": sql, "statements": []}
    s.meta("allow", dump_json(payload), kind=Kind.DECISION)


def bound(binds: list[tuple[list[bytes | None], tuple[int, ...]]], sql: str = SQL,
          oids: tuple[int, ...] = (TEXT_OID,)) -> Session:  # fmt: skip
    """A session that prepares ``sql`` as ``n`` and runs it once per bind (values,
    formats); the server answers each with a row of one NULL column and one ``'NULL'``."""
    s = Session().start().client(parse(sql, "n", oids), sync())
    allowed(s, sql)
    s.server(PC, ready())
    for values, formats in binds:
        s.client(bind("n", values, formats), execute(), sync())
        s.server(BC, row_description("a", "b"), data_row(None, NULL_BYTES),
                 command_complete("SELECT 1"), ready())  # fmt: skip
    return s


def text_params() -> Session:
    """``$1`` bound to NULL, then to the text ``'NULL'`` (text format)."""
    return bound([([None], ()), ([NULL_BYTES], ())])


def binary_params() -> Session:
    """``$1`` int4 and ``$2`` text in binary format: (NULL, 'NULL'), then (7, NULL)."""
    return bound([([None, NULL_BYTES], (BINARY,)), ([struct.pack(">i", 7), None], (BINARY,))],
                 BIN_SQL, (INT4, TEXT_OID))  # fmt: skip


# what each session's rows say it bound (a row's params, as JSON)
WANT = {text_params: [[None], ["NULL"]], binary_params: [[None, "NULL"], [7, None]]}


def params(s: Session) -> list[str | None]:
    return [r["params"] for r in s.facts().statements]


def answer(s: Session) -> dict:
    facts = s.facts()
    con = duckdb.connect(":memory:")
    index._schema(con)
    con.execute("SET TimeZone = 'UTC'")
    row = {**facts.session, "session_id": "A", "intact": True, "status": "closed",
           "started_at": index._us(facts.session["started_ns"])}  # fmt: skip
    statements, two_phase = index.derived_rows("A", facts, row)
    index._insert(con, "sessions", [row])
    index._insert(con, "statements", statements)
    index._insert(con, "two_phase", two_phase)
    return {"con": con, "answer": audit(con, Filters(session="A"))}


def transcript(s: Session, monkeypatch) -> str:
    monkeypatch.setattr(replay, "iter_records", lambda *_a, **_k: iter(s.records))
    out = io.StringIO()
    replay.replay_session(None, "s", out)  # type: ignore[arg-type]
    return out.getvalue()


def replayed_json(s: Session, monkeypatch) -> list[dict]:
    monkeypatch.setattr(replay, "iter_records", lambda *_a, **_k: iter(s.records))
    out = io.StringIO()
    replay.replay_json(None, "s", out)  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()]


# --- the rows and the answer ------------------------------------------------------------


def test_the_rows_say_null_and_the_text_apart():
    assert params(text_params()) == ["[null]", '["NULL"]']


def test_binary_params_say_null_and_the_text_apart():
    """Binary ones as the rows show them (decoded by the statement's types, session 35: a
    text sent in binary is its text, as the server's log shows it): the NULL of an int4 and
    of a text is null, the four letters in binary are the text 'NULL'."""
    assert [json.loads(p) for p in params(binary_params())] == [[None, "NULL"], [7, None]]


def test_a_refused_binds_null_is_null():
    """A Bind the database refused is a row of its own with its values (as an Execute's)."""
    s = Session().start().client(parse(SQL, ""), bind("", [b"7", None]), execute(), sync())
    allowed(s, SQL)
    s.server(PC, frame(b"E", b"SERROR\x00C42501\x00Mpermission denied\x00\x00"), ready())
    assert params(s) == ['["7", null]']


@pytest.mark.parametrize("session", [text_params, binary_params])
def test_the_json_answer_says_null(session):
    a = answer(session())["answer"]
    out = io.StringIO()
    write_json(a, out)
    (s,) = json.loads(out.getvalue())["other_sessions"]
    assert [json.loads(r["params"]) for r in s["statement_rows"]] == WANT[session]


def test_the_text_answer_shows_null_unquoted_and_the_text_quoted():
    out = io.StringIO()
    write_text(answer(text_params())["answer"], out)
    lines = [ln for ln in out.getvalue().splitlines() if SQL in ln]
    # (the text a literal since session 37: its closing quote before the params)
    assert [ln.split(SQL, 1)[1] for ln in lines] == ["' params [null]", """' params ["NULL"]"""]


def test_the_text_answer_of_binary_params():
    out = io.StringIO()
    write_text(answer(binary_params())["answer"], out)
    lines = [ln for ln in out.getvalue().splitlines() if BIN_SQL in ln]
    assert [ln.split(BIN_SQL, 1)[1] for ln in lines] == [
        """' params [null, "NULL"]""",
        "' params [7, null]",
    ]


@pytest.mark.parametrize("session", [text_params, binary_params])
def test_the_csv_says_null_and_the_text_apart(session):
    out = io.StringIO()
    write_csv(answer(session())["answer"], out)
    got = [r["params"] for r in csv.DictReader(io.StringIO(out.getvalue()))
           if r["kind"] == "statement"]  # fmt: skip
    assert [json.loads(p) for p in got] == WANT[session]


def test_ocsf_and_parquet_say_null_and_the_text_apart(tmp_path):
    con = answer(text_params())["con"]
    got = [e["unmapped"]["params"] for e in ocsf.events(con) if e["class_uid"] == 6005]
    assert got == ["[null]", '["NULL"]']
    export_local(con, tmp_path)
    exported = f"SELECT params FROM ({read_back_sql(str(tmp_path), 'statements')}) ORDER BY n"
    got = duckdb.connect(":memory:").execute(exported).fetchall()
    assert [json.loads(p) for (p,) in got] == [[None], ["NULL"]]


# --- replay ------------------------------------------------------------------------------


def wire(lines: list[dict], typ: str) -> list:
    key = "params" if typ == "B" else "values"
    return [ln[key] for ln in lines if ln["kind"] == "wire" and ln["frame"] == typ]


def test_replay_json_says_null_and_the_text_apart(monkeypatch):
    lines = replayed_json(text_params(), monkeypatch)
    assert wire(lines, "B") == [[None], ["NULL"]]
    assert wire(lines, "D") == [[None, "NULL"], [None, "NULL"]]  # DataRow values too


def test_replay_json_of_binary_params(monkeypatch):
    lines = replayed_json(binary_params(), monkeypatch)
    assert wire(lines, "B") == [[None, NULL_HEX], ["\\x00000007", None]]


def binds(text: str) -> list[str]:
    return [ln.split(" => ", 1)[1] for ln in text.splitlines() if " => bind" in ln]


def test_the_transcript_writes_values_as_the_servers_log_does(monkeypatch):
    """``NULL`` for a NULL, a quoted literal for a text (the server's log: ``$1 = NULL``,
    ``$1 = 'NULL'``)."""
    assert binds(transcript(text_params(), monkeypatch)) == ["bind n: $1=NULL", "bind n: $1='NULL'"]


def test_the_transcript_of_binary_params(monkeypatch):
    assert binds(transcript(binary_params(), monkeypatch)) == [
        f"bind n: $1=NULL, $2='{NULL_HEX}'",
        "bind n: $1='\\x00000007', $2=NULL",
    ]


def test_the_transcripts_table_quotes_a_text_that_reads_as_null(monkeypatch):
    """psql's cells, but a NULL is ``NULL`` and the text ``NULL`` is ``'NULL'``."""
    text = transcript(text_params(), monkeypatch)
    cells = [[c.strip() for c in ln.split("|")] for ln in text.splitlines()
             if ln.startswith(" " * 17) and "|" in ln and "-+-" not in ln]  # fmt: skip
    assert cells == [["a", "b"], ["NULL", "'NULL'"], ["a", "b"], ["NULL", "'NULL'"]]


def test_literals_and_cells():
    """A Bind's value quoted as an SQL literal (quotes doubled); a cell quoted only when it
    would read as a NULL or as a quoted value, so that every cell reads one way."""
    assert [replay._literal(v) for v in (None, "NULL", "ok", "it's", "")] == [
        "NULL", "'NULL'", "'ok'", "'it''s'", "''"]  # fmt: skip
    assert [replay._cell(v) for v in (None, "NULL", "null", "ok", "'NULL'", "it's", "")] == [
        "NULL", "'NULL'", "null", "ok", "'''NULL'''", "it's", ""]  # fmt: skip
    assert replay._value(None) is None and replay._value(b"NULL") == "NULL"
    assert replay._value(None, binary=True, type_oid=INT4) is None
