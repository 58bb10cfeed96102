"""Micro-benchmark of the statement policy: microseconds per statement, hit and miss.

Run: .venv/bin/python bench/policy_micro.py [--n 300]

For each statement shape, N variants differing only in literal values are checked:

* miss         classify + decide (a session whose caches hold other statements)
* fp hit       same shape, new literals: lexer + fingerprint lookup
* text hit     the exact same text again: one dict lookup
* shared text  a new session, a text another session classified: decide only
* shared fp    a new session, a shape another session classified: lexer + decide
* pg parse     PostgreSQL's reading alone (libpg_query + the walk), part of every miss

Each shape is measured ``--repeats`` times from fresh state; the table shows the median
repeat (CPU time from process_time, wall time in parentheses) so one slow repeat on a shared
VM does not move the result, and ``--min`` shows the fastest repeat instead.

``--split`` prints instead what each stage of a miss costs on its own (hot loops over the
variants, the fastest of nine repeats): the lexer (the fingerprints, then the statements,
as the engine asks on a miss), sqlglot's parse (tokenizer and parser), the walk over its
tree, PostgreSQL's reading, the reconciliation of the two and the decision. A miss in
context costs more than the sum: the engine's bookkeeping, and caches cold between stages.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy import StatementPolicy, parse_scopes  # noqa: E402
from policy.catalog import Snapshot  # noqa: E402
from policy.classify.crosscheck import pg_readings  # noqa: E402
from policy.engine import SharedClassifications  # noqa: E402

SCOPES = parse_scopes(
    "read:public.* write:public.pgbench_accounts,public.pgbench_tellers,"
    "public.pgbench_branches,public.pgbench_history,public.orders"
)

PGBENCH = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
    "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
]
COMPLEX = [
    "WITH recent AS (SELECT o.id, o.customer_id, o.total FROM orders o "
    "WHERE o.created_at > now() - interval '{d} days' AND o.status <> 'void') "
    "SELECT c.name, count(*) AS n, sum(r.total) AS revenue FROM recent r "
    "JOIN customers c ON c.id = r.customer_id "
    "WHERE c.name LIKE 'cust-{aid}%' GROUP BY c.name HAVING count(*) > {tid} "
    "ORDER BY revenue DESC LIMIT 20",
    "SELECT id, (SELECT max(total) FROM orders o2 WHERE o2.customer_id = c.id) AS top "
    "FROM customers c WHERE id IN (SELECT customer_id FROM orders WHERE total > {delta}) "
    "UNION ALL SELECT {tid}, 0",
    "/* agent: inspect */ SELECT c.relname, a.attname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
    "WHERE c.relname = 'orders' AND a.attnum > {bid}",
]


# The database's catalog as the proxy loads it (policy.catalog): no function takes a row.
SNAPSHOT = Snapshot(frozenset(), {}, loaded_at=1.0)


def Policy(**kw) -> StatementPolicy:  # noqa: N802 - reads like the class it builds
    p = StatementPolicy(SCOPES, **kw)
    p.catalog = lambda: SNAPSHOT
    return p


def variants(template: str, n: int, rnd: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        out.append(
            template.format(
                aid=rnd.randint(1, 10**6),
                tid=rnd.randint(1, 100),
                bid=rnd.randint(1, 10),
                delta=rnd.randint(1, 5000),
                d=rnd.randint(1, 30),
            )
        )
    return out


def timed(fn, items) -> tuple[float, float]:
    """(cpu us, wall us) per item.

    Everything allocated so far is frozen first (as the proxy freezes its start-up heap), so
    a collection during the loop does not also walk the benchmark's own earlier sessions.
    """
    gc.collect()
    gc.freeze()
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    for item in items:
        fn(item)
    c1, w1 = time.process_time_ns(), time.perf_counter_ns()
    return (c1 - c0) / 1000 / len(items), (w1 - w0) / 1000 / len(items)


def bench(template: str, n: int, rnd: random.Random) -> dict[str, tuple[float, float]]:
    texts = variants(template, n, rnd)
    out = {}
    # miss: a session that never saw the statement and shares no cache with others
    sessions = []
    for _ in texts:
        p = Policy(task="bench", shared=None)
        p.check_query("SELECT 1")
        sessions.append(p)
    pairs = list(zip(sessions, texts, strict=True))
    out["miss"] = timed(lambda pt: pt[0].check_query(pt[1]), pairs)
    for p, t in pairs:
        assert p.stats["misses"] == 2 and p.check_query(t).allowed, t
    # fingerprint hit: one session, new literals each time
    p = Policy(task="bench", shared=None)
    p.check_query(texts[0])
    out["fp hit"] = timed(p.check_query, texts[1:])
    assert p.stats["fingerprint_hits"] + p.stats["text_hits"] == len(texts) - 1, p.stats
    # text hit
    out["text hit"] = timed(p.check_query, [texts[0]] * n)
    # a new session (another grant) after another session classified this shape:
    # same text -> shared text hit; new literals -> shared fingerprint hit
    shared = SharedClassifications()
    first = Policy(task="bench", shared=shared)
    for t in texts[: n // 2]:
        first.check_query(t)
    fresh = [Policy(task="bench2", shared=shared) for _ in texts]
    half = n // 2
    out["shared text"] = timed(lambda i: fresh[i].check_query(texts[i]), range(half))
    out["shared fp"] = timed(lambda i: fresh[i].check_query(texts[i]), range(half, n))
    out["pg parse"] = timed(lambda t: pg_readings(t, 1), texts)
    return out


def split(template: str, n: int, rnd: random.Random) -> list[float]:
    """us per statement for each stage of a miss (see ``--split``)."""
    from policy.classify.classifier import Classifier
    from policy.classify.collector import Collector, sqlglot_parse
    from policy.classify.crosscheck import reconcile
    from policy.decide import decide
    from policy.lexer import fingerprint_statements, lex

    def best(fn, items) -> float:
        runs = []
        for _ in range(9):
            c0 = time.process_time_ns()
            for item in items:
                fn(item)
            runs.append((time.process_time_ns() - c0) / 1000 / len(items))
        return min(runs)

    path = ("public",)
    texts = variants(template, n, rnd)
    lexer = best(lambda t: (fingerprint_statements(t), lex(t)), texts)
    stmts = [lex(t)[0] for t in texts]
    parse = best(lambda s: sqlglot_parse(s.canon, s.literal_counts()), stmts)

    def parse_and_walk(s) -> None:
        col = Collector(s, path)
        col.walk(sqlglot_parse(s.canon, s.literal_counts())[0])
        col.expand()
        col.release()

    walk = best(parse_and_walk, stmts) - parse
    pg = best(lambda t: pg_readings(t, 1), texts)
    pgs = [pg_readings(t, 1)[0] for t in texts]
    glot = [Classifier(path).run(s) for s in stmts]
    idx = range(len(texts))
    rec = best(lambda i: reconcile(stmts[i], glot[i][0], glot[i][1], path, pgs[i]), idx)
    final = [reconcile(stmts[i], glot[i][0], glot[i][1], path, pgs[i])[0] for i in idx]
    dec = best(lambda c: decide(c, SCOPES), final)
    return [lexer, parse, walk, pg, rec, dec]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="variants per statement shape")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per shape (default 5)")
    ap.add_argument("--min", action="store_true", help="show the fastest repeat, not the median")
    ap.add_argument("--split", action="store_true", help="the cost of each stage of a miss")
    args = ap.parse_args()
    import sqlglot.parser

    print(f"sqlglot compiled (sqlglotc): {sqlglot.parser.__file__.endswith('.so')}")
    if args.split:
        stages = ["lexer", "sqlglot parse", "walk", "pg parse", "reconcile", "decide", "sum"]
        print("us per statement, CPU time, fastest of 9 hot-loop repeats")
        print("  " + " | ".join(f"{c:>13}" for c in stages))
        for template in PGBENCH + COMPLEX:
            costs = split(template, args.n, random.Random(5))
            cells = " | ".join(f"{c:13.1f}" for c in [*costs, sum(costs)])
            print(f"  {cells}  {template[:48]}")
        return
    print("us per statement, CPU time (wall time in parentheses)")
    cols = ["miss", "fp hit", "text hit", "shared text", "shared fp", "pg parse"]
    print("  " + " | ".join(f"{c:>15}" for c in cols))
    rnd = random.Random(7)
    for template in PGBENCH + COMPLEX:  # warm-up: first use of sqlglot's code paths
        bench(template, 20, random.Random(1))
    for label, templates in (("pgbench-like", PGBENCH), ("complex", COMPLEX)):
        print(label)
        for template in templates:
            runs = [bench(template, args.n, rnd) for _ in range(args.repeats)]
            pick = min if args.min else statistics.median
            r = {c: (pick(x[c][0] for x in runs), pick(x[c][1] for x in runs)) for c in cols}
            cells = " | ".join(f"{r[c][0]:6.1f} ({r[c][1]:6.1f})" for c in cols)
            print(f"  {cells}  {template[:48]}")


if __name__ == "__main__":
    main()
