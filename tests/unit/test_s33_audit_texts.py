"""Session 33's audit texts: what the auditor's answer and replay say a client sent.

A Bind the database or the policy refused is a statement row of its own; it says which
values were bound, as an Execute's row does (the same rendering: binary ones typed where
the statement's parameter types are known, else ``\\x...``). And every text of a frame is
decoded in the session's client encoding as the server last reported it (ParameterStatus
``client_encoding``, at login and after a change) when the frame was recorded, as the
proxy's relay decoded it to decide it: a LATIN1 session's ``é`` (byte 0xE9) is ``é``, in the
rows, the transcript, ``replay --format json``, the index, the text answer and the OCSF
events alike. Judged on hand-made recordings (tests/support/audit_recordings.py);
tests/integration/test_s33_shape_records.py does it through the proxy and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import struct

import duckdb

import policy.encodings
from devtools.testing import (
    command_complete,
    data_row,
    error,
    execute,
    frame,
    ready,
    row_description,
    sync,
)
from proxy.relay import python_encoding
from recorder import encodings, replay
from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_text
from recorder.pgbinary import binary_text
from recorder.records import Kind, dump_json
from tests.support.audit_recordings import BC, PC, Session

REFUSED = error("42501", "permission denied for table acct")
SECRET = "SELECT secret FROM shp.acct WHERE id = $1"


def ps(name: str, value: str) -> bytes:
    """ParameterStatus."""
    return frame(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")


def q(raw: bytes) -> bytes:
    """A Query of these very bytes (its text in whatever encoding they are)."""
    return frame(b"Q", raw + b"\x00")


def parse(sql: bytes, name: str | bytes = "", oids: tuple[int, ...] = ()) -> bytes:
    raw = name if isinstance(name, bytes) else name.encode()
    types = struct.pack(f">h{len(oids)}I", len(oids), *oids)
    return frame(b"P", raw + b"\x00" + sql + b"\x00" + types)


def bind(stmt: str, params: list[bytes | None], formats: tuple[int, ...] = ()) -> bytes:
    body = b"\x00" + stmt.encode() + b"\x00"
    body += struct.pack(f">h{len(formats)}h", len(formats), *formats)
    body += struct.pack(">h", len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    return frame(b"B", body + struct.pack(">h", 0))


def decision(s: Session, payload: dict) -> None:
    s.meta("deny" if payload.get("denied") else "allow", dump_json(payload), kind=Kind.DECISION)


def allowed(s: Session, sql: str = "") -> None:
    decision(s, {"denied": False, "outcome": "allowed", "sql": sql, "statements": []})


def login(encoding: str = "UTF8") -> Session:
    """A session whose login's answer reports ``client_encoding`` (as the proxy records it)."""
    return Session().start().server(ps("client_encoding", encoding), ready())


def rows(s: Session) -> list[dict]:
    return s.facts().statements


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


def shown(text: str) -> list[str]:
    """What the transcript shows the client sending (``=>`` lines), in order."""
    return [ln.split(" => ", 1)[1] for ln in text.splitlines() if " => " in ln]


# --- 1. a refused Bind's values ------------------------------------------------------------


def prepared(s: Session, sql: str = SECRET, name: str = "secret_by_id",
             oids: tuple[int, ...] = ()) -> Session:  # fmt: skip
    s.client(parse(sql.encode(), name, oids), sync())
    allowed(s, sql)
    return s.server(PC, ready())


def test_each_bind_the_database_refused_says_its_values():
    """The attack test's case: prepared once, then bound to 9 and to 10, each refused at
    Bind (a column privilege, 42501 at PortalStart): each row says the value it bound."""
    s = prepared(login())
    for v in (b"9", b"10"):
        s.client(bind("secret_by_id", [v]), execute(), sync()).server(REFUSED, ready())
    got = [(r["text"], r["params"], r["outcome"], r["sqlstate"]) for r in rows(s)]
    assert got == [
        (SECRET, '["9"]', "error", "42501"),
        (SECRET, '["10"]', "error", "42501"),
    ]


def test_a_bind_refused_in_the_parses_own_sync_group_says_its_values():
    """Parse, Bind, Execute, Sync in one write: the Bind's error follows ParseComplete."""
    s = login().client(parse(SECRET.encode()), bind("", [b"7", None]), execute(), sync())
    allowed(s, SECRET)
    s.server(PC, REFUSED, ready())
    (row,) = rows(s)
    assert (row["params"], row["sqlstate"]) == ('["7", null]', "42501")  # a NULL: null


def test_a_refused_bind_shows_its_values_as_a_run_one_does():
    """The same Bind once run (its Execute's row) and once refused (its own row): the same
    params, binary ones typed by the statement's declared types (int4: a number) or shown
    as \\x... (a type not known), text ones as text."""
    sql = "SELECT $1::int4, $2::bytea, $3::text"
    s = prepared(login(), sql, "p", oids=(23, 17, 25))
    values: list[bytes | None] = [struct.pack(">i", 9), b"\x01\x02", b"x"]
    s.client(bind("p", values, (1, 1, 0)), execute(), sync())
    s.server(BC, data_row("9", "\\x0102", "x"), command_complete("SELECT 1"), ready())
    s.client(bind("p", values, (1, 1, 0)), execute(), sync()).server(REFUSED, ready())
    run, refused = rows(s)
    assert run["outcome"] == "ok" and refused["sqlstate"] == "42501"
    assert json.loads(run["params"]) == [9, "\\x0102", "x"]
    assert refused["params"] == run["params"]


def test_a_bind_the_policy_refused_says_its_values():
    """A statement whose object text a parameter pins is decided at each Bind: the refused
    Bind's row carries the Bind's decision and the value it was refused for."""
    pinned = "SELECT pg_get_expr(adbin, adrelid) FROM pg_catalog.pg_attrdef WHERE adrelid = $1"
    s = prepared(login(), pinned, "pin")
    s.client(bind("pin", [b"16999"]), execute(), sync())
    decision(s, {"denied": True, "outcome": "denied", "message": "Bind", "statement": "pin",
                 "statements": [{"sql": pinned, "allowed": False, "rule": "deny.catalog",
                                 "reason": "secret.payroll is not granted"}]})  # fmt: skip
    s.server(error("42501", "pgwitness: task t may not read secret.payroll (rule deny.catalog)"),
             ready())  # fmt: skip
    (row,) = rows(s)
    assert (row["text"], row["decision"], row["rule"]) == (pinned, "denied", "deny.catalog")
    assert row["params"] == '["16999"]'


def test_the_text_answer_and_ocsf_say_a_refused_binds_values():
    s = prepared(login())
    s.client(bind("secret_by_id", [b"9"]), execute(), sync()).server(REFUSED, ready())
    ix = Index().add("A", s)
    a = audit(ix.con, Filters(session="A"))
    (row,) = a["other_sessions"][0]["statement_rows"]
    assert row["params"] == '["9"]'
    out = io.StringIO()
    write_text(a, out)
    assert f'\'{SECRET}\' params ["9"]' in out.getvalue()
    (e,) = [e for e in ocsf.events(ix.con) if e["class_uid"] == 6005]
    assert e["unmapped"]["params"] == '["9"]'


# --- 2. texts in the session's client encoding ----------------------------------------------


def test_the_recorder_reads_every_encoding_name_as_the_relay_does():
    """One table (``recorder.encodings``) serves the policy's allowlist, the relay's codec
    and the recorder's readers: every name reads alike in all three (off the allowlist, or
    unknown: UTF-8)."""
    assert policy.encodings.ALIASES is encodings.ALIASES
    assert policy.encodings.CODECS is encodings.CODECS
    for name in [*encodings.ALIASES, *encodings.CODECS, "SJIS", "BIG5", "Latin-1",
                 "iso_8859_1", "win1252", "nonesuch", "", "x" * 80]:  # fmt: skip
        assert encodings.python_codec(name) == policy.encodings.python_codec(name), name
        assert encodings.session_codec(name) == python_encoding(name), name
        safe = policy.encodings.is_safe_encoding(name)
        assert safe == (encodings.python_codec(name) is not None), name


def latin1_session() -> Session:
    """A UTF8 login, ``SET client_encoding TO 'LATIN1'``, then texts with é (byte 0xE9): a
    refused Query (the server's message quotes it), a Parse, a Bind of a text value, rows."""
    s = login("UTF8").client(q(b"SET client_encoding TO 'LATIN1'"))
    allowed(s)
    s.server(command_complete("SET"), ps("client_encoding", "LATIN1"), ready())
    s.client(q("SELECT secret FROM shp.acct WHERE id = 9 AND 'é' <> ''".encode("latin-1")))
    allowed(s)
    s.server(frame(b"E", b"SERROR\x00VERROR\x00C42501\x00Mpermission denied near '\xe9'\x00\x00"),
             ready())  # fmt: skip
    s.client(parse("SELECT name FROM t WHERE name <> $1 AND 'é' <> ''".encode("latin-1"), "n"),
             bind("n", ["é".encode("latin-1")]), execute(), sync())  # fmt: skip
    allowed(s)
    s.server(PC, BC, row_description("name"), frame(b"D", b"\x00\x01\x00\x00\x00\x04Jos\xe9"),
             command_complete("SELECT 1"), ready())  # fmt: skip
    return s


def test_a_latin1_sessions_rows_read_as_it_ran():
    got = rows(latin1_session())
    said = [(r["text"], r["params"] and json.loads(r["params"]), r["sqlstate"], r["message"])
            for r in got]  # fmt: skip
    assert said == [
        ("SET client_encoding TO 'LATIN1'", None, None, None),
        ("SELECT secret FROM shp.acct WHERE id = 9 AND 'é' <> ''", None, "42501",
         "permission denied near 'é'"),
        ("SELECT name FROM t WHERE name <> $1 AND 'é' <> ''", ["é"], None, None),
    ]  # fmt: skip


def test_a_latin1_sessions_replay_reads_as_it_ran(monkeypatch):
    s = latin1_session()
    text = transcript(s, monkeypatch)
    assert shown(text)[1:] == [  # (each text a literal since session 37's second round)
        "'SELECT secret FROM shp.acct WHERE id = 9 AND ''é'' <> '''''",
        "parse n: 'SELECT name FROM t WHERE name <> $1 AND ''é'' <> '''''",
        "bind n: $1='é'",
    ]
    assert "ERROR 42501: 'permission denied near ''é'''" in text
    assert "\n                 José\n" in text  # the row's value
    assert "\ufffd" not in text
    lines = [ln for ln in replayed_json(s, monkeypatch) if ln["kind"] == "wire"]
    c2s = [ln for ln in lines if ln["direction"] == "c2s"]
    assert [ln.get("sql") for ln in c2s if ln["frame"] in ("Q", "P")][1:] == [
        "SELECT secret FROM shp.acct WHERE id = 9 AND 'é' <> ''",
        "SELECT name FROM t WHERE name <> $1 AND 'é' <> ''",
    ]
    assert [ln["params"] for ln in c2s if ln["frame"] == "B"] == [["é"]]
    assert [ln["values"] for ln in lines if ln["frame"] == "D"] == [["José"]]
    errors = [ln["fields"]["M"] for ln in lines if ln["frame"] == "E" and ln["direction"] == "s2c"]
    assert errors == ["permission denied near 'é'"]


def test_the_login_reports_the_encoding():
    """No SET: the login's ParameterStatus (the client's startup asked for LATIN1) says it."""
    s = login("LATIN1").client(q("SELECT 'é'".encode("latin-1")))
    allowed(s)
    s.server(command_complete("SELECT 1"), ready())
    assert [r["text"] for r in rows(s)] == ["SELECT 'é'"]


def test_a_frame_sent_while_the_change_is_in_flight_reads_as_the_relay_read_it(monkeypatch):
    """A LATIN1 session sends ``SET client_encoding TO 'WIN1251'`` and, in the same write,
    a Query with byte 0xE9, before the server's ParameterStatus came back: the relay read it
    in the encoding last reported (LATIN1: 'é') and refused it (ENCODING_IN_FLIGHT); the
    same byte sent after the report is WIN1251's 'й'."""
    s = login("LATIN1").client(q(b"SET client_encoding TO 'WIN1251'"), q(b"SELECT '\xe9'"))
    allowed(s)
    decision(s, {"denied": True, "outcome": "denied", "sql": "SELECT 'é'", "statements": [],
                 "error": "pgwitness may not check a statement holding non-ASCII bytes while "
                          "..."})  # fmt: skip
    s.server(command_complete("SET"), ps("client_encoding", "WIN1251"), ready(),
             error("55000", "pgwitness may not check ..."), ready())  # fmt: skip
    s.client(q(b"SELECT '\xe9'"))
    allowed(s)
    s.server(command_complete("SELECT 1"), ready())
    want = ["SET client_encoding TO 'WIN1251'", "SELECT 'é'", "SELECT 'й'"]
    got = rows(s)
    assert [r["text"] for r in got] == want
    assert [r["decision"] for r in got] == ["allowed", "denied", "allowed"]
    assert shown(transcript(s, monkeypatch)) == [replay._literal(w) for w in want]
    assert [ln["sql"] for ln in replayed_json(s, monkeypatch) if ln.get("frame") == "Q"] == want


def test_an_encoding_off_the_allowlist_reads_as_utf8_as_the_relay_does():
    """A dry run lets SJIS through: the relay reads it as UTF-8 from the server's report on
    (an enforcing session ends there); so does the audit, LATIN1 before it."""
    s = login("LATIN1").client(q("SELECT 'é'".encode("latin-1")))
    allowed(s)
    s.server(command_complete("SELECT 1"), ready())
    s.client(q(b"SET client_encoding TO 'SJIS'"))
    allowed(s)
    s.server(command_complete("SET"), ps("client_encoding", "SJIS"), ready())
    s.client(q("SELECT 'ü'".encode()))
    allowed(s)
    s.server(command_complete("SELECT 1"), ready())
    assert [r["text"] for r in rows(s)] == ["SELECT 'é'", "SET client_encoding TO 'SJIS'",
                                            "SELECT 'ü'"]  # fmt: skip


def test_a_statement_name_is_read_in_the_encoding_of_its_frame():
    """A prepared statement named with a LATIN1 byte, bound after the session went back to
    UTF8: the server knows it by its characters, and so does the audit (the Execute's row
    has the Parse's text)."""
    s = login("LATIN1").client(parse(b"SELECT 1", b"st\xe9"), sync())
    allowed(s, "SELECT 1")
    s.server(PC, ready())
    s.client(q(b"SET client_encoding TO 'UTF8'"))
    allowed(s)
    s.server(command_complete("SET"), ps("client_encoding", "UTF8"), ready())
    s.client(bind("sté", []), execute(), sync())
    s.server(BC, data_row("1"), command_complete("SELECT 1"), ready())
    assert [r["text"] for r in rows(s)] == ["SET client_encoding TO 'UTF8'", "SELECT 1"]


def test_binary_text_values_are_in_the_sessions_encoding():
    """Text types (and jsonb's text) in binary format: the server converts them to the
    client encoding as it does text-format values."""
    assert binary_text(b"Jos\xe9", 25, "latin-1") == "José"
    assert binary_text(b"\x01\"\xe9\"", 3802, "latin-1") == '"é"'
    assert binary_text("José".encode(), 1043) == "José"


def test_the_index_answer_and_ocsf_read_as_it_ran():
    ix = Index().add("A", latin1_session())
    a = audit(ix.con, Filters(session="A"))
    texts = [r["text"] for r in a["other_sessions"][0]["statement_rows"]]
    assert texts[1:] == ["SELECT secret FROM shp.acct WHERE id = 9 AND 'é' <> ''",
                         "SELECT name FROM t WHERE name <> $1 AND 'é' <> ''"]  # fmt: skip
    out = io.StringIO()
    write_text(a, out)
    assert "AND ''é'' <> '''''" in out.getvalue() and "\ufffd" not in out.getvalue()
    got = [e["query_info"]["query_string"] for e in ocsf.events(ix.con) if e["class_uid"] == 6005]
    assert got == texts


# --- an in-memory index, as index.Indexer fills it --------------------------------------------


class Index:
    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        index._schema(self.con)
        self.con.execute("SET TimeZone = 'UTC'")

    def add(self, sid: str, s: Session) -> Index:
        facts = s.facts()
        row = {**facts.session, "session_id": sid, "intact": True, "status": "closed",
               "started_at": index._us(facts.session["started_ns"])}  # fmt: skip
        statements, two_phase = index.derived_rows(sid, facts, row)
        row["errors"] = sum(st["outcome"] in ("error", "rolled back") for st in statements)
        index._insert(self.con, "sessions", [row])
        index._insert(self.con, "statements", statements)
        index._insert(self.con, "two_phase", two_phase)
        return self

