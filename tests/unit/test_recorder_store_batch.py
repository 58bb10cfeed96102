"""LocalStore.put_many and the uploader's steps: several sessions' objects per call, each
session's objects strictly in order, one fsync per directory, the same guarantees as put."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.signing import State, decode_checkpoint
from recorder.store import ObjectExists, StoreError
from recorder.store import local as local_mod
from recorder.store.local import LocalStore
from recorder.verify import verify_session
from recorder.writer import Recorder
from tests.support.wait import wait_for

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


@pytest.fixture(params=["O_TMPFILE", "named temp file"])
def store(request, tmp_path, monkeypatch):
    if request.param == "named temp file":
        monkeypatch.setattr(local_mod, "_O_TMPFILE", 0)
    else:  # Linux has had O_TMPFILE since 3.11; the store's fallback is the other param
        assert local_mod._O_TMPFILE, "os.O_TMPFILE missing: not Linux?"
    return LocalStore(tmp_path / "store")


def test_put_many_creates_read_only_objects_and_no_temp_files(store):
    items = [(f"sessions/2026/12/04/s{k}/0000000000.chunk", b"chunk %d" % k) for k in range(3)]
    items.append(("sessions/2026/12/04/s0/0000000000.ckpt", b"ckpt"))
    assert store.put_many(items) == [None] * 4
    for key, data in items:
        assert store.get(key) == data
        assert store.check(key) == []  # mode 0444
    left = [f for _d, _s, fs in os.walk(store.root) for f in fs if f.startswith(".")]
    assert left == []
    assert store.list("sessions/2026/12/04/s0/") == sorted(k for k, _ in items if "/s0/" in k)


def test_put_many_outcomes_per_item(store):
    store.put("sessions/a/x", b"one")
    out = store.put_many(
        [
            ("sessions/a/x", b"one"),  # the same bytes again: a success
            ("sessions/a/y", b"new"),
            ("sessions/../z", b"bad key"),
            ("sessions/b/x", b"fresh"),
        ]
    )
    assert out[0] is None and out[1] is None and out[3] is None
    assert isinstance(out[2], ValueError)
    out = store.put_many([("sessions/a/x", b"two"), ("sessions/a/w", b"w")])
    assert isinstance(out[0], ObjectExists) and out[1] is None
    assert store.get("sessions/a/x") == b"one"  # never replaced
    assert store.get("sessions/a/w") == b"w"


def test_put_many_fsyncs_files_before_links_and_each_directory_once(store, monkeypatch):
    events = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("dir" if os.path.isdir(path) else "file", path))
        real_fsync(fd)

    def link(src, dst, **kw):
        events.append(("link", str(dst)))
        real_link(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    root = store.root
    (root / "sessions/2026/12/04").mkdir(parents=True)
    store.put_many([(f"sessions/2026/12/04/s{k}/0000000000.chunk", b"c") for k in range(3)])
    kinds = [e[0] for e in events]
    assert kinds == ["file"] * 3 + ["link"] * 3 + ["dir"] * 4, events
    dirs = [e[1] for e in events if e[0] == "dir"]
    assert sorted(dirs) == sorted(
        [str(root / f"sessions/2026/12/04/s{k}") for k in range(3)]
        + [str(root / "sessions/2026/12/04")]
    )  # the new dirs' parent


def test_put_many_a_failing_directory_fails_only_its_items(store, monkeypatch):
    real = local_mod.fsync_dir

    def fsync_dir(d):
        if str(d).endswith("/bad"):
            raise OSError(5, "EIO (test)")
        real(d)

    monkeypatch.setattr(local_mod, "fsync_dir", fsync_dir)
    out = store.put_many([("sessions/bad/x", b"1"), ("sessions/good/x", b"2")])
    assert isinstance(out[0], StoreError) and out[1] is None


class StepStore(LocalStore):
    """Records each put_many call's keys; fails the keys in ``fail`` once each."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()

    def put_many(self, items):
        self.calls.append([k for k, _ in items])
        out = super().put_many([(k, d) for k, d in items if k not in self.fail])
        it = iter(out)
        res = []
        for k, _ in items:
            if k in self.fail:
                self.fail.discard(k)
                res.append(StoreError("down for this key (test)"))
            else:
                res.append(next(it))
        return res


def _recorder(tmp_path, store, **kw):
    cfg = RecorderConfig(
        store=str(store.root), spool_dir=str(tmp_path / "spool"), retry_min_seconds=0.01, **kw
    )
    return Recorder(cfg, store=store, signing_key=KEY)


def test_uploader_steps_keep_each_sessions_objects_in_order(tmp_path):
    """One spool batch with a session of several chunks and short sessions: each
    put_many call holds at most one object per session, and every session's objects go
    chunk 0, ckpt 0, chunk 1, ... as with one put at a time."""
    store = StepStore(tmp_path / "store")
    rec = _recorder(tmp_path, store, chunk_max_bytes=300)
    big = rec.open_session({"k": "big"})
    for i in range(10):
        big.wire("s2c", testing.data_row("x" * 100 + str(i)))
    big.end("done")
    small = [rec.open_session({"k": k}) for k in range(3)]
    for s in small:
        s.end("done")
    rec.start()  # everything above is sealed in the first pass: one batch
    try:
        wait_for(
            lambda: (
                all(store.list(chunks.session_prefix(s.id)) for s in [big, *small])
                and not rec.status["spool_batches"]
            ),
            10,
            "uploads",
        )
    finally:
        rec.close(timeout=10)
    sessions: dict[str, list[str]] = {}
    for call in store.calls:
        sids = [k.rsplit("/", 2)[-2] for k in call]
        assert len(sids) == len(set(sids)), call  # one object per session per step
        for k in call:
            sessions.setdefault(k.rsplit("/", 2)[-2], []).append(k.rsplit("/", 1)[1])
    names = sessions[big.id]
    assert len(names) > 4
    assert names == [f"{n:010d}.{ext}" for n in range(len(names) // 2) for ext in ("chunk", "ckpt")]
    for s in [big, *small]:
        assert verify_session(store, s.id, PUB).status == "closed"


def test_uploader_step_failure_stops_that_session_and_the_retry_completes(tmp_path):
    store = StepStore(tmp_path / "store")
    rec = _recorder(tmp_path, store)
    a, b = rec.open_session({"k": "a"}), rec.open_session({"k": "b"})
    for s in (a, b):
        s.wire("c2s", testing.query("SELECT 1"))
        s.end("done")
    store.fail.add(chunks.chunk_key(a.id, 0))
    rec.start()
    try:
        wait_for(lambda: store.list(chunks.session_prefix(a.id)), 10, "a after the retry")
        wait_for(lambda: not rec.status["spool_batches"], 10, "the batch drained")
    finally:
        rec.close(timeout=10)
    # b went on while a waited; a's checkpoint was never stored before its chunk
    first_a = next(i for i, c in enumerate(store.calls) if chunks.ckpt_key(a.id, 0) in c)
    assert any(chunks.chunk_key(a.id, 0) in c for c in store.calls[first_a - 1 : first_a])
    assert any(chunks.ckpt_key(b.id, 0) in c for c in store.calls[:first_a])
    assert rec.stats["store_errors"] >= 1
    for s in (a, b):
        (ck,) = [
            decode_checkpoint(store.get(k))
            for k in store.list(chunks.session_prefix(s.id))
            if k.endswith(".ckpt")
        ]
        assert ck.state == State.FINAL
        assert verify_session(store, s.id, PUB).status == "closed"


def test_objects_stored_in_steps_are_attacked_like_any_other(store, tmp_path):
    """Both file-creation paths: what put_many stored is read-only, verifies closed, and a
    flipped byte, a deleted checkpoint or a truncated tail is still caught by verify."""
    rec = _recorder(tmp_path, store, chunk_max_bytes=200)
    s = rec.open_session({"k": "attacked"})
    for i in range(8):
        s.wire("c2s", testing.query(f"select {i} from generate_series(1, 3)"))
        s.wire("s2c", testing.data_row(str(i) * 50))
    s.end("done")
    rec.start()
    rec.close(timeout=10)
    prefix = chunks.session_prefix(s.id)
    keys = store.list(prefix)
    assert len(keys) >= 6 and all(store.check(k) == [] for k in keys)
    assert verify_session(store, s.id, PUB).status == "closed"
    last = max(chunks.parse_name(k.rsplit("/", 1)[1])[0] for k in keys)

    chunk1 = store.root / chunks.chunk_key(s.id, 1)
    good = chunk1.read_bytes()
    chunk1.chmod(0o644)
    chunk1.write_bytes(good[:-3] + bytes([good[-3] ^ 0x40]) + good[-2:])
    chunk1.chmod(0o444)
    r = verify_session(store, s.id, PUB)
    assert r.status == "tampered" and {p.kind for p in r.problems} == {"modified"}
    chunk1.chmod(0o644)
    chunk1.write_bytes(good)
    chunk1.chmod(0o444)

    ckpt0 = store.root / chunks.ckpt_key(s.id, 0)
    kept = ckpt0.read_bytes()
    ckpt0.unlink()
    r = verify_session(store, s.id, PUB)
    assert r.status == "tampered" and {p.kind for p in r.problems} == {"missing"}
    ckpt0.write_bytes(kept)
    ckpt0.chmod(0o444)
    assert verify_session(store, s.id, PUB).status == "closed"

    for kind in ("chunk", "ckpt"):
        key = chunks.chunk_key(s.id, last) if kind == "chunk" else chunks.ckpt_key(s.id, last)
        (store.root / key).unlink()
    r = verify_session(store, s.id, PUB)
    assert r.status == "open" and r.attested_through == last - 1  # never "closed"


def test_a_sandbox_that_cannot_link_tmpfiles_gets_named_temp_files(tmp_path, monkeypatch):
    """O_TMPFILE opens but linking it through /proc fails (a sandbox, /proc not mounted):
    the one-time probe sees it, and put_many stores through named temp files instead of
    failing every object."""
    assert getattr(os, "O_TMPFILE", 0), "os.O_TMPFILE missing: not Linux?"
    monkeypatch.setattr(local_mod, "_O_TMPFILE", os.O_TMPFILE)
    monkeypatch.setattr(local_mod, "_TMPFILE_PROBED", False)
    real_link = os.link

    def link(src, dst, **kw):
        if str(src).startswith("/proc/self/fd/"):
            raise OSError(18, "Invalid cross-device link (test)")
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", link)
    store = LocalStore(tmp_path / "store")
    assert store.put_many([("sessions/a/x", b"1"), ("sessions/b/y", b"2")]) == [None, None]
    assert local_mod._O_TMPFILE == 0
    assert store.get("sessions/a/x") == b"1" and store.check("sessions/b/y") == []
    left = [f for _d, _s, fs in os.walk(store.root) for f in fs if f.startswith(".")]
    assert left == []
