"""Red-team round 79 (a fresh sweep; time-boxed; the server the judge).

Method: every family the brief listed was first checked against the earlier rounds'
docstrings and probes and ``policy/`` (the allowlists of ``catalogue.py``, ``decide.py``'s
catalog lists, ``metadata.py``'s pins), then sent by hand through a proxy over a planted
schema: simple Query, extended unnamed, named prepared statement, each in a session of its
own, every byte the proxy sent searched for the marker (``planted.shows``: text, bytea
hex, node-tree byte list), and each probe first run directly as ``pgwitness`` (the proxy's
upstream login and the schema's owner), where it must show its marker
(``RuntimeError`` otherwise: a probe that cannot leak proves nothing).

Grants (agent ``r79-bot``): ``base`` = ``read:r79.pub write:r79.pub``; ``wo`` =
``read:r79.pub write:r79.wo,r79.wo_ex`` (write, never read, on two tables); ``exec`` =
``read:r79.pub`` and ``execute:`` on the granted functions below (no read outside
``r79.pub``); ``writer`` = ``write:r79.wt,r79.tt`` (no read, no execute scope at all).

Planted (owner ``pgwitness``, before the proxy starts): ``r79x.vault (k, v)`` holding
``ROW`` and ``NUM`` (outside every grant); ``r79x.stat`` (400 rows of ``MCV``, ANALYZEd,
with an expression statistics object); ``r79.pub`` (``PUB``, readable); ``r79.wo`` (a
stored row ``WO``) and ``r79.wo_ex`` (``EXCLUDE USING gist (r WITH &&)``, a stored range
starting at ``NUM``), write-only. Code: ``r79.stage()`` (PL/pgSQL: ``CREATE TEMP TABLE IF
NOT EXISTS r79_stage (v text) ON COMMIT DROP``, fills it from the vault, returns the count:
the common "temp table for intermediate results" idiom), ``r79.stage_keep()`` (the same
without ON COMMIT DROP), ``r79.stage_sql()`` (SQL: ``CREATE TEMP TABLE ... AS SELECT v FROM
r79x.vault``), ``r79.mkview()`` (``CREATE TEMP VIEW r79_tv AS SELECT v FROM r79x.vault``),
``r79.tag()`` (``set_config('application_name', <the vault's ROW>, false)``: a session tag),
``r79.subscribe()`` (``LISTEN r79_chan``); triggers (the grant chose neither): AFTER INSERT
on ``r79.wt`` staging the vault into ``pg_temp.r79_tbuf``, AFTER INSERT on ``r79.tt``
setting ``application_name`` from the vault.

Families tried: the XML table readers (``query_to_xml``, ``*_and_xmlschema``,
``table_to_xml``, ``schema_to_xml``, ``database_to_xml``, ``cursor_to_xml``, ``xpath`` over
them), ``ts_stat`` / ``ts_rewrite`` with a query string, ``pg_stats`` /
``pg_stats_ext_exprs`` MCVs, whole-row renderings (``format('%s', t)``, ``t::text``,
``ROW(t.*)``), a secret number cast ``::regclass``, errors quoting a value (``DISTINCT
ON`` a cast, ``generate_series`` over a cast), ``INSERT ... SELECT`` / ``COPY (query)`` / ``MERGE`` /
``TABLESAMPLE`` / recursive CTE / window ``FILTER`` / ``LATERAL`` over the vault,
``RETURNING`` and ``ON CONFLICT DO UPDATE`` on a write-only table, an exclusion
constraint's DETAIL quoting a stored write-only row (all held: plain tests below); then
session state code leaves behind (temporary relations, settings reported by
ParameterStatus, LISTEN) and other sessions' state in the allowed catalogs (``pg_locks``).

Leaks (found as strict xfails asserting the safe outcome; every mode; each shown directly
first; all fixed, below):

1. **Temporary relations code made and filled are read as the session's own**
   (``default.temp``). ``SELECT r79.stage_keep()`` (``exec``, allowed: ``scope.execute``;
   it returns a count) then ``SELECT * FROM pg_temp.r79_keep`` (or ``TABLE``, ``COPY ... TO
   STDOUT``): the vault's rows ``ROW`` and ``NUM``. The same with ``ON COMMIT DROP`` inside a
   block (``r79.stage``), a SQL function's ``CREATE TEMP TABLE AS`` (``r79.stage_sql``), a
   temporary *view* code made over the vault (``r79.mkview``), and, for ``writer`` (no
   execute scope at all), the trigger of ``INSERT INTO r79.wt VALUES (1)`` staging the
   vault into ``pg_temp.r79_tbuf``: the session's errors are withheld from the write on
   (``writes_unreadable``: ``SELECT v::int FROM pg_temp.r79_tbuf`` gives a bare 22P02), but
   the rows are not. Cause: ``decide._relation_read`` returns None for every ``pg_temp``
   relation, and docs/policy.md's reason ("whatever fills it is still checked for what it
   reads") holds only for the client's own statements; code's ``CREATE TEMP TABLE`` /
   ``INSERT`` is never seen (the same family as the cursors and prepared statements code
   leaves, rounds 72-74, fixed there by asking whose the object is). Suggested fix:
   treat a temporary relation as the session's own only when the client's own DDL made it
   (``_temp_names`` already records the session's ``pg_temp.`` targets); where
   ``Snapshot.temp_code`` holds (CODE_FLAGS_SQL already flags sources naming ``temp``),
   refuse reads of any other ``pg_temp`` relation, or ask the server at read time
   (``pg_class`` in ``pg_my_temp_schema()`` minus what the client made).
2. **A setting code changed reaches the client as ParameterStatus, and SHOW reads it**.
   ``INSERT INTO r79.tt VALUES (1)`` (``writer``; the trigger runs
   ``set_config('application_name', <ROW>, false)``): the server's ParameterStatus
   ``application_name = R79-ROW-...`` is relayed with the INSERT's answer (errors and
   notices are withheld in this session from the write on, ParameterStatus is not), and
   ``SHOW application_name`` / ``current_setting('application_name')`` return it (an
   allowed setting). The same after the granted ``SELECT r79.tag()``. Cause: the relay
   forwards every ParameterStatus (``proxy/relay.py``; only the login's
   application_name is rewritten, ``proxy/appname.py``), and ``decide``'s allowed settings
   are read without asking who set them. Suggested fix: once a session's statement may run
   code the grant did not choose (``writes_unreadable``, a granted function), replace a
   reported ``application_name`` the client did not set with the client's own value (as the
   login answer already is) and answer ``SHOW``/``current_setting`` of it from the relay's
   copy, or withhold ParameterStatus values other than the ones the client set.
3. **Other sessions' advisory lock keys in ``pg_locks``** (``base``; ``pg_locks`` is in
   ``ALLOWED_CATALOGS``). Another session of the upstream login (the application) runs
   ``SELECT pg_advisory_lock(v::bigint) FROM r79x.vault WHERE k = 'num'`` (a job queue's
   lock on a job id, the Que idiom); ``SELECT classid, objid FROM pg_locks WHERE locktype
   = 'advisory'`` shows ``NUM`` (``objid``; ``classid`` the high half), in every mode. Round
   10 read ``pg_locks`` only for statement text. Cause: ``decide.ALLOWED_CATALOGS`` holds
   ``pg_locks`` whole. Suggested fix: make ``classid``/``objid``/``objsubid`` of advisory
   rows (or the view's rows of other backends) a sensitive read, or deny ``pg_locks`` by
   default as ``pg_stat_activity`` is (a grant may name it).
4. **Notifications of a channel the grant may not LISTEN on** (``exec``). ``SELECT
   r79.subscribe()`` (allowed: its body's ``LISTEN r79_chan`` is never read), then another
   session's ``pg_notify('r79_chan', <ROW>)``: the NotificationResponse carrying ``ROW``
   reaches the client with its next answer. The policy checks the client's own LISTEN
   (``decide._listen``: "notifications carry other sessions' data; a listen: scope must
   name the channel"), the relay never looks at the channel of a NotificationResponse.
   Suggested fix: the relay drops (or ends the session at) a NotificationResponse whose
   channel the grant's ``listen:`` scopes do not allow.

**All four fixed the same session (session 34; the probes are plain tests now):**
1. ``StatementPolicy._temp_of_code``: where code may make temporary relations, a read or a
   row write of one the session's own statements did not make is refused (``deny.temp``),
   and so is a read of a name no relation has outside ``pg_temp`` (an unqualified name the
   server finds there: the ``temp-unqualified-wildcard`` probe, a ``read:public.*`` grant).
   A temporary table the client made stays its own, whatever fills it (the documented
   residue of code: ``test_r79_own_temporary_table_code_fills_is_read``).
2. ``engine._setting_of_code``: where code may set settings (``encoding_code``), reads of
   settings whose value can carry text or a number are refused (SHOW, ``current_setting``,
   a parameter's name at Bind, ``pg_settings``, ``pg_show_all_settings()``); the relay
   withholds ParameterStatus of ``application_name`` and ``TimeZone`` there.
3. ``pg_locks`` left ``ALLOWED_CATALOGS`` (and ``pg_lock_status()`` is a catalog-state
   function): a ``read:pg_catalog.pg_locks`` scope names it, as for ``pg_stat_activity``.
4. The relay withholds a NotificationResponse on a channel no ``listen:`` scope names
   (``StatementPolicy.may_hear``; a ``notification.withheld`` event, never the payload).

Held (plain tests): every family in "Families tried" before the leaks, refused with 42501
and no marker in any byte, the exclusion DETAIL withheld for the write-only grant (22P02
/ 23P01 with the message withheld); transparency: a temporary table the client itself
fills from a granted table is read in every mode.

Not reached (time): deadlock DETAIL naming an advisory key (the agent cannot take
advisory locks: ``pg_advisory*`` is dangerous), ``pg_prepared_xacts.gid`` of other
sessions (not a relation's value unless an application builds gids from one),
temporary sequences code advances (``currval('pg_temp.s')``), other reported settings
(``DateStyle``, ``TimeZone``, ``IntervalStyle``: only valid values), LISTEN from a trigger.
"""

from __future__ import annotations

import time

import pytest

from tests.support import planted
from tests.support import rawpg as r

pytestmark = pytest.mark.timeout(180)

AGENT = "r79-bot"
ROW = "R79-ROW-c3a1"  # r79x.vault, outside every grant
NUM = "791234567"  # r79x.vault too (an advisory lock key, a range bound)
MCV = "R79-MCV-c3a2"  # r79x.stat, a most common value
WO = "R79-WO-c3a3"  # r79.wo's stored row (write-only)
PUB = "R79-PUB-ok"  # r79.pub (readable)
MARKERS = (ROW, NUM, MCV, WO)
SCOPES = "read:r79.pub write:r79.pub"
CODE = "r79.stage,r79.stage_keep,r79.stage_sql,r79.tag,r79.mkview,r79.subscribe"
GRANTS = {
    "wo": "read:r79.pub write:r79.wo,r79.wo_ex",
    "exec": f"read:r79.pub execute:{CODE}",
    "writer": "write:r79.wt,r79.tt",
    # a wildcard read of the search path's schema: an unqualified name of no relation there
    # is what the server finds in pg_temp (pinned last)
    "wild": f"read:public.*,r79.pub execute:{CODE}",
}
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r79; CREATE SCHEMA r79x;
CREATE TABLE r79x.vault (k text PRIMARY KEY, v text);
INSERT INTO r79x.vault VALUES ('row', '{ROW}'), ('num', '{NUM}');
CREATE TABLE r79x.stat (v text);
INSERT INTO r79x.stat SELECT '{MCV}' FROM generate_series(1, 400);
INSERT INTO r79x.stat SELECT 'x' || g FROM generate_series(1, 600) g;
CREATE STATISTICS r79x.st_expr ON (lower(v)), (v || 'z') FROM r79x.stat;
ANALYZE r79x.stat;
CREATE TABLE r79.pub (id int PRIMARY KEY, v text);
INSERT INTO r79.pub VALUES (1, '{PUB}');
CREATE TABLE r79.wo (id int PRIMARY KEY, v text, n text);
INSERT INTO r79.wo VALUES (1, '{WO}', '7');
CREATE TABLE r79.wo_ex (id int, r int4range, EXCLUDE USING gist (r WITH &&));
INSERT INTO r79.wo_ex VALUES (1, int4range({NUM}, {NUM} + 1));
CREATE FUNCTION r79.stage() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS r79_stage (v text) ON COMMIT DROP;
  INSERT INTO r79_stage SELECT v FROM r79x.vault;
  RETURN (SELECT count(*) FROM r79_stage);
END $$;
CREATE FUNCTION r79.stage_keep() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS r79_keep (v text);
  INSERT INTO r79_keep SELECT v FROM r79x.vault;
  RETURN (SELECT count(*) FROM r79_keep);
END $$;
CREATE FUNCTION r79.stage_sql() RETURNS bigint LANGUAGE sql AS $$
  CREATE TEMP TABLE IF NOT EXISTS r79_sqlst AS SELECT v FROM r79x.vault;
  SELECT count(*) FROM r79x.vault;
$$;
CREATE FUNCTION r79.mkview() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  CREATE OR REPLACE TEMP VIEW r79_tv AS SELECT v FROM r79x.vault;
  RETURN 1;
END $$;
CREATE FUNCTION r79.tag() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('application_name', (SELECT v FROM r79x.vault WHERE k = 'row'), false);
  RETURN 1;
END $$;
CREATE FUNCTION r79.subscribe() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  LISTEN r79_chan;
  RETURN 1;
END $$;
CREATE TABLE r79.wt (id int);
CREATE FUNCTION r79x.wt_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS r79_tbuf (v text);
  INSERT INTO r79_tbuf SELECT v FROM r79x.vault;
  RETURN NULL;
END $$;
CREATE TRIGGER wt_audit AFTER INSERT ON r79.wt FOR EACH ROW EXECUTE FUNCTION r79x.wt_audit();
CREATE TABLE r79.tt (id int);
CREATE FUNCTION r79x.tt_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('application_name', (SELECT v FROM r79x.vault WHERE k = 'row'), false);
  RETURN NULL;
END $$;
CREATE TRIGGER tt_tag AFTER INSERT ON r79.tt FOR EACH ROW EXECUTE FUNCTION r79x.tt_tag();
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r79, r79x CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r79", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


def _shown(text: str) -> list[str]:
    return [mk for mk in MARKERS if planted.shows(text, mk)]


def _direct(pg, before: list[str], sql: str) -> str:
    """``before`` then ``sql`` directly as ``pgwitness``, in a block rolled back: every
    byte received."""
    with r.RawClient.direct(pg) as c:
        c.query("BEGIN")
        got = [f for s in before if s != "BEGIN" for f in c.query(s)] + c.query(sql)
        c.query("ROLLBACK")
    return planted.text(got)


def _proxied(px, key: str, mode: str, before: list[str], sql: str) -> str:
    """``before`` (simple Query), then ``sql`` in ``mode``, in one session of grant
    ``key``: every byte received (the session must answer a query after)."""
    with planted.session(px, px.tokens[key]) as c:
        got = "".join(planted.run_mode(c, "simple", s) for s in before)
        got += planted.run_mode(c, mode, sql)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def _reaches(pg, before: list[str], sql: str) -> None:
    got = _direct(pg, before, sql)
    if not _shown(got):
        raise RuntimeError(("precondition: no marker directly", sql, got[-400:]))


# --- leaks 1 and 2: session state code leaves behind --------------------------------------

# fixed (session 34: ``StatementPolicy._temp_of_code``): a temporary relation code made and
# filled from r79x.vault (a granted function's or a trigger's CREATE TEMP TABLE / TEMP VIEW)
# was read as the session's own (decide._relation_read allows every pg_temp relation,
# default.temp; the policy never sees code's CREATE/INSERT). Plain tests now.
STATE_REASON = None
# fixed (session 34): code (a trigger of the written table, a granted function) set
# application_name to a vault value; the relay forwarded the server's ParameterStatus and
# SHOW/current_setting of an allowed setting read it back. Where code may set settings
# (``encoding_code``) the relay withholds reports of application_name and TimeZone and the
# policy refuses reads of settings whose value can carry text or a number
# (``engine._setting_of_code``). Plain tests now.
TAG_REASON = None
# (grant, statements before, the probe, the reason of its strict xfail)
LEAKS = {
    "temp-plpgsql": (
        "exec",
        ["SELECT r79.stage_keep()"],
        "SELECT * FROM pg_temp.r79_keep",
        STATE_REASON,
    ),
    "temp-table-stmt": (
        "exec",
        ["SELECT r79.stage_keep()"],
        "TABLE pg_temp.r79_keep",
        STATE_REASON,
    ),
    "temp-copy": (
        "exec",
        ["SELECT r79.stage_keep()"],
        "COPY pg_temp.r79_keep TO STDOUT",
        STATE_REASON,
    ),
    "temp-on-commit-drop": (
        "exec",
        ["BEGIN", "SELECT r79.stage()"],
        "SELECT * FROM pg_temp.r79_stage",
        STATE_REASON,
    ),
    "temp-sql-function": (
        "exec",
        ["SELECT r79.stage_sql()"],
        "SELECT * FROM pg_temp.r79_sqlst",
        STATE_REASON,
    ),
    "temp-view": ("exec", ["SELECT r79.mkview()"], "SELECT * FROM pg_temp.r79_tv", STATE_REASON),
    "temp-trigger": (
        "writer",
        ["INSERT INTO r79.wt VALUES (1)"],
        "SELECT * FROM pg_temp.r79_tbuf",
        STATE_REASON,
    ),
    "temp-unqualified-wildcard": (
        "wild",
        ["SELECT r79.stage_keep()"],
        "SELECT * FROM r79_keep",
        STATE_REASON,
    ),
    "tag-trigger-status": ("writer", [], "INSERT INTO r79.tt VALUES (1)", TAG_REASON),
    "tag-trigger-show": (
        "writer",
        ["INSERT INTO r79.tt VALUES (1)"],
        "SHOW application_name",
        TAG_REASON,
    ),
    "tag-trigger-setting": (
        "writer",
        ["INSERT INTO r79.tt VALUES (1)"],
        "SELECT current_setting('application_name')",
        TAG_REASON,
    ),
    "tag-function": ("exec", [], "SELECT r79.tag()", TAG_REASON),
    "tag-pg-settings": (
        "exec",
        ["SELECT r79.tag()"],
        "SELECT setting FROM pg_settings WHERE name = 'application_name'",
        TAG_REASON,
    ),
    "tag-all-settings": (
        "exec",
        ["SELECT r79.tag()"],
        "SELECT setting FROM pg_show_all_settings() WHERE name = 'application_name'",
        TAG_REASON,
    ),
}


def _leak_cases():
    return [
        pytest.param(k, mode, id=f"{k}-{mode}", marks=[] if v[3] is None else pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=v[3]))
        for k, v in LEAKS.items()
        for mode in MODES
    ]  # fmt: skip


@pytest.mark.parametrize("key", list(LEAKS))
def test_r79_leak_reaches_directly(pg, px, key):
    grant, before, sql, _reason = LEAKS[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize(("key", "mode"), _leak_cases())
def test_r79_session_state_of_code(px, key, mode):
    grant, before, sql, _reason = LEAKS[key]
    got = _proxied(px, grant, mode, before, sql)
    assert not _shown(got), ("LEAK", key, mode, got[-500:])


def test_r79_trigger_errors_withheld_meanwhile(px):
    """In the trigger's session the temporary table the trigger made is not the session's:
    a read of it (a cast whose error would quote a value) is refused (``deny.temp``), and
    the session's errors are withheld from the write on (``writes_unreadable``)."""
    for mode in MODES:
        got = _proxied(px, "writer", mode, ["INSERT INTO r79.wt VALUES (1)"],
                       "SELECT v::int FROM pg_temp.r79_tbuf")  # fmt: skip
        assert "42501" in got and "deny.temp" in got and not _shown(got), (mode, got[-400:])


@pytest.mark.parametrize("mode", MODES)
def test_r79_own_temporary_table_code_fills_is_read(px, mode):
    """Transparency, and the documented residue: a temporary table the client made is the
    session's own, whatever then writes into it (code the grant runs, as a trigger of a
    granted table writes where it likes: docs/policy.md, "Only what a statement names is
    checked"). The client reads what the function staged into it."""
    got = _proxied(px, "exec", mode, [
        "CREATE TEMP TABLE r79_keep (v text)", "SELECT r79.stage_keep()",
    ], "SELECT count(*) FROM pg_temp.r79_keep")  # fmt: skip
    assert "42501" not in got and "2" in got, got[-300:]


@pytest.mark.parametrize("mode", MODES)
def test_r79_own_temporary_table_is_read(px, mode):
    """Transparency: a temporary table the client made and filled from a granted table."""
    got = _proxied(
        px,
        "base",
        mode,
        ["CREATE TEMP TABLE r79_mine AS SELECT * FROM r79.pub"],
        "SELECT v FROM pg_temp.r79_mine",
    )
    assert PUB in got and not planted.is_error(got), got[-400:]


OWN_TEMP_USES = {
    # one text: made, filled and read (the later statements decided on what the first made)
    "one-query": (
        ["CREATE TEMP TABLE r79_one (v text); INSERT INTO pg_temp.r79_one SELECT v FROM r79.pub"],
        "SELECT v FROM pg_temp.r79_one",
    ),
    "written-later": (
        [
            "CREATE TEMP TABLE r79_w (v text)",
            "INSERT INTO pg_temp.r79_w SELECT v FROM r79.pub",
            "UPDATE pg_temp.r79_w SET v = v || ''",
        ],
        "SELECT v FROM pg_temp.r79_w",
    ),
    "select-into": (["SELECT v INTO TEMP r79_si FROM r79.pub"], "TABLE pg_temp.r79_si"),
    "view": (["CREATE TEMP VIEW r79_ov AS SELECT v FROM r79.pub"], "SELECT v FROM pg_temp.r79_ov"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use", list(OWN_TEMP_USES))
def test_r79_own_temporary_relations_are_the_sessions(px, use, mode):
    """Transparency where code may make temporary relations: what the client's own
    statements made is read and written as before."""
    before, sql = OWN_TEMP_USES[use]
    got = _proxied(px, "base", mode, before, sql)
    assert PUB in got and not planted.is_error(got), got[-400:]


@pytest.mark.parametrize("mode", MODES)
def test_r79_settings_code_cannot_carry_are_read(px, mode):
    """Transparency where code may set settings: a setting of a few choices or fixed by the
    server is read as before (drivers ask for the isolation level, the server's version),
    and the client's own SET of application_name goes through (its report is withheld)."""
    for sql, want in (("SHOW transaction_isolation", "read committed"),
                      ("SELECT current_setting('server_version_num')", "15"),
                      ("SHOW standard_conforming_strings", "on")):  # fmt: skip
        got = _proxied(px, "exec", mode, ["SET application_name = 'mine'"], sql)
        assert want in got and not planted.is_error(got), (sql, got[-300:])
    got = _proxied(px, "exec", mode, ["SELECT r79.tag()"], "SHOW application_name")
    assert "42501" in got and "deny.setting_read" in got and not _shown(got), got[-300:]


def test_r79_a_setting_a_parameter_names_after_code_set_it(px):
    """``current_setting($1)`` (a driver binding server-side) is decided at each Bind on the
    name bound, as the literal is: refused for application_name where code may set it."""
    with planted.session(px, px.tokens["exec"]) as c:
        c.query("SELECT r79.tag()")
        c.send(r.parse("", "SELECT current_setting($1)"),
               r.bind(params=[b"application_name"]), r.execute(), r.frame(b"S", b""))  # fmt: skip
        got = b"".join(c.until_ready())
    text = got.decode("utf-8", "replace")
    assert b"42501" in got and "deny.setting_read" in text and not _shown(text), text[-300:]
    with planted.session(px, px.tokens["exec"]) as c:  # one code cannot make carry a value
        c.query("SELECT r79.tag()")
        c.send(r.parse("", "SELECT current_setting($1)"),
               r.bind(params=[b"transaction_isolation"]), r.execute(), r.frame(b"S", b""))  # fmt: skip
        got = b"".join(c.until_ready())
    assert b"read committed" in got and b"42501" not in got, got[-300:]


CLAIMS = {
    # the name code's table has, claimed by a CREATE of the client's that fails (42P07) or
    # does nothing (IF NOT EXISTS: a notice): the server still holds the code's table
    "failed-create": ["CREATE TEMP TABLE r79_keep (v text)"],
    "if-not-exists": ["CREATE TEMP TABLE IF NOT EXISTS r79_keep (v text)"],
    "failed-in-block": ["BEGIN", "CREATE TEMP TABLE r79_keep (v text)", "ROLLBACK"],
    "select-into": ["SELECT 'x' AS v INTO TEMP r79_keep"],
}
# the client's own table of the name, ended before code made its own: rolled back, dropped,
# renamed away, discarded, dropped at its commit; then code's under the name
GONE = {
    "rolled-back": ["BEGIN", "CREATE TEMP TABLE r79_keep (v text)", "ROLLBACK"],
    "to-savepoint": [
        "BEGIN",
        "SAVEPOINT a",
        "CREATE TEMP TABLE r79_keep (v text)",
        "ROLLBACK TO SAVEPOINT a",
        "COMMIT",
    ],
    "dropped": ["CREATE TEMP TABLE r79_keep (v text)", "DROP TABLE pg_temp.r79_keep"],
    "renamed": [
        "CREATE TEMP TABLE r79_keep (v text)",
        "ALTER TABLE pg_temp.r79_keep RENAME TO r79_other",
    ],
    "discarded": ["CREATE TEMP TABLE r79_keep (v text)", "DISCARD TEMP"],
    "on-commit-drop": ["BEGIN", "CREATE TEMP TABLE r79_keep (v text) ON COMMIT DROP", "COMMIT"],
    "aborted-block": ["BEGIN", "CREATE TEMP TABLE r79_keep (v text)", "SELECT 1/0", "COMMIT"],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("claim", list(CLAIMS))
def test_r79_a_create_that_made_nothing_does_not_claim_codes_table(px, claim, mode):
    """A temporary relation is the session's own once its client's statement made it: not
    when the CREATE failed, was rolled back, or did nothing (IF NOT EXISTS)."""
    got = _proxied(px, "exec", mode, ["SELECT r79.stage_keep()", *CLAIMS[claim]],
                   "SELECT * FROM pg_temp.r79_keep")  # fmt: skip
    assert not _shown(got), (claim, got[-300:])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gone", list(GONE))
def test_r79_the_clients_table_gone_code_makes_one_of_its_name(px, gone, mode):
    """The client's own temporary table ended (rolled back, dropped, renamed, discarded,
    dropped at commit, its block aborted): code's table of its name later is not the
    client's."""
    got = _proxied(px, "exec", mode, [*GONE[gone], "SELECT r79.stage_keep()"],
                   "SELECT * FROM pg_temp.r79_keep")  # fmt: skip
    assert not _shown(got), (gone, got[-300:])


@pytest.mark.parametrize("mode", MODES)
def test_r79_a_temporary_table_code_made_is_not_written(px, mode):
    """Nor is one code made written: its rows are the code's (a constraint's error would
    quote them; what the code does with them next is its own)."""
    for sql in ("INSERT INTO pg_temp.r79_keep VALUES ('x')", "DELETE FROM pg_temp.r79_keep",
                "TRUNCATE pg_temp.r79_keep"):  # fmt: skip
        got = _proxied(px, "exec", mode, ["SELECT r79.stage_keep()"], sql)
        assert "42501" in got and "deny.temp" in got and not _shown(got), (sql, got[-300:])


# --- leak 3: other sessions' advisory lock keys -------------------------------------------

LOCK_SQL = "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory'"
LOCK_REASON = (
    "LEAK: pg_locks (decide.ALLOWED_CATALOGS, whole) shows another session's advisory lock "
    "key, here a value of r79x.vault (pg_advisory_lock(v::bigint): a job queue's lock on a "
    "job id); round 10 read pg_locks for statement text only"
)


@pytest.fixture
def other_locks(pg):
    """Another session of the upstream login (the application) holding an advisory lock
    keyed by the vault's ``NUM``; directly, ``pgwitness`` sees the key in ``pg_locks``."""
    with r.RawClient.direct(pg) as other:
        held = planted.text(other.query(
            "SELECT pg_advisory_lock(v::bigint) FROM r79x.vault WHERE k = 'num'"))  # fmt: skip
        assert not planted.is_error(held), held[-300:]
        with r.RawClient.direct(pg) as looker:
            seen = planted.text(looker.query(LOCK_SQL))
        if NUM not in seen:
            raise RuntimeError(("precondition: the key is not in pg_locks directly", seen[-300:]))
        yield


@pytest.mark.parametrize("mode", MODES)
def test_r79_advisory_lock_keys(px, other_locks, mode):
    got = _proxied(px, "base", mode, [], LOCK_SQL)
    assert NUM not in got, ("LEAK", mode, got[-400:])


# --- leak 4: notifications of a channel no scope names ------------------------------------

NOTIFY_REASON = (
    "LEAK: code's LISTEN (a granted function's body, never read) subscribes the session to "
    "a channel no listen: scope names; the relay forwards every NotificationResponse "
    "without looking at its channel (decide._listen checks the client's own LISTEN only)"
)


def _notified(c, pg, mode: str) -> str:
    """``SELECT r79.subscribe()`` in ``mode`` on ``c``; another session notifies
    ``r79_chan`` with the vault's ``ROW``; every byte ``c`` received until its next
    answer."""
    got = planted.run_mode(c, mode, "SELECT r79.subscribe()")
    assert "C42501" not in got, got[-300:]
    with r.RawClient.direct(pg) as other:
        sent = planted.text(other.query(
            "SELECT pg_notify('r79_chan', v) FROM r79x.vault WHERE k = 'row'"))  # fmt: skip
        assert not planted.is_error(sent), sent[-300:]
    time.sleep(0.3)
    return got + planted.text(c.query("SELECT 1"))


def test_r79_notification_reaches_directly(pg, px):
    with r.RawClient.direct(pg) as c:
        got = _notified(c, pg, "simple")
    if ROW not in got:
        raise RuntimeError(("precondition: no notification directly", got[-300:]))


@pytest.mark.parametrize("mode", MODES)
def test_r79_notification_of_code_listen(pg, px, mode):
    with planted.session(px, px.tokens["exec"]) as c:
        got = _notified(c, pg, mode)
    assert ROW not in got, ("LEAK", mode, got[-400:])


def test_r79_client_listen_refused(px):
    """Held: the client's own LISTEN of the channel needs a listen: scope."""
    for mode in ("simple", "extended"):
        got = _proxied(px, "exec", mode, [], "LISTEN r79_chan")
        assert "42501" in got and "deny.listen" in got, (mode, got[-300:])


# --- held: the brief's families, each shown to reach its marker directly -------------------

XML_Q = "'SELECT v FROM r79x.vault'"
HELD = {
    "query-to-xml": ("base", [], f"SELECT query_to_xml({XML_Q}, true, true, '')"),
    "query-to-xml-schema": (
        "base",
        [],
        f"SELECT pg_catalog.query_to_xml_and_xmlschema({XML_Q}, true, true, '')",
    ),
    "table-to-xml": ("base", [], "SELECT table_to_xml('r79x.vault', true, true, '')"),
    "schema-to-xml": ("base", [], "SELECT schema_to_xml('r79x', true, true, '')"),
    "database-to-xml": ("base", [], "SELECT database_to_xml(true, true, '')"),
    "cursor-to-xml": (
        "base",
        ["BEGIN", "DECLARE r79c CURSOR FOR SELECT v FROM r79x.vault"],
        "SELECT cursor_to_xml('r79c', 10, true, true, '')",
    ),
    "xpath-over-xml": (
        "base",
        [],
        f"SELECT xpath('//v/text()', query_to_xml({XML_Q}, true, false, ''))",
    ),
    "ts-stat": ("base", [], "SELECT ts_stat('SELECT to_tsvector(v) FROM r79x.vault')"),
    "ts-rewrite": (
        "base",
        [],
        "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, to_tsquery(v) FROM r79x.vault WHERE k = ''num''')",
    ),
    "pg-stats-mcv": ("base", [], "SELECT most_common_vals FROM pg_stats WHERE tablename = 'stat'"),
    "pg-stats-ext-exprs": ("base", [], "SELECT most_common_vals FROM pg_stats_ext_exprs"),
    "format-row": ("base", [], "SELECT format('%s', t) FROM r79x.vault t"),
    "row-text": ("base", [], "SELECT t::text, ROW(t.*) FROM r79x.vault t"),
    "regclass-cast": ("base", [], "SELECT v::regclass FROM r79x.vault WHERE k = 'num'"),
    "distinct-on-error": ("base", [], "SELECT DISTINCT ON (v::int) v FROM r79x.vault"),
    "generate-series-error": (
        "base",
        [],
        "SELECT generate_series(1, v::int) FROM r79x.vault WHERE k = 'row'",
    ),
    "insert-select": (
        "base",
        [],
        "INSERT INTO r79.pub SELECT 2, v FROM r79x.vault WHERE k = 'row' RETURNING v",
    ),
    "copy-query": ("base", [], "COPY (SELECT v FROM r79x.vault) TO STDOUT"),
    "merge": (
        "base",
        [],
        "MERGE INTO r79.pub p USING r79x.vault s ON p.v = s.v "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.v::int, s.v)",
    ),
    "tablesample": ("base", [], "SELECT v FROM r79x.vault TABLESAMPLE SYSTEM (100)"),
    "recursive-cte": (
        "base",
        [],
        "WITH RECURSIVE q(x) AS (SELECT v FROM r79x.vault "
        "UNION SELECT x FROM q WHERE false) SELECT x FROM q",
    ),
    "window-filter": (
        "base",
        [],
        "SELECT string_agg(v, ',') FILTER (WHERE v <> '') OVER () FROM r79x.vault",
    ),
    "lateral": (
        "base",
        [],
        "SELECT x.v FROM r79.pub p, LATERAL (SELECT v FROM r79x.vault WHERE k = 'row') x",
    ),
    "wo-returning": ("wo", [], "UPDATE r79.wo SET n = 'y' RETURNING v"),
    "wo-upsert-returning": (
        "wo",
        [],
        "INSERT INTO r79.wo VALUES (1, 'x', 'y') "
        "ON CONFLICT (id) DO UPDATE SET n = 'z' RETURNING v",
    ),
}


@pytest.mark.parametrize("key", list(HELD))
def test_r79_held_reach_directly(pg, px, key):
    _grant, before, sql = HELD[key]
    _reaches(pg, before, sql)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", list(HELD))
def test_r79_held_refused(px, key, mode):
    grant, before, sql = HELD[key]
    got = _proxied(px, grant, mode, before, sql)
    assert "42501" in got and "pgwitness: task" in got, (key, mode, got[-400:])
    assert not _shown(got), ("LEAK", key, mode, got[-400:])


EXCL = "INSERT INTO r79.wo_ex VALUES (2, int4range(791234500, 791234600))"


def test_r79_exclusion_detail_reaches_directly(pg, px):
    got = _direct(pg, [], EXCL)
    if "23P01" not in got or NUM not in got:
        raise RuntimeError(("precondition: no stored key in the DETAIL", got[-400:]))


@pytest.mark.parametrize("mode", MODES)
def test_r79_exclusion_detail_withheld(px, mode):
    """Held: the write-only grant's conflicting INSERT keeps its SQLSTATE, not the stored
    key the DETAIL quotes (``writes_unreadable``)."""
    got = _proxied(px, "wo", mode, [], EXCL)
    assert "23P01" in got and NUM not in got, (mode, got[-400:])
