"""Verdicts answered from the policy's caches (exact text, number shape, fingerprint),
attacked over the simple and the extended protocol with the server as the judge: a
session that primes every tier with allowed statements then tries the secret through
texts of the same shapes gets 42501 each time and never the secret's value
(policy/engine.py builds a cache hit's allowed verdict slot by slot: it must be given
only to what the uncached path allows). In process the same texts are answered 10 times
from the exact text and 112 from a number shape or a fingerprint, with 10 misses."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(90)

AGENT = "cache-bot"
SCOPES = "read:public.ch_open"
MARKER = "ch-" + "s3cr3t-91c2"  # never sent through the proxy
SETUP = """
SET ROLE pgwitness;
CREATE TABLE public.ch_open (id int, v text);
INSERT INTO public.ch_open SELECT g, 'open-' || g FROM generate_series(1, 20) g;
CREATE SCHEMA ch_sec;
CREATE TABLE ch_sec.ch_open (id int, v text);
INSERT INTO ch_sec.ch_open VALUES (1, 'ch-' || 's3cr3t-91c2');
CREATE TABLE public.ch_secret (id int, v text);
INSERT INTO public.ch_secret VALUES (1, 'ch-' || 's3cr3t-91c2');
"""
TEARDOWN = """
DROP TABLE IF EXISTS public.ch_open, public.ch_secret CASCADE;
DROP SCHEMA IF EXISTS ch_sec CASCADE;
"""

# allowed texts of several shapes, each sent with many literals: the exact-text, the
# number-shape and the fingerprint tiers all hold them afterwards
PRIMES = [
    "SELECT v FROM public.ch_open WHERE id = {n}",
    "SELECT v FROM ch_open WHERE id = {n}",
    "select v from public.ch_open where id in ({n}, {m})",
    "SELECT v FROM public.ch_open WHERE id = {n} LIMIT {m}",
]
# the secret through texts one token away from a primed shape
ATTEMPTS = [
    "SELECT v FROM public.ch_secret WHERE id = {n}",
    "SELECT v FROM ch_sec.ch_open WHERE id = {n}",
    "select v from ch_sec.ch_open where id in ({n}, {m})",
    "SELECT v FROM public.ch_open WHERE id = {n} UNION SELECT v FROM public.ch_secret",
    "SELECT v FROM public.ch_open WHERE id = {n}; SELECT v FROM public.ch_secret WHERE id = {m}",
    "SELECT v FROM public.ch_open WHERE id = {n} LIMIT (SELECT count(*) FROM public.ch_secret)",
    "SELECT (SELECT v FROM public.ch_secret) FROM public.ch_open WHERE id = {n}",
]


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "ch", agent=AGENT, scopes=SCOPES, setup=SETUP,
                         teardown=TEARDOWN) as h:  # fmt: skip
        yield h


def _texts(templates, rounds=6):
    return [t.format(n=n, m=n + 3) for n in range(1, rounds + 1) for t in templates]


def _check(primed: list[str], attempts: list[str], attempted: list[str]) -> None:
    assert all(not p.startswith("error") and "open-" in p for p in primed), primed
    for sql, out in zip(attempted, attempts, strict=True):
        assert MARKER not in out, (sql, out)
        assert out.startswith("error 42501"), (sql, out)


def test_cache_hits_never_reach_the_secret_over_the_simple_protocol(px):
    primes, attempts = _texts(PRIMES), _texts(ATTEMPTS)
    # primes before, between and after the attempts, all in one session
    outs = planted.simple(px, primes + attempts + primes + attempts)
    n, k = len(primes), len(attempts)
    _check(outs[:n] + outs[n + k:2 * n + k], outs[n:n + k] + outs[2 * n + k:], attempts * 2)


def test_cache_hits_never_reach_the_secret_over_the_extended_protocol(px):
    primes, attempts = _texts(PRIMES), _texts(ATTEMPTS)
    attempts = [a for a in attempts if ";" not in a]  # one statement per Parse
    outs = asyncio.run(planted.extended(px, primes + attempts + primes + attempts))
    n, k = len(primes), len(attempts)
    _check(outs[:n] + outs[n + k:2 * n + k], outs[n:n + k] + outs[2 * n + k:], attempts * 2)
