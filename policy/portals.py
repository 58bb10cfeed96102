"""Which cursors and portals a session may read: the ones its client made, and refcursors
functions it called by name returned. Sans-IO: the relay reports what it sends and what the
server answers; ``StatementPolicy`` follows it here where the database holds code that may
leave cursors of its own open (``Snapshot.portal_code``).

Code the grant did not choose (a trigger, a view's function, a row security policy, code a
granted function's write fires) may ``OPEN`` a cursor under a name it picks, over rows the
grant may not read; ``FETCH`` of that name, or a protocol ``Execute`` or ``Describe`` of it
as a portal, would show them (red-team rounds 73-74). Telling when such code ran is
open-ended, so the rule is the other way round: a portal is readable only if

* the client made it: a ``DECLARE`` that ran (a simple Query's statements in order: an
  error skips the rest of the message; a protocol one at its portal's ``Execute``), or a
  protocol ``Bind`` of its own whose statement text is sure; used in the Sync group that
  made it, or once the server has answered that group. SQL cursors and protocol portals are
  one namespace (``_key``: the first 63 bytes, ASCII names only);
* it still is the one the client made: forgotten at a ROLLBACK, DISCARD ALL, CALL or
  PREPARE TRANSACTION decided, the proxy's own ROLLBACK, a ROLLBACK TO a savepoint made
  before it (each SAVEPOINT counted once the server said it made it: a FIFO of their
  CommandCompletes), an error for the groups not yet answered (and, at its ReadyForQuery,
  whatever its own group made), a ReadyForQuery 'I' unless held: a WITH HOLD cursor is held
  once a COMMIT the client sent, or the implicit transaction that made it, is answered
  without an error (and never after an error no ROLLBACK TO undid);

or it is a refcursor learnt from the rows of a Sync group of nothing but quiet statements
and calls of functions that return one plain refcursor each (``REFCURSOR_FUNCTIONS_SQL``;
literal or parameter arguments, so that no call is PostgreSQL's field selection), answered
alone, without an error, inside a transaction (pgjdbc's and psycopg's pattern).

What is left (rounds 75-78's residue, strict xfails): code that closes a cursor the client
made and opens another under its name (the client then reads the code's); a granted
function that returns a refcursor naming a cursor it did not open (the function is the
grant's choice, as everything it returns). docs/decisions.md, session 32, has the rest.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from policy.classify import Classified
from policy.classify.pgparse import declared_hold, output_calls, portal_name, savepoint_name
from policy.decide import Decision
from policy.prepared import NAME_BYTES

__all__ = ["UNDEFINED_CURSOR", "Refusal", "SessionPortals"]

# statements after which no portal of the transaction is what it was
# (PREPARE TRANSACTION too: the server refuses it for a transaction with a WITH HOLD cursor)
_ENDS = frozenset({"ROLLBACK", "CALL", "PREPARE TRANSACTION"})
# statements that return no rows: a Sync group of them and refcursor calls stays pure
_QUIET = frozenset({"BEGIN", "SAVEPOINT", "RELEASE", "SET", "RESET"})
_READS = frozenset({"FETCH", "MOVE"})
MAX_PORTALS = 4096


class _Portal:
    __slots__ = (
        "group", "confirmed", "held", "holdable", "pairs", "ambiguous", "bound", "seq", "committing",
    )  # fmt: skip

    def __init__(self, group: int, holdable: bool = False, pairs: tuple | None = None,
                 confirmed: bool = False) -> None:  # fmt: skip
        self.group = group  # the Sync group (``SyncGroups.sent_groups``) that made it
        self.seq = 0  # its place among what the session made (``SessionPortals._keep``)
        self.confirmed = confirmed  # the server answered that group: it exists
        self.held = False  # WITH HOLD, its transaction committed: only CLOSE/DISCARD end it
        self.holdable = holdable
        self.pairs = pairs  # a protocol portal: its statement's (classified, decision)s
        self.ambiguous = False  # bound again before the server answered: which one is it?
        self.bound = False  # a protocol Bind's (else a DECLARE's, or a function's refcursor)
        self.committing = False  # WITH HOLD, a COMMIT decided in its ``group`` keeps it


# A cursor or portal the client did not make is, to the client, one that does not exist:
# the refusal says so as the server does for a name it does not hold (34000), and why
# (drivers test for it: psycopg's FETCH of a cursor its COMMIT closed)
UNDEFINED_CURSOR = "34000"


class Refusal(NamedTuple):
    at: int  # the statement refused
    decision: Decision
    sqlstate: str = "42501"


def _undefined(index: int, what: str) -> Refusal:
    return Refusal(index, _refused(what, "this session did not make it"), UNDEFINED_CURSOR)


def _refused(what: str, why: str) -> Decision:
    return Decision(
        False, "deny.cursor",
        f"may not {what}: {why}; code in this database may open cursors over rows "
        "the grant may not read, so a session reads only cursors and portals its client made "
        "in this transaction (DECLARE, Bind) and refcursors a granted function returned",
    )  # fmt: skip


def _key(name: str) -> str | None:
    """A cursor's or portal's name as the server keys it (its first 63 bytes), for names in
    ASCII; None for another: which bytes the server holds it under depends on encodings
    (round 76: a LATIN1 session's name read two ways), so such a name is never the
    client's, and closing one forgets every name."""
    return name[:NAME_BYTES] if name.isascii() else None


class _Savepoint:
    __slots__ = ("name", "seq", "group", "confirmed")

    def __init__(self, name: str, seq: int, group: int) -> None:
        self.name = name
        self.seq = seq  # the ``seq`` of the last portal made before it
        self.group = group
        self.confirmed = False  # the server said it made it (CommandComplete SAVEPOINT)


class SessionPortals:
    """One session's portals (module docstring). ``group``: the Sync group a message goes
    in (``SyncGroups.sent_groups`` as the relay sends it). SQL cursors and protocol
    portals are one namespace on the server, and one map here (``_key``)."""

    def __init__(self) -> None:
        self.portals: dict[str, _Portal] = {}
        # Sync group -> no other statement in it (the refcursors its rows hold are learnt at
        # its ReadyForQuery if so)
        self.harvest: dict[int, bool] = {}
        self.harvested: list[str] = []  # row values since the last ReadyForQuery
        self._other = -1  # the last Sync group another statement went in
        # the savepoints of the open transaction, newest last: a ROLLBACK TO one forgets
        # what was made after it
        self._savepoints: list[_Savepoint] = []
        # every SAVEPOINT sent whose CommandComplete has not come, in order (released or
        # rolled past ones too: each CommandComplete is the oldest one's, round 77)
        self._unmade: deque[_Savepoint] = deque()
        self._seq = 0
        # an error came back since the last ReadyForQuery: what its group made is not
        # (``answered``); the transaction may be a failed one: a COMMIT ends it as a
        # ROLLBACK (until a ROLLBACK TO)
        self._errored = False
        self._aborted = False
        # the server has answered everything since these books began (``answered``'s
        # ``settled``): before, a SAVEPOINT's completion may be one sent before them
        # (round 78: the rule switched on mid-session), so none is trusted
        self._settled = False

    # -- what the client sends, in order ---------------------------------------------------
    def ran(self, pairs: tuple, group: int, functions: frozenset[str]) -> Refusal | None:
        """The statements of a simple Query, or of a protocol Execute's portal, as they run
        (in order). A refusal: the statement's index and why (a FETCH or MOVE of a cursor
        the client did not make); nothing of the message is then taken to have run.
        ``functions``: ``Snapshot.refcursor_functions``."""
        if len(pairs) == 1:  # (a refusal comes before it changes anything)
            refused = self._statement(pairs[0][0], group, functions)
            return None if refused is None else refused._replace(at=0)
        saved = (
            {k: _copy(e) for k, e in self.portals.items()}, dict(self.harvest), self._other,
            list(self._savepoints), self._aborted, len(self._unmade),
        )  # fmt: skip
        for index, (c, _decision) in enumerate(pairs):
            refused = self._statement(c, group, functions)
            if refused is not None:
                (self.portals, self.harvest, self._other, self._savepoints,
                 self._aborted, unmade) = saved  # fmt: skip
                while len(self._unmade) > unmade:
                    self._unmade.pop()  # (never sent)
                return refused._replace(at=index)
        return None

    def _newest(self) -> int:
        return max((entry.group for entry in self.portals.values()), default=-1)

    def _keep(self, name: str | None, entry: _Portal) -> None:
        key = None if name is None else _key(name)
        if key is not None and (len(self.portals) < MAX_PORTALS or key in self.portals):
            self._seq += 1
            entry.seq = self._seq
            self.portals[key] = entry

    def _forget(self, name: str | None) -> None:
        key = None if name is None else _key(name)
        if key is None:
            self.portals.clear()  # (a name not read, or not ASCII: any of them)
        else:
            self.portals.pop(key, None)

    def _statement(self, c: Classified, group: int, functions: frozenset[str]) -> Refusal | None:
        command = c.command
        if command in _READS:
            name = portal_name(c.sql)
            if name is None:
                return Refusal(0, _refused(f"{command} a cursor", "its name cannot be read"))
            if not self._usable(name, group):
                return _undefined(0, f"{command} cursor {name!r}")
            self._other_statement(group)
            return None
        if command == "DECLARE":
            name = portal_name(c.sql)
            if name:
                self._keep(name, _Portal(group, declared_hold(c.sql)))
        elif command == "CLOSE":
            name = portal_name(c.sql)
            if name == "" or name is None:
                self.portals.clear()  # CLOSE ALL: every portal not running (or unread)
            else:
                self._forget(name)
        elif command == "COMMIT":
            self._committed(group)
        elif command in _ENDS:
            self._ended()
        elif command == "DISCARD" and c.detail == "all":  # (PLANS, SEQUENCES, TEMP: not)
            self._ended(discard=True)
        elif command == "SAVEPOINT":
            savepoint = _Savepoint(savepoint_name(c.sql) or "", self._seq, group)
            self._savepoints.append(savepoint)
            self._unmade.append(savepoint)
        elif command == "RELEASE" or command == "ROLLBACK TO SAVEPOINT":
            self._to_savepoint(savepoint_name(c.sql), command == "RELEASE", group)
        if command in _QUIET:
            return None
        calls = (
            output_calls(c.sql)
            if command in ("SELECT", "CALL") and not c.functions.isdisjoint(functions)
            else None
        )  # (PostgreSQL's parser asked only where a refcursor function is called)
        if calls and all(
            (call if "." in call else f"public.{call}") in functions for call in calls
        ):
            self.harvest[group] = self.harvest.get(group, True) and self._other != group
            return None
        self._other_statement(group)
        return None

    def _other_statement(self, group: int) -> None:
        self._other = group
        if group in self.harvest:
            self.harvest[group] = False

    def _usable(self, name: str, group: int) -> bool:
        key = _key(name)
        entry = None if key is None else self.portals.get(key)
        return (
            entry is not None and not entry.ambiguous and (entry.confirmed or entry.group == group)
        )

    def _to_savepoint(self, name: str | None, release: bool, group: int) -> None:
        """RELEASE (it and the savepoints after it end) or ROLLBACK TO (those after it end,
        and what was made since it) the newest savepoint of ``name``. One not known, or one
        of another Sync group the server has not yet said it made (it may have refused it
        after an error: round 76): every portal of the transaction is forgotten."""
        at = next(
            (i for i in range(len(self._savepoints) - 1, -1, -1)
             if self._savepoints[i].name == name),
            None,
        )  # fmt: skip
        if not release:
            self._aborted = False  # (if it fails, its error says so again)
        if at is None or not (
            self._savepoints[at].confirmed or self._savepoints[at].group == group
        ):
            self._ended()
            return
        savepoint = self._savepoints[at]
        del self._savepoints[at if release else at + 1 :]
        if not release:
            since = savepoint.seq
            self.portals = {
                key: entry for key, entry in self.portals.items()
                if entry.held or entry.seq <= since
            }  # fmt: skip

    def _committed(self, group: int) -> None:
        """A COMMIT (or PREPARE TRANSACTION): WITH HOLD cursors outlive it, if it commits.
        Of a failed transaction it is a ROLLBACK; and whether it commits is known once the
        server answers its group: until then they are as made in it."""
        if self._aborted:
            self._ended()
            return
        self._savepoints.clear()
        kept: dict[str, _Portal] = {}
        for key, entry in self.portals.items():
            if entry.held:
                kept[key] = entry
            elif entry.holdable:
                entry.group, entry.confirmed, entry.committing = group, False, True
                kept[key] = entry
        self.portals = kept

    def _ended(self, discard: bool = False) -> None:
        """A transaction ends as a ROLLBACK where the session's statements say so."""
        self._savepoints.clear()
        self._aborted = False
        if discard:
            self.portals.clear()
            return
        self.portals = {key: entry for key, entry in self.portals.items() if entry.held}

    def bind(self, portal: str, pairs: tuple | None, group: int) -> None:
        """A protocol Bind of the client's went upstream: ``pairs`` are its statement's
        (None: which text the server binds is not known)."""
        entry = _Portal(group, pairs=pairs)
        entry.bound = True
        key = _key(portal)
        # (a named portal the server still holds: it refuses the Bind, or not yet answered)
        entry.ambiguous = bool(key) and key in self.portals
        self._keep(portal, entry)

    def execute(self, portal: str, group: int, functions: frozenset[str]) -> Refusal | None:
        """A protocol Execute of ``portal``: refused unless the client made it (a Bind, a
        DECLARE) and the server surely runs what the policy decided; its statements then
        run (``ran``)."""
        refused = self._made(portal, group, "Execute")
        if refused is not None:
            return refused
        entry = self.portals[_key(portal) or ""]
        if not entry.bound:
            self._other_statement(group)
            return None  # a cursor the client declared, run as a portal
        if entry.pairs is None:
            return Refusal(0, _refused(
                f"Execute portal {portal!r}",
                "which statement it was bound to is not known yet (the server had not "
                "answered that statement's Parse: send its Bind after the answer)",
            ))  # fmt: skip
        return self.ran(entry.pairs, group, functions)

    def describe(self, portal: str, group: int) -> Refusal | None:
        """A protocol Describe of ``portal`` (what its rows are, from where): refused as an
        Execute of it would be."""
        return self._made(portal, group, "Describe")

    def _made(self, portal: str, group: int, what: str) -> Refusal | None:
        key = _key(portal)
        entry = None if key is None else self.portals.get(key)
        if entry is None:
            return _undefined(0, f"{what} portal {portal!r}")
        if entry.ambiguous:
            return Refusal(0, _refused(
                f"{what} portal {portal!r}",
                "it was bound again before the server answered, so which one runs is not known",
            ))  # fmt: skip
        if not (entry.confirmed or entry.group == group):
            return Refusal(0, _refused(
                f"{what} portal {portal!r}",
                "the server has not yet answered the Sync group that made it (its "
                "transaction may have ended)",
            ))  # fmt: skip
        return None

    def closed(self, portal: str) -> None:
        """A Close of protocol portal ``portal`` went upstream (a cursor's name too)."""
        self._forget(portal)

    def queried(self) -> None:
        """A simple Query went upstream: it replaces the unnamed portal."""
        self.portals.pop("", None)

    # -- what the server answers -----------------------------------------------------------
    @property
    def savepoints_pending(self) -> bool:
        """Are there SAVEPOINTs the server has not yet said it made (``savepoint_made``)?"""
        return bool(self._unmade)

    def savepoint_made(self) -> None:
        """A CommandComplete ``SAVEPOINT``: the oldest SAVEPOINT sent and not yet made is
        (they run in the order they were sent; one an error skipped never is: ``failed``)."""
        if self._unmade and self._settled:
            self._unmade.popleft().confirmed = True

    def failed(self) -> None:
        """An ErrorResponse: what a Sync group not yet answered made may not have been (the
        error skipped it; ``answered`` forgets what its own group made after it too); the
        rest waits for the transaction's end or a ROLLBACK TO."""
        self.portals = {
            key: entry for key, entry in self.portals.items() if entry.confirmed or entry.held
        }  # fmt: skip
        self._savepoints = [sp for sp in self._savepoints if sp.confirmed]
        self._unmade.clear()  # (skipped, or refused as the failed transaction's)
        self.harvest.clear()
        self.harvested.clear()
        self._errored = self._aborted = True

    def rolled_back(self) -> None:
        """The proxy ended the client's block with a ROLLBACK of its own (a refused PREPARE
        TRANSACTION: ``Denials.inject_ending``)."""
        self._ended()

    def answered(self, first: int, below: int, idle: bool, settled: bool = False) -> None:
        """ReadyForQuery: it answered the Sync groups numbered ``first`` up to ``below``
        (one, but where COPY or an error merged several); ``idle``: outside a transaction
        ('I'); ``settled``: nothing more is in flight (every group is answered)."""
        if settled:
            below = max(below, self._newest() + 1)
            self._settled = True
            if self._unmade:  # (completions not trusted before: which ones came is unknown)
                self._savepoints = [sp for sp in self._savepoints if sp.confirmed]
                self._unmade.clear()
        if self._errored:
            self._errored = False
            self.portals = {
                key: entry for key, entry in self.portals.items()
                if entry.held or not first <= entry.group < below
            }  # fmt: skip
            self._savepoints = [
                sp for sp in self._savepoints if sp.confirmed or sp.group >= below
            ]  # fmt: skip
        if idle:
            self._savepoints.clear()
            self._aborted = False
        for key, entry in list(self.portals.items()):
            if entry.group >= below or entry.held:
                continue
            answered_now = first <= entry.group
            if entry.committing and answered_now:
                # its COMMIT was answered without an error: held (COMMIT AND CHAIN too)
                entry.confirmed = entry.held = True
            elif not idle:
                entry.confirmed = True
            elif entry.holdable and answered_now and not entry.bound:
                # made in the implicit transaction this answer ended: it committed
                entry.confirmed = entry.held = True
            else:
                # its transaction ended otherwise (a ROLLBACK, one of the proxy's own)
                del self.portals[key]
        # each group answered must be one of refcursor calls alone for the rows seen since
        # the last ReadyForQuery to be names those functions gave
        marks = sorted(g for g in self.harvest if g < below)
        pure = bool(marks) and marks == list(range(first, below)) and not idle
        for g in marks:
            pure = self.harvest.pop(g) and pure
        for name in self.harvested if pure else ():
            self._keep(name, _Portal(-1, confirmed=True))
        self.harvested.clear()


def _copy(entry: _Portal) -> _Portal:
    copied = _Portal(entry.group, entry.holdable, entry.pairs, entry.confirmed)
    copied.held, copied.ambiguous, copied.bound, copied.seq, copied.committing = (
        entry.held, entry.ambiguous, entry.bound, entry.seq, entry.committing,
    )  # fmt: skip
    return copied
