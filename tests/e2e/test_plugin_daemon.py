"""A third-party plugin, installed by pip through its entry point, inside the real daemon
(issue 5: "an example third-party plugin installed through its entry point works").

The README's example (``tests/plugins/example_plugin``) is built and installed with
``pip install --target`` into a site directory of the test's own (no network: no build
isolation, no dependencies); the daemon runs with that directory on ``PYTHONPATH`` and
``[[policy.checks]] name = "example-words"``. Through the wire: a blocked sender domain
is refused at MAIL, a listed word at DATA, clean mail is delivered with the plugin's
header; ``kittiwake policy show`` lists the plugin in its place.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_auth_mail_daemon import _tables_in_toml  # noqa: F401 (autouse)
from tests.support.server import KittiwakeServer

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "example_plugin"
CHECKS = [
    {
        "name": "example-words",
        "options": {"words": ["viagra"], "blocked_domains": ["spam.test"]},
    }
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, pip-installed (as a wheel) into a directory of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(EXAMPLE, source)  # setuptools writes build files next to the source
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--no-index"),
            *("--target", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert list(target.glob("kittiwake_example-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def server(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KittiwakeServer]:
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    srv = KittiwakeServer(tmp_path / "kw", {"policy": {"checks": CHECKS}})
    srv.start()
    yield srv
    srv.stop()


def message(text: str) -> bytes:
    return (
        "From: <carol@sender.test>\r\nTo: <bob@example.test>\r\nSubject: plugin\r\n"
        f"Message-ID: <{abs(hash(text))}@sender.test>\r\n\r\n{text}\r\n"
    ).encode()


def test_the_installed_plugin_runs_inside_the_daemon(server: KittiwakeServer) -> None:
    with smtplib.SMTP(*server.mx, timeout=10) as client:
        client.ehlo("client.test")
        code, reply = client.mail("x@spam.test")
        assert (code, reply) == (550, b"5.7.1 Sender domain refused")
        client.rset()
        client.mail("carol@sender.test")
        assert client.rcpt("bob@example.test")[0] == 250
        code, reply = client.data(message("cheap VIAGRA here"))
        assert (code, reply) == (550, b"5.7.1 Message content refused")
        client.rset()
        client.mail("carol@sender.test")
        assert client.rcpt("bob@example.test")[0] == 250
        assert client.data(message("hello Bob"))[0] == 250
    (delivered,) = server.wait_for_mail("bob@example.test")
    assert b"\nX-Example-Words: clean\n" in delivered  # Maildir lines end in LF
    assert len(server.maildir("bob@example.test")) == 1  # the refused ones never arrived


def test_policy_show_lists_the_plugin(server: KittiwakeServer) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "kittiwake", "policy", "show", "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "example-words" in shown and "kittiwake_example:factory" in shown, shown
