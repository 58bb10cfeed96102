"""End to end: settings are where secrets are kept too, the server as the judge.

PostgreSQL lets every session of a database or role read the custom settings set for it
(``ALTER DATABASE app SET app.jwt_secret = ...``, PostgREST's ``ALTER ROLE authenticator
SET pgrst.jwt_secret = ...``) whatever the session's privileges, and lists every role's
own settings in ``pg_roles.rolconfig`` and ``pg_user.useconfig``. A privileged upstream
role (RDS's master user, here ``pgwitness`` with ``pg_read_all_settings``) also reads the
settings PostgreSQL keeps from plain roles (``primary_conninfo`` holds the replication
password). A grant reads a custom setting only with a ``set:`` scope naming it, the
privileged ones never, and ``SHOW ALL``, ``pg_settings``, ``pg_roles`` and ``pg_user``
not at all (``policy.decide.read_setting``).

Each attack goes over the simple protocol (a raw client: every frame the proxy sends is
seen) and the extended protocol; the planted values must never reach the client, and the
session stays usable.
"""

from __future__ import annotations

import pytest

from policy.decide import PRIVILEGED_SETTINGS
from tests.support import planted
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import RawClient, policy_denial

pytestmark = pytest.mark.timeout(120)

AGENT = "e2e-settings"
SCOPES = "read:public.orders write:public.orders"
DB_SECRET = "db-level-jwt-secret-5c2e"  # app.r10_jwt, set for the database
ROLE_SECRET = "role-level-jwt-secret-91fb"  # pgrst.r10_jwt, set for the upstream role
FN_SECRET = "function-level-key-77d0"  # app.r10_fn_key, a function's SET clause

SETUP = f"""
ALTER DATABASE app SET app.r10_jwt = '{DB_SECRET}';
ALTER ROLE pgwitness SET pgrst.r10_jwt = '{ROLE_SECRET}';
GRANT pg_read_all_settings TO pgwitness;
CREATE FUNCTION public.r10_keyed() RETURNS int LANGUAGE sql SET app.r10_fn_key = '{FN_SECRET}'
    AS 'SELECT 1';
"""
TEARDOWN = """
ALTER DATABASE app RESET app.r10_jwt;
ALTER ROLE pgwitness RESET pgrst.r10_jwt;
REVOKE pg_read_all_settings FROM pgwitness;
DROP FUNCTION IF EXISTS public.r10_keyed();
"""


@pytest.fixture(scope="module")
def setproxy(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "settings", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip

        def issue(task: str, scopes: str) -> str:
            return grant_issue(handle, agent=AGENT, task=task, scopes=scopes)[1]

        handle.unknown_token = issue("SET-UNK", SCOPES + " unknown:*")
        handle.named_token = issue("SET-NAMED", SCOPES + " set:app.r10_jwt")
        handle.data_directory = pg.psql("SHOW data_directory").strip()
        yield handle


def raw(handle, token) -> RawClient:
    return RawClient.session(handle.host, handle.port, AGENT, token)


# the two protocols, as the raw client's methods: simple Query, and Parse/Bind/Execute/Sync
PROTOCOLS = pytest.mark.parametrize(
    "send", [RawClient.query, RawClient.extended], ids=["simple", "extended"]
)


def received(frames: list[bytes]) -> bytes:
    return b"".join(frames)


# What the server would answer with a planted value, were the statement let through.
CUSTOM_ATTACKS = [
    "SHOW app.r10_jwt",
    "SHOW pgrst.r10_jwt",
    'SHOW "app"."r10_jwt"',
    "SHOW APP.R10_JWT",
    "SELECT current_setting('app.r10_jwt')",
    "SELECT current_setting('pgrst.r10_jwt', true)",
    "SELECT current_setting('APP.R10_JWT')",
    "SELECT pg_catalog.current_setting('app.r10_jwt')",
    'SELECT "current_setting"(\'app.r10_jwt\')',
    "SELECT current_setting(E'app\\x2er10_jwt')",
    "SELECT current_setting($$app.r10_jwt$$)",
    "SELECT current_setting('app.' || 'r10_jwt')",
    "SELECT current_setting(setting_name => 'app.r10_jwt')",
    "SELECT current_setting(VARIADIC ARRAY['app.r10_jwt'])",
    "SELECT current_setting(n) FROM (VALUES ('app.r10_jwt')) v(n)",
    "SELECT s FROM current_setting('app.r10_jwt') s",
    "SELECT current_setting('jit'), current_setting('app.r10_jwt')",
    "SELECT 1 WHERE current_setting('app.r10_jwt') LIKE 'db-%'",
    "SELECT rolname, rolconfig FROM pg_roles",
    "SELECT * FROM pg_catalog.pg_roles",
    "TABLE pg_roles",
    "SELECT to_jsonb(r) FROM pg_roles r",
    "SELECT l FROM pg_roles r(a, b, c, d, e, f, g, h, i, j, k, l)",
    "SELECT (r).rolconfig FROM pg_roles r",
    "SELECT useconfig FROM pg_user",
    "SELECT array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname = current_user",
    "SELECT * FROM pg_settings WHERE name LIKE 'app.%'",
    # one setting by name, as drivers ask for standard ones: a custom one holds a value
    "SELECT setting FROM pg_settings WHERE name = 'app.r10_jwt'",
    "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'APP.R10_JWT'",
    "SELECT reset_val FROM pg_settings WHERE name = 'app.r10_jwt' AND true",
    # a function's SET clauses (ALTER FUNCTION ... SET app.key = ...)
    "SELECT proconfig FROM pg_proc WHERE proname = 'r10_keyed'",
    "SELECT array_to_string(p.proconfig, ',') FROM pg_catalog.pg_proc p",
]
PRIVILEGED_ATTACKS = [
    "SHOW data_directory",
    "SHOW ALL",
    "SELECT current_setting('data_directory')",
    "SELECT current_setting('Config_File')",
    "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
    "SELECT setting FROM pg_settings WHERE name = 'jit' OR name = 'data_directory'",
    "SELECT setting FROM pg_settings WHERE name = 'jit' UNION SELECT setting FROM pg_settings",
    "SELECT s.setting FROM pg_settings s, pg_class c WHERE s.name = 'jit' OR c.oid > 0",
    "SELECT setting FROM pg_settings WHERE name IN ('jit', 'data_directory')",
    "SELECT string_agg(setting, ',') FROM pg_catalog.pg_settings",
]


@PROTOCOLS
@pytest.mark.parametrize("sql", CUSTOM_ATTACKS + PRIVILEGED_ATTACKS)
@pytest.mark.parametrize("grant", ["token", "unknown_token"])
def test_settings_that_can_hold_secrets_are_not_read(setproxy, send, sql, grant):
    with raw(setproxy, getattr(setproxy, grant)) as client:
        frames = send(client, sql)
        got = received(frames)
        assert DB_SECRET.encode() not in got and ROLE_SECRET.encode() not in got, (sql, got)
        assert setproxy.data_directory.encode() not in got, (sql, got)
        assert FN_SECRET.encode() not in got, (sql, got)
        assert policy_denial(frames) is not None, (sql, frames)
        assert b"1" in received(client.query("SELECT 1"))  # the session goes on


def test_the_planted_values_are_there_for_the_upstream_role(pg, setproxy):
    """What makes the attacks above able to fail: directly, as the proxy's upstream role,
    every one of these reads a planted value."""
    import psycopg

    with psycopg.connect(pg.dsn("pgwitness", pg.users["pgwitness"], "app"), autocommit=True) as c:
        assert c.execute("SHOW app.r10_jwt").fetchone() == (DB_SECRET,)
        assert c.execute("SELECT current_setting('pgrst.r10_jwt')").fetchone() == (ROLE_SECRET,)
        config = c.execute("SELECT rolconfig FROM pg_roles WHERE rolname = 'pgwitness'").fetchone()
        assert f"pgrst.r10_jwt={ROLE_SECRET}" in config[0]
        assert c.execute("SHOW data_directory").fetchone() == (setproxy.data_directory,)
        row = c.execute("SELECT proconfig FROM pg_proc WHERE proname = 'r10_keyed'").fetchone()
        assert FN_SECRET in row[0][0]


@PROTOCOLS
def test_a_set_scope_naming_a_custom_setting_reads_it_and_only_it(setproxy, send):
    with raw(setproxy, setproxy.named_token) as client:
        for sql in ("SHOW app.r10_jwt", "SELECT current_setting('app.r10_jwt')"):
            got = received(send(client, sql))
            assert DB_SECRET.encode() in got, (sql, got)
        for sql in ("SHOW pgrst.r10_jwt", "SELECT current_setting('pgrst.r10_jwt')"):
            frames = send(client, sql)
            assert ROLE_SECRET.encode() not in received(frames), sql
            assert policy_denial(frames) is not None, sql


@PROTOCOLS
@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("SHOW search_path", b"public"),
        ("SHOW TimeZone", b""),
        ("SHOW transaction isolation level", b"read committed"),
        ("SELECT current_setting('jit'), set_config('jit', 'off', false)", b"off"),
        ("SELECT current_setting('server_version_num')::int > 150000", b"t"),
        # JDBC's DatabaseMetaData asks pg_settings for one setting by name
        ("SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'", b"32"),
        ("SELECT setting FROM pg_catalog.pg_settings WHERE name='default_transaction_isolation'",
         b"read committed"),
        # psql's \d lists a table's policies' roles this way: pg_roles without its settings
        ("SELECT array_to_string(array(SELECT rolname FROM pg_catalog.pg_roles "
         "WHERE rolname = 'pgwitness'), ',')", b"pgwitness"),
    ],
)
def test_ordinary_settings_stay_readable(setproxy, send, sql, value):
    with raw(setproxy, setproxy.token) as client:
        frames = send(client, sql)
        assert policy_denial(frames) is None, (sql, frames)
        assert any(f[:1] == b"D" and value in f for f in frames), (sql, frames)


def test_privileged_settings_are_those_postgres_hides_from_a_plain_role(pg):
    """PRIVILEGED_SETTINGS is derived on the server: what pg_settings lists to a superuser
    and not to a role without privileges."""
    pg.psql(
        "DO $$ BEGIN CREATE ROLE r10_plain NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    every = set(pg.psql("SELECT name FROM pg_settings").split())
    plain = set(pg.psql("SET ROLE r10_plain; SELECT name FROM pg_settings").split())
    assert every - plain == PRIVILEGED_SETTINGS


def test_the_column_lists_the_policy_reads_rows_with_are_the_servers(pg):
    """``x.name`` is a call ``name(x)`` of the whole row when ``name`` is not a column of x
    (``p.row_to_json`` showed pg_proc's bodies): the policy's column lists must be the
    server's exactly."""
    from policy.classify.pgparse import SENSITIVE_COLUMNS, SENSITIVE_RELATION_COLUMNS

    assert set(SENSITIVE_RELATION_COLUMNS) == set(SENSITIVE_COLUMNS)
    for (schema, name), columns in SENSITIVE_RELATION_COLUMNS.items():
        got = pg.psql(
            "SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped "
            f"AND attrelid = '{schema}.{name}'::regclass"
        ).split()
        assert set(got) == columns, (schema, name)
        assert set(SENSITIVE_COLUMNS[(schema, name)]) <= columns


def test_object_text_column_lists_are_the_servers(pg):
    """The same for the catalogs of object text (policy.classify.metadata.CATALOGS): a
    column missing from a list would make ``x.col`` a whole-row reference to the policy
    and nothing worse, but a name listed that the server lacks would hide ``x.name`` as
    the call ``name(x)`` of the whole row, object text included."""
    from policy.classify.metadata import CATALOGS

    for (schema, name), cat in CATALOGS.items():
        got = pg.psql(
            "SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped "
            f"AND attrelid = '{schema}.{name}'::regclass"
        ).split()
        assert set(got) == cat.columns, (schema, name, set(got) ^ cat.columns)
        keys = {cat.key, cat.rowid, *(cat.names or ())} - {""}
        assert cat.text <= cat.columns and keys <= cat.columns, (schema, name)


NAMED = "SELECT setting FROM pg_catalog.pg_settings WHERE name = '{}'"


@PROTOCOLS
@pytest.mark.parametrize("name", ["data_directory", "app.r10_jwt", "APP.R10_JWT", "pgrst.r10_jwt"])
def test_a_setting_read_by_name_does_not_stand_for_another(setproxy, send, name):
    """The by-name read is decided on the name: a statement of the same shape naming
    another setting is another decision, in the same session and in the next one (whose
    policy shares the first one's caches). Before, the shape allowed for ``jit`` was let
    through for ``data_directory`` and the custom settings."""
    with raw(setproxy, setproxy.token) as first:
        assert b"on" in received(send(first, NAMED.format("jit")))
        frames = send(first, NAMED.format(name))
        assert policy_denial(frames) is not None, (name, frames)
        again = send(first, NAMED.format("jit"))
        assert policy_denial(again) is None and b"on" in received(again)
    with raw(setproxy, setproxy.token) as second:
        frames = send(second, NAMED.format(name))
    for got in (received(frames),):
        assert DB_SECRET.encode() not in got and ROLE_SECRET.encode() not in got, (name, got)
        assert setproxy.data_directory.encode() not in got, (name, got)
    assert policy_denial(frames) is not None, (name, frames)
