"""Red-team round 67 (attacks on d22f32e: ``_policies_read`` / ``_policy_decision`` /
``_policy_stack``, ``_reach``, POLICY_EXPRS_SQL / ``_POLICY_APPLIES`` / POLICY_READS_SQL),
time-boxed; the server the judge.

Grant (agent ``r67-bot``): ``read:r67.* write:r67.* ddl:r67.* execute:r67.salted`` (no
``read:pg_catalog.pg_proc`` / ``pg_views``). Planted (owner ``pgwitness``, the upstream
login, before the proxy starts): ``r67x.acc`` (900 rows ANALYZEd, 400 of tenant 2 holding
``MCV``); role ``r67_owner`` (NOLOGIN). In ``r67`` (tables hold ``MCV`` and ``R67-ABSENT``):
``r67.dorm`` (row security enabled, not FORCEd: the login owns it; policy reads
``r67x.acc``), the views ``r67.adv`` and ``r67.zdv`` of it (owner ``r67_owner``);
``r67.rol`` (FORCE, its policy reading ``r67x.acc`` is ``TO r67_owner``), the view
``r67.arv`` of it (owner ``r67_owner``); ``r67.a`` (FORCE, policy reads ``r67x.acc``);
``r67.t5`` (FORCE, ``USING (owner IN (SELECT owner FROM r67.u5))``), ``r67.u5`` (FORCE,
its only policy ``TO r67_owner`` reads ``r67x.acc``), the view ``r67.v5`` of ``r67.t5``
(owner ``r67_owner``); ``r67.t6`` (FORCE, policy reads ``r67.dorm``), the view ``r67.v6``
of it (owner ``r67_owner``); ``r67.c7`` (FORCE, ``USING (owner IN (SELECT owner FROM
r67.adv UNION ALL SELECT owner FROM r67.dorm WHERE false))``); the materialized views
``r67.mva`` (``SELECT owner FROM r67.a``) and ``r67.mvx`` (``SELECT secret FROM r67x.acc
WHERE tenant = 2 LIMIT 1``), both ``WITH NO DATA``; ``r67.salted(text)`` (SQL, inlinable,
body holds ``SALT``), the view ``r67.fv`` (``SELECT r67.salted(owner) FROM r67.plain``) and
``r67.w13`` (FORCE, policy reads ``r67.fv``); the view ``r67.pv`` (its query holds
``VIEWDEF``) and ``r67.w14`` (FORCE, policy reads ``r67.pv``); the view ``r67.hv`` over
``r67x.acc`` (no barrier) and ``r67.w10`` (policy reads it); security_invoker views
``r67.inv`` (over ``r67.rol``) and ``r67.inv2`` (over ``r67.dorm``), owner ``r67_owner``,
and ``r67.inv3`` (over ``r67.a``, owner the login); ``r67.pc`` / ``r67.pd`` (FORCE, policy
``USING (true)``). Each probe's harm is shown first directly as the upstream login.

Fixed the same session (session 30; plain tests since) but for the REFRESH ones (4: the
documented residue, strict xfails): ``_reach`` keeps a relation named and the same reached
through a view apart; inside a policy's decision every policy of what it reads counts (as
whoever the policy applies to); under EXPLAIN each policy's expression is decided as its
own EXPLAIN (``_policy_decision(..., explain=True)``).

Leaks (strict xfails asserting the safe outcome; simple Query, extended unnamed, named
prepared, each in a session of its own):

1. **A relation named and reached through a view in one statement** (``_reach``'s
   ``seen``): ``SELECT owner FROM r67.adv UNION ALL SELECT owner FROM r67.dorm WHERE false``
   returns ``MCV`` only (``SELECT * FROM r67.adv`` alone is refused: "may not read
   r67.dorm: its row security policy reads r67x.acc"). ``_reach`` pops its start list from
   the end of the sorted names: ``r67.dorm`` (named, ``how`` "") comes first and is marked
   seen, so the ``r67.dorm`` ``r67.adv`` reaches is skipped and only the login's policies
   of it (none: its owner, no FORCE) are counted; PostgreSQL applies its policy as the
   view's owner. Order-dependent: the view ``r67.zdv`` (sorted after ``r67.dorm``) in the
   same statement is refused (held). Likewise ``SELECT owner FROM r67.arv UNION ALL SELECT
   owner FROM r67.rol`` (the policy ``TO r67_owner``), ``UPDATE r67.dorm SET owner = owner
   WHERE owner IN (SELECT owner FROM r67.adv) RETURNING owner`` (block, rolled back), and
   inside a policy: ``SELECT * FROM r67.c7`` (``MCV`` only) and ``EXPLAIN SELECT * FROM
   r67.c7`` (prints ``Seq Scan on acc`` with its estimates).
2. **A nested policy applied as a view's owner**: ``SELECT * FROM r67.v5`` returns ``MCV``
   only (directly ``SELECT * FROM r67.t5`` returns nothing: ``r67.u5``'s only policy is not
   the login's). PostgreSQL applies the policies of what a policy's subquery reads as the
   view's owner too (``r67.u5``'s ``TO r67_owner`` one reading ``r67x.acc``); d22f32e's
   ``_policy_decision`` decides ``SELECT (expr) FROM r67.t5`` as a plain statement, whose
   named ``r67.u5`` counts the login's policies only (``policy_exprs``), and caches it
   without regard to how ``r67.t5`` was reached. Likewise ``SELECT * FROM r67.v6``
   (``r67.t6``'s policy reads ``r67.dorm``, exempt for the login as owner, not for
   ``r67_owner``).
3. **What a policy's view prints in a plan** (``_explained_code`` follows neither a policy's
   relations nor their views' calls): ``EXPLAIN (VERBOSE) SELECT * FROM r67.w13`` prints
   ``r67.salted``'s inlined body (``SALT``; ``EXPLAIN (VERBOSE) SELECT * FROM r67.fv`` is
   refused); ``EXPLAIN SELECT * FROM r67.w14`` prints ``r67.pv``'s query (``VIEWDEF``: a
   secret by the proxy's own rule, "a definition a read:pg_catalog.pg_views scope allows";
   ``EXPLAIN SELECT * FROM r67.pv`` is refused).
4. **REFRESH MATERIALIZED VIEW runs the view's query** (``view_bases`` is relkind ``'v'``
   only; REFRESH is classified as ddl on the view alone): ``REFRESH MATERIALIZED VIEW
   r67.mva`` then ``SELECT * FROM r67.mva`` (one block, rolled back) returns ``MCV`` only
   (``r67.a``'s policy reading ``r67x.acc``, run as the view's owner); ``REFRESH
   MATERIALIZED VIEW r67.mvx`` then ``SELECT * FROM r67.mvx`` returns ``MCV``: the grant
   makes the server read ``r67x.acc`` itself (before it: "has not been populated").

Held (plain tests; every mode): ``SELECT owner FROM r67.zdv UNION ALL SELECT owner FROM
r67.dorm WHERE false``, ``SELECT * FROM r67.adv``, ``SELECT * FROM r67.arv``, ``SELECT *
FROM r67.inv3`` (security_invoker, the login's own view over ``r67.a``), ``EXPLAIN`` of the
union of probe 1 (refused: it names a view), ``SELECT * FROM r67.w10`` and its EXPLAIN (a
policy reading a view that hides ``r67x.acc``'s rows: refused, deny.view), ``EXPLAIN
(VERBOSE) SELECT * FROM r67.fv``, ``EXPLAIN SELECT * FROM r67.pv``; a statement prepared
(protocol ``s1``: ``SELECT * FROM r67.pc``; SQL ``PREPARE q1 AS SELECT * FROM r67.pd``)
while the policy is ``USING (true)``, the owner's ``ALTER POLICY p ... USING (owner IN
(SELECT secret FROM r67x.acc))``, then the session's own ``CREATE TABLE r67.z1`` and the
catalog load it starts: the Bind of ``s1``, ``EXECUTE q1`` and ``SELECT * FROM r67.pc`` are
refused (decided again). Before that load completes both still return ``MCV`` only (the
documented residue: objects made outside the proxy before the next catalog load; not
asserted). Not found: a cached policy decision with part of a chain skipped (only
top-level decisions are cached, keyed per snapshot; a true cycle of applying policies is
"infinite recursion detected in policy" on the server).

Over-refusals observed: ``SELECT * FROM r67.inv`` and ``SELECT * FROM r67.inv2``
(security_invoker views owned by ``r67_owner``): PostgreSQL applies the base's policies as
the invoker (directly: nothing, and both rows), the proxy counts every policy of what any
view reaches and refuses both ("its row security policy reads r67x.acc").
"""

from __future__ import annotations

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "r67-bot"
SCOPES = "read:r67.* write:r67.* ddl:r67.* execute:r67.salted"
SALT = "R67-SALT-77e2"  # r67.salted()'s body only
VIEWDEF = "R67-VIEWDEF-77e3"  # r67.pv's query only
MCV = "R67-MCV-4c1a"  # r67x.acc: tenant 2's value
ABSENT = "R67-ABSENT"  # in no hidden relation
MODES = ["simple", "extended", "prepared"]


def _rls(table: str, force: bool = True) -> str:
    return (f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;"
            + (f" ALTER TABLE {table} FORCE ROW LEVEL SECURITY;" if force else ""))  # fmt: skip


def _pair(table: str) -> str:
    return f"CREATE TABLE {table} (owner text); INSERT INTO {table} VALUES ('{MCV}'), ('{ABSENT}');"


READS_ACC = "USING (owner IN (SELECT secret FROM r67x.acc))"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r67; CREATE SCHEMA r67x;
CREATE TABLE r67x.acc (tenant int, secret text);
INSERT INTO r67x.acc SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r67x.acc SELECT 2, '{MCV}' FROM generate_series(1, 400) g;
ANALYZE r67x.acc;
{_pair("r67.dorm")} CREATE POLICY p ON r67.dorm {READS_ACC}; {_rls("r67.dorm", force=False)}
{_pair("r67.a")} CREATE POLICY p ON r67.a {READS_ACC}; {_rls("r67.a")}
CREATE MATERIALIZED VIEW r67.mva AS SELECT owner FROM r67.a WITH NO DATA;
CREATE MATERIALIZED VIEW r67.mvx AS SELECT secret FROM r67x.acc WHERE tenant = 2 LIMIT 1 WITH NO DATA;
{_pair("r67.pc")} CREATE POLICY p ON r67.pc USING (true); {_rls("r67.pc")}
{_pair("r67.pd")} CREATE POLICY p ON r67.pd USING (true); {_rls("r67.pd")}
{_pair("r67.u5")} {_rls("r67.u5")}
{_pair("r67.t5")} CREATE POLICY p ON r67.t5 USING (owner IN (SELECT owner FROM r67.u5)); {_rls("r67.t5")}
CREATE VIEW r67.inv3 WITH (security_invoker = true) AS SELECT owner FROM r67.a;
RESET ROLE;
CREATE ROLE r67_owner NOLOGIN;
GRANT USAGE ON SCHEMA r67, r67x TO r67_owner;
GRANT SELECT ON r67.dorm, r67x.acc TO r67_owner;
SET ROLE pgwitness;
{_pair("r67.rol")}
RESET ROLE;
GRANT SELECT ON r67.rol, r67.t5, r67.u5 TO r67_owner;
CREATE POLICY p ON r67.rol TO r67_owner {READS_ACC}; {_rls("r67.rol")}
CREATE POLICY p ON r67.u5 TO r67_owner {READS_ACC};
SET ROLE pgwitness;
CREATE VIEW r67.adv AS SELECT owner FROM r67.dorm;
CREATE VIEW r67.arv AS SELECT owner FROM r67.rol;
CREATE VIEW r67.inv WITH (security_invoker = true) AS SELECT owner FROM r67.rol;
CREATE VIEW r67.inv2 WITH (security_invoker = true) AS SELECT owner FROM r67.dorm;
CREATE VIEW r67.v5 AS SELECT owner FROM r67.t5;
{_pair("r67.t6")} CREATE POLICY p ON r67.t6 USING (owner IN (SELECT owner FROM r67.dorm));
{_rls("r67.t6")}
CREATE VIEW r67.v6 AS SELECT owner FROM r67.t6;
CREATE VIEW r67.zdv AS SELECT owner FROM r67.dorm;
CREATE VIEW r67.hv AS SELECT secret AS owner FROM r67x.acc WHERE tenant = 2;
{_pair("r67.w10")} CREATE POLICY p ON r67.w10 USING (owner IN (SELECT owner FROM r67.hv));
{_rls("r67.w10")}
CREATE FUNCTION r67.salted(text) RETURNS text LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN $1 = '{SALT}' THEN 'hit' ELSE $1 END $$;
{_pair("r67.w13")} {_pair("r67.plain")}
CREATE VIEW r67.fv AS SELECT r67.salted(owner) AS owner FROM r67.plain;
CREATE POLICY p ON r67.w13 USING (owner IN (SELECT owner FROM r67.fv));
{_rls("r67.w13")}
CREATE VIEW r67.pv AS SELECT owner FROM r67.plain WHERE owner <> '{VIEWDEF}';
{_pair("r67.w14")} CREATE POLICY p ON r67.w14 USING (owner IN (SELECT owner FROM r67.pv));
{_rls("r67.w14")}
{_pair("r67.c7")}
CREATE POLICY p ON r67.c7 USING (owner IN (SELECT owner FROM r67.adv
  UNION ALL SELECT owner FROM r67.dorm WHERE false)); {_rls("r67.c7")}
RESET ROLE;
ALTER VIEW r67.adv OWNER TO r67_owner;
ALTER VIEW r67.arv OWNER TO r67_owner;
ALTER VIEW r67.inv OWNER TO r67_owner;
ALTER VIEW r67.inv2 OWNER TO r67_owner;
ALTER VIEW r67.v5 OWNER TO r67_owner;
ALTER VIEW r67.v6 OWNER TO r67_owner;
ALTER VIEW r67.zdv OWNER TO r67_owner;
GRANT SELECT ON r67.adv, r67.arv, r67.inv, r67.inv2, r67.v5, r67.v6, r67.zdv TO pgwitness;
GRANT SELECT ON r67.t6 TO r67_owner;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r67, r67x CASCADE; " + planted.drop_role("r67_owner")


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r67", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        yield h


_run = planted.run_mode
_proxied = planted.proxied
_direct = planted.direct_as_owner
_refused = planted.refused_by_proxy


def _filtered(t: str) -> bool:
    return MCV in t and ABSENT not in t


UNION_ADV = "SELECT owner FROM r67.adv UNION ALL SELECT owner FROM r67.dorm WHERE false"
# key: (statements of one session, leaked(joined text), reason)
LEAKS = {
    "named-and-view": (
        [UNION_ADV],
        _filtered,
        "LEAK: r67.dorm named and reached through r67.adv (owner r67_owner) in one statement: "
        "_reach pops the named r67.dorm first (sorted last), so the one reached through the "
        "view is skipped as seen, and only the login's policies (none: its owner, no FORCE) "
        "are counted; PostgreSQL applies the policy reading r67x.acc as the view's owner",
    ),
    "named-and-view-policy-role": (
        ["SELECT owner FROM r67.arv UNION ALL SELECT owner FROM r67.rol"],
        _filtered,
        "LEAK: r67.rol named and reached through r67.arv: its policy TO r67_owner (reading "
        "r67x.acc) counted for the named one only (it does not apply to the login)",
    ),
    "named-and-view-update": (
        [
            "BEGIN",
            "UPDATE r67.dorm SET owner = owner WHERE owner IN (SELECT owner FROM r67.adv) "
            "RETURNING owner",
            "ROLLBACK",
        ],
        _filtered,
        "LEAK: UPDATE r67.dorm ... IN (SELECT owner FROM r67.adv) RETURNING: the same skip",
    ),
    "policy-named-and-view": (
        ["SELECT * FROM r67.c7"],
        _filtered,
        "LEAK: r67.c7's policy reads r67.adv and r67.dorm: the same skip inside "
        "_policy_decision's SELECT (expression) FROM r67.c7",
    ),
    "nested-policy-as-view-owner": (
        ["SELECT * FROM r67.v5"],
        _filtered,
        "LEAK: r67.v5 (owner r67_owner) over r67.t5, whose policy reads r67.u5, whose policy "
        "TO r67_owner reads r67x.acc: PostgreSQL applies the nested policy as the view's "
        "owner too; _policy_decision decides the expression with the login's policies only",
    ),
    "nested-owner-exemption-as-view-owner": (
        ["SELECT * FROM r67.v6"],
        _filtered,
        "LEAK: r67.v6 (owner r67_owner) over r67.t6, whose policy reads r67.dorm (the login "
        "owns it, no FORCE; its policy reads r67x.acc and applies to the view's owner)",
    ),
    "policy-named-and-view-explain": (
        ["EXPLAIN SELECT * FROM r67.c7"],
        lambda t: "Seq Scan on acc" in t,
        "LEAK: EXPLAIN SELECT * FROM r67.c7: the plan scans r67x.acc (its estimates), the same "
        "skip",
    ),
    "policy-view-function-body": (
        ["EXPLAIN (VERBOSE) SELECT * FROM r67.w13"],
        lambda t: SALT in t,
        "LEAK: r67.w13's policy reads the view r67.fv calling r67.salted (SQL, inlined): the "
        "plan prints its body (no read:pg_catalog.pg_proc); _explained_code follows neither "
        "a policy's relations nor their views' calls",
    ),
    "policy-view-definition": (
        ["EXPLAIN SELECT * FROM r67.w14"],
        lambda t: VIEWDEF in t,
        "LEAK (the proxy's own rule: a view's query needs read:pg_catalog.pg_views): r67.w14's "
        "policy reads the view r67.pv; the plan prints its query",
    ),
    "refresh-policy": (
        ["BEGIN", "REFRESH MATERIALIZED VIEW r67.mva", "SELECT * FROM r67.mva", "ROLLBACK"],
        _filtered,
        "LEAK (residue, documented: a materialized view in the grant is a grant on what its "
        "query shows, refreshed as its owner): REFRESH MATERIALIZED VIEW r67.mva runs its "
        "query over r67.a, whose policy reads r67x.acc (view_bases is relkind 'v' only)",
    ),
    "refresh-hidden": (
        ["BEGIN", "REFRESH MATERIALIZED VIEW r67.mvx", "SELECT * FROM r67.mvx", "ROLLBACK"],
        lambda t: MCV in t,
        "LEAK (residue, documented: a materialized view in the grant is a grant on what its "
        "query shows, refreshed as its owner): REFRESH MATERIALIZED VIEW r67.mvx (ddl:r67.*) "
        "runs its query reading r67x.acc itself (WITH NO DATA before: 'has not been populated')",
    ),
}
HELD = {
    "view-sorted-after-table": ["SELECT owner FROM r67.zdv UNION ALL SELECT owner FROM r67.dorm "
                                "WHERE false"],
    "view-alone": ["SELECT * FROM r67.adv"],
    "view-policy-role-alone": ["SELECT * FROM r67.arv"],
    "security-invoker-own": ["SELECT * FROM r67.inv3"],
    "explain-named-and-view": ["EXPLAIN " + UNION_ADV],
    "policy-reads-non-barrier-view": ["SELECT * FROM r67.w10"],
    "explain-policy-reads-non-barrier-view": ["EXPLAIN SELECT * FROM r67.w10"],
    "explain-function-view": ["EXPLAIN (VERBOSE) SELECT * FROM r67.fv"],
    "explain-view": ["EXPLAIN SELECT * FROM r67.pv"],
}  # fmt: skip


def _no_bookends(sqls: list[str]) -> list[str]:
    return [s for s in sqls if s not in ("BEGIN", "ROLLBACK")]


@pytest.mark.parametrize("key", list(LEAKS))
def test_leak_shows_directly(pg, px, key):
    sqls, leaked, _ = LEAKS[key]
    got = "".join(_direct(pg, *_no_bookends(sqls)))
    assert leaked(got), got[-400:]


def test_controls_directly(pg, px):
    """As the login: r67.dorm whole, r67.rol and r67.t5 empty, r67.adv filtered, the
    materialized views unpopulated, r67.inv (security_invoker, owner r67_owner, over r67.rol)
    empty, r67.inv2 (security_invoker over r67.dorm) whole."""
    dorm, rol, t5, adv, inv, inv2, mva = _direct(
        pg, "SELECT * FROM r67.dorm", "SELECT * FROM r67.rol", "SELECT * FROM r67.t5",
        "SELECT * FROM r67.adv", "SELECT * FROM r67.inv", "SELECT * FROM r67.inv2",
        "SELECT * FROM r67.mva")  # fmt: skip
    assert MCV in dorm and ABSENT in dorm, dorm[-300:]
    assert "SELECT 0" in rol and "SELECT 0" in t5, (rol[-200:], t5[-200:])
    assert _filtered(adv), adv[-300:]
    assert "has not been populated" in mva, mva[-300:]
    assert "SELECT 0" in inv and MCV in inv2 and ABSENT in inv2, (inv[-200:], inv2[-200:])


def _leak_cases() -> list:
    """Every leak in every mode: the REFRESH ones strict xfails (the documented residue), the
    others plain (fixed in session 30)."""
    return [
        pytest.param(
            k, mode, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[-1])
        ) if k.startswith("refresh") else pytest.param(k, mode)  # fmt: skip
        for k, v in LEAKS.items()
        for mode in MODES
    ]


@pytest.mark.parametrize(("key", "mode"), _leak_cases())
def test_leak(pg, px, key, mode):
    sqls, leaked, _ = LEAKS[key]
    got = _proxied(px, mode, sqls)
    joined = "".join(got)
    assert not leaked(joined), ("LEAK", [g[-200:] for g in got])
    assert any(_refused(t) for t in got), [g[-200:] for g in got]


@pytest.mark.parametrize("key", list(HELD))
@pytest.mark.parametrize("mode", MODES)
def test_held(pg, px, key, mode):
    got = _proxied(px, mode, HELD[key])
    joined = "".join(got)
    assert any(_refused(t) for t in got), [g[-200:] for g in got]
    assert MCV not in joined and "Seq Scan on acc" not in joined, [g[-200:] for g in got]
    assert SALT not in joined and VIEWDEF not in joined, [g[-200:] for g in got]


def test_held_harm_directly(pg, px):
    """The held probes' harm, as the upstream login."""
    got = _direct(pg, *HELD["view-sorted-after-table"], "SELECT * FROM r67.arv",
                  "SELECT * FROM r67.inv3", *HELD["explain-named-and-view"])  # fmt: skip
    assert all(_filtered(t) for t in got[:3]), [g[-200:] for g in got]
    assert "Seq Scan on acc" in got[3], got[3][-300:]


ACC_POLICY = "USING (owner IN (SELECT secret FROM r67x.acc))"


def test_prepared_before_policy_change(pg, px):
    """A statement prepared (protocol: ``s1``; SQL: ``PREPARE q1``) while r67.pc / r67.pd's
    policy is ``USING (true)``; the owner then makes it read r67x.acc (directly). Before the
    proxy's next catalog load both still run (the documented residue: objects made outside
    the proxy before the next catalog load; not asserted); after the session's own DDL (a
    catalog load) both are decided again at their Bind / EXECUTE and refused (held)."""
    try:
        with planted.session(px) as c:
            first = planted.text(planted.parsed(c, "s1", "SELECT * FROM r67.pc")
                                 + planted.bound(c, "s1"))  # fmt: skip
            c.query("PREPARE q1 AS SELECT * FROM r67.pd")
            again = planted.text(c.query("EXECUTE q1"))
            assert MCV in first and ABSENT in first and ABSENT in again, (first, again)
            pg.psql(f"ALTER POLICY p ON r67.pc {ACC_POLICY}; "
                    f"ALTER POLICY p ON r67.pd {ACC_POLICY}", db="app")  # fmt: skip
            assert _filtered(_direct(pg, "SELECT * FROM r67.pc")[0])
            made = planted.text(c.query("CREATE TABLE r67.z1 (k int)"))
            assert "CREATE TABLE" in made, made[-200:]
            assert planted.wait_catalog_quiet(px, 10.0)  # (the load that DDL started is done)
            bound = planted.text(planted.bound(c, "s1"))
            executed = planted.text(c.query("EXECUTE q1"))
            simple = planted.text(c.query("SELECT * FROM r67.pc"))
        for t in (bound, executed, simple):
            assert _refused(t) and MCV not in t, t[-300:]
    finally:
        pg.psql("ALTER POLICY p ON r67.pc USING (true); ALTER POLICY p ON r67.pd USING (true); "
                "DROP TABLE IF EXISTS r67.z1", db="app")  # fmt: skip


@pytest.mark.parametrize("view", ["r67.inv", "r67.inv2"])
@pytest.mark.parametrize("mode", MODES)
def test_over_refusal_security_invoker(pg, px, view, mode):
    """A security_invoker view (PG15) owned by another role applies its base's policies as
    the login, not the owner: r67.inv over r67.rol (policy TO r67_owner only) returns
    nothing directly, r67.inv2 over r67.dorm (the login's own, no FORCE) both rows; the
    proxy counts every policy of a relation reached through any view and refuses both."""
    t = _proxied(px, mode, [f"SELECT * FROM {view}"])[0]
    assert _refused(t) and "r67x.acc" in t, t[-300:]
