"""The function catalogue: which PostgreSQL functions are built-in, dangerous, or read
catalog state; functions whose literal argument names an object (pure data and checks)."""

from __future__ import annotations

from sqlglot import exp

from policy.memo import memoized

__all__ = [
    "BUILTIN_FUNCTIONS",
    "BY_NUMBER",
    "BY_PARAMETER",
    "CAST_MARK",
    "CAST_SPEC_END",
    "CURRENT_SETTING_PREFIX",
    "DANGEROUS_FUNCTIONS",
    "DANGEROUS_WHY",
    "LITERAL_NAME_FUNCTIONS",
    "PRIVILEGED_SETTINGS",
    "SEQUENCE_FUNCTIONS",
    "SET_CONFIG_PREFIX",
    "OWN_BACKEND",
    "PARAMETER_PINS",
    "SETTING_PINS",
    "SIGNAL_FUNCTIONS",
    "TYPED_FUNCTIONS",
    "signal_target",
    "is_builtin_function",
    "is_catalog_state_function",
    "is_dangerous_function",
]


# set_config('<name>', ...) with a literal name is reported as this prefix + the setting
# name, and decided like SET of that setting; any other set_config call stays dangerous.
SET_CONFIG_PREFIX = "set_config:"
# Settings PostgreSQL 15 lists only to superusers and members of pg_read_all_settings
# (GUC_SUPERUSER_ONLY): server file paths, libraries, TLS set-up, and primary_conninfo,
# which holds the replication password. The proxy's upstream role may well be privileged,
# so no grant reads them. Derived on the server: the names pg_settings lists to a superuser
# and not to a plain role (tests/integration/test_policy_settings.py derives it again).
PRIVILEGED_SETTINGS = frozenset(
    """
    config_file data_directory dynamic_library_path extension_destdir external_pid_file
    hba_file ident_file jit_provider krb_server_keyfile log_directory log_filename
    primary_conninfo session_preload_libraries shared_preload_libraries ssl_ciphers
    ssl_dh_params_file ssl_ecdh_curve ssl_max_protocol_version ssl_min_protocol_version
    ssl_passphrase_command unix_socket_directories
    """.split()  # noqa: SIM905 - a word list
)
# current_setting('<name>'[, missing_ok]) with a literal name, as PostgreSQL's parser and
# sqlglot both read it: this prefix + the setting's name (ASCII-lowered, as PostgreSQL
# compares setting names), decided like SHOW of that setting. A name that is not a string
# literal stays the plain call, which no grant may make (it could name any setting).
CURRENT_SETTING_PREFIX = "current_setting:"
# A setting named (or, for client_encoding, valued) by a parameter of a protocol-level Parse
# (psycopg's and asyncpg's server-side binding: ``current_setting($1)``,
# ``set_config($1, $2, false)``): reported as the prefix + this mark, and decided at each
# Bind on the values bound (a "param:" pin of kind SETTING_PINS, ``policy.decide.
# bound_setting``), as the same call with those literals would be. The parameter is bare, or
# cast to text or varchar with no type modifier (which could cut the name the server reads),
# its pin's spec then ending in CAST_MARK (a JSON object: no literal's rendering ends so):
# allowed only where the Parse leaves that parameter untyped or gives it text or varchar
# (``StatementPolicy._checked_parse``: the server then reads the bound text itself; a
# regclass's ``::text`` is a relation's name, round 57).
BY_PARAMETER = "$"
CAST_MARK = {"cast": True}
CAST_SPEC_END = '{"cast": true}]'  # (how a spec ending in CAST_MARK ends: json.dumps)
SETTING_PINS = frozenset({"current_setting", "set_config"})
# pg_terminate_backend(pid[, timeout]) / pg_cancel_backend(pid) of one backend written as
# an integer literal, a bare parameter or ``pg_backend_pid()``, as PostgreSQL's parser and
# sqlglot both read it: reported as the call + ":" + the pid, BY_PARAMETER (decided at each
# Bind on the value bound) or OWN_BACKEND, and allowed for the backends of the grant's own
# sessions only (``StatementPolicy.own_backends``): with a shared upstream role the server
# lets a session signal any other of that role. Any other call stays dangerous.
SIGNAL_FUNCTIONS = frozenset({"pg_terminate_backend", "pg_cancel_backend"})
OWN_BACKEND = "self"
# the sqlglot walk's pid of a number literal (it reads every number as 0): the value is
# PostgreSQL's reading's (``crosscheck.reconcile``), which only it renders
BY_NUMBER = "#"
# calls a parameter of a protocol-level Parse pins, decided at each Bind ("param:" pins)
PARAMETER_PINS = SETTING_PINS | SIGNAL_FUNCTIONS


def signal_target(fn: str) -> str | None:
    """The pid part of a rendered signal call (``pg_cancel_backend:123`` -> "123", or
    BY_PARAMETER, OWN_BACKEND); None for any other name."""
    call, sep, target = fn.partition(":")
    return target if sep and call in SIGNAL_FUNCTIONS else None
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
        "lastval",
    }
)
# Why, where "may not execute NAME" alone would not say it.
DANGEROUS_WHY = {
    "lastval": (
        "it returns the value of whichever sequence this session advanced last, a column "
        "default's or a trigger's among them, whatever relation it belongs to; name the "
        "sequence instead: currval('schema.sequence')"
    ),
}
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
    pg_lock_status
    """.split()  # noqa: SIM905 - a word list
)
# Deparsers of object definitions: a function's body, a view's or rule's query, where
# literals (keys, tokens, the values a view filters on) are written down. Like the
# functions above: allowed only by an execute:pg_catalog.<fn> scope.
DEFINITION_FUNCTIONS = frozenset(
    {"pg_get_functiondef", "pg_get_function_sqlbody", "pg_get_viewdef", "pg_get_ruledef"}
)
CATALOG_STATE_PREFIXES = ("pg_stat_get_backend_", "pg_stat_statements")


def is_catalog_state_function(name: str) -> bool:
    return (
        name in CATALOG_STATE_FUNCTIONS
        or name in DEFINITION_FUNCTIONS
        or name.startswith(CATALOG_STATE_PREFIXES)
    )


def _is_dangerous_function(name: str) -> bool:
    """``name`` is a bare (pg_catalog) function name. (``is_dangerous_function`` is this
    with a memo; tests/unit/test_miss_path.py compares the two.)"""
    return name in DANGEROUS_FUNCTIONS or name.startswith(DANGEROUS_PREFIXES)


# The two checks by name are pure (the lists here are constants) and a miss asks them
# several times per call (both parsers' readings, then the decision): memoized
# (policy/memo.py), short names only.
_MEMO_MAX = 128  # characters
is_dangerous_function = memoized(_is_dangerous_function, _MEMO_MAX)


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
    justify_hours justify_interval lag lcm lead least left length ln log log10
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
    bit_and bit_or bit_xor like_escape similar_to_escape pow
    """.split()  # noqa: SIM905 - a word list reads better than 300 quoted strings
) | frozenset(
    # SQL/JSON and MERGE syntax in PostgreSQL 16-18, a call by name in 15: pglast's grammar
    # reads the syntax, pgparse reports the call (pgparse._NEWER_SYNTAX); a built-in unless
    # a user's function of the name shadows it
    (
        "json", "json_array", "json_arrayagg", "json_exists", "json_object", "json_objectagg",
        "json_query", "json_scalar", "json_serialize", "json_table", "json_value",
        "merge_action",
    )  # fmt: skip
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


def _is_builtin_function(name: str) -> bool:
    """A bare (pg_catalog) name a grant may call without an execute scope.
    (``is_builtin_function`` is this with a memo; tests/unit/test_miss_path.py compares.)"""
    if _is_dangerous_function(name) or is_catalog_state_function(name):
        return False
    return (
        name in BUILTIN_FUNCTIONS
        or name in TYPED_FUNCTIONS
        or name in BUILTIN_EXTRA
        or name.startswith(BUILTIN_PREFIXES)
        or (name.startswith("pg_") and name.endswith("_is_visible"))
        or (name.startswith("has_") and name.endswith("_privilege"))
    )


is_builtin_function = memoized(_is_builtin_function, _MEMO_MAX)
