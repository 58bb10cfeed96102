"""Session 33's audit texts: what the auditor's answer says a client sent.

A Bind the database or the policy refused is a statement row of its own; it says which
values were bound, as an Execute's row does (the same rendering: binary ones typed where
the statement's parameter types are known, else ``\\x...``). Judged on hand-made recordings
(tests/support/audit_recordings.py); tests/integration/test_s33_shape_records.py does it
through the proxy and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import struct

import duckdb

from devtools.testing import (
    command_complete,
    data_row,
    error,
    execute,
    frame,
    ready,
    sync,
)
from recorder import replay
from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_text
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
    assert (row["params"], row["sqlstate"]) == ('["7", "NULL"]', "42501")


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
    assert f'{SECRET} params ["9"]' in out.getvalue()
    (e,) = [e for e in ocsf.events(ix.con) if e["class_uid"] == 6005]
    assert e["unmapped"]["params"] == '["9"]'


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

