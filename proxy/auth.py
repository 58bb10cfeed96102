"""Static users (development, benchmarks) and the login-failure wording.

The login seam (``Identity``, ``AuthPlan``, ``Authenticator``) and the grant
authenticator live in ``policy.grants.auth``; the login throttle in
``common.throttle``. The server imports those names from here too.
"""

from __future__ import annotations

import hmac
import os

from common.throttle import FailureThrottle
from common.wire.errors import INVALID_PASSWORD, PgError
from common.wire.scram import DEFAULT_ITERATIONS, make_verifier
from policy.grants.auth import Authenticator, AuthPlan, GrantAuthenticator, Identity, refused

# Re-exported: proxy.server takes the login seam from here.
__all__ = [
    "AuthPlan", "Authenticator", "FailureThrottle", "GrantAuthenticator", "Identity",
    "StaticUsers", "auth_failed", "refused",
]


def auth_failed(user: str) -> PgError:
    return PgError.fatal_error(f'password authentication failed for user "{user}"', INVALID_PASSWORD)


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

    def knows(self, user: str) -> bool:
        return user in self._verifiers

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
