"""Task-scoped grants: the ``Grant`` model, input validation, tokens, verifiers and DSNs.

A grant lets one agent touch one database, within scopes, for one task, for a while. Its
token is shown once and kept only as a SCRAM-SHA-256 verifier. All grants of one agent
share one salt and iteration count: the proxy must send SCRAM's server-first-message
(salt, iterations) before it knows which of the agent's grants the token belongs to.

Everything here is pure; ``policy.grants.store`` does the I/O.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from common.wire.scram import DEFAULT_ITERATIONS, Verifier, make_verifier

__all__ = [
    "DEFAULT_MAX_TTL",
    "RECORD_ROWS",
    "TOKEN_PREFIX",
    "Grant",
    "GrantError",
    "GrantNotFound",
    "GrantStateError",
    "IssueRequest",
    "fake_login_salt",
    "format_ttl",
    "make_dsn",
    "new_grant_id",
    "new_salt",
    "new_token",
    "parse_time",
    "parse_ttl",
    "token_verifier",
    "utcnow",
    "validate_agent",
    "validate_database",
    "validate_issue",
]

TOKEN_PREFIX = "pgw_"
TOKEN_BYTES = 24  # 192 bits of entropy; token_urlsafe(24) is 32 characters
GRANT_ID_PREFIX = "gr_"
SALT_BYTES = 16
DEFAULT_MAX_TTL = dt.timedelta(days=7)
RECORD_ROWS = ("full", "counts")
STATUSES = ("active", "not_yet_valid", "expired", "revoked")

_AGENT_RE = re.compile(r"[a-z0-9_.-]{1,63}")
_DATABASE_RE = re.compile(r"[A-Za-z0-9_$.-]{1,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NOT_NL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TTL_RE = re.compile(r"(\d+)([smhd])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

MAX_TASK = 200
MAX_REASON = 2000
MAX_GRANTED_BY = 200


class GrantError(ValueError):
    """Invalid grant input; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class GrantNotFound(LookupError):
    """No grant with that id."""

    def __init__(self, grant_id: str):
        super().__init__(f"no grant with id {grant_id!r}")
        self.grant_id = grant_id


class GrantStateError(ValueError):
    """The grant's state does not allow the change (e.g. extending a revoked grant)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime; pgwitness stores aware UTC times")
    return value.astimezone(dt.UTC)


@dataclass(frozen=True)
class Grant:
    id: str
    agent: str
    task: str
    reason: str
    granted_by: str
    database: str
    scopes: str  # canonical Scopes.text
    not_before: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    verifier: str  # common.wire.scram.Verifier.encode()
    enforce: bool = True  # False: dry-run, "would deny" is recorded, statements pass
    record_rows: str = "full"  # "full" | "counts"
    # Additions beyond the architecture contract (defaults keep it compatible):
    revoked_by: str | None = None
    updated_at: dt.datetime | None = None  # last issue/extend/revoke; changed_since cursor
    # The database role the grant's sessions log in as: None = the proxy's shared login;
    # a per-grant role (pgw_g_<id>, made by pgwitness) or a mapped one (named at issue).
    db_role: str | None = None
    # The control stream (a recording's session id) that holds the event of the grant's
    # issue, latest extension and revocation: the recorder of the process that made the
    # change; None without one (or a store older than schema 3). The proxy records them in
    # each session's start (``grant_streams``), so an audit can tell a deleted stream from
    # a grant issued without a recorder (docs/recording-format.md).
    issued_stream: str | None = None
    extended_stream: str | None = None
    revoked_stream: str | None = None

    def event_streams(self) -> dict[str, str]:
        """``{event kind: control stream id}`` for the changes a recorder recorded."""
        pairs = (
            ("grant.issued", self.issued_stream),
            ("grant.extended", self.extended_stream),
            ("grant.revoked", self.revoked_stream),
        )
        return {kind: sid for kind, sid in pairs if sid}

    def status(self, now: dt.datetime) -> str:
        """``active`` | ``not_yet_valid`` | ``expired`` | ``revoked`` at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if now < self.not_before:
            return "not_yet_valid"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def is_active(self, now: dt.datetime) -> bool:
        return self.status(now) == "active"

    def scram_verifier(self) -> Verifier:
        return Verifier.decode(self.verifier)

    def to_dict(self, now: dt.datetime | None = None) -> dict:
        """Public JSON-able view: everything but the verifier; ``status`` if ``now`` given."""
        out = {
            "id": self.id,
            "agent": self.agent,
            "task": self.task,
            "reason": self.reason,
            "granted_by": self.granted_by,
            "database": self.database,
            "scopes": self.scopes,
            "not_before": _iso(self.not_before),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "enforce": self.enforce,
            "record_rows": self.record_rows,
            "db_role": self.db_role,
            "event_streams": self.event_streams(),
        }
        if now is not None:
            out["status"] = self.status(now)
        return out

    def __repr__(self) -> str:  # keep the verifier out of logs and tracebacks
        return (
            f"Grant(id={self.id!r}, agent={self.agent!r}, task={self.task!r}, "
            f"database={self.database!r}, expires_at={_iso(self.expires_at)}, "
            f"revoked_at={_iso(self.revoked_at)})"
        )


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat(timespec="microseconds")


# ---- tokens, salts, verifiers ------------------------------------------------------


def new_token() -> str:
    """A fresh grant token: ``pgw_`` + 192 random bits, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_grant_id() -> str:
    return GRANT_ID_PREFIX + secrets.token_hex(8)


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def token_verifier(token: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The stored form of a token: an encoded SCRAM-SHA-256 verifier."""
    return make_verifier(token, salt, iterations).encode()


def fake_login_salt(secret: bytes, agent: str) -> bytes:
    """Stable salt for an agent with no grants, so SCRAM does not reveal who exists."""
    return hmac.digest(secret, b"pgwitness-login-salt\0" + agent.encode(), "sha256")[:SALT_BYTES]


def make_dsn(agent: str, token: str, host: str, port: int, database: str) -> str:
    """``postgresql://<agent>:<token>@<host>:<port>/<database>``, every part URL-quoted."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return (
        f"postgresql://{quote(agent, safe='')}:{quote(token, safe='')}"
        f"@{host}:{int(port)}/{quote(database, safe='')}"
    )


# ---- parsing ----------------------------------------------------------------------


def parse_ttl(value: object, field: str = "ttl") -> dt.timedelta:
    """``30s``/``30m``/``2h``/``1d`` (or combined ``1h30m``), seconds as a number, or timedelta."""
    if isinstance(value, dt.timedelta):
        ttl = value
    elif isinstance(value, bool):
        raise GrantError(field, "must be a duration like 30m, 2h, 1d or a number of seconds")
    elif isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise GrantError(field, "must be a finite number of seconds")
        ttl = dt.timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            ttl = dt.timedelta(seconds=int(text))
        else:
            parts = _TTL_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise GrantError(
                    field, f"{value!r} is not a duration; use e.g. 30s, 30m, 2h, 1d, 1h30m"
                )
            ttl = dt.timedelta(seconds=sum(int(n) * _TTL_UNITS[u] for n, u in parts))
    else:
        raise GrantError(field, "must be a duration like 30m, 2h, 1d or a number of seconds")
    if ttl <= dt.timedelta(0):
        raise GrantError(field, "must be positive")
    return ttl


def format_ttl(ttl: dt.timedelta) -> str:
    """Short human form, e.g. ``1h30m``."""
    seconds = int(ttl.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def parse_time(value: object, field: str) -> dt.datetime:
    """ISO 8601 (``Z`` allowed); a time without offset is taken as UTC."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise GrantError(
                field, f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31T09:00:00Z)"
            ) from None
    else:
        raise GrantError(field, "must be an ISO 8601 time string")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


# ---- validation -------------------------------------------------------------------


def validate_agent(agent: object) -> str:
    """An agent name is the Postgres user name in its DSN: 1-63 of ``[a-z0-9_.-]``."""
    if not isinstance(agent, str) or not agent:
        raise GrantError("agent", "is required")
    if len(agent) > 63:
        raise GrantError("agent", f"{agent[:20]!r}... is longer than 63 characters")
    if not _AGENT_RE.fullmatch(agent):
        hint = " (lower case only)" if agent.lower() != agent else ""
        raise GrantError(
            "agent",
            f"{agent!r} may only contain a-z, 0-9, '_', '.', '-'{hint}; no '@' or ':'",
        )
    return agent


def validate_database(database: object) -> str:
    if not isinstance(database, str) or not database:
        raise GrantError("database", "is required")
    if not _DATABASE_RE.fullmatch(database):
        raise GrantError(
            "database", f"{database[:70]!r} is not a database name (1-63 of A-Za-z0-9_$.-)"
        )
    return database


def _validate_text(field: str, value: object, limit: int, *, newlines: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GrantError(field, "is required")
    value = value.strip()
    if len(value) > limit:
        raise GrantError(field, f"is longer than {limit} characters")
    if (_CONTROL_NOT_NL_RE if newlines else _CONTROL_RE).search(value):
        raise GrantError(field, "contains control characters")
    return value


def validate_record_rows(value: object) -> str:
    if value not in RECORD_ROWS:
        raise GrantError("record_rows", f"{value!r} is not one of {', '.join(RECORD_ROWS)}")
    return value


def validate_scopes(value: object) -> str:
    """Canonical scope text via ``policy.scopes.parse_scopes``."""
    from policy.scopes import ScopeError, parse_scopes

    if isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            raise GrantError("scopes", "must be a string or a list of strings")
        if any(not v.strip() for v in value):
            raise GrantError("scopes", "an empty scope in the list")
        value = " ".join(v.strip() for v in value)
    if not isinstance(value, str) or not value.strip():
        raise GrantError("scopes", "at least one scope is required (e.g. read:public.orders)")
    try:
        return parse_scopes(value).text
    except ScopeError as exc:
        raise GrantError("scopes", str(exc)) from None


@dataclass(frozen=True)
class IssueRequest:
    """Validated input for issuing a grant (times resolved, scopes canonical)."""

    agent: str
    task: str
    reason: str
    granted_by: str
    database: str
    scopes: str
    not_before: dt.datetime
    expires_at: dt.datetime
    enforce: bool
    record_rows: str


def validate_issue(
    *,
    agent: object,
    task: object,
    reason: object,
    granted_by: object,
    database: object,
    scopes: object,
    ttl: object,
    now: dt.datetime,
    not_before: object = None,
    enforce: object = True,
    record_rows: object = "full",
    max_ttl: dt.timedelta = DEFAULT_MAX_TTL,
) -> IssueRequest:
    """Check every field; the first bad one raises GrantError naming it.

    The grant is valid from ``not_before`` (default: now) for ``ttl``.
    """
    agent = validate_agent(agent)
    task = _validate_text("task", task, MAX_TASK)
    reason = _validate_text("reason", reason, MAX_REASON, newlines=True)
    granted_by = _validate_text("granted_by", granted_by, MAX_GRANTED_BY)
    database = validate_database(database)
    scopes_text = validate_scopes(scopes)
    ttl_delta = parse_ttl(ttl)
    if ttl_delta > max_ttl:
        raise GrantError(
            "ttl", f"{format_ttl(ttl_delta)} exceeds the maximum {format_ttl(max_ttl)}"
        )
    start = now if not_before is None else parse_time(not_before, "not_before")
    if start > now + max_ttl:
        raise GrantError("not_before", f"is more than {format_ttl(max_ttl)} in the future")
    if not isinstance(enforce, bool):
        raise GrantError("enforce", "must be true or false")
    return IssueRequest(
        agent=agent,
        task=task,
        reason=reason,
        granted_by=granted_by,
        database=database,
        scopes=scopes_text,
        not_before=start,
        expires_at=max(start, now) + ttl_delta,
        enforce=enforce,
        record_rows=validate_record_rows(record_rows),
    )


def validate_by(by: object) -> str:
    return _validate_text("by", by, MAX_GRANTED_BY)
