"""Red-team round 77 (after 12cced3; time-boxed; the server the judge).

Fixed the same session (session 32; plain tests now): leak 1 (every SAVEPOINT sent waits in
one FIFO for its CommandComplete, released and rolled-past ones too), leak 2 (the relay
tells the portals of its own ROLLBACK, and a ReadyForQuery 'I' holds only WITH HOLD cursors
of the groups it answered: a COMMIT the client sent, or the implicit transaction that made
them), leak 3 (a COPY ended before its CopyInResponse came no longer leaves
``SyncGroups`` in copy-in mode: only the Syncs sent before its end are swallowed), and
transparency 1 (a COMMIT answered without an error holds, 'T' after it or not).

The rule attacked (policy/portals.py, ``SessionPortals``; docs/decisions.md "A session
reads only the portals it made (session 32)" and 12cced3): where the database holds code
that may leave a cursor open (``Snapshot.portal_code``), a session may FETCH/MOVE,
protocol-Execute or Describe only cursors and portals its client made in the open
transaction, and refcursors learnt from a Sync group of nothing but refcursor calls.
Newest (12cced3): a SAVEPOINT counts once a CommandComplete "SAVEPOINT" confirms it (FIFO
over the savepoints listed), an error forgets what its Sync group made at its
ReadyForQuery, a COMMIT keeps WITH HOLD cursors only once answered and not after an error
(``_aborted``), names are their first 63 bytes and ASCII only, blind harvest only from
functions returning one plain refcursor.

Grants (agent ``r77-bot``): ``base`` = ``execute:r77.report read:r77.pub``; ``writer`` =
``write:r77.t write:r77.c``; ``rw`` = ``execute:r77.report read:r77.pub write:r77.t``.
Planted (owner ``pgwitness``, before the proxy starts): ``r77x.kv`` holding ``ROW``
(outside every grant); an AFTER INSERT row trigger on ``r77.t`` that ``OPEN``s a cursor
named ``r77_audit`` over ``r77x.kv``; ``r77.report()`` (an unnamed refcursor over
``r77.pub``); ``r77.c`` (no trigger, a COPY target).

Leaks (strict xfails asserting the safe outcome; each first shown directly as
``pgwitness``: ``ROW`` comes back; the final read as a simple Query, extended unnamed and
named prepared statement, a session each):

1. **A SAVEPOINT's CommandComplete confirms another savepoint** (``writer``): ``BEGIN``;
   ``SAVEPOINT b``; ``DECLARE r77_audit CURSOR FOR SELECT 1``; one message ``SAVEPOINT a;
   RELEASE a; SELECT 1/0; SAVEPOINT b`` (the proxy lists ``a``, drops it at the RELEASE,
   lists a second ``b`` after the cursor; the server makes ``a``, releases it, fails, skips
   the second ``b``); ``ROLLBACK TO SAVEPOINT b`` (the server goes back to the first ``b``,
   before the DECLARE: the cursor is gone; the proxy to the second: kept); ``INSERT INTO
   r77.t VALUES (1)`` (the trigger OPENs ``r77_audit``); ``FETCH ALL FROM r77_audit``:
   ``ROW``. ``savepoint_made`` confirms the oldest unconfirmed savepoint *still listed*:
   ``a``'s CommandComplete arrives after ``a`` left the list (RELEASE), so it confirms the
   second ``b``, which then survives the error (``failed`` and ``answered`` keep confirmed
   savepoints). Same with ``SAVEPOINT a; SAVEPOINT c; ROLLBACK TO a`` (``c`` rolled past
   before its answer), pipelined in separate Queries, and as protocol statements
   (SAVEPOINT and RELEASE Executes in one Sync group, the error and SAVEPOINT in the next,
   one write). Fix (family): confirm by the statement, not the list: keep a FIFO of every
   SAVEPOINT *sent* (a token per SAVEPOINT statement, released or rolled past or not, in
   order), pop one per CommandComplete "SAVEPOINT" and mark that token's savepoint (if
   still listed) confirmed; drop the tokens of a group at its error/ReadyForQuery.
2. **A denied PREPARE TRANSACTION's ROLLBACK is not told to the portals** (``writer``):
   ``BEGIN``; ``DECLARE r77_audit CURSOR WITH HOLD FOR SELECT 1``; ``PREPARE TRANSACTION
   'r77_x'`` (denied, deny.two_phase: the relay sends ``ROLLBACK`` and its error,
   ``Denials.inject_ending``; ReadyForQuery 'I'); ``BEGIN``; the INSERT; ``FETCH ALL FROM
   r77_audit``: ``ROW``. The refused Query never reaches ``SessionPortals.ran`` (only
   allowed verdicts do), the cursor was confirmed before, the error clears nothing of an
   earlier group, and ``answered(idle=True)`` takes every holdable entry for committed
   (``held``) though the server rolled the block back. Fix: tell the portals of the
   injected ROLLBACK (``_ended`` when the relay uses ``inject_ending``), and more
   generally make ``answered(idle)`` promote WITH HOLD entries to held only where a COMMIT
   the session sent was answered in that ReadyForQuery's groups (as ``_committed`` marks
   them; a block ending any other way, seen or not, is a rollback).
3. **A pipelined COPY FROM STDIN leaves the Sync groups in copy-in mode** (``writer``):
   ``COPY r77.c FROM STDIN`` with its CopyData and CopyDone in the same write (the relay
   sends the CopyDone before the CopyInResponse comes back, so ``SyncGroups.copy_in`` sets
   ``_copy_in`` after the copy already ended, for good: every later Sync is taken as
   ignored and ends no group); then, outside a block, Parse ``SELECT 1``, Bind portal
   ``r77_audit``, Execute, Sync (the server's implicit transaction commits at the Sync and
   drops the portal; the relay's ReadyForQuery 'I' answers groups ``first..below`` that do
   not include the portal's group, so ``answered(idle=True)`` keeps it, and the next
   ReadyForQuery 'T' confirms it); ``BEGIN``; the INSERT; ``FETCH ALL FROM r77_audit`` or
   ``Execute("r77_audit")``: ``ROW``. Same with the COPY in the extended protocol
   (Parse/Bind/Execute COPY, CopyData, CopyDone, Sync in one write). Fix: in
   ``SyncGroups``, count CopyDone/CopyFail sent since the Execute or Query that may start
   a COPY, and let a CopyInResponse enter copy-in mode (and merge swallowed Syncs) only if
   none was sent (else the copy is already over on the client's side: the Syncs after it
   were real); and in ``SessionPortals.answered(idle)``, forget every non-held entry, not
   only those of the groups below (at 'I' nothing of the transaction is left, whatever the
   group numbers say).

Transparency failures (strict xfails, plain expectations; the server shown first):

1. A WITH HOLD cursor committed where the ReadyForQuery after the COMMIT says 'T'
   (``COMMIT AND CHAIN``; ``COMMIT; BEGIN`` in one message): ``_committed`` makes it
   unconfirmed in the COMMIT's group, ``answered(idle=False)`` confirms it but never marks
   it held, so the chained block's ROLLBACK forgets it; ``FETCH ALL FROM`` it is refused
   (34000) though the server keeps it. Fix: mark it held when the COMMIT's group is
   answered without error, whatever the status (the same bookkeeping as leak 2's fix).

Held (plain tests, ``deny.cursor`` on the read; each shown directly first): COMMIT AND
CHAIN of a failed block holding a WITH HOLD cursor; ROLLBACK TO an unknown savepoint in a
failed block, then COMMIT; an extended error followed by a simple Query declaring WITH
HOLD before the Sync (merged groups); a DO's ROLLBACK of the extended protocol's implicit
transaction after a WITH HOLD DECLARE; a protocol Close of ``R77_AUDIT`` beside ``CLOSE
r77_audit``; ``DECLARE "R77_AUDIT"`` then FETCH of the lowercase name; 64-byte savepoint
names the server truncates to one (ROLLBACK TO of the other spelling); a refcursor call
between SAVEPOINT and RELEASE in one message, then FETCH of a name its rows did not hold;
a refcursor call in its own Sync group, then FETCH of another name; PREPARE TRANSACTION
denied with a cursor without hold; a pipelined COPY inside a block, then DECLARE,
ROLLBACK, and the code's cursor. Transparency that holds: pgjdbc autosave with
cleanupSavepoints (SAVEPOINT, statement, RELEASE in one Sync group) and a fetch-size portal
across a failed statement and ROLLBACK TO; psycopg's named cursor without hold and with
hold in autocommit; asyncpg's cursor (named portal, Execute of n rows per Sync); the
refcursor call then FETCH ALL IN; a COPY as libpq sends it, then a cursor in a block.

Reasoned from the code, not run: a trigger opening a cursor named ``''`` (SPI picks a
fresh name for an empty one, so code should never make the unnamed portal that a refused
Query's injected Query drops unseen); the harvest's pure groups (no quiet statement returns
rows, the proxy's injected statements return none, and ``harvested`` is cleared at each
ReadyForQuery even where the ``harvesting`` flag spans a batch answering later groups).
Not tried for lack of time: ``portal_code`` turning on mid-session (a fresh
``SessionPortals`` then refuses everything made before), FunctionCall.
"""

from __future__ import annotations

import struct

import pytest

from tests.support import planted
from tests.support import rawpg as r
from tests.support.portal_steps import (
    Q,
    close_portal,
    describe_portal,
    describe_statement,
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

AGENT = "r77-bot"
SCOPES = "execute:r77.report read:r77.pub"
GRANTS = {
    "writer": "write:r77.t write:r77.c",
    "rw": "execute:r77.report read:r77.pub write:r77.t",
}
ROW = "R77-ROW-9b31"  # r77x.kv: outside every grant
PUB = "R77-PUB-9b32"  # r77.pub: what the granted function's cursor reads
MODES = ["simple", "extended", "prepared"]
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r77; CREATE SCHEMA r77x;
CREATE TABLE r77x.kv (k int, v text);
INSERT INTO r77x.kv VALUES (1, '{ROW}');
CREATE TABLE r77.pub (v text);
INSERT INTO r77.pub VALUES ('{PUB}'), ('{PUB}-2'), ('{PUB}-3');
CREATE FUNCTION r77.report() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor;
BEGIN
  OPEN c FOR SELECT v FROM r77.pub;
  RETURN c;
END $$;
CREATE TABLE r77.t (a int);
CREATE TABLE r77.c (a int);
CREATE FUNCTION r77x.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'r77_audit';
BEGIN
  OPEN c FOR SELECT v FROM r77x.kv;
  RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON r77.t FOR EACH ROW EXECUTE FUNCTION r77x.audit();
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r77, r77x CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r77", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


_refused = planted.refused_by_proxy
INSERT = "INSERT INTO r77.t VALUES (1)"
FETCH = "FETCH ALL FROM r77_audit"
DECLARED = "DECLARE r77_audit CURSOR FOR SELECT 1"
HOLD = "DECLARE r77_audit CURSOR WITH HOLD FOR SELECT 1"


def _read(mode: str, sql: str = FETCH) -> list[list[bytes]]:
    return in_mode(mode, sql) if mode in MODES else Q(sql)


def _pipelined(*sqls: str) -> list[list[bytes]]:
    """Simple Queries sent in one write (the proxy decides them all before any answer)."""
    return [[r.query(s) for s in sqls]]


PROTOCOL = ["protocol"]


def _sp(sql: str) -> list[bytes]:
    """A statement as pgjdbc sends one of its own (unnamed, no Describe)."""
    return [r.parse("", sql), r.bind(), r.execute()]


COPY_DATA, COPY_DONE = r.frame(b"d", b"1\n"), r.frame(b"c")
# a COPY FROM STDIN with its rows and end in the same write: the CopyInResponse comes after
# the relay sent the CopyDone, and ``SyncGroups.copy_in`` takes the session to be in copy-in
# mode from then on (every later Sync ignored)
COPY_PIPELINED = [[r.query("COPY r77.c FROM STDIN"), COPY_DATA, COPY_DONE]]
# a portal named like the code's cursor, bound and run outside a block: the implicit
# transaction's commit at the Sync drops it
BOUND_OUTSIDE = [[r.parse("", "SELECT 1"), r.bind("r77_audit"), r.execute("r77_audit"), r.SYNC]]

# key -> (grant, steps in mode, the modes): the last step reads the code's cursor
PROBES = {
    # FIFO: a SAVEPOINT released in its own message; its CommandComplete confirms the next
    # SAVEPOINT decided (pipelined), which an error then skips
    "fifo-released": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT b"), Q(DECLARED),
        _pipelined("SAVEPOINT a; RELEASE a", "SELECT 1/0; SAVEPOINT b"),
        Q("ROLLBACK TO SAVEPOINT b"), Q(INSERT), _read(mode),
    ), MODES),
    # one message is enough: the released SAVEPOINT's CommandComplete confirms the one the
    # error then skips
    "fifo-one-message": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT b"), Q(DECLARED),
        Q("SAVEPOINT a; RELEASE a; SELECT 1/0; SAVEPOINT b"),
        Q("ROLLBACK TO SAVEPOINT b"), Q(INSERT), _read(mode),
    ), MODES),
    "fifo-rolled-past": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT b"), Q(DECLARED),
        _pipelined("SAVEPOINT a; SAVEPOINT c; ROLLBACK TO a", "SELECT 1/0", "SAVEPOINT b"),
        Q("ROLLBACK TO SAVEPOINT b"), Q(INSERT), _read(mode),
    ), MODES),
    # the same with the SAVEPOINT and its RELEASE as protocol statements of one Sync group
    "fifo-released-protocol": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q("SAVEPOINT b"), Q(DECLARED),
        [([*_sp("SAVEPOINT a"), *_sp("RELEASE SAVEPOINT a"), r.SYNC,
           *_sp("SELECT 1/0"), *_sp("SAVEPOINT b"), r.SYNC], 2)],
        Q("ROLLBACK TO SAVEPOINT b"), Q(INSERT), _read(mode),
    ), MODES),
    # a denied PREPARE TRANSACTION: the proxy sends ROLLBACK then its error
    # (``inject_ending``); the WITH HOLD cursor is taken as committed at the 'I'
    "denied-prepare-hold": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(HOLD), Q("PREPARE TRANSACTION 'r77_x'"),
        Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    # COPY desync: the relay counts no Sync group after it; the implicit transaction's end
    # at the Sync ('I') does not drop the portal its Sync group made
    "copy-desync-portal": ("writer", lambda mode: _flat(
        COPY_PIPELINED, BOUND_OUTSIDE, Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "copy-desync-execute": ("writer", lambda mode: _flat(
        COPY_PIPELINED, BOUND_OUTSIDE, Q("BEGIN"), Q(INSERT),
        [[r.execute("r77_audit"), r.SYNC]],
    ), PROTOCOL),
    "copy-extended-desync": ("writer", lambda mode: _flat(
        [[r.parse("", "COPY r77.c FROM STDIN"), r.bind(), r.execute(), COPY_DATA, COPY_DONE,
          r.SYNC]],
        BOUND_OUTSIDE, Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    # --- expected to hold
    "commit-and-chain-failed": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(HOLD), Q("SELECT 1/0"), Q("COMMIT AND CHAIN"), Q(INSERT), _read(mode),
    ), MODES),
    "rollback-to-unknown-failed": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(HOLD), Q("SELECT 1/0"), Q("ROLLBACK TO SAVEPOINT nope"),
        Q("COMMIT"), Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "merged-error-query": ("writer", lambda mode: _flat(
        [([r.parse("", "SELECT 1/0"), r.bind(), r.execute(), r.query(HOLD), r.SYNC], 1)],
        Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    # a DO's ROLLBACK of the extended protocol's implicit transaction (outside a block)
    "do-rollback-hold": ("writer", lambda mode: _flat(
        [[*_sp(HOLD), *_sp("DO $$BEGIN ROLLBACK; END$$"), r.SYNC]],
        Q("BEGIN"), Q(INSERT), _read(mode),
    ), MODES),
    "upper-close-protocol": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(DECLARED), [[close_portal("R77_AUDIT"), r.SYNC]], Q("CLOSE r77_audit"),
        Q(INSERT), _read(mode),
    ), MODES),
    "quoted-upper-declare": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q('DECLARE "R77_AUDIT" CURSOR FOR SELECT 1'), Q(INSERT),
        _read(mode, 'FETCH ALL FROM "r77_audit"'),
    ), MODES),
    # the server truncates both names to one: the ROLLBACK TO goes before the DECLARE
    "long-savepoint-names": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(f"SAVEPOINT {'s' * 63}x"), Q(DECLARED),
        Q(f"ROLLBACK TO SAVEPOINT {'s' * 63}y"), Q(INSERT), _read(mode),
    ), MODES),
    # a refcursor call and quiet statements in one Sync group, then a FETCH of a name the
    # rows did not hold
    "harvest-quiet-neighbours": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT),
        Q("SAVEPOINT q; SELECT r77.report(); RELEASE q"),
        _read(mode),
    ), MODES),
    "harvest-other-name": ("rw", lambda mode: _flat(
        Q("BEGIN"), Q(INSERT), [[r.parse("", "SELECT r77.report()"), r.bind(), r.execute(),
                                 r.SYNC]],
        _read(mode),
    ), MODES),
    "prepare-transaction-plain": ("writer", lambda mode: _flat(
        Q("BEGIN"), Q(DECLARED), Q("PREPARE TRANSACTION 'r77_y'"), Q("BEGIN"), Q(INSERT),
        _read(mode),
    ), MODES),
    "copy-then-declare-in-block": ("writer", lambda mode: _flat(
        Q("BEGIN"), COPY_PIPELINED, Q(DECLARED), Q("ROLLBACK"), Q("BEGIN"), Q(INSERT),
        _read(mode),
    ), MODES),
}  # fmt: skip
LEAK_NUMBERS = {
    "fifo-released": "1", "fifo-one-message": "1", "fifo-rolled-past": "1",
    "fifo-released-protocol": "1", "denied-prepare-hold": "2", "copy-desync-portal": "3",
    "copy-desync-execute": "3", "copy-extended-desync": "3",
}  # fmt: skip
REASONS = {
    "1": "a SAVEPOINT's CommandComplete confirms the oldest savepoint still listed, not its "
    "own: one released or rolled past before its answer confirms a later one the server "
    "skips, and a ROLLBACK TO the name goes to an older one on the server",
    "2": "a denied PREPARE TRANSACTION is sent as ROLLBACK plus the proxy's error "
    "(inject_ending): the session's portals are not told, and at the 'I' a WITH HOLD "
    "cursor the rollback closed is taken as committed (held)",
    "3": "a COPY FROM STDIN pipelined with its CopyData and CopyDone leaves SyncGroups in "
    "copy-in mode: later Syncs end no group, and the implicit transaction's end at the "
    "'I' does not forget the portal its group made",
}


def _case(key: str, mode: str):
    # (leaks 1-3, LEAK_NUMBERS, held since the session's fixes: plain tests)
    return pytest.param(key, mode, id=f"{key}-{mode}")


CASES = [_case(k, m) for k, v in PROBES.items() for m in v[2]]


@pytest.mark.parametrize("key", list(PROBES))
def test_r77_rows_directly(pg, px, key):
    _, steps, modes = PROBES[key]
    got = _direct(pg, steps(modes[0]))
    assert ROW in got[-1], got


@pytest.mark.parametrize(("key", "mode"), CASES)
def test_r77_probe(px, key, mode):
    grant, steps, _ = PROBES[key]
    got = _proxied(px, grant, steps(mode))
    assert ROW not in got[-1], ("LEAK", got[-1][-300:], got)
    assert _refused(got[-1]), (got[-1][-300:], got)


# --- transparency: driver patterns in a cursor-code database -------------------------------


def _first_value(frames: list[bytes]) -> str:
    row = next(f for f in frames if f[:1] == b"D")
    size = struct.unpack_from("!i", row, 7)[0]
    return row[11 : 11 + size].decode()


def _rows(frames: list[bytes]) -> int:
    return sum(1 for f in frames if f[:1] == b"D")


AUTOSAVE = "SAVEPOINT PGJDBC_AUTOSAVE"


def test_r77_pgjdbc_autosave_pipelined_fetch(px):
    """pgjdbc autosave=always with cleanupSavepoints and a fetch size: SAVEPOINT, the
    statement and RELEASE in one Sync group (the SAVEPOINT released in its group, as leak
    1's), the portal continued in later groups with their own SAVEPOINT."""
    release = _sp("RELEASE SAVEPOINT PGJDBC_AUTOSAVE")
    with planted.session(px, px.tokens["rw"]) as c:
        c.query("BEGIN")
        first = _answers(c, [
            *_sp(AUTOSAVE), r.parse("S_1", "SELECT v FROM r77.pub"), r.bind("C_1", "S_1"),
            describe_portal("C_1"), r.execute("C_1", 1), *release, r.SYNC,
        ])  # fmt: skip
        more = _answers(c, [*_sp(AUTOSAVE), r.execute("C_1", 1), *release, r.SYNC])
        failed = _answers(c, [*_sp(AUTOSAVE), *_sp("SELECT 1/0"), r.SYNC])
        _answers(c, [*_sp("ROLLBACK TO SAVEPOINT PGJDBC_AUTOSAVE"), r.SYNC])
        rest = _answers(c, [*_sp(AUTOSAVE), r.execute("C_1", 0), *release, r.SYNC])
        c.query("COMMIT")
    texts = [planted.text(f) for f in (first, more, rest)]
    assert "22012" in planted.text(failed), planted.text(failed)
    assert not any(_refused(t) for t in texts), texts
    assert [_rows(f) for f in (first, more, rest)] == [1, 1, 1], texts


def test_r77_psycopg_named_cursor(px):
    """psycopg's server-side cursor without hold: DECLARE, FETCH FORWARD n, CLOSE, in a
    block."""
    with planted.session(px, px.tokens["rw"]) as c:
        c.query("BEGIN")
        c.query('DECLARE "r77_n" CURSOR WITHOUT HOLD FOR SELECT v FROM r77.pub')
        one = planted.text(c.query('FETCH FORWARD 1 FROM "r77_n"'))
        two = planted.text(c.query('FETCH FORWARD 5 FROM "r77_n"'))
        c.query('CLOSE "r77_n"')
        c.query("COMMIT")
    assert PUB in one and f"{PUB}-3" in two and not _refused(one + two), (one, two)


def test_r77_psycopg_hold_cursor_autocommit(px):
    """psycopg's ``withhold=True`` cursor in autocommit: DECLARE ... WITH HOLD alone (its
    implicit transaction commits), FETCHes after, CLOSE."""
    with planted.session(px, px.tokens["rw"]) as c:
        c.query('DECLARE "r77_h" CURSOR WITH HOLD FOR SELECT v FROM r77.pub')
        one = planted.text(c.query('FETCH FORWARD 2 FROM "r77_h"'))
        two = planted.text(c.query('FETCH FORWARD 2 FROM "r77_h"'))
        c.query('CLOSE "r77_h"')
    assert f"{PUB}-2" in one and f"{PUB}-3" in two and not _refused(one + two), (one, two)


def test_r77_asyncpg_cursor(px):
    """asyncpg's cursor: a prepared statement described, bound to a named portal in a
    block, Executes of n rows with a Sync each."""
    with planted.session(px, px.tokens["rw"]) as c:
        c.query("BEGIN")
        _answers(c, [r.parse("__asyncpg_stmt_1__", "SELECT v FROM r77.pub"),
                     describe_statement("__asyncpg_stmt_1__"), r.SYNC])  # fmt: skip
        first = _answers(c, [r.bind("__asyncpg_portal_1__", "__asyncpg_stmt_1__"),
                             r.execute("__asyncpg_portal_1__", 2), r.SYNC])  # fmt: skip
        rest = _answers(c, [r.execute("__asyncpg_portal_1__", 2), r.SYNC])
        c.query("COMMIT")
    texts = [planted.text(f) for f in (first, rest)]
    assert not any(_refused(t) for t in texts), texts
    assert [_rows(f) for f in (first, rest)] == [2, 1], texts


def test_r77_refcursor_call_then_fetch(px):
    """psycopg's and pgjdbc's refcursor call: the call alone in its Sync group, FETCH ALL IN
    the name after."""
    with planted.session(px, px.tokens["rw"]) as c:
        c.query("BEGIN")
        called = _answers(c, [r.parse("", "SELECT r77.report()"), r.bind(), describe_portal(""),
                              r.execute(), r.SYNC])  # fmt: skip
        got = planted.text(c.query(f'FETCH ALL IN "{_first_value(called)}"'))
        c.query("ROLLBACK")
    assert f"{PUB}-3" in got and not _refused(got), got[-300:]


def test_r77_copy_then_cursor(px):
    """A COPY FROM STDIN as libpq sends it (the rows after the CopyInResponse), then a
    cursor declared and fetched in a block."""
    with planted.session(px, px.tokens["writer"]) as c:
        c.send(r.query("COPY r77.c FROM STDIN"))
        assert c.read_frame()[:1] == b"G"
        c.send(COPY_DATA, COPY_DONE)
        c.frames_until_ready()
        c.query("BEGIN")
        c.query("DECLARE r77_k CURSOR FOR SELECT 1")
        got = planted.text(_answers(c, [r.parse("", "FETCH ALL FROM r77_k"), r.bind(),
                                        r.execute(), r.SYNC]))  # fmt: skip
        c.query("ROLLBACK")
    assert not _refused(got) and "FETCH 1" in got, got[-300:]


CHAINS = {"and-chain": "COMMIT AND CHAIN", "commit-begin": "COMMIT; BEGIN"}


@pytest.mark.parametrize("how", list(CHAINS))
def test_r77_hold_cursor_committed_in_chain_directly(pg, px, how):
    with r.RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness")
        c.query("BEGIN")
        c.query("DECLARE r77_hc CURSOR WITH HOLD FOR SELECT v FROM r77.pub")
        c.query(CHAINS[how])
        c.query("ROLLBACK")
        got = planted.text(c.query("FETCH ALL FROM r77_hc"))
        c.query("CLOSE r77_hc")
    assert f"{PUB}-3" in got, got


@pytest.mark.parametrize("how", list(CHAINS))
def test_r77_hold_cursor_committed_in_chain(px, how):
    """A WITH HOLD cursor committed by COMMIT AND CHAIN (or ``COMMIT; BEGIN`` in one
    message): the server keeps it after the chained block is rolled back."""
    with planted.session(px, px.tokens["rw"]) as c:
        c.query("BEGIN")
        c.query("DECLARE r77_hc CURSOR WITH HOLD FOR SELECT v FROM r77.pub")
        c.query(CHAINS[how])
        c.query("ROLLBACK")
        got = planted.text(c.query("FETCH ALL FROM r77_hc"))
        c.query("CLOSE r77_hc")
    assert f"{PUB}-3" in got and not _refused(got), got[-300:]
