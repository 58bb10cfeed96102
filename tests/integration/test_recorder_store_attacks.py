"""A writer of the local store (not of the signing key) against the recorder and verify
(red-team round 10). Objects planted at keys as symlinks or FIFOs, a spool batch made
unreadable, an anchor log that names nothing: each must end in a conflict copy, a
refusal or a failed verification, never in a silent pass or a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.store.local import LocalStore
from recorder.verify import verify_session
from recorder.writer import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def _cfg(tmp_path: Path, **kw) -> RecorderConfig:
    return RecorderConfig(store=str(tmp_path / "store"), spool_dir=str(tmp_path / "spool"),
                          chunk_max_seconds=30, fsync=False, **kw)


def _lowest_free_fd(pid: int) -> int:
    used = {int(x) for x in os.listdir(f"/proc/{pid}/fd")}
    n = 0
    while n in used:
        n += 1
    return n


def test_a_symlink_at_a_key_is_a_planted_object_not_a_stored_one(tmp_path):
    """Store-writer plants, at a live session's next chunk key, a symlink to
    /proc/self/fd/<the fd the upload process will open for that object>. put_many's
    link() fails (EEXIST), the comparison reads the uploader's own O_TMPFILE through
    the symlink and found 'the same bytes': the object was booked as stored and the spool
    batch deleted, with no copy anywhere. Objects are now read without following links
    and only as regular files, so this is a planted object: a conflict copy is kept in
    the spool and stored under a conflict key."""
    cfg = _cfg(tmp_path)
    rec = Recorder(cfg, signing_key=KEY)
    rec.start()
    store = LocalStore(tmp_path / "store")
    assert rec._uploads is not None
    assert rec._uploads.ready.wait(10)
    s = rec.open_session({"agent": "a", "task": "t"})
    s.wire("c2s", testing.query("select 'chunk zero'"))
    wait_for(lambda: len(store.list(chunks.session_prefix(s.id))) >= 2, 10, "chunk 0 stored")
    wait_for(lambda: not rec.status["spool_batches"], 10, "spool drained")
    time.sleep(0.5)
    pid = rec._uploads.pid
    fd = _lowest_free_fd(pid)
    target = store.root / chunks.chunk_key(s.id, 1)
    os.symlink(f"/proc/self/fd/{fd}", target)
    # a statement that is denied: its chunk is sealed at once, alone in its batch
    s.wire("c2s", testing.query("select secret from payroll -- the evidence"))
    s.decision({"rule": "deny", "statement": "select secret from payroll"}, denied=True)
    wait_for(lambda: (rec.status["objects_stored"] >= 6 or rec.status["conflicts"])
             and not rec.status["spool_batches"], 10, "the denial's chunk dealt with")
    conflicts = rec.status["conflicts"]
    s.end("client-exit")
    rec.close()
    kept = list((tmp_path / "spool" / "conflicts").glob("*")) if (tmp_path / "spool" / "conflicts").exists() else []
    stored_alt = [k for k in store.list(chunks.session_prefix(s.id)) if "/conflicts/" in k]
    is_link = target.is_symlink()
    target.unlink()  # the attacker tidies up: the key now simply lacks chunk 1
    rep = verify_session(store, s.id, PUB)
    assert is_link, "the planted link was gone: the test proves nothing"
    assert conflicts == 1, "the object at the key was taken for ours"
    assert len(kept) == 1 and len(stored_alt) == 1, (kept, stored_alt)
    assert store.get(stored_alt[0]) == kept[0].read_bytes()  # the denial's chunk, kept twice
    assert rep.status != "closed"  # and verify still says the key itself is not ours


def test_a_spool_batch_that_cannot_be_read_does_not_let_the_proxy_serve_on(tmp_path):
    """The oldest spool batch becomes unreadable (here: its file replaced by a directory
    while the upload process is stopped). Every later batch waits behind it for ever.
    past fail_after_seconds with no upload finished the recorder stays unhealthy (the
    proxy refuses), as docs/operations.md says for 'no upload finished'. (This held when
    round 10 ran; it stays as a regression test.)"""
    import signal

    cfg = _cfg(tmp_path, fail_after_seconds=1.0)
    cfg.chunk_max_seconds = 0.2
    rec = Recorder(cfg, signing_key=KEY)
    rec.start()
    assert rec._uploads.ready.wait(10)
    s = rec.open_session({"agent": "a", "task": "t"})
    s.wire("c2s", testing.query("select 1"))
    wait_for(lambda: rec.status["objects_stored"] >= 2 and not rec.status["spool_batches"], 10,
             "first objects stored")
    pid = rec._uploads.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        s.wire("c2s", testing.query("select 'waits in the spool'"))
        wait_for(lambda: rec.status["spool_batches"] >= 1, 10, "a batch spooled")
        oldest = sorted((tmp_path / "spool").rglob("*.spool"))[0]
        oldest.unlink()
        oldest.mkdir()  # unreadable from now on
    finally:
        os.kill(pid, signal.SIGCONT)
    t_end = time.monotonic() + 6.0
    samples = []
    i = 0
    while time.monotonic() < t_end:
        i += 1
        s.wire("c2s", testing.query(f"select {i} -- served while nothing is stored"))
        samples.append((round(time.monotonic() - (t_end - 6.0), 2), rec.healthy))
        time.sleep(0.05)
    late = [h for t, h in samples if t > 3.0]
    stored_after = rec.status["objects_stored"]
    status = rec.status
    rec.close(timeout=1)
    assert not any(late), (
        f"with nothing uploaded for 3-6 s (fail_after_seconds=1) the recorder was healthy in "
        f"{sum(late)} of {len(late)} samples; spool batches waiting: {status['spool_batches']}, "
        f"objects stored: {stored_after}; last error: {status['last_error']}")


def test_a_fifo_at_a_key_does_not_hang_verify(tmp_path):
    """A store writer replaces an object by a FIFO. verify reports it (within
    seconds) instead of hanging for ever (an audit job that never ends attests nothing)."""
    import subprocess
    import sys

    cfg = _cfg(tmp_path)
    store = LocalStore(tmp_path / "store")
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    s = rec.open_session({"agent": "a"})
    s.wire("c2s", testing.query("select 1"))
    s.end("client-exit")
    rec.close()
    pub = tmp_path / "pub.pem"
    from cryptography.hazmat.primitives import serialization
    pub.write_bytes(PUB.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    clean = subprocess.run([sys.executable, "-m", "proxy.cli", "verify", "--all", "--store",
                            str(store.root), "--public-key", str(pub)], capture_output=True,
                           text=True, timeout=20, cwd=ROOT)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    key = store.root / chunks.chunk_key(s.id, 0)
    key.unlink()
    os.mkfifo(key)
    os.chmod(key, 0o444)
    try:
        p = subprocess.run([sys.executable, "-m", "proxy.cli", "verify", "--all", "--store",
                            str(store.root), "--public-key", str(pub)], capture_output=True,
                           text=True, timeout=20, cwd=ROOT)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        out = None
    assert out is not None, "pgwitness verify --all hung on a FIFO planted at a chunk key"
    assert "TAMPERED" in out, out


def _record(tmp_path: Path, name: str, meta: dict, statements: list[str]) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / name)
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / f"spool-{name}"),
                         chunk_max_seconds=30, fsync=False)
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    s = rec.open_session(meta)
    for q in statements:
        s.wire("c2s", testing.query(q))
        s.decision({"rule": "scope.read"}, denied=False)
        s.wire("s2c", testing.command_complete("SELECT 1") + testing.ready())
    s.end("client-exit")
    rec.close()
    return store, s.id


def test_an_anchor_log_that_names_no_stream_is_not_a_pass(tmp_path):
    """verify --all --anchor LOG where LOG has no 'control stream head' line at all
    (proxy logging at warning, the wrong file, a format the parser does not read).
    The anchor must not pass vacuously: verify fails and says why."""
    import shutil
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization

    b, sid = _record(tmp_path, "store", {"agent": "x"}, ["select 1"])
    ctl = [s for s in b.sessions() if s != sid]
    # the attacker deletes the session together with its control stream
    shutil.rmtree(b.root / chunks.session_prefix(sid))
    for c in ctl:
        shutil.rmtree(b.root / chunks.session_prefix(c))
    _, other = _record(tmp_path, "store", {"agent": "y"}, ["select 2"])  # store not empty
    pub = tmp_path / "pub.pem"
    pub.write_bytes(PUB.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    log = tmp_path / "proxy.log"
    log.write_text("2026-12-04T10:00:00 warning recorder: something unrelated\n")
    p = subprocess.run([sys.executable, "-m", "proxy.cli", "verify", "--all", "--store",
                        str(b.root), "--public-key", str(pub), "--anchor", str(log)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode != 0, "verify --anchor with a log naming no control stream passed"
