"""``pgwitness doctor``: what PUBLIC may do that weakens every grant's database role.

A per-grant (or mapped) role holds what its scopes name *plus everything granted to
PUBLIC*: PUBLIC's privileges are the floor of every role. This command connects with the
configured credentials (the provisioning login if there is one, else the shared login)
and lists, per database, what PUBLIC may do beyond reading the system catalogs, each with
the statement that fixes it. Exit status 1 when there are findings (0 with
``--exit-zero``), 2 when it cannot connect or the configuration is bad.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass

from common.config import Config, ConfigError, load_config

__all__ = ["Finding", "check_database", "register"]

_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)
# A role that owns a SECURITY DEFINER function lends its privileges to whoever calls it.
_PRIVILEGED_OWNER = (
    "(r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls OR r.rolreplication "
    "OR pg_has_role(r.oid, 'pg_read_server_files', 'USAGE') "
    "OR pg_has_role(r.oid, 'pg_write_server_files', 'USAGE') "
    "OR pg_has_role(r.oid, 'pg_execute_server_program', 'USAGE') "
    "OR pg_has_role(r.oid, 'pg_read_all_data', 'USAGE') "
    "OR pg_has_role(r.oid, 'pg_write_all_data', 'USAGE'))"
)


@dataclass(frozen=True)
class Finding:
    database: str
    check: str  # temp | create | security_definer | execute | table | provision
    severity: str  # high | medium | low
    object: str
    detail: str
    fix: str


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def check_database(conn, database: str) -> list[Finding]:
    """Every finding in the database ``conn`` is connected to."""
    out: list[Finding] = []
    db = _ident(database)
    if await conn.fetchval("SELECT has_database_privilege('public', current_database(), 'TEMP')"):
        out.append(Finding(
            database, "temp", "medium", f"database {database}",
            "PUBLIC may create temporary tables (and pg_temp functions, whose bodies the "
            "statement policy never reads) in every role, per-grant roles included",
            f"REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;",
        ))  # fmt: skip
    if await conn.fetchval("SELECT has_database_privilege('public', current_database(), 'CREATE')"):
        out.append(Finding(
            database, "create", "high", f"database {database}",
            "PUBLIC may create schemas: any role, per-grant roles included, can create one "
            "named like a per-grant role, which that role's \"$user\" would resolve to (so "
            "per-grant sessions are pinned to search_path public while this holds)",
            f"REVOKE CREATE ON DATABASE {db} FROM PUBLIC;",
        ))  # fmt: skip
    for row in await conn.fetch(
        "SELECT n.nspname FROM pg_namespace n WHERE has_schema_privilege('public', n.oid, 'CREATE') "
        f"AND {_USER_SCHEMAS} ORDER BY 1"
    ):
        schema = row["nspname"]
        out.append(Finding(
            database, "create", "high", f"schema {schema}",
            "PUBLIC may create objects here (the default for schema public up to PostgreSQL "
            "14): any role can plant functions or operators that other roles' unqualified "
            "names resolve to",
            f"REVOKE CREATE ON SCHEMA {_ident(schema)} FROM PUBLIC;",
        ))  # fmt: skip
    for row in await conn.fetch(
        "SELECT p.oid::regprocedure::text AS sig, p.prosecdef, pg_get_userbyid(p.proowner) AS owner, "
        f"{_PRIVILEGED_OWNER} AS privileged "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_roles r ON r.oid = p.proowner "
        f"WHERE {_USER_SCHEMAS} AND has_function_privilege('public', p.oid, 'EXECUTE') "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
        "AND d.objid = p.oid AND d.deptype = 'e') ORDER BY 1"
    ):
        sig = row["sig"]
        fix = f"REVOKE EXECUTE ON FUNCTION {sig} FROM PUBLIC;"
        if row["prosecdef"]:
            who = f"{row['owner']} (privileged)" if row["privileged"] else row["owner"]
            out.append(Finding(
                database, "security_definer", "high" if row["privileged"] else "medium",
                f"function {sig}",
                f"SECURITY DEFINER, owned by {who}, executable by PUBLIC: every role may run "
                "it with its owner's privileges",
                fix,
            ))  # fmt: skip
        else:
            out.append(Finding(
                database, "execute", "low", f"function {sig}",
                "executable by PUBLIC (the default for new functions): an execute scope "
                "cannot narrow it. Also: ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON "
                "FUNCTIONS FROM PUBLIC;",
                fix,
            ))  # fmt: skip
    for row in await conn.fetch(
        "SELECT c.oid::regclass::text AS rel, string_agg(a.privilege_type, ', ' ORDER BY "
        "a.privilege_type) AS privs FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
        "aclexplode(c.relacl) a "
        f"WHERE a.grantee = 0 AND {_USER_SCHEMAS} GROUP BY 1 ORDER BY 1"
    ):
        out.append(Finding(
            database, "table", "high", f"relation {row['rel']}",
            f"PUBLIC holds {row['privs']}: every role may, whatever its scopes",
            f"REVOKE ALL ON TABLE {row['rel']} FROM PUBLIC;",
        ))  # fmt: skip
    return out


async def _connect(cfg: Config, database: str):
    import asyncpg

    from .provision import _ssl_for_asyncpg, provision_credentials
    from .upstream import Credentials

    creds = provision_credentials(cfg) if cfg.provision.user else Credentials(cfg)
    loop = asyncio.get_running_loop()
    password = await loop.run_in_executor(None, creds.password)
    return await asyncpg.connect(
        host=cfg.upstream.host, port=cfg.upstream.port, user=creds.user, password=password,
        database=database, ssl=_ssl_for_asyncpg(cfg), timeout=cfg.upstream.connect_timeout,
        server_settings={"application_name": "pgwitness-doctor", "search_path": "pg_catalog"},
    )  # fmt: skip


async def run_doctor(cfg: Config, databases: list[str] | None = None) -> list[Finding]:
    first = databases[0] if databases else cfg.provision.database
    conn = await _connect(cfg, first)
    findings: list[Finding] = []
    try:
        if cfg.upstream.roles == "per-grant":
            ok = await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            if not ok:
                findings.append(Finding(
                    first, "provision", "high", f"role {cfg.provision.user}",
                    "the provisioning login lacks CREATEROLE: per-grant grants cannot be issued",
                    f"ALTER ROLE {_ident(cfg.provision.user)} CREATEROLE;",
                ))  # fmt: skip
        if not databases:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "AND has_database_privilege(datname, 'CONNECT') ORDER BY 1"
            )
            databases = [r["datname"] for r in rows]
        for name in databases:
            if name == first:
                findings += await check_database(conn, name)
                continue
            other = await _connect(cfg, name)
            try:
                findings += await check_database(other, name)
            finally:
                await other.close()
    finally:
        await conn.close()
    return findings


def _print(findings: list[Finding]) -> None:
    current = None
    for f in findings:
        if f.database != current:
            current = f.database
            print(f"database {current}:")
        print(f"  [{f.severity}] {f.check}: {f.object}: {f.detail}")
        print(f"      fix: {f.fix}")
    if findings:
        print(f"{len(findings)} finding(s): PUBLIC's privileges are the floor of every grant's database role")
    else:
        print("no findings: PUBLIC holds nothing that widens a grant's database role")


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"pgwitness doctor: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        findings = asyncio.run(run_doctor(cfg, args.database or None))
    except Exception as exc:  # one line, never a traceback (and never a password)
        print(f"pgwitness doctor: error: cannot check {cfg.upstream.host}:{cfg.upstream.port}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)  # fmt: skip
        return 2
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        _print(findings)
    return 0 if args.exit_zero or not findings else 1


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help="report what PUBLIC may do that weakens grants' database roles"
    )
    p.add_argument("--config", default=os.environ.get("PGWITNESS_CONFIG"), help="TOML config file")
    p.add_argument("--database", action="append", metavar="DB", help="check only this database (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable findings")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    p.set_defaults(func=cmd_doctor)
