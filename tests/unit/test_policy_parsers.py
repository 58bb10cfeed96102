"""Pure tests of the second opinion (policy.classify.pgparse, policy.classify.crosscheck), the encoding
allowlist (policy.encodings) and column syntax (policy.catalog)."""

from __future__ import annotations

import pytest

from policy.catalog import CatalogCache, Snapshot, attribute_calls
from policy.classify import StatementClass, classify
from policy.classify.crosscheck import DISAGREE, boundaries_agree
from policy.classify.pgparse import PgParseError, parse
from policy.decide import decide
from policy.encodings import check_client_encoding, is_safe_encoding, resolve
from policy.engine import StatementPolicy, classify_text
from policy.lexer import lex
from policy.scopes import parse_scopes

S = StatementClass
SCOPES = parse_scopes("read:public.orders,public.customers write:public.orders")


# --- encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "enc"),
    [
        ("S_JIS", "SJIS"),
        ("windows932", "SJIS"),
        ("Shift-JIS", "SJIS"),
        ("ms_kanji", "SJIS"),
        ("big-5", "BIG5"),
        ("Win950", "BIG5"),
        ("ShiftJIS2004", "SHIFT_JIS_2004"),
        ("gb-18030", "GB18030"),
        ("windows 949", "UHC"),
        ("utf-8", "UTF8"),
        ("Unicode", "UTF8"),
        ("ISO-8859-1", "LATIN1"),
        ("koi8", "KOI8R"),
        ("sql_ascii", "SQL_ASCII"),
        ("euc_jis_2004", "EUC_JIS_2004"),
        ("nonsense", None),
        ("", None),
        ("s" * 64, None),
    ],
)
def test_encoding_names_resolve_as_postgres_does(name, enc):
    assert resolve(name) == enc


def test_only_encodings_without_ascii_in_multibyte_characters_are_safe():
    for name in (
        "SJIS",
        "BIG5",
        "GBK",
        "UHC",
        "GB18030",
        "JOHAB",
        "SHIFT_JIS_2004",
        "MULE_INTERNAL",
    ):
        assert not is_safe_encoding(name), name
    for name in ("UTF8", "SQL_ASCII", "LATIN1", "WIN1252", "EUC_JP", "EUC_KR", "KOI8U"):
        assert is_safe_encoding(name), name
    assert check_client_encoding("DEFAULT") is None
    assert "multibyte" in check_client_encoding("'S-JIS'")


@pytest.mark.parametrize(
    "sql",
    [
        "SET client_encoding = 'S_JIS'",
        "SET NAMES 'windows-936'",
        "SET LOCAL client_encoding TO big5",
        "SET client_encoding = 'UTF8', 'SJIS'",
        "SET client_encoding = nonsense_enc",
    ],
)
def test_set_of_an_unsafe_or_unknown_encoding_is_refused(sql):
    (c,) = classify(sql)
    assert c.cls is S.UNKNOWN, c


# --- PostgreSQL's reading -----------------------------------------------------------------


def test_pg_reading_collects_relations_calls_operators_and_attributes():
    (st,) = parse(
        "WITH w AS (SELECT * FROM a.t1) SELECT c.fn, (r).g, x OPERATOR(s.===) 1 "
        "FROM w, ROWS FROM (f1(), s.f2()) AS z, t2 c WHERE y = ANY(SELECT 1 FROM t3) "
        "ORDER BY 1 USING <"
    )
    assert st.kind == "SelectStmt"
    assert st.relation_names == {("a", "t1"), (None, "t2"), (None, "t3")}
    assert st.functions == {(None, "f1"), ("s", "f2")}
    assert st.operators == {("s", "==="), (None, "="), (None, "<")}
    assert {"fn", "g"} <= st.attributes


def test_pg_reading_scopes_cte_names():
    (st,) = parse("SELECT (WITH payroll AS (SELECT 1) SELECT 1), (SELECT 1 FROM payroll)")
    assert (None, "payroll") in st.relation_names
    (st,) = parse("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t")
    assert st.relations == {(None, "t", "insert")}


def test_pg_reading_roles_and_definitions():
    (st,) = parse("CREATE TEMP TABLE x AS SELECT * FROM o")
    assert st.relations == {("pg_temp", "x", "ddl"), (None, "o", "read")}
    (st,) = parse("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'")
    assert st.defines == {("function", "pg_temp", "f")}
    (st,) = parse("CREATE TRIGGER t BEFORE INSERT ON o FOR EACH ROW EXECUTE FUNCTION s.trg()")
    assert ("s", "trg") in st.functions


def test_pg_parse_errors():
    with pytest.raises(PgParseError):
        parse("SELECT * FROM")


# --- reconciling both readings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT * FROM pg_temp.div(1)", "pg_temp.div"),
        ("SELECT * FROM comment(1)", "public.comment"),
        ("SELECT to_char(1, 'FM9', (SELECT 1 FROM secret.payroll))", "secret.payroll"),
        ("SELECT to_date('2020', 'YYYY', (SELECT 1 FROM secret.payroll))", "secret.payroll"),
    ],
)
def test_what_only_postgres_sees_is_a_disagreement(sql, why):
    (c,) = classify(sql)
    assert c.cls is S.UNKNOWN and c.detail.startswith(DISAGREE) and why in c.detail, c
    d = decide(c, parse_scopes("read:public.* unknown:*"))
    assert not d.allowed and d.rule == DISAGREE  # not even unknown:* allows it


def test_statement_count_disagreement_denies_every_piece():
    stmts = classify("CREATE RULE r AS ON INSERT TO t DO INSTEAD (DELETE FROM t; DELETE FROM t)")
    assert len(stmts) > 1
    assert all(decide(c, parse_scopes("unknown:* ddl:public.*")).allowed is False for c in stmts)


def test_fingerprints_need_postgres_boundaries():
    sql = "select 1; select 2 -- x"
    assert boundaries_agree(sql, [s.sql for s in lex(sql)])
    assert not boundaries_agree("select 1; select 2", ["select 1; select 2"])


def test_calls_decided_are_postgres_reading():
    (c,) = classify("SELECT * FROM orders WHERE note <> ALL ('{x,y}')")
    assert c.functions == frozenset() and c.operators == {"<>"}
    assert decide(c, SCOPES).allowed


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT 1 === 1", "deny.operator"),
        ("SELECT 1 OPERATOR(public.+) 1", "deny.operator"),
        ("SELECT 1 OPERATOR(pg_catalog.+) 1", "default.no_relations"),
        ("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'", "deny.temp_routine"),
        ("SELECT * FROM pg_get_replication_slots()", "scope.execute"),
        ("SELECT last_value FROM pg_sequences", "deny.catalog"),
        ("SELECT pg_temp.f()", "scope.execute"),
    ],
)
def test_new_default_denials(sql, rule):
    (c,) = classify(sql)
    d = decide(c, SCOPES)
    assert d.rule == rule, (c, d)


def test_temp_routines_with_an_explicit_scope():
    (c,) = classify("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'")
    assert decide(c, parse_scopes("ddl:pg_temp.*")).allowed


# --- column syntax ------------------------------------------------------------------------

SNAP = Snapshot(
    frozenset({"leak", "row_to_json"}),
    {"public.customers": frozenset({"id", "name"}), "public.orders": frozenset({"id", "leak"})},
    loaded_at=1.0,
)


def test_attribute_calls():
    rels = frozenset({"public.customers"})
    assert attribute_calls(frozenset({"name"}), rels, SNAP) == frozenset()
    assert attribute_calls(frozenset({"leak"}), rels, SNAP) == {"leak"}
    assert attribute_calls(frozenset({"leak"}), frozenset({"public.orders"}), SNAP) == frozenset()
    both = frozenset({"public.orders", "public.customers"})
    assert attribute_calls(frozenset({"leak"}), both, SNAP) == {"leak"}
    assert attribute_calls(frozenset({"name"}), rels, None) == {"name"}  # no catalog
    stale = Snapshot(SNAP.functions, SNAP.columns, 1.0, stale=True)
    assert attribute_calls(frozenset({"name", "other"}), rels, stale) == {"other"}


def test_policy_decides_column_syntax_with_the_snapshot():
    cache = CatalogCache()
    cache.put("app", SNAP.functions, SNAP.columns)
    p = StatementPolicy(SCOPES, task="t", shared=None)
    p.catalog = lambda: cache.get("app")
    assert p.check_query("SELECT c.name FROM customers c").allowed
    v = p.check_query("SELECT c.leak FROM customers c")
    assert not v.allowed and "public.leak" in v.message and "column syntax" in v.message
    # DDL through the proxy makes the snapshot stale: unknown names count as calls
    cache.invalidate("app")
    assert not p.check_query("SELECT c.newfn FROM customers c").allowed
    assert p.check_query("SELECT c.name FROM customers c").allowed


def test_no_catalog_fails_closed():
    p = StatementPolicy(SCOPES, task="t", shared=None)
    v = p.check_query("SELECT c.name FROM customers c")
    assert not v.allowed and "no catalog loaded" in v.message


# --- large statements ---------------------------------------------------------------------


def test_precomputed_classification_is_the_same_decision():
    sql = "SELECT count(*) FROM orders WHERE id IN (" + ",".join(map(str, range(20000))) + ")"
    fresh = StatementPolicy(SCOPES, task="t", shared=None)
    offloaded = StatementPolicy(SCOPES, task="t", shared=None)
    assert offloaded.needs_offload(sql)
    fn, args = offloaded.offload_job(sql)
    offloaded.precomputed(sql, fn(*args))
    assert not offloaded.needs_offload(sql)
    a, b = fresh.check_query(sql), offloaded.check_query(sql)
    assert [(c, d) for c, d in a.decisions] == [(c, d) for c, d in b.decisions]
    assert classify_text("SELECT 1; SELECT 2", ("public",))[1].cls is S.READ


def test_execute_arguments_are_cross_checked():
    p = StatementPolicy(SCOPES, task="t", shared=None)
    p.catalog = lambda: SNAP
    assert p.check_query("PREPARE q(text) AS SELECT id FROM orders WHERE note = $1").allowed
    assert p.check_query("EXECUTE q('x')").allowed
    v = p.check_query("EXECUTE q(to_char(1, 'FM9', (SELECT 1 FROM secret.payroll)))")
    assert not v.allowed and "secret.payroll" in v.message


@pytest.mark.parametrize(
    ("sql", "cls"),
    [
        ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", S.DDL),
        ("CREATE TEMP TABLE x (a int) INHERITS (secret.payroll) ON COMMIT DROP", S.UNKNOWN),
        (
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d ORDER BY 1 USING <",
            S.UNKNOWN,
        ),
        ("SELECT '{orders}'::regclass[] ORDER BY 1 USING <", S.UNKNOWN),
        ("SELECT id FROM orders ORDER BY id USING < FOR UPDATE", S.UNKNOWN),
    ],
)
def test_postgres_alone_decides_only_what_it_fully_reads(sql, cls):
    (c,) = classify(sql)
    assert c.cls is cls, c


# --- object-name casts, however the type is spelled ----------------------------------------

NAME_CASTS = [
    "SELECT 'secret.vault'::pg_catalog.regclass",
    "SELECT CAST('secret.vault' AS pg_catalog.regclass)",
    "SELECT 'secret.vault'::PG_CATALOG.REGCLASS",
    "SELECT 'secret.vault'::pg_catalog.\"regclass\"",
    "SELECT 'secret.vault'::\"pg_catalog\".regclass::oid",
    "SELECT '{secret.vault}'::pg_catalog.regclass[]",
    "SELECT id FROM orders WHERE id = 'secret.vault'::pg_catalog.regclass::oid::int",
    "EXPLAIN SELECT 'secret.vault'::pg_catalog.regclass",
    "COPY (SELECT 'secret.vault'::pg_catalog.regclass) TO STDOUT",
]


@pytest.mark.parametrize("sql", NAME_CASTS)
def test_a_qualified_object_name_cast_is_a_read_of_the_literal(sql):
    """``pg_catalog.regclass`` is ``regclass``: the literal is a relation PostgreSQL looks
    up (its existence and OID come back), so it is read like the unqualified cast's."""
    v = StatementPolicy(SCOPES, task="t", shared=None).check_query(sql)
    assert not v.allowed, sql
    c, d = v.decisions[0]
    assert "secret.vault" in c.reads or d.rule == "deny.unknown", (sql, c, d)


def test_a_qualified_object_name_cast_inside_the_grant_is_allowed():
    p = StatementPolicy(SCOPES, task="t", shared=None)
    assert p.check_query("SELECT 'orders'::pg_catalog.regclass::oid").allowed
    assert p.check_query("SELECT 1::int4, 'x'::pg_catalog.text").allowed


def test_an_object_name_cast_only_postgres_sees_is_a_disagreement(monkeypatch):
    """The second opinion holds if sqlglot's side misses an object-name cast: PostgreSQL's
    reading flags it, and a reading sqlglot thought literal-free is denied."""
    from policy.classify import collector

    monkeypatch.setattr(collector, "_is_reg_cast", lambda node, which=None: False)
    monkeypatch.setattr(collector, "_is_reg_array", lambda node: False)
    v = StatementPolicy(SCOPES, task="t", shared=None).check_query(
        "SELECT 'secret.vault'::pg_catalog.regclass"
    )
    assert not v.allowed and v.decisions[0][1].rule == DISAGREE, v
    assert "object-name type" in v.decisions[0][0].detail


def test_user_schema_safety_needs_a_fresh_snapshot_that_saw_it():
    """``"$user"`` leads a per-grant session's search_path only from a snapshot that saw no
    way for it to resolve: unknown (no snapshot), not seen, or stale (DDL since) is unsafe."""
    from policy.catalog import ROLE_SCHEMAS_SQL
    from policy.grants.roles import ROLE_PREFIX

    cache = CatalogCache()
    assert cache.get("app") is None
    assert not cache.put("app", [], {}).user_schema_safe  # the default: not seen
    assert cache.put("app", [], {}, role_schemas_absent=True).user_schema_safe
    cache.invalidate("app")
    stale = cache.get("app")
    assert stale is not None and stale.stale and not stale.user_schema_safe
    assert stale.role_schemas_absent  # what was seen is kept for the record, not trusted
    assert ROLE_PREFIX.replace("_", "\\_") in ROLE_SCHEMAS_SQL  # the same prefix, escaped


def test_parameters_separated_by_a_bare_comma_are_read():
    """sqlglot's tokenizer failed on ``$1,$2`` (postgres.js's ``IN ($1,$2)`` after a
    data-modifying CTE was refused as unparseable); PostgreSQL reads ``$1, $2``. A quoted
    identifier holding the same characters is left as it is."""
    from policy import StatementPolicy, parse_scopes
    from policy.classify.collector import _spaced_parameters

    assert _spaced_parameters('select $1,$2,$3, "a$1,$2"') == 'select $1, $2, $3, "a$1,$2"'
    p = StatementPolicy(parse_scopes("read:public.t write:public.t"), task="T")
    for sql in (
        "with x as (insert into t values (1, null) returning *) select 1 in ($1,$2) from x",
        "select * from t where a in ($1,$2,$3)",
        "select $1,$2",
    ):
        verdict = p.check_parse(sql)
        assert verdict.allowed, (sql, verdict.message)
    # and what the statement names is still decided
    assert not p.check_parse("select * from secret.s where a in ($1,$2)").allowed


# PostgreSQL 15's keywords that are not unreserved (src/include/parser/kwlist.h of 15):
# what the server reads as a keyword rather than a name.
_PG15_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default
    deferrable desc distinct do else end except exists extract false fetch float for foreign
    freeze from full grant greatest group grouping having ilike in initially inner inout int
    integer intersect interval into is isnull join lateral leading least left like limit
    localtime localtimestamp national natural nchar none normalize not notnull null nullif
    numeric offset on only or order out outer overlaps overlay placing position precision
    primary real references returning right row select session_user setof similar smallint
    some substring symmetric table tablesample then time timestamp to trailing treat trim
    true union unique user using values varchar variadic verbose when where window with
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable
    """.split()  # noqa: SIM905 - the keyword list as kwlist.h names them
)


def test_every_word_the_policys_grammar_reserves_beyond_15s_is_read_as_15_reads_it():
    """pglast's grammar (PostgreSQL 18) reads words as keywords that 15 reads as names: a
    name 15 would call must be a call to the policy too (red-team round 20: json_value(a,
    b) ran a user's public.json_value without an execute scope). A newer pglast with more
    such words fails here until pgparse decides them."""
    import pglast.keywords as kw

    newer = (
        kw.COL_NAME_KEYWORDS | kw.TYPE_FUNC_NAME_KEYWORDS | kw.RESERVED_KEYWORDS
    ) - _PG15_KEYWORDS
    from policy.classify.pgparse import NEWER_SYNTAX_CALLS

    # system_user: a reserved word in 16+, SQLValueFunction; to 15 a column name (a bare
    # column is sqlglot's reading, which the policy decides columns on)
    assert newer == NEWER_SYNTAX_CALLS | {"system_user"}


@pytest.mark.parametrize(
    "sql, call",
    [
        ("SELECT json_value(a, 'b') FROM t", "json_value"),
        ("SELECT json_query(a, 'b') FROM t", "json_query"),
        ("SELECT json_exists(a, 'b') FROM t", "json_exists"),
        ("SELECT json_array(a) FROM t", "json_array"),
        ("SELECT json_array(SELECT 1)", "json_array"),
        ("SELECT json_object()", "json_object"),
        ("SELECT json_arrayagg(a) FROM t", "json_arrayagg"),
        ("SELECT json_objectagg(a : b) FROM t", "json_objectagg"),
        ("SELECT json_serialize(a) FROM t", "json_serialize"),
        ("SELECT json_scalar(a) FROM t", "json_scalar"),
        ("SELECT json(a) FROM t", "json"),
        ("SELECT merge_action()", "merge_action"),
        ("SELECT * FROM json_table('[]', '$' COLUMNS (x int))", "json_table"),
    ],
)
def test_newer_sql_json_syntax_is_read_as_postgres_15s_call(sql, call):
    st = parse(sql)[0]
    assert (None, call) in st.functions


def test_comment_on_anything_but_a_relation_type_or_column_is_not_read():
    for sql in ("COMMENT ON SCHEMA s IS 'x'", "COMMENT ON DATABASE d IS 'x'",
                "COMMENT ON ROLE r IS 'x'", "COMMENT ON EXTENSION e IS 'x'"):  # fmt: skip
        assert classify(sql)[0].cls is StatementClass.UNKNOWN, sql
    assert classify("COMMENT ON TABLE public.t IS 'x'")[0].cls is StatementClass.DDL
