"""A call or operator spelled like a built-in, or a value of a user's type, can run a
user-written function.

PostgreSQL resolves an unqualified call by the best match of argument types across the
search path, not by the first schema: with ``public.initcap(int)`` in the database,
``initcap(1)`` runs it (``pg_catalog.initcap(text)`` would need a cast). The policy used to
read such a call as the built-in by its name. These tests plant user functions and an
operator that read a secret table and let the server judge: every such call is denied
over the simple and the extended protocol, the secret never reaches the client, and
other built-ins stay allowed. The same for types: a cast to a domain runs its CHECK
constraints' functions (here, one that raises the secret in its error), a cast into a type
may be a user's function, and a row type or a domain over it runs what its parts run.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from devtools.localpg import LocalClusterError
from tests.support import planted
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue as grant_issue
from tests.support.proxies import sqlite_url
from tests.support.rawpg import RawClient, error_fields
from tests.support.rawpg import bind as rawbind
from tests.support.rawpg import parse as rawparse

pytestmark = pytest.mark.timeout(120)

AGENT = "e2e-shadow"
SCOPES = "read:public.orders,public.customers"
SECRET = "shadow-secret-5f0e"
READ_SECRET = "SELECT secret FROM secret.shadow_vault LIMIT 1"
SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.shadow_vault (secret text);
INSERT INTO secret.shadow_vault VALUES ('{SECRET}');
CREATE FUNCTION public.initcap(int) RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE FUNCTION public.pg_get_shadow() RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE FUNCTION secret.shadow_op(int, int) RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE OPERATOR public.## (LEFTARG = int, RIGHTARG = int, FUNCTION = secret.shadow_op);
CREATE FUNCTION public.shadow_row(public.orders) RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE FUNCTION secret.shadow_chk(text) RETURNS bool LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'check: %', ({READ_SECRET}); END$$;
CREATE DOMAIN public.shadow_dom AS text CHECK (secret.shadow_chk(VALUE));
CREATE DOMAIN public.shadow_dom2 AS public.shadow_dom;
CREATE TYPE public.shadow_pair AS (a int, b public.shadow_dom);
CREATE TYPE public.shadow_enum AS ENUM ('a');
CREATE FUNCTION secret.shadow_cast(int) RETURNS public.shadow_enum LANGUAGE sql
    AS $$SELECT CASE WHEN ({READ_SECRET}) IS NULL THEN 'a' END::public.shadow_enum$$;
CREATE CAST (int AS public.shadow_enum) WITH FUNCTION secret.shadow_cast(int);
CREATE TYPE public.plain_enum AS ENUM ('p');
CREATE FUNCTION secret.shadow_sfunc(int, int) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION secret.shadow_final(int) RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE AGGREGATE public.quote_ident(int)
    (SFUNC = secret.shadow_sfunc, STYPE = int, FINALFUNC = secret.shadow_final);
CREATE FUNCTION secret.shadow_raise(int, bool) RETURNS bool LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'op: %', ({READ_SECRET}); END$$;
CREATE OPERATOR public.= (LEFTARG = int, RIGHTARG = bool, FUNCTION = secret.shadow_raise);
CREATE OPERATOR public.>= (LEFTARG = int, RIGHTARG = bool, FUNCTION = secret.shadow_raise);
CREATE OPERATOR public.<= (LEFTARG = int, RIGHTARG = bool, FUNCTION = secret.shadow_raise);
CREATE TYPE public.shadow_out AS ENUM ('a');
CREATE FUNCTION secret.shadow_cast_out(public.shadow_out) RETURNS text LANGUAGE sql
    AS '{READ_SECRET}';
CREATE CAST (public.shadow_out AS text) WITH FUNCTION secret.shadow_cast_out(public.shadow_out)
    AS IMPLICIT;
CREATE DOMAIN public.shadow_dom_op AS int CHECK (VALUE = true);
CREATE DOMAIN public.shadow_dom_nest AS varchar CHECK ((VALUE::text::public.shadow_dom) IS NOT NULL);
"""
TEARDOWN = """
DROP DOMAIN IF EXISTS public.shadow_dom_op;
DROP DOMAIN IF EXISTS public.shadow_dom_nest;
DROP OPERATOR IF EXISTS public.= (int, bool);
DROP OPERATOR IF EXISTS public.>= (int, bool);
DROP OPERATOR IF EXISTS public.<= (int, bool);
DROP FUNCTION IF EXISTS secret.shadow_raise(int, bool);
DROP AGGREGATE IF EXISTS public.quote_ident(int);
DROP FUNCTION IF EXISTS secret.shadow_sfunc(int, int);
DROP FUNCTION IF EXISTS secret.shadow_final(int);
DROP CAST IF EXISTS (public.shadow_out AS text);
DROP FUNCTION IF EXISTS secret.shadow_cast_out(public.shadow_out);
DROP TYPE IF EXISTS public.shadow_out;
DROP FUNCTION IF EXISTS public.shadow_colfn(public.orders);
DROP OPERATOR IF EXISTS public.## (int, int);
DROP FUNCTION IF EXISTS secret.shadow_op(int, int);
DROP FUNCTION IF EXISTS public.initcap(int);
DROP FUNCTION IF EXISTS public.pg_get_shadow();
DROP FUNCTION IF EXISTS public.shadow_row(public.orders);
DROP FUNCTION IF EXISTS public.md5(int);
DROP FUNCTION IF EXISTS public.translate(int);
DROP TYPE IF EXISTS public.shadow_pair;
DROP DOMAIN IF EXISTS public.shadow_dom2;
DROP DOMAIN IF EXISTS public.shadow_dom;
DROP FUNCTION IF EXISTS secret.shadow_chk(text);
DROP CAST IF EXISTS (int AS public.shadow_enum);
DROP FUNCTION IF EXISTS secret.shadow_cast(int);
DROP TYPE IF EXISTS public.shadow_enum;
DROP TYPE IF EXISTS public.plain_enum;
DROP TABLE IF EXISTS public.shadow_t;
DROP TABLE IF EXISTS secret.shadow_vault;
"""
MODES = ("simple", "extended", "prepared")


@pytest.fixture(scope="module")
def sproxy(pg, tmp_path_factory):
    pg.psql(TEARDOWN, db="app")
    pg.psql(SETUP, db="app")
    url = sqlite_url(tmp_path_factory.mktemp("shadow") / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    try:

        def issue(task: str, scopes: str) -> str:
            return grant_issue(handle, agent=AGENT, task=task, scopes=scopes)[1]

        handle.agent = AGENT
        handle.token = issue("SHADOW", SCOPES)
        handle.ddl_token = issue("SHADOW-DDL", SCOPES + " ddl:public.*")
        handle.exec_token = issue("SHADOW-EXEC", SCOPES + " execute:public.initcap")
        handle.maker_token = issue("SHADOW-MAKER", SCOPES + " ddl:public.* execute:public.md5")
        yield handle
    finally:
        handle.stop()
        pg.psql(TEARDOWN, db="app")


def outcomes(handle, sql: str, token: str | None = None) -> dict[str, str]:
    return planted.outcomes(handle, sql, token)


def assert_denied(got: dict[str, str], *fragments: str) -> None:
    for mode, text in got.items():
        assert SECRET not in text, (mode, text)
        assert text.startswith("error 42501"), (mode, text)
        for fragment in fragments:
            assert fragment in text, (mode, fragment, text)


def test_the_server_runs_the_user_functions_directly(sproxy, pg):
    """The planted functions do what the tests below deny: the server's own judgement."""
    assert SECRET in pg.psql("SELECT initcap(1); SELECT 1 ## 2; SELECT pg_get_shadow()", db="app")


@pytest.mark.parametrize(
    ("sql", "target"),
    [
        ("SELECT initcap(1)", "public.initcap"),
        ("SELECT id, initcap(id) FROM public.orders", "public.initcap"),
        ("SELECT 1 ## 2", "secret.shadow_op"),  # an operator is a call of its function
        ("SELECT pg_get_shadow()", "public.pg_get_shadow"),  # a built-in's prefix, not one
        ("SELECT o.shadow_row FROM public.orders o", "public.shadow_row"),  # column syntax
    ],
)
def test_unqualified_calls_that_may_resolve_to_user_functions_are_denied(sproxy, sql, target):
    assert_denied(outcomes(sproxy, sql), target, "scope.execute")


def test_other_built_ins_stay_allowed_and_a_shadowed_name_is_denied_either_way(sproxy):
    """The policy does not type arguments: once a user function is named like a built-in,
    every unqualified use of that name needs the execute scope (docs/policy.md)."""
    got = outcomes(sproxy, "SELECT lower('ABC') || 'x', 2 # 3")
    for mode, text in got.items():
        assert "abcx" in text and not text.startswith("error"), (mode, text)
    assert_denied(outcomes(sproxy, "SELECT initcap('abc')"), "public.initcap")


def test_an_execute_scope_allows_the_user_function(sproxy):
    """The rule is the one a call by name has: execute:public.initcap allows it (the grant
    chose to let the function run; what it reads is then the function's business)."""
    got = outcomes(sproxy, "SELECT initcap(1)", sproxy.exec_token)
    assert all(SECRET in text for text in got.values()), got
    assert_denied(outcomes(sproxy, "SELECT 1 ## 2", sproxy.exec_token), "secret.shadow_op")


def test_defining_a_function_with_a_built_ins_name_needs_execute_on_it(sproxy, pg):
    """A ddl grant may not create public.md5(int): statements it already prepared, and any
    other session's unqualified md5(...), would run it (the server analyses prepared
    statements again after a definition). Nor in one message with the call."""
    create = f"CREATE FUNCTION public.md5(int) RETURNS text LANGUAGE sql AS '{READ_SECRET}'"
    assert_denied({"simple": outcomes(sproxy, create, sproxy.ddl_token)["simple"]},
                  "shadow the built-in md5")  # fmt: skip
    same = (f"CREATE FUNCTION public.translate(int) RETURNS text LANGUAGE sql AS '{READ_SECRET}';"
            " SELECT translate(1)")  # fmt: skip
    with RawClient.session(sproxy.host, sproxy.port, AGENT, sproxy.ddl_token) as c:
        frames = c.query(same)
        assert [error_fields(f).get("C") for f in frames if f[:1] == b"E"] == ["42501"]
        assert SECRET.encode() not in b"".join(frames)
    # denied as a whole: nothing of it ran
    assert pg.psql("SELECT to_regprocedure('public.translate(int)') IS NULL", db="app").strip() == "t"


def test_a_function_defined_through_the_proxy_shadows_at_once_for_every_grant(sproxy):
    """A grant that may execute public.md5 creates it; another grant's sessions are denied
    md5(...) at once, whatever a catalog reload racing the definition saw."""
    create = f"CREATE FUNCTION public.md5(int) RETURNS text LANGUAGE sql AS '{READ_SECRET}'"
    with RawClient.session(sproxy.host, sproxy.port, AGENT, sproxy.maker_token) as c:
        assert not [f for f in c.query(create) if f[:1] == b"E"]
    assert_denied(outcomes(sproxy, "SELECT md5(1)", sproxy.ddl_token), "public.md5")


def test_a_column_syntax_call_of_a_function_defined_in_the_same_message_is_denied(sproxy, pg):
    sql = (f"CREATE FUNCTION public.shadow_colfn(r public.orders) RETURNS text LANGUAGE sql "
           f"AS '{READ_SECRET}'; SELECT o.shadow_colfn FROM public.orders o LIMIT 1")  # fmt: skip
    with RawClient.session(sproxy.host, sproxy.port, AGENT, sproxy.ddl_token) as c:
        frames = c.query(sql)
        assert [error_fields(f).get("C") for f in frames if f[:1] == b"E"] == ["42501"]
        assert SECRET.encode() not in b"".join(frames)
    assert pg.psql("SELECT to_regproc('public.shadow_colfn') IS NULL", db="app").strip() == "t"


@pytest.mark.parametrize(
    ("sql", "target"),
    [
        ("SELECT quote_ident(1)", "public.quote_ident"),  # a user aggregate (internal)
        ("SELECT CASE 1 WHEN true THEN 'a' END", "secret.shadow_raise"),  # an implied =
        ("SELECT 1 BETWEEN true AND true", "secret.shadow_raise"),  # implied >= and <=
        ("SELECT 'a'::public.shadow_out::text", "secret.shadow_cast_out"),  # a cast out of it
        ("SELECT 1::public.shadow_dom_op", "secret.shadow_raise"),  # its CHECK uses an operator
        ("SELECT 'x'::public.shadow_dom_nest", "secret.shadow_chk"),  # its CHECK casts to one
    ],
)
def test_what_round_two_of_the_red_team_found_is_denied(sproxy, sql, target):
    assert_denied(outcomes(sproxy, sql), target, "scope.execute")


def test_a_join_using_an_implied_equality_is_a_use_of_that_operator(sproxy):
    """JOIN ... USING (x) compares with = looked up by name: with a user's = on the
    columns' types it runs that function. Here the planted = is on (int, bool), so the
    rule is shown on any USING join: = is shadowed, so it needs the execute scope."""
    got = outcomes(sproxy, "SELECT * FROM public.orders a JOIN public.orders b USING (id)")
    assert_denied(got, "secret.shadow_raise")


def test_a_parameter_type_given_by_oid_is_decided_by_what_the_type_runs(sproxy, pg):
    oid = int(pg.psql("SELECT 'public.shadow_dom'::regtype::oid", db="app").strip())
    plain = int(pg.psql("SELECT 'public.plain_enum'::regtype::oid", db="app").strip())
    with RawClient.session(sproxy.host, sproxy.port, AGENT, sproxy.token) as c:
        c.send(rawparse("", "SELECT $1", (oid,)), rawbind(params=[b"x"]), m.execute(), m.SYNC)
        frames = c.frames_until_ready()
        errors = [error_fields(f) for f in frames if f[:1] == b"E"]
        assert [e.get("C") for e in errors] == ["42501"], frames
        assert "secret.shadow_chk" in errors[0]["M"]
        assert SECRET.encode() not in b"".join(frames)
        c.send(rawparse("", "SELECT $1::text", (plain,)), rawbind(params=[b"p"]), m.execute(), m.SYNC)
        frames = c.frames_until_ready()
        assert not [f for f in frames if f[:1] == b"E"], frames
        assert any(f[:1] == b"D" and b"p" in f for f in frames)


def test_the_server_runs_the_type_functions_directly(sproxy, pg):
    with pytest.raises(LocalClusterError, match=SECRET):
        pg.psql("SELECT 'x'::public.shadow_dom", db="app")


@pytest.mark.parametrize(
    ("sql", "target"),
    [
        ("SELECT 'x'::public.shadow_dom", "secret.shadow_chk"),
        ("SELECT CAST('x' AS shadow_dom)", "secret.shadow_chk"),  # unqualified
        ("SELECT public.shadow_dom 'x'", "secret.shadow_chk"),  # a typed literal
        ("SELECT 'x'::public.shadow_dom2", "secret.shadow_chk"),  # a domain over it
        ("SELECT ARRAY['x']::public.shadow_dom[]", "secret.shadow_chk"),
        ("SELECT ROW(1, 'x')::public.shadow_pair", "secret.shadow_chk"),  # a row type of it
        ("SELECT 1::public.shadow_enum", "secret.shadow_cast"),  # a user's cast into a type
    ],
)
def test_values_of_types_that_run_user_functions_are_denied(sproxy, sql, target):
    assert_denied(outcomes(sproxy, sql), target, "scope.execute")


def test_types_that_run_nothing_of_a_user_stay_allowed(sproxy):
    got = outcomes(sproxy, "SELECT 'p'::public.plain_enum::text || 'x'::text, 2::int8")
    for mode, text in got.items():
        assert "px" in text and not text.startswith("error"), (mode, text)


def test_a_table_of_such_a_type_needs_the_execute_scope_to_be_created(sproxy):
    got = outcomes(sproxy, "CREATE TABLE public.shadow_t (a public.shadow_dom)", sproxy.ddl_token)
    assert_denied({"simple": got["simple"]}, "secret.shadow_chk")
