"""``kittiwake user ...``: every command, exit codes, JSON, the password prompt on a tty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kittiwake.admin.cli import main
from kittiwake.auth.hashing import verify_password
from kittiwake.auth.sqlite import UserDatabase


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text('data_dir = "data"\n')
    return path


def run(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["user", *args, "--config", str(config)], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def users_db(config: Path) -> UserDatabase:
    return UserDatabase(config.parent / "data" / "users.db").open()


def test_add_list_passwd_del(config: Path) -> None:
    code, out, _ = run(
        config,
        "add",
        "Alice",
        "-a",
        "alice@example.test",
        "--address",
        "A.Smith@Example.test",
        "--password-stdin",
        stdin="pw one\nignored\n",
    )
    assert code == 0, out
    assert out == "user alice added, owning a.smith@example.test, alice@example.test\n"
    with users_db(config) as db:
        alice = db.get("alice")
        assert alice is not None and verify_password(alice.credentials.password_hash, "pw one")
    code, out, err = run(config, "add", "alice", "--password-stdin", stdin="x\n")
    assert (code, err) == (1, "kittiwake: user alice already exists\n")
    # NAME that is an address owns itself by default.
    assert run(config, "add", "bob@example.test", "--password-stdin", stdin="b\n")[0] == 0
    _, out, _ = run(config, "list")
    assert (
        out
        == "alice: a.smith@example.test, alice@example.test\nbob@example.test: bob@example.test\n"
    )
    assert run(config, "passwd", "alice", "--password-stdin", stdin="pw two\r\n")[0] == 0
    with users_db(config) as db:
        alice = db.get("alice")
        assert alice is not None and verify_password(alice.credentials.password_hash, "pw two")
    assert run(config, "passwd", "carol", "--password-stdin", stdin="x\n")[0] == 1
    assert run(config, "del", "bob@example.test")[0] == 0
    assert run(config, "del", "bob@example.test")[:3:2] == (
        1,
        "kittiwake: no user bob@example.test\n",
    )


def test_addresses_disable_json(config: Path) -> None:
    run(config, "add", "alice", "--password-stdin", stdin="pw\n")
    assert run(config, "address", "add", "alice", "alice@example.test")[0] == 0
    assert run(config, "address", "add", "alice", "Alice@Example.TEST")[0] == 1  # taken
    assert run(config, "address", "add", "alice", "no-at-sign")[0] == 2
    assert run(config, "address", "add", "carol", "c@example.test")[0] == 1
    assert run(config, "address", "del", "alice", "other@example.test")[0] == 1
    assert run(config, "disable", "alice")[0] == 0
    _, out, _ = run(config, "list", "--json")
    [entry] = json.loads(out)
    assert entry["name"] == "alice" and entry["disabled"] is True
    assert entry["addresses"] == ["alice@example.test"]
    assert entry["created"].endswith("Z")
    assert "hash" not in out and "argon2" not in out
    assert run(config, "enable", "alice")[0] == 0
    assert run(config, "address", "del", "alice", "alice@example.test")[0] == 0
    assert run(config, "list")[1] == "alice: -\n"


def test_bad_inputs(config: Path, tmp_path: Path) -> None:
    assert run(config, "add", "a b", "--password-stdin", stdin="pw\n")[0] == 2
    assert run(config, "add", "alice", "--password-stdin", stdin="\n")[0] == 2  # empty
    code, _, err = run(config, "add", "alice")  # no tty, no --password-stdin
    assert code == 2 and "--password-stdin" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[auth]\nlockout = 0\n")
    code, _, err = run(bad, "list")
    assert code == 2 and "auth.lockout" in err


def _read_until(fd: int, marker: bytes, seen: bytes) -> bytes:
    deadline = time.monotonic() + 20
    while marker not in seen:
        assert time.monotonic() < deadline, seen
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_prompt_twice_on_a_terminal(config: Path) -> None:
    """Interactive: the password is asked twice, with no echo."""
    import pty

    kittiwake = Path(sys.executable).with_name("kittiwake")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(kittiwake), "user", "add", "alice", "--config", str(config)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    try:
        seen = _read_until(master, b"Password: ", b"")
        os.write(master, b"hunter22\n")
        seen = _read_until(master, b"Repeat for confirmation: ", seen)
        os.write(master, b"hunter22\n")
        seen = _read_until(master, b"user alice added", seen)
        assert proc.wait(30) == 0
    finally:
        os.close(master)
    assert b"hunter22" not in seen  # no echo
    with users_db(config) as db:
        alice = db.get("alice")
        assert alice is not None and verify_password(alice.credentials.password_hash, "hunter22")
