"""verify_session against every tampering we can think of, on the local store."""

import hashlib
import os
import shutil
import stat

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.records import encode_record
from recorder.signing import Checkpoint, State, decode_checkpoint, key_id
from recorder.store.local import LocalStore
from recorder.verify import (
    BAD_SIGNATURE,
    EXTRA,
    MISSING,
    MODIFIED,
    REORDERED,
    UNLOCKED,
    verify_session,
)
from recorder.writer import Recorder
from tests.support.recorded_sessions import (
    KEY,
    PUB,
    last_n,
    path_of,
    record_session,
    relock,
    writable,
)


@pytest.fixture
def session(tmp_path):
    store, sid = record_session(tmp_path)
    return store, sid


def kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def test_intact_session_is_closed(session):
    store, sid = session
    r = verify_session(store, sid, PUB)
    assert r.status == "closed", r.summary()
    assert r.ok and not r.problems
    assert r.chunks == last_n(store, sid) + 1 >= 5
    assert r.records == 1 + 12 * 3 + 1
    assert r.attested_through == last_n(store, sid)


def test_flipped_byte_in_a_chunk(session):
    store, sid = session
    p = writable(path_of(store, sid, 2, "chunk"))
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x40
    p.write_bytes(bytes(data))
    relock(store, sid)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered"
    assert [(p.kind, p.where) for p in r.problems] == [(MODIFIED, "0000000002.chunk")]
    assert r.attested_through == 1


def test_deleted_chunk_and_checkpoint(session):
    store, sid = session
    path_of(store, sid, 3, "chunk").unlink()
    path_of(store, sid, 3, "ckpt").unlink()
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and kinds(r) == {MISSING}
    assert "chunk 3 and its checkpoint" in str(r.problems[0])
    assert r.attested_through == 2


def test_deleted_chunk_only(session):
    store, sid = session
    path_of(store, sid, 1, "chunk").unlink()
    r = verify_session(store, sid, PUB)
    assert (MISSING, "0000000001.chunk") in [(p.kind, p.where) for p in r.problems]


def test_deleted_checkpoint_only(session):
    store, sid = session
    path_of(store, sid, 1, "ckpt").unlink()
    r = verify_session(store, sid, PUB)
    assert (MISSING, "0000000001.ckpt") in [(p.kind, p.where) for p in r.problems]


def test_swapped_chunks(session):
    store, sid = session
    a, b = path_of(store, sid, 1, "chunk"), path_of(store, sid, 2, "chunk")
    tmp = a.with_name("x")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered"
    assert {(p.kind, p.where) for p in r.problems} >= {
        (REORDERED, "0000000001.chunk"), (REORDERED, "0000000002.chunk")}


def test_swapped_chunk_and_checkpoint_pairs(session):
    store, sid = session
    for kind in ("chunk", "ckpt"):
        a, b = path_of(store, sid, 1, kind), path_of(store, sid, 2, kind)
        tmp = a.with_name("x")
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and REORDERED in kinds(r)


def test_truncated_tail_is_not_closed(session):
    store, sid = session
    last = last_n(store, sid)
    path_of(store, sid, last, "chunk").unlink()
    path_of(store, sid, last, "ckpt").unlink()
    r = verify_session(store, sid, PUB)
    assert r.status == "open", r.summary()  # indistinguishable from a live/crashed session...
    assert r.attested_through == last - 1  # ...but never "closed", and says how far it is proven
    assert "OPEN" in r.summary() and f"through chunk {last - 1}" in r.summary()


def test_whole_session_deleted_is_not_found(session):
    store, sid = session
    shutil.rmtree(store.root / chunks.session_prefix(sid))
    r = verify_session(store, sid, PUB)
    assert r.status == "empty" and not r.ok


def test_checkpoint_replaced_by_another_sessions(tmp_path, session):
    store, sid = session
    other_store, other = record_session(tmp_path / "other")
    src = path_of(other_store, other, 2, "ckpt")
    dst = writable(path_of(store, sid, 2, "ckpt"))
    dst.write_bytes(src.read_bytes())
    relock(store, sid)
    r = verify_session(store, sid, PUB)
    assert (REORDERED, "0000000002.ckpt") in [(p.kind, p.where) for p in r.problems]


def test_checkpoint_replaced_by_an_earlier_one(session):
    store, sid = session
    dst = writable(path_of(store, sid, 3, "ckpt"))
    dst.write_bytes(path_of(store, sid, 2, "ckpt").read_bytes())
    relock(store, sid)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and REORDERED in kinds(r)


def _resign_from(store, sid, start: int, key: Ed25519PrivateKey, kid: bytes, edit=None):
    """An attacker rewrites chunk `start` and re-chains/re-signs everything after it."""
    zc = zstandard.ZstdCompressor()
    prev = decode_checkpoint(path_of(store, sid, start - 1, "ckpt").read_bytes()).chain
    for n in range(start, last_n(store, sid) + 1):
        cp = writable(path_of(store, sid, n, "chunk"))
        blob = cp.read_bytes()
        if edit is not None and n == start:
            h, recs = chunks.decode_chunk(blob)
            raw = b"".join(encode_record(r.seq, r.t_ns, r.direction, r.kind, r.type,
                                         edit(r.payload)) for r in recs)
            blob = chunks.encode_chunk(sid, n, h.first_seq, h.record_count, raw, zc)
            cp.write_bytes(blob)
        digest = hashlib.sha256(blob).digest()
        prev = chunks.chain_next(prev, n, digest)
        kp = writable(path_of(store, sid, n, "ckpt"))
        old = decode_checkpoint(kp.read_bytes())
        new = Checkpoint(sid, n, prev, digest, old.state, old.first_seq, old.next_seq,
                         old.time_ns, kid).signed(key)
        kp.write_bytes(new.encode())
    relock(store, sid)


def test_resigned_with_another_key(session):
    store, sid = session
    evil = Ed25519PrivateKey.generate()
    _resign_from(store, sid, 2, evil, key_id(evil.public_key()),
                 edit=lambda p: p.replace(b"select", b"SELECT"))
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and kinds(r) == {BAD_SIGNATURE}
    assert "untrusted key id" in r.problems[0].detail
    assert r.attested_through == 1
    # with the attacker's key the forgery is self-consistent; that is why the key is pinned
    assert verify_session(store, sid, [PUB, evil.public_key()]).status == "closed"


def test_resigned_claiming_the_trusted_key_id(session):
    store, sid = session
    evil = Ed25519PrivateKey.generate()
    _resign_from(store, sid, 2, evil, key_id(PUB), edit=lambda p: p.replace(b"select", b"SELECT"))
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and kinds(r) == {BAD_SIGNATURE}
    assert "does not verify" in r.problems[0].detail


def test_extra_chunk_after_the_final_checkpoint(session):
    store, sid = session
    last = last_n(store, sid)
    src = path_of(store, sid, last, "chunk")
    dst = path_of(store, sid, last + 1, "chunk")
    dst.write_bytes(src.read_bytes())
    dst.chmod(0o444)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered"
    nxt = f"{last + 1:010d}"
    assert {(EXTRA, f"{nxt}.chunk"), (MISSING, f"{nxt}.ckpt")} <= {
        (p.kind, p.where) for p in r.problems}


def test_extra_chunk_inserted_in_the_middle(session):
    store, sid = session
    last = last_n(store, sid)
    # shift chunks 3.. up by one and put a copy of chunk 1 at 3
    for n in range(last, 2, -1):
        for kind in ("chunk", "ckpt"):
            os.rename(path_of(store, sid, n, kind), path_of(store, sid, n + 1, kind))
    for kind in ("chunk", "ckpt"):
        shutil.copy(path_of(store, sid, 1, kind), path_of(store, sid, 3, kind))
    relock(store, sid)
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered" and REORDERED in kinds(r)
    assert r.attested_through == 2


def test_unknown_object_in_session_dir(session):
    store, sid = session
    p = store.root / chunks.session_prefix(sid) / "notes.txt"
    p.write_bytes(b"hi")
    p.chmod(0o444)
    r = verify_session(store, sid, PUB)
    assert (EXTRA, "notes.txt") in [(p.kind, p.where) for p in r.problems]


def test_writable_object_is_reported(session):
    store, sid = session
    path_of(store, sid, 0, "chunk").chmod(0o644)
    r = verify_session(store, sid, PUB)
    assert kinds(r) == {UNLOCKED}


def test_open_session_is_attested_through_its_last_checkpoint(tmp_path):
    import time

    from recorder.replay import iter_records

    store = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"))
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    s = rec.open_session({})
    s.decision({"rule": "deny.unknown"}, denied=True)

    def deny_stored():
        keys = store.list(chunks.session_prefix(s.id))
        if not keys or not keys[-1].endswith(".ckpt"):
            return False
        return any(r.type == "deny" for r in iter_records(store, s.id))

    deadline = time.monotonic() + 5
    while not deny_stored() and time.monotonic() < deadline:
        time.sleep(0.01)
    r = verify_session(store, s.id, PUB)
    assert r.status == "open" and r.ok and r.attested_through == last_n(store, s.id)
    rec.close()
    r = verify_session(store, s.id, PUB)
    assert r.status == "closed"
    final = decode_checkpoint(path_of(store, s.id, r.chunks - 1, "ckpt").read_bytes())
    assert final.state == State.FINAL
    assert stat.S_IMODE(path_of(store, s.id, 0, "chunk").stat().st_mode) == 0o444


def test_trailing_chunk_without_its_checkpoint_is_open_not_tampered(tmp_path):
    """Between the chunk put and the checkpoint put a live session looks like this."""
    store, sid = record_session(tmp_path)
    last = last_n(store, sid)
    path_of(store, sid, last, "ckpt").unlink()
    r = verify_session(store, sid, PUB)
    assert r.status == "open" and r.attested_through == last - 1, r.summary()
    assert "not attested" in r.summary()
    # ...but a checkpoint missing anywhere else is tampering
    path_of(store, sid, 1, "ckpt").unlink()
    assert verify_session(store, sid, PUB).status == "tampered"


def _two_sessions(tmp_path):
    store = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"),
                         chunk_max_bytes=120)
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    ids = []
    for k in range(2):
        s = rec.open_session({"k": k})
        for i in range(5):
            s.wire("c2s", testing.query(f"select {i} -- session {k}"))
        s.end("client-exit")
        ids.append(s.id)
    rec.close()
    return store, ids


def test_verify_all_cross_checks_the_control_streams_index(tmp_path):
    from recorder.verify import TRUNCATED, verify_all

    store, (a, b) = _two_sessions(tmp_path)
    reports = {r.session_id: r for r in verify_all(store, PUB)}
    assert len(reports) == 3 and all(r.status == "closed" for r in reports.values())

    # truncating a closed session's tail alone only makes it look "open"...
    last = last_n(store, a)
    path_of(store, a, last, "chunk").unlink()
    path_of(store, a, last, "ckpt").unlink()
    assert verify_session(store, a, PUB).status == "open"
    # ...but the control stream attests where it ended
    # ...and deleting a whole session leaves its index entries behind
    shutil.rmtree(store.root / chunks.session_prefix(b))
    reports = {r.session_id: r for r in verify_all(store, PUB)}
    assert reports[a].status == "tampered" and [p.kind for p in reports[a].problems] == [TRUNCATED]
    assert reports[b].status == "tampered" and [p.kind for p in reports[b].problems] == [MISSING]
    assert "deleted" in reports[b].problems[0].detail
