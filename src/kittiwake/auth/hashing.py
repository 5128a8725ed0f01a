"""Password hashing: argon2id for PLAIN/LOGIN, SCRAM-SHA-256 keys for SCRAM.

Owns ``Credentials`` (what is stored for one password), ``make_credentials`` (done at
``user add`` / ``user passwd``: the only time the password is known) and the verifiers.
SCRAM cannot use the argon2 hash — the client proves knowledge of
``SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i)`` — so both are derived from the
same SASLprep'd password (RFC 5802 §3, RFC 7677 §4) and stored side by side.

argon2id parameters: OWASP's minimum (m = 19 MiB, t = 2, p = 1), about 50 ms per check on
a small VM; each hash records its own parameters, so raising them later keeps old hashes
valid, and ``upgraded_credentials`` re-hashes one with today's parameters after a login
that proved the password (argon2-cffi's ``check_needs_rehash``); SCRAM keys are remade too
when ``SCRAM_ITERATIONS`` grew — the server may change the iteration count whenever it has
the password (RFC 5802 §5, RFC 7677 §4). ``verify_password`` and ``upgraded_credentials``
are CPU-heavy: call them from a worker thread, never on the event loop.
Security: HIGH — never log a password or a key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from kittiwake.auth.saslprep import SaslPrepError, saslprep

__all__ = [
    "SCRAM_ITERATIONS",
    "Credentials",
    "ScramKeys",
    "check_new_password",
    "describe",
    "dummy_verify",
    "make_credentials",
    "needs_upgrade",
    "scram_keys",
    "upgraded_credentials",
    "verify_password",
]

SCRAM_ITERATIONS = 10_000  # RFC 7677 §4: at least 4096
SCRAM_SALT_SIZE = 16
MAX_PASSWORD = 1024  # characters; longer is an attack on the hasher, not a password

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so that a miss costs as much as a wrong
    password (no user enumeration by timing). Made on first use, not at import."""
    return _HASHER.hash("kittiwake-dummy-password")


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """RFC 5802 §3: what the server keeps to verify SCRAM without the password."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)  # H(ClientKey)
    server_key: bytes = field(repr=False)  # HMAC(SaltedPassword, "Server Key")


@dataclass(frozen=True, slots=True)
class Credentials:
    password_hash: str = field(repr=False)  # an argon2id PHC string
    scram: ScramKeys = field(repr=False)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def scram_keys(password: str, salt: bytes, iterations: int) -> ScramKeys:
    """StoredKey and ServerKey for a (SASLprep'd) password (RFC 5802 §3)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramKeys(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


def check_new_password(password: str) -> str:
    """The SASLprep'd form of a new password; ValueError says why it cannot be used."""
    if not password:
        raise ValueError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password is longer than {MAX_PASSWORD} characters")
    try:
        prepared = saslprep(password)
    except SaslPrepError as exc:
        raise ValueError(f"the password cannot be used: {exc}") from None
    if not prepared:
        raise ValueError("the password is empty once prepared (RFC 4013)")
    return prepared


def make_credentials(password: str, *, iterations: int = SCRAM_ITERATIONS) -> Credentials:
    """Hash a new password both ways (~0.1 s). Raises ValueError for an unusable password."""
    prepared = check_new_password(password)
    return Credentials(
        password_hash=_HASHER.hash(prepared),
        scram=scram_keys(prepared, os.urandom(SCRAM_SALT_SIZE), iterations),
    )


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches the argon2 hash. Blocking (~50 ms): use a thread."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except SaslPrepError:
        return False
    try:
        return _HASHER.verify(password_hash, prepared)
    except (VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> bool:
    """Spend the time of a real check, for a user that does not exist. Always False."""
    verify_password(_dummy_hash(), password)
    return False


def _argon2_outdated(password_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:  # never verifies anyway; ``kittiwake user passwd`` repairs it
        return False


def needs_upgrade(credentials: Credentials, *, iterations: int = SCRAM_ITERATIONS) -> bool:
    """True when the argon2 parameters differ from today's, or the SCRAM iteration count is
    below ``iterations`` (never lowered). Cheap: parses the hash, safe on the event loop."""
    return _argon2_outdated(credentials.password_hash) or credentials.scram.iterations < iterations


def upgraded_credentials(
    credentials: Credentials, password: str, *, iterations: int = SCRAM_ITERATIONS
) -> Credentials | None:
    """``credentials`` remade with today's parameters from ``password``, which the caller
    has just verified against them; None when nothing is outdated. Only the outdated half
    changes (a new SCRAM salt with new keys). Blocking (~50 ms): use a thread."""
    argon2_old = _argon2_outdated(credentials.password_hash)
    scram_old = credentials.scram.iterations < iterations
    if not (argon2_old or scram_old):
        return None
    # The form verify_password checked: equal to what ``make_credentials`` hashed.
    prepared = saslprep(password, allow_unassigned=True)
    return Credentials(
        password_hash=_HASHER.hash(prepared) if argon2_old else credentials.password_hash,
        scram=(
            scram_keys(prepared, os.urandom(SCRAM_SALT_SIZE), iterations)
            if scram_old
            else credentials.scram
        ),
    )


def describe(credentials: Credentials) -> str:
    """The parameters, for a log line: ``argon2id m=19456,t=2,p=1, SCRAM i=10000``."""
    try:
        p = extract_parameters(credentials.password_hash)
        argon2 = f"argon2{p.type.name.lower()} m={p.memory_cost},t={p.time_cost},p={p.parallelism}"
    except InvalidHashError:
        argon2 = "unreadable hash"
    return f"{argon2}, SCRAM i={credentials.scram.iterations}"
