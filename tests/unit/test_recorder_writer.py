"""Recorder/SessionRecorder: chunk cutting, spool, outages, health, crash recovery, memory."""

import os
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from devtools.testing import FlakyStore
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.records import Kind
from recorder.replay import iter_records
from recorder.signing import State, decode_checkpoint
from recorder.store import ObjectExists
from recorder.store.local import LocalStore
from recorder.verify import verify_session
from recorder.writer import Recorder, RecorderClosed
from tests.support.wait import wait_for

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


@pytest.fixture
def make(tmp_path):
    made = []

    def make(store=None, **kw):
        local = LocalStore(tmp_path / "store")
        kw.setdefault("spool_dir", str(tmp_path / "spool"))
        cfg = RecorderConfig(store=str(local.root), **kw)
        rec = Recorder(cfg, store=store if store is not None else local, signing_key=KEY)
        rec.start()
        made.append(rec)
        return rec

    yield make
    for r in made:
        r.close(timeout=1)


def ckpts(store, sid):
    prefix = chunks.session_prefix(sid)
    return [decode_checkpoint(store.get(k)) for k in store.list(prefix) if k.endswith(".ckpt")]


# -- local store -------------------------------------------------------------------------------

def test_local_store_creates_once_read_only(tmp_path):
    s = LocalStore(tmp_path)
    s.put("sessions/a/b", b"one")
    p = tmp_path / "sessions/a/b"
    assert p.read_bytes() == b"one"
    assert p.stat().st_mode & 0o777 == 0o444
    s.put("sessions/a/b", b"one")  # idempotent retry (lost reply) is fine
    with pytest.raises(ObjectExists):
        s.put("sessions/a/b", b"two")
    assert p.read_bytes() == b"one"
    assert s.check("sessions/a/b") == []
    assert not [f for f in os.listdir(tmp_path / "sessions/a") if f.startswith(".tmp")]
    with pytest.raises(ValueError):
        s.put("sessions/../x", b"")


def test_local_store_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    LocalStore(tmp_path).put("sessions/x/obj", b"data")
    d = str(tmp_path / "sessions/x")
    assert any(p.startswith(d + "/.tmp-obj") for p in synced)  # file content, before link
    assert synced[-1] == d  # directory entry, after link
    assert str(tmp_path / "sessions") in synced  # new directories too


# -- chunk cutting -----------------------------------------------------------------------------

def test_start_chunk_closes_at_once(make):
    rec = make(chunk_max_seconds=60)
    s = rec.open_session({"agent": "a"})
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 1, 2, "chunk 0")
    (r,) = iter_records(rec.store, s.id)
    assert r.type == "session.start" and r.json()["meta"] == {"agent": "a"}


def test_a_session_ending_within_a_tick_is_sealed_once(tmp_path):
    """The start does not force chunk 0 (it is due a sealer tick later): a session that
    connects, runs one statement and closes is one final chunk with one signature, and
    verifies complete. (The recorder is started after the session ends, so no tick can
    pass in between on a loaded machine.)"""
    local = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(local.root), spool_dir=str(tmp_path / "spool"))
    rec = Recorder(cfg, store=local, signing_key=KEY)
    s = rec.open_session({"agent": "a"})
    assert not s._force  # (it was: chunk 0 closed at once, a chunk and a checkpoint more)
    s.wire("c2s", testing.query("SELECT 1"))
    s.end("client-terminate")
    rec.start()
    rec.close(timeout=10)
    assert [c.state for c in ckpts(local, s.id)] == [State.FINAL]
    recs = list(iter_records(local, s.id))
    assert len(recs) == 3 and (recs[0].type, recs[2].type) == ("session.start", "session.end")
    assert verify_session(local, s.id, PUB).status == "closed"


def test_sessions_ending_within_a_tick_share_one_spool_batch(tmp_path):
    """end() does not wake the sealer: the sessions that end within a tick are sealed in
    one pass, one spool batch (one fsync) for all of them, and each still closes with its
    own final checkpoint and verifies. (Ended before start(), so the first tick sees all.)"""
    local = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(local.root), spool_dir=str(tmp_path / "spool"))
    rec = Recorder(cfg, store=local, signing_key=KEY)
    sessions = [rec.open_session({"agent": "a", "k": k}) for k in range(5)]
    for s in sessions:
        s.wire("c2s", testing.query("SELECT 1"))
        s.end("client-terminate")
        assert not s._force
    assert not rec._wake.is_set()  # (it was: one wake-up, chunk and spool batch per session)
    batches = []
    write = rec._spool.write

    def spy(entries):
        batches.append({chunks.parse_name(k.rsplit("/", 1)[1]) and k.rsplit("/", 2)[-2]
                        for k, _ in entries})
        return write(entries)

    rec._spool.write = spy  # type: ignore[method-assign]
    rec.start()
    try:
        wait_for(lambda: all(ckpts(local, s.id) for s in sessions), 5, "final chunks")
        ids = {s.id for s in sessions}
        assert [b for b in batches if b & ids] == [batches[0]]  # one batch holds them all
        assert ids <= batches[0]
    finally:
        rec.close(timeout=10)
    for s in sessions:
        assert [c.state for c in ckpts(local, s.id)] == [State.FINAL]
        assert verify_session(local, s.id, PUB).status == "closed"


def test_allowed_decision_fast_path_appends_what_the_reference_does(tmp_path):
    """``decision_json`` for an allowed statement appends inline; the same records (header
    fields but the clock, type, body) and counters as the reference ``_append_body``."""
    from recorder.records import HEADER

    local = LocalStore(tmp_path / "store")
    rec = Recorder(RecorderConfig(store=str(local.root), spool_dir=str(tmp_path / "spool")),
                   store=local, signing_key=KEY)
    fast, ref = rec.open_session({"agent": "a"}), rec.open_session({"agent": "a"})
    for i, (body, denied) in enumerate([(b'{"a":1}', False), (b'{"b":2}', True), (b"{}", False)]):
        fast.wire("c2s", b"Q%d" % i)
        ref.wire("c2s", b"Q%d" % i)
        fast.decision_json(body, denied)
        ref._append_body(int(Kind.DECISION), b"deny" if denied else b"allow", body,
                         denied and rec.healthy)

    def records(s):
        items = list(s._buf)[2:]  # after session.start (its session id differs)
        heads = [HEADER.unpack_from(h) for h in items[::2]]
        return ([h[:1] + h[2:] for h in heads], [h[HEADER.size:] for h in items[::2]],
                items[1::2], s._seq, s._in, s._force)

    assert records(fast) == records(ref)
    rec.close(timeout=1)


def test_chunk_closes_on_size(make):
    rec = make(chunk_max_bytes=4000, chunk_max_seconds=60)
    s = rec.open_session({})
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 1)
    row = testing.data_row("x" * 995)  # 1004 bytes
    for _ in range(20):
        s.wire("s2c", row)
    wait_for(lambda: len(ckpts(rec.store, s.id)) >= 6, 3, "size-cut chunks")
    sizes = [c.next_seq - c.first_seq for c in ckpts(rec.store, s.id)[1:]]
    assert all(n <= 4 for n in sizes), sizes


def test_chunk_closes_on_age(make):
    rec = make(chunk_max_seconds=0.3)
    s = rec.open_session({})
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 1)
    t0 = time.monotonic()
    s.wire("c2s", testing.query("select 1"))
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 2, 3, "age-cut chunk")
    assert 0.2 < time.monotonic() - t0 < 1.5


def test_a_busy_session_is_cut_by_age_not_into_slivers(make):
    """Records appended while a chunk is being compressed and signed wait for the next cut:
    a session written to without pause still gets about one chunk per chunk_max_seconds."""
    import threading

    rec = make(chunk_max_seconds=0.2, chunk_max_bytes=256 << 20)  # only age cuts here
    s = rec.open_session({})
    q = testing.query("select abalance from pgbench_accounts where aid = 1")
    stop = time.monotonic() + 1.5
    written = 0

    def produce():
        nonlocal written
        while time.monotonic() < stop:
            for _ in range(50):
                s.wire("c2s", q)
            written += 50
            time.sleep(0)  # let the sealer run between bursts, as the event loop does

    t = threading.Thread(target=produce)
    t.start()
    t.join()
    s.end("terminate")
    wait_for(lambda: any(c.state == State.FINAL for c in ckpts(rec.store, s.id)), 5, "final")
    n = len(ckpts(rec.store, s.id))
    # start chunk + ~1.5 s / 0.2 s age cuts + final; slivers would make this hundreds
    assert 3 <= n <= 14, n
    assert written > 1000
    assert verify_session(rec.store, s.id, KEY.public_key()).status == "closed"


def test_deny_closes_chunk_at_once(make):
    rec = make(chunk_max_seconds=60)
    s = rec.open_session({})
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 1)
    s.wire("c2s", testing.query("drop table t"))
    s.decision({"rule": "deny.ddl", "reason": "DDL not granted"}, denied=False)
    time.sleep(0.2)
    assert len(ckpts(rec.store, s.id)) == 1  # an allow does not cut
    s.decision({"rule": "deny.ddl", "reason": "DDL not granted"}, denied=True)
    wait_for(lambda: len(ckpts(rec.store, s.id)) == 2, 1, "deny-cut chunk")
    last = list(iter_records(rec.store, s.id))[-1]
    assert last.kind == Kind.DECISION and last.json()["denied"] is True


def test_end_writes_final_checkpoint_and_ignores_later_calls(make):
    rec = make(chunk_max_seconds=60)
    s = rec.open_session({})
    s.wire("c2s", testing.query("select 1"))
    s.end("client-exit", "bye")
    s.wire("c2s", testing.query("select 2"))  # after end: ignored, never an error
    wait_for(lambda: ckpts(rec.store, s.id) and ckpts(rec.store, s.id)[-1].state == State.FINAL)
    recs = list(iter_records(rec.store, s.id))
    assert recs[-1].type == "session.end" and recs[-1].json() == {"cause": "client-exit", "detail": "bye"}
    assert [r.seq for r in recs] == list(range(len(recs)))
    assert verify_session(rec.store, s.id, PUB).status == "closed"


def test_wire_copies_reused_buffers(make):
    rec = make(chunk_max_seconds=60)
    s = rec.open_session({})
    buf = bytearray(testing.query("select 1"))
    s.wire("c2s", memoryview(buf))
    buf[5:11] = b"XXXXXX"
    s.end("done")
    wait_for(lambda: verify_session(rec.store, s.id, PUB).status == "closed")
    assert list(iter_records(rec.store, s.id))[1].payload == testing.query("select 1")


def test_control_events_form_their_own_signed_stream(make):
    rec = make()
    rec.control_event("grant.issued", {"grant": "g1", "agent": "a"})
    rec.control_event("grant.revoked", {"grant": "g1", "by": "alice"})
    rec.close()
    (sid,) = rec.store.sessions()
    r = verify_session(rec.store, sid, PUB)
    assert r.status == "closed"
    recs = list(iter_records(rec.store, sid))
    assert recs[0].json()["meta"] == {"stream": "control"}
    assert [(x.kind, x.type) for x in recs[1:3]] == [(Kind.CONTROL, "grant.issued"),
                                                     (Kind.CONTROL, "grant.revoked")]
    assert recs[-1].type == "session.end"
    with pytest.raises(RecorderClosed):
        rec.control_event("grant.expired", {})


def test_close_ends_live_sessions(make):
    rec = make()
    s = rec.open_session({})
    s.wire("c2s", testing.query("select 1"))
    rec.close()
    r = verify_session(rec.store, s.id, PUB)
    assert r.status == "closed"
    assert list(iter_records(rec.store, s.id))[-1].json()["cause"] == "recorder-shutdown"


# -- outages, health, spool ----------------------------------------------------------------------

def test_outage_is_spooled_and_drains_in_order(make, tmp_path):
    store = FlakyStore(LocalStore(tmp_path / "store"))
    store.down = True
    rec = make(store=store, fail_after_seconds=0.3, chunk_max_seconds=0.05)
    sessions = [rec.open_session({"i": i}) for i in range(3)]
    for i in range(30):
        for s in sessions:
            s.wire("c2s", testing.query(f"select {i}"))
        if i % 10 == 0:
            sessions[0].decision({"rule": "deny.write"}, denied=True)
        time.sleep(0.01)
    for s in sessions[:2]:
        s.end("client-exit")
    wait_for(lambda: not rec.healthy, 3, "unhealthy after fail_after_seconds")
    assert store.puts == [] and store.failures > 0
    slot = Path(rec._spool.slot)
    assert list(slot.glob("*.spool"))
    assert rec.status["spool_bytes"] > 0 and "down" in rec.status["last_error"]

    store.down = False
    wait_for(lambda: rec.status["spool_batches"] == 0, 5, "spool drained")
    wait_for(lambda: rec.healthy, 2, "healthy again")
    assert not list(slot.glob("*.spool"))
    # per session, objects arrived strictly in order: chunk 0, ckpt 0, chunk 1, ...
    for s in sessions:
        keys = [k for k in store.puts if s.id in k]
        assert keys == sorted(keys) and len(keys) >= 4
    sessions[2].end("client-exit")
    rec.close()
    for s in sessions:
        r = verify_session(store, s.id, PUB)
        assert r.status == "closed", r.summary()
        assert sum(1 for x in iter_records(store, s.id) if x.kind == Kind.WIRE) == 30


def test_unhealthy_past_spool_byte_budget(make, tmp_path):
    store = FlakyStore(LocalStore(tmp_path / "store"))
    store.down = True
    rec = make(store=store, fail_after_seconds=3600, fail_after_bytes=20_000,
               chunk_max_seconds=0.05)
    s = rec.open_session({})
    assert rec.healthy
    for _ in range(60):
        s.wire("s2c", testing.data_row(os.urandom(300).hex()))
    wait_for(lambda: not rec.healthy, 3, "unhealthy past byte budget")
    assert rec.status["spool_bytes"] > 20_000
    store.down = False
    wait_for(lambda: rec.healthy, 5, "healthy after drain")
    s.end("x")


class HangingStore(FlakyStore):
    """Every put blocks while ``hang`` is clear: a store that neither answers nor fails."""

    def __init__(self, inner):
        super().__init__(inner)
        self.released = threading.Event()
        self.released.set()

    def put(self, key: str, data: bytes) -> None:
        self.released.wait()
        super().put(key, data)


def test_a_hanging_store_is_unhealthy_after_fail_after_seconds(make, tmp_path):
    """No error ever comes back, so only the silence can tell: batches waiting with no
    finished upload for fail_after_seconds count as a failing store."""
    store = HangingStore(LocalStore(tmp_path / "store"))
    rec = make(store=store, fail_after_seconds=0.3, chunk_max_seconds=0.05)
    s = rec.open_session({})
    s.wire("c2s", testing.query("SELECT 'first'"))
    wait_for(lambda: not rec.status["spool_batches"] and store.puts, 3, "the first upload")
    assert rec.healthy
    store.released.clear()
    s.wire("c2s", testing.query("SELECT 'hangs'"))
    wait_for(lambda: not rec.healthy, 3, "unhealthy while the store hangs")
    assert "no upload has finished" in rec.status["last_error"]
    store.released.set()
    wait_for(lambda: rec.healthy and not rec.status["spool_batches"], 5, "healthy after it answers")
    s.end("x")


def test_two_recorders_never_share_a_spool_slot(tmp_path, make):
    a = make()
    b = make()
    assert a._spool.slot != b._spool.slot


def test_memory_stays_bounded_with_a_slow_store(make, tmp_path):
    store = FlakyStore(LocalStore(tmp_path / "store"), delay=0.05)
    limit = 256 * 1024
    rec = make(store=store, max_memory_bytes=limit, chunk_max_bytes=64 * 1024,
               chunk_max_seconds=0.05, fsync=False, fail_after_bytes=1 << 40)
    s = rec.open_session({})
    row = testing.data_row(os.urandom(2000).hex())
    peak = 0
    t0 = time.monotonic()
    for _ in range(4000):  # 16 MB through a store that takes 50 ms per object
        s.wire("s2c", row)
        peak = max(peak, rec.status["memory_bytes"])
    elapsed = time.monotonic() - t0
    assert peak <= 2 * limit + 2 * 64 * 1024 + len(row), peak
    assert rec.status["spool_bytes"] > 0  # the backlog went to disk, not to memory
    assert elapsed < 30
    s.end("done")


def test_every_session_gets_its_final_checkpoint_under_concurrency(make):
    """end() racing the sealer must still produce exactly one final chunk per session."""
    import threading

    rec = make(chunk_max_seconds=0.01, chunk_max_bytes=500)
    ids = []

    def worker(k):
        for _ in range(10):
            s = rec.open_session({"k": k})
            for i in range(20):
                s.wire("c2s", testing.query(f"select {i}"))
                if i % 7 == 0:
                    s.decision({"rule": "deny.x"}, denied=True)
            s.end("client-exit")
            ids.append(s.id)

    def granter():
        for i in range(50):
            rec.control_event("grant.issued", {"i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=granter))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close(timeout=10)
    for sid in ids:
        r = verify_session(rec.store, sid, PUB)
        assert r.status == "closed" and r.records == 1 + 20 + 3 + 1, r.summary()
    (ctl,) = [sid for sid in rec.store.sessions() if sid not in ids]
    recs = list(iter_records(rec.store, ctl))
    assert [x.json()["i"] for x in recs if x.type == "grant.issued"] == list(range(50))
    index = [x.json()["session"] for x in recs if x.type == "session.closed"]
    assert sorted(index) == sorted(ids)
    assert verify_session(rec.store, ctl, PUB).status == "closed"


def test_spool_disk_failure_is_unhealthy_and_loses_nothing(make, monkeypatch):
    from recorder.spool import Spool, SpoolError

    real = Spool.write
    broken = {"on": True}

    def write(self, entries):
        if broken["on"]:
            raise SpoolError("No space left on device (test)")
        return real(self, entries)

    monkeypatch.setattr(Spool, "write", write)
    rec = make(chunk_max_seconds=0.05)
    s = rec.open_session({})
    for i in range(10):
        s.wire("c2s", testing.query(f"select {i}"))
    wait_for(lambda: not rec.healthy, 3, "unhealthy while the spool cannot be written")
    assert "No space left" in rec.status["last_error"]
    broken["on"] = False
    wait_for(lambda: rec.healthy, 3, "healthy once the spool works again")
    s.end("x")
    rec.close()
    recs = list(iter_records(rec.store, s.id))
    assert sum(1 for r in recs if r.kind == Kind.WIRE) == 10
    assert verify_session(rec.store, s.id, PUB).status == "closed"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_thread_is_unhealthy(make):
    rec = make()
    assert rec.healthy
    s = rec.open_session({})
    # a bug in the sealer, as it would show: a record it cannot cut kills the thread
    s._buf.extend((None, None))
    s._force = True
    rec._wake.set()
    wait_for(lambda: not rec.healthy, 3, "unhealthy after the sealer died")
    assert not rec._threads[0].is_alive()
