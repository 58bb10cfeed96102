"""Guesses per minute an attacker gets from one address against one agent, with the login
throttle's defaults (common/throttle.py FailureThrottle, docs/operations.md states the bound).

    .venv/bin/python bench/login_guessing.py [--seconds 60] [--workers 50]

Runs the proxy's own throttle on one event loop: ``--workers`` attackers guess one agent's
token as fast as the throttle lets them (each failed SCRAM exchange takes ``--scram-ms``),
while a second agent from the same address logs in once a second; prints the guesses
made and the other agent's worst wait. tests/integration/test_proxy_limits.py attacks the real
proxy with smaller settings.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common.config import ProxySection
from common.throttle import FailureThrottle


async def main(seconds: float, workers: int, scram_ms: float) -> None:
    d = ProxySection()
    throttle = FailureThrottle(d.auth_fail_delay, d.auth_fail_window, d.auth_fail_max_delay,
                               per_address=d.auth_concurrency_per_address)
    addr = "203.0.113.7"
    stop = time.monotonic() + seconds
    guesses = 0
    waits: list[float] = []

    async def attacker() -> None:
        nonlocal guesses
        while time.monotonic() < stop:
            async with throttle.attempt(addr, "victim"):
                if time.monotonic() >= stop:
                    return
                await asyncio.sleep(scram_ms / 1000)
                throttle.failed(addr, "victim")
                guesses += 1

    async def other_agent() -> None:
        while time.monotonic() < stop:
            t0 = time.monotonic()
            async with throttle.attempt(addr, "bystander"):
                await asyncio.sleep(scram_ms / 1000)
                throttle.succeeded(addr, "bystander")
            waits.append(time.monotonic() - t0 - scram_ms / 1000)
            await asyncio.sleep(1.0)

    await asyncio.gather(*(attacker() for _ in range(workers)), other_agent())
    print(f"defaults: auth_fail_delay={d.auth_fail_delay} s, auth_fail_max_delay="
          f"{d.auth_fail_max_delay} s, auth_concurrency_per_address={d.auth_concurrency_per_address}")
    print(f"{workers} attackers for {seconds:.0f} s: {guesses} guesses "
          f"({guesses * 60 / seconds:.1f} per minute) against one agent from one address")
    print(f"another agent from the same address: {len(waits)} logins, worst wait "
          f"{max(waits) * 1e3:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--scram-ms", type=float, default=5.0)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.workers, a.scram_ms))
