"""What both the proxy and the policy/grants side need, below both of them.

- ``wire``: the Postgres v3 wire protocol, sans-IO (framing, messages, errors, SCRAM).
- ``config``: the one configuration (TOML < ``PGWITNESS_*`` environment < flags).
- ``throttle``: the login-failure throttle (proxy logins and the admin API).

- ``compiled``: whether the hot path runs compiled (mypyc) or from its sources; decided
  here, before any of those modules is imported.

``common`` imports neither ``proxy`` nor ``policy`` (tests/integration/test_layering.py holds it).
"""

from common.compiled import install as _install_compiled

_install_compiled()
