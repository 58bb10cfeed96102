"""The recording store attacked by someone who holds (or stole) write access to it.

Planted objects at a live session's future keys, a session deleted together with the
control stream that indexes it, delete markers, and a flipped byte in a chunk header: the
writer must keep its evidence and say so, and verify must report what was done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from recorder import chunks, testing
from recorder.config import RecorderConfig
from recorder.store.local import LocalStore
from recorder.verify import MODIFIED, PLANTED, UNLOCKED, verify_session
from recorder.writer import Recorder

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def wait_for(cond, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _recorder(store, tmp_path: Path, **kw) -> Recorder:
    cfg = RecorderConfig(store=store.url, spool_dir=str(tmp_path / "spool"), chunk_max_bytes=120,
                         chunk_max_seconds=5, **kw)
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    return rec


def _queries(s, n: int) -> None:
    for i in range(n):
        s.wire("c2s", testing.query(f"select {i} from generate_series(1, 3)"))
        s.decision({"rule": "scope.read"}, denied=False)
        s.wire("s2c", testing.row_description("n") + testing.data_row(str(i))
               + testing.command_complete("SELECT 1") + testing.ready())


def _conflicts_metric() -> float:
    return REGISTRY.get_sample_value("pgwitness_recorder_conflicts_total") or 0.0


def _plant_and_record(store, plant, tmp_path, caplog) -> tuple[Recorder, str]:
    """A live session; once its chunk 0 is stored, objects are planted at its chunk and
    checkpoint keys 1..3; then it records 12 statements and ends."""
    from proxy import metrics

    rec = _recorder(store, tmp_path)
    s = rec.open_session({"agent": "a1", "task": "t1"})
    wait_for(lambda: store.list(chunks.session_prefix(s.id)), what="chunk 0 stored")
    for n in (1, 2, 3):
        plant(chunks.chunk_key(s.id, n), b"planted chunk %d" % n)
        plant(chunks.ckpt_key(s.id, n), b"planted checkpoint %d" % n)
    before = _conflicts_metric()
    with caplog.at_level(logging.ERROR, logger="pgwitness.recorder"):
        _queries(s, 12)
        s.end("client-exit")
        rec.close()
    assert not rec.status["spool_batches"], "the writer gave up on planted keys"
    assert rec.stats["conflicts"] == 6
    metrics.RecorderExporter().update(rec.status)
    assert _conflicts_metric() - before == 6
    assert "planted" in caplog.text
    kept = list((tmp_path / "spool" / "conflicts").iterdir())
    assert len(kept) == 6  # the spool kept its own copy of each
    return rec, s.id


def _check_verify_reports_planting(store, sid: str) -> None:
    r = verify_session(store, sid, PUB)
    planted = sorted(p.where for p in r.problems if p.kind == PLANTED)
    assert planted == [f"{n:010d}.{k}" for n in (1, 2, 3) for k in ("chunk", "ckpt")], r.summary()
    # the planted objects themselves may lack the lock pgwitness puts on its own
    assert {(p.kind, p.where) for p in r.problems} <= {(k, w) for w in planted for k in (PLANTED, UNLOCKED)}, r.summary()
    assert r.status == "tampered"
    # ...but nothing is lost: every chunk is attested from the writer's conflict copies
    last = max(chunks.parse_name(k.rsplit("/", 1)[1])[0]
               for k in store.list(chunks.session_prefix(sid)) if "/conflicts/" not in k)
    assert r.attested_through == last
    assert r.records == 1 + 12 * 3 + 1


def test_planted_objects_in_s3_do_not_destroy_evidence(s3, tmp_path, caplog):
    """Issue 13.4: before, a 412 was taken for "already stored", the spool copy dropped and
    2,298 statements' records lost without a log line."""
    store = s3.store(retention_days=1)
    client = s3.client()

    def plant(key: str, data: bytes) -> None:
        client.put_object(Bucket=s3.bucket, Key=store.prefix + key, Body=data, IfNoneMatch="*")

    _rec, sid = _plant_and_record(store, plant, tmp_path, caplog)
    _check_verify_reports_planting(store, sid)


def test_planted_files_in_the_local_store_do_not_destroy_evidence(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")

    def plant(key: str, data: bytes) -> None:
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o444)

    _rec, sid = _plant_and_record(store, plant, tmp_path, caplog)
    _check_verify_reports_planting(store, sid)


def test_a_retried_put_of_the_same_bytes_is_not_a_conflict(s3):
    store = s3.store(retention_days=1)
    key = chunks.chunk_key(chunks.new_session_id(), 0)
    store.put(key, b"sealed")
    store.put(key, b"sealed")  # a retry after a lost reply: the read-back matches


@pytest.mark.parametrize("offset", [15, 34], ids=["chunk number", "session id"])
def test_a_byte_flipped_in_a_chunk_header_is_modified_not_reordered(tmp_path, offset):
    store = LocalStore(tmp_path / "store")
    rec = _recorder(store, tmp_path)
    s = rec.open_session({"agent": "a1", "task": "t1"})
    _queries(s, 12)
    s.end("client-exit")
    rec.close()
    path = store.root / chunks.chunk_key(s.id, 2)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    r = verify_session(store, s.id, PUB)
    assert [(p.kind, p.where) for p in r.problems] == [(MODIFIED, "0000000002.chunk")], r.summary()
