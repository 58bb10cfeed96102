"""Red-team round 22: the audit answer after rounds 20b/20c (commit 8074412) and the
ROLLBACK injected for a refused PREPARE TRANSACTION (commit ea11bea).

The agent is the attacker here: it controls every byte it sends through the proxy, and
those bytes are recorded and later paired with the server's answers by
``recorder.audit.derive.SessionFacts`` (read back through
``tests.support.recording.audit_rows``). Judged by the server (rows that landed) and by the
audit rows. The five attacks found were closed the same session (derive ends a
transaction block's rows as the server ended the block; a data-modifying portal suspended
at its first Execute ran whole; ``sessions`` and the CSV name every recording that did not
verify); every probe is a plain test, a regression guard.

Families:

- the ROLLBACK injected for a refused PREPARE TRANSACTION sent alone in a block: the
  client's earlier writes in that block are undone, and the audit still shows them done;
  answers pipelined after the injection keep their own statements (held);
- a portal's Execute with a row limit on a DELETE/INSERT ... RETURNING: the server runs the
  whole statement at the first Execute and commits it at Sync, the audit shows one row
  and ``suspended``; rolled back by a malformed Sync, it is not marked ``rolled back``;
- messages the server swallows (a Query or Parse sent during a simple-protocol COPY-IN:
  the server ends the connection, nothing to shift); a malformed Parse followed by a
  pipeline keeps decisions and outcomes with their statements (held);
- the insider with store write access: a session whose signed start chunk is re-encoded
  loses its attribution; ``pgwitness sessions --task`` then omits it with exit 0 and no
  word of the tampering, and ``audit --format csv`` names no tampered recording.
"""

from __future__ import annotations

import struct

import pytest

from common.wire.errors import frame
from tests.support import outage
from tests.support.outage import errors, until
from tests.support.rawpg import SYNC, bind, describe, execute, parse, query
from tests.support.recording import audit_rows, one_live_session
from tests.support.tampered_store import Copy, reencoded  # (and the fixtures recorded, copy)

pytestmark = pytest.mark.timeout(240)


AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.r22_t"
SCOPES = f"read:{TABLE},public.customers write:{TABLE}"
SECRET = "SELECT salary FROM secret.payroll"  # never granted: denied by the proxy
COUNT = "SELECT count(*) FROM public.customers"
Q, E = query, execute
COPY_DONE = frame(b"c")


PROBE = outage.ProbeTable(TABLE, AGENT, SCOPES)
rows_with, fresh, client = PROBE.rows_with, PROBE.fresh, PROBE.client
grant_proxy = PROBE.proxy


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def _require(cond: object, what: str) -> None:
    """A precondition of an attack: failing it is a broken test, never an xfail."""
    if not cond:
        raise RuntimeError(f"precondition failed: {what}")


def summary(rows: list[dict]) -> list[tuple]:
    return [(r["text"], r["decision"], r["outcome"], r["command_tag"], r["sqlstate"]) for r in rows]


def by_text(rows: list[dict], text: str) -> list[dict]:
    return [r for r in rows if r["text"] == text]


def bad_parse(sql: str) -> bytes:
    """A Parse with two stray bytes after its (empty) parameter type list: 08P01."""
    return frame(b"P", b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", 0) + b"xx")


def bad_sync() -> bytes:
    return frame(b"S", b"\x00\x00\x00\x00")


# --- 1. the ROLLBACK injected for a refused PREPARE TRANSACTION ---------------------------


def test_audit_marks_the_writes_the_injected_rollback_undid(make_proxy, tmp_path, pg):
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2201)
    write = f"INSERT INTO {TABLE} VALUES (2201)"
    with client(h) as c:
        sid = one_live_session(h)
        _require(not errors(c.query("BEGIN")), "BEGIN")
        _require(not errors(c.query(write)), "the write in the block")
        got = c.query("PREPARE TRANSACTION 'r22'")
        _require([e["C"] for e in errors(got)] == ["42501"], describe(got))
        _require(got[-1][5:6] == b"I", describe(got))  # the block ended
        _require(any(f[:1] == b"D" for f in c.query(COUNT)), "the session goes on")
    _require(rows_with(pg, 2201) == 0, "the injected ROLLBACK undid the write")
    rows = audit_rows(h, sid)
    (row,) = by_text(rows, write)
    assert row["outcome"] != "ok", summary(rows)


def test_answers_pipelined_after_the_injected_rollback_keep_their_statements(
    make_proxy, tmp_path, pg
):
    """The injected ROLLBACK's CommandComplete is held and dropped (``holds_complete``):
    a write, a denied read and a count pipelined behind the PREPARE TRANSACTION in the same
    packet get their own answers, to the client and in the audit, and nothing else of the
    client's is dropped."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2202, 2203)
    w1 = f"INSERT INTO {TABLE} VALUES (2202)"
    w2 = f"INSERT INTO {TABLE} VALUES (2203)"
    with client(h) as c:
        sid = one_live_session(h)
        assert not errors(c.query("BEGIN"))
        assert not errors(c.query(w1))
        c.send(Q("PREPARE TRANSACTION 'r22p'"), Q(w2), Q(SECRET), Q(COUNT))
        got = until(c, b"Z", 4)
    kinds = [f[:1] for f in got]
    assert kinds == [b"E", b"Z", b"C", b"Z", b"E", b"Z", b"T", b"D", b"C", b"Z"], describe(got)
    assert [e["C"] for e in errors(got)] == ["42501", "42501"], describe(got)
    assert rows_with(pg, 2202) == 0 and rows_with(pg, 2203) == 1
    assert int(pg.psql("SELECT count(*) FROM pg_prepared_xacts", db="app").strip()) == 0
    rows = audit_rows(h, sid)
    s = {r["text"]: (r["decision"], r["outcome"], r["command_tag"], r["sqlstate"]) for r in rows}
    assert s["PREPARE TRANSACTION 'r22p'"] == ("denied", "error", None, "42501"), summary(rows)
    assert s[w2] == ("allowed", "ok", "INSERT 0 1", None), summary(rows)
    assert s[SECRET] == ("denied", "error", None, "42501"), summary(rows)
    assert s[COUNT] == ("allowed", "ok", "SELECT 1", None), summary(rows)


def test_prepare_transaction_outside_a_block_rolls_back_nothing(make_proxy, tmp_path, pg):
    """Outside a block the refusal is the ordinary injection (no ROLLBACK of ours): an
    autocommitted write before it stays, and the audit shows it so."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2204)
    write = f"INSERT INTO {TABLE} VALUES (2204)"
    with client(h) as c:
        sid = one_live_session(h)
        assert not errors(c.query(write))
        got = c.query("PREPARE TRANSACTION 'r22o'")
        assert [e["C"] for e in errors(got)] == ["42501"], describe(got)
        assert [f[:1] for f in got] == [b"E", b"Z"], describe(got)
    assert rows_with(pg, 2204) == 1
    (row,) = by_text(audit_rows(h, sid), write)
    assert (row["outcome"], row["command_tag"]) == ("ok", "INSERT 0 1"), row


# --- 2. a row limit on a data-modifying statement -----------------------------------------


def test_a_row_limited_delete_returning_shows_what_it_deleted(make_proxy, tmp_path, pg):
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2210)
    pg.psql(f"INSERT INTO {TABLE} SELECT 2210 FROM generate_series(1, 3)", db="app")
    delete = f"DELETE FROM {TABLE} WHERE v = 2210 RETURNING v"
    with client(h) as c:
        sid = one_live_session(h)
        c.send(parse("", delete), bind(), E("", 1), SYNC)
        got = c.frames_until_ready()
        _require([f[:1] for f in got] == [b"1", b"2", b"D", b"s", b"Z"], describe(got))
    _require(rows_with(pg, 2210) == 0, "all three rows deleted and committed")
    rows = audit_rows(h, sid)
    (row,) = by_text(rows, delete)
    _require(row["decision"] == "allowed", summary(rows))
    assert row["rows"] == 3 or row["outcome"] != "suspended", summary(rows)


def test_a_row_limited_write_rolled_back_by_its_sync_is_marked(make_proxy, tmp_path, pg):
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2211)
    write = f"INSERT INTO {TABLE} SELECT 2211 FROM generate_series(1, 3) RETURNING v"
    with client(h) as c:
        sid = one_live_session(h)
        c.send(parse("", write), bind(), E("", 1), bad_sync())
        got = c.frames_until_ready()
        _require([e["C"] for e in errors(got)] == ["08P01"], describe(got))
        _require(any(f[:1] == b"D" for f in c.query(COUNT)), "the session goes on")
    _require(rows_with(pg, 2211) == 0, "the malformed Sync rolled the write back")
    (row,) = by_text(audit_rows(h, sid), write)
    assert (row["outcome"], row["sqlstate"]) == ("rolled back", "08P01"), row


# --- 3. messages the server swallows or refuses -------------------------------------------


@pytest.mark.parametrize("stray", ["query", "parse"])
def test_a_message_sent_during_simple_copy_in_ends_the_session(make_proxy, tmp_path, pg, stray):
    """A Query or Parse sent while a simple-protocol COPY waits for data would be consumed
    by the failing COPY and never answered (a phantom for the audit's pairing), but the
    server ends the connection (protocol synchronization lost): nothing after it to shift,
    and the audit shows the COPY failed."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2220)
    with client(h) as c:
        sid = one_live_session(h)
        c.send(Q(f"COPY {TABLE} (v) FROM STDIN"))
        assert until(c, b"G")[-1][:1] == b"G"
        c.send(Q("SELECT 1") if stray == "query" else parse("", "SELECT 1"))
        got = c.frames_until_eof()
    assert any(e.get("S") == "FATAL" for e in errors(got)), describe(got)
    rows = audit_rows(h, sid)
    (row,) = by_text(rows, f"COPY {TABLE} (v) FROM STDIN")
    assert row["outcome"] == "error" and row["sqlstate"] == "08P01", summary(rows)
    assert not any(r["outcome"] == "ok" and r["text"] == "SELECT 1" for r in rows), summary(rows)


def test_a_malformed_parse_keeps_later_decisions_with_their_statements(make_proxy, tmp_path, pg):
    """A Parse with stray bytes, then a write, a denied read and a count in one packet: the
    server answers the Parse 08P01; derive gives it its own unit, and every later row keeps
    its own decision and outcome."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2230)
    write = f"INSERT INTO {TABLE} VALUES (2230)"
    with client(h) as c:
        sid = one_live_session(h)
        c.send(bad_parse("SELECT 1"), SYNC, Q(write), Q(SECRET), Q(COUNT))
        got = until(c, b"Z", 4)
    assert [e["C"] for e in errors(got)] == ["08P01", "42501"], describe(got)
    assert rows_with(pg, 2230) == 1
    rows = audit_rows(h, sid)
    s = {r["text"]: (r["decision"], r["outcome"], r["command_tag"], r["sqlstate"]) for r in rows}
    assert s[write] == ("allowed", "ok", "INSERT 0 1", None), summary(rows)
    assert s[SECRET] == ("denied", "error", None, "42501"), summary(rows)
    assert s[COUNT] == ("allowed", "ok", "SELECT 1", None), summary(rows)


# --- 4. the insider: answers other than `audit`'s text and JSON ---------------------------


def _unattributed(copy: Copy) -> None:
    """Re-encode the session's chunk 0 (its signed session.start) with the task renamed:
    the chunk no longer verifies, so the session has no task, agent or grant."""
    path = copy.path(copy.sid, 0, "chunk")
    blob = path.read_bytes()
    _require(
        any(copy.task.encode() in r.payload for r in copy.records(copy.sid, 0)),
        "chunk 0 holds the session's start",
    )
    new = reencoded(blob, copy.task.encode(), b"X" * len(copy.task))
    _require(new != blob, "the re-encoded chunk differs")
    copy.write(path, new)
    rc, out = copy.verify(copy.sid)
    _require(rc != 0, f"verify reports the tampering: {out}")


def test_audit_of_the_task_still_names_a_session_whose_start_was_tampered(copy):
    """The audit's own answer for the task: exit 1 and the recording named (round 20c)."""
    _unattributed(copy)
    rc, answer = copy.audit("--task", copy.task)
    bad = [r["session_id"] for r in answer["verification"]["not_intact"]]
    assert rc == 1 and copy.sid in bad, (rc, answer["verification"])


def test_sessions_of_the_task_warn_of_a_session_whose_start_was_tampered(copy):
    _unattributed(copy)
    rc, out = copy.run(
        "sessions", *copy.store_args(), "--index", str(copy.tmp / "a.duckdb"),
        "--task", copy.task, "--format", "json",
    )  # fmt: skip
    assert rc != 0 or copy.sid in out, (rc, out)


def test_audit_csv_of_the_task_names_a_session_whose_start_was_tampered(copy):
    _unattributed(copy)
    rc, out = copy.run(
        "audit", *copy.store_args(), "--index", str(copy.tmp / "b.duckdb"),
        "--task", copy.task, "--format", "csv",
    )  # fmt: skip
    _require(rc == 1, f"the audit exits 1: {rc}")
    assert copy.sid in out, out
