"""What one statement costs the proxy, in process: the real ``Relay`` with the real policy
and recorder, fed pgbench's frames and Postgres's answers, no sockets.

    .venv/bin/python bench/statement_micro.py                         # every workload and mode
    .venv/bin/python bench/statement_micro.py --workload simple --profile full

Workloads (pgbench's own statements, a new literal in each):

* ``simple``    ``-S``: one Query per transaction
* ``prepared``  ``-S -M prepared``: Parse once, then Bind/Describe/Execute/Sync
* ``tpcb``      the default TPC-B-like script: BEGIN, 3 UPDATEs, SELECT, INSERT, END (7 Queries)

Modes: ``pass`` (no policy, no recorder: the relay's framing and bookkeeping), ``record``
(recorder only), ``policy`` (policy only), ``full`` (both: what the product ships).

CPU per transaction: ``caller`` is the event loop's thread (``time.thread_time``);
``process`` adds the recorder's sealer thread (encoding, zstd, SHA-256, Ed25519, spool
writes) and its upload process (store writes; a child: its CPU from ``/proc`` when the
measurement starts and from ``RUSAGE_CHILDREN`` once ``close`` has reaped it), measured
until everything is stored.
``--profile MODE`` runs cProfile over the caller's loop in that mode and prints where the
time goes, grouped by area.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from devtools import testing as t  # noqa: E402
from policy import StatementPolicy, parse_scopes  # noqa: E402
from policy.engine import SharedClassifications  # noqa: E402
from proxy.relay import Relay  # noqa: E402
from recorder.config import RecorderConfig  # noqa: E402
from recorder.writer import Recorder  # noqa: E402

TABLES = ",".join(f"public.pgbench_{x}" for x in ("accounts", "branches", "tellers", "history"))
SCOPES = f"read:{TABLES} write:{TABLES}"  # what bench/pgbench_compare.py's "full" grants

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
TPCB = [
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
    "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
    "END;",
]
_TAGS = ["BEGIN", "UPDATE 1", None, "UPDATE 1", "UPDATE 1", "INSERT 0 1", "COMMIT"]
_ROW = t.row_description("abalance")
_RFQ_I, _RFQ_T = t.ready(b"I"), t.ready(b"T")


def _values(rng: random.Random) -> dict:
    return {
        "aid": rng.randint(1, 1_000_000),
        "tid": rng.randint(1, 100),
        "bid": rng.randint(1, 10),
        "delta": rng.randint(-5000, 5000),
    }


def transactions(workload: str, n: int, seed: int = 1):
    """(client bytes, server answer) exchanges per transaction, a list per transaction."""
    rng = random.Random(seed)
    out = []
    if workload == "prepared":
        out.append([(t.parse(SELECT.format(aid="$1"), "P0_1") + t.sync(),
                     t.frame(b"1", b"") + _RFQ_I)])  # fmt: skip
    for _ in range(n):
        v = _values(rng)
        row = t.data_row(str(rng.randint(-10000, 10000)))
        if workload == "simple":
            out.append(
                [(t.query(SELECT.format(**v)), _ROW + row + t.command_complete("SELECT 1") + _RFQ_I)]
            )
        elif workload == "prepared":
            client = (
                t.bind([str(v["aid"]).encode()], "P0_1")
                + t.frame(b"D", b"P\x00")
                + t.execute()
                + t.sync()
            )
            server = t.frame(b"2", b"") + _ROW + row + t.command_complete("SELECT 1") + _RFQ_I
            out.append([(client, server)])
        else:
            txn = []
            for i, (sql, tag) in enumerate(zip(TPCB, _TAGS, strict=True)):
                answer = _ROW + row + t.command_complete("SELECT 1") if tag is None else (
                    t.command_complete(tag))  # fmt: skip
                txn.append((t.query(sql.format(**v)), answer + (_RFQ_I if i == 6 else _RFQ_T)))
            out.append(txn)
    return out


class Setup:
    def __init__(self, mode: str, workdir: Path):
        self.recorder = None
        self.workdir = workdir
        if mode in ("record", "full"):
            cfg = RecorderConfig(
                store=str(workdir / "store"), spool_dir=str(workdir / "spool"), create_key=False
            )
            self.recorder = Recorder(cfg, signing_key=Ed25519PrivateKey.generate())
            self.recorder.start()
        self.mode = mode
        self.shared = SharedClassifications()

    def relay(self) -> Relay:
        policy = None
        if self.mode in ("policy", "full"):
            policy = StatementPolicy(parse_scopes(SCOPES), task="BENCH-1", shared=self.shared)
        srec = None
        if self.recorder is not None:
            srec = self.recorder.open_session({"agent": "bench", "task": "BENCH-1"})
        return Relay(policy=policy, recorder=srec, health=self.recorder, grant_id="g-bench")

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close(timeout=60)

    def start_child_clock(self) -> float:
        """CPU seconds the upload process has used so far (0 without one), and from now on
        ``reaped_cpu`` counts from here: its whole life's CPU arrives there when reaped."""
        uploads = self.recorder._uploads if self.recorder is not None else None
        self._reaped0 = _children_cpu()
        if uploads is None or uploads.pid is None:
            return 0.0
        text = Path(f"/proc/{uploads.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def reaped_cpu(self) -> float:
        return _children_cpu() - self._reaped0


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def drive(relay: Relay, txns) -> None:
    """Feed the transactions; every 100, let the recorder catch up when its unsealed records
    pass half of its memory limit. A real session waits on the network between statements;
    this loop does not, and would otherwise run into the recorder's health gate (above
    ``max_memory_bytes`` it refuses statements, by design). Sleeping costs no CPU time, so
    the caller's and the process's CPU figures are unchanged by it."""
    fc, fs = relay.from_client, relay.from_server
    rec = relay.health
    limit = rec.config.max_memory_bytes // 2 if rec is not None else 0
    for i, txn in enumerate(txns):
        if rec is not None and i % 100 == 0:
            while rec.status["memory_bytes"] > limit:
                time.sleep(0.002)
        for client, server in txn:
            to_server, to_client = fc(client)
            if to_client or not to_server:
                raise RuntimeError(f"refused or held: {to_client!r}")
            fs(server)


def measure(workload: str, mode: str, n: int, warm: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="pgw-stmt-micro-"))
    setup = None
    try:
        setup = Setup(mode, workdir)
        relay = setup.relay()
        all_txns = transactions(workload, warm + n)
        drive(relay, all_txns[: warm + (workload == "prepared")])  # caches warm, shapes seen
        txns = all_txns[warm + (workload == "prepared") :]
        gc.collect()
        child0 = setup.start_child_clock()
        p0, c0 = time.process_time(), time.thread_time()
        drive(relay, txns)
        caller = time.thread_time() - c0
        if relay.recorder is not None:
            relay.recorder.end("client-terminate")
        setup.close()
        process = time.process_time() - p0 + setup.reaped_cpu() - child0
        return {"caller_us": caller * 1e6 / n, "process_us": process * 1e6 / n}
    finally:
        if setup is not None:
            setup.close()  # also after an error: never delete the spool under live threads
        shutil.rmtree(workdir, ignore_errors=True)


# where a function's time is booked in the profile table: first match on its file path
AREAS = [
    ("policy/classify/crosscheck.py", "policy: second opinion (pglast)"),
    ("policy/classify/pgparse.py", "policy: second opinion (pglast)"),
    ("pglast", "policy: second opinion (pglast)"),
    ("policy/number_shapes.py", "policy: lexer + fingerprint"),
    ("policy/lexer.py", "policy: lexer + fingerprint"),
    ("policy/classify/", "policy: classify (sqlglot)"),
    ("sqlglot", "policy: classify (sqlglot)"),
    ("policy/", "policy: engine, decide, caches"),
    ("proxy/decision_records.py", "decision record rendering"),
    ("json", "decision record rendering"),
    ("recorder/records.py", "decision record rendering"),
    ("recorder/", "recording append (caller side)"),
    ("proxy/relay.py", "relay: framing, Sync groups, _record"),
    ("proxy/wire/", "relay: framing, Sync groups, _record"),
]


def area(filename: str) -> str:
    for needle, name in AREAS:
        if needle in filename:
            return name
    return "other (" + Path(filename).name + ")"


def profile(workload: str, mode: str, n: int, warm: int, top: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pgw-stmt-micro-"))
    setup = None
    try:
        setup = Setup(mode, workdir)
        relay = setup.relay()
        all_txns = transactions(workload, warm + n)
        k = warm + (workload == "prepared")
        drive(relay, all_txns[:k])
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        drive(relay, all_txns[k:])
        prof.disable()
        setup.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stats = pstats.Stats(prof)
    by_area: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        by_area[area(filename)] = by_area.get(area(filename), 0.0) + tt
        rows.append((tt, ct, f"{Path(filename).name}:{line}({func})"))
    total = sum(by_area.values())
    print(f"\ncProfile, {workload} / {mode}, {n} transactions (cProfile inflates small "
          f"calls; read the shares): {total * 1e6 / n:.1f} µs/txn profiled")  # fmt: skip
    for name, tt in sorted(by_area.items(), key=lambda x: -x[1]):
        print(f"  {name:<42} {tt * 1e6 / n:7.2f} µs/txn  {100 * tt / total:5.1f}%")
    print(f"  top {top} functions by own time:")
    for tt, ct, name in sorted(rows, reverse=True)[:top]:
        print(f"    {tt * 1e6 / n:7.2f} own {ct * 1e6 / n:7.2f} cum µs/txn  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workload", default="simple,prepared,tpcb")
    ap.add_argument("--modes", default="pass,record,policy,full")
    ap.add_argument("--n", type=int, default=20000, help="transactions per measurement")
    ap.add_argument("--warm", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3, help="median of this many repeats")
    ap.add_argument("--profile", metavar="MODE", help="cProfile MODE instead of timing")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    workloads = a.workload.split(",")
    if a.profile:
        for w in workloads:
            profile(w, a.profile, a.n, a.warm, a.top)
        return 0
    modes = a.modes.split(",")
    print(f"CPU µs per transaction (median of {a.repeats}; repeats interleaved across modes); "
          f"load average {__import__('os').getloadavg()[0]:.1f}")  # fmt: skip
    for w in workloads:
        per = len(TPCB) if w == "tpcb" else 1
        res: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(a.repeats):
            for m in modes:
                res[m].append(measure(w, m, a.n, a.warm))
        med = {
            m: {k: statistics.median(r[k] for r in rs) for k in ("caller_us", "process_us")}
            for m, rs in res.items()
        }
        base = med.get("pass")
        print(f"\n{w} ({per} statement{'s' if per > 1 else ''} per transaction)")
        print(f"  {'mode':<8} {'caller':>8} {'process':>8} {'caller - pass':>14} "
              f"{'process - pass':>15} {'per statement':>14}")  # fmt: skip
        for m, v in med.items():
            dc = v["caller_us"] - base["caller_us"] if base else float("nan")
            dp = v["process_us"] - base["process_us"] if base else float("nan")
            print(f"  {m:<8} {v['caller_us']:8.2f} {v['process_us']:8.2f} {dc:14.2f} {dp:15.2f} "
                  f"{dp / per:14.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
