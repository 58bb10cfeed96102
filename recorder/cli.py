"""`pgwitness keygen | verify | replay`: registered into the main CLI (proxy/cli.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from .signing import generate_keypair, load_public_key
from .store import StoreError
from .storeargs import open_from_args, store_args


def register(subparsers) -> None:
    p = subparsers.add_parser("keygen", help="create an Ed25519 signing key pair for recordings")
    p.add_argument("--out", required=True, help="private key path (PEM, 0600); public key: OUT.pub")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser("verify", help="prove recordings are complete and untampered")
    store_args(p)
    p.add_argument("sessions", nargs="*", metavar="SESSION")
    p.add_argument("--all", action="store_true", help="every session in the store")
    p.add_argument("--public-key", action="append", required=True, metavar="PATH",
                   help="trusted public key (repeat for rotated keys)")
    p.add_argument("--require-closed", action="store_true",
                   help="also fail sessions without a final checkpoint")
    p.add_argument("--json", action="store_true", help="one JSON report per line")
    p.add_argument("--expect", type=int, metavar="N",
                   help="with --all: fail unless at least N sessions are recorded (an anchor "
                        "kept outside the store, e.g. from pgwitness_connections_total)")
    p.add_argument("--expect-sessions", metavar="FILE",
                   help="with --all: fail unless every session id in FILE (one a line) verifies")
    p.add_argument("--anchor", action="append", default=[], metavar="LOG",
                   help="with --all: proxy log(s) whose 'control stream head' lines every "
                        "control stream must still reach, with the same chain")
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser("replay", help="psql-like transcript of a recorded session")
    store_args(p)
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--public-key", action="append", metavar="PATH",
                   help="verify first and print the result (recommended)")
    p.add_argument("--max-rows", type=int, default=None, help="rows shown per result set")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing a live session until it ends (Ctrl-C to stop)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: one event per line (records, wire frames decoded)")
    p.set_defaults(func=cmd_replay)

    from .audit.cli import register as register_audit

    register_audit(subparsers)


def cmd_keygen(args) -> int:
    try:
        priv, pub = generate_keypair(args.out)
    except FileExistsError:
        print(f"pgwitness keygen: {args.out} (or its .pub) exists; not overwriting", file=sys.stderr)
        return 1
    print(f"private key: {priv} (mode 0600; give it to the proxy only)")
    print(f"public key:  {pub} (give it to auditors: pgwitness verify --public-key {pub})")
    return 0


def cmd_verify(args) -> int:
    from .verify import check_anchors, parse_heads, shown, verify_all, verify_session

    if bool(args.sessions) == bool(args.all):
        print("pgwitness verify: name SESSION ids or pass --all (not both)", file=sys.stderr)
        return 2
    anchored = args.expect is not None or args.expect_sessions or args.anchor
    if anchored and not args.all:
        print("pgwitness verify: --expect, --expect-sessions and --anchor need --all", file=sys.stderr)
        return 2
    try:
        expected_ids = _read_lines(args.expect_sessions) if args.expect_sessions else []
        heads: dict[str, tuple[int, str]] = {}
        for path in args.anchor:
            with open(path, encoding="utf-8", errors="replace") as f:
                for sid, head in parse_heads(f.read()).items():
                    if sid not in heads or heads[sid][0] < head[0]:
                        heads[sid] = head
    except OSError as e:
        print(f"pgwitness verify: {e}", file=sys.stderr)
        return 2
    if args.anchor and not heads:
        # an anchor that names no stream proves nothing: a log below INFO, another file, a
        # rotated one. Passing would let a deleted control stream and its sessions go unseen.
        print(f"pgwitness verify: --anchor {', '.join(args.anchor)}: no 'control stream head' "
              "line to anchor to (is the proxy logging at INFO, and is this its log?)",
              file=sys.stderr)
        return 1
    keys = [load_public_key(k) for k in args.public_key]
    store = open_from_args(args)
    try:
        if args.all:
            reports = verify_all(store, keys)
        else:
            reports = [verify_session(store, sid, keys) for sid in args.sessions]
    except StoreError as e:
        print(f"pgwitness verify: {e}", file=sys.stderr)
        return 2
    anchor_problems = check_anchors(reports, expect=args.expect, sessions=expected_ids,
                                    heads=heads) if anchored else []
    failed = 0
    for r in reports:
        bad = not r.ok or (args.require_closed and r.status != "closed")
        failed += bad
        if args.json:
            d = dataclasses.asdict(r)
            d.pop("chains", None)  # for anchors only; one per control-stream chunk
            d["ok"] = not bad
            d["last_chain"] = r.last_chain.hex() if r.last_chain else None
            print(json.dumps(d, default=str))
        else:
            print(r.summary())
    for problem in anchor_problems:
        if args.json:
            print(json.dumps({"anchor": True, "ok": False, "kind": problem.kind,
                              "where": problem.where, "detail": problem.detail}))
        else:
            print(f"ANCHOR: {shown(problem.where)}: {problem.detail}")
    if not args.json:
        print(f"{len(reports)} sessions verified, {failed} failed")
    if not reports:
        # Nothing checked is never a pass: a mistyped path or prefix looks exactly like this.
        print(f"pgwitness verify: no sessions found in {store.url}"
              + _missing_hint(store), file=sys.stderr)
        return 1
    return 1 if failed or anchor_problems else 0


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _missing_hint(store) -> str:
    root = getattr(store, "root", None)
    if root is not None and not os.path.isdir(root):
        return f" (the directory {root} does not exist)"
    return " (check the path or prefix)"


def cmd_replay(args) -> int:
    from .replay import replay_session
    from .verify import verify_session

    store = open_from_args(args)
    status = 0
    if args.public_key:
        r = verify_session(store, args.session, [load_public_key(k) for k in args.public_key])
        if args.format == "json":
            print(json.dumps({"kind": "verify", "status": r.status, "ok": r.ok,
                              "problems": [str(p) for p in r.problems]}))
        else:
            print(f"-- verify: {r.summary()}")
        status = 0 if r.ok else 1
    problems: list[str] = []
    try:
        if args.format == "json":
            from .replay import replay_json

            replay_json(store, args.session, sys.stdout, problems=problems)
        else:
            replay_session(store, args.session, sys.stdout, max_rows=args.max_rows,
                           follow=args.follow, problems=problems)
    except KeyboardInterrupt:
        return 130
    except (StoreError, ValueError) as e:
        print(f"pgwitness replay: {e}", file=sys.stderr)
        return 1
    for line in problems:  # chunks that did not decode: named, skipped, and exit 1
        print(f"pgwitness replay: {line}", file=sys.stderr)
    return 1 if problems else status
