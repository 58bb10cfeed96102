"""The login throttle: failed logins of one agent from one address slow down (exponential,
capped), and logins in flight per address are bounded. Used by the proxy's login and the
grants admin API; docs/operations.md states the guesses per minute it allows."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque


class FailureThrottle:
    """Slows down repeated failed logins of one agent from one address (exponential, capped).

    Keyed by ``(agent, address)``: one agent's typos do not slow down the other agents behind
    the same address (a NAT'd fleet), and another agent's success does not reset the count
    (only the same agent's success does: it proved it holds the secret). Guesses in parallel
    do not multiply the rate: once a key has failed, its attempts run one at a time, each
    after the back-off. At most ``per_address`` authentications from one address are in
    flight at once (more wait their turn), which also bounds a burst before the first
    failure. docs/operations.md states the guesses per minute this allows.
    """

    def __init__(self, base_delay: float, window: float, cap: float = 5.0, *, per_address: int = 16):
        self.base_delay = base_delay
        self.window = window
        self.cap = cap
        self.per_address = per_address
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._serial: dict[tuple[str, str], _Shared] = {}
        self._slots: dict[str, _Shared] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures[key]
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def delay(self, addr: str, agent: str = "") -> float:
        key = (agent, addr)
        q = self._recent(key, time.monotonic())
        if not q:
            self._failures.pop(key, None)
            return 0.0
        return min(self.cap, self.base_delay * (2 ** (len(q) - 1)))

    def failed(self, addr: str, agent: str = "") -> None:
        now = time.monotonic()
        q = self._recent((agent, addr), now)
        q.append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of addresses
            self._failures.clear()

    def succeeded(self, addr: str, agent: str = "") -> None:
        self._failures.pop((agent, addr), None)

    @contextlib.asynccontextmanager
    async def attempt(self, addr: str, agent: str):
        """Wrap one authentication: waits for a place for the address, then (if this agent
        failed here recently) for the previous attempt and the back-off."""
        def slot():  # waiting in a key's queue holds no place of the address
            return _Shared.hold(self._slots, addr, lambda: asyncio.Semaphore(self.per_address))

        key = (agent, addr)
        while key not in self._serial and not self.delay(addr, agent):
            async with slot():
                if key in self._serial or self.delay(addr, agent):
                    continue  # it failed while we waited for a place: queue up instead
                yield
                return
        async with _Shared.hold(self._serial, key, asyncio.Lock):
            wait = self.delay(addr, agent)
            if wait:
                await asyncio.sleep(wait)
            async with slot():
                yield


class _Shared:
    """A lock or semaphore kept in a dict only while someone holds or waits for it."""

    __slots__ = ("obj", "users")

    def __init__(self, obj):
        self.obj = obj
        self.users = 0

    @staticmethod
    @contextlib.asynccontextmanager
    async def hold(table: dict, key, make):
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Shared(make())
        entry.users += 1
        try:
            async with entry.obj:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                table.pop(key, None)
