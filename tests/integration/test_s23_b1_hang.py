"""b1 (driver-suite report, session 22/23): psycopg's async COPY and ``test_leak`` tests hang
through the proxy over TLS, never directly against PostgreSQL.

What was found (see the session's report): the hung session never waited for a catalog
load (no park, no resume); the proxy held nothing (its relay idle, the client transport's
write buffer empty, reading on) and every byte it wrote reached the client's socket. The
bytes stop inside the client: libpq's non-blocking reader (``PQconsumeInput``, as psycopg
async and libpq pipelines use it) reads one TLS record at a time into the free part of
its 16 KiB input buffer, so a record larger than that room leaves decrypted bytes inside
OpenSSL, and the client then waits for the socket to become readable, which it never does
when those bytes were the end of the answer. PostgreSQL never sends such records: it
writes through an 8 KiB send buffer, each flush one TLS record of at most 8192 bytes of
data. The proxy writes whatever one upstream read gave it (``Splice.server_data`` ->
``self.to_client(out)``; uvloop's SSL transport encrypts each ``write`` as records of up
to 16 KiB), so a large answer read from the server in one go reaches the client as
16 KiB records. CockroachDB (pgwire "limit size of SSL frames sent") and Supavisor
("chunk TLS sends to work around libpq async deadlock") met the same and cap their TLS
writes at 8 KiB.

The hang itself depends on where the answer's last record ends in libpq's buffer; what the
proxy does differently is deterministic: it sends TLS records that carry more than 8192
bytes. The test counts the records of a large answer, directly (the control: never over)
and through the proxy (a strict xfail until session 23 capped each write to a TLS client at
8192 bytes: ``ClientWriter._tls_pieces``, proxy/connection.py).
"""

from __future__ import annotations

import socket
import ssl

import pytest

from common.wire import messages as m
from tests.support.rawpg import UPSTREAM_USER, RawClient, query

pytestmark = pytest.mark.timeout(90)

# PostgreSQL's send buffer (PQ_SEND_BUFFER_SIZE): no TLS record it writes carries more.
PG_RECORD_DATA = 8192
# A record's length on the wire: its data plus the cipher's overhead (at most 256 bytes in
# TLS 1.2 and 1.3; 17 for TLS 1.3 with AES-GCM)
RECORD_LIMIT = PG_RECORD_DATA + 256
APPLICATION_DATA = 23  # the TLS content type every TLS 1.3 record after the handshake has
# ~640 KB of small rows: the proxy reads many of PostgreSQL's 8 KiB writes at once
BIG_ANSWER = "select repeat('x', 200) from generate_series(1, 3000)"


class RecordCountingTLS:
    """A client TLS connection (SSLRequest, then TLS over memory BIOs) that notes the
    length of every TLS record it receives; socket-like enough for ``RawClient``."""

    def __init__(self, host: str, port: int, timeout: float):
        self.raw = socket.create_connection((host, port), timeout=timeout)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw.sendall(m.ssl_request())
        answer = self.raw.recv(1)
        assert answer == b"S", f"TLS refused: {answer!r}"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self._head = bytearray()  # received bytes whose record boundaries are being read
        self._skip = 0  # bytes of the current record's body still to come
        self.records: list[tuple[int, int]] = []  # (content type, length) as received
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def _receive(self) -> bool:
        data = self.raw.recv(1 << 16)
        if not data:
            return False
        self._note(data)
        self.incoming.write(data)
        return True

    def _note(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            need = 5 - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) == 5:
                length = int.from_bytes(self._head[3:5], "big")
                self.records.append((self._head[0], length))
                self._head.clear()
                self._skip = length

    def max_record(self) -> int:
        return max((n for t, n in self.records if t == APPLICATION_DATA), default=0)

    # --- what RawClient calls -------------------------------------------------------
    def setsockopt(self, *args) -> None:
        self.raw.setsockopt(*args)

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._receive():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def close(self) -> None:
        self.raw.close()


class TLSRawClient(RawClient):
    """``RawClient`` over ``RecordCountingTLS`` (its own state as ``RawClient`` sets it)."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, source: str | None = None):
        self.sock = RecordCountingTLS(host, port, timeout)  # type: ignore[assignment]
        self.buf = bytearray()
        self.backend_pid = None
        self.secret = b""
        self.params = {}
        self.preamble_answers = []
        self.terminate_on_close = False


def _largest_record(client: TLSRawClient, attempts: int) -> int:
    """The longest TLS record of ``BIG_ANSWER``'s answer over ``attempts`` runs (stopping
    at the first one over ``RECORD_LIMIT``)."""
    tls: RecordCountingTLS = client.sock  # type: ignore[assignment]
    largest = 0
    for _ in range(attempts):
        tls.records.clear()
        msgs = client.run(query(BIG_ANSWER))
        assert [t for t, _ in msgs].count("D") == 3000, "the whole answer came"
        assert sum(1 for t, _n in tls.records if t == APPLICATION_DATA) >= 10
        largest = max(largest, tls.max_record())
        if largest > RECORD_LIMIT:
            break
    return largest


def test_postgresql_sends_tls_records_of_at_most_8192_bytes(pg):
    """The control: what libpq's non-blocking reader is used to."""
    client = TLSRawClient.session(pg.host, pg.port, UPSTREAM_USER, pg.users[UPSTREAM_USER], "app")
    try:
        assert _largest_record(client, 2) <= RECORD_LIMIT
    finally:
        client.close()


def test_proxy_sends_tls_records_no_larger_than_postgresql(make_proxy, client_tls):
    handle = make_proxy(
        **{"proxy.tls_cert": client_tls["cert"], "proxy.tls_key": client_tls["key"]}
    )
    ckw = handle.connect_kwargs()
    client = TLSRawClient.session(ckw["host"], ckw["port"], ckw["user"], ckw["password"], "app")
    try:
        largest = _largest_record(client, 5)
    finally:
        client.close()
    assert largest <= RECORD_LIMIT, (
        f"the proxy sent a TLS record of {largest} bytes; PostgreSQL's are at most "
        f"{PG_RECORD_DATA} bytes of data ({RECORD_LIMIT} with the cipher's overhead)"
    )
