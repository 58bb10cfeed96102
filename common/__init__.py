"""What both the proxy and the policy/grants side need, below both of them.

- ``wire``: the Postgres v3 wire protocol, sans-IO (framing, messages, errors, SCRAM).
- ``config``: the one configuration (TOML < ``PGWITNESS_*`` environment < flags).
- ``throttle``: the login-failure throttle (proxy logins and the admin API).

``common`` imports neither ``proxy`` nor ``policy`` (tests/integration/test_layering.py holds it).
"""
