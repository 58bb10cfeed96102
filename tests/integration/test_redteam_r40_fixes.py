"""Red-team round 40 (attacks on a1e7abf and 882af3d: ``StatementPolicy.followed`` and
``bind_at_once``, ``DDL_CODE_SQL``'s relation rows and ``typerel``), time-boxed; the server
the judge.

Grants (agent ``r40-bot``): ``writer`` = ``read:r40w.* write:r40w.*`` (also the fixture's
base grant); ``migrator`` = ``read:r40w.* write:r40w.* ddl:r40w.*`` and ``execute`` on
``public.r40_attach``, ``r40_loud``, ``r40_cast``, ``r40_castwrap``, ``r40_agg``,
``r40_sfunc``, ``r40_swap``; ``mover`` = ``read:r40w.*`` and ``execute`` on
``public.r40_swap_move`` (no DDL scope).

Planted (schema owner; ``r40x`` outside every grant, ``r40x.vault`` holds the markers):
``public.r40_loud()`` (trigger function raising the vault's ``trg`` value);
``public.r40_attach()`` (plpgsql ``DO E'... DROP TRIGGER IF EXISTS r40_trg ON r40w.t;
CREATE TRIGGER r40_trg BEFORE INSERT ON r40w.t ... \\105XECUTE FUNCTION
public.r40_loud()'``: named by ``DDL_CODE_SQL``); ``public.r40_eq(int, int)`` (plpgsql:
``PERFORM public.r40_attach(); RETURN $1 = $2``: itself named by ``DDL_CODE_SQL``),
operator ``r40w.===`` on it, a superuser's btree operator class ``r40w.r40_ops`` for int
(``<``, ``<=``, ``r40w.===``, ``>=``, ``>``, ``btint4cmp``); ``r40x.pk (v int)`` (one row,
``UNIQUE INDEX ... (v r40w.r40_ops)``), ``r40w.fk`` and ``r40w.fk_up`` (``v int REFERENCES
r40x.pk (v)``, no index or trigger of their own); enum ``r40w.mood``, an explicit cast
to int by ``public.r40_cast`` (plpgsql ``RETURN public.r40_attach()``),
``public.r40_castwrap()`` (plpgsql ``RETURN 'calm'::r40w.mood::integer``);
``public.r40_agg(int)`` (transition function ``r40_sfunc``: ``PERFORM r40_attach()``);
``r40w.parted`` (LIST) with partition ``r40w.parted_1`` whose BEFORE INSERT row trigger
runs ``r40_on_row`` (``PERFORM r40_attach()``); ``r40w.whn`` whose trigger's ``WHEN
(public.r40_attach() > 0)`` guards a harmless function; ``public.r40_pin(anyelement)``
(SQL: the vault's ``pin`` value: ``o.r40_pin`` on a row without that column calls it);
``r40w.pt_* (id int, r40_pin text)`` (one row each); ``public.r40_swap()`` (plpgsql
``DEALLOCATE r40s; PREPARE r40s AS SELECT o.r40_pin FROM r40w.pt_swap o``),
``public.r40_swap_trg()`` (the same on ``pt_trg``, an AFTER INSERT row trigger of
``r40w.swapper``), ``public.r40_swap_move()`` (the same on ``pt_move``, then ``ALTER
TABLE r40w.pt_move RENAME COLUMN r40_pin TO gone``). Every probe runs directly as the
upstream login first and must show its marker there (``RuntimeError`` otherwise);
renames are made in a block rolled back.

Leaks found (strict xfails when found; all fixed in session 23, the same tests now pass:
``DDL_CODE_SQL``'s relation rows take both tables of a constraint using an operator a
flagged function implements and the relations whose indexes use an operator class of one,
and a cast's source type names it as its target does; code that may also prepare or remove
statements (a PREPARE, DEALLOCATE or DISCARD in its source, a spelling or language not
read, and what reaches it: DDL_CODE_SQL's last column, ``Snapshot.names_functions``,
``names_relations``) leaves the policy holding no statement's text when a statement runs
it, so each Bind or EXECUTE of a name is refused until it is prepared again,
``StatementPolicy._names_unknown``):

1. **An RI check through a user operator class runs DDL code unseen**
   (``DDL_CODE_SQL``'s ``_RUNS_FUNCTION``, ``StatementPolicy._runs_ddl_code``). The
   trigger is dropped directly, then ``COMMENT ON TABLE r40w.t`` through the migrator and
   0.6 s. Then (simple Query, no error) ``INSERT INTO r40w.fk VALUES (1)`` (by the
   migrator, or by the writer grant itself: no DDL or execute scope needed) or ``UPDATE
   r40w.fk_up SET v = 1`` (the old and new keys compared by the family's equality). The
   foreign key's check runs ``SELECT 1 FROM ONLY r40x.pk x WHERE v OPERATOR(r40w.===)
   $1`` as the owner: ``r40_eq`` -> ``r40_attach`` -> ``CREATE TRIGGER r40_trg``. The
   constraint depends on the *operator* (and the index on the class), never on the
   function, so ``_RUNS_FUNCTION`` maps nothing to ``r40w.fk``; ``relation_casts`` /
   ``triggered`` name ``r40x.pk`` (its index's class), which the INSERT neither reads nor
   writes as classified; ``cascades`` only follow ON DELETE/UPDATE actions. The writer:
   ``INSERT INTO r40w.t VALUES (1)`` (simple, extended, prepared): ``ERROR P0001 loud:
   <marker>`` whole.
2. **A cast in granted code whose target is a system type** (``DDL_CODE_SQL``'s closure).
   As 1, the migrator runs ``SELECT public.r40_castwrap()``; its source converts
   ``'calm'::r40w.mood::integer``. The closure matches a flagged cast by its *target*
   type's name only (``pg_cast`` -> ``casttarget`` -> ``int4``), and the source says
   ``integer``; ``typerel`` reaches relations made of ``mood`` (none are named): the
   call is no DDL. The writer's INSERT shows the marker. (The same cast written in the
   statement is held: ``user_types`` of ``r40w.mood``.)
3. **Code that replaces a statement the policy holds (known residue, confirmed; cheaper
   variants)**. ``Parse r40s "SELECT 'ok'::text AS r40_pin"`` / Sync; then one of
   a. ``SELECT public.r40_swap()`` (migrator); ``BEGIN``; ``ALTER TABLE r40w.pt_swap
      RENAME COLUMN r40_pin TO gone``;
   b. ``INSERT INTO r40w.swapper VALUES (1)`` (no execute scope: its trigger swaps);
      ``BEGIN``; the rename of ``pt_trg``;
   c. (``mover``, no DDL scope) ``BEGIN``; ``SELECT public.r40_swap_move()`` (it swaps
      and renames);
   then ``Bind r40s`` / Execute / Sync: the call counts as DDL (``_forgot``), but
   ``r40s`` is a name the policy *holds*, so the Bind is decided again on the harmless
   Parse text (``rebind``) and allowed; the server runs its own PREPARE's
   ``o.r40_pin`` as ``r40_pin(o)``: the marker as a row.

Held (passing tests): the cast written in the statement (refused without execute on
``r40_cast``; with it, DDL: the writer's error withheld); an aggregate whose transition
function runs the DDL code (the aggregate's ``pg_proc`` dependency on ``r40_sfunc``); a
partition's trigger reached by an INSERT into its parent (``pg_inherits`` in ``reach``);
a trigger ``WHEN`` clause (recorded against ``pg_trigger``); DEALLOCATE/PREPARE Binds in a
group an earlier error skipped, then bound and run again (the error drops the names:
``r40s`` refused after the rename); a portal name bound twice in a block (the PREPARE's
Bind fails, its Execute skipped), then bound and run in a new block (refused after the
rename: the policy follows the PREPARE); a Describe of the portal between the PREPARE's
Bind and Execute (at once: followed); a PREPARE's Bind carrying 600 KiB (streamed: its
Execute in a later read) ends the session (``08P01``), no marker. Not a vector: an
``EXECUTE`` portal run with a row limit and resumed after a rename (the server fills the
portal's store at the first Execute, so no analysis follows the rename), a second Bind of a named
portal without Close (the server refuses it), Close of a portal (no name changes).

Best guesses at the fixes: (1) in ``_RUNS_FUNCTION`` / ``TRIGGERED_SQL``, map a
foreign key (``pg_constraint`` contype ``f``) to its ``conrelid`` when its
``conpfeqop``/``conppeqop``/``conffeqop`` operators' functions (or the referenced index's
class family, ``_RELATION_OPCLASS_CODE`` of ``confrelid``) are user-written, i.e. add
``pg_operator`` -> ``oprcode`` as a hop from a constraint; or count a write of a
referencing table as a read of the referenced one in ``_runs_ddl_code``. (2) In the
closure, match a cast by its source type's name too (and by every spelling of a system
type: ``integer``/``int``/``int4``), or treat code converting any user type whose cast
runs DDL code by the ``typerel`` type names rather than relation names. (3) A call of
code that may PREPARE/DEALLOCATE makes *every* name unknown: drop the policy's texts
(``_statements``, ``_prepared_statements``, ``followed``) as after an error, so their
Binds and EXECUTEs after a catalog change are refused (``rebind_unknown``).
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r40-bot"
MARK = {"trg": "R40-TRG-3c71", "pin": "R40-PIN-3c72"}
MIGRATOR_FNS = (
    "r40_attach",
    "r40_loud",
    "r40_cast",
    "r40_castwrap",
    "r40_agg",
    "r40_sfunc",
    "r40_swap",
)
SCOPES = "read:r40w.* write:r40w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r40w.* write:r40w.* ddl:r40w.* execute:"
    + ",".join(f"public.{f}" for f in MIGRATOR_FNS),
    # no DDL scope: the granted function renames itself
    "mover": "read:r40w.* execute:public.r40_swap_move",
}

ATTACH = (
    "CREATE TRIGGER r40_trg BEFORE INSERT ON r40w.t FOR EACH ROW EXECUTE FUNCTION public.r40_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r40_trg ON r40w.t"
WRITE = "INSERT INTO r40w.t VALUES (1)"
BACKSLASH = "\\"

PIN_TABLES = ["pt_swap", "pt_trg", "pt_move", *(f"pt_{i}" for i in range(6))]


def pin(t: str) -> str:
    return f"SELECT o.r40_pin FROM r40w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r40w.{t} RENAME COLUMN r40_pin TO gone"


def _swap(t: str) -> str:
    return f"DEALLOCATE r40s; PREPARE r40s AS {pin(t)};"


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r40w; CREATE SCHEMA r40x;\n"
    "CREATE TABLE r40x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r40x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE TABLE r40w.t (k int);\n"
    "CREATE FUNCTION public.r40_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r40x.vault WHERE key = 'trg'); END $$;\n"
    # the DDL function DDL_CODE_SQL names (no word "execute": CODE_FLAGS_SQL stays quiet)
    "CREATE FUNCTION public.r40_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"DO E'BEGIN {DETACH}; {ATTACH.replace('EXECUTE', BACKSLASH + '105XECUTE')}; END'; "
    "RETURN 1; END $$;\n"
    # (a) a foreign key whose referenced index uses an operator class whose equality
    # operator's function runs it: the RI check of an INSERT/UPDATE of the referencing
    # table runs it (pg_constraint -> pg_operator -> pg_proc, and pg_amop)
    "CREATE FUNCTION public.r40_eq(int, int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r40_attach(); RETURN $1 = $2; END $$;\n"
    "CREATE OPERATOR r40w.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.r40_eq, "
    "COMMUTATOR = OPERATOR(r40w.===));\n"
    "RESET ROLE;\n"  # (an operator class: a superuser's)
    "CREATE OPERATOR CLASS r40w.r40_ops FOR TYPE int USING btree AS OPERATOR 1 <, "
    "OPERATOR 2 <=, OPERATOR 3 r40w.===, OPERATOR 4 >=, OPERATOR 5 >, "
    "FUNCTION 1 btint4cmp(int, int);\n"
    "SET ROLE pgwitness;\n"
    "CREATE TABLE r40x.pk (v int); INSERT INTO r40x.pk VALUES (1);\n"
    "CREATE UNIQUE INDEX r40_pk_v ON r40x.pk (v r40w.r40_ops);\n"
    "CREATE TABLE r40w.fk (v int REFERENCES r40x.pk (v));\n"
    "CREATE TABLE r40w.fk_up (v int REFERENCES r40x.pk (v));\n"
    # (b) a cast of a user type by a function that runs it, made in a granted function
    # whose source names neither the cast's function nor its target type's name (int4)
    "CREATE TYPE r40w.mood AS ENUM ('calm');\n"
    "CREATE FUNCTION public.r40_cast(r40w.mood) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN public.r40_attach(); END $$;\n"
    "CREATE CAST (r40w.mood AS int) WITH FUNCTION public.r40_cast(r40w.mood);\n"
    "CREATE FUNCTION public.r40_castwrap() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN 'calm'::r40w.mood::integer; END $$;\n"
    # (c) an aggregate whose transition function runs it
    "CREATE FUNCTION public.r40_sfunc(int, int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r40_attach(); RETURN coalesce($1, 0) + $2; END $$;\n"
    "CREATE AGGREGATE public.r40_agg(int) (SFUNC = public.r40_sfunc, STYPE = int);\n"
    # (d) a partition whose row trigger runs it, written through its parent
    "CREATE FUNCTION public.r40_on_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r40_attach(); RETURN NEW; END $$;\n"
    "CREATE TABLE r40w.parted (k int) PARTITION BY LIST (k);\n"
    "CREATE TABLE r40w.parted_1 PARTITION OF r40w.parted FOR VALUES IN (1);\n"
    "CREATE TRIGGER r40_part_trg BEFORE INSERT ON r40w.parted_1 FOR EACH ROW "
    "EXECUTE FUNCTION public.r40_on_row();\n"
    # (e) a trigger's WHEN clause calling it (the trigger function itself harmless)
    "CREATE FUNCTION public.r40_quiet() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN NEW; END $$;\n"
    "CREATE TABLE r40w.whn (k int);\n"
    "CREATE TRIGGER r40_whn_trg BEFORE INSERT ON r40w.whn FOR EACH ROW "
    "WHEN (public.r40_attach() > 0) EXECUTE FUNCTION public.r40_quiet();\n"
    # column syntax: o.r40_pin on a row without that column calls r40_pin(o)
    "CREATE FUNCTION public.r40_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r40x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r40w.{t} (id int, r40_pin text); INSERT INTO r40w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    # code that replaces statement r40s (a name the policy holds) with a pin query
    + "CREATE FUNCTION public.r40_swap() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"{_swap('pt_swap')} RETURN 1; END $$;\n"
    "CREATE FUNCTION public.r40_swap_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"{_swap('pt_trg')} RETURN NEW; END $$;\n"
    "CREATE TABLE r40w.swapper (k int);\n"
    "CREATE TRIGGER r40_swapper_trg AFTER INSERT ON r40w.swapper FOR EACH ROW "
    "EXECUTE FUNCTION public.r40_swap_trg();\n"
    "CREATE FUNCTION public.r40_swap_move() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"{_swap('pt_move')} {away('pt_move')}; RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r40w, r40x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r40_loud(), public.r40_attach(), public.r40_eq(int, int), "
    "public.r40_castwrap(), public.r40_sfunc(int, int), public.r40_on_row(), "
    "public.r40_quiet(), public.r40_pin(anyelement), public.r40_swap(), "
    "public.r40_swap_trg(), public.r40_swap_move() CASCADE;\n"
    "DROP AGGREGATE IF EXISTS public.r40_agg(int);\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r40", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _cases(cases: dict, why: str) -> list:
    marks = pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)
    return [pytest.param(k, marks=marks) if v[-1] else k for k, v in cases.items()]


# --- 3. DDL run by code the policy does not count as DDL ----------------------------------

CALLS = {
    # name: (the statement, the grant running it, leaks)
    "control-cast-written": ("SELECT 'calm'::r40w.mood::integer", "migrator", False),
    "fk-check-user-opclass-insert": ("INSERT INTO r40w.fk VALUES (1)", "migrator", False),
    "fk-check-user-opclass-update": ("UPDATE r40w.fk_up SET v = 1", "migrator", False),
    # the same by the writer grant alone (read/write, no DDL or execute scope)
    "fk-check-by-the-writer-itself": ("INSERT INTO r40w.fk VALUES (1)", "writer", False),
    "cast-in-granted-code": ("SELECT public.r40_castwrap()", "migrator", False),
    "aggregate-transition": (
        "SELECT public.r40_agg(k) FROM (VALUES (1)) v(k)",
        "migrator",
        False,
    ),  # fmt: skip
    "partition-trigger-via-parent": ("INSERT INTO r40w.parted VALUES (1)", "migrator", False),
    "trigger-when-clause": ("INSERT INTO r40w.whn VALUES (1)", "migrator", False),
}
HIDDEN_WHY = (
    "LEAK: DDL run by code neither DDL_CODE_SQL's relation rows nor _runs_ddl_code sees: "
    "the statement is no DDL, the snapshot stays without the trigger, and the writer's "
    "INSERT shows the trigger's RAISE whole"
)


def _unseen(pg, mig: RawClient) -> None:
    """No trigger on r40w.t, and the proxy's snapshot says so: dropped directly, then DDL
    through the proxy and the load it starts."""
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        c.query("DELETE FROM r40w.t")
    got = planted.text(mig.query("COMMENT ON TABLE r40w.t IS 'r40'"))
    assert not planted.is_error(got), got[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the load the DDL started is done


def _reset(c: RawClient) -> None:
    c.query(DETACH)
    c.query("DELETE FROM r40w.fk; DELETE FROM r40w.parted; DELETE FROM r40w.whn")
    c.query("DELETE FROM r40w.fk_up; INSERT INTO r40w.fk_up VALUES (1)")
    c.query(DETACH)  # (the INSERT's RI check ran the DDL function)


@pytest.mark.parametrize("name", _cases(CALLS, HIDDEN_WHY))
def test_ddl_run_by_unseen_code(px, pg, name):
    call, grant, _ = CALLS[name]
    planted.assert_hidden_ddl_withheld(
        px, pg, call=call, caller=grant, write=WRITE, reset=_reset, unseen=_unseen,
        marker=MARK["trg"], label=name,
    )  # fmt: skip


# --- 2. code that replaces a statement name the policy holds -----------------------------

OK = "SELECT 'ok'::text AS r40_pin"  # harmless, of the same result type as the pin


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), m.execute(), SYNC)


RESIDUE = {
    # name: (grant, steps, leaks)
    # a granted function: DEALLOCATE r40s; PREPARE r40s AS <pin>; then the rename
    "granted-function": (
        "migrator",
        [
            (parse("r40s", OK), SYNC),
            (query("SELECT public.r40_swap()"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            _one("r40s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # cheaper: no execute scope, a write to a granted table whose trigger swaps it
    "trigger-on-a-granted-table": (
        "migrator",
        [
            (parse("r40s", OK), SYNC),
            (query("INSERT INTO r40w.swapper VALUES (1)"),),
            (query("BEGIN"),),
            (query(away("pt_trg")),),
            _one("r40s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # cheaper: no DDL scope, the granted function renames the column itself
    "function-renames-too": (
        "mover",
        [
            (parse("r40s", OK), SYNC),
            (query("BEGIN"),),
            (query("SELECT public.r40_swap_move()"),),
            _one("r40s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}
RESIDUE_WHY = (
    "LEAK (known residue): code replaced the server's statement under a name the policy "
    "holds other text for (DEALLOCATE/PREPARE in plpgsql); after the rename the Bind is "
    "decided again on the policy's harmless text, the server runs o.r40_pin as r40_pin(o)"
)


@pytest.mark.parametrize("name", _cases(RESIDUE, RESIDUE_WHY))
def test_names_replaced_by_code(px, pg, name):
    grant, steps, _ = RESIDUE[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
        c.query("DELETE FROM r40w.swapper")
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    with planted.session(px, px.tokens[grant]) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # the session goes on
    with RawClient.direct(pg) as c:
        c.query("DELETE FROM r40w.swapper")
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])


# --- 1. statements that prepare or remove statements, bound and executed ------------------

BIG = b"x" * (600 * 1024)


def _prepared_three(t: str, oids=()) -> tuple[bytes, ...]:
    return (
        parse("r40s", OK),
        parse("r40dd", "DEALLOCATE r40s"),
        parse("r40pp", f"PREPARE r40s AS {pin(t)}", oids),
        SYNC,
    )


FOLLOWED = {
    # the DEALLOCATE/PREPARE Binds in a group an earlier error skips (the policy applied
    # them at their Binds), then bound again and run in a later group; the rename; r40s
    "skipped-then-run-again": lambda t: [
        _prepared_three(t),
        (
            parse("", "SELECT 1/0"),
            bind(),
            m.execute(),
            bind("pd", "r40dd"),
            execute("pd"),
            bind("pp", "r40pp"),
            execute("pp"),
            SYNC,
        ),  # fmt: skip
        (bind("pd", "r40dd"), execute("pd"), bind("pp", "r40pp"), execute("pp"), SYNC),
        (query("BEGIN"),),
        (query(away(t)),),
        _one("r40s"),
        (query("ROLLBACK"),),
    ],
    # the same portal name bound twice: the second Bind (the PREPARE's) fails in the block
    # (the portal exists), so its Execute is skipped; then bound and run in a new block
    "portal-name-bound-twice": lambda t: [
        _prepared_three(t),
        (query("BEGIN"),),
        (bind("p", "r40dd"), execute("p"), bind("p", "r40pp"), execute("p"), SYNC),
        (query("ROLLBACK"),),
        (query("BEGIN"),),
        (bind("p", "r40pp"), execute("p"), SYNC),
        (query(away(t)),),
        _one("r40s"),
        (query("ROLLBACK"),),
    ],
    # a Describe of the portal between its Bind and its Execute (allowed: at once)
    "described-between": lambda t: [
        _prepared_three(t),
        (
            bind("pd", "r40dd"),
            execute("pd"),
            bind("pp", "r40pp"),
            frame(b"D", b"Ppp\x00"),
            execute("pp"),
            SYNC,
        ),  # fmt: skip
        (query("BEGIN"),),
        (query(away(t)),),
        _one("r40s"),
        (query("ROLLBACK"),),
    ],
}


@pytest.mark.parametrize("name", list(FOLLOWED))
def test_followed_statements_bound_and_run(px, pg, name):
    build = FOLLOWED[name]
    t = f"pt_{list(FOLLOWED).index(name)}"
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(t))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got = run_steps(c, build(t))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # the session goes on
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    assert "C42501" in got and "pgwitness" in got, (name, got[-500:])


def test_streamed_bind_of_a_prepare_ends_the_session(px, pg):
    """The PREPARE's Bind carries a 600 KiB value (a parameter type declared at its
    Parse): streamed in parts, its Execute is in a later read. Until session 23's drivers'
    differential it was refused (the session ended); a Bind that ends its batch now counts
    as executed at once (psycopg's pipeline split a Bind from its Execute), its PREPARE
    followed, and the Bind of r40s after the rename is decided on the PREPARE's text and
    refused. Either way: no marker."""
    t = "pt_5"
    steps = [
        _prepared_three(t, oids=(25,)),
        (bind("", "r40dd"), m.execute(), SYNC),
        (bind("", "r40pp", params=[BIG]), m.execute(), SYNC),
        (query("BEGIN"),),
        (query(away(t)),),
        _one("r40s"),
        (query("ROLLBACK"),),
    ]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        out = run_steps(c, steps[:2])
        c.send(*steps[2])
        frames = []
        try:
            while True:
                f = c.read_frame()
                if f is None:
                    break
                frames.append(f)
                if f[:1] == b"Z":
                    break
        except OSError:
            pass
        got = out + planted.text(frames)
        if "08P01" not in got:  # (went on: the rest, which must show no marker)
            try:
                got += run_steps(c, steps[3:])
            except OSError:
                pass
    assert not shows(got, MARK["pin"]), ("LEAK", got[-500:])
    assert ("08P01" in got and "streamed in parts" in got) or "C42501" in got, got[-500:]
