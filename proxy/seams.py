"""The typed seams of a live session: what the relay and the server call, and nothing more.

The implementations live elsewhere and need not import this module (the checks are
structural): ``policy.StatementPolicy`` is a ``Policy``, ``recorder.SessionRecorder`` a
``SessionSink``, ``recorder.Recorder`` the ``Health`` the relay asks before each
statement. Tests hand in their own small implementations the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from policy.classify import Classified
from policy.engine import Verdict

if TYPE_CHECKING:
    from policy.engine import StatementPolicy
    from recorder.writer import Recorder, SessionRecorder

__all__ = ["Health", "Policy", "SessionSink", "Verdict"]


class Policy(Protocol):
    """One session's statement policy (``None`` in its place: an unrestricted user)."""

    enforce: bool  # False: a dry run (denials recorded as would-deny, nothing refused)
    reads_code: bool  # the grant may read function bodies (read:pg_catalog.pg_proc)
    # statements whose Binds must be checked (a parameter pins their object text), by name
    bind_pins: dict[str, Any]
    # protocol statements every Bind of which is followed (DDL, or a PREPARE, EXECUTE,
    # DEALLOCATE or DISCARD: each Bind runs it again), by name
    followed: dict[str, Any]
    @property
    def binds_watched(self) -> bool:
        """Any of bind_pins, rebind, rebind_unknown, followed, lazy_names: Binds are looked
        at now."""
        ...
    # statements prepared before the catalog changed, by name: their next Bind decides them
    # again (the server analyses them again)
    rebind: dict[str, Any]
    # a statement name was forgotten and the catalog changed since: unknown names' Binds
    # are checked (refused)
    rebind_unknown: bool
    # columns this session renamed or dropped in a transaction that may still be open:
    # ``settle_ddl`` once the server is idle outside a block
    ddl_unsettled: frozenset
    # DDL went through since the session was last idle outside a block (``settle_ddl``)
    ddl_open: bool
    # starts a catalog reload that begins no earlier than the time given (the task), asked
    # by a check answering CATALOG_WAIT; waiting_since: that time, while a statement waits;
    # stale_write: a write waits for the reload after the last DDL (``on_stale(None)``)
    on_stale: Callable[[float | None], object] | None
    waiting_since: float | None
    stale_write: bool
    # the text the last check_query or check_parse allowed in place of the client's
    # (CASCADE run as RESTRICT), or None
    rewritten: str | None
    # set by the relay: asked before a Parse is decided again as RESTRICT (may the Parse
    # being decided carry that text: it encodes back to the client's bytes)
    can_reparse: Callable[[str], bool] | None

    def check_query(self, sql: str) -> Verdict:
        """Simple Query: one deny denies the whole query."""
        ...

    def check_parse(self, sql: str, param_types: tuple[int, ...] = (), name: str = "") -> Verdict:
        """Extended-protocol Parse; ``param_types``: the parameter type OIDs of user-made
        types it names; ``name``: the statement's (its Binds may need ``check_bind``)."""
        ...

    def check_bind(
        self, name: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
    ) -> Verdict:
        """A Bind of a statement in ``bind_pins`` or ``rebind``, with its parameter formats
        and values."""
        ...

    def check_function_call(self) -> Verdict: ...

    def bind_checked(self, name: str) -> bool:
        """Must a Bind of statement ``name`` go to ``check_bind``?"""
        ...

    # statement names a message the server has not answered yet touched (``answered``)
    names_pending: bool
    # the database has code that may change client_encoding unseen (Snapshot.encoding_code)
    encoding_code: bool

    def closed_unknown(self) -> None:
        """A Close of a statement whose name may be read in the wrong encoding."""
        ...

    def closed(self, name: str) -> None:
        """A Close of statement ``name`` goes upstream."""
        ...

    def failed(self) -> None:
        """The server answered with an ErrorResponse."""
        ...

    # the Sync group (``SyncGroups.sent_groups``) of the Parse or Bind being decided
    sending_group: int
    # the Bind being decided is followed in its batch by the Execute of its portal
    bind_at_once: bool

    def names_unknown(self) -> None:
        """The server may hold other text under any statement name now."""
        ...

    # code that may replace statements ran in the open transaction: a cursor or portal may
    # run it again (every Execute and Sync forgets the names: ``names_unknown``); the relay
    # clears it when the server is idle outside a transaction
    lazy_names: bool
    # code that may run DDL (so build a PREPARE from pieces) ran in the open transaction:
    # every Bind or Describe of a held statement is checked with the server first
    lazy_code: bool
    # a statement ran while ``lazy_code`` (the relay sets it at each Execute and Sync)
    ran_lazy: bool

    def at_rest(self) -> None:
        """The server is idle outside a transaction: ``lazy_names`` and ``lazy_code`` end."""
        ...

    def verify_name(self, name: str) -> tuple[int, int] | None:
        """A token if the server must check it holds the client's statement ``name``."""
        ...

    def replaced_message(self, name: str) -> str:
        """The error of a failed check of ``name``."""
        ...

    def holds_text(self, name: str, sql: str) -> bool:
        """Is ``sql`` the text the policy holds for statement ``name``?"""
        ...

    def verified(self, name: str, token: tuple[int, int]) -> None:
        """The server's check of ``name`` passed (or a restore made it hold it again)."""
        ...

    def replaced(self, name: str, token: tuple[int, int]) -> None:
        """The server's check of ``name`` failed (and removed it there)."""
        ...

    def commits_prepared(self) -> None:
        """COMMIT PREPARED goes upstream: it may commit another session's DDL."""
        ...

    def parse_answered(self, name: str) -> None:
        """ParseComplete for the oldest Parse of the client's sent upstream (``name``)."""
        ...

    def answered(self, idle: bool) -> None:
        """ReadyForQuery while ``names_pending``; ``idle``: nothing more in flight."""
        ...

    def settle_ddl(self) -> None:
        """ReadyForQuery 'I' after DDL (``ddl_open``, ``ddl_unsettled``): it has ended."""
        ...

    def may_read(self, schema: str, table: str) -> bool:
        """May the grant read this relation (named as the server names it in an error)?"""
        ...

    # the session's own temporary relations await the server's answer (where code may make
    # them too): ``temps_answered`` at each ReadyForQuery
    temps_pending: bool

    def temps_answered(self, answered: int, idle: bool) -> None:
        """ReadyForQuery (while ``temps_pending``): the Sync groups below ``answered`` are
        answered; ``idle``: outside a transaction."""
        ...

    def may_hear(self, channel: str) -> bool:
        """May a notification on this channel (as the server names it) reach the client?"""
        ...

    # a read was decided on a stale snapshot where it could not wait for the reload (a
    # Bind): what the server says until its Sync group is answered is withheld (the relay
    # clears it)
    stale_read: bool
    # the statement runs code on rows the grant may not read (a view's query, a row
    # security policy, a REFRESH; set by ``writes_unreadable``): withheld alike
    hidden_read: bool

    def writes_unreadable(self, verdict: Verdict) -> bool:
        """Does this allowed statement write rows of a relation the grant may not read,
        itself or through foreign-key actions (its errors and notices may quote them)?"""
        ...

    # a row write was allowed since the server last answered everything (``writes_moved``)
    write_mark: tuple[int, int, bool] | None

    def writes_moved(self) -> bool:
        """May a write allowed since run code another session's DDL attached after its
        decision (what the server says is then withheld)?"""
        ...

    def writes_done(self) -> None:
        """The server answered everything: the marked writes have run."""
        ...

    # the database holds code that may open cursors of its own: the relay reports every
    # Bind, Execute, portal Close and ReadyForQuery (policy/portals.py)
    portals_watched: bool

    def portal_bound(self, name: str, portal: bytes, certain: bool = False) -> None:
        """A Bind of statement ``name`` to ``portal`` went upstream (``certain``: the server
        was made to check it holds the policy's text just before)."""
        ...

    def check_execute(self, portal: bytes) -> Verdict:
        """A protocol Execute of ``portal``: refused unless the client made the portal."""
        ...

    def check_describe(self, portal: bytes) -> Verdict | None:
        """A protocol Describe of ``portal``: a refusal unless the client made it."""
        ...

    def portal_closed(self, portal: bytes) -> None:
        """A Close of protocol portal ``portal`` went upstream."""
        ...

    def portals_answered(self, first: int, below: int, idle: bool, settled: bool = False) -> None:
        """ReadyForQuery: it answered Sync groups ``first`` up to ``below``; ``idle``: 'I';
        ``settled``: nothing more in flight."""
        ...

    def portals_rolled_back(self) -> None:
        """The proxy ends the client's block with a ROLLBACK of its own."""
        ...

    @property
    def savepoints_pending(self) -> bool:
        """Are CommandComplete SAVEPOINTs wanted (``savepoint_made``)?"""
        ...

    def savepoint_made(self) -> None:
        """A CommandComplete SAVEPOINT, while ``savepoints_pending``."""
        ...

    @property
    def harvesting(self) -> bool:
        """Are refcursor values of result rows wanted (``refcursors``)?"""
        ...

    def refcursors(self, names: list[str]) -> None:
        """The values of a result row, while ``harvesting``."""
        ...

    def needs_offload(self, sql: str) -> bool:
        """Should ``sql`` be classified off the event loop before it is checked?"""
        ...

    def offload_job(self, sql: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """(function, args) to run in another process; its result goes to ``precomputed``."""
        ...

    def precomputed(self, sql: str, classified: tuple[Classified, ...]) -> None:
        """The off-loop job's result for ``sql``: the next check of ``sql`` decides on it."""
        ...


class SessionSink(Protocol):
    """Where one session's recording goes (``recorder.SessionRecorder``)."""

    def wire(self, direction: str, data: bytes) -> None:
        """Bytes as they crossed the proxy, ``direction`` ``"c2s"`` or ``"s2c"``."""
        ...

    def decision(self, payload: dict[str, Any], denied: bool) -> None: ...

    def decision_json(self, body: bytes, denied: bool) -> None:
        """``decision`` with the payload already rendered (proxy/decision_records.py)."""
        ...

    def event(self, kind: str, payload: dict[str, Any]) -> None: ...

    def end(self, cause: str, detail: str = "") -> None: ...


class Health(Protocol):
    """False while recording cannot be guaranteed: statements are then refused."""

    @property
    def healthy(self) -> bool: ...


if TYPE_CHECKING:

    def _implementations_conform(
        policy: StatementPolicy, sink: SessionRecorder, health: Recorder
    ) -> tuple[Policy, SessionSink, Health]:
        """Never called: mypy (``make lint``) fails here if an implementation drifts
        from its seam."""
        return policy, sink, health
