"""Large statements are classified in a worker process, off the event loop.

Classification is CPU-bound and holds the GIL (sqlglot is Python; PostgreSQL's parse tree
arrives as JSON that ``json.loads`` reads in one call): a thread would still stall every
other session of the worker. One spawned process per proxy worker, started on first use;
the policy's pure ``classify_text`` runs there, and its result is decided on the loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

__all__ = ["classify_off_loop"]

_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


async def classify_off_loop(policy, sqls: list[str]) -> None:
    """Classify each statement text in the worker process and hand the result to
    ``policy.precomputed``. On failure nothing is stored: the relay then classifies on
    the loop (slow, never wrong)."""
    global _POOL
    loop = asyncio.get_running_loop()
    for sql in sqls:
        fn, args = policy.offload_job(sql)
        try:
            result = await loop.run_in_executor(_pool(), fn, *args)
        except BrokenProcessPool:
            _POOL = None
            return
        policy.precomputed(sql, result)
