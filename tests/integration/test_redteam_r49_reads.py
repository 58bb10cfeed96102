"""Red-team round 49 (attacks on a30588b, round 48's fix: while ``lazy_code`` the relay
marks ``ran_lazy`` at the start of every client read; with 6fec4b9/73fb82d/6355bf3, the
checks and the code window), time-boxed (25 minutes); the server the judge.

Grants (agent ``r49-bot``): ``base`` = ``read:r49w.* write:r49w.*`` and ``execute`` on
``public.r49_swap``, ``r49w.f``, ``r49w.g``; ``migrator`` = that and ``ddl:r49w.*``,
``execute`` on ``r49w.redef``.

Planted (schema owner; ``r49x`` outside every grant, ``r49x.vault`` holds the marker):
``public.r49_swap(n)`` (plpgsql: ``DEALLOCATE n`` if held, then ``PREPARE n AS <vault
read>``, the words built from pieces); ``r49w.f(n)`` (plpgsql ``RETURN 1``: harmless until
redefined); ``r49w.g(n)`` (``PERFORM r49w.f(n) FROM r49w.gate``: a static call of f through
SPI, so the session reads f's newest body); ``SWAP_F`` = ``CREATE OR REPLACE FUNCTION
r49w.f`` with the swap's body (plain DDL, which the migrator's ``ddl:r49w.*`` allows).
Every probe runs directly as the upstream login first and must show the marker there
(``RuntimeError`` otherwise). ``PREPARE r49q AS OK`` is a SQL-level name, ``r49s`` a
protocol one.

Leak found (strict xfails when found; fixed in session 25, the probes pass now: a function
defined or replaced through the proxy opens the code window, ``code_ran``, so every
session checks its names and refuses SQL-level EXECUTEs until a load read its body):

1. **A caller of a function redefined by plain DDL through the proxy is not such code
   until a load reads the catalog** (``DIRECT`` and ``BLOCKED``). No code window is
   involved: B's redefinition is a client's DDL, not code (``code_ran`` never runs), so
   this is none of the residues (not a cursor declared by code, not DDL outside the
   proxy, nothing decided before a window opened: no window opens).
   a. ``ddl-block-caller-waits-*`` (deterministic): A: ``PREPARE r49q AS OK`` (or ``Parse
      r49s OK``). B (migrator, through the proxy): ``BEGIN``; ``SWAP_F``; ``ALTER TABLE
      r49w.gate ADD COLUMN r49c int`` (holds the gate). A: ``SELECT r49w.g('r49q')``
      (decided at once; blocks on the gate). B: ``COMMIT``. A's call runs the new f,
      which replaces ``r49q`` (or ``r49s``) with the vault read; then A's ``EXECUTE r49q``,
      or ``Bind "" r49q``/Execute/Sync, or ``Bind "" r49s`` (no check injected): the
      vault's row.
   b. ``ddl-then-call-*`` (autocommit; the race with the load after B's end, which A wins
      in practice: A sends as soon as B has its answer): B: ``SWAP_F``. A: ``SELECT
      r49w.g('r49q')`` then ``EXECUTE r49q`` (or in one text, or a protocol Bind of
      ``r49q``, or the same with ``r49s``): the vault's row. Once the load after B's end
      came (``ddl-then-load-then-call-then-execute``) it holds: the DDL-code inference's
      recursive closure then makes g such code.
   Why: ``CatalogCache.invalidate``/``put`` add a function defined through the proxy to
   ``ddl_functions``/``names_functions`` (``_Entry.unread``, round 44's fix) until a load
   reads it, but only that function: ``DDL_CODE_SQL``'s closure over callers (g calls f)
   is computed at load time, so g stays harmless in the stale snapshot. A's call of g is
   decided as a plain read: no ``_code_ran``, no ``names_unknown``; the ``lazy_names``
   that ``catalog_changed`` set in A (``defining()``, names_functions grew) was cleared by
   ``at_rest`` at A's read start (idle outside a transaction), and ``lazy_code`` is never
   set (no code window). So ``r49q`` stays held (EXECUTE and Bind decided on ``OK``) and
   ``r49s`` is not checked. Fix guess: while ``_Entry.unread`` is not empty (a function
   defined through the proxy and not yet read by a load), treat it as a code window
   (``code_ran`` at a definition whose body or language makes it such code, or at every
   definition), so every session's ``lazy_code`` is set until a load that read it; or
   close ``unread`` over callers in the snapshot (the snapshot would need the call graph
   ``DDL_CODE_SQL`` computes; dynamic calls defeat it, so the window is the safer fix).

Held: the same after the load (``ddl-then-load-then-call-then-execute``).

Not tried (time box): the brief's ideas around a30588b itself: the window closing between
a statement sent and run (read: ``code_ended`` is None while the DDL session's block count
holds, ``on_block(1)`` precedes ``code_ran``, so a window cannot close while the code's
statement is in flight); ``at_rest`` at a read start with a WITH HOLD cursor (its rows are
materialised at commit: no code runs at its FETCH); parked reads (``resume`` calls
``_client_frames`` again, so the start-of-read mark is taken again); a dry-run grant
(not looked for); two-phase commit (denied: ``deny.two_phase``); cost probes with drivers
(round 48's held).
"""

from __future__ import annotations

import time

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r49-bot"
MARK = "R49-VAULT-7c1d"
FNS = "public.r49_swap"
SCOPES = f"read:r49w.* write:r49w.* execute:{FNS},r49w.f,r49w.g"
GRANTS = {"migrator": f"read:r49w.* write:r49w.* ddl:r49w.* execute:{FNS},r49w.f,r49w.g,r49w.redef"}
VAULT = "SELECT r49_secret AS v FROM r49x.vault"
SWAP_BODY = (
    "BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = n) THEN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); END IF; "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; RETURN 2; END"
)
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r49w.f(n text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$"
)
# what the migrator sends through the proxy: f's body is the swap (DDL, not code)
SWAP_F = (
    f"CREATE OR REPLACE FUNCTION r49w.f(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r49w; CREATE SCHEMA r49x;\n"
    f"CREATE TABLE r49x.vault (r49_secret text); INSERT INTO r49x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r49w.gate (id int); INSERT INTO r49w.gate VALUES (1);\n"
    f"CREATE FUNCTION public.r49_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$;\n"
    f"{HARMLESS_F};\n"
    # f called through SPI (a new statement: the session reads f's new body)
    "CREATE FUNCTION r49w.g(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r49w.f(n) FROM r49w.gate; RETURN 1; END $$;\n"
    "CREATE TABLE r49w.src (body text);\n"
    f"INSERT INTO r49w.src VALUES ($src${SWAP_F}$src$);\n"
    "CREATE FUNCTION r49w.redef(hold float8) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT body FROM r49w.src); LOCK TABLE r49w.gate IN ACCESS EXCLUSIVE MODE; "
    "PERFORM pg_sleep(hold); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r49w, r49x CASCADE;\nDROP FUNCTION IF EXISTS public.r49_swap(text);\n"
)
OK = "SELECT 'ok'::text AS v"
PREP_Q = (query(f"PREPARE r49q AS {OK}"),)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r49", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _window(px) -> bool:
    async def look():
        entry = px.server.catalogs.cache.entries.get("app")
        return entry is not None and entry.code_window()

    return px.call(look())


def _reset(px, pg) -> None:
    """``f`` harmless again, a load through the proxy that shows it, no window open."""
    with RawClient.direct(pg) as c:
        c.query(HARMLESS_F)
        c.query("ALTER TABLE r49w.gate DROP COLUMN IF EXISTS r49c")
    with planted.session(px, px.tokens["migrator"]) as b:
        out = planted.text(b.query("COMMENT ON TABLE r49w.gate IS NULL"))
        assert not planted.is_error(out), out[-300:]
    assert planted.wait_catalog_quiet(px, 5.0)
    time.sleep(0.05)
    assert planted.wait_catalog_quiet(px, 5.0)
    assert not _window(px)


def _two(px, pg, via_proxy: bool):
    if via_proxy:
        _reset(px, pg)
        return planted.session(px), planted.session(px, px.tokens["migrator"])
    with RawClient.direct(pg) as c:
        c.query(HARMLESS_F)
        c.query("ALTER TABLE r49w.gate DROP COLUMN IF EXISTS r49c")
    return RawClient.direct(pg), RawClient.direct(pg)


# --- 1. B redefines f by plain DDL through the proxy (no code: no window) ---------------


def _direct_then(px, pg, before, after, via_proxy: bool, wait_load: bool = False) -> str:
    """A runs ``before``; B (migrator) sends ``SWAP_F`` (autocommit DDL, through the proxy),
    has its answer; A at once sends ``after`` (its call of g runs the new f)."""
    a, b = _two(px, pg, via_proxy)
    try:
        with a, b:
            got = run_steps(a, before)
            out = planted.text(b.query(SWAP_F))
            assert not planted.is_error(out), out[-300:]
            if via_proxy and wait_load:  # the load after B's end has read f's new body
                assert planted.wait_catalog_quiet(px, 5.0)
                time.sleep(0.05)
                assert planted.wait_catalog_quiet(px, 5.0)
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


def _blocked_then(px, pg, before, during, after, via_proxy: bool) -> str:
    """A runs ``before``; B: ``BEGIN``, ``SWAP_F`` (or ``redef``), ``LOCK gate``; A sends
    ``during`` (decided now; blocked on the gate on the server); B commits; A reads, then
    runs ``after``."""
    a, b = _two(px, pg, via_proxy)
    try:
        with a, b:
            got = run_steps(a, before)
            for sql in ("BEGIN", SWAP_F, "ALTER TABLE r49w.gate ADD COLUMN r49c int"):
                out = planted.text(b.query(sql))
                assert not planted.is_error(out), out[-300:]
            a.send(*during)
            assert planted.wait_lock_waiter(pg, 5.0)
            out = planted.text(b.query("COMMIT"))
            assert not planted.is_error(out), out[-300:]
            for _ in range(sum(1 for f in during if f[:1] in (b"Q", b"S"))):
                got += planted.text(a.frames_until_ready())
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


CALL_G = query("SELECT r49w.g('r49q')")
WHY = (
    "LEAK: a function redefined by plain DDL through the proxy counts as such code until a "
    "load reads it (_Entry.unread), but a function that calls it (g: PERFORM f(n)) does not: "
    "its call is decided harmless on the snapshot, nothing runs _code_ran, at_rest cleared "
    "lazy_names at the read start, and the name the new f replaced is executed or bound"
)
DIRECT: dict[str, tuple] = {
    "ddl-then-call-then-execute": ([PREP_Q], [(CALL_G,), (query("EXECUTE r49q"),)], False),  # fixed in session 25 (WHY)
    "ddl-then-call-and-execute-one-text": (
        [PREP_Q], [(query("SELECT r49w.g('r49q'); EXECUTE r49q"),)], False,  # fixed in session 25 (WHY)
    ),
    "ddl-then-call-then-bind": ([PREP_Q], [(CALL_G,), (bind("", "r49q"), execute(), SYNC)], False),  # fixed in session 25 (WHY)
    "ddl-then-load-then-call-then-execute": (
        [PREP_Q], [(CALL_G,), (query("EXECUTE r49q"),)], True, False,
    ),
    "ddl-then-call-protocol-name": (
        [(parse("r49s", OK), SYNC)], [(query("SELECT r49w.g('r49s')"),),
                                      (bind("", "r49s"), execute(), SYNC)], False,  # fixed in session 25 (WHY)
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(DIRECT))
def test_direct_ddl_then_caller(px, pg, name):
    before, after, *wait, _ = DIRECT[name]
    direct = _direct_then(px, pg, before, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _direct_then(px, pg, before, after, True, bool(wait and wait[0]))
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


BLOCKED: dict[str, tuple] = {
    "ddl-block-caller-waits-then-execute": ([PREP_Q], (CALL_G,), [(query("EXECUTE r49q"),)], False),  # fixed in session 25 (WHY)
    "ddl-block-caller-waits-then-bind": (
        [PREP_Q], (CALL_G,), [(bind("", "r49q"), execute(), SYNC)], False,  # fixed in session 25 (WHY)
    ),
    "ddl-block-caller-waits-protocol": (
        [(parse("r49s", OK), SYNC)], (query("SELECT r49w.g('r49s')"),),
        [(bind("", "r49s"), execute(), SYNC)], False,  # fixed in session 25 (WHY)
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(BLOCKED))
def test_ddl_block_caller_waits(px, pg, name):
    before, during, after, _ = BLOCKED[name]
    direct = _blocked_then(px, pg, before, during, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _blocked_then(px, pg, before, during, after, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])
