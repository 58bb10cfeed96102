"""The Python drivers' differential (helper 160, /tmp/drv39): psycopg2's own suite (2.9.13
sdist, libpq) and SQLAlchemy 2.1.9's PostgreSQL dialect suite (test/dialect/postgresql,
test/engine/test_reflection.py, test/sql/test_types.py over postgresql+psycopg2), directly
and through the proxy as shipped (enforcing grant, recording on, catalog rules on).

Most proxy-only failures are refusals by design (docs/policy.md): NOTIFY and DO, large
objects (libpq's fast-path FunctionCall), LOCK, two-phase commit, a function in pg_temp,
settings the grant does not hold or the proxy pins (search_path, standard_conforming_strings,
also in the startup options), schemas outside the grant, CREATE EXTENSION, the login's own
name, and CASCADE run as RESTRICT (the server's own 2BP01 where something depends).

**The regression: honest statements on the granted schema that sqlglot cannot read (or
reads otherwise) and PostgreSQL's reading alone does not decide** (SQLAlchemy's reflection
tests set their fixtures up with them): ``INSERT INTO values (value) VALUES ...`` (a table
named by the non-reserved keyword; sqlglot sees no relation, ``parse.disagree``),
``CREATE UNIQUE INDEX ... NULLS NOT DISTINCT`` (PostgreSQL 15), ``CREATE INDEX ... ON ONLY
t`` (a partitioned table's index), ``COMMENT ON CONSTRAINT c ON t IS '...'`` and
``CREATE FUNCTION ... COST 100`` all refused (``deny.unknown``) where the server runs them.
Cause: ``policy/classify/crosscheck.py`` ``_from_pg_alone`` decides only a fixed list of
kinds from PostgreSQL's tree when sqlglot fails (not IndexStmt, a CommentStmt with a
comment, CreateFunctionStmt), and ``reconcile`` refuses a relation only PostgreSQL sees
even when the kinds agree. Each test asserts the server's answer and is a strict xfail.
**Fixed in session 39** (the coordinator): the index (NULLS NOT DISTINCT, ON ONLY) and the
constraint's comment, decided on PostgreSQL's reading, and CREATE FUNCTION with COST, read
by both parsers again without its planner options (``pgparse.without_planner_options``):
plain tests now. Left (a strict xfail): the table named ``values``.

**The regression with psycopg (3) (the suite again over ``postgresql+psycopg://``: 128 of
its 157 proxy-only failures): SQLAlchemy's table-options reflection, run by every
``Table(..., autoload_with=...)`` and ``MetaData.reflect``, names a setting by a cast
parameter**: ``... != current_setting(%(current_setting_1)s::VARCHAR)`` (the value
``default_table_access_method``), which psycopg binds server-side as
``current_setting($1::VARCHAR)`` with the parameter's type left to the server. The server
answers ``heap``; the proxy refuses ``deny.function`` "a setting not named by a string
literal". psycopg2 inlines the literal, so that run passed. Cause:
``policy/classify/pgparse.py`` ``_setting_ref`` pins only a bare ``$n`` (round 57: ``$1::text``
of a parameter the Parse typed regclass is a relation's name, not the text bound), and
``engine._settings_by_parameter`` refuses the rest. Where the Parse leaves ``$n``'s type
unspecified (0) or gives the cast's own type, ``$n::varchar`` / ``::text`` / ``::name`` is no
conversion (the server types the parameter as the cast's type and reads the bound text):
pin it as the bare parameter (``bound_setting`` at each Bind), refusing other declared types.
**Fixed in session 39** (the coordinator): ``$n::text`` and ``$n::varchar`` (no type
modifier; not ``name``, which truncates at 63 bytes) are pinned where ``$n`` occurs once, and
the engine allows the pin only where the Parse gives no parameter another type than text or
varchar (``messages.policy_parse_types``; round 57's refusals hold: its ``cast-*`` probes).

Plain tests: what the suites exercise hardest through the proxy and passed, server-judged:
SQLAlchemy's reflection queries (the pg_catalog joins ORMs and agents send, as SQLAlchemy
2.1.9 renders them, literals inlined as psycopg2 sends them), psycopg2's COPY in and out,
and LISTEN hearing a notification made outside (NOTIFY itself is refused by design).
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "s39-drivers"
SCOPES = (
    "read:public.*,pg_catalog.*,information_schema.* write:public.* ddl:public.* "
    "execute:public.* listen:*"
)
SETUP = """
SET ROLE pgwitness;
CREATE TABLE public.s39_parent (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', tags text[]);
CREATE TABLE public.s39_child (id int PRIMARY KEY, pid int REFERENCES public.s39_parent (id),
                               note varchar(20) UNIQUE);
CREATE INDEX s39_ix ON public.s39_child (lower(note)) WHERE id > 0;
COMMENT ON COLUMN public.s39_parent.name IS 's39 comment';
CREATE TABLE public.s39_copy (a int, b text);
CREATE TABLE public.s39_t (x int CONSTRAINT s39_t_pk PRIMARY KEY);
CREATE TABLE public.s39_party (name text, other text);
CREATE TABLE public."values" (value int);
RESET ROLE;
"""
TEARDOWN = """
DROP TABLE IF EXISTS public.s39_child, public.s39_parent, public.s39_copy, public.s39_t,
    public.s39_party, public."values";
DROP FUNCTION IF EXISTS public.s39_direct_cost(int), public.s39_proxied_cost(int);
"""

# SQLAlchemy 2.1.9 Inspector.get_multi_columns(filter_names=[...]) of two tables
REFLECT_COLUMNS = (
    "SELECT pg_catalog.pg_attribute.attname AS name, "
    "pg_catalog.format_type(pg_catalog.pg_attribute.atttypid, "
    "pg_catalog.pg_attribute.atttypmod) AS format_type, CASE WHEN "
    "pg_catalog.pg_attribute.atthasdef THEN (SELECT "
    "pg_catalog.pg_get_expr(pg_catalog.pg_attrdef.adbin, pg_catalog.pg_attrdef.adrelid) "
    "AS pg_get_expr_1 \n"
    "FROM pg_catalog.pg_attrdef \n"
    "WHERE pg_catalog.pg_attribute.atthasdef AND pg_catalog.pg_attrdef.adrelid = "
    "pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attrdef.adnum = "
    'pg_catalog.pg_attribute.attnum) ELSE NULL END AS "default", '
    "pg_catalog.pg_attribute.attnotnull AS not_null, pg_catalog.pg_class.relname AS "
    "table_name, pg_catalog.pg_description.description AS comment, "
    "pg_catalog.pg_attribute.attgenerated AS generated, CASE WHEN "
    "(pg_catalog.pg_attribute.attidentity != '') THEN (SELECT "
    "json_build_object('always', pg_catalog.pg_attribute.attidentity = 'a', 'start', "
    "pg_catalog.pg_sequence.seqstart, 'increment', pg_catalog.pg_sequence.seqincrement, "
    "'minvalue', pg_catalog.pg_sequence.seqmin, 'maxvalue', "
    "pg_catalog.pg_sequence.seqmax, 'cache', pg_catalog.pg_sequence.seqcache, 'cycle', "
    "pg_catalog.pg_sequence.seqcycle) AS json_build_object_1 \n"
    "FROM pg_catalog.pg_sequence \n"
    "WHERE pg_catalog.pg_attribute.attidentity != '' AND pg_catalog.pg_sequence.seqrelid "
    "= CAST(CAST(pg_catalog.pg_get_serial_sequence(CAST(CAST(pg_catalog.pg_attribute.attre"
    "lid AS REGCLASS) AS TEXT), pg_catalog.pg_attribute.attname) AS REGCLASS) AS OID)) "
    "ELSE NULL END AS identity_options, CASE WHEN (pg_catalog.pg_attribute.attcollation "
    "!= 0 AND (SELECT pg_catalog.pg_type.typcollation \n"
    "FROM pg_catalog.pg_type \n"
    "WHERE pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid) != "
    "pg_catalog.pg_attribute.attcollation) THEN (SELECT json_build_object('name', "
    "pg_catalog.pg_collation.collname, 'schema', CASE WHEN "
    "pg_catalog.pg_collation_is_visible(pg_catalog.pg_collation.oid) THEN NULL ELSE "
    "pg_catalog.pg_namespace.nspname END) AS json_build_object_9 \n"
    "FROM pg_catalog.pg_collation JOIN pg_catalog.pg_namespace ON "
    "pg_catalog.pg_namespace.oid = pg_catalog.pg_collation.collnamespace \n"
    "WHERE pg_catalog.pg_collation.oid = pg_catalog.pg_attribute.attcollation) ELSE NULL "
    "END AS collation \n"
    "FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute ON "
    "pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid AND "
    "pg_catalog.pg_attribute.attnum > 0 AND NOT pg_catalog.pg_attribute.attisdropped "
    "LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = "
    "pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_description.objsubid = "
    "pg_catalog.pg_attribute.attnum JOIN pg_catalog.pg_namespace ON "
    "pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \n"
    "WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f']) AND "
    "pg_catalog.pg_class.relpersistence != 't' AND "
    "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND "
    "pg_catalog.pg_namespace.nspname != 'pg_catalog' AND pg_catalog.pg_class.relname IN "
    "('s39_parent', 's39_child') ORDER BY pg_catalog.pg_class.relname, "
    "pg_catalog.pg_attribute.attnum"
)

# Inspector.get_multi_indexes: the relations' OIDs inlined ({oids})
REFLECT_INDEXES = (
    "SELECT pg_catalog.pg_index.indrelid, pg_catalog.pg_class.relname, "
    "pg_catalog.pg_index.indisunique, pg_catalog.pg_index.indisvalid, "
    "pg_catalog.pg_constraint.conrelid IS NOT NULL AS has_constraint, "
    "pg_catalog.pg_index.indoption, pg_catalog.pg_class.reloptions, "
    "pg_catalog.pg_class.relam, CASE WHEN (pg_catalog.pg_index.indpred IS NOT NULL) THEN "
    "pg_catalog.pg_get_expr(pg_catalog.pg_index.indpred, pg_catalog.pg_index.indrelid) "
    "END AS filter_definition, pg_catalog.pg_index.indnkeyatts, "
    "pg_catalog.pg_index.indnullsnotdistinct, idx_cols.elements, "
    "idx_cols.elements_is_expr, idx_cols.elements_opclass \n"
    "FROM pg_catalog.pg_index JOIN pg_catalog.pg_class ON pg_catalog.pg_index.indexrelid "
    "= pg_catalog.pg_class.oid LEFT OUTER JOIN (SELECT idx_attr.indexrelid AS "
    "indexrelid, min(idx_attr.indrelid) AS min_1, array_agg(idx_attr.element ORDER BY "
    "idx_attr.ord) AS elements, array_agg(idx_attr.is_expr ORDER BY idx_attr.ord) AS "
    "elements_is_expr, array_agg(idx_attr.att_opclass ORDER BY idx_attr.ord) AS "
    "elements_opclass \n"
    "FROM (SELECT idx.indexrelid AS indexrelid, idx.indrelid AS indrelid, idx.ord AS "
    "ord, CASE WHEN (idx.attnum = 0) THEN pg_catalog.pg_get_indexdef(idx.indexrelid, "
    "idx.ord + 1, true) ELSE CAST(pg_catalog.pg_attribute.attname AS TEXT) END AS "
    "element, idx.attnum = 0 AS is_expr, CAST(idx.att_opclass AS BIGINT) AS att_opclass \n"
    "FROM (SELECT pg_catalog.pg_index.indexrelid AS indexrelid, "
    "pg_catalog.pg_index.indrelid AS indrelid, unnest(pg_catalog.pg_index.indkey) AS "
    "attnum, unnest(pg_catalog.pg_index.indclass) AS att_opclass, "
    "generate_subscripts(pg_catalog.pg_index.indkey, 1) AS ord \n"
    "FROM pg_catalog.pg_index \n"
    "WHERE NOT pg_catalog.pg_index.indisprimary AND pg_catalog.pg_index.indrelid IN "
    "({oids})) AS idx LEFT OUTER JOIN pg_catalog.pg_attribute ON "
    "pg_catalog.pg_attribute.attnum = idx.attnum AND pg_catalog.pg_attribute.attrelid = "
    "idx.indrelid \n"
    "WHERE idx.indrelid IN ({oids})) AS idx_attr GROUP BY idx_attr.indexrelid) AS "
    "idx_cols ON pg_catalog.pg_index.indexrelid = idx_cols.indexrelid LEFT OUTER JOIN "
    "pg_catalog.pg_constraint ON pg_catalog.pg_index.indrelid = "
    "pg_catalog.pg_constraint.conrelid AND pg_catalog.pg_index.indexrelid = "
    "pg_catalog.pg_constraint.conindid AND pg_catalog.pg_constraint.contype = ANY "
    "(ARRAY['p', 'u', 'x']) \n"
    "WHERE pg_catalog.pg_index.indrelid IN ({oids}) AND NOT "
    "pg_catalog.pg_index.indisprimary ORDER BY pg_catalog.pg_index.indrelid, "
    "pg_catalog.pg_class.relname"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s39drivers", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _rows(conn: psycopg.Connection, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _both(pg, px, sql: str) -> tuple[list[tuple], list[tuple]]:
    with planted.psycopg_direct(pg) as d, planted.psycopg_proxied(px) as p:
        return _rows(d, sql), _rows(p, sql)


def _status(connect, sql: str) -> str:
    """The command tag, or ``SQLSTATE: message`` of the error."""
    with connect() as c:
        try:
            return c.execute(sql).statusmessage or ""
        except psycopg.Error as exc:
            return f"{exc.sqlstate}: {str(exc).splitlines()[0]}"


UNREAD = {
    "insert-into-values": "INSERT INTO values (value) VALUES (1), (2)",
    "index-nulls-not-distinct": "CREATE UNIQUE INDEX s39_{who}_nnd ON public.s39_party "
    "(name DESC, upper(other)) NULLS NOT DISTINCT",
    "index-on-only": "CREATE INDEX s39_{who}_only ON ONLY public.s39_t (x)",
    "comment-on-constraint": "COMMENT ON CONSTRAINT s39_t_pk ON public.s39_t IS 's39 {who}'",
    "function-cost": "CREATE FUNCTION public.s39_{who}_cost(x integer) RETURNS boolean "
    "LANGUAGE sql COST 100 AS 'select x > 0'",
}
TAGS = {
    "insert-into-values": "INSERT 0 2",
    "index-nulls-not-distinct": "CREATE INDEX",
    "index-on-only": "CREATE INDEX",
    "comment-on-constraint": "COMMENT",
    "function-cost": "CREATE FUNCTION",
}


# None: fixed (session 39, crosscheck._from_pg_alone: an index sqlglot cannot read, a
# comment on a table's constraint)
UNREAD_WHY = {
    "insert-into-values": "parse.disagree on a relation only PostgreSQL sees (reconcile)",
    "index-nulls-not-distinct": None,
    "index-on-only": None,
    "comment-on-constraint": None,
    "function-cost": None,  # (classify_statement: read again without its planner options)
}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=[] if why is None else pytest.mark.xfail(
        strict=True, reason="regression: " + why))
    for case, why in sorted(UNREAD_WHY.items())
])  # fmt: skip
def test_sqlalchemy_fixture_statement_runs_as_the_server_runs_it(pg, px, case):
    """SQLAlchemy's reflection fixtures (test_index_reflection, test_nullsnotdistinct,
    test_partitioned_index_*, test_reflection_constraint_comments, test_reflect_check_constraint,
    test_array_agg): each statement on the granted schema, directly then through the proxy."""
    direct = _status(lambda: planted.psycopg_direct(pg), UNREAD[case].format(who="direct"))
    assert direct == TAGS[case], direct
    got = _status(lambda: planted.psycopg_proxied(px), UNREAD[case].format(who="proxied"))
    assert got == direct, got


def test_sqlalchemy_reflects_columns(pg, px):
    """The column reflection query: defaults, identity, collation and comments, joined
    over pg_attribute, pg_attrdef, pg_sequence, pg_collation, pg_description."""
    direct, got = _both(pg, px, REFLECT_COLUMNS)
    names = [(r[4], r[0]) for r in direct]
    assert names == [("s39_child", "id"), ("s39_child", "pid"), ("s39_child", "note"),
                     ("s39_parent", "id"), ("s39_parent", "name"),
                     ("s39_parent", "tags")], names  # fmt: skip
    assert "s39 comment" in [r[5] for r in direct]
    assert got == direct, got


def test_sqlalchemy_reflects_indexes(pg, px):
    """The index reflection query: pg_get_indexdef of an expression column,
    pg_get_expr of a partial index's predicate, unnest/generate_subscripts of indkey."""
    with planted.psycopg_direct(pg) as d:
        found = _rows(d, "SELECT oid FROM pg_class WHERE relname IN ('s39_parent', 's39_child')")
    oids = ", ".join(str(r[0]) for r in found)
    direct, got = _both(pg, px, REFLECT_INDEXES.format(oids=oids))
    assert sorted((r[1], r[8]) for r in direct) == [("s39_child_note_key", None),
                                                   ("s39_ix", "(id > 0)")], direct  # fmt: skip
    assert got == direct, got


def test_psycopg2_copy_in_and_out(pg, px):
    """psycopg2's copy_from / copy_expert: COPY FROM STDIN through the proxy, then
    COPY (query) TO STDOUT; the server holds what was sent, and both reads agree."""
    data = "1\tone\n2\t\\N\n3\tthree, with\\ttab\n"
    copy_in = "COPY public.s39_copy (a, b) FROM STDIN"
    with planted.psycopg_proxied(px) as p, p.cursor() as cur, cur.copy(copy_in) as cp:
        cp.write(data)
    with planted.psycopg_direct(pg) as d:
        assert _rows(d, "SELECT a, b FROM public.s39_copy ORDER BY a") == [
            (1, "one"), (2, None), (3, "three, with\ttab")]  # fmt: skip
    out = {}
    sql = "COPY (SELECT a, b FROM public.s39_copy ORDER BY a) TO STDOUT"
    for where, connect in (("direct", lambda: planted.psycopg_direct(pg)),
                           ("proxied", lambda: planted.psycopg_proxied(px))):  # fmt: skip
        with connect() as c, c.cursor() as cur, cur.copy(sql) as cp:
            out[where] = b"".join(bytes(chunk) for chunk in cp)
    assert out["direct"] == data.encode(), out["direct"]
    assert out["proxied"] == out["direct"], out["proxied"]


def test_listen_hears_a_notify_made_outside(pg, px):
    """psycopg2's notify tests through the proxy: LISTEN is granted (listen:*), NOTIFY is
    not, so the notification comes from a direct session; the listener hears it."""
    with planted.psycopg_proxied(px) as p:
        p.execute("LISTEN s39_channel")
        with planted.psycopg_direct(pg) as d:
            d.execute("NOTIFY s39_channel, 's39 payload'")
        heard = [(n.channel, n.payload) for n in p.notifies(timeout=10, stop_after=1)]
    assert heard == [("s39_channel", "s39 payload")], heard


# fixed in session 39 (pgparse._setting_param, collector._setting_parameter, the engine's
# _casts_a_setting_parameter: allowed where the Parse leaves the parameter untyped or gives
# it text or varchar; red-team round 57's refusals: test_redteam_r57_settings.py, cast-*)
@pytest.mark.parametrize("cast", ["VARCHAR", "text"])
def test_sqlalchemy_psycopg_reads_a_setting_by_a_cast_parameter(pg, px, cast):
    """SQLAlchemy's get_multi_table_options over psycopg (3): the setting's name is a
    parameter bound server-side, cast in the statement's text."""
    sql = f"SELECT current_setting(%s::{cast})"
    with planted.psycopg_direct(pg) as d:
        direct = d.execute(sql, ["default_table_access_method"]).fetchall()
    assert direct == [("heap",)], direct
    with planted.psycopg_proxied(px) as p:
        try:
            got = p.execute(sql, ["default_table_access_method"]).fetchall()
        except psycopg.Error as exc:
            got = f"{exc.sqlstate}: {str(exc).splitlines()[0]}"
    assert got == direct, got


def test_a_bare_parameter_naming_a_setting_is_read(pg, px):
    """The same read with the parameter bare (session 28's pin): allowed, server-judged."""
    sql = "SELECT current_setting(%s)"
    with planted.psycopg_direct(pg) as d, planted.psycopg_proxied(px) as p:
        direct = d.execute(sql, ["default_table_access_method"]).fetchall()
        got = p.execute(sql, ["default_table_access_method"]).fetchall()
    assert direct == [("heap",)], direct
    assert got == direct, got
