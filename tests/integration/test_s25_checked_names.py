"""Statement names checked with the server after code that may run DDL (session 25).

Code that may run DDL (here plpgsql with ``EXECUTE``) may also build a PREPARE or
DEALLOCATE from pieces, which no reading of its source tells (red-team round 41's
residue). After such code runs, the next Bind or Describe of a protocol statement the
policy held is preceded by a check the server runs (``proxy.denials.inject_check``): the
name must still hold a statement a client's Parse made (not ``from_sql``). If it does, the
check's answers are dropped and the client sees exactly what Postgres alone would send;
if it does not, the server's statement is removed and the Bind or Describe fails with
26000, and the session goes on.

Planted (schema owner; ``s25x`` is outside the grant): ``public.s25_noop()`` (dynamic SQL
that touches no name), ``public.s25_swap(n)`` (DEALLOCATE and PREPARE of statement ``n``
as a read of the vault, their words built from pieces), ``public.s25_drop(n)`` (a DEALLOCATE
built the same way). The server is the judge: every attack shows the vault's marker when
run directly.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

AGENT = "s25-bot"
MARK = "S25-VAULT-7c41"
SCOPES = "read:s25w.* write:s25w.* execute:public.s25_noop,public.s25_swap,public.s25_drop"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s25w; CREATE SCHEMA s25x;\n"
    f"CREATE TABLE s25x.vault (s25_secret text); INSERT INTO s25x.vault VALUES ('{MARK}');\n"
    "CREATE TABLE s25w.t (id int, note text); INSERT INTO s25w.t VALUES (1, 'one'), (2, 'two');\n"
    "CREATE FUNCTION public.s25_noop() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; BEGIN "
    "EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    "CREATE FUNCTION public.s25_swap(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOC' || 'ATE ' || n; "
    "EXECUTE 'PREP' || 'ARE ' || n || ' AS SELECT s25_secret AS v FROM s25x.vault'; "
    "RETURN 1; END $$;\n"
    "CREATE FUNCTION public.s25_drop(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOC' || 'ATE ' || n; RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS s25w, s25x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.s25_noop(), public.s25_swap(text), public.s25_drop(text);\n"
)
OK = "SELECT 'ok'::text AS v"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s25", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), execute(), SYNC)


def _describe(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def _both(px, pg, steps) -> tuple[str, str]:
    """Every byte received for ``steps`` directly and through the proxy (fresh sessions)."""
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    with planted.session(px) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session must go on"
    return direct, got


# --- the check passes: the client sees what Postgres alone sends ------------------------

PASSING = {
    "bind-first-in-read": [
        (parse("s25a", OK), SYNC),
        (query("SELECT public.s25_noop()"),),
        _one("s25a"),
        _one("s25a"),
    ],
    "bind-after-others-in-one-batch": [
        (parse("s25a", OK), SYNC),
        (query("SELECT public.s25_noop()"),),
        (parse("", "SELECT 2"), bind(), execute(), bind("", "s25a"), execute(), SYNC),
    ],
    "describe-then-bind": [
        (parse("s25a", OK), SYNC),
        (query("SELECT public.s25_noop()"),),
        (_describe("s25a"), SYNC),
        (_describe("s25a"), bind("", "s25a"), execute(), SYNC),
    ],
    "in-a-block-every-bind": [
        (parse("s25a", OK), parse("s25b", "SELECT note FROM s25w.t WHERE id = 2"), SYNC),
        (query("BEGIN"),),
        (query("SELECT public.s25_noop()"),),
        _one("s25a"),
        _one("s25b"),
        _one("s25a"),
        (query("COMMIT"),),
        _one("s25b"),
    ],
    "call-in-the-same-pipeline": [
        (parse("s25a", OK), SYNC),
        (
            parse("c", "SELECT public.s25_noop()"),
            bind("", "c"),
            execute(),
            bind("", "s25a"),
            execute(),
            bind("", "s25a"),
            execute(),
            SYNC,
        ),
    ],  # fmt: skip
    "an-error-before-the-check": [
        (parse("s25a", OK), SYNC),
        (query("SELECT public.s25_noop()"),),
        (parse("", "SELECT 1/0"), bind(), execute(), bind("", "s25a"), execute(), SYNC),
        _one("s25a"),
    ],
}


@pytest.mark.parametrize("name", list(PASSING))
def test_a_check_that_passes_is_invisible(px, pg, name):
    direct, got = _both(px, pg, PASSING[name])
    assert "ok" in direct
    assert got == direct, (name, direct[-400:], got[-400:])


def test_a_bind_in_a_failed_block_fails_as_it_would_without_the_check(px, pg):
    """In a block the server already failed, our check's Parse fails first (25P02), as the
    client's Bind would have: the same SQLSTATE, message and ReadyForQuery; the check is
    made again at the next Bind."""
    steps = [
        (parse("s25a", OK), SYNC),
        (query("SELECT public.s25_noop()"),),
        (query("BEGIN"),),
        (query("SELECT 1/0"),),
        _one("s25a"),
        (query("ROLLBACK"),),
        _one("s25a"),
    ]
    direct, got = _both(px, pg, steps)

    assert got.count("C25P02") == direct.count("C25P02") == 1, got[-500:]
    assert "current transaction is aborted" in got
    assert got.rstrip().endswith(direct.rstrip()[-40:]), (direct[-200:], got[-200:])
    assert got.count("ok") == direct.count("ok") == 1


# --- the check fails: the name was replaced or removed by code ---------------------------

REPLACED = {
    "replaced-then-bound": [
        (parse("s25s", OK), SYNC),
        (query("SELECT public.s25_swap('s25s')"),),
        _one("s25s"),
    ],
    "replaced-in-a-block": [
        (parse("s25s", OK), SYNC),
        (query("BEGIN"),),
        (query("SELECT public.s25_swap('s25s')"),),
        _one("s25s"),
        (query("ROLLBACK"),),
    ],
    "replaced-in-the-same-pipeline": [
        (parse("s25s", OK), SYNC),
        (
            parse("c", "SELECT public.s25_swap('s25s')"),
            bind("", "c"),
            execute(),
            bind("", "s25s"),
            execute(),
            SYNC,
        ),
    ],  # fmt: skip
    "replaced-then-described": [
        (parse("s25s", OK), SYNC),
        (query("SELECT public.s25_swap('s25s')"),),
        (_describe("s25s"), SYNC),
    ],
    "replaced-by-a-cursor-fetched-later": [
        (query("BEGIN"),),
        (query("DECLARE cur CURSOR FOR SELECT public.s25_swap('s25s')"),),
        (parse("s25s", OK), SYNC),
        (query("FETCH 1 FROM cur"),),
        _one("s25s"),
        (query("ROLLBACK"),),
    ],
    "replaced-when-a-hold-cursor-commits": [
        (query("BEGIN"),),
        (query("DECLARE cur CURSOR WITH HOLD FOR SELECT public.s25_swap('s25s')"),),
        (parse("s25s", OK), SYNC),
        (query("COMMIT"),),
        _one("s25s"),
        (query("CLOSE cur"),),
    ],
}


@pytest.mark.parametrize("name", list(REPLACED))
def test_a_replaced_statement_is_refused(px, pg, name):
    direct, got = _both(px, pg, REPLACED[name])
    if name == "replaced-then-described":
        assert "s25_secret" in direct or "v" in direct
    else:
        assert shows(direct, MARK), ("precondition: the marker directly", name, direct[-400:])
    assert not shows(got, MARK), ("LEAK", name, got[-400:])
    assert "s25_secret" not in got
    assert "C26000" in got and "deny.replaced" in got, (name, got[-400:])


def test_a_removed_statement_is_refused_and_can_be_prepared_again(px, pg):
    steps = [
        (parse("s25d", OK), SYNC),
        (query("SELECT public.s25_drop('s25d')"),),
        _one("s25d"),
        (parse("s25d", OK), SYNC),
        _one("s25d"),
    ]
    direct, got = _both(px, pg, steps)
    assert "C26000" in direct  # the server: it does not exist
    assert got.count("C26000") == 1 and "deny.replaced" in got, got[-500:]
    assert got.rstrip().endswith("I") and "ok" in got.split("deny.replaced")[-1], got[-300:]


def test_after_a_failed_check_in_a_block_the_name_can_be_prepared_again(px):
    """The check removes the server's statement even though the block then rolls back
    (prepared statements are not transactional): a new Parse of the name succeeds."""
    steps = [
        (parse("s25s", OK), SYNC),
        (query("BEGIN"),),
        (query("SELECT public.s25_swap('s25s')"),),
        _one("s25s"),
        (query("ROLLBACK"),),
        (parse("s25s", OK), SYNC),
        _one("s25s"),
        _one("s25s"),
    ]
    with planted.session(px) as c:
        got = run_steps(c, steps)
    tail = got.split("deny.replaced")[-1]
    assert "C42P05" not in tail and tail.count("ok") == 2, got[-500:]
    assert not shows(got, MARK)


def _window_closed(px) -> None:
    """No code window is open (an earlier test's call of such code): a SQL-level EXECUTE
    after a first statement would be refused in one (``_Entry.code_window``)."""
    entry = px.runtime.server.catalogs.cache.entry("app")
    wait_for(lambda: not entry.code_window(), 20, "the code window closed")


def test_sql_level_names_are_forgotten_after_such_code(px):
    """A SQL-level PREPARE cannot be told from one code made (both are ``from_sql``): after
    such code it is refused until prepared again."""
    _window_closed(px)
    with planted.session(px) as c:
        got = run_steps(c, [
            (query("PREPARE s25q AS " + OK),),
            (query("EXECUTE s25q"),),
            (query("SELECT public.s25_noop()"),),
            (query("EXECUTE s25q"),),
        ])  # fmt: skip
        # until a load read what the code may have redefined (any function: EXECUTE of a
        # CREATE OR REPLACE), every EXECUTE is refused; then prepared again, it runs
        _window_closed(px)
        after = run_steps(c, [
            (query("DEALLOCATE s25q"),),
            (query("PREPARE s25q AS " + OK),),
            (query("EXECUTE s25q"),),
        ])  # fmt: skip
    first, _, rest = got.partition("C42501")
    assert "ok" in first and rest and "may have replaced it" in rest, got[-600:]
    assert "ok" in after and "C42501" not in after, after[-600:]


SQL_LEVEL = {
    "cursor-fetched-before-execute": [
        (query("BEGIN"),),
        (query("DECLARE cur CURSOR FOR SELECT public.s25_swap('s25p')"),),
        (query("PREPARE s25p AS " + OK),),
        (query("FETCH 1 FROM cur"),),
        (query("EXECUTE s25p"),),
        (query("ROLLBACK"),),
        (query("DEALLOCATE s25p"),),
    ],
    "hold-cursor-then-execute-after-commit": [
        (query("BEGIN"),),
        (query("DECLARE cur CURSOR WITH HOLD FOR SELECT public.s25_swap('s25p')"),),
        (query("PREPARE s25p AS " + OK),),
        (query("COMMIT"),),
        (query("EXECUTE s25p"),),
        (query("CLOSE cur"),),
        (query("DEALLOCATE s25p"),),
    ],
    "call-then-execute-in-one-text": [
        (query("PREPARE s25p AS " + OK),),
        (query("SELECT public.s25_swap('s25p'); EXECUTE s25p"),),
        (query("DEALLOCATE s25p"),),
    ],
    "call-then-execute-in-one-pipeline": [
        (query("PREPARE s25p AS " + OK),),
        (
            parse("", "SELECT public.s25_swap('s25p')"),
            bind(),
            execute(),
            parse("", "EXECUTE s25p"),
            bind(),
            execute(),
            SYNC,
        ),
        (query("DEALLOCATE s25p"),),
    ],  # fmt: skip
}


@pytest.mark.parametrize("name", list(SQL_LEVEL))
def test_a_sql_level_name_code_may_replace_is_not_executed(px, pg, name):
    direct, got = _both(px, pg, SQL_LEVEL[name])
    assert shows(direct, MARK), ("precondition: the marker directly", name, direct[-400:])
    assert not shows(got, MARK), ("LEAK", name, got[-400:])


def test_a_sql_level_name_replaced_by_code_is_refused(pg, px):
    steps = [
        (query("PREPARE s25r AS " + OK),),
        (query("SELECT public.s25_swap('s25r')"),),
        (query("EXECUTE s25r"),),
        (parse("", "EXECUTE s25r"), bind(), execute(), SYNC),
        _one("s25r"),
    ]
    direct, got = _both(px, pg, steps)
    assert shows(direct, MARK), direct[-400:]
    assert not shows(got, MARK), ("LEAK", got[-400:])


def test_a_check_is_not_made_before_any_such_code(px, pg):
    """Before code that may run DDL ran, a Bind is not looked at: the bytes are Postgres's."""
    steps = [(parse("s25a", OK), SYNC), _one("s25a"), (query("SELECT 1"),), _one("s25a")]
    direct, got = _both(px, pg, steps)
    assert got == direct


# --- drivers: statement caches keep working ------------------------------------------


async def _asyncpg(px) -> list:
    conn = await asyncpg.connect(host=px.host, port=px.port, user=px.agent, password=px.token,
                                 database="app", ssl=False, timeout=10)  # fmt: skip
    out = []
    try:
        q = "SELECT note FROM s25w.t WHERE id = $1"
        out.append(await conn.fetchval(q, 1))
        out.append(await conn.fetchval("SELECT public.s25_noop()"))
        out.append(await conn.fetchval(q, 2))
        async with conn.transaction():
            out.append(await conn.fetchval("SELECT public.s25_noop()"))
            out.append(await conn.fetchval(q, 1))
            out.append(await conn.fetchval(q, 2))
        out.append(await conn.fetchval(q, 1))
        # a statement the driver cached, replaced by code: refused once, then prepared again
        await conn.execute("SELECT 1")
        stmt = await conn.prepare("SELECT note FROM s25w.t WHERE id = 1")
        await conn.fetchval("SELECT public.s25_swap($1)", stmt.get_name())
        try:
            out.append(await stmt.fetchval())
        except asyncpg.PostgresError as exc:
            out.append(type(exc).__name__ + ":" + exc.sqlstate)
    finally:
        await conn.close()
    return out


def test_asyncpg_statement_cache(px):
    out = asyncio.run(_asyncpg(px))
    assert out[:7] == ["one", 1, "two", 1, "one", "two", "one"], out
    assert out[7] == "InvalidSQLStatementNameError:26000", out
    assert MARK not in map(str, out)


def test_psycopg_prepared_and_pipelined(px):
    dsn = f"host={px.host} port={px.port} user={px.agent} password={px.token} dbname=app sslmode=disable"
    with psycopg.connect(dsn, prepare_threshold=0) as conn:
        q = "SELECT note FROM s25w.t WHERE id = %s"
        assert conn.execute(q, (1,)).fetchone() == ("one",)
        assert conn.execute("SELECT public.s25_noop()").fetchone() == (1,)
        assert conn.execute(q, (2,)).fetchone() == ("two",)
        with conn.transaction():
            conn.execute("SELECT public.s25_noop()")
            assert conn.execute(q, (1,)).fetchone() == ("one",)
        with conn.pipeline():
            cur = conn.execute(q, (1,))
            conn.execute("SELECT public.s25_noop()")
            cur2 = conn.execute(q, (2,))
        assert cur.fetchone() == ("one",) and cur2.fetchone() == ("two",)


# --- the auditor's answer --------------------------------------------------------------


def test_the_refusal_is_in_the_auditors_answer(px, make_proxy, tmp_path):
    """A failed check is a refusal: the statement row of the Bind it answered says so
    (``db.denied`` with rule ``deny.replaced``), beside the server's own error."""
    from tests.support.recording import audit_rows, grants, issue_grant, one_live_session, recording

    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, token = issue_grant(h, agent=AGENT, scopes=SCOPES)
    h.tmp = tmp_path
    with RawClient.session(h.host, h.port, AGENT, token) as c:
        sid = one_live_session(h)
        got = run_steps(c, [
            (parse("s25s", OK), SYNC),
            (query("SELECT public.s25_swap('s25s')"),),
            _one("s25s"),
        ])  # fmt: skip
    assert "deny.replaced" in got and not shows(got, MARK)
    rows = audit_rows(h, sid)
    refused = [r for r in rows if r.get("db_denied_rule") == "deny.replaced"]
    assert len(refused) == 1, rows
    assert refused[0]["sqlstate"] == "26000"
    assert [r for r in rows if r.get("db_denied_rule")] == refused
