"""The composition root: builds every part from the configuration and runs them.

Owns start-up order (store → scheduler + recovery → control socket → listeners), signal
handling and the graceful shutdown order (listeners → sessions → control → scheduler →
agents → store). Only ``app`` and ``admin`` may import everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from kittiwake import __version__
from kittiwake.addressing.setup import build_directory
from kittiwake.admin.control import ControlServer, socket_path
from kittiwake.app_policy import build_intake, build_relay_policy
from kittiwake.auth.limiter import FailureLimiter, LimiterSettings
from kittiwake.auth.ownership import Ownership
from kittiwake.auth.sqlite import FILENAME as USERS_FILE
from kittiwake.auth.sqlite import SQLiteUserStore
from kittiwake.cleanup.arcseal import arc_sealer_for
from kittiwake.cleanup.expand import Expander
from kittiwake.cleanup.notices import NoticeSender
from kittiwake.cleanup.pickup import Pickup
from kittiwake.cleanup.rewrite import RewriteSettings
from kittiwake.cleanup.writer import Cleanup
from kittiwake.config import Config
from kittiwake.config_server import ListenerConfig
from kittiwake.delivery.api import DeliveryAgent
from kittiwake.delivery.lmtp import LmtpAgent
from kittiwake.delivery.maildir import MaildirAgent
from kittiwake.delivery.mx import MxFinder
from kittiwake.delivery.smtp import SmtpAgent
from kittiwake.delivery.tlspolicy import TlsPolicy, TlsPolicyTable
from kittiwake.net.dns import Resolver
from kittiwake.net.proxy_listen import ProxySettings
from kittiwake.net.tls import ensure_self_signed, server_context
from kittiwake.policy import PolicyChain
from kittiwake.policy.etrn import handle_etrn
from kittiwake.policy.ratelimit import ConnectionRate, MessageRate
from kittiwake.policy.recipients import Recipients
from kittiwake.policy.sender import SenderOwnership
from kittiwake.policy.submission import RequireAuth
from kittiwake.queue.routing import Router
from kittiwake.queue.scheduler import Scheduler, SchedulerSettings
from kittiwake.queue.sqlite import SQLiteStore
from kittiwake.smtpd.auth import UserAuthenticator
from kittiwake.smtpd.server import ConnectionLimits, SmtpServer
from kittiwake.smtpd.settings import ListenerSettings

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
                main.close()
                return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _tls_context(config: Config) -> ssl.SSLContext:
    if config.tls.cert_file is not None and config.tls.key_file is not None:
        return server_context(config.tls.cert_file, config.tls.key_file)
    return server_context(*ensure_self_signed(config.data_dir / "tls", config.hostname))


def _smtp_agent(config: Config) -> SmtpAgent:
    relay = config.relay
    resolver = Resolver(
        config.dns.nameservers,
        config.dns.port,
        config.dns.timeout,
        use_system=not config.dns.nameservers,
    )
    finder = MxFinder(
        resolver,
        own_names={config.hostname.lower()},
        own_endpoints=[(lc.host, lc.port) for lc in config.listeners],
        default_port=relay.smtp_port,
    )
    tls = TlsPolicyTable(
        TlsPolicy(relay.tls_policy),
        {domain: TlsPolicy(level) for domain, level in relay.tls_policies.items()},
        relay.tls_ca_file,
    )
    credentials = relay.smarthost_credentials
    smarthost = relay.smarthost
    return SmtpAgent(
        config.hostname,
        finder,
        tls,
        credentials=lambda route: credentials if smarthost and route.nexthop == smarthost else None,
    )


async def _main(config: Config) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    tls = _tls_context(config)

    store = SQLiteStore(config.data_dir)
    await store.open()
    users = SQLiteUserStore(config.data_dir / USERS_FILE)
    await users.start()
    mailboxes, directory = build_directory(
        config, mailbox_exists=users.exists, has_users=users.has_users
    )
    smtp = _smtp_agent(config)
    lmtp = LmtpAgent(config.hostname)
    agents: dict[str, DeliveryAgent] = {
        "local": MaildirAgent(mailboxes, config.hostname),
        "smtp": smtp,
        "lmtp": lmtp,
    }
    router = Router(
        config.transport,
        (*config.local.domains, *config.addressing.virtual_domains),
        smarthost=config.relay.smarthost or None,
    )
    rewrite = RewriteSettings(
        config.submission.rewrite_domain,
        add_missing_headers=config.submission.add_missing_headers,
    )
    # Forwarded (SRS) copies are ARC sealed with the SRS domain's [[dkim.keys]] RSA key.
    forwarder = config.addressing.srs.domain_or(next(iter(config.local.domains), ""))
    sealer = arc_sealer_for(config.dkim_keys, forwarder, config.hostname)
    expander = Expander(directory, sealer=sealer)
    cleanup = Cleanup(store, config.hostname, rewrite=rewrite, expander=expander)
    scheduler: Scheduler | None = None

    def on_queued(message: Any) -> None:
        assert scheduler is not None
        scheduler.submit(message)

    cleanup.on_forward = on_queued  # SRS-forwarded copies (cleanup.expand)
    rates = config.ratelimit
    message_rate = MessageRate(rates.messages_per_user_per_hour, rates.exempt)
    recipients = Recipients(
        directory, relay_domains=config.transport, mynetworks=config.relay.mynetworks
    )
    # [[policy.checks]] on the MX port (default: ratelimit, recipients); [[dkim.keys]]
    relay_policy = build_relay_policy(config, message_rate, recipients, store.greylist_state)
    # The MX chain's queued/delivered/deferred/bounced stages hear the scheduler's events;
    # its pending notifications are drained at shutdown.
    notifier = NoticeSender(cleanup, store, config.hostname, config.local.postmaster, on_queued)
    scheduler = Scheduler(
        store,
        agents,
        router.route,
        notifier,
        SchedulerSettings(**dataclasses.asdict(config.queue)),
        events=relay_policy,
    )
    scheduler.start()
    await scheduler.recover()
    pickup = Pickup(
        config.data_dir,
        cleanup,
        scheduler.submit,
        bounce=notifier.bounce_now,
        max_size=config.limits.max_message_size,
    )
    await pickup.start()
    control = ControlServer(socket_path(config.data_dir), scheduler, on_pickup=pickup.wake)
    await control.start()

    auth = config.auth
    ownership = Ownership(
        users,
        delimiter=config.addressing.recipient_delimiter,
        strict=auth.sender_ownership == "strict",
    )
    authenticator = UserAuthenticator(
        users,
        FailureLimiter(
            LimiterSettings(
                max_per_ip=auth.max_failures_per_ip,
                max_per_user=auth.max_failures_per_user,
                window=auth.failure_window,
                lockout=auth.lockout,
            )
        ),
        ownership,
    )
    # MAIL checks in order: who may submit, with which sender, how often (only MAILs the
    # earlier checks accepted count against the rate).
    intake = build_intake(config, cleanup, config.dkim_keys)
    submission_policy = PolicyChain(
        [RequireAuth(), SenderOwnership(ownership), message_rate, recipients]
    )
    local_only = PolicyChain([Recipients(directory)])
    etrn = functools.partial(handle_etrn, allowed=config.etrn.allowed, flush=scheduler.flush)

    def settings_for(listener: ListenerConfig) -> ListenerSettings:
        # MX takes mail from the world: STARTTLS, no AUTH. Submission and implicit TLS
        # offer AUTH (inside TLS only, RFC 4954 §4 / RFC 8314). LMTP: a trusted local hop.
        lmtp_role = listener.role == "lmtp"
        mechanisms = () if listener.role in ("mx", "lmtp") else auth.mechanisms
        return ListenerSettings(
            role=listener.role,
            proto=config.listener_proto(
                listener, tls_available=not lmtp_role, auth_mechanisms=mechanisms
            ),
            policy=(
                local_only
                if lmtp_role
                else relay_policy
                if listener.role == "mx"
                else submission_policy
            ),
            intake=cleanup if lmtp_role else intake,
            authenticator=authenticator,
            tls_context=None if lmtp_role else tls,
            command_timeout=config.timeouts.command,
            data_timeout=config.timeouts.data,
            on_queued=scheduler.submit,
            implicit_tls=listener.implicit_tls,
            etrn=etrn,
            spool_dir=config.data_dir,
        )

    server = SmtpServer(
        ConnectionLimits(
            max_connections=config.limits.max_connections,
            max_per_ip=config.limits.max_connections_per_ip,
        ),
        connection_rate=ConnectionRate(rates.connections_per_ip_per_minute, rates.exempt),
    )

    async def close_all() -> None:
        await control.stop()
        await pickup.stop()
        assert scheduler is not None
        await scheduler.stop(config.timeouts.shutdown_grace)
        await relay_policy.drain()
        await smtp.close()
        await lmtp.close()
        await store.close()
        await users.close()

    proxy = ProxySettings(config.proxy.trusted, config.proxy.timeout)
    try:
        for listener in config.listeners:
            proxied = config.proxy.enabled_for(listener.role)
            await server.listen(
                listener.host,
                listener.port,
                settings_for(listener),
                proxy=proxy if proxied else None,
            )
    except OSError as exc:
        print(f"kittiwake: cannot listen: {exc}", file=sys.stderr)
        await server.shutdown(1)
        await close_all()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    roles = ", ".join(f"{lc.role} {lc}" for lc in config.listeners)
    domains = ", ".join(config.local.domains)
    maildirs = (config.data_dir / "mail").resolve()
    print(
        f"Kittiwake {__version__} ready on {roles}\n"
        f"Mail for {domains} lands in {maildirs}/<domain>/<local-part>/new/",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: %d sessions open", server.session_count)
    await server.shutdown(config.timeouts.shutdown_grace)
    await close_all()
    log.info("stopped")
    return 0
