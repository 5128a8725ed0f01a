"""``kittiwake dkim keygen DOMAIN SELECTOR``: make a DKIM key and print its DNS record.

Owns the ``dkim`` command group. ``keygen`` writes the private key (PKCS#8 PEM, mode
0600) to ``<data_dir>/dkim/<domain>.<selector>.key`` — never over an existing key unless
``--force`` — and prints the TXT record to publish, split into 255-octet strings
(RFC 6376 §3.6.2.2, RFC 1035 §3.3.14). Exit codes: 0 done; 1 the key exists or cannot be
written; 2 usage or configuration. Security sensitive: creates a private key; prints only
the public half.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from kittiwake.admin.options import config_option
from kittiwake.config import load_config
from kittiwake.errors import ConfigError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"kittiwake: {message}", err=True)
    sys.exit(code)


@click.group()
def dkim() -> None:
    """DKIM signing keys (RFC 6376, RFC 8463)."""


@dkim.command()
@click.argument("domain")
@click.argument("selector")
@click.option(
    "--algorithm",
    "-a",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa (rsa-sha256) or ed25519 (ed25519-sha256, RFC 8463).",
)
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA key size.")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@config_option("TOML configuration file (for data_dir: where the key goes).")
def keygen(
    domain: str, selector: str, algorithm: str, bits: int, force: bool, config_path: Path | None
) -> None:
    """Write a new key for DOMAIN/SELECTOR and print the DNS TXT record to publish."""
    from kittiwake.policy.dkim_sign import (
        generate_key,
        key_path,
        public_record,
        txt_record,
        write_key,
    )

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(f"{config_path}: {exc}", EXIT_USAGE)
    try:
        path = key_path(config.data_dir, domain, selector)
        pem = generate_key(algorithm, bits)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    try:
        write_key(path, pem, overwrite=force)
    except FileExistsError:
        _fail(f"{path} exists (use --force to replace it, then update DNS)")
    except OSError as exc:
        _fail(f"cannot write {path}: {exc}")
    click.echo(f"; private key written to {path}", err=True)
    click.echo(txt_record(domain, selector, public_record(pem)))
