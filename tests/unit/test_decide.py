"""decide(): every default and every deny path, one row each; check_startup_params."""

from __future__ import annotations

import pytest

from policy.classify import Classified, StatementClass, classify
from policy.decide import Decision, decide
from policy.scopes import parse_scopes
from policy.startup import check_startup_params

GRANT = parse_scopes(
    "read:public.orders,public.customers,reporting.* write:public.orders "
    "insert:public.audit_log truncate:public.scratch ddl:sandbox.* "
    "execute:public.my_fn,util.* set:work_mem"
)
READ_ONLY = parse_scopes("read:public.*")
UNKNOWN_OK = parse_scopes("read:public.* unknown:*")

# (sql, allowed, rule, text the reason must contain)
CASES = [
    # scopes: reads
    ("SELECT * FROM orders", True, "scope.read", "public.orders"),
    ("SELECT * FROM reporting.daily", True, "scope.read", "reporting.daily"),
    ("SELECT * FROM secrets", False, "scope.read", "may not read public.secrets"),
    ("SELECT * FROM orders JOIN payments ON true", False, "scope.read", "public.payments"),
    ("SELECT (SELECT 1 FROM payments) FROM orders", False, "scope.read", "public.payments"),
    ("WITH x AS (SELECT * FROM payments) SELECT * FROM x", False, "scope.read", "public.payments"),
    ("WITH payments AS (SELECT 1) SELECT * FROM payments", True, "default.no_relations", ""),
    ("TABLE customers", True, "scope.read", "public.customers"),
    ("EXPLAIN SELECT * FROM payments", False, "scope.read", "public.payments"),
    ("EXPLAIN DELETE FROM orders", True, "scope.read", "public.orders"),
    ("EXPLAIN DELETE FROM customers", True, "scope.read", "public.customers"),
    ("COPY orders TO STDOUT", True, "scope.read", "public.orders"),
    ("COPY (SELECT * FROM payments) TO STDOUT", False, "scope.read", "public.payments"),
    ("DECLARE c CURSOR FOR SELECT * FROM payments", False, "scope.read", "public.payments"),
    ("SELECT 'payments'::regclass", False, "scope.read", "public.payments"),
    ("SELECT currval('orders_id_seq')", False, "scope.read", "public.orders_id_seq"),
    # scopes: writes
    ("UPDATE orders SET total = 0", True, "scope.write", "public.orders"),
    ("DELETE FROM orders WHERE id = 1", True, "scope.write", "public.orders"),
    ("INSERT INTO orders SELECT * FROM customers", True, "scope.write", "public.orders"),
    ("UPDATE customers SET name = 'x'", False, "scope.write", "may not write public.customers"),
    ("INSERT INTO orders SELECT * FROM payments", False, "scope.read", "public.payments"),
    (
        "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d",
        False,
        "scope.write",
        "public.customers",
    ),
    ("EXPLAIN ANALYZE DELETE FROM customers", False, "scope.write", "public.customers"),
    ("EXPLAIN (ANALYZE) UPDATE orders SET total = 1", True, "scope.write", "public.orders"),
    (
        "MERGE INTO orders o USING customers c ON o.cid = c.id WHEN MATCHED THEN DELETE",
        True,
        "scope.write",
        "public.orders",
    ),
    (
        "MERGE INTO customers c USING orders o ON o.cid = c.id WHEN MATCHED THEN DELETE",
        False,
        "scope.write",
        "public.customers",
    ),
    ("INSERT INTO audit_log VALUES (1)", True, "scope.write", "public.audit_log"),
    ("UPDATE audit_log SET m = 1", False, "scope.write", "public.audit_log"),
    (
        "INSERT INTO audit_log VALUES (1) ON CONFLICT (id) DO UPDATE SET m = 2",
        False,
        "scope.write",
        "public.audit_log",
    ),
    ("COPY audit_log FROM STDIN", True, "scope.write", "public.audit_log"),
    ("COPY customers FROM STDIN", False, "scope.write", "public.customers"),
    ("SELECT * FROM orders FOR UPDATE", True, "scope.write", "public.orders"),
    (
        "SELECT * FROM customers FOR UPDATE",
        False,
        "scope.write",
        "may not lock rows of public.customers",
    ),
    ("SELECT nextval('orders_id_seq')", False, "scope.write", "public.orders_id_seq"),
    ("TRUNCATE scratch", True, "scope.truncate", "public.scratch"),
    ("TRUNCATE orders", False, "scope.truncate", "may not truncate public.orders"),
    # scopes: DDL
    ("CREATE TABLE sandbox.t AS SELECT * FROM orders", True, "scope.ddl", "sandbox.t"),
    ("CREATE TABLE sandbox.t AS SELECT * FROM payments", False, "scope.read", "public.payments"),
    (
        "CREATE TABLE public.t (a int)",
        False,
        "scope.ddl",
        "may not change the definition of public.t",
    ),
    ("DROP TABLE orders", False, "scope.ddl", "public.orders"),
    ("ALTER TABLE sandbox.t RENAME TO u", True, "scope.ddl", "sandbox.t"),
    ("ALTER TABLE sandbox.t RENAME TO u", True, "scope.ddl", "sandbox.u"),
    ("SELECT * INTO sandbox.copy FROM orders", True, "scope.ddl", "sandbox.copy"),
    ("SELECT * INTO public.copy FROM orders", False, "scope.ddl", "public.copy"),
    ("CREATE SCHEMA sandbox", True, "scope.ddl", "sandbox.*"),
    ("CREATE SCHEMA other", False, "scope.ddl", "other.*"),
    ("REFRESH MATERIALIZED VIEW sandbox.mv", True, "scope.ddl", "sandbox.mv"),
    # temp tables
    (
        "CREATE TEMP TABLE scratchpad AS SELECT * FROM orders",
        True,
        "scope.read",
        "pg_temp.scratchpad",
    ),
    (
        "CREATE TEMP TABLE scratchpad AS SELECT * FROM payments",
        False,
        "scope.read",
        "public.payments",
    ),
    ("CREATE TEMP TABLE scratchpad (a int)", True, "default.temp", "pg_temp.scratchpad"),
    (
        "INSERT INTO pg_temp.scratchpad SELECT * FROM orders",
        True,
        "scope.read",
        "pg_temp.scratchpad",
    ),
    ("INSERT INTO pg_temp.scratchpad VALUES (1)", True, "default.temp", "pg_temp.scratchpad"),
    ("SELECT * FROM pg_temp.scratchpad", True, "default.temp", "pg_temp.scratchpad"),
    ("DROP TABLE pg_temp.scratchpad", True, "default.temp", "pg_temp.scratchpad"),
    # catalogs
    ("SELECT * FROM pg_class", True, "default.catalog", "pg_catalog.pg_class"),
    (
        "SELECT typname FROM pg_catalog.pg_type JOIN pg_namespace n ON true",
        True,
        "default.catalog",
        "pg_catalog.pg_type",
    ),
    (
        "SELECT * FROM information_schema.columns",
        True,
        "default.catalog",
        "information_schema.columns",
    ),
    # settings hold secrets too: the privileged ones are listed by pg_settings to a
    # privileged upstream role, role-level ones (ALTER ROLE ... SET) by pg_roles and pg_user
    ("SELECT * FROM pg_settings", False, "deny.catalog", "setting of pg_catalog.pg_settings"),
    ("SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'", True,
     "default.catalog", ""),
    ("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'", False, "deny.catalog",
     "pg_settings"),
    ("SELECT setting FROM pg_settings WHERE name = 'jit' OR true", False, "deny.catalog",
     "pg_settings"),
    ("SELECT rolname, rolconfig FROM pg_roles", False, "deny.catalog", "pg_db_role_setting"),
    ("SELECT useconfig FROM pg_catalog.pg_user", False, "deny.catalog", "pg_db_role_setting"),
    ("SELECT * FROM pg_roles", False, "deny.catalog", "pg_db_role_setting"),
    ("SELECT to_jsonb(r) FROM pg_roles r", False, "deny.catalog", "pg_db_role_setting"),
    ("SELECT l FROM pg_roles r(a, b, c, d, e, f, g, h, i, j, k, l)", False, "deny.catalog",
     "pg_db_role_setting"),
    ("SELECT rolname FROM pg_roles", True, "default.catalog", ""),
    # a relation by OID (psql's \d): no name to decide on, and nothing read through it
    ("SELECT * FROM pg_class WHERE oid = '16412'::pg_catalog.regclass", True,
     "default.catalog", ""),
    ("SELECT currval('16412'::regclass)", False, "deny.unknown", "literal relation name"),
    # code is where literals are written down: function bodies, view and rule definitions
    ("SELECT prosrc FROM pg_proc WHERE proname = 'f'", False, "deny.catalog",
     "prosrc of pg_catalog.pg_proc"),
    ("SELECT * FROM pg_catalog.pg_proc", False, "deny.catalog", "prosrc of pg_catalog.pg_proc"),
    ("SELECT proname, proargnames FROM pg_proc", True, "default.catalog", ""),
    ("COPY pg_catalog.pg_proc TO STDOUT", False, "deny.catalog", "prosrc of pg_catalog.pg_proc"),
    ("COPY pg_rewrite TO STDOUT", False, "deny.catalog", "ev_action of pg_catalog.pg_rewrite"),
    ("COPY pg_proc (proname) TO STDOUT", True, "default.catalog", ""),
    ("SELECT definition FROM pg_views", False, "deny.catalog", "definition of pg_catalog.pg_views"),
    ("SELECT viewname FROM pg_views", True, "default.catalog", ""),
    ("SELECT v.view_definition FROM information_schema.views v", False, "deny.catalog",
     "view_definition of information_schema.views"),
    ("SELECT pg_get_functiondef(16384)", False, "scope.execute", "pg_get_functiondef"),
    ("SELECT pg_get_viewdef(16384, true)", False, "scope.execute", "pg_get_viewdef"),
    ("SELECT count(*) FROM pg_user", True, "default.catalog", ""),
    (
        "SELECT * FROM information_schema.user_mapping_options",
        False,
        "deny.catalog",
        "information_schema.user_mapping_options",
    ),
    ("SELECT rolpassword FROM pg_authid", False, "deny.catalog", "pg_catalog.pg_authid"),
    ("SELECT * FROM pg_catalog.pg_shadow", False, "deny.catalog", "pg_catalog.pg_shadow"),
    ("SELECT * FROM pg_user_mappings", False, "deny.catalog", "pg_user_mappings"),
    ("SELECT * FROM pg_statistic", False, "deny.catalog", "pg_statistic"),
    ("SELECT * FROM pg_stats", False, "deny.catalog", "pg_stats"),
    ("SELECT * FROM pg_largeobject", False, "deny.catalog", "pg_largeobject"),
    ("SELECT * FROM pg_file_settings", False, "deny.catalog", "pg_file_settings"),
    ("SELECT * FROM pg_hba_file_rules", False, "deny.catalog", "pg_hba_file_rules"),
    ("SELECT query FROM pg_stat_activity", False, "deny.catalog", "pg_stat_activity"),
    ("SELECT * FROM pg_some_future_catalog", False, "deny.catalog", "pg_some_future_catalog"),
    ("SELECT * FROM orders, pg_authid", False, "deny.catalog", "pg_authid"),
    ("UPDATE pg_class SET relname = 'x'", False, "deny.catalog", "pg_catalog.pg_class"),
    ("DELETE FROM information_schema.tables", False, "deny.catalog", "information_schema.tables"),
    # functions
    ("SELECT count(*), lower(name), now() FROM customers", True, "scope.read", ""),
    (
        "SELECT jsonb_build_object('a', 1), pg_typeof(1), pg_sleep(0)",
        True,
        "default.no_relations",
        "",
    ),
    ("SELECT current_setting('work_mem')", True, "default.no_relations", ""),
    ("SELECT my_fn(1)", True, "default.no_relations", ""),
    ("SELECT public.my_fn(1)", True, "default.no_relations", ""),
    ("SELECT util.anything()", True, "default.no_relations", ""),
    ("SELECT other_fn(1)", False, "scope.execute", "may not execute public.other_fn"),
    (
        "SELECT pg_catalog.pg_get_partkeydef(1), pg_ts_config_is_visible(1)",
        True,
        "default.no_relations",
        "",
    ),
    ("SELECT has_table_privilege('orders', 'select')", True, "default.no_relations", ""),
    ("SELECT has_discount(1)", False, "scope.execute", "public.has_discount"),
    ("SELECT to_region(1)", False, "scope.execute", "public.to_region"),
    ("SELECT pg_stat_get_activity(1)", False, "scope.execute", "pg_stat_get_activity"),
    ("SELECT reporting.fn()", False, "scope.execute", "reporting.fn"),
    (
        "SELECT pg_catalog.pg_stat_get_live_tuples(1)",
        False,
        "scope.execute",
        "pg_catalog.pg_stat_get_live_tuples",
    ),
    ("SELECT pg_read_file('/etc/passwd')", False, "deny.function", "pg_read_file"),
    # the value of whichever sequence the session advanced last (a default's, a trigger's)
    ("SELECT lastval()", False, "deny.function", "currval('schema.sequence')"),
    ("SELECT pg_catalog.lastval()", False, "deny.function", "lastval"),
    ("SELECT * FROM orders WHERE id = lastval()", False, "deny.function", "lastval"),
    ("SELECT pg_catalog.pg_read_binary_file('x')", False, "deny.function", "pg_read_binary_file"),
    ("SELECT * FROM pg_ls_dir('.')", False, "deny.function", "pg_ls_dir"),
    ("SELECT pg_stat_file('x')", False, "deny.function", "pg_stat_file"),
    ("SELECT lo_import('/etc/passwd')", False, "deny.function", "lo_import"),
    ("SELECT lo_export(1, '/tmp/x')", False, "deny.function", "lo_export"),
    ("SELECT dblink_exec('h', 'drop table x')", False, "deny.function", "dblink_exec"),
    ("SELECT * FROM dblink('h', 'select 1') AS t(a int)", False, "deny.function", "dblink"),
    (
        "SELECT set_config('role', 'postgres', false)",
        False,
        "deny.function",
        "may not execute set_config on role",
    ),
    ("SELECT set_config('search_path', 'evil', false)", False, "deny.function", "search_path"),
    (
        "SELECT current_setting('jit'), set_config('jit', 'off', false)",
        True,
        "default.no_relations",
        "",
    ),
    ("SELECT set_config('work_mem', '1GB', true)", True, "default.no_relations", ""),
    ("SELECT set_config('random_page_cost', '1', true)", False, "deny.setting", "random_page_cost"),
    # (a setting named by a parameter is decided at each Bind: test_s28_settings_by_parameter)
    ("SELECT set_config(lower($1), 'x', false)", False, "deny.function", "set_config"),
    ("SELECT ROW(1, 'a')::text", True, "default.no_relations", ""),
    ("SELECT * FROM pg_catalog.pg_publication_namespace", True, "default.catalog", ""),
    ("SELECT pg_terminate_backend(1)", False, "deny.function", "pg_terminate_backend on backend 1"),
    ("SELECT pg_cancel_backend(1)", False, "deny.function", "pg_cancel_backend on backend 1"),
    ("SELECT pg_reload_conf()", False, "deny.function", "pg_reload_conf"),
    ("SELECT pg_rotate_logfile()", False, "deny.function", "pg_rotate_logfile"),
    ("SELECT pg_switch_wal()", False, "deny.function", "pg_switch_wal"),
    (
        "SELECT query_to_xml('select * from payments', true, true, '')",
        False,
        "deny.function",
        "query_to_xml",
    ),
    ("SELECT table_to_xml('payments', true, true, '')", False, "deny.function", "table_to_xml"),
    ("SELECT ts_stat('select v from payments')", False, "deny.function", "ts_stat"),
    ("SELECT pg_advisory_lock(1)", False, "deny.function", "pg_advisory_lock"),
    ("SELECT pg_notify('jobs', 'x')", False, "deny.function", "pg_notify"),
    (
        "SELECT * FROM orders WHERE id = (SELECT pg_read_file('x')::int)",
        False,
        "deny.function",
        "pg_read_file",
    ),
    ("EXPLAIN SELECT pg_read_file('x')", False, "deny.function", "pg_read_file"),
    ("SELECT public.pg_read_file('x')", False, "scope.execute", "public.pg_read_file"),
    # transactions (default)
    ("BEGIN", True, "default.transaction", ""),
    ("START TRANSACTION READ ONLY", True, "default.transaction", ""),
    ("COMMIT", True, "default.transaction", ""),
    ("ROLLBACK TO SAVEPOINT a", True, "default.transaction", ""),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", True, "default.transaction", ""),
    ("PREPARE TRANSACTION 'x'", False, "deny.two_phase", "two-phase"),
    ("COMMIT PREPARED 'x'", False, "deny.two_phase", "two-phase"),
    # settings
    ("SET application_name = 'agent'", True, "default.setting", "application_name"),
    ("SET statement_timeout = '5s'", True, "default.setting", "statement_timeout"),
    ("SET LOCAL lock_timeout = 100", True, "default.setting", "lock_timeout"),
    ("SET idle_in_transaction_session_timeout = 0", True, "default.setting", ""),
    ("SET extra_float_digits = 3", True, "default.setting", "extra_float_digits"),
    ("SET DateStyle TO ISO, MDY", True, "default.setting", "datestyle"),
    ("SET TIME ZONE 'UTC'", True, "default.setting", "timezone"),
    ("SET IntervalStyle = postgres", True, "default.setting", "intervalstyle"),
    ("SET client_encoding = 'UTF8'", True, "default.setting", "client_encoding"),
    ("RESET application_name", True, "default.setting", "application_name"),
    ("RESET ALL", True, "default.setting", "reset all"),
    ("SHOW search_path", True, "default.show", "search_path"),
    ("SHOW ALL", False, "deny.setting_read", "SHOW ALL"),
    ("SHOW TimeZone", True, "default.show", "timezone"),
    ("SHOW app.jwt_secret", False, "deny.setting_read", "custom setting app.jwt_secret"),
    ("SHOW primary_conninfo", False, "deny.setting_read", "primary_conninfo"),
    ("SHOW Data_Directory", False, "deny.setting_read", "data_directory"),
    ("SELECT current_setting('jit')", True, "default.no_relations", ""),
    ("SELECT current_setting('PGRST.JWT_Secret', true)", False, "deny.setting_read", "pgrst.jwt_secret"),
    ("SELECT pg_catalog.current_setting('ssl_passphrase_command')", False, "deny.setting_read",
     "ssl_passphrase_command"),
    ("SELECT current_setting(lower('APP.X'))", False, "deny.function", "not named by a string literal"),
    ("SELECT current_setting('jit'), current_setting(s) FROM (VALUES ('app.x')) v(s)", False,
     "deny.function", "not named by a string literal"),
    ("SET work_mem = '64MB'", True, "scope.set", "work_mem"),
    ("SET random_page_cost = 1", False, "deny.setting", "random_page_cost"),
    ("SET search_path TO evil, public", False, "deny.setting", "search_path"),
    ("SET SCHEMA 'evil'", False, "deny.setting", "search_path"),
    # back to the startup packet's value: the pinned path (SET of it is refused)
    ("RESET search_path", True, "default.setting", "pinned value"),
    ("RESET \"Search_Path\"", True, "default.setting", "pinned value"),
    # the same for the other pin (session 37; red-team round 83's minor refusal)
    ("RESET constraint_exclusion", True, "default.setting", "constraint_exclusion to the pinned"),
    ("SET constraint_exclusion = on", False, "deny.setting", "constraint_exclusion"),
    ("RESET enable_seqscan", False, "deny.setting", "enable_seqscan"),
    ("SET search_path TO DEFAULT", False, "deny.setting", "search_path"),
    ("SET LOCAL search_path = evil", False, "deny.setting", "search_path"),
    ("SET ROLE postgres", False, "deny.setting", "role"),
    ("RESET ROLE", False, "deny.setting", "role"),
    ("SET SESSION AUTHORIZATION postgres", False, "deny.setting", "session_authorization"),
    ("SET standard_conforming_strings = off", False, "deny.setting", "standard_conforming_strings"),
    ("SET session_replication_role = replica", False, "deny.setting", "session_replication_role"),
    ("SET default_transaction_read_only = off", False, "deny.setting", ""),
    ("SET client_encoding = 'SJIS'", False, "deny.unknown", "multibyte"),
    # code, utility, roles
    ("DO $$ BEGIN DELETE FROM orders; END $$", False, "deny.do", "DO"),
    ("CALL my_proc()", False, "deny.call", "my_proc"),
    ("COPY orders FROM PROGRAM 'curl x'", False, "deny.copy_program", "PROGRAM"),
    ("COPY orders TO PROGRAM 'sh'", False, "deny.copy_program", "PROGRAM"),
    ("COPY orders TO '/tmp/orders.csv'", False, "deny.copy_file", "server files"),
    ("COPY orders FROM '/etc/passwd'", False, "deny.copy_file", "server files"),
    ("LOAD 'auto_explain'", False, "deny.load", "LOAD"),
    ("ALTER SYSTEM SET work_mem = '1GB'", False, "deny.alter_system", "ALTER SYSTEM"),
    ("IDENTIFY_SYSTEM", False, "deny.replication", "IDENTIFY_SYSTEM"),
    ("START_REPLICATION SLOT s LOGICAL 0/0", False, "deny.replication", "START_REPLICATION"),
    ("VACUUM orders", False, "deny.utility", "VACUUM"),
    ("ANALYZE orders", False, "deny.utility", "ANALYZE"),
    ("LOCK TABLE orders", False, "deny.utility", "LOCK"),
    ("CHECKPOINT", False, "deny.utility", "CHECKPOINT"),
    ("NOTIFY jobs", False, "deny.notify", "NOTIFY"),
    ("LISTEN jobs", False, "deny.listen", "may not LISTEN on jobs"),
    ("UNLISTEN *", True, "default.listen", ""),
    ("UNLISTEN jobs", True, "default.listen", ""),
    ("DISCARD ALL", True, "default.utility", ""),
    ("DEALLOCATE ALL", True, "default.utility", ""),
    ("FETCH 10 FROM c", True, "default.cursor", ""),
    ("CLOSE c", True, "default.cursor", ""),
    ("GRANT SELECT ON orders TO agent", False, "deny.role", "GRANT"),
    ("REVOKE ALL ON orders FROM app", False, "deny.role", "REVOKE"),
    ("CREATE ROLE evil SUPERUSER", False, "deny.role", "CREATE ROLE"),
    ("ALTER USER app PASSWORD 'x'", False, "deny.role", "ALTER USER"),
    ("DROP ROLE app", False, "deny.role", "DROP ROLE"),
    # unknown
    ("SELEC 1", False, "deny.unknown", "SELEC"),
    ("CREATE EXTENSION dblink", False, "deny.unknown", "CREATE"),
    ("SELECT 'unterminated", False, "deny.unknown", "unterminated"),
    ("SELECT nextval(name) FROM t", False, "deny.unknown", "literal"),
    ("EXECUTE q", False, "deny.execute", "not prepared"),
]


@pytest.mark.parametrize(
    ("sql", "allowed", "rule", "reason"), CASES, ids=[c[0][:60] for c in CASES]
)
def test_decide_table(sql, allowed, rule, reason):
    (classified,) = classify(sql)
    decision = decide(classified, GRANT)
    assert isinstance(decision, Decision)
    assert (decision.allowed, decision.rule) == (allowed, rule), (classified, decision)
    assert reason in decision.reason, decision


def test_unknown_scope_allows_only_unknown():
    for sql in ("SELEC 1", "CREATE EXTENSION x", "EXECUTE q", "SELECT 'unterminated"):
        d = decide(classify(sql)[0], UNKNOWN_OK)
        assert d.allowed and d.rule == "scope.unknown", (sql, d)
    # unknown:* grants nothing else
    for sql in (
        "UPDATE orders SET a = 1",
        "SET ROLE postgres",
        "DO $$ $$",
        "GRANT x TO y",
        "SELECT pg_read_file('x')",
        "COPY t FROM PROGRAM 'x'",
    ):
        assert not decide(classify(sql)[0], UNKNOWN_OK).allowed, sql


def test_read_only_grant_denies_every_write_kind():
    writes = [
        "INSERT INTO a VALUES (1)",
        "UPDATE a SET x = 1",
        "DELETE FROM a",
        "TRUNCATE a",
        "MERGE INTO a USING b ON true WHEN MATCHED THEN DELETE",
        "COPY a FROM STDIN",
        "CREATE TABLE a2 (x int)",
        "DROP TABLE a",
        "ALTER TABLE a ADD COLUMN y int",
        "SELECT * INTO a3 FROM a",
        "SELECT nextval('a_seq')",
        "SELECT * FROM a FOR UPDATE",
        "EXPLAIN ANALYZE DELETE FROM a",
        "WITH d AS (DELETE FROM a RETURNING 1) SELECT 1",
        "PREPARE p AS DELETE FROM a",
        "COMMENT ON TABLE a IS 'x'",
    ]
    for sql in writes:
        d = decide(classify(sql)[0], READ_ONLY)
        assert not d.allowed, (sql, d)
        assert d.rule.startswith("scope."), (sql, d)


def test_classified_built_by_hand():
    c = Classified(
        "x", StatementClass.READ, "SELECT", frozenset({"public.orders"}), frozenset(), frozenset()
    )
    assert decide(c, GRANT).allowed
    c = Classified(
        "x",
        StatementClass.WRITE,
        "INSERT",
        frozenset(),
        frozenset({"public.orders"}),
        frozenset(),
        "",
        frozenset({("insert", "public.orders")}),
    )
    assert decide(c, GRANT).allowed
    c = Classified(
        "x", StatementClass.READ, "SELECT", frozenset({"not a name"}), frozenset(), frozenset()
    )
    assert not decide(c, GRANT).allowed


# -- startup parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "refused"),
    [
        ({"user": "agent", "database": "prod"}, None),
        (
            {
                "user": "agent",
                "database": "prod",
                "application_name": "psql",
                "client_encoding": "UTF8",
                "DateStyle": "ISO, MDY",
                "TimeZone": "UTC",
                "IntervalStyle": "postgres",
                "extra_float_digits": "3",
            },
            None,
        ),
        ({"user": "a", "DATESTYLE": "ISO"}, None),
        ({"user": "a", "fallback_application_name": "x"}, None),
        ({"user": "a", "statement_timeout": "0"}, None),
        ({"user": "a", "options": "-c statement_timeout=5s --lock-timeout=1s"}, None),
        ({"user": "a", "options": "-c intervalstyle=postgres_verbose"}, None),
        ({"user": "a", "options": "-c standard_conforming_strings=on"}, None),
        ({"user": "a", "options": "-c standard_conforming_strings=off"}, "standard_conforming_strings"),
        ({"user": "a", "options": "-csearch_path=evil"}, "search_path"),
        ({"user": "a", "options": "--search-path=evil"}, "search_path"),
        ({"user": "a", "options": r"-c application_name=a\ -c\ search_path=x"}, None),
        ({"user": "a", "options": "-c role=postgres"}, "role"),
        ({"user": "a", "options": "-c session_authorization=postgres"}, "session_authorization"),
        ({"user": "a", "options": "-c client_encoding=SJIS"}, "SJIS"),
        ({"user": "a", "options": "-c client_encoding=LATIN1"}, "LATIN1"),
        ({"user": "a", "options": "-c session_preload_libraries=x"}, "session_preload_libraries"),
        ({"user": "a", "options": "-c default_transaction_read_only=on"}, "default_transaction_read_only"),
        ({"user": "a", "options": "-F"}, "-F"),
        ({"user": "a", "options": "-c"}, "-c"),
        ({"user": "a", "options": "-c x"}, '"x"'),
        ({"user": "a", "client_encoding": "'utf-8'"}, None),
        ({"user": "a", "options": "-c search_path=evil"}, "search_path"),
        ({"user": "a", "search_path": "evil"}, "search_path"),
        ({"user": "a", "Search_Path": "evil"}, "Search_Path"),
        ({"user": "a", "role": "postgres"}, "role"),
        ({"user": "a", "replication": "database"}, "replication"),
        ({"user": "a", "replication": "true"}, "replication"),
        ({"user": "a", "work_mem": "1GB"}, "work_mem"),
        ({"user": "a", "session_authorization": "postgres"}, "session_authorization"),
        ({"user": "a", "standard_conforming_strings": "off"}, "standard_conforming_strings"),
        ({"user": "a", "client_encoding": "SJIS"}, "SJIS"),
        ({"user": "a", "_pq_.foo": "1"}, "_pq_.foo"),
    ],
)
def test_check_startup_params(params, refused):
    text = check_startup_params(params)
    if refused is None:
        assert text is None
    else:
        assert text is not None and refused in text and text.startswith("pgwitness:")


def test_options_become_plain_parameters_and_explicit_ones_win():
    from policy.startup import grant_startup_params, split_options

    assert split_options(r" -c a=x\ y  -cb=\\z ") == ["-c", r"a=x y", "-cb=\\z"]
    out = grant_startup_params(
        {"options": r"-c DateStyle=German --lock-timeout=1s -c application_name=a\ b", "DateStyle": "ISO"},
        parse_scopes("read:public.t"),
    )
    assert out == {"lock_timeout": "1s", "application_name": "a b", "DateStyle": "ISO"}
    granted = parse_scopes("read:public.t set:work_mem")
    assert check_startup_params({"options": "-c work_mem=1GB"}, granted) is None
    assert "work_mem" in check_startup_params({"options": "-c work_mem=1GB"})
