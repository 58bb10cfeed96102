"""Drives the hot path (``common.compiled.MODULES``) through random sessions, without sockets,
and prints everything observable as JSON: what each feed wrote to either side (or raised),
what was recorded, and the relay's state after each step. Bytes go in where the event loop
puts them, ``proxy.splice.Splice``, with its transports and callbacks recorded.

    python -m tests.support.hot_path_driver SESSIONS SEED

tests/unit/test_compiled.py runs it twice, once compiled and once with
``PGWITNESS_PURE_PYTHON=1``, and requires the same output: the sources are the reference.
The server's side is plausible frames in random order (not a faithful server): both paths
must agree on whatever arrives, errors included.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import compiled
from devtools import testing as t
from policy import StatementPolicy, parse_scopes
from policy.engine import SharedClassifications
from proxy.denials import Denials
from proxy.relay import Relay
from proxy.splice import Splice
from recorder import Recorder, RecorderConfig, iter_records, verify_session

SCOPES = "read:public.pgbench_accounts,public.pgbench_branches write:public.pgbench_history"
NONCE = "0123456789abcdef"  # the denials' marker, fixed so that both runs match


class Sink:
    """A SessionSink that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list = []

    def wire(self, direction: str, data: bytes) -> None:
        self.items.append(["wire", direction, bytes(data).hex()])

    def decision_json(self, body: bytes, denied: bool) -> None:
        self.items.append(["decision", body.decode(), denied])

    def event(self, kind: str, payload: dict) -> None:
        self.items.append(["event", kind, payload])


class Flow:
    """The FlowControl a Splice asks about frame memory: keeps what it is asked."""

    def __init__(self, calls: list) -> None:
        self.frame_reserved = 0
        self.calls = calls

    def frame_memory(self, wanted: int) -> None:
        self.calls.append(["frame_memory", wanted])
        self.frame_reserved = wanted if wanted > 256 * 1024 else 0


class Health:
    def __init__(self) -> None:
        self.healthy = True


BIG = t.query("SELECT abalance FROM pgbench_accounts WHERE aid = 1 -- " + "x" * 300_000)


def _client_frames(rng: random.Random) -> list[bytes]:
    if rng.random() < 0.02:
        return [BIG]  # read whole in pieces: the splice asks for frame memory
    aid = rng.randint(-5, 10**7)
    name = rng.choice(["", "s1", "P0_1"])
    choices = [
        lambda: t.query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}"),
        lambda: t.query(f"select * from pgbench_accounts where aid in ({aid}, {aid + 1});"),
        lambda: t.query(f"INSERT INTO pgbench_history (aid, delta) VALUES ({aid}, {aid % 7})"),
        lambda: t.query("SELECT * FROM payroll"),  # denied: not granted
        lambda: t.query(f"UPDATE pgbench_accounts SET abalance = {aid}"),  # denied: read only
        lambda: t.query(f"SELECT {aid}; DELETE FROM pgbench_history"),  # one of two denied
        lambda: t.query(rng.choice(["BEGIN", "COMMIT", "ROLLBACK", "", ";", "SHOW search_path"])),
        lambda: t.query("SELEC garbage (("),  # unparseable: denied
        lambda: t.query("CREATE TABLE x (a int)"),  # DDL: denied, taints the upstream
        lambda: t.parse("SELECT abalance FROM pgbench_accounts WHERE aid = $1", name),
        lambda: t.parse("SELECT secret FROM payroll WHERE id = $1", name),
        lambda: t.bind([str(aid).encode(), None], name),
        lambda: t.frame(b"D", b"S" + name.encode() + b"\x00"),
        lambda: t.execute(),
        lambda: t.sync(),
        lambda: t.frame(b"H", b""),
        lambda: t.frame(b"C", b"S" + name.encode() + b"\x00"),
        lambda: t.frame(b"F", b"\x00\x00\x04\xd2\x00\x00\x00\x00\x00\x00"),
        lambda: t.frame(b"d", rng.randbytes(rng.randint(0, 40))),
        lambda: t.frame(b"c", b""),
        lambda: t.frame(b"X", b"") if rng.random() < 0.3 else t.sync(),  # Terminate
        lambda: b"Q\x00\x00\x00\x02" if rng.random() < 0.2 else t.sync(),  # malformed
    ]
    return [rng.choice(choices)() for _ in range(rng.randint(1, 5))]


def _server_frames(rng: random.Random) -> list[bytes]:
    marker = f"pgwitness-deny-{NONCE}"
    choices = [
        lambda: t.frame(b"1", b""),
        lambda: t.frame(b"2", b""),
        lambda: t.frame(b"3", b""),
        lambda: t.frame(b"n", b""),
        lambda: t.row_description("abalance"),
        lambda: t.data_row(str(rng.randint(0, 99)), None),
        lambda: t.command_complete(rng.choice(["SELECT 1", "BEGIN", "COMMIT", "INSERT 0 1"])),
        lambda: t.ready(rng.choice([b"I", b"I", b"T", b"E"])),
        lambda: t.error("42P01", "relation does not exist"),
        lambda: t.error("42501", "permission denied for table pgbench_history"),
        lambda: t.frame(b"E", b"SERROR\x00VERROR\x00C42501\x00Mdenied\x00s" + marker.encode() + b"\x00\x00"),
        lambda: t.notice(f"pgw_{NONCE} DEBUG"),
        lambda: t.notice("hello"),
        lambda: t.frame(b"S", b"application_name\x00psql\x00"),
        lambda: t.frame(b"S", b"client_encoding\x00" + rng.choice([b"UTF8", b"LATIN1", b"UTF8", b"SJIS"]) + b"\x00"),
        lambda: t.frame(b"G", b"\x00\x00\x00"),
        lambda: t.frame(b"s", b""),
        lambda: t.frame(b"I", b""),
        lambda: t.frame(b"A", b"\x00\x00\x00\x01chan\x00payload\x00"),
    ]
    return [rng.choice(choices)() for _ in range(rng.randint(1, 6))]


def _splits(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 2)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _state(relay: Relay) -> list:
    c = relay.counters
    return [
        relay.tx_status.decode("latin-1"), relay.terminated, relay.upstream_fatal, relay.busy,
        relay.upstream_reusable, relay.has_held, relay.mid_frame_to_client, relay.mid_frame_to_server,
        [c.bytes_c2s, c.bytes_s2c, c.msgs_c2s, c.msgs_s2c, c.allowed, c.denied, c.would_deny, c.db_denied],
    ]  # fmt: skip


def session(rng: random.Random, shared: SharedClassifications, rec: Recorder) -> list:
    kind = rng.choice(["enforce", "enforce", "dry-run", "pass", "counts"])
    recorded = rng.random() < 0.25  # through the real recorder, read back at the end
    policy = None
    if kind != "pass":
        policy = StatementPolicy(
            parse_scopes(SCOPES), task="EQ-1", enforce=kind != "dry-run", shared=shared
        )
    sink = Sink()
    srec = rec.open_session({"agent": "eq", "kind": kind}) if recorded else None
    health = Health()
    relay = Relay(
        policy=policy, recorder=srec or sink, health=health, grant_id="g-eq",
        record_rows="counts" if kind == "counts" else "full",
    )  # fmt: skip
    relay.denials = Denials(NONCE)
    steps: list = [kind]
    writes: list = []  # what the splice wrote and called, in order, since the last step
    splice = Splice(
        relay,
        to_server=lambda b: writes.append(["to_server", b.hex()]),
        to_client=lambda b: writes.append(["to_client", b.hex()]),
        flow=Flow(writes),
        client_error=lambda e: writes.append(["client_error", type(e).__name__, e.message, e.sqlstate]),
        server_error=lambda e: writes.append(["server_error", type(e).__name__, e.message, e.sqlstate]),
        terminated=lambda: writes.append(["terminated"]),
        held=lambda: writes.append(["held"]),
    )  # fmt: skip
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.03:
            health.healthy = not health.healthy
        ended = False  # a protocol error: the connection would end the session here
        try:
            side = "c" if rng.random() < 0.5 else "s"
            data = b"".join(_client_frames(rng) if side == "c" else _server_frames(rng))
            for piece in _splits(rng, data):
                (splice.client_data if side == "c" else splice.server_data)(piece)
                ended = any(w[0] in ("client_error", "server_error") for w in writes)
                steps.append([side, writes[:]])
                writes.clear()
                if ended:
                    break
            if relay.has_held and rng.random() < 0.3 and not ended:
                steps.append(["released", relay.release_held().hex()])
        except Exception as exc:  # noqa: BLE001 - the same error is the same behaviour
            steps.append(["raised", type(exc).__name__, str(exc)])
            break
        steps.append(_state(relay))
        if relay.terminated or ended:
            break
    if srec is not None:
        srec.end("client-terminate")
        sink.items.append(["recorded", srec.id])
    steps.append(sink.items)
    return steps


def _read_back(store, session_id: str, public_key) -> list:
    """A recorded session as stored, but for what differs run to run (ids, clocks)."""
    out: list = [verify_session(store, session_id, public_key).status]
    for r in iter_records(store, session_id):
        payload = r.payload.hex()
        if r.type == "session.start":
            payload = sorted(json.loads(r.payload))
        out.append([r.seq, int(r.direction), int(r.kind), r.type, payload])
    return out


def main() -> int:
    sessions, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    shared = SharedClassifications()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="pgw-hot-path-") as tmp:
        rec = Recorder(
            RecorderConfig(store=str(Path(tmp) / "store"), spool_dir=str(Path(tmp) / "spool"),
                           create_key=False),
            signing_key=key,
        )  # fmt: skip
        rec.start()
        out = [session(rng, shared, rec) for _ in range(sessions)]
        rec.close(timeout=60)
        for steps in out:
            items = steps[-1]
            if items and items[-1][0] == "recorded":
                items[-1] = ["recorded", _read_back(rec.store, items[-1][1], key.public_key())]
    text = json.dumps(out, sort_keys=True, default=str)
    print(json.dumps({
        "compiled": compiled.status().compiled,
        "files": {name: sys.modules[name].__file__ for name in compiled.MODULES},
        "digest": hashlib.sha256(text.encode()).hexdigest(),
        "sessions": out,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
