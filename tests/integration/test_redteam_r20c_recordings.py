"""Red-team round 20c: recording integrity and the audit answer, from an insider who can
write to the recording store (a local directory; or S3 without the power to bypass
Object Lock retention: create-only puts of new keys) but holds no signing key.

One real session goes through a recording proxy (a grant, an allowed statement, a
policy denial, a marker statement), the proxy stops, and each test tampers with its own
copy of the store and asks `verify`, `replay` and `audit` (their CLI, in process or as a
subprocess) what happened.

Every probe was an attack that worked (a strict xfail) until session 18 closed it; each
now states in its docstring what was found and how it is stopped (docs/decisions.md,
"Recording integrity, red-team round 20c"). Every precondition is checked with
``require`` (a RuntimeError, so a broken setup fails instead of passing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from recorder import chunks
from recorder.records import Kind, dump_json, encode_record
from recorder.store.local import LocalStore
from recorder.verify import verify_session
from tests.support.tampered_store import MARKER, Copy, reencoded, require
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
FORGED = b"r20c-FORGED"


# --- the attacker's chunks (the recorded scenario: tests/support/tampered_store.py) --


def forged_chunk(
    sid: str, n: int, first_seq: int, recs: list[tuple[int, int, str, bytes]]
) -> bytes:
    """A chunk nobody signed: (t_ns, kind, type, payload) records from ``first_seq``."""
    raw = b"".join(
        encode_record(first_seq + i, t, 2, kind, typ, payload)
        for i, (t, kind, typ, payload) in enumerate(recs)
    )
    return chunks.encode_chunk(sid, n, first_seq, len(recs), raw, zstandard.ZstdCompressor())


def start_payload(copy: Copy, sid: str) -> dict:
    (first,) = [r for r in copy.records(sid, 0) if r.seq == 0]
    require(first.type == "session.start", "record 0 is session.start")
    return first.json()


def listed(answer: dict) -> set[str]:
    return {s["session_id"] for g in answer["grants"] for s in g["sessions"]} | {
        s["session_id"] for s in answer["other_sessions"]
    }


# --- the baseline: every test below starts from this ------------------------------------


def test_baseline_the_untampered_store_verifies_and_audits(copy, recorded):
    rc, out = copy.verify("--all")
    assert rc == 0 and f"{1 + len(copy.controls)} sessions verified, 0 failed" in out, out
    rc, a = copy.audit("--task", copy.task)
    assert rc == 0 and a["verification"]["intact"], a["verification"]
    (g,) = a["grants"]
    assert g["grant_id"] == copy.grant and [s["session_id"] for s in g["sessions"]] == [copy.sid]
    rc, d = copy.audit("--task", copy.task, "--denied", index="denied.duckdb")
    assert [x["text"] for x in d["denials"]] == ["select * from secret.payroll"], d["denials"]
    rc, text = copy.replay(copy.sid)
    assert rc == 0 and MARKER.decode() in text


# --- 1. an unsigned chunk appended to a session rewrites who it belongs to ------------------


def test_an_appended_unsigned_start_does_not_move_a_session_out_of_its_tasks_answer(copy):
    """Found: a second, unsigned session.start appended after the final checkpoint replaced
    the session's grant/agent/task in the index, and the answer for the task said VERIFIED
    without it. Stopped: attribution comes from the first signed session.start only, and
    every tampered recording in the store is named in every answer (exit 1)."""
    sid = copy.sid
    start = start_payload(copy, sid)
    start["meta"] = {**start["meta"], "task": "DECOY", "agent": "decoy-bot", "grant_id": "gr_decoy"}
    n = copy.last_n(sid) + 1
    copy.write(
        copy.path(sid, n, "chunk"),
        forged_chunk(
            sid, n, copy.next_seq(sid), [(0, Kind.META, "session.start", dump_json(start))]
        ),
    )
    rc, out = copy.verify(sid)
    require(rc == 1 and f"extra: {n:010d}.chunk" in out, f"verify names the extra chunk: {out}")
    rc, a = copy.audit("--task", copy.task)
    rc_d, d = copy.audit("--task", copy.task, "--denied", index="denied.duckdb")
    # the auditor asking about the task sees the session, and is told it is not intact
    assert sid in listed(a) and d["denials"] and not a["verification"]["intact"] and rc == 1, (
        f"audit --task {copy.task}: rc {rc}, verification {a['verification']}, "
        f"sessions {listed(a)}, denials {d['denials']}"
    )
    assert [r["session_id"] for r in a["verification"]["not_intact"]] == [sid]


def test_an_appended_unsigned_start_under_object_lock_does_not_move_a_session(copy, s3_server):
    """Found: the same append on S3 under COMPLIANCE Object Lock (one create-only put of a
    new key) moved the session out of its task's answer. Stopped as above."""
    from recorder.audit import index
    from recorder.audit.answer import Filters, audit

    s3 = s3_server.store()
    for key in copy.store.list("sessions/"):  # the proxy's objects, each locked as it puts them
        s3.put(key, copy.store.get(key))
    sid = copy.sid
    start = start_payload(copy, sid)
    start["meta"] = {**start["meta"], "task": "DECOY", "grant_id": "gr_decoy"}
    n = copy.last_n(sid) + 1
    # the insider: one create-only, locked PutObject of a key nobody wrote yet
    s3.put(
        chunks.chunk_key(sid, n),
        forged_chunk(
            sid, n, copy.next_seq(sid), [(0, Kind.META, "session.start", dump_json(start))]
        ),
    )
    r = verify_session(s3, sid, [copy.pub])
    require(
        r.status == "tampered" and {p.kind for p in r.problems} == {"extra", "missing"}, r.summary()
    )
    con = index.connect(copy.tmp / "s3.duckdb")
    try:
        index.Indexer(con, s3, [copy.pub]).update()
        a = audit(con, Filters(task=copy.task))
    finally:
        con.close()
    assert sid in listed(a) and not a["verification"]["intact"], a["verification"]


def test_an_appended_unsigned_grant_event_does_not_move_a_grant_out_of_its_tasks_answer(copy):
    """Found: a forged grant.issued (earliest ts) in an unsigned chunk appended to the
    control stream gave the grant another task (rebuild_grants took agent/task from the
    first event whatever its `verified`). Stopped: a grant's attribution and window come
    from verified events only; the forged one is listed unverified, the grant is not
    intact, and the tampered control stream is named in every answer."""
    (ctl,) = [
        c
        for c in copy.controls
        if any(
            r.type == "grant.issued" for n in range(copy.last_n(c) + 1) for r in copy.records(c, n)
        )
    ]
    n = copy.last_n(ctl) + 2  # a gap: the stream is tampered whether or not it was final
    forged = {
        "grant_id": copy.grant,
        "agent": "decoy-bot",
        "task": "DECOY",
        "by": "nobody",
        "at": "2000-01-01T00:00:00+00:00",
        "expires_at": "2000-01-01T00:00:01+00:00",
    }
    copy.write(
        copy.path(ctl, n, "chunk"),
        forged_chunk(
            ctl, n, copy.next_seq(ctl) + 5, [(0, Kind.CONTROL, "grant.issued", dump_json(forged))]
        ),
    )
    rc, out = copy.verify("--all")
    require(rc == 1 and "TAMPERED" in out, out)
    rc, a = copy.audit("--task", copy.task)
    assert (
        [(g["grant_id"], g["task"], g["intact"]) for g in a["grants"]] == [(copy.grant, copy.task, False)]
        and not a["verification"]["intact"] and rc == 1
    ), f"rc {rc}: grants {[g['grant_id'] for g in a['grants']]}, verification {a['verification']}"
    (g,) = a["grants"]
    assert g["granted_by"] != "nobody" and [e["verified"] for e in g["events"] if e["by"] == "nobody"] == [False]


# --- 2. crash the audit so the auditor gets no answer ----------------------------------------


@pytest.mark.parametrize("kind,typ", [(Kind.DECISION, "allow"), (Kind.META, "session.start")])
def test_a_non_object_json_payload_in_an_appended_chunk_does_not_silence_the_audit(copy, kind, typ):
    """Found: a record payload that is JSON but not an object ([1]) crashed the audit
    (AttributeError): no answer at all. Stopped: Record.json() accepts objects only, so the
    record is kept as `undecodable`, and the recording is reported tampered."""
    sid = copy.sid
    n = copy.last_n(sid) + 1
    copy.write(
        copy.path(sid, n, "chunk"),
        forged_chunk(sid, n, copy.next_seq(sid), [(0, kind, typ, b"[1]")]),
    )
    rc, a = copy.audit("--task", copy.task)
    assert rc == 1 and not a["verification"]["intact"] and sid in listed(a)


def test_a_non_utf8_payload_in_an_appended_chunk_is_flagged_not_fatal(copy):
    """Held: invalid JSON (not UTF-8) in an unverified record is kept as `undecodable`."""
    sid = copy.sid
    n = copy.last_n(sid) + 1
    copy.write(
        copy.path(sid, n, "chunk"),
        forged_chunk(sid, n, copy.next_seq(sid), [(0, Kind.META, "db.denied", b"\xff{")]),
    )
    rc, a = copy.audit()
    assert rc == 1 and [r["session_id"] for r in a["verification"]["not_intact"]] == [sid]
    assert "extra: " in json.dumps(a["verification"]["not_intact"])


def test_a_non_utf8_object_name_does_not_crash_verify(copy):
    """Found: an object name that is not UTF-8 made `verify --all` die with
    UnicodeEncodeError while printing it. Stopped: reports print names that are not plain
    printable ASCII escaped (verify.shown)."""
    d = os.fsencode(str(copy.root / chunks.session_prefix(copy.sid)))
    with open(os.path.join(d, b"\xff.chunk"), "wb") as f:
        f.write(b"x")
    os.chmod(os.path.join(d, b"\xff.chunk"), 0o444)
    # what Python does on an en_US.UTF-8 terminal (this machine has only C.UTF-8, where
    # Python writes surrogates back as raw bytes)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONUTF8": "0"}
    p = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "verify", "--all", *copy.store_args()],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    require(p.returncode != 0, f"verify fails: {p.returncode}")
    assert "Traceback" not in err and "failed" in out and "TAMPERED" in out, (
        out[-1500:] + err[-1500:]
    )
    assert "extra: '\\udcff.chunk'" in out, out[-1500:]


# --- 3. alias object names: verify reads one object, replay another -----------------------


@pytest.mark.parametrize("alias", ["newline", "fullwidth"])
def test_an_alias_name_does_not_let_replay_show_what_verify_did_not_check(copy, alias):
    """Found: chunks.parse_name used `\\d` and `$`, so '0000000001.chunk\\n' and full-width
    digits named chunk 1 too; verify checked the genuine bytes moved to the alias while
    replay read the forged object at the real key ('intact, closed', then the forgery).
    Stopped: names are matched whole in ASCII; any other name in a session directory is
    `extra` (tampered), and the forged object at the real key is `modified`."""
    sid = copy.sid
    # the chunk holding the client's statement (the row that echoes it may be in the next)
    n = min(
        n
        for n in range(copy.last_n(sid) + 1)
        if any(r.direction == 0 and MARKER in r.payload for r in copy.records(sid, n))
    )
    real = copy.path(sid, n, "chunk")
    genuine = real.read_bytes()
    name = (
        real.name + "\n"
        if alias == "newline"
        else real.name.translate({ord(c): 0xFF10 + i for i, c in enumerate("0123456789")})
    )
    assert chunks.parse_name(name) is None, f"{name!r} parses as a chunk"
    copy.write(real.with_name(name), genuine)
    copy.write(real, reencoded(genuine, MARKER, FORGED))
    rc_all, out_all = copy.verify("--all")
    rc, text = copy.run("replay", *copy.store_args(), sid)
    rc_v, head = copy.run(
        "replay", *copy.store_args(), "--public-key", str(copy.tmp / "signing.key.pub"), sid
    )
    forged_shown = FORGED.decode() in text
    require(forged_shown, "replay reads the object at the real key")
    assert rc_all == 1 and rc_v == 1, (
        f"verify --all rc {rc_all} ({out_all.splitlines()[-1]}); replay --public-key rc {rc_v}: "
        f"{head.splitlines()[0]} ... shows {FORGED.decode()!r}"
    )
    assert f"extra: {ascii(name)}" in out_all and f"modified: {real.name}" in out_all, out_all
    assert head.startswith(f"-- verify: {sid}: TAMPERED"), head.splitlines()[0]


def test_a_session_copied_under_an_alias_directory_is_not_counted_intact(copy):
    """Held, and stricter since session 18: 'SID\\n' is no session id (names are matched
    whole, in ASCII), yet LocalStore.sessions() lists every directory of a day, so verify
    reports it (malformed) instead of skipping it, and it cannot pad --expect."""
    src = copy.root / chunks.session_prefix(copy.sid)
    dst = src.with_name(src.name + "\n")
    shutil.copytree(src, dst)
    require(copy.sid + "\n" in copy.store.sessions(), "the alias directory is listed")
    rc, out = copy.verify("--all", "--expect", "2")
    assert rc == 1 and "not a pgwitness session id" in out and "1 failed" in out, out
    assert "ANCHOR: --expect" in out, out


# --- 4. the external anchors against a session replaced by an unattested stub -----------------


def _delete_session_and_its_index_entries(copy: Copy) -> None:
    """Delete a closed session and the control stream's tail from the chunk that indexes it
    (the documented 'needs an external anchor' case)."""
    sid = copy.sid
    for key in copy.store.list(chunks.session_prefix(sid)):
        copy.delete(copy.root / key)
    (copy.root / chunks.session_prefix(sid)).rmdir()
    hits = [
        (c, n)
        for c in copy.controls
        for n in range(copy.last_n(c) + 1)
        if any(
            r.kind == Kind.CONTROL
            and r.type.startswith("session.")
            and r.json().get("session") == sid
            for r in copy.records(c, n)
        )
    ]
    require(hits, "the control stream indexes the session")
    ctl, first = min(hits)
    require(first > 0, "the grant event precedes the index entry")
    for n in range(first, copy.last_n(ctl) + 1):
        for kind in ("chunk", "ckpt"):
            if copy.path(ctl, n, kind).exists():
                copy.delete(copy.path(ctl, n, kind))


def test_expect_sessions_catches_a_session_deleted_with_its_index_entries(copy):
    """Held (the documented defence): the anchor names the session, the store lacks it."""
    _delete_session_and_its_index_entries(copy)
    anchor = copy.tmp / "expected.txt"
    anchor.write_text(copy.sid + "\n")
    rc, out = copy.verify("--all", "--expect-sessions", str(anchor))
    assert rc == 1 and f"ANCHOR: {copy.sid}: listed in the anchor, not in the store" in out, out


def _stub(sid: str, kind: str) -> bytes:
    """An unsigned chunk 0: garbage, or a well-formed chunk (what verify cannot reject)."""
    if kind == "garbage":
        return b"not a chunk" + b"\x00" * 53
    start = {"format": 1, "session": sid, "wall_ns": 1, "meta": {"agent": "a", "task": "t"}}
    return forged_chunk(sid, 0, 0, [(0, Kind.META, "session.start", dump_json(start))])


STUBS = pytest.mark.parametrize("stub", ["garbage", "well-formed"])


@STUBS
def test_an_unattested_stub_does_not_satisfy_the_anchors(copy, stub):
    """Found: after deleting a session (and the control-stream tail that indexes it), one
    unsigned '0000000000.chunk' in its directory made it 'intact but OPEN, attested
    through chunk None', and `verify --all --expect-sessions F --expect 1` exited 0.
    Stopped: an unattested last chunk that is not a chunk of its place is `malformed`
    (tampered), and the anchors count only sessions with a signed chunk."""
    _delete_session_and_its_index_entries(copy)
    copy.write(copy.path(copy.sid, 0, "chunk"), _stub(copy.sid, stub))
    anchor = copy.tmp / "expected.txt"
    anchor.write_text(copy.sid + "\n")
    rc, out = copy.verify("--all", "--expect-sessions", str(anchor), "--expect", "1")
    if stub == "garbage":
        assert f"{copy.sid}: TAMPERED" in out and "malformed: 0000000000.chunk" in out, out
    else:
        require(f"{copy.sid}: intact but OPEN, attested through chunk None" in out, out)
    assert rc == 1 and f"ANCHOR: {copy.sid}: listed in the anchor; the store holds no signed" in out, out
    assert "ANCHOR: --expect" in out, out


@STUBS
def test_a_fabricated_stub_session_does_not_pad_expect(copy, stub):
    """Found: --expect N counted every session directory that was not empty, so a made-up
    session id holding one unsigned chunk padded the count after a real session was
    deleted. Stopped: only sessions with a signed chunk count (Report.recorded)."""
    _delete_session_and_its_index_entries(copy)
    fake = chunks.new_session_id()
    copy.write(copy.path(fake, 0, "chunk"), _stub(fake, stub))
    rc, out = copy.verify("--all", "--expect", "1")
    if stub == "well-formed":
        require(f"{fake}: intact but OPEN" in out, out)
    assert rc == 1 and "ANCHOR: --expect: 1 sessions expected, the store holds 0" in out, out


# --- 5. held: the closed session's tail replaced by an unattested forgery -------------------


def test_a_forged_unattested_final_chunk_is_truncation_to_verify_all(copy):
    """Delete the final checkpoint and replace the final chunk (the one holding the end)
    with a forged one: alone the session reads 'open' with a note, and replay shows the
    forgery; `verify --all` and `audit` use the control stream's index: truncated."""
    sid = copy.sid
    n = copy.last_n(sid)
    copy.delete(copy.path(sid, n, "ckpt"))
    first_seq = copy.records(sid, n)[0].seq
    copy.write(
        copy.path(sid, n, "chunk"),
        forged_chunk(
            sid, n, first_seq, [(0, Kind.META, "session.end", dump_json({"cause": "forged"}))]
        ),
    )
    rc, out = copy.verify(sid)
    require(rc == 0 and "OPEN" in out and "not attested" in out, out)
    rc, out = copy.verify("--all")
    assert rc == 1 and f"truncated: {n:010d}.ckpt" in out, out
    rc, a = copy.audit("--task", copy.task)
    assert rc == 1 and [r["session_id"] for r in a["verification"]["not_intact"]] == [sid]


# --- 6. held: the spool, edited before upload ---------------------------------------------


def test_an_edited_spool_batch_uploads_as_tampered_not_as_genuine(tmp_path):
    """The store is down, so sealed objects wait in the spool; an insider with access to
    the spool rewrites a chunk there (same session, position and seqs, a statement's text
    changed) and adds an entry whose key climbs out of the store. The next start uploads
    the orphaned slot: the rewritten chunk is `modified` (its checkpoint signed the
    original bytes), and nothing is written outside the store."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from devtools import testing
    from recorder.config import RecorderConfig
    from recorder.spool import decode_batch, encode_batch
    from recorder.writer import Recorder

    key = Ed25519PrivateKey.generate()
    spool = tmp_path / "spool"
    (tmp_path / "broken").write_text("a file where the store directory should be")
    cfg = dict(spool_dir=str(spool), chunk_max_seconds=60, fsync=False, upload_process=False)
    rec = Recorder(RecorderConfig(store=str(tmp_path / "broken"), **cfg), signing_key=key)
    rec.start()
    s = rec.open_session({"agent": "a", "task": "t"})
    s.wire("c2s", testing.query(f"select '{MARKER.decode()}'"))
    s.decision({"rule": "scope.read"}, denied=False)
    s.wire("s2c", testing.command_complete("SELECT 1") + testing.ready())
    s.end("client-exit")
    rec.close(timeout=1.0)
    batches = sorted(spool.glob("slot-*/*.spool"))
    require(batches, "the objects wait in the spool")
    edited = None
    for path in batches:
        entries = decode_batch(path.read_bytes())
        for i, (k, data) in enumerate(entries):
            if (
                k.endswith(".chunk")
                and s.id in k
                and any(MARKER in r.payload for r in chunks.decode_chunk(data)[1])
            ):
                entries[i] = (k, reencoded(data, MARKER, FORGED))
                edited = k
        if edited and not any(k.startswith("..") for k, _ in entries):
            entries.append(("../../escaped.chunk", b"planted through the spool"))
        path.write_bytes(encode_batch(entries))
    require(edited, "the marker chunk is in a spool batch")

    store = LocalStore(tmp_path / "store")
    rec2 = Recorder(RecorderConfig(store=str(store.root), **cfg), signing_key=key)
    rec2.start()
    wait_for(lambda: store.list(chunks.session_prefix(s.id)), 10, "the spool to be uploaded")
    rec2.close(timeout=3.0)
    r = verify_session(store, s.id, key.public_key())
    assert r.status == "tampered", r.summary()
    assert [(p.kind, p.where) for p in r.problems] == [("modified", edited.rsplit("/", 1)[1])]
    assert not list(tmp_path.rglob("escaped.chunk"))


# --- 7. a decompression bomb for the reader of unverified chunks ---------------------------

AUDIT_MEMORY = 1536 << 20  # address space the auditor's process gets in this test


def _audit_limited(copy: Copy, index: str) -> subprocess.CompletedProcess:
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (AUDIT_MEMORY, AUDIT_MEMORY))

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "audit",
            *copy.store_args(),
            "--index",
            str(copy.tmp / index),
            "--format",
            "json",
        ],
        preexec_fn=limit,
        capture_output=True,
        cwd=ROOT,
        timeout=180,
    )


def test_a_decompression_bomb_in_an_appended_chunk_does_not_silence_the_audit(copy):
    """Found: a 64 KiB unsigned chunk declaring 2 GiB of zeros was decoded whole by the
    index (every chunk of a tampered recording was), and the audit died of MemoryError.
    Stopped: unverified chunks are decoded within a budget (index.UNVERIFIED_BUDGET); one
    over it is listed as not read."""
    base = _audit_limited(copy, "base.duckdb")
    require(
        base.returncode == 0,
        f"the audit answers in {AUDIT_MEMORY >> 20} MiB: "
        + base.stderr.decode(errors="replace")[-800:],
    )
    sid = copy.sid
    n = copy.last_n(sid) + 1
    size = chunks.MAX_RAW_LEN
    zc = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    body = b"".join(zc.compress(bytes(1 << 20)) for _ in range(size >> 20)) + zc.flush()
    sid_b = sid.encode()
    header = chunks.CHUNK_HEADER.pack(
        chunks.CHUNK_MAGIC, 1, 1, 0, n, copy.next_seq(sid), size // 24, size, len(sid_b)
    )
    copy.write(copy.path(sid, n, "chunk"), header + sid_b + body)
    require(copy.path(sid, n, "chunk").stat().st_size < 1 << 20, "the object is small")
    p = _audit_limited(copy, "bomb.duckdb")
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1 and "Traceback" not in err, err[-800:]
    v = json.loads(p.stdout)["verification"]
    assert not v["intact"] and "not read: " in json.dumps(v["not_intact"]), v
