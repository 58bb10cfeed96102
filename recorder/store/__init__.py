"""Append-only object stores: local directory (default) and S3 with Object Lock."""

from __future__ import annotations

import builtins
from typing import Protocol


class StoreError(Exception):
    """The store failed; the writer retries, the verifier reports."""


class ObjectExists(StoreError):
    """The key already holds an object with other content (append-only: never overwritten).
    A put of the same content again (a retry after a lost reply) succeeds instead."""


class ObjectMissing(StoreError):
    """No object under this key."""


class Store(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None:
        """Create `key` once; raise ObjectExists if it exists with other content (the same
        content again is a success: the writer's retry after a lost reply)."""

    def get(self, key: str) -> bytes:
        """The first (locked) version of `key`; ObjectMissing if none."""

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted; delete markers are not keys."""

    def sessions(self) -> builtins.list[str]:
        """Every session directory's name (a session id, unless someone else wrote one: the
        verifier reports those) that holds at least one object, sorted."""

    def check(self, key: str) -> builtins.list[str]:
        """Immutability problems of `key` ([] when it is locked/read-only as required)."""

    # Optional: `history(key) -> list[str]`, attempts the store withstood (S3: delete
    # markers, later versions); verify reports each one.


def open_store(url: str, **s3_options) -> Store:
    """`file:///path` or a plain path → LocalStore; `s3://bucket/prefix` → S3Store."""
    if url.startswith("s3://"):
        from .s3 import S3Store

        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"store URL {url!r}: missing bucket")
        return S3Store(bucket, prefix, **s3_options)
    from .local import LocalStore

    if url.startswith("file://"):
        url = url[len("file://") :]
    if not url:
        raise ValueError("store URL is empty")
    return LocalStore(url)


__all__ = ["ObjectExists", "ObjectMissing", "Store", "StoreError", "open_store"]
