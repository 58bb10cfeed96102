"""tests/unit: no PostgreSQL, no network, no subprocesses; held here, not only by habit.

Every unit test runs with Internet-family sockets unable to connect or bind and with
``subprocess`` unable to start a process: a test that needs either belongs in
``tests/integration``."""

from __future__ import annotations

import socket
import subprocess

import pytest


def _inet(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


@pytest.fixture(autouse=True)
def _unit_test_boundaries(monkeypatch):
    connect, bind = socket.socket.connect, socket.socket.bind

    def no_connect(self, address):
        if _inet(self):
            raise AssertionError(f"a unit test may not connect to {address!r}: tests/integration")
        return connect(self, address)

    def no_bind(self, address):
        if _inet(self):
            raise AssertionError(f"a unit test may not listen on {address!r}: tests/integration")
        return bind(self, address)

    def no_process(self, args, *rest, **kwargs):
        raise AssertionError(f"a unit test may not start a process {args!r}: tests/integration")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    monkeypatch.setattr(socket.socket, "bind", no_bind)
    monkeypatch.setattr(subprocess.Popen, "_execute_child", no_process)
