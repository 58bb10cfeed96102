"""Red-team round 82: attacks on round 81's fixes as families (time-boxed; the server the
judge).

Method (round 81's): each probe first runs directly as ``pgwitness`` (the proxy's upstream
login, the schema's owner) in a block rolled back, where it must show the marker
(``RuntimeError`` otherwise); then through a proxy started after the planting, in a session
of its own on a fresh upstream backend (``planted.renew``), as a simple Query, an extended
unnamed statement and a named prepared statement; every byte the proxy sent is searched for
the marker (``planted.shows``). Leaks and transparency regressions are strict xfails
asserting the safe outcome; held families are plain tests.

Planted: ``r82x.vault`` (``ROW``: outside every grant); ``r82x.cutoff()`` (IMMUTABLE
PL/pgSQL, ``RAISE NOTICE 'cutoff %', <ROW>``), ``r82x.peek(int)`` (VOLATILE, the same) and
``r82x.peeki(int)`` (IMMUTABLE, the same), all outside every grant; the domain ``r82.dom``
(``CHECK (r82x.peek(VALUE))``); the tables each probe names (SETUP below).

Leaks (strict xfails; every mode):

1. **A CHECK calling a non-immutable SQL function the planner inlines** (``rpar``: read
   scopes only). ``r82.kid`` (a child of ``r82.par``) has ``CHECK (id > r82.volwrap())``,
   ``volwrap`` a VOLATILE SQL function ``SELECT r82x.cutoff()`` (also STABLE: ``kid2``; and
   ``CHECK (r82.volcmp(id))``, ``SELECT $1 > r82x.cutoff()``: ``kid3``). Constraint exclusion
   runs ``eval_const_expressions`` on the child's CHECK, which inlines the SQL function
   (``inline_function``: any volatility, the body being a single SELECT) and then folds the
   IMMUTABLE ``cutoff()`` of constant arguments: ``SELECT * FROM r82.par WHERE id > 1``
   answers with ``NOTICE cutoff <ROW>``. The same through DDL a ddl scope alone allows
   (``ddq``: ``ddl:r82.dq,r82.dq1,r82.dqd``): ``CREATE TABLE r82.dq1 PARTITION OF r82.dq
   FOR VALUES FROM (0) TO (10)`` checks the default partition ``r82.dqd`` (``CHECK (id >
   r82.volwrap())``), folding its CHECK (``check_default_partition_contents``); held with
   the IMMUTABLE function written directly (``r82.dpd``: ``scope.execute``). Cause:
   ``_PLAN_CODE``'s CHECK branch keeps only ``provolatile = 'i'`` functions of the CHECK's
   own pg_depend rows; the SQL function's body records none (not BEGIN ATOMIC). Fix (the family: code inlining reaches): count
   every user-written SQL-language function a child's (or, under ``constraint_exclusion =
   on``, any) CHECK calls, whatever its volatility (``prolang = sql``: what
   ``inline_function`` may expand), with the immutable ones of other languages; the
   execute scope on the SQL function then covers what its body runs, as for an index's
   (by design and consistent: a grant with ``execute:`` on an IMMUTABLE SQL function whose
   body calls ``cutoff()`` hears its NOTICE on a direct call and on a read of a table whose
   partial index calls it; checked, no test).

2. **A domain's CHECK reached through a cast in a relation's, view's or function's
   definition** (pg_depend records the type, ``pg_type``, not the domain's functions;
   ``_CALLS_CTE`` follows ``pg_proc``, ``pg_operator`` and ``pg_cast`` only). With read and
   write of the table: ``INSERT`` into ``r82.dix`` (an index on ``((id::r82.dom)::int))``),
   ``r82.dck`` (``CHECK ((id::r82.dom) IS NOT NULL)``), ``r82.dgen`` (a generated column
   over the cast), ``r82.ddef`` (a DEFAULT over it), ``r82.dpk`` (partitioned by it): the
   server's ``NOTICE peek <ROW>`` reaches the client, not withheld (TRIGGERED_SQL does not
   see these as code). With ``ddl:r82.dix`` alone (no read, no write): ``ALTER TABLE
   r82.dix SET UNLOGGED`` rebuilds the index, the same NOTICE (DDL's messages are never
   withheld). Reads: ``SELECT * FROM r82.vd`` (a view ``SELECT id, ((id::r82.dom)::int)``
   over the readable ``r82.pub``), ``r82.vd2`` (the view's column itself of the domain:
   ``(id::r82.dom) AS d``; a relation's column types count its casts, not a domain's CHECK)
   and ``r82.vdw`` (the cast in its WHERE): the NOTICE per row (VIEW_FUNCTIONS_SQL follows
   functions only). A call: ``SELECT r82.gd()`` (``execute:r82.gd`` alone; its argument's
   DEFAULT ``((1::r82.dom)::int)``: ARGUMENT_DEFAULTS_SQL follows functions only). Held: the same cast in a row security
   policy (``r82.rls``, FORCE: POLICY_EXPRS_SQL deparses the policy and the classifier sees
   the type). Fix (the family): in ``_CALLS_CTE`` treat a dependency on a user type
   (``refclassid = pg_type``) as a call of each function a value of the type runs
   (``_USERTYPE``'s map: a domain's CHECKs and DEFAULT, over domains, arrays, composites,
   ranges), so every query built on ``deps`` (``_PLAN_CODE``, TRIGGERED_SQL's defaults,
   generated columns, CHECKs and indexes, VIEW_FUNCTIONS_SQL, ARGUMENT_DEFAULTS_SQL) sees it.

3. **DDL validating rows runs CHECKs the relation's list leaves out** (``valr``: ``read:``
   and ``ddl:r82.val``). ``ALTER TABLE r82.val VALIDATE CONSTRAINT val_c`` (``CHECK
   (r82x.peek(id)) NOT VALID``, a VOLATILE function) runs the CHECK on every row: ``NOTICE
   peek <ROW>``. The round-81 fix decides DDL on the relation's plan list, which holds a
   CHECK's functions only where the planner folds them (immutable, children). Fix: DDL that
   checks rows (VALIDATE CONSTRAINT, ALTER COLUMN TYPE re-adding CHECKs, ADD CONSTRAINT over
   existing rows, ATTACH PARTITION) is decided on the relation's write-side code too (every
   CHECK's, default's, generated column's, domain column's functions: what TRIGGERED_SQL
   reads), as calls needing the execute scope (DDL's messages being never withheld).

4. **Foreign keys followed one step only** (``fk3``: read and write of ``r82.fa``, ``fb``,
   ``fc``, no execute scope). ``r82.fb`` references ``r82.fa`` and ``r82.fc`` references
   ``r82.fb``, both ``ON DELETE CASCADE``; ``r82.fc`` has a partial index ``WHERE k >
   r82x.cutoff()``. ``DELETE FROM r82.fa`` cascades to ``fb``, whose cascade plans a DELETE
   on ``fc``, folding its predicate: ``NOTICE cutoff <ROW>``, not withheld (``fk_code``
   puts ``fb``, one step from ``fc``, in TRIGGERED, not ``fa``; ``DELETE FROM r82.fb``: held,
   withheld). And DDL re-validating a foreign key (``ddlfb``: ``ddl:`` and ``read:r82.fb``):
   ``ALTER TABLE r82.fb ALTER COLUMN k TYPE bigint`` rewrites ``fb`` and re-checks ``fc``'s
   key (``RI_Initial_Check`` plans a join over ``fc``): the same NOTICE. Fix: close
   TRIGGERED's ``up`` over foreign keys whose actions write (CASCADE, SET NULL, SET DEFAULT:
   a relation referenced by one in ``up`` through such an action is in ``up``), and decide
   DDL that rewrites or re-validates a relation's keys (ALTER COLUMN TYPE of a referenced or
   referencing column, VALIDATE of a foreign key) on the plan lists of the relations on the
   other side of its foreign keys.

5. **A parent's partition key runs in its partition's own writes** (``kp1``: read and
   write of ``r82.kp1`` only; ``hp``: of ``r82.hp`` and its partitions). ``r82.kp`` is
   partitioned ``BY RANGE ((id + r82x.cutoff()))``; ``INSERT INTO r82.kp1 VALUES (6)`` and
   ``UPDATE r82.kp1 SET id = id`` (straight into the partition) check the partition
   constraint, the parent's key expression, folding ``cutoff()``: ``NOTICE cutoff <ROW>``,
   not withheld. ``r82.hp`` is partitioned ``BY HASH (id r82.hops)``, an operator class
   (made by a superuser, owned by the schema owner) whose extended hash function is
   ``r82x.hx`` (PL/pgSQL, the same NOTICE): ``INSERT INTO r82.hp0 VALUES (5)`` runs it
   (``satisfies_hash_partition``); the same read through the parent (pruning: ``SELECT *
   FROM r82.hp WHERE id = 5``) is held (``scope.execute``: RELATION_OPCLASS_SQL). Cause:
   ``_PLAN_RUNS`` and RELATION_OPCLASS_SQL carry a relation's code up to its ancestors, never
   down: a partition's own list lacks the key code of the tables it is a partition of. Fix:
   also propagate a partitioned table's key code (its key expressions' functions and its
   key operator classes' support functions) down to every partition, for writes of the
   partition (INSERT, UPDATE, COPY FROM, MERGE) and DDL that checks its rows.

6. **Stale snapshot** (``stl``: ``read:r82.stl``). After the proxy's load, another session
   (directly, as the owner) runs ``CREATE INDEX ... ON r82.stl (id) WHERE id >
   r82x.cutoff()``; the agent's next ``SELECT * FROM r82.stl`` answers with the NOTICE. The
   documented limitation ("DDL run outside the proxy is seen at the next reload",
   docs/policy.md) applied to the new family; a fix would need a cheap check of the
   catalog's version per statement (e.g. an event trigger bumping a counter, or comparing
   ``pg_class``/``pg_index`` xmin maxima) before deciding on plan lists.

7. **``constraint_exclusion`` read on the loader's kept login** (``tmp``: ``read:r82.chk``).
   ``_PLAN_CODE`` counts every relation's own immutable CHECK where
   ``current_setting('constraint_exclusion') = 'on'`` in the loader's session, a login it
   keeps for ``LINK_IDLE_SECONDS`` after each load. The DBA (directly) runs ``ALTER DATABASE
   app SET constraint_exclusion = on`` right after a load; the next load (DDL elsewhere asks
   for one; the test calls ``refresh``) reuses that login, which still says ``partition``,
   while every new upstream backend gets ``on``: ``SELECT id FROM r82.chk WHERE id > 1``
   (``CHECK (id > r82x.cutoff())``, a table's own) answers with the NOTICE. The control (a
   load on a login of its own after the change: ``scope.execute``) holds. The same for ``ALTER
   ROLE ... [IN DATABASE] SET`` of the upstream login, or of a grant's own role (``db_role``),
   which the loader never logs in as. Fix: pin ``constraint_exclusion`` for every upstream
   session (a startup parameter, as ``search_path`` is pinned) to the value the loader
   assumes (``partition``), instead of reading the loader's session.

Transparency regressions (strict xfails, labelled):

* **WITHHELD**: ``fkx`` (read of ``r82.fkt`` and ``r82.ref``, write of ``r82.fkt``,
  ``execute:r82x.cutoff``: everything the foreign key's check runs): ``INSERT INTO r82.fkt
  VALUES ('zz')`` gets ``message withheld`` instead of the server's 23503 (``is not present
  in table "ref"``). ``fk_code`` puts ``fkt`` in TRIGGERED whatever the grant. Fix: merge the
  referenced relations' plan lists into the referencing relation's write requirements
  (execute scopes), withholding only where the grant lacks them.
* **REFUSED** (``scope.execute``), statements that run none of the code (each shown
  directly: no NOTICE): ``eix`` (``read:r82.eix,r82.epar,r82.ekid``): ``SELECT v FROM
  r82.eix WHERE id = 1`` (an index on ``r82x.peeki(id)``: a function of a column is never
  folded), ``SELECT id FROM r82.epar WHERE id > 1`` (a child's ``CHECK (r82x.peeki(id) >
  0)``); ``kc`` (``read:r82.parc,r82.kidc write:r82.parc``, ``r82.kidc`` a child with
  ``CHECK (id > r82x.cutoff())``): ``SELECT id FROM r82.kidc WHERE id > 1`` (a child read
  directly: constraint exclusion takes children read through their parent only),
  ``SELECT count(*) FROM ONLY r82.parc WHERE id > 1`` (no child planned), ``INSERT INTO
  r82.parc VALUES (6)`` (an inheritance parent, not partitioned: nothing routes).
  ``_PLAN_CODE`` counts every function of an index's expressions or a child's CHECK, on
  the child itself and every ancestor, for every statement. Fix: for reads, count only
  calls the planner can fold (every argument free of columns, after inlining SQL
  functions: the deparsed expression read by ``pgparse``), a child's CHECK only for a
  statement reaching it through an ancestor without ONLY (or where ``constraint_exclusion
  = on``), and propagate to an inheritance parent's inserts only for partitioned tables;
  keep the full list for writes of the relation itself and index-building DDL, which
  evaluate the expressions on rows. (Also stricter since round 81, by its choice: a write
  of a table with an index over a user function of a column now needs the execute scope
  where its messages were withheld before.)

Transparency held (plain tests): a materialized view over ``r82.ixp`` reads (its query is
not planned by a read, and the loader does not pass the base's list on to it).

Held (plain tests): ``ALTER TABLE ... ATTACH PARTITION`` (which folds the attached table's
own CHECKs: ``deny.unknown``); ``VALIDATE CONSTRAINT`` with ``ddl`` alone (needs read);
``CREATE TEMP TABLE ... (LIKE r82.chk INCLUDING CONSTRAINTS) INHERITS (pg_temp.r82_tp)`` then
a read of the parent (LIKE with CONSTRAINTS needs write of the source); one-level cascades
(withheld); ``TRUNCATE ... CASCADE`` (CASCADE blanked: the server's 0A000); ``ALTER TABLE
r82.fd ADD FOREIGN KEY ... REFERENCES r82.ref`` (needs read of ``r82.ref`` and then the
execute scope on its plan code); argument defaults with VARIADIC and named notation (every
call counts); the domain cast in a row security policy; a function taking a domain
(``r82.fdomp(r82.dom)``), called or in an index, with ``execute:`` on it (its parameter's
type counts); an operator taking a domain; a domain column's INSERT (withheld); a view's
column DEFAULT (withheld); MERGE, ``ON CONFLICT`` and an insert through an auto-updatable
view into a table whose plan runs code, plain ``EXPLAIN UPDATE``, ``DECLARE CURSOR``
(``scope.execute``); a new partition beside a default partition whose IMMUTABLE CHECK runs
the code (``scope.execute``); ANALYZE and REINDEX of a table whose index evaluates a domain
or a user function (refused). Checked directly, nothing to probe: column notation does
not expand argument defaults (``t.gc``: 42703); an operator's RESTRICT/JOIN estimator,
SUPPORT, typanalyze (``internal`` arguments), a range's canonical (a shell type's) and a
base type's I/O (a superuser's base type) cannot be SQL or PL/pgSQL: C, outside
``_WRITTEN``; a table rewrite by ``ADD COLUMN ... DEFAULT gen_random_uuid()`` re-checks no
existing CHECK, generated column or domain column; ``EXPLAIN INSERT ... ON CONFLICT`` does
not fold a non-unique partial index's predicate; a direct read of a partition does not
check its partition constraint.

Fixed after the round (session 35, the coordinator; the probes above are plain tests now):
a child's CHECK counts at its parent, with its SQL functions of any volatility (inlined,
then folded); a partitioned table's key (expressions and operator classes) counts for every
partition's own statements; the proxy pins ``constraint_exclusion = partition`` in every
enforced session's startup (no table's own CHECK is folded, whatever the database or the
loader's kept login says); what depends on a user type runs the type's functions
(``TYPE_DEPENDENTS_SQL``: indexes, CHECKs, defaults and generated columns, partition keys,
views, argument defaults); a write or DDL of a relation needs the execute scope on what its
foreign keys' queries plan on the relations they link it with, through cascades
(``Snapshot.fk_code``: the granted case keeps the server's 23503, no longer withheld); DDL
of a relation needs it on its CHECKs' and generated columns' functions of any volatility
(``Snapshot.check_functions``: VALIDATE CONSTRAINT). Left as strict xfails: the stale
snapshot (documented: DDL outside the proxy is seen at the next load) and the transparency
of reads whose plans never run the code where the policy does not look at the statement's
shape (``ONLY`` the parent, an insert into an inheritance parent). An index or a child's
CHECK over a function of a column is transparent again: the loader reads each definition
as PostgreSQL deparses it and leaves out a function other than a SQL one that it calls only
with a column among the arguments (``pgparse.column_bound_calls``), which is never folded.
"""

from __future__ import annotations

import time

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(240)

AGENT = "r82-bot"
ROW = "R82-ROW-7c2e"  # r82x.vault, outside every grant
PUB = "R82-PUB-ok"  # r82.pub (readable)
EIX = "R82-EIX-ok"  # r82.eix's row
EKID = "8282"  # r82.ekid's row
MARKERS = (ROW,)
SCOPES = "read:r82.pub write:r82.pub"
GRANTS = {
    "rpar": "read:r82.par,r82.kid,r82.par2,r82.kid2,r82.par3,r82.kid3",
    "att": "ddl:r82.pt,r82.att",
    "val": "ddl:r82.val",
    "valr": "read:r82.val ddl:r82.val",
    "dgen": "read:r82.dgen write:r82.dgen",
    "ddef": "read:r82.ddef write:r82.ddef",
    "dpk": "read:r82.dpk,r82.dpk1 write:r82.dpk,r82.dpk1",
    "ddlix": "ddl:r82.dix",
    "egv": "execute:r82.gv,r82.gn",
    "vd": "read:r82.vd,r82.vdw,r82.vd2,r82.pub",
    "egd": "execute:r82.gd",
    "rls": "read:r82.rls",
    "tr3": "truncate:r82.fa,r82.fb,r82.fc read:r82.fa,r82.fb,r82.fc",
    "ddlfb": "ddl:r82.fb read:r82.fb",
    "ddlfd": "ddl:r82.fd read:r82.fd",
    "ddlfdr": "ddl:r82.fd read:r82.fd,r82.ref",
    "wixp": "read:r82.ixp,r82.vixp write:r82.ixp,r82.vixp",
    "vw": "read:r82.vw,r82.vb write:r82.vw,r82.vb",
    "dcol": "read:r82.dcol2 write:r82.dcol2",
    "dop": "read:r82.pub",
    "rixp": "read:r82.ixp",
    "kp1": "read:r82.kp1 write:r82.kp1",
    "hp": "read:r82.hp,r82.hp0,r82.hp1 write:r82.hp,r82.hp0,r82.hp1",
    "ddp": "ddl:r82.dp,r82.dp1,r82.dpd",
    "ddq": "ddl:r82.dq,r82.dq1,r82.dqd",
    "mx": "read:r82.dix,r82.eix write:r82.dix,r82.eix ddl:r82.dix,r82.eix",
    "kc": "read:r82.parc,r82.kidc write:r82.parc",
    "mv": "read:r82.mv",
    "fdy": "read:r82.fdy write:r82.fdy execute:r82.fdomp",
    "dix": "read:r82.dix write:r82.dix",
    "dck": "read:r82.dck write:r82.dck",
    "fk3": "read:r82.fa,r82.fb,r82.fc write:r82.fa,r82.fb,r82.fc",
    "tmp": "read:r82.chk",
    "stl": "read:r82.stl",
    "fkx": "read:r82.fkt,r82.ref write:r82.fkt execute:r82x.cutoff",
    "eix": "read:r82.eix,r82.epar,r82.ekid",
}
MODES = ["simple", "extended", "prepared"]
_VAULT_ROW = "(SELECT v FROM r82x.vault WHERE k = 'row')"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r82; CREATE SCHEMA r82x;
CREATE TABLE r82x.vault (k text PRIMARY KEY, v text);
INSERT INTO r82x.vault VALUES ('row', '{ROW}');
CREATE TABLE r82.pub (id int PRIMARY KEY, v text);
INSERT INTO r82.pub VALUES (1, '{PUB}');
CREATE FUNCTION r82x.cutoff() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'cutoff %', {_VAULT_ROW}; RETURN 0; END $$;
CREATE FUNCTION r82x.peek(int) RETURNS bool VOLATILE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peek %', {_VAULT_ROW}; RETURN true; END $$;
CREATE FUNCTION r82x.peeki(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peeki %', {_VAULT_ROW}; RETURN $1; END $$;
-- a child's CHECK through a VOLATILE / STABLE SQL function the planner inlines
CREATE FUNCTION r82.volwrap() RETURNS int VOLATILE LANGUAGE sql AS $$ SELECT r82x.cutoff() $$;
CREATE FUNCTION r82.stwrap() RETURNS int STABLE LANGUAGE sql AS $$ SELECT r82x.cutoff() $$;
CREATE FUNCTION r82.volcmp(int) RETURNS bool VOLATILE LANGUAGE sql
  AS $$ SELECT $1 > r82x.cutoff() $$;
CREATE TABLE r82.par (id int);
CREATE TABLE r82.kid (CHECK (id > r82.volwrap())) INHERITS (r82.par);
INSERT INTO r82.kid VALUES (5);
CREATE TABLE r82.par2 (id int);
CREATE TABLE r82.kid2 (CHECK (id > r82.stwrap())) INHERITS (r82.par2);
INSERT INTO r82.kid2 VALUES (5);
CREATE TABLE r82.par3 (id int);
CREATE TABLE r82.kid3 (CHECK (r82.volcmp(id))) INHERITS (r82.par3);
INSERT INTO r82.kid3 VALUES (5);
-- ATTACH PARTITION folds the attached table's own CHECKs (not a child yet)
CREATE TABLE r82.pt (id int) PARTITION BY RANGE (id);
CREATE TABLE r82.att (id int CHECK (id > r82x.cutoff()));
INSERT INTO r82.att VALUES (5);
-- VALIDATE CONSTRAINT runs a (volatile) CHECK on every row
CREATE TABLE r82.val (id int);
INSERT INTO r82.val VALUES (5);
ALTER TABLE r82.val ADD CONSTRAINT val_c CHECK (r82x.peek(id)) NOT VALID;
-- a domain's CHECK reached through an index expression and a CHECK (pg_type, not pg_proc)
CREATE DOMAIN r82.dom AS int CHECK (r82x.peek(VALUE));
CREATE TABLE r82.dix (id int);
CREATE INDEX ON r82.dix (((id::r82.dom)::int));
INSERT INTO r82.dix VALUES (1);
CREATE TABLE r82.dck (id int CHECK ((id::r82.dom) IS NOT NULL));
CREATE FUNCTION r82.fdomp(d r82.dom) RETURNS int IMMUTABLE LANGUAGE plpgsql
  AS $$ BEGIN RETURN d; END $$;
CREATE TABLE r82.ixp (id int PRIMARY KEY, v text);
CREATE INDEX ON r82.ixp (id) WHERE id > r82x.cutoff();
CREATE VIEW r82.vixp AS SELECT id, v FROM r82.ixp;
CREATE TABLE r82.vb (id int, v text);
CREATE VIEW r82.vw AS SELECT id, v FROM r82.vb;
ALTER VIEW r82.vw ALTER COLUMN v SET DEFAULT (r82x.peek(1))::text;
CREATE TABLE r82.dcol2 (id int, d r82.dom);
CREATE FUNCTION r82.domeq(r82.dom, int) RETURNS bool IMMUTABLE LANGUAGE sql
  AS $$ SELECT $1::int = $2 $$;
CREATE OPERATOR r82.=== (LEFTARG = r82.dom, RIGHTARG = int, FUNCTION = r82.domeq);
CREATE TABLE r82.dp (id int) PARTITION BY RANGE (id);
CREATE TABLE r82.dpd PARTITION OF r82.dp (CHECK (id > r82x.cutoff())) DEFAULT;
INSERT INTO r82.dp VALUES (50);
CREATE TABLE r82.dq (id int) PARTITION BY RANGE (id);
CREATE TABLE r82.dqd PARTITION OF r82.dq (CHECK (id > r82.volwrap())) DEFAULT;
INSERT INTO r82.dq VALUES (50);
CREATE FUNCTION r82x.hx(int, int8) RETURNS int8 IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'hash %', {_VAULT_ROW}; RETURN hashint4extended($1, $2); END $$;
RESET ROLE;
CREATE OPERATOR CLASS r82.hops FOR TYPE int USING hash AS OPERATOR 1 =,
  FUNCTION 2 r82x.hx(int, int8);
ALTER OPERATOR FAMILY r82.hops USING hash OWNER TO pgwitness;
ALTER OPERATOR CLASS r82.hops USING hash OWNER TO pgwitness;
SET ROLE pgwitness;
CREATE TABLE r82.hp (id int) PARTITION BY HASH (id r82.hops);
CREATE TABLE r82.hp0 PARTITION OF r82.hp FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE r82.hp1 PARTITION OF r82.hp FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE r82.kp (id int) PARTITION BY RANGE ((id + r82x.cutoff()));
CREATE TABLE r82.kp1 PARTITION OF r82.kp FOR VALUES FROM (0) TO (100);
INSERT INTO r82.kp VALUES (5);
INSERT INTO r82.ixp VALUES (1, 'R82-MV-ok');
CREATE MATERIALIZED VIEW r82.mv AS SELECT id, v FROM r82.ixp;
CREATE TABLE r82.parc (id int);
CREATE TABLE r82.kidc (CHECK (id > r82x.cutoff())) INHERITS (r82.parc);
INSERT INTO r82.kidc VALUES (5);
CREATE TABLE r82.fdy (id int);
CREATE INDEX ON r82.fdy (r82.fdomp(id));
CREATE TABLE r82.dgen (id int, g int GENERATED ALWAYS AS ((id::r82.dom)::int) STORED);
CREATE TABLE r82.ddef (id int, d int DEFAULT ((7::r82.dom)::int));
CREATE TABLE r82.dpk (id int) PARTITION BY RANGE (((id::r82.dom)::int));
CREATE TABLE r82.dpk1 PARTITION OF r82.dpk FOR VALUES FROM (0) TO (100);
-- a foreign-key cascade two levels down into a table whose plan runs code
CREATE TABLE r82.fa (k int PRIMARY KEY);
CREATE TABLE r82.fb (k int PRIMARY KEY REFERENCES r82.fa ON DELETE CASCADE);
CREATE TABLE r82.fc (k int REFERENCES r82.fb ON DELETE CASCADE);
INSERT INTO r82.fa VALUES (1); INSERT INTO r82.fb VALUES (1); INSERT INTO r82.fc VALUES (1);
CREATE INDEX ON r82.fc (k) WHERE k > r82x.cutoff();
-- a table's own CHECK (not folded on a direct read), copied by LIKE
CREATE TABLE r82.chk (id int CHECK (id > r82x.cutoff()));
INSERT INTO r82.chk VALUES (5);
-- stale snapshot: a plain table; the index comes later, directly
CREATE TABLE r82.stl (id int);
INSERT INTO r82.stl VALUES (1);
-- transparency: a foreign key to a table whose plan runs code, the code granted
CREATE TABLE r82.ref (k text PRIMARY KEY, live bool);
INSERT INTO r82.ref VALUES ('a', true);
CREATE INDEX ON r82.ref (k) WHERE live AND r82x.cutoff() = 0;
CREATE TABLE r82.fkt (k text REFERENCES r82.ref (k));
CREATE TABLE r82.fd (k text);
INSERT INTO r82.fd VALUES ('a');
-- transparency: user functions over columns (never folded on a read)
CREATE TABLE r82.eix (id int, v text);
INSERT INTO r82.eix VALUES (1, '{EIX}');
CREATE INDEX ON r82.eix (r82x.peeki(id));
CREATE TABLE r82.epar (id int);
CREATE TABLE r82.ekid (CHECK (r82x.peeki(id) > 0)) INHERITS (r82.epar);
INSERT INTO r82.ekid VALUES ({EKID});
-- argument defaults: VARIADIC, named notation
CREATE FUNCTION r82.gv(a int DEFAULT r82x.cutoff(), VARIADIC b int[] DEFAULT '{{}}') RETURNS int
  LANGUAGE sql AS $$ SELECT $1 $$;
CREATE VIEW r82.vd AS SELECT id, ((id::r82.dom)::int) AS d FROM r82.pub;
CREATE VIEW r82.vd2 AS SELECT id, (id::r82.dom) AS d FROM r82.pub;
CREATE VIEW r82.vdw AS SELECT id FROM r82.pub WHERE (id::r82.dom) IS NOT NULL;
CREATE FUNCTION r82.gd(a int DEFAULT ((1::r82.dom)::int)) RETURNS int
  LANGUAGE sql AS $$ SELECT $1 $$;
CREATE TABLE r82.rls (id int);
INSERT INTO r82.rls VALUES (1);
ALTER TABLE r82.rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE r82.rls FORCE ROW LEVEL SECURITY;
CREATE POLICY rls_p ON r82.rls USING ((id::r82.dom) IS NOT NULL);
CREATE FUNCTION r82.gn(a int DEFAULT r82x.cutoff(), b int DEFAULT 0) RETURNS int
  LANGUAGE sql AS $$ SELECT $1 + $2 $$;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r82, r82x CASCADE;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r82", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _direct(pg, before: list[str], sql: str) -> str:
    return planted.direct_in_block(pg, before, sql)


def _proxied(px, key: str, mode: str, before: list[str], sql: str) -> str:
    return planted.proxied_in_block(px, key, mode, before, sql)


def _reaches(pg, before: list[str], sql: str) -> str:
    return planted.reaches_directly(pg, before, sql, MARKERS)


def _refused(got: str) -> bool:
    return "C42501" in got and "pgwitness:" in got


_TEMP_LIKE = [
    "CREATE TEMP TABLE r82_tp (id int)",
    "CREATE TEMP TABLE r82_k (LIKE r82.chk INCLUDING CONSTRAINTS) INHERITS (pg_temp.r82_tp)",
]


# key -> (grant, before, the probe, strict-xfail reason or None: held)
PROBES = {
    "check-volatile-sql-wrapper": ("rpar", [], "SELECT * FROM r82.par WHERE id > 1", None),
    "check-stable-sql-wrapper": ("rpar", [], "SELECT * FROM r82.par2 WHERE id > 1", None),
    "check-volatile-sql-predicate": ("rpar", [], "SELECT * FROM r82.par3 WHERE id > 1", None),
    "default-partition-check": (
        "ddp", [], "CREATE TABLE r82.dp1 PARTITION OF r82.dp FOR VALUES FROM (0) TO (10)", None,
    ),
    "default-partition-check-sql-wrapper": (
        "ddq", [], "CREATE TABLE r82.dq1 PARTITION OF r82.dq FOR VALUES FROM (0) TO (10)", None,
    ),
    "attach-partition-own-check": (
        "att", [], "ALTER TABLE r82.pt ATTACH PARTITION r82.att FOR VALUES FROM (0) TO (100)",
        None,
    ),
    "validate-constraint": ("val", [], "ALTER TABLE r82.val VALIDATE CONSTRAINT val_c", None),
    "validate-constraint-read": (
        "valr", [], "ALTER TABLE r82.val VALIDATE CONSTRAINT val_c", None),
    "domain-in-generated": ("dgen", [], "INSERT INTO r82.dgen (id) VALUES (2)", None),
    "domain-in-default": ("ddef", [], "INSERT INTO r82.ddef (id) VALUES (2)", None),
    "domain-in-partition-key": ("dpk", [], "INSERT INTO r82.dpk VALUES (2)", None),
    "domain-index-rewrite": ("ddlix", [], "ALTER TABLE r82.dix SET UNLOGGED", None),
    "fk-cascade-one-level": ("fk3", [], "DELETE FROM r82.fb", None),
    "domain-in-view-column": ("vd", [], "SELECT * FROM r82.vd", None),
    "domain-typed-view-column": ("vd", [], "SELECT * FROM r82.vd2", None),
    "domain-in-view-where": ("vd", [], "SELECT * FROM r82.vdw", None),
    "domain-in-argument-default": ("egd", [], "SELECT r82.gd()", None),
    "domain-in-row-security": ("rls", [], "SELECT * FROM r82.rls", None),
    "domain-parameter-call": ("fdy", [], "SELECT r82.fdomp(1)", None),
    "domain-parameter-in-index": ("fdy", [], "INSERT INTO r82.fdy VALUES (1)", None),
    "merge-plan-code": (
        "wixp", [], "MERGE INTO r82.ixp t USING (VALUES (3)) s(id) ON t.id = s.id "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm')", None,
    ),
    "on-conflict-plan-code": (
        "wixp", [], "INSERT INTO r82.ixp VALUES (3, 'c') ON CONFLICT (id) DO NOTHING", None,
    ),
    "insert-through-view-plan-code": ("wixp", [], "INSERT INTO r82.vixp VALUES (4, 'c')", None),
    "view-column-default": ("vw", [], "INSERT INTO r82.vw (id) VALUES (9)", None),
    "domain-column-insert": ("dcol", [], "INSERT INTO r82.dcol2 VALUES (1, 1)", None),
    "operator-domain-argument": (
        "dop", [], "SELECT * FROM r82.pub WHERE id OPERATOR(r82.===) 1", None,
    ),
    "explain-update": ("rixp", [], "EXPLAIN UPDATE r82.ixp SET v = 'x'", None),
    "declare-cursor": ("rixp", [], "DECLARE r82c CURSOR FOR SELECT * FROM r82.ixp", None),
    "analyze-domain-index": ("mx", [], "ANALYZE r82.dix", None),
    "reindex-domain-index": ("mx", [], "REINDEX TABLE r82.dix", None),
    "analyze-function-index": ("mx", [], "ANALYZE r82.eix", None),
    "hash-partition-pruning": ("hp", [], "SELECT * FROM r82.hp WHERE id = 5", None),
    "hash-partition-constraint": ("hp", [], "INSERT INTO r82.hp0 VALUES (5)", None),
    "partition-constraint-insert": ("kp1", [], "INSERT INTO r82.kp1 VALUES (6)", None),
    "partition-constraint-update": ("kp1", [], "UPDATE r82.kp1 SET id = id", None),
    "truncate-cascade": ("tr3", [], "TRUNCATE r82.fa CASCADE", None),
    "truncate-cascade-one-level": ("tr3", [], "TRUNCATE r82.fb CASCADE", None),
    "fk-revalidated-by-referenced-ddl": (
        "ddlfb", [], "ALTER TABLE r82.fb ALTER COLUMN k TYPE bigint", None),
    "fk-added-initial-check": (
        "ddlfd", [], "ALTER TABLE r82.fd ADD FOREIGN KEY (k) REFERENCES r82.ref (k)", None,
    ),
    "fk-added-initial-check-read": (
        "ddlfdr", [], "ALTER TABLE r82.fd ADD FOREIGN KEY (k) REFERENCES r82.ref (k)", None,
    ),
    "argument-default-variadic": ("egv", [], "SELECT r82.gv()", None),
    "argument-default-named": ("egv", [], "SELECT r82.gn(b => 1)", None),
    "domain-in-index-expression": ("dix", [], "INSERT INTO r82.dix VALUES (2)", None),
    "domain-in-check": ("dck", [], "INSERT INTO r82.dck VALUES (2)", None),
    "fk-cascade-two-levels": ("fk3", [], "DELETE FROM r82.fa", None),
    "temp-like-constraints-inherits": (
        "tmp", _TEMP_LIKE, "SELECT * FROM pg_temp.r82_tp WHERE id > 1", None,
    ),
}  # fmt: skip


def _cases():
    return planted.mode_cases(PROBES, MODES)


@pytest.mark.parametrize("key", list(PROBES))
def test_r82_reaches_directly(pg, px, key):
    _grant, before, sql, _why = PROBES[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), _cases())
def test_r82_probe(px, key, mode):
    grant, before, sql, _why = PROBES[key]
    got = _proxied(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])
    # refused, withheld, or the server's own error (TRUNCATE's CASCADE blanked: 0A000)
    assert planted.is_error(got) or "message withheld" in got, (key, mode, got[-600:])


# --- a stale snapshot: code added directly (not through the proxy) after the load --------

STALE_INDEX = "CREATE INDEX r82_stale_ix ON r82.stl (id) WHERE id > r82x.cutoff()"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=("LEAK (documented limitation: DDL run outside the proxy is seen at the next reload)"),
)
@pytest.mark.parametrize("mode", MODES)
def test_r82_stale_plan_code_added_directly(pg, px, mode):
    """Another session (directly, as the schema owner) gives a granted table an index whose
    predicate calls the code after the proxy loaded its catalog; the agent's next read."""
    planted.renew(px)
    try:
        with planted.session(px, px.tokens["stl"]) as c:
            got = planted.run_mode(c, "simple", "SELECT id FROM r82.stl")  # the load
            assert "1" in got and not planted.is_error(got), got[-300:]
            pg.psql(f"SET ROLE pgwitness; {STALE_INDEX};", db="app")
            _reaches(pg, [], "SELECT * FROM r82.stl")
            got = planted.run_mode(c, mode, "SELECT * FROM r82.stl")
        assert not _shown(got), ("LEAK", mode, got[-400:])
    finally:
        pg.psql("DROP INDEX IF EXISTS r82.r82_stale_ix;", db="app")


# --- transparency -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_r82_fk_to_plan_code_granted_keeps_the_servers_message(px, mode):
    """A foreign key to a table whose plan runs code the grant may execute (``fkx``: read
    both, write the referencing one, ``execute:r82x.cutoff``): the server's own 23503."""
    got = _proxied(px, "fkx", mode, [], "INSERT INTO r82.fkt VALUES ('zz')")
    assert "is not present in table" in got and "message withheld" not in got, got[-400:]


_REFUSED = (
    "TRANSPARENCY REGRESSION (REFUSED): _PLAN_CODE counts code these statements' plans never "
    "run (functions of columns; a child read directly, ONLY its parent; an inheritance "
    "parent's insert)"
)
# key -> (grant, statement, what it answers, strict-xfail reason or None: transparent)
TRANSPARENT = {
    # an index over a user function of a column: never folded on a read (shown directly)
    "index-over-column": ("eix", "SELECT v FROM r82.eix WHERE id = 1", EIX, None),
    # a child's CHECK over a user function of a column: never folded either
    "child-check-over-column": ("eix", "SELECT id FROM r82.epar WHERE id > 1", EKID, None),
    # a child read directly, not through its parent: its CHECK is not folded
    "child-read-directly": ("kc", "SELECT id FROM r82.kidc WHERE id > 1", "5", None),
    # the parent alone (ONLY): no child planned
    "parent-only": (
        "kc", "SELECT count(*) FROM ONLY r82.parc WHERE id > 1", "SELECT 1", _REFUSED,
    ),
    # an insert into an inheritance parent (not partitioned) routes nowhere
    "insert-into-inheritance-parent": (
        "kc", "INSERT INTO r82.parc VALUES (6)", "INSERT 0 1", _REFUSED,
    ),
    # a materialized view's stored rows (over r82.ixp): its query is not planned by a read
    "materialized-view": ("mv", "SELECT v FROM r82.mv", "R82-MV-ok", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(TRANSPARENT))
def test_r82_transparent_reads_run_no_code_directly(pg, px, key):
    _grant, sql, want, _why = TRANSPARENT[key]
    got = _direct(pg, [], sql)
    assert want in got and "peeki" not in got and not _shown(got), got[-300:]


def _transparent_cases():
    return [
        pytest.param(k, mode, id=f"{k}-{mode}", marks=[] if v[-1] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in TRANSPARENT.items()
        for mode in MODES
    ]  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), _transparent_cases())
def test_r82_transparent_reads(px, key, mode):
    grant, sql, want, _why = TRANSPARENT[key]
    got = _proxied(px, grant, mode, [], sql)
    assert want in got and not planted.is_error(got), ("REFUSED", key, mode, got[-400:])


# --- the database's constraint_exclusion changed after the loader's link logged in -------


def _reload_now(px) -> None:
    """A load of the database, started now and done (its snapshot the session's)."""

    async def go() -> bool:
        t0 = time.monotonic()
        await px.server.catalogs.refresh("app")
        entry = px.server.catalogs.cache.entries.get("app")
        return entry.snapshot is not None and entry.last_started >= t0

    assert px.call(go()), "no load after the change"


@pytest.mark.parametrize("mode", MODES)
def test_r82_database_constraint_exclusion_on_kept_link(pg, px, mode):
    """The DBA turns ``constraint_exclusion`` on for the database (directly) right after a
    load; a load within ``LINK_IDLE_SECONDS`` reuses the loader's login, whose setting is
    the old one: it counted no table's own CHECK, while a new session's backend folded them
    (a leak, fixed: the proxy pins ``constraint_exclusion = partition`` in every enforced
    session's startup, so no table's own CHECK is folded, whatever the database says)."""
    sql = "SELECT id FROM r82.chk WHERE id > 1"
    planted.renew(px)
    try:
        with planted.session(px, px.tokens["base"]) as c:
            c.query("SELECT 1")  # the load: the loader's login kept
        pg.psql("ALTER DATABASE app SET constraint_exclusion = on;", db="app")
        _reaches(pg, [], sql)
        _reload_now(px)  # a load on the kept login (DDL elsewhere would ask for one)
        with planted.session(px, px.tokens["tmp"]) as c:
            got = planted.run_mode(c, mode, sql)
        assert not _shown(got), ("LEAK", mode, got[-400:])
    finally:
        pg.psql("ALTER DATABASE app RESET constraint_exclusion;", db="app")


@pytest.mark.parametrize("mode", MODES)
def test_r82_database_constraint_exclusion_on_fresh_login(pg, px, mode):
    """A load on a login of its own after the change: the session's startup pins
    ``constraint_exclusion = partition`` over the database's ``on``, so the table's own
    CHECK is not folded, and the read goes through with nothing of the vault."""
    sql = "SELECT id FROM r82.chk WHERE id > 1"
    try:
        pg.psql("ALTER DATABASE app SET constraint_exclusion = on;", db="app")
        _reaches(pg, [], sql)
        got = _proxied(px, "tmp", mode, [], sql)
        assert not _shown(got) and not planted.is_error(got), got[-400:]
    finally:
        pg.psql("ALTER DATABASE app RESET constraint_exclusion;", db="app")
