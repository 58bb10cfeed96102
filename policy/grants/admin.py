"""Admin HTTP API for grants: a small HTTP/1.1 JSON server on asyncio streams.

Not on the hot path, so streams rather than a Protocol; one request per connection.
Every ``/v1`` route needs ``Authorization: Bearer <admin token>`` (missing → 401, wrong →
403); ``/healthz`` does not. Clients get ``{"error": "..."}`` and a 4xx for anything they
did wrong; an unexpected failure is a 500 ``{"error": "internal error"}`` and its
traceback goes to the server log only.

    POST /v1/grants                 issue → 201 {grant, dsn, token}
    GET  /v1/grants?agent=&task=&active=
    GET  /v1/grants/{id}
    POST /v1/grants/{id}/revoke     {"by"?}
    POST /v1/grants/{id}/extend     {"ttl", "by"?}
    GET  /healthz
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from common.throttle import FailureThrottle

from .model import GrantError, GrantNotFound, GrantStateError, make_dsn
from .store import GrantStore, ProvisionError, StoreConfigError

__all__ = ["AdminServer", "HttpError"]

log = logging.getLogger("pgwitness.admin")

MAX_BODY = 64 * 1024
MAX_LINE = 8 * 1024
MAX_HEADERS = 64
READ_TIMEOUT = 10.0
MIN_TOKEN_LENGTH = 16

_ISSUE_FIELDS = {
    "agent",
    "task",
    "reason",
    "database",
    "scopes",
    "scope",
    "ttl",
    "not_before",
    "dry_run",
    "enforce",
    "record_rows",
    "granted_by",
    "db_role",
}
_GRANT_PATH = re.compile(r"/v1/grants/([^/]+)(?:/(revoke|extend))?")

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class _ClientGone(Exception):
    """The client closed or reset the connection before sending a whole request."""


class HttpError(Exception):
    """Answer the client with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


class AdminServer:
    """Grant API on its own port, guarded by one admin bearer token."""

    def __init__(
        self,
        store: GrantStore,
        token: str,
        *,
        public_host: str,
        public_port: int,
        granted_by_default: str = "admin-api",
        max_body: int = MAX_BODY,
        fail_delay: float = 0.5,
        fail_window: float = 60.0,
        on_auth_failure: Callable[[], object] = lambda: None,
    ):
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"admin token must be at least {MIN_TOKEN_LENGTH} characters")
        self.store = store
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self.public_host = public_host
        self.public_port = public_port
        self.granted_by_default = granted_by_default
        self.max_body = max_body
        # Wrong or missing tokens slow the next requests from that address (exponential,
        # capped): guessing a token over the network costs seconds per guess.
        self._throttle = FailureThrottle(fail_delay, fail_window)
        self._on_auth_failure = on_auth_failure  # the proxy counts it in its metrics
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, socks: list[socket.socket] | None = None
    ) -> tuple[str, int]:
        """Listen on ``host:port``, or on ``socks``, listening sockets already bound (the
        supervisor binds them before forking, so a busy port fails before any worker runs)."""
        if socks:
            for sock in socks:
                self._servers.append(
                    await asyncio.start_server(self._on_connection, sock=sock, limit=MAX_LINE)
                )
        else:
            self._servers.append(
                await asyncio.start_server(self._on_connection, host, port, limit=MAX_LINE)
            )
        sockname = self._servers[0].sockets[0].getsockname()
        log.info("admin API listening on %s:%s", sockname[0], sockname[1])
        return sockname[0], sockname[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- connection handling ----------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        method = path = "-"
        try:
            try:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        request = await self._read_head(reader)
                except TimeoutError:
                    raise HttpError(408, "request not received in time") from None
                method, path = request.method, request.path
                status, payload, headers = await self._dispatch(request, reader, writer)
            except HttpError as exc:
                status, payload, headers = exc.status, {"error": exc.message}, exc.headers
            except _ClientGone:
                return
            except Exception as exc:
                if _store_unavailable(exc):
                    log.error("admin API: grant store unavailable on %s %s: %r", method, path, exc)
                    status, payload = 503, {"error": "grant store unavailable, try again"}
                    headers = {"Retry-After": "5"}
                else:
                    log.exception("admin API: internal error on %s %s", method, path)
                    status, payload, headers = 500, {"error": "internal error"}, {}
            log.info("admin %s %s %s -> %d", peer[0] if peer else "-", method, path, status)
            await self._respond(writer, status, payload, headers)
            await _linger(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _read_line(self, reader: asyncio.StreamReader, what: str) -> bytes:
        try:
            line = await reader.readuntil(b"\n")
        except ConnectionError:
            raise _ClientGone from None
        except asyncio.LimitOverrunError:
            status = 400 if what == "request line" else 431
            raise HttpError(status, f"{what} too long") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and what == "request line":
                raise _ClientGone from None
            raise HttpError(400, f"incomplete {what}") from None
        return line.rstrip(b"\r\n")

    async def _read_head(self, reader: asyncio.StreamReader) -> Request:
        line = await self._read_line(reader, "request line")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise HttpError(400, "malformed request line") from None
        parts = text.split(" ")
        if (
            len(parts) != 3
            or not parts[0].isalpha()
            or not parts[0].isupper()
            or not parts[1].startswith("/")
            or parts[2] not in ("HTTP/1.0", "HTTP/1.1")
        ):
            raise HttpError(400, "malformed request line")
        method, target, _version = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await self._read_line(reader, "header")
            if not raw:
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(400, "malformed header")
            headers[name.lower()] = value.strip()
        else:
            raise HttpError(431, "too many headers")
        split = urlsplit(target)
        try:
            query = dict(parse_qsl(split.query, keep_blank_values=True, strict_parsing=False))
        except ValueError:
            raise HttpError(400, "malformed query string") from None
        return Request(method, unquote(split.path), query, headers)

    async def _read_body(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        if "transfer-encoding" in request.headers:
            raise HttpError(411, "chunked bodies are not supported; send Content-Length")
        length_text = request.headers.get("content-length", "0")
        if not length_text.isdigit():
            raise HttpError(400, "bad Content-Length")
        length = int(length_text)
        if length > self.max_body:
            raise HttpError(413, f"body larger than {self.max_body} bytes")
        if request.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                return await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "body shorter than Content-Length") from None
        except TimeoutError:
            raise HttpError(408, "request body not received in time") from None
        except ConnectionError:
            raise _ClientGone from None

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict,
        headers: dict[str, str],
    ) -> None:
        body = (json.dumps(payload, indent=None, separators=(",", ":")) + "\n").encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",  # responses may carry a token
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    # ---- routing ---------------------------------------------------------------------

    def _check_auth(self, request: Request) -> None:
        value = request.headers.get("authorization")
        if not value:
            raise HttpError(401, "missing admin token", {"WWW-Authenticate": "Bearer"})
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HttpError(
                401, "use Authorization: Bearer <admin token>", {"WWW-Authenticate": "Bearer"}
            )
        digest = hashlib.sha256(given.strip().encode()).digest()
        if not hmac.compare_digest(digest, self._token_digest):
            raise HttpError(403, "wrong admin token")

    async def _dispatch(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict, dict[str, str]]:
        path = request.path.rstrip("/") or "/"
        if path == "/healthz":
            _allow(request, "GET")
            return 200, {"status": "ok"}, {}
        if path != "/v1/grants" and not path.startswith("/v1/grants/"):
            raise HttpError(404, f"no such endpoint {path}")
        peer = writer.get_extra_info("peername")
        addr = peer[0] if peer else "?"
        delay = self._throttle.delay(addr)
        if delay:
            await asyncio.sleep(delay)  # before the token is looked at, right or wrong
        try:
            self._check_auth(request)
        except HttpError:
            self._throttle.failed(addr)
            self._on_auth_failure()
            log.warning("admin API: refused token from %s", addr)
            raise
        self._throttle.succeeded(addr)
        if path == "/v1/grants":
            _allow(request, "GET", "POST")
            if request.method == "GET":
                return 200, await self._list(request), {}
            body = await self._json_body(request, reader, writer)
            return 201, await self._issue(body), {}
        match = _GRANT_PATH.fullmatch(path)
        if match is None:
            raise HttpError(404, f"no such endpoint {path}")
        grant_id, action = match.groups()
        if action is None:
            _allow(request, "GET")
            grant = await self.store.get(grant_id)
            if grant is None:
                raise HttpError(404, f"no grant with id {grant_id!r}")
            return 200, {"grant": grant.to_dict(self._now())}, {}
        _allow(request, "POST")
        body = await self._json_body(request, reader, writer, optional=True)
        try:
            if action == "revoke":
                _only_fields(body, {"by"})
                grant = await self.store.revoke(grant_id, by=self._by(body, "by"))
            else:
                _only_fields(body, {"ttl", "by"})
                if "ttl" not in body:
                    raise HttpError(400, 'ttl: is required (seconds or e.g. "30m")')
                grant = await self.store.extend(grant_id, body["ttl"], by=self._by(body, "by"))
        except ProvisionError as exc:
            raise HttpError(502, str(exc)) from None
        except GrantNotFound as exc:
            raise HttpError(404, str(exc)) from None
        except GrantStateError as exc:
            raise HttpError(409, str(exc)) from None
        except GrantError as exc:
            raise HttpError(400, str(exc)) from None
        return 200, {"grant": grant.to_dict(self._now())}, {}

    def _now(self) -> dt.datetime:
        return self.store.clock()

    def _by(self, body: dict, key: str) -> str:
        value = body.get(key)
        if value is None:
            return self.granted_by_default
        if not isinstance(value, str):
            raise HttpError(400, f"{key}: must be a string")
        return value

    async def _json_body(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        optional: bool = False,
    ) -> dict:
        raw = await self._read_body(request, reader, writer)
        if not raw.strip():
            if optional:
                return {}
            raise HttpError(400, "a JSON object body is required")
        content_type = request.headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
            raise HttpError(415, "send Content-Type: application/json")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body

    async def _list(self, request: Request) -> dict:
        _only_fields(request.query, {"agent", "task", "active"}, what="query parameter")
        active_text = request.query.get("active", "").lower()
        if active_text in ("", "any"):
            active = None
        elif active_text in ("1", "true", "yes"):
            active = True
        elif active_text in ("0", "false", "no"):
            active = False
        else:
            raise HttpError(400, "active: must be true or false")
        grants = await self.store.list(
            agent=request.query.get("agent") or None,
            task=request.query.get("task") or None,
            active=active,
        )
        now = self._now()
        return {"grants": [g.to_dict(now) for g in grants]}

    async def _issue(self, body: dict) -> dict:
        _only_fields(body, _ISSUE_FIELDS)
        if "scope" in body and "scopes" in body:
            raise HttpError(400, "scopes: give either scopes or scope, not both")
        scopes = body.get("scopes", body.get("scope"))
        enforce = body.get("enforce", True)
        if "dry_run" in body:
            if not isinstance(body["dry_run"], bool):
                raise HttpError(400, "dry_run: must be true or false")
            if "enforce" in body and body["enforce"] == body["dry_run"]:
                raise HttpError(400, "dry_run: contradicts enforce")
            enforce = not body["dry_run"]
        if "ttl" not in body:
            raise HttpError(400, 'ttl: is required (seconds or e.g. "30m")')
        try:
            grant, token = await self.store.issue(
                agent=body.get("agent"),
                task=body.get("task"),
                reason=body.get("reason"),
                granted_by=self._by(body, "granted_by"),
                database=body.get("database"),
                scopes=scopes,
                ttl=body["ttl"],
                not_before=body.get("not_before"),
                enforce=enforce,
                record_rows=body.get("record_rows", "full"),
                db_role=body.get("db_role"),
            )
        except GrantError as exc:
            raise HttpError(400, str(exc)) from None
        except ProvisionError as exc:  # the database refused to make the grant's role
            raise HttpError(502, str(exc)) from None
        dsn = make_dsn(grant.agent, token, self.public_host, self.public_port, grant.database)
        return {"grant": grant.to_dict(self._now()), "dsn": dsn, "token": token}


def _store_unavailable(exc: BaseException) -> bool:
    """A failure to reach the grant store (as opposed to a bug): answered with 503."""
    if isinstance(exc, OSError | sqlite3.OperationalError | StoreConfigError):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    )


def _allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise HttpError(
            405,
            f"method {request.method} not allowed; use {' or '.join(methods)}",
            {"Allow": ", ".join(methods)},
        )


def _only_fields(data: dict, allowed: set[str], what: str = "field") -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise HttpError(
            400, f"unknown {what} {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}"
        )


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then swallow what the client still sends (an unread body we refused).

    Closing a socket with unread input makes the kernel send RST, and the client may lose
    our answer; so we wait, briefly and boundedly, for the client to close first.
    """
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            received = 0
            while received < 4 * MAX_BODY:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += len(chunk)
