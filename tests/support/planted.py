"""Attack tests against a proxy whose database holds planted objects (a secret table, user
functions, types): the server judges what a grant can reach.

``start`` plants (as the schema owner) before the proxy starts, so its catalog snapshot sees
the objects, and issues one grant; ``stop`` drops them again (``running``: both, around a
module fixture). ``result`` renders a raw
client's frames as rows or the first error; ``simple`` and ``extended`` run statements in
one session over either protocol and return each one's outcome as text; ``outcomes`` gives
one statement's over the simple protocol, the extended one and a prepared statement.
``received`` is the same by raw clients only (every byte the proxy sent in each mode:
notices, error fields, rows), for ``assert_no_leak`` / ``assert_denied``. ``Paced``: a
module's proxies for probes on a stale snapshot (rounds 52, 53), one per catalog pacing,
``renew``ed before each probe as if just started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import re
import time

import asyncpg
import psycopg
import pytest

from common.wire import messages as m
from devtools.localpg import LocalClusterError
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue as grant_issue
from tests.support.proxies import sqlite_url
from tests.support.rawpg import RawClient, error_fields
from tests.support.wait import wait_until


def start(pg, tmp_path_factory, name: str, *, agent: str, scopes: str, setup: str, teardown: str):
    """Plant ``setup`` (after ``teardown``, for a clean slate), start a proxy with its own
    grant store, and issue ``agent`` a grant of ``scopes`` (``handle.token``)."""
    pg.psql(teardown, db="app")
    pg.psql(setup, db="app")
    url = sqlite_url(tmp_path_factory.mktemp(name) / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    try:
        handle.token = grant_issue(handle, agent=agent, task=name.upper(), scopes=scopes)[1]
    except BaseException:
        stop(pg, handle, teardown)
        raise
    handle.agent = agent
    return handle


@contextlib.contextmanager
def running(pg, tmp_path_factory, name: str, *, agent: str, scopes: str, setup: str,
            teardown: str, grants: dict[str, str] | None = None):  # fmt: skip
    """``start`` ... ``stop``: a module fixture's whole body is ``with running(...) as h:
    yield h``. ``grants``: more grants to the same agent, ``{key: scopes}``, their tokens
    in ``h.tokens[key]`` (``h.tokens["base"]``: the first one's)."""
    handle = start(pg, tmp_path_factory, name, agent=agent, scopes=scopes, setup=setup,
                   teardown=teardown)  # fmt: skip
    try:
        handle.tokens = {"base": handle.token}
        for key, more in (grants or {}).items():
            task = f"{name.upper()}-{key.upper()}"
            handle.tokens[key] = grant_issue(handle, agent=agent, task=task, scopes=more)[1]
        yield handle
    finally:
        stop(pg, handle, teardown)


def psycopg_proxied(handle) -> psycopg.Connection:
    """psycopg (autocommit) through ``handle``'s proxy, as its grant's agent."""
    return psycopg.connect(host=handle.host, port=handle.port, user=handle.agent,
                           password=handle.token, dbname="app", sslmode="disable",
                           autocommit=True)  # fmt: skip


def psycopg_direct(pg) -> psycopg.Connection:
    """psycopg (autocommit) straight to ``pg``, as the proxy's upstream login."""
    return psycopg.connect(host=pg.host, port=pg.port, user="pgwitness",
                           password=pg.users["pgwitness"], dbname="app", sslmode="disable",
                           autocommit=True)  # fmt: skip


def planted_oids(pg, handle, oid_query: str) -> None:
    """``handle.oids``: ``NAME -> OID`` from ``oid_query``'s ``'NAME=' || oid`` rows (the
    attack suites write ``<<NAME>>`` in their probes: ``fill``)."""
    rows = pg.psql(oid_query, db="app").split()
    handle.oids = dict(row.split("=", 1) for row in rows)


def fill(sql: str, oids: dict[str, str]) -> str:
    """``<<NAME>>`` -> the planted object's OID."""
    return re.sub(r"<<(\w+)>>", lambda mt: oids[mt.group(1)], sql)


def received_filled(
    handle, sql: str, before=(), after=(), token: str | None = None
) -> dict[str, str]:
    """``received`` of a probe written with ``<<NAME>>`` OIDs (``fill``), its set-up and
    clean-up statements filled too."""
    oids = handle.oids
    return received(handle, fill(sql, oids), before=tuple(fill(s, oids) for s in before),
                    after=tuple(fill(s, oids) for s in after), token=token)  # fmt: skip


def shows(text: str, marker: str) -> bool:
    """Is ``marker`` in ``text`` in any form a client could read it (``encodings``)?"""
    return any(form in text for form in encodings(marker))


def stop(pg, handle, teardown: str) -> None:
    try:
        handle.stop()
    finally:
        pg.psql(teardown, db="app")


def drop_role(role: str) -> str:
    """SQL dropping ``role`` and what it owns or was granted, if it exists (a teardown)."""
    return (
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"EXECUTE 'DROP OWNED BY {role}; DROP ROLE {role}'; END IF; END $$;"
    )


def result(frames: list[bytes]) -> str:
    """The first error as ``error SQLSTATE: message``, else every byte received as text."""
    errors = [error_fields(f) for f in frames if f[:1] == b"E"]
    if errors:
        return f"error {errors[0].get('C')}: {errors[0].get('M')}"
    return b"".join(frames).decode("utf-8", "replace")


def simple(handle, sqls: list[str], token: str | None = None) -> list[str]:
    """Each statement as a simple Query in one session, by a raw client."""
    with RawClient.session(handle.host, handle.port, handle.agent, token or handle.token) as c:
        return [result(c.query(sql)) for sql in sqls]


async def extended(handle, sqls: list[str], token: str | None = None) -> list[str]:
    """Each statement over the extended protocol (asyncpg) in one session."""
    conn = await asyncpg.connect(
        host=handle.host, port=handle.port, user=handle.agent, password=token or handle.token,
        database="app", ssl=False, timeout=10,
    )  # fmt: skip
    outs = []
    try:
        for sql in sqls:
            try:
                outs.append(repr(await conn.fetch(sql)))
            except asyncpg.PostgresError as exc:
                outs.append(f"error {exc.sqlstate}: {exc}")
    finally:
        await conn.close()
    return outs


async def attempt(handle, sql: str, mode: str, token: str | None = None) -> str:
    """``sql`` over the extended protocol, unnamed (``mode="extended"``) or as a named
    prepared statement (``"prepared"``): its rows or its error, as text."""
    conn = await asyncpg.connect(
        host=handle.host, port=handle.port, user=handle.agent, password=token or handle.token,
        database="app", ssl=False, timeout=10,
        statement_cache_size=0 if mode == "extended" else 100,
    )  # fmt: skip
    try:
        if mode == "extended":
            return repr(await conn.fetch(sql))
        return repr(await (await conn.prepare(sql)).fetch())
    except asyncpg.PostgresError as exc:  # the detail and hint too: the server's whole word
        return f"error {exc.sqlstate}: {exc} DETAIL: {exc.detail} HINT: {exc.hint}"
    finally:
        await conn.close()


def outcomes(handle, sql: str, token: str | None = None) -> dict[str, str]:
    """What each protocol gave back for ``sql``: the simple one by a raw client (every
    byte the proxy sent, rows included), the extended one unnamed and prepared."""
    out = {"simple": simple(handle, [sql], token)[0]}
    for mode in ("extended", "prepared"):
        out[mode] = asyncio.run(attempt(handle, sql, mode, token))
    return out


# --- every byte a raw client received, per protocol -------------------------------------


def session(handle, token: str | None = None) -> RawClient:
    """A raw client's session of ``token``'s grant (the handle's own by default);
    ``c.handle`` is the proxy it is on (``wait_catalog_quiet``)."""
    c = RawClient.session(handle.host, handle.port, handle.agent, token or handle.token)
    c.handle = handle
    return c


# --- waiting on what a fixed pause waited for -------------------------------------------


def catalog_quiet(handle, database: str = "app") -> bool:
    """Is the proxy's catalog snapshot of ``database`` at rest: no load running or waiting
    (the one DDL through the proxy started is done), the snapshot speaks for the last DDL
    (not stale), and a load a statement asks for now would start at once (not paced)?"""

    async def look() -> bool:
        loader = handle.server.catalogs
        entry = loader.cache.entries.get(database)
        if entry is None or entry.snapshot is None or entry.snapshot.stale:
            return False
        if entry.loading is not None and not entry.loading.done():
            return False
        return time.monotonic() >= entry.last_started + loader.min_interval

    return handle.call(look())


def wait_catalog_quiet(handle, at_most: float, database: str = "app") -> bool:
    """Wait until ``catalog_quiet``, for at most ``at_most`` seconds: the fixed pause this
    replaces ("the reload the DDL started is done"), so never longer than it was. ``handle``:
    a proxy, or a ``session``'s client (its proxy); a client of the server itself
    (``RawClient.direct``): no proxy, nothing to wait for. Whether it came to rest."""
    if isinstance(handle, RawClient):
        if not hasattr(handle, "handle"):
            return True
        handle = handle.handle
    return bool(wait_until(lambda: catalog_quiet(handle, database), at_most, 0.01))


# --- a module's proxies, shared by its probes (rounds 52, 53) -----------------------------


def renew(handle, at_most: float = 10.0) -> None:
    """Give the next probe a proxy that served earlier ones as it was when it started: once
    every session of theirs has ended on its side (none settles DDL or parks a backend
    after this), a catalog loader of its own as ``ProxyServer`` makes one (no snapshot yet,
    so none stale, no code window, no function defined or column removed through it, no
    load paced yet: the next session's first statement makes the first load and the pacing
    counts from it; a load of the old loader under way or waiting is cancelled, and what
    one loads goes to a cache no session reads), and no upstream session an earlier
    session parked (``upstream_pool``): no prepared statement, setting or temporary object
    of theirs reaches the next probe, whose first logins are new."""
    from proxy.catalog_loader import LINK_IDLE_SECONDS, CatalogLoader

    server = handle.server

    async def sessions() -> int:
        return len(server.connections)

    assert wait_until(lambda: handle.call(sessions()) == 0, at_most, 0.005), (
        "an earlier probe's session never ended"
    )

    async def fresh() -> None:
        old = server.catalogs
        new = server.catalogs = CatalogLoader(
            server.cfg, server.credentials, min_interval=server.cfg.upstream.catalog_min_interval
        )
        for entry in old.cache.entries.values():
            if entry.loading is not None and not entry.loading.done():
                entry.loading.cancel()
        # the catalog login the old loader kept idle goes on as the new one's, as it would
        # in a proxy that served the earlier probes (``LINK_IDLE_SECONDS``): it holds no
        # snapshot, only its prepared queries, planned once per login (a new login plans
        # them again: most of the server's time in the red-team files that renew per probe)
        links, old._links = old._links, {}
        loop = asyncio.get_running_loop()
        for database, link in links.items():
            if link.expiry is not None:
                link.expiry.cancel()
            new._links[database] = link
            link.expiry = loop.call_later(LINK_IDLE_SECONDS, new._expire, database, link)
        old.close()
        server.upstream_pool.close()

    handle.call(fresh())


class Paced:
    """A module's proxies for probes on a stale snapshot, one per catalog pacing
    (``upstream.catalog_min_interval``), each started at its first use with its own grant
    store and the grants issued once (``handle.tokens``: ``grants``' keys, and ``"dry"``:
    ``dry`` in dry run; ``handle.token``: ``"base"``'s). ``paced(interval)``, after the
    probe planted its catalog: that proxy ``renew``ed and its first load done (a ``base``
    session's first statement asked for it), so its snapshot shows the planted catalog and
    a load a statement asks for comes ``interval`` seconds after it; a load after DDL is
    never paced."""

    def __init__(self, pg, tmp_path_factory, name: str, *, agent: str, grants: dict[str, str],
                 dry: str) -> None:  # fmt: skip
        self.pg, self.tmp_path_factory, self.name = pg, tmp_path_factory, name
        self.agent, self.grants, self.dry = agent, grants, dry
        self.started: dict[float, ProxyHandle] = {}

    def _start(self, interval: float) -> ProxyHandle:
        url = sqlite_url(self.tmp_path_factory.mktemp(f"{self.name}-paced") / "grants.db")
        handle = ProxyHandle(proxy_config(
            self.pg, **{"grants.store": url, "upstream.catalog_min_interval": interval})
        ).start()  # fmt: skip
        self.started[interval] = handle
        handle.agent = self.agent
        tag = self.name.upper()
        handle.tokens = {key: grant_issue(handle, agent=self.agent, task=f"{tag}-{key.upper()}",
                                          scopes=scopes, ttl="1h")[1]
                         for key, scopes in self.grants.items()}  # fmt: skip
        handle.tokens["dry"] = grant_issue(
            handle, agent=self.agent, task=f"{tag}-DRY", scopes=self.dry, enforce=False, ttl="1h"
        )[1]
        handle.token = handle.tokens["base"]
        return handle

    def __call__(self, interval: float = 30.0) -> ProxyHandle:
        handle = self.started.get(interval) or self._start(interval)
        renew(handle)
        with session(handle) as c:  # the first load: the pacing counts from it
            c.query("SELECT 1")

        async def look() -> bool:
            entry = handle.server.catalogs.cache.entries.get("app")
            return (entry is not None and entry.snapshot is not None
                    and not entry.snapshot.stale and not entry.code_window())  # fmt: skip

        assert wait_until(lambda: handle.call(look()), 10.0, 0.01), "no first load"
        return handle

    def stop(self) -> None:
        for handle in self.started.values():
            handle.stop()


# client backends of the database waiting on ``{wait}`` (not the catalog loads' own queries)
_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE {wait} AND backend_type = 'client backend' "
    "AND application_name <> 'pgwitness-catalog' AND datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


def _wait_waiter(pg, wait: str, at_most: float, database: str) -> bool:
    sql = _WAITERS.format(wait=wait)
    with RawClient.direct(pg, database) as c:
        return bool(wait_until(lambda: c.scalar(sql) != "0", at_most, 0.01))


def wait_lock_waiter(pg, at_most: float, database: str = "app") -> bool:
    """Wait until a client backend of ``database`` waits on the server for a lock (a
    statement sent, decided and blocked behind an open block's DDL), for at most
    ``at_most`` seconds: the fixed pause this replaces. Whether one did."""
    return _wait_waiter(pg, "wait_event_type = 'Lock'", at_most, database)


def wait_pg_sleeping(pg, at_most: float, database: str = "app") -> bool:
    """Wait until a client backend of ``database`` runs ``pg_sleep`` (a Query sent and
    under way on the server), for at most ``at_most`` seconds: the fixed pause this
    replaces. Whether one did."""
    return _wait_waiter(pg, "wait_event = 'PgSleep'", at_most, database)


def raw_extended(c: RawClient, sql: str) -> list[bytes]:
    c.send(m.parse("", sql), m.bind_no_params(), m.execute(), m.SYNC)
    return c.frames_until_ready()


def _raw_prepared(c: RawClient, sql: str) -> list[bytes]:
    c.send(m.parse("r11_stmt", sql), m.SYNC)
    frames = c.frames_until_ready()
    c.send(m.bind_no_params(statement="r11_stmt"), m.execute(), m.SYNC)
    return frames + c.frames_until_ready()


RAW_MODES = {"simple": RawClient.query, "extended": raw_extended, "prepared": _raw_prepared}
_PREPARED_NAMES = itertools.count()


def run_mode(c: RawClient, mode: str, sql: str) -> str:
    """``sql`` in ``mode`` (simple, extended, or a named statement parsed, then bound if the
    Parse was not refused), every byte received as text (rounds 66, 67)."""
    if mode != "prepared":
        return text(RAW_MODES[mode](c, sql))
    name = f"probe_{next(_PREPARED_NAMES)}"
    frames = parsed(c, name, sql)
    if not any(f[:1] == b"E" for f in frames):
        frames += bound(c, name)
    return text(frames)


def proxied(handle, mode: str, sqls: list[str]) -> list[str]:
    """``sqls`` in ``mode`` in one session of ``handle``'s grant: each one's text."""
    with session(handle) as c:
        return [run_mode(c, mode, s) for s in sqls]


def proxied_as(handle, key: str, mode: str, sqls: list[str]) -> list[str]:
    """``sqls`` in ``mode`` in one session of the module's grant ``key``
    (``handle.tokens``): each one's text; the session must answer a query after them."""
    with session(handle, handle.tokens[key]) as c:
        got = [run_mode(c, mode, s) for s in sqls]
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def direct_as_owner(pg, *sqls: str) -> list[str]:
    """``sqls`` run directly as the owner role (``pgwitness``) in a block rolled back: each
    one's text."""
    with RawClient.direct(pg) as c:
        c.query("BEGIN")
        c.query("SET ROLE pgwitness")
        got = [text(c.query(s)) for s in sqls]
        c.query("ROLLBACK")
    return got


def refused_by_proxy(t: str) -> bool:
    """Did the proxy (42501, or 34000 for a cursor the client did not make; its own
    message) refuse what ``t`` received?"""
    return ("C42501" in t or "C34000" in t) and "pgwitness:" in t


def text(frames: list[bytes]) -> str:
    return b"".join(frames).decode("utf-8", "replace")


def writes_every_mode(handle, token: str, sql: str) -> dict[str, str]:
    """``sql`` sent by ``token``'s grant in each raw mode, a session each: what came back."""
    out = {}
    for mode in sorted(RAW_MODES):
        with session(handle, token) as c:
            out[mode] = text(RAW_MODES[mode](c, sql))
    return out


def assert_trigger_withheld(out: dict[str, str], leaked, label: str) -> None:
    """Every mode ran the planted trigger (its RAISE, P0001), and none showed what
    ``leaked`` looks for (the trigger's message: the red-team rounds' DDL probes)."""
    assert all("P0001" in t for t in out.values()), out  # the trigger ran
    bad = {mode: t[-300:] for mode, t in out.items() if leaked(t)}
    assert not bad, ("LEAK", label, sorted(bad), bad)


def received(
    handle,
    sql: str,
    before: tuple[str, ...] = (),
    after: tuple[str, ...] = (),
    token: str | None = None,
) -> dict[str, str]:
    """What each mode gave back for ``sql`` (``before``/``after`` sent in the same session
    over the simple protocol, their answers included), in a session of ``token``'s grant
    (the handle's own by default)."""
    out = {}
    for mode, send in RAW_MODES.items():
        with session(handle, token) as c:
            frames = [f for s in before for f in c.query(s)]
            frames += send(c, sql)
            frames += [f for s in after for f in c.query(s)]
            # the session goes on: a row comes back (not an error that happens to hold a 1)
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), mode
        out[mode] = text(frames)
    return out


def encodings(secret: str) -> tuple[str, ...]:
    """The marker as text, as bytea hex, and as a node tree's byte list."""
    raw = secret.encode()
    return secret, raw.hex(), " ".join(str(b) for b in raw)


def assert_no_leak(got: dict[str, str], secrets: list[str], sql: str) -> None:
    leaked = {mode: t[-700:] for mode, t in got.items()
              if any(form in t for s in secrets for form in encodings(s))}  # fmt: skip
    assert not leaked, ("LEAK", sorted(leaked), sql, leaked)


def assert_denied(got: dict[str, str], sql: str) -> None:
    for mode, t in got.items():
        assert "42501" in t and "pgwitness: task" in t, (mode, sql, t[-600:])


def probe(sql: str, key: str, *before: str):
    """A red-team probe: its SQL, the marker it must never show, its set-up statements."""
    return pytest.param(sql, key, before)


def closed(sql: str, key: str, reason: str, *before: str):
    """A probe that leaked when found (``reason`` says how), held since: a regression test."""
    del reason
    return pytest.param(sql, key, before)


def ids(probes) -> list[str]:
    """Probe ids: the probe's index and the key of the marker it looks for."""
    return [f"{i:02d}-{param.values[1]}" for i, param in enumerate(probes)]


def silent_directly(pg, oids: dict[str, str], probes, marker) -> list[tuple[str, str]]:
    """The probes whose marker (``marker(key)``) does not come back when they run directly
    as the upstream login, set-up statements first (a probe's values: sql, key, and a
    tuple of set-up statements if it has any): each must, or it proves nothing."""
    silent = []
    for param in probes:
        sql, key, *rest = param.values
        before = rest[0] if rest and isinstance(rest[0], tuple) else ()
        with RawClient.direct(pg) as c:
            frames = [f for s in before for f in c.query(fill(s, oids))]
            got = text(frames + c.query(fill(sql, oids)))
            if before:
                c.query("ROLLBACK")
        if not shows(got, marker(key)):
            silent.append((sql[:90], re.sub(r"[^ -~]", ".", got)[-200:]))
    return silent


def leaks(handle, sql: str, leaked, before=(), token: str | None = None) -> dict[str, str]:
    """Each protocol mode's answer to a probe (``received_filled``) that holds a marker
    (``leaked(text)`` non-empty), its tail by mode. A probe that opens a transaction ends it."""
    after = ("ROLLBACK",) if before[:1] == ("BEGIN",) else ()
    got = received_filled(handle, sql, before=before, after=after, token=token)
    return {mode: t[-500:] for mode, t in got.items() if leaked(t)}


def pipelined(c: RawClient, sqls) -> list[bytes]:
    """Each of ``sqls`` as unnamed Parse/Bind/Execute, one Sync for all: the answers."""
    msgs = [f for sql in sqls for f in (m.parse("", sql), m.bind_no_params(), m.execute())]
    c.send(*msgs, m.SYNC)
    return c.frames_until_ready()


def bound(c: RawClient, name: str) -> list[bytes]:
    """Bind and Execute of prepared statement ``name``, then Sync: the answers."""
    c.send(m.bind_no_params(statement=name), m.execute(), m.SYNC)
    return c.frames_until_ready()


def parsed(c: RawClient, name: str, sql: str) -> list[bytes]:
    """Parse of ``sql`` as statement ``name``, then Sync: the answers."""
    c.send(m.parse(name, sql), m.SYNC)
    return c.frames_until_ready()


# --- the red-team rounds' modes (rounds 29-32) ---------------------------------------------


def direct_block(pg, sqls) -> str:
    """``sqls`` as Queries of one block, directly as the upstream login (rolled back):
    every byte received, as text (a probe's precondition: its marker shows here)."""
    with RawClient.direct(pg) as c:
        got = [text(c.query(s)) for s in ("BEGIN", *sqls)]
        c.query("ROLLBACK")
    return "".join(got)


def every_mode(handle, token: str, sql: str, in_block: bool = False) -> dict[str, str]:
    """Every byte each mode received for one statement: simple Query, extended unnamed,
    named prepared (``received``) and pipelined (its Parse/Bind/Execute twice, one Sync);
    each inside BEGIN ... ROLLBACK with ``in_block``."""
    around = (("BEGIN",), ("ROLLBACK",)) if in_block else ((), ())
    got = received(handle, sql, before=around[0], after=around[1], token=token)
    with session(handle, token) as c:
        frames = [f for s in around[0] for f in c.query(s)]
        frames += pipelined(c, [sql] if in_block else [sql, sql])
        frames += [f for s in around[1] for f in c.query(s)]
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "pipelined"
    got["pipelined"] = text(frames)
    return got


def every_block_mode(handle, token: str, sqls) -> dict[str, str]:
    """What each mode gave back for ``sqls`` in a block (rolled back): separate Queries,
    one Query, one pipeline."""
    out = {
        "queries": "".join(simple(handle, ["BEGIN", *sqls, "ROLLBACK"], token=token)),
        "one query": "".join(simple(handle, ["BEGIN", "; ".join(sqls), "ROLLBACK"], token=token)),
    }
    with session(handle, token) as c:
        frames = c.query("BEGIN") + pipelined(c, sqls) + c.query("ROLLBACK")
    out["pipeline"] = text(frames)
    return out


def is_error(text_: str) -> bool:
    """Does received ``text_`` hold an ERROR or FATAL?"""
    return "SERROR\x00" in text_ or "SFATAL\x00" in text_


def assert_hidden_ddl_withheld(
    handle, pg, *, call: str, caller: str, write: str, reset, unseen, marker: str, label: str
) -> None:
    """The red-team rounds' probe of DDL run by code (rounds 37-41): ``call`` runs code
    that creates a trigger raising ``marker`` on the table ``write`` writes. Directly
    first, as the upstream login (no marker there: RuntimeError, the probe proves nothing);
    then ``unseen(pg, session)`` in a migrator session (the proxy's snapshot without the
    trigger), ``call`` through grant ``caller``, and ``write`` by the writer in every mode:
    the trigger must have run and its message been withheld. ``reset(client)`` drops the
    trigger (directly, before and after)."""
    with RawClient.direct(pg) as c:
        reset(c)
        ran = text(c.query(call))
        direct = text(c.query(write))
        reset(c)
    if is_error(ran) or not shows(direct, marker):
        raise RuntimeError(("precondition: no marker directly", ran[-300:], direct[-300:]))
    with session(handle, handle.tokens["migrator"]) as mig:
        unseen(pg, mig)
    with session(handle, handle.tokens[caller]) as c:
        got = text(c.query(call))
        if is_error(got) and "on the relations they link it with" in got:
            # refused since red-team round 82 (``Snapshot.fk_code``): the foreign key's check
            # runs the code, which the grant may not run; nothing ran, nothing to withhold
            assert "rule scope.execute" in got and not shows(got, marker), got[-300:]
            return
        assert not is_error(got), got[-300:]
        try:
            out = writes_every_mode(handle, handle.tokens["writer"], write)
        finally:
            with RawClient.direct(pg) as d:
                reset(d)
    assert_trigger_withheld(out, lambda t: shows(t, marker), label)


def run_steps_until_ended(c: RawClient, steps) -> tuple[str, bool]:
    """``run_steps``, but the proxy may end the session part-way (a FATAL, then EOF):
    every byte received until then, and whether it ended."""
    out: list[bytes] = []
    try:
        for step in steps:
            if isinstance(step, float):
                time.sleep(step)
                continue
            c.send(*step)
            for _ in range(sum(1 for f in step if f[:1] in (b"Q", b"S"))):
                frames = c.frames_until_ready()
                out += frames
                if any(f[:1] == b"E" and b"SFATAL\x00" in f for f in frames):
                    return text(out), True
    except (OSError, EOFError):
        return text(out), True
    except AssertionError as exc:  # (frames_until_ready: EOF before a ReadyForQuery)
        if not str(exc).startswith("connection closed"):
            raise
        return text(out), True
    return text(out), False


def run_steps(c: RawClient, steps) -> str:
    """Each step's frames sent at once, then its answers (one ReadyForQuery per Query or
    Sync in it); a float step sleeps that long. Every byte received, as text (rounds
    33-35: sequences whose timing and grouping are the attack)."""
    return text(run_frames(c, steps))


def run_frames(c: RawClient, steps) -> list[bytes]:
    """``run_steps``' frames, each apart; a callable step is called with the client (it
    acts beside the session: another session's lock, a planted change)."""
    out: list[bytes] = []
    for step in steps:
        if isinstance(step, float):
            time.sleep(step)
            continue
        if callable(step):
            step(c)
            continue
        c.send(*step)
        for _ in range(sum(1 for f in step if f[:1] in (b"Q", b"S"))):
            out += c.frames_until_ready()
    return out


def direct_frames(pg, steps) -> list[bytes]:
    """``run_frames`` directly against the server, as its upstream login."""
    with RawClient.direct(pg) as c:
        return run_frames(c, steps)


def proxied_frames(handle, steps, token: str | None = None) -> list[bytes]:
    """``run_frames`` through the proxy (``session``); the session must answer a query
    after them."""
    with session(handle, token) as c:
        got = run_frames(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), ("the session goes on", got)
    return got


def cases(table: dict) -> list:
    """A red-team round's probes as pytest params: each entry's last item is False (it
    holds) or the reason of its strict xfail (a leak: the probe must fail)."""
    return [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[-1]))
        if v[-1]
        else k
        for k, v in table.items()
    ]


def refused(got: str) -> bool:
    """Did the policy (not the server) refuse something in ``got`` (raw frames as text)? A
    refusal by the policy's rule (42501), or the server's check of a statement name failing
    (26000, ``deny.replaced``: since session 26 a name code may have replaced is checked,
    no longer forgotten)."""
    return "pgwitness" in got and ("C42501" in got or ("C26000" in got and "deny.replaced" in got))


# Everything of a schema a statement could change, as one line (empty when the schema is
# gone): relations, constraints, columns with types, defaults and NOT NULL, triggers,
# partition and inheritance links, domain defaults and checks, every row (red-team rounds
# 60 and 61 compare it before and after each probe).
_SCHEMA_STATE = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'r60x'),
rels AS (SELECT c.* FROM pg_class c, ns WHERE c.relnamespace = ns.oid)
SELECT coalesce(string_agg(x, ' | ' ORDER BY x), '') FROM (
  SELECT 'rel:' || relname || ':' || relkind::text FROM rels
  UNION ALL SELECT 'con:' || conrelid::regclass || '.' || conname || ':'
    || pg_get_constraintdef(k.oid) FROM pg_constraint k, ns WHERE k.connamespace = ns.oid
  UNION ALL SELECT 'att:' || attrelid::regclass || '.' || attname || ':'
    || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE attnum > 0 AND NOT attisdropped AND attrelid IN
      (SELECT oid FROM rels WHERE relkind IN ('r', 'v', 'p'))
  UNION ALL SELECT 'trg:' || tgrelid::regclass || '.' || tgname FROM pg_trigger
    WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM rels)
  UNION ALL SELECT 'part:' || r.relname || ':' || r.relispartition::text
    || coalesce(':' || i.inhparent::regclass::text, '')
    FROM rels r LEFT JOIN pg_inherits i ON i.inhrelid = r.oid WHERE r.relkind IN ('r', 'p')
  UNION ALL SELECT 'dom:' || a.attrelid::regclass || '.' || a.attname || ':'
    || coalesce(t.typdefault, '-') || ':' || coalesce((SELECT string_agg(
      pg_get_constraintdef(k.oid), ';' ORDER BY k.conname) FROM pg_constraint k
      WHERE k.contypid = t.oid), '-')
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid AND t.typtype = 'd'
    WHERE a.attnum > 0 AND a.attrelid IN (SELECT oid FROM rels)
  UNION ALL SELECT 'rows:' || r.relname || ':' || replace(query_to_xml(format(
      'SELECT * FROM ONLY %s ORDER BY 1', r.oid::regclass), false, true, '')::text, E'\\n', '')
    FROM rels r WHERE r.relkind = 'r'
) s(x);"""


def schema_state(schema: str) -> str:
    """``_SCHEMA_STATE`` of ``schema`` (a plain lower-case name)."""
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", schema), schema
    return _SCHEMA_STATE.replace("'r60x'", f"'{schema}'")


def state(pg, state_sql: str) -> str:
    """``state_sql``'s one line (``schema_state``), as the superuser reads it now."""
    return pg.psql(state_sql, db="app").strip()


def state_after(pg, sql: str, state_sql: str) -> str:
    """``state_sql`` after the schema owner ran ``sql`` in a transaction rolled back (or the
    error): a probe is live when this differs from ``state(pg, state_sql)``."""
    try:
        out = pg.psql(
            f"BEGIN; SET ROLE pgwitness; {sql}; RESET ROLE; {state_sql} ROLLBACK;", db="app"
        )
    except LocalClusterError as exc:
        return f"error: {exc}"
    return out.strip().splitlines()[-1] if out.strip() else ""


# --- a DDL block another session holds open (rounds 70, 71) ---------------------------------


def loaded_fresh(px, database: str = "app") -> bool:
    """Has a load that started after the last DDL count finished (the snapshot not stale,
    no load running)?"""

    async def look() -> bool:
        entry = px.server.catalogs.cache.entries.get(database)
        return (entry is not None and entry.snapshot is not None
                and not entry.snapshot.stale
                and (entry.loading is None or entry.loading.done()))  # fmt: skip

    return bool(px.call(look()))


def interleaved_block(pg, migrator, agent, ddl, own, explain, run, wait_loaded) -> str:
    """``migrator``: BEGIN and ``ddl``; once the load after it is done (``wait_loaded``),
    ``agent`` runs ``own`` then ``explain`` (``run(agent, sql)``, in a thread), which waits
    on the server for the block's lock; then the block commits: what ``explain`` got."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        migrator.query("BEGIN")
        for sql in ddl:
            made = text(migrator.query(sql))
            assert not is_error(made), made[-300:]
        assert wait_loaded(), "the load after the block's DDL"
        for sql in own:
            done = text(agent.query(sql))
            assert not is_error(done), done[-300:]
        fut = pool.submit(run, agent, explain)
        try:
            # it waits on the block's lock, or comes back at once (refused: session 31)
            assert wait_until(
                lambda: fut.done() or wait_lock_waiter(pg, 0.05), 10.0, 0.01
            ), "the EXPLAIN neither waited on the lock nor came back"
        finally:
            migrator.query("COMMIT")
        return fut.result(20)


# --- a probe in a block rolled back, directly and through a proxy (rounds 81-84) ---------


def direct_in_block(pg, before: list[str], sql: str, block: bool = True, params=None) -> str:
    """``before`` then ``sql`` directly as ``pgwitness`` (a new backend; startup ``params``),
    in a block rolled back (``block``): every byte received."""
    with RawClient.direct(pg, params=params) as c:
        got = text(c.query("BEGIN")) if block else ""
        got += "".join(text(c.query(s)) for s in before)
        got += text(c.query(sql))
        c.query("ROLLBACK")
    return got


def proxied_in_block(handle, key: str, mode: str, before: list[str], sql: str,
                     block: bool = True, params=None) -> str:  # fmt: skip
    """``before`` (simple Query), then ``sql`` in ``mode``, in one session of grant ``key``
    (``handle.tokens``; startup ``params``) on a fresh upstream backend, in a block rolled
    back (``block``): every byte received (the session must answer a query after)."""
    renew(handle)
    c = RawClient.session(handle.host, handle.port, handle.agent, handle.tokens[key],
                          params=params)  # fmt: skip
    with c:
        got = text(c.query("BEGIN")) if block else ""
        got += "".join(run_mode(c, "simple", s) for s in before)
        got += run_mode(c, mode, sql)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def reaches_directly(pg, before: list[str], sql: str, markers: tuple[str, ...],
                     block: bool = True, params=None) -> str:  # fmt: skip
    """``direct_in_block``, which must show one of ``markers`` (RuntimeError otherwise: a
    probe that cannot leak proves nothing)."""
    got = direct_in_block(pg, before, sql, block, params)
    if not any(shows(got, mk) for mk in markers):
        raise RuntimeError(("precondition: no marker directly", sql, got[-400:]))
    return got


def mode_cases(probes: dict, modes: list[str]) -> list:
    """``(key, mode)`` parameters of every probe in every mode, a strict xfail where the
    probe's last item is a reason (None: a plain test)."""
    return [
        pytest.param(key, mode, id=f"{key}-{mode}", marks=[] if v[-1] is None else
                     pytest.mark.xfail(strict=True, raises=AssertionError, reason=v[-1]))
        for key, v in probes.items()
        for mode in modes
    ]  # fmt: skip
