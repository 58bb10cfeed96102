"""A write after the session's own DDL, outside a block (session 28). Only its own DDL made
the snapshot stale; what a load would show that the session did not follow is what that
DDL attached, decided by the policy as it went, so the write no longer waits for the
reload (asyncpg's first INSERT after CREATE TEMP TABLE waited 155 ms for two loads: the
drivers' differential), as a write in the DDL's own block never did. Another session's
DDL since still makes it wait (tests/unit/test_s19_catalog_changes.py), and so does a
session with no catalog entry to count DDL by."""

from __future__ import annotations

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.engine import CATALOG_WAIT
from tests.support.ddl_code import wired_session

SCOPES = "read:public.* write:public.* ddl:public.*"
WRITE = "INSERT INTO public.t VALUES (1)"


def _session(c: CatalogCache, task: str) -> tuple[StatementPolicy, list]:
    return wired_session(c, SCOPES, task, entry=True)


def _cache() -> CatalogCache:
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})})
    return c


def test_a_write_after_its_own_ddl_does_not_wait():
    c = _cache()
    p, asks = _session(c, "A")
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()  # its transaction ended (ReadyForQuery I)
    assert c.get("db").stale
    v = p.check_query(WRITE)
    assert v is not CATALOG_WAIT and v.allowed and asks == []
    assert not p.writes_unreadable(v)
    v = p.check_query("INSERT INTO public.t2 VALUES (1)")
    assert v is not CATALOG_WAIT and v.allowed and asks == []


def test_another_sessions_ddl_since_still_makes_it_wait():
    c = _cache()
    p, asks = _session(c, "A")
    other, _ = _session(c, "B")
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()
    assert other.check_query("ALTER TABLE public.t ADD COLUMN extra int").allowed
    other.settle_ddl()
    assert p.check_query(WRITE) is CATALOG_WAIT and asks == [None]


def test_without_a_catalog_entry_a_write_waits_as_before():
    c = _cache()
    p, asks = _session(c, "A")
    p.catalog_entry = None
    assert p.check_query("CREATE TABLE public.t2 (k int)").allowed
    p.settle_ddl()
    assert p.check_query(WRITE) is CATALOG_WAIT and asks == [None]


def test_a_relation_that_takes_code_from_a_parent_still_waits_or_is_withheld():
    """``CREATE TABLE ... PARTITION OF p`` / ``INHERITS (p)`` takes p's triggers, CHECKs and
    DEFAULTs, code the statement does not name (red-team round 59): a write after it waits
    for the reload outside a block, and in the block (no load can show it) is withheld; a
    snapshot that is not stale ends it."""
    for ddl in ("CREATE TABLE public.p1 PARTITION OF public.t FOR VALUES IN (1)",
                "CREATE TABLE public.c1 () INHERITS (public.t)"):  # fmt: skip
        c = _cache()
        p, asks = _session(c, "A")
        assert p.check_query(ddl).allowed, ddl
        p.settle_ddl()
        assert p.check_query("INSERT INTO public.p1 VALUES (1)") is CATALOG_WAIT and asks == [None]
        c.put("db", [], {"public.t": frozenset({"k"}), "public.p1": frozenset({"k"})})  # the load
        v = p.check_query("INSERT INTO public.p1 VALUES (1)")
        assert v is not CATALOG_WAIT and v.allowed and len(asks) == 1
        # in its own block
        c = _cache()
        p, asks = _session(c, "A")
        p.check_query("BEGIN")
        assert p.check_query(ddl).allowed
        v = p.check_query("INSERT INTO public.p1 VALUES (1)")
        assert v is not CATALOG_WAIT and v.allowed and asks == []
        assert p.writes_unreadable(v), "withheld: no load can show what it took"
