"""Session 35's red-team round on the audit answer, on hand-made recordings, answers and
index rows (no proxy): what derive (a statement's time, a COPY cut short), the grant folding
(extensions recorded out of order), the sessions list and the text report and OCSF export
say, against what the server and the grant store did. The same cases through the proxy, with
PostgreSQL's log as judge: tests/integration/test_s35_audit_round.py."""

from __future__ import annotations

import io
import json

from devtools.testing import error, frame, parse, query, ready, sync
from recorder.audit import index
from recorder.audit.answer import Filters, audit, sessions_list, write_text
from recorder.audit.ocsf import statement_event
from tests.support.audit_index import Index, at, us, z
from tests.support.audit_recordings import BC, PC, SELECT1, Session, answer_of, bind, execute

SLEEP = "SELECT pg_sleep(1)"


def times(s: Session) -> list[tuple[str, int, int]]:
    """Each row's text, start and end (the records' clock: seq * 1000 ns)."""
    return [(r["text"], r["start_ns"], r["end_ns"]) for r in s.facts().statements]


# --- 1. a statement pipelined behind another is timed from when the server began it -------


def test_a_query_pipelined_behind_another_begins_at_its_ready_for_query():
    """Two Queries sent at once (t 1000): the server answers the first at t 4000 and runs
    the second then. Its row began at 4000, not 1000 (it took the pg_sleep's second)."""
    s = Session().start()
    s.client(query(SLEEP), query("SELECT 1"), decisions=2)  # seq 1, decisions 2 and 3
    s.server(SELECT1, ready())  # seq 4
    s.server(SELECT1, ready())  # seq 5
    assert times(s) == [(SLEEP, 1000, 4000), ("SELECT 1", 4000, 5000)]


def test_a_sync_group_pipelined_behind_a_query_begins_at_its_ready_for_query():
    s = Session().start()
    s.client(query(SLEEP), parse("SELECT 2"), bind(), execute(), sync(), decisions=2)
    s.server(SELECT1, ready())  # seq 4
    s.server(PC, BC, SELECT1, ready())  # seq 5
    assert times(s) == [(SLEEP, 1000, 4000), ("SELECT 2", 4000, 5000)]


def test_an_unanswered_query_pipelined_behind_another_begins_no_earlier():
    s = Session().start()
    s.client(query(SLEEP), query("SELECT 1"), decisions=2)
    s.server(SELECT1, ready())  # seq 4
    s.meta("session.end", b'{"cause": "disconnect"}')
    assert times(s) == [(SLEEP, 1000, 4000), ("SELECT 1", 4000, 5000)]


def test_a_statement_sent_after_the_answer_keeps_its_own_time():
    """Not pipelined: sent after the ReadyForQuery, its row begins when it was sent."""
    s = Session().start()
    s.client(query(SLEEP), decisions=1).server(SELECT1, ready())  # seq 1..3
    s.client(query("SELECT 1"), decisions=1).server(SELECT1, ready())  # seq 4..6
    assert times(s) == [(SLEEP, 1000, 3000), ("SELECT 1", 4000, 6000)]


def test_an_error_answers_a_pipelined_query_after_its_predecessor():
    s = Session().start()
    s.client(query(SLEEP), query("SELECT 1/0"), decisions=2)
    s.server(SELECT1, ready())  # seq 4
    s.server(error("22012", "division by zero"), ready())  # seq 5
    assert times(s) == [(SLEEP, 1000, 4000), ("SELECT 1/0", 4000, 5000)]


# --- 2. the text report does not cut a statement silently ---------------------------------

LONG = "UPDATE a35.t SET v = '" + "x" * 250 + "', id = -id WHERE id = 1"


def text_of(statements: list[dict]) -> str:
    out = io.StringIO()
    write_text(answer_of(statements), out)
    return out.getvalue()


def row(text: str, **kw) -> dict:
    return {
        "text": text,
        "params": None,
        "decision": "allowed",
        "rule": "scope.write",
        "outcome": "ok",
        "command_tag": "UPDATE 1",
        "message": None,
        "sqlstate": None,
        **kw,
    }


def test_a_long_statement_says_it_is_cut_in_the_text_report():
    """The report showed the first 200 characters of a statement as if they were all of it:
    an UPDATE of a long literal read as setting ``v`` only, ``id = -id`` left out unsaid."""
    (line,) = [x for x in text_of([row(LONG)]).splitlines() if "UPDATE a35.t" in x]
    assert line.endswith(
        f" ...[statement cut: {len(LONG) - 200} more of {len(LONG)} "
        "characters not shown; --format json has it whole]"
    )
    assert LONG[:200].replace("'", "''") in line


def test_a_statement_of_200_characters_is_shown_whole():
    text = "SELECT '" + "y" * 191 + "'"
    assert len(text) == 200
    (line,) = [x for x in text_of([row(text)]).splitlines() if "SELECT" in x]
    assert line.endswith("'" + text.replace("'", "''") + "'") and "cut" not in line


# --- 3. the OCSF status of a suspended portal and of a statement with no answer ------------


def test_ocsf_a_suspended_portal_returned_its_rows():
    """A portal that returned the rows asked for and was suspended ran: not a Failure."""
    e = statement_event(
        {
            "ts": "2026-12-05T20:00:00Z",
            "session_id": "s",
            "n": 1,
            "outcome": "suspended",
            "command_tag": None,
            "rows": 2,
        }
    )
    assert (e["status_id"], e["status"]) == (1, "Success")


def test_ocsf_a_statement_with_no_answer_is_of_unknown_status():
    """The recording holds no answer (the session or the recording ended first): the server
    may have run it, an INSERT committed. Not a Failure: Unknown, as the answer says."""
    e = statement_event(
        {
            "ts": "2026-12-05T20:00:00Z",
            "session_id": "s",
            "n": 1,
            "outcome": "no answer",
            "command_tag": None,
        }
    )
    assert (e["status_id"], e["status"]) == (0, "Unknown")


# --- 4. the sessions list keeps what the answer keeps ------------------------------------


def test_sessions_denied_in_a_window_are_those_the_answer_lists():
    """``pgwitness sessions --denied --since X`` listed a session whose only denial was before
    X: ``audit --denied --since X`` (same filters, docs/audit.md) lists none."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600)
    ix.session("s1", "g1", 5, 300, statements=2, denials=1)
    ix.session("s2", "g1", 6, 300, statements=1, denials=1)
    index._insert(ix.con, "statements", [
        statement("s1", 1, 10, decision="denied", sqlstate="42501"),
        statement("s1", 2, 120),
        statement("s2", 1, 130, decision="denied", sqlstate="42501"),
    ])  # fmt: skip
    ix.fold()
    late = Filters(denied=True, since=at(100))
    answered = {s["session_id"] for g in audit(ix.con, late)["grants"] for s in g["sessions"]}
    assert answered == {"s2"}
    assert [s["session_id"] for s in sessions_list(ix.con, late)] == ["s2"]
    early = Filters(denied=True, until=at(50))
    assert [s["session_id"] for s in sessions_list(ix.con, early)] == ["s1"]
    assert [s["session_id"] for s in sessions_list(ix.con, Filters(denied=True))] == ["s1", "s2"]


def statement(sid: str, n: int, when: float, **kw) -> dict:
    return {
        "session_id": sid,
        "n": n,
        "ts": us(when),
        "ended_at": us(when),
        "duration_ms": 0.0,
        "grant_id": "g1",
        "agent": "bot",
        "task": "T",
        "database": "app",
        "protocol": "simple",
        "text": f"SELECT {n}",
        "decision": "allowed",
        "outcome": "error" if kw.get("sqlstate") else "ok",
        "verified": True,
        **kw,
    }


# --- 5. OCSF: a COPY TO reads --------------------------------------------------------------


def test_ocsf_a_copy_to_is_a_read_not_a_write():
    """``COPY t TO STDOUT`` (tag ``COPY 20``, classed READ by the policy) read the table out:
    OCSF said activity 5 Write, as for a COPY FROM."""
    e = statement_event(
        {"ts": "2026-12-05T20:00:00Z", "session_id": "s", "n": 1, "outcome": "ok",
         "command_tag": "COPY 20", "classes": "READ", "text": "COPY a35.t TO STDOUT"}
    )  # fmt: skip
    assert (e["activity_id"], e["type_uid"]) == (1, 600501)
    e = statement_event(
        {"ts": "2026-12-05T20:00:00Z", "session_id": "s", "n": 1, "outcome": "ok",
         "command_tag": "COPY 3", "classes": "WRITE", "text": "COPY a35.t FROM STDIN"}
    )  # fmt: skip
    assert e["activity_id"] == 5


# --- 6. a grant whose expiry passed with no proxy to record it ---------------------------


def grants_text(ix: Index) -> str:
    out = io.StringIO()
    write_text(audit(ix.fold().con, Filters()), out)
    return out.getvalue()


def test_a_grant_whose_expiry_passed_unrecorded_is_said_to_have_expired():
    """``grant.expired`` is emitted by a running proxy's housekeeping, within a day of the
    expiry (``GrantStore.expire_due``); with every proxy stopped then, none is. The text
    report gave the grant's window and no end, as for a grant in force."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.issued", "g2", 0, 10)
    ix.grant_event("grant.expired", "g2", 10.5, 10, by="pgwitness (expiry)")
    text = grants_text(ix)
    g1, g2 = text.split("GRANT g2")
    assert (
        f"  EXPIRED at {z(10)} (its expiry has passed; no grant.expired event is recorded)\n" in g1
    )
    assert f"  EXPIRED at {z(10)} (pgwitness (expiry))\n" in g2 and "no grant.expired" not in g2


def test_a_grant_in_force_or_revoked_is_not_said_to_have_expired():
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10**9)
    ix.grant_event("grant.issued", "g2", 0, 10)
    ix.grant_event("grant.revoked", "g2", 5, 10, revoked_at=at(5).isoformat())
    text = grants_text(ix)
    assert "EXPIRED" not in text and f"  REVOKED at {z(5)} by alice\n" in text, text


# --- 7. a grant's extensions recorded out of order by two processes ------------------------


def test_extensions_recorded_out_of_order_end_at_the_last_in_their_chain():
    """Two extensions made one after the other through two processes (10 -> 70 through the
    proxy's admin API, then 70 -> 130 through ``pgwitness grant`` elsewhere), the second
    recorded with an earlier time (its process's clock, set at its start, runs 2 s behind).
    The grant store's expiry is 130; the answer folded the events by their record time and
    said 70 (its window, whether it was in force, its end)."""
    ix = Index().stream().stream("CTL2")
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.extended", "g1", 8, 70, previous_expires_at=at(10).isoformat(),
                   at=at(5).isoformat())  # fmt: skip
    ix.grant_event("grant.extended", "g1", 7, 130, previous_expires_at=at(70).isoformat(),
                   at=at(6).isoformat(), stream="CTL2")  # fmt: skip
    g = ix.fold().grant("g1")
    assert (g["expires_at"], g["first_expires_at"]) == (z(130), z(10))
    assert [(x["from"], x["to"]) for x in g["extensions"]] == [(z(10), z(70)), (z(70), z(130))]
    # in force after 70: a window there keeps it
    assert [x["grant_id"] for x in audit(ix.con, Filters(since=at(100)))["grants"]] == ["g1"]


def test_extensions_whose_chain_is_broken_are_folded_by_their_record_time():
    """An extension whose ``from`` no event reaches (one lost, or never recorded): the chain
    says nothing, the record times decide as before."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 10)
    ix.grant_event("grant.extended", "g1", 5, 70, previous_expires_at=at(10).isoformat())
    ix.grant_event("grant.extended", "g1", 6, 40, previous_expires_at=at(20).isoformat())
    g = ix.fold().grant("g1")
    assert g["expires_at"] == z(40)
    assert [x["to"] for x in g["extensions"]] == [z(70), z(40)]


# --- 8. a COPY whose data the client never finished ------------------------------------------


def copy_cut(end: bool) -> Session:
    s = Session().start()
    s.client(query("COPY a35.t FROM STDIN"), decisions=1)
    s.server(frame(b"G", b"\x00\x00\x00"))  # CopyInResponse
    s.client(frame(b"d", b"682\tx\n"))
    if end:
        s.meta("session.end", b'{"cause": "disconnect"}')
    return s


def test_a_copy_cut_by_the_session_end_was_rolled_back():
    """The client's socket closed in the middle of its COPY data: the server cannot finish a
    COPY FROM STDIN without CopyDone, nothing of it stayed. The row said ``no answer`` (and
    OCSF, since this round, Unknown)."""
    (r,) = copy_cut(end=True).facts().statements
    assert (r["outcome"], r["copy"]) == ("rolled back", True)
    assert r["message"].startswith("the session ended (disconnect) while the client was still")
    assert statement_event({**r, "ts": "2026-12-05T20:00:00Z", "session_id": "s"})["status_id"] == 2


def test_a_copy_the_recording_ends_in_has_no_answer():
    """No session end recorded (the recording stops there): the client may have finished."""
    (r,) = copy_cut(end=False).facts().statements
    assert (r["outcome"], r["message"]) == ("no answer", None)


# --- 9. a session with no end recorded -----------------------------------------------------


def test_a_session_with_no_end_recorded_is_not_said_to_be_open():
    """A proxy killed mid-session leaves its recording open, as a live one is: the report
    said ``-> (open)  end: None`` (and the header "1 still open") of a session that had ended
    with its proxy. It says what it knows: no end is recorded."""
    a = answer_of([row("SELECT 1", command_tag="SELECT 1")])
    (s,) = a["other_sessions"]
    s.update(ended_at=None, end_cause=None, status="open")
    a["verification"]["open"] = [s["session_id"]]
    out = io.StringIO()
    write_text(a, out)
    text = out.getvalue()
    assert "(open)" not in text and "end: None" not in text and "still open" not in text, text
    assert ("    2026-12-05T10:00:00Z -> (no end recorded: the session is still live, or its "
            "proxy stopped before it could record one)\n") in text  # fmt: skip
    assert "(1 with no end recorded: still being written, or its process stopped first)" in text


# --- 10. a dry run's login that enforcement would have refused ------------------------------

WOULD = ('pgwitness: setting "search_path" in options refused: may not change search_path '
         "(rule deny.setting)")  # fmt: skip


def test_a_dry_runs_startup_would_deny_is_a_denial():
    """A dry-run grant's session whose startup parameters enforcement would have refused
    (``startup_would_deny``, recorded by the proxy): in no list of denials, and ``--denied``
    left the session out."""
    ix = Index().stream()
    ix.grant_event("grant.issued", "g1", 0, 600, enforce=False)
    ix.session("s1", "g1", 5, 300, statements=1)
    ix.session("s2", "g1", 6, 300, statements=1)
    index._insert(ix.con, "session_events", [{
        "session_id": "s1", "seq": 3, "ts": us(5), "kind": "startup_would_deny",
        "payload": json.dumps({"grant_id": "g1", "reason": WOULD}), "verified": True}])  # fmt: skip
    index._insert(ix.con, "statements", [statement("s1", 1, 10), statement("s2", 1, 11)])
    ix.fold()
    a = audit(ix.con, Filters())
    (d,) = a["denials"]
    assert (d["source"], d["session_id"], d["rule"], d["message"], d["verified"]) == (
        "dry-run",
        "s1",
        "deny.setting",
        WOULD,
        True,
    )
    kept = audit(ix.con, Filters(denied=True))
    assert [s["session_id"] for g in kept["grants"] for s in g["sessions"]] == ["s1"]
    assert [s["session_id"] for s in sessions_list(ix.con, Filters(denied=True))] == ["s1"]
    assert sessions_list(ix.con, Filters(denied=True, since=at(50))) == []


# --- 11. a grant known from its sessions only --------------------------------------------


def sessions_grant(ix: Index) -> dict:
    (g,) = audit(ix.fold().con, Filters(grant="g1"))["grants"]
    assert g["source"] == "sessions"
    return g


def meta(expires: float) -> str:
    return json.dumps({"grant_id": "g1", "expires_at": at(expires).isoformat()})


def test_a_grant_known_from_its_sessions_expires_at_the_latest_they_saw():
    """No grant events (a CLI without a recorder issued and extended it): the expiry came
    from any one session's start, the first login's, before the extension."""
    ix = Index()
    ix.session("s1", "g1", 5, 30, meta=meta(10))
    ix.session("s2", "g1", 40, 60, meta=meta(70))
    assert sessions_grant(ix)["expires_at"] == z(70)


def test_an_extension_a_live_session_saw_moves_a_sessions_grants_expiry():
    ix = Index()
    ix.session("s1", "g1", 5, 30, meta=meta(10))
    index._insert(ix.con, "session_events", [
        {"session_id": "s1", "seq": 9, "ts": us(8), "kind": "grant_extended", "verified": True,
         "payload": json.dumps({"grant_id": "g1", "from": str(at(10)), "to": at(130).isoformat()})},
        {"session_id": "s1", "seq": 10, "ts": us(9), "kind": "grant_extended", "verified": False,
         "payload": json.dumps({"grant_id": "g1", "from": str(at(130)), "to": at(999).isoformat()})},
    ])  # fmt: skip
    assert sessions_grant(ix)["expires_at"] == z(130)  # (not the unverified one's)


def test_a_revocation_a_live_session_saw_ends_a_grant_with_no_events():
    """A CLI without a recorder revoked the grant; the proxy ended its live session and
    recorded (signed) what the store said: ``grant_revoked`` with who and when. The answer
    said nothing of the revocation: no REVOKED line, ``ended`` null."""
    ix = Index()
    ix.session("s1", "g1", 5, 30, meta=meta(600), end_cause="revoked")
    index._insert(ix.con, "session_events", [
        {"session_id": "s1", "seq": 9, "ts": us(29), "kind": "grant_revoked", "verified": True,
         "payload": json.dumps({"grant_id": "g1", "by": "cli-admin",
                                "at": at(28.5).isoformat(), "stream": None})},
    ])  # fmt: skip
    g = sessions_grant(ix)
    assert (g["ended"], g["revoked_at"], g["revoked_by"]) == ("revoked", z(28.5), "cli-admin")
    out = io.StringIO()
    write_text(audit(ix.con, Filters(grant="g1")), out)
    assert f"  REVOKED at {z(28.5)} by cli-admin\n" in out.getvalue()
