"""verify_session: recompute the chain, check every signature and every object's lock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import chunks
from .records import Kind, Record
from .signing import Checkpoint, CheckpointError, State, decode_checkpoint, key_id
from .store import ObjectMissing, Store, StoreError

# Problem kinds, one word each so scripts can match them.
MODIFIED = "modified"  # bytes differ from what the checkpoint signed
MISSING = "missing"  # a chunk, checkpoint or records are gone
REORDERED = "reordered"  # an object sits at another position/session than it was sealed for
EXTRA = "extra"  # objects nobody sealed: after the final checkpoint, unknown names, no ckpt
BAD_SIGNATURE = "bad-signature"  # not signed by a trusted key, or the signature fails
MALFORMED = "malformed"  # does not decode
UNLOCKED = "unlocked"  # storage does not protect the object (no COMPLIANCE lock / writable)
UNREADABLE = "unreadable"  # the store failed; nothing proven either way
TRUNCATED = "truncated"  # a control stream attests more than the session still has
PLANTED = "planted"  # an object pgwitness did not write sits at its key; the proxy's is aside
ATTEMPT = "attempt"  # a delete marker or a later version: a deletion or overwrite was tried
ANCHOR = "anchor"  # the store disagrees with an external anchor (--expect, --anchor)


def shown(name: str) -> str:
    """A store key or name as a report prints it: itself if it is plain printable ASCII,
    else its escaped repr (a non-UTF-8 file name, a newline or full-width digits in it)."""
    return name if name.isascii() and name.isprintable() else ascii(name)


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {shown(self.where)}: {self.detail}"


@dataclass
class Report:
    session_id: str
    status: str = "empty"  # "closed" | "open" | "tampered" | "empty"
    chunks: int = 0
    records: int = 0
    attested_through: int | None = None  # every chunk 0..N verified
    last_chain: bytes | None = None  # chain value of checkpoint `attested_through`
    first_time_ns: int | None = None
    last_time_ns: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # observations that are not failures
    control: bool = False  # a recorder's control stream (grant events, session index)
    chains: dict[int, str] = field(default_factory=dict, repr=False)  # control streams: n -> chain

    @property
    def ok(self) -> bool:
        return self.status in ("closed", "open")

    @property
    def recorded(self) -> bool:
        """At least one signed chunk verified: what an external anchor may count. An open
        session with nothing attested yet (or a stub of unsigned objects) is not evidence."""
        return self.status != "empty" and self.attested_through is not None

    def summary(self) -> str:
        sid = shown(self.session_id)
        if self.status == "closed":
            return f"{sid}: intact, closed ({self.chunks} chunks, {self.records} records)"
        if self.status == "open":
            text = (f"{sid}: intact but OPEN, attested through chunk "
                    f"{self.attested_through} ({self.records} records; live, crashed or truncated)")
            return "\n".join([text, *(f"  note: {n}" for n in self.notes)])
        if self.status == "empty":
            return f"{sid}: NOT FOUND (no objects)"
        lines = [f"{sid}: TAMPERED ({len(self.problems)} problems; attested through "
                 f"chunk {self.attested_through if self.attested_through is not None else 'none'})"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _trusted(public_key) -> dict[bytes, Ed25519PublicKey]:
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    return {key_id(k): k for k in keys}


def verify_session(store: Store, session_id: str,
                   public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey], *,
                   check_locks: bool = True, collect: Callable[[Record], None] | None = None,
                   resume: tuple[int, bytes, int] | None = None) -> Report:
    """Verify one session against the store; never raises for anything found in the store.

    `collect` receives every record of every chunk that verified. `resume` = (n, chain_n,
    next_seq) from an earlier verification of this session continues after chunk n (the
    audit index uses it for growing control streams; a full verify never does).
    """
    report = Report(session_id)
    trusted = _trusted(public_key)
    add = report.problems.append
    try:
        prefix = chunks.session_prefix(session_id)
    except ValueError as e:
        add(Problem(MALFORMED, session_id, str(e)))
        report.status = "tampered"
        return report
    try:
        keys = store.list(prefix)
    except StoreError as e:
        add(Problem(UNREADABLE, prefix, str(e)))
        report.status = "tampered"
        return report
    if not keys:
        return report

    present: dict[tuple[int, str], str] = {}
    conflicts: dict[tuple[int, str], list[str]] = {}  # the writer's copies of planted keys
    for key in keys:
        parsed = chunks.parse_name(key[len(prefix) :])
        if parsed is not None:
            present[parsed] = key
        elif (planted := chunks.parse_conflict_name(key[len(prefix) :])) is not None:
            conflicts.setdefault(planted, []).append(key)
        else:
            add(Problem(EXTRA, key[len(prefix) :], "object name is not <n>.chunk or <n>.ckpt"))
    used: set[str] = set()
    ns = {n for n, _ in present}
    last = max(ns) if ns else -1
    name = lambda n, kind: f"{n:0{chunks.N_DIGITS}d}.{kind}"  # noqa: E731

    prev_chain, next_seq, start = chunks.genesis(session_id), 0, 0
    if resume is not None:
        start, prev_chain, next_seq = resume[0] + 1, resume[1], resume[2]
        report.attested_through, report.last_chain = resume[0], resume[1]
    synced = True  # prev_chain/next_seq come from a verified predecessor (or genesis)
    contiguous = True
    final_at: int | None = None
    for n in range(start, last + 1):
        good = False
        records: list[Record] = []
        has_chunk, has_ckpt = (n, "chunk") in present, (n, "ckpt") in present
        if not has_chunk and not has_ckpt:
            add(Problem(MISSING, name(n, "chunk"), f"chunk {n} and its checkpoint are gone"))
            contiguous = synced = False
            continue
        if final_at is not None:
            add(Problem(EXTRA, name(n, "chunk" if has_chunk else "ckpt"),
                        f"object after the final checkpoint {final_at}"))
        elif n == last and has_chunk and not has_ckpt:
            # the writer stores chunk n, then its checkpoint: a live session (or one whose
            # writer stopped between the two puts) ends this way. Unattested, not tampered,
            # as long as it is a chunk the writer could have stored here.
            wrong = _unattested_tail(store, present[(n, "chunk")], session_id, n,
                                     next_seq if synced else None)
            if wrong:
                add(Problem(MALFORMED, name(n, "chunk"), f"stored without a checkpoint and {wrong}"))
            else:
                report.notes.append(f"chunk {n} is stored but its checkpoint is not (yet): "
                                    "its content is not attested")
            break
        found: list[Problem] = []
        ckpt = _load_ckpt(store, present.get((n, "ckpt")), n, session_id, trusted, found.append)
        if ckpt is None:
            for alt in conflicts.get((n, "ckpt"), ()):
                ckpt = _load_ckpt(store, alt, n, session_id, trusted, lambda p: None)
                if ckpt is not None:
                    used.add(alt)
                    found = [Problem(PLANTED, name(n, "ckpt"), "not written by pgwitness; the "
                                     f"signed checkpoint is at {alt[len(prefix):]}")]
                    break
        for problem in found:
            add(problem)
        blob = _load(store, present.get((n, "chunk")), add)
        if ckpt is not None and blob is not None and hashlib.sha256(blob).digest() != ckpt.chunk_sha256:
            for alt in conflicts.get((n, "chunk"), ()):
                other = _load(store, alt, add)
                if other is not None and hashlib.sha256(other).digest() == ckpt.chunk_sha256:
                    used.add(alt)
                    add(Problem(PLANTED, name(n, "chunk"), "not written by pgwitness; the "
                                f"signed chunk is at {alt[len(prefix):]}"))
                    blob = other
                    break
        if not has_ckpt:
            add(Problem(MISSING, name(n, "ckpt"), f"checkpoint {n} is gone; chunk {n} unattested"))
        if not has_chunk:
            add(Problem(MISSING, name(n, "chunk"), f"chunk {n} is gone (its checkpoint remains)"))
        if ckpt is not None:
            report.chunks += 1
            report.first_time_ns = report.first_time_ns or ckpt.time_ns
            report.last_time_ns = ckpt.time_ns
            if ckpt.state == State.FINAL and final_at is None:
                final_at = n
        if ckpt is not None and blob is not None:
            digest = hashlib.sha256(blob).digest()
            if digest != ckpt.chunk_sha256:
                _explain_mismatch(store, blob, n, session_id, name(n, "chunk"), trusted, add)
            else:
                good, records = _check_records(blob, ckpt, next_seq if synced else None,
                                               name(n, "chunk"), add, report)
            expect = chunks.chain_next(prev_chain, n, ckpt.chunk_sha256)
            if synced and ckpt.chain != expect:
                add(Problem(REORDERED, name(n, "ckpt"),
                            "chain does not follow from checkpoint "
                            f"{n - 1 if n else 'genesis'}: chunks removed, swapped or replaced"))
                good = False
        if ckpt is not None:
            # continue from the signed values, so one tampering is reported once
            prev_chain, next_seq, synced = ckpt.chain, ckpt.next_seq, True
        else:
            synced = False
        if good and n == 0 and records and records[0].type == "session.start":
            try:
                report.control = records[0].json().get("meta", {}).get("stream") == "control"
            except (ValueError, AttributeError):
                pass
        if good and ckpt is not None and report.control:  # good: ckpt was read
            report.chains[n] = ckpt.chain.hex()
        if good and collect is not None:
            for rec in records:
                collect(rec)
        if good and contiguous and ckpt is not None:
            report.attested_through = n
            report.last_chain = ckpt.chain
        else:
            contiguous = False

    for group in conflicts.values():
        for alt in group:
            if alt not in used:
                report.notes.append(f"{alt[len(prefix):]}: a conflict copy that was not needed")

    if check_locks:
        history = getattr(store, "history", None)
        for key in keys:
            if start and (chunks.parse_name(key[len(prefix):]) or (start,))[0] < start:
                continue
            try:
                issues = store.check(key)
            except StoreError as e:
                issues = [str(e)]
            for issue in issues:
                add(Problem(UNLOCKED, key[len(prefix) :], issue))
            for attempt in history(key) if history is not None else ():
                add(Problem(ATTEMPT, key[len(prefix) :], attempt))

    if report.problems:
        report.status = "tampered"
    elif final_at is not None:
        report.status = "closed"
    else:
        report.status = "open"
    return report


def _unattested_tail(store: Store, key: str, session_id: str, n: int,
                     next_seq: int | None) -> str | None:
    """Why the unattested last chunk cannot be the writer's (its header does not decode or
    names another place or record range), or None. Only the header is read: it is unsigned."""
    try:
        h = chunks.decode_chunk_header(store.get(key))
    except chunks.ChunkError as e:
        return f"not a chunk ({e})"
    except StoreError as e:
        return f"unreadable ({e})"
    if h.session_id != session_id or h.n != n:
        return f"its header names chunk {h.n} of session {shown(h.session_id)}"
    if next_seq is not None and h.first_seq != next_seq:
        return f"its records start at {h.first_seq}, not {next_seq}"
    return None


def _short(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _load(store: Store, key: str | None, add) -> bytes | None:
    if key is None:
        return None
    try:
        return store.get(key)
    except ObjectMissing:
        add(Problem(MISSING, _short(key), "listed but cannot be read"))
    except StoreError as e:
        add(Problem(UNREADABLE, _short(key), str(e)))
    return None


def _load_ckpt(store, key, n, session_id, trusted, add) -> Checkpoint | None:
    data = _load(store, key, add)
    if data is None:
        return None
    try:
        ckpt = decode_checkpoint(data)
    except CheckpointError as e:
        add(Problem(MALFORMED, _short(key), f"checkpoint: {e}"))
        return None
    pk = trusted.get(ckpt.key_id)
    if pk is None:
        add(Problem(BAD_SIGNATURE, _short(key), f"signed by untrusted key id {ckpt.key_id.hex()}"))
        return None
    if not ckpt.verify(pk):
        add(Problem(BAD_SIGNATURE, _short(key), "signature does not verify"))
        return None
    if ckpt.session_id != session_id or ckpt.n != n:
        add(Problem(REORDERED, _short(key),
                    f"signed checkpoint is for session {ckpt.session_id} chunk {ckpt.n}"))
        return None
    return ckpt


def _explain_mismatch(store, blob: bytes, n: int, session_id: str, where: str, trusted,
                      add) -> None:
    """Reordered only if the chunk is one pgwitness signed for another place (its header
    names it and that place's checkpoint signs its hash); any other difference, a byte
    flipped in the header included, is a modification."""
    try:
        h = chunks.decode_chunk_header(blob)
    except chunks.ChunkError:
        h = None
    if h is not None and (h.session_id != session_id or h.n != n) and _signed_for(
            store, blob, h.session_id, h.n, trusted):
        add(Problem(REORDERED, where, f"holds chunk {h.n} of session {h.session_id}"))
    else:
        add(Problem(MODIFIED, where, "content differs from the signed hash"))


def _signed_for(store, blob: bytes, session_id: str, n: int, trusted) -> bool:
    try:
        ckpt = decode_checkpoint(store.get(chunks.ckpt_key(session_id, n)))
    except (ValueError, StoreError, CheckpointError):
        return False
    pk = trusted.get(ckpt.key_id)
    return (pk is not None and ckpt.verify(pk) and ckpt.session_id == session_id
            and ckpt.n == n and ckpt.chunk_sha256 == hashlib.sha256(blob).digest())


def _check_records(blob: bytes, ckpt: Checkpoint, next_seq: int | None, where: str, add,
                   report) -> tuple[bool, list[Record]]:
    try:
        h, records = chunks.decode_chunk(blob)
    except chunks.ChunkError as e:
        add(Problem(MALFORMED, where, f"signed chunk does not decode: {e}"))
        return False, []
    ok = True
    if h.session_id != ckpt.session_id or h.n != ckpt.n:
        add(Problem(REORDERED, where, f"holds chunk {h.n} of session {h.session_id}"))
        ok = False
    if h.first_seq != ckpt.first_seq or h.first_seq + h.record_count != ckpt.next_seq:
        add(Problem(MALFORMED, where, "record range differs from the checkpoint"))
        ok = False
    if next_seq is not None and h.first_seq != next_seq:
        add(Problem(MISSING, where, f"records start at {h.first_seq}, expected {next_seq}"))
        ok = False
    report.records += len(records)
    return ok, records


def verify_all(store: Store, public_key, *, workers: int = 8, **kw) -> list[Report]:
    """Every session in the store, cross-checked against the control streams' session index.

    Each recorder process indexes in its (signed, chained) control stream every session it
    opened and, once sealed, its final chunk and chain. A session the index knows but the
    store does not was deleted; a closed session that no longer ends where the index says
    was truncated — both invisible to verify_session alone.
    """
    opened: dict[str, str] = {}
    closed: dict[str, dict] = {}

    def collect(r: Record) -> None:
        if r.kind != Kind.CONTROL or r.type not in ("session.opened", "session.closed"):
            return
        try:
            p = r.json()
            sid = str(p["session"])
        except (ValueError, KeyError, TypeError):
            return
        if r.type == "session.opened":
            opened[sid] = sid
        else:
            closed[sid] = p

    sids = store.sessions()
    with ThreadPoolExecutor(max(1, workers)) as pool:  # S3 round trips dominate
        done = pool.map(lambda sid: verify_session(store, sid, public_key, collect=collect, **kw),
                        sids)
        reports = dict(zip(sids, done, strict=True))
    for sid, p in closed.items():
        r = reports.get(sid)
        if r is None:
            r = reports[sid] = Report(sid, status="tampered")
            r.problems.append(Problem(MISSING, sid, "session deleted: the control stream "
                                      f"records it closed at chunk {p.get('final_chunk')}"))
            continue
        if r.status == "tampered":
            continue
        if (r.status != "closed" or r.attested_through != p.get("final_chunk")
                or r.last_chain is None or r.last_chain.hex() != p.get("chain")):
            where = f"{p.get('final_chunk', 0):0{chunks.N_DIGITS}d}.ckpt"
            r.problems.append(Problem(
                TRUNCATED, where, f"the control stream records it closed at chunk "
                f"{p.get('final_chunk')}; the store attests it only through chunk "
                f"{r.attested_through} ({r.status})"))
            r.status = "tampered"
    for sid in opened:
        if sid not in reports:
            r = reports[sid] = Report(sid, status="tampered")
            r.problems.append(Problem(MISSING, sid, "session deleted: the control stream "
                                      "records it opened"))
    return [reports[sid] for sid in sorted(reports)]


# --- external anchors ------------------------------------------------------------------

_HEAD_RE = re.compile(
    r'"?stream"?\s*[=:]\s*"(?P<stream>[^"]+)",?\s+"?n"?\s*[=:]\s*(?P<n>[0-9]+),?\s+'
    r'"?chain"?\s*[=:]\s*"(?P<chain>[0-9a-f]{64})"', re.ASCII)


def parse_heads(text: str) -> dict[str, tuple[int, str]]:
    """Control-stream heads from proxy log lines (text or JSON) that say "control stream
    head": per stream, the highest checkpoint number and its chain."""
    heads: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        if "control stream head" not in line:
            continue
        m = _HEAD_RE.search(line)
        if m:
            sid, n = m.group("stream"), int(m.group("n"))
            if sid not in heads or heads[sid][0] < n:
                heads[sid] = (n, m.group("chain"))
    return heads


def check_anchors(reports: list[Report], *, expect: int | None = None,
                  sessions: Iterable[str] = (), heads: dict[str, tuple[int, str]] | None = None,
                  ) -> list[Problem]:
    """What the store cannot prove about itself, against what was kept elsewhere: at least
    `expect` recorded sessions (control streams not counted), every session id in
    `sessions`, and every control stream attested through its logged head with that chain.
    Catches deletions the store allowed, a whole session with its control stream included."""
    problems: list[Problem] = []
    by_id = {r.session_id: r for r in reports}
    recorded = sum(1 for r in reports if not r.control and r.recorded)
    if expect is not None and recorded < expect:
        problems.append(Problem(ANCHOR, "--expect", f"{expect} sessions expected, the store "
                                f"holds {recorded} with a signed chunk: sessions were deleted "
                                "or never stored"))
    for sid in sessions:
        r = by_id.get(sid)
        if r is None or r.status == "empty":
            problems.append(Problem(ANCHOR, sid, "listed in the anchor, not in the store"))
        elif not r.recorded:
            problems.append(Problem(ANCHOR, sid, "listed in the anchor; the store holds no "
                                    "signed chunk of it (deleted, or replaced by a stub)"))
    for sid, (n, chain) in sorted((heads or {}).items()):
        r = by_id.get(sid)
        if r is None or r.status == "empty":
            problems.append(Problem(ANCHOR, sid, f"control stream logged through checkpoint {n} "
                                    "is not in the store (deleted)"))
        elif r.chains.get(n) != chain:
            problems.append(Problem(ANCHOR, sid, f"control stream logged through checkpoint {n}; "
                                    f"the store attests it through {r.attested_through}"
                                    + (" with another chain" if n in r.chains else "")))
    return problems
