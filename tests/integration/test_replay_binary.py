"""Replay shows binary-format results (asyncpg, JDBC) as Postgres prints them.

asyncpg asks for every result column in binary format in its Bind, after a statement
Describe whose RowDescription said text. The transcript must follow the Bind, decode the
common types, and keep the answers of pipelined batches (executemany, an error inside one)
in order. The server is the judge: the same values selected with psql (text format) must
read exactly as the transcript shows them.
"""

from __future__ import annotations

import asyncio
import io
import time

import asyncpg
import pytest

from recorder.pgbinary import binary_text
from recorder.replay import replay_session

pytestmark = pytest.mark.timeout(90)

VALUES = [
    "42::int4", "-7::int2", "9007199254740993::int8", "4000000000::oid", "true", "false",
    "10.50::numeric", "-0.000123::numeric", "123456789.000001::numeric", "0::numeric",
    "'NaN'::numeric", "1e20::numeric",
    "0.1::float8", "1::float8", "1e15::float8", "1e14::float8", "123456789012345678::float8",
    "1.5e-5::float8", "-2.5::float8", "'Infinity'::float8", "'NaN'::float8", "0.1::float4",
    "3.4e38::float4", "1e-5::float4",
    "'2024-02-29'::date", "'infinity'::date",
    "'2024-01-02 03:04:05.12'::timestamp", "'2024-01-02 03:04:05'::timestamp",
    "'1999-12-31 23:59:59.999999'::timestamp",
    "'2024-01-02 03:04:05.5+00'::timestamptz",
    "'9f8e1f4a-3c2b-4d5e-8f70-1a2b3c4d5e6f'::uuid", "'héllo'::text", "'x'::varchar",
    "'{\"a\": [1, 2]}'::jsonb", "'{\"a\": 1}'::json",
]


def _transcript(handle, tmp_path) -> str:
    store = handle.runtime.recorder.store
    deadline = time.monotonic() + 20
    while True:
        out = io.StringIO()
        sessions = list(store.sessions())
        for sid in sessions:
            replay_session(store, sid, out)
        text = out.getvalue()
        if "session ended" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_binary_results_read_as_the_server_prints_them(pg, make_proxy, tmp_path):
    handle = make_proxy(**{
        "recorder.enabled": True, "recorder.store": str(tmp_path / "rec"),
        "recorder.spool_dir": str(tmp_path / "spool"),
        "recorder.signing_key": str(tmp_path / "signing.key"),
        "recorder.chunk_max_seconds": 0.2, "recorder.fsync": False,
    })
    select = "SELECT " + ", ".join(f"{v} AS b{i}" for i, v in enumerate(VALUES))
    server = pg.psql(f"SET TimeZone = 'UTC';\n{select};\n").strip().split("|")
    assert len(server) == len(VALUES)

    async def session():
        conn = await asyncpg.connect(**handle.connect_kwargs(), ssl=False)
        try:
            await conn.execute("SET TimeZone = 'UTC'")
            row = await conn.fetchrow(select)
            # a pipelined batch (Bind/Execute x3, one Sync), then one that fails halfway
            await conn.execute("CREATE TEMP TABLE t (i int, f float8)")
            await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(1, 0.5), (2, 1e20), (3, 7.0)])
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("CREATE UNIQUE INDEX ON t (i)")
                await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(4, 1.0), (1, 2.0), (5, 3.0)])
            after = await conn.fetch("SELECT i, f FROM t ORDER BY i")
            return row, after
        finally:
            await conn.close()

    row, after = asyncio.run(session())
    assert [r["i"] for r in after] == [1, 2, 3]  # executemany is atomic: none of the batch
    text = _transcript(handle, tmp_path)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("b0 |"))
    cells = [c.strip() for c in lines[header + 2].split("|")]
    assert len(cells) == len(VALUES)
    wrong = {v: (shown, text) for v, shown, text in zip(VALUES, cells, server, strict=True)
             if shown != text}
    assert not wrong, f"transcript (binary) vs the server's text: {wrong}"
    assert cells[0] == "42" == str(row["b0"])
    # after the failed batch, the next result is read with its own formats again
    tail = text[text.index("SELECT i, f FROM t ORDER BY i"):]
    assert "1e+20" in tail and "| 0.5" in tail and "\\x" not in tail.split("(3 rows)")[0]


def test_unknown_types_and_bad_values_fall_back_to_none():
    assert binary_text(b"\x00\x00\x00\x01", 600) is None  # point: not decoded here
    assert binary_text(b"\x00\x01", 23) is None  # an int4 must be 4 bytes
    assert binary_text(b"\x02", 16) is None  # a bool is 0 or 1
    assert binary_text(b"\xff\xfe", 25) is None  # not UTF-8
    assert binary_text(b"\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01", 1700) is None  # short numeric
