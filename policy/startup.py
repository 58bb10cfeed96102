"""Startup parameters and ``options`` (PGOPTIONS): the same setting policy as ``SET``.

A client may put settings in its startup packet two ways: as parameters of their own
(``application_name=x``) and inside ``options`` as server command-line switches
(``-c statement_timeout=5s``, ``--lock-timeout=1s``), split on unescaped whitespace with
``\\`` escaping the next character, as libpq writes them and PostgreSQL's
``pg_split_opts`` reads them. For a grant every setting, wherever it came from, is decided
by the rule ``SET`` of it would get (``policy.decide``), and the settings that pass reach
the server as plain startup parameters (``options`` itself is never forwarded, so the
server parses nothing the proxy did not). Anything in ``options`` other than ``-c
name=value`` / ``--name=value`` is refused. Static users are unrestricted and get exactly
what PostgreSQL would give them: their parameters pass unchanged.
"""

from __future__ import annotations

import re

from policy.decide import change_setting
from policy.encodings import check_client_encoding
from policy.housekeeping import harmless_setting_value
from policy.scopes import Scopes

__all__ = ["OptionsError", "StartupRefusal", "grant_startup_params", "parse_options"]

# Startup keys that are not settings.
_NOT_SETTINGS = frozenset({"user", "database", "options", "replication"})


class OptionsError(ValueError):
    """``options`` that are not a list of ``-c name=value`` / ``--name=value``."""


class StartupRefusal(ValueError):
    """A startup setting the grant may not have; the text names it and the rule."""


def split_options(text: str) -> list[str]:
    """PostgreSQL's ``pg_split_opts``: words split on unescaped whitespace, ``\\x`` -> ``x``."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        word = []
        while i < n and not text[i].isspace():
            if text[i] == "\\" and i + 1 < n:
                i += 1
            word.append(text[i])
            i += 1
        words.append("".join(word))
    return words


def parse_options(text: str) -> list[tuple[str, str]]:
    """``options`` -> [(setting, value)] in order; names lower-cased with ``-`` -> ``_``
    (as PostgreSQL's ParseLongOption); OptionsError for any other switch or argument."""
    words = split_options(text)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c":
            if i + 1 >= len(words):
                raise OptionsError('"-c" needs a name=value after it')
            pair, i = words[i + 1], i + 2
        elif word.startswith("-c") or (word.startswith("--") and len(word) > 2):
            pair, i = word[2:], i + 1
        else:
            raise OptionsError(
                f'"{word}" is not allowed in options: only -c name=value and --name=value'
            )
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise OptionsError(f'"{pair}" in options is not name=value')
        out.append((name.replace("-", "_").lower(), value))
    return out


def _encoding_key(name: str) -> str:
    """Encoding names compared as PostgreSQL does: letters and digits only, case folded."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _setting_refusal(name: str, value: str, where: str, scopes: Scopes) -> str | None:
    if name == "client_encoding":
        enc = _encoding_key(value)
        if where == "options" and enc not in ("utf8", "unicode"):
            return f'client_encoding "{value}" in options: only UTF8 (rule deny.setting)'
        # PostgreSQL's own alias table and name folding (policy/encodings.py); DEFAULT is
        # SET's word, not an encoding a startup packet may name
        refusal = (check_client_encoding(value) if enc != "default"
                   else f"client encoding {value!r} is not on the proxy's allowlist")
        return None if refusal is None else f"{refusal} (rule deny.setting)"
    if harmless_setting_value(name, value):
        return None
    decision = change_setting(name, "set", scopes)
    if decision.allowed:
        return None
    return f"{decision.reason} (rule {decision.rule})"


def grant_startup_params(params: dict[str, str], scopes: Scopes) -> dict[str, str]:
    """The startup parameters to send upstream for a grant's session, or StartupRefusal.

    ``params`` are the client's, without ``user``/``database``. Settings from ``options``
    come first and the client's own parameters override them, as in PostgreSQL."""
    out: dict[str, str] = {}
    for key, value in params.items():
        lower = key.lower()
        if lower == "options":
            try:
                pairs = parse_options(value)
            except OptionsError as exc:
                raise StartupRefusal(
                    f"pgwitness: startup parameter options refused: {exc}"
                ) from None
            for name, val in pairs:
                why = _setting_refusal(name, val, "options", scopes)
                if why is not None:
                    raise StartupRefusal(f'pgwitness: setting "{name}" in options refused: {why}')
                out[name] = val
    for key, value in params.items():
        lower = key.lower()
        if lower in _NOT_SETTINGS:
            if lower == "replication":
                raise StartupRefusal(
                    f'pgwitness: startup parameter "{key}" is not allowed: replication '
                    "connections are not allowed"
                )
            continue
        if lower == "fallback_application_name":
            out[key] = value
            continue
        if lower.startswith("_pq_."):
            raise StartupRefusal(f'pgwitness: startup parameter "{key}" is not allowed')
        why = _setting_refusal(lower, value, "parameter", scopes)
        if why is not None:
            raise StartupRefusal(f'pgwitness: startup parameter "{key}" refused: {why}')
        out.pop(lower, None)  # an explicit parameter wins over the same one in options
        out[key] = value
    return out


def check_startup_params(params: dict[str, str], scopes: Scopes | None = None) -> str | None:
    """None if a grant with ``scopes`` (none: the defaults only) may have every startup
    parameter, ``options`` included; else the refusal text naming the setting and rule."""
    try:
        grant_startup_params(params, scopes if scopes is not None else Scopes())
    except StartupRefusal as exc:
        return str(exc)
    return None
