"""Real NeMo Gym resources servers on loopback, started from the Gym venv.

`make test` installs the venv (tests/gym/install.sh, ~2 min, cached in .gym-venv);
GYM_VENV points elsewhere. A server is started as `ng_run` starts one child (see
tests/gym/serve_resources.py), from a scratch working directory, since importing
nemo_gym writes a cache folder there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = Path(__file__).resolve().parent / "gym" / "serve_resources.py"


def gym_python() -> str:
    venv = Path(os.environ.get("GYM_VENV") or ROOT / ".gym-venv")
    python = venv / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"NeMo Gym's venv is missing at {venv}: run `bash tests/gym/install.sh {venv}` "
            "(make test does)"
        )
    return str(python)


def gym_data(server: str, name: str = "example.jsonl") -> Path:
    """A data file shipped with a Gym resources server."""
    out = subprocess.run(
        [gym_python(), "-c", "import resources_servers; print(resources_servers.__path__[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()) / server / "data" / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GymServer:
    def __init__(self, name: str, workdir: Path, settings: dict[str, str] | None = None):
        self.name = name
        extra = [f"{k}={v}" for k, v in (settings or {}).items()]
        self.port = free_port()
        self.log = workdir / f"{name}-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(
            [gym_python(), str(LAUNCHER), name, str(self.port), *extra],
            cwd=workdir,
            env=env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - the server's life long
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Gym server {name} did not start:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def check_with_gym(path: Path, rows: int) -> None:
    """Gym's own models accept every record of a gym export."""
    script = (
        "import json, sys\n"
        "from pydantic import ConfigDict\n"
        "from nemo_gym.base_resources_server import BaseVerifyResponse\n"
        "class Record(BaseVerifyResponse):\n"
        "    model_config = ConfigDict(extra='allow')\n"
        "n = 0\n"
        "for line in open(sys.argv[1]):\n"
        "    record = json.loads(line)\n"
        "    Record.model_validate(record)\n"
        "    assert isinstance(record['_ng_task_index'], int)\n"
        "    assert isinstance(record['_ng_rollout_index'], int)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    out = subprocess.run(
        [gym_python(), "-c", script, str(path)], capture_output=True, text=True, cwd=path.parent
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == rows


#: `gym eval aggregate`'s own code (RolloutAggregationHelper) on a gym export, its
#: /aggregate_metrics calls sent to a resources server (as Gym's simple_agent proxies
#: them to its resources server): prints the agents it asked and the metrics it wrote.
_AGGREGATE = """
import asyncio, json, sys
import aiohttp
from nemo_gym.rollout_collection import (
    RolloutAggregationConfig, RolloutAggregationHelper, RolloutCollectionHelper,
)

class Client:
    def __init__(self, url):
        self.url, self.asked = url, []

    async def post(self, server_name, url_path, json):
        self.asked.append(server_name)
        async with aiohttp.ClientSession() as session:
            reply = await session.post(self.url + url_path, json=json.model_dump())
            await reply.read()
            return reply

client = Client(sys.argv[3])
RolloutCollectionHelper.setup_server_client = lambda self, head=None: client
config = RolloutAggregationConfig(input_glob=sys.argv[1], output_jsonl_fpath=sys.argv[2])
path = asyncio.run(RolloutAggregationHelper().run_from_config(config))
print(json.dumps({"asked": client.asked, "metrics": json.load(open(path)) if path else None}))
"""


def aggregate_with_gym(path: Path, server_url: str) -> dict:
    """What `gym eval aggregate` makes of a gym export: {"asked": agent names,
    "metrics": the _aggregate_metrics.json it wrote}."""
    out = subprocess.run(
        [
            gym_python(),
            "-c",
            _AGGREGATE,
            str(path),
            str(path.with_name("merged.jsonl")),
            server_url,
        ],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
