"""Decisions that DDL outruns (session 19, red-team round 23): the columns a DDL renames or
drops are gone from the snapshot at once and until a load that started after its
transaction ended; prepared statements are decided again at their first use after the
catalog changed (docs/policy.md, "When DDL changes what a decided statement means")."""

from __future__ import annotations

import gc
import time

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache, Snapshot, without_columns
from policy.classify.pgparse import ANY_RELATION, removed_columns
from tests.support.ddl_code import wired_session

SCOPES = "read:public.t,public.kid ddl:public.t,public.kid"
PROBE = "SELECT o.pin FROM public.t o"  # a column while it exists, else the call pin(o)


def cache() -> CatalogCache:
    c = CatalogCache()
    # pin: a user function taking the row (column syntax may call it), and a column of t
    c.put("db", ["pin"], {"public.t": frozenset({"id", "pin"}), "public.kid": frozenset({"pin"})},
          descendants={"public.t": frozenset({"public.kid"})})  # fmt: skip
    return c


def session(c: CatalogCache, task: str = "T") -> StatementPolicy:
    p = StatementPolicy(parse_scopes(SCOPES), task=task, shared=None)
    p.catalog = lambda: c.get("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.on_settle = lambda removed: c.settle("db", removed)
    p.catalog_listener = c.listen("db", p)
    return p


def test_removed_columns_reads_renames_and_drops():
    assert removed_columns("ALTER TABLE public.t RENAME COLUMN a TO b") == {("public", "t", "a")}
    assert removed_columns("ALTER TABLE t RENAME a TO b") == {(None, "t", "a")}
    assert removed_columns("ALTER TABLE t DROP COLUMN a, DROP IF EXISTS c, ADD d int") == {
        (None, "t", "a"), (None, "t", "c")}  # fmt: skip
    assert removed_columns("ALTER VIEW v RENAME COLUMN a TO b") == {(None, "v", "a")}
    assert removed_columns("ALTER TABLE t ADD COLUMN a int") == frozenset()
    assert removed_columns("ALTER TABLE t RENAME TO u") == frozenset()
    assert removed_columns("not sql at all") == frozenset()


def test_the_rest_of_the_message_is_decided_with_the_column_gone():
    p = session(cache())
    assert p.check_query(PROBE).allowed
    v = p.check_query(f"ALTER TABLE public.t RENAME COLUMN pin TO gone; {PROBE}")
    assert not v.allowed and "public.pin" in v.message and "scope.execute" in v.message
    assert p.check_query(f"ALTER TABLE public.t ADD COLUMN extra int; {PROBE}").allowed


def test_every_session_sees_the_column_gone_until_a_load_after_the_transaction_ended():
    c = cache()
    ddl, other = session(c, "A"), session(c, "B")
    assert ddl.check_query("ALTER TABLE public.t RENAME COLUMN pin TO gone").allowed
    assert ddl.ddl_unsettled == {("public.t", "pin"), ("public.kid", "pin")}  # inherited too
    assert not other.check_query(PROBE).allowed
    # a load that ran before the transaction ended (it may not show the rename): still gone
    c.put("db", ["pin"], {"public.t": frozenset({"id", "pin"})})
    assert not other.check_query(PROBE).allowed
    ddl.settle_ddl()  # ReadyForQuery 'I': the block ended (the rename was rolled back, say)
    assert not ddl.ddl_unsettled
    time.sleep(0.001)
    c.put("db", ["pin"], {"public.t": frozenset({"id", "pin"})})  # started after: the truth
    assert other.check_query(PROBE).allowed


def test_a_protocol_level_statement_is_decided_again_at_its_bind_after_a_change():
    c = cache()
    p, ddl = session(c, "B"), session(c, "A")
    assert p.check_parse(PROBE, (), "s1").allowed and not p.rebind
    p.answered(True)  # ReadyForQuery: the server holds it
    assert ddl.check_query("ALTER TABLE public.t DROP COLUMN pin").allowed
    assert "s1" in p.rebind  # pushed: the relay looks at its Binds now
    v = p.check_bind("s1", (), (), "utf-8")
    assert not v.allowed and "decided again at its Bind" in v.message, v.message
    assert "s1" not in p.rebind
    # a statement parsed after the change is decided on the changed snapshot already
    assert not p.check_parse(PROBE, (), "s2").allowed
    assert p.check_parse("SELECT o.id FROM public.t o", (), "s3").allowed
    p.answered(True)  # ReadyForQuery: the server holds it
    ddl.check_query("ALTER TABLE public.t ADD COLUMN x int")  # another change
    assert "s3" in p.rebind and p.check_bind("s3", (), (), "utf-8").allowed


def test_a_sql_prepare_is_decided_again_at_execute_after_a_change():
    c = cache()
    p, ddl = session(c, "B"), session(c, "A")
    assert p.check_query(f"PREPARE q AS {PROBE}").allowed
    p.answered(True)  # ReadyForQuery: the server holds it
    assert p.check_query("EXECUTE q").allowed
    assert ddl.check_query("ALTER TABLE public.t RENAME COLUMN pin TO gone").allowed
    v = p.check_query("EXECUTE q")
    assert not v.allowed and "decided again" in v.message, v.message
    assert p.check_query("DEALLOCATE q").allowed
    assert not p.check_query("EXECUTE q").allowed  # not prepared here any more


def test_a_forgotten_statement_name_is_refused_after_a_change():
    c = cache()
    p, ddl = session(c, "B"), session(c, "A")
    p.check_parse("SELECT 1", (), "old")
    p.answered(True)  # ReadyForQuery: the server holds it
    p._statements.pop("old")  # as if pushed out by MAX_REMEMBERED_STATEMENTS newer names
    ddl.check_query("ALTER TABLE public.t ADD COLUMN x int")
    p.rebind["old"] = None
    v = p.check_bind("old", (), (), "utf-8")
    assert not v.allowed and "prepare it again" in v.message


def test_listeners_go_with_their_sessions():
    c = cache()
    p = session(c)
    assert len(c.entry("db").listeners) == 1
    del p
    gc.collect()
    assert len(c.entry("db").listeners) == 0


def test_a_statement_resting_on_a_complete_catalog_is_decided_again_without_waiting():
    """Such a statement waited for a load at its Parse; its Bind cannot wait, so after a
    change it is decided on the current snapshot as if it had waited for that one (a
    refusal here would break a driver's prepared metadata query at every catalog load)."""
    from dataclasses import replace
    from time import monotonic

    from policy.catalog import Snapshot
    from policy.engine import CATALOG_WAIT

    p = StatementPolicy(parse_scopes("read:public.orders execute:public.fn"), task="T")
    current = [Snapshot(frozenset(), {}, loaded_at=monotonic() - 100,
                        defaulted_functions=frozenset({("public", "fn")}))]  # fmt: skip
    p.catalog = lambda: current[0]
    p.on_stale = lambda since: None
    sql = "SELECT pg_get_function_arguments(16999)"
    assert p.check_parse(sql, (), "meta") is CATALOG_WAIT
    current[0] = replace(current[0], loaded_at=monotonic())  # the load it waited for
    assert p.check_parse(sql, (), "meta").allowed
    p.answered(True)  # ReadyForQuery: the server holds it
    current[0] = replace(current[0], loaded_at=monotonic())  # a later load: a change
    p.catalog_changed()
    verdict = p.check_bind("meta", (), (), "utf-8")
    assert verdict.allowed, verdict.message
    assert p.waiting_since is None  # nothing left waiting for the next statement


def test_renamed_relations_reads_renames_and_moves_of_tables_and_views():
    from policy.classify.pgparse import renamed_relations

    assert renamed_relations("ALTER TABLE ONLY public.ra RENAME TO rb") == [
        (("public", "ra"), ("public", "rb"))]  # fmt: skip
    assert renamed_relations("ALTER VIEW bv RENAME TO tmp") == [((None, "bv"), (None, "tmp"))]
    assert renamed_relations("ALTER TABLE t SET SCHEMA other") == [((None, "t"), ("other", "t"))]
    assert renamed_relations("ALTER TABLE t RENAME COLUMN a TO b") == []
    # ALTER INDEX and ALTER SEQUENCE rename any relation, a table or a view too (round 27):
    # followed like ALTER TABLE (an index renamed is marked too: nothing reads it by name)
    assert renamed_relations("ALTER INDEX i RENAME TO j") == [((None, "i"), (None, "j"))]
    assert renamed_relations("ALTER SEQUENCE s.q RENAME TO r") == [(("s", "q"), ("s", "r"))]
    assert renamed_relations("ALTER SEQUENCE q SET SCHEMA o") == [((None, "q"), ("o", "q"))]
    assert renamed_relations("ALTER TYPE t RENAME TO u") == []


def test_a_type_attribute_removed_takes_the_column_from_every_relation():
    """``ALTER TYPE ... DROP|RENAME ATTRIBUTE ... CASCADE`` changes every table made OF the
    type, which the snapshot does not map (round 27): the column goes from all of them."""
    assert (None, ANY_RELATION, "pin") in removed_columns(
        "ALTER TYPE s.comp DROP ATTRIBUTE pin CASCADE")
    assert (None, ANY_RELATION, "pin") in removed_columns(
        "ALTER TYPE s.comp RENAME ATTRIBUTE pin TO gone CASCADE")
    assert not any(rel == ANY_RELATION for _, rel, _ in removed_columns(
        "ALTER TABLE s.t DROP COLUMN pin"))  # fmt: skip
    snap = Snapshot(frozenset({"pin"}), {"s.typed": frozenset({"id", "pin"}),
                                         "s.other": frozenset({"pin"}), "s.x": frozenset({"id"})})
    out = without_columns(snap, frozenset({(ANY_RELATION, "pin")}))
    assert out.columns == {"s.typed": frozenset({"id"}), "s.other": frozenset(),
                           "s.x": frozenset({"id"})}


def test_a_renamed_parent_or_view_is_refused_until_a_load_after_its_transaction():
    """Round 24: what the snapshot knows by name (descendants, barriers, columns) may
    belong to another name involved in a rename whose transaction may still be open."""
    c = CatalogCache()
    c.put("db", ["pin"], {"public.ra": frozenset({"v"}), "public.plain": frozenset({"v"})},
          descendants={"public.ra": frozenset({"secret.kid"})},
          view_names=["public.bv", "public.nbv"], views={"public.nbv": frozenset({"secret.acc"})})  # fmt: skip
    rels = "public.ra,public.rb,public.bv,public.nbv,public.tmp,public.plain,public.plain2"
    p = StatementPolicy(parse_scopes(f"read:{rels} write:{rels} ddl:{rels}"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.on_settle = lambda removed: c.settle("db", removed)
    # the parent renamed ONLY onto a granted name: its child's rows under the new name
    v = p.check_query("ALTER TABLE ONLY public.ra RENAME TO rb; SELECT v FROM public.rb")
    assert not v.allowed and "until the catalog shows its rename" in v.message, v.message
    assert p.check_query("ALTER TABLE ONLY public.ra RENAME TO rb").allowed
    for sql in ("SELECT v FROM public.rb", "UPDATE public.rb SET v = 1", "TABLE public.ra"):
        assert not p.check_query(sql).allowed, sql
    # a swap of views by three renames: the barrier's name now names the other view
    assert p.check_query("ALTER VIEW public.nbv RENAME TO tmp; ALTER VIEW public.bv RENAME TO "
                         "nbv; ALTER VIEW public.tmp RENAME TO bv").allowed  # renames are DDL
    v = p.check_query("SELECT * FROM public.bv WHERE pin::int > 0")
    assert not v.allowed and "public.bv, public.nbv, public.tmp" in v.message, v.message
    # a plain table renamed: nothing known by name decides, so it is used as before...
    assert p.check_query("ALTER TABLE public.plain RENAME TO plain2").allowed
    assert p.check_query("SELECT v FROM public.plain2").allowed
    assert p.check_query("INSERT INTO public.plain2 VALUES (1)").allowed
    # ...but not with column syntax (its columns are known by name)
    assert not p.check_query("SELECT x.v FROM public.plain2 x").allowed
    p.settle_ddl()
    time.sleep(0.001)
    c.put("db", ["pin"], {"public.rb": frozenset({"v"}), "public.plain2": frozenset({"v"})},
          descendants={"public.rb": frozenset({"secret.kid"})})  # fmt: skip
    assert p.check_query("SELECT x.v FROM public.plain2 x").allowed
    v = p.check_query("SELECT v FROM public.rb")  # decided by what the load says now
    assert not v.allowed and "inherits from it" in v.message, v.message
    assert p.check_query("SELECT v FROM ONLY public.rb").allowed


def test_a_key_ends_only_when_every_session_holding_it_settled():
    """Round 25: another session's failed message naming the same rename settled it while
    the renaming block was still open."""
    c = cache()
    a, b = session(c, "A"), session(c, "B")
    rename = "ALTER TABLE public.t RENAME COLUMN pin TO gone"
    assert a.check_query(rename).allowed  # a's block stays open
    assert b.check_query(f"SELECT 1/0; {rename}").allowed  # the server never runs it
    b.settle_ddl()
    time.sleep(0.001)
    c.put("db", ["pin"], {"public.t": frozenset({"id", "pin"})})  # cannot see a's rename
    assert not b.check_query(PROBE).allowed  # still gone: a holds it
    a.settle_ddl()
    time.sleep(0.001)
    c.put("db", ["pin"], {"public.t": frozenset({"id", "gone"})})
    assert not c.entry("db").removed and not c.entry("db").holders


def test_a_dropped_relation_is_unsettled_like_a_renamed_one():
    """Round 25: DROP TABLE t; CREATE TABLE t (...) without the column: o.col stayed a
    column to the snapshot."""
    from policy.classify.pgparse import renamed_relations

    assert renamed_relations("DROP TABLE public.t, u") == [
        (("public", "t"), ("public", "t")), ((None, "u"), (None, "u"))]  # fmt: skip
    assert renamed_relations("DROP VIEW IF EXISTS v CASCADE") == [((None, "v"), (None, "v"))]
    assert renamed_relations("DROP FUNCTION f()") == []
    c = cache()
    p = session(c)
    v = p.check_query(f"DROP TABLE public.t; CREATE TABLE public.t (id int); {PROBE}")
    assert not v.allowed and "until the catalog shows its rename" in v.message, v.message


def test_a_sql_prepare_bound_over_the_protocol_is_decided_again():
    """Round 25: SQL and protocol prepared statements share one namespace; a protocol Bind
    of a SQL PREPARE's name after a change is decided again like an EXECUTE."""
    c = cache()
    p, ddl = session(c, "B"), session(c, "A")
    assert p.check_query(f"PREPARE q AS {PROBE}").allowed
    p.answered(True)  # ReadyForQuery: the server holds it
    assert ddl.check_query("ALTER TABLE public.t RENAME COLUMN pin TO gone").allowed
    assert "q" in p.rebind and p.bind_checked("q")
    v = p.check_bind("q", (), (), "utf-8")
    assert not v.allowed and "PREPARE q" in v.message, v.message


def test_after_a_name_was_forgotten_an_unknown_names_bind_is_refused():
    """Round 25: a name pushed out before the change was in neither list."""
    from policy.engine import MAX_REMEMBERED_STATEMENTS

    c = cache()
    p, ddl = session(c, "B"), session(c, "A")
    assert p.check_parse(PROBE, (), "old").allowed
    p.answered(True)  # ReadyForQuery: the server holds it
    for i in range(MAX_REMEMBERED_STATEMENTS):
        p.check_parse("SELECT 1", (), f"s{i}")
        p.answered(True)  # ReadyForQuery: the server holds it
    assert not p.bind_checked("old")  # nothing changed yet: not looked at
    ddl.check_query("ALTER TABLE public.t ADD COLUMN x int")
    assert p.rebind_unknown and p.bind_checked("old") and "old" not in p.rebind
    v = p.check_bind("old", (), (), "utf-8")
    assert not v.allowed and "prepare it again" in v.message, v.message
    assert p.check_bind(f"s{MAX_REMEMBERED_STATEMENTS - 1}", (), (), "utf-8").allowed


def test_a_statement_on_a_renamed_name_waits_for_a_load_and_then_is_decided_by_it():
    """Once the renaming transaction ended, a statement that meets its marks waits for a
    load started after it arrived (one CATALOG_WAIT), which shows the rename settled; while
    the transaction is open, that load still holds the marks and the statement is refused."""
    from policy.engine import CATALOG_WAIT

    c = CatalogCache()
    c.put("db", ["v"], {"public.plain": frozenset({"v"})})
    p = StatementPolicy(parse_scopes("read:public.plain,public.plain2 ddl:public.plain,"
                                     "public.plain2"), task="T", shared=None)  # fmt: skip
    p.catalog = lambda: c.get("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.on_settle = lambda removed: c.settle("db", removed)
    loads: list[float] = []
    p.on_stale = loads.append
    assert p.check_query("ALTER TABLE public.plain RENAME TO plain2").allowed
    probe = "SELECT x.v FROM public.plain2 x"
    assert p.check_query(probe) is CATALOG_WAIT and len(loads) == 1
    time.sleep(0.001)
    c.put("db", ["v"], {"public.plain2": frozenset({"v"})})  # the block is still open
    v = p.check_query(probe)
    assert not v.allowed and "until the catalog shows its rename" in v.message
    p.settle_ddl()  # the block ended
    assert p.check_query(probe) is CATALOG_WAIT and len(loads) == 2
    time.sleep(0.001)
    c.put("db", ["v"], {"public.plain2": frozenset({"v"})})
    assert p.check_query(probe).allowed


def _writer(c: CatalogCache, scopes: str, task: str) -> tuple[StatementPolicy, list]:
    """A session on ``c`` whose reload asks (``on_stale``) are listed."""
    return wired_session(c, scopes, task)


def test_a_write_on_a_stale_snapshot_waits_once_for_the_reload_after_ddl():
    """Another grant's DDL made the snapshot stale: a trigger it attached is not in it. An
    allowed write waits (CATALOG_WAIT, asking for the reload after the DDL: ``None``), then
    is decided on the snapshot that knows; a read does not wait. A Bind cannot wait: its
    write on a stale snapshot is withheld (``writes_unreadable``)."""
    from policy.engine import CATALOG_WAIT

    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})})
    writer, asks = _writer(c, "read:public.t write:public.t", "W")
    migrator, _ = _writer(c, "read:public.t write:public.t ddl:public.t", "M")
    write = "INSERT INTO public.t VALUES (1)"
    assert not writer.writes_unreadable(writer.check_query(write))  # no trigger: whole
    assert writer.check_parse("UPDATE public.t SET k = 2", (), "s1").allowed
    writer.answered(True)  # ReadyForQuery: the server holds it
    assert migrator.check_query("ALTER TABLE public.t ADD COLUMN extra int").allowed
    assert c.get("db").stale
    assert writer.check_query("SELECT k FROM public.t").allowed  # a read: no wait
    assert writer.check_query(write) is CATALOG_WAIT and asks == [None]
    assert writer.stale_write
    time.sleep(0.001)
    c.put("db", [], {"public.t": frozenset({"k", "extra"})}, triggered=["public.t"])
    v = writer.check_query(write)  # the reload it waited for: decided on it
    assert v.allowed and not writer.stale_write and writer.writes_unreadable(v)
    assert len(asks) == 1
    # a Bind of a write prepared before, after the next DDL: decided again, cannot wait
    assert migrator.check_query("ALTER TABLE public.t ADD COLUMN more int").allowed
    assert "s1" in writer.rebind
    v = writer.check_bind("s1", (), (), "utf-8")
    assert v.allowed and len(asks) == 1 and writer.writes_unreadable(v)


def test_a_write_whose_reload_is_stale_too_is_withheld():
    """The load a write waited for was itself overtaken by DDL: the write goes on, once,
    with its errors withheld (it cannot speak for the trigger that DDL may attach)."""
    from policy.engine import CATALOG_WAIT

    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})})
    writer, asks = _writer(c, "read:public.t write:public.t", "W")
    c.invalidate("db")
    write = "DELETE FROM public.t"
    assert writer.check_query(write) is CATALOG_WAIT
    c.put("db", [], {"public.t": frozenset({"k"})})
    c.invalidate("db")  # DDL again while it loaded
    v = writer.check_query(write)
    assert v.allowed and writer.writes_unreadable(v)
    assert writer.check_query(write) is CATALOG_WAIT  # the next statement waits on its own
    assert len(asks) == 2


def test_the_end_of_a_block_that_ran_ddl_makes_the_snapshot_stale():
    """A load DDL started runs beside it (or before its block commits): the block's end
    (``settle_ddl``) asks for another, whatever the DDL was; without DDL, nothing."""
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})})
    migrator, _ = _writer(c, "read:public.t write:public.t ddl:public.t", "M")
    settles: list = []
    migrator.on_settle = lambda removed: (settles.append(removed), c.invalidate("db"))
    migrator.settle_ddl()
    assert settles == []  # no DDL: nothing to settle
    assert migrator.check_query("BEGIN").allowed
    assert migrator.check_query("CREATE INDEX ON public.t (k)").allowed and migrator.ddl_open
    time.sleep(0.001)
    c.put("db", [], {"public.t": frozenset({"k"})})  # loaded inside the block
    assert not c.get("db").stale
    migrator.settle_ddl()  # ReadyForQuery 'I': committed
    assert settles == [frozenset()] and not migrator.ddl_open and c.get("db").stale
