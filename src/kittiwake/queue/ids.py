"""Queue ids: short, unique, time-sortable names that are safe as file names.

Owns ``new_queue_id`` and ``is_queue_id``. Like Postfix's long queue ids
(``enable_long_queue_ids``), an id is the time of its creation followed by a few random
characters, so ``ls`` and ``ORDER BY queue_id`` list the queue oldest first. Mildly security
sensitive: ids become file names under the spool directory, so ``is_queue_id`` is the gate
that every path built from an outside-supplied id must pass.

Layout (14 characters, Crockford base32 digits, which sort in ASCII order like their values):
11 characters of microseconds since the Unix epoch (55 bits, good until the year 3111),
forced strictly increasing within the process so that two ids never share a timestamp, and
3 random characters (15 bits) in case two processes ever share a spool.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_TIME_CHARS = 11
_RANDOM_CHARS = 3
ID_LENGTH = _TIME_CHARS + _RANDOM_CHARS
_ID_RE = re.compile(f"[{ALPHABET}]{{{ID_LENGTH}}}")

_lock = threading.Lock()
_last_us = 0


def _b32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def new_queue_id(now: float | None = None) -> str:
    """A fresh queue id; ids made later in this process always sort after earlier ones."""
    global _last_us
    us = int((time.time() if now is None else now) * 1_000_000)
    with _lock:
        us = max(us, _last_us + 1)  # the clock may stand still or step back
        _last_us = us
    return _b32(us, _TIME_CHARS) + _b32(secrets.randbits(5 * _RANDOM_CHARS), _RANDOM_CHARS)


def is_queue_id(text: str) -> bool:
    """True when ``text`` has the exact shape of a queue id (and so is a safe file name)."""
    return _ID_RE.fullmatch(text) is not None


def queue_id_time(queue_id: str) -> float:
    """The Unix time encoded in a queue id (for listings and age checks)."""
    value = 0
    for ch in queue_id[:_TIME_CHARS]:
        value = value * 32 + ALPHABET.index(ch)
    return value / 1_000_000
