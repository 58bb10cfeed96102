"""Policy sessions over a catalog whose functions may run DDL, without a server.

The unit tests of code that may run DDL (sessions 22-25: tests/unit/test_s22_ddl_code.py
and the modules after it) build their sessions here: one ``CatalogCache`` holding
``public.attach`` (code that may run DDL) and ``public.plain``, and a ``StatementPolicy``
wired to it as the proxy wires one (``on_ddl`` invalidates the snapshot, the catalog's
listener tells the session of other sessions' changes).
"""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache

SCOPES = "read:public.t write:public.t execute:public.attach,public.plain listen:chan"


def ddl_code_session(
    ddl_functions=("public.attach", "attach"), ddl_objects=False, triggered=(), **kw
):
    """(the session's policy, its catalog cache, the ``on_ddl`` calls it made)."""
    c = CatalogCache()
    c.put(
        "db", ["attach", "plain"], {"public.t": frozenset({"id"})},
        user_functions={"attach": frozenset({"public.attach"}),
                        "plain": frozenset({"public.plain"})},
        triggered=triggered, ddl_functions=ddl_functions, ddl_objects=ddl_objects, **kw,
    )  # fmt: skip
    p = StatementPolicy(parse_scopes(SCOPES), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    calls: list[tuple] = []

    def on_ddl(defined, removed):
        calls.append((defined, removed))
        c.invalidate("db", defined, removed)

    p.on_ddl = on_ddl
    p.catalog_listener = c.listen("db", p)
    return p, c, calls


def reload_snapshot(c: CatalogCache, **kw) -> None:
    """A load after the DDL: a fresh snapshot (the session's caches are forgotten)."""
    snap = c.get("db")
    c.put("db", ["attach", "plain"], snap.columns, user_functions=snap.user_functions,
          triggered=snap.triggered, ddl_functions=snap.ddl_functions,
          ddl_objects=snap.ddl_objects, **kw)  # fmt: skip


def settle(p: StatementPolicy) -> None:
    """The relay's ``settle_ddl`` at ReadyForQuery 'I', without a loader."""
    p.ddl_open = False


def wired_session(
    c: CatalogCache, scopes: str, task: str, entry: bool = False
) -> tuple[StatementPolicy, list]:
    """A session on ``c``'s database "db", wired as the proxy wires one (DDL invalidates,
    its end settles and invalidates, the listener tells it of others' changes;
    ``entry``: the catalog entry that counts DDL, as ``CatalogLoader.attach`` gives), its
    reload asks (``on_stale``) listed."""
    p = StatementPolicy(parse_scopes(scopes), task=task, shared=None)
    p.catalog = lambda: c.get("db")
    if entry:
        p.catalog_entry = c.entry("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.on_settle = lambda removed: (c.settle("db", removed), c.invalidate("db"))
    p.catalog_listener = c.listen("db", p)
    asks: list = []
    p.on_stale = asks.append
    return p, asks
