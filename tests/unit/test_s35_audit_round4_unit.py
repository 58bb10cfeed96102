"""Session 35, round 4: the audit answer's lies, on hand-made index rows (no proxy).

* a recording that did not verify had no OCSF event (the CSV's ``recording.not_intact`` rows
  and the Parquet ``recordings`` table say it): a lake fed OCSF alone read every event as
  standing on verified recordings. Each one is now a Detection Finding (2004), in every
  export, whatever its window (``ocsf.not_intact_events``);
* a notification the proxy withheld (``notification.withheld``, deny.listen) was in no
  list of denials, and ``audit --denied`` / ``sessions --denied`` left its session out,
  though the answer said what the agent was denied: it is a ``notification`` row of the
  ``denials`` view now (the JSON's and text's denials; its CSV row stays the
  ``notification.withheld`` one, not a second), and counted in ``sessions.denials``;
* the Parquet export had no notifications (received or withheld): a ``notifications``
  table (and view) now, never a payload.

And: a 25P02 Execute of the unnamed portal after a Query failing at run time named the
statement bound before; an Execute of a cursor whose name a function returned as text
(session 34's gap (b): a dry run runs it) had no text; cancel requests were in no format,
nor (in OCSF) a session's end; a session the database ended gave no FATAL; the text report
cut a statement by its escapes; ``--denied`` kept received notifications.

Each test fails without its fix. Through the proxy: tests/integration/test_s35_audit_round4.py.
"""

from __future__ import annotations

import csv
import io
import json

import duckdb

from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, sessions_list, write_csv, write_text
from recorder.audit.export import export_local
from tests.support.audit_index import Index, at, us


def with_notifications(withheld: bool = True) -> Index:
    ix = Index().session("s1", "g1", 0, 60).session("s2", "g1", 0, 60)
    rows = [
        {
            "session_id": "s1",
            "seq": 4,
            "ts": us(10),
            "kind": "notification",
            "payload": json.dumps({"channel": "ok", "pid": 77, "bytes": 18}),
            "verified": True,
        }
    ]
    if withheld:
        rows.append(
            {
                "session_id": "s1",
                "seq": 3,
                "ts": us(10),
                "kind": "notification.withheld",
                "payload": json.dumps(
                    {
                        "channel": "vault",
                        "bytes": 30,
                        "rule": "deny.listen",
                        "n": 1,
                        "more_not_recorded": False,
                    }
                ),
                "verified": True,
            }
        )
    index._insert(ix.con, "session_events", rows)  # fmt: skip
    return ix


# --- a withheld notification is a denial ---------------------------------------------------


def test_a_withheld_notification_is_among_the_answers_denials():
    a = audit(with_notifications().con, Filters())
    d = [(x["source"], x["session_id"], x["rule"], x["n"]) for x in a["denials"]]
    assert d == [("notification", "s1", "deny.listen", None)], a["denials"]
    assert "vault" in a["denials"][0]["message"]
    out = io.StringIO()
    write_text(a, out)
    assert "DENIALS (1)" in out.getvalue() and "notification 'bot' deny.listen" in out.getvalue()


def test_denied_keeps_a_session_with_a_withheld_notification_in_audit_and_sessions():
    con = with_notifications().con
    a = audit(con, Filters(denied=True))
    assert [s["session_id"] for s in a["other_sessions"]] == ["s1"], a["other_sessions"]
    assert [s["session_id"] for s in sessions_list(con, Filters(denied=True))] == ["s1"]
    # outside the window: neither
    assert audit(con, Filters(denied=True, since=at(20)))["other_sessions"] == []
    assert sessions_list(con, Filters(denied=True, since=at(20))) == []
    # a received notification alone denies nothing
    con = with_notifications(withheld=False).con
    assert audit(con, Filters(denied=True))["other_sessions"] == []
    assert sessions_list(con, Filters(denied=True)) == []


def test_the_csv_has_one_row_for_a_withheld_notification():
    """Its ``notification.withheld`` row (decision denied, its rule): not a second one
    taken for a dry run's login (``login.would_deny``, the other denial of no statement)."""
    out = io.StringIO()
    write_csv(audit(with_notifications().con, Filters()), out)
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(out.getvalue()))]
    assert kinds.count("notification.withheld") == 1 and "login.would_deny" not in kinds, kinds


# --- OCSF: a recording that did not verify ------------------------------------------------


def tampered() -> Index:
    ix = Index().session("s1", "g1", 0, 60)
    ix.con.execute(
        "UPDATE recordings SET intact = false, status = 'tampered', "
        "problems = '[\"modified: 0000000001.chunk\"]' WHERE session_id = 's1'"
    )
    return ix


def test_ocsf_has_an_event_for_a_recording_that_did_not_verify():
    evs = [
        e
        for e in ocsf.events(tampered().con)
        if e.get("unmapped", {}).get("event") == "recording.not_intact"
    ]
    assert len(evs) == 1, evs
    (e,) = evs
    assert (
        e["class_uid"],
        e["type_uid"],
        e["unmapped"]["status"],
        e["session"]["uid"],
        e["unmapped"]["problems"],
    ) == (2004, 200401, "tampered", "s1", ["modified: 0000000001.chunk"]), e
    assert e["time"] == int(at(0).timestamp() * 1000)  # dated as the Parquet export dates it
    assert not [
        e
        for e in ocsf.events(Index().session("s1", "g1", 0, 60).con)
        if e.get("unmapped", {}).get("event") == "recording.not_intact"
    ]


def test_a_days_ocsf_export_holds_every_recording_that_did_not_verify(tmp_path):
    """As a day's Parquet ``recordings`` does: one of another day may belong to its rows."""
    ix = tampered()
    export_local(ix.con, tmp_path, day=at(0).date().replace(day=3), fmt="ocsf")
    (f,) = list(tmp_path.rglob("*.jsonl"))
    assert f.parent.name == "event_date=2026-12-03"
    evs = [json.loads(x) for x in f.read_text().splitlines()]
    assert [e["unmapped"]["session_id"] for e in evs] == ["s1"], evs


# --- Parquet: the notifications ----------------------------------------------------------


def test_the_parquet_export_has_the_notifications(tmp_path):
    export_local(with_notifications().con, tmp_path)
    got = duckdb.sql(
        f"SELECT session_id, delivered, channel, bytes, pid, rule, CAST(event_date AS VARCHAR) FROM read_parquet("
        f"'{tmp_path}/notifications/*/*.parquet', hive_partitioning = true) ORDER BY seq"
    ).fetchall()
    assert got == [("s1", False, "vault", 30, None, "deny.listen", "2026-12-01"),
                   ("s1", True, "ok", 18, 77, None, "2026-12-01")], got  # fmt: skip


# --- 25P02 after a failed simple Query: which unnamed portal --------------------------------


def execute_after_a_failed_query(code: str) -> list[tuple]:
    """In a block: the unnamed portal bound (not run), a single-statement Query failing
    with ``code`` (nothing before its error), then an Execute of the unnamed portal."""
    from devtools.testing import bind, error, execute, parse, query, ready, sync
    from tests.support.audit_recordings import BC, PC, Session

    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(frame_c("BEGIN"), ready(b"T"))
    s.client(parse("SELECT v FROM t"), bind([]), sync(), decisions=1).server(PC, BC, ready(b"T"))
    s.client(query("UPDATE t SET id = v::int"), decisions=1)
    s.server(error(code, "it failed"), ready(b"E"))
    s.client(execute(), sync()).server(error("25P02", "current transaction is aborted"),
                                       ready(b"E"))  # fmt: skip
    return [(r["text"], r["sqlstate"]) for r in s.facts().statements]


def frame_c(tag: str) -> bytes:
    from devtools.testing import command_complete

    return command_complete(tag)


def test_a_25p02_after_a_query_failing_at_run_time_names_no_old_statement():
    """``UPDATE ... SET id = v::int`` fails at run time (22P02): the server had made its
    portal in place of the bound one, and the Execute's 25P02 is of that portal (its log:
    ``STATEMENT: UPDATE ...``). The row named the bound ``SELECT``, which the server no longer
    held; derive cannot tell which portal it was (a failure in planning leaves the old one):
    no text."""
    rows = execute_after_a_failed_query("22P02")
    assert rows[-1] == ("", "25P02"), rows


def test_a_25p02_after_a_query_failing_in_parse_analysis_names_the_bound_statement():
    rows = execute_after_a_failed_query("42703")  # an unknown column: no portal was made
    assert rows[-1] == ("SELECT v FROM t", "25P02"), rows


# --- session 34's gap (b): a cursor's name returned as text -------------------------------


def test_an_execute_of_a_cursor_named_in_a_text_value_names_the_statement_that_returned_it():
    """A granted function opens a cursor and returns its name as ``text`` (no refcursor
    column says so); in a dry run the proxy lets the Execute of that name through and the
    server runs the cursor's query (its log: ``execute textcur: SELECT s FROM secret``). The
    row had no text at all, a ``SELECT 1`` of nothing: it names the statement whose row
    returned the name now, and says what ran."""
    from devtools.testing import command_complete, data_row, query, ready, row_description, sync
    from tests.support.audit_recordings import Session

    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(query("SELECT open_text()"), decisions=1)
    s.server(row_description("open_text"), data_row("textcur"), command_complete("SELECT 1"),
             ready(b"T"))  # fmt: skip
    s.client(frame_e("textcur"), sync(), decisions=1)
    s.server(data_row("hidden"), command_complete("SELECT 1"), ready(b"T"))
    s.client(frame_e("other"), sync(), decisions=1)
    s.server(data_row("x"), command_complete("SELECT 1"), ready(b"T"))
    rows = [(r["text"], r["command_tag"], bool(r["message"])) for r in s.facts().statements]
    assert rows[2:] == [("SELECT open_text()", "SELECT 1", True), ("", "SELECT 1", False)], rows


def frame_e(portal: str) -> bytes:
    import struct

    from devtools.testing import frame

    return frame(b"E", portal.encode() + b"\x00" + struct.pack("!i", 0))


# --- cancel requests; OCSF's session end ----------------------------------------------------


def with_a_cancel() -> Index:
    ix = Index().session("s1", "g1", 0, 60)
    index._insert(
        ix.con,
        "statements",
        [
            {
                "session_id": "s1",
                "n": 1,
                "ts": us(1),
                "ended_at": us(9),
                "text": "SELECT pg_sleep(9)",
                "duration_ms": 8000.0,
                "outcome": "error",
                "sqlstate": "57014",
                "verified": True,
            },
            {
                "session_id": "s1",
                "n": 2,
                "ts": us(20),
                "ended_at": us(21),
                "text": "SELECT 1",
                "duration_ms": 1.0,
                "outcome": "ok",
                "verified": True,
            },
        ],
    )
    index._insert(ix.con, "session_events", [
        {"session_id": "s1", "seq": 7, "ts": us(5), "kind": "cancel",
         "payload": json.dumps({"from": "10.0.0.2:6000"}), "verified": True},
        {"session_id": "s1", "seq": 9, "ts": us(30), "kind": "cancel",
         "payload": json.dumps({"from": "10.0.0.3:6001"}), "verified": True}])  # fmt: skip
    return ix


def test_the_answer_says_who_sent_a_cancel_request_and_what_ran_then():
    """The proxy records each cancel request it receives for a session (``cancel``: from
    where); the answer said nothing of them, in any format. Each session lists them, with
    the statement running then (the server's 57014 on it says it took)."""
    a = audit(with_a_cancel().con, Filters())
    (s,) = a["other_sessions"]
    assert [(c["client"], c["n"]) for c in s["cancels"]] == [
        ("10.0.0.2:6000", 1),
        ("10.0.0.3:6001", None),
    ], s["cancels"]
    out = io.StringIO()
    write_text(a, out)
    assert "CANCEL REQUEST from 10.0.0.2:6000 (statement 1 running)" in out.getvalue()
    out = io.StringIO()
    write_csv(a, out)
    rows = [(r["kind"], r["client"], r["n"]) for r in csv.DictReader(io.StringIO(out.getvalue()))
            if r["kind"] == "cancel"]  # fmt: skip
    assert rows == [("cancel", "10.0.0.2:6000", "1"), ("cancel", "10.0.0.3:6001", "")], rows
    evs = [e for e in ocsf.events(with_a_cancel().con) if e["unmapped"].get("event") == "cancel"]
    assert [(e["unmapped"]["from"], e["unmapped"]["n"]) for e in evs] == [
        ("10.0.0.2:6000", 1),
        ("10.0.0.3:6001", None),
    ], evs
    assert audit(with_a_cancel().con, Filters(since=at(10)))["other_sessions"][0]["cancels"] == [
        {"ts": "2026-12-01T12:00:30Z", "client": "10.0.0.3:6001", "n": None, "verified": True}
    ]


def test_the_parquet_export_has_the_cancel_requests(tmp_path):
    export_local(with_a_cancel().con, tmp_path)
    got = duckdb.sql(f"SELECT session_id, client, n FROM read_parquet("
                     f"'{tmp_path}/cancels/*/*.parquet') ORDER BY ts").fetchall()  # fmt: skip
    assert got == [("s1", "10.0.0.2:6000", 1), ("s1", "10.0.0.3:6001", None)], got


def test_ocsf_says_when_and_why_a_session_ended():
    """The CSV's ``session.end`` row and the Parquet ``sessions`` say it; OCSF had the
    session's start (the accepted login) and no end: a session ended by a revocation read as
    one still open."""
    ix = Index().session("s1", "g1", 0, 60, end_cause="revoked", end_detail="by alice")
    evs = [e for e in ocsf.events(ix.con) if e["unmapped"].get("event") == "session.end"]
    assert [(e["class_uid"], e["activity_id"], e["time"], e["unmapped"]["end_cause"],
             e["session"]["uid"]) for e in evs] == [
        (3002, 2, int(at(60).timestamp() * 1000), "revoked", "s1")], evs  # fmt: skip


def test_denied_keeps_the_withheld_notifications_only():
    """As it keeps the denied statements only: a notification the client received, or a
    cancel request, was denied nothing."""
    a = audit(with_notifications().con, Filters(denied=True))
    assert [x["channel"] for s in a["other_sessions"] for x in s["notifications"]] == ["vault"]
    a = audit(with_a_cancel().con, Filters(denied=True))
    assert all(s["cancels"] == [] for s in a["other_sessions"])


# --- the text report's cut counts the statement's characters, not its escapes ---------------


def text_of(statement: str) -> str:
    from tests.support.audit_recordings import answer_of

    a = answer_of([{"n": 1, "text": statement, "decision": "denied", "rule": "deny.x",
                    "params": None, "command_tag": None, "message": "no", "outcome": "error",
                    "sqlstate": "42501", "reason": "no"}])  # fmt: skip
    a["denials"] = [{"ts": "2026-12-05T10:00:00Z", "source": "policy", "agent": "a",
                     "rule": "deny.x", "sqlstate": "42501", "text": statement, "message": "no",
                     "verified": True}]  # fmt: skip
    out = io.StringIO()
    write_text(a, out)
    return out.getvalue()


def test_a_short_statement_of_many_newlines_is_not_cut():
    """150 characters, 60 of them newlines: the report cut it as one of 210 characters (its
    escapes counted), saying ``10 more of 210 characters``: the JSON has 150."""
    statement = "SELECT 1" + "\n" * 60 + "x" * 82
    out = text_of(statement)
    assert "statement cut" not in out, out
    assert out.count("SELECT 1" + "\\n" * 60 + "x" * 82) == 2, out  # its line and its denial's


def test_a_cut_never_falls_inside_an_escape_and_counts_characters():
    statement = "x" * 199 + "\u202e" + "y" * 50  # the override is the 200th character
    out = text_of(statement)
    assert ("x" * 199 + "\\u202e' ...[statement cut: 50 more of 250 characters") in out, out
    assert "\u202e" not in out


# --- a session the database ended: why, in the server's words --------------------------------


def ended_by_the_server(fatal: bytes) -> dict:
    from devtools.testing import query, ready
    from recorder.records import dump_json
    from tests.support.audit_recordings import SELECT1, Session

    s = Session().start()
    s.client(query("SELECT 1"), decisions=1).server(SELECT1, ready())
    s.server(fatal)
    s.meta(
        "session.end",
        dump_json(
            {"cause": "upstream", "detail": "the upstream database ended the session (FATAL)"}
        ),
    )
    return s.facts().session


def test_a_session_the_database_ended_says_why_as_the_server_did():
    """``pg_terminate_backend`` of an idle session: its end said ``the upstream database
    ended the session (FATAL)``, as for an idle transaction's timeout or a shutdown; the
    recording holds the server's FATAL (57P01, "terminating connection due to administrator
    command"), which says which."""
    from devtools.testing import error

    fatal = error("57P01", "terminating connection due to administrator command", "FATAL")
    s = ended_by_the_server(fatal)
    assert s["end_detail"] == (
        "the upstream database ended the session (FATAL): 57P01 "
        "terminating connection due to administrator command"
    ), s


def test_an_index_written_before_the_new_views_is_answered_read_only(tmp_path):
    """An index of the same schema written before ``cancels`` and ``notifications`` were
    views (``audit --no-update`` opens it read-only: no view is made): the answer, OCSF and
    the export read them all the same."""
    ix = with_a_cancel()
    ix.con.execute("DROP VIEW cancels")
    ix.con.execute("DROP VIEW notifications")
    assert audit(ix.con, Filters())["other_sessions"][0]["cancels"]
    assert [e for e in ocsf.events(ix.con) if e["unmapped"].get("event") == "cancel"]
    export_local(ix.con, tmp_path)
    assert list((tmp_path / "cancels").rglob("*.parquet"))


def test_a_newline_and_a_backslash_n_read_apart_in_the_text_report():
    """``'a` newline ``b'`` and ``'a\\nb'`` (a backslash and ``n``, standard strings) write
    different values; the report showed both as ``'a\\nb'``. A text it escapes has its
    backslashes doubled, as an escape string ``E'...'`` (session 37: its ``E``, outside the
    quotes the text cannot close, replaces the word ``escaped`` its line said); a text it
    prints as it is is a plain literal."""
    real, literal = text_of("SELECT 'a\nb', 'c\\d'"), text_of("SELECT 'a\\nb', 'c\\d'")
    assert "[denied deny.x] E'SELECT ''a\\nb'', ''c\\\\d'''" in real, real
    assert "[denied deny.x] 'SELECT ''a\\nb'', ''c\\d'''" in literal, literal
    assert "42501: E'SELECT ''a\\nb'', ''c\\\\d'''" in real, real
    assert "42501: 'SELECT ''a\\nb'', ''c\\d'''" in literal, literal


def test_a_name_with_a_quote_cannot_go_on_as_the_session_line():
    ix = Index().session(
        "s1", "g1", 0, 60, application_name="x'  upstream evil:1 backend pid 1 as 'y"
    )
    out = io.StringIO()
    write_text(audit(ix.con, Filters()), out)
    assert "application_name 'x''  upstream evil:1 backend pid 1 as ''y'" in out.getvalue(), out
