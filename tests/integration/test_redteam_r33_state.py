"""Red-team round 33 (state the proxy tracks versus state the server has), time-boxed; the
server the judge.

Grants (agent ``r33-bot``): ``base`` = ``read:r33s.*``; ``ddl`` = ``read:r33s.*
write:r33s.* ddl:r33s.*`` (executes nothing); ``pub`` = ``read:public.r33_cf`` (one table of
the pinned search_path's schema, nothing else); ``uni`` = ``read:"r33\u00e9".*`` (a
schema with a non-ASCII name).

Planted (schema owner; ``r33x`` outside every grant, ``r33x.vault`` holds the marker): a
polymorphic ``public.r33_pin(anyelement)`` returning the marker, so column syntax
``o.r33_pin`` is a call of it on any row without a column ``r33_pin`` (round 25's shape);
tables ``r33s.<probe>_d`` / ``r33s.<probe>_p`` ``(id int, r33_pin text)``, one pair per
probe (``_d`` for the direct run, ``_p`` for the proxy's: each probe renames its column in
a block rolled back, on a table of its own); ``public.r33_cf (id int, r33_pin text)``; an
enum ``public.r33_mood`` with a cast to json by a plpgsql function raising the marker;
schemas ``"r33\u00e9"`` (granted, ``t`` holds ``ok``) and ``"r33\u00c3\u00a9"`` (its
UTF-8 bytes read as LATIN1; ``t`` holds a second marker).
Every probe is first run directly as the upstream login and must show its marker there (a
``RuntimeError`` otherwise: a strict xfail must not swallow a probe that proves nothing).

Leaks found (each a strict xfail when found; fixed in session 21, the same tests now
pass: ``StatementPolicy.answered``/``closed``, one statement namespace, ``_temp_names``,
``Relay.encoding_changed``):

1. **The proxy's record of a prepared statement is not the server's.**
   ``StatementPolicy`` records a statement's text when it *allows* it, not when the server
   stores it, and keeps SQL-level PREPAREs (``_prepared_statements``, used by ``EXECUTE``
   via ``_decide_execute``) apart from protocol Parses (``_statements``, used by a Bind via
   ``_decided_again``), though PostgreSQL has one namespace for both. After a catalog
   change (``catalog_changed``: here ``ALTER TABLE r33s.t RENAME COLUMN r33_pin TO gone``,
   ddl on a granted table) the proxy decides *its* text again (harmless:
   ``SELECT 'ok'::text AS r33_pin``) while the server analyses *its own* again (``SELECT
   o.r33_pin FROM r33s.t o``, now the call ``public.r33_pin(o)``): the marker comes back
   as a row. Nine ways to make the two differ, every one leaking (``DIVERGENCES``):
   a second ``PREPARE`` / ``Parse`` of an existing name (42P05, the old one kept); a Parse
   skipped by the server after an error earlier in its Sync group (named, or the unnamed
   statement); a PREPARE ignored in an aborted block (25P02) or skipped after an error
   earlier in the same simple Query; a PREPARE that fails its analysis (42P01) and a
   protocol Parse of the name after it; and with no server error at all, ``PREPARE`` then
   a protocol ``Close`` then ``Parse`` (SQL EXECUTE decides the PREPARE's text), or
   ``Parse`` then SQL ``DEALLOCATE`` then ``PREPARE`` (a Bind decides the Parse's text).
   The same probe without a divergence (``control-*``) is refused (round 23-25's fix).

2. **A temporary relation shadows a granted one for column syntax.** The policy reads an
   unqualified name as the first search_path schema's (``public``; docs/policy.md: "errs
   towards needing a grant"), and decides ``o.r33_pin`` on ``public.r33_cf``'s columns
   (it has one: a column read). PostgreSQL searches ``pg_temp`` first: after ``CREATE
   TEMP TABLE r33_cf (id int)`` (or a ``TEMP VIEW``, or ``TEMP TABLE ... AS``; allowed to
   a read-only grant) the same ``SELECT o.r33_pin FROM r33_cf o`` (or ``SELECT
   r33_cf.r33_pin FROM r33_cf``) runs ``public.r33_pin(row)``, which this grant may not
   execute: the marker, under ``read:public.r33_cf`` alone, in every mode (simple,
   extended, named prepared, pipelined, the creation and the probe in one Query). A
   statement prepared *before* the temporary table exists is analysed again by the server
   at its next use (its search_path changed) and leaks too, SQL EXECUTE and protocol Bind
   (nothing tells ``catalog_changed``).

3. **The encoding the proxy decodes with trails the server's by one round trip.**
   ``Relay.encoding`` follows the server's ``ParameterStatus client_encoding`` only, and
   PostgreSQL sends it with the ReadyForQuery that ends the SET's Query / Sync group.
   ``SET client_encoding = 'LATIN1'`` (allowed: on the allowlist) and ``SELECT val FROM
   "r33\u00e9".t`` sent in one write as two Queries, or as two Parse/Bind/Execute in one
   Sync group, or ``BEGIN; SET LOCAL client_encoding TO 'WIN1252'`` then the read: the
   proxy decodes the read's bytes (``72 33 c3 a9``) as UTF-8 and decides it on the
   granted schema ``r33\u00e9``; the server converts them from LATIN1/WIN1252 and reads
   ``r33\u00c3\u00a9``: its marker comes back. Needs a grant naming something
   non-ASCII (each allowlisted encoding agrees with UTF-8 on every ASCII byte, so
   statement splitting is not affected: test_proxy_protocol_attacks h3). Held: the SET and
   the read in one Query (the server converts a message once), and the read sent after
   the SET's answer (decoded as LATIN1 by both: refused).

Held: ``o.r33_pin`` over ``pg_temp.r33_cf`` named qualified (no snapshot columns for
pg_temp: a call, ``scope.execute``); a temporary table with a column of a user type whose
cast runs a user function (``CREATE TEMP TABLE ... (v public.r33_mood)``:
``scope.execute``); every route tried to a client encoding that hides quote bytes
(SJIS, BIG5, GBK, GB18030, UHC, by ``SET``/``SET LOCAL``/``SET SESSION``/``SET NAMES``,
aliases such as ``shift-jis`` and ``windows_936``, ``set_config(..., true)``, a
second ``SET`` in the same Query, ``ALTER ROLE/DATABASE ... SET``) and to
``standard_conforming_strings`` off (``SET``/``SET LOCAL``/``DEFAULT``/``RESET``/
``set_config``/``ALTER DATABASE``, a function's ``SET`` clause): each refused, and the
server still reports UTF8 and on afterwards.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(180)

AGENT = "r33-bot"
SCOPES = "read:r33s.*"
GRANTS = {
    "ddl": "read:r33s.* write:r33s.* ddl:r33s.*",
    "pub": "read:public.r33_cf",
    "uni": 'read:"r33\u00e9".*',
}
R = {"pin": "R33-PIN-7b01", "enc": "R33-ENC-7b02"}
SECRETS = list(R.values())


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


# --- 1. the proxy's prepared statements are not the server's ----------------------------

OK = "SELECT 'ok'::text AS r33_pin"  # harmless, and of the same result type as the pin
EXEC = (query("EXECUTE r33p"),)
BIND = (bind("", "r33p"), m.execute(), SYNC)
CLEAN = [(query("DEALLOCATE ALL"),)]


def pin(t: str) -> str:
    return f"SELECT o.r33_pin FROM r33s.{t} o"


def renamed_then(t: str, *run):
    """The column renamed away in a block (rolled back), then ``run``: the server analyses
    the prepared statement again, and ``o.r33_pin`` is the call ``r33_pin(o)``."""
    away = f"ALTER TABLE r33s.{t} RENAME COLUMN r33_pin TO gone"
    return [(query("BEGIN"),), (query(away),), *run, (query("ROLLBACK"),)]


def _unnamed_skipped(t: str):
    # a simple Query drops the unnamed statement: the block and the rename go as Parses
    def ext(name: str, sql: str):
        return (parse(name, sql), bind("", name), m.execute(), SYNC)

    return [
        (parse("", pin(t)), SYNC),
        (parse("r33z", "SELECT 1/0"), bind("", "r33z"), m.execute(), parse("", OK), SYNC),
        ext("r33b", "BEGIN"),
        ext("r33a", f"ALTER TABLE r33s.{t} RENAME COLUMN r33_pin TO gone"),
        (bind(), m.execute(), SYNC),
        ext("r33r", "ROLLBACK"),
        *CLEAN,
    ]


DIVERGENCES = {
    "prepare-twice": lambda t: [
        (query(f"PREPARE r33p AS {pin(t)}"),),
        (query(f"PREPARE r33p AS {OK}"),),  # 42P05: the server keeps the first
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "parse-twice": lambda t: [
        (parse("r33p", pin(t)), SYNC),
        (parse("r33p", OK), SYNC),  # 42P05
        *renamed_then(t, BIND),
        *CLEAN,
    ],
    "parse-skipped-after-an-error-in-its-sync-group": lambda t: [
        (parse("r33p", pin(t)), SYNC),
        (
            parse("", "SELECT 1/0"),
            bind(),
            m.execute(),
            m.close_statement("r33p"),
            parse("r33p", OK),
            SYNC,
        ),  # fmt: skip
        *renamed_then(t, BIND),
        *CLEAN,
    ],
    "unnamed-parse-skipped-after-an-error": _unnamed_skipped,
    "prepare-ignored-in-an-aborted-block": lambda t: [
        (query(f"PREPARE r33p AS {pin(t)}"),),
        (query("BEGIN"),),
        (query("SELECT 1/0"),),
        (query("DEALLOCATE r33p"),),  # 25P02, as the PREPARE after it
        (query(f"PREPARE r33p AS {OK}"),),
        (query("ROLLBACK"),),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "prepare-skipped-after-an-error-in-one-query": lambda t: [
        (query(f"PREPARE r33p AS {pin(t)}"),),
        (query(f"SELECT 1/0; DEALLOCATE r33p; PREPARE r33p AS {OK}"),),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "failed-prepare-then-parse": lambda t: [
        (query("PREPARE r33p AS SELECT r33_pin FROM r33s.nosuch"),),  # 42P01
        (parse("r33p", pin(t)), SYNC),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "prepare-close-parse-then-sql-execute": lambda t: [
        (query(f"PREPARE r33p AS {OK}"),),
        (m.close_statement("r33p"), SYNC),
        (parse("r33p", pin(t)), SYNC),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "parse-deallocate-prepare-then-bind": lambda t: [
        (parse("r33p", OK), SYNC),
        (query("DEALLOCATE r33p"),),
        (query(f"PREPARE r33p AS {pin(t)}"),),
        *renamed_then(t, BIND),
        *CLEAN,
    ],
}
CONTROLS = {
    "control-prepare": lambda t: [
        (query(f"PREPARE r33p AS {pin(t)}"),),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    "control-parse": lambda t: [(parse("r33p", pin(t)), SYNC), *renamed_then(t, BIND), *CLEAN],
}
WHY = {
    "prepare-twice": "PREPARE of an existing name (42P05) is recorded as the name's text",
    "parse-twice": "Parse of an existing name (42P05) is recorded (_remember_statement)",
    "parse-skipped-after-an-error-in-its-sync-group": "a Parse the server skipped (an "
    "error earlier in its Sync group) is recorded",
    "unnamed-parse-skipped-after-an-error": "a Parse of the unnamed statement the server "
    "skipped is recorded; the server keeps the earlier unnamed one",
    "prepare-ignored-in-an-aborted-block": "a PREPARE the server ignored (25P02) is recorded",
    "prepare-skipped-after-an-error-in-one-query": "a PREPARE after a failing statement "
    "of the same simple Query (never run) is recorded",
    "failed-prepare-then-parse": "a PREPARE the server refused (42P01) is recorded; a "
    "protocol Parse of the name then holds the server's statement, but SQL EXECUTE decides "
    "the PREPARE's text",
    "prepare-close-parse-then-sql-execute": "a protocol Close is not followed; SQL EXECUTE "
    "decides _prepared_statements' text though the server's statement is the later Parse",
    "parse-deallocate-prepare-then-bind": "SQL DEALLOCATE and PREPARE are not followed in "
    "_statements; a Bind decides the old Parse's text though the server's statement is "
    "the PREPARE",
}


def _table(name: str, side: str) -> str:
    return f"{name.replace('-', '_')}_{side}"


TABLES = [_table(k, side) for k in (*DIVERGENCES, *CONTROLS) for side in "dp"]

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r33s; CREATE SCHEMA r33x;\n"
    "CREATE TABLE r33x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r33x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r33_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r33x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r33s.{t} (id int, r33_pin text); INSERT INTO r33s.{t} VALUES (1, 'ok');\n"
        for t in TABLES
    )
    + "CREATE TABLE public.r33_cf (id int, r33_pin text);\n"
    "INSERT INTO public.r33_cf VALUES (1, 'ok');\n"
    "CREATE TYPE public.r33_mood AS ENUM ('a', 'b');\n"
    "CREATE FUNCTION public.r33_json(public.r33_mood) RETURNS json LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'json: %', (SELECT val FROM r33x.vault WHERE key = 'pin'); END $$;\n"
    "CREATE CAST (public.r33_mood AS json) WITH FUNCTION public.r33_json(public.r33_mood);\n"
    'CREATE SCHEMA "r33\u00e9"; CREATE TABLE "r33\u00e9".t (val text);\n'
    "INSERT INTO \"r33\u00e9\".t VALUES ('ok');\n"
    'CREATE SCHEMA "r33\u00c3\u00a9"; CREATE TABLE "r33\u00c3\u00a9".t (val text);\n'
    f"INSERT INTO \"r33\u00c3\u00a9\".t VALUES ('{R['enc']}');\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    'DROP SCHEMA IF EXISTS r33s, r33x, "r33\u00e9", "r33\u00c3\u00a9" CASCADE;\n'
    "DROP TABLE IF EXISTS public.r33_cf;\n"
    "DROP TYPE IF EXISTS public.r33_mood CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r33_pin(anyelement) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r33", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _sequence(px, pg, name: str, build) -> str:
    """The probe directly on its ``_d`` table (it must show the marker), then through the
    proxy on its ``_p`` table under the ddl grant: every byte the proxy sent."""
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(_table(name, "d")))
    if not shows(direct, R["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-300:]))
    with planted.session(px, px.tokens["ddl"]) as c:
        got = run_steps(c, build(_table(name, "p")))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # the session goes on
    return got


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_prepared_statement_divergence(px, pg, name):
    """Leaked when found (leak 1); held since: an error drops the names its messages
    touched, a Close and a DEALLOCATE are followed, one namespace."""
    got = _sequence(px, pg, name, DIVERGENCES[name])
    assert not leaked(got), ("LEAK", name, got[-500:])


@pytest.mark.parametrize("name", list(CONTROLS))
def test_prepared_statement_decided_again(px, pg, name):
    """Held (rounds 23-25): with the proxy's text the server's, the rename makes the
    EXECUTE / Bind a call the grant may not make."""
    got = _sequence(px, pg, name, CONTROLS[name])
    assert not leaked(got), ("LEAK", name, got[-500:])
    assert "42501" in got and "pgwitness: task" in got, got[-500:]


# --- 2. a temporary relation shadows a granted one ---------------------------------------

SHADOWS = {
    "temp-table": ("CREATE TEMP TABLE r33_cf (id int)", "INSERT INTO pg_temp.r33_cf VALUES (1)"),
    "temp-view": ("CREATE TEMP VIEW r33_cf AS SELECT 1 AS id",),
    "temp-table-as": ("CREATE TEMP TABLE r33_cf AS SELECT 1 AS id",),
}
SHADOWED = ["SELECT o.r33_pin FROM r33_cf o", "SELECT r33_cf.r33_pin FROM r33_cf"]


def _shadowed_modes(px, before, sql) -> dict[str, str]:
    token = px.tokens["pub"]
    got = planted.received(px, sql, before=before, token=token)
    with planted.session(px, token) as c:
        frames = [f for s in before for f in c.query(s)]
        got["pipelined"] = planted.text(frames + planted.pipelined(c, [sql, sql]))
    with planted.session(px, token) as c:
        got["one query"] = planted.text(c.query("; ".join((*before, sql))))
    return got


def _direct(pg, sqls) -> str:
    with RawClient.direct(pg) as c:
        return planted.text([f for s in sqls for f in c.query(s)])


def _precondition(pg, sqls) -> None:
    if not shows(_direct(pg, sqls), R["pin"]):
        raise RuntimeError(("precondition: no marker directly", sqls))


@pytest.mark.parametrize("shadow", list(SHADOWS))
@pytest.mark.parametrize("sql", SHADOWED)
def test_temp_relation_shadows_a_granted_one(px, pg, shadow, sql):
    before = SHADOWS[shadow]
    _precondition(pg, [*before, sql])
    got = _shadowed_modes(px, before, sql)
    bad = {mode: t[-300:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


PREPARED_THEN_SHADOWED = [
    (query("PREPARE r33p AS SELECT o.r33_pin FROM r33_cf o"),),
    (parse("r33q", "SELECT o.r33_pin FROM r33_cf o"), SYNC),
    (query("CREATE TEMP TABLE r33_cf (id int)"),),
    (query("INSERT INTO pg_temp.r33_cf VALUES (1)"),),
]


@pytest.mark.parametrize("run", ["sql-execute", "protocol-bind"])
def test_prepared_before_the_shadow(px, pg, run):
    last = (
        (query("EXECUTE r33p"),) if run == "sql-execute" else (bind("", "r33q"), m.execute(), SYNC)
    )
    with RawClient.direct(pg) as c:
        direct = run_steps(c, [*PREPARED_THEN_SHADOWED, last])
    if not shows(direct, R["pin"]):
        raise RuntimeError(("precondition: no marker directly", run, direct[-300:]))
    with planted.session(px, px.tokens["pub"]) as c:
        got = run_steps(c, [*PREPARED_THEN_SHADOWED, last])
    assert not leaked(got), ("LEAK", run, got[-500:])


HELD_SHADOWS = [
    # pg_temp named: no snapshot columns, so x.name may be a call (scope.execute)
    (SHADOWS["temp-table"], "SELECT o.r33_pin FROM pg_temp.r33_cf o"),
    (SHADOWS["temp-view"], "SELECT o.r33_pin FROM pg_temp.r33_cf o"),
    # a temporary table of a user type whose cast to json runs a user function: its
    # creation is refused (scope.execute), so the shadow never has that column
    (
        (
            "CREATE TEMP TABLE r33_cf (id int, r33_pin public.r33_mood)",
            "INSERT INTO pg_temp.r33_cf VALUES (1, 'a')",
        ),  # fmt: skip
        "SELECT to_json(o.r33_pin) FROM r33_cf o",
    ),
]


@pytest.mark.parametrize(("before", "sql"), HELD_SHADOWS, ids=["table", "view", "cast"])
def test_temp_relation_held(px, pg, before, sql):
    _precondition(pg, [*before, sql])
    got = _shadowed_modes(px, before, sql)
    bad = {mode: t[-300:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)
    for mode, t in got.items():
        assert "42501" in t and "pgwitness: task" in t, (mode, t[-300:])


# --- held: the lexer's settings cannot be moved off what it assumes -----------------------

SETTINGS = [
    "SET client_encoding = 'SJIS'",
    "SET client_encoding TO 'BIG5'",
    "SET NAMES 'GBK'",
    "SET LOCAL client_encoding TO 'GB18030'",
    "SET SESSION client_encoding = 'UHC'",
    "SET client_encoding = 'shift-jis'",
    "SET client_encoding = windows_936",
    "SET client_encoding = 'UTF8'; SET client_encoding = 'SJIS'",
    "SELECT set_config('client_encoding', 'SJIS', true)",
    "SELECT pg_catalog.set_config('client_encoding', 'SJIS', false)",
    "ALTER ROLE ALL SET client_encoding = 'SJIS'",
    "ALTER DATABASE app SET client_encoding = 'SJIS'",
    "SET standard_conforming_strings = off",
    "SET LOCAL standard_conforming_strings TO off",
    "SET standard_conforming_strings = 0",
    "SET standard_conforming_strings = DEFAULT",
    "RESET standard_conforming_strings",
    "SELECT set_config('standard_conforming_strings', 'off', true)",
    "ALTER DATABASE app SET standard_conforming_strings = off",
    "CREATE FUNCTION r33s.f() RETURNS int LANGUAGE sql SET standard_conforming_strings = off "
    "AS $$ SELECT 1 $$",
    "SET backslash_quote = on",
]


def test_lexer_settings_stay(px):
    """Each refused (in a block, so SET LOCAL would hold to the end of it), and the server
    still reports UTF8 and on after all of them."""
    with planted.session(px, px.tokens["ddl"]) as c:
        for sql in SETTINGS:
            got = planted.text(c.query("BEGIN") + c.query(sql))
            assert "42501" in got and "pgwitness: task" in got, (sql, got[-300:])
            c.query("ROLLBACK")
        c.query("BEGIN")
        assert c.scalar("SHOW client_encoding") == "UTF8"
        assert c.scalar("SHOW standard_conforming_strings") == "on"
        c.query("ROLLBACK")


# --- 3. the client encoding the proxy decodes with trails the server's ---------------------

UNI_SELECT = 'SELECT val FROM "r33\u00e9".t'  # the granted schema, as UTF-8 bytes
SET_LATIN1 = "SET client_encoding = 'LATIN1'"


def _ext(sql: str) -> tuple[bytes, ...]:
    return (parse("", sql), bind(), m.execute())


ENCODING_SWITCHES = {
    # SET and the read sent in one write, before the SET's ParameterStatus came back
    "two-queries-in-one-write": [
        (query(SET_LATIN1), query(UNI_SELECT)),
        (query("RESET client_encoding"),),
    ],
    "one-sync-group": [
        (*_ext(SET_LATIN1), *_ext(UNI_SELECT), SYNC),
        (query("RESET client_encoding"),),
    ],
    "set-local-in-a-block": [
        (query("BEGIN"), query("SET LOCAL client_encoding TO 'WIN1252'"), query(UNI_SELECT)),
        (query("ROLLBACK"),),
    ],
}
ENCODING_HELD = {
    # one message: the server converts the whole Query text with the encoding it arrived in
    "set-and-read-in-one-query": [
        (query(f"{SET_LATIN1}; {UNI_SELECT}"),),
        (query("RESET client_encoding"),),
    ],
    # after the ParameterStatus: the proxy decodes as LATIN1 too and reads "r33\u00c3\u00a9"
    "read-after-the-answer": [
        (query(SET_LATIN1),),
        (query(UNI_SELECT),),
        (query("RESET client_encoding"),),
    ],
}


def _encoding_probe(px, pg, steps) -> str:
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, R["enc"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens["uni"]) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


@pytest.mark.parametrize("name", list(ENCODING_SWITCHES))
def test_encoding_switch_pipelined(px, pg, name):
    got = _encoding_probe(px, pg, ENCODING_SWITCHES[name])
    assert not leaked(got), ("LEAK", name, got[-400:])


@pytest.mark.parametrize("name", list(ENCODING_HELD))
def test_encoding_switch_held(px, pg, name):
    if name == "read-after-the-answer":  # directly, the second Query is read as LATIN1 too
        steps = ENCODING_HELD[name]
        with RawClient.direct(pg) as c:
            assert shows(run_steps(c, steps), R["enc"])
        with planted.session(px, px.tokens["uni"]) as c:
            got = run_steps(c, steps)
        assert not leaked(got) and "42501" in got, got[-400:]
        return
    with RawClient.direct(pg) as c:  # one message: the server reads the granted schema
        direct = run_steps(c, ENCODING_HELD[name])
    assert "ok" in direct and not leaked(direct), direct[-300:]
    with planted.session(px, px.tokens["uni"]) as c:
        got = run_steps(c, ENCODING_HELD[name])
    assert not leaked(got), got[-400:]
