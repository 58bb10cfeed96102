"""What stand-in policies share: the parts of the relay's Policy seam (proxy.seams) that a
test about statements does not exercise."""

from __future__ import annotations

from policy.decide import RESERVED_PREFIX


class PolicySeam:
    """Enforcing, reads everything but schema ``secret``, no foreign-key actions known."""

    enforce = True
    reads_code = True  # nothing quoted from a function body is withheld
    bind_pins: dict = {}  # noqa: RUF012 - never filled: no Bind is checked
    rebind: dict = {}  # noqa: RUF012 - never filled: the catalog never changes
    followed: dict = {}  # noqa: RUF012 - never filled: no statement is followed
    binds_watched = False  # none of the above
    ddl_unsettled: frozenset = frozenset()
    ddl_open = False  # no DDL: nothing to settle
    names_pending = False  # statement names are not followed
    encoding_code = False
    rebind_unknown = False

    def bind_checked(self, name: str) -> bool:
        return name.startswith(RESERVED_PREFIX)
    on_stale = None  # no catalog: never waits for one
    waiting_since = None
    stale_write = False
    rewritten = None  # no text is sent in place of the client's
    can_reparse = None  # (set by the relay)

    def may_read(self, schema: str, table: str) -> bool:
        return schema != "secret"

    def may_hear(self, channel: str) -> bool:
        return True

    temps_pending = False  # no catalog: no code making temporary relations

    def writes_unreadable(self, verdict) -> bool:
        return False

    stale_read = False  # no catalog: never stale
    hidden_read = False  # no catalog: no view hides rows

    write_mark = None  # no catalog: no other session's DDL to follow

    def writes_moved(self) -> bool:
        return False

    def writes_done(self) -> None:
        pass

    def names_unknown(self) -> None:
        pass

    lazy_names = False  # no code replaces statements
    lazy_code = False
    ran_lazy = False

    def at_rest(self) -> None:
        self.lazy_names = self.lazy_code = False

    def verify_name(self, name: str):
        return None

    def replaced_message(self, name: str) -> str:
        return f"replaced {name}"

    def verified(self, name: str, token) -> None:
        pass

    def replaced(self, name: str, token) -> None:
        pass

    def closed(self, name: str) -> None:
        pass

    def failed(self) -> None:
        pass

    sending_group = -1
    bind_at_once = True

    def commits_prepared(self) -> None:
        self.ddl_open = True

    def parse_answered(self, name: str) -> None:
        pass

    portals_watched = False  # no code opens cursors: the relay reports no portal
    harvesting = False
    savepoints_pending = False
