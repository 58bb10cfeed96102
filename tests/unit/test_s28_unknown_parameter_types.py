"""A Parse naming a parameter type the catalog snapshot does not know (session 28): the
drivers' differential showed psycopg making a type and binding a value of it at once,
refused ("a type the proxy cannot read (made after the catalog was loaded)") though a
load would have shown it. Such a Parse now waits for a load that started after it arrived,
as a statement resting on the catalog's completeness does, and is decided on it; a type
still unknown after that wait is refused as before (fail closed), and so is one where the
statement cannot wait (a Bind decided again)."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache
from policy.engine import CATALOG_WAIT

SQL = "SELECT $1::text AS v"
MADE = 70001  # a type another statement just made


def _session():
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    p = StatementPolicy(parse_scopes("read:public.*"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.catalog_entry = c.entry("db")
    reloads: list = []
    p.on_stale = reloads.append
    return p, c, reloads


def test_a_type_made_since_the_load_waits_for_one_and_is_decided_on_it():
    p, c, reloads = _session()
    assert p.check_parse(SQL, (MADE,), "s") is CATALOG_WAIT
    assert len(reloads) == 1 and reloads[0] is not None, "a load after it arrived"
    c.put("db", [], {"public.t": frozenset({"id"})}, known_type_oids=[MADE])  # the load
    verdict = p.check_parse(SQL, (MADE,), "s")
    assert verdict.allowed, verdict.message
    assert len(reloads) == 1


def test_a_type_still_unknown_after_its_wait_is_refused():
    p, _c, reloads = _session()
    assert p.check_parse(SQL, (MADE,), "s") is CATALOG_WAIT
    verdict = p.check_parse(SQL, (MADE,), "s")  # the load did not show it
    assert not verdict.allowed and "made after the catalog was loaded" in verdict.message
    assert len(reloads) == 1, "one wait, not a loop of them"
    # the next statement naming it waits again (another text)
    assert p.check_parse("SELECT $1::text AS w", (MADE,), "s2") is CATALOG_WAIT


def test_a_type_the_snapshot_knows_and_built_in_types_do_not_wait():
    p, c, reloads = _session()
    c.put("db", [], {"public.t": frozenset({"id"})}, known_type_oids=[MADE])
    assert p.check_parse(SQL, (MADE,), "s").allowed
    assert p.check_parse(SQL, (25,), "s").allowed  # text
    assert reloads == []


def test_where_it_cannot_wait_it_is_refused_at_once():
    p, _c, reloads = _session()
    verdict = p.check_parse(SQL, (MADE,), "s", can_wait=False)
    assert verdict is not CATALOG_WAIT and not verdict.allowed
    assert reloads == []
