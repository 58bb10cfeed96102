"""Red-team round 43 (attacks on 8f1f877, the pending Bind's Execute leading the next read,
and on how the policy follows what the server holds under a statement name), time-boxed;
the server the judge.

Grants (agent ``r43-bot``): ``writer`` = ``read:r43w.* write:r43w.*`` (the fixture's base
grant); ``migrator`` = ``read:r43w.* write:r43w.* ddl:r43w.*`` and ``execute`` on
``public.r43_swap`` and ``public.r43_attach``.

Planted (schema owner; ``r43x`` outside every grant, ``r43x.vault`` holds the markers
``pin`` and ``trg``): ``public.r43_pin(anyelement)`` (SQL: the vault's ``pin``;
``o.r43_pin`` on a row without that column calls it); ``r43w.pt_swap`` and ``r43w.pt_<i>``
(``id int, r43_pin text``, one row ``'ok'``); names code ``public.r43_swap(g int)``
(plpgsql: when ``g = 2``, ``DEALLOCATE r43f; PREPARE r43f AS SELECT o.r43_pin FROM
r43w.pt_swap o``; otherwise nothing); DDL code that is not names code
``public.r43_attach()`` (plpgsql ``ALTER TABLE r43w.t DROP CONSTRAINT IF EXISTS r43_chk;
ALTER TABLE r43w.t ADD CONSTRAINT r43_chk CHECK (public.r43_loud(id))``, no dynamic SQL:
the word ``execute`` would make every relation a possible temporary one, CODE_FLAGS_SQL)
with ``public.r43_loud(int)`` raising the vault's ``trg``; ``r43w.t (id int)``, empty. Every
probe runs directly as the upstream login first and must show its marker there
(``RuntimeError`` otherwise); renames are made in blocks rolled back. ``OK`` = ``SELECT
'ok'::text AS r43_pin``; ``_one(s)`` = Bind of ``s`` to the unnamed portal, Execute, Sync;
"the rename" = ``ALTER TABLE r43w.<t> RENAME COLUMN r43_pin TO gone`` (simple Query, in a
block). All probes through the migrator's grant unless said otherwise.

Leaks found (strict xfails when found; all fixed in session 24, the same tests now pass:
``DEALLOCATE "all"`` is refused, a followed statement's Bind must be executed whole (no row
limit), code that replaces statements makes every later statement, Execute and Sync of its
transaction forget the names (``StatementPolicy.lazy_names``), ``EXECUTE q`` asks what
``q`` runs (``_run_by``), and a SQL-level PREPARE of such code is followed at protocol
Binds; six more probes of the same families by other routes, written with the fixes, are
below the round's own):

1. **``DEALLOCATE "all"`` is taken for ``DEALLOCATE ALL``** (``dealloc-quoted-all-*``):
   ``Parse s1 <pin of t>`` / Sync (allowed: the column exists); ``PREPARE "all" AS SELECT
   1``; ``DEALLOCATE "all"`` (simple Query, or unnamed Parse/Bind/Execute/Sync); ``BEGIN``;
   the rename; ``_one("s1")``: the marker as a row. The same with ``s1`` prepared by SQL
   ``PREPARE s1 AS <pin>`` and bound over the protocol. The server removes only the
   statement named ``all``; the policy forgets every name (``handlers._deallocate`` gives
   the quoted identifier ``all`` the same detail as the keyword ALL, and
   ``_commit_session_state`` / ``PreparedNames.follow`` treat detail ``"all"`` as ALL:
   ``_statements`` cleared, no ``_forgot``), so ``s1`` is neither held nor forgotten: its
   Bind is not looked at (``bind_checked`` False, ``catalog_changed`` puts only held names
   in ``rebind``) and the server analyses it again after the rename.
2. **Names code run after its statement was decided** (``names_unknown`` runs when the
   calling statement is decided; the code runs row by row, later):
   a. ``cursor-fetch-runs-names-code`` (simple Query only): ``BEGIN``; ``DECLARE c CURSOR
      FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g`` (names_unknown);
      ``FETCH 1 FROM c`` (``r43_swap(1)``: nothing); ``PREPARE r43f AS OK`` (held); ``FETCH
      1 FROM c`` (``r43_swap(2)`` replaces ``r43f`` with the pin; FETCH names no code);
      the rename of ``pt_swap``; ``EXECUTE r43f``: decided again on ``OK``, the marker.
   b. ``suspended-portal-runs-names-code`` (extended): ``Parse sw "SELECT
      public.r43_swap(g) FROM generate_series(1, 2) g"`` / Sync; ``BEGIN``; ``Bind pw <-
      sw``, ``Execute pw`` with a row limit of 1, Sync (executed at once:
      ``bind_at_once``; PortalSuspended after row 1); ``Parse r43f OK`` / Sync (held);
      ``Execute pw`` / Sync (row 2: the swap; an Execute is never looked at); the rename of
      ``pt_swap``; ``_one("r43f")``: the marker. ``_next_execute`` takes any Execute of the
      portal as running it, but a row limit runs a SELECT's portal in parts.
3. **A prepared statement's names or DDL code run through its name** (the policy looks at
   the code of what a statement's *text* calls; ``EXECUTE q`` and a Bind of a SQL-level
   ``q`` name none):
   a. ``execute-of-names-code-sql``: ``PREPARE q AS SELECT public.r43_swap(2)``
      (names_unknown, as DDL code); ``PREPARE r43f AS OK``; ``EXECUTE q`` (the swap:
      ``_decide_execute`` marks it DDL code, but ``_ran_ddl`` asks ``_runs_names_code`` of
      the EXECUTE's own classification, whose functions are its arguments': no
      names_unknown, only ``_forgot``); ``BEGIN``; the rename of ``pt_swap``; ``EXECUTE
      r43f``: the marker. ``execute-of-names-code-protocol``: the same with ``Parse x
      "EXECUTE q"``, ``Parse r43f OK`` and ``_one("x")``, then ``_one("r43f")``.
   b. ``bind-of-sql-prepared-names-code``: as a, with ``_one("q")`` (a protocol Bind of
      the SQL-level statement: one namespace) instead of ``EXECUTE q``: only protocol
      Parses are ``followed``; the Bind is not looked at, or (after the reload the PREPARE
      started) ``_decided_again`` decides the SQL-level text without ``_ran_ddl`` or
      ``names_unknown``.
   c. ``bind-of-sql-prepared-ddl-code`` (hidden DDL): ``PREPARE q AS SELECT
      public.r43_attach()`` (counted as DDL, the reload runs: 0.6 s); ``_one("q")``: the
      server adds the CHECK, the policy counts no DDL and no reload follows; the writer's
      ``INSERT INTO r43w.t VALUES (1)`` (every mode) shows the CHECK's RAISE, the vault's
      ``trg`` (the snapshot does not know ``r43w.t`` runs user code). ``EXECUTE q``
      instead is counted and held (``control-sql-execute``).

Held (passing): the pending Bind (8f1f877) with, leading the next read, a Describe of
another open portal, a Close of another portal, an Execute of another portal, the rename
split byte-wise over two reads (its first two bytes alone: no frames, still pending), a
Describe of the portal then a Flush then the rename, the unnamed portal with a Parse of the
rename in the same Sync group; the Bind itself split byte-wise over two reads (its tail
ends the read: pending): the session ends each time. Controls: ``SELECT
public.r43_swap(2)`` after ``PREPARE r43f`` (refused after the rename); a portal of the
swapping SELECT executed whole (no row limit) before ``Parse r43f``; ``PREPARE "ALL"`` /
``DEALLOCATE "ALL"`` (not ALL: ``s1`` kept, refused after the rename). Names: ``EXPLAIN
ANALYZE SELECT public.r43_swap(2)`` (names_unknown: ``r43f`` refused after the rename); a
SQL name of 64 bytes run by ``EXECUTE`` of another spelling agreeing on the first 63 and
bound by those 63 over the protocol (the policy truncates as the server does: decided
again, refused); ``PREPARE s1`` in a savepoint rolled back (kept by both, refused after the
rename); ``DEALLOCATE s1`` in an aborted block (refused by the server, ``s1`` kept by both).

Not probed (time box): TLS clients (the relay sees the same frames; only read boundaries
move, which the byte-wise splits cover); a cursor or suspended portal running DDL code (its
block's end settles the DDL: ``ddl_open``); a refcursor a granted function opens (the same
root as 2); client_encoding changes between a name's Parse and its Close (rounds 33-34).
"""

from __future__ import annotations

import time

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r43-bot"
MARK = {"pin": "R43-PIN-8e2d", "trg": "R43-TRG-41b7"}
SCOPES = "read:r43w.* write:r43w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r43w.* write:r43w.* ddl:r43w.* execute:public.r43_swap,public.r43_attach",
}
PIN_TABLES = ["pt_swap", *(f"pt_{i}" for i in range(45))]

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r43w; CREATE SCHEMA r43x;\n"
    "CREATE TABLE r43x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r43x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE FUNCTION public.r43_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r43x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r43w.{t} (id int, r43_pin text); INSERT INTO r43w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    # names code that replaces r43f only when called with 2
    + "CREATE FUNCTION public.r43_swap(g int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "IF g = 2 THEN DEALLOCATE r43f; PREPARE r43f AS SELECT o.r43_pin FROM r43w.pt_swap o; "
    "END IF; RETURN g; END $$;\n"
    # DDL code (not names code; no word the temp-code flag reads): a CHECK on r43w.t
    # raising the vault's trg
    "CREATE TABLE r43w.t (id int);\n"
    "CREATE FUNCTION public.r43_loud(int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION '%', (SELECT val FROM r43x.vault WHERE key = 'trg'); END $$;\n"
    "CREATE FUNCTION public.r43_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "ALTER TABLE r43w.t DROP CONSTRAINT IF EXISTS r43_chk; "
    "ALTER TABLE r43w.t ADD CONSTRAINT r43_chk CHECK (public.r43_loud(id)); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r43w, r43x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r43_pin(anyelement), public.r43_swap(int), "
    "public.r43_attach(), public.r43_loud(int) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r43", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


OK = "SELECT 'ok'::text AS r43_pin"


def pin(t: str) -> str:
    return f"SELECT o.r43_pin FROM r43w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r43w.{t} RENAME COLUMN r43_pin TO gone"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


def describe_portal(name: str) -> bytes:
    return frame(b"D", b"P" + name.encode() + b"\x00")


CASES = {
    # name: (steps on table t, False if it holds, else the reason of its strict xfail)
    "dealloc-quoted-all-simple": (
        lambda t: [
            (parse("s1", pin(t)), SYNC),
            (query('PREPARE "all" AS SELECT 1'),),
            (query('DEALLOCATE "all"'),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "dealloc-quoted-all-extended": (
        lambda t: [
            (parse("s1", pin(t)), SYNC),
            (query('PREPARE "all" AS SELECT 1'),),
            (parse("", 'DEALLOCATE "all"'), bind(), execute(), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "dealloc-quoted-all-sql-prepared": (
        lambda t: [
            (query(f"PREPARE s1 AS {pin(t)}"),),
            (query('PREPARE "all" AS SELECT 1'),),
            (query('DEALLOCATE "all"'),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "control-dealloc-quoted-upper-all": (
        lambda t: [
            (parse("s1", pin(t)), SYNC),
            (query('PREPARE "ALL" AS SELECT 1'),),
            (query('DEALLOCATE "ALL"'),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-fetch-runs-names-code": (
        lambda t: [
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g"),),
            (query("FETCH 1 FROM c"),),
            (query(f"PREPARE r43f AS {OK}"),),
            (query("FETCH 1 FROM c"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "suspended-portal-runs-names-code": (
        lambda t: [
            (parse("sw", "SELECT public.r43_swap(g) FROM generate_series(1, 2) g"), SYNC),
            (query("BEGIN"),),
            (bind("pw", "sw"), execute("pw", 1), SYNC),
            (parse("r43f", OK), SYNC),
            (execute("pw"), SYNC),
            (query(away("pt_swap")),),
            _one("r43f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "control-portal-run-whole": (
        lambda t: [
            (parse("sw", "SELECT public.r43_swap(g) FROM generate_series(1, 2) g"), SYNC),
            (parse("r43f", OK), SYNC),
            (query("BEGIN"),),
            (bind("pw", "sw"), execute("pw"), SYNC),
            (query(away("pt_swap")),),
            _one("r43f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "control-call-after-prepare": (
        lambda t: [
            (query(f"PREPARE r43f AS {OK}"),),
            (query("SELECT public.r43_swap(2)"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "execute-of-names-code-sql": (
        lambda t: [
            (query("PREPARE q AS SELECT public.r43_swap(2)"),),
            (query(f"PREPARE r43f AS {OK}"),),
            (query("EXECUTE q"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "execute-of-names-code-protocol": (
        lambda t: [
            (query("PREPARE q AS SELECT public.r43_swap(2)"),),
            (parse("x", "EXECUTE q"), SYNC),
            (parse("r43f", OK), SYNC),
            _one("x"),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            _one("r43f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "bind-of-sql-prepared-names-code": (
        lambda t: [
            (query("PREPARE q AS SELECT public.r43_swap(2)"),),
            (query(f"PREPARE r43f AS {OK}"),),
            _one("q"),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # session 24 (the coordinator, after round 43): the same families by other routes
    "sql-execute-of-protocol-pin-after-rename": (
        lambda t: [
            (parse("s1", pin(t)), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            (query("EXECUTE s1"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "sql-execute-of-protocol-prepare": (
        lambda t: [
            (parse("s", f"PREPARE x AS {pin(t)}"), SYNC),
            (query("EXECUTE s"),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("x"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "sql-execute-of-protocol-names-code": (
        lambda t: [
            (parse("q", "SELECT public.r43_swap(2)"), SYNC),
            (query(f"PREPARE r43f AS {OK}"),),
            (query("EXECUTE q"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-with-hold-runs-names-code-at-commit": (
        lambda t: [
            (query("BEGIN"),),
            (
                query(
                    "DECLARE c CURSOR WITH HOLD FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g"
                ),
            ),
            (query(f"PREPARE r43f AS {OK}"),),
            (query("COMMIT"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-with-hold-runs-names-code-at-sync": (
        lambda t: [
            (
                parse(
                    "d",
                    "DECLARE c CURSOR WITH HOLD FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g",
                ),
                bind("", "d"),
                execute(),
                parse("r43f", OK),
                SYNC,
            ),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            _one("r43f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-portal-executed-by-name": (
        lambda t: [
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g"),),
            (execute("c", 1), SYNC),
            (query(f"PREPARE r43f AS {OK}"),),
            (execute("c", 1), SYNC),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "cursor-fetch-by-protocol-statement": (
        lambda t: [
            (query("BEGIN"),),
            (query("DECLARE c CURSOR FOR SELECT public.r43_swap(g) FROM generate_series(1, 2) g"),),
            (parse("f", "FETCH 1 FROM c"), SYNC),
            _one("f")[:-1] + (SYNC,),
            (parse("r43f", OK), SYNC),
            (bind("", "f"), execute(), SYNC),
            (query(away("pt_swap")),),
            _one("r43f"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: names code under EXPLAIN ANALYZE (it runs the call)
    "explain-analyze-names-code": (
        lambda t: [
            (query(f"PREPARE r43f AS {OK}"),),
            (query("EXPLAIN ANALYZE SELECT public.r43_swap(2)"),),
            (query("BEGIN"),),
            (query(away("pt_swap")),),
            (query("EXECUTE r43f"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: a SQL name over 63 bytes (the server keeps its first 63), run by another
    # spelling that agrees that far, and bound by those 63 bytes over the protocol
    "long-sql-name-truncated": (
        lambda t: [
            (query(f"PREPARE {'l' * 63}x AS {pin(t)}"),),
            (query("BEGIN"),),
            (query(away(t)),),
            (query(f"EXECUTE {'l' * 63}y"),),
            (query("ROLLBACK"),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("l" * 63),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: a PREPARE inside a savepoint rolled back (the server keeps it: prepared
    # statements are not transactional; so does the policy)
    "prepare-in-a-savepoint-rolled-back": (
        lambda t: [
            (query("BEGIN"),),
            (query("SAVEPOINT a"),),
            (query(f"PREPARE s1 AS {pin(t)}"),),
            (query("ROLLBACK TO SAVEPOINT a"),),
            (query(away(t)),),
            (query("EXECUTE s1"),),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: a DEALLOCATE in an aborted block (refused by the server: s1 kept)
    "deallocate-in-an-aborted-block": (
        lambda t: [
            (query(f"PREPARE s1 AS {pin(t)}"),),
            (query("BEGIN"),),
            (query("SELECT 1/0"),),
            (query("DEALLOCATE s1"),),
            (query("ROLLBACK"),),
            (query("BEGIN"),),
            (query(away(t)),),
            _one("s1"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}


class Part(bytes):
    """Bytes sent alone (a piece of a frame, or several): no answer is waited for."""


def steps_until_ended(c: RawClient, steps) -> tuple[str, bool]:
    """``planted.run_steps_until_ended`` with ``Part`` steps (sent as they are)."""
    out = ""
    for step in steps:
        if isinstance(step, Part):
            try:
                c.send(step)
            except OSError:
                return out, True
            continue
        if isinstance(step, float):
            time.sleep(step)
            continue
        got, ended = planted.run_steps_until_ended(c, [step])
        out += got
        if ended:
            return out, True
    return out, False


def _pending(between, portal: str = "pe"):
    """r42's probe: the pending Bind's portal run after a rename, ``between`` first (a
    portal ``zz`` of another statement is open in the block too)."""

    def build(t: str) -> list:
        return [
            (query(f"PREPARE r43e AS {pin(t)}"),),
            (parse("r43ex", "EXECUTE r43e"), SYNC),
            (query("BEGIN"),),
            (parse("", OK), bind("zz", ""), SYNC),
            (bind(portal, "r43ex"),),
            0.2,
            *between(t),
            (execute(portal), SYNC),
            (query("ROLLBACK"),),
        ]

    return build


def _close_portal(name: str) -> bytes:
    return frame(b"C", b"P" + name.encode() + b"\x00")


PENDING = {
    "describe-of-another-portal-first": (
        _pending(lambda t: [Part(describe_portal("zz")), 0.2, (query(away(t)),)]),
        False,
    ),
    "close-of-another-portal-first": (
        _pending(lambda t: [Part(_close_portal("zz")), 0.2, (query(away(t)),)]),
        False,
    ),
    "execute-of-another-portal-first": (
        _pending(lambda t: [Part(execute("zz")), 0.2, (query(away(t)),)]),
        False,
    ),
    "rename-split-bytewise": (
        _pending(lambda t: [Part(query(away(t))[:2]), 0.2, (Part(query(away(t))[2:])), 0.2]),
        False,
    ),
    "bind-split-bytewise": (
        lambda t: [
            (query(f"PREPARE r43e AS {pin(t)}"),),
            (parse("r43ex", "EXECUTE r43e"), SYNC),
            (query("BEGIN"),),
            Part(bind("pe", "r43ex")[:7]),
            0.2,
            Part(bind("pe", "r43ex")[7:]),
            0.2,
            (query(away(t)),),
            (execute("pe"), SYNC),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    "unnamed-portal-rename-in-its-sync-group": (
        _pending(
            lambda t: [Part(parse("", away(t)) + bind("rp", "") + execute("rp")), 0.2],
            portal="",
        ),
        False,
    ),
    "describe-flush-then-rename": (
        _pending(lambda t: [Part(describe_portal("pe")), 0.2, Part(FLUSH), 0.2, (query(away(t)),)]),
        False,
    ),
}


@pytest.mark.parametrize("name", planted.cases(PENDING))
def test_pending(px, pg, name):
    build, _holds = PENDING[name]
    t = f"pt_{35 + list(PENDING).index(name)}"
    with RawClient.direct(pg) as c:
        direct, _ = steps_until_ended(c, build(t))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = steps_until_ended(c, build(t))
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    assert ended and "must be followed by the Execute" in got, (name, got[-500:])


@pytest.mark.parametrize("name", planted.cases(CASES))
def test_names(px, pg, name):
    build, leaks = CASES[name]
    i = list(CASES).index(name)
    t = f"pt_{i}"
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(t))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, build(t))
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    if not leaks:  # a control: the policy refused it (not the server)
        assert planted.refused(got), (name, got[-500:])


WRITE = "INSERT INTO r43w.t VALUES (1)"
DETACH = "ALTER TABLE r43w.t DROP CONSTRAINT IF EXISTS r43_chk"

HIDDEN = {
    # name: (the migrator's steps after PREPARE q, False or the reason of its strict xfail)
    "bind-of-sql-prepared-ddl-code": ([_one("q")], False),
    "control-sql-execute": ([(query("EXECUTE q"),)], False),
}


@pytest.mark.parametrize("name", planted.cases(HIDDEN))
def test_hidden_ddl(px, pg, name):
    steps, _why = HIDDEN[name]
    prepare = (query("PREPARE q AS SELECT public.r43_attach()"),)
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        ran = run_steps(c, [prepare, *steps])
        direct = planted.text(c.query(WRITE))
        c.query(DETACH)
    if planted.is_error(ran) or not shows(direct, MARK["trg"]):
        raise RuntimeError(("precondition: no marker directly", ran[-300:], direct[-300:]))
    try:
        with planted.session(px, px.tokens["migrator"]) as c:
            got = run_steps(c, [prepare])
            time.sleep(0.6)  # the reload the PREPARE (code that may run DDL) started
            got += run_steps(c, steps)
            assert not planted.is_error(got), got[-300:]
        out = planted.writes_every_mode(px, px.tokens["writer"], WRITE)
    finally:
        with RawClient.direct(pg) as d:
            d.query(DETACH)
            d.query("DELETE FROM r43w.t")
    planted.assert_trigger_withheld(out, lambda t: shows(t, MARK["trg"]), name)
