"""Which cursors and portals a session may read: the ones its client made, and refcursors a
function it called by name returned. Sans-IO: the relay reports what it sends and what the
server answers; ``StatementPolicy`` asks here where the database holds code that may open
cursors of its own open (``Snapshot.portal_code``).

Code the grant did not choose (a trigger, a view's function, a row security policy, code a
granted function's write fires) may ``OPEN`` a cursor under a name it picks, over rows the
grant may not read; ``FETCH`` of that name, or a protocol ``Execute`` of it as a portal,
would return them (red-team rounds 73-74). Telling when such code ran is open-ended, so the
rule is the other way round: a portal is readable only if

* the client made it: a ``DECLARE`` that ran (a simple Query's statements run in order and
  an error skips the rest of the message; a protocol one at its portal's ``Execute``), or
  a protocol ``Bind`` of the client's, and
* it still is the one the client made: forgotten at every transaction's end the server
  reports (ReadyForQuery 'I'; a ``WITH HOLD`` cursor kept then), at every COMMIT, ROLLBACK,
  ROLLBACK TO, PREPARE TRANSACTION or CALL the session runs (a procedure may commit), at
  CLOSE, DISCARD and any error; and used in the Sync group that made it or once the server
  has answered that group (a pipelined message decided before then cannot know its fate);

or it is a refcursor a statement returned that calls, and returns, nothing but functions
that return refcursors (``REFCURSOR_FUNCTIONS_SQL``: none of a polymorphic result, which a
caller could make return any name), alone in its Sync group (pgjdbc's and psycopg's
pattern), learnt from the result's rows once the server has answered the group.

What is left: code that closes a cursor the client made and opens another under its name
(the client then reads the code's); a granted function that returns a refcursor naming a
cursor it did not open (the function is the grant's choice, as everything it returns).
"""

from __future__ import annotations

from typing import NamedTuple

from policy.classify import Classified
from policy.classify.pgparse import declared_hold, output_calls, portal_name, savepoint_name
from policy.decide import Decision

__all__ = ["UNDEFINED_CURSOR", "Refusal", "SessionPortals"]

# statements after which no portal of the transaction is what it was
_ENDS = frozenset({"ROLLBACK", "CALL", "DISCARD"})
_COMMITS = frozenset({"COMMIT", "PREPARE TRANSACTION"})
# statements that return no rows: a Sync group of them and refcursor calls stays pure
_QUIET = frozenset({"BEGIN", "SAVEPOINT", "RELEASE", "SET", "RESET"})
_READS = frozenset({"FETCH", "MOVE"})
MAX_PORTALS = 4096


class _Portal:
    __slots__ = ("group", "confirmed", "held", "holdable", "pairs", "ambiguous", "bound", "seq")

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


class SessionPortals:
    """One session's portals (module docstring). ``group``: the Sync group a message goes
    in (``SyncGroups.sent_groups`` as the relay sends it). SQL cursors and protocol
    portals are one namespace on the server, and one map here: a protocol portal's name is
    its bytes decoded as UTF-8 with ``surrogateescape`` (a DECLARE's, its text's)."""

    def __init__(self) -> None:
        self.portals: dict[str, _Portal] = {}
        # Sync group -> [no other statement in it, every call in it returns one plain
        # refcursor] (the refcursors its rows hold are learnt at its ReadyForQuery if so)
        self.harvest: dict[int, list[bool]] = {}
        self.harvested: list[str] = []  # refcursor values since the last ReadyForQuery
        self.harvested_blind: list[str] = []  # every value of rows no RowDescription led
        self._other = -1  # the last Sync group another statement went in
        # the savepoints of the open transaction, newest last: (name, the ``seq`` of the
        # last portal made before it); a ROLLBACK TO one forgets what was made after it
        self._savepoints: list[tuple[str, int]] = []
        self._seq = 0

    @property
    def tracked(self) -> bool:
        """Is there anything a ReadyForQuery or an error changes?"""
        return bool(self.portals or self.harvest)

    # -- what the client sends, in order ---------------------------------------------------
    def ran(self, pairs: tuple, group: int, functions: dict[str, bool]) -> Refusal | None:
        """The statements of a simple Query, or of a protocol Execute's portal, as they run
        (in order). A refusal: (the statement's index, why): a FETCH or MOVE of a cursor the
        client did not make; nothing of the message is then taken to have run.
        ``functions``: ``Snapshot.refcursor_functions``."""
        if len(pairs) == 1:  # (a refusal comes before it changes anything)
            refused = self._statement(pairs[0][0], group, functions)
            return None if refused is None else refused._replace(at=0)
        saved = (dict(self.portals), {g: list(m) for g, m in self.harvest.items()}, self._other,
                 list(self._savepoints))  # fmt: skip
        for index, (c, _decision) in enumerate(pairs):
            refused = self._statement(c, group, functions)
            if refused is not None:
                self.portals, self.harvest, self._other, self._savepoints = saved
                return refused._replace(at=index)
        return None

    def _keep(self, name: str, entry: _Portal) -> None:
        if len(self.portals) < MAX_PORTALS or name in self.portals:
            self._seq += 1
            entry.seq = self._seq
            self.portals[name] = entry

    def _statement(self, c: Classified, group: int, functions: dict[str, bool]) -> Refusal | None:
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
                self.portals.pop(name, None)
        elif command in _COMMITS:
            self._ended(keep_holdable=True)
        elif command in _ENDS:
            self._ended(keep_holdable=False, discard=command == "DISCARD")
        elif command == "SAVEPOINT":
            self._savepoints.append((savepoint_name(c.sql) or "", self._seq))
        elif command == "RELEASE" or command == "ROLLBACK TO SAVEPOINT":
            self._to_savepoint(savepoint_name(c.sql), command == "RELEASE")
        if command in _QUIET:
            return None
        calls = output_calls(c.sql) if command in ("SELECT", "CALL") else None
        if calls:
            names = [call if "." in call else f"public.{call}" for call in calls]
            if all(name in functions for name in names):
                mark = self.harvest.setdefault(group, [self._other != group, True])
                mark[1] = mark[1] and all(functions[name] for name in names)
                return None
        self._other_statement(group)
        return None

    def _other_statement(self, group: int) -> None:
        self._other = group
        mark = self.harvest.get(group)
        if mark is not None:
            mark[0] = False

    def _usable(self, name: str, group: int) -> bool:
        entry = self.portals.get(name)
        return (
            entry is not None and not entry.ambiguous and (entry.confirmed or entry.group == group)
        )

    def _to_savepoint(self, name: str | None, release: bool) -> None:
        """RELEASE (it and the savepoints after it end) or ROLLBACK TO (those after it end,
        and what was made since it) the newest savepoint of ``name``; one not known: every
        portal of the transaction is forgotten."""
        at = next(
            (i for i in range(len(self._savepoints) - 1, -1, -1)
             if self._savepoints[i][0] == name),
            None,
        )  # fmt: skip
        if at is None:
            self._ended(keep_holdable=False)
            return
        since = self._savepoints[at][1]
        del self._savepoints[at if release else at + 1 :]
        if not release:
            self.portals = {
                key: entry for key, entry in self.portals.items()
                if entry.held or entry.seq <= since
            }  # fmt: skip

    def _ended(self, keep_holdable: bool, discard: bool = False) -> None:
        """A transaction ends where the session's statements say so."""
        self._savepoints.clear()
        if discard:
            self.portals.clear()
            return
        self.portals = {
            name: entry for name, entry in self.portals.items()
            if entry.held or (keep_holdable and entry.holdable)
        }  # fmt: skip

    def bind(self, portal: str, pairs: tuple | None, group: int) -> None:
        """A protocol Bind of the client's went upstream: ``pairs`` are its statement's
        (None: which text the server binds is not known)."""
        # (a named portal the server still holds: it refuses the Bind, or not yet answered)
        entry = _Portal(group, pairs=pairs)
        entry.bound = True
        entry.ambiguous = bool(portal) and portal in self.portals
        self._keep(portal, entry)

    def execute(self, portal: str, group: int, functions: dict[str, bool]) -> Refusal | None:
        """A protocol Execute of ``portal``: refused unless the client made it (a Bind, a
        DECLARE) and the server surely runs what the policy decided; its statements then
        run (``ran``)."""
        refused = self._made(portal, group, "Execute")
        if refused is not None:
            return refused
        entry = self.portals[portal]
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
        entry = self.portals.get(portal)
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
        self.portals.pop(portal, None)

    def queried(self) -> None:
        """A simple Query went upstream: it replaces the unnamed portal."""
        self.portals.pop("", None)

    # -- what the server answers -----------------------------------------------------------
    def failed(self) -> None:
        """An ErrorResponse: what was made in a Sync group not yet answered may not have
        been (the error skipped it); the rest waits for the transaction's end or a
        ROLLBACK TO, and is no longer kept by a COMMIT (which ends the failed transaction
        as a ROLLBACK)."""
        for name, entry in list(self.portals.items()):
            if not entry.confirmed:
                del self.portals[name]
            elif not entry.held:
                entry.holdable = False
        self.harvest.clear()
        self.harvested.clear()
        self.harvested_blind.clear()

    def answered(self, first: int, below: int, idle: bool) -> None:
        """ReadyForQuery: it answered the Sync groups numbered ``first`` up to ``below``
        (one, but where COPY or an error merged several); ``idle``: outside a transaction
        ('I')."""
        if idle:
            self._savepoints.clear()
        for name, entry in list(self.portals.items()):
            if entry.group >= below or entry.held:
                continue
            if not idle:
                entry.confirmed = True
            elif entry.holdable:
                entry.confirmed = entry.held = True  # its transaction committed
            else:
                del self.portals[name]
        # each group answered must be one of refcursor calls alone for the rows seen since
        # the last ReadyForQuery to be names those functions gave
        marks = sorted(g for g in self.harvest if g < below)
        pure = bool(marks) and marks == list(range(first, below)) and not idle
        scalar = pure
        for g in marks:
            mark = self.harvest.pop(g)
            pure = pure and mark[0]
            scalar = scalar and mark[0] and mark[1]
        learnt = (self.harvested if pure else []) + (self.harvested_blind if scalar else [])
        for name in learnt:
            self._keep(name, _Portal(-1, confirmed=True))
        self.harvested.clear()
        self.harvested_blind.clear()
