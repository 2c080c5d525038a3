"""Every command is documented: in its --help and in the README."""

from __future__ import annotations

from pathlib import Path

from typer.main import get_command
from typer.testing import CliRunner

from atlasprep.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_command_has_help_and_a_readme_section():
    commands = get_command(app).commands  # type: ignore[attr-defined]
    assert {"slice", "terms"} <= set(commands)
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0
        assert "Examples" in result.stdout
        assert f"`atlasprep {name}`" in README


def test_quick_start_is_two_commands_on_the_demo_atlas():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line for line in quick.splitlines() if line.startswith("pip install")]
    assert len(commands) == 2
    assert "atlasprep slice --census demo" in commands[0]
    assert commands[1].endswith("python -m pytest -q")
    assert "python -m pytest -q" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
