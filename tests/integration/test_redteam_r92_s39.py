"""Red-team round 92: session 39's policy changes attacked, the server the judge.

Method (rounds 83-91): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login, the schemas' owner), where it must show a marker (``RuntimeError``
otherwise: a probe that cannot leak proves nothing); then through a proxy started after
the planting. Statement probes run as a simple Query, an extended unnamed statement and a
named prepared statement (``planted.run_mode``) after their set-up statements, in a block
rolled back; protocol probes (settings named by a parameter) run the same raw message
sequences directly and through the proxy (``planted.direct_frames`` /
``proxied_frames``); a change the grant may not make must succeed directly (in a block
rolled back) and leave the catalog unchanged through the proxy (read back as the
superuser: the judge). A leak is a
strict xfail asserting the safe outcome; a family that holds is a plain test.

Planted (as ``pgwitness``): ``r92x.vault`` (``ROW``); the database's custom setting
``r92x.secret`` (``GUC``) and a table ``r92x.secret`` (so a regclass of its OID reads as
the setting's name); an enum ``r92x.en`` with labels ``ok`` and ``COD``, used by a column
of the granted ``r92.pub`` (whose only row holds ``ok``); ``r92x.leakf(text)`` (IMMUTABLE
PL/pgSQL raising a NOTICE with the vault's row); a partitioned ``r92.pt`` with its
partition ``r92x.pt1`` and an inheritance parent ``r92.ih`` with its child ``r92x.ihc``
(constraint ``ih_chk``); ``r92x.own`` (``own_chk``); ``r92x.dom`` (a domain with a CHECK
``dom_chk``), ``r92x.dchk`` (a domain whose CHECK calls ``leakf``), an operator
``r92x.===`` over it, an ICU collation ``r92x.co`` (locale ``COD``); the grant's own
``r92.d92`` (domain), ``r92.k`` (a primary key), ``r92.pv`` (a view of ``r92.pub``);
round 90's code: ``r92.swap(n)`` drops ``public.<n>`` and copies the vault into
``pg_temp.<n>``, called by a trigger of ``public.r92_trg`` and a default of
``public.r92_dft`` too (``public.r92_t`` planted again around each probe).

Grants: ``base`` ``read:r92.pub read:r92.pv set:work_mem``; ``mig`` ``read: write: ddl:``
of ``r92.*``; ``code`` ``read: write: ddl:public.* execute:r92.swap``; ``all`` ``read:``
of ``r92.*`` and ``r92x.*`` (every schema holding enums and collations at the load).

Leak found (fixed in session 39 by the coordinator, after the round: plain tests now):

1. **Enum labels of a type outside the grant through a granted column** (``enum-range-of-
   column``, ``enum-last-of-column``, ``enum-range-bounded``, ``enum-range-subscript``,
   ``enum-range-array-element``, ``enum-range-view-column``; grant ``base``, every
   mode). ``SELECT enum_range(e)::text FROM r92.pub`` answers ``{ok,COD}``: every label
   of ``r92x.en``, while the column holds only ``ok``, and ``SELECT enumlabel FROM
   pg_enum`` (whole row, ``COPY``, ``array_agg``) and ``enum_range(NULL::r92x.en)`` are
   refused since bfd7194 (labels are object text of the schema holding the type, "may not
   read enumlabel of pg_catalog.pg_enum for enum types outside the grant"). The same
   through ``enum_last(e)``, ``enum_range(e, NULL)``, ``(enum_range(e))[2]``, an enum
   array column's element, a granted view's column, and with no row at all
   (``enum_range((json_populate_record(NULL::r92.pub, '{}')).e)``, ``enum-range-no-row``:
   the granted row type's column is enough). Cause: ``enum_range``,
   ``enum_first`` and ``enum_last`` are plain built-ins (``policy/classify/catalogue.py``
   ``BUILTIN_FUNCTIONS``) and the enum's type reaches them from a column, never named in
   the statement (``Classified.types`` holds named types only; a column's enum is "free",
   policy.md Functions item 6), so nothing asks ``Snapshot.text_schemas`` /
   ``policy.catalog._SCHEMA_TEXTS``, which bfd7194 consults only for ``pg_enum.enumlabel``
   read as a catalog column. Fix for the family: a call of ``enum_range``/``enum_first``/
   ``enum_last`` (anyenum: the label list of the argument's type, whatever its source) is
   a read of ``pg_enum.enumlabel`` decided as bfd7194 decides that column: allowed while
   ``text_schemas`` holds only schemas the grant names (or with ``read:pg_catalog.
   pg_enum``), else refused with that remedy; calls with a ``NULL::s.en`` argument stay
   refused by the type's schema as now. Done so: PostgreSQL's reading adds that object
   text (``any:pg_catalog.pg_enum.enumlabel``) to the statement's ``describes`` for any
   call of the three (``pgparse._ENUM_LABELS``).

Transparency (strict xfails: an honest statement of the grant's own objects refused):

* (fixed in session 39 after the round: a plain test now)
  ``CREATE INDEX r92_h2 ON ONLY r92.pt (id)`` (``index-on-only-partitioned``), ``r92.pt``
  having its partition ``r92x.pt1`` outside the grant: refused "its partition r92x.pt1
  changes with it", while ``ON ONLY`` makes an invalid index on the parent alone and
  changes no partition (directly: ``CREATE INDEX``, none on ``r92x.pt1``; without ``ONLY``
  the refusal is right and held, ``index-of-partitions``). Cause: ``policy/engine.py``
  ``_ddl_reach`` adds every partition of the relation for any DDL command, and nothing
  passes it the statement's ``ONLY`` (the ``IndexStmt``'s ``relation.inh`` false,
  67f5754's ``_from_pg_alone``). Fix: let ``Classified`` carry "ONLY" for DDL on
  PostgreSQL's reading and leave partitions (not the statistics objects of its own
  columns) out of ``_ddl_reach`` for ``CREATE INDEX ... ON ONLY``.
* (fixed in session 39 after the round: a plain test now)
  ``COMMENT ON CONSTRAINT d92_chk ON DOMAIN r92.d92`` (``comment-domain-constraint``): the
  grant's own domain, refused ``deny.unknown`` (sqlglot cannot read it; 67f5754 decides
  only a table's constraint on PostgreSQL's reading). Fix: the same rule for
  ``OBJECT_DOMCONSTRAINT`` (ddl on the domain; it makes nothing run).

Held (plain tests):

* settings named by a cast parameter (044a0ca): a SQL ``PREPARE p(regclass) AS SELECT
  current_setting($1::text)`` / ``::varchar`` / ``set_config`` then ``EXECUTE p(<OID>)``
  (directly the regclass reads as ``r92x.secret``: refused, a SQL PREPARE's parameter is
  never pinned), the same over the extended protocol; declared regclass, oid, name,
  bpchar, unknown (refused: ``_CAST_SETTING``); the parameter typed elsewhere through a
  subquery, VALUES, an array, a CTE, ``$01``; COLLATE; a quoted ``"text"``, ``CAST(... AS
  text)``, binary format, Describe before Bind, a named statement bound again after a SET
  (decided on the bound name: refused);
* enum labels and collations' locales in the catalogs: ``pg_enum`` as a whole row,
  ``x::text``, ``COPY pg_enum``, ``array_agg``, psql's ``\\dT+`` element list (a correlated
  ``enumtypid = t.oid``), a correlated subquery, LATERAL, pinned by ``pg_typeof`` of a
  granted column; psql's ``\\dO``, ``pg_collation`` as a whole row (all refused, the
  catalog's read scope named); ``enum_range(NULL::r92x.en)`` (the schema named); with a
  grant ``all`` naming every schema that held enums and collations at the load, an enum
  (or one given a value by ``ALTER TYPE ... ADD VALUE``) or ICU collation another login
  made in a new schema ``r92y`` after it, or in its own ``pg_temp_N`` while its session
  stays open (refused: decided on a load after the statement arrived, that schema named);
* DDL on PostgreSQL's reading (67f5754, 181ed69): an index of a granted table calling a
  function outside the grant (NULLS NOT DISTINCT, ON ONLY, a predicate, INCLUDE: refused,
  ``scope.execute``), a cast to a domain outside it whose CHECK calls one
  (``deny.catalog``), an operator outside it in the expression or an ON ONLY predicate
  (``deny.operator``); SET STATISTICS / SET STORAGE / RENAME CONSTRAINT of a parent that
  reaches a partition or inheritance child outside the grant, of a table outside it;
  COMMENT ON CONSTRAINT of a table or a domain outside the grant; a NULLS NOT DISTINCT
  index of a partitioned table whose partition is outside the grant; ON ONLY a table
  outside it (all refused; the catalog read back unchanged);
* a statement prepared before code that may run DDL ran and bound or executed after it in
  the block (a protocol statement, SQL PREPARE/EXECUTE, a cursor declared after): refused
  (decided again at its Bind; ``deny.execute`` for the SQL one); the code's DROP committed
  inside one simple Query (``BEGIN; call; COMMIT; read``, ``COMMIT AND CHAIN``) or one
  pipeline (BEGIN ... COMMIT, then the read before the Sync; or autocommit groups with a
  Sync between): refused (``deny.temp``);
* honest DDL of the grant's own tables allowed as directly: SET STATISTICS, SET STORAGE,
  RENAME CONSTRAINT (a CHECK, a primary key), COMMENT ON CONSTRAINT, a NULLS NOT DISTINCT
  unique index, CLUSTER ON, SET WITHOUT CLUSTER; a Parse declaring regclass after the same
  text was allowed untyped (the cache) and a Flush between Parses: refused;
* note, not a leak: an index of a granted table may use a collation outside the grant
  (``v COLLATE r92x.co``) in every spelling alike (plain, NULLS NOT DISTINCT, ON ONLY):
  a dependency on the object, no value of it shown;
* the path closed after code that may run DDL (9984b15; round 90's planting: ``r92.swap``
  drops ``public.r92_t`` and copies the vault into ``pg_temp.r92_t``): after SAVEPOINT ...
  RELEASE, a later savepoint rolled back to, an error and ROLLBACK TO, COMMIT AND CHAIN
  (then decided on a load: the public table is gone, refused), the code run by a trigger
  or a column default instead of a call, the trigger inside a released savepoint (all
  refused, ``deny.temp``).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.support import planted
from tests.support.rawpg import FLUSH, SYNC, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r92-bot"
ROW = "R92-ROW-4c1d"
GUC = "R92-GUC-9e7a"
COD = "R92-COD-b3f0"
MARKERS = (ROW, GUC, COD)
SCOPES = "read:r92.pub read:r92.pv set:work_mem"
GRANTS = {
    "mig": "read:r92.* write:r92.* ddl:r92.*",
    "code": "read:public.* write:public.* ddl:public.* execute:r92.swap",
    "all": "read:r92.* read:r92x.*",
}
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r92; CREATE SCHEMA r92x;
CREATE TABLE r92x.vault (k text PRIMARY KEY, v text);
INSERT INTO r92x.vault VALUES ('row', '{ROW}');
CREATE TABLE r92x.secret (id int);
CREATE TYPE r92x.en AS ENUM ('ok', '{COD}');
CREATE COLLATION r92x.co (provider = icu, locale = '{COD}');
CREATE DOMAIN r92.den AS r92x.en;
CREATE DOMAIN r92.d92 AS int CONSTRAINT d92_chk CHECK (VALUE > 0);
CREATE TABLE r92.k (id int CONSTRAINT k_pk PRIMARY KEY, v text);
CREATE TABLE r92.pub (id int, e r92x.en, v text, ea r92x.en[], d r92.den);
INSERT INTO r92.pub VALUES (1, 'ok', 'x', '{{ok}}', 'ok');
CREATE VIEW r92.pv AS SELECT e FROM r92.pub;
CREATE FUNCTION r92x.leakf(x text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RAISE NOTICE 'leak %', (SELECT v FROM r92x.vault WHERE k = 'row'); RETURN x; END $$;
CREATE TABLE r92.t (id int, v text, CONSTRAINT t_chk CHECK (id > 0));
INSERT INTO r92.t VALUES (1, 'x');
CREATE TABLE r92.pt (id int, v text) PARTITION BY LIST (id);
CREATE TABLE r92x.pt1 PARTITION OF r92.pt FOR VALUES IN (1);
INSERT INTO r92.pt VALUES (1, 'x');
CREATE TABLE r92.ih (id int, v text, CONSTRAINT ih_chk CHECK (id > 0));
CREATE TABLE r92x.ihc () INHERITS (r92.ih);
CREATE TABLE r92x.own (id int, CONSTRAINT own_chk CHECK (id > 0));
CREATE DOMAIN r92x.dom AS int CONSTRAINT dom_chk CHECK (VALUE > 0);
CREATE DOMAIN r92x.dchk AS text CHECK (r92x.leakf(VALUE) IS NOT NULL);
CREATE FUNCTION r92x.opf(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE
  AS $$ SELECT r92x.leakf(a) IS NOT NULL $$;
CREATE OPERATOR r92x.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = r92x.opf);
-- code that may run DDL (round 90's planting): drops public.<n>, copies the vault into
-- pg_temp.<n>; called directly, by a trigger and by a column default of public tables
CREATE FUNCTION r92.swap(n text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TABLE IF EXISTS public.%I', n);
  EXECUTE format('CREATE TEMP TABLE %I AS SELECT v FROM r92x.vault', n);
  RETURN 'swapped';
END $$;
CREATE FUNCTION r92.swap_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM r92.swap('r92_t'); RETURN NEW; END $$;
CREATE TABLE public.r92_trg (id int);
CREATE TRIGGER r92_trg BEFORE INSERT ON public.r92_trg FOR EACH ROW
  EXECUTE FUNCTION r92.swap_trg();
CREATE TABLE public.r92_dft (id int, s text DEFAULT r92.swap('r92_t'));
CREATE TABLE public.r92_t (v text);
INSERT INTO public.r92_t VALUES ('1');
RESET ROLE;
ALTER DATABASE app SET r92x.secret = '{GUC}';
"""
TEARDOWN = """
DROP SCHEMA IF EXISTS r92, r92x, r92y CASCADE;
DROP TABLE IF EXISTS public.r92_trg, public.r92_dft, public.r92_t;
ALTER DATABASE app RESET r92x.secret;
"""
OIDS = "SELECT 'secret=' || 'r92x.secret'::regclass::oid"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r92", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        planted.planted_oids(pg, h, OIDS)
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _peek(key: str, got: str) -> None:
    if os.environ.get("R92_PEEK"):
        print("PEEK", key, re.sub(r"[^ -~]", ".", got)[-300:])


# --- 1. settings named by a parameter cast to text or varchar (044a0ca) ---------------------
SETTING = "r92x.secret"
REGCLASS, OID_T, NAME, BPCHAR, UNKNOWN, TEXT = 2205, 26, 19, 1042, 705, 25


def _b(*values, fmts=(), statement: str = "") -> bytes:
    return bind("", statement, [None if v is None else str(v).encode() for v in values], fmts)


def _one(sql: str, *values, oids=(), fmts=()) -> list:
    return [(parse("", sql, oids), _b(*values, fmts=fmts), execute(), SYNC)]


def frame_describe(name: str) -> bytes:
    from common.wire.errors import frame

    return frame(b"D", b"S" + name.encode() + b"\x00")


_CS = "SELECT current_setting($1::text)"
# key -> (steps: a callable of the OIDs, or a list; strict-xfail reason, or None)
SETTINGS = {
    "sql-prepare-regclass-cast": (lambda o: [
        (query("PREPARE p92(regclass) AS SELECT current_setting($1::text)"),),
        (query(f"EXECUTE p92({o['secret']})"),),
    ], None),
    "sql-prepare-regclass-varchar": (lambda o: [
        (query("PREPARE p92(regclass) AS SELECT current_setting($1::varchar)"),),
        (query(f"EXECUTE p92({o['secret']})"),),
    ], None),
    "sql-prepare-regclass-set-config": (lambda o: [
        (query("PREPARE p92(regclass) AS SELECT set_config($1::text, current_setting("
               "$1::text), false)"),),
        (query(f"EXECUTE p92({o['secret']})"),),
    ], None),
    "extended-parse-of-prepare": (lambda o: [
        (parse("", "PREPARE p92(regclass) AS SELECT current_setting($1::text)"), _b(),
         execute(), SYNC),
        (parse("", f"EXECUTE p92({o['secret']})"), _b(), execute(), SYNC),
    ], None),
    "declared-regclass": (lambda o: _one(_CS, o["secret"], oids=(REGCLASS,)), None),
    "declared-oid": (lambda o: _one(_CS, o["secret"], oids=(OID_T,)), None),
    "declared-unknown": (_one(_CS, SETTING, oids=(UNKNOWN,)), None),
    "declared-name": (_one(_CS, SETTING, oids=(NAME,)), None),
    "declared-bpchar": (_one(_CS, SETTING, oids=(BPCHAR,)), None),
    "subquery-regclass": (lambda o: _one(
        "SELECT current_setting($1::text) FROM (SELECT $1::regclass) s", o["secret"]), None),
    "values-regclass": (lambda o: _one(
        "SELECT current_setting(x::text) FROM (VALUES ($1::regclass)) v(x)", o["secret"]),
        None),
    "array-element": (lambda o: _one(
        "SELECT current_setting((ARRAY[$1::regclass])[1]::text)", o["secret"]), None),
    "cte-regclass": (lambda o: _one(
        "WITH c AS (SELECT $1::regclass AS r) SELECT current_setting($1::text) FROM c",
        o["secret"]), None),
    "dollar-zero-one": (lambda o: _one(
        "SELECT $01::regclass IS NOT NULL, current_setting($1::text)", o["secret"]), None),
    "collate": (_one("SELECT current_setting($1::text COLLATE \"C\")", SETTING), None),
    "quoted-text": (_one('SELECT current_setting($1::"text")', SETTING), None),
    "cast-syntax": (_one("SELECT current_setting(CAST($1 AS text))", SETTING), None),
    "binary": (_one(_CS, SETTING, oids=(TEXT,), fmts=(1,)), None),
    "describe-then-bind": ([
        (parse("s92", _CS), frame_describe("s92"), FLUSH, SYNC),
        (_b(SETTING, statement="s92"), execute(), SYNC),
    ], None),
    # the same text allowed untyped first (the classification cached), then declared regclass
    "cached-then-declared-regclass": (lambda o: [
        (parse("", _CS), _b("work_mem"), execute(), SYNC),
        (parse("s92a", _CS), _b("work_mem", statement="s92a"), execute(), SYNC),
        (parse("", _CS, (REGCLASS,)), _b(o["secret"]), execute(), SYNC),
        (parse("s92b", _CS, (REGCLASS,)), _b(o["secret"], statement="s92b"), execute(), SYNC),
    ], None),
    "declared-regclass-flush-first": (lambda o: [
        (parse("s92", _CS), FLUSH),
        (parse("s92c", _CS, (REGCLASS,)), FLUSH, SYNC),
        (_b(o["secret"], statement="s92c"), execute(), SYNC),
    ], None),
    "again-after-ddl": ([
        (parse("s92", _CS), SYNC),
        (query("SET work_mem = '5MB'"),),
        (_b(SETTING, statement="s92"), execute(), SYNC),
    ], None),
}  # fmt: skip


def _steps(px, key):
    steps = SETTINGS[key][0]
    return steps(px.oids) if callable(steps) else steps


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[1]))
        if v[1]
        else k
        for k, v in SETTINGS.items()
    ],
)
def test_r92_setting_named_by_a_cast_parameter(pg, px, key):
    steps = _steps(px, key)
    directly = planted.text(planted.direct_frames(pg, steps))
    _peek("direct " + key, directly)
    got = planted.text(planted.proxied_frames(px, steps))
    _peek("proxy " + key, got)
    assert not _shown(got), ("LEAK", key, got[-500:])


@pytest.mark.parametrize("key", ["sql-prepare-regclass-cast", "extended-parse-of-prepare"])
def test_r92_setting_probes_reach_directly(pg, px, key):
    directly = planted.text(planted.direct_frames(pg, _steps(px, key)))
    assert GUC in directly, directly[-400:]


# --- 2. enum labels, collations (bfd7194) ------------------------------------------------
ENUMS = {
    "enum-range-of-column": ("base", [], "SELECT enum_range(e)::text FROM r92.pub", None),
    "enum-last-of-column": ("base", [], "SELECT enum_last(e)::text FROM r92.pub", None),
    "enum-range-bounded": ("base", [], "SELECT enum_range(e, NULL)::text FROM r92.pub", None),
    "enum-range-subscript": ("base", [], "SELECT (enum_range(e))[2]::text FROM r92.pub", None),
    "enum-range-array-element": ("base", [], "SELECT enum_range(ea[1])::text FROM r92.pub", None),
    "enum-range-view-column": ("base", [], "SELECT enum_range(e)::text FROM r92.pv", None),
    "enum-range-named-type": ("base", [], "SELECT enum_range(NULL::r92x.en)::text", None),
    "enum-range-no-row": ("base", [], "SELECT enum_range((json_populate_record("
                          "NULL::r92.pub, '{}')).e)::text", None),
    "psql-dT-plus": ("base", [], "SELECT t.typname, pg_catalog.array_to_string(ARRAY("
                     "SELECT e.enumlabel FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid "
                     "ORDER BY e.enumsortorder), E'\\n') FROM pg_catalog.pg_type t "
                     "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
                     "WHERE n.nspname = 'r92x'", None),
    "enum-correlated": ("base", [], "SELECT (SELECT string_agg(enumlabel, ',') FROM pg_enum e "
                        "WHERE e.enumtypid = t.oid) FROM pg_type t WHERE t.typname = 'en'",
                        None),
    "enum-lateral": ("base", [], "SELECT l.enumlabel FROM pg_type t, LATERAL (SELECT "
                     "enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid) l "
                     "WHERE t.typname = 'en'", None),
    "enum-pinned-by-column-type": ("base", [], "SELECT e.enumlabel FROM pg_enum e "
                                   "WHERE e.enumtypid = pg_typeof((SELECT p.e FROM r92.pub p "
                                   "LIMIT 1))::regtype", None),
    "psql-dO": ("base", [], "SELECT n.nspname, c.collname, c.collcollate, c.collctype, "
                "c.colliculocale FROM pg_catalog.pg_collation c, pg_catalog.pg_namespace n "
                "WHERE n.oid = c.collnamespace AND n.nspname = 'r92x'", None),
    "collation-whole-row": ("base", [], "SELECT c::text FROM pg_collation c "
                            "WHERE collname = 'co'", None),
    "enum-whole-row": ("base", [], "SELECT to_jsonb(x)::text FROM pg_enum x", None),
    "enum-row-star": ("base", [], "SELECT x::text FROM pg_enum x", None),
    "enum-copy": ("base", [], "COPY pg_enum TO STDOUT", None),
    "enum-in-array-agg": ("base", [], "SELECT array_agg(enumlabel)::text FROM pg_enum", None),
}  # fmt: skip


def _proxied(px, key: str, mode: str, before, sql: str) -> str:
    if key in ("mig", "code"):
        return planted.proxied_in_block(px, key, mode, list(before), sql)
    with planted.session(px, px.tokens[key]) as c:
        got = planted.text(c.query("BEGIN"))
        got += "".join(planted.run_mode(c, "simple", s) for s in before)
        got += planted.run_mode(c, mode, sql)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def _cases(table):
    return planted.mode_cases(table, MODES)


@pytest.mark.parametrize("key", list(ENUMS))
def test_r92_enum_probes_reach_directly(pg, px, key):
    _grant, before, sql, _why = ENUMS[key]
    if sql.startswith("COPY"):
        got = planted.direct_in_block(pg, list(before), sql)
        assert COD in got, got[-300:]
        return
    planted.reaches_directly(pg, list(before), sql, MARKERS)


@pytest.mark.parametrize(("key", "mode"), _cases(ENUMS))
def test_r92_enum_labels(px, key, mode):
    grant, before, sql, _why = ENUMS[key]
    got = _proxied(px, grant, mode, before, sql)
    _peek(f"{key} {mode}", got)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# --- 3. DDL decided on PostgreSQL's reading (67f5754, 181ed69) -----------------------------
DDL = {
    "index-nulls-not-distinct-calls": (
        "mig", [], "CREATE UNIQUE INDEX r92_i1 ON r92.t ((r92x.leakf(v))) NULLS NOT DISTINCT",
        None),
    "index-on-only-calls": (
        "mig", [], "CREATE INDEX r92_i2 ON ONLY r92.t ((r92x.leakf(v)))", None),
    "index-predicate-calls": (
        "mig", [], "CREATE UNIQUE INDEX r92_i3 ON r92.t (id) NULLS NOT DISTINCT "
        "WHERE r92x.leakf(v) IS NOT NULL", None),
    "index-include-calls": (
        "mig", [], "CREATE UNIQUE INDEX r92_i4 ON r92.t (id) INCLUDE (v) NULLS NOT DISTINCT "
        "WHERE r92x.leakf(v) <> ''", None),
    "index-domain-cast": (
        "mig", [], "CREATE UNIQUE INDEX r92_i5 ON r92.t ((v::r92x.dchk)) NULLS NOT DISTINCT",
        None),
    "index-operator": (
        "mig", [], "CREATE UNIQUE INDEX r92_i6 ON r92.t ((v OPERATOR(r92x.===) 'a')) "
        "NULLS NOT DISTINCT", None),
    "index-on-only-predicate-operator": (
        "mig", [], "CREATE INDEX r92_i7 ON ONLY r92.t (id) WHERE v OPERATOR(r92x.===) 'a'",
        None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(DDL))
def test_r92_ddl_probes_reach_directly(pg, px, key):
    _grant, before, sql, _why = DDL[key]
    planted.reaches_directly(pg, list(before), sql, MARKERS)


@pytest.mark.parametrize(("key", "mode"), _cases(DDL))
def test_r92_ddl_read_by_postgresql(px, key, mode):
    grant, before, sql, _why = DDL[key]
    got = _proxied(px, grant, mode, before, sql)
    _peek(f"{key} {mode}", got)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# changes the grant may not make: (statement, the catalog query whose answer changes)
_STATTARGET = (
    "SELECT attstattarget FROM pg_attribute WHERE attrelid = '{rel}'::regclass AND attname = 'v'"
)
_STORAGE = (
    "SELECT attstorage FROM pg_attribute WHERE attrelid = '{rel}'::regclass AND attname = 'v'"
)
_CONS = "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = '{rel}'::regclass"
_DESC = "SELECT coalesce(obj_description(oid, 'pg_constraint'), '-') FROM pg_constraint WHERE conname = '{con}'"
_IDX = "SELECT count(*) FROM pg_index WHERE indrelid = '{rel}'::regclass"
CHANGES = {
    "statistics-of-partition": (
        "ALTER TABLE r92.pt ALTER COLUMN v SET STATISTICS 7", _STATTARGET.format(rel="r92x.pt1"),
        None),
    "statistics-of-child": (
        "ALTER TABLE r92.ih ALTER COLUMN v SET STATISTICS 7", _STATTARGET.format(rel="r92x.ihc"),
        None),
    "storage-of-child": (
        "ALTER TABLE r92.ih ALTER COLUMN v SET STORAGE EXTERNAL",
        _STORAGE.format(rel="r92x.ihc"), None),
    "rename-constraint-of-child": (
        "ALTER TABLE r92.ih RENAME CONSTRAINT ih_chk TO ih_chk2", _CONS.format(rel="r92x.ihc"),
        None),
    "rename-constraint-outside": (
        "ALTER TABLE r92x.own RENAME CONSTRAINT own_chk TO own_chk2",
        _CONS.format(rel="r92x.own"), None),
    "statistics-outside": (
        "ALTER TABLE r92x.own ALTER COLUMN id SET STATISTICS 7",
        "SELECT attstattarget FROM pg_attribute WHERE attrelid = 'r92x.own'::regclass "
        "AND attname = 'id'", None),
    "comment-constraint-outside": (
        "COMMENT ON CONSTRAINT own_chk ON r92x.own IS 'r92-changed'",
        _DESC.format(con="own_chk"), None),
    "comment-constraint-domain": (
        "COMMENT ON CONSTRAINT dom_chk ON DOMAIN r92x.dom IS 'r92-changed'",
        _DESC.format(con="dom_chk"), None),
    "index-of-partitions": (
        "CREATE UNIQUE INDEX r92_pi ON r92.pt (id, v) NULLS NOT DISTINCT",
        _IDX.format(rel="r92x.pt1"), None),
    "index-on-only-outside": (
        "CREATE INDEX r92_oi ON ONLY r92x.own (id)", _IDX.format(rel="r92x.own"), None),
}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "mode"),
    [
        pytest.param(k, m, id=f"{k}-{m}", marks=[] if v[-1] is None else
                     pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in CHANGES.items() for m in MODES
    ],
)  # fmt: skip
def test_r92_changes_outside_the_grant(pg, px, key, mode):
    sql, judge, _why = CHANGES[key]
    before = pg.psql(judge, db="app").strip()
    # directly (in a block rolled back), the change is possible
    first = planted.direct_in_block(pg, [], sql)
    if planted.is_error(first):
        raise RuntimeError(("precondition: refused directly", sql, first[-300:]))
    # through the proxy, committed if allowed
    planted.renew(px)
    with planted.session(px, px.tokens["mig"]) as c:
        got = planted.run_mode(c, mode, sql)
    now = pg.psql(judge, db="app").strip()
    _peek(f"{key} {mode}", got + " JUDGE " + before + "->" + now)
    assert now == before, ("CHANGED", key, mode, before, now, got[-300:])


# --- 4. the path closed after code that may run DDL, in an open transaction (9984b15) ------
_READ_T = "SELECT v::int FROM r92_t"
_SWAP = "SELECT r92.swap('r92_t')"
CODE = {
    "savepoint-release": ("code", ["SAVEPOINT s", _SWAP, "RELEASE SAVEPOINT s"], _READ_T, None),
    "rollback-to-later-savepoint": (
        "code", [_SWAP, "SAVEPOINT s", "ROLLBACK TO SAVEPOINT s"], _READ_T, None),
    "error-then-rollback-to": (
        "code", [_SWAP, "SAVEPOINT s", "SELECT 1/0", "ROLLBACK TO SAVEPOINT s"], _READ_T, None),
    "commit-and-chain": ("code", [_SWAP, "COMMIT AND CHAIN"], _READ_T, None),
    "by-trigger": ("code", ["INSERT INTO public.r92_trg VALUES (1)"], _READ_T, None),
    "by-default": ("code", ["INSERT INTO public.r92_dft (id) VALUES (1)"], _READ_T, None),
    "trigger-then-release": (
        "code", ["SAVEPOINT s", "INSERT INTO public.r92_trg VALUES (1)", "RELEASE SAVEPOINT s"],
        _READ_T, None),
}  # fmt: skip

_REPLANT = """
SET ROLE pgwitness;
DROP TABLE IF EXISTS public.r92_t;
CREATE TABLE public.r92_t (v text);
INSERT INTO public.r92_t VALUES ('1');
"""


@pytest.mark.parametrize("key", list(CODE))
def test_r92_code_probes_reach_directly(pg, px, key):
    _grant, before, sql, _why = CODE[key]
    pg.psql(_REPLANT, db="app")
    planted.reaches_directly(pg, list(before), sql, MARKERS)
    pg.psql(_REPLANT, db="app")


@pytest.mark.parametrize(("key", "mode"), _cases(CODE))
def test_r92_path_closed_after_code(pg, px, key, mode):
    grant, before, sql, _why = CODE[key]
    pg.psql(_REPLANT, db="app")
    try:
        got = planted.proxied_in_block(px, grant, mode, list(before), sql)
    finally:
        pg.psql(_REPLANT, db="app")
    _peek(f"{key} {mode}", got)
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


# a statement prepared before the code ran, bound or executed after it in the block: the
# server analyses it again (the DROP invalidated its plan) and finds code's pg_temp.r92_t
PREPARED_BEFORE = {
    "protocol-statement": [
        (parse("s92", _READ_T), SYNC),
        (query("BEGIN"),),
        (query(_SWAP),),
        (bind("", "s92"), execute(), SYNC),
        (query("ROLLBACK"),),
    ],
    "sql-prepare": [
        (query(f"PREPARE q92 AS {_READ_T}"),),
        (query("BEGIN"),),
        (query(_SWAP),),
        (query("EXECUTE q92"),),
        (query("ROLLBACK"),),
    ],
    # the code's DROP committed inside one Query or one pipeline, the read after it there
    "one-query-commit-between": [
        (query(f"BEGIN; {_SWAP}; COMMIT; {_READ_T}"),),
    ],
    "one-query-commit-and-chain": [
        (query(f"BEGIN; {_SWAP}; COMMIT AND CHAIN; {_READ_T}"),),
        (query("ROLLBACK"),),
    ],
    "pipeline-commit-between": [
        (
            parse("", "BEGIN"),
            bind(),
            execute(),
            parse("", _SWAP),
            bind(),
            execute(),
            parse("", "COMMIT"),
            bind(),
            execute(),
            parse("", _READ_T),
            bind(),
            execute(),
            SYNC,
        ),
    ],
    "pipeline-autocommit-sync-between": [
        (parse("", _SWAP), bind(), execute(), SYNC, parse("", _READ_T), bind(), execute(), SYNC),
    ],
    "cursor-declared-after": [
        (parse("s92", "DECLARE c92 CURSOR FOR " + _READ_T), SYNC),
        (query("BEGIN"),),
        (query(_SWAP),),
        (bind("", "s92"), execute(), SYNC),
        (query("FETCH ALL c92"),),
        (query("ROLLBACK"),),
    ],
}


@pytest.mark.parametrize("key", list(PREPARED_BEFORE))
def test_r92_statement_prepared_before_the_code(pg, px, key):
    steps = PREPARED_BEFORE[key]
    pg.psql(_REPLANT, db="app")
    try:
        directly = planted.text(planted.direct_frames(pg, steps))
        _peek("direct " + key, directly)
        if not _shown(directly):
            raise RuntimeError(("precondition: no marker directly", directly[-400:]))
        pg.psql(_REPLANT, db="app")
        planted.renew(px)
        got = planted.text(planted.proxied_frames(px, steps, px.tokens["code"]))
    finally:
        pg.psql(_REPLANT, db="app")
    _peek("proxy " + key, got)
    assert not _shown(got), ("LEAK", key, got[-600:])


# honest DDL of the grant's own tables (transparency): allowed, answered as directly
HONEST = {
    "set-statistics": ("ALTER TABLE r92.t ALTER COLUMN v SET STATISTICS 100", None),
    "set-storage": ("ALTER TABLE r92.t ALTER COLUMN v SET STORAGE EXTERNAL", None),
    "rename-constraint": ("ALTER TABLE r92.t RENAME CONSTRAINT t_chk TO t_chk2", None),
    "rename-primary-key": ("ALTER TABLE r92.k RENAME CONSTRAINT k_pk TO k_pk2", None),
    "comment-constraint": ("COMMENT ON CONSTRAINT t_chk ON r92.t IS 'r92 honest'", None),
    # (fixed in session 39 after the round: crosscheck._commented_relation reads a domain's)
    "comment-domain-constraint": (
        "COMMENT ON CONSTRAINT d92_chk ON DOMAIN r92.d92 IS 'r92 honest'", None),
    "index-nulls-not-distinct": (
        "CREATE UNIQUE INDEX r92_h1 ON r92.t (id) NULLS NOT DISTINCT", None),
    # (fixed in session 39 after the round: _ddl_reach leaves partitions out for ON ONLY)
    "index-on-only-partitioned": ("CREATE INDEX r92_h2 ON ONLY r92.pt (id)", None),
    "cluster-on": ("ALTER TABLE r92.k CLUSTER ON k_pk", None),
    "set-without-cluster": ("ALTER TABLE r92.k SET WITHOUT CLUSTER", None),
}  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), _cases(HONEST))
def test_r92_honest_ddl_is_allowed(pg, px, key, mode):
    sql, _why = HONEST[key]
    directly = planted.direct_in_block(pg, [], sql)
    assert not planted.is_error(directly), ("precondition: refused directly", directly[-300:])
    got = planted.proxied_in_block(px, "mig", mode, [], sql)
    _peek(f"{key} {mode}", got)
    assert not planted.is_error(got), ("REFUSED", key, mode, got[-400:])


# a stale snapshot: a grant naming every schema that held enums or collations when the proxy
# loaded reads pg_enum / pg_collation; then another login makes one in a new schema
NEW = "R92-NEW-71aa"
STALE = {
    "enum-made-after-load": (
        f"CREATE SCHEMA r92y; CREATE TYPE r92y.en2 AS ENUM ('{NEW}');",
        "SELECT enumlabel FROM pg_enum",
    ),
    "enum-value-added-in-new-schema-type": (
        "CREATE SCHEMA r92y; CREATE TYPE r92y.en2 AS ENUM ('a');"
        f"ALTER TYPE r92y.en2 ADD VALUE '{NEW}';",
        "SELECT string_agg(enumlabel, ',') FROM pg_catalog.pg_enum",
    ),
    "collation-made-after-load": (
        f"CREATE SCHEMA r92y; CREATE COLLATION r92y.co2 (provider = icu, locale = '{NEW}');",
        "SELECT colliculocale FROM pg_collation WHERE colliculocale IS NOT NULL",
    ),
}


@pytest.mark.parametrize(("key", "mode"), [(k, m) for k in STALE for m in MODES])
def test_r92_text_schemas_after_a_load(pg, px, key, mode):
    made, sql = STALE[key]
    pg.psql("DROP SCHEMA IF EXISTS r92y CASCADE", db="app")
    planted.renew(px)
    try:
        with planted.session(px, px.tokens["all"]) as c:
            first = planted.run_mode(c, "simple", "SELECT enumlabel FROM pg_enum LIMIT 1")
            assert not planted.is_error(first), ("the grant reads labels at first", first)
            pg.psql("SET ROLE pgwitness;" + made, db="app")
            directly = planted.direct_in_block(pg, [], sql)
            if NEW not in directly:
                raise RuntimeError(("precondition: no marker directly", directly[-300:]))
            got = planted.run_mode(c, mode, sql)
    finally:
        pg.psql("DROP SCHEMA IF EXISTS r92y CASCADE", db="app")
    _peek(f"{key} {mode}", got)
    assert NEW not in got, ("LEAK", key, mode, got[-400:])


# another login's temporary enum or collation (its pg_temp_N schema), open while the grant
# naming every other enum's schema reads the catalogs
OTHER_TEMP = {
    "other-session-temp-enum": (
        f"CREATE TYPE pg_temp.en3 AS ENUM ('{NEW}')", "SELECT enumlabel FROM pg_enum"),
    "other-session-temp-collation": (
        f"CREATE COLLATION pg_temp.co3 (provider = icu, locale = '{NEW}')",
        "SELECT colliculocale FROM pg_collation WHERE colliculocale IS NOT NULL"),
}  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), [(k, m) for k in OTHER_TEMP for m in MODES])
def test_r92_other_sessions_temporary_labels(pg, px, key, mode):
    from tests.support.rawpg import RawClient

    made, sql = OTHER_TEMP[key]
    planted.renew(px)
    with RawClient.direct(pg) as other:
        out = planted.text(other.query(made))
        if planted.is_error(out):
            raise RuntimeError(("precondition: not made", out[-300:]))
        directly = planted.direct_in_block(pg, [], sql)
        if NEW not in directly:
            raise RuntimeError(("precondition: no marker directly", directly[-300:]))
        with planted.session(px, px.tokens["all"]) as c:
            got = planted.run_mode(c, mode, sql)
    _peek(f"{key} {mode}", got)
    assert NEW not in got, ("LEAK", key, mode, got[-400:])
