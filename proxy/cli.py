"""The ``pgwitness`` command. Each package registers its own sub-commands."""

from __future__ import annotations

import argparse
import os
import sys

from common.config import Config, ConfigError, load_config, validate_for_serving

# Flags that override config keys: flag -> section.key
_FLAG_KEYS = {
    "listen": "proxy.listen",
    "workers": "proxy.workers",
    "upstream_host": "upstream.host",
    "upstream_port": "upstream.port",
    "upstream_user": "upstream.user",
    "upstream_sslmode": "upstream.sslmode",
    "metrics_listen": "metrics.listen",
    "admin_listen": "admin.listen",
    "log_format": "log.format",
    "log_level": "log.level",
}


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", default=os.environ.get("PGWITNESS_CONFIG"), help="TOML config file")
    p.add_argument("--listen", help="host:port to accept clients on (proxy.listen)")
    p.add_argument(
        "--workers", help='worker processes, each connection to the one holding the fewest ("auto": one per usable CPU)'
    )
    p.add_argument("--upstream-host")
    p.add_argument("--upstream-port", type=int)
    p.add_argument("--upstream-user")
    p.add_argument("--upstream-sslmode")
    p.add_argument("--metrics-listen", help='host:port for Prometheus metrics ("" disables)')
    p.add_argument("--admin-listen", help="host:port for the admin HTTP API")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config key"
    )
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.set_defaults(func=cmd_serve)


def config_from_args(args) -> Config:
    overrides = {}
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key] = value
    cfg = load_config(args.config, overrides=overrides)
    validate_for_serving(cfg)
    return cfg


def cmd_serve(args) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"pgwitness: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"configuration OK ({cfg.source})")
        return 0
    from .logs import setup_logging

    setup_logging(cfg.log.level, cfg.log.format)
    if cfg.proxy.workers > 1:
        from .supervisor import run_workers

        return run_workers(cfg)
    from .worker import run_worker

    return run_worker(cfg, metrics=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgwitness",
        description="Postgres proxy that gives AI agents per-task grants and records every session.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _serve_parser(sub)
    from .doctor import register as register_doctor

    try:  # development tools: shipped, but nothing else in the proxy imports them
        from devtools.demo import register as register_demo
    except ImportError:  # pragma: no cover - a build without devtools
        pass
    else:
        register_demo(sub)
    register_doctor(sub)
    from policy.grants import cli as grants_cli
    from recorder import cli as recorder_cli

    grants_cli.register(sub, grants_cli.Edges(recorder=_grant_recorder, roles=_grant_roles))
    recorder_cli.register(sub)
    return parser


# What the grant commands need from this side (policy.grants imports no proxy code).
# Imported when called: building the parser must not create the Prometheus metrics.
def _grant_recorder(cfg: Config):
    from .runtime import build_recorder

    return build_recorder(cfg, one_shot=True)


def _grant_roles(cfg: Config):
    from .provision import role_hook

    return role_hook(cfg, create_key=False)  # a missing key file is an error, not a new key


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
