"""The Sender Rewriting Scheme: forward and reverse SRS0/SRS1 addresses.

Owns ``Srs`` (the codec) and ``SrsError``. The format is libsrs2's (Shevek, "Sender
Rewriting Scheme", https://www.libsrs2.org/srs/srs.pdf; the code postsrsd ships), so our
addresses validate in postsrsd and theirs in ours given the same secret:

- ``SRS0=HHHH=TT=orig-domain=orig-local@<srs-domain>``: ``TT`` is the day number (Unix
  time / 86400) modulo 1024 in two base32 characters (RFC 4648 §6 alphabet); ``HHHH`` the
  first 4 characters of the standard base64 of HMAC-SHA1(secret, TT + domain + local), the
  data lower-cased (ASCII) first. Validation compares hashes case-insensitively (a hop may
  fold the case of a local part) and refuses a stamp more than ``max_age_days`` old (a
  stamp from "the future" wraps round to ~1024 days and is refused as well).
- A sender that is already ``SRS0=…@first-forwarder`` becomes
  ``SRS1=HHHH=first-forwarder==…@<srs-domain>`` (hash over first-forwarder and the rest,
  which keeps its leading separator), and an ``SRS1`` sender keeps its first-forwarder
  part with a new hash: bounces go straight back to the first forwarder, not along the
  whole chain ("guarded" scheme). Reversing ``SRS1`` gives that ``SRS0`` address back; only
  an ``SRS0`` carries a time stamp.
- A sender in the SRS domain itself is left as it is, and so is the null sender: ``<>``
  is never rewritten (RFC 5321 §4.5.5, it must stay null).

Security: HIGH. A forged SRS address that validated would make us relay to anywhere; the
hash is keyed (several secrets may validate, the first signs: key rotation) and compared in
constant time. A rewritten local part must fit RFC 5321 §4.5.3.1.1's 64 octets — our own
RCPT grammar, like many receivers', refuses longer ones, so a bounce to it could never come
back; ``forward`` then leaves the sender as it was (the mail still goes; SPF at the
receiver may fail) and says so (``fits`` is False).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

SEPARATORS = "=-+"  # libsrs2: the character after the SRS0/SRS1 tag
TIME_PRECISION = 86400  # one day
TIME_BASECHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32, RFC 4648 §6
TIME_SLOTS = 1024  # two base32 characters
HASH_LENGTH = 4  # libsrs2 and postsrsd default
MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1


class SrsError(ValueError):
    """An address that is not a valid SRS address of ours; ``reason`` says why (for logs
    and the RCPT reply): ``syntax``, ``hash``, ``expired``, ``not-srs``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def srs_tag(local: str) -> str | None:
    """``"SRS0"`` or ``"SRS1"`` when ``local`` starts like an SRS local part, else None."""
    tag = local[:4].upper()
    if tag in ("SRS0", "SRS1") and local[4:5] != "" and local[4] in SEPARATORS:
        return tag
    return None


def _unquote(local: str) -> str:
    if len(local) >= 2 and local[0] == local[-1] == '"':
        out, chars = [], iter(local[1:-1])
        for c in chars:
            out.append(next(chars, "") if c == "\\" else c)
        return "".join(out)
    return local


class Srs:
    """``Srs(["secret"], "example.org").forward("alice@sender.example")``.

    ``secrets[0]`` signs; all of them validate. ``clock`` returns Unix time (tests
    inject one to age addresses).
    """

    def __init__(
        self,
        secrets: Sequence[str],
        domain: str,
        *,
        max_age_days: int = 21,
        hash_length: int = HASH_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [s.encode() for s in secrets if s]
        if not keys:
            raise ValueError("SRS needs a secret")
        self._keys = keys
        self.domain = domain.lower().rstrip(".")
        self.max_age_days = max_age_days
        self.hash_length = hash_length
        self._clock = clock

    # ------------------------------------------------------------------ pieces

    def timestamp(self, now: float | None = None) -> str:
        day = int((self._clock() if now is None else now) // TIME_PRECISION)
        return TIME_BASECHARS[(day >> 5) & 31] + TIME_BASECHARS[day & 31]

    def _hash(self, key: bytes, *parts: str) -> str:
        data = b"".join(p.encode("utf-8", "surrogateescape").lower() for p in parts)
        digest = hmac.new(key, data, hashlib.sha1).digest()
        return base64.b64encode(digest).decode()[: self.hash_length]

    def _check_hash(self, given: str, *parts: str) -> None:
        if len(given) < self.hash_length:
            raise SrsError("hash", "SRS hash too short")
        mine = given[: self.hash_length].lower().encode()
        # Every key is tried (no early exit), each in constant time.
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(mine, self._hash(key, *parts).lower().encode())
        if not ok:
            raise SrsError("hash", "SRS hash invalid")

    def _check_stamp(self, stamp: str) -> None:
        if len(stamp) != 2:
            raise SrsError("syntax", "SRS time stamp malformed")
        then = 0
        for c in stamp.upper():
            value = TIME_BASECHARS.find(c)
            if value < 0:
                raise SrsError("syntax", "SRS time stamp malformed")
            then = (then << 5) | value
        now = int(self._clock() // TIME_PRECISION) % TIME_SLOTS
        while now < then:
            now += TIME_SLOTS
        if now - then > self.max_age_days:
            raise SrsError("expired", "SRS address expired")

    # ------------------------------------------------------------------ the scheme

    def forward(self, sender: str) -> str:
        """The SRS form of ``sender`` for mail we forward (see the module docstring)."""
        rewritten = self.rewrite(sender)
        return rewritten if self.fits(rewritten) else sender

    @staticmethod
    def fits(address: str) -> bool:
        return len(address.rpartition("@")[0].encode("utf-8", "surrogateescape")) <= MAX_LOCAL

    def rewrite(self, sender: str) -> str:
        """``forward`` without the length rule."""
        local, at, host = sender.rpartition("@")
        if not at or not local or not host or host.lower().rstrip(".") == self.domain:
            return sender  # <>, a bare name, or one of our own SRS addresses already
        local = _unquote(local)
        key = self._keys[0]
        tag = srs_tag(local)
        if tag == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) == 3 and all(parts[1:]):
                _, first, rest = parts
                return f"SRS1={self._hash(key, first, rest)}={first}={rest}@{self.domain}"
        elif tag == "SRS0":
            rest = local[4:]  # keeps its separator: SRS1=HHHH=host==HHHH=TT=...
            return f"SRS1={self._hash(key, host, rest)}={host}={rest}@{self.domain}"
        stamp = self.timestamp()
        digest = self._hash(key, stamp, host, local)
        return f"SRS0={digest}={stamp}={host}={local}@{self.domain}"

    def reverse(self, address: str) -> str:
        """The address an SRS address of ours stands for; raises ``SrsError``. The domain
        part is not looked at (the caller decides which domains hold SRS addresses)."""
        local = _unquote(address.rpartition("@")[0] if "@" in address else address)
        tag = srs_tag(local)
        if tag == "SRS0":
            parts = local[5:].split("=", 3)
            if len(parts) != 4 or not all(parts):
                raise SrsError("syntax", "SRS0 address malformed")
            digest, stamp, host, user = parts
            self._check_stamp(stamp)
            self._check_hash(digest, stamp, host, user)
            return f"{user}@{host}"
        if tag == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) != 3 or not all(parts):
                raise SrsError("syntax", "SRS1 address malformed")
            digest, host, user = parts
            self._check_hash(digest, host, user)
            return f"SRS0{user}@{host}"
        raise SrsError("not-srs", "not an SRS address")
