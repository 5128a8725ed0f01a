"""A private Postfix instance for tests and the benchmark.

Owns: writing a self-contained main.cf/master.cf under a base directory, creating the
directories with the ownership Postfix insists on, starting it with ``postfix -c DIR start``
and stopping exactly that instance (``postfix -c DIR stop``, then the master's PID).

Security: runs as root (Postfix requires it) but binds only to the loopback address it is
given, never consults the machine's resolver (DNS disabled, no peer-name lookups) and never
touches /etc/postfix or the system queue.

Layout under ``base_dir``::

    etc/    main.cf, master.cf, vmailbox (config_directory)
    queue/  queue_directory (root-owned, 0755)
    data/   data_directory (owned by the postfix user)
    log/    maillog (``maillog_file``)
    mail/   virtual_mailbox_base: mail/<domain>/<local>/{new,cur,tmp} (owned by 65534)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

POSTFIX = "/usr/sbin/postfix"
MAILBOX_UID = 65534  # nobody/nogroup: owner of delivered Maildirs
CATCHALL = "catchall"  # Maildir of unlisted recipients of a virtual domain

# Every service with chroot off (column 5 = n): a private queue has no jail to run in.
_MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixUnavailable(RuntimeError):
    """Postfix cannot run here (not installed, not root) or failed to start."""


def postfix_unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here, or None if it can."""
    if not os.path.exists(POSTFIX):
        return f"{POSTFIX} not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no 'postfix' system user"
    return None


def postfix_available() -> bool:
    return postfix_unavailable_reason() is None


def make_base_dir(prefix: str = "postfix-") -> Path:
    """A new directory under /tmp that Postfix can use as ``base_dir`` (the caller removes it).

    pytest's ``tmp_path`` will not do: its parents are 0700, and Postfix's unprivileged
    daemons (and virtual(8) as uid 65534) must be able to reach the queue and mailboxes.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _unsearchable_ancestor(path: Path) -> Path | None:
    for parent in path.parents:
        with contextlib.suppress(FileNotFoundError):  # created later, 0755
            if not parent.stat().st_mode & stat.S_IXOTH:
                return parent
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on a loopback ``host`` (racy, good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def split_hostport(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host.startswith("127."):
        raise ValueError(f"only loopback addresses allowed, got {listen!r}")
    return host, int(port)


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once ``host:port`` accepts a connection, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(2.0)
                return s.recv(512).startswith(b"220")
        except OSError:
            time.sleep(0.05)
    return False


def count_maildir(box: Path) -> int:
    """Messages delivered into the Maildir ``box`` (new/ plus cur/)."""
    total = 0
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            total += sum(1 for _ in os.scandir(box / sub))
    return total


class PrivatePostfix:
    """A Postfix instance of its own, listening for SMTP on ``listen`` ("127.0.0.x:PORT").

    Use as a context manager. ``virtual_domains`` get virtual(8) Maildir delivery: each address
    in ``mailboxes`` into ``mail/<domain>/<local>/``, any other recipient into
    ``mail/<domain>/catchall/`` (or 550 "User unknown" with ``catchall=False``). Mail for other
    domains fails with a 5.7.1 error unless ``relayhost`` (as ``[127.0.0.x]:port``) or
    ``default_transport``/``transport_maps`` are given. ``main_cf_extra`` overrides or adds
    main.cf parameters (e.g. ``relayhost``, ``transport_maps``, ``in_flow_delay``);
    ``master_extra`` lines are appended to master.cf verbatim; ``smtpd_options`` become ``-o``
    options of the listener.
    """

    def __init__(
        self,
        base_dir: Path,
        listen: str,
        *,
        main_cf_extra: Mapping[str, str] | None = None,
        master_extra: Sequence[str] = (),
        smtpd_options: Mapping[str, str] | None = None,
        virtual_domains: Sequence[str] = (),
        mailboxes: Sequence[str] = (),
        catchall: bool = True,
        myhostname: str = "postfix.test",
        start_timeout: float = 20.0,
    ) -> None:
        self.base = base_dir.resolve()
        self.listen = listen
        self.host, self.port = split_hostport(listen)
        self.etc = self.base / "etc"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.logdir = self.base / "log"
        self.mail = self.base / "mail"
        self.maillog = self.logdir / "maillog"
        self.start_timeout = start_timeout
        self.master_extra = list(master_extra)
        self.smtpd_options = dict(smtpd_options or {})
        self.virtual_domains = list(virtual_domains)
        self.mailboxes = list(mailboxes)
        self.catchall = catchall
        self.main_cf: dict[str, str] = self._default_main_cf(myhostname)
        if main_cf_extra and "relayhost" in main_cf_extra:
            self.main_cf["default_transport"] = "smtp"
        self.main_cf.update(main_cf_extra or {})
        self._started = False
        self._checked = False

    def _default_main_cf(self, myhostname: str) -> dict[str, str]:
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-{self.port}",
            "myhostname": myhostname,
            "mydomain": myhostname,
            "mydestination": "",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # Never ask the machine's resolver anything.
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "smtpd_peername_lookup": "no",
            # Mail for anywhere else (bounces included) fails here instead of making the smtp
            # client resolve the domain with getaddrinfo(); tests that relay set relayhost =
            # [127.0.0.x]:port (-> default_transport = smtp) or transport_maps with [address].
            "default_transport": "error:5.7.1 private test Postfix sends no mail out",
            # Loopback clients must not be throttled by anvil (50+ parallel sessions).
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "message_size_limit": str(100 * 1024 * 1024),
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
            "virtual_mailbox_domains": ", ".join(self.virtual_domains),
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": f"texthash:{self.etc / 'vmailbox'}",
            "virtual_uid_maps": f"static:{MAILBOX_UID}",
            "virtual_gid_maps": f"static:{MAILBOX_UID}",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PrivatePostfix:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_config(self) -> None:
        """Create the directory tree and write main.cf, master.cf and the mailbox map."""
        pf = pwd.getpwnam("postfix")
        if (blocked := _unsearchable_ancestor(self.base)) is not None:
            raise PostfixUnavailable(
                f"{blocked} is not searchable by other users, so Postfix's unprivileged "
                "daemons cannot reach the queue: use make_base_dir()"
            )
        for d in (self.base, self.etc, self.queue, self.logdir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            d.chmod(0o755)  # root-owned, not group/world writable: Postfix checks
        self.data.mkdir(exist_ok=True)
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        self.data.chmod(0o700)
        self.mail.mkdir(exist_ok=True)
        os.chown(self.mail, MAILBOX_UID, MAILBOX_UID)
        self.mail.chmod(0o755)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf.items())
        _write_if_changed(self.etc / "main.cf", main)
        opts = "".join(f"\n  -o {k}={v}" for k, v in self.smtpd_options.items())
        listener = f"{self.listen} inet n       -       n       -       -       smtpd{opts}\n"
        extra = "".join(line.rstrip("\n") + "\n" for line in self.master_extra)
        _write_if_changed(self.etc / "master.cf", listener + _MASTER_SERVICES + extra)
        # Maildir per listed recipient: mail/<domain>/<local>/ (the trailing / selects Maildir).
        # virtual(8) forbids regexp substitution, hence explicit entries plus a catch-all.
        lines = []
        for addr in self.mailboxes:
            local, _, domain = addr.rpartition("@")
            lines.append(f"{addr} {domain}/{local}/\n")
        if self.catchall:
            lines += [f"@{d} {d}/{CATCHALL}/\n" for d in self.virtual_domains]
        _write_if_changed(self.etc / "vmailbox", "".join(lines))

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        reason = postfix_unavailable_reason()
        if reason:
            raise PostfixUnavailable(reason)
        self.write_config()
        if not self._checked:  # slow (~2 s); `start` re-checks the essentials anyway
            check = self._postfix("check")
            if check.returncode != 0:
                raise PostfixUnavailable(f"postfix check failed: {check.stderr.strip()}")
            self._checked = True
        # postfix-script skips its own (slow) integrity checks once when this file exists.
        (self.queue / "quick-start").touch()
        self._started = True  # from here on, stop() must run
        started = self._postfix("start")
        if started.returncode != 0:
            self.stop()
            raise PostfixUnavailable(f"postfix start failed: {started.stderr.strip()}")
        if not wait_for_port(self.host, self.port, self.start_timeout):
            tail = self.log()[-2000:]
            self.stop()
            raise PostfixUnavailable(f"postfix did not listen on {self.listen}:\n{tail}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop this instance only: ``postfix -c DIR stop``, then its master PID if stuck.

        Also waits for the master's children (smtpd, cleanup, ...) to be gone, so the next
        measurement or test starts on a quiet machine.
        """
        if not self._started:
            return
        self._started = False
        pid = self.master_pid()
        family = [pid, *process_children(pid)] if pid is not None else []
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._postfix("stop", timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.05)
        for p in family:
            if _alive(p):
                os.kill(p, signal.SIGKILL)

    # -- inspection --------------------------------------------------------------------------

    def mailbox(self, domain: str, local: str) -> Path:
        return self.mail / domain / local

    def maildir_count(self, domain: str, local: str) -> int:
        return count_maildir(self.mailbox(domain, local))

    def wait_delivered(self, domain: str, local: str, count: int, timeout: float = 10.0) -> int:
        """Wait until ``count`` messages sit in the Maildir (or timeout); return the count."""
        deadline = time.monotonic() + timeout
        while (n := self.maildir_count(domain, local)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return n

    def queue_count(self) -> int:
        """Queue files not yet delivered (incoming, active, deferred, hold, maildrop)."""
        total = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(self.queue / sub):
                total += len(files)
        return total

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def remove_mailbox(self, domain: str, local: str) -> None:
        shutil.rmtree(self.mailbox(domain, local), ignore_errors=True)


def _write_if_changed(path: Path, text: str) -> None:
    # A freshly written main.cf makes `postfix start` re-run its slow checks (~2 s).
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    path.write_text(text)


def process_children(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone; Postfix's master is not our child, but be safe.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
