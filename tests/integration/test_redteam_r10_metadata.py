"""Red-team round 10: data a read grant reaches without a plain read of a secret table's
rows (metadata that embeds values, foreign-key actions' error DETAILs, inheritance,
statistics, sequences, large objects, SQL given as text, other sessions' statement text),
the server as the judge.

Grant: ``read:public.orders,public.customers,public.r10_parent write:public.orders,public.r10_parent``. The schema owner
(``pgwitness``, the proxy's upstream login) has planted, in schema ``secret``, one distinct
marker per place a probe could find it: a view's WHERE, a materialized view's, a function
body, a column default and a fast default (``attmissingval``), CHECK constraints of a table
and a domain, a domain DEFAULT, comments, an RLS policy expression, a rule's WHERE, trigger
arguments, a partial index's predicate, a publication's row filter, rows of tables whose
foreign keys point at ``public.orders`` (ON DELETE SET NULL / ON UPDATE CASCADE), a child
table of ``public.r10_parent`` (INHERITS), column statistics (ANALYZE), a sequence's value, a
large object, and (during one test) another session's running statement. Each probe is
sent over the simple protocol (a raw client: every byte the proxy sends is looked at,
error DETAILs included) and the extended protocol (asyncpg, unnamed and a named prepared
statement); the marker must not be in anything the client received, as text, as the hex
of a bytea, or as the byte list of a node tree (``:constvalue 18 [ 72 0 0 0 114 49 ...]``).

Probes that hold are regression tests. Probes that leak are kept as
``xfail(strict=True, reason="LEAK: ...")``: the suite stays green and the hole is recorded;
the day one is fixed its xfail turns into a failure to be removed. Three leak families:

* metadata: the driver catalogs and deparsers the policy allows by default
  (``policy/decide.py`` ``ALLOWED_CATALOGS``, ``information_schema``,
  ``policy/classify/catalogue.py`` ``BUILTIN_PREFIXES``/``BUILTIN_FUNCTIONS``: ``pg_get_*``,
  ``obj_description``, ``col_description``) show the text of objects outside the grant;
* foreign-key actions: DELETE/UPDATE of ``public.orders`` runs the referencing secret
  table's ON DELETE/UPDATE action, whose constraint error quotes the secret row (DETAIL);
* inheritance: rows of a secret child table come back from ``public.r10_parent`` (closed in
  session 19: a relation named without ONLY needs the grant on every relation inheriting
  from it, ``policy.engine._through_inheritance``; writes that would reach the child too).

The first and the last two survive ``upstream.roles = per-grant`` (the second wall): the
catalogs are readable by PUBLIC, RI actions run as the referencing table's owner, and a
parent's privilege covers its children (``test_per_grant_roles_do_not_stop_*``): the
policy is the wall that holds there.
"""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from tests.support import planted
from tests.support.fixtures_proxy import ProxyHandle, per_grant_overrides, proxy_config
from tests.support.planted import assert_denied, encodings
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import UPSTREAM_USER, RawClient
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

AGENT = "r10-bot"
SCOPES = ("read:public.orders,public.customers,public.r10_parent "
          "write:public.orders,public.r10_parent")
SEQ_VALUE = 734918263
LO_OID = 91010

S = {
    "rows": "r10-rows-7c1f",
    "viewdef": "r10-viewdef-5a2e",
    "mviewdef": "r10-mviewdef-5a2f",
    "prosrc": "r10-prosrc-91b0",
    "default": "r10-default-0e3c",
    "argdefault": "r10-argdefault-0e3d",
    "missing": "r10-missing-19f4",
    "check": "r10-check-6f12",
    "domdefault": "r10-domdefault-a1c3",
    "domcheck": "r10-domcheck-a1c4",
    "comment": "r10-comment-b7a0",
    "colcomment": "r10-colcomment-b7a1",
    "policy": "r10-policy-3d88",
    "rule": "r10-rule-2c61",
    "tgargs": "r10-tgargs-44d9",
    "indexpred": "r10-indexpred-8e05",
    "pubfilter": "r10-pubfilter-27aa",
    "fknull": "r10-fknull-d402",
    "fkcheck": "r10-fkcheck-d403",
    "fkuniq": "r10-fkuniq-d404",
    "inherit": "r10-inherit-6b3d",
    "seq": str(SEQ_VALUE)[:8],  # nextval would answer SEQ_VALUE + 1
    "lo": "r10-largeobject-55e1",
    "activity": "r10-activity-0c5d",
}

SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.r10_vault (k int PRIMARY KEY, secret text);
INSERT INTO secret.r10_vault VALUES (1, '{S["rows"]}'), (2, '{S["rows"]}'), (3, '{S["rows"]}'),
    (4, 'other');
ANALYZE secret.r10_vault;
CREATE VIEW secret.r10_view AS SELECT k FROM secret.r10_vault WHERE secret <> '{S["viewdef"]}';
CREATE MATERIALIZED VIEW secret.r10_mview AS
    SELECT k FROM secret.r10_vault WHERE secret <> '{S["mviewdef"]}';
CREATE FUNCTION secret.r10_fn() RETURNS text LANGUAGE sql AS $$SELECT '{S["prosrc"]}'$$;
CREATE FUNCTION secret.r10_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER r10_trg BEFORE INSERT ON secret.r10_vault
    FOR EACH ROW EXECUTE FUNCTION secret.r10_trg('{S["tgargs"]}');
CREATE TABLE secret.r10_defaults (a int, b text DEFAULT '{S["default"]}');
CREATE FUNCTION secret.r10_argdef(k text DEFAULT '{S["argdefault"]}') RETURNS int
    LANGUAGE sql AS $$SELECT 1$$;
CREATE TABLE secret.r10_checks (a text CHECK (a <> '{S["check"]}'));
COMMENT ON TABLE secret.r10_vault IS '{S["comment"]}';
COMMENT ON COLUMN secret.r10_vault.secret IS '{S["colcomment"]}';
CREATE POLICY r10_pol ON secret.r10_vault USING (secret <> '{S["policy"]}');
CREATE RULE r10_rule AS ON UPDATE TO secret.r10_vault
    WHERE NEW.secret = '{S["rule"]}' DO INSTEAD NOTHING;
CREATE INDEX r10_idx ON secret.r10_vault (k) WHERE secret <> '{S["indexpred"]}';
ALTER TABLE secret.r10_vault ADD COLUMN extra text DEFAULT '{S["missing"]}';
CREATE DOMAIN secret.r10_dom AS text DEFAULT '{S["domdefault"]}'
    CHECK (VALUE <> '{S["domcheck"]}');
CREATE PUBLICATION r10_pub FOR TABLE secret.r10_vault WHERE (secret <> '{S["pubfilter"]}')
    WITH (publish = 'insert');
CREATE SEQUENCE secret.r10_seq;
SELECT setval('secret.r10_seq', {SEQ_VALUE});
SELECT lo_from_bytea({LO_OID}, '{S["lo"]}'::bytea);
CREATE TABLE public.r10_parent (id int, note text);
INSERT INTO public.r10_parent VALUES (1, 'gift');
CREATE TABLE secret.r10_child () INHERITS (public.r10_parent);
INSERT INTO secret.r10_child (id, note) VALUES (9200, '{S["inherit"]}');
INSERT INTO public.orders (id, customer_id, total, note) VALUES
    (9101, 1, 1, 'r10'), (9102, 1, 1, 'r10'), (9103, 1, 1, 'r10');
CREATE TABLE secret.r10_fk_null (
    order_id int NOT NULL REFERENCES public.orders (id) ON DELETE SET NULL, secret text);
INSERT INTO secret.r10_fk_null VALUES (9101, '{S["fknull"]}');
CREATE TABLE secret.r10_fk_check (
    order_id int REFERENCES public.orders (id) ON UPDATE CASCADE, secret text,
    CHECK (order_id <> 9999));
INSERT INTO secret.r10_fk_check VALUES (9102, '{S["fkcheck"]}');
CREATE TABLE secret.r10_fk_uniq (
    order_id int REFERENCES public.orders (id) ON DELETE SET NULL, secret text,
    UNIQUE NULLS NOT DISTINCT (order_id, secret));
INSERT INTO secret.r10_fk_uniq VALUES (9103, '{S["fkuniq"]}'), (NULL, '{S["fkuniq"]}');
RESET ROLE;
"""
TEARDOWN = f"""
DROP TABLE IF EXISTS secret.r10_fk_null, secret.r10_fk_check, secret.r10_fk_uniq,
    secret.r10_child, public.r10_parent;
DELETE FROM public.orders WHERE id IN (9101, 9102, 9103, 9999);
DROP PUBLICATION IF EXISTS r10_pub;
DROP MATERIALIZED VIEW IF EXISTS secret.r10_mview;
DROP VIEW IF EXISTS secret.r10_view;
DROP TABLE IF EXISTS secret.r10_vault, secret.r10_defaults, secret.r10_checks;
DROP FUNCTION IF EXISTS secret.r10_fn(), secret.r10_trg(), secret.r10_argdef(text);
DROP DOMAIN IF EXISTS secret.r10_dom;
DROP SEQUENCE IF EXISTS secret.r10_seq;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = {LO_OID};
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r10meta", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        rows = on_pg(pg, "SELECT relname || '=' || oid FROM pg_class "
                         "WHERE relname LIKE 'r10\\_%' AND relnamespace = 'secret'::regnamespace")  # fmt: skip
        handle.oids = dict(row.split("=") for row in rows.split())
        yield handle


def on_pg(pg, sql: str) -> str:
    return pg.psql(sql, db="app").strip()


# --- what the client received -------------------------------------------------------------


def simple(handle, sql: str, token: str | None = None) -> str:
    """Every byte the proxy sent for one simple Query (rows, errors with DETAIL, notices)."""
    with RawClient.session(handle.host, handle.port, handle.agent, token or handle.token) as c:
        frames = c.query(sql)
    return b"".join(frames).decode("utf-8", "replace")


def received(handle, sql: str, token: str | None = None) -> dict[str, str]:
    """What each protocol gave back for ``sql``: simple, extended (unnamed), prepared."""
    out = {"simple": simple(handle, sql, token)}
    for mode in ("extended", "prepared"):
        out[mode] = asyncio.run(planted.attempt(handle, sql, mode, token))
    return out


def assert_no_leak(got: dict[str, str], secret: str, sql: str) -> None:
    """Every protocol is looked at before failing: the failure names each one that leaked."""
    leaked = {mode: text[-600:] for mode, text in got.items()
              if any(form in text for form in encodings(secret))}  # fmt: skip
    assert not leaked, ("LEAK", sql, leaked)


def probe(handle, sql: str, secret: str, *, denied: bool = False) -> dict[str, str]:
    got = received(handle, sql)
    assert_no_leak(got, secret, sql)
    if denied:
        assert_denied(got, sql)
    return got


# --- the server's own judgement: every marker is where its probes look ----------------------

AS_OWNER = "SET ROLE pgwitness;\n"


def test_the_planted_secrets_are_where_the_probes_look(px, pg):
    """Run as the proxy's upstream login directly: each probe below could fail."""
    checks = {
        "rows": "SELECT most_common_vals::text FROM pg_stats "
                "WHERE tablename = 'r10_vault' AND attname = 'secret'",
        "viewdef": "SELECT definition FROM pg_views WHERE viewname = 'r10_view'",
        "prosrc": "SELECT prosrc FROM pg_proc WHERE proname = 'r10_fn'",
        "missing": "SELECT attmissingval::text FROM pg_attribute WHERE atthasmissing "
                   "AND attrelid = 'secret.r10_vault'::regclass",
        "seq": "SELECT last_value FROM secret.r10_seq",
        "lo": f"SELECT convert_from(lo_get({LO_OID}), 'UTF8')",
        "inherit": "SELECT note FROM public.r10_parent WHERE id = 9200",
        "pubfilter": "SELECT pg_get_expr(prqual, prrelid) FROM pg_publication_rel",
    }  # fmt: skip
    for key, sql in checks.items():
        assert S[key] in on_pg(pg, AS_OWNER + sql), (key, sql)


# ==========================================================================================
# 1. Metadata that embeds values: LEAKS (allowed catalogs and deparsers)
# ==========================================================================================

def held(sql: str, key: str):
    """A probe the policy now refuses (function bodies, view and rule definitions:
    policy.classify.pgparse.SENSITIVE_COLUMNS and catalogue.DEFINITION_FUNCTIONS)."""
    return pytest.param(sql, key, True, id=f"{key}:{sql[:60]}")


METADATA_LEAKS = [
    # views
    held("SELECT definition FROM pg_views WHERE viewname = 'r10_view'", "viewdef"),
    held("SELECT pg_get_viewdef({r10_view})", "viewdef"),
    held("SELECT pg_get_viewdef('secret.r10_view')", "viewdef"),
    held("SELECT pg_get_viewdef(c.oid, true) FROM pg_class c WHERE c.relname = 'r10_view'", "viewdef"),
    held("SELECT view_definition FROM information_schema.views WHERE table_name = 'r10_view'", "viewdef"),
    held("SELECT ev_action FROM pg_rewrite WHERE ev_class = {r10_view}", "viewdef"),
    held("SELECT definition FROM pg_matviews WHERE matviewname = 'r10_mview'", "mviewdef"),
    held("SELECT definition FROM pg_rules WHERE rulename = 'r10_rule'", "rule"),
    held("SELECT pg_get_ruledef(oid) FROM pg_rewrite WHERE rulename = 'r10_rule'", "rule"),
    # function bodies
    held("SELECT prosrc FROM pg_proc WHERE proname = 'r10_fn'", "prosrc"),
    held("COPY pg_catalog.pg_proc TO STDOUT", "prosrc"),  # every column, no star in sight
    held("SELECT to_jsonb(p) FROM pg_proc p WHERE p.proname = 'r10_fn'", "prosrc"),
    held("SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname = 'r10_fn'", "prosrc"),
    held("SELECT routine_definition FROM information_schema.routines "
         "WHERE routine_name = 'r10_fn'", "prosrc"),
    # defaults
    held("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = {r10_defaults}", "default"),
    held("SELECT adbin FROM pg_attrdef WHERE adrelid = {r10_defaults}", "default"),
    held("SELECT column_default FROM information_schema.columns "
         "WHERE table_name = 'r10_defaults'", "default"),
    held("SELECT attmissingval::text FROM pg_attribute WHERE attrelid = {r10_vault} "
         "AND atthasmissing", "missing"),
    held("SELECT pg_get_function_arguments(oid) FROM pg_proc WHERE proname = 'r10_argdef'", "argdefault"),
    held("SELECT proargdefaults FROM pg_proc WHERE proname = 'r10_argdef'", "argdefault"),
    held("SELECT parameter_default FROM information_schema.parameters "
         "WHERE specific_name LIKE 'r10_argdef%'", "argdefault"),
    held("SELECT typdefault FROM pg_type WHERE typname = 'r10_dom'", "domdefault"),
    held("SELECT domain_default FROM information_schema.domains WHERE domain_name = 'r10_dom'", "domdefault"),
    # constraints
    held("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {r10_checks}", "check"),
    held("SELECT conbin FROM pg_constraint WHERE conrelid = {r10_checks}", "check"),
    held("SELECT check_clause FROM information_schema.check_constraints "
         "WHERE check_clause LIKE '%r10%'", "check"),
    held("SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_type t "
         "ON t.oid = c.contypid WHERE t.typname = 'r10_dom'", "domcheck"),
    # comments
    held("SELECT description FROM pg_description WHERE objoid = {r10_vault}", "comment"),
    held("SELECT obj_description({r10_vault}, 'pg_class')", "comment"),
    held("SELECT col_description({r10_vault}, 2)", "colcomment"),
    # row-level security, triggers, indexes, publications
    held("SELECT qual FROM pg_policies WHERE policyname = 'r10_pol'", "policy"),
    held("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'r10_pol'", "policy"),
    held("SELECT tgargs FROM pg_trigger WHERE tgname = 'r10_trg'", "tgargs"),
    held("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'r10_trg'", "tgargs"),
    held("SELECT action_statement FROM information_schema.triggers "
         "WHERE trigger_name = 'r10_trg'", "tgargs"),
    held("SELECT indexdef FROM pg_indexes WHERE indexname = 'r10_idx'", "indexpred"),
    held("SELECT pg_get_indexdef({r10_idx})", "indexpred"),
    held("SELECT pg_get_expr(prqual, prrelid) FROM pg_publication_rel", "pubfilter"),
]


@pytest.mark.parametrize(("sql", "key", "denied"), METADATA_LEAKS)
def test_metadata_of_objects_outside_the_grant(px, sql, key, denied):
    probe(px, sql.format(**px.oids), S[key], denied=denied)


def test_catalog_introspection_of_granted_tables_still_works(px):
    """psql's and drivers' catalog queries on what the grant names stay allowed."""
    for sql, expect in [
        ("SELECT relname FROM pg_class WHERE oid = 'public.orders'::regclass", "orders"),
        ("SELECT column_name FROM information_schema.columns WHERE table_name = 'orders' "
         "AND column_name = 'note'", "note"),
        ("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
         "WHERE adrelid = 'public.orders'::regclass", "nextval"),
        ("SELECT pg_get_indexdef(indexrelid) FROM pg_index "
         "WHERE indrelid = 'public.orders'::regclass", "orders_pkey"),
    ]:  # fmt: skip
        for mode, text in received(px, sql).items():
            assert expect in text and "42501" not in text, (mode, sql, text[-400:])


# ==========================================================================================
# 2. Foreign-key actions: the referencing secret row in the error DETAIL (held: the
#    relay withholds an error's DETAIL and CONTEXT when its relation is not readable,
#    proxy/redaction.py)
# ==========================================================================================

FK_PROBES = [
    pytest.param("DELETE FROM public.orders WHERE id = 9101", "fknull", "23502",
                 id="set-null-not-null"),
    pytest.param("UPDATE public.orders SET id = 9999 WHERE id = 9102", "fkcheck", "23514",
                 id="cascade-check"),
    pytest.param("DELETE FROM public.orders WHERE id = 9103", "fkuniq", "23505",
                 id="set-null-unique"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "key", "sqlstate"), FK_PROBES)
def test_foreign_key_actions_do_not_echo_the_referencing_row(px, pg, sql, key, sqlstate):
    """A write of public.orders runs the referencing secret table's ON DELETE/UPDATE
    action, and the constraint it breaks quotes the secret row in the DETAIL (and the RI
    query in the CONTEXT). Until session 29 the write ran and the relay withheld the
    message (proxy/redaction.py); now the policy refuses it first: its actions write a
    table the grant may not write (``StatementPolicy._beyond_its_objects``)."""
    try:
        got = probe(px, sql, S[key])
        for mode, text in got.items():
            assert "42501" in text and "foreign key" in text, (mode, text[-400:])
            assert sqlstate not in text, (mode, text[-400:])
            assert "RI_ConstraintTrigger" not in text and "OPERATOR(pg_catalog" not in text
    finally:  # the write failed in every mode: nothing changed
        assert on_pg(pg, "SELECT count(*) FROM public.orders WHERE id IN (9101, 9102, 9103)") == "3"


# ==========================================================================================
# 3. Inheritance: a secret child's rows through public.r10_parent (held since session 19)
# ==========================================================================================

INHERIT_READS = [
    "SELECT note FROM public.r10_parent WHERE id = 9200",
    "TABLE public.r10_parent",
    "SELECT o FROM public.r10_parent o",
    "SELECT * FROM public.r10_parent*",
    "SELECT * FROM ONLY public.r10_parent p JOIN public.r10_parent q USING (id)",
    "COPY (SELECT * FROM public.r10_parent) TO STDOUT",
    "WITH w AS (SELECT note FROM r10_parent) SELECT * FROM w",
    "SELECT (SELECT string_agg(note, ',') FROM public.r10_parent)",
    "EXPLAIN ANALYZE SELECT * FROM public.r10_parent WHERE note::int > 0",
    "UPDATE public.r10_parent SET note = note WHERE id = 9200 RETURNING note",
    "DELETE FROM public.r10_parent WHERE note::int > 0",
    "SELECT * FROM public.r10_parent FOR UPDATE",
]


@pytest.mark.parametrize("sql", INHERIT_READS)
def test_rows_of_a_secret_child_table_are_not_read_through_the_parent(px, sql):
    got = probe(px, sql, S["inherit"], denied=True)
    assert all("inherits from it" in text for text in got.values()), got


INHERIT_WRITES = [
    "UPDATE public.r10_parent SET note = 'overwritten'",
    "DELETE FROM public.r10_parent",
    "TRUNCATE public.r10_parent",
    "UPDATE public.r10_parent SET note = 'overwritten' WHERE id = 9200",
]


@pytest.mark.parametrize("sql", INHERIT_WRITES)
def test_writes_of_the_parent_do_not_reach_a_secret_child(px, pg, sql):
    """An UPDATE, DELETE or TRUNCATE of a parent without ONLY changes its children too:
    refused while one of them is outside the grant; the child's row is untouched."""
    probe(px, sql, S["inherit"], denied=True)
    assert on_pg(pg, AS_OWNER + "SELECT note FROM secret.r10_child WHERE id = 9200") == S["inherit"]
    assert on_pg(pg, "SELECT count(*) FROM public.r10_parent WHERE note = 'gift'") == "1"


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM ONLY public.r10_parent", "COPY public.r10_parent TO STDOUT",
     "COPY (SELECT * FROM ONLY public.r10_parent) TO STDOUT",
     "UPDATE ONLY public.r10_parent SET note = note WHERE id = 1 RETURNING note"],
)  # fmt: skip
def test_only_and_copy_of_the_parent_leave_the_child_out_and_work(px, sql):
    got = probe(px, sql, S["inherit"])
    assert "gift" in got["simple"], got["simple"][-400:]


# ==========================================================================================
# 4. Held: statistics, sequences, large objects, SQL given as text, plain-read shapes
# ==========================================================================================

STATS = [
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'r10_vault'",
    "SELECT * FROM pg_catalog.pg_stats",
    'SELECT * FROM "pg_catalog"."pg_stats"',
    "SELECT * FROM PG_CATALOG.PG_STATS",
    "TABLE pg_stats",
    "COPY (SELECT most_common_vals FROM pg_stats) TO STDOUT",
    "COPY pg_catalog.pg_statistic TO STDOUT",
    "SELECT stavalues1::text FROM pg_statistic",
    "SELECT * FROM pg_stats_ext",
    "SELECT * FROM pg_stats_ext_exprs",
    "SELECT s.most_common_vals::text FROM public.orders o, LATERAL "
    "(SELECT * FROM pg_stats WHERE tablename = 'r10_vault') s",
    "EXPLAIN SELECT * FROM pg_stats",
    "WITH s AS (SELECT * FROM pg_stats) SELECT most_common_vals::text FROM s",
]


@pytest.mark.parametrize("sql", STATS)
def test_column_statistics_are_not_read(px, sql):
    probe(px, sql, S["rows"], denied=True)


SEQUENCES = [
    "SELECT nextval({r10_seq})",
    "SELECT nextval({r10_seq}::regclass)",
    "SELECT nextval({r10_seq}::oid)",
    "SELECT currval({r10_seq})",
    "SELECT setval({r10_seq}, 1, true)",
    "SELECT nextval(c.oid) FROM pg_class c WHERE c.relname = 'r10_seq'",
    "SELECT nextval('secret.r10_seq')",
    "SELECT nextval('secret.r10_seq'::text)",
    "SELECT nextval(('secret.' || 'r10_seq')::regclass)",
    "SELECT pg_sequence_last_value({r10_seq})",
    "SELECT pg_catalog.pg_sequence_last_value('secret.r10_seq')",
    "SELECT last_value FROM pg_sequences WHERE sequencename = 'r10_seq'",
    "SELECT last_value FROM secret.r10_seq",
    "TABLE secret.r10_seq",
    "COPY secret.r10_seq TO STDOUT",
    "SELECT * FROM pg_sequence_parameters({r10_seq})",
    "INSERT INTO public.orders (id, note) VALUES (nextval('secret.r10_seq'), 'x') RETURNING id",
]


@pytest.mark.parametrize("sql", SEQUENCES)
def test_a_secret_sequence_is_neither_read_nor_advanced(px, pg, sql):
    probe(px, sql.format(**px.oids), S["seq"], denied=True)
    assert on_pg(pg, AS_OWNER + "SELECT last_value FROM secret.r10_seq") == str(SEQ_VALUE)


LARGE_OBJECTS = [
    f"SELECT lo_get({LO_OID})",
    f"SELECT convert_from(pg_catalog.lo_get({LO_OID}), 'UTF8')",
    f'SELECT "lo_get"({LO_OID})',
    f"SELECT loread(lo_open({LO_OID}, 262144), 100)",
    f"SELECT lo_export({LO_OID}, '/tmp/r10-lo')",
    "SELECT data FROM pg_largeobject",
    "SELECT lo_get(oid) FROM pg_largeobject_metadata",
    f"COPY (SELECT lo_get({LO_OID})) TO STDOUT",
    f"SELECT * FROM ROWS FROM (lo_get({LO_OID}))",
]


@pytest.mark.parametrize("sql", LARGE_OBJECTS)
def test_large_objects_are_not_read(px, sql):
    probe(px, sql, S["lo"], denied=True)


READ_SECRET = "SELECT secret FROM secret.r10_vault"
SQL_AS_TEXT = [
    f"SELECT query_to_xml('{READ_SECRET}', true, false, '')",
    f"SELECT query_to_xml_and_xmlschema('{READ_SECRET}', true, false, '')",
    f"SELECT pg_catalog.query_to_xml('{READ_SECRET}', true, false, '')",
    f"SELECT PG_CATALOG.\"query_to_xml\"('{READ_SECRET}', true, false, '')",
    f"SELECT * FROM ROWS FROM (query_to_xml('{READ_SECRET}', true, false, ''))",
    f"SELECT x FROM public.orders o, LATERAL query_to_xml('{READ_SECRET}', true, false, '') x",
    f"SELECT id FROM public.orders WHERE note = (SELECT query_to_xml('{READ_SECRET}', true, false, '')::text)",
    "SELECT table_to_xml('secret.r10_vault', true, false, '')",
    "SELECT table_to_xml({r10_vault}, true, false, '')",
    "SELECT schema_to_xml('secret', true, false, '')",
    "SELECT database_to_xml(true, false, '')",
    "SELECT * FROM ts_stat('SELECT to_tsvector(secret) FROM secret.r10_vault')",
    "SELECT * FROM pg_catalog.ts_stat(E'SELECT to_tsvector(secret) FROM secret.r10_vault')",
    "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, secret::tsquery FROM secret.r10_vault')",
    f"COPY (SELECT query_to_xml('{READ_SECRET}', true, false, '')) TO STDOUT",
    f"EXPLAIN ANALYZE SELECT query_to_xml('{READ_SECRET}', true, false, '')",
    f"PREPARE r10p AS SELECT query_to_xml('{READ_SECRET}', true, false, '')",
    f"DECLARE r10c CURSOR FOR SELECT query_to_xml('{READ_SECRET}', true, false, '')",
]  # fmt: skip


@pytest.mark.parametrize("sql", SQL_AS_TEXT)
def test_functions_running_sql_given_as_text_are_denied(px, sql):
    probe(px, sql.format(**px.oids), S["rows"], denied=True)


PLAIN_READ_SHAPES = [
    "TABLE secret.r10_vault",
    "TABLE ONLY secret.r10_vault",
    "TABLE secret.r10_vault *",
    "COPY secret.r10_vault (secret) TO STDOUT",
    "COPY (TABLE secret.r10_vault) TO STDOUT",
    "COPY (SELECT id FROM public.orders WHERE note IN (SELECT secret FROM secret.r10_vault)) TO STDOUT",
    "SELECT * FROM public.orders o, LATERAL (SELECT secret FROM secret.r10_vault v WHERE v.k = o.id) x",
    "SELECT * FROM ROWS FROM (jsonb_to_recordset((SELECT jsonb_agg(v) FROM secret.r10_vault v))) AS x(k int, secret text)",
    "SELECT * FROM ROWS FROM (unnest((SELECT array_agg(secret) FROM secret.r10_vault)), generate_series(1, 2))",
    "SELECT xpath('/a/text()', (SELECT xmlelement(name a, secret) FROM secret.r10_vault LIMIT 1))",
    "SELECT * FROM xmltable('/a' PASSING (SELECT xmlelement(name a, secret) FROM secret.r10_vault LIMIT 1) COLUMNS x text PATH '.')",
    "SELECT k FROM secret.r10_view",
    "SELECT * FROM secret.r10_mview",
    "EXPLAIN ANALYZE SELECT * FROM public.orders WHERE note IN (SELECT secret FROM secret.r10_vault)",
    "EXPLAIN (VERBOSE, FORMAT JSON) SELECT * FROM secret.r10_vault WHERE secret = 'x'",
    "DECLARE r10d CURSOR FOR SELECT secret FROM secret.r10_vault",
    "SELECT secret::int FROM secret.r10_vault",
    "SELECT 1 / 0 FROM secret.r10_vault WHERE secret::int = 1",
    "SELECT (SELECT v FROM secret.r10_vault v LIMIT 1)::text",
    "SELECT jsonb_populate_record(NULL::secret.r10_vault, (SELECT to_jsonb(v) FROM secret.r10_vault v LIMIT 1))",
    "INSERT INTO public.orders (note) SELECT secret FROM secret.r10_vault RETURNING note",
    "UPDATE public.orders SET note = note WHERE id = 9101 RETURNING (SELECT secret FROM secret.r10_vault LIMIT 1)",
    "WITH x AS (SELECT secret FROM secret.r10_vault) SELECT * FROM x",
]  # fmt: skip


@pytest.mark.parametrize("sql", PLAIN_READ_SHAPES)
def test_reads_of_secret_relations_in_any_shape_are_denied(px, sql):
    probe(px, sql, S["rows"], denied=True)


@pytest.mark.parametrize(
    "sql",
    ["SELECT secret.r10_fn()", "SELECT * FROM secret.r10_fn()", "SELECT * FROM ROWS FROM (secret.r10_fn())",
     "SELECT x FROM public.orders o, LATERAL secret.r10_fn() x"],
)  # fmt: skip
def test_calls_of_secret_functions_are_denied(px, sql):
    probe(px, sql, S["prosrc"], denied=True)


def test_explain_of_a_granted_table_still_works(px):
    for sql in ("EXPLAIN SELECT * FROM public.orders WHERE note = 'x'",
                "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM ONLY public.orders"):  # fmt: skip
        for mode, text in received(px, sql).items():
            assert "Seq Scan" in text and "42501" not in text, (mode, sql, text[-400:])


# ==========================================================================================
# 5. Held: other sessions' statement text (pg_stat_activity and its functions)
# ==========================================================================================

ACTIVITY = [
    "SELECT query FROM pg_stat_activity",
    "SELECT query FROM pg_catalog.pg_stat_activity WHERE state = 'active'",
    "SELECT * FROM pg_stat_get_activity(NULL)",
    "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
    "SELECT pg_stat_get_backend_activity(b) FROM generate_series(1, 200) b",
    "SELECT pg_catalog.pg_stat_get_backend_activity(1)",
    "SELECT * FROM pg_stat_progress_vacuum",
    "SELECT * FROM pg_locks",
    "SELECT * FROM pg_prepared_xacts",
    "SELECT * FROM pg_stat_database",
]


def test_other_sessions_statement_text_is_not_shown(px, pg):
    """Another session of the upstream login (production, or another grant's session under
    a mapped role) runs a statement holding a marker; PostgreSQL shows it to the same role."""
    conn = psycopg.connect(pg.dsn(UPSTREAM_USER, db="app"), autocommit=True)
    marker_sql = f"SELECT '{S['activity']}' AS marker, pg_sleep(30)"
    worker = threading.Thread(target=_run_until_cancelled, args=(conn, marker_sql), daemon=True)
    worker.start()
    try:
        with psycopg.connect(pg.dsn(UPSTREAM_USER, db="app"), autocommit=True) as looker:
            wait_for(lambda: S["activity"] in str(looker.execute(
                "SELECT query FROM pg_stat_activity WHERE state = 'active'").fetchall()),
                timeout=10, what="the marker statement to run")  # fmt: skip
        for sql in ACTIVITY:
            probe(px, sql, S["activity"])
    finally:
        conn.cancel()
        worker.join(10)
        conn.close()


def _run_until_cancelled(conn, sql: str) -> None:
    try:
        conn.execute(sql)
    except psycopg.Error:
        pass


# ==========================================================================================
# 6. The second wall: the leak families above survive upstream.roles = per-grant
# ==========================================================================================


@pytest.fixture(scope="module")
def pgx(px, pg, tmp_path_factory):
    """A proxy in front of the same planted database whose grants run as their own
    least-privilege role (``pgw_g_*``), dropped again afterwards."""
    workdir = tmp_path_factory.mktemp("r10pergrant")
    handle = ProxyHandle(proxy_config(pg, **per_grant_overrides(pg, workdir))).start()
    try:
        handle.agent = AGENT
        handle.token = grant_issue(handle, agent=AGENT, task="R10-PG", scopes=SCOPES)[1]
        yield handle
    finally:
        handle.stop()
        roles = on_pg(pg, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgw\\_g\\_%' "
                          "AND shobj_description(oid, 'pg_authid') LIKE 'pgwitness:%'")  # fmt: skip
        for role in roles.split():
            pg.psql(f"DROP OWNED BY {role}; DROP ROLE {role};\n", db="app")


def test_the_per_grant_proxy_runs_as_its_own_role(pgx):
    got = received(pgx, "SELECT current_user")
    assert all("pgw_g_" in text for text in got.values()), got


PER_GRANT_LEAKS = [
    pytest.param("SELECT prosrc FROM pg_proc WHERE proname = 'r10_fn'", "prosrc", id="prosrc"),  # refused by the policy now
    pytest.param("SELECT definition FROM pg_views WHERE viewname = 'r10_view'", "viewdef", id="pg_views"),  # refused by the policy now
    pytest.param("SELECT pg_get_viewdef({r10_view})", "viewdef", id="pg_get_viewdef-oid"),  # refused by the policy now
    pytest.param("SELECT description FROM pg_description WHERE objoid = {r10_vault}", "comment", id="comment"),  # refused by the policy now
    # RI actions run as the referencing table's owner; the relay withholds the DETAIL
    pytest.param("DELETE FROM public.orders WHERE id = 9101", "fknull", id="fk-set-null"),
    # a parent's privilege covers its children upstream: the policy refuses (session 19)
    pytest.param("SELECT note FROM public.r10_parent WHERE id = 9200", "inherit", id="inherit"),
    pytest.param("SELECT view_definition FROM information_schema.views WHERE table_name = 'r10_view'",
                 "viewdef", id="information_schema-filters"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "key"), PER_GRANT_LEAKS)
def test_per_grant_roles_do_not_stop_the_leak_families(pgx, px, sql, key):
    probe(pgx, sql.format(**px.oids), S[key])
