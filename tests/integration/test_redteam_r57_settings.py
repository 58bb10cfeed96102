"""Red-team round 57: settings a parameter names (session 28, ``fbc9fce``), the server the
judge. An agent holding ``read:public.* set:work_mem`` tries to get a custom setting
planted for the database (``ALTER DATABASE app SET app.r57_secret = ...``, which any session
of it reads directly) through ``current_setting($n)`` / ``set_config($n, ...)`` decided at
each Bind, to change a forbidden setting, or to switch the session to an encoding that can
hide quotes; each probe runs the same frames directly and through the proxy.

Families: parameter types declared at Parse, formats and counts, where the call sits,
spellings, statement names (reuse, Close, SQL ``EXECUTE`` of a protocol statement), the
shared classification cache, SQL PREPARE, simple Query, FunctionCall, encodings.

Found and fixed in session 28 (strict xfails until then, now held): (1) a parameter cast
to text was taken as the setting's name, but the server reads the cast's output: a
regclass bound as an OID is its relation's qualified name, here a custom setting's
(``pgparse._setting_ref`` now pins a bare ``$n`` only); (2) a user function named
``current_setting`` or ``set_config`` (``public``, on the path, taking varchar: an exact
match beats the built-in's text) ran unchecked, the calls being classified under prefixed
names the shadow check never looked up (``policy.catalog.called_name``); the literal
``set_config('work_mem', $1, ...)`` form was missed alike before the session. The shadows
are planted for the last test only, with a proxy of its own.
"""

from __future__ import annotations

import struct

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(180)

AGENT = "r57-bot"
SETTING = "app.r57_secret"
SECRET = "r57-planted-5b9e31"
SHADOW = "r57-shadow-ran"
SCOPES = "read:public.* set:work_mem"
SETUP = f"""
ALTER DATABASE app SET {SETTING} = '{SECRET}';
CREATE SCHEMA r57app;
CREATE TABLE r57app.r57_secret (id int);
CREATE DOMAIN public.r57_text AS text;
GRANT USAGE ON SCHEMA r57app TO PUBLIC;
"""
TEARDOWN = f"""
ALTER DATABASE app RESET {SETTING};
DROP SCHEMA IF EXISTS r57app CASCADE;
DROP DOMAIN IF EXISTS public.r57_text;
"""
# planted for the last test only (a proxy of its own): a user function of the name on the
# path takes every call the server resolves to it, and the module's other probes would all
# be refused for want of an execute scope on it
SHADOWS = f"""
CREATE FUNCTION public.current_setting(varchar) RETURNS text LANGUAGE sql
    AS $$ SELECT '{SHADOW}:' || pg_catalog.current_setting('{SETTING}') $$;
CREATE FUNCTION public.set_config(varchar, varchar, boolean) RETURNS text LANGUAGE sql
    AS $$ SELECT '{SHADOW}:' || pg_catalog.current_setting('{SETTING}') $$;
"""
UNSHADOW = """
DROP FUNCTION IF EXISTS public.current_setting(varchar);
DROP FUNCTION IF EXISTS public.set_config(varchar, varchar, boolean);
"""
# the name the regclass of the planted table reads as (its schema is not on the path)
TABLE_SETTING = "r57app.r57_secret"
TABLE_SECRET = "r57-table-named-7d20aa"
OIDS = (
    "SELECT 'TABLE=' || 'r57app.r57_secret'::regclass::oid "
    "UNION ALL SELECT 'DOMAIN=' || 'public.r57_text'::regtype::oid"
)

READ = "SELECT current_setting($1)"
SETTER = "SELECT set_config($1, $2, false)"
ENC = "SELECT set_config('client_encoding', $1, false)"

NAME, BPCHAR, VARCHAR, CHAR, TEXT, BYTEA = 19, 1042, 1043, 18, 25, 17
INT8, REGCLASS, TEXT_ARRAY = 20, 2205, 1009


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    setup = SETUP + f"ALTER DATABASE app SET {TABLE_SETTING} = '{TABLE_SECRET}';"
    teardown = TEARDOWN + f"ALTER DATABASE app RESET {TABLE_SETTING};"
    with planted.running(pg, tmp_path_factory, "r57set", agent=AGENT, scopes=SCOPES,
                         setup=setup, teardown=teardown) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OIDS)
        yield handle


def b(*values, fmts=(), statement: str = "", portal: str = "") -> bytes:
    """A Bind of text values (bytes pass as they are; None: NULL)."""
    raw = [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]
    return bind(portal, statement, raw, fmts)


def close_statement(name: str) -> bytes:
    return frame(b"C", b"S" + name.encode() + b"\x00")


def describe_statement(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def function_call(oid: int, *args: str) -> bytes:
    body = struct.pack("!Ih", oid, 0) + struct.pack("!h", len(args))
    for a in args:
        body += struct.pack("!i", len(a.encode())) + a.encode()
    return frame(b"F", body + struct.pack("!h", 0))


def one(sql: str, *values, oids=(), fmts=()) -> list:
    """One unnamed Parse/Bind/Execute/Sync group."""
    return [(parse("", sql, oids), b(*values, fmts=fmts), execute(), SYNC)]


def latin1_parse(sql: str) -> bytes:
    return frame(b"P", b"\x00" + sql.encode("latin-1") + b"\x00" + struct.pack("!h", 0))


# name -> (steps (a callable of the handle's OIDs when they need them), the secret the
# server answers with directly (None: it does not: an error or no row), the leak's reason
# for a strict xfail, or False: it holds)
S, T = SECRET, TABLE_SECRET
PROBES: dict[str, tuple] = {
    # -- parameter types declared at Parse ------------------------------------------------
    "type-name": (one(READ, SETTING, oids=(NAME,)), S, False),
    "type-bpchar": (one(READ, SETTING, oids=(BPCHAR,)), S, False),
    "type-text-binary": (one(READ, SETTING, oids=(TEXT,), fmts=(1,)), S, False),
    "type-char": (one(READ, SETTING, oids=(CHAR,)), None, False),
    "type-bytea-cast": (
        one("SELECT current_setting($1::text)", SETTING, oids=(BYTEA,)),
        None,
        False,
    ),
    "type-int8-binary-cast": (
        one("SELECT current_setting($1::text, true)", SETTING[:8], oids=(INT8,), fmts=(1,)),
        None,
        False,
    ),
    "type-text-array-cast": (
        one("SELECT current_setting($1::text)", "{" + SETTING + "}", oids=(TEXT_ARRAY,)),
        None,
        False,
    ),
    "type-domain-over-text": (lambda o: one(READ, SETTING, oids=(int(o["DOMAIN"]),)), S, False),
    # a regclass parameter cast to text: the proxy decides on the OID's digits (a built-in
    # name, readable), the server reads the table's qualified name: a custom setting's
    "type-regclass-oid-cast": (
        lambda o: one("SELECT current_setting($1::text)", o["TABLE"], oids=(REGCLASS,)),
        T,
        False,  # (a leak until session 28: the module docstring)
    ),
    # the same without a declared type: a cast before the call types the parameter
    "type-regclass-inferred": (
        lambda o: one(
            "SELECT $1::regclass IS NOT NULL AS x, current_setting($1::text)", o["TABLE"]
        ),
        T,
        False,  # (a leak until session 28: the module docstring)
    ),
    # session 39: a parameter cast to text or varchar is pinned where nothing else types
    # it (SQLAlchemy over psycopg 3: current_setting($1::VARCHAR)), decided at each Bind on
    # the text bound, which is what the server reads: the planted setting stays refused
    "cast-varchar-untyped": (one("SELECT current_setting($1::VARCHAR)", SETTING), S, False),
    "cast-text-declared-text": (
        one("SELECT current_setting($1::text)", SETTING, oids=(TEXT,)), S, False),
    "cast-varchar-declared-varchar-binary": (
        one("SELECT current_setting($1::varchar)", SETTING, oids=(VARCHAR,), fmts=(1,)), S,
        False),
    "cast-set-config-untyped": (
        one("SELECT set_config($1::text, 'x', false)", SETTING), None, False),
    # ... and not where another parameter's declared type is other (the rule looks at the
    # Parse's whole list), a type modifier cuts the name, or the parameter is used twice
    "cast-other-parameter-int8": (
        one("SELECT current_setting($1::text), $2", SETTING, "1", oids=(0, INT8)), S, False),
    "cast-varchar-typmod": (
        one("SELECT current_setting($1::varchar(14))", SETTING + "-tail"), S, False),
    "cast-used-twice": (
        one("SELECT current_setting($1::text), length($1::text)", SETTING), S, False),
    # (no user function of the name here: varchar picks the built-in)
    "varchar-secret-name": (one(READ, SETTING, oids=(VARCHAR,)), S, False),
    # -- formats and counts ---------------------------------------------------------------
    "values-two-for-one-parameter": (one(READ, "jit", SETTING), None, False),
    "parameter-out-of-range": (one("SELECT current_setting($3)", "jit", SETTING), None, False),
    "null-name": (one(READ, None), None, False),
    "same-parameter-twice": (one("SELECT current_setting($1), $1::text AS n", SETTING), S, False),
    "second-of-two-calls": (
        one("SELECT current_setting($1), current_setting($2)", "jit", SETTING),
        S,
        False,
    ),
    "setter-reads-by-value": (
        one("SELECT set_config('work_mem', current_setting($1), false)", SETTING),
        S,
        False,
    ),
    # -- where the call sits --------------------------------------------------------------
    **{
        f"context-{key}": (one(sql, SETTING), S, False)
        for key, sql in {
            "subquery": "SELECT (SELECT current_setting($1))",
            "cte": "WITH c AS (SELECT current_setting($1) AS v) SELECT v FROM c",
            "lateral": "SELECT l.v FROM public.orders o, LATERAL (SELECT current_setting($1) AS v) l LIMIT 1",
            "order-by": "SELECT 1 AS k ORDER BY current_setting($1)::int",
            "case": "SELECT CASE WHEN true THEN current_setting($1) END",
            "coalesce": "SELECT coalesce(NULL, current_setting($1))",
            "window": "SELECT first_value(current_setting($1)) OVER ()",
            "from-function": "SELECT * FROM current_setting($1)",
            "quoted-qualified": 'SELECT pg_catalog."current_setting"($1)',
            "cast-syntax": "SELECT current_setting(CAST($1 AS text))",
            "having": "SELECT count(*) FROM public.orders HAVING current_setting($1)::int > 0",
            "explain-analyze": "EXPLAIN (ANALYZE, COSTS OFF) SELECT current_setting($1)::int",
        }.items()
    },
    # (PostgreSQL names neither argument: errors, as the proxy refuses at Parse)
    "context-named-only": (one("SELECT current_setting(setting_name => $1)", SETTING), None, False),
    "context-missing-ok-named": (
        one("SELECT current_setting($1, missing_ok => true)", SETTING),
        None,
        False,
    ),
    "context-variadic": (one("SELECT current_setting(VARIADIC $1)", SETTING), None, False),
    "context-copy": (one("COPY (SELECT current_setting($1)) TO STDOUT", SETTING), None, False),
    "context-create-table-as": (
        [
            (
                parse("", "CREATE TEMP TABLE r57t AS SELECT current_setting($1) AS v"),
                b(SETTING),
                execute(),
                SYNC,
            ),
            (query("TABLE r57t"),),
        ],
        S,
        False,
    ),  # fmt: skip
    "cursor-with-hold": (
        [
            (
                parse("", "DECLARE r57c CURSOR WITH HOLD FOR SELECT current_setting($1)"),
                b(SETTING),
                execute(),
                SYNC,
            ),
            (query("FETCH ALL r57c"),),
        ],
        S,
        False,
    ),  # fmt: skip
    # -- statement names ------------------------------------------------------------------
    "name-reused-next-group": (
        [
            (parse("s", READ), SYNC),
            (parse("s", "SELECT $1::text"), SYNC),
            (b(SETTING, statement="s"), execute(), SYNC),
        ],
        S,
        False,
    ),  # fmt: skip
    "name-reused-same-group": (
        [
            (parse("s", READ), parse("s", "SELECT $1::text"), SYNC),
            (b(SETTING, statement="s"), execute(), SYNC),
        ],
        S,
        False,
    ),  # fmt: skip
    "close-reparse-one-group": (
        [
            (parse("s", "SELECT $1::text"), SYNC),
            (close_statement("s"), parse("s", READ), b(SETTING, statement="s"), execute(), SYNC),
        ],
        S,
        False,
    ),  # fmt: skip
    "sql-prepare-over-name": (
        [
            (parse("s", READ), SYNC),
            (query("PREPARE s(text) AS SELECT $1"),),
            (b(SETTING, statement="s"), execute(), SYNC),
        ],
        S,
        False,
    ),  # fmt: skip
    "deallocate-then-bind": (
        [
            (parse("s", READ), SYNC),
            (query("DEALLOCATE s"),),
            (parse("s", "SELECT $1::text"), b(SETTING, statement="s"), execute(), SYNC),
        ],
        None,
        False,
    ),  # fmt: skip
    "sql-execute-protocol-statement": (
        [(parse("s", READ), SYNC), (query(f"EXECUTE s('{SETTING}')"),)],
        S,
        False,
    ),  # fmt: skip
    "sql-execute-protocol-statement-extended": (
        [(parse("s", READ), SYNC), (parse("", f"EXECUTE s('{SETTING}')"), b(), execute(), SYNC)],
        S,
        False,
    ),  # fmt: skip
    "explain-execute-protocol-statement": (
        [
            (parse("s", "SELECT current_setting($1) = 'x'"), SYNC),
            (query(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE s('{SETTING}')"),),
        ],
        None,
        False,
    ),  # fmt: skip
    "flush-then-bind": (
        [(parse("s", READ), FLUSH, b(SETTING, statement="s"), execute(), SYNC)],
        S,
        False,
    ),
    "describe-portal-then-execute": (
        [
            (
                parse("s", READ),
                describe_statement("s"),
                b(SETTING, statement="s", portal="p"),
                frame(b"D", b"Pp\x00"),
                execute("p"),
                SYNC,
            )
        ],
        S,
        False,
    ),  # fmt: skip
    "unnamed-rebound-after-allowed": (
        [(parse("", READ), b("jit"), execute(), b(SETTING), execute(), SYNC)],
        S,
        False,
    ),
    "named-portal-kept-in-block": (
        [
            (query("BEGIN"),),
            (parse("s", READ), b("jit", statement="s", portal="p"), SYNC),
            (b(SETTING, statement="s", portal="q"), execute("q"), SYNC),
            (query("COMMIT"),),
        ],
        S,
        False,
    ),  # fmt: skip
    # -- SQL PREPARE, simple Query, FunctionCall -----------------------------------------
    "sql-prepare": (
        [
            (query("PREPARE p57(text) AS SELECT current_setting($1)"),),
            (query(f"EXECUTE p57('{SETTING}')"),),
        ],
        S,
        False,
    ),  # fmt: skip
    "sql-prepare-inferred": (
        [
            (query("PREPARE p57 AS SELECT current_setting($1::text)"),),
            (query(f"EXECUTE p57('{SETTING}')"),),
        ],
        S,
        False,
    ),  # fmt: skip
    "simple-query-parameter": ([(query("SELECT current_setting($1)"),)], None, False),
}


# the proxy gives each protocol statement a private name upstream: a second Parse of a name
# the server would refuse ("already exists", keeping the first) replaces it through the proxy
RENAMED = frozenset({"name-reused-next-group", "name-reused-same-group"})


@pytest.mark.parametrize("key", planted.cases(PROBES))
def test_the_planted_setting_never_reaches_the_client(pg, px, key):
    steps, shows, _reason = PROBES[key]
    if callable(steps):
        steps = steps(px.oids)
    directly = planted.text(planted.direct_frames(pg, steps))
    if shows is not None:
        assert shows in directly, ("the server answers with it directly", directly[-400:])
    got = planted.text(planted.proxied_frames(px, steps))  # (the session goes on)
    for secret in (SECRET, TABLE_SECRET, SHADOW):
        assert secret not in got, ("LEAK", key, secret, got[-500:])
    if shows is not None and key not in RENAMED:
        assert planted.refused(got), ("the proxy refused it", key, got[-400:])
    if key in RENAMED:
        assert SETTING in got, ("the second Parse's text answered", got[-400:])


def test_more_format_codes_than_values_ends_the_session_without_the_value(pg, px):
    """The server answers 08P01 and goes on; the proxy ends the session (FATAL 08P01)."""
    steps = one(READ, SETTING, fmts=(0, 1))
    assert "08P01" in planted.text(planted.direct_frames(pg, steps))
    with planted.session(px) as c:
        c.send(*steps[0])
        got = planted.text(c.frames_until_eof())
    assert "FATAL" in got and "08P01" in got and SECRET not in got, got


@pytest.mark.parametrize(
    ("args", "oid", "shows"),
    [((SETTING,), 2077, SECRET), (("client_encoding", "SJIS", "f"), 2078, "SJIS")],
    ids=["current-setting", "set-config-encoding"],
)
def test_the_function_call_message_is_refused(pg, px, args, oid, shows):
    """FunctionCall (F) by OID: current_setting(text) 2077, set_config 2078."""
    with RawClient.direct(pg) as c:
        c.send(function_call(oid, *args))
        assert shows in planted.text(c.frames_until_ready())
    with planted.session(px) as c:
        c.send(function_call(oid, *args))
        got = planted.text(c.frames_until_ready())
        assert planted.refused(got) and SECRET not in got, got
        assert _show(c, "client_encoding").endswith("UTF8")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"


def test_an_allowed_name_answers_as_the_server_does(pg, px):
    steps = [(parse("s", READ, (NAME,)), b("DateStyle", statement="s"), execute(),
              b("TimeZone", statement="s", fmts=(1,)), execute(), SYNC),
             (parse("", SETTER), b("work_mem", "3MB"), execute(), SYNC),
             (query("SHOW work_mem"),)]  # fmt: skip
    got = planted.text(planted.proxied_frames(px, steps))
    assert got == planted.text(planted.direct_frames(pg, steps))
    assert "3MB" in got


def test_a_cached_shape_never_lends_its_parameter_position(px):
    """The same statement shape with the setting at another position: within one session
    and across two, each Bind is decided on its own statement's position."""
    first = "SELECT current_setting($1) AS a, $2::text AS b"
    second = "SELECT current_setting($2) AS a, $1::text AS b"
    with planted.session(px) as a, planted.session(px) as c:
        got = planted.text(planted.run_frames(a, one(first, "jit", "x")))
        assert "C42501" not in got, got[-300:]
        for client in (c, a):  # another session, then the same one
            got = planted.text(planted.run_frames(client, one(second, SETTING, "jit")
                                                  + one(second, "jit", SETTING)))  # fmt: skip
            assert SECRET not in got and planted.refused(got), got[-400:]


# -- forbidden settings and encodings -----------------------------------------------------

CHANGES = {
    "search-path-by-parameter": (one(SETTER, "search_path", "r57app, public"), "search_path"),
    "role-by-parameter": (one(SETTER, "role", "pgwitness"), "role"),
    "session-authorization": (
        one(SETTER, "session_authorization", "pgwitness"),
        "session_authorization",
    ),
    "standard-conforming-strings": (
        one(SETTER, "standard_conforming_strings", "off"),
        "standard_conforming_strings",
    ),
    "search-path-name-typed": (
        [(parse("", SETTER, (NAME, TEXT)), b("search_path", "r57app"), execute(), SYNC)],
        "search_path",
    ),
    "search-path-via-domain": (
        lambda o: [
            (
                parse("", SETTER, (int(o["DOMAIN"]), TEXT)),
                b("search_path", "r57app"),
                execute(),
                SYNC,
            )
        ],
        "search_path",
    ),  # fmt: skip
    "encoding-sjis-literal": (
        one("SELECT set_config('client_encoding', 'SJIS', false)"),
        "client_encoding",
    ),
    "encoding-sjis-mixed-notation": (
        one("SELECT set_config('client_encoding', is_local => false, new_value => 'SJIS')"),
        "client_encoding",
    ),
    "encoding-big5-binary": (one(ENC, "BIG5", fmts=(1,)), "client_encoding"),
    "encoding-gbk-by-name": (one(SETTER, "Client_Encoding", "GBK"), "client_encoding"),
    "encoding-value-named-later": (
        one("SELECT set_config($1, is_local => false, new_value => $2)", "client_encoding", "SJIS"),
        "client_encoding",
    ),
    "encoding-value-name-typed": (
        [(parse("", ENC, (NAME,)), b("Shift_JIS"), execute(), SYNC)],
        "client_encoding",
    ),
    "encoding-value-expression": (
        one("SELECT set_config('client_encoding', $1 || '', false)", "SJIS"),
        "client_encoding",
    ),  # fmt: skip
    "encoding-value-text-cast-of-bytea": (
        [
            (
                parse("", "SELECT set_config('client_encoding', $1::text, false)", (BYTEA,)),
                b("SJIS"),
                execute(),
                SYNC,
            )
        ],
        "client_encoding",
    ),  # fmt: skip
    "encoding-sql-prepare": (
        [
            (query("PREPARE e57(text) AS SELECT set_config('client_encoding', $1, false)"),),
            (query("EXECUTE e57('SJIS')"),),
        ],
        "client_encoding",
    ),  # fmt: skip
}


def _show(c, setting: str) -> str:
    frames = c.query(f"SHOW {setting}")
    return planted.text([f for f in frames if f[:1] == b"D"])


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_a_forbidden_setting_or_unsafe_encoding_is_never_set(px, key):
    steps, setting = CHANGES[key]
    if callable(steps):
        steps = steps(px.oids)
    with planted.session(px) as c:
        before = _show(c, setting)
        got = planted.text(planted.run_frames(c, steps))
        assert _show(c, setting) == before, (key, got[-400:])
        assert _show(c, "client_encoding").endswith("UTF8"), key
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"


def test_a_literal_latin1_encoding_is_set_and_what_follows_waits(px):
    """``set_config('client_encoding', 'LATIN1', false)`` (now allowed) counts as changing
    the encoding: a non-ASCII statement pipelined behind it is refused (55000)."""
    with planted.session(px) as c:
        got = planted.text(planted.run_frames(c, [(
            parse("", "SELECT set_config('client_encoding', 'LATIN1', false)"), b(), execute(),
            parse("", "SELECT 'caf\u00e9' AS x"), b(), execute(), SYNC,
        )]))  # fmt: skip
        assert "55000" in got, got[-300:]
        assert _show(c, "client_encoding").endswith("UTF8")


def test_an_encoding_set_by_a_statement_parsed_earlier_still_holds_back_what_follows(px):
    """The setter parsed in one group, bound with LATIN1 in a later one with a non-ASCII
    statement behind it: that statement still waits for the server's answer."""
    with planted.session(px) as c:
        planted.run_frames(c, [(parse("enc", SETTER), SYNC)])
        got = planted.text(planted.run_frames(c, [(
            b("client_encoding", "LATIN1", statement="enc"), execute(),
            parse("", "SELECT 'caf\u00e9' AS x"), b(), execute(), SYNC,
        )]))  # fmt: skip
        assert "55000" in got, got[-300:]


def test_an_encoding_flipped_by_parameter_in_a_block_then_rolled_back(px):
    """LATIN1 set by parameter in a block then rolled back (the server returns to UTF8 with
    no statement naming it): non-ASCII bytes pipelined across it still wait."""
    with planted.session(px) as c:
        got = planted.text(planted.run_frames(c, [(
            query("BEGIN"),), (parse("", ENC), b("LATIN1"), execute(), SYNC),
            (query("ROLLBACK"),),
            (parse("", "SELECT 'caf\u00e9' AS x"), b(), execute(), SYNC),
        ]))  # fmt: skip
        assert _show(c, "client_encoding").endswith("UTF8")
        rows = b"".join(planted.run_frames(c, [(parse("", "SELECT 'caf\u00e9' AS x"), b(),
                                                 execute(), SYNC)]))  # fmt: skip
        assert "caf\u00e9".encode() in rows, (got[-300:], rows)
        planted.run_frames(c, [(parse("", ENC), b("LATIN1"), execute(), SYNC)])
        after = b"".join(planted.run_frames(c, [(latin1_parse("SELECT 'caf\u00e9' AS x"), b(),
                                                  execute(), SYNC)]))  # fmt: skip
        assert "caf\u00e9".encode("latin-1") in after, after


# a user function of the name (public, on the path): varchar parameters pick it
SHADOW_PROBES: dict[str, tuple] = {
    "shadow-current-setting-varchar": (
        one(READ, "TimeZone", oids=(VARCHAR,)),
        S,
        False,
    ),
    "shadow-set-config-varchar": (
        [(parse("", SETTER, (VARCHAR, VARCHAR)), b("work_mem", "4MB"), execute(), SYNC)],
        S,
        False,
    ),
    # (older than session 28: a literal name is classified set_config:work_mem, missed alike)
    "shadow-set-config-literal-name": (
        [
            (
                parse("", "SELECT set_config('work_mem', $1, false)", (VARCHAR,)),
                b("4MB"),
                execute(),
                SYNC,
            )
        ],
        S,
        False,
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def shadowed(pg, px, tmp_path_factory):
    """A proxy of its own whose first load sees the shadows (after ``px``'s probes: the
    module's last test), dropped when it ends."""
    with planted.running(pg, tmp_path_factory, "r57shadow", agent=AGENT + "-shadow",
                         scopes=SCOPES, setup=SHADOWS, teardown=UNSHADOW) as handle:  # fmt: skip
        yield handle


@pytest.mark.parametrize("key", planted.cases(SHADOW_PROBES))
def test_a_user_function_of_the_name_needs_an_execute_scope(pg, shadowed, key):
    steps, shows, _holds = SHADOW_PROBES[key]
    directly = planted.text(planted.direct_frames(pg, steps))
    assert shows in directly and SHADOW in directly, ("it runs directly", directly[-400:])
    got = planted.text(planted.proxied_frames(shadowed, steps))
    for secret in (SECRET, TABLE_SECRET, SHADOW):
        assert secret not in got, ("LEAK", key, secret, got[-500:])
    assert planted.refused(got) and "user-written function" in got, (key, got[-400:])
