"""JDBC through pgwitness: the PostgreSQL JDBC driver (pgjdbc) in a real JVM.

The README promises that JDBC works unchanged. pgjdbc speaks the protocol its own way:
extended query for everything, named server-side statements after ``prepareThreshold``
uses, batches as pipelined Bind/Execute, COPY through CopyManager, cancel on a separate
connection, notifications read off the socket. ``tests/jdbc/PgwitnessJdbc.java`` runs each
scenario and prints ``key=value`` lines; the checks are here. ``make system-deps`` installs
the driver (Debian's libpostgresql-jdbc-java) and a JDK when they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.fixtures_proxy import POLICY_AGENT as AGENT
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER

pytestmark = pytest.mark.timeout(120)

SOURCE = Path(__file__).parents[1] / "jdbc" / "PgwitnessJdbc.java"
JAR = Path(os.environ.get("PGWITNESS_JDBC_JAR", "/usr/share/java/postgresql.jar"))


@pytest.fixture(scope="session")
def jdbc(tmp_path_factory):
    """Compiles the client once; returns a function running one scenario."""
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac and java, "no JDK on PATH: `make system-deps` installs default-jdk-headless"
    assert JAR.is_file(), f"no JDBC driver at {JAR}: `make system-deps` installs libpostgresql-jdbc-java"
    classes = tmp_path_factory.mktemp("jdbc")
    subprocess.run(
        [javac, "-d", str(classes), "-cp", str(JAR), str(SOURCE)], check=True, timeout=120
    )

    def run(scenario: str, handle, user: str = STATIC_USER, password: str = STATIC_PASSWORD) -> dict:
        url = f"jdbc:postgresql://{handle.host}:{handle.port}/app?sslmode=disable&connectTimeout=10"
        proc = subprocess.run(
            [java, "-cp", f"{JAR}{os.pathsep}{classes}", "PgwitnessJdbc", scenario, url, user, password],
            capture_output=True, text=True, timeout=100,
        )  # fmt: skip
        assert proc.returncode == 0, f"{scenario} failed:\n{proc.stdout}\n{proc.stderr}"
        result = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        assert result.get("done") == scenario, proc.stdout
        return result

    return run


@pytest.fixture(params=["direct", "proxy"])
def target(request, pg, proxy):
    """Each scenario runs against Postgres itself too: the expectations are Postgres's."""
    if request.param == "proxy":
        return proxy, STATIC_USER, STATIC_PASSWORD
    return pg, "pgwitness", pg.users["pgwitness"]


def test_jdbc_queries_prepared_batches_transactions_and_large_values(jdbc, target):
    r = jdbc("queries", *target)
    assert int(r["backend_pid"]) > 0
    assert r["current_user"] == "pgwitness"  # the proxy's own login, not the client's
    assert r["multi_results"] == "2"
    assert r["prepared_sum"] == str(2 * sum(range(1, 11)))
    assert (r["batch_statements"], r["rows"]) == ("1000", "1000")
    assert r["amount_sum"] == str(sum(range(1000)) + 250) + ".00"
    assert r["rows_after_rollback"] == "1000"
    assert r["in_failed_tx"] == "22012,25P02"  # division by zero, then the aborted transaction
    assert (r["array"], r["json"]) == ("{1,2,3}", "[1, 2]")
    assert (r["bytea_roundtrip"], r["bytea_md5_matches"]) == ("true", "true")


def test_jdbc_copy_in_and_out(jdbc, target):
    r = jdbc("copy", *target)
    assert (r["copied_in"], r["copied_out"], r["copy_out_equal"]) == ("20000", "20000", "true")
    assert r["bad_copy"] == "22P02"  # an error part-way through COPY FROM STDIN
    assert r["after_bad_copy"] == "20000"  # the failed COPY left nothing; the session goes on


def test_jdbc_cancel_reaches_the_running_query(jdbc, target):
    r = jdbc("cancel", *target)
    assert r["cancel"] == "57014" and r["cancel_seconds_lt_10"] == "true"
    assert r["after_cancel"] == "still usable"


def test_jdbc_listen_notify(jdbc, target):
    r = jdbc("notify", *target)
    assert (r["notifications"], r["payload"]) == ("1", "hello from b")


def test_jdbc_denials_are_42501_and_the_session_stays_usable(jdbc, pproxy):  # noqa: F811
    r = jdbc("policy", pproxy, user=AGENT, password=pproxy.token)
    assert r["allowed"] == "true"
    assert r["denied_simple"] == "42501" and r["denied_prepared"] == "42501"
    assert r["denied_message_names_relation"] == "true"
    assert r["after_denial"] == "usable"
    assert (r["denied_in_tx"], r["after_denied_in_tx"]) == ("42501", "25P02")
    assert r["after_rollback"] == "t"
