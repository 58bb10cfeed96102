"""End to end: statement policy through the real proxy, with a task grant's scopes.

A grant with ``read:public.orders,public.customers write:public.orders`` logs in through a
real pgwitness server in front of the session's PostgreSQL (``pg``). Denials must be
42501 naming the task, the rule and the relation, keep PostgreSQL's own transaction
semantics (compared against PostgreSQL itself refusing a statement in the same spot),
and leave the session usable. Every change a test makes to ``app`` is undone or made
only inside transactions that roll back: other test modules count these rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time

import asyncpg
import psycopg
import pytest
from psycopg import pq

from common.wire import messages as m
from common.wire.errors import frame
from tests.support.fixtures_proxy import POLICY_AGENT as AGENT
from tests.support.fixtures_proxy import POLICY_TASK as TASK
from tests.support.proxies import metric
from tests.support.rawpg import RawClient, describe
from tests.support.rawpg import error_fields as fields

pytestmark = pytest.mark.timeout(60)

MARK = "pgw-e2e-policy"  # the note of every row a test inserts


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_marked_rows(pg):
    yield
    pg.psql(
        f"DELETE FROM public.orders WHERE note LIKE '{MARK}%' OR note LIKE '%0000'; "
        "UPDATE public.orders SET note = 'first' WHERE id = 1 AND note IS DISTINCT FROM 'first';",
        db="app",
    )


def run(coro):
    return asyncio.run(coro)


async def a_connect(handle, token: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=handle.host,
        port=handle.port,
        user=AGENT,
        password=token or handle.token,
        database="app",
        ssl=False,
        timeout=10,
    )


def p_connect(handle, token: str | None = None, **kw) -> psycopg.Connection:
    return psycopg.connect(
        host=handle.host,
        port=handle.port,
        user=AGENT,
        password=token or handle.token,
        dbname="app",
        sslmode="disable",
        connect_timeout=10,
        autocommit=True,
        **kw,
    )


def raw_login(handle) -> RawClient:
    c = RawClient(handle.host, handle.port)
    c.login(AGENT, handle.token)
    return c


def on_pg(pg, sql: str) -> str:
    return pg.psql(sql, db="app").strip()


def assert_denied(exc: BaseException, *parts: str) -> None:
    assert getattr(exc, "sqlstate", None) == "42501", repr(exc)
    text = str(exc)
    assert text.startswith(f"pgwitness: task {TASK} "), text
    for part in parts:
        assert part in text, (part, text)
    # The injected DO block's traces are not shown to the client.
    for attr in ("context", "schema_name"):
        value = getattr(exc, attr, None)
        assert not value, (attr, value)


async def assert_usable(conn: asyncpg.Connection) -> None:
    """The session still answers, as the same role, with the same search_path."""
    assert await conn.fetchval("SELECT count(*) FROM public.customers") == 3
    assert await conn.fetchval("SELECT current_user") == "pgwitness"
    path = await conn.fetchval("SHOW search_path")
    assert "secret" not in path and "plainuser" not in path, path


# --- allowed ----------------------------------------------------------------------------


def test_allowed_reads_and_writes(pproxy, pg):
    async def go():
        conn = await a_connect(pproxy)
        try:
            n = await conn.fetchval(
                "SELECT count(*) FROM public.orders o JOIN public.customers c ON c.id = o.customer_id"
            )
            new_id = await conn.fetchval(
                "INSERT INTO public.orders (customer_id, total, note) VALUES ($1, $2, $3) RETURNING id",
                1,
                1.5,
                MARK,
            )
            assert on_pg(pg, f"SELECT note FROM public.orders WHERE id = {new_id}") == MARK
            await conn.execute("UPDATE public.orders SET total = 2 WHERE id = $1", new_id)
            assert on_pg(pg, f"SELECT total FROM public.orders WHERE id = {new_id}") == "2"
            await conn.execute(f"DELETE FROM public.orders WHERE id = {new_id}")
            assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE id = {new_id}") == "0"
            return n
        finally:
            await conn.close()

    assert run(go()) == 4


# --- denied statements ------------------------------------------------------------------

DENIED = [
    ("read secret.payroll", "SELECT * FROM secret.payroll", ("scope.read", "secret.payroll")),
    (
        "write customers",
        "UPDATE public.customers SET name = 'x'",
        ("scope.write", "public.customers"),
    ),
    (
        "insert customers",
        "INSERT INTO public.customers (name) VALUES ('x')",
        ("scope.write", "public.customers"),
    ),
    ("ddl create", "CREATE TABLE public.e2e_ddl (x int)", ("scope.ddl",)),
    ("ddl alter", "ALTER TABLE public.orders ADD COLUMN e2e int", ("scope.ddl", "public.orders")),
    ("ddl drop", "DROP TABLE public.orders", ("public.orders",)),
    ("set role", "SET ROLE plainuser", ("deny.setting", "role")),
    ("set search_path", "SET search_path = secret, public", ("deny.setting", "search_path")),
    ("set session authorization", "SET SESSION AUTHORIZATION plainuser", ("deny.setting",)),
    ("do", "DO $$ BEGIN PERFORM 1; END $$", ("deny.do",)),
    ("call", "CALL public.some_procedure()", ("deny.call",)),
    ("copy to program", "COPY public.orders TO PROGRAM 'cat > /dev/null'", ("deny.copy_program",)),
    ("copy payroll to stdout", "COPY secret.payroll TO STDOUT", ("scope.read", "secret.payroll")),
    ("pg_read_file", "SELECT pg_read_file('/etc/passwd')", ("deny.function", "pg_read_file")),
    (
        "set_config",
        "SELECT set_config('search_path', 'secret', false)",
        ("deny.function", "set_config"),
    ),
    (
        "pg_terminate_backend",
        "SELECT pg_terminate_backend(1)",  # not a backend of the grant's own sessions
        ("deny.function", "pg_terminate_backend"),
    ),
    # parsed by PostgreSQL, not classified (a syntax error is the server's own 42601: below)
    ("unclassified", "CREATE PUBLICATION e2e_pub FOR ALL TABLES", ("deny.unknown",)),
    ("grant", "GRANT ALL ON secret.payroll TO PUBLIC", ("deny.role",)),
]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("sql,parts", [d[1:] for d in DENIED], ids=[d[0] for d in DENIED])
def test_denied_statement_and_session_stays_usable(pproxy, pg, sql, parts, protocol):
    async def go():
        conn = await a_connect(pproxy)
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                if protocol == "simple":
                    await conn.execute(sql)  # Query message
                else:
                    await conn.fetch(sql)  # Parse/Bind/Execute
            assert_denied(info.value, *parts)
            await assert_usable(conn)
            assert not conn.is_in_transaction()
        finally:
            await conn.close()

    run(go())
    assert on_pg(pg, "SELECT count(*) FROM public.customers") == "3"
    assert on_pg(pg, "SELECT count(*) FROM pg_tables WHERE tablename = 'e2e_ddl'") == "0"


def test_denied_read_message_names_task_rule_and_relation(pproxy):
    with p_connect(pproxy) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT salary FROM secret.payroll WHERE id = 1")
        diag = info.value.diag
        assert diag.severity == "ERROR" and diag.sqlstate == "42501"
        assert diag.message_primary == (
            f"pgwitness: task {TASK} may not read secret.payroll (rule scope.read)"
        )
        assert diag.schema_name is None and diag.context is None
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- multi-statement simple queries -----------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        f"INSERT INTO public.orders (customer_id, total, note) VALUES (1, 1, '{MARK}'); SELECT * FROM secret.payroll",
        f"SELECT * FROM secret.payroll; INSERT INTO public.orders (customer_id, total, note) VALUES (1, 1, '{MARK}')",
        f"INSERT INTO public.orders (customer_id, total, note) VALUES (1, 1, '{MARK}'); "
        f"UPDATE public.orders SET note = '{MARK}-upd' WHERE id = 1; SET ROLE plainuser",
    ],
    ids=["allowed-then-denied", "denied-then-allowed", "two-allowed-then-denied"],
)
def test_multi_statement_query_with_one_denied_runs_nothing(pproxy, pg, script):
    async def go():
        conn = await a_connect(pproxy)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(script)
            await assert_usable(conn)
        finally:
            await conn.close()

    run(go())
    assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE note LIKE '{MARK}%'") == "0"


def test_multi_statement_denial_inside_a_transaction_aborts_it(pproxy, pg):
    async def go():
        conn = await a_connect(pproxy)
        try:
            await conn.execute("BEGIN")
            await conn.execute(f"UPDATE public.orders SET note = '{MARK}' WHERE id = 2")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT 1; SELECT * FROM secret.payroll")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await conn.execute("SELECT 1")
            await conn.execute("ROLLBACK")
            await assert_usable(conn)
        finally:
            await conn.close()

    run(go())
    assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE note LIKE '{MARK}%'") == "0"


# --- transaction semantics, compared with PostgreSQL itself -----------------------------


@pytest.fixture
def noaccess_table(pg):
    """A table owned by pgwitness that plainuser has no rights on (a direct 42501)."""
    on_pg(
        pg,
        "DROP TABLE IF EXISTS public.e2e_noaccess; CREATE TABLE public.e2e_noaccess (x int); "
        "ALTER TABLE public.e2e_noaccess OWNER TO pgwitness;",
    )
    yield "public.e2e_noaccess"
    on_pg(pg, "DROP TABLE IF EXISTS public.e2e_noaccess;")


def _tx_sequence(conn: psycopg.Connection, denied: str, extended: bool) -> list[tuple]:
    """(sqlstate or None, transaction status) after each step of one sequence."""
    steps = [
        "BEGIN",
        f"UPDATE public.orders SET note = '{MARK}' WHERE id = 1",
        denied,
        "SELECT 1",
        "SELECT count(*) FROM public.orders",
        "ROLLBACK",
        "SELECT 1",
    ]
    out = []
    for sql in steps:
        state = None
        try:
            if extended:
                conn.execute(
                    sql + (" WHERE %s" if sql.startswith("SELECT * FROM") else ""),
                    (True,) if sql.startswith("SELECT * FROM") else None,
                    prepare=False,
                )
            else:
                conn.execute(sql)
        except psycopg.Error as exc:
            state = exc.sqlstate
        out.append((sql.split()[0], state, pq.TransactionStatus(conn.info.transaction_status).name))
    return out


@pytest.mark.parametrize("extended", [False, True], ids=["simple", "extended"])
def test_denial_in_a_transaction_behaves_like_postgres(pproxy, pg, noaccess_table, extended):
    with p_connect(pproxy) as conn:
        via_proxy = _tx_sequence(conn, "SELECT * FROM secret.payroll", extended)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE note LIKE '{MARK}%'") == "0"

    with psycopg.connect(pg.dsn("plainuser", db="app"), autocommit=True) as direct:
        via_postgres = _tx_sequence(direct, f"SELECT * FROM {noaccess_table}", extended)
    assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE note LIKE '{MARK}%'") == "0"

    assert via_proxy == via_postgres
    assert [s[1:] for s in via_proxy] == [
        (None, "INTRANS"),
        (None, "INTRANS"),
        ("42501", "INERROR"),
        ("25P02", "INERROR"),
        ("25P02", "INERROR"),
        (None, "IDLE"),
        (None, "IDLE"),
    ]


# --- extended protocol and pipelines ----------------------------------------------------


def test_pipeline_denial_rolls_back_the_earlier_statement(pproxy, pg):
    with p_connect(pproxy) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:  # noqa: SIM117
            with conn.pipeline():
                conn.execute("UPDATE public.orders SET note = %s WHERE id = 3", (MARK,))
                conn.execute("SELECT * FROM secret.payroll WHERE id = %s", (1,))
        assert TASK in str(info.value) and "secret.payroll" in str(info.value)
        assert on_pg(pg, "SELECT note FROM public.orders WHERE id = 3") == "rush"
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        with conn.pipeline():
            cur = conn.execute("SELECT count(*) FROM public.orders WHERE id = %s", (3,))
        assert cur.fetchone() == (1,)


def _pipeline_frames(client: RawClient, denied: str) -> list[str]:
    """Parse/Bind/Execute an allowed UPDATE and then ``denied``, one Sync; the answer."""
    update = f"UPDATE public.orders SET note = '{MARK}' WHERE id = 4"
    client.send(
        m.parse("", update)
        + m.bind_no_params()
        + m.execute()
        + m.parse("s_denied", denied)
        + m.bind_no_params("", "s_denied")
        + m.execute()
        + m.SYNC
    )
    return describe(client.until_ready())


def test_raw_pipeline_frames_match_postgres(pproxy, pg):
    with raw_login(pproxy) as c:
        got = _pipeline_frames(c, "SELECT * FROM secret.payroll")
        assert c.scalar("SELECT note FROM public.orders WHERE id = 4") == "gift"
    assert got[:3] == ["1", "2", "C"], got
    assert got[3].startswith(f"E:ERROR:42501:pgwitness: task {TASK} may not read secret.payroll"), (
        got
    )
    assert got[4:] == ["Z"], got
    # A denial happens at Parse: PostgreSQL failing the second Parse itself (an unknown
    # table) answers the same shape.
    direct = RawClient(pg.host, pg.port)
    try:
        direct.startup("plainuser", "app")
        password_login(direct, pg.users["plainuser"])
        expected = _pipeline_frames(direct, "SELECT * FROM public.e2e_no_such_table")
    finally:
        direct.close()
    assert [f[:7] for f in got] == [f[:7] for f in expected], (got, expected)
    assert on_pg(pg, "SELECT note FROM public.orders WHERE id = 4") == "gift"


def password_login(client: RawClient, password: str) -> None:
    """Answer PostgreSQL's own authentication request (cleartext or SCRAM)."""
    from common.wire.scram import MECHANISM, ScramClient

    scram = ScramClient(password)
    while True:
        f = client.read_frame()
        assert f is not None and f[:1] == b"R", describe([f] if f else [])
        code, data = m.decode_auth(f)
        if code == m.AUTH_CLEARTEXT:
            client.send(m.password_message(password.encode() + b"\0"))
        elif code == m.AUTH_SASL:
            client.send(m.sasl_initial_response(MECHANISM, scram.first()))
        elif code == m.AUTH_SASL_CONTINUE:
            client.send(m.password_message(scram.final(data)))
        elif code == m.AUTH_OK:
            assert client.until_ready()[-1][:1] == b"Z"
            return


def test_sync_groups_in_one_write_fail_independently(pproxy):
    """Three Sync groups sent at once, the middle one denied: only it fails; a Flush before
    the Sync delivers a denial at once, as PostgreSQL delivers a Parse error."""
    ok = "SELECT count(*) FROM public.customers"
    bad = "SELECT * FROM secret.payroll"
    portal = frame(b"D", b"P\x00")
    denied = f"E:ERROR:42501:pgwitness: task {TASK} may not read secret.payroll (rule scope.read)"
    with raw_login(pproxy) as c:
        c.send(
            m.parse("", ok) + m.bind_no_params() + portal + m.execute() + m.SYNC
            + m.parse("", bad) + m.bind_no_params() + portal + m.execute() + m.SYNC
            + m.parse("", ok) + m.bind_no_params() + portal + m.execute() + m.SYNC
        )  # fmt: skip
        assert describe(c.until_ready()) == ["1", "2", "T", "D", "C", "Z"]
        assert describe(c.until_ready()) == [denied, "Z"]
        assert describe(c.until_ready()) == ["1", "2", "T", "D", "C", "Z"]
        c.send(m.parse("s_ok", ok) + m.parse("s_bad", bad) + frame(b"H"))
        assert describe([c.read_frame(), c.read_frame()]) == ["1", denied]
        c.send(m.SYNC)
        assert describe(c.until_ready()) == ["Z"]
        c.send(m.bind_no_params("", "s_ok") + m.execute() + m.SYNC)
        assert describe(c.until_ready()) == ["2", "D", "C", "Z"]


def test_asyncpg_prepare_of_a_denied_query_fails_at_prepare(pproxy):
    async def go():
        conn = await a_connect(pproxy)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
                await conn.prepare("SELECT id, salary FROM secret.payroll WHERE id = $1")
            assert_denied(info.value, "scope.read", "secret.payroll")
            stmt = await conn.prepare("SELECT note FROM public.orders WHERE id = $1")
            assert await stmt.fetchval(3) == "rush"
            await assert_usable(conn)
        finally:
            await conn.close()

    run(go())


def test_bind_of_a_denied_statement_name_fails(pproxy):
    with raw_login(pproxy) as c:
        c.send(m.parse("s_secret", "SELECT * FROM secret.payroll") + m.SYNC)
        answer = c.until_ready()
        assert describe(answer)[0].startswith("E:ERROR:42501:"), describe(answer)
        c.send(m.bind_no_params("", "s_secret") + m.execute() + m.SYNC)
        answer = c.until_ready()
        errors = [fields(f) for f in answer if f[:1] == b"E"]
        assert len(errors) == 1 and errors[0]["C"] == "26000", describe(answer)
        assert "s_secret" in errors[0]["M"] and "does not exist" in errors[0]["M"]
        assert not [f for f in answer if f[:1] == b"D"], "a denied statement returned rows"
        assert c.scalar("SELECT count(*) FROM public.customers") == "3"


def test_bind_of_the_unnamed_statement_after_its_parse_was_denied_fails_like_postgres(pproxy):
    """PostgreSQL: after a failed Parse of the unnamed statement, Bind of it is 26000
    "unnamed prepared statement does not exist". Through the proxy the denied Parse must not
    leave anything bindable, and the client must never see the injection's internals."""
    with raw_login(pproxy) as c:
        c.send(m.parse("", "SELECT * FROM secret.payroll") + m.SYNC)
        assert describe(c.until_ready())[0].startswith("E:ERROR:42501:")
        c.send(m.bind_no_params() + m.execute() + m.SYNC)
        answer = c.until_ready()
        errors = [fields(f) for f in answer if f[:1] == b"E"]
        assert not [f for f in answer if f[:1] == b"D"], "a denied statement returned rows"
        assert len(errors) == 1, describe(answer)
        assert "s" not in errors[0] and "W" not in errors[0], errors[0]
        assert errors[0]["C"] == "26000", errors[0]


def test_denied_named_parse_keeps_the_clients_unnamed_statement(pproxy):
    """A denied Parse of a *named* statement must not replace the session's unnamed
    statement (PostgreSQL leaves it alone when another Parse fails)."""
    with raw_login(pproxy) as c:
        c.send(m.parse("", "SELECT count(*) FROM public.customers") + m.SYNC)
        assert describe(c.until_ready()) == ["1", "Z"]
        c.send(m.parse("s_other", "SELECT * FROM secret.payroll") + m.SYNC)
        assert describe(c.until_ready())[0].startswith("E:ERROR:42501:")
        c.send(m.bind_no_params() + m.execute() + m.SYNC)
        answer = c.until_ready()
        assert describe(answer)[:2] == ["2", "D"], describe(answer)


def test_sql_prepare_and_execute(pproxy):
    async def go():
        conn = await a_connect(pproxy)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
                await conn.execute("PREPARE pay AS SELECT * FROM secret.payroll")
            assert_denied(info.value, "secret.payroll")
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as info:
                await conn.execute("EXECUTE pay")
            assert_denied(info.value, "pay")
            await conn.execute("PREPARE ord(int) AS SELECT note FROM public.orders WHERE id = $1")
            rows = await conn.fetch("EXECUTE ord(3)")
            assert [r["note"] for r in rows] == ["rush"]
            # A name re-PREPAREd as something denied stays denied.
            await conn.execute("DEALLOCATE ord")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("PREPARE ord AS SELECT salary FROM secret.payroll")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("EXECUTE ord")
            await assert_usable(conn)
        finally:
            await conn.close()

    run(go())


# --- COPY -------------------------------------------------------------------------------


def test_copy_in_and_out_within_scope(pproxy, pg):
    with p_connect(pproxy) as conn, conn.cursor() as cur:
        with cur.copy("COPY public.orders TO STDOUT WITH (FORMAT csv)") as copy:
            out = b"".join(bytes(chunk) for chunk in copy).decode()
        assert "rush" in out and len(out.splitlines()) == 4
        with cur.copy("COPY public.orders (customer_id, total, note) FROM STDIN") as copy:
            copy.write_row((1, 7, MARK))
            copy.write_row((2, 8, MARK))
        assert on_pg(pg, f"SELECT count(*) FROM public.orders WHERE note = '{MARK}'") == "2"
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:  # noqa: SIM117
            with cur.copy("COPY public.customers (name) FROM STDIN") as copy:
                copy.write_row(("intruder",))
        assert f"task {TASK}" in str(info.value) and "public.customers" in str(info.value)
        assert conn.execute("SELECT count(*) FROM public.customers").fetchone() == (3,)
    assert on_pg(pg, "SELECT count(*) FROM public.customers") == "3"


def test_asyncpg_copy_methods_within_scope(pproxy, pg):
    async def go():
        conn = await a_connect(pproxy)
        try:
            status = await conn.copy_records_to_table(
                "orders",
                schema_name="public",
                columns=["customer_id", "total", "note"],
                records=[(1, 3, MARK)],
            )
            assert status == "COPY 1"
            out: list[bytes] = []

            async def sink(chunk):
                out.append(bytes(chunk))

            await conn.copy_from_table("orders", schema_name="public", output=sink, format="csv")
            return b"".join(out).decode()
        finally:
            await conn.close()

    assert MARK in run(go())


# --- what drivers and psql send ----------------------------------------------------------


def test_asyncpg_queries_that_need_type_introspection(pproxy):
    async def go():
        conn = await a_connect(pproxy)
        try:
            ids = await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM public.orders")
            rows = await conn.fetch(
                "SELECT id FROM public.orders WHERE id = ANY($1::int[])", [1, 2]
            )
            return ids, [r["id"] for r in rows]
        finally:
            await conn.close()

    assert run(go()) == ([1, 2, 3, 4], [1, 2])


def test_row_constructor_is_not_a_function_call(pproxy):
    with p_connect(pproxy) as conn:
        assert conn.execute("SELECT ROW(1, 'a')::text").fetchone() == ("(1,a)",)
        assert conn.execute(
            "SELECT count(*) FROM public.orders WHERE (customer_id, id) = ROW(1, 1)"
        ).fetchone() == (1,)


def _psql(pproxy, pg, command: str) -> subprocess.CompletedProcess:
    local = pg.bindir / "psql"
    binary = str(local) if local.exists() else (shutil.which("psql") or "psql")
    env = dict(os.environ, PGPASSWORD=pproxy.token, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
    argv = [binary, "-X", "-h", pproxy.host, "-p", str(pproxy.port), "-U", AGENT, "-d", "app"]
    return subprocess.run(
        [*argv, "-c", command], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("command", [r"\dt public.*", r"\dn", r"\di", r"\conninfo"])
def test_psql_meta_commands(pproxy, pg, command):
    result = _psql(pproxy, pg, command)
    assert result.returncode == 0, result.stderr
    assert "pgwitness:" not in result.stderr


def test_psql_describe_table(pproxy, pg):
    result = _psql(pproxy, pg, r"\d public.orders")
    assert result.returncode == 0, result.stderr
    assert "customer_id" in result.stdout


def test_psql_describe_a_table_others_reference(pproxy, pg):
    """A table with triggers (a foreign key pointing at it makes them) gets psql's
    "Referenced by" query, which names it by OID: '16412'::pg_catalog.regclass."""
    pg.psql(
        "SET ROLE pgwitness; CREATE TABLE IF NOT EXISTS secret.p_refs "
        "(order_id int REFERENCES public.orders (id))",
        db="app",
    )
    try:
        result = _psql(pproxy, pg, r"\d public.orders")
        assert result.returncode == 0, result.stderr
        assert "Referenced by:" in result.stdout and "p_refs" in result.stdout, result.stdout
    finally:
        pg.psql("DROP TABLE IF EXISTS secret.p_refs", db="app")


# --- startup parameters -----------------------------------------------------------------


def test_options_with_a_forbidden_setting_is_refused_at_connect(pproxy):
    with pytest.raises(psycopg.OperationalError) as info:
        p_connect(pproxy, options="-c search_path=secret")
    text = str(info.value)
    assert 'setting "search_path" in options refused' in text, text
    assert "rule deny.setting" in text, text


@pytest.mark.parametrize(
    "params,word",
    [
        ({"search_path": "secret"}, "search_path"),
        ({"client_encoding": "SJIS"}, "SJIS"),
        ({"role": "plainuser"}, "role"),
        ({"replication": "database"}, "replication"),
    ],
    ids=["search_path", "sjis", "role", "replication"],
)
def test_unsafe_startup_parameters_are_refused(pproxy, params, word):
    with RawClient(pproxy.host, pproxy.port) as c:
        c.startup(AGENT, "app", **params)
        # replication is refused before authentication (for everyone), the rest after
        frames = c.until_ready() if "replication" in params else c.authenticate(pproxy.token)
        assert c.read_frame() is None
    assert frames[-1][:1] == b"E" and b"Z" not in [f[:1] for f in frames], describe(frames)
    err = fields(frames[-1])
    assert (err["S"], err["C"]) == ("FATAL", "42501") and word in err["M"], err


def test_allowed_client_encoding_can_send_non_ascii_text(pproxy):
    with p_connect(pproxy, client_encoding="LATIN1") as conn:
        assert conn.execute("SHOW client_encoding").fetchone() == ("LATIN1",)
        assert conn.execute("SELECT 'café'").fetchone() == ("café",)
        assert conn.execute("SELECT count(*) FROM public.customers").fetchone() == (3,)


def test_application_name_is_allowed(pproxy):
    with p_connect(pproxy, application_name="e2e-agent") as conn:
        # as Postgres would: the server holds the client's own name (untagged by default)
        assert conn.info.parameter_status("application_name") == "e2e-agent"
        assert conn.execute("SHOW application_name").fetchone() == ("e2e-agent",)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- dry run ----------------------------------------------------------------------------


def test_dry_run_grant_runs_denied_statements_and_counts_would_deny(pproxy):
    before = metric("pgwitness_statements_total", decision="would_deny")
    denied_before = metric("pgwitness_statements_total", decision="denied")

    async def go():
        conn = await a_connect(pproxy, pproxy.dry_token)
        try:
            rows = await conn.fetch("SELECT id, salary FROM secret.payroll ORDER BY id")
            status = await conn.execute("SELECT * FROM secret.payroll")  # simple Query too
            return rows, status
        finally:
            await conn.close()

    rows, status = run(go())
    assert [r["salary"] for r in rows] == [100000, 120000, 90000]
    assert status == "SELECT 3"
    deadline = time.monotonic() + 3
    while metric("pgwitness_statements_total", decision="would_deny") < before + 2:
        assert time.monotonic() < deadline, "would_deny decisions were not counted"
        time.sleep(0.05)
    assert metric("pgwitness_statements_total", decision="would_deny") == before + 2
    assert metric("pgwitness_statements_total", decision="denied") == denied_before


def test_denials_are_counted_as_denied(pproxy):
    before = metric("pgwitness_statements_total", decision="denied")

    async def go():
        conn = await a_connect(pproxy)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT * FROM secret.payroll")
        finally:
            await conn.close()

    run(go())
    deadline = time.monotonic() + 3
    while metric("pgwitness_statements_total", decision="denied") < before + 1:
        assert time.monotonic() < deadline, "the denial was not counted"
        time.sleep(0.05)


# --- FunctionCall -----------------------------------------------------------------------


def terminate_call(oid: int, pid: int) -> bytes:
    """FunctionCall of pg_terminate_backend(pid integer, timeout bigint), binary arguments."""
    body = struct.pack("!ihhh", oid, 1, 1, 2)
    body += struct.pack("!ii", 4, pid) + struct.pack("!iq", 8, 0)
    return frame(b"F", body + struct.pack("!h", 1))


def test_function_call_message_is_denied_and_session_continues(pproxy, pg):
    oid = int(on_pg(pg, "SELECT 'pg_terminate_backend(integer,bigint)'::regprocedure::oid"))
    with raw_login(pproxy) as c:
        pid = int(c.scalar("SELECT pg_backend_pid()"))
        c.send(terminate_call(oid, pid))
        answer = c.until_ready()
        assert describe(answer)[0].startswith(
            f"E:ERROR:42501:pgwitness: task {TASK} may not use the fast-path FunctionCall"
        ), describe(answer)
        assert describe(answer)[1:] == ["Z"], describe(answer)
        assert answer[-1] == m.ready_for_query(b"I")
        assert c.scalar("SELECT count(*) FROM public.customers") == "3"
        # Inside a transaction the denial aborts it, as any error would.
        c.query("BEGIN")
        c.send(terminate_call(oid, pid))
        answer = c.until_ready()
        assert describe(answer)[0].startswith("E:ERROR:42501:") and answer[-1] == m.ready_for_query(
            b"E"
        )
        assert describe(c.query("SELECT 1"))[0].startswith("E:ERROR:25P02:")
        c.query("ROLLBACK")
        assert c.scalar("SELECT pg_backend_pid()") == str(pid)


# --- what the server actually ran: no way around the policy -----------------------------

SECRET_SALARY = "120000"  # in secret.payroll only

BYPASS_ATTEMPTS = [
    "SELECT 1 /* /* */ ; SELECT * FROM secret.payroll; /* */ */",
    "SELECT $a$ ; $a$; SELECT * FROM secret.payroll",
    "SELECT E'\\''; SELECT * FROM secret.payroll; --'",
    "SELECT 'it''s'; SELECT * FROM secret.payroll",
    'SELECT * FROM U&"secr\\0065t".payroll',
    'SELECT * FROM "secret"."payroll"',
    "SELECT * FROM SECRET.PAYROLL",
    "TABLE secret.payroll",
    "SELECT * FROM app.secret.payroll",
    "WITH x AS (SELECT * FROM secret.payroll) SELECT * FROM x",
    "WITH payroll AS (SELECT 1) SELECT * FROM secret.payroll",
    "SELECT o.*, p.salary FROM public.orders o JOIN secret.payroll p ON p.id = o.id",
    "SELECT (SELECT max(salary) FROM secret.payroll) FROM public.orders",
    "SELECT row_to_json(p) FROM secret.payroll p",
    "SELECT query_to_xml('select * from secret.payroll', true, true, '')",
    "SELECT table_to_xml('secret.payroll', true, true, '')",
    "SELECT schema_to_xml('secret', true, true, '')",
    "SELECT ts_stat('select to_tsvector(salary::text) from secret.payroll')",
    "EXPLAIN ANALYZE SELECT * FROM secret.payroll",
    "COPY (SELECT * FROM secret.payroll) TO STDOUT",
    "CREATE TEMP TABLE e2e_t AS TABLE secret.payroll",
    "SELECT * INTO TEMP e2e_t2 FROM secret.payroll",
    "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM secret.payroll",
    "PREPARE e2e_p AS SELECT * FROM secret.payroll; EXECUTE e2e_p",
    "SELECT 1; COMMIT; SELECT * FROM secret.payroll",
    "INSERT INTO public.orders (note) SELECT salary::text FROM secret.payroll RETURNING note",
    "UPDATE public.orders SET note = (SELECT max(salary)::text FROM secret.payroll) WHERE id = 1 "
    "RETURNING note",
    "CREATE FUNCTION pg_temp.e2e_f() RETURNS int LANGUAGE sql AS $$ SELECT max(salary) FROM "
    "secret.payroll $$; SELECT pg_temp.e2e_f()",
    "CREATE TEMP VIEW e2e_v AS SELECT * FROM secret.payroll; SELECT * FROM e2e_v",
    "CREATE TEMP VIEW orders AS SELECT * FROM secret.payroll; SELECT * FROM orders",
    "SET ROLE plainuser; SELECT * FROM secret.payroll",
    "SELECT set_config('search_path', 'secret', false); SELECT * FROM payroll",
    "SET SCHEMA 'secret'; SELECT * FROM payroll",
]


def _server_answer(conn: psycopg.Connection, sql: str) -> str:
    """Every row, notice and error text the server sent for ``sql`` (simple Query)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    text = ""
    try:
        if sql.startswith("COPY"):
            with conn.cursor() as cur, cur.copy(sql) as copy:
                text += "".join(bytes(chunk).decode() for chunk in copy)
            return text
        cur = conn.execute(sql)  # no parameters: simple Query, several statements
        while True:
            if cur.description is not None:
                text += repr(cur.fetchall())
            if not cur.nextset():
                break
    except psycopg.Error as exc:
        text += str(exc)
    return text + " ".join(notices)


def test_no_statement_reaches_secret_data(pproxy, pg):
    """The server is the judge: whatever the classifier thinks, no result row, notice or
    error text may carry a value that exists only in secret.payroll."""
    leaks = []
    for sql in BYPASS_ATTEMPTS:
        with p_connect(pproxy) as conn:  # a fresh session each: one attempt cannot mask another
            if SECRET_SALARY in _server_answer(conn, sql):
                leaks.append(sql)
    assert on_pg(pg, "SELECT count(*) FROM public.orders WHERE note LIKE '1%0000'") == "0"
    assert not leaks, leaks


@pytest.fixture
def role_schema(pg):
    """A schema named after the upstream role, holding its own ``customers``."""
    on_pg(
        pg,
        "CREATE SCHEMA pgwitness AUTHORIZATION pgwitness; "
        "CREATE TABLE pgwitness.customers (id int, name text); "
        "INSERT INTO pgwitness.customers VALUES (1, 'shadow-row'); "
        "ALTER TABLE pgwitness.customers OWNER TO pgwitness;",
    )
    yield
    on_pg(pg, "DROP SCHEMA IF EXISTS pgwitness CASCADE;")


def test_unqualified_names_resolve_where_the_policy_checked_them(pproxy, role_schema):
    with p_connect(pproxy) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM customers ORDER BY id")]
        path = conn.execute("SHOW search_path").fetchone()[0]
    assert "shadow-row" not in names, names
    assert names == ["Ada", "Grace", "Edsger"]
    assert path == "public, pg_temp"


@pytest.mark.parametrize("reset", ["RESET ALL", "DISCARD ALL", "RESET search_path"])
def test_search_path_stays_what_the_policy_assumes(pproxy, reset):
    with p_connect(pproxy) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("public, pg_temp",)
        try:
            conn.execute(reset)
        except psycopg.errors.InsufficientPrivilege:
            pass  # refusing to reset it is fine too
        assert conn.execute("SHOW search_path").fetchone() == ("public, pg_temp",)


def test_mistyped_sql_gets_the_servers_syntax_error_and_the_session_goes_on(pproxy, pg):
    """Text PostgreSQL's parser rejects is refused with what the server would answer:
    SQLSTATE 42601 and the parser's own message (an agent fixes its SQL by it), in and out
    of a transaction, by the simple and the extended protocol; nothing is sent upstream."""
    from tests.support.pg import direct_dsn

    bad = "selec count(*) from customers"
    with (
        psycopg.connect(direct_dsn(pg), autocommit=True) as direct,
        pytest.raises(psycopg.errors.SyntaxError) as expected,
    ):
        direct.execute(bad)
    for prepare in (False, True):  # simple Query; Parse/Bind/Execute
        with p_connect(pproxy) as conn:
            with pytest.raises(psycopg.errors.SyntaxError) as got:
                conn.execute(bad, prepare=prepare)
            assert got.value.diag.message_primary == expected.value.diag.message_primary
            assert conn.execute("SELECT count(*) FROM public.customers").fetchone() == (3,)
            conn.execute("BEGIN")
            with pytest.raises(psycopg.errors.SyntaxError):
                conn.execute(bad, prepare=prepare)
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):  # as the server would
                conn.execute("SELECT 1")
            conn.execute("ROLLBACK")
            assert conn.execute("SELECT 1").fetchone() == (1,)
