"""Plugin loading: the example third-party plugin found through its real entry point,
``[[policy.checks]]`` config errors naming the key, ``kittiwake policy show``.

The example package (tests/plugins/example_plugin) is "installed" the way
``importlib.metadata`` really discovers distributions: a ``*.dist-info`` directory with
``METADATA`` and ``entry_points.txt`` on ``sys.path`` — the entry points are copied from
the package's own pyproject.toml, so the declaration there is what is tested.
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kittiwake.admin.cli import main
from kittiwake.config import load_config
from kittiwake.envelope import Envelope, Recipient, SessionInfo
from kittiwake.errors import ConfigError
from kittiwake.policy import Action, PolicyChain
from kittiwake.policy.message import BodySpool
from kittiwake.policy.plugins import (
    ENTRY_POINT_GROUP,
    CheckSpec,
    available,
    build_checks,
    effective_specs,
)
from kittiwake.policy.results import CheckResult, Results
from kittiwake.policy.submission import RequireAuth

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "example_plugin"
SESSION = SessionInfo("192.0.2.9", 40000, "127.0.0.1", 25)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin as an installed distribution (dist-info on sys.path)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    info = site / "kittiwake_example-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = project["entry-points"][ENTRY_POINT_GROUP]
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    )
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    yield tmp_path
    sys.modules.pop("kittiwake_example", None)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kittiwake.toml"
    path.write_text(textwrap.dedent(text))
    return path


EXAMPLE_CONFIG = """
    [policy]
    timeout = 7

    [[policy.checks]]
    name = "require-auth"

    [[policy.checks]]
    name = "example-words"
    stages = ["mail", "data"]
    timeout = 2
    options = { words = ["viagra"], blocked_domains = ["spam.test"] }
    """


async def test_example_plugin_through_its_entry_point(installed: Path) -> None:
    assert "example-words" in available()
    assert "kittiwake_example:factory" in available()["example-words"]
    config = load_config(write(installed, EXAMPLE_CONFIG))
    specs = config.policy.checks
    assert [s.name for s in specs] == ["require-auth", "example-words"]
    assert specs[0].timeout == 7 and specs[1].timeout == 2
    checks = build_checks(effective_specs(specs), bound={"recipients": lambda o: Accepting()})
    assert isinstance(checks[0].plugin, RequireAuth)
    chain = PolicyChain(checks)
    assert chain.describe() == [
        "connect: -",
        "helo: -",
        "mail: require-auth, example-words",
        "rcpt: recipients",
        "data: example-words",
    ]
    authed = SessionInfo("192.0.2.9", 1, "127.0.0.1", 587, auth_user="alice")
    refused = await chain.mail(authed, "x@spam.test")
    assert refused.action is Action.REJECT and refused.reply is not None
    assert refused.reply.code == 550
    assert (await chain.mail(authed, "x@fine.test")).action is Action.CONTINUE

    envelope = Envelope("x@fine.test", (Recipient("bob@example.org"),))
    with BodySpool(installed, memory_limit=64) as spool:
        spool.write(b"Subject: hi\r\n\r\n" + b"clean text " * 20_000)
        tx = Results()
        tx.add("spf", CheckResult("spf", "pass"))
        ctx = spool.context(authed, envelope, tx)
        assert (await chain.data(ctx)).action is Action.CONTINUE
        assert ctx.results.headers == [("X-Example-Words", "clean (spf=pass)")]
        assert ctx.results.get("x-words") == CheckResult("x-words", "pass")
    with BodySpool(installed, memory_limit=64) as spool:
        # the word straddles the plugin's 64 KiB read boundary
        spool.write(b"Subject: hi\r\n\r\n" + b"a" * (65536 - 18) + b"VIAGRA now\r\n")
        ctx = spool.context(authed, envelope)
        assert (await chain.data(ctx)).action is Action.REJECT


class Accepting:
    async def rcpt(self, session: SessionInfo, sender: str, recipient: Recipient) -> object:
        from kittiwake.policy.verdict import ACCEPT

        return ACCEPT


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ('[[policy.checks]]\nname = "nonesuch"\n', "policy.checks[0].name", "nonesuch"),
        ("[[policy.checks]]\ntimeout = 3\n", "policy.checks[0].name", "check name"),
        (
            '[[policy.checks]]\nname = "require-auth"\n[[policy.checks]]\nname = "spf"\n'
            'stages = ["mial"]\n',
            "policy.checks[1]",
            "",
        ),
        (
            '[[policy.checks]]\nname = "require-auth"\nstages = ["mial"]\n',
            "policy.checks[0].stages",
            "not a stage",
        ),
        (
            '[[policy.checks]]\nname = "require-auth"\ntimeout = 0\n',
            "policy.checks[0].timeout",
            "> 0",
        ),
        (
            '[[policy.checks]]\nname = "require-auth"\noptions = 3\n',
            "policy.checks[0].options",
            "table",
        ),
        ('[[policy.checks]]\nname = "require-auth"\nordre = 1\n', "policy.checks[0].ordre", ""),
        ("[policy]\nchecks = 3\n", "policy.checks", "array"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, toml: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert info.value.key.startswith(key), info.value
    assert words in str(info.value)


def test_broken_plugin_is_a_config_error(installed: Path) -> None:
    # an entry point whose module does not import
    info_dir = next((installed / "site").glob("*.dist-info"))
    with (info_dir / "entry_points.txt").open("a") as f:
        f.write("broken = kittiwake_no_such_module:factory\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(installed, '[[policy.checks]]\nname = "broken"\n'))
    assert err.value.key == "policy.checks[0].name"
    assert "cannot be loaded" in str(err.value)


def test_factory_errors_name_the_options_key(installed: Path) -> None:
    config = load_config(
        write(
            installed,
            '[[policy.checks]]\nname = "example-words"\noptions = { words = "x" }\n',
        )
    )
    with pytest.raises(ConfigError) as err:
        build_checks(config.policy.checks)
    assert err.value.key == "policy.checks[0].options"
    assert "words must be an array" in str(err.value)


def test_stage_the_plugin_lacks_and_server_bound_checks() -> None:
    with pytest.raises(ConfigError) as err:
        build_checks([CheckSpec("require-auth", stages=frozenset({"data"}))])
    assert err.value.key == "policy.checks[0].stages"
    with pytest.raises(ConfigError) as err:
        build_checks([CheckSpec("recipients", index=3)])
    assert err.value.key == "policy.checks[3].name"
    with pytest.raises(ConfigError) as err:
        build_checks([CheckSpec("require-auth", options={"x": 1})])
    assert err.value.key == "policy.checks[0].options"


def test_effective_specs_never_drop_relay_control() -> None:
    assert [s.name for s in effective_specs(())] == ["ratelimit", "recipients"]
    one = (CheckSpec("require-auth"),)
    assert [s.name for s in effective_specs(one)] == ["require-auth", "recipients"]
    two = (CheckSpec("recipients"), CheckSpec("require-auth", index=1))
    assert effective_specs(two) == two


def test_policy_show_prints_the_order_per_stage(installed: Path) -> None:
    path = write(installed, EXAMPLE_CONFIG)
    result = CliRunner().invoke(main, ["policy", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  mail: require-auth, example-words" in lines
    assert "  rcpt: recipients" in lines
    assert "  data: example-words" in lines
    assert any("2. example-words [plugin kittiwake_example:factory" in x for x in lines)
    assert any("stages: data, mail; timeout 2s" in x for x in lines)


def test_policy_show_defaults_and_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "show"], env={"KITTIWAKE_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert "  mail: ratelimit" in result.output.splitlines()
    bad = write(tmp_path, '[[policy.checks]]\nname = "nonesuch"\n')
    result = CliRunner().invoke(main, ["policy", "show", "-c", str(bad)])
    assert result.exit_code == 1
    assert "policy.checks[0].name: no check or plugin named 'nonesuch'" in result.output


def test_readme_shows_the_example_plugin_verbatim() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = (EXAMPLE / "kittiwake_example" / "__init__.py").read_text()
    body = code[code.index("CHUNK = ") :]
    assert body in readme
    assert 'example-words = "kittiwake_example:factory"' in readme
