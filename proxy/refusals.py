"""Refused logins and connections as evidence: ``login.refused`` events in the signed
control stream, at a bounded rate.

Each refusal at the boundary (wrong token, expired or revoked grant, a grant used on
another database, refused startup parameters, 53300, 57P03, TLS required, the pre-login
budget, timeouts and protocol errors before login) becomes one event::

    login.refused {"agent": <user name attempted or null>, "database": str,
                   "grant": <grant id or null>, "client": "ip:port", "reason": <short code>,
                   "sqlstate": str, "message": str}

never with the token or password. At most ``per_second`` events a second are written (they
do not force a chunk: they ride the control stream's next one); refusals over that are
counted by reason and written once the second is over as ``login.refused.summary
{"dropped": n, "by_reason": {...}}``, so a flood costs a bounded number of objects.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

log = logging.getLogger("pgwitness")


class RefusalLog:
    def __init__(self, recorder, per_second: int, clock=time.monotonic):
        self.recorder = recorder
        self.per_second = per_second
        self._clock = clock
        self._second = int(clock())
        self._written = 0
        self._dropped: Counter[str] = Counter()

    def refused(self, *, agent: str | None, database: str, grant: str | None, client: str,
                reason: str, sqlstate: str, message: str) -> None:
        if self.recorder is None:
            return
        self.tick()
        if self._written >= self.per_second:
            self._dropped[reason] += 1
            return
        self._written += 1
        self._emit("login.refused", {
            "agent": agent, "database": database, "grant": grant, "client": client,
            "reason": reason, "sqlstate": sqlstate, "message": message,
        })

    def tick(self) -> None:
        """Start a new second if one has begun, summarising what the last one dropped."""
        now = int(self._clock())
        if now == self._second:
            return
        self._second = now
        self._written = 0
        if self._dropped:
            dropped, self._dropped = self._dropped, Counter()
            self._emit("login.refused.summary",
                       {"dropped": sum(dropped.values()), "by_reason": dict(dropped)})

    def _emit(self, kind: str, payload: dict) -> None:
        try:
            self.recorder.control_event(kind, payload, force=False)
        except Exception:  # a closed recorder (shutdown) must not break the refusal itself
            log.debug("refusal not recorded", exc_info=True)
