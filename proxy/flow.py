"""Back-pressure for one live connection: each side's writes pause reading on the other,
and frames read whole share the worker's memory budget (``proxy.limits.FrameBudget``).

No protocol knowledge, no buffers: only which side is paused and why. Reading from the
client stays paused while any reason holds (the upstream cannot take more, or the frame
budget has no room); the offload of a large statement pauses it too (``hold_client``).
"""

from __future__ import annotations

import asyncio
from typing import Final

from .limits import FrameBudget

FRAME_BUDGET_MIN: Final = 256 * 1024  # incomplete client frames longer than this use the FrameBudget


class FlowControl:
    __slots__ = ("client", "upstream", "budget", "client_paused", "upstream_paused",
                 "frame_reserved", "frame_waiting", "client_held", "recorder_held",
                 "closed")  # fmt: skip

    def __init__(self, client: asyncio.Transport, upstream: asyncio.Transport, budget: FrameBudget):
        self.client = client
        self.upstream = upstream
        self.budget = budget
        self.client_paused = False  # the upstream's buffer is full: not reading the client
        self.upstream_paused = False  # the client's buffer is full: not reading the upstream
        self.frame_reserved = 0  # bytes of the FrameBudget this connection holds
        self.frame_waiting = False  # paused until the FrameBudget has room
        self.client_held = False  # a large statement is classified off the loop
        self.recorder_held = False  # the recorder is behind: neither side is read
        self.closed = False

    def _resume_client(self) -> None:
        if not (self.client_paused or self.frame_waiting or self.client_held
                or self.recorder_held or self.closed):  # fmt: skip
            self.client.resume_reading()

    def _resume_upstream(self) -> None:
        if not (self.upstream_paused or self.recorder_held or self.closed):
            self.upstream.resume_reading()

    # --- the client reads slower than the upstream writes --------------------------

    def client_full(self) -> None:
        if not self.upstream_paused:
            self.upstream_paused = True
            self.upstream.pause_reading()

    def client_drained(self) -> None:
        if self.upstream_paused:
            self.upstream_paused = False
            self._resume_upstream()

    # --- the upstream reads slower than the client writes --------------------------

    def upstream_full(self) -> None:
        if not self.client_paused:
            self.client_paused = True
            self.client.pause_reading()

    def upstream_drained(self) -> None:
        if self.client_paused:
            self.client_paused = False
            self._resume_client()

    # --- a large statement classified off the event loop ---------------------------

    def hold_client(self) -> None:
        self.client_held = True
        self.client.pause_reading()

    def release_client(self) -> None:
        self.client_held = False
        self._resume_client()

    # --- the recorder has more unsealed than it may hold -----------------------------

    def recorder_behind(self) -> None:
        if not self.recorder_held:
            self.recorder_held = True
            self.upstream.pause_reading()
            self.client.pause_reading()

    def recorder_caught_up(self) -> None:
        if self.recorder_held:
            self.recorder_held = False
            self._resume_upstream()
            self._resume_client()

    # --- the worker's memory budget for frames read whole ---------------------------

    def frame_memory(self, wanted: int) -> None:
        """Hold a place in the worker's FrameBudget for the incomplete frame of ``wanted``
        bytes, or stop reading from this client until there is room (back-pressure)."""
        if wanted == self.frame_reserved or self.frame_waiting:
            return
        budget = self.budget
        if self.frame_reserved:  # the frame it was for is complete
            reserved, self.frame_reserved = self.frame_reserved, 0
            budget.release(reserved)
        if wanted > FRAME_BUDGET_MIN:
            if budget.reserve(wanted):
                self.frame_reserved = wanted
                return
            self.frame_waiting = True
            self.client.pause_reading()
            budget.wait(self, wanted, lambda: self._frame_granted(wanted))

    def _frame_granted(self, wanted: int) -> None:
        self.frame_waiting = False
        self.frame_reserved = wanted
        self._resume_client()

    def close(self) -> None:
        """The connection ended: give back its share of the budget."""
        self.closed = True
        budget = self.budget
        if self.frame_waiting:
            self.frame_waiting = False
            budget.cancel(self)
        if self.frame_reserved:
            reserved, self.frame_reserved = self.frame_reserved, 0
            budget.release(reserved)
