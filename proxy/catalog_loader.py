"""Loads each database's catalog snapshot (``policy.catalog``) over the proxy's own
upstream login: the I/O side of deciding column syntax (``x.fn``). One load at a time per
database; a session waits for the first one, later refreshes run in the background."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from common.config import UpstreamSection
from common.wire import messages as m
from policy.catalog import (
    ARGUMENT_DEFAULTS_SQL,
    CASCADES_SQL,
    CODE_FLAGS_SQL,
    COLUMNS_SQL,
    DDL_CODE_SQL,
    DEFAULT_FUNCTIONS_SQL,
    DEFAULTED_FUNCTIONS_SQL,
    DOMAIN_SCHEMAS_SQL,
    EVENT_TRIGGERS_SQL,
    FOREIGN_KEYS_SQL,
    FUNCTION_TYPES_SQL,
    FUNCTIONS_SQL,
    GLOBAL_CASTS_SQL,
    INHERITANCE_SQL,
    INLINABLE_SQL,
    MATVIEW_READS_SQL,
    OPCLASS_FUNCTIONS_SQL,
    POLICY_EXPRS_SQL,
    POLICY_READS_SQL,
    PUBLISHED_SQL,
    REFCURSOR_FUNCTIONS_SQL,
    RELATION_CASTS_SQL,
    RELATION_CHECKS_SQL,
    RELATION_OIDS_SQL,
    RELATION_OPCLASS_SQL,
    RELATION_PLAN_CODE_SQL,
    RELATION_POLICY_SQL,
    ROLE_SCHEMAS_SQL,
    RULED_SQL,
    SETTINGS_CODE_SQL,
    STATISTICS_SQL,
    TRIGGERED_SQL,
    TYPE_DEPENDENTS_SQL,
    TYPE_NAMES_SQL,
    TYPE_USERS_SQL,
    USER_FUNCTIONS_SQL,
    USER_OPERATORS_SQL,
    USER_SCHEMAS_SQL,
    USER_TYPE_OIDS_SQL,
    USER_TYPES_SQL,
    VIEW_FUNCTIONS_SQL,
    VIEW_NAMES_SQL,
    VIEW_READS_SQL,
    VIEWS_SQL,
    CatalogCache,
    cascade_reach,
    code_ran,
    inlinable_from_rows,
    plain_inlinable_from_rows,
    policy_exprs_from_rows,
    relation_names,
    view_functions_from_rows,
    views_from_rows,
)
from policy.classify.pgparse import PgParseError, column_bound_calls
from policy.lexer import render_name

from . import metrics
from .logs import event
from .upstream import Inbox, UpstreamError, UpstreamSession, connect_upstream

__all__ = ["MIN_INTERVAL", "CatalogLoader"]

# Seconds between the starts of two catalog loads of one database (``CatalogLoader.refresh``):
# the default of the ``upstream.catalog_min_interval`` setting, which the server passes in.
MIN_INTERVAL = UpstreamSection.catalog_min_interval
# How long a catalog query waits for a lock before the load gives way (``_queries``), and
# how often a load that gave way is tried again, after how long.
LOCK_TIMEOUT = "100ms"
LOCK_RETRIES = (0.2, 0.5, 1.0)
LOCK_NOT_AVAILABLE = "55P03"


def _data_row(msg: bytes) -> list[str | None]:
    count = int.from_bytes(msg[5:7], "big")
    pos = 7
    out: list[str | None] = []
    for _ in range(count):
        n = int.from_bytes(msg[pos : pos + 4], "big", signed=True)
        pos += 4
        if n < 0:
            out.append(None)
            continue
        out.append(msg[pos : pos + n].decode("utf-8"))
        pos += n
    return out


Rows = list[list[str | None]]


# How long a database's catalog login stays open after a load (``CatalogLoader._link``):
# loads that follow each other closely (DDL after DDL, a migration) reuse it, its backend's
# caches warm and each query planned once (a prepared statement); an idle database's is
# closed soon, so it does not stand in the way of a DBA's DROP DATABASE for long.
LINK_IDLE_SECONDS = 5.0


@dataclass(eq=False)
class _Link:
    """One upstream login a database's catalog loads run their queries over, and the
    statements it has prepared (query text -> name)."""

    up: UpstreamSession
    inbox: Inbox
    prepared: dict[str, str] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        transport = self.up.transport
        if not transport.is_closing():
            transport.write(m.TERMINATE)
            transport.close()


async def _login(cfg, credentials, database: str) -> _Link:
    # lock_timeout: a session holding a lock on an object the catalog queries read (its own
    # temporary view redefined in an open transaction) fails this load, never stalls it. It
    # is well under the server's deadlock_timeout (1 s by default): pg_get_viewdef holds a
    # lock on every view until the query ends, so a client's DROP VIEW a, b can wait for
    # this load while this load waits for it; the load must be the one that gives way, not
    # the client's statement ("deadlock detected": PostgreSQL's regression suite through
    # the proxy, session 18). The load is tried again (``CatalogLoader.refresh``).
    up = await connect_upstream(
        cfg, credentials, database,
        {"application_name": "pgwitness-catalog", "client_encoding": "UTF8",
         "lock_timeout": LOCK_TIMEOUT,
         # the catalog queries' estimated costs pass jit_above_cost: JIT compiling them
         # took ~120 ms a load (DDL_CODE_SQL's recursion), running them takes a few
         "jit": "off"},
    )  # fmt: skip
    inbox = Inbox()
    inbox.feed(up.leftover)
    up.protocol.inbox = inbox
    return _Link(up, inbox)


async def _exchange(cfg, link: _Link, sqls: tuple[str, ...]) -> tuple[list[Rows | UpstreamError], bool]:
    """The rows of each query, or the error it ended with, sent together, each statement
    in a Sync group of its own (its own transaction: one failing leaves the others), as a
    statement the link prepares once (planned once for the link's life: the queries take
    no parameters). A query of several statements (one that sets its own search_path
    around its statement: ``_statements``) answers its main statement's rows, or the
    first error of any of them. And whether the link is as clean as it came (no error, no
    transaction open)."""
    out = bytearray()
    owner: list[int] = []  # for each Sync group sent: the index of the query it is part of
    main: list[int] = []  # for each query: the group whose rows answer it
    for i, sql in enumerate(sqls):
        statements = _statements(sql)
        main.append(len(owner) + (1 if len(statements) == 3 else 0))
        for statement in statements:
            owner.append(i)
            if len(statements) == 1 or statement is statements[1]:
                name = link.prepared.get(statement)
                if name is None:
                    name = link.prepared[statement] = f"pgwitness_catalog_{len(link.prepared)}"
                    out += m.parse(name, statement)
                out += m.bind_no_params("", name) + m.execute() + m.SYNC
            else:
                out += m.query(statement)
    # a kept login the server ended meanwhile (uvloop raises RuntimeError on a write to a
    # closed transport): an OSError, as a failed read is, so the load logs in again or
    # fails as a load does (its event and metric), never as an unretrieved task
    transport = link.up.transport
    if transport.is_closing():
        raise ConnectionError("catalog login closed")
    try:
        transport.write(bytes(out))
    except RuntimeError as exc:
        raise ConnectionError(f"catalog login closed: {exc}") from None
    groups: list[Rows | UpstreamError] = []
    rows: Rows = []
    error: tuple[str, str] | None = None
    clean = True
    inbox, limit = link.inbox, cfg.proxy.max_message_bytes
    while len(groups) < len(owner):
        msg = inbox.frame(limit, UpstreamError, "upstream")
        if msg is None:  # (a timer and a task only to wait: a load reads thousands of rows)
            msg = await asyncio.wait_for(
                inbox.read_frame(limit, UpstreamError, "upstream"), cfg.upstream.connect_timeout
            )
        t = msg[0]
        if t == m.Backend.DATA_ROW:
            rows.append(_data_row(msg))
        elif t == m.Backend.ERROR_RESPONSE:
            fields = m.decode_error_fields(msg)
            error = error or (fields.get("M", "error"), fields.get("C", ""))
        elif t == m.Backend.READY_FOR_QUERY:
            if error is None:
                groups.append(rows)
            else:
                groups.append(UpstreamError(f"catalog query failed: {error[0]}", error[1]))
                clean = False  # (which statements it holds is not known now)
            clean = clean and msg[5:6] == b"I"
            rows, error = [], None
    failed: dict[int, UpstreamError] = {}
    for i, group in zip(owner, groups, strict=True):
        if isinstance(group, UpstreamError):
            failed.setdefault(i, group)
    return [failed.get(i, groups[k]) for i, k in enumerate(main)], clean


def _statements(sql: str) -> list[str]:
    """A catalog query's statements: one, or a ``SET search_path = pg_catalog``, the query
    (``pg_get_expr`` and its kin qualify every name the path does not show), and the
    ``RESET`` (``POLICY_EXPRS_SQL``, ``RELATION_PLAN_CODE_SQL``): the first and last sent as
    simple Queries, the query prepared (a plan remembers the path it was made under, and
    the path is the same at each run). A ``;`` elsewhere (a comment, a pattern) ends none."""
    if not sql.lstrip().upper().startswith("SET "):
        return [sql]
    head, rest = sql.lstrip().split(";\n", 1)
    body, _, tail = rest.rstrip().rstrip(";").rpartition(";\n")
    if not body or not tail.strip().upper().startswith("RESET "):
        raise ValueError(f"a catalog query of several statements is SET, query, RESET: {sql[:80]!r}")
    return [head, body, tail.strip()]


def _grouped(rows) -> dict[str, frozenset[str]]:
    """``{first schema.name: every second schema.name}`` from (schema, name, schema, name)
    rows: ``Snapshot.type_users`` from TYPE_USERS_SQL's, ``statistics`` from STATISTICS_SQL's,
    ``default_functions`` from DEFAULT_FUNCTIONS_SQL's."""
    out: dict[str, set[str]] = {}
    for tschema, tname, schema, name in rows:
        out.setdefault(render_name(tschema, tname), set()).add(render_name(schema, name))
    return {k: frozenset(v) for k, v in out.items()}


def _plan_code_rows(rows) -> list[tuple[str, str, str, str]]:
    """RELATION_PLAN_CODE_SQL's rows as (relation schema, name, function schema, name), less
    a function that its definition calls only with a column among the arguments (never
    folded to a constant, so no plan runs it: ``pgparse.column_bound_calls``, red-team round
    82's transparency), unless the query kept it whole: a SQL function (inlined), or one a
    cast or an operator runs, which the text need not show by name (round 83). A definition
    that does not parse, or shows no call of the function by name, keeps it."""
    bound: dict[str, dict[str, bool]] = {}
    out: set[tuple[str, str, str, str]] = set()
    for rschema, rname, schema, name, whole, definition in rows:
        if whole != "true" and definition:
            calls = bound.get(definition)
            if calls is None:
                try:
                    calls = column_bound_calls(definition)
                except PgParseError:
                    calls = {}
                bound[definition] = calls
            if calls.get(render_name(schema, name)):
                continue
        out.add((rschema, rname, schema, name))
    return sorted(out)


def _with_defaults(fns: set[str], argument_defaults: dict[str, set[str]]) -> set[str]:
    """``fns`` and what their argument defaults call, and theirs, transitively."""
    out, todo = set(fns), list(fns)
    while todo:
        for called in argument_defaults.get(todo.pop(), ()):
            if called not in out:
                out.add(called)
                todo.append(called)
    return out


def _cascaded(triggered: frozenset[str] | set[str], cascades) -> frozenset[str]:
    """``triggered`` and every relation whose foreign-key actions write one of them
    (``cascades``, transitive): its write runs their code as theirs does (red-team round 83:
    an ON UPDATE CASCADE into a table with a volatile CHECK the grant may write)."""
    out = set(triggered)
    out.update(rel for rel, targets in cascades.items() if not out.isdisjoint(targets))
    return frozenset(out)


def _fk_code(plan_code: dict[str, set[str]], foreign_keys, cascades) -> dict[str, set[str]]:
    """``Snapshot.fk_code``: for each relation a foreign key links, what the plans of the
    queries its writes make PostgreSQL run on other relations run (``plan_code``: relation
    -> what a plan of it runs): the checks and actions of its foreign keys, to and from it,
    plan the relation at the other end, and each relation its actions write
    (``cascades``, transitive) runs its own and plans its links' in turn (red-team rounds
    81-82: a partial index of the referenced table, two cascades away)."""
    links: dict[str, set[str]] = {}
    for s1, t1, s2, t2 in foreign_keys:
        one, other = render_name(s1, t1), render_name(s2, t2)
        links.setdefault(one, set()).add(other)
        links.setdefault(other, set()).add(one)
    out: dict[str, set[str]] = {}
    for rel in links:
        fns: set[str] = set()
        for reached in (rel, *cascades.get(rel, ())):
            if reached != rel:
                fns.update(plan_code.get(reached, ()))
            for linked in links.get(reached, ()):
                if linked != rel:
                    fns.update(plan_code.get(linked, ()))
        if fns:
            out[rel] = fns
    return out


def _by_first(rows) -> dict[str, set[str]]:
    """``{schema.name: every third column}`` from (schema, name, value) rows."""
    out: dict[str, set[str]] = {}
    for schema, name, value in rows:
        out.setdefault(render_name(schema, name), set()).add(value)
    return out


def _text_schemas(rows) -> dict[str, frozenset[str]]:
    """DOMAIN_SCHEMAS_SQL's (schema, catalog) rows as {catalog: its schemas}."""
    out: dict[str, set[str]] = {}
    for schema, catalog in rows:
        out.setdefault(catalog, set()).add(schema)
    return {k: frozenset(v) for k, v in out.items()}


def _ok(result: Rows | UpstreamError) -> list[list]:
    """A catalog query's rows (their columns are never NULL), or its error raised."""
    if isinstance(result, UpstreamError):
        raise result
    return result


def _frozen(groups: dict) -> dict:
    return {k: frozenset(v) for k, v in groups.items()}


class CatalogLoader:
    """The proxy's catalog snapshots: ``attach`` gives a session's policy its database's."""

    def __init__(self, cfg, credentials, refresh_after: float = 300.0,
                 min_interval: float = MIN_INTERVAL):
        self.cfg = cfg
        self.credentials = credentials
        self.min_interval = min_interval
        self.cache = CatalogCache(refresh_after=refresh_after)
        # with workers > 1: sends this worker's catalog news to the others (the handoff
        # channel: proxy.handoff.Receiver.tell); ``news`` applies theirs
        self.tell: Callable[[bytes], None] | None = None
        self._links: dict[str, _Link] = {}  # a database's catalog login, between loads
        self._closed = False

    async def _queries(self, database: str, *sqls: str) -> list[Rows | UpstreamError]:
        """``sqls``' rows (or errors) over the database's catalog login: the one kept from
        the last load if it is still open (a login of its own if that one fails before
        answering: the server may have ended it meanwhile), else a new one; kept for
        ``LINK_IDLE_SECONDS`` after, if it came out clean."""
        link = self._links.pop(database, None)
        if link is not None and link.expiry is not None:
            link.expiry.cancel()
            link.expiry = None
        reused = link is not None
        while True:
            if link is None:
                link = await _login(self.cfg, self.credentials, database)
            try:
                results, clean = await _exchange(self.cfg, link, sqls)
            except (OSError, TimeoutError, UpstreamError, ValueError):
                link.close()
                if not reused:
                    raise
                link, reused = None, False  # (a kept login the server ended: once more)
                continue
            except BaseException:  # (cancelled: the load gave way)
                link.close()
                raise
            if clean and not self._closed and database not in self._links:
                self._links[database] = link
                link.expiry = asyncio.get_running_loop().call_later(
                    LINK_IDLE_SECONDS, self._expire, database, link
                )
            else:
                link.close()
            return results

    def _expire(self, database: str, link: _Link) -> None:
        if self._links.get(database) is link:
            del self._links[database]
        link.expiry = None
        link.close()

    def drop_links(self) -> bool:
        """Close the catalog logins kept idle (a login the server refused for a connection
        limit, 53300, makes room: ``Handshake``); whether there were any."""
        links, self._links = self._links, {}
        for link in links.values():
            link.close()
        return bool(links)

    def close(self) -> None:
        """Close the catalog logins kept between loads (the proxy stops, or this loader is
        replaced)."""
        self._closed = True
        self.drop_links()

    def _announce(self, kind: str, database: str, removed, defined=None) -> None:
        if self.tell is None:
            return
        self.tell(json.dumps({
            "kind": kind, "db": database, "removed": sorted(removed),
            "defined": {k: sorted(v) for k, v in (defined or {}).items()},
        }).encode())  # fmt: skip

    def news(self, data: bytes) -> None:
        """Another worker's catalog news (DDL through it, or its transaction ended): this
        worker's snapshot follows as if the session had been its own."""
        try:
            doc = json.loads(data)
            kind, database = doc["kind"], str(doc["db"])
            if kind == "blocks":  # its DDL blocks open now (``StatementPolicy.on_block``)
                origin, count = int(doc["origin"]), int(doc["open"])
                self.cache.entry(database).count_blocks(origin=origin, count=count)
                return
            if kind == "code":  # code that may run DDL ran there (``code_ran``)
                metrics.DDL_CODE_RUNS.labels("other_worker").inc()
                code_ran(self.cache.entry(database), told=True)
                return
            removed = frozenset((str(rel), str(col)) for rel, col in doc["removed"])
            defined = {str(k): frozenset(map(str, v)) for k, v in doc["defined"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            event("unreadable catalog news from another worker", logging.WARNING, error=str(exc))
            return
        if kind == "ddl":
            self.cache.invalidate(database, defined, removed)
            self.refresh(database)
        elif kind == "settle":
            self.settled(database, removed)

    def settled(self, database: str, removed: frozenset[tuple[str, str]]) -> None:
        """A session's DDL ended (committed or not; ``removed``: the columns it renamed or
        dropped): a load that starts from now on shows the catalog as the DDL left it (the
        one DDL started ran beside it, or before its block committed), so the snapshot is
        stale until then, and a load running since before is followed by another."""
        self.cache.settle(database, removed)
        self.cache.invalidate(database)
        self.refresh(database)

    async def load(self, database: str) -> None:
        started = time.monotonic()  # what the snapshot can speak for: before its queries ran
        epoch = self.cache.entry(database).epoch  # (the DDL counted by then)
        (functions, column_rows, role_schemas, user_function_rows, user_operator_rows,
         user_type_rows, type_oid_rows, cascade_rows, view_rows, view_read_rows,
         inlinable_rows, ruled_rows, relation_rows, schema_rows, defaulted_rows,
         domain_rows, triggered_rows, inheritance_rows, relation_cast_rows,
         global_cast_rows, function_type_rows, event_rows, opclass_rows,
         relation_opclass_rows, code_flag_rows, ddl_code_rows, view_function_rows,
         relation_policy_rows, type_user_rows, statistics_rows,
         default_function_rows, policy_read_rows, published_rows, type_name_rows,
         refcursor_rows, relation_plan_rows, argument_default_rows, type_dependent_rows,
         foreign_key_rows, relation_check_rows, settings_code_rows, matview_read_rows,
         policy_expr_rows) = await self._queries(
            database, FUNCTIONS_SQL, COLUMNS_SQL, ROLE_SCHEMAS_SQL,
            USER_FUNCTIONS_SQL, USER_OPERATORS_SQL, USER_TYPES_SQL, USER_TYPE_OIDS_SQL,
            CASCADES_SQL, VIEWS_SQL, VIEW_READS_SQL, INLINABLE_SQL, RULED_SQL,
            RELATION_OIDS_SQL, USER_SCHEMAS_SQL, DEFAULTED_FUNCTIONS_SQL, DOMAIN_SCHEMAS_SQL,
            TRIGGERED_SQL, INHERITANCE_SQL, RELATION_CASTS_SQL, GLOBAL_CASTS_SQL,
            FUNCTION_TYPES_SQL, EVENT_TRIGGERS_SQL, OPCLASS_FUNCTIONS_SQL, RELATION_OPCLASS_SQL,
            CODE_FLAGS_SQL, DDL_CODE_SQL, VIEW_FUNCTIONS_SQL, RELATION_POLICY_SQL,
            TYPE_USERS_SQL, STATISTICS_SQL, DEFAULT_FUNCTIONS_SQL, POLICY_READS_SQL,
            PUBLISHED_SQL, TYPE_NAMES_SQL, REFCURSOR_FUNCTIONS_SQL,
            RELATION_PLAN_CODE_SQL, ARGUMENT_DEFAULTS_SQL, TYPE_DEPENDENTS_SQL,
            FOREIGN_KEYS_SQL, RELATION_CHECKS_SQL, SETTINGS_CODE_SQL, MATVIEW_READS_SQL,
            POLICY_EXPRS_SQL,  # last: it sets its own search_path
        )  # fmt: skip
        views_unread = False
        if isinstance(view_rows, UpstreamError) and view_rows.sqlstate == LOCK_NOT_AVAILABLE:
            views_unread = True
            # a view's query cannot be read while a transaction holds a lock on what it
            # reads (a migration's): every view counts as hiding rows instead of the whole
            # load failing, which would leave DDL's stale snapshot in place until it ends
            (view_rows,) = await self._queries(database, VIEW_NAMES_SQL)
            event("catalog views loaded without their queries", logging.INFO, database=database,
                  error=str(view_rows) if isinstance(view_rows, UpstreamError) else "")  # fmt: skip
        functions, column_rows = _ok(functions), _ok(column_rows)
        user_functions: dict[str, set[str]] = {}
        for schema, name in _ok(user_function_rows):  # catalog columns: never NULL
            user_functions.setdefault(render_name(name), set()).add(render_name(schema, name))
        user_operators: dict[str, set[str]] = {}
        for op, schema, name in _ok(user_operator_rows):
            user_operators.setdefault(op, set()).add(render_name(schema, name))
        user_types: dict[str, set[str]] = {}
        type_oids: dict[int, set[str]] = {}
        for oid, tschema, tname, schema, name in _ok(user_type_rows):
            target = render_name(schema, name)
            # bare too: an unqualified type is the first of the search path that has one
            for key in (render_name(tschema, tname), render_name(tname)):
                user_types.setdefault(key, set()).add(target)
            type_oids.setdefault(int(oid), set()).add(target)
        if isinstance(role_schemas, UpstreamError):  # only "$user" is at stake: not shown
            event("catalog role-schema check failed", logging.WARNING, database=database,
                  error=role_schemas.message)  # fmt: skip
            role_schemas = []
        relation_casts: dict[str, set[str]] = {}
        opclass_functions: dict[str, set[str]] = {}
        for oschema, oname, schema, name in _ok(opclass_rows):
            opclass_functions.setdefault(render_name(oschema, oname), set()).add(
                render_name(schema, name))  # fmt: skip
        plan_rows = _plan_code_rows(_ok(relation_plan_rows))
        for rschema, rname, schema, name in [*_ok(relation_cast_rows), *_ok(relation_opclass_rows),
                                             *plan_rows]:  # fmt: skip
            relation_casts.setdefault(render_name(rschema, rname), set()).add(
                render_name(schema, name))  # fmt: skip
        # row security: for the proxy's login where a policy applies to it, for a session
        # of a role of its own wherever there is one (RELATION_POLICY_SQL)
        relation_casts_role = {k: set(v) for k, v in relation_casts.items()}
        for rschema, rname, schema, name, applies in _ok(relation_policy_rows):
            rel, fn = render_name(rschema, rname), render_name(schema, name)
            relation_casts_role.setdefault(rel, set()).add(fn)
            if applies != "false":
                relation_casts.setdefault(rel, set()).add(fn)
        argument_defaults: dict[str, set[str]] = {}
        for fschema, fname, schema, name in _ok(argument_default_rows):
            argument_defaults.setdefault(render_name(fschema, fname), set()).add(
                render_name(schema, name))  # fmt: skip
        # what a plan of the relation runs (a foreign key's query on it plans it too)
        plan_code = {k: set(v) for k, v in _grouped(
            [*plan_rows, *_ok(relation_opclass_rows)]).items()}  # fmt: skip
        cascades = cascade_reach(
            (render_name(s1, t1), render_name(s2, t2)) for s1, t1, s2, t2, _u in _ok(cascade_rows)
        )
        # stored code that may change the session's settings (SETTINGS_CODE_SQL): a statement
        # on the relation, or converting a value to the type, needs the execute scope on it
        settings_code: dict[str, set[str]] = {}
        settings_role: dict[str, set[str]] = {}  # (row security policies that do not apply)
        for kind, schema, name, fschema, fname, extra in _ok(settings_code_rows):
            fn = render_name(fschema, fname)
            if kind == "type":
                for key in (render_name(schema, name), render_name(name)):
                    user_types.setdefault(key, set()).add(fn)
                type_oids.setdefault(int(extra), set()).add(fn)
            elif kind == "policy" and extra == "false":
                settings_role.setdefault(render_name(schema, name), set()).add(fn)
            else:
                settings_code.setdefault(render_name(schema, name), set()).add(fn)
        ancestors = cascade_reach(
            (render_name(s2, t2), render_name(s1, t1))
            for s1, t1, s2, t2, _part in _ok(inheritance_rows)
        )
        for lists in (settings_code, settings_role):
            # ... a write to a parent runs its children's and partitions' (their CHECKs and
            # defaults; red-team round 87), and a write whose foreign keys' actions write such
            # a relation runs it there (an ON DELETE SET DEFAULT: its DEFAULT; round 85)
            for rel, fns in list(lists.items()):
                for parent in ancestors.get(rel, ()):
                    lists.setdefault(parent, set()).update(fns)
            for rel, written in cascades.items():
                actions_run = set().union(*(lists.get(r, ()) for r in written))
                if actions_run:
                    lists.setdefault(rel, set()).update(actions_run)
        for rel, fns in settings_code.items():
            for merged in (relation_casts, relation_casts_role):
                merged.setdefault(rel, set()).update(fns)
        for rel, fns in settings_role.items():
            relation_casts_role.setdefault(rel, set()).update(fns)
        # what depends on a user type runs what the type runs (TYPE_DEPENDENTS_SQL)
        type_written: set[str] = set()
        refreshes: dict[str, set[str]] = {}
        for kind, schema, name, oid in _ok(type_dependent_rows):
            runs = type_oids.get(int(oid))
            if not runs:
                continue
            if kind == "refresh":
                refreshes.setdefault(render_name(schema, name), set()).update(runs)
            elif kind == "write":
                type_written.add(render_name(schema, name))
            elif kind == "function":
                argument_defaults.setdefault(render_name(schema, name), set()).update(runs)
            else:  # plan, view
                for merged in (relation_casts, relation_casts_role):
                    merged.setdefault(render_name(schema, name), set()).update(runs)
                if kind == "plan":
                    plan_code.setdefault(render_name(schema, name), set()).update(runs)
        fk_code = _fk_code(plan_code, _ok(foreign_key_rows), cascades)
        check_functions = {k: set(v) for k, v in _grouped(_ok(relation_check_rows)).items()}
        # a function a definition calls runs its argument defaults where the call leaves
        # them out, which the stored definition does not show (PostgreSQL adds them at
        # planning: red-team round 84): each list holds what those call, transitively
        for lists in (relation_casts, relation_casts_role, fk_code, check_functions):
            for key, fns in lists.items():
                lists[key] = _with_defaults(fns, argument_defaults)
        if type_written:  # (and their ancestors: a write to a parent reaches them)
            type_written |= {a for rel in list(type_written) for a in ancestors.get(rel, ())}
        view_bases = cascade_reach(
            (render_name(s1, v), render_name(s2, b)) for s1, v, s2, b in _ok(view_read_rows)
        )
        # a view's query plans the relations it reads: what a statement on one of them runs
        # without naming it, a statement on the view runs too (red-team round 81)
        for merged in (relation_casts, relation_casts_role):
            for view, bases in view_bases.items():
                reached = set().union(*(merged.get(base, ()) for base in bases))
                if reached:
                    merged.setdefault(view, set()).update(reached)
        # a materialized view's REFRESH (DDL of it) plans its query on what it reads: it runs
        # what a statement on each of those runs (red-team round 85), and what the query's
        # own types run; a read of its stored rows runs none of it
        matview_bases: dict[str, set[str]] = {}
        for mv, base in (
            (render_name(s1, v), render_name(s2, b)) for s1, v, s2, b in _ok(matview_read_rows)
        ):
            # (through the views it reads: their bases' code is merged into theirs, above)
            matview_bases.setdefault(mv, set()).update({base} | view_bases.get(base, frozenset()))
            # (as its owner: whichever row security policies apply, counted)
            refreshes.setdefault(mv, set()).update(
                relation_casts.get(base, ()), relation_casts_role.get(base, ()))
        for mv, fns in refreshes.items():
            if fns:
                check_functions.setdefault(mv, set()).update(_with_defaults(fns, argument_defaults))
        function_types: dict[str, set[str]] = {}
        for fschema, fname, tschema, tname in _ok(function_type_rows):
            function_types.setdefault(render_name(fschema, fname), set()).add(
                render_name(tschema, tname))  # fmt: skip
        flags = _ok(code_flag_rows)[0] if _ok(code_flag_rows) else ["t", "t", "t", "t"]
        ddl_functions: set[str] = set()
        ddl_relations: set[str] = set()
        names_functions: set[str] = set()
        names_relations: set[str] = set()
        ddl_objects = False
        for schema, name, used, names in _ok(ddl_code_rows):
            if used == "relation":  # a relation whose objects run one
                ddl_relations.add(render_name(schema, name))
                if names != "false":
                    names_relations.add(render_name(schema, name))
                continue
            keys = (render_name(schema, name), render_name(name))
            ddl_functions.update(keys)
            if names != "false":
                names_functions.update(keys)
            ddl_objects = ddl_objects or used != "false"
        columns: dict[str, set[str]] = {}
        for schema, table, column in column_rows:
            if schema is None or table is None or column is None:
                continue  # never: the catalog columns are NOT NULL
            columns.setdefault(render_name(schema, table), set()).add(column)
        self.cache.put(
            database,
            [r[0] for r in functions],
            {k: frozenset(v) for k, v in columns.items()},
            role_schemas == [["t"]],
            _frozen(user_functions),
            _frozen(user_operators),
            _frozen(user_types),
            _frozen(type_oids),
            [int(r[0]) for r in _ok(type_oid_rows)],
            cascades,
            views_from_rows(_ok(view_rows), _ok(view_read_rows)),
            relation_names(_ok(view_rows)),
            inlinable_from_rows(_ok(inlinable_rows)),
            ruled=relation_names(_ok(ruled_rows)),
            inlinable_plain=plain_inlinable_from_rows(_ok(inlinable_rows)),
            view_functions=view_functions_from_rows(
                _ok(view_rows), _ok(view_read_rows), _ok(view_function_rows)
            ),
            relation_oids={int(oid): (schema, name) for oid, schema, name in _ok(relation_rows)},
            user_schemas=[r[0] for r in _ok(schema_rows)],
            defaulted_functions=[(schema, name) for schema, name in _ok(defaulted_rows)],
            text_schemas=_text_schemas(_ok(domain_rows)),
            triggered=_cascaded(relation_names(_ok(triggered_rows)) | type_written, cascades),
            loaded_at=started,
            loaded_epoch=epoch,
            type_names=[r[0] for r in _ok(type_name_rows)],
            refcursor_functions=[render_name(s, n) for s, n in _ok(refcursor_rows)],
            descendants=cascade_reach(
                (render_name(s1, t1), render_name(s2, t2))
                for s1, t1, s2, t2, part in _ok(inheritance_rows) if part == "f"
            ),
            partitions=cascade_reach(
                (render_name(s1, t1), render_name(s2, t2))
                for s1, t1, s2, t2, part in _ok(inheritance_rows) if part != "f"
            ),
            type_users=_grouped(_ok(type_user_rows)),
            statistics=_grouped(_ok(statistics_rows)),
            default_functions=_grouped(_ok(default_function_rows)),
            view_calls=_grouped(_ok(view_function_rows)),
            policy_reads=_grouped(r[:4] for r in _ok(policy_read_rows) if r[4] != "false"),
            policy_reads_role=_grouped(r[:4] for r in _ok(policy_read_rows)),
            published=_frozen(_by_first(_ok(published_rows))),
            policy_exprs=policy_exprs_from_rows(_ok(policy_expr_rows), applying=True),
            policy_exprs_role=policy_exprs_from_rows(_ok(policy_expr_rows), applying=False),
            update_cascades=cascade_reach(
                (render_name(s1, t1), render_name(s2, t2))
                for s1, t1, s2, t2, on_update in _ok(cascade_rows) if on_update == "t"
            ),
            view_bases=view_bases,
            matview_bases=_frozen(matview_bases),
            views_unread=views_unread,
            relation_casts=_frozen(relation_casts),
            relation_casts_role=_frozen(relation_casts_role),
            global_casts=[render_name(schema, name) for schema, name in _ok(global_cast_rows)],
            function_types=_frozen(function_types),
            argument_defaults=_frozen(argument_defaults),
            fk_code=_frozen(fk_code),
            check_functions=_frozen(check_functions),
            event_functions=[render_name(schema, name) for schema, name in _ok(event_rows)],
            opclass_functions=_frozen(opclass_functions),
            # (unread: assumed, as a failed load assumes the worst)
            encoding_code=flags[0] != "f", temp_code=flags[1] != "f",
            cursor_code=flags[2] != "f", portal_code=flags[3] != "f",
            ddl_functions=ddl_functions, ddl_objects=ddl_objects, ddl_relations=ddl_relations,
            names_functions=names_functions, names_relations=names_relations,
        )

    def refresh(self, database: str, since: float | None = None) -> asyncio.Task:
        """Start a load unless one is running; the task never raises (a failure is logged
        and the old snapshot, if any, stays: stale, so unknown names count as calls).
        ``since`` (monotonic): the load must start no earlier (a statement arrived then and
        waits for a snapshot that speaks for it): one not started yet is joined, one that
        started before is followed by another.

        A load a waiting statement asks for starts at least ``min_interval`` seconds after
        the one before: statements that rest on the catalog's completeness
        (``policy.catalog.rests_on_completeness``) each ask for a reload, and a loop of them
        would otherwise keep one upstream login busy with catalog queries. Whoever waits
        meanwhile shares the next load. A load after DDL (``since`` None) is not paced:
        until it is done, names the DDL may have changed count as calls (a stale snapshot).
        """
        entry = self.cache.entry(database)
        task = entry.loading
        previous = None
        # a load after DDL (since None) must start after it went through (``invalidate``)
        after = since if since is not None else entry.invalidated_at
        if task is not None and not task.done():
            started = entry.loading_started
            if started is None or started >= after:
                return task
            previous = task

        async def run() -> None:
            if previous is not None:
                await asyncio.shield(previous)  # never raises
            delay = entry.last_started + self.min_interval - time.monotonic()
            if since is not None and delay > 0:
                await asyncio.sleep(delay)
            for pause in (*LOCK_RETRIES, None):
                entry.loading_started = entry.last_started = time.monotonic()
                try:
                    await self.load(database)
                    metrics.CATALOG_LOADS.labels("ok").inc()
                    metrics.CATALOG_LOAD_SECONDS.observe(time.monotonic() - entry.last_started)
                    return
                except UpstreamError as exc:
                    if exc.sqlstate != LOCK_NOT_AVAILABLE or pause is None:
                        metrics.CATALOG_LOADS.labels("failed").inc()
                        event("catalog load failed", logging.WARNING, database=database,
                              error=str(exc))  # fmt: skip
                        return
                    await asyncio.sleep(pause)  # it gave way to a session's lock: again
                except (OSError, TimeoutError, ValueError) as exc:
                    metrics.CATALOG_LOADS.labels("failed").inc()
                    event("catalog load failed", logging.WARNING, database=database, error=str(exc))
                    return

        entry.loading_started = None  # not started: joined by whoever asks before it starts
        entry.loading = asyncio.get_running_loop().create_task(run())
        return entry.loading

    async def attach(self, policy, database: str) -> None:
        """Wire ``policy`` to the database's snapshot; wait for the first load."""
        if self.cache.due(database):
            task = self.refresh(database)
            if self.cache.get(database) is None:
                await task

        def on_ddl(
            defined: dict[str, frozenset[str]], removed: frozenset[tuple[str, str]] = frozenset()
        ) -> None:
            self.cache.invalidate(database, defined, removed)
            self.refresh(database)
            self._announce("ddl", database, removed, defined)

        def on_settle(removed: frozenset[tuple[str, str]]) -> None:
            self.settled(database, removed)
            self._announce("settle", database, removed)

        entry = self.cache.entry(database)

        def on_block(delta: int) -> None:
            entry.count_blocks(delta)
            if self.tell is not None:  # the others count this worker's blocks as open too
                self.tell(json.dumps({"kind": "blocks", "db": database, "origin": os.getpid(),
                                      "open": entry.open_blocks}).encode())  # fmt: skip

        def on_code() -> None:
            # the other workers' sessions may call what the code redefined: their window
            # opens too (after this worker's block count, which went to them first)
            metrics.DDL_CODE_RUNS.labels("this_worker").inc()
            if self.tell is not None:
                self.tell(json.dumps({"kind": "code", "db": database}).encode())

        entry.on_code = on_code
        policy.on_settle = on_settle
        policy.catalog_entry = entry
        policy.on_block = on_block
        # its prepared statements follow the catalog (the policy keeps the listener)
        policy.catalog_listener = self.cache.listen(database, policy)
        # ``self.cache.get(database)``, read before every statement: the entry is the
        # database's for good (``CatalogCache.entry``), so its snapshot is read in C
        policy.catalog = partial(getattr, entry, "snapshot")
        policy.on_ddl = on_ddl
        policy.on_stale = lambda since: self.refresh(database, since)
