"""Red-team round 35 (attacks on round 34's fixes, c8a2ba4, e0403cd and 33e7831),
time-boxed; the server the judge.

Grants (agent ``r35-bot``): ``base`` = ``read:r35s.*``; ``mk`` = ``read:public.r35_cf
read:r35s.* write:r35s.* execute:public.r35_mk execute:public.r35_mkb``; ``enc`` =
``read:"r35\u00e9".* read:r35s.* write:r35s.* execute:public.r35_latin1b``; ``writer`` =
``read:r35w.* write:r35w.*`` (runs no function); ``migrator`` = the writer's plus
``ddl:r35w.* execute:public.r35_loud``.

Planted (schema owner; ``r35x`` outside every grant, ``r35x.vault`` holds the markers): a
polymorphic ``public.r35_pin(anyelement)`` returning the marker (column syntax
``o.r35_pin`` on a row without such a column calls it); ``public.r35_cf (id int, r35_pin
text)``; ``public.r35_mk()`` / ``public.r35_mkb(int)`` / the trigger function
``public.r35_mkt()`` (plpgsql: make a temporary table ``r35_cf (id int)`` with a row,
nothing secret); ``public.r35_latin1b(int)`` / ``public.r35_latin1t()`` (plpgsql:
``set_config('client_encoding', 'LATIN1', false)``); schemas ``"r35\u00e9"`` (granted,
``t`` holds ``ok``) and ``"r35\u00c3\u00a9"`` (its UTF-8 bytes read as LATIN1; ``t`` holds a
second marker); in ``r35s``: ``fp (id int primary key)`` referenced ``ON DELETE CASCADE``
by ``fc`` (an AFTER DELETE trigger running ``r35_mkt``) and ``ep`` / ``ec`` the same with
``r35_latin1t``; ``dd`` (a column of domain ``r35s.dmk``, ``DEFAULT public.r35_mk()``);
``df`` (a column ``DEFAULT public.r35_mk()``); domains ``r35s.dck`` / ``r35s.dce`` (int,
``CHECK`` calling ``r35_mkb`` / ``r35_latin1b``); ``r35w.t (k int)`` and
``public.r35_loud()``, a trigger function raising a third marker.
Every probe is first run directly as the upstream login and must show its marker there (a
``RuntimeError`` otherwise: a strict xfail must not swallow a probe that proves nothing).

Leaks found (each a strict xfail when found; fixed in session 21, the same tests now
pass: the catalog says whether any user-written code may change client_encoding or make
temporary relations, ``CODE_FLAGS_SQL``, and every session of such a database assumes it;
a block's DDL settles on the server's COMMIT, not on a decision):

1. **Code the server runs that ``_runs_user_code`` does not count changes client_encoding
   unseen.** ``ran_user_code`` (which makes the relay treat the encoding as in flight) is
   set from what the statement's text calls, a row write to a relation in
   ``Snapshot.triggered``, views, operators, casts, column syntax. Four ways of running a
   function escape it; each runs ``set_config('client_encoding', 'LATIN1', false)`` and,
   in the same write, ``SELECT val FROM "r35\u00e9".t``: the proxy decides the UTF-8
   reading (the granted schema), the server runs the LATIN1 one (``"r35\u00c3\u00a9"``):
   its marker as a row (``enc`` grant).

   a. *A Parse's parameter type*: ``Parse '' <SELECT $1> (OID of r35s.dce)``, Bind
      ``('1')``, Execute, then the read as a Query, all in one write: the domain's CHECK
      runs ``r35_latin1b`` (``_param_types`` decides it like a call, with an execute
      scope, but nothing counts it as user code).
   b. *A foreign-key action's trigger*: ``BEGIN``; ``DELETE FROM r35s.ep`` and the read
      in one write: the cascade to ``r35s.ec`` fires its trigger (``ep`` has internal
      triggers only, not in ``triggered``).
   c. *A domain's DEFAULT*: ``BEGIN``; ``INSERT INTO r35s.de (id) VALUES (1)`` and the
      read in one write (``TRIGGERED_SQL`` follows a domain's constraints, not its
      default; no execute scope asked either).
   d. *A row security policy*: ``SELECT id FROM r35s.rl`` and the read in one write
      (``FORCE ROW LEVEL SECURITY``: the upstream login owns the table and is no
      superuser, so its policy's ``USING (public.r35_latin1b(id))`` runs on a plain read).

2. **A COMMIT the server never runs settles the DDL early.** The relay sets
   ``_settle_after`` for any allowed verdict whose statement is a COMMIT while
   ``ddl_open``, whether or not the server runs it; ``settle_ddl`` clears ``ddl_open`` and
   the reload runs while the block is still open (the trigger uncommitted, invisible), so
   the snapshot is fresh without it, and the real ``COMMIT`` later, idle, settles nothing.
   The migrator: ``BEGIN``; ``CREATE TRIGGER r35_trg BEFORE INSERT OR UPDATE ON r35w.t
   ... EXECUTE FUNCTION public.r35_loud()``; then either ``Parse r35c <COMMIT>`` / Sync
   (never bound) or ``SAVEPOINT r35s``; ``SELECT 1/0; COMMIT`` (the COMMIT skipped after
   the error); ``ROLLBACK TO r35s``; after the reload, ``COMMIT``. The writer's ``INSERT
   INTO r35w.t VALUES (1)`` (simple, extended, prepared): ``loud: <marker>`` whole.

Held: the same four kinds of uncounted code, and a column DEFAULT, making a temporary
``r35_cf`` for the round 34 column-syntax probe ``SELECT o.r35_pin FROM r35_cf o`` (the
probe's own column syntax names a user-written function, so since e0403cd it counts as
user code and every unqualified relation may be temporary: refused); a domain CHECK cast
in the text, a row write to a table with triggers (counted); a Bind of a ``COMMIT AND
CHAIN`` or ``COMMIT`` (then ``BEGIN``) prepared before the DDL, ``END AND CHAIN``, ``ROLLBACK
TO`` a savepoint then ``COMMIT`` (the DDL settled at the commit, or never: the snapshot
stays stale and the writer's messages are withheld, fail closed); two-phase commit
(refused for every grant: ``deny.two_phase``).
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(180)

AGENT = "r35-bot"
SCOPES = "read:r35s.*"
GRANTS = {
    "mk": "read:public.r35_cf read:r35s.* write:r35s.* execute:public.r35_mk "
    "execute:public.r35_mkb",
    "enc": 'read:"r35\u00e9".* read:r35s.* write:r35s.* execute:public.r35_latin1b',
    "writer": "read:r35w.* write:r35w.*",
    "migrator": "read:r35w.* write:r35w.* ddl:r35w.* execute:public.r35_loud",
}
R = {"pin": "R35-PIN-7d01", "enc": "R35-ENC-7d02", "trg": "R35-TRG-7d03"}
SECRETS = list(R.values())


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


MK = (
    "LANGUAGE plpgsql AS $$ BEGIN CREATE TEMP TABLE IF NOT EXISTS r35_cf (id int); "
    "INSERT INTO pg_temp.r35_cf VALUES (1); RETURN {ret}; END $$"
)
LATIN1 = (
    "LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('client_encoding', 'LATIN1', false); "
    "RETURN {ret}; END $$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r35s; CREATE SCHEMA r35x;\n"
    "CREATE TABLE r35x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r35x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r35_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r35x.vault WHERE key = 'pin' $$;\n"
    "CREATE TABLE public.r35_cf (id int, r35_pin text);\n"
    "INSERT INTO public.r35_cf VALUES (1, 'ok');\n"
    f"CREATE FUNCTION public.r35_mk() RETURNS int {MK.format(ret='1')};\n"
    f"CREATE FUNCTION public.r35_mkb(int) RETURNS bool {MK.format(ret='true')};\n"
    f"CREATE FUNCTION public.r35_mkt() RETURNS trigger {MK.format(ret='NULL')};\n"
    f"CREATE FUNCTION public.r35_latin1b(int) RETURNS bool {LATIN1.format(ret='true')};\n"
    f"CREATE FUNCTION public.r35_latin1t() RETURNS trigger {LATIN1.format(ret='NULL')};\n"
    f"CREATE FUNCTION public.r35_latin1i() RETURNS int {LATIN1.format(ret='1')};\n"
    'CREATE SCHEMA "r35\u00e9"; CREATE TABLE "r35\u00e9".t (val text);\n'
    "INSERT INTO \"r35\u00e9\".t VALUES ('ok');\n"
    'CREATE SCHEMA "r35\u00c3\u00a9"; CREATE TABLE "r35\u00c3\u00a9".t (val text);\n'
    f"INSERT INTO \"r35\u00c3\u00a9\".t VALUES ('{R['enc']}');\n"
    "CREATE TABLE r35s.fp (id int PRIMARY KEY); INSERT INTO r35s.fp VALUES (1);\n"
    "CREATE TABLE r35s.fc (pid int REFERENCES r35s.fp ON DELETE CASCADE);\n"
    "INSERT INTO r35s.fc VALUES (1);\n"
    "CREATE TRIGGER r35_fc AFTER DELETE ON r35s.fc FOR EACH ROW "
    "EXECUTE FUNCTION public.r35_mkt();\n"
    "CREATE TABLE r35s.ep (id int PRIMARY KEY); INSERT INTO r35s.ep VALUES (1);\n"
    "CREATE TABLE r35s.ec (pid int REFERENCES r35s.ep ON DELETE CASCADE);\n"
    "INSERT INTO r35s.ec VALUES (1);\n"
    "CREATE TRIGGER r35_ec AFTER DELETE ON r35s.ec FOR EACH ROW "
    "EXECUTE FUNCTION public.r35_latin1t();\n"
    "CREATE DOMAIN r35s.dmk AS int DEFAULT public.r35_mk();\n"
    "CREATE TABLE r35s.dd (id int, x r35s.dmk);\n"
    "CREATE TABLE r35s.df (id int, x int DEFAULT public.r35_mk());\n"
    "CREATE DOMAIN r35s.dck AS int CHECK (public.r35_mkb(VALUE));\n"
    "CREATE DOMAIN r35s.dce AS int CHECK (public.r35_latin1b(VALUE));\n"
    "CREATE DOMAIN r35s.dme AS int DEFAULT public.r35_latin1i();\n"
    "CREATE TABLE r35s.de (id int, x r35s.dme);\n"
    "CREATE TABLE r35s.rl (id int); INSERT INTO r35s.rl VALUES (1);\n"
    "ALTER TABLE r35s.rl ENABLE ROW LEVEL SECURITY; ALTER TABLE r35s.rl FORCE ROW LEVEL SECURITY;\n"
    "CREATE POLICY r35_rl ON r35s.rl USING (public.r35_latin1b(id));\n"
    "CREATE TABLE r35s.tg (id int);\n"
    "CREATE TRIGGER r35_tg BEFORE INSERT ON r35s.tg FOR EACH ROW "
    "EXECUTE FUNCTION public.r35_mkt();\n"
    "CREATE SCHEMA r35w; CREATE TABLE r35w.t (k int);\n"
    "CREATE FUNCTION public.r35_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r35x.vault WHERE key = 'trg'); END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    'DROP SCHEMA IF EXISTS r35s, r35w, r35x, "r35\u00e9", "r35\u00c3\u00a9" CASCADE;\n'
    "DROP TABLE IF EXISTS public.r35_cf;\n"
    "DROP FUNCTION IF EXISTS public.r35_mk(), public.r35_mkb(int), public.r35_mkt(), "
    "public.r35_latin1b(int), public.r35_latin1t(), public.r35_latin1i(), "
    "public.r35_loud() CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r35_pin(anyelement) CASCADE;\n"
)
OIDS = (
    "SELECT 'dck=' || 'r35s.dck'::regtype::oid UNION ALL SELECT 'dce=' || 'r35s.dce'::regtype::oid"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r35", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OIDS)
        yield handle


def _probe(px, pg, token: str, marker: str, steps) -> str:
    """``steps`` directly (must show ``marker``), then through the proxy as ``token``."""
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, R[marker]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens[token]) as c:
        got = run_steps(c, steps)
        c.query("ROLLBACK")
        c.query("RESET client_encoding")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


# --- 1. code the server runs that _runs_user_code does not count --------------------------

SHADOW = (query("SELECT o.r35_pin FROM r35_cf o"),)
UNI = query('SELECT val FROM "r35\u00e9".t')


def _domain_param(oid_key: str):
    return lambda oids: (
        parse("", "SELECT $1", (int(oids[oid_key]),)),
        bind("", "", params=[b"1"]),
        m.execute(),
        SYNC,
    )


USER_CODE_LEAKS = {
    # (token, marker, steps(oids)): each sets client_encoding, the non-ASCII read follows
    "param-domain-check-encoding": (
        "enc", "enc", lambda o: [(*_domain_param("dce")(o), UNI)]
    ),
    "fk-cascade-trigger-encoding": (
        "enc", "enc",
        lambda o: [(query("BEGIN"),), (query("DELETE FROM r35s.ep"), UNI)],
    ),
    "domain-default-encoding": (
        "enc", "enc",
        lambda o: [(query("BEGIN"),), (query("INSERT INTO r35s.de (id) VALUES (1)"), UNI)],
    ),
    "row-security-policy-encoding": (
        "enc", "enc", lambda o: [(query("SELECT id FROM r35s.rl"), UNI)]
    ),
}  # fmt: skip
USER_CODE_WHY = {
    "param-domain-check-encoding": "a Parse's parameter type runs a domain CHECK that sets "
    "client_encoding: not counted, so the non-ASCII read in the same write is decoded as "
    "UTF-8 by the proxy and LATIN1 by the server",
    "fk-cascade-trigger-encoding": "a foreign-key cascade's trigger sets client_encoding, "
    "not counted: the non-ASCII read in the same write is read in two encodings",
    "domain-default-encoding": "a column's domain DEFAULT sets client_encoding on INSERT: "
    "not counted, the non-ASCII read in the same write is read in two encodings",
    "row-security-policy-encoding": "a row security policy's expression (FORCE ROW LEVEL "
    "SECURITY: the upstream login owns the table) sets client_encoding on a plain read: "
    "not counted",
}
USER_CODE_HELD = {
    # the same uncounted code making a temporary r35_cf: the shadowed read's own column
    # syntax names a user-written function (e0403cd), so it counts and is refused
    "param-domain-check-temp": (
        "mk", "pin", lambda o: [_domain_param("dck")(o), SHADOW]
    ),
    "fk-cascade-trigger-temp": (
        "mk", "pin",
        lambda o: [(query("BEGIN"),), (query("DELETE FROM r35s.fp"),), SHADOW],
    ),
    "domain-default-temp": (
        "mk", "pin",
        lambda o: [(query("BEGIN"),), (query("INSERT INTO r35s.dd (id) VALUES (1)"),), SHADOW],
    ),
    "column-default": (
        "mk", "pin",
        lambda o: [(query("BEGIN"),), (query("INSERT INTO r35s.df (id) VALUES (1)"),), SHADOW],
    ),
    "domain-check-cast-in-text": (
        "mk", "pin", lambda o: [(query("SELECT 1::r35s.dck"),), SHADOW]
    ),
    "triggered-table-insert": (
        "mk", "pin",
        lambda o: [(query("BEGIN"),), (query("INSERT INTO r35s.tg VALUES (1)"),), SHADOW],
    ),
}  # fmt: skip


def _user_code(px, pg, cases, name) -> str:
    token, marker, steps = cases[name]
    return _probe(px, pg, token, marker, steps(px.oids))


@pytest.mark.parametrize("name", list(USER_CODE_WHY))
def test_user_code_not_counted(px, pg, name):
    got = _user_code(px, pg, USER_CODE_LEAKS, name)
    assert not leaked(got), ("LEAK", name, got[-400:])


@pytest.mark.parametrize("name", list(USER_CODE_HELD))
def test_user_code_counted(px, pg, name):
    got = _user_code(px, pg, USER_CODE_HELD, name)
    assert not leaked(got), ("LEAK", name, got[-400:])


# --- 2. another grant's trigger, committed where the relay does not see a commit -----------

ATTACH = (
    "CREATE TRIGGER r35_trg BEFORE INSERT OR UPDATE ON r35w.t "
    "FOR EACH ROW EXECUTE FUNCTION public.r35_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r35_trg ON r35w.t"
WRITE = "INSERT INTO r35w.t VALUES (1)"
OPEN = [(query("BEGIN"),), (query(ATTACH),), 0.5]  # the reload the DDL started: no trigger
ENDED = {
    "parsed-commit-never-run": [*OPEN, (parse("r35c", "COMMIT"), SYNC), 0.5, (query("COMMIT"),)],
    "commit-skipped-after-error": [
        *OPEN,
        (query("SAVEPOINT r35s"),),
        (query("SELECT 1/0; COMMIT"),),
        0.5,
        (query("ROLLBACK TO r35s"),),
        (query("COMMIT"),),
    ],
}
ENDED_WHY = {
    "parsed-commit-never-run": "a Parse of COMMIT (never bound) in the DDL's block sets "
    "_settle_after: the DDL settles at the Parse's answer, the reload sees no trigger (not "
    "committed) and ddl_open is cleared, so the real COMMIT later settles nothing",
    "commit-skipped-after-error": "a COMMIT the server skips (an error earlier in the "
    "Query) settles the DDL at once; ROLLBACK TO a savepoint keeps the trigger, and the "
    "real COMMIT settles nothing",
}
ENDED_HELD = {
    # a COMMIT the relay does not decide: the DDL stays open, the snapshot stale, the
    # writer's messages withheld (fail closed)
    "bound-commit-and-chain": [
        (parse("r35c", "COMMIT AND CHAIN"), SYNC),
        *OPEN,
        (bind("", "r35c"), m.execute(), SYNC),
    ],
    "bound-commit-then-begin": [
        (parse("r35c", "COMMIT"), SYNC),
        *OPEN,
        (bind("", "r35c"), m.execute(), parse("", "BEGIN"), bind(), m.execute(), SYNC),
    ],
    "end-and-chain": [*OPEN, (query("END AND CHAIN"),)],
    "rollback-to-savepoint-then-commit": [
        *OPEN,
        (query("SAVEPOINT r35s"),),
        (query("ROLLBACK TO r35s"),),
        0.5,
        (query("COMMIT"),),
    ],
}


def _trigger_precondition(pg) -> None:
    with RawClient.direct(pg) as c:
        c.query(ATTACH)
        direct = planted.text(c.query(WRITE))
        c.query(DETACH)
    if not shows(direct, R["trg"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))


def _writes(px) -> dict[str, str]:
    return planted.writes_every_mode(px, px.tokens["writer"], WRITE)


def _ended(px, pg, steps) -> dict[str, str]:
    _trigger_precondition(pg)
    planted.wait_catalog_quiet(px, 1.0)  # earlier DDL's reloads have run
    with planted.session(px, px.tokens["migrator"]) as mig:
        got = run_steps(mig, steps)
        assert "42501" not in got, got[-300:]  # nothing refused
        try:
            out = _writes(px)
        finally:
            mig.query("ROLLBACK")
            mig.query(DETACH)
            mig.query("DEALLOCATE ALL")
    assert all("P0001" in t for t in out.values()), out  # the trigger ran
    return out


@pytest.mark.parametrize("how", list(ENDED_WHY))
def test_trigger_committed_unseen(px, pg, how):
    out = _ended(px, pg, ENDED[how])
    bad = {mode: t[-300:] for mode, t in out.items() if leaked(t)}
    assert not bad, ("LEAK", how, sorted(bad), bad)


@pytest.mark.parametrize("how", list(ENDED_HELD))
def test_trigger_committed_seen(px, pg, how):
    out = _ended(px, pg, ENDED_HELD[how])
    bad = {mode: t[-300:] for mode, t in out.items() if leaked(t)}
    assert not bad, ("LEAK", how, sorted(bad), bad)


def test_two_phase_refused(px):
    with planted.session(px, px.tokens["migrator"]) as mig:
        got = run_steps(mig, [(query("BEGIN"),), (query("PREPARE TRANSACTION 'r35g'"),)])
        mig.query("ROLLBACK")
    assert "deny.two_phase" in got, got[-300:]
