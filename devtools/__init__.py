"""Development tools, outside the runtime packages: nothing in ``common``, ``proxy``,
``policy`` or ``recorder`` imports them (tests/integration/test_layering.py holds it), except that
``pgwitness`` offers the ``demo`` sub-command when this package is importable.

- ``localpg``: throwaway PostgreSQL clusters (initdb/pg_ctl), free ports, test TLS.
- ``demo``: ``pgwitness demo`` / ``make demo``: a cluster, the proxy, one agent session.
- ``testing``: Postgres frame builders and a store that fails on demand (tests, bench).
- ``layering``: the import-layering check (``make lint``).

The wheel ships this package so ``pgwitness demo`` runs after a plain ``pip install``
(docs/decisions.md); the proxy never needs it to serve.
"""
