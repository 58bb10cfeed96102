"""Session 33: an auditor's red-team round on the grant and session side of the audit
answer (docs/audit.md: "who was granted what, for how long, what they did, what they were
denied").

One recording proxy with a SQLite grant store runs a scenario once per module, keeping a
ledger of the truth (``Truth``): the grant store's own rows, what each client saw (its
logins accepted or refused and the FATAL that ended it), the wall-clock times of each
change, and what landed in PostgreSQL. The grants' whole lives:

* task T1, agent ``billing-bot``: ``exp`` (ttl 3 s, extended twice by two people; a
  session holds a transaction open across its expiry; after it expired a login with its
  token is refused, then it is extended again and used again); ``nb`` (not before 2 s from
  now: refused until then, then used); ``rev`` (revoked mid-session, then its token
  refused); ``s1`` and ``s2`` (the same task re-issued with other scopes: each session
  decided by its own grant's scopes);
* task T2, agent ``report-bot``: ``multi`` (two sessions at once, then one after them on
  the kept backend); ``dry`` (dry run: would-deny); ``otherdb`` (a grant for database
  ``postgres``, used on ``app``: refused);
* refused logins: a wrong token (several, fast: the login throttle), an unknown agent.

Each test holds one view of the answer (JSON, text, CSV, ``--sql``, the index rebuilt,
Parquet and OCSF exports, each filter) to that ledger or to the unfiltered answer filtered
by hand; the tampering tests run on private copies of the store.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import socket
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.wire import messages as m
from proxy.cli import main as cli_main
from tests.support.proxies import wait_fatal
from tests.support.rawpg import RawClient, RawError, error_fields
from tests.support.recording import recording
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

TABLE = "public.s33_grants"
LOCKED = "public.s33_grants_locked"  # the grant may read it, the upstream role may not
T1_AGENT, T2_AGENT = "billing-bot", "report-bot"


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass
class Truth:
    """What happened, as the grant store, the clients and the server saw it."""

    tmp: Path
    t1: str
    t2: str
    grants: dict = field(default_factory=dict)  # name -> the store's Grant at the end
    tokens: dict = field(default_factory=dict)  # name -> token
    extensions: dict = field(default_factory=dict)  # name -> [(by, from, to)]
    sessions: dict = field(default_factory=dict)  # name -> backend pid the client saw
    refused: list = field(default_factory=list)  # (agent, grant name | None, fields, at)
    ended: dict = field(default_factory=dict)  # session name -> (FATAL fields, at)
    marks: dict = field(default_factory=dict)  # name -> wall-clock time
    verifiers: list = field(default_factory=list)  # SCRAM material the store holds

    def gid(self, name: str) -> str:
        return self.grants[name].id


def _session(h, agent: str, token: str) -> RawClient:
    c = RawClient.session(h.host, h.port, agent, token)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def _ok(c: RawClient, sql: str) -> list[bytes]:
    frames = c.query(sql)
    assert not [f for f in frames if f[:1] == b"E"], (sql, [error_fields(f) for f in frames
                                                              if f[:1] == b"E"])
    return frames


def _refused(truth: Truth, h, agent: str, token: str, grant: str | None, db: str = "app"):
    try:
        c = RawClient.session(h.host, h.port, agent, token, database=db)
    except RawError as e:
        truth.refused.append((agent, grant, e.fields, time.time()))
        return e.fields
    c.close()
    raise AssertionError(f"login of {agent} ({grant}) was accepted")


@pytest.fixture(scope="module")
def truth(pg, tmp_path_factory) -> Truth:
    from tests.support.fixtures_proxy import ProxyHandle, proxy_config

    tmp = tmp_path_factory.mktemp("s33grants")
    pg.psql(f"DROP TABLE IF EXISTS {TABLE}, {LOCKED}; CREATE TABLE {LOCKED} (v int); "
            f"REVOKE ALL ON {LOCKED} FROM PUBLIC; SET ROLE pgwitness; CREATE TABLE {TABLE} (v int)",
            db="app")
    h = ProxyHandle(proxy_config(pg, **recording(tmp, **{
        "grants.store": f"sqlite:///{tmp / 'grants.db'}", "grants.poll_interval": 0.1,
        "proxy.auth_fail_delay": 0.01}))).start()
    store = h.runtime.store
    stamp = f"{time.time_ns() % 10**9:09d}"
    t = Truth(tmp, f"S33G1-{stamp}", f"S33G2-{stamp}")

    def issue(name, agent, task, scopes, **kw):
        g, token = h.call(store.issue(agent=agent, task=task, reason=f"why {name}",
                                      granted_by=f"issuer-{name}", database=kw.pop("database", "app"),
                                      scopes=scopes, **{"ttl": "10m", **kw}))
        t.grants[name], t.tokens[name] = g, token
        return g

    def extend(name, ttl, by):
        before = h.call(store.get(t.gid(name))).expires_at
        t0 = dt.datetime.now(dt.UTC)
        g = h.call(store.extend(t.gid(name), ttl, by=by))
        t.extensions.setdefault(name, []).append((by, before, g.expires_at, t0,
                                                  dt.datetime.now(dt.UTC)))
        t.grants[name] = g

    write = f"read:{TABLE},public.customers write:{TABLE}"
    try:
        t.marks["start"] = time.time()
        issue("exp", T1_AGENT, t.t1, write, ttl="3s")
        extend("exp", "1s", "ext-a")
        extend("exp", "1s", "ext-b")
        issue("nb", T1_AGENT, t.t1, "read:public.customers",
              not_before=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
        issue("rev", T1_AGENT, t.t1, write)
        issue("s1", T1_AGENT, t.t1, "read:public.orders")
        issue("s2", T1_AGENT, t.t1, f"read:public.customers,{LOCKED}")
        issue("multi", T2_AGENT, t.t2, "read:public.customers")
        issue("dry", T2_AGENT, t.t2, "read:public.customers", enforce=False)
        issue("otherdb", T2_AGENT, t.t2, "read:public.customers", database="postgres")

        # the grant whose expiry ends a session holding a transaction open
        c_exp = _session(h, T1_AGENT, t.tokens["exp"])
        _ok(c_exp, f"INSERT INTO {TABLE} VALUES (1)")
        _ok(c_exp, "BEGIN")
        _ok(c_exp, f"INSERT INTO {TABLE} VALUES (2)")
        t.sessions["exp"] = c_exp.backend_pid
        # the server's own view of that backend: in the transaction the expiry will end
        t.marks["exp_backend"] = pg.psql(
            "SELECT pid || '|' || state FROM pg_stat_activity WHERE query = "
            f"'INSERT INTO {TABLE} VALUES (2)'", db="app").strip()

        # not before: refused until then
        _refused(t, h, T1_AGENT, t.tokens["nb"], "nb")

        # revoked mid-session
        c_rev = _session(h, T1_AGENT, t.tokens["rev"])
        _ok(c_rev, f"INSERT INTO {TABLE} VALUES (3)")
        t.marks["revoke"] = time.time()
        h.call(store.revoke(t.gid("rev"), by="security"))
        # sent at once: the proxy learns of the revocation by polling the store
        # (grants.poll_interval), so this may still run: the answer must say what it did
        try:
            c_rev.send(m.query(f"INSERT INTO {TABLE} VALUES (5)"))
            after = c_rev.until_ready()  # up to ReadyForQuery, a FATAL, or the end
        except OSError:  # the proxy had already closed it
            after = []
        t.sessions["rev_after"] = [f for f in after if f[:1] in (b"C", b"E")]
        fatal = [error_fields(f) for f in after if f[:1] == b"E"
                 and error_fields(f).get("S") == "FATAL"]
        t.ended["rev"] = (fatal[0], time.time()) if fatal else wait_fatal(c_rev, 10)
        c_rev.close()
        t.grants["rev"] = h.call(store.get(t.gid("rev")))
        _refused(t, h, T1_AGENT, t.tokens["rev"], "rev")

        # the same task re-issued with other scopes: each decided by its own
        for name in ("s1", "s2"):
            with _session(h, T1_AGENT, t.tokens[name]) as c:
                frames = c.query("SELECT count(*) FROM public.customers")
                t.sessions[name] = [error_fields(f)["C"] for f in frames if f[:1] == b"E"]
                if name == "s2":  # allowed by the grant, refused by the database
                    frames = c.query(f"SELECT * FROM {LOCKED}")
                    t.sessions["s2_locked"] = [error_fields(f)["C"] for f in frames
                                               if f[:1] == b"E"]

        # one grant, two sessions at once, then a third on the backend kept for it
        a, b = _session(h, T2_AGENT, t.tokens["multi"]), _session(h, T2_AGENT, t.tokens["multi"])
        _ok(a, "SELECT 1 FROM public.customers LIMIT 1")
        _ok(b, "SELECT 2 FROM public.customers LIMIT 1")
        t.sessions["multi"] = [a.backend_pid, b.backend_pid]
        a.close()
        b.close()
        wait_for(lambda: h.call(_live(h)) == 1, 10, "the two sessions to end")
        with _session(h, T2_AGENT, t.tokens["multi"]) as c:
            _ok(c, "SELECT 3 FROM public.customers LIMIT 1")
            t.sessions["multi"].append(c.backend_pid)

        # dry run: the policy would deny, the statement runs
        with _session(h, T2_AGENT, t.tokens["dry"]) as c:
            t.sessions["dry"] = c.query("SELECT count(*) FROM public.orders")

        # a static user's session (no grant): allowed statements only
        with RawClient.via_proxy(h) as c:
            _ok(c, "SELECT 1")

        # refused: another database's grant, a wrong token (fast, several: throttled), an
        # unknown agent
        _refused(t, h, T2_AGENT, t.tokens["otherdb"], "otherdb")
        for _ in range(4):
            _refused(t, h, T1_AGENT, "pgw_not-the-token-at-all-0000000000", None)
        _refused(t, h, "nobody-bot", t.tokens["multi"], None)

        # not before has passed: accepted
        wait_for(lambda: time.time() > t.grants["nb"].not_before.timestamp() + 0.05, 5, "nb")
        with _session(h, T1_AGENT, t.tokens["nb"]) as c:
            _ok(c, "SELECT 1 FROM public.customers LIMIT 1")

        # the expiry ends the session and its open transaction
        t.ended["exp"] = wait_fatal(c_exp, 10)
        c_exp.close()
        t.marks["expired"] = time.time()
        _refused(t, h, T1_AGENT, t.tokens["exp"], "exp")
        wait_for(lambda: h.call(_live(h)) == 0, 10, "every session to end")
        t.marks["exp_backend_after"] = pg.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE pid = "
            f"{t.marks['exp_backend'].split('|')[0]}", db="app").strip()
        # extended after it expired: valid again, and used
        time.sleep(1.2)  # the housekeeping has reported the expiry (once a second)
        t.marks["revive"] = time.time()
        extend("exp", "10m", "ext-c")
        with _session(h, T1_AGENT, t.tokens["exp"]) as c:
            _ok(c, f"INSERT INTO {TABLE} VALUES (4)")
        wait_for(lambda: h.call(_live(h)) == 0, 10, "every session to end")
        t.marks["end"] = time.time()
        for name, g in list(t.grants.items()):
            t.grants[name] = h.call(store.get(g.id))
            t.verifiers.append(t.grants[name].verifier)
    finally:
        h.stop()
    t.marks["rows"] = pg.psql(f"SELECT string_agg(v::text, ',' ORDER BY v) FROM {TABLE}",
                              db="app").strip()
    pg.psql(f"DROP TABLE IF EXISTS {TABLE}, {LOCKED}", db="app")
    return t


async def _live(h) -> int:
    return len(h.server.connections)


# --- the auditor's commands ------------------------------------------------------------


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


def args(tmp: Path, idx: str = "audit.duckdb", rec: str = "rec") -> list[str]:
    return ["--store", str(tmp / rec), "--index", str(tmp / idx),
            "--public-key", str(tmp / "signing.key.pub")]


def answer(tmp: Path, *filters: str, **kw) -> tuple[int, dict]:
    rc, out = run("audit", *args(tmp, **kw), "--format", "json", *filters)
    return rc, json.loads(out)



def ts(v: str | None) -> dt.datetime | None:
    return None if v is None else dt.datetime.fromisoformat(v.replace("Z", "+00:00"))


def iso(v: dt.datetime) -> str:
    return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def full(truth) -> dict:
    """The unfiltered answer (the index updated once: the other reads use --no-update)."""
    rc, a = answer(truth.tmp)
    assert rc == 0, a["verification"]
    return a


def grant_of(a: dict, gid: str) -> dict:
    (g,) = [g for g in a["grants"] if g["grant_id"] == gid]
    return g


# --- who was granted what, for how long ---------------------------------------------


def test_each_grant_is_its_store_row_with_every_change(truth, full):
    """Every grant as the store holds it, with each extension (who, from, to), its
    revocation; a grant extended after it expired is in force again, not 'expired'."""
    for name, g in truth.grants.items():
        got = grant_of(full, g.id)
        assert (got["agent"], got["task"], got["reason"], got["granted_by"], got["database"],
                got["scopes"], got["enforce"]) == (
            g.agent, g.task, g.reason, g.granted_by, g.database, g.scopes, g.enforce), name
        assert ts(got["issued_at"]) == g.created_at, name
        assert ts(got["not_before"]) == g.not_before, name
        assert ts(got["expires_at"]) == g.expires_at, name
        assert got["source"] == "control" and got["intact"], name
        want = [(by, a, b) for by, a, b, _, _ in truth.extensions.get(name, [])]
        assert [(x["by"], ts(x["from"]), ts(x["to"])) for x in got["extensions"]] == want, name
        for x, (*_, t0, t1) in zip(got["extensions"], truth.extensions.get(name, []),
                                   strict=True):
            assert t0 <= ts(x["at"]) <= t1, (name, x)  # when: as the store made it
        assert (ts(got["revoked_at"]), got["revoked_by"]) == (g.revoked_at, g.revoked_by), name
    exp = grant_of(full, truth.gid("exp"))
    assert ts(exp["first_expires_at"]) == truth.extensions["exp"][0][1]
    assert [e["kind"] for e in exp["events"]] == [
        "grant.issued", "grant.extended", "grant.extended", "grant.expired", "grant.extended"]
    # it expired (the session said so, a login was refused), then ext-c made it valid again
    # and it served a session: the grant is not 'expired' now
    assert truth.grants["exp"].status(dt.datetime.now(dt.UTC)) == "active"
    assert exp["ended"] is None, (exp["ended"], exp["expired_at"])
    rev = grant_of(full, truth.gid("rev"))
    assert rev["ended"] == "revoked" and rev["revoked_by"] == "security"
    for name in ("nb", "s1", "s2", "multi", "dry", "otherdb"):
        assert grant_of(full, truth.gid(name))["ended"] is None, name


def test_sessions_end_as_the_clients_saw_them(truth, full, pg):
    def sessions(name):
        return grant_of(full, truth.gid(name))["sessions"]

    # expiry mid-transaction: the FATAL, the cause, and the open transaction rolled back
    s_exp, s_revived = sessions("exp")
    assert truth.ended["exp"][0]["C"] == "57P01" and "expired" in truth.ended["exp"][0]["M"]
    assert s_exp["end_cause"] == "expired" and s_exp["backend_pid"] == truth.sessions["exp"]
    # the server: that backend held the transaction open, and is gone after the expiry
    assert truth.marks["exp_backend"] == f"{s_exp['backend_pid']}|idle in transaction"
    assert truth.marks["exp_backend_after"] == "0"
    assert ts(s_exp["ended_at"]) >= ts(grant_of(full, truth.gid("exp"))["events"][2]["expires_at"])
    rows = {r["text"]: r for r in s_exp["statement_rows"]}
    assert rows[f"INSERT INTO {TABLE} VALUES (1)"]["outcome"] == "ok"
    two = rows[f"INSERT INTO {TABLE} VALUES (2)"]
    assert two["outcome"] == "rolled back" and "(expired)" in two["message"]
    assert s_revived["end_cause"] == "terminate"
    # revoked mid-session: the session ends, cause revoked; what ran after the revocation
    # (the proxy polls the store) is in the answer as it happened
    (s_rev,) = sessions("rev")
    assert truth.ended["rev"][0]["C"] == "57P01" and "revoked" in truth.ended["rev"][0]["M"]
    assert s_rev["end_cause"] == "revoked"
    after = [r for r in s_rev["statement_rows"] if r["text"].endswith("(5)")]
    ran = [f for f in truth.sessions["rev_after"] if f[:1] == b"C"]
    if ran:  # it ran before the proxy noticed: the answer says so
        assert [r["outcome"] for r in after] == ["ok"], (after, truth.sessions["rev_after"])
    else:  # refused or never relayed: not a statement that ran
        assert all(r["outcome"] != "ok" for r in after), after
    revoked_at = ts(grant_of(full, truth.gid("rev"))["revoked_at"])
    assert all(ts(r["ts"]) <= ts(s_rev["ended_at"]) for r in s_rev["statement_rows"])
    assert ts(s_rev["ended_at"]) >= revoked_at
    landed = {int(v) for v in truth.marks["rows"].split(",")}
    assert landed == {1, 3, 4} | ({5} if ran else set()), truth.marks["rows"]
    # the same task re-issued with other scopes: each session decided by its own grant
    (s1,), (s2,) = sessions("s1"), sessions("s2")
    assert truth.sessions["s1"] == ["42501"] and truth.sessions["s2"] == []
    assert (s1["scopes"], s1["statement_rows"][0]["decision"]) == ("read:public.orders", "denied")
    assert (s2["scopes"], s2["statement_rows"][0]["decision"]) == (
        f"read:public.customers,{LOCKED}", "allowed")
    locked = s2["statement_rows"][1]  # the database's refusal: a denial by the database
    assert truth.sessions["s2_locked"] == ["42501"]
    assert (locked["decision"], locked["sqlstate"], locked["outcome"]) == ("allowed", "42501",
                                                                           "error")
    assert [(d["source"], d["session_id"], d["n"]) for d in full["denials"]
            if d["source"] == "database"] == [("database", s2["session_id"], 2)]
    # one grant, two sessions at once and one after them, on the backend kept for it
    m = sessions("multi")
    pids = truth.sessions["multi"]
    assert [s["backend_pid"] for s in m] == pids
    assert [s["upstream_reused"] for s in m] == [False, False, pids[2] in pids[:2]]
    assert ts(m[1]["started_at"]) < ts(m[0]["ended_at"])  # at once
    # dry run: would deny, ran
    (d,) = sessions("dry")
    assert d["enforce"] is False and not [f for f in truth.sessions["dry"] if f[:1] == b"E"]
    assert [(r["decision"], r["outcome"]) for r in d["statement_rows"]] == [("would_deny", "ok")]
    assert sessions("otherdb") == [] and sessions("nb")[0]["statement_rows"][0]["outcome"] == "ok"
    assert ts(sessions("nb")[0]["started_at"]) >= truth.grants["nb"].not_before


def test_a_dry_runs_would_deny_is_among_the_denials(truth, full):
    """A dry-run grant refuses nothing, and its session's statement the policy would have
    denied ran (the server answered it): the answer's denials list it all the same, as a
    dry run's (source ``dry-run``, with the rule and the reason), and ``--denied`` keeps it
    and its session, in the answer and the sessions list (was: absent from both, so the
    auditor of a dry run had to read every statement row to learn what the grant lacks)."""
    (d,) = grant_of(full, truth.gid("dry"))["sessions"]
    (row,) = d["statement_rows"]
    assert [f[:1] for f in truth.sessions["dry"] if f[:1] in (b"C", b"E")] == [b"C"]  # it ran
    (den,) = [x for x in full["denials"] if x["session_id"] == d["session_id"]]
    assert (den["source"], den["n"], den["text"], den["rule"], den["sqlstate"]) == (
        "dry-run", row["n"], "SELECT count(*) FROM public.orders", row["rule"], None)
    assert den["rule"] and den["reason"] == row["reason"] and den["reason"]
    assert not [x for x in full["denials"] if x["source"] == "dry-run"
                and x["session_id"] != d["session_id"]]  # enforcing grants' are policy's
    rc, a = answer(truth.tmp, "--grant", truth.gid("dry"), "--denied", "--no-update")
    assert rc == 0
    assert [[r["n"] for r in s["statement_rows"]] for s in grant_of(a, truth.gid("dry"))["sessions"]] == [[row["n"]]]
    rc, out = run("sessions", *args(truth.tmp), "--grant", truth.gid("dry"), "--denied",
                  "--format", "json", "--no-update")
    listed = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and [(x["session_id"], x["denials"]) for x in listed] == [(d["session_id"], 1)]
    rc, text = run("audit", *args(truth.tmp), "--grant", truth.gid("dry"), "--no-update")
    assert "dry-run" in text.split("DENIALS (1)")[1].splitlines()[1], text


def test_each_refused_login_with_its_reason_agent_and_grant(truth, full):
    reasons = {"28P01": "password"}
    by_name = {g.id: n for n, g in truth.grants.items()}
    got = [(r["agent"], by_name.get(r["grant_id"]), r["sqlstate"], r["message"], r["reason"])
           for r in full["refused_logins"]]
    want = []
    for agent, name, fields, _ in truth.refused:
        reason = reasons.get(fields["C"]) or {
            "nb": "not_yet_valid", "rev": "revoked", "otherdb": "wrong_database",
            "exp": "expired"}[name]
        want.append((agent, name, fields["C"], fields["M"], reason))
    assert got == want
    for r in full["refused_logins"]:
        g = truth.grants.get(by_name.get(r["grant_id"]))
        assert r["task"] == (g.task if g else None) and r["verified"] is True
        assert r["database"] == "app" and r["client"].startswith("127.0.0.1:")
    # the answer's denials hold every refused login, once
    logins = [(d["ts"], d["agent"], d["sqlstate"]) for d in full["denials"]
              if d["source"] in ("login", "connection")]
    assert logins == [(r["ts"], r["agent"], r["sqlstate"]) for r in full["refused_logins"]]


def test_no_token_or_scram_material_in_any_output(truth, full, tmp_path):
    from tests.support.recording import stored_bytes

    needles = {t.encode() for t in truth.tokens.values()} | {b"pgw_not-the-token"}
    for v in truth.verifiers:  # SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
        salt, keys = v.split(":", 1)[1].split("$")
        needles |= {salt.encode(), *(k.encode() for k in keys.split(":"))}
    needles |= {b"SCRAM-SHA-256$", b"n,,n=", b",p="}  # a verifier, a SCRAM exchange
    blobs = stored_bytes(truth.tmp / "rec") + [(truth.tmp / "audit.duckdb",
                                                (truth.tmp / "audit.duckdb").read_bytes())]
    for fmt in ("text", "json", "csv"):
        blobs.append((fmt, run("audit", *args(truth.tmp), "--no-update", "--format", fmt)[1]
                      .encode()))
    for sid in {s["session_id"] for g in full["grants"] for s in g["sessions"]}:
        for extra in ((), ("--format", "json")):
            blobs.append((sid, run("replay", "--store", str(truth.tmp / "rec"), "--public-key",
                                   str(truth.tmp / "signing.key.pub"), sid, *extra)[1].encode()))
    for how in ("parquet", "ocsf"):
        run("export", *args(truth.tmp), "--no-update", "--out", str(tmp_path / how), "--as", how)
        blobs += [(p, p.read_bytes()) for p in (tmp_path / how).rglob("*") if p.is_file()]
    assert len(blobs) > 20
    for where, data in blobs:
        for needle in needles:
            assert needle not in data, (needle, where)


# --- filters: each filtered answer is the unfiltered one filtered by hand --------------

def _denied(st: dict) -> bool:
    """What --denied keeps: denied by the policy or the database, or what a dry run's policy
    would have denied (it ran)."""
    return (st["decision"] in ("denied", "would_deny") or st["sqlstate"] == "42501"
            or bool(st["db_denied_rule"]))


def by_hand(full: dict, task=None, agent=None, grant=None, session=None, since=None,
            until=None, denied=False) -> dict:
    """docs/audit.md's filters applied to the unfiltered answer: sessions overlapping the
    window and their statements in it; the grants of the filters that were in force in the
    window (issued by --until, not ended before --since) or that a session or refused login
    of the answer names; refused logins in the window (with --task, also those naming no
    grant that the task's agent made while one of its grants was open); the denials of the
    statements and of those refused logins, the ones the --task rule adds included
    (``test_the_refused_logins_of_a_task_are_among_its_denials``)."""
    since, until = ts(since), ts(until)

    def within(v):
        return (since is None or ts(v) >= since) and (until is None or ts(v) <= until)

    def who(x):
        return ((task is None or x["task"] == task) and (agent is None or x["agent"] == agent)
                and (grant is None or x["grant_id"] == grant))

    all_sessions = [s for g in full["grants"] for s in g["sessions"]] + full["other_sessions"]
    sessions = [s for s in all_sessions if who(s)
                and (session is None or s["session_id"] == session)
                and (since is None or s["ended_at"] is None or ts(s["ended_at"]) >= since)
                and (until is None or ts(s["started_at"]) <= until)]
    rows = {s["session_id"]: [st for st in s["statement_rows"] if within(st["ts"])
                              and (not denied or _denied(st))] for s in sessions}
    grants = [g for g in full["grants"] if who(g)]
    refused = [] if session is not None else [
        r for r in full["refused_logins"] if within(r["ts"]) and who(r)]
    if task is not None and grant is None and session is None and grants:
        for r in full["refused_logins"]:
            if r["grant_id"] is None and within(r["ts"]) and any(
                    g["agent"] == r["agent"] and g["expires_at"] is not None
                    and ts(g["not_before"] or g["issued_at"]) <= ts(r["ts"])
                    <= min(ts(g["revoked_at"] or g["expires_at"]), ts(g["expires_at"]))
                    for g in grants):
                refused.append(r)
        refused.sort(key=lambda r: r["ts"])
    named = {s["grant_id"] for s in sessions} | {r["grant_id"] for r in refused}
    if session is not None:
        grants = [g for g in grants if g["grant_id"] in named]
    elif since is not None or until is not None:
        def in_force(g):
            if g["issued_at"] is None:  # known from its sessions only (a static user)
                return False
            end = min(ts(g["revoked_at"] or g["expires_at"]), ts(g["expires_at"]))
            return (until is None or ts(g["issued_at"]) <= until) and (since is None or end >= since)
        grants = [g for g in grants if in_force(g) or g["grant_id"] in named]
    kept = {s["session_id"] for s in sessions}
    out_grants = {}
    for g in grants:
        out_grants[g["grant_id"]] = [
            (s["session_id"], [st["n"] for st in rows[s["session_id"]]])
            for s in g["sessions"] if s["session_id"] in kept
            and (not denied or rows[s["session_id"]])]
    other = [(s["session_id"], [st["n"] for st in rows[s["session_id"]]])
             for s in full["other_sessions"] if s["session_id"] in kept
             and (not denied or rows[s["session_id"]])]
    statement_denials = [(d["session_id"], d["n"]) for d in full["denials"]
                         if d["session_id"] in kept and within(d["ts"])]
    return {"grants": out_grants, "other": other, "refused": [r["ts"] for r in refused],
            "denials": sorted(statement_denials + [(None, r["ts"]) for r in refused],
                              key=str)}


def shape(a: dict) -> dict:
    """What ``by_hand`` computes, read from an answer."""
    def rows(s):
        return [st["n"] for st in s["statement_rows"]]

    return {"grants": {g["grant_id"]: [(s["session_id"], rows(s)) for s in g["sessions"]]
                       for g in a["grants"]},
            "other": [(s["session_id"], rows(s)) for s in a["other_sessions"]],
            "refused": [r["ts"] for r in a["refused_logins"]],
            "denials": sorted([(d["session_id"], d["n"]) if d["session_id"] else
                               (None, d["ts"]) for d in a["denials"]], key=str)}


def filter_cases(truth: Truth, full: dict) -> list[dict]:
    """Filters at the scenario's boundaries: a session spanning one, a grant extended
    across one, a boundary on a session's very start or end, a refused login's time."""
    g = {n: grant_of(full, truth.gid(n)) for n in truth.grants}
    s_exp = g["exp"]["sessions"][0]
    rev_s = g["rev"]["sessions"][0]
    nb_refused = next(r for r in full["refused_logins"] if r["grant_id"] == truth.gid("nb"))
    ext_b = g["exp"]["extensions"][1]["at"]
    cases = [{"task": truth.t1}, {"task": truth.t2}, {"agent": T1_AGENT}, {"agent": T2_AGENT},
             {"agent": "nobody-bot"}, {"denied": True}, {"task": truth.t1, "denied": True},
             {"task": truth.t2, "denied": True}, {"session": rev_s["session_id"]}]
    cases += [{"grant": gr.id} for gr in truth.grants.values()]
    cases += [
        {"since": iso(utc(truth.marks["revoke"]))},  # inside the expiring session
        {"until": iso(utc(truth.marks["revoke"]))},
        {"since": iso(utc(truth.marks["expired"]))},  # after exp expired, before ext-c
        {"since": rev_s["ended_at"]},  # on a session's end: it counts
        {"until": rev_s["started_at"]},  # on a session's start: it counts
        {"until": nb_refused["ts"]},  # on a refused login: it counts
        {"since": ext_b, "until": iso(ts(ext_b) + dt.timedelta(milliseconds=1))},
        {"since": s_exp["statement_rows"][0]["ts"], "until": s_exp["statement_rows"][0]["ts"]},
        {"task": truth.t1, "since": iso(utc(truth.marks["revoke"]))},
        {"task": truth.t1, "until": nb_refused["ts"]},
        {"agent": T1_AGENT, "since": iso(utc(truth.marks["revive"]))},
        {"task": truth.t2, "denied": True, "until": iso(utc(truth.marks["expired"]))},
    ]
    return cases


def test_each_filter_is_the_unfiltered_answer_filtered_by_hand(truth, full):
    failures = []
    for case in filter_cases(truth, full):
        argv = [a for k, v in case.items() for a in
                ((f"--{k}",) if v is True else (f"--{k}", v))]
        try:
            rc, got = answer(truth.tmp, "--no-update", *argv)
        except Exception as e:  # the auditor got no answer at all
            failures.append((case, f"crashed: {e!r}"))
            continue
        want = by_hand(full, **case)
        if shape(got) != want:
            failures.append((case, {k: (shape(got)[k], want[k]) for k in want
                                    if shape(got)[k] != want[k]}))
        # what is in both is the same: a filter selects, it never rewrites
        for gg in got["grants"]:
            fg = grant_of(full, gg["grant_id"])
            assert {k: v for k, v in gg.items() if k != "sessions"} == {
                k: v for k, v in fg.items() if k != "sessions"}, case
    assert not failures, "\n".join(map(str, failures))


# --- the formats, the index and the exports say the same --------------------------------


def test_text_says_what_the_json_says(truth, full):
    rc, text = run("audit", *args(truth.tmp), "--no-update")
    lines = text.splitlines()
    for g in full["grants"]:
        if g["source"] != "control":
            continue
        start = lines.index(f"GRANT {g['grant_id']}")
        block = "\n".join(lines[start:start + 12])
        assert f"agent {g['agent']}  task {g['task']}  database {g['database']}" in block
        assert f"why: '{g['reason']}'" in block and f"issued by {g['granted_by']} at " \
            f"{g['issued_at']}" in block
        assert f"scopes: {g['scopes']}{'' if g['enforce'] else '  (dry-run)'}\n" in block + "\n"
        assert f"window: not before {g['not_before']}, expires {g['first_expires_at']}" in block
        for x in g["extensions"]:
            assert f"extended at {x['at']} by {x['by']}: {x['from']} -> {x['to']}" in block
        assert (f"REVOKED at {g['revoked_at']} by {g['revoked_by']}" in block) == bool(
            g["revoked_at"])
        assert ("EXPIRED at" in block) == (g["ended"] == "expired"), block
    refused = lines[lines.index(next(x for x in lines if x.startswith("REFUSED LOGINS"))) + 1:]
    assert len(refused) == len(full["refused_logins"])
    for r, line in zip(full["refused_logins"], refused, strict=True):
        for v in (r["ts"], r["agent"], r["client"], r["database"], r["reason"], r["sqlstate"],
                  r["message"], r["grant_id"], r["task"]):
            if v is not None:
                assert v in line, (v, line)


CSV_GRANT = ("by", "why", "database", "scopes", "enforce", "not_before", "expires_at",
             "previous_expires_at", "happened_at")


def test_csv_has_every_grant_session_and_login_fact(truth, full):
    rc, out = run("audit", *args(truth.tmp), "--no-update", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))

    def cell(v) -> str:
        return "" if v is None else str(v)

    def one(**match) -> dict:
        got = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        assert len(got) == 1, (match, got)
        return got[0]

    for g in full["grants"]:
        for e in g["events"]:
            r = one(kind=e["kind"], grant_id=g["grant_id"], ts=e["ts"])
            assert (r["agent"], r["task"], r["verified"]) == (g["agent"], g["task"],
                                                              cell(e["verified"]))
            want = {"by": e["by"], "expires_at": e["expires_at"],
                    "previous_expires_at": e["previous_expires_at"],
                    "happened_at": e["happened_at"], "database": g["database"],
                    "scopes": g["scopes"], "enforce": g["enforce"],
                    "not_before": g["not_before"], "why": g["reason"]}
            assert {k: r.get(k) for k in CSV_GRANT} == {k: cell(v) for k, v in want.items()}, r
        for s in g["sessions"]:
            r = one(kind="session.start", session_id=s["session_id"])
            assert (r["ts"], r["grant_id"], r["client"], r["database"], r["scopes"]) == (
                s["started_at"], g["grant_id"], s["client_addr"], s["database"], s["scopes"])
            r = one(kind="session.end", session_id=s["session_id"])
            assert (r["ts"], r["outcome"], r["message"]) == (s["ended_at"], s["end_cause"],
                                                             cell(s["end_detail"]))
    refused = [r for r in rows if r["kind"] == "login.refused"]
    assert len(refused) == len(full["refused_logins"])
    for r, j in zip(refused, full["refused_logins"], strict=True):
        for k in ("ts", "agent", "task", "grant_id", "database", "client", "reason", "sqlstate",
                  "message", "verified"):
            assert r[k] == cell(j[k]), (k, r, j)


def _sql(truth, query: str) -> list[dict]:
    rc, out = run("audit", *args(truth.tmp), "--no-update", "--sql", query, "--format", "json")
    assert rc == 0, out
    return [json.loads(x) for x in out.splitlines()]


def test_sql_rebuild_parquet_and_ocsf_hold_the_same_grants_and_logins(truth, full, tmp_path):
    import duckdb

    grants = {r["grant_id"]: r for r in _sql(truth, "select * from grants")}
    for g in full["grants"]:
        want = {k: v for k, v in g.items() if k not in ("events", "sessions")}
        got = {**grants[g["grant_id"]], "extensions": json.loads(grants[g["grant_id"]]
                                                                  ["extensions"])}
        assert got == want
    events = _sql(truth, "select * from grant_events order by ts, stream_id, seq")
    assert events == [e for g in sorted(full["grants"], key=lambda g: g["grant_id"])
                      for e in g["events"]] or sorted(events, key=str) == sorted(
        [e for g in full["grants"] for e in g["events"]], key=str)
    logins = _sql(truth, "select * from logins where outcome = 'refused' order by ts")
    assert logins == [{k: v for k, v in r.items()} for r in full["refused_logins"]]
    # the index rebuilt from nothing holds the same tables
    run("index", "rebuild", *args(truth.tmp, idx="rebuilt.duckdb"))
    for table in ("grants", "control_events", "sessions", "recordings"):
        cols = ", ".join(f'"{c}"' for c in __import__("recorder.audit.index", fromlist=["x"])
                         .TABLES[table] if c != "indexed_at")
        q = f"SELECT {cols} FROM {table} ORDER BY ALL"
        a = duckdb.connect(str(truth.tmp / "audit.duckdb"), read_only=True)
        b = duckdb.connect(str(truth.tmp / "rebuilt.duckdb"), read_only=True)
        try:
            assert a.execute(q).fetchall() == b.execute(q).fetchall(), table
        finally:
            a.close()
            b.close()
    # Parquet reads back as the views
    out = tmp_path / "lake"
    assert run("export", *args(truth.tmp), "--no-update", "--out", str(out))[0] == 0
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    from recorder.audit.answer import _plain

    def lake(table: str, order: str) -> list[dict]:
        cur = con.execute(f"SELECT * EXCLUDE (event_date) FROM read_parquet('{out}/{table}/*/"
                          f"*.parquet', hive_partitioning = true) ORDER BY {order}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, map(_plain, r), strict=True)) for r in cur.fetchall()]

    assert lake("grants", "grant_id") == sorted(grants.values(), key=lambda r: r["grant_id"])
    assert lake("grant_events", "ts, stream_id, seq") == events
    assert lake("logins", "ts, outcome, session_id") == _sql(
        truth, "select * from logins order by ts, outcome, session_id")
    # OCSF: each refused login and grant event, with who, from where, and for how long
    run("export", *args(truth.tmp), "--no-update", "--out", str(tmp_path / "o"), "--as", "ocsf")
    ocsf = [json.loads(x) for f in (tmp_path / "o").rglob("*.jsonl")
            for x in f.read_text().splitlines()]
    auth = [e for e in ocsf if e["class_uid"] == 3003]
    refused = [e for e in auth if e["unmapped"]["event"] == "login.refused"]
    assert len(refused) == len(full["refused_logins"])
    for e, r in zip(sorted(refused, key=lambda e: e["time"]), full["refused_logins"], strict=True):
        ip, _, port = r["client"].rpartition(":")
        assert (e["user"]["name"], e["status_id"], e["status_code"], e["unmapped"]["grant_id"],
                e["unmapped"]["task"]) == (r["agent"], 2, r["sqlstate"], r["grant_id"], r["task"])
        assert e["src_endpoint"] == {"ip": ip, "port": int(port)}, e
        assert (e["unmapped"]["database"], e["unmapped"]["verified"], e["unmapped"]["reason"]) == (
            r["database"], r["verified"], r["reason"]), e
    kinds = [e for e in auth if e["unmapped"]["event"].startswith("grant.")]
    assert len(kinds) == len(events)
    for e, g in zip(sorted(kinds, key=lambda e: (e["time"], e["metadata"]["uid"])),
                    sorted(events, key=lambda e: (_ms(e["ts"]), f"{e['kind']}/{e['grant_id']}/"
                                                                f"{e['ts']}")), strict=True):
        assert e["unmapped"]["event"] == g["kind"] and e["unmapped"]["grant_id"] == g["grant_id"]
        assert {k: e["unmapped"].get(k) for k in ("by", "expires_at", "previous_expires_at",
                                                  "happened_at", "verified")} == {
            k: g[k] for k in ("by", "expires_at", "previous_expires_at", "happened_at",
                              "verified")}, e


def _ms(v: str) -> int:
    return int(ts(v).timestamp() * 1000)


# --- tampering: refused or flagged, never silently left out ------------------------------


class Store:
    """An auditor's private copy of the scenario's store, and an insider's tools."""

    def __init__(self, truth: Truth, tmp: Path):
        shutil.copytree(truth.tmp / "rec", tmp / "rec")
        shutil.copy(truth.tmp / "signing.key.pub", tmp / "signing.key.pub")
        from recorder.store.local import LocalStore

        self.tmp, self.truth = tmp, truth
        self.store = LocalStore(tmp / "rec")
        self.control = [sid for sid in self.store.sessions() if self._is_control(sid)]
        assert len(self.control) == 1, self.control

    def _is_control(self, sid: str) -> bool:
        return self.records(sid, 0)[0].json()["meta"].get("stream") == "control"

    def path(self, sid: str, n: int, kind: str = "chunk") -> Path:
        from recorder import chunks

        return self.tmp / "rec" / (chunks.chunk_key(sid, n) if kind == "chunk"
                                   else chunks.ckpt_key(sid, n))

    def chunk_numbers(self, sid: str) -> list[int]:
        from recorder import chunks

        prefix = chunks.session_prefix(sid)
        return sorted({p[0] for k in self.store.list(prefix)
                       if (p := chunks.parse_name(k[len(prefix):]))})

    def records(self, sid: str, n: int) -> list:
        from recorder import chunks

        return chunks.decode_chunk(self.path(sid, n).read_bytes())[1]

    def chunk_with(self, sid: str, pred) -> int:
        (n,) = [n for n in self.chunk_numbers(sid) if any(pred(r) for r in self.records(sid, n))]
        return n

    def rewrite(self, sid: str, n: int, keep, edit=lambda r: r.payload) -> None:
        """Chunk ``n`` re-encoded with the records ``keep`` accepts, payloads ``edit``ed."""
        import zstandard

        from recorder import chunks
        from recorder.records import Kind, encode_record

        p = self.path(sid, n)
        h, recs = chunks.decode_chunk(p.read_bytes())
        kept = [r for r in recs if keep(r)]
        raw = b"".join(encode_record(r.seq, r.t_ns, r.direction, r.kind,
                                     "" if r.kind == Kind.WIRE else r.type, edit(r)) for r in kept)
        p.chmod(0o644)
        p.write_bytes(chunks.encode_chunk(h.session_id, h.n, h.first_seq, len(kept), raw,
                                          zstandard.ZstdCompressor()))
        p.chmod(0o444)

    def answer(self, *filters: str, fmt: str = "json") -> tuple[int, dict | str]:
        rc, out = run("audit", *args(self.tmp), "--format", fmt, *filters)
        return rc, (json.loads(out) if fmt == "json" else out)


def _grant_event(kind: str, gid: str):
    return lambda r: r.type == kind and r.json().get("grant_id") == gid


def test_a_removed_revocation_marks_the_grant_it_may_have_been_about(truth, tmp_path):
    st = Store(truth, tmp_path)
    ctl, gid = st.control[0], truth.gid("rev")
    n = st.chunk_with(ctl, _grant_event("grant.revoked", gid))
    st.rewrite(ctl, n, keep=lambda r: r.type != "grant.revoked")
    rc, a = st.answer("--task", truth.t1)
    assert rc == 1 and not a["verification"]["intact"]
    (bad,) = a["verification"]["not_intact"]
    assert (bad["session_id"], bad["in_answer"]) == (ctl, True)
    g = grant_of(a, gid)
    assert g["revoked_at"] is None  # the record is gone: the answer cannot know it
    assert g["intact"] is False, "the grant whose revocation was cut out is shown intact"
    rc, text = st.answer("--task", truth.t1, fmt="text")
    assert f"GRANT {gid} !" in text.splitlines()


def test_a_deleted_expiry_chunk_marks_the_grant(truth, tmp_path):
    st = Store(truth, tmp_path)
    ctl, gid = st.control[0], truth.gid("exp")
    st.path(ctl, st.chunk_with(ctl, _grant_event("grant.expired", gid))).unlink()
    rc, a = st.answer("--grant", gid)
    assert rc == 1 and a["verification"]["not_intact"][0]["in_answer"] is True
    g = grant_of(a, gid)
    assert g["expired_at"] is None and g["intact"] is False


@pytest.mark.parametrize("how", ["chunk", "truncated"])
def test_a_damaged_session_is_listed_and_marked(truth, full, tmp_path, how):
    st = Store(truth, tmp_path)
    sid = grant_of(full, truth.gid("exp"))["sessions"][0]["session_id"]
    last = st.chunk_numbers(sid)[-1]
    assert last >= 1
    if how == "chunk":
        st.path(sid, 1).unlink()
    else:  # the tail cut off: the final chunk and its checkpoint
        st.path(sid, last).unlink()
        st.path(sid, last, "ckpt").unlink()
    rc, a = st.answer("--task", truth.t1)
    assert rc == 1
    assert [(r["session_id"], r["in_answer"]) for r in a["verification"]["not_intact"]] == [
        (sid, True)]
    (s,) = [s for s in grant_of(a, truth.gid("exp"))["sessions"] if s["session_id"] == sid]
    assert s["intact"] is False and s["status"] == "tampered"
    rc, text = st.answer("--task", truth.t1, fmt="text")
    assert text.startswith("WARNING: 1 of") and f"SESSION {sid} ! [tampered]" in text


def test_a_deleted_control_stream_is_flagged_and_its_grants_marked(truth, tmp_path):
    """The control stream holds every grant event, every refused login and the index of
    the sessions: deleting it whole (no chunk is left to fail verification) must not
    leave an answer that says VERIFIED."""
    from recorder import chunks

    st = Store(truth, tmp_path)
    shutil.rmtree(st.tmp / "rec" / chunks.session_prefix(st.control[0]))
    rc, a = st.answer("--task", truth.t1)
    assert a["refused_logins"] == [] and all(g["source"] == "sessions" for g in a["grants"])
    assert rc == 1 and not a["verification"]["intact"], a["verification"]
    (bad,) = a["verification"]["not_intact"]
    assert bad["status"] == "missing" and bad["in_answer"] is True, bad
    assert all(g["intact"] is False for g in a["grants"])
    rc, text = st.answer("--task", truth.t1, fmt="text")
    assert text.startswith("WARNING: 1 of"), text[:300]


def test_an_unverified_refused_login_is_marked_in_every_format(truth, tmp_path):
    st = Store(truth, tmp_path)
    ctl = st.control[0]
    n = st.chunk_with(ctl, lambda r: r.type == "login.refused"
                      and r.json().get("agent") == "nobody-bot")
    st.rewrite(ctl, n, keep=lambda r: True,
               edit=lambda r: r.payload.replace(b"nobody-bot", b"nobody-bxt"))
    rc, a = st.answer("--agent", "nobody-bxt")
    assert rc == 1
    (r,) = a["refused_logins"]
    assert r["verified"] is False
    # the answer draws on that control stream: it says so
    assert [(x["session_id"], x["in_answer"]) for x in a["verification"]["not_intact"]] == [
        (ctl, True)]
    rc, text = st.answer("--agent", "nobody-bxt", fmt="text")
    (line,) = [x for x in text.splitlines() if "'nobody-bxt' from" in x]
    assert line.lstrip().startswith("!"), line
    rc, out = st.answer("--agent", "nobody-bxt", fmt="csv")
    (row,) = [x for x in csv.DictReader(io.StringIO(out)) if x["kind"] == "login.refused"]
    assert row["verified"] == "False"


# --- refusals beyond the proxy's rate of events ------------------------------------------


def test_refusals_over_the_event_rate_are_counted_in_the_answer(make_proxy, tmp_path):
    """Over ``proxy.refusal_events_per_second`` the proxy writes a summary, not each one:
    the answer must not say fewer logins were refused than were."""
    h = make_proxy(**recording(tmp_path), **{
        "grants.store": f"sqlite:///{tmp_path / 'grants.db'}",
        "proxy.refusal_events_per_second": 2, "proxy.auth_fail_delay": 0.0})
    tried = 0
    for _ in range(6):
        try:
            RawClient.session(h.host, h.port, "flood-bot", "pgw_wrong").close()
        except RawError:
            tried += 1
    assert tried == 6

    def accounted():  # the second over, its summary is written at the proxy's next tick
        rc, a = answer(tmp_path, "--agent", "flood-bot")
        n = len(a["refused_logins"]) + sum(s["dropped"] for s in a["refusals_not_itemized"])
        return a if n >= tried else None

    wait_for(accounted, 15, "every refusal itemized or counted", 0.2)
    h.stop()
    rc, a = answer(tmp_path, "--agent", "flood-bot")
    itemized = len(a["refused_logins"])
    assert 0 < itemized < tried
    summaries = a.get("refusals_not_itemized", [])
    assert itemized + sum(s["dropped"] for s in summaries) == tried, a
    assert all(s["by_reason"] == {"password": s["dropped"]} for s in summaries)
    rc, text = run("audit", *args(tmp_path), "--no-update", "--agent", "flood-bot")
    assert f"{tried - itemized} more" in text, text
    rc, out = run("audit", *args(tmp_path), "--no-update", "--agent", "flood-bot", "--format",
                  "csv")
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["kind"] == "login.refused.summary"]
    assert sum(int(r["rows"]) for r in rows) == tried - itemized


def test_the_refused_logins_of_a_task_are_among_its_denials(truth, full):
    rc, a = answer(truth.tmp, "--no-update", "--task", truth.t1)
    logins = [d["ts"] for d in a["denials"] if d["source"] in ("login", "connection")]
    assert logins == [r["ts"] for r in a["refused_logins"]]


# --- what an unauthenticated client may write into the auditor's report ----------------

FORGED = "2026-01-01T00:00:00Z billing-bot from 10.9.9.9:1 to app: revoked 28000 FORGED"


def test_a_login_name_cannot_write_lines_into_the_text_answer(make_proxy, tmp_path):
    """The user and database names of a refused login are the client's, unauthenticated:
    the text answer must show them as data, not as its own lines (a newline forging a
    refusal or a denial of another agent) or terminal controls (an escape sequence moving
    the cursor up and erasing the line before it)."""
    h = make_proxy(**recording(tmp_path), **{
        "grants.store": f"sqlite:///{tmp_path / 'grants.db'}", "proxy.auth_fail_delay": 0.0})
    names = [f"mallory\n  {FORGED}", "eve\x1b[1A\x1b[2K", "trudy\r" + " " * 60]
    for user in names:
        with pytest.raises(RawError):
            RawClient.session(h.host, h.port, user, "pgw_wrong", database=f"app\n  {FORGED}")
    wait_for(lambda: len([r for r in answer(tmp_path)[1]["refused_logins"]]) == len(names), 10,
             "the refusals in the answer")
    h.stop()
    rc, a = answer(tmp_path)
    assert sorted(r["agent"] for r in a["refused_logins"]) == sorted(names)  # the JSON: as sent
    rc, text = run("audit", *args(tmp_path))
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert not [x for x in lines if x.lstrip().startswith(FORGED[:20])], text

    def section(head: str) -> list[str]:
        start = next(i for i, x in enumerate(lines) if x.startswith(head))
        body = lines[start + 1:]
        return body[:body.index("")] if "" in body else body

    assert len(section("REFUSED LOGINS")) == len(section("DENIALS")) == len(names), text
    for name in names:  # each shown, escaped, on its own line
        # (a literal since session 37: E'...', its escapes as PostgreSQL reads them)
        shown = name.replace("\n", "\\n").replace("\r", "\\r").replace("\x1b", "\\x1b")
        assert len([x for x in section("REFUSED LOGINS") if f" E'{shown}' from " in x]) == 1, shown


def test_reverify_finds_a_refused_login_tampered_after_it_was_indexed(truth, tmp_path):
    """``audit --reverify`` verifies again every recording the answer draws on: the control
    stream its refused logins come from too, not only its grants' (a local store can be
    edited after indexing; closed recordings are not re-read by an update)."""
    st = Store(truth, tmp_path)
    rc, a = st.answer("--agent", "nobody-bot")
    assert rc == 0 and len(a["refused_logins"]) == 1
    ctl = st.control[0]
    n = st.chunk_with(ctl, lambda r: r.type == "login.refused"
                      and r.json().get("agent") == "nobody-bot")
    st.rewrite(ctl, n, keep=lambda r: True,
               edit=lambda r: r.payload.replace(b"127.0.0.1", b"10.66.6.6"))
    rc, a = st.answer("--agent", "nobody-bot", "--reverify")
    assert rc == 1, a["verification"]
    assert [(x["session_id"], x["in_answer"]) for x in a["verification"]["not_intact"]] == [
        (ctl, True)]
    (r,) = a["refused_logins"]
    assert r["verified"] is False and r["client"].startswith("10.66.6.6:")


def test_a_deleted_cli_control_stream_is_not_answered_verified(make_proxy, tmp_path):
    import asyncio

    from policy.grants.store import open_store
    from proxy.runtime import build_recorder
    from recorder import chunks

    h = make_proxy(**recording(tmp_path), **{
        "grants.store": f"sqlite:///{tmp_path / 'grants.db'}", "grants.poll_interval": 0.1})
    cli_rec = build_recorder(h.cfg, one_shot=True)  # as `pgwitness grant --config` does

    async def cli(fn):
        store = await open_store(f"sqlite:///{tmp_path / 'grants.db'}",
                                 on_event=cli_rec.control_event)
        try:
            return await fn(store)
        finally:
            await store.close()

    g, token = asyncio.run(cli(lambda s: s.issue(
        agent=T1_AGENT, task="CLI-1", reason="cli", granted_by="cli-admin", database="app",
        scopes="read:public.customers", ttl="10m")))
    c = _session(h, T1_AGENT, token)
    _ok(c, "SELECT 1 FROM public.customers LIMIT 1")
    asyncio.run(cli(lambda s: s.revoke(g.id, by="cli-admin")))
    wait_fatal(c, 10)
    c.close()
    cli_rec.close()
    wait_for(lambda: h.call(_live(h)) == 0, 10, "the session to end")
    h.stop()
    rc, a = answer(tmp_path, "--grant", g.id)
    assert rc == 0 and grant_of(a, g.id)["revoked_by"] == "cli-admin"  # before: all there
    (stream,) = {e["stream_id"] for e in grant_of(a, g.id)["events"]}
    shutil.rmtree(tmp_path / "rec" / chunks.session_prefix(stream))
    rc, a = run("audit", *args(tmp_path, idx="after.duckdb"), "--grant", g.id, "--format", "json")
    a = json.loads(a)
    assert grant_of(a, g.id)["sessions"][0]["end_cause"] == "revoked"
    assert rc == 1 or grant_of(a, g.id)["intact"] is False, (rc, grant_of(a, g.id))
