"""Red-team round 16: the newest metadata rules (policy/classify/metadata.py): strict
resolution refusing renamed catalogs and names another FROM item may have, FROM functions
whose result columns are taken as known (``_function_columns``), and the ``pg_inherits`` rule
narrowed to ``pg_class.relpartbound`` (``_Pins.oid_pins(partitions=True)``).

Grant: ``read:public.r16_orders read:public.r16_parent read:public.r16_leaf``. Same pattern
as round 15: each probe is shown to reach its marker directly as the upstream login, then
sent through the proxy (simple, extended, named prepared): no byte may hold a marker.

Leaks (all closed the same session; their probes are regression tests): a FROM function's columns taken as known when they are not: unnest /
ROWS FROM (unnest) of a composite array (``_function_columns``: one column named like the
alias), an alias column list shorter than a function's or XMLTABLE's row (``_colnames`` now
applied to every RangeFunction/RangeTableFunc); strict ``_resolve`` then passes the name
outwards to a pinned catalog. ``pg_get_partition_constraintdef`` of a granted partition
shows its secret ancestors' bounds. Held: scalar generate_series/unnest, WITH ORDINALITY,
pg_partition_ancestors' relid, INHERITS children through the narrowed pg_inherits rule, a
secret parent's relpartbound through its granted partition.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows

pytestmark = pytest.mark.timeout(180)

AGENT = "r16-bot"
SCOPES = "read:public.r16_orders read:public.r16_parent read:public.r16_leaf"

R = {  # outside the grant: must never come back through the proxy
    "comment": "r16-comment-7b01",
    "default": "r16-default-7b02",
    "childcomment": "r16-childcomment-7b03",
    "childdefault": "r16-childdefault-7b04",
    "midbound": "r16-midbound-7b05",
    "midcomment": "r16-midcomment-7b06",
}
SECRETS = list(R.values())

SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE public.r16_orders (id int, note text DEFAULT 'r16-ok-default');
CREATE TABLE public.r16_parent (id int);
CREATE TABLE secret.r16_vault (k int, s text DEFAULT '{R["default"]}');
COMMENT ON TABLE secret.r16_vault IS '{R["comment"]}';
CREATE TABLE secret.r16_child (extra text DEFAULT '{R["childdefault"]}')
    INHERITS (public.r16_parent);
COMMENT ON TABLE secret.r16_child IS '{R["childcomment"]}';
-- a granted partition of a secret partitioned table, itself a partition of a secret root
CREATE TABLE secret.r16_root (k text, j int) PARTITION BY LIST (k);
CREATE TABLE secret.r16_mid PARTITION OF secret.r16_root FOR VALUES IN ('{R["midbound"]}')
    PARTITION BY LIST (j);
COMMENT ON TABLE secret.r16_mid IS '{R["midcomment"]}';
CREATE TABLE public.r16_leaf PARTITION OF secret.r16_mid FOR VALUES IN (1);
RESET ROLE;
"""
TEARDOWN = """
DROP TABLE IF EXISTS secret.r16_root, secret.r16_child, public.r16_parent;
DROP TABLE IF EXISTS secret.r16_vault, public.r16_orders;
"""
OID_QUERY = """
SELECT 'G=' || 'public.r16_orders'::regclass::oid
UNION ALL SELECT 'GP=' || 'public.r16_parent'::regclass::oid
UNION ALL SELECT 'GL=' || 'public.r16_leaf'::regclass::oid
UNION ALL SELECT 'S=' || 'secret.r16_vault'::regclass::oid
UNION ALL SELECT 'SM=' || 'secret.r16_mid'::regclass::oid;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r16newest", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OID_QUERY)
        yield handle




def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def leak(sql: str, key: str, reason: str):
    """A probe that leaked when this round ran, closed the same session (session 16: a FROM
    item's columns are known only for built-ins with fixed columns and without an alias
    list; pg_get_partition_constraintdef pins nothing): a regression test now, ``reason``
    saying what the hole was."""
    return pytest.param(sql, key)


PROBES = [
    # A: unnest of a composite array: one column per the policy, four per PostgreSQL
    leak(
        "SELECT (SELECT obj_description(oid, 'pg_class') FROM pg_catalog.unnest(ARRAY["
        "ROW(<<S>>::oid, 'x'::name, 10::oid, NULL::aclitem[])::pg_catalog.pg_namespace]) u) "
        "FROM pg_catalog.pg_class c WHERE c.oid = <<G>>",
        "comment",
        "unnest of a composite array (pg_namespace[]): metadata._function_columns takes unnest(x) for one column named like the alias (u), PostgreSQL gives the composite's columns (oid, nspname, ...); strict _Walk._resolve passes the inner unqualified oid outwards to pg_class c pinned to the granted table, PostgreSQL reads u.oid = the secret OID",
    ),
    leak(
        "SELECT (SELECT obj_description(adrelid, 'pg_class') FROM unnest(ARRAY["
        "json_populate_record(NULL::pg_catalog.pg_attrdef, '{\"adrelid\": <<S>>}')]) u) "
        "FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<G>>",
        "comment",
        "the same with unnest(ARRAY[json_populate_record(NULL::pg_attrdef, ...)]): adrelid resolved outwards to the pinned pg_attrdef d",
    ),
    # B: an alias column list shorter than the function's row: the rest keep their names
    leak(
        "SELECT (SELECT obj_description(adrelid, 'pg_class') FROM json_populate_record("
        "NULL::pg_catalog.pg_attrdef, '{\"adrelid\": <<S>>}') j(x)) "
        "FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<G>>",
        "comment",
        "a FROM function with an alias column list shorter than its row (j(x)): _Walk.from_item now sets level.opaque to _colnames(alias) = {x} for every RangeFunction, PostgreSQL keeps the remaining columns' own names (adrelid): resolved outwards to the pinned catalog",
    ),
    leak(
        "SELECT (SELECT obj_description(adrelid, 'pg_class') FROM XMLTABLE('/r' PASSING "
        "('<r><o><<S>></o></r>'::xml) COLUMNS q int PATH 'q', adrelid oid PATH 'o') x(q)) "
        "FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<G>>",
        "comment",
        "the same for XMLTABLE (RangeTableFunc): x(q) renames the first COLUMNS entry only, adrelid stays",
    ),
    leak(
        "SELECT (SELECT obj_description(adrelid, 'pg_class') FROM ROWS FROM (unnest(ARRAY["
        "json_populate_record(NULL::pg_catalog.pg_attrdef, '{\"adrelid\": <<S>>}')])) u) "
        "FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<G>>",
        "comment",
        "ROWS FROM (unnest(composite[])): one function, _function_columns takes it for one column u",
    ),
    # scalar functions: named as PostgreSQL does (held expected)
    pytest.param(
        "SELECT (SELECT obj_description(oid, 'pg_class') FROM generate_series(<<S>>, <<S>>) "
        "oid) FROM pg_catalog.pg_class c WHERE c.oid = <<G>>",
        "comment",
    ),
    pytest.param(
        "SELECT (SELECT obj_description(oid, 'pg_class') FROM unnest(ARRAY[<<S>>::oid]) oid) "
        "FROM pg_catalog.pg_class c WHERE c.oid = <<G>>",
        "comment",
    ),
    pytest.param(
        "SELECT (SELECT obj_description(oid, 'pg_class') FROM unnest(ARRAY[<<S>>::oid]) "
        "WITH ORDINALITY u(oid)) FROM pg_catalog.pg_class c WHERE c.oid = <<G>>",
        "comment",
    ),
    pytest.param(
        "SELECT (SELECT obj_description(relid, 'pg_class') FROM pg_partition_ancestors(<<GL>>) "
        "a WHERE relid::oid <> <<GL>> LIMIT 1) FROM pg_catalog.pg_class c WHERE c.oid = <<GL>>",
        "midcomment",
    ),
    # C: the pg_inherits rule now feeds the whole pg_class occurrence (partitions=True)
    pytest.param(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid WHERE i.inhparent = <<GP>>",
        "childcomment",
    ),
    pytest.param(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d "
        "JOIN pg_catalog.pg_class c ON c.oid = d.adrelid "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid WHERE i.inhparent = <<GP>>",
        "childdefault",
    ),
    # D: a granted partition of a secret parent: the parent's bound, comment
    pytest.param(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_inherits i ON i.inhparent = c.oid WHERE i.inhrelid = <<GL>>",
        "midbound",
    ),
    pytest.param(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid WHERE i.inhrelid = <<GL>> "
        "OR i.inhparent = <<GL>> OR i.inhrelid = <<SM>>",
        "midbound",
    ),
    pytest.param(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid "
        "JOIN pg_catalog.pg_inherits i2 ON i2.inhparent = i.inhrelid WHERE i2.inhrelid = <<GL>>",
        "midbound",
    ),
    leak(
        "SELECT pg_get_partition_constraintdef(<<GL>>)",
        "midbound",
        "pg_get_partition_constraintdef of a granted partition includes its secret ancestors' bounds (PostgreSQL's generate_partition_qual walks up): the secret parent's partition bound value comes back through the granted leaf (metadata: the function maps to pg_class.relpartbound of its argument only). Reading the leaf's rows shows k too, but an empty leaf does not",
    ),
    leak(
        "SELECT pg_get_partition_constraintdef(c.oid) FROM pg_catalog.pg_class c "
        "WHERE c.oid = <<GL>>",
        "midbound",
        "the same with the OID pinned through pg_class c",
    ),
]


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, R.__getitem__)
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key"), PROBES, ids=planted.ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key):
    bad = planted.leaks(px, sql, leaked)
    assert not bad, ("LEAK", sql, bad)
