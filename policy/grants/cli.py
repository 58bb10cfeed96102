"""``pgwitness grant | grants | revoke``: the grant control plane from a shell.

``register(subparsers)`` adds the sub-commands to the main ``pgwitness`` parser; each sets
``func`` (parsed args → exit code). Errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.config import Config, ConfigError, parse_hostport
from common.config import load_config as load_proxy_config

from .model import (
    DEFAULT_MAX_TTL,
    RECORD_ROWS,
    Grant,
    GrantError,
    GrantNotFound,
    GrantStateError,
    make_dsn,
)
from .store import DEFAULT_STORE_URL, ProvisionError, RoleHook, StoreConfigError, open_store

__all__ = ["CliError", "Edges", "GrantsConfig", "load_config", "main", "register"]

DEFAULT_LISTEN = "127.0.0.1:6432"
DEFAULT_PUBLIC_PORT = 6432  # as proxy.runtime: a public_host without a port means 6432
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


@dataclass(frozen=True)
class GrantsConfig:
    store: str = DEFAULT_STORE_URL
    public_host: str = "127.0.0.1"
    public_port: int = 6432
    max_ttl: dt.timedelta = DEFAULT_MAX_TTL
    proxy: Config | None = None  # the whole proxy Config when a config file was given


def load_config(
    path: str | None, env: dict[str, str] | None = None, store: str | None = None
) -> GrantsConfig:
    """The grant commands read the proxy's own configuration (one parser, one precedence:
    TOML file < ``PGWITNESS_*`` environment < ``--store``).

    The DSN names ``proxy.public_host`` (port 6432 unless given), else the listen address.
    """
    overrides = {"grants.store": store} if store else {}
    try:
        cfg = load_proxy_config(path, env=env, overrides=overrides)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from None
    try:
        if cfg.proxy.public_host:
            host, port = parse_hostport("proxy.public_host", cfg.proxy.public_host, DEFAULT_PUBLIC_PORT)
        else:
            host, port = parse_hostport("proxy.listen", cfg.proxy.listen)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from None
    if host in ("", "0.0.0.0", "::"):
        # A wildcard listen address is no place to connect to; the machine's name is.
        import socket

        host = socket.gethostname()
    return GrantsConfig(
        store=cfg.grants.store or DEFAULT_STORE_URL,
        public_host=host,
        public_port=port,
        max_ttl=dt.timedelta(seconds=cfg.grants.max_ttl),
        proxy=cfg if path else None,
    )


# ---- commands ---------------------------------------------------------------------------


def _store_url(args: argparse.Namespace, cfg: GrantsConfig) -> str:
    return args.store or cfg.store


def _default_user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Edges:
    """What the grant commands need from the proxy's side when a config file is given:
    the recorder their grant events go to, and the role hook that makes and drops a
    grant's database role. ``pgwitness`` (``proxy.cli``) hands them in, so this package
    imports no proxy code."""

    recorder: Callable[[Config], Any]  # Config -> a started Recorder, or None
    roles: Callable[[Config], RoleHook | None]


async def _with_store(args: argparse.Namespace, cfg: GrantsConfig, fn) -> Any:
    """Run ``fn(store)``; with a config file, grant events go to the proxy's recorder too."""
    edges: Edges | None = getattr(args, "edges", None)
    recorder = None
    roles = None
    if cfg.proxy is not None:
        if edges is None:  # fail closed: no unrecorded grant, no grant without its role
            raise CliError("with --config, run the grant commands as `pgwitness grant|grants|revoke`")
        if cfg.proxy.recorder.enabled:
            recorder = edges.recorder(cfg.proxy)
        try:  # per-grant roles are made and dropped with the grant
            roles = edges.roles(cfg.proxy)
        except ConfigError as exc:
            if recorder is not None:
                recorder.close()
            raise CliError(f"config: {exc}") from None
    on_event = recorder.control_event if recorder is not None else None
    try:
        store = await open_store(
            _store_url(args, cfg), max_ttl=cfg.max_ttl, on_event=on_event, roles=roles
        )
        try:
            return await fn(store)
        finally:
            await store.close()
    finally:
        if recorder is not None:
            recorder.close()


def cmd_grant(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.extend:
        return _extend(args, cfg)
    missing = [
        f"--{name.replace('_', '-')}"
        for name in ("agent", "task", "reason", "database", "scope", "ttl")
        if not getattr(args, name)
    ]
    if missing:
        raise CliError(f"missing {', '.join(missing)} (needed to issue a grant)")

    async def issue(store):
        return await store.issue(
            agent=args.agent,
            task=args.task,
            reason=args.reason,
            granted_by=_default_user() if args.granted_by is None else args.granted_by,
            database=args.database,
            scopes=args.scope,
            ttl=args.ttl,
            not_before=args.not_before,
            enforce=not args.dry_run,
            record_rows=args.record_rows,
            db_role=args.db_role,
        )

    grant, token = asyncio.run(_with_store(args, cfg, issue))
    dsn = make_dsn(grant.agent, token, cfg.public_host, cfg.public_port, grant.database)
    now = dt.datetime.now(dt.UTC)
    if args.json:
        print(json.dumps({"grant": grant.to_dict(now), "dsn": dsn, "token": token}, indent=2))
    else:
        print(dsn)
        mode = "" if grant.enforce else " (dry-run: denials are recorded, not enforced)"
        print(
            f"grant {grant.id}: {grant.agent} on {grant.database} for {grant.task}, "
            f"valid {_when(grant.not_before)} until {_when(grant.expires_at)}{mode}. "
            "The token is shown only once.",
            file=sys.stderr,
        )
    return 0


def _extend(args: argparse.Namespace, cfg: GrantsConfig) -> int:
    if not args.ttl:
        raise CliError("--extend needs --ttl (how much longer, e.g. 1h)")
    stray = [
        f"--{n.replace('_', '-')}"
        for n in ("agent", "task", "reason", "database", "scope", "not_before", "db_role")
        if getattr(args, n)
    ]
    if stray:
        raise CliError(f"--extend changes only the expiry; drop {', '.join(stray)}")
    by = _default_user() if args.granted_by is None else args.granted_by
    grant = asyncio.run(
        _with_store(args, cfg, lambda store: store.extend(args.extend, args.ttl, by=by))
    )
    if args.json:
        print(json.dumps({"grant": grant.to_dict(dt.datetime.now(dt.UTC))}, indent=2))
    else:
        print(f"grant {grant.id} now expires at {_when(grant.expires_at)}")
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    grants: list[Grant] = asyncio.run(
        _with_store(
            args,
            cfg,
            lambda store: store.list(
                agent=args.agent, task=args.task, active=True if args.active else None
            ),
        )
    )
    now = dt.datetime.now(dt.UTC)
    if args.json:
        print(json.dumps([g.to_dict(now) for g in grants], indent=2))
        return 0
    header = ("ID", "AGENT", "TASK", "DATABASE", "STATUS", "MODE", "EXPIRES", "SCOPES")
    rows = [
        (
            g.id,
            g.agent,
            g.task,
            g.database,
            g.status(now),
            "enforce" if g.enforce else "dry-run",
            _when(g.expires_at),
            g.scopes,
        )
        for g in grants
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, str(row[-1])]).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    by = _default_user() if args.by is None else args.by
    started = dt.datetime.now(dt.UTC)
    grant = asyncio.run(_with_store(args, cfg, lambda store: store.revoke(args.grant_id, by=by)))
    if args.json:
        print(json.dumps({"grant": grant.to_dict(dt.datetime.now(dt.UTC))}, indent=2))
    elif grant.revoked_at is not None and grant.revoked_at < started:
        print(
            f"grant {grant.id} was already revoked at {_when(grant.revoked_at)} by {grant.revoked_by}"
        )
    else:
        print(f"revoked grant {grant.id} ({grant.agent}, {grant.task})")
    return 0


# ---- wiring -----------------------------------------------------------------------------


_OPTION_FOR_FIELD = {"scopes": "--scope"}


def _guarded(fn):
    """Turn every expected failure into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except GrantError as exc:
            option = _OPTION_FOR_FIELD.get(exc.field, f"--{exc.field.replace('_', '-')}")
            if exc.field == "by" and args.cmd_name == "grant":
                option = "--granted-by"
            message = f"{option}: {exc.message}"
        except (CliError, GrantStateError, StoreConfigError) as exc:
            message = str(exc)
        except ProvisionError as exc:  # the database refused the grant's role
            message = str(exc)
        except GrantNotFound as exc:
            message = str(exc)
        except KeyboardInterrupt:
            message = "interrupted"
        except Exception as exc:  # one line, never a traceback
            message = f"unexpected {type(exc).__name__}: {exc}"
        print(f"pgwitness {args.cmd_name}: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    return run


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("PGWITNESS_CONFIG"),
        help="pgwitness TOML config file (default $PGWITNESS_CONFIG)",
    )
    common.add_argument(
        "--store",
        metavar="URL",
        help=f"grant store URL, overrides [grants] store (default {DEFAULT_STORE_URL})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def register(subparsers: Any, edges: Edges | None = None) -> None:
    """Add ``grant``, ``grants`` and ``revoke`` to the main ``pgwitness`` parser. Without
    ``edges`` a command given ``--config`` refuses to run (see ``Edges``)."""
    common = _common()
    common.set_defaults(edges=edges)

    p = subparsers.add_parser(
        "grant",
        parents=[common],
        help="issue a task-scoped grant (prints its DSN) or --extend one",
        description="Issue a grant and print the agent's DSN; the token is shown only once.",
    )
    p.add_argument("--agent", help="agent name, the DSN's user name ([a-z0-9_.-], ≤ 63)")
    p.add_argument("--task", help="task id, e.g. INC-4821")
    p.add_argument("--reason", help="why the agent needs access (recorded)")
    p.add_argument("--database", help="the database the agent may connect to")
    p.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="what the agent may touch, e.g. read:public.orders (repeatable)",
    )
    p.add_argument("--ttl", help="lifetime: 30s, 30m, 2h, 1d (with --extend: how much longer)")
    p.add_argument("--not-before", metavar="ISO", help="start time (default now)")
    p.add_argument(
        "--dry-run", action="store_true", help="record would-be denials, do not enforce them"
    )
    p.add_argument("--record-rows", choices=RECORD_ROWS, default="full")
    p.add_argument("--granted-by", metavar="NAME", help="who grants it (default $USER)")
    p.add_argument(
        "--db-role",
        metavar="ROLE",
        help="with upstream.roles = mapped: the database role the grant's sessions log in as",
    )
    p.add_argument("--extend", metavar="GRANT_ID", help="extend this grant by --ttl")
    p.set_defaults(func=_guarded(cmd_grant), cmd_name="grant")

    p = subparsers.add_parser(
        "grants", parents=[common], help="list grants (never tokens or verifiers)"
    )
    p.add_argument("--agent")
    p.add_argument("--task")
    p.add_argument("--active", action="store_true", help="only grants usable right now")
    p.set_defaults(func=_guarded(cmd_grants), cmd_name="grants")

    p = subparsers.add_parser("revoke", parents=[common], help="revoke a grant now")
    p.add_argument("grant_id", metavar="GRANT_ID")
    p.add_argument("--by", metavar="NAME", help="who revokes it (default $USER)")
    p.set_defaults(func=_guarded(cmd_revoke), cmd_name="revoke")


def main(argv: list[str] | None = None, edges: Edges | None = None) -> int:
    """Stand-alone entry point (``python -m policy.grants.cli``, ``--store`` only);
    ``pgwitness`` calls ``register`` with the proxy's ``Edges``."""
    parser = argparse.ArgumentParser(prog="pgwitness")
    register(parser.add_subparsers(dest="command", required=True), edges)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
