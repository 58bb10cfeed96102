"""Code that may run DDL (session 22; red-team round 34's residue): a statement calling a
user-written function whose source may run DDL (``Snapshot.ddl_functions``, DDL_CODE_SQL)
counts as DDL for the snapshot (``on_ddl``, ``ddl_open``) every time it runs, whichever
cache answers it and however it is sent (text, fingerprint, number shape, a protocol
Bind of a statement parsed before, SQL EXECUTE). tests/integration/test_s22_ddl_code.py
attacks it through the proxy, the server the judge."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache
from policy.engine import CATALOG_WAIT
from tests.support.ddl_code import ddl_code_session, reload_snapshot, settle

CALL = "SELECT public.attach()"


def test_a_call_of_ddl_code_counts_as_ddl_every_time():
    p, c, calls = ddl_code_session()
    for i in range(3):  # the text cache, then again after a reload (caches forgotten)
        v = p.check_query(CALL)
        assert v.allowed, v.message
        assert p.ddl_open and len(calls) == i + 1
        assert c.get("db").stale
        settle(p)
        if i == 1:
            reload_snapshot(c)
    # another literal of the same shape: the fingerprint and number-shape tiers
    for n in (1, 2, 3):
        before = len(calls)
        assert p.check_query(f"SELECT public.attach() + {n}").allowed
        assert len(calls) == before + 1, n
        settle(p)


def test_a_call_of_other_code_is_not_ddl():
    p, c, calls = ddl_code_session()
    for _ in range(3):
        assert p.check_query("SELECT public.plain()").allowed
        assert p.check_query("SELECT id FROM public.t WHERE id = 7").allowed
    assert not calls and not p.ddl_open and not c.get("db").stale


def test_no_ddl_code_in_the_database_nothing_changes():
    p, _c, calls = ddl_code_session(ddl_functions=())
    assert p.check_query(CALL).allowed
    assert not calls and not p.ddl_open


def test_each_bind_of_a_parsed_call_counts():
    """Parse once, then Binds only (a driver's prepared statement): each one runs the
    code again, so each is looked at (``bind_checked``) and counts as DDL."""
    p, c, calls = ddl_code_session()
    assert p.check_parse(CALL, (), "s").allowed
    assert len(calls) == 1
    p.answered(True)
    settle(p)
    # no load between (it failed, or a lock holds it): every Bind counts, whether the
    # previous one's DDL had it decided again (``rebind``) or not (``followed``)
    for i in range(4):
        assert p.bind_checked("s")
        v = p.check_bind("s", (), (), "utf-8")
        assert v.allowed, v.message
        assert p.ddl_open and len(calls) == 2 + i
        p.answered(True)
        settle(p)
    for i in range(2):  # a load between: decided again on it (``rebind``), and counted
        reload_snapshot(c)
        assert "s" in p.rebind
        assert p.check_bind("s", (), (), "utf-8").allowed
        assert p.ddl_open and len(calls) == 6 + i
        p.answered(True)
        settle(p)


def test_a_name_leaves_only_once_the_server_confirmed():
    """A Parse of something else under the name, or a Close: the server may refuse it or
    skip it after an error (it then keeps the call), so the name's Binds stay looked at
    until a ReadyForQuery with nothing in flight and no error."""
    p, _c, _calls = ddl_code_session()
    assert p.check_parse(CALL, (), "s").allowed
    p.answered(True)
    assert p.check_parse("SELECT 1", (), "s").allowed  # 42P05 at the server: in use
    p.failed()
    p.answered(True)
    assert p.bind_checked("s")  # the server may hold the call still
    p.closed("s")
    p.answered(False)  # more in flight: not confirmed
    assert p.bind_checked("s")
    p.answered(True)
    assert "s" not in p.followed  # (a Bind of it is refused as any name the policy does not
    # hold is, once code that may prepare ran: ``rebind_unknown``, session 24)
    assert p.check_parse(CALL, (), "").allowed
    p.answered(True)
    assert p.check_parse("SELECT 1", (), "").allowed
    p.answered(True)
    assert not p.bind_checked("")


def test_sql_execute_of_a_prepared_call_counts():
    p, _c, calls = ddl_code_session()
    for i in range(2):
        assert p.check_query(f"PREPARE s{i} AS {CALL}").allowed
        p.answered(True)
        settle(p)
        before = len(calls)
        assert p.check_query(f"EXECUTE s{i}").allowed
        assert len(calls) == before + 1
        settle(p)
        p.at_rest()  # (the relay: idle outside a transaction)
    # the code may have replaced any SQL-level name (built from pieces: a check of the
    # server cannot tell its PREPARE from the client's): refused until prepared again
    assert not p.check_query("EXECUTE s0").allowed


def test_code_attached_to_relations():
    """Where a trigger, default or CHECK uses a function that may run DDL
    (``ddl_objects``), a row write to a relation with such code counts as DDL; a read
    does not (triggers fire on writes)."""
    p, _c, calls = ddl_code_session(ddl_objects=True, triggered=("public.t",))
    assert p.check_query("SELECT id FROM public.t").allowed
    assert not calls
    assert p.check_query("INSERT INTO public.t VALUES (1)").allowed
    assert len(calls) == 1 and p.ddl_open
    settle(p)
    p2, _c2, calls2 = ddl_code_session(ddl_objects=False, triggered=("public.t",))
    assert p2.check_query("INSERT INTO public.t VALUES (1)").allowed
    assert not calls2


def test_a_function_defined_through_the_proxy_may_run_ddl_until_a_load_reads_it():
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    c.invalidate("db", {"f": frozenset({"public.f"})})
    snap = c.get("db")
    assert {"f", "public.f"} <= snap.ddl_functions and snap.stale
    c.put("db", [], {"public.t": frozenset({"id"})})  # the load read its source: no DDL
    assert not c.get("db").ddl_functions


def test_a_value_of_a_type_whose_code_may_run_ddl():
    """A domain whose CHECK (or a cast) runs such a function: a value of it made in the
    text, or a Parse's parameter of it, counts as DDL; of another user type, not."""
    runs = {"public.d": frozenset({"public.attach"}), "d": frozenset({"public.attach"}),
            "public.e": frozenset({"public.plain"})}  # fmt: skip
    oids = {70001: frozenset({"public.attach"}), 70002: frozenset({"public.plain"})}
    p, _c, calls = ddl_code_session(user_types=runs, type_oids=oids)
    assert p.check_query("SELECT 1::public.e").allowed
    assert not calls
    assert p.check_query("SELECT 1::public.d").allowed
    assert len(calls) == 1
    settle(p)
    p.at_rest()  # (the relay: idle outside a transaction)
    assert p.check_parse("SELECT $1", (23, 70002), "a").allowed
    assert len(calls) == 1 and not p.bind_checked("a")
    assert p.check_parse("SELECT $1", (23, 70001), "b").allowed
    assert len(calls) == 2 and p.ddl_open and p.bind_checked("b")


# --- red-team round 36: writes decided before another session's DDL took effect -----------


def _two_sessions():
    """Two sessions of one database, wired as the proxy wires them (catalog_loader.attach):
    the same cache entry, DDL blocks counted on it."""
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    entry = c.entry("db")

    def session(scopes: str) -> StatementPolicy:
        p = StatementPolicy(parse_scopes(scopes), task="T", shared=None)
        p.catalog = lambda: c.get("db")
        p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
        p.on_settle = lambda removed: (c.settle("db", removed), c.invalidate("db"))
        p.catalog_entry = entry

        def on_block(delta: int) -> None:
            entry.count_blocks(delta)

        p.on_block = on_block
        p.catalog_listener = c.listen("db", p)
        return p

    writer = session("read:public.t write:public.t")
    migrator = session("read:public.t write:public.t ddl:public.t")
    return c, writer, migrator


def _fresh_load(c: CatalogCache) -> None:
    c.put("db", [], {"public.t": frozenset({"id"})})


WRITE = "INSERT INTO public.t VALUES (1)"


def _allowed_write(p: StatementPolicy) -> None:
    v = p.check_query(WRITE)
    assert v.allowed, v.message
    assert not p.writes_unreadable(v)


def test_a_write_decided_while_another_block_is_open_is_withheld():
    c, writer, migrator = _two_sessions()
    assert migrator.check_query("BEGIN").allowed
    assert migrator.check_query("ALTER TABLE public.t ADD COLUMN x int").allowed
    _fresh_load(c)  # the load the DDL started ran before the block committed: fresh, no change
    _allowed_write(writer)
    assert writer.writes_moved()  # decided while the block was open: it may run after it
    writer.writes_done()
    migrator.settle_ddl()  # COMMIT
    assert c.entry("db").blocks_open == 0


def test_a_write_answered_after_another_sessions_ddl_is_withheld():
    c, writer, migrator = _two_sessions()
    _allowed_write(writer)  # decided, waiting on the server (a lock)
    assert not writer.writes_moved()
    assert migrator.check_query("ALTER TABLE public.t ADD COLUMN x int").allowed
    assert writer.writes_moved()
    writer.writes_done()
    migrator.settle_ddl()
    _fresh_load(c)
    _allowed_write(writer)  # decided after it all: nothing moved since
    assert not writer.writes_moved()


def test_own_ddl_moves_nothing_for_own_writes():
    c, writer, _migrator = _two_sessions()
    own = writer
    own.scopes = parse_scopes("read:public.t write:public.t ddl:public.t")
    _allowed_write(own)
    assert own.check_query("CREATE TEMP TABLE x (i int)").allowed
    assert not own.writes_moved()
    own.writes_done()
    assert own.check_query("BEGIN").allowed
    assert own.check_query("CREATE TEMP TABLE y (i int)").allowed
    v = own.check_query(WRITE)  # own DDL only made it stale: no wait, nothing withheld
    assert v.allowed and not own.writes_unreadable(v)
    assert not own.writes_moved()


def test_a_write_after_own_ddl_and_another_sessions_commit_is_withheld():
    """Round 36, 2: a temporary table in a block, another grant's block commits a trigger
    meanwhile; the write neither waits (no load shows its own DDL) nor may pass whole."""
    c, writer, migrator = _two_sessions()
    writer.scopes = parse_scopes("read:public.t write:public.t ddl:pg_temp.*")
    assert writer.check_query("BEGIN").allowed
    assert writer.check_query("CREATE TEMP TABLE tmp (i int)").allowed
    assert migrator.check_query("BEGIN").allowed
    assert migrator.check_query("ALTER TABLE public.t ADD COLUMN x int").allowed
    migrator.settle_ddl()  # its COMMIT: the snapshot is stale until the reload
    waits: list = []
    writer.on_stale = waits.append
    v = writer.check_query(WRITE)
    assert v is CATALOG_WAIT and waits == [None]  # the reload shows the other's DDL
    v = writer.check_query(WRITE)  # the reload (stale still: it never ran here)
    assert v.allowed, v.message
    assert writer.writes_unreadable(v)  # withheld after its one wait
    # only its own DDL since a fresh snapshot: neither waits nor is withheld
    _fresh_load(c)
    assert writer.check_query("CREATE TEMP TABLE tmp2 (i int)").allowed
    v = writer.check_query(WRITE)
    assert v.allowed and not writer.writes_unreadable(v)


def test_drop_constraint_names_no_relation():
    """sqlglot reads ``DROP CONSTRAINT c`` as a table ``c``: it was refused as DDL of
    ``public.c`` (round 36)."""
    p = StatementPolicy(parse_scopes("read:s.* write:s.* ddl:s.*"), task="T", shared=None)
    for sql in ("ALTER TABLE s.t DROP CONSTRAINT c", "ALTER TABLE s.t DROP CONSTRAINT IF EXISTS c"):
        v = p.check_query(sql)
        assert v.allowed, v.message
        assert {r for c, _ in v.decisions for _, r in c.write_ops} == {"s.t"}
    assert not p.check_query("ALTER TABLE other.t DROP CONSTRAINT c").allowed


def test_comment_is_null_is_the_relations_ddl():
    """``COMMENT ON ... IS NULL`` (a comment removed; migrations emit it), which sqlglot
    cannot read, is decided on PostgreSQL's reading: DDL of the relation named."""
    p = StatementPolicy(parse_scopes("read:s.* ddl:s.*"), task="T", shared=None)
    for sql in ("COMMENT ON TABLE s.t IS NULL", "COMMENT ON COLUMN s.t.c IS NULL",
                "COMMENT ON VIEW s.v IS NULL"):  # fmt: skip
        v = p.check_query(sql)
        assert v.allowed, v.message
    assert not p.check_query("COMMENT ON TABLE other.t IS NULL").allowed
    assert not p.check_query("COMMENT ON FUNCTION s.f() IS NULL").allowed  # not a relation


def test_a_write_that_cascades_to_code_that_may_run_ddl():
    """A DELETE of a referenced table whose foreign-key action writes a relation with such
    code (``cascades``, ``ddl_objects``) counts as DDL."""
    c = CatalogCache()
    c.put("db", [], {"public.p": frozenset({"id"}), "public.c": frozenset({"id"})},
          triggered=("public.c",), cascades={"public.p": frozenset({"public.c"})},
          ddl_functions=("public.attach", "attach"), ddl_objects=True)  # fmt: skip
    p = StatementPolicy(parse_scopes("read:public.p write:public.p,public.c"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    calls: list = []
    p.on_ddl = lambda defined, removed: calls.append(1)
    assert p.check_query("DELETE FROM public.p WHERE id = 1").allowed
    assert calls and p.ddl_open


def test_commit_prepared_counts_before_the_server_commits():
    """A write waiting on a prepared transaction's lock (its DDL uncommitted, no block
    open any more): COMMIT PREPARED counts when it is decided, before the server commits
    what the write will then run (red-team round 37's note)."""
    _c, writer, migrator = _two_sessions()
    _allowed_write(writer)
    assert not writer.writes_moved()
    migrator.commits_prepared()
    assert writer.writes_moved() and migrator.ddl_open
