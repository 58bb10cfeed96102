"""Two-phase commit across sessions (recorder.audit.twophase): a COMMIT PREPARED or ROLLBACK
PREPARED of gid G that succeeded in any recorded session of the same database decides the
statements the latest earlier PREPARE TRANSACTION G prepared, in whichever recorded session
that was. Judged on hand-made recordings (derive), indexed into an in-memory DuckDB index as
``index.Indexer`` indexes them, then paired by ``twophase.resolve`` as every index update
does; and on the pairing alone. tests/integration/test_audit_two_phase_sessions.py does the
same through the proxy and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import json

import duckdb
import pytest

from recorder.audit import index, ocsf, twophase
from recorder.audit.answer import Filters, audit, write_text
from recorder.records import Direction, Kind, dump_json
from tests.support.audit_recordings import Conn, Session

T0 = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z, in ns


def at(seconds: float) -> str:
    """The time ``seconds`` after T0, as the answer says times."""
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        microseconds=T0 // 1000 + round(seconds * 1e6)
    )
    return t.isoformat().replace("+00:00", "Z")


def ins(v: int) -> str:
    return f"INSERT INTO t VALUES ({v})"


def conn(start: float, database: str = "app") -> Conn:
    """A session whose recording starts ``start`` s after T0 (each record 1 µs later)."""
    c = Conn.__new__(Conn)
    c.s = Session()
    p = {"format": 1, "wall_ns": T0 + int(start * 1e9),
         "meta": {"agent": "a", "task": "t", "database": database}}  # fmt: skip
    c.s._add(Direction.PROXY, Kind.META, "session.start", dump_json(p))
    return c


def prepare(c: Conn, v: int, gid: str) -> Conn:
    c.q("BEGIN", "BEGIN", z=b"T").q(ins(v), "INSERT 0 1", z=b"T")
    return c.q(f"PREPARE TRANSACTION '{gid}'", "PREPARE TRANSACTION", z=b"I")


def decide(c: Conn, op: str, gid: str) -> Conn:
    return c.q(f"{op} PREPARED '{gid}'", f"{op} PREPARED", z=b"I")


class Index:
    """An in-memory index: sessions added as Indexer adds them, paired as update pairs."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        index._schema(self.con)
        self.con.execute("SET TimeZone = 'UTC'")

    def add(self, sid: str, c: Conn, unverified: frozenset[int] = frozenset()) -> Index:
        facts = c.s.facts(unverified)
        s = {
            **facts.session,
            "session_id": sid,
            "started_at": index._us(facts.session["started_ns"]),
            "intact": True,
            "status": "closed",
        }
        statements, two_phase = index.derived_rows(sid, facts, s)
        s["errors"] = sum(st["outcome"] in ("error", "rolled back") for st in statements)
        index._insert(self.con, "sessions", [s])
        index._insert(self.con, "statements", statements)
        index._insert(self.con, "two_phase", two_phase)
        twophase.resolve(self.con)
        return self

    def got(self, sid: str) -> dict[str, tuple]:
        rows = self.con.execute(
            "SELECT text, outcome, message FROM statements WHERE session_id = ? ORDER BY n", [sid]
        ).fetchall()
        return {t: (o, m) for t, o, m in rows}


def test_commit_prepared_in_another_session_commits_what_the_first_prepared():
    ix = Index().add("A", prepare(conn(0), 1, "g").end())
    assert ix.got("A")[ins(1)][0] == "prepared"  # no resolution recorded yet
    ix.add("B", decide(conn(10), "COMMIT", "g").end())  # indexed later: decides A's again
    when_b = at(10 + 3e-6)  # B's COMMIT PREPARED answered at its third record
    assert ix.got("A")[ins(1)] == (
        "ok",
        f"prepared for two-phase commit as 'g', then committed by COMMIT PREPARED in session B "
        f"at {when_b}",
    )
    assert ix.got("A")["PREPARE TRANSACTION 'g'"] == ("ok", None)
    assert ix.got("B")["COMMIT PREPARED 'g'"] == (
        "ok", f"committed the transaction prepared as 'g' in session A (statement 3) at "
              f"{at(9e-6)}")  # fmt: skip
    tp = ix.con.execute(
        "SELECT session_id, op, fate, other_session FROM two_phase ORDER BY session_id"
    ).fetchall()
    assert tp == [("A", "prepare", "commit", "B"), ("B", "commit", "resolved", "A")]


def test_rollback_prepared_in_another_session_undoes_it_and_counts_as_an_error():
    ix = Index().add("B", decide(conn(10), "ROLLBACK", "g").end())
    ix.add("A", prepare(conn(0), 1, "g").end())  # the preparing session indexed last
    assert ix.got("A")[ins(1)] == (
        "rolled back",
        f"prepared for two-phase commit as 'g', then undone by ROLLBACK PREPARED in session B "
        f"at {at(10 + 3e-6)}",
    )
    assert ix.con.execute("SELECT errors FROM sessions WHERE session_id = 'A'").fetchone() == (1,)
    assert ix.got("B")["ROLLBACK PREPARED 'g'"][1].startswith(
        "rolled back the transaction prepared as 'g' in session A (statement 3)"
    )


def test_a_reused_gid_each_resolution_decides_the_latest_prepare_before_it():
    ix = Index().add("A", prepare(conn(0), 1, "g").end())
    ix.add("C", prepare(conn(20), 2, "g").end())
    ix.add("B", decide(conn(10), "COMMIT", "g").end())
    ix.add("D", decide(conn(30), "ROLLBACK", "g").end())
    assert ix.got("A")[ins(1)][0] == "ok" and "session B" in ix.got("A")[ins(1)][1]
    assert ix.got("C")[ins(2)][0] == "rolled back" and "session D" in ix.got("C")[ins(2)][1]
    assert "in session C" in ix.got("D")["ROLLBACK PREPARED 'g'"][1]


def test_unresolved_stays_pending_and_a_resolution_before_the_prepare_decides_nothing():
    ix = Index().add("B", decide(conn(0), "COMMIT", "g").end())  # before A prepared it
    ix.add("A", prepare(conn(10), 1, "g").end())
    assert ix.got("A")[ins(1)] == (
        "prepared",
        "prepared for two-phase commit as 'g': neither committed nor rolled back until COMMIT "
        "PREPARED or ROLLBACK PREPARED 'g', which no recording in the index holds after it "
        "(one outside the proxy may yet decide it, or have decided it)",
    )
    assert ix.got("B")["COMMIT PREPARED 'g'"] == (
        "ok",
        "committed the transaction prepared as 'g', whose PREPARE TRANSACTION is in no "
        "recording in the index (prepared outside the proxy, or its recording is lost, not yet "
        "stored, or did not verify)",
    )
    # a resolution in another database decides nothing of this one's
    ix.add("F", decide(conn(30, "other"), "COMMIT", "g").end())
    assert ix.got("A")[ins(1)][0] == "prepared"
    assert "in no recording" in ix.got("F")["COMMIT PREPARED 'g'"][1]


def test_a_gid_prepared_again_means_the_earlier_one_was_decided_outside_the_recordings():
    ix = Index().add("A", prepare(conn(0), 1, "g").end())
    ix.add("C", prepare(conn(20), 2, "g").end())
    assert ix.got("A")[ins(1)] == (
        "unknown",
        f"prepared for two-phase commit as 'g', then decided by no recorded statement: 'g' was "
        f"prepared again in session C at {at(20 + 9e-6)}, so a COMMIT PREPARED or ROLLBACK "
        "PREPARED outside the recordings ended this one before: whether it committed is not "
        "known",
    )
    assert ix.got("C")[ins(2)][0] == "prepared"


def test_an_unverified_resolution_decides_nothing():
    ix = Index().add("A", prepare(conn(0), 1, "g").end())
    c = decide(conn(10), "COMMIT", "g").end()
    ix.add("B", c, unverified=frozenset(range(1, len(c.s.records))))
    assert ix.got("A")[ins(1)][0] == "prepared"


def test_the_same_session_keeps_derives_words_and_another_sessions_later_prepare_counts():
    c = prepare(conn(0), 1, "g")
    decide(c, "COMMIT", "g").end()
    ix = Index().add("A", c)
    assert ix.got("A")[ins(1)] == (
        "ok",
        "prepared for two-phase commit as 'g', then committed by COMMIT PREPARED later in this "
        "session",
    )
    assert ix.got("A")["COMMIT PREPARED 'g'"][1].startswith(
        "committed the transaction prepared as 'g' earlier in this session (statement 3, at "
    )


def test_a_query_partly_prepared_is_decided_in_its_part():
    sql = f"{ins(1)}; PREPARE TRANSACTION 'z'; {ins(2)}"
    a = conn(0).q(sql, "INSERT 0 1", "PREPARE TRANSACTION", "INSERT 0 1", z=b"I").end()
    ix = Index().add("A", a).add("B", decide(conn(10), "ROLLBACK", "z").end())
    assert ix.got("A")[sql] == (
        "ok",
        f"partly rolled back: statement 1 (INSERT 0 1) prepared as 'z', then undone by ROLLBACK "
        f"PREPARED in session B at {at(10 + 3e-6)}",
    )
    assert ix.con.execute("SELECT gid FROM statements WHERE text = ?", [sql]).fetchone() == ("z",)


def test_the_answer_text_and_the_ocsf_status_follow():
    ix = Index().add("A", prepare(conn(0), 1, "g").end())
    ix.add("A2", prepare(conn(1), 2, "h").end()).add("A3", prepare(conn(2), 3, "p").end())
    ix.add("B", decide(decide(conn(10), "COMMIT", "g"), "ROLLBACK", "h").end())
    status = {e["query_info"]["query_string"]: (e["status_id"], e["status"])
              for e in ocsf.events(ix.con) if e["class_uid"] == 6005}  # fmt: skip
    assert status[ins(1)] == (1, "Success")
    assert status[ins(2)] == (2, "Failure")
    assert status[ins(3)] == (0, "Unknown")
    out = io.StringIO()
    a = audit(ix.con, Filters(session="A"))
    assert "fates" not in a["other_sessions"][0]["statement_rows"][0]
    write_text(a, out)
    assert (
        "-> INSERT 0 1; prepared for two-phase commit as 'g', then committed by COMMIT "
        "PREPARED in session B at " in out.getvalue()
    )


@pytest.mark.parametrize("read_only", [False, True])
def test_an_index_of_the_old_schema_is_refused_with_how_to_rebuild_it(tmp_path, read_only):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE index_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO index_info VALUES ('schema', '2')")
    con.close()
    with pytest.raises(index.SchemaError, match="index schema 2 is not 4: run `pgwitness index "
                                                 "rebuild`"):  # fmt: skip
        index.connect(path, read_only=read_only, wait=0)
    index.connect(tmp_path / "new.duckdb").close()  # a new one gets the current schema
    con = index.connect(tmp_path / "new.duckdb", read_only=True)
    assert json.loads(con.execute("SELECT value FROM index_info").fetchone()[0]) == 4
    con.close()


def test_pairing_alone():
    def e(sid, t, op, gid="g", db="app", verified=True):
        return {"session_id": sid, "n": 1, "k": 0, "at": t, "database": db, "op": op,
                "gid": gid, "verified": verified}  # fmt: skip

    got = twophase.pair([e("P1", 1, "prepare"), e("R1", 2, "commit"), e("P2", 3, "prepare"),
                         e("R2", 4, "rollback"), e("R3", 5, "commit"), e("P3", 6, "prepare"),
                         e("X", 7, "commit", db="other"), e("P4", 8, "prepare", gid="q"),
                         e("R4", 9, "commit", gid="q", verified=False)])  # fmt: skip
    fate = {k[0]: (v["fate"], v["other"] and v["other"]["session_id"]) for k, v in got.items()}
    assert fate == {
        "P1": ("commit", "R1"), "R1": ("resolved", "P1"), "P2": ("rollback", "R2"),
        "R2": ("resolved", "P2"), "R3": ("unmatched", None), "P3": ("pending", None),
        "X": ("unmatched", None), "P4": ("pending", None),
    }  # fmt: skip
