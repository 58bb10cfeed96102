"""The SQL-level prepared statements a session may EXECUTE: names it PREPAREd with an
allowed decision, followed through DEALLOCATE and DISCARD ALL (pure, one per session).

EXECUTE alone classifies as UNKNOWN (its statement is not in its text); it is allowed only
for a name this session prepared, and checked, itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy.classify import Classified
    from policy.decide import Decision

__all__ = ["STATEFUL_COMMANDS", "PreparedNames"]

# Statements whose outcome depends on, or changes, which names were PREPAREd here.
STATEFUL_COMMANDS = frozenset({"PREPARE", "EXECUTE", "DEALLOCATE", "DISCARD"})


class PreparedNames:
    __slots__ = ("_names",)

    def __init__(self, names: frozenset[str] | set[str] = frozenset()):
        self._names = set(names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def copy(self) -> PreparedNames:
        return PreparedNames(self._names)

    def names(self) -> frozenset[str]:
        return frozenset(self._names)

    def forget(self, name: str) -> None:
        """The server no longer holds ``name`` as this session's PREPARE, or may not."""
        self._names.discard(name)

    def follow(self, c: Classified, d: Decision) -> None:
        """Apply one decided statement: an allowed PREPARE, DEALLOCATE or DISCARD ALL."""
        if not d.allowed:
            return
        if c.command == "PREPARE":
            self._names.add(c.detail)
        elif c.command == "DEALLOCATE":
            if c.detail == "all":
                self._names.clear()
            else:
                self._names.discard(c.detail)
        elif c.command == "DISCARD" and c.detail == "all":
            self._names.clear()
