"""Workers get their connections from the supervisor, to the least loaded first.

With ``proxy.workers > 1`` the supervisor (``proxy.supervisor``) owns the listening
sockets: it accepts each connection and passes its descriptor (``SCM_RIGHTS`` over a
``SOCK_SEQPACKET`` pair, one per worker) to the worker holding the fewest connections, and
each worker says when one of them has ended (a byte per connection). The kernel's
``SO_REUSEPORT`` hash, used before, spread connections by their addresses and ports, not
by load: eight pgbench connections landed 5/3 or 6/2 as often as 4/4, and a few long agent
sessions could share one worker's event loop while another sat idle
(docs/decisions.md, "Connections go to the least loaded worker").

``LeastLoaded`` is the choice, sans-IO; ``Dispatcher`` is the supervisor's side (accept,
send, count), ``Receiver`` the worker's (take, report).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
from collections import deque
from collections.abc import Callable

# A handed connection is one message: this byte and the descriptor.
_HANDED = b"c"
# A worker's word that one of its connections has ended.
_ENDED = b"-"
# A worker's word that DDL through it changed a database's catalog (this byte, then the
# news: ``catalog_loader.CatalogLoader.news``): the supervisor passes it to every other
# worker, whose catalog snapshots follow at once (a session prepared in one worker is
# decided again after DDL in another, a column renamed in one is gone in all).
CATALOG = b"d"
_MAX_PACKET = 1 << 16
# catalog news waiting for a full channel to drain, per channel: beyond it the oldest is
# dropped with an error (a worker that has not read its channel for that long is stuck)
_MAX_OUTBOX = 10_000
ACCEPTS_PER_WAKE = 64  # then the workers' reports get a turn


class LeastLoaded:
    """Which worker takes the next connection: the fewest open, ties in turn."""

    __slots__ = ("open", "gone", "_next")

    def __init__(self, workers: int) -> None:
        self.open = [0] * workers  # handed and not yet reported ended
        self.gone = [False] * workers  # its channel closed: it takes nothing more
        self._next = 0  # where ties start: the worker after the last one picked

    def order(self) -> list[int]:
        """Workers that may take a connection, the best first."""
        n = len(self.open)
        start = self._next
        live = [(i + start) % n for i in range(n) if not self.gone[(i + start) % n]]
        return sorted(live, key=self.open.__getitem__)  # stable: ties keep the turn order

    def handed(self, worker: int) -> None:
        self.open[worker] += 1
        self._next = (worker + 1) % len(self.open)

    def ended(self, worker: int, count: int) -> None:
        self.open[worker] = max(0, self.open[worker] - count)


def listeners(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port`` (every address the name
    resolves to, as ``loop.create_server`` binds them); OSError if one cannot be had."""
    infos = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    out: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, type_, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end) of one worker's channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Dispatcher:
    """The supervisor's side: accepts on ``listening`` and hands each connection on."""

    def __init__(self, listening: list[socket.socket], channels: list[socket.socket]) -> None:
        self.listening = listening
        self.channels = channels
        self.balance = LeastLoaded(len(channels))
        self.selector = selectors.DefaultSelector()
        for sock in listening:
            self.selector.register(sock, selectors.EVENT_READ, None)
        for i, chan in enumerate(channels):
            chan.setblocking(False)
            self.selector.register(chan, selectors.EVENT_READ, i)
        self.dropped = 0  # connections no worker could take (every channel full or gone)
        self.relayed = 0  # catalog news passed on (worker to worker)
        # news for a worker whose channel was full: sent in order once it drains (each
        # turn), never dropped: a worker that misses another's code window or DDL decides
        # on what it does not know (red-team round 47's residue)
        self.outboxes: list[deque[bytes]] = [deque() for _ in channels]

    def watch(self, sock: socket.socket) -> None:
        """Also wake for ``sock`` (the supervisor's signal wake-up socket)."""
        self.selector.register(sock, selectors.EVENT_READ, -1)

    def stop_accepting(self) -> None:
        """Close the listening sockets: new connections are refused by the kernel."""
        for sock in self.listening:
            self.selector.unregister(sock)
            sock.close()
        self.listening = []

    def poll(self, timeout: float) -> None:
        """One turn: accept what waits, hand it on, read the workers' reports."""
        for worker, box in enumerate(self.outboxes):
            if box and not self.balance.gone[worker]:
                self._flush(worker)
        wait = min(timeout, 0.05) if any(self.outboxes) else timeout  # (news to retry)
        for key, _mask in self.selector.select(wait):
            worker = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if worker is None:
                self._accept(sock)
            elif worker >= 0:
                self._reports(worker, sock)
            else:  # the wake-up socket: drained, the caller looks at its flags
                try:
                    sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    pass

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ECONNABORTED, ...: the next one may do
                logging.getLogger("pgwitness").warning("accept failed: %s", exc)
                return
            with conn:
                self.hand(conn)

    def hand(self, conn: socket.socket) -> int | None:
        """Pass ``conn`` to the least loaded worker that takes it: its number, or None."""
        for worker in self.balance.order():
            try:
                socket.send_fds(self.channels[worker], [_HANDED], [conn.fileno()])
            except (BlockingIOError, InterruptedError):
                continue  # its queue is full: the next best
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    raise
                self._gone(worker)
                continue
            self.balance.handed(worker)
            return worker
        self.dropped += 1
        logging.getLogger("pgwitness").warning(
            "no worker could take a connection (every channel full or closed): closed"
        )
        return None

    def _reports(self, worker: int, chan: socket.socket) -> None:
        while True:
            try:
                data = chan.recv(_MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._gone(worker)
                return
            if data[:1] == CATALOG:
                self.relayed += self._tell_others(worker, data)
            else:
                self.balance.ended(worker, data.count(_ENDED))

    def _tell_others(self, source: int, data: bytes) -> int:
        """Pass a worker's catalog news to every other live worker (after the news waiting
        for it, if its channel was full): how many it is for."""
        told = 0
        for worker in range(len(self.channels)):
            if worker == source or self.balance.gone[worker]:
                continue
            _queue(self.outboxes[worker], data, f"worker {worker}")
            told += 1
            self._flush(worker)
        return told

    def _flush(self, worker: int) -> None:
        """Send worker ``worker`` its waiting news, in order, as far as its channel takes."""
        if not _send_waiting(self.outboxes[worker], self.channels[worker]):
            self._gone(worker)

    def _gone(self, worker: int) -> None:
        self.outboxes[worker].clear()
        if not self.balance.gone[worker]:
            self.balance.gone[worker] = True
            self.selector.unregister(self.channels[worker])

    def close(self) -> None:
        self.stop_accepting()
        for chan in self.channels:
            chan.close()
        self.selector.close()


class Receiver:
    """A worker's side: connections arrive on ``channel``; ``ended`` reports one gone.

    ``take(sock)`` serves each arriving connection; ``orphaned()`` is called if the
    supervisor is gone (no more connections will come); ``news(data)`` gets another
    worker's catalog news (``CATALOG``), and ``tell`` sends this worker's."""

    def __init__(self, channel: socket.socket, address: tuple[str, int]) -> None:
        channel.setblocking(False)
        self.channel = channel
        self.address = address  # the supervisor's listening address, for the log
        self._owed = 0  # ended connections not yet reported (the channel was full)
        self._closed = False
        # this worker's news the full channel did not take yet: sent in order first
        self.outbox: deque[bytes] = deque()

    def receive(
        self,
        take: Callable[[socket.socket], None],
        orphaned: Callable[[], None],
        news: Callable[[bytes], None] | None = None,
    ) -> None:
        """Everything waiting on the channel (call when it is readable)."""
        if self.outbox:
            self.flush()
        while not self._closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.channel, _MAX_PACKET, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:
                self.close()
                orphaned()
                return
            for fd in fds:
                take(socket.socket(fileno=fd))
            if data[:1] == CATALOG and news is not None:
                news(data[1:])

    def tell(self, data: bytes) -> None:
        """This worker's catalog news, for the others (through the supervisor)."""
        if self._closed or len(data) + 1 > _MAX_PACKET:
            return
        _queue(self.outbox, CATALOG + data, "the supervisor")
        self.flush()

    def flush(self) -> None:
        """Send the waiting news, in order, as far as the channel takes it (also called by
        ``receive``, ``ended`` and the server's housekeeping: a full channel drains)."""
        if not self._closed and not _send_waiting(self.outbox, self.channel):
            self._closed = True  # the supervisor is gone

    def ended(self) -> None:
        """One handed connection has ended (its ``connection_lost``)."""
        if self._closed:
            return
        if self.outbox:
            self.flush()
        self._owed += 1
        try:
            self._owed -= self.channel.send(_ENDED * self._owed)
        except (BlockingIOError, InterruptedError):
            pass  # said with the next one
        except OSError:
            self._closed = True  # the supervisor is gone

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.channel.close()


def _queue(box: deque[bytes], data: bytes, to: str) -> None:
    """``data`` at the end of ``box``; a box at its bound loses its oldest, loudly."""
    if len(box) >= _MAX_OUTBOX:
        box.popleft()
        logging.getLogger("pgwitness").error(
            "catalog news for %s dropped: %d waiting on a channel that is not read", to, len(box)
        )
    elif box:
        logging.getLogger("pgwitness").debug("catalog news for %s waits (channel full)", to)
    box.append(data)


def _send_waiting(box: deque[bytes], chan: socket.socket) -> bool:
    """Send ``box``'s news on ``chan`` in order until the channel is full. False: the other
    end is gone (what waited is dropped)."""
    while box:
        try:
            chan.send(box[0])
        except (BlockingIOError, InterruptedError):
            return True  # full: the rest waits for the next try
        except OSError:
            box.clear()
            return False
        box.popleft()
    return True
