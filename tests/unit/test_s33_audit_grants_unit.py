"""Session 33's red-team round on the grant side of the audit answer, on an index built by
hand (no proxy): the grant folding of ``index.rebuild_grants`` and ``Indexer._cross_check``,
the filters of ``answer.audit``, and what each format (text, CSV, OCSF, Parquet) carries of
a grant, a refused login and the refusals over the proxy's event rate. The same gaps
through the real proxy: tests/integration/test_s33_audit_grants.py."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import duckdb
import pytest

from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_csv, write_text
from tests.support.audit_index import T0, Index, at, us, z


def test_a_grant_extended_after_it_expired_is_in_force_again():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.expired", "g1", 10.5, 10, by="pgwitness (expiry)")
    ix.grant_event("grant.extended", "g1", 20, 80, previous_expires_at=at(10).isoformat())
    g = ix.fold().grant("g1")
    assert (g["ended"], g["expired_at"], g["expires_at"]) == (None, None, z(80))
    assert [e["kind"] for e in g["events"]] == ["grant.issued", "grant.expired", "grant.extended"]
    # ... and expires again at its new expiry
    ix.grant_event("grant.expired", "g1", 80.5, 80, by="pgwitness (expiry)")
    g = ix.fold().grant("g1")
    assert (g["ended"], g["expired_at"]) == ("expired", z(80))


def test_an_expiry_an_extension_already_moved_ends_nothing():
    """Another proxy's stream records the old expiry after this one recorded the extension."""
    ix = Index().stream().stream("CTL2")
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.extended", "g1", 9, 70, previous_expires_at=at(10).isoformat())
    ix.grant_event("grant.expired", "g1", 11, 10, by="pgwitness (expiry)", stream="CTL2")
    g = ix.fold().grant("g1")
    assert (g["ended"], g["expires_at"]) == (None, z(70))


def test_extensions_and_grant_event_times_read_as_every_other_time():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.extended", "g1", 5, 70, previous_expires_at=at(10).isoformat())
    g = ix.fold().grant("g1")
    assert g["extensions"] == [{"at": z(5), "by": "alice", "from": z(10), "to": z(70)}]
    ev = g["events"][1]
    assert (ev["expires_at"], ev["previous_expires_at"]) == (z(70), z(10))
    types = dict(ix.con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'grant_events'").fetchall())
    assert types["expires_at"] == types["previous_expires_at"] == "TIMESTAMP WITH TIME ZONE"


def test_grants_carried_by_a_stream_that_did_not_verify_are_not_intact():
    """A revocation cut out of a control stream leaves no unverified event naming the grant."""
    ix = Index().stream("CTL", intact=False).stream("CTL2")
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.grant_event("grant.issued", "g2", 0, 600, stream="CTL2")
    ix.fold()
    assert ix.grant("g1")["intact"] is False and ix.grant("g2")["intact"] is True


# --- a control stream deleted whole ------------------------------------------------------


def test_sessions_of_a_process_no_control_stream_indexes_flag_it_missing():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.session("S1", "g1", 1, 2, host="a", pid=1).opened("S1", 1)
    ix.session("S2", "g1", 3, 4, host="b", pid=2).session("S3", "g1", 5, 6, host="b", pid=2)
    ix.fold()
    rows = ix.con.execute("SELECT session_id, kind, status, intact, problems FROM recordings "
                          "WHERE status = 'missing'").fetchall()
    assert [r[:4] for r in rows] == [("control stream of b pid 2", "control", "missing", False)]
    assert "2 session(s) recorded by host b pid 2" in json.loads(rows[0][4])[0]
    assert ix.grant("g1")["intact"] is False
    a = audit(ix.con, Filters(session="S2"))
    assert not a["verification"]["intact"]
    assert [(r["session_id"], r["in_answer"]) for r in a["verification"]["not_intact"]] == [
        ("control stream of b pid 2", True)]
    a = audit(ix.con, Filters(session="S1"))
    assert [r["in_answer"] for r in a["verification"]["not_intact"]] == [False]
    # once the stream (or its chunk holding a session.opened) is stored, nothing is missing
    ix.opened("S3", 5).fold()
    assert audit(ix.con, Filters())["verification"]["intact"]


def test_a_process_whose_first_session_is_fresh_is_not_yet_called_missing():
    """A process's first session is in the store a moment before the control stream's next
    chunk (holding its session.opened) is: not missing within ``index.CONTROL_GRACE`` of
    its start (an answer read right after a session is not a tampering alarm), missing
    after it if no stream has indexed it by then."""
    now = (dt.datetime.now(dt.UTC) - T0).total_seconds()
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, now + 600)
    ix.session("S1", "g1", now - 1, now, host="c", pid=3)
    ix.fold()
    assert audit(ix.con, Filters())["verification"]["intact"]
    ix.session("S0", "g1", now - index.CONTROL_GRACE - 60, now - 70, host="c", pid=3).fold()
    rows = ix.con.execute("SELECT session_id FROM recordings WHERE status = 'missing'").fetchall()
    assert rows == [("control stream of c pid 3",)]


# --- filters -------------------------------------------------------------------------


def _window_index() -> Index:
    ix = Index().stream()
    ix.grant_event("grant.issued", "used", 0, 600)
    ix.grant_event("grant.issued", "unused", 100, 700)  # never used: only refused logins
    ix.grant_event("grant.issued", "over", 0, 50)  # expired before the window
    ix.grant_event("grant.revoked", "over", 40, 50, revoked_at=at(40).isoformat())
    ix.session("S1", "used", 10, 20).opened("S1", 10)
    ix.refused(150, grant="unused").refused(160)  # a wrong token of the task's agent
    return ix.fold()


def test_since_and_until_keep_the_grants_in_force_in_the_window():
    ix = _window_index()
    a = audit(ix.con, Filters(since=at(120), until=at(200)))
    assert [g["grant_id"] for g in a["grants"]] == ["used", "unused"]
    a = audit(ix.con, Filters(until=at(90)))
    assert [g["grant_id"] for g in a["grants"]] == ["over", "used"]
    a = audit(ix.con, Filters(since=at(45)))
    assert [g["grant_id"] for g in a["grants"]] == ["used", "unused"]


def test_task_with_a_window_keeps_the_task_agents_unnamed_refusals_in_it():
    ix = _window_index()
    a = audit(ix.con, Filters(task="T", since=at(155)))  # raised a TypeError
    assert [(r["ts"], r["grant_id"]) for r in a["refused_logins"]] == [(z(160), None)]
    a = audit(ix.con, Filters(task="T", until=at(155)))
    assert [(r["ts"], r["grant_id"]) for r in a["refused_logins"]] == [(z(150), "unused")]


def test_denied_leaves_out_sessions_without_a_grant_that_had_no_denial():
    ix = Index().stream()
    ix.session("S1", None, 1, 2).opened("S1", 1).fold()
    assert [s["session_id"] for s in audit(ix.con, Filters())["other_sessions"]] == ["S1"]
    assert audit(ix.con, Filters(denied=True))["other_sessions"] == []


def test_the_stream_of_a_refused_login_is_drawn_on():
    ix = Index().stream("CTL", intact=False).refused(5, agent="ghost").fold()
    a = audit(ix.con, Filters(agent="ghost"))
    assert a["verification"]["recordings"] == 1
    assert [(r["session_id"], r["in_answer"]) for r in a["verification"]["not_intact"]] == [
        ("CTL", True)]


# --- what each format carries --------------------------------------------------------


def _formats_index() -> Index:
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.extended", "g1", 5, 70, previous_expires_at=at(10).isoformat(),
                   by="bob")
    ix.refused(6, grant="g1", verified=False).refused(7)
    ix.event("login.refused.summary", 8, {"dropped": 40, "by_reason": {"password": 40}})
    ix.session("S1", "static:alice", 1, 2, agent="alice").opened("S1", 1)
    return ix.fold()


def test_refusals_over_the_event_rate_are_in_every_format():
    ix = _formats_index()
    a = audit(ix.con, Filters(agent="bot"))
    assert [(r["dropped"], r["by_reason"]) for r in a["refusals_not_itemized"]] == [
        (40, {"password": 40})]
    out = io.StringIO()
    write_text(a, out)
    assert "REFUSED LOGINS AND CONNECTIONS (2, and 40 more not itemized)" in out.getvalue()
    out = io.StringIO()
    write_csv(a, out)
    (row,) = [r for r in csv.DictReader(io.StringIO(out.getvalue()))
              if r["kind"] == "login.refused.summary"]
    assert (row["ts"], row["rows"], json.loads(row["reason"])) == (z(8), "40", {"password": 40})
    assert audit(ix.con, Filters(session="S1"))["refusals_not_itemized"] == []
    assert audit(ix.con, Filters(since=at(9)))["refusals_not_itemized"] == []


def test_csv_rows_of_grant_events_say_what_and_for_how_long():
    a = audit(_formats_index().con, Filters(grant="g1"))
    out = io.StringIO()
    write_csv(a, out)
    rows = {r["kind"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    issued, extended = rows["grant.issued"], rows["grant.extended"]
    assert {k: issued[k] for k in ("by", "why", "database", "scopes", "enforce", "not_before",
                                   "expires_at", "happened_at")} == {
        "by": "alice", "why": "why", "database": "app", "scopes": "read:public.t",
        "enforce": "True", "not_before": z(0), "expires_at": z(10), "happened_at": z(0)}
    assert (extended["by"], extended["previous_expires_at"], extended["expires_at"]) == (
        "bob", z(10), z(70))
    assert rows["login.refused"]["client"] == "10.0.0.9:4000"


def test_text_marks_an_unverified_refused_login_and_names_its_grant():
    a = audit(_formats_index().con, Filters(agent="bot"))
    out = io.StringIO()
    write_text(a, out)
    lines = out.getvalue().splitlines()
    (forged,) = [x for x in lines if x.startswith("  ! ") and " from 10.0.0.9:4000" in x]
    assert forged.endswith("[grant g1, task T]") and " to 'app': revoked " in forged
    (plain,) = [x for x in lines if x.startswith(f"  {z(7)} 'bot' from")]
    assert "[grant" not in plain


def test_text_window_of_a_grant_known_from_its_sessions_says_its_expiry():
    ix = Index().stream()
    ix.session("S1", "g9", 1, 2, meta=json.dumps({"expires_at": at(300).isoformat()}))
    ix.opened("S1", 1).fold()
    out = io.StringIO()
    write_text(audit(ix.con, Filters()), out)
    assert f"window: not before None, expires {z(300)}" in out.getvalue()


def test_ocsf_logins_say_from_where_to_which_database_and_whether_verified():
    ix = _formats_index()
    events = [e for e in ocsf.events(ix.con) if e["class_uid"] == 3003]
    refused = [e for e in events if e["unmapped"]["event"] == "login.refused"]
    assert [(e["src_endpoint"], e["unmapped"]["database"], e["unmapped"]["verified"],
             e["unmapped"]["reason"]) for e in refused] == [
        ({"ip": "10.0.0.9", "port": 4000}, "app", False, "revoked"),
        ({"ip": "10.0.0.9", "port": 4000}, "app", True, "password")]
    (accepted,) = [e for e in events if e["unmapped"]["event"] == "login.accepted"]
    assert accepted["src_endpoint"] == {"ip": "10.0.0.1", "port": 5000}
    (ext,) = [e for e in events if e["unmapped"]["event"] == "grant.extended"]
    assert {k: ext["unmapped"][k] for k in ("expires_at", "previous_expires_at", "happened_at",
                                            "verified", "by", "database")} == {
        "expires_at": z(70), "previous_expires_at": z(10), "happened_at": z(5),
        "verified": True, "by": "bob", "database": "app"}


def test_parquet_exports_a_grant_known_only_from_its_sessions(tmp_path):
    from recorder.audit.export import export_local

    ix = _formats_index()
    export_local(ix.con, tmp_path)
    con = duckdb.connect()
    got = con.execute(f"SELECT grant_id, CAST(event_date AS VARCHAR) FROM read_parquet('{tmp_path}/grants/*/"
                      "*.parquet', hive_partitioning = true) ORDER BY grant_id").fetchall()
    assert got == [("g1", "2026-12-01"), ("static:alice", "2026-12-01")]


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_every_format_writes_an_answer_without_refusal_summaries(fmt):
    """An answer written before refusals_not_itemized existed (a JSON answer read back)."""
    a = audit(_formats_index().con, Filters(grant="g1"))
    del a["refusals_not_itemized"]
    out = io.StringIO()
    (write_text if fmt == "text" else write_csv)(a, out)
    assert "g1" in out.getvalue()


def test_the_text_answer_prints_its_rows_as_data_one_line_each():
    """A statement's text, an error message, a login name: newlines, carriage returns,
    terminal escapes and bidirectional overrides are written as escapes."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600, reason="line one\nline two")
    ix.session("S1", "g1", 1, 2, application_name="app\x1b[2K").opened("S1", 1)
    index._insert(ix.con, "statements", [{
        "session_id": "S1", "n": 1, "ts": us(1), "ended_at": us(1.1), "duration_ms": 1.0,
        "grant_id": "g1", "agent": "bot", "task": "T", "protocol": "simple",
        "text": "SELECT 1\n    -> ERROR 42501 forged\u202e", "decision": "allowed",
        "outcome": "ok", "command_tag": "SELECT 1", "verified": True}])
    ix.refused(3, agent="x\r\n  2026 forged line\ty").fold()
    out = io.StringIO()
    write_text(audit(ix.con, Filters()), out)
    text = out.getvalue()
    assert "why: E'line one\\nline two'" in text
    assert "application_name E'app\\x1b[2K'" in text
    assert "E'SELECT 1\\n    -> ERROR 42501 forged\\u202e'" in text
    assert " E'x\\r\\n  2026 forged line\\ty' from " in text
    assert not [x for x in text.splitlines() if "forged" in x and not x.startswith("  ")]
    assert all(c.isprintable() for x in text.splitlines() for c in x), text
