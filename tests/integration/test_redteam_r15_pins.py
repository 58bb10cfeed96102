"""Red-team round 15: object text (defaults, CHECKs, comments, index predicates, foreign
options) of relations outside the grant, where rounds 10-14 did not look: the null-extension
rule of the pin search with FULL/RIGHT joins and nested join trees, correlated subqueries
whose intermediate level is a set operation or a VALUES list, pins through ``pg_inherits``
and ``pg_index.indexrelid``, ``pg_class`` name pins whose schema is an OID, deparsers given a
column of another catalog, whole-row expansions, ``information_schema``'s internal views.

Grant: ``read:public.r15_orders write:public.r15_orders read:public.r15_parent
read:public.r15_kid`` (``r15_kid`` inherits from the secret ``secret.r15_sparent``). The
superuser and the schema owner (``pgwitness``) plant one ``r15-...`` marker per probe
outside the grant. Each probe is first sent to the server as the upstream login
(``test_each_probe_reaches_its_marker_directly``: the server shows the marker there), then
through the proxy by a raw client over the simple protocol, the extended one and a named
prepared statement: no byte may hold a marker. (Every leak this round found was closed the
same session; their probes are regression tests.) Leaks would be kept as ``xfail(strict=True,
reason="LEAK: ...")``; probes that hold are regression tests.

Leaks found (details in each reason):

1. an alias column list on ``pg_inherits`` (a catalog with no text of its own, so naming
   its columns adds no unpinned use) changes what an unqualified column is:
   ``_Walk._resolve`` takes a renamed occurrence for every single name and ``_node`` makes
   a pin of it. ``pg_inherits i(inhparent, inhrelid)`` swaps the two columns (the policy
   follows the pg_inherits rule the wrong way: a granted child describes its secret
   parent); ``pg_inherits i(x)`` renames ``inhrelid`` away, so PostgreSQL resolves an
   unqualified ``inhrelid`` to a VALUES list holding a secret OID (beside it, or in an outer
   query) while the policy pins it to a child of the granted parent. Any secret
   relation's text comes back, given a granted table with some child or partition;
2. a table made a child of a granted parent by plain inheritance (``INHERITS``) is
   "described through it" (``_Pins.oid_pins``, the ``pg_inherits`` rule): its own columns'
   defaults, its comment, a foreign child's ``ftoptions``, and the DEFAULT and CHECK it
   copied from a second, secret parent come back, though reading the granted parent never
   reads those columns or that parent (the rule's reason, "its rows are read through it",
   holds for a partition, whose columns are the parent's; not for an inheritance child with
   columns, options or parents of its own).

Held (regression tests below): FULL and RIGHT joins and nested join trees around the pin;
correlated subqueries through an intermediate set operation or VALUES list; pins through
``pg_index.indexrelid`` of a secret index; ``obj_description``/``pg_get_constraintdef`` given
another catalog's column (``tgconstrrelid``, ``indrelid``, ``conrelid`` by ``confrelid``); a
``pg_class`` name pin whose schema is an OID or a ``regnamespace``; a parent described through
its granted child; whole-row forms (``ROW(d.*)``, ``jsonb_agg(d)``, ``ARRAY[...]``, ``(d).*``,
``adbin(d)``, ``d::text``). ``information_schema._pg_foreign_tables`` and its siblings
(``ftoptions``, ``attfdwoptions``, ``fdwoptions``, ``srvoptions``, ``umoptions``) are allowed
by the policy (every information_schema view not in ``DENIED_INFORMATION_SCHEMA``) but not
granted to PUBLIC by PostgreSQL 15: the upstream login gets 42501, so they are not listed.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows

pytestmark = pytest.mark.timeout(180)

AGENT = "r15-bot"
SCOPES = "read:public.r15_orders write:public.r15_orders read:public.r15_parent read:public.r15_kid"

R = {  # outside the grant: must never come back through the proxy
    "default": "r15-default-9a01",
    "check": "r15-check-9a02",
    "comment": "r15-comment-9a03",
    "indpred": "r15-indpred-9a04",
    "ftopt": "r15-ftopt-9a05",
    "colopt": "r15-colopt-9a06",
    "fdwopt": "r15-fdwopt-9a07",
    "srvopt": "r15-srvopt-9a08",
    "umopt": "r15-umopt-9a09",
    "childdefault": "r15-childdefault-9a0a",
    "childcomment": "r15-childcomment-9a0b",
    "trgcomment": "r15-trgcomment-9a0c",
    "tgargs": "r15-tgargs-9a0d",
    "sparentcomment": "r15-sparentcomment-9a0e",
    "sparentcheck": "r15-sparentcheck-9a0f",
    "ftchild": "r15-ftchild-9a10",
}
SECRETS = list(R.values())

SETUP = f"""
CREATE FOREIGN DATA WRAPPER r15_fdw OPTIONS (fdwopt '{R["fdwopt"]}');
CREATE SERVER r15_srv FOREIGN DATA WRAPPER r15_fdw OPTIONS (srvopt '{R["srvopt"]}');
GRANT USAGE ON FOREIGN SERVER r15_srv TO pgwitness;
CREATE USER MAPPING FOR pgwitness SERVER r15_srv OPTIONS (password '{R["umopt"]}');
SET ROLE pgwitness;
CREATE TABLE public.r15_orders (id int PRIMARY KEY, note text DEFAULT 'r15-ok-default');
CREATE TABLE public.r15_parent (id int, note text DEFAULT 'r15-ok-parentdefault');
CREATE TABLE secret.r15_vault (k int PRIMARY KEY, s text DEFAULT '{R["default"]}'
    CONSTRAINT r15_vault_chk CHECK (s <> '{R["check"]}'),
    order_id int REFERENCES public.r15_orders (id));
COMMENT ON TABLE secret.r15_vault IS '{R["comment"]}';
CREATE INDEX r15_vault_pred ON secret.r15_vault (k) WHERE s <> '{R["indpred"]}';
CREATE FUNCTION secret.r15_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER r15_trg BEFORE INSERT ON secret.r15_vault
    FOR EACH ROW EXECUTE FUNCTION secret.r15_trg('{R["tgargs"]}');
COMMENT ON TRIGGER r15_trg ON secret.r15_vault IS '{R["trgcomment"]}';
CREATE FOREIGN TABLE secret.r15_ft (a int OPTIONS (colopt '{R["colopt"]}')) SERVER r15_srv
    OPTIONS (tabopt '{R["ftopt"]}');
CREATE TABLE secret.r15_child (extra text DEFAULT '{R["childdefault"]}')
    INHERITS (public.r15_parent);
COMMENT ON TABLE secret.r15_child IS '{R["childcomment"]}';
-- a second parent: the vault's columns, DEFAULT and CHECK are copied into the child
CREATE TABLE secret.r15_multi () INHERITS (public.r15_parent, secret.r15_vault);
-- a foreign table as a child of the granted parent
CREATE FOREIGN TABLE secret.r15_ftchild () INHERITS (public.r15_parent) SERVER r15_srv
    OPTIONS (tabopt '{R["ftchild"]}');
-- a granted child of a secret parent (a grant naming one partition or child, say)
CREATE TABLE secret.r15_sparent (id int, note text,
    CONSTRAINT r15_sparent_chk CHECK (note <> '{R["sparentcheck"]}') NO INHERIT);
COMMENT ON TABLE secret.r15_sparent IS '{R["sparentcomment"]}';
CREATE TABLE public.r15_kid () INHERITS (secret.r15_sparent);
RESET ROLE;
"""
TEARDOWN = """
DROP FOREIGN TABLE IF EXISTS secret.r15_ftchild;
DROP TABLE IF EXISTS public.r15_kid, secret.r15_sparent, secret.r15_multi;
DROP TABLE IF EXISTS secret.r15_child, public.r15_parent, secret.r15_vault, public.r15_orders;
DROP FOREIGN TABLE IF EXISTS secret.r15_ft;
DROP FUNCTION IF EXISTS secret.r15_trg();
DROP SERVER IF EXISTS r15_srv CASCADE;
DROP FOREIGN DATA WRAPPER IF EXISTS r15_fdw CASCADE;
"""
OID_QUERY = """
SELECT 'G=' || 'public.r15_orders'::regclass::oid
UNION ALL SELECT 'GP=' || 'public.r15_parent'::regclass::oid
UNION ALL SELECT 'S=' || 'secret.r15_vault'::regclass::oid
UNION ALL SELECT 'GK=' || 'public.r15_kid'::regclass::oid
UNION ALL SELECT 'S_IDX=' || 'secret.r15_vault_pred'::regclass::oid
UNION ALL SELECT 'S_NS=' || 'secret'::regnamespace::oid;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r15pins", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OID_QUERY)
        yield handle




def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def leak(sql: str, key: str, reason: str):
    """A probe that leaked when this round was run, closed the same session (session 16:
    strict pin resolution refuses renamed catalogs and names another FROM item may have;
    only a partitioned table's partitions are described through it): a regression test
    now, ``reason`` saying what the hole was."""
    return pytest.param(sql, key, id=None)


AD = "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d"

PROBES = [
    # --- leak 2: children of a granted parent by plain inheritance ------------------------
    leak(
        f"{AD} JOIN pg_catalog.pg_inherits i ON i.inhrelid = d.adrelid WHERE i.inhparent = <<GP>>",
        "childdefault",
        "an INHERITS child of a granted parent is described through it (metadata._Pins."
        "oid_pins, the pg_inherits rule): the child's own column's default comes back, "
        "though reading the parent never reads that column",
    ),
    leak(
        "SELECT obj_description(i.inhrelid, 'pg_class') FROM pg_catalog.pg_inherits i "
        "WHERE i.inhparent = <<GP>>",
        "childcomment",
        "the comment of an INHERITS child of a granted parent comes back through the "
        "pg_inherits rule (a relation the grant names nowhere)",
    ),
    leak(
        "SELECT pg_get_constraintdef(con.oid) FROM pg_catalog.pg_constraint con "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = con.conrelid "
        "WHERE i.inhparent = <<GP>> AND con.contype = 'c'",
        "check",
        "a table inheriting from the granted parent and from secret.r15_vault holds copies "
        "of the vault's CHECK (and DEFAULT): the secret table's literal comes back as the "
        "child's, described through the granted parent (the pg_inherits rule)",
    ),
    leak(
        "SELECT f.ftoptions::text FROM pg_catalog.pg_foreign_table f "
        "JOIN pg_catalog.pg_inherits i ON i.inhrelid = f.ftrelid WHERE i.inhparent = <<GP>>",
        "ftchild",
        "a foreign table inheriting from the granted parent: its ftoptions (a remote "
        "table's name, a file's path) come back through the pg_inherits rule",
    ),
    # --- leak 1: pg_inherits with its columns renamed by an alias list --------------------
    leak(
        "SELECT obj_description(inhrelid, 'pg_class') "
        "FROM pg_catalog.pg_inherits i(inhparent, inhrelid) WHERE inhparent = <<GK>>",
        "sparentcomment",
        "an alias column list swaps pg_inherits' names (i(inhparent, inhrelid): the first "
        "column, the child, is called inhparent); an unqualified column of a renamed "
        "catalog is taken for the catalog's own column of that name (metadata._Walk._resolve "
        "accepts a renamed occurrence for any single name, _node does not refuse it), so "
        "the policy sees the granted r15_kid as the parent and describes the secret "
        "parent through it; a renamed catalog with no text columns adds no unpinned use",
    ),
    leak(
        "SELECT pg_get_constraintdef(con.oid) FROM pg_catalog.pg_constraint con, "
        "pg_catalog.pg_inherits i(inhparent, inhrelid) WHERE con.conrelid = inhrelid "
        "AND inhparent = <<GK>> AND con.contype = 'c'",
        "sparentcheck",
        "the same swap reaching the secret parent's own (NO INHERIT) CHECK",
    ),
    leak(
        "SELECT (SELECT obj_description(inhrelid, 'pg_class') FROM pg_catalog.pg_inherits i(x) "
        "WHERE inhparent = <<GP>> LIMIT 1) FROM (VALUES (<<S>>::oid)) o(inhrelid)",
        "comment",
        "an alias list that renames pg_inherits.inhrelid away (i(x)): PostgreSQL resolves the "
        "unqualified inhrelid outwards, to the VALUES list's column (the secret OID), the "
        "policy to the renamed catalog's own (metadata._Walk._resolve: a renamed occurrence "
        "matches any single name), pinned through inhparent to the granted parent; needs "
        "only some child of a granted table (a partition) to exist",
    ),
    leak(
        "SELECT obj_description(inhrelid, 'pg_class') FROM pg_catalog.pg_inherits i(x), "
        "(VALUES (<<S>>::oid)) v(inhrelid) WHERE inhparent = <<GP>> LIMIT 1",
        "comment",
        "the same at one level: the renamed catalog is taken for the name before the VALUES "
        "list beside it (_resolve returns a level's catalogs before looking at its other "
        "items), PostgreSQL finds it in the VALUES list only",
    ),
    leak(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d, "
        "pg_catalog.pg_inherits i(x) WHERE d.adrelid = inhrelid AND inhparent = <<GP>> "
        "LIMIT 1) FROM (VALUES (<<S>>::oid)) o(inhrelid)",
        "default",
        "the same outward resolution pinning pg_attrdef: the secret table's default",
    ),
    pytest.param(
        "SELECT obj_description(i.inhrelid, 'pg_class') "
        "FROM pg_catalog.pg_inherits i(inhparent, inhrelid) WHERE i.inhparent = <<GK>>",
        "sparentcomment",
    ),
    pytest.param(
        f"{AD} LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = d.adrelid "
        "AND i.inhparent = <<GP>>",
        "default",
    ),
    pytest.param(  # a parent through its granted child: not described so
        "SELECT pg_get_constraintdef(con.oid) FROM pg_catalog.pg_constraint con, "
        "pg_catalog.pg_inherits i WHERE i.inhparent = con.conrelid AND i.inhrelid = <<GK>>",
        "sparentcheck",
    ),
    # --- held: the null-extension rule: FULL and RIGHT joins, nested join trees -----------
    pytest.param(
        f"{AD} FULL JOIN pg_catalog.pg_class c ON c.oid = d.adrelid AND c.oid = <<G>> "
        "WHERE d.adrelid = <<S>>",
        "default",
    ),
    pytest.param(
        f"{AD} FULL JOIN pg_catalog.pg_class c ON c.oid = d.adrelid AND c.oid = <<G>>",
        "default",
    ),
    pytest.param(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_class c RIGHT JOIN "
        "pg_catalog.pg_attrdef d ON c.oid = d.adrelid AND c.oid = <<G>>",
        "default",
    ),
    pytest.param(
        f"{AD} LEFT JOIN (pg_catalog.pg_class c JOIN pg_catalog.pg_class c2 "
        "ON c2.oid = c.oid AND c2.oid = <<G>>) ON d.adrelid = c.oid",
        "default",
    ),
    pytest.param(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_class x LEFT JOIN "
        "(pg_catalog.pg_attrdef d LEFT JOIN pg_catalog.pg_class c2 ON c2.oid = <<G>>) "
        "ON c2.oid = x.oid WHERE x.oid = <<G>>",
        "default",
    ),
    pytest.param(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM (pg_catalog.pg_attrdef d LEFT JOIN "
        "pg_catalog.pg_class c ON c.oid = <<G>>) RIGHT JOIN pg_catalog.pg_class c2 "
        "ON c2.oid = c.oid",
        "default",
    ),
    # --- held: correlated across levels, an intermediate set operation or VALUES ----------
    pytest.param(
        "SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d "
        "WHERE d.adrelid = a.attrelid UNION ALL SELECT NULL LIMIT 1) "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = <<S>> AND a.attnum = 2",
        "default",
    ),
    pytest.param(
        "SELECT (SELECT (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d "
        "WHERE d.adrelid = attrelid LIMIT 1) FROM (VALUES (<<S>>::oid)) v(attrelid) "
        "UNION ALL SELECT NULL LIMIT 1) FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = <<G>> AND a.attnum = 1",
        "default",
    ),
    pytest.param(
        "SELECT (SELECT x FROM (VALUES ((SELECT pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid LIMIT 1))) v(x)) "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = <<S>> AND a.attnum = 1",
        "default",
    ),
    # --- held: pg_index.indexrelid, deparsers given another catalog's column --------------
    pytest.param(
        "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_catalog.pg_index i "
        "WHERE i.indexrelid = <<S_IDX>>",
        "indpred",
    ),
    pytest.param(
        "SELECT obj_description(i.indrelid, 'pg_class') FROM pg_catalog.pg_index i "
        "WHERE i.indexrelid = <<S_IDX>>",
        "comment",
    ),
    pytest.param(
        "SELECT obj_description(t.tgconstrrelid, 'pg_class') FROM pg_catalog.pg_trigger t "
        "WHERE t.tgrelid = <<G>>",
        "comment",
    ),
    pytest.param(
        "SELECT obj_description(con.conrelid, 'pg_class') FROM pg_catalog.pg_constraint con "
        "WHERE con.confrelid = <<G>> AND con.contype = 'f'",
        "comment",
    ),
    # --- held: pg_class name pins whose schema is an OID ----------------------------------
    pytest.param(
        f"{AD} JOIN pg_catalog.pg_class c ON c.oid = d.adrelid JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relname = 'r15_vault' AND n.oid = <<S_NS>>",
        "default",
    ),
    pytest.param(
        f"{AD} JOIN pg_catalog.pg_class c ON c.oid = d.adrelid "
        "WHERE c.relname = 'r15_vault' AND c.relnamespace = 'secret'::regnamespace",
        "default",
    ),
    # --- held: whole-row expansions of a pinned row (regression: pinned to the secret) ----
    pytest.param(
        "SELECT ROW(d.*)::text FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<S>>", "default"
    ),  # fmt: skip
    pytest.param(
        "SELECT jsonb_agg(d)::text FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<S>>", "default"
    ),  # fmt: skip
    pytest.param(
        "SELECT ARRAY[pg_get_expr(d.adbin, d.adrelid)]::text FROM pg_catalog.pg_attrdef d "
        "WHERE d.adrelid = <<S>>",
        "default",
    ),  # fmt: skip
    pytest.param(
        "SELECT (d).* FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<S>>", "default"
    ),  # fmt: skip
    pytest.param("SELECT adbin(d)::text FROM pg_catalog.pg_attrdef d", "default"),
    pytest.param(
        "SELECT d::text FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<G>> OR d.adrelid = <<S>>",
        "default",
    ),  # fmt: skip
]


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, R.__getitem__)
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key"), PROBES, ids=planted.ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key):
    bad = planted.leaks(px, sql, leaked)
    assert not bad, ("LEAK", sql, bad)
