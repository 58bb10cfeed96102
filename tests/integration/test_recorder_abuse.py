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

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.replay import iter_records
from recorder.store.local import LocalStore
from recorder.verify import MODIFIED, PLANTED, UNLOCKED, verify_session
from recorder.writer import Recorder
from tests.support.wait import wait_for

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


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
    # replay reads the writer's copies too
    queries = [r for r in iter_records(store, sid) if r.payload.startswith(b"Q")]
    assert len(queries) == 12


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


def test_a_412_the_proxy_may_not_read_back_is_kept_as_a_conflict(s3, monkeypatch):
    """docs/iam.md denies the proxy s3:GetObject. A 412 it cannot read back must not wedge
    the writer in a retry loop (a StoreError would, and the proxy would stop serving): it is
    an ObjectExists, so the writer keeps its copy under a conflict key."""
    from botocore.exceptions import ClientError

    from recorder.store import ObjectExists

    store = s3.store(retention_days=1)
    key = chunks.chunk_key(chunks.new_session_id(), 0)
    store.put(key, b"sealed")

    def denied(**kw):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")

    monkeypatch.setattr(store.client, "get_object", denied)
    with pytest.raises(ObjectExists, match="cannot be read back"):
        store.put(key, b"sealed")


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


# --- 5. verify never passes on nothing ---------------------------------------------------------


@pytest.fixture
def pubkey(tmp_path) -> str:
    from cryptography.hazmat.primitives import serialization

    path = tmp_path / "pub.pem"
    path.write_bytes(PUB.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def _verify(*args: str) -> int:
    from proxy.cli import main

    return main(["verify", *args])


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_verify_all_of_nothing_fails_and_names_the_store(tmp_path, pubkey, capsys, layout):
    root = tmp_path / "nowhere"
    if layout == "empty":
        root.mkdir()
    assert _verify("--all", "--store", str(root), "--public-key", pubkey) == 1
    err = capsys.readouterr().err
    assert f"no sessions found in file://{root}" in err
    assert ("does not exist" in err) == (layout == "missing")


def test_verify_all_of_a_mistyped_s3_prefix_fails(s3, tmp_path, pubkey, capsys, monkeypatch):
    store = s3.store(retention_days=1)
    rec = _recorder(store, tmp_path)
    s = rec.open_session({"agent": "a1"})
    s.end("client-exit")
    rec.close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_REGION", s3.region)
    url = f"s3://{s3.bucket}/{store.prefix.rstrip('/')}-typo"
    assert _verify("--all", "--store", url, "--s3-endpoint", s3.endpoint, "--public-key", pubkey) == 1
    assert f"no sessions found in {url}/" in capsys.readouterr().err


def _record_sessions(tmp_path: Path, count: int, log_path: Path) -> tuple[LocalStore, list[str], str]:
    """``count`` sessions and the control stream that indexes them, with the proxy's log
    (text format) in ``log_path``."""
    from proxy.logs import _TextFormatter

    store = LocalStore(tmp_path / "store")
    handler = logging.FileHandler(log_path)
    handler.setFormatter(_TextFormatter())
    logger = logging.getLogger("pgwitness.recorder")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        rec = Recorder(RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"),
                                      chunk_max_seconds=0.2), store=store, signing_key=KEY)
        rec.start()
        ids = []
        for k in range(count):
            s = rec.open_session({"agent": f"a{k % 7}", "task": "t"})
            _queries(s, 3)
            s.end("client-exit")
            ids.append(s.id)
        control = rec._control.id
        rec.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()
    return store, ids, control


@pytest.mark.timeout(120)
def test_deleting_sessions_with_their_control_stream_fails_against_an_anchor(tmp_path, pubkey, capsys):
    """Issue 13.5, and its bounded load test: 200 sessions. On the local store (no Object
    Lock) an attacker removes one session together with the control stream that indexes
    it: the store alone cannot tell (verify --all passes), each external anchor can."""
    import shutil

    log_path = tmp_path / "proxy.log"
    store, ids, control = _record_sessions(tmp_path, 200, log_path)
    assert "control stream head" in log_path.read_text()
    listed = tmp_path / "sessions.txt"
    listed.write_text("\n".join(ids) + "\n")
    base = ["--all", "--store", str(store.root), "--public-key", pubkey]
    anchors = {
        "expect": ["--expect", "200"],
        "expect-sessions": ["--expect-sessions", str(listed)],
        "anchor": ["--anchor", str(log_path)],
    }
    t0 = time.monotonic()
    for name, extra in anchors.items():
        assert _verify(*base, *extra) == 0, name
    intact = (time.monotonic() - t0) / 3
    for sid in (ids[17], control):
        shutil.rmtree(store.root / chunks.session_prefix(sid))
    capsys.readouterr()
    assert _verify(*base) == 0  # what the store cannot prove by itself (docs/recording-format.md)
    for name, extra in anchors.items():
        assert _verify(*base, *extra) == 1, name
        out = capsys.readouterr().out
        assert "ANCHOR:" in out, (name, out)
    assert ids[17] in out or control in out
    print(f"verify --all of 200 sessions: {intact:.2f} s")
    assert intact < 60


def test_log_anchors_parse_in_text_and_json(tmp_path):
    from proxy.logs import _JsonFormatter, _TextFormatter
    from recorder.verify import parse_heads

    record = logging.LogRecord("pgwitness.recorder", logging.INFO, __file__, 1, "control stream head",
                               None, None)
    record.fields = {"stream": "S1", "n": 4, "chain": "ab" * 32}
    for fmt in (_TextFormatter(), _JsonFormatter()):
        assert parse_heads(fmt.format(record) + "\nunrelated line\n") == {"S1": (4, "ab" * 32)}


# --- 6. refused statements during an outage ------------------------------------------------------


def test_statements_refused_during_an_outage_share_chunks(tmp_path):
    """Issue 13.7: during an outage each refused statement sealed its own chunk and
    checkpoint (2 PUTs each once the store is back: a 3.6 MB spool took 25 s to drain).
    Now refusals while the recorder is unhealthy ride the chunks cut by size and age."""
    from devtools.testing import FlakyStore

    store = FlakyStore(LocalStore(tmp_path / "store"))
    store.down = True
    rec = _recorder(store, tmp_path, fail_after_seconds=0.2)
    rec.config.chunk_max_bytes = 1 << 20
    s = rec.open_session({"agent": "a1"})
    wait_for(lambda: not rec.healthy, what="the recorder to give up on the store")
    before = rec.stats["chunks"]
    for i in range(200):
        s.wire("c2s", testing.query(f"select {i}"))
        s.decision({"outcome": "denied", "error": "cannot record"}, denied=True)
        time.sleep(0.005)  # statements arrive a round trip apart
    s.end("client-exit")
    wait_for(lambda: rec.stats["chunks"] > before, what="the refusals sealed")
    time.sleep(0.3)
    sealed = rec.stats["chunks"] - before
    assert sealed <= 5, sealed  # one per refusal before
    store.down = False
    rec.close()
    r = verify_session(store, s.id, PUB)
    assert r.status == "closed" and r.records == 1 + 200 * 2 + 1, r.summary()
