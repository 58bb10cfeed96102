"""Malformed and hostile input on raw sockets: the proxy answers FATAL (or closes), and the
process and every other session carry on.

``RawClient`` is a tiny blocking v3 client (SCRAM included) that other proxy tests import
to misbehave precisely where a driver would not let them.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

import pytest

from common.wire import messages as m
from common.wire.framing import startup_packet
from common.wire.scram import MECHANISM, ScramClient
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.proxies import assert_serves, expect_fatal, wait_sessions
from tests.support.rawpg import PROTO_3_0, PROTO_3_2, RawClient, describe, error_fields  # noqa: F401

pytestmark = pytest.mark.timeout(60)


SSL_REQUEST = struct.pack("!ii", 8, 80877103)
GSSENC_REQUEST = struct.pack("!ii", 8, 80877104)


@pytest.fixture
def established(proxy):
    """A logged-in raw session that must survive whatever the test does to other connections."""
    with RawClient(proxy.host, proxy.port) as c:
        c.login()
        assert c.scalar("select 1") == "1"
        yield c
        assert c.scalar("select count(*) from public.orders") == "4"


# --- startup phase -------------------------------------------------------------------


# An invalid startup packet length: Postgres logs it (COMMERROR) and closes without a word,
# and so does the proxy (a client that sends Terminate before its startup packet, as
# node-postgres does on connect() then end(), must not get a FATAL it would raise).
SILENT_STARTUPS = [
    ("garbage (HTTP)", b"GET / HTTP/1.1\r\nHost: pgwitness\r\n\r\n"),
    ("negative length", struct.pack("!ii", -1, PROTO_3_0)),
    ("negative length, 4 bytes only", struct.pack("!i", -8)),
    ("length below the header", struct.pack("!ii", 4, PROTO_3_0)),
    ("length over 10004", struct.pack("!ii", 10_005, PROTO_3_0)),
    ("length 2^31-1", struct.pack("!ii", 2**31 - 1, PROTO_3_0)),
    ("Terminate before the startup packet", b"X\x00\x00\x00\x04"),
]


@pytest.mark.parametrize("payload", [c[1] for c in SILENT_STARTUPS], ids=[c[0] for c in SILENT_STARTUPS])
def test_invalid_startup_length_is_closed_without_a_word(proxy, pg, established, payload):
    base = len(proxy.server.connections)
    for host, port in ((pg.host, pg.port), (proxy.host, proxy.port)):  # Postgres, then us
        with RawClient(host, port) as c:
            c.send(payload)
            c.sock.settimeout(5)
            assert c.sock.recv(1024) == b"", (host, port)
    wait_sessions(proxy, base)
    assert_serves(proxy)


BAD_STARTUPS = [
    ("protocol 2.0", startup_packet({"user": STATIC_USER}, 2 << 16), "08P01"),
    ("protocol 4.0", startup_packet({"user": STATIC_USER}, 4 << 16), "08P01"),
    ("unterminated parameters", struct.pack("!ii", 13, PROTO_3_0) + b"user\x00", "08P01"),
    (
        "invalid UTF-8",
        startup_packet({"user": STATIC_USER})[:-1] + b"x\x00\xff\xfe\x00\x00",
        "08P01",
    ),
    ("malformed SSLRequest", struct.pack("!iii", 12, 80877103, 0), "08P01"),
    ("malformed CancelRequest", struct.pack("!iii", 12, 80877102, 1), "08P01"),
    ("no user", startup_packet({"database": "app"}), "28000"),
]


@pytest.mark.parametrize(
    "payload,sqlstate", [c[1:] for c in BAD_STARTUPS], ids=[c[0] for c in BAD_STARTUPS]
)
def test_bad_startup_packet_gets_fatal_and_close(proxy, established, payload, sqlstate):
    base = len(proxy.server.connections)
    with RawClient(proxy.host, proxy.port) as c:
        c.send(payload)
        expect_fatal(c, sqlstate)
    wait_sessions(proxy, base)
    assert_serves(proxy)


def test_truncated_startup_then_close_leaves_nothing_behind(proxy, established):
    base = len(proxy.server.connections)
    packet = startup_packet({"user": STATIC_USER, "database": "app"})
    for cut in (2, 6, len(packet) - 1):
        with RawClient(proxy.host, proxy.port) as c:
            c.send(packet[:cut])
            c.sock.shutdown(socket.SHUT_WR)
            c.frames_until_eof()
        wait_sessions(proxy, base)
    assert_serves(proxy)


def test_client_that_closes_mid_scram_leaves_nothing_behind(proxy, established):
    base = len(proxy.server.connections)
    with RawClient(proxy.host, proxy.port) as c:
        c.startup()
        assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
        c.send(m.sasl_initial_response(MECHANISM, ScramClient("x").first()))
        assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL_CONTINUE
    wait_sessions(proxy, base)
    assert_serves(proxy)


def test_query_pipelined_right_after_scram_final_is_answered(proxy, established):
    with RawClient(proxy.host, proxy.port) as c:
        c.startup()
        assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
        scram = ScramClient(STATIC_PASSWORD)
        c.send(m.sasl_initial_response(MECHANISM, scram.first()))
        code, data = m.decode_auth(c.read_frame())
        assert code == m.AUTH_SASL_CONTINUE
        # The client does not wait for AuthenticationOk: the proxy must keep the query
        # while it logs in upstream, then relay it.
        c.send(m.password_message(scram.final(data)) + m.query("select 'pipelined'"))
        login = c.frames_until_ready()
        assert login[-1][:1] == b"Z", describe(login)
        answer = c.frames_until_ready()
        assert [f[:1] for f in answer] == [b"T", b"D", b"C", b"Z"], describe(answer)
        assert b"pipelined" in answer[1]


# --- timeouts ----------------------------------------------------------------------


@pytest.fixture
def short_timeout_proxy(make_proxy, tls_files):
    return make_proxy(
        **{
            "proxy.startup_timeout": 0.6,
            "proxy.tls_cert": tls_files["server.crt"],
            "proxy.tls_key": tls_files["server.key"],
        }
    )


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # TLS handshake record
    return hello


STALLS = {
    "nothing": lambda c: None,
    "half a startup packet": lambda c: c.send(startup_packet({"user": STATIC_USER})[:9]),
    "startup, no SASL answer": lambda c: c.startup(),
}


@pytest.mark.parametrize("stall", list(STALLS))
def test_stalled_startup_is_closed_after_startup_timeout(short_timeout_proxy, stall):
    handle = short_timeout_proxy
    with RawClient(handle.host, handle.port) as other:
        other.login()
        started = time.monotonic()  # the timeout runs from the connection's accept
        c = RawClient(handle.host, handle.port)
        STALLS[stall](c)
        if stall == "startup, no SASL answer":
            assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
        err = expect_fatal(c, "08P01")
        elapsed = time.monotonic() - started
        assert "timeout" in err["M"]
        assert 0.5 <= elapsed < 3.0
        wait_sessions(handle, 1)
        assert other.scalar("select 2") == "2"
        c.close()
    assert_serves(handle)


@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello"])
def test_stalled_tls_handshake_is_closed_after_startup_timeout(short_timeout_proxy, sent):
    handle = short_timeout_proxy
    with RawClient(handle.host, handle.port) as other:
        other.login()
        started = time.monotonic()  # the timeout runs from the connection's accept
        c = RawClient(handle.host, handle.port)
        c.send(SSL_REQUEST)
        assert c.read_byte() == b"S"
        if sent != "nothing":
            hello = _client_hello()
            c.send(hello[: len(hello) // 2])
        assert c.read_frame() is None  # closed; no plaintext error inside a TLS stream
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 3.0
        wait_sessions(handle, 1)
        assert other.scalar("select 3") == "3"
        c.close()
    assert_serves(handle)


# --- TLS and GSS negotiation ---------------------------------------------------------


def test_garbage_instead_of_client_hello_is_closed_at_once(make_proxy, tls_files):
    handle = make_proxy(
        **{"proxy.tls_cert": tls_files["server.crt"], "proxy.tls_key": tls_files["server.key"]}
    )
    with RawClient(handle.host, handle.port) as c:
        c.send(SSL_REQUEST)
        assert c.read_byte() == b"S"
        started = time.monotonic()
        c.send(startup_packet({"user": STATIC_USER, "database": "app"}))
        assert c.read_frame() is None
        assert time.monotonic() - started < 2.0  # not the 5 s startup timeout
    wait_sessions(handle, 0)
    assert_serves(handle)


def test_plaintext_after_sslrequest_in_same_packet_is_refused(short_timeout_proxy):
    handle = short_timeout_proxy
    with RawClient(handle.host, handle.port) as c:
        c.send(SSL_REQUEST + startup_packet({"user": STATIC_USER, "database": "app"}))
        first = c.read_byte()
        assert first == b"E", "the proxy must not answer 'S' when plaintext follows the SSLRequest"
        c.buf[:0] = first
        err = expect_fatal(c, "08P01")
        assert "SSL" in err["M"] or "TLS" in err["M"]
    wait_sessions(handle, 0)
    assert_serves(handle)


def _start_tls(c: RawClient, ca_file: str) -> None:
    """SSLRequest, 'S', then TLS on the raw socket."""
    c.send(SSL_REQUEST)
    assert c.read_byte() == b"S"
    ctx = ssl.create_default_context(cafile=ca_file)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")


def test_sslrequest_then_tls_login_works(short_timeout_proxy, tls_files):
    handle = short_timeout_proxy
    with RawClient(handle.host, handle.port) as c:
        _start_tls(c, tls_files["ca.crt"])
        c.login()
        assert c.scalar("select ssl::text from pg_stat_ssl where pid = pg_backend_pid()") == "true"


def test_second_sslrequest_inside_tls_is_a_protocol_violation(short_timeout_proxy, tls_files):
    handle = short_timeout_proxy
    with RawClient(handle.host, handle.port) as c:
        _start_tls(c, tls_files["ca.crt"])
        c.send(SSL_REQUEST)
        expect_fatal(c, "08P01")
    wait_sessions(handle, 0)


def test_sslrequest_without_proxy_tls_is_answered_n(proxy, established):
    with RawClient(proxy.host, proxy.port) as c:
        c.send(SSL_REQUEST)
        assert c.read_byte() == b"N"
        c.login()
        assert c.scalar("select 41 + 1") == "42"


def test_gssencrequest_is_answered_n_and_login_proceeds(proxy, established):
    with RawClient(proxy.host, proxy.port) as c:
        c.send(GSSENC_REQUEST)
        assert c.read_byte() == b"N"
        c.login()
        assert c.scalar("select current_user") == "pgwitness"


# --- protocol version negotiation ----------------------------------------------------


NEGOTIATIONS = [
    ("3.2", PROTO_3_2, {}, []),
    ("3.0+_pq_.foo", PROTO_3_0, {"_pq_.foo": "bar"}, ["_pq_.foo"]),
    ("3.2+two options", PROTO_3_2, {"_pq_.foo": "1", "_pq_.bar": "2"}, ["_pq_.foo", "_pq_.bar"]),
    ("3.0 plain", PROTO_3_0, {}, None),
]


def _npv(frame: bytes) -> tuple[int, list[str]]:
    version, n = struct.unpack_from("!ii", frame, 5)
    return version, [x.decode() for x in frame[13:].split(b"\x00")[:n]]


@pytest.mark.parametrize(
    "code,params,options", [c[1:] for c in NEGOTIATIONS], ids=[c[0] for c in NEGOTIATIONS]
)
def test_negotiate_protocol_version_then_login_works(proxy, established, code, params, options):
    with RawClient(proxy.host, proxy.port) as c:
        c.startup(code=code, **params)
        frames = c.authenticate()
        assert frames[-1][:1] == b"Z", describe(frames)
        npv = [f for f in frames if f[:1] == b"v"]
        if options is None:
            assert npv == []
        else:
            assert len(npv) == 1 and frames[0][:1] == b"v", describe(frames)
            assert _npv(npv[0])[1] == options
        assert c.scalar("select 'negotiated'") == "negotiated"


@pytest.mark.parametrize(
    "code,params", [c[1:3] for c in NEGOTIATIONS[:3]], ids=[c[0] for c in NEGOTIATIONS[:3]]
)
def test_negotiate_protocol_version_matches_postgres(proxy, pg, code, params):
    startup = {"user": "pgwitness", "database": "app", **params}
    with RawClient(pg.host, pg.port) as direct:
        direct.send(startup_packet(startup, code))
        expected = direct.read_frame()
    with RawClient(proxy.host, proxy.port) as c:
        c.send(startup_packet({**startup, "user": STATIC_USER}, code))
        got = c.read_frame()
    assert expected[:1] == b"v"
    assert _npv(got) == _npv(expected)


def test_libpq_asking_for_protocol_3_2_still_connects(proxy):
    import psycopg

    # the test extra's psycopg[binary] (>= 3.3) bundles libpq 18, the first to ask for 3.2
    assert psycopg.pq.version() >= 180000, psycopg.pq.version()
    with psycopg.connect(
        proxy.dsn(sslmode="disable", max_protocol_version="3.2"), connect_timeout=5
    ) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# --- after login ---------------------------------------------------------------------


@pytest.fixture
def small_messages_proxy(make_proxy):
    return make_proxy(**{"proxy.max_message_bytes": 4096})


BAD_MESSAGES = [
    ("length over proxy.max_message_bytes", b"Q" + struct.pack("!i", 4097), "oversized"),
    ("length 2^31-1", b"Q" + struct.pack("!i", 2**31 - 1), "oversized"),
    ("negative length", b"Q" + struct.pack("!i", -1), "invalid"),
    ("length below 4", b"Q" + struct.pack("!i", 3), "invalid"),
    ("unknown message type 'z'", b"z" + struct.pack("!i", 4), "invalid frontend message type"),
    ("unknown message type 0", b"\x00" + struct.pack("!i", 4), "invalid frontend message type"),
    (
        "PasswordMessage after login",
        b"p" + struct.pack("!i", 8) + b"pw\x00\x00",
        "invalid frontend message type",
    ),
]


@pytest.mark.parametrize(
    "payload,words", [c[1:] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES]
)
def test_bad_message_after_login_gets_fatal_08p01(small_messages_proxy, pg, payload, words):
    handle = small_messages_proxy
    with RawClient(handle.host, handle.port) as c, RawClient(handle.host, handle.port) as other:
        other.login()
        c.login()
        pid = c.backend_pid
        assert pid
        # Just under the limit still passes.
        assert c.scalar("select 1 /*" + "x" * (4096 - 40) + "*/") == "1"
        c.send(payload)
        err = expect_fatal(c, "08P01")
        assert words in err["M"]
        wait_sessions(handle, 1)
        # The upstream backend of the killed session is gone too.
        deadline = time.monotonic() + 3
        while other.scalar(f"select count(*) from pg_stat_activity where pid = {pid}") != "0":
            assert time.monotonic() < deadline, "upstream backend outlived its client"
            time.sleep(0.05)
        assert other.scalar("select 5") == "5"
    assert_serves(handle)


# --- during authentication -----------------------------------------------------------


def test_bad_length_during_sasl_is_a_client_protocol_violation(proxy):
    with RawClient(proxy.host, proxy.port) as c:
        c.startup()
        assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
        c.send(b"p" + struct.pack("!i", -1))
        err = expect_fatal(c, "08P01")
        assert "upstream" not in err["M"]
    assert_serves(proxy)


def test_huge_sasl_message_before_authentication_is_refused_at_once(proxy):
    with RawClient(proxy.host, proxy.port) as c:
        c.startup()
        assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
        started = time.monotonic()
        c.send(b"p" + struct.pack("!i", 32 * 1024 * 1024) + b"SCRAM-SHA-256\x00")
        c.sock.settimeout(1.5)
        try:
            err = expect_fatal(c, "08P01")
        except TimeoutError:
            pytest.fail(
                "proxy kept waiting for a 32 MiB SASL message from an unauthenticated client"
            )
        assert time.monotonic() - started < 1.0
        assert "length" in err["M"]
