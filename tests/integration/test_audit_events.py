"""Grant lifecycle events the audit index relies on, and event shapes other parts write."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from policy.grants.store import open_store
from recorder.audit import index
from recorder.audit.answer import Filters, audit
from recorder.config import RecorderConfig
from recorder.store.local import LocalStore
from recorder.writer import Recorder


def test_grant_expired_is_emitted_once_by_one_of_two_proxies_sharing_the_store(tmp_path):
    """Two stores on one SQLite file (two proxies): each runs expire_due at expiry; the
    claim lets exactly one emit grant.expired, with no session live, and again after an
    extension makes the grant expire a second time."""
    now = [dt.datetime(2030, 1, 1, tzinfo=dt.UTC)]
    events: list[tuple[str, str, dict]] = []
    url = f"sqlite:///{tmp_path / 'g.db'}"

    async def go():
        a = await open_store(url, clock=lambda: now[0],
                             on_event=lambda k, p: events.append(("a", k, p)))
        b = await open_store(url, clock=lambda: now[0],
                             on_event=lambda k, p: events.append(("b", k, p)))
        g, _ = await a.issue(agent="bot", task="T-1", reason="r", granted_by="me",
                             database="app", scopes="read:public.t", ttl="10m")
        gone, _ = await a.issue(agent="bot", task="T-1", reason="r", granted_by="me",
                                database="app", scopes="read:public.t", ttl="10m")
        await a.revoke(gone.id, by="me")
        assert await a.expire_due() == [] and await b.expire_due() == []
        now[0] += dt.timedelta(minutes=10, seconds=1)
        got = await asyncio.gather(a.expire_due(), b.expire_due(), a.expire_due())
        assert sum(len(x) for x in got) == 1
        await b.extend(g.id, "5m", by="me")
        now[0] += dt.timedelta(minutes=6)
        got = await asyncio.gather(b.expire_due(), a.expire_due())
        assert sum(len(x) for x in got) == 1
        await a.close()
        await b.close()
        return g

    g = asyncio.run(go())
    expired = [(who, p) for who, k, p in events if k == "grant.expired"]
    assert len(expired) == 2 and all(p["grant_id"] == g.id for _, p in expired)
    assert expired[0][1]["at"] == "2030-01-01T00:10:00+00:00"  # when it expired, not noticed
    assert expired[0][1]["by"] == "pgwitness (expiry)"


def test_index_reads_login_refusals_and_database_denials_in_their_agreed_shapes(tmp_path):
    """`login.refused` (control) and `db.denied` (session meta) as other parts write them."""
    store = LocalStore(tmp_path / "rec")
    key = Ed25519PrivateKey.generate()
    rec = Recorder(RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool")),
                   store=store, signing_key=key)
    rec.start()
    rec.control_event("grant.issued", {"grant_id": "g1", "agent": "bot", "task": "T-9",
                                       "reason": "why", "by": "me",
                                       "at": "2030-01-01T00:00:00+00:00",
                                       "not_before": "2030-01-01T00:00:00+00:00",
                                       "expires_at": "2030-01-01T01:00:00+00:00",
                                       "scopes": "read:public.t"})
    rec.control_event("login.refused", {"agent": "bot", "database": "app", "grant": "g1",
                                        "client": "127.0.0.1:5555", "reason": "expired",
                                        "sqlstate": "28000", "message": "grant g1 expired"})
    rec.control_event("login.refused", {"agent": "bot", "database": "app", "grant": None,
                                        "client": "127.0.0.1:5556", "reason": "too_many",
                                        "sqlstate": "53300", "message": "too many"})
    rec.control_event("login.refused.summary", {"dropped": 3, "by_reason": {"password": 3}})
    s = rec.open_session({"agent": "bot", "task": "T-9", "grant_id": "g1"})
    s.wire("c2s", testing.query("select * from t"))
    s.decision({"outcome": "allowed", "statements": [{"rule": "scope.read", "allowed": True}]},
               False)
    s.wire("s2c", testing.error("42501", "permission denied for table t") + testing.ready())
    s.event("db.denied", {"sqlstate": "42501", "message": "permission denied for table t",
                          "statement": "select * from t", "rule": "scope.read"})
    s.wire("c2s", testing.query("select * from u"))  # 42501 with no db.denied event: derived
    s.decision({"outcome": "allowed", "statements": [{"rule": "scope.read", "allowed": True}]},
               False)
    s.wire("s2c", testing.error("42501", "permission denied for table u") + testing.ready())
    s.end("terminate")
    rec.close()
    con = index.connect(tmp_path / "i.duckdb")
    index.Indexer(con, store, [key.public_key()]).update()
    a = audit(con, Filters(task="T-9"))
    assert a["verification"]["intact"]
    refused = a["refused_logins"]
    assert [(r["reason"], r["sqlstate"], r["task"]) for r in refused] == [("expired", "28000", "T-9")]
    d = sorted((x["source"], x["text"], x["rule"]) for x in a["denials"])
    assert d == [("database", "select * from t", "scope.read"),
                 ("database", "select * from u", "scope.read"),
                 ("login", None, "expired")]
    # the refusal without a grant shows under the agent
    b = audit(con, Filters(agent="bot"))
    assert {r["reason"] for r in b["refused_logins"]} == {"expired", "too_many"}
    assert {x["source"] for x in b["denials"]} == {"database", "login", "connection"}
    # every row once
    rows = con.execute("select payload from control_events where kind = 'login.refused.summary'"
                       ).fetchall()
    assert json.loads(rows[0][0])["dropped"] == 3


def _started_recorder(tmp_path):
    """A local store and a started recorder in ``tmp_path``, its public key in k.pub."""
    from cryptography.hazmat.primitives import serialization

    store = LocalStore(tmp_path / "rec")
    key = Ed25519PrivateKey.generate()
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rec = Recorder(RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool")),
                   store=store, signing_key=key)
    rec.start()
    return store, rec


def test_replay_json_is_one_event_per_line(tmp_path):
    import io
    from contextlib import redirect_stdout

    from proxy.cli import main as cli_main

    store, rec = _started_recorder(tmp_path)
    s = rec.open_session({"agent": "bot"})
    s.wire("c2s", testing.parse("select $1", "s1") + testing.bind([b"7"], "s1")
           + testing.execute() + testing.sync())
    s.wire("s2c", testing.row_description("v") + testing.data_row("7")
           + testing.command_complete("SELECT 1") + testing.ready())
    s.end("terminate")
    rec.close()
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(["replay", s.id, "--store", str(store.root), "--format", "json",
                       "--public-key", str(tmp_path / "k.pub")])
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rc == 0 and lines[0] == {"kind": "verify", "ok": True, "problems": [],
                                    "status": "closed"}
    frames = [(x.get("direction"), x.get("frame")) for x in lines if x["kind"] == "wire"]
    assert frames == [("c2s", "P"), ("c2s", "B"), ("c2s", "E"), ("c2s", "S"), ("s2c", "T"),
                      ("s2c", "D"), ("s2c", "C"), ("s2c", "Z")]
    by = {x.get("frame"): x for x in lines if x["kind"] == "wire"}
    assert by["P"]["sql"] == "select $1" and by["B"]["params"] == ["7"]
    assert by["D"]["values"] == ["7"] and by["C"]["tag"] == "SELECT 1"
    assert [x["type"] for x in lines if x["kind"] == "meta"] == ["session.start", "session.end"]


def _facts(*steps):
    """Feed SessionFacts a scripted exchange: ("c2s"|"s2c", bytes) or ("dec", payload)."""
    from recorder.audit.derive import SessionFacts
    from recorder.records import Direction, Kind, Record, dump_json

    f = SessionFacts("s")
    seq = 0
    f.feed(Record(seq, 0, Direction.PROXY, Kind.META, "session.start",
                  dump_json({"wall_ns": 0, "meta": {}})))
    for who, data in steps:
        seq += 1
        if who == "dec":
            f.feed(Record(seq, seq, Direction.PROXY, Kind.DECISION, "allow", dump_json(data)))
        else:
            d = Direction.C2S if who == "c2s" else Direction.S2C
            f.feed(Record(seq, seq, d, Kind.WIRE, "", data))
    f.finish()
    return [(r["text"], r["decision"], r["outcome"], r["command_tag"], r["sqlstate"], r["rows"])
            for r in f.statements]


OK = {"outcome": "allowed", "statements": [{"rule": "scope.read", "allowed": True}]}
NO = {"outcome": "denied", "statements": [{"rule": "deny.write", "allowed": False}]}
T = testing


def test_derive_pipeline_with_a_denied_parse_skips_to_sync():
    rows = _facts(
        ("c2s", T.parse("select 1") + T.bind([]) + T.execute() + T.parse("delete from t")
         + T.bind([]) + T.execute() + T.parse("select 3") + T.bind([]) + T.execute() + T.sync()
         + T.parse("select 4") + T.bind([]) + T.execute() + T.sync()),
        ("dec", OK), ("dec", NO), ("dec", OK), ("dec", OK),
        ("s2c", T.frame(b"1", b"") + T.frame(b"2", b"") + T.data_row("1")
         + T.command_complete("SELECT 1") + T.error("42501", "denied") + T.ready()
         + T.frame(b"1", b"") + T.frame(b"2", b"") + T.command_complete("SELECT 1") + T.ready()),
    )
    assert rows == [("select 1", "allowed", "ok", "SELECT 1", None, 1),
                    ("delete from t", "denied", "error", None, "42501", None),
                    ("select 4", "allowed", "ok", "SELECT 1", None, 1)]  # select 3: skipped


def test_derive_simple_query_errors_copy_and_a_stray_error_before_sync():
    rows = _facts(
        ("c2s", T.query("select 1; select 1/0")), ("dec", OK),
        ("s2c", T.row_description("a") + T.data_row("1") + T.command_complete("SELECT 1")
         + T.error("22012", "division by zero") + T.ready()),
        ("c2s", T.query("copy t from stdin")), ("dec", OK),
        ("s2c", T.frame(b"G", b"\x00\x00\x00")),
        ("c2s", T.frame(b"d", b"1\n2\n") + T.frame(b"c", b"")),
        ("s2c", T.command_complete("COPY 2") + T.ready()),
        ("c2s", T.frame(b"H", b"") + T.sync()),
        ("s2c", T.notice("n") + T.error("XX000", "stray") + T.ready()),
        ("c2s", T.query("select 2")), ("dec", OK),
        ("s2c", T.command_complete("SELECT 0") + T.ready()),
    )
    assert rows == [("select 1; select 1/0", "allowed", "error", "SELECT 1", "22012", 1),
                    ("copy t from stdin", "allowed", "ok", "COPY 2", None, 2),
                    ("select 2", "allowed", "ok", "SELECT 0", None, 0)]


def test_index_from_an_s3_store_with_object_lock(s3_server):
    """The index reads an S3 recording store (all versions, locks checked) like a local one."""
    store = s3_server.store()
    key = Ed25519PrivateKey.generate()
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="pgw-audit-s3-"))
    rec = Recorder(RecorderConfig(store=store.url, spool_dir=str(tmp / "spool"), fsync=False),
                   store=store, signing_key=key)
    rec.start()
    rec.control_event("grant.issued", {"grant_id": "g-s3", "agent": "bot", "task": "T-S3",
                                       "reason": "why", "by": "me",
                                       "at": "2030-01-01T00:00:00+00:00",
                                       "expires_at": "2030-01-01T01:00:00+00:00"})
    s = rec.open_session({"agent": "bot", "task": "T-S3", "grant_id": "g-s3"})
    s.wire("c2s", testing.query("select 1"))
    s.decision(OK, False)
    s.wire("s2c", testing.command_complete("SELECT 1") + testing.ready())
    s.end("terminate")
    rec.close()
    con = index.connect(tmp / "i.duckdb")
    r = index.Indexer(con, store, [key.public_key()]).update()
    assert r.indexed == 2 and r.tampered == 0
    a = audit(con, Filters(task="T-S3"))
    assert a["verification"]["intact"] and a["verification"]["recordings"] == 2
    (g,) = a["grants"]
    assert [st["command_tag"] for s in g["sessions"] for st in s["statement_rows"]] == ["SELECT 1"]


def test_derive_expands_decisions_recorded_by_their_shape():
    """An allowed decision recorded as {"denied": false, "shape": N} gets the fields of the
    session's decision.shape record N; a shape the session never defined says so; the
    shape records are not events."""
    from recorder.audit.derive import SessionFacts
    from recorder.records import Direction, Kind, Record, dump_json

    f = SessionFacts("s")
    steps = [
        (Direction.PROXY, Kind.META, "session.start", {"wall_ns": 0, "meta": {}}),
        (Direction.C2S, Kind.WIRE, "", T.query("select a from t where id = 1")),
        (Direction.PROXY, Kind.META, "decision.shape", {
            "shape": 0, "grant_id": "g", "message": "Query", "outcome": "allowed",
            "statements": [{"allowed": True, "class": "READ", "command": "SELECT",
                            "functions": [], "reads": ["public.t"], "reason": "r",
                            "rule": "scope.read", "writes": []}]}),
        (Direction.PROXY, Kind.DECISION, "allow", {"denied": False, "shape": 0}),
        (Direction.S2C, Kind.WIRE, "", T.command_complete("SELECT 0") + T.ready()),
        (Direction.C2S, Kind.WIRE, "", T.query("select a from t where id = 2")),
        (Direction.PROXY, Kind.DECISION, "allow", {"denied": False, "shape": 0}),
        (Direction.S2C, Kind.WIRE, "", T.command_complete("SELECT 0") + T.ready()),
        (Direction.C2S, Kind.WIRE, "", T.query("select 3")),
        (Direction.PROXY, Kind.DECISION, "allow", {"denied": False, "shape": 9}),
        (Direction.S2C, Kind.WIRE, "", T.command_complete("SELECT 0") + T.ready()),
    ]
    for seq, (d, k, t, body) in enumerate(steps):
        f.feed(Record(seq, seq, d, k, t, body if k == Kind.WIRE else dump_json(body)))
    f.finish()
    got = [(r["text"], r["decision"], r["rule"], r["classes"], r["relations"])
           for r in f.statements]
    assert got == [
        ("select a from t where id = 1", "allowed", "scope.read", "READ", "public.t"),
        ("select a from t where id = 2", "allowed", "scope.read", "READ", "public.t"),
        ("select 3", "allowed", "shape.missing", None, None),
    ]
    assert f.statements[2]["reason"] == "decision shape 9 is not in the recording"
    assert f.events == []


def test_replay_expands_decisions_recorded_by_their_shape(tmp_path):
    """The real relay, policy and recorder: three allowed statements of one shape and a
    denial. The recording holds one decision.shape record and compact decisions; replay's
    transcript and JSON show every decision as before, and the denial whole."""
    import io
    from contextlib import redirect_stdout

    from policy import StatementPolicy, parse_scopes
    from proxy.cli import main as cli_main
    from proxy.relay import Relay
    from recorder.records import Kind
    from recorder.replay import iter_records

    store, rec = _started_recorder(tmp_path)
    s = rec.open_session({"agent": "bot"})
    relay = Relay(policy=StatementPolicy(parse_scopes("read:public.orders"), task="T-1"),
                  recorder=s, health=rec, grant_id="g-1")
    answer = testing.command_complete("SELECT 0") + testing.ready()
    for n in (1, 2, 3):
        to_server, to_client = relay.from_client(
            testing.query(f"SELECT id FROM public.orders WHERE id = {n}"))
        assert to_server and not to_client
        relay.from_server(answer)
    _, refusal = relay.from_client(testing.query("DELETE FROM public.orders"))
    assert b"42501" in refusal
    s.end("terminate")
    rec.close()

    recs = list(iter_records(store, s.id))
    shapes = [r for r in recs if r.kind == Kind.META and r.type == "decision.shape"]
    decisions = [r.json() for r in recs if r.kind == Kind.DECISION]
    assert len(shapes) == 1 and shapes[0].json()["shape"] == 0
    assert decisions[:3] == [{"denied": False, "shape": 0}] * 3
    assert decisions[3]["denied"] is True and decisions[3]["sql"] == "DELETE FROM public.orders"

    args = [s.id, "--store", str(store.root), "--public-key", str(tmp_path / "k.pub")]
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["replay", *args]) == 0
    text = out.getvalue()
    assert text.count("ok allowed scope.read") == 3, text
    assert "!! DENIED" in text and "decision.shape" not in text

    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["replay", *args, "--format", "json"]) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    expanded = [x["payload"] for x in lines if x["kind"] == "decision"]
    assert [(p["outcome"], p["statements"][0]["rule"]) for p in expanded] == [
        ("allowed", "scope.read")] * 3 + [("denied", expanded[3]["statements"][0]["rule"])]
    assert {p["grant_id"] for p in expanded} == {"g-1"}
    assert expanded[0]["statements"][0]["reads"] == ["public.orders"]
