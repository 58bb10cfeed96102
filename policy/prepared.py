"""The SQL-level prepared statements a session may EXECUTE: names it PREPAREd with an
allowed decision, followed through DEALLOCATE and DISCARD ALL (pure, one per session).

EXECUTE alone classifies as UNKNOWN (its statement is not in its text); it is allowed only
for a name this session prepared, and checked, itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy.classify import Classified
    from policy.decide import Decision

__all__ = ["NAME_BYTES", "STATEFUL_COMMANDS", "PreparedNames", "name_too_long"]

# Statements whose outcome depends on, or changes, which names were PREPAREd here.
STATEFUL_COMMANDS = frozenset({"PREPARE", "EXECUTE", "DEALLOCATE", "DISCARD"})


# PostgreSQL keys prepared statements by their name's first NAMEDATALEN - 1 bytes (in the
# server's encoding; the grammar truncates an SQL name so, a protocol name is cut in the
# statement table's key): two names that agree that far are one statement to the server.
NAME_BYTES = 63


def name_too_long(name: str) -> bool:
    """Might the server truncate statement name ``name``? Counted at the most bytes a
    character takes in any server encoding (4), so no encoding can make it longer: such a
    name is refused, and every name the policy holds is the server's whole key (red-team
    round 36: ``<63 bytes>_a`` parsed, ``<63 bytes>_b`` bound ran it unchecked)."""
    if len(name) <= NAME_BYTES // 4:
        return False
    return sum(1 if ch < "\x80" else 4 for ch in name) > NAME_BYTES


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
