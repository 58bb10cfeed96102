"""Configuration: defaults < TOML < PGWITNESS_* environment < overrides (CLI flags), and
every refusal names the key at fault."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import ConfigError, load_config, usable_cpus, validate_for_serving

USERS = '[auth]\nusers = { alice = "alice-pw" }\n'


def _write(tmp_path: Path, text: str, name: str = "pgwitness.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_toml_env_overrides_precedence(tmp_path):
    path = _write(
        tmp_path,
        USERS
        + """
[proxy]
listen = "127.0.0.1:7000"
max_connections = 10
startup_timeout = 3

[upstream]
host = "db.internal"
port = 1111
user = "from-toml"

[log]
level = "warning"
""",
    )
    env = {
        "PGWITNESS_UPSTREAM_PORT": "2222",
        "PGWITNESS_UPSTREAM_USER": "from-env",
        "PGWITNESS_LOG_LEVEL": "error",
        "PGWITNESS_PROXY_STARTUP_TIMEOUT": "2.5",
        "PGWITNESS_RECORDER_ENABLED": "false",
        "PGWITNESS_PROXY_REQUIRE_TLS": "no",
        # Not config keys: other tools' variables and the config path itself.
        "PGWITNESS_CONFIG": "/nonexistent.toml",
        "PGWITNESS_KEEP_PG": "1",
        "PGWITNESS_PG_BINDIR": "/nowhere",
        "PATH": "/usr/bin",
    }
    cfg = load_config(path, env=env, overrides={"upstream.port": 3333, "proxy.workers": "3"})
    assert cfg.source == str(path)
    assert cfg.upstream.port == 3333  # override > env > toml
    assert cfg.upstream.user == "from-env"  # env > toml
    assert cfg.log.level == "error"
    assert cfg.proxy.startup_timeout == 2.5 and isinstance(cfg.proxy.startup_timeout, float)
    assert cfg.recorder.enabled is False
    assert cfg.proxy.require_tls is False
    assert cfg.proxy.workers == 3  # a CLI string, coerced
    assert cfg.proxy.max_connections == 10  # toml > default
    assert cfg.upstream.host == "db.internal"
    assert cfg.proxy.listen == "127.0.0.1:7000"
    assert cfg.upstream.sslmode == "prefer"  # default
    assert cfg.auth.users == {"alice": "alice-pw"}


def test_env_alone_and_auth_users_from_env():
    cfg = load_config(
        None,
        env={
            "PGWITNESS_AUTH_USERS": "alice=pw1,bob=pw=with=equals",
            "PGWITNESS_UPSTREAM_PORT": "6543",
        },
    )
    assert cfg.auth.users == {"alice": "pw1", "bob": "pw=with=equals"}
    assert cfg.upstream.port == 6543
    assert cfg.source == "embedded defaults"


def test_environment_defaults_to_os_environ(monkeypatch):
    for name in [n for n in os.environ if n.startswith("PGWITNESS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PGWITNESS_UPSTREAM_PORT", "7777")
    cfg = load_config(None, overrides={"auth.users": {"a": "b"}})
    assert cfg.upstream.port == 7777


# (TOML text, env, overrides, words the message must contain)
BAD = [
    ("unknown key", USERS + "[proxy]\nlisten_port = 1\n", {}, {}, ["proxy.listen_port"]),
    ("unknown section", USERS + '[proxyy]\nlisten = "127.0.0.1:1"\n', {}, {}, ["[proxyy]"]),
    ("key outside a section", USERS + 'listen = "127.0.0.1:1"\n', {}, {}, ["listen"]),
    (
        "string for an integer",
        USERS + '[upstream]\nport = "5432"\n',
        {},
        {},
        ["upstream.port", "integer"],
    ),
    ("bool for an integer", USERS + "[proxy]\nworkers = true\n", {}, {}, ["proxy.workers"]),
    (
        "float for an integer",
        USERS + "[proxy]\nmax_connections = 1.5\n",
        {},
        {},
        ["proxy.max_connections"],
    ),
    ("string for a bool", USERS + '[proxy]\nrequire_tls = "yes"\n', {}, {}, ["proxy.require_tls"]),
    (
        "string for a number",
        USERS + '[proxy]\nstartup_timeout = "fast"\n',
        {},
        {},
        ["proxy.startup_timeout"],
    ),
    ("integer for a string", USERS + "[upstream]\nhost = 5\n", {}, {}, ["upstream.host"]),
    ("users not strings", "[auth]\nusers = { alice = 1 }\n", {}, {}, ["auth.users"]),
    ("listen without port", USERS + '[proxy]\nlisten = "nohost"\n', {}, {}, ["proxy.listen"]),
    (
        "listen port too big",
        USERS + '[proxy]\nlisten = "127.0.0.1:99999"\n',
        {},
        {},
        ["proxy.listen"],
    ),
    ("listen without host", USERS + '[proxy]\nlisten = ":6432"\n', {}, {}, ["proxy.listen"]),
    (
        "listen port not a number",
        USERS + '[proxy]\nlisten = "127.0.0.1:pg"\n',
        {},
        {},
        ["proxy.listen"],
    ),
    ("bad metrics listen", USERS + '[metrics]\nlisten = "9187"\n', {}, {}, ["metrics.listen"]),
    (
        "verify-full without root cert",
        USERS + '[upstream]\nsslmode = "verify-full"\n',
        {},
        {},
        ["upstream.sslrootcert"],
    ),
    (
        "verify-ca without root cert",
        USERS + '[upstream]\nsslmode = "verify-ca"\n',
        {},
        {},
        ["upstream.sslrootcert"],
    ),
    (
        "root cert missing",
        USERS + '[upstream]\nsslmode = "verify-full"\nsslrootcert = "/no/ca.crt"\n',
        {},
        {},
        ["upstream.sslrootcert"],
    ),
    ("unknown sslmode", USERS + '[upstream]\nsslmode = "verify"\n', {}, {}, ["upstream.sslmode"]),
    ("upstream port 0", USERS + "[upstream]\nport = 0\n", {}, {}, ["upstream.port"]),
    ("workers 0", USERS + "[proxy]\nworkers = 0\n", {}, {}, ["proxy.workers"]),
    (
        "tiny max_message_bytes",
        USERS + "[proxy]\nmax_message_bytes = 100\n",
        {},
        {},
        ["proxy.max_message_bytes"],
    ),
    (
        "frame budget below one message",
        USERS + "[proxy]\nframe_memory_bytes = 1048576\n",
        {},
        {},
        ["proxy.frame_memory_bytes", "proxy.max_message_bytes"],
    ),
    ("no pre-login places", USERS + "[proxy]\nprelogin_per_address = 0\n", {}, {}, ["proxy.prelogin_per_address"]),
    ("zero prelogin timeout", USERS + "[proxy]\nprelogin_timeout = 0\n", {}, {}, ["proxy.prelogin_timeout"]),
    (
        "back-off ceiling below its base",
        USERS + "[proxy]\nauth_fail_delay = 2.0\nauth_fail_max_delay = 1.0\n",
        {},
        {},
        ["proxy.auth_fail_max_delay"],
    ),
    (
        "cert without key",
        USERS + '[proxy]\ntls_cert = "/etc/hostname"\n',
        {},
        {},
        ["proxy.tls_cert", "proxy.tls_key"],
    ),
    (
        "require_tls without cert",
        USERS + "[proxy]\nrequire_tls = true\n",
        {},
        {},
        ["proxy.require_tls"],
    ),
    (
        "rds-iam without region",
        USERS + '[upstream]\nauth = "rds-iam"\nsslmode = "require"\n',
        {},
        {},
        ["upstream.rds_region"],
    ),
    (
        "rds-iam without TLS",
        USERS + '[upstream]\nauth = "rds-iam"\nrds_region = "eu-west-1"\nsslmode = "disable"\n',
        {},
        {},
        ["upstream.sslmode"],
    ),
    ("unknown upstream auth", USERS + '[upstream]\nauth = "kerberos"\n', {}, {}, ["upstream.auth"]),
    ("log format", USERS + '[log]\nformat = "xml"\n', {}, {}, ["log.format"]),
    (
        "admin without token",
        USERS + '[admin]\nlisten = "127.0.0.1:9000"\n',
        {},
        {},
        ["admin.token"],
    ),
    (
        "env: not an integer",
        USERS,
        {"PGWITNESS_UPSTREAM_PORT": "abc"},
        {},
        ["upstream.port", "integer"],
    ),
    ("env: not a bool", USERS, {"PGWITNESS_PROXY_REQUIRE_TLS": "maybe"}, {}, ["proxy.require_tls"]),
    (
        "env: unknown key",
        USERS,
        {"PGWITNESS_PROXY_LISTENN": "x"},
        {},
        ["proxy.listenn", "PGWITNESS_PROXY_LISTENN"],
    ),
    ("override: unknown key", USERS, {}, {"upstream.hots": "x"}, ["upstream.hots"]),
    ("override: unknown section", USERS, {}, {"nosuch.key": "x"}, ["nosuch"]),
    ("override: not an integer", USERS, {}, {"upstream.port": "x"}, ["upstream.port"]),
    ("invalid TOML", "[proxy\nlisten=", {}, {}, ["invalid TOML"]),
    ("unknown roles mode", USERS + '[upstream]\nroles = "per-user"\n', {}, {}, ["upstream.roles"]),
    ("mapped without passwords", USERS + '[upstream]\nroles = "mapped"\n', {}, {},
     ["upstream.role_password_dir"]),
    ("missing password dir", USERS + '[upstream]\nrole_password_dir = "/nonexistent/x"\n', {}, {},
     ["upstream.role_password_dir", "does not exist"]),
    ("per-grant without provisioning login", USERS + '[upstream]\nroles = "per-grant"\n', {}, {},
     ["provision.user", "CREATEROLE"]),
    ("provisioning login is the shared one",
     USERS + '[upstream]\nroles = "per-grant"\nuser = "app"\n[provision]\nuser = "app"\n', {}, {},
     ["provision.user", "must not be upstream.user"]),
    ("env: bad connection limit", USERS, {"PGWITNESS_PROVISION_CONNECTION_LIMIT": "0"}, {},
     ["provision.connection_limit"]),
]


@pytest.mark.parametrize("toml,env,overrides,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_names_the_key(tmp_path, toml, env, overrides, words):
    path = _write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env, overrides=overrides)
    for word in words:
        assert word in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(tmp_path / "nope.toml", env={})


def test_serving_needs_a_way_to_log_in():
    cfg = load_config(None, env={})  # fine for tools that only read the config
    with pytest.raises(ConfigError, match="auth.users or grants.store"):
        validate_for_serving(cfg)


@pytest.mark.parametrize(
    "key,value",
    [
        ("proxy.startup_timeout", 0),
        ("proxy.startup_timeout", -1),
        ("upstream.connect_timeout", 0),
        ("proxy.shutdown_grace", -5),
        ("upstream.catalog_min_interval", -0.1),
    ],
)
def test_non_positive_timeouts_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, env={}, overrides={key: value, "auth.users": {"a": "b"}})


def test_workers_auto_is_one_per_usable_cpu_wherever_it_is_set(tmp_path):
    usable = usable_cpus()
    assert 1 <= usable <= len(os.sched_getaffinity(0))
    from_toml = load_config(_write(tmp_path, USERS + '[proxy]\nworkers = "auto"\n'), env={})
    from_env = load_config(_write(tmp_path, USERS), env={"PGWITNESS_PROXY_WORKERS": "Auto"})
    from_cli = load_config(_write(tmp_path, USERS), env={}, overrides={"proxy.workers": "auto"})
    assert from_toml.proxy.workers == from_env.proxy.workers == from_cli.proxy.workers == usable
    assert load_config(_write(tmp_path, USERS), env={}).proxy.workers == 1  # the default


@pytest.mark.parametrize(
    ("cpu_max", "cap"),
    [
        ("150000 100000\n", 2),  # 1.5 CPUs of quota: rounded up
        ("100000 100000\n", 1),
        ("50000 100000\n", 1),  # half a CPU is still one worker
        ("max 100000\n", None),  # no quota: the affinity mask decides
        ("garbage\n", None),  # unreadable: the affinity mask decides, no error
    ],
)
def test_usable_cpus_honours_a_cgroup_quota(tmp_path, cpu_max, cap):
    (tmp_path / "cpu.max").write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if cap is None else min(affinity, cap)
    assert usable_cpus(str(tmp_path)) == expected
    assert usable_cpus(str(tmp_path / "missing")) == affinity


def test_workers_that_are_neither_a_number_nor_auto_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="proxy.workers"):
        load_config(_write(tmp_path, USERS + '[proxy]\nworkers = "many"\n'), env={})
