"""The floor: the least a Python proxy can do, as a reference for pgwitness's overhead.

    .venv/bin/python bench/floor_proxy.py LISTEN_PORT UPSTREAM_PORT

A byte pump on uvloop and ``asyncio.Protocol``: every client connection gets one upstream
connection and bytes are copied both ways unchanged (the client authenticates to Postgres
itself). No framing, no policy, no recording, no metrics. Whatever pgwitness adds on top of
this is the cost of its own work; what this adds on top of direct Postgres is the cost of
being a Python process in the path at all. Used by ``pgbench_compare.py --targets floor``.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys


class _Pump(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pump | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # back-pressure: a slow reader pauses the other side
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def main(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()

    def client_factory() -> _Pump:
        client = _Pump()

        async def connect() -> None:
            try:
                _, server = await loop.create_connection(_Pump, "127.0.0.1", upstream_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            server.peer, client.peer = client, server
            for chunk in client.pending:
                server.transport.write(chunk)
            client.pending.clear()

        loop.create_task(connect())
        return client

    srv = await loop.create_server(client_factory, "127.0.0.1", listen_port, reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"floor proxy listening on 127.0.0.1:{listen_port}", flush=True)
    await stop
    srv.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
