"""How long a catalog load takes: the wait a session's statement after DDL may have.

Run: .venv/bin/python bench/catalog_load.py [--objects 20] [--loads 7] [--repeats 3]

One throwaway cluster (the test suite's ``app`` database), plus ``--objects`` schemas each
holding what an application's catalog has and the loader reads (a table with an index, a
CHECK and a row security policy, a view over it, a PL/pgSQL trigger function with dynamic
SQL and its trigger, a SQL function with a default, a domain). Then, with
``proxy.catalog_loader.CatalogLoader`` as the proxy runs it:

* cold   a load over a new catalog login (a proxy's first load of a database: each query
         parsed and planned there)
* warm   a load over the login kept from the load before (``LINK_IDLE_SECONDS``): DDL
         after DDL, a migration, a test suite's reloads

Wall time of ``CatalogLoader.load`` in milliseconds, median over ``--loads`` loads (the
first warm load is not counted), then the median of ``--repeats`` repeats. ``--by-query``
prints each query's server time instead (``EXPLAIN (ANALYZE, SUMMARY)`` with the loader's
``jit = off``: planning, execution).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.config import load_config  # noqa: E402
from devtools.localpg import USERS, LocalCluster, build_app_cluster  # noqa: E402

OBJECTS = """
CREATE SCHEMA s{i};
CREATE DOMAIN s{i}.positive AS int CHECK (VALUE > 0);
CREATE TABLE s{i}.t (id int PRIMARY KEY, v text, n s{i}.positive, CHECK (length(v) < 100));
CREATE INDEX ON s{i}.t (lower(v));
ALTER TABLE s{i}.t ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON s{i}.t USING (v <> 'hidden');
CREATE VIEW s{i}.v AS SELECT id, v FROM s{i}.t WHERE id > 0;
CREATE FUNCTION s{i}.audit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN EXECUTE format('SELECT %L', NEW.v); RETURN NEW; END $$;
CREATE TRIGGER a BEFORE INSERT ON s{i}.t FOR EACH ROW EXECUTE FUNCTION s{i}.audit();
CREATE FUNCTION s{i}.f(x int DEFAULT 1) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$;
"""


def _config(cluster: LocalCluster):
    return load_config(None, env={}, overrides={
        "proxy.listen": "127.0.0.1:0",
        "upstream.host": "localhost",
        "upstream.port": cluster.port,
        "upstream.user": "pgwitness",
        "upstream.password": USERS["pgwitness"],
        "upstream.sslmode": "verify-full",
        "upstream.sslrootcert": str(cluster.ca_cert),
        "recorder.enabled": False,
        "metrics.listen": "",
    })  # fmt: skip


async def _loads(cfg, n: int) -> tuple[float, float]:
    import proxy.catalog_loader as cl
    from proxy.upstream import Credentials

    cold, warm = [], []
    for _ in range(n):
        loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)
        t = time.perf_counter()
        await loader.load("app")
        cold.append(time.perf_counter() - t)
        loader.close()
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)
    await loader.load("app")  # (its login, kept)
    for _ in range(n):
        t = time.perf_counter()
        await loader.load("app")
        warm.append(time.perf_counter() - t)
    loader.close()
    return statistics.median(cold) * 1000, statistics.median(warm) * 1000


def _by_query(cluster: LocalCluster) -> None:
    import policy.catalog as catalog

    src = (Path(__file__).resolve().parent.parent / "proxy" / "catalog_loader.py").read_text()
    start = src.index("await self._queries(\n")
    names = re.findall(r"\b([A-Z_]+_SQL)\b", src[start : src.index("# fmt: skip", start)])
    cluster.psql("ALTER DATABASE app SET jit = off")
    rows = []
    for name in names:
        best = None
        for _ in range(3):
            plan = run = 0.0
            for sql in getattr(catalog, name).split(";\n"):
                if not sql.strip() or sql.strip().upper().startswith(("SET ", "RESET")):
                    continue
                out = cluster.psql(
                    "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY, FORMAT JSON) " + sql, db="app"
                )
                got = json.loads(out)[0]
                plan += got["Planning Time"]
                run += got["Execution Time"]
            best = (plan, run) if best is None or plan + run < sum(best) else best
        rows.append((name, *best))
    print(f"{'query':<28} {'plan ms':>8} {'run ms':>8}")
    for name, plan, run in sorted(rows, key=lambda r: -(r[1] + r[2])):
        print(f"{name:<28} {plan:8.2f} {run:8.2f}")
    print(f"{'total':<28} {sum(r[1] for r in rows):8.2f} {sum(r[2] for r in rows):8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--objects", type=int, default=20, help="schemas of application objects")
    ap.add_argument("--loads", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--by-query", action="store_true")
    args = ap.parse_args()
    cluster = build_app_cluster(LocalCluster().start())
    try:
        if args.objects:
            cluster.psql("".join(OBJECTS.format(i=i) for i in range(args.objects)), db="app")
        if args.by_query:
            _by_query(cluster)
            return
        cfg = _config(cluster)
        got = [asyncio.run(_loads(cfg, args.loads)) for _ in range(args.repeats)]
        cold = statistics.median(g[0] for g in got)
        warm = statistics.median(g[1] for g in got)
        print(f"objects={args.objects} cold {cold:.1f} ms  warm {warm:.1f} ms  "
              f"(repeats: {', '.join(f'{c:.1f}/{w:.1f}' for c, w in got)})")  # fmt: skip
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
