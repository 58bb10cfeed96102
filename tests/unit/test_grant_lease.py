"""A session's grant lease fires at its grant's expiry by the wall clock, not before it:
the loop's timer may run early (libuv counts milliseconds), and the store decides expiry by
the wall clock, so a lease that acted early would end the session while the store still
reports the grant live and records no ``grant.expired``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from policy.grants.auth import Identity
from proxy.grant_watch import GrantLease


class Watch:
    def __init__(self):
        self.expired: list[tuple[str, datetime]] = []

    def grant_expired(self, identity: Identity) -> None:
        self.expired.append((identity.grant_id, datetime.now(UTC)))


def test_a_timer_that_fires_early_waits_for_the_wall_clock():
    async def go():
        expires = datetime.now(UTC) + timedelta(milliseconds=80)
        ident = Identity("bot", "T-1", "gr_0123456789abcdef", expires_at=expires)
        watch, ended = Watch(), []
        lease = GrantLease(ident, watch, lambda cause, msg, code: ended.append(datetime.now(UTC)), None)
        lease._expired()  # what an early timer does: too soon by ~80 ms
        assert watch.expired == [] and ended == []
        await asyncio.sleep(0.2)
        assert len(watch.expired) == 1 and len(ended) == 1
        assert watch.expired[0][1] >= expires and ended[0] >= expires

    asyncio.run(go())
