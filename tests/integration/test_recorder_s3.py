"""S3 Object Lock semantics and the recorder against a real S3 server (SeaweedFS)."""

import datetime as dt
import io
import socket
import threading
import time

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.records import Kind
from recorder.replay import iter_records, replay_session
from recorder.store import ObjectExists
from recorder.store.local import LocalStore
from recorder.verify import ATTEMPT, UNLOCKED, verify_session
from recorder.writer import Recorder
from tests.support.fixtures_s3 import SeaweedS3, find_weed
from tests.support.wait import wait_for

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def recorder_for(store, tmp_path, **kw) -> Recorder:
    cfg = RecorderConfig(store=store.url, spool_dir=str(tmp_path / "spool"), **kw)
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    return rec


def record_small_session(rec: Recorder) -> str:
    s = rec.open_session({"agent": "a", "task": "t"})
    s.wire("c2s", testing.query("select id from accounts"))
    s.decision({"rule": "scope.read"}, denied=False)
    s.wire("s2c", testing.row_description("id") + testing.data_row("1") + testing.data_row("2")
           + testing.command_complete("SELECT 2") + testing.ready())
    s.wire("c2s", testing.query("drop table accounts"))
    s.decision({"rule": "deny.ddl", "reason": "DDL not granted"}, denied=True)
    s.end("client-exit")
    return s.id


def test_put_is_create_only_and_locked(s3):
    store = s3.store(retention_days=1)
    key = f"{chunks.session_prefix(chunks.new_session_id())}0000000000.chunk"
    before = dt.datetime.now(dt.UTC)
    store.put(key, b"original")
    with pytest.raises(ObjectExists):
        store.put(key, b"forged")
    c = s3.client()
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=s3.bucket, Key=store.prefix + key, Body=b"forged", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    head = c.head_object(Bucket=s3.bucket, Key=store.prefix + key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + dt.timedelta(hours=23) < until < before + dt.timedelta(days=1, minutes=5)
    assert c.get_object(Bucket=s3.bucket, Key=store.prefix + key)["Body"].read() == b"original"
    assert store.list(key) == [key] and store.check(key) == []


def test_locked_version_cannot_be_deleted(s3):
    store = s3.store(retention_days=1)
    key = f"{chunks.session_prefix(chunks.new_session_id())}0000000000.ckpt"
    store.put(key, b"evidence")
    c = s3.client()
    vid = c.head_object(Bucket=s3.bucket, Key=store.prefix + key)["VersionId"]
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket=s3.bucket, Key=store.prefix + key, VersionId=vid)
    assert e.value.response["Error"]["Code"] in ("AccessDenied", "ObjectLocked")
    # a plain delete only adds a delete marker; the locked version is still there
    c.delete_object(Bucket=s3.bucket, Key=store.prefix + key)
    body = c.get_object(Bucket=s3.bucket, Key=store.prefix + key, VersionId=vid)["Body"].read()
    assert body == b"evidence"
    assert store.list(key) == [key] and store.get(key) == b"evidence"


def test_recording_round_trip_verifies_on_s3(s3, tmp_path):
    store = s3.store(retention_days=1)
    rec = recorder_for(store, tmp_path)
    sid = record_small_session(rec)
    rec.close()
    r = verify_session(store, sid, PUB)
    assert r.status == "closed", r.summary()
    assert sid in store.sessions()
    out = io.StringIO()
    replay_session(store, sid, out)
    text = out.getvalue()
    assert "select id from accounts" in text and "DENIED deny.ddl" in text and "(2 rows)" in text


def test_delete_markers_and_overwrites_are_reported_as_attempts(s3, tmp_path):
    store = s3.store(retention_days=1)
    rec = recorder_for(store, tmp_path)
    sid = record_small_session(rec)
    rec.close()
    c = s3.client()
    ckpt0 = store.prefix + chunks.ckpt_key(sid, 0)
    chunk0 = store.prefix + chunks.chunk_key(sid, 0)
    c.delete_object(Bucket=s3.bucket, Key=ckpt0)  # delete marker only
    r = verify_session(s3.store(store.prefix.rstrip("/")), sid, PUB)
    # the locked original still verifies, and the deletion that was tried is reported
    assert r.attested_through == r.chunks - 1 and r.status == "tampered"
    assert [(p.kind, p.where) for p in r.problems] == [(ATTEMPT, "0000000000.ckpt")], r.problems
    assert "delete marker" in r.problems[0].detail
    # hide the original behind a delete marker, then write a forgery under the same key
    c.delete_object(Bucket=s3.bucket, Key=chunk0)
    c.put_object(Bucket=s3.bucket, Key=chunk0, Body=b"forged", IfNoneMatch="*")
    r = verify_session(s3.store(store.prefix.rstrip("/")), sid, PUB)
    assert r.status == "tampered"
    found = sorted((p.kind, p.where, p.detail.split(":")[0]) for p in r.problems)
    assert found == [(ATTEMPT, "0000000000.chunk", "1 delete marker"),
                     (ATTEMPT, "0000000000.chunk", "2 versions"),
                     (ATTEMPT, "0000000000.ckpt", "1 delete marker")], r.problems
    # ...and it still verified the original, locked version's content
    assert r.records == len(list(iter_records(LocalStoreView(store), sid)))


class LocalStoreView:
    """Reads through S3Store.get (the first version), for counting records."""

    def __init__(self, store):
        self.store = store

    def list(self, prefix):
        return self.store.list(prefix)

    def get(self, key):
        return self.store.get(key)


def test_missing_lock_fields_fail_verification(s3, tmp_path):
    local = LocalStore(tmp_path / "local")
    rec = recorder_for(local, tmp_path)
    sid = record_small_session(rec)
    rec.close()
    store = s3.store()
    c = s3.client()
    for key in local.list(chunks.session_prefix(sid)):  # copied without Object Lock
        c.put_object(Bucket=s3.bucket, Key=store.prefix + key, Body=local.get(key))
    r = verify_session(store, sid, PUB)
    assert r.status == "tampered"
    details = {p.detail for p in r.problems if p.kind == UNLOCKED}
    assert "object lock mode is missing, want COMPLIANCE" in details
    assert "object lock retain-until date is missing" in details


def test_store_outage_is_survived_with_nothing_lost(s3, tmp_path):
    store = s3.store(retention_days=1)
    rec = recorder_for(store, tmp_path, chunk_max_seconds=0.1, fail_after_seconds=0.5,
                       retry_max_seconds=0.3)
    s = rec.open_session({"agent": "outage"})
    wait_for(lambda: rec.status["objects_stored"] >= 2, what="chunk 0 stored")
    s3.stop()
    try:
        for i in range(40):
            s.wire("c2s", testing.query(f"select {i}"))
            s.wire("s2c", testing.command_complete("SELECT 1") + testing.ready())
            if i % 10 == 9:
                s.decision({"rule": "deny.write"}, denied=True)
            time.sleep(0.01)
        wait_for(lambda: not rec.healthy, 10, "unhealthy during the outage")
        assert rec.status["spool_batches"] > 0
    finally:
        s3.start()
    wait_for(lambda: rec.status["spool_batches"] == 0, 30, "spool drained after the outage")
    wait_for(lambda: rec.healthy, 5, "healthy again")
    s.end("client-exit")
    rec.close()
    r = verify_session(store, s.id, PUB)
    assert r.status == "closed", r.summary()
    wires = [x for x in iter_records(store, s.id) if x.kind == Kind.WIRE]
    assert len(wires) == 80
    assert wires[0].payload == testing.query("select 0")
    assert wires[-2].payload == testing.query("select 39")


def test_cli_verify_and_replay_on_s3(s3, tmp_path, monkeypatch, capsys):
    import argparse

    from cryptography.hazmat.primitives import serialization

    from recorder import cli

    store = s3.store(retention_days=1)
    rec = recorder_for(store, tmp_path)
    sid = record_small_session(rec)
    rec.close()
    pub = tmp_path / "rec.pub"
    pub.write_bytes(PUB.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)

    def run(*argv):
        parser = argparse.ArgumentParser()
        cli.register(parser.add_subparsers())
        args = parser.parse_args(argv)
        return args.func(args)

    common = ["--store", f"s3://{s3.bucket}/{store.prefix}", "--s3-endpoint", s3.endpoint,
              "--s3-region", s3.region, "--public-key", str(pub)]
    assert run("verify", *common, "--all") == 0
    assert f"{sid}: intact, closed" in capsys.readouterr().out
    assert run("replay", *common, sid) == 0
    assert "DENIED deny.ddl" in capsys.readouterr().out


class LostReplies:
    """The first put of every key reaches S3, but its reply is 'lost' (raises)."""

    def __init__(self, inner):
        self.inner, self.url, self.seen = inner, inner.url, set()

    def put(self, key, data):
        self.inner.put(key, data)
        if key not in self.seen:
            self.seen.add(key)
            from recorder.store import StoreError

            raise StoreError("connection reset after the request was sent (test)")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_lost_replies_are_retried_without_duplicates(s3, tmp_path):
    store = s3.store(retention_days=1)
    flaky = LostReplies(s3.store(store.prefix.rstrip("/"), retention_days=1))
    rec = recorder_for(flaky, tmp_path, retry_max_seconds=0.05)
    sid = record_small_session(rec)
    rec.close()
    assert rec.status["store_errors"] >= 2 and not rec.status["spool_batches"]
    r = verify_session(store, sid, PUB)  # checks every key has exactly one (locked) version
    assert r.status == "closed", r.summary()


def test_restart_waits_for_its_ports_to_be_released(s3):
    """The outage tests restart the server on the same ports. While it is down, a stray
    socket may hold one of them for a while (an outgoing connection given it as a local
    port, the old process's last socket); weed then refuses to start. The restart must wait
    for the port and come back on the same endpoint, not fail the test that restarts it."""
    endpoint = s3.endpoint
    s3.client().put_object(Bucket=s3.bucket, Key="restart/before", Body=b"before")
    s3.stop()
    squatter = socket.socket()  # the old sockets may be in TIME_WAIT: bind as a server would
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", s3.ports["s3"]))
    squatter.listen(1)
    released = threading.Event()

    def release() -> None:
        squatter.close()
        released.set()

    timer = threading.Timer(2.0, release)
    timer.start()
    try:
        s3.start()
    finally:
        timer.cancel()
        release()
    assert released.is_set(), "started while the port was still held?"
    assert s3.running and s3.endpoint == endpoint
    body = s3.client().get_object(Bucket=s3.bucket, Key="restart/before")["Body"].read()
    assert body == b"before"


def test_first_start_takes_other_ports_when_one_is_taken(tmp_path):
    """A first start that finds one of its chosen ports taken (another test run's server,
    any listener) chooses new ones instead of failing: nothing depends on them yet."""
    server = SeaweedS3(find_weed(), tmp_path / "weed")
    taken = server.ports["s3"]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", taken))
    squatter.listen(1)
    try:
        server.start()
        assert server.running and server.ports["s3"] != taken
        assert server.endpoint == f"http://127.0.0.1:{server.ports['s3']}"
        server.client().put_object(Bucket=server.bucket, Key="first", Body=b"ok")
    finally:
        server.stop()
        squatter.close()
