"""A real PostgreSQL for the whole test session (``pg``), built by ``proxy.localpg``.

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

from proxy.localpg import LocalCluster

USERS = {
    "pgwitness": "upstream-secret",
    "md5user": "md5-secret",
    "plainuser": "plain-secret",
    "tlsonly": "tls-secret",
}
LOGIN_ROLES = ("md5user", "plainuser", "tlsonly")

APP_SCHEMA = """
SET ROLE pgwitness;
CREATE TABLE public.customers (id serial PRIMARY KEY, name text);
CREATE TABLE public.orders (
    id serial PRIMARY KEY,
    customer_id int,
    total numeric,
    note text
);
CREATE SCHEMA secret;
CREATE TABLE secret.payroll (id int, salary int);
INSERT INTO public.customers (name) VALUES ('Ada'), ('Grace'), ('Edsger');
INSERT INTO public.orders (customer_id, total, note) VALUES
    (1, 10.50, 'first'), (1, 99.00, NULL), (2, 5.25, 'rush'), (3, 42.00, 'gift');
INSERT INTO secret.payroll VALUES (1, 100000), (2, 120000), (3, 90000);
GRANT USAGE ON SCHEMA secret TO {roles};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, secret TO {roles};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {roles};
RESET ROLE;
"""


def build_app_cluster(cluster: LocalCluster) -> LocalCluster:
    """Roles, database ``app`` and its schema on a started cluster (also used by demos)."""
    cluster.create_role("pgwitness", USERS["pgwitness"], createdb=True)
    cluster.create_role("md5user", USERS["md5user"], md5=True)
    cluster.create_role("plainuser", USERS["plainuser"])
    cluster.create_role("tlsonly", USERS["tlsonly"])
    cluster.create_database("app", owner="pgwitness")
    roles = ", ".join(LOGIN_ROLES)
    cluster.psql(f"GRANT CONNECT ON DATABASE app TO {roles};\n")
    cluster.psql(APP_SCHEMA.format(roles=roles), db="app")
    return cluster


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
