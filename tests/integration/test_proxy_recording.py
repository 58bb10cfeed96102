"""End to end: sessions through the real proxy are recorded completely, verifiably, and
never unrecorded.

Each test starts its own recording proxy (``make_proxy``) on a private store, spool and
signing key under ``tmp_path``, drives it with a real driver (psycopg / asyncpg), then
reads the recording back with the recorder's own code (``iter_records``, ``split_frames``,
``verify_session``, the ``pgwitness`` CLI).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from devtools.localpg import free_port
from devtools.testing import FlakyStore
from proxy.cli import main as cli_main
from recorder import chunks
from recorder.records import Direction, Kind
from recorder.replay import (
    _bind,
    _cstr,
    _data_row,
    _fields,
    _row_description,
    split_frames,
)
from recorder.verify import verify_session
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.proxies import metric
from tests.support.recording import (
    assert_absent,
    decisions,
    end_record,
    grants,
    issue_grant,
    live_session_ids,
    one_live_session,
    public_key,
    recording,
    records,
    revoke_from_another_host,
    wait_status,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(60)

VENV_BIN = Path(sys.executable).parent


# --- helpers -----------------------------------------------------------------------------


# These tests swap the recorder's store for a faulty one, which only the uploader thread
# can be handed (the upload process opens its own): tests/integration/test_upload_process.py
# breaks the store of the upload process for real instead.
SWAPPABLE = {"recorder.upload_process": False}


def frames(recs, direction: Direction) -> list[tuple[str, bytes]]:
    """Every whole protocol frame recorded in one direction, in order."""
    buf = b"".join(r.payload for r in recs if r.kind == Kind.WIRE and r.direction == direction)
    out, rest = split_frames(buf)
    assert rest == b"", f"{len(rest)} bytes of a partial {direction.name} frame recorded"
    return out


def start_meta(recs) -> dict:
    first = recs[0]
    assert first.kind == Kind.META and first.type == "session.start", first
    return first.json()["meta"]


def user_sessions(store) -> list[str]:
    """Recorded client sessions (not the recorders' own control streams), oldest first."""
    return [sid for sid in store.sessions()
            if start_meta(records(store, sid)).get("stream") != "control"]


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").rglob("*.spool"))


# Authentication material that must never be stored: SCRAM client-first/-final markers
# (gs2 header "n,,n=", "c=biws" channel binding), the mechanism name as sent in
# SASLInitialResponse, and the server-first iteration count. (Long enough not to occur by
# chance in compressed chunks and signatures.)
SASL_MARKERS = [b"n,,n=", b"n,,n=,r=", b"c=biws,r=", b"SCRAM-SHA-256\x00", b",i=4096"]


def sockname(conn: psycopg.Connection) -> str:
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        host, port = s.getsockname()[:2]
    finally:
        s.close()
    return f"{host}:{port}"


def drop_socket(conn: psycopg.Connection) -> None:
    """Cut the client's TCP connection under the driver's feet (no Terminate)."""
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        s.shutdown(socket.SHUT_RDWR)
    finally:
        s.close()


def refused_unrecorded(what: str | None = None) -> float:
    return metric("pgwitness_refused_unrecorded_total", **({"what": what} if what else {}))


# --- a whole session, frame by frame -----------------------------------------------------


SIMPLE_SQL = "SELECT 'simple-marker-7f3a' AS s, name FROM public.customers WHERE id = 1"
EXTENDED_SQL = "SELECT %s::text AS p, name FROM public.customers WHERE id = %s::int"
COPY_SQL = "COPY (SELECT id, name FROM public.customers ORDER BY id) TO STDOUT"
NOTICE_SQL = "DO $$ BEGIN RAISE NOTICE 'notice-marker-5eed'; END $$"


def test_full_session_is_recorded_frame_by_frame(make_proxy, pg, tmp_path, tls_files):
    h = make_proxy(**recording(tmp_path, **{
        "proxy.tls_cert": tls_files["server.crt"], "proxy.tls_key": tls_files["server.key"]}))
    store = h.runtime.recorder.store
    notices = []
    with psycopg.connect(h.dsn(host="127.0.0.1", sslmode="require"), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        sid = one_live_session(h)
        client_addr = sockname(conn)
        backend_pid = conn.info.backend_pid
        cur = conn.cursor()
        cur.execute(SIMPLE_SQL)
        assert cur.fetchall() == [("simple-marker-7f3a", "Ada")]
        cur.execute(EXTENDED_SQL, ("bind-param-c0ffee", "2"))
        assert cur.fetchall() == [("bind-param-c0ffee", "Grace")]
        with cur.copy(COPY_SQL) as copy:
            copied = b"".join(bytes(b) for b in copy)
        assert copied == b"1\tAda\n2\tGrace\n3\tEdsger\n"
        with pytest.raises(psycopg.errors.DivisionByZero):
            cur.execute("SELECT 1/0")
        cur.execute(NOTICE_SQL)
        assert notices == ["notice-marker-5eed"]

    report = wait_status(store, sid, public_key(tmp_path), "closed")
    assert report.ok and not report.problems
    recs = records(store, sid)
    assert [r.seq for r in recs] == list(range(len(recs)))
    assert report.records == len(recs)

    meta = start_meta(recs)
    assert meta["agent"] == STATIC_USER
    assert meta["task"] == "(static user)"
    assert meta["grant_id"] == f"static:{STATIC_USER}"
    assert meta["client_addr"] == client_addr
    assert meta["client_tls"].startswith("TLSv1.")
    assert meta["upstream"] == f"localhost:{pg.port}"
    assert meta["upstream_user"] == "pgwitness"
    assert meta["upstream_tls"].startswith("TLSv1.")
    assert meta["database"] == "app"
    assert meta["backend_pid"] == backend_pid
    assert end_record(recs)["cause"] == "terminate"

    c2s = frames(recs, Direction.C2S)
    s2c = frames(recs, Direction.S2C)
    queries = [_cstr(b, 0)[0] for t, b in c2s if t == "Q"]
    assert SIMPLE_SQL in queries and "SELECT 1/0" in queries and NOTICE_SQL in queries
    assert COPY_SQL in queries
    parses = [_cstr(b, _cstr(b, 0)[1])[0] for t, b in c2s if t == "P"]
    assert "SELECT $1::text AS p, name FROM public.customers WHERE id = $2::int" in parses
    binds = [b for t, b in c2s if t == "B"]
    assert len(binds) == 1
    assert _bind(binds[0])[2] == ["bind-param-c0ffee", "2"]
    assert b"\x00\x00\x00\x11bind-param-c0ffee" in binds[0]  # int32 length + exact bytes
    assert c2s[-1][0] == "X"
    assert not any(t == "p" for t, _ in c2s), "a PasswordMessage/SASL frame was recorded"

    rows = [_data_row(b, []) for t, b in s2c if t == "D"]
    assert ["simple-marker-7f3a", "Ada"] in rows
    assert ["bind-param-c0ffee", "Grace"] in rows
    descs = [[c[0] for c in _row_description(b)] for t, b in s2c if t == "T"]
    assert ["s", "name"] in descs and ["p", "name"] in descs
    assert [b for t, b in s2c if t == "d"] == [b"1\tAda\n", b"2\tGrace\n", b"3\tEdsger\n"]
    tags = [_cstr(b, 0)[0] for t, b in s2c if t == "C"]
    assert tags == ["SELECT 1", "SELECT 1", "COPY 3", "DO"]
    errors = [_fields(b) for t, b in s2c if t == "E"]
    assert [(e["C"], e["M"]) for e in errors] == [("22012", "division by zero")]
    notices_rec = [_fields(b) for t, b in s2c if t == "N"]
    assert [n["M"] for n in notices_rec] == ["notice-marker-5eed"]

    # Order: the error answers the statement that caused it (seq of query < seq of error).
    def seq_of(direction, needle):
        return next(r.seq for r in recs if r.kind == Kind.WIRE and r.direction == direction
                    and needle in r.payload)

    assert seq_of(Direction.C2S, b"SELECT 1/0") < seq_of(Direction.S2C, b"division by zero")
    assert seq_of(Direction.S2C, b"division by zero") < seq_of(Direction.C2S, b"notice-marker-5eed")

    # No credential of either login reached the store (decompressed chunks included).
    assert_absent(tmp_path / "rec", [STATIC_PASSWORD.encode(), pg.users["pgwitness"].encode(),
                                     *SASL_MARKERS])
    wait_for(lambda: not spooled(tmp_path), 3.0, "the spool to drain")


def test_dropped_socket_ends_with_disconnect(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path))
    conn = psycopg.connect(h.dsn(), autocommit=True)
    try:
        sid = one_live_session(h)
        conn.execute("SELECT 'before-drop'")
        drop_socket(conn)
        wait_for(lambda: not live_session_ids(h), what="the proxy to notice the drop")
    finally:
        conn.close()
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    recs = records(store, sid)
    assert end_record(recs)["cause"] == "disconnect"
    assert not any(t == "X" for t, _ in frames(recs, Direction.C2S))
    assert any(b"before-drop" in b for t, b in frames(recs, Direction.C2S) if t == "Q")


# --- grants: denials, revocation, expiry, row counts -------------------------------------


def test_denied_statement_is_recorded_and_uploaded_at_once(make_proxy, tmp_path):
    # chunks never close by age here: only the session start and the deny close them
    h = make_proxy(**recording(tmp_path, **{"recorder.chunk_max_seconds": 60.0}), **grants(tmp_path))
    grant, token = issue_grant(h)
    store, pub = h.runtime.recorder.store, public_key(tmp_path)
    conn = psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True)
    try:
        sid = one_live_session(h)
        assert conn.execute("SELECT name FROM public.customers WHERE id = 3").fetchall() == [("Edsger",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
            conn.execute("SELECT salary FROM secret.payroll")
        t_denied = time.monotonic()
        assert "INC-4821" in str(denied.value)

        def deny_chunk():
            prefix = chunks.session_prefix(sid)
            keys = store.list(prefix)
            for key in keys:
                if key.endswith(".chunk") and key[:-6] + ".ckpt" in keys:
                    _, recs = chunks.decode_chunk(store.get(key))
                    for r in recs:
                        if r.kind == Kind.DECISION and r.type == "deny":
                            return chunks.parse_name(key[len(prefix):])[0], r
            return None

        # the deny closes its chunk at once: chunk and checkpoint are stored within 0.5 s,
        # although chunks would otherwise stay open for a minute
        n, deny = wait_for(deny_chunk, 0.5, "the chunk with the deny in the store", 0.01)
        assert time.monotonic() - t_denied < 0.5
        d = deny.json()
        assert d["outcome"] == "denied" and d["denied"] is True
        assert d["sql"] == "SELECT salary FROM secret.payroll"
        (st,) = d["statements"]
        assert not st["allowed"] and st["rule"]
        assert st["reads"] == ["secret.payroll"]
        assert "INC-4821" in d["error"]
        assert d["grant_id"] == grant.id  # each decision stands alone: it names its grant

        # the live session verifies as open, attested through the chunk holding the deny
        report = verify_session(store, sid, pub)
        assert report.status == "open" and not report.problems, report.summary()
        assert report.attested_through == n
        assert f"attested through chunk {n}" in report.summary()
        recs = records(store, sid)
        allowed = [p for p in decisions(recs) if not p["denied"]]
        assert [(a["outcome"], a["grant_id"]) for a in allowed] == [("allowed", grant.id)]
        assert allowed[0]["statements"][0]["reads"] == ["public.customers"]
        # recorded by its shape: the decision.shape record once, then the decision, right
        # after the client frame that holds the statement's text
        (at,) = [i for i, r in enumerate(recs) if r.kind == Kind.DECISION and r.type == "allow"]
        assert recs[at].json() == {"denied": False, "shape": allowed[0]["shape"]}
        assert (recs[at - 1].kind, recs[at - 1].type) == (Kind.META, "decision.shape")
        assert recs[at - 2].kind == Kind.WIRE and recs[at - 2].direction == Direction.C2S
        assert b"SELECT name FROM public.customers WHERE id = 3" in recs[at - 2].payload

    finally:
        conn.close()
    wait_status(store, sid, pub, "closed")
    recs = records(store, sid)
    meta = start_meta(recs)
    assert meta["grant_id"] == grant.id
    assert meta["agent"] == "billing-bot" and meta["task"] == "INC-4821"
    assert meta["scopes"] == grant.scopes and meta["reason"] == "refund audit"
    assert meta["client_tls"] == "none"
    assert end_record(recs)["cause"] == "terminate"
    # the authentication outcome is an event; the SASL exchange itself is nowhere
    (auth,) = [r.json() for r in recs if r.kind != Kind.WIRE and r.type == "authenticated"]
    assert auth["method"] == "SCRAM-SHA-256" and auth["grant_id"] == grant.id
    assert_absent(tmp_path / "rec", [token.encode(), token.encode()[4:], *SASL_MARKERS])



def test_revoked_grant_ends_session_as_revoked(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    grant, token = issue_grant(h)
    conn = psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True)
    try:
        sid = one_live_session(h)
        conn.execute("SELECT name FROM public.customers")
        # a revoking host with its clock ahead: immune to the watch-cursor race below
        revoke_from_another_host(tmp_path, grant.id, +2.0)
        wait_for(lambda: not live_session_ids(h), 3.0, "the revoked session to end")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    end = end_record(records(store, sid))
    assert end["cause"] == "revoked" and grant.id in end["detail"]


def test_expired_grant_ends_session_as_expired(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    grant, token = issue_grant(h, ttl="2s")
    with psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("SELECT 1")
        wait_for(lambda: not live_session_ids(h), 4.0, "the grant to expire")
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    end = end_record(records(store, sid))
    assert end["cause"] == "expired" and grant.id in end["detail"]


def test_a_client_rerunning_an_injected_denial_is_recorded_as_a_refusal(make_proxy, tmp_path):
    """Red-team round 9: the statement the proxy injects for a denied Parse stays prepared
    on the server, and pg_prepared_statements shows its name and marker to the client.
    Binding it makes the server raise the marked error while no denial is pending: the
    proxy must not take that for its own. The client gets the server's error as it is, the
    recording has it as a db.denied (a probe), and the session goes on."""
    from common.wire import messages as wm
    from tests.support.rawpg import RawClient, bind, parse

    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, token = issue_grant(h)
    with RawClient.session(h.host, h.port, "billing-bot", token) as c:
        sid = one_live_session(h)
        denied = c.run(parse("", "SELECT salary FROM secret.payroll"), bind(), wm.execute(),
                       wm.SYNC)
        assert [t for t, _ in denied] == ["E", "Z"]
        shown = b"".join(c.query("SELECT name, statement FROM pg_prepared_statements"))
        names = sorted(set(re.findall(rb"pgw_[0-9a-f]{16}_\d+", shown)))
        assert names, "the injected statement was not visible: the test proves nothing"
        rerun = c.run(bind("", names[0].decode()), wm.execute(), wm.SYNC)
        assert [t for t, _ in rerun] == ["2", "E", "Z"], rerun
        assert rerun[1][1].count(b"pgwitness-deny-") == 1  # the server's error, as it is
        assert c.scalar("SELECT name FROM public.customers WHERE id = 3") == "Edsger"

    def probe_recorded():
        return [r.json() for r in records(h.runtime.recorder.store, sid)
                if r.kind == Kind.META and r.type == "db.denied"]

    [event] = wait_for(probe_recorded, 5.0, "the re-run denial recorded as db.denied")
    assert event["sqlstate"] == "42501"


def test_dry_run_would_deny_is_recorded_as_allowed(make_proxy, tmp_path, capsys):
    """Regression (fixed in 8e2b2b6): a dry-run would-deny was recorded as type "deny",
    "denied": true, though the statement ran."""
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, token = issue_grant(h, enforce=False)
    with psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True) as conn:
        sid = one_live_session(h)
        assert conn.execute("SELECT count(*) FROM secret.payroll").fetchone() == (3,)  # ran
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    (d,) = [r for r in records(store, sid) if r.kind == Kind.DECISION]
    p = d.json()
    assert p["outcome"] == "would_deny"
    assert p["statements"][0]["reads"] == ["secret.payroll"]
    assert (d.type, p["denied"]) == ("allow", False)
    assert cli_main(["replay", "--store", str(tmp_path / "rec"), sid]) == 0
    out = capsys.readouterr().out
    assert "would deny" in out.lower() and "DENIED" not in out


ROWS_SQL = "SELECT 'rowval-' || 'd1571nct' AS v, name FROM public.customers ORDER BY id"


def _check_counts_only(store, sid, root: Path):
    recs = records(store, sid)
    s2c = frames(recs, Direction.S2C)
    assert not [b for t, b in s2c if t in ("D", "d")], "row contents recorded"
    descs = [[c[0] for c in _row_description(b)] for t, b in s2c if t == "T"]
    assert ["v", "name"] in descs
    tags = [_cstr(b, 0)[0] for t, b in s2c if t == "C"]
    assert "SELECT 3" in tags and "COPY 3" in tags
    assert any(ROWS_SQL.encode() in b for t, b in frames(recs, Direction.C2S) if t == "Q")
    assert_absent(root, [b"rowval-d1571nct", b"Edsger", b"2\tGrace"])


def _rows_session(conn):
    assert [r[0] for r in conn.execute(ROWS_SQL).fetchall()] == ["rowval-d1571nct"] * 3
    with conn.cursor().copy(COPY_SQL) as copy:
        assert b"".join(bytes(b) for b in copy).count(b"\n") == 3


def test_record_rows_counts_grant(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, token = issue_grant(h, record_rows="counts")
    with psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True) as conn:
        sid = one_live_session(h)
        _rows_session(conn)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    assert start_meta(records(store, sid))["record_rows"] == "counts"
    _check_counts_only(store, sid, tmp_path / "rec")


def test_record_rows_counts_static_user(make_proxy, tmp_path):
    """Regression (fixed in 8e2b2b6): recorder.record_rows was ignored for static users."""
    h = make_proxy(**recording(tmp_path, **{"recorder.record_rows": "counts"}))
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        _rows_session(conn)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    _check_counts_only(store, sid, tmp_path / "rec")


@pytest.mark.parametrize("record_rows", ["full", "counts"])
def test_large_rows_are_recorded_as_streamed(make_proxy, tmp_path, record_rows, capsys):
    """A row bigger than max_message_bytes is relayed in pieces; the recording reassembles
    to the exact frames (full), or leaves every piece of it out (counts)."""
    h = make_proxy(**recording(tmp_path, **{"recorder.record_rows": record_rows}),
                   **{"proxy.max_message_bytes": 4096})  # fmt: skip
    marker = b"R0w" * 400_000  # 1.2 MB, not compressible away by accident: checked below
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        (value,) = conn.execute("SELECT repeat('R0w', 400000) AS v").fetchone()
        assert value.encode() == marker
    store = h.runtime.recorder.store
    assert not wait_status(store, sid, public_key(tmp_path), "closed").problems
    s2c = frames(records(store, sid), Direction.S2C)  # asserts no partial frame is left
    rows = [b for t, b in s2c if t == "D"]
    tags = [_cstr(b, 0)[0] for t, b in s2c if t == "C"]
    assert "SELECT 1" in tags
    if record_rows == "full":
        assert rows == [b"\x00\x01" + struct.pack("!i", len(marker)) + marker]
    else:
        assert rows == []
        assert_absent(tmp_path / "rec", [b"R0wR0wR0wR0w"])
    assert cli_main(["replay", "--store", str(tmp_path / "rec"), sid]) == 0
    assert "SELECT 1" in capsys.readouterr().out


# --- the CLI: replay, verify, tampering --------------------------------------------------


def test_cli_replay_and_verify_then_detect_a_flipped_byte(make_proxy, tmp_path, capsys):
    h = make_proxy(**recording(tmp_path))
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        time.sleep(0.3)  # chunk 0 (the start) closes a sealer tick after the login
        conn.execute("SELECT 'cli-marker-1' AS m").fetchall()
        time.sleep(0.3)  # let the first statement age into a chunk of its own
        conn.execute("SELECT name FROM public.customers WHERE id = %s", (2,)).fetchall()
    root, pub = tmp_path / "rec", str(tmp_path / "signing.key.pub")
    store = h.runtime.recorder.store
    report = wait_status(store, sid, public_key(tmp_path), "closed")
    assert report.chunks >= 3
    capsys.readouterr()

    assert cli_main(["replay", "--store", str(root), "--public-key", pub, sid]) == 0
    out = capsys.readouterr().out
    assert f"-- verify: {sid}: intact, closed" in out
    assert "=> 'SELECT ''cli-marker-1'' AS m'" in out  # (a literal: session 37)
    assert "=> parse: 'SELECT name FROM public.customers WHERE id = $1'" in out
    assert "=> bind: $1=" in out
    assert "Grace" in out and "<= SELECT 1" in out
    assert "session ended: terminate" in out

    assert cli_main(["verify", "--all", "--store", str(root), "--public-key", pub]) == 0
    out = capsys.readouterr().out
    assert f"{sid}: intact, closed" in out
    assert re.search(r"^(\d+) sessions verified, 0 failed$", out, re.M), out

    # the installed entry point, as an auditor would run it
    proc = subprocess.run([str(VENV_BIN / "pgwitness"), "verify", "--store", str(root),
                           "--public-key", pub, "--require-closed", sid],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "intact, closed" in proc.stdout

    # flip one byte in the middle of chunk 1's compressed body (files are 0444)
    victim = root / chunks.chunk_key(sid, 1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 + 20 if len(data) > 80 else -2] ^= 0x01
    os.chmod(victim, 0o644)
    victim.write_bytes(bytes(data))
    os.chmod(victim, 0o444)

    assert cli_main(["verify", "--all", "--store", str(root), "--public-key", pub]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "0000000001.chunk" in out and "modified" in out
    assert "attested through chunk 0" in out
    assert re.search(r"^\d+ sessions verified, 1 failed$", out, re.M), out
    proc = subprocess.run([str(VENV_BIN / "pgwitness"), "verify", "--store", str(root),
                           "--public-key", pub, sid], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "0000000001.chunk" in proc.stdout


# --- recorder failure: refuse rather than serve unrecorded -------------------------------


def test_refused_statement_is_counted(make_proxy, tmp_path):
    """Regression (fixed in 8e2b2b6): only refused connections were counted."""
    h = make_proxy(**recording(tmp_path, **SWAPPABLE, **{"recorder.fail_after_seconds": 0.2,
                                            "recorder.retry_max_seconds": 0.1}))
    rec = h.runtime.recorder
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        one_live_session(h)
        rec.store = flaky = FlakyStore(rec.store)
        flaky.down = True
        conn.execute("SELECT 'fails-to-upload'")
        wait_for(lambda: not rec.healthy, 5.0, "the recorder to give up")
        before = refused_unrecorded()
        with pytest.raises(psycopg.errors.CannotConnectNow):
            conn.execute("SELECT 1")
        flaky.down = False
        wait_for(lambda: refused_unrecorded() >= before + 1, 3.0, "the refusal to be counted")


def test_recorder_metrics_show_a_failing_store_before_and_after_refusal(make_proxy, tmp_path):
    """From /metrics alone an SRE sees chunks being stored, then a store failing: errors,
    seconds failing, the spool growing, health 0; then recovery."""
    h = make_proxy(**recording(tmp_path, **SWAPPABLE, **{"recorder.fail_after_seconds": 0.5,
                                            "recorder.retry_max_seconds": 0.1}))
    rec = h.runtime.recorder
    objects0 = metric("pgwitness_recorder_objects_stored_total")
    chunks0 = metric("pgwitness_recorder_chunks_total")
    errors0 = metric("pgwitness_recorder_store_errors_total")
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        one_live_session(h)
        conn.execute("SELECT 'stored'")
        wait_for(lambda: metric("pgwitness_recorder_objects_stored_total") > objects0, 5.0,
                 "stored chunks to be counted")
        assert metric("pgwitness_recorder_chunks_total") > chunks0
        assert metric("pgwitness_recorder_chunk_bytes_total") > 0
        assert metric("pgwitness_recorder_healthy") == 1
        rec.store = flaky = FlakyStore(rec.store)
        flaky.down = True
        conn.execute("SELECT 'while the store is down'")
        wait_for(lambda: metric("pgwitness_recorder_healthy") == 0, 5.0, "health 0")
        assert metric("pgwitness_recorder_store_errors_total") > errors0
        assert metric("pgwitness_recorder_store_failing_seconds") > 0
        assert metric("pgwitness_recorder_spool_bytes") > 0
        flaky.down = False
        wait_for(lambda: metric("pgwitness_recorder_healthy") == 1
                 and metric("pgwitness_recorder_store_failing_seconds") == 0
                 and metric("pgwitness_recorder_spool_bytes") == 0, 10.0, "recovery")
        conn.execute("SELECT 'after recovery'")


def s3_recording(tmp_path: Path, s3, prefix: str, **extra) -> dict:
    return recording(tmp_path, **{
        "recorder.store": s3.store_url(prefix),
        "recorder.s3_endpoint": s3.endpoint,
        "recorder.s3_region": s3.region,
        "recorder.s3_access_key_id": s3.access_key,
        "recorder.s3_secret_access_key": s3.secret_key,
        "recorder.retry_max_seconds": 0.3,
        **extra,
    })


@pytest.mark.timeout(90)
def test_store_outage_refuses_then_recovers_by_itself(make_proxy, tmp_path, s3):
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    h = make_proxy(**s3_recording(tmp_path, s3, prefix, **{"recorder.fail_after_seconds": 1.0}))
    rec, pub = h.runtime.recorder, public_key(tmp_path)
    issued: list[str] = []  # every Query the client sent, in order (refused ones too)
    ran: list[str] = []  # the ones that ran

    def run(sql: str) -> None:
        issued.append(sql)
        conn.execute(sql)
        ran.append(sql)

    conn = psycopg.connect(h.dsn(), autocommit=True)
    try:
        sid = one_live_session(h)
        for i in range(3):
            run(f"SELECT 'before-outage-{i}'")
        wait_for(lambda: rec.status["objects_stored"] >= 4 and not rec.status["spool_batches"], 5.0,
                 "the first chunks to reach S3")
        connections_before = refused_unrecorded("connection")

        s3.stop()
        # statements run (and are spooled) until the store has failed for fail_after_seconds
        k = 0

        def refused():
            nonlocal k
            k += 1
            try:
                run(f"SELECT 'probe-{k}'")
            except psycopg.errors.CannotConnectNow as e:
                return e, rec.status
            return None

        err, status = wait_for(refused, 15.0, "a statement to be refused", 0.1)
        assert status["store_failing_seconds"] >= 1.0, "refused before the failure budget was spent"
        assert status["store_errors"] > 0
        assert err.sqlstate == "57P03"
        assert "cannot record" in str(err)
        with pytest.raises(psycopg.errors.CannotConnectNow):
            run("SELECT 'refused-again'")
        assert not rec.healthy

        with pytest.raises(asyncpg.CannotConnectNowError) as refused_conn:
            asyncio.run(asyncpg.connect(**h.connect_kwargs(), ssl=False, timeout=10))
        assert "cannot record" in str(refused_conn.value)
        assert refused_unrecorded("connection") == connections_before + 1
        assert spooled(tmp_path), "nothing waits in the spool during the outage"

        s3.start()
        t_up = time.monotonic()

        def works():
            try:
                run("SELECT 'after-recovery'")
            except psycopg.errors.CannotConnectNow:
                issued.pop()  # keep `issued` readable: one entry per attempt is recorded anyway
                issued.append("SELECT 'after-recovery'")
                return False
            return True

        attempts_before = len(issued)
        wait_for(works, 10.0, "statements to be accepted again", 0.2)
        assert time.monotonic() - t_up < 10.0
        with psycopg.connect(h.dsn(), autocommit=True) as other:
            assert other.execute("SELECT 'second-session'").fetchone() == ("second-session",)
        refused_after_up = len(issued) - attempts_before - 1
    finally:
        conn.close()
        s3.start()

    store = s3.store(prefix)
    report = wait_status(store, sid, pub, "closed", 10.0)
    assert not report.problems  # includes the COMPLIANCE lock check of every object
    wait_for(lambda: not spooled(tmp_path), 5.0, "the spool to drain")
    recs = records(store, sid)
    assert [r.seq for r in recs] == list(range(len(recs)))
    queries = [_cstr(b, 0)[0] for t, b in frames(recs, Direction.C2S) if t == "Q"]
    assert queries == issued, "the recording lost or reordered statements"
    rows = [_data_row(b, []) for t, b in frames(recs, Direction.S2C) if t == "D"]
    expected_rows = [[sql.split("'")[1]] for sql in ran]
    assert rows == expected_rows
    refusals = [r.json() for r in recs if r.kind == Kind.DECISION and r.type == "deny"]
    assert len(refusals) == len(issued) - len(ran) == 2 + refused_after_up
    assert all(r["outcome"] == "denied" and "cannot record" in r["error"] for r in refusals)
    assert end_record(recs)["cause"] == "terminate"


# --- a crashed proxy: kill -9, restart on the same spool and store -----------------------


def write_config(path: Path, pg, tmp_path: Path, s3, prefix: str, port: int) -> None:
    path.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
startup_timeout = 5.0
shutdown_grace = 0.0

[upstream]
host = "localhost"
port = {pg.port}
user = "pgwitness"
password = "{pg.users['pgwitness']}"
sslmode = "verify-full"
sslrootcert = "{pg.ca_cert}"

[auth]
users = {{ {STATIC_USER} = "{STATIC_PASSWORD}" }}

[recorder]
store = "{s3.store_url(prefix)}"
s3_endpoint = "{s3.endpoint}"
s3_region = "{s3.region}"
s3_access_key_id = "{s3.access_key}"
s3_secret_access_key = "{s3.secret_key}"
spool_dir = "{tmp_path / 'spool'}"
signing_key = "{tmp_path / 'signing.key'}"
chunk_max_seconds = 0.2
retry_max_seconds = 0.3

[metrics]
listen = ""
""")


def start_serve(
    write: Callable[[int], None], config: Path, log: Path
) -> tuple[subprocess.Popen, int]:
    """``pgwitness serve`` on a port from free_port (``write(port)`` writes its config): the
    process and its port, once it listens (on new ports when one was taken meanwhile)."""
    from devtools.localpg import PortTaken, on_free_ports, wait_serving

    def attempt() -> tuple[subprocess.Popen, int]:
        port = free_port()
        write(port)
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(VENV_BIN / "pgwitness"), "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def since() -> str:
            return log.read_bytes()[offset:].decode(errors="replace")

        try:
            wait_serving(proc, since, lambda text: "listening" in text, timeout=20.0)
        except PortTaken:
            proc.wait(10)
            raise
        except Exception:
            proc.kill()
            raise AssertionError(
                "pgwitness serve did not listen:\n" + log.read_text()[-3000:]
            ) from None
        return proc, port

    return on_free_ports(attempt)


@pytest.mark.timeout(90)
def test_kill_9_then_restart_drains_the_spool(pg, tmp_path, s3):
    prefix = f"crash-{uuid.uuid4().hex[:8]}"
    config, log = tmp_path / "pgwitness.toml", tmp_path / "serve.log"
    write = lambda port: write_config(config, pg, tmp_path, s3, prefix, port)  # noqa: E731
    dsn = f"host=127.0.0.1 port={{port}} user={STATIC_USER} password={STATIC_PASSWORD} dbname=app"
    store, pub = s3.store(prefix), None
    proc, port = start_serve(write, config, log)
    try:
        pub = public_key(tmp_path)
        conn = psycopg.connect(dsn.format(port=port), autocommit=True)
        conn.execute("SELECT 'crash-1'")
        conn.execute("SELECT 'crash-2'")
        sid = wait_for(lambda: user_sessions(store), 5.0, "the session in S3")[0]
        wait_for(lambda: any(b"crash-2" in r.payload for r in records(store, sid))
                 and verify_session(store, sid, pub).status == "open", 5.0,
                 "the second statement in S3, checkpoint included")
        # the store goes away: what follows is sealed into the spool only
        s3.stop()
        conn.execute("SELECT 'crash-3-spooled-only'")
        time.sleep(0.6)  # > chunk_max_seconds: sealed and spooled
        assert spooled(tmp_path)
        conn.execute("SELECT 'crash-4-maybe-lost'")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        conn.close()
        assert spooled(tmp_path), "the spool lost batches the store never got"
        s3.start()
        report = verify_session(store, sid, pub)
        assert report.status == "open", report.summary()  # a crash is not tampering
        assert not any(b"crash-3" in r.payload for r in records(store, sid))

        proc, port = start_serve(write, config, log)  # same spool, same store
        wait_for(lambda: not spooled(tmp_path), 10.0, "the restarted proxy to drain the spool")
        report = verify_session(store, sid, pub)
        assert report.status == "open" and not report.problems, report.summary()
        assert "intact but OPEN, attested through chunk" in report.summary()
        recs = records(store, sid)
        assert [r.seq for r in recs] == list(range(len(recs)))
        assert not any(r.kind == Kind.META and r.type == "session.end" for r in recs)
        queries = [_cstr(b, 0)[0] for t, b in frames(recs, Direction.C2S) if t == "Q"]
        expected = ["SELECT 'crash-1'", "SELECT 'crash-2'", "SELECT 'crash-3-spooled-only'",
                    "SELECT 'crash-4-maybe-lost'"]
        assert queries in (expected[:3], expected), queries
        assert start_meta(recs)["agent"] == STATIC_USER

        # and the restarted proxy records new sessions as usual
        with psycopg.connect(dsn.format(port=port), autocommit=True) as again:
            again.execute("SELECT 'after-restart'")
        metas = lambda: {s: start_meta(records(store, s)) for s in store.sessions()}  # noqa: E731
        new = wait_for(lambda: [s for s, m in metas().items() if s != sid and m.get("agent")],
                       5.0, "the new session")
        assert len(new) == 1
        wait_status(store, new[0], pub, "closed", 10.0)
        # the restarted recorder says, in its own control stream, that it recovered a spool
        controls = [s for s, m in metas().items() if m.get("stream") == "control"]
        recovered = [r.json() for c in controls for r in records(store, c)
                     if r.kind == Kind.CONTROL and r.type == "recorder.spool_recovered"]
        assert len(recovered) == 1 and recovered[0]["batches"] >= 1
        assert set(os.listdir(tmp_path / "spool")) <= {"slot-0", "slot-1"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        s3.start()
    assert proc.returncode == 0, log.read_text()[-3000:]


# --- regressions and edge cases ----------------------------------------------------------


class CheckpointsFail(FlakyStore):
    """Stores chunks but fails every checkpoint put while `down` (a store failing mid-batch)."""

    def put(self, key: str, data: bytes) -> None:
        if self.down and key.endswith(".ckpt"):
            raise __import__("recorder.store", fromlist=["StoreError"]).StoreError("ckpt put fails (test)")
        self.inner.put(key, data)


def test_live_session_with_checkpoint_in_flight_is_open_not_tampered(make_proxy, tmp_path):
    """Regression: a stored chunk whose checkpoint is not (yet) stored — an upload in flight,
    or a store failing between the two puts — is an unattested open tail, not tampering."""
    h = make_proxy(**recording(tmp_path, **SWAPPABLE, **{"recorder.retry_max_seconds": 0.1}))
    rec, pub = h.runtime.recorder, public_key(tmp_path)
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        inner = rec.store
        time.sleep(0.5)  # everything so far ages into chunks (chunk_max_seconds = 0.2)
        wait_for(lambda: not rec.status["spool_batches"], 3.0, "the spool to drain")
        n = wait_status(inner, sid, pub, "open").attested_through
        assert len(inner.list(chunks.session_prefix(sid))) == 2 * (n + 1)
        rec.store = flaky = CheckpointsFail(inner)
        flaky.down = True
        conn.execute("SELECT 'in-flight'")
        wait_for(lambda: inner.list(chunks.chunk_key(sid, n + 1)), 3.0, "the next chunk stored")
        report = verify_session(inner, sid, pub)
        flaky.down = False
        assert report.status == "open", report.summary()
        assert report.attested_through == n


def test_revocation_committed_late_still_ends_the_session(make_proxy, tmp_path):
    """Regression: the watch cursor must trail by a margin, or a revocation whose updated_at
    is older than the previous poll (commit lag, a writer clock a little behind) is missed."""
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    grant, token = issue_grant(h)
    with psycopg.connect(h.dsn(user="billing-bot", password=token), autocommit=True) as conn:
        one_live_session(h)
        conn.execute("SELECT 1")
        time.sleep(0.5)  # a few polls: the proxy's cursor is now ~0.2 s behind its clock
        # updated_at 0.5 s in the past, as a slow commit or a slightly slow clock produce
        revoke_from_another_host(tmp_path, grant.id, -0.5)
        wait_for(lambda: not live_session_ids(h), 3.0, "the revoked session to end")


def test_many_clean_sessions_all_close(make_proxy, tmp_path):
    """Cleanly ended sessions get their FINAL checkpoint, however end() meets the sealer
    (regression test for the end()/time-based sealer race; chunks age out every 50 ms)."""
    import random
    import threading

    h = make_proxy(**recording(tmp_path, **{"recorder.chunk_max_seconds": 0.05}))
    rec, pub = h.runtime.recorder, public_key(tmp_path)
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.12) for _ in range(24)]

    def one(delay: float) -> None:
        with psycopg.connect(h.dsn(), autocommit=True) as conn:
            conn.execute("SELECT 'stress'")
            time.sleep(delay)

    threads = [threading.Thread(target=one, args=(d,)) for d in delays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_for(lambda: rec.status["live_sessions"] <= 1 and not rec.status["spool_batches"], 5.0,
             "every session sealed and stored")  # the control stream stays live
    sessions = user_sessions(rec.store)
    assert len(sessions) == len(delays)
    reports = [verify_session(rec.store, sid, pub) for sid in sessions]
    assert [r.summary() for r in reports if r.status != "closed"] == []


def test_proxy_shutdown_closes_live_sessions_and_control_stream(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path))
    conn = psycopg.connect(h.dsn(), autocommit=True)
    try:
        sid = one_live_session(h)
        conn.execute("SELECT 'before-shutdown'")
        store = h.runtime.recorder.store
        h.stop(grace=0.0)  # shutdown ends the session, then the recorder closes and uploads
    finally:
        conn.close()
    pub = public_key(tmp_path)
    report = verify_session(store, sid, pub)
    assert report.status == "closed", report.summary()
    assert end_record(records(store, sid))["cause"] == "shutdown"
    assert not spooled(tmp_path)
    for other in store.sessions():  # the control stream too: ended and sealed, not left open
        assert verify_session(store, other, pub).status == "closed"


def test_refusal_inside_a_transaction_and_in_extended_protocol(make_proxy, tmp_path):
    """While unrecorded, statements are refused also where the proxy cannot answer locally
    (open transaction: the server raises for us and aborts it; extended protocol), every
    refusal is recorded, and the session works again once the store is back."""
    h = make_proxy(**recording(tmp_path, **SWAPPABLE, **{"recorder.fail_after_seconds": 0.2,
                                            "recorder.retry_max_seconds": 0.1}))
    rec = h.runtime.recorder
    inner = rec.store
    flaky = FlakyStore(inner)
    rec.store = flaky

    def outage(on: bool) -> None:
        flaky.down = on
        if on:
            conn.execute("SELECT 'nudge'")  # something to upload, so the failure is noticed
        wait_for(lambda: rec.healthy is not on, 5.0, f"healthy={not on}")

    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("BEGIN")
        conn.execute("SELECT 'in-tx-ok'")
        outage(True)
        with pytest.raises(psycopg.errors.CannotConnectNow, match="cannot record"):
            conn.execute("SELECT 'in-tx-refused'")
        outage(False)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 'in-tx-after'")
        conn.execute("ROLLBACK")
        outage(True)
        with pytest.raises(psycopg.errors.CannotConnectNow, match="cannot record"):
            conn.execute("SELECT %s::text AS ext", ("ext-refused",))
        outage(False)
        assert conn.execute("SELECT %s::text AS ext", ("ext-ok",)).fetchone() == ("ext-ok",)
    wait_status(inner, sid, public_key(tmp_path), "closed")
    recs = records(inner, sid)
    refusals = [r.json() for r in recs if r.kind == Kind.DECISION and r.type == "deny"]
    assert [r["message"] for r in refusals] == ["Query", "Parse"]
    assert all("cannot record" in r["error"] for r in refusals)
    c2s = frames(recs, Direction.C2S)
    assert "SELECT 'in-tx-refused'" in [_cstr(b, 0)[0] for t, b in c2s if t == "Q"]
    assert [_bind(b)[2] for t, b in c2s if t == "B"] == [["ext-refused"], ["ext-ok"]]
    errors = [_fields(b) for t, b in frames(recs, Direction.S2C) if t == "E"]
    assert [e["C"] for e in errors] == ["57P03", "25P02", "57P03"]
    assert all("pgwitness-deny" not in str(e) for e in errors)  # marker cleaned off


def test_verify_all_detects_a_deleted_and_a_truncated_session(make_proxy, tmp_path, capsys):
    h = make_proxy(**recording(tmp_path))
    sids = []
    for i in range(2):
        with psycopg.connect(h.dsn(), autocommit=True) as conn:
            sids.append(one_live_session(h))
            conn.execute(f"SELECT 'index-{i}'")
            time.sleep(0.3)  # a chunk of its own, so truncation leaves something behind
            conn.execute(f"SELECT 'index-{i}-b'")
    rec, pub = h.runtime.recorder, public_key(tmp_path)
    for sid in sids:
        wait_status(rec.store, sid, pub, "closed")
    time.sleep(0.5)  # the control stream's index entries age into a chunk
    wait_for(lambda: not rec.status["spool_batches"], 3.0, "the spool to drain")
    root, pubpath = tmp_path / "rec", str(tmp_path / "signing.key.pub")
    assert cli_main(["verify", "--all", "--store", str(root), "--public-key", pubpath]) == 0
    capsys.readouterr()

    deleted, truncated = sids
    ddir = root / chunks.session_prefix(deleted)
    for f in ddir.iterdir():
        f.unlink()
    ddir.rmdir()
    last = max(chunks.parse_name(f.name)[0] for f in (root / chunks.session_prefix(truncated)).iterdir())
    (root / chunks.chunk_key(truncated, last)).unlink()
    (root / chunks.ckpt_key(truncated, last)).unlink()
    assert verify_session(rec.store, truncated, pub).status == "open"  # alone it cannot tell

    assert cli_main(["verify", "--all", "--store", str(root), "--public-key", pubpath]) == 1
    out = capsys.readouterr().out
    lines = {sid: [ln for ln in out.splitlines() if sid in ln] for sid in sids}
    assert any("TAMPERED" in ln for ln in lines[deleted]), out
    assert any("TAMPERED" in ln for ln in lines[truncated]), out
    assert "deleted" in out and "truncated" in out


@pytest.mark.parametrize("upstream_user", ["md5user", "plainuser"])
def test_upstream_md5_and_cleartext_logins_leave_no_secret(make_proxy, pg, tmp_path, upstream_user):
    import hashlib

    password = pg.users[upstream_user]
    h = make_proxy(**recording(tmp_path, **{"upstream.user": upstream_user,
                                            "upstream.password": password}))
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        assert conn.execute("SELECT current_user").fetchone() == (upstream_user,)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    assert start_meta(records(store, sid))["upstream_user"] == upstream_user
    md5_inner = hashlib.md5((password + upstream_user).encode()).hexdigest().encode()
    assert_absent(tmp_path / "rec", [password.encode(), md5_inner, STATIC_PASSWORD.encode(),
                                     *SASL_MARKERS])


def test_password_message_after_login_is_not_recorded(make_proxy, tmp_path):
    """A PasswordMessage after login is a protocol violation; its content (a password, say)
    must not end up in the recording ("Password, SASL and GSS messages are never recorded").
    Regression (fixed in 8e2b2b6): the run was recorded before the frame type was checked."""
    from common.wire import messages as m
    from tests.support.rawpg import RawClient

    h = make_proxy(**recording(tmp_path))
    with RawClient(h.host, h.port) as c:
        c.login()
        sid = one_live_session(h)
        assert c.scalar("SELECT 'raw-ok'") == "raw-ok"
        c.send(m.password_message(b"leaked-secret-9\x00"))
        fatal = [f for f in c.frames_until_eof() if f[:1] == b"E"]
        assert fatal and m.decode_error_fields(fatal[-1])["C"] == "08P01"
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    assert end_record(records(store, sid))["cause"] == "protocol_error"
    assert_absent(tmp_path / "rec", [b"leaked-secret-9"])


def test_cancel_is_recorded_as_an_event(make_proxy, tmp_path):
    # a raw CancelRequest: psycopg's conn.cancel() holds the GIL while it waits, which
    # deadlocks against a proxy running in this very process
    import struct

    from common.wire import messages as m
    from tests.support.rawpg import RawClient

    h = make_proxy(**recording(tmp_path))
    with RawClient(h.host, h.port, timeout=10) as c:
        key = [f for f in c.login() if f[:1] == b"K"][0]
        pid, secret = struct.unpack_from("!i", key, 5)[0], key[9:]
        sid = one_live_session(h)
        c.send(m.query("SELECT pg_sleep(10)"))
        time.sleep(0.3)
        with socket.create_connection((h.host, h.port), timeout=5) as cs:
            cs.sendall(struct.pack("!iii", 12 + len(secret), 80877102, pid) + secret)
            assert cs.recv(1) == b""  # the proxy closes the cancel connection
        answer = c.frames_until_ready()
        errors = [m.decode_error_fields(f) for f in answer if f[:1] == b"E"]
        assert [e["C"] for e in errors] == ["57014"]
        c.send(m.TERMINATE)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    recs = records(store, sid)
    cancels = [r for r in recs if r.kind == Kind.META and r.type == "cancel"]
    assert len(cancels) == 1 and cancels[0].json()["from"].startswith("127.0.0.1:")
    sleep_q = next(r for r in recs if r.kind == Kind.WIRE and b"pg_sleep" in r.payload)
    assert sleep_q.seq < cancels[0].seq
    errors = [_fields(b) for t, b in frames(recs, Direction.S2C) if t == "E"]
    assert [e["C"] for e in errors] == ["57014"]


def test_large_result_spans_many_chunks(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path, **{"recorder.chunk_max_bytes": 16384}))
    sql = "SELECT g, repeat('x', 100) || g FROM generate_series(1, 5000) g"
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        assert len(conn.execute(sql).fetchall()) == 5000
    store = h.runtime.recorder.store
    report = wait_status(store, sid, public_key(tmp_path), "closed")
    assert report.chunks >= 4 and not report.problems
    s2c = frames(records(store, sid), Direction.S2C)
    rows = [_data_row(b, []) for t, b in s2c if t == "D"]
    assert rows == [[str(g), "x" * 100 + str(g)] for g in range(1, 5001)]
    assert "SELECT 5000" in [_cstr(b, 0)[0] for t, b in s2c if t == "C"]


def test_upstream_terminating_the_backend_ends_with_upstream(make_proxy, pg, tmp_path):
    h = make_proxy(**recording(tmp_path))
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        pid = conn.info.backend_pid
        with psycopg.connect(pg.dsn("pgwitness", db="app"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: not live_session_ids(h), 5.0, "the session to end")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    recs = records(store, sid)
    assert end_record(recs)["cause"] == "upstream"
    fatal = [_fields(b) for t, b in frames(recs, Direction.S2C) if t == "E"]
    assert fatal and fatal[-1]["S"] == "FATAL" and fatal[-1]["C"] == "57P01"


def test_copy_in_is_recorded_exactly(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path))
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("CREATE TEMP TABLE copied (id int, note text)")
        with conn.cursor().copy("COPY copied FROM STDIN") as copy:
            copy.write(b"1\tcopy-in-alpha\n")
            copy.write(b"2\tcopy-in-beta\n")
        assert conn.execute("SELECT count(*) FROM copied").fetchone() == (2,)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    recs = records(store, sid)
    c2s = frames(recs, Direction.C2S)
    assert b"".join(b for t, b in c2s if t == "d") == b"1\tcopy-in-alpha\n2\tcopy-in-beta\n"
    assert [t for t, _ in c2s if t in ("d", "c", "f")][-1] == "c"  # CopyDone, no CopyFail
    s2c = frames(recs, Direction.S2C)
    assert [t for t, _ in s2c].count("G") == 1  # CopyInResponse
    assert "COPY 2" in [_cstr(b, 0)[0] for t, b in s2c if t == "C"]


# --- the recorder behind: sessions wait, nobody is refused -------------------------------


def test_a_session_outrunning_the_recorder_waits_for_it_and_others_are_not_refused(
    make_proxy, tmp_path
):
    """Red-team round 20b: one agent streaming rows faster than the sealer seals them
    pushed the recorder past max_memory_bytes, where the health gate refused every
    session's statements (57P03) and wire() slept on the event loop. A session is now not
    read while the recorder holds more than half its memory unsealed. Here the threshold
    is forced to nothing, so every read of a busy session waits for the sealer: the big
    results arrive whole, another session's statements all succeed, the recording verifies
    and holds every byte."""
    h = make_proxy(**recording(tmp_path))
    rec = h.runtime.recorder
    store = rec.store
    waits0 = metric("pgwitness_recorder_waits_total")
    rec._soft_limit = 1 << 20  # behind at a chunk unsealed (64 MiB / 2 by default)
    big = "SELECT i, repeat(md5(i::text), 2000) FROM generate_series(1, 100) i"
    expected = [(i, hashlib.md5(str(i).encode()).hexdigest() * 2000) for i in range(1, 101)]
    refused = []
    sids: list[str] = []

    async def other(conn):
        for n in range(40):
            try:
                assert await conn.fetchval("SELECT $1::int + 1", n) == n + 1
            except asyncpg.PostgresError as exc:
                refused.append(exc.sqlstate)

    async def go():
        a = await asyncpg.connect(**h.connect_kwargs(), ssl=False, timeout=10)
        b = await asyncpg.connect(**h.connect_kwargs(), ssl=False, timeout=10)
        sids.extend(await asyncio.to_thread(live_session_ids, h))
        try:
            rows, _ = await asyncio.gather(a.fetch(big), other(b))
        finally:
            await a.close()
            await b.close()
        return rows

    rows = asyncio.run(go())
    assert [tuple(r) for r in rows] == expected
    assert refused == []
    assert metric("pgwitness_recorder_waits_total") > waits0
    assert rec.healthy
    assert len(sids) == 2, sids
    for sid in sids:
        report = wait_status(store, sid, public_key(tmp_path), "closed")
        assert report.ok and not report.problems
    recorded = sum(
        len(data) for sid in sids
        for t, data in frames(records(store, sid), Direction.S2C) if t == "D"
    )  # fmt: skip
    assert recorded >= 100 * 64_000  # every DataRow of the result, whole
