"""Grants of live sessions, followed: revocations and extensions from the store, expiry.

``GrantWatch`` is the worker's: its housekeeping loop calls ``poll`` (revocations and
extensions written by any proxy or the CLI, applied to the live sessions of that grant)
and ``expire_due`` (``grant.expired``, emitted once across proxies by the store).
``GrantLease`` is one live session's: its expiry timer and what a change in the store
means for it (revoked ends it, expired ends it, extended moves its expiry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from common.wire.errors import ADMIN_SHUTDOWN

from .auth import Identity
from .causes import EndCause


class GrantWatch:
    def __init__(self, cfg, store, recorder, background: set[asyncio.Task]):
        self.cfg = cfg
        self.store = store  # policy.grants.store.GrantStore, or None (static users only)
        self.recorder = recorder
        self._background = background  # the server's tasks that shutdown waits for
        self.since: datetime | None = None
        self._expired_grants: set[str] = set()

    def start(self) -> None:
        self.since = datetime.now(UTC)

    async def poll(self, sessions: Collection) -> None:
        """Apply revocations and extensions to live sessions.

        The cursor trails by a margin: a change written by another proxy (another clock) or
        while a session was between its grant check and going live is still seen. Seeing a
        change twice is harmless (revoking an ended session, re-setting the same expiry).
        """
        margin = timedelta(seconds=5 + self.cfg.proxy.startup_timeout + self.cfg.upstream.connect_timeout)
        started = datetime.now(UTC)
        live = {c.identity.grant_id for c in sessions if c.identity is not None}
        if not live:
            self.since = started
            return
        assert self.since is not None  # set by start()
        changed = await self.store.changed_since(self.since - margin)
        self.since = started
        for grant in changed:
            if grant.id not in live:
                continue
            for conn in [c for c in list(sessions) if c.identity and c.identity.grant_id == grant.id]:
                conn.grant_changed(grant)

    async def expire_due(self) -> None:
        """grant.expired for every grant whose expiry passed (one proxy emits each)."""
        try:
            await self.store.expire_due()
        except Exception:
            logging.getLogger("pgwitness").exception("grant expiry check failed")

    def grant_expired(self, identity: Identity) -> None:
        """A live session's grant expired: have the store report it now (once, see
        ``GrantStore.expire_due``); without a store, record it once per worker."""
        if identity.grant_id in self._expired_grants:
            return
        self._expired_grants.add(identity.grant_id)
        if self.store is not None:
            task = asyncio.get_running_loop().create_task(self.expire_due())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if self.recorder is not None:
            self.recorder.control_event(
                "grant.expired",
                {
                    "grant_id": identity.grant_id,
                    "agent": identity.agent,
                    "task": identity.task,
                    "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
                    "by": "pgwitness (expiry)",
                },
            )


class GrantLease:
    """One live session's hold on its grant. ``terminate(cause, message, sqlstate)`` ends
    the session; ``srec`` (or None: not recording) gets ``grant_extended``."""

    def __init__(self, identity: Identity, watch: GrantWatch, terminate: Callable[[EndCause, str, str], None], srec):
        self.identity = identity
        self._watch = watch
        self._terminate = terminate
        self._srec = srec
        self._timer: asyncio.TimerHandle | None = None
        if identity.expires_at is not None:
            self._schedule_expiry(identity.expires_at)

    def _schedule_expiry(self, expires_at: datetime) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = (expires_at - datetime.now(UTC)).total_seconds()
        self._timer = loop.call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        ident = self.identity
        assert ident.expires_at is not None  # scheduled only for a grant that expires
        if ident.expires_at > datetime.now(UTC):
            # the loop's timer (libuv: milliseconds) may fire before the wall clock gets
            # there, and the store would not yet count the grant as expired: wait again
            self._schedule_expiry(ident.expires_at)
            return
        self._watch.grant_expired(ident)
        self._terminate(
            EndCause.EXPIRED,
            f"terminating connection: grant {ident.grant_id} for task {ident.task} expired",
            ADMIN_SHUTDOWN,
        )

    def changed(self, grant) -> None:
        """The store says this session's grant changed: revoked ends it, extended moves expiry."""
        status = grant.status(datetime.now(UTC))
        if status == "revoked":
            if self._srec is not None:
                # where the revocation is recorded (its control stream, named by the store):
                # this session's own signed record of it, so the stream cannot vanish unseen
                self._srec.event(
                    "grant_revoked",
                    {
                        "grant_id": grant.id,
                        "by": grant.revoked_by,
                        "at": grant.revoked_at.isoformat() if grant.revoked_at else None,
                        "stream": grant.revoked_stream,
                    },
                )
            self._terminate(
                EndCause.REVOKED,
                f"terminating connection: grant {grant.id} for task {grant.task} was revoked",
                ADMIN_SHUTDOWN,
            )
        elif status == "expired":
            self._expired()
        elif grant.expires_at != self.identity.expires_at:
            old = self.identity.expires_at
            self.identity = dataclasses.replace(self.identity, expires_at=grant.expires_at)
            if self._srec is not None:
                self._srec.event(
                    "grant_extended",
                    {
                        "grant_id": grant.id,
                        "from": str(old),
                        "to": grant.expires_at.isoformat(),
                        "stream": grant.extended_stream,  # where the extension is recorded
                    },
                )
            self._schedule_expiry(grant.expires_at)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
