"""Red-team round 41 (attacks on 3a1f52f: ``StatementPolicy._names_unknown``, DDL_CODE_SQL's
names column and its new relation rows for constraints using operators and index
operator classes; f1f981b/9046db6 read, ``binds_watched`` unchanged in effect),
time-boxed; the server the judge.

Grants (agent ``r41-bot``): ``writer`` = ``read:r41w.* write:r41w.*`` (also the fixture's
base grant); ``migrator`` = ``read:r41w.* write:r41w.* ddl:r41w.*`` and ``execute`` on
``public.r41_attach``, ``r41_loud``, ``r41_cmp``, ``r41_eq``, ``r41_swapx``,
``r41_swapf``, ``r41_late``, ``r41_late1``, ``r41_lateq``, ``r41_self``, ``r41_selfv``,
``r41_rcode``, ``r41_rsort``; ``mover`` = ``read:r41w.*`` and ``execute`` on
``public.r41_swapx_move`` (no DDL scope).

Planted (schema owner; ``r41x`` outside every grant, ``r41x.vault`` holds the markers
``trg`` and ``pin``): ``public.r41_loud()`` (trigger function raising the vault's ``trg``);
``public.r41_attach()`` (plpgsql ``EXECUTE 'DROP TRIGGER IF EXISTS r41_trg ON r41w.t';
EXECUTE 'CREATE TRIGGER r41_trg BEFORE INSERT ON r41w.t ... r41_loud()'``: DDL code, not
names code); ``public.r41_cmp(int, int)`` (``PERFORM r41_attach(); RETURN
btint4cmp($1, $2)``) as ``FUNCTION 1`` of a superuser's btree class ``r41w.r41_ops`` for
int; range ``r41w.rng`` (``subtype_opclass = r41w.r41_ops``), ``r41w.rt (r rng)`` (two
rows); ``public.r41_rcode()`` (``RETURN ('[1,3)'::r41w.rng IS NOT NULL)::int``),
``public.r41_rsort()`` (``count(DISTINCT r) FROM r41w.rt``); ``public.r41_eq`` (``PERFORM
r41_attach(); RETURN $1 = $2``), operator ``r41w.===`` on it, class ``r41w.r41_eqops``
(``===`` as equality); ``r41w.excl_t`` (``EXCLUDE USING btree (v r41_eqops WITH ===)``,
one row), ``r41w.onconf_t`` (``UNIQUE INDEX (v r41_ops)``), ``r41w.parted_k``
(``PARTITION BY RANGE (k r41_ops)``, two partitions); ``public.r41_pin(anyelement)``
(SQL: the vault's ``pin``; ``o.r41_pin`` on a row without that column calls it),
``r41w.pt_* (id int, r41_pin text)``; names code: ``r41_swapx`` (``EXECUTE 'DEALLOC' ||
'ATE r41s'; EXECUTE 'PREP' || 'ARE r41s AS SELECT o.r41_pin FROM r41w.pt_x o'``),
``r41_swapf`` (the same by ``format('%sARE ...', 'PREP')``), ``r41_swapx_move`` (as
``r41_swapx`` on ``pt_move``, then ``EXECUTE 'ALTER TABLE ... RENAME COLUMN``),
``r41_swapx_trg`` (AFTER INSERT row trigger of ``r41w.swapper``, on ``pt_trg``),
``r41_swapv_trg`` (trigger of ``r41w.swapperv``: ``r41s`` becomes ``SELECT val FROM
r41x.vault WHERE key = 'pin'``); spelled plainly (flagged names code): ``r41_late``,
``r41_late1`` (``DEALLOCATE r41s; PREPARE r41s AS <pin of pt_late/pt_late1>``),
``r41_lateq`` (the same of SQL-level ``r41q``), ``r41_self`` (``DEALLOCATE r41self;
PREPARE r41self AS <pin of pt_self>``), ``r41_selfv`` (``DEALLOCATE r41selfv; PREPARE
r41selfv AS SELECT val FROM r41x.vault WHERE key = 'pin'``). Every probe runs directly as
the upstream login first and must show its marker there (``RuntimeError`` otherwise);
renames are made in blocks rolled back. ``OK`` = ``SELECT 'ok'::text AS r41_pin``.

Leaks found (strict xfails when found; all fixed in session 23, the same tests now pass:
code whose source says PREPARE, DEALLOCATE or DISCARD is marked as code that may replace
statements (at first every seed of DDL code but static DDL words was; the drivers'
differential showed that cost every prepared statement after a call of any plpgsql
function with dynamic SQL, so SQL built from pieces is a residue again: the ``built-*``
and ``writer-trigger-vault`` probes were strict xfails until session 25, when the server
was asked instead: after code that may run DDL, a Bind or Describe of a statement the
policy held is preceded by a check the server runs, ``proxy.denials.inject_check``); every statement followed at each Bind (DDL, code that may run it,
statements that change names) must be executed at once; ``_names_unknown`` keeps no
statement's text, the caller's included, and a Bind decided again does not hold it again
after such code ran; ``typerel`` and the relation rows follow the types a user-written
function compares (a range's subtype class, a default operator class):

1. **Names code whose words are built at run time** (DDL_CODE_SQL's ``names`` column:
   ``src ~ '\\m(prepare|deallocate|discard)\\M'``, a backslash, ``U&`` or another language;
   ``execute`` makes the code DDL code but not names code). ``Parse r41s OK`` / Sync, then
   a. ``SELECT public.r41_swapx()`` (migrator); ``BEGIN``; ``ALTER TABLE r41w.pt_x RENAME
      COLUMN r41_pin TO gone``; ``Bind r41s`` / Execute / Sync; ``ROLLBACK``;
   b. the same with ``r41_swapf`` (``format``) on ``pt_f``;
   c. (``mover``, no DDL scope) ``BEGIN``; ``SELECT public.r41_swapx_move()``; Bind r41s;
   d. ``INSERT INTO r41w.swapper VALUES (1)`` (its trigger swaps); the rename; Bind r41s;
   e. (``writer`` alone: no DDL or execute scope, no rename) ``INSERT INTO r41w.swapperv
      VALUES (1)``; ``Bind r41s`` / Execute / Sync: the vault's row itself.
   The call counts as DDL (``_forgot``, reload), ``_names_unknown`` never runs, so ``r41s``
   (held) is decided again on ``OK`` and allowed; the server runs the code's PREPARE: the
   marker as a row. (d, e need no names relation in the database: with one, any write to
   a triggered relation counts as names code, ``_runs_code``'s ``objects``.)
2. **A portal bound before the names code ran** (``_names_unknown`` runs when the
   statement is *decided*, at its Parse and Bind, not when its portal's Execute runs the
   code; the DDL-followed statement (text None) needs no ``bind_at_once``). Migrator:
   a. ``BEGIN``; ``Parse sw "SELECT public.r41_late()"``, ``Bind p sw`` / Sync; ``Parse
      r41s OK`` / Sync (held again); ``Execute p`` / Sync (the swap); the rename of
      ``pt_late``; ``Bind r41s`` / Execute / Sync;
   b. the same in one Sync group without a block: ``Parse sw``, ``Bind p sw``, ``Parse r41s
      OK``, ``Execute p``, Sync; then ``BEGIN``, the rename, ``Bind r41s``;
   c. SQL-level: as a with ``PREPARE r41q AS OK`` (simple Query) between, ``r41_lateq``,
      and ``EXECUTE r41q`` after the rename.
3. **A statement replacing itself** (``_names_unknown`` keeps the followed statements
   whose text is None: the DDL-code callers themselves). ``Parse r41self "SELECT
   public.r41_self()"`` / Sync; ``Bind r41self`` / Execute / Sync (it deallocates itself
   and prepares the pin under its own name: the server allows that while its portal
   runs); ``BEGIN``; the rename of ``pt_self``; ``Bind r41self`` / Execute / Sync: the
   Bind is decided on ``SELECT public.r41_self()`` (or counted as DDL again) and allowed.
   Cheaper (b): ``r41_selfv`` replaces itself with a vault read: its second Bind returns
   the marker, no rename.
4. **DDL run by a range's subtype operator class in granted code** (``DDL_CODE_SQL``:
   ``typerel`` follows domain constraints, a type's own ``pg_depend`` rows and casts, not
   ``pg_range.rngsubopc``; the relation rows take index and partition classes only). The
   trigger is dropped directly, ``COMMENT ON TABLE r41w.t`` through the migrator, 0.6 s;
   then the migrator's ``SELECT public.r41_rcode()`` (range input compares the bounds:
   ``r41_cmp`` -> ``r41_attach``) or ``SELECT public.r41_rsort()`` (a sort of ``rt``) is
   no DDL; the writer's ``INSERT INTO r41w.t VALUES (1)`` (simple, extended, prepared):
   ``ERROR P0001 loud: <marker>`` whole.

Held (passing tests): the range written in the statement (``user_types``: DDL) and a
sort of ``r41w.rt`` in the statement (``relation_casts``); an INSERT through an exclusion
constraint using ``===``, ``INSERT ... ON CONFLICT DO NOTHING`` into a table whose unique
index uses ``r41_ops``, a partitioned table's routing through ``r41_ops`` (each DDL;
by the writer grant alone each is refused: ``scope.execute`` on ``r41_eq``/``r41_cmp``).
Not tried (read, not run): ``query_to_xml`` with a PREPARE inside (its SPI call is
read-only, which refuses utility statements). Observed over-approximation (no leak, masked the first draft): a
names-flagged relation named ``ex`` made every function whose source says ``execute``
names code (``position(name IN src)``), and any names relation makes every write to a
triggered relation names code.

Best guesses at the fixes: (1) count ``execute``, ``do``, ``_to_xml`` and every other
dynamic-SQL spelling DDL_CODE_SQL reads as names code too (the names column = the ddl
column, or: any DDL code may prepare). (2) Apply ``_names_unknown`` at the Execute of a
portal whose statement runs names code (the relay sees every Execute), or require
``bind_at_once`` for every followed statement that runs names code, and refuse a Parse
of a name while such a portal is open. (3) Keep no statement in ``_names_unknown``: a
followed DDL-code statement's own name is unknown after it ran (refused until prepared
again), or decide its Bind as a name never held. (4) Add ``pg_range.rngsubopc``'s family
functions (``_COMPARES``' range rows, and default btree/hash classes of user types) to
``typerel``, so relations made of the type and code naming it are flagged.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r41-bot"
MARK = {"trg": "R41-TRG-5d81", "pin": "R41-PIN-5d82"}
MIGRATOR_FNS = (
    "r41_attach",
    "r41_loud",
    "r41_cmp",
    "r41_eq",
    "r41_swapx",
    "r41_swapf",
    "r41_late",
    "r41_late1",
    "r41_lateq",
    "r41_self",
    "r41_selfv",
    "r41_rcode",
    "r41_rsort",
)
SCOPES = "read:r41w.* write:r41w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r41w.* write:r41w.* ddl:r41w.* execute:"
    + ",".join(f"public.{f}" for f in MIGRATOR_FNS),
    "mover": "read:r41w.* execute:public.r41_swapx_move",
}

ATTACH = (
    "CREATE TRIGGER r41_trg BEFORE INSERT ON r41w.t FOR EACH ROW EXECUTE FUNCTION public.r41_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r41_trg ON r41w.t"
WRITE = "INSERT INTO r41w.t VALUES (1)"

PIN_TABLES = ["pt_x", "pt_f", "pt_move", "pt_late", "pt_late1", "pt_lateq", "pt_self", "pt_trg"]


def pin(t: str) -> str:
    return f"SELECT o.r41_pin FROM r41w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r41w.{t} RENAME COLUMN r41_pin TO gone"


def _built(name: str, t: str) -> str:
    """DEALLOCATE/PREPARE of ``name`` as dynamic SQL whose words are built at run time:
    the source says EXECUTE (DDL code) but never PREPARE or DEALLOCATE."""
    return f"EXECUTE 'DEALLOC' || 'ATE {name}'; EXECUTE 'PREP' || 'ARE {name} AS {pin(t)}';"


def _swap(name: str, t: str) -> str:
    return f"DEALLOCATE {name}; PREPARE {name} AS {pin(t)};"


def _plpgsql(fn: str, body: str, returns: str = "int", ret: str = "1") -> str:
    return (
        f"CREATE FUNCTION public.{fn}() RETURNS {returns} LANGUAGE plpgsql AS $$ BEGIN "
        f"{body} RETURN {ret}; END $$;\n"
    )


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r41w; CREATE SCHEMA r41x;\n"
    "CREATE TABLE r41x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r41x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE TABLE r41w.t (k int);\n"
    "CREATE FUNCTION public.r41_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r41x.vault WHERE key = 'trg'); END $$;\n"
    "CREATE FUNCTION public.r41_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"EXECUTE '{DETACH}'; EXECUTE '{ATTACH}'; "
    "RETURN 1; END $$;\n"
    # (b) a btree comparison function that runs it, in a superuser's operator class for
    # int, the subtype class of a range type: constructing or comparing ranges calls it
    "CREATE FUNCTION public.r41_cmp(int, int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r41_attach(); RETURN btint4cmp($1, $2); END $$;\n"
    "RESET ROLE;\n"
    "CREATE OPERATOR CLASS r41w.r41_ops FOR TYPE int USING btree AS OPERATOR 1 <, "
    "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
    "FUNCTION 1 public.r41_cmp(int, int);\n"
    "SET ROLE pgwitness;\n"
    "CREATE TYPE r41w.rng AS RANGE (subtype = int, subtype_opclass = r41w.r41_ops);\n"
    "CREATE TABLE r41w.rt (r r41w.rng);\n"
    "INSERT INTO r41w.rt VALUES ('[1,3)'), ('[2,4)');\n"
    "DO $$ BEGIN EXECUTE 'DROP TRIGGER IF EXISTS r41_trg ON r41w.t'; END $$;\n"
    + _plpgsql("r41_rcode", "", ret="('[1,3)'::r41w.rng IS NOT NULL)::int")
    + _plpgsql("r41_rsort", "", ret="(SELECT count(DISTINCT r)::int FROM r41w.rt)")
    # column syntax: o.r41_pin on a row without that column calls r41_pin(o)
    + "CREATE FUNCTION public.r41_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r41x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r41w.{t} (id int, r41_pin text); INSERT INTO r41w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    # (a) code that replaces statement names, its words built at run time
    + _plpgsql("r41_swapx", _built("r41s", "pt_x"))
    + _plpgsql(
        "r41_swapf",
        "EXECUTE format('%sATE r41s', 'DEALLOC'); "
        f"EXECUTE format('%sARE r41s AS {pin('pt_f')}', 'PREP');",
    )
    + _plpgsql("r41_swapx_move", _built("r41s", "pt_move") + f" EXECUTE '{away('pt_move')}';")
    + "CREATE FUNCTION public.r41_swapx_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"{_built('r41s', 'pt_trg')} RETURN NEW; END $$;\n"
    "CREATE TABLE r41w.swapper (k int);\n"
    "CREATE TRIGGER r41_swapper_trg AFTER INSERT ON r41w.swapper FOR EACH ROW "
    "EXECUTE FUNCTION public.r41_swapx_trg();\n"
    # names code spelled plainly (flagged), run by a portal bound before
    + _plpgsql("r41_late", _swap("r41s", "pt_late"))
    + _plpgsql("r41_late1", _swap("r41s", "pt_late1"))
    + _plpgsql("r41_lateq", _swap("r41q", "pt_lateq"))
    # a statement replacing itself
    + _plpgsql("r41_self", _swap("r41self", "pt_self"))
    + _plpgsql(
        "r41_selfv",
        "DEALLOCATE r41selfv; PREPARE r41selfv AS SELECT val FROM r41x.vault WHERE key = 'pin';",
    )
    # a trigger on a granted table replacing r41s with a read of the vault itself
    + "CREATE FUNCTION public.r41_swapv_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOC' || 'ATE r41s'; EXECUTE 'PREP' || 'ARE r41s AS "
    "SELECT val FROM r41x.vault WHERE key = ''pin'''; RETURN NEW; END $$;\n"
    "CREATE TABLE r41w.swapperv (k int);\n"
    "CREATE TRIGGER r41_swapperv_trg AFTER INSERT ON r41w.swapperv FOR EACH ROW "
    "EXECUTE FUNCTION public.r41_swapv_trg();\n"
    # (b) constraints and indexes through an operator whose function runs it
    "CREATE FUNCTION public.r41_eq(int, int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r41_attach(); RETURN $1 = $2; END $$;\n"
    "CREATE OPERATOR r41w.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.r41_eq, "
    "COMMUTATOR = OPERATOR(r41w.===));\n"
    "RESET ROLE;\n"
    "CREATE OPERATOR CLASS r41w.r41_eqops FOR TYPE int USING btree AS OPERATOR 1 <, "
    "OPERATOR 2 <=, OPERATOR 3 r41w.===, OPERATOR 4 >=, OPERATOR 5 >, "
    "FUNCTION 1 btint4cmp(int, int);\n"
    "SET ROLE pgwitness;\n"
    "CREATE TABLE r41w.excl_t (v int, EXCLUDE USING btree (v r41w.r41_eqops WITH "
    "OPERATOR(r41w.===)));\n"
    "INSERT INTO r41w.excl_t VALUES (1);\n"
    "CREATE TABLE r41w.onconf_t (v int); CREATE UNIQUE INDEX r41_onconf_v ON r41w.onconf_t (v r41w.r41_ops);\n"
    "CREATE TABLE r41w.parted_k (k int) PARTITION BY RANGE (k r41w.r41_ops);\n"
    "CREATE TABLE r41w.parted_k1 PARTITION OF r41w.parted_k FOR VALUES FROM (0) TO (10);\n"
    "CREATE TABLE r41w.parted_k2 PARTITION OF r41w.parted_k FOR VALUES FROM (10) TO (20);\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r41w, r41x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r41_loud(), public.r41_attach(), public.r41_cmp(int, int), "
    "public.r41_rcode(), public.r41_rsort(), public.r41_pin(anyelement), public.r41_swapx(), "
    "public.r41_swapf(), public.r41_swapx_move(), public.r41_swapx_trg(), public.r41_late(), "
    "public.r41_late1(), public.r41_lateq(), public.r41_self(), public.r41_selfv(), public.r41_swapv_trg(), public.r41_eq(int, int) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r41", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


RESIDUE_WHY = (
    "LEAK (residue, session 23): code that builds PREPARE/DEALLOCATE from pieces (EXECUTE of "
    "a concatenation, format()) is not marked as code that may replace statements: only the "
    "words are read, since marking every function with dynamic SQL would cost a session "
    "every statement its driver prepared each time one is called (the drivers' "
    "differential); the policy decides the name's Bind on its own text"
)


OK = "SELECT 'ok'::text AS r41_pin"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), m.execute(), SYNC)


BUILT_WHY = (
    "LEAK: code whose PREPARE/DEALLOCATE words are built at run time (EXECUTE 'PREP' || "
    "'ARE ...') is DDL code but not names code (DDL_CODE_SQL's names column reads only the "
    "words): _names_unknown never runs, the held name is decided again on its old text"
)
PORTAL_WHY = (
    "LEAK: _names_unknown runs when the names code's statement is decided (Parse, Bind), "
    "not when its portal's Execute runs it: a name prepared between is held, and the code "
    "replaces it after"
)
SELF_WHY = (
    "LEAK: _names_unknown keeps the statements followed as DDL code (text None); code "
    "replacing the very statement that calls it leaves the policy allowing its next Bind "
    "on the caller's text"
)
NAMES = {
    "built-execute": (
        "migrator",
        [
            (parse("r41s", OK), SYNC),
            (query("SELECT public.r41_swapx()"),),
            (query("BEGIN"),),
            (query(away("pt_x")),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 25 (RESIDUE_WHY): the server checks the name first
    ),
    "built-format": (
        "migrator",
        [
            (parse("r41s", OK), SYNC),
            (query("SELECT public.r41_swapf()"),),
            (query("BEGIN"),),
            (query(away("pt_f")),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 25 (RESIDUE_WHY): the server checks the name first
    ),
    "built-renames-too": (
        "mover",
        [
            (parse("r41s", OK), SYNC),
            (query("BEGIN"),),
            (query("SELECT public.r41_swapx_move()"),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 25 (RESIDUE_WHY): the server checks the name first
    ),
    "built-trigger": (
        "migrator",
        [
            (parse("r41s", OK), SYNC),
            (query("INSERT INTO r41w.swapper VALUES (1)"),),
            (query("BEGIN"),),
            (query(away("pt_trg")),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 25 (RESIDUE_WHY): the server checks the name first
    ),
    "portal-bound-before-block": (
        "migrator",
        [
            (query("BEGIN"),),
            (parse("sw", "SELECT public.r41_late()"), bind("p", "sw"), SYNC),
            (parse("r41s", OK), SYNC),
            (execute("p"), SYNC),
            (query(away("pt_late")),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (PORTAL_WHY)
    ),
    "portal-bound-before-group": (
        "migrator",
        [
            (
                parse("sw", "SELECT public.r41_late1()"),
                bind("p", "sw"),
                parse("r41s", OK),
                execute("p"),
                SYNC,
            ),
            (query("BEGIN"),),
            (query(away("pt_late1")),),
            _one("r41s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (PORTAL_WHY)
    ),
    "portal-bound-before-sql-execute": (
        "migrator",
        [
            (query("BEGIN"),),
            (parse("sw", "SELECT public.r41_lateq()"), bind("p", "sw"), SYNC),
            (query("PREPARE r41q AS " + OK),),
            (execute("p"), SYNC),
            (query(away("pt_lateq")),),
            (query("EXECUTE r41q"),),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (PORTAL_WHY)
    ),
    "replaces-itself": (
        "migrator",
        [
            (parse("r41self", "SELECT public.r41_self()"), SYNC),
            _one("r41self"),
            (query("BEGIN"),),
            (query(away("pt_self")),),
            _one("r41self"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (SELF_WHY)
    ),
    "writer-trigger-vault": (
        "writer",
        [
            (parse("r41s", OK), SYNC),
            (query("INSERT INTO r41w.swapperv VALUES (1)"),),
            _one("r41s"),
        ],
        False,  # fixed in session 25 (RESIDUE_WHY): the server checks the name first
    ),
    "replaces-itself-no-rename": (
        "migrator",
        [
            (parse("r41selfv", "SELECT public.r41_selfv()"), SYNC),
            _one("r41selfv"),
            _one("r41selfv"),
        ],
        False,  # fixed in session 23 (SELF_WHY)
    ),
}


@pytest.mark.parametrize("name", planted.cases(NAMES))
def test_names(px, pg, name):
    grant, steps, _ = NAMES[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
        c.query("DELETE FROM r41w.swapper; DELETE FROM r41w.swapperv")
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px, px.tokens[grant]) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    with RawClient.direct(pg) as c:
        c.query("DELETE FROM r41w.swapper; DELETE FROM r41w.swapperv")
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])


HIDDEN_WHY = (
    "LEAK: DDL run by a range type's subtype operator class (btree support function 1) "
    "in granted code: DDL_CODE_SQL's typerel and relation rows do not follow pg_range "
    "rngsubopc, the call is no DDL, and the writer's INSERT shows the trigger's RAISE"
)
CALLS = {
    "control-range-written": ("SELECT '[1,3)'::r41w.rng", "migrator", False),
    "control-range-table-sorted": ("SELECT count(DISTINCT r) FROM r41w.rt", "migrator", False),
    "exclusion": ("INSERT INTO r41w.excl_t VALUES (2)", "migrator", False),
    "on-conflict": (
        "INSERT INTO r41w.onconf_t VALUES (1) ON CONFLICT DO NOTHING",
        "migrator",
        False,
    ),
    "partition-routing": ("INSERT INTO r41w.parted_k VALUES (11)", "migrator", False),
    "range-in-granted-code": ("SELECT public.r41_rcode()", "migrator", False),
    "range-sorted-in-granted-code": ("SELECT public.r41_rsort()", "migrator", False),
}


def _unseen(pg, mig: RawClient) -> None:
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        c.query("DELETE FROM r41w.t")
    got = planted.text(mig.query("COMMENT ON TABLE r41w.t IS 'r41'"))
    assert not planted.is_error(got), got[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the load the DDL started is done


def _reset(c: RawClient) -> None:
    c.query(DETACH)
    c.query(
        "DELETE FROM r41w.excl_t WHERE v <> 1; DELETE FROM r41w.onconf_t; DELETE FROM r41w.parted_k"
    )
    c.query("INSERT INTO r41w.onconf_t VALUES (1); INSERT INTO r41w.parted_k VALUES (1)")
    c.query(DETACH)


@pytest.mark.parametrize("name", planted.cases(CALLS))
def test_ddl_run_by_unseen_code(px, pg, name):
    call, grant, _ = CALLS[name]
    planted.assert_hidden_ddl_withheld(
        px, pg, call=call, caller=grant, write=WRITE, reset=_reset, unseen=_unseen,
        marker=MARK["trg"], label=name,
    )  # fmt: skip
