"""Red-team round 58: session 28's fixes attacked, the server the judge. (1) ``666da84``:
a setting is pinned to a bare ``$n`` only; calls of current_setting/set_config (by literal
or parameter, classified ``current_setting:<x>`` / ``set_config:<x>``) count as calls of
the name a user-written function may shadow (``policy.catalog.called_name``); an encoding
value over 63 bytes is refused. (2) ``bf7a901``: a Parse naming a parameter type OID the
snapshot does not know waits once for a load that started after it arrived and is decided
on it (refused if still unknown, or where it cannot wait).

An agent holds ``read:public.* write:public.* ddl:public.* set:work_mem``; planted outside
the grant: a custom setting (``ALTER DATABASE app SET app.r58_secret``), a table
``r58sec.vault`` and a function ``r58sec.judge`` that RAISEs a NOTICE with the setting,
which a domain ``public.r58_checked``'s CHECK calls. Each probe runs the same frames
directly and through the proxy: nothing secret reaches the client, the session goes on.

Families: casts and wrappers around the parameter, encoding values by byte length, user
shadows of current_setting/set_config (overloads, literal casts, EXPLAIN's constant
folding, unknown literals; their own proxy, planted last); parameter types by OID made
after the load (by the agent, by another session, in another session's open transaction,
never), types made of a checked domain (composite, its array, a domain over it, a range
and its multirange), pipelines around the waiting Parse (frames after it, Describe,
Flush, many unknown OIDs, the unnamed statement), and a type altered after the decision.
"""

from __future__ import annotations

import struct
import time

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(240)

AGENT = "r58-bot"
SETTING = "app.r58_secret"
SECRET = "r58-planted-c41d7e"
VAULT = "r58-vault-9a02f3"
JUDGED = "r58-judge-ran"
SHADOW = "r58-shadow-ran"
SECRETS = (SECRET, VAULT, JUDGED, SHADOW)
SCOPES = "read:public.* write:public.* ddl:public.* set:work_mem"
SETUP = f"""
ALTER DATABASE app SET {SETTING} = '{SECRET}';
CREATE SCHEMA r58sec;
CREATE TABLE r58sec.vault (v text);
INSERT INTO r58sec.vault VALUES ('{VAULT}');
CREATE FUNCTION r58sec.judge(i int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE '{JUDGED} %', pg_catalog.current_setting('{SETTING}'); RETURN true; END $$;
GRANT USAGE ON SCHEMA r58sec TO PUBLIC;
CREATE DOMAIN public.r58_checked AS int CHECK (r58sec.judge(VALUE));
CREATE FUNCTION public."current_setting:timezone"() RETURNS text LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE '{JUDGED} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
CREATE FUNCTION public."current_setting:$"(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE '{JUDGED} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
CREATE FUNCTION public."set_config:work_mem"(text, text, boolean) RETURNS text LANGUAGE plpgsql
    AS $$
BEGIN RAISE NOTICE '{JUDGED} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
"""
TYPES = [
    "r58_enum",
    "r58_comp",
    "r58_late",
    "r58_open",
    "r58_alt",
    "r58_mine",
    "r58_desc",
    "r58_flush",
    "r58_pipe",
    "r58_cdom",
    "r58_crng",
    "r58_ccomp",
    "r58_dd",
    "r58_tdom",
]
TEARDOWN = (
    f"ALTER DATABASE app RESET {SETTING};\n"
    + "".join(f"DROP TYPE IF EXISTS public.{t} CASCADE;\n" for t in TYPES)
    + "DROP DOMAIN IF EXISTS public.r58_checked CASCADE;\n"
    'DROP FUNCTION IF EXISTS public."current_setting:timezone"();\n'
    'DROP FUNCTION IF EXISTS public."current_setting:$"(text);\n'
    'DROP FUNCTION IF EXISTS public."set_config:work_mem"(text, text, boolean);\n'
    "DROP SCHEMA IF EXISTS r58sec CASCADE;\n"
)
SHADOWS = f"""
CREATE FUNCTION public.current_setting(varchar) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RAISE NOTICE '{SHADOW} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
CREATE FUNCTION public.current_setting(varchar, boolean) RETURNS text LANGUAGE plpgsql
    IMMUTABLE AS $$
BEGIN RAISE NOTICE '{SHADOW} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
CREATE FUNCTION public.set_config(varchar, varchar, boolean) RETURNS text LANGUAGE plpgsql
    IMMUTABLE AS $$
BEGIN RAISE NOTICE '{SHADOW} %', pg_catalog.current_setting('{SETTING}'); RETURN 'x'; END $$;
"""
UNSHADOW = """
DROP FUNCTION IF EXISTS public.current_setting(varchar);
DROP FUNCTION IF EXISTS public.current_setting(varchar, boolean);
DROP FUNCTION IF EXISTS public.set_config(varchar, varchar, boolean);
"""

NAME, VARCHAR, TEXT, BOOL = 19, 1043, 25, 16
NEVER = 2_000_000_123  # an OID no object has
HIGH = 4_000_000_123  # one above 2**31 (signed on the wire: the server reads it unsigned)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r58fix", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def b(*values, statement: str = "", portal: str = "") -> bytes:
    raw = [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]
    return bind(portal, statement, raw)


def one(sql: str, *values, oids=()) -> list:
    return [(parse("", sql, oids), b(*values), execute(), SYNC)]


def describe_statement(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def dba(pg, sql: str) -> None:
    """DDL outside the proxy, as its upstream login (another session's)."""
    pg.psql(f"SET ROLE pgwitness; {sql} RESET ROLE;", db="app")


def oid_of(pg, name: str) -> int:
    return int(pg.psql(f"SELECT '{name}'::regtype::oid", db="app").strip())


def clean(got: str, key: str = "") -> None:
    for secret in SECRETS:
        assert secret not in got, ("LEAK", key, secret, got[-500:])


def usable(c: RawClient) -> None:
    assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"


# -- (1) the setting pinned to a bare $n only ----------------------------------------------
READ = "SELECT current_setting($1)"
ENC = "SELECT set_config('client_encoding', $1, false)"
# name -> (steps, the server answers the secret directly)
PINS: dict[str, tuple] = {
    "cast-varchar": (one("SELECT current_setting($1::varchar)", SETTING), True),
    "cast-name": (one("SELECT current_setting($1::name)", SETTING), True),
    "cast-text-array-element": (
        one("SELECT current_setting(($1::text[])[1])", "{" + SETTING + "}"),
        True,
    ),
    "collate": (one('SELECT current_setting($1 COLLATE "C")', SETTING), True),
    "concat-empty": (one("SELECT current_setting($1 || '')", SETTING), True),
    "parenthesised": (one("SELECT current_setting((($1)))", SETTING), True),
    "lower-of-upper": (one("SELECT current_setting(lower($1))", SETTING.upper()), True),
    "coalesce": (one("SELECT current_setting(coalesce($1, 'x'))", SETTING), True),
    "case-of-param": (one("SELECT current_setting(CASE WHEN true THEN $1 END)", SETTING), True),
    "setter-name-cast": (one("SELECT set_config($1::text, $2, false)", SETTING, "x"), False),
    "setter-reads-back": (
        one("SELECT set_config('work_mem', '4MB', false), current_setting($1)", SETTING),
        True,
    ),
    "missing-ok-param": (
        one("SELECT current_setting($1, $2)", SETTING, "true", oids=(TEXT, BOOL)),
        True,
    ),
    "name-typed-padded": (one(READ, SETTING + " ", oids=(NAME,)), False),
    "mixed-case": (one(READ, SETTING.upper()), True),
    "pg-catalog-qualified-param": (one("SELECT pg_catalog.current_setting($1)", SETTING), True),
}


@pytest.mark.parametrize("key", sorted(PINS))
def test_a_setting_is_pinned_only_to_a_bare_parameter(pg, px, key):
    steps, shows = PINS[key]
    directly = planted.text(planted.direct_frames(pg, steps))
    if shows:
        assert SECRET in directly, ("the server reads the secret directly", directly[-300:])
    got = planted.text(planted.proxied_frames(px, steps))
    clean(got, key)
    if shows:
        assert planted.refused(got), (key, got[-300:])


# user functions whose (quoted) names are classify's own renderings of setting calls
SPELLED = {
    "current-setting-literal": [(query('SELECT "current_setting:timezone"()'),)],
    "current-setting-param": one('SELECT "current_setting:$"($1)', "TimeZone"),
    "current-setting-qualified": [(query('SELECT public."current_setting:timezone"()'),)],
    "set-config-literal": [(query("SELECT \"set_config:work_mem\"('a', 'b', false)"),)],
    "set-config-extended": one('SELECT "set_config:work_mem"($1, $2, false)', "a", "b"),
    # sqlglot cannot read ORDER BY ... USING: PostgreSQL's reading alone is decided on
    "order-by-using": [(query('SELECT "current_setting:timezone"() AS v ORDER BY 1 USING <'),)],
    "order-by-using-set-config": [
        (query("SELECT \"set_config:work_mem\"('a', 'b', false) AS v ORDER BY 1 USING <"),)
    ],
}


# (a leak until fixed in session 28: a user function named "current_setting:timezone" /
# "set_config:work_mem" (quoted, on the path), called in a statement sqlglot cannot read
# (ORDER BY ... USING), was named by PostgreSQL's reading alone as classify's own rendering
# of a setting call and decided as SHOW timezone / SET work_mem; such a name now fails
# PostgreSQL's reading: ``pgparse.funccall``)
@pytest.mark.parametrize("key", list(SPELLED))
def test_a_function_named_like_a_setting_call_is_a_call_of_it(pg, px, key):
    steps = SPELLED[key]
    directly = planted.text(planted.direct_frames(pg, steps))
    assert JUDGED in directly, ("it runs directly", directly[-300:])
    got = planted.text(planted.proxied_frames(px, steps))
    clean(got, key)
    assert planted.refused(got), (key, got[-300:])


# client_encoding by byte length: the server clips a name-typed value at 63 bytes (on a
# character boundary) and ignores every non-alphanumeric byte of an encoding's name
ENCODINGS: dict[str, tuple] = {
    "sjis-name-64-bytes": (one(ENC, "SJIS" + "-" * 59 + "x", oids=(NAME,)), "SJIS"),
    "sjis-name-63-bytes": (one(ENC, "SJIS" + "-" * 59, oids=(NAME,)), "SJIS"),
    "sjis-63-chars-64-bytes": (one(ENC, "SJIS" + "-" * 58 + "\u00e9", oids=(NAME,)), "SJIS"),
    "sjis-text-long": (one(ENC, "S-J-I-S" + " " * 80), "SJIS"),
    "gbk-quoted": (one(ENC, "'GBK'"), "GBK"),
    "big5-varchar": (one(ENC, "BIG5", oids=(VARCHAR,)), "BIG5"),
}


@pytest.mark.parametrize("key", sorted(ENCODINGS))
def test_an_unsafe_encoding_value_is_never_set(px, key):
    steps, _enc = ENCODINGS[key]
    with planted.session(px) as c:
        got = planted.text(planted.run_frames(c, steps))
        shown = planted.text([f for f in c.query("SHOW client_encoding") if f[:1] == b"D"])
        assert shown.endswith("UTF8"), (key, shown, got[-300:])
        usable(c)


# -- (2) parameter types by OID made after the load ----------------------------------------
def _parse(name: str, sql: str, oids=()) -> bytes:
    """A Parse whose OIDs are packed unsigned, as the server reads them."""
    body = name.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack("!h", len(oids))
    return frame(b"P", body + b"".join(struct.pack("!I", o) for o in oids))


def _bound(oid: int, sql: str, value: str, name: str = "") -> list:
    return [(_parse(name, sql, (oid,)), b(value, statement=name), execute(), SYNC)]


def test_an_enum_the_agent_just_made_is_bound_as_directly(pg, px):
    with planted.session(px) as c:
        assert "CREATE TYPE" in planted.text(
            c.query("CREATE TYPE public.r58_enum AS ENUM ('a', 'b')")
        )
        steps = _bound(oid_of(pg, "public.r58_enum"), "SELECT $1::text AS e", "b")
        got = planted.text(planted.run_frames(c, steps))
        usable(c)
    assert got == planted.text(planted.direct_frames(pg, steps)), got[-300:]
    assert not planted.refused(got)


# types another session makes after the proxy's load, of the checked domain: each runs
# r58sec.judge when a value of it is made (the server's NOTICE directly)
CHECKED: dict[str, tuple[str, str, str]] = {
    # name -> (DDL, the type bound (by OID), its value)
    "composite": (
        "CREATE TYPE public.r58_ccomp AS (a public.r58_checked);",
        "public.r58_ccomp",
        "(5)",
    ),
    "composite-array": (
        "CREATE TYPE public.r58_ccomp AS (a public.r58_checked);",
        "public.r58_ccomp[]",
        '{"(5)"}',
    ),
    "domain-over-domain": (
        "CREATE DOMAIN public.r58_dd AS public.r58_checked;",
        "public.r58_dd",
        "5",
    ),
    "domain-array": (
        "CREATE DOMAIN public.r58_dd AS public.r58_checked;",
        "public.r58_dd[]",
        "{5}",
    ),
    "range": (
        "CREATE TYPE public.r58_crng AS RANGE (subtype = public.r58_checked);",
        "public.r58_crng",
        "[1,5)",
    ),
    "multirange": (
        "CREATE TYPE public.r58_crng AS RANGE (subtype = public.r58_checked);",
        "public.r58_crng_multirange",
        "{[1,5)}",
    ),
    "domain-check-directly": (
        "CREATE DOMAIN public.r58_cdom AS int CHECK (r58sec.judge(VALUE));",
        "public.r58_cdom",
        "5",
    ),
}


@pytest.mark.parametrize("key", list(CHECKED))
def test_a_type_made_of_a_checked_domain_after_the_load_is_refused(pg, px, key):
    ddl, typ, value = CHECKED[key]
    with planted.session(px) as c:
        usable(c)  # the session's load is done
        made = ddl.split()[2]  # (the type the DDL makes: once per module)
        if not _exists(pg, made):
            dba(pg, ddl)
        steps = _bound(oid_of(pg, typ), "SELECT $1 IS NOT NULL AS v", value)
        directly = planted.text(planted.direct_frames(pg, steps))
        assert JUDGED in directly, ("the check runs directly", directly[-300:])
        got = planted.text(planted.run_frames(c, steps))
        clean(got, key)
        assert planted.refused(got) and "r58sec.judge" in got, (key, got[-300:])
        usable(c)


def test_a_type_in_another_sessions_open_transaction_is_refused_at_once(pg, px):
    with RawClient.direct(pg) as other, planted.session(px) as c:
        usable(c)
        other.query("BEGIN")
        other.query("CREATE TYPE public.r58_open AS (a int)")
        oid = int(other.scalar("SELECT 'public.r58_open'::regtype::oid"))
        started = time.monotonic()
        got = planted.text(planted.run_frames(c, _bound(oid, "SELECT $1 IS NULL AS v", "(1)")))
        took = time.monotonic() - started
        other.query("ROLLBACK")
        assert planted.refused(got) and "made after the catalog was loaded" in got, got[-300:]
        assert took < 5, took
        usable(c)


@pytest.mark.parametrize("oid", [NEVER, HIGH])
def test_an_oid_no_type_has_is_refused_after_one_wait(pg, px, oid):
    steps = _bound(oid, "SELECT $1 IS NULL AS v", "x")
    directly = planted.text(planted.direct_frames(pg, steps))
    with planted.session(px) as c:
        started = time.monotonic()
        got = planted.text(planted.run_frames(c, steps))
        assert time.monotonic() - started < 5
        assert planted.refused(got) and str(oid) in got, (got[-300:], directly[-300:])
        usable(c)


def test_many_unknown_oids_pipelined_each_wait_once_and_are_refused(px):
    groups = [(parse("", "SELECT $1 IS NULL AS v", (NEVER + i,)), b("x"), execute(), SYNC)
              for i in range(8)]  # fmt: skip
    with planted.session(px) as c:
        started = time.monotonic()
        c.send(*[f for g in groups for f in g])
        answers = [planted.text(c.frames_until_ready()) for _ in groups]
        assert time.monotonic() - started < 10
        for i, got in enumerate(answers):
            assert planted.refused(got) and str(NEVER + i) in got, (i, got[-200:])
        usable(c)


def test_one_group_of_unknown_oids_and_a_known_statement_after(pg, px):
    """Eight Parses of unknown OIDs then a plain one in one Sync group: the first refused,
    the server skips the rest, as it skips what follows any error."""
    frames = [parse(f"u{i}", "SELECT $1 IS NULL AS v", (NEVER + i,)) for i in range(8)]
    steps = [(*frames, parse("", "SELECT 7 AS seven"), b(), execute(), SYNC)]
    with planted.session(px) as c:
        got = planted.text(planted.run_frames(c, steps))
        assert planted.refused(got) and "seven" not in got, got[-300:]
        usable(c)


def test_a_waiting_parse_keeps_what_follows_in_order(pg, px):
    """A Parse of a type made after the load (by another session), then Binds, Executes and
    more statements pipelined behind it in two groups: answered as directly, in order."""
    with planted.session(px) as c:
        usable(c)
        dba(pg, "CREATE TYPE public.r58_pipe AS (a int, b text);")
        oid = oid_of(pg, "public.r58_pipe")
        steps = [
            (
                parse("p", "SELECT ($1::public.r58_pipe).b AS b", (oid,)),
                parse("", "SELECT 1 AS first"),
                b(),
                execute(),
                b("(1,after)", statement="p"),
                execute(),
                SYNC,
                parse("", "SELECT 2 AS second"),
                b(),
                execute(),
                b("(2,again)", statement="p"),
                execute(),
                SYNC,
            )
        ]
        got = planted.text(planted.run_frames(c, steps))
        usable(c)
    directly = planted.text(planted.direct_frames(pg, steps))
    assert got == directly, (got[-400:], directly[-400:])


def test_a_refused_waiting_parse_runs_nothing_pipelined_behind_it(pg, px):
    with planted.session(px) as c:
        usable(c)
        oid = oid_of(pg, "public.r58_cdom") if _exists(pg, "public.r58_cdom") else None
        if oid is None:
            dba(pg, "CREATE DOMAIN public.r58_cdom AS int CHECK (r58sec.judge(VALUE));")
            oid = oid_of(pg, "public.r58_cdom")
        steps = [
            (
                parse("", "SELECT $1 IS NULL AS v", (oid,)),
                b("5"),
                execute(),
                parse("", "INSERT INTO public.r58_log VALUES (1)"),
                b(),
                execute(),
                SYNC,
                query("SELECT count(*) AS n FROM public.r58_log"),
            )
        ]
        c.query("CREATE TABLE IF NOT EXISTS public.r58_log (n int)")
        got = planted.text(planted.run_frames(c, steps))
        clean(got)
        assert planted.refused(got), got[-300:]
        assert c.scalar("SELECT count(*) FROM public.r58_log") == "0"
        c.query("DROP TABLE public.r58_log")


def _exists(pg, name: str) -> bool:
    return pg.psql(f"SELECT to_regtype('{name}') IS NOT NULL", db="app").strip() == "t"


def test_a_describe_of_a_statement_parsed_with_a_new_type(pg, px):
    with planted.session(px) as c:
        usable(c)
        dba(pg, "CREATE TYPE public.r58_desc AS (a int);")
        oid = oid_of(pg, "public.r58_desc")
        steps = [(parse("d", "SELECT $1 AS v", (oid,)), describe_statement("d"), SYNC)]
        got = planted.text(planted.run_frames(c, steps))
        usable(c)
    assert got == planted.text(planted.direct_frames(pg, steps)), got[-300:]


def test_a_flush_after_a_waiting_parse_is_answered(pg, px):
    with planted.session(px) as c:
        usable(c)
        dba(pg, "CREATE TYPE public.r58_flush AS (a int);")
        oid = oid_of(pg, "public.r58_flush")
        c.send(parse("f", "SELECT ($1::public.r58_flush).a AS a", (oid,)), FLUSH)
        first = c.read_frame()
        assert first is not None and first[:1] == b"1", first  # ParseComplete, no Sync
        got = planted.text(planted.run_frames(c, [(b("(3)", statement="f"), execute(), SYNC)]))
        assert "C42501" not in got and "SELECT 1" in got, got[-300:]
        usable(c)


def test_the_unnamed_statement_reparsed_with_another_unknown_oid(pg, px):
    """The same text parsed twice as the unnamed statement, first with a type just made
    (waits, allowed), then with an OID no type has (waits again: refused)."""
    with planted.session(px) as c:
        usable(c)
        dba(pg, "CREATE TYPE public.r58_late AS (a int);")
        oid = oid_of(pg, "public.r58_late")
        sql = "SELECT $1 IS NULL AS v"
        steps = [(parse("", sql, (oid,)), b("(1)"), execute(), SYNC),
                 (parse("", sql, (NEVER,)), b("(1)"), execute(), SYNC)]  # fmt: skip
        got = planted.run_frames(c, steps)
        first, second = planted.text(got[: len(got) // 2]), planted.text(got)
        assert "C42501" not in first or str(NEVER) in first, first
        assert planted.refused(second) and str(NEVER) in second, second[-300:]
        usable(c)


def test_a_composite_the_agent_made_then_altered_to_hold_the_checked_domain(pg, px):
    """The agent makes a plain composite type, parses a named statement binding it (waits,
    allowed), then adds an attribute of the checked domain: the Bind would run
    r58sec.judge, so the ALTER (or the Bind) must be refused."""
    with planted.session(px) as c:
        assert "CREATE TYPE" in planted.text(c.query("CREATE TYPE public.r58_alt AS (a int)"))
        oid = oid_of(pg, "public.r58_alt")
        parsed = planted.text(
            planted.run_frames(c, [(parse("s", "SELECT $1 IS NULL AS v", (oid,)), SYNC)])
        )
        assert "C42501" not in parsed, parsed[-300:]
        altered = planted.text(
            c.query("ALTER TYPE public.r58_alt ADD ATTRIBUTE b public.r58_checked")
        )
        got = planted.text(planted.run_frames(c, [(b("(1,5)", statement="s"), execute(), SYNC)]))
        clean(altered + got)
        assert planted.refused(altered + got), (altered[-300:], got[-300:])
        usable(c)


def test_a_domain_the_agent_makes_over_the_checked_domain(pg, px):
    with planted.session(px) as c:
        made = planted.text(c.query("CREATE DOMAIN public.r58_mine AS public.r58_checked"))
        got = made
        if "CREATE DOMAIN" in made:
            steps = _bound(oid_of(pg, "public.r58_mine"), "SELECT $1 IS NULL AS v", "5")
            got += planted.text(planted.run_frames(c, steps))
        clean(got)
        assert planted.refused(got), got[-300:]
        usable(c)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a checked domain another session made after the load, named in the text "
    "('5'::public.r58_tdom), runs r58sec.judge unchecked: the snapshot does not know the "
    "type, so shadowing_calls finds nothing and nothing waits (the OID path waits since "
    "bf7a901); docs: 'DDL run outside the proxy is seen at the next reload'",
)
def test_a_type_named_in_text_made_after_the_load(pg, px):
    """The OID path's twin: a checked domain made by another session after the load, named
    in the statement's text instead of by OID (``'5'::public.r58_tdom``)."""
    with planted.session(px) as c:
        usable(c)
        dba(pg, "CREATE DOMAIN public.r58_tdom AS int CHECK (r58sec.judge(VALUE));")
        got = planted.text(c.query("SELECT '5'::public.r58_tdom AS v"))
        usable(c)
    clean(got)


# -- (1) user functions shadowing current_setting / set_config: their own proxy, last ------
SHADOW_PROBES: dict[str, list] = {
    "overload-two-args": one(
        "SELECT current_setting($1, $2)", "TimeZone", "true", oids=(VARCHAR, BOOL)
    ),
    "bare-varchar": one(READ, "TimeZone", oids=(VARCHAR,)),
    "literal-varchar-cast": one("SELECT current_setting('TimeZone'::varchar)"),
    "literal-varchar-cast-missing-ok": one("SELECT current_setting('TimeZone'::varchar, true)"),
    "set-config-literal-casts": one(
        "SELECT set_config('work_mem'::varchar, '4MB'::varchar, false)"
    ),
    "set-config-param-value-varchar": [
        (
            parse("", "SELECT set_config('work_mem', $1, false)", (VARCHAR,)),
            b("4MB"),
            execute(),
            SYNC,
        )
    ],
    "explain-folds-immutable": [(query("EXPLAIN SELECT current_setting('TimeZone'::varchar)"),)],
    "explain-set-config": [
        (query("EXPLAIN SELECT set_config('work_mem', '4MB'::varchar, false)"),)
    ],
    "explain-param": [
        (
            parse("", "EXPLAIN SELECT current_setting($1)", (VARCHAR,)),
            b("TimeZone"),
            execute(),
            SYNC,
        )
    ],
    "unknown-literal": [(query("SELECT current_setting('TimeZone')"),)],
    "unknown-literal-missing-ok": [(query("SELECT current_setting('TimeZone', true)"),)],
    "set-config-unknown-literals": [(query("SELECT set_config('work_mem', '4MB', false)"),)],
    "from-clause": [(query("SELECT * FROM current_setting('TimeZone'::varchar)"),)],
    "pg-temp-qualified": [(query("SELECT pg_temp.current_setting('TimeZone'::varchar)"),)],
}


@pytest.fixture(scope="module")
def shadowed(pg, px, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r58shadow", agent=AGENT + "-shadow",
                         scopes="read:public.* set:work_mem", setup=SHADOWS,
                         teardown=UNSHADOW) as handle:  # fmt: skip
        yield handle


@pytest.mark.parametrize("key", list(SHADOW_PROBES))
def test_a_user_function_of_the_name_is_never_run_unchecked(pg, shadowed, key):
    steps = SHADOW_PROBES[key]
    directly = planted.text(planted.direct_frames(pg, steps))
    got = planted.text(planted.proxied_frames(shadowed, steps))
    clean(got, key)
    if SHADOW in directly:
        assert planted.refused(got), (key, got[-300:])
