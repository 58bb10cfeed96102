"""Bounded memos of pure functions of a name (the lexer's name rendering and splitting, the
function catalogue's checks), asked several times per statement on a cache miss.

A memo is emptied when full rather than kept in LRU order: names that matter come back at
once, and a client sending ever new names costs a refill, never memory."""

from __future__ import annotations

from typing import Any

__all__ = ["MEMO_SIZE", "memo_put"]

MEMO_SIZE = 4096


def memo_put(memo: dict, key: Any, value: Any, size: int = MEMO_SIZE) -> None:
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
