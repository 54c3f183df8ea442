"""The sample outputs in docs/, regenerated from the shipped configs, so they can't drift.

A sample sits in a doc between `<!-- sample NAME -->` and `<!-- /sample -->`: a line
saying what ran, then each command as a user types it and what it printed at 80
columns. This script runs the shipped config as it is (the embedded model) in a scratch
copy of the repository, runs the commands after it, and writes the blocks again:

    python scripts/doc_samples.py                   # rewrite every sample (minutes)
    python scripts/doc_samples.py --check --smallest-model TINY_MODEL_FOLDER

`--check` changes nothing: it runs each sample in its smallest form (a few rows, the
given model, a verifier that gives mixed rewards on any text) and fails unless every
line it prints has the shape of a line in the doc's block (numbers, durations and bars
aside). tests/e2e/test_doc_samples.py runs that, so a change to what a command prints
fails until the docs are written again.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sample:
    name: str
    doc: str
    config: str
    commands: tuple[str, ...]
    #: Smallest form: a regex verifier that the small model's text matches often enough
    #: for every command to have rows (some rewards of 1; for DPO, mixed in a task).
    pattern: str = "."


SAMPLES = (
    Sample(
        "sft",
        "docs/sft.md",
        "configs/sft.yaml",
        (
            "rollout-ray export sft outputs/sft sft.jsonl --threshold 1 --shuffle --seed 1",
            "rollout-ray inspect outputs/sft --max-reward 0 --lowest 0 --sample 0 "
            "--write low.jsonl",
        ),
    ),
    Sample(
        "dpo",
        "docs/dpo.md",
        "configs/dpo.yaml",
        ("rollout-ray export dpo outputs/dpo pairs.jsonl --val-fraction 0.25 --seed 0",),
        pattern="a",
    ),
)
#: Lines that are not part of what a sample shows: live progress and start-up notes.
_NOISE = re.compile(r"^(\[rollout-ray\] |Resuming |preparing |stopping: )")


def run(command: str, workdir: Path) -> str:
    """What `command` printed (stdout, then stderr's messages) at 80 columns."""
    argv = [sys.executable, "-m", "rollout_ray.cli", *shlex.split(command)[1:]]
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    said = done.stdout.splitlines() + done.stderr.splitlines()
    return "\n".join(line.rstrip() for line in said if not _NOISE.match(line))


def run_sample(sample: Sample, workdir: Path, smallest_model: str | None) -> list[tuple[str, str]]:
    """Each command of the sample and what it printed; the config run first."""
    extra = ""
    if smallest_model:  # a small model, rewards every command has rows from, fixed text
        verifier = f"datasets.0.verifier={{kind: regex, pattern: '{sample.pattern}'}}"
        extra = f" model={smallest_model} engine.max_model_len=512 metrics_port=0 --limit 3"
        extra += f" sampling.seed=7 {shlex.quote(verifier)}"  # dpo.yaml's own seed
    shown = f"rollout-ray run {sample.config}"
    printed = [(shown, run(shown + extra, workdir))]
    return printed + [(command, run(command, workdir)) for command in sample.commands]


def block(sample: Sample, printed: list[tuple[str, str]], workdir: Path) -> str:
    """The sample's text in its doc."""
    from rollout_ray import read_rollouts

    table = read_rollouts(str(workdir / "outputs" / sample.name), columns=["task_id"])
    tasks = len(set(table["task_id"].to_pylist()))
    repeats = table.num_rows // max(tasks, 1)
    lines = [
        f"<!-- sample {sample.name} -->",
        f"What `rollout-ray run {sample.config}` and the commands after it print at 80",
        f"columns ({tasks} tasks x {repeats} rollouts on the embedded model; written by",
        "`python scripts/doc_samples.py`, which a test keeps in step with the code):",
        "",
    ]
    for command, output in printed:
        lines += [f"    $ {command}", *(f"    {line}".rstrip() for line in output.splitlines()), ""]
    return "\n".join([*lines[:-1], "<!-- /sample -->"])


_BLOCK = re.compile(r"<!-- sample (\S+) -->.*?<!-- /sample -->", re.S)


def shape(line: str) -> str:
    """A printed line with what varies from run to run made equal: durations, numbers,
    bar lengths, column padding, and which finish reasons occurred."""
    line = re.sub(r"^(\s*finish reasons, \S+:).*", r"\1 ...", line)
    line = re.sub(r"\b\d+(h\d+m|m\d+s|s)\b", "T", line)
    line = re.sub(r"\d[\d,.]*", "#", line)
    line = re.sub(r"█+", "█", line)
    line = re.sub(r"─+", "─", line)
    return " ".join(line.split())


def check(sample: Sample, printed: list[tuple[str, str]]) -> list[str]:
    """Lines the smallest run printed whose shape is in no line of the doc's block."""
    text = (REPO / sample.doc).read_text()
    found = {m.group(1): m.group(0) for m in _BLOCK.finditer(text)}
    if sample.name not in found:
        return [f"{sample.doc}: no <!-- sample {sample.name} --> block"]
    documented = {shape(line.removeprefix("    ")) for line in found[sample.name].splitlines()}
    problems = []
    for command, output in printed:
        if f"$ {command}" not in found[sample.name]:
            problems.append(f"{sample.doc}: the block does not show `{command}`")
        for line in output.splitlines():
            if shape(line) not in documented:
                near = difflib.get_close_matches(shape(line), documented, n=1)
                hint = f" (nearest in the doc: {near[0]!r})" if near else ""
                problems.append(f"{sample.doc}: {command}: {line.strip()!r}{hint}")
    return problems


def write_block(doc: Path, name: str, new: str) -> None:
    text = doc.read_text()
    blocks = {m.group(1): m for m in _BLOCK.finditer(text)}
    if name not in blocks:
        raise SystemExit(f"{doc}: add <!-- sample {name} --> and <!-- /sample --> first")
    start, end = blocks[name].span()
    doc.write_text(text[:start] + new + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, change nothing")
    parser.add_argument("--smallest-model", help="run each sample small, on this model")
    parser.add_argument("--only", nargs="*", help="sample names (default: all)")
    args = parser.parse_args()
    problems = []
    for sample in SAMPLES:
        if args.only and sample.name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="doc-samples-") as scratch:
            workdir = Path(scratch)
            shutil.copytree(REPO / "configs", workdir / "configs")
            printed = run_sample(sample, workdir, args.smallest_model)
            if args.check:
                problems += check(sample, printed)
                continue
            write_block(REPO / sample.doc, sample.name, block(sample, printed, workdir))
            print(f"wrote {sample.doc} ({sample.name})")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
