"""Red-team round 45 (attacks on c99b325: ``_Entry.unread``, ``_runs_code`` counting event
triggers' functions, ``lazy_names``), time-boxed; the server the judge.

Grants (agent ``r45-bot``): ``writer`` = ``read:r45w.* write:r45w.*`` (the fixture's base
grant); ``migrator`` = that and ``ddl:r45w.*``, ``execute`` on ``public.r45_evt`` (an
event trigger's function: every DDL needs it), ``r45w.mk``, ``r45w.mkp``, ``r45w.redef``,
``r45w.r45_f``.

Planted (schema owner; ``r45x`` outside every grant, ``r45x.vault`` holds the marker
``pin``): ``public.r45_pin(anyelement)`` (SQL: the vault's ``pin``; ``o.r45_pin`` on a row
without that column calls it); ``r45w.pt_evt``, ``r45w.pt_swap`` (``id int, r45_pin
text``, one row ``'ok'``); DDL code that is no names code: ``r45w.mk()`` (plpgsql, renames
``pt_evt``'s column ``r45_pin`` to ``gone``), the procedure ``r45w.mkp()`` (the same), and
``r45w.redef()`` (``EXECUTE`` of the text in ``r45w.src``, which is a ``CREATE OR REPLACE
FUNCTION r45w.r45_f`` whose new body, at ``g = 2``, replaces ``r45f`` with ``SELECT
o.r45_pin FROM r45w.pt_swap o``); ``r45w.r45_f(g int)``, harmless (``RETURN g``); and, a
superuser's, the event trigger ``r45_evt`` (``ddl_command_end``), whose function, when the
session holds a statement ``r45e``, replaces it with ``SELECT o.r45_pin FROM r45w.pt_evt
o`` and prepares ``r45u AS SELECT val FROM r45x.vault WHERE key = 'pin'``. Every probe runs
directly as the upstream login first and must show the marker there (``RuntimeError``
otherwise), in a block rolled back. ``OK`` = ``SELECT 'ok'::text AS r45_pin``; ``_one(s)``
= Bind of ``s`` to the unnamed portal, Execute, Sync. All probes through the migrator.

Leaks found (strict xfails when found; fixed in session 24, the same tests now pass: code
that may run DDL counts as running the event triggers' functions DDL fires
(``_runs_names_code``), and running such code refuses unseen names at once
(``rebind_unknown`` with ``_forgot``, in ``_ran_ddl``)):

1. **An event trigger fired by DDL that code runs** (``event-trigger-via-ddl-code-*``).
   Round 44 made an event trigger's function count as run by every DDL *statement*
   (``StatementPolicy._runs_code``: ``c.cls in _FIRES_EVENT_TRIGGERS``, DDL/ROLE/UNKNOWN),
   but DDL that a called function runs fires the same trigger: ``SELECT r45w.mk()`` (READ)
   counts as DDL (``_runs_ddl_code``, ``_ran_ddl``: ``on_ddl``, ``_forgot``) yet
   ``_runs_names_code`` is False for it (``mk`` is no names code, and the event-function
   clause looks only at the statement's class), so ``names_unknown`` never runs:
   ``PREPARE r45e AS OK``; ``BEGIN``; ``SELECT r45w.mk()`` (the rename; the event trigger
   replaces ``r45e``); ``EXECUTE r45e`` (decided again on ``OK``): the marker. Simple
   (``-select``), extended (``-protocol``: ``Parse r45e``, unnamed Parse/Bind/Execute/Sync
   of the call, ``_one("r45e")``), pipelined (``-pipelined``: the call and the Bind of
   ``r45e`` in one Sync group). And the name the event trigger made (``-unseen-name``):
   ``_one("r45u")`` after the call returns the vault's row itself: ``_forgot`` is set, but
   ``rebind_unknown`` only comes with a catalog change (``catalog_changed``) or
   ``names_unknown``, and the session's own DDL in its open block brings neither, so
   ``bind_checked`` lets a Bind of a name the policy never saw through. Fix guess: in
   ``_runs_code``, a statement that runs DDL code (reaches ``snap.ddl_functions``) runs
   ``snap.event_functions`` too (every class, not only ``_FIRES_EVENT_TRIGGERS``); and
   ``_ran_ddl`` setting ``rebind_unknown`` with ``_forgot`` (not waiting for
   ``catalog_changed``) would close the unseen name on its own.

Held (passing): ``CALL r45w.mkp()`` (a procedure doing the same: ``deny.call``), ``DO``
with the rename (``deny.do``), and a function redefined by DDL code, not a CREATE FUNCTION
statement (``SELECT r45w.redef()``: dynamic ``CREATE OR REPLACE FUNCTION r45w.r45_f``, then
a call of ``r45_f(2)`` or a cursor over it fetched, the rename of ``pt_swap``, ``EXECUTE
r45f``): refused, the policy forgets ``r45f`` on the way (``_defined_functions`` reads only
the statement, yet something in the DDL-code path forgets the names; not traced).
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r45-bot"
MARK = {"pin": "R45-PIN-7e2d"}
SCOPES = "read:r45w.* write:r45w.*"
GRANTS = {
    "migrator": "read:r45w.* write:r45w.* ddl:r45w.* execute:public.r45_evt,r45w.mk,"
    "r45w.mkp,r45w.redef,r45w.r45_f",
}

SWAP_FN = (
    "CREATE OR REPLACE FUNCTION r45w.r45_f(g int) RETURNS int LANGUAGE plpgsql AS $b$ BEGIN "
    "IF g = 2 THEN DEALLOCATE r45f; PREPARE r45f AS SELECT o.r45_pin FROM r45w.pt_swap o; "
    "END IF; RETURN g; END $b$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r45w; CREATE SCHEMA r45x;\n"
    "CREATE TABLE r45x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r45x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE FUNCTION public.r45_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r45x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r45w.{t} (id int, r45_pin text); INSERT INTO r45w.{t} VALUES (1, 'ok');\n"
        for t in ("pt_evt", "pt_swap")
    )
    + "CREATE FUNCTION r45w.mk() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "ALTER TABLE r45w.pt_evt RENAME COLUMN r45_pin TO gone; RETURN 1; END $$;\n"
    "CREATE PROCEDURE r45w.mkp() LANGUAGE plpgsql AS $$ BEGIN "
    "ALTER TABLE r45w.pt_evt RENAME COLUMN r45_pin TO gone; END $$;\n"
    "CREATE TABLE r45w.src (body text);\n"
    "INSERT INTO r45w.src VALUES ($q$" + SWAP_FN + "$q$);\n"
    "CREATE FUNCTION r45w.redef() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT s.body FROM r45w.src s); RETURN 1; END $$;\n"
    "CREATE FUNCTION r45w.r45_f(g int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN g; END $$;\n"
    "RESET ROLE;\n"
    "CREATE FUNCTION public.r45_evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF EXISTS (SELECT FROM pg_prepared_statements WHERE name = 'r45e') THEN "
    "DEALLOCATE r45e; PREPARE r45e AS SELECT o.r45_pin FROM r45w.pt_evt o; "
    "PREPARE r45u AS SELECT val FROM r45x.vault WHERE key = 'pin'; END IF; END $$;\n"
    "CREATE EVENT TRIGGER r45_evt ON ddl_command_end EXECUTE FUNCTION public.r45_evt();\n"
)
TEARDOWN = (
    "DROP EVENT TRIGGER IF EXISTS r45_evt;\n"
    "DROP SCHEMA IF EXISTS r45w, r45x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r45_pin(anyelement), public.r45_evt() CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r45", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


OK = "SELECT 'ok'::text AS r45_pin"
AWAY_SWAP = "ALTER TABLE r45w.pt_swap RENAME COLUMN r45_pin TO gone"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


CASES = {
    "event-trigger-via-ddl-code-select": (
        lambda: [
            (query(f"PREPARE r45e AS {OK}"),),
            (query("BEGIN"),),
            (query("SELECT r45w.mk()"),),
            (query("EXECUTE r45e"),),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "event-trigger-via-ddl-code-call": (
        lambda: [
            (query(f"PREPARE r45e AS {OK}"),),
            (query("BEGIN"),),
            (query("CALL r45w.mkp()"),),
            (query("EXECUTE r45e"),),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "event-trigger-via-ddl-code-protocol": (
        lambda: [
            (parse("r45e", OK), SYNC),
            (query("BEGIN"),),
            (parse("", "SELECT r45w.mk()"), bind(), execute(), SYNC),
            _one("r45e"),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "event-trigger-via-ddl-code-pipelined": (
        lambda: [
            (parse("r45e", OK), SYNC),
            (query("BEGIN"),),
            (parse("", "SELECT r45w.mk()"), bind(), execute(), bind("", "r45e"), execute(), SYNC),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "event-trigger-via-ddl-code-unseen-name": (
        lambda: [
            (query(f"PREPARE r45e AS {OK}"),),
            (query("BEGIN"),),
            (query("SELECT r45w.mk()"),),
            _one("r45u"),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "event-trigger-via-do-block": (
        lambda: [
            (query(f"PREPARE r45e AS {OK}"),),
            (query("BEGIN"),),
            (query("DO $$BEGIN ALTER TABLE r45w.pt_evt RENAME COLUMN r45_pin TO gone; END$$"),),
            (query("EXECUTE r45e"),),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "defined-by-ddl-code-then-called": (
        lambda: [
            (query(f"PREPARE r45f AS {OK}"),),
            (query("BEGIN"),),
            (query("SELECT r45w.redef()"),),
            (query("SELECT r45w.r45_f(2)"),),
            (query(AWAY_SWAP),),
            (query("EXECUTE r45f"),),
            (query("ROLLBACK"),),
        ],
        "",
    ),
    "defined-by-ddl-code-cursor-fetched": (
        lambda: [
            (query(f"PREPARE r45f AS {OK}"),),
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT r45w.r45_f(g) FROM generate_series(1, 2) g"),),
            (query("FETCH 1 FROM c"),),
            (query("SELECT r45w.redef()"),),
            (query("FETCH 1 FROM c"),),
            (query(AWAY_SWAP),),
            (query("EXECUTE r45f"),),
            (query("ROLLBACK"),),
        ],
        "",
    ),
}


@pytest.mark.parametrize("name", planted.cases(CASES))
def test_events(px, pg, name):
    build, leaks = CASES[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build())
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    planted.wait_catalog_quiet(px, 1.0)
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, build())
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    if not leaks:
        assert planted.refused(got), (name, got[-500:])
