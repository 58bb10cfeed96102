"""The listener: accept, pre-login limits, the worker's shared services, shutdown.

A connection's own life is in ``proxy.connection`` (its handshake in ``proxy.handshake``,
back-pressure in ``proxy.flow``); the grants of live sessions are followed by
``proxy.grant_watch``. ``asyncio.Protocol`` is used on the hot path (no streams), and each
side's ``pause_writing`` pauses reading on the other side, so a slow reader never makes
the proxy buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, cast

from common import compiled
from common.config import Config, parse_hostport
from common.wire.errors import ADMIN_SHUTDOWN, CANNOT_CONNECT_NOW, TOO_MANY_CONNECTIONS, Refused
from common.wire.framing import CancelRequest

from . import metrics
from .auth import FailureThrottle
from .catalog_loader import CatalogLoader
from .causes import EndCause
from .connection import ClientConnection
from .grant_watch import GrantWatch
from .handshake import server_ssl_context
from .limits import FrameBudget, PreLoginBudget
from .logs import event
from .refusals import RefusalLog
from .upstream import Credentials, UpstreamError, send_cancel
from .upstream_pool import UpstreamPool

if TYPE_CHECKING:
    from .handoff import Receiver


class ProxyServer:
    """One worker's listener, its live sessions, and the services they share."""

    def __init__(self, cfg: Config, authenticator, *, recorder=None, grant_store=None, policy_factory=None):
        self.cfg = cfg
        self.authenticator = authenticator
        self.recorder = recorder
        self.grant_store = grant_store
        self.policy_factory = policy_factory  # Identity -> StatementPolicy | None
        self.credentials = Credentials(cfg)
        from .provision import RoleLogins

        self.role_logins = RoleLogins(cfg, self.credentials)  # grant -> its upstream login
        # column syntax: x.fn is a call?
        self.catalogs = CatalogLoader(
            cfg, self.credentials, min_interval=cfg.upstream.catalog_min_interval
        )
        self.ssl_context = server_ssl_context(cfg)
        self.throttle = FailureThrottle(
            cfg.proxy.auth_fail_delay, cfg.proxy.auth_fail_window, cfg.proxy.auth_fail_max_delay,
            per_address=cfg.proxy.auth_concurrency_per_address,
        )
        self.connections: set[ClientConnection] = set()
        self.admitted = 0  # connections past the startup packet: what max_connections limits
        # Before the startup packet a connection holds a place of its own (never one of
        # max_connections), and frames read whole share one memory budget (proxy/limits.py).
        self.prelogin = PreLoginBudget(cfg.proxy.prelogin_max, cfg.proxy.prelogin_per_address)
        self.frame_budget = FrameBudget(cfg.proxy.frame_memory_bytes)
        self.refusals = RefusalLog(recorder, cfg.proxy.refusal_events_per_second)
        self._recorder_metrics = metrics.RecorderExporter()
        self.accepting = True
        self._server: asyncio.AbstractServer | None = None
        self._handoff: Receiver | None = None  # connections from the supervisor (workers > 1)
        self._handing: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []
        self._cancels: set[asyncio.Task] = set()
        self.grant_watch = GrantWatch(cfg, grant_store, recorder, self._cancels)
        self.speculating = 0  # upstream logins started before the client's proof (Handshake._speculate)
        # sessions that ended cleanly, reset and kept for the same grant's next login
        self.upstream_pool = UpstreamPool(cfg.upstream.reuse_idle_seconds, cfg.upstream.reuse_max_idle)

    async def start(self, *, handoff: Receiver | None = None) -> tuple[str, int]:
        """Listen on ``proxy.listen``, or take the connections the supervisor hands over
        ``handoff`` (``proxy.handoff``); the address, once serving."""
        # Real values before the first client (a recorder_healthy of 0 would page someone).
        self._update_gauges()
        loop = asyncio.get_running_loop()
        if handoff is None:
            host, port = parse_hostport("proxy.listen", self.cfg.proxy.listen)
            self._server = await loop.create_server(
                lambda: ClientConnection(self), host, port, backlog=1024
            )
            addr = self._server.sockets[0].getsockname()
        else:
            self._handoff = handoff
            self.catalogs.tell = handoff.tell  # DDL through this worker: the others follow
            loop.add_reader(
                handoff.channel.fileno(), handoff.receive, self._take, self._orphaned,
                self.catalogs.news,
            )
            addr = handoff.address
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(_watch_loop_lag()))
        if self.grant_store is not None:
            from .grant_census import watch_grants_census

            self._tasks.append(asyncio.create_task(watch_grants_census(self.grant_store)))
        hot_path = compiled.status()  # common/compiled.py: mypyc build, or the sources and why
        event("listening", host=addr[0], port=addr[1],
              hot_path="compiled" if hot_path.compiled else f"pure Python: {hot_path.reason}")
        return addr[0], addr[1]

    def _take(self, sock: socket.socket) -> None:
        """A connection the supervisor accepted: served as if this worker had."""
        task = asyncio.get_running_loop().create_task(self._serve_handed(sock))
        self._handing.add(task)  # referenced until done (the loop keeps weak references)
        task.add_done_callback(self._handing.discard)

    async def _serve_handed(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: ClientConnection(self), sock
            )
        except OSError as exc:  # the client left before its transport was made
            sock.close()
            self.released()
            event("a handed connection could not be served", logging.DEBUG, error=str(exc))

    def released(self) -> None:
        """A connection has ended (``ClientConnection.connection_lost``): the supervisor
        counts it, to hand the next ones to the least loaded worker."""
        if self._handoff is not None:
            self._handoff.ended()

    def _orphaned(self) -> None:
        """The supervisor is gone: no connection will come; shut down as on SIGTERM."""
        event("the supervisor has gone: shutting down", logging.WARNING)
        os.kill(os.getpid(), signal.SIGTERM)

    def accept(self, conn: ClientConnection) -> Refused | None:
        """A new connection: refused while shutting down, or when its address holds too
        many places before the startup packet; otherwise it holds one such place (the
        oldest connection waiting for its startup packet may be evicted to make room)."""
        if not self.accepting:
            return Refused("the database system is shutting down", CANNOT_CONNECT_NOW, reason="shutting_down")
        admitted, evicted = self.prelogin.admit(conn, conn.addr)
        if not admitted:
            # One address's unauthenticated connections are capped; logins in progress and
            # sessions hold other places, so they are never displaced by these.
            return Refused(
                f"too many connections from {conn.addr} that have not sent a startup packet "
                f"(proxy.prelogin_per_address = {self.cfg.proxy.prelogin_per_address})",
                TOO_MANY_CONNECTIONS,
                outcome="prelogin_refused",
                reason="prelogin_per_address",
            )
        if evicted is not None:
            cast(ClientConnection, evicted).evict()  # the budget holds our connections
        return None

    async def _housekeeping(self) -> None:
        """About once a second: metrics, recorder health, grant revocations and extensions."""
        interval = self.cfg.grants.poll_interval if self.grant_store is not None else 1.0
        last_flush = time.monotonic()
        last_expiry = 0.0
        self.grant_watch.start()
        while True:
            await asyncio.sleep(min(interval, 1.0))
            now = time.monotonic()
            if now - last_flush >= 1.0:
                last_flush = now
                if self._handoff is not None and self._handoff.outbox:
                    self._handoff.flush()  # catalog news a full channel held back
                self.refusals.tick()
                self._update_gauges()
            if self.grant_store is not None:
                try:
                    await self.grant_watch.poll(self.connections)
                except Exception:  # the store may be briefly unreachable; keep serving
                    logging.getLogger("pgwitness").exception("grant watch failed")
                if now - last_expiry >= 1.0:
                    last_expiry = now
                    await self.grant_watch.expire_due()

    def _update_gauges(self) -> None:
        for conn in list(self.connections):
            live = conn.live
            if live is not None:
                metrics.flush(live.relay.counters, live.identity.agent)
        grants = {c.identity.grant_id for c in self.connections if c.identity is not None}
        metrics.GRANTS_ACTIVE.set(len(grants))
        if self.recorder is not None:
            self._recorder_metrics.update(self.recorder.status)

    def grant_backends(self, grant_id: str) -> frozenset[int]:
        """The upstream backend pids of the live sessions of grant ``grant_id`` in this
        worker: what its sessions may signal (``StatementPolicy.own_backends``). Another
        worker's sessions are not among them (refused: fail closed)."""
        return frozenset(
            conn.live.backend_key[0]
            for conn in self.connections
            if conn.live is not None and conn.identity is not None
            and conn.identity.grant_id == grant_id
        )  # fmt: skip

    def cancel_upstream(self, pid: int, secret: bytes) -> None:
        """Fire-and-forget CancelRequest upstream (used when we end a busy session)."""
        self._send_cancel(pid, secret, "cancel of a busy upstream failed")

    def _send_cancel(self, pid: int, secret: bytes, failed: str) -> asyncio.Task:
        """A CancelRequest upstream, as a task of the server's own: it is sent whatever
        happens to the connection that asked (a client closing at once after its
        CancelRequest, as PostgreSQL acts on one it has read), and shutdown waits for it."""

        async def go() -> None:
            try:
                await send_cancel(self.cfg, pid, secret)
            except (TimeoutError, OSError, UpstreamError) as exc:
                event(failed, logging.WARNING, error=str(exc))

        task = asyncio.get_running_loop().create_task(go())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        return task

    async def forward_cancel(self, packet: CancelRequest, peer: str) -> None:
        """A client's CancelRequest: noted in the recording of the session it names (if
        this worker holds it), and forwarded whatever worker does: the server checks the
        secret key. The forward goes on if the asking connection closes meanwhile (s35
        audit round 4: a sender closing right after its request cancelled the forward with
        the handshake, and the statement ran to its end)."""
        for conn in self.connections:
            if conn.backend_key == (packet.pid, packet.secret) and conn.srec is not None:
                conn.srec.event("cancel", {"from": peer})
        await asyncio.shield(self._send_cancel(packet.pid, packet.secret, "cancel forward failed"))

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; let sessions finish until the deadline; then FATAL 57P01."""
        grace = self.cfg.proxy.shutdown_grace if grace is None else grace
        self.accepting = False  # from here on no session's upstream is kept (LiveConnection)
        self.upstream_pool.close()
        self.catalogs.close()
        if self._server is not None:
            self._server.close()
        if self._handoff is not None:
            asyncio.get_running_loop().remove_reader(self._handoff.channel.fileno())
            self._handoff.close()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.terminate(EndCause.SHUTDOWN, "terminating connection: pgwitness is shutting down", ADMIN_SHUTDOWN)
        await asyncio.sleep(0)
        if self._cancels:  # busy sessions' queries must be cancelled before we exit
            await asyncio.wait(set(self._cancels), timeout=3)
        for task in self._tasks:
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


async def _watch_loop_lag(period: float = 0.1) -> None:
    """Ten times a second, how late the timer fired: the worker's stall, as a histogram."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(period)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, time.monotonic() - start - period))
