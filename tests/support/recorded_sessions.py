"""Sessions recorded in process to a local store, and the tamperer's tools (the recorder's
unit tests: tests/unit/test_recorder_verify.py, tests/unit/test_s19_chunk_bounds.py)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import testing
from recorder import chunks
from recorder.config import RecorderConfig
from recorder.store.local import LocalStore
from recorder.writer import Recorder

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def record_session(tmp_path: Path, n_queries: int = 12, end: bool = True) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    cfg = RecorderConfig(
        store=str(store.root),
        spool_dir=str(tmp_path / "spool"),
        chunk_max_bytes=120,
        chunk_max_seconds=5,
    )
    rec = Recorder(cfg, store=store, signing_key=KEY)
    rec.start()
    s = rec.open_session({"agent": "a1", "task": "t1"})
    for i in range(n_queries):
        s.wire("c2s", testing.query(f"select {i} from generate_series(1, 3)"))
        s.decision({"rule": "scope.read"}, denied=False)
        s.wire(
            "s2c",
            testing.row_description("n")
            + testing.data_row(str(i))
            + testing.command_complete("SELECT 1")
            + testing.ready(),
        )
    if end:
        s.end("client-exit")
        rec.close()
    else:
        rec.close()  # close() ends live sessions; keep an unended one by deleting the tail later
    return store, s.id


def path_of(store: LocalStore, sid: str, n: int, kind: str) -> Path:
    key = chunks.chunk_key(sid, n) if kind == "chunk" else chunks.ckpt_key(sid, n)
    return store.root / key


def writable(p: Path) -> Path:
    p.chmod(0o644)
    return p


def relock(store: LocalStore, sid: str) -> None:
    """An attacker with file access also restores the read-only mode to hide their tracks."""
    for key in store.list(chunks.session_prefix(sid)):
        (store.root / key).chmod(0o444)


def last_n(store: LocalStore, sid: str) -> int:
    return max(
        chunks.parse_name(k.rsplit("/", 1)[1])[0] for k in store.list(chunks.session_prefix(sid))
    )
