"""Why a message is withheld, said in the message: while another session's schema change
(DDL) is open, what the server says about this session's statements is withheld
(``StatementPolicy.writes_moved``, red-team round 36), and the note names that cause, not
the unrelated "this session writes rows ... may not read" (the drivers' differential of
session 23 met the wrong one on plain reads). Once the change ends, the same statement
gets the server's full message again.
"""

from __future__ import annotations

import pytest

from proxy.redaction import SCHEMA_MOVED, UNREADABLE_WRITES
from tests.support import planted
from tests.support.rawpg import RawClient

SETUP = (
    "SET ROLE pgwitness; CREATE SCHEMA s24w; "
    "CREATE TABLE s24w.t (id int PRIMARY KEY, v text); RESET ROLE;"
)
TEARDOWN = "DROP SCHEMA IF EXISTS s24w CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(
        pg, tmp_path_factory, "s24wn", agent="s24-bot", scopes="read:s24w.* write:s24w.*",
        setup=SETUP, teardown=TEARDOWN, grants={"migrator": "read:s24w.* write:s24w.* ddl:s24w.*"},
    ) as handle:  # fmt: skip
        yield handle


READS = {
    "missing-relation": ("SELECT * FROM s24w.nope", "42P01", 's24w.nope" does not exist'),
    "division": ("SELECT 1/0 FROM s24w.t", "22012", "division by zero"),
}


def _error(c: RawClient, sql: str) -> str:
    return planted.result(c.query(sql))


@pytest.mark.parametrize("case", list(READS))
def test_note_names_another_sessions_schema_change(px, case):
    sql, state, message = READS[case]
    with (
        planted.session(px, px.tokens["migrator"]) as mig,
        planted.session(px, px.tokens["base"]) as rd,
    ):
        assert "error" not in _error(
            rd, "INSERT INTO s24w.t VALUES (1, 'a') ON CONFLICT DO NOTHING"
        )
        before = _error(rd, sql)
        assert before == f"error {state}: " + before.split(": ", 1)[1] and message in before, before
        mig.query("BEGIN")
        assert "error" not in _error(mig, "CREATE TABLE s24w.made (i int)")
        during = _error(rd, sql)
        mig.query("ROLLBACK")
        after = _error(rd, sql)
    assert during.startswith(f"error {state}: "), during  # the SQLSTATE is kept
    assert message not in during and SCHEMA_MOVED in during, during
    assert UNREADABLE_WRITES not in during, during
    assert message in after and "withheld" not in after, after
