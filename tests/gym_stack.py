"""A whole NeMo Gym collection stack started with `ng_run`, as PLATFORM-NOTES.md says:
a resources server, Gym's simple_agent and its vllm_model server pointed at an
OpenAI-compatible endpoint, all on loopback, from the Gym venv (a `.venv` link per
server stands in for the venvs ng_run would build with uv).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml
from gym_servers import free_port, gym_python

_NG_RUN = "import sys; sys.argv[0] = 'ng_run'; from nemo_gym.cli.legacy import main; main()"


class GymStack:
    """`ng_run` with one resources server, simple_agent (`max_steps`) and vllm_model."""

    def __init__(self, workdir: Path, resources: str, model_url: str, model: str, max_steps: int):
        self.agent_port, ports = free_port(), [free_port() for _ in range(3)]
        head, resources_port, model_port = ports
        names = {
            "resources": f"{resources}_resources_server",
            "agent": f"{resources}_simple_agent",
            "model": "policy_model",
        }
        self.agent_name = names["agent"]
        config = {
            names["resources"]: {
                "resources_servers": {
                    resources: {
                        "entrypoint": "app.py",
                        "domain": "agent",
                        "host": "127.0.0.1",
                        "port": resources_port,
                    }
                }
            },
            names["agent"]: {
                "responses_api_agents": {
                    "simple_agent": {
                        "entrypoint": "app.py",
                        "host": "127.0.0.1",
                        "port": self.agent_port,
                        "max_steps": max_steps,
                        "resources_server": {
                            "type": "resources_servers",
                            "name": names["resources"],
                        },
                        "model_server": {"type": "responses_api_models", "name": names["model"]},
                    }
                }
            },
            names["model"]: {
                "responses_api_models": {
                    "vllm_model": {
                        "entrypoint": "app.py",
                        "host": "127.0.0.1",
                        "port": model_port,
                        "base_url": model_url,
                        "api_key": "dummy",
                        "model": model,
                        "return_token_id_information": False,
                        "uses_reasoning_parser": False,
                    }
                }
            },
            "head_server": {"host": "127.0.0.1", "port": head},
        }
        stack = workdir / "stack.yaml"
        stack.write_text(yaml.safe_dump(config))
        venvs = workdir / "venvs"
        gym_venv = Path(gym_python()).parent.parent
        for kind, name in (
            ("resources_servers", resources),
            ("responses_api_agents", "simple_agent"),
            ("responses_api_models", "vllm_model"),
        ):
            (venvs / kind / name).mkdir(parents=True, exist_ok=True)
            link = venvs / kind / name / ".venv"
            if not link.exists():
                link.symlink_to(gym_venv)
        self.log = workdir / "ng_run.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{gym_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        self.proc = subprocess.Popen(
            [
                gym_python(),
                "-c",
                _NG_RUN,
                f"+config_paths=[{stack}]",
                "+skip_venv_if_present=true",
                f"+uv_venv_dir={venvs}",
            ],
            cwd=workdir,
            env=env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - the stack's life long
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not self._up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Gym stack did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"

    def _up(self) -> bool:
        return "servers ready" in self.log.read_text() and self._answers()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.agent_url}/", timeout=2) as reply:
                return reply.status < 500
        except OSError as exc:
            return getattr(exc, "code", 500) < 500

    def stop(self) -> None:
        """SIGTERM to the whole group (in the background ng_run ignores SIGINT)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
