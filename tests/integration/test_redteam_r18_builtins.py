"""Red-team round 18: the function allowlists (policy/classify/catalogue.py), audited for
the family of ``lastval()``: a built-in a grant may call without an execute scope that names
nothing the policy decides on, yet returns data of objects the grant does not name.

Grant: ``read:public.r18_orders write:public.r18_orders`` (a second grant adds
``execute:secret.r18_fn``). Planted outside it, in schema ``secret``: a table's rows,
default, CHECK, comment, partial index predicate, trigger argument and extended statistics
expression; a function's argument default and comment; a domain's CHECK; a view's literal;
a partitioned table's key expression and a partition's bound; a sequence's value; a
database comment; a table of known size (its sizes are the markers of the size probes:
a row-count side channel, lower severity than a value); and, after the proxy loaded its
catalog, a function with an argument default and a domain with a DEFAULT (made by another
session, as a DBA would).

Each probe is first run directly as the upstream login (the server shows its marker), then
through the proxy by a raw client over the simple protocol, the extended one and a named
prepared statement: no byte received may hold a marker. Leaks are ``xfail(strict=True)``
with the reason saying what leaked; the others are held. ``REFUSED``: probes with no marker
to look for (counts, oracles comparing a secret text in WHERE): every mode must be refused.

Leaks (all three protocols):

* sizes of any relation: ``pg_relation_size`` / ``pg_table_size`` / ``pg_total_relation_size``
  / ``pg_indexes_size`` (allowlisted) given a name as text, an OID, a digit string or a
  pg_class row's oid: the relation is never decided on (a '...'::regclass cast is). And
  ``pg_class.reltuples`` gives the exact row count (an allowed catalog; ``pg_stat_get_*``
  are refused). Side channels, not values.
  By name (``pg_relation_size('secret.t')``) closed the same session, found again by the
  privilege model (PostgreSQL asks USAGE on the schema of an object named in text:
  ``pgparse._NAME_ARGUMENTS``); by OID kept as strict xfails: accepted side channels, as documented (docs/policy.md: sizes and
  counts of every relation are catalog metadata psql and ORMs read, ``pg_class.relpages``
  and ``reltuples``, ``pg_stat_user_tables``; refusing the functions alone would close
  nothing).
* a value, for up to 300 s: a function argument default or a domain DEFAULT made by another
  session after the proxy loaded its catalog (``pg_get_function_arguments``,
  ``pg_get_function_arg_default``, ``pg_type.typdefault``, ``pg_get_expr(typdefaultbin)``):
  those reads were allowed while every such object in the (stale) snapshot was the grant's.
  Closed the same session (regression tests, ``closed``): such a decision is made only on
  a snapshot loaded after the statement arrived (the proxy parks the statement and reloads:
  ``StatementPolicy._describe_refusal``, ``CATALOG_WAIT``).

Held: sequence values (nextval by OID, pg_sequence_last_value, lastval in every spelling and
FROM position), function defaults and comments known to the snapshot, comments (obj/col/
shobj_description), every deparser (constraint, domain CHECK, trigger, index, statistics,
partition key and bound, view and rule), whole rows through row_to_json / to_jsonb /
json_agg / jsonb_populate_record, oracles in WHERE / ORDER BY, pg_stat_get_*,
pg_sequence_parameters, pg_relation_filepath, txid_status, pg_xact_status.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import fill, shows
from tests.support.proxies import issue as grant_issue

pytestmark = pytest.mark.timeout(180)

AGENT = "r18-bot"
SCOPES = "read:public.r18_orders write:public.r18_orders"
# a grant that may call the one secret function with a default (its own defaults are its to see)
SCOPES_FN = SCOPES + " execute:secret.r18_fn"

R = {  # outside the grant: must never come back through the proxy
    "row": "r18-row-5e01",
    "default": "r18-default-5e02",
    "check": "r18-check-5e03",
    "comment": "r18-comment-5e04",
    "idxpred": "r18-idxpred-5e05",
    "tgarg": "r18-tgarg-5e06",
    "stx": "r18-stx-5e07",
    "fndefault": "r18-fndefault-5e08",
    "fncomment": "r18-fncomment-5e09",
    "domcheck": "r18-domcheck-5e0a",
    "viewlit": "r18-viewlit-5e0b",
    "partkey": "r18-partkey-5e0c",
    "partbound": "r18-partbound-5e0d",
    "seq": "81818000",  # the secret sequence's values: 8181800000, 8181800001, ...
    "dbcomment": "r18-dbcomment-5e0e",
    "latedefault": "r18-latedefault-5e0f",
    "latedomain": "r18-latedomain-5e10",
    "rows": "4321",  # secret.r18_big's row count (pg_class.reltuples after ANALYZE)
}
# markers every probe is checked for (the sizes and the count only by their own probes)
ALWAYS = [v for k, v in R.items() if k != "rows"]

SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE public.r18_orders (id bigint, note text);
INSERT INTO public.r18_orders VALUES (1, 'r18-ok');
CREATE TABLE secret.r18_vault (k int, s text DEFAULT '{R["default"]}'
    CONSTRAINT r18_ck CHECK (s <> '{R["check"]}'));
COMMENT ON TABLE secret.r18_vault IS '{R["comment"]}';
INSERT INTO secret.r18_vault VALUES (1, '{R["row"]}');
CREATE INDEX r18_vault_pred ON secret.r18_vault (k) WHERE s <> '{R["idxpred"]}';
CREATE STATISTICS secret.r18_stx ON (s || '{R["stx"]}'), k FROM secret.r18_vault;
CREATE FUNCTION secret.r18_trgfn() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER r18_trg BEFORE INSERT ON secret.r18_vault
    FOR EACH ROW EXECUTE FUNCTION secret.r18_trgfn('{R["tgarg"]}');
CREATE FUNCTION secret.r18_fn(a text DEFAULT '{R["fndefault"]}') RETURNS text
    LANGUAGE sql AS $$SELECT a$$;
COMMENT ON FUNCTION secret.r18_fn(text) IS '{R["fncomment"]}';
CREATE DOMAIN secret.r18_dom AS text CONSTRAINT r18_dom_ck CHECK (VALUE <> '{R["domcheck"]}');
CREATE VIEW secret.r18_view AS SELECT k FROM secret.r18_vault WHERE s = '{R["viewlit"]}';
CREATE TABLE secret.r18_root (k text) PARTITION BY LIST ((k || '{R["partkey"]}'));
CREATE TABLE secret.r18_part PARTITION OF secret.r18_root FOR VALUES IN ('{R["partbound"]}');
CREATE SEQUENCE secret.r18_seq START 8181800000;
SELECT nextval('secret.r18_seq');
-- a table of a known size (no autovacuum: its forks do not change under the probes)
CREATE TABLE secret.r18_big (n int, s text) WITH (autovacuum_enabled = off);
INSERT INTO secret.r18_big SELECT g, repeat('y', 300) FROM generate_series(1, 4321) g;
CREATE INDEX r18_big_n ON secret.r18_big (n);
ANALYZE secret.r18_big;
COMMENT ON DATABASE app IS '{R["dbcomment"]}';
RESET ROLE;
"""
TEARDOWN = """
COMMENT ON DATABASE app IS NULL;
DROP TABLE IF EXISTS public.r18_orders, secret.r18_vault, secret.r18_root, secret.r18_big CASCADE;
DROP VIEW IF EXISTS secret.r18_view;
DROP FUNCTION IF EXISTS secret.r18_trgfn(), secret.r18_fn(text), secret.r18_late(text);
DROP DOMAIN IF EXISTS secret.r18_dom, secret.r18_ldom;
DROP SEQUENCE IF EXISTS secret.r18_seq;
"""
# made by another session once the proxy has loaded its catalog
LATE = f"""
SET ROLE pgwitness;
CREATE FUNCTION secret.r18_late(a text DEFAULT '{R["latedefault"]}') RETURNS text
    LANGUAGE sql AS $$SELECT a$$;
CREATE DOMAIN secret.r18_ldom AS text DEFAULT '{R["latedomain"]}';
RESET ROLE;
"""
OID_QUERY = """
SELECT 'S=' || 'secret.r18_vault'::regclass::oid
UNION ALL SELECT 'SB=' || 'secret.r18_big'::regclass::oid
UNION ALL SELECT 'SV=' || 'secret.r18_view'::regclass::oid
UNION ALL SELECT 'SR=' || 'secret.r18_root'::regclass::oid
UNION ALL SELECT 'SP=' || 'secret.r18_part'::regclass::oid
UNION ALL SELECT 'IX=' || 'secret.r18_vault_pred'::regclass::oid
UNION ALL SELECT 'SEQ=' || 'secret.r18_seq'::regclass::oid
UNION ALL SELECT 'SF=' || 'secret.r18_fn(text)'::regprocedure::oid
UNION ALL SELECT 'SD=' || 'secret.r18_dom'::regtype::oid
UNION ALL SELECT 'DB=' || oid FROM pg_database WHERE datname = 'app'
UNION ALL SELECT 'CK=' || oid FROM pg_constraint WHERE conname = 'r18_ck'
UNION ALL SELECT 'TG=' || oid FROM pg_trigger WHERE tgname = 'r18_trg'
UNION ALL SELECT 'STX=' || oid FROM pg_statistic_ext WHERE stxname = 'r18_stx'
UNION ALL SELECT 'SZREL=' || pg_relation_size('secret.r18_big')
UNION ALL SELECT 'SZTAB=' || pg_table_size('secret.r18_big')
UNION ALL SELECT 'SZTOT=' || pg_total_relation_size('secret.r18_big')
UNION ALL SELECT 'SZIDX=' || pg_indexes_size('secret.r18_big');
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r18builtins", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OID_QUERY)
        handle.fn_token = grant_issue(handle, agent=AGENT, task="R18FN", scopes=SCOPES_FN)[1]
        # the proxy has loaded its catalog (a session ran); then another session plants
        assert not planted.simple(handle, ["SELECT 1"])[0].startswith("error")
        pg.psql(LATE, db="app")
        got = pg.psql(
            "SELECT 'LF=' || 'secret.r18_late(text)'::regprocedure::oid "
            "UNION ALL SELECT 'LD=' || 'secret.r18_ldom'::regtype::oid",
            db="app",
        ).split()
        handle.oids.update(row.split("=", 1) for row in got)
        yield handle


def marker(key: str, oids: dict[str, str]) -> str:
    return R[key] if key in R else oids[key]


def leaked(text: str, key: str, oids: dict[str, str]) -> list[str]:
    return [s for s in {*ALWAYS, marker(key, oids)} if shows(text, s)]


def P(sql: str, key: str, token: str = ""):
    return pytest.param(sql, key, token)


def leak(sql: str, key: str, reason: str, token: str = ""):
    """A probe that leaks today: ``xfail(strict=True)``, ``reason`` saying what leaked."""
    return pytest.param(sql, key, token, marks=pytest.mark.xfail(strict=True, reason=reason))


def closed(sql: str, key: str, reason: str, token: str = ""):
    """A probe that leaked when found (``reason``), held since: a regression test."""
    del reason
    return pytest.param(sql, key, token)


SIZE = (
    "leak (side channel: the secret table's size, about its row count): {fn} is allowlisted "
    "(catalogue.BUILTIN_FUNCTIONS) and {how}, so the relation it measures is never decided "
    "on (only a '<name>'::regclass cast counts as a read of it)"
)
BY_NAME = (
    "its text argument (a LITERAL_NAME_FUNCTIONS entry) only marks the statement literal-dependent"
)
BY_OID = "an OID argument names nothing"
COUNT = (
    "leak (side channel: the secret table's exact row count): {what} of a relation the grant "
    "does not name, in an allowlisted catalog (decide.ALLOWED_CATALOGS), while "
    "pg_stat_get_live_tuples(oid) is refused"
)
LATE_WHY = (
    "leak (a value): {what} made by another session after the proxy loaded its catalog: "
    "catalog._unpinned_refusal allows {col} while every {kind} with one in the snapshot is "
    "the grant's, and the snapshot is refreshed only every 300 s (CatalogCache.refresh_after; "
    "docs: 'at most refresh_after old for objects other sessions create'), so the secret "
    "DEFAULT comes back until then"
)
LATE_FN = LATE_WHY.format(
    what="a secret function's argument default", col="pg_proc.proargdefaults", kind="function"
)
LATE_DOM = LATE_WHY.format(
    what="a secret domain's DEFAULT", col="pg_type.typdefault", kind="domain"
)
PROBES = [
    # A. sizes and row counts of a secret relation (side channels), by name and by OID
    closed(
        "SELECT pg_relation_size('secret.r18_big')",
        "SZREL",
        SIZE.format(fn="pg_relation_size", how=BY_NAME),
    ),
    closed(
        "SELECT pg_table_size('secret.r18_big')",
        "SZTAB",
        SIZE.format(fn="pg_table_size", how=BY_NAME),
    ),
    closed(
        "SELECT pg_total_relation_size('secret.r18_big')",
        "SZTOT",
        SIZE.format(fn="pg_total_relation_size", how=BY_NAME),
    ),
    closed(
        "SELECT pg_indexes_size('secret.r18_big')",
        "SZIDX",
        SIZE.format(fn="pg_indexes_size", how=BY_NAME),
    ),
    leak(
        "SELECT pg_relation_size(<<SB>>)", "SZREL", SIZE.format(fn="pg_relation_size", how=BY_OID)
    ),
    leak(
        "SELECT pg_total_relation_size(<<SB>>)",
        "SZTOT",
        SIZE.format(fn="pg_total_relation_size", how=BY_OID),
    ),
    leak(
        "SELECT pg_table_size('<<SB>>')",
        "SZTAB",
        SIZE.format(fn="pg_table_size", how="a digit string is an OID, naming nothing"),
    ),
    P("SELECT pg_indexes_size('secret.r18_big'::regclass)", "SZIDX"),
    leak(
        "SELECT pg_total_relation_size(c.oid) FROM pg_catalog.pg_class c "
        "WHERE c.relname = 'r18_big'",
        "SZTOT",
        SIZE.format(fn="pg_total_relation_size", how="a pg_class row's oid names nothing"),
    ),
    leak(
        "SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = <<SB>>",
        "rows",
        COUNT.format(what="pg_class.reltuples (after ANALYZE or autovacuum)"),
    ),
    # B. a secret sequence's value
    P("SELECT nextval(<<SEQ>>)", "seq"),
    P("SELECT nextval('<<SEQ>>')", "seq"),
    P("SELECT pg_sequence_last_value('secret.r18_seq')", "seq"),
    P("SELECT pg_sequence_last_value(<<SEQ>>)", "seq"),
    P(
        "SELECT pg_sequence_last_value(c.oid) FROM pg_catalog.pg_class c "
        "WHERE c.relname = 'r18_seq'",
        "seq",
    ),
    # C. a function's argument default and comment
    P("SELECT pg_get_function_arguments(<<SF>>)", "fndefault"),
    P("SELECT pg_get_function_arg_default(<<SF>>, 1)", "fndefault"),
    P(
        "SELECT pg_get_function_arguments(p.oid) FROM pg_catalog.pg_proc p "
        "WHERE p.proname = 'r18_fn'",
        "fndefault",
    ),
    P("SELECT pg_get_function_arguments('secret.r18_fn'::regproc)", "fndefault"),
    P("SELECT obj_description(<<SF>>, 'pg_proc')", "fncomment"),
    P("SELECT obj_description(<<SF>>)", "fncomment"),
    P("SELECT row_to_json(p) FROM pg_catalog.pg_proc p WHERE p.oid = <<SF>>", "fndefault"),
    # D. comments
    P("SELECT obj_description(<<S>>, 'pg_class')", "comment"),
    P("SELECT shobj_description(<<DB>>, 'pg_database')", "dbcomment"),
    P(
        "SELECT shobj_description(d.oid, 'pg_database') FROM pg_catalog.pg_database d "
        "WHERE d.datname = current_database()",
        "dbcomment",
    ),
    # E. deparsers of secret object text
    P("SELECT pg_get_constraintdef(<<CK>>)", "check"),
    P(
        "SELECT pg_get_constraintdef(c.oid, true) FROM pg_catalog.pg_constraint c "
        "WHERE c.contypid = <<SD>>",
        "domcheck",
    ),
    P("SELECT pg_get_triggerdef(<<TG>>, true)", "tgarg"),
    P("SELECT pg_get_indexdef(<<IX>>)", "idxpred"),
    P("SELECT pg_get_indexdef(<<IX>>, 0, true)", "idxpred"),
    P("SELECT pg_get_statisticsobjdef(<<STX>>)", "stx"),
    P("SELECT pg_get_statisticsobjdef_expressions(<<STX>>)", "stx"),
    P("SELECT pg_get_statisticsobjdef_columns(<<STX>>)", "stx"),
    P("SELECT pg_get_partkeydef(<<SR>>)", "partkey"),
    P("SELECT pg_get_partition_constraintdef(<<SP>>)", "partbound"),
    P(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c WHERE c.oid = <<SP>>",
        "partbound",
    ),
    P("SELECT pg_get_viewdef(<<SV>>)", "viewlit"),
    P("SELECT pg_get_viewdef('secret.r18_view')", "viewlit"),
    P(
        "SELECT pg_get_ruledef(r.oid) FROM pg_catalog.pg_rewrite r WHERE r.ev_class = <<SV>>",
        "viewlit",
    ),
    # F. whole rows through json/record functions
    P("SELECT row_to_json(v) FROM secret.r18_vault v", "row"),
    P("SELECT (SELECT to_jsonb(v) FROM secret.r18_vault v)", "row"),
    P("SELECT to_jsonb(d) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<S>>", "default"),
    P("SELECT json_agg(t) FROM pg_catalog.pg_trigger t", "tgarg"),
    P("SELECT to_json(x) FROM (SELECT * FROM pg_catalog.pg_description) x", "comment"),
    P(
        "SELECT jsonb_populate_record(NULL::pg_catalog.pg_description, to_jsonb(d)) "
        "FROM pg_catalog.pg_description d",
        "comment",
    ),
    P("SELECT row_to_json(c) FROM pg_catalog.pg_class c WHERE c.oid = <<SP>>", "partbound"),
    # G. made by another session after the proxy loaded its catalog
    P("SELECT pg_get_function_arguments(<<LF>>)", "latedefault"),
    closed("SELECT pg_get_function_arguments(<<LF>>)", "latedefault", LATE_FN, "fn"),
    closed("SELECT pg_get_function_arg_default(<<LF>>, 1)", "latedefault", LATE_FN, "fn"),
    closed(
        "SELECT pg_get_function_arguments(p.oid) FROM pg_catalog.pg_proc p "
        "WHERE p.proname = 'r18_late'",
        "latedefault",
        LATE_FN,
        "fn",
    ),
    closed("SELECT typdefault FROM pg_catalog.pg_type WHERE oid = <<LD>>", "latedomain", LATE_DOM),
    closed(
        "SELECT typdefault FROM pg_catalog.pg_type WHERE typname = 'r18_ldom'",
        "latedomain",
        LATE_DOM,
    ),
    closed(
        "SELECT pg_get_expr(t.typdefaultbin, 0) FROM pg_catalog.pg_type t WHERE t.oid = <<LD>>",
        "latedomain",
        LATE_DOM,
    ),
]


def _ids(params):
    return [f"{i:02d}-{param.values[1]}{'-fn' if param.values[2] else ''}"
            for i, param in enumerate(params)]  # fmt: skip


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, lambda key: marker(key, px.oids))
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key", "token"), PROBES, ids=_ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key, token):
    bad = planted.leaks(px, sql, lambda t: leaked(t, key, px.oids),
                        token=px.fn_token if token else None)
    assert not bad, ("LEAK", sorted(bad), sql, bad)


# Refused outright (no marker to look for: a count, a path, a sequence's parameters)
REFUSED = [
    "SELECT pg_stat_get_live_tuples(<<SB>>)",
    "SELECT pg_stat_get_tuples_inserted(<<SB>>)",
    "SELECT pg_stat_get_numscans(<<SB>>)",
    "SELECT pg_sequence_parameters(<<SEQ>>)",
    "SELECT currval(<<SEQ>>)",
    "SELECT setval('secret.r18_seq', 1)",
    "SELECT lastval()",
    'SELECT "lastval"()',
    'SELECT pg_catalog."lastval"()',
    "SELECT * FROM lastval()",
    "SELECT * FROM ROWS FROM (pg_catalog.lastval())",
    "SELECT * FROM currval('secret.r18_seq')",
    "SELECT * FROM nextval(<<SEQ>>)",
    "SELECT pg_sequence_last_value(<<SEQ>>::regclass)",
    "SELECT pg_relation_filepath('secret.r18_big')",
    "SELECT txid_status(1)",
    # oracles: a secret text compared in WHERE (a prefix LIKE reads it a character at a time)
    "SELECT count(*) FROM pg_catalog.pg_description d WHERE d.description LIKE 'r18-comment%'",
    "SELECT count(*) FROM pg_catalog.pg_attrdef d "
    "WHERE pg_get_expr(d.adbin, d.adrelid) LIKE '%r18-default%'",
    "SELECT count(*) FROM pg_catalog.pg_proc p "
    "WHERE pg_get_function_arguments(p.oid) LIKE '%r18-fndefault%'",
    "SELECT count(*) FROM pg_catalog.pg_constraint c "
    "WHERE pg_get_constraintdef(c.oid) LIKE '%r18-check%'",
    "SELECT count(*) FROM pg_catalog.pg_class c "
    "WHERE obj_description(c.oid, 'pg_class') LIKE 'r18-comment%'",
    "SELECT count(*) FROM pg_catalog.pg_shdescription WHERE description LIKE 'r18-db%'",
    "SELECT count(*) FROM pg_catalog.pg_trigger t "
    "WHERE position('r18-tgarg' in encode(t.tgargs, 'escape')) > 0",
    "SELECT count(*) FROM pg_catalog.pg_index i WHERE i.indrelid = <<S>> "
    "AND pg_get_indexdef(i.indexrelid) LIKE '%r18-idxpred%'",
    "SELECT pg_column_size(d.adbin) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = <<S>>",
    "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid IN (<<S>>, <<SB>>) "
    "ORDER BY obj_description(c.oid, 'pg_class')",
    "SELECT pg_xact_status('1'::xid8)",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused(px, sql):
    planted.assert_denied(planted.received(px, fill(sql, px.oids)), sql)
