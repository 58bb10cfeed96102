"""Red-team round 34 (attacks on round 33's fixes, 301bcfa and 213be4e), time-boxed; the
server the judge.

Grants (agent ``r34-bot``): ``base`` = ``read:r34s.*``; ``ddl`` = ``read:r34s.*
write:r34s.* ddl:r34s.*`` (executes nothing); ``pub`` = ``read:public.r34_cf``; ``mk`` =
``read:public.r34_cf execute:public.r34_mk``; ``uni`` = ``read:"r34\u00e9".*``; ``enc`` =
``read:"r34\u00e9".* execute:public.r34_latin1``; ``writer`` = ``read:r34w.*
write:r34w.*`` (runs no function); ``migrator`` = the writer's plus ``ddl:r34w.*
execute:public.r34_loud execute:public.r34_attach``.

Planted (schema owner; ``r34x`` outside every grant, ``r34x.vault`` holds the markers): a
polymorphic ``public.r34_pin(anyelement)`` returning the marker, so column syntax
``o.r34_pin`` is a call of it on any row without a column ``r34_pin`` (round 25's shape);
tables ``r34s.<probe>_d`` / ``r34s.<probe>_p`` ``(id int, r34_pin text)``, one pair per
probe; ``public.r34_cf (id int, r34_pin text)``; ``public.r34_mk()`` (plpgsql: makes a
temporary table ``r34_cf (id int)`` with a row, nothing secret); ``public.r34_latin1()``
(plpgsql: ``set_config('client_encoding', 'LATIN1', false)``); schemas ``"r34\u00e9"``
(granted, ``t`` holds ``ok``) and ``"r34\u00c3\u00a9"`` (its UTF-8 bytes read as LATIN1;
``t`` holds a second marker); ``r34w.t (k int)``, ``public.r34_loud()`` a trigger function
raising a third marker, ``public.r34_attach()`` (plpgsql: ``CREATE TRIGGER r34_trg ... ON
r34w.t ... EXECUTE FUNCTION public.r34_loud()``).
Every probe is first run directly as the upstream login and must show its marker there (a
``RuntimeError`` otherwise: a strict xfail must not swallow a probe that proves nothing).

Leaks found (each a strict xfail when found; 1-5 fixed in session 21, the same tests now
pass: ``Relay`` follows a pinned statement's Close and an encoding-uncertain Close
(``closed_unknown``), a pinned Parse of a name in use forgets the older one, code the
policy does not read (``ran_user_code``) makes every unqualified relation possibly
temporary and the encoding uncertain, a commit that leaves the session in a block
settles its DDL; 6 was a strict xfail, a documented residue, until session 22 closed it:
a call of code that may run DDL counts as DDL, ``policy.catalog.DDL_CODE_SQL``):

1. **A pinned statement's Close is not followed, and its Parse never meets the name in
   use.** A Parse whose pin is a parameter (``bind_pins``) goes upstream under a private
   name (``Relay._pinned``): a Parse of a name the server already holds succeeds (no
   42P05), and its Close closes the private statement without ``policy.closed``. ``Parse
   r34p <SELECT o.r34_pin FROM r34s.t o WHERE $1::text IS NOT NULL>`` / Sync; ``Parse r34p
   <SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1::regclass>`` /
   Sync; ``Close 'S' r34p`` / Sync; rename ``r34_pin`` away (``ALTER TABLE ... RENAME
   COLUMN``, in a block); ``Bind r34p ('r34s.t')`` / Execute / Sync: the policy decides the
   pg_attrdef text again (pinned to a granted table: allowed), the server runs the first
   Parse, now ``public.r34_pin(o)``: the marker as a row (``ddl`` grant). Directly, the
   same with the pinned Parse and Close under another name (what the proxy sends).

2. **A Close's statement name is decoded in an encoding that may be changing.** The relay
   refuses a Parse, Bind or Query with non-ASCII bytes while a client_encoding change is in
   flight (``ENCODING_IN_FLIGHT``), but decodes a Close's name for ``policy.closed`` with no
   such check. ``Parse "r34\u00e9" <pin>`` / Sync; then in one write ``SET client_encoding
   = 'LATIN1'`` (Query), ``Close 'S' "r34\u00e9"`` (bytes ``72 33 34 c3 a9``), Sync;
   ``RESET client_encoding``: the policy forgot ``"r34\u00e9"``, the server closed
   ``"r34\u00c3\u00a9"`` (no such statement, no error) and still holds ``"r34\u00e9"``.
   After the rename its Bind is not looked at (not in ``rebind``, nothing forgotten): the
   marker (``ddl`` grant).

3. **A temporary relation made by code the grant may execute is not seen.**
   ``_temp_names`` follows the DDL the policy classifies only. ``SELECT public.r34_mk()``
   (granted; makes ``pg_temp.r34_cf (id int)``) then ``SELECT o.r34_pin FROM r34_cf o``:
   decided on ``public.r34_cf``'s columns (a column read), run as ``public.r34_pin(row)``:
   the marker in every mode (``mk`` grant).

4. **A client_encoding change made by code the grant may execute is not seen before the
   server reports it.** ``encoding_changed`` is set by a SET / SET LOCAL the policy decides
   or by the ParameterStatus (with the ReadyForQuery ending the group). ``SELECT
   public.r34_latin1()`` and ``SELECT val FROM "r34\u00e9".t`` in one write as two
   Queries: the proxy decodes the second as UTF-8 (the granted schema), the server as
   LATIN1 (``"r34\u00c3\u00a9"``): its marker (``enc`` grant).

5. **DDL committed without the session going idle never settles.** ``settle_ddl`` runs at a
   ReadyForQuery 'I' only. The migrator: ``BEGIN``; ``CREATE TRIGGER r34_trg ... ON
   r34w.t``; (the reload it started runs, sees no trigger); then ``COMMIT AND CHAIN``, or
   ``COMMIT; BEGIN`` in one Query, or Parse/Bind/Execute ``COMMIT`` and ``BEGIN`` in one
   Sync group: committed, but the session reports 'T'. The writer's ``INSERT INTO r34w.t
   VALUES (1)`` (simple, extended, prepared) is decided on the snapshot without the
   trigger (not stale: no wait, nothing withheld): ``loud: <marker>`` whole.

6. **DDL run by a function the migrator may execute is no DDL to the policy.** ``SELECT
   public.r34_attach()`` attaches the same trigger; no reload, no stale snapshot: the
   writer's INSERT shows the marker (the documented outside-the-proxy window, up to
   ``refresh_after``, reached by a grant through the proxy).

Held: SQL ``EXECUTE`` of a name only a protocol Parse made (refused: not this session's
PREPARE); the Close after the SET's answer; a Bind after the rename (round 33's control);
``PREPARE``, rename and ``EXECUTE`` in one Query; ``CREATE TEMP TABLE ... AS EXECUTE``,
``EXPLAIN [ANALYZE] EXECUTE`` (refused); the temporary shadow read through a subquery, a
CTE, LATERAL, a quoted name, a temporary view over a temporary table, a rename into
``pg_temp`` (each refused: ``scope.execute``); ``SET NAMES`` / ``SET SESSION
client_encoding`` pipelined with a non-ASCII read, and the read as a Parse in the SET's
Sync group (refused: ``ENCODING_IN_FLIGHT``). Not a probe: a temporary sequence named like
the granted table (the server refuses whole-row syntax on a sequence, 42809).
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(180)

AGENT = "r34-bot"
SCOPES = "read:r34s.*"
GRANTS = {
    "ddl": "read:r34s.* write:r34s.* ddl:r34s.*",
    "pub": "read:public.r34_cf",
    "mk": "read:public.r34_cf execute:public.r34_mk",
    "uni": 'read:"r34\u00e9".*',
    "enc": 'read:"r34\u00e9".* execute:public.r34_latin1',
    "writer": "read:r34w.* write:r34w.*",
    "migrator": "read:r34w.* write:r34w.* ddl:r34w.* execute:public.r34_loud "
    "execute:public.r34_attach",
}
R = {"pin": "R34-PIN-5c01", "enc": "R34-ENC-5c02", "trg": "R34-TRG-5c03"}
SECRETS = list(R.values())


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


# --- 1. statement names -------------------------------------------------------------------

UNAME = "r34\u00e9"  # a statement name with non-ASCII bytes (UTF-8: 72 33 34 c3 a9)
SET_LATIN1 = "SET client_encoding = 'LATIN1'"
EXEC = (query("EXECUTE r34p"),)
CLEAN = [(query("DEALLOCATE ALL"),)]


def pin(t: str) -> str:
    return f"SELECT o.r34_pin FROM r34s.{t} o"


def renamed_then(t: str, *run):
    """The column renamed away in a block (rolled back), then ``run``: the server analyses
    the prepared statement again, and ``o.r34_pin`` is the call ``r34_pin(o)``."""
    away = f"ALTER TABLE r34s.{t} RENAME COLUMN r34_pin TO gone"
    return [(query("BEGIN"),), (query(away),), *run, (query("ROLLBACK"),)]


PINNED = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = $1::regclass"
PRIVATE = "r34_private"  # directly: what the proxy sends upstream for the pinned Parse


def _pinned_close(private: str | None):
    """``Parse r34p <pin>``; ``Parse r34p <PINNED>`` (its pin a parameter: the proxy parses
    it upstream under a private name, so no 42P05); ``Close r34p`` (the private one closed
    upstream; the policy keeps ``r34p`` as PINNED's text); the rename; ``Bind r34p``: decided
    again as PINNED, run by the server as the first Parse. ``private``: the direct run's
    stand-in for the proxy's renaming."""

    def build(t: str):
        return [
            (parse("r34p", f"{pin(t)} WHERE $1::text IS NOT NULL", (25,)), SYNC),
            (parse(private or "r34p", PINNED, (25,)), SYNC),
            (m.close_statement(private or "r34p"), SYNC),
            # the value pins the policy's text to a granted relation
            *renamed_then(t, (bind("", "r34p", params=[f"r34s.{t}".encode()]), m.execute(), SYNC)),
            *CLEAN,
        ]

    return build


NAME_LEAKS = {
    "pinned-parse-closed-then-bind": _pinned_close(None),
    "close-name-decoded-while-encoding-in-flight": lambda t: [
        (parse(UNAME, pin(t)), SYNC),
        (query(SET_LATIN1), m.close_statement(UNAME), SYNC),  # the server closes "r34Ã©"
        (query("RESET client_encoding"),),
        *renamed_then(t, (bind("", UNAME), m.execute(), SYNC)),
        *CLEAN,
    ],
}
DIRECT = {"pinned-parse-closed-then-bind": _pinned_close(PRIVATE)}
NAME_WHY = {
    "pinned-parse-closed-then-bind": "a Parse whose pin is a parameter goes upstream under a "
    "private name (no 42P05 for a name in use), and its Close is not followed "
    "(policy.closed not called): the policy decides the pinned text again, the server runs "
    "the first Parse",
    "close-name-decoded-while-encoding-in-flight": "a Close's statement name is decoded in "
    "the old encoding while a change is in flight; policy.closed forgets the wrong name, the "
    "server keeps it, and its Bind is not looked at after the rename",
}
NAME_HELD = {
    # SQL EXECUTE of a name only a protocol Parse made: refused (not a PREPARE of this session)
    "sql-execute-of-a-protocol-parse": lambda t: [
        (parse("r34p", pin(t)), SYNC),
        *renamed_then(t, EXEC),
        *CLEAN,
    ],
    # the same Close sent after the SET's answer: both read LATIN1 (no such name anywhere)
    "close-name-after-the-answer": lambda t: [
        (parse(UNAME, pin(t)), SYNC),
        (query(SET_LATIN1),),
        (m.close_statement(UNAME), SYNC),
        (query("RESET client_encoding"),),
        *renamed_then(t, (bind("", UNAME), m.execute(), SYNC)),
        *CLEAN,
    ],
    "bind-after-rename": lambda t: [
        (parse("r34p", pin(t)), SYNC),
        *renamed_then(t, (bind("", "r34p"), m.execute(), SYNC)),
        *CLEAN,
    ],
    # a Parse of the name in the same Query group as a skipped EXECUTE
    "prepare-execute-in-one-query": lambda t: [
        (query(f"PREPARE r34p AS {pin(t)}"),),
        (query("BEGIN"),),
        (query(f"ALTER TABLE r34s.{t} RENAME COLUMN r34_pin TO gone; EXECUTE r34p"),),
        (query("ROLLBACK"),),
        *CLEAN,
    ],
}


def _table(name: str, side: str) -> str:
    return f"{name.replace('-', '_')}_{side}"[:60]


TABLES = [_table(k, side) for k in (*NAME_LEAKS, *NAME_HELD) for side in "dp"]


def _sequence(px, pg, name: str, build) -> str:
    with RawClient.direct(pg) as c:
        direct = run_steps(c, DIRECT.get(name, build)(_table(name, "d")))
    if not shows(direct, R["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-300:]))
    with planted.session(px, px.tokens["ddl"]) as c:
        got = run_steps(c, build(_table(name, "p")))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # the session goes on
    return got


# --- setup --------------------------------------------------------------------------------

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r34s; CREATE SCHEMA r34x;\n"
    "CREATE TABLE r34x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r34x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r34_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r34x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r34s.{t} (id int, r34_pin text); INSERT INTO r34s.{t} VALUES (1, 'ok');\n"
        for t in TABLES
    )
    + "CREATE TABLE public.r34_cf (id int, r34_pin text);\n"
    "INSERT INTO public.r34_cf VALUES (1, 'ok');\n"
    "CREATE FUNCTION public.r34_mk() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "CREATE TEMP TABLE IF NOT EXISTS r34_cf (id int); INSERT INTO pg_temp.r34_cf VALUES (1); "
    "RETURN 1; END $$;\n"
    "CREATE FUNCTION public.r34_latin1() RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN set_config('client_encoding', 'LATIN1', false); END $$;\n"
    'CREATE SCHEMA "r34\u00e9"; CREATE TABLE "r34\u00e9".t (val text);\n'
    "INSERT INTO \"r34\u00e9\".t VALUES ('ok');\n"
    'CREATE SCHEMA "r34\u00c3\u00a9"; CREATE TABLE "r34\u00c3\u00a9".t (val text);\n'
    f"INSERT INTO \"r34\u00c3\u00a9\".t VALUES ('{R['enc']}');\n"
    "CREATE SCHEMA r34w; CREATE TABLE r34w.t (k int);\n"
    "CREATE FUNCTION public.r34_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r34x.vault WHERE key = 'trg'); END $$;\n"
    "CREATE FUNCTION public.r34_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "CREATE TRIGGER r34_trg BEFORE INSERT OR UPDATE ON r34w.t "
    "FOR EACH ROW EXECUTE FUNCTION public.r34_loud(); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP FUNCTION IF EXISTS public.r34_loud(), public.r34_attach() CASCADE;\n"
    'DROP SCHEMA IF EXISTS r34s, r34w, r34x, "r34\u00e9", "r34\u00c3\u00a9" CASCADE;\n'
    "DROP TABLE IF EXISTS public.r34_cf;\n"
    "DROP FUNCTION IF EXISTS public.r34_mk(), public.r34_latin1() CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r34_pin(anyelement) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r34", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


@pytest.mark.parametrize("name", list(NAME_LEAKS))
def test_statement_name_leak(px, pg, name):
    got = _sequence(px, pg, name, NAME_LEAKS[name])
    assert not leaked(got), ("LEAK", name, got[-500:])


@pytest.mark.parametrize("name", list(NAME_HELD))
def test_statement_name_held(px, pg, name):
    got = _sequence(px, pg, name, NAME_HELD[name])
    assert not leaked(got), ("LEAK", name, got[-500:])


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP TABLE r34_x AS EXECUTE r34p",
        "EXPLAIN EXECUTE r34p",
        "EXPLAIN ANALYZE EXECUTE r34p",
    ],
)
def test_execute_wrapped_refused(px, sql):
    with planted.session(px, px.tokens["ddl"]) as c:
        c.query("PREPARE r34p AS SELECT 1")
        got = planted.text(c.query(sql))
    assert "42501" in got and "pgwitness: task" in got, got[-300:]


# --- 2. temporary relations ---------------------------------------------------------------

SHADOW = "SELECT o.r34_pin FROM r34_cf o"
TEMP_TABLE = ("CREATE TEMP TABLE r34_cf (id int)", "INSERT INTO pg_temp.r34_cf VALUES (1)")


def _shadowed_modes(px, token, before, sql) -> dict[str, str]:
    got = planted.received(px, sql, before=before, token=token)
    with planted.session(px, token) as c:
        frames = [f for s in before for f in c.query(s)]
        got["pipelined"] = planted.text(frames + planted.pipelined(c, [sql, sql]))
    with planted.session(px, token) as c:
        got["one query"] = planted.text(c.query("; ".join((*before, sql))))
    return got


def _precondition(pg, sqls) -> None:
    with RawClient.direct(pg) as c:
        direct = planted.text([f for s in sqls for f in c.query(s)])
    if not shows(direct, R["pin"]):
        raise RuntimeError(("precondition: no marker directly", sqls, direct[-300:]))


def test_temp_made_by_a_granted_function(px, pg):
    before = ("SELECT public.r34_mk()",)
    _precondition(pg, [*before, SHADOW])
    got = _shadowed_modes(px, px.tokens["mk"], before, SHADOW)
    bad = {mode: t[-300:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), bad)


TEMP_HELD = {
    "rename-into-pg-temp": (
        (
            "CREATE TEMP TABLE r34_tmp (id int)",
            "INSERT INTO pg_temp.r34_tmp VALUES (1)",
            "ALTER TABLE pg_temp.r34_tmp RENAME TO r34_cf",
        ),
        SHADOW,
    ),
    "subquery": (TEMP_TABLE, "SELECT o.r34_pin FROM (SELECT * FROM r34_cf) o"),
    "cte": (TEMP_TABLE, "WITH o AS (SELECT * FROM r34_cf) SELECT o.r34_pin FROM o"),
    "lateral": (
        TEMP_TABLE,
        "SELECT o.r34_pin FROM public.r34_cf x, LATERAL (SELECT * FROM r34_cf) o",
    ),
    "quoted": (('CREATE TEMP TABLE "r34_cf" (id int)', TEMP_TABLE[1]), SHADOW),
    "temp-view-over-temp": (
        (
            "CREATE TEMP TABLE r34_t2 (id int)",
            "INSERT INTO pg_temp.r34_t2 VALUES (1)",
            "CREATE TEMP VIEW r34_cf AS SELECT * FROM r34_t2",
        ),
        SHADOW,
    ),
}


@pytest.mark.parametrize("name", list(TEMP_HELD))
def test_temp_shadow_held(px, pg, name):
    before, sql = TEMP_HELD[name]
    _precondition(pg, [*before, sql])
    got = _shadowed_modes(px, px.tokens["pub"], before, sql)
    bad = {mode: t[-300:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


# --- 3. client encoding -------------------------------------------------------------------

UNI_SELECT = 'SELECT val FROM "r34\u00e9".t'


def _encoding_probe(px, pg, token: str, steps) -> str:
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, R["enc"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens[token]) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def test_encoding_changed_by_a_granted_function(px, pg):
    steps = [
        (query("SELECT public.r34_latin1()"), query(UNI_SELECT)),
        (query("RESET client_encoding"),),
    ]
    got = _encoding_probe(px, pg, "enc", steps)
    assert not leaked(got), ("LEAK", got[-400:])


ENCODING_HELD = {
    "set-names": [
        (query("SET NAMES 'LATIN1'"), query(UNI_SELECT)),
        (query("RESET client_encoding"),),
    ],
    "set-session": [
        (query("SET SESSION client_encoding TO 'LATIN1'"), query(UNI_SELECT)),
        (query("RESET client_encoding"),),
    ],
    "pipelined-parse": [
        (parse("", SET_LATIN1), bind(), m.execute(), parse("r34e", UNI_SELECT), SYNC),
        (bind("", "r34e"), m.execute(), SYNC),
        (query("RESET client_encoding"),),
    ],
}


@pytest.mark.parametrize("name", list(ENCODING_HELD))
def test_encoding_held(px, pg, name):
    got = _encoding_probe(px, pg, "uni", ENCODING_HELD[name])
    assert not leaked(got), ("LEAK", name, got[-400:])


# --- 4. another grant's trigger, committed where the proxy does not see the block end -------

ATTACH = (
    "CREATE TRIGGER r34_trg BEFORE INSERT OR UPDATE ON r34w.t "
    "FOR EACH ROW EXECUTE FUNCTION public.r34_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r34_trg ON r34w.t"
WRITE = "INSERT INTO r34w.t VALUES (1)"
CHAINED = {
    # each commits the block and leaves the session in a new one (ReadyForQuery 'T', never
    # 'I': settle_ddl waits for an idle that does not come)
    "commit-and-chain": [(query("COMMIT AND CHAIN"),)],
    "commit-begin-one-query": [(query("COMMIT; BEGIN"),)],
    "commit-begin-one-sync-group": [
        (parse("", "COMMIT"), bind(), m.execute(), parse("", "BEGIN"), bind(), m.execute(), SYNC)
    ],
}


@pytest.mark.parametrize("how", list(CHAINED))
def test_trigger_committed_in_a_chained_block(px, pg, how):
    _trigger_precondition(pg)
    with planted.session(px, px.tokens["migrator"]) as mig:
        got = run_steps(mig, [(query("BEGIN"),), (query(ATTACH),)])
        assert "error" not in planted.result(mig.query("SELECT 1")), got[-300:]
        planted.wait_catalog_quiet(px, 0.5)  # the reload the DDL started has run (no trigger)
        got = run_steps(mig, CHAINED[how])
        assert "E\x00" not in got, got[-300:]
        try:
            out = planted.writes_every_mode(px, px.tokens["writer"], WRITE)
        finally:
            mig.query("ROLLBACK")
            mig.query(DETACH)
    planted.assert_trigger_withheld(out, leaked, how)


def _trigger_precondition(pg) -> None:
    with RawClient.direct(pg) as c:  # the probe proves something: the marker directly
        c.query(ATTACH)
        direct = planted.text(c.query(WRITE))
        c.query(DETACH)
    if not shows(direct, R["trg"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))


def test_trigger_attached_by_a_granted_function(px, pg):
    """Was a strict xfail (the residue, 6 above) until session 22: a call of a function
    that may run DDL counts as DDL (tests/integration/test_s22_ddl_code.py)."""
    _trigger_precondition(pg)
    planted.wait_catalog_quiet(px, 1.0)  # the reloads earlier tests' DDL started have run
    with planted.session(px, px.tokens["migrator"]) as mig:
        got = planted.text(mig.query("SELECT public.r34_attach()"))
        assert "E\x00" not in got, got[-300:]
        try:
            out = planted.writes_every_mode(px, px.tokens["writer"], WRITE)
        finally:
            mig.query(DETACH)
    planted.assert_trigger_withheld(out, leaked, "a granted function")
