"""The drivers' differential's F2 (session 26), fixed in session 27: a server-prepared
``SET TRANSACTION ISOLATION LEVEL`` or ``CREATE INDEX CONCURRENTLY``, bound while the
proxy must make sure the server still holds the client's statement (after code that may
run DDL), failed with 25001: the check was a query in the same transaction ("must be
called before any query") or the same pipeline ("cannot be executed within a pipeline").
Such statements (no rows: transaction control, DDL, settings, utility) are now restored
instead, in a Sync group of the proxy's own (Close and the client's own Parse: no
snapshot, nothing run), while nothing is in flight.

Each scenario runs directly and through the proxy; the server is the judge. The attack
side: code that replaced the statement under the client's name with a read of a table
outside the grant gets the client's statement back, never the read.
"""

from __future__ import annotations

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "s27r-bot"
MARK = "S27-VAULT-5e0b"
SCOPES = (
    "read:s27r.*,public.s27_shadowme write:s27r.*,public.s27_shadowme "
    "ddl:s27r.*,public.s27_shadowme execute:s27r.*,public.s27r_dyn"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s27r; CREATE SCHEMA s27x;\n"
    "CREATE TABLE s27r.t (id int); INSERT INTO s27r.t VALUES (1);\n"
    "CREATE TABLE s27r.src (id int); INSERT INTO s27r.src VALUES (2);\n"
    f"CREATE TABLE s27x.vault (pin text); INSERT INTO s27x.vault VALUES ('{MARK}');\n"
    "CREATE FUNCTION public.s27r_dyn() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; "
    "BEGIN EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    # replaces whatever statement the session holds under the name with a vault read
    "CREATE FUNCTION s27r.swap(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOCATE ' || quote_ident(n); "
    "EXECUTE 'PREPARE ' || quote_ident(n) || ' AS SELECT pin FROM s27x.vault'; "
    "RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS s27r, s27x CASCADE;\nDROP FUNCTION IF EXISTS public.s27r_dyn();\n"
    "DROP TABLE IF EXISTS public.s27_shadowme;\n"
)
SET_TX = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
DYN = (query("SELECT public.s27r_dyn()"),)  # code that may run DDL: names to be checked
DESCRIBE_S = b"S"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s27r", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _both(px, pg, steps) -> tuple[str, str]:
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    with planted.session(px) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return direct, got


def _isolation_steps(name: str, *before) -> list:
    return [
        (parse(name, SET_TX), SYNC),
        *before,
        (query("BEGIN"),),
        (bind("", name), execute(), SYNC),
        (query("SHOW transaction_isolation"),),
        (query("COMMIT"),),
    ]


def test_f2_set_transaction_isolation_prepared_after_dynamic_sql(px, pg):
    direct, got = _both(px, pg, _isolation_steps("s27si", DYN))
    assert "serializable" in direct and "C25001" not in direct
    assert "C25001" not in got, got[-600:]  # before: must be called before any query
    assert "serializable" in got, got[-600:]


def test_f2_set_transaction_isolation_described_then_bound(px, pg):
    steps = _isolation_steps("s27sd", DYN)
    steps[3] = (frame(b"D", DESCRIBE_S + b"s27sd\x00"), bind("", "s27sd"), execute(), SYNC)
    direct, got = _both(px, pg, steps)
    assert "serializable" in direct and "C25001" not in direct
    assert "C25001" not in got and "serializable" in got, got[-600:]


def test_f2_create_index_concurrently_prepared_after_dynamic_sql(px, pg):
    for via, name in (("direct", "s27ci_d"), ("proxy", "s27ci_p")):
        steps = [
            (parse(name, f"CREATE INDEX CONCURRENTLY {name} ON s27r.t (id)"), SYNC),
            DYN,
            (bind("", name), execute(), SYNC),
        ]
        if via == "direct":
            with RawClient.direct(pg) as c:
                got = run_steps(c, steps)
        else:
            with planted.session(px) as c:
                got = run_steps(c, steps)
        assert "C25001" not in got and "CREATE INDEX" in got, (via, got[-600:])
        with RawClient.direct(pg) as c:
            assert c.scalar(f"SELECT count(*) FROM pg_class WHERE relname = '{name}'") == "1"


def test_code_that_replaced_the_statement_gets_the_clients_back_not_its_read(px, pg):
    steps = _isolation_steps("s27sw", (query("SELECT s27r.swap('s27sw')"),))
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    assert MARK in direct, "directly, the code's statement runs under the client's name"
    with planted.session(px) as c:
        got = run_steps(c, steps)
    assert MARK not in got, got[-600:]
    assert "serializable" in got and "C25001" not in got, got[-600:]


def test_code_that_replaced_it_gets_the_clients_description(px, pg):
    steps = [
        (parse("s27sv", SET_TX), SYNC),
        (query("SELECT s27r.swap('s27sv')"),),
        (frame(b"D", DESCRIBE_S + b"s27sv\x00"), SYNC),
    ]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    assert "pin" in direct, "directly: the code's statement's row description"
    with planted.session(px) as c:
        got = run_steps(c, steps)
        frames = c.query("SELECT 1")
    assert "pin" not in got, got[-600:]
    assert "n\x00\x00\x00\x04" in got, "NoData: the client's SET describes no rows"
    assert any(f[:1] == b"D" for f in frames)


def test_a_restore_the_server_refuses_answers_the_bind_with_its_error(px, pg):
    """``CREATE TABLE ... AS`` is analysed at its Parse: its source dropped since, the
    restore fails (42P01) and that error, as the server alone gives it at the Bind, is the
    client's answer (the server's own 26000 for the missing statement replaced); the
    session goes on, and a new Parse of the name works."""
    ctas = "CREATE TABLE s27r.copy AS SELECT id FROM s27r.src"
    steps = [
        (parse("s27ct", ctas), SYNC),
        (query("DROP TABLE s27r.src"),),
        DYN,
        (bind("", "s27ct"), execute(), SYNC),
        (query("SELECT 42"),),
        (parse("s27c2", "SELECT 43"), bind("", "s27c2"), execute(), SYNC),
    ]
    restore_src = "SET ROLE pgwitness; CREATE TABLE IF NOT EXISTS s27r.src (id int);"
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    pg.psql(restore_src, db="app")
    with planted.session(px) as c:
        got = run_steps(c, steps)
    pg.psql(restore_src, db="app")
    assert "C42P01" in direct and "C26000" not in direct, direct[-800:]
    assert "C42P01" in got and "C26000" not in got, got[-800:]
    assert "42" in got and "43" in got, got[-800:]
    with RawClient.direct(pg) as c:
        assert c.scalar("SELECT count(*) FROM pg_class WHERE relname = 'copy'") == "0"


def test_with_debug5_the_restore_says_nothing_the_server_alone_would_not(px, pg):
    """F5 for restores: its Close and Parse in a transaction of their own make the server
    write DEBUG lines (StartTransaction, CommitTransaction); they are the proxy's."""
    steps = _isolation_steps("s27db", DYN)
    steps.insert(0, (query("SET client_min_messages = debug5"),))
    direct, got = _both(px, pg, steps)
    assert "serializable" in got and "C25001" not in got, got[-600:]
    assert got.count("SDEBUG") == direct.count("SDEBUG") > 0, (
        got.count("SDEBUG"), direct.count("SDEBUG"))  # fmt: skip


def test_a_clients_temporary_table_of_a_permanent_ones_name_is_refused_loudly(px, pg):
    """The drivers' differential of session 27: pinning search_path with pg_temp last (tried
    against red-team round 55's shadowing) made an unqualified name reach the permanent
    table silently, and ``DROP TABLE`` dropped it; so it was reverted. Round 69 (session 31)
    showed what the server's order costs (a temporary type or table shadows names inside
    granted code: a secret in an error), so pg_temp is last again and a temporary relation
    may not take a name a type or relation has outside the temporary schemas: the client is
    told (``deny.temp``) instead of silently reaching the permanent table. A temporary
    table of a name of its own is read unqualified as before."""
    pg.psql(
        "SET ROLE pgwitness; CREATE TABLE public.s27_shadowme (a text); "
        "INSERT INTO public.s27_shadowme VALUES ('permanent row');",
        db="app",
    )
    planted.renew(px)  # (made outside the proxy: a load after it knows the name)
    with planted.session(px) as c:
        refused = run_steps(c, [(query("CREATE TEMP TABLE s27_shadowme (a text)"),)])
        got = run_steps(c, [
            (query("CREATE TEMP TABLE s27_own_name (a text)"),),
            (query("INSERT INTO pg_temp.s27_own_name VALUES ('temp row')"),),
            (query("SELECT a FROM pg_temp.s27_own_name"),),
            (query("DROP TABLE pg_temp.s27_own_name"),),
        ])  # fmt: skip
    assert "C42501" in refused and "deny.temp" in refused, refused[-600:]
    assert "temp row" in got and "C42501" not in got and "DROP TABLE" in got, got[-600:]
    with RawClient.direct(pg) as c:
        assert c.scalar("SELECT string_agg(a, ',') FROM public.s27_shadowme") == "permanent row"


def test_a_check_that_passed_leaves_no_statement_of_the_proxys(px, pg):
    """The drivers' differential of session 27: psycopg's suite lists pg_prepared_statements
    after its statements were checked (a row statement, so the query checks it): the
    check's own statement stayed there until the next injection. It is closed in its group."""
    steps = [
        (parse("s27pp", "SELECT id FROM s27r.t"), SYNC),
        DYN,
        (bind("", "s27pp"), execute(), SYNC),
        (bind("", "s27pp"), execute(), SYNC),
        (query("SELECT name FROM pg_prepared_statements ORDER BY name"),),
    ]
    direct, got = _both(px, pg, steps)
    assert "s27pp" in direct and "pgw_" not in direct
    assert "s27pp" in got and "pgw_" not in got, got[-600:]
    assert got.count("SELECT 1") == direct.count("SELECT 1") == 4, got[-600:]


def test_drops_sqlglot_cannot_read_are_decided_on_postgresqls_reading(px, pg):
    """The drivers' differential of session 27 (asyncpg's suite): ``DROP FUNCTION f(i int)``
    (an argument with a name) and ``DROP DOMAIN`` were refused as unrecognised."""
    pg.psql(
        "SET ROLE pgwitness; CREATE FUNCTION s27r.dropme(i int) RETURNS int LANGUAGE sql "
        "AS 'SELECT 1'; CREATE DOMAIN s27r.dd AS int; CREATE DOMAIN s27x.vd AS int;",
        db="app",
    )
    with planted.session(px) as c:
        got = run_steps(c, [
            (query("DROP DOMAIN s27x.vd"),),  # outside the grant's ddl scope
            # CASCADE drops what it does not name: a simple Query runs as RESTRICT since
            # session 29 (nothing depends on the domain: dropped)
            (query("DROP DOMAIN s27r.dd CASCADE"),),
            (query("DROP FUNCTION s27r.dropme(i int)"),),
            (query("DROP DOMAIN IF EXISTS s27r.dd"),),  # (gone: a NOTICE, skipping)
        ])  # fmt: skip
    assert got.count("C42501") == 1, got[-800:]
    assert "DROP FUNCTION" in got and "DROP DOMAIN" in got, got[-800:]
    with RawClient.direct(pg) as c:
        assert c.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'dropme'") == "0"
        kept = "SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type "
        assert c.scalar(kept + "WHERE typname IN ('dd', 'vd')") == "vd"
