r"""Red-team round 88: attacks on session 36's second fixes (``_SETTERS_CTE``: what may set
settings, read from every stored tree by function; ``StatementPolicy._hides_rows`` and the
relay's ``hidden_read``: the server's word withheld to its SQLSTATE for a read of a view
over a relation the grant may not read), as families; time-boxed; the server the judge.

Method (rounds 84-87's): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login, the schemas' owner) after its ``before`` statements, in a block rolled
back, where it must show the marker (``RuntimeError`` otherwise: a probe that cannot leak
proves nothing); then through a proxy started after the planting, in a session of its own
on a fresh upstream backend (``planted.renew``), as a simple Query, an extended unnamed
statement and a named prepared statement, after ``before`` (simple Queries). Leaks are
strict xfails asserting the safe outcome; held families are plain tests.

Planted: ``r88x.vault`` (``ROW``, outside every grant; not an integer) and ``r88x.r88v``
(a copy of it); ``public.r88v`` (harmless, in the pinned path ``public, pg_temp``): after a
statement turns the search_path to ``r88x, pg_temp``, ``SELECT v FROM r88v``, decided as
``public.r88v``, reads ``r88x.r88v`` and answers ``ROW`` as a row. ``r88x.sv``, a view
``SELECT set_config('search_path', 'r88x, pg_temp', false)`` (in ``SETTINGS_CODE_SQL``
itself); ``r88x.sp_op`` (SQL, calls set_config) and its operator ``r88x.###``; the domain
``r88x.spd`` whose CHECK calls set_config; ``r88x.dt`` whose DEFAULT does. ``r88.cv``, a
view ``SELECT k, v::int FROM r88x.vault`` (a read fails 22P02 quoting ``ROW``).

Leaks (strict xfails; every mode):

Fixed in session 36 (plain tests now): items 1-3 (``_SETTERS_CTE``'s ``flagged``: the
``*_to_xml`` family; SET, RESET, DISCARD in a source; to a fixed point, a function whose
source names a flagged function, relation, domain, operator or cast type, or whose SQL body
reads a flagged relation) and item 4 through a view (a view whose query, or a view's under
it, calls user-written code counts as hiding rows: ``StatementPolicy._hides_rows``). Left
(strict xfails): item 4 through a direct call of an execute-granted function.

1. **Built-ins that run ``SELECT *`` of a relation named by text** (``_WHY_XML``).
   ``SELECT * FROM r88.tx`` (``read:`` of the view; its query is ``length(table_to_xml(
   'r88x.sv'::text::regclass, ...)::text)``, a number), and the same with
   ``schema_to_xml('r88x', ...)`` (``r88.sx``) and ``table_to_xml_and_xmlschema``
   (``r88.tsx``), run ``SELECT * FROM r88x.sv``, a view calling set_config: the pinned
   search_path turns and the next ``SELECT v FROM r88v`` answers ``ROW``. Cause:
   ``policy/catalog.py`` ``_SETTERS_CTE``'s ``setters`` names set_config, query_to_xml
   and its kin, ts_stat and ts_rewrite; the ``table_to_xml``/``schema_to_xml``/
   ``database_to_xml`` kin (which run a relation's ``SELECT *``, a view's query included,
   the relation given by OID or name as text, so no ``pg_depend`` row either) and
   ``cursor_to_xml`` are not in it (round 87's fix proposed them). Fix (the family: every
   built-in that runs SQL through SPI): add ``table_to_xml``, ``table_to_xmlschema``,
   ``table_to_xml_and_xmlschema``, ``schema_to_xml*``, ``database_to_xml*``,
   ``cursor_to_xml*`` to ``setters`` (and to ``CODE_FLAGS_SQL``'s words, whose
   ``_to_xml`` already matches them), so a stored call needs an execute scope.

2. **A string-bodied SQL function that reaches a setter by something other than its
   name** (``_WHY_REACH``). A view the grant reads (``read:`` alone: a view's calls are its
   code) calls ``r88x.via_op()`` (``LANGUAGE sql``, ``SELECT length('search_path'
   OPERATOR(r88x.###) 'r88x, pg_temp')``, the operator's function ``r88x.sp_op`` a setter),
   ``via_cast()`` (``'r88x, pg_temp'::text::r88x.spc``, a cast whose function calls
   set_config), ``via_dom()`` (``'a'::r88x.spd``, a domain whose CHECK calls it),
   ``via_view()`` (``SELECT count(*) FROM r88x.sv``), ``via_ins()`` (an INSERT into
   ``r88x.dt``, whose DEFAULT calls it) or ``via_atom()`` (``BEGIN ATOMIC SELECT count(*)
   FROM r88x.sv; END``), and PL/pgSQL ``r88x.pl_view()`` (``RETURN (SELECT count(*) FROM
   r88x.sv)``): each turns the search_path (the next ``SELECT v FROM r88v``
   answers ``ROW``). Held: a mixed-case name called quoted (``r88x."SetIt"()`` inside
   ``r88x.calls_mixed``: refused ``scope.execute``; ``_SETTERS_CTE`` lower-cases both), a
   view column's DEFAULT calling set_config on an INSERT through the view (refused). Cause:
   ``_SETTERS_CTE``'s fixed point matches a string body (``prosrc``) against setter
   *function* names only (``position(lower(s.proname) IN c.src)``) and a ``BEGIN ATOMIC``
   body's tree against ``:funcid``/``:opfuncid`` only; a string body records nothing in
   ``pg_depend`` and names an operator symbol, a type, a view or a table, never the
   function that runs; a ``BEGIN ATOMIC`` body's tree reads ``r88x.sv`` as ``:relid``.
   Fix (the family: whatever runs code without naming a function): close ``setters`` over
   the objects that run one: operators (``pg_operator.oprcode`` in setters: their
   ``oprname``), casts (``castfunc``: the target type's name), types and domains whose
   stored trees call one (``typname``), and relations in ``SETTINGS_CODE_SQL``'s rows
   (``relname``; a ``:relid`` of one in a ``prosqlbody`` tree); or, simpler and
   conservative, count every user-written ``LANGUAGE sql`` function with a string body as a
   setter once any setter exists in the database (as ``CODE_FLAGS_SQL`` does for the
   flags), parsing string bodies with pgparse when the cost matters.

3. **The SET command in a function's body** (``_WHY_SET``). ``SELECT * FROM r88.vset``
   (``read:``; the view calls ``r88x.sql_set()``, ``LANGUAGE sql AS 'SET search_path TO
   r88x, pg_temp; SELECT 1'``) and ``r88.vplset`` (``r88x.pl_set()``, PL/pgSQL ``SET
   search_path TO r88x, pg_temp``) turn the search_path: the next ``SELECT v FROM r88v``
   answers ``ROW``. The most direct spelling there is: no set_config, no pg_settings.
   Cause: ``_SETTERS_CTE``'s ``setters`` reads a body (``c.src``) for ``pg_settings``,
   ``EXECUTE``, ``U&`` and setter function names only; the SET command (and ``SET LOCAL``,
   ``RESET``, ``SET ROLE``/``SESSION AUTHORIZATION``, ``DISCARD``) is not among them, and
   ``CODE_FLAGS_SQL``'s settings words (``client_encoding``, ``names``, ...) do not see it
   either. Fix: add ``\mset\M``, ``\mreset\M`` and ``\mdiscard\M`` to the words of
   ``setters``' text match (over-matching ``UPDATE ... SET`` costs an execute scope, never
   a leak), and ``set_config``'s siblings to the flags' words.

4. **Code on hidden rows reached through a function** (``_WHY_FN``). ``SELECT * FROM
   r88.fcv`` (``read:``; the view is ``SELECT * FROM r88x.readcv()``, a SQL function
   reading ``r88.cv``, ``SELECT k, v::int FROM r88x.vault``), and with ``execute:`` only,
   ``SELECT * FROM r88.rcv()`` (SQL) and ``r88.rcvp()`` (PL/pgSQL ``RETURN QUERY``) reading
   ``r88.cv``, answer ``22P02 invalid input syntax for type integer: "ROW"`` in full; the
   same read of ``r88.cv`` named by the statement is withheld (held: directly, a view over
   it, a CTE, a scalar subquery, a join with a readable table, ``COPY (SELECT ...) TO
   STDOUT``, ``EXECUTE`` of a SQL ``PREPARE``, a cursor's ``FETCH`` and a ``WITH HOLD``
   cursor's ``COMMIT``, and a security barrier view ``r88.bw`` (its own WHERE ``k = 'pub'
   OR v::int > 0`` over ``r88x.bt``) read, UPDATEd (with RETURNING too) and DELETEd from;
   ``EXPLAIN ANALYZE`` is refused ``deny.catalog``; MERGE into a view is refused by the
   server). Cause:
   ``policy/engine.py`` ``StatementPolicy._hides_rows`` asks whether ``classified.reads``
   meets the views whose ``Snapshot.view_bases`` hold a relation the grant may not read;
   ``view_bases`` (``proxy/catalog_loader.py``) are the relations of a view's rewrite rule's
   ``pg_depend`` rows, so a function a view or the statement calls, whose body reads, is
   in neither (PostgreSQL records no dependency of a function on what it reads). Fix: a
   per-function reads list (string and ``BEGIN ATOMIC`` bodies parsed, as the snapshot
   already does for inlinable set-returning functions; any other language: reads
   anything), carried into ``view_bases`` of each view calling the function (its
   ``pg_depend`` on ``pg_proc``) and checked for the functions a statement calls
   (``classified.functions``) in ``_hides_rows``.

The cost (a plain test, not a regression): the grant's own error in a read of such a view
(``SELECT k, 'abc'::int FROM r88.cv``) loses its text, keeps its SQLSTATE 22P02.
"""

from __future__ import annotations

import pytest

from tests.support import planted

AGENT = "r88-bot"
ROW = "R88-ROW-5b1d"  # r88x.vault, outside every grant (not an integer: v::int quotes it)
MARKERS = (ROW,)
MODES = ["simple", "extended", "prepared"]
_SP = "pg_catalog.set_config('search_path', 'r88x, pg_temp', false)"
_SP_READ = "SELECT v FROM r88v"  # public.r88v in the pinned path; r88x.r88v in the turned one
_VIEWS = ("tx", "sx", "tsx", "vop", "vdom", "vview", "vins", "vatom", "vcast", "vpl", "vset",
          "vplset", "vmix")  # fmt: skip
GRANTS = {key: f"read:public.r88v,r88.{key}" for key in _VIEWS}
GRANTS["cv"] = "read:r88.cv,r88.cvv,r88.fcv,r88.pub"
GRANTS["rcv"] = "read:r88.pub execute:r88.rcv,r88.rcvp"
GRANTS["bw"] = "read:r88.bw write:r88.bw"
GRANTS["dv"] = "read:public.r88v,r88.dv write:r88.dv"
SCOPES = "read:r88.pub"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r88; CREATE SCHEMA r88x;
CREATE TABLE r88x.vault (k text PRIMARY KEY, v text);
INSERT INTO r88x.vault VALUES ('row', '{ROW}');
CREATE TABLE r88.pub (id int PRIMARY KEY, v text);
INSERT INTO r88.pub VALUES (1, 'R88-PUB-ok');
CREATE TABLE public.r88v (v text);
INSERT INTO public.r88v VALUES ('R88-PUBLIC-ok');
CREATE TABLE r88x.r88v (v text);
INSERT INTO r88x.r88v SELECT v FROM r88x.vault;
CREATE VIEW r88x.sv AS SELECT {_SP} AS s;
-- 1. built-ins running SELECT * of a relation named by text
CREATE VIEW r88.tx AS SELECT length(pg_catalog.table_to_xml('r88x.sv'::text::regclass,
  false, false, '')::text) AS n;
CREATE VIEW r88.sx AS SELECT length(pg_catalog.schema_to_xml('r88x'::text::name,
  false, false, '')::text) AS n;
CREATE VIEW r88.tsx AS SELECT length(pg_catalog.table_to_xml_and_xmlschema(
  'r88x.sv'::text::regclass, false, false, '')::text) AS n;
-- 2. string-bodied SQL functions reaching a setter not by its name
CREATE FUNCTION r88x.sp_op(text, text) RETURNS text LANGUAGE sql
  AS 'SELECT pg_catalog.set_config($1, $2, false)';
CREATE OPERATOR r88x.### (LEFTARG = text, RIGHTARG = text, FUNCTION = r88x.sp_op);
CREATE FUNCTION r88x.via_op() RETURNS int LANGUAGE sql
  AS $$SELECT length('search_path' OPERATOR(r88x.###) 'r88x, pg_temp')$$;
CREATE VIEW r88.vop AS SELECT r88x.via_op() AS n;
CREATE DOMAIN r88x.spd AS text CHECK ({_SP} <> '');
CREATE FUNCTION r88x.via_dom() RETURNS int LANGUAGE sql AS $$SELECT length('a'::r88x.spd)$$;
CREATE VIEW r88.vdom AS SELECT r88x.via_dom() AS n;
CREATE FUNCTION r88x.via_view() RETURNS bigint LANGUAGE sql
  AS 'SELECT count(*) FROM r88x.sv';
CREATE VIEW r88.vview AS SELECT r88x.via_view() AS n;
CREATE TABLE r88x.dt (id int, s text DEFAULT {_SP});
CREATE FUNCTION r88x.via_ins() RETURNS int VOLATILE LANGUAGE sql
  AS 'INSERT INTO r88x.dt (id) VALUES (1) RETURNING id';
CREATE VIEW r88.vins AS SELECT r88x.via_ins() AS n;
CREATE FUNCTION r88x.via_atom() RETURNS bigint LANGUAGE sql
  BEGIN ATOMIC SELECT count(*) FROM r88x.sv; END;
CREATE VIEW r88.vatom AS SELECT r88x.via_atom() AS n;
CREATE TYPE r88x.spc AS (s text);
CREATE FUNCTION r88x.to_spc(text) RETURNS r88x.spc LANGUAGE sql
  AS $$SELECT ROW(pg_catalog.set_config('search_path', $1, false))::r88x.spc$$;
CREATE CAST (text AS r88x.spc) WITH FUNCTION r88x.to_spc(text);
CREATE FUNCTION r88x.via_cast() RETURNS int LANGUAGE sql
  AS $$SELECT length(('r88x, pg_temp'::text::r88x.spc).s)$$;
CREATE VIEW r88.vcast AS SELECT r88x.via_cast() AS n;
CREATE FUNCTION r88x.pl_view() RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RETURN (SELECT count(*) FROM r88x.sv); END $$;
CREATE VIEW r88.vpl AS SELECT r88x.pl_view() AS n;
-- the SET command itself in a function's body
CREATE FUNCTION r88x.sql_set() RETURNS int LANGUAGE sql
  AS 'SET search_path TO r88x, pg_temp; SELECT 1';
CREATE VIEW r88.vset AS SELECT r88x.sql_set() AS n;
CREATE FUNCTION r88x.pl_set() RETURNS int LANGUAGE plpgsql
  AS $$BEGIN SET search_path TO r88x, pg_temp; RETURN 1; END $$;
CREATE VIEW r88.vplset AS SELECT r88x.pl_set() AS n;
-- held: a mixed-case name, called quoted; a view's column DEFAULT on INSERT through it
CREATE FUNCTION r88x."SetIt"() RETURNS text LANGUAGE sql AS $$SELECT {_SP}$$;
CREATE FUNCTION r88x.calls_mixed() RETURNS int LANGUAGE sql
  AS $$SELECT length(r88x."SetIt"())$$;
CREATE VIEW r88.vmix AS SELECT r88x.calls_mixed() AS n;
CREATE TABLE r88x.dvt (id int, s text);
CREATE VIEW r88.dv AS SELECT id, s FROM r88x.dvt;
ALTER VIEW r88.dv ALTER COLUMN s SET DEFAULT {_SP};
-- 3. withholding: a view whose own cast quotes a hidden row, and readers of it
CREATE VIEW r88.cv AS SELECT k, v::int AS n FROM r88x.vault;
CREATE VIEW r88.cvv AS SELECT * FROM r88.cv;
CREATE FUNCTION r88x.readcv() RETURNS SETOF int LANGUAGE sql AS 'SELECT n FROM r88.cv';
CREATE VIEW r88.fcv AS SELECT * FROM r88x.readcv() AS n;
CREATE TABLE r88x.bt (k text PRIMARY KEY, v text);
INSERT INTO r88x.bt VALUES ('pub', '1'), ('row', '{ROW}');
CREATE VIEW r88.bw WITH (security_barrier) AS
  SELECT k, v FROM r88x.bt WHERE k = 'pub' OR v::int > 0;
CREATE FUNCTION r88.rcv() RETURNS SETOF int LANGUAGE sql AS 'SELECT n FROM r88.cv';
CREATE FUNCTION r88.rcvp() RETURNS SETOF int LANGUAGE plpgsql
  AS $$BEGIN RETURN QUERY SELECT n FROM r88.cv; END $$;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r88, r88x CASCADE; DROP TABLE IF EXISTS public.r88v;\n"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r88", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


_WHY_FN = (
    "LEAK (left, session 36: an execute scope trusts what the function reads, as "
    "docs/policy.md says of every granted body): a call of a granted function whose body "
    "reads a view over hidden rows answers the server's 22P02 quoting the row; "
    "_hides_rows (policy/engine.py) knows no function body's reads"
)

PROBES = {
    "table-to-xml-view": ("tx", ["SELECT * FROM r88.tx"], _SP_READ, None),
    "schema-to-xml-view": ("sx", ["SELECT * FROM r88.sx"], _SP_READ, None),
    "sql-fn-via-operator": ("vop", ["SELECT * FROM r88.vop"], _SP_READ, None),
    "sql-fn-via-domain": ("vdom", ["SELECT * FROM r88.vdom"], _SP_READ, None),
    "sql-fn-via-view": ("vview", ["SELECT * FROM r88.vview"], _SP_READ, None),
    "sql-fn-via-insert-default": ("vins", ["SELECT * FROM r88.vins"], _SP_READ, None),
    "atomic-fn-via-view": ("vatom", ["SELECT * FROM r88.vatom"], _SP_READ, None),
    "plpgsql-fn-via-view": ("vpl", ["SELECT * FROM r88.vpl"], _SP_READ, None),
    "sql-fn-set-command": ("vset", ["SELECT * FROM r88.vset"], _SP_READ, None),
    "plpgsql-fn-set-command": (
        "vplset", ["SELECT * FROM r88.vplset"], _SP_READ, None),
    "sql-fn-via-cast": ("vcast", ["SELECT * FROM r88.vcast"], _SP_READ, None),
    "table-to-xml-and-schema-view": ("tsx", ["SELECT * FROM r88.tsx"], _SP_READ, None),
    "mixed-case-name": ("vmix", ["SELECT * FROM r88.vmix"], _SP_READ, None),
    "view-column-default": ("dv", ["INSERT INTO r88.dv (id) VALUES (1)"], _SP_READ, None),
    # withholding (the marker is in the server's 22P02 text)
    "hidden-view": ("cv", [], "SELECT * FROM r88.cv", None),
    "hidden-view-over-view": ("cv", [], "SELECT * FROM r88.cvv", None),
    "hidden-view-via-function": ("cv", [], "SELECT * FROM r88.fcv", None),
    "hidden-cte": ("cv", [], "WITH x AS (SELECT * FROM r88.cv) SELECT * FROM x", None),
    "hidden-scalar-subquery": ("cv", [], "SELECT (SELECT max(n) FROM r88.cv)", None),
    "hidden-copy": ("cv", [], "COPY (SELECT * FROM r88.cv) TO STDOUT", None),
    "hidden-explain-analyze": ("cv", [], "EXPLAIN ANALYZE SELECT * FROM r88.cv", None),
    "hidden-execute": ("cv", ["PREPARE p88 AS SELECT * FROM r88.cv"], "EXECUTE p88", None),
    "hidden-cursor-fetch": (
        "cv", ["DECLARE c88 CURSOR FOR SELECT * FROM r88.cv"], "FETCH ALL FROM c88", None),
    "hidden-sql-function": ("rcv", [], "SELECT * FROM r88.rcv()", _WHY_FN),
    "hidden-plpgsql-function": ("rcv", [], "SELECT * FROM r88.rcvp()", _WHY_FN),
    "hidden-barrier-read": ("bw", [], "SELECT k FROM r88.bw", None),
    "hidden-barrier-update": ("bw", [], "UPDATE r88.bw SET v = v WHERE length(k) > 0", None),
    "hidden-barrier-delete": ("bw", [], "DELETE FROM r88.bw WHERE length(k) > 9", None),
    "hidden-barrier-update-returning": (
        "bw", [], "UPDATE r88.bw SET v = '2' WHERE length(k) > 0 RETURNING k", None),
    "hidden-join-readable": (
        "cv", [], "SELECT p.v FROM r88.pub p LEFT JOIN r88.cv c ON c.n = p.id", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(PROBES))
def test_r88_reaches_directly(pg, px, key):
    _grant, before, sql, _why = PROBES[key]
    planted.reaches_directly(pg, before, sql, MARKERS)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(PROBES, MODES))
def test_r88_probe(px, key, mode):
    grant, before, sql, _why = PROBES[key]
    got = planted.proxied_in_block(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


def _hold_commit(pg, px, mode=None):
    """DECLARE ... WITH HOLD in a block, then COMMIT (which runs the cursor's query to
    completion: the error comes with the transaction's end)."""
    before = ["BEGIN", "DECLARE h88 CURSOR WITH HOLD FOR SELECT * FROM r88.cv"]
    if mode is None:
        return planted.reaches_directly(pg, before, "COMMIT", MARKERS, block=False)
    return planted.proxied_in_block(px, "cv", mode, before, "COMMIT", block=False)


def test_r88_hold_commit_directly(pg, px):
    _hold_commit(pg, px)


@pytest.mark.parametrize("mode", MODES)
def test_r88_hold_commit(pg, px, mode):
    got = _hold_commit(pg, px, mode)
    assert not _shown(got), ("LEAK", mode, got[-600:])


# --- the cost (a plain test): the grant's own error, in a read of such a view --------------
_OWN = "SELECT k, 'abc'::int FROM r88.cv"


def test_r88_own_error_directly(pg, px):
    got = planted.direct_in_block(pg, [], _OWN)
    assert "22P02" in got and "abc" in got, got[-300:]


@pytest.mark.parametrize("mode", MODES)
def test_r88_own_error_keeps_sqlstate(px, mode):
    """The grant's own literal's cast error, in a read of a view over a relation it may not
    read: its text is withheld with the server's (the cost of ``hidden_read``: the client
    cannot tell its own error from the view's), its SQLSTATE is kept."""
    got = planted.proxied_in_block(px, "cv", mode, [], _OWN)
    assert "22P02" in got and not _shown(got), got[-400:]
