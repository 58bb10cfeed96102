"""What a dry run lets through is followed as what it may be (red-team round 51): a dry-run
grant refuses nothing, so a statement it would have refused runs, and when the policy
cannot tell what it does (a DO block, a CALL, an unrecognised statement such as ``ALTER
FUNCTION ... RENAME`` or ``ALTER DOMAIN ... ADD CONSTRAINT``, a role's, a utility's), or it
may run code that may run DDL (a call outside the grant's execute scope), it counts as code
that may run DDL: the snapshot goes stale and the code window opens for every session. A
fast-path FunctionCall too. And a read of a view decided on a stale snapshot waits for the
reload, as a write does. tests/integration/test_redteam_r51_typedcode.py attacks it through
the proxy, the server the judge."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.engine import CATALOG_WAIT
from tests.support.ddl_code import ddl_code_session, settle

UNFOLLOWED = (
    "DO $$ BEGIN EXECUTE 'CREATE OR REPLACE FUNCTION public.plain() RETURNS int "
    "LANGUAGE sql AS ''SELECT 2'''; END $$",
    "ALTER FUNCTION public.plain() RENAME TO plain_old",
    "ALTER DOMAIN public.d ADD CONSTRAINT k CHECK (public.attach() > 0)",
    "CALL public.proc()",
    "LOAD 'somelib'",
)


def _dry(**kw):
    """A dry-run session (a grant that may read public.t only) and an enforcing one, on
    one catalog where ``public.attach`` may run DDL."""
    a, c, calls = ddl_code_session(**kw)
    dry = StatementPolicy(parse_scopes("read:public.t"), task="D", shared=None, enforce=False)
    dry.catalog = lambda: c.get("db")
    dry.catalog_entry = c.entry("db")
    dry_calls: list[tuple] = []

    def on_ddl(defined, removed):
        dry_calls.append((defined, removed))
        c.invalidate("db", defined, removed)

    dry.on_ddl = on_ddl
    dry.catalog_listener = c.listen("db", dry)
    a.catalog_entry = c.entry("db")
    return dry, a, c, dry_calls


def test_what_a_dry_run_cannot_follow_counts_as_code_that_may_run_ddl():
    for sql in UNFOLLOWED:
        dry, a, c, calls = _dry()
        assert a.check_parse("SELECT 1", (), "held").allowed
        assert not c.entry("db").code_window() and not a.lazy_code
        v = dry.check_query(sql)
        assert v.allowed and v.would_deny, (sql, v)
        assert calls, f"not followed as DDL: {sql}"
        assert c.get("db").stale, sql
        assert c.entry("db").code_window(), sql  # every session checks its names
        assert a.lazy_code and a.verify_name("held") is not None, sql
        # each run counts (not answered from a cache without ``_verdict``)
        settle(dry)
        dry.settle_ddl()
        n = len(calls)
        assert dry.check_query(sql).would_deny
        assert len(calls) == n + 1, sql


def test_a_dry_runs_call_outside_its_scope_of_code_that_may_run_ddl():
    dry, a, c, calls = _dry()
    assert dry.check_query("SELECT public.attach()").would_deny  # deny.execute, runs anyway
    assert calls and c.entry("db").code_window()
    # code that may not run DDL, outside the scope: refused in name only, nothing to follow
    dry2, a2, c2, calls2 = _dry()
    assert dry2.check_query("SELECT public.plain()").would_deny
    assert not calls2 and not c2.entry("db").code_window()


def test_a_dry_runs_plain_refusals_are_not_ddl():
    """Reads and writes outside the grant run in a dry run, but change no catalog: no
    window, no reload (a dry run of a narrow grant would otherwise reload per statement)."""
    dry, a, c, calls = _dry()
    for sql in ("SELECT * FROM public.other", "INSERT INTO public.other VALUES (1)",
                "UPDATE public.t SET id = 2"):  # fmt: skip
        assert dry.check_query(sql).would_deny, sql
    assert not calls and not c.entry("db").code_window() and not c.get("db").stale


def test_an_enforcing_session_follows_none_of_it():
    a, c, calls = ddl_code_session()
    for sql in UNFOLLOWED:
        assert not a.check_query(sql).allowed, sql
    assert not calls and not c.entry("db").code_window()
    v = a.check_function_call()
    assert not v.allowed and not v.decisions and not calls


def test_a_dry_runs_function_call_counts_as_code_that_may_run_ddl():
    dry, a, c, calls = _dry()
    v = dry.check_function_call()
    assert v.allowed and v.would_deny
    ((classified, decision),) = v.decisions
    assert classified.command == "FunctionCall" and decision.rule == "deny.function_call"
    assert calls and c.entry("db").code_window()


def test_a_read_on_a_stale_snapshot_waits_for_the_reload():
    """Another session's DDL made the snapshot stale: what a view hides and whether it is
    a barrier may have changed (a dry run lowered one), and a table's name may now be a
    view's (round 53), so a read waits (CATALOG_WAIT) once, as a write does; a read after
    only the session's own DDL does not (it followed what it did)."""
    a, c, _calls = ddl_code_session(view_names=frozenset({"public.v"}))
    a.catalog_entry = c.entry("db")
    reloads: list = []
    a.on_stale = reloads.append
    a.scopes = parse_scopes("read:public.t,public.v")
    assert a.check_query("SELECT * FROM public.v").allowed  # not stale: decided at once
    c.invalidate("db")  # another session's DDL
    assert c.get("db").stale
    assert a.check_query("SELECT * FROM public.v WHERE 1 = 1") is CATALOG_WAIT
    assert reloads == [None]
    # decided after the wait (the relay checks it again): a snapshot still stale then
    # withholds what the server says rather than waiting again
    v = a.check_query("SELECT * FROM public.v WHERE 1 = 1")
    assert v.allowed and a.stale_read and not a.writes_unreadable(v)  # this statement alone
    assert a.check_query("SELECT id FROM public.t") is CATALOG_WAIT  # a table too
    assert a.check_query("SELECT 1").allowed  # reads nothing: no wait
