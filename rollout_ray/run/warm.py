"""`rollout-ray up` / `down`: engines kept loaded between runs, and how `run` finds them.

`up` starts a Ray of its own on this machine (loopback only, token auth as Ray sets it
up, its workers at normal priority), or uses the cluster RAY_ADDRESS names, and starts
a detached engine actor per model and engine settings (warm_engine.py). What it
started is written to `warm.json` in the cache folder. `run` looks there first: when a
warm engine has the job's model and engine settings, the job runs on it; otherwise the
job starts as usual, and says why a warm engine did not fit.

Why actors on a Ray of their own rather than the Serve app (`rollout-ray serve`): a
warm engine runs the job's pieces itself (agents, token ids and log-probabilities,
sampling per row, everything a job does), with no HTTP layer between the pieces and
the engine, and a job on it writes exactly what it writes anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.errors import ConfigError, RolloutRayError
from rollout_ray.output.plan import fingerprint
from rollout_ray.run.placement import NAMESPACE

#: Engine settings that change where or how many engines run, not the engine itself.
_PLACEMENT_ONLY = {"concurrency", "shards_in_flight", "num_cpus", "resources", "watch_model"}


def state_file() -> Path:
    from rollout_ray.engines.embedded_model import cache_root

    return cache_root() / "warm.json"


def read_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}


def write_state(state: dict[str, Any]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def engine_key(config: JobConfig) -> str:
    """What a warm engine must share with a job to serve it: the model and every engine
    setting that shapes the engine (not how many run, or where)."""
    engine = config.engine.model_dump(mode="json", exclude=_PLACEMENT_ONLY)
    return "warm-" + fingerprint({"model": config.model, "engine": engine})


# ---------------------------------------------------------------------------- up / down


def up(config: JobConfig, notify: Callable[[str], None]) -> dict[str, Any]:
    """Start (or find) the warm engine for `config`; what it is.

    Raises:
        ConfigError: the engine kind has nothing to keep warm (an endpoint).
    """
    if config.engine.kind != "vllm":
        raise ConfigError(
            f"engine.kind {config.engine.kind!r} has nothing to keep warm: `up` loads vllm engines"
        )
    state = read_state()
    address = _connect(state, start=True, notify=notify)
    import ray

    from rollout_ray import secrets
    from rollout_ray.engines import kind_of
    from rollout_ray.run.placement import actor_options, resolve_device
    from rollout_ray.run.warm_engine import WarmEngine

    name = engine_key(config)
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        info = ray.get(actor.ready.remote())
        notify(f"a warm engine for {config.model} is already up")
    except ValueError:
        device = resolve_device(config)
        kind_of(config.engine).prepare(config, config.engine, True, notify)
        options = actor_options(config, device)
        options.pop("ray_remote_args_fn", None)
        notify(f"loading {config.model} into a warm engine ...")
        actor = (
            ray.remote(WarmEngine)
            .options(
                name=name,
                namespace=NAMESPACE,
                lifetime="detached",
                max_concurrency=1000,
                **options,
            )
            .remote(config.model_dump_json(), device, secrets.prepare(config))
        )
        info = ray.get(actor.ready.remote())
    state.setdefault("engines", {})[name] = {"model": config.model, **info}
    state["address"] = address
    write_state(state)
    return {"name": name, "address": address, **info}


def down(notify: Callable[[str], None]) -> int:
    """Stop every warm engine, and the Ray `up` started; how many engines stopped."""
    state = read_state()
    if not state:
        return 0
    stopped = 0
    try:
        _connect(state, start=False, notify=notify)
        import ray

        for name in state.get("engines", {}):
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            try:
                ray.get(actor.shutdown.remote(), timeout=60)
            except Exception as exc:  # it is killed next either way
                notify(f"{name}: {exc}")
            ray.kill(actor)
            stopped += 1
        ray.shutdown()
    except RolloutRayError as exc:
        notify(str(exc))
    if state.get("started_ray"):
        _stop_ray(state)
    state_file().unlink(missing_ok=True)
    return stopped


# ---------------------------------------------------------------------------- run


def executor_for(
    config: JobConfig, secret_env: dict[str, str], watch_s: float, notify: Callable[[str], None]
) -> Any | None:
    """A WarmExecutor when a warm engine can run this job; None otherwise (at once when
    nothing was ever put up: no Ray is touched). A job that asks for several engines
    runs as it asks; `run --no-warm` (ROLLOUT_RAY_WARM=0) never uses a warm engine."""
    if (
        os.environ.get("ROLLOUT_RAY_WARM") == "0"
        or config.engine.concurrency != 1
        or not state_file().exists()
    ):
        return None
    actor = find(config, notify)
    if actor is None:
        return None
    from rollout_ray.run.warm_engine import WarmExecutor

    notify(f"running on the warm engine for {config.model}")
    return WarmExecutor(actor, config, secret_env, watch_s)


def find(config: JobConfig, notify: Callable[[str], None]) -> Any | None:
    """The warm engine actor that can run `config`, connected; None when there is none
    (nothing is up, or only engines of other settings: then this process is left as it
    was, unconnected)."""
    state = read_state()
    name = engine_key(config)
    if name not in state.get("engines", {}):
        if state.get("engines"):
            notify(
                "warm engines are up for other models or engine settings "
                "(`rollout-ray up` this config to keep its own warm); starting one for this run"
            )
        return None
    try:
        _connect(state, start=False, notify=notify)
        import ray

        return ray.get_actor(name, namespace=NAMESPACE)
    except (RolloutRayError, ValueError) as exc:
        notify(f"the warm engine is gone ({exc}); starting one for this run")
        import ray

        ray.shutdown()
        return None


def _connect(state: dict[str, Any], start: bool, notify: Callable[[str], None]) -> str:
    """Connect this process to the warm engines' Ray (starting one if `start`)."""
    _token_auth()
    import ray

    address = os.environ.get("RAY_ADDRESS") or state.get("address")
    if ray.is_initialized():
        return address or ""
    if address:
        try:
            _init(address)
            return address
        except Exception as exc:
            if not start:
                raise RolloutRayError(
                    f"the warm engines' Ray at {address} is not there: {exc}"
                ) from None
    if not start:
        raise RolloutRayError("no warm engines are up")
    address = _start_ray(notify)
    state.update(started_ray=True, engines={})  # whatever was up before is gone
    _init(address)
    state["session_dir"] = ray._private.worker._global_node.get_session_dir_path()
    return address


def _init(address: str) -> None:
    import logging

    import ray

    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)


def _token_auth() -> None:
    """Speak token auth, as a Ray that `ray start` started expects (with the token it
    left in ~/.ray). Ray reads the mode when it is imported: when it already was (a
    notebook), its config is read again, as Ray's own test utilities do."""
    os.environ.update(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    if "ray._raylet" in sys.modules and not sys.modules["ray"].is_initialized():
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _start_ray(notify: Callable[[str], None]) -> str:
    """A Ray head on loopback for the warm engines; its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notify(f"starting a Ray for warm engines on 127.0.0.1:{port} ...")
    command = [
        _ray_command(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--num-cpus={max(2, os.cpu_count() or 1)}",
        # A folder of its own: `ray start` records its cluster in the temp folder, and
        # every later `ray.init()` on this machine (a notebook's, another job's) would
        # join the warm engines' Ray instead of starting its own.
        f"--temp-dir={tempfile.gettempdir()}/rollout-ray-warm-{os.getuid()}",
        # The engines are the point of this cluster: normal priority, not Ray's nice 15.
        '--system-config={"worker_niceness": 0}',
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_ray_env())
    if done.returncode != 0:
        raise RolloutRayError(f"`ray start` failed: {done.stderr.strip()[-500:]}")
    return f"127.0.0.1:{port}"


def _stop_ray(state: dict[str, Any]) -> None:
    """Stop the Ray `up` started, and only it (`ray stop` would stop every Ray of this
    user on the machine): the processes that name its session folder or its address,
    and the workers under them."""
    import psutil

    marks = [m for m in (state.get("session_dir"), state.get("address")) if m]
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        command = " ".join(proc.info["cmdline"] or ())
        if marks and any(mark in command for mark in marks):
            found.append(proc)
            found += proc.children(recursive=True)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _ray_env() -> dict[str, str]:
    # Ray's own `ray start` turns token auth on (a token in ~/.ray); its clients must
    # ask for it. Listeners stay on 127.0.0.1.
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _ray_command() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"
