"""Session 35, round 3: the audit answer's lies, on hand-made recordings (no proxy).

* the client's ``application_name``: PostgreSQL names a session after the startup
  packet's ``application_name`` with its name case folded (``Application_Name``), else a
  ``-c application_name=...`` (or ``--application-name=...``) in ``options`` (libpq's
  ``PGOPTIONS``); the answer read the packet's ``application_name`` key alone and said the
  client gave no name (``derive.client_application_name``).

Each test fails without its fix. The same cases through the proxy, judged by the server
(``SHOW application_name``): tests/integration/test_s35_audit_round3.py.
"""

from __future__ import annotations

import pytest

from tests.support.audit_recordings import Session


def client_name(params: dict) -> str | None:
    return Session().start(startup_params=params).facts().session["application_name"]


@pytest.mark.parametrize(("params", "want"), [
    ({"application_name": "psql"}, "psql"),
    ({}, None),
    ({"options": "-c application_name=viaopts"}, "viaopts"),
    ({"options": "-capplication_name=viaopts"}, "viaopts"),
    ({"options": "--application-name=viaopts"}, "viaopts"),
    ({"options": "-c statement_timeout=5 -c Application_Name=a\\ b"}, "a b"),
    ({"options": "-c application_name=first -c application_name=second"}, "second"),
    ({"options": "-c application_name=opts", "application_name": "explicit"}, "explicit"),
    ({"application_name": "explicit", "options": "-c application_name=opts"}, "explicit"),
    ({"Application_Name": "mixedcase"}, "mixedcase"),
    ({"fallback_application_name": "fb"}, "fb"),
    ({"fallback_application_name": "fb", "options": "-c application_name=o"}, "o"),
    ({"options": "-c --application_name=x"}, None),  # -c takes the next word: no such setting
    ({"options": "-c"}, None),
])  # fmt: skip
def test_the_clients_application_name_is_read_as_postgresql_reads_the_packet(params, want):
    assert client_name(params) == want
