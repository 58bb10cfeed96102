"""Red-team round 42 (attacks on d99f1bf and 5962b1f: ``bind_at_once``, ``Relay._bind_pending``
and ``StatementPolicy.names_unknown``), time-boxed; the server the judge.

Grants (agent ``r42-bot``): ``writer`` = ``read:r42w.* write:r42w.*`` (the fixture's base
grant); ``migrator`` = ``read:r42w.* write:r42w.* ddl:r42w.*`` and ``execute`` on
``public.r42_swap``.

Planted (schema owner; ``r42x`` outside every grant, ``r42x.vault`` holds the marker):
``public.r42_pin(anyelement)`` (SQL: the vault's ``pin`` value; ``o.r42_pin`` on a row
without that column calls it); ``r42w.pt_<i>`` and ``r42w.pt_swap`` (``id int, r42_pin
text``, one row ``'ok'``); ``public.r42_swap()`` (plpgsql ``DEALLOCATE r42f; PREPARE r42f
AS SELECT o.r42_pin FROM r42w.pt_swap o``: code that may replace statements, so a
statement calling it is followed and leaves the policy holding no text). Every probe runs
directly as the upstream login first and must show its marker there (``RuntimeError``
otherwise); renames are made in a block rolled back. ``OK`` = ``SELECT 'ok'::text AS
r42_pin``; ``_one(s)`` = Bind of ``s`` to the unnamed portal, Execute, Sync. A step alone
in its tuple followed by a 0.2 s sleep is a socket read of its own.

Leaks found (strict xfails when found; all fixed in session 23, the same tests now pass:
when the next read does not start with the pending Bind's Execute (a Describe of its portal
may come first, and keeps it pending), the proxy ends the session, its portal with it,
``Relay._client_frames``; probes that end so pass when no marker came back). Found: a
followed statement's Bind that ends a read is let through
as "executed at once" (``_next_execute`` -1), and when the next read does not start with
its Execute the relay only calls ``policy.names_unknown()`` (``Relay._client_frames``).
That forgets the texts the policy held *then*; it neither refuses nor closes the portal,
which the client still executes whenever it likes, and what the portal changes happens at
that Execute, which nobody looks at:

1. **A portal's EXECUTE run after a rename** (``pending-execute-after-the-rename``): the
   migrator ``PREPARE r42e AS SELECT o.r42_pin FROM r42w.pt_0 o`` (simple); ``Parse r42ex
   "EXECUTE r42e"`` / Sync; ``BEGIN``; ``Bind pe <- r42ex`` alone in its read (allowed: the
   column is readable now; pending); ``ALTER TABLE r42w.pt_0 RENAME COLUMN r42_pin TO
   gone`` (the pending check: names_unknown, then the DDL is allowed); ``Execute pe`` /
   Sync: the server's EXECUTE plans ``r42e`` again, ``o.r42_pin`` is ``r42_pin(o)``: the
   marker as a row. The same with a Describe of the portal alone in a read before the
   rename (pending kept, ``...-describe-first``) and with a Flush (``...-flush-first``):
   names_unknown has nothing to do with a portal already bound. Round 39 refused this
   Bind (a Sync followed it); ending the read with it is all it takes now.
2. **Two pending Binds slip a Parse** (``two-pending-binds-slip-a-parse``): ``Parse r42dd
   "DEALLOCATE r42s"`` / Sync; ``BEGIN``; ``Bind pd <- r42dd`` alone (pending);
   ``Parse r42pp "PREPARE r42s AS SELECT o.r42_pin FROM r42w.pt_1 o"``, ``Bind pp <-
   r42pp`` in one read with no Sync (the check: names_unknown; then the Parse is held again
   and its Bind binds it in its Sync group: pending); ``Parse r42s OK`` / Sync, ``Execute
   pd``, ``Execute pp`` / Sync in one read (the check: names_unknown *before* the Parse,
   which the policy then holds: ``OK``; the server runs DEALLOCATE and PREPARE after it);
   the rename; ``_one("r42s")``: decided again on ``OK``, the server runs the pin: the
   marker. names_unknown runs when the next read *starts*; every text the policy learns
   after it and before the portal's Execute is re-added while the server may not hold it.
3. **One pending Bind of code that replaces statements** (``names-code-pending``):
   ``Parse r42sw "SELECT public.r42_swap()"`` / Sync; ``BEGIN``; ``Bind pw <- r42sw``
   alone (pending; names_unknown at the Bind); ``Parse r42f OK`` / Sync, ``Execute pw`` /
   Sync in one read (names_unknown again, then ``r42f`` held as ``OK``; the function then
   replaces it on the server); ``ALTER TABLE r42w.pt_swap RENAME COLUMN r42_pin TO gone``;
   ``_one("r42f")``: the marker.

Held (passing): each Bind alone in its read of names parsed before (the second Bind,
``Bind pp <- r42pp`` after the first's names_unknown, refused: ``portal-bound-alone``);
a pending Bind whose Execute leads the next read, then the rename: ``_one`` refused
(``control-execute-leads``); a Bind followed by a Sync (not at once: refused,
``control-bind-then-sync``).

Not probed (time box): a streamed Bind (>= 256 KiB) of a followed statement is always
pending (its head ends the read; a tail-only read has no frames and skips the check), so
it is the same as 1.-3.; CopyData/FunctionCall/Terminate first in the next read are "another
message" (names_unknown), again the same root; a dry run refuses nothing by design.

Best guess at the fix: a Bind of a followed statement that ends a read must not be decided
until the next read shows its Execute first (park it, as a CATALOG_WAIT parks frames, and
decide it with the next read: refused, with a Close of the portal injected, if another
message leads), or keep the portal "pending" until the server's answer to its Execute
(CommandComplete/PortalSuspended/error for that portal, or its Close, or the block's
end): while one is pending, refuse every Parse, Query, Bind and DDL (not just call
names_unknown once at the read's start), and call names_unknown again when it runs.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r42-bot"
MARK = {"pin": "R42-PIN-5c19"}
SCOPES = "read:r42w.* write:r42w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": "read:r42w.* write:r42w.* ddl:r42w.* execute:public.r42_swap",
}
PIN_TABLES = ["pt_swap", *(f"pt_{i}" for i in range(10))]

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r42w; CREATE SCHEMA r42x;\n"
    "CREATE TABLE r42x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r42x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    # column syntax: o.r42_pin on a row without that column calls r42_pin(o)
    "CREATE FUNCTION public.r42_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r42x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r42w.{t} (id int, r42_pin text); INSERT INTO r42w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    # code that replaces a statement name (a column read of a granted table)
    + "CREATE FUNCTION public.r42_swap() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "DEALLOCATE r42f; PREPARE r42f AS SELECT o.r42_pin FROM r42w.pt_swap o; RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r42w, r42x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r42_pin(anyelement), public.r42_swap() CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r42", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


OK = "SELECT 'ok'::text AS r42_pin"  # harmless, of the same result type as the pin


def pin(t: str) -> str:
    return f"SELECT o.r42_pin FROM r42w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r42w.{t} RENAME COLUMN r42_pin TO gone"


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), m.execute(), SYNC)


def describe_portal(name: str) -> bytes:
    return frame(b"D", b"P" + name.encode() + b"\x00")


PENDING_WHY = (
    "LEAK: a followed statement's Bind that ends a read counts as executed at once; when "
    "the next read does not start with its Execute the relay only calls names_unknown, "
    "which neither refuses nor closes the portal: what it changes (EXECUTE planned after a "
    "rename, DEALLOCATE/PREPARE, names code) happens at a later Execute nobody looks at, "
    "after texts the policy learnt since"
)


def _execute_after_rename(between):
    def build(t: str) -> list:
        return [
            (query(f"PREPARE r42e AS {pin(t)}"),),
            (parse("r42ex", "EXECUTE r42e"), SYNC),
            (query("BEGIN"),),
            (bind("pe", "r42ex"),),
            0.2,
            *between,
            (query(away(t)),),
            (execute("pe"), SYNC),
            (query("ROLLBACK"),),
        ]

    return build


PENDING = {
    # name: (steps on table t, leaks)
    "pending-execute-after-the-rename": (_execute_after_rename([]), False),
    "pending-execute-after-the-rename-describe-first": (
        _execute_after_rename([(describe_portal("pe"),), 0.2]),
        False,  # fixed in session 23 (PENDING_WHY)
    ),
    "pending-execute-after-the-rename-flush-first": (
        _execute_after_rename([(FLUSH,), 0.2]),
        False,  # fixed in session 23 (PENDING_WHY)
    ),
    "two-pending-binds-slip-a-parse": (
        lambda t: [
            (parse("r42dd", "DEALLOCATE r42s"), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r42dd"),),
            0.2,
            (parse("r42pp", f"PREPARE r42s AS {pin(t)}"), bind("pp", "r42pp")),
            0.2,
            (parse("r42s", OK), SYNC, execute("pd"), execute("pp"), SYNC),
            (query(away(t)),),
            _one("r42s"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (PENDING_WHY)
    ),
    "names-code-pending": (
        lambda t: [
            (parse("r42sw", "SELECT public.r42_swap()"), SYNC),
            (query("BEGIN"),),
            (bind("pw", "r42sw"),),
            0.2,
            (parse("r42f", OK), SYNC, execute("pw"), SYNC),
            (query(away("pt_swap")),),
            _one("r42f"),
            (query("ROLLBACK"),),
        ],
        False,  # fixed in session 23 (PENDING_WHY)
    ),
    # held: both Binds alone in their reads, of names parsed before (round 39's probe,
    # session 23's fix): the second is refused (its name forgotten by the first's check)
    "portal-bound-alone": (
        lambda t: [
            (parse("r42dd", "DEALLOCATE r42s"), parse("r42pp", f"PREPARE r42s AS {pin(t)}"), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r42dd"),),
            0.2,
            (bind("pp", "r42pp"),),
            0.2,
            (parse("r42s", OK), SYNC),
            (execute("pd"), execute("pp"), SYNC),
            (query(away(t)),),
            _one("r42s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: the pending Bind's Execute leads the next read; the rename after it
    "control-execute-leads": (
        lambda t: [
            (parse("r42dd", "DEALLOCATE r42s"), parse("r42pp", f"PREPARE r42s AS {pin(t)}"), SYNC),
            (parse("r42s", OK), SYNC),
            (query("BEGIN"),),
            (bind("pd", "r42dd"),),
            0.2,
            (execute("pd"), bind("pp", "r42pp")),
            0.2,
            (execute("pp"), SYNC),
            (query(away(t)),),
            _one("r42s"),
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # held: a Sync after the Bind (not at once: refused, as in round 39)
    "control-bind-then-sync": (
        lambda t: [
            (query(f"PREPARE r42e AS {pin(t)}"),),
            (parse("r42ex", "EXECUTE r42e"), SYNC),
            (query("BEGIN"),),
            (bind("pe", "r42ex"), SYNC),
            (query(away(t)),),
            (execute("pe"), SYNC),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}


@pytest.mark.parametrize("name", planted.cases(PENDING))
def test_pending_bind(px, pg, name):
    build, leaks = PENDING[name]
    i = list(PENDING).index(name)
    t = f"pt_{i}"
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(t))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got, ended = planted.run_steps_until_ended(c, build(t))
        if not ended:
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # it goes on
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])
    if not leaks:  # a control: the policy refused it (not the server), or the proxy ended
        # the session: a pending Bind's Execute did not lead the next read (session 23)
        refused = "C42501" in got and "pgwitness" in got
        assert refused or (ended and "must be followed by the Execute" in got), (name, got[-500:])
