"""`rollout-ray submit`: the `ray job submit` command line that runs a job on a cluster.

It only builds the command (and can run it): Ray's job submission does the work. The
job's driver runs `rollout-ray run` on the head node, where it finds the cluster through
RAY_ADDRESS, as any Ray job does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from rollout_ray import secrets
from rollout_ray.config import JobConfig
from rollout_ray.errors import ConfigError

#: Settings a job may need on the cluster that are not secrets (credentials belong in
#: the cluster's own environment or a Kubernetes Secret, never on a command line).
PASSED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
    "ROLLOUT_RAY_CACHE",
)


def token_auth() -> bool:
    """Whether this machine holds a Ray auth token (Ray 2.60 enables token auth)."""
    return bool(
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or Path("~/.ray/auth_token").expanduser().exists()
    )


def refuse_secret_overrides(job: JobConfig) -> None:
    """A Ray job's entrypoint is stored with the job (Ray's job table, the dashboard,
    `ray job list`): a secret given as an override of `submit` would be too.

    Raises:
        ConfigError: an override sets a secret (its key names one, or the config masks
            the value it sets).
    """
    keys = secrets.secret_overrides(job)
    if keys:
        raise ConfigError(
            f"{', '.join(keys)}: a secret on the command line of a Ray job is stored with "
            "the job (its entrypoint, shown by the dashboard and `ray job list`). Put it in "
            "the cluster's environment (or a Kubernetes Secret) and name the variable in "
            "the config (api_key_env)."
        )


def config_path(config: str | Path, working_dir: str = ".") -> Path:
    """Where the config is read here: a relative path is relative to the working dir
    that is shipped (the job runs it from there on the cluster), as `submit` says."""
    path = Path(config)
    return path if path.is_absolute() else Path(working_dir) / path


def job_identity(job: JobConfig, config: str) -> tuple[str, dict[str, str]]:
    """A submission id and the job's metadata for Ray's Jobs page: `job_name` (Ray's
    Name column, and the metrics' `rollout_job` label), the config and the output."""
    from rollout_ray import storage
    from rollout_ray.run.placement import job_label

    name = job_label(job)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "job"
    submission = f"rollout-ray-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    metadata = {
        "job_name": name,
        "rollout_ray_config": config,
        "rollout_ray_output": secrets.redact(storage.shown(job.output)),
    }
    return submission, metadata


def submit_command(
    config: str,
    overrides: list[str],
    address: str,
    working_dir: str = ".",
    no_wait: bool = False,
    job: JobConfig | None = None,
) -> list[str]:
    """The argv of `ray job submit` for `rollout-ray run CONFIG OVERRIDES...`; with the
    loaded `job`, its submission id and metadata (else the Jobs page shows "-")."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    command = ["ray", "job", "submit", "--address", address, "--working-dir", working_dir]
    if job is not None:
        submission, metadata = job_identity(job, config)
        command += ["--submission-id", submission, "--metadata-json", json.dumps(metadata)]
    if env:
        command += ["--runtime-env-json", json.dumps({"env_vars": env})]
    if no_wait:
        command.append("--no-wait")
    return [*command, "--", "rollout-ray", "run", config, *overrides]


def shell_line(argv: list[str]) -> str:
    prefix = "RAY_AUTH_MODE=token " if token_auth() else ""
    return prefix + shlex.join(argv)


def exec_submit(argv: list[str]) -> None:
    """Replace this process with `ray job submit` (the venv's `ray` if not on PATH)."""
    ray = shutil.which(argv[0]) or str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **({"RAY_AUTH_MODE": "token"} if token_auth() else {})}
    os.execvpe(ray, [ray, *argv[1:]], env)
