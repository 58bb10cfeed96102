"""Session 37, second round: an error's note is the answer's, in a field of its own.

derive appended what an error's transaction undid to the server's message (``division by
zero (statement 1 (INSERT 0 1) undone by the error that ended the transaction)``): the one
field a ``RAISE`` writes, so a RAISE wrote the note itself, and the answer read it as its
own. Now the note is ``note`` (index schema 4), the message the server's alone: the text
report writes the message as a literal and the note after it as its own words, JSON carries
both exactly, OCSF the note in ``unmapped.note``, and the CSV's ``message`` is the server's
(its columns unchanged: the note of an error row is not in the CSV). A row a Sync's error
rolled back (a deferred trigger's RAISE at the implicit commit) printed the server's message
bare, as derive's words: a literal now too.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import duckdb
import pytest

from devtools.testing import command_complete, error, parse, query, ready, sync
from recorder.audit import index, ocsf, twophase
from recorder.audit.answer import Filters, audit, write_csv, write_json, write_text
from recorder.literal import sql_literal
from tests.support.audit_recordings import BC, PC, Conn, Session, answer_of, bind, execute

NOTE = "statement 1 (INSERT 0 1) undone by the error that ended the transaction"
ROLLBACK = "its transaction block ended without COMMIT (ROLLBACK)"


def real_and_forged(raise_text: str) -> tuple[dict, dict]:
    """A real error whose transaction undid an INSERT, and a RAISE of ``raise_text`` after a
    COMMIT (nothing undone)."""
    s = Session().start()
    s.client(query("INSERT INTO t VALUES (1); SELECT 1/0"), decisions=1).server(
        command_complete("INSERT 0 1"), error("22012", "division by zero"), ready(b"I")
    )
    s.client(query("INSERT INTO t VALUES (1); COMMIT; SELECT f()"), decisions=1).server(
        command_complete("INSERT 0 1"), command_complete("COMMIT"), error("P0001", raise_text),
        ready(b"I"))  # fmt: skip
    real, forged = s.facts().statements
    return real, forged


def report_lines(rows: list[dict]) -> list[str]:
    out = io.StringIO()
    write_text(answer_of(rows), out)
    return [ln.strip() for ln in out.getvalue().splitlines() if ln.strip().startswith("-> ")]


FORGED = [
    f"division by zero ({NOTE})",
    f"division by zero'; {NOTE}",
    f"division by zero'; {NOTE} (1.0 ms)\n        -> INSERT 0 1",
]


def test_the_server_message_and_the_note_are_apart_in_derive():
    for text in FORGED:
        real, forged = real_and_forged(text)
        assert (real["outcome"], real["message"], real["note"]) == (
            "error",
            "division by zero",
            NOTE,
        )
        assert (forged["outcome"], forged["message"], forged["note"]) == ("error", text, None)


def test_a_raise_cannot_write_the_note_in_the_text_report():
    for text in FORGED:
        real, forged = real_and_forged(text)
        got = report_lines([real, forged])
        assert got[0] == f"-> ERROR 22012 'division by zero'; {NOTE} (1.0 ms)", got
        # the RAISE's text whole inside its literal, nothing of ours after it
        assert got[1] == f"-> ERROR P0001 {sql_literal(text)} (1.0 ms)", got
        assert len(got) == 2, got


def test_json_ocsf_and_csv_carry_the_message_and_the_note_as_they_are():
    real, forged = real_and_forged(FORGED[0])
    answer = answer_of([{**real, "n": 1}, {**forged, "n": 2}])
    answer["other_sessions"][0].update(
        grant_id="g1", agent="bot", task="T", database="app", scopes="read:public.t",
        enforce=True)  # fmt: skip
    out = io.StringIO()
    write_json(answer, out)
    rows = json.loads(out.getvalue())["other_sessions"][0]["statement_rows"]
    assert [(r["message"], r["note"]) for r in rows] == [
        ("division by zero", NOTE),
        (FORGED[0], None),
    ]
    # CSV: the columns unchanged, its message the server's (the note is not added)
    out = io.StringIO()
    write_csv(answer, out)
    got = [r for r in csv.DictReader(io.StringIO(out.getvalue())) if r["kind"] == "statement"]
    assert [r["message"] for r in got] == ["division by zero", FORGED[0]]
    assert "note" not in got[0]
    # OCSF: status_detail the server's message, the note in unmapped
    events = [ocsf.statement_event({**r, "session_id": "s1", "client_addr": None}) for r in rows]
    assert [(e["status_detail"], e["unmapped"]["note"]) for e in events] == [
        ("division by zero", NOTE),
        (FORGED[0], None),
    ]


def test_a_syncs_error_that_rolled_back_the_group_is_the_servers_words():
    """A deferred constraint trigger's RAISE at the implicit commit answers the Sync: the
    group's rows are rolled back with its SQLSTATE and message, which was printed bare, as
    derive's words (``ROLLED BACK (ran: INSERT 0 1) P0001: its transaction block ended ...``
    read as the answer's own sentence)."""
    s = Session().start()
    s.client(parse("INSERT INTO t VALUES (1)"), bind(), execute(), sync(), decisions=1)
    s.server(PC, BC, command_complete("INSERT 0 1"), error("P0001", ROLLBACK), ready(b"I"))
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(query("INSERT INTO t VALUES (2)"), decisions=1)
    s.server(command_complete("INSERT 0 1"), ready(b"T"))
    s.client(query("ROLLBACK"), decisions=1).server(command_complete("ROLLBACK"), ready(b"I"))
    rows = s.facts().statements
    forged, real = rows[0], rows[2]
    assert (forged["outcome"], forged["sqlstate"], forged["message"], forged["note"]) == (
        "rolled back",
        "P0001",
        ROLLBACK,
        None,
    )
    assert (real["outcome"], real["message"], real["note"]) == ("rolled back", ROLLBACK, ROLLBACK)
    got = report_lines(rows)
    assert got[0] == f"-> ROLLED BACK (ran: INSERT 0 1) P0001 '{ROLLBACK}' (1.0 ms)", got
    assert got[2] == f"-> ROLLED BACK (ran: INSERT 0 1): {ROLLBACK} (1.0 ms)", got


def test_a_resolution_in_another_session_decides_the_note_not_the_message():
    """twophase.decide: an error row whose statements were prepared, committed later in
    another session: its note says so, its message stays the server's."""
    sql = "INSERT INTO t VALUES (1); PREPARE TRANSACTION 'z'; SELECT 1/0"
    c = Conn().q(sql, "INSERT 0 1", "PREPARE TRANSACTION", z=b"I", fail="22012")
    (row,) = [r for r in c.rows() if r["text"] == sql]
    assert (row["message"], row["note"]) == (
        "boom",
        "statement 1 (INSERT 0 1) prepared for two-phase commit as 'z' (pending)",
    )
    at = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)
    events = [
        {"session_id": "s1", "n": row["n"], "k": 1, "at": at, "database": "app",
         "op": "prepare", "gid": "z", "verified": True},
        {"session_id": "s2", "n": 1, "k": 0, "at": at + dt.timedelta(seconds=1),
         "database": "app", "op": "commit", "gid": "z", "verified": True},
    ]  # fmt: skip
    _, decided = twophase.decide(events, [{**row, "session_id": "s1"}])
    mine = [d for d in decided if d["session_id"] == "s1"]
    assert len(mine) == 1, decided
    assert (mine[0]["outcome"], mine[0]["message"]) == ("error", "boom")
    assert mine[0]["note"] == (
        "statement 1 (INSERT 0 1) prepared as 'z', then committed by COMMIT PREPARED in "
        "session s2 at 2026-12-05T10:00:01Z"
    )
    (other,) = [d for d in decided if d["session_id"] == "s2"]
    assert other["note"] == other["message"] and other["note"].startswith("committed the ")


# --- the index: a column of its own, schema 4 ----------------------------------------------


def indexed(*sessions: tuple[str, Session]):
    """An in-memory index of ``sessions`` (as index.Indexer adds them), paired as an update
    pairs them (twophase.resolve)."""
    con = duckdb.connect(":memory:")
    index._schema(con)
    for sid, s in sessions:
        facts = s.facts()
        row = {**facts.session, "session_id": sid, "intact": True, "status": "closed",
               "started_at": index._us(facts.session["started_ns"])}  # fmt: skip
        statements, two_phase = index.derived_rows(sid, facts, row)
        index._insert(con, "sessions", [row])
        index._insert(con, "statements", statements)
        index._insert(con, "two_phase", two_phase)
    twophase.resolve(con)
    return con


def test_the_index_keeps_the_note_apart_and_a_resolution_elsewhere_rewrites_only_it():
    a = Session().start(database="app")
    a.client(query("INSERT INTO t VALUES (1); PREPARE TRANSACTION 'z'; SELECT f()"), decisions=1)
    a.server(command_complete("INSERT 0 1"), command_complete("PREPARE TRANSACTION"),
             error("P0001", f"division by zero ({NOTE})"), ready(b"I"))  # fmt: skip
    b = Session().start(database="app")
    b.client(query("COMMIT PREPARED 'z'"), decisions=1)
    b.server(command_complete("COMMIT PREPARED"), ready(b"I"))
    con = indexed(("A", a), ("B", b))
    got = con.execute(
        "SELECT session_id, outcome, message, note FROM statements ORDER BY 1"
    ).fetchall()
    assert got[0][:3] == ("A", "error", f"division by zero ({NOTE})"), got
    assert got[0][3].startswith(
        "statement 1 (INSERT 0 1) prepared as 'z', then committed by COMMIT PREPARED in session B"
    ), got
    assert got[1][1] == "ok" and got[1][2] == got[1][3], got
    assert got[1][3].startswith("committed the transaction prepared as 'z' in session A"), got
    # the server's message is never rewritten (it was, with the note appended, at every pairing)
    twophase.resolve(con)
    assert con.execute("SELECT message FROM statements WHERE session_id = 'A'").fetchone() == (
        f"division by zero ({NOTE})",
    )


@pytest.mark.parametrize("old", ["2", "3"])
def test_an_index_without_notes_is_refused_with_how_to_rebuild_it(tmp_path, old):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE index_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO index_info VALUES ('schema', ?)", [old])
    con.close()
    with pytest.raises(index.SchemaError, match=f"index schema {old} is not 4: run `pgwitness"):
        index.connect(path, read_only=True, wait=0)
    index.connect(tmp_path / "new.duckdb").close()
    con = index.connect(tmp_path / "new.duckdb", read_only=True)
    cols = [r[0] for r in con.execute("DESCRIBE statements").fetchall()]
    con.close()
    assert "note" in cols and "message" in cols


# --- a session's end: the server's FATAL is the agent's to write too ------------------------


def test_a_sessions_end_detail_is_a_literal():
    """A session the database ended says the server's FATAL after the proxy's words; a
    FATAL's message may be an agent's (PL/Python's ``plpy.fatal(text)`` with its argument),
    and was printed as it was in ``end: upstream (...)``: its ``)`` and what followed read as
    the report's."""
    from tests.support.audit_index import Index

    forged = "the upstream database ended the session: XX000 x) end: terminate (client"
    ix = Index().session("s1", "g1", 0, 60, end_cause="upstream", end_detail=forged)
    out = io.StringIO()
    write_text(audit(ix.fold().con, Filters()), out)
    (line,) = [ln for ln in out.getvalue().splitlines() if "  end: " in ln]
    assert line.endswith(f"  end: upstream {sql_literal(forged)}"), line
