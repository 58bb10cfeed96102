"""Relations whose objects run code that may run DDL (``Snapshot.ddl_relations``, the
"relation" rows of ``DDL_CODE_SQL``; session 23, red-team round 38): a read or a write of
one counts as DDL, as a call of the code does. Through the proxy, against the server's
catalog: tests/integration/test_redteam_r38_recent.py (``test_ddl_run_by_unseen_code``)."""

from __future__ import annotations

from tests.unit.test_s22_ddl_code import _session, _settle


def test_reads_and_writes_of_a_relation_whose_objects_run_ddl_code_count_as_ddl():
    """Row security calling it (a read runs the policy's USING, a write its WITH CHECK),
    or a view over a table whose trigger calls it."""
    for sql in ("SELECT id FROM public.t", "INSERT INTO public.t VALUES (1)",
                "UPDATE public.t SET id = 2", "DELETE FROM public.t"):  # fmt: skip
        p, _c, calls = _session(ddl_relations=("public.t",))
        assert p.check_query(sql).allowed, sql
        assert len(calls) == 1 and p.ddl_open, sql
        _settle(p)
        assert p.check_query(sql).allowed  # each run again (not answered from a cache)
        assert len(calls) == 2, sql


def test_other_relations_do_not():
    p, _c, calls = _session(ddl_relations=("public.other",))
    assert p.check_query("SELECT id FROM public.t").allowed
    assert p.check_query("INSERT INTO public.t VALUES (1)").allowed
    assert not calls and not p.ddl_open


def test_without_ddl_code_the_relations_are_not_looked_at():
    """No function may run DDL (``ddl_functions`` empty, as in the pgbench database): the
    check ends before the relations (nothing on the hot path)."""
    p, _c, calls = _session(ddl_functions=(), ddl_relations=("public.t",))
    assert p.check_query("SELECT id FROM public.t").allowed
    assert not calls
