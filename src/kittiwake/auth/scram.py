"""SCRAM-SHA-256 (RFC 7677, RFC 5802), server side, without channel binding.

Owns ``ScramMechanism``: client-first → server-first (our nonce, the user's salt and
iteration count) → client-final (proof) → server-final (``v=`` signature, sent as a 334
challenge because SMTP has no data on 235, RFC 4954 §4) → the client's empty answer → done.
We advertise SCRAM-SHA-256 only, never -PLUS: a client's ``y`` flag ("I could bind, the
server can't") is fine, ``p=`` is refused (RFC 5802 §6).

Unknown or disabled users get a stable fake salt and run the exchange to the end, then
fail like a wrong password: no user enumeration. Verifying a proof is two HMACs and a hash
(cheap, done inline). Security: HIGH — parses attacker input; compares in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from typing import Protocol

from kittiwake.auth.hashing import SCRAM_ITERATIONS, ScramKeys
from kittiwake.auth.sasl import BadCredentials, Challenge, Malformed, Step, Verified, utf8
from kittiwake.auth.store import User, normalize_name

__all__ = ["ScramMechanism", "ScramUsers", "new_nonce"]

# RFC 5802 §7: printable = %x21-2B / %x2D-7E (no ","); value-safe-char excludes "," and "=".
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_SASLNAME = re.compile(r"(?:[^,=]|=2C|=3D)+")
_ATTR = re.compile(r"[A-Za-z]=")


class ScramUsers(Protocol):
    def get(self, name: str) -> User | None: ...
    def fake_salt(self, name: str) -> bytes: ...


def new_nonce() -> str:
    return base64.b64encode(os.urandom(18)).decode("ascii")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _attributes(message: str) -> list[tuple[str, str]] | None:
    """``a=x,b=y`` → ``[("a", "x"), ("b", "y")]``; None if an item is not ``letter=value``."""
    out = []
    for item in message.split(","):
        if not _ATTR.match(item):
            return None
        out.append((item[0], item[2:]))
    return out


def _decode_saslname(value: str) -> str | None:
    if not _SASLNAME.fullmatch(value):
        return None
    return value.replace("=2C", ",").replace("=3D", "=")


class ScramMechanism:
    name = "SCRAM-SHA-256"

    def __init__(self, users: ScramUsers, nonce: Callable[[], str] = new_nonce) -> None:
        self.username: str | None = None
        self._users = users
        self._nonce = nonce
        self._stage = 0
        self._keys: ScramKeys | None = None
        self._known = False  # a real, enabled user (else the exchange must fail)
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._full_nonce = ""
        self._server_signature = b""

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")  # the client sends client-first as its response
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        text = utf8(response)
        if text is None:
            return Malformed("SCRAM message is not UTF-8")
        if self._stage == 0:
            return self._client_first(text)
        if self._stage == 1:
            return self._client_final(text)
        if self._stage == 2 and text == "":  # the answer to our server-final
            assert self.username is not None
            self._stage = 3
            return Verified(self.username)
        return Malformed("unexpected SCRAM message")

    # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
    def _client_first(self, text: str) -> Step:
        parts = text.split(",", 2)
        if len(parts) != 3:
            return Malformed("bad client-first-message")
        cbind, authzid, bare = parts
        if cbind.startswith("p="):
            return BadCredentials(None, "channel binding requested (SCRAM-SHA-256-PLUS)")
        if cbind not in ("n", "y"):
            return Malformed("bad gs2-cbind-flag")
        attrs = _attributes(bare)
        if attrs is None or len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            return Malformed("bad client-first-message-bare")  # m= (reserved) lands here too
        raw_name = _decode_saslname(attrs[0][1])
        client_nonce = attrs[1][1]
        if raw_name is None or not _NONCE.fullmatch(client_nonce):
            return Malformed("bad username or nonce")
        try:
            name = normalize_name(raw_name)
        except ValueError:
            return BadCredentials(None, "unusable user name")
        self.username = name
        if authzid:
            zid = _decode_saslname(authzid[2:]) if authzid.startswith("a=") else None
            if zid is None:
                return Malformed("bad authzid")
            if _prepared_name(zid) != name:
                return BadCredentials(name, "authorization identity differs (no proxy AUTH)")
        user = self._users.get(name)
        if user is not None and not user.disabled:
            self._keys, self._known = user.credentials.scram, True
        else:  # keep going with keys nobody can match
            salt = self._users.fake_salt(name)
            self._keys = ScramKeys(salt, SCRAM_ITERATIONS, os.urandom(32), os.urandom(32))
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._full_nonce = client_nonce + self._nonce()
        salt_b64 = base64.b64encode(self._keys.salt).decode("ascii")
        self._server_first = f"r={self._full_nonce},s={salt_b64},i={self._keys.iterations}"
        self._stage = 1
        return Challenge(self._server_first.encode("ascii"))

    # client-final-message = channel-binding "," nonce ["," extensions] "," proof
    def _client_final(self, text: str) -> Step:
        without_proof, sep, proof_attr = text.rpartition(",")
        attrs = _attributes(text)
        if not sep or attrs is None or len(attrs) < 3:
            return Malformed("bad client-final-message")
        (c_key, cbind), (r_key, nonce) = attrs[0], attrs[1]
        if c_key != "c" or r_key != "r" or not proof_attr.startswith("p="):
            return Malformed("bad client-final-message")
        try:
            proof = base64.b64decode(proof_attr[2:], validate=True)
            binding = base64.b64decode(cbind, validate=True)
        except (binascii.Error, ValueError):
            return Malformed("bad base64 in client-final-message")
        name = self.username
        if binding != self._gs2_header.encode("utf-8"):
            return BadCredentials(name, "channel binding data does not match")
        if nonce != self._full_nonce:
            return BadCredentials(name, "nonce does not match")
        keys = self._keys
        assert keys is not None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}"
        signature = _hmac(keys.stored_key, auth_message.encode("utf-8"))
        if len(proof) != len(signature):
            return BadCredentials(name, "bad proof length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), keys.stored_key)
        if not (ok and self._known):
            return BadCredentials(name, "wrong password" if self._known else "no such user")
        self._server_signature = _hmac(keys.server_key, auth_message.encode("utf-8"))
        self._stage = 2
        final = "v=" + base64.b64encode(self._server_signature).decode("ascii")
        return Challenge(final.encode("ascii"))


def _prepared_name(text: str) -> str | None:
    try:
        return normalize_name(text)
    except ValueError:
        return None
