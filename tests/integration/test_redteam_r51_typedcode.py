"""Red-team round 51 (attacks on 389756b, time-boxed): code run through types and objects
made through the proxy, a COMMIT that fills a WITH HOLD cursor in the same read as an
EXECUTE or a Bind, and dry-run grants; the server the judge.

Grants (agent ``r51-bot``): ``base`` = ``read:r51w.* write:r51w.*`` and ``execute`` on the
``r51w`` functions below and ``public.r51_both``; ``migrator`` = that and ``ddl:r51w.*``;
``dry`` = ``read:r51w.*`` in dry run (``enforce = false``: refuses nothing, records "would
deny"). Every grant logs in as the proxy's shared upstream login (``db_role`` null).

Planted (schema owner, before the proxy starts; ``r51x`` outside every grant, ``r51x.vault``
holds the marker): ``public.r51_both()`` (plpgsql: for ``r51q`` and ``r51s``, ``DEALLOCATE``
if held, then ``PREPARE <name> AS <vault read>``, the words built from pieces: code that may
run DDL to the snapshot, not "names" code); the domain ``r51w.r51dom_zq`` (int, ``CHECK
(public.r51_both() > 0)``) and a table ``r51w.td`` of it; the enum ``r51w.r51en_zq`` with an
implicit cast from int by ``r51w.r51cast_zq`` (which calls ``r51_both``); plpgsql functions
whose sources name nothing: ``r51w.h_ret()`` returns the domain, ``r51w.h_arg(x r51dom_zq)``
and ``r51w.h_cast(x r51en_zq)`` take one; ``r51w.g2()`` calls ``r51_both``. As round 50:
``r51w.f(n)`` harmless, ``r51w.f_evil(n)`` and ``public.r51_redefine()`` (``EXECUTE`` of a
``CREATE OR REPLACE FUNCTION r51w.f`` with the swap's body), ``r51w.g(n)`` calls f. A
barrier view ``r51w.bv`` over ``r51x.acct`` (rows ``(1, '5')``, ``(2, <marker>)``) with a
costly filter keeping row 1; a trigger function ``r51w.r51tf()`` that raises a NOTICE of the
vault's row (attached by no trigger). Every probe runs directly as the upstream login first
and must show the marker there (``RuntimeError`` otherwise). ``PREPARE r51q AS OK`` is a
SQL-level name, ``r51s`` a protocol one.

Leaks found (strict xfails when found; all fixed in session 26, their probes pass now: a dry
run's refused statement of a class the policy cannot follow, or one that may run code that
may run DDL, counts as code that may run DDL (``StatementPolicy._decide``,
``_RUNS_ANYTHING``), a dry run's FunctionCall as well (``check_function_call``), and a read
of a view decided on a stale snapshot waits for the reload as a write does
(``_stale_write``)), one root: **what a dry-run session runs but the policy refused is never
followed** (``test_dry_run``). ``StatementPolicy._verdict`` (policy/engine.py)
calls ``_ran_ddl`` for a dry run's pairs (``ran = denied is None or not self.enforce``), but
``opens_ddl`` (policy/caches.py) counts an UNKNOWN statement only when its decision is
allowed, ``_decide`` sets ``Decision.opens_ddl`` (code that may run DDL) only on allowed
decisions, a ``DO`` block is a FUNCTION-class ``deny.do``, and ``check_function_call`` returns
no pairs at all. So a dry-run session's refused-but-run DDL or code is not DDL to the
catalog cache: no stale snapshot, no ``code_ran``, no window, no ``lazy_names`` in the other
sessions, and an enforcing session of another grant decides on a snapshot that no longer
holds until the next load (``refresh_after``, 300 s, or someone's followed DDL):

1. ``dry-do-block-*``, ``dry-rename-*`` (``ALTER FUNCTION ... RENAME``, ``deny.unknown``),
   ``dry-call-outside-scope-*`` (``SELECT public.r51_redefine()``, ``deny.execute``),
   ``dry-function-call-message-*`` (a fast-path FunctionCall of it, ``deny.function_call``):
   ``r51w.f`` becomes the swap. Then the base session (which prepared ``r51q`` or parsed
   ``r51s`` before): ``SELECT r51w.g('r51q')`` (decided harmless: ``g`` calls a harmless
   ``f`` in the snapshot), then ``EXECUTE r51q``, or a Bind of ``r51q``/``r51s``: the
   vault's row in a DataRow (no window, so ``verify_name`` injects no check and the
   SQL-level name is kept). ``dry-adds-domain-constraint-*``: ``ALTER DOMAIN
   r51w.r51dom3_zq ADD CONSTRAINT ... CHECK (public.r51_both() > 0)`` (UNKNOWN: refused for
   the migrator, run by a dry run) on the domain ``r51w.h3()`` returns; the base session's
   ``SELECT r51w.h3()`` then ``EXECUTE r51q`` or a Bind: the vault's row.
2. ``dry-do-lowers-barrier-then-read`` and ``dry-lowers-barrier-then-read``: ``ALTER VIEW
   r51w.bv SET (security_barrier = false)`` is classified UNKNOWN (``deny.view``,
   ``BARRIER_LOWERED``) even written plainly, so a dry run lowers the barrier unfollowed;
   the base session's ``SELECT id FROM r51w.bv WHERE pin::int > 0`` is decided on the
   snapshot's barrier, runs the cheap cast first and gets ``invalid input syntax for type
   integer: "<marker>"``.
3. ``dry-do-creates-trigger-then-insert``: a ``DO`` block attaches ``r51tf`` as a BEFORE
   INSERT trigger of ``r51w.gate``; the base session's ``INSERT INTO r51w.gate`` is decided
   as firing nothing, and the trigger's NOTICE (the vault's row) reaches it unwithheld.

Held:

4. **The dry-run controls** (``dry-create-or-replace-*``, ``dry-creates-trigger-then-insert``):
   the same change as class-DDL text is followed (the window opens; the trigger's NOTICE is
   withheld as ``writes_unreadable``).
5. **Code reached through a function's declared types** (``test_typed_code``,
   ``domain-return-*``, ``domain-arg-*``, ``cast-arg-*``; over both protocols, one text or
   two reads, Bind of a SQL-level or protocol name): the snapshot counts ``h_ret``, ``h_arg``
   and ``h_cast`` as code that may run DDL (``FUNCTION_TYPES_SQL``/the closure), so the call
   runs ``_code_ran``: the EXECUTE refused, the Bind checked (``deny.replaced``). Controls:
   an INSERT or a COPY into ``r51w.td``.
6. **Objects made through the proxy** (``made-through-proxy-*``): a migrator's ``CREATE
   DOMAIN ... CHECK (public.r51_both() > 0)`` with functions returning or taking it, a
   table whose column DEFAULT or CHECK calls ``r51_both``; the base grant's call or INSERT
   then ``EXECUTE r51q`` or a Bind, both before the load (``*-unsettled-*``: the window or
   the stale snapshot) and after the load closed the window: refused or checked. ``ALTER
   DOMAIN ... ADD CONSTRAINT`` and ``CREATE OPERATOR`` (``...-domain-constraint-added-*``,
   ``...-operator-*``) are refused for the migrator (``deny.unknown``): only a dry run
   makes them (item 1).
7. **A COMMIT that fills a WITH HOLD cursor, then an EXECUTE or a Bind in the same read**
   (``test_with_hold_commit``): ``BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT r51w.g2()
   FROM r51w.gate``, ``PREPARE r51q`` (or a Parse of ``r51s``) in the block, then ``COMMIT;
   EXECUTE r51q`` in one text, two Queries in one packet, a Query ``COMMIT`` and a Bind in
   one packet, an extended ``COMMIT`` pipelined with the Bind before or after its Sync, and
   an autocommit DECLARE after the Parse: refused (``ran_lazy``) or checked
   (``deny.replaced``). ``test_with_hold_commit_after_window``: the cursor declared over
   ``g`` while ``f`` was harmless, the migrator redefines ``f`` through the proxy and the
   load closes the window, then the COMMIT and the EXECUTE or Bind in one read (names
   prepared before or after the window): refused (``catalog_changed`` set ``lazy_code``
   in the open transaction; the names were forgotten).

Suggested fix (1-3): follow what a dry run sends as what it is, not as what its decision
says: in a dry run count every pair that ran as opening DDL where it would if allowed
(``opens_ddl``: UNKNOWN whether or not allowed; ``_decide``: ``_runs_ddl_code`` on denied
decisions too; a ``DO`` block as code that may run DDL and replace statements, so
``code_ran`` opens the window), and give ``check_function_call`` the same treatment (a
FunctionCall in a dry run is code that may run DDL). Or refuse, even in a dry run, what
the policy cannot follow (``DO``, FunctionCall, UNKNOWN): a dry run then records less but
cannot move other grants' boundary. A per-grant ``db_role`` without ownership of the
objects would also stop these particular changes.
"""

from __future__ import annotations

import struct
import time

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r51-bot"
MARK = "R51-VAULT-7c1d"
FNS = "r51w.r51costly,r51w.f,r51w.g,r51w.g2,r51w.h_ret,r51w.h_arg,r51w.h_cast,r51w.k_ret,r51w.k_arg,r51w.h3,r51w.opf"
SCOPES = f"read:r51w.* write:r51w.* execute:{FNS},public.r51_both"
GRANTS = {
    "migrator": f"read:r51w.* write:r51w.* ddl:r51w.* execute:{FNS},public.r51_both",
}
DRY_SCOPES = "read:r51w.*"
VAULT = "SELECT r51_secret AS v FROM r51x.vault"


def _swap_one(n: str) -> str:
    return (
        f"IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = '{n}') THEN "
        f"EXECUTE 'DEALLOC' || 'ATE {n}'; END IF; "
        f"EXECUTE 'PREP' || 'ARE {n} AS {VAULT}'; "
    )


BOTH_BODY = f"BEGIN {_swap_one('r51q')}{_swap_one('r51s')}RETURN 2; END"
SWAP_BODY = (
    "BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE name = n) THEN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); END IF; "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; RETURN 2; END"
)


def _lit(sql: str) -> str:
    return "'" + sql.replace("'", "''") + "'"


HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r51w.f(n text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$"
)
EVIL_F = f"CREATE OR REPLACE FUNCTION r51w.f_evil(n text) RETURNS int LANGUAGE plpgsql AS $$ {SWAP_BODY} $$"
SWAP_F = (
    f"CREATE OR REPLACE FUNCTION r51w.f(n text) RETURNS int LANGUAGE plpgsql AS $f$ {SWAP_BODY} $f$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r51w; CREATE SCHEMA r51x;\n"
    f"CREATE TABLE r51x.vault (r51_secret text); INSERT INTO r51x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r51w.gate (id int); INSERT INTO r51w.gate VALUES (1);\n"
    f"CREATE FUNCTION public.r51_both() RETURNS int LANGUAGE plpgsql AS $$ {BOTH_BODY} $$;\n"
    "CREATE DOMAIN r51w.r51dom_zq AS int CHECK (public.r51_both() > 0);\n"
    "CREATE TYPE r51w.r51en_zq AS ENUM ('a');\n"
    "CREATE FUNCTION r51w.r51cast_zq(int) RETURNS r51w.r51en_zq LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM public.r51_both(); RETURN 'a'; END $$;\n"
    "CREATE CAST (int AS r51w.r51en_zq) WITH FUNCTION r51w.r51cast_zq(int) AS IMPLICIT;\n"
    "CREATE FUNCTION r51w.h_ret() RETURNS r51w.r51dom_zq LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$;\n"
    "CREATE FUNCTION r51w.h_arg(x r51w.r51dom_zq) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$;\n"
    "CREATE FUNCTION r51w.h_cast(x r51w.r51en_zq) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$;\n"
    "CREATE FUNCTION r51w.g2() RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN public.r51_both(); END $$;\n"
    "CREATE TABLE r51w.td (c r51w.r51dom_zq);\n"
    f"{HARMLESS_F};\n{EVIL_F};\n"
    "CREATE FUNCTION r51w.g(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r51w.f(n) FROM r51w.gate; RETURN 1; END $$;\n"
    "CREATE FUNCTION public.r51_redefine() RETURNS int LANGUAGE plpgsql AS $r$ BEGIN "
    f"EXECUTE {_lit(SWAP_F)}; RETURN 1; END $r$;\n"
    "CREATE TABLE r51x.acct (id int, pin text);\n"
    f"INSERT INTO r51x.acct VALUES (1, '5'), (2, '{MARK}');\n"
    "CREATE FUNCTION r51w.r51costly(i int) RETURNS bool LANGUAGE plpgsql COST 100000 AS "
    "$$ BEGIN RETURN i = 1; END $$;\n"
    "CREATE VIEW r51w.bv WITH (security_barrier) AS "
    "SELECT id, pin FROM r51x.acct WHERE r51w.r51costly(id);\n"
    "CREATE FUNCTION r51w.r51tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE NOTICE 'r51 %', (SELECT r51_secret FROM r51x.vault); RETURN NEW; END $$;\n"
    "CREATE DOMAIN r51w.r51dom3_zq AS int;\n"
    "CREATE FUNCTION r51w.h3() RETURNS r51w.r51dom3_zq LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r51w, r51x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r51_both(), public.r51_redefine();\n"
)
OK = "SELECT 'ok'::text AS v"
PREP_Q = (query(f"PREPARE r51q AS {OK}"),)
PARSE_S = (parse("r51s", OK), SYNC)
RESTORE = (
    "DROP FUNCTION IF EXISTS r51w.f(text); DROP FUNCTION IF EXISTS r51w.f_old(text); "
    f"DROP FUNCTION IF EXISTS r51w.f_evil(text); {HARMLESS_F}; {EVIL_F}; "
    "DROP TABLE IF EXISTS r51w.tm; "
    "DROP DOMAIN IF EXISTS r51w.r51dom2_zq CASCADE; "
    "ALTER VIEW r51w.bv SET (security_barrier = true); "
    "DROP TRIGGER IF EXISTS r51tr ON r51w.gate; DELETE FROM r51w.gate WHERE id <> 1; "
    "ALTER DOMAIN r51w.r51dom3_zq DROP CONSTRAINT IF EXISTS r51k; "
    "DROP FUNCTION IF EXISTS r51w.opf(int, int) CASCADE"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r51", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        handle.tokens["dry"] = grant_issue(
            handle, agent=AGENT, task="R51-DRY", scopes=DRY_SCOPES, enforce=False
        )[1]
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


def _restore(pg) -> None:
    with RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness; " + RESTORE + "; RESET ROLE")


def _reset(px, pg) -> None:
    """As the owner, outside the proxy, then a migrator's no-op DDL through it: the next
    load reads the restored catalog and the code window is closed."""
    _restore(pg)
    with planted.session(px, px.tokens["migrator"]) as b:
        out = planted.text(b.query("COMMENT ON TABLE r51w.gate IS NULL"))
        assert not planted.is_error(out), out[-300:]
    _quiet(px)
    assert not _window(px)


def _clients(px, pg, via_proxy: bool, other: str):
    if via_proxy:
        _reset(px, pg)
        return planted.session(px), planted.session(px, px.tokens[other])
    _restore(pg)
    return RawClient.direct(pg), RawClient.direct(pg)


FUNCALL = "<FunctionCall r51_redefine>"


def _redefine_oid(pg) -> int:
    with RawClient.direct(pg) as c:
        return int(c.scalar("SELECT 'public.r51_redefine()'::pg_catalog.regprocedure::oid"))


def _scenario(px, pg, before, other_sqls, after, via_proxy: bool, other: str = "migrator",
              settle: bool = False) -> str:  # fmt: skip
    """A (``base``) runs ``before``; the other session (``other``'s grant) runs
    ``other_sqls``; (``settle``: the load after them closed the code window); A runs
    ``after``. Every byte A and the other session received."""
    a, b = _clients(px, pg, via_proxy, other)
    try:
        with a, b:
            got = run_steps(a, before)
            for sql in other_sqls:
                if sql == FUNCALL:  # a fast-path FunctionCall of public.r51_redefine()
                    b.send(frame(b"F", struct.pack("!IhhH", _redefine_oid(pg), 0, 0, 0)))
                    out = planted.text(b.frames_until_ready())
                else:
                    out = planted.text(b.query(sql))
                if other != "dry":  # (a dry run sees everything: only A's bytes count)
                    got += out
                if planted.is_error(out):
                    return got
            if settle and via_proxy:
                _quiet(px)
                assert not _window(px), "the window closed after the definition"
            got += run_steps(a, after)
            a.query("ROLLBACK")  # (a text refused whole inside a block aborts it)
            assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    finally:
        _restore(pg)
    return got


# --- 1. code reached through a function's declared types (and objects made through the
# proxy) ---------------------------------------------------------------------------------

BIND_Q = (bind("", "r51q"), execute(), SYNC)
BIND_S = (bind("", "r51s"), execute(), SYNC)


def _typed(call: str) -> dict[str, tuple]:
    return {
        "then-execute": ([PREP_Q], [(query(call),), (query("EXECUTE r51q"),)]),
        "and-execute-one-text": ([PREP_Q], [(query(f"{call}; EXECUTE r51q"),)]),
        "then-bind-sql-name": ([PREP_Q], [(query(call),), BIND_Q]),
        "protocol-name": ([PARSE_S], [(query(call),), BIND_S]),
        "protocol-name-extended-call": (
            [PARSE_S], [(parse("", call), bind(), execute(), SYNC), BIND_S]),
    }  # fmt: skip


TYPED: dict[str, tuple] = {}
for _call, _label in (
    ("SELECT r51w.h_ret()", "domain-return"),
    ("SELECT r51w.h_arg(1)", "domain-arg"),
    ("SELECT r51w.h_cast(1)", "cast-arg"),
):
    for _k, (_before, _after) in _typed(_call).items():
        TYPED[f"{_label}-{_k}"] = (_before, (), _after, False, False)
# controls: a row of a relation whose column is of the domain (known to the snapshot)
for _k, (_before, _after) in _typed("INSERT INTO r51w.td VALUES (1)").items():
    TYPED[f"domain-column-insert-{_k}"] = (_before, (), _after, False, False)

COPY_TD = (query("COPY r51w.td FROM STDIN"), frame(b"d", b"1\n"), frame(b"c"))
TYPED["domain-column-copy-then-execute"] = (
    [PREP_Q],
    (),
    [COPY_TD, (query("EXECUTE r51q"),)],
    False,
    False,
)
TYPED["domain-column-copy-then-bind-protocol-name-one-packet"] = (
    [PARSE_S],
    (),
    [(*COPY_TD, *BIND_S)],
    False,
    False,
)

MADE_DOMAIN = (
    "BEGIN",
    "CREATE DOMAIN r51w.r51dom2_zq AS int CHECK (public.r51_both() > 0)",
    "CREATE FUNCTION r51w.k_ret() RETURNS r51w.r51dom2_zq LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$",
    "CREATE FUNCTION r51w.k_arg(x r51w.r51dom2_zq) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN 1; END $$",
    "COMMIT",
)
MADE_DEFAULT = ("CREATE TABLE r51w.tm (id int, c int DEFAULT public.r51_both())",)
MADE_CHECK = ("CREATE TABLE r51w.tm (id int CHECK (public.r51_both() > 0))",)
for _k in ("then-execute", "then-bind-sql-name", "protocol-name"):
    TYPED[f"made-through-proxy-domain-return-{_k}"] = (
        _typed("SELECT r51w.k_ret()")[_k][0], MADE_DOMAIN, _typed("SELECT r51w.k_ret()")[_k][1],
        True, False)  # fmt: skip
    TYPED[f"made-through-proxy-domain-arg-{_k}"] = (
        _typed("SELECT r51w.k_arg(1)")[_k][0], MADE_DOMAIN, _typed("SELECT r51w.k_arg(1)")[_k][1],
        True, False)  # fmt: skip
    TYPED[f"made-through-proxy-column-default-{_k}"] = (
        _typed("INSERT INTO r51w.tm (id) VALUES (1)")[_k][0], MADE_DEFAULT,
        _typed("INSERT INTO r51w.tm (id) VALUES (1)")[_k][1], True, False)  # fmt: skip
    TYPED[f"made-through-proxy-table-check-{_k}"] = (
        _typed("INSERT INTO r51w.tm VALUES (1)")[_k][0], MADE_CHECK,
        _typed("INSERT INTO r51w.tm VALUES (1)")[_k][1], True, False)  # fmt: skip
    # before the load: the definition's window (or the stale snapshot) decides
    TYPED[f"made-through-proxy-column-default-unsettled-{_k}"] = (
        _typed("INSERT INTO r51w.tm (id) VALUES (1)")[_k][0], MADE_DEFAULT,
        _typed("INSERT INTO r51w.tm (id) VALUES (1)")[_k][1], False, False)  # fmt: skip
    TYPED[f"made-through-proxy-domain-arg-unsettled-{_k}"] = (
        _typed("SELECT r51w.k_arg(1)")[_k][0], MADE_DOMAIN, _typed("SELECT r51w.k_arg(1)")[_k][1],
        False, False)  # fmt: skip

# a constraint added to a domain a planted function returns (no function defined: the DDL
# names the code); an operator made with its function in one block
MADE_DOMAIN_CHECK = (
    "ALTER DOMAIN r51w.r51dom3_zq ADD CONSTRAINT r51k CHECK (public.r51_both() > 0)",
)
MADE_OPERATOR = (
    "BEGIN",
    "CREATE FUNCTION r51w.opf(int, int) RETURNS bool LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM public.r51_both(); RETURN true; END $$",
    "CREATE OPERATOR r51w.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = r51w.opf)",
    "COMMIT",
)
for _k in ("then-execute", "then-bind-sql-name", "protocol-name"):
    for _settle, _tail in ((True, ""), (False, "-unsettled")):
        TYPED[f"made-through-proxy-domain-constraint-added{_tail}-{_k}"] = (
            _typed("SELECT r51w.h3()")[_k][0], MADE_DOMAIN_CHECK,
            _typed("SELECT r51w.h3()")[_k][1], _settle, False)  # fmt: skip
        TYPED[f"made-through-proxy-operator{_tail}-{_k}"] = (
            _typed("SELECT 1 OPERATOR(r51w.===) 1")[_k][0], MADE_OPERATOR,
            _typed("SELECT 1 OPERATOR(r51w.===) 1")[_k][1], _settle, False)  # fmt: skip


@pytest.mark.parametrize("name", planted.cases(TYPED))
def test_typed_code(px, pg, name):
    before, made, after, settle, _ = TYPED[name]
    direct = _scenario(px, pg, before, made, after, False, settle=settle)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _scenario(px, pg, before, made, after, True, settle=settle)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 2. dry-run grants: what they run and the policy does not follow ---------------------

CALL_G = query("SELECT r51w.g('r51q')")
CALL_G_S = query("SELECT r51w.g('r51s')")
DRY_LEAK = (
    "a dry run's refused-but-run statement is never followed as DDL: opens_ddl counts "
    "UNKNOWN and code-running decisions only when allowed (policy/caches.py, _decide); "
    "a FunctionCall has no pairs (check_function_call)"
)
DRY_DO = (f"DO $d$ BEGIN {SWAP_F}; END $d$",)
DRY_RENAME = (
    "ALTER FUNCTION r51w.f(text) RENAME TO f_old",
    "ALTER FUNCTION r51w.f_evil(text) RENAME TO f",
)
DRY_CALL = ("SELECT public.r51_redefine()",)
DRY_CREATE = (SWAP_F,)
LOWER = "ALTER VIEW r51w.bv SET (security_barrier = false)"
READ_BV = [(query("SELECT id FROM r51w.bv WHERE pin::int > 0"),)]
DRY_BARRIER = "a dry run's DO lowered a view's barrier; the snapshot was never made stale"
AFTER_EXEC = [(CALL_G,), (query("EXECUTE r51q"),)]
AFTER_BIND = [(CALL_G,), BIND_Q]
AFTER_S = [(CALL_G_S,), BIND_S]
DRY: dict[str, tuple] = {}
FIXED = False  # each DRY case leaked (its reason below) until session 26
for _label, _sqls, _why in (
    ("dry-do-block", DRY_DO, DRY_LEAK),
    ("dry-rename", DRY_RENAME, DRY_LEAK),
    ("dry-call-outside-scope", DRY_CALL, DRY_LEAK),
    ("dry-function-call-message", (FUNCALL,), DRY_LEAK),
    ("dry-create-or-replace", DRY_CREATE, False),
):
    DRY[f"{_label}-then-execute"] = ([PREP_Q], _sqls, AFTER_EXEC, _why and FIXED)
    DRY[f"{_label}-then-bind-sql-name"] = ([PREP_Q], _sqls, AFTER_BIND, _why and FIXED)
    DRY[f"{_label}-protocol-name"] = ([PARSE_S], _sqls, AFTER_S, _why and FIXED)
# the same root, without prepared statements: a barrier lowered by a dry run's DO block;
# A's read of the view runs its cheap cast before the view's costly filter
DRY["dry-do-lowers-barrier-then-read"] = ([], (f"DO $d$ BEGIN {LOWER}; END $d$",), READ_BV,
                                          DRY_BARRIER and FIXED)  # fmt: skip
TRIGGER = (
    "CREATE TRIGGER r51tr BEFORE INSERT ON r51w.gate FOR EACH ROW EXECUTE FUNCTION r51w.r51tf()"
)
INSERT_GATE = [(query("INSERT INTO r51w.gate VALUES (2)"),)]
DRY["dry-do-creates-trigger-then-insert"] = (
    [],
    (f"DO $d$ BEGIN {TRIGGER}; END $d$",),
    INSERT_GATE,
    "a trigger made by a dry run's DO block: the snapshot never learns it, so A's INSERT is "
    "decided as firing nothing and the trigger's NOTICE (the vault's row) is not withheld"
    and FIXED,
)
DRY["dry-creates-trigger-then-insert"] = ([], (TRIGGER,), INSERT_GATE, False)
for _k in ("then-execute", "then-bind-sql-name", "protocol-name"):
    # ALTER DOMAIN is UNKNOWN (a migrator's is refused: deny.unknown); a dry run's runs
    DRY[f"dry-adds-domain-constraint-{_k}"] = (
        _typed("SELECT r51w.h3()")[_k][0], MADE_DOMAIN_CHECK, _typed("SELECT r51w.h3()")[_k][1],
        DRY_LEAK and FIXED)  # fmt: skip
DRY["dry-lowers-barrier-then-read"] = (
    [],
    (LOWER,),
    READ_BV,
    (
        "lowering a barrier is classified UNKNOWN (deny.view): a dry run runs it and opens_ddl "
        "does not count it, so the snapshot keeps the barrier"
    )
    and FIXED,
)


@pytest.mark.parametrize("name", planted.cases(DRY))
def test_dry_run(px, pg, name):
    """The dry-run session's statements run (it refuses nothing); the enforcing ``base``
    session must still not get the vault's row."""
    before, sqls, after, _ = DRY[name]
    direct = _scenario(px, pg, before, sqls, after, False, other="dry")
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _scenario(px, pg, before, sqls, after, True, other="dry")
    # the dry-run session itself may see everything (docs/policy.md): only A's bytes count
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- 3. a COMMIT that fills a WITH HOLD cursor, and an EXECUTE or a Bind in the same read

DECLARE = "DECLARE r51c CURSOR WITH HOLD FOR SELECT r51w.g2() FROM r51w.gate"
OPEN = (query("BEGIN"),), (query(DECLARE),)
HOLD: dict[str, tuple] = {
    "commit-and-execute-one-text": (
        [*OPEN, PREP_Q], [(query("COMMIT; EXECUTE r51q"),)]),
    "commit-then-execute-one-packet": (
        [*OPEN, PREP_Q], [(query("COMMIT"), query("EXECUTE r51q"))]),
    "commit-then-bind-sql-name-one-packet": (
        [*OPEN, PREP_Q], [(query("COMMIT"), *BIND_Q)]),
    "commit-then-bind-protocol-name-one-packet": (
        [*OPEN, PARSE_S], [(query("COMMIT"), *BIND_S)]),
    "extended-commit-and-bind-one-sync": (
        [*OPEN, PARSE_S], [(parse("", "COMMIT"), bind(), execute(), bind("", "r51s"), execute(), SYNC)]),
    "extended-commit-sync-then-bind-one-packet": (
        [*OPEN, PARSE_S], [(parse("", "COMMIT"), bind(), execute(), SYNC, *BIND_S)]),
    "declare-before-parse-autocommit-then-bind": (
        [PARSE_S, (query(DECLARE),)], [BIND_S]),
}  # fmt: skip


def _hold(px, pg, before, after, via_proxy: bool) -> str:
    if via_proxy:
        _reset(px, pg)
        a = planted.session(px)
    else:
        _restore(pg)
        a = RawClient.direct(pg)
    with a:
        got = run_steps(a, before) + run_steps(a, after)
        a.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    return got


@pytest.mark.parametrize("name", list(HOLD))
def test_with_hold_commit(px, pg, name):
    before, after = HOLD[name]
    direct = _hold(px, pg, before, after, False)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _hold(px, pg, before, after, True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# the cursor declared over a call the snapshot holds harmless; another grant (the migrator,
# through the proxy) redefines what it calls, the window closes after the load, then the
# COMMIT that fills the cursor and the EXECUTE or Bind come in one read
SWAPPED_DECL = "DECLARE r51c CURSOR WITH HOLD FOR SELECT r51w.g('r51q') FROM r51w.gate"
SWAPPED_DECL_S = "DECLARE r51c CURSOR WITH HOLD FOR SELECT r51w.g('r51s') FROM r51w.gate"
B_OPEN = (query("BEGIN"),), (query(SWAPPED_DECL),)
B_OPEN_S = (query("BEGIN"),), (query(SWAPPED_DECL_S),)
HOLD_REDEFINED: dict[str, tuple] = {
    "prepared-before-commit-and-execute-one-text": (
        [*B_OPEN, PREP_Q], [(query("COMMIT; EXECUTE r51q"),)]),
    "prepared-before-commit-then-execute-one-packet": (
        [*B_OPEN, PREP_Q], [(query("COMMIT"), query("EXECUTE r51q"))]),
    "prepared-after-window-commit-and-execute-one-text": (
        [*B_OPEN], [PREP_Q, (query("COMMIT; EXECUTE r51q"),)]),
    "prepared-before-commit-then-bind-sql-name": (
        [*B_OPEN, PREP_Q], [(query("COMMIT"), *BIND_Q)]),
    "parsed-before-commit-then-bind-protocol-name": (
        [*B_OPEN_S, PARSE_S], [(query("COMMIT"), *BIND_S)]),
    "parsed-after-window-extended-commit-and-bind-one-sync": (
        [*B_OPEN_S], [PARSE_S, (parse("", "COMMIT"), bind(), execute(), *BIND_S[:2], SYNC)]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(HOLD_REDEFINED))
def test_with_hold_commit_after_window(px, pg, name):
    before, after = HOLD_REDEFINED[name]
    direct = _scenario(px, pg, before, (SWAP_F,), after, False, settle=True)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    got = _scenario(px, pg, before, (SWAP_F,), after, True, settle=True)
    assert not shows(got, MARK), ("LEAK", name, got[-600:])
