"""A fingerprint-cache hit must be a text PostgreSQL reads as the one classified.

Round three of the red team: PostgreSQL continues a string across a newline in the
string's own mode (``E'a'<LF>'\\' || '...'`` is one E-string: ``\\'`` is an escaped quote),
and the proxy's lexer used to end the E-string at the newline. A harmless primer and an
attack then shared a fingerprint, and the attack was answered from the cache: neither
parser read it. Fixed twice: the lexer continues strings as PostgreSQL does, and the cache
key holds PostgreSQL's own scanner's reading (``crosscheck.token_signature``). The server
judges here: the secret never reaches the client and no row is deleted, in the session that
primed the cache, in another session of the same grant, and under another grant.
"""

from __future__ import annotations

import pytest

from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue as grant_issue
from tests.support.proxies import sqlite_url
from tests.support.rawpg import RawClient, error_fields

pytestmark = pytest.mark.timeout(120)

AGENT = "e2e-cache"
SCOPES = "read:public.orders,public.customers"
SECRET = "cache-secret-4e1a"
SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.cache_vault (secret text);
INSERT INTO secret.cache_vault VALUES ('{SECRET}');
CREATE TABLE public.cache_victim (id int);
INSERT INTO public.cache_victim VALUES (1), (2), (3);
"""
TEARDOWN = """
DROP TABLE IF EXISTS secret.cache_vault;
DROP TABLE IF EXISTS public.cache_victim;
"""
READ = "(SELECT secret FROM secret.cache_vault)"
# (primer, attack): the same fingerprint under the old lexer, different statements to
# PostgreSQL. Continuations: a newline, a -- comment before it, a carriage return.
PAIRS = [
    ("SELECT E'a'\n'b' || 'c'", f"SELECT E'a'\n'\\' || ' || {READ} --'"),
    ("SELECT E'a' -- c\n'b' || 'c'", f"SELECT E'a' -- c\n'\\' || ' || {READ} --'"),
    ("SELECT E'a'\r'b' || 'c'", f"SELECT E'a'\r'\\' || ' || {READ} --'"),
    ("SELECT 'k' AS k, E'a'\n  \n'b' || 1", f"SELECT 'k' AS k, E'a'\n  \n'\\' || 1 || ' || {READ} --'"),
]
WRITE = (
    "WITH x AS (SELECT E'a'\n'b' || 'c'\n) SELECT 1",
    "WITH x AS (SELECT E'a'\n'\\' || '), d AS (DELETE FROM public.cache_victim RETURNING 1),"
    " y AS (SELECT 1 --'\n) SELECT 1",
)


@pytest.fixture(scope="module")
def cproxy(pg, tmp_path_factory):
    pg.psql(TEARDOWN, db="app")
    pg.psql(SETUP, db="app")
    url = sqlite_url(tmp_path_factory.mktemp("cache") / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    try:
        handle.token = grant_issue(handle, agent=AGENT, task="CACHE-A", scopes=SCOPES)[1]
        handle.token2 = grant_issue(handle, agent=AGENT, task="CACHE-B", scopes=SCOPES)[1]
        yield handle
    finally:
        handle.stop()
        pg.psql(TEARDOWN, db="app")


def query(handle, token: str, sql: str) -> tuple[list[str], bytes]:
    with RawClient.session(handle.host, handle.port, AGENT, token) as c:
        frames = c.query(sql)
    return [error_fields(f).get("C", "") for f in frames if f[:1] == b"E"], b"".join(frames)


def test_the_server_reads_the_attacks_as_reads_of_the_secret(cproxy, pg):
    for _primer, attack in PAIRS:
        assert SECRET in pg.psql(attack, db="app"), attack


@pytest.mark.parametrize(("primer", "attack"), PAIRS)
def test_a_primed_fingerprint_does_not_answer_a_text_postgres_reads_differently(cproxy, primer, attack):
    # in the session that primed the cache
    with RawClient.session(cproxy.host, cproxy.port, AGENT, cproxy.token) as c:
        assert not [f for f in c.query(primer) if f[:1] == b"E"]
        frames = c.query(attack)
    assert [error_fields(f).get("C") for f in frames if f[:1] == b"E"] == ["42501"]
    assert SECRET.encode() not in b"".join(frames)
    # another session of the same grant, and another grant (the shared tier)
    for token in (cproxy.token, cproxy.token2):
        assert not query(cproxy, token, primer)[0]
        codes, raw = query(cproxy, token, attack)
        assert codes == ["42501"] and SECRET.encode() not in raw, (codes, raw)


def test_a_primed_fingerprint_does_not_let_a_read_only_grant_delete(cproxy, pg):
    primer, attack = WRITE
    assert not query(cproxy, cproxy.token, primer)[0]
    codes, _raw = query(cproxy, cproxy.token, attack)
    assert codes == ["42501"]
    assert pg.psql("SELECT count(*) FROM public.cache_victim", db="app").strip() == "3"
