"""Red-team round 11: the three walls added after round 10, attacked with the server as
the judge.

1. Settings (``policy.decide.read_setting``; ``current_setting`` read on both parsers):
   custom settings need a ``set:`` scope naming them, privileged ones no grant reads.
2. Catalog columns that hold settings or code (``policy.classify.pgparse._sensitive_reads``,
   ``SENSITIVE_COLUMNS``; deparsers in ``catalogue.DEFINITION_FUNCTIONS``).
3. Error redaction (``proxy/redaction.py``): an error naming a relation the grant may not
   read loses its DETAIL and CONTEXT.

Grant: ``read:public.orders,public.customers write:public.orders``. Planted (each probe
can fail: ``test_the_plants_are_where_the_probes_look`` reads every marker directly as the
proxy's upstream login): a database-level and a role-level custom setting,
``pg_read_all_settings`` for ``pgwitness`` (``data_directory`` readable), a function body,
a view's WHERE, and secret tables referencing ``public.orders`` whose cascaded writes fail.

Every probe is sent by a raw client (every byte the proxy sends is looked at, notices and
error fields included) over the simple protocol, the extended protocol (unnamed), and a
named prepared statement. Probes that hold are regression tests; probes that leak are kept
as ``xfail(strict=True, reason="LEAK: ...")``.

Leak families found (the first is held since, and kept as regression tests):

* whole rows the column check did not see (``_sensitive_reads`` knows a whole row only
  as a bare one-field ColumnRef naming a RangeVar's name or alias):
  - attribute notation: ``p.row_to_json`` is ``row_to_json(p)`` (PostgreSQL's
    transformColumnRef: a two-field name whose second field is no column is a call of that
    function on the whole row), also ``pg_proc.to_jsonb`` and ``pg_catalog.pg_proc.to_json``;
  - a join's alias: ``SELECT j FROM (pg_roles CROSS JOIN (SELECT 1) z) AS j`` is a whole
    row of the join (every column of pg_roles, rolconfig included): the alias sits on a
    JoinExpr, not on a RangeVar;
  - both also through a temporary view the base grant may create (``CREATE TEMP VIEW
    r11_tv AS SELECT p.to_jsonb ...``) and read back as ``pg_temp.r11_tv``.
* (held since) errors that name no relation still carry row data: a cascaded write into a secret table
  that evaluates an expression on the secret row fails with the value in the MESSAGE
  (``invalid input syntax for type integer: "<secret>"``), and a secret table's trigger
  RAISEs (EXCEPTION with DETAIL, or NOTICE) with the row: no table field, nothing redacted.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import planted
from tests.support.planted import assert_denied, assert_no_leak, received
from tests.support.rawpg import UPSTREAM_USER

pytestmark = pytest.mark.timeout(180)

AGENT = "r11-bot"
SCOPES = "read:public.orders,public.customers write:public.orders"

S = {
    "dbset": "r11-dbset-secret-4e1a",  # ALTER DATABASE app SET app.r11_jwt
    "roleset": "r11-roleset-secret-8c07",  # ALTER ROLE pgwitness SET pgrst.r11_jwt
    "prosrc": "r11-prosrc-secret-1d93",
    "viewdef": "r11-viewdef-secret-77b2",
    "fkcast": "r11-fkcast-secret-3a50",
    "fkraise": "r11-fkraise-secret-6f21",
    "fknotice": "r11-fknotice-secret-0b9e",
    "trgdetail": "r11-trgdetail-secret-44d2",
}

SETUP = f"""
ALTER DATABASE app SET app.r11_jwt = '{S["dbset"]}';
ALTER ROLE pgwitness SET pgrst.r11_jwt = '{S["roleset"]}';
GRANT pg_read_all_settings TO pgwitness;
SET ROLE pgwitness;
CREATE FUNCTION secret.r11_fn() RETURNS text LANGUAGE sql AS $$SELECT '{S["prosrc"]}'$$;
CREATE VIEW secret.r11_view AS SELECT 1 AS k WHERE current_user <> '{S["viewdef"]}';
INSERT INTO public.orders (id, customer_id, total, note) VALUES
    (9301, 1, 1, 'r11'), (9302, 1, 1, 'r11'), (9303, 1, 1, 'r11');
-- a cascaded UPDATE makes the CHECK evaluate secret::int on the secret row
CREATE TABLE secret.r11_fk_cast (
    order_id int REFERENCES public.orders (id) ON UPDATE CASCADE, secret text,
    CHECK (CASE WHEN order_id = 9398 THEN secret::int > 0 ELSE true END));
INSERT INTO secret.r11_fk_cast VALUES (9301, '{S["fkcast"]}');
-- a guard trigger on the secret table quotes the row it refuses to delete
CREATE TABLE secret.r11_fk_raise (
    order_id int REFERENCES public.orders (id) ON DELETE CASCADE, secret text);
INSERT INTO secret.r11_fk_raise VALUES (9302, '{S["fkraise"]}');
CREATE FUNCTION secret.r11_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'row is protected' USING DETAIL = 'row ' || OLD::text; END $$;
CREATE TRIGGER r11_guard BEFORE DELETE ON secret.r11_fk_raise
    FOR EACH ROW EXECUTE FUNCTION secret.r11_guard();
-- an audit trigger on the secret table notices the row it archives
CREATE TABLE secret.r11_fk_notice (
    order_id int REFERENCES public.orders (id) ON DELETE CASCADE, secret text);
INSERT INTO secret.r11_fk_notice VALUES (9303, '{S["fknotice"]}');
CREATE FUNCTION secret.r11_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'archiving %', OLD; RETURN OLD; END $$;
CREATE TRIGGER r11_audit BEFORE DELETE ON secret.r11_fk_notice
    FOR EACH ROW EXECUTE FUNCTION secret.r11_audit();
-- a trigger on the granted table copies a secret value into a secret table's unique
-- column: the unique violation names that table and quotes the value in its DETAIL
CREATE TABLE secret.r11_log (k text UNIQUE);
INSERT INTO secret.r11_log VALUES ('{S["trgdetail"]}');
CREATE FUNCTION secret.r11_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.note = 'r11-copy' THEN INSERT INTO secret.r11_log VALUES ('{S["trgdetail"]}'); END IF;
RETURN NEW; END $$;
CREATE TRIGGER r11_copy BEFORE UPDATE ON public.orders
    FOR EACH ROW EXECUTE FUNCTION secret.r11_copy();
RESET ROLE;
"""
TEARDOWN = """
DROP TRIGGER IF EXISTS r11_copy ON public.orders;
DROP TABLE IF EXISTS secret.r11_log;
DROP FUNCTION IF EXISTS secret.r11_copy();
ALTER DATABASE app RESET app.r11_jwt;
ALTER ROLE pgwitness RESET pgrst.r11_jwt;
REVOKE pg_read_all_settings FROM pgwitness;
DROP TABLE IF EXISTS secret.r11_fk_cast, secret.r11_fk_raise, secret.r11_fk_notice;
DROP FUNCTION IF EXISTS secret.r11_guard(), secret.r11_audit(), secret.r11_fn();
DROP VIEW IF EXISTS secret.r11_view;
DELETE FROM public.orders WHERE id IN (9301, 9302, 9303, 9398);
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r11walls", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.data_directory = pg.psql("SHOW data_directory").strip()
        yield handle


def direct(pg, sql: str) -> str:
    """``sql`` as the proxy's upstream login, straight to the server."""
    with psycopg.connect(pg.dsn(UPSTREAM_USER, pg.users[UPSTREAM_USER], "app"),
                         autocommit=True) as conn:  # fmt: skip
        return str(conn.execute(sql).fetchall())


# --- the server's own judgement -----------------------------------------------------------


def test_the_plants_are_where_the_probes_look(px, pg):
    """Run as the proxy's upstream login directly: every probe below could fail."""
    checks = {
        "dbset": "SHOW app.r11_jwt",
        "roleset": "SELECT rolconfig FROM pg_roles WHERE rolname = current_user",
        "prosrc": "SELECT p.row_to_json FROM pg_proc p WHERE p.proname = 'r11_fn'",
        "viewdef": "SELECT to_jsonb(j) FROM (pg_views CROSS JOIN (SELECT 1) z) j "
                   "WHERE viewname = 'r11_view'",
    }  # fmt: skip
    for key, sql in checks.items():
        assert S[key] in direct(pg, sql), (key, sql)
    assert S["roleset"] in direct(pg, "SHOW pgrst.r11_jwt")
    assert px.data_directory in direct(pg, "SELECT current_setting('data_directory')")
    assert S["roleset"] in direct(
        pg, "SELECT to_jsonb(j) FROM (pg_roles CROSS JOIN (SELECT 1) z) j "
            "WHERE rolname = current_user")  # fmt: skip
    # the error families: the server itself quotes each row
    for sql, key in [
        ("UPDATE public.orders SET id = 9398 WHERE id = 9301", "fkcast"),
        ("DELETE FROM public.orders WHERE id = 9302", "fkraise"),
    ]:
        with psycopg.connect(pg.dsn(UPSTREAM_USER, pg.users[UPSTREAM_USER], "app")) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            diag = err.value.diag
            assert S[key] in f"{diag.message_primary} {diag.message_detail}", (sql, diag)
            assert diag.table_name is None  # no table field: nothing for the relay to go by
            conn.rollback()
    notices: list[str] = []
    with psycopg.connect(pg.dsn(UPSTREAM_USER, pg.users[UPSTREAM_USER], "app")) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("DELETE FROM public.orders WHERE id = 9303")
        conn.rollback()
    assert any(S["fknotice"] in n for n in notices), notices
    assert direct(pg, "SELECT count(*) FROM public.orders WHERE id IN (9301, 9302, 9303)") == "[(3,)]"


# ==========================================================================================
# 1. Whole rows the column check did not see (held since: pgparse._sensitive_reads counts
#    x.f with f not a column of x, and a join's alias, as whole rows)
# ==========================================================================================

def held(sql: str, key: str):
    """A whole-row probe that leaked when found and is held now: a regression test."""
    return pytest.param(sql, key, id=f"{key}:{sql[:70]}")


WHOLE_ROWS = [
    held("SELECT p.row_to_json FROM pg_proc p WHERE p.proname = 'r11_fn'", "prosrc"),
    held("SELECT pg_proc.to_jsonb FROM pg_proc WHERE proname = 'r11_fn'", "prosrc"),
    held("SELECT pg_catalog.pg_proc.to_json FROM pg_catalog.pg_proc WHERE proname = 'r11_fn'",
         "prosrc"),
    held("COPY (SELECT p.to_jsonb FROM pg_proc p WHERE p.proname = 'r11_fn') TO STDOUT",
         "prosrc"),
    held("SELECT r.row_to_json FROM pg_roles r WHERE r.rolname = current_user", "roleset"),
    held("SELECT u.to_jsonb FROM pg_user u", "roleset"),
    held("SELECT v.row_to_json FROM pg_views v WHERE v.viewname = 'r11_view'", "viewdef"),
    held("SELECT v.to_jsonb FROM information_schema.views v WHERE v.table_name = 'r11_view'",
         "viewdef"),
    held("SELECT r.to_jsonb FROM information_schema.routines r "
         "WHERE r.routine_name = 'r11_fn'", "prosrc"),
    held("SELECT to_jsonb(j) FROM (pg_roles CROSS JOIN (SELECT 1) z) AS j "
         "WHERE rolname = current_user", "roleset"),
    held("SELECT j FROM (pg_user NATURAL JOIN (SELECT 1 AS one) z) j", "roleset"),
    held("SELECT j FROM (pg_proc CROSS JOIN (SELECT 1) z) j WHERE proname = 'r11_fn'",
         "prosrc"),
    held("SELECT j FROM (pg_views NATURAL JOIN (SELECT 1 AS one) z) j "
         "WHERE viewname = 'r11_view'", "viewdef"),
    held("SELECT array_agg(j)::text FROM (information_schema.views CROSS JOIN (SELECT 1) z) j "
         "WHERE table_name = 'r11_view'", "viewdef"),
]


@pytest.mark.parametrize(("sql", "key"), WHOLE_ROWS)
def test_whole_rows_of_catalogs_holding_settings_or_code(px, sql, key):
    got = received(px, sql)
    assert_no_leak(got, [S[key]], sql)
    assert_denied(got, sql)  # refused, not just empty


def test_a_temporary_view_over_a_whole_catalog_row(px):
    """No ddl scope needed: the base grant creates the temporary view and reads it back
    (by its pg_temp name; unqualified it is read as public.r11_tv and refused)."""
    got = {}
    with planted.session(px) as c:
        got["create"] = planted.text(c.query(
            "CREATE TEMP VIEW r11_tv AS SELECT p.to_jsonb AS j FROM pg_proc p "
            "WHERE p.proname = 'r11_fn'"))  # fmt: skip
        got["read"] = planted.text(c.query("SELECT j FROM pg_temp.r11_tv"))
    assert_no_leak(got, [S["prosrc"]], "temp view")
    assert "42501" in got["create"], got  # the view's own query is what is refused


# ==========================================================================================
# 2. Errors that name no relation and still carry a secret row (held since: a session that
#    ran or prepared a statement whose foreign-key actions write a relation the grant may
#    not read gets only the severity and SQLSTATE of errors and notices from then on)
# ==========================================================================================

WITHHELD = "message withheld"  # proxy.redaction.withhold_message's note


@pytest.mark.parametrize("sql, order, sqlstate, key", [
    ("UPDATE public.orders SET id = 9398 WHERE id = 9301", 9301, "22P02", "fkcast"),
    ("DELETE FROM public.orders WHERE id = 9302", 9302, "P0001", "fkraise"),
], ids=["a-cast-of-the-secret-row", "a-guard-trigger-quoting-the-row"])  # fmt: skip
def test_a_cascaded_write_fails_in_a_secret_table(px, pg, sql, order, sqlstate, key):
    try:
        got = received(px, sql)
        # refused by the policy since session 29 (its foreign keys' actions write secret
        # tables the grant may not write); before, it ran and its message was withheld
        assert all("42501" in t and "foreign key" in t for t in got.values()), got
        assert not any(sqlstate in t for t in got.values()), got
        assert_no_leak(got, [S[key]], sql)
    finally:
        assert direct(pg, f"SELECT count(*) FROM public.orders WHERE id = {order}") == "[(1,)]"


def test_a_cascaded_delete_meets_an_audit_trigger_noticing_the_row(px, pg):
    sql = "DELETE FROM public.orders WHERE id = 9303"
    try:
        got = received(px, sql, before=("BEGIN",), after=("ROLLBACK",))
        assert_no_leak(got, [S["fknotice"]], sql)
        # refused by the policy since session 29 (the action deletes from a secret table)
        assert all("42501" in t and "foreign key" in t for t in got.values()), got
    finally:
        assert direct(pg, "SELECT count(*) FROM public.orders WHERE id = 9303") == "[(1,)]"


def test_an_error_naming_an_unreadable_table_loses_its_detail(px, pg):
    """No foreign key: a trigger on the granted table writes a secret table, and the
    unique violation there names it (schema and table fields) and quotes the secret value
    in its DETAIL. The relay withholds the DETAIL; SQLSTATE and message stay."""
    sql = "UPDATE public.orders SET note = 'r11-copy' WHERE id = 9301"
    try:
        got = received(px, sql)
        assert_no_leak(got, [S["trgdetail"]], sql)
        # (public.orders also cascades into secret tables here: since session 29 an
        # UPDATE of it is refused by the policy, its ON UPDATE actions writing them; before,
        # the session withheld the whole message, and without that, the table field would
        # withhold the DETAIL)
        assert all("42501" in t and "foreign key" in t for t in got.values()), got
    finally:
        assert direct(pg, "SELECT count(*) FROM public.orders WHERE note = 'r11-copy'") == "[(0,)]"


# ==========================================================================================
# 3. Held: settings
# ==========================================================================================

SETTING_SECRETS = [S["dbset"], S["roleset"]]

SETTINGS_HELD = [
    "SHOW app . r11_jwt",
    "SHOW app/**/.r11_jwt",
    "SHOW/**/pgrst.r11_jwt",
    'SHOW "app.r11_jwt"',
    'SHOW "PGRST"."R11_JWT"',
    'SHOW "Data_Directory"',
    "show DATA_DIRECTORY;",
    "SELECT current_setting('app.'\n'r11_jwt')",  # adjacent literals: one constant to PostgreSQL
    "SELECT current_setting(('app.r11_jwt'))",
    "SELECT current_setting('app.r11_jwt' COLLATE \"C\")",
    "SELECT current_setting('app.r11_jwt'::text)",
    "SELECT current_setting(e'APP\\056R11_JWT')",
    "SELECT current_setting(lower('APP.R11_JWT'))",
    "SELECT current_setting(name) FROM pg_settings",
    "SELECT * FROM pg_show_all_settings() s WHERE s.name = 'app.r11_jwt'",
    "SELECT s.setting FROM pg_catalog.pg_show_all_settings() s WHERE s.name = 'data_directory'",
    "SELECT * FROM pg_options_to_table((SELECT setconfig FROM pg_db_role_setting LIMIT 1))",
    "SELECT x FROM (pg_db_role_setting CROSS JOIN (SELECT 1) z) x",
    "SELECT * FROM pg_options_to_table((SELECT rolconfig FROM pg_roles WHERE rolname = current_user))",
    "SELECT rolname FROM pg_roles r WHERE r.rolconfig IS NOT NULL",
    "SELECT (SELECT r FROM pg_roles r WHERE r.rolname = current_user)::text",
    "SELECT jsonb_populate_record(NULL::pg_roles, to_jsonb(r)) FROM pg_roles r",
    "WITH c AS (SELECT * FROM pg_roles) SELECT c FROM c",
    "SELECT rolname FROM pg_roles UNION ALL SELECT array_to_string(useconfig, ',') FROM pg_user",
    "SELECT array_agg(r)::text FROM pg_roles r",
    "SELECT x.* FROM pg_roles r, LATERAL (SELECT r.*) x",
    "SELECT (pg_roles).rolconfig FROM pg_roles",
    "DECLARE r11c CURSOR FOR SELECT current_setting('app.r11_jwt')",
    "PREPARE r11p AS SELECT current_setting('pgrst.r11_jwt')",
    "COPY (SELECT current_setting('app.r11_jwt')) TO STDOUT",
    "EXPLAIN ANALYZE SELECT current_setting('app.r11_jwt')",
    "SELECT set_config('app.r11_jwt', current_setting('app.r11_jwt'), false)",
]


@pytest.mark.parametrize("sql", SETTINGS_HELD)
def test_settings_held(px, sql):
    got = received(px, sql)
    assert_no_leak(got, SETTING_SECRETS + [px.data_directory], sql)
    assert_denied(got, sql)


def test_cached_verdicts_of_allowed_settings_do_not_cover_secret_ones(px):
    """Every tier primed with allowed texts, then the secret one literal away."""
    with planted.session(px) as c:
        for _ in range(40):
            assert "42501" not in planted.text(c.query("SELECT current_setting('jit')"))
            assert "42501" not in planted.text(planted.raw_extended(c, "SELECT current_setting('TimeZone')"))
            assert "42501" not in planted.text(c.query("SELECT proname FROM pg_proc WHERE proname = 'r11_fn'"))
        got = {
            "simple": planted.text(c.query("SELECT current_setting('app.r11_jwt')")),
            "extended": planted.text(planted.raw_extended(c, "SELECT current_setting('pgrst.r11_jwt')")),
            "body": planted.text(c.query("SELECT prosrc FROM pg_proc WHERE proname = 'r11_fn'")),
            "privileged": planted.text(c.query("SELECT current_setting('data_directory')")),
        }
    assert_no_leak(got, SETTING_SECRETS + [S["prosrc"], px.data_directory], "cache")
    assert_denied(got, "cache")


# ==========================================================================================
# 4. Held: catalog columns and deparsers
# ==========================================================================================

CODE_HELD = [
    ('SELECT "prosrc" FROM pg_proc WHERE proname = \'r11_fn\'', "prosrc"),
    ("SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
     "WHERE p.proname = 'r11_fn'", "prosrc"),
    ("SELECT prosrc(p) FROM pg_proc p WHERE p.proname = 'r11_fn'", "prosrc"),
    ("SELECT (p).prosrc FROM pg_proc p WHERE p.proname = 'r11_fn'", "prosrc"),
    ("SELECT (p).* FROM pg_proc p WHERE p.proname = 'r11_fn'", "prosrc"),
    ("SELECT x FROM pg_proc p, LATERAL row_to_json(p) x WHERE p.proname = 'r11_fn'", "prosrc"),
    ("SELECT x FROM (SELECT p FROM pg_proc p) s(x)", "prosrc"),
    ("SELECT c FROM (SELECT oid, proname, prosrc FROM pg_proc) c WHERE proname = 'r11_fn'", "prosrc"),
    ("WITH f AS (SELECT * FROM pg_proc) SELECT to_jsonb(f) FROM f WHERE proname = 'r11_fn'", "prosrc"),
    ("SELECT proname FROM pg_proc UNION ALL SELECT prosrc FROM pg_proc", "prosrc"),
    ("SELECT hstore(p) FROM pg_proc p", "prosrc"),
    ("SELECT a FROM pg_proc p(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, "
     "a15, a16, a17, a18, a19, a20, a21, a22, a23, a24, a25, a26, a) "
     "WHERE a2 = 'r11_fn'", "prosrc"),
    ("SELECT * FROM pg_proc NATURAL JOIN (SELECT 'r11_fn'::name AS proname) z", "prosrc"),
    ("SELECT proname FROM pg_proc JOIN (VALUES ('x')) v(prosrc) USING (prosrc)", "prosrc"),
    ("SELECT pg_get_functiondef('secret.r11_fn'::regproc)", "prosrc"),
    ("SELECT pg_catalog.pg_get_functiondef(oid) FROM pg_proc WHERE proname = 'r11_fn'", "prosrc"),
    ("SELECT pg_get_viewdef('secret.r11_view')", "viewdef"),
    ("SELECT pg_get_viewdef('secret.r11_view'::regclass::oid, true)", "viewdef"),
    ("SELECT pg_get_ruledef(r.oid) FROM pg_rewrite r", "viewdef"),
    ("SELECT ev_action FROM pg_rewrite", "viewdef"),
    ("COPY pg_rewrite TO STDOUT", "viewdef"),
    ("COPY pg_catalog.pg_proc (oid, prosrc) TO STDOUT", "prosrc"),
    ("SELECT definition FROM pg_catalog.pg_views v WHERE v.viewname = 'r11_view'", "viewdef"),
    ("SELECT x.definition FROM (pg_views v JOIN pg_class c ON c.relname = v.viewname) x", "viewdef"),
    ("SELECT view_definition FROM information_schema.views", "viewdef"),
    ("SELECT routine_definition FROM information_schema.routines", "prosrc"),
    ("DECLARE r11d CURSOR FOR SELECT prosrc FROM pg_proc", "prosrc"),
    ("EXPLAIN ANALYZE SELECT prosrc FROM pg_proc", "prosrc"),
    ("CREATE TEMP VIEW r11_tv2 AS SELECT prosrc FROM pg_proc", "prosrc"),
    ("CREATE TEMP TABLE r11_tt AS SELECT p FROM pg_proc p", "prosrc"),
]


@pytest.mark.parametrize(("sql", "key"), CODE_HELD, ids=[f"{k}:{s[:60]}" for s, k in CODE_HELD])
def test_code_held(px, sql, key):
    got = received(px, sql)
    assert_no_leak(got, [S[key]], sql)
    assert_denied(got, sql)


def test_columns_of_those_catalogs_without_code_still_work(px):
    for sql, expect in [
        ("SELECT proname FROM pg_proc WHERE proname = 'r11_fn'", "r11_fn"),
        ("SELECT viewname FROM pg_views WHERE viewname = 'r11_view'", "r11_view"),
        ("SELECT rolname FROM pg_roles WHERE rolname = current_user", "pgwitness"),
        ("SHOW search_path", "public"),
    ]:  # fmt: skip
        for mode, t in received(px, sql).items():
            assert expect in t and "42501" not in t, (mode, sql, t[-400:])

