"""Session 34: what is recorded names the control stream that holds a grant's events.

A grant issued, extended or revoked by another process than the proxy (`pgwitness grant
--config` above all) has its events in that process's own control stream, which no
session indexes: deleted whole, nothing recorded named it, and a grant with no events is
also what a CLI without a recorder leaves, so the audit answered VERIFIED. Now the grant
store keeps, with each change, the id of the control stream its event is recorded in
(``Grant.issued_stream``, ``extended_stream``, ``revoked_stream``; schema 3), a session's
start names those of its grant (``meta.grant_streams``), a live session names those of the
changes it sees (``grant_extended``, ``grant_revoked`` events), and the index lists a named
stream the store lacks as missing, one that lacks the event as tampered, and the grant not
intact. Through the real proxy and CLI: tests/integration/test_s33_audit_grants.py
(``test_a_deleted_cli_control_stream_is_not_answered_verified``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sqlite3
import time
from pathlib import Path

import duckdb

from policy.grants.auth import _grant_identity
from policy.grants.store import open_store
from proxy.grant_watch import GrantLease
from recorder import chunks, control_stream_id
from recorder.audit import index
from recorder.audit.answer import Filters, audit
from recorder.config import RecorderConfig
from recorder.store.local import LocalStore
from recorder.writer import Recorder
from tests.support.recorded_sessions import KEY, PUB

ISSUE = {
    "agent": "billing-bot",
    "task": "T34",
    "reason": "why",
    "granted_by": "alice",
    "database": "app",
    "scopes": "read:public.orders",
    "ttl": "10m",
}


def recorder(tmp: Path, store: LocalStore, name: str) -> Recorder:
    """A process's recorder (the CLI's, the proxy's), uploading from a thread."""
    cfg = RecorderConfig(
        store=str(store.root), spool_dir=str(tmp / f"spool-{name}"), chunk_max_seconds=0.2
    )
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    return rec


def grant_store(tmp: Path, rec: Recorder | None = None, **kw):
    """The grant store as ``pgwitness grant --config`` and the proxy open it: the recorder's
    ``control_event`` as its listener (the store asks that recorder for its stream)."""
    return open_store(
        f"sqlite:///{tmp / 'grants.db'}", on_event=None if rec is None else rec.control_event, **kw
    )


async def change(tmp: Path, rec: Recorder | None, fn, **kw):
    store = await grant_store(tmp, rec, **kw)
    try:
        return await fn(store)
    finally:
        await store.close()


def stream_events(store: LocalStore, sid: str) -> list[tuple[str, str | None]]:
    out = []
    for key in sorted(store.list(chunks.session_prefix(sid))):
        if key.endswith(".chunk"):
            for r in chunks.decode_chunk(store.get(key))[1]:
                if r.type.startswith("grant."):
                    out.append((r.type, r.json().get("grant_id")))
    return out


# --- the grant store ---------------------------------------------------------------------


def test_each_change_names_the_control_stream_its_event_is_recorded_in(tmp_path):
    store = LocalStore(tmp_path / "rec")
    cli_a, cli_b = recorder(tmp_path, store, "a"), recorder(tmp_path, store, "b")
    g, _ = asyncio.run(change(tmp_path, cli_a, lambda s: s.issue(**ISSUE)))
    a = control_stream_id(cli_a)
    assert g.issued_stream == a and g.event_streams() == {"grant.issued": a}
    # an extension and a revocation by another process: its own stream
    asyncio.run(change(tmp_path, cli_b, lambda s: s.extend(g.id, "5m", by="bob")))
    got = asyncio.run(change(tmp_path, cli_b, lambda s: s.revoke(g.id, by="carol")))
    b = control_stream_id(cli_b)
    assert (got.issued_stream, got.extended_stream, got.revoked_stream) == (a, b, b)
    assert got.to_dict()["event_streams"] == {
        "grant.issued": a,
        "grant.extended": b,
        "grant.revoked": b,
    }
    cli_a.close()
    cli_b.close()
    # each named stream holds the event it is named for
    assert stream_events(store, a) == [("grant.issued", g.id)]
    assert stream_events(store, b) == [("grant.extended", g.id), ("grant.revoked", g.id)]
    # a second revocation changes nothing, the stream of the first stays
    cli_c = recorder(tmp_path, store, "c")
    again = asyncio.run(change(tmp_path, cli_c, lambda s: s.revoke(g.id, by="dave")))
    assert again.revoked_stream == b
    cli_c.close()
    # without a recorder nothing is named (a grant issued unrecorded); a listener of one's
    # own names its stream with event_stream
    g2, _ = asyncio.run(change(tmp_path, None, lambda s: s.issue(**ISSUE)))
    assert g2.event_streams() == {}
    g3, _ = asyncio.run(
        change(tmp_path, None, lambda s: s.issue(**ISSUE), event_stream=lambda: "S-OWN")
    )
    assert g3.issued_stream == "S-OWN"


_SCHEMA_2 = """
CREATE TABLE grants (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, task TEXT NOT NULL, reason TEXT NOT NULL,
    granted_by TEXT NOT NULL, database TEXT NOT NULL, scopes TEXT NOT NULL,
    not_before TEXT NOT NULL, expires_at TEXT NOT NULL, revoked_at TEXT, revoked_by TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, verifier TEXT NOT NULL,
    enforce INTEGER NOT NULL, record_rows TEXT NOT NULL, db_role TEXT);
CREATE TABLE grant_agents (agent TEXT PRIMARY KEY, salt BLOB NOT NULL,
                           iterations INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE grant_store_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def test_a_schema_2_store_gains_the_stream_columns(tmp_path):
    """A store written before the streams were kept: opened, it gains the columns; its
    grants name no stream (answered as before) and their next change names its own."""
    path = tmp_path / "grants.db"
    con = sqlite3.connect(path)
    con.executescript(_SCHEMA_2)
    now = dt.datetime.now(dt.UTC)
    ts = [(now + dt.timedelta(minutes=m)).isoformat(timespec="microseconds") for m in (0, 10)]
    verifier = "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5"
    con.execute(
        "INSERT INTO grants VALUES ('gr_old', 'billing-bot', 'T', 'why', 'alice', 'app', "
        "'read:public.orders', ?, ?, NULL, NULL, ?, ?, ?, 1, 'full', NULL)",
        (ts[0], ts[1], ts[0], ts[0], verifier),
    )
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    store = LocalStore(tmp_path / "rec")
    rec = recorder(tmp_path, store, "cli")
    old = asyncio.run(change(tmp_path, None, lambda s: s.get("gr_old")))
    assert old is not None and old.event_streams() == {}
    got = asyncio.run(change(tmp_path, rec, lambda s: s.revoke("gr_old", by="bob")))
    assert got.event_streams() == {"grant.revoked": control_stream_id(rec)}
    rec.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone() == (3,)
    cols = {r[1] for r in con.execute("PRAGMA table_info(grants)")}
    assert {"issued_stream", "extended_stream", "revoked_stream"} <= cols
    con.close()


# --- what the proxy records of them --------------------------------------------------------


class FakeSession:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def event(self, kind: str, payload: dict) -> None:
        self.events.append((kind, payload))


def test_a_session_names_the_streams_of_its_grant_and_of_the_changes_it_sees(tmp_path):
    store = LocalStore(tmp_path / "rec")
    rec = recorder(tmp_path, store, "cli")
    g, _ = asyncio.run(change(tmp_path, rec, lambda s: s.issue(**ISSUE)))
    sid = control_stream_id(rec)
    # its login: the session's start records them (proxy/connection.py)
    identity = _grant_identity(g)
    assert dict(identity.grant_streams) == {"grant.issued": sid}
    ended: list = []

    async def live():
        srec = FakeSession()
        lease = GrantLease(identity, None, lambda *a: ended.append(a), srec)
        extended = await change(tmp_path, rec, lambda s: s.extend(g.id, "5m", by="bob"))
        lease.changed(extended)
        revoked = await change(tmp_path, rec, lambda s: s.revoke(g.id, by="carol"))
        lease.changed(revoked)
        lease.cancel()
        return srec.events

    events = asyncio.run(live())
    rec.close()
    assert [(k, p["grant_id"], p["stream"]) for k, p in events] == [
        ("grant_extended", g.id, sid),
        ("grant_revoked", g.id, sid),
    ]
    assert events[1][1]["by"] == "carol" and len(ended) == 1


# --- the audit ----------------------------------------------------------------------------


def cli_and_proxy(tmp_path: Path, *, pause: float = 0.0):
    """A CLI (its own recorder) issues a grant and later revokes it; a proxy (another
    recorder) records a session of the grant that sees the revocation, as the proxy does."""
    store = LocalStore(tmp_path / "rec")
    cli, proxy = recorder(tmp_path, store, "cli"), recorder(tmp_path, store, "proxy")
    g, _ = asyncio.run(change(tmp_path, cli, lambda s: s.issue(**ISSUE)))
    time.sleep(pause)  # the issue's chunk stored before the revocation's
    identity = _grant_identity(g)

    async def session():
        s = proxy.open_session(
            {
                "agent": g.agent,
                "task": g.task,
                "grant_id": g.id,
                "database": g.database,
                "grant_streams": dict(identity.grant_streams),
            }
        )
        lease = GrantLease(identity, None, lambda *a: s.end("revoked"), s)
        revoked = await change(tmp_path, cli, lambda st: st.revoke(g.id, by="carol"))
        lease.changed(revoked)
        lease.cancel()

    asyncio.run(session())
    stream = control_stream_id(cli)
    cli.close()
    proxy.close()
    return store, g, stream


def answer(tmp_path: Path, store: LocalStore, gid: str, name: str = "audit.duckdb") -> dict:
    index.update(tmp_path / name, store, [PUB])
    con = index.connect(tmp_path / name, read_only=True)
    try:
        return audit(con, Filters(grant=gid))
    finally:
        con.close()


def test_a_deleted_grant_stream_is_missing_and_its_grant_not_intact(tmp_path):
    store, g, stream = cli_and_proxy(tmp_path)
    a = answer(tmp_path, store, g.id)
    assert a["verification"]["intact"], a["verification"]
    (got,) = a["grants"]
    assert (got["source"], got["intact"], got["revoked_by"]) == ("control", True, "carol")
    assert stream in a["verification"]["control_streams"]
    shutil.rmtree(store.root / chunks.session_prefix(stream))
    a = answer(tmp_path, store, g.id, "after.duckdb")
    v = a["verification"]
    assert not v["intact"]
    (bad,) = v["not_intact"]
    assert (bad["session_id"], bad["kind"], bad["status"], bad["in_answer"]) == (
        stream,
        "control",
        "missing",
        True,
    )
    assert f"{g.id} grant.issued, {g.id} grant.revoked" in bad["problems"][0], bad
    (got,) = a["grants"]
    assert got["intact"] is False and got["revoked_by"] is None
    assert stream in v["control_streams"]  # what --reverify verifies again
    con = duckdb.connect(str(tmp_path / "after.duckdb"), read_only=True)
    refs = con.execute("SELECT event, stream_id FROM grant_streams ORDER BY event").fetchall()
    con.close()
    assert refs == [("grant.issued", stream), ("grant.revoked", stream)]


def test_a_grant_stream_whose_tail_is_cut_is_tampered(tmp_path):
    """The revocation's chunk and everything after it deleted: the stream verifies as open,
    attested through the issue's chunk, and nothing else would miss the revocation; the
    session that saw it names the stream, so the stream is tampered, the grant not intact."""
    store, g, stream = cli_and_proxy(tmp_path, pause=0.6)
    events = {}
    for key in sorted(store.list(chunks.session_prefix(stream))):
        if key.endswith(".chunk"):
            n = chunks.parse_name(key.rsplit("/", 1)[1])[0]
            for r in chunks.decode_chunk(store.get(key))[1]:
                events.setdefault(r.type, n)
    cut = events["grant.revoked"]
    assert cut > events["grant.issued"], events
    for key in store.list(chunks.session_prefix(stream)):
        if chunks.parse_name(key.rsplit("/", 1)[1])[0] >= cut:
            (store.root / key).unlink()
    a = answer(tmp_path, store, g.id)
    (bad,) = a["verification"]["not_intact"]
    assert (bad["session_id"], bad["status"], bad["in_answer"]) == (stream, "tampered", True)
    assert (
        bad["problems"][0].startswith("missing event: ") and "grant.revoked" in bad["problems"][0]
    )
    (got,) = a["grants"]
    assert got["intact"] is False and got["revoked_at"] is None


def _session_row(con, sid: str, gid: str, meta: dict, host: str = "h", opened: bool = True) -> None:
    now = int(time.time() * 1e6)
    index._insert(
        con,
        "sessions",
        [
            {
                "session_id": sid,
                "grant_id": gid,
                "agent": "bot",
                "task": "T",
                "database": "app",
                "started_at": now - 60_000_000,
                "ended_at": now - 50_000_000,
                "end_cause": "terminate",
                "host": host,
                "pid": 1,
                "status": "closed",
                "intact": True,
                "statements": 0,
                "denials": 0,
                "errors": 0,
                "meta": json.dumps({"grant_id": gid, **meta}),
            }
        ],
    )
    index._insert(
        con,
        "recordings",
        [
            {
                "session_id": sid,
                "kind": "session",
                "status": "closed",
                "intact": True,
                "indexed_at": now,
            }
        ],
    )
    if not opened:  # no control stream in the index records it opening
        return
    index._insert(
        con,
        "control_events",
        [
            {
                "stream_id": "PROXY",
                "seq": len(sid),
                "ts": now,
                "kind": "session.opened",
                "session_ref": sid,
                "payload": json.dumps({"session": sid}),
                "verified": True,
            }
        ],
    )


def test_sessions_that_name_no_stream_are_answered_as_before():
    """A recording made before sessions named their grant's streams (no ``grant_streams``)
    and one of a grant issued without a recorder (``{}``) say nothing of where the grant's
    events are: answered as before (the grant from session metadata, VERIFIED). One that
    names a stream the store lacks is not (and a stream that may be the naming process's
    own, already listed missing as ``control stream of <host> pid <pid>``, is not listed
    twice)."""
    con = duckdb.connect(":memory:")
    index._schema(con)
    index._insert(
        con,
        "recordings",
        [
            {
                "session_id": "PROXY",
                "kind": "control",
                "status": "open",
                "intact": True,
                "indexed_at": 0,
            }
        ],
    )
    _session_row(con, "S-OLD", "g-old", {})
    _session_row(con, "S-UNRECORDED", "g-unrecorded", {"grant_streams": {}})
    _session_row(con, "S-NAMED", "g-named", {"grant_streams": {"grant.issued": "CLI-GONE"}})
    index.Indexer(con, None, [])._cross_check()
    index.rebuild_grants(con)
    for gid in ("g-old", "g-unrecorded"):
        a = audit(con, Filters(grant=gid))
        (g,) = a["grants"]
        assert (g["source"], g["intact"]) == ("sessions", True), gid
        assert [r["in_answer"] for r in a["verification"]["not_intact"]] == [False], gid
    a = audit(con, Filters(grant="g-named"))
    (bad,) = a["verification"]["not_intact"]
    assert (bad["session_id"], bad["status"], bad["in_answer"]) == ("CLI-GONE", "missing", True)
    assert a["grants"][0]["intact"] is False
    # a process whose own control stream is gone, which issued its grant itself
    own = {"grant_streams": {"grant.issued": "OWN-GONE"}}
    _session_row(con, "S-OWN", "g-own", own, host="x", opened=False)
    index.Indexer(con, None, [])._cross_check()
    index.rebuild_grants(con)
    a = audit(con, Filters(grant="g-own"))
    missing = {r["session_id"]: r["in_answer"] for r in a["verification"]["not_intact"]}
    assert missing == {"control stream of x pid 1": True, "CLI-GONE": False}
    assert a["grants"][0]["intact"] is False
