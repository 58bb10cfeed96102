"""Red-team round 80: the four fixes of round 79 attacked as families (the server the judge).

Method: the fixes (861dffe, 747ff5f, da03f30: ``engine._temp_of_code``, ``_claim_temps``,
``temps_answered``, ``_setting_of_code`` / ``_CODE_PROOF_SETTINGS``, the relay's withheld
ParameterStatus and ``may_hear``, ``pg_locks`` out of the default catalogs) were read,
then every probe was first run directly as ``pgwitness`` (the proxy's upstream login),
where it must show its marker (``RuntimeError`` otherwise), then through the proxy in a
session of its own per mode (simple Query, extended unnamed, named prepared statement),
every byte the client received searched for the marker (``planted.shows``).
``_CODE_PROOF_SETTINGS`` was checked on the server (``pg_settings.vartype``): all are
bool/enum/fixed except ``DateStyle``, ``client_encoding``, ``lc_*``, ``server_*`` (strings
of a few valid values: no text of code's choosing).

Planted: database ``app`` (code that names set_config and temp: ``encoding_code`` and
``temp_code`` hold): ``r80x.vault`` (``ROW``, ``NUM``, a POSIX zone ``<R80TZQ>+05``),
``r80x.r80_stage`` (a permanent table off the search path), ``r80.pub`` (readable) and
granted functions: ``keep``/``stage`` (CREATE TEMP TABLE IF NOT EXISTS + fill from the
vault), ``restage`` (DROP TABLE IF EXISTS + CREATE TEMP TABLE AS: the staging idiom),
``seq`` (a temp sequence set to ``NUM``), ``tz``/``tag``/``sp`` (set_config of TimeZone,
application_name, search_path from the vault: a tenant's zone or schema), ``subscribe``
(LISTEN r80_hidden). Database ``r80b`` (code naming none of CODE_FLAGS_SQL's words):
``r80b.tag`` and a trigger of ``r80b.tt`` (UPDATE pg_catalog.pg_settings SET setting = <the
vault's ROW> WHERE name = 'application_name'), ``r80b.mk`` (LANGUAGE sql, ``SET
search_path = pg_temp, r80bx``, body ``CREATE TABLE stg AS SELECT v FROM r80bx.vault``).

Families tried: (1) temporary relations code made: IF NOT EXISTS / ON COMMIT DROP hidden
by comments, COMMIT AND CHAIN and ``COMMIT; BEGIN`` after an ON COMMIT DROP CREATE, code
replacing the client's table of a name, an unqualified name some off-path schema holds,
code making temp tables without the words (a SET clause), temp sequences (currval,
nextval, last_value, pg_sequence_last_value), a temp view over code's table, ``PG_TEMP``,
``"pg_temp"``, ``pg_temp_N``, a protocol statement and a SQL PREPARE parsed before code
made the table, a pipelined CREATE that fails (42P07) after code's; (2) settings:
current_setting with missing_ok, SHOW TIME ZONE, a pg_settings join, pg_stat_activity's
own row, EXPLAIN (SETTINGS), timestamptz output (to_char TZ, timeofday(), DateStyle
Postgres), settings set with UPDATE pg_settings; (3) pg_locks: quoted and upper-case
names, pg_lock_status() bare, LATERAL and as a composite, a CTE, COPY (query); (4)
notifications: code's LISTEN beside a granted one, UNLISTEN * then code's LISTEN again,
a notification arriving before a COPY's answer. Transparency: the client's own temporary
tables after ALTER, rename, CREATE INDEX, COMMENT, TRUNCATE, savepoints, COMMIT AND CHAIN,
pipelined with their CREATE; notifications on a granted channel.

Leaks (found as strict xfails; every mode). **Fixed the same session** (session 34, plain
tests now): 1 and 2 (the CREATE's options read from PostgreSQL's parse tree:
``pgparse.temp_creation``; a COMMIT's answer settles the transaction's claims, AND CHAIN
too), 4 (a name is known only in a schema of the search path: ``Snapshot.columns``), 5 and
9 (``CODE_FLAGS_SQL`` reads the SET clause for ``pg_temp`` and the word ``pg_settings``), 7
(the session's own pg_stat_activity row is a read of application_name there), 8 (EXPLAIN
naming SETTINGS is refused there), and the transparency regressions but the conservative
savepoint one (same-group claims, ALTER keeps ownership, a rename carries it, a literal no
longer reads as IF NOT EXISTS). **Kept as documented residue** (strict xfails, reasons
``RESIDUE``): 3 (code the grant runs putting its own table under the client's name, as it
may write into the client's table) and 6 (a setting code set shapes every value the server
formats with it).

1. IF NOT EXISTS / ON COMMIT DROP hidden by a comment (``IF /**/ NOT EXISTS``, ``ON
   COMMIT/**/DROP``): ``_IF_NOT_EXISTS`` and ``_ON_COMMIT_DROP`` are regexes over the text;
   the CREATE that made nothing (or whose table its COMMIT dropped) claims code's table.
2. COMMIT AND CHAIN (or ``COMMIT; BEGIN`` in one Query) after ``CREATE TEMP TABLE t ... ON
   COMMIT DROP``: ``_temp_tx`` holds the name until an idle ReadyForQuery, never seen, so
   code's later ``t`` is read in the chained transaction.
3. Code replacing the client's table (``DROP TABLE IF EXISTS t; CREATE TEMP TABLE t AS
   SELECT ...``): ownership is by name, not by relation (OID).
4. An unqualified name a permanent relation off the search path has (``r80x.r80_stage``):
   ``_temp_of_code`` accepts any name ``Snapshot.type_names`` holds, whatever its schema;
   the server resolves it in pg_temp (grant ``read:public.*``).
5. ``temp_code`` blind to a function's SET clause: ``SET search_path = pg_temp, ...`` makes
   a plain ``CREATE TABLE ... AS`` temporary; default.temp reads what it staged.
6. TimeZone shown by timestamptz output: ``to_char(now(), 'TZ')``, ``timeofday()``,
   ``now()`` under DateStyle Postgres (the value is withheld only from SHOW, settings reads
   and ParameterStatus).
7. application_name through the housekeeping read of the session's own pg_stat_activity
   row (``default.housekeeping``).
8. EXPLAIN (SETTINGS): search_path code set from the vault (any GUC_EXPLAIN setting).
9. ``encoding_code`` blind to ``UPDATE pg_catalog.pg_settings SET setting = ...``: SHOW
   application_name and its ParameterStatus (also from a trigger of a written table).

Transparency regressions (strict xfails, ``REFUSED:``): a pipelined CREATE + INSERT in one
Sync group (pgjdbc's multi-statement split), ALTER TABLE ... ADD COLUMN and RENAME of the
client's own temporary table, COMMIT AND CHAIN then ROLLBACK, ``'if not exists'`` in a
string literal of the CREATE, an error rolled back to a savepoint after the CREATE
(documented as conservative).

Held (plain tests): temp sequences, a temp view over code's table, ``PG_TEMP``/
``"pg_temp"``/``pg_temp_N`` (scope.read), statements prepared before code made the table
(decided again at Bind/EXECUTE), a pipelined CREATE failing on code's table, SHOW TIME
ZONE / missing_ok / pg_settings joins / SHOW search_path, every pg_locks path, code's
LISTEN withheld beside a granted channel (delivered), UNLISTEN * and COPY. Not reached
(time): non-ASCII and 63-byte channel names (``may_hear`` compares the decoded name
exactly), lastval() after code's nextval of a permanent sequence, the upstream pool's
DISCARD ALL (read: ``proxy/upstream_pool.py`` resets every parked backend).
"""

from __future__ import annotations

import time

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support import rawpg as r
from tests.support.proxies import issue as grant_issue

pytestmark = pytest.mark.timeout(180)

AGENT = "r80-bot"
ROW = "R80-ROW-d4b1"  # r80x.vault, outside every grant
NUM = "801234567"  # r80x.vault too
TZM = "R80TZQ"  # a time zone abbreviation r80x.vault holds ('<R80TZQ>+05')
PUB = "R80-PUB-ok"  # r80.pub (readable)
MARKERS = (ROW, NUM, TZM)
CODE = "r80.keep,r80.stage,r80.restage,r80.seq,r80.tz,r80.tag,r80.sp,r80.subscribe"
SCOPES = "read:r80.pub write:r80.pub"
GRANTS = {
    "exec": f"read:r80.pub execute:{CODE} listen:r80_ok",
    # a wildcard read of the search path's schema (an unqualified name of no relation there
    # is what the server finds in pg_temp)
    "wild": f"read:public.*,r80.pub execute:{CODE}",
    "lock": "read:r80.pub",
    # and DDL in a schema off the search path: a name made there through the proxy is not
    # what an unqualified name finds (code's temporary table of it is)
    "wildddl": f"read:public.*,r80.pub ddl:r80y.* execute:{CODE}",
}
SCOPES_B = "read:r80b.pub execute:r80b.tag,r80b.mk write:r80b.tt"
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r80; CREATE SCHEMA r80x; CREATE SCHEMA r80y;
CREATE TABLE r80x.vault (k text PRIMARY KEY, v text);
INSERT INTO r80x.vault VALUES ('row', '{ROW}'), ('num', '{NUM}'), ('tz', '<{TZM}>+05');
CREATE TABLE r80x.r80_stage (v text);
CREATE TABLE r80.pub (id int PRIMARY KEY, v text);
INSERT INTO r80.pub VALUES (1, '{PUB}');
CREATE FUNCTION r80.keep() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS r80_keep (v text);
  INSERT INTO r80_keep SELECT v FROM r80x.vault;
  RETURN (SELECT count(*) FROM r80_keep);
END $$;
CREATE FUNCTION r80.stage() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS r80_stage (v text);
  INSERT INTO r80_stage SELECT v FROM r80x.vault;
  RETURN (SELECT count(*) FROM r80_stage);
END $$;
CREATE FUNCTION r80.restage() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  DROP TABLE IF EXISTS r80_re;
  CREATE TEMP TABLE r80_re AS SELECT v FROM r80x.vault;
  RETURN (SELECT count(*) FROM r80_re);
END $$;
CREATE FUNCTION r80.seq() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP SEQUENCE IF NOT EXISTS r80_seq MAXVALUE 9999999999;
  PERFORM setval('r80_seq', (SELECT v::bigint FROM r80x.vault WHERE k = 'num'));
  RETURN 1;
END $$;
CREATE FUNCTION r80.tz() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('TimeZone', (SELECT v FROM r80x.vault WHERE k = 'tz'), false);
  RETURN 1;
END $$;
CREATE FUNCTION r80.tag() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('application_name', (SELECT v FROM r80x.vault WHERE k = 'row'), false);
  RETURN 1;
END $$;
CREATE FUNCTION r80.sp() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('search_path', (SELECT v FROM r80x.vault WHERE k = 'row') || ', public',
                     false);
  RETURN 1;
END $$;
CREATE FUNCTION r80.subscribe() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  LISTEN r80_hidden;
  RETURN 1;
END $$;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r80, r80x, r80y CASCADE;"
# a second database, whose code names none of the words CODE_FLAGS_SQL looks for
DB_B = "r80b"
SETUP_B = f"""
SET ROLE pgwitness;
CREATE SCHEMA r80b; CREATE SCHEMA r80bx;
CREATE TABLE r80bx.vault (k text PRIMARY KEY, v text);
INSERT INTO r80bx.vault VALUES ('row', '{ROW}');
CREATE TABLE r80b.pub (id int, v text);
INSERT INTO r80b.pub VALUES (1, '{PUB}');
CREATE FUNCTION r80b.tag() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  UPDATE pg_catalog.pg_settings SET setting = (SELECT v FROM r80bx.vault WHERE k = 'row')
    WHERE name = 'application_name';
  RETURN 1;
END $$;
CREATE FUNCTION r80b.mk() RETURNS int LANGUAGE sql SET search_path = pg_temp, r80bx AS $$
  CREATE TABLE stg AS SELECT v FROM r80bx.vault;
  SELECT 1;
$$;
CREATE TABLE r80b.tt (id int);
CREATE FUNCTION r80bx.tt_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE pg_catalog.pg_settings SET setting = (SELECT v FROM r80bx.vault WHERE k = 'row')
    WHERE name = 'application_name';
  RETURN NULL;
END $$;
CREATE TRIGGER tt_tag AFTER INSERT ON r80b.tt FOR EACH ROW EXECUTE FUNCTION r80bx.tt_tag();
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    pg.psql(f"DROP DATABASE IF EXISTS {DB_B}")
    pg.psql(f"CREATE DATABASE {DB_B} OWNER pgwitness")
    pg.psql(SETUP_B, db=DB_B)
    try:
        with planted.running(pg, tmp_path_factory, "r80", agent=AGENT, scopes=SCOPES,
                             setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
            h.tokens["b"] = grant_issue(h, agent=AGENT, task="R80-B", scopes=SCOPES_B,
                                        database=DB_B)[1]  # fmt: skip
            yield h
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {DB_B} WITH (FORCE)")


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _direct(pg, before: list[str], sql: str, db: str = "app") -> str:
    """``before`` then ``sql`` directly as ``pgwitness``: every byte received."""
    with r.RawClient.direct(pg, db) as c:
        got = [f for s in before for f in c.query(s)] + c.query(sql)
    return planted.text(got)


def _session(px, key: str, db: str = "app") -> r.RawClient:
    return r.RawClient.session(px.host, px.port, AGENT, px.tokens[key], db)


def _proxied(px, key: str, mode: str, before: list[str], sql: str, db: str = "app") -> str:
    """``before`` (simple Query), then ``sql`` in ``mode``, in one session of grant
    ``key``: every byte received (the session must answer a query after)."""
    with _session(px, key, db) as c:
        got = "".join(planted.run_mode(c, "simple", s) for s in before)
        got += planted.run_mode(c, mode, sql)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def _reaches(pg, before: list[str], sql: str, db: str = "app") -> None:
    got = _direct(pg, before, sql, db)
    if not _shown(got):
        raise RuntimeError(("precondition: no marker directly", sql, got[-400:]))


# fixed (session 34), was: a comment between IF and NOT EXISTS hides the clause from
# engine._IF_NOT_EXISTS (a regex over the statement's text): the CREATE, a no-op with a
# NOTICE since code's table holds the name, is answered without an error and claims code's
# table (_claim_temps)
CLAIM_IF_NOT_EXISTS = None
# fixed (session 34), was: a comment between ON COMMIT and DROP hides the clause from
# engine._ON_COMMIT_DROP: the table, dropped at COMMIT, is claimed as kept (_temp_own), and
# the table code makes of its name later is read as the session's
CLAIM_ON_COMMIT_DROP = None
# fixed (session 34), was: _temp_of_code counts _temp_tx (ON COMMIT DROP names included) as
# the session's until a ReadyForQuery 'I' ends the transaction; COMMIT AND CHAIN (or
# 'COMMIT; BEGIN' in one Query) never shows 'I', so the name of a table its COMMIT dropped
# stays claimed in the next transaction, where code makes one of that name
CLAIM_CHAINED = None
CLAIM_BY_NAME = (
    "RESIDUE (documented: code the grant runs may put anything under the client's name, as it may write into the client's own table): ownership is by name, not by relation: code that replaces a temporary table "
    "(DROP TABLE IF EXISTS t; CREATE TEMP TABLE t AS SELECT ... from an unreadable "
    "relation: the common staging idiom) leaves a table of its own under the client's "
    "name, and it is read as the client's (beyond the documented residue, code writing "
    "into the client's own table)"
)
# fixed (session 34), was: _temp_of_code lets an unqualified name pass when
# Snapshot.type_names holds it, and type_names lists relations of every schema, also ones
# off the search path (r80x.r80_stage): no search-path schema holds the name, so the server
# resolves it in pg_temp (pinned last), to the table code staged the vault into (grant
# read:public.*)
UNQUALIFIED_ELSEWHERE = None
TZ_SHOWN = (
    "RESIDUE (documented: a setting code set shapes every value the server formats with it): TimeZone is withheld (ParameterStatus, SHOW, current_setting, pg_settings) but "
    "every timestamptz the server formats shows it: to_char(now(), 'TZ'), timeofday(), "
    "now() under DateStyle Postgres/SQL (and its offset in any now()); a POSIX zone "
    "'<ABBR>+05' carries any letters and digits, a tenant's zone name its own"
)
# fixed (session 34), was: the housekeeping shape SELECT application_name FROM
# pg_stat_activity WHERE pid = pg_backend_pid() (default.housekeeping) reads
# application_name after code set it; _setting_of_code looks at SHOW, current_setting and
# pg_settings only
ACTIVITY_ROW = None
# fixed (session 34), was: EXPLAIN (SETTINGS) prints every planner-relevant setting that
# differs from its default (search_path, work_mem, ...): code's set_config('search_path', <a
# tenant's schema from a table>, false) reaches the client though SHOW search_path is
# refused
EXPLAIN_SETTINGS = None
# fixed (session 34), was: Snapshot.encoding_code comes from CODE_FLAGS_SQL's words
# (client_encoding, set_config, names, execute); code that sets a setting with UPDATE
# pg_catalog. pg_settings SET setting = ... (the view's rule calls set_config) names none,
# so application_name's ParameterStatus is relayed and SHOW application_name allowed
PG_SETTINGS_UPDATE = None
# fixed (session 34), was: Snapshot.temp_code looks for temp/temporary/pg_temp/execute in
# the function's source only; a function whose SET clause puts pg_temp first (SET
# search_path = pg_temp, ...) makes a temporary table with a plain CREATE TABLE ... AS
# SELECT, so the database counts as having no such code and default.temp reads what it
# staged
PROCONFIG_TEMP = None

# (grant, statements before (simple Query), the probe, its database, the reason of its
# strict xfail or None: it holds)
PROBES = {
    # 1. temporary relations code made: which names the session's own statements made
    "if-not-exists-comment": ("exec", [
        "SELECT r80.keep()", "CREATE TEMP TABLE IF /**/ NOT EXISTS r80_keep (v text)",
    ], "SELECT * FROM pg_temp.r80_keep", "app", CLAIM_IF_NOT_EXISTS),
    "if-not-exists-line-comment": ("exec", [
        "SELECT r80.keep()", "CREATE TEMP TABLE IF --\nNOT EXISTS r80_keep (v text)",
    ], "SELECT * FROM pg_temp.r80_keep", "app", CLAIM_IF_NOT_EXISTS),
    "on-commit-drop-comment": ("exec", [
        "BEGIN", "CREATE TEMP TABLE r80_keep (v text) ON COMMIT/**/DROP", "COMMIT",
        "SELECT r80.keep()",
    ], "SELECT * FROM pg_temp.r80_keep", "app", CLAIM_ON_COMMIT_DROP),
    "commit-chain-drop": ("exec", [
        "BEGIN", "CREATE TEMP TABLE r80_keep (v text) ON COMMIT DROP", "COMMIT AND CHAIN",
        "SELECT r80.keep()",
    ], "SELECT * FROM pg_temp.r80_keep", "app", CLAIM_CHAINED),
    "commit-begin-drop": ("exec", [
        "BEGIN", "CREATE TEMP TABLE r80_keep (v text) ON COMMIT DROP", "COMMIT; BEGIN",
        "SELECT r80.keep()",
    ], "SELECT * FROM pg_temp.r80_keep", "app", CLAIM_CHAINED),
    "restage": ("exec", ["CREATE TEMP TABLE r80_re (v text)", "SELECT r80.restage()"],
                "SELECT * FROM pg_temp.r80_re", "app", CLAIM_BY_NAME),
    "restage-in-block": ("exec", [
        "BEGIN", "CREATE TEMP TABLE r80_re (v text)", "SELECT r80.restage()",
    ], "SELECT * FROM pg_temp.r80_re", "app", CLAIM_BY_NAME),
    "unqualified-name-elsewhere": ("wild", ["SELECT r80.stage()"], "SELECT * FROM r80_stage",
                                   "app", UNQUALIFIED_ELSEWHERE),
    # (found in the review of round 80's fixes: a name the session made through the proxy
    # since the load, in a schema off the path, was taken for a relation the path has)
    "unqualified-made-elsewhere": ("wildddl", ["SELECT r80.keep()",
                                               "CREATE TABLE r80y.r80_keep (v text)"],
                                   "SELECT * FROM r80_keep", "app", None),
    "proconfig-pg-temp-first": ("b", ["SELECT r80b.mk()"], "SELECT * FROM pg_temp.stg", DB_B,
                                PROCONFIG_TEMP),
    "seq-currval": ("exec", ["SELECT r80.seq()"], "SELECT currval('pg_temp.r80_seq')", "app",
                    None),
    "seq-nextval": ("exec", ["SELECT r80.seq()"], "SELECT nextval('pg_temp.r80_seq') - 1",
                    "app", None),
    "seq-read": ("exec", ["SELECT r80.seq()"], "SELECT last_value FROM pg_temp.r80_seq", "app",
                 None),
    "seq-last-value-fn": ("exec", ["SELECT r80.seq()"],
                          "SELECT pg_sequence_last_value('pg_temp.r80_seq')", "app", None),
    "temp-view-over-code": ("exec", [
        "SELECT r80.keep()", "CREATE TEMP VIEW r80_tv AS SELECT v FROM pg_temp.r80_keep",
    ], "SELECT * FROM pg_temp.r80_tv", "app", None),
    "pg-temp-upper": ("exec", ["SELECT r80.keep()"], "SELECT * FROM PG_TEMP.r80_keep", "app",
                      None),
    "pg-temp-quoted": ("exec", ["SELECT r80.keep()"], 'SELECT * FROM "pg_temp".r80_keep', "app",
                       None),
    # 2. settings code may set
    "tz-to-char": ("exec", ["SELECT r80.tz()"], "SELECT to_char(now(), 'TZ')", "app", TZ_SHOWN),
    "tz-timeofday": ("exec", ["SELECT r80.tz()"], "SELECT timeofday()", "app", TZ_SHOWN),
    "tz-datestyle-postgres": ("exec", ["SELECT r80.tz()", "SET DateStyle = 'Postgres, MDY'"],
                              "SELECT now()", "app", TZ_SHOWN),
    "tz-missing-ok": ("exec", ["SELECT r80.tz()"], "SELECT current_setting('TimeZone', true)",
                      "app", None),
    "tz-show-time-zone": ("exec", ["SELECT r80.tz()"], "SHOW TIME ZONE", "app", None),
    "tz-pg-settings-join": ("exec", ["SELECT r80.tz()"],
        "SELECT s.setting FROM pg_settings s JOIN r80.pub p ON true WHERE s.name = 'TimeZone'",
        "app", None),
    "tag-missing-ok": ("exec", ["SELECT r80.tag()"],
                       "SELECT current_setting('application_name', true)", "app", None),
    "tag-own-activity-row": ("exec", ["SELECT r80.tag()"],
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()", "app",
        ACTIVITY_ROW),
    "sp-show": ("exec", ["SELECT r80.sp()"], "SHOW search_path", "app", None),
    "sp-explain-settings": ("exec", ["SELECT r80.sp()"], "EXPLAIN (SETTINGS) SELECT 1", "app",
                            EXPLAIN_SETTINGS),
    "pg-settings-update-show": ("b", ["SELECT r80b.tag()"], "SHOW application_name", DB_B,
                                PG_SETTINGS_UPDATE),
    "pg-settings-update-status": ("b", [], "SELECT r80b.tag()", DB_B, PG_SETTINGS_UPDATE),
    "pg-settings-update-trigger": ("b", [], "INSERT INTO r80b.tt VALUES (1)", DB_B,
                                   PG_SETTINGS_UPDATE),
}  # fmt: skip


def _cases():
    return [
        pytest.param(k, mode, id=f"{k}-{mode}", marks=[] if v[-1] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in PROBES.items()
        for mode in MODES
    ]  # fmt: skip


@pytest.mark.parametrize("key", list(PROBES))
def test_r80_reach_directly(pg, px, key):
    _grant, before, sql, db, _reason = PROBES[key]
    _reaches(pg, before, sql, db)


@pytest.mark.parametrize(("key", "mode"), _cases())
def test_r80_probe(px, key, mode):
    grant, before, sql, db, _reason = PROBES[key]
    got = _proxied(px, grant, mode, before, sql, db)
    assert not _shown(got), ("LEAK", key, mode, got[-500:])


_MY_TEMP = "SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"


def test_r80_numbered_temporary_schema(pg, px):
    """Held: code's table named by the backend's own temporary schema (``pg_temp_3``), as
    ``\\d`` shows it: a read scope on that schema, which no grant has."""
    with r.RawClient.direct(pg) as c:
        c.query("SELECT r80.keep()")
        direct = planted.text(c.query(f"SELECT * FROM {c.scalar(_MY_TEMP)}.r80_keep"))
    assert ROW in direct, direct[-300:]
    for mode in MODES:
        with _session(px, "exec") as c:
            c.query("SELECT r80.keep()")
            got = planted.run_mode(c, mode, f"SELECT * FROM {c.scalar(_MY_TEMP)}.r80_keep")
        assert "42501" in got and not _shown(got), (mode, got[-300:])


def test_r80_prepared_before_code_made_it(pg, px):
    """A protocol statement and a SQL PREPARE of a read of the client's own table, the
    table dropped, code making one of its name, then the statement run."""
    own = "CREATE TEMP TABLE r80_keep (v text)"
    read = "SELECT * FROM pg_temp.r80_keep"
    with r.RawClient.direct(pg) as c:
        c.query(own)
        c.send(m.parse("ps1", read), m.SYNC)
        c.frames_until_ready()
        c.query("PREPARE p1 AS " + read)
        c.query("DROP TABLE pg_temp.r80_keep")
        c.query("SELECT r80.keep()")
        direct = planted.text(planted.bound(c, "ps1") + c.query("EXECUTE p1"))
    assert direct.count(ROW) == 2, direct[-300:]
    with _session(px, "exec") as c:
        c.query(own)
        c.send(m.parse("ps1", read), m.SYNC)
        c.frames_until_ready()
        c.query("PREPARE p1 AS " + read)
        c.query("DROP TABLE pg_temp.r80_keep")
        c.query("SELECT r80.keep()")
        got = planted.text(planted.bound(c, "ps1") + c.query("EXECUTE p1"))
    assert not _shown(got), got[-400:]


def test_r80_pipelined_claim(pg, px):
    """Held: code's table, then the client's CREATE of its name (42P07) and a read, each in
    its own Sync group, sent at once: the read is decided before the CREATE is answered."""
    steps = [
        (
            m.parse("", "SELECT r80.keep()"),
            m.bind_no_params(),
            m.execute(),
            m.SYNC,
            m.parse("", "CREATE TEMP TABLE r80_keep (v text)"),
            m.bind_no_params(),
            m.execute(),
            m.SYNC,
            m.parse("", "SELECT * FROM pg_temp.r80_keep"),
            m.bind_no_params(),
            m.execute(),
            m.SYNC,
        )
    ]
    with _session(px, "exec") as c:
        got = planted.run_steps(c, steps)
        got += planted.text(c.query("SELECT * FROM pg_temp.r80_keep"))
    assert not _shown(got), got[-400:]


# Transparency where code may make temporary relations (the ``r80`` database has such code):
# what the client's own statements made and filled from a granted table is read as before.
# (statements before, the read, the reason of its strict xfail or None)
PIPELINE = [
    "CREATE TEMP TABLE r80_p (v text)",
    "INSERT INTO pg_temp.r80_p SELECT v FROM r80.pub",
    "SELECT v FROM pg_temp.r80_p",
]
OWN = {
    "pipeline-create-insert": (
        None,
        None,
        None,  # fixed (session 34)
    ),
    "alter-add-column": (
        [
            "CREATE TEMP TABLE r80_a (v text)",
            "ALTER TABLE pg_temp.r80_a ADD COLUMN w int",
            "INSERT INTO pg_temp.r80_a (v) SELECT v FROM r80.pub",
        ],
        "SELECT v FROM pg_temp.r80_a",
        None,  # fixed (session 34)
    ),
    "renamed": (
        [
            "CREATE TEMP TABLE r80_n AS SELECT v FROM r80.pub",
            "ALTER TABLE pg_temp.r80_n RENAME TO r80_n2",
        ],
        "SELECT v FROM pg_temp.r80_n2",
        None,  # fixed (session 34)
    ),
    "chain-then-rollback": (
        [
            "BEGIN",
            "CREATE TEMP TABLE r80_c AS SELECT v FROM r80.pub",
            "COMMIT AND CHAIN",
            "ROLLBACK",
        ],
        "SELECT v FROM pg_temp.r80_c",
        None,  # fixed (session 34)
    ),
    "literal-if-not-exists": (
        [
            "CREATE TEMP TABLE r80_l AS SELECT v, 'if not exists' AS note FROM r80.pub",
        ],
        "SELECT v FROM pg_temp.r80_l",
        None,  # fixed (session 34)
    ),
    "error-after-savepoint": (
        [
            "BEGIN",
            "CREATE TEMP TABLE r80_s AS SELECT v FROM r80.pub",
            "SAVEPOINT b",
            "SELECT 1/0",
            "ROLLBACK TO SAVEPOINT b",
            "COMMIT",
        ],
        "SELECT v FROM pg_temp.r80_s",
        (
            "REFUSED: an error rolled back to a savepoint taken after the CREATE undoes "
            "nothing the CREATE made, but _temp_undone drops every claim of the transaction "
            "(documented as conservative in docs/policy.md)"
        ),
    ),
    "released-savepoint": (
        [
            "BEGIN",
            "SAVEPOINT a",
            "CREATE TEMP TABLE r80_r AS SELECT v FROM r80.pub",
            "RELEASE SAVEPOINT a",
            "COMMIT",
        ],
        "SELECT v FROM pg_temp.r80_r",
        None,
    ),
    "index": (
        [
            "CREATE TEMP TABLE r80_i (v text)",
            "CREATE INDEX ON pg_temp.r80_i (v)",
            "INSERT INTO pg_temp.r80_i SELECT v FROM r80.pub",
        ],
        "SELECT v FROM pg_temp.r80_i",
        None,
    ),
    "serial": (
        [
            "CREATE TEMP TABLE r80_q (id serial, v text)",
            "INSERT INTO pg_temp.r80_q (v) SELECT v FROM r80.pub",
        ],
        "SELECT v FROM pg_temp.r80_q",
        None,
    ),
    "comment-on": (
        [
            "CREATE TEMP TABLE r80_o AS SELECT v FROM r80.pub",
            "COMMENT ON TABLE pg_temp.r80_o IS 'mine'",
        ],
        "SELECT v FROM pg_temp.r80_o",
        None,
    ),
    "truncate-refill": (
        [
            "CREATE TEMP TABLE r80_t (v text)",
            "TRUNCATE pg_temp.r80_t",
            "INSERT INTO pg_temp.r80_t SELECT v FROM r80.pub",
        ],
        "SELECT v FROM pg_temp.r80_t",
        None,
    ),
}


def _own_cases():
    return [
        pytest.param(k, marks=[] if v[-1] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[-1]))
        for k, v in OWN.items()
    ]  # fmt: skip


@pytest.mark.parametrize("key", _own_cases())
def test_r80_own_temporary_relations(px, key):
    before, sql, _reason = OWN[key]
    outs = {}
    for mode in ["pipelined"] if before is None else MODES:
        if before is None:
            with _session(px, "exec") as c:
                got = planted.text(planted.pipelined(c, PIPELINE))
        else:
            got = _proxied(px, "exec", mode, before, sql)
        outs[mode] = (PUB in got and not planted.is_error(got), got[-250:])
    assert all(ok for ok, _ in outs.values()), ("REFUSED", key, outs)


LOCKS = [
    "TABLE pg_catalog.pg_locks",
    "SELECT objid FROM \"pg_locks\" WHERE locktype = 'advisory'",
    "SELECT objid FROM pg_catalog.pg_lock_status() WHERE locktype = 'advisory'",
    "SELECT l.objid FROM r80.pub, LATERAL pg_lock_status() l",
    "WITH l AS (SELECT * FROM PG_CATALOG.PG_LOCKS) SELECT objid FROM l",
    "COPY (SELECT objid FROM pg_locks) TO STDOUT",
    "SELECT (pg_lock_status()).objid",
]


def test_r80_locks(pg, px):
    """Held: another session's advisory key (the vault's ``NUM``) by every path to
    pg_locks and pg_lock_status() (42501 without a read:/execute: scope)."""
    with r.RawClient.direct(pg) as other:
        other.query("SELECT pg_advisory_lock(v::bigint) FROM r80x.vault WHERE k = 'num'")
        with r.RawClient.direct(pg) as d:
            for sql in LOCKS:
                assert NUM in planted.text(d.query(sql)), sql
        for sql in LOCKS:
            for mode in MODES:
                got = _proxied(px, "lock", mode, [], sql)
                assert NUM not in got and "42501" in got, (sql, mode, got[-300:])


def test_r80_notifications(pg, px):
    """Held, and transparency: a notification on the granted channel arrives, code's
    channel's (``r80.subscribe``) is withheld, also after UNLISTEN * and around a COPY."""
    with _session(px, "exec") as c:
        c.query("LISTEN r80_ok")
        c.query("SELECT r80.subscribe()")
        with r.RawClient.direct(pg) as other:
            other.query(f"NOTIFY r80_ok, '{PUB}'; NOTIFY r80_hidden, '{ROW}'")
        time.sleep(0.3)
        got = planted.text(c.query("SELECT 1"))
        c.query("UNLISTEN *")
        c.query("SELECT r80.subscribe()")
        with r.RawClient.direct(pg) as other:
            other.query(f"NOTIFY r80_hidden, '{ROW}'")
        time.sleep(0.3)
        got += planted.text(c.query("COPY r80.pub TO STDOUT"))
    assert PUB in got and ROW not in got
