"""Denial injection and error cleaning (proxy/denials.py) without a server or a Relay.

The Relay's end-to-end shapes are in tests/test_wire_codec.py (scripted server) and
tests/test_proxy_relay.py (a real server); these pin the module's own contract."""

from __future__ import annotations

from common.wire import messages as m
from common.wire.framing import FrameReader
from common.wire.syncgroups import SyncGroups
from proxy.denials import Denials, clean_error, local_denial

P, Q = m.Frontend.PARSE, m.Frontend.QUERY


def marked_error(d: Denials) -> bytes:
    return m.encode_error_fields(b"E", {
        "S": "ERROR", "V": "ERROR", "C": "42501", "M": "denied",
        "W": "PL/pgSQL function inline_code_block line 1 at RAISE",
        "s": d.marker, "F": "pl_exec.c", "L": "3907", "R": "exec_stmt_raise",
    })  # fmt: skip


def test_each_connection_gets_its_own_marker_and_tag():
    a, b = Denials(), Denials()
    assert a.marker != b.marker and a.tag != b.tag
    sql = a.raise_sql("no 'quotes' $$ escape $$", "42501")
    assert a.marker in sql and sql.startswith("DO ") and "ERRCODE = '42501'" in sql


def test_the_cleaned_error_keeps_only_what_postgres_would_say():
    d = Denials()
    fields = m.decode_error_fields(clean_error(marked_error(d)))
    assert fields == {"S": "ERROR", "V": "ERROR", "C": "42501", "M": "denied"}
    assert d.marker_bytes not in clean_error(marked_error(d))


def test_injected_parse_closes_the_previous_one_and_drops_its_completions():
    d, g = Denials(), SyncGroups()
    first = d.inject(P, d.raise_sql("x", "42501"), g)
    second = d.inject(P, d.raise_sql("y", "42501"), g)
    types = lambda data: "".join(chr(t) for t, _, _ in FrameReader().feed(data)[1])  # noqa: E731
    assert types(first) == "PBE" and types(second) == "CPBE"
    assert [i.drop for i in d.pending] == [2, 3]
    client_own = b"2\x00\x00\x00\x04"
    # The client's own BindComplete was held before ours (three of ours follow it).
    d.held[:] = [client_own, b"3\x00\x00\x00\x04", b"1\x00\x00\x00\x04", b"2\x00\x00\x00\x04"]
    d.pending.popleft()  # the first was answered earlier
    out = d.answered(marked_error(d))
    assert out[0] == client_own and len(out) == 2 and d.marker_bytes not in out[1]
    assert not d.held and not d.pending


def test_a_skipped_injection_is_dropped_from_pending_once():
    d, g = Denials(), SyncGroups()
    d.inject(Q, d.raise_sql("x", "42501"), g)
    g.sent(Q)
    items = g.ready()
    d.skipped(items)
    d.skipped(items)  # a second look at the same group changes nothing
    assert not d.pending


def test_local_denial_is_an_error_then_ready_for_query():
    out = b"".join(local_denial("42501", "denied", b"I"))
    assert [chr(t) for t, _, _ in FrameReader().feed(out)[1]] == ["E", "Z"]
    assert out.endswith(m.ready_for_query(b"I"))
