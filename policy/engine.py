"""``StatementPolicy``: one per session (grant); cached checks the proxy calls per message."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from hashlib import blake2b
from time import monotonic
from typing import Any, Final, NoReturn, TypeVar

from policy.caches import (
    MAX_SESSION_TEXT,
    MAX_SHARED_TEXT,
    SHARED,
    Entry,
    Pair,
    SessionCaches,
    SharedClassifications,
    opens_ddl,
    with_sql,
)
from policy.catalog import (
    FIRST_NORMAL_OID,
    RENAMED_TO,
    Snapshot,
    attribute_calls,
    called_name,
    code_ran,
    describe_refusal,
    merge_defined,
    rests_on_completeness,
    shadowing_calls,
    stale_refusal,
    with_defined,
    without_columns,
)
from policy.classify import Classified, StatementClass, classify_statement
from policy.classify.catalogue import (
    BY_PARAMETER,
    CAST_SPEC_END,
    CURRENT_SETTING_PREFIX,
    PARAMETER_PINS,
    SET_CONFIG_PREFIX,
    SETTING_PINS,
    SIGNAL_FUNCTIONS,
    is_builtin_function,
    signal_target,
)
from policy.classify.crosscheck import (
    boundaries_agree,
    function_names,
    pg_readings,
    token_signature,
)
from policy.classify.metadata import bound_pid, bound_pins, bound_setting_refs
from policy.classify.pgparse import (
    ANY_RELATION,
    DERIVED_ROWS,
    LIKED,
    made_sequences,
    removed_columns,
    renamed_relations,
    restrict_cascade,
    syntax_error,
    temp_creation,
)
from policy.decide import (
    RESERVED_PREFIX,
    UNDEFINED_TABLE,
    Decision,
    bound_setting,
    check_function,
    check_read,
    check_write,
    decide,
    reserved_name,
    signal_backend,
)
from policy.lexer import collapse_values, lex, render_name
from policy.number_shapes import ZERO_DIGITS
from policy.portals import UNDEFINED_CURSOR, Refusal, SessionPortals
from policy.prepared import NAME_BYTES, STATEFUL_COMMANDS, PreparedNames, name_too_long
from policy.scopes import Scopes, split_name

__all__ = [
    "OFFLOAD_MIN",
    "SHARED",
    "ShapeVerdict",
    "SharedClassifications",
    "StatementPolicy",
    "Verdict",
    "classify_text",
    "exact",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool  # False only when enforcing and some statement is denied
    decisions: tuple[Pair, ...]
    message: str  # client-facing 42501 text (names task, rule, relation); "" if allowed
    would_deny: bool = False  # dry-run: a deny that was not enforced


@dataclass(frozen=True)
class SyntaxVerdict(Verdict):
    """A refusal of text PostgreSQL's own parser rejects: the server would have answered
    it with this syntax error, so the client gets that (SQLSTATE 42601, the parser's
    message), not a privilege error; an agent fixes its SQL by it."""

    sqlstate = "42601"


@dataclass(frozen=True)
class UndefinedCursorVerdict(Verdict):
    """A refusal of a cursor or portal the client did not make (policy/portals.py): to the
    client it does not exist, and the server would say so for a name it does not hold
    (SQLSTATE 34000, ``portals.UNDEFINED_CURSOR``); the message says why."""

    sqlstate = "34000"


@dataclass(frozen=True)
class UndefinedTableVerdict(Verdict):
    """A refusal of a name no relation is known by outside the temporary schema, where code
    may make temporary relations (``StatementPolicy._temp_of_code``): the server answers an
    honest client's such name with SQLSTATE 42P01 (``UNDEFINED_TABLE``), which drivers map
    to their own exception; the message says why the proxy refused it."""

    sqlstate = UNDEFINED_TABLE


@dataclass(frozen=True)
class ShapeVerdict(Verdict):
    """The allowed verdict of every text of one number shape (``_from_shape``): one object
    per shape and session, made when the shape is remembered, so a hit allocates nothing.
    Its statement's text is the first text of the shape the session saw; every other field
    is what each text of the shape gets (the tier's premise: docs/decisions.md, "PostgreSQL's
    scanner and the number-shape tier"). What needs a text's own statement (a record of
    it) asks ``exact``: the statement is that text from ``lead`` characters to ``tail``
    before its end."""

    lead: int = 0
    tail: int = 0


def exact(verdict: Any, sql: str) -> Any:
    """``verdict``, whose simple Query text was ``sql``, with its statements' own texts: a
    ``ShapeVerdict`` as ``Verdict(True, ((classified of the text, decision),), "")``; any
    other verdict (or a relay's refusal: hence ``Any``) is already so."""
    if type(verdict) is not ShapeVerdict:
        return verdict
    shaped: ShapeVerdict = verdict
    classified, decision = shaped.decisions[0]
    text = sql[shaped.lead : len(sql) - shaped.tail]
    return _allowed(((with_sql(classified, text), decision),))


def _shape_verdict(pair: Pair, lead: int, tail: int) -> Verdict:
    return ShapeVerdict(True, (pair,), "", False, lead, tail)


class CatalogWait(Exception):
    """Raised inside a check: the decision rests on the catalog snapshot listing every
    object of a kind, and the snapshot was loaded before the statement arrived."""


def _syntax_error(pairs: tuple[Pair, ...]) -> str | None:
    """PostgreSQL's syntax error for the first statement its parser rejects, if any."""
    for classified, decision in pairs:
        if not decision.allowed and classified.sql:
            error = syntax_error(classified.sql)
            if error is not None:
                return error
    return None


# What a check answers then (``check_query``, ``check_parse``): the proxy holds the
# statement, reloads the catalog (``on_stale``) and checks it again (proxy.relay parks it).
# protocol-level statements a session's policy remembers by name (_remember_statement)
MAX_REMEMBERED_STATEMENTS = 4096
# DDL that defines code others may already call (StatementPolicy._defines_code)
_DEFINES_CODE = frozenset(("CREATE FUNCTION", "CREATE PROCEDURE"))
# SELECT of plain constants, nothing else: what converts nothing (``_converts_nothing``)
_CONSTANT = r"(?:[0-9]+(?:\.[0-9]+)?|'[^']*'|true|false|null)"
_CONSTANTS_ONLY = re.compile(
    rf"\s*select\s+{_CONSTANT}(?:\s*,\s*{_CONSTANT})*\s*;?\s*", re.IGNORECASE
)


def _converts_nothing(c: Classified) -> bool:
    """Is ``c`` a SELECT of plain constants alone (``SELECT 1``, a driver's health check)?
    ``Classified.types`` leaves system types out (``7::smallint::pg_catalog.text`` names
    none: round 28), and a typed literal in a boolean context converts with no cast
    written (``SELECT NOT smallint '7'``: round 29), so only the text itself can say."""
    return c.cls is StatementClass.READ and _CONSTANTS_ONLY.fullmatch(c.sql) is not None


# statements an event trigger may fire on (DDL, GRANT/REVOKE; what unknown:* allows)
_FIRES_EVENT_TRIGGERS = frozenset({StatementClass.DDL, StatementClass.ROLE, StatementClass.UNKNOWN})
# what a dry run's refused statement of these classes does, the policy cannot follow (a DO
# block, a CALL, an unrecognised statement, a role's, a utility's: LOAD, COPY ... PROGRAM):
# when it runs anyway, it counts as code that may run DDL (``_decide``)
# (DDL the policy recognises is followed as an allowed one is: ``opens_ddl``, what it defines)
_RUNS_ANYTHING = frozenset({
    StatementClass.UNKNOWN, StatementClass.FUNCTION, StatementClass.ROLE, StatementClass.UTILITY,
})  # fmt: skip
# statements that evaluate expressions (a cast between system types may run in any)
_EVALUATES = frozenset({
    StatementClass.READ, StatementClass.WRITE, StatementClass.DDL, StatementClass.FUNCTION,
    StatementClass.UTILITY, StatementClass.UNKNOWN,
})
# what a write of each kind does to a parent's children (_through_inheritance)
_INHERITED_VERBS = {
    "update": "update", "delete": "delete from", "truncate": "truncate", "lock": "lock",
    "ddl": "alter",
}  # fmt: skip
CATALOG_WAIT: Final = Verdict(False, (), "waiting for a catalog snapshot loaded after the statement")


# An allowed verdict from a cache hit, ``Verdict(True, pairs, "")``, built slot by slot:
# the frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, and
# mypyc does not make a frozen dataclass a native class, so compiled or not that costs
# twice as much (0.44 against 0.20 µs compiled) for the same object
# (tests/unit/test_engine_cached.py compares the two). ``Verdict.__new__``: a compiled
# module may not call ``object.__new__`` on a class it defines.
if tuple(f.name for f in fields(Verdict)) != ("allowed", "decisions", "message", "would_deny"):
    raise ImportError("policy.engine._allowed must follow Verdict's fields")  # pragma: no cover
_new = Verdict.__new__
_set_allowed = vars(Verdict)["allowed"].__set__
_set_decisions = vars(Verdict)["decisions"].__set__
_set_message = vars(Verdict)["message"].__set__
_set_would_deny = vars(Verdict)["would_deny"].__set__


def _allowed(pairs: tuple[Pair, ...]) -> Verdict:
    """``Verdict(True, pairs, "")``."""
    verdict = _new(Verdict)
    _set_allowed(verdict, True)
    _set_decisions(verdict, pairs)
    _set_message(verdict, "")
    _set_would_deny(verdict, False)
    return verdict


# Functions that build a value of their first argument's row type from other input.
_POPULATE = frozenset(
    {"json_populate_record", "jsonb_populate_record", "json_populate_recordset",
     "jsonb_populate_recordset", "populate_record"}
)  # fmt: skip


# calls whose setting (``policy.classify.catalogue.BY_PARAMETER``) or backend a parameter
# names
_BY_PARAMETER = frozenset(
    {CURRENT_SETTING_PREFIX + BY_PARAMETER, SET_CONFIG_PREFIX + BY_PARAMETER}
    | {f"{call}:{BY_PARAMETER}" for call in SIGNAL_FUNCTIONS}
)


def _setting_pins(describes: frozenset[str]) -> frozenset[str]:
    """The "param:" pins of settings or backends a parameter names (decided at Bind:
    ``check_bind``)."""
    return frozenset(
        d for d in describes if d.startswith("param:") and d.rpartition("@")[2] in PARAMETER_PINS
    )


def _settings_by_parameter(c: Classified, settings: frozenset[str]) -> Decision | None:
    """A statement calling ``current_setting``/``set_config`` on a setting, or
    ``pg_terminate_backend``/``pg_cancel_backend`` on a backend, a parameter names: allowed
    at its Parse only where that parameter is the Bind's, which decides it (``check_bind``).
    Not in a SQL-level PREPARE (its EXECUTE's values are not checked), nor in DDL (a
    function body's ``$1`` is the function's argument); and only where PostgreSQL's reading
    pinned the call the decision names (either alone: refused)."""
    calls = c.functions & _BY_PARAMETER
    names = ", ".join(sorted({call.partition(":")[0] for call in calls})) or "a call"
    pinned = {pin.rpartition("@")[2] for pin in settings}
    if not calls or not settings or not {call.partition(":")[0] for call in calls} <= pinned:
        return Decision(False, "deny.function", (
            f"may not execute {names} on a setting or backend not named by a literal"
        ))  # fmt: skip
    if c.command == "PREPARE" or c.cls is StatementClass.DDL:
        return Decision(False, "deny.function", (
            f"may not execute {names} on a setting or backend named by a parameter here: "
            "only a protocol-level Parse's parameter, decided at each Bind, may name it "
            "(not a SQL PREPARE's, whose EXECUTE is not checked, nor a function's argument)"
        ))  # fmt: skip
    return None


_CAST_SETTING = Decision(False, "deny.function", (
    "may not name a setting by a parameter cast to text or varchar where the statement "
    "declares a parameter of another type: leave it untyped or declare it text"
))  # fmt: skip


def _casts_a_setting_parameter(verdict: Verdict) -> bool:
    """Does a statement of ``verdict`` name a setting by a parameter cast to text or varchar
    (a pin whose spec ends in ``CAST_MARK``: ``pgparse._setting_param``)?"""
    return any(
        entry.startswith("param:") and entry.partition("@")[0].endswith(CAST_SPEC_END)
        for c, _d in verdict.decisions for entry in c.describes
    )  # fmt: skip


def _names_a_pid(c: Classified) -> bool:
    """Does ``c`` signal a backend named by a literal? Its decision depends on the sessions
    open when it runs (``StatementPolicy.own_backends``): never cached."""
    return any((signal_target(fn) or "").isdigit() for fn in c.functions if ":" in fn)


def _signals_a_pid(pairs: tuple[Pair, ...]) -> bool:
    return any(_names_a_pid(c) for c, _d in pairs)


def _parameter_pins(verdict: Verdict) -> tuple[Classified, tuple[str, ...]] | None:
    """The statement's parameter pins (``Classified.describes`` entries "param:..."), with
    its classification; None if none."""
    for c, _d in verdict.decisions:
        if not c.describes:
            continue
        pins = tuple(sorted(d for d in c.describes if d.startswith("param:")))
        if pins:
            return c, pins
    return None


def _key(fingerprint: str, text: str, collapsed: bool = False) -> str | None:
    """The fingerprint caches' key for a statement: its fingerprint (the proxy's lexer) and
    PostgreSQL's scanner's reading without literal values (``token_signature``), so that a
    hit is a text PostgreSQL tokenizes as the one classified, whatever the proxy's lexer
    got wrong about where a literal ends. None: the scanner refused it (not cached). A
    collapsed statement (``collapse_values``) is plain text the lexer reads exactly, and
    its rows are left out on purpose (one entry for every batch size)."""
    if collapsed:
        return fingerprint + "\x00"
    signature = token_signature(text)
    if signature is None:
        return None
    return fingerprint + "\x00" + blake2b(signature.encode(), digest_size=16).hexdigest()


def _LONG_NAME(name: str) -> Decision:  # noqa: N802 - a denial, named as the others
    return Decision(
        False, "deny.name",
        f"may not use statement name {name[:40]!r}...: longer than {NAME_BYTES} bytes, which "
        "PostgreSQL truncates (two names would be one statement to the server)",
    )  # fmt: skip


def _may_write(pairs: tuple[Pair, ...]) -> bool:
    """May ``pairs`` write rows: a row write of their own, or code they run (a call, an
    operator, a value of a user type, SQL EXECUTE of a PREPARE: round 37, a function's
    INSERT)?"""
    for c, _d in pairs:
        if c.functions or c.operators or c.types or c.attributes or c.command == "EXECUTE":
            return True
        for op, _r in c.write_ops:
            if op in _ROW_WRITES:
                return True
    return False


def _bind_of(name: str) -> Classified:
    """What a refused Bind of statement ``name`` is recorded as, its text not at hand."""
    return Classified("", StatementClass.UNKNOWN, "BIND", frozenset(), frozenset(), frozenset(), name)


def _execute_of(portal: str) -> Classified:
    """What a protocol Execute of ``portal`` is recorded as (``check_execute``)."""
    return Classified("", StatementClass.UNKNOWN, "EXECUTE PORTAL", frozenset(), frozenset(), frozenset(), portal)


_EXECUTE_ALLOWED = Verdict(True, ((_execute_of(""), Decision(
    True, "default.cursor", "a portal the client bound or declared",
)),), "")  # fmt: skip


def _portal_key(portal: bytes) -> str:
    """A protocol portal's name for ``SessionPortals`` (ASCII as it is; any other byte
    stays non-ASCII, which it never takes for the client's)."""
    return portal.decode("latin-1")


def _reads_portals(pairs: tuple[Pair, ...]) -> bool:
    """Does a statement read, make or close a cursor (followed at each Bind where the
    database holds code that may open cursors: ``StatementPolicy._watch_portals``)?"""
    return any(c.command in _PORTAL_COMMANDS for c, _d in pairs)


# a fast-path FunctionCall a dry run lets through (``check_function_call``): which function
# (by OID) is not read, so it counts as one that may do anything
_FUNCTION_CALL = Classified(
    "", StatementClass.UNKNOWN, "FunctionCall", frozenset(), frozenset(), frozenset()
)


def _calls_user_code(c: Classified, snap: Snapshot) -> bool:
    """Does ``c`` call a user-written function the snapshot knows (by its name as written,
    qualified or bare)?"""
    user = snap.user_functions
    return any(
        fn in user or fn.rpartition(".")[2] in user or called_name(fn) in user
        for fn in c.functions
    )


def _unfollowed_ddl(c: Classified, d: Decision) -> bool:
    """May DDL ``c`` attach code the policy did not decide? ``CREATE TABLE ... PARTITION OF
    p`` or ``INHERITS (p)`` (two relations it changes by DDL: p's row triggers are cloned,
    its CHECKs and DEFAULTs inherited: red-team round 59), what ``unknown:*`` allows, and
    user-written code that may run DDL (what it makes is unseen)."""
    if c.cls is StatementClass.DDL:
        return c.command == "CREATE TABLE" and sum(1 for op, _r in c.write_ops if op == "ddl") > 1
    return (c.cls is StatementClass.UNKNOWN and d.allowed) or d.opens_ddl


def _ddl_reach(
    snap: Snapshot, command: str, rel: str, only: bool = False
) -> list[tuple[str, str]]:
    """What DDL ``command`` of ``rel`` changes or drops beyond it, in the order decided:
    (object, the denial's words if the grant may not change it): extended statistics objects
    of other schemas on it, its partitions' or descendants' (an ALTER or DROP), its
    partitions (not for ``CREATE INDEX ... ON ONLY``, ``only``: an index of the parent
    alone, red-team round 92's transparency), and other relations with columns of its type
    (an ALTER TABLE or TYPE)."""
    out: list[tuple[str, str]] = []
    partitions = () if only and command == "CREATE INDEX" else snap.partitions.get(rel, ())
    if snap.statistics and command.startswith(("ALTER", "DROP")):
        for owner in (rel, *partitions, *snap.descendants.get(rel, ())):
            out.extend((stat, (
                f"may not change the definition of {rel}: the extended statistics object "
                f"{stat} on {owner} goes with its columns"
            )) for stat in sorted(snap.statistics.get(owner, ())))  # fmt: skip
    out.extend(
        (part, f"may not change the definition of {rel}: its partition {part} changes with it")
        for part in sorted(partitions)
    )
    if command in ("ALTER TABLE", "ALTER TYPE"):
        out.extend((user, (
            f"may not alter {rel}: columns of {user} are of its type, and their stored "
            "values would change with it"
        )) for user in sorted(snap.type_users.get(rel, ())) if user != rel)  # fmt: skip
    return out


# DDL that attaches no code a plan prints when it names one relation and no user-written
# function or type (not ``LIKE``, ``INHERITS``, ``PARTITION OF``, a sequence's default):
# what drivers' tests run before an EXPLAIN in one transaction (asyncpg's ``CREATE TABLE
# mytab (a int)``)
_PLAIN_DDL = frozenset({
    "CREATE TABLE", "ALTER TABLE", "CREATE INDEX", "DROP TABLE", "DROP INDEX", "CREATE SCHEMA",
    "CREATE SEQUENCE", "ALTER SEQUENCE", "DROP SEQUENCE",
})  # fmt: skip


def _attaches_code(pairs: tuple[Pair, ...], snap: Snapshot | None) -> bool:
    """May the DDL among ``pairs`` attach code a plan prints, or make what a plan reads
    through (a default calling a user-written function, a domain, a cast, a view, a copied
    definition)? Fail closed: anything but ``_PLAIN_DDL`` naming only built-ins may."""
    for c, d in pairs:
        if not opens_ddl(((c, d),)):
            continue
        if c.command not in _PLAIN_DDL or snap is None or len(c.reads | c.writes) > 1:
            return True
        for typ in c.types:
            parts = split_name(typ)
            if (parts[0] != "pg_catalog") if parts is not None else typ in snap.user_types:
                return True
        if c.attributes or any(_user_operator(op, snap) for op in c.operators):
            return True  # (a call with column syntax, an operator's function: round 68)
        for fn in c.functions:
            parts = split_name(fn)
            if parts is not None:  # qualified: only pg_catalog's are built-ins
                if parts[0] != "pg_catalog":
                    return True
            elif called_name(fn) in snap.user_functions or not is_builtin_function(called_name(fn)):
                return True
    return False


def _names_made(c: Classified) -> set[str]:
    """The names a CREATE or ALTER (a rename) gives relations and types outside pg_temp."""
    if not c.command.startswith(("CREATE", "ALTER")):
        return set()
    out: set[str] = set()
    for op, rel in c.write_ops:
        parts = split_name(rel)
        if op == "ddl" and parts is not None and parts[0] != "pg_temp" and parts[1]:
            out.add(parts[1])
    if c.command.startswith(("CREATE TABLE", "ALTER TABLE")):
        out.update(seq for schema, _t, seq in made_sequences(c.sql)
                   if schema != "pg_temp" and seq != LIKED)  # fmt: skip
    return out


_PORTAL_COMMANDS = frozenset({"DECLARE", "FETCH", "MOVE", "CLOSE"})
_CURSORS_TEXT = render_name("pg_catalog", "pg_cursors.statement")
_CODE_STATE_READS = frozenset(
    {_CURSORS_TEXT, render_name("pg_catalog", "pg_prepared_statements.statement")}
)


def _user_operator(op: str, snap: Snapshot) -> bool:
    """May operator ``op`` (as classify renders it: ``OPERATOR(s.##)`` as ``s.##``) run a
    user-written function? Written qualified, unless pg_catalog's (red-team round 68: the
    snapshot knows user operators by their bare names); bare, if one is named so."""
    schema, dot, bare = op.rpartition(".")
    if dot and schema:
        return schema.strip('"') != "pg_catalog" or bare in snap.user_operators
    return op in snap.user_operators


_EXPLAIN_AFTER_DDL = Decision(
    False, "deny.catalog",
    "may not EXPLAIN a statement after DDL in the same message (the plan may print code the "
    "DDL attaches, which the proxy's catalog shows only once it ran): send it after",
)


def _explains_after_ddl(pairs: tuple[Pair, ...], snap: Snapshot | None) -> tuple[Pair, ...]:
    """``pairs`` with each allowed EXPLAIN after DDL that may attach code
    (``_attaches_code``) refused (``_EXPLAIN_AFTER_DDL``; red-team round 64)."""
    if not any(c.command.startswith("EXPLAIN") for c, _d in pairs[1:]):
        return pairs
    out: list[Pair] = []
    ddl = False
    for c, d in pairs:
        if ddl and d.allowed and c.command.startswith("EXPLAIN"):
            d = _EXPLAIN_AFTER_DDL
        out.append((c, d))
        ddl = ddl or _attaches_code(((c, d),), snap)
    return tuple(out)


def _views_made(c: Classified) -> dict[str, frozenset[str]]:
    """A CREATE [OR REPLACE] VIEW's view -> the relations its query reads; else empty."""
    if c.command != "CREATE VIEW":
        return {}
    return {name: c.reads for op, name in c.write_ops if op == "ddl"}


def _reads_user_relations(c: Classified) -> bool:
    """Does ``c`` read a relation outside the system schemas? On a snapshot another
    session's DDL made stale, what it is (a table, a view renamed into its name), what
    inherits from it, its indexes' operator classes may all have changed (red-team rounds
    52, 53)."""
    return any(not rel.startswith(("pg_catalog.", "information_schema.")) for rel in c.reads)


def _relation_casts(snap: Snapshot, own_login: bool) -> dict[str, frozenset[str]]:
    """``snap.relation_casts`` as they apply to a session that logs in as the proxy's login,
    or (``own_login``) as a role of its own, for which every row security policy counts."""
    role = snap.relation_casts_role
    return role if own_login and role is not None else snap.relation_casts


def _may_remove_columns(c: Classified) -> bool:
    """Can DDL ``c`` rename or drop columns, rename relations or drop them (what a later
    CREATE of the name makes known by that name is another relation's: red-team round 25)
    (``pgparse.removed_columns`` and ``renamed_relations`` say which)? An unrecognised ALTER
    or DROP too (``unknown:*`` may allow one: ``ALTER TABLE ... SET SCHEMA``)."""
    return (c.cls is StatementClass.DDL or c.cls is StatementClass.UNKNOWN) and (
        c.command.startswith("ALTER") or c.command.startswith("DROP")
    )


def _defined_functions(c: Classified) -> dict[str, frozenset[str]]:
    """The functions and procedures a DDL statement creates or replaces, {bare name:
    {"schema.name"}}: from then on an unqualified call of that name may run them."""
    if c.cls is not StatementClass.DDL or ("FUNCTION" not in c.command and "PROCEDURE" not in c.command):
        return {}
    out: dict[str, frozenset[str]] = {}
    for op, rel in c.write_ops:
        target = split_name(rel) if op == "ddl" else None
        if target is not None and target[1] is not None:
            bare = render_name(target[1])
            out[bare] = out.get(bare, frozenset()) | {rel}
    return out


def _temp_made(c: Classified) -> frozenset[str]:
    """The temporary relations (and types) DDL ``c`` may make, by bare rendered name
    (``CREATE TEMP TABLE|VIEW|SEQUENCE``, ``... AS``, ``SELECT INTO TEMP``, ``pg_temp.x``,
    a rename into ``pg_temp``): PostgreSQL searches ``pg_temp`` before the search path."""
    if c.cls is not StatementClass.DDL:
        return _NO_NAMES
    return frozenset(
        rel[len(_TEMP_PREFIX):] for op, rel in c.write_ops
        if op == "ddl" and rel.startswith(_TEMP_PREFIX)
    )  # fmt: skip


_TEMP_PREFIX = "pg_temp."
# Settings whose value code cannot make carry what it read: fixed by the server, or one of
# a few choices (a boolean, an enumeration). Where code may set settings (``encoding_code``:
# ``set_config``, ``EXECUTE``, another procedural language), only these are read
# (``_setting_of_code``).
_CODE_PROOF_SETTINGS: Final = frozenset((
    "server_version", "server_version_num", "server_encoding", "integer_datetimes",
    "is_superuser", "in_hot_standby", "transaction_isolation", "default_transaction_isolation",
    "transaction_read_only", "default_transaction_read_only", "transaction_deferrable",
    "default_transaction_deferrable", "standard_conforming_strings", "datestyle",
    "intervalstyle", "client_encoding", "bytea_output", "lc_collate", "lc_ctype",
    "max_identifier_length", "block_size", "escape_string_warning", "xmloption",
    "xmlbinary", "synchronous_commit", "row_security", "max_connections", "jit",
))  # fmt: skip


_SETTINGS_WORD: Final = re.compile(r"settings", re.IGNORECASE)


def _setting_of_code(c: Classified) -> Decision | None:
    """Where user-written code may set settings (``Snapshot.encoding_code``): a read of one
    whose value can carry what the code read (``application_name``, ``TimeZone``, a
    ``search_path``, a number: ``set_config('application_name', secret, false)`` in a
    trigger of a table the grant writes) is refused, by SHOW, ``current_setting`` or
    ``pg_settings`` (red-team round 79; the relay withholds what the server reports of
    them too)."""
    names: list[str] = []
    if c.command == "SHOW":
        names.append(c.detail)
    elif c.command.startswith("EXPLAIN") and _SETTINGS_WORD.search(c.sql):
        # EXPLAIN (SETTINGS) lists every setting changed from its default (round 80: a
        # search_path code set from a tenant's row); the word anywhere: fail closed
        names.append("all")
    if "pg_catalog.pg_stat_activity" in c.reads:
        # the session's own row (``default.housekeeping``) shows its application_name
        names.append("application_name")
    for f in c.functions:
        if f.startswith(CURRENT_SETTING_PREFIX):
            name = f[len(CURRENT_SETTING_PREFIX) :]
            if name != BY_PARAMETER:  # (decided at each Bind on the name bound)
                names.append(name)
        elif f == "pg_show_all_settings" or f == "pg_catalog.pg_show_all_settings":
            names.append("all")
    for rel in c.reads:
        if rel == "pg_catalog.pg_settings" or rel.startswith("pg_catalog.pg_settings."):
            names.append("all")
    for name in names:
        denial = _read_of_code(name)
        if denial is not None:
            return denial
    return None


def _read_of_code(name: str) -> Decision | None:
    """A read of setting ``name`` ("all": every one) where code may set settings: None if
    its value cannot carry what code read (``_CODE_PROOF_SETTINGS``)."""
    if name.lower() in _CODE_PROOF_SETTINGS:
        return None
    shown = "every setting" if name == "all" else f"setting {name}"
    return Decision(False, "deny.setting_read", (
        f"may not read {shown}: code in this database may set it (set_config, EXECUTE, "
        "another procedural language) to a value it read"))  # fmt: skip

_CATALOG_SCHEMAS = frozenset(("pg_catalog", "information_schema"))
# (``_claim_temps``) the statements that undo what the open transaction made
_UNDOING: Final = frozenset(("ROLLBACK", "ROLLBACK TO SAVEPOINT", "ABORT", "PREPARE TRANSACTION"))
_T = TypeVar("_T")
_EVERY_NAME = "\x00all"  # no statement name holds a NUL
_NO_NAMES: frozenset[str] = frozenset()


# Longer statements have their VALUES rows of literals cut to the first before they are
# classified (fingerprint.collapse_values): a bulk INSERT costs what a one-row one does.
_COLLAPSE_MIN = 1024

# Statements at least this long are classified off the event loop (proxy/offload.py):
# both parsers are linear, but a 700 KB statement still costs seconds of CPU.
OFFLOAD_MIN: Final = 64 * 1024


def classify_text(sql: str, search_path: tuple[str, ...]) -> tuple[Classified, ...]:
    """Every statement of ``sql`` classified afresh, as ``_classify`` would (pure: runs in
    another process for large statements; nothing cached)."""
    stmts = lex(sql)
    pgs = pg_readings(sql, len(stmts)) if stmts else []
    out = []
    for stmt, pg in zip(stmts, pgs, strict=True):
        collapsed = collapse_values(stmt) if len(stmt.sql) > _COLLAPSE_MIN else None
        out.append(classify_statement(collapsed or stmt, search_path, pg)[0])
    return tuple(out)


# Operations that run the written relation's expressions and triggers (TRUNCATE: its
# ON TRUNCATE triggers)
# (a static of the compiled module: read on every number-shape lookup)
_ZERO: Final = ZERO_DIGITS
_ROW_WRITES: Final = frozenset(("insert", "update", "delete", "truncate"))


class StatementPolicy:
    """Classifies and decides statements for one grant; remembers checked PREPAREs."""

    def __init__(
        self,
        scopes: Scopes,
        *,
        task: str,
        enforce: bool = True,
        search_path: tuple[str, ...] = ("public",),
        cache_size: int = 256,
        shared: SharedClassifications | None = SHARED,
        own_login: bool = False,
    ):
        if not search_path:
            raise ValueError("search_path must name at least one schema")
        self.scopes = scopes
        self.task = task
        self.enforce = enforce
        # may read function bodies: what an error's context quotes of one is passed on
        # (proxy.redaction.strip_code); else withheld, as the catalogs' bodies are
        self.reads_code = scopes.allows_relation("read", "pg_catalog.pg_proc")
        self.search_path = tuple(search_path)
        # the session logs in as a role of its own (``db_role``: per-grant or mapped), not as
        # the proxy's login the catalog is loaded as: every relation's row security policy
        # may apply to it (``Snapshot.relation_casts_role``)
        self.own_login = own_login
        # the backend pids of this grant's own sessions through this proxy (set by it): the
        # only ones pg_terminate_backend/pg_cancel_backend may name (None: none but the
        # session's own, ``pg_backend_pid()``)
        self.own_backends: Callable[[], frozenset[int]] | None = None
        # the text the last ``check_query`` or ``check_parse`` allowed in place of the
        # client's (CASCADE run as RESTRICT), or None: the client's own
        self.rewritten: str | None = None
        # asked before a Parse is decided again as RESTRICT: may the Parse being decided
        # carry that text instead of the client's (the relay's: its text encodes back to the
        # client's bytes)? None: a Parse is never run as RESTRICT
        self.can_reparse: Callable[[str], bool] | None = None
        # row security policies' expressions decided for this grant (``_policy_decision``),
        # on the snapshot they were decided on; the relations whose policies are being
        # decided
        self._policy_decisions: dict[tuple[str, str, bool], Decision | None] = {}
        self._policy_snapshot: Snapshot | None = None
        self._policy_stack: frozenset[str] = frozenset()
        # DDL since the session was last idle outside a block may have attached code a plan
        # prints (``_attaches_code``): an EXPLAIN waits for the block's end
        self._ddl_attached = False
        self._attached_unloaded = False  # the same, until a fresh snapshot: ``_explained_code``
        # every cache tier, this session's and its view of the shared one (policy/caches.py);
        # shared None: classify everything in this session afresh
        self.caches = SessionCaches(cache_size, shared, self.search_path)
        self._prepared = PreparedNames()  # SQL-level PREPAREs allowed in this session
        # The database's catalog snapshot for column syntax (policy.catalog), set by the
        # proxy: a callable returning the current Snapshot. None: no snapshot, so every
        # x.name a statement uses counts as a possible call name(x) (fail closed).
        self.catalog: Callable[[], Snapshot | None] | None = None
        # Called after DDL is allowed (the catalog may have changed) with the functions it
        # defines ({bare name: {"schema.name"}}): unqualified calls may resolve to them.
        # ``removed``: the columns it renamed or dropped ("schema.table", column)
        self.on_ddl: (
            Callable[[dict[str, frozenset[str]], frozenset[tuple[str, str]]], object] | None
        ) = None
        # Called when a decision needs a snapshot loaded after the statement arrived (the
        # proxy starts a reload, and the statement is checked again when it is done)
        # (None: a reload that starts after the last DDL through the proxy, ``stale_write``)
        self.on_stale: Callable[[float | None], object] | None = None
        # a statement waits since (monotonic) for a reload that starts after it arrived
        self.waiting_since: float | None = None
        # a Parse naming a parameter type the snapshot does not know waits for a load that
        # started after it arrived, then ``_param_types`` decides on it: its text, waiting
        self._types_waited: str | None = None
        # an allowed write decided on a stale snapshot (DDL went through since it was
        # loaded: another grant's trigger may be missing from it) waits once for the reload
        # that DDL started (``_stale_write``): what it writes is then decided on the
        # snapshot that knows (``writes_unreadable``). While it waits: True
        self.stale_write = False
        # a write on a stale snapshot that could not wait it out (a Bind, or the reload it
        # waited for is stale too): ``writes_unreadable`` answers True for it
        self._write_on_stale = False
        # a read on a stale snapshot that could not wait it out: the relay withholds what
        # the server says until this statement's Sync group is answered, and clears this
        self.stale_read = False
        # a statement that runs code on rows the grant may not read, where an error or
        # notice it raises may quote them (a view's query over a relation the grant may not
        # read, a row security policy's expression, a materialized view's query at REFRESH:
        # ``_hides_rows``): the relay withholds what the server says until the statement's
        # Sync group is answered and its transaction has ended, and clears this
        self.hidden_read = False
        # protocol statements (by name) that run code on hidden rows: ``_note_hiding``
        self._hiding_statements: set[str] = set()
        # The database's catalog state the proxy keeps (``policy.catalog._Entry``: ``epoch``
        # counts DDL through the proxy and its transactions' ends, ``blocks_open`` the DDL
        # blocks open), set by the proxy; ``on_block(+1 / -1)``: this session opened or
        # ended a DDL block. A row write decided while another session's block was open, or
        # answered after another session's DDL went through, may run a trigger, rule,
        # default or CHECK its decision's snapshot did not know: what the server says about
        # it is withheld (``write_mark``, ``writes_moved``; red-team round 36: a migration's
        # CREATE TRIGGER committed while the write waited for its lock). ``_own_bumps``:
        # the counts this session's own DDL made; ``_own_epochs``: which counts they were
        # (``_only_own_ddl``: was every count since a snapshot's load started its own?).
        self.catalog_entry: Any = None
        self.on_block: Callable[[int], object] | None = None
        self._own_bumps = 0
        self._own_epochs: set[int] = set()
        # its own DDL made a relation that takes code from another (PARTITION OF, INHERITS:
        # the parent's triggers, CHECKs, DEFAULTs), code it did not name: until a snapshot
        # that is not stale, a write after it is not excused the reload (red-team round 59)
        self._own_unfollowed = False
        self._block_counted = False
        self.write_mark: tuple[int, int, bool] | None = None
        self._write_statements: set[str] = set()  # protocol statements that write rows
        self._complete_used = False
        self._snapshot_seen: Snapshot | None = None
        # statement name -> (its classification, its parameter pins) for the statements
        # whose object text a parameter pins: their Binds are checked (check_bind)
        self.bind_pins: dict[str, tuple[Classified, tuple[str, ...]]] = {}
        # (snapshot, the relations whose foreign-key actions reach one this grant may not
        # read): writes_unreadable's answer per snapshot
        self._unreadable_reach: tuple[Snapshot | None, frozenset[str]] = (None, frozenset())
        # (snapshot, relations a read of which runs code on rows the grant may not read,
        # materialized views whose REFRESH does): ``_hides_rows``, once per snapshot
        self._hiding: tuple[Snapshot | None, frozenset[str], frozenset[str]] = (
            None, frozenset(), frozenset())  # fmt: skip
        # (verdict, snapshot, its answer): a Parse's verdict is asked twice
        # (``_note_hiding``, then ``writes_unreadable``), worked out once
        self._hid: tuple[Verdict | None, Snapshot | None, bool] = (None, None, False)
        # a statement's write operations -> does it update or delete rows of a relation
        # this grant may write but not read (writes_unreadable)
        self._blind_writes: dict[frozenset[tuple[str, str]], bool] = {}
        self._blind_snapshot: Snapshot | None = None
        self._precomputed: dict[str, tuple[Classified, ...]] = {}  # classified off the loop
        # Protocol-level statements by name ("" the unnamed one): (text, parameter type
        # OIDs) of each allowed Parse. The server analyses a prepared statement again when
        # the catalog changed, so a Bind after a change (``catalog_changed``) decides it
        # again first: ``rebind`` holds the names still to decide (the relay looks at their
        # Binds while it is not empty). Bounded: a Bind of a name forgotten meanwhile is
        # refused then (the client prepares it again).
        self._statements: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.rebind: dict[str, tuple[str, tuple[int, ...]] | None] = {}
        # a name was forgotten (the bound above) and the catalog changed since: a Bind of a
        # name the policy does not hold is refused (its text cannot be decided again)
        self._forgot = False
        self.rebind_unknown = False
        # Statement names (protocol and SQL-level: one namespace, as the server's) that a
        # message the server has not answered yet made, replaced or removed (``_touch``):
        # until it has, which text the server holds under them is not known (a Parse of a
        # name in use fails, an error skips the rest of its Sync group, an aborted block
        # ignores PREPARE). An error drops them (``answered``: a name the policy does not
        # hold is refused at its next Bind after a catalog change); a statement decided
        # again meanwhile is refused (red-team round 33). ``names_pending``: the relay
        # calls ``answered`` at ReadyForQuery.
        self._unconfirmed: set[str] = set()
        # unconfirmed names the server held none of before (the session had forgotten none):
        # whether their Parse succeeds or not, the server holds their text or nothing, so
        # they are decided again on it (psycopg's pipeline: Parse, then its Binds, a catalog
        # change between; the driver suites' differential)
        self._fresh: set[str] = set()
        # messages not yet answered that touch each name (``parse_answered``), and the Sync
        # group each name's last Parse went in: a Bind in the same group binds that Parse's
        # text or is skipped (the Parse failed), so it is decided on that text. The relay
        # sets ``sending_group`` (``SyncGroups.sent_groups``) before it asks for a decision
        self._touches: dict[str, int] = {}
        self._parse_group: dict[str, int] = {}
        self.sending_group = -1
        self._names_epoch = 0  # counts ``names_unknown``
        # the relay sets it before ``check_bind``: the Bind is followed in its batch by the
        # Execute of its portal (nothing between but Describes of it)
        self.bind_at_once = True
        self._failed = False
        self.names_pending = False
        # protocol statements every Bind of which is followed (``check_bind``): those that
        # are (or may run) DDL -> (their pairs, None), each Bind counts as DDL again; those
        # whose text changes statement names (PREPARE, EXECUTE, DEALLOCATE, DISCARD) ->
        # (their pairs, their text), each Bind decided again on it and its change applied
        # again (red-team round 38: a protocol DEALLOCATE/PREPARE bound later swapped the
        # server's statement under a name the policy held other text for). A name leaves
        # only once the server has answered everything without an error after its Close or
        # a Parse of something else (``_followed_leaving``, ``answered``): until then it may
        # still hold this one.
        self.followed: dict[str, tuple[tuple[Pair, ...], str | None]] = {}
        self._followed_leaving: set[str] = set()
        # Code that may prepare or remove statements ran (``names_unknown``) in the
        # transaction still open: a cursor or portal it reached may run it again, row by
        # row, at a later FETCH or MOVE, a protocol Execute (of a cursor's portal by name,
        # or a suspended one), a function that fetches, or the commit that fills a WITH
        # HOLD cursor (red-team round 43). Set where such code runs (a Query, a Bind: not a
        # Parse, which runs nothing); while set, every statement run forgets the names
        # again after it (``check_query``, ``check_bind``; the relay at each Execute and
        # Sync), and the relay clears it when the server is idle outside a transaction.
        self.lazy_names = False
        # Which temporary relations are the session's own where code may make them too
        # (``_temp_any``; ``_temp_of_code``, red-team round 79): a name the client's CREATE
        # made, once the server answered it without an error (``temps_answered``), and its
        # transaction then committed. Not a name its CREATE could not have made (one that
        # failed, was rolled back, or did nothing: IF NOT EXISTS), which may be code's.
        # ``_temp_claims``: made by a statement the server has not answered, name -> (its
        # Sync group, ON COMMIT DROP); ``_temp_tx``: answered in the open transaction;
        # ``_temp_own``: committed; ``_temp_undone``: an error or a ROLLBACK (TO) since the
        # transaction began; ``_temp_text``: made earlier in the text being decided (the
        # server runs nothing of a text after a statement that failed).
        self._temp_claims: dict[str, tuple[int, bool]] = {}
        self._temp_tx: dict[str, bool] = {}
        self._temp_own: frozenset[str] = frozenset()
        self._temp_undone = False
        self._temp_text: frozenset[str] = frozenset()
        self._temp_commits: list[int] = []  # the Sync groups of COMMITs not answered yet
        self.temps_pending = False  # the relay calls ``temps_answered`` at each ReadyForQuery
        # Code that may run DDL ran (``_ran_ddl``): it may also have built a PREPARE or
        # DEALLOCATE from pieces (``EXECUTE 'PREP' || 'ARE s AS ...'``, ``format()``), which
        # no reading of its source can tell (red-team round 41's residue). The server is
        # asked instead: a Bind or Describe of a protocol statement the policy held when
        # such code ran is preceded by a check the server runs (``verify_name``; the relay
        # injects it, ``proxy.denials``): only a client's Parse makes a statement that is
        # not ``from_sql``, and the proxy saw every Parse, so one that still is such is
        # the text the policy holds; one that is not is removed there and the Bind fails.
        # ``_unverified``: the names held when such code last ran (each checked once);
        # ``lazy_code``: such code ran in the transaction still open, so a cursor or portal
        # may run it again later (as ``lazy_names``): every Bind of a held name is checked,
        # and when the relay clears it every held name is to be checked once more.
        self._unverified: set[str] = set()
        self.lazy_code = False
        # a statement ran while ``lazy_code`` (such code, or a call of what another
        # session's code may have redefined): an EXECUTE of a SQL-level name is refused
        # until it ends, and the SQL-level names are forgotten when it does
        self.ran_lazy = False  # (the relay sets it at each Execute and Sync too)
        self._code_runs = 0  # counts ``_code_ran``
        self._code_epoch = 0  # counts ``_code_ran`` and ``at_rest`` (``verified``)
        self._parse_seq = 0
        self._parsed_at: dict[str, int] = {}  # a name's newest Parse (``replaced``)
        # SQL-level names forgotten so (an EXECUTE of one is told why it is refused)
        self._sql_forgotten: set[str] = set()
        self._defined = 0  # how many statements that define functions ran (``_ran_ddl``)
        # SQL-level PREPAREs: name -> the PREPARE's classification, and the names decided
        # on the current snapshot (``catalog_changed`` empties it: EXECUTE decides again)
        self._prepared_statements: dict[str, Classified] = {}
        self._prepared_current: set[str] = set()
        # what tells this policy of catalog changes (CatalogCache.listen), kept here
        self.catalog_listener: object = None
        # columns this session renamed or dropped in a transaction that may still be open;
        # the relay calls ``settle_ddl`` at the next ReadyForQuery 'I', and ``on_settle``
        # tells the catalog (CatalogCache.settle: a load from then on shows them as they are)
        self.ddl_unsettled: frozenset[tuple[str, str]] = frozenset()
        # DDL went through since the session was last idle outside a block: its end starts
        # a reload (``settle_ddl``; the one DDL started ran beside it, and a load cannot see
        # what a block has not committed yet)
        self.ddl_open = False
        # code that may run DDL ran in this session's transaction, which has not ended
        # (``_ran_ddl``; ``settle_ddl`` clears it): it may have dropped or moved a relation
        # the snapshot shows on the path and made a temporary one of its name, which no load
        # can show until the transaction ends (``_temp_of_code``; red-team round 90, leak 2
        # in a block); ``_code_text``: the same for a statement after such a call in one text
        self._code_open = False
        self._code_text = False
        # the bare names of temporary relations this session may have made (``_temp_made``):
        # an unqualified name among them may be the temporary one, whose columns the
        # snapshot does not know (column syntax on it counts as a call: red-team round 33)
        self._temp_names: frozenset[str] = frozenset()
        # names the session's own DDL gave relations and types outside pg_temp: what no
        # snapshot loaded before it knows yet (``_shadowing_temp``)
        self._made_names: frozenset[str] = frozenset()
        # Relations outside pg_temp the session's own DDL made, as classify renders them,
        # name -> the Sync group that made it (``_temp_of_code``, ``_on_the_path``: where
        # code may make temporary relations, a name on the path is not pg_temp's). One
        # counts in its own group (the server skips the rest of a group after an error), or
        # once its group is answered (``_made_answered``, ``temps_answered``); an error or
        # an undoing command forgets them all (a load shows what committed: red-team round
        # 90, a CREATE that failed or was rolled back had put its name on the path). And
        # relations its DDL dropped, renamed or moved away, name -> when its transaction
        # ended (None: still open): off the path until a load asked for after that, or a
        # later CREATE of the name (round 90: the name then found code's pg_temp table).
        self._made_relations: dict[str, int] = {}
        self._made_answered = 0
        self._removed_relations: dict[str, float | None] = {}
        # Where the database holds code that may leave cursors of its own open
        # (``Snapshot.portal_code``): the cursors and portals the client made, and the
        # refcursors granted functions returned, the only ones it may read
        # (policy/portals.py). The relay reports Binds, Executes, Closes, ReadyForQuery
        # while ``portals_watched``; ``_statement_pairs``: each protocol statement's text
        # and decisions at its Parse (what its portal runs at an Execute)
        self._portals = SessionPortals()
        self.portals_watched = False
        self._portal_code_seen = False  # the last snapshot's ``portal_code``
        self._unwatch = False  # it turned false: stop once the server is at rest
        self._statement_pairs: dict[str, tuple[str, tuple[Pair, ...]]] = {}
        self._bound_pairs: tuple[str, tuple[Pair, ...] | None] | None = None
        # views this session made through the proxy -> what their queries read: a write
        # through one lands there before any load shows it (``_actions_reach``)
        self._own_views: dict[str, frozenset[str]] = {}
        # The database has user-written code that may make temporary relations of any name
        # or change client_encoding where the policy cannot see it (``Snapshot.temp_code``,
        # ``encoding_code``, from ``CODE_FLAGS_SQL``): every unqualified relation may then
        # be a temporary one for column syntax (``_temp_any``), and the relay checks a
        # non-ASCII statement only while no code may have run since the last ReadyForQuery
        # (red-team rounds 34-35). ``_state_news``: decisions and prepared statements to
        # decide again once checked
        self.encoding_code = False
        self._temp_any = False
        self._state_news = False
        self.on_settle: Callable[[frozenset[tuple[str, str]]], object] | None = None

    @property
    def binds_watched(self) -> bool:
        """Must the relay look at Binds now (``bind_checked``)? While a statement's pin is
        a parameter, prepared statements wait to be decided again after a catalog change,
        a name was forgotten since one, or a statement is followed at each Bind. One
        attribute for the relay to read per batch of frames. Also while a statement that
        runs code on hidden rows is prepared (``_note_hiding``)."""
        return bool(
            self.bind_pins or self.rebind or self.rebind_unknown or self.followed or self.lazy_names
            or self.lazy_code or self._unverified or self._hiding_statements
        )  # fmt: skip

    @property
    def stats(self) -> dict[str, int]:
        """Where checks were answered (``SessionCaches.stats``)."""
        return self.caches.stats

    # -- public API ----------------------------------------------------------------------
    def check_query(self, sql: str) -> Verdict:
        """Simple Query: every statement is checked; one deny denies the whole query.
        ``CATALOG_WAIT``: check it again once the reload ``on_stale`` started is done.

        A query refused for a CASCADE drop behaviour alone is decided again as PostgreSQL's
        default, RESTRICT (``pgparse.restrict_cascade``: the keyword blanked, the server's
        reading otherwise unchanged): allowed so, ``rewritten`` holds the text to send
        instead (the relay sends it, and records it with the decision). Then the server
        refuses where anything depends on what it drops, and drops only what it names."""
        self.rewritten = None
        verdict = self._checked_query(sql)
        if verdict.allowed:
            return self._portals_run(verdict) if self.portals_watched else verdict
        restricted = self._as_restrict(sql, verdict)
        if restricted is None:
            return verdict
        again = exact(self._checked_query(restricted), restricted)  # (recorded with ``sql``)
        if again.allowed:
            self.rewritten = restricted
            if self.portals_watched:
                return self._portals_run(again)
        return again

    def _portals_run(self, verdict: Verdict) -> Verdict:
        """An allowed simple Query's statements as they will run, told to the session's
        portals (policy/portals.py): a FETCH or MOVE of a cursor the client did not make is
        refused there (``deny.cursor``)."""
        if verdict is CATALOG_WAIT:
            return verdict
        snap = self._snapshot_seen
        functions = snap.refcursor_functions if snap is not None else frozenset()
        self._portals.queried()
        refused = self._portals.ran(verdict.decisions, self.sending_group, functions)
        if refused is None:
            return verdict
        return self._portal_refused(verdict.decisions, refused)

    def _portal_refused(self, pairs: tuple[Pair, ...], refused: Refusal) -> Verdict:
        """``pairs`` with ``refused``'s decision in its statement's place: refused with its
        SQLSTATE (34000: a cursor the client did not make), or a would-deny in a dry run."""
        index, denial = refused.at, refused.decision
        changed = list(pairs)
        changed[index] = (changed[index][0], denial)
        if not self.enforce:
            return Verdict(True, tuple(changed), "", would_deny=True)
        if refused.sqlstate == UNDEFINED_CURSOR:
            return UndefinedCursorVerdict(False, tuple(changed), self._message(denial))
        return Verdict(False, tuple(changed), self._message(denial))

    def _watch_portals(self, on: bool) -> None:
        """The database now holds code that may open cursors (``on``): the client's portals
        are followed from now on (what it made before is not known: refused), each
        protocol statement that reads or makes a cursor followed at its Binds (``followed``:
        decided again, its Execute at once). Or it no longer does: they are followed still
        until the server is at rest outside a transaction (``portals_answered``), since a
        cursor such code opened may be open yet (round 78: another session redefined the
        trigger, and the cursor it had opened was read)."""
        if not on:
            self._unwatch = self.portals_watched
            return
        self._unwatch = False
        if self.portals_watched:
            return  # (still on: the books go on)
        self.portals_watched = True
        self._portals = SessionPortals()
        for name, (sql, pairs) in self._statement_pairs.items():
            held = self._statements.get(name)
            if held is not None and held[0] == sql and _reads_portals(pairs):
                self.followed[name] = (pairs, sql)
                self._followed_leaving.discard(name)

    def portal_bound(self, name: str, portal: bytes, certain: bool = False) -> None:
        """A Bind of statement ``name`` to ``portal`` went upstream (while
        ``portals_watched``): what its portal runs, if the server surely holds the text the
        policy does (decided at its Parse, answered or in this Sync group; ``certain``: the
        server was made to check it just before, ``verify_name``)."""
        bound, self._bound_pairs = self._bound_pairs, None
        pairs = bound[1] if bound is not None and bound[0] == name else self._held_pairs(name, certain)
        self._portals.bind(_portal_key(portal), pairs, self.sending_group)

    def _held_pairs(self, name: str, certain: bool = False) -> tuple[Pair, ...] | None:
        """The decisions of statement ``name``'s text at its Parse, if the server surely
        holds that text (``portal_bound``), else None."""
        held = self._statements.get(name)
        known = self._statement_pairs.get(name)
        if held is not None and known is not None and known[0] == held[0] and (
            certain or name not in self._unconfirmed or name in self._fresh
            or self._bound_to_its_parse(name)
        ):  # fmt: skip
            return known[1]
        return None

    def check_execute(self, portal: bytes) -> Verdict:
        """A protocol Execute of ``portal`` (while ``portals_watched``): refused unless the
        client made it in this transaction (policy/portals.py)."""
        snap = self._snapshot_seen
        functions = snap.refcursor_functions if snap is not None else frozenset()
        key = _portal_key(portal)
        refused = self._portals.execute(key, self.sending_group, functions)
        if refused is None:
            return _EXECUTE_ALLOWED
        return self._portal_refused(((_execute_of(key), refused.decision),), refused)

    def check_describe(self, portal: bytes) -> Verdict | None:
        """A protocol Describe of ``portal`` (while ``portals_watched``): a refusal unless
        the client made it (its columns say what a cursor code opened reads)."""
        key = _portal_key(portal)
        refused = self._portals.describe(key, self.sending_group)
        if refused is None:
            return None
        return self._portal_refused(((_execute_of(key), refused.decision),), refused)

    def portal_closed(self, portal: bytes) -> None:
        """A Close of protocol portal ``portal`` went upstream."""
        self._portals.closed(_portal_key(portal))

    def portals_answered(self, first: int, below: int, idle: bool, settled: bool = False) -> None:
        """ReadyForQuery (while ``portals_watched``): it answered the Sync groups numbered
        ``first`` up to ``below``; ``idle``: the server is outside a transaction;
        ``settled``: nothing more is in flight."""
        self._portals.answered(first, below, idle, settled)
        if self._unwatch and idle and settled:
            # no such code any more, and no cursor or portal of the session is open
            self._unwatch = self.portals_watched = False
            self._portals = SessionPortals()

    def portals_rolled_back(self) -> None:
        """The proxy ends the client's block with a ROLLBACK of its own (while
        ``portals_watched``)."""
        self._portals.rolled_back()

    @property
    def savepoints_pending(self) -> bool:
        """Should the relay tell ``savepoint_made`` of each CommandComplete SAVEPOINT?"""
        return self._portals.savepoints_pending

    def savepoint_made(self) -> None:
        """A CommandComplete SAVEPOINT (while ``savepoints_pending``)."""
        self._portals.savepoint_made()

    @property
    def harvesting(self) -> bool:
        """Should the relay hand refcursor values of result rows to ``refcursors``?"""
        return bool(self._portals.harvest)

    def refcursors(self, names: list[str]) -> None:
        """The values of a result row (while ``harvesting``): refcursors, if its Sync group
        held nothing but calls of functions that return one (``SessionPortals.answered``)."""
        self._portals.harvested.extend(names)

    def _as_restrict(self, sql: str, verdict: Verdict) -> str | None:
        """The text to decide again for a refused verdict whose refusal is a CASCADE drop
        behaviour (``pgparse.restrict_cascade``), or None: another refusal, or a dry run."""
        if verdict is CATALOG_WAIT or not self.enforce or not any(
            c.cls is StatementClass.UNKNOWN and "CASCADE" in c.detail
            for c, _d in verdict.decisions
        ):
            return None
        return restrict_cascade(sql)

    def _checked_query(self, sql: str) -> Verdict:
        names_known, defined = self._names_epoch, self._defined
        try:
            verdict = self._check_query(sql)
        except CatalogWait:
            return CATALOG_WAIT
        if self._names_epoch != names_known or self._defined != defined:
            # such code ran, or a function was (re)defined, which a cursor or portal open
            # over a call of it runs as it is now (red-team rounds 43, 44)
            self.lazy_names = True
        self.waiting_since = None  # decided: the next wait is the next statement's own
        if self._state_news:
            self._session_state_changed()
        snap = self._snapshot_seen
        if ((snap is not None and snap.stale) or self.stale_write) and self._stale_write(
            verdict, True
        ):
            return CATALOG_WAIT
        if self.lazy_names and verdict.allowed:
            self.names_unknown()  # (a FETCH, a COMMIT filling a WITH HOLD cursor, ...)
        if self.lazy_code and verdict.allowed:
            self.ran_lazy = True  # it may run such code (``_apply_session_state``)
        return verdict

    def _check_query(self, sql: str) -> Verdict:
        self._follow_catalog()
        if self._precomputed:
            pre = self._from_precomputed(sql)
            if pre is not None:
                return pre
        verdict = self._cached(sql)
        if verdict is not None:
            return verdict
        if self.caches.shapes:
            verdict = self._from_shape(sql)
            if verdict is not None:
                self.caches.stats["fingerprint_hits"] += 1
                return verdict
        found = self._from_fingerprints(sql)
        if found is not None:
            self.caches.stats["fingerprint_hits"] += 1
            pairs, plain = found
            if plain and len(pairs) == 1:
                self.caches.remember_shape(sql, pairs[0], _shape_verdict)
            # plain: every statement allowed, none DDL or session state (what _verdict
            # would conclude without looking further), known when the entry was cached
            return _allowed(pairs) if plain else self._verdict(pairs)
        self.caches.stats["misses"] += 1
        return self._store(sql, self._classify(sql, use_fingerprints=True))

    def check_parse(
        self,
        sql: str,
        param_types: tuple[int, ...] = (),
        name: str = "",
        can_wait: bool = True,
        again: bool = False,
    ) -> Verdict:
        """Extended-protocol Parse: checked like a query (PostgreSQL rejects several).
        ``param_types``: parameter type OIDs the Parse names of types a user made
        (``messages.policy_parse_types``): a value bound to one runs what the type runs;
        a 0 among them: a parameter of another type than text or varchar is declared.
        ``name``: the statement's; one whose object text is pinned by a parameter is
        remembered, and each Bind of it is checked with the values (``check_bind``).
        ``CATALOG_WAIT``: as ``check_query``'s (never with ``can_wait`` False: a Bind).
        A Parse refused for CASCADE alone is decided again as RESTRICT, as a Query is
        (``check_query``): allowed so, ``rewritten`` holds the text to parse upstream
        instead, and the statement is remembered with it (what the server holds)."""
        self.rewritten = None
        verdict = self._checked_parse(sql, param_types, name, can_wait, again)
        if verdict.allowed:
            self._note_hiding(name, verdict)
        if verdict.allowed or again:
            return verdict
        restricted = self._as_restrict(sql, verdict)
        if restricted is None or self.can_reparse is None or not self.can_reparse(restricted):
            return verdict
        verdict = self._checked_parse(restricted, param_types, name, can_wait, again)
        if verdict.allowed:
            self.rewritten = restricted
            self._note_hiding(name, verdict)
        return verdict

    def _note_hiding(self, name: str, verdict: Verdict) -> None:
        """Statement ``name`` runs code on rows the grant may not read (``_hides_rows``):
        each Bind of it marks ``hidden_read`` (``bind_checked``), since it may run in a later
        Sync group than its Parse (red-team round 89: a statement prepared outside a block,
        bound in the next group, answered the server's 22P02 quoting a hidden row)."""
        snap = self._snapshot_seen
        if snap is not None and self.enforce and self._hides_rows(verdict, snap):
            self._hiding_statements.add(name)
        elif self._hiding_statements:
            self._hiding_statements.discard(name)

    def _checked_parse(
        self, sql: str, param_types: tuple[int, ...], name: str, can_wait: bool, again: bool
    ) -> Verdict:
        names_known = self._names_epoch
        try:
            verdict = self._check_parse_text(sql)
        except CatalogWait:
            return CATALOG_WAIT
        self.waiting_since = None  # decided: the next wait is the next statement's own
        if self._state_news:
            self._session_state_changed()
        snap = self._snapshot_seen
        if ((snap is not None and snap.stale) or self.stale_write) and self._stale_write(
            verdict, can_wait
        ):
            return CATALOG_WAIT
        if param_types and verdict.decisions:
            denial = self._param_types(param_types)
            waited, self._types_waited = self._types_waited, None
            if (
                denial is not None and waited != sql and can_wait and self.on_stale is not None
                and snap is not None
                and any(oid >= FIRST_NORMAL_OID and oid not in snap.type_oids
                        and oid not in snap.known_type_oids for oid in param_types)
            ):  # fmt: skip
                # a type made since the snapshot was loaded (psycopg's CREATE TYPE, then a
                # statement binding one): decided on a load that started after this Parse
                # arrived, as a statement resting on the catalog's completeness is; after
                # it, a type still unknown is refused
                self._types_waited = sql
                self.waiting_since = monotonic()
                self.on_stale(self.waiting_since)
                return CATALOG_WAIT
            if denial is not None:
                verdict = self._overruled(verdict, denial)
            elif (
                verdict.allowed
                and snap is not None
                and snap.ddl_functions
                and not opens_ddl(verdict.decisions)
                and any(
                    not snap.type_oids.get(oid, frozenset()).isdisjoint(snap.ddl_functions)
                    for oid in param_types
                )
            ):  # a value of a user type whose domain CHECK or cast may run DDL code
                pairs = tuple((c, replace(d, opens_ddl=True)) for c, d in verdict.decisions)
                self._ran_ddl(pairs)
                verdict = Verdict(True, pairs, "", would_deny=verdict.would_deny)
        if verdict.allowed and 0 in param_types and _casts_a_setting_parameter(verdict):
            # a setting named by a parameter cast to text or varchar: the server reads the
            # bound text itself only where the Parse leaves it untyped or gives it text or
            # varchar (a regclass's ::text is a relation's name: red-team round 57)
            verdict = self._overruled(verdict, _CAST_SETTING)
        if name.startswith(RESERVED_PREFIX) and verdict.decisions:
            verdict = self._overruled(verdict, reserved_name(f"the statement name {name!r}"))
        elif name_too_long(name) and verdict.decisions:
            verdict = self._overruled(verdict, _LONG_NAME(name))
        if again and self._names_epoch != names_known:
            # decided again at its Bind, and it runs code that may replace statements,
            # this one too (red-team round 41): the policy holds no text for it after
            return verdict
        if verdict.allowed:
            # a refused Parse never reaches the server (which keeps whatever it held under
            # that name): only an allowed one changes what a Bind of the name runs
            held = name != "" and (name in self._statements or name in self._prepared_statements)
            # (``again``: decided again at a Bind, no Parse goes upstream: nothing unconfirmed)
            self._remember_statement(name, sql, param_types, sent=not again)
            if _may_write(verdict.decisions):
                # kept after a Parse of another text under the name (the server may refuse
                # it and keep this one): a Bind of it marks a write that may be none
                if len(self._write_statements) < MAX_REMEMBERED_STATEMENTS:
                    self._write_statements.add(name)
                else:
                    self._write_statements.add(_EVERY_NAME)
            pairs_ = self._statement_pairs
            if not again:
                pairs_.pop(name, None)
                if len(pairs_) >= MAX_REMEMBERED_STATEMENTS:
                    pairs_.pop(next(iter(pairs_)))
                pairs_[name] = (sql, verdict.decisions)
            stateful = any(c.command in STATEFUL_COMMANDS for c, _d in verdict.decisions) or (
                self.portals_watched and _reads_portals(verdict.decisions)
            )
            if stateful or opens_ddl(verdict.decisions):
                self.followed[name] = (verdict.decisions, sql if stateful else None)
                self._followed_leaving.discard(name)
            elif self.followed and name in self.followed:
                self._followed_leaving.add(name)
            pinned = _parameter_pins(verdict)
            if pinned is not None:
                self.bind_pins[name] = pinned
                if held:  # parsed upstream under a private name: the server keeps the
                    self._forgot = True  # one it held, which the policy holds no text of
            elif self.bind_pins:
                self.bind_pins.pop(name, None)
        return verdict

    def check_bind(
        self, name: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
    ) -> Verdict:
        """A Bind of a statement whose object text a parameter pins (``bind_pins``): the
        pins the values stand for, decided as literals would be (metadata.bound_pins,
        policy.catalog.describe_refusal). Followed statements are decided again
        (``followed``); while ``lazy_names``, the names are forgotten after it."""
        names_known, defined = self._names_epoch, self._defined
        if self.portals_watched and name in self.followed:
            # what its portal runs, before deciding it again applies what it changes (a
            # DISCARD ALL forgets every statement, itself too: ``portal_bound``)
            self._bound_pairs = (name, self._held_pairs(name))
        verdict = self._check_bind(name, formats, values, encoding)
        if self.lazy_code and verdict.allowed:
            self.ran_lazy = True
        if self.lazy_names and verdict.allowed:
            self.names_unknown()  # (planning it may run code: a function folded)
        elif self._names_epoch != names_known or self._defined != defined:
            self.lazy_names = True  # such code runs now (a Parse of it runs nothing)
        return verdict

    def _check_bind(
        self, name: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
    ) -> Verdict:
        self._follow_catalog()
        if name_too_long(name):
            return self._refused(_bind_of(name), _LONG_NAME(name))
        if self.lazy_code and self.ran_lazy and name in self._prepared_statements and (
            name not in self._statements
        ):  # a SQL-level name, bound as an EXECUTE of it would run (``_apply_session_state``)
            return self._refused(_bind_of(name), Decision(
                False, "deny.execute",
                f"may not bind statement {name!r}, prepared by SQL, while code that may "
                "replace prepared statements may run (as for its EXECUTE in this transaction): "
                "bind it once the transaction has ended, or prepare it with the protocol",
            ))  # fmt: skip
        followed = self.followed.get(name)
        if followed is not None and not self.bind_at_once:
            # what it changes (statement names, the catalog, through code it runs) happens
            # at its portal's Execute: a later one (a portal executed after other
            # messages) would change it in an order the policy cannot follow (red-team
            # rounds 39, 41)
            return self._refused(_bind_of(name), Decision(
                False, "deny.catalog",
                f"may not bind statement {name!r}, which is DDL or prepares or removes "
                "statements (or runs code that may), without executing its portal at "
                "once (send its Execute right after the Bind)",
            ))  # fmt: skip
        if name in self.rebind or (self._forgotten(name) and not name.startswith(RESERVED_PREFIX)):
            self.rebind.setdefault(name, None)
            again = self._decided_again(name)  # (DDL again, if it is: ``_verdict``)
            if not again.allowed or again.would_deny or name not in self.bind_pins:
                return again
        else:
            if followed is not None:
                pairs, text = followed
                if text is None:
                    self._ran_ddl(pairs, bound=True)  # it runs again: as DDL through the proxy does
                    again = Verdict(True, pairs, "")
                else:
                    again = self._stateful_again(name, text)
                if not again.allowed or again.would_deny or name not in self.bind_pins:
                    return again
        pending = self.bind_pins.get(name)
        if pending is None:
            if (self.lazy_names or self.lazy_code or name in self._unverified) and (
                name in self._statements or name in self._prepared_statements
            ):
                # a held statement, looked at only because every Bind is while ``lazy_names``
                # (or to be checked with the server: ``verify_name``)
                return Verdict(True, ((_bind_of(name), Decision(
                    True, "default.statement", "its Parse decided it",
                )),), "")  # fmt: skip
            # a name of the proxy's own (RESERVED_PREFIX), or one it holds no text for
            return self._refused(_bind_of(name), reserved_name(f"the statement name {name!r}"))
        classified, entries = pending
        concrete: set[str] = set()
        setting: Decision | None = None
        for entry in entries:
            spec, _, via = entry.partition(":")[2].rpartition("@")
            if via in SIGNAL_FUNCTIONS:  # a backend named by a parameter
                own = self.own_backends() if self.own_backends is not None else frozenset()
                denial = signal_backend(via, bound_pid(spec, formats, values, encoding), own)
                if denial is not None:
                    return self._refused(classified, Decision(
                        False, denial.rule, f"{denial.reason} (statement {name!r})",
                    ))  # fmt: skip
                setting = Decision(True, "default.function", "a backend of the grant's own sessions")
                continue
            if via in SETTING_PINS:  # a setting named (or valued) by a parameter
                refs = bound_setting_refs(spec, formats, values, encoding)
                setting = bound_setting(*refs, self.scopes)
                if (setting.allowed and self.encoding_code and refs[0] == "current_setting"
                        and refs[1] is not None):
                    # read as its literal would be (``_setting_of_code``)
                    setting = _read_of_code(refs[1]) or setting
                if not setting.allowed:
                    return self._refused(classified, Decision(
                        False, setting.rule, f"{setting.reason} (statement {name!r})",
                    ))  # fmt: skip
                continue
            pins = bound_pins(spec, formats, values, encoding)
            if pins is None:
                concrete.add(f"any:{via}")  # a value that is no OID or name pins nothing
            else:
                concrete.update(f"{kind}:{value}@{via}" for kind, value in pins)
        why = self._describe_refusal(frozenset(concrete), False, can_wait=False) if concrete else None
        if why is None:
            allowed = setting if setting is not None and not concrete else Decision(
                True, "default.catalog", "pinned by the values bound"
            )
            verdict = Verdict(True, ((classified, allowed),), "")
            self._stale_write(verdict, False)
            return verdict
        denial = Decision(False, "deny.catalog", f"{why} (the value bound to a parameter of statement {name!r})")
        return self._refused(classified, denial)

    def _stateful_again(self, name: str, sql: str) -> Verdict:
        """A Bind of protocol statement ``name`` whose text ``sql`` changes statement names
        (PREPARE, EXECUTE, DEALLOCATE, DISCARD): the server runs it again, so it is decided
        again on the names as they are now and its change applied again (``_verdict``)."""
        if name in self._followed_leaving:
            if self._bound_to_its_parse(name):
                # parsed again in this Sync group: the Bind binds that Parse's text,
                # decided at it (the unnamed statement in psycopg's pipeline)
                return Verdict(True, ((_bind_of(name), Decision(
                    True, "default.statement", "its Parse in this Sync group decided it",
                )),), "")  # fmt: skip
            # closed or parsed again, not yet answered: the server may hold this text or
            # the new one, and which names it changes is not known
            return self._refused(_bind_of(name), Decision(
                False, "deny.catalog",
                f"may not run statement {name!r} before the server answered the message "
                "that closed or replaced it: it prepared or removed statements, and which "
                "text it holds is not known yet (send the Bind after that answer)",
            ))  # fmt: skip
        try:
            verdict = self._at_bind(lambda: self._check_parse_text(sql))
        except CatalogWait:
            verdict = Verdict(False, (), "")
        if verdict.allowed:
            self._stale_write(verdict, False)
            return verdict
        denial = next((d for _, d in verdict.decisions if not d.allowed), None)
        return self._refused(_bind_of(name), Decision(
            False, denial.rule if denial is not None else "deny.catalog",
            f"{denial.reason if denial is not None else 'not decided'} (statement {name!r}, "
            "which prepares or removes statements, decided again at its Bind)",
        ))  # fmt: skip

    def _refused(self, classified: Classified, denial: Decision) -> Verdict:
        """A Bind refused (``denial``), or let through as a would-deny in a dry run."""
        pair = (classified, denial)
        if self.enforce:
            return Verdict(False, (pair,), self._message(denial))
        return Verdict(True, (pair,), "", would_deny=True)

    def _forgotten(self, name: str) -> bool:
        """A name the policy may have forgotten (``rebind_unknown``) and does not hold."""
        return (
            self.rebind_unknown
            and name not in self._statements
            and name not in self._prepared_statements
        )

    def _remember_statement(
        self, name: str, sql: str, param_types: tuple[int, ...], sent: bool = True
    ) -> None:
        statements = self._statements
        if not sent:
            pass
        elif name in statements or name in self._prepared_statements or self._forgot:
            self._fresh.discard(name)
        elif name not in self._unconfirmed:
            self._fresh.add(name)
        statements.pop(name, None)
        if len(statements) >= MAX_REMEMBERED_STATEMENTS:
            statements.pop(next(iter(statements)))  # the oldest: a Bind of it after a
            self._forgot = True  # change is refused (_decided_again, rebind_unknown)
        statements[name] = (sql, param_types)
        self._parse_seq += 1
        parsed_at = self._parsed_at
        parsed_at[name] = self._parse_seq
        if len(parsed_at) > 2 * MAX_REMEMBERED_STATEMENTS:  # names no longer held: dropped
            self._parsed_at = {n: parsed_at[n] for n in statements if n in parsed_at}
        self.rebind.pop(name, None)  # decided just now
        if self._prepared_statements and name in self._prepared_statements:
            self._forget_prepare(name)  # one namespace: the Parse's now, if it succeeds
        if sent:
            self._unconfirmed.add(name)
            self._touches[name] = self._touches.get(name, 0) + 1
            self._parse_group[name] = self.sending_group
            self.names_pending = True

    def _touch(self, name: str) -> None:
        """A message about to go upstream makes, replaces or removes statement ``name``."""
        self._parse_group.pop(name, None)  # (a Bind after it no longer binds its Parse's)
        self._unconfirmed.add(name)
        self._touches[name] = self._touches.get(name, 0) + 2  # (no answer confirms these)
        self._fresh.discard(name)
        self.names_pending = True

    def parse_answered(self, name: str) -> None:
        """ParseComplete for a Parse of ``name`` sent upstream (the relay matches them in
        order): the server holds its text now, unless another message not yet answered
        touches the name too. So an error later in the group no longer drops it, and its
        Bind after a catalog change is decided on that text (asyncpg's Parse, Describe,
        Flush, then its Bind: the drivers' differential, session 22)."""
        left = self._touches.get(name, 0) - 1
        if left > 0:
            self._touches[name] = left
            return
        self._touches.pop(name, None)
        self._parse_group.pop(name, None)
        # prepared again, and the server took it: it holds this text, no check is due (not
        # at the Parse's sending: a name code prepared makes the Parse fail, and a Bind in a
        # later Sync group would go unchecked; red-team round 54)
        self._unverified.discard(name)
        if self._followed_leaving and name in self._followed_leaving:
            # the server holds the last Parse's text, which is not followed
            self._followed_leaving.discard(name)
            self.followed.pop(name, None)
        if name in self._unconfirmed and _EVERY_NAME not in self._unconfirmed:
            self._unconfirmed.discard(name)
            self._fresh.discard(name)
            self.names_pending = bool(self._unconfirmed)

    def _forget_prepare(self, name: str) -> None:
        self._prepared.forget(name)
        self._prepared_statements.pop(name, None)
        self._prepared_current.discard(name)

    def closed(self, name: str) -> None:
        """A Close of statement ``name`` goes upstream: the server forgets it (protocol
        and SQL-level names are one namespace)."""
        if name_too_long(name):  # the server closes the statement its key names
            if name.isascii():
                self.closed(name[:NAME_BYTES])
            else:
                self.closed_unknown()  # (cut in the server's encoding: any non-ASCII one)
        self._statements.pop(name, None)
        self.rebind.pop(name, None)
        self._forget_prepare(name)
        self._fresh.discard(name)
        self._touch(name)
        if self.followed and name in self.followed:
            self._followed_leaving.add(name)

    def closed_unknown(self) -> None:
        """A Close of a statement whose name was read in an encoding that may be changing
        (``Relay.encoding_changed``): whichever non-ASCII name the server closes, the
        policy holds none of them, and a name it does not hold is refused at its next
        Bind after a catalog change."""
        for name in [n for n in (*self._statements, *self._prepared_statements) if not n.isascii()]:
            self.closed(name)
        self._forgot = True

    def failed(self) -> None:
        """The server answered with an ErrorResponse: what messages it skipped or refused
        is not known here (``answered`` drops the names they touched)."""
        self._failed = True
        self.names_pending = True
        if self._made_relations:
            self._made_relations = {}  # (which CREATE failed, and what it undid: a load says)
        if self.temps_pending:
            self._temp_undone = True  # (what the transaction made is undone at its end)
        if self.portals_watched:
            self._portals.failed()

    def answered(self, idle: bool) -> None:
        """ReadyForQuery. After an error, the statement names touched since the server last
        answered everything are dropped (the policy holds no text for them: their Binds
        and EXECUTEs after a catalog change are refused, ``rebind_unknown``); with nothing
        more in flight (``idle``) and no error, the server holds what the policy does."""
        if self._followed_leaving and (self._failed or idle):
            if not self._failed:  # (after an error the server may hold them still)
                for name in self._followed_leaving:
                    self.followed.pop(name, None)
            self._followed_leaving.clear()
        if self._failed or idle:
            self._touches.clear()
            self._parse_group.clear()
        if self._failed:
            self._failed = False
            if self._unconfirmed:
                for name in self._unconfirmed:
                    self._statements.pop(name, None)
                    self.rebind.pop(name, None)
                    self._forget_prepare(name)
                self._forgot = True
                self._unconfirmed.clear()
                self._fresh.clear()
        elif idle:
            self._unconfirmed.clear()
            self._fresh.clear()
        self.names_pending = bool(self._unconfirmed)

    def temps_answered(self, answered: int, idle: bool) -> None:
        """ReadyForQuery (while ``temps_pending``): the server has answered the Sync groups
        below ``answered``; ``idle``: outside a transaction. The temporary relations their
        statements made are the open transaction's, unless an error came since it began;
        at its end they are the session's own if it committed (no error, no ROLLBACK)."""
        before = (self._temp_own, frozenset(self._temp_tx))
        self._made_answered = answered
        confirmed = {n: v[1] for n, v in self._temp_claims.items() if v[0] < answered}
        for name in confirmed:
            del self._temp_claims[name]
        if self._temp_undone:
            self._temp_tx.clear()  # (an aborted block: what it made goes with it)
        else:
            self._temp_tx.update(confirmed)
        committed = [g for g in self._temp_commits if g < answered]
        if committed:
            # a COMMIT answered (AND CHAIN too: the transaction ended, another began)
            self._temp_commits = [g for g in self._temp_commits if g >= answered]
            idle = True
        if idle:
            if not self._temp_undone:
                kept = frozenset(n for n, dropped in self._temp_tx.items() if not dropped)
                if kept:
                    self._temp_own = self._temp_own | kept
            self._temp_tx.clear()
            self._temp_undone = False
        self.temps_pending = self._temps_open()
        if before != (self._temp_own, frozenset(self._temp_tx)):
            self._session_state_changed()  # (what was decided on them is decided again)

    def _temps_open(self) -> bool:
        """Is anything of the session's temporary relations, or a relation its CREATE made,
        waiting for the server's answer (``temps_pending``: ``temps_answered`` then)?"""
        return bool(
            self._temp_claims or self._temp_tx or self._temp_undone or self._temp_commits
            or any(g >= self._made_answered for g in self._made_relations.values())
        )

    def _claim_temps(self, pairs: tuple[Pair, ...]) -> None:
        """``pairs`` go to the server (which temporary relations are the session's own is
        followed from its start, whether or not code may make them: a snapshot may tell
        later that it may; ``_temp_of_code`` asks only then): a name their DDL drops, renames
        or moves away is no longer known to be the session's (code may make another under
        it; a rename of its own carries it to the new name); one a CREATE of theirs makes
        (not IF NOT EXISTS, as PostgreSQL's parser reads it) will be, once answered
        (``temps_answered``); a ROLLBACK undoes the transaction's, a COMMIT keeps them."""
        before = (self._temp_own, frozenset(self._temp_tx))
        mine = self._temp_own.union(self._temp_tx, self._temp_claims)
        for c, _d in pairs:
            command = c.command
            if command in _UNDOING:
                self._temp_undone = True
                self._made_relations = {}  # (what the transaction made may be undone)
            elif command == "COMMIT":
                self._temp_commits.append(self.sending_group)
            elif command == "DISCARD" and c.detail in ("all", "temp", "temporary"):
                self._temp_own = frozenset()
                self._temp_tx.clear()
                self._temp_claims.clear()
            if c.cls is not StatementClass.DDL:
                continue
            ended: set[str] = set()
            carried: set[str] = set()
            for (schema, old), (to_schema, new) in renamed_relations(c.sql):
                if schema not in (None, "pg_temp"):
                    continue
                ended.add(render_name(old))
                if old != new and to_schema in (None, "pg_temp") and render_name(old) in mine:
                    carried.add(render_name(new))  # (renamed: the client's, under its new name)
            if command.startswith("ALTER") and not ended and any(
                op == "ddl" and not rel.startswith(_TEMP_PREFIX) for op, rel in c.write_ops
            ):
                # one out of pg_temp (SET SCHEMA), whatever the parser read of it: ended
                ended |= {rel[len(_TEMP_PREFIX) :] for op, rel in c.write_ops
                          if op == "ddl" and rel.startswith(_TEMP_PREFIX)}  # fmt: skip
            if ended:
                self._temp_own = self._temp_own - ended
                for name in ended:
                    self._temp_tx.pop(name, None)
                    self._temp_claims.pop(name, None)
            for name in carried:
                self._temp_claims[name] = (self.sending_group, False)
            made = _temp_made(c) if not command.startswith(("DROP", "ALTER")) else _NO_NAMES
            how = temp_creation(c.sql) if made else None
            if how is not None and not how[0]:
                for name in made:
                    self._temp_claims[name] = (self.sending_group, how[1])
        self.temps_pending = self._temps_open()
        if before != (self._temp_own, frozenset(self._temp_tx)):
            self._session_state_changed()

    def settle_ddl(self) -> None:
        """The session is idle outside a transaction block: its DDL since it last was
        (``ddl_open``), the renames and drops of ``ddl_unsettled`` among it, ran its course
        (committed or rolled back): a load from now on shows what it left."""
        removed = self.ddl_unsettled
        self.ddl_unsettled = frozenset()
        if self._removed_relations:
            now = monotonic()
            for rel, ended in self._removed_relations.items():
                if ended is None:
                    self._removed_relations[rel] = now
        ran = self.ddl_open
        self.ddl_open = False
        self._code_open = False
        self._ddl_attached = False
        if (removed or ran) and self.on_settle is not None:
            # (its own count: a read then does not wait for the reload, ``_stale_write``)
            before = self._epoch_now()
            self.on_settle(removed)
            self._own_bumps += 1
            self._counted_own(before)
        if self._block_counted:
            self._block_counted = False
            if self.on_block is not None:
                self.on_block(-1)

    def _epoch_now(self) -> int:
        entry = self.catalog_entry
        return -1 if entry is None else int(entry.epoch)

    def _counted_own(self, before: int) -> None:
        """The session's DDL or its transaction's end was just counted (``on_ddl``,
        ``on_settle``): the count is its own if it was the only one."""
        entry = self.catalog_entry
        if entry is None or before < 0 or entry.epoch != before + 1:
            return  # (not counted, or not alone: none of it is taken as its own)
        own = self._own_epochs
        own.add(before + 1)
        if len(own) > 256:
            self._own_epochs = {e for e in own if e > before - 128}

    def _only_own_ddl(self, snap: Snapshot | None) -> bool:
        """Was all the DDL counted since ``snap``'s load started this session's own (or
        none)? Then what a load would add is what that DDL attached, which the policy
        decided as it went; another session's DDL, or its transaction's end, since then
        is not (a load that started after both shows what they left)."""
        entry = self.catalog_entry
        if entry is None or snap is None:
            return False
        since, now = snap.loaded_epoch, int(entry.epoch)
        if since < 0 or now - since > len(self._own_epochs):
            return now == since >= 0
        own = self._own_epochs
        return all(e in own for e in range(since + 1, now + 1))

    def _stale_write(self, verdict: Verdict, can_wait: bool) -> bool:
        """Must allowed ``verdict``, decided on a stale snapshot, wait for the reload the
        DDL that made it stale started? A write's errors are withheld when it runs code the
        grant did not choose (``writes_unreadable``), and a trigger, rule or CHECK another
        grant's DDL just attached is not in a stale snapshot. A read of a view too: what it
        hides and whether it is a security barrier are the snapshot's (red-team round 51: a
        dry run lowered a barrier, and a read decided before the reload leaked the hidden
        rows through an error); and a call of a user-written function: whether PostgreSQL
        inlines it and what its query reads are too (round 52: a SQL function replaced, or
        made inlinable by a dry run's ALTER FUNCTION, read on its old body); and any read of
        a relation outside the system schemas (a view made since, or renamed into a table's
        name; what inherits from it; its indexes: round 53), and an EXECUTE (PostgreSQL
        analyses its text again). Once per statement: after its wait (``stale_write``), or
        where it cannot wait (a Bind), a snapshot still stale makes ``writes_unreadable``
        answer True (fail closed)."""
        waited = self.stale_write
        self.stale_write = False
        snap = self._snapshot_seen
        if snap is None or not snap.stale or not verdict.allowed or not self.enforce:
            return False
        decisions = verdict.decisions
        writes = any(op in _ROW_WRITES for c, _d in decisions for op, _r in c.write_ops)
        entry = self.catalog_entry
        if not writes and not any(
            _reads_user_relations(c) or (c.functions and _calls_user_code(c, snap))
            or c.command == "EXECUTE"
            for c, _d in decisions
        ):  # fmt: skip
            return False  # a read of nothing another session's DDL may have changed
        own = self._only_own_ddl(snap)
        if own and writes and self._own_unfollowed:
            if self.ddl_open:
                # in its block no load shows what the child took from its parent: withheld
                # (red-team round 59: a partition's cloned trigger spoke whole)
                self._write_on_stale = True
                return False
        elif own or (entry is None and (not writes or self.ddl_open)):
            # only its own DDL made it stale: in its block no load shows it before the block
            # commits (psycopg's drop/create/executemany blocks), and after it what a load
            # would add is what that DDL attached, which the policy decided as it went. So
            # neither waits (session 28: asyncpg's first INSERT after CREATE TEMP TABLE
            # waited 155 ms for two loads). Another session's DDL since does, and with no
            # catalog entry to count DDL by, a write outside its own DDL's block
            return False
        if waited or not can_wait or self.on_stale is None:
            # (in a block with DDL of its own, another's DDL too since: the reload shows the
            # other's once it committed; after that one wait, or where it cannot wait,
            # withheld. Red-team round 36: a write after a temporary table showed another
            # grant's trigger committed meanwhile)
            if writes:
                self._write_on_stale = True
            else:
                # a read: what the server says about this statement alone is withheld, not
                # the session's from then on (the drivers' differential, session 26: asyncpg
                # never saw "cached plan must not change result type" after another
                # session's ALTER TABLE, nor any error after it)
                self.stale_read = True
            return False
        self.stale_write = True
        self.on_stale(None)  # the reload after DDL (joined if it is running)
        return True

    def _session_state_changed(self) -> None:
        """What only this session sees changed how names resolve (its temporary relations,
        ``_temp_names``, ``_temp_any``): no snapshot change tells it, so what it decided
        and prepared is decided again, as the server analyses it again."""
        self._state_news = False
        self.caches.forget_decisions()
        self.catalog_changed()

    def catalog_changed(self) -> None:
        """The database's snapshot changed (DDL through the proxy, a reload): the server
        analyses this session's prepared statements again at their next use, so the policy
        decides them again first (``check_bind``, ``_decide_execute``)."""
        if self._statements or self._prepared_statements:
            # SQL-level PREPAREs too: a protocol Bind may name one (one namespace)
            self.rebind = dict.fromkeys([*self._statements, *self._prepared_statements])
        if self._forgot:
            self.rebind_unknown = True
        self._prepared_current.clear()
        # a function defined or replaced by another session (a block still open, or a load
        # that shows one new as code that may replace statements): a cursor or portal this
        # session holds open over a call of it runs the new code (red-team round 44); the
        # relay clears the mark at once if the session is idle outside a transaction
        entry = self.catalog_entry
        if entry is not None and entry.defining():
            self.lazy_names = True
        snap = self.catalog() if self.catalog is not None else None
        seen = self._snapshot_seen  # (what this session's statements were decided on)
        if (snap is not None and seen is not None and snap.names_functions is not seen.names_functions
                and not snap.names_functions <= seen.names_functions):
            self.lazy_names = True
        if entry is not None and entry.code_window():
            # code that may run DDL ran (here or in another session) and may have redefined
            # a function this session calls: until a load read the catalog and the session
            # is at rest, names are checked at every Bind, and an EXECUTE after a statement
            # ran is refused (``ran_lazy``)
            self._check_names_again()
            self.lazy_code = True

    def bind_checked(self, name: str) -> bool:
        """Must the relay have a Bind of statement ``name`` checked (``check_bind``)? A Bind
        of a statement that writes rows marks the write (``writes_moved``); one of a
        statement that runs code on hidden rows marks ``hidden_read`` (``_note_hiding``)."""
        if self._hiding_statements and name in self._hiding_statements:
            self.hidden_read = True
        if self._write_statements and self.catalog_entry is not None and (
            name in self._write_statements or _EVERY_NAME in self._write_statements
        ):
            self._mark_write()
        return (
            name in self.bind_pins
            or name in self.rebind
            or name in self.followed
            or (len(name) > NAME_BYTES // 4 and name_too_long(name))
            or name.startswith(RESERVED_PREFIX)
            or self._forgotten(name)
            or self.lazy_names
            or name in self._unverified
            or (self.lazy_code and name != "" and (
                name in self._statements or name in self._prepared_statements))
        )  # fmt: skip

    def _at_bind(self, decide: Callable[[], _T]) -> _T:
        """``decide()`` for a Bind, which cannot wait for a load: a statement whose answer
        rests on the snapshot's completeness waited for one at its Parse, and is decided
        now on the current snapshot as if it had waited for it (newer than that one)."""
        saved = self.waiting_since
        snap = self._snapshot_seen
        self.waiting_since = snap.loaded_at if snap is not None else None
        try:
            return decide()
        finally:
            self.waiting_since = saved

    def _bound_to_its_parse(self, name: str) -> bool:
        """Does a Bind of ``name`` now bind the text of its last Parse? Yes when that Parse
        went in this Bind's Sync group and nothing touched the name since: the Bind binds
        that text, or the server skips it (the Parse failed)."""
        if self.sending_group < 0:  # (not told, as outside the relay)
            return False
        if name == "":  # replaced by each Parse of it, untouched by DEALLOCATE/DISCARD ALL
            return self._parse_group.get(name, -2) == self.sending_group
        return (
            self._touches.get(name) == 1
            and self._parse_group.get(name, -2) == self.sending_group
            and _EVERY_NAME not in self._unconfirmed
        )

    def _decided_again(self, name: str) -> Verdict:
        """A Bind of statement ``name`` after the catalog changed: its text decided again on
        the current snapshot (the server analyses it again)."""
        del self.rebind[name]
        if name in self._unconfirmed and name not in self._fresh and not self._bound_to_its_parse(name):
            return self._refused(_bind_of(name), Decision(
                False, "deny.catalog",
                f"may not run statement {name!r} after the catalog changed before the server "
                "answered the message that prepared it: which text it holds is not known yet "
                "(send the Bind after that answer)",
            ))  # fmt: skip
        known = self._statements.get(name)
        prepared = self._prepared_statements.get(name) if known is None else None
        if prepared is not None:  # a SQL-level PREPARE, bound over the protocol
            decision = self._at_bind(lambda: self._decide(prepared))
            pair = (prepared, decision)
            if decision.allowed:
                verdict = Verdict(True, (pair,), "")
                self._ran_ddl((pair,), bound=True)  # code it runs that may run DDL: as EXECUTE
                self._stale_write(verdict, False)
                return verdict
            return self._refused(prepared, Decision(
                False, decision.rule,
                f"{decision.reason} (PREPARE {name}, prepared before the catalog changed, "
                "decided again at its Bind)",
            ))  # fmt: skip
        if known is None:
            denial = Decision(
                False, "deny.catalog",
                f"may not run statement {name!r}: the proxy no longer holds its text to "
                "decide it again (the catalog changed since it was prepared, or code that "
                "may replace statements ran; prepare it again)",
            )  # fmt: skip
        else:
            sql, param_types = known
            verdict = self._at_bind(
                lambda: self.check_parse(sql, param_types, name, can_wait=False, again=True)
            )
            if verdict.allowed:
                return verdict
            else:
                pairs = verdict.decisions
                denial = next((d for _, d in pairs if not d.allowed), None) or Decision(
                    False, "deny.catalog", verdict.message
                )
                denial = Decision(
                    False, denial.rule,
                    f"{denial.reason} (statement {name!r}, prepared before the catalog "
                    "changed, decided again at its Bind)",
                )  # fmt: skip
        return self._refused(_bind_of(name), denial)

    def _check_parse_text(self, sql: str) -> Verdict:
        self._follow_catalog()
        if self._precomputed:
            pre = self._from_precomputed(sql)
            if pre is not None:
                return pre
        verdict = self._cached(sql)
        if verdict is not None:
            return verdict
        self.caches.stats["misses"] += 1
        return self._store(sql, self._classify(sql, use_fingerprints=False))

    def _param_types(self, oids: tuple[int, ...]) -> Decision | None:
        """None if every parameter type given by OID runs nothing the grant may not call."""
        if self.catalog is None:
            return None  # offline: no catalog to read OIDs with (the proxy always has one)
        snap = self._snapshot_seen
        for oid in oids:
            if oid < FIRST_NORMAL_OID:
                continue
            if snap is None or (oid not in snap.type_oids and oid not in snap.known_type_oids):
                why = "no catalog loaded" if snap is None else "made after the catalog was loaded"
                return Decision(
                    False, "scope.execute",
                    f"may not bind a parameter of type OID {oid}: a type the proxy cannot "
                    f"read ({why}), whose values may run user-written functions",
                )  # fmt: skip
            for target in sorted(snap.type_oids.get(oid, ())):
                denial = self._call_of(
                    target, f"a parameter of type OID {oid} runs {target} (a domain constraint or a cast)"
                )
                if denial is not None:
                    return denial
        return None

    def _call_of(self, target: str, why: str) -> Decision | None:
        """``target`` ("schema.fn") runs because of what ``why`` says: decided like a call
        of it by name (an execute scope), the denial saying why."""
        denial = check_function(target, self.scopes)
        if denial is None:
            return None
        return Decision(False, denial.rule, f"{denial.reason}: {why}")

    def _overruled(self, verdict: Verdict, denial: Decision) -> Verdict:
        """``verdict`` with ``denial`` in its first statement's place."""
        pairs = verdict.decisions
        pairs = ((pairs[0][0], denial), *pairs[1:])
        if self.enforce:
            return Verdict(False, pairs, self._message(denial))
        return Verdict(True, pairs, "", would_deny=True)

    def may_hear(self, channel: str) -> bool:
        """May a notification on ``channel`` (as the server names it) reach the client? Only
        on a channel a ``listen:`` scope names, as a LISTEN of it must (``decide._listen``):
        code the grant may run can LISTEN too, where the policy does not see it (red-team
        round 79). A dry run withholds nothing."""
        return not self.enforce or self.scopes.allows_listen(channel)

    def may_read(self, schema: str, table: str) -> bool:
        """May this grant read ``schema.table``, as the server names a relation in an error
        (``proxy.redaction``)? A temporary schema (``pg_temp_3``) is the session's own."""
        if schema.startswith("pg_temp_"):
            schema = "pg_temp"
        return check_read(render_name(schema, table), self.scopes) is None

    def writes_unreadable(self, verdict: Verdict) -> bool:
        """Does this allowed statement write rows of a relation the grant may write but
        not read, or of one with triggers or rules or that is a view (``_writes_reach_unseen``),
        or update or delete rows of one whose foreign-key actions write a relation the grant
        may not read (``Snapshot.cascades``)? The server then evaluates code on rows the
        grant may not read (a CHECK or a generated column on an updated row's stored
        values, an expression index, a trigger or rule updating another table, a view's
        base table), and an error or notice raised there (a cast failing, a trigger's
        RAISE) may quote a stored value without naming the relation
        (``proxy.redaction.withhold_message``). It also marks a statement that runs code on
        rows the grant may not read (``hidden_read``, ``_hides_rows``)."""
        if self._write_on_stale:  # (``_stale_write``: decided on a stale snapshot)
            self._write_on_stale = False
            return True
        if self.catalog_entry is not None:
            self._mark_write()  # (any statement: a read may call code that writes)
        snap = self._snapshot_seen
        if snap is not None and (
            snap.view_bases or snap.view_calls or snap.policy_exprs_role or snap.matview_bases
        ):
            self.hidden_read = self.hidden_read or self._hides_rows(verdict, snap)
        if len(verdict.decisions) > 1 and self.catalog is not None and any(
            c.cls is StatementClass.DDL or c.cls is StatementClass.UNKNOWN
            for c, _ in verdict.decisions
        ):
            # DDL earlier in the message (a rename): the snapshot it left, not the one the
            # message was decided on (red-team round 27)
            snap = self.catalog() or snap
        if self._blind_snapshot is not snap:  # the memo below is per snapshot
            self._blind_writes.clear()
            self._blind_snapshot = snap
        for classified, _decision in verdict.decisions:
            ops = classified.write_ops
            if not ops:
                if classified.command == "EXECUTE" and classified.detail in self._prepared_statements:
                    ops = self._prepared_statements[classified.detail].write_ops
                    if not ops:
                        continue
                else:
                    continue
            blind = self._blind_writes.get(ops)
            if blind is None:  # once per set of write operations (a frozenset: hash kept)
                blind = any(op in _ROW_WRITES and self._writes_reach_unseen(rel, snap)
                            for op, rel in ops)  # fmt: skip
                if len(self._blind_writes) >= 256:
                    self._blind_writes.clear()
                self._blind_writes[ops] = blind
            if blind:
                return True
        if snap is None or not snap.cascades:
            return False
        seen, reach = self._unreadable_reach
        if seen is not snap:  # worked out once per snapshot, not per statement
            reach = frozenset(
                rel for rel, targets in snap.cascades.items()
                if any(check_read(target, self.scopes) is not None for target in targets)
            )  # fmt: skip
            self._unreadable_reach = (snap, reach)
        unsettled = snap.unsettled
        for classified, _decision in verdict.decisions:
            for op, rel in classified.write_ops:
                if (op == "update" or op == "delete") and (
                    rel in reach or (unsettled and not reach.isdisjoint(unsettled.get(rel, ())))
                ):  # (renamed in a transaction that may be open: any of its names)
                    return True
        return False

    def _writes_reach_unseen(self, rel: str, snap: Snapshot | None) -> bool:
        """May a row write to ``rel`` run the server's code on rows this grant may not
        read: ``rel`` is not readable, or it has triggers (its own or a child's), rules,
        or is a view (its base relations' CHECKs and triggers: red-team round 19)? With
        no snapshot, every write might."""
        if check_read(rel, self.scopes) is not None:
            return True
        if rel.startswith("pg_temp."):
            return False  # the session's own
        if snap is None:
            return True
        # renamed in a transaction that may still be open: it may be any of the names
        # involved (``_through_renames``)
        for name in snap.unsettled.get(rel, (rel,)):
            if name in snap.triggered or name in snap.ruled or name in snap.view_names:
                return True
        return False

    def _mark_write(self) -> None:
        """A statement that may write rows is allowed now: the catalog's count, this
        session's own share of it, and whether another session's DDL block is open
        (``writes_moved``). The oldest mark holds until everything is answered (round 37:
        a later write's mark hid an earlier one still running)."""
        entry = self.catalog_entry
        mark = self.write_mark
        if mark is None:
            others = entry.blocks_open > (1 if self._block_counted else 0)
            self.write_mark = (entry.epoch, self._own_bumps, others)
        elif not mark[2] and entry.blocks_open > (1 if self._block_counted else 0):
            self.write_mark = (mark[0], mark[1], True)

    def writes_moved(self) -> bool:
        """May a row write allowed since the server last answered everything run code its
        decision's snapshot did not know: another session's DDL block was open when it was
        decided, or another session's DDL went through (or ended) since? Then what the
        server says now is withheld (the relay, ``proxy.redaction.withhold_message``)."""
        mark = self.write_mark
        if mark is None or self.catalog_entry is None:
            return False
        epoch, own, open_then = mark
        return open_then or self.catalog_entry.epoch - epoch > self._own_bumps - own

    def writes_done(self) -> None:
        """The server answered everything sent: the writes marked have run."""
        self.write_mark = None

    def check_function_call(self) -> Verdict:
        """Frontend FunctionCall (fast-path by OID): never allowed, it bypasses classification."""
        reason = "may not use the fast-path FunctionCall message"
        if self.enforce:
            return Verdict(False, (), self._message(Decision(False, "deny.function_call", reason)))
        # a dry run lets it through: a function by OID, any function, counts as code that
        # may run DDL and replace statements (red-team round 51)
        pairs = ((_FUNCTION_CALL, Decision(False, "deny.function_call", reason, True)),)
        self._ran_ddl(pairs)
        return Verdict(True, pairs, "", would_deny=True)

    def needs_offload(self, sql: str) -> bool:
        """Should the proxy classify ``sql`` off the event loop before checking it?"""
        return len(sql) >= OFFLOAD_MIN and sql not in self._precomputed

    def offload_job(self, sql: str):
        """(function, args) to run in another process: its result goes to ``precomputed``."""
        return classify_text, (sql, self.search_path)

    def precomputed(self, sql: str, classified: tuple[Classified, ...]) -> None:
        """``classify_text``'s result for ``sql``: the next check of ``sql`` decides on it."""
        self._precomputed[sql] = classified

    @property
    def prepared_names(self) -> frozenset[str]:
        return self._prepared.names()

    # -- internals -----------------------------------------------------------------------
    def _follow_catalog(self) -> None:
        """A new catalog snapshot changes decisions (not classifications): drop this
        session's cached decisions when it arrives, and after a statement whose decision
        rested on the snapshot being complete (``_describe_refusal``): it is decided again
        next time, on a snapshot loaded after it arrives."""
        snap = self.catalog() if self.catalog is not None else None
        if snap is not self._snapshot_seen:
            self._snapshot_seen = snap
            if snap is not None:
                if not snap.stale:
                    self._own_unfollowed = False  # it shows what its DDL made
                    self._attached_unloaded = self.ddl_open and self._ddl_attached
                self.encoding_code = snap.encoding_code
                if snap.temp_code:
                    self._temp_any = True  # (decisions are forgotten below)
                if self._removed_relations or self._made_relations:
                    self._moved_seen(snap)
                if snap.portal_code != self._portal_code_seen:
                    self._portal_code_seen = snap.portal_code
                    self._watch_portals(snap.portal_code)
            self._complete_used = False
            self.caches.forget_decisions()
        elif self._complete_used:
            self._complete_used = False
            self.caches.forget_decisions()

    def _describe_refusal(
        self, describes: frozenset[str], defer_params: bool, can_wait: bool = True
    ) -> str | None:
        """``describe_refusal``; where the answer rests on the snapshot listing every object
        of a kind (``needs_complete``: another session may have made one since it was
        loaded), on a snapshot loaded after the statement arrived: ``CatalogWait`` (the
        proxy reloads, then checks again), or with ``can_wait`` False (a Bind) a refusal."""
        snap = self._snapshot_seen
        why = describe_refusal(describes, self.scopes, snap, defer_params, self.search_path)
        if (
            snap is not None
            and self.on_stale is not None
            and rests_on_completeness(describes, self.scopes, snap, defer_params, self.search_path)
        ):
            self._complete_used = True  # decided for this statement only, never cached
            waited = self.waiting_since
            if waited is None or snap.loaded_at < waited:
                if waited is not None or not can_wait:  # reloaded (or could not wait): still old
                    self.waiting_since = None
                    return why or stale_refusal(snap, monotonic())
                self._wait_for_a_load()
            self.waiting_since = None
        return why

    def _from_shape(self, sql: str) -> Verdict | None:
        """What ``_from_fingerprints`` would answer for a text whose number shape was seen
        with a single plain statement (``SessionCaches.remember_shape``), by one lookup:
        the same classification and decision, in the shape's own ``ShapeVerdict`` (its
        statement's text the shape's first: ``exact`` gives this text's), or with this
        text's own statement where the portals' books read it.

        PostgreSQL's scanner is not run again: it read a text of this shape when the shape
        was remembered (``boundaries_agree_in_place``), and it splits every text of a
        remembered shape at the same places (docs/decisions.md, "PostgreSQL's scanner and
        the number-shape tier"; tests/unit/test_number_shapes.py attacks it). It still
        reads every text that misses or is answered by fingerprint.
        tests/unit/test_engine_cached.py compares this path with the reference path."""
        # the number-shape tier (SessionCaches.shapes) read here: the hottest after the text
        if len(sql) > MAX_SHARED_TEXT:
            return None
        try:
            hit = self.caches.shapes.get(sql.encode("utf-8", "surrogatepass").translate(_ZERO))
        except UnicodeError:  # a lone surrogate: no shape
            return None
        if hit is None:
            return None
        if not self.portals_watched:
            return hit[4]  # (its texts: ``exact``)
        # the portals' books read names from the text (policy/portals.py): its own
        lead, tail, classified, decision, _shape = hit
        return _allowed(((with_sql(classified, sql[lead : len(sql) - tail]), decision),))

    def _from_precomputed(self, sql: str) -> Verdict | None:
        classified = self._precomputed.pop(sql, None)
        if classified is None:
            return None
        try:
            pairs = tuple((c, self._decide(c)) for c in classified)
        except CatalogWait:
            self._precomputed[sql] = classified  # decided after the reload, not again off-loop
            raise
        self.caches.stats["misses"] += 1
        return self._store(sql, pairs)

    def _decide(self, c: Classified) -> Decision:
        d = self._decision(c)
        if d.allowed:
            if self._runs_ddl_code(c):
                return Decision(True, d.rule, d.reason, True)
            return d
        if not self.enforce and (c.cls in _RUNS_ANYTHING or self._runs_ddl_code(c)):
            # a dry run runs what it would refuse: followed as what it may be, DDL or code
            # that may run it and replace statements, so every session's policy learns of
            # it (red-team round 51: a dry run's DO, ALTER FUNCTION ... RENAME, call outside
            # its scope changed what another grant's statements ran, unseen)
            return Decision(False, d.rule, d.reason, True)
        return d

    def _runs_ddl_code(self, c: Classified) -> bool:
        """May ``c`` run user-written code that may run DDL (``Snapshot.ddl_functions``,
        DDL_CODE_SQL)? Then the statement counts as DDL (``_verdict``: ``on_ddl``,
        ``ddl_open``): the DDL that code runs is followed as the proxy's own is (red-team
        round 34: a granted function's CREATE TRIGGER). ``_runs_code`` says where."""
        snap = self._snapshot_seen
        if snap is None or not snap.ddl_functions:
            return False
        return self._runs_code(c, snap, snap.ddl_functions, snap.ddl_relations, snap.ddl_objects)

    def _runs_names_code(self, c: Classified) -> bool:
        """May ``c`` run user-written code that may also prepare or remove statements
        (``Snapshot.names_functions``, ``names_relations``)? Where objects use such code,
        a write to a triggered or ruled relation or a view read may too."""
        snap = self._snapshot_seen
        if snap is None or not snap.names_functions:
            return False
        if self._runs_code(
            c, snap, snap.names_functions, snap.names_relations, bool(snap.names_relations)
        ):
            return True
        # code that may run DDL fires the event triggers DDL fires (red-team round 45: a
        # granted function's RENAME ran a trigger's function that replaced statements)
        return (
            bool(snap.event_functions)
            and not snap.event_functions.isdisjoint(snap.names_functions)
            and self._runs_ddl_code(c)
        )

    def _run_by(self, c: Classified) -> Classified:
        """What ``c`` runs: for ``EXECUTE q``, the statement ``q`` prepared (its own
        classification names only its arguments' code: red-team round 43)."""
        if c.command == "EXECUTE":
            return self._prepared_statements.get(c.detail, c)
        return c

    @staticmethod
    def _runs_code(
        c: Classified, snap: Snapshot, fns: frozenset[str], rels: frozenset[str], objects: bool
    ) -> bool:
        """May ``c`` run one of functions ``fns``? A call of one, an operator or a value of
        a type that runs one; a read or write of a relation whose objects run one
        (``rels``: row security, triggers, rules, constraints, views over them); a write
        of rows whose types run one, values a cast by one converts; where objects use one
        (``objects``), a row write to a relation with triggers or rules, a view or ruled
        relation read."""
        if not c.functions.isdisjoint(fns) or not c.attributes.isdisjoint(fns):
            return True
        # code no statement names, run where ``_casts`` asks an execute scope for it (red-team
        # round 44): a superuser's cast between system types, an event trigger's function
        if (snap.global_casts and c.cls in _EVALUATES and not snap.global_casts.isdisjoint(fns)
                and not _converts_nothing(c)):
            return True
        if (snap.event_functions and c.cls in _FIRES_EVENT_TRIGGERS
                and not snap.event_functions.isdisjoint(fns)):
            return True
        for op in c.operators:
            targets = snap.user_operators.get(op)
            if targets and not targets.isdisjoint(fns):
                return True
        for t in c.types:  # a value of the type runs its domain's constraints, a cast
            targets = snap.user_types.get(t)
            if targets and not targets.isdisjoint(fns):
                return True
        if rels and (not rels.isdisjoint(c.reads) or not rels.isdisjoint(c.writes)):
            return True  # its row security, triggers, rules... (or a view's over them)
        for r in c.writes:  # a row of it made: its columns' domains (CHECK, DEFAULT), at
            targets = snap.user_types.get(r)  # any depth (arrays, row types, domains over
            if targets and not targets.isdisjoint(fns):  # domains; red-team round 39)
                return True
        # (every row security policy's too: the session may log in as a role of its own)
        relation_casts = _relation_casts(snap, True)
        if relation_casts:
            for r in c.reads | c.writes:  # its values converted (an assignment cast)
                targets = relation_casts.get(r)
                if targets and not targets.isdisjoint(fns):
                    return True
        if not objects:
            return False
        triggered = snap.triggered
        for r in c.writes:
            if r in triggered or r in snap.ruled:
                return True
            if any(x in triggered for x in snap.cascades.get(r, ())):
                return True  # its foreign-key actions write a triggered relation
        return any(r in snap.view_names or r in snap.ruled for r in c.reads)

    def _decision(self, c: Classified) -> Decision:
        d = decide(c, self.scopes, self._backends(c))
        if not d.allowed:
            return d
        if self._temp_any and (c.reads or c.write_ops):
            denial = self._temp_of_code(c)
            if denial is not None:
                return denial
        if self.encoding_code:
            denial = _setting_of_code(c)
            if denial is not None:
                return denial
        if c.command in STATEFUL_COMMANDS and c.detail and name_too_long(c.detail):
            return _LONG_NAME(c.detail)
        describes = c.describes
        settings = _setting_pins(describes) if describes else describes
        if settings or not c.functions.isdisjoint(_BY_PARAMETER):
            denial = _settings_by_parameter(c, settings)
            if denial is not None:
                return denial
            describes = describes - settings
        if describes:
            # a parameter pin is decided at each Bind of a protocol-level Parse; a SQL-level
            # PREPARE's EXECUTE is not checked so: there it pins nothing
            why = self._describe_refusal(describes, c.command != "PREPARE")
            if why is not None:
                return Decision(False, "deny.catalog", why)
        if c.cls is StatementClass.DDL:
            denial = (
                self._defines_a_built_in_name(c) or self._defines_code(c)
                or self._shadowing_temp(c)
            )  # fmt: skip
            if denial is not None:
                return denial
        if self.catalog is not None:
            types = c.types
            if c.reads and (
                not c.functions.isdisjoint(_POPULATE)
                or any(op == "ddl" for op, _ in c.write_ops)
            ):
                # a row of a relation read here rebuilt from chosen values, or a relation
                # made from one (CREATE TABLE AS, SELECT INTO, LIKE, a view) whose columns
                # keep their types for writes of chosen values: values of its row type
                # (its domain columns' constraints and defaults run on them)
                types = types | c.reads
            snap = self._snapshot_seen
            if (c.functions or c.attributes) and snap is not None and snap.function_types:
                # what a called function takes or returns: values of those types are made
                # or converted around the call (round 28: f()::text, an argument's implicit
                # cast or domain CHECK); column syntax may be a call too (round 29)
                types = types | self._function_types(
                    c.functions | (c.attributes - {DERIVED_ROWS}), snap)  # fmt: skip
            if c.functions or c.operators or types:
                denial = self._shadowed(c.functions, c.operators, self._snapshot_seen, types)
                if denial is not None:
                    return denial
            denial = self._casts(c)
            if denial is not None:
                return denial
            denial = (
                self._through_renames(c)
                or self._through_views(c)
                or self._through_inheritance(c)
                or self._beyond_its_objects(c)
                or self._through_inlining(c)
                or self._policies_read(c)
                or self._explained_code(c)
                or self._code_state_read(c)
            )
            if denial is not None:
                return denial
        if not c.attributes or d.rule == "default.housekeeping":
            # housekeeping's one shape with column syntax (its own pg_stat_activity row)
            # names only that view's real columns, which PostgreSQL resolves before calls
            return d
        snap = self._snapshot_seen
        relations = c.reads | c.writes
        if self._temp_names or self._temp_any:
            relations = self._maybe_temporary(relations)
        denial = self._column_syntax(attribute_calls(c.attributes, relations, snap))
        if denial is None:
            return d
        if snap is not None and snap.stale:
            # DDL went through since the load (a table just made, a column just added):
            # every name counts as a call until a load shows it; decided on that load
            return self._after_a_load(snap, denial)
        return denial

    def _temp_of_code(self, c: Classified) -> Decision | None:
        """Where user-written code may make temporary relations (``_temp_any``): a read (or
        a row write) of one this session's own statements did not make (``_temp_own``,
        ``_temp_tx``, ``_temp_text``, a claim of this Sync group) is refused. A
        temporary relation is readable with no scope because the session filled it; one
        code made and filled (``CREATE TEMP TABLE ... AS SELECT`` from a relation the grant
        may not read, a trigger staging rows) holds what the code read (red-team round 79).
        A name the snapshot knows no relation of in a schema of the search path may be such
        a relation too: with ``pg_temp`` pinned last, the server finds it there (and a name
        nowhere fails anyway; one the session made since the load is refused until a load
        shows it: which schema it is in, the name alone does not say)."""
        temps = self._temp_own.union(self._temp_tx, self._temp_text)
        group = self.sending_group
        same = [n for n, v in self._temp_claims.items() if v[0] == group]
        if same:
            # made earlier in this Sync group: if it failed, the server skips the rest of
            # the group, this statement too (red-team round 80: pipelined CREATE, INSERT)
            temps = temps.union(same)
        for op, rel in sorted(c.write_ops):
            # (a row written there reaches what the code does with the table next, and its
            # constraints' errors quote the rows it holds; DDL making or dropping one is not
            # refused: what it reads is among the reads)
            if op != "ddl" and rel.startswith(_TEMP_PREFIX) and rel[len(_TEMP_PREFIX) :] not in temps:
                return Decision(False, "deny.temp", (
                    f"may not {op} {rel}: code in this database may make temporary relations, "
                    "and this session's own statements did not make this one"))  # fmt: skip
        # what it reads, and the relations it writes rows of by a name outside pg_temp (an
        # unqualified INSERT, UPDATE, DELETE, MERGE or COPY FROM of a name nowhere on the
        # path changes code's temporary table of it: red-team round 90)
        named = [(rel, "read") for rel in sorted(c.reads)]
        named += [(rel, op) for op, rel in sorted(c.write_ops)
                  if op != "ddl" and not rel.startswith(_TEMP_PREFIX)]  # fmt: skip
        if not named:
            return None
        snap = self._snapshot_seen
        # the temporary relations this statement makes: an unqualified name of one is that
        # one (a foreign key of a new temporary table naming the table itself); if code had
        # made one of the name before, the CREATE fails before its query reads a row
        made_here = _temp_made(c)
        for rel, op in named:
            if rel.startswith(_TEMP_PREFIX):
                if rel[len(_TEMP_PREFIX) :] in temps:
                    continue
                why = "code in this database may make temporary relations, and this session's own statements did not make this one"
            else:
                parts = split_name(rel)
                if (
                    parts is None or parts[1] is None or parts[0] in _CATALOG_SCHEMAS
                    # a schema the path does not name: the name was written qualified, and
                    # the server looks there only (an unqualified one is rendered in the
                    # path's first schema)
                    or parts[0] not in self.search_path
                    or render_name(parts[1]) in temps or render_name(parts[1]) in made_here
                ):  # fmt: skip
                    continue
                # (an unqualified name: a relation of a schema on the path before pg_temp, as
                # the server surely finds it: ``_on_path_as``; one of a schema off the path
                # is not what the server finds: round 80)
                if self._on_the_path(parts[1]):
                    if self._temp_any and (self._code_open or self._code_text):
                        # code that may run DDL ran in this transaction, still open: it may
                        # have dropped the relation the snapshot shows and made code's
                        # temporary one of the name, and no load shows an open transaction
                        self._complete_used = True  # (for this transaction only)
                        return Decision(False, "deny.temp", (
                            f"may not {op} {rel}: code that may run DDL ran in this "
                            "transaction, and may have dropped or moved that relation and "
                            "made a temporary one of its name, which the server would find "
                            "instead; no catalog load shows a transaction still open: read it "
                            "before that code runs, or after the transaction ends"))  # fmt: skip
                    if snap is not None and self._code_moved_since(snap):
                        # code that may run DDL ran since the load and its transaction has
                        # ended (a granted function's DROP TABLE t, then its own pg_temp.t:
                        # red-team round 90): decided on a load after it, once
                        self._complete_used = True
                        self._wait_for_a_load()
                    continue
                nowhere = Decision(False, "deny.temp", (
                    f"may not {op} {rel}: no relation of that name is known outside the "
                    "temporary schema, and code in this database may make temporary "
                    "relations, which an unqualified name finds there"
                ), sqlstate=UNDEFINED_TABLE)  # (the server's answer where it is nowhere)
                if snap is not None and snap.stale:
                    # DDL went through since the load (another session's new table): decided
                    # on a load that started after this statement arrived
                    return self._after_a_load(snap, nowhere)
                return nowhere
            return Decision(False, "deny.temp", f"may not {op} {rel}: {why}")
        return None

    def _maybe_temporary(self, relations: frozenset[str]) -> frozenset[str]:
        """``relations`` and, for each whose name is one of this session's temporary
        relations (``_temp_names``), or, in a database whose user-written code may make
        them (``_temp_any``), one no schema of the search path has a relation of in the
        snapshot or among what the session made since (``_on_the_path``), that one: with
        ``pg_temp`` pinned last, an unqualified name is found there only where no schema
        before it has one (the read path, ``_temp_of_code``, decides the same way; the
        drivers' differential of session 37: EXPLAIN of every table was refused)."""
        temps = self._temp_names
        extra = set()
        for rel in relations:
            parts = split_name(rel)
            if parts is not None and parts[1] is not None and parts[0] != "pg_temp":
                bare = render_name(parts[1])
                if bare in temps or (self._temp_any and not self._on_the_path(parts[1])):
                    extra.add(_TEMP_PREFIX + bare)
        return relations | extra if extra else relations

    def _on_the_path(self, name: str) -> bool:
        """Does a schema of the search path before ``pg_temp`` have a relation ``name`` in
        the snapshot, or one this session made since its load?"""
        for schema in self.search_path:
            if schema == "pg_temp":
                return False  # (a path naming it first: the temporary one is found first)
            if self._on_path_as(render_name(schema, name)):
                return True
        return False

    def _code_moved_since(self, snap: Snapshot) -> bool:
        """May code that may run DDL have dropped or moved a relation ``snap`` shows, in a
        transaction that has ended since it was loaded (``_Entry.code_window``), and may
        this statement wait for a load (not already waited: ``waiting_since``)? Inside an
        open block no load could show it (round 90's residue, documented)."""
        entry = self.catalog_entry
        if entry is None or self.on_stale is None or self.waiting_since is not None:
            return False
        ended = entry.code_ended
        return ended is not None and ended != float("-inf") and snap.loaded_at <= ended

    def _on_path_as(self, rel: str) -> bool:
        """Is ``rel`` ("schema.name", a schema of the path) a relation the server surely
        finds: made by this session's DDL (``_made_relations``: answered, or in this Sync
        group), or in the snapshot and not dropped, renamed or moved away by the session's
        DDL since a load asked for after that DDL's transaction ended?"""
        group = self._made_relations.get(rel)
        if group is not None:
            self._complete_used = True  # (rests on what the server answered so far: not cached)
            if group < self._made_answered or group == self.sending_group:
                return True
        snap = self._snapshot_seen
        if snap is None or rel not in snap.columns:
            return False
        if rel in self._removed_relations:
            ended = self._removed_relations[rel]
            if ended is None or snap.loaded_at <= ended:
                self._complete_used = True  # (the same)
                return False
        return True

    def _moved_seen(self, snap: Snapshot) -> None:
        """A new snapshot: what the session's DDL made or removed that it shows as it is
        (loaded after that DDL's transaction ended, or answered and among its relations)
        needs no book of the session's any more."""
        removed = self._removed_relations
        if removed:
            for rel in [r for r, ended in removed.items()
                        if ended is not None and snap.loaded_at > ended]:  # fmt: skip
                del removed[rel]
        made = self._made_relations
        if made and not snap.stale:
            for rel in [r for r, g in made.items() if g < self._made_answered and r in snap.columns]:
                del made[rel]

    def _function_types(self, functions: frozenset[str], snap: Snapshot) -> frozenset[str]:
        """The user types the functions a statement calls take or return, under every name
        an unqualified call may resolve to (``Snapshot.function_types``)."""
        out: set[str] = set()
        known = snap.function_types
        for fn in functions:
            for name in self._call_names(fn, snap):
                out.update(known.get(name, ()))
        return frozenset(out)

    def _call_names(self, fn: str, snap: Snapshot) -> list[str]:
        """Every function a call of ``fn`` may run: itself if qualified; unqualified, as the
        search path resolves it, or a user's of that name."""
        if split_name(fn) is not None:
            return [fn]
        return [*function_names(None, fn, self.search_path), *snap.user_functions.get(fn, ())]

    def _casts(self, c: Classified) -> Decision | None:
        """User-written code that runs on values with no call written (red-team rounds 26-31),
        each decided like a call of it by name (an execute scope): casts and default
        operator classes of system types (a superuser's), for every statement that converts
        or compares anything; event triggers' functions, for DDL; an operator class the
        statement names (``CREATE INDEX ... (a s.ops)``); for every relation it reads or
        writes, the casts and operator classes of the user types its values are made of and
        of its indexes and partition keys, and what its plan folds (``Snapshot.relation_casts``);
        and what the argument defaults of the functions it calls call (round 81)."""
        snap = self._snapshot_seen
        if snap is None:
            return None
        if snap.global_casts and c.cls in _EVALUATES and not _converts_nothing(c):
            for fn in sorted(snap.global_casts):
                denial = self._call_of(fn, f"a cast between system types runs {fn}, and a "
                                       "statement may convert a value by it without naming it")  # fmt: skip
                if denial is not None:
                    return denial
        if snap.event_functions and c.cls in _FIRES_EVENT_TRIGGERS:
            for fn in sorted(snap.event_functions):
                denial = self._call_of(fn, f"an event trigger runs {fn} on DDL")
                if denial is not None:
                    return denial
        if snap.opclass_functions:  # an operator class named (it is read as a relation)
            for name in sorted(c.reads):
                for fn in sorted(snap.opclass_functions.get(name, ())):
                    denial = self._call_of(fn, f"the operator class {name} runs {fn}")
                    if denial is not None:
                        return denial
        relation_casts = _relation_casts(snap, self.own_login)
        if relation_casts:
            for rel in sorted(c.reads | c.writes):
                for fn in sorted(relation_casts.get(rel, ())):
                    denial = self._call_of(fn, f"a statement on {rel} may run {fn} without "
                                           "naming it (a cast or operator class of its values, "
                                           "what its plan folds: an index, partition key, "
                                           "statistics object or CHECK, its row security "
                                           "policy, or SQL stored with it that may change "
                                           "the session's settings)")  # fmt: skip
                    if denial is not None:
                        return denial
        if (snap.fk_code or snap.check_functions) and c.write_ops:
            for op, rel in sorted(c.write_ops):
                if op == "lock":
                    continue
                reached = [rel]
                if op == "ddl" and rel not in c.only:
                    # DDL of a parent changes, checks and rebuilds its children and
                    # partitions too (red-team round 83)
                    reached += sorted(snap.descendants.get(rel, frozenset())
                                      | snap.partitions.get(rel, frozenset()))  # fmt: skip
                for target in reached:
                    for fn in sorted(snap.fk_code.get(target, ())):
                        denial = self._call_of(fn, f"a {op} of {rel} plans the queries of the "
                                               f"foreign keys of {target} on the relations "
                                               f"they link it with, which run {fn}")  # fmt: skip
                        if denial is not None:
                            return denial
                    if op != "ddl" or c.rows_idle:
                        continue  # (DDL that checks, recomputes and rebuilds no row: none run)
                    for fn in sorted(snap.check_functions.get(target, ())):
                        denial = self._call_of(fn, f"DDL of {rel} may check or rewrite the "
                                               f"rows of {target}, which runs {fn} (a CHECK, "
                                               "a generated column or an index)")  # fmt: skip
                        if denial is not None:
                            return denial
        if snap.argument_defaults and (c.functions or c.attributes):
            called = c.functions | (c.attributes - {DERIVED_ROWS})
            for target, fn in self._argument_defaults(called, snap):
                denial = self._call_of(fn, f"a call of {target} leaving an argument out runs "
                                       f"its default, which calls {fn}")  # fmt: skip
                if denial is not None:
                    return denial
        return None

    def _argument_defaults(
        self, functions: frozenset[str], snap: Snapshot
    ) -> list[tuple[str, str]]:
        """(function, what one of its argument defaults calls) for the functions a statement
        calls, under every name an unqualified call may resolve to: a call leaving the
        argument out runs the default in the calling statement (red-team round 81)."""
        out: set[tuple[str, str]] = set()
        known = snap.argument_defaults
        for fn in functions:
            for name in self._call_names(fn, snap):
                out.update((name, called) for called in known.get(name, ()))
        return sorted(out)

    def _through_views(self, c: Classified) -> Decision | None:
        """A view that hides rows of a relation the grant may not read is a wall only as a
        security barrier: otherwise PostgreSQL may run the statement's own conditions
        (``WHERE pin::int > 0``) on the rows it hides, and an error quotes their values
        (``Snapshot.views``). Refused then, saying how the view becomes one."""
        snap = self._snapshot_seen
        if snap is None or not (snap.views or snap.view_functions):
            return None
        named = c.reads | {rel for op, rel in c.write_ops if op != "ddl"}
        for rel in sorted(named):
            called = snap.view_functions.get(rel)
            if called is not None:
                # a function the view (or one under it) calls, which PostgreSQL may inline:
                # a view within the view (red-team round 52)
                denial = self._inlined_hides(called, snap, f"read {rel}: a view that calls")
                if denial is not None:
                    return denial
            reached = snap.views.get(rel)
            if reached is None:
                continue
            base = self._unreadable(sorted(reached))
            if base is not None:
                denial = Decision(
                    False, "deny.view",
                    f"may not read {rel}: a view that hides rows of {base}, which this "
                    "grant may not read, without being a security barrier (a condition "
                    "in the statement could be evaluated on the rows it hides; ALTER "
                    f"VIEW {rel} SET (security_barrier = true) keeps them out of reach)",
                )  # fmt: skip
                if snap.views_unread:  # (every view counted as hiding: a lock kept them)
                    return self._after_a_load(snap, denial)
                return denial
        return None

    def _through_inheritance(self, c: Classified) -> Decision | None:
        """A relation named without ONLY reaches the relations that inherit from it
        (``Snapshot.descendants``): a read returns their rows, an UPDATE, DELETE, TRUNCATE,
        LOCK or ALTER TABLE of it changes them too, and PostgreSQL asks for the parent's
        privilege alone. So each is decided as if the statement named it (``ONLY``, COPY's
        table and an INSERT's target name the relation alone: ``Classified.only``)."""
        snap = self._snapshot_seen
        if snap is None or not snap.descendants:
            return None
        descendants = snap.descendants
        only = c.only
        for rel in sorted(c.reads):
            if rel in only:
                continue
            for child in sorted(descendants.get(rel, ())):
                denial = check_read(child, self.scopes)
                if denial is not None:
                    return Decision(
                        False, denial.rule,
                        f"may not read {rel} without ONLY: its rows include those of {child}, "
                        f"which inherits from it ({denial.reason}; FROM ONLY {rel} reads "
                        "its own rows alone)",
                    )  # fmt: skip
        for op, rel in sorted(c.write_ops):
            if op == "insert" or rel in only:
                continue
            for child in sorted(descendants.get(rel, ())):
                denial = check_write(op, child, self.scopes)
                if denial is not None:
                    return Decision(
                        False, denial.rule,
                        f"may not {_INHERITED_VERBS.get(op, op)} {rel} without ONLY: the "
                        f"statement reaches {child}, which inherits from it ({denial.reason})",
                    )  # fmt: skip
        return None

    def _beyond_its_objects(self, c: Classified) -> Decision | None:
        """What a write or DDL changes beyond the objects it names, without CASCADE
        (red-team round 60), decided as if it named them: the rows foreign-key actions
        write (``Snapshot.cascades``: a DELETE's ON DELETE CASCADE / SET NULL / SET
        DEFAULT, an UPDATE's ON UPDATE ones, transitively), the partitions DDL of their
        partitioned table changes or drops (``Snapshot.partitions``), the columns
        elsewhere whose stored values an ALTER of their composite type, row type or enum
        changes (``Snapshot.type_users``), the extended statistics objects of other
        schemas an ALTER or DROP of their relation drops (``Snapshot.statistics``), and the
        publications a DROP of a relation they list changes (``Snapshot.published``)."""
        snap = self._snapshot_seen
        if snap is None or not c.write_ops or not (
            snap.cascades or snap.partitions or snap.type_users or snap.statistics
            or snap.published
        ):
            return None
        for op, rel in sorted(c.write_ops):
            if op in ("update", "delete") and snap.cascades:
                reached = self._actions_reach(
                    snap, rel, snap.cascades if op == "delete" else snap.update_cascades
                )
                needs = ("update",) if op == "update" else ("delete", "update")
                # a partition reached with its partitioned table is written as that table's,
                # as a statement naming the table writes it (PostgreSQL copies the foreign
                # key onto each partition: red-team round 85)
                covered: set[str] = set()
                for target in reached:
                    covered.update(snap.partitions.get(target, ()))
                for target in sorted(reached - covered):
                    for need in needs:
                        denial = check_write(need, target, self.scopes)
                        if denial is not None:
                            return Decision(False, denial.rule, (
                                f"may not {_INHERITED_VERBS[op]} {rel}: a foreign key's "
                                f"action (ON {op.upper()} CASCADE, SET NULL or SET DEFAULT) "
                                f"writes {target} ({denial.reason})"
                            ))  # fmt: skip
            if op != "ddl":
                continue
            if snap.published and c.command.startswith("DROP"):
                # a publication lists it: the drop removes it from the publication, which no
                # scope grants (an AUTO dependency RESTRICT does not protect: round 64)
                for owner in sorted({rel} | snap.partitions.get(rel, frozenset())
                                    | snap.descendants.get(rel, frozenset())):  # fmt: skip
                    for pub in sorted(snap.published.get(owner, ())):
                        return Decision(False, "scope.ddl", (
                            f"may not drop {rel}: the publication {pub} lists {owner}, and the "
                            "drop would remove it from the publication (no grant may change "
                            "a publication)"
                        ))  # fmt: skip
            for target, why in _ddl_reach(snap, c.command, rel, rel in c.only):
                denial = check_write("ddl", target, self.scopes)
                if denial is not None:
                    return Decision(False, denial.rule, f"{why} ({denial.reason})")
        return None

    def _hides_rows(self, verdict: Verdict, snap: Snapshot) -> bool:
        """Does this allowed statement run code on rows the grant may not read, where what
        it raises names no relation and may quote them (red-team round 86): a read of a view
        whose query reads a relation the grant may not read (a security barrier's own WHERE
        casting a hidden column, a function it calls raising) or calls user-written code,
        whose reads are not known (round 88: a view over a function reading such a view), of
        a relation with row security policies (a policy's expression failing on a row it
        hides), or REFRESH of a materialized view whose query reads one? The relay then
        withholds what the server says about it (``hidden_read``)."""
        seen_verdict, seen_snap, hides = self._hid
        if seen_verdict is verdict and seen_snap is snap:
            return hides
        hides = self._runs_on_hidden(verdict, snap)
        self._hid = (verdict, snap, hides)
        return hides

    def _runs_on_hidden(self, verdict: Verdict, snap: Snapshot) -> bool:
        """``_hides_rows``'s answer, worked out."""
        seen, reads, refreshes = self._hiding
        if seen is not snap:  # worked out once per snapshot, not per statement
            calls = snap.view_calls
            reads = frozenset(
                [v for v, bases in snap.view_bases.items() if self._unreadable(sorted(bases))
                 or any(calls.get(b) for b in bases)]  # (a view under it calls code)
                + [v for v, fns in calls.items() if fns]  # (what code reads is unknown)
                + list(snap.policy_exprs_role)
            )  # fmt: skip
            refreshes = frozenset(
                mv for mv, bases in snap.matview_bases.items() if self._unreadable(sorted(bases))
            )  # fmt: skip
            self._hiding = (snap, reads, refreshes)
        if not reads and not refreshes:
            return False
        for classified, _decision in verdict.decisions:
            if classified.command == "EXECUTE" and classified.detail in self._prepared_statements:
                classified = self._prepared_statements[classified.detail]
            if reads and not reads.isdisjoint(classified.reads):
                return True
            if refreshes and any(op == "ddl" and rel in refreshes for op, rel in classified.write_ops):
                return True
        return False

    def _actions_reach(
        self, snap: Snapshot, rel: str, actions: dict[str, frozenset[str]]
    ) -> set[str]:
        """The relations foreign-key ``actions`` (``Snapshot.cascades`` for a DELETE,
        ``update_cascades`` for an UPDATE) may write when rows of ``rel`` are written: its
        own actions', its partitions' and descendants', and through a view
        (``Snapshot.view_bases``, a view this session made: ``_own_views``; a temporary one
        of its name too) those of every relation under it (red-team round 61)."""
        reached: set[str] = set()
        seen: set[str] = set()
        todo = [rel]
        while todo:
            r = todo.pop()
            if r in seen:
                continue
            seen.add(r)
            reached.update(actions.get(r, ()))
            todo.extend(snap.partitions.get(r, ()))
            todo.extend(snap.descendants.get(r, ()))
            todo.extend(snap.view_bases.get(r, ()))
            if self._own_views:
                todo.extend(self._own_views.get(r, ()))
                parts = split_name(r)
                if parts is not None and parts[1] is not None and parts[0] != "pg_temp":
                    todo.extend(self._own_views.get(render_name("pg_temp", parts[1]), ()))
        return reached

    def _unreadable(self, rels) -> str | None:
        """The first of ``rels`` this grant may not read ("": a query not read), or None."""
        for rel in rels:
            if rel == "" or check_read(rel, self.scopes) is not None:
                return rel
        return None

    def _through_inlining(self, c: Classified) -> Decision | None:
        """A SQL function PostgreSQL may inline (``Snapshot.inlinable``) is a view without a
        barrier: the statement's conditions join its query's, and may run first on the rows
        its WHERE hides. Refused when that query reads a relation the grant may not read."""
        snap = self._snapshot_seen
        if snap is None or not c.functions or not (snap.inlinable or snap.inlinable_plain):
            return None
        return self._inlined_hides(c.functions, snap, "call")

    def _inlined_hides(
        self, functions, snap: Snapshot, what: str, seen: set[str] | None = None
    ) -> Decision | None:
        """The refusal of a statement whose conditions reach, through one of ``functions``
        PostgreSQL may inline, rows the grant may not read; None if none does. ``what``:
        how the statement reaches them ("call", or "read v: a view that calls")."""
        seen = set() if seen is None else seen
        for fn in sorted(functions):
            if fn in seen:
                continue
            seen.add(fn)
            names = snap.inlinable.get(fn)
            if names is None:
                plain = snap.inlinable_plain.get(fn)
                if plain is None or not (snap.views or snap.view_functions):
                    continue
                # its query hides no rows, but a view without a barrier it reads may: the
                # statement's conditions reach those rows (red-team round 52), or an
                # inlinable function such a view calls (round 53)
                reads = self._inlined_relations(plain, snap)
                for read in reads:
                    called = snap.view_functions.get(read)
                    if called:
                        denial = self._inlined_hides(called, snap, what, seen)
                        if denial is not None:
                            return denial
                rel = self._unreadable([
                    hidden for read in reads for hidden in snap.views.get(read, ())
                ])  # fmt: skip
                if rel is not None:
                    return Decision(
                        False, "deny.view",
                        f"may not {what} {fn}: a SQL function PostgreSQL may inline, whose "
                        f"query reads a view without a security barrier that hides rows of {rel}, "
                        "which this grant may not read (a condition in the statement could be "
                        "evaluated on the rows it hides)",
                    )  # fmt: skip
                continue
            rel = self._unreadable(self._inlined_relations(names, snap))
            if rel is not None:
                hidden = "a query the proxy cannot read" if rel == "" else f"rows of {rel}"
                return Decision(
                    False, "deny.view",
                    f"may not {what} {fn}: a SQL function PostgreSQL may inline, whose query "
                    f"hides {hidden}, which this grant may not read (a condition in the "
                    "statement could be evaluated on the rows it hides; ALTER FUNCTION "
                    f"{fn} VOLATILE, STRICT or SECURITY DEFINER keeps it from being inlined)",
                )  # fmt: skip
        return None

    def _inlined_relations(self, names, snap: Snapshot) -> list[str]:
        """The relations an inlined function's query reads, as this session resolves them
        (an unqualified name: every schema of the search_path), and what conditions reach
        through the views among them; "" for a query that could not be read."""
        out: list[str] = []
        for schema, name in names:
            if not name:
                out.append("")
                continue
            if schema is not None:
                rels = [render_name(schema, name)]
            elif name.startswith("pg_"):
                rels = [render_name("pg_catalog", name)]
            else:
                rels = [render_name(s, name) for s in self.search_path]
            for rel in rels:
                out.append(rel)
                out.extend(sorted(snap.views.get(rel, ())))
        return out

    def _code_state_read(self, c: Classified) -> Decision | None:
        """The text of the session's cursors and prepared statements (``pg_cursors``,
        ``pg_prepared_statements``: pgparse's SENSITIVE_COLUMNS) is code's own where
        user-written code may have left one (a PL/pgSQL OPEN, a trigger's, EXECUTE
        'PREPARE ...': red-team round 72), code a read:pg_catalog.pg_proc scope allows;
        in a database with no such code (``Snapshot.cursor_code``) it is the client's
        own (drivers list their prepared statements). Never cached."""
        read = c.reads & _CODE_STATE_READS
        if not read:
            return None
        self._complete_used = True
        snap = self._snapshot_seen
        if snap is not None and not snap.cursor_code:
            return None
        if self.scopes.allows_relation("read", "pg_catalog.pg_proc"):
            return None
        what = "pg_catalog.pg_cursors" if _CURSORS_TEXT in read else "pg_catalog.pg_prepared_statements"
        return Decision(
            False, "deny.catalog",
            f"may not read statement of {what}: user-written code in this database may "
            "leave cursors or prepared statements of its own in the session (a function's "
            "OPEN, EXECUTE 'PREPARE ...'), whose text is its code, which a "
            "read:pg_catalog.pg_proc scope allows",
        )  # fmt: skip

    def _explained_code(self, c: Classified) -> Decision | None:
        """A plan shows code: EXPLAIN of a statement naming a view prints the view's query
        (its filters and their literals), naming a relation with rules their actions, and
        calling a user-written function, directly or behind an operator, may print the
        function's body (PostgreSQL inlines a SQL function). Each is a definition the
        catalogs keep behind a scope (``pgparse.SENSITIVE_COLUMNS``), so EXPLAIN needs
        the same one."""
        snap = self._snapshot_seen
        if snap is None or not c.command.startswith("EXPLAIN"):
            return None
        self._complete_used = True  # (decided for this statement only: what is open now)
        entry = self.catalog_entry
        if entry is not None and entry.blocks_open > (1 if self._block_counted else 0):
            # another session's DDL is open: a load now cannot show what it attaches, and
            # the plan, waiting for its locks, shows it once it commits (red-team round 70:
            # a column default's body, a view's query replacing a table)
            return Decision(
                False, "deny.catalog",
                "may not EXPLAIN a statement while another session's DDL transaction is open "
                "(the plan may print code it attaches once it commits): send it once that "
                "transaction has ended",
            )  # fmt: skip
        if self.ddl_open or snap.stale:
            # what the session's own DDL attached (a default, a cast, a view) is not in the
            # snapshot until a load shows it (red-team round 64: EXPLAIN VERBOSE after SET
            # DEFAULT printed the body): in the DDL's transaction refused where that DDL
            # may have attached code (``_attaches_code``); after it, decided on a load that
            # started after it where it may have, or another session's DDL is newer (not
            # where only the session's own plain DDL is: asyncpg's CREATE TABLE then EXPLAIN
            # of a statement it prepared, decided again at its Bind, which cannot wait)
            denial = Decision(
                False, "deny.catalog",
                "may not EXPLAIN a statement while DDL is newer than the proxy's catalog "
                "snapshot (the plan may print code it attached): send it once the DDL's "
                "transaction has ended",
            )  # fmt: skip
            if self.ddl_open and self._ddl_attached:
                return denial  # (no load shows a block's DDL before it commits)
            if snap.stale and not (self._only_own_ddl(snap) and not self._attached_unloaded):
                # another session's DDL too, or the session's own that may have attached
                return self._after_a_load(snap, denial)  # code: a load after it decides
        scopes = self.scopes
        reach = self._reach(c, snap)
        # (what an inlined function's query reads is planned too: its views' queries show)
        named = sorted({rel for rel, _how in reach if rel is not None})
        for scope, shown, what in (
            ("pg_catalog.pg_views", snap.view_names, "the view {}: the plan shows its query"),
            ("pg_catalog.pg_rules", snap.ruled, "{}: the plan shows the actions of its rules"),
        ):
            if scopes.allows_relation("read", scope):
                continue
            for rel in named:
                if rel in shown:
                    return Decision(
                        False, "deny.catalog",
                        f"may not EXPLAIN a statement naming {what.format(rel)}, a definition "
                        f"a read:{scope} scope allows"
                        + ("" if rel in c.reads or rel in c.writes else " (reached, not named)"),
                    )  # fmt: skip
        if not scopes.allows_relation("read", "pg_catalog.pg_proc"):
            user = snap.user_functions
            for fn in sorted(c.functions):
                parts = split_name(fn)  # None: a bare name, rendered as the keys are
                if parts is None:
                    written = called_name(fn) in user
                else:
                    written = fn in user.get(render_name(parts[1] or ""), ())
                if written:
                    return self._explained_body(fn)
            for op in sorted(c.operators):
                if _user_operator(op, snap):
                    return self._explained_body(f"the operator {op}")
            for name in sorted(c.attributes):
                # (a name a user-written function has, with column syntax: a call unless
                # a column is named so; fail closed, columns are not mapped to relations)
                if name in user:
                    return self._explained_body(f"{name} (.{name} with column syntax may be a call)")
            for fn, how in self._unnamed_code(c, snap):
                return self._explained_body(f"{fn} without naming it ({how})")
            for rel in named:
                if rel in snap.ruled:
                    # (a rule's actions may call code and write where defaults run: round 68)
                    return self._explained_body(f"what the rules of {rel} run")
                for fn in sorted(snap.view_calls.get(rel, ())):
                    # a view's query's calls, its operators' functions (VIEW_FUNCTIONS_SQL)
                    return self._explained_body(f"{fn} without naming it (the query of {rel})")
        relations = c.reads | c.writes
        if self._temp_names or self._temp_any:
            # (an unqualified name is read as the search path's first schema's: only such
            # a name may be the session's temporary relation, not r.t written qualified)
            relations = relations | self._maybe_temporary(frozenset(
                rel for rel in relations if (split_name(rel) or ("",))[0] in self.search_path
            ))  # fmt: skip
        for rel in sorted(relations):
            if rel.startswith(_TEMP_PREFIX):
                # no catalog load reads a session's temporary relations as its own (round
                # 65: a temporary table's default copied LIKE another's, a temporary view)
                return Decision(
                    False, "deny.catalog",
                    f"may not EXPLAIN a statement that may name the temporary relation {rel}: "
                    "the proxy's catalog does not show what its defaults run or what a "
                    "temporary view reads",
                )  # fmt: skip
        for reached, what in reach:
            # a plan is estimated on the statistics of what it reads (a condition's row
            # estimate bisected a value of rows a barrier view never returns: round 63)
            if reached is None or (what and check_read(reached, scopes) is not None):
                return Decision(
                    False, "deny.catalog",
                    f"may not EXPLAIN a statement reading {what}: the plan's estimates come "
                    f"from the statistics of {reached or 'what that query reads'}, which this "
                    "grant may not read",
                )  # fmt: skip
        return None

    def _reach(self, c: Classified, snap: Snapshot) -> list[tuple[str | None, str]]:
        """(relation, how the statement reaches it) for every relation it names ("") and
        every one a plan of it reads without naming it: what a view reads (a security
        barrier's hidden rows too), the inheritance children of that, and the query of a
        SQL function PostgreSQL inlines, called by the statement or by a view's query
        (``Snapshot.view_calls``), transitively (red-team rounds 63-65); (None, how) for an
        inlined query the proxy cannot read."""
        out: list[tuple[str | None, str]] = []
        seen: set[tuple[str, bool]] = set()  # (a relation named and reached is both: round 67)
        todo: list[tuple[str, str]] = [(rel, "") for rel in sorted(c.reads | c.writes)]
        calls: list[tuple[str, str]] = [(fn, f"a call of {fn}") for fn in sorted(c.functions)]
        while todo or calls:
            if calls:
                fn, what = calls.pop()
                for schema, name in (*snap.inlinable.get(fn, ()), *snap.inlinable_plain.get(fn, ())):
                    if not name:
                        out.append((None, f"the query of {fn}, which the proxy cannot read"))
                    elif schema is not None:
                        todo.append((render_name(schema, name), what))
                    else:  # unqualified in the body: as the pinned path resolves it
                        todo += [(render_name(s, name), what) for s in self.search_path]
                continue
            rel, what = todo.pop()
            if (rel, not what) in seen:
                continue
            seen.add((rel, not what))
            out.append((rel, what))
            if what:  # reached, not named (a named one's children: _through_inheritance)
                todo += [(d, what) for d in sorted(snap.descendants.get(rel, ()))]
            through = what or f"the view {rel}"
            todo += [(b, through) for b in sorted(snap.view_bases.get(rel, ()))]
            calls += [(fn, through) for fn in sorted(snap.view_calls.get(rel, ()))]
        return out

    def _policies_read(self, c: Classified) -> Decision | None:
        """A row security policy answers, in which of the grant's own rows come back (or are
        refused on a write), what its expressions read (``USING (owner IN (SELECT secret
        FROM x.acc))``: red-team round 64; a pinned catalog, or SQL run by
        ``query_to_xml``: round 65). Every relation a statement names or reaches
        (``_reach``: a view's, an inlined function's) whose applicable policies
        (``Snapshot.policy_exprs``; every policy for a session of a role of its own) read
        relations the grant may not read (``policy_reads``) or do anything the grant may not
        is refused: each expression is decided as if the statement ran ``SELECT
        (expression) FROM relation`` (once per snapshot)."""
        snap = self._snapshot_seen
        if snap is None or not (snap.policy_reads_role or snap.policy_exprs_role):
            return None
        own = self.own_login
        # a plan shows a policy's subqueries too: under EXPLAIN each is decided as its own
        # EXPLAIN (the views it reads, the bodies it inlines, its estimates: round 67)
        explain = c.command.startswith("EXPLAIN")
        for under, how in self._reach(c, snap):
            if under is None or under in self._policy_stack:
                continue  # (a policy being decided: its own relation, or a cycle of them)
            if how or own or self._policy_stack:
                # reached through a view, PostgreSQL applies the policies as the view's
                # owner would see them (round 66), and a policy's own reads as whoever it
                # applies to (round 67): every policy counts, as for a session of a role of
                # its own
                reads, exprs = snap.policy_reads_role, snap.policy_exprs_role
            else:
                reads, exprs = snap.policy_reads, snap.policy_exprs
            for target in sorted(reads.get(under, ())):
                denial = check_read(target, self.scopes)
                if denial is not None:
                    return Decision(False, denial.rule, (
                        f"may not read {under}: its row security policy reads {target}, and "
                        f"which rows it lets through tells what that holds ({denial.reason})"
                    ))  # fmt: skip
            for quoted, expr in exprs.get(under, ()):
                denial = self._policy_decision(under, quoted, expr, explain)
                if denial is not None:
                    return Decision(False, denial.rule, (
                        f"may not read {under}: its row security policy runs what this grant "
                        f"may not, and which rows it lets through tells what that is "
                        f"({denial.reason})"
                    ))  # fmt: skip
        return None

    def _policy_decision(
        self, rel: str, quoted: str, expr: str, explain: bool = False
    ) -> Decision | None:
        """The refusal of ``SELECT (expr) FROM quoted`` (``explain``: of its EXPLAIN) for this
        grant, the policy's own relation ``rel`` (``quoted`` for SQL) left out of what it
        reads (the statement reads it, or a view the grant reads does), or None (cached per
        snapshot in ``_policy_decisions``); a text the classifier cannot read is refused."""
        key = (quoted, expr, explain)
        if self._policy_snapshot is not self._snapshot_seen:
            self._policy_snapshot = self._snapshot_seen
            self._policy_decisions = {}
        if key in self._policy_decisions:
            return self._policy_decisions[key]
        outer = self._policy_stack
        denial: Decision | None = None
        # what the expression reads is decided with its own policies too (round 66: a policy
        # reading a table whose policy reads a hidden one), each relation once per chain
        self._policy_stack = outer | {rel}
        try:
            text = f"SELECT ({expr}) FROM {quoted}"
            for classified in classify_text(f"EXPLAIN {text}" if explain else text, self.search_path):
                if rel in classified.reads:
                    classified = replace(classified, reads=classified.reads - {rel})
                d = self._decide(classified)
                if not d.allowed:
                    denial = d
                    break
        finally:
            self._policy_stack = outer
        if not outer:  # (within a chain a relation higher up was left out: not kept)
            self._policy_decisions[key] = denial
        return denial

    def _unnamed_code(self, c: Classified, snap: Snapshot) -> list[tuple[str, str]]:
        """(function, how) of the user-written code a statement runs without naming it, which
        its plan may print inlined (red-team round 63): for every relation it names, and
        each relation that one reaches (a view's, an inheritance child, a partition), the
        casts, operator classes and row security policies of its values (``_casts``') and
        the functions its defaults call, its columns' domains' too (an INSERT or UPDATE runs
        them: ``Snapshot.default_functions``; EXPLAIN without ANALYZE names what it would
        write as read, so every relation counts); the code of the user types it names; the
        casts between system types where it converts anything."""
        out: list[tuple[str, str]] = []
        relation_casts = _relation_casts(snap, self.own_login)
        for rel in sorted(c.reads | c.writes):
            reached = ({rel} | snap.partitions.get(rel, frozenset())
                       | snap.view_bases.get(rel, frozenset()))  # fmt: skip
            if rel not in c.only:
                reached |= snap.descendants.get(rel, frozenset())
            for target in sorted(reached):
                out += [(fn, f"a cast, operator class or row security policy of {target}")
                        for fn in sorted(relation_casts.get(target, ()))]  # fmt: skip
                out += [(fn, f"a default of {target}")
                        for fn in sorted(snap.default_functions.get(target, ()))]  # fmt: skip
        for typ in sorted(c.types):
            out += [(fn, f"a value of {typ} runs it") for fn in sorted(snap.user_types.get(typ, ()))]
        if snap.global_casts and c.cls in _EVALUATES and not _converts_nothing(c):
            out += [(fn, "a cast between system types") for fn in sorted(snap.global_casts)]
        if snap.argument_defaults and c.functions:
            out += [(fn, f"an argument default of {target}")
                    for target, fn in self._argument_defaults(c.functions, snap)]  # fmt: skip
        return out

    @staticmethod
    def _explained_body(what: str) -> Decision:
        return Decision(
            False, "deny.catalog",
            f"may not EXPLAIN a statement calling {what}: the plan may show a user-written "
            "function's body (a SQL function is inlined), code a read:pg_catalog.pg_proc "
            "scope allows",
        )  # fmt: skip

    def _defines_a_built_in_name(self, c: Classified) -> Decision | None:
        """Defining a function the policy would read as a built-in when called unqualified
        (``lower``, ``pg_get_x``) needs the execute scope on it: statements already checked
        (a prepared one, a driver's cached one) are analysed again by the server after
        such a definition, and would then run it."""
        for bare, targets in _defined_functions(c).items():
            for target in sorted(targets):
                parts = split_name(target)
                if parts is None or parts[1] is None:
                    continue
                names = function_names(None, parts[1], self.search_path)
                if len(names) != 1 or split_name(names[0]) is not None:
                    continue  # called unqualified, it is read as schema.name: a scope needed
                denial = self._call_of(
                    target,
                    f"defining it would shadow the built-in {bare} "
                    "(unqualified calls, those already prepared included, may resolve to it)",
                )
                if denial is not None:
                    return denial
        return None

    def _shadowing_temp(self, c: Classified) -> Decision | None:
        """A temporary relation, type or domain named (or renamed) like a type or relation
        outside the temporary schemas (``Snapshot.type_names``: a built-in type, a user's,
        a relation's row type). The pin names pg_temp last, but a function's own ``SET
        search_path`` that leaves it out searches it first for relations and types: there
        the temporary object would stand for the other inside granted code (red-team round
        69: a temporary ``text`` made a granted function's conversion error quote the
        secret it only compared; a temporary table named like one it writes would take
        what it writes)."""
        snap = self._snapshot_seen
        if c.command.startswith("DROP"):
            return None
        denial = self._sequences_made(c, snap)
        if denial is not None:
            return denial
        if snap is None or not (snap.type_names or self._made_names):
            return None
        for op, rel in sorted(c.write_ops):
            if op != "ddl" or not rel.startswith("pg_temp."):
                continue
            parts = split_name(rel)
            name = parts[1] if parts is not None else None
            if name is not None and (name in snap.type_names or name in self._made_names):
                return self._shadowing(rel, name)
        if self._temp_names or self._temp_any:
            # an unqualified rename of what may be the session's temporary relation renames
            # it within pg_temp (``_maybe_temporary``)
            for (schema, rel), (_to_schema, new) in renamed_relations(c.sql):
                if (
                    schema in (None, "pg_temp")
                    and (new in snap.type_names or new in self._made_names)
                    and (self._temp_any or render_name(rel) in self._temp_names)
                ):  # fmt: skip
                    return self._shadowing(_TEMP_PREFIX + render_name(new), new)
        return None

    def _sequences_made(self, c: Classified, snap: Snapshot | None) -> Decision | None:
        """The sequences a CREATE or ALTER TABLE makes beside its table (a ``serial``
        column's, an identity column's; ``pgparse.made_sequences``; red-team round 71): in
        pg_temp, one named like a type or sequence outside it is refused as a temporary
        table of that name is (a ``LIKE ... INCLUDING IDENTITY``'s, whose column names are
        not read: any ``<table>_..._seq``); an identity's ``SEQUENCE NAME`` in another
        schema than its table's is a ddl write there. One in the table's own schema is
        the table's (as an owned sequence is)."""
        if not c.command.startswith(("CREATE TABLE", "ALTER TABLE")):
            return None
        for schema, table, seq in made_sequences(c.sql):
            if schema == "pg_temp":
                names = (snap.type_names if snap is not None else frozenset()) | self._made_names
                if seq == LIKED:
                    hit = next((n for n in sorted(names)
                                if n.startswith(f"{table}_") and n.endswith("_seq")), None)  # fmt: skip
                else:
                    hit = seq if seq in names else None
                if hit is not None:
                    return self._shadowing(_TEMP_PREFIX + render_name(hit), hit)
            elif seq != LIKED and schema is not None and table is not None:
                owner = next((split_name(rel) for op, rel in sorted(c.write_ops)
                              if op == "ddl" and (split_name(rel) or ("", ""))[1] == table), None)  # fmt: skip
                if owner is not None and owner[0] == schema:
                    continue  # (the table's own schema: the table's sequence)
                denial = check_write("ddl", render_name(schema, seq), self.scopes)
                if denial is not None:
                    return Decision(
                        False, denial.rule,
                        f"{denial.reason} (the sequence of an identity column of {table})",
                    )  # fmt: skip
        return None

    def _temps_after_made(self, pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
        """``pairs`` with a temporary object refused where an earlier statement of the
        message made a relation or type of its name (``_shadowing_temp`` knows the
        session's names only once they went to the server)."""
        made: set[str] = set()
        out: list[Pair] = []
        for c, d in pairs:
            if made and d.allowed and not c.command.startswith("DROP"):
                for op, rel in sorted(c.write_ops):
                    parts = split_name(rel) if op == "ddl" and rel.startswith(_TEMP_PREFIX) else None
                    if parts is not None and parts[1] in made:
                        d = self._shadowing(rel, parts[1])
                        break
            out.append((c, d))
            made |= _names_made(c)
        return tuple(out)

    @staticmethod
    def _shadowing(rel: str, name: str) -> Decision:
        return Decision(
            False, "deny.temp",
            f"may not make {rel}: a temporary relation or type named like the type or "
            f"relation {name} would stand for it where pg_temp is searched first (a "
            "function's own search_path that leaves it out); choose another name",
        )  # fmt: skip

    def _defines_code(self, c: Classified) -> Decision | None:
        """Defining a function or procedure (CREATE, CREATE OR REPLACE) is running its body
        in effect: the triggers, views, column defaults and other functions that already
        call it run the new body from then on, with nobody's statement naming it (red-team
        round 23: ``ddl:`` on a trigger's function replaced its body, which read a secret
        table on the next INSERT). So it needs the execute scope on what it defines, as a
        call of it by name would."""
        if c.command not in _DEFINES_CODE:
            return None
        for op, target in sorted(c.write_ops):
            if op != "ddl":
                continue
            denial = self._call_of(
                target,
                "defining it is running it in effect (whatever already calls it, a trigger, a "
                "view, a default, runs the new body): it needs the execute scope as a call does",
            )
            if denial is not None:
                return denial
        return None

    def _shadowed(
        self,
        functions: frozenset[str],
        operators: frozenset[str],
        snap: Snapshot | None,
        types: frozenset[str] = frozenset(),
    ) -> Decision | None:
        """The proxy's sessions decide calls by what PostgreSQL may resolve them to: an
        unqualified call or operator spelled like a built-in may run a user-written
        function of that name, and a value of a user's type may run its domain's
        constraints or a cast (``policy.catalog.shadowing_calls``): each needs an execute
        scope like a call of it by name. None: nothing of the kind denied."""
        if snap is None:
            if (
                not types
                and not any("." not in f for f in functions)
                and not any("." not in o for o in operators)
            ):
                return None
            return Decision(
                False,
                "scope.execute",
                "may not run unqualified calls, operators or user types: no catalog loaded, "
                "so which functions they run is unknown",
            )
        for target, what in sorted(shadowing_calls(functions, operators, snap, types).items()):
            denial = self._call_of(target, what)
            if denial is not None:
                return denial
        return None

    def _after_definitions(self, pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
        """Statements after one that defines functions or renames or drops columns, in the
        same message, decided with those functions known and those columns gone (the
        catalog learns of them only once they ran; PostgreSQL analyses each statement of a
        message after the ones before it ran)."""
        snap = self._snapshot_seen
        if snap is None:
            return pairs  # every unqualified call is denied already
        defined: dict[str, frozenset[str]] = {}
        removed: frozenset[tuple[str, str]] = frozenset()
        temps = self._temp_names
        views = self._own_views
        text_made: frozenset[str] = _NO_NAMES  # (``_temp_text``)
        gone: set[str] = set()  # (relations dropped, renamed or moved away before it)
        code = False  # (code that may run DDL runs before it: ``_code_text``)
        out: list[Pair] = []
        for c, d in pairs:
            if (
                defined or removed or temps is not self._temp_names or views is not self._own_views
                or text_made or gone or code
            ) and (d.allowed or d.rule == "deny.temp"):  # (a temporary one made before it)
                saved, saved_views = self._temp_names, self._own_views
                saved_gone = self._removed_relations
                self._snapshot_seen = without_columns(with_defined(snap, defined), removed)
                self._temp_names = temps
                self._own_views = views
                self._temp_text = text_made
                if gone:
                    self._removed_relations = {**saved_gone, **dict.fromkeys(gone)}
                self._code_text = code
                try:
                    d = self._decide(c)  # calls, operators, types and column syntax again
                finally:
                    self._snapshot_seen = snap
                    self._temp_names = saved
                    self._own_views = saved_views
                    self._temp_text = _NO_NAMES
                    self._removed_relations = saved_gone
                    self._code_text = False
            out.append((c, d))
            code = code or (d.opens_ddl and self._temp_any)
            defined = merge_defined(defined, _defined_functions(c))
            removed = removed | self._removed_columns(c)
            gone |= self._relations_gone(c)
            made = _temp_made(c)
            if made and not made <= temps:
                temps = temps | made
            if made and not c.command.startswith(("DROP", "ALTER")):
                how = temp_creation(c.sql)
                if how is not None and not how[0]:
                    text_made = text_made | made
            made_views = _views_made(c)
            if made_views:
                views = {**views, **made_views}
        return tuple(out)

    def _through_renames(self, c: Classified) -> Decision | None:
        """A relation renamed or moved through the proxy in a transaction that may still be
        open (``Snapshot.unsettled``): until a load after that transaction ended shows it,
        what the snapshot knows by name (what inherits from it, whether it is a view and a
        security barrier, whether it has rules, its columns) may belong to another of the
        names involved (round 24: a barrier view and a view without one swapped by three
        renames; a parent renamed ONLY onto a granted name). So a statement that uses such
        a name is decided as if it could be any of them (``_renamed_reach``), and refused
        where one of them would reach what the grant may not (a migration renaming what
        its grant covers alone goes on in its transaction)."""
        snap = self._snapshot_seen
        if snap is None or not snap.unsettled:
            return None
        touched = c.reads | {rel for op, rel in c.write_ops if op != "insert" and op != "ddl"}
        for rel in sorted(touched):
            names = snap.unsettled.get(rel)
            if names is None:
                continue
            why = self._renamed_reach(c, rel, names, snap)
            if why is not None:
                denial = Decision(
                    False, "deny.catalog",
                    f"may not use {rel} until the catalog shows its rename "
                    f"({', '.join(sorted(names))}): the transaction that renamed it may still "
                    f"be open, and what the catalog knows by name may belong to another of "
                    f"these names, where {why} (retry once it ended)",
                )  # fmt: skip
                return self._after_a_load(snap, denial)
        return None

    def _renamed_reach(
        self, c: Classified, rel: str, names: frozenset[str], snap: Snapshot
    ) -> str | None:
        """Why ``c``'s use of ``rel`` might reach what the grant may not if ``rel`` is now
        any one of ``names`` (None: whichever it is, nothing): a view hiding rows of a
        relation the grant may not read without being a barrier, a child the statement's
        operation on it reaches, a plan showing a view's query or rules' actions, and
        column syntax, which is a call of a function taking the row unless the relation
        has such a column (its columns are taken as unknown)."""
        ops = ["read"] if rel in c.reads else []
        ops += sorted({op for op, r in c.write_ops if r == rel and op != "insert" and op != "ddl"})
        scopes = self.scopes
        for name in sorted(names):
            reached = snap.views.get(name)
            if reached:
                base = self._unreadable(sorted(reached))
                if base is not None:
                    return (f"{name} is a view that hides rows of {base or 'a query'}, which "
                            "this grant may not read, without being a security barrier")  # fmt: skip
            if rel not in c.only:
                for child in sorted(snap.descendants.get(name, ())):
                    for op in ops:
                        denial = (check_read(child, scopes) if op == "read"
                                  else check_write(op, child, scopes))  # fmt: skip
                        if denial is not None:
                            return f"{child} inherits from {name} ({denial.reason})"
            if c.command.startswith("EXPLAIN"):
                if name in snap.view_names and not scopes.allows_relation(
                        "read", "pg_catalog.pg_views"):
                    return f"{name} is a view: the plan shows its query"
                if name in snap.ruled and not scopes.allows_relation("read", "pg_catalog.pg_rules"):
                    return f"{name} has rules: the plan shows their actions"
        calls = frozenset(
            a for a in c.attributes if a != DERIVED_ROWS and (a in snap.functions or snap.stale)
        )
        denial = self._column_syntax(calls)
        return None if denial is None else denial.reason

    def _column_syntax(self, calls) -> Decision | None:
        """The refusal of the first of ``calls`` (names used with column syntax that
        PostgreSQL may resolve as calls ``name(row)``) this grant may not make, or None."""
        for name in sorted(calls):
            fns = function_names(None, name, self.search_path)
            shadow: Decision | None = None  # what the name may resolve to: asked once
            if self.catalog is not None:
                shadow = self._shadowed(frozenset(fns), frozenset(), self._snapshot_seen)
            for fn in fns:
                denial = check_function(fn, self.scopes)
                if denial is None:
                    denial = shadow
                if denial is not None:
                    why = "" if self._snapshot_seen is not None else "; no catalog loaded"
                    return Decision(
                        False,
                        denial.rule,
                        f"{denial.reason} (.{name} used with column syntax is a call "
                        f"{name}(row) unless the row has a column {name}{why})",
                    )
        return None

    def _after_a_load(self, snap: Snapshot, denial: Decision) -> Decision:
        """``denial`` unless a snapshot loaded after the statement arrived says otherwise:
        the first time, ``CatalogWait`` (the proxy reloads and checks the statement again:
        a rename whose transaction has ended by then is settled, and the statement is
        decided as the load shows the catalog); with that snapshot, or a Bind that cannot
        wait, ``denial``. Never cached (decided for this statement only)."""
        if self.on_stale is None:
            return denial
        self._complete_used = True
        if self.waiting_since is None:
            self._wait_for_a_load()
        self.waiting_since = None
        return denial

    def _wait_for_a_load(self) -> NoReturn:
        """Ask for a load that starts now (``on_stale``) and check the statement again once
        it is done: ``CatalogWait``, ``waiting_since`` the moment it was asked."""
        self.waiting_since = monotonic()
        assert self.on_stale is not None
        self.on_stale(self.waiting_since)
        raise CatalogWait

    def _removed_columns(self, c: Classified) -> frozenset[tuple[str, str]]:
        """The columns DDL ``c`` renames or drops, ("schema.table", column), under every
        name its relation may have (an unqualified one: each search_path schema) and of
        every relation inheriting from it (the rename or drop recurses)."""
        if not _may_remove_columns(c):
            return frozenset()
        out: set[tuple[str, str]] = set()
        for (schema, rel), (new_schema, new) in renamed_relations(c.sql):
            news = self._path_names(new_schema, new)
            out.update((o, RENAMED_TO + n) for o in self._path_names(schema, rel) for n in news)
        snap = self._snapshot_seen
        for schema, rel, column in removed_columns(c.sql):
            if rel == ANY_RELATION:  # a type's attribute: every table made OF it (CASCADE)
                out.add((ANY_RELATION, column))
                continue
            if schema is not None:
                names = [render_name(schema, rel)]
            else:
                names = [render_name(sch, rel) for sch in self.search_path]
            for name in names:
                out.add((name, column))
                if snap is not None:
                    out.update((child, column) for child in snap.descendants.get(name, ()))
        return frozenset(out)

    def _cached(self, sql: str) -> Verdict | None:
        """The verdict for this exact text from this session's or the shared cache."""
        caches = self.caches
        cached = caches.texts.get(sql)  # the hottest lookup: the dict itself, no call
        if cached is not None:
            caches.stats["text_hits"] += 1
            pairs, _stateful, verdict = cached
            return verdict if verdict is not None else self._verdict(pairs)
        entries = caches.shared_text(sql)
        if entries is not None:
            return self._store(sql, self._decide_entries(entries))
        return None

    def _decide_entries(self, entries: tuple[Entry, ...]) -> tuple[Pair, ...]:
        pairs = []
        for classified, fingerprint in entries:
            decision = self._decide(classified)
            pairs.append((classified, decision))
            if fingerprint is not None:
                self.caches.put_fingerprint(fingerprint, classified, decision)
        return tuple(pairs)

    def _by_fingerprint_or_shared(
        self, fingerprint: str, sql: str
    ) -> tuple[Classified, Decision, bool] | None:
        """(classified with ``sql`` as its text, decision, plain) for a known fingerprint."""
        hit = self.caches.fingerprint(fingerprint)
        if hit is not None:
            return with_sql(hit[0], sql), hit[1], hit[2]
        classified = self.caches.shared_fingerprint(fingerprint)
        if classified is None:
            return None
        decision = self._decide(classified)
        plain = self.caches.put_fingerprint(fingerprint, classified, decision)
        return with_sql(classified, sql), decision, plain

    def _classify(self, sql: str, *, use_fingerprints: bool) -> tuple[Pair, ...]:
        pairs: list[Pair] = []
        entries: list[Entry] = []
        stmts = lex(sql)
        pgs: list | None = None  # PostgreSQL's reading of each statement, parsed on a miss
        if use_fingerprints and not boundaries_agree(sql, [s.sql for s in stmts]):
            use_fingerprints = False
        for index, stmt in enumerate(stmts):
            collapsed = collapse_values(stmt) if len(stmt.sql) > _COLLAPSE_MIN else None
            if collapsed is not None:
                stmt = collapsed
            size = len(stmt.canon) if collapsed is not None else len(stmt.sql)
            key = _key(stmt.fingerprint, stmt.sql, collapsed is not None) if stmt.cacheable else None
            if use_fingerprints and key is not None:
                hit = self._by_fingerprint_or_shared(key, stmt.sql)
                if hit is not None:
                    pairs.append((hit[0], hit[1]))
                    entries.append((hit[0], key))
                    continue
            if pgs is None:
                pgs = pg_readings(sql, len(stmts))
            classified, fingerprint_safe = classify_statement(stmt, self.search_path, pgs[index])
            decision = self._decide(classified)
            pairs.append((classified, decision))
            cacheable = fingerprint_safe and key is not None and size <= MAX_SESSION_TEXT
            fingerprint = key if cacheable else None
            entries.append((classified, fingerprint))
            if fingerprint is not None:
                # Cached under the short text: a hit puts the statement's own text back.
                kept = classified if collapsed is None else with_sql(classified, stmt.canon)
                self.caches.put_fingerprint(fingerprint, kept, decision)
                self.caches.share_fingerprint(fingerprint, kept, size)
        self.caches.share_text(sql, tuple(entries))
        return tuple(pairs)

    def _from_fingerprints(self, sql: str) -> tuple[tuple[Pair, ...], bool] | None:
        """Every statement's pair from the fingerprint caches, and whether all are plain."""
        if not self.caches.any_fingerprints():
            return None
        statements = self.caches.statements(sql)
        if not statements:
            return None
        pairs = []
        plain = True
        for text, fingerprint, cacheable in statements:
            key = _key(fingerprint, text) if cacheable else None
            hit = self._by_fingerprint_or_shared(key, text) if key is not None else None
            if hit is None:
                return None
            pairs.append((hit[0], hit[1]))
            plain = plain and hit[2]
        if not boundaries_agree(sql, [text for text, _, _ in statements]):
            return None  # classified afresh: both parsers read it and disagree
        return tuple(pairs), plain

    def _store(self, sql: str, pairs: tuple[Pair, ...]) -> Verdict:
        verdict = self._verdict(pairs)
        if not _signals_a_pid(pairs):
            self.caches.put_text(sql, pairs, verdict)
        return verdict

    def _backends(self, c: Classified) -> frozenset[int]:
        """The grant's own sessions' backends (``own_backends``) when ``c`` signals one a
        literal names (``decide``'s ``backends``); else none are needed."""
        if self.own_backends is None or not _names_a_pid(c):
            return frozenset()
        return self.own_backends()

    def _verdict(self, pairs: tuple[Pair, ...]) -> Verdict:
        if self._calls_unread(pairs):
            # a function defined through the proxy whose block has ended, no load read yet:
            # until one does it counts as code that may run DDL and replace statements, and
            # a call of it would make the session forget every statement it holds (asyncpg's
            # and psycopg's caches then fail for good: the drivers' differential, session
            # 26). The load that reads it is asked for, and the statement decided after it
            self._wait_for_a_load()
        if any(c.command in STATEFUL_COMMANDS for c, _ in pairs):
            pairs = self._apply_session_state(pairs)
        if len(pairs) > 1 and self.catalog is not None and any(
            _defined_functions(c) or _may_remove_columns(c) or _temp_made(c) or _views_made(c)
            or (d.opens_ddl and self._temp_any)
            for c, d in pairs[:-1]
        ):
            pairs = self._after_definitions(pairs)
        if len(pairs) > 1 and self.catalog is not None:
            pairs = _explains_after_ddl(pairs, self._snapshot_seen)
            pairs = self._temps_after_made(pairs)
        denied = next((d for _, d in pairs if not d.allowed), None)
        ran = denied is None or not self.enforce
        code_runs = self._code_runs
        if ran:
            self._ran_ddl(pairs)
            for c, _d in pairs:
                made = _views_made(c)
                if made:
                    self._own_views = {**self._own_views, **made}
        ddl = ran and any(c.cls is StatementClass.DDL for c, _d in pairs)
        if ddl or (ran and (self.temps_pending or self._temp_own or self._made_relations)):
            # (from the session's start: code may be seen later; a DISCARD or ROLLBACK
            # matters only once there is something of the session's to end)
            self._claim_temps(pairs)
        if ddl:
            temps = frozenset().union(*(_temp_made(c) for c, _d in pairs))
            if not temps <= self._temp_names:
                self._temp_names = self._temp_names | temps
                self._session_state_changed()
        if denied is None:
            self._commit_session_state(pairs)
            if self._code_runs != code_runs:
                # code ran in this text: a PREPARE before it in the text is forgotten too
                # (red-team round 47: a protocol Bind of it ran what the code prepared)
                self._forget_sql_names()
            return Verdict(True, pairs, "")
        if self.enforce:
            if denied.rule == "deny.unknown":
                error = _syntax_error(pairs)
                if error is not None:
                    return SyntaxVerdict(False, pairs, error)
            if denied.sqlstate == UNDEFINED_TABLE:
                return UndefinedTableVerdict(False, pairs, self._message(denied))
            return Verdict(False, pairs, self._message(denied))
        self._commit_session_state(pairs)
        return Verdict(True, pairs, "", would_deny=True)

    def _calls_unread(self, pairs: tuple[Pair, ...]) -> bool:
        """Do ``pairs`` call a function defined through the proxy, in a block that has ended,
        that no load has read yet (``_Entry.unread``), where the statement can wait for one
        (not at a Bind, not after waiting once)?"""
        entry = self.catalog_entry
        if entry is None or not entry.unread or self.on_stale is None:
            return False
        if self.waiting_since is not None:
            return False
        unread = entry.unread
        return any(unread.get(fn) is not None for c, _d in pairs for fn in c.functions)

    def _relations_moved(self, c: Classified) -> None:
        """DDL ``c`` goes to the server: the relations outside pg_temp it makes (as classify
        renders them: ``_made_relations``, in this Sync group), and those it drops, renames
        or moves away, under each schema of the path an unqualified name may be in
        (``_removed_relations``, until its transaction ends and a load after that)."""
        if c.command.startswith("CREATE"):
            for op, rel in c.write_ops:
                if op == "ddl" and not rel.startswith(_TEMP_PREFIX):
                    self._made_relations[rel] = self.sending_group
                    self._removed_relations.pop(rel, None)
            if self._made_relations:
                self.temps_pending = True  # (``temps_answered``: its group's answer)
            return
        for rel in self._relations_gone(c):
            self._removed_relations[rel] = None
            self._made_relations.pop(rel, None)

    def _relations_gone(self, c: Classified) -> set[str]:
        """The relations outside pg_temp DDL ``c`` drops, renames or moves away, as classify
        renders them (an unqualified name's: under each schema of the path)."""
        command = c.command
        gone: set[str] = set()
        if not _may_remove_columns(c):
            return gone
        if command.startswith("DROP"):
            gone.update(rel for op, rel in c.write_ops
                        if op == "ddl" and not rel.startswith(_TEMP_PREFIX))  # fmt: skip
        for (schema, old), (to_schema, new) in renamed_relations(c.sql):
            news = self._path_names(to_schema, new)
            gone.update(r for r in self._path_names(schema, old) if r not in news)
        return gone

    def _path_names(self, schema: str | None, name: str) -> list[str]:
        """``name`` as classify renders it in ``schema``, or, unqualified, in each schema of
        the search path (where PostgreSQL may find it)."""
        if schema is not None:
            return [render_name(schema, name)]
        return [render_name(sch, name) for sch in self.search_path]

    def _ran_ddl(self, pairs: tuple[Pair, ...], bound: bool = False) -> bool:
        """``pairs`` go to the server: if they are (or may run) DDL, the snapshot is stale
        from now on (``on_ddl``) and the transaction's end settles it (``ddl_open``).
        ``bound``: a protocol Bind runs them, a SQL-level PREPARE's statement too."""
        if self.on_ddl is None or not opens_ddl(pairs):
            return False  # (what unknown:* allows may be DDL: ALTER TABLE ... SET SCHEMA)
        defined: dict[str, frozenset[str]] = {}
        removed: frozenset[tuple[str, str]] = frozenset()
        made: set[str] = set()
        for c, _d in pairs:
            defined = merge_defined(defined, _defined_functions(c))
            removed = removed | self._removed_columns(c)
            made |= _names_made(c)
            self._relations_moved(c)
        if made:
            self._made_names = self._made_names | made
        if defined:
            self._defined += 1  # (``check_query``, ``check_bind``: ``lazy_names``)
        fresh = removed - self.ddl_unsettled  # a key this session holds already: once
        entry = self.catalog_entry
        snap = self.catalog() if self.catalog is not None else None
        if not self._block_counted and self.on_block is not None:
            # counted before the DDL is: a function it defines stays unread while any block
            # is open (``CatalogCache.invalidate``)
            self._block_counted = True
            self.on_block(1)
        before = self._epoch_now()
        self.on_ddl(defined, fresh)
        self._counted_own(before)
        if defined and entry is not None:
            # a function defined or replaced: a caller of it counts as code that may run
            # DDL only once a load read its body, so every session checks its names as in
            # a code window until then (red-team round 49: g calling a redefined f)
            code_ran(entry)
        self._own_bumps += 1
        if not self._ddl_attached and _attaches_code(pairs, snap):
            self._ddl_attached = True  # (until the block ends: ``settle_ddl``)
            self._attached_unloaded = True  # (until a snapshot loaded after it)
        self.ddl_open = True
        if any(d.opens_ddl for _c, d in pairs):
            # code that may run DDL may also PREPARE (dynamic SQL, a static PREPARE): a
            # name the policy never saw is refused at its Bind after a catalog change, as
            # a forgotten one is (red-team round 39: a granted function's PREPARE), and
            # one it holds is checked with the server before its next Bind (``_code_ran``)
            self._forgot = True
            self.rebind_unknown = True  # (now: no catalog change may follow within the block)
            if any(
                d.opens_ddl
                and (bound or c.command != "PREPARE")
                and self._runs_names_code(self._run_by(c))
                for c, d in pairs
            ):  # (a PREPARE runs nothing: its EXECUTE or a Bind of its name does)
                self.names_unknown()
            runs = any(d.opens_ddl and (bound or c.command != "PREPARE") for c, d in pairs)
            if runs:
                self._code_open = True
                self._code_ran()  # (after ``_run_by``: it forgets the SQL-level names)
            if runs and entry is not None:
                # it may have redefined a function another session calls (red-team round
                # 46): every session checks its names until a load reads the catalog
                code_ran(entry)
        if fresh:
            self.ddl_unsettled = self.ddl_unsettled | fresh
        if any(_unfollowed_ddl(c, d) for c, d in pairs):
            self._own_unfollowed = True
        return True

    def _code_ran(self) -> None:
        """Code that may run DDL, and so build a PREPARE or DEALLOCATE from pieces, runs
        now (or later in this transaction: ``lazy_code``). The protocol statements held
        are checked with the server at their next Bind or Describe (``verify_name``). A
        SQL-level one cannot be told from one that code prepared (both are ``from_sql``):
        the policy forgets those, so an EXECUTE or Bind of one is refused until it is
        prepared again."""
        self._check_names_again()
        self._code_runs += 1
        self.lazy_code = True
        self.ran_lazy = True
        self._forget_sql_names()

    def _check_names_again(self) -> None:
        """Every protocol statement held now is checked with the server at its next Bind or
        Describe (``verify_name``); answers to checks sent before this do not count."""
        self._code_epoch += 1
        self._unverified = {name for name in self._statements if name}

    def _forget_sql_names(self) -> None:
        """The SQL-level names: forgotten (``_code_ran``), an EXECUTE of one refused until
        it is prepared again, and told why (``_sql_forgotten``)."""
        if self._prepared_statements:
            if len(self._sql_forgotten) > MAX_REMEMBERED_STATEMENTS:
                self._sql_forgotten.clear()  # (only the message of a refusal loses its why)
            self._sql_forgotten.update(self._prepared_statements)
            for name in list(self._prepared_statements):
                self._forget_prepare(name)
            self._prepared = PreparedNames()
            self.rebind_unknown = True

    def verify_name(self, name: str) -> tuple[int, int] | None:
        """Must the server be asked, before this Bind or Describe of protocol statement
        ``name``, whether it still holds what the client prepared (``_code_ran``)? If so,
        the tokens ``verified`` and ``replaced`` take once it answered. Not in a dry run
        (nothing is refused there), not the unnamed statement (no SQL names it)."""
        if not self.enforce or not name or name not in self._statements:
            return None
        if self.lazy_code or name in self._unverified:
            return (self._code_epoch, self._parsed_at.get(name, 0))
        return None

    def replaced_message(self, name: str) -> str:
        """The error a Bind or Describe of ``name`` gets when the server's check fails
        (ASCII: it goes upstream in the session's encoding)."""
        return self._message(Decision(
            False, "deny.replaced",
            f"may not use prepared statement {ascii(name)}: code this session ran replaced or "
            "removed it on the server, so it was removed (prepare it again)",
        ))  # fmt: skip

    def holds_text(self, name: str, sql: str) -> bool:
        """Is ``sql`` the text of protocol statement ``name`` the policy holds (the one it
        decided, and a restore of the name may Parse again: ``Denials.inject_restore``)?"""
        held = self._statements.get(name)
        return held is not None and held[0] == sql

    def verified(self, name: str, token: tuple[int, int]) -> None:
        """The server's check passed: it held the client's statement ``name``."""
        if token[0] == self._code_epoch:
            self._unverified.discard(name)

    def replaced(self, name: str, token: tuple[int, int]) -> None:
        """The server's check failed: code replaced or removed statement ``name``, and the
        check removed what it held there. The policy holds no text for it either, unless
        the client prepared it again since the check went (a Bind is refused until then)."""
        if self._parsed_at.get(name, 0) != token[1]:
            return
        self._statements.pop(name, None)
        self._parsed_at.pop(name, None)
        self.rebind.pop(name, None)
        self._unverified.discard(name)
        self._forgot = True
        self.rebind_unknown = True

    def at_rest(self) -> None:
        """The server is idle outside a transaction with nothing in flight (the relay):
        no cursor or portal that code reached is left to run it. Code run in the ended
        transaction may have replaced any name held now: each is checked once more."""
        self.lazy_names = False
        if self.lazy_code:
            self._check_names_again()
            entry = self.catalog_entry
            # while code a session ran may have redefined a function and no load has read
            # it, any call may run such code: every Bind stays checked, every EXECUTE refused
            self.lazy_code = entry is not None and entry.code_window()
            if not self.lazy_code and self.ran_lazy:
                self.ran_lazy = False
                self._forget_sql_names()  # (prepared while code could run: a cursor's)

    def names_unknown(self) -> None:
        """Code that may prepare or remove statements runs (``_runs_names_code``): the
        server may hold other text under any name (red-team round 40: a granted function's
        ``DEALLOCATE s; PREPARE s AS ...`` replaced a name the policy held harmless text
        for; round 41: the calling statement itself too, which such code may replace while
        it runs). A SQL-level name is forgotten: an EXECUTE or Bind of it is refused until
        it is prepared again. A protocol statement is kept and checked with the server
        before its next Bind or Describe (``verify_name``: code cannot make a statement
        ``pg_prepared_statements`` lists as not ``from_sql``), as after code that may run
        DDL. It used to be forgotten too, and asyncpg's and psycopg's statement caches then
        failed for good after a function was defined or called (the drivers' differential,
        session 26). The unnamed statement needs no check: only a protocol Parse makes or
        replaces it (SQL's PREPARE and DEALLOCATE name one, DISCARD ALL leaves it)."""
        self._names_epoch += 1
        self._check_names_again()
        self._forget_sql_names()
        self._prepared = PreparedNames()
        self._touch(_EVERY_NAME)
        self._forgot = True
        self.rebind_unknown = True

    def commits_prepared(self) -> None:
        """COMMIT PREPARED goes upstream: it may commit DDL another session prepared. Counted
        now, before the server commits it, as DDL is (``writes_moved``: a write waiting on
        the prepared transaction's lock runs what it attached; red-team round 37 noted the
        count came only with the ReadyForQuery after), and settled at its end."""
        if self.on_ddl is not None:
            self.on_ddl({}, frozenset())
            self._own_bumps += 1
        self.ddl_open = True

    def _apply_session_state(self, pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
        """Decide EXECUTE against the PREPAREs this session allowed (in statement order)."""
        prepared = self._prepared.copy()
        out: list[Pair] = []
        # code that may replace statements may have run before an EXECUTE: such code ran in
        # the transaction, or a statement ran while another session's code may have
        # redefined what it calls (``lazy_code``), or one before it in this text does
        code = self.lazy_code and self.ran_lazy
        for c, d in pairs:
            if (
                c.command == "EXECUTE"
                and c.cls is StatementClass.UNKNOWN
                and not d.allowed
                and c.detail in prepared
            ):
                d = self._decide_execute(c)
                if code and d.allowed:
                    # a cursor over it (or a statement before it in this text) may run it
                    # between the PREPARE and this EXECUTE, and a check of the server cannot
                    # tell a SQL-level statement code made from the client's
                    d = Decision(
                        False, "deny.execute",
                        f"may not EXECUTE {c.detail} while code that may replace prepared "
                        "statements may run (it ran in this transaction or before it in this "
                        "text, or another session's code may have redefined a function called "
                        "here): EXECUTE it once the transaction has ended and no such change is "
                        "in progress, or use a protocol-level prepared statement",
                    )  # fmt: skip
            elif (c.command == "EXECUTE" and not d.allowed and d.rule == "deny.execute"
                    and c.detail in self._sql_forgotten and c.detail not in prepared):
                d = Decision(
                    False, "deny.execute",
                    f"may not EXECUTE {c.detail}: code that may replace prepared statements "
                    "ran since its PREPARE and may have replaced it on the server (DEALLOCATE "
                    "it and PREPARE it again)",
                )  # fmt: skip
            prepared.follow(c, d)
            out.append((c, d))
            if (d.opens_ddl or self.lazy_code) and c.command != "PREPARE":  # (runs nothing)
                code = True
        return tuple(out)

    def _commit_session_state(self, pairs: tuple[Pair, ...]) -> None:
        for c, d in pairs:
            self._prepared.follow(c, d)
            if not d.allowed or c.command not in STATEFUL_COMMANDS:
                continue
            if c.command == "PREPARE":
                self._sql_forgotten.discard(c.detail)
                self._prepared_statements[c.detail] = c
                self._prepared_current.add(c.detail)
                self._statements.pop(c.detail, None)  # one namespace, if it succeeds
                self._touch(c.detail)
                if d.opens_ddl:
                    # code that may run DDL (or replace statements): a protocol Bind of the
                    # name runs it too, so it is followed there as a protocol Parse of it
                    # is (red-team round 43: the Bind was not looked at)
                    self.followed[c.detail] = (((c, d),), None)
                    self._followed_leaving.discard(c.detail)
            elif c.command in ("DEALLOCATE", "DISCARD"):
                for name in list(self._prepared_statements):
                    if name not in self._prepared:
                        del self._prepared_statements[name]
                        self._prepared_current.discard(name)
                if c.detail == "all":  # DEALLOCATE ALL, DISCARD ALL: protocol ones too
                    self._statements.clear()
                    self._touch(_EVERY_NAME)  # (if it fails, every name the server kept)
                    self._followed_leaving.update(self.followed)
                elif c.command == "DEALLOCATE":
                    self._statements.pop(c.detail, None)
                    self._touch(c.detail)
                    if c.detail in self.followed:
                        self._followed_leaving.add(c.detail)

    def _decide_execute(self, c: Classified) -> Decision:
        d = self._decide(replace(c, cls=StatementClass.READ))
        if not d.allowed:
            return d
        name = c.detail
        prepared = self._prepared_statements.get(name)
        if name in self._unconfirmed and name not in self._prepared_current:
            return Decision(
                False, "deny.catalog",
                f"may not EXECUTE {name} after the catalog changed before the server answered "
                "the message that prepared it: which statement it holds is not known yet",
            )  # fmt: skip
        if prepared is not None and name not in self._prepared_current:
            # the catalog changed since the PREPARE was decided: the server analyses the
            # statement again, so the policy decides it again (a column renamed since may
            # make x.name a call)
            again = self._decide(prepared)
            if not again.allowed:
                return Decision(
                    False, again.rule,
                    f"{again.reason} (PREPARE {name}, decided again: the catalog changed "
                    "since)",
                )  # fmt: skip
            self._prepared_current.add(name)
        return Decision(
            True, "session.prepared", f"EXECUTE {c.detail} (prepared and checked here)",
            prepared is not None and self._runs_ddl_code(prepared),
        )  # fmt: skip

    def _message(self, d: Decision) -> str:
        return f"pgwitness: task {self.task} {d.reason} (rule {d.rule})"
