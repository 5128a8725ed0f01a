"""``kittiwake dkim keygen``: the key file and the printed record, checked end to end."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from kittiwake.admin.cli import main
from kittiwake.policy.dkim import verify
from kittiwake.policy.dkim_sign import algorithm_of, sign
from tests.support.dns import TestDNS

MESSAGE = b"From: a@example.test\r\nTo: b@b.test\r\nSubject: s\r\n\r\nbody\r\n"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "k.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_keygen_record_verifies_a_signed_message(tmp_path: Path, algorithm: str) -> None:
    config = _config(tmp_path)
    result = CliRunner().invoke(
        main,
        ["dkim", "keygen", "Example.TEST", "mail", "--algorithm", algorithm, "-c", str(config)],
    )
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "data" / "dkim" / "example.test.mail.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    record = result.stdout.strip()
    assert record.startswith("mail._domainkey.example.test. IN TXT ")
    assert f"k={algorithm}" in record
    pem = key_file.read_bytes()
    header = sign(
        MESSAGE,
        domain="example.test",
        selector="mail",
        private_key_pem=pem,
        algorithm=algorithm_of(pem),
    )
    with TestDNS(record) as dns:
        [outcome] = await verify(header + MESSAGE, resolver=dns.resolver())
    assert outcome.result == "pass", outcome

    again = CliRunner().invoke(main, ["dkim", "keygen", "example.test", "mail", "-c", str(config)])
    assert again.exit_code == 1 and "exists" in again.output
    assert key_file.read_bytes() == pem
    forced = CliRunner().invoke(
        main, ["dkim", "keygen", "example.test", "mail", "--force", "-c", str(config)]
    )
    assert forced.exit_code == 0 and key_file.read_bytes() != pem


def test_keygen_usage_errors(tmp_path: Path) -> None:
    config = _config(tmp_path)
    small = CliRunner().invoke(
        main, ["dkim", "keygen", "a.test", "s", "--bits", "512", "-c", str(config)]
    )
    assert small.exit_code == 2
    bad = CliRunner().invoke(main, ["dkim", "keygen", "not a domain", "s", "-c", str(config)])
    assert bad.exit_code == 2
