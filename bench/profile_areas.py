"""Where the proxy's CPU goes, by area, from a py-spy profile (``py-spy record -f raw``).

    .venv/bin/py-spy record -r 500 -f raw -o /tmp/full.txt --pid PID -d 10   # a live proxy
    .venv/bin/py-spy record -r 500 -f raw -o /tmp/full.txt -- \\
        .venv/bin/python bench/statement_micro.py --modes full --workload simple --repeats 1
    .venv/bin/python bench/profile_areas.py /tmp/full.txt [--per N --seconds S] [--only ...]

Each sample is booked to the innermost frame that belongs to an area below (so the
recorder's append inside the relay is the recorder's, and the pglast call inside the
policy is the second opinion); samples in no area (event loop, transport writes, the
kernel via system calls) are "event loop, sockets, other". With ``--per N --seconds S``
the shares are turned into µs per statement (S seconds of CPU over N statements:
measure those with /proc/PID/stat, as bench/pgbench_compare.py does).
"""

from __future__ import annotations

import argparse
import collections
import sys

# (substring of a frame "function (file:line)", area); the first frame from the leaf that
# matches any rule decides, rules in order
RULES = [
    ("spool.py", "sealer: spool write + fsync"),
    ("Spool.write", "sealer: spool write + fsync"),
    ("sha256", "sealer: SHA-256 chain"),
    ("chain_next", "sealer: SHA-256 chain"),
    ("signing.py", "sealer: Ed25519 checkpoint"),
    ("encode_chunk", "sealer: chunk encode + zstd"),
    ("_seal (", "sealer: cutting records into chunks"),
    ("_seal_loop", "sealer: loop"),
    ("_upload", "uploader: store put"),
    ("store/", "uploader: store put"),
    ("crosscheck.py", "policy: second opinion (pglast)"),
    ("pgparse.py", "policy: second opinion (pglast)"),
    ("pglast", "policy: second opinion (pglast)"),
    ("number_shapes.py", "policy: lexer + fingerprint"),
    ("fingerprint.py", "policy: lexer + fingerprint"),
    ("classify.py", "policy: classify (sqlglot)"),
    ("sqlglot", "policy: classify (sqlglot)"),
    ("engine.py", "policy: engine, decide, caches"),
    ("decide.py", "policy: engine, decide, caches"),
    ("catalog.py", "policy: engine, decide, caches"),
    ("decision_records.py", "decision record rendering"),
    ("records.py", "decision record rendering"),
    ("json/", "decision record rendering"),
    ("writer.py", "recording append (event loop)"),
    ("metrics.py", "metrics"),
    ("prometheus_client", "metrics"),
    ("framing.py", "relay: framing"),
    ("messages.py", "relay: framing"),
    ("session.py", "relay: Sync groups, checks, records"),
]
OTHER = "event loop, sockets, other"


def areas(path: str, only: list[str] | None = None) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            if only and not any(o in stack for o in only):
                continue
            frames = stack.split(";")
            if "_find_and_load" in stack or "Setup.__init__" in stack:
                continue  # imports and set-up, not the measured loop
            if any(w in frames[-1] for w in ("wait (", "sleep", "select (", "_wait_for")):
                continue  # a thread waiting (py-spy counts some waits as active)
            area = OTHER
            for frame in reversed(frames):
                hit = next((name for needle, name in RULES if needle in frame), None)
                if hit is not None:
                    area = hit
                    break
            out[area] += int(count)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("raw", help="py-spy record -f raw output")
    ap.add_argument("--per", type=int, help="statements in the profiled interval")
    ap.add_argument("--seconds", type=float, help="CPU seconds in the profiled interval")
    ap.add_argument(
        "--only",
        action="append",
        help="count only stacks with this substring (repeatable); for statement_micro.py:\n"
        "--only 'drive (' --only _seal_loop --only _upload_loop",
    )
    a = ap.parse_args()
    counts = areas(a.raw, a.only)
    total = sum(counts.values())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    scale = a.seconds * 1e6 / a.per if a.per and a.seconds else None
    for name, n in counts.most_common():
        us = f"{scale * n / total:8.2f} µs" if scale else ""
        print(f"{name:<40} {100 * n / total:5.1f}%  {us}")
    print(f"{'total':<40} {total} samples" + (f"  {scale:8.2f} µs" if scale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
