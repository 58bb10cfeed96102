"""Where a short session's recording CPU goes: per thread and per piece, µs per connection.

    .venv/bin/python bench/recorder_profile.py [--seconds 10] [--clients 4] [--preset recording-on]

Starts a throwaway cluster and one pgwitness (this tree) whose recorder functions are
wrapped with per-thread CPU and wall-clock timers (``serve`` below, through the
``_pgwitness`` step of bench/pgbench_compare.py), runs ``pgbench -C -S -c N`` (a new
connection per transaction) and prints, per connection: the CPU of each of the proxy's
threads (from /proc/PID/task/*/stat) and of each wrapped piece (exclusive of wrapped
pieces inside it), how many fsyncs, spool batches and sealer wake-ups it cost.

``RECPROF_NO_UPLOAD=1`` in the environment leaves the uploader idle (the spool grows): what
the proxy does with recording on but the store's work taken away.

The timers cost a little themselves (~1 µs per wrapped call); compare pieces, not totals
against pgbench_compare's figures.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the wrapped proxy (runs as `recorder_profile.py serve ...`) --------------------------

_stats: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # calls, cpu ns, wall ns
_local = threading.local()


def _timed(name: str, fn):
    """Wrap ``fn``: book its CPU and wall time to ``name``, minus wrapped calls inside it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        # "fsync" is booked to the piece that called it
        key = f"{stack[-1][2]}: fsync" if name == "fsync" and stack else name
        stack.append([0, 0, key])  # CPU and wall of wrapped calls inside this one
        try:
            return fn(*args, **kwargs)
        finally:
            inner_c, inner_w, _ = stack.pop()
            c, w = time.thread_time_ns() - c0, time.perf_counter_ns() - w0
            s = _stats[key]
            s[0] += 1
            s[1] += c - inner_c
            s[2] += w - inner_w
            if stack:
                stack[-1][0] += c
                stack[-1][1] += w

    return wrapper


def _patch(obj, attr: str, name: str) -> None:
    setattr(obj, attr, _timed(name, getattr(obj, attr)))


class _Shim:
    """A module stand-in: every attribute from ``module``, some replaced."""

    def __init__(self, module, **over):
        self._m = module
        self.__dict__.update(over)

    def __getattr__(self, name):
        return getattr(self._m, name)


def _install() -> None:
    import hashlib

    import zstandard

    import proxy.metrics as pm
    import proxy.server as ps
    from recorder import chunks, signing, spool, upload_process, uploader, writer
    from recorder.store import local

    _patch(writer.Recorder, "open_session", "main: open_session (start record + objects)")
    _patch(writer.Recorder, "_start_record", "main: session.start record")
    _patch(writer.Recorder, "_index", "index entry (control stream)")
    _patch(writer.SessionRecorder, "end", "main: session.end record")
    _patch(writer.SessionRecorder, "wire", "main: wire() appends")
    _patch(writer.SessionRecorder, "event", "main: event() appends")
    _patch(writer.SessionRecorder, "decision_json", "main: decision appends")
    _patch(writer.Recorder, "_seal", "sealer: cutting records into chunks")
    _patch(writer.Recorder, "_sealed_objects", "sealer: chunk/ckpt objects (rest)")
    _patch(chunks, "encode_chunk", "sealer: chunk header (encode_chunk rest)")
    _patch(chunks, "chain_next", "sealer: SHA-256 chain + chunk digest")
    _patch(signing.Checkpoint, "signed", "sealer: checkpoint encode")
    _patch(spool.Spool, "write", "sealer: spool write (rest)")
    _patch(spool, "write_file", "sealer: spool file create+write+fsync")
    _patch(spool, "fsync_dir", "sealer: spool dir fsync")
    # The uploader's pieces are timed where it runs in this process (a store object, or
    # ``recorder.upload_process = false``); the product's upload process is a child whose
    # CPU the thread table shows as one row.
    _patch(uploader.Uploader, "upload", "uploader: batch (rest)")
    _patch(spool.Batch, "read", "uploader: spool batch read")
    _patch(spool.Spool, "remove", "uploader: spool batch remove")
    _patch(local.LocalStore, "put", "uploader: store put (rest)")
    _patch(local.LocalStore, "put_many", "uploader: store put_many (rest)")
    _patch(local.LocalStore, "_mkdirs_deferred", "uploader: store mkdirs")
    _patch(local.LocalStore, "_open_unnamed", "uploader: store file create")
    _patch(local.LocalStore, "_mkdirs", "uploader: store mkdirs (+dir fsync)")
    _patch(local, "write_file", "uploader: store file create+write+fsync")
    _patch(local, "fsync_dir", "uploader: store dir fsync")
    _patch(uploader.Uploader, "_log_head", "uploader: control head log")
    _patch(pm.RecorderExporter, "update", "main: recorder metrics")
    _patch(ps.ProxyServer, "_update_gauges", "main: gauges (once a second)")

    raw_fsync = os.fsync
    os.fsync = _timed("fsync", raw_fsync)

    class Compressor:
        def __init__(self, *a, **k):
            self._z = zstandard.ZstdCompressor(*a, **k)
            self.compress = _timed("sealer: zstd compress", self._z.compress)

    writer.zstandard = _Shim(zstandard, ZstdCompressor=Compressor)
    chunks_sha = _timed("sealer: SHA-256 chain + chunk digest", hashlib.sha256)
    writer.hashlib = _Shim(hashlib, sha256=chunks_sha)
    key_sign = {}

    def signed(self, private_key):
        f = key_sign.get(id(private_key))
        if f is None:
            f = key_sign[id(private_key)] = _ShimKey(private_key)
        return orig_signed(self, f)

    class _ShimKey:
        def __init__(self, k):
            self.sign = _timed("sealer: Ed25519 sign", k.sign)

    orig_signed = signing.Checkpoint.signed
    signing.Checkpoint.signed = signed

    if os.environ.get("RECPROF_NO_UPLOAD"):  # experiment: the uploader idle (spool grows)
        upload_process.UploadProcess.submit = lambda self, batch: None  # type: ignore[method-assign]
        uploader.Uploader.upload = lambda self, batch: time.sleep(3600)  # type: ignore[method-assign]
    out = os.environ["PGW_PROFILE_OUT"]

    def dumper():
        trigger = Path(out + ".dump")
        while True:
            time.sleep(0.02)
            if trigger.exists():
                _dump(out)
                trigger.unlink()

    threading.Thread(target=dumper, name="profile-dumper", daemon=True).start()


def _thread_cpu() -> dict[str, int]:
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, int] = collections.Counter()
    for st in Path("/proc/self/task").glob("*/stat"):
        try:
            text = st.read_text()
        except OSError:
            continue
        tid = int(st.parent.name)
        fields = text[text.rindex(")") + 2 :].split()
        name = names.get(tid, "other (not a Python thread)")
        if name.startswith("pgwitness-upload_"):
            name = "pgwitness-upload pool"
        elif name.startswith(("asyncio_", "ThreadPoolExecutor")):
            name = "executor pool"
        out[name] += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _CLK_TCK
    for children in Path("/proc/self/task").glob("*/children"):  # the upload process
        for pid in children.read_text().split():
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])
            out["upload process (child)"] += ticks * 1_000_000_000 // _CLK_TCK
    return dict(out)


def _dump(path: str) -> None:
    doc = {"pieces": {k: list(v) for k, v in list(_stats.items())}, "threads": _thread_cpu()}
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(doc))
    os.rename(tmp, path)


def serve(argv: list[str]) -> int:
    if os.environ.get("PGW_PROFILE_OUT") and argv[:1] == ["serve"]:  # not keygen, grant
        _install()
    from proxy.cli import main

    return main(argv)


# ---- the driver ---------------------------------------------------------------------------


def _snapshot(out: Path) -> dict:
    trig = Path(str(out) + ".dump")
    trig.touch()
    deadline = time.monotonic() + 10
    while trig.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return json.loads(out.read_text())


def drive(a: argparse.Namespace) -> int:
    import bench.pgbench_compare as pc

    workdir = Path(tempfile.mkdtemp(prefix="pgw-recprof-")).absolute()
    os.chmod(workdir, 0o755)
    out = workdir / "profile.json"
    wrapper = workdir / "pgwitness"
    wrapper.write_text(
        f"#!/bin/sh\nPGW_PROFILE_OUT={out} PYTHONPATH={REPO} exec {sys.executable} "
        f'{Path(__file__).resolve()} serve "$@"\n'
    )
    wrapper.chmod(0o755)
    procs = pc.Processes()
    pg = pc.LocalCluster(workdir / "pg")
    try:
        pg.start()
        pg.create_role(pc.UPSTREAM_USER, pc.UPSTREAM_PASSWORD, createdb=True)
        pg.create_database(pc.DB, owner=pc.UPSTREAM_USER)
        direct = pc.Target("direct", pg.port, pc.UPSTREAM_USER, pc.UPSTREAM_PASSWORD)
        subprocess.run(
            [
                a.pgbench,
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                pg.host,
                "-p",
                str(pg.port),
                "-U",
                pc.UPSTREAM_USER,
                pc.DB,
            ],
            env=pc.client_env(direct),
            check=True,
            capture_output=True,
        )
        override = {**pc.PROXY_PRESETS[a.preset], "_pgwitness": str(wrapper)}
        t = pc.start_pgwitness(procs, pg, workdir, str(wrapper), a.preset, override)
        pc.run_pgbench(a.pgbench, t, "connect-c4", 2, 0)  # warm-up
        time.sleep(1.5)  # let the warm-up's chunks reach the store
        s0 = _snapshot(out)
        l0 = os.getloadavg()[0]
        argv = [
            a.pgbench,
            "-h",
            "127.0.0.1",
            "-p",
            str(t.port),
            "-U",
            t.user,
            "-n",
            "-T",
            str(a.seconds),
            "-C",
            "-S",
            "-c",
            str(a.clients),
            "-j",
            "2",
            pc.DB,
        ]
        r = subprocess.run(argv, env=pc.client_env(t), capture_output=True, text=True, check=True)
        time.sleep(1.5)  # the last sessions' chunks, index entries and uploads
        s1 = _snapshot(out)
        n = int(pc._TXN.search(r.stdout).group(1))
        tps = float(pc._TPS.search(r.stdout).group(1))
    finally:
        procs.stop_all()
        pg.stop()
    print(
        f"pgbench -C -S -c {a.clients} -T {a.seconds} ({a.preset}): {n} connections, "
        f"{tps:.0f} tps, load {l0:.2f} at the start"
    )
    print(f"\n{'thread':<34} {'CPU µs/conn':>12}")
    th0, th1 = s0["threads"], s1["threads"]
    tot = 0.0
    for name in sorted(th1, key=lambda k: -(th1[k] - th0.get(k, 0))):
        us = (th1[name] - th0.get(name, 0)) / 1e3 / n
        tot += us
        print(f"{name:<34} {us:>12.1f}")
    print(f"{'total':<34} {tot:>12.1f}")
    print(
        f"\n{'piece (exclusive)':<48} {'calls/conn':>10} {'CPU µs/conn':>12} "
        f"{'wall µs/conn':>13} {'CPU µs/call':>12}"
    )
    p0, p1 = s0["pieces"], s1["pieces"]
    rows = []
    for name, (c, cpu, wall) in p1.items():
        c0, cpu0, wall0 = p0.get(name, [0, 0, 0])
        if c - c0:
            rows.append(
                (
                    name,
                    (c - c0) / n,
                    (cpu - cpu0) / 1e3 / n,
                    (wall - wall0) / 1e3 / n,
                    (cpu - cpu0) / 1e3 / (c - c0),
                )
            )
    for name, calls, cpu, wall, per in sorted(rows):
        print(f"{name:<48} {calls:>10.2f} {cpu:>12.1f} {wall:>13.1f} {per:>12.1f}")
    if a.json:
        Path(a.json).write_text(
            json.dumps({"connections": n, "tps": tps, "before": s0, "after": s1}, indent=1)
        )
    return 0


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        return serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--preset", default="recording-on")
    ap.add_argument("--pgbench", default="pgbench")
    ap.add_argument("--json")
    return drive(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
