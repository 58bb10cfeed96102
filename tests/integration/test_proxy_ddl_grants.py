"""Red-team round 7 (session 10): what a grant with a ``ddl`` scope on one schema, and no
execute scope nor read of the secret, can make PostgreSQL do. One route worked: a range
type names its ``subtype_diff`` (and ``canonical``) function as if it were a type, and a
GiST index over the type runs it (here, reading the secret into a cast error); such names
are now calls of those functions (``pgparse``, ``CreateRangeStmt``). The rest held and stay
as regression probes: views and materialized views of the secret, policies, rules,
partitions, foreign keys, sequences in defaults, *_to_xml in defaults, triggers, schema
elements, LIKE, statistics, publications, owner changes. (Writes through a permanent view
a ``ddl`` grant makes land in what it shows: documented in docs/policy.md.)
"""
from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.proxies import issue as grant_issue

pytestmark = pytest.mark.timeout(300)

AGENT = "e2e-ddl"
SCOPES = "read:public.r7_orders write:public.r7_orders ddl:r7app.*"
SCOPES_RW = "read:public.r7_orders,public.r7_ro write:public.r7_orders ddl:r7app.* read:r7app.* write:r7app.*"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA IF NOT EXISTS secret;
CREATE TABLE secret.r7_vault (id int PRIMARY KEY, s text);
INSERT INTO secret.r7_vault VALUES (7, 'TOPSECRET7');
CREATE SEQUENCE secret.r7_seq;
CREATE TABLE public.r7_orders (id int, note text);
CREATE TABLE public.r7_ro (id int, note text);
INSERT INTO public.r7_ro VALUES (1, 'orig');
CREATE TABLE public.r7_part (id int, note text) PARTITION BY LIST (id);
CREATE TABLE public.r7_part1 PARTITION OF public.r7_part FOR VALUES IN (1);
CREATE SCHEMA r7app;
CREATE TABLE public.r7_log (x text);
"""
TEARDOWN = """
DROP SCHEMA IF EXISTS r7app CASCADE;
DROP SCHEMA IF EXISTS r7app2 CASCADE;
DROP TABLE IF EXISTS secret.r7_vault CASCADE;
DROP SEQUENCE IF EXISTS secret.r7_seq CASCADE;
DROP TABLE IF EXISTS public.r7_orders CASCADE;
DROP TABLE IF EXISTS public.r7_ro CASCADE;
DROP TABLE IF EXISTS public.r7_part CASCADE;
DROP TABLE IF EXISTS public.r7_log CASCADE;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r7h", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        h.token_rw = grant_issue(h, agent=AGENT, task="R7HRW", scopes=SCOPES_RW)[1]
        yield h


def q(pg, sql):
    return pg.psql(sql, db="app").strip()


def reset(pg):
    pg.psql("DROP SCHEMA IF EXISTS r7app CASCADE; DROP SCHEMA IF EXISTS r7app2 CASCADE; "
            "SET ROLE pgwitness; CREATE SCHEMA r7app;", db="app")


def run(px, pg, sqls, rw=False):
    reset(pg)
    outs = planted.simple(px, sqls, token=px.token_rw if rw else None)
    for s, o in zip(sqls, outs, strict=False):
        print("  >>", s, "\n     ", o[:300].replace("\x00", "|"))
    return outs


def secret_leak(outs):
    assert not any("TOPSECRET" in o for o in outs), ("BYPASS", outs)


@pytest.mark.parametrize("rw", [False, True])
def test_view(px, pg, rw):
    secret_leak(run(px, pg, ["CREATE VIEW r7app.v AS SELECT * FROM secret.r7_vault",
                             "SELECT * FROM r7app.v"], rw))


@pytest.mark.parametrize("rw", [False, True])
def test_matview(px, pg, rw):
    secret_leak(run(px, pg, ["CREATE MATERIALIZED VIEW r7app.mv AS SELECT 1 AS a WITH NO DATA",
                             "CREATE MATERIALIZED VIEW r7app.mv2 AS SELECT * FROM secret.r7_vault",
                             "SELECT * FROM r7app.mv2"], rw))


def test_policy_cast_error(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.t (a int)",
        "INSERT INTO r7app.t VALUES (1)",
        "ALTER TABLE r7app.t ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE r7app.t FORCE ROW LEVEL SECURITY",
        "CREATE POLICY p ON r7app.t USING ((SELECT s FROM secret.r7_vault LIMIT 1)::int > 0)",
        "SELECT * FROM r7app.t"], True))


def test_policy_cast_error2(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.t (a int)",
        "ALTER TABLE r7app.t ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE r7app.t FORCE ROW LEVEL SECURITY",
        "CREATE POLICY p ON r7app.t WITH CHECK ((SELECT s FROM secret.r7_vault LIMIT 1)::int > 0)",
        "INSERT INTO r7app.t VALUES (1)"], True))


def test_rule(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.t (a int)",
        "CREATE RULE r AS ON INSERT TO r7app.t DO INSTEAD SELECT * FROM secret.r7_vault",
        "INSERT INTO r7app.t VALUES (1)",
        "CREATE RULE \"_RETURN\" AS ON SELECT TO r7app.t DO INSTEAD SELECT id AS a FROM secret.r7_vault",
        ], True))


def test_default_query_to_xml(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.t (a int, b xml DEFAULT query_to_xml('select * from secret.r7_vault', true, false, ''))",
        "CREATE TABLE r7app.t2 (a int)",
        "ALTER TABLE r7app.t2 ADD COLUMN b xml DEFAULT query_to_xml('select * from secret.r7_vault', true, false, '')",
        "INSERT INTO r7app.t2 VALUES (1)",
        "INSERT INTO r7app.t (a) VALUES (1) RETURNING b",
        "SELECT * FROM r7app.t",
        "SELECT * FROM r7app.t2",
        ], True))


def test_default_table_to_xml(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.t (a int, b xml DEFAULT table_to_xml(17::regclass, true, false, ''))",
        "CREATE TABLE r7app.t3 (a int, b text DEFAULT current_setting('r7.x'))",
        "CREATE TABLE r7app.t4 (a int, b text GENERATED ALWAYS AS (a::text || 'x') STORED)",
        ], True))


def test_attach_secret(px, pg):
    secret_leak(run(px, pg, [
        "CREATE TABLE r7app.p (id int, s text) PARTITION BY RANGE (id)",
        "ALTER TABLE r7app.p ATTACH PARTITION secret.r7_vault FOR VALUES FROM (0) TO (100)",
        "SELECT * FROM r7app.p",
        ], True))
    print("vault owner part:", q(pg, "SELECT relispartition FROM pg_class WHERE oid='secret.r7_vault'::regclass"))


def test_inherit_ro(px, pg):
    run(px, pg, [
        "CREATE TABLE r7app.c (id int, note text) INHERITS (public.r7_ro)",
        "CREATE TABLE r7app.c2 () INHERITS (public.r7_ro)",
        "INSERT INTO r7app.c2 VALUES (99, 'r7inh')",
        "CREATE TABLE r7app.pp PARTITION OF public.r7_part FOR VALUES IN (2)",
        "INSERT INTO r7app.pp VALUES (2, 'r7partmark')",
        ], True)
    st = q(pg, "SELECT string_agg(id||':'||note, ',') FROM public.r7_ro")
    st2 = q(pg, "SELECT string_agg(id||':'||note, ',') FROM public.r7_part")
    print("ro:", st, "part:", st2)
    assert "r7inh" not in st and "r7partmark" not in st2, ("BYPASS", st, st2)


def test_fk_oracle(px, pg):
    outs = run(px, pg, [
        "CREATE TABLE r7app.fk (id int REFERENCES secret.r7_vault (id))",
        "INSERT INTO r7app.fk VALUES (7)",
        "INSERT INTO r7app.fk VALUES (8)",
        ], True)
    assert not (outs[0].startswith("C") or "CREATE" in outs[0]), ("FK to secret created", outs)


def test_seq_default(px, pg):
    before = q(pg, "SELECT last_value||is_called::text FROM secret.r7_seq")
    run(px, pg, [
        "CREATE TABLE r7app.t (a int DEFAULT nextval('secret.r7_seq'))",
        "CREATE TABLE r7app.t2 (a int)",
        "ALTER TABLE r7app.t2 ALTER COLUMN a SET DEFAULT nextval('secret.r7_seq')",
        "CREATE SEQUENCE r7app.s OWNED BY secret.r7_vault.id",
        "CREATE TABLE r7app.t3 (a serial)",
        "ALTER SEQUENCE r7app.t3_a_seq OWNED BY secret.r7_vault.id",
        "INSERT INTO r7app.t DEFAULT VALUES",
        "INSERT INTO r7app.t2 DEFAULT VALUES",
        ], True)
    after = q(pg, "SELECT last_value||is_called::text FROM secret.r7_seq")
    print(before, after)
    assert before == after


def test_create_schema_elements(px, pg):
    secret_leak(run(px, pg, [
        "DROP SCHEMA r7app",
        "CREATE SCHEMA r7app CREATE VIEW v AS SELECT * FROM secret.r7_vault",
        "SELECT * FROM r7app.v",
        "CREATE SCHEMA r7app2 CREATE VIEW v AS SELECT * FROM secret.r7_vault",
        ], True))


def test_trigger_builtin(px, pg):
    run(px, pg, [
        "CREATE TABLE r7app.t (a int, b tsvector)",
        "CREATE TRIGGER tg BEFORE INSERT ON r7app.t FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger(b, 'pg_catalog.english', a)",
        "CREATE TRIGGER tg2 AFTER INSERT ON public.r7_orders FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "COMMENT ON TABLE secret.r7_vault IS 'r7pwn'",
        "COMMENT ON COLUMN r7app.t.a IS 'ok'",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA r7app GRANT ALL ON TABLES TO PUBLIC",
        "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC",
        "GRANT SELECT ON secret.r7_vault TO PUBLIC",
        ], True)
    c = q(pg, "SELECT coalesce(obj_description('secret.r7_vault'::regclass),'none')")
    assert c == "none"


def seq_val(pg):
    return q(pg, "SELECT last_value||is_called::text FROM secret.r7_seq")


def test_func_create(px, pg):
    secret_leak(run(px, pg, [
        "CREATE FUNCTION r7app.f() RETURNS text LANGUAGE sql AS 'SELECT s FROM secret.r7_vault'",
        "CREATE TABLE r7app.t (a int, b text DEFAULT r7app.f())",
        "SELECT r7app.f()",
        ], True))


def test_range_subtype_diff(px, pg):
    outs = run(px, pg, [
        "CREATE TABLE r7app.leak (s text)",
        "CREATE FUNCTION r7app.d(float8, float8) RETURNS float8 LANGUAGE sql AS "
        "$$ INSERT INTO r7app.leak SELECT s FROM secret.r7_vault; SELECT $1 - $2 $$",
        "CREATE TYPE r7app.rng AS RANGE (subtype = float8, subtype_diff = r7app.d)",
        "CREATE TABLE r7app.t (r r7app.rng)",
        "INSERT INTO r7app.t SELECT r7app.rng(g, g+1) FROM generate_series(1,50) g",
        "INSERT INTO r7app.t VALUES ('[1,2)'), ('[3,4)'), ('[5,9)'), ('[2,7)')",
        "CREATE INDEX ON r7app.t USING gist (r)",
        "SELECT * FROM r7app.leak",
        ], True)
    secret_leak(outs)


def test_domain_default(px, pg):
    before = seq_val(pg)
    outs = run(px, pg, [
        "CREATE DOMAIN r7app.dd AS bigint DEFAULT nextval('secret.r7_seq')",
        "CREATE DOMAIN r7app.dx AS xml DEFAULT query_to_xml('select * from secret.r7_vault', true, false, '')",
        "CREATE DOMAIN r7app.d2 AS bigint",
        "ALTER DOMAIN r7app.d2 SET DEFAULT nextval('secret.r7_seq')",
        "CREATE TABLE r7app.t (a int, b r7app.dd, c r7app.dx)",
        "CREATE TABLE r7app.t2 (a int, b r7app.d2)",
        "INSERT INTO r7app.t (a) VALUES (1) RETURNING *",
        "INSERT INTO r7app.t2 (a) VALUES (1) RETURNING *",
        ], True)
    secret_leak(outs)
    assert seq_val(pg) == before


def test_cast_implicit(px, pg):
    outs = run(px, pg, [
        "CREATE TABLE r7app.leak (s text)",
        "CREATE TYPE r7app.e AS ENUM ('a', 'b')",
        "CREATE FUNCTION r7app.c(text) RETURNS r7app.e LANGUAGE sql AS "
        "$$ INSERT INTO r7app.leak SELECT s FROM secret.r7_vault; SELECT 'a'::r7app.e $$",
        "CREATE CAST (text AS r7app.e) WITH FUNCTION r7app.c(text) AS ASSIGNMENT",
        "CREATE TABLE r7app.t (x r7app.e)",
        "INSERT INTO r7app.t SELECT 'zz'::text",
        "SELECT * FROM r7app.leak",
        ], True)
    secret_leak(outs)


def test_alter_type_using(px, pg):
    before = seq_val(pg)
    outs = run(px, pg, [
        "CREATE TABLE r7app.t (a int)",
        "INSERT INTO r7app.t VALUES (1)",
        "ALTER TABLE r7app.t ALTER COLUMN a TYPE bigint USING nextval('secret.r7_seq')",
        "ALTER TABLE r7app.t ALTER COLUMN a TYPE text USING query_to_xml('select * from secret.r7_vault', true, false, '')::text",
        "ALTER TABLE r7app.t ADD COLUMN b bigint DEFAULT nextval('secret.r7_seq')",
        "ALTER TABLE r7app.t ADD COLUMN c text GENERATED ALWAYS AS (pg_sleep(0)::text) STORED",
        "SELECT * FROM r7app.t",
        ], True)
    secret_leak(outs)
    assert seq_val(pg) == before


def test_misc_ddl(px, pg):
    outs = run(px, pg, [
        "CREATE TABLE r7app.t (a int)",
        "CREATE STATISTICS r7app.st ON (a + 1), a FROM r7app.t",
        "CREATE PUBLICATION r7pub FOR TABLE secret.r7_vault",
        "DROP SCHEMA r7app CASCADE",
        "CREATE SCHEMA r7app AUTHORIZATION pgw_admin",
        "ALTER SCHEMA r7app OWNER TO pgw_admin",
        "ALTER TABLE r7app.t OWNER TO pgw_admin",
        "CREATE TABLE r7app.l (LIKE secret.r7_vault INCLUDING ALL)",
        "CREATE INDEX ON r7app.t ((a::regclass::text))",
        ], True)
    published = q(pg, "SELECT count(*) FROM pg_publication WHERE pubname='r7pub'")
    pg.psql("DROP PUBLICATION IF EXISTS r7pub", db="app")
    assert published == "0", outs
    assert all(o.startswith("error") for o in outs[1:]), outs  # every one refused


def test_range_subtype_diff_err(px, pg):
    outs = run(px, pg, [
        "CREATE FUNCTION r7app.d(float8, float8) RETURNS float8 IMMUTABLE LANGUAGE sql AS "
        "$$ SELECT (SELECT s FROM secret.r7_vault LIMIT 1)::float8 $$",
        "CREATE TYPE r7app.rng AS RANGE (subtype = float8, subtype_diff = r7app.d)",
        "CREATE TABLE r7app.t (r r7app.rng)",
        "CREATE INDEX ON r7app.t USING gist (r)",
        "INSERT INTO r7app.t VALUES ('[1,2)'), ('[3,4)'), ('[5,9)'), ('[2,7)')",
        "INSERT INTO r7app.t SELECT ('[' || g || ',' || g+1 || ')')::r7app.rng FROM generate_series(1,300) g",
        "INSERT INTO r7app.t VALUES ('[1,2)'), ('[3,4)'), ('[5,9)'), ('[2,7)')",
        ], True)
    secret_leak(outs)


def test_ddlonly_index_immutable(px, pg):
    outs = run(px, pg, [
        "CREATE FUNCTION r7app.g(int) RETURNS int IMMUTABLE LANGUAGE sql AS "
        "$$ SELECT (SELECT s FROM secret.r7_vault LIMIT 1)::int $$",
        "CREATE TABLE r7app.t (a int)",
        "CREATE INDEX ON r7app.t (r7app.g(a))",
        "CREATE TABLE r7app.t2 (a int CHECK (r7app.g(a) > 0))",
        "CREATE TABLE r7app.t3 (a int GENERATED ALWAYS AS (r7app.g(1)) STORED)",
        "CREATE OPERATOR r7app.<<< (LEFTARG = int, RIGHTARG = int, FUNCTION = int4pl)",
        "CREATE AGGREGATE r7app.ag (int) (SFUNC = int4pl, STYPE = int)",
        ], True)
    secret_leak(outs)


def test_range_subtype_diff_ddl_only(px, pg):
    outs = run(px, pg, [
        "CREATE FUNCTION r7app.d(float8, float8) RETURNS float8 IMMUTABLE LANGUAGE sql AS "
        "$$ SELECT (SELECT string_agg(id || ':' || s, ',') FROM secret.r7_vault)::float8 $$",
        "CREATE TYPE r7app.rng AS RANGE (subtype = float8, subtype_diff = r7app.d)",
        "CREATE TABLE r7app.t AS SELECT ('[' || g || ',' || g+1 || ')')::r7app.rng AS r FROM generate_series(1,300) g",
        "CREATE INDEX ON r7app.t USING gist (r)",
        ], False)
    secret_leak(outs)
