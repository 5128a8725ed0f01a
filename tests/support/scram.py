"""A SCRAM-SHA-256 client (RFC 5802 §3, RFC 7677) for the tests: smtplib has none.

Owns ``ScramClient`` (the three client messages and the check of the server signature)
and ``smtplib_authobject`` (the callable ``smtplib.SMTP.auth`` wants). Written from the
RFC, independently of ``kittiwake.auth.scram``: a server bug cannot hide behind the same
bug in the client. No channel binding (``n,,``). Not security sensitive (test code).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import overload


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(
        self, user: str, password: str, *, nonce: str | None = None, authzid: str = ""
    ) -> None:
        self.user = user
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.gs2_header = f"n,{'a=' + _saslname(authzid) if authzid else ''},"
        self.first_bare = f"n={_saslname(user)},r={self.nonce}"
        self.server_signature = b""
        self.verified = False

    def first(self) -> bytes:
        return (self.gs2_header + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        fields = dict(item.split("=", 1) for item in text.split(","))
        nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        assert nonce.startswith(self.nonce), "the server must extend our nonce"
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={cbind},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_final(self, server_final: bytes) -> None:
        text = server_final.decode()
        assert text.startswith("v="), f"server-final: {text!r}"
        assert base64.b64decode(text[2:]) == self.server_signature, "bad server signature"
        self.verified = True


class SmtplibAuth:
    """For ``smtp.auth("SCRAM-SHA-256", SmtplibAuth(client))``: called with no challenge for
    the initial response, then with each decoded 334 challenge."""

    def __init__(self, client: ScramClient) -> None:
        self.client = client
        self.stage = 0

    @overload
    def __call__(self, challenge: None = None, /) -> str | None: ...
    @overload
    def __call__(self, challenge: bytes, /) -> str: ...

    def __call__(self, challenge: bytes | None = None, /) -> str | None:
        self.stage += 1
        if self.stage == 1:
            return self.client.first().decode()
        assert challenge is not None
        if self.stage == 2:
            return self.client.final(challenge).decode()
        self.client.check_final(challenge)
        return ""


def smtplib_authobject(client: ScramClient) -> SmtplibAuth:
    return SmtplibAuth(client)
