r"""Red-team round 89: a last, short sweep of session 36's fixes (``_SETTERS_CTE``: what may
set settings, closed by name and tree reachability; ``SETTINGS_CODE_SQL``; and
``StatementPolicy._hides_rows`` with the relay's ``hidden_read`` withholding); time-boxed
(about 20 minutes), the server the judge.

Method (rounds 84-88's): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login, the schemas' owner), where it must show the marker (``RuntimeError``
otherwise: a probe that cannot leak proves nothing); then through a proxy started after the
planting. ``PROBES``: in a block rolled back, as a simple Query, an extended unnamed
statement and a named prepared statement (``planted.proxied_in_block``). ``STEPS``: raw
protocol sequences (Sync groups, transactions) in one session of their own, directly and
through the proxy (``planted.direct_frames`` / ``proxied_frames``). Leaks are strict xfails
asserting the safe outcome; held families are plain tests.

Planted: ``r89x.vault`` (``ROW``, outside every grant; not an integer) and ``r89x.r89v``
(a copy of it); ``public.r89v`` (harmless, in the pinned path ``public, pg_temp``): after a
statement turns the search_path to ``r89x, pg_temp``, ``SELECT v FROM r89v`` answers
``ROW``. ``r89x.agg`` (an aggregate whose transition function ``r89x.sp_sfunc``, SQL,
calls set_config) and ``r89x.aggf`` (its final function ``r89x.sp_final`` does), read by
views as aggregates (``:aggfnoid``) and as window functions (``:winfnoid``), and by the
SQL function ``r89x.via_agg`` (whose body names the aggregate, never its support
function) under ``r89.vfagg``. ``r89.xr``/``r89.xv``: ``table_to_xml`` of the vault named
by text (no ``pg_depend`` row), as a row and under a failing ``::int``. ``r89.cv``:
``SELECT k, v::int FROM r89x.vault`` (a read fails 22P02 quoting ``ROW``).

Held (plain tests):

1. Aggregates and window functions whose support functions set settings, in a view the
   grant reads (``read:`` alone): refused ``scope.execute`` naming the aggregate (the
   view's calls, ``VIEW_FUNCTIONS_SQL``), as is a view over a SQL function calling the
   aggregate. With ``execute:`` on the aggregate the search_path does turn, but so does a
   direct call of an execute-granted setter: an execute scope trusts what the function
   runs (docs/policy.md), so that is not counted a leak.
2. ``table_to_xml`` of the vault named by text in a view the grant reads, as a row or a
   failing cast: refused ``deny.function`` (round 88's ``flagged`` built-ins).
3. Withholding: the same read twice in one session (simple and extended), after a harmless
   statement (or a readable read) in the same Sync group, a SQL ``PREPARE``'s ``EXECUTE``
   twice across transactions, a portal bound in one group of a block and executed in the
   next, and asyncpg's own first ``fetch`` outside a block: withheld to the SQLSTATE.

Leak (strict xfails, ``_WHY_LATER``, until session 36 fixed it: ``StatementPolicy._note_hiding``
marks each statement that runs code on hidden rows, and each Bind of it marks ``hidden_read``;
the probes are plain tests now):

**A statement parsed in one Sync group, executed in a later one after the Parse's
transaction ended.** ``Parse("p89", "SELECT * FROM r89.cv"), Sync`` outside a block, then
``Bind/Execute("p89"), Sync`` (also with a Describe, twice, into a later ``BEGIN`` block,
after a ``COMMIT`` of the block the Parse was in, the unnamed statement bound in a later
group, and a driver's ordinary path: asyncpg's second ``conn.fetch`` of the same query in
a session, from its statement cache, outside a block) answers ``22P02 invalid input syntax for type integer: "<ROW>"`` in full, the
view's own cast quoting the hidden row (round 88's ``prepared`` mode held only because it
ran inside one block). Cause: ``policy/engine.py`` ``StatementPolicy.writes_unreadable``
sets ``hidden_read`` when a statement is *decided* (a Query, a Parse); ``proxy/relay.py``
then arms ``_withhold_through = groups.sent_groups + 1`` and ``_withhold_tx`` (the Parse's
group and its transaction) and clears them when that group's ReadyForQuery says idle; a
later Bind/Execute of the prepared statement is not decided again for that (Binds check
only pins), so nothing is armed when the server runs the view's query. Fix (the family:
whatever runs a decision made earlier: named and unnamed statements, portals,
``DECLARE``/``PREPARE`` already held): keep the hidden-read mark with the prepared
statement (``name -> hidden``, beside ``_pinned``; the unnamed one until the next Parse;
dropped on Close), and re-arm ``_withhold_through``/``_withhold_tx`` at every Bind or
Execute of a marked statement (and its portals), as a Query does.
"""

from __future__ import annotations

import asyncio

import pytest

from common.wire import messages as m
from tests.support import planted

AGENT = "r89-bot"
ROW = "R89-ROW-7c3e"  # r89x.vault, outside every grant (not an integer: v::int quotes it)
MARKERS = (ROW,)
MODES = ["simple", "extended", "prepared"]
_SP = "pg_catalog.set_config('search_path', 'r89x, pg_temp', false)"
_SP_READ = "SELECT v FROM r89v"  # public.r89v in the pinned path; r89x.r89v in the turned one
_VIEWS = ("vagg", "vwin", "vfin", "vfagg", "vwfin")
GRANTS = {key: f"read:public.r89v,r89.{key}" for key in _VIEWS}
GRANTS["cv"] = "read:r89.cv,r89.pub"
GRANTS["xml"] = "read:r89.xv,r89.xr,r89.pub"
SCOPES = "read:r89.pub"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r89; CREATE SCHEMA r89x;
CREATE TABLE r89x.vault (k text PRIMARY KEY, v text);
INSERT INTO r89x.vault VALUES ('row', '{ROW}');
CREATE TABLE r89.pub (id int PRIMARY KEY, v text);
INSERT INTO r89.pub VALUES (1, 'R89-PUB-ok');
CREATE TABLE public.r89v (v text);
INSERT INTO public.r89v VALUES ('R89-PUBLIC-ok');
CREATE TABLE r89x.r89v (v text);
INSERT INTO r89x.r89v SELECT v FROM r89x.vault;
-- 1. aggregates whose transition or final function sets the search_path
CREATE FUNCTION r89x.sp_sfunc(text, text) RETURNS text LANGUAGE sql
  AS $$SELECT {_SP}$$;
CREATE AGGREGATE r89x.agg(text) (SFUNC = r89x.sp_sfunc, STYPE = text);
CREATE VIEW r89.vagg AS SELECT length(r89x.agg(x)) AS n FROM (VALUES ('a')) v(x);
CREATE VIEW r89.vwin AS SELECT length(r89x.agg(x) OVER ()) AS n FROM (VALUES ('a')) v(x);
CREATE FUNCTION r89x.sp_final(text) RETURNS text LANGUAGE sql AS $$SELECT {_SP}$$;
CREATE AGGREGATE r89x.aggf(text) (SFUNC = pg_catalog.textcat, STYPE = text,
  INITCOND = '', FINALFUNC = r89x.sp_final);
CREATE VIEW r89.vfin AS SELECT length(r89x.aggf(x)) AS n FROM (VALUES ('a')) v(x);
CREATE VIEW r89.vwfin AS SELECT length(r89x.aggf(x) OVER ()) AS n FROM (VALUES ('a')) v(x);
CREATE FUNCTION r89x.via_agg() RETURNS int LANGUAGE sql
  AS $$SELECT length(r89x.agg(x)) FROM (VALUES ('a')) v(x)$$;
CREATE VIEW r89.vfagg AS SELECT r89x.via_agg() AS n;
-- 2. a built-in reading the vault named by text, in a view the grant reads
CREATE VIEW r89.xr AS SELECT pg_catalog.table_to_xml('r89x.vault'::text::regclass,
  false, false, '')::text AS x;
CREATE VIEW r89.xv AS SELECT ((pg_catalog.xpath('//v/text()', pg_catalog.table_to_xml(
  'r89x.vault'::text::regclass, false, false, '')))[1])::text::int AS n;
-- 3. withholding: a view whose own cast quotes a hidden row
CREATE VIEW r89.cv AS SELECT k, v::int AS n FROM r89x.vault;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r89, r89x CASCADE; DROP TABLE IF EXISTS public.r89v;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r89", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


PROBES = {
    "aggregate-sfunc-view": ("vagg", ["SELECT * FROM r89.vagg"], _SP_READ, None),
    "window-aggregate-sfunc-view": ("vwin", ["SELECT * FROM r89.vwin"], _SP_READ, None),
    "aggregate-finalfunc-view": ("vfin", ["SELECT * FROM r89.vfin"], _SP_READ, None),
    "window-aggregate-finalfunc-view": ("vwfin", ["SELECT * FROM r89.vwfin"], _SP_READ, None),
    "sql-fn-via-aggregate": ("vfagg", ["SELECT * FROM r89.vfagg"], _SP_READ, None),
    "table-to-xml-by-text-row": ("xml", [], "SELECT * FROM r89.xr", None),
    "table-to-xml-by-text-cast-error": ("xml", [], "SELECT * FROM r89.xv", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(PROBES))
def test_r89_reaches_directly(pg, px, key):
    _grant, before, sql, _why = PROBES[key]
    planted.reaches_directly(pg, before, sql, MARKERS)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(PROBES, MODES))
def test_r89_probe(px, key, mode):
    grant, before, sql, _why = PROBES[key]
    got = planted.proxied_in_block(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# --- withholding across groups and repeats ---------------------------------------------------
_CV = "SELECT * FROM r89.cv"


def _ext(sql: str, name: str = "") -> tuple[bytes, ...]:
    return (m.parse(name, sql), m.bind_no_params(statement=name), m.execute())


_DESCRIBE_P89 = m.frame(b"D", b"Sp89\x00")

STEPS = {
    # the same read twice, each its own transaction (a cached verdict the second time?)
    "repeat-simple": [(m.query(_CV),), (m.query(_CV),)],
    "repeat-extended": [(*_ext(_CV), m.SYNC), (*_ext(_CV), m.SYNC)],
    # a named statement parsed once, executed in two later groups
    "prepared-twice": [
        (m.parse("p89", _CV), m.SYNC),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
    ],
    "prepared-later-once": [
        (m.parse("p89", _CV), m.SYNC),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
    ],
    "prepared-later-describe": [
        (m.parse("p89", _CV), _DESCRIBE_P89, m.SYNC),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
    ],
    # parsed outside a block, executed inside a later one
    "prepared-then-block": [
        (m.parse("p89", _CV), m.SYNC),
        (m.query("BEGIN"),),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
        (m.query("ROLLBACK"),),
    ],
    # parsed inside a block, executed after its COMMIT
    "prepared-after-commit": [
        (m.query("BEGIN"),),
        (m.parse("p89", _CV), m.SYNC),
        (m.query("COMMIT"),),
        (m.bind_no_params(statement="p89"), m.execute(), m.SYNC),
    ],
    # an unnamed statement parsed, then bound in a later group
    "unnamed-later": [
        (m.parse("", _CV), m.SYNC),
        (m.bind_no_params(), m.execute(), m.SYNC),
    ],
    # a portal bound in one group (in a block), executed in the next
    "portal-later": [
        (m.query("BEGIN"),),
        (m.parse("", _CV), m.bind_no_params(portal="pt89"), m.SYNC),
        (m.execute(portal="pt89"), m.SYNC),
        (m.query("ROLLBACK"),),
    ],
    # a harmless statement first in the same Sync group
    "sync-group-after-harmless": [(*_ext("SELECT 1"), *_ext(_CV), m.SYNC)],
    "sync-group-after-harmless-read": [
        (*_ext("SELECT id FROM r89.pub"), *_ext(_CV), m.SYNC)],
    # a SQL PREPARE's EXECUTE in two transactions
    "sql-execute-twice": [
        (m.query("PREPARE q89 AS " + _CV),), (m.query("EXECUTE q89"),),
        (m.query("EXECUTE q89"),)],
}  # fmt: skip


@pytest.mark.parametrize("key", list(STEPS))
def test_r89_steps_directly(pg, px, key):
    got = planted.text(planted.direct_frames(pg, STEPS[key]))
    if not _shown(got):
        raise RuntimeError(("precondition: no marker directly", key, got[-400:]))


_WHY_LATER = (
    "LEAK: a read of a view over hidden rows parsed in one Sync group and executed in a "
    "later one, after the Parse's transaction ended, answers the server's 22P02 quoting the "
    "row in full: the relay arms hidden-read withholding at the decision (the Parse's group "
    "and its transaction) only (proxy/relay.py, policy.hidden_read)"
)
# fixed in session 36 (``StatementPolicy._note_hiding``: each Bind of such a statement
# marks ``hidden_read``): none left
_LEAKS: set[str] = set()


@pytest.mark.parametrize(
    "key",
    [pytest.param(k, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                             reason=_WHY_LATER)) if k in _LEAKS else k
     for k in STEPS],
)  # fmt: skip
def test_r89_steps(px, key):
    got = planted.text(planted.proxied_frames(px, STEPS[key], token=px.tokens["cv"]))
    assert not _shown(got), ("LEAK", key, got[-600:])


def test_r89_asyncpg_directly(pg, px):
    """asyncpg's own ``fetch`` outside a block: Parse/Describe/Sync, then Bind/Execute/Sync
    (the precondition: the server quotes the row)."""
    got = planted.text(planted.direct_frames(pg, STEPS["prepared-later-describe"]))
    if not _shown(got):
        raise RuntimeError(("precondition: no marker directly", got[-400:]))


def test_r89_asyncpg_fetch_outside_block(px):
    """The driver's ordinary path, ``await conn.fetch(sql)`` outside a transaction, once:
    held (withheld to its SQLSTATE: asyncpg's first Parse goes in the Execute's group)."""
    got = asyncio.run(planted.extended(px, [_CV], token=px.tokens["cv"]))
    assert got[0].startswith("error 22P02") and not _shown(got[0]), got


def test_r89_asyncpg_fetch_twice(px):
    """The same ``fetch`` again in the session: asyncpg's statement cache binds the
    statement it prepared, no Parse, and the server's 22P02 quotes the row."""
    got = asyncio.run(planted.extended(px, [_CV, _CV], token=px.tokens["cv"]))
    assert not _shown(" ".join(got)), ("LEAK", got)
