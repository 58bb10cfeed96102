"""Wiring: builds one worker's authenticator, grant store, recorder, policy and servers from config."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from common.config import Config, ConfigError, parse_hostport, validate_for_serving

from .auth import Authenticator, GrantAuthenticator, StaticUsers
from .server import ProxyServer

if TYPE_CHECKING:  # imported where used: the admin API and roles only when configured
    from policy import StatementPolicy
    from policy.grants.admin import AdminServer
    from policy.grants.auth import Identity
    from policy.grants.store import GrantStore
    from recorder import Recorder

    from .provision import RoleSweeper


@dataclass
class Runtime:
    server: ProxyServer
    store: GrantStore | None = None  # None: static users only
    recorder: Recorder | None = None  # None: recording disabled
    admin: AdminServer | None = None
    sweeper: RoleSweeper | None = None  # with per-grant roles

    async def close(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.close()
        if self.admin is not None:
            await self.admin.close()
        if self.store is not None:
            await self.store.close()
        if self.recorder is not None:
            self.recorder.close()


def build_recorder(cfg: Config, *, one_shot: bool = False) -> Recorder | None:
    """The recorder for this worker, or None when recording is disabled. ``one_shot``: for
    a command that records a few events and exits (``pgwitness grant``), which uploads
    from a thread rather than start an upload process for them."""
    if not cfg.recorder.enabled:
        return None
    from recorder import Recorder

    rcfg = dataclasses.replace(cfg.recorder, upload_process=False) if one_shot else cfg.recorder
    try:
        rec = Recorder.from_config(rcfg)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"recorder: {exc}") from exc
    rec.start()
    return rec


def policy_factory(identity: Identity) -> StatementPolicy | None:
    """A statement policy for a session, or None for an unrestricted (static) user."""
    if identity.scopes is None:
        return None
    from policy import StatementPolicy

    return StatementPolicy(
        identity.scopes, task=identity.task, enforce=identity.enforce,
        own_login=bool(getattr(identity, "db_role", "")),
    )  # fmt: skip


class CannotListen(Exception):
    """A port the configuration names cannot be listened on; the message says which."""


async def build_runtime(cfg: Config, *, admin: bool | list[socket.socket] = True) -> Runtime:
    """The worker's services. ``admin`` (with ``admin.listen`` set): True, serve the admin
    API on ``admin.listen``; its listening sockets, bound already (the supervisor's, for
    the one worker that serves it); False, another worker serves it."""
    validate_for_serving(cfg)
    static = StaticUsers(cfg.auth.users, record_rows=cfg.recorder.record_rows) if cfg.auth.users else None
    recorder = build_recorder(cfg)
    store = None
    authenticator: Authenticator | None = static
    if cfg.grants.store:
        from policy.grants.store import check_store_not_upstream, open_store

        try:
            check_store_not_upstream(cfg.grants.store, cfg.upstream.host, cfg.upstream.port)
        except ValueError as exc:
            raise ConfigError(f"grants.store: {exc}") from exc
        from .provision import role_hook

        on_event = recorder.control_event if recorder is not None else None
        store = await open_store(
            cfg.grants.store, on_event=on_event, max_ttl=timedelta(seconds=cfg.grants.max_ttl),
            roles=role_hook(cfg),
        )  # fmt: skip
        authenticator = GrantAuthenticator(store, static=static)
    server = ProxyServer(
        cfg, authenticator, recorder=recorder, grant_store=store, policy_factory=policy_factory
    )
    runtime = Runtime(server=server, store=store, recorder=recorder)
    if store is not None and cfg.upstream.roles == "per-grant":
        from .provision import PerGrantRoles, RoleSweeper

        assert isinstance(store.roles, PerGrantRoles)  # role_hook(cfg) in per-grant mode
        runtime.sweeper = RoleSweeper(store.roles, store, cfg.provision.sweep_interval)
        runtime.sweeper.start()  # start-up reconciliation, then a sweep every interval
    if cfg.admin.listen and admin is not False:
        assert store is not None  # validate_for_serving: the admin API needs a grant store
        from policy.grants.admin import AdminServer

        from . import metrics

        public = cfg.proxy.public_host or cfg.proxy.listen
        phost, pport = parse_hostport("proxy.public_host", public, 6432)
        api = AdminServer(
            store, cfg.admin_token(), public_host=phost, public_port=pport,
            fail_delay=cfg.proxy.auth_fail_delay, fail_window=cfg.proxy.auth_fail_window,
            on_auth_failure=metrics.ADMIN_AUTH_FAILURES.inc,
        )  # fmt: skip
        try:
            if admin is True:
                host, port = parse_hostport("admin.listen", cfg.admin.listen)
                await api.start(host, port)
            else:
                await api.start(socks=admin)
        except OSError as exc:
            await runtime.close()
            raise CannotListen(f"cannot listen on admin.listen {cfg.admin.listen}: {exc.strerror}") from exc
        runtime.admin = api
    return runtime
