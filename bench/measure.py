"""Load generators and meters for the benchmark.

Owns: driving Postfix's ``smtp-source`` (bounded in time), a Python client that streams one
big message and times the final reply, a holder of idle connections, and a sampler of the
resident memory of a server's whole process tree (psutil, every ~20 ms).

Not security-sensitive; connects only to the loopback address it is given.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil

SMTP_SOURCE = "/usr/sbin/smtp-source"
CLIENT_HELO = "client.bench.test"
SENDER = "bench@client.bench.test"
MiB = 1024 * 1024


# -- memory ------------------------------------------------------------------------------------


def _tree_sum(root: int, read: Callable[[psutil.Process], int]) -> int:
    """``read(process)`` summed over ``root`` and all its descendants (0 if it is gone)."""
    try:
        proc = psutil.Process(root)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with suppress(psutil.Error):
            total += read(p)
    return total


def tree_rss(root: int) -> int:
    """Sum of RSS over ``root`` and all its descendants, in bytes (0 if it is gone).

    Shared pages are counted once per process, so a multi-process server (Postfix) looks
    bigger than its proportional share; the benchmark reports it as such.
    """
    return _tree_sum(root, lambda p: int(p.memory_info().rss))


def tree_pss(root: int) -> int:
    """Sum of PSS (shared pages divided among their sharers) over the tree, in bytes.

    Fairer than RSS for a multi-process server but slow to read (smaps), so it is taken once,
    not sampled.
    """
    return _tree_sum(root, lambda p: int(p.memory_full_info().pss))


class MemorySampler:
    """Samples the RSS of a process tree in a thread; ``peak`` and ``before`` in bytes.

    The tree's membership is re-read every ``refresh`` seconds (Postfix forks smtpd and
    cleanup processes on demand); the RSS of known members is read every ``interval``.
    """

    def __init__(
        self, root_pid: Callable[[], int | None], interval: float = 0.02, refresh: float = 0.1
    ) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.refresh = refresh
        self.before = 0
        self.peak = 0
        self.samples = 0
        self.procs_peak = 0  # most processes seen in the tree at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: list[psutil.Process] = []
        self._refreshed = 0.0

    def _members(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._refreshed >= self.refresh or not self._procs:
            self._refreshed = now
            pid = self.root_pid()
            try:
                root = psutil.Process(pid) if pid else None
                self._procs = [root, *root.children(recursive=True)] if root else []
            except psutil.Error:
                self._procs = []
            self.procs_peak = max(self.procs_peak, len(self._procs))
        return self._procs

    def sample(self) -> int:
        total = 0
        for p in self._members():
            with suppress(psutil.Error):
                total += p.memory_info().rss
        self.samples += 1
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._refreshed = 0.0
        self.before = self.sample()
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._refreshed = 0.0
        self.sample()

    @property
    def growth(self) -> int:
        return self.peak - self.before


# -- smtp-source -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _smtp_source_cmd(
    host: str,
    port: int,
    *,
    messages: int,
    sessions: int,
    size: int,
    rcpt: str,
    reuse: bool,
    message_file: str = "",
) -> list[str]:
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages)]
    # -F: a pre-formatted message (header and body; smtp-source ends each line with CRLF
    # and dot-stuffs); else -l: smtp-source's own headers and SIZE bytes of body.
    cmd += ["-F", message_file] if message_file else ["-l", str(size)]
    cmd += ["-M", CLIENT_HELO, "-f", SENDER, "-t", rcpt]
    if reuse:
        cmd.append("-d")
    return [*cmd, f"{host}:{port}"]


def _run(cmd: list[str], deadline: float) -> str | None:
    """Run one smtp-source; an error description, or None on success."""
    left = deadline - time.monotonic()
    if left <= 0:
        return "time budget exhausted before start"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out: {' '.join(cmd)}"
    if r.returncode != 0:
        return f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}"
    return None


def smtp_source_load(
    host: str,
    port: int,
    *,
    messages: int,
    sessions: int,
    per_session: int,
    size: int,
    rcpt: str,
    timeout: float,
    message_file: str = "",
) -> LoadResult:
    """Send ``messages`` messages of ``size`` body bytes over ``sessions`` parallel sessions.

    ``per_session == 1``: one smtp-source, a new connection per message (no ``-d``).
    ``per_session > 1``: waves of ``smtp-source -s SESSIONS -m SESSIONS*PER_SESSION -d``, so
    each connection carries about ``per_session`` messages (smtp-source hands the next message
    to whichever session is free). Waves, not a pool of one-session smtp-source processes:
    starting hundreds of smtp-source processes costs ~5 ms of CPU each, which on a small
    machine would be stolen from the server under test. ``message_file``: send that
    pre-formatted message (``-F``) instead of ``size`` generated bytes.
    """
    deadline = time.monotonic() + timeout
    start = time.perf_counter()
    wave = messages if per_session <= 1 else sessions * per_session
    full, rest = divmod(messages, wave)
    batches = [wave] * full + ([rest] if rest else [])
    cmds = [
        _smtp_source_cmd(
            host,
            port,
            messages=n,
            sessions=min(sessions, n),
            size=size,
            rcpt=rcpt,
            reuse=per_session > 1,
            message_file=message_file,
        )
        for n in batches
    ]
    errors: list[str] = []
    for cmd in cmds:
        err = _run(cmd, deadline)
        if err:  # bounded: don't keep hammering a failing server
            errors.append(err)
            break
    shown = f"{len(cmds)} x " if len(cmds) > 1 else ""
    return LoadResult(time.perf_counter() - start, [shown + " ".join(cmds[0])], errors)


# -- one big message ---------------------------------------------------------------------------


@dataclass
class BigResult:
    seconds: float  # connect to final reply
    data_seconds: float  # first body byte to final reply
    commit_seconds: float  # end-of-data sent to final reply
    reply: str


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def reply(self) -> str:
        """One (possibly multi-line) SMTP reply."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed after {lines!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("latin-1")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)


def _expect(r: _Lines, code: str, step: str) -> None:
    reply = r.reply()
    if not reply.startswith(code):
        raise ConnectionError(f"{step}: expected {code}, got {reply!r}")


def body_chunk(size: int = 64 * 1024) -> bytes:
    """``size`` bytes of 76-character lines, like a base64 attachment."""
    line = b"Zm9vYmFy" * 9 + b"Zm9v" + b"\r\n"  # 76 + CRLF
    return (line * (size // len(line) + 1))[: size - 2] + b"\r\n"


def send_big_message(host: str, port: int, *, size: int, rcpt: str, timeout: float) -> BigResult:
    """Stream one message of about ``size`` body bytes; time the final reply."""
    chunk = body_chunk()
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        r = _Lines(sock)
        _expect(r, "220", "greeting")
        for cmd, code in (
            (f"EHLO {CLIENT_HELO}", "250"),
            (f"MAIL FROM:<{SENDER}>", "250"),
            (f"RCPT TO:<{rcpt}>", "250"),
            ("DATA", "354"),
        ):
            sock.sendall(cmd.encode() + b"\r\n")
            _expect(r, code, cmd.split()[0])
        data_start = time.perf_counter()
        sock.sendall(b"Subject: bench big message\r\nFrom: <" + SENDER.encode() + b">\r\n\r\n")
        sent = 0
        while sent < size:
            piece = chunk if size - sent >= len(chunk) else body_chunk(max(size - sent, 2))
            sock.sendall(piece)
            sent += len(piece)
        sock.sendall(b".\r\n")
        commit_start = time.perf_counter()
        reply = r.reply()
        end = time.perf_counter()
        try:
            sock.sendall(b"QUIT\r\n")
            r.reply()
        except OSError:
            pass
    return BigResult(end - start, end - data_start, end - commit_start, reply)


# -- idle connections --------------------------------------------------------------------------


@contextmanager
def idle_connections(host: str, port: int, count: int, greet_timeout: float) -> Iterator[int]:
    """Open ``count`` connections, read each greeting, keep them open; yields how many
    were greeted within ``greet_timeout`` seconds. All sockets close on exit."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    greeted = 0
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, port))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + greet_timeout
        pending = len(socks)
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(min(left, 0.5)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                pending -= 1
                try:
                    if sock.recv(4096).startswith(b"220"):
                        greeted += 1
                except OSError:
                    pass
        yield greeted
    finally:
        sel.close()
        for s in socks:
            s.close()
