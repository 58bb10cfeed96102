"""Who is connecting: the login seam, and task grants answering it.

An ``Authenticator`` answers in two steps, because SCRAM's server-first message (salt,
iterations) must be sent before the client proves which token it holds:
``begin(user, database)`` returns the salt and the candidate keys, and ``identify(plan,
index)`` turns the candidate the proof matched into an ``Identity``, or refuses it
(expired, revoked, wrong database) with a FATAL that says which. ``candidate(plan,
index)`` says who it would be without I/O, so the proxy can start the upstream login
before the proof is checked (``identify`` still decides).

``GrantAuthenticator`` answers from the grant store; ``proxy.auth.StaticUsers`` (the
development users of ``[auth] users``) is the other implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from common.wire.errors import INVALID_AUTHORIZATION, Refused
from common.wire.scram import Verifier

from ..scopes import Scopes, parse_scopes
from .model import Grant

if TYPE_CHECKING:
    from .store import GrantStore


@dataclass(frozen=True)
class Identity:
    """The authenticated party a session acts for; carried into logs, metrics and records."""

    agent: str
    task: str
    grant_id: str
    scopes: Scopes | None = None  # None: an unrestricted static user
    scopes_text: str = ""
    enforce: bool = True
    record_rows: str = "full"
    expires_at: datetime | None = None
    reason: str = ""
    granted_by: str = ""
    db_role: str = ""  # the grant's database role ("" = the proxy's shared login)
    # (event kind, control stream id) of the grant's recorded changes (Grant.event_streams);
    # None for a static user. The session's start records them (``grant_streams``).
    grant_streams: tuple[tuple[str, str], ...] | None = None


@dataclass
class AuthPlan:
    user: str
    database: str
    iterations: int
    salt: bytes
    candidates: list[tuple[bytes, bytes]]
    context: list[Any] = field(default_factory=list)  # one entry per candidate


def refused(message: str, reason: str, grant: str | None = None) -> Refused:
    """A FATAL 28000 login refusal; ``reason`` labels the auth-failure metric and the
    ``login.refused`` event, which names ``grant`` too."""
    return Refused(message, INVALID_AUTHORIZATION, reason=reason, grant=grant)


class Authenticator(Protocol):
    """What the server's login calls (``StaticUsers``, ``GrantAuthenticator``)."""

    async def begin(self, user: str, database: str) -> AuthPlan: ...

    async def identify(self, plan: AuthPlan, index: int) -> Identity: ...

    def candidate(self, plan: AuthPlan, index: int) -> Identity | None:
        """Who candidate ``index`` would be, without I/O (lets the proxy start the upstream
        login before the proof is checked; ``identify`` still decides)."""
        ...


class StaticLogins(Authenticator, Protocol):
    """An authenticator a ``GrantAuthenticator`` falls back to for users with no grants."""

    def knows(self, user: str) -> bool: ...


class GrantAuthenticator:
    """Task grants from the grant store: the token's grant decides task, scopes and expiry."""

    def __init__(self, store: GrantStore, *, static: StaticLogins | None = None):
        self.store = store
        self.static = static

    async def begin(self, user: str, database: str) -> AuthPlan:
        grants = await self.store.for_agent(user)
        if not grants:
            if self.static is not None and self.static.knows(user):
                return await self.static.begin(user, database)
            # The store's answer for unknown agents is the same on every proxy sharing it
            # and across restarts, so nothing reveals which agents exist.
            salt, iterations = await self.store.login_salt(user)
            return AuthPlan(user, database, iterations, salt, [])
        verifiers = [(g, Verifier.decode(g.verifier)) for g in grants]
        # All of an agent's grants share one salt; if an old one differs, it cannot be
        # matched in this exchange and is left out.
        newest = max(verifiers, key=lambda gv: gv[0].created_at)[1]
        chosen = [
            (g, v) for g, v in verifiers if v.salt == newest.salt and v.iterations == newest.iterations
        ]
        return AuthPlan(
            user,
            database,
            newest.iterations,
            newest.salt,
            [(v.stored_key, v.server_key) for _, v in chosen],
            [g for g, _ in chosen],
        )

    async def identify(self, plan: AuthPlan, index: int) -> Identity:
        grant = plan.context[index]
        if isinstance(grant, str):  # a static user
            assert self.static is not None  # only begin() put it there
            return await self.static.identify(plan, index)
        now = datetime.now(UTC)
        fresh = await self.store.get(grant.id) or grant
        status = fresh.status(now)
        if status == "revoked":
            raise refused(f"grant {fresh.id} for task {fresh.task} was revoked", "revoked", fresh.id)
        if status == "expired":
            raise refused(
                f"grant {fresh.id} for task {fresh.task} expired at {fresh.expires_at.isoformat()}",
                "expired",
                fresh.id,
            )
        if status == "not_yet_valid":
            raise refused(
                f"grant {fresh.id} for task {fresh.task} is not valid before "
                f"{fresh.not_before.isoformat()}",
                "not_yet_valid",
                fresh.id,
            )
        if plan.database != fresh.database:
            raise refused(
                f'grant {fresh.id} for task {fresh.task} does not cover database "{plan.database}"',
                "wrong_database",
                fresh.id,
            )
        return _grant_identity(fresh)

    def candidate(self, plan: AuthPlan, index: int) -> Identity | None:
        """Who candidate ``index`` would be, from the plan alone (no I/O; None if the plan
        already shows it would be refused). ``identify`` decides; this only lets the proxy
        prepare the session meanwhile."""
        grant = plan.context[index]
        if isinstance(grant, str):
            assert self.static is not None
            return self.static.candidate(plan, index)
        if grant.status(datetime.now(UTC)) != "active" or grant.database != plan.database:
            return None
        return _grant_identity(grant)


def _grant_identity(grant: Grant) -> Identity:
    return Identity(
        agent=grant.agent,
        task=grant.task,
        grant_id=grant.id,
        scopes=parse_scopes(grant.scopes),
        scopes_text=grant.scopes,
        enforce=grant.enforce,
        record_rows=grant.record_rows,
        expires_at=grant.expires_at,
        reason=grant.reason,
        granted_by=grant.granted_by,
        db_role=grant.db_role or "",
        grant_streams=tuple(grant.event_streams().items()),
    )
