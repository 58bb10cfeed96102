"""replay transcripts and the keygen/verify/replay sub-commands."""

import argparse
import io
import os
import struct

import pytest

from devtools import testing
from recorder import chunks, cli
from recorder.config import RecorderConfig
from recorder.records import Direction, Kind, Record
from recorder.replay import Transcript, replay_session, split_frames
from recorder.store.local import LocalStore
from recorder.writer import Recorder


def test_split_frames_keeps_the_incomplete_rest():
    buf = testing.query("select 1") + testing.sync()
    for cut in range(len(buf) + 1):
        frames, rest = split_frames(buf[:cut])
        assert b"".join(bytes([ord(t)]) + struct.pack(">i", len(b) + 4) + b for t, b in frames) + rest == buf[:cut]
    frames, rest = split_frames(buf)
    assert frames == [("Q", b"select 1\x00"), ("S", b"")] and rest == b""


def record(tmp_path, keyfile):
    store = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"),
                         signing_key=str(keyfile), upload_process=False)  # a unit test: no child
    rec = Recorder.from_config(cfg)
    rec.start()
    s = rec.open_session({"agent": "agent-7", "task": "refund-audit", "grant": "g1"})
    s.event("auth", {"outcome": "ok", "method": "scram-sha-256"})
    s.wire("c2s", testing.query("select id, note from refunds"))
    s.decision({"rule": "scope.read", "sql": "select id, note from refunds"}, denied=False)
    s.wire("s2c", testing.row_description("id", "note") + testing.data_row("1", "dup charge")
           + testing.data_row("22", None) + testing.command_complete("SELECT 2")
           + testing.ready())
    s.wire("c2s", testing.parse("update refunds set note = $1 where id = $2", "s1")
           + testing.bind([b"ok", b"22"], "s1") + testing.execute() + testing.sync())
    s.decision({"rule": "deny.write", "reason": "task refund-audit may not write public.refunds"},
               denied=True)
    s.wire("s2c", testing.error("42501", "permission denied by pgwitness") + testing.ready())
    s.wire("s2c", testing.notice("relation exists, skipping"))
    s.wire("c2s", testing.query("delete from refunds"))
    s.decision({"outcome": "would_deny", "sql": "delete from refunds", "statements": [
        {"sql": "delete from refunds", "allowed": False, "rule": "scope.write",
         "reason": "public.refunds not writable"}]}, denied=True)
    s.end("client-exit")
    rec.close()
    return store, s.id


@pytest.fixture
def keyfile(tmp_path):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["keygen", "--out", str(tmp_path / "keys" / "rec.pem")])
    assert args.func(args) == 0
    assert args.func(args) == 1  # never overwrites
    return tmp_path / "keys" / "rec.pem"


def test_transcript_shows_statements_decisions_and_results(tmp_path, keyfile):
    store, sid = record(tmp_path, keyfile)
    out = io.StringIO()
    assert replay_session(store, sid, out) == 12
    text = out.getvalue()
    for expected in [
        f"-- session {sid} started", "agent='agent-7'", "task='refund-audit'",
        "=> 'select id, note from refunds'", "ok allowed scope.read",
        " id |    note", "1  | dup charge", "22 | NULL", "(2 rows)", "<= SELECT 2",
        "=> parse s1: 'update refunds set note = $1 where id = $2'",
        "=> bind s1: $1='ok', $2='22'",
        "!! DENIED deny.write: 'task refund-audit may not write public.refunds'",
        "<= ERROR 42501: 'permission denied by pgwitness'",
        "<= NOTICE 00000: 'relation exists, skipping'",
        "?? WOULD DENY (dry-run, allowed) scope.write: 'public.refunds not writable'",
        "-- session ended: client-exit",
    ]:
        assert expected in text, f"{expected!r} not in\n{text}"


def test_transcript_survives_garbage_frames():
    out = io.StringIO()
    tr = Transcript(out)
    bad_row = testing.frame(b"D", b"\x00\x05")  # claims 5 columns, has none
    tr.feed(Record(0, 0, Direction.S2C, Kind.WIRE, "D", bad_row + testing.data_row("7")))
    tr.feed(Record(1, 5, Direction.C2S, Kind.WIRE, "B", testing.frame(b"B", b"\x00")))
    tr.close()
    text = out.getvalue()
    assert "undecodable 'D' frame" in text and "undecodable 'B' frame" in text
    assert "column1" in text and " 7" in text


def run(*argv) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_verify_and_replay(tmp_path, keyfile, capsys):
    store, sid = record(tmp_path, keyfile)
    pub = f"{keyfile}.pub"
    url = f"file://{store.root}"
    assert run("verify", "--store", url, "--public-key", pub, sid) == 0
    assert "intact, closed" in capsys.readouterr().out
    assert run("verify", "--store", str(store.root), "--public-key", pub, "--all") == 0
    assert run("replay", "--store", url, "--public-key", pub, sid) == 0
    out = capsys.readouterr().out
    assert "-- verify:" in out and "DENIED deny.write" in out
    # tamper: flip a byte in the last chunk
    last = sorted((store.root / chunks.session_prefix(sid)).glob("*.chunk"))[-1]
    last.chmod(0o644)
    data = bytearray(last.read_bytes())
    data[-1] ^= 1
    last.write_bytes(bytes(data))
    os.chmod(last, 0o444)
    assert run("verify", "--store", url, "--public-key", pub, "--all") == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "modified" in out
    assert run("verify", "--store", url, "--public-key", pub, "--json", sid) == 1
    assert '"ok": false' in capsys.readouterr().out
    assert run("verify", "--store", url, "--public-key", pub) == 2  # neither ids nor --all


def test_replay_follow_tails_a_live_session(tmp_path, keyfile):
    import threading
    import time

    store = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"),
                         signing_key=str(keyfile), chunk_max_seconds=0.05, upload_process=False)
    rec = Recorder.from_config(cfg)
    rec.start()
    s = rec.open_session({"agent": "live"})
    out = io.StringIO()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "n", replay_session(store, s.id, out, follow=True, poll_seconds=0.02, follow_timeout=10)))
    t0 = time.monotonic()
    t.start()
    for i in range(5):
        s.wire("c2s", testing.query(f"select {i}"))
        time.sleep(0.05)
    s.end("client-exit")
    t.join(10)
    elapsed = time.monotonic() - t0
    rec.close()
    assert not t.is_alive() and result["n"] == 7
    assert elapsed < 5, "follow did not notice the final checkpoint"
    assert "=> 'select 4'" in out.getvalue() and "session ended: client-exit" in out.getvalue()
