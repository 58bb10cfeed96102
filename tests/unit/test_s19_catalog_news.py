"""Catalog news between workers (proxy.catalog_loader.CatalogLoader.tell / news): DDL
through one worker's session changes every worker's snapshot, as if it had been theirs."""

from __future__ import annotations

import json

from policy.catalog import RENAMED_TO
from proxy.catalog_loader import CatalogLoader


class Loader(CatalogLoader):
    """No upstream: loads are recorded, not run."""

    def __init__(self) -> None:
        super().__init__(cfg=None, credentials=None)
        self.refreshed: list = []

    def refresh(self, database, since=None):  # type: ignore[override]
        self.refreshed.append((database, since))


def test_ddl_news_changes_the_other_workers_snapshot_and_settles():
    a, b = Loader(), Loader()
    sent: list[bytes] = []
    a.tell = sent.append
    for loader in (a, b):
        loader.cache.put("db", ["pin"], {"public.t": frozenset({"pin", "id"})},
                         descendants={"public.ra": frozenset({"secret.kid"})})  # fmt: skip
    b_before = b.cache.get("db")
    # what attach's on_ddl does for a session of worker a
    removed = frozenset({("public.t", "pin"), ("public.ra", RENAMED_TO + "public.rb")})
    a.cache.invalidate("db", {"f": frozenset({"public.f"})}, removed)
    a._announce("ddl", "db", removed, {"f": frozenset({"public.f"})})
    assert len(sent) == 1 and json.loads(sent[0])["kind"] == "ddl"
    b.news(sent[0])
    snap = b.cache.get("db")
    assert snap is not b_before and snap.stale
    assert "pin" not in snap.columns["public.t"]
    assert snap.unsettled["public.rb"] == {"public.ra", "public.rb"}
    assert snap.user_functions["f"] == {"public.f"}
    assert b.refreshed == [("db", None)]
    # the transaction ended in worker a: b's next load (started after) drops the marks
    a._announce("settle", "db", removed)
    b.news(sent[1])
    # a reload after the block's end, the snapshot stale until then (session 21: a load
    # that ran before the block committed may not show what its DDL made)
    assert b.refreshed[-1] == ("db", None) and b.cache.get("db").stale
    b.cache.put("db", ["pin"], {"public.t": frozenset({"id", "gone"})})
    assert not b.cache.get("db").unsettled and not b.cache.entry("db").removed


def test_unreadable_news_changes_nothing():
    b = Loader()
    b.cache.put("db", [], {"public.t": frozenset({"a"})})
    before = b.cache.get("db")
    for data in (b"not json", b'{"kind": "ddl"}', b'{"kind": "ddl", "db": "db", "removed": 5}'):
        b.news(data)
    assert b.cache.get("db") is before and not b.refreshed


def test_ddl_blocks_open_in_one_worker_count_in_the_others():
    """A session of worker a opens a DDL block: a write decided in worker b meanwhile must
    count it (``StatementPolicy.writes_moved``; red-team round 36). Absolute counts, per
    worker, so a lost or repeated message cannot drift."""
    import asyncio

    from policy import StatementPolicy, parse_scopes

    a, b = Loader(), Loader()
    sent: list[bytes] = []
    a.tell = sent.append
    for loader in (a, b):
        loader.cache.put("db", [], {"public.t": frozenset({"id"})})
    p = StatementPolicy(parse_scopes("read:public.t ddl:public.t"), task="T", shared=None)
    asyncio.run(a.attach(p, "db"))
    assert p.check_query("BEGIN").allowed
    assert p.check_query("ALTER TABLE public.t ADD COLUMN x int").allowed
    blocks = [json.loads(x) for x in sent if json.loads(x)["kind"] == "blocks"]
    assert blocks and blocks[-1]["open"] == 1
    for x in sent:
        b.news(x)
        b.news(x)  # twice: the same absolute count
    assert b.cache.entry("db").blocks_open == 1
    p.settle_ddl()
    for x in sent:
        b.news(x)
    assert b.cache.entry("db").blocks_open == 0 and a.cache.entry("db").blocks_open == 0
    b.news(b'{"kind": "blocks", "db": "db", "origin": "x"}')  # unreadable: logged, ignored
    assert b.cache.entry("db").blocks_open == 0


def test_catalog_loads_run_without_jit(monkeypatch):
    """The catalog queries' estimated costs pass jit_above_cost: JIT compiling them cost
    ~120 ms a load (session 22, measured), running them a few ms; loads turn it off."""
    import asyncio

    import pytest

    import proxy.catalog_loader as cl

    seen: dict = {}

    async def fake_connect(cfg, credentials, database, params):
        seen.update(params)
        raise OSError("no upstream here")

    monkeypatch.setattr(cl, "connect_upstream", fake_connect)
    with pytest.raises(OSError):
        asyncio.run(cl._login(None, None, "db"))
    assert seen["jit"] == "off" and seen["lock_timeout"] == cl.LOCK_TIMEOUT


def test_code_in_one_worker_opens_the_window_in_the_others():
    """Code that may run DDL in a session of worker a (here: a definition of a function
    and dynamic SQL) opens the code window in worker b too: b's sessions check their
    statement names with the server (``lazy_code``, ``verify_name``) until b's own load
    that started after the block ended (session 26; round 47 read the gap)."""
    import asyncio

    from policy import StatementPolicy, parse_scopes

    a, b = Loader(), Loader()
    sent: list[bytes] = []
    a.tell = sent.append
    for loader in (a, b):
        loader.cache.put("db", ["attach"], {"public.t": frozenset({"id"})},
                         user_functions={"attach": frozenset({"public.attach"})},
                         ddl_functions=frozenset({"public.attach", "attach"}))  # fmt: skip
    scopes = "read:public.t write:public.t execute:public.attach"
    pa = StatementPolicy(parse_scopes(scopes), task="A", shared=None)
    pb = StatementPolicy(parse_scopes(scopes), task="B", shared=None)
    asyncio.run(a.attach(pa, "db"))
    asyncio.run(b.attach(pb, "db"))
    assert pb.check_parse("SELECT 1", (), "held").allowed
    assert not b.cache.entry("db").code_window() and not pb.lazy_code
    assert pb.verify_name("held") is None  # no code ran: no check due

    assert pa.check_query("SELECT public.attach()").allowed  # worker a: code that may run DDL
    kinds = [json.loads(x)["kind"] for x in sent]
    assert "code" in kinds and kinds.index("blocks") < kinds.index("code"), kinds
    assert a.cache.entry("db").code_window()
    for x in sent:
        b.news(x)
    entry = b.cache.entry("db")
    assert entry.code_window() and entry.code_ended is None  # a's block is open
    assert pb.lazy_code and pb.verify_name("held") is not None  # b's session checks its name
    # no echo: news told to b is not told on
    b_sent: list[bytes] = []
    b.tell = b_sent.append
    b.news(json.dumps({"kind": "code", "db": "db"}).encode())
    assert b_sent == []
    # a's block ends: b's window stays open until b's own load that started after that
    pa.settle_ddl()
    for x in sent[len(kinds):]:
        b.news(x)
    assert entry.blocks_open == 0 and entry.code_window()
    b.cache.put("db", ["attach"], {"public.t": frozenset({"id"})},
                user_functions={"attach": frozenset({"public.attach"})},
                ddl_functions=frozenset({"public.attach", "attach"}))  # fmt: skip
    assert not entry.code_window()
