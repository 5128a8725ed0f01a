"""Run a real Kittiwake daemon for end-to-end tests: config, ports, process, Maildirs.

Owns ``KittiwakeServer``: it picks free loopback ports, writes a TOML config (defaults
below, deep-merged with a test's overrides), starts ``kittiwake serve`` as a subprocess
with stdout/stderr in files, waits until every listener accepts connections, and offers
the Maildirs, the spool and the log to the test. The process is only ever signalled by
its own PID. Not security sensitive (test code); binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.smtpclient import Address

START_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0

Overrides = dict[str, Any]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one, else quoted (``"example.net"`` is one key, not two)."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def to_toml(doc: dict[str, Any]) -> str:
    """Enough TOML for a config: scalars and arrays, tables and nested tables
    (``[relay.tls_policies]``); keys that are domain names are quoted."""
    return "\n".join(_toml_lines(doc, "")) + "\n"


def _toml_lines(doc: dict[str, Any], prefix: str) -> list[str]:
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for name, table in doc.items():
        if isinstance(table, dict):
            full = f"{prefix}.{_toml_key(name)}" if prefix else _toml_key(name)
            lines.append(f"\n[{full}]")
            lines += _toml_lines(table, full)
    return lines


_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=-")


def escape_component(text: str) -> str:
    """The Maildir path escaping documented in delivery/local.py, written independently."""
    raw = text.encode("utf-8")
    return "".join(
        chr(b) if b in _SAFE and not (i == 0 and b == 0x2E) else f"%{b:02X}"
        for i, b in enumerate(raw)
    )


def _kittiwake_command() -> list[str]:
    script = Path(sys.executable).with_name("kittiwake")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kittiwake"]


def _probe(addr: Address, greet: bool) -> None:
    """Connect; on a plaintext listener read the greeting and QUIT, so the probe's session
    is over (it no longer counts against connection limits) when this returns."""
    with socket.create_connection(addr, timeout=2) as s:
        if not greet:
            return
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(1024)
            if not chunk:
                raise ConnectionError("closed before the greeting")
            data += chunk
        if not data.startswith(b"220"):
            raise ConnectionError(f"not ready: {data!r}")
        s.sendall(b"QUIT\r\n")
        while s.recv(1024):
            pass


class KittiwakeServer:
    """One daemon under test. ``start()`` it (the fixtures do), ``stop()`` it at teardown."""

    def __init__(self, root: Path, overrides: Overrides | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "kittiwake.toml"
        self.stdout_path = root / "stdout.txt"
        self.stderr_path = root / "stderr.txt"
        self.mx: Address = ("127.0.0.1", free_port())
        self.submission: Address = ("127.0.0.1", free_port())
        self.smtps: Address = ("127.0.0.1", free_port())
        self.config: dict[str, Any] = deep_merge(self._defaults(), overrides or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _defaults(self) -> dict[str, Any]:
        return {
            "hostname": "mx.test",
            "data_dir": str(self.data_dir),
            "log_level": "debug",
            "listen": {
                "mx": f"{self.mx[0]}:{self.mx[1]}",
                "submission": f"{self.submission[0]}:{self.submission[1]}",
                "smtps": f"{self.smtps[0]}:{self.smtps[1]}",
            },
            "limits": {
                "max_connections": 1000,
                "max_connections_per_ip": 1000,
                "max_recipients": 100,
                "max_message_size": 1048576,
            },
            "timeouts": {"command": 300, "shutdown_grace": 10},
            "smtp": {"bare_linefeed": "normalize"},
            "local": {
                "domains": ["example.test"],
                "users": [],
                "postmaster": "postmaster@example.test",
            },
        }

    @property
    def listeners(self) -> list[Address]:
        roles = self.config["listen"]
        return [a for a, role in self._role_addrs() if roles.get(role, "x") != ""]

    def _role_addrs(self) -> list[tuple[Address, str]]:
        return [(self.mx, "mx"), (self.submission, "submission"), (self.smtps, "smtps")]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KittiwakeServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config))
        self.starts += 1
        banner = f"\n===== start #{self.starts} =====\n".encode()
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            self.proc = subprocess.Popen(
                [*_kittiwake_command(), "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a ^C to pytest is not a signal to the daemon
            )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(self.listeners)
        while waiting:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kittiwake exited with {self.proc.returncode} at start:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"kittiwake not listening on {waiting}:\n{self.log_text()}")
            try:
                _probe(waiting[0], greet=waiting[0] != self.smtps)
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise RuntimeError(f"kittiwake ignored SIGTERM for {timeout}s") from None
        return self.proc.returncode

    def stop_or_kill(self) -> None:
        """Teardown: ``stop()``, and SIGKILL if it ignores SIGTERM (no error either way)."""
        try:
            self.stop()
        except RuntimeError:
            self.kill9()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> KittiwakeServer:
        self.stop()
        return self.start()

    # ------------------------------------------------------------------ inspection

    def log_text(self) -> str:
        parts = []
        for name, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- kittiwake {name} ({path}) ---\n{text}")
        return "\n".join(parts)

    def mailbox_dir(self, addr: str) -> Path:
        """Where a catch-all (or configured, lower-case) mailbox lives (delivery/local.py:
        ``root/<domain>/<local>``, lower-cased, each octet outside [A-Za-z0-9._+=-] and a
        leading dot written as %XX)."""
        local, _, domain = addr.rpartition("@")
        return (
            self.data_dir
            / "mail"
            / escape_component(domain.lower())
            / escape_component(local.lower())
        )

    def maildir(self, addr: str) -> list[bytes]:
        """The messages in ``new/`` of the Maildir of ``addr``, oldest first."""
        new = self.mailbox_dir(addr) / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files if p.is_file()]

    def wait_for_mail(self, addr: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """Wait until ``addr`` has at least ``count`` messages; fail if not in time."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.maildir(addr)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{addr}: {len(found)} of {count} messages after {timeout}s "
                    f"in {self.mailbox_dir(addr)}"
                )
            time.sleep(0.02)

    def all_mail(self) -> dict[str, int]:
        """Every Maildir under data_dir/mail: "local@domain" -> messages in new/."""
        out: dict[str, int] = {}
        base = self.data_dir / "mail"
        if base.is_dir():
            for new in base.glob("*/*/new"):
                out[f"{new.parent.name}@{new.parent.parent.name}"] = len(list(new.iterdir()))
        return out

    def maildir_tmp_files(self) -> list[Path]:
        """Half-written deliveries (tmp/ of every Maildir)."""
        return sorted((self.data_dir / "mail").glob("*/*/tmp/*"))

    def spool_files(self) -> list[Path]:
        """Body files in the spool (``data_dir/queue/spool/<queue_id>``, see queue/spool.py);
        a body is buffered in memory until it outgrows 64 KiB, then streamed here."""
        spool = self.data_dir / "queue" / "spool"
        return sorted(p for p in spool.iterdir() if p.is_file()) if spool.is_dir() else []

    def exactly(self, addr: str, count: int, settle: float = 0.2) -> list[bytes]:
        """Wait for ``count`` messages, then make sure no further one arrives meanwhile."""
        found = self.wait_for_mail(addr, count) if count else []
        time.sleep(settle)
        again = self.maildir(addr)
        assert len(again) == count, f"{addr}: expected exactly {count}, found {len(again)}"
        return again or found


MakeServer = Callable[..., KittiwakeServer]
"""The ``make_server`` fixture: ``make_server(overrides=None, *, start=True)``."""
