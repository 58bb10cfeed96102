"""Helpers for tests and benchmarks: Postgres frame builders and a store that can fail."""

from __future__ import annotations

import struct
import threading
import time

from recorder.store import StoreError


def frame(typ: bytes, body: bytes) -> bytes:
    return typ + struct.pack(">i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\x00")


def parse(sql: str, name: str = "") -> bytes:
    return frame(b"P", name.encode() + b"\x00" + sql.encode() + b"\x00" + struct.pack(">h", 0))


def bind(params: list[bytes | None], stmt: str = "") -> bytes:
    body = b"\x00" + stmt.encode() + b"\x00" + struct.pack(">hh", 0, len(params))
    for p in params:
        body += struct.pack(">i", -1) if p is None else struct.pack(">i", len(p)) + p
    return frame(b"B", body + struct.pack(">h", 0))


def execute() -> bytes:
    return frame(b"E", b"\x00" + struct.pack(">i", 0))


def sync() -> bytes:
    return frame(b"S", b"")


def row_description(*names: str) -> bytes:
    body = struct.pack(">h", len(names))
    for n in names:
        body += n.encode() + b"\x00" + struct.pack(">ihihih", 0, 0, 25, -1, -1, 0)
    return frame(b"T", body)


def data_row(*values: str | None) -> bytes:
    body = struct.pack(">h", len(values))
    for v in values:
        body += struct.pack(">i", -1) if v is None else struct.pack(">i", len(v.encode())) + v.encode()
    return frame(b"D", body)


def command_complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\x00")


def ready(status: bytes = b"I") -> bytes:
    return frame(b"Z", status)


def error(code: str, message: str, severity: str = "ERROR") -> bytes:
    body = b"".join(k + v.encode() + b"\x00" for k, v in
                    ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message)))
    return frame(b"E", body + b"\x00")


def notice(message: str) -> bytes:
    body = b"SNOTICE\x00VNOTICE\x00C00000\x00M" + message.encode() + b"\x00\x00"
    return frame(b"N", body)


class FlakyStore:
    """Wraps a store; `down` makes every call fail, `delay` slows every put."""

    def __init__(self, inner, delay: float = 0.0):
        self.inner = inner
        self.url = f"flaky+{inner.url}"
        self.down = False
        self.delay = delay
        self.puts: list[str] = []
        self.failures = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            with self._lock:
                self.failures += 1
            raise StoreError("store is down (test)")
        self.inner.put(key, data)
        with self._lock:
            self.puts.append(key)

    def get(self, key):
        return self.inner.get(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def sessions(self):
        return self.inner.sessions()

    def check(self, key):
        return self.inner.check(key)
