"""Database roles for grants, the I/O half: create, extend, drop, reconcile; log in as them.

``policy.grants.roles`` says what a per-grant role is called and which privileges its scopes
mean; this module talks to the database with the **provisioning login** (``[provision]``,
needs CREATEROLE; never used for agent traffic) and gives the proxy the credentials a
session logs in upstream with (``RoleLogins``).

Lifecycle of a per-grant role ``pgw_g_<id>`` (comment ``pgwitness:<grant id>``):

* issue: created in one transaction in the grant's database (LOGIN, CONNECTION LIMIT,
  VALID UNTIL the expiry, a SCRAM verifier of a password derived from the key file, so
  no plain password ever reaches the server or its logs), then the grant is stored;
* extend: ``VALID UNTIL`` moves before the store's expiry does, and is checked again
  after (recreated if a sweep dropped it meanwhile; a sweep re-reads the grant under the
  role's lock, so it never drops a role an extension has renewed);
* revoke, expiry, orphan: ``NOLOGIN``; one revocation poll for the proxies to end its
  sessions (so the client and the recording say why), then its remaining backends
  terminated, ``REASSIGN OWNED`` to
  the provisioning login and ``DROP OWNED`` in every database it has objects or
  privileges in, ``DROP ROLE``. Several proxies may try at once: an advisory lock per
  role serialises them, and each step tolerates a role that is already gone.

A sweep (``RoleSweeper``, every ``provision.sweep_interval``) drops the roles of expired
or revoked grants and orphans (a crash between creating the role and storing the grant).
It only ever touches roles whose name *and* comment say pgwitness made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.config import Config, ConfigError
from common.wire.errors import INVALID_AUTHORIZATION, PgError, Refused
from common.wire.scram import make_verifier
from policy.grants.model import Grant, utcnow
from policy.grants.roles import (
    ROLE_PREFIX,
    Catalog,
    grant_of_role,
    privilege_statements,
    quote_ident,
    role_comment,
    role_for_grant,
    role_password,
    scope_relations,
    scope_schemas,
)
from policy.grants.store import ProvisionError
from policy.scopes import parse_scopes

from .upstream import Credentials, client_ssl_context

__all__ = [
    "MappedRoles",
    "PerGrantRoles",
    "ProvisionError",
    "RoleLogins",
    "RoleSweeper",
    "load_role_key",
    "role_hook",
]

log = logging.getLogger("pgwitness.provision")

_LOCK_CLASS = 0x7067_7772  # "pgwr": advisory locks on (class, hashtext(role))
_SWEEP_LOCK = 0
ORPHAN_GRACE = 30.0  # seconds a role without a grant is left alone (it may be mid-issue)
KEY_BYTES = 32


def load_role_key(path: str | os.PathLike[str], *, create: bool = True) -> bytes:
    """The secret per-grant role passwords derive from (created 0600 on first use)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"provision.key_file: file {p} does not exist") from None
        p.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_role_key(p, create=False)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        log.info("created per-grant role key %s (every proxy sharing the grant store needs it)", p)
    if len(data) < KEY_BYTES:
        raise ConfigError(f"provision.key_file: {p} holds {len(data)} bytes, expected at least {KEY_BYTES}")
    return data


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ssl_for_asyncpg(cfg: Config):
    if cfg.upstream.sslmode == "disable":
        return False
    if cfg.upstream.sslmode == "prefer":
        return "prefer"
    return client_ssl_context(cfg)


def provision_credentials(cfg: Config) -> Credentials:
    """The provisioning login: its own password, else an RDS IAM token for it."""
    p = cfg.provision
    if p.password or p.password_file:
        return Credentials(cfg, user=p.user, secret=cfg.provision_password)
    if cfg.upstream.auth == "rds-iam":
        return Credentials(cfg, user=p.user)
    return Credentials(cfg, user=p.user, secret=lambda: "")


class _Admin:
    """Connections of the provisioning login, one per database, used one at a time."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.credentials = provision_credentials(cfg)
        self._conns: dict[str, Any] = {}  # asyncpg connections (asyncpg has no types)
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def connect(self, database: str):
        import asyncpg

        lock = self._locks.setdefault(database, asyncio.Lock())
        async with lock:
            conn = self._conns.get(database)
            if conn is None or conn.is_closed():
                loop = asyncio.get_running_loop()
                password = await loop.run_in_executor(None, self.credentials.password)
                try:
                    conn = await asyncpg.connect(
                        host=self.cfg.upstream.host,
                        port=self.cfg.upstream.port,
                        user=self.credentials.user,
                        password=password,
                        database=database,
                        ssl=_ssl_for_asyncpg(self.cfg),
                        timeout=self.cfg.upstream.connect_timeout,
                        server_settings={"application_name": "pgwitness-provision"},
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                    raise ProvisionError(
                        f"provision.user {self.credentials.user!r} cannot log in to database "
                        f"{database!r} on {self.cfg.upstream.host}:{self.cfg.upstream.port}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                self._conns[database] = conn
            try:
                yield conn
            except BaseException:
                if not conn.is_closed() and conn.is_in_transaction():
                    conn.terminate()
                raise

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)


class MappedRoles:
    """``upstream.roles = mapped``: a grant names an existing role; nothing is created."""

    mode = "mapped"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    async def prepare(self, grant: Grant) -> Grant:
        from policy.grants.model import GrantError

        assert grant.db_role is not None  # the store requires it in mapped mode
        if self.cfg.upstream.auth != "rds-iam":
            path = Path(self.cfg.upstream.role_password_dir) / grant.db_role
            if not path.is_file():
                raise GrantError(
                    "db_role",
                    f"pgwitness holds no password for role {grant.db_role!r} "
                    f"(no file {path} in upstream.role_password_dir)",
                )
        return grant

    async def discard(self, grant: Grant) -> None:
        pass

    async def extended(self, grant: Grant, expires_at: dt.datetime) -> None:
        pass

    async def revoked(self, grant: Grant) -> None:
        pass

    async def close(self) -> None:
        pass


class PerGrantRoles:
    """``upstream.roles = per-grant``: a login role per grant with exactly its privileges."""

    mode = "per-grant"

    def __init__(self, cfg: Config, key: bytes | None = None, *, create_key: bool = True):
        self.cfg = cfg
        self.key = key if key is not None else load_role_key(cfg.provision.key_file, create=create_key)
        self.admin = _Admin(cfg)
        self._orphans: dict[str, float] = {}  # role -> when first seen without a grant
        self.store_id = ""  # set by the grant store when it opens (GrantStore.store_id)

    def bind(self, store_id: str) -> None:
        self.store_id = store_id

    # ---- the store's hook --------------------------------------------------------------

    async def prepare(self, grant: Grant) -> Grant:
        role = role_for_grant(grant.id)
        await self._create(grant, role)
        return replace(grant, db_role=role)

    async def discard(self, grant: Grant) -> None:
        await self.drop(role_for_grant(grant.id))

    async def extended(self, grant: Grant, expires_at: dt.datetime) -> None:
        role = grant.db_role
        assert role is not None  # the store calls the hook only for grants with a role
        async with self.admin.connect(self.cfg.provision.database) as conn:
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if exists:
                await conn.execute(f"ALTER ROLE {quote_ident(role)} VALID UNTIL {_literal(expires_at.isoformat())}")
                return
        # Dropped at expiry, now extended: it gets its role back.
        await self._create(replace(grant, expires_at=expires_at), role)

    async def revoked(self, grant: Grant) -> None:
        assert grant.db_role is not None  # as for extended
        await self.drop(grant.db_role)

    async def close(self) -> None:
        await self.admin.close()

    # ---- DDL -------------------------------------------------------------------------

    async def _create(self, grant: Grant, role: str) -> None:
        import asyncpg

        if not self.store_id:
            raise ProvisionError("per-grant roles need an opened grant store (store id unknown)")
        scopes = parse_scopes(grant.scopes)
        salt = secrets.token_bytes(16)
        verifier = make_verifier(role_password(self.key, grant.id), salt).encode()
        r = quote_ident(role)
        user = self.cfg.provision.user
        warnings: list[str] = []

        def on_notice(_conn, message) -> None:
            if str(getattr(message, "sqlstate", "")).startswith("01"):
                warnings.append(str(message))

        async with self.admin.connect(grant.database) as conn:
            conn.add_log_listener(on_notice)
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL search_path = pg_catalog")
                    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, role)
                    me = await conn.fetchrow(
                        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
                    )
                    if not (me["rolsuper"] or me["rolcreaterole"]):
                        raise ProvisionError(
                            f"provision.user {user!r} lacks the CREATEROLE privilege needed to "
                            f"create per-grant roles (upstream.roles = per-grant): ALTER ROLE "
                            f"{quote_ident(user)} CREATEROLE (on RDS use a member of rds_superuser)"
                        )
                    catalog = await _catalog(conn, scopes)
                    await conn.execute(
                        f"CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                        f"NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {int(self.cfg.provision.connection_limit)} "
                        f"VALID UNTIL {_literal(grant.expires_at.isoformat())} PASSWORD {_literal(verifier)}"
                    )
                    await conn.execute(f"COMMENT ON ROLE {r} IS {_literal(role_comment(grant.id, self.store_id))}")
                    # So the provisioning login may end its sessions and take over what it owns.
                    await conn.execute(f"GRANT {r} TO CURRENT_USER")
                    for statement in privilege_statements(scopes, role, grant.database, catalog):
                        await conn.execute(statement)
                        await asyncio.sleep(0)  # let the notice listener run
                        if warnings:
                            raise ProvisionError(
                                f"provision.user {user!r} could not {statement.split(' TO ')[0]}: "
                                f"{warnings[0]} (it needs to own the object, be a member of its "
                                "owner, or hold the privilege WITH GRANT OPTION)"
                            )
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ProvisionError(
                    f"provision.user {user!r} may not create role {role} for grant {grant.id}: "
                    f"{exc} (it needs CREATEROLE, and grant authority over the objects the scopes name)"
                ) from None
            except asyncpg.PostgresError as exc:
                raise ProvisionError(
                    f"creating role {role} for grant {grant.id} failed: {type(exc).__name__}: {exc}"
                ) from None
            finally:
                conn.remove_log_listener(on_notice)

    async def drop(self, role: str, still_ended=None) -> bool:
        """End the role's sessions and drop it (idempotent); True if this call dropped it.

        ``still_ended`` (an async callable) is asked again once the role's lock is held: a
        sweep that saw an expired grant must not drop a role an extension just renewed.
        """
        import asyncpg

        if not role or not role.startswith(ROLE_PREFIX):
            raise ProvisionError(f"refusing to drop {role!r}: not a per-grant role")
        r = quote_ident(role)
        home = self.cfg.provision.database
        try:
            async with self.admin.connect(home) as conn:
                await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_CLASS, role)
                try:
                    oid = await conn.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", role)
                    if oid is None or (still_ended is not None and not await still_ended()):
                        return False
                    await conn.execute(f"ALTER ROLE {r} NOLOGIN")
                    await self._let_proxies_end_sessions(conn, role)
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
                    )
                    databases = await conn.fetch(
                        "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
                        "WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = $1",
                        oid,
                    )
                    for name in sorted({row["datname"] for row in databases} - {home}):
                        async with self.admin.connect(name) as other:
                            await _disown(other, r)
                    await _disown(conn, r)  # shared objects' privileges too
                    await conn.execute(f"DROP ROLE IF EXISTS {r}")
                    log.info("dropped per-grant role %s", role)
                    return True
                finally:
                    with contextlib.suppress(Exception):
                        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_CLASS, role)
        except asyncpg.PostgresError as exc:
            raise ProvisionError(f"dropping role {role} failed: {type(exc).__name__}: {exc}") from None

    async def _let_proxies_end_sessions(self, conn, role: str) -> None:
        """Give the proxies one revocation poll to end the role's sessions themselves (the
        client then hears why, and the recording says "revoked"); whatever is left is
        terminated by the database."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.grants.poll_interval + 0.5
        while loop.time() < deadline:
            live = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role)
            if not live:
                return
            await asyncio.sleep(0.1)

    # ---- reconciliation ------------------------------------------------------------------

    async def reconcile(self, store, *, orphan_grace: float = ORPHAN_GRACE, clock: Callable[[], float] | None = None) -> list[str]:
        """Drop the roles of grants that ended or are gone; returns the roles dropped.

        Only one proxy sweeps at a time (a try-lock); a role whose grant is missing is
        dropped only after ``orphan_grace`` seconds without one (it may be mid-issue). Only
        roles marked for this grant store are considered.
        """
        if not self.store_id:
            return []
        clock = clock or asyncio.get_running_loop().time
        async with self.admin.connect(self.cfg.provision.database) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, _SWEEP_LOCK):
                return []
            try:
                rows = await conn.fetch(
                    "SELECT rolname, shobj_description(oid, 'pg_authid') AS comment FROM pg_roles "
                    "WHERE rolname LIKE 'pgw\\_g\\_%'"
                )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, _SWEEP_LOCK)
        ours = {}
        for row in rows:
            grant_id = grant_of_role(row["rolname"], row["comment"], self.store_id)
            if grant_id is not None:
                ours[grant_id] = row["rolname"]
        if not ours:
            self._orphans.clear()
            return []
        grants = await store.get_many(ours)
        now, tick = utcnow(), clock()
        dropped = []
        for grant_id, role in sorted(ours.items()):
            grant = grants.get(grant_id)
            if grant is None:
                first = self._orphans.setdefault(role, tick)
                if tick - first < orphan_grace:
                    continue
            elif grant.status(now) not in ("expired", "revoked"):
                continue
            self._orphans.pop(role, None)
            if await self.drop(role, still_ended=lambda gid=grant_id: _ended(store, gid)):
                dropped.append(role)
        for role in set(self._orphans) - set(ours.values()):
            del self._orphans[role]
        return dropped


async def _ended(store, grant_id: str) -> bool:
    grant = await store.get(grant_id)
    return grant is None or grant.status(utcnow()) in ("expired", "revoked")


async def _disown(conn, r: str) -> None:
    import asyncpg

    try:
        async with conn.transaction():
            await conn.execute(f"REASSIGN OWNED BY {r} TO CURRENT_USER")
            await conn.execute(f"DROP OWNED BY {r}")
    except asyncpg.UndefinedObjectError:
        pass  # dropped meanwhile


async def _catalog(conn, scopes) -> Catalog:
    """Look up what ``privilege_statements`` needs for ``scopes`` (search_path is pg_catalog)."""
    wanted_schemas = sorted(scope_schemas(scopes))
    named = sorted((s, n) for s, n in scope_relations(scopes) if n is not None)
    wild = sorted({s for s, n in scope_relations(scopes) if n is None})
    cat = Catalog()
    if not wanted_schemas:
        return cat
    for row in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", wanted_schemas):
        cat.schemas.add(row["nspname"])
    rows = await conn.fetch(
        "SELECT n.nspname, c.relname, c.relkind::text AS relkind, c.oid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND (n.nspname = ANY($1::text[]) "
        "OR (n.nspname, c.relname) IN (SELECT * FROM unnest($2::text[], $3::text[])))",
        wild,
        [s for s, _ in named],
        [n for _, n in named],
    )
    oids = []
    for row in rows:
        cat.relations[(row["nspname"], row["relname"])] = row["relkind"]
        if row["relkind"] != "S":
            oids.append(row["oid"])
    for row in await conn.fetch(
        "SELECT tn.nspname AS ts, t.relname AS tn, sn.nspname AS ss, s.relname AS sn "
        "FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_namespace sn ON sn.oid = s.relnamespace "
        "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::oid[])",
        oids,
    ):
        cat.sequences.setdefault((row["ts"], row["tn"]), []).append((row["ss"], row["sn"]))
        cat.relations.setdefault((row["ss"], row["sn"]), "S")
    functions = sorted((s, n) for s, n in scopes.execute if n is not None)
    if functions:
        for row in await conn.fetch(
            "SELECT n.nspname, p.proname, p.oid::regprocedure::text AS sig FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'a', 'w') "
            "AND (n.nspname, p.proname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [s for s, _ in functions],
            [n for _, n in functions],
        ):
            cat.functions.setdefault((row["nspname"], row["proname"]), []).append(row["sig"])
    return cat


def role_hook(cfg: Config, *, create_key: bool = True):
    """The grant store's role hook for ``upstream.roles`` (None in shared mode).

    ``create_key=False`` (the CLI): a missing key file is an error, not a new key that no
    proxy shares."""
    if cfg.upstream.roles == "per-grant":
        return PerGrantRoles(cfg, create_key=create_key)
    if cfg.upstream.roles == "mapped":
        return MappedRoles(cfg)
    return None


class RoleLogins:
    """Which upstream login a session uses: the shared one, its mapped role, or its own."""

    def __init__(self, cfg: Config, shared: Credentials):
        self.cfg = cfg
        self.shared = shared
        self._key = load_role_key(cfg.provision.key_file) if cfg.upstream.roles == "per-grant" else None
        self._mapped: dict[str, Credentials] = {}

    def credentials(self, identity) -> Credentials:
        role = getattr(identity, "db_role", "") or ""
        if not role:
            if identity.scopes is not None and self.cfg.upstream.roles != "shared":
                raise _refused(
                    f"grant {identity.grant_id} for task {identity.task} has no database role, "
                    f"but upstream.roles = {self.cfg.upstream.roles}: pgwitness will not run it "
                    "as its shared login; issue a new grant"
                )
            return self.shared
        if role.startswith(ROLE_PREFIX):
            if role != role_for_grant(identity.grant_id):
                raise _refused(f"grant {identity.grant_id} names another grant's role")
            if self._key is None:
                self._key = load_role_key(self.cfg.provision.key_file, create=False)
            key, grant_id = self._key, identity.grant_id
            return Credentials(self.cfg, user=role, secret=lambda: role_password(key, grant_id))
        creds = self._mapped.get(role)
        if creds is None:
            if self.cfg.upstream.auth == "rds-iam":
                creds = Credentials(self.cfg, user=role)
            elif self.cfg.upstream.role_password_dir:
                path = Path(self.cfg.upstream.role_password_dir) / role
                creds = Credentials(self.cfg, user=role, secret=lambda: path.read_text().strip())
            else:
                raise _refused(
                    f"grant {identity.grant_id} logs in as role {role!r}, but this proxy holds no "
                    "credentials for mapped roles (upstream.role_password_dir)"
                )
            self._mapped[role] = creds
        return creds


def _refused(message: str) -> PgError:
    return Refused(message, INVALID_AUTHORIZATION)


class RoleSweeper:
    """Runs ``PerGrantRoles.reconcile`` at start-up and every ``provision.sweep_interval``."""

    def __init__(self, roles: PerGrantRoles, store, interval: float):
        self.roles = roles
        self.store = store
        self.interval = interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.roles.reconcile(self.store)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or store may be briefly away
                log.warning("per-grant role sweep failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
