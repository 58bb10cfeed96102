"""Red-team round 72 (a fresh sweep after session 31; time-boxed; the server the judge).

Families looked at first, offline and against the server: objects a statement makes or
changes beyond what it names (``INHERITS`` / ``PARTITION OF`` a parent outside the grant,
``CREATE STATISTICS``, ``CREATE INDEX`` / ``COMMENT ON`` outside, ``CREATE TRIGGER ...
EXECUTE FUNCTION`` outside, ``CREATE RULE`` / ``POLICY`` / ``PUBLICATION`` / ``EVENT
TRIGGER``, ``SECURITY LABEL``, ``ALTER TABLE ... OWNER TO`` / ``DISABLE TRIGGER`` /
``ATTACH PARTITION``, ``ALTER DEFAULT PRIVILEGES``, ``LIKE`` / ``REFERENCES`` / a CHECK's
subquery outside, ``pg_show_all_settings()``): each refused (a scope, ``deny.unknown``,
``deny.role``), as the classification sweep of this round showed. What was left open is
**session state that quotes code**: the default catalog list (``ALLOWED_CATALOGS``) holds
``pg_cursors`` and ``pg_prepared_statements``, whose ``statement`` column is the text a
portal or a prepared statement was made from. A client's own DECLARE or PREPARE is text it
sent; a portal or prepared statement that *code* made holds a piece of that code's body,
which "Code holds secrets too" refuses everywhere else (``pg_proc.prosrc``,
``pg_get_functiondef``, EXPLAIN's inlined bodies, CONTEXT lines).

Grants (agent ``r72-bot``): ``base`` = ``execute:r72.open_report execute:r72.prep`` (no
``read:pg_catalog.pg_proc``, no read of any relation); ``writer`` = ``write:r72.t`` (no
read, no execute scope at all). Planted (owner ``pgwitness``, the upstream login, before
the proxy starts): ``r72x.kv (k, v)`` holding ``ROW`` (outside every grant);
``r72.open_report()`` (PL/pgSQL, returns the refcursor ``r72_report`` it opens ``FOR
SELECT k FROM r72x.kv WHERE v <> '<BODY>'``: the common "function returns a cursor"
shape); ``r72x.audit()``, an AFTER INSERT row trigger of ``r72.t`` that opens a cursor
``r72_audit`` ``FOR SELECT 1 WHERE NEW.a::text <> '<TRIG>'``; ``r72.prep()`` (PL/pgSQL,
``EXECUTE 'PREPARE r72_q AS SELECT v FROM r72x.kv WHERE ''<PREP>'' <> '''''``: a function
warming a prepared statement for itself). ``BODY``, ``TRIG`` and ``PREP`` are written only
in function bodies.

Fixed the same session (session 31; plain tests since, each a strict xfail first):
``pg_cursors.statement`` and ``pg_prepared_statements.statement`` are code columns
(pgparse's SENSITIVE_COLUMNS, every way of reading them) where user-written code in the
database may leave a cursor or prepared statement of its own (``Snapshot.cursor_code``,
CODE_FLAGS_SQL: a procedural language, or a source naming a cursor, PREPARE, EXECUTE or
OPEN), refused without ``read:pg_catalog.pg_proc`` (``_code_state_read``); in a database
with no such code they stay the client's own (psycopg lists its prepared statements).

Leaks (strict xfails asserting the safe outcome; simple Query, extended unnamed, named
prepared statement, each in a session and block of its own, the harm first shown directly
as ``pgwitness``):

1. **A granted function's cursor shows its body** (``base``). ``BEGIN; SELECT
   r72.open_report()`` (allowed: ``scope.execute``), then ``SELECT name, statement FROM
   pg_cursors`` (``default.catalog``): the row ``r72_report | SELECT k FROM r72x.kv WHERE v
   <> 'R72-BODY-7c21'``, directly and through the proxy in every mode; ``SELECT * FROM
   pg_cursors`` and ``to_jsonb(c)`` alike. The same grant's ``SELECT prosrc FROM pg_proc``
   is refused (``deny.catalog``): the body is code the grant may run, not read.
2. **A trigger's cursor shows the trigger function's body** (``writer``: no execute scope
   on ``r72x.audit`` at all). ``BEGIN; INSERT INTO r72.t VALUES (1)`` (allowed,
   ``scope.write``; the session's errors and notices are withheld from here on, the
   table being triggered), then ``SELECT name, statement FROM pg_cursors``: ``r72_audit |
   SELECT 1 WHERE NEW.a::text <> 'R72-TRIG-7c23'``, a line of a function the grant can
   neither run by name nor read, in every mode.
3. **Code's PREPARE shows its dynamic SQL** (``base``). ``SELECT r72.prep()``, then
   ``SELECT name, statement FROM pg_prepared_statements``: ``r72_q | PREPARE r72_q AS
   SELECT v FROM r72x.kv WHERE 'R72-PREP-7c24' <> ''``, in every mode (the policy forgets
   its names after such code, ``names_unknown``, but not what the catalog shows).

Why: ``pg_cursors`` and ``pg_prepared_statements`` are in ``ALLOWED_CATALOGS`` whole (the
session's own state, drivers read them), and ``pgparse.SENSITIVE_COLUMNS`` lists code
columns of ``pg_proc`` / ``pg_views`` / ``pg_rules`` / ``pg_rewrite`` /
``information_schema`` only; neither view's ``statement`` is one. PostgreSQL makes a
portal of every ``OPEN`` in PL/pgSQL (``SPI_cursor_open``, visible in ``pg_cursor()``),
with the query's text as its source, and ``EXECUTE 'PREPARE ...'`` stores its text.
Suggested fix (the family: session state made by code): treat ``pg_cursors.statement`` and
``pg_prepared_statements.statement`` (and ``pg_cursor()`` / ``pg_prepared_statement()``,
already not built-ins) as code columns, refused without ``read:pg_catalog.pg_proc`` as
``prosrc`` is (named, ``*``, a whole row, an alias list); or pin them to what the session
sent itself (the relay sees every DECLARE, PREPARE and Parse: a row whose ``name`` is one
the policy holds is the client's own text), refusing the read once code that may open a
cursor or prepare (``DDL_CODE_SQL``'s PREPARE marks; any PL/pgSQL ``OPEN``) ran in the
session.

Held (plain tests, every mode): after ``r72.prep()`` a Bind of ``r72_q`` and ``EXECUTE
r72_q`` (the code's statement run with the agent's choice of when: refused,
``names_unknown`` / ``deny.execute``); ``SELECT prosrc FROM pg_proc`` and
``pg_catalog.pg_cursor()`` under ``base`` (refused).
"""

from __future__ import annotations

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "r72-bot"
SCOPES = "execute:r72.open_report execute:r72.prep"
GRANTS = {"writer": "write:r72.t"}
BODY = "R72-BODY-7c21"  # r72.open_report()'s body only
ROW = "R72-ROW-7c22"  # r72x.kv: outside every grant
TRIG = "R72-TRIG-7c23"  # r72x.audit()'s body only
PREP = "R72-PREP-7c24"  # r72.prep()'s body only
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r72; CREATE SCHEMA r72x;
CREATE TABLE r72x.kv (k int, v text);
INSERT INTO r72x.kv VALUES (1, '{ROW}');
CREATE FUNCTION r72.open_report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r72_report';
BEGIN
  OPEN c FOR SELECT k FROM r72x.kv WHERE v <> '{BODY}';
  RETURN c;
END $$;
CREATE TABLE r72.t (a int);
CREATE FUNCTION r72x.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r72_audit';
BEGIN
  OPEN c FOR SELECT 1 WHERE NEW.a::text <> '{TRIG}';
  RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON r72.t FOR EACH ROW EXECUTE FUNCTION r72x.audit();
CREATE FUNCTION r72.prep() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'PREPARE r72_q AS SELECT v FROM r72x.kv WHERE ''{PREP}'' <> ''''';
  RETURN 1;
END $$;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r72, r72x CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r72", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


_refused = planted.refused_by_proxy


def _in_block(px, key: str, mode: str, sqls: list[str]) -> list[str]:
    """``BEGIN`` (simple), then ``sqls`` in ``mode``, in one session of grant ``key``: each
    one's text (the block is left to the session's end)."""
    with planted.session(px, px.tokens[key]) as c:
        c.query("BEGIN")
        got = [planted.run_mode(c, mode, s) for s in sqls]
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def _tails(got: list[str]) -> list[str]:
    return [g[-300:] for g in got]


# --- 1-3. session state made by code quotes the code --------------------------------------

CURSORS = "SELECT name, statement FROM pg_cursors"
STATE = {
    # key: (grant, the code's statement, the read, the body's marker)
    "granted-cursor": ("base", "SELECT r72.open_report()", CURSORS, BODY),
    "granted-cursor-star": ("base", "SELECT r72.open_report()", "SELECT * FROM pg_cursors", BODY),
    "granted-cursor-row": (
        "base",
        "SELECT r72.open_report()",
        "SELECT to_jsonb(c) FROM pg_cursors c",
        BODY,
    ),  # fmt: skip
    "trigger-cursor": ("writer", "INSERT INTO r72.t VALUES (1)", CURSORS, TRIG),
    "code-prepare": (
        "base",
        "SELECT r72.prep()",
        "SELECT name, statement FROM pg_prepared_statements",
        PREP,
    ),  # fmt: skip
}


@pytest.mark.parametrize("key", list(STATE))
def test_state_shows_code_directly(pg, px, key):
    _, run, read, marker = STATE[key]
    got = planted.direct_as_owner(pg, run, read)
    assert "SELECT 1" in got[0] or "INSERT 0 1" in got[0], _tails(got)
    assert marker in got[1], _tails(got)


@pytest.mark.parametrize("key", list(STATE))
@pytest.mark.parametrize("mode", MODES)
def test_state_shows_code(px, key, mode):
    grant, run, read, marker = STATE[key]
    got = _in_block(px, grant, mode, [run, read])
    assert not _refused(got[0]), ("the code's statement is allowed", _tails(got))
    assert marker not in "".join(got), ("LEAK", _tails(got))


# --- held ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_code_prepared_statement_not_run(px, mode):
    """The statement code prepared, bound or EXECUTEd by the agent: refused."""
    with planted.session(px) as c:
        assert "SELECT 1" in planted.text(c.query("SELECT r72.prep()"))
        bound = planted.text(planted.bound(c, "r72_q"))
        executed = planted.run_mode(c, mode, "EXECUTE r72_q")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    assert ROW not in bound + executed, ("LEAK", bound[-300:], executed[-300:])
    assert _refused(bound) and _refused(executed), (bound[-300:], executed[-300:])


HELD = {
    "prosrc": "SELECT prosrc FROM pg_proc WHERE proname = 'open_report'",
    "pg-cursor-function": "SELECT * FROM pg_catalog.pg_cursor()",
    "definition": "SELECT pg_get_functiondef('r72.open_report'::regproc)",
}


@pytest.mark.parametrize("key", list(HELD))
@pytest.mark.parametrize("mode", MODES)
def test_body_refused(px, key, mode):
    got = _in_block(px, "base", mode, ["SELECT r72.open_report()", HELD[key]])
    assert BODY not in got[1], ("LEAK", _tails(got))
    assert _refused(got[1]), _tails(got)
