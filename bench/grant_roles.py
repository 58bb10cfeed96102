"""What per-grant database roles cost: issuing a grant, and connecting through the proxy.

    .venv/bin/python bench/grant_roles.py                 # 200 grants, 200 connects per mode
    .venv/bin/python bench/grant_roles.py --grants 50 --connects 50

1. Issue: ``GrantStore.issue`` with a SQLite store, ``upstream.roles = shared`` (store
   only) against ``per-grant`` (CREATE ROLE, comment, privileges, then the store), one
   after the other, ``--grants`` each; p50/p99 in ms. Scopes:
   ``read:public.orders,public.customers write:public.orders``.
2. Connect: connect + ``SELECT 1`` + close with asyncpg (SCRAM, no TLS to the proxy;
   the proxy logs in upstream over TLS with SCRAM), through a ``shared`` proxy and a
   ``per-grant`` proxy (each in its own thread and event loop), interleaved one by one,
   plus direct to Postgres for reference; p50/p99 in ms.

Everything runs on 127.0.0.1 in a throwaway cluster (``devtools.localpg``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from devtools.localpg import LocalCluster, build_app_cluster  # noqa: E402
from policy.grants.store import open_store  # noqa: E402
from tests.support.fixtures_proxy import ProxyHandle, per_grant_overrides, proxy_config  # noqa: E402

SCOPES = "read:public.orders,public.customers write:public.orders"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def line(name: str, ms: list[float]) -> str:
    return f"{name:<28} n={len(ms):<4} p50 {statistics.median(ms):7.2f} ms   p99 {pct(ms, 99):7.2f} ms"


def configs(pg: LocalCluster, work: Path) -> tuple:
    shared = proxy_config(pg, **{"grants.store": f"sqlite:///{work / 'shared.db'}"})
    overrides = per_grant_overrides(pg, work, **{
        "grants.store": f"sqlite:///{work / 'per-grant.db'}", "provision.connection_limit": 1000,
    })  # fmt: skip
    return shared, proxy_config(pg, **overrides)


async def issue_many(cfg, n: int, roles) -> tuple[list[float], list]:
    store = await open_store(cfg.grants.store, roles=roles)
    times, grants = [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            grant, token = await store.issue(
                agent="bench-bot", task=f"BENCH-{i}", reason="bench", granted_by="bench",
                database="app", scopes=SCOPES, ttl="1h",
            )  # fmt: skip
            times.append((time.perf_counter() - t0) * 1000)
            grants.append((grant, token))
    finally:
        await store.close()
    return times, grants


async def connect_once(host: str, port: int, user: str, password: str) -> float:
    t0 = time.perf_counter()
    conn = await asyncpg.connect(host=host, port=port, user=user, password=password,
                                 database="app", ssl=False, timeout=30)  # fmt: skip
    await conn.fetchval("SELECT 1")
    await conn.close()
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grants", type=int, default=200)
    ap.add_argument("--connects", type=int, default=200)
    args = ap.parse_args()
    from proxy.provision import PerGrantRoles

    with tempfile.TemporaryDirectory(prefix="pgw-bench-roles-") as tmp:
        work = Path(tmp)
        pg = LocalCluster()  # its own directory (traversable by the postgres OS user)
        pg.start()
        try:
            build_app_cluster(pg)
            shared_cfg, per_grant_cfg = configs(pg, work)
            shared_times, shared_grants = asyncio.run(issue_many(shared_cfg, args.grants, None))
            roles = PerGrantRoles(per_grant_cfg)
            per_times, per_grants = asyncio.run(issue_many(per_grant_cfg, args.grants, roles))
            print(f"issue, {args.grants} grants each (scopes {SCOPES!r}):")
            print(line("  shared (store only)", shared_times))
            print(line("  per-grant (role + store)", per_times))

            a = ProxyHandle(shared_cfg).start()
            b = ProxyHandle(per_grant_cfg).start()
            try:
                _, shared_token = shared_grants[0]
                _, per_token = per_grants[0]
                results: dict[str, list[float]] = {"direct": [], "shared": [], "per-grant": []}

                async def run() -> None:
                    for _ in range(5):  # warm-up
                        await connect_once(a.host, a.port, "bench-bot", shared_token)
                        await connect_once(b.host, b.port, "bench-bot", per_token)
                    for _ in range(args.connects):
                        results["direct"].append(
                            await connect_once(pg.host, pg.port, "pgwitness", pg.users["pgwitness"])
                        )
                        results["shared"].append(await connect_once(a.host, a.port, "bench-bot", shared_token))
                        results["per-grant"].append(await connect_once(b.host, b.port, "bench-bot", per_token))

                asyncio.run(run())
                print(f"connect + SELECT 1 + close, {args.connects} each, interleaved:")
                for name, ms in results.items():
                    print(line(f"  {name}", ms))
            finally:
                a.stop()
                b.stop()
        finally:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
