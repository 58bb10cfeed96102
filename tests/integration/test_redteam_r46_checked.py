"""Red-team round 46 (attacks on 6fec4b9: statement names checked with the server after
code that may run DDL: ``StatementPolicy._code_ran``/``verify_name``/``at_rest``, the relay's
``_check_name`` before a Bind or Describe, ``Denials.inject_check``/``passed``), time-boxed
(60 minutes); the server the judge.

Grants (agent ``r46-bot``): ``base`` = ``read:r46w.* write:r46w.*`` and ``execute`` on
``public.r46_swap``, ``r46_swapcol``, ``r46_curs``, ``r46_noop``, ``r46w.f``;
``migrator`` = that and ``ddl:r46w.*``, ``execute`` on ``r46w.redef``.

Planted (schema owner; ``r46x`` outside every grant, ``r46x.vault`` holds the marker):
``r46_swap(n)`` (``EXECUTE 'DEALLOC' || 'ATE ' || n``, then ``'PREP' || 'ARE ' || n || ' AS
<vault read>'``), ``r46_swapcol(n)`` (the same, the new statement ``SELECT 1 AS <the vault's
row>``: a Describe shows it as a column name), ``r46_curs(n)`` (``EXECUTE 'DECLA' || 'RE ' ||
n || ' CURSOR WITH HOLD FOR <vault read>'``), ``r46_noop()`` (dynamic SQL touching no name),
``r46w.f()`` (plpgsql ``RETURN 1``: no DDL code) and ``r46w.redef()`` (``EXECUTE`` of the
``CREATE OR REPLACE FUNCTION r46w.f`` kept in ``r46w.src``, whose new body replaces
``r46x1`` with a vault read). Every probe runs directly as the upstream login first and must
show the marker there (``RuntimeError`` otherwise). ``OK`` = ``SELECT 'ok'::text AS v``;
``_one(s)`` = Bind of ``s`` to the unnamed portal, Execute, Sync.

Leaks found (strict xfails when found; 1 and 3 fixed in session 25, their probes pass now:
a Describe whose name cannot be read while the encoding may be changing is refused when
checks may be due, and code that may run DDL opens a window, ``_Entry.code_window``, in
which every session of the database checks its names and refuses SQL-level EXECUTEs until
a load that started after its block ended; 2 stays a residue, see docs/decisions.md):

1. **A Describe of a non-ASCII name skips the check while the encoding "may be changing"**
   (``describe-nonascii-name-after-set-encoding``). ``Parse "r46é" OK`` / Sync; ``SET
   client_encoding = 'UTF8'`` (any SET of it makes ``Relay.encoding_changed`` for good);
   ``SELECT public.r46_swapcol('r46é')``; then in one read ``Query SELECT 1``, ``Describe S
   "r46é"``, Sync: the Query makes ``SyncGroups.ran`` true, and the Describe branch of
   ``_client_frames`` calls ``_check_name`` only ``if not (encoding_changed and not
   name.isascii() and groups.ran)``, so the Describe goes upstream unchecked (a Bind of the
   same name is refused there, ENCODING_IN_FLIGHT). The RowDescription of the statement the
   code prepared carries the vault's row as its column name. Fix guess: the Describe must
   fail closed as the Bind does (refuse it, or inject the check on the name decoded both
   ways / refuse a non-ASCII Describe while ``ran``), never pass it unchecked.
2. **Code declares a portal, not a statement** (held since session 32: a session reads
   only the portals its client made, policy/portals.py; ``portal-declared-by-code-fetch``,
   ``-protocol-execute``). ``SELECT public.r46_curs('r46c')`` (code that may run DDL: the
   check machinery runs, but it knows only prepared statements), then ``FETCH ALL FROM
   r46c`` or a protocol ``Execute "r46c"`` / Sync: the vault's rows. The portal namespace is
   the cursor namespace, and neither a FETCH of nor an Execute of a portal name the proxy
   never saw declared or bound is refused. (decisions.md, session 24, set aside following
   refcursors a function opens, for names code; this one is the same shape as round 41's
   PREPARE from pieces, which the project counted as a leak, so it is recorded as one.) Fix
   guess: after ``_code_ran``, refuse FETCH/MOVE/CLOSE-less Execute of a cursor or portal
   name this session did not DECLARE or Bind (the relay sees every Bind's portal and every
   DECLARE), or check it with the server as names are (``pg_cursors``: ``is_holdable``,
   ``statement`` is the DECLARE text; a portal the client bound does not show there).
3. **Another session's code redefines a function this session's statement calls**
   (``test_redefined_by_code_in_another_proxy_session``). Session A: ``Parse r46f "SELECT
   r46w.f()"``, ``Parse r46x1 OK`` / Sync. Session B (migrator, through the proxy): ``SELECT
   r46w.redef()`` (DDL code: B's ``_ran_ddl`` invalidates the cache, but ``defined`` is empty:
   no statement defined anything, so ``with_defined`` adds nothing to ``ddl_functions``).
   At once, A in one Sync group: an unnamed ``SELECT r46w.f()``, ``Bind r46f``/Execute,
   ``Bind r46x1``/Execute: ``f`` is no DDL code in the snapshot A decides on, so no
   ``_code_ran`` in A; the server runs the new ``f``, which replaces ``r46x1``; its Bind is
   not checked: the vault's row. After the reload (``-after-the-reload``, passing) A's
   ``catalog_changed`` sees ``ddl_functions`` grow and checks the names: it is a race, but
   a wide one (the reload is paced, ``catalog_min_interval``; 5 runs in 5 leaked here). Fix
   guess: an invalidation by DDL *code* (``on_ddl`` from a statement whose ``d.opens_ddl``)
   makes every other session's listener run ``_code_ran`` at once (as ``with_defined``'s
   stale ``defined`` does for a CREATE FUNCTION statement), until a load shows the catalog.
   The same with the owner redefining ``f`` directly (``test_redefined_by_the_owner_
   directly``): no reload comes at all; outside the proxy's threat model perhaps (the
   owner's DDL), recorded as the brief asked.

Held (passing tests): the control (``control-replaced-then-bound``) and the same Describe
with an ASCII name (``describe-ascii-control``: 26000); the check in an aborted block (the
client sees 25P02 as directly, then after ROLLBACK the Bind shows no marker); a swap in a
savepoint rolled back (prepared statements are not transactional: no marker); a Describe
and Flush in one read, the Bind in the next (each checked); a held name bound, then a
followed call that swaps it, then the name again, in one Sync group (the second Bind
checked: ``lazy_code``). Held by PostgreSQL itself (tried, no marker directly, so no test
kept): code reached by ANALYZE (an expression index, extended statistics on an
expression), VACUUM ANALYZE, REINDEX and CLUSTER runs in a security-restricted operation,
where PREPARE and DEALLOCATE are refused (42501, ``CheckRestrictedOperation``); an
IMMUTABLE function's own SPI is read-only (0A000).

Read, not run (reasoned held): forging the check's CommandComplete "DO" (no client
statement's tag is DO; even a forged one only desyncs the proxy's bookkeeping, the server
still runs the DO block and skips the client's Bind if it raises); the check's SQL against
search_path or operator tricks (everything is ``pg_catalog``-qualified, the name passed as
hex); the proxy's injected statement or portal names taken by code (the check's Parse or
Bind then fails, the group is skipped, the client's Bind with it); names over 63 bytes
(``name_too_long`` refuses them); the unnamed statement (no SQL names it).

Not tried (time box): client encodings whose Python codec and PostgreSQL conversion differ
on a name (a check of one name, a Bind of another); a Bind streamed in parts > 256 KiB
after code; COPY in the same read as a checked Bind; statement_timeout/lock_timeout firing
inside the check; revoked SELECT on pg_prepared_statements; the drivers' cost (psycopg
``prepare_threshold=0`` pipelines, JDBC-like Parse/Describe/Bind) beyond what
test_s25_checked_names.py measures.
"""

from __future__ import annotations

import time

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r46-bot"
MARK = "R46-VAULT-3e90"
FNS = "public.r46_swap,public.r46_swapcol,public.r46_curs,public.r46_noop"
SCOPES = f"read:r46w.* write:r46w.* execute:{FNS},r46w.f"
GRANTS = {
    "migrator": f"read:r46w.* write:r46w.* ddl:r46w.* execute:{FNS},r46w.f,r46w.redef",
}
VAULT = "SELECT r46_secret AS v FROM r46x.vault"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r46w; CREATE SCHEMA r46x;\n"
    f"CREATE TABLE r46x.vault (r46_secret text); INSERT INTO r46x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE r46w.t (id int, note text); INSERT INTO r46w.t VALUES (1, 'one');\n"
    "CREATE FUNCTION public.r46_noop() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; BEGIN "
    "EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    # statement n becomes a read of the vault (its words built from pieces)
    "CREATE FUNCTION public.r46_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); "
    f"EXECUTE 'PREP' || 'ARE ' || quote_ident(n) || ' AS {VAULT}'; "
    "RETURN 1; END $$;\n"
    # statement n becomes one whose column is named by the vault's row (a Describe shows it)
    "CREATE FUNCTION public.r46_swapcol(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOC' || 'ATE ' || quote_ident(n); "
    "EXECUTE format('PREP' || 'ARE %I AS SELECT 1 AS %I', n, "
    "(SELECT r46_secret FROM r46x.vault LIMIT 1)); "
    "RETURN 1; END $$;\n"
    # a cursor (a portal) named n over the vault, held past the transaction
    "CREATE FUNCTION public.r46_curs(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"EXECUTE 'DECLA' || 'RE ' || quote_ident(n) || ' CURSOR WITH HOLD FOR {VAULT}'; "
    "RETURN 1; END $$;\n"
    # harmless code another session redefines by code (``redef``: its source in r46w.src)
    "CREATE FUNCTION r46w.f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
    "CREATE TABLE r46w.src (body text);\n"
    "INSERT INTO r46w.src VALUES ($src$CREATE OR REPLACE FUNCTION r46w.f() RETURNS int "
    "LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'DEALLOC' || 'ATE r46x1'; "
    f"EXECUTE 'PREP' || 'ARE r46x1 AS {VAULT}'; RETURN 2; END $f$$src$);\n"
    "CREATE FUNCTION r46w.redef() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT body FROM r46w.src); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r46w, r46x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r46_noop(), public.r46_swap(text), "
    "public.r46_swapcol(text), public.r46_curs(text);\n"
)
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION r46w.f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$"
)
OK = "SELECT 'ok'::text AS v"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r46", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


def _describe(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def _direct(pg, steps) -> str:
    with RawClient.direct(pg) as c:
        got = run_steps(c, steps)
        c.query("ROLLBACK")
        c.query("CLOSE ALL")
    return got


# --- the table: each probe runs directly first (its marker must show), then through the
# proxy (it must not) ----------------------------------------------------------------------

DESCRIBE_WHY = (
    "LEAK: the relay skips the check before a Describe of a non-ASCII statement name "
    "while client_encoding may be changing (encoding_changed and SyncGroups.ran), where "
    "a Bind of the same name is refused (ENCODING_IN_FLIGHT): the Describe goes upstream "
    "unchecked and the replaced statement's RowDescription names its column after the "
    "vault's row"
)
PROBES: dict[str, tuple] = {
    "control-replaced-then-bound": (
        "base",
        [
            (parse("r46s", OK), SYNC),
            (query("SELECT public.r46_swap('r46s')"),),
            _one("r46s"),
        ],
        False,
    ),
    "describe-nonascii-name-after-set-encoding": (
        "base",
        [
            (parse("r46é", OK), SYNC),
            (query("SET client_encoding = 'UTF8'"),),
            (query("SELECT public.r46_swapcol('r46é')"),),
            # something runs in the same read (SyncGroups.ran): the Describe's check is
            # skipped for a non-ASCII name while the encoding "may be changing"
            (query("SELECT 1"), _describe("r46é"), SYNC),
        ],
        False,  # fixed in session 25 (DESCRIBE_WHY): refused, as a Bind of it is
    ),
    "describe-ascii-control": (
        "base",
        [
            (parse("r46d", OK), SYNC),
            (query("SET client_encoding = 'UTF8'"),),
            (query("SELECT public.r46_swapcol('r46d')"),),
            (query("SELECT 1"), _describe("r46d"), SYNC),
        ],
        False,
    ),
    "aborted-block-then-bound": (
        "base",
        [
            (parse("r46s", OK), SYNC),
            (query("BEGIN"),),
            (query("SELECT public.r46_swap('r46s')"),),
            (query("SELECT 1/0"),),
            _one("r46s"),
            (query("ROLLBACK"),),
            _one("r46s"),
        ],
        False,
    ),
    "savepoint-rolled-back-then-bound": (
        "base",
        [
            (parse("r46s", OK), SYNC),
            (query("BEGIN"),),
            (query("SAVEPOINT a"),),
            (query("SELECT public.r46_swap('r46s')"),),
            (query("ROLLBACK TO a"),),
            _one("r46s"),
            (query("COMMIT"),),
            _one("r46s"),
        ],
        False,
    ),
    "check-then-bind-flush-split": (
        "base",
        [
            (parse("r46s", OK), SYNC),
            (query("SELECT public.r46_swap('r46s')"),),
            (_describe("r46s"), frame(b"H")),
            (bind("", "r46s"), execute(), SYNC),
        ],
        False,
    ),
    "swap-in-pipeline-after-a-passing-check": (
        "base",
        [
            (parse("r46s", OK), parse("c", "SELECT public.r46_swap('r46s')"), SYNC),
            (query("SELECT public.r46_noop()"),),
            (
                bind("", "r46s"),
                execute(),
                bind("", "c"),
                execute(),
                bind("", "r46s"),
                execute(),
                SYNC,
            ),
        ],
        False,
    ),
    "portal-declared-by-code-protocol-execute": (
        "base",
        [
            (query("SELECT public.r46_curs('r46c')"),),
            (execute("r46c"), SYNC),
        ],
        False,  # (held since session 32: a session reads only the portals its client made)
    ),
    "portal-declared-by-code-fetch": (
        "base",
        [
            (query("SELECT public.r46_curs('r46c')"),),
            (query("FETCH ALL FROM r46c"),),
        ],
        False,  # (held since session 32)
    ),
}


@pytest.mark.parametrize("name", planted.cases(PROBES))
def test_probe(px, pg, name):
    grant, steps, _ = PROBES[name]
    direct = _direct(pg, steps)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px, px.tokens[grant]) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK), ("LEAK", name, got[-600:])


# --- another session redefines, by code, a function this session's statement calls ------


def _redefined_elsewhere(px, pg, via_proxy: bool, settle: bool = False) -> tuple[str, str]:
    """Session A holds ``r46f`` = ``SELECT r46w.f()`` (harmless plpgsql, no DDL code) and
    ``r46x1`` = OK; another session redefines ``f`` (by code through the proxy's migrator
    grant, or directly as the owner) so that it replaces ``r46x1`` with a vault read; A
    then binds ``r46f`` and ``r46x1`` in one pipeline."""
    steps_a = [(parse("r46f", "SELECT r46w.f()"), parse("r46x1", OK), SYNC)]
    steps_b = [
        (parse("", "SELECT r46w.f()"), bind(), execute(), bind("", "r46f"), execute(),
         bind("", "r46x1"), execute(), SYNC),
    ]  # fmt: skip
    with RawClient.direct(pg) as c:
        c.query(HARMLESS_F)
        with RawClient.direct(pg) as a:
            run_steps(a, steps_a)
            c.query("SELECT r46w.redef()")
            direct = run_steps(a, steps_b)
        c.query(HARMLESS_F)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", direct[-600:]))
    try:
        # no load an earlier probe started is still to come (one that ran after the owner's
        # redefinition would see it: the residue's probe then passes by timing, as in a CI
        # run of session 30)
        assert planted.wait_catalog_quiet(px, 5.0)
        with planted.session(px) as a:
            run_steps(a, steps_a)
            if via_proxy:
                with planted.session(px, px.tokens["migrator"]) as b:
                    out = planted.text(b.query("SELECT r46w.redef()"))
                    assert not planted.is_error(out), out[-300:]
            else:
                with RawClient.direct(pg) as b:
                    b.query("SELECT r46w.redef()")
            if settle:  # the reload the migrator's call started is done
                assert planted.wait_catalog_quiet(px, 3.0)
            got = run_steps(a, steps_b)
    finally:
        with RawClient.direct(pg) as c:
            c.query(HARMLESS_F)
        time.sleep(0.3)
    return direct, got


REDEF_WHY = (
    "LEAK: another session's code (EXECUTE of a CREATE OR REPLACE FUNCTION) makes a function "
    "this session's held statement calls into code that builds a PREPARE from pieces; "
    "until a reload shows it (catalog_changed: ddl_functions grew -> _code_ran), a Bind "
    "of the caller is decided on the snapshot that says the function runs no DDL, so no "
    "check is made before the next Bind of the name it replaced"
)
OWNER_WHY = (
    "LEAK (outside the proxy: the owner's own DDL): a function redefined directly is seen "
    "only at the next reload something else starts, so the same Binds run unchecked"
)


def test_redefined_by_code_in_another_proxy_session(px, pg):
    """Fixed in session 25 (REDEF_WHY): code that may run DDL opens a window
    (``_Entry.code_window``) in which every session checks its names and refuses SQL-level
    EXECUTEs, until a load that started after its block ended."""

    direct, got = _redefined_elsewhere(px, pg, True)
    assert not shows(got, MARK), ("LEAK", got[-600:])


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=OWNER_WHY)
def test_redefined_by_the_owner_directly(px, pg):
    direct, got = _redefined_elsewhere(px, pg, False)
    assert not shows(got, MARK), ("LEAK", got[-600:])


def test_redefined_by_code_in_another_proxy_session_after_the_reload(px, pg):
    direct, got = _redefined_elsewhere(px, pg, True, settle=True)
    assert not shows(got, MARK), ("LEAK", got[-600:])
