"""Functions defined through the proxy, event triggers' and global casts' functions: code
that may run DDL or replace statements where no statement names it (session 24, red-team
round 44). Through the proxy, the server the judge: tests/integration/test_redteam_r44_*."""

from __future__ import annotations

import time

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache
from tests.support.ddl_code import ddl_code_session

NAMES = ("public.attach", "attach")
DEFINED = {"f": frozenset({"public.f"})}


def test_a_function_defined_through_the_proxy_counts_as_such_code_until_read():
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    entry = c.entry("db")
    entry.count_blocks(1)  # the session counts its block, then its DDL goes through
    c.invalidate("db", DEFINED)  # CREATE FUNCTION public.f in a block
    snap = c.get("db")
    assert {"public.f", "f"} <= snap.names_functions and "public.f" in snap.ddl_functions
    # a load while the block may still be open reads the old source (or none): still code
    c.put("db", [], {"public.t": frozenset({"id"})})
    assert "public.f" in c.get("db").names_functions and entry.defining()
    entry.count_blocks(-1)  # the block ended (committed or not)
    assert not entry.defining()
    ended = entry.unread["public.f"]
    assert ended is not None
    # a load that started before the end cannot speak for it; one after reads the source
    c.put("db", [], {"public.t": frozenset({"id"})}, loaded_at=ended - 0.001)
    assert "public.f" in c.get("db").names_functions
    time.sleep(0.001)
    c.put("db", [], {"public.t": frozenset({"id"})})
    assert "public.f" not in c.get("db").names_functions and not entry.unread


def test_defining_a_function_marks_the_transaction():
    """A cursor open over a call of it runs the new body at its next FETCH."""
    p, _c, _calls = ddl_code_session()
    assert p.check_query("BEGIN").allowed
    assert not p.lazy_names
    sql = "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    p.scopes = parse_scopes("read:public.* write:public.* ddl:public.* execute:public.*")
    assert p.check_query(sql).allowed
    assert p.lazy_names


def test_another_sessions_definition_marks_this_one_while_its_block_is_open():
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"id"})})
    p = StatementPolicy(parse_scopes("read:public.t"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.catalog_entry = c.entry("db")
    p.catalog_listener = c.listen("db", p)
    assert p.check_query("SELECT id FROM public.t").allowed  # decided on the first snapshot
    p.lazy_names = False
    c.entry("db").count_blocks(1)
    c.invalidate("db", DEFINED)  # another session's CREATE OR REPLACE FUNCTION
    assert p.lazy_names, "a cursor this session holds over f runs the new body"
    p.lazy_names = False  # (the relay: idle outside a transaction)
    c.entry("db").count_blocks(-1)
    c.invalidate("db")  # its end: f is still unread, new to this session's decisions
    assert p.lazy_names
    p.lazy_names = False
    assert p.check_query("SELECT id FROM public.t").allowed
    time.sleep(0.001)
    c.put("db", [], {"public.t": frozenset({"id"})})  # a load after the end read f: no such code
    assert not p.lazy_names and not c.entry("db").unread
    # a load that shows new code that may replace statements (defined outside the proxy)
    assert p.check_query("SELECT id FROM public.t").allowed
    c.put("db", [], {"public.t": frozenset({"id"})}, names_functions=NAMES)
    assert p.lazy_names
    p.lazy_names = False
    assert p.check_query("SELECT id FROM public.t").allowed  # decided on that snapshot
    c.put("db", [], {"public.t": frozenset({"id"})}, names_functions=NAMES)
    assert not p.lazy_names, "nothing new"


def test_an_event_triggers_function_runs_on_every_ddl():
    p, _c, calls = ddl_code_session(names_functions=NAMES, event_functions=("public.attach",))
    p.scopes = parse_scopes("read:public.* ddl:public.* execute:public.attach")
    assert p.check_parse("SELECT id FROM public.t", (), "s").allowed
    p.answered(True)
    assert p.check_query("ALTER TABLE public.t ADD COLUMN x int").allowed
    # names may be replaced: checked with the server before the Bind (session 26: forgotten)
    assert p.verify_name("s") is not None and p.check_bind("s", (), (), "utf-8").allowed
    assert p.lazy_names


def test_a_global_casts_function_runs_on_every_statement_that_converts():
    p, _c, calls = ddl_code_session(global_casts=("public.attach",))
    assert p.check_query("SELECT 1").allowed and not calls  # constants only: converts nothing
    assert p.check_query("SELECT id::text FROM public.t").allowed
    assert calls and p.ddl_open  # the cast's function may run DDL


def test_code_that_may_run_ddl_fires_the_event_triggers_ddl_fires():
    """Round 45: a granted function's DDL fired an event trigger whose function replaces
    statements; the call is a read, but it runs DDL code, so it runs that function too."""
    p, _c, calls = ddl_code_session(names_functions=("public.evt",), event_functions=("public.evt",))
    p.scopes = parse_scopes("read:public.t execute:public.attach,public.evt")
    assert p.check_parse("SELECT id FROM public.t", (), "s").allowed
    p.answered(True)
    assert p.check_query("SELECT public.attach()").allowed and calls
    assert p.verify_name("s") is not None, "the event trigger's function may replace it"


def test_code_that_may_prepare_refuses_names_never_seen_at_once():
    """Its DDL in an open block brings no catalog change to this session: a Bind of a name
    the policy never saw (the code may have prepared it) is refused from the call on."""
    p, _c, calls = ddl_code_session()
    assert p.check_query("BEGIN").allowed
    assert not p.bind_checked("unseen")
    assert p.check_query("SELECT public.attach()").allowed and calls
    assert p.bind_checked("unseen")
    assert not p.check_bind("unseen", (), (), "utf-8").allowed
