"""The composition root: builds every part from the configuration and runs them.

Owns start-up order (store → recovery → listeners), signal handling and the graceful
shutdown order (listeners → sessions → delivery → store). Only ``app`` and ``admin`` may
import everything.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from kittiwake import __version__
from kittiwake.cleanup.writer import Cleanup
from kittiwake.config import Config, ListenerConfig
from kittiwake.delivery.local import LocalMailboxes
from kittiwake.delivery.maildir import MaildirAgent
from kittiwake.net.tls import ensure_self_signed, server_context
from kittiwake.policy import PolicyChain
from kittiwake.policy.recipients import LocalRecipients
from kittiwake.queue.runner import DeliveryRunner
from kittiwake.queue.sqlite import SQLiteStore
from kittiwake.smtpd.auth import MECHANISMS, NoUsers
from kittiwake.smtpd.server import ConnectionLimits, SmtpServer
from kittiwake.smtpd.session import ListenerSettings

log = logging.getLogger("kittiwake.app")


def run(config: Config) -> int:
    """Run Kittiwake until SIGTERM/SIGINT; the process exit code."""
    return _run_loop(config.event_loop, _main(config))


def _run_loop(choice: str, main: Coroutine[Any, Any, int]) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if choice in ("auto", "uvloop"):
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if choice == "uvloop":
                print(
                    "kittiwake: event_loop = 'uvloop' but uvloop is not installed", file=sys.stderr
                )
                return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def _main(config: Config) -> int:
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if config.tls.cert_file is not None and config.tls.key_file is not None:
        cert, key = config.tls.cert_file, config.tls.key_file
    else:
        cert, key = ensure_self_signed(data_dir / "tls", config.hostname)
    tls = server_context(cert, key)

    store = SQLiteStore(data_dir)
    await store.open()
    mailboxes = LocalMailboxes(
        data_dir / "mail", config.local.domains, config.local.users, config.local.postmaster
    )
    maildir = MaildirAgent(mailboxes, config.hostname)
    runner = DeliveryRunner(store, lambda recipient, message: maildir)
    runner.start()
    await runner.recover()

    intake = Cleanup(store, config.hostname)
    policy = PolicyChain([LocalRecipients(mailboxes)])
    server = SmtpServer(
        ConnectionLimits(
            max_connections=config.limits.max_connections,
            max_per_ip=config.limits.max_connections_per_ip,
        )
    )

    def settings_for(listener: ListenerConfig) -> ListenerSettings:
        # MX takes mail from the world: STARTTLS, no AUTH. Submission and implicit TLS
        # offer AUTH (inside TLS only, RFC 4954 §4 / RFC 8314).
        auth = () if listener.role == "mx" else MECHANISMS
        return ListenerSettings(
            role=listener.role,
            proto=config.proto_config(
                starttls_available=not listener.implicit_tls, auth_mechanisms=auth
            ),
            policy=policy,
            intake=intake,
            authenticator=NoUsers(),
            tls_context=tls,
            command_timeout=config.timeouts.command,
            data_timeout=config.timeouts.data,
            on_queued=runner.submit,
            implicit_tls=listener.implicit_tls,
        )

    try:
        for listener in config.listeners:
            await server.listen(listener.host, listener.port, settings_for(listener))
    except OSError as exc:
        print(f"kittiwake: cannot listen: {exc}", file=sys.stderr)
        await runner.stop(5)
        await store.close()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    roles = ", ".join(f"{lc.role} {lc}" for lc in config.listeners)
    domains = ", ".join(config.local.domains)
    print(
        f"Kittiwake {__version__} ready on {roles}\n"
        f"Mail for {domains} lands in {(data_dir / 'mail').resolve()}/<domain>/<local-part>/new/",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: %d sessions open", server.session_count)
    await server.shutdown(config.timeouts.shutdown_grace)
    await runner.stop(config.timeouts.shutdown_grace)
    await store.close()
    log.info("stopped")
    return 0
