"""Builds what the listeners get from the issue-5 configuration: intake and policy chain.

Owns ``build_intake`` (``Cleanup``, wrapped by ``cleanup.dkimsink.SigningIntake`` when
``[[dkim.keys]]`` are configured) and ``build_relay_policy`` (``[[policy.checks]]``):
nothing configured gives 0.3's chain (``ratelimit`` then ``recipients``); a configured
list runs in its order, with ``recipients`` appended when absent
(``plugins.effective_specs``: never an open relay). Server-bound checks get the server's
state: ``ratelimit`` / ``recipients`` the objects ``app`` built, the issue-5 checks
(``spf``, ``dkim``, ``arc``, ``dmarc``, ``authres``, ``dnsbl``, ``greylist``) a resolver on
``[dns]`` (never the system's when nameservers are configured), the hostname (the A-R
authserv-id), the store's greylisting state and ``mynetworks`` (not checked).
Security: HIGH (decides the order of the checks and what gets signed).
"""

from __future__ import annotations

from collections.abc import Callable

from kittiwake.cleanup.dkimsink import SigningIntake
from kittiwake.cleanup.writer import Cleanup
from kittiwake.config import Config
from kittiwake.config_dkim import signer_for
from kittiwake.envelope import SessionInfo
from kittiwake.greylisting import GreylistState
from kittiwake.net.dns import Resolver
from kittiwake.policy import PolicyChain
from kittiwake.policy.builtin import Services, bound_factories
from kittiwake.policy.dkim_sign import DkimKey
from kittiwake.policy.plugins import PluginFactory, build_checks, effective_specs
from kittiwake.policy.ratelimit import MessageRate
from kittiwake.policy.recipients import Recipients
from kittiwake.smtpd.intake import Intake

__all__ = ["build_intake", "build_relay_policy", "policy_resolver"]


def policy_resolver(config: Config) -> Resolver:
    """The checks' resolver, built from ``[dns]`` like the delivery agent's."""
    dns = config.dns
    return Resolver(dns.nameservers, dns.port, dns.timeout, use_system=not dns.nameservers)


def build_relay_policy(
    config: Config,
    message_rate: MessageRate,
    recipients: Recipients,
    greylist_state: Callable[[], GreylistState] | None = None,
) -> PolicyChain:
    """The chain for the MX/submission listeners (``ConfigError`` on a bad check)."""
    mynetworks = config.relay.mynetworks

    def exempt(session: SessionInfo) -> bool:  # greylisting skips our own clients
        return session.client_ip in mynetworks

    services = Services(
        policy_resolver(config), config.hostname, config.data_dir, exempt, greylist_state
    )
    bound: dict[str, PluginFactory] = {
        "ratelimit": lambda _options: message_rate,
        "recipients": lambda _options: recipients,
        **bound_factories(services),
    }
    checks = build_checks(effective_specs(config.policy.checks), bound=bound)
    return PolicyChain(checks, timeout=config.policy.timeout)


def build_intake(config: Config, cleanup: Cleanup, keys: tuple[DkimKey, ...]) -> Intake:
    """``cleanup``, signing submitted and ``mynetworks`` mail when ``[[dkim.keys]]`` are
    configured (``ConfigError`` for a bad key: at start, never per message)."""
    signer = signer_for(keys)
    if signer is None:
        return cleanup
    mynetworks = config.relay.mynetworks
    return SigningIntake(cleanup, signer, lambda session: session.client_ip in mynetworks)
