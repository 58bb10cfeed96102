"""Red-team round 60 (attacks on 60a7554: CASCADE anywhere is refused), time-boxed; the
server the judge.

Grant (agent ``r60-bot``): ``read:r60.* write:r60.* ddl:r60.* truncate:r60.*
execute:r60.dyn_drop``. Planted (schema owner ``pgwitness``, the proxy's upstream role)
outside the grant in ``r60x``, each depending on something of ``r60``: tables whose
foreign keys reference ``r60`` tables ``ON DELETE CASCADE`` / ``SET NULL`` / ``SET
DEFAULT`` / ``ON UPDATE CASCADE`` (one row each), a leaf two cascading hops away
(``r60.p2`` <- ``r60.mid`` <- ``r60x.leaf``), a partition ``r60x.pt1`` of ``r60.pt``, an
inheritance child ``r60x.ic`` of ``r60.ip``, columns of ``r60.rt``'s row type, of the
composite type ``r60.ty``, of the enum ``r60.en`` and of the domain ``r60.dm``, a view
``r60x.dv`` over ``r60.d.c``, a foreign key on ``r60.u``'s unique index, a trigger of
``r60x`` running ``r60.trigfn``; ``r60.dyn_drop(col)`` (granted: runs ``ALTER TABLE r60.d
DROP COLUMN <col> CASCADE`` by plpgsql EXECUTE). ``STATE`` is everything of ``r60x`` a
statement could change: relations, constraints, columns with types and defaults, NOT NULL,
triggers, partition and inheritance links, domain defaults and checks, every row. Every
probe is live: run by the owner directly (in a transaction rolled back) it changes
``STATE``; each is then run through the proxy, committed, over the simple protocol, the
extended one unnamed and a named prepared statement, each on a proxy ``renew``ed (its
first load sees the planted catalog) and ``STATE`` compared.

Leaked, fixed the same session (session 29, ``StatementPolicy._beyond_its_objects``; each
was a strict xfail that failed before the fix; ``r60x`` changed through the proxy by
statements that name only ``r60``, every protocol, all committed, no CASCADE):

* Foreign-key actions: ``DELETE FROM r60.pd WHERE k = 1`` deleted ``r60x.c_del``'s row (ON
  DELETE CASCADE); ``DELETE FROM r60.pn`` set ``r60x.c_null.k`` to NULL; ``DELETE FROM
  r60.pdf WHERE k = 1`` set ``r60x.c_def.k`` to its default 2; ``UPDATE r60.pu SET k = 10``
  rewrote ``r60x.c_upd.k`` to 10 (ON UPDATE CASCADE); ``DELETE FROM r60.p2`` deleted
  ``r60x.leaf``'s row through ``r60.mid`` (a chain); the same through ``EXPLAIN ANALYZE
  DELETE``, ``WITH d AS (DELETE ... RETURNING k) SELECT ...`` and ``MERGE ... WHEN MATCHED
  THEN DELETE``. ``Snapshot.cascades`` was only read to withhold error text; now a
  DELETE or UPDATE whose actions write a relation the grant may not write is refused.
* Partitions in another schema: ``DROP TABLE r60.pt`` dropped ``r60x.pt1`` (no CASCADE
  needed); ``ALTER TABLE r60.pt DROP COLUMN c`` / ``ADD COLUMN z int`` / ``ALTER COLUMN c
  TYPE bigint`` / ``RENAME COLUMN c TO c2`` / ``ALTER COLUMN c SET NOT NULL`` changed its
  columns, ``CREATE INDEX ON r60.pt (c)`` made ``r60x.pt1_c_idx``. DDL of a partitioned
  table is now decided on each partition too (``Snapshot.partitions``). Its rows stay the
  parent's data (``BY_DESIGN``: TRUNCATE, DELETE, UPDATE through the parent).
* Types used by another schema's columns: ``ALTER TABLE r60.rt DROP COLUMN b`` turned
  ``r60x.uses_rt.x`` from ``(1,2)`` into ``(1)`` (``ADD COLUMN z int``: ``(1,2,)``); ``ALTER
  TYPE r60.ty DROP ATTRIBUTE b`` / ``ADD ATTRIBUTE z int`` the same to ``r60x.uses_ty.x``
  (the s29 CASCADE fix covers tables made OF the type; a plain column of the type needs no
  CASCADE); ``ALTER TYPE r60.en RENAME VALUE 'on' TO 'yes'`` made ``r60x.uses_en``'s row
  read ``yes``. ALTER TABLE / ALTER TYPE of a type another relation's columns use is now
  decided on those relations too (``Snapshot.type_users``).

Not leaks (``BY_DESIGN``): a partition's rows through its parent (a grant on a partitioned
table is one on its data, as PostgreSQL's privileges have it), and granted code's dynamic
SQL (``SELECT r60.dyn_drop('c')`` runs ``ALTER TABLE r60.d DROP COLUMN c CASCADE`` by
EXECUTE: the execute scope names the function, and runs it as written).

Residue (strict xfail): a child created by the owner outside the proxy after its catalog
load (``CREATE TABLE r60x.lc () INHERITS (r60.lp)``) is not seen: ``TRUNCATE r60.lp`` then
emptied ``r60x.lc`` (documented: "seen at the next catalog load", ``refresh_after``).

Held (plain tests): the CASCADE spellings (``/**/CaScAdE``, lower case, a comment or a
newline between the tokens, ``ADD COLUMN ..., DROP COLUMN ... cascade``, ``IF EXISTS``
twice and a quoted column, ``DROP TABLE IF EXISTS r60.nope, r60.d CASCADE``) over the three
protocols, and in a multi-statement Query after a granted statement or in ``BEGIN ...
COMMIT``: 42501 naming CASCADE. ``PREPARE ... AS ALTER ...`` and ``EXPLAIN ALTER ...`` are
the server's syntax errors (dropped: they change nothing directly). ``DO`` (deny.do),
``CREATE RULE`` (unrecognised CREATE) even with its triggering INSERT in the same Query,
``DROP OWNED BY pgwitness`` / ``CURRENT_USER`` (deny.role: directly it drops all of
``r60x``), ``ALTER TABLE r60.pt DETACH PARTITION r60x.pt1`` and ``ALTER DOMAIN r60.dm SET
DEFAULT`` / ``DROP CONSTRAINT`` / ``ADD CONSTRAINT`` (unrecognised ALTER), ``ALTER TABLE
r60.pd SET SCHEMA r60x`` (ddl on the new name), and every statement on the inheritance
parent without ONLY (DROP/RENAME COLUMN, SET DEFAULT, SET NOT NULL, ADD CHECK, TRUNCATE,
DELETE, UPDATE): 42501. Without CASCADE the server's RESTRICT refuses what ``r60x``
depends on (2BP01/0A000): ``DROP TABLE r60.ip`` (child), ``DROP TABLE r60.rt`` / ``DROP
TYPE r60.ty`` / ``r60.en`` / ``DROP DOMAIN r60.dm`` (columns), ``DROP INDEX r60.u_k`` (a
foreign key), ``DROP FUNCTION r60.trigfn()`` (a trigger), ``ALTER TABLE r60.d DROP COLUMN
c`` (a view), ``ALTER TABLE r60.pd DROP CONSTRAINT pd_pkey``, ``DROP SCHEMA r60``,
``TRUNCATE r60.pd`` / ``r60.u`` (referenced), ``ALTER ... TYPE`` of a row type in use.
Not leaks, seen directly: ``ALTER TABLE r60.pd RENAME TO ...`` changes how ``r60x``'s
foreign key prints (``REFERENCES r60.<new name>``), ``ALTER TABLE r60.u ALTER COLUMN k TYPE
bigint`` rebuilds ``r60x.fk_idx``'s foreign key with the same definition.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "r60-bot"
SCOPES = "read:r60.* write:r60.* ddl:r60.* truncate:r60.* execute:r60.dyn_drop"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA r60; CREATE SCHEMA r60x;
CREATE TABLE r60.pd (k int PRIMARY KEY); CREATE TABLE r60.pn (k int PRIMARY KEY);
CREATE TABLE r60.pdf (k int PRIMARY KEY); CREATE TABLE r60.pu (k int PRIMARY KEY);
INSERT INTO r60.pd VALUES (1); INSERT INTO r60.pn VALUES (1);
INSERT INTO r60.pdf VALUES (1), (2); INSERT INTO r60.pu VALUES (1);
CREATE TABLE r60x.c_del (k int REFERENCES r60.pd ON DELETE CASCADE);
CREATE TABLE r60x.c_null (k int REFERENCES r60.pn ON DELETE SET NULL);
CREATE TABLE r60x.c_def (k int DEFAULT 2 REFERENCES r60.pdf ON DELETE SET DEFAULT);
CREATE TABLE r60x.c_upd (k int REFERENCES r60.pu ON UPDATE CASCADE);
INSERT INTO r60x.c_del VALUES (1); INSERT INTO r60x.c_null VALUES (1);
INSERT INTO r60x.c_def VALUES (1); INSERT INTO r60x.c_upd VALUES (1);
CREATE TABLE r60.p2 (k int PRIMARY KEY); INSERT INTO r60.p2 VALUES (1);
CREATE TABLE r60.mid (k int PRIMARY KEY REFERENCES r60.p2 ON DELETE CASCADE);
INSERT INTO r60.mid VALUES (1);
CREATE TABLE r60x.leaf (k int REFERENCES r60.mid ON DELETE CASCADE);
INSERT INTO r60x.leaf VALUES (1);
CREATE TABLE r60.pt (k int, c int) PARTITION BY RANGE (k);
CREATE TABLE r60x.pt1 PARTITION OF r60.pt FOR VALUES FROM (0) TO (100);
INSERT INTO r60.pt VALUES (1, 1);
CREATE TABLE r60.ip (k int, c int);
CREATE TABLE r60x.ic () INHERITS (r60.ip); INSERT INTO r60x.ic VALUES (1, 1);
CREATE TABLE r60.lp (k int);
CREATE TABLE r60.rt (a int, b int);
CREATE TABLE r60x.uses_rt (x r60.rt); INSERT INTO r60x.uses_rt VALUES (ROW(1, 2));
CREATE TYPE r60.ty AS (a int, b int);
CREATE TABLE r60x.uses_ty (x r60.ty); INSERT INTO r60x.uses_ty VALUES (ROW(1, 2));
CREATE TYPE r60.en AS ENUM ('on', 'off');
CREATE TABLE r60x.uses_en (e r60.en); INSERT INTO r60x.uses_en VALUES ('on');
CREATE DOMAIN r60.dm AS int CONSTRAINT dm_pos CHECK (VALUE > 0);
CREATE TABLE r60x.uses_dm (d r60.dm, k int); INSERT INTO r60x.uses_dm VALUES (1, 1);
CREATE TABLE r60.u (k int); CREATE UNIQUE INDEX u_k ON r60.u (k); INSERT INTO r60.u VALUES (1);
CREATE TABLE r60x.fk_idx (k int REFERENCES r60.u (k)); INSERT INTO r60x.fk_idx VALUES (1);
CREATE FUNCTION r60.trigfn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TABLE r60x.trg_tab (k int);
CREATE TRIGGER r60trg BEFORE INSERT ON r60x.trg_tab
  FOR EACH ROW EXECUTE FUNCTION r60.trigfn();
CREATE TABLE r60.d (k int, c int); CREATE VIEW r60x.dv AS SELECT c FROM r60.d;
CREATE FUNCTION r60.dyn_drop(col text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN
  EXECUTE format('ALTER TABLE r60.d DROP COLUMN %I CASCADE', col); RETURN 1; END $$;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r60, r60x CASCADE;"

# everything of r60x a statement could change (one line; empty when r60x is gone)
STATE = planted.schema_state("r60x")

# key -> (statement, reason of the strict xfail, or False: fixed in session 29 by
# ``StatementPolicy._beyond_its_objects``, each was a strict xfail failing before it)
LEAKS = {
    "fk-on-delete-cascade": ("DELETE FROM r60.pd WHERE k = 1", False),
    "fk-on-delete-set-null": ("DELETE FROM r60.pn", False),
    "fk-on-delete-set-default": ("DELETE FROM r60.pdf WHERE k = 1", False),
    "fk-on-update-cascade": ("UPDATE r60.pu SET k = 10", False),
    "fk-chain-two-hops": ("DELETE FROM r60.p2", False),
    "fk-explain-analyze": ("EXPLAIN ANALYZE DELETE FROM r60.pd", False),
    "fk-cte": ("WITH d AS (DELETE FROM r60.pd RETURNING k) SELECT count(*) FROM d", False),
    "fk-merge": (
        "MERGE INTO r60.pd t USING (SELECT 1 AS k) s ON t.k = s.k WHEN MATCHED THEN DELETE",
        False,
    ),
    "partition-drop-parent": ("DROP TABLE r60.pt", False),
    "partition-drop-column": ("ALTER TABLE r60.pt DROP COLUMN c", False),
    "partition-add-column": ("ALTER TABLE r60.pt ADD COLUMN z int", False),
    "partition-column-type": ("ALTER TABLE r60.pt ALTER COLUMN c TYPE bigint", False),
    "partition-rename-column": ("ALTER TABLE r60.pt RENAME COLUMN c TO c2", False),
    "partition-set-not-null": ("ALTER TABLE r60.pt ALTER COLUMN c SET NOT NULL", False),
    "partition-create-index": ("CREATE INDEX ON r60.pt (c)", False),
    "rowtype-drop-column": ("ALTER TABLE r60.rt DROP COLUMN b", False),
    "rowtype-add-column": ("ALTER TABLE r60.rt ADD COLUMN z int", False),
    "composite-drop-attribute": ("ALTER TYPE r60.ty DROP ATTRIBUTE b", False),
    "composite-add-attribute": ("ALTER TYPE r60.ty ADD ATTRIBUTE z int", False),
    "enum-rename-value": ("ALTER TYPE r60.en RENAME VALUE 'on' TO 'yes'", False),
}

# Not leaks, by design (docs/policy.md): a partition's rows are its partitioned table's
# data, which a grant on that table covers (as PostgreSQL's privileges do: a write through
# the parent asks for the parent's); granted code runs as written (the execute scope names
# the function, whose dynamic SQL no policy reads). Each runs through the proxy and changes
# r60x, as directly.
BY_DESIGN = {
    "partition-truncate-parent": "TRUNCATE r60.pt",
    "partition-delete-parent": "DELETE FROM r60.pt",
    "partition-update-parent": "UPDATE r60.pt SET c = 2",
    "granted-code-dynamic-cascade": "SELECT r60.dyn_drop('c')",
}

# refused by the policy (42501), live directly
REFUSED = {
    "cascade-comment-mixed-case": "ALTER TABLE r60.d DROP COLUMN c/**/CaScAdE",
    "cascade-line-comment": "ALTER TABLE r60.d DROP c -- x\nCASCADE",
    "cascade-newline": "ALTER TABLE r60.d\n DROP\n COLUMN\n c\n cascade",
    "cascade-second-subcommand": "ALTER TABLE r60.d ADD COLUMN e int, DROP COLUMN c cascade",
    "cascade-if-exists-quoted": 'ALTER TABLE IF EXISTS r60.d DROP COLUMN IF EXISTS "c" CASCADE',
    "cascade-drop-list": "DROP TABLE IF EXISTS r60.nope, r60.d CASCADE",
    "do-block": "DO $$ BEGIN EXECUTE 'ALTER TABLE r60.d DROP COLUMN c CASCADE'; END $$",
    "drop-owned-owner": "DROP OWNED BY pgwitness",
    "drop-owned-current-user": "DROP OWNED BY CURRENT_USER",
    "detach-partition": "ALTER TABLE r60.pt DETACH PARTITION r60x.pt1",
    "set-schema-into-r60x": "ALTER TABLE r60.pd SET SCHEMA r60x",
    "domain-set-default": "ALTER DOMAIN r60.dm SET DEFAULT 7",
    "domain-drop-constraint": "ALTER DOMAIN r60.dm DROP CONSTRAINT dm_pos",
    "domain-add-constraint": "ALTER DOMAIN r60.dm ADD CONSTRAINT dm_small CHECK (VALUE < 100)",
    "inherit-drop-column": "ALTER TABLE r60.ip DROP COLUMN c",
    "inherit-rename-column": "ALTER TABLE r60.ip RENAME COLUMN c TO c2",
    "inherit-set-default": "ALTER TABLE r60.ip ALTER COLUMN c SET DEFAULT 5",
    "inherit-set-not-null": "ALTER TABLE r60.ip ALTER COLUMN c SET NOT NULL",
    "inherit-add-check": "ALTER TABLE r60.ip ADD CONSTRAINT ck CHECK (c > 0)",
    "inherit-truncate": "TRUNCATE r60.ip",
    "inherit-delete": "DELETE FROM r60.ip",
    "inherit-update": "UPDATE r60.ip SET c = 3",
}

# simple protocol only: more than one statement in a Query
REFUSED_SIMPLE = {
    "cascade-after-granted": "SELECT 1; ALTER TABLE r60.d DROP COLUMN c CASCADE",
    "cascade-in-block": "BEGIN; ALTER TABLE r60.d DROP COLUMN c CASCADE; COMMIT",
    "rule-then-insert": (
        "CREATE RULE r60r AS ON INSERT TO r60.d DO ALSO DELETE FROM r60.pd; "
        "INSERT INTO r60.d VALUES (1, 1)"
    ),
}

# allowed by the grant, refused by the server's RESTRICT (what r60x depends on)
RESTRICTED = {
    "drop-inheritance-parent": "DROP TABLE r60.ip",
    "drop-used-rowtype-table": "DROP TABLE r60.rt",
    "drop-used-composite": "DROP TYPE r60.ty",
    "drop-used-enum": "DROP TYPE r60.en",
    "drop-used-domain": "DROP DOMAIN r60.dm",
    "drop-fk-index": "DROP INDEX r60.u_k",
    "drop-trigger-function": "DROP FUNCTION r60.trigfn()",
    "drop-viewed-column": "ALTER TABLE r60.d DROP COLUMN c",
    "drop-referenced-pkey": "ALTER TABLE r60.pd DROP CONSTRAINT pd_pkey",
    "drop-schema": "DROP SCHEMA r60",
    "truncate-referenced": "TRUNCATE r60.pd",
    "truncate-referenced-by-index-fk": "TRUNCATE r60.u",
    "rowtype-column-type": "ALTER TABLE r60.rt ALTER COLUMN b TYPE bigint",
    "composite-attribute-type": "ALTER TYPE r60.ty ALTER ATTRIBUTE b TYPE bigint",
}

MODES = ("simple", "extended", "prepared")


def _state(pg) -> str:
    return planted.state(pg, STATE)


def _directly(pg, sql: str) -> str:
    """``STATE`` after the owner ran ``sql`` in a transaction rolled back (or the error)."""
    return planted.state_after(pg, sql, STATE)


def _through_proxy(pg, handle, sql: str, mode: str) -> tuple[str, bool]:
    """``sql`` through a renewed proxy in ``mode``: what the client got, and whether r60x
    changed (restored if so)."""
    planted.renew(handle)
    if mode == "simple":
        got = planted.simple(handle, [sql])[0]
    else:
        got = asyncio.run(planted.attempt(handle, sql, mode))
    changed = _state(pg) != handle.state
    if changed:
        pg.psql(TEARDOWN + SETUP, db="app")
        assert _state(pg) == handle.state
    return got, changed


@pytest.fixture(scope="module")
def handle(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r60", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        h.state = _state(pg)
        assert "rows:c_del:" in h.state and "part:pt1:true:r60.pt" in h.state, h.state
        yield h


# what each probe runs directly (a block's statement without its BEGIN and COMMIT: the
# direct probe is a transaction rolled back)
PROBES = {k: v[0] for k, v in LEAKS.items()} | BY_DESIGN | REFUSED | REFUSED_SIMPLE
PROBES["cascade-in-block"] = "ALTER TABLE r60.d DROP COLUMN c CASCADE"


@pytest.mark.parametrize("key", list(PROBES))
def test_probe_changes_r60x_directly(pg, handle, key):
    changed = _directly(pg, PROBES[key])
    assert not changed.startswith("error") or "DROP OWNED" in PROBES[key], changed
    assert changed != handle.state, key
    assert _state(pg) == handle.state


@pytest.mark.parametrize("key", planted.cases(LEAKS))
def test_leak_leaves_r60x_unchanged(pg, handle, key):
    sql = LEAKS[key][0]
    outs = {}
    for mode in MODES:
        got, changed = _through_proxy(pg, handle, sql, mode)
        outs[mode] = (changed, got[:200])
    assert not any(changed for changed, _ in outs.values()), outs


@pytest.mark.parametrize("key", list(BY_DESIGN))
def test_by_design_runs_as_directly(pg, handle, key):
    got, changed = _through_proxy(pg, handle, BY_DESIGN[key], "simple")
    assert "42501" not in got and changed, got


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused_through_the_proxy(pg, handle, key):
    sql = REFUSED[key]
    for mode in MODES:
        got, changed = _through_proxy(pg, handle, sql, mode)
        if key.startswith("cascade"):
            # a simple Query (session 29) and a Parse (session 30) run as RESTRICT (the
            # keyword blanked), and the server refuses it: r60x.dv depends on r60.d.c
            assert "2BP01" in got and not changed, (mode, got)
            continue
        assert "42501" in got and not changed, (mode, got)


@pytest.mark.parametrize("key", list(REFUSED_SIMPLE))
def test_refused_in_a_multi_statement_query(pg, handle, key):
    got, changed = _through_proxy(pg, handle, REFUSED_SIMPLE[key], "simple")
    # (CASCADE runs as RESTRICT in a simple Query: the server refuses, r60x.dv depends)
    assert ("2BP01" if key.startswith("cascade") else "42501") in got and not changed, got


@pytest.mark.parametrize("key", list(RESTRICTED))
def test_restrict_refuses_what_r60x_depends_on(pg, handle, key):
    sql = RESTRICTED[key]
    assert _directly(pg, sql).startswith("error"), key
    for mode in MODES:
        got, changed = _through_proxy(pg, handle, sql, mode)
        # allowed by the grant; the server's own refusal (2BP01, 0A000). A type another
        # schema's columns use is refused by the policy first since session 29
        policy_first = key in ("rowtype-column-type", "composite-attribute-type")
        assert got.startswith("error ") and ("42501" in got) == policy_first, (mode, got)
        assert not changed, (mode, got)


def _late_child(pg, handle) -> tuple[str, bool]:
    planted.renew(handle)
    with planted.session(handle) as c:  # the first load: no child of r60.lp yet
        c.query("SELECT 1 FROM r60.lp")
    assert planted.wait_catalog_quiet(handle, 10.0)
    late = (
        "SET ROLE pgwitness; CREATE TABLE r60x.lc () INHERITS (r60.lp); "
        "INSERT INTO r60x.lc VALUES (1); RESET ROLE;"
    )
    pg.psql(late, db="app")
    try:
        with_child = _state(pg)
        got = planted.simple(handle, ["TRUNCATE r60.lp"])[0]
        return got, _state(pg) != with_child
    finally:
        pg.psql(TEARDOWN + SETUP, db="app")


def test_late_child_is_live_directly(pg, handle):
    pg.psql(
        "SET ROLE pgwitness; CREATE TABLE r60x.lc () INHERITS (r60.lp); "
        "INSERT INTO r60x.lc VALUES (1); RESET ROLE;",
        db="app",
    )
    try:
        with_child = _state(pg)
        assert _directly(pg, "TRUNCATE r60.lp") != with_child
    finally:
        pg.psql(TEARDOWN + SETUP, db="app")


@pytest.mark.xfail(
    strict=True,
    reason="an inheritance child made by the owner outside the proxy after its catalog "
    "load is not seen until the next load (documented: refresh_after)",
)
def test_late_child_outside_the_proxy(pg, handle):
    got, changed = _late_child(pg, handle)
    assert "42501" in got or not changed, got
