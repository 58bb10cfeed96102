"""Settings a parameter names (session 28). psycopg and asyncpg bind server-side, so a
driver's ``current_setting(%s)`` or ``set_config(%s, %s, false)`` arrives as
``current_setting($1)``: it was refused whatever the value (psycopg's suite, 81 tests). Now
the value bound decides, at each Bind, as the same call with that literal would be
(``policy.decide.bound_setting``); nowhere else may a parameter name a setting (a SQL
PREPARE's EXECUTE is not checked, a function body's ``$1`` is its argument).

Sans-IO. Through the proxy, the server the judge:
tests/integration/test_s28_settings_by_parameter.py."""

from __future__ import annotations

import dataclasses

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from policy import StatementPolicy, parse_scopes
from policy.classify import classify
from policy.engine import SharedClassifications
from proxy.relay import Relay

SCOPES = "read:public.* set:work_mem,app.allowed"
READS = ["SELECT current_setting($1)", "SELECT current_setting($1, true)",
         "SELECT pg_catalog.current_setting($1)", "SELECT upper(current_setting($1)) AS s"]  # fmt: skip


def policy(scopes: str = SCOPES, **kw) -> StatementPolicy:
    return StatementPolicy(parse_scopes(scopes), task="S28", **kw)


def parsed(p: StatementPolicy, sql: str, name: str = "st"):
    verdict = p.check_parse(sql, (), name)
    assert verdict.allowed, (sql, verdict.message)
    assert name in p.bind_pins, "its Binds are checked"
    return verdict


def bound(p: StatementPolicy, *values, name: str = "st", fmt: int = 0):
    raw = tuple(v if v is None or isinstance(v, bytes) else v.encode() for v in values)
    return p.check_bind(name, (fmt,), raw, "utf-8")


def rule(verdict) -> str:
    return next(
        (d.rule for _c, d in verdict.decisions if not d.allowed), verdict.decisions[-1][1].rule
    )


@pytest.mark.parametrize("sql", READS)
@pytest.mark.parametrize(
    ("value", "allowed", "why"),
    [
        ("transaction_isolation", True, "default.show"),
        ("TimeZone", True, "default.show"),
        ("app.allowed", True, "scope.set"),
        ("APP.Allowed", True, "scope.set"),  # setting names compare case-insensitively
        ("app.secret", False, "deny.setting_read"),
        ("APP.SECRET", False, "deny.setting_read"),
        ("data_directory", False, "deny.setting_read"),  # PostgreSQL shows it to superusers
        ("Config_File", False, "deny.setting_read"),
        # not plainly a setting's name: the server's reading of it is not this one's
        (" app.secret", False, "deny.function"),
        ("app.secret ", False, "deny.function"),
        ("app.secret\t", False, "deny.function"),
        ("app.s\u00e9cret", False, "deny.function"),
        ("data_directory" + "x" * 50, False, "deny.function"),  # 64 bytes: cut by a name
        ("", False, "deny.function"),
        (None, False, "deny.function"),
    ],
)
def test_a_setting_read_by_parameter_is_decided_on_the_value_bound(sql, value, allowed, why):
    p = policy()
    parsed(p, sql)
    verdict = bound(p, value)
    assert (verdict.allowed, rule(verdict)) == (allowed, why), verdict.message


def test_a_binary_value_is_read_as_its_characters():
    p = policy()
    parsed(p, READS[0])
    assert bound(p, b"jit", fmt=1).allowed
    assert not bound(p, b"app.secret", fmt=1).allowed
    assert not bound(p, b"app.secret\x00", fmt=1).allowed  # no NUL in a setting's name


def test_each_bind_is_decided_again():
    p = policy()
    parsed(p, READS[0])
    assert bound(p, "jit").allowed
    assert not bound(p, "app.secret").allowed
    assert bound(p, "work_mem").allowed, "a refusal leaves the statement usable"


@pytest.mark.parametrize(
    ("values", "allowed", "why"),
    [
        (("work_mem", "64MB"), True, "scope.set"),
        (("statement_timeout", "1s"), True, "default.setting"),
        (("client_encoding", "LATIN1"), True, "default.setting"),
        (("client_encoding", "utf8"), True, "default.setting"),
        (("random_page_cost", "1"), False, "deny.setting"),  # no set: scope names it
        (("app.secret", "x"), False, "deny.setting"),
        (("search_path", "evil, public"), False, "deny.function"),
        (("Role", "postgres"), False, "deny.function"),
        (("session_authorization", "postgres"), False, "deny.function"),
        (("standard_conforming_strings", "off"), False, "deny.function"),
        # an encoding that can hide a quote inside a multibyte character, however written
        (("client_encoding", "SJIS"), False, "deny.setting"),
        (("CLIENT_ENCODING", "s j i s"), False, "deny.setting"),
        (("client_encoding", "big5"), False, "deny.setting"),
        (("client_encoding", "EUC_TW"), False, "deny.setting"),  # no exact codec
        (("client_encoding", None), False, "deny.setting"),
        (("client_encoding", "UTF" + "-" * 60 + "8"), False, "deny.setting"),  # cut at 63
        ((None, "x"), False, "deny.function"),
        (("work_mem;", "1"), False, "deny.function"),
    ],
)
def test_a_setting_changed_by_parameter_is_decided_like_set(values, allowed, why):
    p = policy()
    parsed(p, "SELECT set_config($1, $2, false)")
    verdict = bound(p, *values)
    assert (verdict.allowed, rule(verdict)) == (allowed, why), verdict.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('client_encoding', $1, false)",
        "SELECT set_config('CLIENT_ENCODING', $1, true)",
    ],
)
def test_an_encoding_bound_to_a_literal_client_encoding_is_checked(sql):
    p = policy()
    parsed(p, sql)
    assert bound(p, "LATIN1").allowed and bound(p, "UTF8").allowed
    for value in ("SJIS", "shift_jis", "GBK", "MULE_INTERNAL", "no-such-encoding", None):
        verdict = bound(p, value)
        assert not verdict.allowed and rule(verdict) == "deny.setting", (value, verdict.message)


def test_a_literal_encoding_is_decided_like_set_client_encoding():
    p = policy()
    assert p.check_query("SELECT set_config('client_encoding', 'LATIN1', false)").allowed
    assert p.check_query("SELECT set_config('client_encoding', 'utf-8', true)").allowed
    for sql in (
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('client_encoding', 'BIG5', true)",
        "SELECT set_config('client_encoding', 'UT' || 'F8', false)",  # not a literal
        "SELECT set_config('client_encoding', lower($1), false)",
    ):
        assert not p.check_query(sql).allowed, sql
        assert not p.check_parse(sql, (), "x").allowed, sql


@pytest.mark.parametrize(
    "sql",
    [
        # a cast's output is what the server reads: $1::text of a regclass is its
        # relation's name (red-team round 57); a cast to text or varchar is a pin only
        # where nothing else types the parameter (test_a_text_cast_... below)
        "SELECT $1::regclass IS NOT NULL AS x, current_setting($1::text)",
        "SELECT current_setting($1::text), length($1::varchar)",
        "SELECT current_setting($1::varchar(3))",  # a typmod cuts the name
        "SELECT current_setting($1::bpchar)",  # trailing blanks dropped by the server
        "SELECT current_setting($1::text::varchar)",
        "SELECT current_setting($1 || '')",
        "SELECT current_setting(lower($1))",
        "SELECT current_setting(coalesce($1, 'jit'))",
        "SELECT set_config(lower($1), 'x', false)",
        "SELECT set_config($1::name, 'x', false)",
        "SELECT set_config('client_encoding', $1 || '', false)",
    ],
)
def test_a_parameter_inside_an_expression_names_no_setting(sql):
    p = policy()
    verdict = p.check_parse(sql, (), "st")
    assert not verdict.allowed and rule(verdict) == "deny.function", verdict.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT current_setting($1::text)",
        "SELECT current_setting($1::text, true)",
        "SELECT current_setting(CAST($1 AS text))",
        "SELECT current_setting($1::VARCHAR)",  # SQLAlchemy over psycopg 3
        "SELECT set_config($1::text, 'x', false)",
        "SELECT set_config('client_encoding', $1::text, false)",
    ],
)
def test_a_text_cast_parameter_names_a_setting_where_nothing_else_types_it(sql):
    """Session 39 (the drivers' differential: SQLAlchemy's reflection over psycopg 3): a
    parameter cast to text or varchar, with no type modifier, occurring once, is pinned as
    a bare one, and decided at each Bind on the text bound, which the server reads itself
    where the Parse leaves the parameter untyped or gives it text or varchar; a Parse giving
    any parameter another type (the relay's 0 among ``param_types``:
    ``messages.policy_parse_types``) is refused."""
    p = policy()
    assert p.check_parse(sql, (), "st").allowed
    verdict = p.check_parse(sql, (0,), "st2")
    assert not verdict.allowed and rule(verdict) == "deny.function", verdict.message
    assert "leave it untyped or declare it text" in verdict.message, verdict.message


@pytest.mark.parametrize(
    "sql",
    [
        "PREPARE p28(text) AS SELECT current_setting($1)",
        "PREPARE p28(text, text) AS SELECT set_config($1, $2, false)",
        "PREPARE p28(text) AS SELECT set_config('client_encoding', $1, false)",
        # a function's own argument, whatever a caller passes
        "CREATE FUNCTION public.f28(text) RETURNS text RETURN current_setting($1)",
        "CREATE OR REPLACE FUNCTION public.f28(a text, b text) RETURNS text "
        "RETURN set_config($1, $2, false)",
        "CREATE FUNCTION public.f28(text) RETURNS text RETURN set_config('client_encoding', $1, false)",
    ],
)
def test_only_a_protocol_parses_parameter_may_name_a_setting(sql):
    # the grant may define and run public.f28: the refusal is the parameter's
    p = policy(SCOPES + " ddl:public.* execute:public.*")
    for verdict in (p.check_query(sql), p.check_parse(sql, (), "st")):
        assert not verdict.allowed and rule(verdict) == "deny.function", verdict.message
        assert "named by a parameter here" in verdict.message
    # (a BEGIN ATOMIC body is refused before: its statements are not read alike)
    body = (
        "CREATE FUNCTION public.f28(text) RETURNS text BEGIN ATOMIC SELECT current_setting($1); END"
    )
    assert not p.check_query(body).allowed


def test_the_parameter_pinned_is_the_one_the_call_reads():
    """Two texts of one number shape, their calls reading different parameters: each
    Bind checks the value its own call reads (no cache answers one with the other)."""
    shared = SharedClassifications()
    first, second = policy(shared=shared), policy(shared=shared)
    parsed(first, "SELECT current_setting($1), $2::text AS b")
    assert bound(first, "jit", "app.secret").allowed
    parsed(second, "SELECT current_setting($2), $1::text AS b")
    verdict = bound(second, "jit", "app.secret")
    assert not verdict.allowed and "app.secret" in verdict.message
    parsed(first, "SELECT current_setting($1), current_setting($2)", name="two")
    assert bound(first, "jit", "work_mem", name="two").allowed
    assert not bound(first, "jit", "app.secret", name="two").allowed


def test_a_call_marked_by_parameter_without_its_pin_is_refused():
    """The decision's seam: a classification naming a call ``$`` without the pin
    PostgreSQL's reading makes (either alone) is refused, not allowed unchecked."""
    p = policy()
    (c,) = classify("SELECT current_setting($1)")
    assert c.describes, "PostgreSQL's reading pins it"
    assert p._decision(c).allowed
    for bare in (dataclasses.replace(c, describes=frozenset()),
                 dataclasses.replace(c, functions=frozenset({"current_setting"}))):  # fmt: skip
        decision = p._decision(bare)
        assert not decision.allowed and decision.rule == "deny.function", bare


def test_the_relay_counts_such_a_call_as_changing_the_encoding():
    """``set_config`` of client_encoding by parameter, or of a setting a parameter names,
    may change the encoding: later non-ASCII statements wait for the server's answer
    (``Relay.encoding_changed``), as after ``SET client_encoding``."""
    for sql in ("SELECT set_config('client_encoding', $1, false)", "SELECT set_config($1, $2, false)",
                "SELECT set_config('client_encoding', 'LATIN1', false)"):  # fmt: skip
        relay = Relay(policy=policy())
        assert not relay.encoding_changed
        relay.from_client(m.parse("st", sql) + m.SYNC)
        assert relay.encoding_changed, sql
    relay = Relay(policy=policy())
    relay.from_client(m.parse("st", "SELECT current_setting($1)") + m.SYNC)
    relay.from_client(m.parse("w", "SELECT set_config('work_mem', $1, false)") + m.SYNC)
    assert not relay.encoding_changed, "a read, or another setting by literal name"
    relay.from_server(frame(b"1") + m.ready_for_query(b"I"))


def test_a_user_function_of_the_name_needs_an_execute_scope():
    """``current_setting($1)`` with ``$1`` declared varchar resolves to a user's
    ``public.current_setting(varchar)`` (an exact match beats the built-in's text): the
    call, by literal or parameter, is decided as a call of the name it shadows (red-team
    round 57: the prefixed names were looked up as written, never found)."""
    from policy.catalog import CatalogCache

    c = CatalogCache()
    user = {n: frozenset({f"public.{n}"}) for n in ("current_setting", "set_config")}
    c.put("db", ["current_setting", "set_config"], {}, user_functions=user)
    for scopes, allowed in ((SCOPES, False), (SCOPES + " execute:public.*", True)):
        p = policy(scopes)
        p.catalog = lambda: c.get("db")
        p.catalog_entry = c.entry("db")
        for sql in ("SELECT current_setting($1)", "SELECT set_config($1, $2, false)",
                    "SELECT set_config('work_mem', $1, false)", "SELECT current_setting('jit')"):  # fmt: skip
            verdict = p.check_parse(sql, (), "st")
            assert verdict.allowed is allowed, (scopes, sql, verdict.message)
            if not allowed:
                assert "public." in verdict.message and "user-written" in verdict.message


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "current_setting:timezone"() AS v ORDER BY 1 USING <',  # PostgreSQL's reading alone
        "SELECT \"set_config:work_mem\"('a', 'b', false) AS v ORDER BY 1 USING <",
        'SELECT "current_setting:$"($1) AS v ORDER BY 1 USING <',
        'SELECT "current_setting:timezone"()',
    ],
)
def test_a_function_named_like_the_rendering_of_a_setting_call_is_not_one(sql):
    """A quoted user function name spelled like classify's rendering of a setting call
    (``current_setting:<setting>``) was decided as that call where PostgreSQL's reading
    alone named it (red-team round 58): it is refused now, whatever reads it."""
    p = policy(SCOPES + " set:timezone")
    for verdict in (p.check_query(sql), p.check_parse(sql, (), "st")):
        assert not verdict.allowed, (sql, verdict.message)


def test_a_bare_parameter_beside_a_literal_spelled_like_the_mark_is_not_a_cast():
    """The cast's mark ends the pin's spec as a JSON object, which no literal renders as: a
    bare parameter beside the literal 'cast' is decided as a bare one, whatever types the
    Parse declares (asyncpg declares every parameter's)."""
    p = policy()
    assert p.check_parse("SELECT set_config($1, 'cast', false)", (0,), "st").allowed
