"""The sans-IO core, without sockets: framing, startup packets, encoders, and the Relay.

Framing must not depend on how TCP happens to split the stream; the startup parser must
refuse anything Postgres would refuse; the Relay must be byte-for-byte transparent when
it has nothing to do, and when a policy denies, must answer exactly as the server would.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import messages as m
from common.wire.errors import ProtocolViolation, error_response, frame, notice_response
from common.wire.framing import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_STREAMED_LENGTH,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
    CancelRequest,
    DirectTLS,
    FrameReader,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    read_startup,
    startup_packet,
)
from policy.engine import Verdict
from proxy.relay import Relay, RowFilter
from tests.support.fakes import PolicySeam

I32 = struct.Struct("!i")

# --- strategies ------------------------------------------------------------------------

frames_st = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=300)).map(
        lambda tb: frame(bytes([tb[0]]), tb[1])
    ),
    min_size=0,
    max_size=20,
)
# Text that can travel in a NUL-terminated string.
ctext = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60
)
ident = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c for c in cuts if 0 <= c <= len(data)})
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


def read_all(chunks: list[bytes], reader: FrameReader | None = None) -> tuple[list[bytes], bytes]:
    """Feed ``chunks``; return every frame yielded and the concatenation of the runs."""
    reader = reader or FrameReader()
    got: list[bytes] = []
    runs: list[bytes] = []
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        run, frames = reader.feed(chunk)
        runs.append(run)
        for t, start, end in frames:
            assert run[start] == t
            got.append(run[start:end])
        # Everything fed is either handed back or still buffered: nothing lost, nothing twice.
        assert sum(map(len, runs)) + reader.pending == fed
    return got, b"".join(runs)


def parse_frames(data: bytes) -> list[tuple[str, bytes]]:
    """Whole frames of ``data`` as (type char, body); all of ``data`` must be whole frames."""
    reader = FrameReader()
    run, frames = reader.feed(data)
    assert reader.pending == 0, "trailing partial frame"
    return [(chr(t), run[s + 5 : e]) for t, s, e in frames]


# --- FrameReader -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(frames=frames_st, data=st.data())
def test_frame_reader_same_frames_for_any_split(frames, data):
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    got, runs = read_all(split_at(stream, cuts))
    assert got == frames
    assert runs == stream


@settings(max_examples=30, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=12)).map(
            lambda tb: frame(bytes([tb[0]]), tb[1])
        ),
        min_size=1,
        max_size=4,
    )
)
def test_frame_reader_every_single_and_double_split_of_a_small_stream(frames):
    stream = b"".join(frames)
    for i in range(len(stream) + 1):
        got, runs = read_all([stream[:i], stream[i:]])
        assert got == frames and runs == stream, i
        for j in range(i, len(stream) + 1, 3):
            got, _ = read_all([stream[:i], stream[i:j], stream[j:]])
            assert got == frames, (i, j)


def test_frame_reader_byte_at_a_time_and_empty_feeds():
    frames = [m.query("select 1"), m.SYNC, frame(b"d", b"x" * 1000), m.TERMINATE]
    stream = b"".join(frames)
    chunks = []
    for i in range(len(stream)):
        chunks += [b"", stream[i : i + 1]]
    got, runs = read_all(chunks)
    assert got == frames and runs == stream


def test_frame_reader_keeps_partial_frame_until_complete():
    reader = FrameReader()
    q = m.query("select 42")
    run, frames = reader.feed(q + q[:3])
    assert (run, [(t, s, e) for t, s, e in frames]) == (q, [(ord("Q"), 0, len(q))])
    assert reader.pending == 3
    run, frames = reader.feed(q[3:])
    assert run == q and len(frames) == 1 and reader.pending == 0


@pytest.mark.parametrize("length", [-1, -(2**31), 0, 1, 2, 3])
def test_frame_reader_rejects_lengths_below_four(length):
    reader = FrameReader()
    with pytest.raises(ProtocolViolation) as exc:
        reader.feed(b"Q" + I32.pack(length) + b"\x00" * 8)
    assert exc.value.sqlstate == "08P01" and exc.value.fatal


def test_frame_reader_rejects_bad_length_after_good_frames_and_split_header():
    reader = FrameReader()
    run, frames = reader.feed(m.SYNC + b"Q\xff\xff")
    assert len(frames) == 1 and reader.pending == 3
    with pytest.raises(ProtocolViolation):
        reader.feed(b"\xff\xf0")


def test_frame_reader_limit_is_inclusive_and_oversized_raises():
    reader = FrameReader(max_len=100)
    ok = frame(b"D", b"x" * 96)  # length field 100
    _, frames = reader.feed(ok)
    assert len(frames) == 1
    with pytest.raises(ProtocolViolation, match="oversized"):
        # Refused on the header alone, before 2 GB are buffered.
        FrameReader(max_len=100).feed(b"D" + I32.pack(101))
    with pytest.raises(ProtocolViolation, match="oversized"):
        FrameReader().feed(b"D" + I32.pack(2**31 - 1))


# --- FrameReader: large frames of streamed types ----------------------------------------
#
# Row data, COPY data and Bind are never inspected, so a large one is passed on as it
# arrives instead of being held whole: the proxy's memory per connection stays bounded and
# values up to Postgres's own 1 GB limit get through, whatever max_message_bytes says.

STREAMED = frozenset(b"Dd")


def stream_all(chunks: list[bytes], reader: FrameReader) -> tuple[list[tuple[int, int]], bytes]:
    """Feed ``chunks``; return (type, absolute start) of every frame and the runs joined."""
    starts: list[tuple[int, int]] = []
    out = b""
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        run, frames = reader.feed(chunk)
        for t, start, end in frames:
            assert run[start] == t and start < end <= len(run)
            if t not in reader.streamed:  # inspected frames are always whole
                assert end - start == 1 + I32.unpack_from(run, start + 1)[0]
            starts.append((t, len(out) + start))
        out += run
        assert len(out) + reader.pending == fed  # nothing lost, nothing twice
        assert reader.pending < max(reader.stream_min, reader.max_len + 1)  # bounded buffer
    return starts, out


def true_starts(frames: list[bytes]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for f in frames:
        out.append((f[0], pos))
        pos += len(f)
    return out


def test_frame_reader_streams_a_large_frame_as_it_arrives():
    reader = FrameReader(max_len=1024, streamed=STREAMED, stream_min=100)
    big = frame(b"D", b"x" * 5000)
    head = m.query("select 1")  # a non-streamed type, for contrast, to show the boundary
    run, frames = reader.feed(head + big[:300])
    assert run == head + big[:300] and frames == [
        (ord("Q"), 0, len(head)),
        (ord("D"), len(head), len(run)),
    ]
    assert reader.mid_frame and reader.pending == 0
    run, frames = reader.feed(big[300:4000])  # continuation only: no frame starts here
    assert (run, frames) == (big[300:4000], []) and reader.mid_frame
    tail = m.SYNC + frame(b"D", b"y" * 50)  # a small row is still buffered until whole
    run, frames = reader.feed(big[4000:] + tail[:8])
    k = len(big) - 4000
    assert run == big[4000:] + m.SYNC and frames == [(ord("S"), k, k + 5)]
    assert not reader.mid_frame and reader.pending == 3
    run, frames = reader.feed(tail[8:])
    assert run == tail[5:] and frames == [(ord("D"), 0, 55)]


def test_frame_reader_small_frames_of_streamed_types_stay_whole():
    reader = FrameReader(max_len=1024, streamed=STREAMED, stream_min=100)
    row = frame(b"D", b"z" * 90)  # 95 bytes: under stream_min
    run, frames = reader.feed(row[:50])
    assert (run, frames, reader.pending, reader.mid_frame) == (b"", [], 50, False)
    run, frames = reader.feed(row[50:])
    assert run == row and frames == [(ord("D"), 0, 95)]


def test_frame_reader_streamed_types_may_be_as_long_as_postgres_allows():
    reader = FrameReader(max_len=1024, streamed=STREAMED)
    run, frames = reader.feed(b"D" + I32.pack(MAX_STREAMED_LENGTH) + b"\x00\x01")
    assert frames == [(ord("D"), 0, 7)] and reader.mid_frame  # accepted, streamed
    with pytest.raises(ProtocolViolation, match=f"oversized.*'D'.*limit {MAX_STREAMED_LENGTH}"):
        FrameReader(max_len=1024, streamed=STREAMED).feed(b"D" + I32.pack(MAX_STREAMED_LENGTH + 1))
    # Frames the relay inspects keep max_len: it must hold them whole.
    with pytest.raises(ProtocolViolation, match="oversized.*'Q'.*limit 1024"):
        FrameReader(max_len=1024, streamed=STREAMED).feed(b"Q" + I32.pack(1025))
    # A streamed type over max_len but under stream_min is buffered whole (a bounded amount).
    reader = FrameReader(max_len=1024, streamed=STREAMED, stream_min=4096)
    row = frame(b"d", b"c" * 3000)
    assert reader.feed(row[:1000]) == (b"", []) and reader.pending == 1000
    assert reader.feed(row[1000:]) == (row, [(ord("d"), 0, len(row))])


big_frames_st = st.lists(
    st.tuples(st.sampled_from(b"DdQCZ"), st.integers(0, 700)).map(
        lambda tn: frame(bytes([tn[0]]), bytes([tn[1] % 251]) * tn[1])
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(frames=big_frames_st, data=st.data(), stream_min=st.integers(0, 300))
def test_frame_reader_streaming_any_split_passes_every_byte_once_in_order(frames, data, stream_min):
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=15))
    reader = FrameReader(max_len=1 << 20, streamed=STREAMED, stream_min=stream_min)
    starts, out = stream_all(split_at(stream, cuts), reader)
    assert out == stream[: len(out)] and len(out) + reader.pending == len(stream)
    assert reader.pending == 0 and not reader.mid_frame  # the stream ends on a boundary
    assert starts == true_starts(frames)


@settings(max_examples=200, deadline=None)
@given(frames=big_frames_st, data=st.data())
def test_row_filter_drops_rows_for_any_split(frames, data):
    """record_rows = "counts": the recording keeps every frame but DataRow and CopyData,
    however the (streamed) output of the relay happens to be cut."""
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=15))
    filt = RowFilter()
    kept = b"".join(filt.feed(chunk) for chunk in split_at(stream, cuts))
    assert kept == b"".join(f for f in frames if f[:1] not in (b"D", b"d"))


# --- read_startup ----------------------------------------------------------------------


def raw_startup(code: int, body: bytes, length: int | None = None) -> bytes:
    payload = I32.pack(code) + body
    return I32.pack(len(payload) + 4 if length is None else length) + payload


def test_startup_message_parsed_and_consumed_exactly():
    pkt = startup_packet({"user": "alice", "database": "app", "application_name": "ü"})
    parsed, used = read_startup(pkt + b"Qtrailing")
    assert used == len(pkt)
    assert parsed == StartupMessage(
        3, 0, {"user": "alice", "database": "app", "application_name": "ü"}
    )


def test_startup_needs_more_bytes_for_every_prefix():
    pkt = startup_packet({"user": "alice", "database": "app"})
    for i in range(len(pkt)):
        assert read_startup(pkt[:i]) == (None, 0), i
    assert read_startup(bytearray(pkt))[1] == len(pkt)


def test_tls_client_hello_is_direct_tls_and_consumes_nothing():
    # PostgreSQL 17's sslnegotiation=direct: the first byte is a TLS handshake record.
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    for i in range(1, len(hello) + 1):
        assert read_startup(hello[:i]) == (DirectTLS(), 0), i
    assert read_startup(bytearray(hello)) == (DirectTLS(), 0)


_param_value = st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), max_size=20)


@given(st.dictionaries(st.text("abc_", min_size=1, max_size=8), _param_value, max_size=5))
def test_no_startup_packet_looks_like_tls(params):
    pkt = startup_packet({"user": "u", **params})
    assert pkt[0] != 0x16 and not isinstance(read_startup(pkt)[0], DirectTLS)


def test_startup_protocol_options_and_newer_minor():
    pkt = startup_packet({"user": "u", "_pq_.compression": "on"}, code=(3 << 16) | 2)
    parsed, _ = read_startup(pkt)
    assert (parsed.major, parsed.minor) == (3, 2)
    assert parsed.params == {"user": "u"}
    assert parsed.unknown_protocol_options == ("_pq_.compression",)


def test_ssl_gssenc_cancel_requests():
    assert read_startup(m.ssl_request()) == (SSLRequest(), 8)
    assert read_startup(I32.pack(8) + I32.pack(GSSENC_REQUEST_CODE)) == (GSSENCRequest(), 8)
    cancel = m.cancel_request(4242, b"\x01\x02\x03\x04")
    parsed, used = read_startup(cancel)
    assert used == 16 and isinstance(parsed, CancelRequest)
    assert (parsed.pid, parsed.secret) == (4242, b"\x01\x02\x03\x04")
    long_key = bytes(range(32))  # protocol 3.2 keys are up to 256 bytes
    parsed, used = read_startup(m.cancel_request(-7, long_key))
    assert (parsed.pid, parsed.secret, used) == (-7, long_key, 8 + 4 + 32)


@pytest.mark.parametrize(
    "packet, match",
    [
        (I32.pack(7) + I32.pack(PROTOCOL_3_0), "length"),
        (I32.pack(4), "length"),  # rejected from the length field alone
        (I32.pack(-8), "length"),
        (I32.pack(-8) + I32.pack(PROTOCOL_3_0), "length"),
        (I32.pack(10_005) + I32.pack(PROTOCOL_3_0), "length"),
        (I32.pack(2**31 - 1), "length"),
        (raw_startup(SSL_REQUEST_CODE, b"\x00\x00\x00\x00"), "SSLRequest"),
        (raw_startup(GSSENC_REQUEST_CODE, b"\x00"), "GSSENCRequest"),
        (raw_startup(CANCEL_REQUEST_CODE, b"\x00\x00\x00\x01"), "CancelRequest"),
        (raw_startup(CANCEL_REQUEST_CODE, b"\x00" * 4 + b"k" * 257), "CancelRequest"),
        (raw_startup(PROTOCOL_3_0, b"user\x00alice\x00"), "terminated"),  # no final NUL
        (raw_startup(PROTOCOL_3_0, b"user\x00alice"), "terminated"),
        (
            raw_startup(PROTOCOL_3_0, b"user\x00alice\x00database\x00\x00"),
            "terminated",
        ),  # key w/o value
        (raw_startup(PROTOCOL_3_0, b""), "terminated"),
        (raw_startup(PROTOCOL_3_0, b"\x00"), "user"),
        (raw_startup(PROTOCOL_3_0, b"database\x00app\x00\x00"), "user"),
        (raw_startup(PROTOCOL_3_0, b"user\x00\x00\x00"), "user"),
        (raw_startup(PROTOCOL_3_0, b"\x00x\x00user\x00u\x00\x00"), "empty parameter"),
        (raw_startup(PROTOCOL_3_0, b"user\x00\xff\xfe\x00\x00"), "UTF-8"),
        (raw_startup(2 << 16, b"user\x00alice\x00\x00"), "2.0"),
        (raw_startup(4 << 16, b"user\x00alice\x00\x00"), "4.0"),
        (raw_startup(9999 << 16 | 1, b"user\x00alice\x00\x00"), "unsupported"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_startup_packets_are_protocol_violations(packet, match):
    with pytest.raises(ProtocolViolation, match=match) as exc:
        read_startup(packet)
    assert exc.value.fatal
    assert exc.value.sqlstate in ("08P01", "28000")
    # Postgres answers an invalid length with nothing (a COMMERROR), the rest with a FATAL
    assert exc.value.unanswered == (match == "length")


def test_missing_user_is_28000_like_postgres():
    with pytest.raises(ProtocolViolation) as exc:
        read_startup(raw_startup(PROTOCOL_3_0, b"database\x00app\x00\x00"))
    assert exc.value.sqlstate == "28000"


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(ident.filter(lambda k: not k.startswith("_pq_.")), ctext, max_size=5),
    user=ident,
)
def test_startup_packet_round_trip(params, user):
    params = {**params, "user": user}
    pkt = startup_packet(params)
    if len(pkt) > 10_000:
        return
    parsed, used = read_startup(pkt)
    assert used == len(pkt) and parsed.params == params


# --- encoders and decoders ---------------------------------------------------------------


def one_frame(data: bytes, type_char: str) -> bytes:
    reader = FrameReader()
    run, frames = reader.feed(data)
    assert reader.pending == 0 and len(frames) == 1 and chr(frames[0][0]) == type_char
    return run


@settings(max_examples=100, deadline=None)
@given(sql=ctext, name=ctext)
def test_query_and_parse_round_trip(sql, name):
    assert m.decode_query(one_frame(m.query(sql), "Q")) == sql
    assert m.decode_parse(one_frame(m.parse(name, sql), "P")) == (name, sql)


@settings(max_examples=100, deadline=None)
@given(fields=st.dictionaries(st.sampled_from("SVCMDHPpqWsctdnFLR"), ctext, min_size=1))
def test_error_fields_round_trip(fields):
    for t in "EN":
        assert (
            m.decode_error_fields(one_frame(m.encode_error_fields(t.encode(), fields), t)) == fields
        )


@settings(max_examples=50, deadline=None)
@given(msg=ctext, detail=ctext, sqlstate=st.from_regex(r"[0-9A-Z]{5}", fullmatch=True))
def test_error_and_notice_response_encoders(msg, detail, sqlstate):
    fields = m.decode_error_fields(one_frame(error_response("ERROR", sqlstate, msg, detail), "E"))
    expect = {"S": "ERROR", "V": "ERROR", "C": sqlstate, "M": msg}
    if detail:
        expect["D"] = detail
    assert fields == expect
    fields = m.decode_error_fields(one_frame(notice_response(msg, sqlstate), "N"))
    assert fields == {"S": "WARNING", "V": "WARNING", "C": sqlstate, "M": msg}


@settings(max_examples=50, deadline=None)
@given(mech=ident, data=st.binary(max_size=200), code=st.integers(-(2**31), 2**31 - 1))
def test_auth_and_password_round_trip(mech, data, code):
    assert m.decode_sasl_initial(one_frame(m.sasl_initial_response(mech, data), "p")) == (
        mech,
        data,
    )
    assert m.decode_password(one_frame(m.password_message(data), "p")) == data
    assert m.decode_auth(one_frame(m.auth_request(code, data), "R")) == (code, data)


def test_fixed_encoders():
    assert m.ready_for_query(b"T") == b"Z\x00\x00\x00\x05T"
    assert m.SYNC == b"S\x00\x00\x00\x04" and m.TERMINATE == b"X\x00\x00\x00\x04"
    assert m.parameter_status("TimeZone", "UTC") == frame(b"S", b"TimeZone\x00UTC\x00")
    assert m.decode_auth(m.auth_sasl(["SCRAM-SHA-256"])) == (m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00")
    assert m.execute("p", 7) == frame(b"E", b"p\x00" + I32.pack(7))
    assert m.bind_no_params("p", "s") == frame(b"B", b"p\x00s\x00" + b"\x00" * 6)
    nv = m.negotiate_protocol_version(0, ("_pq_.a",))
    assert nv == frame(b"v", I32.pack(0) + I32.pack(1) + b"_pq_.a\x00")


def test_cstring_errors():
    with pytest.raises(ProtocolViolation):
        m.cstring(b"abc", 0)
    with pytest.raises(ProtocolViolation):
        m.decode_query(frame(b"Q", b"\xff\x00"))
    with pytest.raises(ProtocolViolation):
        m.decode_auth(b"R\x00\x00\x00\x04")


# --- Relay without sockets -------------------------------------------------------------


def verdict(allowed: bool, message: str = "") -> Verdict:
    return Verdict(allowed, (), message)


class FakePolicy(PolicySeam):
    """Denies any statement mentioning ``payroll``."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def _check(self, kind: str, sql: str):
        self.seen.append((kind, sql))
        if "payroll" in sql:
            return verdict(False, "pgwitness: task t may not read secret.payroll")
        return verdict(True)

    def check_query(self, sql):
        return self._check("query", sql)

    def check_parse(self, sql, param_types=(), name=""):
        return self._check("parse", sql)

    def check_function_call(self):
        return verdict(False, "pgwitness: function calls are not allowed")


DENY_MSG = "pgwitness: task t may not read secret.payroll"


def bind(portal: str = "", statement: str = "") -> bytes:
    return m.bind_no_params(portal, statement)


def describe(kind: bytes, name: str) -> bytes:
    return frame(b"D", kind + name.encode() + b"\x00")


def server_error(fields: dict[str, str]) -> bytes:
    return m.encode_error_fields(b"E", fields)


def marked_server_error(relay: Relay, message: str = DENY_MSG) -> bytes:
    """What Postgres answers to the injected DO block (fields in the server's order)."""
    return server_error(
        {
            "S": "ERROR", "V": "ERROR", "C": "42501", "M": message,
            "W": "PL/pgSQL function inline_code_block line 1 at RAISE",
            "s": relay.denials.marker, "F": "pl_exec.c", "L": "3907", "R": "exec_stmt_raise",
        }
    )  # fmt: skip


CLEAN_ERROR = {"S": "ERROR", "V": "ERROR", "C": "42501", "M": DENY_MSG}

CLIENT_STREAM = b"".join(
    [
        m.query("select 1; select 2"),
        m.parse("s1", "select $1::int"),
        describe(b"S", "s1"),
        bind("p1", "s1"),
        m.execute("p1", 10),
        frame(b"C", b"Pp1\x00"),
        frame(b"H"),
        m.SYNC,
        frame(b"d", b"1\t2\n"),
        frame(b"c"),
        frame(b"f", b"nope\x00"),
    ]
)
SERVER_STREAM = b"".join(
    [
        m.parameter_status("application_name", "x"),
        frame(b"T", b"\x00\x00"),
        frame(b"D", b"\x00\x01\x00\x00\x00\x011"),
        frame(b"C", b"SELECT 1\x00"),
        frame(b"1"), frame(b"t", b"\x00\x00"), frame(b"n"), frame(b"2"), frame(b"s"), frame(b"3"),
        notice_response("hello", "00000", "NOTICE"),
        frame(b"A", I32.pack(1) + b"ch\x00payload\x00"),
        server_error({"S": "ERROR", "C": "22012", "M": "division by zero"}),
        m.ready_for_query(b"I"),
    ]
)  # fmt: skip


@pytest.mark.parametrize("policy", [None, FakePolicy()], ids=["no-policy", "allowing-policy"])
def test_relay_pass_through_is_byte_identical(policy):
    relay = Relay(policy=policy)
    assert relay.from_client(CLIENT_STREAM) == (CLIENT_STREAM, b"")
    assert relay.from_server(SERVER_STREAM) == SERVER_STREAM
    assert relay.tx_status == b"I"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_relay_pass_through_for_any_split(data):
    relay = Relay(policy=FakePolicy())
    for stream, feed in (
        (CLIENT_STREAM, lambda b: relay.from_client(b)[0]),
        (SERVER_STREAM, relay.from_server),
    ):
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
        assert b"".join(feed(chunk) for chunk in split_at(stream, cuts)) == stream


class WireLog:
    """A stand-in SessionRecorder that keeps the bytes handed to wire()."""

    def __init__(self):
        self.by_direction = {"c2s": b"", "s2c": b""}

    def wire(self, direction, data):
        self.by_direction[direction] += bytes(data)

    def decision(self, payload, denied):
        pass

    def decision_json(self, body, denied):
        pass


BIG = 300 * 1024  # over the streaming threshold
BIG_CLIENT_STREAM = b"".join(
    [m.query("select 1"), frame(b"B", b"\x00\x00" + b"b" * BIG), frame(b"d", b"c" * BIG), m.SYNC]
)
BIG_SERVER_STREAM = b"".join(
    [frame(b"T", b"\x00\x00"), frame(b"D", b"r" * BIG), frame(b"D", b"\x00\x00"),
     frame(b"d", b"o" * BIG), frame(b"C", b"SELECT 2\x00"), m.ready_for_query(b"I"),
     m.ready_for_query(b"I")]  # the Query's, then the Sync's
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_relay_streams_large_frames_for_any_split(data):
    """Large Bind/CopyData/DataRow frames pass in pieces: every byte once, in order, to the
    peer and to the recording, and nothing of ours can be spliced in while one is open."""
    log = WireLog()
    relay = Relay(policy=FakePolicy(), recorder=log, max_message_bytes=4096)
    for stream, feed, direction, mid in (
        (BIG_CLIENT_STREAM, lambda b: relay.from_client(b)[0], "c2s", "mid_frame_to_server"),
        (BIG_SERVER_STREAM, relay.from_server, "s2c", "mid_frame_to_client"),
    ):
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
        out = b""
        for chunk in split_at(stream, cuts):
            out += feed(chunk)
            # Mid-frame exactly when what was passed on ends inside a frame.
            assert getattr(relay, mid) == (parse_prefix(out) is not None)
        assert out == stream and log.by_direction[direction] == stream
    assert relay.tx_status == b"I" and not relay.busy


def parse_prefix(data: bytes) -> int | None:
    """None if ``data`` ends on a frame boundary, else the bytes its last frame still needs."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            return 1
        end = pos + 1 + I32.unpack_from(data, pos + 1)[0]
        if end > len(data):
            return end - len(data)
        pos = end
    return None


def test_relay_terminate_stops_at_terminate():
    relay = Relay()
    to_server, to_client = relay.from_client(
        m.query("select 1") + m.TERMINATE + m.query("select 2")
    )
    # The Terminate itself is not passed on (the connection ends or keeps the upstream
    # session: proxy/upstream_pool.py), nor anything after it.
    assert to_server == m.query("select 1") and to_client == b""
    assert relay.terminated


@pytest.mark.parametrize("bad", [b"p", b"Z", b"\x00", b"?"])
def test_relay_refuses_unknown_or_out_of_phase_frontend_messages(bad):
    with pytest.raises(ProtocolViolation):
        Relay().from_client(frame(bad, b"x"))


def test_relay_denied_query_when_idle_answers_locally():
    policy = FakePolicy()
    relay = Relay(policy=policy)
    to_server, to_client = relay.from_client(m.query("select * from secret.payroll"))
    assert to_server == b""
    frames = parse_frames(to_client)
    assert [t for t, _ in frames] == ["E", "Z"]
    assert m.decode_error_fields(frame(b"E", frames[0][1])) == CLEAN_ERROR
    assert frames[1][1] == b"I"
    assert policy.seen == [("query", "select * from secret.payroll")]
    assert relay.counters.denied == 1
    # The session goes on: the next allowed query passes untouched.
    q = m.query("select 1")
    assert relay.from_client(q) == (q, b"")


def test_relay_denied_query_in_transaction_is_raised_by_the_server():
    relay = Relay(policy=FakePolicy())
    begin = m.query("begin")
    assert relay.from_client(begin) == (begin, b"")
    assert relay.from_server(frame(b"C", b"BEGIN\x00") + m.ready_for_query(b"T")) == (
        frame(b"C", b"BEGIN\x00") + m.ready_for_query(b"T")
    )
    assert relay.tx_status == b"T"

    to_server, to_client = relay.from_client(m.query("select * from secret.payroll"))
    assert to_client == b""
    ((t, body),) = parse_frames(to_server)
    sql = m.decode_query(frame(b"Q", body))
    assert t == "Q" and sql.startswith("DO ") and "42501" in sql and DENY_MSG in sql
    assert relay.denials.marker in sql and "payroll" not in sql.replace(DENY_MSG, "")

    answer = relay.from_server(marked_server_error(relay) + m.ready_for_query(b"E"))
    frames = parse_frames(answer)
    assert [t for t, _ in frames] == ["E", "Z"]
    fields = m.decode_error_fields(frame(b"E", frames[0][1]))
    assert fields == CLEAN_ERROR
    assert not set(fields) & set("WsFLR")
    assert frames[1][1] == b"E"

    # A later, ordinary server error is not touched (not marked).
    rollback = m.query("rollback")
    assert relay.from_client(rollback) == (rollback, b"")
    plain = server_error({"S": "ERROR", "C": "25P02", "W": "keep me", "F": "postgres.c"})
    assert relay.from_server(plain + m.ready_for_query(b"E")) == plain + m.ready_for_query(b"E")


def test_relay_denied_query_while_another_is_in_flight_is_injected():
    relay = Relay(policy=FakePolicy())
    first = m.query("select pg_sleep(1)")
    to_server, _ = relay.from_client(first)
    assert to_server == first
    to_server, to_client = relay.from_client(m.query("select * from secret.payroll"))
    assert to_client == b"" and m.decode_query(to_server).startswith("DO ")


def test_relay_denied_parse_injects_parse_bind_execute_and_drops_their_completions():
    relay = Relay(policy=FakePolicy())
    own_parse = m.parse("s1", "select 1")
    stream = own_parse + m.parse("", "select * from secret.payroll") + bind() + m.execute() + m.SYNC
    to_server, to_client = relay.from_client(stream)
    assert to_client == b""
    sent = parse_frames(to_server)
    assert [t for t, _ in sent] == ["P", "P", "B", "E", "B", "E", "S"]
    assert frame(b"P", sent[0][1]) == own_parse
    name, sql = m.decode_parse(frame(b"P", sent[1][1]))
    # A uniquely named statement and portal: the client's unnamed ones are left alone.
    assert (
        name.startswith(relay.denials.tag) and sql.startswith("DO ") and relay.denials.marker in sql
    )
    assert frame(b"B", sent[2][1]) == m.bind_no_params(name, name)
    assert frame(b"E", sent[3][1]) == m.execute(name)

    # The server: ParseComplete (client's s1), ParseComplete + BindComplete (injected), the
    # marked error; the client's own Bind/Execute are skipped until Sync.
    reply = (
        frame(b"1")
        + frame(b"1")
        + frame(b"2")
        + marked_server_error(relay)
        + m.ready_for_query(b"I")
    )
    expected = frame(b"1") + m.encode_error_fields(b"E", CLEAN_ERROR) + m.ready_for_query(b"I")
    assert relay.from_server(reply) == expected


def test_relay_parse_injection_reply_split_at_every_offset():
    policy = FakePolicy()
    stream = (
        m.parse("s1", "select 1") + bind("", "s1") + m.execute() + m.parse("", "select * from secret.payroll")
        + bind() + m.execute() + m.SYNC + m.query("select 2")
    )  # fmt: skip
    reply_head = (
        frame(b"1")
        + frame(b"2")
        + frame(b"D", b"\x00\x01\x00\x00\x00\x011")
        + frame(b"C", b"SELECT 1\x00")
    )
    reply_tail = m.ready_for_query(b"I") + frame(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I")
    expected = reply_head + m.encode_error_fields(b"E", CLEAN_ERROR) + reply_tail
    for i in range(0, 200, 1):
        relay = Relay(policy=policy)
        relay.from_client(stream)
        reply = reply_head + frame(b"1") + frame(b"2") + marked_server_error(relay) + reply_tail
        if i > len(reply):
            break
        out = relay.from_server(reply[:i]) + relay.from_server(reply[i:])
        assert out == expected, i


def test_relay_denied_parse_after_an_earlier_error_releases_held_frames():
    """The server skips the injection (an earlier statement already failed): the client's
    held ParseComplete must still reach it, before ReadyForQuery."""
    relay = Relay(policy=FakePolicy())
    relay.from_client(
        m.parse("a", "select 1/0") + bind("", "a") + m.execute()
        + m.parse("", "select * from secret.payroll") + bind() + m.execute() + m.SYNC
    )  # fmt: skip
    err = server_error({"S": "ERROR", "C": "22012", "M": "division by zero"})
    reply = frame(b"1") + frame(b"2") + err + m.ready_for_query(b"I")
    assert relay.from_server(reply) == reply
    # The next group is clean again.
    q = m.query("select 1")
    assert relay.from_client(q) == (q, b"")
    ok = frame(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I")
    assert relay.from_server(ok) == ok


def test_relay_denied_function_call_when_idle():
    relay = Relay(policy=FakePolicy())
    to_server, to_client = relay.from_client(frame(b"F", I32.pack(1234) + b"\x00" * 8))
    assert to_server == b""
    assert [t for t, _ in parse_frames(to_client)] == ["E", "Z"]


def test_relay_unhealthy_recorder_refuses_statements_with_57p03():
    relay = Relay(health=SimpleNamespace(healthy=False))
    to_server, to_client = relay.from_client(m.query("select 1"))
    assert to_server == b""
    fields = m.decode_error_fields(to_client)
    assert fields["C"] == "57P03"
    sync = m.SYNC
    assert relay.from_client(sync) == (sync, b"")


class BodiesUnreadable(FakePolicy):
    reads_code = False  # no read:pg_catalog.pg_proc


CODE_CONTEXT = (b"WSQL statement \"SELECT p::int + length('body-secret')\"\n"
                b"PL/pgSQL function f(text) line 4 at SQL statement\x00")  # fmt: skip


def _with_context(kind: bytes, sqlstate: bytes) -> bytes:
    return frame(kind, b"SERROR\x00VERROR\x00C" + sqlstate + b"\x00Mm\x00" + CODE_CONTEXT
                 + b"qSELECT p::int + length('body-secret')\x00\x00")  # fmt: skip


@pytest.mark.parametrize("kind, sqlstate", [(b"E", b"22P02"), (b"N", b"00000")])
def test_relay_withholds_the_code_a_context_quotes_when_bodies_are_unreadable(kind, sqlstate):
    """An error's or notice's context quoting a function body's statement, and its
    internal query (proxy.redaction.strip_code); the frames around it unchanged."""
    quoted = _with_context(kind, sqlstate)
    stream = quoted + frame(b"Z", b"I")
    out = Relay(policy=BodiesUnreadable()).from_server(stream)
    assert b"body-secret" not in out and out.endswith(frame(b"Z", b"I"))
    assert b"PL/pgSQL function f(text) line 4" in out and b"withheld" in out
    # bodies readable, a dry run, or no policy: as the server sent it
    dry = BodiesUnreadable()
    dry.enforce = False
    for policy in (FakePolicy(), dry, None):
        assert Relay(policy=policy).from_server(stream) == stream


# --- Bind: decoded, and refused when its values pin object text elsewhere ---------------


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=8).filter(lambda s: "\x00" not in s),
    st.text(max_size=8).filter(lambda s: "\x00" not in s),
    st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=5),
    st.data(),
)
def test_decode_bind_round_trip(portal, statement, values, data):
    from tests.support.rawpg import bind as raw_bind

    n = len(values)
    formats = data.draw(st.sampled_from([(), (1,), tuple([0, 1] * 3)[:n]] if n else [(), (1,)]))
    if len(formats) not in (0, 1, n):
        formats = ()
    msg = raw_bind(portal, statement, params=values, param_formats=formats)
    assert m.bind_statement(msg) == statement
    assert m.decode_bind(msg) == (tuple(formats), tuple(values))


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
def test_decode_bind_refuses_a_frame_not_whole(cut):
    from tests.support.rawpg import bind as raw_bind

    msg = raw_bind("", "s", params=[b"16385", b"x" * 20])
    with pytest.raises(ProtocolViolation):
        m.decode_bind(msg[:-cut])


def _pinning_relay():
    """A relay whose policy is the real one, with a catalog snapshot: public.orders (16385)
    granted, secret.vault (16999) not."""
    from policy import StatementPolicy, parse_scopes
    from policy.catalog import CatalogCache

    cache = CatalogCache()
    cache.put("db", [], {"public.orders": frozenset({"id"})},
              relation_oids={16385: ("public", "orders"), 16999: ("secret", "vault")},
              user_schemas=["public", "secret"])  # fmt: skip
    policy = StatementPolicy(parse_scopes("read:public.orders"), task="t", shared=None)
    policy.catalog = lambda: cache.get("db")
    return Relay(policy=policy)


def test_relay_refuses_a_bind_whose_value_pins_text_of_a_relation_outside_the_grant():
    """The Bind is replaced by an injected statement that raises, in its Sync group: the
    server skips the client's Execute; a Bind of the granted OID goes on unchanged."""
    from tests.support.rawpg import bind as raw_bind

    relay = _pinning_relay()
    sql = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1"
    ok = raw_bind("", "s", params=[b"16385"])
    stream = m.parse("s", sql) + ok + m.execute() + m.SYNC
    to_server, to_client = relay.from_client(stream)
    # upstream the statement has a name of the proxy's own; its checked Bind follows it
    private = f"{relay.denials.tag}_pin_1"
    assert to_server == (m.parse(private, sql) + m.renamed_statement(ok, private)
                         + m.execute() + m.SYNC) and to_client == b""  # fmt: skip
    secret = raw_bind("", "s", params=[b"16999"])
    to_server, to_client = relay.from_client(secret + m.execute() + m.SYNC)
    sent = parse_frames(to_server)
    assert [t for t, _ in sent] == ["P", "B", "E", "E", "S"]
    name, raised = m.decode_parse(frame(b"P", sent[0][1]))
    assert name.startswith(relay.denials.tag) and "secret.vault" in raised
    assert secret not in to_server
    # a Bind of any other statement is not looked at
    other = raw_bind("", "t", params=[b"16999"])
    to_server, _ = relay.from_client(other + m.execute() + m.SYNC)
    assert to_server == other + m.execute() + m.SYNC


def test_relay_ends_the_session_on_a_bind_too_large_to_check():
    """A Bind of 256 KiB and more is streamed in parts; for a statement whose pin is a
    parameter its values cannot be checked (nor a refusal spliced in): the session ends."""
    from tests.support.rawpg import bind as raw_bind

    relay = _pinning_relay()
    sql = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1::text::oid"
    relay.from_client(m.parse("s", sql) + m.SYNC)
    big = raw_bind("", "s", params=[b"1" * (300 * 1024)])
    with pytest.raises(ProtocolViolation):
        relay.from_client(big[: 260 * 1024])


def test_relay_keeps_a_pinned_statement_under_its_own_name_upstream():
    """Red-team round 13: the server kept a pinned statement under the client's name when
    a later Parse of that name was refused (by the proxy: never sent) or failed (a named
    statement exists; a skipped group), and SQL EXECUTE of that name ran it with values
    nobody checked. Upstream it has a name of the proxy's own: a later Parse of the
    client's name is another statement; Describe and Close follow the private one."""
    from tests.support.rawpg import bind as raw_bind

    relay = _pinning_relay()
    sql = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1"
    relay.from_client(m.parse("", sql) + m.SYNC)
    private = f"{relay.denials.tag}_pin_1"
    describe_s = frame(b"D", b"S\x00")
    to_server, _ = relay.from_client(describe_s + m.SYNC)
    assert to_server == frame(b"D", b"S" + private.encode() + b"\x00") + m.SYNC
    # a refused Parse of the unnamed statement: the pinned one stays, still checked
    relay.from_client(m.parse("", "select * from secret.payroll") + m.SYNC)
    to_server, _ = relay.from_client(raw_bind("", "", params=[b"16999"]) + m.execute() + m.SYNC)
    assert m.parse(private, sql) not in to_server and b"secret.vault" in to_server
    # an allowed unpinned Parse of the unnamed statement: its Binds are the client's again
    relay.from_client(m.parse("", "SELECT 1") + m.SYNC)
    plain = raw_bind("", "", params=[])
    to_server, _ = relay.from_client(plain + m.execute() + m.SYNC)
    assert to_server == plain + m.execute() + m.SYNC
    # Close of a pinned named statement goes to the private name and forgets it
    relay.from_client(m.parse("n", sql) + m.SYNC)
    to_server, _ = relay.from_client(frame(b"C", b"Sn\x00") + m.SYNC)
    assert to_server == frame(b"C", b"S" + f"{relay.denials.tag}_pin_2".encode() + b"\x00") + m.SYNC
    assert "n" not in relay.policy.bind_pins


def test_relay_refuses_a_bind_naming_a_private_statement():
    """Red-team round 14: the private name can be learned; a Bind naming it directly is
    refused (it would run the pinned statement with values nobody checked)."""
    from tests.support.rawpg import bind as raw_bind

    relay = _pinning_relay()
    sql = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1"
    relay.from_client(m.parse("s", sql) + m.SYNC)
    private = f"{relay.denials.tag}_pin_1"
    direct = raw_bind("", private, params=[b"16999"])
    to_server, _ = relay.from_client(direct + m.execute() + m.SYNC)
    assert direct not in to_server and b"proxy's own" in to_server


@pytest.mark.parametrize(
    "password, prepared",
    [
        ("user", "user"),  # RFC 4013 section 3's examples
        ("USER", "USER"),
        ("I\u00adX", "IX"),  # soft hyphen: mapped to nothing
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),
        ("IX-\u2168", "IX-IX"),  # node-postgres's test password
        ("a\u2003b", "a b"),  # a non-ASCII space: SPACE
        ("\u0007", "\u0007"),  # prohibited (a control character): used as it is, as Postgres does
        ("\u0627\u0031", "\u0627\u0031"),  # right-to-left text ending left-to-right: as it is
        ("\u0627\u0628", "\u0627\u0628"),  # right-to-left throughout: prepared (unchanged)
        ("\u0221", "\u0221"),  # unassigned in Unicode 3.2: prohibited, as it is
        ("\u00ad", "\u00ad"),  # nothing left after mapping: as it is
    ],
)
def test_saslprep_as_postgres_and_libpq_apply_it(password, prepared):
    from common.wire.scram import make_verifier, saslprep

    assert saslprep(password) == prepared
    # the verifier is the prepared password's: either form the client types matches
    salt = b"s" * 16
    assert make_verifier(password, salt) == make_verifier(prepared, salt)


def test_reparsed_keeps_name_and_parameter_types_and_replaces_only_the_text():
    """A Parse run as RESTRICT (session 30): the frame the relay sends in the client's place."""
    original = (
        b"P" + struct.pack("!i", 4 + 3 + 23 + 2 + 8) + b"s1\x00DROP TABLE t CASCADE\x00"
        + struct.pack("!hii", 2, 23, 0)
    )
    assert m.decode_parse(original) == ("s1", "DROP TABLE t CASCADE")
    again = m.reparsed(original, "DROP TABLE t        ")
    assert again is not None
    assert m.decode_parse(again) == ("s1", "DROP TABLE t        ")
    assert again[-10:] == original[-10:]  # the parameter types, as sent
    assert struct.unpack_from("!i", again, 1)[0] == len(again) - 1
    assert m.reparsed(original, "DROP TABLE t\x00x") is None  # a NUL would cut the text


def test_reparsed_refuses_a_text_that_does_not_encode_back():
    """EUC_JP 0x8F 0xA2 0xB7: Python's codec reads "~", which encodes to one byte: the frame
    sent would not carry the client's bytes."""
    body = b"\x00DROP TABLE t /* \x8f\xa2\xb7 */ CASCADE\x00\x00\x00"
    original = b"P" + struct.pack("!i", 4 + len(body)) + body
    sql = m.decode_parse(original, "euc_jp")[1]
    assert m.reparsed(original, sql.replace("CASCADE", "       "), "euc_jp") is None
    plain = m.parse("", "DROP TABLE t CASCADE")
    assert m.reparsed(plain, "DROP TABLE t        ", "euc_jp") is not None
