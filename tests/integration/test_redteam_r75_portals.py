"""Red-team round 75 (after cf0b972 and the working tree's policy/portals.py; time-boxed;
the server the judge).

Fixed the same session (plain tests now): leaks 1-3 (one map for the server's one portal
namespace: every CLOSE, CLOSE ALL and protocol Close forgets a name however it was made),
4 (the ``SELECT f(...)`` shape: no FROM, only literals and parameters as arguments, and no
refcursor function named like a refcursor column), 5-6 (an Execute of a portal whose
statement text is not sure is refused), 9 (a Describe of a portal the client did not make
is refused), and both transparency failures (the groups a ReadyForQuery answered come from
the relay; rows no RowDescription led count where every call returns one plain
refcursor). Leaks 7 and 8 stay strict xfails: the residue policy/portals.py names.

The rule attacked (policy/portals.py, ``SessionPortals``): where the database holds code
that may leave a cursor open (``Snapshot.portal_code``), a session may FETCH/MOVE or
protocol-Execute only cursors its client DECLAREd, portals its client Bound, and refcursors
learnt from the rows of a Sync group holding nothing but calls of refcursor functions
(``REFCURSOR_FUNCTIONS_SQL``); everything else is refused (``deny.cursor``).

Grants (agent ``r75-bot``): ``base`` = ``execute:r75.report read:r75.pub``; ``rw`` = the
same and ``write:r75.t``; ``writer`` = ``write:r75.t``; ``pubw`` =
``execute:public.r75_report write:r75.t``; ``echo`` = ``execute:r75.echo write:r75.t``;
``closer`` = ``write:r75.t2``; ``viewer`` = ``read:r75.v``; ``poly`` =
``execute:r75.r75_report write:r75.t``. Planted (owner ``pgwitness``, before the proxy
starts): ``r75x.kv`` holding ``ROW`` (outside every grant); ``r75x.audit()``, an AFTER
INSERT row trigger of ``r75.t`` that ``OPEN``s ``r75_audit`` over ``r75x.kv``;
``r75x.reopen()`` on ``r75.t2``: closes ``r75_mine`` if it exists and opens it over
``r75x.kv``; ``r75x.opener(name)`` and the view ``r75.v`` calling it (``r75_view``);
``r75.report()`` (an unnamed refcursor over ``r75.pub``), ``public.r75_report()`` (the
refcursor ``r75_report`` over ``r75.pub``); ``r75.echo(c refcursor) RETURNS refcursor AS
'SELECT c'``; ``r75.r75_report(anyelement) RETURNS anyelement``.

Leaks (strict xfails asserting the safe outcome; each first shown directly as
``pgwitness``: ``ROW`` comes back; read in the simple Query, extended unnamed and named
prepared statement where it applies, a session each):

1. **A protocol Close of a DECLAREd cursor leaves its name the client's** (``writer``):
   ``BEGIN``; ``DECLARE r75_audit CURSOR FOR SELECT 1``; protocol ``Close('P',
   "r75_audit")`` + Sync (the server drops the cursor: SQL cursors and protocol portals are
   one namespace); ``INSERT INTO r75.t VALUES (1)`` (the trigger OPENs ``r75_audit``);
   ``FETCH ALL FROM r75_audit``: allowed, ``ROW``. ``SessionPortals.closed`` pops
   ``bound`` only; ``cursors`` keeps the name, confirmed.
2. **A SQL CLOSE of a protocol portal leaves its Bind the client's** (``writer``, and 3:
   ``CLOSE ALL``): ``BEGIN``; Parse ``SELECT 1``, Bind portal ``r75_audit``, Execute, Sync;
   ``CLOSE r75_audit`` (or ``CLOSE ALL``: the server drops every portal not running); the
   INSERT; ``Execute("r75_audit")`` + Sync: the server runs the trigger's cursor, ``ROW``.
   ``_statement``'s CLOSE touches ``cursors`` only.
   Fix for 1-3 (the family: two books for one server namespace): keep one map of portal
   names (DECLAREd, Bound, learnt), and have every way of closing (SQL CLOSE name, CLOSE
   ALL, protocol Close 'P') forget the name in it whatever made it (CLOSE ALL: all of
   them, the unnamed portal too).
4. **Field selection in function notation launders a literal refcursor** (``pubw``):
   ``BEGIN``; the INSERT; ``SELECT r75_report(s) FROM (SELECT 'r75_audit'::refcursor AS
   r75_report) s`` alone in its Sync group (every mode): PostgreSQL reads the bare
   ``r75_report(s)`` (one composite argument, no ``r75_report(record)``) as ``s.r75_report``,
   a column, while ``output_calls`` sees a call of ``public.r75_report``, a refcursor
   function; the row's ``r75_audit`` is learnt and ``FETCH ALL FROM r75_audit`` returns
   ``ROW``. (The ``SELECT f(...)`` shape's FROM clause is not looked at either.) Fix:
   accept the ``SELECT f(...)`` shape only without a FROM clause (drivers send none:
   ``SELECT f(?)``, ``select * from f(?) as result``, ``CALL p(?)``) and only calls whose
   arguments hold no column reference or whole-row reference; or harvest only columns the
   RowDescription does not tie to a relation and whose call the server resolved (ask
   ``pg_cursors`` for names opened during the group instead of reading rows).
5. **An Execute of a portal whose statement text the proxy is unsure of runs unchecked**
   (``writer``): ``SessionPortals.execute`` lets through a portal bound with ``pairs=None``
   ("it may be anything": it only forgets the transaction's portals). ``BEGIN``; the
   INSERT; one Sync group: Close statement ``r75_fx``, Parse ``r75_fx`` = ``FETCH ALL FROM
   r75_audit``, Bind portal ``r75_p``, Execute ``r75_p``, Sync: ``ROW``. ``portal_bound``
   finds ``r75_fx`` unconfirmed, not fresh (the Close touched it) and not bound to its Parse
   (three touches), so it records no statements for the portal. 6: the unnamed statement,
   once any earlier extended statement made one: Parse ``("", FETCH ...)`` + Sync, then
   Bind + Execute + Sync pipelined before the answer (its group is not the Parse's):
   ``ROW``. Fix: where ``portal_code`` holds, refuse an Execute of a portal whose
   statement text is not known (``deny.cursor``: "send the Bind after the Parse's
   answer"), or decide it as each text the server may hold under the name (the last
   Parse's and the one before): refused if any reads a portal.
7. **Residue (policy/portals.py names it): code closes the client's cursor and opens its
   own under the name** (``closer``): ``BEGIN``; ``DECLARE r75_mine CURSOR FOR SELECT
   'own'``; ``INSERT INTO r75.t2 VALUES (1)``; ``FETCH ALL FROM r75_mine``: ``ROW``. Fix:
   check with the server at a FETCH where code may have run since the DECLARE
   (``pg_cursors``: the statement text is the client's DECLARE, its creation_time the
   DECLARE's), or refuse such FETCHes once a statement that may run code ran.
8. **Residue (named too): a granted function returning its argument** (``echo``):
   ``BEGIN``; the INSERT; ``SELECT r75.echo('r75_audit')`` alone in its group; ``FETCH ALL
   FROM r75_audit``: ``ROW``. The grant chose the function, not that the name it echoes is
   a cursor code opened. Fix: learn only names of cursors opened while the group ran
   (``pg_cursors`` before and after, or creation_time after the group's start), or leave
   out of ``REFCURSOR_FUNCTIONS_SQL`` functions taking a refcursor or text argument.
9. **A Describe of the code's portal is not checked** (metadata, no rows; ``writer``):
   ``BEGIN``; the INSERT; ``Describe('P', "r75_audit")`` + Sync: the hidden query's
   RowDescription (column ``v``, its type, ``r75x.kv``'s OID and column number). Fix:
   refuse a Describe of a portal the session did not make, as an Execute of it.

Transparency failures (strict xfails, plain expectations):

1. A refcursor call prepared and described at its Parse (``Describe('S')``), then Bind +
   Execute without a Describe (pgjdbc past prepareThreshold, asyncpg's prepared
   statements): no RowDescription in the group, nothing learnt, ``FETCH ALL IN
   "<unnamed portal N>"`` refused. Fix: keep each statement's RowDescription from its
   Describe and apply it to its portals' rows.
2. pgjdbc's pattern (BEGIN and ``select * from r75.report() as result`` in one extended
   Sync group, then ``FETCH ALL IN`` the name) as the session's first Sync group: not
   learnt (apparently ``SessionPortals._answered_below`` starts at -1, so the first answered
   range never matches); it works once the session has run anything before.

Held (plain tests, ``deny.cursor`` on the read; each shown directly first): no DECLARE at
all; a DECLARE the server refused (outside a block); DECLARE, CLOSE, the write and the
FETCH pipelined as four Query messages; an extended DECLARE whose Sync group failed
pipelined with the next; ``BEGIN; DECLARE; END; BEGIN; INSERT; FETCH`` and ``DECLARE;
COMMIT; BEGIN; ...`` in one message; ROLLBACK TO a savepoint before the DECLARE; RELEASE
then ROLLBACK; COMMIT AND CHAIN; WITH HOLD declared in a block rolled back, or whose
COMMIT failed (its query divides by zero); a held cursor after DISCARD ALL; CLOSE ALL of a
DECLAREd cursor; a view's function's cursor; a protocol Execute of the code's portal with
no Bind, of a portal bound in a committed block, of a DECLAREd name after CLOSE;
laundering a literal refcursor beside a granted call, in a second statement of the
message or of the Sync group, in a pipelined next group, through a cast of the call, a
``coalesce``, a VALUES list. A bare refcursor-function name resolved elsewhere (r75's
polymorphic ``r75_report``) needs the search_path changed: SET, SET LOCAL, set_config
and the startup parameters are all refused. Transparency that holds: pgjdbc's pattern in
a session that ran anything first, psycopg's named cursor (extended DECLARE, FETCH FORWARD
in later groups), asyncpg's protocol cursor (row-limited Execute, Flush, Execute again,
Sync, continued in a later group), a WITH HOLD cursor after COMMIT, the client's own
cursor under the trigger's name.
"""

from __future__ import annotations

import struct

import pytest

from tests.support import planted
from tests.support import rawpg as r
from tests.support.portal_steps import (
    Q,
    X,
    close_portal,
    close_statement,
    describe_portal,
    in_mode,
)
from tests.support.portal_steps import (
    answers as _answers,
)
from tests.support.portal_steps import (
    direct as _direct,
)
from tests.support.portal_steps import (
    flat as _flat,
)
from tests.support.portal_steps import (
    proxied as _proxied,
)

pytestmark = pytest.mark.timeout(300)

AGENT = "r75-bot"
SCOPES = "execute:r75.report read:r75.pub"
GRANTS = {
    "rw": "execute:r75.report read:r75.pub write:r75.t",
    "writer": "write:r75.t",
    "pubw": "execute:public.r75_report write:r75.t",
    "echo": "execute:r75.echo write:r75.t",
    "closer": "write:r75.t2",
    "poly": "execute:r75.r75_report write:r75.t",
    "viewer": "read:r75.v",
}
ROW = "R75-ROW-3c91"  # r75x.kv: outside every grant
PUB = "R75-PUB-3c92"  # r75.pub: what the granted functions' cursors read
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r75; CREATE SCHEMA r75x;
CREATE TABLE r75x.kv (k int, v text);
INSERT INTO r75x.kv VALUES (1, '{ROW}');
CREATE TABLE r75.pub (v text);
INSERT INTO r75.pub VALUES ('{PUB}'), ('{PUB}-2'), ('{PUB}-3');
CREATE FUNCTION r75.report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor;
BEGIN
  OPEN c FOR SELECT v FROM r75.pub;
  RETURN c;
END $$;
CREATE FUNCTION public.r75_report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r75_report';
BEGIN
  OPEN c FOR SELECT v FROM r75.pub;
  RETURN c;
END $$;
CREATE FUNCTION r75.r75_report(x anyelement) RETURNS anyelement LANGUAGE sql AS $$ SELECT x $$;
CREATE FUNCTION r75.echo(c refcursor) RETURNS refcursor LANGUAGE sql AS $$ SELECT c $$;
CREATE TABLE r75.t (a int);
CREATE FUNCTION r75x.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r75_audit';
BEGIN
  OPEN c FOR SELECT v FROM r75x.kv;
  RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON r75.t FOR EACH ROW EXECUTE FUNCTION r75x.audit();
CREATE TABLE r75.t2 (a int);
CREATE FUNCTION r75x.reopen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r75_mine';
BEGIN
  IF EXISTS (SELECT 1 FROM pg_cursors WHERE name = 'r75_mine') THEN
    CLOSE c;
  END IF;
  OPEN c FOR SELECT v FROM r75x.kv;
  RETURN NEW;
END $$;
CREATE TRIGGER reopen AFTER INSERT ON r75.t2 FOR EACH ROW EXECUTE FUNCTION r75x.reopen();
CREATE FUNCTION r75x.opener(name text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE c refcursor := name;
BEGIN
  OPEN c FOR SELECT v FROM r75x.kv;
  RETURN 1;
END $$;
CREATE VIEW r75.v AS SELECT r75x.opener('r75_view') AS x;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r75, r75x CASCADE; DROP FUNCTION IF EXISTS public.r75_report();"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r75", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


_refused = planted.refused_by_proxy
INSERT = "INSERT INTO r75.t VALUES (1)"
FETCH = "FETCH ALL FROM r75_audit"


# --- steps: each a list of frames ending in one Query or Sync (one ReadyForQuery) --------


def _read(mode: str, sql: str = FETCH) -> list[list[bytes]]:
    return in_mode(mode, sql) if mode in MODES else Q(sql)


BOUND_AS_AUDIT = [[r.parse("", "SELECT 1"), r.bind("r75_audit"), r.execute("r75_audit"), r.SYNC]]
EXECUTE_AUDIT = [[r.execute("r75_audit"), r.SYNC]]
LAUNDER = "SELECT r75_report(s) FROM (SELECT 'r75_audit'::refcursor AS r75_report) s"
PROTOCOL = ["protocol"]

# key -> (grant, steps in mode, the modes): the last step reads the code's cursor
LEAKS = {
    "close-portal-of-declared": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("DECLARE r75_audit CURSOR FOR SELECT 1"),
        [[close_portal("r75_audit"), r.SYNC]], Q(INSERT), _read(mode),
    ), MODES),
    "sql-close-of-bound": ("writer", lambda mode: _flat(
        Q("BEGIN"), BOUND_AS_AUDIT, Q("CLOSE r75_audit"), Q(INSERT), EXECUTE_AUDIT,
    ), PROTOCOL),
    "close-all-of-bound": ("writer", lambda mode: _flat(
        Q("BEGIN"), BOUND_AS_AUDIT, Q("CLOSE ALL"), Q(INSERT), EXECUTE_AUDIT,
    ), PROTOCOL),
    "field-selection": ("pubw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), in_mode(mode, LAUNDER), Q(FETCH),
    ), MODES),
    "reparsed-fetch": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        [[close_statement("r75_fx"), r.parse("r75_fx", FETCH), r.bind("r75_p", "r75_fx"),
          r.execute("r75_p"), r.SYNC]],
    ), PROTOCOL),
    "unnamed-reparsed-fetch": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), X("SELECT 1"),
        [[r.parse("", FETCH), r.SYNC, r.bind(), r.execute(), r.SYNC]],
    ), PROTOCOL),
    # residue the module docstring of policy/portals.py names
    "code-reopens-declared": ("closer", lambda mode: _flat(
        Q("BEGIN"), Q("DECLARE r75_mine CURSOR FOR SELECT 'own'"),
        Q("INSERT INTO r75.t2 VALUES (1)"), _read(mode, "FETCH ALL FROM r75_mine"),
    ), MODES),
    "granted-echo": ("echo", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), in_mode(mode, "SELECT r75.echo('r75_audit')"), Q(FETCH),
    ), MODES),
}  # fmt: skip
LEAK_NUMBERS = {k: n for n, k in enumerate(LEAKS, 1)}
LEAK_CASES = [(k, mode) for k, v in LEAKS.items() for mode in v[2]]


@pytest.mark.parametrize("key", list(LEAKS))
def test_r75_leak_rows_directly(pg, px, key):
    _, steps, modes = LEAKS[key]
    got = _direct(pg, steps(modes[0]))
    assert ROW in got[-1], got


RESIDUE = ("code-reopens-declared", "granted-echo")  # (policy/portals.py names them)


def _leak_case(key: str, mode: str):
    marks = (
        [pytest.mark.xfail(strict=True, reason=f"r75 leak {LEAK_NUMBERS[key]}: {key}")]
        if key in RESIDUE
        else []
    )
    return pytest.param(key, mode, marks=marks, id=f"{key}-{mode}")


@pytest.mark.parametrize(("key", "mode"), [_leak_case(k, m) for k, m in LEAK_CASES])
def test_r75_code_cursor_read(px, key, mode):
    grant, steps, _ = LEAKS[key]
    got = _proxied(px, grant, steps(mode))
    assert not any(_refused(g) for g in got[:-1]), ("the steps before are allowed", got)
    assert ROW not in got[-1], ("LEAK", got[-1][-300:])
    assert _refused(got[-1]), got[-1][-300:]


DESCRIBED = [[describe_portal("r75_audit"), r.SYNC]]


def test_r75_describe_code_portal_directly(pg, px):
    got = _direct(pg, _flat(Q("BEGIN"), Q(INSERT), DESCRIBED))
    assert got[-1][:1] == "T" and "v\x00" in got[-1], got[-1]


def test_r75_describe_code_portal(px):
    """A Describe of the code's portal is not checked: its RowDescription (the hidden
    query's column names and types, the hidden table's OID and column numbers) comes back."""
    got = _proxied(px, "writer", _flat(Q("BEGIN"), Q(INSERT), DESCRIBED))
    assert got[-1][:1] != "T", ("LEAK (metadata)", got[-1][-300:])


SEARCH_PATH = ["BEGIN", INSERT, "SET search_path = r75, public",
               "SELECT r75_report('r75_audit'::refcursor)", FETCH]  # fmt: skip
SETTERS = [
    "SET search_path = r75, public",
    "SET LOCAL search_path = r75, public",
    "SELECT set_config('search_path', 'r75, public', true)",
]


def test_r75_search_path_overload_directly(pg, px):
    got = _direct(pg, _flat(*[Q(s) for s in SEARCH_PATH]))
    assert "r75_audit" in got[3] and ROW in got[4], got


@pytest.mark.parametrize("setter", SETTERS)
def test_r75_search_path_overload_held(px, setter):
    """A bare name is taken to be public's (``public.r75_report``, a refcursor function)
    while the session's search_path could make it r75's polymorphic one: the search_path
    cannot be changed, so it is public's."""
    sqls = [*SEARCH_PATH[:2], setter, *SEARCH_PATH[3:]]
    got = _proxied(px, "poly", _flat(*[Q(s) for s in sqls]))
    assert ROW not in "".join(got), ("LEAK", got[-1][-300:])
    assert _refused(got[2]) and "search_path" in got[2], got[2][-300:]


@pytest.mark.parametrize("params", [{"search_path": "r75, public"},
                                    {"options": "-c search_path=r75,public"}])  # fmt: skip
def test_r75_search_path_at_startup_refused(px, params):
    with pytest.raises(r.RawError, match="deny.setting"):
        r.RawClient.session(px.host, px.port, px.agent, px.tokens["poly"], params=params)


# --- held ----------------------------------------------------------------------------------

DECLARED = "DECLARE r75_audit CURSOR FOR SELECT 1"
# key -> (grant, steps in mode, the modes): the last step is refused (deny.cursor)
HELD = {
    "no-declare": ("writer", lambda mode: _flat(Q("BEGIN"), Q(INSERT), _read(mode)), MODES),
    "declare-refused-outside-block": ("writer", lambda mode: _flat(
        Q(DECLARED), Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "pipelined-declare": ("writer", lambda mode: _flat(
        [[r.query("BEGIN"), r.query(DECLARED), r.query("CLOSE r75_audit"), r.query(INSERT),
          r.query(FETCH)]],
    ), ["simple"]),
    "pipelined-extended-declare": ("writer", lambda mode: _flat(
        Q("BEGIN"),
        [[r.parse("", DECLARED), r.bind(), r.execute(), r.SYNC,
          r.parse("", "ROLLBACK TO SAVEPOINT nowhere"), r.bind(), r.execute(), r.SYNC]],
        Q("ROLLBACK"), Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "end-in-one-message": ("writer", lambda mode: _flat(
        Q(f"BEGIN; {DECLARED}; END; BEGIN; {INSERT}; {FETCH}"),
    ), ["simple"]),
    "implicit-block-message": ("writer", lambda mode: _flat(
        Q(f"{DECLARED}; COMMIT; BEGIN; {INSERT}; {FETCH}"),
    ), ["simple"]),
    "savepoint-rolled-back": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT s"), Q(DECLARED), Q("ROLLBACK TO SAVEPOINT s"), Q(INSERT),
        _read(mode),
    ), MODES),
    "released-then-rolled-back": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT s"), Q(DECLARED), Q("RELEASE s"), Q("ROLLBACK"), Q("BEGIN"),
        Q(INSERT), _read(mode),
    ), MODES),
    "commit-and-chain": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(DECLARED), Q("COMMIT AND CHAIN"), Q(INSERT), _read(mode),
    ), MODES),
    "hold-in-rolled-back-block": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("DECLARE r75_audit CURSOR WITH HOLD FOR SELECT 1"), Q("ROLLBACK"),
        Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "hold-failed-commit": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("DECLARE r75_audit CURSOR WITH HOLD FOR SELECT 1/0"), Q("COMMIT"),
        Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "hold-discarded": ("writer", lambda mode: _flat(
        Q("DECLARE r75_audit CURSOR WITH HOLD FOR SELECT 1"), Q("DISCARD ALL"), Q("BEGIN"),
        Q(INSERT), _read(mode),
    ), MODES),
    "close-all-then-declared": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(DECLARED), Q("CLOSE ALL"), Q(INSERT), _read(mode),
    ), MODES),
    "view-function": ("viewer", lambda mode: _flat(
        Q("BEGIN"), Q("SELECT * FROM r75.v"), _read(mode, "FETCH ALL FROM r75_view"),
    ), MODES),
    "execute-no-bind": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), EXECUTE_AUDIT,
    ), PROTOCOL),
    "execute-after-commit": ("writer", lambda mode: _flat(
        Q("BEGIN"), BOUND_AS_AUDIT, Q("COMMIT"), Q("BEGIN"), Q(INSERT), EXECUTE_AUDIT,
    ), PROTOCOL),
    "execute-declared-after-close": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(DECLARED), Q("CLOSE r75_audit"), Q(INSERT), EXECUTE_AUDIT,
    ), PROTOCOL),
    # refcursor laundering (grant ``rw``: the granted r75.report, a write firing the trigger)
    "literal-beside-call": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), in_mode(mode, "SELECT r75.report(), 'r75_audit'::refcursor"),
        Q(FETCH),
    ), MODES),
    "second-statement": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), Q("SELECT r75.report(); SELECT 'r75_audit'::refcursor"), Q(FETCH),
    ), ["simple"]),
    "second-in-sync-group": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        [[r.parse("", "SELECT r75.report()"), r.bind(), describe_portal(""), r.execute(),
          r.parse("", "SELECT 'r75_audit'::refcursor"), r.bind(), describe_portal(""),
          r.execute(), r.SYNC]],
        Q(FETCH),
    ), PROTOCOL),
    "pipelined-groups": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        [[r.parse("", "SELECT r75.report()"), r.bind(), describe_portal(""), r.execute(),
          r.SYNC, r.parse("", "SELECT 'r75_audit'::refcursor"), r.bind(),
          describe_portal(""), r.execute(), r.SYNC]],
        Q(FETCH),
    ), PROTOCOL),
    "cast-of-call": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), in_mode(mode, "SELECT r75.report()::text::refcursor"), Q(FETCH),
    ), MODES),
    "coalesce-of-call": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        in_mode(mode, "SELECT coalesce(NULL::refcursor, 'r75_audit')"), Q(FETCH),
    ), MODES),
    "call-from-values": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        in_mode(mode, "SELECT * FROM (VALUES ('r75_audit'::refcursor)) v(report)"), Q(FETCH),
    ), MODES),
}  # fmt: skip
HELD_CASES = [pytest.param(k, m, id=f"{k}-{m}") for k, v in HELD.items() for m in v[2]]


@pytest.mark.parametrize("key", list(HELD))
def test_r75_held_rows_directly(pg, px, key):
    _, steps, modes = HELD[key]
    got = _direct(pg, steps(modes[0]))
    assert ROW in got[-1], got


@pytest.mark.parametrize(("key", "mode"), HELD_CASES)
def test_r75_held(px, key, mode):
    grant, steps, _ = HELD[key]
    got = _proxied(px, grant, steps(mode))
    assert ROW not in "".join(got), ("LEAK", got[-1][-300:])
    assert _refused(got[-1]) and "deny.cursor" in got[-1], got[-1][-300:]


# --- transparency --------------------------------------------------------------------------


def _first_value(frames: list[bytes]) -> str:
    """The first column of the first DataRow among ``frames``."""
    row = next(f for f in frames if f[:1] == b"D")
    size = struct.unpack_from("!i", row, 7)[0]
    return row[11 : 11 + size].decode()


def _rows(frames: list[bytes]) -> int:
    return sum(1 for f in frames if f[:1] == b"D")


PGJDBC_CALL = [
    r.parse("", "BEGIN"), r.bind(), r.execute(),
    r.parse("", "select * from r75.report() as result"), r.bind(), describe_portal(""),
    r.execute(), r.SYNC,
]  # fmt: skip


@pytest.mark.parametrize(
    "warm",
    [
        pytest.param(False, id="first-group"),
        pytest.param(True, id="warm"),
    ],
)
def test_r75_pgjdbc_refcursor(px, warm):
    """pgjdbc: BEGIN and the call in one Sync group, then FETCH ALL IN the name returned."""
    with planted.session(px) as c:
        if warm:
            c.query("SELECT 1")
        called = _answers(c, PGJDBC_CALL)
        name = _first_value(called)
        got = planted.text(c.query(f'FETCH ALL IN "{name}"'))
        c.query("ROLLBACK")
    assert PUB in got and not _refused(got), got[-300:]


def test_r75_psycopg_named_cursor(px):
    """psycopg's server-side cursor: DECLARE over the extended protocol in a block, then
    FETCH FORWARD n in later Sync groups, then CLOSE."""
    with planted.session(px) as c:
        c.query("BEGIN")
        declared = planted.text(
            planted.raw_extended(c, 'DECLARE "r75_c" CURSOR WITHOUT HOLD FOR SELECT v FROM r75.pub')
        )
        first = planted.raw_extended(c, 'FETCH FORWARD 2 FROM "r75_c"')
        second = planted.raw_extended(c, 'FETCH FORWARD 2 FROM "r75_c"')
        closed = planted.text(planted.raw_extended(c, 'CLOSE "r75_c"'))
        c.query("COMMIT")
    assert not _refused(declared) and not _refused(closed), (declared, closed)
    assert (_rows(first), _rows(second)) == (2, 1), (planted.text(first), planted.text(second))


def test_r75_asyncpg_protocol_cursor(px):
    """asyncpg's cursor: a named portal executed with a row limit, Flush, Execute again
    later, then Sync; and continued in a later Sync group (a fetch size)."""
    with planted.session(px) as c:
        c.query("BEGIN")
        _answers(c, [r.parse("r75_as", "SELECT v FROM r75.pub"), r.frame(b"D", b"Sr75_as\x00"),
                     r.SYNC])  # fmt: skip
        one = _answers(c, [r.bind("r75_ap", "r75_as"), r.execute("r75_ap", 1), r.FLUSH])
        two = _answers(c, [r.execute("r75_ap", 1), r.SYNC])
        three = _answers(c, [r.execute("r75_ap", 0), r.SYNC])
        c.query("COMMIT")
    texts = [planted.text(f) for f in (one, two, three)]
    assert not any(_refused(t) for t in texts), texts
    assert [_rows(f) for f in (one, two, three)] == [1, 1, 1], texts


def test_r75_hold_cursor_after_commit(px):
    with planted.session(px) as c:
        c.query("BEGIN")
        c.query("DECLARE r75_h CURSOR WITH HOLD FOR SELECT v FROM r75.pub")
        c.query("COMMIT")
        first = planted.text(c.query("FETCH 1 FROM r75_h"))
        rest = planted.text(c.query("FETCH ALL FROM r75_h"))
        c.query("CLOSE r75_h")
    assert PUB in first and f"{PUB}-3" in rest and not _refused(first + rest), (first, rest)


def test_r75_own_portal_named_like_code_cursor(px):
    """The client's own portal and cursor under the trigger's name, in other blocks."""
    with planted.session(px, px.tokens["writer"]) as c:
        c.query("BEGIN")
        declared = planted.text(c.query("DECLARE r75_audit CURSOR FOR SELECT 'r75-own'"))
        got = planted.text(c.query(FETCH))
        c.query("ROLLBACK")
    assert "r75-own" in got and not _refused(declared + got), got[-300:]


def test_r75_prepared_refcursor_call_without_describe(px):
    """pgjdbc past prepareThreshold, asyncpg's prepared statements: the statement was
    described at its Parse; later Binds and Executes come without a Describe."""
    with planted.session(px) as c:
        c.query("BEGIN")
        _answers(c, [r.parse("r75_call", "SELECT r75.report()"),
                     r.frame(b"D", b"Sr75_call\x00"), r.SYNC])  # fmt: skip
        called = _answers(c, [r.bind(statement="r75_call"), r.execute(), r.SYNC])
        name = _first_value(called)
        got = planted.text(c.query(f'FETCH ALL IN "{name}"'))
        c.query("ROLLBACK")
    assert PUB in got and not _refused(got), got[-300:]
