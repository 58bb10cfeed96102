"""The recorder's upload process (recorder/upload_process.py), attacked as it runs.

A store named by URL is uploaded to by a process of its own. These tests break that
process and its store for real (no swapped store objects): kill it, signal it, take the
store away, kill its parent, and check the promise each time: nothing is served
unrecorded, nothing recorded is lost, and the recordings verify.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from recorder.verify import verify_session
from tests.support.recording import (
    end_record,
    one_live_session,
    public_key,
    recording,
    records,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(60)


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").rglob("*.spool"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child we have not reaped yet is a zombie: gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_store_url_is_uploaded_to_by_another_process(make_proxy, tmp_path):
    """The product's configuration: no uploader thread in the proxy's process; a child
    process stores every object, and the spool drains."""
    h = make_proxy(**recording(tmp_path))
    rec = h.runtime.recorder
    uploads = rec._uploads
    assert uploads is not None and uploads.pid not in (None, os.getpid())
    assert alive(uploads.pid)
    assert not [t for t in threading.enumerate() if t.name == "pgwitness-uploader"]
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("SELECT 'through the upload process'")
        wait_for(lambda: rec.status["objects_stored"] >= 2 and not rec.status["spool_batches"],
                 5.0, "objects stored by the upload process")
    pid = uploads.pid
    h.stop(grace=0.0)
    report = verify_session(rec.store, sid, public_key(tmp_path))
    assert report.status == "closed", report.summary()
    assert not spooled(tmp_path)
    wait_for(lambda: not alive(pid), 5.0, "the upload process to exit with the proxy")


def test_a_killed_upload_process_is_replaced_and_nothing_is_lost(make_proxy, tmp_path):
    """kill -9 of the upload process, twice, mid-session: another starts, gets every batch
    not yet stored, and the session's recording is complete and closed."""
    h = make_proxy(**recording(tmp_path, **{"recorder.retry_max_seconds": 0.1}))
    rec = h.runtime.recorder
    uploads = rec._uploads
    pub = public_key(tmp_path)
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        for k in range(2):
            victim = uploads.pid
            os.kill(victim, signal.SIGKILL)
            for i in range(20):  # statements go on while the uploads restart
                assert conn.execute(f"SELECT 'kill-{k}-{i}'").fetchone() == (f"kill-{k}-{i}",)
            wait_for(lambda v=victim: uploads.pid != v and alive(uploads.pid), 5.0,
                     "another upload process")
        assert uploads.restarts == 2
        wait_for(lambda: rec.healthy and not rec.status["spool_batches"], 5.0,
                 "the spool to drain through the new process")
    h.stop(grace=0.0)
    report = verify_session(rec.store, sid, pub)
    assert report.status == "closed", report.summary()
    sent = [r.payload for r in records(rec.store, sid)]
    for k in range(2):
        for i in range(20):
            assert any(f"kill-{k}-{i}".encode() in p for p in sent), (k, i)
    assert not spooled(tmp_path)


def test_sigterm_and_sigint_to_the_upload_process_do_not_end_it(make_proxy, tmp_path):
    """systemd and a terminal signal the whole process group: the upload process leaves its
    ending to the proxy, which closes it after the last batches."""
    h = make_proxy(**recording(tmp_path))
    uploads = h.runtime.recorder._uploads
    assert uploads.ready.wait(10), "the upload process never said it was ready"
    pid = uploads.pid
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert alive(pid) and uploads.pid == pid and uploads.restarts == 0


def test_a_store_taken_away_refuses_statements_then_recovers(make_proxy, tmp_path):
    """The local store's directory replaced by a file (root cannot write through that):
    the upload process fails, the proxy refuses statements once fail_after_seconds have
    passed, and when the store is back everything spooled is stored and verifies."""
    h = make_proxy(**recording(tmp_path, **{"recorder.fail_after_seconds": 0.3,
                                            "recorder.retry_max_seconds": 0.1}))
    rec = h.runtime.recorder
    root = Path(rec.store.root)
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("SELECT 'before the outage'")
        wait_for(lambda: rec.status["objects_stored"] >= 2 and not rec.status["spool_batches"],
                 5.0, "the first objects stored")
        errors0 = rec.status["store_errors"]
        aside = root.with_name("rec-aside")
        root.rename(aside)
        root.write_bytes(b"not a directory")
        try:
            conn.execute("SELECT 'during the outage'")
            wait_for(lambda: not rec.healthy, 5.0, "the recorder to report the store failing")
            assert rec.status["store_errors"] > errors0
            assert "rec" in rec.status["last_error"]
            with pytest.raises(psycopg.errors.CannotConnectNow):
                conn.execute("SELECT 'refused while unrecorded'")
            assert rec.status["spool_batches"] > 0
        finally:
            root.unlink()
            aside.rename(root)
        wait_for(lambda: rec.healthy and not rec.status["spool_batches"], 5.0,
                 "the spool to drain after the outage")
        assert conn.execute("SELECT 'after the outage'").fetchone() == ("after the outage",)
    h.stop(grace=0.0)
    report = verify_session(rec.store, sid, public_key(tmp_path))
    assert report.status == "closed", report.summary()
    payloads = b"".join(r.payload for r in records(rec.store, sid))
    for text in (b"before the outage", b"during the outage", b"after the outage"):
        assert text in payloads
    assert end_record(records(rec.store, sid))["cause"] == "terminate"


def test_the_upload_process_ends_with_a_crashed_proxy_and_its_spool_is_taken_over(tmp_path):
    """A proxy that dies (os._exit, no close) takes the upload process with it (its socket
    closes); the next recorder on the same spool stores what was left there (the store is a
    file while the first one runs, so its batches stay spooled)."""
    (tmp_path / "rec").write_bytes(b"not a directory")
    script = textwrap.dedent(f"""
        import os, sys, time
        from recorder.config import RecorderConfig
        from recorder.writer import Recorder
        cfg = RecorderConfig(store={str(tmp_path / 'rec')!r}, spool_dir={str(tmp_path / 'spool')!r},
                             signing_key={str(tmp_path / 'signing.key')!r}, fsync=False)
        rec = Recorder(cfg)
        rec.start()
        s = rec.open_session({{"test": "crash"}})
        s.wire("c2s", b"Q\\x00\\x00\\x00\\x0dSELECT 1\\x00")
        deadline = time.monotonic() + 5
        while rec._in != rec._out and time.monotonic() < deadline:
            time.sleep(0.01)
        print(rec._uploads.pid, s.id, flush=True)
        os._exit(3)
    """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 3, out.stderr
    pid, sid = out.stdout.split()
    wait_for(lambda: not alive(int(pid)), 5.0, "the orphaned upload process to exit")
    assert spooled(tmp_path), "nothing was left spooled: the test proves nothing"
    (tmp_path / "rec").unlink()

    from recorder.config import RecorderConfig
    from recorder.writer import Recorder

    rec = Recorder(RecorderConfig(store=str(tmp_path / "rec"), spool_dir=str(tmp_path / "spool"),
                                  signing_key=str(tmp_path / "signing.key"), fsync=False))
    rec.start()
    try:
        wait_for(lambda: not rec.status["spool_batches"], 10.0, "the leftover spool stored")
        assert records(rec.store, sid)[0].payload  # the crashed session's start is stored
    finally:
        rec.close(timeout=5.0)
    assert not spooled(tmp_path)


def test_an_upload_process_that_cannot_run_makes_the_proxy_refuse(make_proxy, tmp_path,
                                                                   monkeypatch):
    """A child that dies as it starts (here: a program that exits at once) stores nothing:
    the proxy counts that as a failing store and refuses statements after
    fail_after_seconds, rather than serve while nothing reaches the store."""
    from recorder import upload_process

    monkeypatch.setattr(upload_process, "_CHILD", "import sys; sys.exit(7)")
    h = make_proxy(**recording(tmp_path, **{"recorder.fail_after_seconds": 0.3}))
    rec = h.runtime.recorder
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        one_live_session(h)
        conn.execute("SELECT 'never stored'")
        wait_for(lambda: not rec.healthy, 10.0, "the recorder to give up on its uploads")
        assert rec.status["upload_restarts"] >= 1
        assert "code 7" in rec.status["last_error"]
        with pytest.raises(psycopg.errors.CannotConnectNow):
            conn.execute("SELECT 'refused: nothing reaches the store'")
    assert spooled(tmp_path), "the records wait in the spool"


def test_a_stopped_upload_process_makes_the_proxy_refuse_then_recovers(make_proxy, tmp_path):
    """SIGSTOP: the child neither stores nor answers nor dies (a store that hangs looks the
    same). Once batches have waited fail_after_seconds with no answer the proxy refuses;
    after SIGCONT everything is stored and the session goes on."""
    h = make_proxy(**recording(tmp_path, **{"recorder.fail_after_seconds": 0.5}))
    rec = h.runtime.recorder
    uploads = rec._uploads
    assert uploads.ready.wait(10)
    with psycopg.connect(h.dsn(), autocommit=True) as conn:
        sid = one_live_session(h)
        conn.execute("SELECT 'before the stop'")
        wait_for(lambda: rec.status["objects_stored"] >= 2 and not rec.status["spool_batches"],
                 5.0, "the first objects stored")
        os.kill(uploads.pid, signal.SIGSTOP)
        try:
            conn.execute("SELECT 'while it is stopped'")
            wait_for(lambda: not rec.healthy, 10.0, "the recorder to see the uploads stalled")
            assert "no upload has finished" in rec.status["last_error"]
            assert rec.status["store_failing_seconds"] > 0.5
            with pytest.raises(psycopg.errors.CannotConnectNow):
                conn.execute("SELECT 'refused while nothing is stored'")
        finally:
            os.kill(uploads.pid, signal.SIGCONT)
        wait_for(lambda: rec.healthy and not rec.status["spool_batches"], 10.0,
                 "the spool to drain after SIGCONT")
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
        assert uploads.restarts == 0
    h.stop(grace=0.0)
    report = verify_session(rec.store, sid, public_key(tmp_path))
    assert report.status == "closed", report.summary()
