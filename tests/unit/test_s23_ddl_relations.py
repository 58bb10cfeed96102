"""Relations whose objects run code that may run DDL (``Snapshot.ddl_relations``, the
"relation" rows of ``DDL_CODE_SQL``; session 23, red-team round 38): a read or a write of
one counts as DDL, as a call of the code does. Through the proxy, against the server's
catalog: tests/integration/test_redteam_r38_recent.py (``test_ddl_run_by_unseen_code``)."""

from __future__ import annotations

from tests.support.ddl_code import ddl_code_session, settle


def test_reads_and_writes_of_a_relation_whose_objects_run_ddl_code_count_as_ddl():
    """Row security calling it (a read runs the policy's USING, a write its WITH CHECK),
    or a view over a table whose trigger calls it."""
    for sql in ("SELECT id FROM public.t", "INSERT INTO public.t VALUES (1)",
                "UPDATE public.t SET id = 2", "DELETE FROM public.t"):  # fmt: skip
        p, _c, calls = ddl_code_session(ddl_relations=("public.t",))
        assert p.check_query(sql).allowed, sql
        assert len(calls) == 1 and p.ddl_open, sql
        settle(p)
        assert p.check_query(sql).allowed  # each run again (not answered from a cache)
        assert len(calls) == 2, sql


def test_other_relations_do_not():
    p, _c, calls = ddl_code_session(ddl_relations=("public.other",))
    assert p.check_query("SELECT id FROM public.t").allowed
    assert p.check_query("INSERT INTO public.t VALUES (1)").allowed
    assert not calls and not p.ddl_open


def test_without_ddl_code_the_relations_are_not_looked_at():
    """No function may run DDL (``ddl_functions`` empty, as in the pgbench database): the
    check ends before the relations (nothing on the hot path)."""
    p, _c, calls = ddl_code_session(ddl_functions=(), ddl_relations=("public.t",))
    assert p.check_query("SELECT id FROM public.t").allowed
    assert not calls


def test_a_write_of_rows_whose_types_run_ddl_code_counts_as_ddl():
    """Round 39: a column whose domain (over a domain, in an array, in a row type) has a
    CHECK or DEFAULT calling it: the relation's row type runs it (``user_types``)."""
    p, _c, calls = ddl_code_session(user_types={"public.t": frozenset({"public.attach"})})
    assert p.check_query("SELECT id FROM public.t").allowed  # a read makes no row
    assert not calls
    assert p.check_query("INSERT INTO public.t VALUES (1)").allowed
    assert len(calls) == 1 and p.ddl_open


def test_values_a_cast_by_ddl_code_converts_count_as_ddl():
    """Round 39: ``INSERT INTO ints SELECT m FROM moods``, an assignment cast of mood by a
    function that may run DDL (``relation_casts``)."""
    p, _c, calls = ddl_code_session(relation_casts={"public.t": frozenset({"public.attach"})})
    assert p.check_query("SELECT id FROM public.t").allowed
    assert len(calls) == 1 and p.ddl_open


def test_code_that_may_prepare_leaves_no_statement_text_held():
    """Round 40: a granted function's ``DEALLOCATE s; PREPARE s AS ...`` replaced a name
    the policy held other text for. Code that may prepare or remove statements
    (``names_functions``): each protocol statement is checked with the server before its
    next Bind (``verify_name``; session 26: it used to be forgotten, and drivers' caches
    failed), and a SQL-level one is forgotten."""
    names = ("public.attach", "attach")
    p, _c, _calls = ddl_code_session(names_functions=names)
    assert p.check_parse("SELECT id FROM public.t", (), "s").allowed
    assert p.check_query("PREPARE q AS SELECT id FROM public.t").allowed
    p.answered(True)
    assert p.verify_name("s") is None  # held, nothing ran: no check
    assert p.check_query("SELECT public.attach()").allowed
    assert p.bind_checked("s")
    assert p.verify_name("s") is not None, "checked with the server before its Bind"
    v = p.check_bind("s", (), (), "utf-8")
    assert v.allowed, v.message
    v = p.check_query("EXECUTE q")
    assert not v.allowed and "prepare" in v.message, v.message  # SQL-level: forgotten
    assert p.check_parse("SELECT id FROM public.t", (), "s").allowed  # prepared again
    p.answered(True)
    # until the server is idle outside a transaction (the relay clears it), a cursor the
    # code reached may run it again: every Bind is looked at (red-team round 43)
    assert p.lazy_names and p.bind_checked("s")
    p.at_rest()
    # the code may have run until then: the server is asked once (session 25)
    assert p.bind_checked("s")
    p.verified("s", p.verify_name("s"))
    assert not p.bind_checked("s")  # held again: its Binds go through unlooked at


def test_code_that_only_runs_ddl_keeps_the_statement_texts():
    """The same call where the code may run DDL but not prepare: the name is decided again
    on its text after the catalog change the call counts as."""
    p, _c, _calls = ddl_code_session()
    assert p.check_parse("SELECT id FROM public.t", (), "s").allowed
    p.answered(True)
    assert p.check_query("SELECT public.attach()").allowed
    v = p.check_bind("s", (), (), "utf-8")
    assert v.allowed, v.message


def test_a_statement_running_code_that_may_prepare_is_not_held_after_it_ran():
    """Round 41: the code may replace the very statement that calls it (``DEALLOCATE x;
    PREPARE x AS ...`` while x runs): after its Bind the server is asked before the next
    Bind of x whether it still holds the client's x (session 26: it used to be refused
    until x was prepared again)."""
    names = ("public.attach", "attach")
    p, _c, _calls = ddl_code_session(names_functions=names)
    assert p.check_parse("SELECT public.attach()", (), "x").allowed
    p.answered(True)
    assert p.check_bind("x", (), (), "utf-8").allowed  # it runs now
    p.answered(True)
    token = p.verify_name("x")
    assert token is not None, "checked with the server before its next Bind"
    p.replaced("x", token)  # the server's check failed: code replaced it
    v = p.check_bind("x", (), (), "utf-8")
    assert not v.allowed and "prepare it again" in v.message, v.message


def test_a_followed_statement_must_be_executed_at_once():
    """Round 41: a portal of a statement that runs such code, bound and executed after a
    later Parse, would replace names after the policy followed that Parse."""
    p, _c, _calls = ddl_code_session()
    assert p.check_parse("SELECT public.attach()", (), "x").allowed
    assert "x" in p.followed
    p.answered(True)
    p.bind_at_once = False
    v = p.check_bind("x", (), (), "utf-8")
    assert not v.allowed and "executing its portal at once" in v.message, v.message
