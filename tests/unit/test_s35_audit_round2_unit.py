"""Session 35, round 2: the audit answer's lies, on hand-made recordings and index rows (no
proxy): an Execute the server found no portal for shown as an earlier Bind's statement
(derive); a dry run's would-deny login missing from the CSV and OCSF; the Parquet export
with no word of a recording that did not verify; a statement running across ``--since``
left out; a deny.replaced statement Allowed in OCSF and plain in the CSV; a grant known
from its sessions (its expiry, a revocation no control stream records) missing from the
CSV and OCSF. Each test fails without its fix. The same cases through the proxy, judged
by PostgreSQL's log or the grant store: tests/integration/test_s35_audit_round2.py."""

from __future__ import annotations

import csv
import io
import json

from devtools.testing import command_complete, error, frame, parse, query, ready, sync
from recorder.audit import export, index, ocsf
from recorder.audit.answer import Filters, audit, sessions_list, write_csv
from tests.support.audit_index import Index, at, us, z
from tests.support.audit_recordings import BC, PC, SELECT1, Session, answer_of, bind, execute

BOUND = "SELECT v FROM t ORDER BY id"


def _error(code: str, message: str, routine: str | None) -> bytes:
    fields = [(b"S", "ERROR"), (b"V", "ERROR"), (b"C", code), (b"M", message)]
    if routine is not None:
        fields.append((b"R", routine))
    return frame(b"E", b"".join(k + v.encode() + b"\x00" for k, v in fields) + b"\x00")


def after_a_failed_update(answer: bytes) -> list[dict]:
    """In a block: the unnamed portal bound, an UPDATE failing at run time (its portal made
    in place of the bound one, no RowDescription), a ROLLBACK TO through a named portal,
    then an Execute of the unnamed portal answered ``answer``."""
    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(parse(BOUND), bind(), sync(), decisions=1).server(PC, BC, ready(b"T"))
    s.client(query("UPDATE t SET id = v::int"), decisions=1)
    s.server(error("22P02", 'invalid input syntax for type integer: "v1"'), ready(b"E"))
    s.client(parse("ROLLBACK TO SAVEPOINT s", "s2"), bind("s2", "y"), execute("y"), sync(),
             decisions=1)  # fmt: skip
    s.server(PC, BC, command_complete("ROLLBACK"), ready(b"T"))
    s.client(execute(""), sync()).server(answer, ready(b"T"))
    return s.facts().statements


def test_an_execute_the_server_finds_no_portal_for_shows_no_statement():
    """The server's 34000 from the Execute's own lookup (routine exec_execute_message): it
    held no portal, whatever derive kept; the row showed the bound SELECT."""
    rows = after_a_failed_update(_error("34000", 'portal "" does not exist',
                                        "exec_execute_message"))  # fmt: skip
    assert (rows[-1]["text"], rows[-1]["sqlstate"]) == ("", "34000"), rows[-1]


def test_without_a_routine_the_lookups_message_says_so():
    rows = after_a_failed_update(_error("34000", 'portal "" does not exist', None))
    assert rows[-1]["text"] == "", rows[-1]


def test_a_34000_raised_by_what_the_portal_ran_keeps_its_statement():
    """Code the portal ran can raise 34000 for a cursor of its own (``FETCH`` in a
    function): the portal existed, and ran."""
    rows = after_a_failed_update(_error("34000", 'cursor "c" does not exist',
                                        "PerformPortalFetch"))  # fmt: skip
    assert (rows[-1]["text"], rows[-1]["sqlstate"]) == (BOUND, "34000"), rows[-1]


def test_an_execute_the_server_runs_keeps_its_statement():
    rows = after_a_failed_update(SELECT1)
    assert (rows[-1]["text"], rows[-1]["outcome"]) == (BOUND, "ok"), rows[-1]


# --- 2. a dry run's login enforcement would have refused, in the CSV and OCSF -------------

WOULD = 'setting "search_path" in options refused (rule deny.setting)'


def dry_run_index() -> Index:
    """A dry-run session whose login enforcement would have refused (startup_would_deny)."""
    ix = Index()
    index._insert(ix.con, "sessions", [{
        "session_id": "s1", "grant_id": "g1", "agent": "bot", "task": "T", "database": "app",
        "started_at": us(1), "ended_at": us(2), "end_cause": "terminate", "enforce": False,
        "client_addr": "127.0.0.1:5000", "statements": 0, "denials": 1, "errors": 0,
        "status": "closed", "intact": True, "meta": "{}"}])  # fmt: skip
    index._insert(ix.con, "session_events", [{
        "session_id": "s1", "seq": 1, "ts": us(1), "kind": "startup_would_deny",
        "payload": json.dumps({"reason": WOULD}), "verified": True}])  # fmt: skip
    return ix


def test_the_csv_has_a_row_for_a_dry_runs_login_that_would_have_been_refused():
    """The answer's denials list it (source dry-run); the CSV had no row of it."""
    a = audit(dry_run_index().con, Filters(task="T"))
    (d,) = a["denials"]
    assert (d["source"], d["rule"], d["n"]) == ("dry-run", "deny.setting", None)
    out = io.StringIO()
    write_csv(a, out)
    rows = [r for r in csv.DictReader(io.StringIO(out.getvalue()))
            if r["decision"] == "would_deny"]  # fmt: skip
    assert [(r["kind"], r["session_id"], r["rule"], r["message"], r["ts"]) for r in rows] == [
        ("login.would_deny", "s1", "deny.setting", WOULD, z(1))]


def test_a_statements_denial_is_its_own_row_in_the_csv_not_two():
    """A statement's denial is the statement's row (kept as it was)."""
    a = audit(dry_run_index().con, Filters(task="T"))
    a["denials"] = [{**a["denials"][0], "n": 1, "text": "SELECT 1"}]
    out = io.StringIO()
    write_csv(a, out)
    assert "would_deny" not in out.getvalue()


def test_ocsf_exports_a_dry_runs_login_that_would_have_been_refused():
    (e,) = [e for e in ocsf.events(dry_run_index().con)
            if e["unmapped"].get("event") == "login.would_deny"]
    assert (e["class_uid"], e["session"]["uid"], e["user"]["name"], e["unmapped"]["rule"],
            e["status_detail"], e["status"]) == (
        3003, "s1", "bot", "deny.setting", WOULD, "Success")  # fmt: skip


# --- 3. the Parquet export says what did not verify, as the answer does -----------------


def lost_index() -> Index:
    """A session s1 (day 1) that verified, and s2, which the control stream records and
    the store lost (``missing``, as ``Indexer._cross_check`` lists it)."""
    ix = dry_run_index()
    ix.stream("CTL")
    ix.event("session.opened", 5, {"session": "s2"})
    index._insert(ix.con, "recordings", [
        {"session_id": "s1", "kind": "session", "status": "closed", "intact": True,
         "indexed_at": us(86400 * 3)},
        {"session_id": "s2", "kind": "session", "status": "missing", "intact": False,
         "problems": '["missing: the control stream records this session"]',
         "indexed_at": us(86400 * 3)}])  # fmt: skip
    return ix


def exported(ix: Index, tmp_path, day=None) -> list[tuple]:
    export.export_local(ix.con, tmp_path, day=day)
    import duckdb

    return sorted(duckdb.sql(
        f"SELECT session_id, status, intact, event_date FROM read_parquet("
        f"'{tmp_path}/recordings/*/*.parquet', hive_partitioning = true)").fetchall())  # fmt: skip


def test_the_parquet_export_has_the_recordings_and_what_did_not_verify(tmp_path):
    """The answer warns of s2; the export had no ``recordings`` table, and nothing of s2."""
    ix = lost_index()
    assert not audit(ix.con, Filters())["verification"]["intact"]
    day = at(0).date()
    assert exported(ix, tmp_path) == [("CTL", "open", True, day), ("s1", "closed", True, day),
                                      ("s2", "missing", False, day)]  # fmt: skip


def test_a_days_export_has_every_recording_that_did_not_verify(tmp_path):
    """``--day`` of another day: s2 (not intact) is in it all the same, as the answer lists
    every recording that did not verify whatever its filters; s1 (intact, its own day) not."""
    other = at(86400 * 2).date()
    assert exported(lost_index(), tmp_path, day=other) == [("s2", "missing", False, other)]


# --- 4. a statement that ran across --since is in the window --------------------------


def straddling_index() -> Index:
    """Session s1 (t 0..10): an UPDATE from t 1 to t 3 (db-denied at its end: 42501), a
    SELECT from t 4 to t 5."""
    ix = Index()
    index._insert(ix.con, "sessions", [{
        "session_id": "s1", "grant_id": "g1", "agent": "bot", "task": "T", "database": "app",
        "started_at": us(0), "ended_at": us(10), "end_cause": "terminate", "statements": 2,
        "denials": 1, "errors": 1, "status": "closed", "intact": True, "meta": "{}"}])  # fmt: skip
    base = {"session_id": "s1", "grant_id": "g1", "agent": "bot", "task": "T",
            "database": "app", "verified": True, "decision": "allowed"}  # fmt: skip
    index._insert(ix.con, "statements", [
        {**base, "n": 1, "ts": us(1), "ended_at": us(3), "text": "UPDATE t SET v = 1",
         "outcome": "error", "sqlstate": "42501", "message": "permission denied"},
        {**base, "n": 2, "ts": us(4), "ended_at": us(5), "text": "SELECT 1", "outcome": "ok",
         "command_tag": "SELECT 1"}])  # fmt: skip
    return ix


def test_a_statement_running_at_since_is_in_the_answer():
    a = audit(straddling_index().con, Filters(since=at(2)))
    (s,) = a["other_sessions"]
    assert [r["n"] for r in s["statement_rows"]] == [1, 2]
    assert [d["n"] for d in a["denials"]] == [1]


def test_a_statement_ended_before_since_is_not():
    a = audit(straddling_index().con, Filters(since=at(3.5)))
    (s,) = a["other_sessions"]
    assert [r["n"] for r in s["statement_rows"]] == [2]
    assert a["denials"] == []


def test_denied_since_keeps_a_session_whose_denial_ran_across_since():
    ix = straddling_index()
    f = Filters(since=at(2), denied=True)
    (s,) = audit(ix.con, f)["other_sessions"]
    assert [r["n"] for r in s["statement_rows"]] == [1]
    assert [r["session_id"] for r in sessions_list(ix.con, f)] == ["s1"]
    f = Filters(since=at(3.5), denied=True)
    assert audit(ix.con, f)["other_sessions"] == [] and sessions_list(ix.con, f) == []


# --- 5. OCSF blocks what the database refused, as the denials view does ------------------


def test_ocsf_says_a_statement_the_proxys_check_refused_was_blocked():
    """deny.replaced: the policy allowed the Bind, the proxy's check the server ran refused
    it (26000, db.denied). The denials view lists it (source database); OCSF said Allowed."""
    row = {"session_id": "s1", "n": 3, "ts": z(1), "decision": "allowed", "rule": "scope.read",
           "outcome": "error", "sqlstate": "26000", "db_denied_rule": "deny.replaced",
           "message": "prepared statement replaced"}  # fmt: skip
    e = ocsf.statement_event(row)
    assert (e["disposition_id"], e["disposition"], e["unmapped"]["db_denied_rule"]) == (
        2, "Blocked", "deny.replaced")  # fmt: skip
    e = ocsf.statement_event({**row, "sqlstate": None, "db_denied_rule": None, "outcome": "ok"})
    assert e["disposition"] == "Allowed"


# --- 6. the CSV of a grant known from its sessions, revoked with no control stream -------


def cli_grant_index() -> Index:
    """Grant g1 issued by a CLI without a recorder (expiry t 600 in its session's signed
    start), revoked at t 5 by alice while session s1 lived (its signed grant_revoked)."""
    ix = Index()
    index._insert(ix.con, "sessions", [{
        "session_id": "s1", "grant_id": "g1", "agent": "bot", "task": "T", "database": "app",
        "started_at": us(1), "ended_at": us(5), "end_cause": "revoked", "scopes": "read:t",
        "enforce": True, "granted_by": "cli", "reason": "why", "statements": 0, "denials": 0,
        "errors": 0, "status": "closed", "intact": True,
        "meta": json.dumps({"expires_at": at(600).isoformat()})}])  # fmt: skip
    index._insert(ix.con, "session_events", [{
        "session_id": "s1", "seq": 9, "ts": us(5), "kind": "grant_revoked", "verified": True,
        "payload": json.dumps({"grant_id": "g1", "at": at(5).isoformat(), "by": "alice"})}])
    index._insert(ix.con, "recordings", [{"session_id": "s1", "kind": "session",
                                          "status": "closed", "intact": True,
                                          "indexed_at": us(9)}])  # fmt: skip
    index.rebuild_grants(ix.con)
    return ix


def csv_rows(a: dict) -> list[dict]:
    out = io.StringIO()
    write_csv(a, out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_the_csv_has_the_expiry_and_revocation_of_a_grant_known_from_its_sessions():
    a = audit(cli_grant_index().con, Filters(grant="g1"))
    (g,) = a["grants"]
    assert (g["source"], g["expires_at"], g["revoked_at"], g["revoked_by"]) == (
        "sessions", z(600), z(5), "alice")  # fmt: skip
    got = [(r["kind"], r["ts"], r["by"], r["expires_at"]) for r in csv_rows(a)
           if r["kind"].startswith("grant")]  # fmt: skip
    assert got == [("grant", z(1), "cli", z(600)), ("grant.revoked", z(5), "alice", z(600))]


def test_a_revocation_a_control_stream_records_is_one_row():
    """A grant issued and revoked through a recorder: its events' rows, no more."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g2", 0, 600)
    ix.grant_event("grant.revoked", "g2", 5, 600, revoked_at=at(5).isoformat())
    index.rebuild_grants(ix.con)
    a = audit(ix.con, Filters(grant="g2"))
    assert [r["kind"] for r in csv_rows(a)] == ["grant.issued", "grant.revoked"]


def grant_events_of(ix: Index, day=None) -> list[tuple]:
    where, params = ("TRUE", []) if day is None else ("CAST(ts AS DATE) = ?", [day])
    return [(e["unmapped"]["event"], e["time"], e["unmapped"]["by"], e["unmapped"]["expires_at"])
            for e in ocsf.events(ix.con, where, params)
            if e["unmapped"].get("event", "").startswith("grant")]  # fmt: skip


def ms(seconds: float) -> int:
    return int(at(seconds).timestamp() * 1000)


def test_ocsf_has_the_expiry_and_revocation_of_a_grant_known_from_its_sessions():
    got = grant_events_of(cli_grant_index())
    assert got == [("grant", ms(1), "cli", z(600)), ("grant.revoked", ms(5), "alice", z(600))]
    assert grant_events_of(cli_grant_index(), at(86400).date()) == []


def test_ocsf_has_one_event_of_a_revocation_a_control_stream_records():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g2", 0, 600)
    ix.grant_event("grant.revoked", "g2", 5, 600, revoked_at=at(5).isoformat())
    index.rebuild_grants(ix.con)
    assert [k for k, *_ in grant_events_of(ix)] == ["grant.issued", "grant.revoked"]


def test_the_csv_row_of_a_statement_the_proxys_check_refused_says_so():
    row = {"session_id": "s1", "n": 3, "ts": z(1), "decision": "allowed", "rule": "scope.read",
           "outcome": "error", "sqlstate": "26000", "db_denied_rule": "deny.replaced",
           "message": "prepared statement replaced"}  # fmt: skip
    a = answer_of([row])
    a["other_sessions"][0].update(grant_id="g1", agent="bot", task="T", database="app",
                                  scopes="read:t", enforce=True)  # fmt: skip
    (r,) = [r for r in csv_rows(a) if r["kind"] == "statement"]
    assert (r["decision"], r["sqlstate"], r["db_denied_rule"]) == ("allowed", "26000",
                                                                   "deny.replaced")  # fmt: skip
