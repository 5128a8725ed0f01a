"""SASLprep (RFC 4013), the StringPrep profile for user names and passwords.

Owns ``saslprep``: RFC 4954 §4 asks servers to prepare the authorization identity with it,
and SCRAM (RFC 5802 §2.2) hashes the SASLprep'd password, so PLAIN, LOGIN and SCRAM must
prepare passwords the same way at ``user add`` and at login. For ASCII text without
control characters the function is the identity.

Security sensitive: a string that preparation refuses must fail authentication, never be
used unprepared.
"""

from __future__ import annotations

import stringprep
import unicodedata

__all__ = ["SaslPrepError", "saslprep"]


class SaslPrepError(ValueError):
    """The string contains a character RFC 4013 prohibits."""


# RFC 4013 §2.3: prohibited output (C.1.2 and C.2.1 to C.9 of RFC 3454).
_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare ``text`` (RFC 4013 §2); raise ``SaslPrepError`` when it is prohibited.

    ``allow_unassigned`` is for queries (a login attempt); stored strings (a new password,
    a new user name) must not contain unassigned code points (RFC 3454 §7).
    """
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to map, normalize or prohibit
    # §2.1 mapping: non-ASCII spaces to SPACE, "commonly mapped to nothing" removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    # §2.2 normalization: form KC.
    prepared = unicodedata.normalize("NFKC", mapped)
    for c in prepared:
        if any(table(c) for table in _PROHIBITED):
            raise SaslPrepError(f"prohibited character U+{ord(c):04X}")
        if not allow_unassigned and stringprep.in_table_a1(c):
            raise SaslPrepError(f"unassigned code point U+{ord(c):04X}")
    _check_bidi(prepared)
    return prepared


def _check_bidi(text: str) -> None:
    """RFC 3454 §6: RandALCat text must not contain LCat and must start and end RandAL."""
    if not any(stringprep.in_table_d1(c) for c in text):
        return
    if any(stringprep.in_table_d2(c) for c in text):
        raise SaslPrepError("mixed right-to-left and left-to-right text")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise SaslPrepError("right-to-left text must start and end with a right-to-left letter")
