"""Red-team round 90: session 38's temporary-name rule (``StatementPolicy._temp_of_code``),
attacked with a secret granted code copies into a temporary table, the server the judge.

Method (rounds 83-89): each probe first runs directly as ``pgwitness`` (the proxy's
upstream login), where it must show the marker (``RuntimeError`` otherwise: a probe that
cannot leak proves nothing); then through a proxy started after the planting, on a fresh
upstream backend and catalog loader (``planted.renew``), as a simple Query, an extended
unnamed statement and a named prepared statement (``planted.run_mode``), after its set-up
statements (simple Queries) in the same session. Every probe that drops, renames or
creates a relation gets a name of its own per run (``_fresh``), planted as ``pgwitness``
before the proxy's session starts. Leaks are strict xfails asserting the safe outcome (no
marker); held families are plain tests.

Planted: ``r90x.vault`` (``SECRET``, outside every grant); granted PL/pgSQL functions that
copy it into a temporary table: ``r90.r90_stage()`` (``CREATE TEMP TABLE r90_copy AS
SELECT v FROM r90x.vault``), ``r90.r90_stage_as(n)`` (the same by ``EXECUTE``, named
``n``), ``r90.r90_swap(n)`` (``DROP TABLE public.<n>``, then the same copy named ``n``);
``r90.r90_view()`` (a temporary view ``r90_vw`` over the vault); ``r90.r90_count()``
(what code's ``r90_copy`` holds, ``rows=<n>/<copies of the row>``: the judge of a write).
So ``Snapshot.temp_code`` holds, and ``SELECT v::int FROM <name>`` directly quotes the row (22P02). The grant:
``read: write: ddl:`` of ``public.*``, ``read: ddl:`` of ``r90.*``, ``execute:`` of the
five functions. The session's path is the pinned ``public, pg_temp``.

Leaks (strict xfails; each in every mode unless said):

1. **A name the snapshot knows on the path, taken off it by the session's own DDL**
   (``removed``). After ``SELECT r90.r90_stage_as('t')`` (code's ``pg_temp.t`` holds the
   row) and a public ``t`` the snapshot knows, ``DROP TABLE public.t`` (or ``DROP VIEW``,
   ``DROP ... CASCADE``, ``ALTER TABLE public.t RENAME TO t_b``, ``ALTER TABLE public.t SET
   SCHEMA r90``), then ``SELECT v::int FROM t`` answers ``invalid input syntax for type
   integer: "<SECRET>"``: the server, finding no ``public.t`` any more, finds code's
   ``pg_temp.t``. In autocommit, in a block, in one simple Query (``DROP ...; SELECT ...``)
   and pipelined (Parse/Bind/Execute of both, one Sync). Also when the public ``t`` is one
   the session made itself since the load (``CREATE TABLE public.t`` ... ``DROP``).
   Cause: ``StatementPolicy._temp_of_code`` lets an unqualified read through when ``rel in
   columns`` (the snapshot loaded before the DDL) or ``rel in self._made_relations``, and
   ``_on_the_path`` (``_maybe_temporary``) the same; nothing records that the session
   dropped, renamed or moved the relation since the load (``_ran_ddl`` records only what a
   CREATE made; a rename reaches ``Snapshot.unsettled`` through ``_removed_columns``, which
   ``_temp_of_code`` never asks; a DROP reaches nothing), and session 38's wait for a load
   (``_after_a_load``) is taken only where the name is nowhere: a stale snapshot that still
   shows the name decides at once. In a block no load could help (the DROP is not
   committed: another login still sees ``public.t``).

2. **Code's DDL takes the name off the path** (``swap``). ``SELECT r90.r90_swap('t')``
   drops ``public.t`` and copies the vault into ``pg_temp.t``; the next ``SELECT v::int
   FROM t`` quotes the row. Cause: the same test in ``_temp_of_code`` (``rel in columns``)
   on the snapshot loaded before code's DROP: the policy cannot see which relations code
   dropped, and nothing makes a name the snapshot knows wait for a load after a call of
   code that may run DDL (only a name nowhere waits, ``_after_a_load``).

3. **A CREATE that never happened counts as made** (``phantom``). After the staging call
   (code's ``pg_temp.t``; no public ``t``), ``CREATE TABLE public.t (v text, v text)``
   (fails, 42701), ``CREATE TABLE public.t AS SELECT (1/0)::text AS v`` (fails at run
   time), ``CREATE VIEW public.t AS SELECT 1/0 AS v, 1 AS v`` (fails), or ``BEGIN; CREATE
   TABLE public.t (v text); ROLLBACK``; then ``SELECT v::int FROM t`` quotes the row. Cause:
   ``StatementPolicy._ran_ddl`` adds a CREATE's target to ``_made_relations`` when the
   statement is sent, before the server answers, and nothing ever takes it out again (the
   set is only ever added to: not on the error, the ROLLBACK, nor the load after either):
   ``_temp_of_code`` and ``_on_the_path`` take the name as on the path for the rest of
   the session.

4. **A row write of a name nowhere on the path reaches code's table** (``nowhere-write``).
   After ``SELECT r90.r90_stage()``, ``INSERT INTO r90_copy VALUES ('x')``, ``DELETE FROM
   r90_copy``, ``UPDATE r90_copy SET v = 'y'`` are allowed (``write:public.*``) and change
   code's ``pg_temp.r90_copy`` (``r90.r90_count()``: ``rows=1/1`` becomes ``2/1``,
   ``0/0``, ``1/0``), and the command tag (``DELETE 1``) counts code's rows; a read of the
   same name is refused (42P01) and ``INSERT INTO pg_temp.r90_copy`` is refused
   (``deny.temp``: "a row written there reaches what the code does with the table
   next"). Cause: ``StatementPolicy._temp_of_code`` checks row writes only where the name
   is spelled ``pg_temp.*`` (``rel.startswith(_TEMP_PREFIX)``); session 38's nowhere rule
   loops over ``c.reads`` only, and a write with no column read (no WHERE, no RETURNING)
   has none (``TRUNCATE`` is held by its own scope). Fix: run the same "nowhere on the
   path" test over the relations of ``c.write_ops`` (insert, update, delete, merge, copy
   from) with the same 42P01 refusal and stale-snapshot wait.

5. **Another session takes the name off the path while the read waits** (``cross``). A
   second session of the grant (or any login: a migration) runs ``BEGIN; DROP TABLE
   public.t``; this session stages code's ``pg_temp.t`` and sends ``SELECT v FROM t``:
   allowed (the snapshot shows ``public.t``; nothing shows the other block's DROP), it
   waits on the server for the block's lock, and when the block commits PostgreSQL looks
   the name up again (``RangeVarGetRelidExtended`` retries after invalidation) and finds
   code's ``pg_temp.t``: the vault row comes back as a DataRow, in every mode. The relay's
   withholding of messages while another session's DDL is open
   (``withhold_message``: "a schema change (DDL) in another session ... was open") hides
   the ``v::int`` spelling's error, not rows. Cause: the policy decides an unqualified
   name on the snapshot, and the name's resolution at run time can change under it; no
   rule of ``_temp_of_code`` can see another session's uncommitted DROP.

**Fixed in session 38** (the coordinator, after the round; those probes are plain tests
now): leak 1 (``StatementPolicy._removed_relations``: what the session's DDL dropped,
renamed or moved away is off the path until a load asked for after its transaction ended,
or a later CREATE of the name; within one text through ``_after_definitions``), leak 3
(``_made_relations`` keeps each CREATE's Sync group: a name counts in that group or once
it is answered, and an error or an undoing command forgets them all, so a load says what
committed) leak 4 (``_temp_of_code`` decides a row write's target as a read: a name
nowhere on the path is refused, 42P01) and leak 2 where code's transaction has ended
(``_code_moved_since``: a name the snapshot shows waits for a load after it, once). **Fixed in session 39**: leak 2 inside a transaction still open, where
no load can show what code dropped (``_code_open``: after code that may run DDL ran in the
session's open transaction, a relation of the path is refused until it ends; after such a
call earlier in one simple Query or pipeline too, ``_code_text`` in
``_after_definitions``). Left: leak 5 (strict xfails): which relations another session's
open block dropped, no snapshot shows.

Fix for the family (what the server resolves an unqualified name to, on the path or in
``pg_temp``, after DDL the snapshot does not show): decide "found on the path" only from
what the server must have. Keep the session's own removals as ``_made_relations`` keeps its
creations (a ``_removed_relations`` of every relation a DROP, ``RENAME``, ``SET SCHEMA``
(and ``DROP SCHEMA``/``ALTER SCHEMA ... RENAME``) names, under every path schema for an
unqualified name; ``_removed_columns`` already computes the renames), and have
``_temp_of_code`` and ``_on_the_path`` treat a name in it as not on the path, also within
one text (``_after_definitions``: the earlier statements' removals); add a CREATE to
``_made_relations`` only once the server confirmed it (its CommandComplete, and the
transaction's COMMIT, as ``_claim_temps`` confirms temporary names) and drop the set at
each load that started after the session's DDL settled (the load shows what is there);
and where the snapshot is stale because code that may run DDL ran (or the session's DDL
is open), decide an unqualified read of a name the snapshot shows with the same
``_after_a_load`` wait, refusing it in a block where the load cannot see the session's
own uncommitted DDL. The simplest sound rule: where ``temp_code`` holds, an unqualified
read is allowed only on a snapshot that is not stale and in no open DDL block; otherwise
ask the client to qualify the name (``public.t``), which the server resolves without
``pg_temp``. Leak 5 needs a run-time check as well, since the name's resolution can change
after the decision: the relay compares each RowDescription's table OIDs with the relations
the statement was decided on (the snapshot's OIDs, the session's own temporary tables) and
ends the statement, withholding its rows, where one is another relation (code's temporary
table), as it already withholds messages while another session's DDL is open.

Held (plain tests):

* Session 38's premise (3): a statement making a temporary relation of code's name and
  reading that name fails with 42P07 (or skips, IF NOT EXISTS) before it reads a row, in
  every spelling tried: ``LIKE x INCLUDING ALL``, ``INHERITS (x)``, ``PARTITION OF x``,
  ``SEQUENCE ... OWNED BY x.v``, a ``DEFAULT`` subquery of ``x``, ``IF NOT
  EXISTS ... AS``, ``EXPLAIN (ANALYZE)`` of the CTAS, ``WITH NO DATA``, and the CREATE
  followed by a read in one Query (the error ends the Query) or pipelined in the next
  Sync group (the claim is its own group's: refused, 42P01). A quoted other name
  (``"R90_COPY"``) is not code's name: its read is refused.
* Renaming code's table to a new name and reading that name; a temporary view of code's
  name replaced by the client and rolled back to a savepoint: both refused.
* The 42P01 refusal: a name that is code's temporary table and a name that is nowhere
  get the same SQLSTATE and message (but for the name), and no row; ``SET search_path``
  and ``set_config('search_path', ...)`` stay refused; a read after DDL in the same text
  is decided once (no loop) and refused.
* Seen while probing, not written as tests: a write with a column read after the
  session's DROP (``DELETE FROM t RETURNING v``) waits for a load (``_stale_write``) and
  is refused as nowhere; DDL of code's table by its bare name (``ALTER TABLE r90_copy ADD
  CHECK (v::int > 0)``, ``CREATE INDEX ON r90_copy ((v::int))``, ``ALTER ... TYPE int``)
  is refused; ``TRUNCATE r90_copy`` needs a truncate scope; in leak 5 the ``v::int``
  spelling's error message is withheld (the rows are not).
"""

from __future__ import annotations

import itertools

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(600)

AGENT = "r90-temp"
SECRET = "R90-VAULT-ROW"
FUNCTIONS = "r90.r90_stage,r90.r90_stage_as,r90.r90_swap,r90.r90_view,r90.r90_count"
SCOPES = f"read:public.* write:public.* ddl:public.* read:r90.* ddl:r90.* execute:{FUNCTIONS}"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r90x;
CREATE SCHEMA r90;
CREATE TABLE r90x.vault (v text);
INSERT INTO r90x.vault VALUES ('{SECRET}');
CREATE FUNCTION r90.r90_stage() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE r90_copy AS SELECT v FROM r90x.vault;
END $$;
CREATE FUNCTION r90.r90_stage_as(n text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE TEMP TABLE %I AS SELECT v FROM r90x.vault', n);
END $$;
CREATE FUNCTION r90.r90_swap(n text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TABLE public.%I', n);
  EXECUTE format('CREATE TEMP TABLE %I AS SELECT v FROM r90x.vault', n);
END $$;
CREATE FUNCTION r90.r90_view() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP VIEW r90_vw AS SELECT v FROM r90x.vault;
END $$;
CREATE FUNCTION r90.r90_count() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT 'rows=' || count(*) || '/' || count(*) FILTER (WHERE v = '{SECRET}')
          FROM r90_copy);
END $$;
RESET ROLE;
"""
TEARDOWN = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'r90\\_n%'
           AND c.relkind IN ('r', 'v') LOOP
    EXECUTE format(CASE r.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS public.%I CASCADE'
                   ELSE 'DROP TABLE IF EXISTS public.%I CASCADE' END, r.relname);
  END LOOP;
END $$;
DROP SCHEMA IF EXISTS r90x CASCADE;
DROP SCHEMA IF EXISTS r90 CASCADE;
"""
STAGE = ("SELECT r90.r90_stage()",)
MODES = ["simple", "extended", "prepared"]
_NAMES = itertools.count()


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r90temp", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


# --- probes with a relation of their own ---------------------------------------------------

# kind: what ``public.{t}`` is before the probe ("table", "view", "none"); steps: simple
# Queries, the last sent in the mode under test ({t}: the probe's own name)
REMOVED = {
    "drop": ("table", ["SELECT r90.r90_stage_as('{t}')", "DROP TABLE public.{t}",
                       "SELECT v::int FROM {t}"]),
    "drop-cascade": ("table", ["SELECT r90.r90_stage_as('{t}')",
                               "DROP TABLE public.{t} CASCADE", "SELECT v::int FROM {t}"]),
    "drop-view": ("view", ["SELECT r90.r90_stage_as('{t}')", "DROP VIEW public.{t}",
                           "SELECT v::int FROM {t}"]),
    "rename": ("table", ["SELECT r90.r90_stage_as('{t}')",
                         "ALTER TABLE public.{t} RENAME TO {t}_b", "SELECT v::int FROM {t}"]),
    "set-schema": ("table", ["SELECT r90.r90_stage_as('{t}')",
                             "ALTER TABLE public.{t} SET SCHEMA r90", "SELECT v::int FROM {t}"]),
    "in-block": ("table", ["BEGIN", "SELECT r90.r90_stage_as('{t}')", "DROP TABLE public.{t}",
                           "SELECT v::int FROM {t}"]),
    "own-then-dropped": ("none", ["CREATE TABLE public.{t} (v text)",
                                  "SELECT r90.r90_stage_as('{t}')", "DROP TABLE public.{t}",
                                  "SELECT v::int FROM {t}"]),
}  # fmt: skip
SWAP = ("table", ["SELECT r90.r90_swap('{t}')", "SELECT v::int FROM {t}"])
PHANTOM = {
    "failed-create": ("none", ["SELECT r90.r90_stage_as('{t}')",
                               "CREATE TABLE public.{t} (v text, v text)",
                               "SELECT v::int FROM {t}"]),
    "failed-ctas": ("none", ["SELECT r90.r90_stage_as('{t}')",
                             "CREATE TABLE public.{t} AS SELECT (1/0)::text AS v",
                             "SELECT v::int FROM {t}"]),
    "failed-view": ("none", ["SELECT r90.r90_stage_as('{t}')",
                             "CREATE VIEW public.{t} AS SELECT 1/0 AS v, 1 AS v",
                             "SELECT v::int FROM {t}"]),
    "rolled-back": ("none", ["SELECT r90.r90_stage_as('{t}')", "BEGIN",
                             "CREATE TABLE public.{t} (v text)", "ROLLBACK",
                             "SELECT v::int FROM {t}"]),
}  # fmt: skip


def _fresh(pg, kind: str) -> str:
    """A name no earlier run used, with ``public.<name>`` made as ``kind`` says."""
    t = f"r90_n{next(_NAMES)}"
    made = {
        "table": f"CREATE TABLE public.{t} (v text);",
        "view": f"CREATE VIEW public.{t} AS SELECT 'x'::text AS v;",
        "none": "",
    }[kind]
    if made:
        pg.psql(f"SET ROLE pgwitness;\n{made}\nRESET ROLE;\n", db="app")
    return t


def _direct(pg, steps: list[str]) -> str:
    """``steps`` as simple Queries directly as the upstream login: every byte received,
    which must show the marker."""
    with RawClient.direct(pg) as c:
        got = "".join(planted.text(c.query(s)) for s in steps)
        c.query("ROLLBACK")
    if SECRET not in got:
        raise RuntimeError(("precondition: no marker directly", steps, got[-400:]))
    return got


def _proxied(px, mode: str, steps: list[str]) -> str:
    """``steps`` in one session of the grant on a fresh upstream backend and loader, the
    last in ``mode``: every byte received (the session must answer a query after)."""
    planted.renew(px)
    with planted.session(px) as c:
        got = "".join(planted.run_mode(c, "simple", s) for s in steps[:-1])
        got += planted.run_mode(c, mode, steps[-1])
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def _run(pg, px, mode: str, case) -> str:
    kind, steps = case
    t = _fresh(pg, kind)
    _direct(pg, [s.format(t=t) for s in steps])
    t = _fresh(pg, kind)
    return _proxied(px, mode, [s.format(t=t) for s in steps])


def _shows(got: str) -> bool:
    return any(form in got for form in planted.encodings(SECRET))


def test_the_control_codes_copy_quotes_the_row_directly(pg, px):
    got = _direct(pg, [*STAGE, "SELECT v::int FROM r90_copy"])
    assert "22P02" in got


# leak 1, fixed in session 38 (``StatementPolicy._removed_relations``, ``_on_path_as``; in
# the same text: ``_after_definitions``): a relation the session's DROP/RENAME/SET SCHEMA
# took off the path had still been found in the snapshot (_temp_of_code: rel in columns)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", sorted(REMOVED))
def test_a_name_taken_off_the_path_does_not_reach_codes_table(pg, px, key, mode):
    got = _run(pg, px, mode, REMOVED[key])
    assert not _shows(got), ("LEAK", key, mode, got[-500:])


def test_a_name_taken_off_the_path_in_the_same_query_does_not_reach_codes_table(pg, px):
    steps = ["SELECT r90.r90_stage_as('{t}')", "DROP TABLE public.{t}; SELECT v::int FROM {t}"]
    got = _run(pg, px, "simple", ("table", steps))
    assert not _shows(got), ("LEAK", got[-500:])


@pytest.mark.parametrize("block", [False, True], ids=["autocommit", "in-block"])
def test_a_name_taken_off_the_path_in_a_pipeline_does_not_reach_codes_table(pg, px, block):
    t = _fresh(pg, "table")
    _direct(pg, [f"SELECT r90.r90_stage_as('{t}')", f"DROP TABLE public.{t}",
                 f"SELECT v::int FROM {t}"])  # fmt: skip
    t = _fresh(pg, "table")
    planted.renew(px)
    with planted.session(px) as c:
        got = planted.text(c.query(f"SELECT r90.r90_stage_as('{t}')"))
        if block:
            got += planted.text(c.query("BEGIN"))
        got += planted.text(
            planted.pipelined(c, [f"DROP TABLE public.{t}", f"SELECT v::int FROM {t}"])
        )
        c.query("ROLLBACK")
    assert not _shows(got), ("LEAK", block, got[-500:])


# leak 2, fixed in session 38 (``StatementPolicy._code_moved_since``: after code that may
# run DDL ran in a transaction that has ended, a name the snapshot shows is decided on a load
# after it, once; inside a block still open, not: the residue): code's DROP of a public
# relation had left the snapshot's name on the path
@pytest.mark.parametrize("mode", MODES)
def test_a_name_codes_ddl_took_off_the_path_does_not_reach_codes_table(pg, px, mode):
    got = _run(pg, px, mode, SWAP)
    assert not _shows(got), ("LEAK", mode, got[-500:])


# leak 2 inside a transaction still open, fixed in session 39 (``StatementPolicy._code_open``,
# and ``_after_definitions`` within one text): no load can show what code dropped in a
# transaction that has not ended, so an unqualified name it may have taken off the path is
# refused there (until the transaction ends) instead of decided on the snapshot
SWAP_OPEN = {
    "in-block": ("table", ["BEGIN", "SELECT r90.r90_swap('{t}')", "SELECT v::int FROM {t}"]),
    "savepoint": ("table", ["BEGIN", "SAVEPOINT a", "SELECT r90.r90_swap('{t}')",
                            "RELEASE a", "SELECT v::int FROM {t}"]),
    "plain-read": ("table", ["BEGIN", "SELECT r90.r90_swap('{t}')", "SELECT v FROM {t}"]),
}  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", sorted(SWAP_OPEN))
def test_a_name_codes_ddl_took_off_the_path_in_an_open_block_does_not_reach_codes_table(
    pg, px, key, mode
):
    got = _run(pg, px, mode, SWAP_OPEN[key])
    assert not _shows(got), ("LEAK", key, mode, got[-500:])


@pytest.mark.parametrize("sep", ["; ", ";\n"])
def test_a_name_codes_ddl_took_off_the_path_in_the_same_query_does_not_reach_codes_table(
    pg, px, sep
):
    steps = ["SELECT 1", "SELECT r90.r90_swap('{t}')" + sep + "SELECT v::int FROM {t}"]
    got = _run(pg, px, "simple", ("table", steps))
    assert not _shows(got), ("LEAK", got[-500:])


@pytest.mark.parametrize("block", [False, True], ids=["autocommit", "in-block"])
def test_a_name_codes_ddl_took_off_the_path_in_a_pipeline_does_not_reach_codes_table(pg, px, block):
    t = _fresh(pg, "table")
    _direct(pg, [f"SELECT r90.r90_swap('{t}')", f"SELECT v::int FROM {t}"])
    t = _fresh(pg, "table")
    planted.renew(px)
    with planted.session(px) as c:
        got = planted.text(c.query("BEGIN")) if block else ""
        got += planted.text(
            planted.pipelined(c, [f"SELECT r90.r90_swap('{t}')", f"SELECT v::int FROM {t}"])
        )
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    assert not _shows(got), ("LEAK", block, got[-500:])


def test_a_read_where_codes_ddl_ran_is_refused_until_the_transaction_ends(pg, px):
    """The refusal's remedy: a relation of the path read before that code ran in the
    transaction, or after it ended, is read (the name is written qualified too: the
    classifier renders an unqualified name in the path's first schema, so both are one)."""
    t = _fresh(pg, "table")
    pg.psql(f"SET ROLE pgwitness;\nCREATE TABLE public.{t}_q (v text);\n"
            f"INSERT INTO public.{t}_q VALUES ('plain');\nRESET ROLE;\n", db="app")  # fmt: skip
    planted.renew(px)
    with planted.session(px) as c:
        c.query("BEGIN")
        before = planted.text(c.query(f"SELECT v FROM {t}_q"))
        planted.text(c.query(f"SELECT r90.r90_swap('{t}')"))
        refused = planted.text(c.query(f"SELECT v FROM public.{t}_q"))
        c.query("ROLLBACK")
        after = planted.text(c.query(f"SELECT v FROM {t}_q"))
    assert "plain" in before, before[-300:]
    assert "after the transaction ends" in refused and "plain" not in refused, refused[-300:]
    assert "plain" in after, ("the transaction ended: decided on a load after it", after)


# leak 3, fixed in session 38 (``_made_relations``: a name counts in its CREATE's own Sync
# group or once that group is answered; an error or an undoing command forgets them all):
# _ran_ddl had recorded a CREATE's relation when it was sent, failed or rolled back or not
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", sorted(PHANTOM))
def test_a_create_that_never_happened_does_not_put_the_name_on_the_path(pg, px, key, mode):
    got = _run(pg, px, mode, PHANTOM[key])
    assert not _shows(got), ("LEAK", key, mode, got[-500:])


NOWHERE_WRITES = {
    "insert": "INSERT INTO r90_copy VALUES ('x')",
    "delete": "DELETE FROM r90_copy",
    "update": "UPDATE r90_copy SET v = 'y'",
}
UNTOUCHED = "rows=1/1"  # what r90.r90_count() says of code's copy after the staging call


def _count_after(c, mode: str, sql: str) -> tuple[str, str]:
    """``sql`` in ``mode`` after the staging call, then what code's copy holds."""
    got = planted.text(c.query(STAGE[0]))
    got += planted.run_mode(c, mode, sql)
    return got, planted.text(c.query("SELECT r90.r90_count()"))


# leak 4, fixed in session 38 (``_temp_of_code`` decides row writes' targets as reads: a
# name nowhere on the path is refused, 42P01): it had checked row writes only of names
# spelled pg_temp.*
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", sorted(NOWHERE_WRITES))
def test_a_write_of_a_name_nowhere_does_not_change_codes_table(pg, px, key, mode):
    sql = NOWHERE_WRITES[key]
    with RawClient.direct(pg) as c:
        _got, count = _count_after(c, "simple", sql)
    if UNTOUCHED in count or "rows=" not in count:
        raise RuntimeError(("precondition: the write changes code's table directly", count))
    planted.renew(px)
    with planted.session(px) as c:
        got, count = _count_after(c, mode, sql)
    assert "rows=" in count, count[-300:]
    assert UNTOUCHED in count, ("CHANGED", key, mode, count[-200:], got[-300:])


# --- held: session 38's premise, renames, the refusal ---------------------------------------

# statements that make a temporary relation of code's name and read that name: the server
# refuses each with 42P07 (IF NOT EXISTS: its NOTICE, and a skip) before it reads a row
PREMISE = {
    "like": ("CREATE TEMP TABLE r90_copy (LIKE r90_copy INCLUDING ALL)", "42P07"),
    "inherits": ("CREATE TEMP TABLE r90_copy () INHERITS (r90_copy)", "42P07"),
    "partition": ("CREATE TEMP TABLE r90_copy PARTITION OF r90_copy DEFAULT", "42P07"),
    "sequence-owned": ("CREATE TEMP SEQUENCE r90_copy OWNED BY r90_copy.v", "42P07"),
    "default-subquery": ("CREATE TEMP TABLE r90_copy (a int DEFAULT "
                         "(SELECT count(*) FROM r90_copy))", "42P07"),
    "if-not-exists": ("CREATE TEMP TABLE IF NOT EXISTS r90_copy AS "
                      "SELECT v::int FROM r90_copy", "42P07"),
    "explain-analyze": ("EXPLAIN (ANALYZE) CREATE TEMP TABLE r90_copy AS "
                        "SELECT v::int FROM r90_copy", "42P07"),
    "no-data": ("CREATE TEMP TABLE r90_copy AS SELECT v::int FROM r90_copy WITH NO DATA",
                "42P07"),
}  # fmt: skip


def _directly(pg, sqls) -> str:
    with RawClient.direct(pg) as c:
        return planted.text([f for s in sqls for f in c.query(s)])


@pytest.mark.parametrize("key", sorted(PREMISE))
def test_a_create_of_codes_name_reads_no_row(pg, px, key):
    sql, code = PREMISE[key]
    direct = _directly(pg, [*STAGE, sql])
    assert not _shows(direct) and code in direct, direct[-400:]  # the premise, directly
    got = planted.received(px, sql, before=STAGE)
    planted.assert_no_leak(got, [SECRET], sql)


def test_a_create_then_a_read_in_one_query_stops_at_the_create(px):
    sql = "CREATE TEMP TABLE r90_copy (v text REFERENCES r90_copy (v)); SELECT v::int FROM r90_copy"
    got = planted.received(px, sql, before=STAGE)
    planted.assert_no_leak(got, [SECRET], sql)
    assert "C42P07" in got["simple"], got["simple"][-400:]


@pytest.mark.parametrize("steps", [
    ["CREATE TEMP TABLE \"R90_COPY\" AS SELECT v::int FROM r90_copy"],
    ["ALTER TABLE pg_temp.r90_copy RENAME TO r90_mine", "SELECT v::int FROM r90_mine"],
], ids=["quoted-other-name", "renamed-codes-table"])  # fmt: skip
def test_codes_table_under_another_name_is_refused(pg, px, steps):
    assert _shows(_directly(pg, [*STAGE, *steps]))
    got = planted.received(px, steps[-1], before=(*STAGE, *steps[:-1]))
    planted.assert_no_leak(got, [SECRET], steps[-1])
    for mode, t in got.items():
        assert "pgwitness:" in t and "deny.temp" in t, (mode, t[-400:])


def test_codes_view_replaced_then_rolled_back_is_refused(pg, px):
    before = [
        "SELECT r90.r90_view()",
        "SAVEPOINT a",
        "CREATE OR REPLACE TEMP VIEW r90_vw AS SELECT 'a'::text AS v",
        "ROLLBACK TO a",
    ]
    sql = "SELECT v::int FROM r90_vw"
    assert _shows(planted.direct_in_block(pg, before, sql))  # (in a block: BEGIN first)
    for mode in MODES:
        got = planted.proxied_in_block(px, "base", mode, before, sql)
        assert not _shows(got), ("LEAK", mode, got[-400:])
        assert "C42P01" in got and "deny.temp" in got, (mode, got[-400:])


def test_the_refusal_of_codes_name_is_the_refusal_of_a_name_nowhere(pg, px):
    """42P01 for both, the same words but for the name, no row: the SQLSTATE tells an
    agent nothing about code's tables that a name nowhere would not."""
    assert _shows(_directly(pg, [*STAGE, "SELECT v::int FROM r90_copy"]))
    codes = planted.received(px, "SELECT v::int FROM r90_copy", before=STAGE)
    nowhere = planted.received(px, "SELECT v::int FROM r90_cop9", before=STAGE)
    planted.assert_no_leak(codes, [SECRET], "codes")
    for mode in codes:
        a, b = codes[mode], nowhere[mode].replace("r90_cop9", "r90_copy")
        assert "C42P01" in a and "deny.temp" in a, (mode, a[-400:])
        assert a == b, (mode, a[-400:], b[-400:])


@pytest.mark.parametrize("sql", ["SET search_path = pg_temp, public",
                                 "SELECT set_config('search_path', 'pg_temp, public', false)"])  # fmt: skip
def test_the_path_cannot_put_pg_temp_first(pg, px, sql):
    direct = _directly(pg, [*STAGE, sql, "SELECT v::int FROM r90_copy"])
    assert _shows(direct)
    got = planted.received(px, sql, before=STAGE, after=("SELECT v::int FROM r90_copy",))
    planted.assert_no_leak(got, [SECRET], sql)
    for mode, t in got.items():
        assert "C42501" in t and "pgwitness:" in t, (mode, t[-400:])


def test_a_read_after_ddl_in_the_same_query_is_decided_once_and_refused(pg, px):
    t = _fresh(pg, "none")
    sql = f"CREATE TABLE public.{t} (v int); SELECT v::int FROM r90_copy"
    assert _shows(planted.direct_in_block(pg, list(STAGE), sql))
    got = planted.proxied_in_block(px, "base", "simple", list(STAGE), sql)
    assert not _shows(got), got[-400:]
    assert "C42P01" in got and "deny.temp" in got, got[-400:]


def test_a_create_and_a_read_pipelined_in_two_sync_groups_is_refused(pg, px):
    """The claim of a CREATE of code's name is its own Sync group's (session 38, premise
    (3)): a read of the name in the next group, sent before the CREATE's answer, is
    refused (the CREATE fails there with 42P07, so no group made it)."""
    create = "CREATE TEMP TABLE r90_copy (v text REFERENCES r90_copy (v))"
    read = "SELECT v::int FROM r90_copy"
    assert _shows(_directly(pg, [*STAGE, create, read]))
    planted.renew(px)
    with planted.session(px) as c:
        got = planted.text(c.query(STAGE[0]))
        c.send(m.parse("", create), m.bind_no_params(), m.execute(), m.SYNC,
               m.parse("", read), m.bind_no_params(), m.execute(), m.SYNC)  # fmt: skip
        got += planted.text(c.frames_until_ready()) + planted.text(c.frames_until_ready())
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    assert not _shows(got), got[-400:]
    assert "C42P07" in got and "C42P01" in got and "deny.temp" in got, got[-400:]


def _interleaved(pg, c_migrator, c_agent, mode: str, t: str) -> str:
    """``c_migrator`` drops ``public.<t>`` in a block; ``c_agent`` stages code's copy named
    ``t`` and reads ``t`` in ``mode``, which waits on the server for the block's lock; the
    block commits: what the read got."""
    return planted.interleaved_block(
        pg, c_migrator, c_agent, [f"DROP TABLE public.{t}"], [f"SELECT r90.r90_stage_as('{t}')"],
        f"SELECT v FROM {t}", lambda c, sql: planted.run_mode(c, mode, sql), lambda: True,
    )  # fmt: skip


@pytest.mark.xfail(strict=True, reason=(
    "round 90, leak 5: another session's DROP in an open block; the read, allowed on the "
    "snapshot's public name, waits on its lock and, once it commits, the server resolves "
    "the name to code's pg_temp copy: the rows come back (messages are withheld)"))  # fmt: skip
@pytest.mark.parametrize("mode", MODES)
def test_a_name_another_session_drops_does_not_reach_codes_table(pg, px, mode):
    t = _fresh(pg, "table")
    with RawClient.direct(pg) as a, RawClient.direct(pg) as b:
        if not _shows(_interleaved(pg, b, a, mode, t)):
            raise RuntimeError("precondition: no marker directly")
    t = _fresh(pg, "table")
    planted.renew(px)
    with planted.session(px) as a, planted.session(px) as b:
        got = _interleaved(pg, b, a, mode, t)
    assert not _shows(got), ("LEAK", mode, got[-500:])
