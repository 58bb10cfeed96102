"""FETCH or MOVE of a cursor the session did not declare, after a write of its ran code the
grant did not choose (session 31; red-team round 73: a write grant's INSERT fired a
trigger whose ``OPEN r73_audit FOR SELECT v FROM r73x.kv`` then answered ``FETCH ALL FROM
r73_audit`` with a hidden table's rows). Refused where the database holds code that may
open cursors (``Snapshot.cursor_code``); the session's own cursors, and cursors before any
such write (a granted function's returned refcursor), as before."""

from __future__ import annotations

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.scopes import parse_scopes


def _policy(cursor_code: bool = True) -> StatementPolicy:
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"a"})}, triggered=["public.t"],
          cursor_code=cursor_code)  # fmt: skip
    p = StatementPolicy(parse_scopes("write:public.t execute:public.f"), task="x", shared=None)
    p.catalog = lambda: c.get("db")
    return p


def _fire(p: StatementPolicy) -> None:
    v = p.check_query("INSERT INTO public.t VALUES (1)")
    assert v.allowed and p.writes_unreadable(v)  # (the relay asks after each allowed one)


def test_a_cursor_code_opened_after_a_triggered_write_is_refused():
    p = _policy()
    assert p.check_query("FETCH ALL FROM r73_audit").allowed  # (nothing fired yet)
    _fire(p)
    for sql in ("FETCH ALL FROM r73_audit", "MOVE ALL FROM r73_audit",
                'FETCH 1 FROM "r73_audit"', "FETCH ALL FROM r73_audit"):  # fmt: skip
        v = p.check_query(sql)
        assert not v.allowed and "rule deny.cursor" in v.message, (sql, v.message)
    assert p.check_query("CLOSE r73_audit").allowed  # (closing shows nothing)


def test_the_sessions_own_cursors_stay_usable():
    p = _policy()
    assert p.check_query("BEGIN").allowed
    assert p.check_query("DECLARE mine CURSOR FOR SELECT 1").allowed
    _fire(p)
    for _ in range(2):
        assert p.check_query("FETCH FORWARD 10 FROM mine").allowed
        assert p.check_query("MOVE BACKWARD ALL IN mine").allowed
    assert p.check_query("CLOSE mine").allowed
    assert not p.check_query("FETCH ALL FROM mine").allowed  # (closed: another's now)
    assert p.check_query("DECLARE mine CURSOR FOR SELECT 2").allowed
    assert p.check_query("FETCH ALL FROM mine").allowed
    assert p.check_query("CLOSE ALL").allowed
    assert not p.check_query("FETCH ALL FROM mine").allowed


def test_a_database_without_such_code_is_decided_as_before():
    p = _policy(cursor_code=False)
    _fire(p)
    assert p.check_query("FETCH ALL FROM r73_audit").allowed
