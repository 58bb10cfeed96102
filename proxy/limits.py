"""Budgets that keep one worker serving under abuse, sans-IO (the server does the I/O).

``PreLoginBudget``: connections that have not sent their startup packet yet have a place of
their own, apart from logins in progress and sessions (``max_connections``). One address
may hold at most ``per_address`` of them (more are refused at once); all addresses
together at most ``limit``, and when that is full the *oldest* one is evicted to make room
(a stalled socket is the oldest; a real client sends its startup packet within a round
trip), so a flood from many addresses slows logins down but cannot lock them out.

``FrameBudget``: bytes a worker may hold for client frames it must read whole (Query,
Parse, ...: the policy reads them). A connection whose incomplete frame does not fit is
paused (its transport stops reading) until another connection's frame completes, and is
resumed first come, first served.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable


class PreLoginBudget:
    """Places for connections before their startup packet, by address and in total."""

    def __init__(self, limit: int, per_address: int):
        self.limit = limit
        self.per_address = per_address
        self._by_addr: dict[str, int] = {}
        self._held: OrderedDict[object, str] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._held)

    def count(self, addr: str) -> int:
        return self._by_addr.get(addr, 0)

    def admit(self, conn: object, addr: str) -> tuple[bool, object | None]:
        """Take a place for ``conn``. Returns ``(admitted, evicted)``: ``evicted`` is the
        oldest holder, which the caller must close (its place now belongs to ``conn``)."""
        if self._by_addr.get(addr, 0) >= self.per_address:
            return False, None
        evicted = None
        if len(self._held) >= self.limit:
            evicted, _ = next(iter(self._held.items()))
            self.release(evicted)
        self._held[conn] = addr
        self._by_addr[addr] = self._by_addr.get(addr, 0) + 1
        return True, evicted

    def release(self, conn: object) -> None:
        addr = self._held.pop(conn, None)
        if addr is None:
            return
        n = self._by_addr[addr] - 1
        if n:
            self._by_addr[addr] = n
        else:
            del self._by_addr[addr]


class FrameBudget:
    """Bytes of whole-frame buffers across a worker's connections."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiting: deque[tuple[object, int, Callable[[], None]]] = deque()

    def reserve(self, n: int) -> bool:
        if self.used + n > self.limit or self._waiting:
            return False
        self.used += n
        return True

    def wait(self, owner: object, n: int, resume: Callable[[], None]) -> None:
        """Queue ``owner`` for ``n`` bytes; ``resume()`` is called once they are reserved."""
        self._waiting.append((owner, n, resume))

    def cancel(self, owner: object) -> None:
        self._waiting = deque(w for w in self._waiting if w[0] is not owner)
        self._grant()

    def release(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][1] <= self.limit:
            _, n, resume = self._waiting.popleft()
            self.used += n
            resume()

    @property
    def waiting(self) -> int:
        return len(self._waiting)
