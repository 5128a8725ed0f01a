"""The log format ``serve`` installs: one greppable, injection-proof line per event."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from kittiwake.log import setup_logging

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (debug|info|warning|error): (.*)")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("kittiwake").level)
    out = io.StringIO()
    yield out
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logging.getLogger("kittiwake").setLevel(saved[2])


def test_format_and_levels(stream: io.StringIO) -> None:
    setup_logging("info", stream)
    logging.getLogger("kittiwake.smtpd").info("connect from %s", "127.0.0.1:4000")
    logging.getLogger("kittiwake.smtpd").debug("hidden at info")
    logging.getLogger("asyncio").info("library chatter is hidden below warning")
    logging.getLogger("asyncio").warning("but warnings show")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    m = LINE.fullmatch(lines[0])
    assert m and m.groups() == ("kittiwake.smtpd", "info", "connect from 127.0.0.1:4000")
    m = LINE.fullmatch(lines[1])
    assert m and m.group(1, 2) == ("asyncio", "warning")


def test_control_characters_cannot_forge_lines(stream: io.StringIO) -> None:
    setup_logging("debug", stream)
    fake = "evil\r\n2026-01-01T00:00:00.000Z kittiwake.smtpd info: forged\x00"
    logging.getLogger("kittiwake.smtpd").debug("helo %s", fake)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(
        "helo evil\\r\\n2026-01-01T00:00:00.000Z kittiwake.smtpd info: forged\\x00"
    )


def test_traceback_lines_keep_the_prefix(stream: io.StringIO) -> None:
    setup_logging("error", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("kittiwake.queue").exception("delivery crashed")
    lines = stream.getvalue().splitlines()
    assert len(lines) > 2
    assert all(LINE.fullmatch(line) for line in lines)
    assert all(" kittiwake.queue error: " in line for line in lines)
    assert lines[-1].endswith("| RuntimeError: boom")


def test_setup_twice_replaces_and_rejects_unknown_levels(stream: io.StringIO) -> None:
    setup_logging("info", stream)
    setup_logging("warning", stream)
    logging.getLogger("kittiwake").warning("once")
    assert stream.getvalue().count("once") == 1
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("loud", stream)
