"""``GrantStore``: where grants live, the logic both backends share (``sqlite.py``,
``postgres.py``); ``open_store`` in ``__init__`` picks one by URL.

Both implementations share the logic in ``GrantStore`` (validation, salts, verifiers,
events) and differ only in a handful of storage primitives. The store is the control
plane: it must never be the database agents connect to (``check_store_not_upstream``).

SQLite: stdlib ``sqlite3`` in a worker thread, one short-lived connection per operation,
WAL mode and a busy timeout, so several processes on one host can share the file.
PostgreSQL: an asyncpg pool, so several proxies on several hosts can share one store.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol, overload
from urllib.parse import urlsplit

from common.wire.scram import DEFAULT_ITERATIONS

from ..model import (
    DEFAULT_MAX_TTL,
    Grant,
    GrantError,
    GrantNotFound,
    GrantStateError,
    fake_login_salt,
    format_ttl,
    new_grant_id,
    new_salt,
    new_token,
    parse_ttl,
    token_verifier,
    utcnow,
    validate_by,
    validate_issue,
)

log = logging.getLogger("pgwitness.grants")

DEFAULT_STORE_URL = "sqlite:///./pgwitness-grants.db"
LOGIN_HISTORY = dt.timedelta(days=1)  # for_agent: how long ended grants stay candidates
SCHEMA_VERSION = 3  # 2: grants.db_role; 3: grants.issued_stream, extended_stream, revoked_stream
_SECRET_KEY = "login_salt_secret"

EventCallback = Callable[[str, dict], None]
# The id of the control stream ``on_event`` records into, or None; asked just before a
# change is stored, which then names it (``Grant.*_stream``). Without one, a recorder's
# ``control_event`` as ``on_event`` names its own (``recorder.control_stream_id``).
StreamCallback = Callable[[], str | None]
Clock = Callable[[], dt.datetime]

_COLUMNS = (
    "id, agent, task, reason, granted_by, database, scopes, not_before, expires_at, "
    "revoked_at, revoked_by, created_at, updated_at, verifier, enforce, record_rows, db_role, "
    "issued_stream, extended_stream, revoked_stream"
)
_NCOLUMNS = 20
# Columns added after schema 1, each nullable: a store of an older schema gains them when
# opened (ALTER TABLE ... ADD COLUMN), its grants with NULL there (no stream named).
ADDED_COLUMNS = ("db_role", "issued_stream", "extended_stream", "revoked_stream")


class RoleHook(Protocol):
    """What the store calls so a grant's database role follows its lifecycle.

    ``proxy.provision`` implements it (it does the DDL); ``None`` is the shared mode.
    ``prepare`` runs before the grant is stored (a crash in between leaves a role that
    start-up reconciliation drops); ``discard`` undoes it if storing fails; ``extended``
    runs before the new expiry is stored; ``revoked`` after the revocation is committed.
    """

    mode: str  # "mapped" | "per-grant"

    async def prepare(self, grant: Grant) -> Grant: ...

    async def discard(self, grant: Grant) -> None: ...

    async def extended(self, grant: Grant, expires_at: dt.datetime) -> None: ...

    async def revoked(self, grant: Grant) -> None: ...


class ProvisionError(RuntimeError):
    """A ``RoleHook`` could not create, change or drop a grant's database role (the grant
    change does not happen)."""


class StoreConfigError(ValueError):
    """The store URL is unusable or unsafe (e.g. it points at the upstream database)."""


class GrantStore(abc.ABC):
    """Async grant store; ``open_store(url)`` returns an opened SQLite or PostgreSQL one.

    Every change (issue, extend, revoke) calls ``on_event(kind, payload)`` with kind
    ``grant.issued`` | ``grant.extended`` | ``grant.revoked``; tokens and verifiers are
    never in the payload. Expiry is noticed by the proxy, not here.

    ``event_stream()`` names the control stream those events are recorded in (by default,
    when ``on_event`` is a ``Recorder``'s ``control_event``, that recorder's): each change
    stores it with the grant (``issued_stream``, ``extended_stream``, ``revoked_stream``),
    so what the proxy records of the grant names where its events are (a stream deleted
    whole is then missing, not a grant issued without a recorder).
    """

    def __init__(
        self,
        *,
        on_event: EventCallback | None = None,
        max_ttl: dt.timedelta = DEFAULT_MAX_TTL,
        clock: Clock = utcnow,
        iterations: int = DEFAULT_ITERATIONS,
        roles: RoleHook | None = None,
        event_stream: StreamCallback | None = None,
    ):
        self.roles = roles
        self.on_event = on_event
        self.event_stream = event_stream if event_stream is not None else _stream_of(on_event)
        self.max_ttl = max_ttl
        self.clock = clock
        self.iterations = iterations
        self._login_secret = b""

    # ---- public API -----------------------------------------------------------------

    async def issue(
        self,
        agent: object,
        task: object,
        reason: object,
        granted_by: object,
        database: object,
        scopes: object,
        ttl: object,
        not_before: object = None,
        enforce: object = True,
        record_rows: object = "full",
        db_role: object = None,
    ) -> tuple[Grant, str]:
        """Validate, create and store a grant; returns it with its token (shown once).
        Every argument is validated here (``validate_issue``): callers pass what they got.

        With a role hook the grant's database role is made (per-grant) or checked
        (mapped, ``db_role`` names it) before the grant is stored.
        """
        now = self._now()
        mode = self.roles.mode if self.roles is not None else "shared"
        if db_role is not None and mode != "mapped":
            raise GrantError("db_role", f"a database role is named only with upstream.roles = mapped (this store is {mode})")
        if db_role is None and mode == "mapped":
            raise GrantError("db_role", "is required with upstream.roles = mapped (the database role the grant logs in as)")
        if db_role is not None:
            from ..roles import validate_db_role

            db_role = validate_db_role(db_role)
        req = validate_issue(
            agent=agent,
            task=task,
            reason=reason,
            granted_by=granted_by,
            database=database,
            scopes=scopes,
            ttl=ttl,
            now=now,
            not_before=not_before,
            enforce=enforce,
            record_rows=record_rows,
            max_ttl=self.max_ttl,
        )
        salt, iterations = await self._ensure_agent(req.agent, new_salt(), self.iterations, now)
        token = new_token()
        verifier = await asyncio.to_thread(token_verifier, token, salt, iterations)
        grant = Grant(
            id=new_grant_id(),
            agent=req.agent,
            task=req.task,
            reason=req.reason,
            granted_by=req.granted_by,
            database=req.database,
            scopes=req.scopes,
            not_before=req.not_before,
            expires_at=req.expires_at,
            revoked_at=None,
            created_at=now,
            verifier=verifier,
            enforce=req.enforce,
            record_rows=req.record_rows,
            revoked_by=None,
            updated_at=now,
            db_role=db_role,
        )
        if self.roles is not None:
            grant = await self.roles.prepare(grant)
        grant = replace(grant, issued_stream=self._stream())
        try:
            await self._insert(grant)
        except BaseException:
            if self.roles is not None:
                with contextlib.suppress(Exception):  # reconciliation drops it otherwise
                    await asyncio.shield(self.roles.discard(grant))
            raise
        self._emit("grant.issued", grant, by=grant.granted_by, at=now)
        return grant, token

    async def get(self, grant_id: str) -> Grant | None:
        if not isinstance(grant_id, str) or not grant_id:
            return None
        rows = await self._fetch(grant_id=grant_id)
        return rows[0] if rows else None

    async def for_agent(
        self, agent: str, *, ended_within: dt.timedelta | None = LOGIN_HISTORY
    ) -> list[Grant]:
        """Login candidates: ``agent``'s grants that are live, not yet valid, or ended
        (expired or revoked) less than ``ended_within`` ago; ``None``: every grant.

        Recently ended grants stay candidates so a stale token gets "expired"/"revoked"
        rather than "authentication failed"; older ones are left out so an agent's login
        does not get slower with every task it has ever had. The proxy filters by
        ``status(now)``.
        """
        if ended_within is None:
            return await self._fetch(agent=agent)
        return await self._fetch(agent=agent, ended_after=self._now() - ended_within)

    async def list(
        self, agent: str | None = None, task: str | None = None, active: bool | None = None
    ) -> list[Grant]:
        """Grants oldest first; ``active`` True/False filters on ``status(now) == "active"``."""
        grants = await self._fetch(agent=agent, task=task)
        if active is None:
            return grants
        now = self._now()
        return [g for g in grants if g.is_active(now) == active]

    async def revoke(self, grant_id: str, by: str) -> Grant:
        """Revoke now; revoking an already revoked grant keeps the first time and ``by``."""
        by = validate_by(by)
        now = self._now()
        changed = await self._set_revoked(grant_id, now, by, self._stream())
        grant = await self.get(grant_id)
        if grant is None:
            raise GrantNotFound(grant_id)
        if changed:
            self._emit("grant.revoked", grant, by=by, at=now)
        if self.roles is not None and grant.db_role:
            await self.roles.revoked(grant)
        return grant

    async def extend(self, grant_id: str, ttl: object, by: str) -> Grant:
        """Push ``expires_at`` out by ``ttl`` (from now if already expired); not if revoked."""
        delta = parse_ttl(ttl)
        by = validate_by(by)
        for _ in range(5):  # optimistic concurrency: retry if another writer moved it
            grant = await self.get(grant_id)
            if grant is None:
                raise GrantNotFound(grant_id)
            if grant.revoked_at is not None:
                raise GrantStateError(f"grant {grant_id} is revoked; issue a new grant instead")
            now = self._now()
            new_expiry = max(grant.expires_at, now) + delta
            if new_expiry - max(now, grant.not_before) > self.max_ttl:
                raise GrantError(
                    "ttl",
                    f"would leave the grant valid for more than the maximum "
                    f"{format_ttl(self.max_ttl)}",
                )
            if self.roles is not None and grant.db_role:
                # Before the store: the role may outlive the grant, never the other way.
                await self.roles.extended(grant, new_expiry)
            stream = self._stream()
            if await self._set_expiry(grant_id, grant.expires_at, new_expiry, now, stream):
                updated = replace(
                    grant, expires_at=new_expiry, updated_at=now, extended_stream=stream
                )
                if self.roles is not None and grant.db_role:
                    # Again after: a sweep may have dropped the role of the expired grant
                    # between the first call and the store; it is made again then.
                    await self.roles.extended(updated, new_expiry)
                self._emit(
                    "grant.extended",
                    updated,
                    by=by,
                    at=now,
                    previous_expires_at=grant.expires_at,
                )
                return updated
        raise GrantStateError(f"grant {grant_id} is being changed concurrently; try again")

    async def get_many(self, grant_ids: Iterable[str]) -> dict[str, Grant]:
        """The grants with these ids that exist, by id (for role reconciliation)."""
        ids = sorted(set(grant_ids))
        out: dict[str, Grant] = {}
        for i in range(0, len(ids), 500):
            for grant in await self._fetch(grant_ids=ids[i : i + 500]):
                out[grant.id] = grant
        return out

    async def changed_since(self, ts: dt.datetime) -> builtins.list[Grant]:
        """Grants issued, extended or revoked after ``ts`` (by ``updated_at``), oldest first.

        Writers commit in their own time, so pollers should pass their previous cursor
        minus a small margin; applying a change twice is harmless.
        """
        if not isinstance(ts, dt.datetime) or ts.tzinfo is None:
            raise ValueError("changed_since needs a timezone-aware datetime")
        return await self._fetch(since=ts)

    async def unended(self) -> builtins.list[Grant]:
        """Grants neither expired nor revoked (usable now or later): the metrics' census."""
        return await self._fetch(ended_after=self._now())

    async def expire_due(self, *, within: dt.timedelta = LOGIN_HISTORY) -> builtins.list[Grant]:
        """Emit ``grant.expired`` for each grant whose expiry has passed (in the last
        ``within``) and that no one has reported yet; returns those this call reported.

        Proxies call this from their housekeeping, so the event is emitted when the expiry
        happens, whether or not a session was live. Several proxies sharing the store each
        try; a claim row in the store (``grant_store_meta``, key ``expired:<id>:<expiry>``)
        lets exactly one of them emit it. A grant extended after it expired expires again,
        under a new key.
        """
        now = self._now()
        seen = self.__dict__.setdefault("_expiry_reported", set())
        done = []
        for grant in await self._fetch(ended_after=now - within):
            if grant.expires_at > now or grant.expires_at <= now - within:
                continue
            if grant.revoked_at is not None and grant.revoked_at <= grant.expires_at:
                continue  # revoked before it could expire
            key = f"expired:{grant.id}:{_ts(grant.expires_at)}"
            if key in seen:
                continue
            if await self._claim(key, _ts(now).encode()):
                self._emit("grant.expired", grant, by="pgwitness (expiry)", at=grant.expires_at,
                           noticed_at=now)
                done.append(grant)
            seen.add(key)
        return done

    async def login_salt(self, agent: str) -> tuple[bytes, int]:
        """(salt, iterations) for SCRAM's server-first-message.

        The agent's real shared salt if it has grants; otherwise a stable fake derived
        from a per-store secret, so probing does not reveal which agents exist.
        """
        known = await self._agent_salt(agent)
        if known is not None:
            return known
        return fake_login_salt(self._login_secret, agent), self.iterations

    @property
    def store_id(self) -> str:
        """A stable, public name for this store (every proxy sharing it gets the same)."""
        return hashlib.sha256(b"pgwitness-store-id\0" + self._login_secret).hexdigest()[:16]

    async def close(self) -> None:
        if self.roles is not None and hasattr(self.roles, "close"):
            await self.roles.close()

    async def __aenter__(self) -> GrantStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- shared helpers -------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self.clock().astimezone(dt.UTC)

    def _stream(self) -> str | None:
        """The control stream this change's event will be recorded in, or None (no
        recorder, or it cannot say: the change is stored naming none, as without one)."""
        if self.event_stream is None:
            return None
        try:
            sid = self.event_stream()
        except Exception:
            log.exception("grant store: the recorder could not name its control stream")
            return None
        return sid if isinstance(sid, str) and sid else None

    def _emit(self, kind: str, grant: Grant, *, by: str, at: dt.datetime, **extra: Any) -> None:
        if self.on_event is None:
            return
        payload = {
            "grant_id": grant.id,
            "agent": grant.agent,
            "task": grant.task,
            "reason": grant.reason,
            "database": grant.database,
            "scopes": grant.scopes,
            "enforce": grant.enforce,
            "record_rows": grant.record_rows,
            "by": by,
            "at": at.isoformat(),
            "not_before": grant.not_before.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
            "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
        }
        for key, value in extra.items():
            payload[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        try:
            self.on_event(kind, payload)
        except Exception:  # the change is committed; a failing listener must not undo it
            log.exception("grant event listener failed for %s %s", kind, grant.id)

    # ---- storage primitives ---------------------------------------------------------

    @abc.abstractmethod
    async def _ensure_agent(
        self, agent: str, salt: bytes, iterations: int, now: dt.datetime
    ) -> tuple[bytes, int]:
        """Record (salt, iterations) for a new agent; return what the agent has."""

    @abc.abstractmethod
    async def _agent_salt(self, agent: str) -> tuple[bytes, int] | None: ...

    @abc.abstractmethod
    async def _insert(self, grant: Grant) -> None: ...

    @abc.abstractmethod
    async def _fetch(
        self,
        *,
        grant_id: str | None = None,
        agent: str | None = None,
        task: str | None = None,
        since: dt.datetime | None = None,
        ended_after: dt.datetime | None = None,
        grant_ids: builtins.list[str] | None = None,
    ) -> builtins.list[Grant]: ...

    @abc.abstractmethod
    async def _set_revoked(
        self, grant_id: str, at: dt.datetime, by: str, stream: str | None = None
    ) -> bool:
        """Set revoked_at/by/stream if not yet revoked; True if this call revoked it."""

    @abc.abstractmethod
    async def _claim(self, key: str, value: bytes) -> bool:
        """Insert ``key`` into grant_store_meta unless present; True if this call did."""

    @abc.abstractmethod
    async def _set_expiry(
        self,
        grant_id: str,
        old: dt.datetime,
        new: dt.datetime,
        at: dt.datetime,
        stream: str | None = None,
    ) -> bool:
        """Compare-and-set expires_at, and extended_stream to ``stream`` (unrevoked grants
        only); True on success."""


def _stream_of(on_event: EventCallback | None) -> StreamCallback | None:
    """``recorder.control_stream_id`` of the recorder whose ``control_event`` ``on_event``
    is (as ``proxy.runtime`` and ``pgwitness grant --config`` pass it); else None."""
    owner = getattr(on_event, "__self__", None)
    if owner is None:
        return None
    from recorder import Recorder, control_stream_id

    if not isinstance(owner, Recorder) or on_event != owner.control_event:
        return None
    return functools.partial(control_stream_id, owner)


def _where(
    grant_id: str | None,
    agent: str | None,
    task: str | None,
    since: dt.datetime | None,
    ended_after: dt.datetime | None,
    placeholder: Callable[[int], str],
    since_value: Callable[[dt.datetime], Any],
    grant_ids: list[str] | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if grant_ids is not None:
        marks: list[str] = []
        for value in grant_ids:
            args.append(value)
            marks.append(placeholder(len(args)))
        clauses.append(f"id IN ({', '.join(marks) or 'NULL'})")
    for column, key in (("id", grant_id), ("agent", agent), ("task", task)):
        if key is not None:
            args.append(key)
            clauses.append(f"{column} = {placeholder(len(args))}")
    if since is not None:
        args.append(since_value(since))
        clauses.append(f"updated_at > {placeholder(len(args))}")
    if ended_after is not None:
        args.append(since_value(ended_after))
        expires = placeholder(len(args))
        args.append(since_value(ended_after))
        revoked = placeholder(len(args))
        clauses.append(f"expires_at > {expires} AND (revoked_at IS NULL OR revoked_at > {revoked})")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return where, args


def _ts(value: dt.datetime) -> str:
    # Fixed-width UTC text sorts like the time it names, so SQL can compare it.
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


@overload
def _from_ts(value: str) -> dt.datetime: ...
@overload
def _from_ts(value: None) -> None: ...
def _from_ts(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()
