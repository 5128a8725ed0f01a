"""The three servers the benchmark compares, each started privately on its own loopback port.

Owns: starting and stopping Kittiwake (``kittiwake serve --config``), a private Postfix
(tests.support.postfix) and the aiosmtpd Maildir baseline; knowing where each one delivers
mail; reporting the exact settings used. Every process started here is stopped by PID (or
``postfix -c DIR stop``) — never by name.

Not security-sensitive (benchmark tooling), but careful: loopback addresses only, and nothing
here may make a server query the machine's DNS resolver.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.postfix import (
    PostfixUnavailable,
    PrivatePostfix,
    count_maildir,
    process_children,
    split_hostport,
    wait_for_port,
)

DOMAIN = "bench.test"
REPO = Path(__file__).resolve().parent.parent
KITTIWAKE = REPO / ".venv" / "bin" / "kittiwake"


class TargetUnavailable(RuntimeError):
    """The server could not be started here; the benchmark skips it with this message."""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Target(ABC):
    """One server under test, listening for SMTP on ``listen`` and delivering to Maildirs."""

    name: str

    def __init__(self, workdir: Path, listen: str) -> None:
        self.workdir = workdir
        self.listen = listen
        self.host, self.port = split_hostport(listen)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def root_pid(self) -> int | None:
        """The process whose whole tree is the server (for memory sampling)."""

    @abstractmethod
    def mailbox(self, local: str) -> Path:
        """The Maildir that ``local@bench.test`` is delivered into."""

    @abstractmethod
    def settings(self) -> dict[str, str]:
        """The exact settings in effect, for the report."""

    def alive(self) -> bool:
        pid = self.root_pid()
        return pid is not None and _running(pid)

    def restart(self) -> None:
        self.stop()
        self.start()

    def delivered(self, local: str) -> int:
        return count_maildir(self.mailbox(local))

    def remove_mailbox(self, local: str) -> None:
        shutil.rmtree(self.mailbox(local), ignore_errors=True)


class SubprocessTarget(Target):
    """A server that is a child process of ours (its own session: Ctrl-C reaches only us)."""

    start_timeout = 30.0

    def __init__(self, workdir: Path, listen: str) -> None:
        super().__init__(workdir, listen)
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = workdir / f"{self.name}.log"

    @abstractmethod
    def command(self) -> list[str]: ...

    def prepare(self) -> None:
        """Write config files etc. before the process starts."""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cmd = self.command()
        if not os.access(cmd[0], os.X_OK):
            raise TargetUnavailable(f"{self.name}: {cmd[0]} not found or not executable")
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise TargetUnavailable(
                    f"{self.name}: `{' '.join(cmd)}` exited with status {rc} before "
                    f"listening on {self.listen}:\n{self.log_tail()}"
                )
            if wait_for_port(self.host, self.port, 0.2):
                return
        self.stop()
        raise TargetUnavailable(
            f"{self.name}: not answering on {self.listen} after {self.start_timeout:.0f}s:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        kids = process_children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for pid in kids:  # workers that outlived their parent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def root_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""


class KittiwakeTarget(SubprocessTarget):
    name = "kittiwake"

    def __init__(self, workdir: Path, listen: str, command: Sequence[str] = ()) -> None:
        super().__init__(workdir, listen)
        self.config = workdir / "kittiwake.toml"
        self.data_dir = workdir / "data"
        self.base_command = list(command) or [str(KITTIWAKE), "serve"]

    def config_text(self) -> str:
        return (
            f'hostname = "{DOMAIN}"\n'
            f'data_dir = "{self.data_dir}"\n'
            'log_level = "warning"\n'
            "[listen]\n"
            f'mx = "{self.listen}"\n'
            'submission = ""\n'
            'smtps = ""\n'
            "[limits]\n"
            "max_message_size = 104857600\n"
            "max_connections = 2000\n"
            "max_connections_per_ip = 2000\n"
            "[local]\n"
            f'domains = ["{DOMAIN}"]\n'
        )

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())

    def command(self) -> list[str]:
        return [*self.base_command, "--config", str(self.config)]

    def mailbox(self, local: str) -> Path:
        return self.data_dir / "mail" / DOMAIN / local

    def settings(self) -> dict[str, str]:
        return {"command": " ".join(self.command()), "config": self.config_text()}


class AiosmtpdTarget(SubprocessTarget):
    name = "aiosmtpd"

    def __init__(
        self, workdir: Path, listen: str, *, loop: str = "uvloop", fsync_dir: bool = False
    ) -> None:
        super().__init__(workdir, listen)
        self.root = workdir / "maildirs"
        self.loop = loop
        self.fsync_dir = fsync_dir

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.aiosmtpd_maildir", "--listen", self.listen]
        cmd += ["--root", str(self.root), "--loop", self.loop]
        return [*cmd, "--fsync-dir"] if self.fsync_dir else cmd

    def mailbox(self, local: str) -> Path:
        return self.root / DOMAIN / local

    def settings(self) -> dict[str, str]:
        return {
            "command": " ".join(self.command()),
            "handler": "Maildir tmp/ write + fsync(file) + rename to new/ in a thread pool"
            + (" + fsync(new/)" if self.fsync_dir else "")
            + "; 250 after that; command_call_limit=None; data_size_limit=100 MiB",
        }


# Parameters worth printing beside the results (defaults included: they shape the numbers).
POSTFIX_REPORTED = (
    "mail_version",
    "in_flow_delay",
    "default_process_limit",
    "smtpd_client_connection_count_limit",
    "smtpd_client_connection_rate_limit",
    "smtpd_client_message_rate_limit",
    "smtpd_client_event_limit_exceptions",
    "message_size_limit",
    "virtual_mailbox_limit",
    "smtpd_peername_lookup",
    "smtp_dns_support_level",
    "disable_dns_lookups",
    "default_destination_concurrency_limit",
    "virtual_destination_concurrency_limit",
    "qmgr_message_active_limit",
)


class PostfixTarget(Target):
    """A private Postfix (tests/support/postfix.py) as a benchmark target."""

    name = "postfix"
    reported: tuple[str, ...] = POSTFIX_REPORTED  # main.cf keys printed with the results

    def __init__(
        self,
        workdir: Path,
        listen: str,
        mailboxes: Sequence[str],
        main_cf_extra: Mapping[str, str] | None = None,
        *,
        virtual_domains: Sequence[str] = (DOMAIN,),
        myhostname: str = "postfix.bench.test",
    ) -> None:
        super().__init__(workdir, listen)
        self.pf = PrivatePostfix(
            workdir,
            listen,
            virtual_domains=list(virtual_domains),
            mailboxes=[f"{local}@{DOMAIN}" for local in mailboxes],
            main_cf_extra=main_cf_extra,
            myhostname=myhostname,
        )

    def start(self) -> None:
        try:
            self.pf.start()
        except PostfixUnavailable as exc:
            raise TargetUnavailable(f"postfix: {exc}") from exc

    def stop(self) -> None:
        self.pf.stop()

    def root_pid(self) -> int | None:
        return self.pf.master_pid()

    def mailbox(self, local: str) -> Path:
        return self.pf.mailbox(DOMAIN, local)

    def settings(self) -> dict[str, str]:
        out = subprocess.run(
            ["/usr/sbin/postconf", "-c", str(self.pf.etc), *self.reported],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        main_cf = "".join(f"{k} = {v}\n" for k, v in self.pf.main_cf.items())
        return {"main.cf (written)": main_cf, "effective (postconf)": out}
