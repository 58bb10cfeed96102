"""What an agent's schema change costs through the product as shipped: a migration loop.

Run: .venv/bin/python bench/ddl_latency.py [--objects 20] [--loops 30] [--rounds 3]
         [--proxy-config base=/tmp/base-full.toml]

One throwaway cluster whose ``bench`` database holds ``--objects`` schemas of application
objects (``bench/catalog_load.py``'s: tables with triggers running dynamic SQL, views,
functions, domains, row security policies). Each target gets the same loop, over one
connection (psycopg, autocommit), ``--loops`` times: ``CREATE TABLE``, ``INSERT``,
``SELECT``, ``ALTER TABLE ... ADD COLUMN``, ``UPDATE``, ``DROP TABLE`` — every DDL statement
makes the proxy's catalog snapshot stale and reloads it (``proxy/catalog_loader.py``), and
a statement after another session's DDL, or on what the reload must show, waits for it.

Targets: ``direct`` (PostgreSQL), ``pgwitness`` as shipped (``bench/pgbench_compare.py``'s
``full`` preset: a grant with ``ddl:``, ``read:`` and ``write:`` on ``public.*``, policy
enforcing, recording on), and each ``--proxy-config name=toml`` variant (the same, with
the TOML's settings over it: ``_pgwitness`` runs another tree, for an A/B). Rounds are
interleaved, target order rotating. Reported: median ms per loop (6 statements), and the
proxy process group's CPU ms per loop (its catalog loads included; the server's share of
the loads is in ``direct``'s column only as far as the loop itself costs it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from catalog_load import OBJECTS  # noqa: E402
from pgbench_compare import (  # noqa: E402
    _FULL,
    DB,
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    Processes,
    Target,
    group_cpu_seconds,
    start_pgwitness,
)

from devtools.localpg import LocalCluster  # noqa: E402

SCOPES = ["ddl:public.*", "read:public.*", "write:public.*"]
LOOP = (
    "CREATE TABLE public.mig_{i} (id int PRIMARY KEY, v text)",
    "INSERT INTO public.mig_{i} SELECT g, 'v' || g FROM generate_series(1, 10) g",
    "SELECT count(*) FROM public.mig_{i}",
    "ALTER TABLE public.mig_{i} ADD COLUMN n int",
    "UPDATE public.mig_{i} SET n = id WHERE id < 5",
    "DROP TABLE public.mig_{i}",
)


def _dsn(t: Target) -> str:
    return f"host=127.0.0.1 port={t.port} user={t.user} password={t.password} dbname={DB} sslmode=disable"


def _loop(t: Target, loops: int, offset: int) -> tuple[float, float | None]:
    """Median seconds per loop, and the target process group's CPU seconds per loop."""
    with psycopg.connect(_dsn(t), autocommit=True) as conn:
        conn.execute("SELECT 1")  # (the login and first load, not counted)
        cpu0 = group_cpu_seconds(t.proc.pid) if t.proc is not None else None
        times = []
        for k in range(loops):
            start = time.perf_counter()
            for sql in LOOP:
                conn.execute(sql.format(i=offset + k))
            times.append(time.perf_counter() - start)
        cpu = None
        if t.proc is not None and cpu0 is not None:
            time.sleep(0.5)  # (the last reload, in the background, counted too)
            cpu = (group_cpu_seconds(t.proc.pid) - cpu0) / loops
    return statistics.median(times), cpu


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--loops", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=str(Path(sys.executable).with_name("pgwitness")))
    ap.add_argument("--proxy-config", action="append", default=[], metavar="NAME=TOML")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pgw-ddl-"))
    os.chmod(workdir, 0o755)  # the postgres OS user must reach the cluster
    procs = Processes()
    pg = LocalCluster(workdir / "pg")
    try:
        pg.start()
        pg.create_role(UPSTREAM_USER, UPSTREAM_PASSWORD, createdb=True)
        pg.create_database(DB, owner=UPSTREAM_USER)
        if args.objects:
            pg.psql(
                f"SET ROLE {UPSTREAM_USER};\n"
                + "".join(OBJECTS.format(i=i) for i in range(args.objects)),
                db=DB,
            )
        full = {**_FULL, "_grant_scopes": SCOPES}
        targets = [Target("direct", pg.port, UPSTREAM_USER, UPSTREAM_PASSWORD)]
        targets.append(start_pgwitness(procs, pg, workdir, args.binary, "full", full))
        for spec in args.proxy_config:
            name, _, path = spec.partition("=")
            extra = tomllib.loads(Path(path).read_text())
            targets.append(
                start_pgwitness(procs, pg, workdir, args.binary, name, {**full, **extra})
            )
        got: dict[str, list[tuple[float, float | None]]] = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
            for t in order:
                got[t.name].append(
                    _loop(t, args.loops, (rnd * len(targets) + targets.index(t)) * args.loops)
                )
        direct = statistics.median(r[0] for r in got["direct"])
        print(
            f"objects={args.objects} loops={args.loops} rounds={args.rounds}: ms per loop of {len(LOOP)} statements"
        )
        print(f"{'target':<22} {'ms/loop':>9} {'x direct':>9} {'proxy CPU ms/loop':>18}  rounds")
        for t in targets:
            rows = got[t.name]
            ms = statistics.median(r[0] for r in rows) * 1000
            cpus = [r[1] for r in rows if r[1] is not None]
            cpu = f"{statistics.median(cpus) * 1000:.1f}" if cpus else "-"
            each = ", ".join(f"{r[0] * 1000:.1f}" for r in rows)
            print(f"{t.name:<22} {ms:9.1f} {ms / (direct * 1000):9.1f} {cpu:>18}  {each}")
    finally:
        procs.stop_all()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
