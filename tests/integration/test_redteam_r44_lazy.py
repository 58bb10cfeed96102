"""Red-team round 44 (attacks on 434e1e4 / 732d32b: ``StatementPolicy.lazy_names``, names
code that runs later than the statement that reached it), time-boxed; the server the judge.

Grants (agent ``r44-bot``): ``writer`` = ``read:r44w.* write:r44w.*`` (the fixture's base
grant); ``migrator`` = that and ``ddl:r44w.*``, ``execute`` on ``public.r44_swap``,
``r44w.r44_f``, ``public.r44_evt`` (an event trigger's function: every DDL needs it),
``public.r44_trg``, ``public.r44_swapb``, ``public.r44_swapop``.

Planted (schema owner; ``r44x`` outside every grant, ``r44x.vault`` holds the marker
``pin``): ``public.r44_pin(anyelement)`` (SQL: the vault's ``pin``; ``o.r44_pin`` on a row
without that column calls it); ``r44w.pt_swap``, ``r44w.pt_evt``, ``r44w.pt_<i>`` (``id
int, r44_pin text``, one row ``'ok'``); names code ``public.r44_swap(g int)`` (plpgsql: when
``g = 2``, ``DEALLOCATE r44f; PREPARE r44f AS SELECT o.r44_pin FROM r44w.pt_swap o``);
``r44w.r44_f(g int)``, harmless (``RETURN g``: no word the DDL-code inference reads), which
probes redefine through the proxy as ``public.r44_swap``'s body (``REDEFINE``) or as a call
of it (``REDEFINE_CALLING``); a view ``r44w.v`` over ``public.r44_swap(g)``; a domain
``r44w.dom`` and an operator ``r44w.===`` whose functions swap at 2; a trigger function
``public.r44_trg()`` that swaps (attached by a probe, in a block); and, a superuser's, the
event trigger ``r44_evt`` (``ddl_command_end``), whose function ``public.r44_evt()``, when
the session holds a statement ``r44e``, replaces it with ``SELECT o.r44_pin FROM
r44w.pt_evt o`` and prepares ``r44u AS SELECT val FROM r44x.vault WHERE key = 'pin'``.
Every probe runs directly as the upstream login first and must show the marker there
(``RuntimeError`` otherwise); renames are made in blocks rolled back. ``OK`` = ``SELECT
'ok'::text AS r44_pin``; ``_one(s)`` = Bind of ``s`` to the unnamed portal, Execute, Sync;
"the rename" = ``ALTER TABLE r44w.<t> RENAME COLUMN r44_pin TO gone`` (simple Query, in a
block). All probes through the migrator's grant.

Leaks found (strict xfails when found; all fixed in session 24, the same tests now pass: a
function defined through the proxy counts as code that may run DDL and replace statements
until a load that started after every DDL block ended reads it (``_Entry.unread``), and
defining one marks the transaction (``lazy_names``), in other sessions too while a block
that defined one is open or once a load shows new such code (``catalog_changed``); an
event trigger's function counts as run by every DDL, a global cast's by every statement
that converts (``_runs_code``)):

1. **A function defined through the proxy is never names code until a load reads it, and
   code already running (a cursor, a suspended portal) runs its new body.**
   ``CatalogCache.invalidate`` -> ``with_defined(stale=True)`` adds functions just defined
   to ``ddl_functions`` (so their calls count as DDL), not to ``names_functions``; in an
   open block no load can read the new body, so ``_runs_names_code`` is False for every
   call of it and nothing sets ``lazy_names`` or runs ``names_unknown``:
   a. ``defined-in-block-then-called``: ``PREPARE r44f AS OK``; ``BEGIN``; ``REDEFINE``;
      ``SELECT r44w.r44_f(2)`` (the swap); the rename of ``pt_swap``; ``EXECUTE r44f``
      (decided again on ``OK``): the marker. ``defined-calling-names-code-then-called``:
      the same with ``REDEFINE_CALLING`` (the body names the planted names code; the
      CREATE FUNCTION's own classification names no function). Extended:
      ``defined-in-block-protocol-statement`` (``Parse r44f OK``, ``Parse s "SELECT
      r44w.r44_f(2)"``, ...; ``_one("s")`` decided again by ``_decided_again`` on the
      stale snapshot: DDL code, not names code; ``_one("r44f")``: the marker).
   b. ``cursor-over-function-redefined-before-fetch``: ``PREPARE r44f AS OK``; ``BEGIN``;
      ``DECLARE c CURSOR FOR SELECT r44w.r44_f(g) FROM generate_series(1, 2) g`` (not
      names code then); ``FETCH 1 FROM c``; ``REDEFINE``; ``FETCH 1 FROM c`` (PL/pgSQL
      recompiles on the new pg_proc row: ``r44_f(2)`` swaps); the rename; ``EXECUTE r44f``:
      the marker. The cursor was declared before the code it runs became names code, so
      no rule about the statement that reached it can see it.
      ``suspended-portal-function-redefined-pipelined``: the same with a protocol portal
      (``Bind pc``, ``Execute pc`` with a row limit of 1, the redefinition's
      Parse/Bind/Execute, ``Execute pc`` again, the rename, ``Bind r44f``/``Execute``, one
      Sync, in a block); ``-implicit``: the same in one Sync group with no BEGIN (the
      implicit transaction, rolled back by a ``1/0`` after the rows went out).
   c. ``test_cross_session_redefinition``: session A (migrator) ``PREPARE r44f AS OK``,
      ``BEGIN``, the cursor of b, ``FETCH 1``; session B (migrator too) ``REDEFINE``
      (committed; the proxy's catalog comes to rest and knows ``r44_f`` as names code);
      A: a read of another table (the server takes the invalidation), ``FETCH 1`` (the
      swap), the rename, ``EXECUTE r44f``: the marker. The FETCH names no code, so even a
      snapshot that knows the new body sees nothing run.
2. **An event trigger's function runs on DDL, never counted as names code.**
   ``_casts`` makes every DDL need the execute scope on ``snap.event_functions``, but
   ``_runs_code`` never looks at them, so DDL never runs ``names_unknown``:
   ``event-trigger-runs-names-code``: ``PREPARE r44e AS OK``; ``BEGIN``; the rename of
   ``pt_evt`` (the event trigger swaps ``r44e`` after it); ``EXECUTE r44e``: the marker.
   ``-protocol``: ``Parse r44e OK`` and ``_one("r44e")``. And the name the event trigger
   made: ``event-trigger-prepares-unseen-name``: ``PREPARE r44e AS OK``; ``BEGIN``;
   ``ALTER TABLE r44w.pt_0 ADD COLUMN z int``; ``_one("r44u")``: the vault's row itself,
   no rename needed. Plain DDL leaves ``_forgot`` False (``_ran_ddl`` sets it only for
   ``d.opens_ddl``), so ``rebind_unknown`` stays False after the catalog change and a
   Bind of a name the policy never saw is not looked at (``bind_checked``).

(``test_redteam_r44_casts.py``: the same root through a superuser's cast between system
types, names code and DDL code.)

Held (passing): a trigger attached in a block with a names-code function, then a write
(the CREATE TRIGGER names the function: ``lazy_names`` from there); ``EXECUTE`` of a
statement reading a view over names code (``_run_by``); cursors over that view, over a
domain cast and over an operator whose functions are names code, fetched after a PREPARE
(the DECLARE sets ``lazy_names``); a WITH HOLD cursor of names code, ``COMMIT AND CHAIN``
(status ``T``: still set; the commit that filled the cursor forgot the names);
``DEALLOCATE PREPARE "all"``, ``SELECT 1; DEALLOCATE /* x */ "all"`` (one Query), and the
quoted form over the protocol in a pipeline after a protocol ``PREPARE "all"``: refused
(unclassifiable), ``s1`` kept by both and refused after the rename (``U&"all"`` is refused
by the lexer: no U& identifiers at all).

Clearing too early, looked at and not probed (nothing to show directly): the server drops
every protocol portal and every cursor without HOLD at a transaction's end, and fills a
WITH HOLD cursor at its commit (``PersistHoldablePortal``: later FETCHes read the stored
rows, no code runs), so a ReadyForQuery ``I`` with nothing in flight leaves nothing that
runs code; ``PREPARE TRANSACTION`` refuses a transaction that made a WITH HOLD cursor; an
aborted block answers ``E`` until its ROLLBACK; a relay parked on a catalog wait clears the
flag at an ``I`` for the transaction that did end, and decides the parked frames after.
One gap noted, not reachable: a read that starts with the recorder unhealthy keeps
``_CHECKED_UNHEALTHY`` (no Sync) after a statement in it sets ``lazy_names``
(``_client_frames``: ``if unhealthy: pass``), but then every Parse, Bind and Query of the
read is refused anyway.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r44-bot"
MARK = {"pin": "R44-PIN-5c1a", "trg": "R44-TRG-9d3e"}
SCOPES = "read:r44w.* write:r44w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r44w.* write:r44w.* ddl:r44w.* execute:public.r44_swap,r44w.r44_f,"
    "public.r44_evt,public.r44_trg,public.r44_swapb,public.r44_swapop",
}
PIN_TABLES = ["pt_swap", "pt_evt", *(f"pt_{i}" for i in range(40))]

SWAP_BODY = (
    "IF g = 2 THEN DEALLOCATE r44f; PREPARE r44f AS SELECT o.r44_pin FROM r44w.pt_swap o; "
    "END IF; RETURN g;"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r44w; CREATE SCHEMA r44x;\n"
    "CREATE TABLE r44x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r44x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE FUNCTION public.r44_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r44x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r44w.{t} (id int, r44_pin text); INSERT INTO r44w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    + "CREATE FUNCTION public.r44_swap(g int) RETURNS int LANGUAGE plpgsql AS "
    f"$$ BEGIN {SWAP_BODY} END $$;\n"
    # harmless: no word the DDL-code inference reads; a probe redefines it
    "CREATE FUNCTION r44w.r44_f(g int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN g; END $$;\n"
    # names code as a trigger function (attached by a probe, in a block)
    "CREATE FUNCTION public.r44_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "DEALLOCATE r44f; PREPARE r44f AS SELECT o.r44_pin FROM r44w.pt_swap o; RETURN NEW; END $$;\n"
    "CREATE TABLE r44w.t (id int);\n"
    # a view over names code, for EXECUTE of a statement reading it
    "CREATE VIEW r44w.v AS SELECT public.r44_swap(g) AS g FROM generate_series(1, 2) g;\n"
    # names code behind a domain's CHECK and an operator (swapping r44f at 2)
    "CREATE FUNCTION public.r44_swapb(g int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r44_swap(g); RETURN true; END $$;\n"
    "CREATE DOMAIN r44w.dom AS int CHECK (public.r44_swapb(VALUE));\n"
    "CREATE FUNCTION public.r44_swapop(a int, b int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN public.r44_swapb(a); END $$;\n"
    "CREATE OPERATOR r44w.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.r44_swapop);\n"
    "RESET ROLE;\n"
    # an event trigger (a superuser's) whose function replaces r44e when it exists
    "CREATE FUNCTION public.r44_evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF EXISTS (SELECT FROM pg_prepared_statements WHERE name = 'r44e') THEN "
    "DEALLOCATE r44e; PREPARE r44e AS SELECT o.r44_pin FROM r44w.pt_evt o; "
    "PREPARE r44u AS SELECT val FROM r44x.vault WHERE key = 'pin'; END IF; END $$;\n"
    "CREATE EVENT TRIGGER r44_evt ON ddl_command_end EXECUTE FUNCTION public.r44_evt();\n"
)
TEARDOWN = (
    "DROP EVENT TRIGGER IF EXISTS r44_evt;\n"
    "DROP SCHEMA IF EXISTS r44w, r44x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r44_pin(anyelement), public.r44_swap(int), "
    "public.r44_evt(), public.r44_trg(), public.r44_swapb(int), public.r44_swapop(int, int) "
    "CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r44", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


OK = "SELECT 'ok'::text AS r44_pin"
REDEFINE = (
    "CREATE OR REPLACE FUNCTION r44w.r44_f(g int) RETURNS int LANGUAGE plpgsql AS "
    f"$$ BEGIN {SWAP_BODY} END $$"
)
REDEFINE_CALLING = (
    "CREATE OR REPLACE FUNCTION r44w.r44_f(g int) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN public.r44_swap(g); END $$"
)


def pin(t: str) -> str:
    return f"SELECT o.r44_pin FROM r44w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r44w.{t} RENAME COLUMN r44_pin TO gone"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


CASES = {
    "defined-in-block-then-called": (
        lambda: [
            (query(f"PREPARE r44f AS {OK}"),),
            (query("BEGIN"),),
            (query(REDEFINE),),
            (query("SELECT r44w.r44_f(2)"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "defined-calling-names-code-then-called": (
        lambda: [
            (query(f"PREPARE r44f AS {OK}"),),
            (query("BEGIN"),),
            (query(REDEFINE_CALLING),),
            (query("SELECT r44w.r44_f(2)"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-over-function-redefined-before-fetch": (
        lambda: [
            (query(f"PREPARE r44f AS {OK}"),),
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT r44w.r44_f(g) FROM generate_series(1, 2) g"),),
            (query("FETCH 1 FROM c"),),
            (query(REDEFINE),),
            (query("FETCH 1 FROM c"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "event-trigger-runs-names-code": (
        lambda: [
            (query(f"PREPARE r44e AS {OK}"),),
            (query("BEGIN"),),
            (query(away("pt_evt")),),
            (query("EXECUTE r44e"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "event-trigger-runs-names-code-protocol": (
        lambda: [
            (parse("r44e", OK), SYNC),
            (query("BEGIN"),),
            (query(away("pt_evt")),),
            _one("r44e"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "event-trigger-prepares-unseen-name": (
        lambda: [
            (query(f"PREPARE r44e AS {OK}"),),
            (query("BEGIN"),),
            (query("ALTER TABLE r44w.pt_0 ADD COLUMN z int"),),
            _one("r44u"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "defined-in-block-protocol-statement": (
        lambda: [
            (parse("r44f", OK), SYNC),
            (parse("s", "SELECT r44w.r44_f(2)"), SYNC),
            (query("BEGIN"),),
            (query(REDEFINE),),
            _one("s"),
            (query(away("pt_swap")),),
            _one("r44f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "suspended-portal-function-redefined-pipelined": (
        lambda: [
            (parse("r44f", OK), SYNC),
            (query("BEGIN"),),
            (
                parse("c", "SELECT r44w.r44_f(g) FROM generate_series(1, 2) g"),
                bind("pc", "c"),
                execute("pc", 1),
                parse("d", REDEFINE),
                bind("", "d"),
                execute(),
                execute("pc", 1),
                parse("a", away("pt_swap")),
                bind("", "a"),
                execute(),
                bind("", "r44f"),
                execute(),
                SYNC,
            ),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "suspended-portal-function-redefined-implicit": (
        lambda: [
            (parse("r44f", OK), SYNC),
            (
                parse("c", "SELECT r44w.r44_f(g) FROM generate_series(1, 2) g"),
                bind("pc", "c"),
                execute("pc", 1),
                parse("d", REDEFINE),
                bind("", "d"),
                execute(),
                execute("pc", 1),
                parse("a", away("pt_swap")),
                bind("", "a"),
                execute(),
                bind("", "r44f"),
                execute(),
                parse("", "SELECT 1/0"),  # the implicit transaction rolls back
                bind(),
                execute(),
                SYNC,
            ),
        ],
        False,
    ),
    "trigger-attached-in-block-then-write": (
        lambda: [
            (query(f"PREPARE r44f AS {OK}"),),
            (query("BEGIN"),),
            (
                query(
                    "CREATE TRIGGER r44_tg BEFORE INSERT ON r44w.t FOR EACH ROW "
                    "EXECUTE FUNCTION public.r44_trg()"
                ),
            ),
            (query("INSERT INTO r44w.t VALUES (1)"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "execute-of-statement-reading-names-view": (
        lambda: [
            (query("PREPARE q AS SELECT g FROM r44w.v"),),
            (query(f"PREPARE r44f AS {OK}"),),
            (query("EXECUTE q"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-over-names-view-fetched": (
        lambda: [
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT g FROM r44w.v"),),
            (query("FETCH 1 FROM c"),),
            (query(f"PREPARE r44f AS {OK}"),),
            (query("FETCH 1 FROM c"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-over-domain-fetched": (
        lambda: [
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT g::r44w.dom FROM generate_series(1, 2) g"),),
            (query("FETCH 1 FROM c"),),
            (query(f"PREPARE r44f AS {OK}"),),
            (query("FETCH 1 FROM c"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-over-operator-fetched": (
        lambda: [
            (query("BEGIN"),),
            (
                query(
                    "DECLARE c CURSOR FOR SELECT g OPERATOR(r44w.===) 2 FROM generate_series(1, 2) g"
                ),
            ),
            (query("FETCH 1 FROM c"),),
            (query(f"PREPARE r44f AS {OK}"),),
            (query("FETCH 1 FROM c"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "with-hold-cursor-commit-and-chain": (
        lambda: [
            (query("BEGIN"),),
            (
                query(
                    "DECLARE c CURSOR WITH HOLD FOR SELECT public.r44_swap(g) FROM generate_series(1, 2) g"
                ),
            ),
            (query(f"PREPARE r44f AS {OK}"),),
            (query("COMMIT AND CHAIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r44f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "dealloc-prepare-quoted-all": (
        lambda: [
            (parse("s1", pin("pt_1")), SYNC),
            (query('PREPARE "all" AS SELECT 1'),),
            (query('DEALLOCATE PREPARE "all"'),),
            (query("BEGIN"),),
            (query(away("pt_1")),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "dealloc-comment-quoted-all-in-multi": (
        lambda: [
            (parse("s1", pin("pt_2")), SYNC),
            (query('PREPARE "all" AS SELECT 1'),),
            (query('SELECT 1; DEALLOCATE /* x */ "all"'),),
            (query("BEGIN"),),
            (query(away("pt_2")),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "dealloc-quoted-all-protocol-pipelined": (
        lambda: [
            (parse("s1", pin("pt_3")), SYNC),
            (
                parse("", 'PREPARE "all" AS SELECT 1'),
                bind(),
                execute(),
                parse("", 'DEALLOCATE PREPARE "all"'),
                bind(),
                execute(),
                SYNC,
            ),
            (query("BEGIN"),),
            (query(away("pt_3")),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}


@pytest.mark.parametrize("name", planted.cases(CASES))
def test_names(px, pg, name):
    build, leaks = CASES[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build())
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    planted.wait_catalog_quiet(px, 1.0)  # (the last probe's DDL: its reload at rest)
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, build())
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    if not leaks:
        assert planted.refused(got), (name, got[-500:])


RESTORE = (
    "CREATE OR REPLACE FUNCTION r44w.r44_f(g int) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN g; END $$"
)


def _cross_session(a, b) -> str:
    """Session ``a`` opens a cursor over ``r44_f`` (harmless then) and fetches a row;
    session ``b`` redefines ``r44_f`` as names code (committed); ``a`` fetches the next row
    (the new body runs), renames ``pt_swap``'s column and runs ``r44f``."""
    got = run_steps(a, [
        (query(f"PREPARE r44f AS {OK}"),),
        (query("BEGIN"),),
        (query("DECLARE c CURSOR FOR SELECT r44w.r44_f(g) FROM generate_series(1, 2) g"),),
        (query("FETCH 1 FROM c"),),
    ])  # fmt: skip
    got += run_steps(b, [(query(REDEFINE),)])
    planted.wait_catalog_quiet(a, 1.0)
    got += run_steps(a, [
        (query("SELECT count(*) FROM r44w.pt_1"),),  # (a lock: the server reads the change)
        (query("FETCH 1 FROM c"),),
        (query(away("pt_swap")),),
        (query("EXECUTE r44f"),),
        (query("ROLLBACK"),),
    ])  # fmt: skip
    return got


def test_cross_session_redefinition(px, pg):
    try:
        with RawClient.direct(pg) as a, RawClient.direct(pg) as b:
            direct = _cross_session(a, b)
        if not shows(direct, MARK["pin"]):
            raise RuntimeError(("precondition: no marker directly", direct[-600:]))
        with RawClient.direct(pg) as d:
            d.query(RESTORE)
        planted.wait_catalog_quiet(px, 2.0)
        tok = px.tokens["migrator"]
        with planted.session(px, tok) as a, planted.session(px, tok) as b:
            got = _cross_session(a, b)
    finally:
        with RawClient.direct(pg) as d:
            d.query(RESTORE)
    assert not shows(got, MARK["pin"]), ("LEAK", got[-500:])
