"""A live session's per-message path: socket callbacks to the Relay and back, compiled.

Every read of a live session runs ``Splice.client_data`` (the client's bytes) or
``Splice.server_data`` (the upstream's): the Relay decides what goes where, and this
writes it. It is the only code between the event loop and the compiled relay on every
message, so it is compiled with it (``common.compiled.MODULES``); the connection
(``proxy.connection``) keeps everything that happens once per session or on an error,
and reaches this through the callbacks it passes in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.wire.errors import PgError

from .flow import FRAME_BUDGET_MIN
from .relay import Relay


class Splice:
    """The two directions of one live session (see the module's docstring)."""

    def __init__(
        self,
        relay: Relay,
        *,
        to_server: Callable[[bytes], Any],
        to_client: Callable[[bytes], Any],
        flow: Any,
        client_error: Callable[[PgError], None],
        server_error: Callable[[PgError], None],
        terminated: Callable[[], None],
        held: Callable[[], None],
        recorder: Any = None,
        behind: Callable[[], None] | None = None,
    ) -> None:
        self.relay = relay
        self.to_server = to_server  # the upstream transport's write
        self.to_client = to_client  # the client transport's write
        self.flow = flow  # proxy.flow.FlowControl
        self.client_error = client_error  # the client broke the protocol: end the session
        self.server_error = server_error  # the server did
        self.terminated = terminated  # the client sent Terminate
        self.held = held  # the relay holds frames for a possible injection answer
        self.recorder = recorder  # recorder.writer.Recorder, or None
        self.behind = behind  # the recorder is behind: stop reading until it caught up

    def client_data(self, data: bytes) -> None:
        relay = self.relay
        try:
            to_server, to_client = relay.from_client(data)
        except PgError as exc:
            self.client_error(exc)
            return
        self.deliver(to_server, to_client)
        wanted = relay.client_reader.wanted
        flow = self.flow
        if wanted > FRAME_BUDGET_MIN or flow.frame_reserved:
            flow.frame_memory(wanted)
        rec = self.recorder
        if rec is not None and rec.behind() and self.behind is not None:
            self.behind()

    def deliver(self, to_server: bytes, to_client: bytes) -> None:
        """What the Relay returned for the client's bytes: passed on, then Terminate acted on."""
        if to_server:
            self.to_server(to_server)
        if to_client:
            self.to_client(to_client)
        if self.relay.terminated:
            self.terminated()

    def server_data(self, data: bytes) -> None:
        relay = self.relay
        try:
            out = relay.from_server(data)
        except PgError as exc:
            self.server_error(exc)
            return
        if out:
            self.to_client(out)
        if relay.denials.held:
            self.held()
        rec = self.recorder
        if rec is not None and rec.behind() and self.behind is not None:
            self.behind()
