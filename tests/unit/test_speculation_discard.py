"""A speculative upstream login that nobody will use is closed whenever it ends
(``proxy.handshake.close_when_done``), even when its cancellation is swallowed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from common.wire import messages as m
from proxy.handshake import close_when_done


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _session(transport: Transport):
    return SimpleNamespace(transport=transport)


def test_a_login_that_swallows_its_cancellation_is_closed_when_it_completes():
    """What asyncio.wait_for does in Python 3.11 when the cancel arrives as the inner
    connect completes: the result is returned and the login goes on."""
    transport = Transport()

    async def login():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass  # swallowed, as wait_for does when the result is already there
        await asyncio.sleep(0.01)  # the rest of the login
        return _session(transport)

    async def main():
        task = asyncio.ensure_future(login())
        await asyncio.sleep(0)
        close_when_done(task)
        assert not transport.closed
        assert await task is not None  # it completed after all
        await asyncio.sleep(0)  # the done callback
        return task

    asyncio.run(main())
    assert transport.closed and transport.written == [m.TERMINATE]


def test_a_finished_login_is_closed_and_a_cancelled_or_failed_one_left_alone():
    done = Transport()

    async def main():
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        finished.set_result(_session(done))
        close_when_done(finished)

        cancelled = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        close_when_done(cancelled)

        failed = loop.create_future()
        failed.set_exception(OSError("connection refused"))
        close_when_done(failed)
        await asyncio.sleep(0.01)
        assert cancelled.cancelled()
        return failed

    asyncio.run(main())
    assert done.closed and done.written == [m.TERMINATE]


def test_an_already_closing_transport_is_not_written_to():
    closing = Transport()
    closing.closed = True

    async def main():
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(_session(closing))
        close_when_done(fut)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert closing.written == []
