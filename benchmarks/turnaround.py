"""Debug turnaround: how long `rollout-ray run CONFIG --limit 5` takes, cold, against a
plain vLLM script answering the same 5 prompts.

Sides, each a fresh process timed from start to exit (imports, engine load, generation,
writing, exit), on the same rows, chat template, sampling and engine settings:

  raw          a plain vLLM script: `LLM(...)` then `llm.chat` on the 5 prompts with
               `n` = the dataset's num_repeats (what a user writes to try a prompt)
  rollout-ray  `rollout-ray run CONFIG --limit 5` into a new output: `executor: auto`,
               which runs a job this small in process (the local executor)
  on-ray       the same with `executor=ray`: local Ray, Ray Data, an engine actor
  warm         `rollout-ray run CONFIG --limit 5` on the engine `rollout-ray up CONFIG`
               keeps loaded (up once before the rounds; its start-up is printed, not
               counted; `down` after). Target: <= 5 s wall.
  served       `rollout-ray run configs/serve.yaml --limit 5` against a model kept warm
               by `rollout-ray serve` on a running local Ray (`ray start --head`, once
               before the rounds, not counted): the Serve route, for comparison.

Sides alternate (raw, rollout-ray, on-ray, on-ray, rollout-ray, raw, ...); every run is
printed, with rollout-ray's phase table (metrics.json `phases`: seconds from the start
of the job to the end of each phase).

    python benchmarks/turnaround.py                  # configs/sft.yaml, 3 rounds
    python benchmarks/turnaround.py --rounds 1       # a smoke run

Target (issue 17): rollout-ray <= 1.3x raw, cold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Comparison, schedule

RAW = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
os.environ.update(spec["env"])
from vllm import LLM, SamplingParams
llm = LLM(model=spec["model"], enforce_eager=True, enable_chunked_prefill=False,
          use_tqdm_on_load=False)
params = SamplingParams(n=spec["n"], temperature=spec["temperature"],
                        max_tokens=spec["max_tokens"])
outputs = llm.chat(spec["conversations"], params, use_tqdm=False)
print(json.dumps({"rollouts": sum(len(o.outputs) for o in outputs)}))
"""


def raw_spec(config_path: str, limit: int) -> dict:
    """The job's first `limit` rows as chat conversations, and its sampling."""
    from rollout_ray.config import load_config
    from rollout_ray.config.blocks import JOB_SAMPLING_DEFAULTS
    from rollout_ray.engines.embedded_model import resolve_model
    from rollout_ray.inputs.prompts import build_prompt
    from rollout_ray.inputs.reading import read_shard
    from rollout_ray.output.plan import build_plan
    from rollout_ray.run.local import engine_env

    config = load_config(config_path)
    dataset = config.datasets[0]
    _, shards = build_plan(config)
    rows = [row.value for row in read_shard(shards[0])][:limit]
    sampling = JOB_SAMPLING_DEFAULTS.merged(config.sampling, dataset.sampling)
    return {
        "model": resolve_model(config.model),
        "env": engine_env(config, "cpu"),
        "conversations": [build_prompt(row, dataset).messages for row in rows],
        "n": dataset.num_repeats,
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
    }


def timed(command: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-4000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sft.yaml")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", nargs="*", choices=["raw", "rollout-ray", "on-ray", "warm", "served"]
    )
    args = parser.parse_args()
    spec = raw_spec(args.config, args.limit)
    work = Path(tempfile.mkdtemp(prefix="rollout-ray-turnaround-"))
    phases: dict[str, list[dict]] = {}

    def ours(executor: str | None):
        def run() -> float:
            output = work / f"out-{time.time_ns()}"
            extra = [f"executor={executor}"] if executor else []
            command = [sys.executable, "-m", "rollout_ray.cli", "run", "--no-warm", args.config]
            wall = timed([*command, f"output={output}", "--limit", str(args.limit), *extra])
            metrics = json.loads((output / "metrics.json").read_text())
            phases.setdefault(metrics["executor"], []).append(metrics["phases"])
            return wall

        return run

    def warm() -> float:
        output = work / f"warm-{time.time_ns()}"
        command = [sys.executable, "-m", "rollout_ray.cli", "run", args.config]
        wall = timed([*command, f"output={output}", "--limit", str(args.limit)])
        metrics = json.loads((output / "metrics.json").read_text())
        if metrics["executor"] != "warm":
            raise SystemExit("the warm side did not run on the warm engine")
        return wall

    def served() -> float:
        output = work / f"served-{time.time_ns()}"
        command = [sys.executable, "-m", "rollout_ray.cli", "run", "configs/serve.yaml"]
        return timed([*command, f"output={output}", "--limit", str(args.limit)])

    sides = {
        "raw": lambda: timed([sys.executable, "-c", RAW, json.dumps(spec)]),
        "rollout-ray": ours(None),
        "on-ray": ours("ray"),
        "warm": warm,
        "served": served,
    }
    names = args.only or [name for name in sides if name != "served"]
    cli = [sys.executable, "-m", "rollout_ray.cli"]
    if "warm" in names:
        print(f"warm side's set-up: rollout-ray up {timed([*cli, 'up', args.config]):.1f} s")
    ray = str(Path(sys.executable).with_name("ray"))
    serve = [*cli, "serve", "configs/serve.yaml"]
    if "served" in names:
        print(
            f"served side's set-up: ray start --head {timed([ray, 'start', '--head']):.1f} s, "
            f"rollout-ray serve {timed(serve):.1f} s (not counted)"
        )
    print(
        f"{args.config} --limit {args.limit}: {len(spec['conversations'])} prompts x "
        f"{spec['n']}, max_tokens {spec['max_tokens']}, {os.cpu_count()} cores"
    )
    walls = Comparison("cold wall", "s")
    for name in schedule(names, args.rounds):
        wall = sides[name]()
        walls.runs.setdefault(name, []).append(wall)
        print(f"  {name:>12}: {wall:6.2f} s", flush=True)
    for executor, tables in phases.items():
        print(f"phases ({executor} executor), s from the job's start:")
        for table in tables:
            print("   ", "  ".join(f"{k} {v:.2f}" for k, v in table.items()))
    if "raw" in walls.runs:
        for name in ("rollout-ray", "on-ray"):
            if name in walls.runs:
                walls.report(name, "raw", at_most=1.3 if name == "rollout-ray" else None)
    for name in ("warm", "served"):
        if name in names:
            runs = walls.runs[name]
            verdict = "met" if max(runs) <= 5.0 else "not met"
            print(
                f"{name} run --limit {args.limit}: "
                + ", ".join(f"{w:.2f}" for w in runs)
                + f" s (target <= 5 s: {verdict})"
            )
    if "warm" in names:
        timed([*cli, "down"])
    if "served" in names:
        timed([*serve, "--stop"])
        timed([ray, "stop"])


if __name__ == "__main__":
    main()
