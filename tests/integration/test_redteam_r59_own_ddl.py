"""Red-team round 59 (attacks on 639fbb1: a write after only the session's own DDL no
longer waits for the catalog reload), time-boxed; the server the judge.

Grants (agent ``r59-bot``): ``base`` = ``read:r59w.* write:r59w.* ddl:r59w.*``; ``exe`` =
that and ``execute:r59w.*``; ``other`` = base and ``execute`` on the ``r59x`` functions (a
migrator that may attach them); ``dry`` = ``read:r59w.*`` in dry run. Planted (schema
owner; ``r59x`` outside every grant, ``r59x.vault`` holds the marker): ``r59x.tf()``
(trigger), ``r59x.chk(int)``, ``r59x.dflt()`` each RAISE a NOTICE of the marker; in
``r59w``: a partitioned ``pt`` with a row trigger of ``tf``, a partitioned ``pc`` with a
CHECK of ``chk``, ``par`` with a CHECK of ``chk`` and a DEFAULT of ``dflt``, ``src``
(DEFAULT, CHECK, expression index), ``dis`` (a disabled trigger), ``rls`` (a policy of
``chk``, row security off), domain ``dom`` (CHECK of ``chk``), ``trg`` (trigger), ``iv``
(INSTEAD OF trigger), ``fkp`` (``r59x.fkc`` cascades from it, triggered), ``mkpart()``
(runs ``CREATE TABLE r59w.p1 PARTITION OF r59w.pt``). Every catalog load starts 1 s late
(``slow_loads``) so a write right after DDL is decided on the stale snapshot
deterministically; each probe runs directly first and must show the marker there.

Leak found (strict xfails until fixed in session 28 by ``engine._unfollowed_ddl``; each
passed at 62ad3bf, before 639fbb1, and failed after):
**code a new relation inherits from a parent.** ``CREATE TABLE r59w.p1 PARTITION OF
r59w.pt FOR VALUES IN (1)`` (or ``PARTITION OF r59w.pc``, or ``CREATE TABLE r59w.c1 ()
INHERITS (r59w.par)``, or the granted ``SELECT r59w.mkpart()``), then at once ``INSERT
INTO r59w.p1 VALUES (1)`` (simple or extended): the NOTICE ``r59 <marker>`` of the
cloned trigger / inherited CHECK / DEFAULT reaches the client whole. ``_stale_write``
returns early (``_own_epoch == entry.epoch``), and ``writes_unreadable`` looks ``r59w.p1``
up in the stale ``Snapshot.triggered``, which does not know it; the DDL itself named no
code, so the policy "decided as it went" nothing. Baseline: a write to ``r59w.pt`` (no
DDL) is withheld. The same inside the DDL's own block leaked before 639fbb1 too
(``partition-of-in-own-block``: a pre-existing leak of the same kind).

Held: ATTACH PARTITION, INHERIT, ENABLE TRIGGER, ENABLE/FORCE ROW LEVEL SECURITY (refused,
``deny.unknown``); a column or ALTER TYPE to a checked domain, a trigger, DEFAULT,
generated column or index of an ``r59x`` function (refused, ``scope.execute``); LIKE
``INCLUDING ALL/DEFAULTS`` (withheld), into a temporary table (refused); renames of a
triggered table, a view with INSTEAD OF triggers, a cascading FK parent, a name swap
(withheld: ``Snapshot.unsettled``); SET SCHEMA out of the grant, search_path games
(refused). Another session's DDL between the own DDL and the write (another grant, a dry
run, in and out of the own block; the own partition with another's DDL since): the write
waits and is withheld. The owner's DDL outside the proxy between them: no worse than a
session without DDL (both show the trigger's NOTICE: the standing residue).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "r59-bot"
MARK = "R59-VAULT-7c1d"
GRANTS = {
    "base": "read:r59w.* write:r59w.* ddl:r59w.*",
    "exe": "read:r59w.* write:r59w.* ddl:r59w.* execute:r59w.*",
    "other": "read:r59w.* write:r59w.* ddl:r59w.* execute:r59x.tf,r59x.chk,r59x.dflt",
}
DRY = "read:r59w.*"

_SAY = "RAISE NOTICE 'r59 %', (SELECT s FROM r59x.vault)"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r59w; CREATE SCHEMA r59x; CREATE SCHEMA r59z;
CREATE TABLE r59x.vault (s text); INSERT INTO r59x.vault VALUES ('{MARK}');
CREATE FUNCTION r59x.tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_SAY}; RETURN NEW; END $$;
CREATE FUNCTION r59x.chk(v int) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN {_SAY}; RETURN true; END $$;
CREATE FUNCTION r59x.dflt() RETURNS int LANGUAGE plpgsql AS $$ BEGIN {_SAY}; RETURN 1; END $$;
CREATE FUNCTION r59w.wtf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_SAY}; RETURN NEW; END $$;
CREATE FUNCTION r59w.wchk(v int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN {_SAY}; RETURN true; END $$;
CREATE TABLE r59w.plain (k int);
CREATE TABLE r59w.pt (k int) PARTITION BY LIST (k);
CREATE TABLE r59w.pt0 PARTITION OF r59w.pt FOR VALUES IN (0);
CREATE TRIGGER r59_pt BEFORE INSERT ON r59w.pt FOR EACH ROW EXECUTE FUNCTION r59x.tf();
CREATE TABLE r59w.pc (k int) PARTITION BY LIST (k);
CREATE TABLE r59w.pc0 PARTITION OF r59w.pc FOR VALUES IN (0);
ALTER TABLE r59w.pc ADD CONSTRAINT r59_pc CHECK (r59x.chk(k));
CREATE TABLE r59w.par (k int CHECK (r59x.chk(k)), d int DEFAULT r59x.dflt());
CREATE TABLE r59w.src (k int, d int DEFAULT r59x.dflt(), CONSTRAINT r59_src CHECK (r59x.chk(k)));
CREATE INDEX r59_src_ix ON r59w.src ((r59x.chk(k)));
CREATE TABLE r59w.dis (k int);
CREATE TRIGGER r59_dis BEFORE INSERT ON r59w.dis FOR EACH ROW EXECUTE FUNCTION r59x.tf();
ALTER TABLE r59w.dis DISABLE TRIGGER r59_dis;
CREATE TABLE r59w.rls (k int);
CREATE POLICY r59p ON r59w.rls USING (r59x.chk(k)) WITH CHECK (r59x.chk(k));
CREATE DOMAIN r59w.dom AS int CHECK (r59x.chk(VALUE));
CREATE DOMAIN r59x.dom AS int CHECK (r59x.chk(VALUE));
CREATE TABLE r59w.trg (k int);
CREATE TRIGGER r59_trg BEFORE INSERT OR DELETE ON r59w.trg FOR EACH ROW EXECUTE FUNCTION r59x.tf();
CREATE VIEW r59w.iv AS SELECT k FROM r59w.plain;
CREATE TRIGGER r59_iv INSTEAD OF INSERT ON r59w.iv FOR EACH ROW EXECUTE FUNCTION r59x.tf();
CREATE TABLE r59z.sh (k int);
CREATE TRIGGER r59_sh BEFORE INSERT ON r59z.sh FOR EACH ROW EXECUTE FUNCTION r59x.tf();
CREATE TABLE r59w.sh (k int);
CREATE TABLE r59w.fkp (k int PRIMARY KEY); INSERT INTO r59w.fkp VALUES (1);
CREATE TABLE r59x.fkc (k int REFERENCES r59w.fkp ON DELETE CASCADE); INSERT INTO r59x.fkc VALUES (1);
CREATE TRIGGER r59_fkc BEFORE DELETE ON r59x.fkc FOR EACH ROW EXECUTE FUNCTION r59x.tf();
CREATE TABLE r59w.inh (k int, d int, CONSTRAINT par_k_check CHECK (r59x.chk(k)));
CREATE FUNCTION r59w.mkpart() RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'CREATE TABLE r59w.p1 PARTITION OF r59w.pt FOR VALUES IN (1)'; RETURN 1; END $$;
CREATE TABLE r59w.mine (k int);
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r59w, r59x, r59z, r59y CASCADE;"


@pytest.fixture(scope="module")
def paced(pg, tmp_path_factory):
    pg.psql(TEARDOWN + SETUP, db="app")
    shared = planted.Paced(pg, tmp_path_factory, "r59", agent=AGENT, grants=GRANTS, dry=DRY)
    yield shared
    shared.stop()
    pg.psql(TEARDOWN, db="app")


def slow_loads(handle, delay: float) -> None:
    """Every catalog load from now on starts ``delay`` seconds late: a write right after
    DDL is decided on the stale snapshot, deterministically."""

    async def patch() -> None:
        loader = handle.server.catalogs
        orig = loader.load

        async def load(database: str) -> None:
            await asyncio.sleep(delay)
            await orig(database)

        loader.load = load

    handle.call(patch())


def _send(c, step) -> str:
    """One step: a SQL text as a simple Query, ``("extended", sql)`` as unnamed
    Parse/Bind/Execute/Sync."""
    if isinstance(step, tuple):
        return planted.text(planted.raw_extended(c, step[1]))
    return planted.text(c.query(step))


def scenario(pg, paced, key, ddl, write, *, proxy=True, between=None, slow=True):
    """Plant afresh; ``key``'s session runs ``ddl`` (each its own Query: autocommit, settled
    at its ReadyForQuery), ``between(px)`` acts beside it (another session, the owner), then
    ``write`` at once. Directly (``proxy=False``) as the upstream login. What the DDL and
    the write received, and whether the session answers a query after."""
    pg.psql(TEARDOWN + SETUP, db="app")
    px = None
    if proxy:
        px = paced(0.0)
        if slow:
            slow_loads(px, 1.0)
        c = planted.session(px, px.tokens[key])
    else:
        c = RawClient.direct(pg)
    with c:
        got_ddl = "".join(_send(c, s) for s in ddl)
        if between is not None:
            between(pg, px)
        got = "".join(_send(c, s) for s in write)
        if proxy:
            got += _send(c, "ROLLBACK")
        usable = any(f[:1] == b"D" for f in c.query("SELECT 1"))
    return got_ddl, got, usable


def _refused(text: str) -> bool:
    return "C42501" in text and "pgwitness" in text


# --- 1. the agent's own DDL, then a write at once (before the reload) ------------------

P1 = "CREATE TABLE r59w.p1 PARTITION OF r59w.pt FOR VALUES IN (1)"
INS_P1 = "INSERT INTO r59w.p1 VALUES (1)"
CLONED = (
    "own DDL, then a write decided on the stale snapshot (StatementPolicy._stale_write "
    "returns False when _own_epoch == catalog_entry.epoch, no wait since 639fbb1): the new "
    "relation inherits code from a parent the snapshot lists as triggered (a row trigger "
    "cloned onto a partition; a CHECK or DEFAULT inherited by a partition or an INHERITS "
    "child), but _writes_reach_unseen looks the new name up in the stale Snapshot.triggered, "
    "which does not have it: not withheld, the parent's code's NOTICE (the vault marker) "
    "reaches the client whole. Before 639fbb1 the write waited for the reload "
    "(TRIGGERED_SQL lists the child) and was withheld; a write to the parent is withheld"
)
IN_BLOCK = (
    "the same inside the DDL's own block (BEGIN; CREATE TABLE ... PARTITION OF; INSERT): a "
    "write in its own DDL's block never waited (_stale_write, ddl_open), so this predates "
    "639fbb1: the cloned trigger's NOTICE passes whole"
)
OWN: dict[str, tuple] = {
    # leaks until fixed in session 28 (CLONED, IN_BLOCK above: _unfollowed_ddl)
    "partition-of-triggered": ("base", [P1], [INS_P1], False),
    "partition-of-triggered-extended": ("base", [P1], [("extended", INS_P1)], False),
    "partition-of-triggered-exe": ("exe", [P1], [INS_P1], False),
    "partition-of-triggered-via-parent-name": (
        "base", [P1], ["INSERT INTO r59w.pt VALUES (1)"], False),
    "partition-of-checked": (
        "base", ["CREATE TABLE r59w.p1 PARTITION OF r59w.pc FOR VALUES IN (1)"],
        [INS_P1], False),
    "inherits-checked-default": (
        "base", ["CREATE TABLE r59w.c1 () INHERITS (r59w.par)"],
        ["INSERT INTO r59w.c1 (k) VALUES (1)"], False),
    "partition-of-in-own-block": (
        "base", ["BEGIN", P1], [INS_P1], False),
    "granted-code-makes-partition": (
        "exe", ["SELECT r59w.mkpart()"], [INS_P1], False),
    # held
    "attach-partition": (
        "base", ["ALTER TABLE r59w.pt ATTACH PARTITION r59w.mine FOR VALUES IN (2)"],
        ["INSERT INTO r59w.mine VALUES (2)"], False),
    "inherit": ("base", ["ALTER TABLE r59w.inh INHERIT r59w.par"],
                ["INSERT INTO r59w.inh VALUES (1)"], False),
    "like-including-all": ("base", ["CREATE TABLE r59w.l1 (LIKE r59w.src INCLUDING ALL)"],
                           ["INSERT INTO r59w.l1 (k) VALUES (1)"], False),
    "like-including-defaults": (
        "base", ["CREATE TABLE r59w.l1 (LIKE r59w.src INCLUDING DEFAULTS)"],
        ["INSERT INTO r59w.l1 (k) VALUES (1)"], False),
    "like-into-temp": ("base", ["CREATE TEMP TABLE l1 (LIKE r59w.src INCLUDING ALL)"],
                       ["INSERT INTO l1 (k) VALUES (1)"], False),
    "enable-trigger": ("base", ["ALTER TABLE r59w.dis ENABLE TRIGGER r59_dis"],
                       ["INSERT INTO r59w.dis VALUES (1)"], False),
    "enable-row-security": (
        "base", ["ALTER TABLE r59w.rls ENABLE ROW LEVEL SECURITY",
                 "ALTER TABLE r59w.rls FORCE ROW LEVEL SECURITY"],
        ["INSERT INTO r59w.rls VALUES (1)"], False),
    "column-type-domain": (
        "base", ["ALTER TABLE r59w.mine ALTER COLUMN k TYPE r59w.dom"],
        ["INSERT INTO r59w.mine VALUES (1)"], False),
    "add-column-domain": ("base", ["ALTER TABLE r59w.mine ADD COLUMN z r59w.dom"],
                          ["INSERT INTO r59w.mine VALUES (1, 1)"], False),
    "rename-triggered": ("base", ["ALTER TABLE r59w.trg RENAME TO fresh"],
                         ["INSERT INTO r59w.fresh VALUES (1)"], False),
    "swap-names": (
        "base", ["ALTER TABLE r59w.mine RENAME TO old", "ALTER TABLE r59w.trg RENAME TO mine"],
        ["INSERT INTO r59w.mine VALUES (1)"], False),
    "rename-instead-of-view": ("base", ["ALTER VIEW r59w.iv RENAME TO iv2"],
                               ["INSERT INTO r59w.iv2 VALUES (1)"], False),
    "rename-cascading-parent": ("base", ["ALTER TABLE r59w.fkp RENAME TO fkq"],
                                ["DELETE FROM r59w.fkq"], False),
    "drop-shadowing-table": (
        "base", ["SET search_path = r59w, r59z", "DROP TABLE r59w.sh"],
        ["INSERT INTO sh VALUES (1)"], False),
    "trigger-of-outside-function": (
        "base", ["CREATE TRIGGER r59_new BEFORE INSERT ON r59w.mine FOR EACH ROW "
                 "EXECUTE FUNCTION r59x.tf()"], ["INSERT INTO r59w.mine VALUES (1)"], False),
    "default-of-outside-function": (
        "base", ["ALTER TABLE r59w.mine ADD COLUMN z int DEFAULT r59x.dflt()"],
        ["INSERT INTO r59w.mine (k) VALUES (1)"], False),
    "generated-of-outside-function": (
        "base", ["ALTER TABLE r59w.mine ADD COLUMN z bool GENERATED ALWAYS AS "
                 "(r59x.chk(k)) STORED"], ["INSERT INTO r59w.mine (k) VALUES (1)"], False),
    "index-of-outside-function": (
        "base", ["CREATE INDEX r59_ix ON r59w.mine ((r59x.chk(k)))"],
        ["INSERT INTO r59w.mine VALUES (1)"], False),
    "set-schema-out": ("base", ["ALTER TABLE r59w.trg SET SCHEMA r59z"],
                       ["INSERT INTO r59z.trg VALUES (1)"], False),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(OWN))
def test_own_ddl_then_write(pg, paced, name):
    key, ddl, write, _ = OWN[name]
    _, direct, _ = scenario(pg, paced, key, ddl, write, proxy=False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    got_ddl, got, usable = scenario(pg, paced, key, ddl, write)
    assert usable, (name, got[-300:])
    assert not shows(got_ddl + got, MARK), ("LEAK", name, got[-500:])


def test_baseline_write_to_triggered_parent_withheld(pg, paced):
    """No DDL at all: a write to the triggered parent (what p1 inherits from) is withheld."""
    got_ddl, got, usable = scenario(pg, paced, "base", [], ["INSERT INTO r59w.pt VALUES (0)"])
    assert usable and "message withheld" in got and not shows(got, MARK), got[-400:]


# --- 2. another session's DDL between the agent's own DDL and its write -----------------

TRIGGER_MINE = (
    "CREATE TRIGGER r59_new BEFORE INSERT ON r59w.mine FOR EACH ROW EXECUTE FUNCTION r59x.tf()"
)


def _other(key: str, sql: str):
    def act(pg, px) -> None:
        if px is None:  # directly: the same DDL as the upstream login
            with RawClient.direct(pg) as b:
                out = planted.text(b.query(sql))
        else:
            with planted.session(px, px.tokens[key]) as b:
                out = planted.text(b.query(sql))
        assert not planted.is_error(out), out[-300:]

    return act


def _owner(sql: str):
    def act(pg, px) -> None:
        pg.psql(f"SET ROLE pgwitness; {sql}", db="app")

    return act


OWN_TABLE = "CREATE TABLE r59w.own1 (k int)"
RACES: dict[str, tuple] = {
    "other-grant-trigger": ([OWN_TABLE], _other("other", TRIGGER_MINE),
                            ["INSERT INTO r59w.mine VALUES (1)"]),
    "other-grant-trigger-extended": (
        [OWN_TABLE], _other("other", TRIGGER_MINE), [("extended", "INSERT INTO r59w.mine VALUES (1)")]),
    "dry-run-trigger": ([OWN_TABLE], _other("dry", TRIGGER_MINE),
                        ["INSERT INTO r59w.mine VALUES (1)"]),
    "other-grant-harmless-then-own-partition": (
        [P1], _other("other", "CREATE TABLE r59w.other1 (k int)"), [INS_P1]),
    "other-grant-trigger-in-own-block": (
        ["BEGIN", OWN_TABLE], _other("other", TRIGGER_MINE), ["INSERT INTO r59w.mine VALUES (1)"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RACES))
def test_other_ddl_between(pg, paced, name):
    ddl, between, write = RACES[name]
    _, direct, _ = scenario(pg, paced, "base", ddl, write, proxy=False, between=between)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    got_ddl, got, usable = scenario(pg, paced, "base", ddl, write, between=between)
    assert usable, (name, got[-300:])
    assert not shows(got_ddl + got, MARK), ("LEAK", name, got[-500:])


def test_owner_ddl_outside_proxy_between(pg, paced):
    """The owner's CREATE TRIGGER outside the proxy between the agent's own DDL and its
    write: the proxy hears nothing of it (the standing residue of DDL outside the proxy:
    a session that ran no DDL shows the trigger's NOTICE whole too). The agent's own DDL
    must make it no worse than that baseline."""
    write = ["INSERT INTO r59w.mine VALUES (1)"]
    _, direct, _ = scenario(pg, paced, "base", [OWN_TABLE], write, proxy=False,
                            between=_owner(TRIGGER_MINE))  # fmt: skip
    assert shows(direct, MARK), direct[-400:]
    _, own, usable = scenario(pg, paced, "base", [OWN_TABLE], write, between=_owner(TRIGGER_MINE))
    _, base, usable_base = scenario(pg, paced, "base", [], write, between=_owner(TRIGGER_MINE))
    assert usable and usable_base
    assert shows(base, MARK), ("the residue is gone: tighten this probe", base[-300:])
    assert shows(own, MARK) <= shows(base, MARK), (own[-300:], base[-300:])
