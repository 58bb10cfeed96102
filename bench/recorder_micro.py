"""Recorder micro-benchmark: SessionRecorder.wire() cost per call, background throughput.

    .venv/bin/python bench/recorder_micro.py [--calls N] [--frame-bytes B] [--sessions S]

Measures (1) the caller-side cost of wire() — what the proxy's event loop pays per network
read — and (2) how fast the background sealer+uploader turn frames into fsynced, signed,
compressed objects in the local store (MB/s of recorded wire bytes, end to end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from devtools import testing  # noqa: E402
from recorder.config import RecorderConfig  # noqa: E402
from recorder.store.local import LocalStore  # noqa: E402
from recorder.writer import Recorder  # noqa: E402


def make_frames(frame_bytes: int, entropy: float) -> list[bytes]:
    # DataRows of text: `entropy` of each value is random hex, the rest repeated words
    words = b"refund customer order shipped pending 2024-03-01 EUR 19.99 ".split()
    out = []
    size = max(1, frame_bytes - 11)
    n_rand = int(size * entropy)
    for i in range(max(256, (8 << 20) // frame_bytes)):  # no repeats within a chunk
        val = b" ".join(words[(i + j) % len(words)] for j in range(size // 4 + 1))
        val = val[: size - n_rand] + os.urandom(n_rand // 2 + 1).hex().encode()[:n_rand]
        out.append(testing.data_row(val.decode()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--frame-bytes", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--entropy", type=float, default=0.5,
                    help="fraction of each row that is random (compressibility)")
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--dir", default=None, help="where to put the store and spool (default: tmp)")
    a = ap.parse_args()

    base = Path(a.dir or tempfile.mkdtemp(prefix="pgwitness-bench-"))
    store = LocalStore(base / "store", fsync=not a.no_fsync)
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(base / "spool"),
                         fsync=not a.no_fsync, max_memory_bytes=256 << 20)
    rec = Recorder(cfg, store=store, signing_key=Ed25519PrivateKey.generate())
    rec.start()
    sessions = [rec.open_session({"bench": i}) for i in range(a.sessions)]
    frames = make_frames(a.frame_bytes, a.entropy)
    nf = len(frames)

    # (1) caller cost: tight loop of wire() calls, round-robin over sessions
    wires = [s.wire for s in sessions]
    ns = len(wires)
    total_bytes = 0
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    for i in range(a.calls):
        wires[i % ns]("s2c", frames[i % nf])
    t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
    total_bytes = sum(len(frames[i % nf]) for i in range(a.calls))
    # loop overhead without wire(), to subtract
    noop = lambda d, f: None  # noqa: E731
    c2 = time.thread_time_ns()
    for i in range(a.calls):
        noop("s2c", frames[i % nf])
    c3 = time.thread_time_ns()
    per_call = (t1 - t0) / a.calls
    # caller-thread CPU: what wire() itself costs, independent of machine load / GIL waits
    cpu_call = ((c1 - c0) - (c3 - c2)) / a.calls

    # (2) end to end: until every byte is sealed, spooled, stored
    for s in sessions:
        s.end("bench")
    t_end_start = time.perf_counter()
    while rec.status["spool_batches"] or rec._in != rec._out:
        time.sleep(0.005)
    drain = time.perf_counter() - t_end_start
    wall = (t1 - t0) / 1e9 + drain
    st = rec.status
    rec.close()

    mb = total_bytes / 1e6
    print(f"wire(): {cpu_call:.0f} ns/call caller CPU (net of loop); wall {per_call:.0f} ns/call "
          f"incl. loop and GIL waits while the writer runs; {a.calls} calls of "
          f"~{total_bytes // a.calls} B over {a.sessions} sessions; load {os.getloadavg()[0]:.1f}")
    print(f"recorded {mb:.1f} MB in {wall:.2f} s end to end -> {mb / wall:.1f} MB/s "
          f"(fsync {'off' if a.no_fsync else 'on'}); drain after last call {drain:.2f} s")
    print(f"chunks {st['chunks']}, stored {st['stored_bytes'] / 1e6:.1f} MB "
          f"(zstd ratio {st['raw_bytes'] / max(1, st['stored_bytes']):.1f}x), "
          f"throttled {st['throttled']} times")
    if a.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
