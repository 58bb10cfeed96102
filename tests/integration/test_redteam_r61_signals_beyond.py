"""Red-team round 61 (attacks on 9607585: pg_terminate_backend / pg_cancel_backend of the
grant's own sessions; and on 5c07fb3: ``StatementPolicy._beyond_its_objects``), time-boxed;
the server the judge.

Grants (agent ``r61-bot``): ``base`` = ``read:r61.* write:r61.* ddl:r61.* truncate:r61.*``
(no execute: ``ddl:`` + ``execute:`` on one schema is arbitrary SQL, documented, so
function bodies the agent writes are not probes), ``other`` = the same scopes, another
grant (the victim whose sessions ``base`` may not signal), ``wide`` = the same over
``r61`` and ``r61x`` (the legit case: the FK targets are granted). Planted (owner
``pgwitness``, the proxy's upstream role): ``r61.pv`` (k PRIMARY KEY, rows 1, 2) with an
auto-updatable view ``r61.v`` over it and ``r61x.cv`` referencing it ``ON DELETE CASCADE ON
UPDATE CASCADE``; a partitioned ``r61.pp`` (partition ``r61.pp1``) referenced ``ON DELETE
CASCADE`` by ``r61x.cp``; a two-level partitioned ``r61.ptx`` > ``r61.ptx1`` >
``r61x.ptx11``; an inheritance child ``r61.ihc`` of ``r61.ih`` referenced by ``r61x.cih``;
``r61x`` columns of a domain over the enum ``r61.en``, of a range over the enum
``r61.en2``, of a domain over the composite ``r61.cty``, of the composite ``r61.outer``
(whose attribute is the composite ``r61.inner``), of the composite ``r61.cen`` (whose
attribute is the enum ``r61.en3``), of a domain over ``r61.rt``'s row type; a trigger on
``r61.tt`` running ``r61.trigdel()`` (it deletes ``r61.pv``'s row 1); ``r61.target`` and
``r61.pg_backend_pid()`` (returns the pid in ``r61.target``: a shadow of the built-in).
``STATE`` (round 60's, for ``r61x``) is everything of ``r61x`` a statement could change.
Every B probe is live: run by the owner directly (in a transaction rolled back) it changes
``STATE``; then through the proxy, committed, over the simple protocol, the extended one
unnamed and a named prepared statement, each on a ``renew``ed proxy.

Leaked, fixed the same session (session 29; each was a strict xfail that failed before its
fix; ``r61x`` changed through the proxy, every protocol, committed). Fixes: a write's
foreign-key actions are followed through views (``Snapshot.view_bases``, from
VIEW_READS_SQL, transitively) and through views the session made itself before any load
shows them (``StatementPolicy._own_views``, in the same Query too: ``_after_definitions``);
``TYPE_USERS_SQL`` follows every type made over a type (arrays, domains, ranges and
multiranges, composite and row types with an attribute of it), transitively:

* Foreign-key actions through an auto-updatable view: ``DELETE FROM r61.v WHERE k = 1``
  deleted ``r61x.cv``'s row (ON DELETE CASCADE of ``r61.pv``, the view's base table);
  ``UPDATE r61.v SET k = 10 WHERE k = 1`` rewrote ``r61x.cv.k`` to 10 (ON UPDATE
  CASCADE); ``INSERT INTO r61.v VALUES (1) ON CONFLICT (k) DO UPDATE SET k = 13`` rewrote
  it to 13. ``_beyond_its_objects`` looks up ``Snapshot.cascades`` under the name written
  (the view), not the base relation the write lands on. The same with a view the agent
  itself makes: ``CREATE VIEW r61.myv AS SELECT k FROM r61.pv`` then ``DELETE FROM
  r61.myv WHERE k = 1`` (simple protocol, two Queries; also inside ``BEGIN ... COMMIT``).
  The same statements on ``r61.pv`` itself are refused.
* Types used through a domain, a range or another composite (``TYPE_USERS_SQL`` keeps
  only columns whose type, or array element type, is the composite/enum itself: typtype
  'c'/'e', one level): ``ALTER TYPE r61.en RENAME VALUE 'on' TO 'yes'`` made
  ``r61x.uses_den`` (a domain over the enum) read ``yes``; ``ALTER TYPE r61.en2 RENAME
  VALUE 'on' TO 'yes'`` made ``r61x.uses_enr``'s range read ``[yes,off]``; ``ALTER TYPE
  r61.cty DROP ATTRIBUTE b`` / ``ADD ATTRIBUTE z int`` turned ``r61x.uses_dcty`` (a domain
  over the composite) from ``(1,2)`` into ``(1)`` / ``(1,2,)``; ``ALTER TABLE r61.rt DROP
  COLUMN b`` / ``ADD COLUMN z int`` the same to ``r61x.uses_drt`` (a domain over the row
  type); ``ALTER TYPE r61.inner DROP ATTRIBUTE b`` turned ``r61x.uses_outer`` from
  ``("(1,2)")`` into ``("(1)")`` (``type_users`` is not transitive: ``r61.inner`` is used
  by ``r61.outer``, which is granted); ``ALTER TYPE r61.en3 RENAME VALUE 'on' TO 'yes'``
  made ``r61x.uses_cen`` read ``(yes)``.

Held (plain tests):

* Signals (A): the upstream role's direct session really terminates another grant's
  backend (the harm is live). Through the proxy: a shadow ``r61.pg_backend_pid()``
  (directly, with ``search_path = r61, pg_catalog``, it makes
  ``pg_terminate_backend(pg_backend_pid())`` end another backend) is out of reach: ``SET
  search_path`` and ``set_config('search_path', ...)`` are refused, the call is refused
  (the shadow needs an execute scope) and the victim lives. Raw protocol Bind values of
  another grant's pid written as ``" +00<pid>"``, ``"0<pid>"``, ``"<pid>\\0"``, declared
  int2, are refused; blanks, sign and leading zeros around the grant's own sibling's pid
  (``"\\t+00<pid>\\n"``) are read as the server reads them and allowed; ``$1`` own with
  ``$2`` another's, two literals (own and another's), ``EXPLAIN ANALYZE``, ``COPY (...) TO
  STDOUT``, a CTE, ``DECLARE ... CURSOR`` (literal and a bound parameter), named
  arguments, ``pg_catalog.``-qualified: refused, victim alive. A literal of the sibling's
  pid is allowed while it lives and refused once it ended (never cached), and so is a
  named statement's parameter bound after it ended.
* Writes and DDL (B): ``INSERT ... ON CONFLICT DO UPDATE`` and ``MERGE ... UPDATE`` of
  ``r61.pv`` (ON UPDATE CASCADE), ``DELETE FROM r61.pp1`` (a referenced partition: its
  derived foreign key), ``DELETE FROM r61.ih`` / ``r61.ihc`` (inheritance), ``ALTER TABLE
  r61.ptx ADD COLUMN`` / ``CREATE INDEX ON r61.ptx1`` / ``CREATE TRIGGER ... ON r61.ptx``
  (a partition two levels down in ``r61x``): 42501. ``DELETE FROM r61.pv WHERE k = 2``
  (a row nothing references) is refused too: conservative, the policy does not know rows.
  Legit: with ``wide`` the cascading DELETE runs; with ``base`` DDL of a partitioned table
  whose partitions are granted, ``ALTER TYPE`` of an enum only ``r61`` uses and a DELETE
  of a table nothing references run.

By design (plain test): ``INSERT INTO r61.tt VALUES (1)`` fires the owner's trigger on the
granted table, which deletes ``r61.pv``'s row 1, whose foreign-key action deletes
``r61x.cv``'s row (an owner's trigger runs as written, like an audit trigger writing
elsewhere). Function bodies the agent writes are not checked (``ddl:`` + ``execute:`` on a
schema is arbitrary SQL, documented): not probed.
"""

from __future__ import annotations

import asyncio
import struct
import time

import psycopg
import pytest

from policy.grants.model import make_dsn
from tests.support import planted
from tests.support.backends import alive, backend_exists, gone
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse

pytestmark = pytest.mark.timeout(300)

AGENT = "r61-bot"
SCOPES = "read:r61.* write:r61.* ddl:r61.* truncate:r61.*"
WIDE = "read:r61.*,r61x.* write:r61.*,r61x.* ddl:r61.*,r61x.* truncate:r61.*,r61x.*"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA r61; CREATE SCHEMA r61x;
CREATE TABLE r61.pv (k int PRIMARY KEY); INSERT INTO r61.pv VALUES (1), (2);
CREATE VIEW r61.v AS SELECT k FROM r61.pv;
CREATE TABLE r61x.cv (k int REFERENCES r61.pv ON DELETE CASCADE ON UPDATE CASCADE);
INSERT INTO r61x.cv VALUES (1);
CREATE TABLE r61.pp (k int PRIMARY KEY) PARTITION BY RANGE (k);
CREATE TABLE r61.pp1 PARTITION OF r61.pp FOR VALUES FROM (0) TO (100);
INSERT INTO r61.pp VALUES (1);
CREATE TABLE r61x.cp (k int REFERENCES r61.pp ON DELETE CASCADE);
INSERT INTO r61x.cp VALUES (1);
CREATE TABLE r61.ptx (k int, c int) PARTITION BY RANGE (k);
CREATE TABLE r61.ptx1 PARTITION OF r61.ptx FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (k);
CREATE TABLE r61x.ptx11 PARTITION OF r61.ptx1 FOR VALUES FROM (0) TO (50);
INSERT INTO r61.ptx VALUES (1, 1);
CREATE TABLE r61.ih (k int PRIMARY KEY);
CREATE TABLE r61.ihc (k int PRIMARY KEY) INHERITS (r61.ih); INSERT INTO r61.ihc VALUES (1);
CREATE TABLE r61x.cih (k int REFERENCES r61.ihc ON DELETE CASCADE);
INSERT INTO r61x.cih VALUES (1);
CREATE TYPE r61.en AS ENUM ('on', 'off');
CREATE DOMAIN r61.den AS r61.en;
CREATE TABLE r61x.uses_den (d r61.den); INSERT INTO r61x.uses_den VALUES ('on');
CREATE TYPE r61.en2 AS ENUM ('on', 'off');
CREATE TYPE r61.enr AS RANGE (subtype = r61.en2);
CREATE TABLE r61x.uses_enr (r r61.enr); INSERT INTO r61x.uses_enr VALUES ('[on,off]');
CREATE TYPE r61.cty AS (a int, b int);
CREATE DOMAIN r61.dcty AS r61.cty;
CREATE TABLE r61x.uses_dcty (x r61.dcty); INSERT INTO r61x.uses_dcty VALUES (ROW(1, 2));
CREATE TYPE r61.inner AS (a int, b int);
CREATE TYPE r61.outer AS (i r61.inner);
CREATE TABLE r61x.uses_outer (x r61.outer);
INSERT INTO r61x.uses_outer VALUES (ROW(ROW(1, 2)));
CREATE TYPE r61.en3 AS ENUM ('on', 'off');
CREATE TYPE r61.cen AS (e r61.en3);
CREATE TABLE r61x.uses_cen (x r61.cen); INSERT INTO r61x.uses_cen VALUES (ROW('on'));
CREATE TABLE r61.rt (a int, b int);
CREATE DOMAIN r61.drt AS r61.rt;
CREATE TABLE r61x.uses_drt (x r61.drt); INSERT INTO r61x.uses_drt VALUES (ROW(1, 2));
CREATE TYPE r61.solo AS ENUM ('a', 'b');
CREATE TABLE r61.uses_solo (e r61.solo); INSERT INTO r61.uses_solo VALUES ('a');
CREATE TABLE r61.tt (k int);
CREATE FUNCTION r61.trigdel() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN DELETE FROM r61.pv WHERE k = 1; RETURN NEW; END $$;
CREATE TRIGGER r61trg AFTER INSERT ON r61.tt FOR EACH ROW EXECUTE FUNCTION r61.trigdel();
CREATE TABLE r61.target (pid int);
CREATE FUNCTION r61.pg_backend_pid() RETURNS int LANGUAGE sql
  AS 'SELECT pid FROM r61.target LIMIT 1';
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r61, r61x CASCADE;"

STATE = planted.schema_state("r61x")
MODES = ("simple", "extended", "prepared")


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(
        pg, tmp_path_factory, "r61", agent=AGENT, scopes=SCOPES, setup=SETUP,
        teardown=TEARDOWN, grants={"other": SCOPES, "wide": WIDE},
    ) as handle:  # fmt: skip
        handle.state = _state(pg)
        assert "rows:cv:" in handle.state and "part:ptx11:true:r61.ptx1" in handle.state
        yield handle


# --- B: what a write or DDL changes beyond what it names ----------------------------------


def _state(pg) -> str:
    return planted.state(pg, STATE)


def _directly(pg, sql: str) -> str:
    """``STATE`` after the owner ran ``sql`` in a transaction rolled back (or the error)."""
    return planted.state_after(pg, sql, STATE)


def _restore(pg, handle) -> None:
    pg.psql(TEARDOWN + SETUP, db="app")
    assert _state(pg) == handle.state


def _through_proxy(pg, handle, sql: str, mode: str, key: str = "base") -> tuple[str, bool]:
    """``sql`` through a renewed proxy in ``mode``: what the client got, and whether r61x
    changed (restored if so)."""
    planted.renew(handle)
    token = handle.tokens[key]
    if mode == "simple":
        got = planted.simple(handle, [sql], token)[0]
    else:
        got = asyncio.run(planted.attempt(handle, sql, mode, token))
    changed = _state(pg) != handle.state
    if changed:
        _restore(pg, handle)
    return got, changed


_VIEW = False  # fixed in session 29: StatementPolicy._actions_reach, Snapshot.view_bases
_TYPE = False  # fixed in session 29: TYPE_USERS_SQL follows the types made over a type

# key -> (statement, reason of the strict xfail, or False: fixed, each failed before its fix)
LEAKS = {
    "view-delete": ("DELETE FROM r61.v WHERE k = 1", _VIEW),
    "view-update": ("UPDATE r61.v SET k = 10 WHERE k = 1", _VIEW),
    "view-upsert": ("INSERT INTO r61.v VALUES (1) ON CONFLICT (k) DO UPDATE SET k = 13", _VIEW),
    "domain-over-enum-rename-value": ("ALTER TYPE r61.en RENAME VALUE 'on' TO 'yes'", _TYPE),
    "range-over-enum-rename-value": ("ALTER TYPE r61.en2 RENAME VALUE 'on' TO 'yes'", _TYPE),
    "domain-over-composite-drop": ("ALTER TYPE r61.cty DROP ATTRIBUTE b", _TYPE),
    "domain-over-composite-add": ("ALTER TYPE r61.cty ADD ATTRIBUTE z int", _TYPE),
    "domain-over-rowtype-drop": ("ALTER TABLE r61.rt DROP COLUMN b", _TYPE),
    "domain-over-rowtype-add": ("ALTER TABLE r61.rt ADD COLUMN z int", _TYPE),
    "nested-composite-drop": ("ALTER TYPE r61.inner DROP ATTRIBUTE b", _TYPE),
    "enum-in-composite-rename-value": ("ALTER TYPE r61.en3 RENAME VALUE 'on' TO 'yes'", _TYPE),
}

# refused by the policy (42501), live directly
HELD = {
    "upsert-fk-update": "INSERT INTO r61.pv VALUES (1) ON CONFLICT (k) DO UPDATE SET k = 11",
    "merge-update": (
        "MERGE INTO r61.pv t USING (SELECT 1 AS k) s ON t.k = s.k WHEN MATCHED THEN UPDATE SET k = 12"
    ),
    "table-delete": "DELETE FROM r61.pv WHERE k = 1",
    "referenced-partition-delete": "DELETE FROM r61.pp1 WHERE k = 1",
    "inheritance-parent-delete": "DELETE FROM r61.ih",
    "inheritance-child-delete": "DELETE FROM r61.ihc",
    "two-level-partition-add-column": "ALTER TABLE r61.ptx ADD COLUMN z int",
    "mid-level-partition-index": "CREATE INDEX ON r61.ptx1 (c)",
    "partitioned-row-trigger": (
        "CREATE TRIGGER r61t2 AFTER INSERT ON r61.ptx FOR EACH ROW EXECUTE FUNCTION r61.trigdel()"
    ),
}

# Not leaks, by design: the owner's trigger on a granted table runs as the owner wrote it
# (docs/policy.md: a granted table's audit trigger writes elsewhere); here it deletes a
# granted row, whose foreign key's action then deletes r61x.cv's. Runs as directly.
BY_DESIGN = {"owners-trigger-deletes-a-referenced-row": "INSERT INTO r61.tt VALUES (1)"}


@pytest.mark.parametrize("key", list(LEAKS) + list(HELD) + list(BY_DESIGN))
def test_probe_changes_r61x_directly(pg, px, key):
    sql = LEAKS[key][0] if key in LEAKS else {**HELD, **BY_DESIGN}[key]
    changed = _directly(pg, sql)
    assert not changed.startswith("error"), changed
    assert changed != px.state, key
    assert _state(pg) == px.state


@pytest.mark.parametrize("key", planted.cases(LEAKS))
def test_leak_leaves_r61x_unchanged(pg, px, key):
    outs = {}
    for mode in MODES:
        got, changed = _through_proxy(pg, px, LEAKS[key][0], mode)
        outs[mode] = (changed, got[:200])
    assert not any(changed for changed, _ in outs.values()), outs


@pytest.mark.parametrize("block", [False, True])  # (fixed in session 29: _own_views)
def test_agent_made_view_leaves_r61x_unchanged(pg, px, block):
    planted.renew(px)
    sqls = ["CREATE VIEW r61.myv AS SELECT k FROM r61.pv", "DELETE FROM r61.myv WHERE k = 1"]
    if block:
        sqls = ["BEGIN", *sqls, "COMMIT"]
    try:
        outs = planted.simple(px, sqls)
        changed = _state(pg) != px.state
    finally:
        _restore(pg, px)
    assert not changed, outs


@pytest.mark.parametrize("key", list(HELD))
def test_held_refused_through_the_proxy(pg, px, key):
    for mode in MODES:
        got, changed = _through_proxy(pg, px, HELD[key], mode)
        assert "42501" in got and not changed, (mode, got)


@pytest.mark.parametrize("key", list(BY_DESIGN))
def test_by_design_runs_as_directly(pg, px, key):
    got, changed = _through_proxy(pg, px, BY_DESIGN[key], "simple")
    assert "42501" not in got and changed, got


def test_legit_cascade_with_the_targets_granted(pg, px):
    got, changed = _through_proxy(pg, px, "DELETE FROM r61.pv WHERE k = 1", "simple", "wide")
    assert "DELETE 1" in got and changed, got


@pytest.mark.parametrize(
    "sql,tag",
    [
        ("ALTER TABLE r61.pp ADD COLUMN z int", "ALTER TABLE"),
        ("CREATE INDEX ON r61.pp (k)", "CREATE INDEX"),
        ("ALTER TYPE r61.solo RENAME VALUE 'a' TO 'c'", "ALTER TYPE"),
        ("DELETE FROM r61.uses_solo", "DELETE 1"),
    ],
)
def test_legit_inside_the_grant(pg, px, sql, tag):
    planted.renew(px)
    try:
        got = planted.simple(px, [sql])[0]
        assert tag in got and "42501" not in got, got
        assert _state(pg) == px.state
    finally:
        _restore(pg, px)


# --- A: signals --------------------------------------------------------------------------


def _connect(px, key: str = "base", **kw) -> psycopg.Connection:
    dsn = make_dsn(AGENT, px.tokens[key], px.host, px.port, "app")
    return psycopg.connect(dsn, autocommit=True, **kw)





def _frames(c: RawClient, *msgs: bytes) -> bytes:
    c.send(*msgs, SYNC)
    return b"".join(c.until_ready())


def test_upstream_role_signals_another_grants_backend_directly(pg, px):
    """The harm is live: the upstream role's session ends another grant's backend."""
    planted.renew(px)
    victim = _connect(px, "other")
    pid = victim.pgconn.backend_pid
    with RawClient.direct(pg) as direct:
        assert direct.scalar(f"SELECT pg_terminate_backend({pid})") == "t"
    assert gone(pg, pid) and not alive(victim)
    victim.close()


def test_shadowed_pg_backend_pid(pg, px):
    planted.renew(px)
    with _connect(px, "other") as victim1, _connect(px, "other") as victim2:
        pid1, pid2 = victim1.pgconn.backend_pid, victim2.pgconn.backend_pid
        # directly: with r61 ahead of pg_catalog the shadow names another backend
        pg.psql(f"INSERT INTO r61.target VALUES ({pid1})", db="app")
        with RawClient.direct(pg) as direct:
            direct.query("SET search_path = r61, pg_catalog")
            assert direct.scalar("SELECT pg_terminate_backend(pg_backend_pid())") == "t"
        assert gone(pg, pid1)
        pg.psql(f"UPDATE r61.target SET pid = {pid2}", db="app")
        try:
            outs = planted.simple(px, [
                "SET search_path = r61, pg_catalog",
                "SELECT set_config('search_path', 'r61, pg_catalog', false)",
                "SELECT pg_terminate_backend(pg_backend_pid())",
            ])  # fmt: skip
            assert all("42501" in o for o in outs), outs
            assert alive(victim2) and backend_exists(pg, pid2)
        finally:
            pg.psql("DELETE FROM r61.target", db="app")


def test_bound_values_and_forms(pg, px):
    planted.renew(px)
    with _connect(px, "other") as stranger, _connect(px) as sibling:
        theirs, sib = stranger.pgconn.backend_pid, sibling.pgconn.backend_pid
        with planted.session(px) as c:
            assert b"Z" in _frames(c, parse("k1", "select pg_cancel_backend($1)"))
            assert b"Z" in _frames(c, parse("k2", "select pg_cancel_backend($1)", [21]))
            assert b"Z" in _frames(
                c, parse("k3", "select pg_cancel_backend($1), pg_terminate_backend($2)")
            )
            for stmt, value in (
                ("k1", f" +00{theirs}".encode()),
                ("k1", f"0{theirs}".encode()),
                ("k1", f"{theirs}\x00".encode()),
                ("k1", f"{theirs}".encode("utf-16-be")),
                ("k2", f"{theirs}".encode()),
            ):
                out = _frames(c, bind("", stmt, [value]), execute())
                assert b"42501" in out, (value, out)
            out = _frames(c, bind("", "k3", [str(sib).encode(), str(theirs).encode()]), execute())
            assert b"42501" in out, out
            # what the server reads as the sibling's pid: allowed, and it is the sibling's
            out = _frames(c, bind("", "k1", [f"\t+00{sib}\n".encode()]), execute())
            assert b"42501" not in out and b"SELECT 1" in out, out
            for sql in (
                f"select pg_cancel_backend({sib}), pg_terminate_backend({theirs})",
                f"EXPLAIN ANALYZE select pg_terminate_backend({theirs})",
                f"COPY (select pg_terminate_backend({theirs})) TO STDOUT",
                f"WITH x AS (select pg_terminate_backend({theirs})) SELECT * FROM x",
                f"select pg_terminate_backend(pid => {theirs})",
                f"select pg_catalog.pg_terminate_backend({theirs})",
                f"select pg_terminate_backend({theirs}, 1)",
            ):
                out = b"".join(c.query(sql))
                assert b"42501" in out, (sql, out)
            out = b"".join(c.query(
                f"BEGIN; DECLARE r61c CURSOR FOR select pg_terminate_backend({theirs}); "
                "FETCH r61c; COMMIT"
            ))  # fmt: skip
            assert b"42501" in out, out
            c.query("ROLLBACK")
            _frames(
                c, parse("k4", "DECLARE r61d CURSOR WITH HOLD FOR select pg_terminate_backend($1)")
            )
            out = _frames(c, bind("", "k4", [str(theirs).encode()]), execute())
            assert b"42501" in out, out
        assert alive(stranger) and backend_exists(pg, theirs)
        assert alive(sibling)


def test_an_ended_siblings_pid_is_refused(pg, px):
    """A literal or a bound value of the sibling's pid: allowed while it lives, refused
    once it has ended (decided at every check, never from a cache)."""
    planted.renew(px)
    with planted.session(px) as c:
        sibling = _connect(px)
        sib = sibling.pgconn.backend_pid
        sql = f"select pg_cancel_backend({sib})"
        assert b"42501" not in b"".join(c.query(sql))
        _frames(c, parse("k5", "select pg_cancel_backend($1)"))
        sibling.close()
        deadline = time.monotonic() + 10
        refused = False
        while time.monotonic() < deadline and not refused:
            refused = b"42501" in b"".join(c.query(sql))
            time.sleep(0.05)
        assert refused
        out = _frames(c, bind("", "k5", [struct.pack("!i", sib)], [1]), execute())
        assert b"42501" in out, out
