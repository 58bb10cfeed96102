"""A recording process killed with SIGKILL while its store is down: the next start uploads
its spool, nothing sealed is lost (a real subprocess, so not a unit test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from recorder import chunks
from recorder.config import RecorderConfig
from recorder.records import Kind
from recorder.replay import iter_records
from recorder.signing import generate_keypair, load_public_key
from recorder.verify import verify_session
from recorder.writer import Recorder
from tests.support.wait import wait_for


def test_simulated_crash_loses_nothing_spooled(tmp_path):
    """kill -9 a recording process whose store is down; the next start() uploads its spool."""
    spool, store_dir = tmp_path / "spool", tmp_path / "store"
    keyfile, _ = generate_keypair(tmp_path / "k.pem")
    (tmp_path / "broken").write_text("a file where the store directory should be")
    script = textwrap.dedent(f"""
        import sys, time
        from devtools import testing
        from recorder.config import RecorderConfig
        from recorder.writer import Recorder
        cfg = RecorderConfig(store={str(tmp_path / "broken")!r}, spool_dir={str(spool)!r},
                             signing_key={str(keyfile)!r}, chunk_max_seconds=60)
        rec = Recorder.from_config(cfg)
        rec.start()
        s = rec.open_session({{"agent": "crash"}})
        for i in range(50):
            s.wire("c2s", testing.query(f"select {{i}}"))
        s.decision({{"rule": "deny.ddl"}}, denied=True)   # seals chunk through here
        deadline = time.monotonic() + 10
        while rec._in != rec._out or rec.status["spool_batches"] < 1:
            assert time.monotonic() < deadline, rec.status
            time.sleep(0.01)
        s.wire("c2s", testing.query("select 'unflushed'"))  # lost with the crash: allowed
        print(s.id, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        sid = p.stdout.readline().decode().strip()
        assert chunks.is_session_id(sid), sid
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert list(spool.glob("slot-*/*.spool"))

    cfg = RecorderConfig(store=str(store_dir), spool_dir=str(spool), signing_key=str(keyfile))
    rec = Recorder.from_config(cfg)
    rec.start()
    wait_for(lambda: rec.status["spool_batches"] == 0, 5, "leftover spool uploaded")
    rec.close()
    r = verify_session(rec.store, sid, load_public_key(f"{keyfile}.pub"))
    assert r.status == "open" and r.attested_through >= 0, r.summary()  # never ended: open
    recs = list(iter_records(rec.store, sid))
    assert sum(1 for x in recs if x.kind == Kind.WIRE) == 50
    assert recs[-1].kind == Kind.DECISION
    assert not list(spool.glob("slot-*/*.spool"))
    # the recovery is itself recorded in the new process's control stream
    events = [x for other in rec.store.sessions() if other != sid
              for x in iter_records(rec.store, other) if x.type == "recorder.spool_recovered"]
    assert len(events) == 1 and events[0].json()["batches"] >= 1
