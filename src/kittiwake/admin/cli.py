"""The ``kittiwake`` command line: ``serve``, ``check-config``, ``version``, ``queue``, ``mailq``,
``user``, ``policy``.

Owns argument parsing, the exit codes (0 fine, 1 bad config in ``check-config``, 2 bad
config or usage in ``serve``; ``queue``'s are in ``admin.queue_cli``) and the
human-readable config summary. Not security sensitive: it only loads the configuration
and hands it to ``kittiwake.app.run`` (or to the queue commands).
"""

from __future__ import annotations

import platform
import ssl
import sys
from pathlib import Path

import click

from kittiwake import __version__
from kittiwake.admin.dkim_cli import dkim
from kittiwake.admin.policy_cli import policy
from kittiwake.admin.queue_cli import mailq, queue
from kittiwake.admin.sendmail import sendmail_command
from kittiwake.admin.user_cli import user
from kittiwake.config import Config, load_config
from kittiwake.config_server import ROLES
from kittiwake.errors import ConfigError
from kittiwake.log import setup_logging

EXIT_CONFIG_CHECK = 1  # check-config: the file is wrong
EXIT_CONFIG_SERVE = 2  # serve: cannot start with this configuration (as for usage errors)

_CONFIG_PATH = click.Path(dir_okay=False, path_type=Path)


def _origin(path: Path | None) -> str:
    return str(path) if path is not None else "built-in defaults"


def summary(config: Config) -> list[str]:
    """The effective settings worth a glance: listeners, TLS, domains, mailboxes."""
    rows: list[tuple[str, str]] = [
        ("hostname", config.hostname),
        ("data_dir", str(config.data_dir)),
    ]
    kinds = {"smtps": "implicit TLS", "lmtp": "LMTP, no TLS"}
    for role in ROLES:
        lc = config.listener(role)
        kind = kinds.get(role, "STARTTLS")
        rows.append((role, f"{lc} ({kind})" if lc else "disabled"))
    if config.tls.cert_file is None:
        rows.append(("tls", f"self-signed, kept in {config.data_dir / 'tls'}"))
    else:
        rows.append(("tls", f"{config.tls.cert_file} + {config.tls.key_file}"))
    local = config.local
    rows.append(("domains", ", ".join(local.domains)))
    rows.append(("mailboxes", ", ".join(local.users) or "any local part (catch-all)"))
    rows.append(("postmaster", local.postmaster))
    rows += _mta_rows(config)
    width = max(len(name) for name, _ in rows)
    return [f"{name.ljust(width)}  {value}" for name, value in rows]


def _mta_rows(config: Config) -> list[tuple[str, str]]:
    """Relay, routing, DNS, queue and ETRN settings (the password is never shown)."""
    relay = config.relay
    nets = relay.mynetworks
    rows = [
        ("mynetworks", f"{nets} (relay without AUTH)" if nets else "none (no relay without AUTH)")
    ]
    hop = relay.smarthost or "none (deliver by DNS MX)"
    if relay.smarthost_credentials:
        hop += f", AUTH as {relay.smarthost_username}"
    rows.append(("smarthost", hop))
    tls = relay.tls_policy + "".join(f", {d}: {p}" for d, p in relay.tls_policies.items())
    if relay.tls_ca_file:
        tls += f" (CA {relay.tls_ca_file})"
    rows.append(("relay tls", tls))
    for domain, transport in config.transport.items():
        rows.append(("transport", f"{domain} -> {transport}"))
    dns = config.dns
    servers = ", ".join(dns.nameservers) or "system resolv.conf"
    rows.append(("dns", f"{servers} (port {dns.port}, timeout {dns.timeout:g} s)"))
    q = config.queue
    rows.append(
        (
            "queue",
            f"retry {_span(q.retry_first)}..{_span(q.retry_max)}, lifetime "
            f"{_span(q.max_lifetime)}, delay warning {_span(q.delay_warning)}, "
            f"{q.destination_concurrency} per destination, {q.active_limit} active",
        )
    )
    rows.append(("etrn", f"allowed from {config.etrn.allowed}" if config.etrn.enabled else "off"))
    return rows


def _span(seconds: float) -> str:
    """``300`` → ``5m``, ``432000`` → ``5d``, ``90`` → ``90s`` (exact units only)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kittiwake", message="%(prog)s %(version)s")
def main() -> None:
    """Kittiwake, a mail transfer agent in typed asyncio Python."""


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=_CONFIG_PATH,
    default=None,
    envvar="KITTIWAKE_CONFIG",
    help="TOML configuration file (default: built-in settings, no file needed).",
)
def serve(config_path: Path | None) -> None:
    """Run the mail server in the foreground until SIGTERM or Ctrl-C."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        click.echo(f"kittiwake: {_origin(config_path)}: {e}", err=True)
        sys.exit(EXIT_CONFIG_SERVE)
    setup_logging(config.log_level)
    # Lazy: the composition root pulls in everything. (The ignore covers app.py's absence.)
    from kittiwake.app import run

    try:
        code = run(config)
    except ConfigError as e:  # a problem only visible at start-up (e.g. a TLS file)
        click.echo(f"kittiwake: {_origin(config_path)}: {e}", err=True)
        code = EXIT_CONFIG_SERVE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@main.command("check-config")
@click.argument("config_path", metavar="FILE", type=_CONFIG_PATH)
def check_config(config_path: Path) -> None:
    """Validate FILE and print the effective listeners and domains."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        click.echo(f"{config_path}: {e}", err=True)
        sys.exit(EXIT_CONFIG_CHECK)
    click.echo(f"{config_path}: OK")
    for line in summary(config):
        click.echo(f"  {line}")


@main.command()
def version() -> None:
    """Print the version of Kittiwake, Python and OpenSSL."""
    click.echo(
        f"kittiwake {__version__} (Python {platform.python_version()}, {ssl.OPENSSL_VERSION})"
    )


main.add_command(queue)
main.add_command(mailq)
main.add_command(sendmail_command)
main.add_command(user)
main.add_command(policy)
main.add_command(dkim)
