"""Check results (RFC 8601 vocabulary) collected per connection and per message.

Owns ``CheckResult`` (one method's outcome: ``spf=pass``, ``dkim=fail``...), ``Results``
(everything the checks of one transaction found: results in order, the header fields they
asked to add, the quarantine decision) and ``current_results()``, through which a check
at any stage reads what earlier checks found (the chain sets it around every call).
The ``result`` strings are RFC 8601 §2.7's: pass, fail, softfail, neutral, none,
temperror, permerror, policy (plus ``hardfail``/``invalid`` style values a method may
define). Not security sensitive by itself; the header fields are checked here (RFC 5322
§2.2: a field name is printable ASCII without colon; no CR/LF in values) because they
come from plugin code and end up in the message.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["CheckResult", "Results", "current_results", "valid_header"]

_FIELD_NAME_RE = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §3.6.8 ftext, kept under 78


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One authentication method's outcome (RFC 8601 §2.7).

    ``method`` (``spf``, ``dkim``, ``dmarc``, ``arc``, ``iprev`` or a plugin's own),
    ``result`` (``pass``, ``fail``...), ``reason`` (free text, RFC 8601 §2.2 ``reason``),
    ``properties``: ``(("smtp.mailfrom", "example.com"), ("header.d", "example.com"))``.
    """

    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def property(self, name: str) -> str | None:
        """The first value of the property ``ptype.property`` (``header.d``), or None."""
        return next((v for k, v in self.properties if k == name), None)

    def __str__(self) -> str:
        props = "".join(f" {k}={v}" for k, v in self.properties)
        why = f" reason={self.reason!r}" if self.reason else ""
        return f"{self.method}={self.result}{why}{props}"


def valid_header(name: str, value: str) -> bool:
    """A field a check may add: RFC 5322 field name, value without CR, LF or NUL."""
    return _FIELD_NAME_RE.fullmatch(name) is not None and not any(c in value for c in "\r\n\0")


@dataclass(slots=True)
class Results:
    """What the checks of one connection or transaction found, in order.

    ``entries`` pairs each result with the name of the check that reported it; ``headers``
    are the fields to add to the message (in the order asked); ``quarantine`` holds the
    reason once a check asked for it (the message then goes to the Junk folder).
    """

    entries: list[tuple[str, CheckResult]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    quarantine: str | None = None

    def add(self, check: str, result: CheckResult) -> None:
        self.entries.append((check, result))

    def add_header(self, name: str, value: str) -> None:
        if not valid_header(name, value):
            raise ValueError(f"invalid header field {name!r}: {value!r}")
        self.headers.append((name, value))

    def get(self, method: str) -> CheckResult | None:
        """The latest result for ``method`` (``"spf"``), or None."""
        for _, result in reversed(self.entries):
            if result.method == method:
                return result
        return None

    def all(self, method: str) -> list[CheckResult]:
        """Every result for ``method`` (DKIM has one per signature)."""
        return [r for _, r in self.entries if r.method == method]

    def __iter__(self) -> Iterator[CheckResult]:
        return (r for _, r in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def fork(self) -> Results:
        """A transaction's collection starting from the connection's (connect/HELO results)."""
        return Results(list(self.entries), list(self.headers), self.quarantine)

    def summary(self) -> str:
        """One log line: ``spf=pass dkim=fail quarantine=...``."""
        parts = [f"{r.method}={r.result}" for _, r in self.entries]
        if self.quarantine is not None:
            parts.append("quarantine")
        if self.headers:
            parts.append(f"headers={len(self.headers)}")
        return " ".join(parts) or "-"


_CURRENT: contextvars.ContextVar[Results | None] = contextvars.ContextVar(
    "kittiwake_policy_results", default=None
)


def current_results() -> Results | None:
    """The collection of the transaction being checked (None outside a chain call)."""
    return _CURRENT.get()


def set_current(results: Results | None) -> contextvars.Token[Results | None]:
    return _CURRENT.set(results)


def reset_current(token: contextvars.Token[Results | None]) -> None:
    _CURRENT.reset(token)
