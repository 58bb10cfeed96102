"""Red-team round 85: attacks on session 35's fixes (the policy follows code PostgreSQL runs
that no statement names), as families; time-boxed; the server the judge.

Method (rounds 83-84's): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login, the schemas' owner), where it must show the marker (``RuntimeError``
otherwise); then through a proxy started after the planting, in a session of its own on a
fresh upstream backend (``planted.renew``), as a simple Query, an extended unnamed
statement and a named prepared statement, after ``before`` (simple Queries), in a block
rolled back. Leaks are strict xfails asserting the safe outcome; held families are plain
tests.

Planted: ``r85x.vault`` (``ROW``: outside every grant) and ``r85x.r85v`` (a copy of it);
``public.r85v`` (a harmless table of the same name, in the pinned path ``public, pg_temp``);
``r85x.cutoff()``, ``r85x.peeki(int)`` (IMMUTABLE PL/pgSQL) and ``r85x.peek(int)``
(VOLATILE), each raising ``NOTICE ... <ROW>``, outside every grant; the tables, views,
domains and rules of SETUP. No function of this database names ``constraint_exclusion``,
``set_config`` or ``execute`` in its source: the setting changes below are in views,
defaults, CHECKs, a domain and a rule.

Fixed (session 36; the probes below are plain tests now): items 1 but the trigger's
spelling (``SETTINGS_CODE_SQL``: stored SQL calling ``set_config`` or naming
``pg_settings``, read from the stored trees by its OID, or calling a user-written function
that may set settings, makes a statement on the relation, on a view over it, on a table
whose foreign-key actions write it, or converting to such a domain, need an execute scope
on it, which no grant has for set_config; the flags ``encoding_code`` and
``_SETS_CONSTRAINT_EXCLUSION`` count such SQL and ``U&`` spellings), 2 (``MATVIEW_READS_SQL``:
REFRESH of a matview needs what a statement on each relation its query reads needs,
``check_functions``), 3 (TYPE_DEPENDENTS_SQL's ``refresh`` rows) and 4 (a partition
reached with its partitioned table is written as that table's). Left: the trigger whose
function reads the view (strict xfail; docs/policy.md, Known gaps).

Leaks (strict xfails; every mode):

1. **The pins, turned by stored SQL that is no function** (``_PIN``). The proxy starts every
   session with ``search_path = public, pg_temp`` and ``constraint_exclusion = partition``
   and decides every statement on them; it refuses ``SET`` and a ``set_config`` the
   statement names, and a row security policy calling set_config (``pin-row-policy``, held).
   But ``SELECT * FROM r85.spv`` (read granted; the view is ``SELECT
   set_config('search_path', 'r85x, pg_temp', false)``), ``INSERT INTO r85.spd (id) VALUES
   (1)`` (a column ``DEFAULT set_config(...)``; the same through a foreign key's ON DELETE
   SET DEFAULT: ``DELETE FROM r85.fkp WHERE k = 1``), ``INSERT INTO r85.spc VALUES (1)``
   (``CHECK (set_config(...) <> '')``), ``INSERT INTO r85.spr VALUES (1)`` (a rule ``DO ALSO
   SELECT set_config(...)``), ``SELECT 'a'::r85.spdom`` (a domain whose CHECK calls it) and
   ``INSERT INTO r85.spt VALUES (1)`` (a trigger whose PL/pgSQL reads ``r85.spv``: its
   source names no setting) each move the session's path; the next ``SELECT v FROM r85v``,
   allowed as ``public.r85v``, reads ``r85x.r85v`` and answers ``ROW`` as a row (PostgreSQL
   15 reports no ParameterStatus for search_path; no withholding covers rows). The same view
   spelled with ``constraint_exclusion`` (``r85.cfgv``) turns the planner's folding of a
   table's own CHECK on, and ``SELECT * FROM r85.chk WHERE id > 1`` answers ``NOTICE cutoff
   <ROW>`` (``pin-view``: the own-CHECK branch of RELATION_PLAN_CODE_SQL counts only when
   ``_SETS_CONSTRAINT_EXCLUSION`` finds a function source). Its DEFAULT spelling holds only
   because the write that turned it makes the session's later messages withheld. Cause:
   ``policy/catalog.py`` ``_SETS_CONSTRAINT_EXCLUSION`` and ``CODE_FLAGS_SQL``
   (``Snapshot.encoding_code``) read ``pg_proc`` sources only; ``VIEW_FUNCTIONS_SQL``,
   ``DEFAULT_FUNCTIONS_SQL`` and the CHECK/rule/domain lists keep user-written functions
   only (``pn.nspname NOT IN ('pg_catalog', ...)``), so ``pg_catalog.set_config`` in stored
   SQL is seen nowhere (``StatementPolicy`` checks the dangerous-function list only against
   the statement's own calls and RLS policies). The documented gap ("An execute scope is
   therefore a grant to run whatever that function runs, settings included") is about
   execute scopes; these need only read or write. Fix (the family): the proxy re-asserts or
   verifies what it pins after any statement that may run stored code (a ``SHOW
   search_path`` / ``current_setting`` round trip after the Sync, ending the session or
   refusing on a change, as ``Relay._conforming_strings`` does for the reported settings);
   at least, in the loader, mark every relation whose view query, rule, DEFAULT, CHECK,
   policy, trigger WHEN or column domain depends (``pg_depend``) on ``set_config`` (and
   ``set_config``-like builtins) and refuse statements on them as RLS policies are
   (``deny.function``); the trigger spelling needs the runtime check.

2. **A materialized view's query, planned by REFRESH** (``_REFRESH``). ``REFRESH
   MATERIALIZED VIEW r85.mv`` (its query reads ``r85x.pidx``, whose partial index is
   ``WHERE live AND r85x.cutoff() = 0``), the same ``CONCURRENTLY``, and ``REFRESH
   MATERIALIZED VIEW r85.mv2`` (reads the inheritance parent ``r85x.ipar`` whose child's
   ``CHECK (id > r85x.cutoff())`` constraint exclusion folds) answer ``NOTICE cutoff
   <ROW>`` with ``read:``/``ddl:`` of the matview only. The same read through a plain view
   (``view-over-folded-index``) is refused. Cause: ``VIEW_READS_SQL`` keeps ``v.relkind =
   'v'``, so ``view_bases`` (``proxy/catalog_loader.py``, the merge "a view's query plans
   the relations it reads") never gives a matview its bases' plan code, and
   ``classify/handlers._refresh`` makes REFRESH a ``ddl`` op of the matview alone. Fix:
   load a matview's bases too (relkind ``'m'``) and charge their ``relation_casts`` (and
   the matview query's argument defaults, fk-free) to REFRESH only, not to a plain read of
   the matview, which reads stored rows (``matview-read`` transparency guards that).

3. **Transparency: a matview's query counted on a plain read** (``_MV_TYPES``, strict
   xfail asserting the read is allowed). ``SELECT * FROM r85.mvd`` (``read:r85.mvd``; its
   query casts to ``r85.pdom``, whose CHECK calls ``r85x.peek``) is refused "may not
   execute r85x.peek", though reading a matview's stored rows runs nothing (directly: no
   NOTICE). Cause: ``TYPE_DEPENDENTS_SQL``'s ``'view'`` branch joins every ``pg_rewrite``
   row, a matview's too (``VIEW_READS_SQL`` and ``VIEW_FUNCTIONS_SQL`` keep ``relkind =
   'v'``), and the loader merges it into ``relation_casts``. The same cause is why
   ``REFRESH MATERIALIZED VIEW r85.mvd`` is refused (held, by accident). Fix, with leak 2's:
   one map for a matview's query (bases' plan code, types, functions' defaults), asked by
   REFRESH only; ``relkind = 'v'`` in the ``'view'`` branch.

4. **Transparency: ON DELETE CASCADE into a partitioned table** (``_PART_CASCADE``, strict
   xfail asserting ``DELETE 1``). With ``read:r85.tp,r85.tc write:r85.tp,r85.tc``,
   ``DELETE FROM r85.tp WHERE k = 1`` (``r85.tc`` references it ON DELETE CASCADE and is
   partitioned, ``r85.tc1`` its partition; no code anywhere) is refused "a foreign key's
   action ... writes r85.tc1 (may not write r85.tc1)", while ``DELETE FROM r85.tc WHERE k =
   1`` goes through (a grant on a partitioned table is a grant on its partitions' rows).
   Cause: ``CASCADES_SQL`` lists every foreign key, the clones PostgreSQL makes on each
   partition (``conparentid <> 0``, ``conrelid`` the partition) too, and
   ``StatementPolicy._actions_reach``'s targets are checked by their own names
   (``check_write``). Fix: in ``StatementPolicy._beyond_its_objects``' check, accept a
   write scope on a partitioned ancestor for a partition target (as a direct write
   through the parent is), or leave the clones out of CASCADES_SQL and let
   ``partitions`` carry the parent's target down; the same for ``update_cascades``.

Held (plain tests): ``ATTACH PARTITION`` (a key over a column-bound call), ``DETACH
PARTITION`` of a partition a foreign key references, ``ALTER DOMAIN ... VALIDATE
CONSTRAINT`` (all ``deny.unknown``); ``CREATE TABLE ... PARTITION OF`` a table whose default
partition's CHECK folds the code (refused: the parent's plan code); ``ADD COLUMN`` of a
domain whose CHECK calls code (refused: the type's functions); ``ANALYZE`` of a table with
an expression index over a column-bound call (``deny.utility``, as REINDEX, CLUSTER and
VACUUM are); a self-referencing ON DELETE SET DEFAULT whose DEFAULT calls code (withheld);
ON DELETE CASCADE into a partitioned table whose partition has a trigger, and ON DELETE SET
NULL (col) into a table whose CHECK calls code, both outside the grant (refused: the
cascade's target); a view over a table whose partial index folds the code (refused);
``MERGE`` into a table with an expression index over a column-bound call (withheld); ``ALTER
TABLE ... SET UNLOGGED`` of one (a rewrite rebuilding the index: refused,
``check_functions``); a partial index ``WHERE r85x.peeki(COALESCE(1, id)) > 0``, whose
column argument the planner folds away (refused: not a bare column, so kept); the
search_path turned by a view to ``r85x, pg_catalog`` and ``SELECT id + 1 FROM r85.pub`` (an
operator ``r85x.+``, which the turned path would resolve before the built-in one: refused,
operators are decided by name whatever the path), and ``SELECT lower(v) FROM r85.pub`` (a
function ``r85x.lower(text)``: refused likewise; a domain ``r85x.text`` behind ``v::text``
was refused too, "a value of type text runs r85x.peek", not kept); the constraint_exclusion
pin turned by a DEFAULT (the session's messages are withheld after that write) or by a row
security policy (refused: ``deny.function``). Not kept: a rule ``DO ALSO SELECT v FROM
r85x.vault`` answers the row to a simple Query on a write grant, round 66's documented
residue ("a write grant fires the table's rules and triggers"); the pin leaks above are not
that residue (the harm is that the policy then misreads the agent's own later statements,
and the view and domain spellings need a read grant only).

Transparency: a plain read of a matview (``r85.mv``, whose bases fold code) and of a
granted table go through.
"""

from __future__ import annotations

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(240)

AGENT = "r85-bot"
ROW = "R85-ROW-4d1f"  # r85x.vault, outside every grant
MARKERS = (ROW,)
SCOPES = "read:r85.pub write:r85.pub"
GRANTS = {
    "cfgv": "read:r85.chk,r85.cfgv",
    "cfgd": "read:r85.chk write:r85.cfgd",
    "cfgr": "read:r85.chk,r85.cfgr",
    "katt": "read:r85.kp,r85.katt ddl:r85.kp,r85.katt",
    "dpp": "read:r85.dpp ddl:r85.*",
    "dtp": "read:r85.dtp,r85.dtp1 ddl:r85.dtp,r85.dtp1",
    "adt": "read:r85.adt ddl:r85.adt",
    "vd": "ddl:r85.*",
    "tree": "read:r85.tree write:r85.tree",
    "rp": "read:r85.rp write:r85.rp",
    "sn": "read:r85.snp write:r85.snp",
    "vix": "read:r85.vix",
    "mv": "read:r85.mv ddl:r85.mv",
    "lix": "read:r85.lix ddl:r85.lix",
    "lixw": "read:r85.lix write:r85.lix",
    "mv2": "read:r85.mv2 ddl:r85.mv2",
    "spv": "read:r85.spv,public.r85v",
    "spd": "read:public.r85v write:r85.spd",
    "cox": "read:r85.cox",
    "spc": "read:public.r85v write:r85.spc",
    "spt": "read:public.r85v write:r85.spt",
    "spdom": "read:public.r85v,r85.pub",
    "spr": "read:public.r85v write:r85.spr",
    "mvr": "read:r85.mv",
    "mvd": "read:r85.mvd",
    "fkp": "read:public.r85v,r85.fkp write:r85.fkp,r85.fkc",
    "mvdr": "read:r85.mvd ddl:r85.mvd",
    "spo": "read:r85.pub,r85.spo",
    "rbx": "read:r85.rbx ddl:r85.rbx",
    "tp": "read:r85.tp,r85.tc write:r85.tp,r85.tc",
}
MODES = ["simple", "extended", "prepared"]
_VAULT_ROW = "(SELECT v FROM r85x.vault WHERE k = 'row')"
_SET_CE = "pg_catalog.set_config('constraint_exclusion', 'on', false)"
_SET_SP = "pg_catalog.set_config('search_path', 'r85x, pg_temp', false)"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r85; CREATE SCHEMA r85x;
CREATE TABLE r85x.vault (k text PRIMARY KEY, v text);
INSERT INTO r85x.vault VALUES ('row', '{ROW}');
CREATE TABLE r85.pub (id int PRIMARY KEY, v text);
INSERT INTO r85.pub VALUES (1, 'R85-PUB-ok');
CREATE FUNCTION r85x.cutoff() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'cutoff %', {_VAULT_ROW}; RETURN 0; END $$;
CREATE FUNCTION r85x.peek(int) RETURNS bool VOLATILE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peek %', {_VAULT_ROW}; RETURN true; END $$;
CREATE FUNCTION r85x.peeki(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'peeki %', {_VAULT_ROW}; RETURN $1; END $$;
-- the pin: a table's own CHECK, folded only under constraint_exclusion = on
CREATE TABLE r85.chk (id int CHECK (id > r85x.cutoff()));
INSERT INTO r85.chk VALUES (5);
-- ... turned on by no function: a view, a DEFAULT, a row security policy
CREATE VIEW r85.cfgv AS SELECT {_SET_CE} AS s;
CREATE TABLE r85.cfgd (id int, s text DEFAULT {_SET_CE});
CREATE TABLE r85.cfgr (id int);
INSERT INTO r85.cfgr VALUES (1);
CREATE POLICY p ON r85.cfgr USING ({_SET_CE} <> '');
ALTER TABLE r85.cfgr ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
-- ATTACH PARTITION validates the key (a column-bound call) on every row
CREATE TABLE r85.kp (id int) PARTITION BY RANGE (r85x.peeki(id));
CREATE TABLE r85.katt (id int);
INSERT INTO r85.katt VALUES (5);
-- a new partition re-checks the default partition (its own CHECK folded)
CREATE TABLE r85.dpp (id int) PARTITION BY LIST (id);
CREATE TABLE r85x.dpdef PARTITION OF r85.dpp DEFAULT;
ALTER TABLE r85x.dpdef ADD CHECK (id > r85x.cutoff());
INSERT INTO r85.dpp VALUES (5);
-- DETACH of a partition a foreign key references plans the referencing table
CREATE TABLE r85.dtp (k int PRIMARY KEY) PARTITION BY RANGE (k);
CREATE TABLE r85.dtp1 PARTITION OF r85.dtp FOR VALUES FROM (0) TO (100);
INSERT INTO r85.dtp VALUES (1);
CREATE TABLE r85x.dref (k int REFERENCES r85.dtp, live bool);
CREATE INDEX ON r85x.dref (k) WHERE live AND r85x.cutoff() = 0;
-- a domain whose CHECK calls code, added as a column (a rewrite checks each row)
CREATE DOMAIN r85.pdom AS int CHECK (r85x.peek(VALUE));
CREATE TABLE r85.adt (id int);
INSERT INTO r85.adt VALUES (1);
-- a domain's NOT VALID CHECK, validated on a table outside the grant
CREATE DOMAIN r85.vd AS int;
CREATE TABLE r85x.vt (d r85.vd);
INSERT INTO r85x.vt VALUES (1);
ALTER DOMAIN r85.vd ADD CONSTRAINT c CHECK (r85x.peek(VALUE)) NOT VALID;
-- a self-referencing ON DELETE SET DEFAULT whose DEFAULT calls code
CREATE TABLE r85.tree (id int PRIMARY KEY,
  parent int DEFAULT r85x.peeki(0) REFERENCES r85.tree ON DELETE SET DEFAULT);
INSERT INTO r85.tree VALUES (0, NULL), (1, 0), (2, 1);
-- ON DELETE CASCADE into a partitioned table whose partition has a trigger
CREATE TABLE r85.rp (k int PRIMARY KEY);
INSERT INTO r85.rp VALUES (1);
CREATE TABLE r85x.cp (k int REFERENCES r85.rp ON DELETE CASCADE, id int) PARTITION BY LIST (id);
CREATE TABLE r85x.cp1 PARTITION OF r85x.cp FOR VALUES IN (1);
CREATE FUNCTION r85x.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'trg %', {_VAULT_ROW}; RETURN OLD; END $$;
CREATE TRIGGER t BEFORE DELETE ON r85x.cp1 FOR EACH ROW EXECUTE FUNCTION r85x.trg();
INSERT INTO r85x.cp VALUES (1, 1);
-- ON DELETE SET NULL (col) into a table whose CHECK calls code
CREATE TABLE r85.snp (a int, b int, PRIMARY KEY (a, b));
INSERT INTO r85.snp VALUES (1, 1);
CREATE TABLE r85x.snc (a int, b int, CHECK (r85x.peek(b)),
  FOREIGN KEY (a, b) REFERENCES r85.snp ON DELETE SET NULL (b));
INSERT INTO r85x.snc VALUES (1, 1);
-- a view over a table whose partial index folds the code
CREATE TABLE r85x.pidx (id int, live bool);
INSERT INTO r85x.pidx VALUES (1, true);
CREATE INDEX ON r85x.pidx (id) WHERE live AND r85x.cutoff() = 0;
CREATE VIEW r85.vix AS SELECT id FROM r85x.pidx;
CREATE MATERIALIZED VIEW r85.mv AS SELECT id FROM r85x.pidx;
-- an expression index over a function of a column (a rebuild or ANALYZE runs it per row)
CREATE TABLE r85.lix (id int);
INSERT INTO r85.lix VALUES (1), (2);
CREATE INDEX lix_e ON r85.lix (r85x.peeki(id));
-- a materialized view over an inheritance parent whose child's CHECK folds the code
CREATE TABLE r85x.ipar (id int);
CREATE TABLE r85x.ikid (CHECK (id > r85x.cutoff())) INHERITS (r85x.ipar);
INSERT INTO r85x.ikid VALUES (5);
CREATE MATERIALIZED VIEW r85.mv2 AS SELECT id FROM r85x.ipar WHERE id > 1;
-- the search_path pin, turned by a view's or a DEFAULT's set_config: a name of the
-- pinned path (public.r85v, granted) means another schema's table (r85x.r85v)
CREATE TABLE r85x.r85v (v text);
INSERT INTO r85x.r85v SELECT v FROM r85x.vault;
CREATE VIEW r85.spv AS SELECT {_SET_SP} AS s;
CREATE TABLE r85.spd (id int, s text DEFAULT {_SET_SP});
CREATE TABLE r85.spc (id int CHECK ({_SET_SP} <> ''));
-- ... and a trigger reading the view (its source names no setting)
CREATE TABLE r85.spt (id int);
CREATE FUNCTION r85x.sptrg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM s FROM r85.spv; RETURN NEW; END $$;
CREATE TRIGGER t BEFORE INSERT ON r85.spt FOR EACH ROW EXECUTE FUNCTION r85x.sptrg();
RESET ROLE;
CREATE TABLE public.r85v (v text);
ALTER TABLE public.r85v OWNER TO pgwitness;
INSERT INTO public.r85v VALUES ('R85-PUBLIC-ok');
SET ROLE pgwitness;
CREATE DOMAIN r85.spdom AS text CHECK ({_SET_SP} <> '');
CREATE TABLE r85.spr (id int);
CREATE RULE spr AS ON INSERT TO r85.spr DO ALSO SELECT {_SET_SP};
CREATE UNIQUE INDEX ON r85.mv (id);
-- ... through a foreign key's ON DELETE SET DEFAULT
CREATE TABLE r85.fkp (k int PRIMARY KEY);
INSERT INTO r85.fkp VALUES (0), (1);
CREATE TABLE r85.fkc (k int DEFAULT (length({_SET_SP}) * 0)
  REFERENCES r85.fkp ON DELETE SET DEFAULT);
INSERT INTO r85.fkc VALUES (1);
-- ON DELETE CASCADE into a partitioned table, all granted and free of code
CREATE TABLE r85.tp (k int PRIMARY KEY);
INSERT INTO r85.tp VALUES (1);
CREATE TABLE r85.tc (k int REFERENCES r85.tp ON DELETE CASCADE, id int) PARTITION BY LIST (id);
CREATE TABLE r85.tc1 PARTITION OF r85.tc FOR VALUES IN (1);
INSERT INTO r85.tc VALUES (1, 1);
-- a rewrite rebuilds every index (an expression over a column-bound call)
CREATE TABLE r85.rbx (id int, w int);
INSERT INTO r85.rbx VALUES (1, 1);
CREATE INDEX ON r85.rbx (r85x.peeki(id));
-- a matview whose query casts to the domain (its stored rows run nothing when read)
CREATE MATERIALIZED VIEW r85.mvd AS SELECT id, id::r85.pdom AS d FROM r85.pub;
-- ... with pg_catalog after r85x: an operator of r85x shadows the built-in one, in a
-- statement naming every relation with its schema
CREATE FUNCTION r85x.plus(int, int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'plus %', {_VAULT_ROW}; RETURN $1 + $2; END $$;
CREATE OPERATOR r85x.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = r85x.plus);
CREATE VIEW r85.spo AS SELECT pg_catalog.set_config('search_path', 'r85x, pg_catalog, pg_temp',
  false) AS s;
-- ... a function of r85x named like a built-in
CREATE FUNCTION r85x.lower(text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'lower %', {_VAULT_ROW}; RETURN $1; END $$;
-- a column-bound call whose column argument the planner folds away
CREATE TABLE r85.cox (id int);
INSERT INTO r85.cox VALUES (1);
CREATE INDEX ON r85.cox (id) WHERE r85x.peeki(COALESCE(1, id)) > 0;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r85, r85x CASCADE; DROP TABLE IF EXISTS public.r85v;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r85", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


_CE_READ = "SELECT * FROM r85.chk WHERE id > 1"
_SP_READ = "SELECT v FROM r85v"  # public.r85v in the pinned path; r85x.r85v in the turned one
_PIN = (
    "LEAK (settings pinned, turned by stored SQL): set_config() called by a view's query, a "
    "DEFAULT, a CHECK, a domain's CHECK, a rule's action (or by a trigger reading such a "
    "view) changes a "
    "setting the proxy pins at startup (search_path, constraint_exclusion); only a statement "
    "naming SET/set_config and a row security policy are refused, and the loader's scans "
    "(_SETS_CONSTRAINT_EXCLUSION, CODE_FLAGS_SQL) read pg_proc sources only"
)

# key -> (grant, before, the probe, strict-xfail reason or None)
PROBES = {
    "pin-view": ("cfgv", ["SELECT * FROM r85.cfgv"], _CE_READ, None),
    "pin-default": ("cfgd", ["INSERT INTO r85.cfgd (id) VALUES (1)"], _CE_READ, None),
    "pin-row-policy": ("cfgr", ["SELECT * FROM r85.cfgr"], _CE_READ, None),
    "search-path-view": ("spv", ["SELECT * FROM r85.spv"], _SP_READ, None),
    "search-path-default": ("spd", ["INSERT INTO r85.spd (id) VALUES (1)"], _SP_READ, None),
    "search-path-check": ("spc", ["INSERT INTO r85.spc VALUES (1)"], _SP_READ, None),
    "search-path-trigger": ("spt", ["INSERT INTO r85.spt VALUES (1)"], _SP_READ, _PIN),
    "search-path-rule": ("spr", ["INSERT INTO r85.spr VALUES (1)"], _SP_READ, None),
    "search-path-fk-set-default": ("fkp", ["DELETE FROM r85.fkp WHERE k = 1"], _SP_READ, None),
    "refresh-matview-domain-cast": ("mvdr", [], "REFRESH MATERIALIZED VIEW r85.mvd", None),
    "search-path-operator": ("spo", ["SELECT * FROM r85.spo"], "SELECT id + 1 FROM r85.pub",
                             None),
    "search-path-function": ("spo", ["SELECT * FROM r85.spo"], "SELECT lower(v) FROM r85.pub",
                             None),
    "search-path-domain-check": ("spdom", ["SELECT 'a'::r85.spdom"], _SP_READ, None),
    "refresh-matview-folded-index": ("mv", [], "REFRESH MATERIALIZED VIEW r85.mv", None),
    "refresh-concurrently-folded-index": (
        "mv", [], "REFRESH MATERIALIZED VIEW CONCURRENTLY r85.mv", None),
    "refresh-matview-child-check": ("mv2", [], "REFRESH MATERIALIZED VIEW r85.mv2", None),
    "view-over-folded-index": ("vix", [], "SELECT * FROM r85.vix", None),
    "attach-key-column-bound": (
        "katt", [], "ALTER TABLE r85.kp ATTACH PARTITION r85.katt FOR VALUES FROM (0) TO (100)",
        None),
    "partition-of-default-recheck": (
        "dpp", [], "CREATE TABLE r85.newp PARTITION OF r85.dpp FOR VALUES IN (7)", None),
    "detach-referenced-partition": (
        "dtp", [], "ALTER TABLE r85.dtp DETACH PARTITION r85.dtp1", None),
    "add-column-of-domain": ("adt", [], "ALTER TABLE r85.adt ADD COLUMN z r85.pdom", None),
    "domain-validate-constraint": ("vd", [], "ALTER DOMAIN r85.vd VALIDATE CONSTRAINT c", None),
    "self-fk-set-default": ("tree", [], "DELETE FROM r85.tree WHERE id = 1", None),
    "fk-cascade-partition-trigger": ("rp", [], "DELETE FROM r85.rp WHERE k = 1", None),
    "merge-into-expression-index": (
        "lixw", [], "MERGE INTO r85.lix t USING (SELECT 3 AS id) s ON t.id = s.id "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id)", None),
    "rewrite-set-unlogged": ("rbx", [], "ALTER TABLE r85.rbx SET UNLOGGED", None),
    "fk-set-null-columns": ("sn", [], "DELETE FROM r85.snp WHERE a = 1", None),
    "analyze-expression-index": ("lix", [], "ANALYZE r85.lix", None),
    "column-argument-folded-away": ("cox", [], "SELECT * FROM r85.cox", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(PROBES))
def test_r85_reaches_directly(pg, px, key):
    _grant, before, sql, _why = PROBES[key]
    planted.reaches_directly(pg, before, sql, MARKERS)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(PROBES, MODES))
def test_r85_probe(px, key, mode):
    grant, before, sql, _why = PROBES[key]
    got = planted.proxied_in_block(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# key -> (grant, statement, what it answers, strict-xfail reason or None)
TRANSPARENT = {
    "matview-read": ("mvr", "SELECT * FROM r85.mv", "SELECT 1", None),
    "matview-domain-cast-read": ("mvd", "SELECT * FROM r85.mvd", "SELECT 1", None),
    "fk-cascade-into-partitioned": ("tp", "DELETE FROM r85.tp WHERE k = 1", "DELETE 1",
                                    None),
    "delete-partitioned-directly": ("tp", "DELETE FROM r85.tc WHERE k = 1", "DELETE 1", None),
    "plain-read": ("base", "SELECT v FROM r85.pub", "SELECT 1", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(TRANSPARENT))
def test_r85_transparent_directly(pg, px, key):
    _grant, sql, want, _why = TRANSPARENT[key]
    got = planted.direct_in_block(pg, [], sql)
    assert want in got and not planted.is_error(got) and not _shown(got), got[-300:]


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(TRANSPARENT, MODES))
def test_r85_transparent(px, key, mode):
    grant, sql, want, _why = TRANSPARENT[key]
    got = planted.proxied_in_block(px, grant, mode, [], sql)
    assert want in got and not planted.is_error(got), ("REFUSED", key, mode, got[-400:])
