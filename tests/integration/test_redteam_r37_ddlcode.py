"""Red-team round 37 (attacks on 1b93640: DDL run by user-written code, the catalog epoch
and open DDL blocks), time-boxed; the server the judge.

Grants (agent ``r37-bot``): ``writer`` = ``read:r37w.* write:r37w.*
execute:public.r37_ins`` (also the fixture's base grant); ``migrator`` = ``read:r37w.*
write:r37w.* ddl:r37w.*`` and ``execute`` on ``public.r37_loud`` and every planted
function below.

Planted (schema owner; ``r37x`` outside every grant, ``r37x.vault`` holds the marker):
``public.r37_loud()`` (trigger function raising the vault's value); ``r37w.t``,
``r37w.u`` ``(k int)`` (no code); ``public.r37_attach()`` (plpgsql: ``DROP TRIGGER IF
EXISTS``/``CREATE TRIGGER r37_trg BEFORE INSERT ON r37w.t ... public.r37_loud()``: a
DDL function ``DDL_CODE_SQL`` names, the control); code running it that the load does
not name: ``public.r37_do()`` (plpgsql) and ``public.r37_dosql()`` (SQL) run ``DO
E'BEGIN \\103REATE TRIGGER ... \\105XECUTE FUNCTION ...'``; ``public.r37_uesc()``
(``PERFORM public.U&"r37_\\0061ttach"()``); ``public.r37_hook()`` (inserts into
``r37x.hook``, whose AFTER trigger ``public.r37_on_hook()`` calls ``r37_attach``);
``public.r37_viaop()`` (``PERFORM 1 OPERATOR(public.#@#) 1``, the operator's function
``public.r37_opfn`` calls ``r37_attach``); ``public.r37_qx()`` (SQL:
``query_to_xml('SELECT public.r37' || '_attach()', ...)``); ``public.r37_dom()``
(``PERFORM 1::r37x.dd``, a domain whose CHECK calls ``r37_attach``); ``public.r37_view()``
(reads ``r37x.v``, a view calling ``r37_attach``); ``public.r37_argdef(k int DEFAULT
public.r37_attach())`` (SQL ``SELECT $1``: the call's argument default runs it);
``public.r37_ins()`` (plpgsql: ``INSERT INTO r37w.t VALUES (1)``). Every probe first
shows the marker directly as the upstream login (``RuntimeError`` otherwise), and the
trigger is dropped directly, then a load through the proxy, before each.

Leaks found (strict xfails when found; all fixed in session 22, the same tests now pass:
``DDL_CODE_SQL`` also flags built SQL (DO, query_to_xml, ts_stat, ts_rewrite), unreadable
spellings (backslash escapes, U&), and follows pg_depend from a flagged function to the
objects that run it (their names in other sources) and to functions whose defaults call
it; every allowed statement marks the write (a read may call code that writes), and the
oldest mark holds until everything is answered):

1. **DDL run by code ``DDL_CODE_SQL`` does not name.** The migrator (through the proxy):
   ``SELECT public.r37_do()`` (or ``r37_dosql``, ``r37_uesc``, ``r37_hook``, ``r37_viaop``,
   ``r37_qx``, ``r37_dom``, ``r37_view``, ``r37_argdef()``): no error; the function runs
   ``CREATE TRIGGER r37_trg`` on ``r37w.t``, and the statement is no DDL to the policy
   (``StatementPolicy._runs_ddl_code``: the called name is not in
   ``Snapshot.ddl_functions``), so the snapshot stays fresh without the trigger until
   ``refresh_after``. The writer: ``INSERT INTO r37w.t VALUES (1)`` (simple, extended,
   prepared): ``ERROR P0001 loud: <marker>`` whole. The regex reads DDL words in the
   source, and the closure follows name mentions only: a string with escapes (``DO E'..'``),
   a Unicode-escaped identifier, a call through a trigger, an operator, a domain CHECK, a
   view, an argument DEFAULT, or dynamic SQL by a built-in other than ``EXECUTE``
   (``query_to_xml``) each reach ``r37_attach`` (or DDL) with no name or word to read.

2. **A write inside a granted function is no marked write.** The migrator: ``BEGIN``;
   ``CREATE TRIGGER r37_trg ... ON r37w.t``; (0.6 s: the reload sees no trigger). The
   writer: ``SELECT public.r37_ins()`` (decided, waits on the server for the table's
   lock). The migrator: ``COMMIT``. The function's INSERT runs the trigger: ``loud:
   <marker>`` whole. ``writes_unreadable`` marks (``_mark_write``) only a statement's
   own ``write_ops``; a function's writes are none.

3. **A later write overwrites the mark.** The writer: ``SELECT pg_sleep(2); INSERT INTO
   r37w.t VALUES (1)`` (one Query: marked at epoch E, the INSERT not yet analysed). The
   migrator (autocommit, 0.3 s later): the ``CREATE TRIGGER`` (epoch E+2 once answered).
   The writer (0.9 s later, pipelined behind the first Query): ``INSERT INTO r37w.u
   VALUES (1)``: ``_mark_write`` replaces ``write_mark`` with (E+2, ..., False), so when
   the first Query's INSERT raises ``loud: <marker>``, ``writes_moved`` says no and it is
   passed whole. Same with the second write as a Bind of a prepared INSERT.

Held: the control ``SELECT public.r37_attach()`` (named by the load: the writer's error is
withheld); ``CALL`` of a procedure (named DDL code or hidden) is refused (``deny.call``);
writes decided while the migrator's block holds the lock and run after its COMMIT (round
36's fix): a plain ``INSERT``, SQL ``EXECUTE`` of a ``PREPARE``d INSERT, ``COPY r37w.t FROM
STDIN`` (data pipelined), an INSERT in a CTE; the ``pg_sleep`` Query alone (no later
write): withheld.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r37-bot"
HIDDEN = ("r37_do", "r37_dosql", "r37_uesc", "r37_hook", "r37_viaop", "r37_qx", "r37_dom",
          "r37_view", "r37_argdef", "r37_proc", "r37_procn")  # fmt: skip
FUNCTIONS = ",".join(f"public.{f}" for f in ("r37_attach", "r37_loud", *HIDDEN))
SCOPES = "read:r37w.* write:r37w.* execute:public.r37_ins"
GRANTS = {
    "writer": SCOPES,
    "migrator": f"read:r37w.* write:r37w.* ddl:r37w.* execute:{FUNCTIONS}",
}
MARKER = "R37-TRG-6c01"

ATTACH = (
    "CREATE TRIGGER r37_trg BEFORE INSERT ON r37w.t FOR EACH ROW EXECUTE FUNCTION public.r37_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r37_trg ON r37w.t"
WRITE = "INSERT INTO r37w.t VALUES (1)"
# the trigger's DDL with no DDL word or EXECUTE in the function's source: E'' escapes
HIDDEN_DO = (
    r"DO E'BEGIN \104ROP TRIGGER IF EXISTS r37_trg ON r37w.t; \103REATE TRIGGER r37_trg "
    r"BEFORE INSERT ON r37w.t FOR EACH ROW \105XECUTE FUNCTION public.r37_loud(); END'"
)

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r37w; CREATE SCHEMA r37x;\n"
    "CREATE TABLE r37x.vault (val text);\n"
    f"INSERT INTO r37x.vault VALUES ('{MARKER}');\n"
    "CREATE TABLE r37w.t (k int); CREATE TABLE r37w.u (k int); CREATE TABLE r37x.hook (k int);\n"
    "CREATE FUNCTION public.r37_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r37x.vault); END $$;\n"
    "CREATE FUNCTION public.r37_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"{DETACH}; {ATTACH}; RETURN 1; END $$;\n"
    # 1. hidden from DDL_CODE_SQL
    f"CREATE FUNCTION public.r37_do() RETURNS int LANGUAGE plpgsql AS $$ BEGIN {HIDDEN_DO}; "
    "RETURN 1; END $$;\n"
    f"CREATE FUNCTION public.r37_dosql() RETURNS int LANGUAGE sql AS $$ {HIDDEN_DO}; "
    "SELECT 1 $$;\n"
    "CREATE FUNCTION public.r37_uesc() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    r'PERFORM public.U&"r37_\0061ttach"(); RETURN 1; END $$;'
    "\n"
    "CREATE FUNCTION public.r37_on_hook() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r37_attach(); RETURN NEW; END $$;\n"
    "CREATE TRIGGER r37_hook_trg AFTER INSERT ON r37x.hook FOR EACH ROW "
    "EXECUTE FUNCTION public.r37_on_hook();\n"
    "CREATE FUNCTION public.r37_hook() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO r37x.hook VALUES (1); RETURN 1; END $$;\n"
    "CREATE FUNCTION public.r37_opfn(int, int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN public.r37_attach() + $1 + $2; END $$;\n"
    "CREATE OPERATOR public.#@# (LEFTARG = int, RIGHTARG = int, FUNCTION = public.r37_opfn);\n"
    "CREATE FUNCTION public.r37_viaop() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM 1 OPERATOR(public.#@#) 1; RETURN 1; END $$;\n"
    "CREATE FUNCTION public.r37_qx() RETURNS int LANGUAGE sql AS $$ SELECT "
    "length(query_to_xml('SELECT public.r37' || '_attach()', true, false, '')::text) $$;\n"
    "CREATE DOMAIN r37x.dd AS int CHECK (public.r37_attach() > 0);\n"
    "CREATE FUNCTION public.r37_dom() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM 1::r37x.dd; RETURN 1; END $$;\n"
    "CREATE VIEW r37x.v AS SELECT public.r37_attach() AS a;\n"
    "CREATE FUNCTION public.r37_view() RETURNS int LANGUAGE sql AS "
    "$$ SELECT a FROM r37x.v $$;\n"
    "CREATE FUNCTION public.r37_argdef(k int DEFAULT public.r37_attach()) RETURNS int "
    "LANGUAGE sql AS $$ SELECT $1 $$;\n"
    f"CREATE PROCEDURE public.r37_proc() LANGUAGE plpgsql AS $$ BEGIN {HIDDEN_DO}; END $$;\n"
    "CREATE PROCEDURE public.r37_procn() LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r37_attach(); END $$;\n"
    # 2. a write inside a function
    "CREATE FUNCTION public.r37_ins() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO r37w.t VALUES (1); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r37w, r37x CASCADE;\n"
    "DROP OPERATOR IF EXISTS public.#@# (int, int) CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r37_loud(), public.r37_attach(), public.r37_do(), "
    "public.r37_dosql(), public.r37_uesc(), public.r37_on_hook(), public.r37_hook(), "
    "public.r37_opfn(int, int), public.r37_viaop(), public.r37_qx(), public.r37_dom(), "
    "public.r37_view(), public.r37_argdef(int), public.r37_ins() CASCADE;\n"
    "DROP PROCEDURE IF EXISTS public.r37_proc(), public.r37_procn() CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r37", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _read(c: RawClient, n: int) -> str:
    out: list[bytes] = []
    for _ in range(n):
        out += c.frames_until_ready()
    return planted.text(out)


def _unseen(pg, mig: RawClient) -> None:
    """No trigger on r37w.t, and the proxy's snapshot says so: dropped directly, then DDL
    through the proxy and the load it starts."""
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        c.query("DELETE FROM r37w.t; DELETE FROM r37w.u; DELETE FROM r37x.hook")
    got = planted.text(mig.query("COMMENT ON TABLE r37w.t IS 'r37'"))
    assert not planted.is_error(got), got[-300:]
    planted.wait_catalog_quiet(mig, 0.6)


# --- 1. DDL run by code the load does not name -------------------------------------------

HIDDEN_WHY = (
    "LEAK: DDL_CODE_SQL names a function by DDL words / EXECUTE in its source and by name "
    "mentions of another: E'' escapes in DO, a Unicode-escaped name, a trigger, operator, "
    "domain CHECK, view, argument DEFAULT or query_to_xml reach the DDL unnamed; the call is "
    "no DDL to the policy and the writer's INSERT shows the new trigger's RAISE whole"
)
CALLS = {
    # name: (the migrator's statement, leaks)
    "control-named": ("SELECT public.r37_attach()", False),
    "do-escaped-plpgsql": ("SELECT public.r37_do()", False),
    "do-escaped-sql": ("SELECT public.r37_dosql()", False),
    "unicode-identifier": ("SELECT public.r37_uesc()", False),
    "through-a-trigger": ("SELECT public.r37_hook()", False),
    "through-an-operator": ("SELECT public.r37_viaop()", False),
    "query-to-xml": ("SELECT public.r37_qx()", False),
    "domain-check": ("SELECT public.r37_dom()", False),
    "view": ("SELECT public.r37_view()", False),
    "argument-default": ("SELECT public.r37_argdef()", False),
}


def _cases(cases: dict, why: str) -> list:
    marks = pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)
    return [pytest.param(k, marks=marks) if v[-1] else k for k, v in cases.items()]


@pytest.mark.parametrize("name", _cases(CALLS, HIDDEN_WHY))
def test_ddl_run_by_unnamed_code(px, pg, name):
    planted.assert_hidden_ddl_withheld(
        px, pg, call=CALLS[name][0], caller="migrator", write=WRITE,
        reset=lambda c: c.query(DETACH), unseen=_unseen, marker=MARKER, label=name,
    )  # fmt: skip


@pytest.mark.parametrize("proc", ["r37_procn", "r37_proc"])
def test_call_of_a_procedure_is_refused(px, pg, proc):
    """Procedures (named DDL code or hidden): CALL is refused (deny.call) before it runs."""
    call = f"CALL public.{proc}()"
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        ran = planted.text(c.query(call))
        direct = planted.text(c.query(WRITE))
        c.query(DETACH)
    if planted.is_error(ran) or not shows(direct, MARKER):
        raise RuntimeError(("precondition: no marker directly", ran[-300:], direct[-300:]))
    with planted.session(px, px.tokens["migrator"]) as mig:
        _unseen(pg, mig)
        got = planted.text(mig.query(call))
    with RawClient.direct(pg) as c:
        present = c.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'r37_trg'")
        c.query(DETACH)
    assert "42501" in got and "deny.call" in got, got[-300:]
    assert present == "0", present  # it never ran


# --- 2. a write inside a function, decided while another grant's DDL block is open --------

FN_WHY = (
    "LEAK: _mark_write marks only a statement's own write_ops: a granted function's INSERT "
    "waits on the block's lock and runs the trigger committed meanwhile, its RAISE whole"
)


def _copy_data(data: bytes) -> bytes:
    return b"d" + (len(data) + 4).to_bytes(4, "big") + data


COPY_DONE = b"c\x00\x00\x00\x04"
LOCK_CASES = {
    # name: (set-up Query or None, the writer's frames (one ReadyForQuery), leaks)
    "direct-insert": (None, (query(WRITE),), False),
    "sql-execute": ("PREPARE r37pw AS " + WRITE, (query("EXECUTE r37pw"),), False),
    "copy-from-stdin": (
        None,
        (query("COPY r37w.t FROM STDIN"), _copy_data(b"1\n"), COPY_DONE),
        False,
    ),
    "cte-insert": (
        None,
        (query("WITH x AS (INSERT INTO r37w.t VALUES (1) RETURNING k) SELECT k FROM x"),),
        False,
    ),
    "function-insert": (None, (query("SELECT public.r37_ins()"),), False),
}


def _lock_wait(pg, mig: RawClient, wr: RawClient, name: str) -> str:
    pre, frames, _ = LOCK_CASES[name]
    if pre is not None:
        wr.query(pre)
    mig.query("BEGIN")
    made = planted.text(mig.query(ATTACH))
    assert not planted.is_error(made), made[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the reload the DDL started is done (nothing new)
    wr.send(*frames)
    planted.wait_lock_waiter(pg, 0.4)  # decided, sent, waiting on the server for the lock
    mig.query("COMMIT")
    got = _read(wr, 1)
    mig.query(DETACH)
    return got


@pytest.mark.parametrize("name", _cases(LOCK_CASES, FN_WHY))
def test_write_waiting_on_the_ddl_lock(px, pg, name):
    with RawClient.direct(pg) as mig, RawClient.direct(pg) as wr:
        mig.query(DETACH)
        direct = _lock_wait(pg, mig, wr, name)
    if not shows(direct, MARKER):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens["migrator"]) as mig:
        _unseen(pg, mig)
        with planted.session(px, px.tokens["writer"]) as wr:
            try:
                got = _lock_wait(pg, mig, wr, name)
            finally:
                with RawClient.direct(pg) as c:
                    c.query(DETACH)
            assert any(f[:1] == b"D" for f in wr.query("SELECT 1")), "the session goes on"
    # (session 25: while the migrator's code may have redefined a function, an EXECUTE of
    # a SQL-level name may be refused instead: deny.execute, nothing runs)
    assert "P0001" in got or (name == "sql-execute" and "deny.execute" in got), got[-300:]
    assert not shows(got, MARKER), ("LEAK", name, got[-400:])


# --- 3. a later write overwrites the mark ---------------------------------------------------

SLOW = "SELECT pg_sleep(2); INSERT INTO r37w.t VALUES (1)"
LATER_WHY = (
    "LEAK: _mark_write replaces write_mark: a write decided after the other session's DDL "
    "settled makes writes_moved false for an earlier write still running, whose trigger "
    "error is then passed whole"
)
LATER = {
    # name: (frames of the later write or None, frames sent before, leaks)
    "no-later-write": (None, (), False),
    "later-query": ((query("INSERT INTO r37w.u VALUES (1)"),), (), False),
    "later-bind": (
        (bind("", "r37u"), m.execute(), SYNC),
        (parse("r37u", "INSERT INTO r37w.u VALUES (1)"), SYNC),
        False,
    ),
}


def _later(pg, mig: RawClient, wr: RawClient, name: str) -> str:
    later, pre, _ = LATER[name]
    out = ""
    if pre:
        out += run_steps(wr, [pre])
    wr.send(query(SLOW))
    planted.wait_pg_sleeping(pg, 0.3)  # the first Query sleeps: its INSERT is not analysed yet
    made = planted.text(mig.query(ATTACH))  # autocommit: settled when answered
    assert not planted.is_error(made), made[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the reload that DDL started is done
    n = 1
    if later is not None:
        wr.send(*later)
        n = 2
    out += _read(wr, n)
    mig.query(DETACH)
    return out


@pytest.mark.parametrize("name", _cases(LATER, LATER_WHY))
def test_later_write_during_a_moved_write(px, pg, name):
    with RawClient.direct(pg) as mig, RawClient.direct(pg) as wr:
        mig.query(DETACH)
        direct = _later(pg, mig, wr, name)
    if not shows(direct, MARKER):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens["migrator"]) as mig:
        _unseen(pg, mig)
        with planted.session(px, px.tokens["writer"]) as wr:
            try:
                got = _later(pg, mig, wr, name)
            finally:
                with RawClient.direct(pg) as c:
                    c.query(DETACH)
            assert any(f[:1] == b"D" for f in wr.query("SELECT 1")), "the session goes on"
    assert "P0001" in got, got[-300:]
    assert not shows(got, MARKER), ("LEAK", name, got[-400:])
