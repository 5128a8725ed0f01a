"""The ``kittiwake`` command line: check-config, serve's hand-off to app.run, version."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from kittiwake import __version__
from kittiwake.admin.cli import main
from kittiwake.config import Config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_config_ok(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[listen]\nmx = "127.0.0.1:2526"\nsmtps = ""\n[local]\ndomains = ["example.org"]\n',
    )
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK"
    body = "\n".join(lines[1:])
    assert "mx          127.0.0.1:2526 (STARTTLS)" in body
    assert "submission  127.0.0.1:5870 (STARTTLS)" in body
    assert "smtps       disabled" in body
    assert "domains     example.org" in body
    assert "any local part (catch-all)" in body
    assert "postmaster@example.org" in body


def test_check_config_error_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_recipients = 10\n")
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}: limits.max_recipients: must be an integer >= 100")


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check-config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_serve_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nbare_linefeed = "strip"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"kittiwake: {path}: smtp.bare_linefeed: must be one of")


def test_serve_hands_the_config_to_app_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in composition root: serve must load the file and pass the Config through.
    seen: list[Config] = []

    def run(config: Config) -> int:
        seen.append(config)
        return 7

    fake_app = types.ModuleType("kittiwake.app")
    fake_app.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kittiwake.app", fake_app)
    path = write(tmp_path, 'hostname = "mx.test"\nlog_level = "warning"\n')
    result = CliRunner().invoke(main, ["serve", "-c", str(path)])
    assert result.exit_code == 7, result.output
    assert [c.hostname for c in seen] == ["mx.test"]


def test_serve_reads_the_config_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[limits]\nmax_recipients = 1\n")
    result = CliRunner().invoke(main, ["serve"], env={"KITTIWAKE_CONFIG": str(path)})
    assert result.exit_code == 2
    assert "limits.max_recipients" in result.stderr


def test_version_command_and_python_dash_m() -> None:
    result = CliRunner().invoke(main, ["version"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"kittiwake {__version__} (Python ")
    proc = subprocess.run(
        [sys.executable, "-m", "kittiwake", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"kittiwake {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code == 2
