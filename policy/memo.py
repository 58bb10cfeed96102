"""Bounded memos of pure functions of a name (the lexer's name rendering and splitting, the
function catalogue's checks), asked several times per statement on a cache miss.

A memo is emptied when full rather than kept in LRU order: names that matter come back at
once, and a client sending ever new names costs a refill, never memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MEMO_SIZE", "memo_put", "memoized"]

T = TypeVar("T")

MEMO_SIZE = 4096


def memo_put(memo: dict, key: Any, value: Any, size: int = MEMO_SIZE) -> None:
    if len(memo) >= size:
        memo.clear()
    memo[key] = value


def memoized(fn: Callable[[str], T], max_len: int) -> Callable[[str], T]:
    """``fn`` (pure, never None) answered from a bounded memo for names of at most
    ``max_len`` characters; longer ones are computed every time."""
    memo: dict[str, T] = {}

    def lookup(name: str) -> T:
        found = memo.get(name)
        if found is None:
            found = fn(name)
            if len(name) <= max_len:
                memo_put(memo, name, found)
        return found

    lookup.__doc__ = fn.__doc__
    return lookup
