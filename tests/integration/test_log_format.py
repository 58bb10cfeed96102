"""The proxy's log lines (proxy.logs): every line in the configured format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository

_PROGRAM = """
import sqlglot
from proxy.logs import event, setup_logging
setup_logging("info", "json")
sqlglot.parse_one("COMMENT ON ROLE r IS 'x'", read="postgres")  # sqlglot warns here
event("statement checked", agent="a")
"""


def test_a_json_log_holds_only_json_lines_even_when_the_parser_warns():
    """psycopg2's suite through the proxy: sqlglot's "Falling back to parsing as a
    'Command'" warnings reached stderr as bare lines beside the JSON ones."""
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line]
    assert lines, "nothing logged"
    for line in lines:
        json.loads(line)  # a bare line fails here
    assert [json.loads(line)["msg"] for line in lines] == ["statement checked"], lines
