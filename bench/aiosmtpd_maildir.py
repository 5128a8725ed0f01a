"""Baseline server for the benchmark: aiosmtpd with a durable Maildir handler.

Owns: accepting SMTP on a loopback address and writing each message into
``ROOT/<domain>/<local>/new/`` — written in ``tmp/``, fsynced, renamed into ``new/`` — before
answering 250 (the same promise Postfix makes: the file is fsynced, the rename relies on the
file system's ordered metadata journal; ``--fsync-dir`` also fsyncs ``new/``). Writes run in a
thread pool so concurrent sessions' fsyncs overlap, as a reasonable aiosmtpd deployment would.

Not security-sensitive: a benchmark peer bound to 127.0.0.0/8 only; local parts are sanitised
before they become path components.

Run: ``python -m bench.aiosmtpd_maildir --listen 127.0.0.1:PORT --root DIR [--loop asyncio]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_HOST = "aiosmtpd.test"  # never socket.getfqdn(): no resolver queries


class MaildirHandler:
    """Deliver every recipient's copy into its Maildir, fsynced, before the 250."""

    def __init__(self, root: Path, fsync_dir: bool) -> None:
        self.root = root
        self.fsync_dir = fsync_dir
        self.counter = itertools.count()
        self.pid = os.getpid()

    def _box(self, rcpt: str) -> Path:
        local, _, domain = rcpt.rpartition("@")
        box = self.root / _SAFE.sub("_", domain.lower()) / _SAFE.sub("_", local or "_")
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        return box

    def deliver(self, data: bytes, rcpts: list[str]) -> None:
        for rcpt in rcpts:
            box = self._box(rcpt)
            name = f"{time.time_ns()}.P{self.pid}Q{next(self.counter)}.{_HOST}"
            tmp = box / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, box / "new" / name)
            if self.fsync_dir:
                dfd = os.open(box / "new", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.deliver, data, rcpts)
        except OSError as exc:
            return f"451 4.3.0 Maildir write failed: {exc.strerror}"
        return "250 2.0.0 OK delivered"


async def serve(host: str, port: int, root: Path, fsync_dir: bool) -> None:
    handler = MaildirHandler(root, fsync_dir)
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTP(
            handler,
            data_size_limit=100 * 1024 * 1024,
            hostname=_HOST,
            command_call_limit=None,
            loop=loop,
        )

    server = await loop.create_server(factory, host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="127.0.0.x:PORT")
    p.add_argument("--root", required=True, type=Path, help="Maildir root")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--fsync-dir", action="store_true", help="also fsync new/ after the rename")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host.startswith("127."):
        raise SystemExit("loopback addresses only")
    coro = serve(host, int(port), args.root, args.fsync_dir)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
