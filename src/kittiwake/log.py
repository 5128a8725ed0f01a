"""Logging set-up: one greppable line per event on stderr, Postfix style.

    2026-11-29T14:00:00.123Z kittiwake.smtpd info: connect from 127.0.0.1:40112

Owns the log format and the handler on the root logger. Mildly security sensitive: log
messages often quote peer input, so control characters are escaped — a peer must not be
able to forge a log line with an embedded newline. A traceback is written as extra lines
that carry the same prefix, so ``grep kittiwake.smtpd`` still finds all of it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}")

    return _CONTROL.sub(one, text)


class LineFormatter(logging.Formatter):
    """``<UTC ISO timestamp, ms> <logger> <level>: <message>``, controls escaped."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        prefix = f"{stamp} {record.name} {record.levelname.lower()}:"
        lines = [f"{prefix} {_escape(record.getMessage())}"]
        extra = ""
        if record.exc_info:
            extra = self.formatException(record.exc_info)
        if record.stack_info:
            extra = f"{extra}\n{self.formatStack(record.stack_info)}".lstrip("\n")
        lines += [f"{prefix} | {_escape(line)}" for line in extra.splitlines()]
        return "\n".join(lines)


class _KittiwakeHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``setup_logging`` installed, so a second call replaces it."""


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Log ``kittiwake.*`` at ``level`` (debug, info, warning, error) and everything else
    (asyncio, libraries) at warning or above, one line per event to ``stream`` (stderr).
    Idempotent: calling it again replaces the previous set-up."""
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}") from None
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _KittiwakeHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _KittiwakeHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LineFormatter())
    root.addHandler(handler)
    root.setLevel(max(levelno, logging.WARNING))
    logging.getLogger("kittiwake").setLevel(levelno)
