"""Red-team round 27: session 20's migration changes (16c6551, eda6910), the server the judge.

Attacked: ``StatementPolicy._through_renames`` / ``_renamed_reach`` (a rename in a
transaction that may still be open refused only where one of the names involved would reach
what the grant may not), ``_writes_reach_unseen`` following renames for error withholding,
the column-syntax check waiting for one load on a stale snapshot (``_after_a_load``), the
catalog load's fallback under a migration's lock (``VIEW_NAMES_SQL``,
``Snapshot.views_unread``), ``CatalogCache.put``'s stale mark, and ``waiting_since``.

Grant (agent ``r27-bot``): ``read:r27s.* write:r27s.* ddl:r27s.*``, a migration's grant on
its own schema. Planted by the schema owner (``pgwitness``, the proxy's upstream login):
schema ``r27x`` outside the grant (``r27x.vault``, ``r27x.acc``, ``r27x.ledger``,
``r27x.kid``, each holding a marker), and in ``r27s``: a barrier view ``bv`` and a view
without one ``nbv`` over another owner's rows of ``r27x.acc``; ``cf`` (column ``r27_cpin``)
and ``cf2`` (no such column; ``public.r27_cpin(r27s.cf2)`` reads the vault); ``acct``,
referenced ``ON UPDATE CASCADE`` by ``r27x.ledger`` whose CHECK casts its secret value;
``logged``, whose trigger casts the vault's value; a typed table ``typed OF r27s.comp``
(attribute ``r27_pin``; ``public.r27_pin(anyelement)`` reads the vault); ``par`` with a
secret inheritance child ``r27x.kid``. Each leak is first shown to come back directly (as
the upstream login), then through the proxy. Leaks were ``xfail(strict=True)`` until fixed;
all four are fixed the same session: ``ALTER INDEX``/``ALTER SEQUENCE`` renames and moves
are followed (``pgparse._RENAMED_KINDS``), foreign-key actions are followed through every
name a renamed relation may have, withholding after DDL earlier in the same message reads
the snapshot the DDL left, and a composite type's attribute renamed or dropped takes the
column from every relation until settled (``pgparse.ANY_RELATION``: the snapshot does not
map typed tables to their types).

Leaks found:

1. **``ALTER INDEX`` renames a table or a view, and is not followed.** PostgreSQL accepts
   ``ALTER INDEX <table or view> RENAME TO`` (RangeVarCallbackForAlterRelation allows any
   relation kind for RENAME); the classifier allows it with ``ddl:`` on both names, and
   ``pgparse.renamed_relations`` follows ``OBJECT_TABLE/VIEW/MATVIEW/FOREIGN_TABLE`` only
   (``_RENAMED_KINDS``), so no ``unsettled`` mark is made and ``_through_renames`` never
   looks. Round 24's swaps are back: ``BEGIN; ALTER INDEX r27s.bv RENAME TO bv_old; ALTER
   INDEX r27s.nbv RENAME TO bv; SELECT * FROM r27s.bv WHERE pin::int > 0`` returns
   ``invalid input syntax for type integer: "R27-ACC-5c04"`` (another owner's row, which
   the barrier view hid) in separate Queries, one Query, and one pipeline; the same swap
   of ``cf``/``cf2`` makes ``SELECT o.r27_cpin FROM r27s.cf o`` the call
   ``public.r27_cpin(o)`` (no execute scope), which returns the vault's marker. The same
   renames written ``ALTER TABLE``/``ALTER VIEW`` are refused (held below).

2. **Foreign-key actions are not followed through a rename** (``writes_unreadable``:
   ``Snapshot.cascades`` is read by the statement's name only; eda6910 made
   ``_writes_reach_unseen`` follow renames for triggers, rules and views, not cascades).
   ``UPDATE r27s.acct SET id = 2 WHERE id = 1`` has its messages withheld (its ON UPDATE
   CASCADE writes ``r27x.ledger``); ``BEGIN; ALTER TABLE r27s.acct RENAME TO acct2;
   UPDATE r27s.acct2 SET id = 2 WHERE id = 1`` is not, and the cascade's CHECK quotes the
   secret row: ``invalid input syntax for type integer: "R27-LEDGER-5c02"`` (simple and
   pipelined).

3. **A rename and a write in one Query: withholding is decided on the snapshot before the
   rename.** ``writes_unreadable`` runs after ``check_query`` on ``_snapshot_seen``, the
   snapshot the Query was checked on; the rename's marks (``on_ddl`` -> ``invalidate``)
   are in the cache's snapshot only. ``ALTER TABLE r27s.logged RENAME TO logged2; UPDATE
   r27s.logged2 SET id = 2`` as one Query: the trigger's error comes back whole
   (``"R27-VAULT-5c03"``); in two Queries it is withheld (held below).

4. **``ALTER TYPE ... DROP ATTRIBUTE ... CASCADE`` drops the column of every typed table**
   (``CREATE TABLE t OF type``), and ``removed_columns`` names the type only: ``BEGIN;
   ALTER TYPE r27s.comp DROP ATTRIBUTE r27_pin CASCADE; SELECT t.r27_pin FROM r27s.typed
   t``: the snapshot still lists the column (the load after the DDL cannot see the open
   transaction), PostgreSQL calls ``public.r27_pin(t)`` and returns the vault's marker.

Held (regression tests below): view and column-syntax swaps by ``ALTER TABLE``/``ALTER
VIEW`` (separate Queries, one Query, a pipeline, a statement prepared before and bound
after the renames); ``ALTER TABLE ONLY`` of a parent with a secret child renamed, then read
(refused), and ``ALTER INDEX`` of such a parent (refused: it reaches the child); a
triggered table renamed, then written in another Query (withheld); a cascading write
without a rename (withheld); the load's fallback under another session's lock (a view
hiding secret rows refused; a barrier view read with a condition shows nothing hidden).
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(120)

AGENT = "r27-bot"
SCOPES = "read:r27s.* write:r27s.* ddl:r27s.*"
R = {  # markers: must never come back through the proxy
    "kid": "R27-KID-5c01",
    "ledger": "R27-LEDGER-5c02",
    "vault": "R27-VAULT-5c03",
    "acc": "R27-ACC-5c04",
}
SECRETS = list(R.values())
ONLY_MINE = "lower(upper(lower(owner))) = 'me'"  # dearer than the probe's cast: runs later

SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r27s;
CREATE SCHEMA r27x;
CREATE TABLE r27x.vault (val text);
INSERT INTO r27x.vault VALUES ('{R["vault"]}');
-- a parent with a secret inheritance child
CREATE TABLE r27s.par (id int, v text);
INSERT INTO r27s.par VALUES (1, 'r27-par-ok');
CREATE TABLE r27x.kid () INHERITS (r27s.par);
INSERT INTO r27x.kid VALUES (2, '{R["kid"]}');
-- a foreign key's ON UPDATE CASCADE into a secret table whose CHECK casts its value
CREATE TABLE r27s.acct (id int PRIMARY KEY);
INSERT INTO r27s.acct VALUES (1);
CREATE TABLE r27x.ledger (acct int REFERENCES r27s.acct ON UPDATE CASCADE, val text,
  CHECK (acct = 1 OR val::int > 0));
INSERT INTO r27x.ledger VALUES (1, '{R["ledger"]}');
-- a trigger that casts a secret value
CREATE FUNCTION r27x.trg() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN PERFORM (SELECT val FROM r27x.vault)::int; RETURN NEW; END $$;
CREATE TABLE r27s.logged (id int);
INSERT INTO r27s.logged VALUES (1);
CREATE TRIGGER r27_t BEFORE UPDATE ON r27s.logged FOR EACH ROW EXECUTE FUNCTION r27x.trg();
-- a typed table whose column goes with its type's attribute
CREATE TYPE r27s.comp AS (id int, r27_pin text);
CREATE TABLE r27s.typed OF r27s.comp;
INSERT INTO r27s.typed VALUES (1, 'r27-ok');
CREATE FUNCTION public.r27_pin(r anyelement) RETURNS text LANGUAGE sql
  AS $$ SELECT val FROM r27x.vault $$;
-- another owner's row behind a barrier view, and the same rows behind a view without one
CREATE TABLE r27x.acc (owner text, pin text);
INSERT INTO r27x.acc VALUES ('me', '1'), ('other', '{R["acc"]}');
CREATE VIEW r27s.bv WITH (security_barrier) AS SELECT * FROM r27x.acc WHERE {ONLY_MINE};
CREATE VIEW r27s.nbv AS SELECT * FROM r27x.acc WHERE {ONLY_MINE};
-- column syntax: o.r27_cpin is a column of cf, a call on a row of cf2
CREATE TABLE r27s.cf (id int, r27_cpin text);
INSERT INTO r27s.cf VALUES (1, 'r27-ok-cf');
CREATE TABLE r27s.cf2 (id int);
INSERT INTO r27s.cf2 VALUES (1);
CREATE FUNCTION public.r27_cpin(r r27s.cf2) RETURNS text LANGUAGE sql
  AS $$ SELECT val FROM r27x.vault $$;
-- a table a view reads, for a migration's lock
CREATE TABLE r27s.spare (id int);
CREATE VIEW r27s.spare_v AS SELECT * FROM r27s.spare WHERE id > 0;
RESET ROLE;
"""
TEARDOWN = """
DROP SCHEMA IF EXISTS r27s, r27x CASCADE;
DROP FUNCTION IF EXISTS public.r27_pin(anyelement);
"""

V_SWAP = ("ALTER INDEX r27s.bv RENAME TO bv_old", "ALTER INDEX r27s.nbv RENAME TO bv")
V_SWAP_T = ("ALTER VIEW r27s.bv RENAME TO bv_old", "ALTER VIEW r27s.nbv RENAME TO bv")
V_PROBE = "SELECT * FROM r27s.bv WHERE pin::int > 0"
C_SWAP = ("ALTER INDEX r27s.cf RENAME TO cf_old", "ALTER INDEX r27s.cf2 RENAME TO cf")
C_SWAP_T = ("ALTER TABLE r27s.cf RENAME TO cf_old", "ALTER TABLE r27s.cf2 RENAME TO cf")
C_PROBE = "SELECT o.r27_cpin FROM r27s.cf o"
FK = ("ALTER TABLE r27s.acct RENAME TO acct2", "UPDATE r27s.acct2 SET id = 2 WHERE id = 1")
TRG = ("ALTER TABLE r27s.logged RENAME TO logged2", "UPDATE r27s.logged2 SET id = 2")
TYPED = ("ALTER TYPE r27s.comp DROP ATTRIBUTE r27_pin CASCADE",
         "SELECT t.r27_pin FROM r27s.typed t")  # fmt: skip


@pytest.fixture(scope="module")
def proxy(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r27", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def direct(pg, sqls) -> str:
    """``sqls`` as Queries of one block, directly as the upstream login (rolled back)."""
    with RawClient.direct(pg) as c:
        got = [planted.text(c.query(s)) for s in ("BEGIN", *sqls)]
        c.query("ROLLBACK")
    return "".join(got)


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def in_block(proxy, sqls) -> str:
    """Each of ``sqls`` as a Query in one block through the proxy (rolled back)."""
    return "".join(planted.simple(proxy, ["BEGIN", *sqls, "ROLLBACK"]))


def in_pipeline(proxy, sqls) -> str:
    """``BEGIN``, then each of ``sqls`` as Parse/Bind/Execute of one pipeline (one Sync)."""
    with planted.session(proxy) as c:
        frames = c.query("BEGIN") + planted.pipelined(c, sqls) + c.query("ROLLBACK")
    return planted.text(frames)


def modes(proxy, sqls, one_query: bool = True) -> dict[str, str]:
    """What each mode gave back: separate Queries, one Query, one pipeline."""
    out = {"queries": in_block(proxy, sqls), "pipeline": in_pipeline(proxy, sqls)}
    if one_query:
        out["one query"] = in_block(proxy, ["; ".join(sqls)])
    return out


def assert_no_leak(got: dict[str, str]) -> None:
    found = {mode: leaked(t) for mode, t in got.items() if leaked(t)}
    assert not found, ("LEAK", found, {mode: got[mode][-400:] for mode in found})


# --- leaks ----------------------------------------------------------------------------


def test_views_swapped_by_alter_index(proxy, pg):
    sqls = (*V_SWAP, V_PROBE)
    assert leaked(direct(pg, sqls)) == [R["acc"]]
    assert_no_leak(modes(proxy, sqls))


def test_tables_swapped_by_alter_index_make_column_syntax_a_call(proxy, pg):
    sqls = (*C_SWAP, C_PROBE)
    assert leaked(direct(pg, sqls)) == [R["vault"]]
    assert_no_leak(modes(proxy, sqls))


def test_a_cascade_through_a_renamed_table_is_not_withheld(proxy, pg):
    assert leaked(direct(pg, FK)) == [R["ledger"]]
    # (one Query is left out: its withholding is decided before the rename, leak 3)
    assert_no_leak(modes(proxy, FK, one_query=False))


def test_a_trigger_of_a_table_renamed_in_the_same_query_is_not_withheld(proxy, pg):
    assert leaked(direct(pg, TRG)) == [R["vault"]]
    assert_no_leak({"one query": in_block(proxy, ["; ".join(TRG)])})


def test_a_typed_tables_column_dropped_through_its_type(proxy, pg):
    assert leaked(direct(pg, TYPED)) == [R["vault"]]
    assert_no_leak(modes(proxy, TYPED))


# --- held -----------------------------------------------------------------------------


def test_views_swapped_by_alter_view_are_refused(proxy, pg):
    sqls = (*V_SWAP_T, V_PROBE)
    assert leaked(direct(pg, sqls)) == [R["acc"]]
    got = modes(proxy, sqls)
    assert_no_leak(got)
    for mode, t in got.items():
        assert "42501" in t and "r27s.nbv is a view that hides rows" in t, (mode, t[-400:])


def test_tables_swapped_by_alter_table_keep_column_syntax_a_call(proxy, pg):
    sqls = (*C_SWAP_T, C_PROBE)
    assert leaked(direct(pg, sqls)) == [R["vault"]]
    got = modes(proxy, sqls)
    assert_no_leak(got)
    for mode, t in got.items():
        assert "42501" in t and "pgwitness: task" in t, (mode, t[-400:])


def test_a_statement_prepared_before_the_swap_is_refused_at_its_bind(proxy):
    # a Bind cannot wait for a load: decided again on the marks, refused
    with planted.session(proxy) as c:
        frames = planted.parsed(c, "r27_p", V_PROBE)
        frames += planted.parsed(c, "r27_c", C_PROBE)
        frames += c.query("BEGIN")
        for sql in (*V_SWAP_T, *C_SWAP_T):
            frames += c.query(sql)
        got_v = planted.text(planted.bound(c, "r27_p"))
        c.query("ROLLBACK")
        c.query("BEGIN")
        for sql in C_SWAP_T:
            c.query(sql)
        got_c = planted.text(planted.bound(c, "r27_c"))
        c.query("ROLLBACK")
    assert not leaked(planted.text(frames) + got_v + got_c)
    assert "42501" in got_v and "42501" in got_c, (got_v[-300:], got_c[-300:])


def test_a_parent_with_a_secret_child_renamed(proxy, pg):
    sqls = ("ALTER TABLE ONLY r27s.par RENAME TO par2", "SELECT * FROM r27s.par2")
    assert leaked(direct(pg, sqls)) == [R["kid"]]
    got = modes(proxy, sqls)
    got["alter index"] = in_block(proxy, ["ALTER INDEX r27s.par RENAME TO par2",
                                          "SELECT * FROM r27s.par2"])  # fmt: skip
    assert_no_leak(got)
    for mode, t in got.items():
        assert "42501" in t, (mode, t[-400:])


def test_a_triggered_table_renamed_then_written_in_another_query_is_withheld(proxy, pg):
    assert leaked(direct(pg, TRG)) == [R["vault"]]
    got = {"queries": in_block(proxy, TRG), "pipeline": in_pipeline(proxy, TRG)}
    assert_no_leak(got)
    for mode, t in got.items():
        assert "message withheld" in t, (mode, t[-400:])


def test_a_cascading_write_without_a_rename_is_withheld(proxy, pg):
    sql = "UPDATE r27s.acct SET id = 2 WHERE id = 1"
    assert leaked(direct(pg, [sql])) == [R["ledger"]]
    got = {"queries": in_block(proxy, [sql]), "pipeline": in_pipeline(proxy, [sql])}
    assert_no_leak(got)
    for mode, t in got.items():
        # refused by the policy since session 29 (its ON UPDATE action writes r27x.ledger,
        # outside the grant); before, it ran and its message was withheld
        assert "42501" in t and "foreign key" in t, (mode, t[-400:])


def test_the_load_under_a_lock_keeps_views_walled(proxy, pg):
    # another session's migration holds a lock on what spare_v reads: the load after the
    # DDL below cannot read view queries (VIEW_NAMES_SQL); every view counts as hiding
    assert leaked(direct(pg, [V_PROBE.replace(".bv", ".nbv")])) == [R["acc"]]
    with planted.session(proxy) as holder:
        assert "error" not in planted.result(holder.query("BEGIN"))
        held = planted.result(holder.query("ALTER TABLE r27s.spare ADD COLUMN qw int"))
        assert "error" not in held, held
        try:
            out = planted.simple(proxy, [
                "CREATE TABLE r27s.fresh (id int)",
                V_PROBE.replace(".bv", ".nbv"),
                V_PROBE,  # the barrier keeps the condition off the rows it hides
                "SELECT o.r27_cpin FROM r27s.cf o",  # a column of cf: decided on the load
                "DROP TABLE r27s.fresh",
            ])  # fmt: skip
        finally:
            holder.query("ROLLBACK")
    assert not leaked("".join(out)), out
    assert out[1].startswith("error 42501") and "deny.view" in out[1], out
    assert not out[2].startswith("error") and not out[3].startswith("error"), out
