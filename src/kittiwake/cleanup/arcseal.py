"""ARC sealing of forwarded copies (RFC 8617 §5.1): what ``cleanup.expand.Fork`` calls.

Owns ``ArcSealer`` and ``arc_sealer_for``. When an alias sends a message on to an outside
address (the SRS copy, ``cleanup.expand``), we are an ARC intermediary: the copy gets a new
ARC set — ARC-Authentication-Results (our own Authentication-Results field for the message,
as the data stage wrote it above our Received line; ``<authserv-id>; none`` when no check
wrote one), ARC-Message-Signature and ARC-Seal — signed with the ``[[dkim.keys]]`` RSA key of
the forwarding domain (the SRS domain: ``srs.domain``, else the first local domain). No such
key: no sealing. ARC is rsa-sha256 only (RFC 8617 §4.1.3), so an ed25519 key is skipped.

A message whose existing chain our A-R does not judge (no ``arc=``: no ARC check in the MX
chain) cannot be sealed (dkimpy refuses: the new seal's cv= would be unknown); it is
forwarded unsealed with a warning, as is any other sealing failure — forwarding never
fails because of ARC. Security: HIGH (our seal vouches for our authentication results).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import IO

from kittiwake.errors import ConfigError
from kittiwake.net.dns import to_ascii
from kittiwake.policy.arc import ArcError, seal
from kittiwake.policy.authres import HEADER, authserv_id_of, fields
from kittiwake.policy.dkim_io import read_head
from kittiwake.policy.dkim_sign import DkimKey, algorithm_of

__all__ = ["ArcSealer", "arc_sealer_for", "our_auth_results"]

log = logging.getLogger("kittiwake.cleanup")


def our_auth_results(message: bytes, authserv_id: str) -> str:
    """The value of the first Authentication-Results field claiming ``authserv_id`` in
    the header section, or ``<authserv_id>; none`` (RFC 8601 §2.2)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    for name, value in fields(head):
        if name.lower() == HEADER.lower() and authserv_id_of(value) == authserv_id.lower():
            return " ".join(value.split())
    return f"{authserv_id}; none"


class ArcSealer:
    """``seal(message)``: the ARC set to prepend (CRLF lines), or b"" when sealing fails.

    ``message``: bytes or a binary file at its start (streamed, never held whole; this
    blocks: call it in a worker thread)."""

    def __init__(self, domain: str, selector: str, key_pem: bytes, authserv_id: str) -> None:
        self.domain = domain
        self.selector = selector
        self._key = key_pem
        self.authserv_id = authserv_id

    def seal(self, message: bytes | IO[bytes]) -> bytes:
        split = read_head(message)
        try:
            lines = seal(
                split,
                domain=self.domain,
                selector=self.selector,
                key=self._key,
                authserv_id=self.authserv_id,
                auth_results=our_auth_results(split.head, self.authserv_id),
            )
        except ArcError as exc:
            log.warning("forwarded copy not ARC sealed: %s", exc)
            return b""
        return b"".join(lines)


def arc_sealer_for(keys: Sequence[DkimKey], domain: str, authserv_id: str) -> ArcSealer | None:
    """The sealer for ``domain`` from the configured DKIM keys (its first RSA key), or
    None. Reads the key file now: ``ConfigError`` at startup, never per message."""
    if not domain:
        return None
    wanted = to_ascii(domain)
    for key in keys:
        if to_ascii(key.domain) != wanted:
            continue
        try:
            pem = key.key_file.read_bytes()
            algorithm = key.algorithm or algorithm_of(pem)
        except (OSError, ValueError) as exc:
            raise ConfigError("dkim.keys", str(exc)) from None
        if algorithm != "rsa-sha256":
            continue
        return ArcSealer(key.domain, key.selector, pem, authserv_id)
    return None
