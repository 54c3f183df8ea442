"""A newcomer's first hour, scripted: every README command as written, in the README's
order, from the root of a fresh copy of the repository, at 80 columns.

Each command must exit 0, leave a non-empty result (a run's output holds rollouts, an
export's file has rows, a view prints something), and print no Python warning and no
traceback. Commands that need something the README says to start first (an API key, a
`vllm serve` or Ray Serve endpoint, a NeMo Gym resources server), that never end by
design (`--watch`), or that hold a placeholder (`/path/to/hf-model`) are listed as
skipped, with the reason.

    python scripts/newcomer_walk.py                 # the whole walk (the embedded model)
    python scripts/newcomer_walk.py --only sft dpo  # commands whose text holds a word
    python scripts/newcomer_walk.py --keep DIR      # walk in DIR and keep it

It prints one line per command and a summary, and writes walk.json in the copy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: A Python warning or a traceback on the console (what the walk must not see).
TROUBLE = re.compile(r"Traceback \(most recent call last\)|\b\w+Warning\b|^\s*warnings\.warn", re.M)
#: Why a README command is not run here (a pattern of its text, the reason).
SKIPS = (
    (r"OPENAI_API_KEY=\.\.\.", "needs a hosted API key"),
    (r"configs/local-vllm\.yaml", "needs a `vllm serve` endpoint running"),
    (r"configs/serve\.yaml", "needs `ray start --head` and a Ray Serve app"),
    (r"configs/agent-gym\.yaml|outputs/agent-gym", "needs a NeMo Gym resources server"),
    (r"--watch", "runs until stopped (Ctrl-C), by design"),
    (r"/path/to/", "a placeholder path"),
    (r"^make ", "installs; the walk uses the installed environment"),
)


#: The README's "Resume after anything" row, made concrete: the SFT job, run again.
RESUME = "rollout-ray run configs/sft.yaml"


@dataclass
class Step:
    command: str
    status: str = "pending"  # ok, failed, skipped
    exit_code: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def readme_commands(readme: str) -> list[str]:
    """The README's commands in its order: the set-up block's, then the patterns table's
    (the measurement table further down names commands, it doesn't give them)."""
    commands = []
    block = readme.split("After set-up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        commands += [part.strip() for part in line.split(";") if "rollout-ray" in part]
    patterns = readme.split("## The patterns", 1)[1].split("\n## ", 1)[0]
    for line in patterns.splitlines():
        if line.startswith("| ") and "rollout-ray" in line:
            found = re.findall(r"`((?:[A-Z_]+=\S+ )?rollout-ray [^`]+)`", line)
            # "the same `rollout-ray run ...` again": resume the first job run above.
            commands += [RESUME if c.endswith("...") else c for c in found]
    return commands


def skipped(command: str) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, command):
            return reason
    return None


def result_notes(command: str, root: Path, printed: str) -> list[str]:
    """What is wrong with the command's result (empty: nothing)."""
    argv = shlex.split(command)
    words = argv[argv.index("rollout-ray") + 1 :] if "rollout-ray" in argv else []
    verb = next((w for w in words if not w.startswith("-")), "")
    if verb == "run" and "-h" not in words:
        config = next((w for w in words[1:] if w.endswith(".yaml")), None)
        output = _run_output(root, config, words)
        if output is None or _rollouts(root / output) == 0:
            return [f"no rollouts in {output}"]
    elif verb == "export":
        dest = root / words[words.index("export") + 3]
        if not dest.exists() or dest.stat().st_size == 0:
            return [f"{dest.name} is missing or empty"]
    elif verb == "verify" and _rollouts(root / words[words.index("verify") + 2]) == 0:
        return ["the re-scored output holds no rollouts"]
    elif not printed.strip():
        return ["printed nothing"]
    return []


def _run_output(root: Path, config: str | None, words: list[str]) -> str | None:
    import yaml

    given = [w.split("=", 1)[1] for w in words if w.startswith("output=")]
    if given:
        return given[-1]
    if "--pilot" in words:
        base = yaml.safe_load((root / config).read_text())["output"] if config else None
        return f"{base}-pilot" if base else None
    if config is None:
        return "outputs/quickstart"
    return yaml.safe_load((root / config).read_text())["output"]


def _rollouts(output: Path) -> int:
    if not (output / "_manifest" / "job.json").exists():
        return 0
    from rollout_ray import read_rollouts

    return read_rollouts(str(output), columns=["task_id"]).num_rows


def walk(root: Path, only: list[str] | None) -> list[Step]:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(root)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    steps = []
    for command in readme_commands((root / "README.md").read_text()):
        if only and not any(word in command for word in only):
            continue
        step = Step(command)
        steps.append(step)
        reason = skipped(command)
        if reason:
            step.status, step.notes = "skipped", [reason]
            print(f"skip  {command}  ({reason})", flush=True)
            continue
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True
        )
        step.seconds = round(time.monotonic() - started, 1)
        step.exit_code = done.returncode
        printed = done.stdout + done.stderr
        (root / "walk-logs").mkdir(exist_ok=True)
        (root / "walk-logs" / f"{len(steps):02d}.log").write_text(f"$ {command}\n{printed}")
        if done.returncode != 0:
            step.notes.append(f"exit {done.returncode}: {printed.strip()[-300:]}")
        step.notes += [f"console: {m.group(0)}" for m in TROUBLE.finditer(printed)][:3]
        if done.returncode == 0:
            # What a user sees: rollout-ray's messages are on stderr, its data on stdout.
            step.notes += result_notes(command, root, printed)
        step.status = "failed" if step.notes else "ok"
        print(f"{step.status:5} {command}  ({step.seconds:.0f} s)", flush=True)
        for note in step.notes:
            print(f"      {note}", flush=True)
    return steps


def fresh_copy(destination: Path) -> Path:
    """The repository as a clone has it (tracked files of the working tree), no outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    return destination


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="only commands holding one of these words")
    parser.add_argument("--keep", help="walk in this folder (made fresh) and keep it")
    parser.add_argument("--list", action="store_true", help="list the commands, run none")
    args = parser.parse_args()
    if args.list:
        for command in readme_commands((REPO / "README.md").read_text()):
            print(f"{'skip' if skipped(command) else 'run '}  {command}")
        return 0
    if args.keep:
        root = Path(args.keep).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="newcomer-walk-"))
    fresh_copy(root)
    try:
        steps = walk(root, args.only)
    finally:  # a README command keeps an engine warm (`up`): the walk leaves none behind
        env = {**os.environ, "PYTHONPATH": str(root)}
        down = [str(Path(sys.executable).with_name("rollout-ray")), "down"]
        subprocess.run(down, cwd=root, env=env, capture_output=True)
    (root / "walk.json").write_text(json.dumps([asdict(s) for s in steps], indent=2))
    counts = {s: sum(step.status == s for step in steps) for s in ("ok", "failed", "skipped")}
    print(
        f"walk in {root}: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
    )
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
