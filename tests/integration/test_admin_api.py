"""Admin HTTP API: a real socket on 127.0.0.1, a real SQLite grant store."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit

import pytest

from common.wire.scram import ScramClient, ScramServer
from policy.grants.admin import AdminServer
from policy.grants.store import open_store
from proxy import metrics
from tests.support.proxies import metric

TOKEN = "admin-token-0123456789abcdef"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ISSUE = {
    "agent": "billing-bot",
    "task": "INC-4821",
    "reason": "check refunds",
    "database": "app",
    "scopes": "read:public.orders",
    "ttl": "30m",
}


class FakeClock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


class Admin:
    """A running AdminServer plus a tiny raw-socket HTTP client."""

    def __init__(self, server: AdminServer, host: str, port: int, store, events):
        self.server, self.host, self.port, self.store, self.events = (
            server,
            host,
            port,
            store,
            events,
        )

    async def raw(self, data: bytes, *, then: bytes | None = None) -> bytes:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(data)
        await writer.drain()
        if then is not None:
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            writer.write(then)
            await writer.drain()
        writer.write_eof()  # a half-close: the server must not wait for more
        out = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return out

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = TOKEN,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], dict]:
        data = raw_body if raw_body is not None else b""
        if body is not None:
            data = json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        if data or method == "POST":
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        response = await self.raw(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return parse_response(response)


def parse_response(response: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, payload = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(headers["content-length"]) == len(payload)
    assert headers["content-type"] == "application/json"
    return status, headers, json.loads(payload)


def admin_test(fn=None, *, clock=None, store_wrapper=None, fail_delay=0.001):
    """Run ``fn(admin)`` against a fresh server in its own event loop."""

    def decorator(fn):
        def test(tmp_path):
            async def body():
                events: list[tuple[str, dict]] = []
                kwargs = {"on_event": lambda k, p: events.append((k, p))}
                if clock is not None:
                    kwargs["clock"] = clock
                store = await open_store(f"sqlite:///{tmp_path}/grants.db", **kwargs)
                served = store_wrapper(store) if store_wrapper else store
                server = AdminServer(
                    served, TOKEN, public_host="proxy.internal", public_port=6432, fail_delay=fail_delay,
                    on_auth_failure=metrics.ADMIN_AUTH_FAILURES.inc,  # as proxy.runtime wires it
                )
                host, port = await server.start("127.0.0.1", 0)
                try:
                    await fn(Admin(server, host, port, store, events))
                finally:
                    await server.close()
                    await store.close()

            asyncio.run(body())

        test.__name__ = fn.__name__
        test.__doc__ = fn.__doc__
        return test

    return decorator(fn) if fn is not None else decorator


# ---- auth and health ---------------------------------------------------------------------


@admin_test
async def test_healthz_needs_no_token(admin):
    status, _, body = await admin.call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})


@admin_test(fail_delay=0.2)
async def test_wrong_tokens_slow_down_the_next_requests_from_that_address(admin):
    """Guessing the token over the network: each refusal doubles the wait before the next
    request from the address is even looked at, the right token included; a success
    resets it."""
    loop = asyncio.get_running_loop()

    async def timed(token):
        start = loop.time()
        status, _, _ = await admin.call("GET", "/v1/grants", token=token)
        return status, loop.time() - start

    assert (await timed("wrong-token-guess-0"))[0] == 403  # no failure yet: no wait
    assert (await timed(None))[0] == 401
    status, waited = await timed("wrong-token-guess-2")
    assert status == 403 and waited >= 0.4  # two failures: 0.2 * 2
    status, waited = await timed(TOKEN)
    assert status == 200 and waited >= 0.8  # three failures: the right token waits too
    assert admin.server._throttle.delay("127.0.0.1") == 0  # the success reset it
    assert metric("pgwitness_admin_auth_failures_total") >= 3


@admin_test
async def test_missing_and_wrong_token(admin):
    status, headers, body = await admin.call("GET", "/v1/grants", token=None)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "token" in body["error"]
    status, _, body = await admin.call("GET", "/v1/grants", token=TOKEN + "x")
    assert status == 403 and body == {"error": "wrong admin token"}
    status, _, _ = await admin.call("POST", "/v1/grants", ISSUE, token="short")
    assert status == 403
    status, _, _ = await admin.call(
        "GET", "/v1/grants", token=None, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert status == 401
    assert await admin.store.list() == []


def test_admin_token_must_be_long_enough():
    with pytest.raises(ValueError, match="at least 16"):
        AdminServer(object(), "short", public_host="h", public_port=1)


# ---- issuing -------------------------------------------------------------------------------


@admin_test
async def test_issue_returns_dsn_and_token_once(admin):
    status, headers, body = await admin.call("POST", "/v1/grants", ISSUE)
    assert status == 201
    assert headers["cache-control"] == "no-store"
    grant, token, dsn = body["grant"], body["token"], body["dsn"]
    assert token.startswith("pgw_")
    url = urlsplit(dsn)
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "postgresql",
        "proxy.internal",
        6432,
        "/app",
    )
    assert (url.username, unquote(url.password)) == ("billing-bot", token)
    assert grant["granted_by"] == "admin-api"
    assert grant["status"] == "active" and grant["enforce"] is True
    assert "verifier" not in grant and "SCRAM" not in json.dumps(body)

    # The token logs in (SCRAM) against what the store kept; it is not retrievable again.
    (stored,) = await admin.store.for_agent("billing-bot")
    v = stored.scram_verifier()
    server, client = (
        ScramServer(v.iterations, v.salt, [(v.stored_key, v.server_key)]),
        ScramClient(token),
    )
    first = server.first(client.first())
    _, final = server.final(client.final(first))
    client.verify(final)
    _, _, again = await admin.call("GET", f"/v1/grants/{grant['id']}")
    assert token not in json.dumps(again)

    assert [k for k, _ in admin.events] == ["grant.issued"]
    assert admin.events[0][1]["by"] == "admin-api"


@admin_test
async def test_issue_options(admin):
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    status, _, body = await admin.call(
        "POST",
        "/v1/grants",
        {
            **ISSUE,
            "ttl": 600,
            "dry_run": True,
            "record_rows": "counts",
            "granted_by": "alice",
            "scopes": ["read:public.orders", "read:public.customers"],
            "not_before": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    assert status == 201, body
    grant = body["grant"]
    assert grant["enforce"] is False and grant["record_rows"] == "counts"
    assert grant["granted_by"] == "alice"
    assert grant["not_before"] == start.isoformat(timespec="microseconds")
    assert grant["expires_at"] == (start + dt.timedelta(minutes=10)).isoformat(
        timespec="microseconds"
    )
    assert grant["status"] == "not_yet_valid"
    assert "read:public.customers" in grant["scopes"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent": None}, "agent"),
        ({"agent": "Billing Bot"}, "agent"),
        ({"agent": "bot@corp"}, "agent"),
        ({"task": ""}, "task"),
        ({"task": "x" * 201}, "task"),
        ({"reason": None}, "reason"),
        ({"database": None}, "database"),
        ({"scopes": ""}, "scopes"),
        ({"scopes": 7}, "scopes"),
        ({"ttl": "soon"}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": "30d"}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"ttl": None}, "ttl"),
        ({"record_rows": "some"}, "record_rows"),
        ({"not_before": "next week"}, "not_before"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"granted_by": 5}, "granted_by"),
        ({"scop": "read:x"}, "scop"),
    ],
)
def test_invalid_issue_names_the_field(tmp_path, change, field):
    @admin_test
    async def check(admin):
        body = {**ISSUE}
        for key, value in change.items():
            if value is None:
                body.pop(key)
            else:
                body[key] = value
        status, _, answer = await admin.call("POST", "/v1/grants", body)
        assert status == 400, answer
        assert field in answer["error"]
        assert await admin.store.list() == []

    check(tmp_path)


@admin_test
async def test_bad_bodies(admin):
    status, _, body = await admin.call("POST", "/v1/grants", raw_body=b'{"agent": ')
    assert status == 400 and "JSON" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants", raw_body=b"\xff\xfe")
    assert status == 400 and "JSON" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants", raw_body=b"[1, 2]")
    assert status == 400 and "object" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants")
    assert status == 400 and "body" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants", raw_body=b"[" * 100_000)
    assert status == 413
    status, _, body = await admin.call("POST", "/v1/grants", {**ISSUE, "reason": "x" * 70_000})
    assert status == 413 and "larger" in body["error"]
    status, _, body = await admin.call(
        "POST", "/v1/grants", ISSUE, headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    nested = b"[" * 30_000 + b"]" * 30_000
    status, _, body = await admin.call("POST", "/v1/grants", raw_body=nested)
    assert status == 400


# ---- reading, revoking, extending ----------------------------------------------------------


@admin_test
async def test_list_and_get(admin):
    ids = []
    for agent, task in [("billing-bot", "INC-1"), ("billing-bot", "INC-2"), ("etl-bot", "INC-1")]:
        status, _, body = await admin.call(
            "POST", "/v1/grants", {**ISSUE, "agent": agent, "task": task}
        )
        assert status == 201
        ids.append(body["grant"]["id"])
    await admin.call("POST", f"/v1/grants/{ids[1]}/revoke")

    async def listed(query=""):
        status, _, body = await admin.call("GET", f"/v1/grants{query}")
        assert status == 200, body
        return [g["id"] for g in body["grants"]]

    assert await listed() == ids
    assert await listed("?agent=billing-bot") == ids[:2]
    assert await listed("?task=INC-1") == [ids[0], ids[2]]
    assert await listed("?agent=billing-bot&task=INC-1") == [ids[0]]
    assert await listed("?active=true") == [ids[0], ids[2]]
    assert await listed("?active=false") == [ids[1]]
    assert await listed("?agent=nobody") == []
    status, _, body = await admin.call("GET", "/v1/grants?active=maybe")
    assert status == 400 and "active" in body["error"]
    status, _, body = await admin.call("GET", "/v1/grants?owner=x")
    assert status == 400 and "owner" in body["error"]

    status, _, body = await admin.call("GET", f"/v1/grants/{ids[2]}")
    assert status == 200 and body["grant"]["agent"] == "etl-bot"
    assert all("verifier" not in g for g in body.values())
    status, _, body = await admin.call("GET", "/v1/grants/gr_nope")
    assert status == 404 and "gr_nope" in body["error"]


@admin_test
async def test_revoke_flow(admin):
    _, _, issued = await admin.call("POST", "/v1/grants", ISSUE)
    gid = issued["grant"]["id"]
    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/revoke", {"by": "bob"})
    assert status == 200
    assert body["grant"]["status"] == "revoked" and body["grant"]["revoked_by"] == "bob"
    first = body["grant"]["revoked_at"]
    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/revoke")  # no body
    assert status == 200 and body["grant"]["revoked_at"] == first
    assert body["grant"]["revoked_by"] == "bob"
    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/extend", {"ttl": "1h"})
    assert status == 409 and "revoked" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants/gr_nope/revoke")
    assert status == 404
    assert [k for k, _ in admin.events] == ["grant.issued", "grant.revoked"]
    assert admin.events[1][1]["by"] == "bob"


_clock = FakeClock()


@admin_test(clock=_clock)
async def test_expire_and_extend_flow(admin):
    _clock.now = T0
    _, _, issued = await admin.call("POST", "/v1/grants", {**ISSUE, "ttl": 60})
    gid = issued["grant"]["id"]
    assert issued["grant"]["expires_at"] == "2026-03-01T12:01:00.000000+00:00"
    _clock.now = T0 + dt.timedelta(minutes=5)
    _, _, body = await admin.call("GET", f"/v1/grants/{gid}")
    assert body["grant"]["status"] == "expired"
    _, _, body = await admin.call("GET", "/v1/grants?active=true")
    assert body["grants"] == []

    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/extend", {"ttl": "30m"})
    assert status == 200, body
    assert body["grant"]["status"] == "active"
    assert body["grant"]["expires_at"] == "2026-03-01T12:35:00.000000+00:00"
    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/extend", {"ttl": 3600})
    assert body["grant"]["expires_at"] == "2026-03-01T13:35:00.000000+00:00"

    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/extend", {})
    assert status == 400 and "ttl" in body["error"]
    status, _, body = await admin.call("POST", f"/v1/grants/{gid}/extend", {"ttl": "forever"})
    assert status == 400 and "ttl" in body["error"]
    status, _, body = await admin.call("POST", "/v1/grants/gr_nope/extend", {"ttl": "1h"})
    assert status == 404
    kinds = [k for k, _ in admin.events]
    assert kinds == ["grant.issued", "grant.extended", "grant.extended"]
    assert admin.events[1][1]["by"] == "admin-api"


# ---- protocol errors -----------------------------------------------------------------------


@admin_test
async def test_methods_and_paths(admin):
    status, headers, body = await admin.call("DELETE", "/v1/grants")
    assert status == 405 and headers["allow"] == "GET, POST"
    status, headers, _ = await admin.call("GET", "/v1/grants/gr_x/revoke")
    assert status == 405 and headers["allow"] == "POST"
    status, _, _ = await admin.call("POST", "/v1/grants/gr_x")
    assert status == 405
    status, _, _ = await admin.call("POST", "/healthz", token=None)
    assert status == 405
    status, _, body = await admin.call("GET", "/v2/grants")
    assert status == 404 and "error" in body
    status, _, _ = await admin.call("GET", "/v1/grants/gr_x/delete")
    assert status == 404


@admin_test
async def test_malformed_requests(admin):
    for raw in [
        b"garbage\r\n\r\n",
        b"GET /v1/grants\r\n\r\n",
        b"GET /v1/grants HTTP/9.9\r\n\r\n",
        b"get /healthz HTTP/1.1\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"\xff\xfe / HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"POST /v1/grants HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/grants HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/grants HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 50\r\n\r\n{}",  # client gives up early
    ]:
        status, _, body = parse_response(await admin.raw(raw))
        assert 400 <= status < 500, (raw, status)
        assert set(body) == {"error"}
    status, _, body = parse_response(
        await admin.raw(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
    )
    assert status == 400
    status, _, body = parse_response(
        await admin.raw(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    )
    assert status == 431
    assert await admin.raw(b"") == b""  # a client that connects and leaves


@admin_test
async def test_expect_100_continue(admin):
    data = json.dumps(ISSUE).encode()
    head = (
        f"POST /v1/grants HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    status, _, body = parse_response(await admin.raw(head, then=data))
    assert status == 201 and body["token"]


class ExplodingStore:
    def __init__(self, store):
        self._store = store
        self.clock = store.clock

    async def list(self, **kwargs):
        raise RuntimeError("disk on fire: /secret/path")

    def __getattr__(self, name):
        return getattr(self._store, name)


@admin_test(store_wrapper=ExplodingStore)
async def test_internal_error_is_a_bare_500(admin):
    logger = logging.getLogger("pgwitness.admin")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        status, _, body = await admin.call("GET", "/v1/grants")
    finally:
        logger.removeHandler(handler)
    assert (status, body) == (500, {"error": "internal error"})
    assert any(r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in records)
    status, _, _ = await admin.call("GET", "/healthz")  # the server survives
    assert status == 200


class UnreachableStore(ExplodingStore):
    async def list(self, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")


class SlowStore(ExplodingStore):
    async def list(self, **kwargs):
        raise TimeoutError("connect timed out")


@admin_test(store_wrapper=SlowStore)
async def test_store_timeout_is_a_503_not_a_408(admin):
    status, _, _ = await admin.call("GET", "/v1/grants")
    assert status == 503


def test_slow_client_gets_408(tmp_path, monkeypatch):
    monkeypatch.setattr("policy.grants.admin.READ_TIMEOUT", 0.2)

    @admin_test
    async def check(admin):
        reader, writer = await asyncio.open_connection(admin.host, admin.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and then nothing
        await writer.drain()
        status, _, body = parse_response(await asyncio.wait_for(reader.read(), 5))
        writer.close()
        assert status == 408 and "time" in body["error"]

    check(tmp_path)


@admin_test(store_wrapper=UnreachableStore)
async def test_store_outage_is_a_503(admin):
    status, headers, body = await admin.call("GET", "/v1/grants")
    assert status == 503 and headers["retry-after"] == "5"
    assert body == {"error": "grant store unavailable, try again"}


@admin_test
async def test_urllib_client(admin):
    base = f"http://{admin.host}:{admin.port}"

    def post(path, payload, token=TOKEN):
        req = urllib.request.Request(
            base + path,
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    status, body = await asyncio.to_thread(post, "/v1/grants", ISSUE)
    assert status == 201 and body["dsn"].startswith("postgresql://billing-bot:pgw_")
    status, body = await asyncio.to_thread(post, "/v1/grants", ISSUE, "nope-nope-nope-nope")
    assert status == 403
    status, body = await asyncio.to_thread(post, "/v1/grants", {**ISSUE, "x": "y" * 100_000})
    assert status == 413
