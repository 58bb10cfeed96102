"""Object text (column defaults, CHECKs, comments, ...) and the rows a statement pins it to
(policy.classify.metadata), decided on a catalog snapshot (policy.catalog.describe_refusal).

The integration side, against the server: tests/integration/test_redteam_r10_metadata.py
and tests/integration/test_policy_metadata_pins.py."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache, covers_database, describe_refusal
from policy.classify.pgparse import LITERAL, parse
from policy.engine import SharedClassifications

GRANTED, SECRET, SECRET_INDEX, SAME_NAME = 16385, 16999, 16400, 16401
ORDERS = "16385"

# psql 15's own queries for \d public.orders (the OID written in)
PSQL_D = [
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), (SELECT "
    "pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE "
    "d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull, "
    "pg_catalog.col_description(a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a WHERE "
    "a.attrelid = '{o}' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    "SELECT c2.relname, i.indisprimary, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), "
    "pg_catalog.pg_get_constraintdef(con.oid, true), contype FROM pg_catalog.pg_class c, "
    "pg_catalog.pg_class c2, pg_catalog.pg_index i LEFT JOIN pg_catalog.pg_constraint con ON "
    "(conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x')) WHERE "
    "c.oid = '{o}' AND c.oid = i.indrelid AND i.indexrelid = c2.oid ORDER BY i.indisprimary "
    "DESC, c2.relname",
    "SELECT r.conname, pg_catalog.pg_get_constraintdef(r.oid, true) FROM "
    "pg_catalog.pg_constraint r WHERE r.conrelid = '{o}' AND r.contype = 'c' ORDER BY 1",
    "SELECT pol.polname, pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), "
    "pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid) FROM pg_catalog.pg_policy pol "
    "WHERE pol.polrelid = '{o}' ORDER BY 1",
    "SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled FROM "
    "pg_catalog.pg_trigger t WHERE t.tgrelid = '{o}' AND (NOT t.tgisinternal OR "
    "(t.tgisinternal AND t.tgenabled = 'D')) ORDER BY 1",
    "SELECT oid, stxname, pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns FROM "
    "pg_catalog.pg_statistic_ext WHERE stxrelid = '{o}' ORDER BY 1",
    "SELECT pubname, NULL, NULL FROM pg_catalog.pg_publication p JOIN "
    "pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid JOIN pg_catalog.pg_class pc "
    "ON pc.relnamespace = pn.pnnspid WHERE pc.oid ='{o}' UNION SELECT pubname, "
    "pg_get_expr(pr.prqual, c.oid), NULL FROM pg_catalog.pg_publication p JOIN "
    "pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid JOIN pg_catalog.pg_class c ON "
    "c.oid = pr.prrelid WHERE pr.prrelid = '{o}' ORDER BY 1",
]
# the table is referenced by foreign keys: their definitions hold no expression
PSQL_REFERENCED_BY = (
    "SELECT conname, conrelid::pg_catalog.regclass AS ontable, pg_catalog.pg_get_constraintdef("
    "oid, true) AS condef FROM pg_catalog.pg_constraint c WHERE confrelid IN (SELECT "
    "pg_catalog.pg_partition_ancestors('{o}') UNION ALL VALUES ('{o}'::pg_catalog.regclass)) "
    "AND contype = 'f' AND conparentid = 0 ORDER BY conname"
)
# SQLAlchemy 2's column reflection: pinned by name through two LEFT JOINs and a subquery
SQLALCHEMY_COLUMNS = (
    "SELECT pg_catalog.pg_attribute.attname AS name, (SELECT pg_catalog.pg_get_expr("
    "pg_catalog.pg_attrdef.adbin, pg_catalog.pg_attrdef.adrelid) AS pg_get_expr_1 FROM "
    "pg_catalog.pg_attrdef WHERE pg_catalog.pg_attrdef.adrelid = pg_catalog.pg_attribute.attrelid "
    "AND pg_catalog.pg_attrdef.adnum = pg_catalog.pg_attribute.attnum AND "
    'pg_catalog.pg_attribute.atthasdef) AS "default", pg_catalog.pg_description.description AS '
    "comment FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute ON "
    "pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attribute.attnum "
    "> 0 LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = "
    "pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_description.objsubid = "
    "pg_catalog.pg_attribute.attnum JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = "
    "pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid)"
    " AND pg_catalog.pg_namespace.nspname != 'pg_catalog' AND pg_catalog.pg_class.relname IN "
    "('{t}') ORDER BY 1"
)
JDBC_COLUMNS = (
    "SELECT n.nspname, c.relname, pg_catalog.pg_get_expr(def.adbin, def.adrelid) AS adsrc, "
    "dsc.description FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON "
    "(c.relnamespace = n.oid) JOIN pg_catalog.pg_attribute a ON (a.attrelid=c.oid) LEFT JOIN "
    "pg_catalog.pg_attrdef def ON (a.attrelid=def.adrelid AND a.attnum = def.adnum) LEFT JOIN "
    "pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid) WHERE "
    "c.relkind in ('r','p','v','f','m') AND a.attnum > 0 AND NOT a.attisdropped AND "
    "n.nspname LIKE '{s}' AND c.relname LIKE '{t}'"
)


def describes(sql: str) -> set[str]:
    """The statement's pins, without the column each is read through."""
    (st,) = parse(sql)
    return {f"{k}:{v.partition('@')[0]}" for k, v in st.describes}


ADBIN = "any:pg_catalog.pg_attrdef.adbin"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        *[(q.format(o=ORDERS), {f"oid:{ORDERS}"}) for q in PSQL_D],
        (PSQL_REFERENCED_BY.format(o=ORDERS), set()),
        (JDBC_COLUMNS.format(s="public", t="orders"), {"rel:public.orders"}),
        (SQLALCHEMY_COLUMNS.format(t="orders"), {"name:orders"}),
        (JDBC_COLUMNS.format(s="public", t="order\\_items"), {"rel:public.order_items"}),
        (JDBC_COLUMNS.format(s="public", t="%"), {ADBIN, "any:pg_catalog.pg_description.description"}),
        ("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 16999", {"oid:16999"}),
        ("SELECT adbin FROM pg_attrdef WHERE adrelid IN (16385, 16999)", {"oid:16385", "oid:16999"}),
        ("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = "
         "'public.orders'::regclass", {"rel:public.orders"}),
        ("SELECT * FROM pg_attrdef WHERE adrelid = 16385", {"oid:16385"}),
        ("SELECT d FROM pg_attrdef d WHERE d.adrelid = 16385", {"oid:16385"}),
        ("SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
         "AND table_name = 'orders'", {"rel:public.orders"}),
        ("SELECT column_default FROM information_schema.columns WHERE table_name = 'orders'",
         {"name:orders"}),
        ("SELECT pg_get_indexdef(16400)", {"oid:16400"}),
        ("SELECT obj_description(16999, 'pg_class'), col_description(16999, 2)", {"oid:16999"}),
        ("SELECT obj_description('public.orders'::regclass, 'pg_class')", {"rel:public.orders"}),
        # one argument: a comment on an object of any catalog with that OID
        ("SELECT obj_description('public.orders'::regclass)",
         {"any:pg_catalog.pg_description.description"}),
        ("COPY (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 16385) TO STDOUT",
         {"oid:16385"}),
        ("COPY pg_attrdef (adrelid, adnum) TO STDOUT", set()),
        ("SELECT relname FROM pg_class WHERE oid = 'public.orders'::regclass", set()),
        ("SELECT t.oid, t.typname FROM pg_catalog.pg_type t WHERE t.oid = ANY($1)", set()),
        # psql's \d of an index: pg_index pinned by the index's OID
        ("SELECT pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), pg_get_expr(i.indpred, "
         "i.indrelid) FROM pg_catalog.pg_index i, pg_catalog.pg_class c WHERE "
         "i.indexrelid = c.oid AND c.oid = '16400'", {"oid:16400"}),
        # an outer row's text read by a function in a subquery's FROM (psql's \d of a
        # foreign table): the row is filtered before the subquery runs
        ("SELECT ARRAY(SELECT option_name FROM pg_options_to_table(f.ftoptions)) FROM "
         "pg_catalog.pg_foreign_table f WHERE f.ftrelid = '16385'", {"oid:16385"}),
        ("SELECT adbin FROM pg_attrdef WHERE adrelid = 'orders'::regclass", {"visible:orders"}),
        # the LEFT JOIN's ON pins the nullable side only
        ("SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_class c LEFT JOIN pg_attrdef d "
         "ON d.adrelid = c.oid AND c.oid = 16385", {"oid:16385"}),
    ],
)  # fmt: skip
def test_pinned_rows_are_described_by_what_pins_them(sql, expected):
    assert describes(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef",
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 16385 OR adrelid = 16999",
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE NOT adrelid <> 16385",
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE CASE WHEN adrelid = 16385 "
        "THEN true END",
        # the text where a condition is evaluated: may run on rows the pin leaves out
        "SELECT 1 FROM pg_attrdef WHERE adrelid = 16385 AND pg_get_expr(adbin, adrelid)::int > 0",
        "SELECT 1 FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid "
        "AND pg_get_expr(d.adbin, d.adrelid)::int > 0 WHERE d.adrelid = 16385",
        # outer conditions pushed down next to the pin
        "WITH x AS (SELECT pg_get_expr(adbin, adrelid) e FROM pg_attrdef WHERE adrelid = 16385) "
        "SELECT * FROM x WHERE e::int > 0",
        "SELECT * FROM (SELECT pg_get_expr(adbin, adrelid) e FROM pg_attrdef WHERE adrelid = "
        "16385) s WHERE e::int > 0",
        "SELECT * FROM pg_class c, LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) FROM "
        "pg_attrdef d WHERE d.adrelid = 16385) x",
        "CREATE TEMP VIEW v AS SELECT pg_get_expr(adbin, adrelid) e FROM pg_attrdef WHERE "
        "adrelid = 16385",
        "SELECT * FROM (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = "
        "16385 UNION ALL SELECT 'x') u",
        # a correlated subquery in the WHERE runs before the outer pin
        "SELECT 1 FROM pg_attribute a WHERE a.attrelid = 16385 AND (SELECT pg_get_expr(d.adbin, "
        "d.adrelid) FROM pg_attrdef d WHERE d.adrelid = a.attrelid LIMIT 1)::int > 0",
        # the preserved side of a LEFT JOIN is not pinned by its ON
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d LEFT JOIN pg_class c "
        "ON d.adrelid = c.oid AND c.oid = 16385",
        # an equality in a LEFT JOIN's ON holds only where its side is not null-extended:
        # s may be, so q.oid is not pinned through it
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class q ON d.adrelid "
        "= q.oid LEFT JOIN pg_attribute s ON s.attrelid = q.oid AND s.attrelid = 16385",
        # a UNION branch without a pin
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 16385 UNION "
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef",
        # whole rows and stars
        "SELECT to_jsonb(d) FROM pg_attrdef d",
        "SELECT d.row_to_json FROM pg_attrdef d",
        "SELECT j FROM (pg_attrdef CROSS JOIN (SELECT 1) z) AS j",
        "SELECT * FROM pg_attrdef",
        "COPY pg_attrdef TO STDOUT",
        "SELECT x FROM pg_attrdef AS d(a, b, c, x) WHERE b = 16385",
        # LIKE with a wildcard pins nothing
        "SELECT column_default FROM information_schema.columns WHERE table_name LIKE 'ord%'",
        # red-team round 12: another FROM item's column of the same name is not the outer
        # catalog's (PostgreSQL resolves the inner one first)
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, (VALUES "
        "(16999::oid)) a(attrelid) WHERE d.adrelid = a.attrelid) FROM pg_attribute a "
        "WHERE a.attrelid = 16385",
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, (SELECT "
        "16999::oid AS attrelid) s WHERE d.adrelid = attrelid) FROM pg_attribute a "
        "WHERE a.attrelid = 16385",
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, unnest(ARRAY["
        "16999::oid]) AS attrelid WHERE d.adrelid = attrelid) FROM pg_attribute a "
        "WHERE a.attrelid = 16385",
        # a CTE named like a catalog: its rows are the client's
        "WITH pg_constraint AS (SELECT 16999::oid AS oid, 16385::oid AS conrelid) SELECT "
        "pg_get_constraintdef(k.oid) FROM pg_constraint k WHERE k.conrelid = 16385",
        "WITH pg_class AS (SELECT 16999::oid AS oid, 'orders'::name AS relname) SELECT "
        "obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relname = 'orders'",
        # a subquery in the SELECT list of a FROM subquery: the outer condition is pushed
        # below that level's own
        "SELECT 1 FROM (SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = c.oid) AS t FROM pg_class c WHERE c.oid = 16385) s "
        "WHERE s.t::int > 0",
        # one argument: a comment of any catalog's object with that OID
        "SELECT obj_description(16385)",
        "SELECT pg_get_function_arg_default(16385, 1)",
        "SELECT fdwoptions FROM pg_foreign_data_wrapper",
        # red-team round 13: with a GROUP BY, PostgreSQL moves a HAVING condition without
        # aggregates into WHERE, below the join that pins
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_class c ON c.oid = "
        "d.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'orders' "
        "AND n.nspname = 'public' GROUP BY 1 HAVING pg_get_expr(d.adbin, d.adrelid)::int > 0",
        # a type modifier truncates the literal: the server reads another name
        "SELECT adbin FROM pg_attrdef WHERE adrelid = 'public.orders_log'::varchar(13)::regclass",
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'orders_log'::varchar(6)",
        # PostgreSQL 15 keeps a vertical tab in a name read from a string
        "SELECT adbin FROM pg_attrdef WHERE adrelid = E'public.orders\\v'::regclass",
    ],
)  # fmt: skip
def test_text_not_pinned_is_read_as_the_catalog(sql):
    got = describes(sql)
    assert any(d.startswith("any:") for d in got), got


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 16999",
        "SELECT pg_get_constraintdef(12345)",  # a constraint by OID: no relation named
        "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t",
        "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p WHERE p.oid = 16385",
        "SELECT pg_get_function_arguments(p.oid) FROM pg_proc p",
        "SELECT typdefault FROM pg_type WHERE typname = 'd'",
        "SELECT tgargs FROM pg_trigger WHERE tgname = 't'",
        "SELECT qual FROM pg_policies WHERE policyname = 'p'",
    ],
)
def test_deparsers_and_catalogs_without_a_relation_pin(sql):
    got = describes(sql)
    assert got and got != {f"oid:{ORDERS}"}, got


def test_literal_pins_make_the_decision_literal_dependent():
    (st,) = parse(PSQL_D[2].format(o=ORDERS))
    assert LITERAL in st.flags
    (plain,) = parse("SELECT relname FROM pg_class WHERE relkind = 'r'")
    assert LITERAL not in plain.flags


def _cache() -> CatalogCache:
    cache = CatalogCache()
    cache.put(
        "db", [], {"public.orders": frozenset({"id"}), "secret.orders": frozenset({"id"})},
        relation_oids={GRANTED: ("public", "orders"), SECRET: ("secret", "vault"),
                       SECRET_INDEX: ("secret", "vault"), SAME_NAME: ("secret", "orders"),
                       2604: ("pg_catalog", "pg_attrdef")},
        user_schemas=["public", "secret"],
        defaulted_functions=[("secret", "argdef")],
    )  # fmt: skip
    return cache


def _policy(scopes: str, cache: CatalogCache | None, shared=None) -> StatementPolicy:
    policy = StatementPolicy(parse_scopes(scopes), task="T", shared=shared)
    if cache is not None:
        policy.catalog = lambda: cache.get("db")
    return policy


@pytest.mark.parametrize(
    ("entries", "refused"),
    [
        ({"oid:16385"}, False),
        ({"oid:16999"}, True),
        ({"oid:16400"}, True),  # an index of a secret table
        ({"oid:2604"}, False),  # a catalog's own
        ({"oid:20000"}, True),  # unknown: made after the load
        ({"rel:public.orders"}, False),
        ({"rel:secret.vault"}, True),
        ({"name:orders"}, True),  # secret.orders shares the name; and one made since
        ({"visible:orders"}, False),  # 'orders'::regclass: the search path's (public)
        ({"name:vault"}, True),
        ({"name:nosuch"}, True),
        ({ADBIN}, True),
        ({"any:pg_catalog.pg_proc.proargdefaults"}, True),  # secret.argdef has defaults
    ],
)
def test_describe_refusal(entries, refused):
    snap = _cache().get("db")
    why = describe_refusal(frozenset(entries), parse_scopes("read:public.orders"), snap)
    assert (why is not None) is refused, why


def test_what_a_grant_names_in_any_way_it_may_describe():
    snap = _cache().get("db")
    for scopes in ("write:public.orders", "ddl:public.orders", "truncate:public.orders"):
        assert describe_refusal(frozenset({"oid:16385"}), parse_scopes(scopes), snap) is None


def test_a_read_scope_on_the_catalog_or_every_schema_allows_unpinned_text():
    snap = _cache().get("db")
    assert (
        describe_refusal(frozenset({ADBIN}), parse_scopes("read:pg_catalog.pg_attrdef"), snap)
        is None
    )
    everything = parse_scopes("read:public.* ddl:secret.*")
    assert covers_database(everything, snap)
    assert describe_refusal(frozenset({ADBIN, "oid:16999", "oid:20000"}), everything, snap) is None
    assert not covers_database(parse_scopes("read:public.*"), snap)
    assert not covers_database(everything, None)  # no snapshot: nothing is known to be covered
    assert describe_refusal(
        frozenset({"any:pg_catalog.pg_proc.proargdefaults"}),
        parse_scopes("read:public.orders execute:secret.argdef"), snap,
    ) is None  # fmt: skip


def test_no_catalog_loaded_refuses_oid_pins():
    why = describe_refusal(frozenset({"oid:16385"}), parse_scopes("read:public.orders"), None)
    assert why is not None and "no catalog loaded" in why


@pytest.mark.parametrize("shared", [False, True])
def test_a_pinned_shape_does_not_stand_for_another_oid(shared):
    """The fingerprint caches must not decide the secret OID as the granted one was."""
    cache = _cache()
    pool = SharedClassifications() if shared else None
    policy = _policy("read:public.orders", cache, pool)
    for q in PSQL_D:
        assert policy.check_query(q.format(o=GRANTED)).allowed, q
        assert not policy.check_query(q.format(o=SECRET)).allowed, q
        assert policy.check_query(q.format(o=GRANTED)).allowed, q
    if shared:
        again = _policy("read:public.orders", cache, pool)
        for q in PSQL_D:
            assert not again.check_query(q.format(o=SECRET)).allowed, q


def test_a_new_snapshot_redecides_a_pin():
    """An OID unknown to the snapshot is refused; the reload that knows it allows it."""
    cache = _cache()
    policy = _policy("read:public.orders,public.fresh", cache)
    q = PSQL_D[2].format(o=30000)
    assert not policy.check_query(q).allowed
    snap = cache.get("db")
    cache.put("db", [], snap.columns, relation_oids={**snap.relation_oids, 30000: ("public", "fresh")},
              user_schemas=snap.user_schemas)  # fmt: skip
    assert policy.check_query(q).allowed


def test_the_denial_names_the_pin_to_use():
    policy = _policy("read:public.orders", _cache())
    v = policy.check_query("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef")
    assert not v.allowed and "pin the rows to a granted relation" in v.message
    assert "read:pg_catalog.pg_attrdef" in v.message


@pytest.mark.parametrize("form", ["'+16999'", "' 16999'", "'16999 '", "'0x'", "16999 + 0"])
def test_a_refused_form_does_not_stand_for_the_granted_literal(form):
    """A literal that is no pin (PostgreSQL reads '+16999' as an OID; the policy does not)
    is refused; that refusal must not be cached for the shape, or the granted OID of the
    same shape would be refused from then on (red-team finding, session 16)."""
    policy = _policy("read:public.orders", _cache())
    q = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = {}"
    assert not policy.check_query(q.format(form)).allowed
    assert policy.check_query(q.format("'16385'")).allowed


def test_a_read_scope_on_the_catalog_allows_any_pin():
    policy = _policy("read:public.orders read:pg_catalog.pg_attrdef", _cache())
    assert policy.check_query("SELECT adbin FROM pg_attrdef WHERE adrelid = 16999").allowed
    assert not policy.check_query("SELECT conbin FROM pg_constraint WHERE conrelid = 16999").allowed


def test_a_partition_is_described_through_its_parent():
    """psql's \\d of a partitioned table lists its partitions' bounds, pinned through
    pg_inherits to the parent; a bound read for any other relation is not pinned."""
    q = ("SELECT c.oid::pg_catalog.regclass, pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM "
         "pg_catalog.pg_class c, pg_catalog.pg_inherits i WHERE c.oid = i.inhrelid AND "
         "i.inhparent = '16385'")  # fmt: skip
    assert describes(q) == {"oid:16385"}
    assert describes("SELECT relpartbound FROM pg_class WHERE relname = 'p1'") == {"name:p1"}
    # other text of a child is its own (an INHERITS child's defaults, comments): no pin
    child = ("SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_inherits i ON "
             "i.inhrelid = d.adrelid WHERE i.inhparent = 16385")  # fmt: skip
    assert describes(child) == {"any:pg_catalog.pg_attrdef.adbin"}
    comment = ("SELECT obj_description(i.inhrelid, 'pg_class') FROM pg_inherits i "
               "WHERE i.inhparent = 16385")  # fmt: skip
    assert describes(comment) == {"any:pg_catalog.pg_description.description"}
    got = describes("SELECT pg_get_expr(relpartbound, oid) FROM pg_class")
    assert got == {"any:pg_catalog.pg_class.relpartbound"}
    assert describes("SELECT partexprs FROM pg_partitioned_table WHERE partrelid = 16385") == {
        "oid:16385"
    }


@pytest.mark.parametrize(
    ("sql", "schema"),
    [
        ("SELECT enum_range(NULL::secret.mood)", "secret"),
        ("SELECT 'x'::secret.mood", "secret"),
        ("SELECT enumlabel FROM pg_enum WHERE enumtypid = 'secret.mood'::regtype", "secret"),
        ("SELECT 'secret.f(int)'::regprocedure", "secret"),
        ("SELECT 'secret'::regnamespace", "secret"),
    ],
)
def test_an_object_of_a_schema_the_grant_names_nothing_in(sql, schema):
    """PostgreSQL asks USAGE on a schema to use its types or look a name up in it; a
    per-grant role has it only on the schemas its grant names."""
    (st,) = parse(sql)
    assert ("schema", schema) in st.describes
    assert not _policy("read:public.orders", _cache()).check_query(sql).allowed
    assert _policy(f"read:public.orders read:{schema}.t", _cache()).check_query(sql).allowed


def test_domain_defaults_follow_the_schemas_of_the_domains():
    """No pin names a type: a domain's DEFAULT is shown while every domain that has one is
    in a schema the grant names (the snapshot's list)."""
    cache = _cache()
    snap = cache.get("db")
    q = "SELECT typname, typdefault FROM pg_type WHERE typtype = 'd'"
    cache.put("db", [], snap.columns, relation_oids=snap.relation_oids,
              user_schemas=snap.user_schemas, domain_schemas=["public"])  # fmt: skip
    assert _policy("read:public.orders", cache).check_query(q).allowed
    cache.put("db", [], snap.columns, relation_oids=snap.relation_oids,
              user_schemas=snap.user_schemas, domain_schemas=["public", "secret"])  # fmt: skip
    v = _policy("read:public.orders", cache).check_query(q)
    assert not v.allowed and "schema secret has some" in v.message


@pytest.mark.parametrize(
    ("q", "catalog"),
    [
        ("SELECT enumlabel FROM pg_enum", "pg_catalog.pg_enum"),
        ("SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
         "WHERE t.oid = 'public.mood'::regtype", "pg_catalog.pg_enum"),
        ("SELECT colliculocale, collcollate FROM pg_collation", "pg_catalog.pg_collation"),
        ("SELECT dictinitoption FROM pg_ts_dict", "pg_catalog.pg_ts_dict"),
        # every label of its argument's enum, whatever the value's source (round 92)
        ("SELECT enum_range(status)::text FROM public.orders", "pg_catalog.pg_enum"),
        ("SELECT pg_catalog.enum_last(status) FROM public.orders", "pg_catalog.pg_enum"),
        ("SELECT enum_first(status) FROM public.orders", "pg_catalog.pg_enum"),
    ],
)
def test_enum_labels_and_locales_follow_the_schemas_that_hold_them(q, catalog):
    """Red-team round 91 (session 39): an enum's labels are literals its definer wrote, as
    a domain's DEFAULT is (they had been taken as structure, while ``enum_range`` of the
    same type was refused); so are a collation's locale (an ICU locale takes any tag) and
    a text search dictionary's options. No pin names their objects: shown while every
    schema holding such objects is one the grant names (the snapshot's lists), else
    refused with the catalog's read scope as the remedy."""
    cache = _cache()
    snap = cache.get("db")
    cache.put("db", [], snap.columns, relation_oids=snap.relation_oids,
              user_schemas=snap.user_schemas, text_schemas={catalog: ["public"]})  # fmt: skip
    assert _policy("read:public.orders", cache).check_query(q).allowed
    cache.put("db", [], snap.columns, relation_oids=snap.relation_oids,
              user_schemas=snap.user_schemas,
              text_schemas={catalog: ["public", "secret"]})  # fmt: skip
    v = _policy("read:public.orders", cache).check_query(q)
    assert not v.allowed and "schema secret has some" in v.message, v.message
    assert f"read:{catalog}" in v.message, v.message
    assert _policy(f"read:public.orders read:{catalog}", cache).check_query(q).allowed
    # another catalog's objects elsewhere do not count
    cache.put("db", [], snap.columns, relation_oids=snap.relation_oids,
              user_schemas=snap.user_schemas, domain_schemas=["secret"],
              text_schemas={"pg_catalog.pg_other": ["secret"], catalog: ["public"]})  # fmt: skip
    assert _policy("read:public.orders", cache).check_query(q).allowed


# --- pins bound as parameters (decided at each Bind) ------------------------------------

BOUND = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1"


@pytest.mark.parametrize(
    ("sql", "spec"),
    [
        (BOUND, ["oid", 1]),
        ("SELECT adbin FROM pg_attrdef WHERE adrelid = $2::regclass", ["reg", 2]),
        ("SELECT adbin FROM pg_attrdef WHERE adrelid = $1::text::oid", ["oid", 1]),
        ("SELECT column_default FROM information_schema.columns WHERE table_schema = $1 "
         "AND table_name = $2", ["rel", 1, 2]),
        ("SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
         "AND table_name = $1", ["rel", "public", 1]),
        ("SELECT column_default FROM information_schema.columns WHERE table_name = $1",
         ["name", 1]),
    ],
)  # fmt: skip
def test_a_parameter_is_a_pin_decided_when_bound(sql, spec):
    import json

    (st,) = parse(sql)
    params = [v.rpartition("@")[0] for k, v in st.describes if k == "param"]
    assert [json.loads(p) for p in params] == [spec]


def test_a_like_parameter_pins_nothing():
    """Its pattern may hold wildcards: only a literal without any is a pin."""
    got = describes(
        "SELECT column_default FROM information_schema.columns WHERE table_name LIKE $1"
    )
    assert got == {"any:pg_catalog.pg_attrdef.adbin"}


@pytest.mark.parametrize(
    ("spec", "formats", "values", "expected"),
    [
        (["oid", 1], (), (b"16385",), {("oid", "16385")}),
        (["oid", 1], (1,), ((16385).to_bytes(4, "big"),), {("oid", "16385")}),
        (["oid", 1], (1,), ((16385).to_bytes(2, "big"),), {("oid", "16385")}),  # psycopg int2
        (["oid", 1], (1,), ((16385).to_bytes(8, "big"),), {("oid", "16385")}),
        (["oid", 1], (0, 1), (b"x", (7).to_bytes(4, "big")), None),  # $1 is text 'x'
        (["oid", 2], (0, 1), (b"x", (7).to_bytes(4, "big")), {("oid", "7")}),
        (["oid", 1], (), (None,), None),  # NULL
        (["oid", 1], (), (b"+16385",), None),
        (["oid", 1], (), (b"16385 ",), None),
        (["oid", 1], (1,), (b"\x01\x02\x03",), None),
        (["oid", 1], (1,), ((-5).to_bytes(8, "big", signed=True),), None),
        (["oid", 3], (), (b"1",), None),  # no third value
        (["reg", 1], (), (b"public.orders",), {("rel", "public.orders")}),
        (["reg", 1], (), (b"orders",), {("visible", "orders")}),
        (["reg", 1], (), (b"16385",), {("oid", "16385")}),
        (["reg", 1], (1,), ((16385).to_bytes(4, "big"),), {("oid", "16385")}),
        # 2 bytes are no regclass: another type's value ($1::text::regclass)
        (["reg", 1], (1,), (b"3a",), None),
        (["reg", 1], (), (b"public.orders\v",), None),
        (["rel", 1, 2], (), (b"public", b"orders"), {("rel", "public.orders")}),
        (["rel", "public", 1], (), (b"Orders",), {("rel", 'public."Orders"')}),
        (["name", 1], (), (b"orders",), {("name", "orders")}),
        (["name", 1], (), (b"",), None),
    ],
)
def test_bound_values_as_pins(spec, formats, values, expected):
    import json

    from policy.classify.metadata import bound_pins

    got = bound_pins(json.dumps(spec), formats, values, "utf-8")
    assert (set(got) if got is not None else None) == expected


def test_each_bind_of_a_parameter_pinned_statement_is_decided_on_its_values():
    policy = _policy("read:public.orders", _cache())
    v = policy.check_parse(BOUND, (), "s1")
    assert v.allowed and "s1" in policy.bind_pins
    assert policy.check_bind("s1", (), (b"16385",), "utf-8").allowed
    denied = policy.check_bind("s1", (), (b"16999",), "utf-8")
    assert not denied.allowed and "secret.vault" in denied.message and "'s1'" in denied.message
    assert not policy.check_bind("s1", (), (None,), "utf-8").allowed
    # the same name parsed again without a parameter pin: its Binds are not looked at
    assert policy.check_parse("SELECT 1", (), "s1").allowed
    assert "s1" not in policy.bind_pins


def test_a_dry_run_bind_would_deny():
    policy = StatementPolicy(
        parse_scopes("read:public.orders"), task="T", shared=None, enforce=False
    )
    cache = _cache()
    policy.catalog = lambda: cache.get("db")
    policy.check_parse(BOUND, (), "")
    v = policy.check_bind("", (), (b"16999",), "utf-8")
    assert v.allowed and v.would_deny


def test_a_sql_prepare_with_a_parameter_pin_is_refused():
    policy = _policy("read:public.orders", _cache())
    assert not policy.check_query(f"PREPARE p(oid) AS {BOUND}").allowed
    assert not policy.bind_pins


def test_a_name_without_its_schema_is_refused_however_the_snapshot_looks():
    """Every relation of that name would be read, one another session made since the
    snapshot was loaded included (red-team round 12): the schema must be written."""
    snap = _cache().get("db")
    why = describe_refusal(frozenset({"name:fresh"}), parse_scopes("read:public.*"), snap)
    assert why is not None and "name the schema as well" in why
    covering = parse_scopes("read:public.* ddl:secret.*")
    assert describe_refusal(frozenset({"name:fresh"}), covering, snap) is None


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP TABLE pg_class AS SELECT 1 AS oid",
        "CREATE TEMP VIEW pg_index AS SELECT 1",
        "SELECT 1 AS oid INTO TEMP pg_trigger",
        "CREATE TEMP SEQUENCE pg_inherits",
        "ALTER TABLE pg_temp.x RENAME TO pg_constraint",
    ],
)
def test_a_temporary_relation_named_like_a_catalog_is_refused(sql):
    """PostgreSQL searches pg_temp before pg_catalog for relations: it would be what every
    unqualified name of the catalog means (red-team round 12)."""
    v = _policy("read:public.orders", _cache()).check_query(sql)
    assert not v.allowed and "deny.temp" in v.message, v.message
    assert (
        _policy("read:public.orders", _cache()).check_query("CREATE TEMP TABLE x (a int)").allowed
    )


def test_a_statement_built_to_make_the_search_slow_pins_nothing():
    """The pin search is quadratic in the equalities: past a bound (far above any psql,
    JDBC or ORM query) it pins nothing, and the statement is refused."""
    conj = " AND ".join(f"a.attnum = a{i}.attnum" for i in range(130))
    froms = ", ".join(f"pg_attribute a{i}" for i in range(130))
    sql = (f"SELECT a.attmissingval FROM pg_attribute a, {froms} WHERE a.attrelid = 16385 "
           f"AND {conj}")  # fmt: skip
    assert describes(sql) == {"any:pg_catalog.pg_attribute.attmissingval"}
    under = sql.replace(
        " AND ".join(f"a.attnum = a{i}.attnum" for i in range(10, 130)), "a.attnum > 0"
    )
    assert describes(under) == {"oid:16385"}


@pytest.mark.parametrize(
    "sql",
    ["PREPARE pgw_0123_pin_1 AS SELECT 1", "EXECUTE pgw_0123_pin_1(16999)",
     "DEALLOCATE pgw_0123_pin_1", "EXECUTE PGW_0123_pin_1(16999)"],
)  # fmt: skip
def test_the_proxys_own_statement_names_are_refused_in_sql(sql):
    """Red-team round 14: a private statement's name can be learned (pg_prepared_statements,
    an error); SQL EXECUTE of it would run it with values no Bind check saw."""
    v = _policy("read:public.orders", _cache()).check_query(sql)
    assert not v.allowed and "proxy's own" in v.message, v.message


def test_the_proxys_own_statement_names_are_refused_in_the_protocol():
    policy = _policy("read:public.orders", _cache())
    assert not policy.check_parse("SELECT 1", (), "pgw_0123_pin_1").allowed
    v = policy.check_bind("pgw_0123_pin_1", (), (b"16999",), "utf-8")
    assert not v.allowed and "proxy's own" in v.message


def test_comments_on_shared_objects_are_object_text():
    assert describes("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles") == {
        "any:pg_catalog.pg_shdescription.description"
    }
    assert describes("SELECT description FROM pg_shdescription") == {
        "any:pg_catalog.pg_shdescription.description"
    }


@pytest.mark.parametrize(
    "sql",
    [
        # an alias list renames pg_inherits' columns: inhparent is the child now
        "SELECT obj_description(inhrelid, 'pg_class') FROM pg_catalog.pg_inherits "
        "i(inhparent, inhrelid) WHERE inhparent = 16385",
        # renamed away: PostgreSQL resolves inhrelid to the VALUES list's column
        "SELECT obj_description(inhrelid, 'pg_class') FROM pg_catalog.pg_inherits i(x), "
        "(VALUES (16999::oid)) v(inhrelid) WHERE x = 16385",
    ],
)
def test_a_renamed_catalog_makes_no_pin(sql):
    """Red-team round 15: strict resolution refuses a renamed catalog's columns and a name
    another FROM item of the level may have."""
    got = describes(sql)
    assert got == {"any:pg_catalog.pg_description.description"}, got


@pytest.mark.parametrize(
    "sql",
    [
        # unnest of a composite array has the composite's columns (oid here)
        "SELECT (SELECT obj_description(oid, 'pg_class') FROM pg_catalog.unnest(ARRAY[ROW("
        "16999::oid, 'x'::name, 10::oid, NULL::aclitem[])::pg_catalog.pg_namespace]) u) "
        "FROM pg_catalog.pg_class c WHERE c.oid = 16385",
        # an alias list renames only the first columns of a FROM function's row
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d, json_populate_record("
        "NULL::pg_catalog.pg_attrdef, '{\"adrelid\": 16999}') j(x) WHERE d.adrelid = adrelid) "
        "FROM pg_attrdef d0 WHERE d0.adrelid = 16385",
        # every ancestor's bound, not only the argument's
        "SELECT pg_get_partition_constraintdef(16385)",
    ],
)
def test_red_team_round_16_shapes_pin_nothing(sql):
    got = describes(sql)
    assert any(d.startswith("any:") for d in got), got
