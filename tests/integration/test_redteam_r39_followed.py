"""Red-team round 39 (attacks on a1e7abf: ``StatementPolicy.followed`` and the relation rows
of ``DDL_CODE_SQL``), time-boxed; the server the judge.

Grants (agent ``r39-bot``): ``writer`` = ``read:r39w.* write:r39w.*`` (also the fixture's
base grant); ``migrator`` = ``read:r39w.* write:r39w.* ddl:r39w.*`` and ``execute`` on
``public.r39_attach``, ``r39_loud``, ``r39_cast``, ``r39_atomic_dom``, ``r39_warm``.

Planted (schema owner; ``r39x`` outside every grant, ``r39x.vault`` holds the markers):
``public.r39_loud()`` (trigger function raising the vault's ``trg`` value);
``public.r39_attach()`` (plpgsql ``DO E'... DROP TRIGGER IF EXISTS r39_trg ON r39w.t;
CREATE TRIGGER r39_trg BEFORE INSERT ON r39w.t ... \\105XECUTE FUNCTION
public.r39_loud()'``: named by ``DDL_CODE_SQL``); domain ``r39w.d1`` (``CHECK (VALUE > 0
AND public.r39_attach() > 0)``), ``r39w.d2`` (a domain over ``d1``), ``r39w.ddef`` (``int
DEFAULT public.r39_attach()``), composite ``r39w.comp (v r39w.d1)``; tables
``r39w.direct (v d1)`` (the control), ``r39w.dd (v d2)``, ``r39w.dflt (k int, v ddef)``,
``r39w.darr (v d1[])``, ``r39w.dcomp (v comp)``; enum ``r39w.mood`` with an ASSIGNMENT
cast to int by ``public.r39_cast`` (plpgsql ``RETURN public.r39_attach()``), tables
``r39w.moods (m mood)`` (one row), ``r39w.ints (k int)``; ``public.r39_atomic_dom()``
(``BEGIN ATOMIC SELECT 1::r39w.d1; END``); ``public.r39_pin(anyelement)`` (SQL: the
vault's ``pin`` value; ``o.r39_pin`` on a row without that column calls it);
``r39w.pt_<i>``, ``r39w.pt_warm (id int, r39_pin text)``; ``public.r39_warm()`` (plpgsql:
``PREPARE r39q AS SELECT o.r39_pin FROM r39w.pt_warm o``). Every probe runs directly as
the upstream login first and must show its marker there (``RuntimeError`` otherwise);
renames are made in a block rolled back.

Leaks found (strict xfails when found; all fixed in session 23, the same tests now pass:
``DDL_CODE_SQL``'s relation rows follow a domain's CHECK and DEFAULT and a user type's
casts to every relation whose rows are made of it (``typerel``: domains over domains,
arrays, row types), ``_CODE_TEXT`` reads the types an SQL-standard body depends on, and
``_runs_ddl_code`` counts a write of a relation whose row type runs such code
(``user_types``) and a read or write of one whose values a cast by it converts
(``relation_casts``); a Bind of a statement that prepares or removes statements must be
followed in its batch by its portal's Execute (``StatementPolicy.bind_at_once``), and
code that may run DDL (a PREPARE, DEALLOCATE or DISCARD in its source is such code now)
makes names the policy never held refused at their Bind after a catalog change
(``_forgot``)):

1. **DDL run through a type the relation rows do not follow** (``DDL_CODE_SQL``'s
   "relation" rows, ``TRIGGERED_SQL``, ``StatementPolicy._runs_ddl_code``). The trigger
   is dropped directly, then ``COMMENT ON TABLE r39w.t`` through the migrator and 0.6 s.
   The migrator (simple Query, no error) runs one of:

   a. ``INSERT INTO r39w.dd VALUES (1)`` (a column of a domain over the domain);
   b. ``INSERT INTO r39w.dflt (k) VALUES (1)`` (a domain's DEFAULT: its dependency is
      recorded against the type, ``pg_type``, which ``_RUNS_FUNCTION`` maps to no relation);
   c. ``INSERT INTO r39w.darr VALUES (ARRAY[1])`` (an array of the domain);
   d. ``INSERT INTO r39w.dcomp VALUES (ROW(1))`` (a row type with a column of it);
   e. ``INSERT INTO r39w.ints SELECT m FROM r39w.moods`` (an assignment cast: ``pg_cast``
      rows map to no relation either, and ``_runs_ddl_code`` never reads
      ``relation_casts``);
   f. ``SELECT public.r39_atomic_dom()`` (an SQL-standard body whose tree coerces to the
      domain: ``CoerceToDomain`` has no ``funcid``, its ``pg_depend`` row names the type,
      and ``_CODE_TEXT`` reads only relation dependencies).

   ``_RUNS_FUNCTION`` maps a domain CHECK to ``nullif(conrelid, 0)`` (NULL) and
   ``TRIGGERED_SQL`` takes only a column whose own type is the domain
   (``co.contypid = a.atttypid``): none of these tables is in ``ddl_relations`` or
   ``triggered``, the statements name no flagged function or type, so each runs
   ``CREATE TRIGGER r39_trg`` on ``r39w.t`` as no DDL (no ``on_ddl``, no reload). The
   writer: ``INSERT INTO r39w.t VALUES (1)`` (simple, extended, prepared): ``ERROR P0001
   loud: <marker>`` whole.

2. **Statement names changed where the policy does not look** (``check_bind`` decides a
   followed statement and applies its change at the *Bind*; the server runs it at the
   *Execute*, which the relay never looks at; and code can PREPARE). The migrator:

   a. (``portal-run-after-the-parse``) ``Parse r39dd "DEALLOCATE r39s"``, ``Parse r39pp
      "PREPARE r39s AS SELECT o.r39_pin FROM r39w.pt_1 o"`` / Sync; ``BEGIN``; ``Bind
      portal pd <- r39dd``, ``Bind portal pp <- r39pp`` / Sync (decided, applied: nothing
      runs); ``Parse r39s "SELECT 'ok'::text AS r39_pin"`` / Sync (the policy's text now;
      the server's too); ``Execute pd``, ``Execute pp`` / Sync (the server drops it and
      prepares the pin under ``r39s``); ``ALTER TABLE r39w.pt_1 RENAME COLUMN r39_pin TO
      gone``; ``Bind r39s`` / Execute / Sync: decided again on the harmless text, the
      server runs ``public.r39_pin(o)``: the marker as a row. Also with the Binds, the
      Parse and the Executes in one Sync group and no block (``...-one-group``).
   b. (``portal-execute-after-the-rename``) ``PREPARE r39e AS SELECT o.r39_pin FROM
      r39w.pt_3 o`` (simple); ``Parse r39ex "EXECUTE r39e"`` / Sync; ``BEGIN``; ``Bind
      portal pe <- r39ex`` / Sync (decided now: the column read); the rename; ``Execute
      pe`` / Sync: the server's EXECUTE analyses ``r39e`` again: the marker.
   c. (``prepared-by-code``) ``SELECT public.r39_warm()`` (a granted function whose
      body PREPAREs ``r39q``, a column read of a granted table); ``BEGIN``; ``ALTER
      TABLE r39w.pt_warm RENAME COLUMN r39_pin TO gone``; ``Bind r39q`` / Execute /
      Sync: a name the policy never held is not looked at (``bind_checked``: not in
      ``rebind``, ``followed``, ``bind_pins``; ``_forgotten`` only after ``_forgot``):
      the marker. (plpgsql and SQL bodies may PREPARE and DEALLOCATE statically: no word
      ``execute`` is needed, so ``CODE_FLAGS_SQL`` does not flag it either.)

Held: a column of the domain itself (``triggered``: the INSERT counts as DDL, the writer's
error is withheld); the DEALLOCATE/PREPARE Binds executed at once, then the rename and
``Bind r39s`` (refused, ``scope.execute``: PREPARE r39s decided again); ``Bind pe <- r39ex``
after the rename (refused: ``EXECUTE r39e`` decided again); SQL ``EXECUTE r39q`` of the
statement the function prepared (refused, ``deny.execute``).

Best guesses at the fixes: (1) in ``_RUNS_FUNCTION``/``TRIGGERED_SQL``, follow a domain
constraint's or default's type, and a cast's source and target, through ``_PARTS``
(domains over it, arrays, row types, ranges) to every column of those types (and in
``_CODE_TEXT``, the types an SQL-standard body depends on to the functions they run);
(2) decide and apply a followed statement at its portal's Execute too, or refuse a Bind
of one to a named portal (or one not followed by its Execute in the same message run),
and treat a call of code whose source names PREPARE/DEALLOCATE/DISCARD (a new
``CODE_FLAGS_SQL`` flag) as making every name unknown (``_forgot``, every Bind of a name
the policy does not hold looked at and refused).
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r39-bot"
MARK = {"trg": "R39-TRG-7e41", "pin": "R39-PIN-7e42"}
EXECUTABLE = ("r39_attach", "r39_loud", "r39_cast", "r39_atomic_dom", "r39_warm")
FUNCTIONS = ",".join(f"public.{f}" for f in EXECUTABLE)
SCOPES = "read:r39w.* write:r39w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": f"read:r39w.* write:r39w.* ddl:r39w.* execute:{FUNCTIONS}",
}

ATTACH = (
    "CREATE TRIGGER r39_trg BEFORE INSERT ON r39w.t FOR EACH ROW EXECUTE FUNCTION public.r39_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r39_trg ON r39w.t"
WRITE = "INSERT INTO r39w.t VALUES (1)"
BACKSLASH = "\\"

PIN_TABLES = ["pt_warm", *(f"pt_{i}" for i in range(8))]

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r39w; CREATE SCHEMA r39x;\n"
    "CREATE TABLE r39x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r39x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE TABLE r39w.t (k int);\n"
    "CREATE FUNCTION public.r39_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r39x.vault WHERE key = 'trg'); END $$;\n"
    # the DDL function DDL_CODE_SQL names (no word "execute": CODE_FLAGS_SQL stays quiet)
    "CREATE FUNCTION public.r39_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"DO E'BEGIN {DETACH}; {ATTACH.replace('EXECUTE', BACKSLASH + '105XECUTE')}; END'; "
    "RETURN 1; END $$;\n"
    # a domain whose CHECK runs it, and what is made of that domain
    "CREATE DOMAIN r39w.d1 AS int CHECK (VALUE > 0 AND public.r39_attach() > 0);\n"
    "CREATE DOMAIN r39w.d2 AS r39w.d1;\n"
    "CREATE DOMAIN r39w.ddef AS int DEFAULT public.r39_attach();\n"
    "CREATE TYPE r39w.comp AS (v r39w.d1);\n"
    "CREATE TABLE r39w.direct (v r39w.d1);\n"
    "CREATE TABLE r39w.dd (v r39w.d2);\n"
    "CREATE TABLE r39w.dflt (k int, v r39w.ddef);\n"
    "CREATE TABLE r39w.darr (v r39w.d1[]);\n"
    "CREATE TABLE r39w.dcomp (v r39w.comp);\n"
    # an assignment cast whose function runs it
    "CREATE TYPE r39w.mood AS ENUM ('calm');\n"
    "CREATE FUNCTION public.r39_cast(r39w.mood) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN public.r39_attach(); END $$;\n"
    "CREATE CAST (r39w.mood AS int) WITH FUNCTION public.r39_cast(r39w.mood) AS ASSIGNMENT;\n"
    "CREATE TABLE r39w.moods (m r39w.mood); INSERT INTO r39w.moods VALUES ('calm');\n"
    "CREATE TABLE r39w.ints (k int);\n"
    # an SQL-standard body coercing to the domain (no funcid in its tree, a type dependency)
    "CREATE FUNCTION public.r39_atomic_dom() RETURNS int LANGUAGE sql BEGIN ATOMIC "
    "SELECT 1::r39w.d1; END;\n"
    # column syntax: o.r39_pin on a row without that column calls r39_pin(o)
    "CREATE FUNCTION public.r39_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r39x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r39w.{t} (id int, r39_pin text); INSERT INTO r39w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    # code that prepares a statement (a column read of a granted table) under a name
    + "CREATE FUNCTION public.r39_warm() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PREPARE r39q AS SELECT o.r39_pin FROM r39w.pt_warm o; RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r39w, r39x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r39_loud(), public.r39_attach(), public.r39_atomic_dom(), "
    "public.r39_pin(anyelement), public.r39_warm() CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r39", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _cases(cases: dict, why: str) -> list:
    marks = pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)
    return [pytest.param(k, marks=marks) if v[-1] else k for k, v in cases.items()]


# --- 2. DDL run by code the load does not see -------------------------------------------

CALLS = {
    # name: (the migrator's statement, leaks)
    "control-domain-column": ("INSERT INTO r39w.direct VALUES (1)", False),
    "domain-over-a-domain": ("INSERT INTO r39w.dd VALUES (1)", False),
    "domain-default": ("INSERT INTO r39w.dflt (k) VALUES (1)", False),
    "array-of-a-domain": ("INSERT INTO r39w.darr VALUES (ARRAY[1])", False),
    "row-type-with-a-domain": ("INSERT INTO r39w.dcomp VALUES (ROW(1))", False),
    "assignment-cast": ("INSERT INTO r39w.ints SELECT m FROM r39w.moods", False),
    "sql-standard-body-domain": ("SELECT public.r39_atomic_dom()", False),
}
HIDDEN_WHY = (
    "LEAK: DDL run by code neither DDL_CODE_SQL's relation rows, TRIGGERED_SQL nor "
    "_runs_ddl_code sees: the statement is no DDL, the snapshot stays without the trigger, "
    "and the writer's INSERT shows the trigger's RAISE whole"
)


def _unseen(pg, mig: RawClient) -> None:
    """No trigger on r39w.t, and the proxy's snapshot says so: dropped directly, then DDL
    through the proxy and the load it starts."""
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        c.query("DELETE FROM r39w.t")
    got = planted.text(mig.query("COMMENT ON TABLE r39w.t IS 'r39'"))
    assert not planted.is_error(got), got[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the load the DDL started is done


@pytest.mark.parametrize("name", _cases(CALLS, HIDDEN_WHY))
def test_ddl_run_by_unseen_code(px, pg, name):
    planted.assert_hidden_ddl_withheld(
        px, pg, call=CALLS[name][0], caller="migrator", write=WRITE,
        reset=lambda c: c.query(DETACH), unseen=_unseen, marker=MARK["trg"], label=name,
    )  # fmt: skip


# --- 1. statement names the server changes where the policy does not look ---------------

OK = "SELECT 'ok'::text AS r39_pin"  # harmless, of the same result type as the pin


def pin(t: str) -> str:
    return f"SELECT o.r39_pin FROM r39w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r39w.{t} RENAME COLUMN r39_pin TO gone"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), m.execute(), SYNC)


FOLLOWED = {
    # name: (steps on table t, leaks)
    # the control: PREPARE and DEALLOCATE bound and executed at once (decided at the Bind)
    "control-bound-and-run": (
        lambda t: [
            (parse("r39dd", "DEALLOCATE r39s"), parse("r39pp", f"PREPARE r39s AS {pin(t)}"), SYNC),
            (parse("r39s", OK), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r39dd"), execute("pd"), bind("pp", "r39pp"), execute("pp"), SYNC),
            (query(away(t)),),
            _one("r39s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # the Binds to named portals (decided, their change applied), the name parsed again
    # after them, the portals run later: the Execute is not looked at
    "portal-run-after-the-parse": (
        lambda t: [
            (parse("r39dd", "DEALLOCATE r39s"), parse("r39pp", f"PREPARE r39s AS {pin(t)}"), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r39dd"), bind("pp", "r39pp"), SYNC),
            (parse("r39s", OK), SYNC),
            (execute("pd"), execute("pp"), SYNC),
            (query(away(t)),),
            _one("r39s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # session 23: each Bind alone in its read (a Bind that ends a read counts as executed at
    # once, for psycopg's pipeline): the next read does not start with its Execute, so the
    # policy holds no statement text from then on (``Relay._bind_pending``, names_unknown)
    "portal-bound-alone-in-its-read": (
        lambda t: [
            (parse("r39dd", "DEALLOCATE r39s"), parse("r39pp", f"PREPARE r39s AS {pin(t)}"), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r39dd"),),
            0.2,
            (bind("pp", "r39pp"),),
            0.2,
            (parse("r39s", OK), SYNC),
            (execute("pd"), execute("pp"), SYNC),
            (query(away(t)),),
            _one("r39s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # the same in one Sync group, no block
    "portal-run-after-the-parse-one-group": (
        lambda t: [
            (parse("r39dd", "DEALLOCATE r39s"), parse("r39pp", f"PREPARE r39s AS {pin(t)}"), SYNC),
            (
                bind("pd", "r39dd"),
                bind("pp", "r39pp"),
                parse("r39s", OK),
                execute("pd"),
                execute("pp"),
                SYNC,
            ),  # fmt: skip
            (query("BEGIN"),),
            (query(away(t)),),
            _one("r39s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # EXECUTE of an SQL-level PREPARE bound to a portal before the rename, run after it
    "portal-execute-after-the-rename": (
        lambda t: [
            (query(f"PREPARE r39e AS {pin(t)}"),),
            (parse("r39ex", "EXECUTE r39e"), SYNC),
            (query("BEGIN"),),
            (bind("pe", "r39ex"), SYNC),
            (query(away(t)),),
            (execute("pe"), SYNC),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # the control: bound after the rename (decided again: refused)
    "control-execute-bound-after-the-rename": (
        lambda t: [
            (query(f"PREPARE r39e AS {pin(t)}"),),
            (parse("r39ex", "EXECUTE r39e"), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            (bind("pe", "r39ex"), execute("pe"), SYNC),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # a granted function PREPAREs a statement (a column read of a granted table): the
    # policy never holds the name
    "prepared-by-code": (
        lambda t: [
            (query("SELECT public.r39_warm()"),),
            (query("BEGIN"),),
            (query(away("pt_warm")),),
            _one("r39q"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "control-prepared-by-code-sql-execute": (
        lambda t: [
            (query("SELECT public.r39_warm()"),),
            (query("BEGIN"),),
            (query(away("pt_warm")),),
            (query("EXECUTE r39q"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}
FOLLOWED_WHY = (
    "LEAK: the server changes what a statement name holds where the policy does not look "
    "(an Execute of a portal bound earlier, code that prepares): the policy decides its "
    "own text at the Bind after the rename, the server runs o.r39_pin as r39_pin(o)"
)


@pytest.mark.parametrize("name", _cases(FOLLOWED, FOLLOWED_WHY))
def test_statement_names_changed_unseen(px, pg, name):
    build, leaks = FOLLOWED[name]
    i = list(FOLLOWED).index(name)
    t = f"pt_{i}"
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(t))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, build(t))
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # it goes on
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    if not leaks:  # a control: the policy refused it (not the server), or the proxy ended
        # the session: a pending Bind's Execute did not lead the next read (session 23)
        refused = "C42501" in got and "pgwitness" in got
        assert refused or (ended and "must be followed by the Execute" in got), (name, got[-500:])
