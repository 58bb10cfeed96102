"""The proxy: Postgres v3 on both sides, grants at login, policy and recording in between.

Sans-IO protocol code lives in ``common.wire``, ``proxy.relay`` and ``proxy.denials``;
sockets, timers and processes in ``proxy.server`` (listener), ``proxy.connection`` (with
``proxy.handshake``, ``proxy.flow``, ``proxy.grant_watch``), ``proxy.upstream`` and
``proxy.supervisor``.

Exports load lazily: importing ``proxy`` (as ``pgwitness`` does first) must not create the
Prometheus metrics before the supervisor has chosen multiprocess mode.
"""

from importlib import import_module

import common  # noqa: F401  # first: decides compiled or pure hot path (common/compiled.py)

_EXPORTS = {
    "Config": "common.config",
    "ConfigError": "common.config",
    "load_config": "common.config",
    "GrantAuthenticator": "policy.grants.auth",
    "Identity": "policy.grants.auth",
    "StaticUsers": "proxy.auth",
    "ProxyServer": "proxy.server",
    "Relay": "proxy.relay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'proxy' has no attribute {name!r}")
    return getattr(import_module(module), name)
