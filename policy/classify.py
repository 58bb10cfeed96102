"""Statement classification: PostgreSQL text -> ``Classified`` per statement (pure)."""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from policy.encodings import check_client_encoding
from policy.lexer import (
    Statement,
    Token,
    ascii_lower,
    lex,
    literal_counts,
    parse_qualified_name,
    render_name,
    truncate_identifier,
)

__all__ = [
    "BUILTIN_FUNCTIONS",
    "DANGEROUS_FUNCTIONS",
    "SET_CONFIG_PREFIX",
    "TYPED_FUNCTIONS",
    "Classified",
    "StatementClass",
    "classify",
    "classify_statement",
    "is_builtin_function",
    "is_dangerous_function",
    "render_name",
]


class StatementClass(enum.Enum):
    READ = "READ"
    WRITE = "WRITE"
    DDL = "DDL"
    ROLE = "ROLE"
    FUNCTION = "FUNCTION"
    SESSION_SET = "SESSION_SET"
    TRANSACTION = "TRANSACTION"
    UTILITY = "UTILITY"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Classified:
    sql: str  # the statement's own text
    cls: StatementClass
    command: str  # "SELECT", "INSERT", "SET", "COPY", "EXPLAIN", ...
    reads: frozenset[str]  # "schema.table", lower-cased unless quoted
    writes: frozenset[str]
    functions: frozenset[str]  # "schema.fn" or bare "fn" for unqualified calls
    detail: str = ""  # setting name for SET, COPY direction, parse error text, ...
    # (operation, relation) for everything in ``writes``: insert update delete truncate
    # ddl lock. Lets a grant say insert-only; ``writes`` is the set of relations.
    write_ops: frozenset[tuple[str, str]] = frozenset()
    # From PostgreSQL's parser (policy.crosscheck): operator names ("=", "public.===") and
    # names used with column syntax (x.name), which the server may resolve as name(x).
    operators: frozenset[str] = frozenset()
    attributes: frozenset[str] = frozenset()


_EMPTY: frozenset = frozenset()
_PLAIN_NAME_RE = re.compile(r"[a-z_][a-z0-9_$]*\Z")
_DIALECT = sqlglot.Dialect.get_or_raise("postgres")


class _ParserCache(threading.local):
    """A tokenizer and parser per thread: building them costs more than parsing a statement."""

    def __init__(self) -> None:
        self.tokenizer = _DIALECT.tokenizer()
        self.parser = _DIALECT.parser()


_PARSERS = _ParserCache()


_STRING_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.NATIONAL_RAW_STRING,
    }
)


def _sqlglot_parse(sql: str, ours: tuple[int, int]) -> list[exp.Expression | None]:
    """Parse canonical text; refuse if sqlglot's tokens disagree with ours on literals.

    ``ours``: (string literals, quoted identifiers) our lexer found in ``sql``.
    """
    cache = _PARSERS
    theirs = cache.tokenizer.tokenize(sql)
    strings = quoted = 0
    if "'" in sql or '"' in sql:  # without either, neither lexer can have found any
        for t in theirs:
            if t.token_type in _STRING_TOKENS:
                strings += 1
            elif t.token_type is TokenType.IDENTIFIER:
                quoted += 1
    if (strings, quoted) != ours:
        raise ParseError("sqlglot and the PostgreSQL lexer disagree about literals")
    return cache.parser.parse(theirs, sql)


# set_config('<name>', ...) with a literal name is reported as this prefix + the setting
# name, and decided like SET of that setting; any other set_config call stays dangerous.
SET_CONFIG_PREFIX = "set_config:"
# Functions whose (literal) argument names a sequence: classified as a use of it.
SEQUENCE_FUNCTIONS = {"nextval": "update", "setval": "update", "currval": "read"}
# Functions that interpret a text argument as an object name; their classification (or
# their meaning) depends on a literal, so such statements never use the fingerprint cache.
LITERAL_NAME_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "currval",
        "to_regclass",
        "to_regnamespace",
        "to_regproc",
        "to_regprocedure",
        "to_regtype",
        "to_regrole",
        "to_regoper",
        "to_regoperator",
        "to_regcollation",
        "to_regtypemod",
        "has_table_privilege",
        "has_column_privilege",
        "has_sequence_privilege",
        "has_any_column_privilege",
        "has_schema_privilege",
        "has_function_privilege",
        "has_database_privilege",
        "has_foreign_data_wrapper_privilege",
        "has_language_privilege",
        "has_server_privilege",
        "has_tablespace_privilege",
        "has_type_privilege",
        "has_parameter_privilege",
        "pg_has_role",
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_get_serial_sequence",
        "pg_relation_filenode",
        "pg_relation_filepath",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_ls_dir",
        "set_config",
        "current_setting",
        "query_to_xml",
        "table_to_xml",
        "schema_to_xml",
        "ts_stat",
        "ts_rewrite",
        "dblink",
        "dblink_exec",
        "lo_import",
        "lo_export",
        "pg_sequence_last_value",
        "regclass",
    }
)
# Functions no grant may call: they read or write server files, run SQL given as text,
# reach other servers, change settings or roles, signal other backends, touch large
# objects or WAL, or take advisory locks a production application may depend on.
DANGEROUS_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "lo_import",
        "lo_export",
        "lo_get",
        "lo_put",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_open",
        "lo_close",
        "loread",
        "lowrite",
        "lo_lseek",
        "lo_lseek64",
        "lo_tell",
        "lo_tell64",
        "lo_truncate",
        "lo_truncate64",
        "lo_from_bytea",
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_signal_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_switch_xlog",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_promote",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_log_backend_memory_contexts",
        "pg_log_standby_snapshot",
        "pg_notify",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "ts_stat",
        "ts_rewrite",
        "pg_import_system_collations",
        "pg_truncate_visibility_map",
        "pg_copy_logical_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot",
        "pg_drop_replication_slot",
        "pg_replication_slot_advance",
        "pg_logical_emit_message",
        "pg_current_logfile",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_ls_summariesdir",
    }
)
DANGEROUS_PREFIXES = (
    "dblink",
    "lo_",
    "pg_advisory",
    "pg_try_advisory",
    "pg_stat_reset",
    "pg_logical_slot_",
    "pg_replication_origin",
    "binary_upgrade_",
    "pg_read_",
    "pg_file_",
    "pg_ls_",
    "pg_stat_statements_reset",
)


# Catalog functions that show other objects' data or state (sequence values, replication
# slots, other sessions, server files' settings, statistics sample values): the functions
# behind the catalog views no grant may read, and their peers. Derived from PostgreSQL 15's
# pg_proc and view definitions (docs/policy.md, "Catalog side doors"); an execute scope
# naming one (execute:pg_catalog.pg_get_replication_slots) allows it.
CATALOG_STATE_FUNCTIONS = frozenset(
    """
    pg_sequence_last_value pg_get_replication_slots pg_get_backend_memory_contexts
    pg_get_shmem_allocations pg_show_all_file_settings pg_hba_file_rules
    pg_ident_file_mappings pg_show_replication_origin_status pg_stat_get_activity
    pg_stat_get_wal_senders pg_stat_get_replication_slot pg_stat_get_subscription
    pg_stat_get_subscription_stats pg_stat_get_wal_receiver pg_mcv_list_items
    pg_get_multixact_members pg_prepared_xact pg_stat_get_progress_info
    pg_stat_get_backend_idset pg_get_publication_tables pg_stat_statements
    pg_stat_statements_info pg_get_wal_replay_pause_state pg_get_wal_summarizer_state
    """.split()  # noqa: SIM905 - a word list
)
CATALOG_STATE_PREFIXES = ("pg_stat_get_backend_", "pg_stat_statements")


def is_catalog_state_function(name: str) -> bool:
    return name in CATALOG_STATE_FUNCTIONS or name.startswith(CATALOG_STATE_PREFIXES)


def is_dangerous_function(name: str) -> bool:
    """``name`` is a bare (pg_catalog) function name."""
    return name in DANGEROUS_FUNCTIONS or name.startswith(DANGEROUS_PREFIXES)


# Built-ins sqlglot does not model as typed nodes that a grant may call without an execute
# scope: pure functions and the introspection functions drivers and ORMs call.
BUILTIN_FUNCTIONS = frozenset(
    """
    abs acos age array_agg array_append array_cat array_dims array_fill array_length
    array_lower array_ndims array_position array_positions array_prepend array_remove
    array_replace array_to_json array_to_string array_upper ascii asin atan atan2 bit_length
    bool_and bool_or btrim cardinality cbrt ceil ceiling char_length character_length chr
    clock_timestamp col_description concat concat_ws convert_from convert_to corr cos cot
    covar_pop covar_samp cume_dist current_database current_query current_schema
    current_schemas current_setting currval date_bin date_part decode degrees dense_rank div
    encode enum_first enum_last enum_range every exp factorial first_value floor
    format format_type gcd gen_random_uuid generate_series generate_subscripts
    get_bit get_byte greatest has_any_column_privilege has_column_privilege
    has_database_privilege has_function_privilege has_schema_privilege
    has_sequence_privilege has_table_privilege has_type_privilege inet_client_addr
    inet_client_port inet_server_addr inet_server_port initcap isfinite json_agg
    json_array_elements json_array_elements_text json_array_length json_build_array
    json_build_object json_each json_each_text json_extract_path json_extract_path_text
    json_object json_object_agg json_object_keys json_populate_record json_populate_recordset
    json_strip_nulls json_to_record json_to_recordset json_typeof jsonb_agg
    jsonb_array_elements jsonb_array_elements_text jsonb_array_length jsonb_build_array
    jsonb_build_object jsonb_each jsonb_each_text jsonb_extract_path jsonb_extract_path_text
    jsonb_insert jsonb_object jsonb_object_agg jsonb_object_keys jsonb_path_exists
    jsonb_path_match jsonb_path_query jsonb_path_query_array jsonb_path_query_first
    jsonb_populate_record jsonb_populate_recordset jsonb_pretty jsonb_set jsonb_set_lax
    jsonb_strip_nulls jsonb_to_record jsonb_to_recordset jsonb_typeof justify_days
    justify_hours justify_interval lag lastval lcm lead least left length ln log log10
    lower lpad ltrim make_date make_interval make_time make_timestamp make_timestamptz md5
    min_scale mod mode nextval now nth_value ntile num_nonnulls num_nulls obj_description
    octet_length overlay percent_rank percentile_cont percentile_disc pg_backend_pid
    pg_client_encoding pg_collation_for pg_column_size pg_conf_load_time
    pg_current_xact_id pg_database_size pg_encoding_to_char pg_function_is_visible
    pg_get_constraintdef pg_get_expr pg_get_function_arguments
    pg_get_function_identity_arguments pg_get_function_result pg_get_functiondef
    pg_get_indexdef pg_get_keywords pg_get_partkeydef pg_get_ruledef pg_get_serial_sequence
    pg_get_statisticsobjdef pg_get_triggerdef pg_get_userbyid pg_get_viewdef
    pg_has_role pg_index_column_has_property pg_index_has_property pg_indexam_has_property
    pg_indexes_size pg_input_is_valid pg_is_in_recovery pg_is_other_temp_schema
    pg_jit_available pg_my_temp_schema pg_opclass_is_visible pg_operator_is_visible
    pg_postmaster_start_time pg_relation_size pg_size_bytes pg_size_pretty pg_sleep
    pg_sleep_for pg_sleep_until
    pg_table_is_visible pg_table_size pg_tablespace_size pg_total_relation_size
    pg_type_is_visible pg_typeof plainto_tsquery phraseto_tsquery pi position power
    quote_ident quote_literal quote_nullable radians random range_merge rank
    regexp_count regexp_instr regexp_like regexp_match regexp_matches regexp_replace
    regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse right
    round row row_number row_to_json rpad rtrim scale session_user setseed setval sha224 sha256
    sha384 sha512 shobj_description sign sin split_part sqrt starts_with
    statement_timestamp stddev stddev_pop stddev_samp string_agg string_to_array
    string_to_table strpos substr substring sum tan timeofday to_ascii to_char to_date
    to_hex to_json to_jsonb to_number to_regclass to_regnamespace to_regproc
    to_regprocedure to_regrole to_regtype to_timestamp to_tsquery to_tsvector
    transaction_timestamp translate trim trim_scale trunc ts_headline ts_rank ts_rank_cd
    txid_current txid_current_if_assigned txid_snapshot_xmax txid_snapshot_xmin unistr
    unnest upper var_pop var_samp variance version websearch_to_tsquery width_bucket
    xmlagg xpath xpath_exists array_to_tsvector setweight strip numnode querytree
    int4range int8range numrange tsrange tstzrange daterange lower_inc upper_inc
    lower_inf upper_inf isempty range_agg multirange bit_count crc32 crc32c
    """.split()  # noqa: SIM905 - a word list reads better than 300 quoted strings
)


def _typed_function_names() -> frozenset[str]:
    names: set[str] = set()
    stack = list(exp.Func.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        try:
            names.add(cls.sql_name().lower())
        except Exception:  # abstract helpers without a name
            continue
    return frozenset(names)


# Names classify reports for functions sqlglot parses into typed nodes (count, lower, ...).
TYPED_FUNCTIONS = _typed_function_names()
# Read-only introspection families psql's \d commands and ORMs use (deparsers, visibility
# and privilege tests, object descriptions): allowed by name pattern.
BUILTIN_PREFIXES = ("pg_get_", "pg_identify_object", "pg_describe_object")
BUILTIN_EXTRA = frozenset(
    {
        "pg_relation_is_publishable",
        "pg_relation_is_updatable",
        "pg_column_is_updatable",
        "pg_partition_root",
        "pg_partition_ancestors",
        "pg_partition_tree",
        "pg_options_to_table",
        "pg_tablespace_location",
        "pg_char_to_encoding",
        "pg_encoding_max_length",
        "pg_column_compression",
        "pg_filenode_relation",
        "pg_relation_filenode",
        "pg_indexam_progress_phasename",
        "pg_event_trigger_ddl_commands",
        "pg_xact_commit_timestamp",
        "pg_last_committed_xact",
        "pg_export_snapshot",
        "pg_current_snapshot",
        "pg_visible_in_snapshot",
        "pg_notification_queue_usage",
        "pg_trigger_depth",
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
        "pg_isolation_test_session_is_blocked",
        "pg_current_wal_lsn",
        "pg_wal_lsn_diff",
        "pg_walfile_name",
        "pg_size_pretty",
        "pg_column_size",
        "pg_database_size",
        "to_regtypemod",
        "to_regoper",
        "to_regoperator",
        "to_regcollation",
    }
)


def is_builtin_function(name: str) -> bool:
    """A bare (pg_catalog) name a grant may call without an execute scope."""
    if is_dangerous_function(name) or is_catalog_state_function(name):
        return False
    return (
        name in BUILTIN_FUNCTIONS
        or name in TYPED_FUNCTIONS
        or name in BUILTIN_EXTRA
        or name.startswith(BUILTIN_PREFIXES)
        or (name.startswith("pg_") and name.endswith("_is_visible"))
        or (name.startswith("has_") and name.endswith("_privilege"))
    )


_REG_TYPES = frozenset(
    {
        "REGCLASS",
        "REGPROC",
        "REGPROCEDURE",
        "REGOPER",
        "REGOPERATOR",
        "REGTYPE",
        "REGCONFIG",
        "REGDICTIONARY",
        "REGNAMESPACE",
        "REGROLE",
        "REGCOLLATION",
    }
)
_DDL_KINDS = frozenset(
    {
        "TABLE",
        "VIEW",
        "INDEX",
        "SEQUENCE",
        "SCHEMA",
        "FUNCTION",
        "PROCEDURE",
        "TRIGGER",
        "TYPE",
        "DOMAIN",
        "MATERIALIZED VIEW",
    }
)
# Syntax sqlglot models as function nodes although no function is called.
_SKIP_FUNC_NODES = (
    exp.Cast,
    exp.TryCast,
    exp.Exists,
    exp.Any,
    exp.All,
    exp.Array,
    exp.Case,
    exp.If,
    exp.Connector,
)
_REPLICATION_WORDS = frozenset(
    {
        "identify_system",
        "start_replication",
        "create_replication_slot",
        "drop_replication_slot",
        "alter_replication_slot",
        "read_replication_slot",
        "base_backup",
        "timeline_history",
        "upload_manifest",
    }
)
_TRANSACTION_WORDS = frozenset(
    {"begin", "start", "commit", "end", "abort", "rollback", "savepoint", "release"}
)
_UTILITY_DENIED_WORDS = {
    "vacuum": "VACUUM",
    "analyze": "ANALYZE",
    "analyse": "ANALYZE",
    "cluster": "CLUSTER",
    "reindex": "REINDEX",
    "checkpoint": "CHECKPOINT",
    "lock": "LOCK",
    "load": "LOAD",
}
# Statements PREPARE may name; EXPLAIN also takes CREATE TABLE AS.
_PREPARABLE = (
    exp.Select,
    exp.SetOperation,
    exp.Values,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Subquery,
)
_EXPLAINABLE = (*_PREPARABLE, exp.Create)




def _ident(node: exp.Expression | str | None) -> str | None:
    """An identifier as PostgreSQL sees it: unquoted ASCII-lower-cased, 63 bytes at most."""
    if node is None:
        return None
    if isinstance(node, str):
        return truncate_identifier(ascii_lower(node))
    if isinstance(node, exp.Identifier):
        text = node.this
        return truncate_identifier(text if node.quoted else ascii_lower(text))
    return None


class _Unknown(Exception):
    """Raised inside classification: the statement is UNKNOWN with this detail."""


def _result(
    stmt: Statement,
    cls: StatementClass,
    command: str,
    detail: str = "",
    reads=_EMPTY,
    ops=_EMPTY,
    functions=_EMPTY,
) -> Classified:
    return Classified(
        stmt.sql,
        cls,
        command,
        frozenset(reads),
        frozenset(r for _, r in ops),
        frozenset(functions),
        detail,
        frozenset(ops),
    )


def _unknown(stmt: Statement, command: str, detail: str) -> Classified:
    return Classified(stmt.sql, StatementClass.UNKNOWN, command, _EMPTY, _EMPTY, _EMPTY, detail)


class _Collector:
    """One walk over a sqlglot tree: relations read/written, functions, literal use."""

    __slots__ = (
        "stmt",
        "search_path",
        "reads",
        "ops",
        "functions",
        "literal_dependent",
        "into_ddl",
        "alternates",
    )

    def __init__(self, stmt: Statement, search_path: tuple[str, ...]):
        self.stmt = stmt
        self.search_path = search_path
        self.reads: set[str] = set()
        self.ops: set[tuple[str, str]] = set()
        self.functions: set[str] = set()
        self.literal_dependent = False
        self.into_ddl = False
        # unqualified name -> the same name in the later search_path schemas: PostgreSQL
        # takes the first schema where it exists, which we cannot know, so all must pass
        self.alternates: dict[str, list[str]] = {}

    # -- names -----------------------------------------------------------------------
    def _resolve(self, schema: str | None, name: str, temp: bool = False) -> str:
        if schema is None:
            if temp:
                schema = "pg_temp"
            elif name.startswith("pg_"):
                schema = "pg_catalog"
            else:
                primary = render_name(self.search_path[0], name)
                if len(self.search_path) > 1:
                    self.alternates[primary] = [
                        render_name(other, name) for other in self.search_path[1:]
                    ]
                return primary
        return render_name(schema, name)

    def candidates(self, rel: str) -> list[str]:
        """``rel`` and, if it was an unqualified name, the other schemas it may mean."""
        return [rel, *self.alternates.get(rel, ())]

    def expand(self) -> None:
        """Apply every use of an unqualified name to all its search_path candidates."""
        if not self.alternates:
            return
        for rel in list(self.reads):
            self.reads.update(self.alternates.get(rel, ()))
        for op, rel in list(self.ops):
            self.ops.update((op, alt) for alt in self.alternates.get(rel, ()))

    def _table_name(self, table: exp.Table, temp: bool = False) -> str | None:
        name = _ident(table.args.get("this"))
        schema = _ident(table.args.get("db"))
        if name is None:
            return render_name(schema) + ".*" if schema is not None else None
        return self._resolve(schema, name, temp)

    def _literal_value(self, node: exp.Expression) -> str | None:
        if isinstance(node, exp.Cast) and _is_reg_cast(node, "REGCLASS"):
            node = node.this
        if isinstance(node, exp.Literal) and node.is_string:
            self.literal_dependent = True
            try:
                return self.stmt.literals[int(node.this)]
            except (ValueError, IndexError):
                return None
        return None

    def _literal_relation(self, node: exp.Expression, what: str) -> str:
        value = self._literal_value(node)
        parts = parse_qualified_name(value) if value is not None else None
        if not parts or len(parts) > 3:
            raise _Unknown(f"{what} needs a literal relation name")
        names = [p for p, _ in parts]
        if len(names) == 1:
            return self._resolve(None, names[0])
        return render_name(names[-2], names[-1])

    # -- walk ------------------------------------------------------------------------
    def walk(self, tree: exp.Expression) -> None:
        consumed: set[int] = set()  # regclass casts already read as a sequence argument
        categories = _CATEGORIES
        for node in tree.walk():
            cat = categories.get(type(node))
            if cat is None:
                cat = _category(type(node))
            if cat == _C_PLAIN:
                continue
            if cat == _C_TABLE:
                self._table(node)
            elif cat == _C_FUNC:
                self._function(node, consumed)
            elif cat == _C_CAST:
                if _is_reg_cast(node) and id(node) not in consumed:
                    self.literal_dependent = True
                    if _is_reg_cast(node, "REGCLASS"):
                        if not (isinstance(node.this, exp.Literal) and node.this.is_string):
                            continue  # an expression cast to regclass names no relation
                        self.reads.add(self._literal_relation(node, "a regclass cast"))
            elif cat == _C_LOCK:
                self._lock(node)
            elif cat == _C_COMMAND:
                raise _Unknown(f"unsupported syntax inside the statement: {node.name}")
            elif cat == _C_INTO:
                self.into_ddl = True

    def _table(self, table: exp.Table) -> None:
        this = table.args.get("this")
        if (this is not None and not isinstance(this, exp.Identifier)) or table.args.get(
            "rows_from"
        ):
            return  # a table function: its Func node is visited on its own
        node: exp.Expression = table
        parent = table.parent
        if type(parent) in _READ_PARENTS:  # FROM/JOIN: the common case, a plain read
            name = _ident(this)
            if table.args.get("db") is None and _is_cte_reference(table, name):
                return
            rel = self._table_name(table)
            if rel is None:
                raise _Unknown("a relation reference without a name")
            self.reads.add(rel)
            return
        if isinstance(parent, exp.Schema) and node.arg_key == "this":
            node, parent = parent, parent.parent
        key = node.arg_key
        if isinstance(parent, exp.Lock):
            return  # FOR UPDATE OF <alias>: handled by _lock
        role = "read"
        temp = False
        if key == "this" and isinstance(parent, exp.Insert):
            role = "insert"
        elif key == "this" and isinstance(parent, exp.Update):
            role = "update"
        elif key == "this" and isinstance(parent, exp.Delete):
            role = "delete"
        elif key == "this" and isinstance(parent, exp.Merge):
            role = "merge"
        elif isinstance(parent, exp.TruncateTable):
            role = "truncate"
        elif isinstance(parent, exp.Into):
            role, temp = "ddl", bool(parent.args.get("temporary"))
        elif key == "this" and isinstance(parent, exp.Create):
            role, temp = "ddl", _is_temp_create(parent)
        elif isinstance(parent, exp.Drop):
            if str(parent.args.get("kind") or "").upper() == "TRIGGER":
                return  # the trigger's own name; its table is the ON clause
            role = "ddl"
        elif _is_ddl_target(parent, key):
            role = "ddl"
        elif isinstance(parent, exp.AlterRename):
            alter = parent.parent
            name = _ident(this)
            if _ident(table.args.get("db")) is None and isinstance(alter, exp.Alter):
                base = alter.this if isinstance(alter.this, exp.Table) else None
                schema = _ident(base.args.get("db")) if base is not None else None
                self.ops.add(("ddl", self._resolve(schema, name)))
                return
            role = "ddl"
        elif key == "this" and isinstance(parent, exp.Copy):
            role = "insert" if parent.args.get("kind") else "read"
        if (
            role == "read"
            and this is not None
            and table.args.get("db") is None
            and _is_cte_reference(table, _ident(this))
        ):
            return
        rel = self._table_name(table, temp)
        if rel is None:
            raise _Unknown("a relation reference without a name")
        if role == "read":
            self.reads.add(rel)
        elif role == "merge":
            merge_ops = _merge_ops(parent)
            if not merge_ops:
                self.reads.add(rel)  # only DO NOTHING: the target is merely read
            for op in merge_ops:
                self.ops.add((op, rel))
        else:
            self.ops.add((role, rel))
            if role == "insert" and isinstance(parent, exp.Insert):
                conflict = parent.args.get("conflict")
                if (
                    conflict is not None
                    and "UPDATE" in str(conflict.args.get("action") or "").upper()
                ):
                    self.ops.add(("update", rel))

    def _function(self, func: exp.Func, consumed: set[int]) -> None:
        if isinstance(func, exp.Anonymous):
            raw = func.args.get("this")
            name = _ident(raw) if isinstance(raw, exp.Identifier) else _ident(str(raw))
        else:
            name = func.sql_name().lower()
        if not name:
            raise _Unknown("a function call without a name")
        schema = None
        parent = func.parent
        if isinstance(parent, exp.Table) and func.arg_key == "this":
            # a function in FROM keeps its schema on the Table node: FROM s.fn()
            schema = _ident(parent.args.get("db"))
            if schema is None and parent.args.get("db") is not None:
                raise _Unknown("an unsupported qualified function call")
        elif isinstance(parent, exp.Dot) and func.arg_key == "expression":
            qual = parent.this
            if isinstance(qual, exp.Dot):
                qual = qual.expression
            schema = _ident(qual)
            if schema is None:
                raise _Unknown("an unsupported qualified function call")
        if schema is not None and schema != "pg_catalog":
            self.functions.add(render_name(schema, name))
            return
        if (
            schema is None
            and isinstance(func, exp.Anonymous)
            and not name.startswith("pg_")
            and not is_builtin_function(name)
            and not is_dangerous_function(name)
            and name not in LITERAL_NAME_FUNCTIONS
        ):
            # an unqualified call of something that is not a known built-in resolves
            # through search_path: it may be the function of that name in any schema
            self.functions.update(render_name(schema, name) for schema in self.search_path)
            return
        if name in LITERAL_NAME_FUNCTIONS:
            self.literal_dependent = True
        if name == "set_config" and isinstance(func, exp.Anonymous) and func.expressions:
            setting = self._literal_value(func.expressions[0])
            if setting is not None:
                # decided like SET of that setting (drivers turn jit off this way)
                self.functions.add(SET_CONFIG_PREFIX + setting.strip().lower())
                return
        self.functions.add(name if _PLAIN_NAME_RE.match(name) else render_name(name))
        op = SEQUENCE_FUNCTIONS.get(name)
        if op is not None:
            args = func.expressions if isinstance(func, exp.Anonymous) else [func.this]
            if not args:
                raise _Unknown(f"{name}() without arguments")
            rel = self._literal_relation(args[0], f"{name}()")
            consumed.add(id(args[0]))
            if op == "read":
                self.reads.add(rel)
            else:
                self.ops.add((op, rel))

    def _lock(self, lock: exp.Lock) -> None:
        select = lock.parent
        if not isinstance(select, exp.Select):
            raise _Unknown("a locking clause outside SELECT")
        items = []
        from_ = select.args.get("from_")
        if from_ is not None:
            items.append(from_.this)
        for join in select.args.get("joins") or ():
            items.append(join.this)
        for item in items:
            if isinstance(item, exp.Table) and isinstance(item.args.get("this"), exp.Identifier):
                name = _ident(item.this)
                if item.args.get("db") is None and _is_cte_reference(item, name):
                    continue
                rel = self._table_name(item)
                if rel is not None:
                    self.ops.add(("lock", rel))


def _is_reg_cast(node: exp.Cast, which: str | None = None) -> bool:
    to = node.args.get("to")
    if isinstance(to, exp.ObjectIdentifier):
        name = str(to.this).upper()
    elif isinstance(to, exp.DataType) and to.this == exp.DataType.Type.USERDEFINED:
        name = to.sql().upper()
    else:
        return False
    return name == which if which else name in _REG_TYPES


# Node categories for the walk, decided once per sqlglot class.
_C_PLAIN, _C_TABLE, _C_FUNC, _C_CAST, _C_LOCK, _C_COMMAND, _C_INTO = range(7)
_CATEGORIES: dict[type, int] = {}
_READ_PARENTS = frozenset({exp.From, exp.Join})


def _category(cls: type) -> int:
    if issubclass(cls, exp.Table):
        cat = _C_TABLE
    elif issubclass(cls, exp.Cast):
        cat = _C_CAST
    elif issubclass(cls, exp.Func):
        cat = _C_PLAIN if issubclass(cls, _SKIP_FUNC_NODES) else _C_FUNC
    elif issubclass(cls, exp.Lock):
        cat = _C_LOCK
    elif issubclass(cls, exp.Command):
        cat = _C_COMMAND
    elif issubclass(cls, exp.Into):
        cat = _C_INTO
    else:
        cat = _C_PLAIN
    _CATEGORIES[cls] = cat
    return cat


def _is_ddl_target(parent: exp.Expression, key: str | None) -> bool:
    """Is a table under ``parent`` (as ``key``) the object a DDL statement changes?"""
    if isinstance(parent, exp.UserDefinedFunction):
        return isinstance(parent.parent, exp.Create)
    if isinstance(parent, exp.Index):
        return key == "table" and isinstance(parent.parent, exp.Create)
    if isinstance(parent, (exp.TriggerProperties, exp.PartitionedOfProperty, exp.InheritsProperty)):
        return True  # a trigger, partition or child table changes that table too
    if isinstance(parent, exp.OnProperty):
        return isinstance(parent.parent, exp.Drop)
    return key == "this" and isinstance(parent, (exp.Alter, exp.Comment))


def _is_temp_create(create: exp.Create) -> bool:
    props = create.args.get("properties")
    return bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))


def _merge_ops(merge: exp.Merge) -> set[str]:
    ops: set[str] = set()
    whens = merge.args.get("whens")
    for when in whens.expressions if whens is not None else ():
        then = when.args.get("then")
        if isinstance(then, exp.Insert):
            ops.add("insert")
        elif isinstance(then, exp.Update):
            ops.add("update")
        elif (
            isinstance(then, exp.Delete)
            or isinstance(then, exp.Var)
            and str(then.this).upper() == "DELETE"
        ):
            ops.add("delete")
        elif not (isinstance(then, exp.Var) and str(then.this).upper() == "DO NOTHING"):
            raise _Unknown("an unrecognised MERGE action")
    return ops


def _cte_names(with_: exp.With) -> list[str | None]:
    return [
        _ident(cte.args.get("alias").this) if cte.args.get("alias") else None
        for cte in with_.expressions
    ]


def _is_cte_reference(table: exp.Expression, name: str | None) -> bool:
    """Does unqualified ``name`` at ``table`` refer to a CTE in scope (PostgreSQL rules)?"""
    if name is None:
        return False
    node = table
    while node is not None and node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With):
            # node is one of the CTEs: earlier CTEs are visible, all of them if RECURSIVE
            names = _cte_names(parent)
            if parent.args.get("recursive"):
                visible = names
            else:
                idx = next((i for i, c in enumerate(parent.expressions) if c is node), len(names))
                visible = names[:idx]
            if name in visible:
                return True
            node = parent.parent  # skip the owner's WITH: already looked at
            continue
        with_ = parent.args.get("with_")
        if isinstance(with_, exp.With) and node is not with_ and name in _cte_names(with_):
            return True
        node = parent
    return False


# -- token-level helpers ------------------------------------------------------------------


def _words(tokens: list[Token], start: int = 0, stop: int | None = None) -> list[str]:
    return [t.value if t.kind == "word" else "" for t in tokens[start:stop]]


def _sub_statement(stmt: Statement, index: int) -> Statement:
    """The statement that starts at token ``index`` (EXPLAIN/PREPARE/DECLARE bodies)."""
    offset = stmt.tokens[index].start
    tokens = [Token(t.kind, t.value, t.canon, t.start - offset) for t in stmt.tokens[index:]]
    return Statement(
        stmt.sql,
        stmt.fingerprint,
        stmt.canon[offset:],
        tokens,
        stmt.literals,
        stmt.cacheable,
        stmt.error,
    )


def _name_at(tokens: list[Token], i: int) -> tuple[list[str], int]:
    """Read a (possibly qualified) identifier at token ``i``; return parts and next index."""
    parts: list[str] = []
    while i < len(tokens) and tokens[i].kind in ("word", "qid"):
        parts.append(tokens[i].value)
        i += 1
        if i < len(tokens) and tokens[i].kind == "punct" and tokens[i].value == ".":
            i += 1
            continue
        break
    return parts, i


def _only_words(tokens: list[Token], start: int, allow=("word", "qid")) -> bool:
    return all(t.kind in allow or (t.kind == "punct" and t.value == ",") for t in tokens[start:])


class _Classifier:
    def __init__(self, search_path: tuple[str, ...]):
        if not search_path:
            raise ValueError("search_path must name at least one schema")
        self.search_path = search_path

    # Returns (Classified, fingerprint_safe)
    def run(self, stmt: Statement) -> tuple[Classified, bool]:
        if stmt.error:
            return _unknown(stmt, _command_word(stmt), stmt.error), False
        try:
            return self._dispatch(_work_around_sqlglot(stmt))
        except _Unknown as e:
            return _unknown(stmt, _command_word(stmt), str(e)), False
        except RecursionError:
            return _unknown(stmt, _command_word(stmt), "statement nested too deeply"), False
        except Exception as e:  # fail closed: a classifier bug must never allow or crash
            detail = f"internal classifier error: {type(e).__name__}: {e}"
            return _unknown(stmt, _command_word(stmt), detail), False

    def _dispatch(self, stmt: Statement) -> tuple[Classified, bool]:
        head = stmt.head(2)  # most statements go to sqlglot on their first two words
        first = head[0].value if head[0].kind == "word" else ""
        second = head[1].value if len(head) > 1 and head[1].kind == "word" else ""
        handler = _TOKEN_HANDLERS.get(first)
        if handler is not None:
            result = handler(self, stmt, stmt.tokens, second)
            if result is not None:
                return result, False
        if first in ("create", "alter", "drop"):
            result = self._role_ddl(stmt, first, second, stmt.tokens)
            if result is not None:
                return result, False
        if (first or head[0].value) not in _SQLGLOT_FIRST_WORDS:
            raise _Unknown(f"unsupported statement: {head[0].value.upper()}")
        return self._parsed(stmt)

    # -- sqlglot path ------------------------------------------------------------------
    def _parse(
        self, stmt: Statement, canon: str | None = None, tokens: list[Token] | None = None
    ) -> exp.Expression:
        try:
            trees = _sqlglot_parse(
                stmt.canon if canon is None else canon,
                stmt.literal_counts() if tokens is None else literal_counts(tokens),
            )
        except (ParseError, TokenError) as e:
            raise _Unknown(f"parse error: {_first_line(e)}") from None
        trees = [t for t in trees if t is not None]
        if len(trees) != 1:
            raise _Unknown("the statement did not parse as exactly one statement")
        return trees[0]

    def _collect(self, stmt: Statement, tree: exp.Expression) -> _Collector:
        col = _Collector(stmt, self.search_path)
        col.walk(tree)
        col.expand()
        return col

    def _parsed(self, stmt: Statement) -> tuple[Classified, bool]:
        tree = self._parse(stmt)
        result, col = self._from_tree(stmt, tree)
        return result, not col.literal_dependent and result.cls is not StatementClass.UNKNOWN

    def _from_tree(self, stmt: Statement, tree: exp.Expression) -> tuple[Classified, _Collector]:
        if isinstance(tree, exp.Command):
            raise _Unknown(f"unsupported statement: {_command_word(stmt)}")
        col = self._collect(stmt, tree)
        reads, ops, funcs = col.reads, col.ops, col.functions
        S = StatementClass
        if isinstance(tree, (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)):
            if col.into_ddl and isinstance(tree, exp.Select) and tree.args.get("into"):
                return _result(stmt, S.DDL, "SELECT INTO", "", reads, ops, funcs), col
            writes_data = any(op != "lock" for op, _ in ops)
            cls = S.WRITE if writes_data else S.READ
            detail = "FOR UPDATE/SHARE" if any(op == "lock" for op, _ in ops) else ""
            return _result(stmt, cls, "SELECT", detail, reads, ops, funcs), col
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            command = {
                exp.Insert: "INSERT",
                exp.Update: "UPDATE",
                exp.Delete: "DELETE",
                exp.Merge: "MERGE",
            }[type(tree)]
            return _result(stmt, S.WRITE, command, "", reads, ops, funcs), col
        if isinstance(tree, exp.TruncateTable):
            if str(tree.args.get("option") or "").upper() == "CASCADE":
                raise _Unknown("TRUNCATE ... CASCADE also empties tables it does not name")
            return _result(stmt, S.WRITE, "TRUNCATE", "", reads, ops, funcs), col
        if isinstance(tree, (exp.Create, exp.Drop, exp.Alter)):
            kind = str(tree.args.get("kind") or "").upper()
            if isinstance(tree, exp.Create) and kind == "VIEW":
                props = tree.args.get("properties")
                if props and any(
                    isinstance(p, exp.MaterializedProperty) for p in props.expressions
                ):
                    kind = "MATERIALIZED VIEW"
            if isinstance(tree, exp.Drop) and tree.args.get("materialized"):
                kind = "MATERIALIZED VIEW"
            verb = {exp.Create: "CREATE", exp.Drop: "DROP", exp.Alter: "ALTER"}[type(tree)]
            if isinstance(tree, exp.Drop) and tree.args.get("cascade"):
                raise _Unknown("DROP ... CASCADE also drops objects it does not name")
            if kind not in _DDL_KINDS:
                raise _Unknown(f"{verb} {kind or '?'} is not supported")
            if not any(op == "ddl" for op, _ in ops):
                raise _Unknown(f"{verb} {kind}: could not find the object it changes")
            return _result(stmt, S.DDL, f"{verb} {kind}", "", reads, ops, funcs), col
        if isinstance(tree, exp.Comment):
            if not ops:
                target = tree.this
                if isinstance(target, exp.Column) and target.args.get("table") is not None:
                    schema = _ident(target.args.get("db"))
                    rel = col._resolve(schema, _ident(target.args["table"]))
                    ops = ops | {("ddl", r) for r in col.candidates(rel)}
                else:
                    raise _Unknown("COMMENT ON this kind of object is not supported")
            return _result(stmt, S.DDL, "COMMENT", "", reads, ops, funcs), col
        raise _Unknown(f"unsupported statement: {type(tree).__name__}")

    # -- token handlers ------------------------------------------------------------------
    def _transaction(self, stmt, tokens, second):
        first = tokens[0].value
        S = StatementClass
        two_phase = (first in ("commit", "rollback") and second == "prepared") or (
            first == "prepare" and second == "transaction"
        )
        if two_phase:
            return _result(stmt, S.UTILITY, f"{first.upper()} {second.upper()}", "two-phase commit")
        if first == "start" and second != "transaction":
            return None
        if not _only_words(tokens, 1):
            raise _Unknown(f"unexpected tokens in {first.upper()}")
        command = {"end": "COMMIT", "abort": "ROLLBACK", "start": "BEGIN"}.get(first, first.upper())
        if first == "rollback" and "to" in _words(tokens, 1):
            command = "ROLLBACK TO SAVEPOINT"
        return _result(stmt, S.TRANSACTION, command)

    def _set(self, stmt, tokens, second):
        S = StatementClass
        words = _words(tokens) + ["", "", ""]
        i = 1
        if words[1] == "session" and words[2] == "characteristics":
            return _result(stmt, S.TRANSACTION, "SET SESSION CHARACTERISTICS")
        command = "SET"
        if (
            words[1] in ("session", "local")
            and words[2] not in ("", "to")
            and not (len(tokens) > 2 and tokens[2].value == "=")
            and not (words[1] == "session" and words[2] == "authorization")
        ):
            command = "SET LOCAL" if words[1] == "local" else "SET"
            i = 2
        w, nxt = words[i], words[i + 1]
        if w in ("transaction", "constraints"):
            return _result(stmt, S.TRANSACTION, f"SET {w.upper()}")
        special = {
            ("role", ""): "role",
            ("session", "authorization"): "session_authorization",
            ("time", "zone"): "timezone",
            ("schema", ""): "search_path",
            ("names", ""): "client_encoding",
            ("xml", "option"): "xmloption",
        }
        name = special.get((w, nxt)) or special.get((w, ""))
        if name is not None:
            if name in ("client_encoding",):
                self._check_encoding(tokens[i + 1 :])
            return _result(stmt, S.SESSION_SET, command, name)
        parts, j = _name_at(tokens, i)
        if (
            not parts
            or j >= len(tokens)
            or not (
                (tokens[j].kind == "word" and tokens[j].value == "to") or tokens[j].value == "="
            )
        ):
            raise _Unknown("unrecognised SET syntax")
        name = ".".join(p.lower() for p in parts)
        if name == "client_encoding":
            self._check_encoding(tokens[j + 1 :])
        if len(tokens) == j + 1:
            raise _Unknown("SET without a value")
        return _result(stmt, S.SESSION_SET, command, name)

    @staticmethod
    def _check_encoding(value_tokens: list[Token]) -> None:
        """The value of SET client_encoding / SET NAMES: one name on the allowlist."""
        if len(value_tokens) != 1 or value_tokens[0].kind not in ("word", "str", "estr", "qid"):
            raise _Unknown("SET client_encoding takes one encoding name")
        refusal = check_client_encoding(value_tokens[0].value)
        if refusal is not None:
            raise _Unknown(refusal)

    def _reset_show(self, stmt, tokens, second):
        S = StatementClass
        first = tokens[0].value
        words = _words(tokens) + ["", "", ""]
        special = {
            ("all", ""): "all",
            ("role", ""): "role",
            ("session", "authorization"): "session_authorization",
            ("time", "zone"): "timezone",
            ("transaction", "isolation"): "transaction_isolation",
        }
        name = special.get((words[1], words[2])) or special.get((words[1], ""))
        if name is None:
            parts, j = _name_at(tokens, 1)
            if not parts or j != len(tokens):
                raise _Unknown(f"unrecognised {first.upper()} syntax")
            name = ".".join(p.lower() for p in parts)
        elif not _only_words(tokens, 1):
            raise _Unknown(f"unrecognised {first.upper()} syntax")
        return _result(stmt, S.SESSION_SET, first.upper(), name)

    def _listen(self, stmt, tokens, second):
        first = tokens[0].value
        parts, j = _name_at(tokens, 1)
        if first == "unlisten" and len(tokens) == 2 and tokens[1].value == "*":
            return _result(stmt, StatementClass.UTILITY, "UNLISTEN", "*")
        if len(parts) != 1:
            raise _Unknown(f"unrecognised {first.upper()} syntax")
        if first == "notify":
            if not (
                j == len(tokens)
                or (
                    j + 2 == len(tokens)
                    and tokens[j].value == ","
                    and tokens[j + 1].kind in ("str", "estr", "dq")
                )
            ):
                raise _Unknown("unrecognised NOTIFY syntax")
        elif j != len(tokens):
            raise _Unknown(f"unrecognised {first.upper()} syntax")
        return _result(stmt, StatementClass.UTILITY, first.upper(), parts[0])

    def _do(self, stmt, tokens, second):
        return _result(stmt, StatementClass.FUNCTION, "DO", "anonymous code block")

    def _call(self, stmt, tokens, second):
        parts, _ = _name_at(tokens, 1)
        if not parts or len(parts) > 2:
            raise _Unknown("unrecognised CALL syntax")
        name = render_name(*parts)
        return _result(stmt, StatementClass.FUNCTION, "CALL", name, functions={name})

    def _utility_denied(self, stmt, tokens, second):
        return _result(stmt, StatementClass.UTILITY, _UTILITY_DENIED_WORDS[tokens[0].value])

    def _replication(self, stmt, tokens, second):
        return _result(stmt, StatementClass.UTILITY, tokens[0].value.upper(), "replication")

    def _role(self, stmt, tokens, second):
        return _result(stmt, StatementClass.ROLE, tokens[0].value.upper())

    def _role_ddl(self, stmt, first, second, tokens):
        third = tokens[2].value if len(tokens) > 2 and tokens[2].kind == "word" else ""
        S = StatementClass
        if second in ("role", "user", "group") and third != "mapping":
            return _result(stmt, S.ROLE, f"{first.upper()} {second.upper()}")
        if first == "alter" and second == "system":
            return _result(stmt, S.UTILITY, "ALTER SYSTEM")
        if first == "alter" and second == "default" and third == "privileges":
            return _result(stmt, S.ROLE, "ALTER DEFAULT PRIVILEGES")
        if first == "drop" and second == "owned":
            return _result(stmt, S.ROLE, "DROP OWNED")
        return None

    def _discard(self, stmt, tokens, second):
        if len(tokens) != 2 or second not in ("all", "plans", "sequences", "temp", "temporary"):
            raise _Unknown("unrecognised DISCARD syntax")
        return _result(stmt, StatementClass.UTILITY, "DISCARD", second)

    def _cursor_op(self, stmt, tokens, second):
        first = tokens[0].value
        if not all(t.kind in ("word", "qid", "num") or t.value in ("-", "+") for t in tokens[1:]):
            raise _Unknown(f"unrecognised {first.upper()} syntax")
        return _result(stmt, StatementClass.UTILITY, first.upper())

    def _deallocate(self, stmt, tokens, second):
        i = 2 if second == "prepare" and len(tokens) == 3 else 1
        if len(tokens) != i + 1 or tokens[i].kind not in ("word", "qid"):
            raise _Unknown("unrecognised DEALLOCATE syntax")
        name = truncate_identifier(tokens[i].value)
        return _result(stmt, StatementClass.UTILITY, "DEALLOCATE", name)

    def _refresh(self, stmt, tokens, second):
        words = _words(tokens)
        if words[1:3] != ["materialized", "view"]:
            raise _Unknown("unrecognised REFRESH syntax")
        i = 4 if len(words) > 3 and words[3] == "concurrently" else 3
        parts, j = _name_at(tokens, i)
        rest = words[j:]
        if (
            not parts
            or len(parts) > 2
            or rest not in ([], ["with", "data"], ["with", "no", "data"])
        ):
            raise _Unknown("unrecognised REFRESH syntax")
        col = _Collector(stmt, self.search_path)
        rel = col._resolve(parts[0] if len(parts) == 2 else None, parts[-1])
        return _result(
            stmt,
            StatementClass.DDL,
            "REFRESH MATERIALIZED VIEW",
            "",
            ops={("ddl", r) for r in col.candidates(rel)},
        )

    def _inner(self, stmt: Statement, index: int, command: str, allowed: tuple[type, ...]):
        if index >= len(stmt.tokens):
            raise _Unknown(f"{command} without a statement")
        sub = _sub_statement(stmt, index)
        first = sub.tokens[0].value if sub.tokens[0].kind == "word" else sub.tokens[0].value
        if first not in _SQLGLOT_FIRST_WORDS:
            raise _Unknown(f"{command} {first.upper()} is not supported")
        tree = self._parse(sub)
        if not isinstance(tree, allowed):
            raise _Unknown(f"{command} of {type(tree).__name__} is not supported")
        inner, _ = self._from_tree(sub, tree)
        return inner

    def _explain(self, stmt, tokens, second):
        i = 1
        analyze = False
        if len(tokens) > 1 and tokens[1].value == "(":
            i = 2
            while i < len(tokens) and tokens[i].value != ")":
                opt = tokens[i]
                if opt.kind != "word":
                    raise _Unknown("unrecognised EXPLAIN option")
                i += 1
                value = ""
                if i < len(tokens) and tokens[i].value not in (",", ")"):
                    value = tokens[i].value.lower()
                    if tokens[i].kind not in ("word", "str", "num"):
                        raise _Unknown("unrecognised EXPLAIN option value")
                    i += 1
                if opt.value in ("analyze", "analyse"):
                    if value in ("", "true", "on", "1", "yes"):
                        analyze = True
                    elif value not in ("false", "off", "0", "no"):
                        raise _Unknown(f"unrecognised EXPLAIN ANALYZE value {value!r}")
                if i < len(tokens) and tokens[i].value == ",":
                    i += 1
            i += 1
        else:
            while (
                i < len(tokens)
                and tokens[i].kind == "word"
                and tokens[i].value in ("analyze", "analyse", "verbose")
            ):
                analyze = analyze or tokens[i].value != "verbose"
                i += 1
        allowed = _EXPLAINABLE
        inner = self._inner(stmt, i, "EXPLAIN", allowed)
        if inner.cls is StatementClass.DDL and not inner.command.startswith(
            ("CREATE TABLE", "CREATE MATERIALIZED", "SELECT INTO")
        ):
            raise _Unknown(f"EXPLAIN {inner.command} is not supported")
        if analyze:
            return Classified(
                stmt.sql,
                inner.cls,
                "EXPLAIN ANALYZE",
                inner.reads,
                inner.writes,
                inner.functions,
                inner.command,
                inner.write_ops,
            )
        dml = frozenset(r for op, r in inner.write_ops if op != "ddl")
        return Classified(
            stmt.sql,
            StatementClass.READ,
            "EXPLAIN",
            inner.reads | dml,
            _EMPTY,
            inner.functions,
            inner.command,
        )

    def _prepare(self, stmt, tokens, second):
        if second == "transaction":
            return self._transaction(stmt, tokens, second)
        if len(tokens) < 3 or tokens[1].kind not in ("word", "qid"):
            raise _Unknown("unrecognised PREPARE syntax")
        name = truncate_identifier(tokens[1].value)
        i = 2
        if tokens[i].value == "(":
            depth = 0
            while i < len(tokens):
                if tokens[i].value == "(":
                    depth += 1
                elif tokens[i].value == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        if i >= len(tokens) or tokens[i].value != "as" or tokens[i].kind != "word":
            raise _Unknown("unrecognised PREPARE syntax")
        allowed = _PREPARABLE
        inner = self._inner(stmt, i + 1, "PREPARE", allowed)
        return Classified(
            stmt.sql,
            inner.cls,
            "PREPARE",
            inner.reads,
            inner.writes,
            inner.functions,
            name,
            inner.write_ops,
        )

    def _declare(self, stmt, tokens, second):
        words = _words(tokens)
        if len(tokens) < 4 or tokens[1].kind not in ("word", "qid"):
            raise _Unknown("unrecognised DECLARE syntax")
        try:
            i = words.index("for", 2)
        except ValueError:
            raise _Unknown("unrecognised DECLARE syntax") from None
        if "cursor" not in words[2:i]:
            raise _Unknown("unrecognised DECLARE syntax")
        allowed = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)
        inner = self._inner(stmt, i + 1, "DECLARE", allowed)
        return Classified(
            stmt.sql,
            inner.cls,
            "DECLARE",
            inner.reads,
            inner.writes,
            inner.functions,
            tokens[1].value,
            inner.write_ops,
        )

    def _execute(self, stmt, tokens, second):
        if len(tokens) < 2 or tokens[1].kind not in ("word", "qid"):
            raise _Unknown("unrecognised EXECUTE syntax")
        name = truncate_identifier(tokens[1].value)
        reads: frozenset = _EMPTY
        funcs: frozenset = _EMPTY
        ops: frozenset = _EMPTY
        if len(tokens) > 2:
            if tokens[2].value != "(" or tokens[-1].value != ")":
                raise _Unknown("unrecognised EXECUTE syntax")
            args = stmt.canon[tokens[2].start :]
            tree = self._parse(stmt, "SELECT " + args, tokens[2:])
            col = self._collect(stmt, tree)
            reads, funcs, ops = frozenset(col.reads), frozenset(col.functions), frozenset(col.ops)
        return Classified(
            stmt.sql,
            StatementClass.UNKNOWN,
            "EXECUTE",
            reads,
            frozenset(r for _, r in ops),
            funcs,
            name,
            ops,
        )

    def _copy(self, stmt, tokens, second):
        depth = 0
        direction = ""
        endpoint = ""
        end = 0  # index of the endpoint token
        for k, t in enumerate(tokens[1:], 1):
            if t.value == "(" and t.kind == "punct":
                depth += 1
            elif t.value == ")" and t.kind == "punct":
                depth -= 1
            elif depth == 0 and t.kind == "word" and t.value in ("from", "to"):
                direction = t.value
                nxt = tokens[k + 1] if k + 1 < len(tokens) else None
                if nxt is None:
                    break
                if nxt.kind == "word" and nxt.value in ("stdin", "stdout", "program"):
                    endpoint = nxt.value
                elif nxt.kind in ("str", "estr", "dq"):
                    endpoint = "file"
                end = k + 1
                break
        if not direction or not endpoint:
            raise _Unknown("unrecognised COPY syntax")
        detail = f"{direction} {endpoint}"
        S = StatementClass
        if endpoint in ("program", "file"):
            return _result(stmt, S.UTILITY, "COPY", detail)
        if (direction, endpoint) not in (("from", "stdin"), ("to", "stdout")):
            raise _Unknown(f"COPY {detail} is not supported")
        tail = tokens[end + 1 :]
        if any(t.kind == "word" and t.value == "where" for t in tail):
            tree = self._parse(stmt)  # COPY FROM ... WHERE: the condition may call functions
        else:
            # the options ((FORMAT csv), WITH (...), legacy CSV HEADER) name no relation
            # or function; sqlglot only parses some spellings, so it sees the head only
            if not all(
                t.kind in ("word", "qid", "str", "estr", "dq", "num") or t.value in "(),*"
                for t in tail
            ):
                raise _Unknown("unrecognised COPY options")
            cut = tokens[end].start + len(tokens[end].canon)
            tree = self._parse(stmt, stmt.canon[:cut], tokens[: end + 1])
        if not isinstance(tree, exp.Copy) or bool(tree.args.get("kind")) != (direction == "from"):
            raise _Unknown("COPY did not parse as expected")
        col = self._collect(stmt, tree)
        source = tree.this
        if isinstance(source, exp.Subquery) and direction == "from":
            raise _Unknown("COPY (query) FROM is not valid")
        cls = S.WRITE if any(op != "lock" for op, _ in col.ops) else S.READ
        if direction == "from" and not col.ops:
            raise _Unknown("COPY FROM without a target relation")
        return _result(stmt, cls, "COPY", detail, col.reads, col.ops, col.functions)


def _work_around_sqlglot(stmt: Statement) -> Statement:
    """Rewrite two things sqlglot cannot parse, keeping every token offset valid.

    * ``::oid[]`` (drivers' type introspection) becomes ``::int[]``;
    * a trailing ``WITH [NO] DATA`` of ``CREATE MATERIALIZED VIEW`` is blanked.

    Neither changes which relations or functions a statement uses.
    """
    canon = stmt.canon
    if "oid" not in canon and not canon.startswith("create"):
        return stmt
    tokens = stmt.tokens
    if "oid" in canon:
        for i in range(2, len(tokens) - 1):
            t = tokens[i]
            if (
                t.kind == "word"
                and t.value == "oid"
                and tokens[i + 1].value == "["
                and tokens[i - 1].value == ":"
                and tokens[i - 2].value == ":"
            ):
                canon = canon[: t.start] + "int" + canon[t.start + 3 :]
    if (
        len(tokens) > 4
        and tokens[0].value == "create"
        and tokens[-1].kind == "word"
        and tokens[-1].value == "data"
        and "materialized" in [t.value for t in tokens[1:5] if t.kind == "word"]
    ):
        tail = _words(tokens[-3:])
        start = None
        if tail[-2:] == ["with", "data"]:
            start = tokens[-2].start
        elif tail == ["with", "no", "data"]:
            start = tokens[-3].start
        if start is not None:
            canon = canon[:start] + " " * (len(canon) - start)
    if canon is stmt.canon:
        return stmt
    return Statement(
        stmt.sql, stmt.fingerprint, canon, stmt.tokens, stmt.literals, stmt.cacheable, stmt.error
    )


def _command_word(stmt: Statement) -> str:
    for t in stmt.head(1):
        if t.kind == "word":
            return t.value.upper()
    return "UNKNOWN"


def _first_line(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:
        first = errors[0]
        desc = first.get("description") or str(e)
        return f"{desc} (line {first.get('line')}, col {first.get('col')})"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


_TOKEN_HANDLERS = {
    **{w: _Classifier._transaction for w in _TRANSACTION_WORDS},
    "set": _Classifier._set,
    "reset": _Classifier._reset_show,
    "show": _Classifier._reset_show,
    "listen": _Classifier._listen,
    "unlisten": _Classifier._listen,
    "notify": _Classifier._listen,
    "do": _Classifier._do,
    "call": _Classifier._call,
    **{w: _Classifier._utility_denied for w in _UTILITY_DENIED_WORDS},
    **{w: _Classifier._replication for w in _REPLICATION_WORDS},
    "grant": _Classifier._role,
    "revoke": _Classifier._role,
    "reassign": _Classifier._role,
    "discard": _Classifier._discard,
    "fetch": _Classifier._cursor_op,
    "move": _Classifier._cursor_op,
    "close": _Classifier._cursor_op,
    "deallocate": _Classifier._deallocate,
    "refresh": _Classifier._refresh,
    "explain": _Classifier._explain,
    "prepare": _Classifier._prepare,
    "declare": _Classifier._declare,
    "execute": _Classifier._execute,
    "copy": _Classifier._copy,
}
# Only statements starting with one of these go to sqlglot: anything else could come back
# as something harmless-looking (``LISTEN x`` parses as a column alias) although PostgreSQL
# means a statement we do not model.
_SQLGLOT_FIRST_WORDS = frozenset(
    {
        "select",
        "with",
        "insert",
        "update",
        "delete",
        "merge",
        "values",
        "table",
        "create",
        "alter",
        "drop",
        "truncate",
        "comment",
        "(",
    }
)


def classify_statement(
    stmt: Statement, search_path: tuple[str, ...] = ("public",), pg=None
) -> tuple[Classified, bool]:
    """Classify one lexed statement; the flag says whether its fingerprint may stand for it.

    Both parsers read it (``policy.crosscheck``); ``pg`` is PostgreSQL's reading when the
    caller parsed the whole text (``crosscheck.pg_readings``), else it is parsed here."""
    from policy.crosscheck import reconcile

    classified, cacheable = _Classifier(search_path).run(stmt)
    return reconcile(stmt, classified, cacheable, search_path, pg)


def classify(sql: str, search_path: tuple[str, ...] = ("public",)) -> tuple[Classified, ...]:
    """Classify every statement of ``sql`` (empty statements are skipped)."""
    from policy.crosscheck import pg_readings

    stmts = lex(sql)
    pgs = pg_readings(sql, len(stmts)) if stmts else []
    return tuple(
        classify_statement(stmt, search_path, pg)[0] for stmt, pg in zip(stmts, pgs, strict=True)
    )
