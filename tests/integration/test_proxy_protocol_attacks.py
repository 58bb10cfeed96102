"""Protocol and session-state attacks (red-team round 9), the server as judge: statements
and portals replaced or reused across Sync groups, FunctionCall, SQL PREPARE/EXECUTE,
cursors, COPY both ways, search_path and other session state, multi-statement splitting
tricks, long and re-encoded messages. No probe got through when the round ran; each stays
as a regression test.

Grant: read:public.r9_orders,public.r9_customers write:public.r9_orders.
Secret: public.r9_secret(k) and r9sec.r9_orders hold a marker; public.r9_other and
public.r9_customers must never change. A failing probe is a confirmed bypass.
"""

from __future__ import annotations

import struct

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "e2e-r9"
SCOPES = "read:public.r9_orders,public.r9_customers write:public.r9_orders"
MARK = b"R9" + b"SEKRIT" + b"MARK"  # never sent through the proxy
SETUP = """
SET ROLE pgwitness;
CREATE TABLE public.r9_orders (id int, note text);
INSERT INTO public.r9_orders VALUES (1, 'o1'), (2, 'o2'), (3, 'o3');
CREATE TABLE public.r9_customers (id int, name text);
INSERT INTO public.r9_customers VALUES (1, 'c1');
CREATE TABLE public.r9_secret (k text);
INSERT INTO public.r9_secret VALUES ('R9' || 'SEKRIT' || 'MARK');
CREATE TABLE public.r9_other (id int, note text);
CREATE SCHEMA r9sec;
CREATE TABLE r9sec.r9_orders (id int, note text);
INSERT INTO r9sec.r9_orders VALUES (9, 'R9' || 'SEKRIT' || 'MARK');
CREATE SEQUENCE public.r9_seq;
"""
TEARDOWN = """
DROP TABLE IF EXISTS public.r9_orders, public.r9_customers, public.r9_secret, public.r9_other CASCADE;
DROP SCHEMA IF EXISTS r9sec CASCADE;
DROP SEQUENCE IF EXISTS public.r9_seq;
"""

I16 = struct.Struct("!h")
I32 = struct.Struct("!i")


Q, E = query, execute


def D(kind: str, name: str = "") -> bytes:
    return frame(b"D", kind.encode() + name.encode() + b"\x00")


def C(kind: str, name: str = "") -> bytes:
    return frame(b"C", kind.encode() + name.encode() + b"\x00")


def copy_data(b: bytes) -> bytes:
    return frame(b"d", b)


COPY_DONE = frame(b"c")


def copy_fail(msg: str) -> bytes:
    return frame(b"f", msg.encode() + b"\x00")


def fcall(oid: int, args: list[bytes]) -> bytes:
    body = I32.pack(oid) + I16.pack(0) + I16.pack(len(args))
    for a in args:
        body += I32.pack(len(a)) + a
    body += I16.pack(0)
    return frame(b"F", body)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r9", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        yield h


def session(h, **kw):
    return RawClient.session(h.host, h.port, h.agent, h.token, **kw)


def drain(c: RawClient, zs: int, timeout: float = 4.0) -> bytes:
    """Everything the server sends until ``zs`` ReadyForQuery, or until quiet."""
    c.sock.settimeout(timeout)
    got = []
    try:
        while zs > 0:
            f = c.read_frame()
            if f is None:
                break
            got.append(f)
            if f[:1] == b"Z":
                zs -= 1
            if f[:1] == b"G":  # CopyIn we did not plan for: fail it
                c.send(copy_fail("nope"))
    except TimeoutError:
        pass
    return b"".join(got)


def exchange(c: RawClient, *frames: bytes, zs: int | None = None) -> bytes:
    c.send(*frames)
    if zs is None:
        zs = sum(1 for f in frames if f[:1] in (b"Q", b"S", b"F"))
    return drain(c, zs)


def state(pg) -> str:
    return pg.psql(
        "SELECT (SELECT count(*) FROM public.r9_other) || '/' || "
        "(SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM public.r9_customers) || '/' || "
        "(SELECT count(*) FROM public.r9_secret) || '/' || "
        "(SELECT last_value FROM public.r9_seq)",
        db="app",
    ).strip()


CLEAN = "0/1:c1/1/1"


def judge(pg, got: bytes):
    s = state(pg)
    print("STATE", s)
    print("GOT", got[:3000])
    assert MARK not in got, ("BYPASS: marker reached the client", got)
    assert s == CLEAN, ("BYPASS: write landed", s, got)


def run_simple(h, pg, sqls):
    with session(h) as c:
        out = b"".join(exchange(c, Q(s)) for s in sqls)
    judge(pg, out)
    return out


SECRET = "SELECT k FROM public.r9_secret"


# --- A. extended protocol: statements and portals replaced, reused, pipelined ---------


def test_a1_named_statement_replaced_by_denied_parse(px, pg):
    with session(px) as c:
        got = exchange(c, parse("s", "SELECT note FROM public.r9_orders"), SYNC)
        got += exchange(c, parse("s", SECRET), bind("", "s"), E(), SYNC)
        got += exchange(c, bind("", "s"), E(), SYNC)
        got += exchange(c, C("S", "s"), SYNC)
        got += exchange(c, parse("s", SECRET), SYNC, bind("", "s"), E(), SYNC)
    judge(pg, got)


def test_a2_unnamed_statement_replaced_in_one_group(px, pg):
    with session(px) as c:
        got = exchange(c, parse("", "SELECT note FROM public.r9_orders"), parse("", SECRET),
                       bind("", ""), E(), SYNC, bind("", ""), E(), SYNC)
        got += exchange(c, parse("", SECRET), FLUSH, bind("", ""), E(), FLUSH, SYNC)
    judge(pg, got)


def test_a3_denied_parse_then_query_in_same_group(px, pg):
    # After an error in an extended-protocol group the server skips every message up to
    # Sync, a Query included (postgres.c: ignore_till_sync): one ReadyForQuery for the
    # first group, three for the last (the skipped COMMIT gives none), as PostgreSQL sends
    # them (waiting for more cost two 4 s timeouts)
    with session(px) as c:
        got = exchange(c, parse("", SECRET), Q("SELECT 1"), bind("", ""), E(), SYNC, zs=1)
        got += exchange(c, parse("x", "SELECT 1"), bind("p", "x"), Q(SECRET), E("p"), SYNC, zs=2)
        got += exchange(c, Q("BEGIN"), parse("y", SECRET), Q("COMMIT"), SYNC, bind("", "y"), E(), SYNC, zs=3)
    judge(pg, got)


def test_a4_denied_parse_without_sync_then_flush_and_query(px, pg):
    with session(px) as c:
        c.send(parse("z", SECRET), FLUSH)
        got = drain(c, 0, 1.0)
        c.sock.settimeout(2)
        got += exchange(c, bind("", "z"), E(), SYNC)
        got += exchange(c, Q("EXECUTE z"), Q("SELECT * FROM pg_prepared_statements"))
    judge(pg, got)


def test_a5_bind_with_other_parameter_counts(px, pg):
    with session(px) as c:
        got = exchange(c, parse("p1", "SELECT note FROM public.r9_orders WHERE id = $1", ), SYNC)
        got += exchange(c, bind("", "p1", [b"1", b"2"]), E(), SYNC)
        got += exchange(c, bind("", "p1", []), E(), SYNC)
        got += exchange(c, parse("p2", "SELECT $1::text", [25, 25, 2205]), SYNC)
        got += exchange(c, bind("", "p2", [b"x", b"public.r9_secret", b"public.r9_secret"]), E(), SYNC)
        got += exchange(c, parse("p3", "SELECT $1", [2205]), bind("", "p3", [b"public.r9_secret"]), E(), SYNC)
    judge(pg, got)


def test_a6_portal_suspension_across_commit(px, pg):
    with session(px) as c:
        got = exchange(c, Q("BEGIN"))
        got += exchange(c, parse("cs", "SELECT note FROM public.r9_orders"), bind("pp", "cs"), E("pp", 1), SYNC)
        got += exchange(c, parse("", SECRET), bind("pp", ""), E("pp", 1), SYNC)
        got += exchange(c, Q("ROLLBACK"))
        got += exchange(c, E("pp", 1), SYNC)
        got += exchange(c, Q("FETCH ALL FROM pp"))
    judge(pg, got)


def test_a7_injected_statement_names_visible_and_reused(px, pg):
    with session(px) as c:
        got = exchange(c, parse("", SECRET), bind("", ""), E(), SYNC)
        got += exchange(c, Q("SELECT name, statement FROM pg_prepared_statements"))
        got += exchange(c, Q("SELECT name, statement FROM pg_catalog.pg_cursors"))
        # whatever names came back, try to bind them
        import re

        names = set(re.findall(rb"pgw_[0-9a-f]{16}_\d+", got))
        for n in names:
            got += exchange(c, bind("q", n.decode()), E("q"), SYNC)
            got += exchange(c, Q("EXECUTE " + n.decode()))
    judge(pg, got)


def test_a8_describe_close_of_denied(px, pg):
    with session(px) as c:
        got = exchange(c, parse("d1", SECRET), D("S", "d1"), bind("d1p", "d1"), D("P", "d1p"), E("d1p"), SYNC)
        got += exchange(c, D("S", "d1"), SYNC)
        got += exchange(c, C("S", "d1"), C("P", "d1p"), SYNC)
    judge(pg, got)


def test_a9_function_call_message(px, pg):
    # query_to_xml(text, bool, bool, text)
    oid = int(pg.psql("SELECT 'query_to_xml(text,bool,bool,text)'::regprocedure::oid", db="app").strip())
    args = [SECRET.encode(), b"\x01", b"\x01", b""]
    with session(px) as c:
        body = I32.pack(oid) + I16.pack(1) + I16.pack(0) + I16.pack(4)
        body += I32.pack(len(args[0])) + args[0] + I32.pack(1) + b"t" + I32.pack(1) + b"t" + I32.pack(0)
        body += I16.pack(0)
        f = frame(b"F", body)
        got = exchange(c, f)
        got += exchange(c, parse("", "SELECT 1"), bind("", ""), f, E(), SYNC, zs=1)
        got += exchange(c, Q("BEGIN"), f, Q("COMMIT"))
    judge(pg, got)


# --- B. SQL-level PREPARE / EXECUTE ---------------------------------------------------


@pytest.mark.parametrize("seq", [
    ["PREPARE s AS SELECT note FROM public.r9_orders", "DEALLOCATE s",
     f"PREPARE s AS {SECRET}", "EXECUTE s"],
    ["PREPARE \"S\" AS SELECT note FROM public.r9_orders", f"PREPARE s AS {SECRET}", "EXECUTE s",
     "EXECUTE \"S\""],
    ["PREPARE s(text) AS SELECT note FROM public.r9_orders WHERE note <> $1",
     "EXECUTE s((SELECT k FROM public.r9_secret))", "EXECUTE s((TABLE public.r9_secret))",
     "EXECUTE s(ARRAY(SELECT k FROM public.r9_secret)::text)"],
    ["PREPARE s(text) AS SELECT $1", "EXECUTE s((SELECT k FROM public.r9_secret))",
     "EXECUTE s((SELECT k FROM r9_secret))", "EXECUTE s(current_setting('search_path'))"],
    ["PREPARE s AS SELECT note FROM public.r9_orders",
     "CREATE TEMP TABLE t1 AS EXECUTE s", "EXPLAIN ANALYZE EXECUTE s",
     "CREATE TABLE pg_temp.t2 AS EXECUTE s", "SELECT * FROM pg_temp.t2"],
    ["PREPARE s AS SELECT note FROM public.r9_orders; PREPARE s2 AS " + SECRET, "EXECUTE s2"],
    ["BEGIN; PREPARE s3 AS SELECT 1; ROLLBACK", f"PREPARE s3 AS {SECRET}", "EXECUTE s3"],
    ["PREPARE " + "a" * 63 + "x AS SELECT 1", "PREPARE " + "a" * 63 + "y AS " + SECRET,
     "EXECUTE " + "a" * 63 + "y", "EXECUTE " + "a" * 63],
    ["PREPARE s4 AS SELECT 1", "DEALLOCATE PREPARE s4", f"PREPARE s4 AS {SECRET}", "EXECUTE s4"],
    ["PREPARE s5 AS INSERT INTO public.r9_orders VALUES (5, 'x')", "EXECUTE s5",
     "PREPARE s6 AS INSERT INTO public.r9_other VALUES (5, 'x')", "EXECUTE s6"],
])
def test_b_prepare_execute(px, pg, seq):
    run_simple(px, pg, seq)


def test_b_protocol_parse_then_sql_execute(px, pg):
    with session(px) as c:
        got = exchange(c, parse("ps1", "SELECT note FROM public.r9_orders"), SYNC)
        got += exchange(c, Q("PREPARE ps1 AS SELECT 1"))
        got += exchange(c, Q("EXECUTE ps1"))
        got += exchange(c, Q("PREPARE ps2 AS SELECT 1"))
        got += exchange(c, parse("ps2", SECRET), SYNC)
        got += exchange(c, Q("EXECUTE ps2"))
        got += exchange(c, Q("DEALLOCATE ps2"), parse("ps2", SECRET), SYNC, Q("EXECUTE ps2"))
    judge(pg, got)


def test_b_prepare_via_parse_message(px, pg):
    with session(px) as c:
        got = exchange(c, parse("", "PREPARE pp1 AS SELECT note FROM public.r9_orders"), bind("", ""), E(), SYNC)
        got += exchange(c, parse("", f"PREPARE pp2 AS {SECRET}"), bind("", ""), E(), SYNC)
        got += exchange(c, parse("", "EXECUTE pp2"), bind("", ""), E(), SYNC)
        got += exchange(c, Q("EXECUTE pp2"))
    judge(pg, got)


# --- C. cursors -----------------------------------------------------------------------


@pytest.mark.parametrize("seq", [
    ["BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT note FROM public.r9_orders", "COMMIT",
     "FETCH ALL FROM c", "MOVE ABSOLUTE 0 IN c", "FETCH ALL IN c"],
    ["BEGIN", f"DECLARE c SCROLL CURSOR FOR {SECRET}", "FETCH ALL FROM c", "ROLLBACK"],
    ["BEGIN", "DECLARE c CURSOR FOR TABLE public.r9_secret", "FETCH ALL FROM c", "ROLLBACK"],
    ["BEGIN", "DECLARE c CURSOR FOR VALUES ((SELECT k FROM public.r9_secret))", "FETCH c", "ROLLBACK"],
    ["BEGIN", "DECLARE \"for\" CURSOR FOR SELECT 1; DECLARE c CURSOR FOR " + SECRET, "FETCH ALL c"],
    ["BEGIN", "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITHOUT HOLD FOR WITH x AS (SELECT k FROM public.r9_secret) SELECT * FROM x",
     "FETCH ALL c"],
    ["BEGIN", "DECLARE c CURSOR FOR SELECT note FROM public.r9_orders FOR UPDATE", "FETCH c",
     "UPDATE public.r9_customers SET name = 'x' WHERE CURRENT OF c", "COMMIT"],
    ["BEGIN", "DECLARE c CURSOR FOR SELECT id, name FROM public.r9_customers",
     "FETCH c", "UPDATE public.r9_customers SET name = 'x' WHERE CURRENT OF c",
     "DELETE FROM public.r9_customers WHERE CURRENT OF c", "COMMIT"],
    ["BEGIN", "DECLARE c CURSOR FOR SELECT id, name FROM public.r9_customers",
     "FETCH c", "UPDATE public.r9_orders SET note = 'x' WHERE CURRENT OF c", "COMMIT"],
    ["BEGIN", "DECLARE c CURSOR FOR SELECT note FROM r9_orders", "FETCH ALL c", "COMMIT"],
])
def test_c_cursors(px, pg, seq):
    run_simple(px, pg, seq)


def test_c_cursor_from_protocol_portal_then_sql_fetch(px, pg):
    with session(px) as c:
        got = exchange(c, Q("BEGIN"))
        got += exchange(c, parse("", "SELECT note FROM public.r9_orders"), bind("cur1", ""), E("cur1", 1), SYNC)
        got += exchange(c, parse("", SECRET), bind("cur1", ""), SYNC)
        got += exchange(c, Q("FETCH ALL FROM cur1"))
        got += exchange(c, Q("COMMIT"))
    judge(pg, got)


def test_c_where_current_of_via_extended(px, pg):
    with session(px) as c:
        got = exchange(c, Q("BEGIN"))
        got += exchange(c, parse("", "SELECT id FROM public.r9_customers"), bind("cc", ""), E("cc", 1), SYNC)
        got += exchange(c, parse("", "UPDATE public.r9_orders SET note = 'y' WHERE CURRENT OF cc"), bind("", ""), E(), SYNC)
        got += exchange(c, Q("DELETE FROM public.r9_orders WHERE CURRENT OF cc"))
        got += exchange(c, Q("COMMIT"))
    judge(pg, got)


# --- D. COPY --------------------------------------------------------------------------


def test_d1_copy_out_denied(px, pg):
    run_simple(px, pg, ["COPY public.r9_secret TO STDOUT", f"COPY ({SECRET}) TO STDOUT",
                        "COPY r9_secret TO STDOUT", "COPY public.r9_orders TO STDOUT; COPY public.r9_secret TO STDOUT",
                        "COPY (SELECT note FROM public.r9_orders UNION SELECT k FROM public.r9_secret) TO STDOUT WITH (FORMAT csv)",
                        "COPY public.r9_secret (k) TO STDOUT", "COPY BINARY public.r9_secret TO STDOUT",
                        "COPY public.r9_secret TO STDOUT WITH CSV HEADER"])


def test_d2_copy_in_ungranted_with_data_pushed_anyway(px, pg):
    with session(px) as c:
        got = exchange(c, Q("COPY public.r9_other FROM STDIN"), copy_data(b"7\tx\n"), COPY_DONE,
                       Q("SELECT 1"), zs=2)
        got += exchange(c, Q("COPY public.r9_orders FROM STDIN"), zs=0)
        c.sock.settimeout(2)
        got += drain(c, 0, 1.0)
        got += exchange(c, Q("COPY public.r9_other FROM STDIN"), copy_data(b"8\ty\n"), COPY_DONE, zs=1)
    judge(pg, got)


def test_d3_copy_in_extended_and_queries_inside_copy(px, pg):
    with session(px) as c:
        got = exchange(c, parse("", "COPY public.r9_other FROM STDIN"), bind("", ""), E(),
                       copy_data(b"9\tz\n"), COPY_DONE, SYNC)
        # an allowed COPY, and a statement sent in the middle of its data
        c.send(Q("COPY public.r9_orders FROM STDIN"))
        got += drain(c, 0, 1.0)
        c.send(copy_data(b"10\ta\n"), Q("INSERT INTO public.r9_other VALUES (1, 'q')"),
               copy_data(b"11\tb\n"), COPY_DONE)
        got += drain(c, 2, 3.0)
        try:  # the server ends the session (protocol synchronization lost): a send may fail
            got += exchange(c, Q("SELECT 1"))
        except OSError as exc:
            got += repr(exc).encode()
    judge(pg, got)


def test_d4_copy_in_pipelined_group(px, pg):
    with session(px) as c:
        got = exchange(
            c,
            parse("", "COPY public.r9_orders FROM STDIN"), bind("", ""), E(),
            copy_data(b"12\tc\n"), COPY_DONE,
            parse("", "INSERT INTO public.r9_other VALUES (2, 'w')"), bind("", ""), E(),
            SYNC,
        )
        got += exchange(c, parse("", "COPY public.r9_orders FROM STDIN"), bind("", ""), E(),
                        copy_fail("bye"), parse("", "INSERT INTO public.r9_other VALUES (3,'w')"),
                        bind("", ""), E(), SYNC)
    judge(pg, got)


def test_d5_copy_options_and_where(px, pg):
    run_simple(px, pg, [
        "COPY public.r9_orders TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)",
        "COPY public.r9_orders FROM STDIN WHERE note = (SELECT k FROM public.r9_secret)",
        "COPY public.r9_orders FROM STDIN WHERE id IN (SELECT 1)",
    ])


# --- E. session state -----------------------------------------------------------------

SP = "r9sec"


@pytest.mark.parametrize("sql", [
    f"SET search_path = {SP}", f"SET SESSION search_path = {SP}", f"SET \"search_path\" = {SP}",
    f"SET \"SEARCH_PATH\" = {SP}", f"SET search_path TO DEFAULT; SET search_path = {SP}",
    f"SET SCHEMA '{SP}'", f"SELECT set_config('search_path', '{SP}', false)",
    f"SELECT pg_catalog.set_config('search_path', '{SP}', false)",
    f"SELECT set_config('SEARCH_PATH', '{SP}', false)",
    f"SELECT set_config(E'search\\x5fpath', '{SP}', false)",
    f"SELECT set_config('search_path'::text, '{SP}', false)",
    f"SELECT set_config(('search_path'), '{SP}', false)",
    f"SELECT set_config(' search_path', '{SP}', false)",
    f"SELECT set_config(name, '{SP}', false) FROM pg_settings WHERE name = 'search_path'",
    f"SELECT set_config(U&'search\\005fpath', '{SP}', false)",
    f"SELECT set_config($$search_path$$, '{SP}', false)",
    f"SELECT set_config('search_path', '{SP}', false) FROM public.r9_orders",
    f"SELECT * FROM public.r9_orders, set_config('search_path', '{SP}', false)",
    f"ALTER ROLE CURRENT_USER SET search_path = {SP}",
    f"ALTER DATABASE app SET search_path = {SP}",
    f"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; SET search_path = {SP}",
    "SET transaction.x = 1",
    f"SET LOCAL search_path = {SP}",
    "SET search_path FROM CURRENT",
])
def test_e1_search_path_changes(px, pg, sql):
    run_simple(px, pg, ["BEGIN", sql, "SELECT note FROM r9_orders", "COMMIT", sql,
                        "SELECT note FROM r9_orders", "TABLE r9_orders"])


@pytest.mark.parametrize("params", [
    {"search_path": SP}, {"options": f"-c search_path={SP}"}, {"options": f"--search-path={SP}"},
    {"options": f"-csearch_path={SP}"}, {"SEARCH_PATH": SP}, {"options": f"-c SEARCH_PATH={SP}"},
    {"options": f"-c search_path\\ ={SP}"},
])
def test_e2_search_path_at_startup(px, pg, params):
    try:
        with session(px, params=params) as c:
            got = exchange(c, Q("SELECT note FROM r9_orders"))
            got += exchange(c, Q("SHOW search_path"))
    except Exception as exc:  # refused login
        got = repr(exc).encode()
    judge(pg, got)


def test_e3_discard_reset_then_unqualified(px, pg):
    run_simple(px, pg, ["DISCARD ALL", "SELECT note FROM r9_orders", "RESET ALL",
                        "SELECT note FROM r9_orders", "RESET search_path", "SELECT note FROM r9_orders",
                        "SET SESSION AUTHORIZATION DEFAULT", "SELECT note FROM r9_orders",
                        "DISCARD TEMP", "DISCARD PLANS", "DISCARD SEQUENCES"])


def test_e4_savepoint_after_denial(px, pg):
    run_simple(px, pg, ["BEGIN", "SAVEPOINT a", SECRET, "ROLLBACK TO a", "SELECT note FROM r9_orders",
                        "INSERT INTO public.r9_other VALUES (1,'s')", "ROLLBACK TO SAVEPOINT a",
                        "RELEASE a", "COMMIT"])


def test_e5_read_only_and_tx_modes(px, pg):
    run_simple(px, pg, ["SET default_transaction_read_only = off",
                        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE, DEFERRABLE",
                        "SET TRANSACTION SNAPSHOT '00000003-00000002-1'", "ROLLBACK",
                        "SELECT set_config('default_transaction_read_only', 'off', false)",
                        "SET ROLE NONE", "RESET ROLE", "SET role = 'pgwitness'",
                        "SELECT set_config('role', 'postgres', false)"])


# --- F. simple protocol, several statements, splitting tricks -------------------------


@pytest.mark.parametrize("sql", [
    f"SELECT 1; {SECRET}",
    f"SELECT 1 AS x$a$, 2 FROM public.r9_orders; {SECRET} --$a$",
    f"SELECT $a$ ; $a$; {SECRET}",
    f"SELECT 'a' /* ' */; {SECRET}; -- '",
    f"/* /* */ {SECRET}; */ SELECT 1",
    f"SELECT E'\\''; {SECRET}; --'",
    f"SELECT 'x'\n'y'; {SECRET}",
    f"SELECT 1 $$; {SECRET}; $$",
    f"SELECT $1$; {SECRET}",
    f"SELECT note FROM public.r9_orders WHERE note = $_$;$_$; {SECRET}",
    f"SELECT \"a\"\"\" FROM (SELECT 1 AS \"a\"\"\") x; {SECRET}",
    f"SELECT 1;;;; {SECRET};;",
    f"SELECT 1\x0b; {SECRET}",
    f"SELECT 1\u00a0; {SECRET}",
    f"SELECT 1\u2028; {SECRET}",
    f"SELECT B'1' ; {SECRET}",
    f"SELECT X'1F'; {SECRET}",
    f"SELECT 1e; {SECRET}",
    f"SELECT 0x1F; {SECRET}",
    f"SELECT 1_000; {SECRET}",
    f"SELECT $a$$; {SECRET}; $$a$",
    f"SELECT $\u00e9$ ; $\u00e9$; {SECRET}",
    f"SELECT e'\\\\'; {SECRET}",
    f"SELECT N'x'; {SECRET}",
    f"SELECT 1 -- \r {SECRET}",
    f"SELECT 1 -- \x0c {SECRET}",
])
def test_f_splitting(px, pg, sql):
    run_simple(px, pg, [sql])


def test_f_nul_and_trailing_bytes(px, pg):
    with session(px) as c:
        got = exchange(c, frame(b"Q", b"SELECT 1\x00" + SECRET.encode() + b"\x00"))
    judge(pg, got)


def test_f_parse_with_trailing_bytes(px, pg):
    with session(px) as c:
        body = b"\x00SELECT 1\x00" + SECRET.encode() + b"\x00" + I16.pack(0)
        got = exchange(c, frame(b"P", body), bind("", ""), E(), SYNC)
    judge(pg, got)


# --- H. long and oddly encoded --------------------------------------------------------


def test_h1_long_query_offloaded(px, pg):
    pad = "/* " + "x" * 70000 + " */ "
    run_simple(px, pg, [pad + SECRET, "SELECT 1; " + pad + SECRET,
                        "SELECT note FROM public.r9_orders WHERE note <> '" + "y" * 70000 + "'; " + SECRET])


def test_h2_long_parse_offloaded_then_reused(px, pg):
    pad = "/* " + "x" * 70000 + " */ "
    with session(px) as c:
        got = exchange(c, parse("big", pad + SECRET), bind("", "big"), E(), SYNC)
        got += exchange(c, parse("big2", pad + "SELECT 1"), Q(pad + SECRET), parse("big3", pad + SECRET),
                        bind("", "big3"), E(), SYNC, zs=2)
        got += exchange(c, Q(pad + SECRET), Q(pad + SECRET))
    judge(pg, got)


@pytest.mark.parametrize("enc", ["LATIN1", "WIN1252", "EUC_JP", "SQL_ASCII", "KOI8R"])
@pytest.mark.parametrize("tail", [b"SELECT '\xc3'; ", b"SELECT '\xc3\xa9'; ",
                                  b"SELECT note FROM public.r9_orders WHERE note = E'\\\xc3\xa9'; "])
def test_h3_encoding_pipelined(px, pg, enc, tail):
    got = b""
    try:
        with session(px) as c:
            got = exchange(c, Q(f"SET client_encoding = '{enc}'"), Q(SECRET),
                           frame(b"Q", tail + SECRET.encode() + b" --'\x00"))
            got += exchange(c, frame(b"Q", tail + SECRET.encode() + b" --'\x00"))
    except OSError as exc:
        got += repr(exc).encode()
    judge(pg, got)


# --- I. residual: settings through parameters and views, writes through EXECUTE args ---


def test_i1_set_config_by_parameters(px, pg):
    with session(px) as c:
        got = exchange(c, parse("", "SELECT set_config($1, $2, false)"),
                       bind("", "", [b"search_path", b"r9sec"]), E(), SYNC)
        got += exchange(c, parse("", 'SELECT pg_catalog."set_config"($1, $2, false)'),
                        bind("", "", [b"search_path", b"r9sec"]), E(), SYNC)
        got += exchange(c, parse("", "SELECT set_config(name, $1, false) FROM pg_settings WHERE name = $2"),
                        bind("", "", [b"r9sec", b"search_path"]), E(), SYNC)
        got += exchange(c, parse("", "SELECT current_setting($1)"), bind("", "", [b"search_path"]), E(), SYNC)
        got += exchange(c, Q("SELECT note FROM r9_orders"))
        got += exchange(c, parse("", "SELECT note FROM r9_orders"), bind("", ""), E(), SYNC)
    judge(pg, got)


@pytest.mark.parametrize("sql", [
    "UPDATE pg_settings SET setting = 'r9sec' WHERE name = 'search_path'",
    "UPDATE pg_catalog.pg_settings SET setting = 'r9sec' WHERE name = 'search_path'",
    "WITH x AS (UPDATE pg_settings SET setting = 'r9sec' WHERE name = 'search_path' RETURNING 1) SELECT * FROM x",
    "COPY pg_settings (name, setting) FROM STDIN",
    "SELECT set_config(s.name, 'r9sec', false) FROM (VALUES ('search_path')) s(name)",
    "SELECT set_config(x, 'r9sec', false) FROM unnest(ARRAY['search_path']) x",
    "SELECT set_config('search_path', 'r9sec', false) WHERE false",
    "SELECT 1 FROM pg_settings WHERE set_config('search_path', 'r9sec', false) IS NULL",
])
def test_i2_settings_via_catalog(px, pg, sql):
    run_simple(px, pg, [sql, "SELECT note FROM r9_orders", "SHOW search_path"])


def test_i3_execute_args_write(px, pg):
    run_simple(px, pg, ["PREPARE s(bigint) AS SELECT $1", "EXECUTE s(nextval('public.r9_seq'))",
                        "EXECUTE s(nextval('r9_seq'))", "EXECUTE s(setval('public.r9_seq', 50))",
                        "EXECUTE s((SELECT count(*) FROM public.r9_secret WHERE k LIKE 'R9%'))"])


def test_i4_explain_execute_and_ctas_execute(px, pg):
    with session(px) as c:
        got = exchange(c, parse("pe", "SELECT note FROM public.r9_orders"), SYNC)
        for sql in ["EXPLAIN EXECUTE pe", "EXPLAIN ANALYZE EXECUTE pe", "CREATE TEMP TABLE tpe AS EXECUTE pe",
                    "SELECT * FROM pg_temp.tpe", "PREPARE pe AS SELECT 1", "EXECUTE pe",
                    "DEALLOCATE pe", "EXECUTE pe"]:
            got += exchange(c, Q(sql))
    judge(pg, got)


def test_i5_debug_notices(px, pg):
    run_simple(px, pg, ["SET client_min_messages = debug5", "SELECT note FROM public.r9_orders",
                        SECRET, "BEGIN", SECRET, "ROLLBACK",
                        "SET debug_print_plan = on", "SET debug_print_parse = on",
                        "SELECT note FROM public.r9_orders"])
