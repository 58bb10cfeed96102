"""A real PostgreSQL for the whole test session (``pg``), built by ``devtools.localpg``.

Roles (``pg.users`` maps each to its password):

    pgwitness  SCRAM  upstream-secret  CREATEDB, owns database ``app`` and its tables
    md5user    MD5    md5-secret       pg_hba method md5
    plainuser  SCRAM  plain-secret     pg_hba method password (cleartext on the wire)
    tlsonly    SCRAM  tls-secret       hostssl only; refused without TLS

Database ``app``: ``public.customers``, ``public.orders`` and ``secret.payroll`` with a
few rows; every login role may read and write them. Set PGWITNESS_KEEP_PG=1 to keep the
cluster directory (``pg.base_dir``) after the session.
"""

from __future__ import annotations

import os

import pytest

from devtools.localpg import USERS, LocalCluster, build_app_cluster

__all__ = ["USERS", "build_app_cluster", "pg"]

@pytest.fixture(scope="session")
def pg():
    """A started LocalCluster with the roles and ``app`` database above; ``pg.users``."""
    keep = os.environ.get("PGWITNESS_KEEP_PG") == "1"
    cluster = LocalCluster(keep=keep)
    try:
        cluster.start()
        build_app_cluster(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def store_cluster():
    """A second, small PostgreSQL cluster: the shared grant store (never the upstream)."""
    cluster = LocalCluster()
    try:
        cluster.start()
        cluster.create_role("pgwitness", "store-secret", createdb=True)
        cluster.create_database("grants_e2e", owner="pgwitness")
        yield cluster
    finally:
        cluster.stop()
