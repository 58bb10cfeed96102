"""Red-team round 50 (attacks on a30588b, the relay's start-of-read ``ran_lazy`` mark
while ``lazy_code``, and 32fc20c, a function defined or replaced through the proxy opens
the code window, ``code_ran`` in ``_ran_ddl``), time-boxed (18 minutes); the server the
judge.

Grants (agent ``r50-bot``): ``base`` = ``read:r50w.* write:r50w.*`` and ``execute`` on
``public.r50_swap``, ``r50w.f``, ``r50w.g``, ``r50w.h``; ``migrator`` = that and
``ddl:r50w.*``, ``execute`` on ``r50w.trg``.

Planted (schema owner; ``r50x`` outside every grant, ``r50x.vault`` holds the marker):
``public.r50_swap(n)`` (plpgsql: ``DEALLOCATE n`` if held, then ``PREPARE n AS <vault
read>``, the words built from pieces); ``r50w.f(n)`` harmless, ``r50w.f_evil(n)`` the
swap's body; ``r50w.g(n)`` (``PERFORM r50w.f(n) FROM r50w.gate``); ``r50w.v`` (``SELECT 1``,
replaced by the probes), ``r50w.v2`` (``SELECT r50_swap('r50q')``), ``r50w.h()`` (SQL:
``SELECT x FROM r50w.v2``), ``r50w.trg()`` (trigger: ``PERFORM r50_swap('r50q')``).
Every probe runs directly as the upstream login first and must show the marker there
(``RuntimeError`` otherwise). ``PREPARE r50q AS OK`` is a SQL-level name, ``r50s`` a
protocol one.

Leaks found: none.

Held:

1. **Swapping a function's body without defining one** (``test_swap_by_rename``): B
   (migrator) ``ALTER ROUTINE|FUNCTION r50w.f RENAME TO f_old`` then ``f_evil RENAME TO
   f`` (so g runs the swap without any CREATE FUNCTION, which ``_defined_functions`` would
   see), then A calls g and EXECUTEs/binds ``r50q`` (or binds ``r50s``): the proxy
   refuses ``ALTER FUNCTION``/``ALTER ROUTINE`` outright (``deny.unknown``), so the body
   swap cannot be made through it (``SET SCHEMA``, ``OWNER``, ``SECURITY DEFINER`` are the
   same statement kind: not probed one by one).
2. **Objects that attach code to a relation, made through the proxy, read before a load**
   (``test_object_attached``): ``CREATE OR REPLACE VIEW r50w.v`` over ``r50_swap``, over
   the code view ``v2``, over the SQL function ``h`` that reads ``v2``; ``CREATE TRIGGER``
   with ``trg`` then an INSERT. A's read/insert of the object then ``EXECUTE r50q`` (one
   text, two reads, or a Bind): refused (the DDL that names such code counts as running
   it, so the window opens; a view over ``v2`` or ``h`` is such a relation in the
   snapshot; the INSERT is decided as running the trigger). Row security (``ALTER TABLE ... ENABLE ROW
   LEVEL SECURITY``) is refused (``deny.unknown``).
3. **Parked reads** (``test_parked_read``, deterministic, lock-based): B holds a block
   with ``CREATE OR REPLACE FUNCTION r50w.f`` (the swap) and the gate's lock; A sends a
   70 kB ``SELECT r50w.g('r50q')`` (classified off the loop: parked, then ``resume``) and,
   in the same read, ``EXECUTE r50q`` (or in the same text, or ``Bind r50q``, or ``Bind
   r50s``); B commits; A's call runs the new f. The EXECUTE and Binds are refused
   (``deny.execute``/``deny.replaced``): ``resume`` re-enters ``_client_frames``, whose
   start-of-read mark holds for the resumed frames, and B's definition opened the window
   (32fc20c) before A's read began.
4. **Cost: the window closes** (``test_window_closes_after_definition``): a definition
   through the proxy committed, rolled back, failing in a block or failing in autocommit:
   once the block ended and a load ran, ``code_window()`` is False and A's ``SELECT 1``
   then ``EXECUTE r50q`` runs (no window left open forever).

Not tried (time box): ``at_rest`` at a read's start with the read holding a COMMIT that
fills a WITH HOLD cursor over code then an EXECUTE (read only: a cursor declared inside
the transaction keeps the session out of ``at_rest`` until the COMMIT's answer, and a
cursor's DECLARE over code is itself decided as running it); ``CREATE PROCEDURE`` over a
function of the same signature (the server refuses it: not a swap); defaults, CHECKs,
domains, casts and operators made through the proxy (same shape as 2: the defining
statement names the code); workers > 1; dry-run grants.
"""

from __future__ import annotations

import time

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r50-bot"
MARK = "R50-VAULT-3e9a"
FNS = "public.r50_swap"
SCOPES = f"read:r50w.* write:r50w.* execute:{FNS},r50w.f,r50w.g,r50w.h"
GRANTS = {
    "migrator": f"read:r50w.* write:r50w.* ddl:r50w.* execute:{FNS},r50w.f,r50w.g,r50w.trg,r50w.h"
}
VAULT = "SELECT r50_secret AS v FROM r50x.vault"
SWAP_BODY = (
    "BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = n) THEN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); END IF; "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; RETURN 2; END"
)
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r50w.f(n text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$"
)
EVIL_F = f"CREATE OR REPLACE FUNCTION r50w.f_evil(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r50w; CREATE SCHEMA r50x;\n"
    f"CREATE TABLE r50x.vault (r50_secret text); INSERT INTO r50x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r50w.gate (id int); INSERT INTO r50w.gate VALUES (1);\n"
    f"CREATE FUNCTION public.r50_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$;\n"
    f"{HARMLESS_F};\n{EVIL_F};\n"
    "CREATE FUNCTION r50w.g(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r50w.f(n) FROM r50w.gate; RETURN 1; END $$;\n"
    "CREATE VIEW r50w.v AS SELECT 1 AS x;\n"
    "CREATE TABLE r50w.t (id int);\n"
    "CREATE VIEW r50w.v2 AS SELECT public.r50_swap('r50q') AS x;\n"
    "CREATE FUNCTION r50w.h() RETURNS SETOF int LANGUAGE sql AS $$ SELECT x FROM r50w.v2 $$;\n"
    "CREATE TABLE r50w.r (id int); INSERT INTO r50w.r VALUES (1);\n"
    "CREATE FUNCTION r50w.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r50_swap('r50q'); RETURN NEW; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r50w, r50x CASCADE;\nDROP FUNCTION IF EXISTS public.r50_swap(text);\n"
)
OK = "SELECT 'ok'::text AS v"
PREP_Q = (query(f"PREPARE r50q AS {OK}"),)
RESTORE = (
    "ALTER TABLE r50w.gate DROP COLUMN IF EXISTS r50c; "
    "DROP FUNCTION IF EXISTS r50w.f(text); DROP FUNCTION IF EXISTS r50w.f_old(text); "
    "DROP FUNCTION IF EXISTS r50w.f_evil(text); "
    f"{HARMLESS_F}; {EVIL_F}; CREATE OR REPLACE VIEW r50w.v AS SELECT 1 AS x; "
    "DROP TRIGGER IF EXISTS r50tr ON r50w.t; DROP POLICY IF EXISTS r50p ON r50w.r; "
    "ALTER TABLE r50w.r NO FORCE ROW LEVEL SECURITY; ALTER TABLE r50w.r DISABLE ROW LEVEL SECURITY"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r50", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _window(px) -> bool:
    async def look():
        entry = px.server.catalogs.cache.entries.get("app")
        return entry is not None and entry.code_window()

    return px.call(look())


def _quiet(px) -> None:
    assert planted.wait_catalog_quiet(px, 5.0)
    time.sleep(0.05)
    assert planted.wait_catalog_quiet(px, 5.0)


def _reset(px, pg) -> None:
    with RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness; " + RESTORE + "; RESET ROLE")
    with planted.session(px, px.tokens["migrator"]) as b:
        out = planted.text(b.query("COMMENT ON TABLE r50w.gate IS NULL"))
        assert not planted.is_error(out), out[-300:]
    _quiet(px)
    assert not _window(px)


def _two(px, pg, via_proxy: bool):
    if via_proxy:
        _reset(px, pg)
        return planted.session(px), planted.session(px, px.tokens["migrator"])
    with RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness; " + RESTORE + "; RESET ROLE")
    return RawClient.direct(pg), RawClient.direct(pg)


def _swap_then(px, pg, before, ddl, after, via_proxy: bool) -> str:
    a, b = _two(px, pg, via_proxy)
    try:
        with a, b:
            got = run_steps(a, before)
            for sql in ddl:
                out = planted.text(b.query(sql))
                got += out
                if planted.is_error(out):
                    return got
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query("SET ROLE pgwitness; " + RESTORE + "; RESET ROLE")
    return got


CALL_G = query("SELECT r50w.g('r50q')")
RENAME_ROUTINE = (
    "ALTER ROUTINE r50w.f(text) RENAME TO f_old",
    "ALTER ROUTINE r50w.f_evil(text) RENAME TO f",
)
RENAME_FUNCTION = (
    "ALTER FUNCTION r50w.f(text) RENAME TO f_old",
    "ALTER FUNCTION r50w.f_evil(text) RENAME TO f",
)
AFTER_EXEC = [(CALL_G,), (query("EXECUTE r50q"),)]
AFTER_BIND = [(CALL_G,), (bind("", "r50q"), execute(), SYNC)]
SWAPS: dict[str, tuple] = {
    "alter-routine-rename-then-execute": ([PREP_Q], RENAME_ROUTINE, AFTER_EXEC, False),
    "alter-routine-rename-then-bind": ([PREP_Q], RENAME_ROUTINE, AFTER_BIND, False),
    "alter-routine-rename-block-then-execute": (
        [PREP_Q], ("BEGIN", *RENAME_ROUTINE, "COMMIT"), AFTER_EXEC, False),
    "alter-function-rename-then-execute": ([PREP_Q], RENAME_FUNCTION, AFTER_EXEC, False),
    "alter-routine-rename-protocol-name": (
        [(parse("r50s", OK), SYNC)], RENAME_ROUTINE,
        [(query("SELECT r50w.g('r50s')"),), (bind("", "r50s"), execute(), SYNC)], False),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(SWAPS))
def test_swap_by_rename(px, pg, name):
    before, ddl, after, _ = SWAPS[name]
    direct = _swap_then(px, pg, before, ddl, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _swap_then(px, pg, before, ddl, after, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


VIEW_SWAP = ("CREATE OR REPLACE VIEW r50w.v AS SELECT public.r50_swap('r50q') AS x",)
VIEW_OVER_VIEW = ("CREATE OR REPLACE VIEW r50w.v AS SELECT x FROM r50w.v2",)
VIEW_OVER_SQL_FN = ("CREATE OR REPLACE VIEW r50w.v AS SELECT r50w.h() AS x",)
TRIGGER = ("CREATE TRIGGER r50tr BEFORE INSERT ON r50w.t FOR EACH ROW EXECUTE FUNCTION r50w.trg()",)
RLS = (
    "ALTER TABLE r50w.r ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE r50w.r FORCE ROW LEVEL SECURITY",
    "CREATE POLICY r50p ON r50w.r USING (public.r50_swap('r50q') > 0)",
)
OBJECTS: dict[str, tuple] = {
    "view-replaced-then-read-then-execute": (
        [PREP_Q], VIEW_SWAP, [(query("SELECT x FROM r50w.v"),), (query("EXECUTE r50q"),)], False),
    "view-replaced-then-read-and-execute-one-text": (
        [PREP_Q], VIEW_SWAP, [(query("SELECT x FROM r50w.v; EXECUTE r50q"),)], False),
    "view-replaced-then-read-then-bind": (
        [PREP_Q], VIEW_SWAP, [(query("SELECT x FROM r50w.v"),), (bind("", "r50q"), execute(), SYNC)], False),
    "view-over-code-view-then-read-then-execute": (
        [PREP_Q], VIEW_OVER_VIEW, [(query("SELECT x FROM r50w.v"),), (query("EXECUTE r50q"),)], False),
    "view-over-sql-function-then-read-then-execute": (
        [PREP_Q], VIEW_OVER_SQL_FN, [(query("SELECT x FROM r50w.v"),), (query("EXECUTE r50q"),)], False),
    "trigger-then-insert-then-execute": (
        [PREP_Q], TRIGGER, [(query("INSERT INTO r50w.t VALUES (1)"),), (query("EXECUTE r50q"),)], False),
    "row-policy-then-read-then-execute": (
        [PREP_Q], RLS, [(query("SELECT id FROM r50w.r"),), (query("EXECUTE r50q"),)], False),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(OBJECTS))
def test_object_attached(px, pg, name):
    before, ddl, after, _ = OBJECTS[name]
    direct = _swap_then(px, pg, before, ddl, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _swap_then(px, pg, before, ddl, after, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


BAD_F = "CREATE OR REPLACE FUNCTION r50w.f(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$"
WINDOW_ENDS: dict[str, tuple] = {
    "definition-rolled-back": ("BEGIN", HARMLESS_F, "ROLLBACK"),
    "definition-failed-in-block": ("BEGIN", BAD_F, "ROLLBACK"),
    "definition-failed-autocommit": (BAD_F,),
    "definition-committed": ("BEGIN", HARMLESS_F, "COMMIT"),
}


@pytest.mark.parametrize("name", list(WINDOW_ENDS))
def test_window_closes_after_definition(px, pg, name):
    """Cost: a definition through the proxy (committed, rolled back or failed) opens the
    code window; once its block ended and a load read the catalog, it is closed and a
    session's SQL-level EXECUTE after a statement runs again."""
    _reset(px, pg)
    with planted.session(px) as a, planted.session(px, px.tokens["migrator"]) as b:
        run_steps(a, [PREP_Q])
        for sql in WINDOW_ENDS[name]:
            b.query(sql)
        _quiet(px)
        assert not _window(px), name
        got = run_steps(a, [(query("SELECT 1"),), (query("EXECUTE r50q"),)])
        assert "ok" in got and not planted.refused(got), got[-600:]


SWAP_F = (
    f"CREATE OR REPLACE FUNCTION r50w.f(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$"
)
PAD = "/* " + "p" * 70000 + " */"  # over OFFLOAD_MIN: the read is parked, then resumed


def _blocked_then(px, pg, before, during, after, via_proxy: bool) -> str:
    """A runs ``before``; B: ``BEGIN``, ``SWAP_F``, ``ALTER TABLE gate ADD COLUMN`` (holds
    the gate); A sends ``during`` (a large statement: parked for classification, resumed;
    its call of g blocks on the gate on the server); B commits; A reads, runs ``after``."""
    a, b = _two(px, pg, via_proxy)
    try:
        with a, b:
            got = run_steps(a, before)
            for sql in ("BEGIN", SWAP_F, "ALTER TABLE r50w.gate ADD COLUMN r50c int"):
                out = planted.text(b.query(sql))
                assert not planted.is_error(out), out[-300:]
            a.send(*during)
            # (through the proxy a text refused whole is never sent: no waiter)
            assert planted.wait_lock_waiter(pg, 5.0) or via_proxy
            out = planted.text(b.query("COMMIT"))
            assert not planted.is_error(out), out[-300:]
            for _ in range(sum(1 for f in during if f[:1] in (b"Q", b"S"))):
                got += planted.text(a.frames_until_ready())
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(
                "SET ROLE pgwitness; "
                + RESTORE
                + "; ALTER TABLE r50w.gate DROP COLUMN IF EXISTS r50c; RESET ROLE"
            )
    return got


PARKED: dict[str, tuple] = {
    "parked-call-and-execute-one-text": (
        [PREP_Q], (query(f"SELECT r50w.g('r50q') {PAD}; EXECUTE r50q"),), [], False),
    "parked-call-then-execute-same-read": (
        [PREP_Q], (query(f"SELECT r50w.g('r50q') {PAD}"), query("EXECUTE r50q")), [], False),
    "parked-call-then-bind-same-read": (
        [PREP_Q], (query(f"SELECT r50w.g('r50q') {PAD}"), bind("", "r50q"), execute(), SYNC), [], False),
    "parked-call-protocol-name-same-read": (
        [(parse("r50s", OK), SYNC)],
        (query(f"SELECT r50w.g('r50s') {PAD}"), bind("", "r50s"), execute(), SYNC), [], False),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(PARKED))
def test_parked_read(px, pg, name):
    before, during, after, _ = PARKED[name]
    direct = _blocked_then(px, pg, before, during, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _blocked_then(px, pg, before, during, after, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])
