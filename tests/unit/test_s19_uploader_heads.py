"""The uploader logs a control stream's head (the anchor of ``verify --anchor``) only from a
checkpoint the recorder's own key signed for the place it is stored at (session 19).

A forged checkpoint put in the spool under a control stream's next key used to be logged as
that stream's head: ``parse_heads`` takes the highest number logged, so one forged head with
a huge number made every later ``verify --anchor`` fail on a checkpoint the store never
attests (the anchor's alarm stuck on, hiding a real truncation among false ones)."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import chunks
from recorder.config import RecorderConfig
from recorder.signing import Checkpoint, State, key_id
from recorder.spool import Spool
from recorder.store.local import LocalStore
from recorder.uploader import Uploader
from recorder.verify import parse_heads

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
CID = chunks.new_session_id()  # the control stream


def ckpt(n: int, *, sid: str = CID, key: Ed25519PrivateKey = KEY, chain: bytes = b"\x11" * 32,
         kid: bytes | None = None) -> bytes:
    return Checkpoint(session_id=sid, n=n, chain=chain, chunk_sha256=b"\x22" * 32,
                      state=State.OPEN, first_seq=n, next_seq=n + 1, time_ns=1,
                      key_id=kid or key_id(key.public_key())).signed(key).encode()


def upload(tmp_path, entries, public_key=KEY.public_key()):
    store = LocalStore(tmp_path / "store")
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.claim()
    up = Uploader(store, spool, RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool")),
                  public_key=public_key)
    up.control_ids.add(CID)
    return up.upload(spool.write(entries))


def heads(caplog) -> dict:
    text = "\n".join(f"{r.getMessage()} stream={r.fields['stream']!r} n={r.fields['n']} "
                     f"chain={r.fields['chain']!r}".replace("'", '"')
                     for r in caplog.records if r.getMessage() == "control stream head")
    return parse_heads(text)


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture(autouse=True)
def info(caplog):
    caplog.set_level(logging.INFO, logger="pgwitness.recorder")


def test_a_signed_head_is_logged(tmp_path, caplog):
    a = upload(tmp_path, [(chunks.ckpt_key(CID, 0), ckpt(0))])
    assert a.done and "heads_rejected" not in a.stats
    assert heads(caplog) == {CID: (0, "11" * 32)}
    assert errors(caplog) == []


FORGED = {
    # (what the attacker wrote into the spool, at the key of checkpoint 1)
    "signed by another key": lambda: ckpt(10**15, key=OTHER, chain=b"\x66" * 32),
    "our key id, another key's signature": lambda: ckpt(
        10**15, key=OTHER, kid=key_id(KEY.public_key())),
    "a flipped signature byte": lambda: ckpt(1)[:-1] + bytes([ckpt(1)[-1] ^ 1]),
    "a genuine checkpoint of another place": lambda: ckpt(7),
    "a genuine checkpoint of another stream": lambda: ckpt(1, sid=chunks.new_session_id()),
    "not a checkpoint": lambda: b"PGWK\x01garbage",
}


@pytest.mark.parametrize("forged", list(FORGED))
def test_a_forged_head_is_stored_but_never_logged_as_the_head(tmp_path, caplog, forged):
    a = upload(tmp_path, [(chunks.ckpt_key(CID, 0), ckpt(0)),
                          (chunks.ckpt_key(CID, 1), FORGED[forged]())])
    assert a.done  # stored all the same: verify reports the object (nothing is dropped)
    assert heads(caplog) == {CID: (0, "11" * 32)}  # the genuine one only
    assert a.stats.get("heads_rejected") == 1
    (err,) = errors(caplog)
    assert "0000000001.ckpt" in err and "not logged as the stream's head" in err


def test_without_a_public_key_nothing_is_a_head(tmp_path, caplog):
    a = upload(tmp_path, [(chunks.ckpt_key(CID, 0), ckpt(0))], public_key=None)
    assert a.done and heads(caplog) == {} and a.stats.get("heads_rejected") == 1
    assert "no public key" in errors(caplog)[0]


def test_a_session_id_with_a_newline_never_reaches_the_log_as_it_is(tmp_path, caplog):
    """A forged checkpoint's session id is any string: a line of its own in a text log."""
    evil = f'x\ncontrol stream head stream="{CID}" n=999999 chain="{"ab" * 32}"'
    upload(tmp_path, [(chunks.ckpt_key(CID, 1), ckpt(1, sid=evil, key=OTHER))])
    assert heads(caplog) == {}
    assert all("\n" not in e for e in errors(caplog))
