"""``Inbox.frame``: a whole frame already received, without waiting (session 37: the catalog
loader read each of a load's ~2,400 frames through ``asyncio.wait_for``, a task and a timer
each, 30 of a warm load's 40 ms of proxy CPU); ``read_frame`` waits for the rest."""

from __future__ import annotations

import asyncio

import pytest

from common.wire import messages as m
from proxy.upstream import Inbox, UpstreamError


def test_frame_returns_whole_frames_in_order_and_none_for_a_partial_one():
    inbox = Inbox()
    one, two = m.query("SELECT 1"), m.query("SELECT 2")
    inbox.feed(one + two[:7])
    assert inbox.frame(1 << 20) == one
    assert inbox.frame(1 << 20) is None  # (the rest of two is not here)
    assert bytes(inbox.buf) == two[:7]  # nothing consumed
    inbox.feed(two[7:])
    assert inbox.frame(1 << 20) == two and inbox.frame(1 << 20) is None


@pytest.mark.parametrize("length", [3, -1, 1 << 21])
def test_a_bogus_length_raises_at_once(length):
    inbox = Inbox()
    inbox.feed(b"D" + length.to_bytes(4, "big", signed=True))  # (no body sent)
    with pytest.raises(UpstreamError, match=f"invalid message length {length}"):
        inbox.frame(1 << 20, UpstreamError, "upstream")


def test_read_frame_waits_for_the_rest():
    async def go():
        inbox = Inbox()
        frame = m.query("SELECT 3")
        inbox.feed(frame[:3])
        task = asyncio.ensure_future(inbox.read_frame(1 << 20))
        await asyncio.sleep(0)
        assert not task.done()
        inbox.feed(frame[3:])
        return await asyncio.wait_for(task, 1.0), frame

    got, frame = asyncio.run(go())
    assert got == frame
