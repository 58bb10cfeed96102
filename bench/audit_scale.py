"""Audit index at scale: build throughput, `audit --task` latency, closed-session latency.

    .venv/bin/python bench/audit_scale.py [--sessions 10000] [--statements 100] [--dir D]

Generates recordings with the recorder's own writer (the proxy's code path from
SessionRecorder down: records, chunks, chain, signatures, local store): ``--sessions``
sessions of ``--statements`` simple-protocol statements each (Query, decision, RowDescription,
DataRow, CommandComplete, ReadyForQuery; every 20th statement denied), ten sessions per task,
a grant.issued event per task. Then measures:

  1. index build (`index rebuild`): seconds and MB/s of stored recordings;
  2. `audit --task` on a random task: in-process (open index read-only, answer, JSON) and as
     the CLI (`pgwitness audit --task T --no-update --format json`, a new process), and the
     no-op `index update` an `audit` does first by default;
  3. a session closed while `index update --watch` runs: seconds until it is in the index.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from devtools import testing  # noqa: E402
from recorder.audit import answer, index  # noqa: E402
from recorder.config import RecorderConfig  # noqa: E402
from recorder.store.local import LocalStore  # noqa: E402
from recorder.writer import Recorder  # noqa: E402

ALLOW = {"outcome": "allowed", "statements": [{"rule": "scope.read", "allowed": True,
                                                "class": "READ", "reads": ["public.orders"]}]}
DENY = {"outcome": "denied", "statements": [{"rule": "deny.write", "allowed": False,
                                              "class": "WRITE", "reason": "not in scope"}],
        "error": "permission denied by pgwitness"}


def generate(store: LocalStore, key, base: Path, sessions: int, statements: int) -> None:
    cfg = RecorderConfig(store=str(store.root), spool_dir=str(base / "spool"), fsync=False,
                         max_memory_bytes=512 << 20)
    rec = Recorder(cfg, store=store, signing_key=key)
    rec.start()
    answer_rows = (testing.row_description("id", "total") + testing.data_row("42", "19.99")
                   + testing.command_complete("SELECT 1") + testing.ready())
    denied = testing.error("42501", "permission denied by pgwitness") + testing.ready()
    batch = 200
    for start in range(0, sessions, batch):
        live = []
        for i in range(start, min(sessions, start + batch)):
            task = f"TASK-{i // 10:05d}"
            if i % 10 == 0:
                rec.control_event("grant.issued", {
                    "grant_id": f"g{i // 10}", "agent": f"agent-{i % 7}", "task": task,
                    "reason": "bench", "by": "bench", "at": "2030-01-01T00:00:00+00:00",
                    "not_before": "2030-01-01T00:00:00+00:00",
                    "expires_at": "2030-01-01T01:00:00+00:00", "scopes": "read:public.orders"})
            live.append(rec.open_session({"agent": f"agent-{i % 7}", "task": task,
                                          "grant_id": f"g{i // 10}", "database": "app",
                                          "client_addr": "127.0.0.1:5000"}))
        for n in range(statements):
            for s in live:
                if n % 20 == 19:
                    s.wire("c2s", testing.query(f"delete from orders where id = {n}"))
                    s.decision(DENY, True)
                    s.wire("s2c", denied)
                else:
                    s.wire("c2s", testing.query(f"select id, total from orders where id = {n}"))
                    s.decision(ALLOW, False)
                    s.wire("s2c", answer_rows)
        for s in live:
            s.end("terminate")
        print(f"  generated {min(sessions, start + batch)}/{sessions} sessions", flush=True)
    rec.close(timeout=600)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--statements", type=int, default=100)
    ap.add_argument("--dir", default=None, help="work directory (kept; default: a tmp dir)")
    ap.add_argument("--reuse", action="store_true", help="reuse recordings already in --dir")
    ap.add_argument("--queries", type=int, default=20)
    a = ap.parse_args()
    base = Path(a.dir or tempfile.mkdtemp(prefix="pgwitness-audit-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    store = LocalStore(base / "rec", fsync=False)
    keyfile = base / "key.pem"
    if a.reuse and keyfile.exists():
        key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    else:
        key = Ed25519PrivateKey.generate()
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    pub = base / "key.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"work dir {base}; {os.cpu_count()} CPUs (shared machine: other jobs may be running)")
    if not a.reuse:
        t0 = time.monotonic()
        generate(store, key, base, a.sessions, a.statements)
        print(f"generate: {a.sessions} sessions x {a.statements} statements in "
              f"{time.monotonic() - t0:.1f} s")
    size = du(base / "rec")
    idx = base / "audit.duckdb"
    t0 = time.monotonic()
    r = index.rebuild(idx, store, [key.public_key()])
    build = time.monotonic() - t0
    print(f"index build: {r.indexed} recordings, {size / 1e6:.1f} MB stored "
          f"({r.bytes / 1e6:.1f} MB wire data) in {build:.1f} s = {size / 1e6 / build:.2f} MB/s "
          f"stored ({r.bytes / 1e6 / build:.2f} MB/s wire); index file "
          f"{idx.stat().st_size / 1e6:.1f} MB")
    con = index.connect(idx, read_only=True)
    nst = con.execute("select count(*) from statements").fetchone()[0]
    print(f"index holds {nst} statements")
    con.close()

    tasks = [f"TASK-{random.randrange(max(1, a.sessions // 10)):05d}" for _ in range(a.queries)]
    lat = []
    for t in tasks:
        t0 = time.monotonic()
        con = index.connect(idx, read_only=True)
        ans = answer.audit(con, answer.Filters(task=t))
        answer.write_json(ans, io.StringIO())
        con.close()
        lat.append(time.monotonic() - t0)
    rows = sum(len(s["statement_rows"]) for g in ans["grants"] for s in g["sessions"])
    print(f"audit --task (in process): median {statistics.median(lat) * 1000:.0f} ms, "
          f"max {max(lat) * 1000:.0f} ms over {len(lat)} tasks ({rows} statements each)")
    cli = [str(Path(sys.executable).parent / "pgwitness"), "audit", "--store", str(store.root),
           "--index", str(idx), "--format", "json", "--task", tasks[0]]
    for label, extra in (("--no-update", ["--no-update"]),
                         ("with the default index update first", ["--public-key", str(pub)])):
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run(cli + extra, check=True, stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - t0)
        print(f"pgwitness audit --task ({label}), whole process: median "
              f"{statistics.median(times) * 1000:.0f} ms")
    t0 = time.monotonic()
    r = index.update(idx, store, [key.public_key()])
    print(f"no-op index update over {a.sessions} sessions: {(time.monotonic() - t0) * 1000:.0f} ms")

    # closed-session latency with the watcher running
    stop = threading.Event()
    w = threading.Thread(target=index.watch, args=(idx, store, [key.public_key()]),
                         kwargs={"interval": 0.5, "stop": stop.is_set}, daemon=True)
    w.start()
    rec = Recorder(RecorderConfig(store=str(store.root), spool_dir=str(base / "spool2"),
                                  fsync=False), store=store, signing_key=key)
    rec.start()
    delays = []
    for i in range(5):
        s = rec.open_session({"agent": "late", "task": "LATE", "grant_id": "glate"})
        s.wire("c2s", testing.query(f"select {i}"))
        s.decision(ALLOW, False)
        s.wire("s2c", testing.command_complete("SELECT 1") + testing.ready())
        s.end("terminate")
        closed = time.monotonic()
        while True:
            try:
                con = index.connect(idx, read_only=True, wait=0.05)
                got = con.execute("select count(*) from statements where session_id = ?",
                                  [s.id]).fetchone()[0]
                con.close()
            except Exception:
                got = 0
            if got:
                break
            time.sleep(0.02)
        delays.append(time.monotonic() - closed)
    stop.set()
    rec.close()
    w.join(30)
    print(f"closed session in the index after: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s (watcher interval 0.5 s; includes the writer's seal+upload)")
    print(json.dumps({"sessions": a.sessions, "statements": nst, "stored_mb": size / 1e6,
                      "build_s": build, "build_mb_s": size / 1e6 / build,
                      "audit_task_ms_median": statistics.median(lat) * 1000,
                      "closed_to_indexed_s_max": max(delays)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
