"""Red-team round 83: attacks on round 82's fixes (and e17fe53, committed during the round:
a function an index's or a child CHECK's definition calls only with a column is left out of
the plan lists) as families (time-boxed; the server the judge).

Method (round 82's): each probe first runs directly as ``pgwitness`` (the proxy's upstream
login, the schema's owner), where it must show the marker (``RuntimeError`` otherwise);
then through a proxy started after the planting, in a session of its own on a fresh
upstream backend (``planted.renew``), as a simple Query, an extended unnamed statement and
a named prepared statement, after ``before`` (simple Queries), in a block rolled back
(``block``). Leaks and transparency regressions are strict xfails asserting the safe
outcome; held families are plain tests.

Planted: ``r83x.vault`` (``ROW``: outside every grant); ``r83x.cutoff()``, ``peeki(int)``
(IMMUTABLE PL/pgSQL), ``r83x.peek(int)`` (VOLATILE), ``r83x.pk(int, int)`` (IMMUTABLE),
``r83x.trg()`` / ``r83x.trgn()`` (triggers), ``r83x.moodint``, ``r83x.tomood`` (cast
functions), each raising ``<ROW>`` (NOTICE, or EXCEPTION for ``trg``), all outside every
grant; the domain ``r83.pdom`` (``CHECK (r83x.peek(VALUE))``); the tables of SETUP.

Leaks (strict xfails; every mode):

1. **The pin, moved by granted code** (``tune``: ``read:r83.chk execute:r83.tune``).
   ``r83.tune()`` (a PL/pgSQL "tuning helper": ``set_config('constraint_exclusion', 'on',
   false)``); after ``SELECT r83.tune()``, ``SELECT * FROM r83.chk WHERE id > 1`` (the
   table's own ``CHECK (id > r83x.cutoff())``) answers ``NOTICE cutoff <ROW>``. Cause: the
   plan lists (``_PLAN_CODE``) assume ``constraint_exclusion = partition``; the startup
   pin holds only until code changes the session's value (``SET`` and ``set_config`` by
   the client are refused, the function's is not read). The proxy already knows such code
   exists: ``SHOW constraint_exclusion`` is ``deny.setting_read`` here ("code in this
   database may set it"). Fix (the family: code changing a setting the catalog's lists
   assume): where ``CODE_FLAGS_SQL`` finds code that may set settings (``set_config``,
   ``EXECUTE``, another procedural language; a function's own ``SET`` clause ends with
   the call and is its body's business), decide on the ``on`` lists (count every
   relation's own CHECKs' immutable and SQL functions at the relation), as
   ``encoding_code`` holds every session to the encoding rule; or, narrower, refuse in
   enforced sessions a call of a function whose source names ``constraint_exclusion`` or
   calls ``set_config`` with a name not constant, or runs ``EXECUTE``.

2. **A column of a type made of a domain** (``ddt``, ``arr``, ``ctab``, ``rtab``: read and
   write of the table). ``INSERT INTO r83.ddt VALUES (1, 1)`` (a domain over ``pdom``),
   ``r83.arr`` (``pdom[]``: ``'{1}'``; also ``UPDATE r83.arr SET a = '{2}'``, which
   matches no row: the literal is coerced at parse analysis), ``r83.ctab`` (a composite
   type with a ``pdom`` attribute: ``ROW(1)``), ``r83.rtab`` (a range over ``pdom``:
   ``'[1,2)'``) run the domain's CHECK: ``NOTICE peek <ROW>``, neither refused nor
   withheld. A column of ``pdom`` itself is withheld (round 82); a function's parameter of
   ``pdom[]`` is refused (``array-of-domain-argument``: "a value of type r83._pdom runs
   r83x.peek"). Cause: TRIGGERED_SQL's domain branch joins ``co.contypid = a.atttypid``:
   the column's own type only; DEFAULT_FUNCTIONS_SQL follows domains over domains but not
   arrays, composites or ranges. Fix (the family): decide a column's type by
   USER_TYPES_SQL's ``runs`` (``made_of``: domains over domains, arrays, composites,
   ranges, multiranges), e.g. a ``write`` row in TYPE_DEPENDENTS_SQL for every column
   (``pg_depend`` from ``pg_class`` with ``objsubid > 0`` to a user type), turned into
   TRIGGERED through ``type_oids`` as the round-82 fix does for defaults and CHECKs.

3. **DDL of a parent runs its descendants' code** (``cpar``, ``ppar``, ``ipar``: read and
   ddl of the parent and the child). ``ALTER TABLE r83.cpar ALTER COLUMN id TYPE bigint``
   rewrites the inheritance child ``r83.ckid`` and re-checks its ``CHECK
   (r83x.peek(length(id::text)))``: ``NOTICE peek <ROW>``; the same for a partition's own
   CHECK (``ALTER TABLE r83.ppar ALTER COLUMN v TYPE bigint``); ``ALTER TABLE r83.ipar ADD
   COLUMN z uuid DEFAULT gen_random_uuid()`` rewrites the child ``r83.ikid`` and rebuilds
   its index on ``r83x.peeki(id)``: ``NOTICE peeki <ROW>`` (DDL's messages are never
   withheld). Cause: ``StatementPolicy._casts`` asks ``check_functions`` (and ``fk_code``)
   of the relations in ``write_ops`` only; recursing DDL reaches ``Snapshot.descendants``
   / ``partitions`` too, and since e17fe53 a child's index over a function of a column is
   in no plan list. Fix: for DDL of a relation without ONLY, ask ``check_functions`` and
   ``fk_code`` of every descendant too (or fold them up to ancestors in the loader, as
   ``_PLAN_RUNS`` does).

4. **A foreign-key action writing a granted table whose write runs code** (``upw``, ``dlw``:
   read and write of both tables). ``UPDATE r83.up SET k = 2`` cascades (ON UPDATE CASCADE)
   into ``r83.upc`` (``CHECK (r83x.peek(k))``); ``DELETE FROM r83.dl`` cascades (ON DELETE
   CASCADE) into ``r83.dlc`` (an AFTER DELETE trigger): ``NOTICE peek/trgn <ROW>``, not
   withheld (the direct ``UPDATE r83.upc SET k = k`` is withheld: held). Cause:
   ``writes_unreadable`` withholds through ``Snapshot.cascades`` only where a cascaded
   table is unreadable; TRIGGERED_SQL's ``up`` is not closed over foreign-key actions
   (round 82's fix 4 closed ``fk_code``, i.e. plan code, not write-time code). Fix: a
   relation whose actions write a TRIGGERED (or RULED) relation is TRIGGERED itself
   (close ``up`` over CASCADES_SQL's edges, ON UPDATE for updates, ON DELETE for deletes),
   or have ``writes_unreadable`` ask ``_writes_reach_unseen`` of every ``cascades`` target.

5. **A function called by name with a column and, in the same definition, by an operator
   or a cast of constants** (``opx``: read scopes only). ``r83.opx``'s partial index
   ``WHERE r83x.pk(id, 0) AND (1 OPERATOR(r83.##) 0)`` (``##``'s function is ``pk``),
   ``r83.opk``'s CHECK the same (a child read through ``r83.opp``), ``r83.cst2``'s
   ``WHERE r83x.tomood(id) IS NOT NULL AND (1::r83.mood2) IS NOT NULL`` (a cast by
   ``tomood`` to a type no column has): ``SELECT * FROM r83.opx`` answers ``NOTICE pk
   <ROW>`` (and ``tomood``). Cause (e17fe53): ``_plan_code_rows`` drops a function when
   every call *by name* in the definition has a column argument; ``column_bound_calls``
   sees only ``FuncCall`` nodes, so an operator (``A_Expr``) or a cast (``TypeCast``) of
   constants reaching the same function counts for nothing. Fix: keep the function unless
   the definition's only references to it are ``FuncCall``s bound to a column: treat every
   operator (by the ``pg_operator`` rows of its name, or any ``A_Expr`` with a user
   operator's name) and every ``TypeCast`` to or from a user type as an unbound call of
   the functions behind them (conservatively: keep a function if the definition holds any
   ``A_Expr`` naming a user operator or any cast whose function is not a ``FuncCall``).

Fixed after the round (session 35, the coordinator; those probes are plain tests now):
a table's own CHECK counts where user-written code may turn ``constraint_exclusion`` on
(``_SETS_CONSTRAINT_EXCLUSION``: code naming it, ``set_config`` or ``EXECUTE``, a SET
clause, another language); a column of any type made of a domain makes its relation
TRIGGERED (``TYPE_DEPENDENTS_SQL``'s ``write`` rows for columns, through ``type_oids``);
DDL of a parent without ONLY is decided on its children's and partitions' ``fk_code`` and
``check_functions`` (index functions included); TRIGGERED is closed over foreign-key
actions (``_cascaded``); a function a cast or an operator runs, like a SQL one, is never
left out by ``column_bound_calls``. ``test_r83_pin_survives_reset`` accepts the refusal the
first fix brings here (this database holds ``r83.tune``).

Transparency regressions (strict xfails, labelled; left):

* **REFUSED** (``vck``: ``read:`` and ``ddl:r83.vck``; ``CHECK (r83x.peek(id))``): ``ALTER
  TABLE r83.vck ADD COLUMN note text`` and ``CREATE INDEX ON r83.vck (id)`` check no row
  (shown directly: no NOTICE) yet are refused (``scope.execute``: "DDL of r83.vck may
  check or rewrite its rows"). ``check_functions`` is asked of every DDL of the relation.
  Fix: ask it only of DDL that checks or rebuilds rows (VALIDATE CONSTRAINT, ALTER COLUMN
  TYPE, a rewrite: SET LOGGED/UNLOGGED, ADD COLUMN with a volatile default or of a domain
  with constraints, ADD CONSTRAINT without NOT VALID), index functions for rebuilds and
  index builds only.
* **REFUSED (minor)**: ``RESET constraint_exclusion`` (``deny.setting``) returns only to the
  pinned startup value; ``RESET ALL`` and ``DISCARD ALL`` go through. Not a regression for
  a grant without a ``set:`` scope; harmless to allow. Allowed since session 37
  (``policy.decide._PINNED_AT_LOGIN``), as ``RESET search_path`` was.

Also seen (not a round-82 regression, no test): ``SHOW constraint_exclusion`` and
``current_setting('constraint_exclusion')`` are ``deny.setting_read`` in a database with code
that may set settings (``r83.tune`` here); an enum setting cannot carry what code read, so
``constraint_exclusion`` could join ``_CODE_PROOF_SETTINGS``.

Held (plain tests): the pin at login (``options`` ``-c constraint_exclusion=on``,
``-c constraint-exclusion=on``, ``--constraint_exclusion=on``, upper case, a startup
parameter ``constraint_exclusion`` or ``Constraint_Exclusion``: refused at login or
overridden by the proxy's parameter), ``SET LOCAL`` and ``set_config`` by the client
(refused), ``RESET ALL`` / ``DISCARD ALL`` with the database saying ``on`` (back to the
pin), a trigger outside the grant setting it on a granted table's insert, the read in the
same transaction or after its COMMIT (withheld: the session wrote a TRIGGERED relation, and
its later messages are withheld); code at COMMIT: a deferred constraint trigger (EXCEPTION or NOTICE) fired by
``COMMIT``, ``SET CONSTRAINTS ALL IMMEDIATE`` or by name (withheld: the session wrote a
TRIGGERED relation), through a cascade into a table outside the grant (refused), a
deferrable foreign key to or from a table whose plan folds code (the write refused:
``fk_code``), a foreign key to a partitioned table whose partition's index folds code
(refused); a cast from a user type by a user function in an index expression, and in a
predicate beside a by-name call (refused: the column type's casts); a function taking
``pdom[]`` (refused); ``ALTER DOMAIN ... VALIDATE CONSTRAINT`` and ``ADD CONSTRAINT`` (which
check, or quote in a cast's error, the stored values of every table with a column of the
domain: ``deny.unknown``), ``CLUSTER`` and ``VACUUM FULL`` (``deny.utility``), ``ALTER
TABLE ... ADD COLUMN`` of ``pdom`` (refused: the type named), a new partition beside a
default partition of a table partitioned by ``r83x.peeki(id)`` (refused: the partition's
key code propagates up), ON UPDATE CASCADE into a table the grant may not write
(refused). Transparency held: an insert into a table whose foreign key references a table
with an index over a function of a column (e17fe53). Checked directly, nothing to probe:
``ALTER TABLE ... SET ACCESS METHOD heap`` on a heap table does not rewrite (PostgreSQL
15); PREPARE TRANSACTION is off (``max_prepared_transactions = 0``).
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support import rawpg as r

pytestmark = pytest.mark.timeout(240)

AGENT = "r83-bot"
ROW = "R83-ROW-5d1b"  # r83x.vault, outside every grant
MARKERS = (ROW,)
SCOPES = "read:r83.pub write:r83.pub"
GRANTS = {
    "chk": "read:r83.chk",
    "tune": "read:r83.chk execute:r83.tune",
    "tt": "read:r83.chk,r83.tt write:r83.tt",
    "dct": "read:r83.dct write:r83.dct",
    "dcp": "read:r83.dcp write:r83.dcp",
    "ddt": "read:r83.ddt write:r83.ddt",
    "arr": "read:r83.arr write:r83.arr",
    "ctab": "read:r83.ctab write:r83.ctab",
    "rtab": "read:r83.rtab write:r83.rtab",
    "vdom": "ddl:r83.vdom",
    "tdom": "ddl:r83.tdom",
    "plain": "read:r83.plain ddl:r83.plain",
    "cix": "read:r83.cix write:r83.cix ddl:r83.cix",
    "up": "read:r83.up write:r83.up",
    "upw": "read:r83.up,r83.upc write:r83.up,r83.upc",
    "cpar": "read:r83.cpar,r83.ckid ddl:r83.cpar,r83.ckid",
    "pfk": "read:r83.pfk write:r83.pfk",
    "dfk": "read:r83.dfk write:r83.dfk",
    "dref2": "read:r83.dref2 write:r83.dref2",
    "mood": "read:r83.mt write:r83.mt",
    "dctn": "read:r83.dctn write:r83.dctn",
    "dlw": "read:r83.dl,r83.dlc write:r83.dl,r83.dlc",
    "ppar": "read:r83.ppar,r83.ppar1 ddl:r83.ppar,r83.ppar1",
    "farr": "execute:r83.farr",
    "vck": "read:r83.vck ddl:r83.vck",
    "efk": "read:r83.efk,r83.eref write:r83.efk",
    "opx": "read:r83.opx,r83.opp,r83.opk,r83.cstx,r83.cst2",
    "kk": "ddl:r83.kk,r83.kk2,r83.kkd",
    "ipar": "read:r83.ipar,r83.ikid ddl:r83.ipar,r83.ikid",
}
MODES = ["simple", "extended", "prepared"]
_VAULT_ROW = "(SELECT v FROM r83x.vault WHERE k = 'row')"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r83; CREATE SCHEMA r83x;
CREATE TABLE r83x.vault (k text PRIMARY KEY, v text);
INSERT INTO r83x.vault VALUES ('row', '{ROW}');
CREATE TABLE r83.pub (id int PRIMARY KEY, v text);
INSERT INTO r83.pub VALUES (1, 'R83-PUB-ok');
CREATE FUNCTION r83x.cutoff() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'cutoff %', {_VAULT_ROW}; RETURN 0; END $$;
CREATE FUNCTION r83x.peek(int) RETURNS bool VOLATILE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peek %', {_VAULT_ROW}; RETURN true; END $$;
CREATE FUNCTION r83x.peeki(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peeki %', {_VAULT_ROW}; RETURN $1; END $$;
CREATE FUNCTION r83x.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'trg %', {_VAULT_ROW}; END $$;
-- a table's own CHECK: folded only under constraint_exclusion = on
CREATE TABLE r83.chk (id int CHECK (id > r83x.cutoff()));
INSERT INTO r83.chk VALUES (5);
-- a "tuning helper" a grant may call: it sets the planner's constraint_exclusion
CREATE FUNCTION r83.tune() RETURNS text LANGUAGE plpgsql AS $$
BEGIN RETURN set_config('constraint_exclusion', 'on', false); END $$;
-- ... and a trigger outside every grant doing the same on a granted table's insert
CREATE FUNCTION r83x.tunetrg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM set_config('constraint_exclusion', 'on', false); RETURN NEW; END $$;
CREATE TABLE r83.tt (id int);
CREATE TRIGGER tt_t BEFORE INSERT ON r83.tt FOR EACH ROW EXECUTE FUNCTION r83x.tunetrg();
-- a deferred constraint trigger: it fires at COMMIT / SET CONSTRAINTS ... IMMEDIATE
CREATE TABLE r83.dct (id int);
CREATE CONSTRAINT TRIGGER dct_t AFTER INSERT ON r83.dct DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION r83x.trg();
-- ... reached through a cascade from the granted table
CREATE TABLE r83.dcp (k int PRIMARY KEY);
CREATE TABLE r83x.dcc (k int REFERENCES r83.dcp ON DELETE SET NULL);
CREATE CONSTRAINT TRIGGER dcc_t AFTER UPDATE ON r83x.dcc DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION r83x.trg();
INSERT INTO r83.dcp VALUES (1); INSERT INTO r83x.dcc VALUES (1);
-- a deferred constraint trigger that only says it (NOTICE), at COMMIT
CREATE FUNCTION r83x.trgn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'trgn %', {_VAULT_ROW}; RETURN NULL; END $$;
CREATE TABLE r83.dctn (id int);
CREATE CONSTRAINT TRIGGER dctn_t AFTER INSERT ON r83.dctn DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION r83x.trgn();
-- types made of a domain whose CHECK calls the code
CREATE DOMAIN r83.pdom AS int CHECK (r83x.peek(VALUE));
CREATE DOMAIN r83.dd AS r83.pdom;
CREATE TABLE r83.ddt (id int, d r83.dd);
CREATE TABLE r83.arr (id int, a r83.pdom[]);
CREATE TYPE r83.comp AS (d r83.pdom);
CREATE TABLE r83.ctab (id int, c r83.comp);
CREATE TYPE r83.prng AS RANGE (subtype = r83.pdom);
CREATE TABLE r83.rtab (id int, r r83.prng);
-- DDL of a domain checks the columns of it in every table (outside the grant too)
CREATE DOMAIN r83.vdom AS int;
CREATE TABLE r83x.hid (d r83.vdom);
INSERT INTO r83x.hid VALUES (1);
ALTER DOMAIN r83.vdom ADD CONSTRAINT vc CHECK (r83x.peek(VALUE)) NOT VALID;
CREATE DOMAIN r83.tdom AS text;
CREATE TABLE r83x.hid2 (t r83.tdom);
INSERT INTO r83x.hid2 SELECT v FROM r83x.vault;
-- a column of the domain added: the table rewritten, the CHECK run on every row's NULL
CREATE TABLE r83.plain (id int);
INSERT INTO r83.plain VALUES (1);
-- rebuilds of an index over a user function of a column
CREATE TABLE r83.cix (id int);
INSERT INTO r83.cix VALUES (1);
CREATE INDEX cix_i ON r83.cix (r83x.peeki(id));
-- ON UPDATE CASCADE into a table with a volatile CHECK
CREATE TABLE r83.up (k int PRIMARY KEY);
CREATE TABLE r83.upc (k int REFERENCES r83.up ON UPDATE CASCADE, CHECK (r83x.peek(k)));
INSERT INTO r83.up VALUES (1); INSERT INTO r83.upc VALUES (1);
-- ALTER COLUMN TYPE of a parent rewrites its child, re-checking the child's CHECK
CREATE TABLE r83.cpar (id int);
CREATE TABLE r83.ckid (CHECK (r83x.peek(length(id::text)))) INHERITS (r83.cpar);
INSERT INTO r83.ckid VALUES (1);
-- ON DELETE CASCADE into a table with a trigger of its own
CREATE TABLE r83.dl (k int PRIMARY KEY);
CREATE TABLE r83.dlc (k int REFERENCES r83.dl ON DELETE CASCADE);
CREATE TRIGGER dlc_t AFTER DELETE ON r83.dlc FOR EACH ROW EXECUTE FUNCTION r83x.trgn();
INSERT INTO r83.dl VALUES (1); INSERT INTO r83.dlc VALUES (1);
-- ALTER COLUMN TYPE of a partitioned table rewrites its partition, re-checking its CHECK
CREATE TABLE r83.ppar (id int, v int) PARTITION BY LIST (id);
CREATE TABLE r83.ppar1 PARTITION OF r83.ppar (CHECK (r83x.peek(length(v::text))))
  FOR VALUES IN (1);
INSERT INTO r83.ppar VALUES (1, 1);
-- a function taking an array of the domain
CREATE FUNCTION r83.farr(a r83.pdom[]) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
-- transparency: DDL that checks no row, a foreign key whose check folds nothing
CREATE TABLE r83.vck (id int CHECK (r83x.peek(id)));
INSERT INTO r83.vck VALUES (1);
CREATE TABLE r83.eref (k int PRIMARY KEY);
CREATE INDEX ON r83.eref (r83x.peeki(k));
INSERT INTO r83.eref VALUES (1);
CREATE TABLE r83.efk (k int REFERENCES r83.eref);
-- a function called by name with a column (left out since e17fe53) and by an operator
-- with constants (folded)
CREATE FUNCTION r83x.pk(int, int) RETURNS bool IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'pk %', {_VAULT_ROW}; RETURN true; END $$;
CREATE OPERATOR r83.## (LEFTARG = int, RIGHTARG = int, FUNCTION = r83x.pk);
CREATE TABLE r83.opx (id int);
INSERT INTO r83.opx VALUES (1);
CREATE INDEX ON r83.opx (id) WHERE r83x.pk(id, 0) AND (1 OPERATOR(r83.##) 0);
CREATE TABLE r83.opp (id int);
CREATE TABLE r83.opk (CHECK (r83x.pk(id, 0) AND (1 OPERATOR(r83.##) 0))) INHERITS (r83.opp);
INSERT INTO r83.opk VALUES (5);
-- a partition key over a function of a column: a new partition scans the default one
CREATE TABLE r83.kk (id int) PARTITION BY RANGE (r83x.peeki(id));
CREATE TABLE r83.kkd PARTITION OF r83.kk DEFAULT;
INSERT INTO r83.kk VALUES (1);
-- a child's index over a function of a column, rebuilt by DDL of the parent
CREATE TABLE r83.ipar (id int);
CREATE TABLE r83.ikid () INHERITS (r83.ipar);
CREATE INDEX ON r83.ikid (r83x.peeki(id));
INSERT INTO r83.ikid VALUES (1);
-- a foreign key to a partitioned table whose partition's index folds the code
CREATE TABLE r83x.pref (k int PRIMARY KEY, live bool) PARTITION BY RANGE (k);
CREATE TABLE r83x.pref1 PARTITION OF r83x.pref FOR VALUES FROM (0) TO (100);
CREATE INDEX ON r83x.pref1 (k) WHERE live AND r83x.cutoff() = 0;
INSERT INTO r83x.pref VALUES (1, true);
CREATE TABLE r83.pfk (k int REFERENCES r83x.pref);
-- deferred foreign keys, both directions
CREATE TABLE r83x.dref (k int PRIMARY KEY, live bool);
CREATE INDEX ON r83x.dref (k) WHERE live AND r83x.cutoff() = 0;
INSERT INTO r83x.dref VALUES (1, true);
CREATE TABLE r83.dfk (k int REFERENCES r83x.dref DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE r83.dref2 (k int PRIMARY KEY);
INSERT INTO r83.dref2 VALUES (1), (2);
CREATE TABLE r83x.dfk2 (k int REFERENCES r83.dref2 DEFERRABLE INITIALLY DEFERRED, live bool);
CREATE INDEX ON r83x.dfk2 (k) WHERE live AND r83x.cutoff() = 0;
INSERT INTO r83x.dfk2 VALUES (1, true);
-- a cast from a user type by a user function, in an index expression
CREATE TYPE r83.mood AS ENUM ('ok', 'meh');
CREATE FUNCTION r83x.moodint(r83.mood) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'mood %', {_VAULT_ROW}; RETURN 1; END $$;
CREATE CAST (r83.mood AS int) WITH FUNCTION r83x.moodint(r83.mood);
CREATE TABLE r83.mt (m r83.mood);
CREATE INDEX ON r83.mt (((m::int)));
-- a function called by name with a column and by a cast of a constant to a type no column has
CREATE TYPE r83.mood2 AS ENUM ('ok');
CREATE FUNCTION r83x.tomood(int) RETURNS r83.mood2 IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'tomood %', {_VAULT_ROW}; RETURN 'ok'; END $$;
CREATE CAST (int AS r83.mood2) WITH FUNCTION r83x.tomood(int);
CREATE TABLE r83.cst2 (id int);
INSERT INTO r83.cst2 VALUES (1);
CREATE INDEX ON r83.cst2 (id) WHERE r83x.tomood(id) IS NOT NULL AND (1::r83.mood2) IS NOT NULL;
-- a function called by name with a column and by a cast of a constant
CREATE TABLE r83.cstx (m r83.mood);
INSERT INTO r83.cstx VALUES ('ok');
CREATE INDEX ON r83.cstx (m) WHERE r83x.moodint(m) > 0 AND ('ok'::r83.mood)::int > 0;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r83, r83x CASCADE;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r83", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _direct(pg, before: list[str], sql: str, block: bool = True, params=None) -> str:
    return planted.direct_in_block(pg, before, sql, block, params)


def _proxied(px, key: str, mode: str, before: list[str], sql: str, block: bool = True,
             params=None) -> str:  # fmt: skip
    return planted.proxied_in_block(px, key, mode, before, sql, block, params)


def _reaches(pg, before: list[str], sql: str, block: bool = True, params=None) -> str:
    return planted.reaches_directly(pg, before, sql, MARKERS, block, params)


_CE_READ = "SELECT * FROM r83.chk WHERE id > 1"

# key -> (grant, before, the probe, block, startup params, strict-xfail reason or None)
PROBES = {
    # --- the pin
    "pin-granted-function-set-config": ("tune", ["SELECT r83.tune()"], _CE_READ, True, None,
                                        None),
    "pin-trigger-set-config": ("tt", ["INSERT INTO r83.tt VALUES (1)"], _CE_READ, True, None,
                               None),
    "pin-trigger-set-config-committed": ("tt", ["INSERT INTO r83.tt VALUES (1)"], _CE_READ,
                                         False, None, None),
    "pin-set-config-direct": (
        "chk", ["SELECT set_config('constraint_exclusion', 'on', false)"], _CE_READ, True, None,
        None),
    "pin-set-local": ("chk", ["SET LOCAL constraint_exclusion = on"], _CE_READ, True, None,
                      None),
    # --- code at COMMIT
    "deferred-trigger-commit": ("dct", ["INSERT INTO r83.dct VALUES (1)"], "COMMIT", True, None,
                                None),
    "deferred-trigger-set-constraints": (
        "dct", ["INSERT INTO r83.dct VALUES (1)"], "SET CONSTRAINTS ALL IMMEDIATE", True, None,
        None),
    "deferred-trigger-named-immediate": (
        "dct", ["INSERT INTO r83.dct VALUES (1)"], "SET CONSTRAINTS r83.dct_t IMMEDIATE", True,
        None, None),
    "deferred-notice-trigger-commit": ("dctn", ["INSERT INTO r83.dctn VALUES (1)"], "COMMIT",
                                       True, None, None),
    "deferred-trigger-through-cascade-commit": (
        "dcp", ["DELETE FROM r83.dcp"], "COMMIT", True, None, None),
    "deferred-fk-commit": ("dfk", ["INSERT INTO r83.dfk VALUES (1)"], "COMMIT", True, None,
                           None),
    "deferred-fk-referenced-side": ("dref2", ["DELETE FROM r83.dref2 WHERE k = 1"], "COMMIT",
                                    True, None, None),
    # --- types made of a domain
    "domain-over-domain-column": ("ddt", [], "INSERT INTO r83.ddt VALUES (1, 1)", True, None,
                                  None),
    "array-of-domain-column": ("arr", [], "INSERT INTO r83.arr VALUES (1, '{1}')", True, None,
                               None),
    "composite-of-domain-column": ("ctab", [], "INSERT INTO r83.ctab VALUES (1, ROW(1))", True,
                                   None, None),
    "range-over-domain-column": ("rtab", [], "INSERT INTO r83.rtab VALUES (1, '[1,2)')", True,
                                 None, None),
    "array-of-domain-update": ("arr", [], "UPDATE r83.arr SET a = '{2}'", True, None, None),
    "array-of-domain-argument": ("farr", [], "SELECT r83.farr('{1}')", True, None, None),
    "cast-function-in-index": ("mood", [], "INSERT INTO r83.mt VALUES ('ok')", True, None,
                               None),
    # --- DDL
    "domain-validate-constraint": (
        "vdom", [], "ALTER DOMAIN r83.vdom VALIDATE CONSTRAINT vc", True, None, None),
    "domain-add-constraint-casts-stored-values": (
        "tdom", [], "ALTER DOMAIN r83.tdom ADD CONSTRAINT tc CHECK (VALUE::int > 0)", True,
        None, None),
    "add-column-of-domain": (
        "plain", [], "ALTER TABLE r83.plain ADD COLUMN d r83.pdom", True, None, None),
    "cluster-index-over-function": ("cix", [], "CLUSTER r83.cix USING cix_i", True, None, None),
    "vacuum-full-index-over-function": ("cix", [], "VACUUM FULL r83.cix", False, None, None),
    "alter-type-parent-rewrites-child-check": (
        "cpar", [], "ALTER TABLE r83.cpar ALTER COLUMN id TYPE bigint", True, None, None),
    # --- foreign keys
    "fk-on-update-cascade-check": ("up", [], "UPDATE r83.up SET k = 2", True, None, None),
    "fk-on-update-cascade-check-granted": ("upw", [], "UPDATE r83.up SET k = 2", True, None,
                                           None),
    "fk-cascaded-table-written-directly": ("upw", [], "UPDATE r83.upc SET k = k", True, None,
                                           None),
    "fk-on-delete-cascade-trigger-granted": ("dlw", [], "DELETE FROM r83.dl", True, None, None),
    "alter-type-partitioned-rewrites-partition-check": (
        "ppar", [], "ALTER TABLE r83.ppar ALTER COLUMN v TYPE bigint", True, None, None),
    "column-bound-call-and-operator-in-index": ("opx", [], "SELECT * FROM r83.opx", True, None,
                                                None),
    "column-bound-call-and-operator-in-child-check": (
        "opx", [], "SELECT * FROM r83.opp WHERE id > 1", True, None, None),
    "column-bound-call-and-cast-in-index": ("opx", [], "SELECT * FROM r83.cstx", True, None,
                                            None),
    "column-bound-call-and-cast-of-constant": ("opx", [], "SELECT * FROM r83.cst2", True, None,
                                               None),
    "partition-key-default-partition-scan": (
        "kk", [], "CREATE TABLE r83.kk2 PARTITION OF r83.kk FOR VALUES FROM (100) TO (200)", True,
        None, None),
    "parent-rewrite-rebuilds-child-index": (
        "ipar", [], "ALTER TABLE r83.ipar ADD COLUMN z uuid DEFAULT gen_random_uuid()", True,
        None, None),
    "fk-to-partitioned-table": ("pfk", [], "INSERT INTO r83.pfk VALUES (1)", True, None, None),
}  # fmt: skip


def _cases():
    return planted.mode_cases(PROBES, MODES)


@pytest.mark.parametrize("key", list(PROBES))
def test_r83_reaches_directly(pg, px, key):
    _grant, before, sql, block, params, _why = PROBES[key]
    _reaches(pg, before, sql, block, params)


@pytest.mark.parametrize(("key", "mode"), _cases())
def test_r83_probe(px, key, mode):
    grant, before, sql, block, params, _why = PROBES[key]
    got = _proxied(px, grant, mode, before, sql, block, params)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# --- the pin at login: a startup parameter or ``options`` asking for constraint_exclusion = on

STARTUP = {
    "options-c": {"options": "-c constraint_exclusion=on"},
    "options-dashes": {"options": "-c constraint-exclusion=on"},
    "options-long": {"options": "--constraint_exclusion=on"},
    "options-upper": {"options": "-c CONSTRAINT_EXCLUSION=on"},
    "parameter": {"constraint_exclusion": "on"},
    "parameter-upper": {"Constraint_Exclusion": "on"},
}


@pytest.mark.parametrize("key", list(STARTUP))
def test_r83_startup_reaches_directly(pg, px, key):
    _reaches(pg, [], _CE_READ, True, STARTUP[key])


@pytest.mark.parametrize("key", list(STARTUP))
@pytest.mark.parametrize("mode", MODES)
def test_r83_startup_pin_holds(px, key, mode):
    """Refused at login, or the pin wins (the proxy's parameter comes last)."""
    try:
        got = _proxied(px, "chk", mode, [], _CE_READ, True, STARTUP[key])
    except r.RawError as exc:
        assert "constraint_exclusion" in str(exc).lower(), exc
        return
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# --- transparency of the pin

_CHECKS_ALL_DDL = (
    "TRANSPARENCY REGRESSION (REFUSED): check_functions is asked of every DDL of the relation, "
    "also DDL that checks, recomputes or rebuilds no row (ADD COLUMN without a default, "
    "CREATE INDEX on a plain column)"
)
# key -> (grant, statement, block, what it answers, strict-xfail reason or None)
TRANSPARENT = {
    "add-column-no-rewrite": ("vck", "ALTER TABLE r83.vck ADD COLUMN note text", True,
                              "ALTER TABLE", None),  # (session 37: rows_idle)
    "create-index-plain-column": ("vck", "CREATE INDEX ON r83.vck (id)", True, "CREATE INDEX",
                                  None),  # (session 37: rows_idle)
    "fk-to-column-function-index": ("efk", "INSERT INTO r83.efk VALUES (1)", True, "INSERT 0 1",
                                    None),
    "reset-all": ("chk", "RESET ALL", True, "RESET", None),
    "discard-all": ("chk", "DISCARD ALL", False, "DISCARD ALL", None),
    "reset-one": ("chk", "RESET constraint_exclusion", True, "RESET", None),  # (session 37)
}  # fmt: skip


@pytest.mark.parametrize("key", list(TRANSPARENT))
def test_r83_transparent_directly(pg, px, key):
    _grant, sql, block, want, _why = TRANSPARENT[key]
    got = _direct(pg, [], sql, block)
    assert want in got and not planted.is_error(got) and not _shown(got), got[-300:]


def _transparent_cases():
    return [
        pytest.param(k, mode, id=f"{k}-{mode}", marks=[] if v[-1] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in TRANSPARENT.items()
        for mode in MODES
    ]  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), _transparent_cases())
def test_r83_transparent(px, key, mode):
    grant, sql, block, want, _why = TRANSPARENT[key]
    got = _proxied(px, grant, mode, [], sql, block)
    assert want in got and not planted.is_error(got), ("REFUSED", key, mode, got[-400:])


# --- the pin after RESET ALL / DISCARD ALL, the database saying constraint_exclusion = on


@pytest.mark.parametrize("reset", ["RESET ALL", "DISCARD ALL"])
@pytest.mark.parametrize("mode", MODES)
def test_r83_pin_survives_reset(pg, px, reset, mode):
    """``RESET ALL`` and ``DISCARD ALL`` return a setting to its startup value: the pin's
    ``partition``, not the database's ``on`` (directly, with no pin, the read folds the
    table's own CHECK)."""
    try:
        pg.psql("ALTER DATABASE app SET constraint_exclusion = on;", db="app")
        _reaches(pg, [reset], _CE_READ, False)
        got = _proxied(px, "chk", mode, [reset], _CE_READ, False)
        # (this database has code that may turn constraint_exclusion on, r83.tune: the
        # table's own CHECK counts since the fix, so the read may be refused for it)
        assert not _shown(got), got[-400:]
        assert not planted.is_error(got) or "rule scope.execute" in got, got[-400:]
    finally:
        pg.psql("ALTER DATABASE app RESET constraint_exclusion;", db="app")
