"""SCRAM-SHA-256 (RFC 5802 / RFC 7677) as Postgres uses it, sans-IO, both sides.

The server side supports several candidate verifiers sharing one salt and iteration
count: an agent may hold several live grants, and the proof tells which token it used.
Channel binding is not offered (the client is told ``SCRAM-SHA-256`` only), so the
GS2 header is always ``n,,`` or ``y,,``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096


class ScramError(Exception):
    """The exchange is malformed or the proof does not match."""


@dataclass(frozen=True, slots=True)
class Verifier:
    """What a server stores instead of a password: ``SCRAM-SHA-256$i:salt$StoredKey:ServerKey``."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return (
            f"{MECHANISM}${self.iterations}:{b64(self.salt).decode()}"
            f"${b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )

    @classmethod
    def decode(cls, text: str) -> Verifier:
        try:
            mech, iter_salt, keys = text.split("$")
            if mech != MECHANISM:
                raise ValueError(mech)
            iterations, salt = iter_salt.split(":")
            stored, server = keys.split(":")
            return cls(
                int(iterations),
                base64.b64decode(salt, validate=True),
                base64.b64decode(stored, validate=True),
                base64.b64decode(server, validate=True),
            )
        except (ValueError, TypeError) as exc:
            raise ScramError("malformed SCRAM verifier") from exc


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)


def saslprep(password: str) -> str:
    """The password as SCRAM hashes it (RFC 4013 SASLprep, RFC 7613's profile as
    PostgreSQL's ``pg_saslprep`` applies it): libpq, node-postgres and the server's own
    verifiers prepare it so, and a password that changes under it (``IX-\u2168`` is
    ``IX-IX``) would otherwise never log in. ASCII is as it is; a password SASLprep
    prohibits (control characters, unassigned code points, mixed directions, nothing left
    after mapping) is used as it is, as PostgreSQL does. As ``pg_saslprep``, the checks
    read the mapped string, before its normalization."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    if not mapped:
        return password
    for ch in mapped:
        if (
            stringprep.in_table_c12(ch) or stringprep.in_table_c21_c22(ch)
            or stringprep.in_table_c3(ch) or stringprep.in_table_c4(ch)
            or stringprep.in_table_c5(ch) or stringprep.in_table_c6(ch)
            or stringprep.in_table_c7(ch) or stringprep.in_table_c8(ch)
            or stringprep.in_table_c9(ch) or stringprep.in_table_a1(ch)
        ):  # fmt: skip
            return password
    if any(stringprep.in_table_d1(ch) for ch in mapped):  # right-to-left text
        if any(stringprep.in_table_d2(ch) for ch in mapped):
            return password
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return password
    return unicodedata.normalize("NFKC", mapped)


def make_verifier(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> Verifier:
    """Derive the stored verifier for ``password`` (random 16-byte salt unless given)."""
    salt = os.urandom(16) if salt is None else salt
    salted = salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return Verifier(
        iterations,
        salt,
        hashlib.sha256(client_key).digest(),
        _hmac(salted, b"Server Key"),
    )


def _attrs(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        out[part[0]] = part[2:]
    return out


class ScramServer:
    """Server half: ``first(client_first) -> server_first``, then ``final(client_final)``.

    ``final`` returns ``(index, server_final)`` where index says which candidate stored key
    the client's proof matched; it raises ScramError if none does.
    """

    def __init__(self, iterations: int, salt: bytes, candidates: list[tuple[bytes, bytes]]):
        self.iterations = iterations
        self.salt = salt
        self.candidates = candidates  # (stored_key, server_key) pairs
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode("utf-8", "replace")
        if text.startswith("p="):
            raise ScramError("channel binding is not supported")
        if not (text.startswith("n,") or text.startswith("y,")):
            raise ScramError("malformed SCRAM client-first-message")
        try:
            _, _authzid, bare = text.split(",", 2)
        except ValueError as exc:
            raise ScramError("malformed SCRAM client-first-message") from exc
        attrs = _attrs(bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce:
            raise ScramError("SCRAM client nonce missing")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = (
            f"r={self._nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        )
        return self._server_first.encode()

    def final(self, client_final: bytes) -> tuple[int, bytes]:
        text = client_final.decode("utf-8", "replace")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM proof missing")
        attrs = _attrs(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce mismatch")
        if attrs.get("c") not in ("biws", "eSws"):  # base64 of "n,," and "y,,"
            raise ScramError("unexpected SCRAM channel binding")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError as exc:
            raise ScramError("malformed SCRAM proof") from exc
        if len(proof) != 32:
            raise ScramError("malformed SCRAM proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        for index, (stored_key, server_key) in enumerate(self.candidates):
            signature = _hmac(stored_key, auth_message)
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            if hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key):
                server_sig = base64.b64encode(_hmac(server_key, auth_message)).decode()
                return index, f"v={server_sig}".encode()
        raise ScramError("password authentication failed")


class ScramClient:
    """Client half, used to log in upstream with the proxy's own password."""

    def __init__(self, password: str, derive=None):
        self.password = password
        # (password, salt, iterations) -> SaltedPassword; a caller may cache it (the server's
        # salt and iteration count for a role change only with its password)
        self._derive = derive or salted_password
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._client_first_bare = f"n=,r={self._nonce}"
        self._expected_server_sig = b""

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attrs(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or not salt or not iterations.isdigit():
            raise ScramError("malformed SCRAM server-first-message")
        salted = self._derive(self.password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._expected_server_sig = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        if not self._expected_server_sig:
            raise ScramError("SCRAM server-final-message before server-first-message")
        attrs = _attrs(server_final.decode())
        if "e" in attrs:
            raise ScramError(f"server rejected SCRAM: {attrs['e']}")
        if not hmac.compare_digest(
            base64.b64decode(attrs.get("v", "")), self._expected_server_sig
        ):
            raise ScramError("server signature mismatch: upstream is not who it claims")
