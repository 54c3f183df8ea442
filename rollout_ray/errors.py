"""Exceptions a user acts on. Their messages are shown as they are, without a traceback.

Two kinds of trouble, kept apart on purpose:
- a `RowError` (or any exception while handling one row or rollout) is that row's
  failure: it goes to the failures table and the job goes on;
- a `JobFault` is a fault of the job itself (storage gone, the engine can't start, an
  input changed under a running job, the output's lease lost): the job stops with its
  message, because going on could only fail every row or write wrong data.
"""

from __future__ import annotations


class RolloutRayError(Exception):
    """Base of the errors the CLI prints as a plain message."""


class ConfigError(RolloutRayError):
    """The job config is invalid; the message names the key and what is allowed."""


def refuse(problems: list[str]) -> None:
    """Raise one ConfigError naming every problem found (nothing when there is none):
    a config with several mistakes is refused once, not once a run."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(
            f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems)
        )


class ResumeRefused(RolloutRayError):
    """An output folder belongs to another config or input, or another job holds it."""


class JobFault(RolloutRayError):
    """The job itself can't go on. Raised in actors too: the driver finds it in what
    Ray hands back (see `find_job_fault`) and stops with its message."""


class EngineFailed(JobFault):
    """The engine can't serve the job at all (a bad API key, an unknown model)."""


class StorageFailed(JobFault):
    """The output (or an input) can't be written or read, after retries."""


class InputChanged(JobFault):
    """An input file changed after the job was planned: its rows no longer match."""


class RowError(Exception):
    """A single input row can't be used. Terminal: retrying the same row fails again."""

    def __init__(self, reason: str, stage: str = "parse"):
        super().__init__(reason)
        self.stage = stage


class UnreadableInput(RowError):
    """The rest of an input file can't be read (compressed data cut short or corrupt):
    the failure of the first row not read, standing for every row after it."""

    def __init__(self, reason: str):
        super().__init__(reason, stage="read")


def find_job_fault(exc: BaseException) -> JobFault | None:
    """The JobFault behind `exc`, however Ray wrapped it on the way from an actor.

    Ray keeps the original exception as a cause (RayTaskError subclasses it), and Ray
    Data re-raises user errors with the remote traceback as text; both are searched.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, JobFault):
            return current
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    text = str(exc)
    kinds = {
        "FatalEngineError": EngineFailed,  # engines.base's subclass of EngineFailed
        "EngineFailed": EngineFailed,
        "StorageFailed": StorageFailed,
        "InputChanged": InputChanged,
        "LeaseLost": JobFault,
        "JobFault": JobFault,
    }
    for line in reversed(text.splitlines()):
        for name, kind in kinds.items():
            marker = f"{name}: "
            if marker in line:
                return kind(line.split(marker, 1)[1].strip())
    return None


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """`text` with every secret value replaced (`secrets`, and every secret this process
    knows: see rollout_ray.secrets), for messages that get written anywhere."""
    from rollout_ray.secrets import redact as _redact

    return _redact(text, secrets)
