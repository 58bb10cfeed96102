"""proxy.handoff: the supervisor hands each connection to the least loaded worker.

Real descriptors over real ``SOCK_SEQPACKET`` pairs; the connections are Unix stream
sockets (a unit test may not listen on an Internet address; the descriptor passing is
the same)."""

from __future__ import annotations

import socket

import pytest

from proxy.handoff import Dispatcher, LeastLoaded, Receiver, channel_pair


def test_least_loaded_takes_turns_on_ties_and_prefers_the_fewest():
    b = LeastLoaded(3)
    picks = []
    for _ in range(6):
        w = b.order()[0]
        b.handed(w)
        picks.append(w)
    assert picks == [0, 1, 2, 0, 1, 2]
    b.ended(1, 2)  # worker 1's two connections ended
    assert b.order()[0] == 1
    b.handed(1)
    assert b.order()[0] == 1  # still the fewest (1 against 2 and 2)
    b.gone[1] = True
    assert 1 not in b.order()
    b.ended(0, 99)  # more endings than it was handed: never below zero
    assert b.open[0] == 0


class World:
    """A supervisor's dispatcher with ``n`` workers' receivers, and a Unix listener."""

    def __init__(self, tmp_path, n: int = 2):
        self.path = str(tmp_path / "listen.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        listener.setblocking(False)
        pairs = [channel_pair() for _ in range(n)]
        self.dispatcher = Dispatcher([listener], [ours for ours, _ in pairs])
        self.receivers = [Receiver(theirs, ("test", 0)) for _, theirs in pairs]
        self.served: list[list[socket.socket]] = [[] for _ in range(n)]
        self.orphaned = [False] * n
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(self.path)
        self.clients.append(c)
        return c

    def turn(self) -> None:
        """The supervisor accepts and hands on; each worker takes what it was given."""
        self.dispatcher.poll(0.2)
        for i, r in enumerate(self.receivers):
            r.receive(self.served[i].append, lambda i=i: self.orphaned.__setitem__(i, True))

    def end(self, worker: int, k: int) -> None:
        """Worker ``worker`` ends ``k`` of its connections and says so."""
        for _ in range(k):
            self.served[worker].pop().close()
            self.receivers[worker].ended()
        self.dispatcher.poll(0.2)

    def close(self):
        for group in self.served:
            for s in group:
                s.close()
        for c in self.clients:
            c.close()
        for r in self.receivers:
            r.close()
        self.dispatcher.close()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_connections_arrive_whole_and_balanced(world):
    for _ in range(6):
        world.connect()
        world.turn()
    assert [len(s) for s in world.served] == [3, 3]
    assert world.dispatcher.balance.open == [3, 3]
    # a handed descriptor is the client's connection itself: bytes go both ways
    first = world.clients[0]
    served = world.served[0][0]
    first.sendall(b"ping")
    assert served.recv(4) == b"ping"
    served.sendall(b"pong")
    assert first.recv(4) == b"pong"


def test_the_next_connection_goes_to_the_worker_with_fewest_not_the_next_in_turn(world):
    for _ in range(4):
        world.connect()
        world.turn()
    assert [len(s) for s in world.served] == [2, 2]
    world.end(0, 2)  # worker 0's sessions end; worker 1 still has two
    assert world.dispatcher.balance.open == [0, 2]
    for _ in range(2):
        world.connect()
        world.turn()
    assert [len(s) for s in world.served] == [2, 2]  # turn order would have given 1 and 3


def test_a_full_channel_passes_the_connection_to_the_next_worker(world):
    # worker 0 takes nothing: its channel fills up; it stays the least loaded on paper
    d = world.dispatcher
    chan0 = d.channels[0]
    filled = 0
    while True:
        a, b = socket.socketpair()
        try:
            socket.send_fds(chan0, [b"c"], [a.fileno()])
            filled += 1
        except BlockingIOError:
            break
        finally:
            a.close()
            b.close()
    assert filled > 0
    d.balance.open = [0, 5]
    conn = world.connect()
    d.poll(0.2)
    world.receivers[1].receive(world.served[1].append, lambda: None)
    assert len(world.served[1]) == 1
    assert d.balance.open == [0, 6]
    conn.sendall(b"x")
    assert world.served[1][0].recv(1) == b"x"


def test_a_gone_worker_gets_nothing_and_no_connection_is_lost(world):
    world.receivers[0].close()  # worker 0 exited: its end of the channel is closed
    for _ in range(3):
        world.connect()
        world.turn()
    assert len(world.served[1]) == 3
    assert world.dispatcher.balance.gone == [True, False]


def test_no_worker_can_take_it_then_it_is_closed_and_counted(world):
    for r in world.receivers:
        r.close()
    c = world.connect()
    world.dispatcher.poll(0.2)
    assert world.dispatcher.dropped == 1
    c.settimeout(2)
    assert c.recv(1) == b""  # closed, not left hanging


def test_a_worker_whose_supervisor_is_gone_is_told(world):
    for chan in world.dispatcher.channels:
        chan.close()
    for i, r in enumerate(world.receivers):
        r.receive(world.served[i].append, lambda i=i: world.orphaned.__setitem__(i, True))
    assert world.orphaned == [True, True]
    world.receivers[0].ended()  # reporting to a gone supervisor is not an error


def test_a_workers_catalog_news_reaches_every_other_worker_and_counts_no_connection(tmp_path):
    """DDL through one worker (proxy.catalog_loader: its ``tell``): the supervisor passes
    the news to every other live worker, not back to the sender, and its bytes (a '-' in
    a name included) are never read as connections ended."""
    w = World(tmp_path, n=3)
    try:
        for _ in range(3):
            w.connect()
            w.turn()
        assert w.dispatcher.balance.open == [1, 1, 1]
        news = b'{"kind": "ddl", "db": "app-db", "removed": [["public.t-1", "a-b"]]}'
        heard: list[list[bytes]] = [[] for _ in range(3)]
        w.receivers[0].tell(news)
        w.dispatcher.poll(0.2)
        for i, r in enumerate(w.receivers):
            r.receive(w.served[i].append, lambda: None, heard[i].append)
        assert heard == [[], [news], [news]]
        assert w.dispatcher.balance.open == [1, 1, 1]  # no '-' counted as an ending
        assert w.dispatcher.relayed == 2
        # a gone worker is skipped; the rest still hear
        w.receivers[2].close()
        w.dispatcher.poll(0.2)
        w.receivers[1].tell(news)
        w.dispatcher.poll(0.2)
        w.receivers[0].receive(w.served[0].append, lambda: None, heard[0].append)
        assert heard[0] == [news]
    finally:
        w.close()


def _fill(chan: socket.socket) -> int:
    """Send filler packets on ``chan`` until its queue is full: how many went."""
    sent = 0
    while True:
        try:
            chan.send(b"\x00" * 512)
            sent += 1
        except BlockingIOError:
            return sent


def _drain(chan: socket.socket) -> None:
    chan.setblocking(False)
    while True:
        try:
            chan.recv(1 << 16)
        except BlockingIOError:
            return


def test_news_a_full_channel_did_not_take_is_sent_in_order_once_it_drains(tmp_path):
    """Session 27 (round 47's residue): news was dropped with a warning when a channel was
    full, so a worker could miss another's code window or DDL. Both directions now keep it
    in order until the channel drains (``Receiver.outbox``, ``Dispatcher.outboxes``)."""
    w = World(tmp_path, n=2)
    try:
        first, second = b'{"kind": "code", "db": "a"}', b'{"kind": "code", "db": "b"}'
        # worker 0 -> supervisor full: the worker keeps its news
        assert _fill(w.receivers[0].channel) > 0
        w.receivers[0].tell(first)
        w.receivers[0].tell(second)
        assert len(w.receivers[0].outbox) == 2
        _drain(w.dispatcher.channels[0])  # the supervisor read the filler
        w.receivers[0].ended()  # (any call flushes; so does receive and housekeeping)
        assert not w.receivers[0].outbox
        # supervisor -> worker 1 full: the supervisor keeps it for worker 1
        assert _fill(w.dispatcher.channels[1]) > 0
        w.dispatcher.poll(0.2)  # reads worker 0's news, cannot pass it on yet
        assert list(w.dispatcher.outboxes[1]) == [b"d" + first, b"d" + second]
        assert w.dispatcher.relayed == 2
        _drain(w.receivers[1].channel)  # worker 1 read its filler
        w.dispatcher.poll(0.2)  # and the supervisor's next turn sends the rest
        assert not w.dispatcher.outboxes[1]
        heard: list[bytes] = []
        w.receivers[1].receive(w.served[1].append, lambda: None, heard.append)
        assert heard == [first, second]
    finally:
        w.close()
