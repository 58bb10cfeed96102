"""What drivers and pools send on their own, allowed by default in its harmless form.

Pools reset a connection before handing it to the next user (asyncpg:
``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;``; Npgsql and
odyssey: ``SET SESSION AUTHORIZATION DEFAULT; RESET ALL; ...``; pgbouncer: ``DISCARD
ALL``), check it (``SELECT 1``, an empty query, ``-- ping``), set formatting on connect
(``SET standard_conforming_strings = on``) and read their own row of
``pg_stat_activity``. Most of that is allowed by the ordinary rules in ``decide``; this
module holds the exceptions, each matched in exactly one shape (anything else falls
through to the ordinary rules and is decided there):

* ``pg_advisory_unlock_all()`` alone in a SELECT: it releases only this session's
  advisory locks, which a grant cannot take in the first place;
* ``SET standard_conforming_strings`` to on (the only value the lexer can follow);
* ``SET SESSION AUTHORIZATION DEFAULT`` / ``RESET SESSION AUTHORIZATION``: back to the
  session's login role, which is what the session already runs as (a grant can never
  change role);
* ``SELECT <columns> FROM pg_stat_activity WHERE pid = pg_backend_pid()``: the session's
  own row, with plain column names of that view only (``x.fn`` can be a function call).

``RESET ALL`` and ``DISCARD ALL`` return settings to the session's defaults, and the
values the proxy pins (search_path) are given in the startup packet, where PostgreSQL
makes them the defaults RESET returns to: see ``proxy.handshake`` and
``tests/integration/test_proxy_drivers.py``.
"""

from __future__ import annotations

import re

from policy.classify import Classified, StatementClass

__all__ = ["harmless_setting_value", "housekeeping"]

# Functions a housekeeping SELECT may call (and nothing else).
_FUNCTIONS = frozenset({"pg_advisory_unlock_all"})
_ACTIVITY = "pg_catalog.pg_stat_activity"
# pg_stat_activity's columns (PostgreSQL 13-17): any other name after a dot or alone may be
# a function applied to the row.
_ACTIVITY_COLUMNS = frozenset(
    """
    datid datname pid leader_pid usesysid usename application_name client_addr
    client_hostname client_port backend_start xact_start query_start state_change
    wait_event_type wait_event state backend_xid backend_xmin query_id query backend_type
    """.split()  # noqa: SIM905 - a word list
)
_WORD = r"[a-z_][a-z0-9_]*"
_OWN_ROW = re.compile(
    rf"select\s+(?P<cols>.+?)\s+from\s+(?:pg_catalog\s*\.\s*)?pg_stat_activity"
    rf"(?:\s+(?:as\s+)?(?P<alias>{_WORD}))?"
    rf"\s+where\s+(?:(?P<q>{_WORD})\s*\.\s*)?pid\s*=\s*(?:pg_catalog\s*\.\s*)?pg_backend_pid\s*\(\s*\)"
    r"(?:\s+limit\s+1)?\s*",
    re.IGNORECASE | re.ASCII,
)
_COLUMN = re.compile(
    rf"(?:(?P<q>{_WORD})\s*\.\s*)?(?P<col>{_WORD})(?:\s+(?:as\s+)?(?P<label>{_WORD}))?",
    re.IGNORECASE | re.ASCII,
)
_UNLOCK_ALL = re.compile(
    r"select\s+(?:pg_catalog\s*\.\s*)?pg_advisory_unlock_all\s*\(\s*\)\s*", re.IGNORECASE | re.ASCII
)
_SESSION_AUTH_DEFAULT = re.compile(
    r"(?:set\s+session\s+authorization\s+default|reset\s+session\s+authorization)\s*",
    re.IGNORECASE | re.ASCII,
)
_SCS_ON = re.compile(
    r"set\s+(?:session\s+)?standard_conforming_strings\s*(?:=|\s+to\s)\s*(?P<v>'[a-z0-9]*'|[a-z0-9]+)\s*",
    re.IGNORECASE | re.ASCII,
)
# parse_bool's spellings of true that are unambiguous (PostgreSQL also takes prefixes).
_TRUE = frozenset({"on", "true", "yes", "1"})
_KEYWORDS = frozenset({"where", "from", "limit", "as", "select"})


def harmless_setting_value(name: str, value: str) -> bool:
    """A forbidden setting that is harmless at this value: ``standard_conforming_strings``
    on (the only value the lexer follows, and what the proxy requires of the server)."""
    return name == "standard_conforming_strings" and value.strip().strip("'").lower() in _TRUE


def housekeeping(c: Classified) -> str | None:
    """The reason to allow ``c`` if it is one of the shapes above (rule
    ``default.housekeeping``); None: ``decide`` applies the ordinary rules."""
    if c.cls is StatementClass.READ and c.command == "SELECT" and not c.writes:
        if c.functions and c.functions <= _FUNCTIONS and not c.reads:
            if _UNLOCK_ALL.fullmatch(c.sql):
                return "release this session's advisory locks"
        elif c.reads == {_ACTIVITY} and _own_activity_row(c.sql):
            return "read this session's own row of pg_stat_activity"
        return None
    if c.cls is StatementClass.SESSION_SET:
        if c.detail == "session_authorization" and _SESSION_AUTH_DEFAULT.fullmatch(c.sql):
            return "session authorization back to the login role"
        if c.detail == "standard_conforming_strings" and c.command == "SET":
            m = _SCS_ON.fullmatch(c.sql)
            if m is not None and harmless_setting_value(c.detail, m["v"]):
                return "set standard_conforming_strings on"
    return None


def _own_activity_row(sql: str) -> bool:
    m = _OWN_ROW.fullmatch(sql)
    if m is None:
        return False
    alias = (m["alias"] or "").lower()
    if alias in _KEYWORDS:
        return False
    names = {"pg_stat_activity", alias} - {""}
    if m["q"] is not None and m["q"].lower() not in names:
        return False
    cols = m["cols"].strip()
    if cols == "*":
        return True
    for part in cols.split(","):
        col = _COLUMN.fullmatch(part.strip())
        if col is None or col["col"].lower() not in _ACTIVITY_COLUMNS:
            return False
        if col["q"] is not None and col["q"].lower() not in names:
            return False
    return True
