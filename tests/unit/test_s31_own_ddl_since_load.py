"""Only the session's own DDL since the snapshot's load started (session 31).

A snapshot records the database's DDL count when its load's queries started
(``Snapshot.loaded_epoch``); a session knows which counts were its own (its DDL, its
transactions' ends). A stale snapshot whose every count since was the session's own is one
where what a load would add is what that DDL attached, decided by the policy as it went.
Before, one count by another session while the snapshot was stale made the session wait
(or, at a Bind, refused its EXPLAIN) until a snapshot that was not stale at all, which a
session running DDL back to back never saw: the drivers' differential refused asyncpg's
``EXPLAIN ANALYZE`` of a statement prepared after its own ``CREATE TABLE`` on a fresh
connection in 24 of 25 runs. Another session's DDL after the load started still counts.
"""

from __future__ import annotations

import time

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.engine import CATALOG_WAIT
from tests.support.ddl_code import wired_session

SCOPES = "read:public.* write:public.* ddl:public.*"
COLUMNS = {"public.t": frozenset({"k"})}
WRITE = "INSERT INTO public.t VALUES (1)"
EXPLAIN = "EXPLAIN (VERBOSE) INSERT INTO public.t VALUES (1)"


def _cache() -> CatalogCache:
    c = CatalogCache()
    c.put("db", [], COLUMNS)
    return c


def _session(c: CatalogCache, task: str) -> tuple[StatementPolicy, list]:
    return wired_session(c, SCOPES, task, entry=True)


def _load_started(c: CatalogCache) -> tuple[float, int]:
    return time.monotonic(), c.entry("db").epoch


def _load_done(c: CatalogCache, started: tuple[float, int]) -> None:
    c.put("db", [], COLUMNS, loaded_at=started[0], loaded_epoch=started[1])


def _others_ddl(c: CatalogCache) -> None:
    other, _ = _session(c, "B")
    assert other.check_query("CREATE TABLE public.b (k int)").allowed
    other.settle_ddl()


def test_another_sessions_ddl_before_the_load_started_does_not_count():
    c = _cache()
    p, asks = _session(c, "A")
    _others_ddl(c)  # (a closed connection's DROP, say)
    started = _load_started(c)
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed  # while that load runs
    p.settle_ddl()
    _load_done(c, started)
    assert c.get("db").stale  # (it started before the session's DDL)
    v = p.check_query(WRITE)
    assert v is not CATALOG_WAIT and v.allowed and asks == []
    assert not p.writes_unreadable(v)
    v = p.check_query(EXPLAIN)
    assert v is not CATALOG_WAIT and v.allowed and asks == []


def test_another_sessions_ddl_after_the_load_started_still_counts():
    c = _cache()
    p, asks = _session(c, "A")
    started = _load_started(c)
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()
    _others_ddl(c)  # after the load's queries started: it may not show it
    _load_done(c, started)
    assert p.check_query(WRITE) is CATALOG_WAIT and asks == [None]
    q, q_asks = _session(c, "A2")  # (as q saw it: its own DDL none of it)
    assert q.check_query(EXPLAIN) is CATALOG_WAIT and len(q_asks) == 1
    asks.clear()
    assert p.check_query(EXPLAIN) is CATALOG_WAIT and len(asks) == 1


def test_back_to_back_ddl_on_a_snapshot_never_fresh():
    """The differential's loop: each load starts after the session's last DDL and ends
    after its next one; another session's DDL before the first load started."""
    c = _cache()
    p, asks = _session(c, "A")
    _others_ddl(c)
    for i in range(5):
        started = _load_started(c)
        assert p.check_query(f"CREATE TABLE public.t{i} (k int)").allowed
        p.settle_ddl()
        _load_done(c, started)
        assert c.get("db").stale
        v = p.check_query(EXPLAIN)
        assert v is not CATALOG_WAIT and v.allowed and asks == [], i


def test_a_bind_that_cannot_wait_is_decided_alike():
    """At a Bind the statement cannot wait: own DDL only since the load, the EXPLAIN runs;
    another's since, it is refused (fail closed)."""
    for others, allowed in ((False, True), (True, False)):
        c = _cache()
        p, _asks = _session(c, "A")
        assert p.check_parse(EXPLAIN, (), "s1").allowed
        started = _load_started(c)
        assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
        p.settle_ddl()
        if others:
            _others_ddl(c)
        _load_done(c, started)
        assert "s1" in p.rebind  # decided again at its Bind
        v = p.check_bind("s1", (), (), "utf-8")
        assert v is not CATALOG_WAIT and v.allowed is allowed, (others, v)


def test_an_unknown_load_epoch_is_never_the_sessions_own():
    c = _cache()
    p, asks = _session(c, "A")
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()
    c.put("db", [], COLUMNS, loaded_at=0.0, loaded_epoch=-1)  # (a snapshot of no known count)
    assert p.check_query(WRITE) is CATALOG_WAIT and asks == [None]


def test_a_count_made_beside_the_sessions_own_is_not_taken():
    """Another count inside the session's call (a news from another worker, say) makes
    neither its own."""
    c = _cache()
    p, asks = _session(c, "A")
    p.on_ddl = lambda defined, removed: (
        c.invalidate("db", defined, removed), c.invalidate("db")
    )  # fmt: skip
    started = _load_started(c)
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()
    _load_done(c, started)
    assert p.check_query(WRITE) is CATALOG_WAIT and asks == [None]


def test_explain_while_another_sessions_ddl_block_is_open_is_refused():
    """Red-team round 70: a load during another session's open DDL block cannot show what
    the block attaches, and the EXPLAIN, waiting for the block's locks, prints it once it
    commits. Refused while any block but the session's own is open; never cached."""
    c = _cache()
    p, asks = _session(c, "A")
    entry = c.entry("db")
    p.on_block = entry.count_blocks
    plain = "EXPLAIN SELECT k FROM public.t"
    assert p.check_query(plain).allowed  # (decided, not cached: asked again below)
    entry.count_blocks(1)  # another session's DDL, its block open
    for sql in (plain, EXPLAIN):
        v = p.check_query(sql)
        assert not v.allowed and "another session's DDL transaction is open" in v.message
    entry.count_blocks(-1)
    assert p.check_query(plain).allowed
    # the session's own block alone does not refuse it
    assert p.check_query("BEGIN").allowed
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    assert entry.blocks_open == 1
    v = p.check_query("EXPLAIN SELECT 1")
    assert v is not CATALOG_WAIT and v.allowed, v.message
