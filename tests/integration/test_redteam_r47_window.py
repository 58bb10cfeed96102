"""Red-team round 47 (attacks on 73fb82d and what it builds on, 6fec4b9/7e4af46/87f2338:
the code window, ``_Entry.code_ended``/``code_window``/``code_ran``, in which every session
of the database checks its protocol statement names at every Bind and refuses a SQL-level
EXECUTE once a statement ran, ``_ran_lazy``, ``at_rest``, ``_apply_session_state``),
time-boxed (50 minutes); the server the judge.

Grants (agent ``r47-bot``): ``base`` = ``read:r47w.* write:r47w.*`` and ``execute`` on
``public.r47_swap``, ``public.r47_noop``, ``r47w.f``; ``migrator`` = that and
``ddl:r47w.*``, ``execute`` on ``r47w.redef``.

Planted (schema owner; ``r47x`` outside every grant, ``r47x.vault`` holds the marker):
``public.r47_swap(n)`` (plpgsql: ``DEALLOCATE n`` if the session holds it, then ``PREPARE n
AS <vault read>``, both words built from pieces); ``public.r47_noop(hold)`` (dynamic SQL
that sleeps); ``r47w.f(n)`` (plpgsql ``RETURN 1``: no DDL code); ``r47w.redef(hold)``
(``EXECUTE`` of the ``CREATE OR REPLACE FUNCTION r47w.f`` kept in ``r47w.src``, whose new
body is ``r47_swap``'s; then ``LOCK TABLE r47w.gate IN ACCESS EXCLUSIVE MODE`` and
``pg_sleep(hold)`` before its transaction commits). ``CALL_F(n)`` = ``SELECT r47w.f(n) FROM
r47w.gate``: sent while ``redef`` holds the gate, it is decided at once by the proxy but
runs on the server only after ``redef`` committed, so it runs the new ``f`` (the lock makes
the window deterministic; no race is needed). Every probe runs directly as the upstream
login first and must show the marker there (``RuntimeError`` otherwise). ``OK`` =
``SELECT 'ok'::text AS v``; ``PREPARE r47q AS OK`` is a SQL-level name, ``r47s`` a protocol
one.

Leaks found (strict xfails when found; 1 and 2 fixed in session 25, their probes pass now:
the relay marks ``ran_lazy`` at each Execute and Sync while ``lazy_code``, a Bind of a
SQL-level name is refused under the same condition as its EXECUTE, and a text that ran
such code forgets the SQL-level names after its own PREPAREs are committed; 3 stays a
residue, see docs/decisions.md):

1. **SQL-level names: a session that runs the redefined function over the extended protocol
   never counts as having run a statement in the window** (``window-*`` in ``WINDOW``).
   Session A: ``PREPARE r47q AS OK``. Session B (migrator, through the proxy): ``SELECT
   r47w.redef(0.6)`` (opens the window: ``code_ran``; A's ``catalog_changed`` sets
   ``lazy_code``). A, in the window: ``Parse "" CALL_F('r47q')``, ``Bind``, ``Execute``, then
   any of: ``Parse "" "EXECUTE r47q"``/Bind/Execute in the same Sync group
   (``-pipeline-execute-parse``); Sync, then a Query ``EXECUTE r47q`` (``-then-query-execute``);
   Sync, the window closed (a load after B's end), then ``EXECUTE r47q``
   (``-then-execute-after-the-window``) or a protocol ``Bind "" r47q`` (``-then-bind-sql-name-
   after-the-window``); or a protocol statement ``e`` = ``EXECUTE r47q`` parsed before, bound
   in the same group (``-followed-execute``) or after the window (``-followed-execute-after-
   the-window``). Every one returns the vault's row. Why: ``_ran_lazy`` is set only by
   ``check_query`` and ``check_bind``; a Parse never sets it, and a Bind of the unnamed
   statement is not looked at (``bind_checked("")`` is False: the ``lazy_code`` clause
   excludes ``""``), so ``_apply_session_state``'s ``code = lazy_code and _ran_lazy`` is False
   at the EXECUTE (the text holds nothing before it), and ``at_rest`` keeps the SQL-level
   names (``if not self.lazy_code and self._ran_lazy``): the session "ran nothing". A protocol
   Bind of a SQL-level name (``_decided_again``: ``prepared``) is not refused in a window at
   all. The protocol-level names held (``window-protocol-name*``: checked at every Bind).
   Fix guess: count what the relay forwards, not what the policy decided: any Bind/Execute
   or Query sent while ``lazy_code`` sets ``_ran_lazy`` (the unnamed Bind included, or set it
   in ``check_parse`` of any statement while ``lazy_code``); and refuse a protocol Bind of a
   SQL-level name (and a followed ``EXECUTE`` statement's Bind) under the same condition as
   the SQL EXECUTE.
2. **A PREPARE earlier in the same text as code survives the code** (``own-same-text-bind``,
   ``-in-a-block``; base grant, one session, no window needed). ``Query "PREPARE r47q AS OK;
   SELECT public.r47_swap('r47q')"``, then ``Bind "" r47q``/Execute/Sync: the vault's row.
   Why: in ``_verdict``, ``_ran_ddl`` (``_code_ran`` -> ``_forget_sql_names``) runs before
   ``_commit_session_state`` adds the text's PREPAREs, so ``r47q`` is held afterwards as if
   prepared after the code; a Query ``EXECUTE r47q`` is refused (``_apply_session_state``'s
   ``code``: ``own-same-text-execute`` holds), but a protocol Bind of the SQL-level name is
   decided on its PREPARE text (``bind_checked`` is False for it: not in ``rebind`` until the
   load, not ``_forgotten``, and the ``lazy_code`` clause covers ``_statements`` only;
   ``verify_name`` skips SQL-level names). Once a load came (``own-same-text-bind-later``)
   the name is refused. Fix guess: forget the SQL-level names after committing the text's
   session state when code ran after a PREPARE in it (text order), and refuse a Bind of a
   SQL-level name while ``lazy_code and _ran_lazy`` as EXECUTE is.
3. **Statements decided before the window opened run the redefined code after it**
   (``pre-window-query``, ``pre-window-pipeline``). A: ``PREPARE r47q AS OK`` (or ``Parse
   r47s OK``); A sends ``SELECT pg_sleep(0.8); SELECT r47w.f('r47q'); EXECUTE r47q`` (or the
   pipeline ``pg_sleep``, ``f('r47s')``, ``Bind r47s``, one Sync); 0.2 s later B (migrator,
   through the proxy) runs ``SELECT r47w.redef(0)``: every statement of A was decided and
   forwarded with no window open (``f`` harmless in the snapshot, no check injected before
   ``Bind r47s``), and runs after B committed: the vault's row, over both protocols,
   protocol-level names included. The window covers messages that arrive after
   ``code_ran``, not what is in flight. Fix guess: as ``writes_moved`` does for DDL blocks
   (round 36), a session with messages upstream when another session's code opens a window
   treats them as run in it: withhold what comes back for them (or end the session), mark
   ``_ran_lazy`` and every held name unverified.

Cost (measured, not a leak): any session calling any dynamic-SQL function (``SELECT
public.r47_noop(0.6)``, which touches no name) opens the window for every session of the
database. A psql-like session holding ``PREPARE r47q AS OK`` then gets its first ``EXECUTE
r47q`` in the window, its second refused ("may not EXECUTE r47q after code that may replace
prepared statements ran in this transaction"), and after the window every ``EXECUTE r47q``
refused ("code this session ran may have replaced it ... PREPARE it again"): both messages
blame the session, which ran no such code. Every protocol Bind during the window carries a
check (invisible, one DO each).

Held (passing tests): in the window, a Query text ``CALL_F; EXECUTE r47q``
(``window-query-one-text``: refused), a Query ``CALL_F`` then ``EXECUTE r47q`` after the window
(forgotten), protocol names bound in the same pipeline as the call or after the window
(26000, ``deny.replaced``); in one session: the same-text PREPARE then ``EXECUTE`` at once or
after a load, a Bind of it after a load, the pipeline ``PREPARE``/swap then ``EXECUTE`` or
Bind, a PREPARE before the code in another text then Bind (forgotten), a followed ``EXECUTE``
statement after the same text (refused), ``CREATE TABLE AS EXECUTE`` (``deny.unknown``), and
``EXPLAIN EXECUTE`` (``deny.unknown``; PostgreSQL allows neither ``DECLARE ... FOR EXECUTE``
nor ``COPY (EXECUTE ...)``).

Not tried (time box), or read only: proxies with ``proxy.workers > 1`` (read: ``code_ran``
touches only this worker's ``_Entry``; another worker hears the DDL as ``ddl`` news,
``invalidate``, which opens no window there, so round 46's cross-session redefinition
should leak again when the sessions land on different workers; not run); PREPARE
TRANSACTION/COMMIT PREPARED (refused, ``deny.two_phase``, and the test cluster has
``max_prepared_transactions = 0``); DDL code reached where ``_ran_ddl`` does not see it
(COPY into a triggered table, a Bind's parameter domain CHECK, a default); COMMIT AND
CHAIN and savepoints in B's block (read: the block stays counted, the window open: costs
only); a WITH HOLD cursor or suspended portal across ``at_rest``.
"""

from __future__ import annotations

import time

import pytest

from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r47-bot"
MARK = "R47-VAULT-b51d"
FNS = "public.r47_swap,public.r47_noop"
SCOPES = f"read:r47w.* write:r47w.* execute:{FNS},r47w.f"
GRANTS = {"migrator": f"read:r47w.* write:r47w.* ddl:r47w.* execute:{FNS},r47w.f,r47w.redef"}
VAULT = "SELECT r47_secret AS v FROM r47x.vault"
SWAP_BODY = (
    "BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = n) THEN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); END IF; "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; RETURN 2; END"
)
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r47w.f(n text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r47w; CREATE SCHEMA r47x;\n"
    f"CREATE TABLE r47x.vault (r47_secret text); INSERT INTO r47x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r47w.t (id int, note text); INSERT INTO r47w.t VALUES (1, 'one');\n"
    "CREATE TABLE r47w.gate (id int); INSERT INTO r47w.gate VALUES (1);\n"
    f"CREATE FUNCTION public.r47_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$;\n"
    "CREATE FUNCTION public.r47_noop(hold float8) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'SELECT pg_sleep(' || hold || ')'; RETURN 1; END $$;\n"
    f"{HARMLESS_F};\n"
    "CREATE TABLE r47w.src (body text);\n"
    "INSERT INTO r47w.src VALUES ($src$CREATE OR REPLACE FUNCTION r47w.f(n text) RETURNS int "
    f"LANGUAGE plpgsql AS $f$ {SWAP_BODY} $f$$src$);\n"
    # redefines f by code (its CREATE OR REPLACE read from a row), then holds the gate
    # locked for ``hold`` seconds before its transaction commits
    "CREATE FUNCTION r47w.redef(hold float8) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT body FROM r47w.src); LOCK TABLE r47w.gate IN ACCESS EXCLUSIVE MODE; "
    "PERFORM pg_sleep(hold); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r47w, r47x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r47_swap(text), public.r47_noop(float8);\n"
)
OK = "SELECT 'ok'::text AS v"
CALL_F = "SELECT r47w.f('{n}') FROM r47w.gate"
SWAP = "SELECT public.r47_swap('{n}')"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r47", agent=AGENT, scopes=SCOPES,
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
    with planted.session(px, px.tokens["migrator"]) as b:
        out = planted.text(b.query("COMMENT ON TABLE r47w.t IS NULL"))
        assert not planted.is_error(out), out[-300:]
    assert planted.wait_catalog_quiet(px, 5.0)
    time.sleep(0.05)
    assert planted.wait_catalog_quiet(px, 5.0)
    assert _code_ended(px) == float("-inf")


def _call(n: str) -> tuple[bytes, ...]:
    return (parse("", CALL_F.format(n=n)), bind(), execute())


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


# --- 1. another session's code redefines f: the window ----------------------------------


def _in_window(px, pg, steps, via_proxy: bool) -> str:
    """Session A runs ``before``; B redefines ``f`` by code and holds the gate 0.6 s; A
    sends ``during`` at once (its call of f waits on the gate: it runs the new f); once B
    is done (and, through the proxy, the load after it: the window closed), A runs
    ``after``. Every byte A received."""
    before, during, after = steps
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
            b.send(query("SELECT r47w.redef(0.6)"))
            time.sleep(0.1)
            got += run_steps(a, during)
            out = planted.text(b.frames_until_ready())
            assert not planted.is_error(out), out[-300:]
            if via_proxy:
                assert planted.wait_catalog_quiet(px, 5.0)
                time.sleep(0.05)
            got += run_steps(a, after)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


PREP_Q = (query(f"PREPARE r47q AS {OK}"),)
PREP_E = (parse("e", "EXECUTE r47q"), SYNC)
WINDOW_WHY = (
    "LEAK: another session's code redefined f (the window is open), and this session ran "
    "it over the extended protocol: a Parse never sets _ran_lazy and an unnamed Bind is not "
    "looked at, so an EXECUTE of (or a Bind of) the SQL-level name it replaced is allowed, "
    "in the window and after it (at_rest keeps the names of a session that 'ran nothing')"
)
WINDOW: dict[str, tuple] = {
    "window-pipeline-execute-parse": (
        ([PREP_Q], [(*_call("r47q"), parse("", "EXECUTE r47q"), bind(), execute(), SYNC)], []),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    "window-then-query-execute": (
        ([PREP_Q], [(*_call("r47q"), SYNC), (query("EXECUTE r47q"),)], []),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    "window-then-execute-after-the-window": (
        ([PREP_Q], [(*_call("r47q"), SYNC)], [(query("EXECUTE r47q"),)]),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    "window-then-bind-sql-name-after-the-window": (
        ([PREP_Q], [(*_call("r47q"), SYNC)], [_one("r47q")]),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    "window-followed-execute": (
        ([PREP_Q, PREP_E], [(*_call("r47q"), bind("", "e"), execute(), SYNC)], []),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    "window-followed-execute-after-the-window": (
        ([PREP_Q, PREP_E], [(*_call("r47q"), SYNC)], [_one("e")]),
        False,  # fixed in session 25 (WINDOW_WHY)
    ),
    # held
    "window-query-one-text": (
        ([PREP_Q], [(query(CALL_F.format(n="r47q") + "; EXECUTE r47q"),)], []),
        False,
    ),
    "window-query-call-then-execute-after": (
        ([PREP_Q], [(query(CALL_F.format(n="r47q")),)], [(query("EXECUTE r47q"),)]),
        False,
    ),
    "window-protocol-name-same-pipeline": (
        ([(parse("r47s", OK), SYNC)], [(*_call("r47s"), bind("", "r47s"), execute(), SYNC)], []),
        False,
    ),
    "window-protocol-name-after-the-window": (
        ([(parse("r47s", OK), SYNC)], [(*_call("r47s"), SYNC)], [_one("r47s")]),
        False,
    ),
}


@pytest.mark.parametrize("name", planted.cases(WINDOW))
def test_window(px, pg, name):
    steps, _ = WINDOW[name]
    direct = _in_window(px, pg, steps, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _in_window(px, pg, steps, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 2. one session: a PREPARE before code in the same text -----------------------------

SAME_TEXT = (query(f"PREPARE r47q AS {OK}; " + SWAP.format(n="r47q")),)
SAME_TEXT_WHY = (
    "LEAK: _ran_ddl forgets the SQL-level names before _commit_session_state adds the "
    "PREPARE that came earlier in the same text as the code, and a protocol Bind of a "
    "SQL-level name is neither checked with the server nor refused while lazy_code: the "
    "statement the code put under the name runs"
)
OWN: dict[str, tuple] = {
    "own-same-text-bind": ("base", [SAME_TEXT, _one("r47q")], False),  # fixed (SAME_TEXT_WHY)
    "own-same-text-bind-in-a-block": (
        "base",
        [(query("BEGIN"),), SAME_TEXT, _one("r47q"), (query("COMMIT"),)],
        False,  # fixed in session 25 (SAME_TEXT_WHY)
    ),
    # held
    "own-same-text-execute": ("base", [SAME_TEXT, (query("EXECUTE r47q"),)], False),
    "own-same-text-execute-later": (
        "base",
        [SAME_TEXT, 1.0, (query("SELECT 1"),), 0.5, (query("EXECUTE r47q"),)],
        False,
    ),
    "own-same-text-bind-later": (
        "base",
        [SAME_TEXT, 1.0, (query("SELECT 1"),), 0.5, _one("r47q")],
        False,
    ),
    "own-pipeline-prepare-swap-execute": (
        "base",
        [
            (
                parse("", f"PREPARE r47q AS {OK}"),
                bind(),
                execute(),
                parse("", SWAP.format(n="r47q")),
                bind(),
                execute(),
                SYNC,
            ),
            (query("EXECUTE r47q"),),
        ],  # fmt: skip
        False,
    ),
    "own-pipeline-prepare-swap-bind": (
        "base",
        [
            (
                parse("", f"PREPARE r47q AS {OK}"),
                bind(),
                execute(),
                parse("", SWAP.format(n="r47q")),
                bind(),
                execute(),
                SYNC,
            ),
            _one("r47q"),
        ],  # fmt: skip
        False,
    ),
    "own-prepare-then-swap-then-bind": (
        "base",
        [PREP_Q, (query(SWAP.format(n="r47q")),), _one("r47q")],
        False,
    ),
    "own-followed-execute-after-the-same-text": ("base", [PREP_E, SAME_TEXT, _one("e")], False),
    "own-create-table-as-execute": (
        "migrator",
        [
            PREP_Q,
            (query(SWAP.format(n="r47q")),),
            (query("CREATE TABLE r47w.d AS EXECUTE r47q"),),
            (query("SELECT * FROM r47w.d"),),
        ],
        False,
    ),
}


def _drop_d(pg) -> None:
    with RawClient.direct(pg) as c:
        c.query("DROP TABLE IF EXISTS r47w.d")


@pytest.mark.parametrize("name", planted.cases(OWN))
def test_own_session(px, pg, name):
    grant, steps, _ = OWN[name]
    _reset(px, pg)
    try:
        with RawClient.direct(pg) as c:
            direct = run_steps(c, steps)
        _drop_d(pg)
        if not shows(direct, MARK):
            raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
        with planted.session(px, px.tokens[grant]) as c:
            got = run_steps(c, steps)
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    finally:
        _drop_d(pg)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 3. decided before the window opened, run after the redefinition ---------------------

PRE_WHY = (
    "LEAK: statements decided and forwarded before another session's code opened the "
    "window (f harmless in the snapshot, no check before the Bind) run after that code "
    "committed: the redefined f replaces the name, and the EXECUTE or Bind after it runs "
    "the vault read"
)
PRE: dict[str, tuple] = {
    "pre-window-query": (
        (query(f"PREPARE r47q AS {OK}"),),
        (query("SELECT pg_sleep(0.8); SELECT r47w.f('r47q'); EXECUTE r47q"),),
        PRE_WHY,
    ),
    "pre-window-pipeline": (
        (parse("r47s", OK), SYNC),
        (
            parse("", "SELECT pg_sleep(0.8)"),
            bind(),
            execute(),
            parse("", "SELECT r47w.f('r47s')"),
            bind(),
            execute(),
            bind("", "r47s"),
            execute(),
            SYNC,
        ),
        PRE_WHY,
    ),  # fmt: skip
}


def _pre(px, pg, before, during, via_proxy: bool) -> str:
    if via_proxy:
        _reset(px, pg)
        a, b = planted.session(px), planted.session(px, px.tokens["migrator"])
    else:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
        a, b = RawClient.direct(pg), RawClient.direct(pg)
    try:
        with a, b:
            run_steps(a, [before])
            a.send(*during)  # decided now; its call of f runs in 0.8 s
            time.sleep(0.2)
            out = planted.text(b.query("SELECT r47w.redef(0)"))
            assert not planted.is_error(out), out[-300:]
            got = planted.text(a.frames_until_ready())
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
    return got


@pytest.mark.parametrize("name", planted.cases(PRE))
def test_decided_before_the_window(px, pg, name):
    before, during, _ = PRE[name]
    direct = _pre(px, pg, before, during, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _pre(px, pg, before, during, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])
