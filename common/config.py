"""Configuration: embedded defaults < TOML file < PGWITNESS_* environment < CLI flags.

Every section is a dataclass; unknown keys and wrong types are refused at start with an
error that names the key (``upstream.port: expected an integer, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.config import RecorderConfig


class ConfigError(Exception):
    """A configuration value is missing, unknown or malformed; the message names the key."""


@dataclass
class ProxySection:
    listen: str = "127.0.0.1:6432"
    public_host: str = ""  # host:port put into issued DSNs; defaults to listen
    workers: int = 1
    max_connections: int = 1000
    max_message_bytes: int = 64 * 1024 * 1024
    startup_timeout: float = 10.0  # seconds to finish startup, TLS and authentication
    shutdown_grace: float = 30.0  # seconds sessions may run on after SIGTERM
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    auth_fail_delay: float = 0.5  # base delay per recent failed login of one (agent, address)
    auth_fail_window: float = 60.0
    auth_fail_max_delay: float = 5.0  # the back-off's ceiling
    auth_concurrency_per_address: int = 16  # authentications in flight from one address
    # seconds a login holding one of those places may wait for its client's SASL messages
    # (a client answers within a round trip; a stalled one gives its place to the next)
    auth_client_timeout: float = 2.0
    # Connections that have not sent their startup packet yet (proxy/limits.py):
    prelogin_max: int = 512  # per worker; over it the oldest stalled one is closed
    prelogin_per_address: int = 64  # per worker and client address; over it: refused
    prelogin_timeout: float = 3.0  # seconds to send the startup packet (TLS included)
    frame_memory_bytes: int = 128 * 1024 * 1024  # per worker, for frames held whole
    refusal_events_per_second: int = 50  # login.refused control events; the rest summarised


@dataclass
class UpstreamSection:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    password_file: str = ""
    auth: str = "password"  # "password" (SCRAM/MD5/cleartext as the server asks) | "rds-iam"
    sslmode: str = "prefer"  # disable | prefer | require | verify-ca | verify-full
    sslrootcert: str = ""
    rds_region: str = ""
    connect_timeout: float = 10.0
    # How a grant's session reaches the database (docs/grants.md, "Database roles"):
    # "shared" = as ``user`` above; "mapped" = as the role the grant names, with a password
    # from ``role_password_dir/<role>`` (or an RDS IAM token for it); "per-grant" = as a
    # login role pgwitness creates for the grant with exactly its scopes' privileges.
    roles: str = "shared"
    role_password_dir: str = ""
    # A session that ends cleanly leaves its logged-in upstream session, reset with
    # DISCARD ALL, for the same grant's next connection with the same parameters
    # (proxy/upstream_pool.py): parked at most this long, at most reuse_max_idle per
    # worker. 0 turns it off (every connection logs in upstream anew).
    reuse_idle_seconds: float = 15.0
    reuse_max_idle: int = 8
    # Log in upstream with application_name "pgw:<tag>/<client's name>" (proxy/appname.py),
    # so pgAudit's %a and RDS Activity Streams name the pgwitness session. Off by default:
    # the client would then read the tag back (SHOW application_name, current_setting,
    # its own pg_stat_activity row), which Postgres would not show it; the session's
    # recording names its upstream backend's pid either way (log_line_prefix %p).
    tag_application_name: bool = False
    # Seconds between the starts of two catalog loads of one database that statements ask
    # for (proxy/catalog_loader.py, ``CatalogLoader.refresh``; docs/policy.md): a loop of
    # statements resting on the catalog's completeness waits for the next load instead of
    # keeping an upstream login busy with catalog queries. A load after DDL is not paced.
    # 0 = no pacing (each such statement may start a load at once).
    catalog_min_interval: float = 0.2


@dataclass
class ProvisionSection:
    """``[provision]``: the login that creates and drops per-grant roles (needs CREATEROLE).

    Never used for agent traffic. ``key_file`` holds the secret the per-grant roles'
    passwords are derived from: every proxy sharing a grant store needs the same file.
    """

    user: str = ""
    password: str = ""
    password_file: str = ""
    database: str = "postgres"  # where role-wide work (sweeps, locks) connects
    key_file: str = ".pgwitness/roles.key"
    connection_limit: int = 10  # CONNECTION LIMIT of each per-grant role
    sweep_interval: float = 2.0  # seconds between drops of expired or orphaned roles


@dataclass
class AuthSection:
    users: dict[str, str] = field(default_factory=dict)  # static SCRAM users (development)


@dataclass
class GrantsSection:
    store: str = ""  # "" = static users only; sqlite:///path or postgresql://...
    poll_interval: float = 0.5  # how often live sessions look for revocations/extensions
    max_ttl: float = 7 * 86400.0  # longest a grant may last in total, in seconds


@dataclass
class AdminSection:
    listen: str = ""  # "" = disabled
    token: str = ""
    token_file: str = ""


@dataclass
class MetricsSection:
    listen: str = "127.0.0.1:9187"  # "" = disabled


@dataclass
class LogSection:
    level: str = "info"
    format: str = "text"  # text | json


@dataclass
class RecorderSection(RecorderConfig):
    """``[recorder]``: the recorder's own settings plus whether to record at all."""

    enabled: bool = True
    record_rows: str = "full"  # default for static users; grants carry their own


@dataclass
class Config:
    proxy: ProxySection = field(default_factory=ProxySection)
    upstream: UpstreamSection = field(default_factory=UpstreamSection)
    provision: ProvisionSection = field(default_factory=ProvisionSection)
    auth: AuthSection = field(default_factory=AuthSection)
    grants: GrantsSection = field(default_factory=GrantsSection)
    admin: AdminSection = field(default_factory=AdminSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    recorder: RecorderSection = field(default_factory=RecorderSection)
    source: str = "embedded defaults"

    def upstream_password(self) -> str:
        if self.upstream.password_file:
            return Path(self.upstream.password_file).read_text().strip()
        return self.upstream.password

    def provision_password(self) -> str:
        if self.provision.password_file:
            return Path(self.provision.password_file).read_text().strip()
        return self.provision.password

    def admin_token(self) -> str:
        if self.admin.token_file:
            return Path(self.admin.token_file).read_text().strip()
        return self.admin.token


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}


def _section_types(name: str) -> dict[str, Any]:
    typ = SECTIONS[name]  # a string under ``from __future__ import annotations``
    cls = globals()[typ] if isinstance(typ, str) else typ
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, typ: Any, *, from_text: bool) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is dict or typ is dict:
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return dict(value)
        raise ConfigError(f"{key}: expected a table of strings, got {value!r}")
    if isinstance(typ, types.UnionType):  # "X | None": TOML has no null, so it is an X
        inner = [t for t in typing.get_args(typ) if t is not type(None)]
        if len(inner) == 1:
            return _coerce(key, value, inner[0], from_text=from_text)
        raise ConfigError(f"{key}: unsupported type")
    raise ConfigError(f"{key}: unsupported type {typ!r}")


def _apply(cfg: Config, section: str, key: str, value: Any, *, from_text: bool, where: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
    hints = _section_types(section)
    if key not in hints:
        raise ConfigError(
            f"{where}: unknown key {section}.{key} (known: {', '.join(sorted(hints))})"
        )
    if section == "proxy" and key == "workers" and isinstance(value, str) and value.strip().lower() == "auto":
        value = usable_cpus()  # one worker per CPU this process may use
    setattr(getattr(cfg, section), key, _coerce(f"{section}.{key}", value, hints[key], from_text=from_text))


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota
    (a container limited to 2 CPUs on a 64-CPU host runs 2 workers, not 64)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        quota, _, period = Path(cgroup_root, "cpu.max").read_text().strip().partition(" ")
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))  # rounded up: 1.5 CPUs → 2
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity mask alone
    return max(1, n)


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build the configuration from defaults, a TOML file, the environment and overrides.

    ``overrides`` maps ``"section.key"`` to a value (from CLI flags).
    """
    cfg = Config()
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: invalid TOML: {exc}") from exc
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{p}: [{section}] must be a table")
            for key, value in table.items():
                _apply(cfg, section, key, value, from_text=False, where=str(p))
        cfg.source = str(p)
    for name, value in (os.environ if env is None else env).items():
        if not name.startswith("PGWITNESS_") or name in ("PGWITNESS_CONFIG",):
            continue
        rest = name[len("PGWITNESS_") :].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            continue  # other PGWITNESS_* variables belong to tools, not the config
        if section == "auth" and key == "users":
            users = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
            _apply(cfg, section, key, users, from_text=False, where=f"environment {name}")
            continue
        _apply(cfg, section, key, value, from_text=True, where=f"environment {name}")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _apply(cfg, section, key, value, from_text=isinstance(value, str), where=f"--{dotted}")
    validate(cfg)
    return cfg


def parse_hostport(key: str, value: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise ConfigError(f"{key}: expected host:port, got {value!r}")
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: bad port in {value!r} (expected 0-65535)")
    return host, int(port)


def validate_for_serving(cfg: Config) -> None:
    """What only ``serve`` needs on top of ``validate``."""
    if not cfg.auth.users and not cfg.grants.store:
        raise ConfigError("auth.users or grants.store: configure at least one way for clients to log in")


def validate(cfg: Config) -> None:
    parse_hostport("proxy.listen", cfg.proxy.listen)
    if cfg.proxy.public_host:
        parse_hostport("proxy.public_host", cfg.proxy.public_host, 6432)
    if cfg.proxy.workers < 1:
        raise ConfigError("proxy.workers: must be at least 1")
    if cfg.proxy.max_connections < 1:
        raise ConfigError("proxy.max_connections: must be at least 1")
    for key, value in (
        ("proxy.startup_timeout", cfg.proxy.startup_timeout),
        ("proxy.prelogin_timeout", cfg.proxy.prelogin_timeout),
        ("proxy.auth_client_timeout", cfg.proxy.auth_client_timeout),
        ("upstream.connect_timeout", cfg.upstream.connect_timeout),
        ("grants.poll_interval", cfg.grants.poll_interval),
        ("grants.max_ttl", cfg.grants.max_ttl),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")
    for key, value in (
        ("proxy.shutdown_grace", cfg.proxy.shutdown_grace),
        ("proxy.auth_fail_delay", cfg.proxy.auth_fail_delay),
        ("proxy.auth_fail_window", cfg.proxy.auth_fail_window),
        ("upstream.reuse_idle_seconds", cfg.upstream.reuse_idle_seconds),
        ("upstream.reuse_max_idle", cfg.upstream.reuse_max_idle),
        ("upstream.catalog_min_interval", cfg.upstream.catalog_min_interval),
    ):
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
    if cfg.proxy.max_message_bytes < 1024:
        raise ConfigError("proxy.max_message_bytes: must be at least 1024")
    if cfg.proxy.frame_memory_bytes < cfg.proxy.max_message_bytes:
        raise ConfigError(
            "proxy.frame_memory_bytes: must be at least proxy.max_message_bytes "
            f"({cfg.proxy.max_message_bytes}), got {cfg.proxy.frame_memory_bytes}"
        )
    for key in ("prelogin_max", "prelogin_per_address", "auth_concurrency_per_address"):
        if getattr(cfg.proxy, key) < 1:
            raise ConfigError(f"proxy.{key}: must be at least 1")
    if cfg.proxy.refusal_events_per_second < 0:
        raise ConfigError("proxy.refusal_events_per_second: must not be negative")
    if cfg.proxy.auth_fail_max_delay < cfg.proxy.auth_fail_delay:
        raise ConfigError("proxy.auth_fail_max_delay: must be at least proxy.auth_fail_delay")
    if bool(cfg.proxy.tls_cert) != bool(cfg.proxy.tls_key):
        raise ConfigError("proxy.tls_cert and proxy.tls_key: set both or neither")
    if cfg.proxy.require_tls and not cfg.proxy.tls_cert:
        raise ConfigError("proxy.require_tls: needs proxy.tls_cert and proxy.tls_key")
    for key in ("tls_cert", "tls_key"):
        value = getattr(cfg.proxy, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"proxy.{key}: file {value} does not exist")
    if cfg.upstream.sslmode not in ("disable", "prefer", "require", "verify-ca", "verify-full"):
        raise ConfigError(
            f"upstream.sslmode: expected disable, prefer, require, verify-ca or verify-full, "
            f"got {cfg.upstream.sslmode!r}"
        )
    if cfg.upstream.sslmode in ("verify-ca", "verify-full") and not cfg.upstream.sslrootcert:
        raise ConfigError(f"upstream.sslrootcert: required with sslmode={cfg.upstream.sslmode}")
    if cfg.upstream.sslrootcert and not Path(cfg.upstream.sslrootcert).is_file():
        raise ConfigError(f"upstream.sslrootcert: file {cfg.upstream.sslrootcert} does not exist")
    if cfg.upstream.auth not in ("password", "rds-iam"):
        raise ConfigError(f"upstream.auth: expected password or rds-iam, got {cfg.upstream.auth!r}")
    if cfg.upstream.auth == "rds-iam":
        if not cfg.upstream.rds_region:
            raise ConfigError("upstream.rds_region: required with upstream.auth = rds-iam")
        if cfg.upstream.sslmode in ("disable", "prefer"):
            raise ConfigError("upstream.sslmode: rds-iam tokens must travel over TLS (require or verify-*)")
    if cfg.upstream.password_file and not Path(cfg.upstream.password_file).is_file():
        raise ConfigError(f"upstream.password_file: file {cfg.upstream.password_file} does not exist")
    if not 0 < cfg.upstream.port <= 65535:
        raise ConfigError(f"upstream.port: out of range: {cfg.upstream.port}")
    _validate_roles(cfg)
    if cfg.admin.listen:
        parse_hostport("admin.listen", cfg.admin.listen)
        if not (cfg.admin.token or cfg.admin.token_file):
            raise ConfigError("admin.token: required when admin.listen is set")
        if cfg.admin.listen and not cfg.grants.store:
            raise ConfigError("admin.listen: the admin API needs grants.store")
    if cfg.metrics.listen:
        parse_hostport("metrics.listen", cfg.metrics.listen)
    if cfg.log.format not in ("text", "json"):
        raise ConfigError(f"log.format: expected text or json, got {cfg.log.format!r}")
    if cfg.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {cfg.log.level!r}")
    try:
        cfg.recorder.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if cfg.recorder.record_rows not in ("full", "counts"):
        raise ConfigError(f"recorder.record_rows: expected full or counts, got {cfg.recorder.record_rows!r}")


ROLE_MODES = ("shared", "mapped", "per-grant")


def _validate_roles(cfg: Config) -> None:
    """``upstream.roles`` and what each mode needs (``[provision]`` for per-grant)."""
    mode = cfg.upstream.roles
    if mode not in ROLE_MODES:
        raise ConfigError(f"upstream.roles: expected shared, mapped or per-grant, got {mode!r}")
    pdir = cfg.upstream.role_password_dir
    if pdir and not Path(pdir).is_dir():
        raise ConfigError(f"upstream.role_password_dir: directory {pdir} does not exist")
    if mode == "mapped" and not pdir and cfg.upstream.auth != "rds-iam":
        raise ConfigError(
            "upstream.role_password_dir: required with upstream.roles = mapped (one file per "
            "database role, named after it, holding its password), unless upstream.auth = rds-iam"
        )
    p = cfg.provision
    if p.password_file and not Path(p.password_file).is_file():
        raise ConfigError(f"provision.password_file: file {p.password_file} does not exist")
    if p.connection_limit < 1:
        raise ConfigError(f"provision.connection_limit: must be at least 1, got {p.connection_limit}")
    if p.sweep_interval <= 0:
        raise ConfigError(f"provision.sweep_interval: must be greater than 0, got {p.sweep_interval}")
    if mode == "per-grant":
        if not p.user:
            raise ConfigError(
                "provision.user: required with upstream.roles = per-grant (a login with "
                "CREATEROLE that creates and drops the grants' roles, never used for agent traffic)"
            )
        if p.user == cfg.upstream.user:
            raise ConfigError(
                f"provision.user: must not be upstream.user ({p.user!r}): the login that may "
                "create roles is kept apart from every login agent traffic uses"
            )
        if not p.key_file:
            raise ConfigError("provision.key_file: required with upstream.roles = per-grant")
