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


def test_commit_fields_are_spelled_only_in_the_schema_module():
    """Commit records are typed (output/schema.py's Commit): code reads attributes, so a
    renamed field is a type error, not a silent KeyError at run time."""
    from dataclasses import fields

    from rollout_ray.output.schema import Commit

    generic = {"dataset", "shard_id", "round", "prompt_tokens", "output_tokens", "stats"}
    generic |= {"seconds", "actor", "node", "attempt"}  # names other records and dicts share
    own = [f.name for f in fields(Commit) if f.name not in generic]
    assert "n_retryable" in own and "failures_file" in own
    spelled = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "schema.py"
        for name in own
        if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text()
    ]
    assert spelled == []


def test_the_plan_schema_is_the_shard_type():
    """A shard (inputs/sources.py) is stored as a row of PLAN_SCHEMA: the two must not
    drift (a field missing from either loses it on resume)."""
    from dataclasses import fields

    from rollout_ray.inputs.sources import Shard
    from rollout_ray.output.schema import PLAN_SCHEMA

    assert sorted(f.name for f in fields(Shard)) == sorted(PLAN_SCHEMA.names)
