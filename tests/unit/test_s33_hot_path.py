"""Session 33's hot-path readers say what the readers they replace said (issue 14)."""

from __future__ import annotations

import pytest

from common.wire import messages as m
from common.wire.errors import ProtocolViolation
from devtools import testing as t


@pytest.mark.parametrize(
    "body",
    [
        b"SELECT 1\x00",
        b"\x00",
        b"SELECT 'a\x00b'\x00",  # an embedded NUL: the text ends at the first one
        "SELECT 'é'".encode() + b"\x00",
        b"SELECT 1",  # unterminated
        b"SELECT '\xff'\x00",  # not UTF-8
    ],
)
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_query_text_reads_a_frame_in_place_as_decode_query_reads_its_copy(body, encoding):
    frame = t.frame(b"Q", body)
    run = t.query("SELECT 0") + frame + t.query("SELECT 2")  # the frame between two others
    start = len(t.query("SELECT 0"))
    end = start + len(frame)
    try:
        expected: object = m.decode_query(frame, encoding)
    except ProtocolViolation as exc:
        expected = (ProtocolViolation, str(exc))
    try:
        got: object = m.query_text(run, start, end, encoding)
    except ProtocolViolation as exc:
        got = (ProtocolViolation, str(exc))
    assert got == expected
    if body == b"SELECT 1":  # the next frame's NUL must not end this one's text
        assert got[0] is ProtocolViolation


def test_a_policy_attached_by_the_loader_reads_each_new_snapshot():
    """``CatalogLoader.attach`` gives the policy the database's snapshot as a C-level read of
    the cache entry (``partial(getattr, entry, "snapshot")``, not a Python lambda): every
    snapshot put later is the one read, also after another database's, and a loader never
    swaps the entry (``CatalogCache.entry``)."""
    import asyncio

    from policy import StatementPolicy, parse_scopes
    from proxy.catalog_loader import CatalogLoader

    loader = CatalogLoader(cfg=None, credentials=None)
    loader.cache.put("db", [], {"public.t": frozenset({"id"})})
    policy = StatementPolicy(parse_scopes("read:public.t"), task="T-33")
    asyncio.run(loader.attach(policy, "db"))
    first = policy.catalog()
    assert first is loader.cache.get("db") and first is not None
    loader.cache.put("other", [], {"public.u": frozenset({"id"})})
    loader.cache.put("db", ["f"], {"public.t": frozenset({"id", "x"})})
    assert policy.catalog() is loader.cache.get("db") is not first
    assert policy.check_query("SELECT x FROM t").allowed  # decided on the new one


@pytest.mark.parametrize(
    "length", [0, 3, 4, 5, 255, 256, 65536, 0x7FFFFFFF, -1, -4, -0x80000000, 0x3FFFFFFE]
)
def test_frame_lengths_read_byte_by_byte_are_the_signed_int32_struct_reads(length):
    """``FrameReader.feed`` reads a frame's length with native arithmetic, not
    ``struct.unpack``: the same signed value, so the same frames and the same refusals."""
    import struct

    from common.wire.framing import FrameReader

    body = b"x" * (length - 4 if 4 <= length <= 12 else 8)
    data = b"Q" + struct.pack("!i", length) + body
    streamed = frozenset({ord("Q")})
    for reader in (FrameReader(max_len=1 << 20), FrameReader(max_len=1 << 20, streamed=streamed)):
        try:
            got: object = reader.feed(data)
        except ProtocolViolation as exc:
            got = str(exc)
        if 4 <= length <= 12:
            assert got == (data, [(ord("Q"), 0, 1 + length)]), got
        elif length < 4:
            assert isinstance(got, str) and str(length) in got, got
        else:  # longer than what came: held (or passed on, streamed), or refused as too long
            assert isinstance(got, str | tuple), got
            if isinstance(got, str):
                assert str(length) in got
