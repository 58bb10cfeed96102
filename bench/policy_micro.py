"""Micro-benchmark of the statement policy: microseconds per statement, hit and miss.

Run: .venv/bin/python bench/policy_micro.py [--rounds N]

* miss        classify + decide on a fresh StatementPolicy (nothing cached)
* text hit    the same query text again (dict lookup)
* fp hit      same statement shape, different literals (lexer + fingerprint lookup)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy import StatementPolicy, parse_scopes  # noqa: E402

SCOPES = parse_scopes(
    "read:public.* write:public.pgbench_accounts,public.pgbench_tellers,"
    "public.pgbench_branches,public.pgbench_history,public.orders"
)


def pgbench(r: random.Random) -> list[str]:
    aid, tid, bid, delta = (
        r.randint(1, 10**6),
        r.randint(1, 100),
        r.randint(1, 10),
        r.randint(1, 5000),
    )
    return [
        f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
        f"UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
        f"UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
        f"UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        f"VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
    ]


def complex_(r: random.Random) -> list[str]:
    n, d, name = r.randint(1, 1000), r.randint(1, 30), f"cust-{r.randint(1, 99999)}"
    return [
        "WITH recent AS (SELECT o.id, o.customer_id, o.total FROM orders o "
        f"WHERE o.created_at > now() - interval '{d} days' AND o.status <> 'void') "
        "SELECT c.name, count(*) AS n, sum(r.total) AS revenue FROM recent r "
        "JOIN customers c ON c.id = r.customer_id "
        f"WHERE c.name LIKE '{name}%' GROUP BY c.name HAVING count(*) > {n} "
        "ORDER BY revenue DESC LIMIT 20",
        "SELECT id, (SELECT max(total) FROM orders o2 WHERE o2.customer_id = c.id) AS top "
        f"FROM customers c WHERE id IN (SELECT customer_id FROM orders WHERE total > {n}) "
        f"UNION ALL SELECT {n}, 0",
        "/* agent: inspect */ SELECT c.relname, a.attname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
        f"WHERE c.relname = 'orders' AND a.attnum > {n}",
    ]


def measure(label: str, make, rounds: int, seed: int = 7) -> None:
    r = random.Random(seed)
    shapes = make(r)
    per_stmt: dict[str, list[float]] = {s[:40]: [] for s in shapes}
    miss, text_hit, fp_hit = [], [], []
    for _ in range(rounds):
        batch = make(r)
        for stmt in batch:
            policy = StatementPolicy(SCOPES, task="bench")
            t0 = time.perf_counter_ns()
            v = policy.check_query(stmt)
            t1 = time.perf_counter_ns()
            assert v.allowed, (stmt, v.message)
            miss.append((t1 - t0) / 1000)
            t0 = time.perf_counter_ns()
            policy.check_query(stmt)
            t1 = time.perf_counter_ns()
            text_hit.append((t1 - t0) / 1000)
            other = make(r)[batch.index(stmt)]
            t0 = time.perf_counter_ns()
            policy.check_query(other)
            t1 = time.perf_counter_ns()
            fp_hit.append((t1 - t0) / 1000)
            assert policy.stats["fingerprint_hits"] == 1, (stmt, other, policy.stats)
            per_stmt.setdefault(stmt[:40], []).append((t1 - t0) / 1000)

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        p50 = statistics.median(xs)
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        return f"p50 {p50:7.1f} us  p99 {p99:7.1f} us"

    print(f"{label}")
    print(f"  miss      {fmt(miss)}")
    print(f"  fp hit    {fmt(fp_hit)}")
    print(f"  text hit  {fmt(text_hit)}")


def per_statement(rounds: int) -> None:
    r = random.Random(11)
    print("per statement (p50 us): miss / fp hit / text hit")
    for stmt in pgbench(r) + complex_(r):
        miss, fp, text = [], [], []
        for _ in range(rounds):
            policy = StatementPolicy(SCOPES, task="bench")
            t0 = time.perf_counter_ns()
            policy.check_query(stmt)
            miss.append(time.perf_counter_ns() - t0)
            variant = stmt.replace("1", "2") if "1" in stmt else stmt + " "
            t0 = time.perf_counter_ns()
            policy.check_query(variant)
            fp.append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            policy.check_query(stmt)
            text.append(time.perf_counter_ns() - t0)
        m, f, t = (statistics.median(x) / 1000 for x in (miss, fp, text))
        print(f"  {m:7.1f} / {f:6.1f} / {t:5.1f}  {stmt[:70]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    try:
        import sqlglot.parser as p

        compiled = p.__file__.endswith(".so")
    except Exception:  # pragma: no cover - informational only
        compiled = False
    print(f"sqlglot compiled (sqlglotc): {compiled}")
    measure("pgbench-like statements", pgbench, args.rounds)
    measure("complex statements", complex_, args.rounds)
    per_statement(max(50, args.rounds // 4))


if __name__ == "__main__":
    main()
