"""pgbench against direct Postgres, pgbouncer and pgwitness, interleaved, on one machine.

    .venv/bin/python bench/pgbench_compare.py                      # all targets, 3 x 10 s
    .venv/bin/python bench/pgbench_compare.py --targets direct,pgbouncer --rounds 2 -T 5
    .venv/bin/python bench/pgbench_compare.py --proxy-config default \\
        --proxy-config recording-on --json .bench/result.json

Everything runs on 127.0.0.1 from a throwaway directory; every process started here is
stopped on exit, error, Ctrl-C or SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devtools.localpg import LocalCluster, LocalClusterError, free_port, wait_for_port  # noqa: E402

UPSTREAM_USER, UPSTREAM_PASSWORD = "pgwitness", "upstream-secret"
CLIENT_USER, CLIENT_PASSWORD = "bench", "bench-secret"  # what pgbench presents to proxies
DB = "bench"

# name -> pgbench arguments (besides connection, -T and -n)
WORKLOADS: dict[str, list[str]] = {
    "select-c8": ["-S", "-c", "8", "-j", "2"],
    "select-c1": ["-S", "-c", "1", "-j", "1"],
    "select-prepared-c8": ["-S", "-M", "prepared", "-c", "8", "-j", "2"],
    # -C: a new connection (login, one SELECT, close) per transaction
    "connect-c4": ["-C", "-S", "-c", "4", "-j", "2"],
    "connect-c1": ["-C", "-S", "-c", "1", "-j", "1"],
    # pgbench's default builtin script (TPC-B like): 7 statements in a transaction, 3
    # UPDATEs, a SELECT and an INSERT between BEGIN and END, a new literal in each
    "tpcb-c8": ["-c", "8", "-j", "2"],
}
# What runs without --workloads: the earlier figures' commands stay as they were.
DEFAULT_WORKLOADS = ("select-c8", "select-c1", "select-prepared-c8")

# pgwitness configuration variants, deep-merged over pgwitness_config(). "{workdir}" in a
# string becomes the variant's own directory. Top-level keys starting with "_" are steps
# for the harness, not config: "_pgwitness" names another pgwitness executable for this
# variant (an A/B against another tree); "_keygen" runs `pgwitness keygen` into {workdir}/signing.key;
# "_grant_scopes" issues a grant with those scopes from the config's grant store and makes
# pgbench log in with its token (agent CLIENT_USER), so every statement goes through policy.
# "_client_tls" makes pgbench connect with sslmode=require. "{pgdir}" is the cluster's
# base directory (its server.crt and server.key serve the TLS variants).
# Key names follow common/config.py; adjust them here (only here) when it changes.
_PGBENCH_TABLES = ",".join(
    f"public.pgbench_{t}" for t in ("accounts", "branches", "tellers", "history")
)
# The product as shipped (issue 14): an agent's grant covering everything pgbench -S and
# TPC-B read and write, policy enforcing, every session recorded to the local store.
_RECORDING = {
    "_keygen": True,
    "recorder": {
        "enabled": True,
        "store": "{workdir}/recordings",
        "signing_key": "{workdir}/signing.key",
        "spool_dir": "{workdir}/spool",
    },
}
_FULL = {
    **_RECORDING,
    "_grant_scopes": [f"read:{_PGBENCH_TABLES}", f"write:{_PGBENCH_TABLES}"],
    "auth": {"users": {}},
    "grants": {"store": "sqlite:///{workdir}/grants.db"},
}
_TLS = {
    "_client_tls": True,
    "proxy": {"tls_cert": "{pgdir}/server.crt", "tls_key": "{pgdir}/server.key"},
    "upstream": {"sslmode": "require"},
}
PROXY_PRESETS: dict[str, dict] = {
    "default": {},
    "workers-2": {"proxy": {"workers": 2}},
    "recording-on": _RECORDING,
    # the full product without recording: the same grant, so TPC-B's writes pass too
    "policy-on": {k: v for k, v in _FULL.items() if k not in _RECORDING},
    "full": _FULL,
    # as the deployments in deploy/ run it: one worker process per CPU (workers = "auto")
    "full-cores": {**_FULL, "proxy": {"workers": "auto"}},
    "tls": _TLS,  # pass-through with TLS on both sides
    "full-tls": {**_FULL, **_TLS},
}


# ---- configuration for each target ----------------------------------------------------


def pgwitness_config(listen_port: int, pg: LocalCluster) -> dict:
    """The pgwitness TOML (as a dict) for the benchmark; the one place to adjust."""
    return {
        "proxy": {"listen": f"127.0.0.1:{listen_port}", "workers": 1},
        "upstream": {
            "host": pg.host,
            "port": pg.port,
            "user": UPSTREAM_USER,
            "password": UPSTREAM_PASSWORD,
            "sslmode": "disable",
        },
        "auth": {"users": {CLIENT_USER: CLIENT_PASSWORD}},
        "metrics": {"listen": ""},
        "recorder": {"enabled": False},
    }


def pgbouncer_ini(
    listen_port: int, pg: LocalCluster, workdir: Path, tls: bool = False, process: str = ""
) -> str:
    """``process``: one of several pgbouncer processes sharing the port (``so_reuseport``),
    each with its own pidfile and log; "" for the usual single process."""
    if tls:  # both sides: clients must use TLS, the server login uses it too
        tls_lines = f"""\
server_tls_sslmode = require
client_tls_sslmode = require
client_tls_cert_file = {pg.server_cert}
client_tls_key_file = {pg.server_key}
"""
    else:
        tls_lines = "server_tls_sslmode = disable\nclient_tls_sslmode = disable\n"
    reuse = "so_reuseport = 1\n" if process else ""  # several processes share the port
    return f"""\
[databases]
{DB} = host={pg.host} port={pg.port} dbname={DB} user={UPSTREAM_USER} password={UPSTREAM_PASSWORD}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir}/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = {workdir}/pgbouncer{process}.log
pidfile = {workdir}/pgbouncer{process}.pid
ignore_startup_parameters = extra_float_digits
{reuse}{tls_lines}log_connections = 0
log_disconnections = 0
"""


def deep_merge(base: dict, override: dict) -> dict:
    """Tables merge key by key; an empty table replaces (to clear a default such as users)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _fill(value: object, workdir: Path, pgdir: Path | None = None) -> object:
    if isinstance(value, str):
        value = value.replace("{workdir}", str(workdir))
        return value.replace("{pgdir}", str(pgdir)) if pgdir is not None else value
    if isinstance(value, dict):
        return {k: _fill(v, workdir, pgdir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, workdir, pgdir) for v in value]
    return value


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dump_toml(doc: dict) -> str:
    """Top-level scalars, then one [table] per top-level dict; deeper dicts go inline."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for key, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{_toml_key(key)}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def parse_variant(spec: str) -> tuple[str, dict]:
    """``NAME`` (a preset) or ``NAME=FILE.toml`` (a fragment merged over the base config)."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        with open(path, "rb") as f:
            return name, tomllib.load(f)
    if spec not in PROXY_PRESETS:
        raise SystemExit(f"unknown --proxy-config {spec!r}; presets: {', '.join(PROXY_PRESETS)}")
    return spec, PROXY_PRESETS[spec]


# ---- processes --------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    user: str
    password: str
    proc: subprocess.Popen | None = None
    log: Path | None = None
    sslmode: str = "disable"  # what the client (pgbench, libpq) asks for


class Processes:
    """Every long-running child we start; ``stop_all`` ends them (process group, TERM, KILL)."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def spawn(
        self, name: str, argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        with open(log, "ab") as out:
            # Own session: a Ctrl-C on the terminal reaches us, and we stop children in order.
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _name, proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._procs.clear()


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_ready(target: Target, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise RuntimeError(
                f"{target.name} exited with {target.proc.returncode}\n{_tail(target.log)}"
            )
        try:
            wait_for_port("127.0.0.1", target.port, timeout=0.2)
            return
        except LocalClusterError:
            continue
    raise RuntimeError(f"{target.name} not listening on {target.port} after {timeout}s\n"
                       f"{_tail(target.log)}")  # fmt: skip


def start_pgbouncer(
    procs: Processes,
    pg: LocalCluster,
    workdir: Path,
    binary: str,
    as_root: bool,
    tls: bool = False,
    processes: int = 1,
) -> Target:
    """pgbouncer as it is usually run (one process), or ``processes`` of them sharing the
    port with ``so_reuseport`` (pgbouncer-2: what a multi-core pgbouncer deployment does,
    the fair match for pgwitness with one worker per CPU). One process group either way,
    so the CPU figure covers all of them."""
    name = "pgbouncer-tls" if tls else "pgbouncer" if processes == 1 else f"pgbouncer-{processes}"
    bdir = workdir / name
    bdir.mkdir()
    port = free_port()
    userlist = bdir / "userlist.txt"
    userlist.write_text(f'"{CLIENT_USER}" "{CLIENT_PASSWORD}"\n')
    os.chmod(userlist, 0o600)
    inis = []
    for i in range(processes):
        ini = bdir / (f"pgbouncer-{i}.ini" if processes > 1 else "pgbouncer.ini")
        ini.write_text(pgbouncer_ini(port, pg, bdir, tls, f"-{i}" if processes > 1 else ""))
        inis.append(ini)
    if processes == 1:
        argv = [binary, str(inis[0])]
    else:  # a shell waiting on all of them, in the group stop_all signals
        argv = ["sh", "-c", " & ".join(f"{binary} {ini}" for ini in inis) + " & wait"]
    if as_root:  # pgbouncer refuses to run as root
        for p in (bdir, userlist, *inis):
            shutil.chown(p, "postgres", "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    t = Target(name, port, CLIENT_USER, CLIENT_PASSWORD, log=bdir / "stdout.log",
               sslmode="require" if tls else "disable")  # fmt: skip
    t.proc = procs.spawn(name, argv, t.log, bdir)
    wait_ready(t)
    return t


def start_floor(procs: Processes, pg: LocalCluster, workdir: Path) -> Target:
    """bench/floor_proxy.py: bytes copied both ways; pgbench logs in to Postgres through it."""
    fdir = workdir / "floor"
    fdir.mkdir()
    port = free_port()
    argv = [sys.executable, str(REPO / "bench" / "floor_proxy.py"), str(port), str(pg.port)]
    t = Target("floor", port, UPSTREAM_USER, UPSTREAM_PASSWORD, log=fdir / "stdout.log")
    t.proc = procs.spawn("floor", argv, t.log, fdir)
    wait_ready(t)
    return t


def pgwitness_command(binary: str) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment to run pgwitness: the console script, else ``-m proxy.cli``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGWITNESS_"))}
    if os.access(binary, os.X_OK):
        return [binary], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "proxy.cli"], env


def start_pgwitness(
    procs: Processes, pg: LocalCluster, workdir: Path, binary: str, variant: str, override: dict
) -> Target:
    vdir = workdir / f"pgwitness-{variant}"
    vdir.mkdir()
    port = free_port()
    override = _fill(override, vdir, pg.base_dir)
    steps = {k: v for k, v in override.items() if k.startswith("_")}
    config = deep_merge(
        pgwitness_config(port, pg), {k: v for k, v in override.items() if k not in steps}
    )
    path = vdir / "pgwitness.toml"
    path.write_text(dump_toml(config))
    os.chmod(path, 0o600)
    cmd, env = pgwitness_command(steps.get("_pgwitness", binary))
    name = "pgwitness" if variant == "default" else f"pgwitness:{variant}"
    password = CLIENT_PASSWORD
    if steps.get("_keygen"):
        _check_call([*cmd, "keygen", "--out", str(vdir / "signing.key")], env, vdir)
    if steps.get("_grant_scopes"):
        argv = [*cmd, "grant", "--config", str(path), "--json", "--agent", CLIENT_USER,
                "--task", "BENCH-1", "--reason", "pgbench_compare", "--database", DB,
                "--ttl", "1d", "--granted-by", "bench"]  # fmt: skip
        for scope in steps["_grant_scopes"]:
            argv += ["--scope", scope]
        password = json.loads(_check_call(argv, env, vdir))["token"]
    t = Target(name, port, CLIENT_USER, password, log=vdir / "pgwitness.log",
               sslmode="require" if steps.get("_client_tls") else "disable")  # fmt: skip
    t.proc = procs.spawn(name, [*cmd, "serve", "--config", str(path)], t.log, vdir, env=env)
    wait_ready(t)
    return t


def _check_call(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}{proc.stdout.strip()}")  # fmt: skip
    return proc.stdout


# ---- pgbench ------------------------------------------------------------------------


@dataclass
class Run:
    round: int
    workload: str
    target: str
    tps: float
    latency_ms: float
    transactions: int
    failed: int
    command: str
    # per-transaction median/p99 from pgbench's log (-l); only for workloads in LOGGED
    latency_us_p50: float | None = None
    latency_us_p99: float | None = None
    # -C workloads: pgbench's "average connection time" (login and close, per connection)
    connection_ms: float | None = None
    # CPU (user + system, every process and thread of the target's process group, from
    # /proc/PID/stat) during the run, per transaction; None for direct
    cpu_us_per_txn: float | None = None
    # the same for the process group leader's main thread alone (pgwitness with workers = 1:
    # the event loop; the rest of cpu_us_per_txn is the recorder's and other threads)
    loop_cpu_us_per_txn: float | None = None
    # ...split into user and system (kernel) time: a Python proxy's own work is user time,
    # the socket traffic every proxy has (floor, pgbouncer) mostly system time
    loop_user_us_per_txn: float | None = None
    loop_sys_us_per_txn: float | None = None
    # the main thread's minor page faults per transaction (kernel time no system call
    # count shows: memory the allocator hands back and touches again)
    loop_faults_per_txn: float | None = None


@dataclass
class Summary:
    workload: str
    target: str
    tps_median: float
    tps_min: float
    tps_max: float
    latency_ms_median: float
    added_latency_us_vs_direct: float | None = None
    # median over rounds of each run's per-transaction median (workloads in LOGGED only)
    latency_us_p50: float | None = None
    latency_us_p99: float | None = None
    added_p50_us_vs_direct: float | None = None
    # median over rounds of (this p50 - direct's p50 in the same round): robust to drift
    paired_added_p50_us: float | None = None
    ratio_vs_direct: float | None = None
    ratio_vs_pgbouncer: float | None = None
    # Median over rounds of the ratio within a round: robust to load that drifts between rounds.
    paired_vs_direct: float | None = None
    paired_vs_pgbouncer: float | None = None
    # the TLS comparison (target pgbouncer-tls in the run): TLS on both sides of both
    ratio_vs_pgbouncer_tls: float | None = None
    paired_vs_pgbouncer_tls: float | None = None
    # against two pgbouncer processes sharing the port (target pgbouncer-2 in the run)
    ratio_vs_pgbouncer_2: float | None = None
    paired_vs_pgbouncer_2: float | None = None
    rounds: list[float] = field(default_factory=list)
    cpu_us_per_txn: float | None = None  # median over rounds
    # the main thread's user and system CPU per transaction, medians over rounds
    loop_user_us_per_txn: float | None = None
    loop_sys_us_per_txn: float | None = None


_TPS = re.compile(
    r"^tps = ([\d.]+) \((?:without initial connection time|including reconnection times)\)", re.M
)
_CONN = re.compile(r"^average connection time = ([\d.]+) ms", re.M)
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)
_TXN = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


# Workloads whose every transaction is logged (pgbench -l) for a true median latency. Only
# single-client ones: logging costs the client a little, and at -c 1 the latency is the
# point (pgbench's "latency average" is a mean, pulled up by scheduler hiccups).
LOGGED = frozenset({"select-c1"})


def pgbench_argv(
    pgbench: str, target: Target, workload: str, duration: int, log_prefix: str | None = None
) -> list[str]:
    log = ["-l", f"--log-prefix={log_prefix}"] if log_prefix else []
    return [
        pgbench, "-h", "127.0.0.1", "-p", str(target.port), "-U", target.user,
        "-n", "-T", str(duration), *log, *WORKLOADS[workload], DB,
    ]  # fmt: skip


def latency_percentiles(log_dir: Path) -> tuple[float, float] | None:
    """(p50, p99) in µs over every transaction in pgbench's per-transaction logs."""
    lat: list[int] = []
    for path in log_dir.glob("pgbench_log*"):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():  # "client txn time_us ..."
                    lat.append(int(fields[2]))
    if not lat:
        return None
    lat.sort()
    return float(lat[len(lat) // 2]), float(lat[min(len(lat) - 1, int(len(lat) * 0.99))])


def client_env(target: Target) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=target.password, PGSSLMODE=target.sslmode, PGCONNECT_TIMEOUT="10")
    return env


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group ``pgid`` (all threads)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float, int]:
    """(user, system) CPU and minor page faults of process ``pid``'s main thread."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0, 0
    fields = text[text.rindex(")") + 2 :].split()  # minflt, utime, stime: fields 10, 14, 15
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK, int(fields[7])


def run_pgbench(pgbench: str, target: Target, workload: str, duration: int, rnd: int) -> Run:
    pgid = target.proc.pid if target.proc is not None else None
    cpu0 = group_cpu_seconds(pgid) if pgid else 0.0
    user0, sys0, faults0 = thread_cpu_seconds(pgid) if pgid else (0.0, 0.0, 0)
    with tempfile.TemporaryDirectory(prefix="pgw-bench-log-") as log_dir:
        prefix = "pgbench_log" if workload in LOGGED else None
        argv = pgbench_argv(pgbench, target, workload, duration, prefix)
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=client_env(target),
            timeout=duration + 60,
            cwd=log_dir,
        )
        cpu = group_cpu_seconds(pgid) - cpu0 if pgid else None
        user1, sys1, faults1 = thread_cpu_seconds(pgid) if pgid else (0.0, 0.0, 0)
        user, system, faults = user1 - user0, sys1 - sys0, faults1 - faults0
        pcts = latency_percentiles(Path(log_dir)) if prefix else None
    out = proc.stdout
    tps, lat = _TPS.search(out), _LAT.search(out)
    if proc.returncode != 0 or not tps or not lat:
        raise RuntimeError(
            f"pgbench against {target.name} failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()[-2000:]}\n{out[-1000:]}\n--- {target.name} log ---\n"
            f"{_tail(target.log)}"
        )
    txn, failed, conn = _TXN.search(out), _FAILED.search(out), _CONN.search(out)
    transactions = int(txn.group(1)) if txn else 0
    return Run(
        round=rnd,
        workload=workload,
        target=target.name,
        tps=float(tps.group(1)),
        latency_ms=float(lat.group(1)),
        transactions=transactions,
        failed=int(failed.group(1)) if failed else 0,
        command=shlex.join(argv),
        latency_us_p50=pcts[0] if pcts else None,
        latency_us_p99=pcts[1] if pcts else None,
        connection_ms=float(conn.group(1)) if conn else None,
        cpu_us_per_txn=cpu * 1e6 / transactions if cpu is not None and transactions else None,
        loop_cpu_us_per_txn=(user + system) * 1e6 / transactions if pgid and transactions else None,
        loop_user_us_per_txn=user * 1e6 / transactions if pgid and transactions else None,
        loop_sys_us_per_txn=system * 1e6 / transactions if pgid and transactions else None,
        loop_faults_per_txn=faults / transactions if pgid and transactions else None,
    )


def summarise(runs: list[Run], workloads: list[str], targets: list[str]) -> list[Summary]:
    out: list[Summary] = []
    for w in workloads:
        by_target: dict[str, Summary] = {}
        for t in targets:
            rs = [r for r in runs if r.workload == w and r.target == t]
            if not rs:
                continue
            tps = [r.tps for r in rs]
            by_target[t] = Summary(
                workload=w,
                target=t,
                tps_median=statistics.median(tps),
                tps_min=min(tps),
                tps_max=max(tps),
                latency_ms_median=statistics.median(r.latency_ms for r in rs),
                latency_us_p50=_median_of(r.latency_us_p50 for r in rs),
                latency_us_p99=_median_of(r.latency_us_p99 for r in rs),
                rounds=tps,
                cpu_us_per_txn=_median_of(r.cpu_us_per_txn for r in rs),
                loop_user_us_per_txn=_median_of(r.loop_user_us_per_txn for r in rs),
                loop_sys_us_per_txn=_median_of(r.loop_sys_us_per_txn for r in rs),
            )
        direct, bouncer = by_target.get("direct"), by_target.get("pgbouncer")
        bouncer_tls = by_target.get("pgbouncer-tls")
        bouncer_2 = by_target.get("pgbouncer-2")
        for s in by_target.values():
            if direct:
                s.ratio_vs_direct = s.tps_median / direct.tps_median
                s.added_latency_us_vs_direct = (
                    s.latency_ms_median - direct.latency_ms_median
                ) * 1000
                s.paired_vs_direct = _paired(runs, w, s.target, "direct")
                if s.latency_us_p50 is not None and direct.latency_us_p50 is not None:
                    s.added_p50_us_vs_direct = s.latency_us_p50 - direct.latency_us_p50
                    s.paired_added_p50_us = _paired(
                        runs, w, s.target, "direct", lambda r: r.latency_us_p50, float.__sub__
                    )
            if bouncer:
                s.ratio_vs_pgbouncer = s.tps_median / bouncer.tps_median
                s.paired_vs_pgbouncer = _paired(runs, w, s.target, "pgbouncer")
            if bouncer_tls:
                s.ratio_vs_pgbouncer_tls = s.tps_median / bouncer_tls.tps_median
                s.paired_vs_pgbouncer_tls = _paired(runs, w, s.target, "pgbouncer-tls")
            if bouncer_2:
                s.ratio_vs_pgbouncer_2 = s.tps_median / bouncer_2.tps_median
                s.paired_vs_pgbouncer_2 = _paired(runs, w, s.target, "pgbouncer-2")
            out.append(s)
    return out


def _median_of(values) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _paired(
    runs: list[Run],
    workload: str,
    target: str,
    base: str,
    value=lambda r: r.tps,
    compare=lambda mine, theirs: mine / theirs if theirs > 0 else None,
) -> float | None:
    """Median over rounds of ``compare(target's value, base's value)`` within each round."""
    by = {(r.target, r.round): value(r) for r in runs if r.workload == workload}
    pairs = [(v, by.get((base, rnd))) for (t, rnd), v in by.items() if t == target]
    found = [compare(v, b) for v, b in pairs if v is not None and b is not None]
    found = [x for x in found if x is not None]
    return statistics.median(found) if found else None


def _user_sys(s: Summary) -> str:
    if not s.loop_user_us_per_txn and not s.loop_sys_us_per_txn:  # none, or runuser's
        return "-"
    return f"{s.loop_user_us_per_txn:.1f}/{s.loop_sys_us_per_txn:.1f}"


def format_table(summaries: list[Summary]) -> str:
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (
        f"{'workload':<20} {'target':<24} {'tps (median)':>12} {'min..max':>17} "
        f"{'lat ms':>8} {'+lat µs':>8} {'x direct':>8} {'x pgbouncer':>11} "
        f"{'paired x direct':>15} {'paired x pgbouncer':>18} {'p50 µs':>7} {'+p50 µs':>8} "
        f"{'p99 µs':>7} {'paired +p50':>11} {'cpu µs/txn':>10} {'main usr/sys':>13}"
    )
    tls = any(s.ratio_vs_pgbouncer_tls is not None for s in summaries)
    if tls:
        head += f" {'x pgb-tls':>9} {'paired x pgb-tls':>16}"
    two = any(s.ratio_vs_pgbouncer_2 is not None for s in summaries)
    if two:
        head += f" {'x pgb-2':>8} {'paired x pgb-2':>14}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(
            f"{s.workload:<20} {s.target:<24} {s.tps_median:>12.0f} "
            f"{f'{s.tps_min:.0f}..{s.tps_max:.0f}':>17} {s.latency_ms_median:>8.3f} "
            f"{f(s.added_latency_us_vs_direct, '+.0f'):>8} {f(s.ratio_vs_direct, '.3f'):>8} "
            f"{f(s.ratio_vs_pgbouncer, '.3f'):>11} {f(s.paired_vs_direct, '.3f'):>15} "
            f"{f(s.paired_vs_pgbouncer, '.3f'):>18} {f(s.latency_us_p50, '.0f'):>7} "
            f"{f(s.added_p50_us_vs_direct, '+.0f'):>8} {f(s.latency_us_p99, '.0f'):>7} "
            f"{f(s.paired_added_p50_us, '+.0f'):>11} {f(s.cpu_us_per_txn, '.1f'):>10} "
            f"{_user_sys(s):>13}"
            + (
                f" {f(s.ratio_vs_pgbouncer_tls, '.3f'):>9} "
                f"{f(s.paired_vs_pgbouncer_tls, '.3f'):>16}"
                if tls
                else ""
            )
            + (
                f" {f(s.ratio_vs_pgbouncer_2, '.3f'):>8} {f(s.paired_vs_pgbouncer_2, '.3f'):>14}"
                if two
                else ""
            )
        )
    return "\n".join(lines)


# ---- connect latency ------------------------------------------------------------------


def connect_latency(targets: list[Target], n: int, rounds: int) -> dict[str, dict]:
    """Connect + ``SELECT 1`` + close with libpq (psycopg), ``n`` times per target per round,
    targets interleaved one connection at a time (so drifting load hits all alike).
    Per target: the median over rounds of each round's p50 and p90 (ms), and the median over
    rounds of (p50 - direct's p50 in that round)."""
    import psycopg

    per: dict[str, list[tuple[float, float]]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        samples: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(n):
            for t in targets:
                start = time.perf_counter()
                with psycopg.connect(
                    host="127.0.0.1", port=t.port, user=t.user, password=t.password,
                    dbname=DB, sslmode=t.sslmode, connect_timeout=10,
                ) as conn:  # fmt: skip
                    conn.execute("SELECT 1").fetchone()
                samples[t.name].append((time.perf_counter() - start) * 1000)
        for name, v in samples.items():
            v.sort()
            per[name].append((statistics.median(v), v[int(len(v) * 0.9)]))
    out: dict[str, dict] = {}
    direct = per.get("direct")
    for name, rs in per.items():
        row = {
            "p50_ms": statistics.median(r[0] for r in rs),
            "p90_ms": statistics.median(r[1] for r in rs),
            "round_p50_ms": [r[0] for r in rs],
        }
        if direct:
            row["paired_added_p50_ms"] = statistics.median(
                mine[0] - base[0] for mine, base in zip(rs, direct, strict=True)
            )
        out[name] = row
    return out


def format_connect_table(result: dict[str, dict], n: int) -> str:
    head = f"{'connect+SELECT 1+close':<24} {'p50 ms':>8} {'p90 ms':>8} {'paired +p50 ms':>15}"
    lines = [f"(libpq via psycopg, {n} per target per round)", head, "-" * len(head)]
    for name, r in result.items():
        added = r.get("paired_added_p50_ms")
        lines.append(
            f"{name:<24} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
            f"{'-' if added is None else format(added, '+.2f'):>15}"
        )
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.split("\n")[
            0
        ]
    except (OSError, subprocess.SubprocessError):
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--targets",
        default="direct,pgbouncer,pgwitness",
        help="comma list of direct, pgbouncer, pgwitness, floor, direct-tls, pgbouncer-tls,\n"
        "pgbouncer-2 (default: the first three; floor = bench/floor_proxy.py, a bare uvloop byte\n"
        "pump: the Python proxy floor; *-tls: TLS on both sides, sslmode=require, the cluster's\n"
        "cert; pgbouncer-2: two pgbouncer processes sharing the port with so_reuseport)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma list of {', '.join(WORKLOADS)} (default: {', '.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "-T", "--duration", type=int, default=10, help="seconds per pgbench run (default 10)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of warm-up per target before round 1 (default 2; 0: none)",
    )
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    p.add_argument(
        "--proxy-config",
        action="append",
        default=[],
        metavar="NAME[=FILE]",
        help="pgwitness variant: a preset "
        f"({', '.join(PROXY_PRESETS)}) or NAME=FILE.toml merged over the "
        "base config; repeatable (default: default)",
    )
    p.add_argument(
        "--pgwitness", default=str(REPO / ".venv/bin/pgwitness"), help="pgwitness executable"
    )
    p.add_argument("--pgbouncer", default=shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")
    p.add_argument("--pgbench", default=shutil.which("pgbench") or "pgbench")
    p.add_argument(
        "--connect-latency",
        type=int,
        default=0,
        metavar="N",
        help="after the pgbench rounds, N x (connect + SELECT 1 + close) per target per\n"
        "round with libpq (psycopg), interleaved; p50/p90 and paired added p50 (default 0: off)",
    )
    p.add_argument(
        "--portal-code",
        action="store_true",
        help="plant a PL/pgSQL function that OPENs a cursor in the benchmark database:\n"
        "pgwitness then follows every Bind and Execute (policy/portals.py)",
    )
    p.add_argument("--json", metavar="FILE", help="write runs, summary and machine info")
    p.add_argument("--workdir", help="directory for the cluster and configs (default: /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)  # fmt: skip
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for t in args.targets:
        if t not in ("direct", "pgbouncer", "pgwitness", "floor", "direct-tls", "pgbouncer-tls",
                     "pgbouncer-2"):
            p.error(f"unknown target {t!r}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    if args.proxy_config and "pgwitness" not in args.targets:
        p.error("--proxy-config needs the pgwitness target")
    return args


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [parse_variant(s) for s in (args.proxy_config or ["default"])]
    if "pgwitness" in args.targets and not os.access(args.pgwitness, os.X_OK):
        print(f"note: {args.pgwitness} not found; running pgwitness as python -m proxy.cli")
    n_targets = (
        len(args.targets)
        - ("pgwitness" in args.targets)
        + (len(variants) if "pgwitness" in args.targets else 0)
    )
    runs_total = args.rounds * len(args.workloads) * n_targets
    budget = runs_total * (args.duration + 1) + n_targets * (args.warmup + 1) + args.scale * 2 + 10
    print(
        f"plan: {runs_total} pgbench runs ({args.rounds} rounds x {len(args.workloads)} "
        f"workloads x {n_targets} targets) x {args.duration}s; "
        f"expected total ~{budget // 60}m{budget % 60:02d}s",
        flush=True,
    )
    machine = machine_info()
    print(f"load average before start: {machine['loadavg_1m']:.2f} (want ~0 for clean numbers)")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    as_root = os.geteuid() == 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pgw-bench-")).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # the postgres OS user must reach the cluster and pgbouncer
    procs = Processes()
    pg = LocalCluster(workdir / "pg", keep=args.keep)
    runs: list[Run] = []
    connects: dict[str, dict] = {}
    try:
        pg.start()
        pg.create_role(UPSTREAM_USER, UPSTREAM_PASSWORD, createdb=True)
        pg.create_database(DB, owner=UPSTREAM_USER)
        t0 = time.monotonic()
        direct = Target("direct", pg.port, UPSTREAM_USER, UPSTREAM_PASSWORD)
        subprocess.run(
            [args.pgbench, "-i", "-q", "-s", str(args.scale), "-h", pg.host, "-p", str(pg.port),
             "-U", UPSTREAM_USER, DB],
            env=client_env(direct), check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        pg.psql("VACUUM ANALYZE;", db=DB)
        if args.portal_code:
            pg.psql(
                "CREATE FUNCTION public.pgw_bench_cursor() RETURNS refcursor LANGUAGE plpgsql "
                "AS $$ DECLARE c refcursor; BEGIN OPEN c FOR SELECT 1; RETURN c; END $$;",
                db=DB,
            )
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - t0:.1f}s", flush=True)

        targets: list[Target] = []
        for name in args.targets:
            if name == "direct":
                targets.append(direct)
            elif name == "direct-tls":
                targets.append(
                    Target(name, pg.port, UPSTREAM_USER, UPSTREAM_PASSWORD, sslmode="require")
                )
            elif name in ("pgbouncer", "pgbouncer-tls", "pgbouncer-2"):
                targets.append(
                    start_pgbouncer(
                        procs, pg, workdir, args.pgbouncer, as_root, tls=name == "pgbouncer-tls",
                        processes=2 if name == "pgbouncer-2" else 1,
                    )
                )
            elif name == "floor":
                targets.append(start_floor(procs, pg, workdir))
            else:
                for vname, override in variants:
                    targets.append(
                        start_pgwitness(procs, pg, workdir, args.pgwitness, vname, override)
                    )
        if args.warmup:
            for t in targets:
                run_pgbench(args.pgbench, t, args.workloads[0], args.warmup, 0)

        for rnd in range(1, args.rounds + 1):
            # Rotate the order each round so no target always runs first (or hot).
            k = (rnd - 1) % len(targets)
            order = targets[k:] + targets[:k]
            for w in args.workloads:
                for t in order:
                    r = run_pgbench(args.pgbench, t, w, args.duration, rnd)
                    runs.append(r)
                    conn = f"  connect {r.connection_ms:.3f} ms" if r.connection_ms else ""
                    cpu = ""
                    if r.cpu_us_per_txn:
                        cpu = f"  cpu {r.cpu_us_per_txn:.1f} µs/txn"
                        if r.loop_cpu_us_per_txn:  # (runuser's, under root: nothing)
                            cpu += (
                                f" (main thread {r.loop_cpu_us_per_txn:.1f}: user "
                                f"{r.loop_user_us_per_txn:.1f} sys {r.loop_sys_us_per_txn:.1f}, "
                                f"{r.loop_faults_per_txn:.2f} page faults/txn)"
                            )
                    print(
                        f"round {rnd} {w:<20} {t.name:<24} tps {r.tps:>10.0f}  "
                        f"lat {r.latency_ms:.3f} ms  failed {r.failed}{conn}{cpu}",
                        flush=True,
                    )
        if args.connect_latency:
            connects = connect_latency(targets, args.connect_latency, args.rounds)
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"error: {shlex.join(exc.cmd)} failed:\n{exc.stderr}", file=sys.stderr)
        return 1
    except (RuntimeError, LocalClusterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        pg.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)

    names = [t.name for t in targets]
    summaries = summarise(runs, args.workloads, names)
    print()
    if summaries:
        print(format_table(summaries))
    if connects:
        print()
        print(format_connect_table(connects, args.connect_latency))
    elapsed = time.monotonic() - started
    print(f"\ntotal {elapsed:.0f}s on {machine['cpus']} CPUs")
    print("commands (port/user differ per target; PGPASSWORD in the environment):")
    for w in args.workloads:
        print("  " + shlex.join(pgbench_argv("pgbench", direct, w, args.duration)))
    if args.json:
        doc = {
            "machine": machine,
            "versions": {
                "pgbench": _version([args.pgbench, "--version"]),
                "pgbouncer": _version([args.pgbouncer, "--version"]),
                "postgres": _version([str(pg.bindir / "postgres"), "--version"]),
            },
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "variants": {name: override for name, override in variants},
            "elapsed_s": elapsed,
            "runs": [asdict(r) for r in runs],
            "summary": [asdict(s) for s in summaries],
            "connect_latency": connects,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
