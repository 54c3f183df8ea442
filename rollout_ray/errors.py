"""Exceptions a user acts on. Their messages are shown as they are, without a traceback."""


class RolloutRayError(Exception):
    """Base of the errors the CLI prints as a plain message."""


class ConfigError(RolloutRayError):
    """The job config is invalid; the message names the key and what is allowed."""


class ResumeRefused(RolloutRayError):
    """An output folder belongs to another config or input, or another job holds it."""


class EngineFailed(RolloutRayError):
    """The engine can't serve the job at all (a bad API key, an unknown model)."""


class RowError(Exception):
    """A single input row can't be used. Terminal: retrying the same row fails again."""

    def __init__(self, reason: str, stage: str = "parse"):
        super().__init__(reason)
        self.stage = stage


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """`text` with every secret value replaced, for messages that get written anywhere."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text
