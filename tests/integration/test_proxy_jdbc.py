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

from tests.support import planted
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


# A database whose code opens cursors (policy/portals.py): a function returning a refcursor
# over a table the grant reads, and a trigger opening one over a table it does not.
REFCURSOR_SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA s32j; CREATE SCHEMA s32jx;
CREATE TABLE s32jx.kv (v text);
INSERT INTO s32jx.kv VALUES ('S32J-SECRET');
CREATE TABLE s32j.pub (v text);
INSERT INTO s32j.pub VALUES ('pub-1'), ('pub-2');
CREATE FUNCTION s32j.report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor;
BEGIN
  OPEN c FOR SELECT v FROM s32j.pub ORDER BY v;
  RETURN c;
END $$;
CREATE TABLE s32j.t (a int);
CREATE FUNCTION s32jx.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c refcursor := 's32j_audit';
BEGIN
  OPEN c FOR SELECT v FROM s32jx.kv;
  RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON s32j.t FOR EACH ROW EXECUTE FUNCTION s32jx.audit();
RESET ROLE;
"""
REFCURSOR_TEARDOWN = "DROP SCHEMA IF EXISTS s32j, s32jx CASCADE;"


@pytest.fixture(scope="module")
def cursor_proxy(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s32j", agent="s32j-bot",
                         scopes="execute:s32j.report read:s32j.pub write:s32j.t",
                         setup=REFCURSOR_SETUP, teardown=REFCURSOR_TEARDOWN) as h:  # fmt: skip
        yield h


@pytest.mark.parametrize("via", ["direct", "grant"])
def test_jdbc_refcursors_and_fetch_size_where_code_opens_cursors(jdbc, pg, cursor_proxy, via):
    if via == "direct":
        r = jdbc("refcursor", pg, user="pgwitness", password=pg.users["pgwitness"])
    else:
        r = jdbc("refcursor", cursor_proxy, user="s32j-bot", password=cursor_proxy.token)
    for key in ("callable_rows", "getobject_rows", "fetched_rows", "fetch_size_rows"):
        assert r[key] == "pub-1;pub-2;", (key, r)
    # the trigger's cursor: Postgres hands it over; through the proxy, to the grant, there
    # is no such cursor (34000: it did not make it)
    assert r["code_cursor"] == ("none" if via == "direct" else "34000"), r
    assert r["after_rollback"] == "usable"
