"""The pickup service: moves messages from the maildrop into the queue, through cleanup.

Owns ``Pickup``. It polls ``<data_dir>/maildrop/`` every ``interval`` seconds (inotify is
not in the stdlib) and scans at once when ``wake()`` is called (the control socket's
``{"op": "pickup"}``, which ``sendmail`` sends after dropping a file). Each file is
injected with ``Cleanup.begin_local(..., submission=...)`` — so it gets our trace field
(``from userid N``) and the submission rewriting (``cleanup.rewrite``) — committed,
handed to the scheduler (``on_queued``), and only then removed from the maildrop.

Delivery semantics: at least once. A file is never lost (it is removed only after the
store's commit); a crash between the commit and the unlink injects it again at the next
start (one duplicate). Within one run, a file whose unlink fails is remembered and never
injected twice. Mail loops (too many Received fields) are bounced with ``bounce`` (the
notice sender's ``bounce_now``) instead of being queued for delivery.

Security: HIGH — the maildrop is writable by every local user. Files are opened with
``maildrop.read_drop`` (no symlinks, FIFOs or hard links; validated envelope); a file that
fails is moved to ``<data_dir>/corrupt/`` with a log line (never retried, never lost
silently). The submitter is the file's owner (``st_uid``), not what the file claims. The
body is re-normalised to CRLF and bounded by ``max_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import reduce
from pathlib import Path
from typing import BinaryIO

from kittiwake.cleanup.maildrop import (
    DropEnvelope,
    MaildropError,
    ensure_dir,
    maildrop_dir,
    read_drop,
    ready_files,
    stale_temp_files,
)
from kittiwake.cleanup.rewrite import Submission
from kittiwake.cleanup.writer import Cleanup, CleanupSink
from kittiwake.delivery.api import QueuedMessage
from kittiwake.envelope import BodyType, Envelope, Notify, Recipient, Ret
from kittiwake.fsutil import fsync_dir

log = logging.getLogger("kittiwake.pickup")

CHUNK = 64 * 1024
TEMP_MAX_AGE = 86400.0  # a temporary file untouched for a day: its sendmail is gone
_NOTIFY = {"success": Notify.SUCCESS, "failure": Notify.FAILURE, "delay": Notify.DELAY}


class _TooBig(Exception):
    pass


class Pickup:
    """``await start()``, ``wake()`` when a file was dropped, ``await stop()``;
    ``await scan()`` processes what is there now (tests call it directly).

    ``max_size``: the largest message in octets (0: no limit; ``limits.max_message_size``).
    """

    def __init__(
        self,
        data_dir: Path,
        cleanup: Cleanup,
        on_queued: Callable[[QueuedMessage], None],
        *,
        bounce: Callable[[QueuedMessage], Awaitable[object]] | None = None,
        interval: float = 1.0,
        max_size: int = 0,
    ) -> None:
        self.directory = maildrop_dir(data_dir)
        self.corrupt_dir = Path(data_dir) / "corrupt"
        self._cleanup = cleanup
        self._on_queued = on_queued
        self._bounce = bounce
        self.interval = interval
        self.max_size = max_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._skip: set[tuple[str, int]] = set()  # (name, inode) injected or refused already
        self._temp_checked = 0.0

    async def start(self) -> None:
        ensure_dir(self.directory)
        self._task = asyncio.create_task(self._run(), name="kittiwake-pickup")
        log.info("pickup: watching %s every %g s", self.directory, self.interval)

    def wake(self) -> None:
        """Scan now (a file was just dropped)."""
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.scan()
            except Exception:  # keep polling; the next scan retries
                log.exception("pickup: scan failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def scan(self) -> int:
        """Inject every complete file in the maildrop; how many were queued."""
        self._remove_stale_temp()
        count = 0
        for path in ready_files(self.directory):
            count += await self._pick(path)
        return count

    async def _pick(self, path: Path) -> bool:
        try:
            envelope, body, st = read_drop(path)
        except FileNotFoundError:
            return False
        except MaildropError as exc:
            self._quarantine(path, str(exc))
            return False
        except OSError as exc:  # e.g. a 0600 file of another user: say it once per run
            with contextlib.suppress(OSError):
                key = (path.name, os.lstat(path).st_ino)
                if key not in self._skip:
                    self._skip.add(key)
                    log.warning("pickup: cannot open %s: %s", path.name, exc)
            return False
        with body:
            key = (path.name, st.st_ino)
            if key in self._skip:
                return False
            return await self._inject(path, envelope, body, st)

    async def _inject(
        self, path: Path, drop: DropEnvelope, body: BinaryIO, st: os.stat_result
    ) -> bool:
        envelope = _envelope(drop)
        from_header = _from_header(drop) if drop.sender else None
        submission = Submission(drop.remove_bcc, from_header, uid=st.st_uid)
        try:
            sink = self._cleanup.begin_local(envelope, submission=submission)
        except Exception as exc:  # the store: try again at the next scan
            log.warning("pickup: %s: cannot open a spool file: %s", path.name, exc)
            return False
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, self._copy, body, sink)
        try:
            eight_bit = await work
            queued = await sink.commit(
                replace(
                    envelope, body_type=BodyType.EIGHTBITMIME if eight_bit else envelope.body_type
                )
            )
        except _TooBig:
            sink.abort()
            self._quarantine(path, f"larger than {self.max_size} octets")
            return False
        except Exception as exc:
            sink.abort()
            log.warning("pickup: %s: not queued, will retry: %s", path.name, exc)
            return False
        except BaseException:  # cancelled (stop): the file stays for the next start
            if work.done():
                sink.abort()
            else:
                work.add_done_callback(lambda _: sink.abort())
            raise
        log.info(
            "%s: pickup %s from uid %d (%s): from=<%s>, %d recipient(s)",
            queued.queue_id,
            path.name,
            st.st_uid,
            drop.user or "?",
            drop.sender,
            len(drop.recipients),
        )
        self._remove(path, st)
        if sink.hops_exceeded and self._bounce is not None:
            await self._bounce(queued)
        else:
            self._on_queued(queued)
        return True

    def _copy(self, body: BinaryIO, sink: CleanupSink) -> bool:
        """Worker thread: stream the message into the sink, CRLF-normalised; 8-bit seen?"""
        eight_bit = False
        size = 0
        carry_cr = False
        last = b""
        while chunk := body.read(CHUNK):
            size += len(chunk)
            if self.max_size and size > self.max_size:
                raise _TooBig
            eight_bit = eight_bit or not chunk.isascii()
            if carry_cr:
                chunk = b"\r" + chunk
            carry_cr = chunk.endswith(b"\r")
            if carry_cr:
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            if chunk:
                sink.write(chunk)
                last = chunk[-1:]
        if carry_cr:
            sink.write(b"\r\n")
        elif last and last != b"\n":
            sink.write(b"\r\n")  # the message must end with a line end
        return eight_bit

    def _remove(self, path: Path, st: os.stat_result) -> None:
        """Unlink the injected file (the same inode only), durably; remember it if that
        fails, so that this process never injects it twice."""
        self._skip.add((path.name, st.st_ino))
        try:
            if os.lstat(path).st_ino == st.st_ino:
                path.unlink()
                fsync_dir(self.directory)
                self._skip.discard((path.name, st.st_ino))
        except FileNotFoundError:
            self._skip.discard((path.name, st.st_ino))
        except OSError as exc:
            log.error(
                "pickup: %s queued but not removed (%s): a restart queues it again", path, exc
            )

    def _quarantine(self, path: Path, why: str) -> None:
        """Move a file we cannot use to ``<data_dir>/corrupt/`` (never lost, never retried)."""
        try:
            self.corrupt_dir.mkdir(mode=0o700, exist_ok=True)
            os.rename(path, self.corrupt_dir / f"maildrop-{path.name}")
            log.warning("pickup: %s moved to %s: %s", path.name, self.corrupt_dir, why)
        except FileNotFoundError:
            pass
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._skip.add((path.name, os.lstat(path).st_ino))
            log.error("pickup: %s is unusable (%s) and cannot be moved: %s", path, why, exc)

    def _remove_stale_temp(self) -> None:
        now = time.time()
        if now - self._temp_checked < 3600:
            return
        self._temp_checked = now
        for temp in stale_temp_files(self.directory, TEMP_MAX_AGE, now):
            with contextlib.suppress(OSError):
                temp.unlink()
                log.info("pickup: removed stale temporary file %s", temp.name)


def _envelope(drop: DropEnvelope) -> Envelope:
    notify = None
    if drop.notify is not None:
        notify = reduce(lambda a, b: a | b, (_NOTIFY.get(w, Notify.NEVER) for w in drop.notify))
    addresses = (drop.sender, *drop.recipients)
    return Envelope(
        sender=drop.sender,
        recipients=tuple(Recipient(r, notify=notify) for r in drop.recipients),
        smtputf8=not all(a.isascii() for a in addresses),
        ret=None if drop.ret is None else Ret(drop.ret.upper()),
        envid=drop.envid,
    )


def _from_header(drop: DropEnvelope) -> str:
    """``Full Name <sender>`` (RFC 2047-encoded when not ASCII) or the bare sender."""
    name = " ".join(drop.full_name.split())
    if not name or not drop.sender.isascii():
        return drop.sender
    return email.utils.formataddr((name, drop.sender), charset="utf-8")
