"""Session 35, an auditor's red-team round on the audit answer, with PostgreSQL as the judge.

Method (as sessions 33 and 34): each test runs one session of an agent with a grant through
a recording proxy (raw protocol messages: ``RawClient``), reads ``pgwitness audit`` back
(JSON, text, or the OCSF export) and holds it to the server's own log of the session's
backend (``tests.support.server_log``: every statement, its duration, its error).

Findings (each fixed in recorder/audit/; the unit tests in
tests/unit/test_s35_audit_round_unit.py fail without the fix):

* a statement pipelined behind another (two Queries sent at once, a Sync group sent before
  the Query ahead of it was answered) was timed from when the client sent it: a ``SELECT 1``
  behind a ``pg_sleep(0.5)`` took 500 ms by the answer, 0.07 ms by the server's log, and
  began before the statement ahead of it had ended (derive: it begins no earlier than the
  ReadyForQuery that answered those before it);
* the text report cut a statement's text at 200 characters without a word: an ``UPDATE``
  whose long literal pushed ``, id = -id`` past the cut read as setting ``v`` only (it now
  says how much it leaves out);
* the OCSF export called a portal that returned its rows and was suspended a Failure (and a
  statement the recording holds no answer to, which the server may have run and committed:
  Unknown now, as the answer says), and a ``COPY ... TO`` (a table read out) a Write;
* ``pgwitness sessions --denied --since X`` listed a session whose denials all fell before X
  (``audit --denied``, the same filters, did not);
* a grant that expired while its proxy was stopped (no ``grant.expired`` recorded): the text
  gave its window and no end, as for a grant in force;
* two extensions through two processes, the second's clock behind: folded by record time,
  the grant's expiry was the first extension's (an hour short of the grant store's);
* a ``COPY FROM STDIN`` cut by the client going away said ``no answer`` (it was rolled back);
* a session whose proxy was killed read ``-> (open)`` and "still open", its backend gone.
* a grant known from its sessions only (a CLI without a recorder issued and extended it)
  had the expiry of its first session's login, before the extension;
* a grant a CLI without a recorder revoked while a session of it lived (the proxy ended it,
  and recorded the store's word): the answer gave the grant no revocation;
* a dry-run grant's login whose startup setting enforcement would have refused
  (``startup_would_deny``) was in no list of denials, and ``--denied`` left its session out.

And one fixed after the round (its patch applied by the coordinator, since it changed what
session 34's tests/unit/test_s34_null_params.py asserted): a text value sent in binary
format (asyncpg's every text) showed as hex, as a text-format value of those characters
does; a Bind's parameter formats now say which to decode (``derive._typed``,
``recorder.pgbinary``).

What held (probes not kept, each compared with the server's log or the table): a policy
denial inside a block and the 25P02s after it (server errors, not denials); psycopg's
pipeline with an error mid-pipeline; asyncpg's executemany with an error mid-batch; psql's
``ON_ERROR_ROLLBACK`` savepoints; multi-statement Queries with COMMIT, COMMIT AND CHAIN,
ROLLBACK AND CHAIN and an error after; COPY in a failing Query, COPY failing on a bad row,
COPY in a block that ended in ROLLBACK; a grant revoked while a statement ran (the proxy
cancels it, the session ends ``revoked``); ``idle_in_transaction_session_timeout`` ending
the session (the block rolled back); a client gone right after an INSERT (the proxy waits
for the answer: ``ok``, the row stays); filters' time zones.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from common.wire import messages as m
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.rawpg import RawClient, bind, execute, parse
from tests.support.recording import issue_grant, one_live_session
from tests.support.server_log import (
    AGENT,
    ERROR_CODE,
    assert_as_the_server_ran,
    logging_role,
    open_case,
    run_cli,
    trace,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(90)

SETUP = """
DROP SCHEMA IF EXISTS a35 CASCADE;
CREATE SCHEMA a35;
GRANT USAGE ON SCHEMA a35 TO pgwitness;
CREATE TABLE a35.t (id int, v text);
INSERT INTO a35.t SELECT g, 'v' || g FROM generate_series(1, 20) g;
GRANT ALL ON a35.t TO pgwitness;
"""
SCOPES = "read:a35.t write:a35.t"


@pytest.fixture(scope="module")
def server_log(pg):
    """The ``pg`` cluster logs every statement of the proxy's upstream role while the
    module runs (``tests.support.server_log.logging_role``)."""
    with logging_role(pg, SETUP, "a35") as logged:
        yield logged


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S35-", SCOPES)


SYNC = m.frame(b"S", b"")
_DURATION = re.compile(r"duration: ([0-9.]+) ms")


def server_durations(entries: list[tuple[str, str]]) -> list[float]:
    """The server's duration of each statement or Execute it ran, in its order (the
    ``duration`` line that follows its ``statement:`` or ``execute`` line)."""
    out: list[float] = []
    running = False
    for level, text in entries:
        if level != "LOG":
            continue
        text = text[7:] if ERROR_CODE.match(text) else text  # "00000: " (verbose)
        if text.startswith("statement: ") or text.startswith("execute "):
            running = not text.startswith("statement: DISCARD ALL")
        elif running and (hit := _DURATION.match(text)):
            out.append(float(hit.group(1)))
            running = False
    return out


def stamp(v: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


def audit_cli(case, *argv: str) -> tuple[int, str]:
    return run_cli("audit", "--store", str(case.tmp / "rec"), "--index",
                   str(case.tmp / "audit.duckdb"), "--public-key",
                   str(case.tmp / "signing.key.pub"), "--task", case.task, *argv)  # fmt: skip


# --- 1. when a statement began, and how long it took ------------------------------------


def test_statements_pipelined_behind_a_long_one_are_timed_as_the_server_ran_them(case):
    """A Query, a second Query and a Sync group sent at once: the server runs them one after
    the other. The second and the group's statement each took well under a millisecond by
    the server's log; the answer said each took the pg_sleep's half second, and began
    before it ended."""
    c = case.client()
    sid = one_live_session(case.h)
    c.send(m.query("SELECT pg_sleep(0.5)"), m.query("SELECT 1"), parse("", "SELECT 2"),
           bind(), execute(), SYNC)  # fmt: skip
    for _ in range(3):
        c.frames_until_ready()
    c.close()
    rows, entries = case.judged_raw(sid)
    assert_as_the_server_ran(rows, trace(entries))
    took = server_durations(entries)
    assert len(took) == 3 and took[0] >= 500 and max(took[1:]) < 50, took
    assert [r["text"] for r in rows] == ["SELECT pg_sleep(0.5)", "SELECT 1", "SELECT 2"]
    assert rows[0]["duration_ms"] >= 500
    for before, r in zip(rows, rows[1:], strict=False):
        assert r["duration_ms"] < 50, (r["text"], r["duration_ms"], took)
        assert stamp(r["ts"]) >= stamp(before["ended_at"]) - 0.001, (before, r)


# --- 2. the text report's statements --------------------------------------------------


LONG = "UPDATE a35.t SET v = '" + "x" * 250 + "', id = -id WHERE id = 1"


def test_a_long_statement_is_not_cut_silently_in_the_text_report(case):
    """The server ran the whole UPDATE (``id`` is now -1); the text report showed its first
    200 characters as if they were the statement, the ``id = -id`` left out unsaid."""
    c = case.client()
    sid = one_live_session(case.h)
    c.send(m.query(LONG))
    c.frames_until_ready()
    c.close()
    rows, ran = case.judged(sid)
    assert [(x.text, x.sqlstate) for x in ran] == [(LONG, None)]
    assert rows[0]["text"] == LONG
    assert case.pg.psql("SELECT count(*) FROM a35.t WHERE id = -1", db="app").strip() == "1"
    rc, text = audit_cli(case)
    assert rc == 0, text
    (line,) = [x for x in text.splitlines() if "UPDATE a35.t SET v" in x]
    assert line.endswith(
        f"...[statement cut: {len(LONG) - 200} more of {len(LONG)} characters "
        "not shown; --format json has it whole]"
    ), line


# --- 3. the OCSF export ---------------------------------------------------------------


def test_ocsf_says_a_suspended_portal_returned_its_rows(case):
    """An Execute with a row limit: the server returned 2 rows and suspended the portal (its
    log: the execute, no error). The answer says ``suspended``, 2 rows; OCSF said Failure."""
    c = case.client()
    sid = one_live_session(case.h)
    c.send(parse("", "SELECT v FROM a35.t ORDER BY id"), bind(), execute("", 2), SYNC)
    c.frames_until_ready()
    c.close()
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert [(r["outcome"], r["rows"]) for r in rows] == [("suspended", 2)]
    (e,) = [
        e
        for e in ocsf_events(case)
        if e["class_uid"] == 6005 and e["actor"]["session"]["uid"] == sid
    ]
    assert (e["status_id"], e["status"], e["unmapped"]["rows"]) == (1, "Success", 2)


def ocsf_events(case) -> list[dict]:
    rc, _ = run_cli("export", "--store", str(case.tmp / "rec"), "--index",
                    str(case.tmp / "audit.duckdb"), "--public-key",
                    str(case.tmp / "signing.key.pub"), "--out", str(case.tmp / "lake"),
                    "--as", "ocsf")  # fmt: skip
    assert rc == 0
    return [json.loads(x) for f in (case.tmp / "lake").rglob("*.jsonl")
            for x in f.read_text().splitlines()]  # fmt: skip


def test_ocsf_says_a_copy_to_read_the_table(case):
    """``COPY a35.t TO STDOUT`` sent the table's 20 rows to the client (the server's log: the
    COPY; the table unchanged). OCSF called it activity 5 Write, as a COPY FROM."""
    c = case.client()
    sid = one_live_session(case.h)
    before = case.pg.psql("SELECT count(*), sum(id) FROM a35.t", db="app")
    c.send(m.query("COPY a35.t TO STDOUT"))
    assert sum(f[:1] == b"d" for f in c.frames_until_ready()) == 20
    c.close()
    rows, ran = case.judged(sid)
    assert_as_the_server_ran(rows, ran)
    assert case.pg.psql("SELECT count(*), sum(id) FROM a35.t", db="app") == before
    assert [(r["command_tag"], r["classes"], r["copy"]) for r in rows] == [
        ("COPY 20", "READ", True)
    ]
    (e,) = [e for e in ocsf_events(case) if e["class_uid"] == 6005
            and e["actor"]["session"]["uid"] == sid]  # fmt: skip
    assert (e["activity_id"], e["type_uid"]) == (1, 600501), e


# --- 4. values sent in binary format -------------------------------------------------------


def test_a_text_sent_in_binary_is_not_shown_as_the_text_of_its_hex(case):
    """Two INSERTs of one statement (``$1`` int4, ``$2`` text): the text ``a`` in binary
    format, then the four characters ``\\x61`` in text format. The server's log: ``$2 =
    'a'``, then ``$2 = '\\x61'``; the table holds ``a`` and ``\\x61``. The answer showed
    both as ``\\x61``: which was inserted cannot be told from it."""
    c = case.client()
    sid = one_live_session(case.h)
    sql = "INSERT INTO a35.t VALUES ($1, $2)"
    c.send(parse("s", sql, (23, 25)), SYNC)
    c.frames_until_ready()
    c.send(bind("", "s", (b"\x00\x00\x02\x81", b"a"), (1,)), execute(), SYNC)
    c.frames_until_ready()
    c.send(bind("", "s", (b"642", b"\\x61"), (0,)), execute(), SYNC)
    c.frames_until_ready()
    c.close()
    got = case.pg.psql("SELECT id, v FROM a35.t WHERE id IN (641, 642) ORDER BY id", db="app")
    assert got.split() == ["641|a", "642|\\x61"]
    rows, ran = case.judged(sid)
    assert [x.params for x in ran] == [["641", "a"], ["642", "\\x61"]]
    assert [json.loads(r["params"]) for r in rows] == [[641, "a"], ["642", "\\x61"]]


# --- 5. a grant's end --------------------------------------------------------------------


def test_a_grant_that_expired_with_its_proxy_stopped_is_said_to_have_expired(case):
    """A 2-second grant, one session on it, then the proxy stops (the fleet torn down after
    the task). The grant store says the grant expired; no proxy ran at the expiry to record
    ``grant.expired``. The answer's text gave its window and no end, as for a grant in
    force (JSON ``ended`` is what the grant's recorded events say: null)."""
    grant, token = issue_grant(case.h, scopes=SCOPES, task=case.task, ttl="2s")
    c = RawClient.session(case.h.host, case.h.port, AGENT, token)
    sid = one_live_session(case.h)
    c.send(m.query("SELECT 1"))
    c.frames_until_ready()
    c.close()
    case.answer(sid)  # stored and indexed
    case.h.stop()
    expiry = grant.expires_at
    wait_for(lambda: dt.datetime.now(dt.UTC) > expiry, 5, "the grant's expiry")
    rc, text = audit_cli(case, "--grant", grant.id)
    shown = expiry.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    assert (f"  EXPIRED at {shown} (its expiry has passed; no grant.expired event is "
            "recorded)\n") in text, text  # fmt: skip
    rc, out = audit_cli(case, "--grant", grant.id, "--format", "json")
    assert rc == 0, out
    (g,) = json.loads(out)["grants"]
    assert [e["kind"] for e in g["events"]] == ["grant.issued"]  # no proxy recorded the end
    assert (g["ended"], g["expired_at"]) == (None, None)  # (as its recorded events say)


def test_two_extensions_through_two_processes_with_skewed_clocks(case, monkeypatch):
    """A grant extended through the proxy (10 min more), then again a second later through
    ``pgwitness grant --config`` on a host whose clock ran 5 s behind when that process
    started its control stream: the second change is recorded with the earlier time. The
    grant store's expiry is the second's; the answer folded the events by record time and
    gave the first's (its window, and so whether the grant was in force)."""
    import asyncio
    import time

    from policy.grants.store import open_store
    from proxy.runtime import build_recorder

    grant, _ = issue_grant(case.h, scopes=SCOPES, task=case.task, ttl="10m")
    cli_rec = build_recorder(case.h.cfg, one_shot=True)  # as `pgwitness grant --config` does
    real = time.time_ns
    with monkeypatch.context() as mp:
        mp.setattr(time, "time_ns", lambda: real() - 5_000_000_000)
        cli_rec.control_stream_id()  # its stream starts on the skewed clock
    case.h.call(case.h.runtime.store.extend(grant.id, "10m", by="proxy-admin"))
    time.sleep(1)

    async def cli_extend():
        store = await open_store(case.h.cfg.grants.store, on_event=cli_rec.control_event)
        try:
            return await store.extend(grant.id, "1h", by="cli-admin")
        finally:
            await store.close()

    truth = asyncio.run(cli_extend())
    cli_rec.close()
    assert case.h.call(case.h.runtime.store.get(grant.id)).expires_at == truth.expires_at
    case.h.stop()
    rc, out = audit_cli(case, "--grant", grant.id, "--format", "json")
    assert rc == 0, out
    (g,) = json.loads(out)["grants"]
    ext = [e for e in g["events"] if e["kind"] == "grant.extended"]
    assert [e["by"] for e in ext] == ["cli-admin", "proxy-admin"]  # recorded out of order
    assert stamp(g["expires_at"]) == truth.expires_at.timestamp()
    assert [x["by"] for x in g["extensions"]] == ["proxy-admin", "cli-admin"]


# --- 6. a session that ends mid-COPY -----------------------------------------------------


def test_a_copy_cut_by_the_client_going_away(case):
    """The client sends two rows of its COPY data and closes its socket: the server never
    gets CopyDone, the COPY cannot complete, no row of it stays (the INSERT before it, its
    own transaction, does). The answer said ``no answer`` (OCSF: Failure, then Unknown)."""
    import socket
    import time

    c = case.client()
    sid = one_live_session(case.h)
    c.send(m.query("INSERT INTO a35.t VALUES (681, 'x')"))
    c.frames_until_ready()
    c.send(m.query("COPY a35.t FROM STDIN"))
    c.read_until("G")
    c.send(m.frame(b"d", b"682\tx\n683\ty\n"))
    time.sleep(0.3)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.sock.close()
    session = case.answer(sid)
    got = case.pg.psql("SELECT id FROM a35.t WHERE id BETWEEN 681 AND 683 ORDER BY id", db="app")
    assert got.split() == ["681"]
    rows = session["statement_rows"]
    assert [(r["text"], r["outcome"], r["copy"]) for r in rows] == [
        ("INSERT INTO a35.t VALUES (681, 'x')", "ok", False),
        ("COPY a35.t FROM STDIN", "rolled back", True),
    ]
    assert rows[1]["message"].startswith("the session ended (disconnect) while the client")
    (e,) = [e for e in ocsf_events(case) if e["class_uid"] == 6005
            and e["query_info"]["query_string"] == "COPY a35.t FROM STDIN"]  # fmt: skip
    assert (e["status_id"], e["status"]) == (2, "Failure")


# --- 7. a session whose proxy was killed ---------------------------------------------------


def test_a_session_whose_proxy_was_killed_is_not_said_to_be_open(spawn, server_log, tmp_path):
    """``pgwitness serve`` killed (SIGKILL) inside a client's block: the server's backend is
    gone at once, the block rolled back. The recording has no end, as a live session's has
    none: the report said ``-> (open)  end: None`` and "1 still open" of it."""
    import os
    import signal
    import time

    rec = tmp_path / "rec"
    sets = {"recorder.enabled": "true", "recorder.store": str(rec),
            "recorder.spool_dir": str(tmp_path / "spool"),
            "recorder.signing_key": str(tmp_path / "signing.key"),
            "recorder.chunk_max_seconds": "0.2", "recorder.fsync": "false"}  # fmt: skip
    p = spawn(extra_args=[x for k, v in sets.items() for x in ("--set", f"{k}={v}")])
    c = RawClient.session(p.host, p.port, STATIC_USER, STATIC_PASSWORD, "app")
    pid = c.backend_pid
    for q in ("BEGIN", "INSERT INTO a35.t VALUES (691, 'killed')"):
        c.send(m.query(q))
        c.frames_until_ready()
    time.sleep(1.5)  # its chunks sealed and stored
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait()
    c.close()
    wait_for(lambda: server_log.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")
             .strip() == "0", 5, "the backend to end")  # fmt: skip
    assert server_log.psql("SELECT count(*) FROM a35.t WHERE id = 691", db="app").strip() == "0"
    rc, text = run_cli("audit", "--store", str(rec), "--index", str(tmp_path / "a.duckdb"),
                       "--public-key", str(tmp_path / "signing.key.pub"))  # fmt: skip
    (line,) = [x for x in text.splitlines() if x.startswith("    20") and " -> " in x]
    assert line.endswith(" -> (no end recorded: the session is still live, or its proxy stopped "
                         "before it could record one)"), text  # fmt: skip
    assert "-> (open)" not in text and "(1 still open)" not in text, text


# --- 8. what a dry run's login would have been refused ------------------------------------


def test_a_dry_runs_startup_setting_enforcement_would_refuse_is_among_its_denials(case):
    """The same login (``options=-c search_path=secret``) on an enforcing grant and on a
    dry-run one: the enforcing grant's is refused (a ``login`` denial, with its reason); the
    dry run's is let through and recorded as ``startup_would_deny``. The answer listed the
    first among the task's denials and not the second: the one thing a dry run's auditor asks
    (what would the grant have refused?) left out, as its would-deny statements were before
    session 34. ``--denied`` kept neither the session nor the sessions list it."""
    import psycopg

    _, enforcing = issue_grant(case.h, scopes=SCOPES, task=case.task)
    _, dry = issue_grant(case.h, scopes=SCOPES, task=case.task, enforce=False)
    kw = {"host": case.h.host, "port": case.h.port, "user": AGENT, "dbname": "app",
          "sslmode": "disable", "options": "-c search_path=secret", "autocommit": True}  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match="search_path"):
        psycopg.connect(password=enforcing, **kw)
    with psycopg.connect(password=dry, **kw) as conn:
        sid = one_live_session(case.h)
        assert conn.execute("SHOW search_path").fetchone() == ("secret",)  # let through
    case.answer(sid)
    rc, out = audit_cli(case, "--format", "json")
    assert rc == 0, out
    a = json.loads(out)
    (refused,) = [d for d in a["denials"] if d["source"] == "login"]
    assert 'setting "search_path" in options refused' in refused["message"], refused
    (would,) = [d for d in a["denials"] if d["session_id"] == sid]
    assert (would["source"], would["rule"], would["message"], would["sqlstate"]) == (
        "dry-run",
        "deny.setting",
        refused["message"],
        None,
    )
    rc, out = audit_cli(case, "--denied", "--format", "json")
    kept = [s["session_id"] for g in json.loads(out)["grants"] for s in g["sessions"]]
    assert kept == [sid]
    rc, out = run_cli("sessions", "--store", str(case.tmp / "rec"), "--index",
                      str(case.tmp / "audit.duckdb"), "--public-key",
                      str(case.tmp / "signing.key.pub"), "--task", case.task, "--denied",
                      "--format", "json")  # fmt: skip
    assert [json.loads(x)["session_id"] for x in out.splitlines()] == [sid], out


def test_a_grant_known_from_its_sessions_has_its_latest_expiry(case):
    """A grant issued and extended by a CLI without a recorder (no grant events: the answer
    knows it from its sessions' signed starts), a session before the extension and one
    after. The grant store's expiry is the extended one; the answer gave the first
    session's (an hour short)."""
    import asyncio

    from policy.grants.store import open_store

    async def cli(fn):
        store = await open_store(case.h.cfg.grants.store)  # no recorder: no events
        try:
            return await fn(store)
        finally:
            await store.close()

    grant, token = asyncio.run(cli(lambda s: s.issue(
        agent=AGENT, task=case.task, reason="cli", granted_by="cli-admin",
        database="app", scopes=SCOPES, ttl="10m")))  # fmt: skip
    sids = []
    for _ in range(2):
        c = RawClient.session(case.h.host, case.h.port, AGENT, token)
        sids.append(one_live_session(case.h))
        c.send(m.query("SELECT 1"))
        c.frames_until_ready()
        c.close()
        case.answer(sids[-1])  # stored, indexed (the task's own grant: the answer waits)
        if len(sids) == 1:
            truth = asyncio.run(cli(lambda s: s.extend(grant.id, "1h", by="cli-admin")))
    rc, out = audit_cli(case, "--grant", grant.id, "--format", "json")
    (g,) = json.loads(out)["grants"]
    assert (g["source"], g["events"]) == ("sessions", [])
    assert [s["session_id"] for s in g["sessions"]] == sids
    assert stamp(g["expires_at"]) == truth.expires_at.timestamp(), (g["expires_at"], truth)


def test_a_revocation_by_a_cli_without_a_recorder_ends_its_grant(case):
    """A grant issued and revoked by a CLI without a recorder while a session of it lives:
    the proxy ends the session (``revoked``) and records, signed, the store's word (who, when:
    ``grant_revoked``). The answer gave the grant no revocation: no REVOKED line, ``ended``
    null, as if the agent had held it to its expiry."""
    import asyncio

    from policy.grants.store import open_store

    async def cli(fn):
        store = await open_store(case.h.cfg.grants.store)  # no recorder: no events
        try:
            return await fn(store)
        finally:
            await store.close()

    grant, token = asyncio.run(cli(lambda s: s.issue(
        agent=AGENT, task=case.task, reason="cli", granted_by="cli-admin", database="app",
        scopes=SCOPES, ttl="10m")))  # fmt: skip
    c = RawClient.session(case.h.host, case.h.port, AGENT, token)
    sid = one_live_session(case.h)
    c.send(m.query("SELECT 1"))
    c.frames_until_ready()
    asyncio.run(cli(lambda s: s.revoke(grant.id, by="cli-admin")))
    assert [f[:1] for f in c.frames_until_eof()] == [b"E"]  # 57P01: the grant was revoked
    c.close()
    session = case.answer(sid)
    assert session["end_cause"] == "revoked"
    truth = asyncio.run(cli(lambda s: s.get(grant.id)))
    rc, out = audit_cli(case, "--grant", grant.id, "--format", "json")
    (g,) = json.loads(out)["grants"]
    assert (g["source"], g["ended"], g["revoked_by"]) == ("sessions", "revoked", "cli-admin")
    assert stamp(g["revoked_at"]) == truth.revoked_at.timestamp()
    rc, text = audit_cli(case, "--grant", grant.id)
    assert f"  REVOKED at {g['revoked_at']} by cli-admin\n" in text, text
