"""The auditor's text answer (``pgwitness audit``), through the recording proxy and a real
PostgreSQL: a statement its transaction's end undid reads ROLLED BACK, not its command tag
alone; a Query only partly undone says which statements were. The server judges (the rows
that landed)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from tests.support import outage
from tests.support.outage import errors
from tests.support.rawpg import describe

pytestmark = pytest.mark.timeout(240)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.s21_txtext"
PROBE = outage.ProbeTable(TABLE, AGENT, f"read:{TABLE} write:{TABLE}")


@pytest.fixture(scope="module", autouse=True)
def table(pg):
    PROBE.create(pg)
    yield
    PROBE.drop(pg)


def ins(v: int) -> str:
    return f"INSERT INTO {TABLE} VALUES ({v})"


def audit_text(h, tmp_path) -> list[str]:
    from proxy.cli import main as cli_main

    h.stop()  # every session's end sealed and stored
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main([
            "audit", "--store", str(tmp_path / "rec"), "--index", str(tmp_path / "a.duckdb"),
            "--public-key", str(tmp_path / "signing.key.pub"),
        ])  # fmt: skip
    assert rc == 0, out.getvalue()
    return out.getvalue().splitlines()


def result_of(lines: list[str], sql: str) -> str:
    at = [i for i, line in enumerate(lines) if line.rstrip().endswith(f"] '{sql}'")]
    assert len(at) == 1, (sql, lines)
    return lines[at[0] + 1].strip()


def test_the_text_answer_says_rolled_back(make_proxy, tmp_path, pg):
    h = PROBE.proxy(make_proxy, tmp_path)
    PROBE.fresh(pg, 2101, 2102, 2103, 2104)
    partly = f"{ins(2103)}; ROLLBACK; {ins(2104)}"
    with PROBE.client(h) as c:
        for sql in ("BEGIN", ins(2101), "ROLLBACK", ins(2102), partly):
            got = c.query(sql)
            assert not errors(got), (sql, describe(got))
    assert [PROBE.rows_with(pg, v) for v in (2101, 2102, 2103, 2104)] == [0, 1, 0, 1]
    lines = audit_text(h, tmp_path)
    assert result_of(lines, ins(2101)).startswith(
        "-> ROLLED BACK (ran: INSERT 0 1): its transaction block ended without COMMIT (ROLLBACK)"
    ), lines
    assert result_of(lines, ins(2102)).startswith("-> INSERT 0 1 ("), lines
    assert result_of(lines, partly).startswith(
        "-> INSERT 0 1; ROLLBACK; INSERT 0 1; PARTLY ROLLED BACK: statement 1 (INSERT 0 1) "
        "undone by the transaction's ROLLBACK"
    ), lines
