"""Grant stores: SQLite file (default) or PostgreSQL, opened by URL."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .base import (
    DEFAULT_STORE_URL,
    GrantStore,
    ProvisionError,
    RoleHook,
    StoreConfigError,
    redact_url,
)
from .postgres import PostgresGrantStore
from .sqlite import SQLiteGrantStore

__all__ = [
    "DEFAULT_STORE_URL",
    "GrantStore",
    "RoleHook",
    "PostgresGrantStore",
    "ProvisionError",
    "SQLiteGrantStore",
    "StoreConfigError",
    "check_store_not_upstream",
    "open_store",
    "redact_url",
]


# ---- opening and safety ---------------------------------------------------------------


def _is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path → file path."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif url.startswith("sqlite:"):
        raise StoreConfigError(
            f"grant store URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    else:
        path = url
    if not path:
        raise StoreConfigError("grant store URL names no SQLite file")
    return unquote(path)


async def open_store(url: str | os.PathLike[str], **kwargs: Any) -> GrantStore:
    """Open (creating the schema if needed) the store at ``url``.

    ``sqlite:///path`` or a plain path → SQLite; ``postgresql://``/``postgres://`` →
    PostgreSQL. Keyword arguments (``on_event``, ``max_ttl``, ``clock``) go to the store.
    """
    text = os.fspath(url)
    if not text or not text.strip():
        raise StoreConfigError("grant store URL is empty")
    if _is_postgres_url(text):
        store: GrantStore = await PostgresGrantStore(text, **kwargs).open()
    elif "://" in text and not text.startswith("sqlite:"):
        scheme = text.split("://", 1)[0]
        raise StoreConfigError(
            f"grant store URL scheme {scheme!r} is not supported; use sqlite:/// or postgresql://"
        )
    else:
        store = await SQLiteGrantStore(sqlite_path(text), **kwargs).open()
    if store.roles is not None and hasattr(store.roles, "bind"):
        store.roles.bind(store.store_id)  # per-grant roles are marked with their store
    return store


def _pg_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [None])[0] or parts.hostname or ""
    try:
        port = int(query.get("port", [None])[0] or parts.port or 5432)
    except ValueError as exc:
        raise StoreConfigError(f"grant store URL {redact_url(url)!r} has a bad port") from exc
    return host, port


def _addresses(host: str) -> set[str]:
    """Comparable forms of ``host``: resolved addresses, with every loopback as one."""
    if not host or host.startswith("/") or host.lower() == "localhost":
        # No host means the libpq default (local socket or localhost): the local server.
        return {"loopback"}
    names: set[str] = {host.lower()}
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        infos = []
    for info in infos:
        names.add(str(info[4][0]))
    out = set()
    for name in names:
        try:
            ip = ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            out.add(name)
            continue
        if ip.is_loopback:
            out.add("loopback")
        elif isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            out.add("loopback" if ip.ipv4_mapped.is_loopback else str(ip.ipv4_mapped))
        else:
            out.add(str(ip))
    return out


def check_store_not_upstream(
    store_url: str, upstream_host: str, upstream_port: int, databases: Iterable[str] = ()
) -> None:
    """Refuse a PostgreSQL grant store on the upstream server agents reach through the proxy.

    A grant store there would let a grant with wide enough scopes read verifiers or
    issue itself more access. SQLite stores always pass. Raises StoreConfigError.
    """
    if not _is_postgres_url(store_url):
        return
    store_host, store_port = _pg_host_port(store_url)
    if int(store_port) != int(upstream_port):
        return
    if _addresses(store_host) & _addresses(upstream_host):
        store_db = unquote(urlsplit(store_url).path.lstrip("/")) or "(default)"
        exposed = sorted(set(databases))
        also = f"; agents reach databases {', '.join(exposed)} there" if exposed else ""
        raise StoreConfigError(
            f"grant store {redact_url(store_url)} (database {store_db}) is on the upstream "
            f"server {upstream_host}:{upstream_port}{also}. The grant store is the control "
            "plane: put it on a PostgreSQL server agents cannot reach through the proxy"
        )
