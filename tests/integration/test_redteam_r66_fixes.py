"""Red-team round 66 (attacks on fb419df: ``_policies_read`` / ``_policy_decision`` /
POLICY_EXPRS_SQL / ``_POLICY_APPLIES``, ``_reach``, ``_attaches_code`` and the DDL window
of ``_explained_code``, EXPLAIN of temporary relations), time-boxed; the server the judge.

Grant (agent ``r66-bot``): ``base`` = ``read:r66.* write:r66.* ddl:r66.*`` (no execute
scope, no ``read:pg_catalog.pg_proc``). Planted (owner ``pgwitness``, the upstream login,
before the proxy starts), outside the grant in ``r66x``: ``r66x.salted()`` (IMMUTABLE SQL,
body holds ``SALT``), ``r66x.acc`` (900 rows ANALYZEd, 400 of tenant 2 holding ``MCV``),
``r66x.seq``, ``r66x.eqf`` behind the operator ``r66x.===``, the trigger function
``r66x.cp()``; role ``r66_owner`` (NOLOGIN). In ``r66``, each table with rows ``MCV`` and
``R66-ABSENT`` unless said: FORCE row security ``r66.b`` (``USING (owner IN (SELECT secret
FROM r66x.acc))``), ``r66.a`` (``USING (owner IN (SELECT owner FROM r66.b))``), the view
``r66.bview`` of ``r66.b`` and ``r66.a3`` (``USING (owner IN (SELECT owner FROM
r66.bview))``); ``r66.dorm`` (row security enabled, not FORCEd: the login owns it, so no
policy applies to it; its policy reads ``r66x.acc``) and the view ``r66.dv`` of it owned by
``r66_owner``; ``r66.rol`` (FORCE, its policy reading ``r66x.acc`` is ``TO r66_owner``) and
the view ``r66.rv`` of it owned by ``r66_owner``; ``r66.wc`` (empty; SELECT ``USING
(true)``, INSERT ``WITH CHECK (owner IN (SELECT secret FROM r66x.acc))``), ``r66.lg`` (a rule
``ON INSERT DO ALSO INSERT INTO r66.wc VALUES (NEW.owner)``), ``r66.tg`` (an AFTER INSERT
trigger running ``r66x.cp()``: the same INSERT into ``r66.wc``); ``r66.lg2`` (a rule ``ON
INSERT DO ALSO SELECT secret FROM r66x.acc WHERE tenant = 2 LIMIT 1``), ``r66.lg3`` (a rule
copying that into ``r66.tok2``); for the probes that held: ``r66.off`` (policy, row
security disabled), ``r66.fnf`` (FORCE, ``USING (owner <> r66x.salted())``), ``r66.tokd``
(default ``r66x.salted()``), the domain ``r66.sdom`` (default ``r66x.salted()``), ``r66.sq``
(``USING (nextval('r66x.seq') > 0)``), ``r66.op`` (``USING (owner OPERATOR(r66x.===)
owner)``), ``r66.a4`` (``USING (owner IN (SELECT owner FROM r66.par))``, ``r66x.kid``
inheriting from ``r66.par`` holds ``MCV``), ``r66.a5`` (RESTRICTIVE reading ``r66x.acc``,
PERMISSIVE ``true``), ``r66.pin`` (``EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE prosrc LIKE '%' ||
owner || '%')``, rows ``SALT``, ``R66-ABSENT``). Each probe's harm is shown first directly
as the upstream login.

Leaks (strict xfails asserting the safe outcome; simple Query, extended unnamed, named
prepared, each in a session of its own). 1 and 2 fixed the same session (session 30; plain
tests since): what a policy's expression reads is decided with its own policies, each
relation once per chain (``StatementPolicy._policy_stack``), and a relation reached
through a view counts every policy of it (as the view's owner may be subject to any);
3 and 4 stay strict xfails: the documented residue (a write grant fires the table's rules
and triggers).

1. **A policy's relation's own policy (nested row security).** ``SELECT * FROM r66.a``
   returns ``MCV`` and not ``R66-ABSENT`` (``SELECT * FROM r66.b`` is refused: "its row
   security policy reads r66x.acc"). PostgreSQL applies ``r66.b``'s policy inside
   ``r66.a``'s subquery; ``_policy_decision`` decides ``SELECT ((owner IN (SELECT owner FROM
   r66.b))) FROM r66.a`` with ``_policy_deciding`` set, so ``_policies_read`` is skipped
   for what the expression reads, and ``_reach`` does not follow a policy's relations.
   ``EXPLAIN SELECT * FROM r66.a`` prints ``Seq Scan on acc`` (estimates on ``r66x.acc``);
   ``COPY r66.a TO STDOUT`` and ``UPDATE r66.a SET owner = owner RETURNING owner`` alike.
   The same through a view a policy reads: ``SELECT * FROM r66.a3``.
2. **A view's base is checked as the view's owner.** ``SELECT * FROM r66.dv`` and ``SELECT
   * FROM r66.rv`` return ``MCV`` only (``SELECT * FROM r66.dorm`` rightly returns both
   rows: no policy applies to its owner; ``r66.rol`` none: the login is no member of
   ``r66_owner``). PostgreSQL applies a view's base relation's row security as the view's
   owner (``checkAsUser``): the owner exemption and a policy's roles are the owner's, not
   the login's, but ``_POLICY_APPLIES`` ("applies") is computed for ``current_user`` only
   and ``_policies_read`` counts only the login's rows (``policy_exprs``) for what ``_reach``
   reaches through a view.
3. **Rules and triggers writing a policy's table** (residue by the documented rule: a write
   grant fires the table's rules and triggers): ``INSERT INTO r66.lg VALUES ('<v>')`` (a
   rule) and ``INSERT INTO r66.tg VALUES ('<v>')`` (a trigger) succeed for ``MCV`` and fail
   for ``R66-ABSENT`` (directly: "new row violates row-level security policy for table
   wc"; through the proxy the message is withheld, the failure is not): ``r66.wc``'s WITH
   CHECK reads ``r66x.acc``; ``INSERT INTO r66.wc`` itself is refused.
4. **A rule's action reads outside the grant** (the same documented residue, not
   row security; arguably the worst): ``INSERT INTO r66.lg2 VALUES ('x')`` returns the row
   ``MCV`` of ``r66x.acc`` (the rule's ``DO ALSO SELECT``); ``INSERT INTO r66.lg3 VALUES
   ('x')`` then ``SELECT * FROM r66.tok2`` (one block, rolled back) shows it too.

Held (plain tests; every mode): ``ALTER TABLE r66.dorm FORCE ROW LEVEL SECURITY``, ``ALTER
TABLE r66.off ENABLE ROW LEVEL SECURITY``, ``ALTER POLICY p ON r66.rol TO PUBLIC``,
``CREATE POLICY ... ON r66.off USING (...)`` (policies made to apply in the session's own
transaction, on the stale snapshot: each refused as deny.unknown, so nothing follows);
``CREATE TABLE r66.n (k int, t r66.sdom)`` then ``EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO
r66.n (k) VALUES (1)`` in one block (directly ``Output: 1, 'SALT'::r66.sdom``: the CREATE is
refused, the domain's default needs the execute scope); ``ALTER TABLE r66.tokd RENAME TO
tokd2`` then ``EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r66.tokd2 (k) VALUES (1)`` (the
EXPLAIN refused: DDL newer than the snapshot); ``ALTER TABLE r66.fnf RENAME TO fnf2`` then
EXPLAIN (the rename refused: its policy runs ``r66x.salted``); ``ALTER TABLE r66.b ADD
COLUMN id bigint DEFAULT nextval('r66x.seq')`` (refused: "may not write r66x.seq";
directly it advances the sequence); ``SELECT * FROM r66.sq`` (its policy advances
``r66x.seq``: refused, the sequence unchanged); ``SELECT * FROM r66.op`` (the operator's
function reads ``r66x.acc``: refused, deny.operator); ``SELECT * FROM r66.a4`` (its policy
reads ``r66.par`` without ONLY, whose child ``r66x.kid`` holds ``MCV``: refused),
``SELECT * FROM r66.a5`` (a RESTRICTIVE policy reading ``r66x.acc`` beside a PERMISSIVE
``true``: refused); ``SELECT * FROM r66.pin`` after
``CREATE TEMP TABLE prosrc (x int)`` (refused; ``CREATE TEMP TABLE pg_proc`` refused too);
``INSERT INTO r66.wc VALUES (...)``, ``... ON CONFLICT DO NOTHING``, ``MERGE INTO r66.wc``
(refused); ``SET ROLE r66_owner``, ``SELECT set_config('role', 'r66_owner', false)``
(refused). Not a leak: a partition's own policy is not applied through its parent.

Over-refusals observed: after ``CREATE TEMP TABLE tok2 (k int)``, ``EXPLAIN SELECT * FROM
r66.tok2`` (schema-qualified: never the temporary one) is refused as "may name the
temporary relation pg_temp.tok2" (``_maybe_temporary`` adds ``pg_temp.<bare>`` for
qualified names too); EXPLAIN of the session's own temporary table with no default at all
is refused (fb419df's rule, by design). Not this round's rules: ``ALTER TABLE ...
ENABLE|FORCE ROW LEVEL SECURITY``, ``CREATE POLICY``, ``ALTER POLICY`` on the grant's own
tables are deny.unknown.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "r66-bot"
SCOPES = "read:r66.* write:r66.* ddl:r66.*"
SALT = "R66-SALT-9d30"  # r66x.salted()'s body only
MCV = "R66-MCV-9d31"  # r66x.acc: tenant 2's value
ABSENT = "R66-ABSENT"  # in no hidden relation, no function body
MODES = ["simple", "extended", "prepared"]


def _rls(table: str, force: bool = True) -> str:
    return (f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;"
            + (f" ALTER TABLE {table} FORCE ROW LEVEL SECURITY;" if force else ""))  # fmt: skip


def _pair(table: str) -> str:
    return f"CREATE TABLE {table} (owner text); INSERT INTO {table} VALUES ('{MCV}'), ('{ABSENT}');"


READS_ACC = "USING (owner IN (SELECT secret FROM r66x.acc))"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r66; CREATE SCHEMA r66x;
CREATE FUNCTION r66x.salted() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '{SALT}'::text $$;
CREATE TABLE r66x.acc (tenant int, secret text);
INSERT INTO r66x.acc SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r66x.acc SELECT 2, '{MCV}' FROM generate_series(1, 400) g;
ANALYZE r66x.acc;
CREATE SEQUENCE r66x.seq;
{_pair("r66.b")} CREATE POLICY p ON r66.b {READS_ACC}; {_rls("r66.b")}
{_pair("r66.a")} CREATE POLICY p ON r66.a USING (owner IN (SELECT owner FROM r66.b)); {_rls("r66.a")}
CREATE VIEW r66.bview AS SELECT owner FROM r66.b;
{_pair("r66.a3")} CREATE POLICY p ON r66.a3 USING (owner IN (SELECT owner FROM r66.bview));
{_rls("r66.a3")}
{_pair("r66.dorm")} CREATE POLICY p ON r66.dorm {READS_ACC}; {_rls("r66.dorm", force=False)}
{_pair("r66.rol")}
{_pair("r66.off")} CREATE POLICY p ON r66.off {READS_ACC};
CREATE TABLE r66.wc (owner text);
CREATE POLICY s ON r66.wc FOR SELECT USING (true);
CREATE POLICY i ON r66.wc FOR INSERT WITH CHECK (owner IN (SELECT secret FROM r66x.acc));
{_rls("r66.wc")}
CREATE TABLE r66.lg (owner text);
CREATE RULE r AS ON INSERT TO r66.lg DO ALSO INSERT INTO r66.wc VALUES (NEW.owner);
CREATE TABLE r66.tg (owner text);
CREATE FUNCTION r66x.cp() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN INSERT INTO r66.wc VALUES (NEW.owner); RETURN NEW; END $$;
CREATE TRIGGER t AFTER INSERT ON r66.tg FOR EACH ROW EXECUTE FUNCTION r66x.cp();
CREATE TABLE r66.tok2 (k int, t text);
CREATE TABLE r66.lg2 (owner text);
CREATE RULE r AS ON INSERT TO r66.lg2 DO ALSO SELECT secret FROM r66x.acc WHERE tenant = 2 LIMIT 1;
CREATE TABLE r66.lg3 (owner text);
CREATE RULE r AS ON INSERT TO r66.lg3
  DO ALSO INSERT INTO r66.tok2 (t) SELECT secret FROM r66x.acc WHERE tenant = 2 LIMIT 1;
CREATE TABLE r66.fnf (owner text); INSERT INTO r66.fnf VALUES ('x');
CREATE POLICY p ON r66.fnf USING (owner <> r66x.salted()); {_rls("r66.fnf")}
CREATE TABLE r66.tokd (k int, t text DEFAULT r66x.salted());
CREATE DOMAIN r66.sdom AS text DEFAULT r66x.salted();
CREATE TABLE r66.sq (owner text); INSERT INTO r66.sq VALUES ('x');
CREATE POLICY p ON r66.sq USING (nextval('r66x.seq') > 0); {_rls("r66.sq")}
CREATE FUNCTION r66x.eqf(text, text) RETURNS boolean LANGUAGE sql STABLE
  AS $$ SELECT $1 = $2 AND EXISTS (SELECT 1 FROM r66x.acc WHERE secret = $1) $$;
CREATE OPERATOR r66x.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = r66x.eqf);
{_pair("r66.op")} CREATE POLICY p ON r66.op USING (owner OPERATOR(r66x.===) owner);
{_rls("r66.op")}
CREATE TABLE r66.pin (owner text); INSERT INTO r66.pin VALUES ('{SALT}'), ('{ABSENT}');
CREATE POLICY p ON r66.pin USING (EXISTS (SELECT 1 FROM pg_catalog.pg_proc
  WHERE prosrc LIKE '%' || owner || '%')); {_rls("r66.pin")}
CREATE TABLE r66.pp (owner text) PARTITION BY LIST (owner);
CREATE TABLE r66.pp1 PARTITION OF r66.pp DEFAULT;
INSERT INTO r66.pp VALUES ('{MCV}'), ('{ABSENT}');
CREATE POLICY p ON r66.pp1 {READS_ACC}; {_rls("r66.pp1")}
CREATE TABLE r66.par (owner text);
CREATE TABLE r66x.kid () INHERITS (r66.par); INSERT INTO r66x.kid VALUES ('{MCV}');
{_pair("r66.a4")} CREATE POLICY p ON r66.a4 USING (owner IN (SELECT owner FROM r66.par));
{_rls("r66.a4")}
{_pair("r66.a5")} CREATE POLICY p ON r66.a5 AS RESTRICTIVE {READS_ACC};
CREATE POLICY q ON r66.a5 USING (true); {_rls("r66.a5")}
RESET ROLE;
CREATE ROLE r66_owner NOLOGIN;
GRANT USAGE ON SCHEMA r66, r66x TO r66_owner;
GRANT SELECT ON r66.dorm, r66.rol, r66x.acc TO r66_owner;
CREATE POLICY p ON r66.rol TO r66_owner {READS_ACC};
{_rls("r66.rol")}
SET ROLE pgwitness;
CREATE VIEW r66.dv AS SELECT owner FROM r66.dorm;
CREATE VIEW r66.rv AS SELECT owner FROM r66.rol;
RESET ROLE;
ALTER VIEW r66.dv OWNER TO r66_owner;
ALTER VIEW r66.rv OWNER TO r66_owner;
GRANT SELECT ON r66.dv, r66.rv TO pgwitness;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r66, r66x CASCADE; " + planted.drop_role("r66_owner")
SEQ = "SELECT 'seq=' || last_value || is_called FROM r66x.seq"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r66", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        yield h


_run = planted.run_mode
_proxied = planted.proxied
_direct = planted.direct_as_owner
_refused = planted.refused_by_proxy


# -- leaks 1-2: row security applied where the proxy does not look ----------------------

# statement, what the leak looks like in its output, the leak's reason
SELECTS = {
    "nested-policy": (
        "SELECT * FROM r66.a",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: r66.a's policy reads r66.b, whose own policy reads r66x.acc; "
        "_policy_decision decides the expression with _policies_read off (_policy_deciding)",
    ),
    "nested-policy-explain": (
        "EXPLAIN SELECT * FROM r66.a",
        lambda t: "Seq Scan on acc" in t,
        "LEAK: the plan of r66.a's nested policy scans r66x.acc (estimates on it)",
    ),
    "nested-policy-copy": (
        "COPY r66.a TO STDOUT",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: COPY r66.a (the nested policy of r66.b reading r66x.acc filters it)",
    ),
    "nested-policy-returning": (
        "UPDATE r66.a SET owner = owner RETURNING owner",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: UPDATE r66.a ... RETURNING: only the rows r66.b's nested policy lets through",
    ),
    "nested-policy-through-view": (
        "SELECT * FROM r66.a3",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: r66.a3's policy reads the view r66.bview over r66.b (policy reading r66x.acc)",
    ),
    "view-owner-not-exempt": (
        "SELECT * FROM r66.dv",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: r66.dv (owner r66_owner) over r66.dorm, whose policy does not apply to the "
        "login (its owner, no FORCE) but does to the view's owner (checkAsUser)",
    ),
    "view-owner-policy-role": (
        "SELECT * FROM r66.rv",
        lambda t: MCV in t and ABSENT not in t,
        "LEAK: r66.rv (owner r66_owner) over r66.rol, whose policy reading r66x.acc is "
        "TO r66_owner: applies to the view's owner, not the login (_POLICY_APPLIES)",
    ),
}


@pytest.mark.parametrize("key", list(SELECTS))
def test_select_shows_directly(pg, px, key):
    sql, leaked, _ = SELECTS[key]
    got = _direct(pg, sql)[0]
    assert leaked(got), got[-400:]


def test_controls_directly(pg, px):
    """What the login itself sees: r66.b filtered, r66.dorm whole (its owner, no FORCE),
    r66.rol nothing (FORCE, no policy of its)."""
    b, dorm, rol = _direct(pg, "SELECT * FROM r66.b", "SELECT * FROM r66.dorm",
                           "SELECT * FROM r66.rol")  # fmt: skip
    assert MCV in b and ABSENT not in b, b[-300:]
    assert MCV in dorm and ABSENT in dorm, dorm[-300:]
    assert MCV not in rol and ABSENT not in rol and "SELECT 0" in rol, rol[-300:]


@pytest.mark.parametrize("key", list(SELECTS))  # (strict xfails until session 30's fix)
@pytest.mark.parametrize("mode", MODES)
def test_leak_select(pg, px, key, mode):
    sql, leaked, _ = SELECTS[key]
    t = _proxied(px, mode, [sql])[0]
    assert not leaked(t), ("LEAK", t[-300:])
    assert _refused(t), t[-300:]


def test_refused_policy_of_b_itself(pg, px):
    """The control of ``nested-policy``: r66.b named is refused."""
    for mode in MODES:
        t = _proxied(px, mode, ["SELECT * FROM r66.b"])[0]
        assert _refused(t) and "r66x.acc" in t and MCV not in t, (mode, t[-300:])


def test_partition_policy_not_through_parent(pg, px):
    """Not a leak: PostgreSQL applies r66.pp1's policy only where r66.pp1 is named; the
    parent shows both rows, directly and through the proxy (allowed)."""
    assert ABSENT in _direct(pg, "SELECT * FROM r66.pp")[0]
    for mode in MODES:
        t = _proxied(px, mode, ["SELECT * FROM r66.pp"])[0]
        assert MCV in t and ABSENT in t, (mode, t[-300:])


# -- leaks 3-4: rules and triggers (documented residue: a write fires them) --------------


def _insert_oracle(run, table: str) -> tuple[str, str]:
    mcv = run(["BEGIN", f"INSERT INTO {table} VALUES ('{MCV}')", "ROLLBACK"])[1]
    absent = run(["BEGIN", f"INSERT INTO {table} VALUES ('{ABSENT}')", "ROLLBACK"])[1]
    return mcv, absent


RESIDUE = "LEAK (residue, documented: a write grant fires the table's rules and triggers): "
ORACLES = {
    "rule": ("r66.lg", RESIDUE + "r66.lg's rule inserts into r66.wc, whose WITH CHECK reads r66x.acc"),
    "trigger": ("r66.tg", RESIDUE + "r66.tg's trigger inserts into r66.wc (WITH CHECK reads r66x.acc)"),
}  # fmt: skip


@pytest.mark.parametrize("key", list(ORACLES))
def test_insert_oracle_directly(pg, px, key):
    table, _ = ORACLES[key]
    with RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness")
        mcv, absent = _insert_oracle(lambda sqls: [planted.text(c.query(s)) for s in sqls], table)
    assert "INSERT 0 1" in mcv and "new row violates row-level security" in absent, (mcv, absent)


@pytest.mark.parametrize("key", planted.cases(ORACLES))
@pytest.mark.parametrize("mode", MODES)
def test_leak_insert_oracle(pg, px, key, mode):
    table, _ = ORACLES[key]
    with planted.session(px) as c:
        mcv, absent = _insert_oracle(lambda sqls: [_run(c, mode, s) for s in sqls], table)
    assert not ("INSERT 0 1" in mcv and "SERROR" in absent), ("LEAK", mcv[-200:], absent[-200:])
    assert _refused(mcv) and _refused(absent), (mcv[-200:], absent[-200:])


RULE_READS = {
    "rule-select": (
        ["BEGIN", "INSERT INTO r66.lg2 VALUES ('x')", "ROLLBACK"],
        RESIDUE + "r66.lg2's rule DO ALSO SELECT secret FROM r66x.acc returns its rows",
    ),
    "rule-copy": (
        ["BEGIN", "INSERT INTO r66.lg3 VALUES ('x')", "SELECT * FROM r66.tok2", "ROLLBACK"],
        RESIDUE + "r66.lg3's rule copies a row of r66x.acc into r66.tok2",
    ),
}


@pytest.mark.parametrize("key", list(RULE_READS))
def test_rule_reads_directly(pg, px, key):
    sqls, _ = RULE_READS[key]
    assert MCV in "".join(_direct(pg, *sqls[1:-1]))


def _rule_cases() -> list:
    """Every mode but the rule's SELECT over the extended protocol: the server sends the
    rows of a portal's tagged query only (the INSERT's), the rule's are discarded."""
    return [
        pytest.param(
            k, mode, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[-1])
        )  # fmt: skip
        for k, v in RULE_READS.items()
        for mode in MODES
        if k != "rule-select" or mode == "simple"
    ]


def test_rule_select_extended_directly_discarded(pg, px):
    with RawClient.direct(pg) as c:
        c.query("BEGIN")
        got = planted.text(planted.raw_extended(c, "INSERT INTO r66.lg2 VALUES ('x')"))
        c.query("ROLLBACK")
    assert MCV not in got and "INSERT 0 1" in got, got[-300:]


@pytest.mark.parametrize(("key", "mode"), _rule_cases())
def test_leak_rule_reads(pg, px, key, mode):
    sqls, _ = RULE_READS[key]
    got = _proxied(px, mode, sqls)
    assert MCV not in "".join(got), ("LEAK", [g[-200:] for g in got])


# -- held ------------------------------------------------------------------------------

EXPLAIN_N = "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r66.n (k) VALUES (1)"
# statements in one session (the last ROLLBACK'd block ends), what must not show
HELD = {
    "force-in-block": ["BEGIN", "ALTER TABLE r66.dorm FORCE ROW LEVEL SECURITY",
                       "SELECT * FROM r66.dorm", "ROLLBACK"],
    "enable-in-block": ["BEGIN", "ALTER TABLE r66.off ENABLE ROW LEVEL SECURITY",
                        "ALTER TABLE r66.off FORCE ROW LEVEL SECURITY", "SELECT * FROM r66.off",
                        "ROLLBACK"],
    "alter-policy-roles": ["BEGIN", "ALTER POLICY p ON r66.rol TO PUBLIC",
                           "SELECT * FROM r66.rol", "ROLLBACK"],
    "create-policy": ["BEGIN", f"CREATE POLICY q ON r66.off {READS_ACC}", "ROLLBACK"],
    "domain-default-window": ["BEGIN", "CREATE TABLE r66.n (k int, t r66.sdom)", EXPLAIN_N,
                              "ROLLBACK"],
    "rename-default-window": ["BEGIN", "ALTER TABLE r66.tokd RENAME TO tokd2",
                              "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r66.tokd2 (k) VALUES (1)",
                              "ROLLBACK"],
    "rename-policy-window": ["BEGIN", "ALTER TABLE r66.fnf RENAME TO fnf2",
                             "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM r66.fnf2", "ROLLBACK"],
    "nextval-default": ["BEGIN", "ALTER TABLE r66.b ADD COLUMN id bigint DEFAULT "
                        "nextval('r66x.seq')", "SELECT id FROM r66.b", "ROLLBACK"],
    "nextval-policy": ["SELECT * FROM r66.sq"],
    "policy-reads-parent": ["SELECT * FROM r66.a4"],
    "restrictive-policy": ["SELECT * FROM r66.a5"],
    "operator-policy": ["SELECT * FROM r66.op"],
    "pinned-catalog-temp": ["CREATE TEMP TABLE prosrc (x int)", "SELECT * FROM r66.pin"],
    "temp-pg-proc": ["CREATE TEMP TABLE pg_proc (prosrc text)"],
    "with-check-insert": [f"INSERT INTO r66.wc VALUES ('{MCV}')"],
    "with-check-on-conflict": [f"INSERT INTO r66.wc VALUES ('{MCV}') ON CONFLICT DO NOTHING"],
    "with-check-merge": [f"MERGE INTO r66.wc w USING (SELECT '{MCV}' o) s ON w.owner = s.o "
                         "WHEN NOT MATCHED THEN INSERT VALUES (s.o)"],
    "set-role": ["SET ROLE r66_owner"],
    "set-config-role": ["SELECT set_config('role', 'r66_owner', false)"],
}  # fmt: skip


def test_held_harm_directly(pg, px):
    """Each held probe's harm, as the upstream login."""
    before = planted.state(pg, SEQ)
    got = _direct(pg, "ALTER TABLE r66.dorm FORCE ROW LEVEL SECURITY", "SELECT * FROM r66.dorm")
    assert MCV in got[1] and ABSENT not in got[1], got
    got = _direct(pg, "ALTER POLICY p ON r66.rol TO PUBLIC", "SELECT * FROM r66.rol")
    assert MCV in got[1] and ABSENT not in got[1], got
    assert SALT in _direct(pg, "CREATE TABLE r66.n (k int, t r66.sdom)", EXPLAIN_N)[1]
    assert SALT in _direct(pg, *HELD["rename-default-window"][1:3])[1]
    assert SALT in _direct(pg, *HELD["rename-policy-window"][1:3])[1]
    assert "ALTER TABLE" in _direct(pg, *HELD["nextval-default"][1:3])[0]
    for table in ("r66.a4", "r66.a5"):
        got = _direct(pg, f"SELECT * FROM {table}")[0]
        assert MCV in got and ABSENT not in got, got[-300:]
    got = _direct(pg, "SELECT * FROM r66.op", "SELECT * FROM r66.pin",
                  f"INSERT INTO r66.wc VALUES ('{MCV}')")  # fmt: skip
    assert MCV in got[0] and ABSENT not in got[0], got[0][-300:]
    assert SALT in got[1] and ABSENT not in got[1], got[1][-300:]
    assert "INSERT 0 1" in got[2], got[2][-300:]
    with RawClient.direct(pg) as c:  # the sequence moves (a write outside the grant)
        c.query("SET ROLE pgwitness")
        c.query("SELECT * FROM r66.sq")
    assert planted.state(pg, SEQ) != before
    _reset_seq(pg)


def _reset_seq(pg) -> None:
    pg.psql("SELECT setval('r66x.seq', 1, false)", db="app")


@pytest.mark.parametrize("key", list(HELD))
@pytest.mark.parametrize("mode", MODES)
def test_held(pg, px, key, mode):
    _reset_seq(pg)
    before = planted.state(pg, SEQ)
    got = _proxied(px, mode, HELD[key])
    assert any(_refused(t) for t in got), [g[-200:] for g in got]
    joined = "".join(got)
    assert MCV not in joined and SALT not in joined, [g[-200:] for g in got]
    assert "Seq Scan on acc" not in joined
    assert planted.state(pg, SEQ) == before


# -- over-refusals (observed) ----------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "ALTER TABLE r66.off ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE r66.dorm FORCE ROW LEVEL SECURITY",
    "CREATE POLICY q ON r66.off USING (true)",
    "ALTER POLICY p ON r66.off USING (true)",
])  # fmt: skip
def test_over_refusal_row_security_ddl(pg, px, sql):
    """Row security DDL on the grant's own tables (ddl:r66.*) is an unrecognised statement
    (deny.unknown), whatever its expression reads: fail closed, noted."""
    for mode in MODES:
        t = _proxied(px, mode, [sql])[0]
        assert _refused(t) and "deny.unknown" in t, (mode, t[-200:])


@pytest.mark.parametrize("mode", MODES)
def test_over_refusal_explain_qualified_name_of_a_temp_name(pg, px, mode):
    """After ``CREATE TEMP TABLE tok2 (k int)``, ``EXPLAIN SELECT * FROM r66.tok2`` (a
    schema-qualified name, which PostgreSQL never resolves to pg_temp) was refused as "may
    name the temporary relation pg_temp.tok2" (``_maybe_temporary`` adds pg_temp.<bare> for
    qualified names too); allowed since session 30's fix (only a name of the search path's
    schema may have been written unqualified). Also refused: EXPLAIN of the session's own
    temporary table with no default (fb419df's rule, by design). Since session 31 a
    temporary table may not take ``tok2`` at all (``deny.temp``: r66.tok2 has the name);
    one of a name of its own plays its part."""
    sql = "EXPLAIN SELECT * FROM r66.tok2"
    with planted.session(px) as c:
        before = _run(c, mode, sql)
        refused = planted.text(c.query("CREATE TEMP TABLE tok2 (k int)"))
        made = planted.text(c.query("CREATE TEMP TABLE r66_own_tmp (k int)"))
        after = _run(c, mode, sql)
        own = _run(c, mode, "EXPLAIN SELECT * FROM pg_temp.r66_own_tmp")
    assert _refused(refused) and "deny.temp" in refused, refused[-300:]
    assert "Seq Scan on tok2" in before and "CREATE TABLE" in made, (before[-200:], made)
    assert "Seq Scan on tok2" in after, after[-300:]  # (refused when found; not since the fix)
    assert _refused(own), own[-300:]
