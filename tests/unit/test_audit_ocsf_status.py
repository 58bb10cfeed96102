"""The OCSF export's status of a statement row (recorder.audit.ocsf.statement_event): what
the auditor's answer says of it, not merely whether it was "ok"."""

from __future__ import annotations

import pytest

from recorder.audit.ocsf import statement_event


def row(outcome: str) -> dict:
    return {"ts": "2026-12-05T20:00:00+00:00", "session_id": "s1", "n": 3, "outcome": outcome,
            "command_tag": "INSERT 0 1", "text": "INSERT INTO t VALUES (1)"}  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "status_id", "status"),
    [
        ("ok", 1, "Success"),
        ("prepared", 0, "Unknown"),  # PREPARE TRANSACTION: neither committed nor undone yet
        ("unknown", 0, "Unknown"),  # the recording cannot say (no verified end)
        ("rolled back", 2, "Failure"),
        ("error", 2, "Failure"),
        ("denied", 2, "Failure"),
    ],
)
def test_a_statements_status_follows_its_outcome(outcome, status_id, status):
    e = statement_event(row(outcome))
    assert (e["status_id"], e["status"]) == (status_id, status)
    assert e["unmapped"]["outcome"] == outcome
