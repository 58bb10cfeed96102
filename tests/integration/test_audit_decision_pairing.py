"""Audit-integrity attacks on the pairing of decisions with statements (red-team, session
12, after decision shapes: an allowed decision no longer carries its statement's text).

An attacker controlling the agent's client tries to make the auditor's answer (the
statement rows recorder.audit.derive.SessionFacts builds from a recording, and replay's
JSON) wrong about what the agent did: a row carrying another statement's decision, rule or
relations. The judge is the client side: which statements were sent, in which order, and
which the proxy refused (42501) or ran. Found and fixed: messages the server skips after
an error (up to Sync) still have decisions, which were lent to the next statement; frames
after Terminate were rows.

Grant: read:public.customers,public.orders. secret.payroll is never granted.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import time

import pytest

from common.wire.errors import frame
from recorder.replay import replay_json
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, error_fields, execute, parse, query
from tests.support.recording import (
    audit_rows,
    decisions,
    grants,
    issue_grant,
    one_live_session,
    public_key,
    recording,
    records,
    wait_status,
)

pytestmark = pytest.mark.timeout(60)

I32 = struct.Struct("!i")
SCOPES = "read:public.customers,public.orders"
CUST = "SELECT name FROM public.customers ORDER BY id"
ORD = "SELECT count(*) FROM public.orders"
SECRET = "SELECT salary FROM secret.payroll"
FAILS = "SELECT id / (id - id) FROM public.customers"  # allowed; division by zero at Execute


Q, E = query, execute


def close_stmt(name: str) -> bytes:
    return frame(b"C", b"S" + name.encode() + b"\x00")


def ext(sql: str, name: str = "") -> list[bytes]:
    return [parse(name, sql), bind("", name), E(), SYNC]


# --- harness -----------------------------------------------------------------------------


@pytest.fixture
def px(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, h.token = issue_grant(h, scopes=SCOPES)
    h.tmp = tmp_path
    return h


def client(h) -> RawClient:
    c = RawClient.session(h.host, h.port, "billing-bot", h.token)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def frames_until(c: RawClient, zs: int, stop: bytes = b"Z") -> list[bytes]:
    got = []
    while zs:
        f = c.read_frame()
        assert f is not None, got
        got.append(f)
        if f[:1] == stop:
            zs -= 1
    return got



def brief(rows: list[dict]) -> list[tuple]:
    return [(r["text"], r["decision"], r["relations"], r["sqlstate"]) for r in rows]


def row_for(rows, text):
    got = [r for r in rows if r["text"] == text]
    assert len(got) == 1, (text, brief(rows))
    return got[0]


# --- probes ------------------------------------------------------------------------------


def test_pipelined_simple_and_extended_mix_one_write(px):
    """Q, P/B/E/S, denied Q, named P reuse, Q in one TCP write: each row its own decision."""
    with client(px) as c:
        sid = one_live_session(px)
        c.send(Q(CUST), *ext(ORD), Q(SECRET), parse("s1", CUST), bind("", "s1"), E(), SYNC,
               Q(ORD + " WHERE id > 0"), Q(""))
        got = frames_until(c, 6)
    rows = audit_rows(px, sid)
    assert brief(rows) == [
        (CUST, "allowed", "public.customers", None),
        (ORD, "allowed", "public.orders", None),
        (SECRET, "denied", "secret.payroll", "42501"),
        (CUST, "allowed", "public.customers", None),
        (ORD + " WHERE id > 0", "allowed", "public.orders", None),
        ("", "allowed", None, None),
    ], got


def test_named_statement_redefined_keeps_each_executes_decision(px):
    """s1 prepared as customers, executed; closed and re-prepared as a denied statement
    then as orders; every Execute row carries the decision of the Parse it binds."""
    with client(px) as c:
        sid = one_live_session(px)
        c.send(parse("s1", CUST), parse("s2", ORD), bind("", "s1"), E(), bind("", "s2"), E(), SYNC)
        frames_until(c, 1)
        c.send(close_stmt("s1"), parse("s1", SECRET), SYNC)
        assert any(f[:1] == b"E" for f in frames_until(c, 1))
        c.send(close_stmt("s1"), parse("s1", ORD + " WHERE id > 0"), bind("", "s1"), E(),
               bind("", "s2"), E(), SYNC)
        frames_until(c, 1)
    rows = audit_rows(px, sid)
    assert brief(rows) == [
        (CUST, "allowed", "public.customers", None),
        (ORD, "allowed", "public.orders", None),
        (SECRET, "denied", "secret.payroll", "42501"),
        (ORD + " WHERE id > 0", "allowed", "public.orders", None),
        (ORD, "allowed", "public.orders", None),
    ]


def _skip_then(c: RawClient, skipped: list[bytes], after: list[bytes]) -> list[bytes]:
    """An Execute fails with no Sync sent yet (Flush makes the server send the error), so
    the server skips everything up to the next Sync; then one write holds a statement the
    server skips and, after a Sync, one it runs."""
    c.send(*ext(FAILS)[:3], FLUSH)
    got = frames_until(c, 1, stop=b"E")
    assert error_fields(got[-1])["C"] == "22012", got
    time.sleep(0.3)  # the error is recorded before the next client write
    c.send(*skipped, SYNC, *after)
    return frames_until(c, 1 + sum(1 for f in after if f[:1] in (b"S", b"Q")))


def test_statement_skipped_by_server_does_not_lend_its_decision_to_the_next(px):
    """Skipped (allowed, orders) then run (allowed, customers): the run statement's row
    must name customers, not orders."""
    with client(px) as c:
        sid = one_live_session(px)
        _skip_then(c, [parse("", ORD), bind(), E()], [parse("", CUST), bind(), E(), SYNC])
    rows = audit_rows(px, sid)
    ran = row_for(rows, CUST)
    assert (ran["decision"], ran["relations"], ran["outcome"]) == (
        "allowed", "public.customers", "ok"), brief(rows)


def test_denied_statement_skipped_by_server_does_not_mark_the_next_denied(px):
    """Skipped and denied (secret.payroll) then run (allowed customers) in one write: the
    row of the statement that ran must not read as denied by the policy."""
    with client(px) as c:
        sid = one_live_session(px)
        got = _skip_then(c, [parse("", SECRET), bind(), E()], [Q(CUST)])
    ok = [f for f in got if f[:1] == b"C"]
    assert ok, got  # customers ran
    rows = audit_rows(px, sid)
    ran = row_for(rows, CUST)
    assert (ran["decision"], ran["relations"], ran["outcome"]) == (
        "allowed", "public.customers", "ok"), brief(rows)


def test_simple_query_skipped_by_server_then_denied_parse(px):
    """Skipped simple Query (allowed, orders) then a denied Parse: the refused row must
    read as denied by the policy (secret.payroll), not allowed-and-refused-by-the-db."""
    with client(px) as c:
        sid = one_live_session(px)
        _skip_then(c, [Q(ORD)], [parse("", SECRET), bind(), E(), SYNC])
    rows = audit_rows(px, sid)
    refused = row_for(rows, SECRET)
    assert (refused["decision"], refused["relations"], refused["sqlstate"]) == (
        "denied", "secret.payroll", "42501"), brief(rows)


def test_large_statement_offloaded_with_frames_arriving_while_parked(px):
    """A Query over OFFLOAD_MIN (classified off the loop) pipelined with small ones, then
    more frames sent while it may still be parked."""
    big = "SELECT name FROM public.customers WHERE name NOT IN (" + ",".join(
        f"'x{i}'" for i in range(14000)) + ")"
    assert len(big) >= 64 * 1024
    with client(px) as c:
        sid = one_live_session(px)
        c.send(Q(ORD), Q(big), Q(SECRET))
        c.send(parse("", CUST), bind(), E(), SYNC, Q(ORD + " WHERE id > 0"))
        frames_until(c, 5)
    rows = audit_rows(px, sid)
    assert brief(rows) == [
        (ORD, "allowed", "public.orders", None),
        (big, "allowed", "public.customers", None),
        (SECRET, "denied", "secret.payroll", "42501"),
        (CUST, "allowed", "public.customers", None),
        (ORD + " WHERE id > 0", "allowed", "public.orders", None),
    ]


def test_statements_split_across_many_writes(px):
    """A pipeline dribbled out a few bytes at a time, cut inside frames."""
    with client(px) as c:
        sid = one_live_session(px)
        data = b"".join([Q(CUST), *ext(ORD), Q(SECRET), *ext(CUST + " LIMIT 1")])
        for i in range(0, len(data), 7):
            c.sock.sendall(data[i:i + 7])
            time.sleep(0.002)
        frames_until(c, 4)
    rows = audit_rows(px, sid)
    assert brief(rows) == [
        (CUST, "allowed", "public.customers", None),
        (ORD, "allowed", "public.orders", None),
        (SECRET, "denied", "secret.payroll", "42501"),
        (CUST + " LIMIT 1", "allowed", "public.customers", None),
    ]


def test_copy_out_and_multi_statement_between_shaped_ones(px):
    """COPY TO STDOUT and a multi-statement Query (recorded whole) among shaped ones."""
    multi = f"{ORD}; {CUST}"
    copy = "COPY public.customers TO STDOUT"
    with client(px) as c:
        sid = one_live_session(px)
        c.send(Q(CUST), Q(copy), Q(multi), Q(ORD))
        frames_until(c, 4)
    rows = audit_rows(px, sid)
    assert brief(rows) == [
        (CUST, "allowed", "public.customers", None),
        (copy, "allowed", "public.customers", None),
        (multi, "allowed", "public.customers,public.orders", None),
        (ORD, "allowed", "public.orders", None),
    ]


def test_replay_json_has_one_decision_per_checked_message_in_order(px):
    """replay --format json: the n-th decision after a run of client frames judges the
    n-th checked frame; its expanded payload names that statement's relations."""
    with client(px) as c:
        sid = one_live_session(px)
        c.send(Q(CUST), parse("a", ORD), Q(SECRET), parse("", CUST), SYNC)
        frames_until(c, 3)
    store = px.runtime.recorder.store
    wait_status(store, sid, public_key(px.tmp), "closed")
    out = io.StringIO()
    replay_json(store, sid, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    checked = [x for x in lines if x.get("kind") == "wire" and x.get("direction") == "c2s"
               and x.get("frame") in ("Q", "P")]
    decs = [x["payload"] for x in lines if x.get("kind") == "decision"]
    assert len(decs) == len(checked) == 4
    rel = [sorted({r for s in d["statements"] for r in s["reads"]}) for d in decs]
    assert rel == [["public.customers"], ["public.orders"], ["secret.payroll"], ["public.customers"]]
    assert [d["outcome"] for d in decs] == ["allowed", "allowed", "denied", "allowed"]
    assert decs[1].get("statement") == "a"
    # the shaped decisions of one session never redefine a number
    shapes = [r.json() for r in records(store, sid) if r.type == "decision.shape"]
    assert len({s["shape"] for s in shapes}) == len(shapes)
    assert len(decisions(records(store, sid))) == 4


# --- the renderer's bounded cache, directly --------------------------------------------


def test_renderer_eviction_never_renumbers_or_redefines():
    """More distinct shapes than the cache holds, revisited: every compact record expands
    (with the session's shape records, in order) to exactly its own decision."""
    from policy.classify.model import Classified, StatementClass
    from policy.decide import Decision
    from proxy.decision_records import DecisionRecords, decision_payload
    from recorder.records import DecisionShapes

    class V:
        allowed, would_deny = True, False

        def __init__(self, d):
            self.decisions = d

    cls = next(iter(StatementClass))
    verdicts = []
    for i in range(40):
        c = Classified(sql=f"select {i}", cls=cls, command="SELECT",
                       reads=frozenset({f"public.t{i}"}), writes=frozenset(),
                       functions=frozenset())
        verdicts.append(V([(c, Decision(True, "scope.read", f"reads public.t{i}"))]))
    r = DecisionRecords("g1", size=4)
    shapes = DecisionShapes()
    seen_numbers: dict[int, dict] = {}
    order = list(range(40)) + list(range(39, -1, -1)) + list(range(0, 40, 3)) * 2
    for k, i in enumerate(order):
        v = verdicts[i]
        msg = "Parse" if k % 2 else "Query"
        extra = {"statement": f"s{k}"} if msg == "Parse" else {}
        shape, body = r.render(v, msg, f"select {i}", **extra)
        if shape is not None:
            assert shape["shape"] not in seen_numbers, "a shape number was redefined"
            seen_numbers[shape["shape"]] = shape
            shapes.define(shape)
        got = shapes.expand(json.loads(body))
        want = decision_payload("g1", v, msg, f"select {i}", **extra)
        del want["sql"]
        for s in want["statements"]:
            del s["sql"]
        got.pop("shape", None)
        assert got == want, (k, i)


def fcall(oid: int, args: list[bytes]) -> bytes:
    body = I32.pack(oid) + struct.pack("!h", 0) + struct.pack("!h", len(args))
    for a in args:
        body += I32.pack(len(a)) + a
    return frame(b"F", body + struct.pack("!h", 0))


def test_function_call_between_shaped_queries(px):
    """A FunctionCall (refused) pipelined between two allowed Queries."""
    with client(px) as c:
        sid = one_live_session(px)
        c.send(Q(CUST), fcall(1397, [b"-5"]), Q(ORD))  # abs(int4)
        got = frames_until(c, 3)
    refused = [error_fields(f)["C"] for f in got if f[:1] == b"E"]
    assert refused == ["42501"], got  # the fast path is never allowed
    rows = audit_rows(px, sid)
    assert [(r["text"], r["decision"], r["relations"]) for r in rows] == [
        (CUST, "allowed", "public.customers"),
        ("(FunctionCall)", "denied", None),
        (ORD, "allowed", "public.orders"),
    ]
    # the policy's rule, from its message (it judged no statement), not refused.unrecorded
    assert rows[1]["rule"] == "deny.function_call", rows[1]


def test_frames_after_terminate_are_not_rows_with_borrowed_decisions(px):
    """Terminate in the middle of a write: what follows is never checked nor sent; it must
    not take a decision (nor read as allowed)."""
    c = client(px)
    sid = one_live_session(px)
    c.terminate_on_close = False
    c.send(Q(CUST), frame(b"X"), Q(SECRET))
    c.frames_until_eof()  # the proxy ends the session at Terminate
    c.sock.close()
    rows = audit_rows(px, sid)
    # what follows Terminate reached neither the policy nor the server: not a statement
    assert brief(rows) == [(CUST, "allowed", "public.customers", None)], brief(rows)


def test_a_checked_bind_carries_its_own_decision(px, pg):
    """A statement whose object text a parameter pins is decided at each Bind (the proxy
    records a decision for the Bind): the Execute of the granted value is an allowed row,
    the refused Bind is a denied row with the Bind's rule, and the Query after the Sync
    gets its own decision, not the Bind's."""
    pinned = "SELECT pg_get_expr(adbin, adrelid) FROM pg_catalog.pg_attrdef WHERE adrelid = $1"
    granted = pg.psql("SELECT 'public.orders'::regclass::oid", db="app").strip()
    secret = pg.psql("SELECT 'secret.payroll'::regclass::oid", db="app").strip()
    with client(px) as c:
        sid = one_live_session(px)
        c.send(parse("pin", pinned), bind("", "pin", params=[granted.encode()]), E(), SYNC,
               bind("", "pin", params=[secret.encode()]), E(), Q(ORD), SYNC, Q(CUST))
        got = frames_until(c, 3)
    assert any(f[:1] == b"E" and b"42501" in f for f in got), got
    rows = audit_rows(px, sid)
    assert [(r["text"], r["decision"], r["sqlstate"]) for r in rows] == [
        (pinned, "allowed", None),
        (pinned, "denied", "42501"),
        (CUST, "allowed", None),
    ], brief(rows)
    assert row_for(rows, CUST)["rule"] != "deny.catalog"
    denied = [r for r in rows if r["decision"] == "denied"][0]
    assert denied["rule"] == "deny.catalog" and "secret.payroll" in (denied["reason"] or ""), denied
