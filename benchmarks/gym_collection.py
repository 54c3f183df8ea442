"""rollout-ray against NeMo Gym's own rollout collection, on 200 Gym mcqa rows (issue 26).

The rows: --rows (200) multiple-choice questions generated here, deterministically, in
the shape of the Gym mcqa server's own data (`responses_create_params.input` holding the
question and its lettered options, `options`, `expected_answer`, `grading_mode`,
`uuid`; its prompt asks for the letter in \\boxed{}); not rollout-ray's bundled sample.
Every side answers the same rows once each, with the same model (the embedded
SmolLM2-135M-Instruct, by its folder), the same sampling (--temperature 0.7,
--max-tokens 128, no seed) and the same vLLM engine: `vllm serve` gets exactly the
engine arguments rollout-ray's engine gets (`engine_kwargs` of the job's engine block,
vLLM's offline batch defaults that rollout-ray's engine starts with, made explicit) and
exactly its environment (`engine_env`: the CPU settings, VLLM_CPU_NUM_OF_RESERVED_CPU=0,
...); the flags are checked against vLLM's own parser, and both sides' effective vLLM
configs are printed side by side.

Sides, each timed from process start to exit:

  gym-warm          `ng_collect_rollouts` (--in-flight 64 samples at once) through Gym's
                    simple_agent and vllm_model servers (`ng_run`, with the mcqa resources
                    server) in front of a `vllm serve` that is already up and warm: the
                    stack is started once before the rounds and warmed with a short
                    collection (both printed, not counted); after a gym-cold run, the
                    stack that run started (warm by then) serves the gym-warm runs.
  gym-cold          the same collection counting the stack's start-up: every gym-cold run
                    stops the running stack (not counted), then launches `vllm serve` and
                    `ng_run` at once and times from that launch until ng_collect_rollouts
                    exits (the start-up and the collection are printed apart).
  rollout-ray       `rollout-ray run --no-warm JOB` with the default executor (`auto`: in
                    process for a job this size) into a new output.
  rollout-ray-ray   the same with `executor=ray` (local Ray, Ray Data, an engine actor).
  rollout-ray-warm  `rollout-ray run JOB` on the engine `rollout-ray up JOB` keeps loaded
                    (up before the rounds, down after: printed, not counted).

Rewards: Gym's side is scored by its mcqa server's /verify (called by simple_agent).
rollout-ray's sides use rollout-ray's own `mcqa` verifier by default (what a rollout-ray
job on these rows uses; no server to run), and every one of their runs is checked
against Gym: each response text is sent to a Gym mcqa server's /verify (outside the
timing) and the rewards and extracted letters must be equal. `--verifier http` scores
rollout-ray's rows through that Gym server's /verify instead (the `http` verifier; the
server is started once, not counted).

Sides alternate over --rounds (A B C, C B A, ...); every run is printed (wall, output
tokens from each side's own records: Gym's `response.usage.output_tokens`, rollout-ray's
`output_tokens` column; prompt tokens and mean reward as a check that both did the same
task), then medians, ratios of medians with each side's spread, and verdicts against the
issue's targets: rollout-ray (default executor) >= 1.3x gym-warm, rollout-ray-ray >=
1.0x gym-warm, in output tokens/s. Everything started here is stopped at the end, on
failure and on Ctrl-C.

    PYTHONPATH=. .venv/bin/python benchmarks/gym_collection.py               # 200 rows, 3 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/gym_collection.py --rows 8 --rounds 1 \\
        --max-tokens 32 --engine cpu_kvcache_gib=1                           # a smoke run
    PYTHONPATH=. .venv/bin/python benchmarks/gym_collection.py --only gym-warm rollout-ray

Needs NeMo Gym's venv (.gym-venv, `make test` installs it; GYM_VENV points elsewhere).
Every process started here runs with TMPDIR, RAY_TMPDIR and ROLLOUT_RAY_CACHE in a
folder of its own, so no Ray here joins (or is joined by) another on the machine and
the warm engine is this benchmark's own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
from compare import Comparison, schedule  # noqa: E402
from gym_servers import GymServer, free_port, gym_python  # noqa: E402
from gym_stack import GymStack  # noqa: E402

SIDES = ["gym-warm", "gym-cold", "rollout-ray", "rollout-ray-ray", "rollout-ray-warm"]
#: Targets of issue 26 (output tokens/s, ratio of medians against gym-warm).
#: Issue 26's targets against gym-warm; the warm side is held to the default executor's.
TARGETS = {"rollout-ray": 1.3, "rollout-ray-ray": 1.0, "rollout-ray-warm": 1.3}
#: Marks every process this benchmark starts (and what those start): cleanup finds them
#: by it, and only them.
MARK = "ROLLOUT_RAY_GYM_BENCH"
PROMPT = (
    "You should output your final response letter inside \\boxed{} and nothing else "
    "You can first think step-by-step. "
)

# ----------------------------------------------------------------------------- rows

COUNTRIES = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Poland", "Warsaw"),
    ("Chile", "Santiago"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Sweden", "Stockholm"),
    ("Thailand", "Bangkok"),
    ("Argentina", "Buenos Aires"),
    ("Australia", "Canberra"),
]
SYMBOLS = [
    ("oxygen", "O"),
    ("gold", "Au"),
    ("iron", "Fe"),
    ("sodium", "Na"),
    ("carbon", "C"),
    ("silver", "Ag"),
    ("helium", "He"),
    ("potassium", "K"),
    ("copper", "Cu"),
    ("hydrogen", "H"),
]


def _question(kind: int, rng: random.Random) -> tuple[str, str, list[str]]:
    """A question, its right answer and a pool of wrong ones (at least 6)."""
    if kind == 0:
        a, b = rng.randint(12, 98), rng.randint(12, 98)
        wrong = [a + b + d for d in (-11, -10, -2, -1, 1, 2, 9, 10, 11)]
        return f"What is {a} + {b}?", str(a + b), [str(w) for w in wrong]
    if kind == 1:
        a, b = rng.randint(3, 15), rng.randint(3, 15)
        wrong = {a * b + d for d in (-a, -b, -1, 1, a, b, 10, -10)} - {a * b}
        return f"What is {a} times {b}?", str(a * b), [str(w) for w in sorted(wrong)]
    if kind == 2:
        nums = rng.sample(range(100, 1000), 8)
        best = max(nums)
        question = "Which of the following numbers is the largest?"
        return question, str(best), [str(n) for n in nums if n != best]
    if kind == 3:
        country, capital = rng.choice(COUNTRIES)
        wrong = [c for _, c in COUNTRIES if c != capital]
        return f"What is the capital city of {country}?", capital, wrong
    if kind == 4:
        n = rng.randint(2, 15)
        wrong = {7 * n + d for d in (-7, -2, -1, 1, 2, 7, 14)} | {5 * n, 10 * n}
        return f"How many days are in {n} weeks?", str(7 * n), [str(w) for w in sorted(wrong)]
    if kind == 5:
        i = rng.randint(0, 24)
        letter, after = chr(65 + i), chr(66 + i)
        wrong = [chr(65 + j) for j in range(26) if chr(65 + j) not in (letter, after)]
        return f"Which letter comes right after {letter} in the English alphabet?", after, wrong
    if kind == 6:
        n = rng.randint(2, 40)
        wrong = {n, 10 * n, 1000 * n, 100 * n + 10, 100 * n - 10, 100 * (n + 1)}
        question = f"How many centimetres are in {n} metres?"
        return question, str(100 * n), [str(w) for w in sorted(wrong)]
    element, symbol = rng.choice(SYMBOLS)
    wrong = [s for _, s in SYMBOLS if s != symbol]
    return f"What is the chemical symbol of {element}?", symbol, wrong


def mcqa_rows(n: int) -> list[dict[str, Any]]:
    """`n` distinct Gym mcqa rows, the same for a given `n` on every machine."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    i = 0
    while len(rows) < n:
        rng = random.Random(f"rollout-ray gym bench {i}")
        question, right, pool = _question(i % 8, rng)
        k = 4 + rng.randrange(4)  # 4 to 7 options
        choices = rng.sample(pool, k - 1)
        answer = rng.randrange(k)
        choices.insert(answer, right)
        letters = [chr(65 + j) for j in range(k)]
        content = (
            PROMPT
            + question
            + "\n"
            + "\n".join(f"{L}: {c}" for L, c in zip(letters, choices, strict=True))
        )
        i += 1
        if content in seen:
            continue
        seen.add(content)
        rows.append(
            {
                "responses_create_params": {"input": [{"role": "user", "content": content}]},
                "options": [{L: c} for L, c in zip(letters, choices, strict=True)],
                "expected_answer": letters[answer],
                # Most as Gym's example data; every fifth lets the option's text count too.
                "grading_mode": "lenient_boxed" if i % 5 == 0 else "strict_single_letter_boxed",
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"rollout-ray/gym-bench/mcqa/{i}")),
            }
        )
    return rows


# ----------------------------------------------------------------------------- vllm serve


def serve_kwargs(config: Any) -> dict[str, Any]:
    """rollout-ray's engine arguments for this job, with the batch its engine starts with
    (vLLM's offline defaults, UsageContext.LLM_CLASS) written out: `vllm serve` would
    otherwise take the server's (half as many sequences and tokens on CPU)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    from rollout_ray.engines.embedded_model import resolve_model
    from rollout_ray.engines.vllm_engine import engine_kwargs

    kwargs = engine_kwargs(config.engine, "cpu", resolve_model(config.model), config.metrics)
    tokens, seqs = EngineArgs.get_batch_defaults(world_size=config.engine.tensor_parallel_size)
    kwargs.setdefault("max_num_seqs", seqs[UsageContext.LLM_CLASS])
    kwargs.setdefault("max_num_batched_tokens", tokens[UsageContext.LLM_CLASS])
    return kwargs


def _plain(value: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def serve_flags(kwargs: dict[str, Any]) -> list[str]:
    """The api_server's command-line flags for these engine arguments (a switch left
    at vLLM's default is left out: some have no --no- form)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    defaults = {f.name: f.default for f in dataclasses.fields(EngineArgs)}
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            if value != defaults.get(key):
                flags.append(flag if value else "--no-" + flag[2:])
        elif dataclasses.is_dataclass(value):
            changed = {
                f.name: getattr(value, f.name)
                for f in dataclasses.fields(value)
                if getattr(value, f.name) != getattr(type(value)(), f.name)
            }
            flags += [flag, json.dumps(changed)]
        else:
            flags += [flag, str(value)]
    return flags


def check_flags(flags: list[str], kwargs: dict[str, Any]) -> None:
    """vLLM's own parser reads the flags back into exactly these engine arguments."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(flags)
    served = AsyncEngineArgs.from_cli_args(parsed)
    differ = {
        k: (_plain(getattr(served, k, None)), _plain(v))
        for k, v in kwargs.items()
        if _plain(getattr(served, k, None)) != _plain(v)
    }
    if differ:
        raise SystemExit(f"vllm serve's flags would not give rollout-ray's engine: {differ}")


def serve_child(spec: dict[str, Any]) -> None:
    """`python -m vllm.entrypoints.openai.api_server` with rollout-ray's engine
    arguments as flags; the only addition records the effective vLLM config the
    server builds (`effective_config`, what rollout-ray's metrics.json records)."""
    import runpy

    import vllm.engine.arg_utils as arg_utils

    from rollout_ray.config import load_config
    from rollout_ray.engines.vllm_engine import effective_config

    kwargs = serve_kwargs(load_config(spec["config"]))
    flags = serve_flags(kwargs)
    if spec["check"]:
        check_flags(flags, kwargs)
    Path(spec["flags"]).write_text(json.dumps(flags))
    build = arg_utils.EngineArgs.create_engine_config

    def recording(self: Any, *args: Any, **kw: Any) -> Any:
        vllm_config = build(self, *args, **kw)
        Path(spec["effective"]).write_text(json.dumps(effective_config(vllm_config)))
        return vllm_config

    arg_utils.EngineArgs.create_engine_config = recording  # type: ignore[method-assign]
    module = "vllm.entrypoints.openai.api_server"
    sys.argv = [module, *flags, "--host", "127.0.0.1", "--port", str(spec["port"])]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# ----------------------------------------------------------------------------- processes


def _group_stop(proc: subprocess.Popen, wait_s: float = 30) -> None:
    """SIGTERM to a process group of our own, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def marked(token: str) -> list[Any]:
    """Every live process carrying this run's mark (started by it, or by what it started)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK) == token:
                found.append(proc)
    return found


def family(roots: list[int]) -> set[int]:
    import psutil

    pids = set()
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            pids.add(pid)
            pids.update(p.pid for p in root.children(recursive=True))
    return pids


def terminate(procs: list[Any]) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.token = uuid.uuid4().hex
        self.gym_venv = Path(gym_python()).parent.parent
        self.serve: subprocess.Popen | None = None
        self.stack: GymStack | None = None
        self.verify_server: GymServer | None = None
        self.running: subprocess.Popen | None = None
        self.warm_up = False
        self.launches = 0
        self.serve_port = 0
        self.head_port = 0
        self.model_path = ""
        self.serve_effective: dict[str, Any] = {}
        self.serve_flags: list[str] = []
        self.rows = mcqa_rows(args.rows)
        self.by_uuid = {row["uuid"]: row for row in self.rows}
        self.rows_file = work / "mcqa_rows.jsonl"
        self.rows_file.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        self.job = work / "job.yaml"

    # ------------------------------------------------------------------ environment

    def isolate(self) -> None:
        """This process's environment, which every child inherits: the mark, and temp
        folders, Ray's and rollout-ray's cache of its own (no other Ray or warm engine)."""
        tmp = self.work / "tmp"
        cache = self.work / "cache"
        tmp.mkdir()
        cache.mkdir()
        os.environ.update(
            {
                MARK: self.token,
                "TMPDIR": str(tmp),
                "RAY_TMPDIR": str(tmp),
                "ROLLOUT_RAY_CACHE": str(cache),
                "HF_HUB_OFFLINE": "1",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            }
        )

    def write_job(self, model_path: str) -> None:
        verifier: dict[str, Any] = {"kind": "mcqa"}
        if self.args.verifier == "http":
            assert self.verify_server is not None
            verifier = {"kind": "http", "url": f"{self.verify_server.url}/verify"}
        engine: dict[str, Any] = {"max_model_len": self.args.max_model_len}
        import yaml

        for item in self.args.engine:
            key, _, value = item.partition("=")
            engine[key] = yaml.safe_load(value)
        if "cpu_kvcache_gib" not in engine:
            # Unset, each engine sizes its KV cache from the memory free when it starts,
            # which the other side's warm stack lowers: fix it once, for both sides.
            from rollout_ray.engines.vllm_placement import free_memory_bytes, kv_cache_gib

            engine["cpu_kvcache_gib"] = kv_cache_gib(free_memory_bytes(), 1)

        job = {
            "model": model_path,
            "datasets": [{"name": "mcqa", "path": str(self.rows_file), "verifier": verifier}],
            "sampling": {"temperature": self.args.temperature, "max_tokens": self.args.max_tokens},
            "engine": engine,
            "output": str(self.work / "out-unused"),
        }
        self.job.write_text(yaml.safe_dump(job, sort_keys=False))

    def engine_config(self) -> Any:
        from rollout_ray.config import load_config

        return load_config(self.job).engine

    def engine_env(self) -> dict[str, str]:
        """The environment rollout-ray's engine gets for this job (its `engine_env`)."""
        from rollout_ray.config import load_config
        from rollout_ray.run.local import engine_env

        return engine_env(load_config(self.job), "cpu")

    def gym_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.gym_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    # ------------------------------------------------------------------ children

    def timed(self, command: list[str], log: Path, env: dict[str, str], cwd: Path) -> float:
        """Run a command to its exit in a process group of its own; its wall time."""
        started = time.monotonic()
        with open(log, "w") as out:
            self.running = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            code = self.running.wait()
        wall = time.monotonic() - started
        self.running = None
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{' '.join(command[:4])} ... exited {code}; its log {log}:\n{tail}")
        self.sweep_strays()
        return wall

    def sweep_strays(self) -> None:
        """Processes a finished run left behind (a local Ray's daemons, say) would take
        cores from the next run: stopped, and named."""
        keep = [p.pid for p in (self.serve, self.running) if p is not None]
        keep += [s.proc.pid for s in (self.stack, self.verify_server) if s is not None]
        # The warm engines' Ray (`rollout-ray up`: `ray start`, detached) is kept too:
        # its processes name its folder or its address, as `rollout-ray down` finds them.
        marks = [str(Path(os.environ["TMPDIR"]) / "rollout-ray-warm-")]
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads((Path(os.environ["ROLLOUT_RAY_CACHE"]) / "warm.json").read_text())
            marks.append(state["address"])
        live = marked(self.token)
        for proc in live:
            with contextlib.suppress(Exception):
                command = " ".join(proc.cmdline())
                if any(mark in command for mark in marks):
                    keep.append(proc.pid)
        kept = family(keep)
        strays = [p for p in live if p.pid not in kept]
        if strays:
            names = []
            for proc in strays:
                with contextlib.suppress(Exception):
                    age = time.time() - proc.create_time()
                    command = " ".join(proc.cmdline())[:80]
                    names.append(f"{command} (parent {proc.ppid()}, {age:.0f} s old)")
            print(f"    (stopping {len(strays)} processes a run left behind: {names})")
            terminate(strays)

    # ------------------------------------------------------------------ the Gym stack

    def launch_serve(self) -> subprocess.Popen:
        self.launches += 1
        n = self.launches
        self.serve_port = free_port()
        spec = {
            "config": str(self.job),
            "port": self.serve_port,
            "check": n == 1,  # vLLM's parser reads the flags back (the first launch only)
            "flags": str(self.work / f"serve-{n}-flags.json"),
            "effective": str(self.work / f"serve-{n}-effective.json"),
        }
        (self.work / f"serve-{n}.json").write_text(json.dumps(spec))
        env = {**os.environ, **self.engine_env()}
        command = [sys.executable, __file__, "--serve-child", str(self.work / f"serve-{n}.json")]
        return subprocess.Popen(
            command,
            env=env,
            cwd=self.work,
            stdout=open(self.work / f"serve-{n}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def serve_ready(self) -> bool:
        assert self.serve is not None
        if self.serve.poll() is not None:
            log = self.work / f"serve-{self.launches}.log"
            raise RuntimeError(
                f"vllm serve exited {self.serve.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            url = f"http://127.0.0.1:{self.serve_port}/v1/models"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def start_stack(self) -> dict[str, float]:
        """Launch `vllm serve` and `ng_run` at once; seconds from the launch until each
        answers."""
        self.stop_stack()
        n = self.launches + 1
        started = time.monotonic()
        self.serve = self.launch_serve()
        stack_dir = self.work / f"stack-{n}"
        stack_dir.mkdir()
        url = f"http://127.0.0.1:{self.serve_port}/v1"
        # GymStack returns once ng_run's servers answer (vllm_model does not need the
        # model to be up to start).
        self.stack = GymStack(stack_dir, "mcqa", url, self.model_path, max_steps=1)
        ng_ready = time.monotonic() - started
        deadline = time.monotonic() + 600
        while not self.serve_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not answer in 10 minutes")
            time.sleep(0.25)
        serve_ready = time.monotonic() - started
        import yaml

        config = yaml.safe_load((stack_dir / "stack.yaml").read_text())
        self.head_port = config["head_server"]["port"]
        if not self.serve_effective:
            self.serve_effective = json.loads((self.work / f"serve-{n}-effective.json").read_text())
            self.serve_flags = json.loads((self.work / f"serve-{n}-flags.json").read_text())
        return {"serve": serve_ready, "ng_run": ng_ready, "total": max(serve_ready, ng_ready)}

    def stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.serve is not None:
            _group_stop(self.serve)
            self.serve = None

    def collect(self, output: Path, limit: int | None = None) -> float:
        """`ng_collect_rollouts` on the rows through the running stack; its wall time."""
        assert self.stack is not None
        args = self.args
        command = [
            str(self.gym_venv / "bin" / "ng_collect_rollouts"),
            f"+head_server={{host:127.0.0.1,port:{self.head_port}}}",
            f"+agent_name={self.stack.agent_name}",
            f"+input_jsonl_fpath={self.rows_file}",
            f"+output_jsonl_fpath={output}",
            f"+num_samples_in_parallel={args.in_flight}",
            f"+responses_create_params.temperature={args.temperature}",
            f"+responses_create_params.max_output_tokens={args.max_tokens}",
            "+upload_rollouts_to_wandb=false",
        ]
        if limit:
            command.append(f"+limit={limit}")
        log = output.with_suffix(".log")
        return self.timed(command, log, self.gym_env(), self.work)

    def gym_records(self, output: Path) -> dict[str, Any]:
        records = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
        failures = output.with_name(output.stem + "_failures.jsonl")
        failed = len(failures.read_text().splitlines()) if failures.exists() else 0
        usage = [r["response"].get("usage") or {} for r in records]
        params = records[0].get("responses_create_params", {}) if records else {}
        return {
            "rollouts": len(records),
            "failed": failed,
            "output_tokens": sum(u.get("output_tokens", 0) for u in usage),
            "prompt_tokens": sum(u.get("input_tokens", 0) for u in usage),
            "reward": statistics.fmean(r["reward"] for r in records) if records else 0.0,
            "sampling": {k: params.get(k) for k in ("temperature", "top_p", "max_output_tokens")},
        }

    def gym_warm(self) -> dict[str, Any]:
        output = self.work / f"gym-warm-{time.time_ns()}.jsonl"
        wall = self.collect(output)
        return {"wall_s": wall, **self.gym_records(output)}

    def gym_cold(self) -> dict[str, Any]:
        self.stop_stack()  # not counted: the machine as it is before a cold start
        started = time.monotonic()
        ready = self.start_stack()
        output = self.work / f"gym-cold-{time.time_ns()}.jsonl"
        collect = self.collect(output)
        wall = time.monotonic() - started
        note = (
            f"start-up {ready['total']:.1f} s (vllm serve {ready['serve']:.1f}, ng_run "
            f"{ready['ng_run']:.1f}) + collection {collect:.1f} s"
        )
        return {"wall_s": wall, "note": note, **self.gym_records(output)}

    # ------------------------------------------------------------------ rollout-ray

    def cli(self) -> list[str]:
        return [sys.executable, "-m", "rollout_ray.cli"]

    def up(self) -> float:
        self.warm_up = True
        command = [*self.cli(), "up", str(self.job)]
        return self.timed(
            command, self.work / f"up-{time.time_ns()}.log", dict(os.environ), self.work
        )

    def rollout_ray(self, side: str, retry: bool = True) -> dict[str, Any]:
        import pyarrow.dataset as pads

        output = self.work / f"{side}-{time.time_ns()}"
        command = [*self.cli(), "run", str(self.job), f"output={output}"]
        if side != "rollout-ray-warm":
            command.insert(-2, "--no-warm")
        if side == "rollout-ray-ray":
            command.append("executor=ray")
        log = output.with_suffix(".log")
        wall = self.timed(command, log, dict(os.environ), self.work)
        metrics = json.loads((output / "metrics.json").read_text())
        expected = {"rollout-ray-warm": "warm", "rollout-ray-ray": "ray"}.get(side, "local")
        if metrics.get("executor") != expected:
            # The warm engine can be gone: Ray's memory monitor kills workers when the
            # machine's memory is 95% used (its Ray's raylet.out says so).
            said = " ".join(log.read_text(errors="replace").split()[:40])
            if side != "rollout-ray-warm" or not retry:
                raise RuntimeError(f"{side} ran on the {metrics.get('executor')} executor: {said}")
            print(f"    {side} did not run on its warm engine ({said} ...): run discarded")
            print(f"    rollout-ray up again (not counted): {self.up():.1f} s")
            return self.rollout_ray(side, retry=False)
        columns = [
            "output_tokens",
            "prompt_tokens",
            "reward",
            "response_text",
            "uuid",
            "verifier_details",
            "sampling",
        ]
        table = pads.dataset(output / "data", format="parquet").to_table(columns=columns)
        records = table.to_pylist()
        failed = 0
        if (output / "failures").exists():
            failed = pads.dataset(output / "failures", format="parquet").count_rows()
        sampling = records[0]["sampling"] if records else {}
        if isinstance(sampling, str):
            sampling = json.loads(sampling)
        result = {
            "wall_s": wall,
            "rollouts": len(records),
            "failed": failed,
            "output_tokens": sum(r["output_tokens"] for r in records),
            "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "reward": statistics.fmean(r["reward"] for r in records) if records else 0.0,
            "sampling": {k: sampling.get(k) for k in ("temperature", "top_p", "max_tokens")},
            "engine_config": metrics.get("run", {}).get("engine_config", {}),
            "phases": metrics.get("phases", {}),
        }
        if self.args.verifier == "mcqa":
            same, total, example = self.parity(records)
            result["note"] = f"rewards and letters equal to Gym's /verify: {same} of {total}"
            if same != total:
                result["note"] += f" (e.g. {example})"
        return result

    def parity(self, records: list[dict[str, Any]]) -> tuple[int, int, Any]:
        """Each response text through the Gym mcqa server's /verify (not timed): its
        reward and extracted letter against what rollout-ray's verifier recorded."""
        from rollout_ray.chat.responses import recorded_response

        assert self.verify_server is not None
        url = f"{self.verify_server.url}/verify"

        def gym(record: dict[str, Any]) -> tuple[float, Any]:
            row = self.by_uuid[record["uuid"]]
            # What Gym's /verify requires of a response: a model name and a creation time.
            response = recorded_response(
                {
                    "response_text": record["response_text"],
                    "model": self.args.model,
                    "created_at": time.time(),
                    "output_tokens": record["output_tokens"],
                }
            )
            body = {**row, "response": response}
            request = urllib.request.Request(
                url, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as reply:
                answer = json.loads(reply.read())
            return answer["reward"], answer.get("extracted_answer")

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            theirs = list(pool.map(gym, records))
        ours = [
            (r["reward"], json.loads(r["verifier_details"] or "{}").get("extracted_answer"))
            for r in records
        ]
        differ = [
            (r["response_text"][-200:], o, t)
            for r, o, t in zip(records, ours, theirs, strict=True)
            if o != t
        ]
        return len(records) - len(differ), len(records), differ[:1]

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        args = self.args
        sides = args.only or SIDES
        from rollout_ray.engines.embedded_model import resolve_model

        self.model_path = str(Path(resolve_model(args.model, announce=print)).resolve())
        self.isolate()
        ours = [s for s in sides if s.startswith("rollout-ray")]
        if ours:  # the Gym mcqa server that checks (or, with --verifier http, scores) ours
            started = time.monotonic()
            self.verify_server = GymServer("mcqa", self.work)
            up_s = time.monotonic() - started
            print(f"Gym mcqa server for rollout-ray's rewards: up in {up_s:.1f} s")
        self.write_job(self.model_path)
        env = self.engine_env()
        print(
            f"{len(self.rows)} Gym mcqa rows x 1 sample, temperature {args.temperature}, "
            f"max_tokens {args.max_tokens}, model {self.model_path}, {os.cpu_count()} cores, "
            f"rounds {args.rounds}, rollout-ray's verifier: {args.verifier}"
        )
        print("engine environment (rollout-ray's engine_env; vllm serve gets the same):")
        print("  " + " ".join(f"{k}={v}" for k, v in sorted(env.items())))
        if "gym-warm" in sides:
            ready = self.start_stack()
            warm_up = self.collect(self.work / "gym-warm-up.jsonl", limit=min(32, len(self.rows)))
            print(
                f"gym-warm's set-up (not counted): vllm serve answering {ready['serve']:.1f} s, "
                f"ng_run {ready['ng_run']:.1f} s after launch; warm-up collection of "
                f"{min(32, len(self.rows))} rows {warm_up:.1f} s"
            )
        if "rollout-ray-warm" in sides:
            print(f"rollout-ray-warm's set-up (not counted): rollout-ray up {self.up():.1f} s")
        import psutil

        # Every warm thing above stays in memory while the other sides run; an engine
        # holds its KV cache (engine.cpu_kvcache_gib) and about 1.5 GiB more.
        config = self.engine_config()
        free = psutil.virtual_memory().available / 2**30
        need = config.cpu_kvcache_gib + 2 + (1 if "rollout-ray-ray" in sides else 0)
        print(f"memory available after set-up: {free:.1f} GiB (a run needs about {need} GiB)")
        if free < need + 1.5:
            print(
                "    warning: little memory to spare: Ray's memory monitor kills workers "
                "(the warm engine too) when the machine's memory is 95% used"
            )
        measure = {
            "gym-warm": self.gym_warm,
            "gym-cold": self.gym_cold,
            "rollout-ray": lambda: self.rollout_ray("rollout-ray"),
            "rollout-ray-ray": lambda: self.rollout_ray("rollout-ray-ray"),
            "rollout-ray-warm": lambda: self.rollout_ray("rollout-ray-warm"),
        }
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for side in schedule(sides, args.rounds):
            result = measure[side]()
            result["tok_per_s"] = result["output_tokens"] / result["wall_s"]
            runs[side].append(result)
            n = max(result["rollouts"], 1)
            tokens, prompt = result["output_tokens"], result["prompt_tokens"] / n
            line = (
                f"  {side:>16}: {result['wall_s']:6.1f} s, {result['rollouts']} rollouts "
                f"({result['failed']} failed), {tokens:,} output tokens "
                f"({tokens / n:.1f}/rollout, prompt {prompt:.1f}), "
                f"reward {result['reward']:.3f}, {result['tok_per_s']:.1f} tok/s"
            )
            print(line + (f"; {result['note']}" if result.get("note") else ""), flush=True)
            if result["rollouts"] != len(self.rows):
                print(f"    warning: {side} has {result['rollouts']} of {len(self.rows)} rollouts")
        self.report(runs)

    def report(self, runs: dict[str, list[dict[str, Any]]]) -> None:
        print("sampling as each side's records hold it:")
        for side, results in runs.items():
            if results:
                print(f"  {side:>16}: {results[0]['sampling']}")
        print("vllm serve flags: " + " ".join(self.serve_flags or ["(not started)"]))
        seen: dict[str, dict[str, Any]] = {}
        if self.serve_effective:
            seen["vllm serve"] = self.serve_effective
        for side, results in runs.items():
            if results and results[0].get("engine_config"):
                seen[side] = results[0]["engine_config"]
        if seen:
            keys = sorted({k for config in seen.values() for k in config})
            print("effective vLLM config: " + " | ".join(seen))
            for key in keys:
                print(f"  {key:>22}: " + " | ".join(str(c.get(key)) for c in seen.values()))
        for side, results in runs.items():
            for r in results:
                if r.get("phases"):
                    table = "  ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
                    print(f"phases {side} (wall {r['wall_s']:.1f} s): {table}")
        print("each side's medians:")
        for side, results in runs.items():
            if results:
                wall = statistics.median(r["wall_s"] for r in results)
                per = statistics.median(r["output_tokens"] / max(r["rollouts"], 1) for r in results)
                reward = statistics.median(r["reward"] for r in results)
                print(
                    f"  {side:>16}: wall {wall:.1f} s, {per:.1f} output tokens/rollout, "
                    f"reward {reward:.3f}"
                )
        rates = Comparison("throughput", "output tok/s")
        rates.runs = {s: [r["tok_per_s"] for r in rs] for s, rs in runs.items() if rs}
        walls = Comparison("rollouts/s", "rollouts/s")
        walls.runs = {s: [r["rollouts"] / r["wall_s"] for r in rs] for s, rs in runs.items() if rs}
        pairs = [
            ("rollout-ray", "gym-warm"),
            ("rollout-ray-ray", "gym-warm"),
            ("rollout-ray-warm", "gym-warm"),
            ("rollout-ray", "gym-cold"),
            ("rollout-ray-ray", "gym-cold"),
            ("gym-warm", "gym-cold"),
        ]
        for a, b in pairs:
            if a in rates.runs and b in rates.runs:
                target = TARGETS.get(a) if b == "gym-warm" else None
                rates.report(a, b, at_least=target)
        for a, b in pairs:
            if a in walls.runs and b in walls.runs:
                walls.report(a, b)

    def close(self) -> None:
        """Stop everything this benchmark started, whatever state it is in."""
        if self.running is not None:
            _group_stop(self.running, 15)
        self.stop_stack()
        if self.warm_up:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [*self.cli(), "down"],
                    env=dict(os.environ),
                    capture_output=True,
                    timeout=180,
                    start_new_session=True,
                )
        if self.verify_server is not None:
            self.verify_server.stop()
        left = marked(self.token)
        if left:
            print(f"stopping {len(left)} processes still running from this benchmark")
            terminate(left)


def find_gym_venv(given: str | None) -> str:
    """NeMo Gym's venv: --gym-venv, $GYM_VENV, this checkout's .gym-venv, or the one
    beside the venv running this script (a worktree run with the main checkout's venv)."""
    candidates = [given, os.environ.get("GYM_VENV"), str(ROOT / ".gym-venv")]
    candidates.append(str(Path(sys.prefix).parent / ".gym-venv"))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "python").exists():
            return candidate
    raise SystemExit(
        "NeMo Gym's venv is not found (--gym-venv, GYM_VENV, .gym-venv): `make test` "
        "installs it, or `bash tests/gym/install.sh DIR`"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--in-flight", type=int, default=64, help="Gym's num_samples_in_parallel")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--only", nargs="*", choices=SIDES, help="run these sides only")
    parser.add_argument(
        "--verifier",
        choices=["mcqa", "http"],
        default="mcqa",
        help="rollout-ray's: its own mcqa (checked against Gym's /verify) or Gym's /verify",
    )
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine setting for both sides (rollout-ray's engine block, e.g. "
        "cpu_kvcache_gib=1): vllm serve's flags and environment follow it",
    )
    parser.add_argument("--gym-venv", help="NeMo Gym's venv (default: $GYM_VENV, .gym-venv)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--serve-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:  # a child: vllm serve with rollout-ray's engine
        serve_child(json.loads(Path(args.serve_child).read_text()))
        return
    os.environ["GYM_VENV"] = find_gym_venv(args.gym_venv)
    work = Path(tempfile.mkdtemp(prefix="rrgym-", dir="/tmp"))  # short: Ray's socket paths
    bench: Bench | None = None

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        bench = Bench(args, work)
        bench.run()
    except KeyboardInterrupt:
        print("interrupted: stopping what the benchmark started")
        raise SystemExit(130) from None
    finally:
        if bench is not None:
            bench.close()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
