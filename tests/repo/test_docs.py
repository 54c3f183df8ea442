"""The documentation tells the truth: the config reference is the code's, and every
`rollout-ray` command the README shows parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from rollout_ray.cli import app
from rollout_ray.config.reference import render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_up_to_date():
    assert (ROOT / "docs" / "config-reference.md").read_text() == render_reference(), (
        "docs/config-reference.md is stale: run `rollout-ray config-reference > "
        "docs/config-reference.md`"
    )


def test_readme_and_docs_commands_are_real_commands():
    runner = CliRunner()
    commands = set(
        app.registered_commands and [c.name or c.callback.__name__ for c in app.registered_commands]
    )
    found = 0
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *configs]:
        in_code = path.suffix == ".yaml"  # a config's comments show commands too
        for line in path.read_text().splitlines():
            if path.suffix == ".yaml":
                line = line.lstrip("# ") if line.startswith("#") else ""
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            match = in_code and re.match(r"\s*(?:\$ )?rollout-ray (\S+)(.*)", line)
            if not match or match.group(1).startswith("-"):
                continue
            found += 1
            command = match.group(1).replace("_", "-")
            assert command in commands | {"model"}, f"{path.name}: unknown command in {line!r}"
            words = shlex.split(match.group(2).split("#")[0])
            help_run = runner.invoke(app, [command, "--help"])
            assert help_run.exit_code == 0, f"{path.name}: {line}"
            options = {w.split("=")[0] for w in words if w.startswith("--")}
            for option in options:
                assert option in help_run.output, f"{path.name}: {option} unknown in {line!r}"
    assert found >= 10


def test_no_assertion_measures_time():
    """The suite checks counts and events, never how long something took: on a loaded
    2-core machine a timed assertion fails by luck (speed is for benchmarks/)."""
    timed = re.compile(
        r"\btime\.(time|monotonic|perf_counter)\(|\b(elapsed|duration|took)\b|\.times\["
    )
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        statement = ""
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("assert "):
                statement = stripped
            elif statement and line.startswith(" " * 8) and not stripped.startswith("#"):
                statement += " " + stripped  # an assert continued on the next lines
            else:
                statement = ""
            if statement and timed.search(statement):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
                statement = ""
    assert not offenders, "timed assertions:\n" + "\n".join(offenders)
