"""Session 35, round 4: an auditor's red-team round on the audit answer, with PostgreSQL as
the judge (the method of tests/integration/test_s35_audit_round.py: a session through a
recording proxy, ``pgwitness audit`` read back, held to what the server says).

Findings (fixed in recorder/audit/; the unit tests in tests/unit/test_s35_audit_round4_unit.py
fail without the fix, as these do):

* session 34's gap (b) in a dry run: a granted function opens a cursor and returns its name
  as ``text``; the dry run lets the Execute of it through and the server returns the
  cursor's rows. The row had no text, a ``SELECT 1`` of nothing; it names the statement that
  returned the name, and says what ran (``derive``: ``_names_returned``);
* a 25P02 Execute of the unnamed portal after a single-statement Query failed at run time
  in the block named the statement bound before (the server had made the failed Query's
  portal in its place: its log names that one, with no text);
* a notification the proxy withheld (deny.listen) was in no list of denials, and
  ``--denied`` (``audit``, ``sessions``) left its session out; the Parquet export had no
  notifications at all. OCSF had no event for a recording that did not verify (unit test
  only);
* cancel requests: the proxy records each one (``cancel``, from where) and the answer said
  nothing of them in any format (a cancelled statement read as one that failed by itself);
  each session lists them now, with the statement running then; OCSF had no session end;
* a session the database ended (``pg_terminate_backend``) said ``(FATAL)`` alone: the
  server's FATAL (57P01, administrator command) is in its end now.

Found outside recorder/audit/ and fixed in the proxy (``Server._send_cancel``): a
CancelRequest whose sender closes its connection at once was recorded and never forwarded
(``connection_lost`` cancelled the handshake task awaiting ``Server.forward_cancel``).

What held (probes not kept): a grant extended then revoked mid-transaction (the open
``INSERT`` rolled back, as the table says; the extension, revocation and the session's end
alike in JSON, text, CSV and OCSF); a denied statement inside a block that then "commits"
(``ROLLBACK`` tag, the earlier ``INSERT`` rolled back) and in Sync groups (the rest
skipped); a multi-statement Query with a denied statement (nothing ran); COPY both ways,
a COPY FROM failing on its data and one the client failed, a COPY of a relation not
granted; a prepared statement executed three times (three rows, each its values); row by
row, the JSON, CSV, Parquet and OCSF statements of one session of all of these agree (text,
decision, rule, outcome, tag, rows, SQLSTATE, message).
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from common.wire import messages as m
from tests.support.rawpg import RawClient, bind, error_fields, execute, parse
from tests.support.recording import issue_grant, one_live_session
from tests.support.server_log import AGENT, logging_role, open_case, run_cli, trace

pytestmark = pytest.mark.timeout(120)

SETUP = """
DROP SCHEMA IF EXISTS r4 CASCADE;
CREATE SCHEMA r4;
GRANT USAGE ON SCHEMA r4 TO pgwitness;
CREATE TABLE r4.t (id int, v text);
CREATE TABLE r4.secret (id int, s text);
INSERT INTO r4.t SELECT g, 'v' || g FROM generate_series(1, 5) g;
INSERT INTO r4.secret VALUES (1, 'hidden');
GRANT ALL ON r4.t, r4.secret TO pgwitness;
CREATE FUNCTION r4.subscribe() RETURNS int LANGUAGE plpgsql AS $$ BEGIN LISTEN r4_chan; RETURN 1; END $$;
CREATE FUNCTION r4.open_text() RETURNS text LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'textcur';
BEGIN OPEN c FOR SELECT s FROM r4.secret; RETURN 'textcur'; END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA r4 TO pgwitness;
"""
SCOPES = "read:r4.t write:r4.t execute:r4.subscribe,r4.open_text"
SYNC = m.frame(b"S", b"")


@pytest.fixture(scope="module")
def server_log(pg):
    with logging_role(pg, SETUP, "r4") as logged:
        yield logged


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S35R4-", SCOPES)


def cli(case, command: str, *argv: str) -> tuple[int, str]:
    return run_cli(command, "--store", str(case.tmp / "rec"), "--index",
                   str(case.tmp / "audit.duckdb"), "--public-key",
                   str(case.tmp / "signing.key.pub"), *argv)  # fmt: skip


def answered(c) -> list[tuple[str, str | None]]:
    out = []
    for f in c.frames_until_ready():
        t = chr(f[0])
        out.append((t, f[5:-1].decode() if t == "C" else error_fields(f).get("C") if t == "E"
                    else None))  # fmt: skip
    return out


# --- 1. session 34's gap (b) in a dry run: a cursor's name returned as text -----------------


def test_a_dry_runs_execute_of_a_cursor_named_as_text_says_what_ran(case):
    """A granted function opens a cursor over ``r4.secret`` and returns its name as
    ``text``. A dry run lets the Execute of it through (``would_deny deny.cursor``) and the
    server runs the cursor's query (its log: ``execute textcur: SELECT s FROM r4.secret``),
    returning its row. The answer's row had no text: ``SELECT 1`` of nothing, in every
    format. It names the statement that returned the name now, and says what ran."""
    _, dry = issue_grant(case.h, scopes=SCOPES, task=case.task, enforce=False)
    c = RawClient.session(case.h.host, case.h.port, AGENT, dry)
    sid = one_live_session(case.h)
    got = []
    for frames in ([m.query("BEGIN")], [m.query("SELECT r4.open_text()")],
                   [execute("textcur"), SYNC], [m.query("COMMIT")]):  # fmt: skip
        c.send(*frames)
        got.append(answered(c))
    c.close()
    assert got[2] == [("D", None), ("C", "SELECT 1"), ("Z", None)], got  # it ran
    rows, ran = case.judged(sid)
    assert [(r.how, r.text) for r in ran][2] == ("execute", "SELECT s FROM r4.secret"), ran
    x = rows[2]
    assert (x["text"], x["decision"], x["rule"], x["command_tag"]) == (
        "SELECT r4.open_text()",
        "would_deny",
        "deny.cursor",
        "SELECT 1",
    ), x
    assert "a cursor 'textcur' no statement recorded opened" in x["message"], x
    rc, out = cli(case, "audit", "--task", case.task, "--format", "text")
    assert "[would_deny deny.cursor] 'SELECT r4.open_text()'" in out, out


# --- 2. 25P02 after a Query that failed at run time ----------------------------------------

BOUND = "SELECT v FROM r4.t ORDER BY id"


@pytest.mark.parametrize(("failing", "names"), [
    ("UPDATE r4.t SET id = v::int", ""),  # run time (22P02): the Query's portal
    ("UPDATE r4.t SET nosuch = 1", BOUND),  # parse analysis (42703): the bound one stays
])  # fmt: skip
def test_a_25p02_after_a_failed_query_names_no_statement_the_server_did_not_hold(
    case, failing, names
):
    """In a dry run's block (enforcement refuses the Execute: ``deny.cursor``, the session
    did not make the portal): the unnamed portal bound, a single-statement Query failing,
    an Execute of the unnamed portal: 25P02. The server's log names the portal it found
    (``STATEMENT:``): the failed ``UPDATE``'s own where it failed at run time (made in place
    of the bound one; aborted, it has no text: ``''``), the bound ``SELECT`` where it failed
    in parse analysis. The answer named the bound ``SELECT`` in both."""
    _, dry = issue_grant(case.h, scopes=SCOPES, task=case.task, enforce=False)
    c = RawClient.session(case.h.host, case.h.port, AGENT, dry)
    sid = one_live_session(case.h)
    got = []
    for frames in ([m.query("BEGIN")], [parse("", BOUND), bind(), SYNC], [m.query(failing)],
                   [execute(""), SYNC], [m.query("ROLLBACK")]):  # fmt: skip
        c.send(*frames)
        got.append(answered(c))
    c.close()
    assert got[3] == [("E", "25P02"), ("Z", None)], got
    rows, entries = case.judged_raw(sid)
    ran = trace(entries)
    (refused,) = [r for r in ran if r.sqlstate == "25P02"]
    assert refused.text == names, ran  # the server's word (its log's STATEMENT)
    (row,) = [r for r in rows if r["sqlstate"] == "25P02"]
    assert row["text"] == names, rows


# --- 3. a withheld notification: a denial, in every format -----------------------------------


def test_a_withheld_notification_is_a_denial_in_every_format_and_kept_by_denied(case):
    """A granted function LISTENs on ``r4_chan`` (no ``listen:`` scope names it); another
    session notifies it, the proxy withholds it from the client (``notification.withheld``).
    It was in no list of denials, ``audit --denied`` and ``sessions --denied`` left its
    session out, and the Parquet export had no notifications at all."""
    import duckdb

    c = case.client()
    sid = one_live_session(case.h)
    c.query("SELECT r4.subscribe()")
    case.pg.psql("NOTIFY r4_chan, 'not yours';", db="app")
    got = c.query("SELECT 1")
    c.close()
    assert b"r4_chan" not in b"".join(got)  # withheld
    s = case.answer(sid)
    assert s["denials"] == 1, s
    rc, out = cli(case, "audit", "--task", case.task, "--format", "json", "--denied")
    a = json.loads(out)
    assert [x["session_id"] for g in a["grants"] for x in g["sessions"]] == [sid], a
    assert [(d["source"], d["rule"], d["session_id"]) for d in a["denials"]] == [
        ("notification", "deny.listen", sid)
    ], a["denials"]
    rc, out = cli(case, "sessions", "--task", case.task, "--denied")
    assert sid in out, out
    rc, out = cli(case, "audit", "--task", case.task, "--format", "csv")
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(out))]
    assert kinds.count("notification.withheld") == 1, kinds
    rc, _ = cli(case, "export", "--out", str(case.tmp / "lake"))
    assert rc == 0
    rows = duckdb.sql(f"SELECT session_id, delivered, channel, rule FROM read_parquet("
                      f"'{case.tmp}/lake/notifications/*/*.parquet')").fetchall()  # fmt: skip
    assert rows == [(sid, False, "r4_chan", "deny.listen")], rows


# --- 4. cancel requests: who cancelled what ----------------------------------------------


def send_cancel(case, c, wait_for_eof: bool) -> str:
    """A CancelRequest for ``c``'s session from another connection (libpq's PQcancel waits
    for the server to close it; a client may close at once: the server sends nothing). The
    address it came from."""
    import socket
    import struct

    k = socket.create_connection((case.h.host, case.h.port), timeout=5)
    k.sendall(struct.pack("!iii", 16, 80877102, c.backend_pid) + c.secret)
    host, port = k.getsockname()[:2]
    peer = f"{host}:{port}"
    if wait_for_eof:
        assert k.recv(10) == b""
    k.close()
    return peer


def test_the_answer_says_who_cancelled_which_statement(case):
    """A cancel request from another connection while ``pg_sleep`` runs: the server cancels
    it (57014). The proxy records the request (``cancel``, from where); the answer said
    nothing of it in any format: only an error, as if the statement had failed by itself."""
    import time

    c = case.client()
    sid = one_live_session(case.h)
    c.send(m.query("SELECT pg_sleep(5)"))
    time.sleep(0.3)
    peer = send_cancel(case, c, wait_for_eof=True)
    assert answered(c)[-2:] == [("E", "57014"), ("Z", None)]  # the server's word
    c.close()
    s = case.answer(sid)
    assert [(x["client"], x["n"]) for x in s["cancels"]] == [(peer, 1)], s["cancels"]
    assert s["statement_rows"][0]["sqlstate"] == "57014"
    rc, out = cli(case, "audit", "--task", case.task, "--format", "text")
    assert f"CANCEL REQUEST from {peer} (statement 1 running)" in out, out
    rc, out = cli(case, "audit", "--task", case.task, "--format", "csv")
    assert [(r["client"], r["n"]) for r in csv.DictReader(io.StringIO(out))
            if r["kind"] == "cancel"] == [(peer, "1")], out  # fmt: skip
    rc, _ = cli(case, "export", "--out", str(case.tmp / "lake"), "--as", "ocsf")
    events = [json.loads(x) for f in (case.tmp / "lake").rglob("*.jsonl")
              for x in f.read_text().splitlines()]  # fmt: skip
    assert [e["unmapped"]["from"] for e in events if e["unmapped"].get("event") == "cancel"] == [
        peer
    ]
    ends = [e for e in events if e["unmapped"].get("event") == "session.end"]
    assert [e["unmapped"]["end_cause"] for e in ends] == [s["end_cause"]], ends


def test_a_cancel_request_whose_sender_closes_at_once_reaches_the_server(case):
    """PostgreSQL acts on a CancelRequest once it has read it, whether or not its sender
    waits for the connection to close (it sends nothing back). Through the proxy, a sender
    that closes at once has its request recorded (``cancel``: the answer now lists it) and
    lost: ``connection_lost`` cancelled the handshake task while ``forward_cancel`` awaited
    the upstream's connection, so the statement ran to its end. The forward is the server's
    own task now (``Server._send_cancel``)."""
    import time

    c = case.client()
    c.send(m.query("SELECT pg_sleep(1.5)"))
    time.sleep(0.3)
    send_cancel(case, c, wait_for_eof=False)
    got = answered(c)
    c.close()
    assert got[-2:] == [("E", "57014"), ("Z", None)], got


# --- 5. a session the database ended: why ---------------------------------------------------


def test_a_session_the_database_ended_says_why_as_the_server_did(case):
    """``pg_terminate_backend`` of the session's idle backend: the client gets the server's
    FATAL (57P01, "terminating connection due to administrator command"). The answer's end
    said ``upstream (the upstream database ended the session (FATAL))``, as it would of an
    idle transaction's timeout: not who or what ended it. It gives the server's words now,
    in the JSON, the text, the CSV's ``session.end`` and OCSF's."""
    import time

    c = case.client()
    sid = one_live_session(case.h)
    pid = c.scalar("SELECT pg_backend_pid()")
    case.pg.psql(f"SELECT pg_terminate_backend({pid})", db="app")
    time.sleep(0.3)
    (fatal,) = c.frames_until_eof()
    said = error_fields(fatal)
    c.close()
    words = f"{said['C']} {said['M']}"
    assert words == "57P01 terminating connection due to administrator command"
    s = case.answer(sid)
    assert (s["end_cause"], s["end_detail"].endswith(": " + words)) == ("upstream", True), s
    rc, out = cli(case, "audit", "--task", case.task, "--format", "csv")
    (end,) = [r for r in csv.DictReader(io.StringIO(out)) if r["kind"] == "session.end"]
    assert end["message"] == s["end_detail"], end
    rc, _ = cli(case, "export", "--out", str(case.tmp / "lake"), "--as", "ocsf")
    events = [json.loads(x) for f in (case.tmp / "lake").rglob("*.jsonl")
              for x in f.read_text().splitlines()]  # fmt: skip
    (e,) = [e for e in events if e["unmapped"].get("event") == "session.end"]
    assert e["unmapped"]["end_detail"] == s["end_detail"], e
