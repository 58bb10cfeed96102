"""The grant store's census as gauges: grants usable now and those about to expire, by agent.

Every worker counts (each sees the same store; the gauges take the max across workers).
A store that does not answer leaves the last values and logs once per outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from . import metrics

EXPIRING_SOON = timedelta(minutes=15)
CENSUS_SECONDS = 15.0


def census(grants, now: datetime) -> tuple[Counter, Counter]:
    """(usable now, usable now and expiring within EXPIRING_SOON), each counted by agent."""
    valid: Counter = Counter()
    expiring: Counter = Counter()
    for grant in grants:
        if not grant.is_active(now):
            continue
        valid[grant.agent] += 1
        if grant.expires_at - now <= EXPIRING_SOON:
            expiring[grant.agent] += 1
    return valid, expiring


class GrantCensus:
    """Sets the gauges; an agent whose grants all ended goes back to 0, not stale."""

    def __init__(self) -> None:
        self._agents: set[str] = set()

    async def refresh(self, store) -> None:
        now = datetime.now(UTC)
        valid, expiring = census(await store.unended(), now)
        self._agents |= set(valid)
        for agent in self._agents:
            metrics.GRANTS_VALID.labels(agent).set(valid[agent])
            metrics.GRANTS_EXPIRING_SOON.labels(agent).set(expiring[agent])


async def watch_grants_census(store, interval: float = CENSUS_SECONDS) -> None:
    """Refresh at start (no zeros before the first count) and every ``interval`` seconds."""
    census_ = GrantCensus()
    failing = False
    while True:
        try:
            await census_.refresh(store)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception:
            if not failing:
                logging.getLogger("pgwitness").exception("grant census failed (gauges keep their last values)")
            failing = True
        await asyncio.sleep(interval)
