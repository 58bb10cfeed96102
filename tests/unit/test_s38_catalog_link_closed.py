"""A kept catalog login the server ended meanwhile fails a load as a broken connection does
(``proxy.catalog_loader._exchange``; helper 158 saw uvloop's RuntimeError from a write to a
closed transport escape ``CatalogLoader.refresh`` as an unretrieved task exception, the
load's failure event and metric never counted): an OSError, which ``_queries`` answers by
logging in again (a kept login) or failing the load."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from proxy.catalog_loader import _exchange


class _Transport:
    def __init__(self, closing: bool, raises: bool) -> None:
        self.closing, self.raises, self.written = closing, raises, b""

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.raises:  # (uvloop's: "unable to perform operation on <TCPTransport closed=True>")
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.written += data


@pytest.mark.parametrize(("closing", "raises"), [(True, False), (False, True)])
def test_a_write_to_a_closed_login_is_a_connection_error(closing, raises):
    transport = _Transport(closing, raises)
    link = SimpleNamespace(up=SimpleNamespace(transport=transport), prepared={}, inbox=None)
    cfg = SimpleNamespace(proxy=SimpleNamespace(max_message_bytes=1 << 20))
    with pytest.raises(ConnectionError, match="catalog login closed"):
        asyncio.run(_exchange(cfg, link, ("SELECT 1",)))
    assert transport.written == b""
