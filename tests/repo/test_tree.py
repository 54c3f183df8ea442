"""The tree stays walkable: small modules, and every package says what its stage does."""

from __future__ import annotations

from pathlib import Path

import rollout_ray

PACKAGE = Path(rollout_ray.__file__).parent


def test_no_module_over_400_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_every_package_says_what_its_stage_takes_and_gives():
    for init in PACKAGE.rglob("__init__.py"):
        text = init.read_text().lstrip()
        assert text.startswith('"""') and len(text.split("\n")[0]) > 20, init
