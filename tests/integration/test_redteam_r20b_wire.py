"""Red-team round 20b: the wire protocol, authentication and session boundaries.

Judged by the server (rows that landed, a login that completed) and by the recording as
the auditor reads it back (``recorder.audit.derive.SessionFacts`` through
``tests.support.recording.audit_rows``). A probe marked ``xfail(strict=True)`` is an
attack that works today (the reason says what happens); it turns the suite red once
fixed. The plain tests are attacks that were stopped, kept as regression guards.

Families:

- statements while the recorder cannot record: a simple Query, SQL ``EXECUTE`` and a new
  Parse are refused (57P03), but a Bind/Execute of a statement prepared before the outage
  is not looked at and runs;
- the audit's reading of the recorded frames: PostgreSQL ignores a Sync sent while it is
  in COPY-IN mode, and skips to Sync after a malformed Flush; the auditor does not, so
  every later statement row of the session shows the next one's outcome (a denied read
  shown as run, the write before it shown as refused); a malformed Sync rolls back a
  write the auditor shows as done;
- the login throttle's places per address: connections that send a startup packet and
  then stall in SASL hold all ``auth_concurrency_per_address`` places, so nobody else from
  that address (another agent on the same host or NAT) can log in;
- guards: a captured SCRAM client-final replayed on a new connection, channel binding and
  malformed client-final messages, startup settings under other spellings, bytes after
  Terminate, protocol 3.2 cancel keys.
"""

from __future__ import annotations

import base64
import socket
import struct
import time

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from common.wire.framing import startup_packet
from common.wire.scram import MECHANISM, ScramClient
from devtools.testing import FlakyStore
from tests.support import outage
from tests.support.outage import errors, until
from tests.support.rawpg import (
    SYNC,
    RawClient,
    RawError,
    bind,
    describe,
    execute,
    parse,
    query,
)
from tests.support.recording import (
    audit_rows,
    one_live_session,
)

pytestmark = pytest.mark.timeout(120)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.r20b_t"
SCOPES = f"read:{TABLE},public.customers write:{TABLE}"
SECRET = "SELECT salary FROM secret.payroll"  # never granted: denied by the proxy
COUNT = "SELECT count(*) FROM public.customers"
I32 = struct.Struct("!i")
Q, E = query, execute


PROBE = outage.ProbeTable(TABLE, AGENT, SCOPES)
rows_with, fresh, client = PROBE.rows_with, PROBE.fresh, PROBE.client
grant_proxy = PROBE.proxy


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def copy_data(b: bytes) -> bytes:
    return frame(b"d", b)


COPY_DONE = frame(b"c")


# --- 1. statements while the recorder cannot record --------------------------------------


def _outage(h, c: RawClient | None = None) -> FlakyStore:
    """The recorder's store fails until the recorder is unhealthy; ``c`` (else a session
    of its own) gives it something to upload."""
    if c is not None:
        return outage.outage(h, c, COUNT)
    with client(h) as nudge:
        return outage.outage(h, nudge, COUNT)


UNHEALTHY = outage.UNHEALTHY


def test_while_unrecorded_query_sql_execute_and_parse_are_refused(make_proxy, tmp_path, pg):
    """The refusal the claim rests on: while the recorder is unhealthy a simple Query, a SQL
    EXECUTE of a prepared statement and a new Parse are refused with 57P03 and write
    nothing."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2001, 2002, 2003)
    with client(h) as c:
        one_live_session(h)
        assert not errors(c.query(f"PREPARE r20b_sqlp(int) AS INSERT INTO {TABLE} VALUES ($1)"))
        flaky = _outage(h, c)
        try:
            got = c.query(f"INSERT INTO {TABLE} VALUES (2001)")
            got += c.query("EXECUTE r20b_sqlp(2002)")
            c.send(parse("", f"INSERT INTO {TABLE} VALUES (2003)"), bind(), E(), SYNC)
            got += c.frames_until_ready()
        finally:
            flaky.down = False
    codes = [e.get("C") for e in errors(got)]
    assert codes == ["57P03", "57P03", "57P03"], describe(got)
    assert [rows_with(pg, v) for v in (2001, 2002, 2003)] == [0, 0, 0]


def test_while_unrecorded_a_statement_prepared_before_is_refused(make_proxy, tmp_path, pg):
    """Round 20b: a Bind + Execute of a statement Parsed before the outage ran unrecorded.
    While the recorder cannot record, Bind and Execute are refused as a Parse is (57P03)."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2010)
    with client(h) as c:
        one_live_session(h)
        c.send(parse("r20b_ins", f"INSERT INTO {TABLE} VALUES ($1)"), SYNC)
        assert not errors(c.frames_until_ready())
        flaky = _outage(h, c)
        try:
            # the outage is real: a Query is refused
            assert [e["C"] for e in errors(c.query(COUNT))] == ["57P03"]
            c.send(bind("", "r20b_ins", [b"2010"]), E(), SYNC)
            got = c.frames_until_ready()
        finally:
            flaky.down = False
    landed = rows_with(pg, 2010)
    assert landed == 0 and [e.get("C") for e in errors(got)] == ["57P03"], (landed, describe(got))


def test_while_unrecorded_a_copy_begun_before_takes_no_more_rows(make_proxy, tmp_path, pg):
    """Round 20b: a COPY begun before the outage took its rows during it. Its CopyData and
    CopyDone now become a CopyFail: the COPY fails, its rows roll back, the session goes on."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2011)
    with client(h) as c:
        one_live_session(h)
        c.send(Q(f"COPY {TABLE} (v) FROM STDIN"))
        assert until(c, b"G")[-1][:1] == b"G"
        flaky = _outage(h)
        try:
            c.send(copy_data(b"2011\n" * 50), COPY_DONE)
            got = c.frames_until_ready()
        finally:
            flaky.down = False
    landed = rows_with(pg, 2011)
    assert landed == 0, (landed, describe(got))
    assert "cannot record" in " ".join(describe(got)), describe(got)
    assert got[-1][:1] == b"Z", describe(got)


# --- 2. the auditor's reading of the recorded frames ------------------------------------


def _copy_with_early_sync(c: RawClient) -> list[bytes]:
    """Extended-protocol COPY FROM STDIN with the Sync sent right after Execute (as a
    pipelining client does): the server ignores that Sync in COPY-IN mode, so the COPY
    needs a second one, and only one ReadyForQuery comes back for the two."""
    c.send(parse("", f"COPY {TABLE} (v) FROM STDIN"), bind(), E(), SYNC)
    got = until(c, b"G")
    c.send(copy_data(b"2020\n"), COPY_DONE, SYNC)
    return got + until(c, b"Z")


def _malformed_flush(c: RawClient) -> list[bytes]:
    """A Flush with four stray bytes: the server says "invalid message format" and skips
    to the next Sync (the Query after it never runs)."""
    c.send(frame(b"H", b"\x00\x00\x00\x00"), Q(f"INSERT INTO {TABLE} VALUES (2021)"), SYNC)
    return until(c, b"Z")


@pytest.mark.parametrize("prelude", [_copy_with_early_sync, _malformed_flush],
                         ids=["copy-in-sync", "malformed-flush"])  # fmt: skip
def test_audit_rows_keep_their_own_outcomes_after_a_skipped_sync(make_proxy, tmp_path, pg, prelude):
    """Found: derive kept a Sync the server ignored (COPY-IN) or skipped (after a malformed
    Flush) waiting, so every later row got the next statement's answer. Stopped: derive
    drops Syncs sent in copy-in mode and gives a malformed message its own error and skip."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2020, 2021, 2022)
    write = f"INSERT INTO {TABLE} VALUES (2022)"
    with client(h) as c:
        sid = one_live_session(h)
        prelude(c)
        assert not errors(c.query(write))
        denied = c.query(SECRET)
        assert [e.get("C") for e in errors(denied)] == ["42501"], describe(denied)
        assert any(f[:1] == b"D" for f in c.query(COUNT))
    assert rows_with(pg, 2022) == 1  # the server ran the write
    rows = {r["text"]: r for r in audit_rows(h, sid)}
    summary = {
        t: (r["decision"], r["outcome"], r["sqlstate"], r["command_tag"]) for t, r in rows.items()
    }
    assert rows[write]["outcome"] == "ok" and rows[write]["command_tag"] == "INSERT 0 1", summary
    assert rows[SECRET]["decision"] == "denied" and rows[SECRET]["sqlstate"] == "42501", summary
    assert rows[SECRET]["outcome"] == "error", summary
    assert rows[COUNT]["outcome"] == "ok", summary


def test_audit_does_not_show_a_write_a_malformed_sync_rolled_back(make_proxy, tmp_path, pg):
    """Found: a Sync with stray bytes fails (08P01) and the server rolls back the implicit
    transaction, but the audit showed the INSERT 'ok'. Stopped: an error answering a Sync
    marks the rows its group ran 'rolled back', with that error."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2030)
    write = f"INSERT INTO {TABLE} VALUES (2030)"
    with client(h) as c:
        sid = one_live_session(h)
        c.send(parse("", write), bind(), E(), frame(b"S", b"\x00\x00\x00\x00"))
        got = c.frames_until_ready()
        assert any(e.get("C") == "08P01" for e in errors(got)), describe(got)
        assert any(f[:1] == b"D" for f in c.query(COUNT))
    assert rows_with(pg, 2030) == 0  # rolled back by the server
    row = next(r for r in audit_rows(h, sid) if r["text"] == write)
    assert (row["outcome"], row["command_tag"], row["sqlstate"]) == ("rolled back", "INSERT 0 1", "08P01"), row


# --- 3. the login throttle's places per address -----------------------------------------


def _stall_in_sasl(h, n: int, user: str) -> list[socket.socket]:
    """``n`` connections that send a startup packet, read AuthenticationSASL and then say
    nothing more: each holds a place of the address's authentications."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((h.host, h.port), timeout=10)
        s.sendall(startup_packet({"user": user, "database": "app"}))
        head = s.recv(1)
        assert head == b"R", head
        socks.append(s)
    return socks


def test_stalled_sasl_exchanges_from_one_address_do_not_lock_out_other_agents(make_proxy, tmp_path):
    """Round 20b: stalled SASL exchanges held every place of their address until
    startup_timeout. A login now waits at most proxy.auth_client_timeout for its client's
    SASL messages while it holds a place; a waiting login takes the next freed one."""
    h = grant_proxy(make_proxy, tmp_path, **{"proxy.startup_timeout": 10.0})
    per_address = h.cfg.proxy.auth_concurrency_per_address
    with client(h) as warm:  # the agent logs in
        assert warm.query(COUNT)[-1][:1] == b"Z"
    socks = _stall_in_sasl(h, per_address, "r20b-nobody")
    try:
        started = time.monotonic()
        try:
            c = client(h, timeout=4.0)
        except (OSError, AssertionError) as exc:
            took = time.monotonic() - started
            pytest.fail(
                f"valid login failed after {took:.1f}s behind {per_address} stalled ones: {exc!r}"
            )
        took = time.monotonic() - started
        with c:
            assert c.query(COUNT)[-1][:1] == b"Z"
        assert took < 3.0, took
    finally:
        for s in socks:
            s.close()


# --- 4. guards: SCRAM, startup spellings, bytes after Terminate, cancel keys ------------


def _scram_to_final(h, user: str, client_first: bytes) -> tuple[socket.socket, bytes]:
    """Startup and SASLInitialResponse with ``client_first``; (socket, server-first)."""
    c = RawClient(h.host, h.port, timeout=10)
    c.startup(user, "app")
    f = c.read_frame()
    assert f is not None and m.decode_auth(f)[0] == m.AUTH_SASL
    c.send(m.sasl_initial_response(MECHANISM, client_first))
    f = c.read_frame()
    assert f is not None and f[:1] == b"R", describe([f] if f else [])
    code, data = m.decode_auth(f)
    assert code == m.AUTH_SASL_CONTINUE
    return c, data


def _outcome(c: RawClient) -> list[bytes]:
    frames: list[bytes] = []
    while (f := c.read_frame()) is not None:
        frames.append(f)
        if f[:1] == b"Z" or f[:1] == b"E":
            break
    return frames


def test_a_captured_scram_client_final_does_not_log_in_again(make_proxy, tmp_path):
    """A client-final-message seen once (say, by a proxy in between) replayed on a new
    connection with the same client-first: the server nonce differs, the login fails."""
    h = grant_proxy(make_proxy, tmp_path)
    scram = ScramClient(h.token)
    first = scram.first()
    c1, server_first = _scram_to_final(h, AGENT, first)
    final = scram.final(server_first)
    c1.send(m.password_message(final))
    assert any(f[:1] == b"Z" for f in _outcome(c1))
    c1.sock.close()
    c2, server_first2 = _scram_to_final(h, AGENT, first)
    assert server_first2 != server_first
    c2.send(m.password_message(final))
    got = _outcome(c2)
    assert [e.get("C") for e in errors(got)] == ["28P01"], describe(got)
    assert not any(f[:1] == b"Z" for f in got)
    c2.sock.close()


@pytest.mark.parametrize(
    "tamper",
    [
        "cbind-claim",
        "cbind-data",
        "nonce-suffix",
        "proof-padding",
        "extra-attr-after-proof",
        "authzid",
    ],
)
def test_scram_client_final_variants_do_not_log_in(make_proxy, tmp_path, tamper):
    """Variants of a valid exchange that claim channel binding, stretch the nonce or the
    proof: none may log in (the authzid variant names another agent and must not become
    it: with a valid proof it logs in as the startup user or not at all)."""
    h = grant_proxy(make_proxy, tmp_path)
    scram = ScramClient(h.token)
    first = scram.first()
    if tamper == "authzid":
        first = first.replace(b"n,,", b"n,a=someone-else,", 1)
        scram._client_first_bare = first.split(b",", 2)[2].decode()
    c, server_first = _scram_to_final(h, AGENT, first)
    final = scram.final(server_first).decode()
    without, proof = final.rsplit(",p=", 1)
    if tamper == "cbind-claim":
        final = final.replace(
            "c=biws", "c=" + base64.b64encode(b"p=tls-server-end-point,,").decode()
        )
    elif tamper == "cbind-data":
        final = final.replace("c=biws", "c=" + base64.b64encode(b"n,," + b"\x00" * 32).decode())
    elif tamper == "nonce-suffix":
        final = final.replace(",r=", ",r=x", 1)
    elif tamper == "proof-padding":
        final = f"{without},p={base64.b64encode(base64.b64decode(proof) + b'x').decode()}"
    elif tamper == "extra-attr-after-proof":
        final = f"{final},x=1"
    c.send(m.password_message(final.encode()))
    got = _outcome(c)
    c.sock.close()
    if tamper == "authzid":
        if any(f[:1] == b"Z" for f in got):
            return  # logged in as the startup user: the authzid named nobody it became
        assert errors(got), describe(got)
        return
    assert not any(f[:1] == b"Z" for f in got), describe(got)
    assert errors(got) and errors(got)[0].get("S") == "FATAL", describe(got)


@pytest.mark.parametrize(
    "params",
    [
        {"SEARCH_PATH": "secret"},
        {"Search_Path": "secret"},
        {"ROLE": "pgwitness"},
        {"Session_Authorization": "pgwitness"},
        {"OPTIONS": "-c search_path=secret"},
        {"options": "-csearch_path=secret"},
        {"options": "--Search-Path=secret"},
        {"options": r"-c\ search_path=secret"},
        {"options": "-c client_encoding=SJIS"},
        {"CLIENT_ENCODING": "SJIS"},
        {"Replication": "database"},
        {"_pq_.command_tag": "x"},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_startup_settings_under_other_spellings_are_refused(make_proxy, tmp_path, params):
    """PostgreSQL reads setting names case-insensitively; the proxy must refuse what it
    refuses under any spelling (the login never gets to run a query)."""
    h = grant_proxy(make_proxy, tmp_path)
    try:
        c = client(h, params=params)
    except RawError as exc:
        assert exc.fields.get("S") == "FATAL", exc.fields
        return
    with c:  # logged in: the setting must not have taken effect
        path = c.scalar("SHOW search_path")
        enc = c.scalar("SHOW client_encoding")
    assert "secret" not in path and enc == "UTF8", (params, path, enc)
    assert list(params) == ["_pq_.command_tag"], ("accepted", params)  # negotiated away only


def test_statements_after_terminate_in_one_packet_never_reach_the_server(make_proxy, tmp_path, pg):
    """Terminate, then a write, a COPY and a FunctionCall in the same TCP write, with the
    session's upstream left to the pool: nothing after Terminate runs, now or on the next
    session that takes the backend."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2040, 2041)
    c = client(h)
    one_live_session(h)
    c.terminate_on_close = False
    c.send(
        Q(COUNT),
        m.TERMINATE,
        Q(f"INSERT INTO {TABLE} VALUES (2040)"),
        parse("", f"INSERT INTO {TABLE} VALUES (2041)"),
        bind(),
        E(),
        SYNC,
    )
    c.frames_until_eof()
    c.sock.close()
    with client(h) as c2:
        c2.query(COUNT)
    assert rows_with(pg, 2040) == 0 and rows_with(pg, 2041) == 0


def test_cancel_with_a_protocol_3_2_key_that_starts_with_the_real_one_does_nothing(
    make_proxy, tmp_path
):
    """A CancelRequest is forwarded with the client's key as sent: 3.2-length keys whose
    first four bytes are the real 3.0 key must not cancel (no truncation on the way)."""
    h = grant_proxy(make_proxy, tmp_path)
    with client(h) as c:
        assert len(c.secret) == 4
        c.send(Q("SELECT pg_sleep(1.5)"))
        time.sleep(0.3)
        for key in (c.secret + b"\x00" * 28, c.secret + b"x"):
            s = socket.create_connection((h.host, h.port), timeout=5)
            s.sendall(m.cancel_request(c.pid, key))
            s.recv(1)
            s.close()
        got = c.frames_until_ready()
    assert not errors(got), describe(got)


def test_after_a_malformed_flush_desyncs_the_groups_denials_still_hold(make_proxy, tmp_path, pg):
    """A malformed Flush makes the server skip to Sync, which the proxy's Sync groups do not
    model (it then counts one group more in flight than the server has). Pipelines after
    it, denied statements among allowed ones over both protocols, must still be refused by
    the server-raised denial, with no row of the secret and the session usable."""
    h = grant_proxy(make_proxy, tmp_path)
    fresh(pg, 2050, 2051)
    with client(h) as c:
        _malformed_flush(c)
        c.send(
            parse("", COUNT),
            bind(),
            E(),
            parse("", SECRET),
            bind(),
            E(),
            SYNC,
            Q(SECRET),
            parse("", f"INSERT INTO {TABLE} VALUES (2050)"),
            bind(),
            E(),
            SYNC,
        )
        got = until(c, b"Z", 3)
        c.send(Q("BEGIN"), Q(SECRET), Q("ROLLBACK"), Q(f"INSERT INTO {TABLE} VALUES (2051)"))
        got += until(c, b"Z", 4)
        assert any(f[:1] == b"D" for f in c.query(COUNT))
    codes = [e.get("C") for e in errors(got)]
    assert codes.count("42501") == 3, describe(got)
    salaries = pg.psql("SELECT string_agg(salary::text, ',') FROM secret.payroll", db="app").strip()
    datarows = b"".join(f for f in got if f[:1] == b"D")
    assert not any(s.encode() in datarows for s in salaries.split(",") if len(s) > 3), describe(got)
    # the INSERT after the denied group's Sync ran; the one after ROLLBACK too
    assert rows_with(pg, 2050) == 1 and rows_with(pg, 2051) == 1
