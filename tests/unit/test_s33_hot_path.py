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
