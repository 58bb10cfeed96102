"""Session 35's red-team round on the audit answer, on hand-made recordings and answers (no
proxy): what derive, the text report and the OCSF export say of a statement against what the
server did. The same cases through the proxy, with PostgreSQL's log as judge:
tests/integration/test_s35_audit_round.py."""

from __future__ import annotations

import io

from devtools.testing import error, parse, query, ready, sync
from recorder.audit.answer import write_text
from recorder.audit.ocsf import statement_event
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
    assert LONG[:200] in line


def test_a_statement_of_200_characters_is_shown_whole():
    text = "SELECT '" + "y" * 191 + "'"
    assert len(text) == 200
    (line,) = [x for x in text_of([row(text)]).splitlines() if "SELECT" in x]
    assert line.endswith(text) and "cut" not in line


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
