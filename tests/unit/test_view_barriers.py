"""Which views hide rows (``pgparse.view_hides_rows``), which are security barriers
(``catalog.security_barrier``), and what a statement's conditions reach through them
(``catalog.view_exposure``): pure, no database."""

from __future__ import annotations

import pytest

from policy.catalog import security_barrier, view_exposure
from policy.classify.pgparse import view_hides_rows


@pytest.mark.parametrize("definition", [
    " SELECT a.id, a.pin FROM hidden.accounts a WHERE a.owner = 'me'::text;",
    "SELECT a FROM t UNION SELECT b FROM u WHERE x",
    "SELECT a FROM t EXCEPT SELECT b FROM u",
    "SELECT a FROM t INTERSECT SELECT b FROM u",
    "SELECT DISTINCT ON (a) a, b FROM t",
    "SELECT dept, sum(s) FROM t GROUP BY dept HAVING sum(s) > 1",
    "SELECT * FROM t TABLESAMPLE SYSTEM (1)",
    "SELECT * FROM t JOIN u ON true",
    "SELECT * FROM t LEFT JOIN u USING (id)",
    "SELECT * FROM t, u",
    "SELECT * FROM (SELECT * FROM t WHERE x) s",
    "WITH c AS (SELECT * FROM t WHERE x) SELECT * FROM c",
    "SELECT * FROM t LIMIT 5",
    "SELECT * FROM t OFFSET 1",
    "SELECT * FROM my_rows()",  # a SQL function may be inlined, WHERE and all
    "not a query",
    "SELECT 1; SELECT 2",
    "",
])  # fmt: skip
def test_views_that_hide_rows(definition):
    assert view_hides_rows(definition)


@pytest.mark.parametrize("definition", [
    "SELECT id, pin FROM hidden.accounts",
    "SELECT a FROM t UNION ALL SELECT b FROM u",
    "SELECT a FROM t UNION SELECT b FROM u",
    "SELECT DISTINCT a FROM t",
    "SELECT dept, sum(s) FROM t GROUP BY dept",
    "SELECT * FROM (SELECT * FROM t) s",
    "WITH c AS (SELECT * FROM t) SELECT * FROM c",
    "SELECT id, (SELECT max(x) FROM u WHERE u.id = t.id) FROM t",  # a value per row shown
    "SELECT 1",
    "VALUES (1)",
])  # fmt: skip
def test_views_that_show_every_row_they_read(definition):
    assert not view_hides_rows(definition)


@pytest.mark.parametrize("options, expected", [
    (None, False), ("", False), ("{}", False),
    ("{security_barrier=true}", True), ("{security_barrier=on}", True),
    ("{security_barrier=1}", True), ("{security_barrier=yes}", True),
    ("{security_barrier=t}", True), ("{security_barrier=TRUE}", True),
    ("{check_option=local,security_barrier=true}", True),
    ("{security_barrier=false}", False), ("{security_barrier=off}", False),
    ("{security_barrier=0}", False), ("{security_barrier=}", False),
    ("{security_invoker=true}", False), ("{check_option=local}", False),
])  # fmt: skip
def test_security_barrier_read_as_postgresql_reads_a_boolean(options, expected):
    assert security_barrier(options) is expected


def test_exposure_follows_views_that_are_no_barrier_and_stops_at_one_that_is():
    views = {
        "p.filter": (False, True),  # hides rows
        "p.proj": (False, False),  # shows every row
        "p.barrier": (True, True),
        "p.over_filter": (False, False),
        "p.over_barrier": (False, False),
        "p.filter_over_barrier": (False, True),
    }
    reads = {
        "p.filter": {"s.t"},
        "p.proj": {"s.t"},
        "p.barrier": {"s.t"},
        "p.over_filter": {"p.filter"},
        "p.over_barrier": {"p.barrier"},
        "p.filter_over_barrier": {"p.barrier", "p.proj"},
    }
    assert view_exposure(views, reads) == {
        "p.filter": {"s.t"},
        "p.over_filter": {"p.filter", "s.t"},
        # the barrier's rows are read, not looked into; the projection's base is reached
        "p.filter_over_barrier": {"p.barrier", "p.proj", "s.t"},
    }


def test_exposure_survives_a_cycle():
    views = {"p.a": (False, True), "p.b": (False, False)}
    both = {"p.a", "p.b"}  # (PostgreSQL refuses such views; a snapshot must not loop on one)
    assert view_exposure(views, {"p.a": {"p.b"}, "p.b": {"p.a"}}) == {"p.a": both, "p.b": both}


def test_what_an_inlined_function_reads():
    from policy.classify.pgparse import inlined_reads

    assert inlined_reads("SELECT id, pin FROM h.accounts WHERE owner = 'me'") == (
        True, frozenset({("h", "accounts")}))  # fmt: skip
    atomic = "BEGIN ATOMIC\n SELECT a.id FROM h.accounts a WHERE (a.owner = 'me'::text);\nEND"
    assert inlined_reads(atomic) == (True, frozenset({("h", "accounts")}))
    definition = ("CREATE OR REPLACE FUNCTION public.f()\n RETURNS TABLE(id integer)\n"
                  " LANGUAGE sql\n STABLE\n" + atomic + "\n")  # fmt: skip
    assert inlined_reads(definition) == (True, frozenset({("h", "accounts")}))
    assert inlined_reads("SELECT id FROM accounts") == (False, frozenset({(None, "accounts")}))
    # PostgreSQL inlines one SELECT only
    for body in ("SELECT 1; SELECT 2", "INSERT INTO t VALUES (1) RETURNING *"):
        assert inlined_reads(body) is None, body
    assert inlined_reads("VALUES (1)") == (False, frozenset())  # a SELECT to the parser
    assert inlined_reads("SELEC x") == (True, frozenset())  # unreadable: fail closed


def test_inlinable_functions_by_qualified_and_bare_name():
    from policy.catalog import inlinable_from_rows

    got = inlinable_from_rows([
        ("public", "rows", "SELECT id FROM h.accounts WHERE owner = 'me'"),
        ("other", "rows", "SELECT id FROM accounts WHERE owner = 'me'"),
        ("public", "all_rows", "SELECT id FROM h.accounts"),  # hides nothing
        ("public", "many", "SELECT 1; SELECT 2"),  # not inlined
        ("public", "odd", "SELEC x"),
    ])  # fmt: skip
    assert got == {
        "public.rows": (("h", "accounts"),),
        "other.rows": ((None, "accounts"),),
        "rows": ((None, "accounts"), ("h", "accounts")),
        "public.odd": ((None, ""),),
        "odd": ((None, ""),),
    }
