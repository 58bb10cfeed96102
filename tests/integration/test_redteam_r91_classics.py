"""Red-team round 91: the attacker's classic checklist, all at once, each technique a family
(time-boxed; the server the judge).

Method (rounds 83-90): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login, the schemas' owner), where it must show a marker (``RuntimeError``
otherwise: a probe that cannot leak proves nothing); then through a proxy started after the
planting, as a simple Query, an extended unnamed statement and a named prepared statement
(``planted.run_mode``), after its set-up statements (simple Queries), in a block rolled
back (``_proxied``: on the module's proxy as earlier probes left it; a fresh catalog loader
and upstream backend, ``planted.renew``, for the DDL grant's probes). Protocol probes run
raw message sequences directly and then through the proxy; statements that change what
the grant may not change must succeed directly and be refused by the proxy. A leak is a
strict xfail asserting the safe outcome (no marker); a family that holds is a plain test.

Refused by PostgreSQL itself to ``pgwitness`` (not a superuser, no
``pg_read_server_files``/``pg_execute_server_program``; ``REFUSED_DIRECTLY``, checked, not
probed further): ``pg_statistic``, ``pg_statistic_ext_data``/``pg_mcv_list_items``,
``pg_largeobject``, ``pg_read_file``, ``pg_ls_dir``, ``COPY ... TO PROGRAM`` or a server
file, server-side ``lo_import``, ``SET SESSION AUTHORIZATION``, ``SET ROLE postgres``;
``pg_stat_statements`` is not loaded; ``dblink``/``postgres_fdw`` are not installed (only a
superuser installs them; the policy trusts installed C functions like built-ins);
``max_prepared_transactions = 0`` (``pg_prepared_xacts.gid``); placeholders (``ALTER
DATABASE ... SET r91x.secret``) are not listed in ``pg_settings``. PostgreSQL quotes no
value in a division-by-zero, regex or domain-CHECK error, nor a hidden row's key in an
exclusion or unique violation under row security ("Key conflicts with existing key.").

Planted (as ``pgwitness``): ``r91x.vault`` (``ROW``, 40 more rows whose keys start with it,
analysed, with extended statistics, commented ``CMT``); code and definitions in ``r91x``
holding ``COD`` (a SQL function's body, an argument default, a function's ``SET``, a view,
a materialized view, a column default, a missing-column value, a CHECK, a partial index,
a trigger's argument and WHEN, a row security policy, a rule, an aggregate's INITCOND, a
domain's CHECK and DEFAULT, an enum label, a partition bound, a generated column, an
extended statistics expression); the database's and a role's custom setting holding
``GUC``; a large object (OID 91091) holding ``LOB``; ``r91.wo``, ``r91.ex``, ``r91.pt``,
``r91.fkc`` (``WOK``, ``7391157``), writable but not readable by grant ``wo``; a
security-barrier view ``r91.bv`` over a table with an exclusion constraint and a hidden
row; ``r91.hid`` (ungranted, in the grant's schema); names to confuse with ``r91.pub``:
``public."r91.pub"``, ``"R91".pub``, ``r91."PUB"`` (each holding ``ROW``, ``COD``,
``CMT``).

Grants: ``base`` ``read:r91.pub``; ``fx`` adds ``execute:r91.f`` (PL/pgSQL raising its
argument); ``wo`` adds ``write:`` of the four write-only tables; ``gv`` ``read:r91.gv`` (a
view filtering on ``COD``); ``rl`` ``read:r91.rl`` (FORCE row security on ``COD``); ``lv``
``read:r91.lv`` (a view over the vault, no security barrier); ``tg`` ``read: write:r91.tg``
(a trigger raising the vault's row); ``bv`` ``read: write:r91.bv``; ``lsn``
``read:r91.pub listen:r91ch``; ``mig`` ``read: write: ddl:r91.*`` (a migration grant).

Leak found (fixed in session 39, the coordinator; plain tests now):

1. **Enum labels of a type outside the grant** (``raw-enum``, ``enum-by-type-subquery``,
   ``enum-joined``, ``enum-by-oid``; grant ``base``). ``SELECT enumlabel FROM pg_enum``
   (or pinned by ``enumtypid = (SELECT oid FROM pg_type WHERE typname = 'en')``, joined
   to ``pg_type``, or by the type's OID written as a number) answered ``r91x.en``'s label
   ``COD``, while ``enum_range(NULL::r91x.en)`` and ``enumtypid = 'r91x.en'::regtype``
   are refused ("may not use objects of schema r91x") and a domain's DEFAULT in
   ``pg_type.typdefault`` is refused for types outside the grant. Cause:
   ``policy/classify/metadata.py`` ``CATALOGS`` had no ``pg_enum`` entry, so
   ``enumlabel`` was no object text and ``pg_enum`` simply in ``ALLOWED_CATALOGS``
   (``policy/decide.py``); ``policy/catalog.py`` ``_unpinned_refusal`` never saw it.
   Fixed for the family (literals an object's definer writes, in catalogs no relation
   pins): ``pg_enum.enumlabel``, ``pg_collation``'s locales (an ICU locale takes any tag:
   ``raw-colliculocale``, ``collation-by-name``) and ``pg_ts_dict.dictinitoption`` are
   object text, decided as domain defaults are (``_SCHEMA_TEXTS``): allowed while every
   schema holding such objects is one the grant names (``Snapshot.text_schemas``,
   DOMAIN_SCHEMAS_SQL), else refused with the catalog's read scope as the remedy
   (``test_r91_own_enum_labels_are_read``). Not changed (the census's rest):
   ``pg_extension.extcondition`` (an extension script's, a superuser's) and
   ``pg_foreign_table.ftoptions`` (already object text, pinned by its relation).

Held (plain tests), by family:

* error text: casts of the vault's value to int, date, XML; a granted function raising
  its argument; catalog text, defaults and large objects cast; unique, NOT NULL, CHECK,
  exclusion, partition-routing and foreign-key DETAILs through a write-only grant
  (withheld: ``writes_unreadable``), MERGE into it, a barrier view's exclusion DETAIL, a
  trigger's NOTICE (withheld), a leaky built-in cast over a view that is no security
  barrier (refused: ``deny.view``); RETURNING, whole-row, ``row_to_json``, column-syntax
  and data-modifying-CTE reads of the write-only table (refused);
* catalogs: ``pg_stats``, ``pg_stats_ext``, ``pg_stats_ext_exprs``; comments (relation,
  column, shared, role), view and matview definitions, ``prosrc``, ``proconfig``,
  ``pg_get_functiondef``, argument defaults (``proargdefaults``,
  ``pg_get_function_arguments``, ``information_schema.parameters``), ``pg_attrdef``,
  ``attmissingval``, CHECKs, index predicates, trigger definitions, arguments and WHEN,
  policies, rules, INITCOND, domain defaults and CHECKs, partition bounds, generated
  columns, statistics expressions: raw node trees, deparsers over whole catalogs and by a
  literal OID, ``information_schema``, pins spelt otherwise (a second alias, OR, IN, UNION,
  CTE, subquery, LATERAL, a literal OID beside a pin, ``conrelid = 0``, the grant's schema
  without its table); partition keys (``pg_get_partkeydef``, ``partexprs``), statistics
  columns, the deparsers' pretty forms; custom settings (``current_setting``, ``SHOW``,
  ``pg_db_role_setting``, ``pg_roles.rolconfig``); large objects (``lo_get``,
  ``loread``); another session's statement (``pg_stat_activity``,
  ``pg_stat_get_backend_activity``) and its advisory lock's key (``pg_locks``); LISTEN on a
channel not granted (refused) while another session notifies it;
* plans: EXPLAIN (plain, VERBOSE, ANALYZE) of a view filtering on a literal (refused), a
  generic plan over row security (withheld), a leaky view; EXPLAIN of a granted table with
  row security prints its policy's literal, which the grant also reads pinned
  (``pg_policy WHERE polrelid = 'r91.rl'::regclass``, round 64's ruling): not a leak;
* indirection: ``TABLE``, ``VALUES``, recursive and shadowing CTEs, LATERAL, ``ROWS
  FROM``, upper-case, quoted, Unicode-escaped (refused, ``deny.unknown``) and three-part
  names (``app.r91x.vault``, ``app.r91x.sf()``, ``NULL::app.r91x.en``, regclass), names
  spelt to be confused with ``r91.pub`` (``"r91.pub"``, ``"R91".pub``, ``r91."PUB"``, and
  as regclass pins), dollar quoting, ``query_to_xml`` (plain, concatenated, escaped,
  xmlschema), ``table_to_xml``, ``schema_to_xml``, ``database_to_xml``, ``xpath``,
  ``ts_stat``, ``ts_rewrite``, ``cursor_to_xml``, ``COPY (query) TO STDOUT``, ``COPY
  table TO STDOUT``, matviews, composite rows, ``set_config``/``SET``/``SET LOCAL`` of
  ``search_path``, an aggregate outside the grant; a migration grant copying definitions
  (``LIKE ... INCLUDING ALL``/``COMMENTS``/``CONSTRAINTS``, a column of an outside domain
  or enum, a domain over one, a view, CTAS or matview over the vault, a trigger of an
  outside function: refused);
* session: ``SET ROLE``, ``RESET ROLE``, ``RESET ALL``, ``DISCARD ALL`` then code,
  ``PREPARE``/``EXECUTE``, a cursor over the vault, ``pg_notify`` of the vault's row;
* changes: ``ALTER DATABASE``/``ALTER ROLE ... SET search_path``, GRANT (table, schema,
  large object), default privileges, ``DROP``/``REASSIGN OWNED``, moving or renaming the
  secret schema's objects, ``lo_put``/``lo_unlink``/``ALTER LARGE OBJECT``, ``CREATE
  EXTENSION``/``PUBLICATION``, ``ANALYZE``, ``LOCK``, ``TRUNCATE``, REFRESH and DETACH
  outside the grant, lowering ``security_barrier``: all refused;
* protocol: a Parse in one Sync group and its Bind/Execute in the next, the unnamed
  statement reused across Syncs, Describe of a statement naming the vault, FunctionCall
  (``lo_get``: ``deny.function_call``), a statement after ``/* ; */ ;`` and a trailing
  ``--``, a NUL or invalid UTF-8 inside a Query (the server's or proxy's protocol error),
  3000 nested parentheses (``deny.unknown``, fail closed), ``COPY FROM STDIN`` into a
  triggered table (withheld), ``COPY (query) TO STDOUT``.

Notes, not probed as leaks: counts and sizes (``pg_class.reltuples``,
``pg_stat_user_tables``, ``EXPLAIN ANALYZE``'s rows removed, timing) are oracles, not
values; advisory locks are a covert channel between cooperating sessions (another
session's key in ``pg_locks`` is refused without a scope: ``advisory-lock-key``, held); a grant revoked mid-session and WITH HOLD cursors need the
admin API (not probed); psql's ``\\;`` is the client's own splitting.
"""

from __future__ import annotations

import os
import re
import struct

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient, frame

pytestmark = pytest.mark.timeout(300)

AGENT = "r91-bot"
ROW = "R91-ROW-7f3a"  # r91x.vault
COD = "R91-COD-2b8c"  # code and definitions in r91x
CMT = "R91-CMT-5d1e"  # comments
GUC = "R91-GUC-a0c4"  # custom settings
LOB = "R91-LOB-3e9f"  # a large object
WOK = "R91-WOK-64b2"  # rows of tables the grant writes, never reads
EXN = "7391157"  # an exclusion-constrained range's bound in r91.ex
ACT = "R91-ACT-c7d0"  # another session's statement text
MARKERS = (ROW, ROW.lower(), COD, COD.lower(), CMT, GUC, LOB, WOK, EXN, ACT)
SCOPES = "read:r91.pub"
GRANTS = {
    "fx": "read:r91.pub execute:r91.f",
    "wo": "read:r91.pub write:r91.wo,r91.ex,r91.pt,r91.fkc",
    "gv": "read:r91.gv",
    "rl": "read:r91.rl",
    "lv": "read:r91.lv",
    "tg": "read:r91.tg write:r91.tg",
    "lsn": "read:r91.pub listen:r91ch",
    "bv": "read:r91.bv write:r91.bv",
    "mig": "read:r91.* write:r91.* ddl:r91.*",
}
MODES = ["simple", "extended", "prepared"]
_V = "(SELECT v FROM r91x.vault WHERE k = 'row')"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r91; CREATE SCHEMA r91x;
CREATE TABLE r91x.vault (k text PRIMARY KEY, v text);
INSERT INTO r91x.vault VALUES ('row', '{ROW}');
INSERT INTO r91x.vault SELECT '{ROW}-' || i, '{ROW}' FROM generate_series(1, 40) i;
INSERT INTO r91x.vault SELECT 'o' || i, 'other' || i FROM generate_series(1, 10) i;
COMMENT ON TABLE r91x.vault IS '{CMT}';
COMMENT ON COLUMN r91x.vault.v IS '{CMT}';
CREATE STATISTICS r91x.vst (mcv) ON k, v FROM r91x.vault;
CREATE STATISTICS r91x.vse ON (v || '{COD}') FROM r91x.vault;
ANALYZE r91x.vault;
CREATE TABLE r91.pub (id int PRIMARY KEY, v text, n int);
INSERT INTO r91.pub VALUES (1, 'R91-PUB-ok', 1);
COMMENT ON TABLE r91.pub IS 'R91-PUB-comment';
ALTER TABLE r91.pub ADD CONSTRAINT pub_n CHECK (n > 0);
-- code and definitions holding COD
CREATE FUNCTION r91x.sf() RETURNS text LANGUAGE sql AS $$ SELECT '{COD}'::text $$;
CREATE FUNCTION r91x.af(a text DEFAULT '{COD}') RETURNS text LANGUAGE sql AS $$ SELECT a $$;
CREATE FUNCTION r91x.cf() RETURNS text LANGUAGE sql SET application_name = '{COD}' AS $$ SELECT '' $$;
CREATE VIEW r91x.vv AS SELECT v FROM r91x.vault WHERE v <> '{COD}';
CREATE MATERIALIZED VIEW r91x.mv AS SELECT v FROM r91x.vault WHERE v <> '{COD}';
CREATE TABLE r91x.dt (id int, s text DEFAULT '{COD}' CHECK (s <> '{COD}-no'));
INSERT INTO r91x.dt VALUES (1, 'x');
ALTER TABLE r91x.dt ADD COLUMN miss text DEFAULT '{COD}';
CREATE INDEX r91x_dt_partial ON r91x.dt (id) WHERE s <> '{COD}';
CREATE FUNCTION r91x.tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER r91x_dt_trg BEFORE INSERT ON r91x.dt FOR EACH ROW EXECUTE FUNCTION r91x.tf('{COD}');
ALTER TABLE r91x.dt ENABLE ROW LEVEL SECURITY;
CREATE POLICY r91x_dt_pol ON r91x.dt USING (s <> '{COD}');
CREATE TABLE r91x.log (s text);
CREATE RULE r91x_dt_rule AS ON UPDATE TO r91x.dt DO ALSO INSERT INTO r91x.log VALUES ('{COD}');
CREATE AGGREGATE r91x.agg(text) (SFUNC = textcat, STYPE = text, INITCOND = '{COD}');
CREATE DOMAIN r91x.dd AS text DEFAULT '{COD}' CHECK (VALUE <> '{COD}-no');
CREATE TYPE r91x.en AS ENUM ('{COD}');
CREATE COLLATION r91x.co (provider = icu, locale = '{COD}');
CREATE TABLE r91x.gen (id int, g text GENERATED ALWAYS AS (id::text || '{COD}') STORED);
CREATE TRIGGER r91x_dt_when BEFORE UPDATE ON r91x.dt FOR EACH ROW
  WHEN (NEW.s IS DISTINCT FROM '{COD}-when') EXECUTE FUNCTION r91x.tf();
CREATE TABLE r91x.pp (s text) PARTITION BY LIST (s);
CREATE TABLE r91x.pp1 PARTITION OF r91x.pp FOR VALUES IN ('{COD}');
CREATE TABLE r91x.pk (s text) PARTITION BY LIST ((s || '{COD}'));
-- settings holding GUC
RESET ROLE;
CREATE ROLE r91_cfg NOLOGIN;
ALTER DATABASE app SET r91x.secret = '{GUC}';
ALTER ROLE r91_cfg SET r91x.rsecret = '{GUC}';
COMMENT ON ROLE r91_cfg IS '{CMT}';
SET ROLE pgwitness;
SELECT lo_from_bytea(91091, convert_to('{LOB}', 'UTF8'));
-- tables the grant 'wo' writes and never reads
CREATE TABLE r91.wo (k text NOT NULL, n int NOT NULL CHECK (n > -1), UNIQUE (k, n));
INSERT INTO r91.wo VALUES ('{WOK}', 1), ('{WOK}', 2);
CREATE TABLE r91.ex (r int4range, EXCLUDE USING gist (r WITH &&));
INSERT INTO r91.ex VALUES ('[{EXN},{int(EXN) + 1})');
CREATE TABLE r91.pt (n int, k text) PARTITION BY RANGE (n, k);
CREATE TABLE r91.pt1 PARTITION OF r91.pt FOR VALUES FROM (0, MINVALUE) TO (10, MAXVALUE);
INSERT INTO r91.pt VALUES (1, '{WOK}');
CREATE TABLE r91.fkp (k text, n int, PRIMARY KEY (k, n));
INSERT INTO r91.fkp VALUES ('{WOK}', 1);
CREATE TABLE r91.fkc (k text, n int, FOREIGN KEY (k, n) REFERENCES r91.fkp);
INSERT INTO r91.fkc VALUES ('{WOK}', 1);
-- granted code and relations
CREATE FUNCTION r91.f(x text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'f says %', x; END $$;
CREATE VIEW r91.gv AS SELECT id, v FROM r91.pub WHERE v <> '{COD}';
CREATE TABLE r91.rl (id int, v text);
INSERT INTO r91.rl VALUES (1, 'ok');
ALTER TABLE r91.rl ENABLE ROW LEVEL SECURITY;
ALTER TABLE r91.rl FORCE ROW LEVEL SECURITY;
CREATE POLICY r91_rl_pol ON r91.rl USING (v <> '{COD}');
CREATE VIEW r91.lv AS SELECT k, v FROM r91x.vault WHERE md5(md5(md5(k))) = '{COD}';
-- a security-barrier view hiding a row whose key an exclusion constraint quotes (under row
-- security PostgreSQL itself leaves the key out: "Key conflicts with existing key.")
CREATE TABLE r91.bx (owner text, r int4range, EXCLUDE USING gist (r WITH &&));
INSERT INTO r91.bx VALUES ('them', '[{EXN},{int(EXN) + 1})'), ('me', '[200000000,200000001)');
CREATE VIEW r91.bv WITH (security_barrier) AS SELECT owner, r FROM r91.bx WHERE owner = 'me';
-- names a grant's text could be confused with: a public table named "r91.pub", a schema
-- "R91", a table r91."PUB"
CREATE TABLE public."r91.pub" (v text DEFAULT '{COD}');
INSERT INTO public."r91.pub" VALUES ('{ROW}');
COMMENT ON TABLE public."r91.pub" IS '{CMT}';
CREATE SCHEMA "R91";
CREATE TABLE "R91".pub (v text DEFAULT '{COD}');
INSERT INTO "R91".pub VALUES ('{ROW}');
COMMENT ON TABLE "R91".pub IS '{CMT}';
CREATE TABLE r91."PUB" (v text DEFAULT '{COD}');
INSERT INTO r91."PUB" VALUES ('{ROW}');
COMMENT ON TABLE r91."PUB" IS '{CMT}';
CREATE TABLE r91.hid (id int, s text DEFAULT '{COD}');
COMMENT ON TABLE r91.hid IS '{CMT}';
CREATE TABLE r91.tg (id int);
CREATE FUNCTION r91x.tgf() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'tg %', {_V}; RETURN NEW; END $$;
CREATE TRIGGER r91_tg BEFORE INSERT ON r91.tg FOR EACH ROW EXECUTE FUNCTION r91x.tgf();
"""
TEARDOWN = """
DROP SCHEMA IF EXISTS r91, r91x, "R91" CASCADE;
DROP TABLE IF EXISTS public."r91.pub";
ALTER DATABASE app RESET r91x.secret;
SELECT lo_unlink(91091) FROM pg_largeobject_metadata WHERE oid = 91091;
DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'r91_cfg') THEN
  COMMENT ON ROLE r91_cfg IS NULL; DROP ROLE r91_cfg; END IF; END $$;
"""

# What PostgreSQL itself refuses to the upstream login (not probed: nothing to leak)
REFUSED_DIRECTLY = {
    "pg_statistic": "SELECT stavalues1::text FROM pg_statistic",
    "pg_largeobject": "SELECT data FROM pg_largeobject",
    "pg_read_file": "SELECT pg_read_file('postgresql.conf')",
    "pg_ls_dir": "SELECT pg_ls_dir('.')",
    "copy-program": "COPY (SELECT 1) TO PROGRAM 'cat'",
    "copy-file": "COPY (SELECT 1) TO '/tmp/r91-copy'",
    "lo_import": "SELECT lo_import('/etc/hostname')",
    "session-authorization": "SET SESSION AUTHORIZATION postgres",
    "set-role-superuser": "SET ROLE postgres",
    "pg_stat_statements": "SELECT query FROM pg_stat_statements",
    "pg_mcv_list_items": "SELECT m.values::text FROM pg_statistic_ext_data d, "
    "pg_mcv_list_items(d.stxdmcv) m",
}


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r91", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        h.tokens["base"] = h.token
        planted.planted_oids(pg, h, OIDS)
        yield h


# the planted objects' OIDs, for probes that name them by number (``<<NAME>>``)
OIDS = """
SELECT 'vault=' || 'r91x.vault'::regclass::oid
UNION ALL SELECT 'dt=' || 'r91x.dt'::regclass::oid
UNION ALL SELECT 'pp1=' || 'r91x.pp1'::regclass::oid
UNION ALL SELECT 'dtidx=' || 'r91x.r91x_dt_partial'::regclass::oid
UNION ALL SELECT 'dtcheck=' || oid FROM pg_constraint WHERE conrelid = 'r91x.dt'::regclass
  AND contype = 'c'
UNION ALL SELECT 'dttrg=' || oid FROM pg_trigger WHERE tgname = 'r91x_dt_trg'
UNION ALL SELECT 'dtpol=' || oid FROM pg_policy WHERE polname = 'r91x_dt_pol'
UNION ALL SELECT 'vse=' || oid FROM pg_statistic_ext WHERE stxname = 'vse'
UNION ALL SELECT 'vv=' || 'r91x.vv'::regclass::oid
UNION ALL SELECT 'sf=' || 'r91x.sf'::regproc::oid
UNION ALL SELECT 'en=' || 'r91x.en'::regtype::oid
"""


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _oids(pg) -> dict[str, str]:
    rows = pg.psql(OIDS, db="app").split()
    return dict(row.split("=", 1) for row in rows)


def _reaches(pg, before, sql: str, block: bool = True) -> str:
    if "<<" in sql:
        sql = planted.fill(sql, _oids(pg))
    return planted.reaches_directly(pg, list(before), sql, MARKERS, block)


def _proxied(px, key: str, mode: str, before, sql: str, block: bool = True) -> str:
    """``planted.proxied_in_block``, on the module's proxy as the earlier probes left it
    (a fresh catalog loader and upstream backend only for the grant that runs DDL: a load
    per probe would cost most of the module's time)."""
    sql = planted.fill(sql, getattr(px, "oids", {}))
    if key in RENEWED:
        return planted.proxied_in_block(px, key, mode, list(before), sql, block)
    with planted.session(px, px.tokens[key]) as c:
        got = planted.text(c.query("BEGIN")) if block else ""
        got += "".join(planted.run_mode(c, "simple", s) for s in before)
        got += planted.run_mode(c, mode, sql)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


RENEWED = {"mig"}  # grants whose probes run DDL


def _held(got: str, key: str, mode: str) -> None:
    if os.environ.get("R91_PEEK"):
        print("PEEK", key, mode, re.sub(r"[^ -~]", ".", got)[-260:])
    assert not _shown(got), ("LEAK", key, mode, got[-600:])


@pytest.mark.parametrize("key", list(REFUSED_DIRECTLY))
def test_r91_refused_directly(pg, px, key):
    got = planted.direct_in_block(pg, [], REFUSED_DIRECTLY[key])
    assert planted.is_error(got) and not _shown(got), got[-300:]


# --- 1. error text ------------------------------------------------------------------------
# key -> (grant, before, probe, strict-xfail reason or None)
ERRORS = {
    "cast-int": ("base", [], f"SELECT {_V}::int", None),
    "cast-date": ("base", [], f"SELECT {_V}::date", None),
    "xmlparse": ("base", [], f"SELECT xmlparse(document {_V})", None),
    "raise-granted": ("fx", [], f"SELECT r91.f({_V})", None),
    "comment-cast": ("base", [], "SELECT obj_description('r91x.vault'::regclass)::int", None),
    "default-cast": ("base", [], "SELECT pg_get_expr(adbin, adrelid)::int FROM pg_attrdef "
                     "WHERE adrelid = 'r91x.dt'::regclass AND adnum = 2", None),
    "lo-cast": ("base", [], "SELECT convert_from(lo_get(91091), 'UTF8')::int", None),
    "unique-update": ("wo", [], "UPDATE r91.wo SET n = 1", None),
    "not-null-update": ("wo", [], "UPDATE r91.wo SET n = NULL", None),
    "check-update": ("wo", [], "UPDATE r91.wo SET n = -5", None),
    "exclusion-insert": ("wo", [], "INSERT INTO r91.ex VALUES ('[0,100000000)')", None),
    "partition-update": ("wo", [], "UPDATE r91.pt SET n = 50", None),
    "fk-update": ("wo", [], "UPDATE r91.fkc SET n = 99", None),
    "barrier-hidden-exclusion-insert": ("bv", [], "INSERT INTO r91.bv VALUES ('me', "
                                        "'[0,100000000)')", None),
    "delete-returning": ("wo", [], "DELETE FROM r91.wo RETURNING k", None),
    "update-returning-whole-row": ("wo", [], "UPDATE r91.wo SET n = n + 10 RETURNING wo",
                                   None),
    "update-returning-row-to-json": ("wo", [], "UPDATE r91.wo SET n = 9 RETURNING "
                                     "row_to_json(wo)", None),
    "update-returning-column-syntax": ("wo", [], "UPDATE r91.wo SET n = 9 RETURNING (wo).k",
                                       None),
    "update-returning-aliased": ("wo", [], "UPDATE r91.wo AS w SET n = 9 RETURNING w.*", None),
    "cte-delete-returning": ("wo", [], "WITH d AS (DELETE FROM r91.wo RETURNING *) "
                             "SELECT * FROM d", None),
    "merge-into-unreadable": ("wo", [], "MERGE INTO r91.wo USING (VALUES (1)) s(x) ON true "
                              "WHEN MATCHED THEN UPDATE SET n = 1", None),
    "upsert-returning": ("wo", [], f"INSERT INTO r91.wo VALUES ('{WOK}', 1) ON CONFLICT (k, n) "
                         "DO UPDATE SET n = 3 RETURNING *", None),
    "trigger-notice": ("tg", [], "INSERT INTO r91.tg VALUES (1)", None),
    "leaky-view-cast": ("lv", [], "SELECT * FROM r91.lv WHERE v::int = 1", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(ERRORS))
def test_r91_errors_reach_directly(pg, px, key):
    _grant, before, sql, _why = ERRORS[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(ERRORS, MODES))
def test_r91_errors(px, key, mode):
    grant, before, sql, _why = ERRORS[key]
    got = _proxied(px, grant, mode, before, sql)
    _held(got, key, mode)


# --- 2. catalogs and statistics -------------------------------------------------------------
_DT = "'r91x.dt'::regclass"
CATALOGS = {
    "stats-mcv": ("base", [], "SELECT most_common_vals::text FROM pg_stats "
                  "WHERE tablename = 'vault'", None),
    "stats-histogram": ("base", [], "SELECT histogram_bounds::text FROM pg_stats "
                        "WHERE schemaname = 'r91x'", None),
    "stats-ext": ("base", [], "SELECT most_common_vals::text FROM pg_stats_ext", None),
    "stats-ext-exprs": ("base", [], "SELECT most_common_vals::text FROM pg_stats_ext_exprs",
                        None),
    "comment": ("base", [], "SELECT obj_description('r91x.vault'::regclass, 'pg_class')", None),
    "comment-column": ("base", [], "SELECT col_description('r91x.vault'::regclass, 2)", None),
    "comment-catalog": ("base", [], "SELECT description FROM pg_description", None),
    "comment-shared": ("base", [], "SELECT description FROM pg_shdescription", None),
    "comment-role": ("base", [], "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                     "WHERE rolname = 'r91_cfg'", None),
    "viewdef": ("base", [], "SELECT pg_get_viewdef('r91x.vv'::regclass)", None),
    "pg-views": ("base", [], "SELECT definition FROM pg_views WHERE schemaname = 'r91x'", None),
    "pg-matviews": ("base", [], "SELECT definition FROM pg_matviews", None),
    "prosrc": ("base", [], "SELECT prosrc FROM pg_proc WHERE proname = 'sf'", None),
    "functiondef": ("base", [], "SELECT pg_get_functiondef('r91x.sf'::regproc)", None),
    "proconfig": ("base", [], "SELECT proconfig::text FROM pg_proc WHERE proname = 'cf'", None),
    "attrdef": ("base", [], f"SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                f"WHERE adrelid = {_DT}", None),
    "infoschema-default": ("base", [], "SELECT column_default FROM information_schema.columns "
                           "WHERE table_schema = 'r91x'", None),
    "missing-value": ("base", [], f"SELECT attmissingval::text FROM pg_attribute "
                      f"WHERE attrelid = {_DT}", None),
    "check-def": ("base", [], f"SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                  f"WHERE conrelid = {_DT}", None),
    "check-conbin": ("base", [], "SELECT pg_get_expr(conbin, conrelid) FROM pg_constraint "
                     "WHERE contype = 'c'", None),
    "infoschema-check": ("base", [], "SELECT check_clause FROM "
                         "information_schema.check_constraints", None),
    "indexdef": ("base", [], "SELECT indexdef FROM pg_indexes WHERE schemaname = 'r91x'", None),
    "index-pred": ("base", [], "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                   f"WHERE indrelid = {_DT}", None),
    "triggerdef": ("base", [], "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                   "WHERE tgname = 'r91x_dt_trg'", None),
    "trigger-args": ("base", [], "SELECT tgargs FROM pg_trigger WHERE tgname = 'r91x_dt_trg'",
                     None),
    "policies": ("base", [], "SELECT qual FROM pg_policies WHERE schemaname = 'r91x'", None),
    "policy-polqual": ("base", [], "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy", None),
    "rules": ("base", [], "SELECT definition FROM pg_rules WHERE schemaname = 'r91x'", None),
    "ruledef": ("base", [], "SELECT pg_get_ruledef(oid) FROM pg_rewrite "
                "WHERE rulename = 'r91x_dt_rule'", None),
    "agg-initcond": ("base", [], "SELECT agginitval FROM pg_aggregate "
                     "WHERE aggfnoid = 'r91x.agg'::regproc", None),
    "domain-default": ("base", [], "SELECT typdefault FROM pg_type WHERE typname = 'dd'", None),
    "domain-check": ("base", [], "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                     "WHERE contypid = 'r91x.dd'::regtype", None),
    "infoschema-domain": ("base", [], "SELECT domain_default FROM information_schema.domains "
                          "WHERE domain_schema = 'r91x'", None),
    "enum-label": ("base", [], "SELECT enumlabel FROM pg_enum "
                   "WHERE enumtypid = 'r91x.en'::regtype", None),
    "enum-range": ("base", [], "SELECT enum_range(NULL::r91x.en)::text", None),
    "partition-bound": ("base", [], "SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
                        "WHERE relname = 'pp1'", None),
    "guc-current-setting": ("base", [], "SELECT current_setting('r91x.secret')", None),
    "guc-show": ("base", [], "SHOW r91x.secret", None),
    "guc-db-role-setting": ("base", [], "SELECT setconfig::text FROM pg_db_role_setting", None),
    "guc-rolconfig": ("base", [], "SELECT rolconfig::text FROM pg_roles "
                      "WHERE rolname = 'r91_cfg'", None),
    # raw node trees and unpinned catalogs
    "raw-adbin": ("base", [], "SELECT adbin FROM pg_attrdef", None),
    "raw-conbin": ("base", [], "SELECT conbin FROM pg_constraint", None),
    "raw-polqual": ("base", [], "SELECT polqual FROM pg_policy", None),
    "raw-indpred": ("base", [], "SELECT indpred FROM pg_index", None),
    "raw-relpartbound": ("base", [], "SELECT relpartbound FROM pg_class", None),
    "raw-typdefaultbin": ("base", [], "SELECT typdefaultbin FROM pg_type", None),
    "raw-missingval": ("base", [], "SELECT attmissingval::text FROM pg_attribute", None),
    "raw-enum": ("base", [], "SELECT enumlabel FROM pg_enum", None),
    "raw-tgargs": ("base", [], "SELECT tgargs FROM pg_trigger", None),
    # the family of the enum's labels (session 39): a collation's locale, any ICU tag
    "raw-colliculocale": ("base", [], "SELECT colliculocale FROM pg_collation", None),
    "collation-by-name": ("base", [], "SELECT c.colliculocale FROM pg_collation c "
                          "WHERE c.collname = 'co'", None),
    "raw-proargdefaults": ("base", [], "SELECT proargdefaults FROM pg_proc", None),
    "enum-by-type-subquery": ("base", [], "SELECT enumlabel FROM pg_enum WHERE enumtypid = "
                              "(SELECT oid FROM pg_type WHERE typname = 'en')", None),
    "enum-joined": ("base", [], "SELECT t.typname, e.enumlabel FROM pg_type t "
                    "JOIN pg_enum e ON e.enumtypid = t.oid", None),
    "infoschema-trigger-statement": ("base", [], "SELECT action_statement FROM "
                                     "information_schema.triggers", None),
    "infoschema-trigger-condition": ("base", [], "SELECT action_condition FROM "
                                     "information_schema.triggers", None),
    "infoschema-generated": ("base", [], "SELECT generation_expression FROM "
                             "information_schema.columns WHERE table_schema = 'r91x'", None),
    "trigger-when-raw": ("base", [], "SELECT tgqual FROM pg_trigger", None),
    "function-arguments": ("base", [], "SELECT pg_get_function_arguments(oid) FROM pg_proc "
                           "WHERE proname = 'af'", None),
    "infoschema-parameters": ("base", [], "SELECT parameter_default FROM "
                              "information_schema.parameters", None),
    "partkeydef-bound-all": ("base", [], "SELECT pg_get_expr(relpartbound, oid) FROM pg_class",
                             None),
    # a pin to a granted relation, beside a read that is not pinned
    "pin-join-alias": ("base", [], "SELECT d2.description FROM pg_description d, "
                       "pg_description d2 WHERE d.objoid = 'r91.pub'::regclass", None),
    "pin-or": ("base", [], "SELECT description FROM pg_description "
               "WHERE objoid = 'r91.pub'::regclass OR objoid > 0", None),
    "pin-in-list": ("base", [], "SELECT description FROM pg_description "
                    "WHERE objoid IN ('r91.pub'::regclass, 'r91x.vault'::regclass)", None),
    "pin-union": ("base", [], "SELECT description FROM pg_description WHERE objoid = "
                  "'r91.pub'::regclass UNION ALL SELECT description FROM pg_description", None),
    "pin-cte": ("base", [], "WITH x AS (SELECT * FROM pg_description WHERE objoid = "
                "'r91.pub'::regclass) SELECT description FROM pg_description", None),
    "pin-subquery": ("base", [], "SELECT (SELECT string_agg(description, ',') FROM "
                     "pg_description) FROM pg_description WHERE objoid = 'r91.pub'::regclass",
                     None),
    "pin-lateral": ("base", [], "SELECT y.description FROM pg_description d, LATERAL (SELECT "
                    "description FROM pg_description) y WHERE d.objoid = 'r91.pub'::regclass",
                    None),
    "pin-constraint-join": ("base", [], "SELECT pg_get_constraintdef(c2.oid) FROM pg_constraint "
                            "c, pg_constraint c2 WHERE c.conrelid = 'r91.pub'::regclass", None),
    # deparsers over every row of a catalog, and by a planted object's OID written as a number
    "deparse-partition-scan": ("base", [], "SELECT pg_get_partition_constraintdef(oid) FROM "
                               "pg_class WHERE relispartition", None),
    "deparse-indexdef-scan": ("base", [], "SELECT pg_get_indexdef(indexrelid) FROM pg_index",
                              None),
    "deparse-constraintdef-scan": ("base", [], "SELECT pg_get_constraintdef(oid) FROM "
                                   "pg_constraint", None),
    "deparse-triggerdef-scan": ("base", [], "SELECT pg_get_triggerdef(oid) FROM pg_trigger",
                                None),
    "deparse-statistics-scan": ("base", [], "SELECT pg_get_statisticsobjdef(oid) FROM "
                                "pg_statistic_ext", None),
    "deparse-statistics-exprs-scan": ("base", [], "SELECT pg_get_statisticsobjdef_expressions("
                                      "oid)::text FROM pg_statistic_ext", None),
    "deparse-partkey-scan": ("base", [], "SELECT pg_get_partkeydef(oid) FROM pg_class "
                             "WHERE relkind = 'p'", None),
    "deparse-statistics-columns-scan": ("base", [], "SELECT pg_get_statisticsobjdef_columns("
                                        "oid) FROM pg_statistic_ext", None),
    "deparse-statistics-columns-by-oid": ("base", [], "SELECT "
                                          "pg_get_statisticsobjdef_columns(<<vse>>)", None),
    "deparse-constraintdef-pretty-scan": ("base", [], "SELECT pg_get_constraintdef(oid, true) "
                                          "FROM pg_constraint", None),
    "deparse-expr-pretty-scan": ("base", [], "SELECT pg_get_expr(adbin, adrelid, true) "
                                 "FROM pg_attrdef", None),
    "deparse-triggerdef-pretty-scan": ("base", [], "SELECT pg_get_triggerdef(oid, true) "
                                       "FROM pg_trigger", None),
    "raw-partexprs": ("base", [], "SELECT partexprs FROM pg_partitioned_table", None),
    "deparse-partition-by-oid": ("base", [], "SELECT pg_get_partition_constraintdef(<<pp1>>)",
                                 None),
    "deparse-indexdef-by-oid": ("base", [], "SELECT pg_get_indexdef(<<dtidx>>)", None),
    "deparse-indexdef-column-by-oid": ("base", [], "SELECT pg_get_indexdef(<<dtidx>>, 0, true)",
                                       None),
    "deparse-constraintdef-by-oid": ("base", [], "SELECT pg_get_constraintdef(<<dtcheck>>)",
                                     None),
    "deparse-triggerdef-by-oid": ("base", [], "SELECT pg_get_triggerdef(<<dttrg>>)", None),
    "deparse-statistics-by-oid": ("base", [], "SELECT pg_get_statisticsobjdef(<<vse>>)", None),
    "deparse-statistics-exprs-by-oid": ("base", [], "SELECT pg_get_statisticsobjdef_expressions("
                                        "<<vse>>)::text", None),
    "deparse-viewdef-by-oid": ("base", [], "SELECT pg_get_viewdef(<<vv>>)", None),
    "comment-by-oid": ("base", [], "SELECT obj_description(<<vault>>, 'pg_class')", None),
    "comment-by-oid-one-arg": ("base", [], "SELECT obj_description(<<vault>>)", None),
    "column-comment-by-oid": ("base", [], "SELECT col_description(<<vault>>, 2)", None),
    "attrdef-by-oid": ("base", [], "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                       "WHERE adrelid = <<dt>>", None),
    "enum-by-oid": ("base", [], "SELECT enumlabel FROM pg_enum WHERE enumtypid = <<en>>", None),
    "enum-range-by-oid": ("base", [], "SELECT enum_range(NULL::r91x.en)::text", None),
    # a literal OID beside a pin, and the grant's schema without a table
    "deparse-oid-beside-pin": ("base", [], "SELECT pg_get_constraintdef(<<dtcheck>>) FROM "
                               "pg_constraint WHERE conrelid = 'r91.pub'::regclass", None),
    "deparse-oid-from-granted": ("base", [], "SELECT pg_get_constraintdef(<<dtcheck>>) "
                                 "FROM r91.pub", None),
    "trigger-oid-from-granted": ("base", [], "SELECT pg_get_triggerdef(<<dttrg>>) FROM r91.pub",
                                 None),
    "expr-oid-from-granted": ("base", [], "SELECT pg_get_expr(conbin, conrelid) FROM "
                              "pg_constraint WHERE oid = <<dtcheck>>", None),
    "constraint-conrelid-zero": ("base", [], "SELECT pg_get_constraintdef(oid) FROM "
                                 "pg_constraint WHERE conrelid = 0", None),
    "infoschema-granted-schema": ("base", [], "SELECT column_default FROM "
                                  "information_schema.columns WHERE table_schema = 'r91'", None),
    "attrdef-granted-schema": ("base", [], "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                               "WHERE adrelid IN (SELECT oid FROM pg_class "
                               "WHERE relnamespace = 'r91'::regnamespace)", None),
    "comment-granted-schema": ("base", [], "SELECT d.description FROM pg_description d JOIN "
                               "pg_class c ON c.oid = d.objoid JOIN pg_namespace n ON "
                               "n.oid = c.relnamespace WHERE n.nspname = 'r91'", None),
    "comment-name-and-schema": ("base", [], "SELECT obj_description(c.oid, 'pg_class') FROM "
                                "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE c.relname = 'hid' AND n.nspname = 'r91'", None),
    "infoschema-name-and-schema": ("base", [], "SELECT column_default FROM "
                                   "information_schema.columns WHERE table_schema = 'r91' "
                                   "AND table_name = 'hid'", None),
    "lo-get": ("base", [], "SELECT convert_from(lo_get(91091), 'UTF8')", None),
    "lo-read": ("base", [], "SELECT convert_from(loread(lo_open(91091, 262144), 100), 'UTF8')",
                None),
    "lo-get-range": ("base", [], "SELECT lo_get(91091, 0, 20)", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(CATALOGS))
def test_r91_catalogs_reach_directly(pg, px, key):
    _grant, before, sql, _why = CATALOGS[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(CATALOGS, MODES))
def test_r91_catalogs(px, key, mode):
    grant, before, sql, _why = CATALOGS[key]
    got = _proxied(px, grant, mode, before, sql)
    _held(got, key, mode)


def test_r91_enum_labels_outside_the_grant_need_the_catalogs_scope(px):
    """The refusal names its remedy, and the remedy works: a ``read:pg_catalog.pg_enum``
    (``pg_collation``) scope reads every label (locale), as the catalog's read scope reads
    any object text. (Where every schema holding one is the grant's, they are read with no
    such scope: tests/unit/test_catalog_texts.py, on a snapshot.)"""
    sql = "SELECT enumlabel FROM pg_catalog.pg_enum"
    with planted.session(px, px.tokens["base"]) as c:
        refused = planted.text(c.query(sql))
    assert planted.is_error(refused) and "read:pg_catalog.pg_enum" in refused, refused[-300:]
    assert not _shown(refused)
    scopes = "read:r91.pub read:pg_catalog.pg_enum read:pg_catalog.pg_collation"
    token = planted.grant_issue(px, agent=AGENT, task="R91-CATALOG", scopes=scopes)[1]
    with planted.session(px, token) as c:
        got = planted.text(c.query(sql))
        locales = planted.text(c.query("SELECT colliculocale FROM pg_catalog.pg_collation"))
    assert COD in got and not planted.is_error(got), got[-300:]
    assert COD in locales and not planted.is_error(locales), locales[-300:]


# --- 3. plans -------------------------------------------------------------------------------
PLANS = {
    "explain-view": ("gv", [], "EXPLAIN SELECT * FROM r91.gv", None),
    "explain-verbose-view": ("gv", [], "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM r91.gv",
                             None),
    "explain-analyze-view": ("gv", [], "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM r91.gv", None),
    "explain-generic-rls": ("rl", ["PREPARE r91q(int) AS SELECT * FROM r91.rl WHERE id = $1",
                                   "SET LOCAL plan_cache_mode = force_generic_plan"],
                            "EXPLAIN EXECUTE r91q(1)", None),
    "explain-leaky-view": ("lv", [], "EXPLAIN SELECT * FROM r91.lv", None),
}  # fmt: skip


# Not leaks (round 64's ruling): EXPLAIN of a granted relation with row security prints its
# policy's literal, which the grant reads pinned to the relation as well.
RLS_PLANS = {
    "explain-rls": "EXPLAIN SELECT * FROM r91.rl",
    "explain-analyze-rls": "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM r91.rl",
}
_RLS_PINNED = ("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
               "WHERE polrelid = 'r91.rl'::regclass")  # fmt: skip


@pytest.mark.parametrize("key", list(RLS_PLANS))
def test_r91_rls_plan_shows_what_the_grant_reads_pinned(pg, px, key):
    _reaches(pg, [], RLS_PLANS[key])
    pinned = _proxied(px, "rl", "simple", [], _RLS_PINNED)
    assert COD in pinned and not planted.is_error(pinned), pinned[-300:]
    got = _proxied(px, "rl", "simple", [], RLS_PLANS[key])
    assert COD in got, got[-300:]


@pytest.mark.parametrize("key", list(PLANS))
def test_r91_plans_reach_directly(pg, px, key):
    _grant, before, sql, _why = PLANS[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(PLANS, MODES))
def test_r91_plans(px, key, mode):
    grant, before, sql, _why = PLANS[key]
    got = _proxied(px, grant, mode, before, sql)
    _held(got, key, mode)


# --- 4. indirection -------------------------------------------------------------------------
_QX = "'SELECT v FROM r91x.vault'"
INDIRECTION = {
    "table": ("base", [], "TABLE r91x.vault", None),
    "values": ("base", [], f"VALUES ({_V})", None),
    "with-recursive": ("base", [], "WITH RECURSIVE t(x) AS (SELECT v FROM r91x.vault UNION "
                       "SELECT x FROM t WHERE false) SELECT * FROM t", None),
    "cte-named-pub": ("base", [], "WITH pub AS (SELECT v FROM r91x.vault) SELECT * FROM pub",
                      None),
    "lateral": ("base", [], "SELECT x.v FROM r91.pub, LATERAL (SELECT v FROM r91x.vault) x",
                None),
    "rows-from": ("base", [], "SELECT * FROM ROWS FROM (json_each_text(("
                  "SELECT json_object_agg(k, v) FROM r91x.vault)))", None),
    "upper-names": ("base", [], "SELECT V FROM R91X.VAULT", None),
    "quoted-names": ("base", [], 'SELECT "v" FROM "r91x"."vault"', None),
    "unicode-escaped": ("base", [], 'SELECT v FROM r91x.U&"v\\0061ult"', None),
    "dollar-string-cast": ("base", [], "SELECT $q$x$q$ || (SELECT v FROM r91x.vault "
                           "WHERE k = $q$row$q$)", None),
    "query-to-xml": ("base", [], f"SELECT query_to_xml({_QX}, true, false, '')", None),
    "query-to-xml-concat": ("base", [], "SELECT query_to_xml('SELECT v FROM r91x.' || 'vault',"
                            " true, false, '')", None),
    "query-to-xml-escaped": ("base", [], "SELECT query_to_xml(E'SELECT v FROM r91x.\\x76ault',"
                             " true, false, '')", None),
    "query-to-xmlschema": ("base", [], "SELECT query_to_xml_and_xmlschema("
                           f"{_QX}, true, false, '')", None),
    "table-to-xml": ("base", [], "SELECT table_to_xml('r91x.vault'::regclass, true, false, '')",
                     None),
    "table-to-xml-by-oid": ("base", [], "SELECT table_to_xml((SELECT oid FROM pg_class WHERE "
                            "relname = 'vault')::regclass, true, false, '')", None),
    "schema-to-xml": ("base", [], "SELECT schema_to_xml('r91x', true, false, '')", None),
    "database-to-xml": ("base", [], "SELECT database_to_xml(true, false, '')", None),
    "xpath-over-xml": ("base", [], f"SELECT xpath('//v/text()', query_to_xml({_QX}, true, "
                       "false, ''))::text", None),
    "ts-stat": ("base", [], "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', v) "
                "FROM r91x.vault')", None),
    "ts-rewrite": ("base", [], "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, "
                   "plainto_tsquery(''simple'', v) FROM r91x.vault')::text", None),
    "cursor-to-xml": ("base", ["DECLARE r91c CURSOR FOR SELECT v FROM r91x.vault"],
                      "SELECT cursor_to_xml('r91c', 5, false, false, '')", None),
    "copy-query": ("base", [], "COPY (SELECT v FROM r91x.vault) TO STDOUT", None),
    "copy-table": ("base", [], "COPY r91x.vault TO STDOUT", None),
    "copy-view-granted-over-vault": ("lv", [], "COPY (SELECT * FROM r91.lv WHERE v::int = 1) TO STDOUT", None),
    "matview-rows": ("base", [], "SELECT * FROM r91x.mv", None),
    "composite-row": ("base", [], "SELECT (x).v FROM (SELECT x FROM r91x.vault x) s", None),
    "row-to-json": ("base", [], "SELECT row_to_json(x) FROM r91x.vault x", None),
    "func-row-arg": ("base", [], "SELECT to_json(vault) FROM r91x.vault", None),
    # names spelt to be confused with the granted r91.pub, and three-part names
    "dotted-table-name": ("base", [], 'SELECT v FROM "r91.pub"', None),
    "dotted-table-name-public": ("base", [], 'SELECT v FROM public."r91.pub"', None),
    "upper-case-schema": ("base", [], 'SELECT v FROM "R91".pub', None),
    "upper-case-table": ("base", [], 'SELECT v FROM r91."PUB"', None),
    "copy-dotted-table-name": ("base", [], 'COPY "r91.pub" TO STDOUT', None),
    "three-part-relation": ("base", [], "SELECT v FROM app.r91x.vault", None),
    "three-part-function": ("base", [], "SELECT app.r91x.sf()", None),
    "three-part-type": ("base", [], "SELECT enum_range(NULL::app.r91x.en)::text", None),
    "three-part-regclass-comment": ("base", [], "SELECT obj_description("
                                    "'app.r91x.vault'::regclass, 'pg_class')", None),
    "dotted-regclass-comment": ("base", [], "SELECT obj_description('\"r91.pub\"'::regclass, "
                                "'pg_class')", None),
    "dotted-regclass-default": ("base", [], "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                                "WHERE adrelid = '\"r91.pub\"'::regclass", None),
    "upper-regclass-comment": ("base", [], "SELECT obj_description('\"R91\".pub'::regclass, "
                               "'pg_class')", None),
    "upper-table-regclass-default": ("base", [], "SELECT pg_get_expr(adbin, adrelid) FROM "
                                     "pg_attrdef WHERE adrelid = 'r91.\"PUB\"'::regclass",
                                     None),
    "to-regclass-pin": ("base", [], "SELECT description FROM pg_description WHERE objoid = "
                        "to_regclass('\"r91.pub\"')", None),
    "set-config-path": ("base", ["SELECT set_config('search_path', 'r91x', false)"],
                        "SELECT v FROM vault", None),
    "set-path": ("base", ["SET search_path = r91x"], "SELECT v FROM vault", None),
    "set-local-path": ("base", ["SET LOCAL search_path = r91x, public"], "SELECT v FROM vault",
                       None),
    "regclass-to-text-read": ("base", [], "SELECT xmlparse(content (SELECT v FROM r91x.vault "
                              "LIMIT 1)::text)", None),
    "agg-init-read": ("base", [], "SELECT r91x.agg(v) FROM r91.pub", None),
    # definitions copied into a relation the grant owns (a migration grant: read, write,
    # ddl of r91.*), then read back as its own
    "like-defaults": ("mig", ["CREATE TABLE r91.cp (LIKE r91x.dt INCLUDING ALL)"],
                      "INSERT INTO r91.cp (id) VALUES (1) RETURNING s, miss", None),
    "like-comments": ("mig", ["CREATE TABLE r91.cp (LIKE r91x.vault INCLUDING COMMENTS)"],
                      "SELECT col_description('r91.cp'::regclass, 2)", None),
    "like-check-def": ("mig", ["CREATE TABLE r91.cp (LIKE r91x.dt INCLUDING CONSTRAINTS)"],
                       "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = 'r91.cp'::regclass", None),
    "domain-column-default": ("mig", ["CREATE TABLE r91.cp (id int, d r91x.dd)"],
                              "INSERT INTO r91.cp (id) VALUES (1) RETURNING d", None),
    "domain-over-domain-default": ("mig", ["CREATE DOMAIN r91.d2 AS r91x.dd",
                                           "CREATE TABLE r91.cp (id int, d r91.d2)"],
                                   "INSERT INTO r91.cp (id) VALUES (1) RETURNING d", None),
    "enum-column-range": ("mig", ["CREATE TABLE r91.cp (e r91x.en)",
                                  "INSERT INTO r91.cp VALUES (NULL)"],
                          "SELECT enum_range(e)::text FROM r91.cp", None),
    "view-over-vault": ("mig", ["CREATE VIEW r91.cv AS SELECT v FROM r91x.vault"],
                        "SELECT * FROM r91.cv", None),
    "ctas-from-vault": ("mig", ["CREATE TABLE r91.cp AS SELECT v FROM r91x.vault"],
                        "SELECT * FROM r91.cp", None),
    "matview-over-view": ("mig", ["CREATE MATERIALIZED VIEW r91.cm AS SELECT * FROM r91x.vv"],
                          "SELECT * FROM r91.cm", None),
    "trigger-of-outside-function": ("mig", ["CREATE TRIGGER r91_pt BEFORE INSERT ON r91.pub "
                                            "FOR EACH ROW EXECUTE FUNCTION r91x.tgf()"],
                                    "INSERT INTO r91.pub VALUES (9, 'x', 1)", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(INDIRECTION))
def test_r91_indirection_reaches_directly(pg, px, key):
    _grant, before, sql, _why = INDIRECTION[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(INDIRECTION, MODES))
def test_r91_indirection(px, key, mode):
    grant, before, sql, _why = INDIRECTION[key]
    got = _proxied(px, grant, mode, before, sql)
    _held(got, key, mode)


# --- 5. session state -----------------------------------------------------------------------
SESSION = {
    "set-role-owner": ("base", ["SET ROLE pgwitness"], "SELECT v FROM r91x.vault", None),
    "reset-all": ("base", ["RESET ALL"], "SELECT r91x.sf()", None),
    "discard-all": ("base", ["DISCARD ALL"], "SELECT r91x.sf()", None),
    "reset-role": ("base", ["RESET ROLE"], "SELECT v FROM r91x.vault", None),
    "prepare-execute": ("base", ["PREPARE r91p AS SELECT v FROM r91x.vault"],
                        "EXECUTE r91p", None),
    "fetch-undeclared": ("base", ["DECLARE r91c CURSOR FOR SELECT v FROM r91x.vault"],
                         "FETCH ALL FROM r91c", None),
    "notify-self": ("lsn", ["LISTEN r91ch"],
                    f"SELECT pg_notify('r91ch', {_V})", None),
}  # fmt: skip


# outside a block: DISCARD ALL refuses one, a notification is sent at commit
NO_BLOCK = {"discard-all", "notify-self"}


@pytest.mark.parametrize("key", list(SESSION))
def test_r91_session_reaches_directly(pg, px, key):
    _grant, before, sql, _why = SESSION[key]
    _reaches(pg, before, sql, key not in NO_BLOCK)


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(SESSION, MODES))
def test_r91_session(px, key, mode):
    grant, before, sql, _why = SESSION[key]
    got = _proxied(px, grant, mode, before, sql, key not in NO_BLOCK)
    _held(got, key, mode)


# --- statements changing what the grant may not change (refused by the proxy; directly each
# succeeds as the upstream login, in a block rolled back) ----------------------------------
CHANGES = {
    "database-search-path": ("mig", "ALTER DATABASE app SET search_path = r91x, public", None),
    "role-search-path": ("mig", "ALTER ROLE pgwitness SET search_path = r91x, public", None),
    "role-setting-function": ("mig", "ALTER ROLE pgwitness IN DATABASE app SET "
                              "application_name = 'x'", None),
    "comment-outside": ("mig", "COMMENT ON TABLE r91x.vault IS 'x'", None),
    "grant-outside": ("mig", "GRANT SELECT ON r91x.vault TO PUBLIC", None),
    "grant-schema-all": ("mig", "GRANT SELECT ON ALL TABLES IN SCHEMA r91x TO PUBLIC", None),
    "default-privileges": ("mig", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
                           None),
    "drop-owned": ("mig", "DROP OWNED BY pgwitness", None),
    "reassign-owned": ("mig", "REASSIGN OWNED BY pgwitness TO pgwitness", None),
    "move-into-granted-schema": ("mig", "ALTER TABLE r91x.vault SET SCHEMA r91", None),
    "rename-schema": ("mig", "ALTER SCHEMA r91x RENAME TO r91z", None),
    "lo-put": ("base", "SELECT lo_put(91091, 0, 'x')", None),
    "lo-unlink": ("base", "SELECT lo_unlink(91091)", None),
    "lo-owner": ("mig", "ALTER LARGE OBJECT 91091 OWNER TO pgwitness", None),
    "lo-grant": ("mig", "GRANT SELECT ON LARGE OBJECT 91091 TO PUBLIC", None),
    "extension-into-granted": ("mig", "CREATE EXTENSION hstore SCHEMA r91", None),
    "vacuum-outside": ("base", "ANALYZE r91x.vault", None),
    "lock-outside": ("base", "LOCK TABLE r91x.vault", None),
    "truncate-outside": ("mig", "TRUNCATE r91x.vault", None),
    "security-invoker-off": ("mig", "ALTER VIEW r91.gv SET (security_barrier = false)", None),
    "refresh-outside": ("mig", "REFRESH MATERIALIZED VIEW r91x.mv", None),
    "attach-outside": ("mig", "ALTER TABLE r91x.pp DETACH PARTITION r91x.pp1", None),
    "publication": ("mig", "CREATE PUBLICATION r91pub FOR TABLE r91x.vault", None),
}  # fmt: skip


@pytest.mark.parametrize("key", list(CHANGES))
def test_r91_changes_run_directly(pg, px, key):
    _grant, sql, _why = CHANGES[key]
    got = planted.direct_in_block(pg, [], sql)
    assert not planted.is_error(got), ("precondition: refused directly", sql, got[-300:])


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(CHANGES, MODES))
def test_r91_changes(px, key, mode):
    grant, sql, _why = CHANGES[key]
    got = _proxied(px, grant, mode, [], sql)
    if os.environ.get("R91_PEEK"):
        print("PEEK", key, mode, re.sub(r"[^ -~]", ".", got)[-200:])
    assert planted.refused_by_proxy(got), ("ALLOWED", key, mode, got[-400:])


# --- another session's state: its statement text, its notifications, its parked backend ------


def _side(pg):
    """A direct session (as the upstream login) whose last statement holds ``ACT`` and which
    holds an advisory lock keyed ``EXN``."""
    c = RawClient.direct(pg)
    c.query(f"SELECT pg_advisory_lock({EXN}), '{ACT}' AS r91_side")
    return c


SIDE = {
    "activity-query": ("base", "SELECT query FROM pg_stat_activity", None),
    "advisory-lock-key": ("base", "SELECT objid FROM pg_locks WHERE locktype = 'advisory'",
                          None),
    "activity-function": ("base", "SELECT pg_stat_get_backend_activity(s) "
                          "FROM pg_stat_get_backend_idset() s", None),
    "activity-by-pid": ("base", "SELECT pg_stat_get_backend_activity(b) FROM "
                        "generate_series(1, 200) b", None),
}  # fmt: skip


@pytest.mark.parametrize(("key", "mode"), planted.mode_cases(SIDE, MODES))
def test_r91_other_sessions(pg, px, key, mode):
    grant, sql, _why = SIDE[key]
    with _side(pg):
        direct = planted.direct_in_block(pg, [], sql, False)
        if not _shown(direct):
            raise RuntimeError(("precondition: no marker directly", direct[-300:]))
        got = _proxied(px, grant, mode, [], sql, False)
    _held(got, key, mode)


def test_r91_notify_from_another_session(pg, px):
    """A payload another session sends on a channel the grant may listen on is the grant's
    to read (``listen:`` documents it); on a channel it may not, nothing arrives."""
    planted.renew(px)
    with planted.session(px, px.tokens["lsn"]) as c:
        got = planted.text(c.query("LISTEN r91other"))
        with RawClient.direct(pg) as d:
            d.query(f"NOTIFY r91other, '{ROW}'")
        got += planted.text(c.query("SELECT 1"))
    assert not _shown(got), got[-400:]


# --- 6. protocol ----------------------------------------------------------------------------


def _describe(kind: bytes, name: str) -> bytes:
    return frame(b"D", kind + name.encode() + b"\x00")


def _function_call(oid: int, args: list[bytes]) -> bytes:
    body = struct.pack("!IH", oid, 0) + struct.pack("!H", len(args))
    for a in args:
        body += struct.pack("!i", len(a)) + a
    return body + struct.pack("!H", 0)


def _lo_get_oid(pg) -> int:
    with RawClient.direct(pg) as c:
        return int(c.scalar("SELECT 'lo_get(oid)'::regprocedure::oid"))


def _steps(name: str, pg):
    from common.wire import messages as m

    sql = f"SELECT {_V} AS v"
    if name == "split-pipeline":
        return [[m.parse("", sql), m.SYNC], [m.bind_no_params(), m.execute(), m.SYNC]]
    if name == "unnamed-reuse":
        return [
            [m.parse("", "SELECT 1"), m.bind_no_params(), m.execute(), m.SYNC],
            [m.parse("", sql), m.SYNC],
            [m.bind_no_params(), m.execute(), m.SYNC],
        ]
    if name == "describe-statement":
        return [
            [
                m.parse("r91d", f"SELECT 1 AS x WHERE {_V} IS NOT NULL"),
                _describe(b"S", "r91d"),
                m.SYNC,
            ]
        ]
    if name == "function-call":
        oid = _lo_get_oid(pg)
        return [[frame(b"F", _function_call(oid, [b"91091"]))]]
    if name == "comment-hides-statement":
        return [[m.query(f"SELECT 1 /* ; */ ; SELECT {_V} -- ;")]]
    if name == "nul-in-query":
        return [[frame(b"Q", b"SELECT 1 \x00; " + sql.encode() + b"\x00")]]
    if name == "invalid-utf8":
        return [[frame(b"Q", b"SELECT '\xff' ; " + sql.encode() + b"\x00")]]
    if name == "copy-from-trigger":
        return [[m.query("COPY r91.tg FROM STDIN"), frame(b"d", b"1\n"), frame(b"c", b"")]]
    if name == "copy-to-stdout-vault":
        return [[m.query("COPY (SELECT v FROM r91x.vault) TO STDOUT")]]
    if name == "deep-nesting":
        return [[m.query("SELECT " + "(" * 3000 + f"{_V}" + ")" * 3000)]]
    raise KeyError(name)


# key -> (grant, does it leak directly, strict-xfail reason or None); where it does not,
# the server itself answers with no value (a Describe's types, a malformed message): held if
# the proxy adds none
PROTOCOL = {
    "split-pipeline": ("base", True, None),
    "unnamed-reuse": ("base", True, None),
    "describe-statement": ("base", False, None),
    "function-call": ("base", True, None),
    "comment-hides-statement": ("base", True, None),
    "nul-in-query": ("base", False, None),
    "invalid-utf8": ("base", False, None),
    "deep-nesting": ("base", True, None),
    "copy-from-trigger": ("tg", True, None),
    "copy-to-stdout-vault": ("base", True, None),
}


def _run_raw(c: RawClient, steps) -> str:
    out: list[bytes] = []
    try:
        for step in steps:
            c.send(*step)
            for _ in range(sum(1 for f in step if f[:1] in (b"Q", b"S", b"F"))):
                out += c.frames_until_ready()
    except (OSError, EOFError, AssertionError) as exc:
        out.append(f"<ended: {exc}>".encode())
    return planted.text(out)


@pytest.mark.parametrize("key", planted.cases(PROTOCOL))
def test_r91_protocol(pg, px, key):
    grant, leaks, _why = PROTOCOL[key]
    with RawClient.direct(pg) as c:
        direct = _run_raw(c, _steps(key, pg))
    if leaks and not _shown(direct):
        raise RuntimeError(("precondition: no marker directly", key, direct[-300:]))
    planted.renew(px)
    with planted.session(px, px.tokens[grant]) as c:
        got = _run_raw(c, _steps(key, pg))
    _held(got, key, "raw")
