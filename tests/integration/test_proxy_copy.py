"""COPY through the proxy: every format, both directions, failures part-way, large volumes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import threading
import time
import uuid
from decimal import Decimal

import asyncpg
import psycopg
import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support.pg import arun, direct_dsn
from tests.support.rawpg import RawClient, bind, errors_of, parse, same_session_shape, types_of
from tests.support.wait import wait_until

COLUMNS = "id int, t text, n numeric, b bytea, ts timestamptz, flag bool"
NASTY_TEXT = [
    "plain",
    "tab\there",
    "new\nline",
    "back\\slash",
    "ümlaut ✓",
    "",
    None,
    '"quoted", comma',
    "\\N",
]


def sample_rows(n: int):
    base = dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC)
    return [
        (
            i,
            NASTY_TEXT[i % len(NASTY_TEXT)],
            None if i % 7 == 3 else Decimal(i) / 8,
            None if i % 5 == 4 else bytes([i % 256, 0, 255]),
            base + dt.timedelta(seconds=i),
            i % 2 == 0,
        )
        for i in range(n)
    ]


def scratch_table(pg) -> str:
    """A fresh real table owned by the upstream role (visible to both proxy and direct sessions)."""
    name = f"public.copy_{uuid.uuid4().hex[:10]}"
    pg.psql(f"create table {name} ({COLUMNS}); alter table {name} owner to pgwitness", db="app")
    return name


def count(pg, table: str) -> int:
    return int(pg.psql(f"select count(*) from {table}", db="app"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fmt", ["text", "binary"])  # psycopg writes rows in these; CSV below
def test_psycopg_copy_rows_round_trip(proxy, pg, fmt):
    table = scratch_table(pg)
    rows = sample_rows(300)
    opts = f"(format {fmt})"
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy(f"copy {table} from stdin {opts}") as copy:
            if fmt == "binary":
                copy.set_types(["int4", "text", "numeric", "bytea", "timestamptz", "bool"])
            for row in rows:
                copy.write_row(row)
        assert cur.rowcount == len(rows)
        with cur.copy(f"copy (select * from {table} order by id) to stdout {opts}") as copy:
            if fmt == "binary":
                copy.set_types(["int4", "text", "numeric", "bytea", "timestamptz", "bool"])
            back = list(copy.rows())
    if fmt != "binary":  # text comes back as strings: compare through the server instead
        with psycopg.connect(direct_dsn(pg)) as ref:
            expect = ref.execute(f"select * from {table} order by id").fetchall()
        assert expect == [tuple(r) for r in rows]
        assert len(back) == len(rows)
    else:
        assert [tuple(r) for r in back] == [tuple(r) for r in rows]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_out_bytes_identical_to_direct(proxy, pg, fmt):
    sql = (
        "copy (select o.*, c.name, g from orders o join customers c on c.id = o.customer_id,"
        f" generate_series(1, 500) g order by o.id, g) to stdout (format {fmt})"
    )
    out = []
    for dsn in (proxy.dsn(), direct_dsn(pg)):
        with psycopg.connect(dsn) as conn, conn.cursor().copy(sql) as copy:
            out.append(b"".join(bytes(chunk) for chunk in copy))
    assert out[0] == out[1]
    assert len(out[0]) > 10_000


@pytest.mark.timeout(30)
def test_copy_in_raw_blocks_csv_with_header(proxy, pg):
    table = scratch_table(pg)
    data = b"id,t,n,b,ts,flag\n" + b"".join(
        f'{i},"row {i}, csv",{i}.5,\\x0{i % 10},2024-01-01 00:00:{i % 60:02d}+00,{"t" if i % 2 else "f"}\n'.encode()
        for i in range(1000)
    )
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with conn.cursor().copy(f"copy {table} from stdin (format csv, header true)") as copy:
            for i in range(0, len(data), 777):  # blocks that split rows anywhere
                copy.write(data[i : i + 777])
        row = conn.execute(f"select count(*), sum(n), max(t) from {table}").fetchone()
    assert row == (1000, sum(Decimal(i) + Decimal("0.5") for i in range(1000)), "row 999, csv")


def bad_row_outcome(dsn: str, table: str) -> list:
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            with conn.cursor().copy(f"copy {table} (id, t) from stdin") as copy:
                for i in range(2000):
                    copy.write(f"{i}\tgood\n")
                copy.write("not-a-number\tbad\n")
                for i in range(2000):
                    copy.write(f"{i}\tafter\n")
        except psycopg.Error as exc:
            out.append(
                (type(exc).__name__, exc.sqlstate, exc.diag.message_primary, exc.diag.context)
            )
        out.append(conn.execute(f"select count(*) from {table}").fetchone()[0])
        out.append(conn.info.transaction_status.name)
        out.append(conn.execute("select 'usable'").fetchone()[0])
    return out


@pytest.mark.timeout(30)
def test_copy_from_stdin_bad_row_part_way(proxy, pg):
    table = scratch_table(pg)
    via = bad_row_outcome(proxy.dsn(), table)
    assert via[0][:2] == ("InvalidTextRepresentation", "22P02")
    assert "line 2001" in via[0][3]
    assert via[1:] == [0, "IDLE", "usable"]
    assert bad_row_outcome(direct_dsn(pg), table) == via
    assert count(pg, table) == 0


def copy_fail_outcome(dsn: str, table: str) -> list:
    out = []
    with psycopg.connect(dsn) as conn:  # inside a transaction this time
        try:
            with conn.cursor().copy(f"copy {table} (id) from stdin") as copy:
                for i in range(100):
                    copy.write_row((i,))
                raise RuntimeError("client gave up")
        except psycopg.Error as exc:
            out.append((type(exc).__name__, exc.sqlstate, exc.diag.message_primary))
        except RuntimeError as exc:
            out.append(("RuntimeError", str(exc)))
        out.append(conn.info.transaction_status.name)
        conn.rollback()
        out.append(conn.execute(f"select count(*) from {table}").fetchone()[0])
    return out


@pytest.mark.timeout(30)
def test_copy_fail_from_client(proxy, pg):
    table = scratch_table(pg)
    via = copy_fail_outcome(proxy.dsn(), table)
    assert copy_fail_outcome(direct_dsn(pg), table) == via
    assert via[-1] == 0 and via[-2] == "INERROR"
    # And on the wire: CopyFail → the server's 57014 naming the client's message.
    c = RawClient.via_proxy(proxy)
    try:
        msgs = c.run(
            m.query(f"copy {table} (id) from stdin"), frame(b"d", b"1\n"), frame(b"f", b"nope\x00")
        )
        assert types_of(msgs) == "GEZ"
        err = errors_of(msgs)[0]
        assert err["C"] == "57014" and "nope" in err["M"]
        assert types_of(c.run(m.query("select 1"))) == "TDCZ"
    finally:
        c.close()
    assert count(pg, table) == 0


@pytest.mark.timeout(60)
def test_large_copy_round_trip(proxy, pg):
    table = scratch_table(pg)
    n = 50_000
    lines = [f"{i}\tvalue-{i}-{'x' * (i % 50)}\t{i * 3}\n" for i in range(n)]
    sent = "".join(lines).encode()
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy(f"copy {table} (id, t, n) from stdin") as copy:
            for i in range(0, n, 1000):
                copy.write("".join(lines[i : i + 1000]))
        assert cur.rowcount == n
        with cur.copy(f"copy (select id, t, n from {table} order by id) to stdout") as copy:
            received = b"".join(bytes(chunk) for chunk in copy)
        assert cur.rowcount == n
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(sent).hexdigest()


@pytest.mark.timeout(30)
def test_asyncpg_copy_binary_and_text(proxy, pg):
    table = scratch_table(pg)
    rows = sample_rows(500)

    async def go():
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            status = await conn.copy_records_to_table(
                table.split(".")[1], records=rows, schema_name="public"
            )
            back = await conn.fetch(f"select * from {table} order by id")
            out: list[bytes] = []

            async def sink(chunk):
                out.append(bytes(chunk))

            await conn.copy_from_query(
                f"select id, t from {table} order by id", output=sink, format="csv"
            )
            await conn.execute(f"truncate {table}")
            chunks = [b"".join(out)]

            async def source():
                for c in chunks:
                    yield c

            await conn.copy_to_table(
                table.split(".")[1], source=source(), columns=["id", "t"], format="csv"
            )
            again = await conn.fetch(f"select id, t from {table} order by id")
            return status, back, again
        finally:
            await conn.close()

    status, back, again = arun(go())
    assert status == "COPY 500"
    assert [tuple(r) for r in back] == [tuple(r) for r in rows]
    assert [tuple(r) for r in again] == [(r[0], r[1]) for r in rows]


RAW_COPY_SCRIPTS = {
    "copy out, simple query": [m.query("copy (select g, 'a\tb' from generate_series(1, 5) g) to stdout")],
    "copy in, simple query, then copy fail": [
        m.query("create temp table ci (x int, y text)"),
        m.query("copy ci from stdin"), frame(b"d", b"1\tone\n2\t"), frame(b"d", b"two\n"), frame(b"c"),
        m.query("copy ci from stdin (format csv)"), frame(b"d", b"3,three\n"), frame(b"f", b"stop\x00"),
        m.query("select count(*) from ci"),
    ],
    "copy in, bad data then CopyDone": [
        m.query("create temp table cb (x int)"),
        m.query("copy cb from stdin"), frame(b"d", b"1\nx\n2\n"), frame(b"c"),
        m.query("select count(*) from cb"),
    ],
    "copy inside a multi-statement Query": [
        m.query("create temp table cm (x int)"),
        m.query("insert into cm values (0); copy cm from stdin; select count(*) from cm"),
        frame(b"d", b"1\n2\n"), frame(b"c"),
    ],
    "copy in and out, extended protocol": [
        m.query("create temp table ce (x int)"),
        parse("", "copy ce from stdin"), bind(), m.execute(), frame(b"d", b"5\n6\n"), frame(b"c"), m.SYNC,
        parse("", "copy (select x from ce order by x) to stdout (format csv)"), bind(), m.execute(), m.SYNC,
    ],
    "copy in, extended protocol, CopyFail": [
        m.query("create temp table cf (x int)"),
        parse("", "copy cf from stdin"), bind(), m.execute(), frame(b"d", b"5\n"), frame(b"f", b"no\x00"), m.SYNC,
        m.query("select count(*) from cf"),
    ],
    "copy to a file is refused like direct": [m.query("copy (select 1) to '/tmp/pgwitness-nope'")],
    "copy binary out": [m.query("copy (select g::int8, g::text from generate_series(1, 3) g) to stdout (format binary)")],
}  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(RAW_COPY_SCRIPTS))
def test_raw_copy_same_answers_as_direct(proxy, pg, name):
    script = RAW_COPY_SCRIPTS[name]
    answers = []
    for c in (RawClient.via_proxy(proxy), RawClient.direct(pg)):
        try:
            answers.append(same_session_shape(c.run(*script)))
        finally:
            c.close()
    assert answers[0] == answers[1]
    assert answers[0][-1][0] == "Z"


def test_raw_copy_expectations(proxy):
    c = RawClient.via_proxy(proxy)
    try:
        msgs = c.run(*RAW_COPY_SCRIPTS["copy in, simple query, then copy fail"])
        assert types_of(msgs) == "CZGCZGEZTDCZ"
        assert msgs[-3] == ("D", b"\x00\x01\x00\x00\x00\x012")
        msgs = c.run(*RAW_COPY_SCRIPTS["copy in and out, extended protocol"])
        assert types_of(msgs) == "CZ12GCZ12HddcCZ"
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_copy_out_with_slow_reader_is_complete(proxy):
    """A client that stops reading makes the proxy pause the upstream, then resume; nothing lost."""
    rows, width = 20_000, 1000
    c = RawClient.via_proxy(proxy)
    try:
        c.send(
            m.query(
                f"copy (select lpad(g::text, {width}, '.') from generate_series(1, {rows}) g) to stdout"
            )
        )
        assert c.read()[0] == "H"
        got = 0
        for i in range(rows):
            if i == 500:
                time.sleep(1.0)  # buffers fill on every hop
            t, body = c.read()
            assert t == "d" and body == str(i + 1).rjust(width, ".").encode() + b"\n", i
            got += 1
        assert types_of(c.read_until("Z")) == "cCZ"
        assert got == rows
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_copy_in_while_upstream_is_blocked_is_complete(proxy, pg):
    """The server stops reading (a lock wait): the proxy must stop reading the client, not
    buffer without bound, and pick up again once the lock goes."""
    table = scratch_table(pg)
    rows = 20_000
    payload = b"".join(frame(b"d", f"{i}\t{'y' * 1000}\n".encode()) for i in range(rows))
    with psycopg.connect(direct_dsn(pg)) as locker:
        locker.execute(f"lock table {table} in access exclusive mode")
        c = RawClient.via_proxy(proxy)
        sender = threading.Thread(
            target=c.send,
            args=(m.query(f"copy {table} (id, t) from stdin"), payload, frame(b"c")),
            daemon=True,
        )
        sender.start()
        time.sleep(1.0)
        assert wait_until(
            lambda: (
                pg.psql(
                    f"select count(*) from pg_stat_activity where pid = {c.pid} and wait_event_type = 'Lock'"
                ).strip()
                == "1"
            ),
            5,
        )
        locker.rollback()
    sender.join(30)
    assert not sender.is_alive()
    try:
        msgs = c.read_until("Z")
        assert types_of(msgs) == "GCZ", msgs
        assert msgs[1][1] == f"COPY {rows}\x00".encode()
    finally:
        c.close()
    assert count(pg, table) == rows


@pytest.mark.timeout(30)
def test_copy_in_pipeline_of_statements_via_asyncio(proxy):
    """Two sessions copying at once do not interleave each other's data."""

    async def one(i: int):
        conn = await asyncpg.connect(**proxy.connect_kwargs())
        try:
            await conn.execute("create temp table par (x int, who int)")
            await conn.copy_records_to_table("par", records=[(j, i) for j in range(5000)])
            return await conn.fetchrow("select count(*), min(who), max(who), sum(x) from par")
        finally:
            await conn.close()

    async def go():
        return await asyncio.gather(*(one(i) for i in range(4)))

    for i, row in enumerate(arun(go())):
        assert tuple(row) == (5000, i, i, sum(range(5000)))
