"""Red-team round 84: attacks on rounds 81-83's fixes as families (time-boxed; the server
the judge).

Method (round 83's): each probe first runs directly as ``pgwitness`` (the proxy's upstream
login, the schema's owner), where it must show the marker (``RuntimeError`` otherwise);
then through a proxy started after the planting, in a session of its own on a fresh
upstream backend (``planted.renew``), as a simple Query, an extended unnamed statement and
a named prepared statement, after ``before`` (simple Queries), in a block rolled back.
Leaks and transparency regressions are strict xfails asserting the safe outcome; held
families are plain tests.

Planted: ``r84x.vault`` (``ROW``: outside every grant); ``r84x.cutoff()``, ``peeki(int)``
(IMMUTABLE PL/pgSQL), ``r84x.peek(int)`` (VOLATILE), ``r84x.pk(int, int)`` (IMMUTABLE,
returns 0), each raising ``NOTICE ... <ROW>``, all outside every grant; ``r84x.dflt(a int,
b int DEFAULT r84x.peeki(7))`` (IMMUTABLE PL/pgSQL, says nothing itself); the domain
``r84.pdom`` (``CHECK (r84x.peek(VALUE))``); the tables of SETUP. No function of this
database names ``constraint_exclusion``, ``set_config`` or ``execute`` in its text except
as the probes below spell them.

Leaks (strict xfails; every mode):

1. **Argument defaults behind a definition** (``dfa``, ``dfb``: ``read:`` of the table;
   ``dpar``: ``read:r84.dpar,r84.dkid``; ``dfc`` and ``vdf``: read and
   ``execute:r84x.dflt``). ``SELECT * FROM r84.dfa`` (a partial index ``WHERE
   r84x.dflt(id)``), ``r84.dfb`` (the same beside ``r84x.peeki(id) > 0``), ``r84.dfc``
   (``WHERE id > 0 AND r84x.dflt(1)``), ``r84.dpar WHERE id > 1`` (a child's ``CHECK
   (r84x.dflt(id))``) and ``r84.vdf`` (a view ``SELECT id, r84x.dflt(id)``) answer ``NOTICE
   peeki <ROW>``. The stored expression holds ``dflt(id)`` only; the planner's
   ``simplify_function`` inserts the default (``add_function_defaults``) and folds the
   immutable ``peeki(7)``. Cause: ``pg_depend`` records the index's/CHECK's/view's call of
   ``dflt``, not of what ``dflt``'s default calls, and ``deps`` is one step;
   ``StatementPolicy._casts`` asks ``_argument_defaults`` only of ``c.functions`` (the
   statement's own calls), never of ``relation_casts``, ``check_functions``, ``fk_code``
   or ``view_functions``; and ``column_bound_calls`` drops ``dflt`` itself (its written
   call has a column), though a default is a constant. Fix (the family: code a call runs
   that its text does not show): in the loader, close every function list a relation or
   view carries (plan code, check functions, fk code, view functions, default functions,
   TRIGGERED's inputs) over ``argument_defaults`` (transitively); and in
   ``_plan_code_rows`` never drop a function with ``pronargdefaults > 0`` (or mark it
   ``whole`` in RELATION_PLAN_CODE_SQL as casts and operators are).

2. **The pin, spelled otherwise** (``tuneu``/``tunef``: ``read:r84.chk execute:r84.tune*``).
   ``r84.tuneu()`` runs ``SET U&"constraint\\005fexclusion" = 'on'``, ``r84.tunef()``
   ``U&"set\\005fconfig"(U&'constraint\\005fexclusion', 'on', false)`` (PL/pgSQL); after
   the call, ``SELECT * FROM r84.chk WHERE id > 1`` (its own ``CHECK (id >
   r84x.cutoff())``) answers ``NOTICE cutoff <ROW>``. Cause: ``_SETS_CONSTRAINT_EXCLUSION``
   matches ``lower(prosrc)`` against ``constraint_exclusion|set_config|execute``; a
   Unicode-escape identifier or string (``U&"..."``, ``U&'...'``, ``UESCAPE``) spells both
   names without those letters, so no own CHECK counts and the pin is gone. Fix: also count
   any source containing ``u&`` (and, for PL/pgSQL, any ``SET``/``RESET`` statement at
   all), or decide it on parsed bodies (the PL/pgSQL parser's SQL statements:
   ``VariableSetStmt`` and ``FuncCall`` names, normalised by the parser, anything
   unparsable counting); better, have the proxy re-read or re-assert the setting after a
   statement that ran user code.

3. **An operator in write-time code** (``opd``, ``opc``, ``gop``: read and write of the
   table; ``sow``: read and write of ``r84.sop`` and ``r84.soc``). ``INSERT INTO r84.opd
   (id) VALUES (1)`` (``DEFAULT (0 OPERATOR(r84.##) 0)``, ``##``'s function
   ``r84x.pk``), ``INSERT INTO r84.opc VALUES (1)`` (``CHECK ((id OPERATOR(r84.##) 0) =
   0)``), ``INSERT INTO r84.gop (id) VALUES (1)`` (a generated column over ``##``) and
   ``DELETE FROM r84.sop WHERE k = 1`` (ON DELETE SET DEFAULT into ``r84.soc``, whose
   DEFAULT is the operator) answer ``NOTICE pk <ROW>``: neither refused nor withheld.
   Cause: TRIGGERED_SQL's "DEFAULT, generated column or CHECK" branch reads ``pg_depend``
   rows with ``refclassid = pg_proc`` only (its index branch too), where ``pg_depend``
   records the operator (``pg_operator``), not its function; ``deps`` (``_CALLS_CTE``)
   follows operators and casts but is not used there, so ``_cascaded`` misses the cascade
   too. The same with a cast is held (the type's dependents), and an index over the
   operator is refused (plan code through ``deps``). Fix: build every TRIGGERED branch
   (defaults, CHECKs, indexes, partition keys, domains) on ``deps`` rather than raw
   ``pg_depend``, so operators and casts count wherever functions do.

Held (plain tests): a column of a table's row type whose table has a column of the domain,
a domain over an array of the domain, a domain CHECK through the operator, an index over a
function of a column returning the domain (with and without execute on it), a CHECK and a
DEFAULT through a user cast, an index through the operator on write (withheld or refused);
ON UPDATE SET DEFAULT whose DEFAULT calls code, granted (withheld) or into a table outside
the grant (refused); a foreign key added by a granted DDL to a table whose partial index
folds the code (refused), and the write after it; ``ATTACH PARTITION`` of a table whose own
CHECK folds the code (refused, ``deny.unknown``: ATTACH is not recognised at all).

Transparency: no regression found (a read of a table with an expression index over a
function of a column, and a plain read, go through).

Fixed after the round (session 35, the coordinator; those probes are plain tests now): every
list a statement on a relation asks about (``relation_casts``, ``fk_code``,
``check_functions``) holds what its functions' argument defaults call, transitively
(``_with_defaults`` in the loader), and a function with argument defaults is never left out
by the column-argument reading; ``_SETS_CONSTRAINT_EXCLUSION`` counts any ``U&`` escape;
TRIGGERED_SQL's branches follow operators and casts (``deps``). Left: a view calling a
granted function whose default calls code (``view-default-arg``, strict xfail; since
session 36 what the server says about a read of that view, whose query reads the vault, is
withheld: ``StatementPolicy._hides_rows``).
"""

from __future__ import annotations

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(240)

AGENT = "r84-bot"
ROW = "R84-ROW-9c3e"  # r84x.vault, outside every grant
MARKERS = (ROW,)
SCOPES = "read:r84.pub write:r84.pub"
GRANTS = {
    "dfa": "read:r84.dfa",
    "dfb": "read:r84.dfb",
    "dfc": "read:r84.dfc execute:r84x.dflt",
    "dpar": "read:r84.dpar,r84.dkid",
    "tuneu": "read:r84.chk execute:r84.tuneu",
    "tunef": "read:r84.chk execute:r84.tunef",
    "outr": "read:r84.outr write:r84.outr",
    "att": "read:r84.ap,r84.att ddl:r84.ap,r84.att",
    "opd": "read:r84.opd write:r84.opd",
    "opc": "read:r84.opc write:r84.opc",
    "sdw": "read:r84.sdp,r84.sdc write:r84.sdp,r84.sdc",
    "sdp": "read:r84.sdp write:r84.sdp",
    "sow": "read:r84.sop,r84.soc write:r84.sop,r84.soc",
    "lix": "read:r84.lix",
    "cc": "read:r84.cc,r84.cd write:r84.cc,r84.cd",
    "oix": "read:r84.oix write:r84.oix",
    "dat": "read:r84.dat write:r84.dat",
    "vdf": "read:r84.vdf execute:r84x.dflt",
    "gop": "read:r84.gop write:r84.gop",
    "odt": "read:r84.odt write:r84.odt",
    "fa": "read:r84.fa write:r84.fa ddl:r84.fa",
    "rdx": "read:r84.rdx write:r84.rdx",
    "rdxe": "read:r84.rdx write:r84.rdx execute:r84x.mkdom",
}
MODES = ["simple", "extended", "prepared"]
_VAULT_ROW = "(SELECT v FROM r84x.vault WHERE k = 'row')"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r84; CREATE SCHEMA r84x;
CREATE TABLE r84x.vault (k text PRIMARY KEY, v text);
INSERT INTO r84x.vault VALUES ('row', '{ROW}');
CREATE TABLE r84.pub (id int PRIMARY KEY, v text);
INSERT INTO r84.pub VALUES (1, 'R84-PUB-ok');
CREATE FUNCTION r84x.cutoff() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'cutoff %', {_VAULT_ROW}; RETURN 0; END $$;
CREATE FUNCTION r84x.peek(int) RETURNS bool VOLATILE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peek %', {_VAULT_ROW}; RETURN true; END $$;
CREATE FUNCTION r84x.peeki(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peeki %', {_VAULT_ROW}; RETURN $1; END $$;
CREATE FUNCTION r84x.pk(int, int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'pk %', {_VAULT_ROW}; RETURN 0; END $$;
CREATE OPERATOR r84.## (LEFTARG = int, RIGHTARG = int, FUNCTION = r84x.pk);
-- a function whose argument DEFAULT calls the code: the planner inserts the default
-- (add_function_defaults) and folds it; the stored text shows r84x.dflt(id) only
CREATE FUNCTION r84x.dflt(a int, b int DEFAULT r84x.peeki(7)) RETURNS bool IMMUTABLE
  LANGUAGE plpgsql AS $$ BEGIN RETURN true; END $$;
CREATE TABLE r84.dfa (id int);
INSERT INTO r84.dfa VALUES (1);
CREATE INDEX ON r84.dfa (id) WHERE r84x.dflt(id);
CREATE TABLE r84.dfb (id int);
INSERT INTO r84.dfb VALUES (1);
CREATE INDEX ON r84.dfb (id) WHERE r84x.dflt(id) AND r84x.peeki(id) > 0;
CREATE TABLE r84.dfc (id int);
INSERT INTO r84.dfc VALUES (1);
CREATE INDEX ON r84.dfc (id) WHERE id > 0 AND r84x.dflt(1);
CREATE TABLE r84.dpar (id int);
CREATE TABLE r84.dkid (CHECK (r84x.dflt(id))) INHERITS (r84.dpar);
INSERT INTO r84.dkid VALUES (5);
-- a table's own CHECK, folded only under constraint_exclusion = on
CREATE TABLE r84.chk (id int CHECK (id > r84x.cutoff()));
INSERT INTO r84.chk VALUES (5);
-- "tuning helpers" turning it on without spelling its name, set_config or the E-word
CREATE FUNCTION r84.tuneu() RETURNS text LANGUAGE plpgsql AS $$
BEGIN SET U&"constraint\\005fexclusion" = 'on'; RETURN 'ok'; END $$;
CREATE FUNCTION r84.tunef() RETURNS text LANGUAGE plpgsql AS $$
BEGIN RETURN U&"set\\005fconfig"(U&'constraint\\005fexclusion', 'on', false); END $$;
-- a column of a table's row type, the table having a column of the domain
CREATE DOMAIN r84.pdom AS int CHECK (r84x.peek(VALUE));
CREATE TABLE r84.inr (d r84.pdom);
CREATE TABLE r84.outr (id int, x r84.inr);
-- ATTACH PARTITION folds the attached table's own CHECKs (PartConstraintImpliedByRelConstraint)
CREATE TABLE r84.ap (id int) PARTITION BY RANGE (id);
CREATE TABLE r84.att (id int CHECK (id > r84x.cutoff()));
INSERT INTO r84.att VALUES (5);
-- a DEFAULT and a CHECK reaching the code through an operator
CREATE TABLE r84.opd (id int, v int DEFAULT (0 OPERATOR(r84.##) 0));
CREATE TABLE r84.opc (id int CHECK ((id OPERATOR(r84.##) 0) = 0));
-- ON UPDATE SET DEFAULT: the action evaluates the referencing column's DEFAULT
CREATE TABLE r84.sdp (k int PRIMARY KEY);
INSERT INTO r84.sdp VALUES (0), (1);
CREATE TABLE r84.sdc (k int DEFAULT r84x.peeki(0) REFERENCES r84.sdp ON UPDATE SET DEFAULT);
INSERT INTO r84.sdc VALUES (1);
-- ... and a DEFAULT through an operator
CREATE TABLE r84.sop (k int PRIMARY KEY);
INSERT INTO r84.sop VALUES (0), (1);
CREATE TABLE r84.soc (k int DEFAULT (0 OPERATOR(r84.##) 0)
  REFERENCES r84.sop ON DELETE SET DEFAULT);
INSERT INTO r84.soc VALUES (1);
-- transparency: an expression index over a function of a column
CREATE TABLE r84.lix (id int);
INSERT INTO r84.lix VALUES (1);
CREATE INDEX ON r84.lix (r84x.peeki(id));
-- a CHECK and a DEFAULT reaching the code through a user cast
CREATE TYPE r84.m2 AS ENUM ('ok');
CREATE FUNCTION r84x.tom(int) RETURNS r84.m2 IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'tom %', {_VAULT_ROW}; RETURN 'ok'; END $$;
CREATE CAST (int AS r84.m2) WITH FUNCTION r84x.tom(int);
CREATE TABLE r84.cc (id int CHECK ((id::r84.m2) IS NOT NULL));
CREATE TABLE r84.cd (id int, m r84.m2 DEFAULT (1::r84.m2));
-- an index expression through the operator, written
CREATE TABLE r84.oix (id int);
CREATE INDEX ON r84.oix ((id OPERATOR(r84.##) 0));
-- a domain over an array of the domain
CREATE DOMAIN r84.darr AS r84.pdom[];
CREATE TABLE r84.dat (id int, a r84.darr);
-- a view calling the function whose argument DEFAULT calls the code
CREATE VIEW r84.vdf AS SELECT id, r84x.dflt(id) AS ok FROM r84.pub;
-- a generated column through the operator
CREATE TABLE r84.gop (id int, g int GENERATED ALWAYS AS (id OPERATOR(r84.##) 0) STORED);
-- a domain whose CHECK reaches the code through the operator
CREATE DOMAIN r84.opdom AS int CHECK ((VALUE OPERATOR(r84.##) 0) = 0);
CREATE TABLE r84.odt (id int, d r84.opdom);
-- a foreign key added by a granted DDL to a table whose partial index folds the code
CREATE TABLE r84.fb (k int PRIMARY KEY, live bool);
CREATE INDEX ON r84.fb (k) WHERE live AND r84x.cutoff() = 0;
INSERT INTO r84.fb VALUES (1, true);
CREATE TABLE r84.fa (k int);
INSERT INTO r84.fa VALUES (1);
-- an index over a function of a column returning the domain (its CHECK runs on the result)
CREATE FUNCTION r84x.mkdom(int) RETURNS r84.pdom IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RETURN $1; END $$;
CREATE TABLE r84.rdx (id int);
CREATE INDEX ON r84.rdx (r84x.mkdom(id));
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r84, r84x CASCADE;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r84", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _direct(pg, before: list[str], sql: str, block: bool = True) -> str:
    return planted.direct_in_block(pg, before, sql, block)


def _proxied(px, key: str, mode: str, before: list[str], sql: str, block: bool = True) -> str:
    return planted.proxied_in_block(px, key, mode, before, sql, block)


def _reaches(pg, before: list[str], sql: str, block: bool = True) -> str:
    return planted.reaches_directly(pg, before, sql, MARKERS, block)


_CE_READ = "SELECT * FROM r84.chk WHERE id > 1"

# key -> (grant, before, the probe, strict-xfail reason or None)
PROBES = {
    "default-arg-column-bound-index": ("dfa", [], "SELECT * FROM r84.dfa", None),
    "default-arg-beside-column-bound-call": ("dfb", [], "SELECT * FROM r84.dfb", None),
    "default-arg-granted-function-index": ("dfc", [], "SELECT * FROM r84.dfc", None),
    "default-arg-child-check": ("dpar", [], "SELECT * FROM r84.dpar WHERE id > 1", None),
    "pin-unicode-identifier-set": ("tuneu", ["SELECT r84.tuneu()"], _CE_READ, None),
    "pin-unicode-identifier-set-config": ("tunef", ["SELECT r84.tunef()"], _CE_READ, None),
    "table-rowtype-column-of-domain": ("outr", [], "INSERT INTO r84.outr VALUES (1, ROW(1))",
                                       None),
    "attach-partition-folds-own-check": (
        "att", [], "ALTER TABLE r84.ap ATTACH PARTITION r84.att FOR VALUES FROM (0) TO (100)",
        None),
    "default-through-operator": ("opd", [], "INSERT INTO r84.opd (id) VALUES (1)", None),
    "check-through-operator": ("opc", [], "INSERT INTO r84.opc VALUES (1)", None),
    "fk-set-default-granted": ("sdw", [], "UPDATE r84.sdp SET k = 2 WHERE k = 1", None),
    "fk-set-default-ungranted-child": ("sdp", [], "UPDATE r84.sdp SET k = 2 WHERE k = 1",
                                       None),
    "fk-set-default-through-operator": ("sow", [], "DELETE FROM r84.sop WHERE k = 1", None),
    "check-through-cast": ("cc", [], "INSERT INTO r84.cc VALUES (1)", None),
    "default-through-cast": ("cc", [], "INSERT INTO r84.cd (id) VALUES (1)", None),
    "index-through-operator-write": ("oix", [], "INSERT INTO r84.oix VALUES (1)", None),
    "domain-over-array-of-domain": ("dat", [], "INSERT INTO r84.dat VALUES (1, '{1}')", None),
    "view-default-arg": ("vdf", [], "SELECT * FROM r84.vdf", None),
    "generated-through-operator": ("gop", [], "INSERT INTO r84.gop (id) VALUES (1)", None),
    "domain-check-through-operator": ("odt", [], "INSERT INTO r84.odt VALUES (1, 1)", None),
    "fk-added-by-ddl": ("fa", [], "ALTER TABLE r84.fa ADD FOREIGN KEY (k) REFERENCES r84.fb",
                        None),
    "fk-added-then-write": ("fa", ["ALTER TABLE r84.fa ADD FOREIGN KEY (k) REFERENCES r84.fb"],
                            "INSERT INTO r84.fa VALUES (1)", None),
    "index-function-returning-domain": ("rdx", [], "INSERT INTO r84.rdx VALUES (1)", None),
    "index-function-returning-domain-granted": ("rdxe", [], "INSERT INTO r84.rdx VALUES (1)",
                                                None),
}  # fmt: skip


def _cases():
    return planted.mode_cases(PROBES, MODES)


@pytest.mark.parametrize("key", list(PROBES))
def test_r84_reaches_directly(pg, px, key):
    _grant, before, sql, _why = PROBES[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), _cases())
def test_r84_probe(px, key, mode):
    grant, before, sql, _why = PROBES[key]
    got = _proxied(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# key -> (grant, statement, what it answers, strict-xfail reason or None)
TRANSPARENT = {
    "column-function-index-read": ("lix", "SELECT * FROM r84.lix", "SELECT 1", None),
    "plain-read": ("base", "SELECT v FROM r84.pub", "SELECT 1", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(TRANSPARENT))
def test_r84_transparent_directly(pg, px, key):
    _grant, sql, want, _why = TRANSPARENT[key]
    got = _direct(pg, [], sql)
    assert want in got and not planted.is_error(got) and not _shown(got), got[-300:]


def _transparent_cases():
    return [
        pytest.param(k, mode, id=f"{k}-{mode}", marks=[] if v[-1] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in TRANSPARENT.items()
        for mode in MODES
    ]  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), _transparent_cases())
def test_r84_transparent(px, key, mode):
    grant, sql, want, _why = TRANSPARENT[key]
    got = _proxied(px, grant, mode, [], sql)
    assert want in got and not planted.is_error(got), ("REFUSED", key, mode, got[-400:])
