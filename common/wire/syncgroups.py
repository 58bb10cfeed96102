"""Which client messages the server is answering now: Sync groups, from message codes alone.

Sans-IO and payload-blind. The relay tells ``SyncGroups`` the type code of every client
message it sends upstream (``sent``) and of the server messages that move the state
(``ready``, ``copy_in``, and while ``counting``: ``answer``/``error``); nothing here reads a
message's body. Everything that moves the state lives in this module (h11's ``_state.py``
is the model).

A *Sync group* is what the server ends with one ReadyForQuery: the messages up to and
including a Sync, a simple Query or a FunctionCall. ``groups[0]`` is the group the server
is answering, ``groups[-1]`` the one the client is still adding to. The relay attaches
opaque items to the group being built (``attach``: the denial injections, see
``proxy.denials``); ``ready`` hands back the items of the group a ReadyForQuery ended.

The rules tracked, as PostgreSQL applies them:

- an error in an extended-protocol message makes the server skip every client message,
  Query and FunctionCall included, up to the next Sync: the groups a skipped Query or
  FunctionCall would have ended merge into the Sync's (one ReadyForQuery for all). This is
  only tracked once a group mixes extended messages with a Query or FunctionCall (plain
  pipelines end every group with Sync; a simple Query's own error skips nothing);
- in copy-in mode the server ignores Sync, so Syncs sent after the Execute that began
  COPY end no group of their own (``copy_in``);
- Flush and the other messages that produce no ReadyForQuery only add to the open group.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from mypy_extensions import mypyc_attr

from . import messages as m

F = m.Frontend
# Client messages that end a Sync group (the server answers each with ReadyForQuery).
_Z_PRODUCERS: Final = frozenset((F.QUERY, F.SYNC, F.FUNCTION_CALL))
# Extended-protocol messages that the server answers with exactly one of ANSWERS (or an
# error, after which it skips everything, Query and FunctionCall included, up to Sync).
_EXTENDED: Final = frozenset((F.PARSE, F.BIND, F.DESCRIBE, F.EXECUTE, F.CLOSE))
ANSWERS: Final = frozenset(b"123nTCIs")
_QUERY: Final = F.QUERY
_SYNC: Final = F.SYNC
_EXECUTE: Final = F.EXECUTE
_BIND: Final = F.BIND
# client messages that may run code on the server
_RUNS: Final = frozenset((F.QUERY, F.EXECUTE, F.BIND, F.FUNCTION_CALL))
_COPY_DONE: Final = F.COPY_DONE
_COPY_FAIL: Final = F.COPY_FAIL
_COPY_END: Final = frozenset((_COPY_DONE, _COPY_FAIL))
_NONE: tuple = ()


@mypyc_attr(native_class=False)  # a list subclass: an ordinary class when compiled
class QueryEnded(list):
    """A Sync group ended by a Query or FunctionCall rather than a Sync; ``extended`` counts
    the extended-protocol messages before it. If one of those fails, the server skips the
    Query too, and every group up to the next Sync gets a single ReadyForQuery."""

    __slots__ = ("extended",)

    def __init__(self, items: list, extended: int):
        super().__init__(items)
        self.extended = extended


class SyncGroups:
    """The Sync groups in flight on one connection (see the module's docstring)."""

    __slots__ = (
        "groups", "query_ended", "watch_head", "head_answered", "skipping", "sent_groups",
        "answered", "_current_has_msgs", "_current_extended", "_syncs_since_execute", "_copy_in",
        "ran", "_early_ends",
    )  # fmt: skip

    def __init__(self) -> None:
        # Each group lists the items attached to it (``attach``).
        self.groups: deque[list] = deque([[]])
        self._current_has_msgs = False
        self._current_extended = 0  # extended messages in the group being built
        self.query_ended = 0  # QueryEnded groups in ``groups``
        self.watch_head = False  # count the head group's answers: it is a mixed group
        self.head_answered = 0  # answers to the head group's extended messages so far
        self.skipping = False  # the server ignores the client's messages up to its next Sync
        self._syncs_since_execute = 0
        self._copy_in = False
        # CopyDone or CopyFail sent before the CopyInResponse of its COPY came (the client
        # sent them in one write): (the Syncs sent between the COPY and its end, the group
        # then open), for ``copy_in`` to apply instead of entering copy-in mode for good
        self._early_ends: deque[tuple[int, int]] = deque()
        # Numbers for correlating: groups the client has ended, groups the server answered.
        self.sent_groups = 0
        self.answered = 0
        # a message that may run code (Bind: a parameter's domain CHECK; Execute, Query,
        # FunctionCall) was sent since the server was last answered in full: a setting it
        # changes (client_encoding) is reported only with a later ReadyForQuery
        self.ran = False

    # --- client → server -------------------------------------------------------

    def sent(self, t: int) -> None:
        """The client message of type ``t`` went upstream."""
        if t == _SYNC:
            if self._copy_in:  # the server ignores Sync in copy-in mode
                return
            self._syncs_since_execute += 1
        elif t in (_EXECUTE, _QUERY):
            self._syncs_since_execute = 0
        elif t in (_COPY_DONE, _COPY_FAIL):
            if self._copy_in:
                self._copy_in = False
            elif len(self._early_ends) < 64:  # (a stray one the server ignores: bounded)
                self._early_ends.append((self._syncs_since_execute, self.sent_groups))
        if t in _RUNS:
            self.ran = True
        if t in _Z_PRODUCERS:
            if t == _SYNC:
                self.skipping = False
            elif self.skipping:
                return  # ignored by the server: the group goes on until the client's Sync
            elif self._current_extended or self.query_ended:
                groups = self.groups
                groups[-1] = QueryEnded(groups[-1], self._current_extended)
                self.query_ended += 1
                if len(groups) == 1 and self._current_extended:
                    self.watch_head = True  # the server is answering this group already
            self.groups.append([])
            self.sent_groups += 1
            self._current_has_msgs = False
            self._current_extended = 0
        else:
            self._current_has_msgs = True
            if t in _EXTENDED:
                self._current_extended += 1

    def sent_frames(self, frames: list, i: int, stop: frozenset[int]) -> int:
        """``sent(t)`` for each of ``frames[i:]`` (``(type, start, end)``, as the relay's
        frame reader lists them) up to the first whose type is in ``stop``: its index is
        returned (``len(frames)`` if none). One call per run of frames instead of one per
        frame; messages that only add to the open group (Bind, Describe, Execute, ...)
        are counted inline, anything else goes through ``sent``.
        tests/unit/test_syncgroups.py holds it equal to calling ``sent`` per frame."""
        n = len(frames)
        while i < n:
            t = frames[i][0]
            if t in stop:
                return i
            if t in _Z_PRODUCERS or t in _COPY_END:
                self.sent(t)
            else:
                self._current_has_msgs = True
                if t in _EXTENDED:
                    self._current_extended += 1
                    if t == _EXECUTE:
                        self._syncs_since_execute = 0
                        self.ran = True
                    elif t == _BIND:
                        self.ran = True
            i += 1
        return n

    def attach(self, item, extended: int = 0) -> None:
        """Attach ``item`` to the group being built, which also gets ``extended`` extended
        messages that were sent without ``sent`` (the relay's own, injected ones)."""
        self._current_extended += extended
        self.groups[-1].append(item)

    # --- server → client -------------------------------------------------------

    def counting(self) -> bool:
        """Whether the head group's answers are counted (``answer``/``error``): it mixes
        extended messages with a Query, or it is still open with extended messages in it."""
        return self.watch_head or (self._current_extended > 0 and len(self.groups) == 1)

    def answer(self) -> None:
        """One of ``ANSWERS`` (ParseComplete, BindComplete, ...), while ``counting``."""
        self.head_answered += 1

    def ready(self) -> list | tuple:
        """ReadyForQuery: the head group is answered. Returns its items (those of the groups
        merged into it included), or an empty list."""
        groups = self.groups
        self.answered += 1
        if self.query_ended or self.head_answered:
            self._next_head()
        if len(groups) <= 2 and not self._current_has_msgs:
            self.ran = False  # everything sent is answered (the head is popped below)
        if len(groups) > 1 and not groups[0]:  # the common case: nothing attached
            groups.popleft()
            return _NONE
        if len(groups) > 1:
            return groups.popleft()
        answered = list(groups[0])  # a ReadyForQuery for the open group (no Sync seen)
        groups[0].clear()
        return answered

    def _next_head(self) -> None:
        """Bookkeeping for mixed groups, as the head group is answered (before it is popped)."""
        groups = self.groups
        if len(groups) > 1 and type(groups[0]) is QueryEnded:
            self.query_ended -= 1
        self.head_answered = 0
        self.watch_head = len(groups) > 1 and type(groups[1]) is QueryEnded and groups[1].extended > 0

    def error(self) -> None:
        """An ErrorResponse while ``counting``: if one of the head group's extended messages
        failed, the server skips to the client's next Sync, so every group up to it gets
        one ReadyForQuery."""
        groups = self.groups
        self.watch_head = False
        if len(groups) == 1:  # the open group: no Query in it yet, so it is an extended one
            self.skipping = True
            return
        head = groups[0]
        if type(head) is not QueryEnded or self.head_answered >= head.extended:
            return  # the Query's own error (or a group that Sync ends): nothing skipped
        merged = groups.popleft()
        self.query_ended -= 1
        while len(groups) > 1 and type(groups[0]) is QueryEnded:
            merged.extend(groups.popleft())
            self.query_ended -= 1
        groups[0][:0] = merged  # a Sync-ended group, or the open one: its Sync answers all
        if len(groups) == 1:
            self.skipping = True

    def copy_in(self) -> None:
        """CopyInResponse: Syncs sent after the Execute that began COPY were swallowed. If
        the COPY's end was sent already (red-team round 77: a pipelined COPY left copy-in
        mode on for good, and every later Sync uncounted), only those sent before it were,
        and copy-in mode is over."""
        groups = self.groups
        head = self.head_number  # the COPY's group, being answered
        while self._early_ends and self._early_ends[0][1] < head:
            self._early_ends.popleft()  # (stray ones, sent before this COPY's group)
        if self._early_ends:
            swallowed, at = self._early_ends.popleft()
            # the groups those Syncs ended, and the one open at the end: one answer
            first = at - swallowed - head
            for _ in range(min(swallowed, len(groups) - 1 - first)):
                if first < 0:
                    break
                merged = groups[first + 1]
                del groups[first + 1]
                groups[first].extend(merged)
            self._syncs_since_execute = 0
            return
        self._copy_in = True
        for _ in range(min(self._syncs_since_execute, len(groups) - 1)):
            merged = groups.pop()
            groups[-1].extend(merged)
        self._syncs_since_execute = 0

    # --- questions -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """The server owes answers: a query may be running upstream right now."""
        return len(self.groups) > 1 or self._current_has_msgs

    @property
    def head_number(self) -> int:
        """The number (``sent_groups`` as it was sent) of the group the server answers next:
        every group numbered below it is answered."""
        return self.sent_groups - (len(self.groups) - 1)

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing half-built."""
        return len(self.groups) == 1 and not self._current_has_msgs

    @property
    def in_flight(self) -> int:
        """Groups the client ended that the server has not answered yet."""
        return len(self.groups) - 1
