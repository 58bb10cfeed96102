"""Decisions: ``decide(classified, scopes) -> Decision``, the defaults, startup parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass

from policy.classify import (
    CURRENT_SETTING_PREFIX,
    SET_CONFIG_PREFIX,
    Classified,
    StatementClass,
    is_builtin_function,
    is_dangerous_function,
)
from policy.classify.catalogue import (
    BY_PARAMETER,
    DANGEROUS_WHY,
    OWN_BACKEND,
    PRIVILEGED_SETTINGS,
    signal_target,
)
from policy.classify.crosscheck import DISAGREE
from policy.classify.pgparse import BARRIER_LOWERED
from policy.encodings import check_client_encoding
from policy.housekeeping import housekeeping
from policy.lexer import ascii_lower, render_name
from policy.scopes import FORBIDDEN_SETTINGS, Scopes, split_name

__all__ = [
    "ALLOWED_CATALOGS",
    "DENIED_CATALOGS",
    "DENIED_INFORMATION_SCHEMA",
    "UNDEFINED_TABLE",
    "PRIVILEGED_SETTINGS",
    "SAFE_SETTINGS",
    "Decision",
    "bound_setting",
    "change_setting",
    "check_function",
    "check_read",
    "check_write",
    "decide",
    "read_setting",
]


UNDEFINED_TABLE = "42P01"  # the server's SQLSTATE for a relation name it cannot find


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str  # stable rule id, e.g. "scope.read", "deny.unknown", "deny.function"
    reason: str  # human text naming the relation/function at fault
    # allowed, and it runs code that may run DDL (``StatementPolicy._runs_ddl_code``): its
    # transaction counts as DDL's, and no cache answers it without ``_verdict``
    opens_ddl: bool = False
    # a refusal's SQLSTATE where the server answers an honest client so for the same text
    # ("" = 42501): a name no relation has is 42P01 (``StatementPolicy._temp_of_code``)
    sqlstate: str = ""


# Session settings any grant may SET/RESET: they change formatting and time limits only.
SAFE_SETTINGS = frozenset(
    {
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "transaction_timeout",
        "client_min_messages",
        "bytea_output",
        "jit",
    }
)
# System catalogs drivers, ORMs and psql's \d commands read: allowed without a scope.
# Every name must be a relation (table or view) in PostgreSQL 15's pg_catalog: classify
# reads an unqualified pg_* name as pg_catalog's, but PostgreSQL looks a name pg_catalog
# lacks up in the search_path, i.e. in a user's schema (``pg_partition_tree``, a function,
# once read public.pg_partition_tree). tests/integration/test_policy_side_channels.py asks
# the server.
ALLOWED_CATALOGS = frozenset(
    """
    pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_cast pg_class
    pg_collation pg_constraint pg_conversion pg_database pg_default_acl pg_depend
    pg_description pg_enum pg_event_trigger pg_extension pg_foreign_data_wrapper
    pg_foreign_table pg_index pg_inherits pg_init_privs pg_language pg_namespace pg_opclass
    pg_operator pg_opfamily pg_partitioned_table pg_policy pg_proc pg_publication
    pg_publication_rel pg_range pg_rewrite pg_sequence pg_shdepend pg_shdescription
    pg_tablespace pg_transform pg_trigger pg_ts_config pg_ts_config_map pg_ts_dict
    pg_ts_parser pg_ts_template pg_type pg_settings pg_roles pg_tables pg_views pg_indexes
    pg_matviews pg_available_extensions pg_available_extension_versions
    pg_cursors pg_prepared_statements pg_timezone_names pg_timezone_abbrevs
    pg_stat_user_tables pg_stat_user_indexes pg_statio_user_tables pg_statio_user_indexes
    pg_stat_all_tables pg_stat_all_indexes pg_stat_database pg_auth_members
    pg_rules pg_policies pg_statistic_ext pg_config pg_publication_namespace
    pg_parameter_acl pg_statio_user_sequences pg_stat_xact_user_tables
    pg_stat_progress_vacuum pg_stat_progress_create_index pg_prepared_xacts pg_user pg_group
    pg_stat_user_functions pg_statio_all_tables pg_statio_all_indexes pg_stat_sys_tables
    """.split()  # noqa: SIM905 - a word list
)
# Catalogs no grant may read: password hashes, credentials, raw column statistics (values
# of rows the grant cannot read), large object contents, server configuration files,
# other sessions' statements. pg_stat_activity is in neither list: a grant may name it;
# pg_locks too (red-team round 79: another session's advisory lock keys, a job id or any
# number its code chose, e.g. a secret's, are in its rows).
DENIED_CATALOGS = frozenset(
    """
    pg_authid pg_shadow pg_user_mapping pg_user_mappings pg_statistic pg_stats
    pg_statistic_ext_data pg_stats_ext pg_stats_ext_exprs pg_largeobject pg_largeobject_metadata
    pg_file_settings pg_hba_file_rules pg_ident_file_mappings pg_subscription
    pg_db_role_setting pg_stat_statements pg_backend_memory_contexts
    pg_replication_slots pg_stat_replication pg_stat_wal_receiver pg_stat_subscription
    pg_replication_origin pg_replication_origin_status pg_foreign_server pg_shmem_allocations
    pg_sequences pg_stat_replication_slots pg_stat_subscription_stats pg_seclabels
    pg_stat_gssapi pg_stat_ssl
    """.split()  # noqa: SIM905 - a word list
)
# information_schema views that show foreign-server credentials to their owner.
DENIED_INFORMATION_SCHEMA = frozenset(
    {"user_mapping_options", "user_mappings", "foreign_server_options", "foreign_servers"}
)
# Operator names PostgreSQL 15 defines in pg_catalog (SELECT DISTINCT oprname FROM
# pg_operator WHERE oprnamespace = 'pg_catalog'::regnamespace). Any other name can only be a
# user-defined operator, i.e. a call of its function: denied unless an execute scope names
# its schema. Built-in names used on user-defined types may still resolve to a user's
# operator: the policy does not follow that (docs/policy.md, threat model).
BUILTIN_OPERATORS = frozenset(
    """
    !! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>= + - -> ->>
    -|- / < <-> << <<= <<| <= <> <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?|| @ @-@ @> @?
    @@ @@@ ^ ^@ | |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~= ~>=~ ~>~ ~~ ~~* !=
    """.split()  # noqa: SIM905 - a word list
)
_ROUTINE_WORDS = ("FUNCTION", "PROCEDURE", "AGGREGATE", "OPERATOR", "ROUTINE")
_READ_ONLY_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_DEFAULT_READ_PREFIXES = ("pg_catalog.", "information_schema.", "pg_temp.")
# LISTEN is not here: it needs a listen: scope naming the channel (``_listen``).
_ALLOWED_UTILITY = {
    "UNLISTEN": "default.listen",  # any form, UNLISTEN * too (drivers' reset queries)
    "DEALLOCATE": "default.utility",
    "DISCARD": "default.utility",
    "FETCH": "default.cursor",
    "MOVE": "default.cursor",
    "CLOSE": "default.cursor",
}
_DENIED_UTILITY = {
    "ALTER SYSTEM": ("deny.alter_system", "may not run ALTER SYSTEM"),
    "LOAD": ("deny.load", "may not LOAD libraries"),
    "NOTIFY": ("deny.notify", "may not NOTIFY (it would wake production listeners)"),
    "COMMIT PREPARED": ("deny.two_phase", "may not use two-phase commit"),
    "ROLLBACK PREPARED": ("deny.two_phase", "may not use two-phase commit"),
    "PREPARE TRANSACTION": ("deny.two_phase", "may not use two-phase commit"),
}
_OP_VERBS = {
    "insert": "write",
    "update": "write",
    "delete": "write",
    "lock": "lock rows of",
    "truncate": "truncate",
    "ddl": "change the definition of",
}
_OP_RULES = {
    "insert": "scope.write",
    "update": "scope.write",
    "delete": "scope.write",
    "lock": "scope.write",
    "truncate": "scope.truncate",
    "ddl": "scope.ddl",
}


def _deny(rule: str, reason: str) -> Decision:
    return Decision(False, rule, reason)


# The settings an enforced session's startup packet pins (proxy.handshake), which a RESET
# returns to
_PINNED_AT_LOGIN = frozenset({"search_path", "constraint_exclusion"})


def _setting(c: Classified, scopes: Scopes) -> Decision:
    name = c.detail
    if c.command == "SHOW":
        return read_setting(name, scopes)
    if c.command == "RESET" and name == "all":
        return Decision(True, "default.setting", "reset all settings to the session defaults")
    if c.command == "RESET" and name in _PINNED_AT_LOGIN:
        # what RESET ALL does for these: back to the startup packet's value, which is what
        # the proxy pinned (proxy.handshake); no statement may change them (SET, SET LOCAL
        # and set_config of them are refused), so it moves nothing (red-team round 83)
        return Decision(True, "default.setting", f"reset {name} to the pinned value")
    return change_setting(name, c.command.lower(), scopes)


# Settings whose value is checked too (an encoding could hide quotes): SET's value, a
# literal set_config value (the classifier) and a bound one (``bound_setting``).
VALUE_CHECKED_SETTINGS = frozenset({"client_encoding"})
# A setting's name as a value bound may give it: what PostgreSQL's setting names are made
# of, at most 63 bytes (a longer name typed ``name`` is cut by the server, not here)
_SETTING_NAME = re.compile(r"[A-Za-z0-9_.]{1,63}\Z")


def read_setting(name: str, scopes: Scopes) -> Decision:
    """SHOW ``name``, or ``current_setting('name')``: settings are where secrets are kept
    too. A custom setting (a dotted name: ``ALTER DATABASE ... SET app.jwt_secret = ...``,
    ``ALTER ROLE authenticator SET pgrst.jwt_secret = ...``) is readable by every session of
    that database or role whatever its privileges, so one is read only with a ``set:``
    scope naming it; the privileged ones (``PRIVILEGED_SETTINGS``) by no grant; ``SHOW ALL``
    lists those, so it is refused (one SHOWs a setting by name)."""
    if name == "all":
        return _deny(
            "deny.setting_read",
            "may not SHOW ALL (it lists settings only superusers may read; SHOW a setting by name)",
        )
    if name in PRIVILEGED_SETTINGS:
        return _deny(
            "deny.setting_read",
            f"may not read setting {name} (PostgreSQL shows it only to superusers)",
        )
    if "." in name:
        if name in scopes.settings:
            return Decision(True, "scope.set", f"show {name} granted")
        return _deny(
            "deny.setting_read",
            f"may not read custom setting {name} (custom settings can hold secrets; "
            "a set: scope naming it allows reading it)",
        )
    return Decision(True, "default.show", f"show {name}")


def change_setting(name: str, verb: str, scopes: Scopes) -> Decision:
    if name in FORBIDDEN_SETTINGS:
        return _deny("deny.setting", f"may not change {name}")
    if name in SAFE_SETTINGS:
        return Decision(True, "default.setting", f"{verb} {name}")
    if name in scopes.settings:
        return Decision(True, "scope.set", f"{verb} {name} granted")
    return _deny("deny.setting", f"may not change setting {name}")


def bound_setting(call: str, name: str | None, value: str | None, scopes: Scopes) -> Decision:
    """``current_setting(name)`` or ``set_config(name, value, ...)`` whose name (or, for
    client_encoding, value) a parameter gave, with the text bound (None: NULL, no such
    parameter, or not written as a literal or parameter): decided as the call with those
    literals would be. A name that is not plainly a setting's is refused."""
    if name is None or not _SETTING_NAME.match(name):
        return _deny(
            "deny.function",
            f"may not execute {call} on the setting named by the value bound "
            f"({'none' if name is None else repr(name[:80])} is not a setting's name)",
        )
    setting = ascii_lower(name)
    if call == "current_setting":
        return read_setting(setting, scopes)
    if setting in FORBIDDEN_SETTINGS:
        return _deny("deny.function", f"may not execute set_config on {setting}")
    decision = change_setting(setting, "set_config", scopes)
    if decision.allowed and setting in VALUE_CHECKED_SETTINGS:
        if value is None:
            refusal: str | None = "no value (NULL, or one not written as a literal or parameter)"
        elif len(value) > 63:
            refusal = "longer than any encoding's name (a name-typed value is cut by the server)"
        else:
            refusal = check_client_encoding(value)
        if refusal is not None:
            return _deny("deny.setting", f"may not set {setting} to the value bound: {refusal}")
    return decision


def check_function(name: str, scopes: Scopes) -> Decision | None:
    """May ``name`` (as classify renders calls) be called? None: allowed; else the denial."""
    return _function(name, scopes)


def signal_backend(call: str, pid: int | None, backends: frozenset[int]) -> Decision | None:
    """May a session signal backend ``pid`` (None: no pid) with ``call``
    (``pg_terminate_backend``/``pg_cancel_backend``)? Only a backend of its grant's own
    sessions through this proxy (``backends``): with a role the upstream sessions share the
    server would let it signal any of that role's (another agent's, the proxy's). None:
    allowed; else the denial."""
    if pid is not None and pid in backends:
        return None
    what = "the value bound" if pid is None else f"backend {pid}"
    return _deny("deny.function", (
        f"may not execute {call} on {what}: only the backends of this grant's own sessions "
        "through this proxy may be signalled (pg_backend_pid() is the session's)"
    ))  # fmt: skip


def _function(name: str, scopes: Scopes, backends: frozenset[int] = frozenset()) -> Decision | None:
    """None: allowed; else the denial."""
    signalled = signal_target(name)
    if signalled is not None:
        if signalled in (BY_PARAMETER, OWN_BACKEND):
            return None  # the session's own backend, or decided at each Bind by its pin
        return signal_backend(name.partition(":")[0], int(signalled), backends)
    if name.startswith(CURRENT_SETTING_PREFIX):
        setting = name[len(CURRENT_SETTING_PREFIX) :]
        if setting == BY_PARAMETER:
            return None  # decided at each Bind by its pin (``StatementPolicy._decision``)
        d = read_setting(setting, scopes)
        return None if d.allowed else d
    if name.startswith(SET_CONFIG_PREFIX):
        setting = name[len(SET_CONFIG_PREFIX) :]
        if setting == BY_PARAMETER:
            return None  # decided at each Bind by its pin (``StatementPolicy._decision``)
        if setting in FORBIDDEN_SETTINGS:
            return _deny("deny.function", f"may not execute set_config on {setting}")
        # (client_encoding: reported so only with a literal value on the allowlist; the
        # classifier refuses another, and leaves any other value the plain call)
        d = change_setting(setting, "set_config", scopes)
        return None if d.allowed else d
    target = split_name(name) if "." in name or name.startswith('"') else None
    if target is None or target[0] == "pg_catalog":
        bare = target[1] if target is not None else name
        if bare is None:
            return _deny("deny.function", f"may not execute {name}")
        if bare == "current_setting":  # its setting not named by a string literal
            return _deny(
                "deny.function",
                "may not execute current_setting on a setting not named by a string literal",
            )
        if is_dangerous_function(bare):
            why = DANGEROUS_WHY.get(bare)
            return _deny("deny.function", f"may not execute {bare}" + (f": {why}" if why else ""))
        if is_builtin_function(bare):
            return None
        if scopes.allows_function("pg_catalog", bare):
            return None
        return _deny("scope.execute", f"may not execute pg_catalog.{bare}")
    if target[1] is not None and scopes.allows_function(target[0], target[1]):
        return None
    return _deny("scope.execute", f"may not execute {name}")


def _operator(op: str, scopes: Scopes) -> Decision | None:
    """None: allowed. ``op`` is a bare operator name or ``schema.op`` (OPERATOR(s.op))."""
    schema, _, name = op.rpartition(".")
    if schema in ("", "pg_catalog") and name in BUILTIN_OPERATORS:
        return None
    if schema and schema != "pg_catalog":
        target = split_name(schema + ".x")
        if target is not None and scopes.allows_function(target[0], name):
            return None
        return _deny("deny.operator", f"may not use operator {op}")
    return _deny("deny.operator", f"may not use operator {op} (not a built-in operator)")


def _listen(channel: str, scopes: Scopes) -> Decision:
    """LISTEN ``channel`` (as PostgreSQL reads it): the session would receive every payload
    anyone NOTIFYs there, e.g. a trigger's ``pg_notify('chan', NEW.secret)``."""
    shown = render_name(channel) if channel else "a channel"
    if channel and scopes.allows_listen(channel):
        return Decision(True, "scope.listen", f"LISTEN {shown}")
    return _deny(
        "deny.listen",
        f"may not LISTEN on {shown} (notifications carry other sessions' data; "
        "a listen: scope must name the channel)",
    )


def _temp_view(c: Classified, scopes: Scopes) -> Decision | None:
    """A temporary view is the grant's own, but a simple view is updatable: writes to it
    land in the relations it reads, under any name the session gives it later (a rename,
    a failed DROP, a prepared statement analysed again). So one may only show relations the
    grant may write anyway (or temporary ones, or the read-only catalogs)."""
    for rel in sorted(c.reads):
        if rel.startswith(_DEFAULT_READ_PREFIXES):
            continue
        for op in ("insert", "update", "delete"):
            if _relation_write(op, rel, scopes) is not None:
                return _deny(
                    "deny.temp_view",
                    f"may not create a temporary view over {rel}: writes to the view would "
                    f"land in {rel}, which this grant may not {_OP_VERBS[op]}",
                )
    return None


# The session's cursors and prepared statements: their text is code's where code may have
# left one (the engine decides it on the catalog snapshot: ``_code_state_read``).
_CODE_STATE = frozenset({"pg_cursors", "pg_prepared_statements"})

# Why a column of these is refused (pgparse.SENSITIVE_COLUMNS, SETTINGS_ROWS).
_HOLDS = {
    "pg_settings": "every setting, those PostgreSQL shows only to superusers included: "
    "name one setting with WHERE name = '...', or SHOW it",
}


def _relation_read(rel: str, scopes: Scopes) -> Decision | None:
    target = split_name(rel)
    if target is None:
        return _deny("deny.unknown", f"may not read {rel} (unrecognised name)")
    schema, name = target
    if name is not None and "." in name and schema in _READ_ONLY_SCHEMAS:
        # a column that holds code (pgparse.SENSITIVE_COLUMNS): "pg_proc.prosrc"
        base, _, column = name.partition(".")
        if scopes.allows_relation("read", render_name(schema, base)) or base in _CODE_STATE:
            return None  # (_CODE_STATE: decided on the catalog, ``_code_state_read``)
        what = _HOLDS.get(base, "it can hold secrets")
        return _deny(
            "deny.catalog",
            f"may not read {column} of {schema}.{base} ({what}; a read:{schema}.{base} "
            "scope allows it)",
        )
    if schema == "pg_catalog":
        if name in DENIED_CATALOGS:
            return _deny("deny.catalog", f"may not read {rel}")
        if name in ALLOWED_CATALOGS or scopes.allows_relation("read", rel):
            return None
        return _deny("deny.catalog", f"may not read {rel}")
    if schema == "information_schema":
        if name in DENIED_INFORMATION_SCHEMA:
            return _deny("deny.catalog", f"may not read {rel}")
        return None
    if schema == "pg_temp":
        return None
    if scopes.allows_relation("read", rel):
        return None
    return _deny("scope.read", f"may not read {rel}")


# A write or DDL reading its target's rows (pgparse._observes_target and
# _ddl_observed) without a read scope on it: what the denial says, so the agent
# knows which scope is missing.
_OBSERVED = (
    "{reason}: the statement reads the rows of a relation it changes (a WHERE, RETURNING, "
    "a SET value naming a column, ON CONFLICT ... DO UPDATE or MERGE conditions; DDL "
    "checking or computing an expression over its rows, or handing them to a trigger, a "
    "rule or another table), which needs read:{rel} as well as the write or ddl scope"
)


def check_read(rel: str, scopes: Scopes) -> Decision | None:
    """May ``rel`` be read? None: yes."""
    return _relation_read(rel, scopes)


def check_write(op: str, rel: str, scopes: Scopes) -> Decision | None:
    """May ``op`` (insert, update, delete, truncate, lock) be done to ``rel``? None: yes."""
    return _relation_write(op, rel, scopes)


def _relation_write(op: str, rel: str, scopes: Scopes) -> Decision | None:
    target = split_name(rel)
    schema = target[0] if target is not None else ""
    if schema in _READ_ONLY_SCHEMAS:
        return _deny("deny.catalog", f"may not {_OP_VERBS[op]} {rel}")
    if schema == "pg_temp" or scopes.allows_relation(op, rel):
        return None
    return _deny(_OP_RULES[op], f"may not {_OP_VERBS[op]} {rel}")


# CREATE TABLE ... (LIKE t INCLUDING DEFAULTS/CONSTRAINTS/GENERATED/INDEXES/STATISTICS)
# is an insert of t (policy.classify.collector, pgparse._Walk.table_like)
_LIKE_COPIES = (
    "{reason}: CREATE TABLE ... (LIKE {rel} INCLUDING DEFAULTS, CONSTRAINTS, GENERATED, "
    "INDEXES, STATISTICS or ALL) copies its expressions, which then run on the new table's "
    "writes as on its own (an insert scope on {rel} allows it; LIKE {rel} without those "
    "options needs only read)"
)
_NAMED_PREPARED = frozenset({"PREPARE", "EXECUTE", "DEALLOCATE"})
# Statement and portal names the relay gives its own statements upstream (proxy.denials:
# ``pgw_<nonce>_...``): a client that learns one (pg_prepared_statements, an error) may
# not Parse, Bind, PREPARE, EXECUTE or DEALLOCATE under it (red-team round 14).
RESERVED_PREFIX = "pgw_"


def reserved_name(what: str) -> Decision:
    """The refusal of a statement name of the proxy's own (``RESERVED_PREFIX``)."""
    return _deny("deny.utility", f"may not use {what}: names starting with {RESERVED_PREFIX} "
                 "are the proxy's own")


def decide(
    classified: Classified, scopes: Scopes, backends: frozenset[int] = frozenset()
) -> Decision:
    """Allow or deny one classified statement under ``scopes`` (pure). ``backends``: the
    pids of the grant's own sessions' backends, the only ones a signal call may name."""
    c = classified
    S = StatementClass
    cls = c.cls
    if (chore := housekeeping(c)) is not None:
        return Decision(True, "default.housekeeping", chore)
    if c.command in _NAMED_PREPARED and c.detail.lower().startswith(RESERVED_PREFIX):
        return reserved_name(f"{c.command} {c.detail}")
    if cls is S.UNKNOWN:
        if c.detail.startswith(DISAGREE):
            # the two parsers read the statement differently: never allowed, not even by
            # unknown:* (one reading may hide what the other shows)
            return _deny(DISAGREE, f"may not run a statement the parsers read differently: {c.detail}")
        if BARRIER_LOWERED in c.detail:
            # not even unknown:* allows it (PostgreSQL's reading refused it: pgparse)
            return _deny("deny.view", f"may not run {c.command}: {BARRIER_LOWERED}")
        if c.command == "LISTEN":
            # not even unknown:* allows it: the channel it would receive is not known
            return _deny(
                "deny.listen", f"may not run a LISTEN whose channel is not recognised: {c.detail}"
            )
        if scopes.unknown:
            return Decision(True, "scope.unknown", f"unclassified {c.command} allowed by unknown:*")
        if c.command == "EXECUTE":
            return _deny(
                "deny.execute",
                f"may not EXECUTE {c.detail}: it was not prepared (and checked) in this session",
            )
        detail = f": {c.detail}" if c.detail else ""
        return _deny("deny.unknown", f"may not run an unrecognised {c.command} statement{detail}")
    if cls is S.TRANSACTION:
        return Decision(True, "default.transaction", c.command)
    if cls is S.ROLE:
        return _deny("deny.role", f"may not run {c.command} (roles and privileges)")
    if cls is S.SESSION_SET:
        return _setting(c, scopes)
    if cls is S.FUNCTION:
        if c.command == "DO":
            return _deny("deny.do", "may not run DO blocks")
        return _deny("deny.call", f"may not CALL {c.detail or 'procedures'}")
    if cls is S.UTILITY:
        if c.command == "COPY":
            if c.detail.endswith("program"):
                return _deny("deny.copy_program", "may not run COPY ... PROGRAM")
            return _deny("deny.copy_file", "may not COPY to or from server files")
        if c.command == "LISTEN":
            return _listen(c.detail, scopes)
        if c.command in _ALLOWED_UTILITY:
            return Decision(True, _ALLOWED_UTILITY[c.command], c.command)
        if c.detail == "replication":
            return _deny("deny.replication", f"may not run replication command {c.command}")
        rule, reason = _DENIED_UTILITY.get(c.command, ("deny.utility", f"may not run {c.command}"))
        return _deny(rule, reason)

    # READ / WRITE / DDL: functions and operators, then writes, then reads
    for fn in sorted(c.functions):
        denial = _function(fn, scopes, backends)
        if denial is not None:
            return denial
    for op in sorted(c.operators):
        denial = _operator(op, scopes)
        if denial is not None:
            return denial
    if c.cls is S.DDL and any(w in c.command for w in _ROUTINE_WORDS):
        for _op, rel in sorted(c.write_ops):
            if rel.startswith("pg_temp.") and not scopes.allows_relation("ddl", rel):
                return _deny(
                    "deny.temp_routine",
                    f"may not {c.command} {rel}: functions, procedures and operators in "
                    "pg_temp need an explicit ddl:pg_temp scope",
                )
    for op, rel in sorted(c.write_ops):
        if op == "ddl" and rel.startswith("pg_temp.pg_"):
            # PostgreSQL searches pg_temp before pg_catalog for relations: a temporary
            # pg_class would be what every unqualified pg_class means, to the server, not
            # to the policy (which reads pg_* as pg_catalog's: object-text pins included)
            return _deny(
                "deny.temp",
                f"may not make {rel}: a temporary relation named like a catalog (pg_*) would "
                "stand for that catalog in every unqualified name of this session",
            )
        denial = _relation_write(op, rel, scopes)
        if denial is not None:
            if c.cls is S.DDL and op == "insert" and c.command == "CREATE TABLE":
                return _deny(denial.rule, _LIKE_COPIES.format(reason=denial.reason, rel=rel))
            return denial
    if c.cls is S.DDL and "VIEW" in c.command and any(
        op == "ddl" and rel.startswith("pg_temp.") for op, rel in c.write_ops
    ):
        denial = _temp_view(c, scopes)
        if denial is not None:
            return denial
    for rel in sorted(c.reads):
        denial = _relation_read(rel, scopes)
        if denial is not None:
            if denial.rule == "scope.read" and any(
                r == rel and op != "lock" for op, r in c.write_ops
            ):
                return _deny(denial.rule, _OBSERVED.format(reason=denial.reason, rel=rel))
            return denial
    ops = {op for op, rel in c.write_ops if not rel.startswith("pg_temp.")}
    if "ddl" in ops:
        rule = "scope.ddl"
    elif ops:
        rule = "scope.truncate" if ops == {"truncate"} else "scope.write"
    elif any(not r.startswith(_DEFAULT_READ_PREFIXES) for r in c.reads):
        rule = "scope.read"
    elif c.write_ops or any(r.startswith("pg_temp.") for r in c.reads):
        rule = "default.temp"
    elif c.reads:
        rule = "default.catalog"
    else:
        rule = "default.no_relations"
    touched = sorted(c.reads | c.writes)
    reason = f"{c.command} of {', '.join(touched)}" if touched else c.command
    return Decision(True, rule, reason)
