"""Who is connecting: SCRAM-SHA-256 against static users (development) or task grants.

An ``Authenticator`` answers in two steps, because SCRAM's server-first message (salt,
iterations) must be sent before the client proves which token it holds:
``begin(user, database)`` returns the salt and the candidate keys, and ``identify(plan,
index)`` turns the candidate the proof matched into an ``Identity``, or refuses it
(expired, revoked, wrong database) with a FATAL that says which.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .wire.errors import INVALID_AUTHORIZATION, INVALID_PASSWORD, PgError, Refused
from .wire.scram import DEFAULT_ITERATIONS, Verifier, make_verifier


@dataclass(frozen=True)
class Identity:
    """The authenticated party a session acts for; carried into logs, metrics and records."""

    agent: str
    task: str
    grant_id: str
    scopes: Any = None  # policy.Scopes, or None for an unrestricted static user
    scopes_text: str = ""
    enforce: bool = True
    record_rows: str = "full"
    expires_at: datetime | None = None
    reason: str = ""
    granted_by: str = ""
    db_role: str = ""  # the grant's database role ("" = the proxy's shared login)


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


def auth_failed(user: str) -> PgError:
    return PgError.fatal_error(f'password authentication failed for user "{user}"', INVALID_PASSWORD)


class Authenticator(Protocol):
    async def begin(self, user: str, database: str) -> AuthPlan: ...

    async def identify(self, plan: AuthPlan, index: int) -> Identity: ...

    # Optional: who candidate ``index`` would be, without I/O (lets the proxy start the
    # upstream login before the proof is checked; identify still decides).
    # def candidate(self, plan: AuthPlan, index: int) -> Identity: ...


def _fake_salt(secret: bytes, user: str) -> bytes:
    """A stable salt for users that do not exist, so their absence is not revealed."""
    return hmac.digest(secret, user.encode(), "sha256")[:16]


class StaticUsers:
    """Users from ``[auth] users`` in the config: unrestricted, for development and benchmarks."""

    def __init__(
        self, users: dict[str, str], iterations: int = DEFAULT_ITERATIONS, record_rows: str = "full"
    ):
        self._secret = os.urandom(32)
        self.record_rows = record_rows
        self._verifiers = {u: make_verifier(p, iterations=iterations) for u, p in users.items()}
        self._iterations = iterations

    async def begin(self, user: str, database: str) -> AuthPlan:
        v = self._verifiers.get(user)
        if v is None:
            return AuthPlan(user, database, self._iterations, _fake_salt(self._secret, user), [])
        return AuthPlan(user, database, v.iterations, v.salt, [(v.stored_key, v.server_key)], [user])

    async def identify(self, plan: AuthPlan, index: int) -> Identity:
        return self.candidate(plan, index)

    def candidate(self, plan: AuthPlan, index: int) -> Identity:
        """Who candidate ``index`` would be, from the plan alone (no I/O, nothing checked)."""
        return Identity(
            agent=plan.user,
            task="(static user)",
            grant_id=f"static:{plan.user}",
            record_rows=self.record_rows,
        )


class GrantAuthenticator:
    """Task grants from the grant store: the token's grant decides task, scopes and expiry."""

    def __init__(self, store, *, static: StaticUsers | None = None):
        self.store = store
        self.static = static

    async def begin(self, user: str, database: str) -> AuthPlan:
        grants = await self.store.for_agent(user)
        if not grants:
            if self.static is not None and user in self.static._verifiers:
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
            return self.static.candidate(plan, index)
        if grant.status(datetime.now(UTC)) != "active" or grant.database != plan.database:
            return None
        return _grant_identity(grant)


def _grant_identity(grant) -> Identity:
    from policy.scopes import parse_scopes

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
    )


class FailureThrottle:
    """Slows down repeated failed logins of one agent from one address (exponential, capped).

    Keyed by ``(agent, address)``: one agent's typos do not slow down the other agents behind
    the same address (a NAT'd fleet), and another agent's success does not reset the count
    (only the same agent's success does: it proved it holds the secret). Guesses in parallel
    do not multiply the rate: once a key has failed, its attempts run one at a time, each
    after the back-off. At most ``per_address`` authentications from one address are in
    flight at once (more wait their turn), which also bounds a burst before the first
    failure. docs/operations.md states the guesses per minute this allows.
    """

    def __init__(self, base_delay: float, window: float, cap: float = 5.0, *, per_address: int = 16):
        self.base_delay = base_delay
        self.window = window
        self.cap = cap
        self.per_address = per_address
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._serial: dict[tuple[str, str], _Shared] = {}
        self._slots: dict[str, _Shared] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures[key]
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def delay(self, addr: str, agent: str = "") -> float:
        key = (agent, addr)
        q = self._recent(key, time.monotonic())
        if not q:
            self._failures.pop(key, None)
            return 0.0
        return min(self.cap, self.base_delay * (2 ** (len(q) - 1)))

    def failed(self, addr: str, agent: str = "") -> None:
        now = time.monotonic()
        q = self._recent((agent, addr), now)
        q.append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of addresses
            self._failures.clear()

    def succeeded(self, addr: str, agent: str = "") -> None:
        self._failures.pop((agent, addr), None)

    @contextlib.asynccontextmanager
    async def attempt(self, addr: str, agent: str):
        """Wrap one authentication: waits for a place for the address, then (if this agent
        failed here recently) for the previous attempt and the back-off."""
        import asyncio

        def slot():  # waiting in a key's queue holds no place of the address
            return _Shared.hold(self._slots, addr, lambda: asyncio.Semaphore(self.per_address))

        key = (agent, addr)
        while key not in self._serial and not self.delay(addr, agent):
            async with slot():
                if key in self._serial or self.delay(addr, agent):
                    continue  # it failed while we waited for a place: queue up instead
                yield
                return
        async with _Shared.hold(self._serial, key, asyncio.Lock):
            wait = self.delay(addr, agent)
            if wait:
                await asyncio.sleep(wait)
            async with slot():
                yield


class _Shared:
    """A lock or semaphore kept in a dict only while someone holds or waits for it."""

    __slots__ = ("obj", "users")

    def __init__(self, obj):
        self.obj = obj
        self.users = 0

    @staticmethod
    @contextlib.asynccontextmanager
    async def hold(table: dict, key, make):
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Shared(make())
        entry.users += 1
        try:
            async with entry.obj:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                table.pop(key, None)
