"""proxy.redaction: an error quoting a row of a relation the grant may not read loses its
DETAIL and CONTEXT, and nothing else."""

from __future__ import annotations

from common.wire.errors import frame
from proxy.redaction import error_fields, redact_error, strip_code


def error(*fields: tuple[str, str], encoding: str = "utf-8") -> bytes:
    body = b"".join(k.encode() + v.encode(encoding) + b"\x00" for k, v in fields) + b"\x00"
    return frame(b"E", body)


FK_ERROR = error(
    ("S", "ERROR"), ("V", "ERROR"), ("C", "23502"),
    ("M", 'null value in column "order_id" of relation "r10_fk" violates not-null constraint'),
    ("D", "Failing row contains (null, r10-fknull-d402)."),
    ("W", 'SQL statement "UPDATE ONLY "secret"."r10_fk" SET "order_id" = NULL ..."'),
    ("s", "secret"), ("t", "r10_fk"), ("c", "order_id"), ("n", "r10_fk_order_id_not_null"),
    ("F", "execMain.c"), ("L", "1975"), ("R", "ExecConstraints"),
)  # fmt: skip


def readable(*names: str):
    return lambda schema, table: f"{schema}.{table}" in names


def test_an_unreadable_relations_row_is_withheld_and_the_rest_kept():
    out = redact_error(FK_ERROR, readable("public.orders"), "utf-8")
    assert out is not None
    before, after = dict(error_fields(FK_ERROR)), dict(error_fields(out))
    assert b"r10-fknull-d402" not in out and b"UPDATE ONLY" not in out
    assert after[ord("D")].startswith(b"pgwitness: detail withheld") and b"secret.r10_fk" in after[ord("D")]
    assert ord("W") not in after
    assert {k: v for k, v in after.items() if k != ord("D")} == {
        k: v for k, v in before.items() if k not in (ord("D"), ord("W"))
    }
    assert [c for c, _ in error_fields(out)] == [c for c, _ in error_fields(FK_ERROR) if c != ord("W")]


def test_a_readable_relation_or_none_named_or_nothing_to_withhold_passes_as_it_is():
    assert redact_error(FK_ERROR, readable("secret.r10_fk"), "utf-8") is None
    no_table = error(("S", "ERROR"), ("C", "22P02"), ("M", "invalid input"), ("D", "x"))
    assert redact_error(no_table, readable(), "utf-8") is None
    no_detail = error(("S", "ERROR"), ("C", "23505"), ("M", "dup"), ("s", "secret"), ("t", "t"))
    assert redact_error(no_detail, readable(), "utf-8") is None


CHECK_OPTION = error(
    ("S", "ERROR"), ("V", "ERROR"), ("C", "44000"),
    ("M", 'new row violates check option for view "wo_checked"'),
    ("D", "Failing row contains (1, -1, wo-secret-8c41)."),
    ("F", "execMain.c"), ("L", "2183"), ("R", "ExecWithCheckOptions"),
)  # fmt: skip


def test_a_row_whose_relation_the_error_does_not_name_is_withheld_for_every_grant():
    """A view's CHECK OPTION and integrity errors without a table field: whose row it is
    cannot be told, so even a grant reading everything loses the DETAIL, nothing else."""
    no_partition = error(("S", "ERROR"), ("C", "23514"), ("M", "no partition found for row"),
                         ("D", "Partition key of the failing row contains (k) = (wo-secret-8c41)."))  # fmt: skip
    for err in (CHECK_OPTION, no_partition):
        out = redact_error(err, lambda schema, table: True, "utf-8")
        assert out is not None and b"wo-secret-8c41" not in out
        before, after = dict(error_fields(err)), dict(error_fields(out))
        assert after[ord("D")].startswith(b"pgwitness: detail withheld")
        assert {k: v for k, v in after.items() if k != ord("D")} == {
            k: v for k, v in before.items() if k != ord("D")
        }
    other = error(("S", "ERROR"), ("C", "22P02"), ("M", "invalid input"), ("D", "x"))
    assert redact_error(other, readable(), "utf-8") is None  # not a row: as it is
    bare = error(("S", "ERROR"), ("C", "44000"), ("M", "new row violates check option"))
    assert redact_error(bare, readable(), "utf-8") is None  # nothing to withhold


def test_names_are_read_in_the_client_encoding():
    seen = []
    latin = error(("S", "ERROR"), ("D", "Key (k)=(geheim) already exists."),
                  ("s", "gehéim"), ("t", "tâble"), encoding="latin-1")  # fmt: skip

    def may_read(schema, table):
        seen.append((schema, table))
        return False

    out = redact_error(latin, may_read, "latin-1")
    assert seen == [("gehéim", "tâble")]
    assert out is not None and b"geheim)" not in out and "gehéim.tâble".encode("latin-1") in out


def test_withhold_message_keeps_severity_and_sqlstate_only():
    from proxy.redaction import withhold_message

    raised = error(("S", "ERROR"), ("V", "ERROR"), ("C", "P0001"), ("M", "row is protected"),
                   ("D", "row (9302,secret-value)"), ("W", "PL/pgSQL function ..."),
                   ("F", "pl_exec.c"))  # fmt: skip
    out = withhold_message(raised, "utf-8")
    fields = dict(error_fields(out))
    assert set(fields) == {ord("S"), ord("V"), ord("C"), ord("M")}
    assert fields[ord("C")] == b"P0001" and b"message withheld" in fields[ord("M")]
    assert b"secret-value" not in out and out[:1] == b"E"
    notice = frame(b"N", b"SNOTICE\x00VNOTICE\x00C00000\x00Marchiving (9303,secret)\x00\x00")
    reduced = withhold_message(notice, "utf-8")
    assert reduced[:1] == b"N" and b"secret" not in reduced


def test_withhold_message_says_why():
    from proxy.redaction import SCHEMA_MOVED, UNREADABLE_WRITES, withhold_message

    raised = error(("S", "ERROR"), ("C", "42P01"), ("M", 'relation "x" does not exist'))
    moved = dict(error_fields(withhold_message(raised, "utf-8", SCHEMA_MOVED)))
    assert moved[ord("M")] == SCHEMA_MOVED.encode() and moved[ord("C")] == b"42P01"
    default = dict(error_fields(withhold_message(raised, "latin-1")))
    assert default[ord("M")] == UNREADABLE_WRITES.encode("latin-1")


PL_ERROR = error(
    ("S", "ERROR"), ("V", "ERROR"), ("C", "22P02"),
    ("M", 'invalid input syntax for type integer: "x"'),
    ("W", "SQL statement \"SELECT p::int + length('pl-secret')\"\n"
          "PL/pgSQL function cs_pl(text) line 4 at SQL statement"),
    ("q", "SELECT p::int + length('pl-secret')"), ("p", "8"),
    ("F", "numutils.c"), ("L", "232"), ("R", "pg_strtoint32"),
)  # fmt: skip


def test_strip_code_withholds_the_quoted_statement_and_keeps_where_it_failed():
    out = strip_code(PL_ERROR, "utf-8")
    assert out is not None and b"pl-secret" not in out
    fields = dict(error_fields(out))
    assert fields[ord("W")] == (b"PL/pgSQL function cs_pl(text) line 4 at SQL statement\n"
                                b"(pgwitness: the function body's statement is withheld)")  # fmt: skip
    assert ord("q") not in fields and ord("p") not in fields
    kept = [(c, v) for c, v in error_fields(PL_ERROR) if c not in (ord("W"), ord("q"), ord("p"))]
    assert [(c, v) for c, v in error_fields(out) if c != ord("W")] == kept


def test_strip_code_knows_every_way_postgresql_quotes_a_body():
    context = "\n".join([
        'SQL expression "p || \'a\'"', 'PL/pgSQL assignment "r := \'b\'"',
        "Traceback (most recent call last):", '  PL/Python function "f", line 3, in <module>',
        "    plpy.execute(\"select 'c'\")", 'PL/Python function "f"',
        "while executing", '"set x d"', '    (procedure "__PLTcl_proc_1" line 2)',
        "invoked from within", '"__PLTcl_proc_1"',
    ])  # fmt: skip
    out = strip_code(error(("S", "NOTICE"), ("C", "00000"), ("M", "m"), ("W", context)), "utf-8")
    assert out is not None
    left = dict(error_fields(out))[ord("W")].decode()
    assert left.splitlines() == [
        "Traceback (most recent call last):", 'PL/Python function "f"',
        "(pgwitness: the function body's statement is withheld)",
    ]  # fmt: skip


def test_strip_code_passes_what_quotes_no_code():
    for quiet in (
        error(("S", "ERROR"), ("C", "P0001"), ("M", "m"), ("W", "PL/pgSQL function f() line 3 at RAISE")),
        error(("S", "ERROR"), ("C", "22012"), ("M", "division by zero")),
        error(("S", "ERROR"), ("C", "22P02"), ("M", "m"), ("W", 'COPY t, line 1, column a: "x"')),
        error(("S", "ERROR"), ("C", "42883"), ("M", "m"), ("W", 'SQL function "f" statement 1')),
    ):
        assert strip_code(quiet, "utf-8") is None
