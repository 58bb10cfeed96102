"""Red-team round 48 (attacks on 6355bf3, round 47's fixes, and b08af57: while code may run
(``lazy_code``, also in another session's code window) the relay marks each Execute and
Sync as a statement run (``ran_lazy``); a protocol Bind of a SQL-level name is refused
under the same condition as its EXECUTE; a text that ran such code forgets its own
PREPAREs), time-boxed (40 minutes); the server the judge.

Grants (agent ``r48-bot``): ``base`` = ``read:r48w.* write:r48w.*`` and ``execute`` on
``public.r48_swap``, ``public.r48_noop``, ``r48w.f``, ``r48w.g``, ``r48w.trg``;
``migrator`` = that and ``ddl:r48w.*``, ``execute`` on ``r48w.redef``.

Planted (schema owner; ``r48x`` outside every grant, ``r48x.vault`` holds the marker):
``public.r48_swap(n)`` (plpgsql: ``DEALLOCATE n`` if held, then ``PREPARE n AS <vault
read>``, the words built from pieces); ``public.r48_noop(hold)`` (dynamic SQL touching no
name); ``r48w.f(n)`` (plpgsql ``RETURN 1``: harmless until redefined); ``r48w.g(n)``
(``PERFORM r48w.f(n)``: f called through SPI, so the session reads f's new body);
``r48w.t`` with a ``BEFORE INSERT`` row trigger ``r48w.trg()`` = ``PERFORM r48w.f(NEW.note)``;
the domain ``r48w.dom`` = ``text CHECK (r48w.f(VALUE) > 0)``; ``r48w.redef(hold)``
(``EXECUTE`` of the ``CREATE OR REPLACE FUNCTION r48w.f`` kept in ``r48w.src``, whose new
body is ``r48_swap``'s). In every window probe session B (``migrator``, through the proxy)
runs ``SELECT r48w.redef(0)`` and has its answer before A goes on: the window is open
(``code_ran``: A's ``catalog_changed`` sets ``lazy_code``) before A sends what runs the new
``f``, so nothing here is round 47's residue of statements decided before the window.
Every probe runs directly as the upstream login first and must show the marker there
(``RuntimeError`` otherwise). ``OK`` = ``SELECT 'ok'::text AS v``; ``PREPARE r48q AS OK``
is a SQL-level name, ``r48s`` a protocol one.

Leaks found (strict xfails when found; both fixed in session 25, their probes pass now:
while ``lazy_code`` the relay marks ``ran_lazy`` at the start of every client read, before
anything in it is decided, so CopyData, a Bind's parameter checks and any other message
count as run):

1. **COPY rows run the redefined code without marking ``ran_lazy``** (``copy-*`` in
   ``COPY``). A: ``PREPARE r48q AS OK``; ``Query "COPY r48w.t (id, note) FROM STDIN"``
   (decided now, f harmless; A waits in copy-in, CopyInResponse received). B: ``SELECT
   r48w.redef(0)`` (window open, A's ``lazy_code`` set). A: ``CopyData "2\tr48q\n"``,
   ``CopyDone``: the trigger calls the new f, which replaces ``r48q`` with the vault read.
   Then ``EXECUTE r48q`` (``-then-execute``), a protocol ``Bind "" r48q``/Execute/Sync
   (``-then-bind``), the same inside ``BEGIN ... COMMIT`` (``copy-in-block-then-execute``),
   or the rows sent only once the load after B's end came (the window closed,
   ``copy-trigger-after-the-load-then-execute``): the vault's row every time. Why: the
   relay marks ``ran_lazy`` at Execute and Sync only; CopyData and CopyDone are not in
   ``_CHECKED_LAZY`` and a simple-protocol COPY has no Sync, and the COPY Query was decided
   before ``lazy_code``, so ``ran_lazy`` stays False: ``_apply_session_state``'s ``code``
   and ``_check_bind``'s refusal are False, and ``at_rest`` (``not lazy_code and ran_lazy``)
   keeps the SQL-level names after the window. This is not the pre-window residue: the rows
   are sent (and could be looked at) after the window opened, as an Execute of a portal
   bound before the window is (that control holds). Fix guess: while ``lazy_code``, mark
   ``ran_lazy`` at CopyData/CopyDone too (add them to ``_CHECKED_LAZY``), or mark it at
   ``catalog_changed``/``code_ran`` for a session with a COPY in progress (the relay knows:
   CopyInResponse seen, no CommandComplete yet).
2. **A Bind runs the redefined code before any Execute or Sync** (``bind-domain-check-*``
   in ``WIN``). A: ``PREPARE r48q AS OK``. B: redef. A, one Sync group: ``Parse ""
   "SELECT $1::r48w.dom AS v"``, ``Bind "p" "" ('r48q')`` (the server converts the parameter
   to the domain at the Bind: its CHECK calls the new f, which replaces ``r48q``), then
   ``Bind "" "r48q"``/Execute/Sync (``-then-bind-sql-name``), or ``Parse "" "EXECUTE
   r48q"``/Bind/Execute (``-then-execute-parse``), or a protocol statement ``e`` =
   ``EXECUTE r48q`` parsed before, bound (``-then-followed-execute``): the vault's row. Why:
   the unnamed statement's Bind is not looked at (``bind_checked("")``), a Parse marks
   nothing, and the relay marks ``ran_lazy`` only at the next Execute or Sync, which come
   after the Bind of ``r48q`` (or the Parse/Bind of the EXECUTE) was decided with
   ``ran_lazy`` False. Fix guess: while ``lazy_code``, every Bind is a statement run (a
   parameter's input function or domain CHECK, and planning, run code): set ``ran_lazy``
   at each Bind forwarded (looked at or not), as at Execute; more generally mark it when
   the relay forwards any message that makes the server act (Bind, Execute, CopyData,
   CopyDone, Sync, Query), not where a statement is decided.

Held (passing tests): the protocol name after the COPY rows (``copy-trigger-protocol-name``:
26000, checked at every Bind while ``lazy_code``); a portal bound before the window and
executed after it, then a Bind of ``r48q`` in the same group or an ``EXECUTE r48q`` Query
(``portal-bound-before-*``: the Execute marks ``ran_lazy``); a cursor declared before the
window, ``FETCH``ed after it, then ``EXECUTE r48q`` (the FETCH Query marks it); in one
session without a window, the Bind-time domain CHECK when it runs the swap itself
(``own-bind-domain2-*``: the Parse is decided as such code; note: planting such a domain
makes every write to a triggered relation count as such code, which is why it is planted
only for those probes); cost: psycopg ``prepare_threshold=0`` in pipelines around one
call of dynamic-SQL code, and asyncpg's statement cache while another session opens the
window, give every row (checks invisible).

Not tried (time box), or read only: ``COPY ... FROM STDIN WHERE f(...)`` (no marker
directly: the COPY's expression keeps f's old body; the trigger's SPI reads the new one);
two checks pending at once, a check and a denial in one Sync group, the check's "DO" split
across reads, Flush between (read: ``verified`` compares the epoch, and while ``lazy_code``
every Bind is checked anyway); EXPLAIN ANALYZE EXECUTE and CREATE TABLE AS EXECUTE (round
47: ``deny.unknown``); plpgsql ``EXECUTE 'EXECUTE q'`` (code running the client's statement
gains nothing over running its own); the extended-protocol COPY (its Sync marks, but a Bind
of ``r48q`` before that Sync is family 1 again: not run); FunctionCall (always refused);
``workers > 1`` and owner DDL outside the proxy (residues).
"""

from __future__ import annotations

import time

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r48-bot"
MARK = "R48-VAULT-3e9a"
FNS = "public.r48_swap,public.r48_noop"
SCOPES = f"read:r48w.* write:r48w.* execute:{FNS},r48w.f,r48w.g,r48w.trg"
GRANTS = {
    "migrator": f"read:r48w.* write:r48w.* ddl:r48w.* execute:{FNS},r48w.f,r48w.g,r48w.trg,r48w.redef"
}
VAULT = "SELECT r48_secret AS v FROM r48x.vault"
SWAP_BODY = (
    "BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = n) THEN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); END IF; "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; RETURN 2; END"
)
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r48w.f(n text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r48w; CREATE SCHEMA r48x;\n"
    f"CREATE TABLE r48x.vault (r48_secret text); INSERT INTO r48x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r48w.t (id int, note text);\n"
    "CREATE TABLE r48w.plain (id int, note text);\n"
    "CREATE TABLE r48w.gate (id int); INSERT INTO r48w.gate VALUES (1);\n"
    f"CREATE FUNCTION public.r48_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$;\n"
    "CREATE FUNCTION public.r48_noop(hold float8) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'SELECT pg_sleep(' || hold || ')'; RETURN 1; END $$;\n"
    f"{HARMLESS_F};\n"
    # a trigger of r48w.t that calls f on each row's note (harmless while f is)
    "CREATE FUNCTION r48w.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r48w.f(NEW.note); RETURN NEW; END $$;\n"
    "CREATE TRIGGER t_f BEFORE INSERT ON r48w.t FOR EACH ROW EXECUTE FUNCTION r48w.trg();\n"
    # a domain whose CHECK calls f (a Bind's parameter of it runs f at the Bind)
    "CREATE DOMAIN r48w.dom AS text CHECK (r48w.f(VALUE) > 0);\n"
    # f called through SPI (a new statement: the session reads f's new body)
    "CREATE FUNCTION r48w.g(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r48w.f(n) FROM r48w.gate; RETURN 1; END $$;\n"
    "CREATE TABLE r48w.src (body text);\n"
    "INSERT INTO r48w.src VALUES ($src$CREATE OR REPLACE FUNCTION r48w.f(n text) RETURNS int "
    f"LANGUAGE plpgsql AS $f$ {SWAP_BODY} $f$$src$);\n"
    "CREATE FUNCTION r48w.redef(hold float8) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT body FROM r48w.src); LOCK TABLE r48w.gate IN ACCESS EXCLUSIVE MODE; "
    "PERFORM pg_sleep(hold); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r48w, r48x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r48_swap(text), public.r48_noop(float8);\n"
)
OK = "SELECT 'ok'::text AS v"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r48", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _code_ended(px):
    async def look():
        entry = px.server.catalogs.cache.entries.get("app")
        return None if entry is None else entry.code_ended

    return px.call(look())


def _reset(px, pg) -> None:
    """``f`` harmless again, a load through the proxy that shows it, no window open."""
    with RawClient.direct(pg) as c:
        c.query(HARMLESS_F)
        c.query("TRUNCATE r48w.t, r48w.plain")
    with planted.session(px, px.tokens["migrator"]) as b:
        out = planted.text(b.query("COMMENT ON TABLE r48w.gate IS NULL"))
        assert not planted.is_error(out), out[-300:]
    assert planted.wait_catalog_quiet(px, 5.0)
    time.sleep(0.05)
    assert planted.wait_catalog_quiet(px, 5.0)
    assert _code_ended(px) == float("-inf")


def copy_data(text: str) -> bytes:
    return frame(b"d", text.encode())


COPY_DONE = frame(b"c")


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


# --- 1. another session's code redefines f; this one's COPY rows run it -------------------


def _copy_in_window(px, pg, before, copy_sql, rows, after, via_proxy: bool,
                    wait_load: bool = False) -> str:  # fmt: skip
    """A runs ``before``, then starts ``copy_sql`` (COPY ... FROM STDIN: decided now, while
    f is harmless); B redefines f by code (the window opens: A's ``lazy_code``); A sends
    the rows (its trigger or WHERE calls the new f) and CopyDone, then ``after``."""
    if via_proxy:
        _reset(px, pg)
        a, b = planted.session(px), planted.session(px, px.tokens["migrator"])
    else:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
            c.query("TRUNCATE r48w.t, r48w.plain")
        a, b = RawClient.direct(pg), RawClient.direct(pg)
    try:
        with a, b:
            got = run_steps(a, before)
            a.send(query(copy_sql))
            msgs = a.read_until("G")
            got += repr(msgs)
            out = planted.text(b.query("SELECT r48w.redef(0)"))
            assert not planted.is_error(out), out[-300:]
            if via_proxy and wait_load:
                assert planted.wait_catalog_quiet(px, 5.0)
                time.sleep(0.05)
            a.send(*[copy_data(r) for r in rows], COPY_DONE)
            got += planted.text(a.frames_until_ready())
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


PREP_Q = (query(f"PREPARE r48q AS {OK}"),)
COPY_T = "COPY r48w.t (id, note) FROM STDIN"
COPY_WHY = (
    "LEAK: a COPY FROM STDIN started before another session's code opened the window; its "
    "rows (CopyData) arrive after and run the redefined f (a trigger, a WHERE), but the relay "
    "marks ran_lazy only at Execute and Sync (CopyData is not looked at): the SQL-level name "
    "f replaced stays held and its EXECUTE (or Bind) runs what the code prepared"
)
COPY: dict[str, tuple] = {
    "copy-trigger-then-execute": (
        [PREP_Q], COPY_T, ["2\tr48q\n"], [(query("EXECUTE r48q"),)], False, False,  # fixed in session 25 (COPY_WHY)

    ),
    "copy-trigger-then-bind": ([PREP_Q], COPY_T, ["2\tr48q\n"], [_one("r48q")], False, False),  # fixed in session 25 (COPY_WHY)
    "copy-in-block-then-execute": (
        [(query("BEGIN"),), PREP_Q], COPY_T, ["2\tr48q\n"],
        [(query("EXECUTE r48q"),), (query("COMMIT"),)], False, False,  # fixed in session 25 (COPY_WHY)

    ),
    # the rows sent once the load after B's end came (the window closed; the new snapshot
    # shows f as such code: lazy_code again, until the next at_rest)
    "copy-trigger-after-the-load-then-execute": (
        [PREP_Q], COPY_T, ["2\tr48q\n"], [(query("EXECUTE r48q"),)], True, False,  # fixed in session 25 (COPY_WHY)

    ),
    # held: a protocol name is checked at its Bind while lazy_code
    "copy-trigger-protocol-name": (
        [(parse("r48s", OK), SYNC)], COPY_T, ["2\tr48s\n"], [_one("r48s")], False, False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(COPY))
def test_copy_rows_in_window(px, pg, name):
    before, copy_sql, rows, after, wait_load, _ = COPY[name]
    direct = _copy_in_window(px, pg, before, copy_sql, rows, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _copy_in_window(px, pg, before, copy_sql, rows, after, True, wait_load)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 2. another session's code redefines f; this one runs it at a Bind -------------------


def _in_window(px, pg, before, during, after, via_proxy: bool, wait_load: bool = False) -> str:
    """A runs ``before``; B redefines f by code (the window opens in A); A runs ``during``;
    (``wait_load``: the load after B's end came, the window closed); A runs ``after``."""
    if via_proxy:
        _reset(px, pg)
        a, b = planted.session(px), planted.session(px, px.tokens["migrator"])
    else:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
        a, b = RawClient.direct(pg), RawClient.direct(pg)
    try:
        with a, b:
            got = run_steps(a, before)
            out = planted.text(b.query("SELECT r48w.redef(0)"))
            assert not planted.is_error(out), out[-300:]
            got += run_steps(a, during)
            if via_proxy and wait_load:
                assert planted.wait_catalog_quiet(px, 5.0)
                time.sleep(0.05)
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


DOM_BIND = (parse("", "SELECT $1::r48w.dom AS v"), bind("p", "", params=(b"r48q",)))
BIND_WHY = (
    "LEAK: in another session's code window, a Bind of the unnamed statement whose "
    "parameter is of a domain whose CHECK calls f runs the redefined f at the Bind; the "
    "unnamed Bind is not looked at and nothing marks ran_lazy before the next Execute or "
    "Sync, so a Bind of the SQL-level name f replaced, in the same group, is allowed"
)
WIN: dict[str, tuple] = {
    "bind-domain-check-then-bind-sql-name": (
        [PREP_Q], [(*DOM_BIND, bind("", "r48q"), execute(), SYNC)], [], False, False,  # fixed in session 25 (BIND_WHY)

    ),
    "bind-domain-check-then-execute-parse": (
        [PREP_Q], [(*DOM_BIND, parse("", "EXECUTE r48q"), bind(), execute(), SYNC)], [],
        False, False,  # fixed in session 25 (BIND_WHY)

    ),
    "bind-domain-check-then-followed-execute": (
        [PREP_Q, (parse("e", "EXECUTE r48q"), SYNC)],
        [(*DOM_BIND, bind("", "e"), execute(), SYNC)], [],
        False, False,  # fixed in session 25 (BIND_WHY)

    ),
    # held (controls): a portal bound before the window, executed after it (the Execute
    # marks ran_lazy), then the SQL-level name bound or executed
    "portal-bound-before-executed-after": (
        [PREP_Q, (query("BEGIN"),),
         (parse("c", "SELECT r48w.g('r48q')"), bind("p", "c"), SYNC)],
        [(execute("p"), bind("", "r48q"), execute(), SYNC)], [(query("COMMIT"),)],
        False, False,
    ),
    "portal-bound-before-executed-after-then-query": (
        [PREP_Q, (query("BEGIN"),),
         (parse("c", "SELECT r48w.g('r48q')"), bind("p", "c"), SYNC)],
        [(execute("p"), SYNC), (query("EXECUTE r48q"),)], [(query("COMMIT"),)],
        False, False,
    ),
    "cursor-declared-before-fetched-after": (
        [PREP_Q, (query("BEGIN"),),
         (query("DECLARE k CURSOR FOR SELECT r48w.g('r48q')"),)],
        [(query("FETCH ALL FROM k"),), (query("EXECUTE r48q"),)], [(query("COMMIT"),)],
        False, False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(WIN))
def test_in_window(px, pg, name):
    before, during, after, wait_load, _ = WIN[name]
    direct = _in_window(px, pg, before, during, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _in_window(px, pg, before, during, after, True, wait_load)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 3. one session: code reached at a Bind (no window needed) ----------------------------

OWN: dict[str, tuple] = {
    "own-bind-domain2-check-then-bind-sql-name": (
        [PREP_Q,
         (parse("", "SELECT $1::r48w.dom2 AS v"), bind("p", "", params=(b"r48q",)),
          bind("", "r48q"), execute(), SYNC)],
        False,
    ),
    "own-bind-domain2-check-then-query": (
        [PREP_Q,
         (parse("", "SELECT $1::r48w.dom2 AS v"), bind("p", "", params=(b"r48q",)), SYNC),
         (query("EXECUTE r48q"),)],
        False,
    ),
}  # fmt: skip


# (planted only here: a domain whose CHECK runs such code makes every write to a triggered
# relation count as such code, which would hide what the probes above look for)
DOM2 = "CREATE DOMAIN r48w.dom2 AS text CHECK (public.r48_swap(VALUE) > 0)"


@pytest.mark.parametrize("name", planted.cases(OWN))
def test_own_session(px, pg, name):
    steps, _ = OWN[name]
    with RawClient.direct(pg) as c:
        c.query(f"SET ROLE pgwitness; {DOM2}; RESET ROLE")
    try:
        _reset(px, pg)
        with RawClient.direct(pg) as c:
            direct = run_steps(c, steps)
        if not shows(direct, MARK):
            raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
        with planted.session(px) as c:
            got = run_steps(c, steps)
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    finally:
        with RawClient.direct(pg) as c:
            c.query("DROP DOMAIN IF EXISTS r48w.dom2")
        _reset(px, pg)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 4. cost: ordinary drivers around one call of dynamic-SQL code ------------------------


def test_cost_psycopg_pipeline_prepared_around_dynamic_code(px, pg):
    """psycopg with ``prepare_threshold=0`` in a pipeline: statements prepared by the
    protocol, bound before and after one call of dynamic-SQL code (checks injected before
    those Binds) in one transaction and the next: every result as without the proxy."""
    import psycopg

    _reset(px, pg)
    dsn = (
        f"host={px.host} port={px.port} user={AGENT} password={px.token} dbname=app sslmode=disable"
    )
    with psycopg.connect(dsn, prepare_threshold=0) as conn:
        for _ in range(2):
            with conn.pipeline(), conn.transaction():
                curs = [conn.execute("SELECT %s::int + 1 AS v", (i,)) for i in range(3)]
                conn.execute("SELECT public.r48_noop(0)")
                curs += [conn.execute("SELECT %s::int + 1 AS v", (i,)) for i in range(3)]
            assert [c.fetchone()[0] for c in curs] == [1, 2, 3, 1, 2, 3]
        assert conn.execute("SELECT %s::int + 1 AS v", (9,)).fetchone()[0] == 10


def test_cost_asyncpg_cache_while_another_session_opens_the_window(px, pg):
    """asyncpg's statement cache while another session runs dynamic-SQL code (the window
    open for every session): cached statements bound before, in and after the window, in
    and out of transactions, give their rows."""
    import asyncio

    import asyncpg

    _reset(px, pg)

    async def run() -> list[int]:
        conn = await asyncpg.connect(
            host=px.host, port=px.port, user=AGENT, password=px.token, database="app",
            ssl=False, timeout=10,
        )  # fmt: skip
        out = []
        try:
            out.append(await conn.fetchval("SELECT $1::int + 1", 1))
            with planted.session(px, px.tokens["migrator"]) as b:
                assert not planted.is_error(planted.text(b.query("SELECT public.r48_noop(0)")))
            for i in range(3):
                async with conn.transaction():
                    out.append(await conn.fetchval("SELECT $1::int + 1", i))
                out.append(await conn.fetchval("SELECT $1::int + 1", i))
        finally:
            await conn.close()
        return out

    assert asyncio.run(run()) == [2, 1, 1, 2, 2, 3, 3]
