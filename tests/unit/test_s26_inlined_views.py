"""Red-team round 52's two families, without a server: (1) a SQL function PostgreSQL may
inline whose own query hides no rows, reading a view without a barrier that hides rows: a
condition on the call reaches those rows, as it would on the view (``Snapshot.
inlinable_plain``, ``StatementPolicy._through_inlining``); (2) a call of a user-written
function decided on a snapshot another session's DDL made stale waits for the reload,
since whether PostgreSQL inlines it and what its query reads are the snapshot's
(``_stale_write``). tests/integration/test_redteam_r52_stale.py attacks both through the
proxy, the server the judge."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache, inlinable_from_rows, plain_inlinable_from_rows
from policy.engine import CATALOG_WAIT

ROWS = [
    ("public", "fnv", "SELECT id, pin FROM public.nv"),  # hides no rows, reads the view
    ("public", "fhide", "SELECT id, pin FROM public.t WHERE id > 1"),  # hides rows
    ("public", "fnone", "SELECT 1"),  # reads nothing
]
READ = "SELECT id FROM public.fnv() WHERE pin::int > 0"


def test_plain_inlinable_functions_are_kept_with_what_they_read():
    plain = plain_inlinable_from_rows(ROWS)
    assert plain == {"public.fnv": (("public", "nv"),), "fnv": (("public", "nv"),)}
    hiding = inlinable_from_rows(ROWS)
    assert set(hiding) == {"public.fhide", "fhide"}  # (unchanged: the row-hiding ones)


def _session(scopes: str, stale_by_other: bool = False):
    c = CatalogCache()
    c.put(
        "db", ["fnv", "fhide", "fnone"],
        {"public.t": frozenset({"id", "pin"}), "public.nv": frozenset({"id", "pin"})},
        user_functions={n: frozenset({f"public.{n}"}) for n in ("fnv", "fhide", "fnone")},
        views={"public.nv": frozenset({"secret.acct"})},  # no barrier, hides secret.acct's rows
        view_names=["public.nv"],
        inlinable=inlinable_from_rows(ROWS), inlinable_plain=plain_inlinable_from_rows(ROWS),
    )  # fmt: skip
    p = StatementPolicy(parse_scopes(scopes), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.catalog_entry = c.entry("db")
    return p, c


def test_a_condition_on_a_plain_inlinable_function_reaches_what_its_view_hides():
    p, _c = _session("read:public.* execute:public.fnv")
    v = p.check_query(READ)
    assert not v.allowed and "deny.view" in v.message and "secret.acct" in v.message, v.message
    # the view read by name is refused the same way (the existing rule), so the two agree
    assert not p.check_query("SELECT id FROM public.nv WHERE pin::int > 0").allowed
    # a grant that may read what the view hides may call it
    p2, _ = _session("read:public.*,secret.acct execute:public.fnv")
    assert p2.check_query(READ).allowed
    # a function that reads no such view: nothing to reach
    p3, _ = _session("read:public.* execute:public.fnone")
    assert p3.check_query("SELECT * FROM public.fnone()").allowed


def test_a_call_of_a_user_function_on_a_stale_snapshot_waits_for_the_reload():
    p, c = _session("read:public.* read:secret.acct execute:public.fnv,public.fnone")
    reloads: list = []
    p.on_stale = reloads.append
    assert p.check_query(READ).allowed  # fresh: decided at once
    c.invalidate("db")  # another session's DDL (it may have replaced fnv)
    assert p.check_query("SELECT now()").allowed  # a built-in, no relation: no wait
    assert p.check_query("SELECT * FROM public.fnone()") is CATALOG_WAIT
    assert reloads == [None]
    v = p.check_query("SELECT * FROM public.fnone()")  # after its one wait: decided, and
    assert v.allowed and p.stale_read  # what the server says about it alone is withheld


def test_view_functions_follow_views_without_a_barrier():
    from policy.catalog import view_functions_from_rows

    view_rows = [
        ("public", "vfh", None, "SELECT id, pin FROM public.fhide()"),
        ("public", "outer", None, "SELECT * FROM public.vfh"),
        ("public", "wall", "{security_barrier=true}", "SELECT * FROM public.vfh"),
        ("public", "above_wall", None, "SELECT * FROM public.wall"),
    ]
    read_rows = [("public", "outer", "public", "vfh"), ("public", "wall", "public", "vfh"),
                 ("public", "above_wall", "public", "wall")]  # fmt: skip
    function_rows = [("public", "vfh", "public", "fhide")]
    got = view_functions_from_rows(view_rows, read_rows, function_rows)
    # a barrier keeps conditions out, so neither it nor a view above it reaches fhide
    assert got == {"public.vfh": frozenset({"public.fhide"}),
                   "public.outer": frozenset({"public.fhide"})}  # fmt: skip


def test_a_view_calling_a_row_hiding_inlinable_function_is_a_view_that_hides_rows():
    rows = [("public", "fhide", "SELECT id, pin FROM secret.acct WHERE id > 1")]
    c = CatalogCache()
    c.put(
        "db", ["fhide"], {"public.vfh": frozenset({"id", "pin"})},
        user_functions={"fhide": frozenset({"public.fhide"})},
        view_names=["public.vfh"], inlinable=inlinable_from_rows(rows),
        view_functions={"public.vfh": frozenset({"public.fhide"})},
    )  # fmt: skip
    p = StatementPolicy(parse_scopes("read:public.*"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    v = p.check_query("SELECT id FROM public.vfh WHERE pin::int > 0")
    assert not v.allowed and "deny.view" in v.message and "secret.acct" in v.message, v.message
    p2 = StatementPolicy(parse_scopes("read:public.*,secret.acct"), task="T", shared=None)
    p2.catalog = lambda: c.get("db")
    assert p2.check_query("SELECT id FROM public.vfh WHERE pin::int > 0").allowed


def test_a_read_of_a_relation_on_a_stale_snapshot_waits_unless_only_own_ddl_made_it():
    p, c = _session("read:public.* ddl:public.*")
    reloads: list = []
    p.on_stale = reloads.append
    c.invalidate("db")  # another session's DDL: it may have made public.newv, or renamed
    assert p.check_query("SELECT relname FROM pg_catalog.pg_class").allowed  # system: none
    assert p.check_query("SELECT id FROM public.newv WHERE pin::int > 0") is CATALOG_WAIT
    assert reloads == [None]
    # the session's own DDL since: it followed what it did, a read does not wait for it
    p2, c2 = _session("read:public.* ddl:public.*")
    p2.on_stale = reloads.append
    p2.on_ddl = lambda defined, removed: c2.invalidate("db", defined, removed)
    assert p2.check_query("CREATE TABLE public.mine (id int)").allowed
    p2.settle_ddl()
    assert c2.get("db").stale
    assert p2.check_query("SELECT id FROM public.t").allowed
