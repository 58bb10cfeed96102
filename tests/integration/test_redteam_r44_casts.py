"""Red-team round 44: code a superuser's cast between two system types runs, with no
statement naming it (the same root as ``test_redteam_r44_lazy.py``'s event trigger).

A cast between system types (a superuser's: ``boolean AS date``, ``boolean AS money``)
runs its function wherever a statement converts such a value. ``_casts`` makes every
statement that converts anything need the execute scope on such functions
(``snap.global_casts``), so the grants here have it; but ``_runs_code`` (behind both
``_runs_ddl_code`` and ``_runs_names_code``) never looks at global casts, so what such a
function does is followed neither as DDL nor as names code.

Grants (agent ``r44c-bot``): ``writer`` = ``read:r44cw.* write:r44cw.*`` and ``execute`` on
both cast functions (every converting statement needs them); ``migrator`` = that and
``ddl:r44cw.*``. Planted: ``r44cx.vault`` (markers ``pin``, ``trg``), ``public.r44c_pin``,
``r44cw.pt (id int, r44c_pin text)``, ``r44cw.t (id int)``, ``public.r44c_loud(int)``
(raises the vault's ``trg``); as the superuser, ``public.r44c_cast(boolean) RETURNS date``
(names code: given true, ``DEALLOCATE r44c; PREPARE r44c AS SELECT o.r44c_pin FROM
r44cw.pt o``) as the cast ``boolean AS date``, and ``public.r44c_attach(boolean) RETURNS
money`` (DDL code, no names code: given true, it adds ``CHECK (public.r44c_loud(id))`` to
``r44cw.t``) as the cast ``boolean AS money``. Directly as the upstream login first: the
marker must show there (``RuntimeError`` otherwise).

Leaks found (strict xfails when found; fixed in session 24, the same tests now pass: a
superuser's cast between system types counts as run by every statement that converts,
as ``_casts`` already asked an execute scope for it: ``_runs_code``):

1. **Names code through a global cast** (``global-cast-runs-names-code-simple``,
   ``-extended``): ``PREPARE r44c AS SELECT 'ok'::text AS r44c_pin`` (or its Parse);
   ``SELECT (o.id = 1)::date FROM r44cw.pt o`` (simple Query, or unnamed
   Parse/Bind/Execute/Sync: the swap); ``BEGIN``; ``ALTER TABLE r44cw.pt RENAME COLUMN
   r44c_pin TO gone``; ``EXECUTE r44c`` (or ``Bind r44c``/Execute/Sync), decided again on
   the harmless text: the marker.
2. **DDL code through a global cast** (``test_hidden_ddl``): the migrator's ``SELECT (o.id
   = 1)::money FROM r44cw.pt o`` adds the CHECK; the policy counts no DDL, so no reload
   follows and the snapshot does not know ``r44cw.t`` runs ``r44c_loud``: the writer's
   ``INSERT INTO r44cw.t VALUES (1)`` shows the CHECK's RAISE, the vault's ``trg``, in
   every mode.

The fix's likely place: ``_runs_code`` counting ``snap.global_casts`` (and the default
operator classes of system types kept with them) for every statement ``_casts`` makes need
them, as ``event_functions`` for every DDL.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r44c-bot"
MARK = {"pin": "R44C-PIN-2f7b", "trg": "R44C-TRG-6a0e"}
SCOPES = "read:r44cw.* write:r44cw.* execute:public.r44c_cast,public.r44c_attach"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r44cw.* write:r44cw.* ddl:r44cw.* execute:public.r44c_cast,public.r44c_attach",
}
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r44cw; CREATE SCHEMA r44cx;\n"
    "CREATE TABLE r44cx.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r44cx.vault VALUES "
    + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items())
    + ";\n"
    "CREATE FUNCTION public.r44c_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r44cx.vault WHERE key = 'pin' $$;\n"
    "CREATE TABLE r44cw.pt (id int, r44c_pin text); INSERT INTO r44cw.pt VALUES (1, 'ok');\n"
    "CREATE TABLE r44cw.t (id int);\n"
    "CREATE FUNCTION public.r44c_loud(int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION '%', (SELECT val FROM r44cx.vault WHERE key = 'trg'); END $$;\n"
    "RESET ROLE;\n"
    # a superuser's cast between two system types, its function names code: called with
    # true, it replaces r44c (an admin's plpgsql, as the planted swaps of rounds 40-43)
    "CREATE FUNCTION public.r44c_cast(b boolean) RETURNS date LANGUAGE plpgsql AS $$ BEGIN "
    "IF b THEN DEALLOCATE r44c; PREPARE r44c AS SELECT o.r44c_pin FROM r44cw.pt o; END IF; "
    "RETURN DATE '2000-01-01'; END $$;\n"
    "ALTER FUNCTION public.r44c_cast(boolean) OWNER TO pgwitness;\n"
    "CREATE CAST (boolean AS date) WITH FUNCTION public.r44c_cast(boolean);\n"
    # ... and one whose function is DDL code (no names code): called with true, a CHECK on
    # r44cw.t raising the vault's trg
    "CREATE FUNCTION public.r44c_attach(b boolean) RETURNS money LANGUAGE plpgsql AS $$ BEGIN "
    "IF b THEN ALTER TABLE r44cw.t DROP CONSTRAINT IF EXISTS r44c_chk; "
    "ALTER TABLE r44cw.t ADD CONSTRAINT r44c_chk CHECK (public.r44c_loud(id)); END IF; "
    "RETURN 0; END $$;\n"
    "ALTER FUNCTION public.r44c_attach(boolean) OWNER TO pgwitness;\n"
    "CREATE CAST (boolean AS money) WITH FUNCTION public.r44c_attach(boolean);\n"
)
TEARDOWN = (
    "DROP CAST IF EXISTS (boolean AS date);\n"
    "DROP CAST IF EXISTS (boolean AS money);\n"
    "DROP SCHEMA IF EXISTS r44cw, r44cx CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r44c_pin(anyelement), public.r44c_cast(boolean), "
    "public.r44c_attach(boolean), public.r44c_loud(int) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r44c", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


OK = "SELECT 'ok'::text AS r44c_pin"
CAST = "SELECT (o.id = 1)::date FROM r44cw.pt o"
AWAY = "ALTER TABLE r44cw.pt RENAME COLUMN r44c_pin TO gone"

CASES = {
    "global-cast-runs-names-code-simple": [
        (query(f"PREPARE r44c AS {OK}"),),
        (query(CAST),),
        (query("BEGIN"),),
        (query(AWAY),),
        (query("EXECUTE r44c"),),
        (query("ROLLBACK"),),
    ],
    "global-cast-runs-names-code-extended": [
        (parse("r44c", OK), SYNC),
        (parse("", CAST), bind(), execute(), SYNC),
        (query("BEGIN"),),
        (query(AWAY),),
        (bind("", "r44c"), execute(), SYNC),
        (query("ROLLBACK"),),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_cast(px, pg, name):
    steps = CASES[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, steps)
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])


WRITE = "INSERT INTO r44cw.t VALUES (1)"
DETACH = "ALTER TABLE r44cw.t DROP CONSTRAINT IF EXISTS r44c_chk"


@pytest.mark.parametrize("call", [
    "SELECT (o.id = 1)::money FROM r44cw.pt o",
])  # fmt: skip
def test_hidden_ddl(px, pg, call):
    planted.assert_hidden_ddl_withheld(
        px, pg, call=call, caller="migrator", write=WRITE,
        reset=lambda c: c.query(DETACH), unseen=lambda _pg, s: planted.wait_catalog_quiet(s, 3.0),
        marker=MARK["trg"], label=call,
    )  # fmt: skip
