"""Code holds secrets too, through its side doors: plans and error contexts.

The catalogs' definitions are refused without a scope (``read:pg_catalog.pg_views`` for
view queries, ``read:pg_catalog.pg_proc`` for function bodies: docs/policy.md, "Code holds
secrets too"). The same code reached the client two other ways, each probed here with a
literal planted in it, over the simple protocol, the extended one and a prepared
statement (``test_the_server_shows_the_code_when_asked_directly``: every probe could leak):

* a plan: ``EXPLAIN`` of a statement naming a view prints the view's query (``Filter: (pin
  <> '<literal>')``), of one writing a table with rules the rules' actions, and of one
  calling a user-written SQL function its inlined body;
* an error's or notice's context: PostgreSQL quotes the statement of a PL/pgSQL body that
  failed or raised (``SQL statement "SELECT ... '<literal>'"``), from a function an
  execute scope allows or a trigger a write fires, and the internal query field repeats it.

Now EXPLAIN needs the same scopes as the catalogs (``StatementPolicy._explained_code``),
and the relay withholds the quoted code and the internal query while leaving the lines
that say where it failed (``proxy.redaction.strip_code``). A grant with the scopes sees
both as before.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import planted
from tests.support.pg import direct_dsn
from tests.support.planted import assert_no_leak, received
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import UPSTREAM_USER

pytestmark = pytest.mark.timeout(180)

S = {
    "view": "cs-viewdef-secret-0a1b",
    "sqlfn": "cs-sqlfn-secret-77c1",
    "plpgsql": "cs-plpgsql-secret-3c9d",
    "trigger": "cs-trigger-secret-5e20",
    "notice": "cs-notice-secret-91aa",
    "rule": "cs-rule-secret-08f4",
}
SETUP = f"""
CREATE TABLE public.cs_t (id int, pin text);
INSERT INTO public.cs_t VALUES (1, 'a');
CREATE VIEW public.cs_keyed AS SELECT id FROM public.cs_t WHERE pin <> '{S["view"]}';
CREATE FUNCTION public.cs_is_key(p text) RETURNS bool LANGUAGE sql IMMUTABLE
    AS $$ SELECT p = '{S["sqlfn"]}' $$;
CREATE FUNCTION public.cs_pl(p text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE r int;
BEGIN
  SELECT p::int + length('{S["plpgsql"]}') INTO r;
  RETURN r;
END $$;
CREATE FUNCTION public.cs_inner(p text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'inner says %', length(p); END $$;
CREATE FUNCTION public.cs_note(p text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN PERFORM public.cs_inner(p || '{S["notice"]}'); RETURN 1; END $$;
CREATE FUNCTION public.cs_trg() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r int;
BEGIN
  SELECT NEW.pin::int + length('{S["trigger"]}') INTO r;
  RETURN NEW;
END $$;
CREATE TRIGGER cs_trg BEFORE INSERT ON public.cs_t FOR EACH ROW
    WHEN (NEW.id > 100) EXECUTE FUNCTION public.cs_trg();
CREATE TABLE public.cs_ruled (id int);
CREATE TABLE public.cs_rule_log (k text, id int);
CREATE RULE cs_rule AS ON INSERT TO public.cs_ruled
    DO ALSO INSERT INTO public.cs_rule_log VALUES ('{S["rule"]}', NEW.id);
"""
for _owned in ("TABLE public.cs_t", "TABLE public.cs_ruled", "TABLE public.cs_rule_log",
               "VIEW public.cs_keyed", "FUNCTION public.cs_is_key(text)",
               "FUNCTION public.cs_pl(text)", "FUNCTION public.cs_inner(text)",
               "FUNCTION public.cs_note(text)", "FUNCTION public.cs_trg()"):  # fmt: skip
    SETUP += f"ALTER {_owned} OWNER TO {UPSTREAM_USER};\n"
TEARDOWN = (
    "DROP VIEW IF EXISTS public.cs_keyed; DROP TABLE IF EXISTS public.cs_t, public.cs_ruled, "
    "public.cs_rule_log; "
    "DROP FUNCTION IF EXISTS public.cs_is_key(text), public.cs_pl(text), "
    "public.cs_note(text), public.cs_inner(text), public.cs_trg();"
)
SCOPES = ("read:public.cs_t,public.cs_keyed,public.cs_ruled write:public.cs_t,public.cs_ruled "
          "execute:public.cs_is_key,public.cs_pl,public.cs_note")  # fmt: skip
OPTED = SCOPES + " read:pg_catalog.pg_views,pg_catalog.pg_proc,pg_catalog.pg_rules"
SCOPE_OF = {"view": "pg_catalog.pg_views", "sqlfn": "pg_catalog.pg_proc", "rule": "pg_catalog.pg_rules"}

EXPLAINS = {
    "view": [
        "EXPLAIN SELECT * FROM public.cs_keyed",
        "EXPLAIN (VERBOSE) SELECT id FROM cs_keyed WHERE id > 0",
        "EXPLAIN ANALYZE SELECT * FROM public.cs_keyed",
        "EXPLAIN (FORMAT JSON) SELECT count(*) FROM public.cs_keyed",
    ],
    "sqlfn": [
        "EXPLAIN SELECT * FROM public.cs_t WHERE public.cs_is_key(pin)",
        "EXPLAIN VERBOSE SELECT public.cs_is_key(pin) FROM public.cs_t",
        "EXPLAIN SELECT * FROM public.cs_t WHERE cs_is_key(pin)",
    ],
    "rule": [
        "EXPLAIN VERBOSE INSERT INTO public.cs_ruled VALUES (1)",
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO cs_ruled SELECT 2",
    ],
}
CONTEXTS = {
    "plpgsql": "SELECT public.cs_pl('x')",
    "notice": "SELECT public.cs_note('x')",
    "trigger": "INSERT INTO public.cs_t VALUES (101, 'x')",
}


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "codedoors", agent="cs-bot", scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.opted = grant_issue(handle, agent="cs-bot", task="CODEDOORS-OPTED", scopes=OPTED)[1]
        yield handle


def test_the_server_shows_the_code_when_asked_directly(px, pg):
    with psycopg.connect(direct_dsn(pg), autocommit=True) as conn:
        for key, sqls in EXPLAINS.items():
            for sql in sqls:
                plan = str(conn.execute(sql).fetchall())
                assert S[key] in plan, sql
        contexts: list[str] = []
        conn.add_notice_handler(lambda d: contexts.append(d.context or ""))
        for key, sql in CONTEXTS.items():
            contexts.clear()
            try:
                conn.execute(sql)
            except psycopg.errors.InvalidTextRepresentation as exc:
                contexts.append(exc.diag.context or "")
            assert any(S[key] in n for n in contexts), (sql, contexts)


@pytest.mark.parametrize("key, sql", [(k, s) for k, sqls in EXPLAINS.items() for s in sqls])
def test_explain_needs_the_scope_the_definition_needs(px, key, sql):
    got = received(px, sql)
    assert_no_leak(got, [S[key]], sql)
    scope = SCOPE_OF[key]
    for mode, text in got.items():
        assert "42501" in text and f"read:{scope}" in text, (mode, sql, text[-400:])


@pytest.mark.parametrize("key", sorted(CONTEXTS))
def test_a_context_keeps_where_it_failed_and_loses_the_code(px, key):
    sql = CONTEXTS[key]
    got = received(px, sql)
    assert_no_leak(got, [S[key]], sql)
    for mode, text in got.items():
        if key == "trigger":  # a write to a table with a trigger: the whole message (round 19)
            assert "message withheld" in text, (mode, sql, text[-500:])
            continue
        assert "PL/pgSQL function" in text and "withheld" in text, (mode, sql, text[-500:])
    if key == "notice":  # the notice itself, and the call's result, still arrive
        assert all("inner says" in t for t in got.values())


def test_with_the_scopes_plans_and_contexts_are_whole(px):
    for key, sqls in EXPLAINS.items():
        got = received(px, sqls[0], token=px.opted)
        for mode, text in got.items():
            assert S[key] in text, (mode, sqls[0], text[-400:])
    got = received(px, CONTEXTS["plpgsql"], token=px.opted)
    for mode, text in got.items():
        assert S["plpgsql"] in text and "withheld" not in text, (mode, text[-400:])


def test_plans_of_tables_and_built_ins_stay_readable(px):
    sql = "EXPLAIN SELECT * FROM public.cs_t WHERE lower(pin) = 'a'"
    for mode, text in received(px, sql).items():
        assert "Seq Scan on cs_t" in text and "ERROR" not in text, (mode, text[-400:])
