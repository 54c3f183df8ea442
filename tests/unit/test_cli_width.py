"""Every command's help read at 80 columns, the width of a default terminal: no option
name, type or environment variable is cut short (`--no-force-new-con…` was)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from rollout_ray.cli import app


def _commands() -> dict[tuple[str, ...], Any]:
    """Each command of the CLI by its words (the root is ())."""
    root = typer.main.get_command(app)
    found: dict[tuple[str, ...], Any] = {(): root}
    for name, command in getattr(root, "commands", {}).items():
        found[(name,)] = command
        for sub, inner in getattr(command, "commands", {}).items():
            found[(name, sub)] = inner
    return found


@pytest.mark.parametrize("words", list(_commands()), ids=lambda w: " ".join(w) or "-")
def test_help_fits_80_columns(words):
    shown = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80
    assert "…" not in shown.output, shown.output
    seen = set(shown.output.replace("│", " ").replace(",", " ").split())
    options = [p for p in _commands()[words].params if getattr(p, "opts", None)]
    for param in options:
        if type(param).__name__ == "TyperArgument":
            continue
        for name in (*param.opts, *param.secondary_opts):
            assert name in seen, f"{name} is cut in:\n{shown.output}"
        if param.envvar:
            assert f"{param.envvar}]" in seen, f"{param.envvar} is cut in:\n{shown.output}"
