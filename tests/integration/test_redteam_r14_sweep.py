"""Red-team round 14 (final sweep): what the private renaming of pinned statements
(``proxy.relay``: a statement whose object-text pin is a bound parameter is parsed upstream
as ``pgw_<nonce>_pin_N``, its Binds, Describes and Closes renamed) breaks or opens, and
object text rounds 10-13 did not try.

Grant: ``read:public.r14_orders write:public.r14_orders``. The superuser plants one
``r14-...`` marker per probe outside the grant (``secret.r14_vault``'s default; a role's
comment). Each leak probe is first run as the upstream login (the server's judgement that
it reaches its marker), then through the proxy by a raw client. Leaks are kept as
``xfail(strict=True, reason="LEAK: ...")``; probes that hold are regression tests. Every
leak below was closed the same session (the reserved ``pgw_`` names, shared comments as
object text): their probes are regression tests now.

Leaks found (details in each reason):

1. the private name is public: ``pg_prepared_statements`` (an allowed catalog) lists it,
   and after ``DEALLOCATE ALL`` a Bind of the client's name quotes it in the 26000 error;
2. a Bind naming ``pgw_<nonce>_pin_N`` itself is not checked (``bind_pins`` is keyed by the
   client's name), nor recorded with a decision: the secret default comes back and the
   audit row has no text and no decision;
3. SQL ``PREPARE pgw_<nonce>_pin_N AS SELECT 1`` (refused by the server, recorded as
   prepared by the proxy) then ``EXECUTE pgw_<nonce>_pin_N(<secret OID>)`` runs it;
4. comments on shared objects (``pg_shdescription``, ``shobj_description``) are not object
   text: a role's comment comes back unpinned.
"""

from __future__ import annotations

import re

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import SYNC, RawClient, bind, parse
from tests.support.recording import (
    audit_rows,
    grants,
    issue_grant,
    one_live_session,
    recording,
)

pytestmark = pytest.mark.timeout(120)

AGENT = "r14-bot"
SCOPES = "read:public.r14_orders write:public.r14_orders"

R = {  # outside the grant: must never come back through the proxy
    "default": "r14-default-7e01",
    "rolecomment": "r14-rolecomment-7e02",
}
SECRETS = list(R.values())
OK = "r14-ok-default"

SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.r14_vault (k int PRIMARY KEY, s text DEFAULT '{R["default"]}');
CREATE TABLE public.r14_orders (id int PRIMARY KEY, note text DEFAULT '{OK}');
RESET ROLE;
CREATE ROLE r14_marker NOLOGIN;
COMMENT ON ROLE r14_marker IS '{R["rolecomment"]}';
"""
TEARDOWN = """
DROP TABLE IF EXISTS secret.r14_vault, public.r14_orders;
DROP ROLE IF EXISTS r14_marker;
"""
OID_QUERY = """
SELECT 'G=' || 'public.r14_orders'::regclass::oid
UNION ALL SELECT 'S=' || 'secret.r14_vault'::regclass::oid;
"""

AD = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef"
BOUND = f"{AD} WHERE adrelid = $1"  # a parameter pin: parsed upstream under a private name
PRIVATE = re.compile(rb"pgw_[0-9a-f]{16}_pin_\d+")


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r14sweep", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        planted.planted_oids(pg, handle, OID_QUERY)
        yield handle



def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def until_ready(c: RawClient, group) -> str:
    c.send(*group)
    out = []
    for _ in range(sum(1 for f in group if f[:1] in (b"S", b"Q"))):
        out.append(planted.text(c.frames_until_ready()))
    return "\n---\n".join(out)


def pinned_statement(c: RawClient, oids, name: str = "r14s") -> str:
    """Parse ``name`` pinned by a parameter, bound once to the granted relation."""
    return until_ready(
        c,
        (parse(name, BOUND, (26,)), bind("", name, params=[oids["G"].encode()]), m.execute(), SYNC),
    )


def private_names(text: str) -> list[str]:
    return sorted({n.decode() for n in PRIVATE.findall(text.encode())})


# ==========================================================================================
# 1. The private name is no secret: pg_prepared_statements (an allowed catalog) lists it,
#    and a Bind whose statement has been DEALLOCATEd names it in the server's error
# ==========================================================================================


def learn_private_name(c: RawClient, oids) -> str:
    pinned_statement(c, oids)
    names = private_names(planted.text(c.query("SELECT name FROM pg_prepared_statements")))
    assert len(names) == 1, names
    return names[0]


def test_the_private_name_is_listed_by_pg_prepared_statements(px):
    with planted.session(px) as c:
        assert learn_private_name(c, px.oids).endswith("_pin_1")


def test_the_private_name_is_quoted_by_the_error_after_deallocate_all(px):
    with planted.session(px) as c:
        pinned_statement(c, px.oids)
        assert "DEALLOCATE ALL" in planted.text(c.query("DEALLOCATE ALL"))
        got = until_ready(c, (bind("", "r14s", params=[px.oids["G"].encode()]), m.execute(), SYNC))
    assert "26000" in got and private_names(got), got


def _direct_secret_bind(pg, oids) -> str:
    with RawClient.direct(pg) as c:
        return until_ready(
            c, (parse("", BOUND, (26,)), bind(params=[oids["S"].encode()]), m.execute(), SYNC)
        )


def test_the_secret_bind_reaches_its_marker_directly(px, pg):
    assert shows(_direct_secret_bind(pg, px.oids), R["default"])


# Was a leak, held since session 16: a Bind naming the private statement itself is never
# checked. proxy.relay._client_frames checks a Bind only if its statement name is in
# policy.bind_pins, which is keyed by the client's name ('r14s'); the private name
# pgw_<nonce>_pin_1 (read from pg_prepared_statements, an ALLOWED_CATALOGS view) is not
# in it, so Bind(statement='pgw_<nonce>_pin_1', [<secret OID>]) goes upstream as sent
# and the server evaluates the pinned statement for secret.r14_vault
def test_a_bind_of_the_private_name_is_checked(px):
    with planted.session(px) as c:
        private = learn_private_name(c, px.oids)
        got = until_ready(c, (bind("", private, params=[px.oids["S"].encode()]), m.execute(), SYNC))
        assert b"1" in b"".join(c.query("SELECT 1"))
    assert not leaked(got), got[-400:]
    assert "42501" in got or "26000" in got, got[-400:]


# Was a leak, held since session 16: SQL EXECUTE of the private name. 'PREPARE
# pgw_<nonce>_pin_1 AS SELECT 1' is allowed by the policy and recorded in
# policy.prepared.PreparedNames although the server refuses it (42P05: the proxy's
# pinned statement holds the name); engine._decide_execute then allows 'EXECUTE
# pgw_<nonce>_pin_1(<secret OID>)', whose argument no check_bind sees, and the server
# runs the pinned statement with it
def test_sql_execute_of_the_private_name_is_refused(px):
    with planted.session(px) as c:
        private = learn_private_name(c, px.oids)
        got = planted.text(c.query(f"PREPARE {private} AS SELECT 1"))
        got += planted.text(c.query(f"EXECUTE {private}({px.oids['S']})"))
    assert not leaked(got), got[-400:]


def test_a_describe_or_close_of_the_private_name_reveals_nothing(px):
    """Describe/Close of the private name pass (not renamed, not checked): they show the
    statement's shape only; after the Close the client's name binds nothing."""
    with planted.session(px) as c:
        private = learn_private_name(c, px.oids)
        got = until_ready(c, (frame(b"D", b"S" + private.encode() + b"\x00"), SYNC))
        got += until_ready(c, (m.close_statement(private), SYNC))
        got += until_ready(c, (bind("", "r14s", params=[px.oids["S"].encode()]), m.execute(), SYNC))
    assert not leaked(got), got[-400:]
    assert "42501" in got, got[-400:]  # the client's name is still checked


# ==========================================================================================
# 2. DEALLOCATE ALL / DISCARD ALL, portals, mixed pipelines (hold: regression tests)
# ==========================================================================================


@pytest.mark.parametrize("reset", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_binds_after_a_reset_are_still_checked(px, reset):
    with planted.session(px) as c:
        pinned_statement(c, px.oids)
        got = planted.text(c.query(reset))
        got += until_ready(c, (bind("", "r14s", params=[px.oids["S"].encode()]), m.execute(), SYNC))
        got += until_ready(c, (parse("r14s", "SELECT 1"), bind("", "r14s"), m.execute(), SYNC))
        got += pinned_statement(c, px.oids)  # the name is reusable, pinned again
        got += until_ready(c, (bind("", "r14s", params=[px.oids["S"].encode()]), m.execute(), SYNC))
    assert not leaked(got), got[-600:]
    assert got.count("42501") >= 2 and OK in got, got[-600:]


def test_a_portal_of_the_renamed_statement_survives_a_reparse(px):
    """A portal bound (checked) to the granted OID, then the name re-Parsed and re-bound:
    Describe('P') and Execute of the old portal show only the granted relation's text."""
    o = px.oids
    with planted.session(px) as c:
        got = until_ready(c, (
            parse("r14p", BOUND, (26,)), bind("r14portal", "r14p", params=[o["G"].encode()]),
            m.execute("r14portal", 0), SYNC,
        ))  # fmt: skip
        c.query("BEGIN")
        got += until_ready(c, (
            parse("r14p", BOUND, (26,)), bind("r14held", "r14p", params=[o["G"].encode()]),
            parse("r14p", "SELECT 1"),
            frame(b"D", b"Pr14held\x00"), m.execute("r14held", 0), SYNC,
        ))  # fmt: skip
        got += until_ready(
            c, (bind("r14x", "r14p", params=[o["S"].encode()]), m.execute("r14x"), SYNC)
        )
        got += planted.text(c.query("COMMIT"))
    assert not leaked(got), got[-600:]
    assert OK in got, got[-600:]


def test_pinned_parse_denied_parse_and_close_in_one_sync_group(px):
    """The server skips the Close after the refused Parse, so the private statement stays
    upstream while the proxy forgets the client's name: a Bind of that name then reaches
    no statement (26000), never the private one unchecked."""
    o = px.oids
    with planted.session(px) as c:
        got = until_ready(c, (
            parse("r14m", BOUND, (26,)), bind("", "r14m", params=[o["G"].encode()]), m.execute(),
            parse("r14d", AD), m.close_statement("r14m"), SYNC,
        ))  # fmt: skip
        got += until_ready(c, (bind("", "r14m", params=[o["S"].encode()]), m.execute(), SYNC))
        got += until_ready(c, (frame(b"D", b"Sr14m\x00"), SYNC))
        got += planted.text(c.query("SELECT 1"))
    assert not leaked(got), got[-600:]
    assert "42501" in got and "26000" in got, got[-600:]


def test_error_recovery_inside_a_transaction(px):
    """A refused Bind aborts the transaction; after ROLLBACK the checked name still binds
    the granted OID only."""
    o = px.oids
    with planted.session(px) as c:
        c.query("BEGIN")
        got = pinned_statement(c, o, "r14t")
        got += until_ready(c, (bind("", "r14t", params=[o["S"].encode()]), m.execute(), SYNC))
        got += until_ready(
            c, (bind("", "r14t", params=[o["G"].encode()]), m.execute(), SYNC)
        )  # 25P02
        got += planted.text(c.query("ROLLBACK"))
        got += until_ready(c, (bind("", "r14t", params=[o["S"].encode()]), m.execute(), SYNC))
        got += until_ready(c, (bind("", "r14t", params=[o["G"].encode()]), m.execute(), SYNC))
    assert not leaked(got), got[-600:]
    assert "25P02" in got and got.count("42501") == 2 and got.count(OK) == 2, got[-600:]


# ==========================================================================================
# 3. Object text outside the pins: comments on shared objects (pg_shdescription)
# ==========================================================================================

SHARED_COMMENTS = [
    "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'r14_marker'",
    "SELECT description FROM pg_shdescription",
]


def test_shared_comments_reach_their_marker_directly(pg):
    for sql in SHARED_COMMENTS:
        assert R["rolecomment"] in pg.psql(sql, db="app"), sql


# Was a leak, held since session 16: comments on shared objects (roles, databases,
# tablespaces) are not object text: pg_shdescription is in
# policy.decide.ALLOWED_CATALOGS and shobj_description is an allowed function
# (policy.classify.catalogue), while metadata.py's object text lists
# pg_description.description, obj_description and col_description only; COMMENT ON
# ROLE/DATABASE text of objects no grant names comes back unpinned
@pytest.mark.parametrize("sql", SHARED_COMMENTS, ids=["shobj_description", "pg_shdescription"])
def test_shared_comments_are_object_text(px, sql):
    got = planted.received(px, sql)
    planted.assert_no_leak(got, SECRETS, sql)


# ==========================================================================================
# 4. The audit of a session with pinned statements (recorder.audit.derive.SessionFacts)
# ==========================================================================================



@pytest.fixture
def rec(px, make_proxy, tmp_path):
    """A recording proxy over the same planted database (its snapshot sees the r14 objects)."""
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, h.token = issue_grant(h, agent=AGENT, scopes=SCOPES)
    h.tmp = tmp_path
    h.agent = AGENT
    return h


def test_audit_rows_of_checked_binds_carry_their_own_decision(rec, px):
    """Bind(granted) runs, Bind(secret) is refused, Bind(granted) runs again: three rows
    of the pinned statement in order, allowed / denied (42501) / allowed."""
    o = px.oids
    with planted.session(rec) as c:
        sid = one_live_session(rec)
        got = pinned_statement(c, o)
        got += until_ready(c, (bind("", "r14s", params=[o["S"].encode()]), m.execute(), SYNC))
        got += until_ready(c, (bind("", "r14s", params=[o["G"].encode()]), m.execute(), SYNC))
    assert not leaked(got) and got.count(OK) == 2 and "42501" in got, got[-600:]
    rows = [r for r in audit_rows(rec, sid) if r["text"] == BOUND]
    assert [(r["decision"], r["sqlstate"]) for r in rows] == [
        ("allowed", None), ("denied", "42501"), ("allowed", None),
    ], rows  # fmt: skip


# Was a leak, held since session 16: the Bind of the private name that returned the
# secret default becomes a SessionFacts row with text '' and decision None: proxy.relay
# never checks or records it (no policy.bind_pins entry), so the audit shows neither the
# statement run nor that it read a relation outside the grant
def test_audit_shows_the_bind_of_the_private_name(rec, px):
    o = px.oids
    with planted.session(rec) as c:
        sid = one_live_session(rec)
        private = learn_private_name(c, o)
        got = until_ready(c, (bind("", private, params=[o["S"].encode()]), m.execute(), SYNC))
    rows = audit_rows(rec, sid)
    assert not leaked(got) or any(r["decision"] == "denied" for r in rows), [
        (r["text"], r["decision"], r["sqlstate"]) for r in rows
    ]
