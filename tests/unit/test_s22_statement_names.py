"""Statement names as the server keys them (session 22): ParseComplete confirms a Parse
(``parse_answered``: asyncpg's Parse, Describe, Flush), and a name the server might
truncate is refused (``name_too_long``; red-team round 36). Through the proxy:
tests/integration/test_s22_statement_names.py."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache
from policy.prepared import name_too_long

SQL = "SELECT id FROM public.t WHERE id = $1"


def _session() -> tuple[StatementPolicy, CatalogCache]:
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    p = StatementPolicy(parse_scopes("read:public.t ddl:public.t"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.catalog_listener = c.listen("db", p)
    return p, c


def _change(c: CatalogCache) -> None:
    c.put("db", [], {"public.t": frozenset({"id", "x"})})  # a reload that shows a change


def test_an_answered_parse_survives_an_error_later_in_its_group():
    p, c = _session()
    assert p.check_parse(SQL, (), "s").allowed
    p.parse_answered("s")  # ParseComplete, then the Bind's error (division by zero)
    p.failed()
    p.answered(True)
    _change(c)
    v = p.check_bind("s", (), (), "utf-8")
    assert v.allowed, v.message  # decided again on its text, not "prepare it again"


def test_an_unanswered_parse_is_still_dropped_by_an_error():
    p, c = _session()
    assert p.check_parse(SQL, (), "s").allowed
    p.failed()  # the Parse itself failed, or was skipped
    p.answered(True)
    _change(c)
    assert not p.check_bind("s", (), (), "utf-8").allowed


def test_the_unnamed_statement_answered_then_bound_after_a_change():
    p, c = _session()
    assert p.check_parse("SELECT 1", (), "").allowed
    p.answered(True)
    assert p.check_parse(SQL, (), "").allowed  # Parse, Describe, Flush
    p.parse_answered("")
    _change(c)  # a catalog change before its Bind
    v = p.check_bind("", (), (), "utf-8")
    assert v.allowed, v.message


def test_a_name_touched_again_is_not_confirmed_by_an_older_answer():
    """Parse s, Close s (or PREPARE s) in flight: the first ParseComplete confirms nothing."""
    p, c = _session()
    assert p.check_parse(SQL, (), "s").allowed
    p.answered(True)
    assert p.check_parse(SQL, (), "s2").allowed
    p.closed("s2")
    p.parse_answered("s2")
    p.answered(False)
    _change(c)
    v = p.check_bind("s2", (), (), "utf-8")
    assert not v.allowed


def test_names_the_server_may_truncate():
    assert not name_too_long("s" * 63)
    assert name_too_long("s" * 64)
    assert not name_too_long("\u00e9" * 15)  # 60 bytes at 4 a character
    assert name_too_long("\u00e9" * 16)
    p, _c = _session()
    for name in ("s" * 64, "s" * 63 + "\u00e9"):
        v = p.check_parse(SQL, (), name)
        assert not v.allowed and "deny.name" in v.message, v.message
        assert p.bind_checked(name)
        assert not p.check_bind(name, (), (), "utf-8").allowed
    assert p.check_parse(SQL, (), "s" * 63).allowed
    p.answered(True)
    p.closed("s" * 63 + "_b")  # the server closes "s" * 63
    _change(_c)
    assert not p.check_bind("s" * 63, (), (), "utf-8").allowed  # forgotten, not held


def test_a_bind_in_its_parses_sync_group_is_decided_on_that_text():
    """Parse '' then Bind '' in one Sync group (asyncpg without a statement cache re-parses
    in the Bind's group), a catalog change landing between the two reads: the Bind binds
    that Parse's text, or the server skips it (the Parse failed): decided on the text."""
    p, c = _session()
    assert p.check_parse("SELECT 1", (), "").allowed
    p.answered(True)
    p.sending_group = 7
    assert p.check_parse(SQL, (), "").allowed
    _change(c)
    v = p.check_bind("", (), (), "utf-8")
    assert v.allowed, v.message
    # a Bind in a later group, the Parse still unanswered (a failure skipped to the Sync,
    # which group the server is in is not known here): refused
    p2, c2 = _session()
    assert p2.check_parse("SELECT 1", (), "").allowed
    p2.answered(True)
    p2.sending_group = 7
    assert p2.check_parse(SQL, (), "").allowed
    p2.sending_group = 8
    _change(c2)
    assert not p2.check_bind("", (), (), "utf-8").allowed
