"""Red-team round 21: session 18's changes to the boundary, attacked where they changed it.

The two attacks found (1: an existence oracle; 2: statements run unrecorded) were closed
the same session; every probe is a plain test now, a regression guard. (Fixed: a plain
EXPLAIN of CREATE ... AS needs the ddl scope on its target, as the statement would;
a streamed message while the recorder cannot record ends the session.) The server is the judge: what
the upstream login shows directly, rows that landed, tables that exist.

Families:

1. The two readings (aee8214, d7ac257). ``crosscheck._plans_only`` leaves the DDL target
   of a plain ``EXPLAIN CREATE TABLE AS`` / ``CREATE MATERIALIZED VIEW`` / ``SELECT INTO``
   out of PostgreSQL's reading, and sqlglot's never had it, so the target names nothing
   the policy decides on. PostgreSQL 15 does look it up (``ExplainOneUtility`` ->
   ``CreateTableAsRelExists``): "relation ... already exists" (42P07, or a NOTICE with
   IF NOT EXISTS) or "schema ... does not exist" (3F000) answers whether a relation or a
   schema the grant names nothing in exists: an existence oracle any read grant has (the
   statement was parse.disagree, refused, before d7ac257). Held: every ANALYZE spelling
   (``ANALYZE``, ``ANALYSE``, ``(analyse)``, ``'on'``, ``1``, ``true``, ``yes``, repeated
   options, ``ANALYZE VERBOSE``) is refused and creates nothing; quoted option names and
   unknown values are refused; WITH on a set operation's arm never hides a relation
   (a CTE named like a table of another arm, recursive, nested); user functions named like
   the built-ins added this session (``pow``, ``bit_and``, ``bit_or``, ``bit_xor``,
   ``like_escape``, ``similar_to_escape``) and like SQL/JSON syntax (``json_table``,
   ``json_objectagg``) still need an execute scope; ``LIKE pg_catalog.like_escape(...)``
   written by hand; COMMENT ON CONSTRAINT / TRIGGER / POLICY / RULE / DOMAIN on a secret
   table; SET CONSTRAINTS naming a secret schema; CREATE TABLE AS EXECUTE of a protocol
   statement; CREATE TABLE (LIKE secret INCLUDING ALL).
2. The relay while the recorder cannot record (a53f676). A Bind or a CopyData of 256 KiB
   and more is streamed: the frame reader hands the relay its first part, whose end is
   clipped to what has arrived (``common.wire.framing.FrameReader``). The relay's
   unhealthy branch replaces that part with its refusal (a CopyFail for CopyData, an
   injected Parse/Bind/Execute for a Bind) as if the frame were whole, and the rest of
   the frame, which then arrives as continuation bytes, is passed to the server as they
   are. The server reads them as messages of their own: a Query hidden in the tail of a
   CopyData or a Bind parameter runs unchecked and unrecorded (rows of secret.payroll to
   the client, a write that lands). Held: Bind/Execute of a statement or portal made
   before, a FunctionCall, a Sync-boundary split, a Query in the same packet, a Parse sent
   in COPY-IN mode (the server ends the connection).
3. Dry run vs enforcing (168df5d): an enforcing grant still cannot turn
   standard_conforming_strings off or switch to an encoding off the allowlist (SET,
   set_config, RESET, startup parameters, options), and a dry-run grant's upstream is
   never reused by an enforcing grant (the pool's key is the grant).
4. The lexer (6311d4a): statement boundaries with ';' inside odd quoting; the server splits
   where the proxy does, so the second statement is checked.
5. Login (bcb3c23): stalled SASL exchanges from one address do not keep another agent out
   for more than auth_client_timeout.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from devtools.testing import FlakyStore
from tests.support import outage, planted
from tests.support.outage import errors, until
from tests.support.planted import shows
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import (
    SYNC,
    RawClient,
    RawError,
    bind,
    describe,
    execute,
    parse,
    query,
)
from tests.support.recording import grants, issue_grant, one_live_session

pytestmark = pytest.mark.timeout(180)

I32 = struct.Struct("!i")
FLUSH = frame(b"H")

# --- 1. the two readings ----------------------------------------------------------------

AGENT = "r21-bot"
SCOPES = "read:public.r21_orders write:public.r21_orders"
SCOPES_TEMP = "read:public.r21_orders ddl:pg_temp.*"

R = {  # outside the grants: must never come back through the proxy
    "vault": "r21-vaultval-7a01",
    "hidden": "r21-hiddenval-7a02",
    "fn": "r21-fnval-7a03",
}
SECRETS = list(R.values())
_FN_BODY = f"$$SELECT val FROM secret.r21_vault WHERE val = '{R['fn']}'$$"
# name(argument types) -> the call that reaches it on PostgreSQL 15 (a better match than
# the built-in of that name: exact argument types, or text for an unknown literal)
SHADOWS = {
    "pow(a int, b int)": "SELECT pow(2, 3)",
    "bit_and(a text)": "SELECT bit_and('a')",
    "bit_or(a text)": "SELECT bit_or('a')",
    "bit_xor(a text)": "SELECT bit_xor('a')",
    "like_escape(a varchar, b varchar)": "SELECT like_escape('a'::varchar, 'b'::varchar)",
    "similar_to_escape(a varchar)": "SELECT similar_to_escape('a'::varchar)",
    "json_objectagg(a text, b text)": "SELECT json_objectagg('a', 'b')",
    "json_table(a text)": "SELECT * FROM json_table('a')",
}


def _drop(signature: str) -> str:
    name, args = signature.split("(", 1)
    types = ", ".join(a.split()[-1] for a in args.rstrip(")").split(",") if a.strip())
    return f'DROP FUNCTION IF EXISTS public."{name}"({types});'


def _create(signature: str) -> str:
    name, args = signature.split("(", 1)
    return f'CREATE FUNCTION public."{name}"({args} RETURNS text LANGUAGE sql AS {_FN_BODY};\n'


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE TABLE public.r21_orders (id int, note text);\n"
    "INSERT INTO public.r21_orders VALUES (1, 'r21-ok');\n"
    "CREATE TABLE public.r21_hidden (v text);\n"
    f"INSERT INTO public.r21_hidden VALUES ('{R['hidden']}');\n"
    "CREATE TABLE secret.r21_vault (id int CONSTRAINT r21_vault_ck CHECK (id > 0), val text);\n"
    f"INSERT INTO secret.r21_vault VALUES (1, '{R['vault']}'), (2, '{R['fn']}');\n"
    "CREATE SCHEMA r21_hidden_schema;\n"
    + "".join(_create(sig) for sig in SHADOWS)
    + "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP TABLE IF EXISTS public.r21_orders, public.r21_hidden, secret.r21_vault, "
    "public.r21_made, public.r21_mv_made, public.r21_into_made CASCADE;\n"
    "DROP MATERIALIZED VIEW IF EXISTS public.r21_mv_made;\n"
    "DROP SCHEMA IF EXISTS r21_hidden_schema;\n" + "".join(_drop(sig) for sig in SHADOWS)
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r21policy", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.oids = {}
        handle.temp_token = grant_issue(handle, agent=AGENT, task="R21TEMP", scopes=SCOPES_TEMP)[1]
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def _token(px, grant: str) -> str:
    return {"base": px.token, "temp": px.temp_token}[grant]


def P(sql: str, key: str, *before: str, grant: str = "base"):
    return pytest.param(sql, key, before, grant)


PROBES = [
    # user functions named like this session's new built-ins and SQL/JSON words
    *[P(call, "fn") for call in SHADOWS.values()],
    # the grammar's own qualified call, written by hand, with a secret argument
    P(
        "SELECT 'x' LIKE pg_catalog.like_escape((SELECT val FROM secret.r21_vault LIMIT 1), '!')"
        " OR true, (SELECT val FROM secret.r21_vault LIMIT 1)",
        "vault",
    ),  # fmt: skip
    P(
        "SELECT 'x' SIMILAR TO 'y' ESCAPE (SELECT left(val, 1) FROM secret.r21_vault LIMIT 1), "
        "(SELECT val FROM secret.r21_vault LIMIT 1)",
        "vault",
    ),  # fmt: skip
    # WITH on a set operation's arm: a CTE named like a relation another arm reads
    P(
        "SELECT v FROM r21_hidden UNION ALL (WITH r21_hidden AS (SELECT 'x' AS v) "
        "SELECT v FROM r21_hidden)",
        "hidden",
    ),  # fmt: skip
    P(
        "(WITH r21_hidden AS (SELECT 'x' AS v) SELECT v FROM r21_hidden) UNION ALL "
        "SELECT v FROM r21_hidden",
        "hidden",
    ),  # fmt: skip
    P(
        "SELECT note FROM r21_orders UNION ALL ((WITH r21_hidden AS (SELECT 'x' AS v) "
        "SELECT v FROM r21_hidden) UNION ALL SELECT v FROM r21_hidden)",
        "hidden",
    ),  # fmt: skip
    P(
        "WITH r21_orders AS (SELECT v AS note FROM r21_hidden) SELECT note FROM r21_orders "
        "UNION ALL (WITH r21_hidden AS (SELECT 'x' AS v) SELECT v FROM r21_hidden)",
        "hidden",
    ),  # fmt: skip
    P(
        "SELECT note FROM r21_orders UNION ALL (WITH RECURSIVE r21_hidden(v) AS (SELECT 'x' "
        "UNION ALL SELECT v FROM r21_hidden WHERE false) SELECT v FROM r21_hidden) "
        "UNION ALL SELECT v FROM r21_hidden",
        "hidden",
    ),  # fmt: skip
    P(
        "SELECT note FROM r21_orders INTERSECT ALL (WITH w AS (SELECT v FROM r21_hidden) "
        "SELECT v FROM w) UNION ALL SELECT v FROM r21_hidden",
        "hidden",
    ),  # fmt: skip
    # CREATE TABLE (LIKE ...) and CREATE TABLE AS EXECUTE with a ddl:pg_temp.* grant
    P(
        "SELECT * FROM pg_temp.r21_ctx",
        "vault",
        "PREPARE r21_px AS SELECT val FROM secret.r21_vault",
        "CREATE TEMP TABLE r21_ctx AS EXECUTE r21_px",
        grant="temp",
    ),  # fmt: skip
    # the lexer: the server splits where the proxy does, so the second statement is checked
    P("SELECT E'\\\\'; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT 'a'''; SELECT val FROM secret.r21_vault; --'", "vault"),
    P('SELECT "a"";" FROM (SELECT 1 AS "a"";") s; SELECT val FROM secret.r21_vault', "vault"),
    P("SELECT 'a\\'; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT 'a'\n'; SELECT 1'; SELECT val FROM secret.r21_vault", "vault"),
    P("SELECT E'a'\n'\\''; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT E'\\x27'; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT U&'\\0027;'; SELECT val FROM secret.r21_vault", "vault"),
    P("SELECT $a$;'$a$; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT /* /* ; */ ' */ 1; SELECT val FROM secret.r21_vault; --'", "vault"),
    P("SELECT B'0'\n'1'; SELECT val FROM secret.r21_vault", "vault"),
    P("SELECT X'0' ; SELECT val FROM secret.r21_vault", "vault"),
    P("SELECT e'\\\\\\''''; SELECT val FROM secret.r21_vault; --'", "vault"),
]


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, R.__getitem__)
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key", "before", "grant"), PROBES, ids=planted.ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key, before, grant):
    bad = planted.leaks(px, sql, leaked, before, token=_token(px, grant))
    assert not bad, ("LEAK", sorted(bad), sql, bad)


# --- 1b. plain EXPLAIN of CREATE TABLE AS: the target is looked up, not decided on ------

ORACLES = [
    pytest.param(
        "EXPLAIN CREATE TABLE secret.r21_vault AS SELECT 1",
        "EXPLAIN CREATE TABLE secret.r21_nothing AS SELECT 1",
        id="ctas-relation",
    ),
    pytest.param(
        "EXPLAIN CREATE TABLE IF NOT EXISTS secret.r21_vault AS SELECT 1",
        "EXPLAIN CREATE TABLE IF NOT EXISTS secret.r21_nothing AS SELECT 1",
        id="ctas-if-not-exists",
    ),
    pytest.param(
        "EXPLAIN CREATE MATERIALIZED VIEW secret.r21_vault AS SELECT 1",
        "EXPLAIN CREATE MATERIALIZED VIEW secret.r21_nothing AS SELECT 1",
        id="matview-relation",
    ),
    pytest.param(
        "EXPLAIN CREATE TABLE r21_hidden_schema.x AS SELECT 1",
        "EXPLAIN CREATE TABLE r21_no_such_schema.x AS SELECT 1",
        id="ctas-schema",
    ),
]


def _answer(px, mode: str, sql: str, token: str | None = None) -> str:
    with planted.session(px, token) as c:
        got = planted.text(planted.RAW_MODES[mode](c, sql))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), mode
    return got


def _shape(frames: list[bytes], *names: str) -> str:
    """The answer (message types, severities, SQLSTATEs, messages) with the probed names
    blanked out: what tells existence apart (a frame's length would tell the names')."""
    text = " | ".join(describe(frames))
    for name in names:
        text = text.replace(name, "<name>")
    return text


def _frames(px, mode: str, sql: str) -> list[bytes]:
    with planted.session(px) as c:
        got = planted.RAW_MODES[mode](c, sql)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), mode
    return got


@pytest.mark.parametrize(("exists", "absent"), ORACLES)
def test_plain_explain_create_table_as_is_no_existence_oracle(px, pg, exists, absent):
    """Directly, the two answers differ (the oracle is real); through the proxy they may
    not: both refused, or both planned alike."""
    with RawClient.direct(pg) as c:
        direct = (c.query(exists), c.query(absent))
    names = ("r21_vault", "r21_nothing", "r21_hidden_schema", "r21_no_such_schema")
    assert _shape(direct[0], *names) != _shape(direct[1], *names), direct
    for mode in planted.RAW_MODES:
        a, b = _shape(_frames(px, mode, exists), *names), _shape(_frames(px, mode, absent), *names)
        assert a == b, (mode, a, b)


ANALYZE_SPELLINGS = [
    "EXPLAIN ANALYZE CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN ANALYSE CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN ANALYZE VERBOSE CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (analyse) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE on) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE 'on') CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE 'ON') CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE 'True') CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE 1) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE true) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE TRUE, FORMAT JSON) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE off, ANALYZE on) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (ANALYZE false, ANALYZE) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN (FORMAT YAML, ANALYZE, COSTS off) CREATE TABLE public.r21_made AS SELECT 1",
    'EXPLAIN (ANALYZE "on") CREATE TABLE public.r21_made AS SELECT 1',
    'EXPLAIN ("analyze") CREATE TABLE public.r21_made AS SELECT 1',
    "EXPLAIN (ANALYZE yes) CREATE TABLE public.r21_made AS SELECT 1",
    "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW public.r21_mv_made AS SELECT 1",
    "EXPLAIN (ANALYZE 'true') CREATE MATERIALIZED VIEW public.r21_mv_made AS SELECT 1",
    "EXPLAIN ANALYZE SELECT 1 AS v INTO public.r21_into_made",
    "EXPLAIN (ANALYZE on) SELECT 1 AS v INTO public.r21_into_made",
]


def _made(pg) -> str:
    return pg.psql(
        "SELECT coalesce(string_agg(relname, ','), '-') FROM pg_class WHERE relname IN "
        "('r21_made', 'r21_mv_made', 'r21_into_made')",
        db="app",
    ).strip()


@pytest.mark.parametrize("sql", ANALYZE_SPELLINGS)
def test_explain_analyze_spellings_create_nothing(px, pg, sql):
    """Every spelling of a true ANALYZE is a DDL the grant lacks: refused, nothing made."""
    try:
        for mode in planted.RAW_MODES:
            got = _answer(px, mode, sql)
            assert "42501" in got and "pgwitness: task" in got, (mode, sql, got[-300:])
            assert _made(pg) == "-", (mode, sql)
    finally:
        pg.psql("DROP TABLE IF EXISTS public.r21_made, public.r21_into_made; "
                "DROP MATERIALIZED VIEW IF EXISTS public.r21_mv_made", db="app")  # fmt: skip


# --- 1c. COMMENT ON / SET CONSTRAINTS / CREATE TABLE (LIKE) outside the grant ------------

HELD_DDL = [
    ("COMMENT ON CONSTRAINT r21_vault_ck ON secret.r21_vault IS 'r21-written'", "temp"),
    ("COMMENT ON TRIGGER r21_no ON secret.r21_vault IS 'r21-written'", "temp"),
    ("COMMENT ON POLICY r21_no ON secret.r21_vault IS 'r21-written'", "temp"),
    ("COMMENT ON RULE r21_no ON secret.r21_vault IS 'r21-written'", "temp"),
    ("COMMENT ON INDEX secret.r21_no IS 'r21-written'", "temp"),
    ("COMMENT ON SCHEMA secret IS 'r21-written'", "temp"),
    ("COMMENT ON FUNCTION public.pow(int, int) IS 'r21-written'", "temp"),
    ("SET CONSTRAINTS secret.r21_vault_ck DEFERRED", "base"),
    ("CREATE TEMP TABLE r21_lk (LIKE secret.r21_vault INCLUDING ALL)", "temp"),
    ("CREATE TEMP TABLE r21_lk (LIKE public.r21_orders INCLUDING ALL)", "temp"),
    ("CREATE TEMP TABLE r21_lk (LIKE public.r21_hidden)", "temp"),
]


def _comments(pg) -> str:
    return pg.psql(
        "SELECT coalesce(string_agg(description, ','), '-') FROM pg_description "
        "WHERE description LIKE 'r21-written%'",
        db="app",
    ).strip()


@pytest.mark.parametrize(("sql", "grant"), HELD_DDL)
def test_ddl_outside_the_grant_is_refused(px, pg, sql, grant):
    for mode in planted.RAW_MODES:
        got = _answer(px, mode, sql, _token(px, grant))
        assert "42501" in got and "pgwitness: task" in got, (mode, sql, got[-300:])
    assert _comments(pg) == "-"


# --- 2. the relay while the recorder cannot record ---------------------------------------

WIRE_AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.r21_t"
WIRE_SCOPES = f"read:{TABLE},public.customers write:{TABLE}"
COUNT = "SELECT count(*) FROM public.customers"
PAYROLL = "SELECT 'r21-pay-' || sum(salary) FROM secret.payroll"
PAYROLL_MARK = b"r21-pay-310000"  # deploy/postgres/app.sql's three salaries
UNHEALTHY = outage.UNHEALTHY


WIRE = outage.ProbeTable(TABLE, WIRE_AGENT, WIRE_SCOPES)
rows_with, fresh, client = WIRE.rows_with, WIRE.fresh, WIRE.client
grant_proxy = WIRE.proxy


@pytest.fixture(scope="module")
def wire_table(pg):
    WIRE.create(pg)
    yield
    WIRE.drop(pg)


def _outage(h) -> FlakyStore:
    with client(h) as nudge:
        return outage.outage(h, nudge, COUNT)


def drain(c: RawClient, seconds: float = 3.0) -> list[bytes]:
    """Every frame until the connection ends or is quiet for ``seconds``."""
    got: list[bytes] = []
    c.sock.settimeout(seconds)
    try:
        while True:
            f = c.read_frame()
            if f is None:
                break
            got.append(f)
    except OSError:  # socket.timeout included
        pass
    return got


def _smuggled(v: int) -> bytes:
    """Messages PostgreSQL reads once it sees them outside the frame they were sent in: a
    read of secret.payroll, a write, and a Query long enough (300 KiB of comment) that the
    frame carrying them is streamed (framing.STREAM_MIN_BYTES)."""
    return (
        query(PAYROLL)
        + query(f"INSERT INTO {TABLE} VALUES ({v})")
        + query("SELECT 1 /*" + "x" * (300 * 1024) + "*/")
    )


def _send_streamed(c: RawClient, kind: bytes, head: bytes, tail: bytes) -> None:
    """One frame of type ``kind`` whose body is ``head`` + ``tail``, sent as two writes: the
    proxy reads the first part alone and streams the frame."""
    c.send(kind + I32.pack(4 + len(head) + len(tail)) + head)
    time.sleep(0.5)
    c.send(tail)


# Round 21: while the recorder could not record, a Bind or CopyData of 256 KiB and more,
# streamed in parts, had its first part replaced by the refusal and the rest passed on as
# it came, so the server read the frame's tail as messages of their own (a Query hidden
# there ran unchecked and unrecorded: the secret total reached the client, an INSERT
# landed). Such a message now ends the session.


def test_while_unrecorded_a_streamed_copydata_tail_runs_nothing(
    make_proxy, tmp_path, pg, wire_table
):
    """The streamed CopyData ends the session: its tail never reaches the server."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2101)
    with client(h) as c:
        one_live_session(h)
        c.send(query(f"COPY {TABLE} (v) FROM STDIN"))
        assert until(c, b"G")[-1][:1] == b"G"
        flaky = _outage(h)
        try:
            _send_streamed(c, b"d", b"2100\n" * 10, _smuggled(2101))
            got = drain(c)
        finally:
            flaky.down = False
    landed = rows_with(pg, 2101)
    assert PAYROLL_MARK not in b"".join(got) and landed == 0, (landed, describe(got)[:8])


def test_while_unrecorded_a_streamed_bind_tail_runs_nothing(make_proxy, tmp_path, pg, wire_table):
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2102)
    with client(h) as c:
        one_live_session(h)
        c.send(parse("r21_ins", f"INSERT INTO {TABLE} VALUES ($1)"), SYNC)
        assert not errors(c.frames_until_ready())
        flaky = _outage(h)
        try:
            tail = SYNC + _smuggled(2102)
            # portal "", statement r21_ins, no formats, one parameter: the tail is its value
            head = b"\x00r21_ins\x00" + b"\x00\x00" + b"\x00\x01" + I32.pack(len(tail))
            _send_streamed(c, b"B", head, tail)
            got = drain(c)
        finally:
            flaky.down = False
    landed = rows_with(pg, 2102)
    assert PAYROLL_MARK not in b"".join(got) and landed == 0, (landed, describe(got)[:8])


def test_streamed_copydata_while_healthy_is_data(make_proxy, tmp_path, pg, wire_table):
    """The same frame while the recorder records: the tail is COPY data (a bad row), never
    messages; nothing of the payroll comes back."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2103)
    with client(h) as c:
        c.send(query(f"COPY {TABLE} (v) FROM STDIN"))
        assert until(c, b"G")[-1][:1] == b"G"
        _send_streamed(c, b"d", b"2104\n", _smuggled(2103))
        c.send(frame(b"c"))
        got = c.frames_until_ready()
    assert PAYROLL_MARK not in b"".join(got), describe(got)
    assert rows_with(pg, 2103) == 0


def _prepared(c: RawClient) -> None:
    c.send(parse("r21_ins", f"INSERT INTO {TABLE} VALUES ($1)"), SYNC)
    assert not errors(c.frames_until_ready())


WHOLE_FRAME_TRICKS = {
    # a refused Parse, then in the next Sync group a Bind/Execute of the old statement
    "sync-boundary": lambda v: (
        parse("", "SELECT 1"),
        SYNC,
        bind("", "r21_ins", [str(v).encode()]),
        execute(),
        SYNC,
    ),  # fmt: skip
    # the old statement's Bind/Execute first, a refused Parse after it
    "bind-then-parse": lambda v: (
        bind("", "r21_ins", [str(v).encode()]),
        execute(),
        parse("", "SELECT 1"),
        SYNC,
    ),  # fmt: skip
    # Describe, Flush, then Execute, no Sync in between
    "describe-flush": lambda v: (
        bind("r21_p", "r21_ins", [str(v).encode()]),
        frame(b"D", b"Pr21_p\x00"),
        FLUSH,
        execute("r21_p"),
        SYNC,
    ),  # fmt: skip
    # a Query in the same packet as a Bind/Execute
    "query-then-bind": lambda v: (
        query("SELECT 1"),
        bind("", "r21_ins", [str(v).encode()]),
        execute(),
        SYNC,
    ),  # fmt: skip
}


@pytest.mark.parametrize("trick", list(WHOLE_FRAME_TRICKS))
def test_while_unrecorded_whole_frame_tricks_run_nothing(
    make_proxy, tmp_path, pg, wire_table, trick
):
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    v = 2110 + list(WHOLE_FRAME_TRICKS).index(trick)
    fresh(pg, v)
    with client(h) as c:
        one_live_session(h)
        _prepared(c)
        flaky = _outage(h)
        try:
            c.send(*WHOLE_FRAME_TRICKS[trick](v))
            got = drain(c, 2.0)
        finally:
            flaky.down = False
    landed = rows_with(pg, v)
    assert landed == 0, (trick, describe(got))
    assert any(e.get("C") == "57P03" for e in errors(got)), (trick, describe(got))


def test_while_unrecorded_a_portal_suspended_before_gives_no_more_rows(
    make_proxy, tmp_path, pg, wire_table
):
    """A portal opened and partly fetched before the outage (Execute with a row limit, no
    Sync: the implicit transaction stays open) gives no row during it."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    with client(h) as c:
        one_live_session(h)
        c.send(
            parse("r21_big", "SELECT 'r21-row-' || g FROM generate_series(1, 5) g"),
            bind("r21_por", "r21_big"),
            execute("r21_por", 1),
            FLUSH,
        )
        first = until(c, b"s")
        assert b"r21-row-1" in b"".join(first), describe(first)
        flaky = _outage(h)
        try:
            c.send(execute("r21_por", 0), SYNC)
            got = drain(c, 2.0)
        finally:
            flaky.down = False
    assert b"r21-row-2" not in b"".join(got), describe(got)


def test_while_unrecorded_a_function_call_is_refused(make_proxy, tmp_path, pg, wire_table):
    """FunctionCall (protocol 'F') of pg_catalog.int4pl during the outage: refused."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    with client(h) as c:
        one_live_session(h)
        flaky = _outage(h)
        try:
            arg = I32.pack(4) + I32.pack(20)
            body = I32.pack(177) + b"\x00\x00" + b"\x00\x02" + arg + arg + b"\x00\x00"
            c.send(b"F" + I32.pack(4 + len(body)) + body)
            got = drain(c, 2.0)
        finally:
            flaky.down = False
    assert not any(f[:1] == b"V" for f in got), describe(got)
    assert any(e.get("C") == "57P03" for e in errors(got)), describe(got)


def test_while_unrecorded_a_parse_in_copy_in_mode_runs_nothing(
    make_proxy, tmp_path, pg, wire_table
):
    """In COPY-IN mode the proxy counts no Sync (the server ignores them): a refused Parse
    sent then, a Sync, and a Bind/Execute of an old statement. The server ends the session
    at the Parse ("protocol synchronization was lost"): the Bind never runs."""
    h = grant_proxy(make_proxy, tmp_path, **UNHEALTHY)
    fresh(pg, 2120)
    with client(h) as c:
        one_live_session(h)
        _prepared(c)
        c.send(query(f"COPY {TABLE} (v) FROM STDIN"))
        assert until(c, b"G")[-1][:1] == b"G"
        flaky = _outage(h)
        try:
            c.send(parse("", "SELECT 1"), SYNC, bind("", "r21_ins", [b"2120"]), execute(), SYNC)
            got = drain(c, 2.0)
        finally:
            flaky.down = False
    assert rows_with(pg, 2120) == 0, describe(got)


# --- 3. an enforcing grant and the settings a dry run may now change ----------------------

SETTING_SQL = [
    "SET standard_conforming_strings = off",
    "SET SESSION standard_conforming_strings TO 0",
    "SET LOCAL standard_conforming_strings = 'off'",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', true)",
    "SET client_encoding = 'SJIS'",
    "SET NAMES 'BIG5'",
    "SELECT set_config('client_encoding', 'GBK', false)",
    "ALTER ROLE CURRENT_USER SET standard_conforming_strings = off",
]


@pytest.mark.parametrize("sql", SETTING_SQL)
def test_an_enforcing_session_keeps_conforming_strings_and_its_encoding(px, sql):
    for mode in planted.RAW_MODES:
        with planted.session(px) as c:
            frames = (
                planted.RAW_MODES[mode](c, sql)
                if mode != "simple"
                else c.query(f"BEGIN; {sql}" if "LOCAL" in sql else sql)
            )
            after = c.query("SHOW standard_conforming_strings") + c.query("SHOW client_encoding")
            c.query("ROLLBACK")
        got = planted.text(after)
        assert "42501" in planted.text(frames), (mode, sql, planted.text(frames)[-300:])
        assert "\x00\x00\x00\x02on" in got and "UTF8" in got, (mode, sql, got[-300:])


STARTUP = [
    {"standard_conforming_strings": "off"},
    {"options": "-c standard_conforming_strings=off"},
    {"options": "-c\\ standard_conforming_strings=off"},
    {"options": "--standard_conforming_strings=off"},
    {"options": "-cstandard_conforming_strings=off"},
    {"client_encoding": "SJIS"},
    {"options": "-c client_encoding=BIG5"},
]


@pytest.mark.parametrize("params", STARTUP, ids=lambda p: repr(p)[:40])
def test_an_enforcing_login_cannot_ask_for_either(px, params):
    try:
        c = RawClient.session(px.host, px.port, px.agent, px.token, params=params)
    except (RawError, OSError, AssertionError):
        return  # refused at login
    with c:
        got = planted.text(c.query("SHOW standard_conforming_strings")
                           + c.query("SHOW client_encoding"))  # fmt: skip
    assert "\x00\x00\x00\x02on" in got and "UTF8" in got, (params, got[-300:])


def test_a_dry_run_upstream_is_never_an_enforcing_grants(make_proxy, tmp_path, pg):
    """A dry-run grant's session turns standard_conforming_strings off and switches its
    encoding, then ends cleanly; the enforcing grant of the same agent logs in next and
    finds the server's defaults (the pool's key is the grant; DISCARD ALL resets)."""
    h = make_proxy(**grants(tmp_path), **{"upstream.reuse_idle_seconds": 30.0})
    _, enforcing = issue_grant(h, scopes=WIRE_SCOPES)
    _, dry = issue_grant(h, scopes=WIRE_SCOPES, enforce=False)
    for _ in range(2):
        with RawClient.session(h.host, h.port, WIRE_AGENT, dry) as c:
            c.query("SET standard_conforming_strings = off")
            c.query("SET client_encoding = 'SJIS'")
            c.query("SET client_encoding = 'UTF8'")
        with RawClient.session(h.host, h.port, WIRE_AGENT, enforcing) as c:
            got = planted.text(c.query("SHOW standard_conforming_strings"))
            assert "\x00\x00\x00\x02on" in got, got[-200:]
            q = c.query("SELECT 'a\\'; SELECT salary FROM secret.payroll; --'")
            assert b"100000" not in b"".join(q), describe(q)


# --- 5. login: auth_client_timeout ------------------------------------------------------


def test_stalled_sasl_after_the_first_message_frees_the_place(make_proxy, tmp_path):
    """Stalled exchanges that sent SASLInitialResponse (the proxy waits for the final
    message) hold a place no longer than auth_client_timeout either."""
    from common.wire.framing import startup_packet
    from common.wire.scram import MECHANISM

    h = grant_proxy(make_proxy, tmp_path, **{"proxy.startup_timeout": 10.0})
    per_address = h.cfg.proxy.auth_concurrency_per_address
    socks = []
    try:
        for _ in range(per_address):
            s = socket.create_connection((h.host, h.port), timeout=10)
            s.sendall(startup_packet({"user": "r21-nobody", "database": "app"}))
            assert s.recv(1) == b"R"
            s.sendall(m.sasl_initial_response(MECHANISM, b"n,,n=,r=r21nonce000000000000"))
            socks.append(s)
        started = time.monotonic()
        with client(h, timeout=6.0) as c:
            assert c.query(COUNT)[-1][:1] == b"Z"
        assert time.monotonic() - started < 4.0
    finally:
        for s in socks:
            s.close()
