"""classify(): one row per statement — (sql, class, reads, writes, functions)."""

from __future__ import annotations

import pytest

from policy.classify import Classified, StatementClass, classify
from policy.lexer import fingerprint_statements, lex

R = StatementClass.READ
W = StatementClass.WRITE
D = StatementClass.DDL
ROLE = StatementClass.ROLE
F = StatementClass.FUNCTION
SET = StatementClass.SESSION_SET
TX = StatementClass.TRANSACTION
U = StatementClass.UTILITY
UNK = StatementClass.UNKNOWN

_ = ()  # no relations / functions

# (sql, class, reads, writes, functions)
CASES: list[tuple[str, StatementClass, tuple, tuple, tuple]] = [
    # --- plain reads --------------------------------------------------------------------
    ("SELECT 1", R, _, _, _),
    ("select * from orders", R, ("public.orders",), _, _),
    ("SELECT * FROM public.orders", R, ("public.orders",), _, _),
    ("SELECT * FROM Sales.Orders", R, ("sales.orders",), _, _),
    ('SELECT * FROM "Sales"."Orders"', R, ('"Sales"."Orders"',), _, _),
    ('SELECT * FROM "orders"', R, ("public.orders",), _, _),
    ('SELECT * FROM "My Schema"."odd""name"', R, ('"My Schema"."odd""name"',), _, _),
    ("SELECT * FROM café", R, ('public."café"',), _, _),
    ("SELECT * FROM CAFÉ", R, ('public."cafÉ"',), _, _),
    ("SELECT * FROM mydb.s.t", R, ("s.t",), _, _),
    ("TABLE orders", R, ("public.orders",), _, _),
    ("table s.orders", R, ("s.orders",), _, _),
    ("VALUES (1), (2)", R, _, _, _),
    ("(SELECT 1) UNION (SELECT a FROM x)", R, ("public.x",), _, _),
    ("SELECT a FROM t UNION SELECT b FROM u", R, ("public.t", "public.u"), _, _),
    ("SELECT a FROM t INTERSECT SELECT b FROM u", R, ("public.t", "public.u"), _, _),
    ("SELECT a FROM t EXCEPT ALL SELECT b FROM u", R, ("public.t", "public.u"), _, _),
    (
        "SELECT o.id FROM orders o JOIN customers c ON c.id = o.cid",
        R,
        ("public.orders", "public.customers"),
        _,
        _,
    ),
    (
        "SELECT * FROM a LEFT JOIN b USING (id) CROSS JOIN c",
        R,
        ("public.a", "public.b", "public.c"),
        _,
        _,
    ),
    ("SELECT * FROM a NATURAL JOIN s.b", R, ("public.a", "s.b"), _, _),
    ("SELECT a FROM t AS x(a)", R, ("public.t",), _, _),
    ("SELECT (SELECT max(v) FROM u) FROM t", R, ("public.t", "public.u"), _, ("max",)),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", R, ("public.t", "public.u"), _, _),
    (
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
        R,
        ("public.t", "public.u"),
        _,
        _,
    ),
    ("SELECT * FROM t WHERE a = ANY(SELECT b FROM v)", R, ("public.t", "public.v"), _, _),
    ("SELECT * FROM (SELECT * FROM inner_t) sub", R, ("public.inner_t",), _, _),
    (
        "SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.x = t.x) l",
        R,
        ("public.t", "public.u"),
        _,
        _,
    ),
    (
        "SELECT * FROM t ORDER BY (SELECT count(*) FROM u)",
        R,
        ("public.t", "public.u"),
        _,
        ("count",),
    ),
    ("SELECT CASE WHEN EXISTS (SELECT 1 FROM flags) THEN 1 END", R, ("public.flags",), _, _),
    (
        "SELECT count(*) FROM t GROUP BY a HAVING count(*) > (SELECT 1 FROM h)",
        R,
        ("public.t", "public.h"),
        _,
        ("count",),
    ),
    ("SELECT * FROM generate_series(1, 3) g", R, _, _, ("generate_series",)),
    ("SELECT * FROM unnest(ARRAY[1, 2]) u", R, _, _, ("unnest",)),
    ("SELECT * FROM ROWS FROM (json_each('{}')) j", R, _, _, ("json_each",)),
    ("SELECT lower(name), upper(name) FROM people", R, ("public.people",), _, ("lower", "upper")),
    ("SELECT jsonb_build_object('a', 1)", R, _, _, ("jsonb_build_object",)),
    # the calls are PostgreSQL's reading: CURRENT_DATE, COALESCE and ROW are syntax
    ("SELECT now(), current_date", R, _, _, ("now",)),
    ("SELECT coalesce(a, b) FROM t", R, ("public.t",), _, _),
    ("SELECT a::int, CAST(b AS text) FROM t", R, ("public.t",), _, _),
    ("SELECT my_fn(1)", R, _, _, ("public.my_fn",)),
    ("SELECT s.my_fn(1)", R, _, _, ("s.my_fn",)),
    ("SELECT * FROM s.my_fn(1)", R, _, _, ("s.my_fn",)),
    ("SELECT * FROM pg_catalog.pg_ls_dir('.')", R, _, _, ("pg_ls_dir",)),
    ("SELECT * FROM t JOIN LATERAL s.f(t.a) ON true", R, ("public.t",), _, ("s.f",)),
    ("SELECT (s.f(1)).field", R, _, _, ("s.f",)),
    ("CREATE TABLE t (a int DEFAULT s.f())", D, _, ("public.t",), ("s.f",)),
    ('SELECT "MyFn"(1)', R, _, _, ('public."MyFn"',)),
    ("SELECT pg_catalog.lower('A')", R, _, _, ("lower",)),
    ("SELECT pg_sleep(1)", R, _, _, ("pg_sleep",)),
    ("SELECT pg_read_file('/etc/passwd')", R, _, _, ("pg_read_file",)),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", R, _, _, ("pg_read_file",)),
    ("SELECT query_to_xml('select * from secret', true, true, '')", R, _, _, ("query_to_xml",)),
    ("SELECT set_config('role', 'admin', false)", R, _, _, ("set_config:role",)),
    ("SELECT set_config('JIT', $1, false)", R, _, _, ("set_config:jit",)),
    # a setting a parameter names: decided at each Bind (test_s28_settings_by_parameter.py)
    ("SELECT set_config($1, 'x', false)", R, _, _, ("set_config:$",)),
    ("SELECT ROW(1, 'a')::text", R, _, _, _),
    ("SELECT dblink('host=x', 'select 1')", R, _, _, ("dblink",)),
    # one backend: decided on its pid (test_s29_signal_backends.py)
    ("SELECT pg_terminate_backend(123)", R, _, _, ("pg_terminate_backend:123",)),
    ("SELECT current_setting('work_mem')", R, _, _, ("current_setting:work_mem",)),
    ("SELECT current_setting('w' || 'ork_mem')", R, _, _, ("current_setting",)),
    ("SELECT * FROM t WHERE a = $1 AND b = $2", R, ("public.t",), _, _),
    ("SELECT t.oid FROM pg_type t WHERE t.oid = any($1::oid[])", R, ("pg_catalog.pg_type",), _, _),
    ("SELECT '{1}'::regclass[]", UNK, _, _, _),
    ("SELECT * FROM t FOR UPDATE", R, ("public.t",), ("public.t",), _),
    (
        "SELECT * FROM t o JOIN u ON true FOR SHARE OF o",
        R,
        ("public.t", "public.u"),
        ("public.t", "public.u"),
        _,
    ),
    # --- catalogs -----------------------------------------------------------------------
    ("SELECT * FROM pg_class", R, ("pg_catalog.pg_class",), _, _),
    (
        "SELECT * FROM pg_catalog.pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace",
        R,
        ("pg_catalog.pg_type", "pg_catalog.pg_namespace"),
        _,
        _,
    ),
    ("SELECT * FROM information_schema.tables", R, ("information_schema.tables",), _, _),
    ("SELECT rolpassword FROM pg_authid", R, ("pg_catalog.pg_authid",), _, _),
    ("SELECT * FROM PG_SHADOW", R, ("pg_catalog.pg_shadow",), _, _),
    ("SELECT * FROM public.pg_custom", R, ("public.pg_custom",), _, _),
    ("SELECT 'orders'::regclass", R, ("public.orders",), _, _),
    ("SELECT 'pg_class'::regclass::oid", R, ("pg_catalog.pg_class",), _, _),
    ("SELECT 's.t'::regclass", R, ("s.t",), _, _),
    ("SELECT 'lower'::regproc", R, _, _, _),
    # --- CTEs -----------------------------------------------------------------------------
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", R, ("public.t",), _, _),
    ("WITH t AS (SELECT 1) SELECT * FROM t", R, _, _, _),
    ("WITH t AS (SELECT 1) SELECT * FROM t, (SELECT * FROM t) y", R, _, _, _),
    ("SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) x, t", R, ("public.t",), _, _),
    ("WITH a AS (SELECT * FROM a) SELECT * FROM a", R, ("public.a",), _, _),
    ("WITH RECURSIVE a AS (SELECT 1 UNION ALL SELECT n + 1 FROM a) SELECT * FROM a", R, _, _, _),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", R, ("public.b",), _, _),
    ("WITH b AS (SELECT 1), a AS (SELECT * FROM b) SELECT * FROM a", R, _, _, _),
    ('WITH "T" AS (SELECT 1) SELECT * FROM t', R, ("public.t",), _, _),
    ("WITH x AS (SELECT 1) SELECT * FROM public.x", R, ("public.x",), _, _),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W, ("public.t",), ("public.t",), _),
    (
        "WITH u AS (UPDATE t SET a = 1 RETURNING id) SELECT count(*) FROM u",
        W,
        ("public.t",),
        ("public.t",),
        ("count",),
    ),
    (
        "WITH i AS (INSERT INTO log (m) VALUES ('x') RETURNING id) SELECT * FROM i",
        W,
        ("public.log",),
        ("public.log",),
        _,
    ),
    (
        "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
        W,
        ("public.a",),
        ("public.a", "public.b"),
        _,
    ),
    (
        "WITH src AS (SELECT * FROM staging) INSERT INTO t SELECT * FROM src",
        W,
        ("public.staging",),
        ("public.t",),
        _,
    ),
    # --- DML ------------------------------------------------------------------------------
    ("INSERT INTO orders (id) VALUES (1)", W, _, ("public.orders",), _),
    ("INSERT INTO s.orders VALUES (1) RETURNING *", W, ("s.orders",), ("s.orders",), _),
    ("INSERT INTO t SELECT * FROM u", W, ("public.u",), ("public.t",), _),
    (
        "INSERT INTO t (a) SELECT a FROM u WHERE b IN (SELECT b FROM v)",
        W,
        ("public.u", "public.v"),
        ("public.t",),
        _,
    ),
    ("INSERT INTO t VALUES ((SELECT max(id) FROM u))", W, ("public.u",), ("public.t",), ("max",)),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a",
        W,
        ("public.t",),
        ("public.t",),
        _,
    ),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", W, _, ("public.t",), _),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO NOTHING", W, ("public.t",), ("public.t",), _),
    (
        "INSERT INTO t (id) VALUES (nextval('t_id_seq'))",
        W,
        _,
        ("public.t", "public.t_id_seq"),
        ("nextval",),
    ),
    ("UPDATE orders SET total = 0 WHERE id = 1", W, ("public.orders",), ("public.orders",), _),
    ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", W, ("public.t", "public.u"), ("public.t",), _),
    ("UPDATE t SET a = (SELECT max(a) FROM u)", W, ("public.t", "public.u"), ("public.t",), ("max",)),
    (
        "UPDATE t SET a = 1 WHERE id IN (SELECT id FROM u) RETURNING *",
        W,
        ("public.t", "public.u"),
        ("public.t",),
        _,
    ),
    ("DELETE FROM t WHERE id = 1", W, ("public.t",), ("public.t",), _),
    # a write reading its target's rows reads it; one reading nothing of it does not
    ("UPDATE t SET a = 1, b = DEFAULT", W, _, ("public.t",), _),
    ("UPDATE t SET a = 1 WHERE CURRENT OF c", W, _, ("public.t",), _),
    ("UPDATE t SET a[b] = 1", W, ("public.t",), ("public.t",), _),
    ("WITH t AS (SELECT 1) UPDATE t SET a = 1 WHERE b = 2", W, ("public.t",), ("public.t",), _),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = t.a + 1", W, ("public.t",), ("public.t",), _),
    ("MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)", W, ("public.s",), ("public.t",), _),
    ("DELETE FROM t USING u WHERE t.id = u.id", W, ("public.t", "public.u"), ("public.t",), _),
    ("DELETE FROM ONLY s.t WHERE EXISTS (SELECT 1 FROM v)", W, ("public.v", "s.t"), ("s.t",), _),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a "
        "WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)",
        W,
        ("public.s", "public.t"),
        ("public.t",),
        _,
    ),
    (
        "MERGE INTO t USING (SELECT * FROM src) s ON t.id = s.id WHEN MATCHED THEN DELETE",
        W,
        ("public.src", "public.t"),
        ("public.t",),
        _,
    ),
    ("TRUNCATE t", W, _, ("public.t",), _),
    ("TRUNCATE TABLE t, s.u", W, _, ("public.t", "s.u"), _),
    ("SELECT nextval('s')", W, _, ("public.s",), ("nextval",)),
    ("SELECT setval('x.s', 10)", W, _, ("x.s",), ("setval",)),
    ("SELECT nextval('\"Seq\"'::regclass)", W, _, ('public."Seq"',), ("nextval",)),
    ("SELECT currval('s')", R, ("public.s",), _, ("currval",)),
    # --- DDL ------------------------------------------------------------------------------
    ("CREATE TABLE t (id int)", D, _, ("public.t",), _),
    ("CREATE TABLE s.t (id int REFERENCES u(id))", D, ("public.u",), ("s.t",), _),
    ("CREATE TABLE t2 (LIKE t)", D, ("public.t",), ("public.t2",), _),
    ("CREATE TABLE p1 PARTITION OF t FOR VALUES IN (1)", D, _, ("public.p1", "public.t"), _),
    ("CREATE TABLE c (a int) INHERITS (s.t)", D, _, ("public.c", "s.t"), _),
    ("CREATE TEMP TABLE scratch (a int)", D, _, ("pg_temp.scratch",), _),
    ("CREATE TABLE x AS SELECT * FROM t", D, ("public.t",), ("public.x",), _),
    (
        "CREATE TABLE x AS WITH c AS (SELECT * FROM t) SELECT * FROM c",
        D,
        ("public.t",),
        ("public.x",),
        _,
    ),
    ("SELECT * INTO newt FROM t", D, ("public.t",), ("public.newt",), _),
    ("SELECT * INTO TEMP newt FROM t", D, ("public.t",), ("pg_temp.newt",), _),
    ("CREATE VIEW v AS SELECT * FROM t", D, ("public.t",), ("public.v",), _),
    (
        "CREATE OR REPLACE VIEW s.v AS SELECT a FROM t JOIN u ON true",
        D,
        ("public.t", "public.u"),
        ("s.v",),
        _,
    ),
    ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", D, ("public.t",), ("public.mv",), _),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t WITH NO DATA",
        D,
        ("public.t",),
        ("public.mv",),
        _,
    ),
    ("CREATE INDEX i ON t (a)", D, _, ("public.t",), _),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON s.t (a)", D, ("s.t",), ("s.t",), _),
    # DDL evaluating an expression or a check over the existing rows reads them
    ("CREATE INDEX i ON t ((a::int))", D, ("public.t",), ("public.t",), _),
    ("CREATE INDEX i ON t (a) WHERE b > 0", D, ("public.t",), ("public.t",), _),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)", D, ("public.t",), ("public.t",), _),
    ("ALTER TABLE t ALTER COLUMN a TYPE int USING a::int", D, ("public.t",), ("public.t",), _),
    ("ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a) STORED", D, ("public.t",), ("public.t",), _),
    ("ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 0", D, _, ("public.t",), _),
    ("CREATE SEQUENCE s", D, _, ("public.s",), _),
    ("CREATE SCHEMA s", D, _, ("s.*",), _),
    ("CREATE FUNCTION f() RETURNS int AS $$ select 1 $$ LANGUAGE sql", D, _, ("public.f",), _),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        D,
        ("public.t",),  # the trigger's function is handed the rows: a read of t
        ("public.t",),
        ("public.f",),
    ),
    ("ALTER TABLE t ADD COLUMN c int", D, _, ("public.t",), _),
    ("ALTER TABLE s.t RENAME TO u", D, _, ("s.t", "s.u"), _),
    (
        "ALTER TABLE t ALTER COLUMN id SET DEFAULT nextval('t_seq')",
        D,
        _,
        ("public.t", "public.t_seq"),
        ("nextval",),
    ),
    ("DROP TABLE t", D, _, ("public.t",), _),
    ("DROP TABLE IF EXISTS t, s.u", D, _, ("public.t", "s.u"), _),
    ("DROP TRIGGER tr ON s.t", D, _, ("s.t",), _),
    ("DROP VIEW v", D, _, ("public.v",), _),
    ("DROP INDEX i", D, _, ("public.i",), _),
    ("DROP SCHEMA s", D, _, ("s.*",), _),
    ("DROP SCHEMA s CASCADE", UNK, _, _, _),
    ("DROP TABLE t CASCADE", UNK, _, _, _),
    ("TRUNCATE t CASCADE", UNK, _, _, _),
    ("DROP FUNCTION f(int)", D, _, ("public.f",), _),
    ("COMMENT ON TABLE t IS 'x'", D, _, ("public.t",), _),
    ("COMMENT ON COLUMN s.t.c IS 'x'", D, _, ("s.t",), _),
    ("REFRESH MATERIALIZED VIEW mv", D, _, ("public.mv",), _),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv WITH NO DATA", D, _, ("s.mv",), _),
    # --- roles ----------------------------------------------------------------------------
    ("GRANT SELECT ON t TO bob", ROLE, _, _, _),
    ("REVOKE ALL ON t FROM bob", ROLE, _, _, _),
    ("GRANT admin TO bob", ROLE, _, _, _),
    ("CREATE ROLE bob LOGIN PASSWORD 'x'", ROLE, _, _, _),
    ("CREATE USER bob", ROLE, _, _, _),
    ("ALTER ROLE bob SUPERUSER", ROLE, _, _, _),
    ("ALTER USER bob WITH PASSWORD 'x'", ROLE, _, _, _),
    ("DROP ROLE bob", ROLE, _, _, _),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", ROLE, _, _, _),
    ("REASSIGN OWNED BY a TO b", ROLE, _, _, _),
    ("DROP OWNED BY a", ROLE, _, _, _),
    # --- transactions -----------------------------------------------------------------
    ("BEGIN", TX, _, _, _),
    ("begin isolation level serializable, read only", TX, _, _, _),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ", TX, _, _, _),
    ("COMMIT", TX, _, _, _),
    ("COMMIT AND CHAIN", TX, _, _, _),
    ("END", TX, _, _, _),
    ("ROLLBACK", TX, _, _, _),
    ("ABORT", TX, _, _, _),
    ("SAVEPOINT sp1", TX, _, _, _),
    ("ROLLBACK TO SAVEPOINT sp1", TX, _, _, _),
    ("RELEASE SAVEPOINT sp1", TX, _, _, _),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", TX, _, _, _),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", TX, _, _, _),
    ("SET CONSTRAINTS ALL DEFERRED", TX, _, _, _),
    ("PREPARE TRANSACTION 'x'", U, _, _, _),
    ("COMMIT PREPARED 'x'", U, _, _, _),
    ("ROLLBACK PREPARED 'x'", U, _, _, _),
    # --- session settings -------------------------------------------------------------
    ("SET application_name = 'agent'", SET, _, _, _),
    ("SET statement_timeout TO 5000", SET, _, _, _),
    ("SET LOCAL lock_timeout = '1s'", SET, _, _, _),
    ("SET SESSION DateStyle TO ISO, MDY", SET, _, _, _),
    ("SET TIME ZONE 'UTC'", SET, _, _, _),
    ("SET search_path TO evil, public", SET, _, _, _),
    ("SET SCHEMA 'evil'", SET, _, _, _),
    ('SET "search_path" = evil', SET, _, _, _),
    ("SET ROLE admin", SET, _, _, _),
    ("SET SESSION AUTHORIZATION admin", SET, _, _, _),
    ("SET role = 'admin'", SET, _, _, _),
    ("SET work_mem = '1GB'", SET, _, _, _),
    ("SET myext.flag = on", SET, _, _, _),
    ("SET NAMES 'UTF8'", SET, _, _, _),
    ("RESET ALL", SET, _, _, _),
    ("RESET search_path", SET, _, _, _),
    ("SHOW work_mem", SET, _, _, _),
    ("SHOW TRANSACTION ISOLATION LEVEL", SET, _, _, _),
    ("SHOW ALL", SET, _, _, _),
    # --- functions / code -------------------------------------------------------------
    ("DO $$ BEGIN PERFORM 1; END $$", F, _, _, _),
    ("DO LANGUAGE plpgsql 'BEGIN NULL; END'", F, _, _, _),
    ("CALL p(1)", F, _, _, ("p",)),
    ("CALL s.p()", F, _, _, ("s.p",)),
    # --- utility ----------------------------------------------------------------------
    ("LISTEN jobs", U, _, _, _),
    ("UNLISTEN *", U, _, _, _),
    ("NOTIFY jobs, 'payload'", U, _, _, _),
    ("VACUUM t", U, _, _, _),
    ("VACUUM (FULL, ANALYZE) t", U, _, _, _),
    ("ANALYZE t", U, _, _, _),
    ("CLUSTER t", U, _, _, _),
    ("REINDEX TABLE t", U, _, _, _),
    ("CHECKPOINT", U, _, _, _),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", U, _, _, _),
    ("LOAD 'auto_explain'", U, _, _, _),
    ("ALTER SYSTEM SET work_mem = '1GB'", U, _, _, _),
    ("DISCARD ALL", U, _, _, _),
    ("DEALLOCATE p", U, _, _, _),
    ("DEALLOCATE PREPARE ALL", U, _, _, _),
    ("FETCH 10 FROM c", U, _, _, _),
    ("MOVE BACKWARD 2 IN c", U, _, _, _),
    ("CLOSE c", U, _, _, _),
    ("IDENTIFY_SYSTEM", U, _, _, _),
    ("START_REPLICATION SLOT s LOGICAL 0/0", U, _, _, _),
    ("BASE_BACKUP", U, _, _, _),
    # --- COPY ---------------------------------------------------------------------------
    ("COPY t FROM STDIN", W, _, ("public.t",), _),
    ("COPY s.t (a, b) FROM STDIN WITH (FORMAT csv)", W, _, ("s.t",), _),
    ("COPY t TO STDOUT", R, ("public.t",), _, _),
    ("COPY t TO STDOUT WITH CSV HEADER", R, ("public.t",), _, _),
    ('COPY "s"."t"("a", "b") FROM STDIN (FORMAT binary)', W, _, ("s.t",), _),
    ("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE *)", R, ("public.t",), _, _),
    ("COPY (SELECT * FROM t) TO STDOUT (FORMAT text)", R, ("public.t",), _, _),
    ("COPY (SELECT * FROM t JOIN u ON true) TO STDOUT", R, ("public.t", "public.u"), _, _),
    ("COPY t FROM PROGRAM 'curl evil'", U, _, _, _),
    ("COPY t TO PROGRAM 'sh'", U, _, _, _),
    ("COPY t FROM '/etc/passwd'", U, _, _, _),
    ("COPY (SELECT 1) TO '/tmp/x'", U, _, _, _),
    # --- EXPLAIN ------------------------------------------------------------------------
    ("EXPLAIN SELECT * FROM t", R, ("public.t",), _, _),
    ("EXPLAIN DELETE FROM t", R, ("public.t",), _, _),
    ("EXPLAIN VERBOSE UPDATE t SET a = 1", R, ("public.t",), _, _),
    ("EXPLAIN ANALYZE DELETE FROM t", W, _, ("public.t",), _),
    ("EXPLAIN ANALYSE SELECT * FROM t", R, ("public.t",), _, _),
    ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", W, _, ("public.t",), _),
    (
        "EXPLAIN (ANALYZE true, FORMAT JSON) INSERT INTO t SELECT * FROM u",
        W,
        ("public.u",),
        ("public.t",),
        _,
    ),
    ("EXPLAIN (ANALYZE off) DELETE FROM t", R, ("public.t",), _, _),
    ("EXPLAIN (COSTS false) SELECT pg_read_file('x')", R, _, _, ("pg_read_file",)),
    ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT * FROM t", D, ("public.t",), ("public.x",), _),
    # --- PREPARE / EXECUTE / DECLARE --------------------------------------------------
    ("PREPARE q AS SELECT * FROM t WHERE id = $1", R, ("public.t",), _, _),
    ("PREPARE q (int, text) AS UPDATE t SET b = $2 WHERE id = $1", W, ("public.t",), ("public.t",), _),
    ("EXECUTE q", UNK, _, _, _),
    ("EXECUTE q(1, 'x')", UNK, _, _, _),
    ("EXECUTE q(pg_read_file('x'))", UNK, _, _, ("pg_read_file",)),
    ("DECLARE c CURSOR FOR SELECT * FROM t", R, ("public.t",), _, _),
    ("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM s.t", R, ("s.t",), _, _),
    # --- comments, quoting, dollar quotes -----------------------------------------------
    ("/* leading */ SELECT * FROM t -- trailing", R, ("public.t",), _, _),
    ("SELECT /* DROP TABLE x; */ * FROM t", R, ("public.t",), _, _),
    ("SELECT 1 /* nested /* inner */ ; DELETE FROM x; */ FROM t", R, ("public.t",), _, _),
    ("SELECT '; DROP TABLE x; --' FROM t", R, ("public.t",), _, _),
    ("SELECT 'it''s; DELETE FROM x' FROM t", R, ("public.t",), _, _),
    ("SELECT E'\\'; DELETE FROM x; --' FROM t", R, ("public.t",), _, _),
    ("SELECT $$ ; DELETE FROM x; $$ FROM t", R, ("public.t",), _, _),
    ("SELECT $tag$ $$ ; DELETE FROM x; $$ $tag$ FROM t", R, ("public.t",), _, _),
    ('SELECT "a;b" FROM "t;u"', R, ('public."t;u"',), _, _),
    ("SELECT '--' AS x FROM t", R, ("public.t",), _, _),
    ("SELECT 1 -- ; DELETE FROM x\nFROM t", R, ("public.t",), _, _),
    ("SELECT 'a'\n'b' FROM t", R, ("public.t",), _, _),
    ("SELECT interval '1 day', date '2024-01-01', x'1F', b'101' FROM t", R, ("public.t",), _, _),
    # --- unknown / unparseable ----------------------------------------------------------
    ("SELEC 1", UNK, _, _, _),
    ("SELECT * FROM", UNK, _, _, _),
    ("SELECT 'unterminated", UNK, _, _, _),
    ("SELECT /* unterminated", UNK, _, _, _),
    ("SELECT $$ unterminated", UNK, _, _, _),
    ('SELECT * FROM "unterminated', UNK, _, _, _),
    ("SELECT U&'\\0041' FROM t", UNK, _, _, _),
    ('SELECT * FROM U&"\\0074"', UNK, _, _, _),
    ("CREATE EXTENSION dblink", UNK, _, _, _),
    ("CREATE DATABASE d", UNK, _, _, _),
    ("CREATE USER MAPPING FOR bob SERVER s OPTIONS (password 'x')", UNK, _, _, _),
    ("SECURITY LABEL ON TABLE t IS 'x'", UNK, _, _, _),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y", UNK, _, _, _),
    ("SELECT nextval(seq_name) FROM t", UNK, _, _, _),
    ("SELECT 1 \x01", UNK, _, _, _),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1", UNK, _, _, _),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", W, ("public.t",), ("public.t",), _),
]


@pytest.mark.parametrize(
    ("sql", "cls", "reads", "writes", "functions"), CASES, ids=[c[0][:60] for c in CASES]
)
def test_classify_table(sql, cls, reads, writes, functions):
    result = classify(sql)
    assert len(result) == 1, result
    c = result[0]
    assert c.cls is cls, c
    if cls is not UNK or reads or functions:
        assert c.reads == frozenset(reads), c
        assert c.writes == frozenset(writes), c
        assert c.functions == frozenset(functions), c
    assert c.writes == frozenset(r for _, r in c.write_ops)


def test_table_is_big_enough():
    assert len(CASES) >= 150


# (sql, write_ops)
OPS = [
    ("INSERT INTO t VALUES (1)", {("insert", "public.t")}),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
        {("insert", "public.t"), ("update", "public.t")},
    ),
    ("UPDATE t SET a = 1", {("update", "public.t")}),
    ("DELETE FROM t", {("delete", "public.t")}),
    ("TRUNCATE t", {("truncate", "public.t")}),
    ("COPY t FROM STDIN", {("insert", "public.t")}),
    ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", {("delete", "public.t")}),
    (
        "MERGE INTO t USING s ON true WHEN MATCHED THEN UPDATE SET a = 1 "
        "WHEN NOT MATCHED THEN INSERT VALUES (1)",
        {("update", "public.t"), ("insert", "public.t")},
    ),
    ("SELECT * FROM t FOR UPDATE", {("lock", "public.t")}),
    ("CREATE TABLE t (a int)", {("ddl", "public.t")}),
    ("SELECT nextval('s')", {("update", "public.s")}),
    ("EXPLAIN ANALYZE UPDATE t SET a = 1", {("update", "public.t")}),
    ("EXPLAIN UPDATE t SET a = 1", set()),
]


@pytest.mark.parametrize(("sql", "ops"), OPS, ids=[o[0][:50] for o in OPS])
def test_write_operations(sql, ops):
    assert classify(sql)[0].write_ops == frozenset(ops)


@pytest.mark.parametrize(
    ("sql", "command", "detail"),
    [
        ("SET search_path TO x", "SET", "search_path"),
        ("SET SCHEMA 'x'", "SET", "search_path"),
        ("SET ROLE admin", "SET", "role"),
        ("SET LOCAL ROLE admin", "SET LOCAL", "role"),
        ("SET SESSION AUTHORIZATION admin", "SET", "session_authorization"),
        ("SET TIME ZONE 'UTC'", "SET", "timezone"),
        ("SET TimeZone = 'UTC'", "SET", "timezone"),
        ('SET "Search_Path" = x', "SET", "search_path"),
        ("SET NAMES 'UTF8'", "SET", "client_encoding"),
        ("RESET ALL", "RESET", "all"),
        ("RESET ROLE", "RESET", "role"),
        ("SHOW search_path", "SHOW", "search_path"),
        ("COPY t FROM STDIN", "COPY", "from stdin"),
        ("COPY t TO STDOUT", "COPY", "to stdout"),
        ("COPY t FROM PROGRAM 'x'", "COPY", "from program"),
        ("COPY t TO '/tmp/f'", "COPY", "to file"),
        ("LISTEN Jobs", "LISTEN", "jobs"),
        ('LISTEN "Jobs"', "LISTEN", "Jobs"),
        ("PREPARE Q1 AS SELECT 1", "PREPARE", "q1"),
        ('EXECUTE "Q1"', "EXECUTE", "Q1"),
        ("DEALLOCATE ALL", "DEALLOCATE", "all"),
        ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN ANALYZE", "SELECT"),
        ("SELECT * FROM t FOR UPDATE", "SELECT", "FOR UPDATE/SHARE"),
    ],
)
def test_command_and_detail(sql, command, detail):
    c = classify(sql)[0]
    assert (c.command, c.detail) == (command, detail)


def test_unsafe_client_encoding_is_unknown():
    for sql in ("SET client_encoding = 'SJIS'", "SET NAMES 'gbk'", "SET client_encoding TO BIG5"):
        c = classify(sql)[0]
        assert c.cls is UNK and "multibyte" in c.detail, c


def test_unknown_detail_holds_parse_error():
    c = classify("SELECT * FROM")[0]
    assert c.cls is UNK and c.detail.startswith("parse error"), c


def test_multi_statement_split_and_text():
    result = classify("BEGIN; UPDATE t SET a = 1; SELECT * FROM u ; COMMIT;")
    assert [c.command for c in result] == ["BEGIN", "UPDATE", "SELECT", "COMMIT"]
    assert [c.sql for c in result] == ["BEGIN", "UPDATE t SET a = 1", "SELECT * FROM u", "COMMIT"]


def test_semicolon_hidden_in_literal_does_not_split():
    result = classify("SELECT 'a;b', $$;$$, E'\\';' FROM t; DELETE FROM x")
    assert [c.command for c in result] == ["SELECT", "DELETE"]
    assert result[1].writes == {"public.x"}


def test_nested_comment_hides_statement_like_postgres():
    # PostgreSQL nests block comments: the DELETE is inside the comment.
    assert [c.command for c in classify("SELECT 1 /* a /* b */ ; DELETE FROM x; */")] == ["SELECT"]
    # ...and a non-nesting reading would hide this DROP inside a string: we must see it.
    result = classify("/* /* */ ' */ DROP TABLE x; -- '")
    assert result[0].command == "DROP TABLE" and result[0].writes == {"public.x"}


def test_empty_statements_are_skipped():
    assert classify("") == ()
    assert classify(" ; ;; -- nothing\n /* */") == ()


def test_search_path_first_schema_resolves_unqualified_names():
    c = classify("SELECT * FROM orders JOIN pg_class ON true", search_path=("app",))[0]
    assert c.reads == {"app.orders", "pg_catalog.pg_class"}
    c = classify("SELECT my_fn()", search_path=("app",))[0]
    assert c.functions == {"app.my_fn"}


def test_several_search_path_schemas_make_every_candidate_count():
    # PostgreSQL takes the first schema where the name exists; we cannot know which.
    path = ("app", "public")
    c = classify("SELECT * FROM orders JOIN s.x ON true", search_path=path)[0]
    assert c.reads == {"app.orders", "public.orders", "s.x"}
    c = classify("UPDATE orders SET a = 1", search_path=path)[0]
    assert c.write_ops == {("update", "app.orders"), ("update", "public.orders")}
    c = classify("SELECT my_fn(), lower('A')", search_path=path)[0]
    assert c.functions == {"app.my_fn", "public.my_fn", "lower"}
    c = classify("SELECT nextval('s')", search_path=path)[0]
    assert c.writes == {"app.s", "public.s"}
    c = classify("REFRESH MATERIALIZED VIEW mv", search_path=path)[0]
    assert c.writes == {"app.mv", "public.mv"}
    c = classify("SELECT * FROM pg_class, pg_temp.t", search_path=path)[0]
    assert c.reads == {"pg_catalog.pg_class", "pg_temp.t"}


def test_long_identifiers_are_truncated_like_postgres():
    long = "a" * 70
    c = classify(f'SELECT * FROM {long}, "{"B" * 70}", s{"x" * 70}.t')[0]
    assert c.reads == {"public." + "a" * 63, 'public."' + "B" * 63 + '"', "s" + "x" * 62 + ".t"}
    assert classify(f"SELECT nextval('{long}')")[0].writes == {"public." + "a" * 63}
    # multibyte characters are never split
    c = classify('SELECT * FROM "' + "é" * 40 + '"')[0]
    assert c.reads == {'public."' + "é" * 31 + '"'}


def test_classified_is_frozen():
    c = classify("SELECT 1")[0]
    assert isinstance(c, Classified)
    with pytest.raises(AttributeError):
        c.cls = W  # type: ignore[misc]


def test_dangerous_functions_are_not_typed_by_sqlglot():
    from policy.classify import DANGEROUS_FUNCTIONS

    for name in sorted(DANGEROUS_FUNCTIONS):
        c = classify(f"SELECT {name}(a) FROM t")[0]
        assert name in c.functions, (name, c)


def test_fast_fingerprints_match_full_lexer():
    sql = (
        "SELECT a, 'x' FROM t WHERE b = 1.5 -- c\n; /* x */ UPDATE u SET v = $$q$$ WHERE w = E'\\''"
    )
    fast = fingerprint_statements(sql)
    full = [(s.sql, s.fingerprint, s.cacheable) for s in lex(sql)]
    assert fast == full
