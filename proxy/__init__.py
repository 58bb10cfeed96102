"""The proxy: Postgres v3 on both sides, grants at login, policy and recording in between.

Sans-IO protocol code lives in ``proxy.wire`` and ``proxy.session``; sockets, timers and
processes in ``proxy.server``, ``proxy.upstream`` and ``proxy.supervisor``.
"""

from .auth import GrantAuthenticator, Identity, StaticUsers
from .config import Config, ConfigError, load_config
from .server import ProxyServer
from .session import Relay

__all__ = [
    "Config",
    "ConfigError",
    "GrantAuthenticator",
    "Identity",
    "ProxyServer",
    "Relay",
    "StaticUsers",
    "load_config",
]
